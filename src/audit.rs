//! The audit trail: every apply that changed something, and every apply that failed,
//! leaves one line in the mail log through Postfix's own `postlog`, so the change shows
//! beside Postfix's own reload message, where administrators look. An apply that
//! changed nothing records nothing (from cron, the mail log would otherwise fill with
//! runs that did nothing); `apply --no-syslog` records nothing at all.
//!
//! The line's words come from `report` (what changed, never a password: maps are named
//! by their entries' keys, main.cf's old values are masked as in `plan`); `postfix::log`
//! runs postlog, under a deadline. Failing to record is not a failed apply: the caller
//! prints a warning and the apply keeps its exit status.
//!
//! Which instance's log: the config dir apply worked on; for a failure, `--postfix-dir`,
//! else the desired state's `[postfix] config_dir` when the file got that far, else
//! Postfix's default `/etc/postfix` (the dir apply would have used). postlog reads that
//! dir's main.cf as root, and main.cf names the file it appends to (`maillog_file`,
//! written directly when Postfix does not run): so a failure is recorded only in a dir
//! that passes the trust rules apply itself applies (see `state::resolve_config_dir`
//! and `state::read_main_cf`). A dir that fails them records nothing; the error that
//! apply prints already says why.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::apply::Outcome;
use crate::desired;
use crate::postfix::{self, Priority};
use crate::report;
use crate::state;

/// Records one apply in the mail log. `config` is the desired-state file as named on
/// the command line; `dir` the config dir asked for (`--postfix-dir`, else the desired
/// state's, when known), used only for a failure. Nothing is recorded for an apply
/// that changed nothing. An error means postlog failed (or could not be found or
/// started): the apply itself is not affected.
pub fn record(
    config: &Path,
    dir: Option<&Path>,
    result: Result<&Outcome, &anyhow::Error>,
) -> Result<()> {
    // As an absolute path: the log outlives the working directory. `-` is stdin.
    let config = &match config == Path::new(desired::STDIN) {
        true => PathBuf::from(desired::STDIN_NAME),
        false => std::path::absolute(config).unwrap_or_else(|_| config.to_path_buf()),
    };
    let (dir, priority, text) = match result {
        Ok(outcome) if outcome.steps.is_empty() => return Ok(()),
        Ok(outcome) => (
            outcome.plan.target.config_dir.clone(),
            Priority::Info,
            report::audit_applied(config, outcome),
        ),
        Err(err) => {
            let Some(dir) = trusted(dir) else {
                return Ok(());
            };
            (dir, Priority::Warning, report::audit_failed(config, err))
        }
    };
    postfix::log(&dir, priority, &text)
}

/// The config dir a failure is recorded in, if it passes the trust rules.
fn trusted(dir: Option<&Path>) -> Option<PathBuf> {
    let dir = dir.unwrap_or(Path::new(state::DEFAULT_CONFIG_DIR));
    let checked = state::resolve_config_dir(dir)
        .and_then(|resolved| state::read_main_cf(&resolved).map(|_| resolved));
    match checked {
        Ok(resolved) => Some(resolved),
        Err(e) => {
            tracing::info!("the failure is not recorded in a mail log: {e:#}");
            None
        }
    }
}
