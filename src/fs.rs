//! The file system: one hardened reader for every input file, atomic durable writes
//! that keep permissions, and the config-directory lock.
//!
//! Reading ([`read`]): every file postrelay reads (the desired state, password files,
//! main.cf, map sources) is opened with `O_NOFOLLOW | O_NONBLOCK`, checked through the
//! opened descriptor to be a regular file (so a FIFO cannot hang a run and a directory
//! or device is refused), and read with a bound: never more than its limit plus the one
//! byte that shows it is too large. A symbolic link at the path is refused, or followed
//! hop by hop only while every link is owned by root or the invoking user
//! ([`Links::Trusted`]); the final open still refuses a link.
//!
//! Writing: a file postrelay replaces is never truncated in place. Its new content goes
//! to a temporary file in the same directory, created exclusively with its final
//! restrictive mode (so a password file is never readable by others, whatever the
//! umask), fsynced, then renamed over the old name, and the directory is fsynced.
//! Temporary names all contain [`TEMP_MARK`] so a later run (holding the lock) can
//! remove what a crashed run left behind.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{Gid, Uid};

use crate::secret::Secret;

/// Part of every temporary file name postrelay creates.
pub const TEMP_MARK: &str = ".postrelay-tmp.";

/// What postmap names a hash or btree map while it writes it (`__db.NAME.db`, renamed
/// to `NAME.db` when complete; seen with strace on Postfix 3.7).
pub const POSTMAP_SCRATCH: &str = "__db.";

/// Largest main.cf or lookup-table source postrelay reads before refusing it as not
/// what it claims to be (a map source may also be as large as what postrelay would
/// write there).
pub const MAX_CONFIG_SIZE: u64 = 10 * 1024 * 1024;

const MIB: u64 = 1024 * 1024;

/// The metadata postrelay preserves, checks, or compares to see that a file is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits (`& 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    /// Seconds and nanoseconds.
    pub mtime: (i64, i64),
    /// Seconds and nanoseconds: moved by the kernel on every change of content, mode,
    /// owner or link, and settable by no one (`record` relies on it).
    pub ctime: (i64, i64),
}

impl Meta {
    fn of(m: &fs::Metadata) -> Meta {
        Meta {
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// A file's bytes (masked in `Debug`: it may be a password map) and its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub bytes: Secret<Vec<u8>>,
    pub meta: Meta,
}

impl Snapshot {
    /// Same bytes, mode and owner (the inode and times may differ).
    pub fn same_content(&self, other: &Snapshot) -> bool {
        self.bytes == other.bytes
            && (self.meta.mode, self.meta.uid, self.meta.gid)
                == (other.meta.mode, other.meta.uid, other.meta.gid)
    }
}

/// How [`read`] treats the path it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Refuse a link at the path: files postrelay manages itself, and paths already
    /// resolved.
    Refuse,
    /// Input that steers what postrelay does. As root, root's trust rule (see
    /// [`resolve_trusted`]) holds for the path, and the file itself must be root's and
    /// not writable by group or others. Otherwise, links are followed while each is
    /// owned by root or the invoking user: a link another user planted must not choose
    /// what postrelay reads.
    Trusted,
}

/// Why a file could not be read. Its `Display` does not name the file: callers do.
#[derive(Debug)]
pub enum ReadError {
    Open(io::Error),
    /// A link where none is followed.
    Symlink {
        uid: u32,
    },
    /// A link owned by someone other than root or the invoking user.
    UntrustedSymlink {
        uid: u32,
    },
    /// As root: a file, directory or link on the way that someone other than root could
    /// change (`path` names it).
    Untrusted {
        path: PathBuf,
        why: String,
    },
    /// What it is instead: "a directory", "a FIFO", "a special file".
    NotRegular(&'static str),
    TooLarge {
        limit: u64,
    },
    Read(io::Error),
}

impl ReadError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Open(e) if e.kind() == io::ErrorKind::NotFound)
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Open(e) => write!(f, "cannot open: {}{}", reason(e), sudo_hint(e)),
            ReadError::Symlink { uid } => write!(
                f,
                "is a symbolic link (owned by uid {uid}); postrelay manages this file itself and does not follow links: remove the link"
            ),
            ReadError::UntrustedSymlink { uid } => write!(
                f,
                "is a symbolic link owned by uid {uid}, not by root or you; refusing to follow it"
            ),
            ReadError::Untrusted { path, why } => write!(
                f,
                "{} {why}: as root, postrelay reads only what root alone can change",
                path.display()
            ),
            ReadError::NotRegular(what) => write!(f, "not a regular file but {what}"),
            ReadError::TooLarge { limit } if limit % MIB == 0 => {
                write!(f, "larger than {} MiB", limit / MIB)
            }
            ReadError::TooLarge { limit } => write!(f, "larger than {limit} bytes"),
            ReadError::Read(e) => write!(f, "read error: {}", reason(e)),
        }
    }
}

impl std::error::Error for ReadError {}

/// An I/O error's reason as the C library words it ("No such file or directory").
pub fn reason(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => Errno::from_raw(n).desc().to_owned(),
        None => e.to_string(),
    }
}

fn sudo_hint(e: &io::Error) -> &'static str {
    if e.kind() == io::ErrorKind::PermissionDenied && !Uid::effective().is_root() {
        " (run postrelay as root, e.g. with sudo)"
    } else {
        ""
    }
}

/// Wraps an I/O error with the path, and a hint to use sudo when it is a permission problem.
pub fn explain(e: io::Error, path: &Path, what: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{}: cannot {what}: {}{}",
        path.display(),
        reason(&e),
        sudo_hint(&e)
    )
}

/// Reads the regular file at `path`: at most `limit` bytes, through a descriptor opened
/// without following a final link (see the module doc).
pub fn read(path: &Path, limit: u64, links: Links) -> Result<Snapshot, ReadError> {
    read_resolved(path, limit, links).map(|(_, snapshot)| snapshot)
}

/// [`read`], also returning the path the links led to.
pub fn read_resolved(
    path: &Path,
    limit: u64,
    links: Links,
) -> Result<(PathBuf, Snapshot), ReadError> {
    let root = Uid::effective().is_root();
    let path = match links {
        Links::Refuse => path.to_path_buf(),
        Links::Trusted if root => resolve_trusted(path)?,
        Links::Trusted => resolve_owned(path)?,
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| match e.raw_os_error() {
            Some(nix::libc::ELOOP) => ReadError::Symlink {
                uid: fs::symlink_metadata(&path).map_or(0, |m| m.uid()),
            },
            _ => ReadError::Open(e),
        })?;
    let meta = file.metadata().map_err(ReadError::Read)?;
    if !meta.is_file() {
        let ft = meta.file_type();
        return Err(ReadError::NotRegular(if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a FIFO"
        } else {
            "a special file"
        }));
    }
    if links == Links::Trusted && root {
        // On the descriptor: what was opened, not what a path names now.
        trusted_entry(&path, &meta, false)?;
    }
    if meta.len() > limit {
        return Err(ReadError::TooLarge { limit });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(ReadError::Read)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge { limit });
    }
    Ok((
        path,
        Snapshot {
            bytes: Secret::new(bytes),
            meta: Meta::of(&meta),
        },
    ))
}

/// Standard input, read to its end, at most `limit` bytes (`--config -`).
pub fn read_stdin(limit: u64) -> Result<Secret<Vec<u8>>, ReadError> {
    let mut bytes = Vec::new();
    io::stdin()
        .lock()
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(ReadError::Read)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge { limit });
    }
    Ok(Secret::new(bytes))
}

/// Whether root may trust a file or directory: owned by root and not writable by group
/// or others, except (`sticky_ok`, for directories above) a root-owned directory with
/// the sticky bit, like /tmp, where others cannot replace root's entries.
fn trusted_entry(path: &Path, meta: &fs::Metadata, sticky_ok: bool) -> Result<(), ReadError> {
    let mode = meta.mode() & 0o7777;
    let why = if meta.uid() != 0 {
        format!("is owned by uid {}, not root", meta.uid())
    } else if mode & 0o022 != 0 && !(sticky_ok && mode & 0o1000 != 0) {
        format!("is writable by group or others (mode {mode:04o})")
    } else {
        return Ok(());
    };
    Err(ReadError::Untrusted {
        path: path.to_path_buf(),
        why,
    })
}

/// Root's trust rule for a path: every directory from `/` down and every link on the
/// way (at any component, not only the last) must be root's, and no directory may be
/// writable by group or others unless it is a root-owned sticky one; links are followed
/// only under that rule. Returns the path the links lead to (its last component
/// unchecked: the caller checks what it opens). A missing component ends the walk.
pub fn resolve_trusted(path: &Path) -> Result<PathBuf, ReadError> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map_err(ReadError::Open)?.join(path)
    };
    let mut pending: std::collections::VecDeque<std::ffi::OsString> = absolute
        .components()
        .skip(1)
        .map(|c| c.as_os_str().to_owned())
        .collect();
    let mut current = PathBuf::from("/");
    let check_dir = |dir: &Path| -> Result<(), ReadError> {
        let meta = fs::metadata(dir).map_err(ReadError::Open)?;
        trusted_entry(dir, &meta, true)
    };
    check_dir(&current)?;
    let mut hops = 0;
    while let Some(name) = pending.pop_front() {
        match name.to_str() {
            Some(".") => continue,
            Some("..") => {
                current.pop();
                continue;
            }
            _ => {}
        }
        let next = current.join(&name);
        let meta = match fs::symlink_metadata(&next) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(pending.iter().fold(next, |p, c| p.join(c)));
            }
            Err(e) => return Err(ReadError::Open(e)),
        };
        if meta.file_type().is_symlink() {
            if meta.uid() != 0 {
                return Err(ReadError::Untrusted {
                    path: next,
                    why: format!("is a symbolic link owned by uid {}, not root", meta.uid()),
                });
            }
            hops += 1;
            if hops > 40 {
                return Err(ReadError::Open(io::Error::from_raw_os_error(
                    nix::libc::ELOOP,
                )));
            }
            let target = fs::read_link(&next).map_err(ReadError::Open)?;
            if target.is_absolute() {
                current = PathBuf::from("/");
            }
            for c in target.components().rev() {
                if !matches!(c, std::path::Component::RootDir) {
                    pending.push_front(c.as_os_str().to_owned());
                }
            }
            continue;
        }
        if pending.is_empty() {
            return Ok(next);
        }
        trusted_entry(&next, &meta, true)?;
        current = next;
    }
    Ok(current)
}

/// Follows links at `path` while each is owned by root or the invoking user; returns
/// the first path that is not a link (or does not exist).
fn resolve_owned(path: &Path) -> Result<PathBuf, ReadError> {
    let me = Uid::effective().as_raw();
    let mut path = path.to_path_buf();
    for _ in 0..40 {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            return Ok(path);
        };
        if !meta.file_type().is_symlink() {
            return Ok(path);
        }
        if meta.uid() != 0 && meta.uid() != me {
            return Err(ReadError::UntrustedSymlink { uid: meta.uid() });
        }
        let target = fs::read_link(&path).map_err(ReadError::Open)?;
        path = match path.parent() {
            Some(dir) if target.is_relative() => dir.join(target),
            _ => target,
        };
    }
    Err(ReadError::Open(io::Error::from_raw_os_error(
        nix::libc::ELOOP,
    )))
}

/// The directory `path` as root may trust it (see [`resolve_trusted`]; the directory
/// itself must be root's and not writable by group or others, sticky or not), or,
/// when not root, its canonical path.
pub fn trusted_dir(path: &Path) -> Result<PathBuf> {
    let fail = |e: ReadError| anyhow::anyhow!("{}: {e}", path.display());
    if !Uid::effective().is_root() {
        return fs::canonicalize(path).map_err(|e| explain(e, path, "resolve"));
    }
    let dir = resolve_trusted(path).map_err(fail)?;
    let meta = fs::metadata(&dir).map_err(|e| explain(e, path, "access"))?;
    if !meta.is_dir() {
        bail!("{}: not a directory", path.display());
    }
    trusted_entry(&dir, &meta, false).map_err(fail)?;
    Ok(dir)
}

/// A file only its owner may read (a password file, an API key): [`read`] under root's
/// trust rule, refused when group or others may read it. The error does not name the
/// path, but says how to repair it.
pub fn read_private(path: &Path, limit: u64) -> Result<Snapshot, String> {
    let s = read(path, limit, Links::Trusted).map_err(|e| e.to_string())?;
    match s.meta.mode & 0o077 {
        0 => Ok(s),
        _ => Err(format!(
            "readable by group or others (mode {:04o}); run: chmod 600 {}",
            s.meta.mode,
            path.display()
        )),
    }
}

/// [`read`], with a missing file as `None`; errors name the path.
pub fn read_if_exists(path: &Path, limit: u64, links: Links) -> Result<Option<Snapshot>> {
    match read(path, limit, links) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => bail!("{}: {e}", path.display()),
    }
}

/// The metadata of `path` itself (`None`: missing); a symbolic link is refused.
pub fn stat(path: &Path) -> Result<Option<Meta>> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            bail!(
                "{}: {}",
                path.display(),
                ReadError::Symlink { uid: m.uid() }
            )
        }
        Ok(m) => Ok(Some(Meta::of(&m))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(explain(e, path, "stat")),
    }
}

/// A temporary file in the destination's directory, removed on drop unless persisted.
#[derive(Debug)]
pub struct Temp {
    pub path: PathBuf,
    keep: bool,
}

impl Temp {
    /// Creates `dir/.NAME.postrelay-tmp.PID.N` exclusively and writes `bytes`, fsynced.
    /// The file is created with a mode no wider than `mode & 0600` and widened only
    /// afterwards, so no umask can expose it.
    pub fn write(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<Temp> {
        // Errors name the file being replaced; the temporary name means nothing to a user.
        let dest = dir.join(name);
        loop {
            // Unpredictable: nobody can plant a link where postrelay (or postmap, which
            // writes NAME.db beside it) is about to write.
            let path = dir.join(format!(
                ".{name}{TEMP_MARK}{}.{}",
                std::process::id(),
                unpredictable()
            ));
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

    /// Sets owner and mode, and fsyncs.
    pub fn finish(&self, mode: u32, owner: Option<(u32, u32)>) -> Result<()> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(&self.path)
            .map_err(|e| explain(e, &self.path, "open"))?;
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

/// Gives the regular file at `path` a second name in its directory,
/// `.NAME.postrelay-tmp.PID.N` then `suffix` (a hard link, named as the caller names the
/// temporaries of that file, so that [`remove_stale_temps`] removes one a crashed run
/// left): after `path` is replaced, the file stays on disk as it was (bytes, inode, mode,
/// owner, times), without being read, and [`Temp::persist`] puts it back. `Ok(None)`:
/// nothing at `path`. Fails for anything but a regular file, and where the file system
/// has no hard links.
pub fn link_aside(path: &Path, name: &str, suffix: &str) -> Result<Option<Temp>> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(explain(e, path, "stat")),
        Ok(m) if !m.file_type().is_file() => bail!("{}: not a regular file", path.display()),
        Ok(_) => {}
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    loop {
        let aside = dir.join(format!(
            ".{name}{TEMP_MARK}{}.{}{suffix}",
            std::process::id(),
            unpredictable()
        ));
        match fs::hard_link(path, &aside) {
            Ok(()) => {
                return Ok(Some(Temp {
                    path: aside,
                    keep: false,
                }));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(explain(e, path, "link")),
        }
    }
}

/// 64 bits no other process can guess, as 16 hex digits: SipHash under the standard
/// library's per-process random keys, of a counter and the time.
pub fn unpredictable() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}", h.finish())
}

/// Fails unless nothing (not even a dangling link) is at `path`: for a name a tool
/// postrelay runs is about to create.
pub fn ensure_absent(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(explain(e, path, "stat")),
        Ok(_) => bail!(
            "{}: exists, though postrelay did not create it; refusing to write through it",
            path.display()
        ),
    }
}

/// Creates (or keeps) the empty marker file `path`, never through a link, and fsyncs
/// it and its directory.
pub fn create_marker(path: &Path) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(nix::libc::ELOOP) => anyhow::anyhow!(
                "{}: is a symbolic link; postrelay does not follow links it did not create: remove it",
                path.display()
            ),
            _ => explain(e, path, "create"),
        })?;
    file.sync_all().map_err(|e| explain(e, path, "fsync"))?;
    sync_dir(path)
}

/// fsyncs the directory holding `path`, so a rename survives a crash.
pub fn sync_dir(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
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

/// Removes `path` if it exists, and fsyncs its directory when it did.
pub fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(explain(e, path, "remove")),
    }
}

/// Removes the temporary files a crashed run left in `dir` for the files named `names`
/// (`.NAME.postrelay-tmp.*`, what postmap built from them, and postmap's own
/// `__db.` scratch file of a build that was interrupted). Call only while holding
/// the lock, so no running apply still owns them.
pub fn remove_stale_temps(dir: &Path, names: &[&str]) -> Result<usize> {
    let prefixes: Vec<String> = names
        .iter()
        .flat_map(|n| {
            let temp = format!(".{n}{TEMP_MARK}");
            [format!("{POSTMAP_SCRATCH}{temp}"), temp]
        })
        .collect();
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

/// Takes an exclusive flock on the lock file `path`, waiting up to `timeout`. The file
/// is created 0600 if missing, opened without following a link, and must belong to the
/// invoking user (root) and be private: nobody else can open it, so nobody else can
/// hold the lock and block every apply (as anyone could flock a world-readable
/// directory).
pub fn lock(path: &Path, timeout: Duration) -> Result<Flock<File>> {
    let deadline = Instant::now() + timeout;
    let mut file = OpenOptions::new()
        .read(true)
        .create(true)
        .write(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
        .or_else(|e| match e.raw_os_error() {
            // A read-only file system: an existing lock file still locks.
            Some(nix::libc::EROFS) => OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
                .open(path),
            _ => Err(e),
        })
        .map_err(|e| explain(e, path, "open"))?;
    let meta = file.metadata().map_err(|e| explain(e, path, "stat"))?;
    let me = Uid::effective().as_raw();
    if !meta.is_file() || meta.uid() != me || meta.mode() & 0o077 != 0 {
        bail!(
            "{}: the lock file must be a private file of uid {me} (it is mode {:04o}, uid {}); remove it",
            path.display(),
            meta.mode() & 0o7777,
            meta.uid()
        );
    }
    let mut logged = false;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((f, Errno::EWOULDBLOCK)) => {
                if Instant::now() >= deadline {
                    bail!(
                        "{}: another postrelay apply holds the lock; gave up after {} s",
                        path.display(),
                        timeout.as_secs()
                    );
                }
                if !logged {
                    tracing::info!("waiting for another postrelay apply ({})", path.display());
                    logged = true;
                }
                file = f;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err((_, e)) => bail!("{}: cannot lock: {e}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn err(path: &Path, limit: u64, links: Links) -> String {
        read(path, limit, links).unwrap_err().to_string()
    }

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
    fn a_file_linked_aside_survives_its_replacement_and_comes_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let before = fs::metadata(&path).unwrap();
        let aside = link_aside(&path, "m", ".db").unwrap().unwrap();
        let name = aside
            .path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            name.starts_with(&format!(".m{TEMP_MARK}")) && name.ends_with(".db"),
            "{name}"
        );
        write_atomic(&path, b"new", 0o600, None).unwrap();
        aside.persist(&path).unwrap();
        let after = fs::metadata(&path).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!((after.ino(), after.mode()), (before.ino(), before.mode()));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temp left");
        // Dropped (the replacement stays): the second name goes, a crashed run's is
        // removed as a stale temporary.
        drop(link_aside(&path, "m", ".db").unwrap());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        std::mem::forget(link_aside(&path, "m", ".db").unwrap());
        assert_eq!(remove_stale_temps(dir.path(), &["m"]).unwrap(), 1);
        // Nothing there; a link or a directory is not linked.
        assert!(
            link_aside(&dir.path().join("none"), "none", "")
                .unwrap()
                .is_none()
        );
        symlink(&path, dir.path().join("l")).unwrap();
        assert!(link_aside(&dir.path().join("l"), "l", "").is_err());
        assert!(link_aside(dir.path(), "d", "").is_err());
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
        // postmap's own scratch file of an interrupted build.
        let scratch = format!("{POSTMAP_SCRATCH}.x{TEMP_MARK}1.2.db");
        fs::write(dir.path().join(&scratch), b"").unwrap();
        fs::write(dir.path().join(format!(".other{TEMP_MARK}1.2")), b"").unwrap();
        fs::write(dir.path().join("keep"), b"").unwrap();
        assert_eq!(remove_stale_temps(dir.path(), &["x"]).unwrap(), 2);
        assert!(dir.path().join("keep").exists());
        assert!(dir.path().join(format!(".other{TEMP_MARK}1.2")).exists());
    }

    #[test]
    fn reads_regular_files_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs::write(&real, b"12345").unwrap();
        let s = read(&real, 5, Links::Refuse).unwrap();
        assert_eq!(s.bytes.expose(), b"12345");
        assert_eq!(s.meta.size, 5);
        assert_eq!(err(&real, 4, Links::Refuse), "larger than 4 bytes");
        let big = dir.path().join("big");
        File::create(&big).unwrap().set_len(MIB + 1).unwrap();
        assert_eq!(err(&big, MIB, Links::Refuse), "larger than 1 MiB");
    }

    #[test]
    fn refuses_what_is_not_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert_eq!(
            err(&fifo, 10, Links::Refuse),
            "not a regular file but a FIFO"
        );
        assert_eq!(
            err(dir.path(), 10, Links::Refuse),
            "not a regular file but a directory"
        );
        let missing = dir.path().join("missing");
        let e = read(&missing, 10, Links::Refuse).unwrap_err();
        assert!(e.is_not_found());
        assert_eq!(e.to_string(), "cannot open: No such file or directory");
        assert!(
            read_if_exists(&missing, 10, Links::Refuse)
                .unwrap()
                .is_none()
        );
        assert!(stat(&missing).unwrap().is_none());
    }

    #[test]
    fn links_are_refused_or_followed_only_when_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs::write(&real, b"x").unwrap();
        let link = dir.path().join("link");
        symlink("real", &link).unwrap();
        let chain = dir.path().join("chain");
        symlink(&link, &chain).unwrap();
        let me = Uid::effective().as_raw();
        assert_eq!(
            err(&link, 10, Links::Refuse),
            format!(
                "is a symbolic link (owned by uid {me}); postrelay manages this file itself and does not follow links: remove the link"
            )
        );
        assert!(
            stat(&link)
                .unwrap_err()
                .to_string()
                .contains("symbolic link")
        );
        for p in [&link, &chain] {
            let s = read(p, 10, Links::Trusted).unwrap();
            assert_eq!(s.bytes.expose(), b"x");
        }
        let lp = dir.path().join("loop");
        symlink("loop", &lp).unwrap();
        assert!(err(&lp, 10, Links::Trusted).starts_with("cannot open: Too many"));
    }
}
