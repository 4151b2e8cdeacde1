//! The `postrelay` binary: parse the command line, set up logging, run the library,
//! print the report (rendered by `report`) on stdout, and map the result to an exit
//! code (0 done / in sync, 1 changes pending, a check failed, or an import with
//! findings, 2 error).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use postrelay::cli::{Cli, Command, Format, MailgunCommand};
use postrelay::conflicts::{self, Conflict};
use postrelay::desired::{self, Desired};
use postrelay::state::{self, State};
use postrelay::syntax::maincf::MainCf;
use postrelay::{apply, audit, plan, report, verify};

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

/// `apply --verify` found a credential that does not work: nothing was changed.
#[derive(Debug)]
struct VerifyFailed(Vec<verify::Outcome>);

impl std::fmt::Display for VerifyFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("credential verification failed; nothing changed")
    }
}

impl std::error::Error for VerifyFailed {}

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
    let json = cli.command.format() == Format::Json;
    match cli.command {
        Command::Init { config } => {
            postrelay::init::write(&config)?;
            stdout.write_all(report::initialized(&config).as_bytes())?;
            Ok(0)
        }
        Command::Validate {
            config,
            postfix_dir,
            ..
        } => {
            let d = load(&config)?;
            let conflicts = host_settings(&d, postfix_dir.as_deref());
            let out = if json {
                report::json::validated(&d, &conflicts)
            } else {
                eprint!("{}", report::warnings(&d, &conflicts));
                report::validated(&d)
            };
            stdout.write_all(out.as_bytes())?;
            Ok(0)
        }
        Command::Verify {
            config,
            sender,
            timeout,
            jobs,
            postfix_dir,
            ..
        } => {
            let d = load(&config)?;
            let checks = verify::checks(&d, sender.as_deref())?;
            let timeout = Duration::from_secs(timeout);
            let outcomes =
                verify::run_for(&d, postfix_dir.as_deref(), checks, timeout, jobs.into())?;
            let out = match json {
                true => report::json::verify(&d, &outcomes),
                false => report::verify(&outcomes),
            };
            stdout.write_all(out.as_bytes())?;
            Ok(if verify::all_ok(&outcomes) { 0 } else { 1 })
        }
        Command::Plan {
            target,
            show_secrets,
            ..
        } => {
            let d = load(&target.config)?;
            let dir = state::config_dir(&d, target.postfix_dir.as_deref())?;
            let state = State::read_to(&d, dir, target.depth())?;
            let p = plan::plan(&d, &state)?;
            let out = if json {
                report::json::plan(&d, &p, show_secrets)
            } else {
                eprint!("{}", report::warnings(&d, &p.conflicts));
                report::plan(&p, show_secrets)
            };
            stdout.write_all(out.as_bytes())?;
            let code = if p.is_empty() { 0 } else { 1 };
            // The process ends here: freeing 100,000 senders one by one would only
            // delay the exit (the kernel takes the memory back at once).
            std::mem::forget((d, state, p));
            Ok(code)
        }
        Command::Apply {
            target,
            quiet,
            no_reload,
            lock,
            verify,
            no_syslog,
            ..
        } => {
            let loaded = load(&target.config);
            // Where a failure is recorded: --postfix-dir, else the desired state's.
            let audit_dir = target
                .postfix_dir
                .clone()
                .or_else(|| loaded.as_ref().ok()?.config_dir.clone());
            let result = loaded.and_then(|d| {
                let dir = target.postfix_dir.as_deref();
                let checks = match verify {
                    true => {
                        let checks = verify::checks(&d, None)?;
                        verify::run_for(
                            &d,
                            dir,
                            checks,
                            verify::DEFAULT_TIMEOUT,
                            verify::DEFAULT_JOBS,
                        )?
                    }
                    false => Vec::new(),
                };
                if verify && !json {
                    stdout.write_all(report::verify(&checks).as_bytes())?;
                }
                if !verify::all_ok(&checks) {
                    return Err(VerifyFailed(checks).into());
                }
                let options = apply::Options {
                    reload: !no_reload,
                    lock_timeout: lock.timeout(),
                    depth: target.depth(),
                };
                let outcome = apply::run(&d, dir, &options)?;
                Ok((d, outcome, checks))
            });
            let done = result.as_ref().map(|(_, outcome, _)| outcome);
            let not_recorded = match no_syslog {
                true => None,
                false => audit::record(&target.config, audit_dir.as_deref(), done).err(),
            };
            // A JSON report carries it among its warnings.
            if let (Some(e), false) = (&not_recorded, json && result.is_ok()) {
                eprint!("{}", report::audit_not_recorded(e));
            }
            let (d, outcome, checks) = result?;
            let out = if json {
                report::json::applied(&d, &outcome, &checks, not_recorded.as_ref())
            } else {
                // From cron, a run that changes nothing says nothing, warnings included.
                if !outcome.steps.is_empty() {
                    eprint!("{}", report::warnings(&d, &outcome.plan.conflicts));
                    eprint!("{}", report::apply_warnings(&outcome));
                }
                report::applied(&outcome, quiet)
            };
            stdout.write_all(out.as_bytes())?;
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
        Command::Mailgun { command } => mailgun(command, &mut stdout),
        Command::Generate { what } => {
            postrelay::manual::write(what, &mut stdout)?;
            Ok(0)
        }
    }
}

/// `postrelay mailgun sync|rotate`.
fn mailgun(command: MailgunCommand, stdout: &mut impl Write) -> Result<u8> {
    use postrelay::mailgun::{self, Api, api};
    match command {
        MailgunCommand::Sync {
            config,
            region,
            domains,
            login,
            secrets_dir,
            dry_run,
            access,
        } => {
            let key = mailgun::api_key(access.api_key_file.as_deref())?;
            let base = access
                .api_base
                .unwrap_or_else(|| api::base_for(region.as_str()).to_string());
            let api = Api::new(&base, &key)?;
            let options = mailgun::SyncOptions {
                config,
                region: region.as_str().to_string(),
                domains,
                login,
                secrets_dir,
                dry_run,
            };
            match mailgun::sync(&options, &api) {
                Ok(synced) => {
                    stdout.write_all(report::mailgun::synced(&synced).as_bytes())?;
                    Ok(if synced.left_out() > 0 { 1 } else { 0 })
                }
                Err(e) => {
                    if let Some(stopped) = e.downcast_ref::<mailgun::SyncStopped>() {
                        stdout.write_all(report::mailgun::synced(&stopped.done).as_bytes())?;
                    }
                    Err(e)
                }
            }
        }
        MailgunCommand::Rotate {
            config,
            sender,
            postfix_dir,
            secrets_dir,
            settle,
            lock,
            no_syslog,
            delete_login,
            access,
        } => {
            let key = mailgun::api_key(access.api_key_file.as_deref())?;
            let connect = |region: &str| {
                let base = access.api_base.as_deref().unwrap_or(api::base_for(region));
                Api::new(base, &key)
            };
            let options = mailgun::RotateOptions {
                config,
                sender,
                postfix_dir,
                secrets_dir,
                settle: Duration::from_secs(settle),
                apply: apply::Options {
                    reload: true,
                    lock_timeout: lock.timeout(),
                    depth: state::Depth::Recorded,
                },
                syslog: !no_syslog,
            };
            if let Some(login) = delete_login {
                mailgun::delete_login(&options, &connect, &login)?;
                writeln!(
                    stdout,
                    "postrelay: mailgun rotate: {login} deleted at Mailgun"
                )?;
                return Ok(0);
            }
            let rotated = mailgun::rotate(&options, &connect)?;
            stdout.write_all(report::mailgun::rotated(&rotated).as_bytes())?;
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
    let (name, format) = (cli.command.name(), cli.command.format());
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprint!("{}", report::error(&err));
            if format == Format::Json {
                let checks = err.downcast_ref::<VerifyFailed>().map_or(&[][..], |v| &v.0);
                print!("{}", report::json::error(name, &err, checks));
            }
            ExitCode::from(2)
        }
    }
}
