//! The Debian package, end to end on this machine: `scripts/build-deb` builds it, `dpkg
//! -i` installs it, and the installed files are checked (the binary, the man page, the
//! completions, the units and that they are not enabled, /etc/postrelay, the examples);
//! then that nothing ran an apply during installation (/etc/postfix and the mail logs
//! as they were, and maintainer scripts that start nothing); then `dpkg -r` and `dpkg -P`
//! leave nothing behind.
//!
//! Installing a package changes the machine, so `cargo test` leaves this test out
//! (`#[ignore]`) and `scripts/test` runs it on its own, after the suite (as CI does, as
//! root). It refuses to run when a postrelay package is installed already, and purges
//! the package it installed if it fails half way.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::harness::{Need, api, on_path};
use crate::require;

const PACKAGE: &str = "postrelay";
const ETC_POSTRELAY: &str = "/etc/postrelay";
const ETC_POSTFIX: &str = "/etc/postfix";
/// Where syslog puts Postfix's (and postlog's) lines on Debian.
const MAIL_LOGS: [&str; 4] = [
    "/var/log/mail.log",
    "/var/log/mail.info",
    "/var/log/mail.warn",
    "/var/log/mail.err",
];

fn source_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `cmd`, which must succeed; its output, stdout as text.
fn ok(cmd: &mut Command) -> (Output, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, stdout)
}

/// Runs `cmd` and returns how long it took (it must succeed).
fn timed(cmd: &mut Command) -> Duration {
    let start = Instant::now();
    ok(cmd);
    start.elapsed()
}

/// dpkg's status of the package (`install ok installed`, `deinstall ok config-files`),
/// None when dpkg knows nothing of it.
fn status() -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", PACKAGE])
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !status.is_empty() && status != "unknown ok not-installed")
        .then_some(status)
}

/// Purges the package if the test fails after installing it.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        if std::thread::panicking() && status().is_some() {
            eprintln!("package test failed: purging the {PACKAGE} package it installed");
            let _ = Command::new("dpkg").args(["-P", PACKAGE]).status();
        }
    }
}

/// A file or directory as far as "did anything change it" goes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    mode: u32,
    uid: u32,
    gid: u32,
    /// A file's bytes or a link's target; empty for a directory.
    content: Vec<u8>,
}

/// Every entry under `root` (root included), by path; empty when `root` is missing.
fn tree(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(path) = todo.pop() {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let content = if meta.is_symlink() {
            fs::read_link(&path)
                .unwrap()
                .into_os_string()
                .into_encoded_bytes()
        } else if meta.is_file() {
            fs::read(&path).unwrap()
        } else {
            if meta.is_dir() {
                todo.extend(fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            }
            Vec::new()
        };
        let entry = Entry {
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            content,
        };
        out.insert(path, entry);
    }
    out
}

/// The mail logs that exist, with their length: what was appended later is new.
fn mail_logs() -> BTreeMap<PathBuf, u64> {
    let mut logs: Vec<PathBuf> = MAIL_LOGS.iter().map(PathBuf::from).collect();
    // The system instance's own log file, when main.cf names one.
    if Path::new(ETC_POSTFIX).join("main.cf").exists()
        && let Some(postconf) = api::tool("postconf")
        && let Ok(out) = Command::new(postconf).args(["-h", "maillog_file"]).output()
    {
        let file = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !file.is_empty() {
            logs.push(PathBuf::from(file));
        }
    }
    logs.into_iter()
        .filter_map(|p| fs::metadata(&p).ok().map(|m| (p, m.len())))
        .collect()
}

/// Lines appended to the mail logs since `before` that an apply would have written:
/// postrelay's audit line, Postfix's reload.
fn new_mail_log_lines(before: &BTreeMap<PathBuf, u64>) -> Vec<String> {
    let mut found = Vec::new();
    for path in mail_logs().into_keys() {
        let start = before.get(&path).copied().unwrap_or(0);
        let bytes = fs::read(&path).unwrap();
        let new = bytes.get(start as usize..).unwrap_or(&bytes);
        found.extend(
            String::from_utf8_lossy(new)
                .lines()
                .filter(|l| l.contains("postrelay") || l.contains("refreshing the Postfix"))
                .map(|l| format!("{}: {l}", path.display())),
        );
    }
    found
}

/// Journal entries since `since` from postrelay or from Postfix's reload, when there is
/// a journal to ask.
fn new_journal_lines(since: SystemTime) -> Vec<String> {
    if !on_path("journalctl") {
        return Vec::new();
    }
    let secs = since.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let out = Command::new("journalctl")
        .args(["--quiet", "--no-pager", &format!("--since=@{secs}")])
        .args(["-t", "postrelay", "-t", "postfix/postfix-script"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// Every path under the systemd and deb-systemd-helper directories whose name holds
/// "postrelay": enablement links, masks, helper state.
fn systemd_traces() -> Vec<PathBuf> {
    let mut found = Vec::new();
    for root in ["/etc/systemd", "/var/lib/systemd"] {
        found.extend(tree(Path::new(root)).into_keys().filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains(PACKAGE))
        }));
    }
    found
}

/// The package's paths, from the archive (`./usr/sbin/postrelay` → `/usr/sbin/postrelay`).
fn contents(deb: &Path) -> Vec<PathBuf> {
    let (_, listing) = ok(Command::new("dpkg-deb").arg("--contents").arg(deb));
    listing
        .lines()
        .map(|l| {
            let path = l.split_whitespace().last().unwrap();
            let path = path.trim_start_matches('.').trim_end_matches('/');
            PathBuf::from(if path.is_empty() { "/" } else { path })
        })
        .filter(|p| p != Path::new("/"))
        .collect()
}

/// Checks the maintainer scripts: none starts, restarts or enables a unit on its own,
/// or runs postrelay. (Without systemd as PID 1, the scripts skip systemctl anyway, so
/// only reading them shows what they would do on a host with systemd.)
fn check_maintainer_scripts(deb: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("control");
    ok(Command::new("dpkg-deb").arg("-e").arg(deb).arg(&dir));
    for script in ["preinst", "postinst", "prerm", "postrm"] {
        let Ok(text) = fs::read_to_string(dir.join(script)) else {
            continue;
        };
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let code = line.split('#').next().unwrap();
            assert!(
                !code.contains("/usr/sbin/postrelay") && !code.contains("postrelay apply"),
                "{script} runs postrelay: {line}"
            );
            for verb in ["start", "restart", "try-restart", "reload", "enable --now"] {
                let words: Vec<&str> = code.split_whitespace().collect();
                let runs_verb = words
                    .windows(2)
                    .any(|w| matches!(w[0], "systemctl" | "deb-systemd-invoke") && w[1] == verb)
                    || words
                        .windows(3)
                        .any(|w| w[0] == "systemctl" && w[1].starts_with('-') && w[2] == verb);
                assert!(!runs_verb, "{script} would {verb} a unit: {line}");
            }
            if code.contains("deb-systemd-helper enable") {
                // Only to keep an administrator's choice across upgrades.
                let guarded = lines[..i]
                    .iter()
                    .rev()
                    .take(3)
                    .any(|l| l.contains("was-enabled"));
                assert!(guarded, "{script} enables a unit unconditionally: {line}");
            }
            if code.contains("deb-systemd-invoke") {
                assert!(code.contains("deb-systemd-invoke stop"), "{script}: {line}");
            }
        }
    }
}

/// Where /etc/postrelay was before the test: absent (the package must create it and
/// purge must remove it), or there with what it held (purge must leave it).
fn etc_postrelay() -> Option<BTreeMap<PathBuf, Entry>> {
    Path::new(ETC_POSTRELAY)
        .exists()
        .then(|| tree(Path::new(ETC_POSTRELAY)))
}

#[test]
#[ignore = "installs a Debian package on this machine: scripts/test runs it after the suite"]
fn package_installs_inert_and_purges_without_a_trace() {
    require!(
        Need::Root,
        Need::Program("dpkg", "dpkg"),
        Need::Program("dpkg-deb", "dpkg"),
        Need::Program("dpkg-query", "dpkg"),
        Need::CargoDeb,
        Need::Program("man", "man-db"),
        Need::Program("systemd-analyze", "systemd"),
        Need::Program("bash", "bash"),
    );
    if let Some(status) = status() {
        panic!(
            "a {PACKAGE} package is on this machine already (dpkg status: {status}); this test \
             installs and purges its own, so remove that one first: dpkg -P {PACKAGE}"
        );
    }
    let postfix_before = tree(Path::new(ETC_POSTFIX));
    let logs_before = mail_logs();
    let etc_postrelay_before = etc_postrelay();
    let traces_before = systemd_traces();
    assert!(
        traces_before.is_empty(),
        "leftovers of an earlier postrelay: {traces_before:?}"
    );
    let started = SystemTime::now();

    // Build, in the environment scripts/build-deb has when run by hand: without the
    // variables cargo sets for a test, since build scripts watch some of them (ring's
    // reruns on CARGO_MANIFEST_DIR), and the release build would be redone each time.
    let t = Instant::now();
    let mut build_deb = Command::new(source_dir().join("scripts/build-deb"));
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_by_cargo = [
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
            "CARGO_CRATE_NAME",
            "CARGO_BIN_NAME",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
            "OUT_DIR",
        ]
        .contains(&name.as_ref())
            || name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_EXE_");
        if set_by_cargo {
            build_deb.env_remove(name.as_ref());
        }
    }
    let (build, stdout) = ok(build_deb.current_dir(source_dir()));
    let built = t.elapsed();
    let deb = PathBuf::from(stdout.trim());
    assert!(deb.is_file(), "scripts/build-deb printed {stdout:?}");
    assert_eq!(
        stdout.lines().count(),
        1,
        "stdout is the path alone:\n{stdout}\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let field = |name: &str| {
        ok(Command::new("dpkg-deb").args(["-f"]).arg(&deb).arg(name))
            .1
            .trim()
            .to_string()
    };
    assert_eq!(field("Package"), PACKAGE);
    assert_eq!(field("Section"), "admin");
    assert_eq!(field("Priority"), "optional");
    let depends = field("Depends");
    assert!(
        depends.split(", ").any(|d| d == "postfix"),
        "Depends: {depends}"
    );
    check_maintainer_scripts(&deb);
    let (_, conffiles) = ok(Command::new("dpkg-deb")
        .arg("--info")
        .arg(&deb)
        .arg("conffiles"));
    let conffiles: BTreeSet<PathBuf> = conffiles.lines().map(PathBuf::from).collect();
    assert_eq!(
        conffiles,
        BTreeSet::from([PathBuf::from(api::CRON_EXAMPLE)])
    );
    let packaged = contents(&deb);
    assert!(
        !packaged.iter().any(|p| p.starts_with(ETC_POSTRELAY)),
        "the package ships files in {ETC_POSTRELAY}: {packaged:?}"
    );
    let existed: BTreeSet<PathBuf> = packaged
        .iter()
        .filter(|p| fs::symlink_metadata(p).is_ok())
        .cloned()
        .collect();
    assert!(
        existed.iter().all(|p| p.is_dir()),
        "files of the package exist before it is installed: {existed:?}"
    );

    // Install. A dpkg configuration that excludes documentation (minimal container
    // images exclude /usr/share/man and /usr/share/doc) is re-included for this
    // package's own files, so that the test checks the package, not that setting.
    let _installed = Installed;
    let mut dpkg = Command::new("dpkg");
    for p in packaged.iter().filter(|p| p.starts_with("/usr/share")) {
        dpkg.arg(format!("--path-include={}", p.display()));
    }
    let installed = timed(
        dpkg.arg("-i")
            .arg(&deb)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    );
    assert_eq!(status().as_deref(), Some("install ok installed"));
    let (_, listed) = ok(Command::new("dpkg").args(["-L", PACKAGE]));
    let listed: Vec<PathBuf> = listed.lines().map(PathBuf::from).collect();
    assert_eq!(
        listed.iter().collect::<BTreeSet<_>>(),
        packaged.iter().collect::<BTreeSet<_>>()
    );

    // The binary, its man page and completions.
    let (_, version) = ok(Command::new("/usr/sbin/postrelay").arg("--version"));
    assert_eq!(
        version,
        format!("postrelay {}\n", env!("CARGO_PKG_VERSION"))
    );
    let (_, man_path) = ok(Command::new("man").args(["-w", PACKAGE]));
    assert_eq!(man_path.trim(), "/usr/share/man/man8/postrelay.8.gz");
    let (_, page) = ok(Command::new("man")
        .arg(PACKAGE)
        .env("MANWIDTH", "80")
        .env("MANPAGER", "cat"));
    assert!(page.contains("sender-dependent SASL relaying"), "{page}");
    for (file, what) in [
        (
            "/usr/share/bash-completion/completions/postrelay",
            "complete-bash",
        ),
        (
            "/usr/share/zsh/vendor-completions/_postrelay",
            "complete-zsh",
        ),
        (
            "/usr/share/fish/vendor_completions.d/postrelay.fish",
            "complete-fish",
        ),
    ] {
        let (generated, _) = ok(Command::new("/usr/sbin/postrelay").args(["generate", what]));
        assert_eq!(fs::read(file).unwrap(), generated.stdout, "{file}");
    }
    ok(Command::new("bash").args([
        "--norc",
        "-c",
        "source /usr/share/bash-completion/completions/postrelay && complete -p postrelay",
    ]));

    // The units: as in contrib/, valid (including their man page reference), disabled.
    for (installed, source) in [
        (api::SERVICE_UNIT, "contrib/systemd/postrelay.service"),
        (api::TIMER_UNIT, "contrib/systemd/postrelay.timer"),
    ] {
        assert_eq!(
            fs::read(installed).unwrap(),
            fs::read(source_dir().join(source)).unwrap(),
            "{installed}"
        );
    }
    let verify = Command::new("systemd-analyze")
        .args(["verify", api::SERVICE_UNIT, api::TIMER_UNIT])
        .output()
        .unwrap();
    assert!(
        verify.status.success() && verify.stdout.is_empty() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}\n{}",
        verify.status,
        String::from_utf8_lossy(&verify.stderr)
    );
    let links: Vec<PathBuf> = tree(Path::new("/etc/systemd/system"))
        .into_keys()
        .filter(|p| p.to_string_lossy().contains(PACKAGE))
        .collect();
    assert!(links.is_empty(), "installed enabled: {links:?}");
    let enabled = Command::new("systemctl")
        .args(["is-enabled", "postrelay.timer"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&enabled.stdout).trim(), "disabled");

    // The cron example (a conffile), inert; the example desired state is init's file.
    let cron = fs::read_to_string(api::CRON_EXAMPLE).unwrap();
    assert!(
        cron.lines()
            .all(|l| l.trim().is_empty() || l.starts_with('#')),
        "{cron}"
    );
    assert_eq!(
        fs::read(api::EXAMPLE_CONFIG).unwrap(),
        fs::read(source_dir().join("src/init/starter.toml")).unwrap()
    );

    // /etc/postrelay: root's, 0700, and no desired state in it.
    let meta = fs::symlink_metadata(ETC_POSTRELAY).unwrap();
    assert!(meta.is_dir());
    if etc_postrelay_before.is_none() {
        assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
        assert_eq!((meta.uid(), meta.gid()), (0, 0));
        assert_eq!(fs::read_dir(ETC_POSTRELAY).unwrap().count(), 0);
    } else {
        assert_eq!(etc_postrelay(), etc_postrelay_before, "install changed it");
    }

    // No apply ran during installation.
    assert_eq!(
        tree(Path::new(ETC_POSTFIX)),
        postfix_before,
        "installation changed {ETC_POSTFIX}"
    );
    assert_eq!(new_mail_log_lines(&logs_before), Vec::<String>::new());
    assert_eq!(new_journal_lines(started), Vec::<String>::new());

    // Remove: everything but the conffile goes (systemd's helper masks the timer
    // meanwhile).
    let removed = timed(Command::new("dpkg").args(["-r", PACKAGE]));
    assert_eq!(status().as_deref(), Some("deinstall ok config-files"));
    for path in &listed {
        let kept = existed.contains(path) || conffiles.contains(path) || path.is_dir();
        assert!(
            kept || fs::symlink_metadata(path).is_err(),
            "{} is left after dpkg -r",
            path.display()
        );
    }

    // Purge: nothing left.
    let purged = timed(Command::new("dpkg").args(["-P", PACKAGE]));
    assert_eq!(status(), None);
    for path in &listed {
        let there = fs::symlink_metadata(path).is_ok();
        assert_eq!(
            there,
            existed.contains(path),
            "{} after dpkg -P (it {} before installation)",
            path.display(),
            if existed.contains(path) {
                "existed"
            } else {
                "did not exist"
            }
        );
    }
    assert_eq!(systemd_traces(), Vec::<PathBuf>::new(), "after dpkg -P");
    match &etc_postrelay_before {
        None => assert!(
            !Path::new(ETC_POSTRELAY).exists(),
            "{ETC_POSTRELAY} is left"
        ),
        Some(before) if before.len() > 1 => assert_eq!(etc_postrelay().as_ref(), Some(before)),
        Some(_) => {} // It was empty: purge may remove it.
    }
    assert_eq!(tree(Path::new(ETC_POSTFIX)), postfix_before);
    assert_eq!(new_mail_log_lines(&logs_before), Vec::<String>::new());

    eprintln!(
        "package: scripts/build-deb {built:.1?}, dpkg -i {installed:.1?}, dpkg -r {removed:.1?}, \
         dpkg -P {purged:.1?} ({})",
        deb.display()
    );
}
