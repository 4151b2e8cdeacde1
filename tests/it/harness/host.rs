//! A throw-away Postfix config directory ("host") under a temp dir, with its
//! desired-state file; writers that keep Postfix tools from pausing on fresh files; and
//! snapshots of the config dir to prove what a run did or did not write.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tempfile::TempDir;

use super::postfix::{self, Postconf};
use super::run::{Cmd, Run};
use super::{api, skip_or_fail};

/// Sets a file's mtime into the past, so Postfix tools don't wait for it to "cool down"
/// (they pause while main.cf is less than ~2 s old).
pub fn backdate(path: &Path) {
    let past = SystemTime::now() - Duration::from_secs(600);
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_modified(past).unwrap();
}

/// Writes `content` to `path` with `mode`.
pub fn write_with_mode(path: &Path, content: impl AsRef<[u8]>, mode: u32) {
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Whether every directory above `path` is searchable by others and `path` itself has
/// the other-bits `want`.
pub fn reachable_by_others(path: &Path, want: u32) -> bool {
    let ok = |p: &Path, bits: u32| fs::metadata(p).is_ok_and(|m| m.mode() & bits == bits);
    path.ancestors()
        .skip(1)
        .all(|a| a.as_os_str().is_empty() || ok(a, 0o001))
        && ok(path, want)
}

/// A Debian-like main.cf, as a fresh "Internet Site" install writes it.
pub const DEBIAN_MAIN_CF: &str = include_str!("../../../fixtures/maincf/debian12-internet-site.cf");

/// A temporary Postfix config directory plus a desired-state file.
pub struct Host {
    pub tmp: TempDir,
    /// The Postfix config directory (holds main.cf and the maps).
    pub etc: PathBuf,
    /// The desired-state file.
    pub config: PathBuf,
    /// The mail log in the temp dir, when main.cf sends Postfix's logging there
    /// (`maillog_file`). Without one, [`Host::cmd`] runs apply with `--no-syslog`.
    pub maillog: Option<PathBuf>,
}

impl Host {
    /// A config dir whose main.cf is `main_cf`, preceded by lines that keep the instance's
    /// queue and data directories inside the temp dir (so nothing touches the system spool).
    pub fn new(main_cf: &str) -> Host {
        let tmp = tempfile::tempdir().unwrap();
        let etc = tmp.path().join("etc");
        fs::create_dir(&etc).unwrap();
        // An existing queue directory lets `postfix status` answer at once (without it,
        // postfix exits 1 after a 1 s pause).
        fs::create_dir(tmp.path().join("queue")).unwrap();
        let config = tmp.path().join("postrelay.toml");
        let host = Host {
            tmp,
            etc,
            config,
            maillog: None,
        };
        let root = host.tmp.path().display();
        host.write_etc(
            "main.cf",
            format!("queue_directory = {root}/queue\ndata_directory = {root}/data\n{main_cf}"),
        );
        host
    }

    /// Like [`Host::new`], with Postfix's logging, apply's audit line included, sent to
    /// `log/maillog` in the temp dir (`maillog_file`). Postfix does not run: as root,
    /// postlog writes that file itself.
    pub fn with_maillog(main_cf: &str) -> Host {
        let mut host = Host::new("");
        let log = host.tmp.path().join("log");
        fs::create_dir(&log).unwrap();
        let root = host.tmp.path().display();
        host.edit_main_cf(|text| {
            format!(
                "{text}maillog_file = {root}/log/maillog\nmaillog_file_prefixes = {root}\n{main_cf}"
            )
        });
        host.maillog = Some(log.join("maillog"));
        host
    }

    /// The host's mail log ("" before anything was logged); see [`Host::maillog`].
    pub fn maillog(&self) -> String {
        let path = self.maillog.as_ref().expect("this host has no mail log");
        fs::read_to_string(path).unwrap_or_default()
    }

    /// A host whose main.cf is exactly `bytes` (no plumbing lines added).
    pub fn raw(bytes: &[u8]) -> Host {
        let h = Host::new("");
        h.write_etc("main.cf", bytes);
        h
    }

    pub fn main_cf(&self) -> PathBuf {
        self.etc.join("main.cf")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.etc.join(name)
    }

    /// The config dir as postrelay names it (canonical).
    pub fn etc_canonical(&self) -> PathBuf {
        fs::canonicalize(&self.etc).unwrap()
    }

    /// Writes a file in the config directory and backdates it.
    pub fn write_etc(&self, name: &str, content: impl AsRef<[u8]>) {
        let path = self.path(name);
        fs::write(&path, content).unwrap();
        backdate(&path);
    }

    /// Rewrites main.cf through `f` (and backdates it).
    pub fn edit_main_cf(&self, f: impl FnOnce(String) -> String) {
        let text = fs::read_to_string(self.main_cf()).unwrap();
        self.write_etc("main.cf", f(text));
    }

    /// Writes the desired-state file, mode 0600. `@ETC@` and `@TMP@` are replaced.
    pub fn desired(&self, toml: &str) -> &Self {
        self.desired_bytes(self.expand(toml).as_bytes())
    }

    /// Writes the desired-state file verbatim, mode 0600.
    pub fn desired_bytes(&self, bytes: &[u8]) -> &Self {
        write_with_mode(&self.config, bytes, 0o600);
        self
    }

    /// `s` with `@ETC@` and `@TMP@` replaced by the config dir and the temp dir.
    pub fn expand(&self, s: &str) -> String {
        s.replace("@ETC@", &self.etc.display().to_string())
            .replace("@TMP@", &self.tmp.path().display().to_string())
    }

    /// Writes a password file under the temp dir, mode 0600, and returns its path.
    pub fn secret_file(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let p = self.tmp.path().join(name);
        write_with_mode(&p, content, 0o600);
        p
    }

    /// Makes the temp dir and the config dir usable by user nobody; false (after
    /// [`skip_or_fail`]) when a directory above them is not searchable by others.
    pub fn open_to_others(&self) -> bool {
        for dir in [self.tmp.path(), &self.etc] {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
        }
        if reachable_by_others(&self.etc, 0o005) {
            return true;
        }
        skip_or_fail(&format!(
            "{} is not reachable by user nobody",
            self.etc.display()
        ));
        false
    }

    /// The postrelay binary running subcommand `sub` on this host: `--config`, and
    /// `--postfix-dir` for the commands that read main.cf (so none reads the system's).
    /// apply records in the mail log only when the host has its own (see [`Cmd::new`]).
    pub fn cmd(&self, sub: &str) -> Cmd {
        let mut c = match self.maillog {
            Some(_) => Cmd::with_audit(&[sub]),
            None => Cmd::new(&[sub]),
        };
        c.args(&["--config", &self.config.display().to_string()]);
        if matches!(sub, "plan" | "apply" | "validate" | "verify") {
            c.args(&["--postfix-dir", &self.etc.display().to_string()]);
        }
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
    /// the temp dir and returns that dir, for [`api::TOOL_DIR_VAR`] (which debug builds
    /// of postrelay search first; the real tools stay reachable in /usr/sbin).
    pub fn stub(&self, name: &str, script: &str) -> String {
        let bin = self.tmp.path().join("bin");
        fs::create_dir_all(&bin).unwrap();
        write_with_mode(&bin.join(name), format!("#!/bin/sh\n{script}\n"), 0o755);
        bin.display().to_string()
    }

    /// Every file in the config dir but postrelay's lock file (its own bookkeeping,
    /// created by the first apply and never changed after): bytes, inode, mtime, mode,
    /// owner.
    pub fn files(&self) -> BTreeMap<String, FileState> {
        fs::read_dir(&self.etc)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name() != api::LOCK)
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                (name, FileState::of(&e.path()))
            })
            .collect()
    }

    /// postrelay's temporary files (names holding [`api::TEMP_MARK`]) in the config dir.
    pub fn temporaries(&self) -> Vec<String> {
        self.files()
            .into_keys()
            .filter(|n| n.contains(api::TEMP_MARK))
            .collect()
    }

    /// The maps' permissions after apply: sasl_passwd and sasl_passwd.db regular files,
    /// mode 0600, owned by the invoking user and group; the other maps 0644.
    #[track_caller]
    pub fn assert_map_permissions(&self, ctx: &str) {
        let me = (
            nix::unistd::Uid::effective().as_raw(),
            nix::unistd::Gid::effective().as_raw(),
        );
        for name in ["sasl_passwd", "sasl_passwd.db"] {
            let m = fs::symlink_metadata(self.path(name)).unwrap();
            assert!(m.is_file(), "{ctx}: {name} is not a regular file");
            assert_eq!(m.mode() & 0o7777, 0o600, "{ctx}: {name} mode");
            assert_eq!((m.uid(), m.gid()), me, "{ctx}: {name} owner");
        }
        for name in [
            "sender_relay",
            "sender_relay.db",
            "tls_policy",
            "tls_policy.db",
        ] {
            let m = fs::metadata(self.path(name)).unwrap();
            assert_eq!(m.mode() & 0o7777, 0o644, "{ctx}: {name} mode");
        }
    }

    /// What Postfix reads from this config dir.
    pub fn postconf(&self) -> Postconf {
        Postconf::new(&self.etc)
    }

    /// `postmap -s hash:ETC/MAP`: every entry as a `key\tvalue` line, sorted.
    pub fn dump(&self, map: &str) -> Vec<String> {
        postfix::dump(&self.etc, &format!("hash:{}", self.path(map).display()))
    }

    /// `postmap -q KEY TYPE:ETC/MAP`: the value, or None when not found.
    pub fn postmap_q(&self, map_type: &str, map: &str, key: &str) -> Option<String> {
        let map = format!("{map_type}:{}", self.path(map).display());
        postfix::query(&self.etc, &map, key)
    }

    /// `postmap hash:ETC/MAP`: builds the compiled map from its source.
    pub fn postmap_build(&self, map: &str) {
        let map = format!("hash:{}", self.path(map).display());
        super::output_ok(&mut postfix::postmap(&self.etc, &[map.as_ref()]));
    }
}

/// One directory entry, as a snapshot: a file's bytes (empty for anything else), inode,
/// mtime, mode and owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    pub bytes: Vec<u8>,
    pub ino: u64,
    pub mtime: (i64, i64),
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl FileState {
    /// The entry at `path` (a symlink itself, not its target), which must exist.
    pub fn of(path: &Path) -> FileState {
        Self::try_of(path).unwrap_or_else(|| panic!("{}: no such file", path.display()))
    }

    /// Like [`FileState::of`]; None when nothing is at `path`.
    pub fn try_of(path: &Path) -> Option<FileState> {
        let meta = fs::symlink_metadata(path).ok()?;
        let bytes = if meta.is_file() {
            fs::read(path).unwrap()
        } else {
            Vec::new()
        };
        Some(FileState {
            bytes,
            ino: meta.ino(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
        })
    }
}

/// After a rollback: the same files as `before`, each with the same bytes, mode and
/// owner (inodes and mtimes may differ: restored files are new files).
#[track_caller]
pub fn assert_restored(before: &BTreeMap<String, FileState>, after: &BTreeMap<String, FileState>) {
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "files added or removed"
    );
    for (name, was) in before {
        let now = &after[name];
        assert_eq!(now.bytes, was.bytes, "{name} bytes");
        assert_eq!(
            (now.mode, now.uid, now.gid),
            (was.mode, was.uid, was.gid),
            "{name} mode/owner"
        );
    }
}
