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

use assert_cmd::cargo::CommandCargoExt;
use postrelay::fs::TEMP_MARK;
use postrelay::managed::RELOAD_PENDING;

use crate::harness::{self, CANARY, CANARY2, Cmd, Host, Run};
use crate::require_postfix;

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
    let d = postrelay::desired::load(config).unwrap();
    let dir = postrelay::state::config_dir(&d, Some(&host.etc)).unwrap();
    let state = postrelay::state::State::read(&d, dir).unwrap();
    let plan = postrelay::plan::plan(&d, &state).unwrap();
    assert_eq!(plan.maps.len(), 3, "the new state must change every map");
    let sources: BTreeMap<&'static str, Vec<u8>> = plan
        .maps
        .iter()
        .map(|m| (m.kind.file_name(), m.new.expose().clone()))
        .collect();
    let dumps = sources.iter().map(|(k, v)| (*k, entries(v))).collect();
    let main_cf = match &plan.main_cf {
        Some(m) => m.new.clone(),
        None => fs::read(host.main_cf()).unwrap(),
    };
    (
        Managed {
            main_cf,
            sources,
            dumps,
        },
        plan.main_cf.is_some(),
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

fn temps(host: &Host) -> Vec<String> {
    host.files()
        .into_keys()
        .filter(|n| n.contains(TEMP_MARK))
        .collect()
}

/// No password in any file but sasl_passwd, its compiled map and its temporaries, and
/// all of those are 0600.
fn assert_passwords_confined(host: &Host, ctx: &str) {
    let temp_prefix = format!(".sasl_passwd{TEMP_MARK}");
    for (name, state) in host.files() {
        let secret =
            name == "sasl_passwd" || name == "sasl_passwd.db" || name.starts_with(&temp_prefix);
        let has_pw = state
            .bytes
            .windows(PW_MARK.len())
            .any(|w| w == PW_MARK.as_bytes());
        assert!(!has_pw || secret, "{ctx}: a password is in {name}");
        if secret {
            assert_eq!(state.mode & 0o7777, 0o600, "{ctx}: {name} mode");
        }
    }
}

fn assert_converged(host: &Host, new: &Managed, ctx: &str) {
    assert_eq!(temps(host), Vec::<String>::new(), "{ctx}: temporaries left");
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

/// The actions the stub ran since the last call, and clears the log.
fn calls(host: &Host) -> Vec<String> {
    let log = host.tmp.path().join("postfix-calls");
    let text = fs::read_to_string(&log).unwrap_or_default();
    let _ = fs::remove_file(&log);
    text.lines().map(str::to_string).collect()
}

/// A host with [`state_a`] applied to a running (stub) Postfix and [`state_b`] as its
/// desired state; returns the PATH with the stub, the old files and the expected new ones.
fn host_a_to_b() -> (Host, String, Managed, Managed) {
    let host = Host::new(harness::DEBIAN_MAIN_CF);
    let path = stub_postfix(&host, None);
    host.desired(&state_a());
    host.cmd("apply").env("PATH", &path).run().success();
    host.settle();
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

fn failpoints_compiled() -> bool {
    if !cfg!(debug_assertions) {
        eprintln!("SKIPPED: fail points exist only in debug builds");
    }
    cfg!(debug_assertions)
}

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
    let crashed = host
        .cmd("apply")
        .env("PATH", &path)
        .env("POSTRELAY_FAILPOINT", ctx)
        .run();
    host.settle();
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
    let left = temps(&host);
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
        _ => assert_eq!(crashed_calls, ["status"], "{ctx}"),
    }

    stub_postfix(&host, None);
    host.cmd("apply").env("PATH", &path).run().success();
    host.settle();
    let next_calls = calls(&host);
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
    let results: Vec<(usize, Vec<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = points
            .iter()
            .map(|point| s.spawn(move || crash_at(*point)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
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
    require_postfix!();
    if failpoints_compiled() {
        crash_map("sasl_passwd");
    }
}

#[test]
fn crash_at_each_step_of_sender_relay() {
    require_postfix!();
    if failpoints_compiled() {
        crash_map("sender_relay");
    }
}

#[test]
fn crash_at_each_step_of_tls_policy() {
    require_postfix!();
    if failpoints_compiled() {
        crash_map("tls_policy");
    }
}

#[test]
fn crash_after_main_cf_check_and_reload() {
    require_postfix!();
    if failpoints_compiled() {
        let points = ["main.cf", "check", "reload"].map(Point::Named);
        crash_points(&points, "main.cf/check/reload");
    }
}

/// Every file a rollback restores, in the order it restores them (newest first).
#[test]
fn crash_during_rollback_after_each_restored_file() {
    require_postfix!();
    if failpoints_compiled() {
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
}

#[test]
fn unknown_fail_point_changes_nothing_about_apply() {
    require_postfix!();
    let (host, path, _, new) = host_a_to_b();
    let run = host
        .cmd("apply")
        .env("PATH", &path)
        .env("POSTRELAY_FAILPOINT", "no-such-point")
        .run();
    host.settle();
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
    require_postfix!();
    if !failpoints_compiled() {
        return;
    }
    let (host, path, _, new) = host_a_to_b();
    let crashed = host
        .cmd("apply")
        .env("PATH", &path)
        .env("POSTRELAY_FAILPOINT", "main.cf")
        .run();
    host.settle();
    assert_eq!(crashed.signal, Some(9));
    assert!(host.path(RELOAD_PENDING).exists());
    assert_eq!(calls(&host), ["status"], "Postfix still runs state A");

    stub_postfix(&host, Some("check"));
    host.cmd("apply")
        .env("PATH", &path)
        .run()
        .code(2)
        .stderr_has("injected check failure");
    host.settle();
    assert_eq!(calls(&host), ["status", "check"], "still no reload");

    stub_postfix(&host, None);
    host.cmd("apply").env("PATH", &path).run().success();
    host.settle();
    let last = calls(&host);
    assert!(
        last.iter().any(|c| c == "reload"),
        "Postfix was never reloaded after main.cf changed: the pending reload was dropped \
         by the apply whose check failed (last apply's postfix calls: {last:?})"
    );
    assert_converged(&host, &new, "after the owed reload");
}

// --- 2. postfix reload failing ---------------------------------------------------------

#[test]
fn failed_postfix_reload_restores_every_file() {
    require_postfix!();
    let (host, path, old, new) = host_a_to_b();
    stub_postfix(&host, Some("reload"));
    let before = host.files();
    let run = host.cmd("apply").env("PATH", &path).run();
    host.settle();
    run.code(2)
        .stderr_has("postfix: fatal: injected reload failure")
        .stderr_has("restored the previous files");
    assert_eq!(calls(&host), ["status", "check", "reload"]);
    let after = host.files();
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "files added or removed"
    );
    for (name, was) in &before {
        let now = &after[name];
        assert_eq!(now.bytes, was.bytes, "{name} bytes");
        assert_eq!(
            (now.mode, now.uid, now.gid),
            (was.mode, was.uid, was.gid),
            "{name} mode/owner"
        );
    }
    assert!(!host.path(RELOAD_PENDING).exists());
    assert_eq!(managed(&host), old);
    assert_passwords_confined(&host, "reload failure");

    stub_postfix(&host, None);
    host.cmd("apply").env("PATH", &path).run().success();
    host.settle();
    assert_eq!(calls(&host), ["status", "check", "reload"]);
    assert_converged(&host, &new, "after reload failure");
}

// --- 3. full and read-only file systems ------------------------------------------------

/// Whether we may mount; under CI=true, not being root fails.
fn require_root() -> bool {
    if harness::is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "the file-system fault tests need root (mount) and CI runs as root"
    );
    eprintln!("SKIPPED: needs root to mount a tmpfs");
    false
}

/// A small tmpfs mounted over a host's config dir (main.cf copied in), unmounted on drop,
/// even when the test panics.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// `None` (skip) when mounting is impossible here, outside CI.
    fn over(host: &Host, size: &str) -> Option<Tmpfs> {
        let main_cf = fs::read(host.main_cf()).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755")])
            .arg("tmpfs")
            .arg(&host.etc)
            .output()
            .unwrap();
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "cannot mount a tmpfs under CI=true: {err}"
            );
            eprintln!("SKIPPED: cannot mount a tmpfs: {err}");
            return None;
        }
        let guard = Tmpfs {
            dir: host.etc.clone(),
        };
        fs::write(host.main_cf(), main_cf).unwrap();
        harness::backdate(&host.main_cf());
        Some(guard)
    }

    fn remount_ro(&self) {
        let out = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "remount,ro: {}",
            String::from_utf8_lossy(&out.stderr)
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
    require_postfix!();
    if !require_root() {
        return;
    }
    let t0 = Instant::now();
    let host = Host::new(harness::DEBIAN_MAIN_CF);
    let Some(tmpfs) = Tmpfs::over(&host, "256k") else {
        return;
    };
    host.desired(&state_a());
    host.apply().success();
    // sasl_passwd alone is ~12 KiB of source: more than what is left.
    host.desired(&state_big(120));
    let filler = tmpfs.fill(8192);
    let before = host.files();
    let run = host.cmd("apply").run();
    run.code(2)
        .stderr_has("postrelay: error: ")
        .stderr_has("sasl_passwd")
        .stderr_has("No space left on device");
    assert_eq!(run.stdout, "");
    assert_eq!(host.files(), before, "a full disk changed files");
    assert_eq!(temps(&host), Vec::<String>::new(), "temporaries left");
    host.plan().code(1);

    fs::remove_file(filler).unwrap();
    host.apply_twice();
    assert_eq!(temps(&host), Vec::<String>::new());
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
    require_postfix!();
    if !require_root() {
        return;
    }
    let host = Host::new(harness::DEBIAN_MAIN_CF);
    let Some(tmpfs) = Tmpfs::over(&host, "256k") else {
        return;
    };
    host.desired(&state_a());
    host.apply().success();
    // Room for the sources (12 + 8 + 8 KiB) but not for sasl_passwd.db (24 KiB) too.
    host.desired(&state_big(120));
    let _filler = tmpfs.fill(28 * 1024);
    let before = host.files();
    let run = host.cmd("apply").run();
    run.code(2)
        .stderr_has("cannot build")
        .stderr_has("No space left on device");
    assert_eq!(host.files().get("main.cf"), before.get("main.cf"));
    assert_passwords_confined(&host, "failed postmap");
    assert_eq!(
        temps(&host),
        Vec::<String>::new(),
        "a failed postmap left its temporary compiled map"
    );
}

#[test]
fn read_only_file_system_changes_nothing_and_plan_still_works() {
    require_postfix!();
    if !require_root() {
        return;
    }
    let host = Host::new(harness::DEBIAN_MAIN_CF);
    let Some(tmpfs) = Tmpfs::over(&host, "256k") else {
        return;
    };
    host.desired(&state_a());
    host.apply().success();
    host.desired(&state_b());
    tmpfs.remount_ro();
    let before = host.files();
    // Not Host::apply: settle() cannot backdate on a read-only file system.
    let run = host.cmd("apply").run();
    run.code(2)
        .stderr_has("postrelay: error: ")
        .stderr_has("sasl_passwd")
        .stderr_has("Read-only file system");
    assert_eq!(run.stdout, "");
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
    let host = Host::new(harness::DEBIAN_MAIN_CF);
    host.desired(&state_race(0));
    host.apply().success();
    let etc = host.etc.display().to_string();
    let configs: Vec<PathBuf> = (1..=8)
        .map(|n| {
            let p = host.tmp.path().join(format!("state-{n}.toml"));
            fs::write(&p, state_race(n)).unwrap();
            fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
            p
        })
        .collect();
    let expect: Vec<Managed> = configs
        .iter()
        .map(|c| {
            let (m, main_changed) = expected(&host, c);
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
                let c = &configs[runs.len() % configs.len()];
                runs.push(
                    Cmd::new(&["plan"])
                        .args(&["--config", &c.display().to_string(), "--postfix-dir", &etc])
                        .run(),
                );
                if done.load(Ordering::SeqCst) {
                    return runs;
                }
                // A short pause: five rounds run at once, each with its planner.
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        });
        let children: Vec<_> = configs
            .iter()
            .map(|c| {
                Command::cargo_bin("postrelay")
                    .unwrap()
                    .args(["apply", "-v", "--config"])
                    .arg(c)
                    .args(["--postfix-dir", &etc])
                    .env_remove("RUST_LOG")
                    .env_remove("POSTRELAY_FAILPOINT")
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let applies: Vec<Run> = children
            .into_iter()
            .map(|c| Run::from_output(c.wait_with_output().unwrap()))
            .collect();
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
        assert!(
            !run.stdout.contains(PW_MARK) && !run.stderr.contains(PW_MARK),
            "{ctx}: apply -v printed a password"
        );
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
        assert!(
            !run.stdout.contains(PW_MARK) && !run.stderr.contains(PW_MARK),
            "{ctx}: plan printed a password"
        );
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
        temps(&host),
        Vec::<String>::new(),
        "{ctx}: temporaries left"
    );
    assert!(!host.path(RELOAD_PENDING).exists());
    assert_passwords_confined(&host, &ctx);
    let plan = Cmd::new(&["plan"])
        .args(&[
            "--config",
            &configs[winner].display().to_string(),
            "--postfix-dir",
            &etc,
        ])
        .run();
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
    require_postfix!();
    let t0 = Instant::now();
    let rounds = 5;
    // Rounds on separate hosts run side by side: inside a round the applies serialise
    // on the lock anyway.
    let races: Vec<Race> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..rounds)
            .map(|round| s.spawn(move || race_once(round)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
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
        "faults: race: {rounds} round(s) of 8 applies in {:.2} s",
        t0.elapsed().as_secs_f64()
    );
}
