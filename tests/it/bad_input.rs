//! Bad input: every error exits 2 with a `postrelay: error: ` message on stderr naming
//! the file (and the line where there is one), prints nothing on stdout, never shows a
//! password, and writes nothing at all in the config directory (same bytes, inodes,
//! mtimes, modes and owners; no temporary file left behind).
//!
//! Bad desired-state files are fixtures: `fixtures/desired/bad/NAME.toml`, and in
//! `NAME.stderr` the exact stderr that `validate`, `plan` and `apply` print for it.
//! Placeholders: `@FILE@` is the desired-state file as given on the command line,
//! `@TMP@` the host's temp dir (also in the .toml, with `@ETC@`, the config dir). A
//! fixture named `mode-NNNN-…` is written with mode NNNN (octal), others 0600; one
//! that needs files beside it has a row in [`SETUPS`]; paths that are no file at all
//! are the rows of [`NOT_A_FILE`]. After a deliberate change of messages, regenerate
//! the .stderr files with
//! `UPDATE_GOLDEN=1 cargo test --test it bad_input::bad_desired_state` and review
//! every changed file.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::api::TOOL_DIR_VAR;
use crate::harness::{
    CANARY, CANARY2, Cmd, DEBIAN_MAIN_CF, FileState, Host, NOBODY, Need, Run, api, in_parallel,
};
use crate::require;

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

// --- bad desired-state files ---------------------------------------------------------

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/desired/bad")
}

/// Fixtures that need more than their TOML text, prepared after it is written.
struct Setup {
    name: &'static str,
    prepare: fn(&Host),
    /// Run without root's privileges (as nobody when the tests run as root): root
    /// reads any file, so "Permission denied" needs another user.
    unprivileged: bool,
}

const SETUPS: &[Setup] = &[
    Setup {
        name: "password-file-is-a-directory",
        prepare: |h| fs::create_dir(h.tmp.path().join("secret-dir")).unwrap(),
        unprivileged: false,
    },
    Setup {
        name: "password-file-trailing-whitespace",
        prepare: |h| {
            h.secret_file("bad-secret", format!("{CANARY} \n"));
        },
        unprivileged: false,
    },
    Setup {
        name: "password-file-unreadable",
        prepare: |h| {
            let p = h.secret_file("locked-secret", format!("{CANARY}\n"));
            fs::set_permissions(p, fs::Permissions::from_mode(0o000)).unwrap();
        },
        unprivileged: true,
    },
    Setup {
        name: "password-file-problems",
        prepare: |h| {
            let fifo = h.tmp.path().join("fifo");
            nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
            grow(&h.secret_file("big", ""), api::MAX_FILE_SIZE + 1);
        },
        unprivileged: false,
    },
    Setup {
        name: "file-larger-than-64-mib",
        prepare: |h| grow(&h.config, api::MAX_DESIRED_SIZE + 1),
        unprivileged: false,
    },
];

/// A desired-state path that is no TOML file.
struct NotAFile {
    what: &'static str,
    make: fn(&Path),
    /// The exact stderr, placeholders as in the fixtures.
    stderr: &'static str,
}

const NOT_A_FILE: &[NotAFile] = &[
    NotAFile {
        what: "missing",
        make: |_| {},
        stderr: "postrelay: error: @FILE@: cannot open: No such file or directory\n",
    },
    NotAFile {
        what: "a directory",
        make: |p| fs::create_dir(p).unwrap(),
        stderr: "postrelay: error: @FILE@: not a regular file but a directory\n",
    },
    NotAFile {
        what: "a FIFO",
        make: |p| nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap(),
        stderr: "postrelay: error: @FILE@: not a regular file but a FIFO\n",
    },
];

/// Extends a file with zeros (sparse) to `len` bytes.
fn grow(path: &Path, len: u64) {
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(len).unwrap();
}

/// One bad desired state and what every subcommand must print for it.
struct Case {
    name: String,
    /// The desired-state file's bytes, or how to make a path that is no file.
    file: Result<Vec<u8>, fn(&Path)>,
    setup: Option<&'static Setup>,
    /// Where the expected stderr lives (None: a [`NOT_A_FILE`] row).
    stderr_file: Option<PathBuf>,
    expected: String,
}

/// The fixtures and the [`NOT_A_FILE`] rows. Fails on a .toml without its .stderr, a
/// .stderr without its .toml, and a [`SETUPS`] name without a fixture. With `update`, a missing .stderr is no failure (it is about to be written).
fn cases(update: bool) -> Vec<Case> {
    let dir = fixture_dir();
    let mut stems = BTreeSet::new();
    let mut orphans = Vec::new();
    for e in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = e.unwrap().path();
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        match path.extension().and_then(|x| x.to_str()) {
            Some("toml") => {
                if !update && !path.with_extension("stderr").exists() {
                    orphans.push(format!("{stem}.toml has no {stem}.stderr"));
                }
                stems.insert(stem);
            }
            Some("stderr") if !path.with_extension("toml").exists() => {
                orphans.push(format!("{stem}.stderr has no {stem}.toml"));
            }
            Some("stderr") => {}
            _ => orphans.push(format!("{}: neither .toml nor .stderr", path.display())),
        }
    }
    for name in SETUPS.iter().map(|s| s.name) {
        if !stems.contains(name) {
            orphans.push(format!(
                "{name} is listed in bad_input.rs but has no fixture"
            ));
        }
    }
    assert!(
        orphans.is_empty(),
        "in {}:\n{}",
        dir.display(),
        orphans.join("\n")
    );
    assert!(!stems.is_empty(), "no fixtures in {}", dir.display());

    let mut cases: Vec<Case> = stems
        .into_iter()
        .map(|name| {
            let toml = dir.join(format!("{name}.toml"));
            let stderr = toml.with_extension("stderr");
            Case {
                file: Ok(fs::read(&toml).unwrap()),
                setup: SETUPS.iter().find(|s| s.name == name),
                expected: fs::read_to_string(&stderr).unwrap_or_default(),
                stderr_file: Some(stderr),
                name,
            }
        })
        .collect();
    cases.extend(NOT_A_FILE.iter().map(|n| Case {
        name: format!("desired-state file {}", n.what),
        file: Err(n.make),
        setup: None,
        stderr_file: None,
        expected: n.stderr.to_string(),
    }));
    cases
}

/// The mode a fixture's name asks for (`mode-0644-…`), 0600 otherwise.
fn mode_of(name: &str) -> u32 {
    name.strip_prefix("mode-")
        .and_then(|rest| u32::from_str_radix(rest.get(..4)?, 8).ok())
        .unwrap_or(0o600)
}

/// A fresh host with the Debian main.cf and the case's desired-state file; false when
/// the case cannot run here (after [`crate::harness::skip_or_fail`]).
fn prepare(host: &Host, case: &Case) -> bool {
    match &case.file {
        Ok(bytes) => {
            // @TMP@ and @ETC@ inside the TOML (a file that is not UTF-8 has none).
            let text = std::str::from_utf8(bytes).map(|t| host.expand(t));
            host.desired_bytes(text.as_ref().map_or(bytes, |t| t.as_bytes()));
            fs::set_permissions(
                &host.config,
                fs::Permissions::from_mode(mode_of(&case.name)),
            )
            .unwrap();
        }
        Err(make) => make(&host.config),
    }
    let Some(setup) = case.setup else {
        return true;
    };
    (setup.prepare)(host);
    if setup.unprivileged && nix::unistd::Uid::effective().is_root() {
        if !host.open_to_others() {
            return false;
        }
        std::os::unix::fs::chown(&host.config, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    true
}

/// Runs validate, plan and apply on one case: each exits 2, prints nothing on stdout,
/// exactly the expected stderr with every line a `postrelay: error: ` line, and
/// changes no file in the config dir nor the desired-state file. Returns what went
/// wrong; with `update`, first writes validate's stderr as the expected one.
fn check(case: &Case, update: bool) -> Vec<String> {
    let host = Host::new(DEBIAN_MAIN_CF);
    if !prepare(&host, case) {
        return Vec::new();
    }
    let file = host.config.display().to_string();
    let tmp = host.tmp.path().display().to_string();
    let before = host.files();
    let desired_before = FileState::try_of(&host.config);
    let mut expected = case
        .expected
        .replace("@FILE@", &file)
        .replace("@TMP@", &tmp);
    let mut problems = Vec::new();
    for sub in ["validate", "plan", "apply"] {
        let mut cmd = host.cmd(sub);
        if case.setup.is_some_and(|s| s.unprivileged) && !cmd.drop_privileges() {
            return Vec::new();
        }
        // Bounded: reading a FIFO, for one, must not hang.
        let run = cmd.run_within(Duration::from_secs(30));
        if update
            && sub == "validate"
            && let Some(path) = &case.stderr_file
        {
            let text = run.stderr.replace(&file, "@FILE@").replace(&tmp, "@TMP@");
            fs::write(path, text).unwrap();
            expected = run.stderr.clone();
        }
        let ctx = format!("{} ({sub})", case.name);
        if run.code != 2 || !run.stdout.is_empty() || run.stderr != expected {
            problems.push(format!(
                "{ctx}: exit {}, want 2\nstdout (want nothing):\n{}stderr:\n{}want:\n{expected}",
                run.code, run.stdout, run.stderr
            ));
        }
        let prefixed = run
            .stderr
            .lines()
            .all(|l| l.starts_with("postrelay: error: "));
        if !prefixed {
            problems.push(format!(
                "{ctx}: a stderr line is not a `postrelay: error: ` line:\n{}",
                run.stderr
            ));
        }
        if host.files() != before {
            problems.push(format!("{ctx}: changed the config dir"));
        }
        if FileState::try_of(&host.config) != desired_before {
            problems.push(format!("{ctx}: changed the desired-state file"));
        }
    }
    problems
}

/// Every bad desired-state fixture through validate, plan and apply (see the module
/// doc): exit 2, no stdout, exactly the expected stderr, nothing written.
#[test]
fn bad_desired_state_files_fail_validate_plan_and_apply() {
    // As root: the messages are root's (root's trust rule applies to the files).
    require!(Need::Postfix, Need::Root);
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    // Cases are independent hosts: run them two at a time.
    let problems: Vec<String> = in_parallel(&cases(update), 2, |c| check(c, update))
        .into_iter()
        .flatten()
        .collect();
    assert!(
        problems.is_empty(),
        "{} problem(s):\n\n{}",
        problems.len(),
        problems.join("\n\n")
    );
}

// --- the Postfix side ----------------------------------------------------------------

/// Runs `cmd(sub)` for plan and apply, expecting a postrelay error (exit 2, nothing on
/// stdout) holding `want`, and no change in the config directory. Returns the apply run.
fn plan_and_apply_fail(host: &Host, cmd: impl Fn(&str) -> Cmd, want: &[&str]) -> Run {
    let before = host.files();
    let mut last = None;
    for sub in ["plan", "apply"] {
        let run = cmd(sub).run();
        run.error();
        for w in want {
            run.stderr_has(w);
        }
        assert_eq!(host.files(), before, "{sub} changed the config dir");
        last = Some(run);
    }
    last.unwrap()
}

/// A host with the Debian main.cf (`main_cf` appended) and a valid desired state.
fn host_with(main_cf: &str) -> Host {
    let host = Host::new(&format!("{DEBIAN_MAIN_CF}{main_cf}"));
    host.desired(&valid_desired());
    host
}

#[test]
fn main_cf_missing() {
    require!(Need::Postfix);
    let host = host_with("");
    fs::remove_file(host.main_cf()).unwrap();
    let main_cf = host.main_cf().display().to_string();
    let run = plan_and_apply_fail(
        &host,
        |sub| host.cmd(sub),
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
    require!(Need::Postfix);
    let host = host_with("");
    let nope = host.tmp.path().join("no-such-postfix");
    let nope_s = nope.display().to_string();
    let config = host.config.display().to_string();
    let want_missing = [
        &format!("postrelay: error: {nope_s}: ") as &str,
        "No such file or directory",
    ];
    // Given on the command line.
    let run = plan_and_apply_fail(
        &host,
        |sub| {
            let mut c = Cmd::new(&[sub]);
            c.args(&["--config", &config, "--postfix-dir", &nope_s]);
            c
        },
        &want_missing,
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
        |sub| Cmd::new(&[sub, "--config", &config]),
        &want_missing,
    );
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(!nope.exists(), "the missing config dir was created");
    // A file where the directory should be.
    let file = host.tmp.path().join("not-a-dir");
    fs::write(&file, "").unwrap();
    let file_s = file.display().to_string();
    plan_and_apply_fail(
        &host,
        |sub| Cmd::new(&[sub, "--config", &config, "--postfix-dir", &file_s]),
        &[&format!("postrelay: error: {file_s}: not a directory")],
    );
}

#[test]
fn main_cf_line_postfix_rejects() {
    require!(Need::Postfix);
    // (main.cf, the message after `postrelay: error: MAIN_CF, `). Host::new adds 2
    // plumbing lines before the given main.cf.
    let cases = [
        (
            "myhostname = mail.example.org\n\n# a comment\njustaword\nrelayhost =\n".to_string(),
            "line 6: missing '=' after attribute name",
        ),
        // At the end of a full Debian main.cf (48 lines): 2 + 48 + 1.
        (
            format!("{DEBIAN_MAIN_CF}justaword\n"),
            "line 51: missing '=' after attribute name",
        ),
        // A parameter line without '=' joined to nothing: "missing attribute name".
        (
            "myhostname = mail.example.org\n= value\n".to_string(),
            "line 4: missing attribute name",
        ),
    ];
    assert_eq!(DEBIAN_MAIN_CF.lines().count(), 48);
    for (main_cf, message) in cases {
        let host = Host::new(&main_cf);
        host.desired(&valid_desired());
        let want = format!("postrelay: error: {}, {message}", host.main_cf().display());
        let run = plan_and_apply_fail(&host, |sub| host.cmd(sub), &[&want]);
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    }
}

/// A map type this Postfix lacks is refused by plan and apply, before anything is written.
#[test]
fn unavailable_map_type_is_refused_before_any_change() {
    require!(Need::Postfix);
    // lmdb is a plugin package (postfix-lmdb) that Debian's postfix lacks.
    let host = Host::new(DEBIAN_MAIN_CF);
    host.desired(&format!(
        "[postfix]\nmap_type = \"lmdb\"\n\n{}",
        valid_desired()
    ));
    plan_and_apply_fail(
        &host,
        |sub| host.cmd(sub),
        &[
            "map type \"lmdb\" is not available in this Postfix",
            "install the postfix-lmdb package",
        ],
    );
}

/// postmap failing: apply exits 2 quoting postmap's stderr and changes nothing, neither
/// on a fresh host nor on one already configured (with hash maps).
#[test]
fn postmap_failure_changes_nothing() {
    require!(Need::Postfix);
    // Fault injection: a stub postmap first on PATH fails every build and passes dumps
    // (`postmap -c DIR -s MAP`, used by plan) to the real postmap.
    let real = api::tool("postmap").unwrap();
    let fresh = Host::new(DEBIAN_MAIN_CF);
    let configured = host_with("");
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
        let run = host.cmd("apply").env(TOOL_DIR_VAR, &path).run();
        run.error()
            .stderr_has("postmap: fatal: injected build failure");
        assert_eq!(host.files(), before, "{label}: apply changed files");
        assert_eq!(
            host.temporaries(),
            Vec::<String>::new(),
            "{label}: temporary files left"
        );
    }
    // The configured host still uses its hash maps.
    assert!(
        configured
            .postconf()
            .get("smtp_sasl_password_maps")
            .starts_with("hash:")
    );
}

// --- not root ----------------------------------------------------------------------

const SUDO_HINT: &str = "run postrelay as root, e.g. with sudo";

/// `sub` on the host as user nobody: a postrelay error telling to use sudo, and no
/// file changed. None when nobody cannot run the binary here (after `skip_or_fail`).
fn refused_as_nobody(host: &Host, sub: &str) -> Option<Run> {
    let before = host.files();
    let mut cmd = host.cmd(sub);
    if !cmd.drop_privileges() {
        return None;
    }
    let run = cmd.run();
    run.error().stderr_has(SUDO_HINT);
    assert_eq!(host.files(), before, "{sub} as nobody changed files");
    Some(run)
}

/// As nobody, against a root-owned config dir whose sasl_passwd is 0600: plan and apply
/// exit 2 telling to use sudo, and change nothing. The desired-state file is nobody's
/// own (mode 0600), so the only obstacle is the root-only config dir.
#[test]
fn not_root_on_root_owned_config_dir() {
    require!(Need::Postfix, Need::Root);
    let host = host_with("");
    host.apply().success();
    let meta = fs::metadata(host.path("sasl_passwd")).unwrap();
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid()),
        (0o600, 0),
        "setup: sasl_passwd"
    );
    if !host.open_to_others() {
        return;
    }
    std::os::unix::fs::chown(&host.config, Some(NOBODY), Some(NOBODY)).unwrap();
    for sub in ["plan", "apply"] {
        let Some(run) = refused_as_nobody(&host, sub) else {
            return;
        };
        assert_eq!(run.stderr.lines().count(), 1, "{sub}: {}", run.stderr);
        assert_eq!(
            host.temporaries(),
            Vec::<String>::new(),
            "{sub}: temporary files left"
        );
    }
}

/// As nobody, with a root-only (0600) desired-state file, as /etc/postrelay/postrelay.toml
/// is when it holds inline passwords: the error must name the file and tell to use sudo.
#[test]
fn not_root_on_root_only_desired_state_file() {
    require!(Need::Postfix, Need::Root);
    let host = host_with("");
    if !host.open_to_others() {
        return;
    }
    let file = host.config.display().to_string();
    for sub in ["validate", "plan", "apply"] {
        let Some(run) = refused_as_nobody(&host, sub) else {
            return;
        };
        assert!(
            run.stderr.starts_with(&format!(
                "postrelay: error: {file}: cannot open: Permission denied"
            )),
            "{sub}: {}",
            run.stderr
        );
    }
}

// --- command line -------------------------------------------------------------------

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["plan", "--bogus"][..],
        &["apply", "--config"][..],
        &["validate", "--show-secrets"][..],
        // Bounded: a huge value once overflowed an Instant and panicked.
        &["apply", "--lock-timeout", "18446744073709551615"][..],
        &["verify", "--timeout", "0"][..],
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
