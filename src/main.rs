//! The `postrelay` binary: parse the command line, set up logging, run the library,
//! print the report (rendered by `report`) on stdout, and map the result to an exit
//! code (0 done / in sync, 1 changes pending or a check failed, 2 error).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Parser;
use tracing_subscriber::EnvFilter;

use postrelay::cli::{Cli, Command};
use postrelay::desired::{self, Desired};
use postrelay::state::{self, State};
use postrelay::{apply, plan, report, verify};

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Loads the desired state and logs its warnings.
fn load(path: &Path) -> Result<Desired> {
    let d = desired::load(path)?;
    for w in &d.warnings {
        tracing::warn!("{}", report::warning(&d, w));
    }
    tracing::info!(
        "{}: {} sender(s), {} relay(s)",
        path.display(),
        d.senders.len(),
        d.tls.len()
    );
    // Secrets print as ******** through their Debug impl.
    tracing::trace!("desired state: {d:?}");
    Ok(d)
}

/// Connect and command timeout of `apply --verify`, as `verify`'s default.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the checks and prints their report; true when all passed.
fn run_verify(out: &mut impl Write, checks: Vec<verify::Check>, timeout: Duration) -> Result<bool> {
    let outcomes = verify::run(checks, timeout);
    out.write_all(report::verify(&outcomes).as_bytes())?;
    Ok(outcomes.iter().all(|o| o.result.is_ok()))
}

fn run(cli: Cli) -> Result<u8> {
    let mut stdout = std::io::stdout().lock();
    match cli.command {
        Command::Validate { config } => {
            let d = load(&config)?;
            stdout.write_all(report::validated(&d).as_bytes())?;
            Ok(0)
        }
        Command::Verify {
            config,
            sender,
            timeout,
        } => {
            let d = load(&config)?;
            let checks = verify::checks(&d, sender.as_deref())?;
            let ok = run_verify(&mut stdout, checks, Duration::from_secs(timeout))?;
            Ok(if ok { 0 } else { 1 })
        }
        Command::Plan {
            target,
            show_secrets,
        } => {
            let d = load(&target.config)?;
            let dir = state::config_dir(&d, target.postfix_dir.as_deref())?;
            let state = State::read(&d, dir)?;
            let p = plan::plan(&d, &state)?;
            stdout.write_all(report::plan(&p, show_secrets).as_bytes())?;
            Ok(if p.is_empty() { 0 } else { 1 })
        }
        Command::Apply {
            target,
            quiet,
            no_reload,
            lock_timeout,
            verify,
        } => {
            let d = load(&target.config)?;
            if verify && !run_verify(&mut stdout, verify::checks(&d, None)?, VERIFY_TIMEOUT)? {
                bail!("credential verification failed; nothing changed");
            }
            let options = apply::Options {
                reload: !no_reload,
                lock_timeout: Duration::from_secs(lock_timeout),
            };
            let outcome = apply::run(&d, target.postfix_dir.as_deref(), &options)?;
            stdout.write_all(report::applied(&outcome, quiet).as_bytes())?;
            Ok(0)
        }
        Command::Import {
            postfix_dir,
            output,
            password_dir,
        } => {
            let options = postrelay::import::Options {
                postfix_dir,
                output,
                password_dir,
            };
            let outcome = postrelay::import::run(&options)?;
            eprint!("{}", outcome.stderr);
            stdout.write_all(outcome.stdout.as_bytes())?;
            Ok(if outcome.findings.is_empty() { 0 } else { 1 })
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprint!("{}", report::error(&err));
            ExitCode::from(2)
        }
    }
}
