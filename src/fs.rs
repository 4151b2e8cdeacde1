//! File-system primitives: atomic durable writes that keep permissions, file snapshots,
//! and the config-directory lock.
//!
//! Invariants: a file postrelay replaces is never truncated in place. Its new content
//! goes to a temporary file in the same directory, created exclusively with its final
//! restrictive mode (so a password file is never readable by others, whatever the
//! umask), fsynced, then renamed over the old name, and the directory is fsynced.
//! Temporary names all contain [`TEMP_MARK`] so a later run (holding the lock) can
//! remove what a crashed run left behind.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{Gid, Uid};

/// Part of every temporary file name postrelay creates.
pub const TEMP_MARK: &str = ".postrelay-tmp.";

/// A file's bytes and the metadata postrelay preserves or checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub bytes: Vec<u8>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Largest main.cf or lookup-table source postrelay reads before refusing it as not
/// what it claims to be (a map source may also be as large as what postrelay would
/// write there).
pub const MAX_CONFIG_SIZE: u64 = 10 * 1024 * 1024;

/// Reads a file with its metadata; `Ok(None)` when it does not exist.
pub fn snapshot(path: &Path) -> Result<Option<Snapshot>> {
    snapshot_limited(path, u64::MAX)
}

/// [`snapshot`], refusing a file larger than `limit` bytes without reading it.
pub fn snapshot_limited(path: &Path, limit: u64) -> Result<Option<Snapshot>> {
    // O_NONBLOCK: opening a FIFO must not hang; it is rejected below.
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path);
    let mut file = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(explain(e, path, "open")),
    };
    let meta = file
        .metadata()
        .with_context(|| format!("{}: cannot stat", path.display()))?;
    if !meta.is_file() {
        bail!("{}: not a regular file", path.display());
    }
    if meta.len() > limit {
        bail!(
            "{}: {} bytes, larger than the {} bytes expected at most; refusing to read it",
            path.display(),
            meta.len(),
            limit
        );
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    io::Read::read_to_end(&mut file, &mut bytes).map_err(|e| explain(e, path, "read"))?;
    Ok(Some(Snapshot {
        bytes,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    }))
}

/// Fails if `path` is a symbolic link: files postrelay owns are replaced by rename,
/// which would silently turn a link into a regular file, and a link may point anywhere.
pub fn refuse_symlink(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => bail!(
            "{}: is a symbolic link (owned by uid {}); postrelay manages this file itself and does not follow links: remove the link",
            path.display(),
            m.uid()
        ),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(explain(e, path, "stat")),
    }
}

/// Wraps an I/O error with the path, and a hint to use sudo when it is a permission problem.
pub fn explain(e: io::Error, path: &Path, what: &str) -> anyhow::Error {
    if e.kind() == io::ErrorKind::PermissionDenied && !Uid::effective().is_root() {
        anyhow::anyhow!(
            "{}: cannot {what}: {e} (run postrelay as root, e.g. with sudo)",
            path.display()
        )
    } else {
        anyhow::anyhow!("{}: cannot {what}: {e}", path.display())
    }
}

/// A temporary file in the destination's directory, removed on drop unless persisted.
#[derive(Debug)]
pub struct Temp {
    pub path: PathBuf,
    keep: bool,
}

impl Temp {
    /// Creates `dir/.NAME.postrelay-tmp.PID.N` exclusively with exactly `mode` and writes
    /// `bytes`, fsynced. The file is created with a mode no wider than `mode & 0600`
    /// and widened only afterwards, so no umask can expose it.
    pub fn write(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<Temp> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        // Errors name the file being replaced; the temporary name means nothing to a user.
        let dest = dir.join(name);
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!(".{name}{TEMP_MARK}{}.{n}", std::process::id()));
            let mut file = match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode & 0o600)
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
                .open(&path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(explain(e, &dest, "create")),
            };
            let temp = Temp {
                path: path.clone(),
                keep: false,
            };
            file.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(|e| explain(e, &dest, "chmod"))?;
            file.write_all(bytes)
                .map_err(|e| explain(e, &dest, "write"))?;
            file.sync_all().map_err(|e| explain(e, &dest, "fsync"))?;
            return Ok(temp);
        }
    }

    /// Adopts an existing file (e.g. what postmap built from a temporary source).
    pub fn adopt(path: PathBuf) -> Temp {
        Temp { path, keep: false }
    }

    /// Sets owner, mode and fsyncs.
    pub fn finish(&self, mode: u32, owner: Option<(u32, u32)>) -> Result<()> {
        let file = File::open(&self.path).map_err(|e| explain(e, &self.path, "open"))?;
        if let Some((uid, gid)) = owner {
            nix::unistd::fchown(&file, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                .with_context(|| format!("{}: cannot chown", self.path.display()))?;
        }
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| explain(e, &self.path, "chmod"))?;
        file.sync_all()
            .map_err(|e| explain(e, &self.path, "fsync"))?;
        Ok(())
    }

    /// Renames the temporary file to `dest` (same directory) and fsyncs the directory.
    pub fn persist(mut self, dest: &Path) -> Result<()> {
        fs::rename(&self.path, dest).map_err(|e| explain(e, dest, "rename into place"))?;
        self.keep = true;
        sync_dir(dest)
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// fsyncs the directory holding `path`, so a rename survives a crash.
pub fn sync_dir(path: &Path) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| explain(e, dir, "fsync"))
}

/// Replaces `path` atomically with `bytes`, giving it `mode` and `owner`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32, owner: Option<(u32, u32)>) -> Result<()> {
    let (dir, name) = split(path)?;
    let temp = Temp::write(dir, name, bytes, mode)?;
    temp.finish(mode, owner)?;
    temp.persist(path)
}

/// Directory and file name of a path.
pub fn split(path: &Path) -> Result<(&Path, &str)> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{}: not a file name", path.display()))?;
    Ok((path.parent().unwrap_or(Path::new(".")), name))
}

/// Removes the temporary files a crashed run left in `dir` for the files named `names`
/// (`.NAME.postrelay-tmp.*`, and what postmap built from them). Call only while holding
/// the lock, so no running apply still owns them.
pub fn remove_stale_temps(dir: &Path, names: &[&str]) -> Result<usize> {
    let prefixes: Vec<String> = names.iter().map(|n| format!(".{n}{TEMP_MARK}")).collect();
    let mut removed = 0;
    for entry in fs::read_dir(dir).map_err(|e| explain(e, dir, "list"))? {
        let entry = entry.map_err(|e| explain(e, dir, "list"))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if prefixes.iter().any(|p| name.starts_with(p.as_str())) {
            fs::remove_file(entry.path()).map_err(|e| explain(e, &entry.path(), "remove"))?;
            tracing::info!("removed stale temporary file {}", entry.path().display());
            removed += 1;
        }
    }
    Ok(removed)
}

/// Takes an exclusive flock on the directory, waiting up to `timeout`.
pub fn lock_dir(dir: &Path, timeout: Duration) -> Result<Flock<File>> {
    let deadline = Instant::now() + timeout;
    let mut file = File::open(dir).map_err(|e| explain(e, dir, "open"))?;
    let mut logged = false;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((f, nix::errno::Errno::EWOULDBLOCK)) => {
                if Instant::now() >= deadline {
                    bail!(
                        "{}: another postrelay apply holds the lock; gave up after {} s",
                        dir.display(),
                        timeout.as_secs()
                    );
                }
                if !logged {
                    tracing::info!(
                        "waiting for another postrelay apply to release {}",
                        dir.display()
                    );
                    logged = true;
                }
                file = f;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err((_, e)) => bail!("{}: cannot lock: {e}", dir.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_sets_mode_and_replaces_inode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"old").unwrap();
        let before = fs::metadata(&path).unwrap().ino();
        write_atomic(&path, b"new", 0o640, None).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(meta.mode() & 0o7777, 0o640);
        assert_ne!(meta.ino(), before);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temp left");
    }

    #[test]
    fn dropped_temp_is_removed_and_stale_temps_are_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let t = Temp::write(dir.path(), "x", b"1", 0o600).unwrap();
        let p = t.path.clone();
        assert!(p.exists());
        drop(t);
        assert!(!p.exists());
        fs::write(dir.path().join(format!(".x{TEMP_MARK}1.2.db")), b"").unwrap();
        fs::write(dir.path().join(format!(".other{TEMP_MARK}1.2")), b"").unwrap();
        fs::write(dir.path().join("keep"), b"").unwrap();
        assert_eq!(remove_stale_temps(dir.path(), &["x"]).unwrap(), 1);
        assert!(dir.path().join("keep").exists());
        assert!(dir.path().join(format!(".other{TEMP_MARK}1.2")).exists());
    }

    #[test]
    fn symlinks_and_oversized_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs::write(&real, b"12345").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = refuse_symlink(&link).unwrap_err().to_string();
        assert!(err.contains("is a symbolic link"), "{err}");
        refuse_symlink(&real).unwrap();
        refuse_symlink(&dir.path().join("missing")).unwrap();
        let err = snapshot_limited(&real, 4).unwrap_err().to_string();
        assert!(err.contains("5 bytes, larger than the 4 bytes"), "{err}");
        assert_eq!(snapshot_limited(&real, 5).unwrap().unwrap().bytes, b"12345");
    }

    #[test]
    fn snapshot_of_missing_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(snapshot(&dir.path().join("nope")).unwrap(), None);
        assert!(snapshot(dir.path()).is_err());
    }
}
