//! Secrets: no password reaches any output at the highest verbosity, on any path
//! (success, drift, rotation, verify, every kind of error), nor any file but
//! sasl_passwd and its compiled map; and the password maps are never readable by
//! anyone but root, not even for an instant, whatever the umask.
//!
//! (A non-root run against a root-owned config dir is covered by
//! `bad_input::not_root_on_root_owned_config_dir`.)

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::harness::{
    self, CANARY, CANARY_FILE, CANARY2, Cmd, DEBIAN_MAIN_CF, Host, NOBODY, Need, Run, closed_port,
    holds,
};
use crate::require;

const CANARIES: [&str; 3] = [CANARY, CANARY2, CANARY_FILE];

/// `postrelay -vvv SUB` on the host with RUST_LOG=trace and `extra` arguments, then
/// [`Host::settle`]. Every run checks (through [`Run`]) that no canary is printed.
fn loud(host: &Host, sub: &str, extra: &[&str]) -> Run {
    let run = host.cmd(sub).loud().args(extra).run();
    host.settle();
    run
}

/// Every regular file under `dir`, recursively (symlinks not followed).
fn all_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            all_files(&e.path(), out);
        } else if t.is_file() {
            out.push(e.path());
        }
    }
}

/// Every validate/plan/apply/verify path at -vvv and RUST_LOG=trace: nothing printed
/// holds a password (old, new, inline, from a file, hand-edited), and afterwards no file
/// under the host's temp dir holds one except sasl_passwd, sasl_passwd.db and the
/// desired-state and password files the test wrote: the mail log, which holds apply's
/// audit line for each change and each failure, included.
#[test]
fn no_password_in_any_output_or_stray_file_at_the_highest_verbosity() {
    require!(Need::Postfix);
    let host = Host::with_maillog(DEBIAN_MAIN_CF);
    let port = closed_port();
    let relay = format!("[127.0.0.1]:{port}");
    let pw_file = host.secret_file("relayhost.pw", format!("{CANARY_FILE}\n"));
    let desired = |pw: &str, extra: &str| {
        format!(
            "[relayhost]\nrelay = \"{relay}\"\nusername = \"postmaster@example.net\"\n\
             password_file = \"@TMP@/relayhost.pw\"\n\n\
             [[sender]]\ndomain = \"example.com\"\nrelay = \"{relay}\"\n\
             username = \"postmaster@example.com\"\npassword = \"{pw}\"\n{extra}"
        )
    };
    let with_traces = |what: &str, run: &Run| {
        assert!(
            run.stderr.contains("TRACE"),
            "{what}: expected trace logs on stderr:\n{}",
            run.stderr
        );
    };
    host.desired(&desired(CANARY, ""));

    // The good paths.
    let run = loud(&host, "validate", &[]);
    run.success();
    with_traces("validate", &run);
    let run = loud(&host, "plan", &[]);
    run.code(1)
        .stdout_has("@example.com postmaster@example.com:********");
    with_traces("plan", &run);
    let run = loud(&host, "apply", &[]);
    run.success().stdout_has("postrelay: applied");
    with_traces("apply", &run);
    loud(&host, "apply", &[])
        .success()
        .stdout_has("postrelay: no changes");
    let run = loud(&host, "verify", &[]);
    run.code(1)
        .stdout_has("FAILED  relayhost via")
        .stdout_has("FAILED  @example.com via")
        .stdout_has("verify: 2 checked, 2 failed");
    with_traces("verify", &run);
    loud(&host, "apply", &["--verify"])
        .code(2)
        .stderr_has("credential verification failed; nothing changed");

    // Plan after a change: a new sender with its own password.
    host.desired(&desired(
        CANARY,
        &format!(
            "\n[[sender]]\naddress = \"wes@example.com\"\nusername = \"wes\"\npassword = \"{CANARY2}\"\n"
        ),
    ));
    loud(&host, "plan", &[])
        .code(1)
        .stdout_has("+wes@example.com wes:********");
    host.desired(&desired(CANARY, ""));

    // A hand-edited sasl_passwd (an extra entry and a comment holding passwords) is
    // diffed with both lines masked, then repaired.
    let sasl = host.path("sasl_passwd");
    let mut text = fs::read_to_string(&sasl).unwrap();
    text.push_str(&format!(
        "@hand.example hand:{CANARY2}\n# old: @example.com u:{CANARY2}\n"
    ));
    fs::write(&sasl, text).unwrap();
    loud(&host, "plan", &[])
        .code(1)
        .stdout_has("-@hand.example hand:********")
        .stdout_has("-#********");
    loud(&host, "apply", &[]).success();

    // Rotation: neither the old password (read from disk) nor the new one shows.
    host.desired(&desired(CANARY2, ""));
    loud(&host, "plan", &[]).code(1).stdout_has(
        "-@example.com postmaster@example.com:********\n+@example.com postmaster@example.com:********\n",
    );
    loud(&host, "apply", &[]).success();
    loud(&host, "apply", &[])
        .success()
        .stdout_has("postrelay: no changes");
    assert_eq!(
        host.postmap_q("hash", "sasl_passwd", "@example.com"),
        Some(format!("postmaster@example.com:{CANARY2}"))
    );

    // Error paths, each through every subcommand: exit 2 and not a byte of a password.
    let rh = format!("[relayhost]\nrelay = \"{relay}\"\nusername = \"u\"\n");
    let errors: Vec<(&str, String, u32)> = vec![
        (
            "unterminated password string",
            format!("{rh}password = \"{CANARY}\n"),
            0o600,
        ),
        (
            "unquoted password",
            format!("{rh}password = {CANARY}\n"),
            0o600,
        ),
        (
            "misspelled key beside the password",
            format!("{rh}password = \"{CANARY}\"\npasword = \"{CANARY2}\"\n"),
            0o600,
        ),
        (
            "password with trailing whitespace",
            format!("{rh}password = \"{CANARY} \"\n"),
            0o600,
        ),
        (
            "password with a control character",
            format!("{rh}password = \"{CANARY}\\u0007\"\n"),
            0o600,
        ),
        (
            "password of the wrong type",
            format!("{rh}password = [\"{CANARY}\"]\n"),
            0o600,
        ),
        (
            "inline password in a world-readable file",
            format!("{rh}password = \"{CANARY}\"\n"),
            0o644,
        ),
        (
            "password_file with trailing whitespace",
            format!("{rh}password_file = \"{}\"\n", {
                let p = host.secret_file("bad.pw", format!("{CANARY_FILE} \n"));
                p.display().to_string()
            }),
            0o600,
        ),
    ];
    let good_desired = fs::read(&host.config).unwrap();
    let before = host.files();
    for (name, text, mode) in &errors {
        host.desired(text);
        fs::set_permissions(&host.config, fs::Permissions::from_mode(*mode)).unwrap();
        for sub in ["validate", "plan", "apply", "verify"] {
            let run = loud(&host, sub, &[]);
            assert_eq!(run.code, 2, "{name}, {sub}:\n{}", run.stderr);
            assert!(
                run.stderr.contains("postrelay: error: "),
                "{name}, {sub}:\n{}",
                run.stderr
            );
        }
        assert_eq!(host.files(), before, "{name}: the config dir changed");
    }
    fs::write(&host.config, good_desired).unwrap();
    fs::set_permissions(&host.config, fs::Permissions::from_mode(0o600)).unwrap();

    // No stray copy of a password anywhere in the temp dir.
    let allowed: BTreeSet<PathBuf> = [
        host.path("sasl_passwd"),
        host.path("sasl_passwd.db"),
        host.config.clone(),
        pw_file,
        host.tmp.path().join("bad.pw"),
    ]
    .into_iter()
    .collect();
    let mut files = Vec::new();
    all_files(host.tmp.path(), &mut files);
    let leaks: Vec<String> = files
        .iter()
        .filter(|p| !allowed.contains(*p))
        .filter_map(|p| {
            let bytes = fs::read(p).unwrap();
            CANARIES
                .iter()
                .find(|c| holds(&bytes, c))
                .map(|c| format!("{} holds {c}", p.display()))
        })
        .collect();
    assert!(
        leaks.is_empty(),
        "passwords in stray files:\n{}",
        leaks.join("\n")
    );
    assert!(
        files.len() > allowed.len(),
        "scanned {} files only",
        files.len()
    );
    // As root, postlog writes the mail log itself (Postfix does not run): the scan
    // covered apply's audit lines, the failures' included.
    if nix::unistd::Uid::effective().is_root() {
        let log = host.maillog();
        // Three changes, and apply --verify and each bad file failing.
        assert_eq!(
            (
                log.matches(" postrelay[").count(),
                log.matches("]: warning: apply of ").count()
            ),
            (3 + 1 + errors.len(), 1 + errors.len()),
            "apply's audit lines in the mail log:\n{log}"
        );
    }
}

// --- umask -------------------------------------------------------------------------------

/// What the watcher saw.
#[derive(Default)]
struct Seen {
    /// Names of password-map files (temporaries included) ever observed.
    names: BTreeSet<String>,
    /// Observations of one with group/other permission bits or a foreign owner.
    bad: Vec<String>,
    /// Directory scans completed.
    scans: u64,
}

/// Polls `dir` as fast as it can until `stop`: every entry whose name starts with
/// `sasl_passwd` or `.sasl_passwd` must be mode 0600 or narrower and owned by `uid`.
fn watch(dir: &Path, uid: u32, stop: &AtomicBool, seen: &Mutex<Seen>) {
    let mut local = Seen::default();
    while !stop.load(Ordering::Relaxed) {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !(name.starts_with("sasl_passwd") || name.starts_with(".sasl_passwd")) {
                continue;
            }
            // Gone already (renamed or removed): nothing to see.
            let Ok(meta) = fs::symlink_metadata(e.path()) else {
                continue;
            };
            let mode = meta.mode() & 0o7777;
            if mode & 0o077 != 0 || meta.uid() != uid {
                local
                    .bad
                    .push(format!("{name}: mode {mode:04o}, uid {}", meta.uid()));
            }
            local.names.insert(name);
        }
        local.scans += 1;
        std::thread::yield_now();
    }
    *seen.lock().unwrap() = local;
}

/// `postrelay apply` with the given umask, through `sh -c 'umask U; exec BIN ARGS'`.
fn apply_with_umask(host: &Host, umask: &str) -> Run {
    let bin = assert_cmd::cargo::cargo_bin("postrelay");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
        .arg(bin)
        .args(["apply", "--no-syslog", "--config"])
        .arg(&host.config)
        .arg("--postfix-dir")
        .arg(&host.etc)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let run = Run::from_output(out);
    host.settle();
    run
}

const APPLIES_PER_HOST: usize = 10;

/// Under umask 000 and 077, 20 applies each (10 on a host with a plain main.cf, 10 on
/// one whose main.cf is a symlink), alternating two desired states so that every apply
/// rewrites sasl_passwd, its compiled map, tls_policy and main.cf. A watcher thread
/// polls the config dir throughout: no sasl_passwd file, temporaries included, is ever
/// group/other-accessible or owned by anyone but the invoking user (root). Afterwards
/// sasl_passwd and sasl_passwd.db are root:root 0600, the other maps 0644, and main.cf
/// (or its symlink target) keeps its mode 0640 and owner, and stays a symlink.
#[test]
fn password_maps_are_never_readable_by_others_under_any_umask() {
    require!(Need::Postfix);
    // The wrapper really sets the umask.
    let out = Command::new("sh")
        .args(["-c", "umask 000; exec \"$0\" \"$@\"", "sh", "-c", "umask"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0000");

    let (uid, gid) = (
        nix::unistd::Uid::effective().as_raw(),
        nix::unistd::Gid::effective().as_raw(),
    );
    // The watcher catches a short-lived world-readable temporary.
    let probe_dir = tempfile::tempdir().unwrap();
    let stop = AtomicBool::new(false);
    let seen = Mutex::new(Seen::default());
    std::thread::scope(|scope| {
        scope.spawn(|| watch(probe_dir.path(), uid, &stop, &seen));
        let probe = probe_dir.path().join(".sasl_passwd.probe");
        fs::write(&probe, b"x").unwrap();
        fs::set_permissions(&probe, fs::Permissions::from_mode(0o644)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::remove_file(&probe).unwrap();
        stop.store(true, Ordering::Relaxed);
    });
    assert!(
        !seen.into_inner().unwrap().bad.is_empty(),
        "the watcher missed a 0644 .sasl_passwd temporary"
    );

    // Another group on main.cf shows that the owner is kept (only root may set it).
    let main_gid = if harness::require(&[Need::Root]) {
        NOBODY
    } else {
        gid
    };
    let mut report = Vec::new();
    for umask in ["000", "077"] {
        for symlinked in [false, true] {
            let host = Host::new(DEBIAN_MAIN_CF);
            let real = if symlinked {
                let real = host.tmp.path().join("real-main.cf");
                fs::rename(host.main_cf(), &real).unwrap();
                symlink(&real, host.main_cf()).unwrap();
                real
            } else {
                host.main_cf()
            };
            fs::set_permissions(&real, fs::Permissions::from_mode(0o640)).unwrap();
            nix::unistd::chown(&real, None, Some(nix::unistd::Gid::from_raw(main_gid))).unwrap();
            let desired = |n: usize| {
                let (name, pw) = if n.is_multiple_of(2) {
                    ("a", CANARY)
                } else {
                    ("b", CANARY2)
                };
                format!(
                    "[relayhost]\nrelay = \"[{name}.example]:587\"\nusername = \"rh\"\npassword = \"{pw}\"\n\n\
                     [[sender]]\ndomain = \"example.com\"\nrelay = \"[smtp.example.com]:587\"\n\
                     username = \"u\"\npassword = \"{pw}-{name}\"\n"
                )
            };

            let stop = AtomicBool::new(false);
            let seen = Mutex::new(Seen::default());
            std::thread::scope(|scope| {
                scope.spawn(|| watch(&host.etc, uid, &stop, &seen));
                for n in 0..APPLIES_PER_HOST {
                    host.desired(&desired(n));
                    let run = apply_with_umask(&host, umask);
                    run.success();
                    assert!(
                        run.stdout.contains("sasl_passwd.db") && run.stdout.contains("main.cf"),
                        "apply {n} under umask {umask} did not rewrite everything:\n{}",
                        run.stdout
                    );
                }
                stop.store(true, Ordering::Relaxed);
            });
            let seen = seen.into_inner().unwrap();
            let what = format!(
                "umask {umask}, {} main.cf",
                if symlinked { "symlinked" } else { "plain" }
            );
            assert!(
                seen.bad.is_empty(),
                "{what}: password files seen with wider permissions or another owner:\n{}",
                seen.bad.join("\n")
            );
            let temps = seen.names.iter().filter(|n| n.starts_with('.')).count();
            report.push(format!(
                "{what}: {APPLIES_PER_HOST} applies, {} scans, {temps} distinct temporaries seen",
                seen.scans
            ));

            host.assert_map_permissions(&what);
            let link = fs::symlink_metadata(host.main_cf()).unwrap();
            assert_eq!(
                link.file_type().is_symlink(),
                symlinked,
                "{what}: main.cf symlink"
            );
            let m = fs::metadata(&real).unwrap();
            assert_eq!(m.mode() & 0o7777, 0o640, "{what}: main.cf mode");
            assert_eq!((m.uid(), m.gid()), (uid, main_gid), "{what}: main.cf owner");
            assert!(
                fs::read_to_string(&real)
                    .unwrap()
                    .contains("relayhost = [b.example]:587"),
                "{what}: main.cf not updated"
            );
        }
    }
    eprintln!("{}", report.join("\n"));
}

/// The process keeps secrets out of core files and out of other processes' reach: its
/// core size limit is 0, and it is not dumpable, so even run as another user its
/// `/proc/PID/mem` belongs to root (proc(5)) and that user cannot read its memory.
#[test]
fn the_process_dumps_no_core_and_is_not_dumpable() {
    require!(Need::Root);
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let host = Host::new("");
    if !host.open_to_others() {
        return;
    }
    host.desired(&format!(
        "[relayhost]\nrelay = \"[127.0.0.1]:{port}\"\nusername = \"u\"\npassword = \"{CANARY}\"\n"
    ));
    std::os::unix::fs::chown(&host.config, Some(NOBODY), Some(NOBODY)).unwrap();
    let mut cmd = Cmd::new(&["verify", "--timeout", "20"]);
    cmd.args(&["--config", &host.config.display().to_string()]);
    if !cmd.drop_privileges() {
        return;
    }
    let child = cmd.spawn();
    // verify is connected and waits for a greeting: the process is up and running.
    let (conn, _) = silent.accept().unwrap();
    let proc_dir = PathBuf::from(format!("/proc/{}", child.id()));
    let owner = fs::metadata(proc_dir.join("mem")).unwrap().uid();
    let limits = fs::read_to_string(proc_dir.join("limits")).unwrap();
    drop(conn);
    Run::wait(child).code(1);
    assert_eq!(
        owner, 0,
        "a dumpable process run as nobody owns its /proc/PID/mem"
    );
    let core: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap()
        .split_whitespace()
        .skip(4)
        .take(2)
        .collect();
    assert_eq!(core, ["0", "0"], "{limits}");
}
