//! plan and apply against real postconf/postmap on temporary config directories:
//! the desired values land where Postfix reads them, a second apply changes nothing,
//! every kind of drift is reported by plan (exit 1) and repaired by apply, and no
//! password is ever printed.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

use crate::harness::api::{LOCK, TOOL_DIR_VAR};
use crate::harness::{
    self, CANARY, CANARY_FILE, CANARY2, DEBIAN_MAIN_CF, Host, NOBODY, Need, assert_restored, holds,
    managed_parameters,
};
use crate::require;

/// The guide's multi-relay setup: a catch-all relayhost (password from a file), two
/// domains on two relays, and one address with its own credentials via the relayhost.
fn desired_multi(host: &Host) -> String {
    host.secret_file("relayhost.pw", format!("{CANARY_FILE}\n"));
    format!(
        r#"
[relayhost]
relay = "[smtp.mailgun.org]:587"
username = "postmaster@example.net"
password_file = "@TMP@/relayhost.pw"

[[sender]]
domain = "example.com"
relay = "[smtp.mailgun.org]:587"
username = "postmaster@example.com"
password = "{CANARY}"

[[sender]]
domain = "Example.ORG"
relay = "[email-smtp.eu-west-1.amazonaws.com]:587"
username = "AKIAEXAMPLE"
password = "{CANARY}-org"
tls = "encrypt"

[[sender]]
address = "wes@example.org"
username = "wes@example.org"
password = "{CANARY}-wes"
"#
    )
}

fn multi_host() -> Host {
    let host = Host::new(DEBIAN_MAIN_CF);
    let d = desired_multi(&host);
    host.desired(&d);
    host
}

#[test]
fn apply_configures_postfix_and_second_apply_changes_nothing() {
    // Root: postrelay asks whether Postfix runs only as root.
    require!(Need::Postfix, Need::Root);
    let host = multi_host();
    let etc = host.etc.display().to_string();

    let plan = host.plan();
    plan.code(1)
        .stdout_has("+@example.com postmaster@example.com:********")
        .stdout_has("+[smtp.mailgun.org]:587 postmaster@example.net:********")
        .stdout_has("+relayhost = [smtp.mailgun.org]:587")
        .stdout_has(&format!("postmap -c {etc} hash:{etc}/sasl_passwd"))
        .stdout_has("plan: 4 file(s) to change");

    let first = host.apply_twice();
    first
        .stdout_has(&format!("wrote {etc}/sasl_passwd"))
        .stdout_has(&format!("rebuilt {etc}/sasl_passwd.db"))
        .stdout_has("Postfix is not running");

    // What Postfix itself reads.
    let conf = host.postconf().n();
    for (name, value) in managed_parameters(&host.etc, "[smtp.mailgun.org]:587") {
        assert_eq!(conf.get(name), Some(&value), "{name}");
    }
    // Untouched settings keep their values.
    assert_eq!(conf["myhostname"], "mail.example.org");
    assert_eq!(conf["smtp_tls_security_level"], "may");

    let q = |map: &str, key: &str| host.postmap_q("hash", map, key);
    assert_eq!(
        q("sasl_passwd", "@example.com"),
        Some(format!("postmaster@example.com:{CANARY}"))
    );
    assert_eq!(
        q("sasl_passwd", "@example.org"),
        Some(format!("AKIAEXAMPLE:{CANARY}-org"))
    );
    assert_eq!(
        q("sasl_passwd", "wes@example.org"),
        Some(format!("wes@example.org:{CANARY}-wes"))
    );
    assert_eq!(
        q("sasl_passwd", "[smtp.mailgun.org]:587"),
        Some(format!("postmaster@example.net:{CANARY_FILE}"))
    );
    assert_eq!(
        q("sender_relay", "@example.com"),
        Some("[smtp.mailgun.org]:587".into())
    );
    assert_eq!(
        q("sender_relay", "@example.org"),
        Some("[email-smtp.eu-west-1.amazonaws.com]:587".into())
    );
    // wes@ has no relay of its own: DUNNO stops Postfix from falling back to @example.org's
    // relay, so wes goes through the relayhost.
    assert_eq!(q("sender_relay", "wes@example.org"), Some("DUNNO".into()));
    // A relay named by host name is secure by default; SES's has tls = "encrypt".
    assert_eq!(
        q("tls_policy", "[smtp.mailgun.org]:587"),
        Some("secure".into())
    );
    assert_eq!(
        q("tls_policy", "[email-smtp.eu-west-1.amazonaws.com]:587"),
        Some("encrypt".into())
    );

    // Secrets: the invoking user's (root) and 0600, source and compiled form; the
    // other maps 0644.
    host.assert_map_permissions("after apply");
    // Nothing but the maps, main.cf and the record of the apply: no temporary files
    // left behind.
    let names: Vec<String> = host.files().into_keys().collect();
    assert_eq!(
        names,
        [
            "main.cf",
            "postrelay.state",
            "sasl_passwd",
            "sasl_passwd.db",
            "sender_relay",
            "sender_relay.db",
            "tls_policy",
            "tls_policy.db"
        ]
    );
    // The password appears in no file but sasl_passwd and its compiled map.
    for (name, state) in host.files() {
        assert_eq!(
            holds(&state.bytes, CANARY),
            name.starts_with("sasl_passwd"),
            "{name}"
        );
    }
}

#[test]
fn quiet_apply_prints_nothing_when_in_sync() {
    require!(Need::Postfix);
    let host = multi_host();
    host.apply().success();
    let run = host.cmd("apply").args(&["--quiet"]).run();
    run.success();
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr, "");
}

#[test]
fn main_cf_edits_are_minimal_and_lossless() {
    require!(Need::Postfix);
    // CRLF, tabs, a continued value that already reads right, a duplicate, no final newline.
    let main_cf = "# header\r\nsmtp_sasl_security_options =\r\n\tnoanonymous\r\nsmtp_sasl_auth_enable = no\r\nmyhostname\t=\tcrlf.example\r\nsmtp_sasl_auth_enable = maybe\r\n# last line is a comment";
    let host = Host::new(main_cf);
    let d = desired_multi(&host);
    host.desired(&d);
    host.apply_twice();
    let text = fs::read_to_string(host.main_cf()).unwrap();
    let root = host.tmp.path().display();
    let etc = host.etc.display();
    let want = format!(
        "queue_directory = {root}/queue\ndata_directory = {root}/data\n# header\r\nsmtp_sasl_security_options =\r\n\tnoanonymous\r\n#smtp_sasl_auth_enable = no\r\nmyhostname\t=\tcrlf.example\r\nsmtp_sasl_auth_enable = yes\r\n# last line is a comment\n\
         # Sender-dependent relaying, managed by postrelay:\n\
         smtp_sasl_tls_security_options = noanonymous\n\
         smtp_sender_dependent_authentication = yes\n\
         smtp_sasl_password_maps = hash:{etc}/sasl_passwd\n\
         sender_dependent_relayhost_maps = hash:{etc}/sender_relay\n\
         smtp_tls_policy_maps = hash:{etc}/tls_policy\n\
         relayhost = [smtp.mailgun.org]:587\n\
         smtp_tls_CAfile = /etc/ssl/certs/ca-certificates.crt\n"
    );
    assert_eq!(text, want);
    assert_eq!(
        host.postconf().h(&["smtp_sasl_auth_enable", "myhostname"]),
        ["yes", "crlf.example"]
    );
}

#[test]
fn symlinked_main_cf_stays_a_symlink_with_its_mode_and_owner() {
    require!(Need::Postfix);
    let host = multi_host();
    let real = host.tmp.path().join("real-main.cf");
    fs::rename(host.main_cf(), &real).unwrap();
    symlink(&real, host.main_cf()).unwrap();
    fs::set_permissions(&real, fs::Permissions::from_mode(0o640)).unwrap();
    // Another group shows that the owner is kept (only root may set it).
    if harness::require(&[Need::Root]) {
        nix::unistd::chown(&real, None, Some(nix::unistd::Gid::from_raw(NOBODY))).unwrap();
    }
    let before = fs::metadata(&real).unwrap();
    host.apply_twice();
    assert!(
        fs::symlink_metadata(host.main_cf())
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let after = fs::metadata(&real).unwrap();
    assert_eq!(after.mode() & 0o7777, 0o640);
    assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
    assert!(
        fs::read_to_string(&real)
            .unwrap()
            .contains("smtp_sender_dependent_authentication = yes")
    );
}

#[test]
fn rotation_shows_a_redacted_change_and_takes_effect() {
    require!(Need::Postfix);
    let host = multi_host();
    host.apply().success();
    let rotated = desired_multi(&host).replace(&format!("\"{CANARY}\""), &format!("\"{CANARY2}\""));
    host.desired(&rotated);
    let plan = host.plan();
    plan.code(1)
        .stdout_has("-@example.com postmaster@example.com:********\n+@example.com postmaster@example.com:********\n")
        .stdout_has("sasl_passwd: content differs (4 entries): @example.com password changed\n");
    assert!(
        !plan.stdout.contains("sender_relay:"),
        "only sasl_passwd changes:\n{}",
        plan.stdout
    );
    host.apply_twice();
    assert_eq!(
        host.postmap_q("hash", "sasl_passwd", "@example.com"),
        Some(format!("postmaster@example.com:{CANARY2}"))
    );
}

#[test]
fn show_secrets_reveals_the_password_only_when_asked() {
    require!(Need::Postfix);
    let host = Host::new(DEBIAN_MAIN_CF);
    host.desired(
        "[relayhost]\nrelay = \"[relay.example]:587\"\nusername = \"u\"\npassword = \"visible-pw\"\n",
    );
    let hidden = host.plan();
    hidden.code(1).stdout_has("+[relay.example]:587 u:********");
    assert!(!hidden.stdout.contains("visible-pw"));
    host.cmd("plan")
        .args(&["--show-secrets"])
        .run()
        .code(1)
        .stdout_has("+[relay.example]:587 u:visible-pw");
}

#[test]
fn removed_senders_leave_no_stale_entries() {
    require!(Need::Postfix);
    let host = multi_host();
    host.apply().success();
    // Drop example.com and wes@: only example.org and the relayhost remain.
    host.secret_file("relayhost.pw", format!("{CANARY_FILE}\n"));
    host.desired(&format!(
        "[relayhost]\nrelay = \"[smtp.mailgun.org]:587\"\nusername = \"postmaster@example.net\"\npassword_file = \"@TMP@/relayhost.pw\"\n\n[[sender]]\ndomain = \"example.org\"\nrelay = \"[email-smtp.eu-west-1.amazonaws.com]:587\"\nusername = \"AKIAEXAMPLE\"\npassword = \"{CANARY}-org\"\n"
    ));
    host.plan()
        .code(1)
        .stdout_has("-@example.com postmaster@example.com:********")
        .stdout_has("-wes@example.org wes@example.org:********")
        .stdout_has("-@example.com [smtp.mailgun.org]:587");
    host.apply_twice();
    assert_eq!(host.postmap_q("hash", "sasl_passwd", "@example.com"), None);
    assert_eq!(
        host.postmap_q("hash", "sasl_passwd", "wes@example.org"),
        None
    );
    assert_eq!(host.postmap_q("hash", "sender_relay", "@example.com"), None);
    assert!(
        host.postmap_q("hash", "sasl_passwd", "@example.org")
            .is_some()
    );
}

/// One kind of drift: what to break, and what plan must say about it.
struct Drift {
    name: &'static str,
    breaks: fn(&Host),
    plan_says: &'static [&'static str],
}

/// Appends `text` to a file in the config dir, as a hand edit would.
fn append(host: &Host, name: &str, text: &str) {
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(host.path(name))
        .unwrap();
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
}

const DRIFTS: &[Drift] = &[
    Drift {
        name: "managed parameter deleted",
        breaks: |h| {
            h.edit_main_cf(|t| t.replace("smtp_sender_dependent_authentication = yes\n", ""))
        },
        plan_says: &[
            "smtp_sender_dependent_authentication (added)",
            "+smtp_sender_dependent_authentication = yes",
        ],
    },
    Drift {
        name: "managed parameter changed",
        breaks: |h| {
            h.edit_main_cf(|t| {
                t.replace("smtp_sasl_auth_enable = yes", "smtp_sasl_auth_enable = no")
            })
        },
        plan_says: &[
            "smtp_sasl_auth_enable (was \"no\")",
            "-smtp_sasl_auth_enable = no",
            "+smtp_sasl_auth_enable = yes",
        ],
    },
    Drift {
        name: "managed parameter commented out by hand, relayhost changed",
        breaks: |h| {
            h.edit_main_cf(|t| {
                t.replace("smtp_tls_policy_maps =", "#smtp_tls_policy_maps =")
                    .replace(
                        "relayhost = [smtp.mailgun.org]:587",
                        "relayhost = [other.example]:25",
                    )
            })
        },
        plan_says: &[
            "smtp_tls_policy_maps (added)",
            "relayhost (was \"[other.example]:25\")",
        ],
    },
    Drift {
        name: "map source edited by hand",
        breaks: |h| append(h, "sender_relay", "@stale.example [old.relay]:25\n"),
        plan_says: &[
            "sender_relay: content differs (3 entries): @stale.example removed (not in the desired state)",
            "-@stale.example [old.relay]:25",
        ],
    },
    Drift {
        name: "password map edited by hand",
        breaks: |h| {
            append(
                h,
                "sasl_passwd",
                "@stale.example olduser:CANARY-s3cret-9d1f-stale\n# @x.example u:CANARY-s3cret-9d1f\n\
                 # moved to the new relay in May\n",
            )
        },
        plan_says: &[
            "sasl_passwd: content differs (4 entries): @stale.example removed (not in the desired state)",
            "-@stale.example olduser:********",
            // A commented-out entry is masked like an entry; prose stays prose.
            "-# @x.example u:********",
            "-# moved to the new relay in May",
        ],
    },
    Drift {
        name: "compiled map deleted",
        breaks: |h| fs::remove_file(h.path("sender_relay.db")).unwrap(),
        plan_says: &["sender_relay: sender_relay.db missing"],
    },
    Drift {
        name: "compiled map content differs from its source",
        breaks: |h| {
            // Build the .db from other content, then put the right source back.
            let good = fs::read(h.path("tls_policy")).unwrap();
            fs::write(h.path("tls_policy"), "[smtp.mailgun.org]:587 may\n").unwrap();
            h.postmap_build("tls_policy");
            fs::write(h.path("tls_policy"), good).unwrap();
        },
        plan_says: &["tls_policy: tls_policy.db differs from its source"],
    },
    Drift {
        name: "compiled map corrupt",
        breaks: |h| fs::write(h.path("sasl_passwd.db"), b"not a database").unwrap(),
        plan_says: &["sasl_passwd: sasl_passwd.db unreadable"],
    },
    Drift {
        name: "password map readable by others",
        breaks: |h| {
            fs::set_permissions(h.path("sasl_passwd"), fs::Permissions::from_mode(0o644)).unwrap()
        },
        plan_says: &["sasl_passwd: sasl_passwd has mode 0644, want 0600"],
    },
    Drift {
        name: "compiled password map readable by others",
        breaks: |h| {
            fs::set_permissions(h.path("sasl_passwd.db"), fs::Permissions::from_mode(0o644))
                .unwrap()
        },
        plan_says: &["sasl_passwd: sasl_passwd.db has mode 0644, want 0600"],
    },
    Drift {
        // Anyone could reroute mail or downgrade a relay to tls none and read passwords
        // off the wire.
        name: "routing and TLS policy maps writable by others, one unreadable by Postfix",
        breaks: |h| {
            let mode = |name: &str, mode| {
                fs::set_permissions(h.path(name), fs::Permissions::from_mode(mode)).unwrap()
            };
            mode("sender_relay", 0o666);
            mode("sender_relay.db", 0o600);
            mode("tls_policy", 0o646);
            mode("tls_policy.db", 0o666);
        },
        plan_says: &[
            "sender_relay: sender_relay has mode 0666, want 0644, sender_relay.db has mode 0600, want 0644",
            "tls_policy: tls_policy has mode 0646, want 0644, tls_policy.db has mode 0666, want 0644",
        ],
    },
];

#[test]
fn every_drift_is_reported_by_plan_and_repaired_by_apply() {
    require!(Need::Postfix);
    for drift in DRIFTS {
        let host = multi_host();
        host.apply().success();
        (drift.breaks)(&host);
        let before = host.files();
        let plan = host.plan();
        assert_eq!(
            plan.code, 1,
            "{}: plan did not report drift:\n{}",
            drift.name, plan.stdout
        );
        for s in drift.plan_says {
            assert!(
                plan.stdout.contains(s),
                "{}: plan lacks {s:?}:\n{}",
                drift.name,
                plan.stdout
            );
        }
        assert_eq!(host.files(), before, "{}: plan wrote something", drift.name);
        host.apply_twice();
        assert_eq!(
            host.postconf().get("smtp_sender_dependent_authentication"),
            "yes",
            "{}",
            drift.name
        );
        assert_eq!(
            host.postmap_q("hash", "tls_policy", "[smtp.mailgun.org]:587")
                .as_deref(),
            Some("secure"),
            "{}",
            drift.name
        );
        assert!(
            !fs::read_to_string(host.path("sender_relay"))
                .unwrap()
                .contains("stale"),
            "{}",
            drift.name
        );
        assert_eq!(
            fs::metadata(host.path("sasl_passwd.db")).unwrap().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(host.path("sasl_passwd")).unwrap().mode() & 0o777,
            0o600
        );
        for name in [
            "sender_relay",
            "sender_relay.db",
            "tls_policy",
            "tls_policy.db",
        ] {
            assert_eq!(
                fs::metadata(host.path(name)).unwrap().mode() & 0o777,
                0o644,
                "{}: {name}",
                drift.name
            );
        }
    }
}

#[test]
fn password_map_owned_by_another_user_is_drift() {
    require!(Need::Postfix, Need::Root);
    let host = multi_host();
    host.apply().success();
    let nobody = Some(nix::unistd::Uid::from_raw(NOBODY));
    nix::unistd::chown(&host.path("sasl_passwd"), nobody, None).unwrap();
    nix::unistd::chown(&host.path("sasl_passwd.db"), nobody, None).unwrap();
    host.plan()
        .code(1)
        .stdout_has("sasl_passwd is owned by uid 65534, want 0")
        .stdout_has("sasl_passwd.db is owned by uid 65534, want 0");
    host.apply_twice();
    assert_eq!(fs::metadata(host.path("sasl_passwd")).unwrap().uid(), 0);
    assert_eq!(fs::metadata(host.path("sasl_passwd.db")).unwrap().uid(), 0);
}

#[test]
fn existing_relayhost_without_catch_all_is_left_alone_with_a_warning() {
    require!(Need::Postfix);
    let host = Host::new("relayhost = [legacy.example]:25\n");
    host.desired(&format!(
        "[[sender]]\ndomain = \"example.com\"\nrelay = \"[smtp.mailgun.org]:587\"\nusername = \"u@example.com\"\npassword = \"{CANARY}\"\n"
    ));
    host.plan().code(1).stderr_has(
        "postrelay: warning: no [relayhost] in the desired state: senders not listed, and bounces, will use main.cf's relayhost \"[legacy.example]:25\" without credentials\n",
    );
    host.apply_twice();
    assert_eq!(host.postconf().get("relayhost"), "[legacy.example]:25");
}

/// After apply: the password map parameter names `map_type:ETC/sasl_passwd`, and the
/// relayhost's credentials are what postmap finds under `relay` in a map of that type.
fn assert_password_map(host: &Host, map_type: &str, relay: &str) {
    assert_eq!(
        host.postconf().get("smtp_sasl_password_maps"),
        format!("{map_type}:{}/sasl_passwd", host.etc.display())
    );
    assert_eq!(
        host.postmap_q(map_type, "sasl_passwd", relay),
        Some(format!("u:{CANARY}"))
    );
}

/// A desired state with only a relayhost on `relay`, user "u", password [`CANARY`].
fn relayhost_only(prefix: &str, relay: &str) -> String {
    format!("{prefix}[relayhost]\nrelay = \"{relay}\"\nusername = \"u\"\npassword = \"{CANARY}\"\n")
}

#[test]
fn texthash_maps_need_no_postmap() {
    require!(Need::Postfix);
    let host = Host::new("");
    host.desired(&relayhost_only(
        "[postfix]\nmap_type = \"texthash\"\n\n",
        "[relay.example]:587",
    ));
    let plan = host.plan();
    plan.code(1);
    assert!(!plan.stdout.contains("postmap"), "{}", plan.stdout);
    host.apply_twice();
    assert!(!host.path("sasl_passwd.db").exists());
    assert_password_map(&host, "texthash", "[relay.example]:587");
}

#[test]
fn map_type_defaults_to_postfix_default_database_type() {
    require!(Need::Postfix);
    let host = Host::new("default_database_type = btree\n");
    host.desired(&relayhost_only("", "relay.example:2525"));
    host.apply_twice();
    assert_password_map(&host, "btree", "relay.example:2525");
}

#[test]
fn second_apply_waits_for_the_lock_then_gives_up() {
    require!(Need::Postfix);
    let host = multi_host();
    // What a running apply holds: the lock file (root's, 0600: nobody else can open it).
    host.apply().success();
    let lock_file = host.path(LOCK);
    let meta = fs::metadata(&lock_file).unwrap();
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid()),
        (0o600, nix::unistd::geteuid().as_raw())
    );
    let locked = fs::File::open(&lock_file).unwrap();
    let lock =
        nix::fcntl::Flock::lock(locked, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
    host.desired(&desired_multi(&host).replace("example.com", "example.info"));
    let before = host.files();
    let started = std::time::Instant::now();
    host.cmd("apply")
        .args(&["--lock-timeout", "1"])
        .run()
        .code(2)
        .stderr_has("another postrelay apply holds the lock; gave up after 1 s");
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
    assert_eq!(host.files(), before);
    drop(lock);
    host.apply().success();
    // A lock on the directory, which anyone who can read it may take, no longer blocks.
    let dir = fs::File::open(&host.etc).unwrap();
    let _dir_lock =
        nix::fcntl::Flock::lock(dir, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
    host.desired(&desired_multi(&host));
    host.cmd("apply")
        .args(&["--lock-timeout", "1"])
        .run()
        .success();
}

#[test]
fn no_password_in_any_output_at_the_highest_verbosity() {
    require!(Need::Postfix);
    let host = multi_host();
    // Every run goes through Run::assert_no_secret; here at -vvv and RUST_LOG=trace.
    for sub in ["validate", "plan", "apply", "plan", "apply"] {
        let run = host.cmd(sub).loud().run();
        assert!(
            run.code == 0 || (sub == "plan" && run.code == 1),
            "{sub}: {}",
            run.stderr
        );
        assert!(
            !run.stderr.is_empty(),
            "{sub}: expected trace logs on stderr"
        );
    }
}

/// Logs are coloured only for a terminal: at -vvv with stdout and stderr on pipes (as
/// from cron or a script), not one ESC byte; the same plan on a terminal (`script`'s
/// pseudo-terminal) has colour, so the first check is not vacuous.
#[test]
fn logs_carry_no_colour_unless_stderr_is_a_terminal() {
    require!(Need::Postfix);
    let host = multi_host();
    for sub in ["plan", "apply", "plan", "apply"] {
        let run = host.cmd(sub).loud().run();
        assert!(run.stderr.contains("TRACE"), "{sub}: {}", run.stderr);
        for (name, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
            assert!(!text.contains('\x1b'), "{sub}: ESC on {name}:\n{text:?}");
        }
    }
    let Some(script) = which("script") else {
        harness::skip_or_fail("needs script(1) (package bsdutils) for a pseudo-terminal");
        return;
    };
    let bin = assert_cmd::cargo::cargo_bin("postrelay");
    let line = format!(
        "{} plan -vvv --config {} --postfix-dir {}",
        bin.display(),
        host.config.display(),
        host.etc.display()
    );
    let out = std::process::Command::new(script)
        .args(["-qec", &line, "/dev/null"])
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\x1b["), "no colour on a terminal:\n{text}");
}

/// The first `name` in `/usr/bin` or `/bin`.
fn which(name: &str) -> Option<std::path::PathBuf> {
    ["/usr/bin", "/bin"]
        .iter()
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.is_file())
}

#[test]
fn failed_postfix_check_restores_every_file() {
    // Root: postrelay asks whether Postfix runs only as root.
    require!(Need::Postfix, Need::Root);
    // Fault injection: a stub `postfix` first on PATH says the instance runs, then fails
    // `check`. postconf and postmap stay the real ones.
    let host = multi_host();
    let log = host.tmp.path().join("postfix-calls");
    let path = host.stub(
        "postfix",
        &format!(
            "echo \"$@\" >> {}\ncase \"$3\" in status) exit 0;; check) echo 'postfix: fatal: injected check failure' >&2; exit 1;; esac\nexit 0",
            log.display()
        ),
    );

    let before = host.files();
    let run = host.cmd("apply").env(TOOL_DIR_VAR, &path).run();
    run.code(2)
        .stderr_has("injected check failure")
        .stderr_has("restored the previous files");
    // Restored: same bytes, modes and owners; files that did not exist are gone again.
    assert_restored(&before, &host.files());
    let calls = fs::read_to_string(&log).unwrap();
    assert!(
        calls.contains("status") && calls.contains("check") && !calls.contains("reload"),
        "{calls}"
    );

    // With a working Postfix the same apply succeeds and reloads.
    fs::write(&log, "").unwrap();
    host.stub(
        "postfix",
        &format!("echo \"$@\" >> {}\nexit 0", log.display()),
    );
    host.cmd("apply")
        .env(TOOL_DIR_VAR, &path)
        .run()
        .success()
        .stdout_has("ran postfix -c")
        .stdout_has("reload");
    let calls = fs::read_to_string(&log).unwrap();
    assert_eq!(
        calls
            .lines()
            .map(|l| l.rsplit(' ').next().unwrap())
            .collect::<Vec<_>>(),
        ["status", "check", "reload"]
    );
    // In sync now: no postfix command at all.
    fs::write(&log, "").unwrap();
    host.cmd("apply")
        .env(TOOL_DIR_VAR, &path)
        .run()
        .success()
        .stdout_has("postrelay: no changes");
    assert_eq!(fs::read_to_string(&log).unwrap(), "");
}
