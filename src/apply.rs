//! Carries out a plan under the config-directory lock: atomically, durably, and with
//! rollback if Postfix rejects the result; returns what it did as data ([`Step`]s).
//!
//! Order matters. Under the lock, stale temporaries of a crashed run are removed, the
//! host is read and the plan computed. Every map that must change is first built
//! completely under temporary names (source written 0600/0644 from creation, `postmap`
//! run on the temporary source, compiled file chmod-ed and fsynced; texthash maps need
//! no postmap): a postmap failure leaves nothing changed. Then every file the plan was
//! computed from is checked to still hold what it held. Only then are the files renamed
//! into place, compiled map before its source, and main.cf last. If the instance runs,
//! `postfix check` and `postfix reload` follow every change (maps included: daemons
//! notice a rebuilt map each at its own time); if either fails, every replaced file gets
//! back its previous bytes, mode and owner (each is kept under a temporary name, a hard
//! link, until the run ends, and renamed back). When the plan moves senders to other relays
//! (`plan.hold`), the switch holds their mail in the queue while the daemons of the old
//! and the new configuration overlap, and releases it after (`held`): otherwise a
//! message routed by the old sender_relay and authenticated with the new sasl_passwd
//! bounces or carries its password to another relay. When main.cf does not change, or
//! mail is held, `postfix check` runs before the first file is replaced.
//! Until Postfix has re-read the files, the marker [`RELOAD_PENDING`] stays in the
//! config directory, so a run killed before reloading, or run with `--no-reload` or
//! without root, leaves the reload to the next one. An empty plan touches nothing: no
//! write, no postmap, no reload.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::unistd::Uid;

use crate::desired::{Desired, MAP_TYPES};
use crate::failpoint;
use crate::fs::{self, Links, Meta, Snapshot, Temp};
use crate::hold;
use crate::managed::{LOCK, MAIN_CF, MapKind, RELOAD_PENDING, replaced_names};
use crate::plan::{self, MapChange, Plan};
use crate::postfix::{self, Control};
use crate::record::{self, Identity, MapRecord, Record};
use crate::state::{self, Depth, State};

mod held;

use held::Holder;
pub use held::SWITCH_TIMEOUT;

/// How apply behaves beyond the plan.
#[derive(Debug, Clone)]
pub struct Options {
    /// Run `postfix check` / `postfix reload` on a running instance.
    pub reload: bool,
    /// How long to wait for another apply's lock.
    pub lock_timeout: Duration,
    /// Check every compiled map with `postmap -s`, whatever the record says (`--full`).
    pub depth: Depth,
}

/// Why apply did not talk to Postfix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// `--no-reload`.
    NoReload,
    /// Only root may ask whether Postfix runs.
    NotRoot,
    /// `postfix status` says it does not run (it reads the files when it starts).
    NotRunning,
}

/// One thing apply did, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Wrote the source and/or rebuilt the compiled form of `plan.maps[i]`.
    Map(usize),
    /// Replaced main.cf.
    MainCf,
    /// Replaced master.cf (postrelay's service added, changed or removed).
    MasterCf,
    Skipped(Skip),
    Ran(Control),
    /// Postfix still has to re-read its configuration: the reload is owed to the next run.
    ReloadOwed,
    /// Listed the hold (`plan.hold`) in main.cf.
    Held,
    /// The plan called for a hold, but master.cf has no `retry` service.
    NotHeld,
    /// The queue managers running before the reload exited after this long.
    Switched(Duration),
    /// They had not exited after [`SWITCH_TIMEOUT`].
    SwitchSlow,
    /// Ran `postqueue -f`: the held mail leaves now.
    Released,
    /// `postqueue -f` failed (logged): the held mail leaves at its next retry.
    NotReleased,
}

/// What apply did: the plan it carried out and its steps (none when in sync).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub plan: Plan,
    pub steps: Vec<Step>,
}

/// Locks the config directory, plans, and makes the host match the desired state.
pub fn run(desired: &Desired, postfix_dir: Option<&Path>, options: &Options) -> Result<Outcome> {
    let dir = state::config_dir(desired, postfix_dir)?;
    let _lock = fs::lock(&dir.join(LOCK), options.lock_timeout)?;
    fs::remove_stale_temps(&dir, &replaced_names())?;
    // A symlinked main.cf is written in its target's directory.
    if let Ok(real) = std::fs::canonicalize(dir.join(MAIN_CF))
        && let (Some(real_dir), Some(name)) =
            (real.parent(), real.file_name().and_then(|n| n.to_str()))
        && real_dir != dir
    {
        fs::remove_stale_temps(real_dir, &[name])?;
    }
    let state = State::read_to(desired, dir, options.depth)?;
    let plan = plan::plan(desired, &state)?;
    let steps = if plan.is_empty() {
        Vec::new()
    } else {
        execute(&plan, &state, options)?
    };
    // main.cf lists no hold now (a plan removes one a crashed run left): its table, if
    // still there, is that run's.
    fs::remove_if_exists(&plan.target.config_dir.join(hold::FILE))?;
    // Bookkeeping: the changes are in place whatever becomes of it.
    if let Err(e) = remember(desired, &state, &plan) {
        tracing::warn!("could not record this apply ({e:#}); the next plan checks in full");
    }
    Ok(Outcome { plan, steps })
}

/// Records the compiled maps as they are now (see `record`), unless the record already
/// says so: every map's source holds the desired bytes, and each compiled map is either
/// the one this run built or the one planning checked.
fn remember(desired: &Desired, state: &State, plan: &Plan) -> Result<()> {
    let dir = &plan.target.config_dir;
    let mut found = Vec::new();
    for m in &state.maps {
        let Some(compiled_path) = &m.compiled_path else {
            continue;
        };
        let change = plan.maps.iter().find(|c| c.kind == m.kind);
        // Each file is either the one this run wrote or the one planning read.
        let as_read = |now: Option<Meta>, before: Option<Meta>, written: bool| {
            now.filter(|n| written || Some(*n) == before)
        };
        let source = as_read(
            fs::stat(&m.source_path)?,
            m.source.as_ref().map(|s| s.meta),
            change.is_some_and(|c| c.write_source),
        );
        let compiled = as_read(
            fs::stat(compiled_path)?,
            m.compiled.as_ref().map(|c| c.meta),
            change.is_some_and(|c| c.rebuild),
        );
        if let (Some(source), Some(compiled)) = (source, compiled) {
            found.push((m.kind, &m.source_path, source, compiled_path, compiled));
        }
    }
    let newest = found.iter().map(|f| f.2.ctime.max(f.4.ctime)).max();
    if let Some(newest) = newest {
        record::settle(newest);
    }
    // The hashes (tens of milliseconds for 100,000 senders) one thread each.
    let hashes: Vec<String> = std::thread::scope(|scope| {
        let threads: Vec<_> = found
            .iter()
            .map(|f| scope.spawn(|| record::sha256_hex(desired.table(f.0).bytes.expose())))
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("hash thread panicked"))
            .collect()
    });
    let mut maps = Vec::new();
    for ((kind, source_path, source, compiled_path, compiled), hash) in
        found.into_iter().zip(hashes)
    {
        // A file changed while this run settled is left to the next full check.
        if fs::stat(source_path)? == Some(source) && fs::stat(compiled_path)? == Some(compiled) {
            maps.push(MapRecord {
                map: kind.file_name().to_string(),
                map_type: plan.target.map_type.clone(),
                source: Identity::of(&source),
                source_sha256: hash,
                compiled: Identity::of(&compiled),
            });
        }
    }
    let new = Record::new(maps, state.postconf.clone());
    if Record::read(dir)?.is_some_and(|old| old.same_as(&new)) {
        return Ok(());
    }
    new.write(dir, plan.owner)
}

/// A map built under temporary names, ready to be renamed into place (nothing for a
/// map that is removed).
struct Staged {
    source: Option<Temp>,
    compiled: Option<Temp>,
}

/// Writes each map's new source under a temporary name, then builds the compiled maps
/// from them, every postmap at once (each is one process, mostly I/O). The fail points
/// of the builds are hit once all of them have finished, so a run killed at one leaves
/// no postmap running.
fn stage(plan: &Plan) -> Result<Vec<Staged>> {
    let dir = &plan.target.config_dir;
    let mut sources = Vec::new();
    for m in &plan.maps {
        if m.remove {
            sources.push(None);
            continue;
        }
        let name = m.kind.file_name();
        sources.push(Some(Temp::write(dir, name, m.new.expose(), m.kind.mode())?));
        failpoint::hit(&format!("staged:{name}"));
    }
    let built: Vec<Result<Option<Temp>>> = std::thread::scope(|scope| {
        let builds: Vec<_> = plan
            .maps
            .iter()
            .zip(&sources)
            .map(|(m, source)| {
                scope.spawn(move || match source {
                    Some(source) => build(plan, m, source),
                    None => Ok(None),
                })
            })
            .collect();
        builds
            .into_iter()
            .map(|b| b.join().expect("postmap thread panicked"))
            .collect()
    });
    let mut staged = Vec::new();
    for ((m, source), compiled) in plan.maps.iter().zip(sources).zip(built) {
        let compiled = compiled?;
        if compiled.is_some() {
            failpoint::hit(&format!("postmap:{}", m.kind.file_name()));
        }
        staged.push(Staged { source, compiled });
    }
    Ok(staged)
}

/// Builds `m`'s compiled map from its staged `source`, if the plan rebuilds it.
fn build(plan: &Plan, m: &MapChange, source: &Temp) -> Result<Option<Temp>> {
    let (true, Some(path)) = (m.rebuild, &m.compiled_path) else {
        return Ok(None);
    };
    let dir = &plan.target.config_dir;
    let suffix = postfix::compiled_suffix(&plan.target.map_type)?.unwrap_or_default();
    // Nothing may be there already (postmap would write through a planted link); owned
    // before postmap runs, so a half-built file is removed if it fails. postmap writes a
    // hash or btree map as `__db.NAME.db` and renames it when done: owned too.
    let (source_dir, name) = fs::split(&source.path)?;
    let mut built = source.path.clone().into_os_string();
    built.push(suffix);
    let built = PathBuf::from(built);
    let scratch = source_dir.join(format!("{}{name}{suffix}", fs::POSTMAP_SCRATCH));
    fs::ensure_absent(&built)?;
    fs::ensure_absent(&scratch)?;
    let (built, _scratch) = (Temp::adopt(built), Temp::adopt(scratch));
    postfix::postmap(dir, &plan.target.map_type, &source.path)
        .with_context(|| format!("cannot build {}", path.display()))?;
    built.finish(m.kind.mode(), Some(plan.owner))?;
    Ok(Some(built))
}

/// Files replaced so far, with what they held before.
#[derive(Default)]
struct Journal {
    replaced: Vec<(PathBuf, Before)>,
}

/// What a replaced file was.
enum Before {
    Missing,
    /// The file itself under a temporary name, to be renamed back: large maps are
    /// never read into memory to be restored.
    Aside(Temp),
    /// Its bytes, mode and owner, where the file system has no hard links.
    Copy(Snapshot),
}

impl Journal {
    fn replace(&mut self, path: &Path, write: impl FnOnce() -> Result<()>) -> Result<()> {
        let (name, suffix) = temp_name(path)?;
        let before = match fs::link_aside(path, name, suffix) {
            Ok(Some(aside)) => Before::Aside(aside),
            Ok(None) => Before::Missing,
            Err(e) => {
                tracing::debug!("{e:#}; keeping a copy instead");
                match fs::read_if_exists(path, u64::MAX, Links::Refuse)? {
                    Some(s) => Before::Copy(s),
                    None => Before::Missing,
                }
            }
        };
        write()?;
        self.replaced.push((path.to_path_buf(), before));
        Ok(())
    }

    /// Puts every replaced file back as it was, newest first.
    fn roll_back(self) -> Result<()> {
        for (path, before) in self.replaced.into_iter().rev() {
            match before {
                Before::Aside(aside) => aside.persist(&path)?,
                Before::Copy(s) => fs::write_atomic(
                    &path,
                    s.bytes.expose(),
                    s.meta.mode,
                    Some((s.meta.uid, s.meta.gid)),
                )?,
                Before::Missing => {
                    std::fs::remove_file(&path).map_err(|e| fs::explain(e, &path, "remove"))?
                }
            }
            failpoint::hit(&format!("rolled-back:{}", path.display()));
            tracing::info!("restored {}", path.display());
        }
        Ok(())
    }
}

/// How the temporaries of `path` are named (see [`fs::Temp::write`]): after the file,
/// or, for a compiled map, after its source with the compiled suffix last, as postmap
/// names what it builds from a temporary source.
fn temp_name(path: &Path) -> Result<(&str, &str)> {
    let (_, name) = fs::split(path)?;
    let compiled = MAP_TYPES
        .iter()
        .filter_map(|t| postfix::compiled_suffix(t).ok().flatten());
    for (kind, suffix) in MapKind::ALL
        .into_iter()
        .flat_map(|k| compiled.clone().map(move |s| (k, s)))
    {
        if name.strip_prefix(kind.file_name()) == Some(suffix) {
            return Ok((kind.file_name(), suffix));
        }
    }
    Ok((name, ""))
}

/// Whether apply will talk to a running Postfix, or why not.
fn instance(dir: &Path, options: &Options) -> Result<Result<(), Skip>> {
    Ok(if !options.reload {
        Err(Skip::NoReload)
    } else if !Uid::effective().is_root() {
        Err(Skip::NotRoot)
    } else if postfix::is_running(dir)? {
        Ok(())
    } else {
        Err(Skip::NotRunning)
    })
}

fn execute(plan: &Plan, state: &State, options: &Options) -> Result<Vec<Step>> {
    let dir = &plan.target.config_dir;
    // `postfix status` (tens of milliseconds) runs while the maps are staged.
    let (instance, staged) = std::thread::scope(|scope| {
        let status = scope.spawn(|| instance(dir, options));
        let staged = stage(plan);
        (
            status.join().expect("postfix status thread panicked"),
            staged,
        )
    });
    let (instance, staged) = (instance?, staged?);
    let running = instance.is_ok();
    state.still_holds()?;
    let mut steps = Vec::new();
    let holder = match &plan.hold {
        Some(hold) if running => Holder::new(state, hold, &mut steps)?,
        _ => None,
    };
    // `postfix check` reads main.cf, not the maps. When main.cf stays as it is, it runs
    // before the first rename, leaving only the reload between the first replaced map
    // and the restart of qmgr and trivial-rewrite. A hold (see `hold`) adds one
    // parameter to main.cf: what Postfix checks first is what it runs now. A new main.cf
    // can only be checked in place, after the maps.
    let check_first = running && (holder.is_some() || plan.main_cf.is_none());
    if check_first {
        run_control(dir, Control::Check, &mut steps).context("no file was replaced")?;
    }

    // The reload marker: there from before the first rename until Postfix has re-read
    // the files (or is known not to run), so a run that dies or may not reload leaves
    // the reload owed to the next one.
    let pending = dir.join(RELOAD_PENDING);
    if !plan.reload_pending {
        fs::create_marker(&pending)?;
    }
    let mut journal = Journal::default();
    let result = match &holder {
        Some(holder) => holder.switch(plan, staged, &mut journal, &mut steps),
        None => switch_at_once(plan, state, staged, &mut journal, &mut steps).and_then(|()| {
            if let Err(skip) = instance {
                steps.push(Step::Skipped(skip));
            } else if !check_first {
                run_control(dir, Control::Check, &mut steps)?;
            }
            if running {
                run_control(dir, Control::Reload, &mut steps)?;
            }
            Ok(())
        }),
    };
    if let Err(err) = result {
        return Err(roll_back(plan, holder.as_ref(), journal, &steps, err));
    }
    // Reloaded, or known not to run (it reads the files when it starts).
    if running || instance == Err(Skip::NotRunning) {
        fs::remove_if_exists(&pending)?;
    } else {
        steps.push(Step::ReloadOwed);
    }
    if running && plan.release && holder.is_none() {
        held::release(dir, &mut steps);
    }
    Ok(steps)
}

/// Puts every replaced file back. After a hold was listed, Postfix may run it and smtp
/// processes may have read the new maps: the way back holds again, like the way there.
fn roll_back(
    plan: &Plan,
    holder: Option<&Holder>,
    journal: Journal,
    steps: &[Step],
    err: anyhow::Error,
) -> anyhow::Error {
    if let Err(rollback) = journal.roll_back() {
        return err.context(format!(
            "AND restoring the previous files failed: {rollback:#}"
        ));
    }
    let running_hold = steps.contains(&Step::Held) && steps.contains(&Step::Ran(Control::Reload));
    if let (true, Some(holder)) = (running_hold, holder)
        && let Err(e) = holder.back()
    {
        return err.context(format!(
            "restored the previous files, but Postfix may still run the hold: {e:#}; run postrelay apply again"
        ));
    }
    // Back to the files before this run: what Postfix runs, unless an earlier apply
    // already owed it a reload.
    if !plan.reload_pending
        && let Err(e) = fs::remove_if_exists(&plan.target.config_dir.join(RELOAD_PENDING))
    {
        return err.context(format!("restored the previous files, but {e:#}"));
    }
    err.context("restored the previous files; nothing changed")
}

/// Replaces the maps and main.cf in one go (Postfix not running, not reloaded by
/// postrelay, or no route changes).
fn switch_at_once(
    plan: &Plan,
    state: &State,
    staged: Vec<Staged>,
    journal: &mut Journal,
    steps: &mut Vec<Step>,
) -> Result<()> {
    let main_cf = plan.main_cf.as_ref().map(|m| m.new.as_slice());
    commit(plan, state, staged, main_cf, journal)?;
    steps.extend(replaced(plan));
    Ok(())
}

/// The steps that name what [`commit`] replaced.
fn replaced(plan: &Plan) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    if plan.master_cf.is_some() {
        steps.push(Step::MasterCf);
    }
    steps.extend((0..plan.maps.len()).map(Step::Map));
    if plan.main_cf.is_some() {
        steps.push(Step::MainCf);
    }
    steps
}

fn run_control(dir: &Path, action: Control, steps: &mut Vec<Step>) -> Result<()> {
    postfix::control(dir, action)?;
    failpoint::hit(action.as_str());
    steps.push(Step::Ran(action));
    Ok(())
}

fn commit(
    plan: &Plan,
    state: &State,
    staged: Vec<Staged>,
    main_cf: Option<&[u8]>,
    journal: &mut Journal,
) -> Result<()> {
    // The service first: the maps and main.cf that name it come after.
    if let Some(m) = &plan.master_cf {
        write_config(&m.path, &m.new, journal)?;
        failpoint::hit("master.cf");
    }
    for (m, s) in plan.maps.iter().zip(staged) {
        let name = m.kind.file_name();
        if m.remove {
            // The compiled form first, as it was built after its source.
            for path in m.compiled_path.iter().chain([&m.source_path]) {
                if fs::stat(path)?.is_some() {
                    journal.replace(path, || fs::remove_if_exists(path))?;
                }
            }
            continue;
        }
        if let (Some(compiled), Some(path)) = (s.compiled, &m.compiled_path) {
            journal.replace(path, || compiled.persist(path))?;
            failpoint::hit(&format!("renamed-compiled:{name}"));
        }
        if let (true, Some(source)) = (m.write_source, s.source) {
            journal.replace(&m.source_path, || source.persist(&m.source_path))?;
            failpoint::hit(&format!("renamed-source:{name}"));
        }
    }
    if let Some(bytes) = main_cf {
        write_main_cf(state, bytes, journal)?;
        failpoint::hit("main.cf");
    }
    Ok(())
}

/// Replaces main.cf (a symlinked one's target), keeping its mode and owner.
fn write_main_cf(state: &State, bytes: &[u8], journal: &mut Journal) -> Result<()> {
    write_config(&state.main_cf.path, bytes, journal)
}

/// Replaces a configuration file (main.cf, master.cf: the target of a link), keeping
/// its mode and owner.
fn write_config(path: &Path, bytes: &[u8], journal: &mut Journal) -> Result<()> {
    let before = fs::read_if_exists(path, u64::MAX, Links::Refuse)?
        .with_context(|| format!("{}: vanished", path.display()))?;
    journal.replace(path, || {
        let owner = Some((before.meta.uid, before.meta.gid));
        fs::write_atomic(path, bytes, before.meta.mode, owner)
    })
}
