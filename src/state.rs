//! Everything postrelay reads from the host before planning, as one value: the config
//! directory and map type of the instance, main.cf, each managed map's source, its
//! compiled form (metadata, and what `postmap -s` dumps of it), the reload marker and
//! who the files should belong to. All the I/O of planning happens here, so
//! [`crate::plan::plan`] is a pure function of the desired state and a [`State`].
//!
//! Also read: the maps main.cf lists beside postrelay's own in the map parameters
//! ([`KeptMap`]s), which postrelay keeps (after its own) and reports on.
//!
//! Only what planning can use is read: a compiled map is dumped only when its source
//! already holds what the desired state calls for (otherwise it is rebuilt anyway),
//! and the dumps run in parallel (a freshly written main.cf makes each Postfix tool wait
//! up to 2 s for it to "cool down", and these waits overlap). A managed map's dump is
//! compared with the desired table as it is read, and only the verdict kept; a source
//! that holds the desired bytes shares them with the desired table: at 100,000 senders
//! nothing of a map is held twice.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use nix::unistd::{Gid, Uid};

use crate::desired::Desired;
use crate::fs::{self, Links, Meta, ReadError, Snapshot};
use crate::hold;
use crate::managed::{self, MAIN_CF, MapKind, RELOAD_PENDING, expand_config_directory};
use crate::postfix::{self, Entries};
use crate::record::{Identity, PostconfFacts, Record};
use crate::secret::Secret;
use crate::syntax::maincf::{self, MainCf};
use crate::syntax::table::Table;

/// The Postfix instance a run acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Absolute, canonical config directory.
    pub config_dir: PathBuf,
    pub map_type: String,
}

/// A Postfix configuration file (main.cf, master.cf) as read.
#[derive(Debug, Clone)]
pub struct MainCfFile {
    /// `DIR/main.cf`, as named in messages.
    pub link: PathBuf,
    /// The file itself (a symlinked file's target), which apply replaces.
    pub path: PathBuf,
    pub snapshot: Snapshot,
}

/// What a compiled map holds, as far as it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// `postmap -s` dumped exactly the entries of the desired table (compared as they
    /// are read, so that a large map's entries are never all held).
    Desired,
    /// `postmap -s` dumped other entries.
    Other,
    /// postmap cannot read it (corrupt, truncated): drift to repair.
    Unreadable,
    /// Not dumped: its source differs from the desired one, so it is rebuilt anyway.
    NotRead,
    /// Not dumped: the record of the last apply shows it is the very file postmap built
    /// from the source's present bytes (see `record`).
    Recorded,
}

#[derive(Debug, Clone)]
pub struct Compiled {
    pub meta: Meta,
    pub content: Content,
}

/// A managed map's source as read. Its bytes are shared: with the desired table when
/// they are the same (the file is not held twice), and with the plan that shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub bytes: Secret<Arc<Vec<u8>>>,
    pub meta: Meta,
}

impl From<Snapshot> for SourceFile {
    fn from(s: Snapshot) -> SourceFile {
        SourceFile {
            bytes: Secret::new(Arc::new(s.bytes.into_inner())),
            meta: s.meta,
        }
    }
}

/// One managed map as read.
#[derive(Debug, Clone)]
pub struct MapFile {
    pub kind: MapKind,
    pub source_path: PathBuf,
    /// `None`: missing.
    pub source: Option<SourceFile>,
    /// `None` for map types without a compiled form (texthash).
    pub compiled_path: Option<PathBuf>,
    /// `None`: missing (or no compiled form).
    pub compiled: Option<Compiled>,
}

/// What postrelay could read of a map it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept {
    /// Its entries as Postfix reads them (key, value), in the map's order.
    Entries(Secret<Entries>),
    /// A kind of table postrelay does not read (regexp, mysql, a `$parameter`...).
    NotRead(String),
    /// The file is not there: Postfix's lookups through it fail.
    Missing,
    /// It cannot be read, and why.
    Unreadable(String),
}

/// A map listed in one of the managed map parameters that postrelay does not own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptMap {
    /// The parameter it is listed in.
    pub kind: MapKind,
    /// As written in main.cf (`hash:/etc/postfix/sasl/sasl_passwd`).
    pub spec: String,
    pub content: Kept,
}

/// Everything planning needs to know about the host.
#[derive(Debug, Clone)]
pub struct State {
    pub target: Target,
    /// Owner the files postrelay writes should have: root, or the invoking user when not root.
    pub owner: (u32, u32),
    pub main_cf: MainCfFile,
    /// Read only where sender_transport is managed (a relay on port 465, now or
    /// before); `None`: not read, or there is none.
    pub master_cf: Option<MainCfFile>,
    /// The maps this run manages, in [`MapKind::ALL`] order.
    pub maps: Vec<MapFile>,
    /// The other maps of the managed parameters, in the order main.cf lists them.
    pub kept: Vec<KeptMap>,
    /// An earlier apply changed the configuration and Postfix has not re-read it since
    /// (the marker [`RELOAD_PENDING`] is there).
    pub reload_pending: bool,
    /// The first system CA bundle that exists ([`managed::CA_BUNDLES`]).
    pub ca_bundle: Option<PathBuf>,
    /// The record of the last apply, when it can be used (not with `--full`).
    pub record: Option<Record>,
    /// What `postconf -d` said of `default_database_type` this run (or the record
    /// said for the same binary), for apply to record.
    pub postconf: Option<PostconfFacts>,
}

/// How much of the host plan reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Trusts the record of the last apply where it matches (see `record`).
    Recorded,
    /// Reads every compiled map with `postmap -s` (`--full`).
    Full,
}

/// Postfix's own default config directory, the one without `-c`.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/postfix";

/// The config directory a run acts on: `--postfix-dir`, else `[postfix] config_dir`,
/// else `/etc/postfix`; canonical.
/// As root, it must be one root alone can change (it steers what root executes: main.cf
/// names the Postfix programs `postfix` runs), and its path must be one main.cf can hold
/// as a map name (see [`managed::unsafe_char`]).
pub fn config_dir(desired: &Desired, postfix_dir: Option<&Path>) -> Result<PathBuf> {
    let dir = postfix_dir
        .map(Path::to_path_buf)
        .or_else(|| desired.config_dir.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_DIR));
    resolve_config_dir(&dir)
}

/// A config directory as [`config_dir`] checks and resolves it.
pub fn resolve_config_dir(dir: &Path) -> Result<PathBuf> {
    let safe = |p: &Path| match managed::unsafe_char(&p.display().to_string()) {
        Some(c) => bail!(
            "{}: the path holds {c:?}; main.cf names the maps by this path, so it may not hold whitespace, ',', '$', '{{', '}}' or control characters",
            p.display()
        ),
        None => Ok(()),
    };
    safe(dir)?;
    let meta =
        std::fs::metadata(dir).map_err(|e| fs::explain(e, dir, "access config directory"))?;
    if !meta.is_dir() {
        bail!("{}: not a directory", dir.display());
    }
    let resolved = fs::trusted_dir(dir)?;
    safe(&resolved)?;
    Ok(resolved)
}

impl State {
    /// Reads the instance using `config_dir` (see [`config_dir`]) as far as `desired`
    /// needs it, trusting the record of the last apply where it matches.
    pub fn read(desired: &Desired, config_dir: PathBuf) -> Result<State> {
        State::read_to(desired, config_dir, Depth::Recorded)
    }

    /// [`State::read`], to the given depth.
    pub fn read_to(desired: &Desired, config_dir: PathBuf, depth: Depth) -> Result<State> {
        let main_cf = read_main_cf(&config_dir)?;
        let doc = MainCf::parse(main_cf.snapshot.bytes.expose());
        let record = match depth {
            Depth::Recorded => Record::read(&config_dir)?,
            Depth::Full => None,
        };
        // The tables render while postconf answers (when it is asked).
        let (map_type, postconf) = std::thread::scope(|scope| {
            scope.spawn(|| MapKind::ALL.map(|kind| desired.table(kind).len));
            map_type(desired, &config_dir, &doc, record.as_ref())
        })?;
        let suffix = postfix::compiled_suffix(&map_type)?;
        let mut maps = Vec::new();
        for kind in managed_kinds(desired, &doc, &config_dir) {
            let wanted = &desired.table(kind).bytes;
            let source_path = config_dir.join(kind.file_name());
            let limit = fs::MAX_CONFIG_SIZE + wanted.expose().len() as u64;
            let source = fs::read_if_exists(&source_path, limit, Links::Refuse)?.map(|s| {
                match s.bytes.expose() == wanted.expose().as_ref() {
                    true => SourceFile {
                        bytes: wanted.clone(),
                        meta: s.meta,
                    },
                    false => s.into(),
                }
            });
            let compiled_path = suffix
                .filter(|_| !kind.is_regexp())
                .map(|s| config_dir.join(format!("{}{s}", kind.file_name())));
            let compiled = match &compiled_path {
                Some(p) => fs::stat(p)?.map(|meta| Compiled {
                    meta,
                    content: Content::NotRead,
                }),
                None => None,
            };
            maps.push(MapFile {
                kind,
                source_path,
                source,
                compiled_path,
                compiled,
            });
        }
        let target = Target {
            config_dir,
            map_type,
        };
        let kept = read_kept(&doc, &target, desired, record.as_ref(), &mut maps)?;
        // Only a host that has (or had) a relay on port 465 has postrelay's service in it.
        let master_cf = match maps.iter().any(|m| m.kind == MapKind::SenderTransport) {
            true => read_config(&target.config_dir, managed::MASTER_CF)?,
            false => None,
        };
        let reload_pending =
            std::fs::symlink_metadata(target.config_dir.join(RELOAD_PENDING)).is_ok();
        let ca_bundle = managed::system_ca_bundle();
        Ok(State {
            target,
            owner: (Uid::effective().as_raw(), Gid::effective().as_raw()),
            main_cf,
            master_cf,
            maps,
            kept,
            reload_pending,
            ca_bundle,
            record,
            postconf,
        })
    }

    /// Fails unless every file this state was read from still holds what it held (same
    /// bytes, mode and owner; compiled maps: the same file, unmodified): apply calls it
    /// just before replacing anything, so it never overwrites a change made meanwhile.
    pub fn still_holds(&self) -> Result<()> {
        let main_cf = &self.main_cf.snapshot;
        let main_cf = Some((main_cf.bytes.expose().as_slice(), &main_cf.meta));
        let mut files: Vec<(&Path, bool)> =
            vec![(&self.main_cf.path, unchanged(&self.main_cf.path, main_cf)?)];
        if let Some(m) = &self.master_cf {
            let before = Some((m.snapshot.bytes.expose().as_slice(), &m.snapshot.meta));
            files.push((&m.path, unchanged(&m.path, before)?));
        }
        for m in &self.maps {
            let source = m
                .source
                .as_ref()
                .map(|s| (s.bytes.expose().as_slice(), &s.meta));
            files.push((&m.source_path, unchanged(&m.source_path, source)?));
            if let Some(path) = &m.compiled_path {
                let now = fs::stat(path)?;
                files.push((path, now == m.compiled.as_ref().map(|c| c.meta)));
            }
        }
        match files.into_iter().find(|(_, same)| !same) {
            Some((path, _)) => bail!(
                "{}: changed while postrelay was planning; run it again",
                path.display()
            ),
            None => Ok(()),
        }
    }
}

/// Whether `path` still holds `before`'s bytes, with its mode and owner (`None`: still
/// missing).
fn unchanged(path: &Path, before: Option<(&[u8], &Meta)>) -> Result<bool> {
    let limit = before.map_or(0, |(_, meta)| meta.size);
    match fs::read(path, limit, Links::Refuse) {
        Ok(now) => Ok(before.is_some_and(|(bytes, meta)| {
            let was = (meta.mode, meta.uid, meta.gid);
            bytes == now.bytes.expose().as_slice()
                && was == (now.meta.mode, now.meta.uid, now.meta.gid)
        })),
        Err(e) if e.is_not_found() => Ok(before.is_none()),
        Err(ReadError::TooLarge { .. }) => Ok(false),
        Err(e) => bail!("{}: {e}", path.display()),
    }
}

/// The maps a run manages on this host, in [`MapKind::ALL`] order: the core three
/// always; sender_transport when the desired state has a relay on port 465; the regexp
/// tables beside the sender-keyed maps when it has a wildcard sender. A map the desired
/// state no longer needs is still read while main.cf names it or a file of it is
/// there, for the plan to remove it.
fn managed_kinds(desired: &Desired, doc: &MainCf, dir: &Path) -> Vec<MapKind> {
    let had = |kind: MapKind| {
        kind.is_listed(doc, dir) || std::fs::symlink_metadata(dir.join(kind.file_name())).is_ok()
    };
    let mut kinds = MapKind::CORE.to_vec();
    let st = MapKind::SenderTransport;
    if desired.needs_transport_map() || had(st) {
        kinds.push(st);
    }
    let bases: Vec<MapKind> = kinds.clone();
    for w in bases.into_iter().filter_map(MapKind::wildcards) {
        if desired.has_wildcards() || had(w) {
            kinds.push(w);
        }
    }
    kinds
}

/// Reads `DIR/main.cf` (a symlinked one through its target).
/// As root, main.cf and every link to it must be root's and not writable by others
/// (it names the programs `postfix` runs as root).
pub fn read_main_cf(dir: &Path) -> Result<MainCfFile> {
    read_config_file(dir.join(MAIN_CF))
}

/// Reads `DIR/NAME` as [`read_main_cf`] reads main.cf; `None` when there is none.
fn read_config(dir: &Path, name: &str) -> Result<Option<MainCfFile>> {
    let link = dir.join(name);
    match std::fs::symlink_metadata(&link) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        _ => read_config_file(link).map(Some),
    }
}

/// Reads the configuration file `link` (through a link, as root only one root owns).
fn read_config_file(link: PathBuf) -> Result<MainCfFile> {
    let (path, snapshot) = if Uid::effective().is_root() {
        fs::read_resolved(&link, fs::MAX_CONFIG_SIZE, Links::Trusted)
            .map_err(|e| anyhow::anyhow!("{}: {e}", link.display()))?
    } else {
        let path = std::fs::canonicalize(&link).map_err(|e| fs::explain(e, &link, "open"))?;
        let snapshot = fs::read_if_exists(&path, fs::MAX_CONFIG_SIZE, Links::Refuse)?
            .with_context(|| format!("{}: no such file", link.display()))?;
        (path, snapshot)
    };
    Ok(MainCfFile {
        link,
        path,
        snapshot,
    })
}

/// The map type: the desired state's, else `default_database_type` as Postfix reads it
/// (main.cf's plain value if it sets one, else the compiled-in default, which the record
/// keeps for the same `postconf` binary). It must be one postrelay supports and this
/// Postfix has. Also what `postconf -d` said, when it was asked or recorded.
fn map_type(
    desired: &Desired,
    dir: &Path,
    main_cf: &MainCf,
    record: Option<&Record>,
) -> Result<(String, Option<PostconfFacts>)> {
    let mut facts = None;
    let map_type = match &desired.map_type {
        Some(t) => t.clone(),
        None => match main_cf.get("default_database_type") {
            Some(v) if !v.is_empty() && !v.contains('$') => v,
            _ => {
                let f = postconf_facts(dir, record)?;
                let t = f.default_database_type.clone();
                facts = Some(f);
                t
            }
        },
    };
    postfix::compiled_suffix(&map_type)?;
    // hash, btree and texthash are built in; lmdb and cdb are Debian plugin packages.
    if !matches!(map_type.as_str(), "hash" | "btree" | "texthash") {
        let available = postfix::map_types(dir)?;
        if !available.contains(&map_type) {
            bail!(
                "map type {map_type:?} is not available in this Postfix (postconf -m lists: {}); install the postfix-{map_type} package",
                available.join(" ")
            );
        }
    }
    Ok((map_type, facts))
}

/// Postfix's compiled-in `default_database_type`: recorded, for the same `postconf`
/// binary, or asked of it.
fn postconf_facts(dir: &Path, record: Option<&Record>) -> Result<PostconfFacts> {
    let binary = postfix::tool("postconf")?;
    let meta = fs::stat(&binary)?.with_context(|| format!("{}: gone", binary.display()))?;
    if let Some(t) = record.and_then(|r| r.default_database_type(&meta)) {
        tracing::debug!(
            "default_database_type {t} (recorded for {})",
            binary.display()
        );
        return Ok(PostconfFacts {
            binary: Identity::of(&meta),
            default_database_type: t.to_string(),
        });
    }
    Ok(PostconfFacts {
        binary: Identity::of(&meta),
        default_database_type: postfix::default_database_type(dir)?,
    })
}

/// A `postmap -s` to run.
struct Dump {
    map_type: String,
    source: PathBuf,
    /// A managed map's: compared with what the desired state calls for.
    managed: Option<MapKind>,
}

/// What a dump found: whether a managed map holds the desired entries, a kept map's
/// entries; `None` when postmap cannot read the map.
enum Dumped {
    Managed(Option<bool>),
    Kept(Option<Entries>),
}

/// Runs a `postmap -s`.
fn dump(dir: &Path, d: &Dump, desired: &Desired) -> Result<Dumped> {
    Ok(match d.managed {
        Some(kind) => Dumped::Managed(
            postfix::dump_text(dir, &d.map_type, &d.source)?
                .map(|text| desired.table(kind).holds(&postfix::dump_entries(&text))),
        ),
        None => Dumped::Kept(postfix::dump(dir, &d.map_type, &d.source)?),
    })
}

/// Reads the maps the managed parameters list beside postrelay's own and, with them, the
/// compiled managed maps whose source already holds the desired bytes: every
/// `postmap -s` runs in parallel.
fn read_kept(
    doc: &MainCf,
    target: &Target,
    desired: &Desired,
    record: Option<&Record>,
    maps: &mut [MapFile],
) -> Result<Vec<KeptMap>> {
    let dir = &target.config_dir;
    let mut kept = Vec::new();
    let mut dumps: Vec<Dump> = Vec::new();
    // Where each dump's result goes: a managed map (by index) or a kept one.
    let mut slots: Vec<Result<usize, usize>> = Vec::new();
    for (i, m) in maps.iter_mut().enumerate() {
        let wanted = desired.table(m.kind).bytes.expose();
        let source = m
            .source
            .as_ref()
            .filter(|s| s.bytes.expose().as_slice() == wanted.as_slice());
        let (Some(source), Some(compiled)) = (source, m.compiled.as_mut()) else {
            continue;
        };
        let map_type = &target.map_type;
        if record.is_some_and(|r| {
            r.compiled_clean(m.kind, map_type, wanted, &source.meta, &compiled.meta)
        }) {
            tracing::debug!("{}: as recorded; not dumped", m.source_path.display());
            compiled.content = Content::Recorded;
        } else {
            dumps.push(Dump {
                map_type: target.map_type.clone(),
                source: m.source_path.clone(),
                managed: Some(m.kind),
            });
            slots.push(Ok(i));
        }
    }
    // One list a parameter: a hash map's, where its regexp table is listed too.
    let kinds: Vec<MapKind> = maps.iter().map(|m| m.kind).collect();
    for kind in kinds.iter().copied().filter(|k| !k.is_regexp()) {
        let value = doc.get(kind.parameter()).unwrap_or_default();
        for spec in maincf::list(&value) {
            // A hold a crashed run left is the plan's to remove, not a map to keep.
            let own = kinds
                .iter()
                .any(|k| k.parameter() == kind.parameter() && k.is_own(spec, dir));
            if own || hold::is_hold(spec, dir) {
                continue;
            }
            let (content, dump) = kept_content(spec, dir)?;
            if let Some(d) = dump {
                dumps.push(d);
                slots.push(Err(kept.len()));
            }
            kept.push(KeptMap {
                kind,
                spec: spec.to_string(),
                content,
            });
        }
    }
    let results = std::thread::scope(|scope| {
        let handles: Vec<_> = dumps
            .iter()
            .map(|d| scope.spawn(move || dump(dir, d, desired)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("postmap -s thread panicked"))
            .collect::<Vec<_>>()
    });
    for (slot, result) in slots.into_iter().zip(results) {
        match (slot, result?) {
            (Ok(i), Dumped::Managed(holds)) => {
                if let Some(compiled) = &mut maps[i].compiled {
                    compiled.content = match holds {
                        Some(true) => Content::Desired,
                        Some(false) => Content::Other,
                        None => Content::Unreadable,
                    };
                }
            }
            (Err(k), Dumped::Kept(entries)) => {
                kept[k].content = match entries {
                    Some(e) => Kept::Entries(Secret::new(e)),
                    None => Kept::Unreadable("postmap cannot read it".into()),
                }
            }
            _ => unreachable!("a dump's result goes to the map it was run for"),
        }
    }
    Ok(kept)
}

/// What can be read of a kept map without Postfix, and the dump that reads the rest.
fn kept_content(spec: &str, dir: &Path) -> Result<(Kept, Option<Dump>)> {
    let expanded = expand_config_directory(spec, dir);
    let Some((map_type, name)) = expanded.split_once(':') else {
        return Ok((Kept::NotRead("not a TYPE:NAME map".into()), None));
    };
    if expanded.contains('$') {
        return Ok((Kept::NotRead("names a $parameter".into()), None));
    }
    let path = Path::new(name);
    Ok(match map_type {
        "hash" | "btree" | "lmdb" | "cdb" => {
            let suffix = postfix::compiled_suffix(map_type)?.unwrap_or_default();
            let compiled = PathBuf::from(format!("{name}{suffix}"));
            if std::fs::metadata(&compiled).is_err() {
                (Kept::Missing, None)
            } else {
                let dump = Dump {
                    map_type: map_type.to_string(),
                    source: path.to_path_buf(),
                    managed: None,
                };
                (Kept::Unreadable("not read".into()), Some(dump))
            }
        }
        "texthash" => match fs::read(path, fs::MAX_CONFIG_SIZE, Links::Trusted) {
            Ok(s) => {
                let entries = Table::parse(s.bytes.expose())
                    .entries()
                    .into_iter()
                    .map(|e| {
                        let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
                        (text(e.key), text(e.value))
                    })
                    .collect();
                (Kept::Entries(Secret::new(entries)), None)
            }
            Err(e) if e.is_not_found() => (Kept::Missing, None),
            Err(e) => (Kept::Unreadable(e.to_string()), None),
        },
        other => (Kept::NotRead(format!("a table of type {other}")), None),
    })
}
