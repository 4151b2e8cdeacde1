//! Desired state + current state -> a plan: the exact bytes each managed file should
//! hold, why it differs, and which Postfix commands apply must run.
//!
//! A plan is a value. Computing it reads the current files (and what the compiled maps
//! hold, through `postmap -s`) but writes nothing; [`crate::report`] displays it and
//! [`crate::apply`] carries it out. "Changed" always means the bytes differ: a map
//! source, its compiled form, their permissions, or a main.cf parameter as Postfix
//! reads it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nix::unistd::{Gid, Uid};

use crate::desired::{Desired, SenderKey};
use crate::fs::{self, Snapshot};
use crate::postfix;
use crate::syntax::maincf::{Edit, MainCf};
use crate::syntax::table;

/// The Postfix instance a run acts on.
#[derive(Debug, Clone)]
pub struct Target {
    /// Absolute, canonical config directory.
    pub config_dir: PathBuf,
    pub map_type: String,
}

/// One managed lookup table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapKind {
    SaslPasswd,
    SenderRelay,
    TlsPolicy,
}

impl MapKind {
    pub const ALL: [MapKind; 3] = [
        MapKind::SaslPasswd,
        MapKind::SenderRelay,
        MapKind::TlsPolicy,
    ];

    /// File name in the config directory (as in the hand procedure).
    pub fn file_name(self) -> &'static str {
        match self {
            MapKind::SaslPasswd => "sasl_passwd",
            MapKind::SenderRelay => "sender_relay",
            MapKind::TlsPolicy => "tls_policy",
        }
    }

    /// The main.cf parameter that points at this map.
    pub fn parameter(self) -> &'static str {
        match self {
            MapKind::SaslPasswd => "smtp_sasl_password_maps",
            MapKind::SenderRelay => "sender_dependent_relayhost_maps",
            MapKind::TlsPolicy => "smtp_tls_policy_maps",
        }
    }

    /// Whether the map holds passwords: root-only, redacted in diffs.
    pub fn is_secret(self) -> bool {
        self == MapKind::SaslPasswd
    }

    /// Mode of the source and compiled files.
    pub fn mode(self) -> u32 {
        if self.is_secret() { 0o600 } else { 0o644 }
    }

    /// The `(key, value)` entries the desired state calls for.
    pub fn entries(self, desired: &Desired) -> Vec<(String, String)> {
        match self {
            MapKind::SaslPasswd => {
                let senders = desired.senders.iter().filter_map(|s| {
                    let c = s.credentials.as_ref()?;
                    Some((s.key.table_key(), c))
                });
                let relayhost = desired
                    .relayhost
                    .iter()
                    .filter_map(|r| Some((r.relay.clone(), r.credentials.as_ref()?)));
                senders
                    .chain(relayhost)
                    .map(|(k, c)| (k, format!("{}:{}", c.username, c.password.expose())))
                    .collect()
            }
            MapKind::SenderRelay => {
                // Entries with a relay of their own.
                let relayed: Vec<&SenderKey> = desired
                    .senders
                    .iter()
                    .filter(|s| s.relay.is_some())
                    .map(|s| &s.key)
                    .collect();
                desired
                    .senders
                    .iter()
                    .filter_map(|s| match &s.relay {
                        Some(relay) => Some((s.key.table_key(), relay.clone())),
                        // Postfix would fall back from the address to its @domain entry;
                        // DUNNO stops the search and sends it through the relayhost.
                        None if s.key.domain_key().is_some_and(|d| relayed.contains(&&d)) => {
                            Some((s.key.table_key(), "DUNNO".to_string()))
                        }
                        None => None,
                    })
                    .collect()
            }
            MapKind::TlsPolicy => desired
                .tls
                .iter()
                .map(|(relay, tls)| (relay.clone(), tls.as_str().to_string()))
                .collect(),
        }
    }
}

/// main.cf parameters postrelay manages, with their wanted values.
pub fn parameters(desired: &Desired, target: &Target) -> Vec<(&'static str, String)> {
    let mut params = vec![
        ("smtp_sasl_auth_enable", "yes".to_string()),
        ("smtp_sasl_security_options", "noanonymous".to_string()),
        ("smtp_sasl_tls_security_options", "noanonymous".to_string()),
        ("smtp_sender_dependent_authentication", "yes".to_string()),
    ];
    for kind in MapKind::ALL {
        let path = target.config_dir.join(kind.file_name());
        params.push((
            kind.parameter(),
            format!("{}:{}", target.map_type, path.display()),
        ));
    }
    if let Some(relayhost) = &desired.relayhost {
        params.push(("relayhost", relayhost.relay.clone()));
    }
    params
}

/// What must happen to one map.
#[derive(Debug, Clone)]
pub struct MapChange {
    pub kind: MapKind,
    pub source_path: PathBuf,
    /// `None` for map types that need no postmap (texthash).
    pub compiled_path: Option<PathBuf>,
    /// The source as it is now (`None`: missing).
    pub old: Option<Vec<u8>>,
    pub new: Vec<u8>,
    pub entries: usize,
    /// Whether the source file must be rewritten (content or permissions).
    pub write_source: bool,
    /// Whether postmap must rebuild the compiled map.
    pub rebuild: bool,
    /// Why, one short phrase each ("compiled map missing", "mode 0644, want 0600").
    pub reasons: Vec<String>,
}

/// What must happen to main.cf.
#[derive(Debug, Clone)]
pub struct MainCfChange {
    /// The file written (a symlinked main.cf's target).
    pub path: PathBuf,
    pub old: Vec<u8>,
    pub new: Vec<u8>,
    pub edits: Vec<Edit>,
}

/// Left in the config directory while a running Postfix has not yet re-read a changed
/// configuration; removed after the reload. If apply is killed in between, the next run
/// finds it and reloads even though the files are already right.
pub const RELOAD_PENDING: &str = ".postrelay-reload-pending";

/// Everything apply would do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub target: Target,
    pub maps: Vec<MapChange>,
    pub main_cf: Option<MainCfChange>,
    /// An earlier apply changed the configuration but did not get to reload Postfix.
    pub reload_pending: bool,
    /// Things the user should know that are not changes, one sentence each.
    pub notes: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.maps.is_empty() && self.main_cf.is_none() && !self.reload_pending
    }

    /// Whether running daemons must re-read their configuration: main.cf changed, or a
    /// map of a type daemons read only once (texthash) changed.
    pub fn needs_reload(&self) -> bool {
        self.main_cf.is_some()
            || self.reload_pending
            || (self.target.map_type == "texthash" && !self.maps.is_empty())
    }

    /// The commands apply runs, for display.
    pub fn commands(&self) -> Vec<String> {
        let dir = self.target.config_dir.display();
        let mut out: Vec<String> = self
            .maps
            .iter()
            .filter(|m| m.rebuild)
            .map(|m| {
                postfix::postmap_argv(
                    &self.target.config_dir,
                    &self.target.map_type,
                    &m.source_path,
                )
                .join(" ")
            })
            .collect();
        if !self.is_empty() {
            out.push(format!("postfix -c {dir} check    (if Postfix is running)"));
        }
        if self.needs_reload() {
            out.push(format!("postfix -c {dir} reload   (if Postfix is running)"));
        }
        out
    }
}

/// The owner files should have: root, or the invoking user when not root.
pub fn wanted_owner() -> (u32, u32) {
    (Uid::effective().as_raw(), Gid::effective().as_raw())
}

/// Resolves the Postfix config directory and map type for a run.
pub fn target(desired: &Desired, postfix_dir: Option<&Path>) -> Result<Target> {
    let dir = postfix_dir
        .map(Path::to_path_buf)
        .or_else(|| desired.config_dir.clone())
        .unwrap_or_else(|| PathBuf::from("/etc/postfix"));
    let meta =
        std::fs::metadata(&dir).map_err(|e| fs::explain(e, &dir, "access config directory"))?;
    if !meta.is_dir() {
        bail!("{}: not a directory", dir.display());
    }
    let config_dir = std::fs::canonicalize(&dir).map_err(|e| fs::explain(e, &dir, "resolve"))?;
    let map_type = match &desired.map_type {
        Some(t) => t.clone(),
        None => default_map_type(&config_dir)?,
    };
    postfix::compiled_suffix(&map_type)?;
    // hash, btree and texthash are built in; lmdb and cdb are Debian plugin packages.
    if !matches!(map_type.as_str(), "hash" | "btree" | "texthash") {
        let available = postfix::map_types(&config_dir)?;
        if !available.contains(&map_type) {
            bail!(
                "map type {map_type:?} is not available in this Postfix (postconf -m lists: {}); install the postfix-{map_type} package",
                available.join(" ")
            );
        }
    }
    Ok(Target {
        config_dir,
        map_type,
    })
}

/// `default_database_type` as Postfix reads it: main.cf's plain value if it sets one,
/// else the compiled-in default.
fn default_map_type(dir: &Path) -> Result<String> {
    let path = dir.join("main.cf");
    if let Some(snap) = fs::snapshot_limited(&path, fs::MAX_CONFIG_SIZE)?
        && let Some(v) = MainCf::parse(&snap.bytes).get("default_database_type")
        && !v.is_empty()
        && !v.contains('$')
    {
        return Ok(v);
    }
    postfix::default_database_type(dir)
}

/// Computes the plan.
pub fn compute(desired: &Desired, target: &Target) -> Result<Plan> {
    let mut notes = Vec::new();
    let main_cf = plan_main_cf(desired, target, &mut notes)?;
    let maps = plan_maps(desired, target)?;
    let reload_pending = target.config_dir.join(RELOAD_PENDING).exists();
    Ok(Plan {
        target: target.clone(),
        maps,
        main_cf,
        reload_pending,
        notes,
    })
}

fn plan_main_cf(
    desired: &Desired,
    target: &Target,
    notes: &mut Vec<String>,
) -> Result<Option<MainCfChange>> {
    let link = target.config_dir.join("main.cf");
    let path = std::fs::canonicalize(&link).map_err(|e| fs::explain(e, &link, "open"))?;
    let snap = fs::snapshot_limited(&path, fs::MAX_CONFIG_SIZE)?
        .with_context(|| format!("{}: no such file", link.display()))?;
    let doc = MainCf::parse(&snap.bytes);
    let errors = doc.errors();
    if !errors.is_empty() {
        let lines: Vec<String> = errors
            .iter()
            .map(|e| format!("{}, line {}: {}", link.display(), e.line, e.message))
            .collect();
        bail!("{}", lines.join("\n"));
    }
    if desired.relayhost.is_none() {
        match doc.get("relayhost").filter(|v| !v.is_empty()) {
            Some(v) => notes.push(format!(
                "no [relayhost] in the desired state: senders not listed, and bounces, will use the existing relayhost {v:?} without credentials"
            )),
            None => notes.push(
                "no [relayhost] in the desired state and none in main.cf: senders not listed, and bounces, are delivered directly to the recipient's MX"
                    .to_string(),
            ),
        }
    }
    let params = parameters(desired, target);
    let params: Vec<(&str, &str)> = params.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let mut new = doc;
    let edits = new.set_all(&params);
    if edits.is_empty() {
        return Ok(None);
    }
    Ok(Some(MainCfChange {
        path,
        old: snap.bytes,
        new: new.render(),
        edits,
    }))
}

/// Metadata problems of a secret file, as reasons.
fn permission_reasons(what: &str, mode: u32, uid: u32, reasons: &mut Vec<String>) {
    let (want_uid, _) = wanted_owner();
    if mode != 0o600 {
        reasons.push(format!("{what} has mode {mode:04o}, want 0600"));
    }
    if uid != want_uid {
        reasons.push(format!("{what} is owned by uid {uid}, want {want_uid}"));
    }
}

fn plan_maps(desired: &Desired, target: &Target) -> Result<Vec<MapChange>> {
    let suffix = postfix::compiled_suffix(&target.map_type)?;
    let mut changes = Vec::new();
    // Maps whose source is right and whose compiled form must be checked by content.
    let mut to_dump = Vec::new();
    for kind in MapKind::ALL {
        let entries = kind.entries(desired);
        let new = table::render(&entries);
        let source_path = target.config_dir.join(kind.file_name());
        let compiled_path =
            suffix.map(|s| target.config_dir.join(format!("{}{s}", kind.file_name())));
        fs::refuse_symlink(&source_path)?;
        if let Some(compiled) = &compiled_path {
            fs::refuse_symlink(compiled)?;
        }
        let limit = fs::MAX_CONFIG_SIZE + new.len() as u64;
        let old: Option<Snapshot> = fs::snapshot_limited(&source_path, limit)?;
        let mut reasons = Vec::new();
        let mut write_source = false;
        match &old {
            None => {
                reasons.push("new".to_string());
                write_source = true;
            }
            Some(s) if s.bytes != new => {
                reasons.push("content differs".to_string());
                write_source = true;
            }
            Some(s) => {
                if kind.is_secret() {
                    let before = reasons.len();
                    permission_reasons(kind.file_name(), s.mode, s.uid, &mut reasons);
                    write_source = reasons.len() > before;
                }
            }
        }
        let mut rebuild = false;
        if let Some(compiled) = &compiled_path {
            let shown = compiled
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            match std::fs::metadata(compiled) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if old.is_some() {
                        reasons.push(format!("{shown} missing"));
                    }
                    rebuild = true;
                }
                Err(e) => return Err(fs::explain(e, compiled, "stat")),
                Ok(meta) => {
                    use std::os::unix::fs::MetadataExt;
                    if kind.is_secret() {
                        let before = reasons.len();
                        permission_reasons(&shown, meta.mode() & 0o7777, meta.uid(), &mut reasons);
                        rebuild |= reasons.len() > before;
                    }
                    if write_source && old.is_some() {
                        rebuild = true;
                    } else if !rebuild {
                        to_dump.push((changes.len(), compiled.clone(), entries.clone()));
                    }
                }
            }
            if old.is_none() {
                rebuild = true;
            }
        }
        changes.push(MapChange {
            kind,
            source_path,
            compiled_path,
            old: old.map(|s| s.bytes),
            new,
            entries: entries.len(),
            write_source,
            rebuild,
            reasons,
        });
    }
    // postmap -s each compiled map in parallel: a freshly written main.cf makes each
    // Postfix tool wait up to 2 s for it to "cool down", and these waits overlap.
    let dumps: Vec<Result<Option<postfix::Entries>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = to_dump
            .iter()
            .map(|(i, _, _)| {
                let source = &changes[*i].source_path;
                scope.spawn(move || postfix::dump(&target.config_dir, &target.map_type, source))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("postmap -s thread panicked"))
            .collect()
    });
    for ((i, compiled, mut wanted), dump) in to_dump.into_iter().zip(dumps) {
        wanted.sort_unstable();
        let shown = compiled.file_name().unwrap_or_default().to_string_lossy();
        let reason = match dump? {
            None => format!("{shown} unreadable by postmap"),
            Some(dump) if dump != wanted => format!("{shown} differs from its source"),
            Some(_) => continue,
        };
        changes[i].reasons.push(reason);
        changes[i].rebuild = true;
    }
    changes.retain(|c| c.write_source || c.rebuild);
    Ok(changes)
}
