//! The record of the last apply (`DIR/postrelay.state`, the owner's alone, 0600): for
//! each compiled map, the identity of the file postmap built (device, inode, size, mode,
//! owner, mtime and ctime to the nanosecond) and the SHA-256 of the source bytes it was
//! built from; and Postfix's compiled-in `default_database_type`, keyed on the identity
//! of the `postconf` binary that reported it.
//!
//! It lets a plan skip `postmap -s` (and its wait for a fresh main.cf to cool down) when
//! nothing could have changed: a compiled map whose identity is the recorded one, whose
//! source holds exactly the recorded bytes, is what postmap built from them. ctime cannot
//! be set from user space, so any write, rename, chmod or chown since shows; as in git's
//! index, a file whose ctime is not older than the record itself ("racily clean") is not
//! trusted, and apply waits out the clock tick of its own writes before it records them
//! ([`settle`]), so that what it wrote is never racy. Anything that does not match (or a
//! missing, unreadable or other-version record, or `--full`) means the full content check
//! of before. The record holds no secret: hashes and metadata only.

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};
use nix::time::{ClockId, clock_getres, clock_gettime};
use nix::unistd::Uid;
use serde::{Deserialize, Serialize};

use crate::fs::{self, Links, Meta};
use crate::managed::MapKind;

/// The record's file name in the config directory.
pub const FILE: &str = "postrelay.state";

/// The layout of the record; another version is ignored (the full check runs).
const VERSION: u32 = 1;

/// Largest record read: a few hundred bytes per map.
const MAX_SIZE: u64 = 64 * 1024;

/// What identifies one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mode: u32,
    uid: u32,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Identity {
    pub fn of(meta: &Meta) -> Identity {
        Identity {
            dev: meta.dev,
            ino: meta.ino,
            size: meta.size,
            mode: meta.mode,
            uid: meta.uid,
            mtime: meta.mtime,
            ctime: meta.ctime,
        }
    }
}

/// One compiled map as apply left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapRecord {
    /// The map's file name (`sasl_passwd`).
    pub map: String,
    pub map_type: String,
    /// The source as apply left it.
    pub source: Identity,
    /// SHA-256, in hex, of the source bytes postmap built it from.
    pub source_sha256: String,
    pub compiled: Identity,
}

/// What `postconf` reported, and which `postconf` binary reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostconfFacts {
    pub binary: Identity,
    pub default_database_type: String,
}

/// The record of the last apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    version: u32,
    pub maps: Vec<MapRecord>,
    pub postconf: Option<PostconfFacts>,
    /// The record file's own ctime: a recorded file is trusted only if it is older.
    #[serde(skip)]
    written: (i64, i64),
}

impl Record {
    pub fn new(maps: Vec<MapRecord>, postconf: Option<PostconfFacts>) -> Record {
        Record {
            version: VERSION,
            maps,
            postconf,
            written: (0, 0),
        }
    }

    /// The record in `dir`; `None` when there is none or it cannot be used (then the
    /// full check runs). A record someone else could have written is an error, as for
    /// every file that steers what root does.
    pub fn read(dir: &Path) -> Result<Option<Record>> {
        let path = dir.join(FILE);
        let snapshot = match fs::read(&path, MAX_SIZE, Links::Refuse) {
            Ok(s) => s,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => {
                tracing::info!("{}: not used ({e}); full check", path.display());
                return Ok(None);
            }
        };
        let me = Uid::effective().as_raw();
        if snapshot.meta.uid != me || snapshot.meta.mode & 0o077 != 0 {
            bail!(
                "{}: owned by uid {} with mode {:04o}; postrelay's record must be the owner's alone (uid {me}, mode 0600): remove it, and the next apply writes it again",
                path.display(),
                snapshot.meta.uid,
                snapshot.meta.mode
            );
        }
        match serde_json::from_slice::<Record>(snapshot.bytes.expose()) {
            Ok(r) if r.version == VERSION => Ok(Some(Record {
                written: snapshot.meta.ctime,
                ..r
            })),
            Ok(r) => {
                tracing::info!("{}: version {}; full check", path.display(), r.version);
                Ok(None)
            }
            Err(e) => {
                tracing::info!("{}: unreadable ({e}); full check", path.display());
                Ok(None)
            }
        }
    }

    /// Whether the compiled form of `kind`, with metadata `compiled`, is what postmap
    /// built from `source` (with metadata `source_meta`) as a `map_type` map, as
    /// recorded. The source's bytes are hashed only when the source is not the very file
    /// apply left (touched, or rewritten with the same bytes).
    pub fn compiled_clean(
        &self,
        kind: MapKind,
        map_type: &str,
        source: &[u8],
        source_meta: &Meta,
        compiled: &Meta,
    ) -> bool {
        let (now, source_now) = (Identity::of(compiled), Identity::of(source_meta));
        self.maps.iter().any(|m| {
            m.map == kind.file_name()
                && m.map_type == map_type
                && m.compiled == now
                && now.ctime < self.written
                && ((m.source == source_now && source_now.ctime < self.written)
                    || m.source_sha256 == sha256_hex(source))
        })
    }

    /// The recorded `default_database_type`, if the `postconf` binary is the one that
    /// reported it.
    pub fn default_database_type(&self, postconf: &Meta) -> Option<&str> {
        self.postconf
            .as_ref()
            .filter(|f| f.binary == Identity::of(postconf) && f.binary.ctime < self.written)
            .map(|f| f.default_database_type.as_str())
    }

    /// Whether `other` records the same files and facts (however old the files are).
    pub fn same_as(&self, other: &Record) -> bool {
        self.maps == other.maps && self.postconf == other.postconf
    }

    /// Writes the record to `dir`, atomically, mode 0600, owned by `owner`.
    pub fn write(&self, dir: &Path, owner: (u32, u32)) -> Result<()> {
        let text = serde_json::to_vec_pretty(self).expect("a record serialises");
        fs::write_atomic(&dir.join(FILE), &text, 0o600, Some(owner))
    }
}

/// SHA-256 of `bytes`, in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Waits until the clock file times are taken from has left the tick of `newest` (a
/// ctime), so that a change made from now on gets a later ctime than every file already
/// written, and the record written next is newer than all of them. File systems whose
/// times have whole seconds only (`newest` has no nanoseconds) wait for the next second.
/// Returns how long it waited.
pub fn settle(newest: (i64, i64)) -> Duration {
    let coarse = ClockId::CLOCK_REALTIME_COARSE;
    let tick = clock_getres(coarse).map_or(10_000_000, |t| t.tv_nsec().max(1));
    let past = |now: (i64, i64)| {
        if newest.1 == 0 {
            now.0 > newest.0
        } else {
            now.0 * 1_000_000_000 + now.1 > newest.0 * 1_000_000_000 + newest.1 + tick
        }
    };
    let start = std::time::Instant::now();
    loop {
        let Ok(now) = clock_gettime(coarse) else {
            std::thread::sleep(Duration::from_millis(20));
            break;
        };
        if past((now.tv_sec(), now.tv_nsec())) {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    start.elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_the_standard_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    fn meta(ino: u64, ctime: (i64, i64)) -> Meta {
        Meta {
            mode: 0o600,
            uid: 0,
            gid: 0,
            dev: 1,
            ino,
            size: 100,
            mtime: (10, 0),
            ctime,
        }
    }

    #[test]
    fn only_an_older_identical_file_built_from_the_same_bytes_is_clean() {
        let compiled = meta(7, (100, 5));
        let source = meta(6, (100, 4));
        let touched = meta(6, (100, 7));
        let mut record = Record::new(
            vec![MapRecord {
                map: "sasl_passwd".into(),
                map_type: "hash".into(),
                source: Identity::of(&source),
                source_sha256: sha256_hex(b"@a u:pw\n"),
                compiled: Identity::of(&compiled),
            }],
            None,
        );
        record.written = (100, 6);
        let kind = MapKind::SaslPasswd;
        let pw = b"@a u:pw\n";
        let clean = |r: &Record, kind, map_type, bytes: &[u8], source: &Meta, compiled: &Meta| {
            r.compiled_clean(kind, map_type, bytes, source, compiled)
        };
        assert!(clean(&record, kind, "hash", pw, &source, &compiled));
        // The source touched since apply: its bytes are hashed, and match or not.
        assert!(clean(&record, kind, "hash", pw, &touched, &compiled));
        assert!(!clean(
            &record,
            kind,
            "hash",
            b"@a u:pw2\n",
            &touched,
            &compiled
        ));
        // Another type, another map, another compiled inode.
        assert!(!clean(&record, kind, "btree", pw, &source, &compiled));
        assert!(!clean(
            &record,
            MapKind::TlsPolicy,
            "hash",
            pw,
            &source,
            &compiled
        ));
        assert!(!clean(
            &record,
            kind,
            "hash",
            pw,
            &source,
            &meta(8, (100, 5))
        ));
        // Racily clean: changed in the same tick as the record was written.
        record.written = (100, 5);
        assert!(!clean(&record, kind, "hash", pw, &source, &compiled));
    }

    #[test]
    fn settle_passes_the_tick_of_a_file_just_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        let meta = fs::stat(&path).unwrap().unwrap();
        settle(meta.ctime);
        std::fs::write(&path, b"y").unwrap();
        let after = fs::stat(&path).unwrap().unwrap();
        assert!(
            after.ctime > meta.ctime,
            "{:?} !> {:?}",
            after.ctime,
            meta.ctime
        );
    }
}
