//! Command-line definitions (clap derive) and nothing else: what the user typed, and
//! the `--help` text with the exit codes. `main.rs` passes the values to the library,
//! which checks them (the desired-state file, the config directory) as it reads them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::desired::DEFAULT_CONFIG;

const EXIT_CODES: &str = "\
Exit status:
  plan      0 in sync, 1 changes pending, 2 error
  apply     0 success (changed or not), 2 error
  validate  0 valid, 2 invalid
  verify    0 every credential works, 1 any check failed, 2 error
  init      0 written, 2 error (an existing file is never overwritten)
  import    0 imported, 1 imported with findings (listed on stderr: review them before
            apply), 2 error (nothing written)

Logs and warnings go to stderr (-v, -vv, -vvv or RUST_LOG); stdout carries only the report.
Passwords never appear in output, at any verbosity, unless `plan --show-secrets` is given.";

/// Declarative sender-dependent SASL relaying for Postfix.
#[derive(Debug, Parser)]
#[command(name = "postrelay", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// More log output on stderr (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show, as a redacted diff, what apply would change. Exit 0 in sync, 1 changes pending, 2 error.
    Plan {
        #[command(flatten)]
        target: TargetArgs,
        /// Show passwords in the sasl_passwd diff instead of ********.
        #[arg(long)]
        show_secrets: bool,
    },
    /// Make the Postfix configuration match the desired state. Exit 0 on success, 2 on error.
    Apply {
        #[command(flatten)]
        target: TargetArgs,
        /// Print nothing when nothing changed (for cron).
        #[arg(short, long)]
        quiet: bool,
        /// Do not run `postfix check` and `postfix reload` after a change; the reload is
        /// then owed, and the next plan reports it and the next apply does it.
        #[arg(long)]
        no_reload: bool,
        /// Seconds to wait for another running apply to finish (at most a day).
        #[arg(long, value_name = "SECONDS", default_value_t = 30,
              value_parser = clap::value_parser!(u64).range(0..=86_400))]
        lock_timeout: u64,
        /// Log in to every relay first (as `verify` does); change nothing if any check fails.
        #[arg(long)]
        verify: bool,
    },
    /// Log in to each relay with each credential (EHLO, STARTTLS, AUTH, QUIT; no mail is sent).
    /// Exit 0 all ok, 1 any check failed, 2 error.
    Verify {
        /// The desired-state file.
        #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Only this sender: a domain, `@domain`, an address, or `relayhost`.
        #[arg(long, value_name = "DOMAIN_OR_ADDRESS")]
        sender: Option<String>,
        /// Seconds one check may take in all, from connect to QUIT (1 to 3600).
        #[arg(long, value_name = "SECONDS", default_value_t = 10,
              value_parser = clap::value_parser!(u64).range(1..=3600))]
        timeout: u64,
        /// Postfix configuration directory whose CA settings (smtp_tls_CAfile,
        /// smtp_tls_CApath) relays with tls "secure" or "verify" are checked against
        /// (like postconf -c); overrides [postfix] config_dir.
        #[arg(long, value_name = "DIR")]
        postfix_dir: Option<PathBuf>,
    },
    /// Write a desired-state file from the relaying Postfix does now (relayhost and the
    /// maps main.cf names). Exit 0 imported, 1 imported with findings (on stderr), 2 error.
    Import {
        /// Postfix configuration directory to read (like postconf -c).
        #[arg(long, value_name = "DIR", default_value = "/etc/postfix")]
        postfix_dir: PathBuf,
        /// The desired-state file to create (never overwritten; created 0600); `-`: stdout,
        /// which needs --password-dir.
        #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        output: PathBuf,
        /// Write each password to a file (0600) in DIR (created 0700 if missing) instead of
        /// inline in the desired-state file.
        #[arg(long, value_name = "DIR")]
        password_dir: Option<PathBuf>,
    },
    /// Write a commented starter desired-state file (mode 0600; never overwrites).
    /// Exit 0 written, 2 error.
    Init {
        /// Where to write it.
        #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Check the desired-state file, and warn about main.cf settings that would defeat it
    /// (when main.cf can be read). Exit 0 valid, 2 invalid.
    Validate {
        /// The desired-state file.
        #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Postfix configuration directory whose main.cf to check (like postconf -c);
        /// overrides [postfix] config_dir.
        #[arg(long, value_name = "DIR")]
        postfix_dir: Option<PathBuf>,
    },
    /// Print the man page or a shell completion script, made from these definitions
    /// (for packaging; hidden from --help).
    #[command(hide = true)]
    Generate {
        #[arg(value_enum)]
        what: Generated,
    },
}

/// What `postrelay generate` prints (see `manual`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Generated {
    /// The man page, postrelay(8), as roff.
    Man,
    CompleteBash,
    CompleteZsh,
    CompleteFish,
}

/// Which desired state and which Postfix instance.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// The desired-state file.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Postfix configuration directory (like postconf -c); overrides [postfix] config_dir.
    #[arg(long, value_name = "DIR")]
    pub postfix_dir: Option<PathBuf>,
}
