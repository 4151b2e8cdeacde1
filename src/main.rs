//! The `postrelay` binary: parse the command line, set up logging, run the library,
//! print the report (rendered by `report`) on stdout, and map the result to an exit
//! code (0 done / in sync, 1 changes pending, a check failed, or an import with
//! findings, 2 error).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Parser;
use tracing_subscriber::EnvFilter;

use postrelay::cli::{Cli, Command};
use postrelay::conflicts::{self, Conflict};
use postrelay::desired::{self, Desired};
use postrelay::state::{self, State};
use postrelay::syntax::maincf::MainCf;
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

/// Loads the desired state. Its warnings are printed by the commands that show them.
fn load(path: &Path) -> Result<Desired> {
    let d = desired::load(path)?;
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

/// Each check's budget in `apply --verify`, as `verify`'s default.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the checks and prints their report; true when all passed. Postfix's trust store
/// is read only when a check verifies certificates (`secure`, `verify`).
fn run_verify(
    out: &mut impl Write,
    d: &Desired,
    postfix_dir: Option<&Path>,
    checks: Vec<verify::Check>,
    timeout: Duration,
) -> Result<bool> {
    let trust = if verify::needs_trust_store(&checks) {
        let dir = state::config_dir(d, postfix_dir)?;
        Some(verify::trust::load(&dir)?)
    } else {
        None
    };
    let outcomes = verify::run(checks, &verify::Settings { timeout, trust });
    out.write_all(report::verify(&outcomes).as_bytes())?;
    Ok(outcomes.iter().all(|o| o.result.is_ok()))
}

/// main.cf settings that defeat the desired state, when main.cf can be read; validate
/// checks the desired-state file alone otherwise.
fn host_settings(d: &Desired, postfix_dir: Option<&Path>) -> Vec<Conflict> {
    let main_cf =
        state::config_dir(d, postfix_dir).and_then(|dir| Ok((state::read_main_cf(&dir)?, dir)));
    match main_cf {
        Ok((m, dir)) => conflicts::settings(&MainCf::parse(m.snapshot.bytes.expose()), d, &dir),
        Err(e) => {
            tracing::info!("checked the desired-state file alone: {e:#}");
            Vec::new()
        }
    }
}

fn run(cli: Cli) -> Result<u8> {
    let mut stdout = std::io::stdout().lock();
    match cli.command {
        Command::Init { config } => {
            postrelay::init::write(&config)?;
            stdout.write_all(report::initialized(&config).as_bytes())?;
            Ok(0)
        }
        Command::Validate {
            config,
            postfix_dir,
        } => {
            let d = load(&config)?;
            let conflicts = host_settings(&d, postfix_dir.as_deref());
            eprint!("{}", report::warnings(&d, &conflicts));
            stdout.write_all(report::validated(&d).as_bytes())?;
            Ok(0)
        }
        Command::Verify {
            config,
            sender,
            timeout,
            postfix_dir,
        } => {
            let d = load(&config)?;
            let checks = verify::checks(&d, sender.as_deref())?;
            let timeout = Duration::from_secs(timeout);
            let ok = run_verify(&mut stdout, &d, postfix_dir.as_deref(), checks, timeout)?;
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
            eprint!("{}", report::warnings(&d, &p.conflicts));
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
            let dir = target.postfix_dir.as_deref();
            if verify
                && !run_verify(
                    &mut stdout,
                    &d,
                    dir,
                    verify::checks(&d, None)?,
                    VERIFY_TIMEOUT,
                )?
            {
                bail!("credential verification failed; nothing changed");
            }
            let options = apply::Options {
                reload: !no_reload,
                lock_timeout: Duration::from_secs(lock_timeout),
            };
            let outcome = apply::run(&d, target.postfix_dir.as_deref(), &options)?;
            // From cron, a run that changes nothing says nothing, warnings included.
            if !outcome.steps.is_empty() {
                eprint!("{}", report::warnings(&d, &outcome.plan.conflicts));
                eprint!("{}", report::apply_warnings(&outcome));
            }
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
        Command::Generate { what } => {
            postrelay::manual::write(what, &mut stdout)?;
            Ok(0)
        }
    }
}

/// Keeps secrets out of core dumps and out of other processes' reach: no core file
/// (`RLIMIT_CORE` 0), and not dumpable (`PR_SET_DUMPABLE` 0: no ptrace by the same
/// user, `/proc/PID` owned by root).
fn harden() {
    use nix::sys::resource::{Resource, setrlimit};
    if let Err(e) = setrlimit(Resource::RLIMIT_CORE, 0, 0) {
        tracing::warn!("cannot disable core dumps: {e}");
    }
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!("cannot make the process non-dumpable: {e}");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    harden();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprint!("{}", report::error(&err));
            ExitCode::from(2)
        }
    }
}
