"""Unit tests of the postrelay module: TOML rendering (every hostile value of
postrelay's own hardening tests must reach postrelay exactly as given), the command
line, the mapping of postrelay's JSON report and errors to the module's result, and the
secrets: no password in argv, result, log or diff.

Tests marked ``binary`` run the real postrelay (``POSTRELAY_BIN``) against a throw-away
Postfix config directory; without ``POSTRELAY_BIN`` they fail, never skip.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
import tomllib

import pytest

from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args

from ansible_collections.postrelay.postrelay.plugins.modules import postrelay as mod

CANARY = "CANARY-s3cret-9d1f"
CANARY2 = "CANARY-rotated-44b2"

# --- hostile values, as tests/it/hostile.rs builds them ----------------------------------

PAYLOAD = "@evil.example evil:pw"
PAYLOAD_PARAM = "mynetworks = 0.0.0.0/0"

# The fields the module passes inline, with the valid value each hostile one is made
# from. (password_file's content never passes through the module.)
FIELDS = {
    "domain": "example.com",
    "address": "wes@example.com",
    "username": "user",
    "password": "pass",
    "relay": "[smtp.example.net]:587",
}


def inside(base, ins):
    return base[:2] + ins + base[2:]


A, R = True, False

# name, how the value is made, whether postrelay accepts it: domain, address, username,
# password, relay (hostile.rs's table without its password_file column).
HOSTILE = [
    ("LF + injected lines", lambda b: "%s\n%s\n%s" % (b, PAYLOAD, PAYLOAD_PARAM), [R, R, R, R, R]),
    ("CR + injected lines", lambda b: "%s\r%s\r%s" % (b, PAYLOAD, PAYLOAD_PARAM), [R, R, R, R, R]),
    ("NUL", lambda b: "%s\0%s" % (b, PAYLOAD), [R, R, R, R, R]),
    ("# at start", lambda b: "#" + b, [R, R, A, A, R]),
    ("# inside", lambda b: inside(b, "#"), [R, A, A, A, R]),
    ("leading space", lambda b: " " + b, [R, R, R, R, R]),
    ("trailing space", lambda b: b + " ", [R, R, R, R, R]),
    ("= inside", lambda b: inside(b, "="), [R, A, A, A, R]),
    (": inside", lambda b: inside(b, ":"), [R, R, R, A, R]),
    ("tab inside", lambda b: inside(b, "\t"), [R, R, R, A, R]),
    ("10,000 characters", lambda b: inside(b, "x" * (10000 - len(b))), [R, R, A, A, R]),
    ("unicode", lambda b: inside(b, "ü✓пароль"), [R, R, A, A, R]),
]

# TOML's own syntax, and what might end a basic string or the line early.
TOML_HOSTILE = [
    'say "hi"',
    "back\\slash",
    "\\",
    '"',
    '\\"',
    '"""',
    "'''",
    "a\\nb",  # a backslash and an n, not a newline
    "\\u0041",
    "x\" = 1\n[postfix]\nmap_type = \"evil",
    "\b\f\x1b\x7f\x85\x9f",
    "\u2028\u2029\ufeff",
    "😀 astral",
    "# not a comment",
    "key = value",
]


def hostile_cases():
    return [
        pytest.param(field, make(base), ok, id="%s-%s" % (field, name))
        for name, make, accept in HOSTILE
        for (field, base), ok in zip(FIELDS.items(), accept)
    ]


def parse_value(rendered):
    return tomllib.loads("v = %s\n" % rendered)["v"]


# --- TOML rendering ----------------------------------------------------------------------


@pytest.mark.parametrize("field,value,accepted", hostile_cases())
def test_hostile_values_round_trip_through_toml(field, value, accepted):
    rendered = mod.toml_string(value, field)
    assert "\n" not in rendered and "\r" not in rendered
    assert parse_value(rendered) == value


@pytest.mark.parametrize("value", TOML_HOSTILE)
def test_toml_syntax_in_values_round_trips(value):
    rendered = mod.toml_string(value, "f")
    assert "\n" not in rendered
    assert parse_value(rendered) == value


def test_every_character_of_the_bmp_and_beyond_round_trips():
    chars = [chr(c) for c in range(0, 0x3000) if not 0xD800 <= c <= 0xDFFF]
    chars += [chr(c) for c in (0xFFFD, 0xFFFE, 0xFFFF, 0x10000, 0x1F600, 0x10FFFF)]
    value = "".join(chars)
    assert parse_value(mod.toml_string(value, "f")) == value


def test_control_characters_are_escaped_not_written():
    rendered = mod.toml_string("".join(chr(c) for c in range(0x20)) + "\x7f\x80\x9f", "f")
    assert all(not (ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F) for c in rendered)


def test_a_lone_surrogate_is_refused_naming_the_field_not_the_value():
    with pytest.raises(mod.RenderError) as e:
        mod.toml_string(CANARY + "\ud800", "senders[2].password")
    assert "senders[2].password" in str(e.value)
    assert CANARY not in str(e.value)


def test_render_toml_gives_postrelay_the_tables_it_reads():
    relayhost = dict(relay="[smtp.mailgun.org]:587", username="pm@mg.example", password=CANARY,
                     password_file=None, tls="secure", accept_cleartext=None)
    senders = [
        dict(domain="example.com", address=None, relay="[smtp.sendgrid.net]:587", username="apikey",
             password=None, password_file="/etc/postrelay/secrets/example.com", tls="may", accept_cleartext=True),
        dict(domain=None, address="wes@example.com", relay=None, username=None, password=None,
             password_file=None, tls=None, accept_cleartext=False),
    ]
    text = mod.render_toml(relayhost, senders, "lmdb")
    assert tomllib.loads(text) == {
        "postfix": {"map_type": "lmdb"},
        "relayhost": {"relay": "[smtp.mailgun.org]:587", "username": "pm@mg.example", "password": CANARY,
                      "tls": "secure"},
        "sender": [
            {"domain": "example.com", "relay": "[smtp.sendgrid.net]:587", "username": "apikey",
             "password_file": "/etc/postrelay/secrets/example.com", "tls": "may", "accept_cleartext": True},
            {"address": "wes@example.com", "accept_cleartext": False},
        ],
    }


def keys_of(text, header):
    """The keys of each ``header`` table of ``text``, in the order they are written."""
    tables, current = [], None
    for line in text.splitlines():
        if line.startswith("["):
            current = [] if line == header else None
            if current is not None:
                tables.append(current)
        elif current is not None and " = " in line:
            current.append(line.split(" = ", 1)[0])
    return tables


def test_render_toml_writes_the_provider_preset_keys():
    relayhost = dict(relay=None, provider="mailgun", region="eu", username="pm@mg.example", password=None,
                     password_file="/etc/postrelay/secrets/mailgun", secret_access_key_file=None, tls=None,
                     accept_cleartext=None)
    senders = [
        dict(domain="example.org", address=None, relay=None, provider="ses", region="eu-west-1",
             username="AKIAIOSFODNN7EXAMPLE", password=None, password_file=None,
             secret_access_key_file="/etc/postrelay/secrets/ses.key", tls=None, accept_cleartext=None),
        dict(domain=None, address="wes@example.com", relay="[smtp.sendgrid.net]:587", provider="sendgrid",
             region=None, username="apikey", password=CANARY, password_file=None, secret_access_key_file=None,
             tls="secure", accept_cleartext=None),
    ]
    text = mod.render_toml(relayhost, senders, None)
    assert tomllib.loads(text) == {
        "relayhost": {"provider": "mailgun", "region": "eu", "username": "pm@mg.example",
                      "password_file": "/etc/postrelay/secrets/mailgun"},
        "sender": [
            {"domain": "example.org", "provider": "ses", "region": "eu-west-1", "username": "AKIAIOSFODNN7EXAMPLE",
             "secret_access_key_file": "/etc/postrelay/secrets/ses.key"},
            {"address": "wes@example.com", "relay": "[smtp.sendgrid.net]:587", "provider": "sendgrid",
             "username": "apikey", "password": CANARY, "tls": "secure"},
        ],
    }
    # postrelay's order: provider and region after the relay they stand for,
    # secret_access_key_file after password_file.
    assert keys_of(text, "[relayhost]") == [["provider", "region", "username", "password_file"]]
    assert keys_of(text, "[[sender]]") == [
        ["domain", "provider", "region", "username", "secret_access_key_file"],
        ["address", "relay", "provider", "username", "password", "tls"],
    ]


def test_the_key_order_is_postrelays():
    assert mod.CREDENTIAL_KEYS == ("relay", "provider", "region", "username", "password", "password_file",
                                   "secret_access_key_file", "tls", "accept_cleartext")
    assert mod.SENDER_KEYS == ("domain", "address") + mod.CREDENTIAL_KEYS
    # Every option of an entry is rendered, and nothing else.
    assert set(mod.CREDENTIAL_KEYS) == set(mod.ENTRY_OPTIONS)


def test_render_toml_leaves_out_what_is_not_given_and_is_never_empty():
    text = mod.render_toml(None, None, None)
    assert text.strip() != ""
    assert tomllib.loads(text) == {}
    assert tomllib.loads(mod.render_toml(None, [], None)) == {}


# --- the command line --------------------------------------------------------------------


def params(**kw):
    p = dict(binary="/usr/sbin/postrelay", config=None, postfix_dir=None, verify=False, reload=True, syslog=True)
    p.update(kw)
    return p


def test_check_mode_plans_and_never_verifies_nor_reloads():
    cmd = mod.build_command(params(verify=True, reload=False), check_mode=True)
    assert cmd == ["/usr/sbin/postrelay", "plan", "--format", "json", "--config", "-"]


def test_apply_with_verify_no_reload_postfix_dir():
    cmd = mod.build_command(params(verify=True, reload=False, postfix_dir="/etc/postfix-out"), check_mode=False)
    assert cmd == ["/usr/sbin/postrelay", "apply", "--format", "json", "--config", "-",
                   "--postfix-dir", "/etc/postfix-out", "--verify", "--no-reload"]


def test_no_syslog():
    cmd = mod.build_command(params(syslog=False), check_mode=False)
    assert cmd == ["/usr/sbin/postrelay", "apply", "--format", "json", "--config", "-", "--no-syslog"]
    # Check mode records nothing anyway.
    assert "--no-syslog" not in mod.build_command(params(syslog=False), check_mode=True)


def test_config_path_replaces_stdin():
    cmd = mod.build_command(params(config="/etc/postrelay/postrelay.toml"), check_mode=False)
    assert cmd == ["/usr/sbin/postrelay", "apply", "--format", "json", "--config", "/etc/postrelay/postrelay.toml"]


# --- mapping postrelay's output ------------------------------------------------------------

SASL_DIFF = ("--- /etc/postfix/sasl_passwd\n+++ /etc/postfix/sasl_passwd\n@@ -1,2 +1,2 @@\n"
             " # Managed by postrelay\n-[smtp.mailgun.org]:587 pm:********\n+[smtp.mailgun.org]:587 pm:********\n")


def report(command="apply", changed=True, **kw):
    doc = {
        "format_version": 1, "command": command, "config": "<stdin>", "changed": changed,
        "comment": "applied" if changed else "no changes",
        "files": [{
            "path": "/etc/postfix/sasl_passwd", "kind": "sasl_passwd", "action": "update",
            "reasons": [{"code": "content_differs", "text": "content differs"}], "entries": 1,
            "entries_changed": [{"key": "[smtp.mailgun.org]:587", "change": "password"}],
            "parameters": [], "compiled": "/etc/postfix/sasl_passwd.db", "rebuild": True,
            "mode_changes": [], "owner_changes": [], "diff": SASL_DIFF,
        }, {
            "path": "/etc/postfix/tls_policy", "kind": "tls_policy", "action": "rebuild",
            "reasons": [{"code": "compiled_missing", "text": "tls_policy.db missing"}], "entries": 1,
            "entries_changed": [], "parameters": [], "compiled": "/etc/postfix/tls_policy.db", "rebuild": True,
            "mode_changes": [], "owner_changes": [], "diff": None,
        }] if changed else [],
        "commands": ["postmap -c /etc/postfix hash:/etc/postfix/sasl_passwd"] if changed else [],
        "hold": None, "warnings": [], "reload": "done" if changed else "not_needed", "checks": [],
        "postfix_dir": "/etc/postfix", "notes": [], "kept": [],
    }
    if command == "apply":
        doc["steps"] = ["wrote /etc/postfix/sasl_passwd"] if changed else []
    doc.update(kw)
    return json.dumps(doc, indent=2)


CMD = ["/usr/sbin/postrelay", "apply", "--format", "json", "--config", "-"]


def test_apply_report_maps_to_the_result():
    ok, result = mod.interpret(0, report(warnings=["weak tls"]), "", "apply", CMD)
    assert ok
    assert result["changed"] is True
    assert result["comment"] == "applied"
    assert result["reload"] == "done"
    assert result["steps"] == ["wrote /etc/postfix/sasl_passwd"]
    assert result["warnings"] == ["weak tls"]
    assert [f["path"] for f in result["files"]] == ["/etc/postfix/sasl_passwd", "/etc/postfix/tls_policy"]
    assert result["cmd"] == CMD


def test_changed_comes_from_the_json_not_the_exit_code():
    ok, result = mod.interpret(0, report(changed=False), "", "apply", CMD)
    assert ok and result["changed"] is False
    ok, result = mod.interpret(1, report("plan", changed=True), "", "plan", CMD)
    assert ok and result["changed"] is True and "steps" not in result
    ok, result = mod.interpret(0, report("plan", changed=False), "", "plan", CMD)
    assert ok and result["changed"] is False


def test_diff_is_the_redacted_unified_diffs_and_names_content_free_changes():
    ok, result = mod.interpret(0, report(), "", "apply", CMD)
    diff = mod.diff_of(result["files"])
    assert diff == {"prepared": SASL_DIFF + "# /etc/postfix/tls_policy: rebuild (tls_policy.db missing)\n"}


def test_an_error_fails_with_postrelays_message_and_problems():
    out = json.dumps({"format_version": 1, "command": "apply", "error": "1 problem in <stdin>", "problems": [
        {"file": "<stdin>", "line": 4, "message": 'relayhost: relay "[smtp.x]:587 ": contains whitespace'},
        {"file": "<stdin>", "line": None, "message": "no sender and no relayhost"},
    ]})
    ok, result = mod.interpret(2, out, "postrelay: error: ...", "apply", CMD)
    assert not ok
    assert result["msg"] == ('postrelay apply: 1 problem in <stdin>: <stdin>, line 4: relayhost: relay '
                             '"[smtp.x]:587 ": contains whitespace; <stdin>: no sender and no relayhost')
    assert result["problems"][0]["line"] == 4
    assert result["rc"] == 2


def test_a_failed_verify_fails_with_its_checks():
    checks = [{"sender": "relayhost", "relay": "[smtp.x]:587", "username": "u", "tls": "secure",
               "result": "failed", "error": "authentication failed: 535", "starttls": None, "mechanism": None}]
    out = json.dumps({"format_version": 1, "command": "apply", "error": "verify: 1 checked, 1 failed",
                      "problems": [], "checks": checks})
    ok, result = mod.interpret(2, out, "", "apply", CMD)
    assert not ok
    assert result["checks"] == checks
    assert "relayhost via [smtp.x]:587: authentication failed: 535" in result["msg"]


def test_output_that_is_not_json_fails_clearly():
    ok, result = mod.interpret(101, "", "thread 'main' panicked at src/x.rs:1", "apply", CMD)
    assert not ok
    assert result["msg"] == ("postrelay apply exited 101 without its JSON report; "
                             "stderr: thread 'main' panicked at src/x.rs:1")
    ok, result = mod.interpret(2, "Usage: postrelay [OPTIONS]\n" + "x" * 5000, "", "apply", CMD)
    assert not ok and "without its JSON report" in result["msg"] and len(result["msg"]) < 2200
    ok, result = mod.interpret(0, "[1, 2]", "", "apply", CMD)
    assert not ok


def test_unknown_format_version_and_unexpected_exit_codes_fail():
    ok, result = mod.interpret(0, report(format_version=2), "", "apply", CMD)
    assert not ok and "format_version 2" in result["msg"]
    ok, result = mod.interpret(1, report(), "", "apply", CMD)
    assert not ok and "unexpected exit code 1" in result["msg"]
    ok, result = mod.interpret(0, report(changed="yes"), "", "apply", CMD)
    assert not ok


# --- the module as Ansible runs it ----------------------------------------------------------


def run_module(args, capsys):
    """Runs main() with ``args``; returns (exit code, the JSON result it printed)."""
    with patch_module_args(args):
        with pytest.raises(SystemExit) as e:
            mod.main()
    out = capsys.readouterr().out
    return e.value.code, json.loads(out), out


def fake_binary(tmp_path, stdout, rc=0):
    """A postrelay stand-in that reads stdin, prints ``stdout`` and exits ``rc``."""
    (tmp_path / "report.json").write_text(stdout)
    path = tmp_path / "postrelay"
    path.write_text("#!/bin/sh\ncat >/dev/null\ncat '%s'\nexit %d\n" % (tmp_path / "report.json", rc))
    path.chmod(0o755)
    return str(path)


MODULE_ARGS = dict(
    relayhost=dict(relay="[smtp.mailgun.org]:587", username="pm", password=CANARY),
    senders=[dict(domain="example.com", relay="[smtp.sendgrid.net]:587", username="apikey", password=CANARY2)],
)


def test_the_desired_state_goes_on_stdin_only(tmp_path, capsys, monkeypatch):
    seen = {}

    def run_command(self, args, **kw):
        seen["args"], seen["kw"] = args, kw
        return 0, report(), ""

    monkeypatch.setattr(basic.AnsibleModule, "run_command", run_command)
    binary = fake_binary(tmp_path, "")
    code, result, out = run_module(dict(MODULE_ARGS, binary=binary, _ansible_diff=True), capsys)
    assert code == 0
    assert seen["args"] == [binary, "apply", "--format", "json", "--config", "-"]
    assert seen["kw"]["binary_data"] is True
    sent = tomllib.loads(seen["kw"]["data"])
    assert sent["relayhost"]["password"] == CANARY
    assert sent["sender"][0]["password"] == CANARY2
    assert CANARY not in out and CANARY2 not in out
    assert result["changed"] is True
    assert result["diff"]["prepared"].startswith(SASL_DIFF)
    assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in json.dumps(result["invocation"])


def test_check_mode_runs_plan(tmp_path, capsys, monkeypatch):
    seen = {}

    def run_command(self, args, **kw):
        seen["args"] = args
        return 1, report("plan"), ""

    monkeypatch.setattr(basic.AnsibleModule, "run_command", run_command)
    binary = fake_binary(tmp_path, "")
    code, result, dummy = run_module(dict(MODULE_ARGS, binary=binary, verify=True, _ansible_check_mode=True), capsys)
    assert code == 0
    assert seen["args"] == [binary, "plan", "--format", "json", "--config", "-"]
    assert result["changed"] is True
    assert "diff" not in result


def test_warnings_become_module_warnings(tmp_path, capsys):
    binary = fake_binary(tmp_path, report(changed=False, warnings=['relay "[x]:587" has tls "may"']))
    code, result, dummy = run_module(dict(MODULE_ARGS, binary=binary), capsys)
    assert code == 0
    assert result["changed"] is False
    # ansible-core 2.19 returns each warning as an event; older ones as a string.
    warnings = [w["event"]["msg"] if isinstance(w, dict) else w for w in result["warnings"]]
    assert warnings == ['postrelay: relay "[x]:587" has tls "may"']


def test_a_password_that_leaks_into_output_is_scrubbed_by_ansible(tmp_path, capsys):
    # Defence in depth: were postrelay ever to print a password, no_log masks it.
    binary = fake_binary(tmp_path, report(comment="oops " + CANARY))
    code, result, out = run_module(dict(MODULE_ARGS, binary=binary), capsys)
    assert code == 0
    assert CANARY not in out
    assert result["comment"] == "oops ********"


def test_run_command_logs_no_password(tmp_path, capsys, monkeypatch):
    logged = []
    monkeypatch.setattr(basic.AnsibleModule, "log", lambda self, msg, log_args=None: logged.append(msg))
    monkeypatch.setattr(basic.AnsibleModule, "_debug", True, raising=False)
    binary = fake_binary(tmp_path, report())
    code, dummy, dummy2 = run_module(dict(MODULE_ARGS, binary=binary, _ansible_debug=True), capsys)
    assert code == 0
    assert any("Executing" in m for m in logged), logged
    assert all(CANARY not in m and CANARY2 not in m for m in logged)


def test_a_crash_fails_without_quoting_stdin(tmp_path, capsys):
    binary = fake_binary(tmp_path, "", rc=101)
    code, result, out = run_module(dict(MODULE_ARGS, binary=binary), capsys)
    assert code == 1
    assert result["failed"] is True
    assert result["msg"] == "postrelay apply exited 101 without its JSON report"
    assert CANARY not in out


def test_a_missing_binary_fails_clearly(tmp_path, capsys):
    code, result, dummy = run_module(dict(MODULE_ARGS, binary=str(tmp_path / "nope")), capsys)
    assert code == 1
    assert result["msg"] == "postrelay not found at %s (install it, or set binary)" % (tmp_path / "nope")


def test_config_excludes_the_structured_options(tmp_path, capsys):
    code, result, dummy = run_module(dict(MODULE_ARGS, config="/etc/postrelay/postrelay.toml"), capsys)
    assert code == 1
    assert "mutually exclusive" in result["msg"]


def test_domain_and_address_are_exclusive(tmp_path, capsys):
    args = dict(senders=[dict(domain="a.example", address="w@a.example", relay="[x]:587")],
                binary=fake_binary(tmp_path, report()))
    code, result, dummy = run_module(args, capsys)
    assert code == 1
    assert "mutually exclusive" in result["msg"]


def test_a_relayhost_needs_a_relay_or_a_provider(tmp_path, capsys):
    args = dict(relayhost=dict(username="pm", password=CANARY), binary=fake_binary(tmp_path, report()))
    code, result, out = run_module(args, capsys)
    assert code == 1
    assert "one of the following is required: relay, provider" in result["msg"]
    assert CANARY not in out


def test_a_provider_stands_for_the_relay(tmp_path, capsys, monkeypatch):
    seen = {}

    def run_command(self, args, **kw):
        seen["data"] = kw["data"]
        return 0, report(), ""

    monkeypatch.setattr(basic.AnsibleModule, "run_command", run_command)
    args = dict(
        relayhost=dict(provider="mailgun", region="eu", username="pm", password=CANARY),
        senders=[dict(domain="example.org", provider="ses", region="eu-west-1", username="AKIAEXAMPLE",
                      secret_access_key_file="/etc/postrelay/secrets/ses.key")],
        binary=fake_binary(tmp_path, ""),
    )
    code, result, out = run_module(args, capsys)
    assert code == 0, result
    assert tomllib.loads(seen["data"]) == {
        "relayhost": {"provider": "mailgun", "region": "eu", "username": "pm", "password": CANARY},
        "sender": [{"domain": "example.org", "provider": "ses", "region": "eu-west-1", "username": "AKIAEXAMPLE",
                    "secret_access_key_file": "/etc/postrelay/secrets/ses.key"}],
    }
    # A path is not a secret: it is shown as given.
    assert result["invocation"]["module_args"]["senders"][0]["secret_access_key_file"] == "/etc/postrelay/secrets/ses.key"
    assert CANARY not in out


def test_an_unknown_provider_is_refused(tmp_path, capsys):
    args = dict(senders=[dict(domain="a.example", provider="mailchimp", username="u", password=CANARY)],
                binary=fake_binary(tmp_path, report()))
    code, result, out = run_module(args, capsys)
    assert code == 1
    assert "value of provider must be one of: mailgun, ses, sendgrid, postmark" in result["msg"]
    assert CANARY not in out


@pytest.mark.parametrize("table", ["relayhost", "senders"])
def test_a_secret_access_key_file_excludes_a_password(table, tmp_path, capsys):
    entry = dict(provider="ses", region="eu-west-1", username="AKIAEXAMPLE", password=CANARY,
                 secret_access_key_file="/etc/postrelay/secrets/ses.key")
    args = dict(binary=fake_binary(tmp_path, report()))
    if table == "relayhost":
        args["relayhost"] = entry
    else:
        args["senders"] = [dict(entry, domain="a.example")]
    code, result, out = run_module(args, capsys)
    assert code == 1
    assert "mutually exclusive: password|password_file|secret_access_key_file" in result["msg"]
    assert CANARY not in out


# --- against the real postrelay --------------------------------------------------------------


@pytest.fixture
def postrelay_bin():
    path = os.environ.get("POSTRELAY_BIN")
    assert path, "POSTRELAY_BIN must name the postrelay binary (scripts/test-ansible sets it)"
    assert os.access(path, os.X_OK), "POSTRELAY_BIN=%s is not executable" % path
    assert shutil.which("postconf") or os.path.exists("/usr/sbin/postconf"), "Postfix (postconf) is not installed"
    return path


@pytest.fixture
def postfix_dir():
    """A throw-away Postfix config dir whose queue and data directories are inside it."""
    tmp = tempfile.mkdtemp()
    etc = os.path.join(tmp, "etc")
    os.mkdir(etc)
    os.mkdir(os.path.join(tmp, "queue"))
    main_cf = os.path.join(etc, "main.cf")
    with open(main_cf, "w") as f:
        f.write("queue_directory = %s/queue\ndata_directory = %s/data\n" % (tmp, tmp))
    # Postfix tools pause while main.cf is less than ~2 s old.
    past = time.time() - 600
    os.utime(main_cf, (past, past))
    yield etc
    shutil.rmtree(tmp)


def snapshot(etc):
    return {name: (os.stat(os.path.join(etc, name)).st_mtime_ns, open(os.path.join(etc, name), "rb").read())
            for name in sorted(os.listdir(etc))}


def injection(field, value):
    """hostile.rs's desired state with ``field`` set to ``value``."""
    v = dict(FIELDS)
    v[field] = value
    relayhost = dict(relay=v["relay"], username="rh-user", password="rh-pass")
    senders = [
        dict(domain=v["domain"], relay="[smtp.sender.example]:587", username=v["username"], password=v["password"]),
        dict(address=v["address"], relay="[smtp.sender.example]:587", username="addr-user", password="addr-pass"),
    ]
    return v, mod.render_toml(relayhost, senders, "hash")


def probe(field, v):
    """The sasl_passwd line the field under test lands in."""
    if field == "address":
        return "%s addr-user:addr-pass" % v["address"].lower()
    if field == "relay":
        return "%s rh-user:rh-pass" % v["relay"].lower()
    return "@%s %s:%s" % (v["domain"].lower(), v["username"], v["password"])


@pytest.mark.parametrize("field,value,accepted", hostile_cases())
def test_hostile_values_reach_postrelay_exactly(field, value, accepted, postrelay_bin, postfix_dir):
    v, toml_text = injection(field, value)
    proc = subprocess.run(
        [postrelay_bin, "plan", "--show-secrets", "--format", "json", "--config", "-", "--postfix-dir", postfix_dir],
        input=toml_text.encode(), capture_output=True, timeout=60, check=False,
    )
    doc = json.loads(proc.stdout)
    if not accepted:
        assert proc.returncode == 2, doc
        assert doc["problems"], doc
        assert all(p["file"] == "<stdin>" for p in doc["problems"]), doc
        return
    assert proc.returncode == 1, doc
    sasl = [f for f in doc["files"] if f["kind"] == "sasl_passwd"][0]
    assert "\n+%s\n" % probe(field, v) in sasl["diff"]


def test_apply_writes_the_maps_then_changes_nothing(postrelay_bin, postfix_dir, capsys):
    args = dict(MODULE_ARGS, binary=postrelay_bin, postfix_dir=postfix_dir, map_type="hash", _ansible_diff=True)
    code, result, out = run_module(dict(args, _ansible_check_mode=True), capsys)
    assert code == 0 and result["changed"] is True
    assert sorted(os.listdir(postfix_dir)) == ["main.cf"]
    assert "pm:********" in result["diff"]["prepared"]
    assert CANARY not in out and CANARY2 not in out

    code, result, out = run_module(args, capsys)
    assert code == 0 and result["changed"] is True, result
    assert result["reload"] == "not_running"
    for name in ("sasl_passwd", "sender_relay", "tls_policy"):
        assert os.path.exists(os.path.join(postfix_dir, name + ".db"))
    assert stat.S_IMODE(os.stat(os.path.join(postfix_dir, "sasl_passwd")).st_mode) == 0o600
    assert CANARY not in out and CANARY2 not in out
    lookup = subprocess.run(["postmap", "-c", postfix_dir, "-q", "@example.com",
                             "hash:%s/sasl_passwd" % postfix_dir], capture_output=True, text=True, check=False)
    assert lookup.stdout == "apikey:%s\n" % CANARY2

    before = snapshot(postfix_dir)
    code, result, dummy = run_module(args, capsys)
    assert code == 0 and result["changed"] is False and result["files"] == []
    assert "diff" not in result or result["diff"] == {"prepared": ""}
    assert snapshot(postfix_dir) == before


def test_a_failed_verify_changes_nothing(postrelay_bin, postfix_dir, capsys):
    args = dict(relayhost=dict(relay="[127.0.0.1]:1", username="pm", password=CANARY, tls="encrypt"),
                binary=postrelay_bin, postfix_dir=postfix_dir, verify=True)
    before = snapshot(postfix_dir)
    code, result, out = run_module(args, capsys)
    assert code == 1 and result["failed"] is True
    assert result["rc"] == 2
    assert [c["result"] for c in result["checks"]] == ["failed"]
    assert "relayhost via [127.0.0.1]:1" in result["msg"]
    assert CANARY not in out
    assert snapshot(postfix_dir) == before


# The vector published with AWS's SigV4 SMTP-password algorithm (src/providers.rs's test).
SES_SECRET, SES_REGION, SES_SMTP_PASSWORD = "some+secret+key", "eu-central-1", "BMXhUYlu5Z3gSXVQORxlVa7XPaz91aGWdfHxvkOZdWZ2"


def postmap_q(postfix_dir, key, name):
    return subprocess.run(["postmap", "-c", postfix_dir, "-q", key, "hash:%s/%s" % (postfix_dir, name)],
                          capture_output=True, text=True, check=False).stdout


def test_provider_presets_reach_postrelay(postrelay_bin, postfix_dir, capsys):
    key_file = os.path.join(os.path.dirname(postfix_dir), "ses.key")
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(SES_SECRET + "\n")
    args = dict(
        relayhost=dict(provider="mailgun", region="eu", username="pm@mg.example", password=CANARY),
        senders=[
            dict(domain="example.org", provider="ses", region=SES_REGION, username="AKIAIOSFODNN7EXAMPLE",
                 secret_access_key_file=key_file),
            dict(domain="shop.example", provider="sendgrid", username="apikey", password=CANARY2),
            # A relay and tls beside a preset, saying what it says.
            dict(address="wes@example.com", provider="postmark", relay="[smtp.postmarkapp.com]:587", tls="secure",
                 username="token-1f2e", password="token-1f2e"),
        ],
        binary=postrelay_bin, postfix_dir=postfix_dir, map_type="hash",
    )
    code, result, out = run_module(args, capsys)
    assert code == 0 and result["changed"] is True, result
    assert CANARY not in out and CANARY2 not in out and SES_SMTP_PASSWORD not in out
    main_cf = subprocess.run(["postconf", "-c", postfix_dir, "-h", "relayhost"],
                             capture_output=True, text=True, check=False).stdout
    assert main_cf == "[smtp.eu.mailgun.org]:587\n"
    assert postmap_q(postfix_dir, "@example.org", "sender_relay") == "[email-smtp.eu-central-1.amazonaws.com]:587\n"
    assert postmap_q(postfix_dir, "@shop.example", "sender_relay") == "[smtp.sendgrid.net]:587\n"
    assert postmap_q(postfix_dir, "wes@example.com", "sender_relay") == "[smtp.postmarkapp.com]:587\n"
    # The SMTP password postrelay derived from the secret access key.
    assert postmap_q(postfix_dir, "@example.org", "sasl_passwd") == "AKIAIOSFODNN7EXAMPLE:%s\n" % SES_SMTP_PASSWORD
    assert postmap_q(postfix_dir, "[smtp.sendgrid.net]:587", "tls_policy") == "secure\n"

    code, result, dummy = run_module(args, capsys)
    assert code == 0 and result["changed"] is False, result


def test_a_preset_rule_broken_fails_with_postrelays_message(postrelay_bin, postfix_dir, capsys):
    args = dict(senders=[dict(domain="shop.example", provider="sendgrid", username="shop", password=CANARY)],
                relayhost=dict(provider="mailgun", relay="[smtp.mailgun.org]:25"),
                binary=postrelay_bin, postfix_dir=postfix_dir)
    before = snapshot(postfix_dir)
    code, result, out = run_module(args, capsys)
    assert code == 1 and result["rc"] == 2, result
    messages = [p["message"] for p in result["problems"]]
    assert any('provider "sendgrid" takes username "apikey"' in m for m in messages), messages
    assert any("differs from provider" in m for m in messages), messages
    assert CANARY not in out
    assert snapshot(postfix_dir) == before
