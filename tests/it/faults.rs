//! Fault injection: apply killed (SIGKILL) at every step, Postfix failing to reload, a
//! full and a read-only file system, eight applies racing on one config directory.
//!
//! After each fault, every managed file holds either its complete previous or its
//! complete new content (main.cf and the sources by bytes, the compiled maps by what
//! `postmap -s` dumps), no password is in any file but sasl_passwd, sasl_passwd.db and
//! sasl_passwd's own 0600 temporaries, and the next apply converges: no temporary file,
//! no pending-reload marker, plan in sync, and Postfix reloaded when main.cf changed.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::harness::api::{self, RELOAD_PENDING, TEMP_MARK, TOOL_DIR_VAR};
use crate::harness::host::write_with_mode;
use crate::harness::{
    CANARY, CANARY2, Cmd, DEBIAN_MAIN_CF, Host, Need, Run, assert_restored, holds, in_parallel,
    output_ok, skip_or_fail,
};
use crate::require;

/// Part of every password used here.
const PW_MARK: &str = "CANARY-";
const MAPS: [&str; 3] = ["sasl_passwd", "sender_relay", "tls_policy"];

// --- desired states --------------------------------------------------------------------

/// The state a host starts from.
fn state_a() -> String {
    format!(
        "[relayhost]\nrelay = \"[relay-a.example]:587\"\nusername = \"postmaster@example.net\"\npassword = \"{CANARY}-rh\"\n\n\
         [[sender]]\ndomain = \"example.com\"\nrelay = \"[smtp-a.example]:587\"\nusername = \"postmaster@example.com\"\npassword = \"{CANARY}\"\n"
    )
}

/// Changes every managed file of [`state_a`]: example.com's password rotated, an added
/// sender with its own relay (sasl_passwd, sender_relay, tls_policy), another relayhost
/// relay (main.cf, sasl_passwd, tls_policy).
fn state_b() -> String {
    format!(
        "[relayhost]\nrelay = \"[relay-b.example]:587\"\nusername = \"postmaster@example.net\"\npassword = \"{CANARY}-rh\"\n\n\
         [[sender]]\ndomain = \"example.com\"\nrelay = \"[smtp-a.example]:587\"\nusername = \"postmaster@example.com\"\npassword = \"{CANARY2}\"\n\n\
         [[sender]]\ndomain = \"example.org\"\nrelay = \"[smtp-b.example]:2525\"\nusername = \"AKIAEXAMPLE\"\npassword = \"{CANARY2}-org\"\n"
    )
}

/// `n` senders, each with its own relay and credentials: maps of tens of KiB.
fn state_big(n: usize) -> String {
    let mut s = state_a();
    for i in 0..n {
        s.push_str(&format!(
            "\n[[sender]]\ndomain = \"sender{i:03}.example.com\"\nrelay = \"[smtp{i:03}.relay.example]:587\"\n\
             username = \"postmaster@sender{i:03}.example.com\"\npassword = \"{CANARY}-big-{i:03}-0123456789abcdef\"\n"
        ));
    }
    s
}

/// The race's states: same relayhost (main.cf identical), every map different per `n`.
fn state_race(n: usize) -> String {
    format!(
        "[relayhost]\nrelay = \"[relay.example]:587\"\nusername = \"postmaster@example.net\"\npassword = \"{CANARY}-rh\"\n\n\
         [[sender]]\ndomain = \"example.com\"\nrelay = \"[relay{n}.example]:587\"\nusername = \"postmaster@example.com\"\npassword = \"CANARY-race-{n}\"\n"
    )
}

// --- what the managed files hold -----------------------------------------------------

/// main.cf and the three maps: sources by bytes, compiled maps by their sorted dump.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Managed {
    main_cf: Vec<u8>,
    sources: BTreeMap<&'static str, Vec<u8>>,
    dumps: BTreeMap<&'static str, Vec<String>>,
}

/// What `postmap -s` prints for a map built from `source`: `key\tvalue` per entry.
fn entries(source: &[u8]) -> Vec<String> {
    let mut lines: Vec<String> = std::str::from_utf8(source)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once([' ', '\t']).unwrap_or((l, ""));
            format!("{k}\t{}", v.trim())
        })
        .collect();
    lines.sort();
    lines
}

fn managed(host: &Host) -> Managed {
    Managed {
        main_cf: fs::read(host.main_cf()).unwrap(),
        sources: MAPS
            .iter()
            .map(|m| (*m, fs::read(host.path(m)).unwrap()))
            .collect(),
        dumps: MAPS.iter().map(|m| (*m, host.dump(m))).collect(),
    }
}

/// What the files should hold after applying `config`, computed by the library against
/// the files as they are now; and whether main.cf changes.
fn expected(host: &Host, config: &Path) -> (Managed, bool) {
    let plan = api::planned(config, &host.etc);
    assert_eq!(plan.maps.len(), 3, "the new state must change every map");
    let dumps = plan.maps.iter().map(|(k, v)| (*k, entries(v))).collect();
    let main_changed = plan.main_cf.is_some();
    let main_cf = plan
        .main_cf
        .unwrap_or_else(|| fs::read(host.main_cf()).unwrap());
    (
        Managed {
            main_cf,
            sources: plan.maps,
            dumps,
        },
        main_changed,
    )
}

/// Every managed file is its complete old or its complete new version.
fn assert_each_old_or_new(now: &Managed, old: &Managed, new: &Managed, ctx: &str) {
    assert!(
        now.main_cf == old.main_cf || now.main_cf == new.main_cf,
        "{ctx}: main.cf is neither old nor new:\n{}",
        String::from_utf8_lossy(&now.main_cf)
    );
    for m in MAPS {
        assert!(
            now.sources[m] == old.sources[m] || now.sources[m] == new.sources[m],
            "{ctx}: {m} is neither old nor new"
        );
        assert!(
            now.dumps[m] == old.dumps[m] || now.dumps[m] == new.dumps[m],
            "{ctx}: {m}.db holds neither the old nor the new entries (count: {})",
            now.dumps[m].len()
        );
    }
}

/// No password in any file but sasl_passwd, its compiled map and its temporaries, and
/// all of those are 0600.
fn assert_passwords_confined(host: &Host, ctx: &str) {
    let temp_prefix = format!(".sasl_passwd{TEMP_MARK}");
    for (name, state) in host.files() {
        let secret =
            name == "sasl_passwd" || name == "sasl_passwd.db" || name.starts_with(&temp_prefix);
        let has_pw = holds(&state.bytes, PW_MARK);
        assert!(!has_pw || secret, "{ctx}: a password is in {name}");
        if secret {
            assert_eq!(state.mode & 0o7777, 0o600, "{ctx}: {name} mode");
        }
    }
}

fn assert_converged(host: &Host, new: &Managed, ctx: &str) {
    assert_eq!(
        host.temporaries(),
        Vec::<String>::new(),
        "{ctx}: temporaries left"
    );
    assert!(
        !host.path(RELOAD_PENDING).exists(),
        "{ctx}: {RELOAD_PENDING} left"
    );
    let plan = host.plan();
    assert_eq!(plan.code, 0, "{ctx}: plan not in sync:\n{}", plan.stdout);
    assert_eq!(&managed(host), new, "{ctx}: files differ from the plan");
    assert_passwords_confined(host, ctx);
}

// --- a Postfix that runs ---------------------------------------------------------------

/// Installs a stub `postfix` (first on PATH, returned) saying the instance runs; `fail`
/// (`check` or `reload`) prints a fatal error and exits 1. Calls go to [`calls`].
fn stub_postfix(host: &Host, fail: Option<&str>) -> String {
    let log = host.tmp.path().join("postfix-calls");
    let fail = fail.map_or(String::new(), |action| {
        format!("{action}) echo 'postfix: fatal: injected {action} failure' >&2; exit 1;;")
    });
    host.stub(
        "postfix",
        &format!(
            "echo \"$3\" >> {}\ncase \"$3\" in {fail} *) exit 0;; esac",
            log.display()
        ),
    )
}

/// `postrelay apply` with `path` as PATH (a stub Postfix first) and, if given, the
/// fail point `failpoint`; then [`Host::settle`].
fn apply_with(host: &Host, path: &str, failpoint: Option<&str>) -> Run {
    let mut cmd = host.cmd("apply");
    cmd.env(TOOL_DIR_VAR, path);
    if let Some(point) = failpoint {
        cmd.env("POSTRELAY_FAILPOINT", point);
    }
    let run = cmd.run();
    host.settle();
    run
}

/// With a working (stub) Postfix again, an apply that must succeed; the actions it
/// ran on Postfix.
fn apply_with_working_postfix(host: &Host, path: &str) -> Vec<String> {
    stub_postfix(host, None);
    apply_with(host, path, None).success();
    calls(host)
}

/// The actions the stub ran since the last call, and clears the log.
fn calls(host: &Host) -> Vec<String> {
    let log = host.tmp.path().join("postfix-calls");
    let text = fs::read_to_string(&log).unwrap_or_default();
    let _ = fs::remove_file(&log);
    text.lines().map(str::to_string).collect()
}

/// A host with [`state_a`] applied to a running (stub) Postfix and [`state_b`] as its
/// desired state; returns the PATH with the stub, the old files and the expected new
/// ones. Tests using it need root: without it postrelay cannot ask whether Postfix
/// runs, so it never calls the stub.
fn host_a_to_b() -> (Host, String, Managed, Managed) {
    let host = Host::new(DEBIAN_MAIN_CF);
    let path = stub_postfix(&host, None);
    host.desired(&state_a());
    apply_with(&host, &path, None).success();
    calls(&host);
    let old = managed(&host);
    host.desired(&state_b());
    let (new, main_changed) = expected(&host, &host.config);
    assert!(main_changed, "state B must change main.cf");
    assert_ne!(old.main_cf, new.main_cf);
    for m in MAPS {
        assert_ne!(old.sources[m], new.sources[m], "{m}");
        assert_ne!(old.dumps[m], new.dumps[m], "{m}");
    }
    (host, path, old, new)
}

// --- 1. crash at every step ------------------------------------------------------------

/// A fail point: a name, or `rolled-back:` the canonical path of a file in the case's
/// own config dir.
#[derive(Clone, Copy)]
enum Point<'a> {
    Named(&'a str),
    RolledBack(&'a str),
}

/// Applies B with `POSTRELAY_FAILPOINT` set (for a rollback point, with `postfix check`
/// failing), checks the process died there leaving each file old or new, then that a
/// normal apply converges and reloads Postfix. Returns, for the record, how many of the
/// seven files held their new content after the crash and the temporaries left.
fn crash_at(point: Point) -> (usize, Vec<String>) {
    let (host, path, old, new) = host_a_to_b();
    let (name, restored) = match point {
        Point::Named(name) => (name.to_string(), None),
        Point::RolledBack(file) => {
            stub_postfix(&host, Some("check"));
            let etc = fs::canonicalize(&host.etc).unwrap();
            (
                format!("rolled-back:{}", etc.join(file).display()),
                Some(file),
            )
        }
    };
    let ctx = name.as_str();
    let crashed = apply_with(&host, &path, Some(ctx));
    assert_eq!(
        crashed.signal,
        Some(9),
        "{ctx}: not killed at the fail point (exit {})\nstdout:\n{}\nstderr:\n{}",
        crashed.code,
        crashed.stdout,
        crashed.stderr
    );
    let now = managed(&host);
    assert_each_old_or_new(&now, &old, &new, ctx);
    assert_passwords_confined(&host, ctx);
    let new_files = usize::from(now.main_cf == new.main_cf)
        + MAPS
            .iter()
            .map(|m| {
                usize::from(now.sources[m] == new.sources[m])
                    + usize::from(now.dumps[m] == new.dumps[m])
            })
            .sum::<usize>();
    let left = host.temporaries();
    let crashed_calls = calls(&host);
    match (ctx, restored) {
        ("check", _) => assert_eq!(crashed_calls, ["status", "check"], "{ctx}"),
        ("reload", _) => assert_eq!(crashed_calls, ["status", "check", "reload"], "{ctx}"),
        (_, Some(file)) => {
            assert_eq!(crashed_calls, ["status", "check"], "{ctx}");
            // The file just restored holds its old content again.
            let back = match file.strip_suffix(".db") {
                Some(m) => now.dumps[m] == old.dumps[m],
                None if file == "main.cf" => now.main_cf == old.main_cf,
                None => now.sources[file] == old.sources[file],
            };
            assert!(back, "{ctx}: {file} not restored");
        }
        // `postfix status` runs beside the staging: a run killed while staging may have
        // started it or not yet; nothing else may have run.
        _ => assert!(
            crashed_calls.is_empty() || crashed_calls == ["status"],
            "{ctx}: {crashed_calls:?}"
        ),
    }

    let next_calls = apply_with_working_postfix(&host, &path);
    assert!(
        next_calls.iter().any(|c| c == "reload"),
        "{ctx}: the next apply did not reload Postfix, which still runs the old main.cf: {next_calls:?}"
    );
    assert_converged(&host, &new, ctx);
    (new_files, left)
}

/// Runs the cases side by side (each on its own host) and prints what each crash left.
fn crash_points(points: &[Point], what: &str) {
    let t0 = Instant::now();
    let results = in_parallel(points, points.len(), |point| crash_at(*point));
    for (point, (new_files, left)) in points.iter().zip(results) {
        let name = match point {
            Point::Named(n) => n.to_string(),
            Point::RolledBack(f) => format!("rolled-back:ETC/{f}"),
        };
        eprintln!(
            "faults: killed at {name}: {new_files}/7 files new, {} temporar(ies) left {left:?}",
            left.len()
        );
    }
    eprintln!(
        "faults: {what}: {} crash point(s) in {:.2} s",
        points.len(),
        t0.elapsed().as_secs_f64()
    );
}

fn map_points(map: &str) -> Vec<String> {
    ["staged", "postmap", "renamed-compiled", "renamed-source"]
        .iter()
        .map(|step| format!("{step}:{map}"))
        .collect()
}

fn crash_map(map: &str) {
    let names = map_points(map);
    let points: Vec<Point> = names.iter().map(|n| Point::Named(n)).collect();
    crash_points(&points, map);
}

#[test]
fn crash_at_each_step_of_sasl_passwd() {
    require!(Need::Postfix, Need::Root, Need::DebugBuild);
    crash_map("sasl_passwd");
}

#[test]
fn crash_at_each_step_of_sender_relay() {
    require!(Need::Postfix, Need::Root, Need::DebugBuild);
    crash_map("sender_relay");
}

#[test]
fn crash_at_each_step_of_tls_policy() {
    require!(Need::Postfix, Need::Root, Need::DebugBuild);
    crash_map("tls_policy");
}

#[test]
fn crash_after_main_cf_check_and_reload() {
    require!(Need::Postfix, Need::Root, Need::DebugBuild);
    let points = ["main.cf", "check", "reload"].map(Point::Named);
    crash_points(&points, "main.cf/check/reload");
}

/// Every file a rollback restores, in the order it restores them (newest first).
#[test]
fn crash_during_rollback_after_each_restored_file() {
    require!(Need::Postfix, Need::Root, Need::DebugBuild);
    let points = [
        "main.cf",
        "tls_policy",
        "tls_policy.db",
        "sender_relay",
        "sender_relay.db",
        "sasl_passwd",
        "sasl_passwd.db",
    ]
    .map(Point::RolledBack);
    crash_points(&points, "rollback");
}

#[test]
fn unknown_fail_point_changes_nothing_about_apply() {
    require!(Need::Postfix, Need::Root);
    let (host, path, _, new) = host_a_to_b();
    let run = apply_with(&host, &path, Some("no-such-point"));
    run.success().stdout_has("postrelay: applied");
    assert_eq!(run.signal, None);
    assert_eq!(calls(&host), ["status", "check", "reload"]);
    assert_converged(&host, &new, "unknown fail point");
}

/// A crash after main.cf was replaced leaves `.postrelay-reload-pending`; if the next
/// apply's `postfix check` then fails, its rollback must keep the marker (Postfix never
/// re-read main.cf), so a later apply still reloads instead of saying "no changes".
#[test]
fn owed_reload_survives_a_failed_apply_and_happens_later() {
    require!(Need::Postfix, Need::Root, Need::DebugBuild);
    let (host, path, _, new) = host_a_to_b();
    let crashed = apply_with(&host, &path, Some("main.cf"));
    assert_eq!(crashed.signal, Some(9));
    assert!(host.path(RELOAD_PENDING).exists());
    assert_eq!(calls(&host), ["status"], "Postfix still runs state A");

    stub_postfix(&host, Some("check"));
    apply_with(&host, &path, None)
        .code(2)
        .stderr_has("injected check failure");
    assert_eq!(calls(&host), ["status", "check"], "still no reload");

    let last = apply_with_working_postfix(&host, &path);
    assert!(
        last.iter().any(|c| c == "reload"),
        "Postfix was never reloaded after main.cf changed: the pending reload was dropped \
         by the apply whose check failed (last apply's postfix calls: {last:?})"
    );
    assert_converged(&host, &new, "after the owed reload");
}

/// `--no-reload` changes the files but owes the reload: the marker stays, plan reports
/// it (exit 1) and the next apply does it, even though the files are already right.
#[test]
fn no_reload_leaves_the_reload_owed_to_the_next_apply() {
    require!(Need::Postfix, Need::Root);
    let (host, path, _, new) = host_a_to_b();
    let run = host
        .cmd("apply")
        .env(TOOL_DIR_VAR, &path)
        .args(&["--no-reload"])
        .run();
    host.settle();
    run.success()
        .stdout_has("skipped postfix check and reload (--no-reload)")
        .stdout_has("Postfix still has to re-read its configuration: the next apply reloads it");
    assert_eq!(
        calls(&host),
        Vec::<String>::new(),
        "--no-reload ran postfix"
    );
    assert!(host.path(RELOAD_PENDING).exists());
    assert_eq!(managed(&host), new, "the files are already right");
    host.cmd("plan")
        .env(TOOL_DIR_VAR, &path)
        .run()
        .code(1)
        .stdout_has("Postfix has not re-read it (reload owed)")
        .stdout_has("reload   (if Postfix is running)");
    assert_eq!(
        apply_with_working_postfix(&host, &path),
        ["status", "check", "reload"]
    );
    assert_converged(&host, &new, "after the owed reload");
}

/// Temporary names are unpredictable (pid, then 64 random bits), so nobody can plant a
/// link where postrelay, or postmap beside it, is about to write.
#[test]
fn temporary_names_cannot_be_predicted() {
    require!(Need::Postfix, Need::Root, Need::DebugBuild);
    let mut seen = Vec::new();
    for _ in 0..2 {
        let (host, path, _, _) = host_a_to_b();
        let crashed = apply_with(&host, &path, Some("staged:sasl_passwd"));
        assert_eq!(crashed.signal, Some(9));
        let temps = host.temporaries();
        assert_eq!(temps.len(), 1, "{temps:?}");
        let suffix = temps[0].rsplit('.').next().unwrap().to_string();
        assert!(
            suffix.len() == 16 && suffix.bytes().all(|b| b.is_ascii_hexdigit()),
            "{temps:?}"
        );
        seen.push(suffix);
    }
    assert_ne!(seen[0], seen[1]);
}

/// A link planted at the reload marker's name is never written through: the marker
/// counts as owed, and the link is removed once Postfix has reloaded.
#[test]
fn a_link_at_the_reload_marker_is_not_followed() {
    require!(Need::Postfix, Need::Root);
    let (host, path, _, new) = host_a_to_b();
    let victim = host.tmp.path().join("victim");
    std::os::unix::fs::symlink(&victim, host.path(RELOAD_PENDING)).unwrap();
    assert_eq!(
        apply_with_working_postfix(&host, &path),
        ["status", "check", "reload"]
    );
    assert!(!victim.exists(), "apply wrote through the link");
    assert_converged(&host, &new, "after the planted marker");
}

// --- 2. postfix reload failing ---------------------------------------------------------

#[test]
fn failed_postfix_reload_restores_every_file() {
    require!(Need::Postfix, Need::Root);
    let (host, path, old, new) = host_a_to_b();
    stub_postfix(&host, Some("reload"));
    let before = host.files();
    apply_with(&host, &path, None)
        .code(2)
        .stderr_has("postfix: fatal: injected reload failure")
        .stderr_has("restored the previous files");
    assert_eq!(calls(&host), ["status", "check", "reload"]);
    assert_restored(&before, &host.files());
    assert!(!host.path(RELOAD_PENDING).exists());
    assert_eq!(managed(&host), old);
    assert_passwords_confined(&host, "reload failure");

    assert_eq!(
        apply_with_working_postfix(&host, &path),
        ["status", "check", "reload"]
    );
    assert_converged(&host, &new, "after reload failure");
}

// --- 3. full and read-only file systems ------------------------------------------------

/// A host whose config dir is a small (256 KiB) tmpfs (main.cf copied in), unmounted on
/// drop, even when the test panics, before the host's temp dir goes.
struct Tmpfs {
    host: Host,
    dir: PathBuf,
}

impl std::ops::Deref for Tmpfs {
    type Target = Host;
    fn deref(&self) -> &Host {
        &self.host
    }
}

impl Tmpfs {
    /// A host with the Debian main.cf and [`state_a`] applied on a tmpfs, and `next` as
    /// its desired state. None (after [`skip_or_fail`]) when mounting fails here.
    fn with_state_a_then(next: &str) -> Option<Tmpfs> {
        let host = Host::new(DEBIAN_MAIN_CF);
        let main_cf = fs::read(host.main_cf()).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256k,mode=0755"])
            .arg("tmpfs")
            .arg(&host.etc)
            .output()
            .unwrap();
        if !out.status.success() {
            skip_or_fail(&format!(
                "cannot mount a tmpfs: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
            return None;
        }
        let fs = Tmpfs {
            dir: host.etc.clone(),
            host,
        };
        fs.write_etc("main.cf", main_cf);
        fs.desired(&state_a());
        fs.apply().success();
        fs.desired(next);
        Some(fs)
    }

    fn remount_ro(&self) {
        output_ok(
            Command::new("mount")
                .args(["-o", "remount,ro"])
                .arg(&self.dir),
        );
    }

    fn free(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(&self.dir).unwrap();
        s.blocks_available() as u64 * s.fragment_size() as u64
    }

    /// Fills the file system with `filler`, then shrinks it to leave about `free` bytes.
    fn fill(&self, free: u64) -> PathBuf {
        let filler = self.dir.join("filler");
        let mut f = fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let len = f.metadata().unwrap().len();
        f.set_len(len.saturating_sub(free)).unwrap();
        drop(f);
        let left = self.free();
        assert!(
            left >= free && left < free + 8192,
            "{left} bytes free, wanted about {free}"
        );
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn full_file_system_changes_nothing_then_apply_succeeds_once_space_is_freed() {
    require!(Need::Postfix, Need::Root);
    let t0 = Instant::now();
    // sasl_passwd alone is ~12 KiB of source: more than what is left.
    let Some(host) = Tmpfs::with_state_a_then(&state_big(120)) else {
        return;
    };
    let filler = host.fill(8192);
    let before = host.files();
    host.cmd("apply")
        .run()
        .error()
        .stderr_has("sasl_passwd")
        .stderr_has("No space left on device");
    assert_eq!(host.files(), before, "a full disk changed files");
    assert_eq!(host.temporaries(), Vec::<String>::new(), "temporaries left");
    host.plan().code(1);

    fs::remove_file(filler).unwrap();
    host.apply_twice();
    assert_eq!(host.temporaries(), Vec::<String>::new());
    assert_passwords_confined(&host, "full disk");
    assert_eq!(
        host.postmap_q("hash", "sasl_passwd", "@sender119.example.com"),
        Some(format!(
            "postmaster@sender119.example.com:{CANARY}-big-119-0123456789abcdef"
        ))
    );
    eprintln!(
        "faults: full file system: 1 case in {:.2} s",
        t0.elapsed().as_secs_f64()
    );
}

/// When postmap itself fails (here: ENOSPC while writing the .db), the half-built
/// compiled map of the temporary source (`.sasl_passwd.postrelay-tmp.P.N.db`) must not
/// stay behind taking the space that was short.
#[test]
fn failed_postmap_leaves_no_compiled_temporary() {
    require!(Need::Postfix, Need::Root);
    // Room for the sources (12 + 8 + 8 KiB) but not for sasl_passwd.db (24 KiB) too.
    let Some(host) = Tmpfs::with_state_a_then(&state_big(120)) else {
        return;
    };
    let _filler = host.fill(28 * 1024);
    let before = host.files();
    host.cmd("apply")
        .run()
        .code(2)
        .stderr_has("cannot build")
        .stderr_has("No space left on device");
    assert_eq!(host.files().get("main.cf"), before.get("main.cf"));
    assert_passwords_confined(&host, "failed postmap");
    assert_eq!(
        host.temporaries(),
        Vec::<String>::new(),
        "a failed postmap left its temporary compiled map"
    );
}

#[test]
fn read_only_file_system_changes_nothing_and_plan_still_works() {
    require!(Need::Postfix, Need::Root);
    let Some(host) = Tmpfs::with_state_a_then(&state_b()) else {
        return;
    };
    host.remount_ro();
    let before = host.files();
    // Not Host::apply: settle() cannot backdate on a read-only file system.
    host.cmd("apply")
        .run()
        .error()
        .stderr_has("sasl_passwd")
        .stderr_has("Read-only file system");
    assert_eq!(
        host.files(),
        before,
        "apply changed a read-only file system"
    );
    host.plan()
        .code(1)
        .stdout_has("sasl_passwd: content differs");
    assert_eq!(host.files(), before);
}

// --- 4. eight concurrent applies -------------------------------------------------------

/// What one race saw.
struct Race {
    winner: usize,
    /// Applies that found the lock taken and waited.
    waited: usize,
    lock_timeouts: usize,
    /// Plan runs during the race, by exit code 0 and 1.
    plans: [usize; 2],
}

fn race_once(round: usize) -> Race {
    let host = Host::new(DEBIAN_MAIN_CF);
    host.desired(&state_race(0));
    host.apply().success();
    let etc = host.etc.display().to_string();
    let configs: Vec<String> = (1..=8)
        .map(|n| {
            let p = host.tmp.path().join(format!("state-{n}.toml"));
            write_with_mode(&p, state_race(n), 0o600);
            p.display().to_string()
        })
        .collect();
    let cmd = |sub: &str, config: &str| Cmd::new(&[sub, "--config", config, "--postfix-dir", &etc]);
    let expect: Vec<Managed> = configs
        .iter()
        .map(|c| {
            let (m, main_changed) = expected(&host, Path::new(c));
            assert!(!main_changed, "race states must not change main.cf");
            m
        })
        .collect();
    let main_cf = fs::read(host.main_cf()).unwrap();
    let done = AtomicBool::new(false);

    let (applies, plans) = std::thread::scope(|s| {
        let planner = s.spawn(|| {
            let mut runs = Vec::new();
            loop {
                runs.push(cmd("plan", &configs[runs.len() % configs.len()]).run());
                if done.load(Ordering::SeqCst) {
                    return runs;
                }
                // A short pause: five rounds run at once, each with its planner.
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        });
        let children: Vec<_> = configs
            .iter()
            .map(|c| cmd("apply", c).args(&["-v"]).spawn())
            .collect();
        let applies: Vec<Run> = children.into_iter().map(Run::wait).collect();
        done.store(true, Ordering::SeqCst);
        (applies, planner.join().unwrap())
    });
    let ctx = format!("race {round}");

    let mut lock_timeouts = 0;
    let waited = applies
        .iter()
        .filter(|r| r.stderr.contains("waiting for another postrelay apply"))
        .count();
    for (i, run) in applies.iter().enumerate() {
        // apply -v prints no password.
        run.assert_hides(PW_MARK);
        if run.code == 2
            && run
                .stderr
                .contains("another postrelay apply holds the lock")
        {
            lock_timeouts += 1;
        } else {
            assert_eq!(
                run.code,
                0,
                "{ctx}: apply {} failed\nstdout:\n{}\nstderr:\n{}",
                i + 1,
                run.stdout,
                run.stderr
            );
        }
    }
    for run in &plans {
        assert!(
            run.code == 0 || run.code == 1,
            "{ctx}: plan during the race exited {}\nstdout:\n{}\nstderr:\n{}",
            run.code,
            run.stdout,
            run.stderr
        );
        run.assert_hides(PW_MARK);
    }

    let now = managed(&host);
    let matching: Vec<usize> = (0..8)
        .filter(|&i| now.sources == expect[i].sources)
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "{ctx}: the sources are not exactly one state's (a mix of runs)"
    );
    let winner = matching[0];
    assert_eq!(
        now.dumps,
        expect[winner].dumps,
        "{ctx}: compiled maps are not state {}'s, unlike the sources",
        winner + 1
    );
    assert_eq!(now.main_cf, main_cf, "{ctx}: main.cf changed");
    assert_eq!(applies[winner].code, 0, "{ctx}: the winner did not succeed");
    assert_eq!(
        host.temporaries(),
        Vec::<String>::new(),
        "{ctx}: temporaries left"
    );
    assert!(!host.path(RELOAD_PENDING).exists());
    assert_passwords_confined(&host, &ctx);
    let plan = cmd("plan", &configs[winner]).run();
    assert_eq!(plan.code, 0, "{ctx}: not in sync with the winner");
    Race {
        winner: winner + 1,
        waited,
        lock_timeouts,
        plans: [0, 1].map(|code| plans.iter().filter(|r| r.code == code).count()),
    }
}

#[test]
fn eight_concurrent_applies_leave_exactly_one_state() {
    require!(Need::Postfix);
    let t0 = Instant::now();
    // Rounds on separate hosts run side by side: inside a round the applies serialise
    // on the lock anyway.
    let rounds: Vec<usize> = (0..5).collect();
    let races = in_parallel(&rounds, rounds.len(), |&round| race_once(round));
    for (round, race) in races.iter().enumerate() {
        eprintln!(
            "faults: race {round}: state {} won, {} of 8 waited for the lock, {} lock timeout(s), plans during the race: {} in sync, {} pending",
            race.winner, race.waited, race.lock_timeouts, race.plans[0], race.plans[1]
        );
    }
    assert!(
        races.iter().any(|r| r.waited > 0),
        "no apply ever waited for the lock: the applies did not overlap"
    );
    eprintln!(
        "faults: race: {} round(s) of 8 applies in {:.2} s",
        rounds.len(),
        t0.elapsed().as_secs_f64()
    );
}
