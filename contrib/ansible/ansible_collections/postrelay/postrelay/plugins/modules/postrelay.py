#!/usr/bin/python
# -*- coding: utf-8 -*-

"""Drives postrelay from Ansible.

The module renders the desired state as TOML itself and pipes it to
``postrelay plan|apply --format json --config -``: no file ever holds a password, and
no password is ever on a command line. Check mode runs ``plan``; a normal run runs
``apply`` once (its report carries the same redacted diffs, so there is no plan/apply
race). ``changed`` is postrelay's JSON field, never guessed from text.
"""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: postrelay
short_description: Configure Postfix sender-dependent SASL relaying with postrelay
version_added: "0.1.0"
description:
  - Makes a host's Postfix relay each sender domain or address through its own relay,
    with its own SMTP credentials and TLS level, by running C(postrelay apply) with the
    desired state given in the task.
  - The module renders postrelay's desired-state TOML and pipes it to
    C(postrelay --config -) on stdin. No temporary file holds a password, and no
    password is put on a command line.
  - In check mode it runs C(postrelay plan); otherwise it runs C(postrelay apply) once.
    V(changed) is the C(changed) field of postrelay's JSON report.
  - With C(--diff), the diff shows each file postrelay changes (or would change) as a
    unified diff, with every password replaced by C(********).
  - postrelay's warnings become task warnings. A postrelay error fails the task with
    postrelay's message and the problems it found, each with its line in the rendered
    desired state (C(<stdin>)); nothing is changed then.
  - Postfix is reloaded (not restarted) only when something changed.
author:
  - postrelay contributors (!UNKNOWN)
requirements:
  - postrelay (the binary, see O(binary)) and Postfix (C(postconf), C(postmap), C(postfix)) on the managed host.
  - Root on the managed host (C(become)).
attributes:
  check_mode:
    support: full
    description: Runs C(postrelay plan), which reads the host and changes nothing.
  diff_mode:
    support: full
    description: The unified diffs of the files, passwords masked.
  platform:
    support: full
    platforms: posix
    description: Hosts with Postfix.
options:
  relayhost:
    description:
      - The catch-all relay. Senders not listed in O(senders), and bounces, leave through it.
      - Sets Postfix's C(relayhost). Omit it to leave no catch-all.
      - One of O(relayhost.relay) and O(relayhost.provider) is required.
    type: dict
    suboptions:
      relay:
        description:
          - C(host), C([host]), C(host:port) or C([host]:port). Brackets mean no MX lookup.
          - Not needed with O(relayhost.provider). Beside a provider it must be the
            preset's relay (postrelay checks, and fails the task if it is not).
        type: str
      provider:
        description:
          - A provider preset. It stands for the provider's relay, in brackets (no MX
            lookup), at O(relayhost.tls=secure), and postrelay checks the login by the
            provider's rules.
          - V(mailgun), C([smtp.mailgun.org]:587), or C([smtp.eu.mailgun.org]:587) with
            O(relayhost.region=eu); the SMTP login and its password.
          - V(ses), C([email-smtp.REGION.amazonaws.com]:587), O(relayhost.region)
            required; O(relayhost.username) is the IAM access key ID, the password the SMTP
            password (O(relayhost.password), O(relayhost.password_file)) or derived from
            the IAM secret access key (O(relayhost.secret_access_key_file)).
          - V(sendgrid), C([smtp.sendgrid.net]:587); O(relayhost.username) must be
            C(apikey), the password is the API key.
          - V(postmark), C([smtp.postmarkapp.com]:587); the server token is both the
            username and the password.
          - A O(relayhost.relay) or O(relayhost.tls) beside it must say what the preset
            says (postrelay checks).
        type: str
        choices: [mailgun, ses, sendgrid, postmark]
      region:
        description:
          - The region of O(relayhost.provider). V(mailgun), C(us) (the default) or
            C(eu). V(ses), the AWS region, required (C(eu-west-1)).
          - Only with a provider that has regions (postrelay checks).
        type: str
      username:
        description:
          - The SMTP AUTH username. Give it with O(relayhost.password),
            O(relayhost.password_file) or O(relayhost.secret_access_key_file), or with none of them.
        type: str
      password:
        description:
          - The SMTP AUTH password. Never logged, never in the diff, never on a command line.
          - Mutually exclusive with O(relayhost.password_file) and O(relayhost.secret_access_key_file).
        type: str
      password_file:
        description:
          - Absolute path, on the managed host, of a file whose first line is the password
            (mode 0600, owned by root). Mutually exclusive with O(relayhost.password) and
            O(relayhost.secret_access_key_file).
        type: path
      secret_access_key_file:
        description:
          - With O(relayhost.provider=ses) only. Absolute path, on the managed host, of a
            file (mode 0600, owned by root) whose first line is the IAM secret access key.
            postrelay derives the SMTP password from it and O(relayhost.region) (AWS's
            SigV4 SMTP-password algorithm). Only the path goes through Ansible, never the key.
          - Instead of O(relayhost.password) or O(relayhost.password_file); needs
            O(relayhost.username), the access key ID.
        type: path
      tls:
        description:
          - The TLS level Postfix uses with this relay. postrelay's default is C(encrypt),
            a provider's C(secure) (beside O(relayhost.provider) it must be V(secure)).
        type: str
        choices: [secure, verify, encrypt, may, none]
      accept_cleartext:
        description:
          - With O(relayhost.tls=may) or O(relayhost.tls=none), acknowledges that the
            password may be sent without TLS (no warning).
        type: bool
  senders:
    description:
      - One entry per sender domain or address with its own relay and/or credentials.
      - The whole list is the desired state. Entries postrelay wrote before and that are
        no longer listed are removed.
    type: list
    elements: dict
    suboptions:
      domain:
        description: The sender domain (C(example.com)). Exactly one of O(senders[].domain) and O(senders[].address).
        type: str
      address:
        description: One sender address (C(wes@example.com)). It overrides its domain's entry completely.
        type: str
      relay:
        description:
          - The relay of this sender, as O(relayhost.relay). Optional with O(relayhost);
            without it (and without O(senders[].provider)), the sender goes through the
            relayhost with its own credentials.
          - Not needed with O(senders[].provider); beside one it must be the preset's relay.
        type: str
      provider:
        description:
          - A provider preset for this sender's own relay, as O(relayhost.provider).
        type: str
        choices: [mailgun, ses, sendgrid, postmark]
      region:
        description: The region of O(senders[].provider), as O(relayhost.region).
        type: str
      username:
        description: The SMTP AUTH username.
        type: str
      password:
        description:
          - The SMTP AUTH password. Never logged, never in the diff, never on a command line.
          - Mutually exclusive with O(senders[].password_file) and O(senders[].secret_access_key_file).
        type: str
      password_file:
        description: Absolute path, on the managed host, of a file whose first line is the password.
        type: path
      secret_access_key_file:
        description:
          - With O(senders[].provider=ses), the IAM secret access key's file, as
            O(relayhost.secret_access_key_file).
        type: path
      tls:
        description:
          - The TLS level for this sender's own relay (only with O(senders[].relay) or
            O(senders[].provider); beside a provider it must be V(secure)).
        type: str
        choices: [secure, verify, encrypt, may, none]
      accept_cleartext:
        description: As O(relayhost.accept_cleartext).
        type: bool
  map_type:
    description:
      - The Postfix lookup table type of the maps (C(hash), C(btree), C(lmdb), C(cdb), C(texthash)).
      - Default, Postfix's C(default_database_type).
    type: str
  config:
    description:
      - Path, on the managed host, of an existing postrelay desired-state file to apply
        instead of O(relayhost), O(senders) and O(map_type).
    type: path
  postfix_dir:
    description:
      - The Postfix configuration directory (C(postrelay --postfix-dir)), like C(postconf -c).
      - Default, the desired state's C(config_dir), else C(/etc/postfix).
    type: path
  verify:
    description:
      - Before changing anything, log in to every relay with every credential, as
        C(postrelay apply --verify) does (no mail is sent). If a login fails, nothing is
        changed and the task fails with the failed checks in RV(checks).
      - Not run in check mode (C(postrelay plan) does not log in).
    type: bool
    default: false
  reload:
    description:
      - Reload Postfix after a change. With V(false) (C(--no-reload)), the next apply
        reloads it; RV(reload) is then C(owed).
    type: bool
    default: true
  syslog:
    description:
      - Record each apply that changes something, and each that fails, as one line in
        the mail log through Postfix's C(postlog). With V(false) (C(--no-syslog)),
        nothing is recorded.
    type: bool
    default: true
  binary:
    description: Path of the postrelay binary on the managed host.
    type: path
    default: /usr/sbin/postrelay
notes:
  - Passwords given with O(relayhost.password) or O(senders[].password) are C(no_log).
    O(relayhost.password_file) and O(relayhost.secret_access_key_file) are paths; the
    secret in the file is read by postrelay on the managed host and never passes
    through Ansible.
    Ansible replaces them with C(********) anywhere in the task result. Use
    distinctive passwords; a short one that occurs in other text masks that text too.
  - Run one task per host with the whole sender list; postrelay removes what the list
    no longer names.
"""

EXAMPLES = r"""
- name: Relay each sender domain through its own account
  postrelay.postrelay.postrelay:
    relayhost:
      relay: "[smtp.mailgun.org]:587"
      username: postmaster@mg.example.net
      password: "{{ vault_mailgun_password }}"
      tls: secure
    senders:
      - domain: example.com
        relay: "[email-smtp.eu-west-1.amazonaws.com]:587"
        username: AKIAEXAMPLE
        password: "{{ vault_ses_password }}"
      - domain: shop.example
        relay: "[smtp.sendgrid.net]:587"
        username: apikey
        password_file: /etc/postrelay/secrets/shop.example
  become: true

- name: Provider presets (the relay and tls come from the provider)
  postrelay.postrelay.postrelay:
    relayhost:
      provider: mailgun
      region: eu          # [smtp.eu.mailgun.org]:587, tls secure
      username: postmaster@mg.example.net
      password_file: /etc/postrelay/secrets/mailgun
    senders:
      - domain: example.org
        provider: ses
        region: eu-west-1   # [email-smtp.eu-west-1.amazonaws.com]:587
        username: AKIAIOSFODNN7EXAMPLE
        # The IAM secret access key; postrelay derives the SMTP password from it.
        secret_access_key_file: /etc/postrelay/secrets/ses.key
      - domain: shop.example
        provider: sendgrid
        username: apikey
        password: "{{ vault_sendgrid_api_key }}"
  become: true

- name: Rotate a password, logging in to every relay first
  postrelay.postrelay.postrelay:
    relayhost:
      relay: "[smtp.mailgun.org]:587"
      username: postmaster@mg.example.net
      password: "{{ vault_mailgun_password_new }}"
    verify: true
  become: true

- name: Apply a desired-state file already on the host
  postrelay.postrelay.postrelay:
    config: /etc/postrelay/postrelay.toml
  become: true
"""

RETURN = r"""
changed:
  description: Whether postrelay changed (or, in check mode, would change) something.
  returned: always
  type: bool
comment:
  description: postrelay's summary line.
  returned: success
  type: str
  sample: 3 file(s) to change, 6 command(s) to run
command:
  description: The postrelay command run, C(plan) or C(apply).
  returned: success
  type: str
  sample: apply
cmd:
  description: The command line run. It never holds a password (the desired state goes on stdin).
  returned: always
  type: list
  elements: str
  sample: [/usr/sbin/postrelay, apply, --format, json, --config, "-"]
files:
  description:
    - The files changed (check mode, that would change), as postrelay's JSON report lists
      them (path, kind, action, reasons, entries_changed, parameters, rebuild,
      mode_changes, owner_changes, and the redacted unified C(diff)).
  returned: success
  type: list
  elements: dict
commands:
  description: The commands postrelay ran (check mode, would run).
  returned: success
  type: list
  elements: str
reload:
  description: C(done), C(owed), C(not_needed) or C(not_running).
  returned: success
  type: str
  sample: done
hold:
  description: The mail held in the queue while Postfix switched routes, or null.
  returned: success
  type: dict
steps:
  description: What apply did, in order.
  returned: success, not in check mode
  type: list
  elements: str
checks:
  description: The logins checked with O(verify), one per relay and credential (sender, relay, username, tls, result, error).
  returned: success and failure, with O(verify)
  type: list
  elements: dict
notes:
  description: What to know that is not a change.
  returned: success
  type: list
  elements: str
kept:
  description: Maps main.cf lists after postrelay's own, which stay.
  returned: success
  type: list
  elements: dict
postfix_dir:
  description: The Postfix configuration directory postrelay worked on.
  returned: success
  type: str
  sample: /etc/postfix
problems:
  description: On failure, each problem of the desired state with its file (C(<stdin>) for the rendered one), line and message.
  returned: failure
  type: list
  elements: dict
  sample: [{file: "<stdin>", line: 4, message: "relayhost: relay \"[smtp.example.net]:587 \": contains whitespace"}]
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule

TLS_LEVELS = ["secure", "verify", "encrypt", "may", "none"]

PROVIDERS = ["mailgun", "ses", "sendgrid", "postmark"]

# The keys of each table, in the order they are rendered: postrelay's own order (as in
# src/desired/raw.rs), with a preset's provider and region after the relay they stand
# for, and secret_access_key_file (which gives the password) after password_file.
CREDENTIAL_KEYS = (
    "relay",
    "provider",
    "region",
    "username",
    "password",
    "password_file",
    "secret_access_key_file",
    "tls",
    "accept_cleartext",
)
SENDER_KEYS = ("domain", "address") + CREDENTIAL_KEYS

ENTRY_OPTIONS = dict(
    relay=dict(type="str"),
    provider=dict(type="str", choices=PROVIDERS),
    region=dict(type="str"),
    username=dict(type="str"),
    password=dict(type="str", no_log=True),
    password_file=dict(type="path", no_log=False),
    # A path: the key in the file is read by postrelay on the host, never by Ansible.
    secret_access_key_file=dict(type="path", no_log=False),
    tls=dict(type="str", choices=TLS_LEVELS),
    accept_cleartext=dict(type="bool"),
)

# The stdout of postrelay quoted in an error when it is not the JSON expected, at most.
QUOTE_LIMIT = 2000


class RenderError(Exception):
    """A value TOML cannot carry. Its message names the field, never the value."""


def toml_string(value, field):
    """``value`` as a TOML basic string.

    Quotes and backslashes are escaped, and so is every control character (C0, DEL and
    C1), tab and newline included: the string stays on one line whatever it holds, and
    postrelay receives exactly ``value``, to judge it by its own rules. A lone surrogate
    (which no UTF-8 can carry) is refused, with the field named and the value withheld.
    """
    out = ['"']
    for ch in value:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif code < 0x20 or 0x7F <= code <= 0x9F:
            out.append("\\u%04X" % code)
        elif 0xD800 <= code <= 0xDFFF:
            raise RenderError("%s: holds a lone surrogate (U+%04X), which is not a Unicode character" % (field, code))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def toml_value(value, field):
    if isinstance(value, bool):
        return "true" if value else "false"
    return toml_string(value, field)


def render_table(lines, header, entry, keys, field):
    lines.append("")
    lines.append(header)
    for key in keys:
        value = entry.get(key)
        if value is not None:
            lines.append("%s = %s" % (key, toml_value(value, "%s.%s" % (field, key))))


def render_toml(relayhost=None, senders=None, map_type=None):
    """The desired-state file for these options, as postrelay reads it.

    Options left out (None) are left out of the file, so postrelay's defaults apply.
    The file never is empty (postrelay reads stdin only when it is given some).
    """
    lines = ["# Rendered by the postrelay.postrelay.postrelay Ansible module."]
    if map_type is not None:
        render_table(lines, "[postfix]", {"map_type": map_type}, ("map_type",), "map_type")
    if relayhost is not None:
        render_table(lines, "[relayhost]", relayhost, CREDENTIAL_KEYS, "relayhost")
    for i, sender in enumerate(senders or []):
        render_table(lines, "[[sender]]", sender, SENDER_KEYS, "senders[%d]" % i)
    return "\n".join(lines) + "\n"


def build_command(params, check_mode):
    """The argv: never a password (the desired state goes on stdin)."""
    cmd = [params["binary"], "plan" if check_mode else "apply", "--format", "json"]
    cmd += ["--config", params["config"] if params["config"] is not None else "-"]
    if params["postfix_dir"] is not None:
        cmd += ["--postfix-dir", params["postfix_dir"]]
    if not check_mode:
        if params["verify"]:
            cmd.append("--verify")
        if not params["reload"]:
            cmd.append("--no-reload")
        if not params["syslog"]:
            cmd.append("--no-syslog")
    return cmd


def quote(text):
    text = text.strip()
    if len(text) > QUOTE_LIMIT:
        return text[:QUOTE_LIMIT] + "... (%d characters in all)" % len(text)
    return text


def problem_line(problem):
    where = problem.get("file") or "?"
    if problem.get("line") is not None:
        where = "%s, line %s" % (where, problem["line"])
    return "%s: %s" % (where, problem.get("message"))


def diff_of(files):
    """The redacted unified diffs of ``files`` as one text for Ansible's diff output.

    A file whose content stays (only its compiled map is rebuilt, or its mode or owner
    changes) is named with postrelay's reasons instead.
    """
    parts = []
    for f in files:
        if f.get("diff"):
            parts.append(f["diff"] if f["diff"].endswith("\n") else f["diff"] + "\n")
        else:
            reasons = ", ".join(r.get("text", r.get("code", "")) for r in f.get("reasons", []))
            parts.append("# %s: %s (%s)\n" % (f.get("path"), f.get("action"), reasons))
    return {"prepared": "".join(parts)}


def interpret(rc, stdout, stderr, command, cmd):
    """Maps postrelay's exit code and JSON report to the module's outcome.

    Returns ``(ok, result)``: ``result`` holds the keyword arguments of ``exit_json``
    (without ``diff``) or ``fail_json``, and, under ``warnings``, postrelay's warnings.
    """
    try:
        report = json.loads(stdout)
    except ValueError:
        report = None
    if not isinstance(report, dict):
        msg = "postrelay %s exited %d without its JSON report" % (command, rc)
        if stderr.strip():
            msg += "; stderr: %s" % quote(stderr)
        if stdout.strip():
            msg += "; stdout: %s" % quote(stdout)
        return False, dict(msg=msg, rc=rc, cmd=cmd)
    if "error" in report:
        problems = report.get("problems") or []
        msg = "postrelay %s: %s" % (command, report["error"])
        if problems:
            msg += ": " + "; ".join(problem_line(p) for p in problems)
        result = dict(msg=msg, rc=rc, cmd=cmd, problems=problems)
        if "checks" in report:
            result["checks"] = report["checks"]
            failed = [c for c in report["checks"] if c.get("result") != "ok"]
            if failed:
                msg += ": " + "; ".join(
                    "%s via %s: %s" % (c.get("sender"), c.get("relay"), c.get("error")) for c in failed
                )
                result["msg"] = msg
        return False, result
    if report.get("format_version") != 1:
        return False, dict(
            msg="postrelay %s: unsupported JSON format_version %r (this module reads 1)"
            % (command, report.get("format_version")),
            rc=rc,
            cmd=cmd,
        )
    expected = (0, 1) if command == "plan" else (0,)
    if rc not in expected or not isinstance(report.get("changed"), bool):
        return False, dict(
            msg="postrelay %s: unexpected exit code %d with a report whose changed is %r"
            % (command, rc, report.get("changed")),
            rc=rc,
            cmd=cmd,
        )
    result = dict(
        changed=report["changed"],
        command=command,
        cmd=cmd,
        comment=report.get("comment"),
        files=report.get("files", []),
        commands=report.get("commands", []),
        reload=report.get("reload"),
        hold=report.get("hold"),
        checks=report.get("checks", []),
        notes=report.get("notes", []),
        kept=report.get("kept", []),
        postfix_dir=report.get("postfix_dir"),
        warnings=report.get("warnings", []),
    )
    if "steps" in report:
        result["steps"] = report["steps"]
    return True, result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            relayhost=dict(
                type="dict",
                options=ENTRY_OPTIONS,
                mutually_exclusive=[("password", "password_file", "secret_access_key_file")],
                required_one_of=[("relay", "provider")],
            ),
            senders=dict(
                type="list",
                elements="dict",
                options=dict(ENTRY_OPTIONS, domain=dict(type="str"), address=dict(type="str")),
                mutually_exclusive=[("domain", "address"), ("password", "password_file", "secret_access_key_file")],
                required_one_of=[("domain", "address")],
            ),
            map_type=dict(type="str"),
            config=dict(type="path"),
            postfix_dir=dict(type="path"),
            verify=dict(type="bool", default=False),
            reload=dict(type="bool", default=True),
            syslog=dict(type="bool", default=True),
            binary=dict(type="path", default="/usr/sbin/postrelay"),
        ),
        mutually_exclusive=[("config", "relayhost"), ("config", "senders"), ("config", "map_type")],
        supports_check_mode=True,
    )
    params = module.params
    check_mode = module.check_mode
    command = "plan" if check_mode else "apply"
    cmd = build_command(params, check_mode)

    data = None
    if params["config"] is None:
        try:
            data = render_toml(params["relayhost"], params["senders"], params["map_type"])
        except RenderError as e:
            module.fail_json(msg="cannot render the desired state: %s" % e, cmd=cmd)

    # The desired state, passwords included, goes on stdin only: run_command neither
    # logs nor returns its data, and the argv above holds none of it.
    if not os.path.isfile(params["binary"]):
        module.fail_json(msg="postrelay not found at %s (install it, or set binary)" % params["binary"], cmd=cmd)
    rc, stdout, stderr = module.run_command(
        cmd, data=data, binary_data=True, expand_user_and_vars=False, errors="surrogate_then_replace"
    )
    ok, result = interpret(rc, stdout, stderr, command, cmd)
    if not ok:
        module.fail_json(**result)
    for warning in result.pop("warnings"):
        module.warn("postrelay: %s" % warning)
    if module._diff:
        result["diff"] = diff_of(result["files"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
