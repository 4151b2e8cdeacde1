//! Desired state + host state → a plan: the exact bytes each managed file should hold,
//! why each differs, and which Postfix commands apply must run.
//!
//! [`plan`] is a pure function: everything it knows of the host comes in a
//! [`State`] (read by `state`), so it does no I/O and is unit-tested without Postfix.
//! "Changed" always means the bytes differ: a map source, what its compiled form holds,
//! their permissions, or a main.cf parameter as Postfix reads it. `report` renders a
//! plan, `apply` carries it out.

use std::path::PathBuf;

use crate::desired::Desired;
use crate::managed::{FIXED_PARAMETERS, MapKind, RELAYHOST};
use crate::problems::Problems;
use crate::routing::Table;
use crate::secret::Secret;
use crate::state::{Content, MapFile, State, Target};
use crate::syntax::maincf::{Edit, MainCf};

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
}

/// What must happen to one map.
#[derive(Debug, Clone)]
pub struct MapChange {
    pub kind: MapKind,
    pub source_path: PathBuf,
    /// `None` for map types that need no postmap (texthash).
    pub compiled_path: Option<PathBuf>,
    /// The source as it is now (`None`: missing).
    pub old: Option<Secret<Vec<u8>>>,
    pub new: Secret<Vec<u8>>,
    pub entries: usize,
    /// Whether the source file must be rewritten (content or permissions).
    pub write_source: bool,
    /// Whether postmap must rebuild the compiled map.
    pub rebuild: bool,
    pub reasons: Vec<Reason>,
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
    /// No `[relayhost]`: unlisted senders and bounces use main.cf's relayhost, without
    /// credentials.
    ExistingRelayhost(String),
    /// No `[relayhost]` and none in main.cf: they go to the recipient's MX.
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
}

/// Everything apply would do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub target: Target,
    /// Owner of the files apply writes.
    pub owner: (u32, u32),
    pub maps: Vec<MapChange>,
    pub main_cf: Option<MainCfChange>,
    /// An earlier apply changed the configuration and Postfix has not re-read it since.
    pub reload_pending: bool,
    pub notes: Vec<Note>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.maps.is_empty() && self.main_cf.is_none() && !self.reload_pending
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
        if !self.is_empty() {
            out.extend([Command::Check, Command::Reload]);
        }
        out
    }
}

/// main.cf parameters postrelay manages, with their wanted values.
pub fn parameters(desired: &Desired, target: &Target) -> Vec<(&'static str, String)> {
    let mut params: Vec<(&str, String)> = FIXED_PARAMETERS
        .iter()
        .map(|(name, value)| (*name, value.to_string()))
        .collect();
    for kind in MapKind::ALL {
        let path = target.config_dir.join(kind.file_name());
        params.push((
            kind.parameter(),
            format!("{}:{}", target.map_type, path.display()),
        ));
    }
    if let Some(relayhost) = &desired.relayhost {
        params.push((RELAYHOST, relayhost.relay.as_str().to_string()));
    }
    params
}

/// Computes the plan. Fails only on a main.cf Postfix itself would refuse.
pub fn plan(desired: &Desired, state: &State) -> Result<Plan, Problems> {
    let (main_cf, notes) = plan_main_cf(desired, state)?;
    let maps = state
        .maps
        .iter()
        .filter_map(|m| plan_map(m, desired.table(m.kind), state.owner))
        .collect();
    Ok(Plan {
        target: state.target.clone(),
        owner: state.owner,
        maps,
        main_cf,
        reload_pending: state.reload_pending,
        notes,
    })
}

fn plan_main_cf(
    desired: &Desired,
    state: &State,
) -> Result<(Option<MainCfChange>, Vec<Note>), Problems> {
    let file = &state.main_cf;
    let old = file.snapshot.bytes.expose();
    let doc = MainCf::parse(old);
    let mut problems = Problems::new(&file.link);
    for e in doc.errors() {
        problems.at(e.line, e.message);
    }
    problems.into_result()?;
    let mut notes = Vec::new();
    if desired.relayhost.is_none() {
        notes.push(match doc.get(RELAYHOST).filter(|v| !v.is_empty()) {
            Some(v) => Note::ExistingRelayhost(v),
            None => Note::NoRelayhost,
        });
    }
    let params = parameters(desired, &state.target);
    let params: Vec<(&str, &str)> = params.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let mut new = doc;
    let edits = new.set_all(&params);
    let change = (!edits.is_empty()).then(|| MainCfChange {
        path: file.path.clone(),
        old: old.clone(),
        new: new.render(),
        edits,
    });
    Ok((change, notes))
}

/// Permission problems of one file of a password map.
fn permissions(part: Part, mode: u32, uid: u32, owner: (u32, u32)) -> Vec<Reason> {
    let mut reasons = Vec::new();
    if mode != MapKind::SaslPasswd.mode() {
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
    let secret = m.kind.is_secret();
    let new = wanted.bytes.expose();
    let mut reasons = Vec::new();
    let write_source = match &m.source {
        None => {
            reasons.push(Reason::New);
            true
        }
        Some(s) if s.bytes.expose() != new => {
            reasons.push(Reason::ContentDiffers);
            true
        }
        Some(s) if secret => {
            let found = permissions(Part::Source, s.meta.mode, s.meta.uid, owner);
            let wrong = !found.is_empty();
            reasons.extend(found);
            wrong
        }
        Some(_) => false,
    };
    let rebuild = m.compiled_path.is_some() && {
        match &m.compiled {
            None if m.source.is_none() => true,
            None => {
                reasons.push(Reason::CompiledMissing);
                true
            }
            Some(c) => {
                let found = if secret {
                    permissions(Part::Compiled, c.meta.mode, c.meta.uid, owner)
                } else {
                    Vec::new()
                };
                let wrong = !found.is_empty();
                reasons.extend(found);
                if write_source || wrong {
                    true
                } else if let Some(reason) = content_reason(&c.content, wanted) {
                    reasons.push(reason);
                    true
                } else {
                    false
                }
            }
        }
    };
    (write_source || rebuild).then(|| MapChange {
        kind: m.kind,
        source_path: m.source_path.clone(),
        compiled_path: m.compiled_path.clone(),
        old: m.source.as_ref().map(|s| s.bytes.clone()),
        new: wanted.bytes.clone(),
        entries: wanted.entries.expose().len(),
        write_source,
        rebuild,
        reasons,
    })
}

/// Why a compiled map whose source is right must be rebuilt, if it must.
fn content_reason(content: &Content, wanted: &Table) -> Option<Reason> {
    match content {
        Content::Entries(dump) if dump.expose() == wanted.entries.expose() => None,
        Content::Entries(_) => Some(Reason::CompiledDiffers),
        Content::Unreadable => Some(Reason::CompiledUnreadable),
        // Not dumped: nothing proves it right, so it is rebuilt.
        Content::NotRead => Some(Reason::CompiledDiffers),
    }
}

#[cfg(test)]
mod tests;
