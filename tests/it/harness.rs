//! Shared test harness: a throw-away Postfix config directory ("host"), a builder for
//! running the postrelay binary against it, and helpers that ask the real Postfix tools
//! what they read.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use assert_cmd::cargo::CommandCargoExt;
use tempfile::TempDir;

/// A password that must never appear in any output.
pub const CANARY: &str = "CANARY-s3cret-9d1f";
pub const CANARY2: &str = "CANARY-rotated-44b2";
pub const CANARY_FILE: &str = "CANARY-fromfile-71ce";

/// Whether the Postfix tools are here. Under CI=true their absence fails the test.
pub fn postfix_available() -> bool {
    let found = ["postconf", "postmap", "postfix"]
        .iter()
        .all(|t| postrelay::postfix::tool(t).is_ok());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Postfix tools (postconf, postmap, postfix) are missing under CI=true; .ci/run must install them"
        );
        eprintln!("SKIPPED: Postfix tools not installed (install the postfix package)");
    }
    found
}

/// Skips the calling test (returns) when Postfix is missing outside CI.
#[macro_export]
macro_rules! require_postfix {
    () => {
        if !$crate::harness::postfix_available() {
            return;
        }
    };
}

pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// Sets a file's mtime into the past, so Postfix tools don't wait for it to "cool down"
/// (they pause while main.cf is less than ~2 s old).
pub fn backdate(path: &Path) {
    let past = SystemTime::now() - Duration::from_secs(600);
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_modified(past).unwrap();
}

/// A Debian-like main.cf, as a fresh "Internet Site" install writes it.
pub const DEBIAN_MAIN_CF: &str = include_str!("../../fixtures/maincf/debian12-internet-site.cf");

/// A temporary Postfix config directory plus a desired-state file.
pub struct Host {
    pub tmp: TempDir,
    /// The Postfix config directory (holds main.cf and the maps).
    pub etc: PathBuf,
    /// The desired-state file.
    pub config: PathBuf,
}

impl Host {
    /// A config dir whose main.cf is `main_cf`, preceded by lines that keep the instance's
    /// queue and data directories inside the temp dir (so nothing touches the system spool).
    pub fn new(main_cf: &str) -> Host {
        let tmp = tempfile::tempdir().unwrap();
        let etc = tmp.path().join("etc");
        fs::create_dir(&etc).unwrap();
        let root = tmp.path().display();
        let content =
            format!("queue_directory = {root}/queue\ndata_directory = {root}/data\n{main_cf}");
        fs::write(etc.join("main.cf"), content).unwrap();
        // An existing queue directory lets `postfix status` answer at once (without it,
        // postfix exits 1 after a 1 s pause).
        fs::create_dir(tmp.path().join("queue")).unwrap();
        backdate(&etc.join("main.cf"));
        let config = tmp.path().join("postrelay.toml");
        Host { tmp, etc, config }
    }

    /// A host whose main.cf is exactly `bytes` (no plumbing lines added).
    pub fn raw(bytes: &[u8]) -> Host {
        let h = Host::new("");
        fs::write(h.main_cf(), bytes).unwrap();
        backdate(&h.main_cf());
        h
    }

    pub fn main_cf(&self) -> PathBuf {
        self.etc.join("main.cf")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.etc.join(name)
    }

    /// Writes the desired-state file, mode 0600. `@ETC@` and `@TMP@` are replaced.
    pub fn desired(&self, toml: &str) -> &Self {
        let text = self.expand(toml);
        fs::write(&self.config, text).unwrap();
        fs::set_permissions(&self.config, fs::Permissions::from_mode(0o600)).unwrap();
        self
    }

    pub fn expand(&self, s: &str) -> String {
        s.replace("@ETC@", &self.etc.display().to_string())
            .replace("@TMP@", &self.tmp.path().display().to_string())
    }

    /// Writes a password file under the temp dir, mode 0600, and returns its path.
    pub fn secret_file(&self, name: &str, content: &str) -> PathBuf {
        let p = self.tmp.path().join(name);
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    /// The postrelay binary with `--config` and `--postfix-dir` after the subcommand.
    pub fn cmd(&self, sub: &str) -> Cmd {
        let mut c = Cmd::new(&[sub]);
        c.args(&["--config", &self.config.display().to_string()]);
        c.args(&["--postfix-dir", &self.etc.display().to_string()]);
        c
    }

    pub fn plan(&self) -> Run {
        self.cmd("plan").run()
    }

    /// `postrelay apply`, then [`Host::settle`].
    pub fn apply(&self) -> Run {
        let run = self.cmd("apply").run();
        self.settle();
        run
    }

    /// Backdates main.cf if it was written in the last few seconds. Postfix tools pause
    /// up to 2 s while main.cf is that fresh; on a real host apply runs rarely, in tests
    /// back to back. Only the mtime moves, and only between runs, so "the second run
    /// changes nothing" is still checked against the state the second run started from.
    pub fn settle(&self) {
        let mtime = fs::metadata(self.main_cf()).unwrap().modified().unwrap();
        if mtime
            .elapsed()
            .map_or(true, |age| age < Duration::from_secs(5))
        {
            backdate(&self.main_cf());
        }
    }

    /// Applies twice: the first must succeed, the second must change nothing at all
    /// (same bytes, inodes, mtimes, modes; "no changes"; plan in sync). Returns the first run.
    pub fn apply_twice(&self) -> Run {
        let first = self.apply();
        first.success();
        let before = self.files();
        let second = self.apply();
        second.success();
        assert_eq!(
            second.stdout, "postrelay: no changes\n",
            "second apply changed something"
        );
        assert_eq!(self.files(), before, "second apply touched files");
        let plan = self.plan();
        assert_eq!(
            plan.code, 0,
            "plan after apply not in sync:\n{}",
            plan.stdout
        );
        assert_eq!(self.files(), before, "plan touched files");
        first
    }

    /// Installs a fault-injecting stub program `name` (a shell script) in a bin dir under
    /// the temp dir and returns a PATH value with that dir first. The real tools stay
    /// reachable after it, and postrelay falls back to /usr/sbin.
    pub fn stub(&self, name: &str, script: &str) -> String {
        let bin = self.tmp.path().join("bin");
        fs::create_dir_all(&bin).unwrap();
        let path = bin.join(name);
        fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// Every file in the config dir: bytes, inode, mtime, mode, owner.
    pub fn files(&self) -> BTreeMap<String, FileState> {
        let mut out = BTreeMap::new();
        for e in fs::read_dir(&self.etc).unwrap() {
            let e = e.unwrap();
            let meta = fs::symlink_metadata(e.path()).unwrap();
            let bytes = if meta.is_file() {
                fs::read(e.path()).unwrap()
            } else {
                Vec::new()
            };
            out.insert(
                e.file_name().to_string_lossy().into_owned(),
                FileState {
                    bytes,
                    ino: meta.ino(),
                    mtime: (meta.mtime(), meta.mtime_nsec()),
                    mode: meta.mode(),
                    uid: meta.uid(),
                    gid: meta.gid(),
                },
            );
        }
        out
    }

    /// `postconf -c ETC -h NAME`.
    pub fn postconf(&self, name: &str) -> String {
        let out = Command::new(postrelay::postfix::tool("postconf").unwrap())
            .args(["-c", &self.etc.display().to_string(), "-h", name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "postconf failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .trim_end()
            .to_string()
    }

    /// `postconf -c ETC -n` as name -> value.
    pub fn postconf_n(&self) -> BTreeMap<String, String> {
        let out = Command::new(postrelay::postfix::tool("postconf").unwrap())
            .args(["-c", &self.etc.display().to_string(), "-n"])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            // An empty value prints as `name =`, without the trailing space.
            .filter_map(|l| {
                let (k, v) = l.split_once(" =")?;
                Some((k.to_string(), v.trim_start().to_string()))
            })
            .collect()
    }

    /// `postmap -c ETC -s hash:ETC/MAP`: every entry as a `key\tvalue` line, sorted. A
    /// compiled map postmap cannot read (torn, half-written) fails the test.
    pub fn dump(&self, map: &str) -> Vec<String> {
        let out = Command::new(postrelay::postfix::tool("postmap").unwrap())
            .arg("-c")
            .arg(&self.etc)
            .arg("-s")
            .arg(format!("hash:{}", self.path(map).display()))
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "postmap -s {map}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut lines: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    }

    /// `postmap -c ETC -q KEY TYPE:ETC/MAP`: the value, or None when not found.
    pub fn postmap_q(&self, map_type: &str, map: &str, key: &str) -> Option<String> {
        let out = Command::new(postrelay::postfix::tool("postmap").unwrap())
            .args([
                "-c",
                &self.etc.display().to_string(),
                "-q",
                key,
                &format!("{map_type}:{}", self.path(map).display()),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success() || out.stderr.is_empty(),
            "postmap -q failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.status.success().then(|| {
            String::from_utf8(out.stdout)
                .unwrap()
                .trim_end()
                .to_string()
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    pub bytes: Vec<u8>,
    pub ino: u64,
    pub mtime: (i64, i64),
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// A postrelay command line being built.
pub struct Cmd {
    cmd: Command,
}

impl Cmd {
    pub fn new(args: &[&str]) -> Cmd {
        let mut cmd = Command::cargo_bin("postrelay").unwrap();
        cmd.args(args);
        cmd.env_remove("RUST_LOG");
        Cmd { cmd }
    }

    pub fn args(&mut self, args: &[&str]) -> &mut Self {
        self.cmd.args(args);
        self
    }

    pub fn env(&mut self, k: &str, v: &str) -> &mut Self {
        self.cmd.env(k, v);
        self
    }

    pub fn run(&mut self) -> Run {
        Run::from_output(self.cmd.output().unwrap())
    }
}

/// The result of one run.
#[derive(Debug)]
pub struct Run {
    /// Exit code; -1 when killed by a signal.
    pub code: i32,
    /// The signal that killed the process, if any.
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Wraps a finished process; checks that no canary password was printed.
    pub fn from_output(out: std::process::Output) -> Run {
        let run = Run {
            code: out.status.code().unwrap_or(-1),
            signal: std::os::unix::process::ExitStatusExt::signal(&out.status),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        run.assert_no_secret();
        run
    }

    pub fn success(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "expected exit {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn stdout_has(&self, s: &str) -> &Self {
        assert!(
            self.stdout.contains(s),
            "stdout lacks {s:?}:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn stderr_has(&self, s: &str) -> &Self {
        assert!(
            self.stderr.contains(s),
            "stderr lacks {s:?}:\n{}",
            self.stderr
        );
        self
    }

    /// No canary password in stdout or stderr. Called on every run.
    pub fn assert_no_secret(&self) {
        for secret in [CANARY, CANARY2, CANARY_FILE] {
            assert!(
                !self.stdout.contains(secret) && !self.stderr.contains(secret),
                "a password leaked:\nstdout:\n{}\nstderr:\n{}",
                self.stdout,
                self.stderr
            );
        }
    }
}
