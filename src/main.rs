//! The `postrelay` binary: parse the command line, set up logging, run the library,
//! print the report on stdout, and map the result to an exit code (errors: 2).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use postrelay::cli::{Cli, Command};
use postrelay::{apply, desired, plan, report, verify};

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

fn load(path: &std::path::Path) -> Result<desired::Desired> {
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

fn run(cli: Cli) -> Result<u8> {
    let mut stdout = std::io::stdout().lock();
    match cli.command {
        Command::Validate { config } => {
            let d = load(&config)?;
            writeln!(
                stdout,
                "{}: valid ({} sender(s), {} relay(s){})",
                config.display(),
                d.senders.len(),
                d.tls.len(),
                if d.relayhost.is_some() {
                    ", catch-all relayhost"
                } else {
                    ""
                }
            )?;
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
            let t = plan::target(&d, target.postfix_dir.as_deref())?;
            let p = plan::compute(&d, &t)?;
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
            if verify {
                let checks = verify::checks(&d, None)?;
                if !run_verify(&mut stdout, checks, VERIFY_TIMEOUT)? {
                    anyhow::bail!("credential verification failed; nothing changed");
                }
            }
            let options = apply::Options {
                reload: !no_reload,
                lock_timeout: Duration::from_secs(lock_timeout),
            };
            let outcome = apply::run(&d, target.postfix_dir.as_deref(), &options)?;
            if outcome.lines.is_empty() {
                if !quiet {
                    writeln!(stdout, "postrelay: no changes")?;
                }
            } else {
                for line in &outcome.lines {
                    writeln!(stdout, "{line}")?;
                }
                writeln!(stdout, "postrelay: applied")?;
            }
            Ok(0)
        }
    }
}

/// Connect and command timeout of `apply --verify`, as `verify`'s default.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the checks and prints one line each and a summary; true when all passed.
fn run_verify(out: &mut impl Write, checks: Vec<verify::Check>, timeout: Duration) -> Result<bool> {
    let outcomes = verify::verify(checks, timeout);
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    for o in &outcomes {
        writeln!(out, "{o}")?;
    }
    writeln!(out, "verify: {} checked, {failed} failed", outcomes.len())?;
    Ok(failed == 0)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("postrelay: error: {err:#}");
            ExitCode::from(2)
        }
    }
}
