//! The audit trail: apply's one line in the mail log, written by Postfix's own postlog.
//!
//! On a config dir whose main.cf sends Postfix's logging to a file in the temp dir
//! (`maillog_file`; Postfix not running, so root's postlog writes the file itself): an
//! apply that changes something records one line saying what changed, a no-op nothing,
//! `--no-reload` still one, `--no-syslog` nothing, `--config -` names `<stdin>`; each
//! kind of failed apply one `warning:` line with its error; no password or its base64
//! ever reaches the log.
//! Where a failure is recorded (`--postfix-dir`, the desired state's config dir,
//! Postfix's default), and never in a config dir that fails the trust rules. A
//! postlog that fails or hangs leaves a warning and the apply's exit status as it was.
//! On a running instance the line goes through postlogd and sits after Postfix's own
//! reload message.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::api::TOOL_DIR_VAR;
use crate::harness::postfix;
use crate::harness::{
    CANARY, CANARY_FILE, CANARY2, Cmd, DEBIAN_MAIN_CF, Host, Need, Run, closed_port,
};
use crate::instance::{Instance, WAIT};
use crate::relay::encode;
use crate::require;

/// The text of every record postlog tagged `postrelay` in a mail log (after
/// `postrelay[PID]: `; a failure's starts with `warning: `).
fn records(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once(" postrelay[")?;
            let (pid, text) = rest.split_once("]: ")?;
            pid.parse::<u32>().ok()?;
            Some(text.to_string())
        })
        .collect()
}

/// The records added to the host's mail log since `before` records.
fn new_records(host: &Host, before: usize) -> Vec<String> {
    records(&host.maillog()).split_off(before)
}

/// A desired state: a catch-all relay with [`CANARY`] and example.com with its own
/// password `pw`; `extra` appended.
fn state(relay: &str, pw: &str, extra: &str) -> String {
    format!(
        "[relayhost]\nrelay = \"{relay}\"\nusername = \"rh@example.net\"\npassword = \"{CANARY}\"\n\n\
         [[sender]]\ndomain = \"example.com\"\nusername = \"pm@example.com\"\npassword = \"{pw}\"\n{extra}"
    )
}

/// Neither a test password nor its base64 (alone or as AUTH PLAIN's `\0user\0pass`) is
/// in `log`.
#[track_caller]
fn assert_no_secret(log: &str) {
    for (user, pw) in [
        ("rh@example.net", CANARY),
        ("pm@example.com", CANARY2),
        ("pm@example.com", CANARY_FILE),
    ] {
        for form in [
            pw.to_string(),
            encode(pw.as_bytes()),
            encode(format!("\0{user}\0{pw}").as_bytes()),
        ] {
            assert!(!log.contains(&form), "the mail log holds {form:?}:\n{log}");
        }
    }
}

/// The error apply printed, as its record in the mail log says it.
fn as_recorded(config: &Path, run: &Run) -> String {
    let error = run.stderr.strip_prefix("postrelay: error: ").unwrap();
    assert_eq!(error.lines().count(), 1, "{}", run.stderr);
    format!(
        "warning: apply of {} failed: {}",
        config.display(),
        error.trim_end()
    )
}

/// A change records one line naming it; the same apply again nothing (`--quiet`: nothing
/// on stdout or stderr either); `--no-reload`
/// one line; the reload it owed one more; `--no-syslog` nothing. Each failure (an
/// unparsable desired state, a postmap failure, `--verify` refusing) one warning with
/// the error apply printed, unless `--no-syslog`. No password anywhere in the log.
#[test]
fn apply_records_each_change_and_each_failure_in_the_mail_log() {
    require!(Need::Postfix, Need::Root, Need::DebugBuild);
    let host = Host::with_maillog(DEBIAN_MAIN_CF);
    let relay = format!("[127.0.0.1]:{}", closed_port());
    let config = host.config.clone();
    let (cfg, etc) = (config.display(), host.etc_canonical());
    let etc = etc.display();

    host.desired(&state(&relay, CANARY2, ""));
    host.apply_twice();
    assert_eq!(
        records(&host.maillog()),
        [format!(
            "applied {cfg} to {etc}: sasl_passwd: new (2 entries); sender_relay: new (0 entries); \
             tls_policy: new (1 entries); main.cf: set smtp_sasl_auth_enable (added), \
             smtp_sasl_security_options (added), smtp_sasl_tls_security_options (added), \
             smtp_sender_dependent_authentication (added), smtp_sasl_password_maps (added), \
             sender_dependent_relayhost_maps (added), smtp_tls_policy_maps (added), \
             relayhost (was \"\"); \
             Postfix is not running (postfix -c {etc} status): skipped check and reload"
        )],
        "one line for the change, none for the second apply:\n{}",
        host.maillog()
    );
    // From cron: a no-op says nothing, anywhere.
    let quiet = host.cmd("apply").args(&["--quiet"]).run();
    assert_eq!(
        (quiet.code, quiet.stdout.as_str(), quiet.stderr.as_str()),
        (0, "", "")
    );
    assert_eq!(records(&host.maillog()).len(), 1);

    // A rotation without a reload: one line; the owed reload, one more; then nothing.
    host.desired(&state(&relay, CANARY_FILE, ""));
    host.cmd("apply").args(&["--no-reload"]).run().success();
    host.settle();
    assert_eq!(
        new_records(&host, 1),
        [format!(
            "applied {cfg} to {etc}: sasl_passwd: content differs (2 entries): @example.com password changed; \
             skipped postfix check and reload (--no-reload)"
        )]
    );
    host.apply_twice();
    assert_eq!(
        new_records(&host, 2),
        [format!(
            "applied {cfg} to {etc}: the reload an earlier apply owed; \
             Postfix is not running (postfix -c {etc} status): skipped check and reload"
        )]
    );

    // --no-syslog: nothing, changed or failed.
    let shop = "\n[[sender]]\ndomain = \"shop.example\"\nrelay = \"[127.0.0.2]:2525\"\n";
    host.desired(&state(&relay, CANARY_FILE, shop));
    host.cmd("apply")
        .args(&["--no-syslog"])
        .run()
        .success()
        .stdout_has("sender_relay");
    host.settle();
    host.desired("[relayhost\n");
    host.cmd("apply").args(&["--no-syslog"]).run().error();
    assert_eq!(new_records(&host, 3), Vec::<String>::new());

    // Failures: the error apply printed, as a warning.
    let run = host.cmd("apply").run();
    run.error();
    assert_eq!(new_records(&host, 3), [as_recorded(&config, &run)]);

    host.desired(&state(&relay, CANARY2, shop));
    let real = crate::harness::api::tool("postmap").unwrap();
    let stub = host.stub(
        "postmap",
        &format!(
            "[ \"$3\" = -s ] && exec {} \"$@\"\necho 'postmap: fatal: injected postmap failure' >&2; exit 1",
            real.display()
        ),
    );
    let run = host.cmd("apply").env(TOOL_DIR_VAR, &stub).run();
    run.error().stderr_has("injected postmap failure");
    let got = new_records(&host, 4);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with(&format!(
            "warning: apply of {cfg} failed: cannot build {etc}/sasl_passwd.db: `postmap -c {etc} hash:{etc}/.sasl_passwd."
        )) && got[0].ends_with("failed (exit status: 1): postmap: fatal: injected postmap failure"),
        "{got:?}"
    );

    let run = host.cmd("apply").args(&["--verify"]).run();
    run.code(2)
        .stderr_has("postrelay: error: credential verification failed; nothing changed");
    assert_eq!(
        new_records(&host, 5),
        [format!(
            "warning: apply of {cfg} failed: credential verification failed; nothing changed"
        )]
    );

    // A desired state from standard input is named so.
    let etc_s = etc.to_string();
    Cmd::with_audit(&["apply", "--config", "-", "--postfix-dir", &etc_s])
        .run_with_input(state(&relay, CANARY2, "").as_bytes())
        .success();
    let got = new_records(&host, 6);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with(&format!(
            "applied <stdin> to {etc}: sasl_passwd: content differs (2 entries): @example.com password changed; "
        )),
        "{got:?}"
    );
    assert_no_secret(&host.maillog());
}

/// A postlog that fails, or hangs (killed after 5 s), costs a warning on stderr (with
/// `--format json`, in the document); the apply stands: exit 0, the report alone on
/// stdout. postlog gets the line as one
/// argument after `--`, and no password; a no-op runs no postlog.
#[test]
fn a_failed_record_is_a_warning_and_the_apply_stands() {
    require!(Need::Postfix, Need::Root, Need::DebugBuild);
    let host = Host::with_maillog(DEBIAN_MAIN_CF);
    let relay = format!("[127.0.0.1]:{}", closed_port());
    let etc = host.etc_canonical().display().to_string();
    let args = host.tmp.path().join("postlog.args");
    let stub = host.stub(
        "postlog",
        &format!(
            "printf '%s\\n' \"$@\" > {}\necho 'postlog: fatal: injected failure' >&2; exit 1",
            args.display()
        ),
    );
    host.desired(&state(&relay, CANARY2, ""));
    let run = host.cmd("apply").env(TOOL_DIR_VAR, &stub).run();
    run.success();
    assert!(
        run.stdout.ends_with("postrelay: applied\n"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("postlog"), "{}", run.stdout);
    assert_eq!(
        run.stderr,
        format!(
            "postrelay: warning: not recorded in the mail log: `postlog -c {etc} -t postrelay -p info -- TEXT` failed (exit status: 1):\n\
             ---\npostlog: fatal: injected failure\n--- (postlog says why only on a terminal)\n"
        )
    );
    let argv = fs::read_to_string(&args).unwrap();
    let argv: Vec<&str> = argv.lines().collect();
    assert_eq!(
        argv[..7],
        ["-c", &etc, "-t", "postrelay", "-p", "info", "--"]
    );
    assert_eq!(argv.len(), 8, "{argv:?}");
    assert!(argv[7].starts_with("applied "), "{argv:?}");
    assert_no_secret(&argv.join("\n"));
    host.settle();

    // With --format json the warning is in the document, not on stderr.
    host.desired(&state(&relay, CANARY, ""));
    let run = host
        .cmd("apply")
        .args(&["--format", "json"])
        .env(TOOL_DIR_VAR, &stub)
        .run();
    run.success();
    assert_eq!(run.stderr, "");
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["changed"], true, "{doc}");
    let warnings: Vec<&str> = doc["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w.as_str())
        .collect();
    assert_eq!(
        warnings,
        [format!(
            "not recorded in the mail log: `postlog -c {etc} -t postrelay -p info -- TEXT` failed (exit status: 1):\n\
             ---\npostlog: fatal: injected failure\n--- (postlog says why only on a terminal)"
        )],
        "{doc}"
    );
    host.settle();

    fs::remove_file(&args).unwrap();
    let run = host.cmd("apply").env(TOOL_DIR_VAR, &stub).run();
    assert_eq!(
        (run.code, run.stdout.as_str(), run.stderr.as_str()),
        (0, "postrelay: no changes\n", "")
    );
    assert!(!args.exists(), "a no-op ran postlog");

    let stub = host.stub("postlog", "exec sleep 60");
    host.desired(&state(&relay, CANARY_FILE, ""));
    let start = Instant::now();
    let run = host
        .cmd("apply")
        .env(TOOL_DIR_VAR, &stub)
        .run_within(Duration::from_secs(30));
    let took = start.elapsed();
    eprintln!("apply with a hanging postlog: {took:?}");
    run.success().stdout_has("postrelay: applied\n");
    assert_eq!(
        run.stderr,
        format!(
            "postrelay: warning: not recorded in the mail log: `postlog -c {etc} -t postrelay -p info -- TEXT` did not finish within 5 s: killed\n"
        )
    );
    assert!(
        (Duration::from_secs(5)..Duration::from_secs(15)).contains(&took),
        "{took:?}"
    );
}

/// Where a failure is recorded: `--postfix-dir`; else the desired state's
/// `[postfix] config_dir`, once the file could be read; else Postfix's default
/// `/etc/postfix` (a stub postlog notes the `-c` it got: the test writes nothing
/// there). Never in a config dir that fails the trust rules (postlog would read its
/// main.cf as root, which names the file to append to), nor one that does not exist.
#[test]
fn a_failure_is_recorded_only_in_a_trusted_config_dir() {
    require!(Need::Postfix, Need::Root, Need::DebugBuild);
    let host = Host::with_maillog(DEBIAN_MAIN_CF);
    let relay = format!("[127.0.0.1]:{}", closed_port());
    let etc = host.etc_canonical().display().to_string();
    let dirs = host.tmp.path().join("postlog.dirs");
    let stub = host.stub("postlog", &format!("echo \"$2\" >> {}", dirs.display()));
    let config = host.config.display().to_string();
    let apply = |extra: &[&str]| {
        let mut c = Cmd::with_audit(&["apply", "--config", &config]);
        c.args(extra).env(TOOL_DIR_VAR, &stub);
        let run = c.run();
        run.code(2);
        run
    };
    let recorded = || {
        let text = fs::read_to_string(&dirs).unwrap_or_default();
        let _ = fs::remove_file(&dirs);
        text.lines().map(str::to_string).collect::<Vec<_>>()
    };

    host.desired("[relayhost\n");
    apply(&["--postfix-dir", &etc]);
    assert_eq!(recorded(), [etc.as_str()], "--postfix-dir");
    // Postfix's default: only with its main.cf (postlog needs one; this machine's
    // Postfix may have none, as in a container where it was never configured).
    apply(&[]);
    let default: &[&str] = match Path::new("/etc/postfix/main.cf").exists() {
        true => &["/etc/postfix"],
        false => &[],
    };
    assert_eq!(recorded(), default, "an unreadable desired state");
    host.desired(&format!(
        "[postfix]\nconfig_dir = \"{etc}\"\n\n{}",
        state(&relay, CANARY2, "")
    ));
    apply(&["--verify"]).stderr_has("credential verification failed");
    assert_eq!(recorded(), [etc.as_str()], "[postfix] config_dir");

    // A config dir others can write, whose main.cf names a file of their choosing as
    // the mail log: neither the stub nor the real postlog runs, the file stays unwritten.
    let tmp = host.tmp.path().display();
    let open = host.tmp.path().join("open");
    fs::create_dir(&open).unwrap();
    fs::write(
        open.join("main.cf"),
        format!("maillog_file = {tmp}/victim\nmaillog_file_prefixes = {tmp}\n"),
    )
    .unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    let open = open.display().to_string();
    apply(&["--postfix-dir", &open]).stderr_has(&open);
    let missing = host.tmp.path().join("missing").display().to_string();
    apply(&["--postfix-dir", &missing]);
    assert_eq!(
        recorded(),
        Vec::<String>::new(),
        "untrusted or missing dirs"
    );
    Cmd::with_audit(&["apply", "--config", &config, "--postfix-dir", &open])
        .run()
        .error()
        .stderr_has(&open);
    assert!(!host.tmp.path().join("victim").exists(), "postlog ran");
}

/// On a running instance the line goes through postlogd into the instance's mail log,
/// after Postfix's own reload message: one line naming what changed (the added sender,
/// the rotated password, the reload), no line for a no-op or under `--no-syslog`, one
/// `warning:` line when `postfix check` refuses the change. No password in the log.
#[test]
fn live_the_audit_line_follows_postfix_reload_message() {
    require!(Need::Live, Need::DebugBuild);
    let relay = format!("[127.0.0.1]:{}", closed_port());
    let mut inst = Instance::new();
    inst.desired(&state(&relay, CANARY2, ""));
    inst.apply_ok();
    inst.start();
    let etc = inst.etc_canonical().display().to_string();
    let cfg = inst.config.display().to_string();
    // Each step's records end with a marker the test logs itself: postlogd writes
    // records in the order they arrive, so any postrelay line of the step is before it.
    let step_records = |tag: &str| -> (String, Vec<String>) {
        let marker = format!("audit-test marker {tag}");
        let out = postfix::command("postlog")
            .arg("-c")
            .arg(&inst.etc)
            .args(["-t", "audit-test", "--", &marker])
            .output()
            .unwrap();
        assert!(out.status.success(), "postlog: {out:?}");
        let start = Instant::now();
        loop {
            let log = inst.maillog();
            if let Some(at) = log.find(&marker) {
                // From the line after the previous marker.
                let from = log[..at]
                    .rfind("audit-test marker")
                    .map_or(0, |p| log[p..].find('\n').map_or(at, |n| p + n + 1));
                let section = log[from..at].to_string();
                return (section.clone(), records(&section));
            }
            assert!(start.elapsed() < WAIT, "no marker in the mail log\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    step_records("start");

    let shop = "\n[[sender]]\ndomain = \"shop.example\"\nrelay = \"[127.0.0.2]:2525\"\n";
    inst.desired(&state(&relay, CANARY_FILE, shop));
    let run = inst.apply_ok();
    run.stdout_has(&format!("ran postfix -c {etc} reload"));
    let (section, got) = step_records("change");
    assert_eq!(got.len(), 1, "{section}");
    assert!(
        got[0].starts_with(&format!("applied {cfg} to {etc}: sasl_passwd: content differs (2 entries): @example.com password changed; "))
            && got[0].contains("sender_relay: content differs (1 entries): @shop.example added; ")
            && got[0].ends_with("; reloaded"),
        "{}",
        got[0]
    );
    let reload = section
        .rfind("refreshing the Postfix mail system")
        .unwrap_or_else(|| panic!("no reload message:\n{section}"));
    assert!(reload < section.find(" postrelay[").unwrap(), "{section}");

    inst.apply_ok().stdout_has("postrelay: no changes");
    let (section, got) = step_records("no-op");
    assert!(got.is_empty(), "{section}");

    inst.desired(&state(&relay, CANARY2, shop));
    inst.cmd("apply").args(&["--no-syslog"]).run().success();
    inst.settle();
    let (section, got) = step_records("no-syslog");
    assert!(got.is_empty(), "{section}");

    let real = crate::harness::api::tool("postfix").unwrap();
    let stub = inst.stub(
        "postfix",
        &format!(
            "case \"$3\" in check) echo 'postfix: fatal: injected check failure' >&2; exit 1;; esac\nexec {} \"$@\"",
            real.display()
        ),
    );
    inst.desired(&state(&relay, CANARY_FILE, shop));
    let run = inst.cmd("apply").env(TOOL_DIR_VAR, &stub).run();
    run.error().stderr_has("injected check failure");
    inst.settle();
    let (section, got) = step_records("failed");
    assert_eq!(
        got,
        [format!(
            "warning: apply of {cfg} failed: no file was replaced: `postfix -c {etc} check` failed \
             (exit status: 1): postfix: fatal: injected check failure \
             (postfix reports details only to the mail log)"
        )],
        "{section}"
    );
    assert_no_secret(&inst.maillog());
}

/// postlog's own behaviour that apply relies on, as documented in docs/reliability.md:
/// with `maillog_file` set and Postfix not running, root's postlog appends to the file
/// itself and exits 0, quickly once main.cf is older than 2 s; with neither a mail log
/// nor a syslog socket it exits 0 (the record is lost).
#[test]
fn postlog_without_postlogd_writes_the_mail_log_itself() {
    require!(Need::Postfix, Need::Root);
    let host = Host::with_maillog("");
    let postlog = |dir: &Path, text: &str| {
        let start = Instant::now();
        let out = postfix::command("postlog")
            .arg("-c")
            .arg(dir)
            .args(["-t", "postrelay", "-p", "warning", "--", text])
            .output()
            .unwrap();
        (out, start.elapsed())
    };
    let (out, took) = postlog(&host.etc, "-starts with a dash %s %n");
    assert!(
        out.status.success() && out.stderr.is_empty() && out.stdout.is_empty(),
        "{out:?}"
    );
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(
        records(&host.maillog()),
        ["warning: -starts with a dash %s %n"]
    );
    let plain = Host::new("");
    if !Path::new("/dev/log").exists() {
        let (out, _) = postlog(&plain.etc, "lost");
        assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    }
}
