//! Carries out a plan under the config-directory lock: atomically, durably, and with
//! rollback if Postfix rejects the result.
//!
//! Order matters. Every new map is first built completely under temporary names
//! (source written 0600/0644 from creation, `postmap` run on the temporary source,
//! compiled file chmod-ed and fsynced): a postmap failure leaves nothing changed.
//! Only then are the files renamed into place, compiled map before its source, and
//! main.cf last. If the instance runs, `postfix check` and (when main.cf changed)
//! `postfix reload` follow; if either fails, every replaced file gets back its previous
//! bytes, mode and owner. An empty plan touches nothing: no write, no postmap, no reload.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::unistd::Uid;

use crate::desired::Desired;
use crate::failpoint;
use crate::fs::{self, Snapshot, Temp};
use crate::plan::{self, MapKind, Plan};
use crate::postfix;
use crate::report;

/// How apply behaves beyond the plan.
#[derive(Debug, Clone)]
pub struct Options {
    /// Run `postfix check` / `postfix reload` on a running instance.
    pub reload: bool,
    /// How long to wait for another apply's lock.
    pub lock_timeout: Duration,
}

/// What apply did.
#[derive(Debug)]
pub struct Outcome {
    pub plan: Plan,
    /// One line per change made and per command run.
    pub lines: Vec<String>,
}

/// Locks the config directory, plans, and makes the host match the desired state.
pub fn run(desired: &Desired, postfix_dir: Option<&Path>, options: &Options) -> Result<Outcome> {
    let target = plan::target(desired, postfix_dir)?;
    let _lock = fs::lock_dir(&target.config_dir, options.lock_timeout)?;
    let mut names: Vec<&str> = MapKind::ALL.iter().map(|k| k.file_name()).collect();
    names.push("main.cf");
    fs::remove_stale_temps(&target.config_dir, &names)?;
    // A symlinked main.cf is written in its target's directory.
    if let Ok(real) = std::fs::canonicalize(target.config_dir.join("main.cf"))
        && let (Some(dir), Some(name)) = (real.parent(), real.file_name().and_then(|n| n.to_str()))
        && dir != target.config_dir
    {
        fs::remove_stale_temps(dir, &[name])?;
    }
    let plan = plan::compute(desired, &target)?;
    if plan.is_empty() {
        return Ok(Outcome {
            plan,
            lines: Vec::new(),
        });
    }
    let lines = execute(&plan, options)?;
    Ok(Outcome { plan, lines })
}

/// A map built under temporary names, ready to be renamed into place.
struct Staged {
    source: Temp,
    compiled: Option<Temp>,
}

fn stage(plan: &Plan) -> Result<Vec<Staged>> {
    let dir = &plan.target.config_dir;
    let owner = plan::wanted_owner();
    let mut staged = Vec::new();
    for m in &plan.maps {
        let mode = m.kind.mode();
        let name = m.kind.file_name();
        let source = Temp::write(dir, name, &m.new, mode)?;
        failpoint::hit(&format!("staged:{name}"));
        let mut compiled = None;
        if let (true, Some(path)) = (m.rebuild, &m.compiled_path) {
            let suffix = postfix::compiled_suffix(&plan.target.map_type)?.unwrap_or_default();
            let mut built = source.path.clone().into_os_string();
            built.push(suffix);
            // Owned before postmap runs, so a half-built file is removed if it fails.
            let built = Temp::adopt(PathBuf::from(built));
            postfix::postmap(dir, &plan.target.map_type, &source.path)
                .with_context(|| format!("cannot build {}", path.display()))?;
            built.finish(mode, Some(owner))?;
            failpoint::hit(&format!("postmap:{name}"));
            compiled = Some(built);
        }
        staged.push(Staged { source, compiled });
    }
    Ok(staged)
}

/// Files replaced so far, with what they held before (`None`: did not exist).
#[derive(Default)]
struct Journal {
    replaced: Vec<(PathBuf, Option<Snapshot>)>,
}

impl Journal {
    fn replace(&mut self, path: &Path, write: impl FnOnce() -> Result<()>) -> Result<()> {
        let before = fs::snapshot(path)?;
        write()?;
        self.replaced.push((path.to_path_buf(), before));
        Ok(())
    }

    /// Puts every replaced file back as it was, newest first.
    fn roll_back(self) -> Result<()> {
        for (path, before) in self.replaced.into_iter().rev() {
            match before {
                Some(s) => fs::write_atomic(&path, &s.bytes, s.mode, Some((s.uid, s.gid)))?,
                None => std::fs::remove_file(&path).map_err(|e| fs::explain(e, &path, "remove"))?,
            }
            failpoint::hit(&format!("rolled-back:{}", path.display()));
            tracing::info!("restored {}", path.display());
        }
        Ok(())
    }
}

/// What apply knows of the Postfix instance using the config directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Instance {
    Running,
    Stopped,
    /// Not asked (`--no-reload`) or cannot ask (not root).
    Unknown,
}

fn execute(plan: &Plan, options: &Options) -> Result<Vec<String>> {
    let dir = &plan.target.config_dir;
    let mut lines = report::applied(plan);
    let instance = if !options.reload {
        lines.push("skipped postfix check and reload (--no-reload)".to_string());
        Instance::Unknown
    } else if !Uid::effective().is_root() {
        lines.push("not root: cannot query Postfix; skipped postfix check and reload".to_string());
        Instance::Unknown
    } else if postfix::is_running(dir)? {
        Instance::Running
    } else {
        lines.push(format!(
            "Postfix is not running (postfix -c {} status): skipped check and reload",
            dir.display()
        ));
        Instance::Stopped
    };
    let running = instance == Instance::Running;

    let staged = stage(plan)?;
    if let Some(m) = &plan.main_cf {
        let now = fs::snapshot(&m.path)?;
        if now.as_ref().map(|s| &s.bytes) != Some(&m.old) {
            bail!(
                "{}: changed while postrelay was planning; run it again",
                m.path.display()
            );
        }
    }

    // The reload marker: created before a change that a running Postfix must re-read,
    // removed once nothing is owed any more (see plan::RELOAD_PENDING).
    let pending = dir.join(plan::RELOAD_PENDING);
    let reload = running && plan.needs_reload();
    if reload {
        std::fs::File::create(&pending)
            .and_then(|f| f.sync_all())
            .map_err(|e| fs::explain(e, &pending, "create"))?;
        fs::sync_dir(&pending)?;
    }
    let mut journal = Journal::default();
    let result = commit(plan, staged, &mut journal).and_then(|()| {
        if running {
            postfix::control(dir, "check")?;
            failpoint::hit("check");
            lines.push(format!("ran postfix -c {} check", dir.display()));
            if reload {
                postfix::control(dir, "reload")?;
                failpoint::hit("reload");
                lines.push(format!("ran postfix -c {} reload", dir.display()));
            }
        }
        Ok(())
    });
    let settled = match result {
        // Reloaded, or known not to run (it reads the files when it starts).
        Ok(()) => reload || instance == Instance::Stopped,
        Err(err) => {
            return match journal.roll_back() {
                Ok(()) => {
                    // Back to the files before this run: what Postfix runs, unless an
                    // earlier interrupted apply already owed it a reload.
                    if !plan.reload_pending {
                        clear_pending(&pending)?;
                    }
                    Err(err.context("restored the previous files; nothing changed"))
                }
                Err(rollback) => Err(err.context(format!(
                    "AND restoring the previous files failed: {rollback:#}"
                ))),
            };
        }
    };
    if settled {
        clear_pending(&pending)?;
    } else if plan.reload_pending {
        lines.push("Postfix still has to re-read its configuration (postfix reload)".to_string());
    }
    Ok(lines)
}

fn clear_pending(pending: &Path) -> Result<()> {
    match std::fs::remove_file(pending) {
        Ok(()) => fs::sync_dir(pending),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(fs::explain(e, pending, "remove")),
    }
}

fn commit(plan: &Plan, staged: Vec<Staged>, journal: &mut Journal) -> Result<()> {
    for (m, s) in plan.maps.iter().zip(staged) {
        let name = m.kind.file_name();
        if let (Some(compiled), Some(path)) = (s.compiled, &m.compiled_path) {
            journal.replace(path, || compiled.persist(path))?;
            failpoint::hit(&format!("renamed-compiled:{name}"));
        }
        if m.write_source {
            journal.replace(&m.source_path, || s.source.persist(&m.source_path))?;
            failpoint::hit(&format!("renamed-source:{name}"));
        }
    }
    if let Some(m) = &plan.main_cf {
        let before =
            fs::snapshot(&m.path)?.with_context(|| format!("{}: vanished", m.path.display()))?;
        journal.replace(&m.path, || {
            fs::write_atomic(&m.path, &m.new, before.mode, Some((before.uid, before.gid)))
        })?;
        failpoint::hit("main.cf");
    }
    Ok(())
}
