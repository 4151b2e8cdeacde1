//! `postrelay mailgun`: what the guide's Mailgun script meant to do, done with the API
//! Mailgun has today (which no longer returns SMTP passwords, so postrelay makes its own
//! logins with passwords it chooses).
//!
//! - [`sync`] lists the account's domains and, for each one the desired state lacks,
//!   writes a 32-character random password to a 0600 file under the secrets directory,
//!   creates the SMTP login with it, and adds a `[[sender]]` entry (`provider =
//!   "mailgun"`) to the desired-state file, edited losslessly. It never applies.
//! - [`rotate`] gives one sender a new login without a moment in which Postfix holds
//!   credentials that do not work: new password file, new login, SMTP login checked,
//!   desired state and host switched (apply), old login deleted. Each step leaves the
//!   old login working until the host no longer uses it; [`Stopped`] says where a run
//!   stopped and how to resume.
//!
//! The API key comes from a root-only file or `MAILGUN_API_KEY` ([`api_key`]) and is
//! only ever a [`Secret`]. The HTTP calls are in [`api`]; report text is in `report`.

pub mod api;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::apply;
use crate::audit;
use crate::desired::edit::{self, NewSender};
use crate::desired::{self, Desired, SenderKey, fields};
use crate::fs::{self, Links};
use crate::import::write::Created;
use crate::secret::Secret;
use crate::verify;

pub use api::Api;

/// Where `sync` and `rotate` write password files unless told otherwise.
pub const SECRETS_DIR: &str = "/etc/postrelay/secrets";
/// The environment variable the API key may come from.
pub const KEY_VAR: &str = "MAILGUN_API_KEY";
/// The name of the logins `sync` creates, before `@domain`.
pub const DEFAULT_LOGIN: &str = "postrelay";
/// Length of the passwords postrelay chooses (Mailgun takes 5 to 32 characters).
pub const PASSWORD_LEN: usize = 32;
/// The provider name in the desired state.
const PROVIDER: &str = "mailgun";
/// Largest API key file read.
const MAX_KEY_FILE: u64 = 4096;

/// The API key: from `file` (root's, not readable by group or others, like a password
/// file), else from [`KEY_VAR`].
pub fn api_key(file: Option<&Path>) -> Result<Secret<String>> {
    let key = match file {
        Some(path) => {
            let s = fs::read_private(path, MAX_KEY_FILE)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let text = String::from_utf8(s.bytes.into_inner())
                .map_err(|_| anyhow::anyhow!("{}: not valid UTF-8", path.display()))?;
            let key = text.lines().next().unwrap_or("").trim().to_string();
            if key.is_empty() {
                bail!("{}: empty; it must hold the API key", path.display());
            }
            key
        }
        None => match std::env::var(KEY_VAR) {
            Ok(k) if !k.trim().is_empty() => k.trim().to_string(),
            _ => bail!("no Mailgun API key: give --api-key-file FILE (mode 0600) or set {KEY_VAR}"),
        },
    };
    if key.chars().any(|c| c.is_control() || c == ' ') {
        bail!("the Mailgun API key holds spaces or control characters");
    }
    Ok(Secret::new(key))
}

/// A password of [`PASSWORD_LEN`] letters and digits from the OS random generator
/// (unbiased: bytes beyond the largest multiple of 62 are drawn again).
pub fn new_password() -> Result<Secret<String>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(PASSWORD_LEN);
    let mut buf = [0u8; 64];
    while out.len() < PASSWORD_LEN {
        getrandom::getrandom(&mut buf)
            .map_err(|e| anyhow::anyhow!("the OS random generator failed: {e}"))?;
        for &b in &buf {
            if (b as usize) < 248 && out.len() < PASSWORD_LEN {
                out.push(ALPHABET[b as usize % 62] as char);
            }
        }
    }
    Ok(Secret::new(out))
}

/// The desired-state file as it is now: its text (empty when missing), validated.
struct Current {
    text: String,
    /// `None`: the file does not exist yet.
    meta: Option<fs::Meta>,
    desired: Option<Desired>,
}

fn read_current(path: &Path) -> Result<Current> {
    let Some(snapshot) = fs::read_if_exists(path, desired::MAX_DESIRED_SIZE, Links::Trusted)?
    else {
        return Ok(Current {
            text: String::new(),
            meta: None,
            desired: None,
        });
    };
    let text = String::from_utf8(snapshot.bytes.into_inner())
        .map_err(|_| anyhow::anyhow!("{}: not valid UTF-8", path.display()))?;
    let d = desired::parse(path, &text, snapshot.meta.mode)?;
    Ok(Current {
        text,
        meta: Some(snapshot.meta),
        desired: Some(d),
    })
}

/// Validates `text` as the new desired-state file and writes it in place of the old
/// one (same mode and owner), or creates it (0600).
fn write_desired(path: &Path, text: &str, meta: Option<&fs::Meta>) -> Result<Desired> {
    let mode = meta.map_or(0o600, |m| m.mode & 0o7777);
    let d = desired::parse(path, text, mode)?;
    match meta {
        Some(m) => fs::write_atomic(path, text.as_bytes(), mode, Some((m.uid, m.gid)))?,
        None => {
            let mut created = Created::default();
            if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                created.dir(dir)?;
            }
            created.file(path, text.as_bytes())?;
            created.keep();
        }
    }
    Ok(d)
}

/// Reads a password file postrelay wrote.
fn read_password(path: &Path) -> Result<Secret<String>> {
    fs::read_private(path, desired::MAX_FILE_SIZE)
        .and_then(|s| fields::password_from_file(s.bytes.into_inner()))
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// The secrets directory, created 0700 if missing; refused when others may write it.
fn secrets_dir(dir: &Path) -> Result<()> {
    let mut created = Created::default();
    created.dir(dir)?;
    created.keep();
    fs::trusted_dir(dir).map(drop)
}

// ---------------------------------------------------------------------------------
// sync

/// What `mailgun sync` is asked to do.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    pub config: PathBuf,
    /// `us` or `eu`.
    pub region: String,
    /// Only these domains (each must be in the account); empty: all.
    pub domains: Vec<String>,
    /// The login's name before `@domain`.
    pub login: String,
    pub secrets_dir: PathBuf,
    pub dry_run: bool,
}

/// What happened to one domain of the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A login was created (or, with `dry_run`, would be) and the entry added.
    Added {
        domain: String,
        login: String,
        password_file: PathBuf,
        /// The login and its password file were left by an earlier run that stopped
        /// before it added the entry: both reused.
        resumed: bool,
    },
    /// The desired state has an entry for it: left alone.
    Present { domain: String },
    /// Mailgun has it disabled: left out.
    Disabled { domain: String },
    /// Not a domain name postrelay takes (as the API gave it): left out.
    Unusable { domain: String, why: String },
    /// The login exists at Mailgun, but its password is not in the secrets directory
    /// (another host's, or made by hand): left out, since only its owner knows the
    /// password and changing it would cut them off.
    Foreign { domain: String, login: String },
}

/// The result of `mailgun sync`.
#[derive(Debug)]
pub struct Synced {
    pub config: PathBuf,
    pub region: String,
    /// Domains in the account.
    pub total: usize,
    pub actions: Vec<Action>,
    pub dry_run: bool,
}

impl Synced {
    /// Domains added (or that would be).
    pub fn added(&self) -> usize {
        self.actions
            .iter()
            .filter(|a| matches!(a, Action::Added { .. }))
            .count()
    }

    /// Domains left out that need the administrator (exit 1).
    pub fn left_out(&self) -> usize {
        self.actions
            .iter()
            .filter(|a| matches!(a, Action::Foreign { .. } | Action::Unusable { .. }))
            .count()
    }
}

/// A sync that stopped partway: what was done is in the desired state.
#[derive(Debug)]
pub struct SyncStopped {
    pub done: Synced,
    pub domain: String,
    pub cause: anyhow::Error,
}

impl fmt::Display for SyncStopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mailgun sync stopped at {}: {:#}\n  {} domain(s) before it were added to {}; run the same command again to continue",
            self.domain,
            self.cause,
            self.done.added(),
            self.done.config.display()
        )
    }
}

impl std::error::Error for SyncStopped {}

/// `postrelay mailgun sync`.
pub fn sync(options: &SyncOptions, api: &Api) -> Result<Synced> {
    let config = &options.config;
    let name_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if options.login.is_empty() || options.login.len() > 64 || !options.login.chars().all(name_ok) {
        bail!(
            "--login {:?}: expected a name of letters, digits, '.', '_' and '-' (the part before @DOMAIN)",
            options.login
        );
    }
    let current = read_current(config)?;
    let present: std::collections::HashSet<&str> = current
        .desired
        .iter()
        .flat_map(|d| &d.senders)
        .filter_map(|s| match &s.key {
            SenderKey::Domain(d) => Some(d.as_str()),
            SenderKey::Wildcard(_) | SenderKey::Address(_) => None,
        })
        .collect();
    let mut domains = api.domains()?;
    let total = domains.len();
    for d in &mut domains {
        d.name = d.name.to_ascii_lowercase();
    }
    domains.sort_by(|a, b| a.name.cmp(&b.name));
    if !options.domains.is_empty() {
        let wanted: Vec<String> = options
            .domains
            .iter()
            .map(|d| d.trim_start_matches('@').to_ascii_lowercase())
            .collect();
        let missing: Vec<&str> = wanted
            .iter()
            .filter(|w| !domains.iter().any(|d| &d.name == *w))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            bail!(
                "not in the Mailgun account ({} region): {}",
                options.region,
                missing.join(", ")
            );
        }
        domains.retain(|d| wanted.contains(&d.name));
    }
    let mut synced = Synced {
        config: config.clone(),
        region: options.region.clone(),
        total,
        actions: Vec::new(),
        dry_run: options.dry_run,
    };
    if !options.dry_run {
        secrets_dir(&options.secrets_dir)?;
    }
    let mut stopped = None;
    for d in &domains {
        let domain = d.name.clone();
        if present.contains(domain.as_str()) {
            synced.actions.push(Action::Present { domain });
            continue;
        }
        if d.state == "disabled" {
            synced.actions.push(Action::Disabled { domain });
            continue;
        }
        // A name the API gave goes into a URL, a file name and the desired state.
        if let Err(why) = fields::parse_domain(&domain) {
            synced.actions.push(Action::Unusable { domain, why });
            continue;
        }
        match add_domain(options, api, &domain) {
            Ok(action) => synced.actions.push(action),
            Err(cause) => {
                stopped = Some((domain, cause));
                break;
            }
        }
    }
    if !options.dry_run {
        let added: Vec<NewSender<'_>> = synced
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Added {
                    domain,
                    login,
                    password_file,
                    ..
                } => Some(NewSender {
                    domain,
                    provider: PROVIDER,
                    region: (options.region != "us").then_some(options.region.as_str()),
                    username: login,
                    password_file,
                }),
                _ => None,
            })
            .collect();
        if !added.is_empty() {
            let text = edit::add_senders(config, &current.text, &added)?;
            write_desired(config, &text, current.meta.as_ref())?;
        }
    }
    match stopped {
        None => Ok(synced),
        Some((domain, cause)) => Err(SyncStopped {
            done: synced,
            domain,
            cause,
        }
        .into()),
    }
}

/// Creates the login for one new domain: its password file first (so a run that stops
/// here leaves what the next run needs), then the login.
fn add_domain(options: &SyncOptions, api: &Api, domain: &str) -> Result<Action> {
    let login = format!("{}@{domain}", options.login);
    let password_file = options.secrets_dir.join(&login);
    let at_mailgun = api
        .logins(domain)?
        .iter()
        .any(|l| l.eq_ignore_ascii_case(&login));
    let have_file = exists(&password_file);
    if at_mailgun && !have_file {
        return Ok(Action::Foreign {
            domain: domain.to_string(),
            login,
        });
    }
    let added = |resumed| Action::Added {
        domain: domain.to_string(),
        login: login.clone(),
        password_file: password_file.clone(),
        resumed,
    };
    if options.dry_run {
        return Ok(added(have_file));
    }
    if have_file {
        // Left by a run that stopped: its password, and the login if it was not made.
        let password = read_password(&password_file)?;
        if !at_mailgun {
            api.create_login(domain, &login, &password)?;
        }
        return Ok(added(true));
    }
    let password = new_password()?;
    let mut created = Created::default();
    created.file(
        &password_file,
        format!("{}\n", password.expose()).as_bytes(),
    )?;
    api.create_login(domain, &login, &password)?;
    created.keep();
    Ok(added(false))
}

// ---------------------------------------------------------------------------------
// rotate

/// What `mailgun rotate` is asked to do.
#[derive(Debug, Clone)]
pub struct RotateOptions {
    pub config: PathBuf,
    /// The sender domain whose login to rotate.
    pub sender: String,
    pub postfix_dir: Option<PathBuf>,
    pub secrets_dir: PathBuf,
    /// How long a new login may take before the relay accepts it.
    pub settle: Duration,
    pub apply: apply::Options,
    /// Record the apply in the mail log (see `audit`).
    pub syslog: bool,
}

/// The steps of a rotation, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// Write the new login's password file (0600).
    WritePassword = 1,
    /// Create the new login at Mailgun.
    CreateLogin = 2,
    /// Log in to the relay with the new login (verify).
    Verify = 3,
    /// Apply the new login, then name it in the desired-state file.
    Apply = 4,
    /// Delete the old login at Mailgun.
    DeleteOld = 5,
}

impl Step {
    pub fn describe(self) -> &'static str {
        match self {
            Step::WritePassword => "write the new password file",
            Step::CreateLogin => "create the new login at Mailgun",
            Step::Verify => "log in to the relay with the new login",
            Step::Apply => "apply the new login, then name it in the desired state",
            Step::DeleteOld => "delete the old login at Mailgun",
        }
    }
}

/// A rotation that stopped: the step, why, where things stand, how to go on.
#[derive(Debug)]
pub struct Stopped {
    pub step: Step,
    pub cause: anyhow::Error,
    /// Which login the host uses now, and whether it works.
    pub state: String,
    pub resume: String,
}

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mailgun rotate stopped at step {} of 5 ({}): {:#}\n  {}\n  {}",
            self.step as u8,
            self.step.describe(),
            self.cause,
            self.state,
            self.resume
        )
    }
}

impl std::error::Error for Stopped {}

/// A rotation done.
#[derive(Debug)]
pub struct Rotated {
    /// The desired-state file.
    pub config: PathBuf,
    pub domain: String,
    pub old_login: String,
    pub new_login: String,
    pub password_file: PathBuf,
    /// The old password file, removed (it was in the secrets directory).
    pub removed_file: Option<PathBuf>,
    /// The new login and its file came from an earlier run that stopped: reused.
    pub resumed: bool,
    pub checks: Vec<verify::Outcome>,
    pub outcome: apply::Outcome,
}

/// The login after `login` in the rotation sequence `name`, `name-2`, `name-3`…
fn next_login(login: &str, domain: &str, n: u32) -> String {
    let name = login.strip_suffix(&format!("@{domain}")).unwrap_or(login);
    let base = match name.rsplit_once('-') {
        Some((b, k)) if !b.is_empty() && k.parse::<u32>().is_ok_and(|k| k >= 2) => b,
        _ => name,
    };
    format!("{base}-{n}@{domain}")
}

/// The sequence number of `login` (1 for a name without `-N`).
fn login_number(login: &str, domain: &str) -> u32 {
    let name = login.strip_suffix(&format!("@{domain}")).unwrap_or(login);
    match name.rsplit_once('-') {
        Some((b, k)) if !b.is_empty() => k.parse::<u32>().ok().filter(|&k| k >= 2).unwrap_or(1),
        _ => 1,
    }
}

/// The rotation's plan: the sender's entry and the new login.
struct Rotation {
    domain: String,
    old_login: String,
    old_file: Option<PathBuf>,
    new_login: String,
    new_file: PathBuf,
    /// The new password file exists already (an earlier run stopped after writing it).
    file_exists: bool,
    /// The new login exists at Mailgun already.
    at_mailgun: bool,
}

/// The API client for a region (`us`, `eu`): the region's host, unless the caller chose
/// another base.
pub type Connect<'a> = &'a dyn Fn(&str) -> Result<Api>;

/// The desired state, the sender's mailgun entry (with its region, `us` unless it says
/// `eu`), and an API client for that region.
fn sender_entry(
    options: &RotateOptions,
    connect: Connect<'_>,
) -> Result<(Current, String, edit::ProviderEntry, Api)> {
    let config = &options.config;
    let current = read_current(config)?;
    if current.meta.is_none() {
        bail!("{}: no such file", config.display());
    }
    let domain = options.sender.trim_start_matches('@').to_ascii_lowercase();
    let entry = edit::provider_entry(config, &current.text, &domain)?;
    let api = connect(entry.region.as_deref().unwrap_or("us"))?;
    Ok((current, domain, entry, api))
}

/// `postrelay mailgun rotate --sender DOMAIN`.
pub fn rotate(options: &RotateOptions, connect: Connect<'_>) -> Result<Rotated> {
    let config = &options.config;
    let (current, domain, entry, api) = sender_entry(options, connect)?;
    let api = &api;
    let r = plan_rotation(options, api, domain, entry)?;
    let keep_old = format!(
        "The host still sends as {}, which still works.",
        r.old_login
    );
    let stop = |step, cause, resume: &str| Stopped {
        step,
        cause,
        state: keep_old.clone(),
        resume: resume.to_string(),
    };
    let again =
        "Run the same command again to resume: it reuses the new login and its password file.";

    // 1. The new password file (or the one an earlier run wrote).
    let password = match r.file_exists {
        true => read_password(&r.new_file).map_err(|e| stop(Step::WritePassword, e, again))?,
        false => {
            let password = new_password()?;
            secrets_dir(&options.secrets_dir)
                .and_then(|()| {
                    let mut created = Created::default();
                    created.file(&r.new_file, format!("{}\n", password.expose()).as_bytes())?;
                    created.keep();
                    Ok(())
                })
                .map_err(|e| {
                    stop(
                        Step::WritePassword,
                        e,
                        "Nothing was created; fix the cause and run the same command again.",
                    )
                })?;
            password
        }
    };
    // 2. The new login.
    if !r.at_mailgun {
        api.create_login(&r.domain, &r.new_login, &password)
            .map_err(|e| stop(Step::CreateLogin, e, again))?;
    }
    // 3. The relay takes the new login: checked on the edited desired state, in memory.
    let new_text = edit::switch_login(config, &current.text, &r.domain, &r.new_login, &r.new_file)?;
    let meta = current
        .meta
        .as_ref()
        .expect("sender_entry checked it exists");
    let new_desired = desired::parse(config, &new_text, meta.mode)?;
    let checks =
        verify_login(options, &new_desired, &r.domain).map_err(|e| stop(Step::Verify, e, again))?;
    // 4. The host switched (apply, which changes nothing when it fails), then the
    //    desired state: a run that stops between the two leaves the file naming the
    //    old login, which still works, and the next run resumes with the new one.
    let result = apply::run(&new_desired, options.postfix_dir.as_deref(), &options.apply);
    if options.syslog {
        let dir = options
            .postfix_dir
            .clone()
            .or_else(|| new_desired.config_dir.clone());
        if let Err(e) = audit::record(config, dir.as_deref(), result.as_ref()) {
            tracing::warn!("{e:#}");
        }
    }
    let outcome = result.map_err(|e| stop(Step::Apply, e, again))?;
    let mode = meta.mode & 0o7777;
    fs::write_atomic(config, new_text.as_bytes(), mode, Some((meta.uid, meta.gid))).map_err(|e| {
        Stopped {
            step: Step::Apply,
            cause: e,
            state: format!(
                "The host now sends as {} (checked and applied), but {} still names {}, which still works.",
                r.new_login,
                config.display(),
                r.old_login
            ),
            resume: again.to_string(),
        }
    })?;
    // 5. The old login, which the host no longer uses.
    api.delete_login(&r.domain, &r.old_login).map_err(|e| Stopped {
        step: Step::DeleteOld,
        cause: e,
        state: format!(
            "The host now sends as {} (checked and applied); the old login {} still exists at Mailgun.",
            r.new_login, r.old_login
        ),
        resume: format!(
            "Delete it once the API answers: postrelay mailgun rotate --sender {} --delete-login {}",
            r.domain, r.old_login
        ),
    })?;
    let removed_file = match &r.old_file {
        Some(f) if f.parent() == Some(options.secrets_dir.as_path()) && f != &r.new_file => {
            fs::remove_if_exists(f)?;
            Some(f.clone())
        }
        _ => None,
    };
    Ok(Rotated {
        config: config.clone(),
        domain: r.domain,
        old_login: r.old_login,
        new_login: r.new_login,
        password_file: r.new_file,
        removed_file,
        resumed: r.file_exists,
        checks,
        outcome,
    })
}

fn plan_rotation(
    options: &RotateOptions,
    api: &Api,
    domain: String,
    entry: edit::ProviderEntry,
) -> Result<Rotation> {
    let config = &options.config;
    if entry.provider != PROVIDER {
        bail!(
            "{}: the [[sender]] for {domain} has provider = {:?}; mailgun rotate changes mailgun logins only",
            config.display(),
            entry.provider
        );
    }
    let Some(old_login) = entry.username.map(|u| u.to_ascii_lowercase()) else {
        bail!(
            "{}: the [[sender]] for {domain} has no username",
            config.display()
        );
    };
    if !old_login.ends_with(&format!("@{domain}")) {
        bail!(
            "{}: the login {old_login} of {domain} is not name@{domain}, as Mailgun's SMTP logins are",
            config.display()
        );
    }
    let old_file = entry.password_file.map(|f| {
        let dir = config.parent().unwrap_or(Path::new(""));
        dir.join(f)
    });
    let logins: Vec<String> = api
        .logins(&domain)?
        .into_iter()
        .map(|l| l.to_ascii_lowercase())
        .collect();
    if !logins.contains(&old_login) {
        bail!(
            "the login {old_login} of {} is not at Mailgun (wrong region or API key, or deleted there); nothing changed",
            config.display()
        );
    }
    // The first login after the current one that is free, or that an earlier run left
    // with its password file.
    let mut n = login_number(&old_login, &domain) + 1;
    loop {
        let new_login = next_login(&old_login, &domain, n);
        let new_file = options.secrets_dir.join(&new_login);
        let file_exists = exists(&new_file);
        let at_mailgun = logins.contains(&new_login);
        if file_exists || !at_mailgun {
            return Ok(Rotation {
                domain,
                old_login,
                old_file,
                new_login,
                new_file,
                file_exists,
                at_mailgun,
            });
        }
        n += 1;
    }
}

/// Logs in with the new login until the relay takes it or `settle` has passed.
fn verify_login(
    options: &RotateOptions,
    d: &Desired,
    domain: &str,
) -> Result<Vec<verify::Outcome>> {
    let deadline = Instant::now() + options.settle;
    loop {
        let checks = verify::checks(d, Some(domain))?;
        let outcomes = verify::run_for(
            d,
            options.postfix_dir.as_deref(),
            checks,
            verify::DEFAULT_TIMEOUT,
            1,
        )?;
        if verify::all_ok(&outcomes) {
            return Ok(outcomes);
        }
        if Instant::now() >= deadline {
            let why: Vec<String> = outcomes
                .iter()
                .filter_map(|o| o.result.as_ref().err().map(crate::report::failure))
                .collect();
            bail!("the relay refused the new login: {}", why.join("; "));
        }
        std::thread::sleep(Duration::from_secs(2).min(options.settle));
    }
}

/// `mailgun rotate --delete-login LOGIN`: finishes a rotation that stopped at its last
/// step. Refuses the login the desired state names.
pub fn delete_login(options: &RotateOptions, connect: Connect<'_>, login: &str) -> Result<()> {
    let config = &options.config;
    let (_, domain, entry, api) = sender_entry(options, connect)?;
    let login = login.to_ascii_lowercase();
    if entry.username.as_deref().map(str::to_ascii_lowercase) == Some(login.clone()) {
        bail!(
            "{login}: {} uses this login for {domain}; rotate first",
            config.display()
        );
    }
    if !login.ends_with(&format!("@{domain}")) {
        bail!("{login}: not a login of {domain}");
    }
    api.delete_login(&domain, &login)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_32_letters_and_digits_and_differ() {
        let a = new_password().unwrap();
        let b = new_password().unwrap();
        assert_eq!(a.expose().len(), PASSWORD_LEN);
        assert!(a.expose().bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    #[test]
    fn logins_rotate_in_sequence() {
        assert_eq!(
            next_login("postrelay@a.example", "a.example", 2),
            "postrelay-2@a.example"
        );
        assert_eq!(
            next_login("postrelay-2@a.example", "a.example", 3),
            "postrelay-3@a.example"
        );
        assert_eq!(
            next_login("mail-out@a.example", "a.example", 2),
            "mail-out-2@a.example"
        );
        assert_eq!(login_number("postrelay-7@a.example", "a.example"), 7);
        assert_eq!(login_number("mail-out@a.example", "a.example"), 1);
        assert_eq!(login_number("x-1@a.example", "a.example"), 1);
    }
}
