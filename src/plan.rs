//! Desired state + host state → a plan: the exact bytes each managed file should hold,
//! why each differs, and which Postfix commands apply must run.
//!
//! [`plan`] is a pure function: everything it knows of the host comes in a
//! [`State`] (read by `state`), so it does no I/O and is unit-tested without Postfix.
//! "Changed" always means the bytes differ: a map source, what its compiled form holds,
//! their permissions, or a main.cf parameter as Postfix reads it. `report` renders a
//! plan, `apply` carries it out.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::conflicts::{self, Conflict};
use crate::desired::Desired;
use crate::hold::{self, Hold};
use crate::managed::{
    self, CA_BUNDLES, CA_FILE, CA_PATH, CaSource, DEFAULT_TRANSPORT, DEFAULT_TRANSPORT_DEFAULT,
    FIXED_PARAMETERS, MASTER_CF, MapKind, RELAYHOST, SMTPS_ENTRY, SMTPS_SERVICE,
};
use crate::problems::Problems;
use crate::routing::Table;
use crate::secret::Secret;
use crate::state::{Content, KeptMap, MapFile, State, Target};
use crate::syntax::maincf::{self, Edit, MainCf};
use crate::syntax::mastercf::{Foreign, MasterCf};
use crate::syntax::table;

/// Which file of a map a reason is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Source,
    Compiled,
}

/// Why a map must be written or rebuilt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The source does not exist yet.
    New,
    /// The source's bytes differ from the desired ones.
    ContentDiffers,
    /// A password map file has another mode than [`MapKind::mode`].
    Mode {
        part: Part,
        mode: u32,
    },
    /// A password map file has another owner than the one postrelay gives it.
    Owner {
        part: Part,
        uid: u32,
        want: u32,
    },
    CompiledMissing,
    /// postmap cannot read the compiled map.
    CompiledUnreadable,
    /// The compiled map holds other entries than its source.
    CompiledDiffers,
    /// A map the desired state no longer needs (no relay on port 465, no wildcard
    /// sender): its files are removed, and main.cf names it no more.
    Unused,
}

/// How an entry's value changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    Password,
    Username,
    /// Username and password.
    Credentials,
    /// The relay or TLS policy.
    Value,
}

/// How one key of a map changes, comparing what the source holds (as postmap reads it:
/// the first of duplicate keys, keys lowercased) with what the desired state calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryChange {
    Added(String),
    /// Not in the desired state.
    Removed(String),
    Changed(String, Changed),
}

/// What must happen to one map.
#[derive(Debug, Clone)]
pub struct MapChange {
    pub kind: MapKind,
    pub source_path: PathBuf,
    /// `None` for map types that need no postmap (texthash).
    pub compiled_path: Option<PathBuf>,
    /// The source as it is now (`None`: missing).
    pub old: Option<Secret<Arc<Vec<u8>>>>,
    pub new: Secret<Arc<Vec<u8>>>,
    pub entries: usize,
    /// Whether the source file must be rewritten (content or permissions).
    pub write_source: bool,
    /// Whether postmap must rebuild the compiled map.
    pub rebuild: bool,
    /// Whether its source and compiled form are removed ([`Reason::Unused`]).
    pub remove: bool,
    pub reasons: Vec<Reason>,
    /// The keys whose entries change, when the source is rewritten; sorted by key.
    pub entries_changed: Vec<EntryChange>,
}

/// What happens to postrelay's master.cf service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceChange {
    Added,
    Changed,
    /// No relay is on port 465 any more: the service and its mark go, and master.cf is
    /// what it was before postrelay added them.
    Removed,
}

/// What must happen to master.cf (postrelay's service for relays on port 465).
#[derive(Debug, Clone)]
pub struct MasterCfChange {
    /// The file written (a symlinked master.cf's target).
    pub path: PathBuf,
    pub old: Vec<u8>,
    pub new: Vec<u8>,
    pub change: ServiceChange,
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

/// Something the user should know that is not a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// No `[relayhost]` and none in main.cf: unlisted senders and bounces go to the
    /// recipient's MX.
    NoRelayhost,
}

/// A command apply runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `postmap` on a map's source.
    Postmap { source: PathBuf },
    /// `postfix check`, if Postfix is running.
    Check,
    /// `postfix reload`, if Postfix is running.
    Reload,
    /// Hold the mail of senders whose route changes (then check, reload, wait for the
    /// old queue manager to exit), if Postfix is running.
    Hold(Hold),
    /// `postqueue -f`: release held mail, if Postfix is running.
    Release,
}

/// Everything apply would do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub target: Target,
    /// Owner of the files apply writes.
    pub owner: (u32, u32),
    pub maps: Vec<MapChange>,
    pub main_cf: Option<MainCfChange>,
    pub master_cf: Option<MasterCfChange>,
    /// An earlier apply changed the configuration and Postfix has not re-read it since.
    pub reload_pending: bool,
    pub notes: Vec<Note>,
    /// The maps the managed parameters list after postrelay's own, which stay.
    pub kept: Vec<KeptMap>,
    /// Host settings that defeat or shadow what postrelay manages (warnings).
    pub conflicts: Vec<Conflict>,
    /// The mail apply holds in the queue while a running Postfix switches (`hold`).
    pub hold: Option<Hold>,
    /// main.cf still lists the hold of a run that died: it is removed, and the held
    /// mail released.
    pub release: bool,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.maps.is_empty()
            && self.main_cf.is_none()
            && self.master_cf.is_none()
            && !self.reload_pending
    }

    /// The commands apply runs, in order.
    pub fn commands(&self) -> Vec<Command> {
        let mut out: Vec<Command> = self
            .maps
            .iter()
            .filter(|m| m.rebuild && m.compiled_path.is_some())
            .map(|m| Command::Postmap {
                source: m.source_path.clone(),
            })
            .collect();
        // Any change is followed by a reload: daemons notice a rebuilt map each at its
        // own time (trivial-rewrite seconds after smtp), and in between a message could be
        // routed by the old sender_relay and authenticated with the new sasl_passwd.
        if let Some(hold) = &self.hold {
            out.push(Command::Hold(hold.clone()));
        }
        if !self.is_empty() {
            out.extend([Command::Check, Command::Reload]);
        }
        if self.hold.is_some() || self.release {
            out.push(Command::Release);
        }
        out
    }
}

/// main.cf parameters postrelay manages, with their wanted values: each parameter of a
/// map in `kinds` lists postrelay's map first, then the `kept` ones of that parameter in
/// their order; each of a map in `dropped` (no longer needed) lists the kept ones alone.
pub fn parameters(
    desired: &Desired,
    target: &Target,
    kept: &[KeptMap],
    kinds: &[MapKind],
    dropped: &[MapKind],
) -> Vec<(&'static str, String)> {
    let mut params: Vec<(&str, String)> = FIXED_PARAMETERS
        .iter()
        .map(|(name, value)| (*name, value.to_string()))
        .collect();
    let kept_of = |kind: MapKind| {
        kept.iter()
            .filter(move |k| k.kind == kind)
            .map(|k| k.spec.clone())
    };
    // A hash map's parameter lists it, then its regexp table of wildcard senders (when
    // managed), then the kept maps.
    for &kind in kinds.iter().filter(|k| !k.is_regexp()) {
        let mut list = vec![kind.spec(&target.config_dir, &target.map_type)];
        if let Some(w) = kind.wildcards().filter(|w| kinds.contains(w)) {
            list.push(w.spec(&target.config_dir, &target.map_type));
        }
        list.extend(kept_of(kind));
        params.push((kind.parameter(), list.join(", ")));
    }
    for &kind in dropped {
        params.push((
            kind.parameter(),
            kept_of(kind).collect::<Vec<_>>().join(", "),
        ));
    }
    if let Some(relayhost) = &desired.relayhost {
        params.push((RELAYHOST, relayhost.relay.as_str().to_string()));
    }
    params
}

/// Computes the plan. Fails only on a main.cf Postfix itself would refuse.
pub fn plan(desired: &Desired, state: &State) -> Result<Plan, Problems> {
    let (main_cf, release, notes) = plan_main_cf(desired, state)?;
    let master_cf = plan_master_cf(desired, state)?;
    let empty = Table::empty();
    let maps: Vec<MapChange> = state
        .maps
        .iter()
        .filter_map(|m| match needed(m.kind, desired) {
            true => plan_map(m, desired.table(m.kind), state.owner),
            false => plan_removal(m, &empty),
        })
        .collect();
    // A sender_transport that never existed routed nothing: its entries are all new.
    let fresh_transport = state
        .maps
        .iter()
        .any(|m| m.kind == MapKind::SenderTransport && m.source.is_none() && m.compiled.is_none());
    let hold = hold_for(
        &maps,
        main_cf.as_ref(),
        state.reload_pending,
        fresh_transport,
    );
    let doc = MainCf::parse(state.main_cf.snapshot.bytes.expose());
    let mut found = conflicts::settings(&doc, desired, &state.target.config_dir);
    found.extend(conflicts::kept(&state.kept, desired));
    Ok(Plan {
        target: state.target.clone(),
        owner: state.owner,
        maps,
        main_cf,
        master_cf,
        reload_pending: state.reload_pending,
        notes,
        kept: state.kept.clone(),
        conflicts: found,
        hold,
        release,
    })
}

/// Whose mail must be held while Postfix switches (see `hold`): the senders whose
/// sender_relay entry changes, or everyone when the old routing is not known from the
/// map's source alone.
fn hold_for(
    maps: &[MapChange],
    main_cf: Option<&MainCfChange>,
    owed: bool,
    fresh_transport: bool,
) -> Option<Hold> {
    let routing_parameter = |name: &str| name != CA_FILE && name != hold::PARAMETER;
    let main_cf_reroutes =
        main_cf.is_some_and(|m| m.edits.iter().any(|e| routing_parameter(e.name())));
    if owed || main_cf_reroutes {
        return Some(Hold::All);
    }
    // A wildcard's route changes for senders no key names: everyone is held.
    let wildcard = |k: MapKind| {
        matches!(
            k,
            MapKind::SenderRelayWildcards | MapKind::SenderTransportWildcards
        )
    };
    if maps.iter().any(|m| wildcard(m.kind)) {
        return Some(Hold::All);
    }
    // The maps that route by sender: sender_relay, and sender_transport where managed.
    let routing: Vec<&MapChange> = maps
        .iter()
        .filter(|m| matches!(m.kind, MapKind::SenderRelay | MapKind::SenderTransport))
        .collect();
    let unknown = routing.iter().any(|m| {
        m.reasons.iter().any(|r| match r {
            Reason::New => !(fresh_transport && m.kind == MapKind::SenderTransport),
            Reason::CompiledMissing | Reason::CompiledUnreadable | Reason::CompiledDiffers => true,
            _ => false,
        })
    });
    if unknown {
        return Some(Hold::All);
    }
    let mut keys: Vec<String> = routing
        .iter()
        .flat_map(|m| &m.entries_changed)
        .map(|c| entry_key(c).to_string())
        .collect();
    keys.sort();
    keys.dedup();
    (!keys.is_empty()).then_some(Hold::Senders(keys))
}

/// main.cf's change, whether it removes a leftover hold, and notes.
fn plan_main_cf(
    desired: &Desired,
    state: &State,
) -> Result<(Option<MainCfChange>, bool, Vec<Note>), Problems> {
    let file = &state.main_cf;
    let old = file.snapshot.bytes.expose();
    let doc = MainCf::parse(old);
    let mut problems = Problems::new(&file.link);
    for e in doc.errors() {
        problems.at(e.line, e.message);
    }
    problems.into_result()?;
    let mut notes = Vec::new();
    if desired.relayhost.is_none() && doc.get(RELAYHOST).is_none_or(|v| v.is_empty()) {
        notes.push(Note::NoRelayhost);
    }
    let (kinds, unneeded): (Vec<MapKind>, Vec<MapKind>) = state
        .maps
        .iter()
        .map(|m| m.kind)
        .partition(|&k| needed(k, desired));
    // A hash map no longer needed that main.cf still names: its parameter keeps what
    // else it lists.
    let dir = &state.target.config_dir;
    let dropped: Vec<MapKind> = unneeded
        .into_iter()
        .filter(|k| !k.is_regexp() && k.is_listed(&doc, dir))
        .collect();
    let mut params = parameters(desired, &state.target, &state.kept, &kinds, &dropped);
    if let Some(ca) =
        ca_file(desired, &doc, state).map_err(|m| Problems::one(&file.link, None, m))?
    {
        params.push((CA_FILE, ca));
    }
    let leftover = hold::leftover(&doc, &state.target.config_dir);
    let release = leftover.is_some();
    // sender_transport's parameter, when managed, is already without the hold.
    if let Some(rest) = leftover
        && !params.iter().any(|(n, _)| *n == hold::PARAMETER)
    {
        params.push((hold::PARAMETER, rest));
    }
    if let Some(value) =
        default_transport(desired, &doc).map_err(|m| Problems::one(&file.link, m.0, m.1))?
    {
        params.push((DEFAULT_TRANSPORT, value));
    }
    // A map list already holding these elements stays as written (commas or not).
    for (name, value) in &mut params {
        if let Some(current) = doc.get(name)
            && maincf::list(&current) == maincf::list(value)
        {
            *value = current;
        }
    }
    let params: Vec<(&str, &str)> = params.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let mut new = doc;
    let edits = new.set_all(&params);
    let change = (!edits.is_empty()).then(|| MainCfChange {
        path: file.path.clone(),
        old: old.clone(),
        new: new.render(),
        edits,
    });
    Ok((change, release, notes))
}

/// `default_transport` as a relayhost on port 465 needs it: postrelay's service, for
/// bounces and unlisted senders, which never consult sender-dependent maps. Set only
/// over Postfix's default (`smtp`), and set back to it when that relayhost goes;
/// `None`: nothing to set. Another value is an error (line, message).
fn default_transport(
    desired: &Desired,
    doc: &MainCf,
) -> Result<Option<String>, (Option<usize>, String)> {
    let current = doc.get(DEFAULT_TRANSPORT);
    let is = |v: &str| current.as_deref().is_some_and(|c| c == v);
    if desired.routing().relayhost_implicit_tls() {
        if current.is_none() || is(DEFAULT_TRANSPORT_DEFAULT) {
            return Ok(Some(SMTPS_SERVICE.to_string()));
        }
        if is(SMTPS_SERVICE) {
            return Ok(None);
        }
        let line = doc
            .definitions()
            .into_iter()
            .rev()
            .find(|d| d.name == DEFAULT_TRANSPORT)
            .map(|d| d.line);
        return Err((
            line,
            format!(
                "{DEFAULT_TRANSPORT} = {}: a relayhost on port 465 needs {DEFAULT_TRANSPORT} = {SMTPS_SERVICE} (bounces and unlisted senders never consult sender-dependent maps), and postrelay changes it only from Postfix's default, {DEFAULT_TRANSPORT_DEFAULT}: set it back to {DEFAULT_TRANSPORT_DEFAULT}, or choose a relayhost on another port",
                current.unwrap_or_default()
            ),
        ));
    }
    Ok(is(SMTPS_SERVICE).then(|| DEFAULT_TRANSPORT_DEFAULT.to_string()))
}

/// postrelay's service in master.cf as the desired state needs it: there while a relay
/// is on port 465, gone (master.cf as before it was added) when none is. A service of
/// that name postrelay did not write, or no master.cf where one is needed, is an error.
fn plan_master_cf(desired: &Desired, state: &State) -> Result<Option<MasterCfChange>, Problems> {
    let needed = desired.needs_transport_map();
    let Some(file) = &state.master_cf else {
        return match needed {
            true => Err(Problems::one(
                &state.target.config_dir.join(MASTER_CF),
                None,
                "missing; a relay on port 465 needs postrelay's service in it",
            )),
            false => Ok(None),
        };
    };
    let old = file.snapshot.bytes.expose();
    let mut doc = MasterCf::parse(old);
    let foreign = |f: Foreign| Problems::one(&file.link, Some(f.line), f.reason());
    let change = match (needed, doc.own(SMTPS_SERVICE).map_err(foreign)?) {
        (true, None) => ServiceChange::Added,
        (true, Some(_)) => ServiceChange::Changed,
        (false, _) => ServiceChange::Removed,
    };
    let changed = match needed {
        true => doc.set_own(SMTPS_SERVICE, SMTPS_ENTRY),
        false => doc.remove_own(SMTPS_SERVICE),
    }
    .map_err(foreign)?;
    Ok(changed.then(|| MasterCfChange {
        path: file.path.clone(),
        old: old.clone(),
        new: doc.render(),
        change,
    }))
}

/// The CA file to set: a system bundle when a relay's level verifies certificates and
/// main.cf names no CA (both parameters empty, as by Postfix's defaults); `None` when
/// nothing is needed or a CA is configured (never changed). No bundle: the message.
fn ca_file(desired: &Desired, doc: &MainCf, state: &State) -> Result<Option<String>, String> {
    let verifying: Vec<&str> = desired
        .tls
        .iter()
        .filter(|(_, t)| t.verifies_certificate())
        .map(|(r, _)| r.as_str())
        .collect();
    if verifying.is_empty() {
        return Ok(None);
    }
    let source = managed::ca_source(
        doc.get(CA_FILE).as_deref(),
        doc.get(CA_PATH).as_deref(),
        state.ca_bundle.as_deref(),
    );
    match source {
        CaSource::Configured { .. } => Ok(None),
        CaSource::SystemBundle(bundle) => Ok(Some(bundle.display().to_string())),
        CaSource::Missing => Err(format!(
            "relays {} check certificates (tls \"secure\" or \"verify\", the default for a relay named by host name), but Postfix has no CA: {CA_FILE} and {CA_PATH} are empty and none of {} exists; set {CA_FILE} or {CA_PATH} in main.cf, or give those relays tls = \"encrypt\"",
            verifying.join(", "),
            CA_BUNDLES.join(", ")
        )),
    }
}

/// Permission problems of one file of a map.
fn permissions(kind: MapKind, part: Part, mode: u32, uid: u32, owner: (u32, u32)) -> Vec<Reason> {
    let mut reasons = Vec::new();
    if mode != kind.mode() {
        reasons.push(Reason::Mode { part, mode });
    }
    if uid != owner.0 {
        reasons.push(Reason::Owner {
            part,
            uid,
            want: owner.0,
        });
    }
    reasons
}

fn plan_map(m: &MapFile, wanted: &Table, owner: (u32, u32)) -> Option<MapChange> {
    let new = wanted.bytes.expose();
    let mut reasons = Vec::new();
    let write_source = match &m.source {
        None => {
            reasons.push(Reason::New);
            true
        }
        Some(s) if s.bytes.expose().as_slice() != new.as_slice() => {
            reasons.push(Reason::ContentDiffers);
            true
        }
        Some(s) => {
            let found = permissions(m.kind, Part::Source, s.meta.mode, s.meta.uid, owner);
            let wrong = !found.is_empty();
            reasons.extend(found);
            wrong
        }
    };
    let rebuild = m.compiled_path.is_some() && {
        match &m.compiled {
            None if m.source.is_none() => true,
            None => {
                reasons.push(Reason::CompiledMissing);
                true
            }
            Some(c) => {
                let found = permissions(m.kind, Part::Compiled, c.meta.mode, c.meta.uid, owner);
                let wrong = !found.is_empty();
                reasons.extend(found);
                if write_source || wrong {
                    true
                } else if let Some(reason) = content_reason(&c.content) {
                    reasons.push(reason);
                    true
                } else {
                    false
                }
            }
        }
    };
    let entries_changed = match &m.source {
        Some(s) if write_source => entry_changes(m.kind, s.bytes.expose(), wanted),
        _ => Vec::new(),
    };
    (write_source || rebuild).then(|| MapChange {
        kind: m.kind,
        source_path: m.source_path.clone(),
        compiled_path: m.compiled_path.clone(),
        old: m.source.as_ref().map(|s| s.bytes.clone()),
        new: wanted.bytes.clone(),
        entries: wanted.len,
        write_source,
        rebuild,
        remove: false,
        reasons,
        entries_changed,
    })
}

/// Whether the desired state needs map `kind`: the core three always, sender_transport
/// for a relay on port 465, the regexp tables for a wildcard sender.
pub fn needed(kind: MapKind, desired: &Desired) -> bool {
    let base = match kind.base() {
        MapKind::SenderTransport => desired.needs_transport_map(),
        _ => true,
    };
    base && (!kind.is_regexp() || desired.has_wildcards())
}

/// The removal of a map the desired state no longer needs, if a file of it is left:
/// every entry it held goes.
fn plan_removal(m: &MapFile, empty: &Table) -> Option<MapChange> {
    if m.source.is_none() && m.compiled.is_none() {
        return None;
    }
    Some(MapChange {
        kind: m.kind,
        source_path: m.source_path.clone(),
        compiled_path: m.compiled_path.clone(),
        old: m.source.as_ref().map(|s| s.bytes.clone()),
        new: empty.bytes.clone(),
        entries: 0,
        write_source: false,
        rebuild: false,
        remove: true,
        reasons: vec![Reason::Unused],
        entries_changed: m
            .source
            .as_ref()
            .map(|s| entry_changes(m.kind, s.bytes.expose(), empty))
            .unwrap_or_default(),
    })
}

/// The keys whose entries differ between a source's bytes and the desired entries.
fn entry_changes(kind: MapKind, old: &[u8], wanted: &Table) -> Vec<EntryChange> {
    // As postmap reads the source: the first of duplicate keys, keys lowercased.
    let mut held: HashMap<Cow<str>, Cow<str>> = HashMap::new();
    for e in table::entries(old) {
        let key = match text(e.key) {
            k if k.bytes().any(|b| b.is_ascii_uppercase()) => Cow::Owned(k.to_ascii_lowercase()),
            k => k,
        };
        held.entry(key).or_insert(text(e.value));
    }
    let mut out = Vec::new();
    for (key, value) in wanted.expose_entries() {
        match held.remove(key) {
            None => out.push(EntryChange::Added(key.to_string())),
            Some(old) if old != value => out.push(EntryChange::Changed(
                key.to_string(),
                changed(kind, &old, value),
            )),
            Some(_) => {}
        }
    }
    out.extend(
        held.into_keys()
            .map(|k| EntryChange::Removed(k.into_owned())),
    );
    out.sort_by(|a, b| entry_key(a).cmp(entry_key(b)));
    out
}

/// Bytes as text, invalid UTF-8 replaced; borrowed where they are.
fn text(bytes: Cow<[u8]>) -> Cow<str> {
    match bytes {
        Cow::Borrowed(b) => String::from_utf8_lossy(b),
        Cow::Owned(b) => Cow::Owned(String::from_utf8_lossy(&b).into_owned()),
    }
}

fn entry_key(c: &EntryChange) -> &str {
    match c {
        EntryChange::Added(k) | EntryChange::Removed(k) | EntryChange::Changed(k, _) => k,
    }
}

/// What differs between two values of one key (`user:password` in sasl_passwd).
fn changed(kind: MapKind, old: &str, new: &str) -> Changed {
    if !kind.is_secret() {
        return Changed::Value;
    }
    let split = |v: &str| {
        v.split_once(':').map_or((v.to_string(), None), |(u, p)| {
            (u.to_string(), Some(p.to_string()))
        })
    };
    let (old_user, old_pw) = split(old);
    let (new_user, new_pw) = split(new);
    match (old_user == new_user, old_pw == new_pw) {
        (true, _) => Changed::Password,
        (false, true) => Changed::Username,
        (false, false) => Changed::Credentials,
    }
}

/// Why a compiled map whose source is right must be rebuilt, if it must.
fn content_reason(content: &Content) -> Option<Reason> {
    match content {
        Content::Desired => None,
        Content::Other => Some(Reason::CompiledDiffers),
        Content::Recorded => None,
        Content::Unreadable => Some(Reason::CompiledUnreadable),
        // Not dumped: nothing proves it right, so it is rebuilt.
        Content::NotRead => Some(Reason::CompiledDiffers),
    }
}

#[cfg(test)]
mod tests;
