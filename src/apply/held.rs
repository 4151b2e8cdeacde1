//! The switch of a running Postfix with mail held (see `hold` for why): the three
//! reloads, the waits for the daemons of the configuration before each, and the way
//! back when a step fails.
//!
//! 1. Hold (after `postfix check` on the files as they are): the hold listed in
//!    main.cf, reload, wait until the queue managers and trivial-rewrite processes that ran
//!    before have exited. From then on the moved senders' mail stays in the queue.
//! 2. Switch: the maps and main.cf replaced, the hold still listed; check, reload,
//!    wait. Whatever each daemon read, a moved sender's mail is held, and everyone
//!    else's is routed and authenticated the same way by old and new files.
//! 3. Release: once every smtp process started before the maps were replaced has
//!    exited, main.cf without the hold, reload, wait, the hold's table removed and
//!    `postqueue -f`: the held mail leaves by its new route, with the new credentials.
//!
//! Postfix programs wait for a main.cf changed in the last second or two to "cool
//! down", so the queue directory is asked for once, before main.cf changes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::{Journal, Staged, Step, commit, replaced, run_control, write_main_cf};
use crate::failpoint;
use crate::fs::{self, Temp};
use crate::hold::{self, Hold};
use crate::plan::Plan;
use crate::postfix::{self, Control, Process};
use crate::state::State;

/// How long the processes of the configuration before a reload may take to exit.
pub const SWITCH_TIMEOUT: Duration = Duration::from_secs(30);

/// The daemons that route: the queue managers and trivial-rewrite, whose answers they use.
const ROUTING: [&str; 3] = ["qmgr", "oqmgr", "trivial-rewrite"];
/// The daemons that deliver with the credentials of sasl_passwd.
const DELIVERING: [&str; 1] = ["smtp"];

/// A running instance that can hold mail, and what it holds.
pub(super) struct Holder<'a> {
    state: &'a State,
    hold: Hold,
    queue: PathBuf,
}

impl<'a> Holder<'a> {
    /// `None` (and why, as a step) when this Postfix cannot hold mail: master.cf has no
    /// `retry` service running error(8).
    pub(super) fn new(
        state: &'a State,
        hold: &Hold,
        steps: &mut Vec<Step>,
    ) -> Result<Option<Holder<'a>>> {
        let dir = &state.target.config_dir;
        let service = format!("{}/unix", hold::SERVICE);
        if postfix::service_command(dir, &service)?.as_deref() != Some("error") {
            steps.push(Step::NotHeld);
            return Ok(None);
        }
        Ok(Some(Holder {
            state,
            hold: hold.clone(),
            queue: postfix::queue_directory(dir)?,
        }))
    }

    fn dir(&self) -> &Path {
        &self.state.target.config_dir
    }

    /// Hold, switch, release (the module doc).
    pub(super) fn switch(
        &self,
        plan: &Plan,
        staged: Vec<Staged>,
        journal: &mut Journal,
        steps: &mut Vec<Step>,
    ) -> Result<()> {
        let original = self.state.main_cf.snapshot.bytes.expose();
        self.on(original, journal)?;
        steps.push(Step::Held);
        failpoint::hit("held");
        if !self.reload_and_wait(steps)? {
            bail!(
                "the daemons running before `postfix reload` had not exited {} s later",
                SWITCH_TIMEOUT.as_secs()
            );
        }

        let main_cf = plan
            .main_cf
            .as_ref()
            .map_or(original.as_slice(), |m| &m.new);
        let held = self.hold.main_cf(main_cf, self.dir());
        commit(plan, self.state, staged, Some(&held), journal)?;
        steps.extend(replaced(plan));
        run_control(self.dir(), Control::Check, steps)?;
        let old_smtp = postfix::daemons(&self.queue, &DELIVERING)?;
        self.reload_and_wait(steps)?;
        failpoint::hit("switched");
        self.off(main_cf, &old_smtp, journal, steps)
    }

    /// After a failed switch, the files restored: holds again and releases, as on the
    /// way there (smtp processes may have read the new maps).
    pub(super) fn back(&self) -> Result<()> {
        let original = self.state.main_cf.snapshot.bytes.expose();
        // Not rolled back: these steps are themselves the way back.
        let (mut journal, mut steps) = (Journal::default(), Vec::new());
        self.on(original, &mut journal)?;
        let old_smtp = postfix::daemons(&self.queue, &DELIVERING)?;
        self.reload_and_wait(&mut steps)?;
        self.off(original, &old_smtp, &mut journal, &mut steps)
    }

    /// Lists the hold in main.cf (`main_cf` plus the hold), writing its table first.
    fn on(&self, main_cf: &[u8], journal: &mut Journal) -> Result<()> {
        let dir = self.dir();
        if let Some(table) = self.hold.table() {
            let file = dir.join(hold::FILE);
            let temp = Temp::write(dir, hold::FILE, &table, 0o644)?;
            journal.replace(&file, || temp.persist(&file))?;
        }
        write_main_cf(self.state, &self.hold.main_cf(main_cf, dir), journal)
    }

    /// Ends the hold: waits for `old_smtp` (started before the maps were replaced) to
    /// exit, writes `main_cf` (no hold), reloads, waits for the routing daemons that
    /// held, removes the hold's table and releases the held mail.
    fn off(
        &self,
        main_cf: &[u8],
        old_smtp: &[Process],
        journal: &mut Journal,
        steps: &mut Vec<Step>,
    ) -> Result<()> {
        if !wait_exit(old_smtp, steps) {
            // They deliver what was handed to them before the reload and take nothing new.
            tracing::warn!("smtp processes still deliver with the old maps: {old_smtp:?}");
        }
        write_main_cf(self.state, main_cf, journal)?;
        self.reload_and_wait(steps)?;
        fs::remove_if_exists(&self.dir().join(hold::FILE))?;
        release(self.dir(), steps);
        Ok(())
    }

    /// `postfix reload`, then waits until the routing daemons running before it have
    /// exited: from then on, all mail is routed by what the files hold now. False if
    /// they had not after [`SWITCH_TIMEOUT`].
    fn reload_and_wait(&self, steps: &mut Vec<Step>) -> Result<bool> {
        let old = postfix::daemons(&self.queue, &ROUTING)?;
        run_control(self.dir(), Control::Reload, steps)?;
        Ok(wait_exit(&old, steps))
    }
}

/// Waits until `processes` have exited, up to [`SWITCH_TIMEOUT`]; the step says how
/// long it took, or that they had not.
fn wait_exit(processes: &[Process], steps: &mut Vec<Step>) -> bool {
    let start = Instant::now();
    while processes.iter().any(Process::is_running) {
        if start.elapsed() > SWITCH_TIMEOUT {
            steps.push(Step::SwitchSlow);
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    steps.push(Step::Switched(start.elapsed()));
    true
}

/// How long after a flush the deferred queue is looked at again.
const RELEASE_CHECK: Duration = Duration::from_millis(300);

/// How long release keeps flushing while held mail is deferred.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// `postqueue -f` until no message in the deferred queue is held: a `retry` process
/// that took a message before the last reload may defer it after the first flush (on a
/// loaded host, seconds later), and it would then wait for its next retry. A failure
/// is a warning: the held mail leaves at its next retry.
pub(super) fn release(dir: &Path, steps: &mut Vec<Step>) {
    let start = Instant::now();
    let released = loop {
        if let Err(e) = postfix::flush(dir) {
            break Err(e);
        }
        std::thread::sleep(RELEASE_CHECK);
        match postfix::deferred_with(dir, hold::REASON) {
            Ok(0) => break Ok(()),
            Ok(n) if start.elapsed() < RELEASE_TIMEOUT => {
                tracing::debug!("{n} held message(s) still deferred: flushing again");
            }
            Ok(n) => break Err(anyhow::anyhow!("{n} held message(s) still deferred")),
            Err(e) => break Err(e),
        }
    };
    match released {
        Ok(()) => steps.push(Step::Released),
        Err(e) => {
            tracing::warn!("{e:#}");
            steps.push(Step::NotReleased);
        }
    }
}
