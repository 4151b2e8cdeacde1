//! Bad input: every error exits 2 with one clear `postrelay: error: ` message on stderr
//! naming the file (and the line where there is one), prints nothing on stdout, never
//! shows a password, and writes nothing at all in the config directory (same bytes,
//! inodes, mtimes, modes and owners; no temporary file left behind).

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;

use crate::harness::{self, CANARY, CANARY2, Cmd, DEBIAN_MAIN_CF, Host, Run};
use crate::require_postfix;

/// The relayhost table most rows start with (2 lines).
const RH: &str = "[relayhost]\nrelay = \"[smtp.example.net]:587\"\n";

/// A valid desired state, for the cases where the problem lies elsewhere.
fn valid_desired() -> String {
    format!(
        "[relayhost]\n\
         relay = \"[smtp.example.net]:587\"\n\
         username = \"postmaster@example.net\"\n\
         password = \"{CANARY}\"\n\
         \n\
         [[sender]]\n\
         domain = \"example.com\"\n\
         relay = \"[smtp.mailgun.org]:587\"\n\
         username = \"postmaster@example.com\"\n\
         password = \"{CANARY2}\"\n"
    )
}

/// One bad desired-state file.
struct Case {
    name: &'static str,
    /// The file's text (`@TMP@`/`@ETC@` expanded); `None`: the file does not exist.
    toml: Option<String>,
    /// Mode of the desired-state file.
    mode: u32,
    /// Prepares the host before the run (extra files).
    setup: Option<fn(&Host)>,
    /// `Some(n)`: the message is `FILE, line n: ...`; `None`: `FILE: ...`.
    line: Option<usize>,
    /// Substrings of the message (after `@TMP@`/`@ETC@`/`@FILE@` expansion).
    want: Vec<String>,
}

fn case(name: &'static str, toml: String, line: Option<usize>, want: &[&str]) -> Case {
    Case {
        name,
        toml: Some(toml),
        mode: 0o600,
        setup: None,
        line,
        want: want.iter().map(|s| s.to_string()).collect(),
    }
}

/// A `[[sender]]` (line 3, after RH) for `a.example` with this relay on line 5.
fn sender_relay(relay: &str) -> String {
    format!("{RH}[[sender]]\ndomain = \"a.example\"\nrelay = \"{relay}\"\n")
}

/// The relayhost with credentials: username on line 3, password on line 4.
fn rh_creds(username: &str, password_line: &str) -> String {
    format!("{RH}username = \"{username}\"\n{password_line}\n")
}

/// Every desired-state problem of the spec's "Bad input" list (plus a few neighbours).
/// Line numbers are counted by hand in the strings.
fn cases() -> Vec<Case> {
    let pw = format!("password = \"{CANARY}\"");
    let mut v = vec![
        // --- malformed TOML ------------------------------------------------------------
        case(
            "unclosed table header",
            "[relayhost\nrelay = \"x\"\n".into(),
            Some(1),
            &["unclosed table, expected `]`"],
        ),
        case(
            "not TOML at all",
            "\n# postrelay\nthis is not toml\n".into(),
            Some(3),
            &["key with no value, expected `=`"],
        ),
        case(
            "unterminated string on the password line",
            rh_creds("u", &format!("password = \"{CANARY}")),
            Some(4),
            &["invalid basic string"],
        ),
        case(
            "unquoted password",
            rh_creds("u", &format!("password = {CANARY}")),
            Some(4),
            &["string values must be quoted"],
        ),
        case(
            "bad escape inside the password",
            rh_creds("u", &format!("password = \"{CANARY}\\q\"")),
            Some(4),
            &["missing escaped value"],
        ),
        case(
            "trailing garbage after the password",
            rh_creds("u", &format!("password = \"{CANARY}\" x")),
            Some(4),
            &["unexpected key or value"],
        ),
        case(
            "unterminated literal string on the password line",
            rh_creds("u", &format!("password = '{CANARY}")),
            Some(4),
            &["invalid literal string"],
        ),
        case(
            "password given twice",
            format!("{}{pw}\n", rh_creds("u", &pw)),
            Some(5),
            &["duplicate key"],
        ),
        case(
            "[relayhost] given twice",
            format!("{}\n{RH}", rh_creds("u", &pw)),
            Some(6),
            &["duplicate key"],
        ),
        case(
            "password of the wrong type",
            rh_creds("u", "password = 12345"),
            Some(4),
            &["invalid type for password, expected a string"],
        ),
        case(
            "password as an array",
            rh_creds("u", &format!("password = [\"{CANARY}\"]")),
            Some(4),
            &["invalid type for password, expected a string"],
        ),
        // --- unknown keys --------------------------------------------------------------
        case(
            "misspelled password key",
            rh_creds("u", &format!("pasword = \"{CANARY}\"")),
            Some(4),
            &["unknown field `pasword`, expected one of `relay`, `username`, `password`"],
        ),
        case(
            "misspelled key next to a password in a sender",
            format!(
                "{RH}\n[[sender]]\ndomain = \"a.example\"\nrelay = \"r.example\"\n\
                 username = \"u\"\n{pw}\npassword_fiel = \"pw\"\n"
            ),
            Some(9),
            &["unknown field `password_fiel`"],
        ),
        case(
            "unknown table",
            format!("{RH}\n[smtp]\nport = 587\n"),
            Some(4),
            &["unknown field `smtp`, expected one of `postfix`, `relayhost`, `sender`"],
        ),
        case(
            "[[senders]] instead of [[sender]]",
            format!("{RH}\n[[senders]]\ndomain = \"a.example\"\n"),
            Some(4),
            &["unknown field `senders`"],
        ),
        // --- senders -------------------------------------------------------------------
        case(
            "sender with both domain and address",
            format!("{RH}\n[[sender]]\ndomain = \"a.example\"\naddress = \"x@a.example\"\n"),
            Some(4),
            &["sender \"a.example\"/\"x@a.example\": both domain and address given; use one"],
        ),
        case(
            "sender with neither domain nor address",
            format!("{RH}\n[[sender]]\nrelay = \"r.example\"\nusername = \"u\"\n{pw}\n"),
            Some(4),
            &["sender: needs a domain or an address"],
        ),
        case(
            "invalid domain",
            format!("{RH}\n[[sender]]\n# a comment\ndomain = \"exa_mple.com\"\n"),
            Some(6),
            &["sender \"exa_mple.com\": invalid domain: label contains '_'"],
        ),
        case(
            "domain with a leading @",
            format!("{RH}[[sender]]\ndomain = \"@example.com\"\n"),
            Some(4),
            &["sender \"@example.com\": invalid domain: leading '@'; write the domain without it"],
        ),
        case(
            "invalid address",
            format!("{RH}[[sender]]\naddress = \"wes.example.org\"\n"),
            Some(4),
            &["sender \"wes.example.org\": invalid address: no '@'"],
        ),
        case(
            "address with two @",
            format!("{RH}[[sender]]\naddress = \"a@b@example.org\"\n"),
            Some(4),
            &["sender \"a@b@example.org\": invalid address: more than one '@'"],
        ),
        case(
            "duplicate sender domain",
            format!(
                "{RH}\n[[sender]]\ndomain = \"example.com\"\n\n[[sender]]\ndomain = \"example.com\"\n"
            ),
            Some(7),
            &["sender \"example.com\": duplicate of the sender at line 4 (key \"@example.com\")"],
        ),
        case(
            "duplicate sender domain differing in case",
            format!(
                "{RH}\n[[sender]]\ndomain = \"example.com\"\n\n[[sender]]\ndomain = \"EXAMPLE.Com\"\n"
            ),
            Some(7),
            &["sender \"EXAMPLE.Com\": duplicate of the sender at line 4 (key \"@example.com\")"],
        ),
        case(
            "duplicate sender address differing in case",
            format!(
                "{RH}[[sender]]\naddress = \"wes@example.org\"\n[[sender]]\naddress = \"Wes@Example.ORG\"\n"
            ),
            Some(5),
            &["sender \"Wes@Example.ORG\": duplicate of the sender at line 3 (key \"wes@example.org\")"],
        ),
        // --- relays --------------------------------------------------------------------
        case(
            "relay as a URL",
            sender_relay("smtp://smtp.example.com"),
            Some(5),
            &["sender \"a.example\": relay \"smtp://smtp.example.com\": port \"//smtp.example.com\" is not a decimal number"],
        ),
        case(
            "relay with an unclosed bracket",
            sender_relay("[smtp.example.com"),
            Some(5),
            &["sender \"a.example\": relay \"[smtp.example.com\": '[' without ']'"],
        ),
        case(
            "relay with a closing bracket only",
            sender_relay("smtp.example.com]:587"),
            Some(5),
            &["relay \"smtp.example.com]:587\": ']' without '['"],
        ),
        case(
            "relay with a port glued to the bracket",
            sender_relay("[smtp.example.com]587"),
            Some(5),
            &["relay \"[smtp.example.com]587\": unexpected \"587\" after ']'"],
        ),
        case(
            "relay with a service name as port",
            sender_relay("smtp.example.com:submission"),
            Some(5),
            &["relay \"smtp.example.com:submission\": port \"submission\" is not a decimal number"],
        ),
        case(
            "relay with an empty port",
            sender_relay("[smtp.example.com]:"),
            Some(5),
            &["relay \"[smtp.example.com]:\": empty port"],
        ),
        case(
            "relay with a space before the port",
            sender_relay("smtp.example.com 587"),
            Some(5),
            &["relay \"smtp.example.com 587\": contains whitespace"],
        ),
        case(
            "relay with user@",
            sender_relay("user@smtp.example.com"),
            Some(5),
            &["relay \"user@smtp.example.com\": invalid host: label contains '@'"],
        ),
        case(
            "relay with an unbracketed IP address",
            sender_relay("192.0.2.1:25"),
            Some(5),
            &["relay \"192.0.2.1:25\": an IP address must be in brackets: [192.0.2.1]"],
        ),
        case(
            "empty relay",
            sender_relay(""),
            Some(5),
            &["sender \"a.example\": relay \"\": empty relay"],
        ),
        case(
            "port 0",
            "[relayhost]\n\nrelay = \"smtp.example.com:0\"\n".into(),
            Some(3),
            &["relayhost: relay \"smtp.example.com:0\": port outside 1-65535"],
        ),
        case(
            "port 70000",
            sender_relay("[smtp.example.com]:70000"),
            Some(5),
            &["sender \"a.example\": relay \"[smtp.example.com]:70000\": port outside 1-65535"],
        ),
        // --- credentials ---------------------------------------------------------------
        case(
            "username containing ':'",
            rh_creds("user:name", &pw),
            Some(3),
            &["relayhost: username \"user:name\": contains ':'"],
        ),
        case(
            "username containing whitespace",
            format!(
                "{RH}[[sender]]\naddress = \"wes@example.org\"\nrelay = \"r.example\"\n\
                 username = \"wes example\"\n{pw}\n"
            ),
            Some(6),
            &["sender \"wes@example.org\": username \"wes example\": contains whitespace"],
        ),
        case(
            "empty password",
            rh_creds("u", "password = \"\""),
            Some(4),
            &["relayhost: empty password"],
        ),
        case(
            "password with a newline escape",
            rh_creds("u", &format!("password = \"{CANARY}\\nb\"")),
            Some(4),
            &["relayhost: password contains a line break"],
        ),
        case(
            "password spanning lines (multi-line string)",
            format!(
                "{RH}[[sender]]\ndomain = \"a.example\"\nusername = \"u\"\n\
                 password = \"\"\"{CANARY}\nsecond\"\"\"\n"
            ),
            Some(6),
            &["sender \"a.example\": password contains a line break"],
        ),
        case(
            "password with leading whitespace",
            rh_creds("u", &format!("password = \" {CANARY}\"")),
            Some(4),
            &["relayhost: password has leading or trailing whitespace (postfix would strip it)"],
        ),
        case(
            "password with trailing whitespace",
            rh_creds("u", &format!("password = \"{CANARY}\\t\"")),
            Some(4),
            &["relayhost: password has leading or trailing whitespace (postfix would strip it)"],
        ),
        case(
            "password without username",
            format!("{RH}{pw}\n"),
            Some(3),
            &["relayhost: password without username"],
        ),
        case(
            "password_file missing (absolute)",
            rh_creds("u", "password_file = \"@TMP@/no-such-secret\""),
            Some(4),
            &["relayhost: password_file \"@TMP@/no-such-secret\": cannot open: No such file or directory"],
        ),
        case(
            "password_file missing (relative to the desired-state file)",
            format!(
                "{RH}\n[[sender]]\ndomain = \"a.example\"\nusername = \"u\"\n\
                 password_file = \"secrets/a.example\"\n"
            ),
            Some(7),
            &["sender \"a.example\": password_file \"@TMP@/secrets/a.example\": cannot open: No such file or directory"],
        ),
        Case {
            setup: Some(|h: &Host| {
                fs::create_dir(h.tmp.path().join("secret-dir")).unwrap();
            }),
            ..case(
                "password_file is a directory",
                rh_creds("u", "password_file = \"secret-dir\""),
                Some(4),
                &["relayhost: password_file \"@TMP@/secret-dir\": not a regular file but a directory"],
            )
        },
        Case {
            setup: Some(|h: &Host| {
                h.secret_file("bad-secret", &format!("{CANARY} \n"));
            }),
            ..case(
                "password_file whose password has trailing whitespace",
                rh_creds("u", "password_file = \"bad-secret\""),
                Some(4),
                &["relayhost: password_file \"@TMP@/bad-secret\": password has leading or trailing whitespace"],
            )
        },
        // --- tls -----------------------------------------------------------------------
        case(
            "conflicting tls for one relay",
            "[relayhost]\nrelay = \"[smtp.example.net]:587\"\ntls = \"may\"\n\n\
             [[sender]]\ndomain = \"a.example\"\nrelay = \"[SMTP.example.net]:587\"\ntls = \"encrypt\"\n"
                .into(),
            Some(8),
            &["relay \"[smtp.example.net]:587\": tls \"encrypt\" conflicts with tls \"may\" at line 3"],
        ),
        case(
            "tls on a sender without a relay of its own",
            format!("{RH}\n[[sender]]\ndomain = \"a.example\"\ntls = \"none\"\n"),
            Some(6),
            &["sender \"a.example\": tls belongs to a relay; this sender goes through the relayhost"],
        ),
        case(
            "unknown tls value",
            format!("{RH}tls = \"verify\"\n"),
            Some(3),
            &["relayhost: tls \"verify\": expected \"encrypt\", \"may\" or \"none\""],
        ),
        // --- nothing to relay through --------------------------------------------------
        case(
            "sender with no relay and no [relayhost]",
            format!("[[sender]]\ndomain = \"a.example\"\nusername = \"u\"\n{pw}\n"),
            Some(1),
            &["sender \"a.example\": no relay, and no [relayhost] to fall back to"],
        ),
        case(
            "[relayhost] without relay",
            "# catch-all\n[relayhost]\ntls = \"encrypt\"\n".into(),
            Some(2),
            &["relayhost: missing relay"],
        ),
        case(
            "empty file",
            String::new(),
            None,
            &["nothing to configure: no [relayhost] and no [[sender]]"],
        ),
        case(
            "only a [postfix] table",
            "# nothing here yet\n[postfix]\nmap_type = \"hash\"\n".into(),
            None,
            &["nothing to configure: no [relayhost] and no [[sender]]"],
        ),
        case(
            "unknown map_type",
            format!("{RH}[postfix]\nmap_type = \"dbm\"\n"),
            Some(4),
            &["map_type \"dbm\": expected one of hash, btree, lmdb, cdb, texthash"],
        ),
        case(
            "relative config_dir",
            format!("[postfix]\nconfig_dir = \"etc/postfix\"\n{RH}"),
            Some(2),
            &["config_dir \"etc/postfix\": not an absolute path"],
        ),
        // --- the desired-state file itself ---------------------------------------------
        Case {
            mode: 0o644,
            ..case(
                "inline password in a file others can read",
                rh_creds("u", &pw),
                Some(4),
                &["inline password in a file readable by group or others (mode 0644); run: chmod 600 @FILE@"],
            )
        },
        Case {
            mode: 0o640,
            ..case(
                "inline password in a file the group can read",
                format!("{RH}[[sender]]\ndomain = \"a.example\"\nusername = \"u\"\n{pw}\n"),
                Some(6),
                &["(mode 0640); run: chmod 600 @FILE@"],
            )
        },
        Case {
            toml: None,
            ..case(
                "desired-state file missing",
                String::new(),
                None,
                &["cannot open: No such file or directory"],
            )
        },
        Case {
            setup: Some(|h: &Host| fs::create_dir(&h.config).unwrap()),
            toml: None,
            ..case(
                "desired-state file is a directory",
                String::new(),
                None,
                &["not a regular file but a directory"],
            )
        },
    ];
    // An unreadable password_file only fails for a non-root user: root reads any file,
    // so this row is skipped when the suite runs as root.
    if !harness::is_root() {
        v.push(Case {
            setup: Some(|h: &Host| {
                let p = h.secret_file("locked-secret", &format!("{CANARY}\n"));
                fs::set_permissions(&p, fs::Permissions::from_mode(0o000)).unwrap();
            }),
            ..case(
                "password_file unreadable",
                rh_creds("u", "password_file = \"locked-secret\""),
                Some(4),
                &["relayhost: password_file \"@TMP@/locked-secret\": cannot open: Permission denied"],
            )
        });
    }
    v
}

/// Sets up a fresh host for one case: main.cf, extra files, the desired-state file.
fn host_for(c: &Case) -> Host {
    let host = Host::new(DEBIAN_MAIN_CF);
    if let Some(setup) = c.setup {
        setup(&host);
    }
    if let Some(toml) = &c.toml {
        host.desired(toml);
        fs::set_permissions(&host.config, fs::Permissions::from_mode(c.mode)).unwrap();
    }
    host
}

fn expand(host: &Host, s: &str) -> String {
    host.expand(s)
        .replace("@FILE@", &host.config.display().to_string())
}

/// Asserts a failed run: exit 2, empty stdout, exactly one stderr line that is
/// `postrelay: error: FILE[, line N]: ...` and holds every wanted substring.
fn assert_desired_error(host: &Host, c: &Case, what: &str, run: &Run) {
    let ctx = format!("case {:?}, {what}", c.name);
    assert_eq!(
        run.code, 2,
        "{ctx}: exit code\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    assert_eq!(run.stdout, "", "{ctx}: stdout must be empty");
    assert_eq!(
        run.stderr.lines().count(),
        1,
        "{ctx}: expected one message:\n{}",
        run.stderr
    );
    let file = host.config.display();
    let prefix = match c.line {
        Some(n) => format!("postrelay: error: {file}, line {n}: "),
        None => format!("postrelay: error: {file}: "),
    };
    assert!(
        run.stderr.starts_with(&prefix),
        "{ctx}: expected prefix {prefix:?} in:\n{}",
        run.stderr
    );
    for w in &c.want {
        let w = expand(host, w);
        assert!(
            run.stderr.contains(&w),
            "{ctx}: expected {w:?} in:\n{}",
            run.stderr
        );
    }
}

/// Every row, for `validate` (no Postfix needed).
#[test]
fn desired_state_errors_validate() {
    for c in cases() {
        let host = host_for(&c);
        let before = host.files();
        let run = Cmd::new(&["validate", "--config", &host.config.display().to_string()]).run();
        assert_desired_error(&host, &c, "validate", &run);
        assert_eq!(
            host.files(),
            before,
            "case {:?}: validate wrote something",
            c.name
        );
    }
}

/// Every row, for `plan` and `apply`: nothing is written, not even main.cf.
#[test]
fn desired_state_errors_plan_and_apply() {
    require_postfix!();
    for c in cases() {
        let host = host_for(&c);
        let before = host.files();
        let config_before = fs::read(&host.config).ok();
        for sub in ["plan", "apply"] {
            let run = host.cmd(sub).run();
            assert_desired_error(&host, &c, sub, &run);
            assert_eq!(
                host.files(),
                before,
                "case {:?}: {sub} wrote something",
                c.name
            );
            assert_eq!(
                fs::read(&host.config).ok(),
                config_before,
                "case {:?}: {sub} touched the desired state",
                c.name
            );
        }
    }
}

/// Runs plan and apply, expecting exit 2, empty stdout, a `postrelay: error: ` message
/// holding `want`, and no change in the config directory. Returns the apply run.
fn plan_and_apply_fail(host: &Host, args: &[&str], want: &[&str]) -> Run {
    let before = host.files();
    let mut last = None;
    for sub in ["plan", "apply"] {
        let mut cmd = Cmd::new(&[sub]);
        cmd.args(args);
        let run = cmd.run();
        run.code(2);
        assert_eq!(run.stdout, "", "{sub}: stdout must be empty");
        assert!(
            run.stderr.starts_with("postrelay: error: "),
            "{sub}: {}",
            run.stderr
        );
        for w in want {
            assert!(
                run.stderr.contains(w),
                "{sub}: expected {w:?} in:\n{}",
                run.stderr
            );
        }
        assert_eq!(host.files(), before, "{sub} changed the config dir");
        last = Some(run);
    }
    last.unwrap()
}

fn target_args(host: &Host) -> Vec<String> {
    vec![
        "--config".into(),
        host.config.display().to_string(),
        "--postfix-dir".into(),
        host.etc.display().to_string(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn main_cf_missing() {
    require_postfix!();
    let host = Host::new(DEBIAN_MAIN_CF);
    host.desired(&valid_desired());
    fs::remove_file(host.main_cf()).unwrap();
    let main_cf = host.main_cf().display().to_string();
    let run = plan_and_apply_fail(
        &host,
        &strs(&target_args(&host)),
        &[&main_cf, "No such file or directory"],
    );
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        host.files().is_empty(),
        "apply created files: {:?}",
        host.files().keys()
    );
}

#[test]
fn config_dir_missing() {
    require_postfix!();
    let host = Host::new(DEBIAN_MAIN_CF);
    host.desired(&valid_desired());
    let nope = host.tmp.path().join("no-such-postfix");
    let nope_s = nope.display().to_string();
    let config = host.config.display().to_string();
    // Given on the command line.
    let run = plan_and_apply_fail(
        &host,
        &["--config", &config, "--postfix-dir", &nope_s],
        &[
            &format!("postrelay: error: {nope_s}: "),
            "No such file or directory",
        ],
    );
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(!nope.exists(), "the missing config dir was created");
    // Given as [postfix] config_dir in the desired state.
    host.desired(&format!(
        "[postfix]\nconfig_dir = \"{nope_s}\"\n\n{}",
        valid_desired()
    ));
    let run = plan_and_apply_fail(
        &host,
        &["--config", &config],
        &[
            &format!("postrelay: error: {nope_s}: "),
            "No such file or directory",
        ],
    );
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(!nope.exists(), "the missing config dir was created");
    // A file where the directory should be.
    let file = host.tmp.path().join("not-a-dir");
    fs::write(&file, "").unwrap();
    let file_s = file.display().to_string();
    plan_and_apply_fail(
        &host,
        &["--config", &config, "--postfix-dir", &file_s],
        &[&format!("postrelay: error: {file_s}: not a directory")],
    );
}

#[test]
fn main_cf_line_postfix_rejects() {
    require_postfix!();
    // Host::new adds 2 plumbing lines before the given main.cf.
    let host = Host::new("myhostname = mail.example.org\n\n# a comment\njustaword\nrelayhost =\n");
    host.desired(&valid_desired());
    let main_cf = host.main_cf().display().to_string();
    let run = plan_and_apply_fail(
        &host,
        &strs(&target_args(&host)),
        &[&format!(
            "postrelay: error: {main_cf}, line 6: missing '=' after attribute name"
        )],
    );
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);

    // At the end of a full Debian main.cf: 2 plumbing lines + 48 + 1.
    assert_eq!(DEBIAN_MAIN_CF.lines().count(), 48);
    let host = Host::new(&format!("{DEBIAN_MAIN_CF}justaword\n"));
    host.desired(&valid_desired());
    let main_cf = host.main_cf().display().to_string();
    plan_and_apply_fail(
        &host,
        &strs(&target_args(&host)),
        &[&format!(
            "postrelay: error: {main_cf}, line 51: missing '=' after attribute name"
        )],
    );

    // A parameter line without '=' joined to nothing: "missing attribute name".
    let host = Host::new("myhostname = mail.example.org\n= value\n");
    host.desired(&valid_desired());
    let main_cf = host.main_cf().display().to_string();
    plan_and_apply_fail(
        &host,
        &strs(&target_args(&host)),
        &[&format!(
            "postrelay: error: {main_cf}, line 4: missing attribute name"
        )],
    );
}

/// Lists dot files (temporaries) in the config dir.
fn temp_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

/// A map type this Postfix lacks is refused by plan and apply, before anything is written.
#[test]
fn unavailable_map_type_is_refused_before_any_change() {
    require_postfix!();
    // lmdb is a plugin package (postfix-lmdb) that Debian's postfix lacks.
    let lmdb = format!("[postfix]\nmap_type = \"lmdb\"\n\n{}", valid_desired());
    let host = Host::new(DEBIAN_MAIN_CF);
    host.desired(&lmdb);
    let before = host.files();
    for sub in ["plan", "apply"] {
        let run = host.cmd(sub).run();
        run.code(2)
            .stderr_has("map type \"lmdb\" is not available in this Postfix")
            .stderr_has("install the postfix-lmdb package");
        assert_eq!(run.stdout, "", "{sub}");
        assert_eq!(host.files(), before, "{sub} changed files");
    }
}

/// postmap failing: apply exits 2 quoting postmap's stderr and changes nothing, neither
/// on a fresh host nor on one already configured (with hash maps).
#[test]
fn postmap_failure_changes_nothing() {
    require_postfix!();
    // Fault injection: a stub postmap first on PATH fails every build and passes dumps
    // (`postmap -c DIR -s MAP`, used by plan) to the real postmap.
    let real = postrelay::postfix::tool("postmap").unwrap();
    let fresh = Host::new(DEBIAN_MAIN_CF);
    let configured = Host::new(DEBIAN_MAIN_CF);
    configured.desired(&valid_desired());
    configured.apply().success();
    for (label, host) in [("fresh", &fresh), ("configured", &configured)] {
        let path = host.stub(
            "postmap",
            &format!(
                "[ \"$3\" = -s ] && exec {} \"$@\"\necho 'postmap: fatal: injected build failure' >&2\nexit 1",
                real.display()
            ),
        );
        // Something to do on both hosts: a new sender.
        host.desired(&format!(
            "{}\n[[sender]]\ndomain = \"new.example\"\nusername = \"n\"\npassword = \"{CANARY}\"\n",
            valid_desired()
        ));
        let before = host.files();
        let run = host.cmd("apply").env("PATH", &path).run();
        run.code(2)
            .stderr_has("postrelay: error: ")
            .stderr_has("postmap: fatal: injected build failure");
        assert_eq!(run.stdout, "", "{label}: stdout must be empty");
        assert_eq!(host.files(), before, "{label}: apply changed files");
        assert_eq!(
            temp_files(&host.etc),
            Vec::<String>::new(),
            "{label}: temporary files left"
        );
    }
    // The configured host still uses its hash maps.
    assert!(
        configured
            .postconf("smtp_sasl_password_maps")
            .starts_with("hash:")
    );
}

// --- not root ----------------------------------------------------------------------

const NOBODY: u32 = 65534;

/// Whether every directory above `path` is searchable by others and `path` itself has
/// the other-bits `want`.
fn reachable_by_others(path: &Path, want: u32) -> bool {
    let ok = |p: &Path, bits: u32| fs::metadata(p).is_ok_and(|m| m.mode() & bits == bits);
    path.ancestors()
        .skip(1)
        .all(|a| a.as_os_str().is_empty() || ok(a, 0o001))
        && ok(path, want)
}

/// Runs the postrelay binary as nobody. Returns None (after printing why) when nobody
/// cannot reach the binary.
fn run_as_nobody(args: &[OsString]) -> Option<Run> {
    let bin = assert_cmd::cargo::cargo_bin("postrelay");
    if !reachable_by_others(&bin, 0o005) {
        eprintln!("SKIPPED: {} is not reachable by user nobody", bin.display());
        return None;
    }
    let out = std::process::Command::new(&bin)
        .args(args)
        .env_remove("RUST_LOG")
        .current_dir("/")
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    Some(Run::from_output(out))
}

/// Makes the host's temp dir usable by nobody; false (after printing why) when a
/// directory above it is not searchable by others.
fn open_host_to_others(host: &Host) -> bool {
    fs::set_permissions(host.tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&host.etc, fs::Permissions::from_mode(0o755)).unwrap();
    if !reachable_by_others(&host.etc, 0o005) {
        eprintln!(
            "SKIPPED: {} is not reachable by user nobody",
            host.etc.display()
        );
        return false;
    }
    true
}

const SUDO_HINT: &str = "run postrelay as root, e.g. with sudo";

/// As nobody, against a root-owned config dir whose sasl_passwd is 0600: plan and apply
/// exit 2 telling to use sudo, and change nothing. The desired-state file is nobody's
/// own (mode 0600), so the only obstacle is the root-only config dir.
#[test]
fn not_root_on_root_owned_config_dir() {
    require_postfix!();
    if !harness::is_root() {
        eprintln!("SKIPPED: needs root to set up a root-owned config dir and switch to nobody");
        return;
    }
    let host = Host::new(DEBIAN_MAIN_CF);
    host.desired(&valid_desired());
    host.apply().success();
    let meta = fs::metadata(host.path("sasl_passwd")).unwrap();
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid()),
        (0o600, 0),
        "setup: sasl_passwd"
    );
    if !open_host_to_others(&host) {
        return;
    }
    std::os::unix::fs::chown(&host.config, Some(NOBODY), Some(NOBODY)).unwrap();
    let before = host.files();
    for sub in ["plan", "apply"] {
        let mut args: Vec<OsString> = vec![sub.into()];
        args.extend(target_args(&host).into_iter().map(OsString::from));
        let Some(run) = run_as_nobody(&args) else {
            return;
        };
        run.code(2);
        assert_eq!(run.stdout, "", "{sub}: stdout must be empty");
        assert!(
            run.stderr.starts_with("postrelay: error: "),
            "{sub}: {}",
            run.stderr
        );
        assert!(
            run.stderr.contains(SUDO_HINT),
            "{sub}: no sudo hint:\n{}",
            run.stderr
        );
        assert_eq!(run.stderr.lines().count(), 1, "{sub}: {}", run.stderr);
        assert_eq!(host.files(), before, "{sub} as nobody changed files");
        assert_eq!(
            temp_files(&host.etc),
            Vec::<String>::new(),
            "{sub}: temporary files left"
        );
    }
}

/// As nobody, with a root-only (0600) desired-state file, as /etc/postrelay/postrelay.toml
/// is when it holds inline passwords: the error must name the file and tell to use sudo.
#[test]
fn not_root_on_root_only_desired_state_file() {
    require_postfix!();
    if !harness::is_root() {
        eprintln!("SKIPPED: needs root to set up a root-only file and switch to nobody");
        return;
    }
    let host = Host::new(DEBIAN_MAIN_CF);
    host.desired(&valid_desired());
    if !open_host_to_others(&host) {
        return;
    }
    let before = host.files();
    let file = host.config.display().to_string();
    for sub in ["validate", "plan", "apply"] {
        let mut args: Vec<OsString> = vec![sub.into()];
        if sub == "validate" {
            args.extend(["--config".into(), file.clone().into()]);
        } else {
            args.extend(target_args(&host).into_iter().map(OsString::from));
        }
        let Some(run) = run_as_nobody(&args) else {
            return;
        };
        run.code(2);
        assert_eq!(run.stdout, "", "{sub}: stdout must be empty");
        assert!(
            run.stderr.starts_with(&format!(
                "postrelay: error: {file}: cannot open: Permission denied"
            )),
            "{sub}: {}",
            run.stderr
        );
        assert!(
            run.stderr.contains(SUDO_HINT),
            "{sub}: no sudo hint:\n{}",
            run.stderr
        );
        assert_eq!(host.files(), before, "{sub} as nobody changed files");
    }
}

// --- command line -------------------------------------------------------------------

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["plan", "--bogus"][..],
        &["apply", "--config"][..],
        &["validate", "--postfix-dir", "/etc/postfix"][..],
        &["frobnicate"][..],
        &[][..],
    ] {
        let run = Cmd::new(args).run();
        run.code(2);
        assert_eq!(run.stdout, "", "{args:?}: stdout must be empty");
        assert!(!run.stderr.is_empty(), "{args:?}: no message");
    }
    let run = Cmd::new(&["plan", "--bogus"]).run();
    run.stderr_has("unexpected argument '--bogus'");
}

#[test]
fn help_exits_0_and_documents_exit_codes() {
    let run = Cmd::new(&["--help"]).run();
    run.success();
    run.stdout_has("Exit status:")
        .stdout_has("plan      0 in sync, 1 changes pending, 2 error")
        .stdout_has("apply     0 success (changed or not), 2 error")
        .stdout_has("validate  0 valid, 2 invalid");
    assert_eq!(run.stderr, "");
    for sub in ["plan", "apply", "validate"] {
        let run = Cmd::new(&[sub, "--help"]).run();
        run.success();
        assert!(
            run.stdout.contains("Exit 0"),
            "{sub} --help:\n{}",
            run.stdout
        );
    }
}
