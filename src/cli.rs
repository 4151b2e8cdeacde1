//! Command-line definitions (clap derive) and nothing else: what the user typed, and
//! the `--help` text with the exit codes. `main.rs` passes the values to the library,
//! which checks them (the desired-state file, the config directory) as it reads them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::desired::DEFAULT_CONFIG;
use crate::mailgun::{DEFAULT_LOGIN, SECRETS_DIR};
use crate::state::Depth;

const EXIT_CODES: &str = "\
Exit status:
  plan      0 in sync, 1 changes pending, 2 error
  apply     0 success (changed or not), 2 error
  validate  0 valid, 2 invalid
  verify    0 every credential works, 1 any check failed, 2 error
  init      0 written, 2 error (an existing file is never overwritten)
  import    0 imported, 1 imported with findings (listed on stderr: review them before
            apply), 2 error (nothing written)
  mailgun sync    0 done (or nothing to do), 1 done, but some domains were left out
                  (their login exists at Mailgun and its password is not here), 2 error
  mailgun rotate  0 rotated, 2 error (the message says at which step, and the host still
                  uses a login that works)

With --format json, the exit codes are the same; stdout carries one JSON document, an error
included (docs/json.md).

Logs and warnings go to stderr (-v, -vv, -vvv or RUST_LOG); stdout carries only the report.
Passwords never appear in output, at any verbosity, unless `plan --show-secrets` is given.";

/// How the report on stdout is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people.
    #[default]
    Text,
    /// One JSON document (docs/json.md), warnings and errors included.
    Json,
}

/// The `--format` option, shared by the commands that report.
#[derive(Debug, Args)]
pub struct FormatArg {
    /// Write the report as text, or as one JSON document (warnings and errors included).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

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
        #[command(flatten)]
        output: FormatArg,
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
        #[command(flatten)]
        lock: LockArg,
        /// Log in to every relay first (as `verify` does); change nothing if any check fails.
        #[arg(long)]
        verify: bool,
        /// Record nothing in the mail log (by default an apply that changes something, or
        /// fails, logs one line saying what, without passwords, through Postfix's postlog).
        #[arg(long)]
        no_syslog: bool,
        #[command(flatten)]
        output: FormatArg,
    },
    /// Log in to each relay with each credential (EHLO, STARTTLS, AUTH, QUIT; no mail is sent).
    /// Exit 0 all ok, 1 any check failed, 2 error.
    Verify {
        /// The desired-state file; `-`: standard input.
        #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Only this sender: a domain, `@domain`, an address, or `relayhost`.
        #[arg(long, value_name = "DOMAIN_OR_ADDRESS")]
        sender: Option<String>,
        /// Seconds one check may take in all, from connect to QUIT (1 to 3600).
        #[arg(long, value_name = "SECONDS", default_value_t = 10,
              value_parser = clap::value_parser!(u64).range(1..=3600))]
        timeout: u64,
        /// Logins run at once (1 to 256). Senders that share a relay and credentials
        /// share one login.
        #[arg(long, value_name = "N", default_value_t = 32,
              value_parser = clap::value_parser!(u16).range(1..=256))]
        jobs: u16,
        /// Postfix configuration directory whose CA settings (smtp_tls_CAfile,
        /// smtp_tls_CApath) relays with tls "secure" or "verify" are checked against
        /// (like postconf -c); overrides [postfix] config_dir.
        #[arg(long, value_name = "DIR")]
        postfix_dir: Option<PathBuf>,
        #[command(flatten)]
        output: FormatArg,
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
        /// The desired-state file; `-`: standard input.
        #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Postfix configuration directory whose main.cf to check (like postconf -c);
        /// overrides [postfix] config_dir.
        #[arg(long, value_name = "DIR")]
        postfix_dir: Option<PathBuf>,
        #[command(flatten)]
        output: FormatArg,
    },
    /// Mailgun: SMTP logins for the account's domains added to the desired state (sync),
    /// or one sender's login replaced without losing mail (rotate).
    Mailgun {
        #[command(subcommand)]
        command: MailgunCommand,
    },
    /// Print the man page or a shell completion script, made from these definitions
    /// (for packaging; hidden from --help).
    #[command(hide = true)]
    Generate {
        #[arg(value_enum)]
        what: Generated,
    },
}

/// `postrelay mailgun ...`.
#[derive(Debug, Subcommand)]
pub enum MailgunCommand {
    /// For each domain of the account that the desired state lacks: create an SMTP login
    /// (NAME@DOMAIN) with a random 32-character password, written to a 0600 file in the
    /// secrets directory, and add its [[sender]] entry (provider = "mailgun") to the
    /// desired-state file, keeping its comments and order. Never applies: run
    /// `postrelay apply --verify` next. Exit 0 done, 1 some domains left out, 2 error.
    Sync {
        /// The desired-state file to add to (created 0600 if missing).
        #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The account's region: its API host, and the relay of the entries.
        #[arg(long, value_enum, default_value_t = MailgunRegion::Us)]
        region: MailgunRegion,
        /// Only this domain (repeatable); each must be in the account.
        #[arg(long = "domain", value_name = "DOMAIN")]
        domains: Vec<String>,
        /// The login's name before @DOMAIN (letters, digits, '.', '_', '-').
        #[arg(long, value_name = "NAME", default_value = DEFAULT_LOGIN)]
        login: String,
        /// Where the password files go (created 0700 if missing).
        #[arg(long, value_name = "DIR", default_value = SECRETS_DIR)]
        secrets_dir: PathBuf,
        /// Say what would be done; create and write nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        access: MailgunAccess,
    },
    /// Give one sender a new login, in five steps that never leave Postfix without a
    /// working one: write the new password file, create the login at Mailgun, log in to
    /// the relay with it, apply it and name it in the desired state, delete the old login. A
    /// failed step says where it stopped; the same command resumes. Exit 0 rotated, 2
    /// error.
    Rotate {
        /// The desired-state file.
        #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The sender domain whose login to replace (its entry has provider = "mailgun").
        #[arg(long, value_name = "DOMAIN")]
        sender: String,
        /// Postfix configuration directory (like postconf -c); overrides [postfix] config_dir.
        #[arg(long, value_name = "DIR")]
        postfix_dir: Option<PathBuf>,
        /// Where the new password file goes (created 0700 if missing).
        #[arg(long, value_name = "DIR", default_value = SECRETS_DIR)]
        secrets_dir: PathBuf,
        /// Seconds to keep trying the new login while the relay does not take it yet.
        #[arg(long, value_name = "SECONDS", default_value_t = 30,
              value_parser = clap::value_parser!(u64).range(0..=600))]
        settle: u64,
        #[command(flatten)]
        lock: LockArg,
        /// Record nothing in the mail log (see apply --no-syslog).
        #[arg(long)]
        no_syslog: bool,
        /// Only delete this old login of the sender at Mailgun (after a rotation that
        /// stopped at its last step); the login in use is refused.
        #[arg(long, value_name = "LOGIN")]
        delete_login: Option<String>,
        #[command(flatten)]
        access: MailgunAccess,
    },
}

/// A Mailgun region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MailgunRegion {
    Us,
    Eu,
}

impl MailgunRegion {
    pub fn as_str(self) -> &'static str {
        match self {
            MailgunRegion::Us => "us",
            MailgunRegion::Eu => "eu",
        }
    }
}

/// How to reach Mailgun's API.
#[derive(Debug, Args)]
pub struct MailgunAccess {
    /// A file holding the API key (root's, mode 0600); without it, MAILGUN_API_KEY.
    /// Never give the key itself on the command line.
    #[arg(long, value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,
    /// The API's base URL instead of the region's: https://, or http:// to a loopback
    /// address (a local proxy, tests).
    #[arg(long, value_name = "URL")]
    pub api_base: Option<String>,
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

impl Command {
    /// The subcommand's name, as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Plan { .. } => "plan",
            Command::Apply { .. } => "apply",
            Command::Verify { .. } => "verify",
            Command::Import { .. } => "import",
            Command::Init { .. } => "init",
            Command::Validate { .. } => "validate",
            Command::Generate { .. } => "generate",
            Command::Mailgun {
                command: MailgunCommand::Sync { .. },
            } => "mailgun sync",
            Command::Mailgun {
                command: MailgunCommand::Rotate { .. },
            } => "mailgun rotate",
        }
    }

    /// The report format the command was asked for (text for those without `--format`).
    pub fn format(&self) -> Format {
        match self {
            Command::Plan { output, .. }
            | Command::Apply { output, .. }
            | Command::Verify { output, .. }
            | Command::Validate { output, .. } => output.format,
            Command::Import { .. }
            | Command::Init { .. }
            | Command::Generate { .. }
            | Command::Mailgun { .. } => Format::Text,
        }
    }
}

/// The `--lock-timeout` option of the commands that apply.
#[derive(Debug, Args)]
pub struct LockArg {
    /// Seconds to wait for another running apply to finish (at most a day).
    #[arg(long, value_name = "SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub lock_timeout: u64,
}

impl LockArg {
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.lock_timeout)
    }
}

/// Which desired state and which Postfix instance, and how closely to read it.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// The desired-state file; `-`: standard input.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Postfix configuration directory (like postconf -c); overrides [postfix] config_dir.
    #[arg(long, value_name = "DIR")]
    pub postfix_dir: Option<PathBuf>,
    /// Read every compiled map with postmap -s, even where the record of the last apply
    /// (DIR/postrelay.state) shows it unchanged.
    #[arg(long)]
    pub full: bool,
}

impl TargetArgs {
    pub fn depth(&self) -> Depth {
        match self.full {
            true => Depth::Full,
            false => Depth::Recorded,
        }
    }
}
