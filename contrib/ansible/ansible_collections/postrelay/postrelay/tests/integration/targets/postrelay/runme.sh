#!/usr/bin/env bash
# Integration test of postrelay.postrelay.postrelay: runs playbook.yml with --diff
# against a throw-away Postfix config dir (steps 1-6 and 8 assert themselves), then
# step 7: greps the whole output for every password (and its base64), and the work dir
# for any file but Postfix's password map that holds one. Prints each step's result.
#
# Needs POSTRELAY_BIN (the postrelay binary), ansible-playbook with this collection on
# its ANSIBLE_COLLECTIONS_PATH (ansible-test sets it up), and Postfix. Fails without them.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
fail() { echo "runme.sh: $*" >&2; exit 1; }
[ -n "${POSTRELAY_BIN:-}" ] || fail "POSTRELAY_BIN must name the postrelay binary"
[ -x "$POSTRELAY_BIN" ] || fail "POSTRELAY_BIN=$POSTRELAY_BIN is not executable"
export PATH="$PATH:/usr/sbin"
for tool in postconf postmap postfix ansible-playbook python3; do
    command -v "$tool" >/dev/null || fail "$tool not found"
done
[ "$(id -u)" = 0 ] || fail "must run as root (postrelay writes root-owned maps)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -m 0700 "$work/etc" "$work/queue" "$work/secrets" "$work/ansible-tmp"
cat > "$work/etc/main.cf" <<MAINCF
queue_directory = $work/queue
data_directory = $work/data
myhostname = mail.example.org
mydestination = \$myhostname, localhost
relayhost =
inet_interfaces = loopback-only
compatibility_level = 3.6
MAINCF
touch -d '10 minutes ago' "$work/etc/main.cf"   # Postfix tools pause on a main.cf < 2 s old

# Fresh passwords for each run, with the characters that break quoting; written to a
# vars file (0600) that ansible-playbook reads, never put on a command line.
python3 - "$work" <<'PY'
import json, os, secrets, sys
work = sys.argv[1]
tag = lambda p: p + "-" + secrets.token_hex(6)
pw = {
    "pw_relayhost": tag("RH") + ' "q\\b#:= ü',
    "pw_example": tag("EX") + "#:=",
    "pw_example_rotated": tag("EXnew") + "'\"{{x}}",
    "pw_wes": tag("WES"),
    "pw_sendgrid": tag("SG"),
    "pw_shop": tag("SHOP"),   # only in the password_file: Ansible never sees it
}
def private(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
private(os.path.join(work, "passwords.json"), json.dumps(pw))
private(os.path.join(work, "secrets", "shop.example"), pw["pw_shop"] + "\n")
vars_ = {k: v for k, v in pw.items() if k != "pw_shop"}
# {{ }} in a password must stay literal: mark the values unsafe for templating.
private(os.path.join(work, "vars.yml"), "".join(
    "%s: !unsafe %s\n" % (k, json.dumps(v)) for k, v in vars_.items()
) + "work: %s\npostrelay_bin: %s\n" % (json.dumps(work), json.dumps(os.environ["POSTRELAY_BIN"])))
PY

export ANSIBLE_LOCAL_TEMP="$work/ansible-tmp" ANSIBLE_REMOTE_TEMP="$work/ansible-tmp/remote"
export ANSIBLE_NOCOLOR=1 ANSIBLE_STDOUT_CALLBACK=default ANSIBLE_RETRY_FILES_ENABLED=0
log="$work/ansible.log"
rc=0
ansible-playbook -i localhost, --diff -e "@$work/vars.yml" "$here/playbook.yml" >"$log" 2>&1 || rc=$?
cat "$log"
[ "$rc" = 0 ] || fail "ansible-playbook exited $rc"

# Each step's result: the first status line after its task banner.
python3 - "$log" <<'PY'
import re, sys
want = {
    "Step 1: check mode on a fresh host": "changed",
    "Step 2: apply": "changed",
    "Step 3: apply again": "ok",
    "Step 4: check mode again": "ok",
    "Step 5: rotate example.com's password": "changed",
    "Step 6: a relay with a space": "fatal",
    "Step 8: a sender with provider sendgrid": "changed",
    "Step 8: provider sendgrid with a username other than apikey": "fatal",
}
got, task = {}, None
for line in open(sys.argv[1], encoding="utf-8"):
    m = re.match(r"TASK \[(.*)\] \**$", line.rstrip("\n"))
    if m:
        task = m.group(1)
        continue
    m = re.match(r"(ok|changed|fatal|failed|skipping): \[localhost\]", line)
    if m and task in want and task not in got:
        got[task] = m.group(1)
print("\nresults:")
for task, status in want.items():
    print("  %-40s %s%s" % (task, got.get(task), "" if got.get(task) == status else "   (want %s)" % status))
if got != want:
    sys.exit("runme.sh: a step's result is not the one wanted")
PY

# Step 7: no password, nor its base64, in the --diff output of the whole run, nor in any
# file of the work dir but the password map (and the test's own secret files).
python3 - "$work" "$log" <<'PY'
import base64, json, os, sys
work, log = sys.argv[1], sys.argv[2]
pw = json.load(open(os.path.join(work, "passwords.json")))
needles = {}
for name, p in pw.items():
    needles[name] = p.encode()
    needles[name + " (base64)"] = base64.b64encode(p.encode())
output = open(log, "rb").read()
hits = [name for name, n in needles.items() if n in output]
print("\nstep 7: %d password(s) grepped (%d with base64) in %d bytes of --diff output: %d hit(s) %s"
      % (len(pw), len(needles), len(output), len(hits), hits or ""))
allowed = {os.path.join(work, p) for p in
           ("passwords.json", "vars.yml", "secrets/shop.example", "etc/sasl_passwd", "etc/sasl_passwd.db")}
leaks = []
for root, _, files in os.walk(work):
    for f in files:
        path = os.path.join(root, f)
        if path not in allowed and path != log:
            data = open(path, "rb").read()
            leaks += ["%s: %s" % (path, n) for n, v in needles.items() if v in data]
print("files under the work dir holding a password, other than the password map: %d %s" % (len(leaks), leaks or ""))
# The control: the search finds the passwords where they must be.
sasl = open(os.path.join(work, "etc", "sasl_passwd"), "rb").read()
missing = [n for n in ("pw_relayhost", "pw_example_rotated", "pw_wes", "pw_shop", "pw_sendgrid") if needles[n] not in sasl]
if missing:
    sys.exit("runme.sh: the grep misses passwords that sasl_passwd holds: %s" % missing)
if hits or leaks:
    sys.exit("runme.sh: a password leaked")
PY
