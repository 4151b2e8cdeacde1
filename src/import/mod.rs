//! `postrelay import`: adopt the sender-dependent relaying a host already has. Reads
//! what Postfix uses now (main.cf's `relayhost` and the tables its
//! `smtp_sasl_password_maps`, `sender_dependent_relayhost_maps` and
//! `smtp_tls_policy_maps` name), computes for every sender key what Postfix resolves
//! (next hop, credentials, TLS level), and writes a commented desired-state file whose
//! entries give exactly those routes under postrelay's rule, so that the first `plan`
//! changes no routing: only the maps' header, order and formatting.
//!
//! The pipeline: `params` (main.cf, expanded) → `maps` (the tables, read as Postfix
//! reads them) → `resolve` (Postfix's lookup order) → `build` (postrelay entries, and
//! [`Finding`]s for everything that cannot be expressed or is not used) → `render`
//! (TOML text, password files) → `write` (exclusive creation). Before the desired-state
//! file is written, it is loaded by postrelay's own loader and compared with what was
//! built ([`render::check_same`]).
//!
//! No password reaches stdout or stderr: the document goes to stdout only when every
//! password is in a file under `--password-dir`, findings never quote a value of a
//! password table, and passwords are [`Secret`]s throughout.

mod build;
mod maps;
mod params;
mod render;
mod resolve;
pub(crate) mod write;

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::desired;
use crate::fs::{self, Links};
use crate::managed::MapKind;
use crate::postfix;
use crate::syntax::maincf::MainCf;

pub use params::DEFAULTS;

/// Something import could not carry over as it is, or a setting that changes what the
/// imported entries mean, with where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `FILE, line N` or `FILE`; `None` for a finding about a route.
    pub at: Option<String>,
    pub message: String,
}

impl Finding {
    pub fn at(at: &str, message: impl Into<String>) -> Finding {
        Finding {
            at: Some(at.to_string()),
            message: message.into(),
        }
    }

    pub fn general(message: impl Into<String>) -> Finding {
        Finding {
            at: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.at {
            Some(at) => write!(f, "{at}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub postfix_dir: PathBuf,
    /// The desired-state file to create; `-`: stdout.
    pub output: PathBuf,
    /// Where password files go; `None`: inline in the (0600) desired-state file.
    pub password_dir: Option<PathBuf>,
}

/// What import did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// For stdout: the document (output `-`), else a summary line.
    pub stdout: String,
    /// For stderr: one line per finding and a closing line; empty when there are none.
    pub stderr: String,
    pub findings: Vec<Finding>,
}

/// Reads the Postfix instance in `options.postfix_dir` and writes the desired state.
pub fn run(options: &Options) -> Result<Outcome> {
    let to_stdout = options.output == Path::new("-");
    if to_stdout && options.password_dir.is_none() {
        bail!(
            "--output - prints the desired state on stdout, where no password may go: give --password-dir DIR too (passwords then go to files there)"
        );
    }
    let output = if to_stdout {
        options.output.clone()
    } else {
        let o = std::path::absolute(&options.output)
            .map_err(|e| fs::explain(e, &options.output, "resolve"))?;
        write::refuse_existing(&o)?;
        o
    };
    let dir = crate::state::resolve_config_dir(&options.postfix_dir)?;
    let host = read(&dir)?;
    let mut findings = host.findings;
    let imported = build::build(
        &host.tables,
        &host.rules,
        &host.global_tls,
        &host.relayhost_at,
        &mut findings,
    );
    if imported.relayhost.is_none() && imported.senders.is_empty() {
        let why = findings
            .iter()
            .map(|f| format!("\n  {f}"))
            .collect::<String>();
        bail!(
            "{}: nothing to import: no relayhost and no sender postrelay can express{why}",
            dir.display()
        );
    }
    let password_dir = match &options.password_dir {
        Some(d) => Some(std::path::absolute(d).map_err(|e| fs::explain(e, d, "resolve"))?),
        None => None,
    };
    let files = render::password_files(&imported, password_dir.as_deref());
    let header = render::Header {
        config_dir: &dir,
        map_type: host.map_type.as_deref(),
    };
    let text = render::desired(&header, &imported, &findings, &files);
    create(&output, password_dir.as_deref(), &files, &text, &imported)?;
    let senders = imported.senders.len();
    let summary = format!(
        "imported {senders} sender(s){} from {} into {}{}\n",
        if imported.relayhost.is_some() {
            " and the relayhost"
        } else {
            ""
        },
        dir.display(),
        output.display(),
        match &password_dir {
            Some(d) => format!(
                "; {} password file(s) in {}",
                files.iter().flatten().count(),
                d.display()
            ),
            None => String::new(),
        }
    );
    tracing::info!("{}", summary.trim_end());
    let stderr = findings_text(&findings);
    Ok(Outcome {
        stdout: if to_stdout { text } else { summary },
        stderr,
        findings,
    })
}

/// The findings as stderr lines, with a closing line saying what they mean.
fn findings_text(findings: &[Finding]) -> String {
    if findings.is_empty() {
        return String::new();
    }
    let mut out: String = findings
        .iter()
        .map(|f| format!("postrelay: import: {f}\n"))
        .collect();
    out.push_str(&format!(
        "postrelay: import: {} finding(s): what they name is not imported as Postfix uses it now; review them (they are also comments at the top of the file) before `postrelay apply`\n",
        findings.len()
    ));
    out
}

/// The config directory: an existing directory, canonical.
/// Creates the password files, checks the document against what was built (loading it
/// as postrelay loads a desired state), then creates the document (or leaves it for
/// stdout). Nothing that exists is overwritten; on failure nothing is left behind.
fn create(
    output: &Path,
    password_dir: Option<&Path>,
    files: &[Option<render::PasswordFile>],
    text: &str,
    imported: &build::Imported,
) -> Result<()> {
    for f in files.iter().flatten() {
        write::refuse_existing(&f.path)?;
    }
    let mut created = write::Created::default();
    if let Some(d) = password_dir.filter(|_| files.iter().flatten().next().is_some()) {
        created.dir(d)?;
    }
    for f in files.iter().flatten() {
        created.file(&f.path, format!("{}\n", f.password.expose()).as_bytes())?;
    }
    let to_stdout = output == Path::new("-");
    let shown = if to_stdout {
        Path::new("<stdout>")
    } else {
        output
    };
    let parsed = desired::parse(shown, text, write::FILE_MODE).map_err(|e| {
        anyhow::anyhow!("the desired state import built does not load (a bug):\n{e}")
    })?;
    render::check_same(&parsed, imported).map_err(|e| {
        anyhow::anyhow!("the desired state import built reads back differently (a bug): {e}")
    })?;
    if !to_stdout {
        if let Some(parent) = output.parent() {
            created.dir(parent)?;
        }
        created.file(output, text.as_bytes())?;
    }
    created.keep();
    Ok(())
}

/// What import reads from the host.
struct Host {
    tables: maps::Tables,
    rules: resolve::Rules,
    global_tls: build::GlobalTls,
    /// Where main.cf sets `relayhost`.
    relayhost_at: String,
    /// The type every imported table has, if they share one.
    map_type: Option<String>,
    findings: Vec<Finding>,
}

/// Reads main.cf and the tables it names.
fn read(dir: &Path) -> Result<Host> {
    let path = dir.join(crate::managed::MAIN_CF);
    let snapshot = fs::read(&path, fs::MAX_CONFIG_SIZE, Links::Trusted)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let doc = MainCf::parse(snapshot.bytes.expose());
    let mut builtins = vec![("config_directory", dir.display().to_string())];
    if !doc
        .definitions()
        .iter()
        .any(|d| d.name == "default_database_type")
    {
        builtins.push((
            "default_database_type",
            postfix::default_database_type(dir)?,
        ));
    }
    let p = params::Params::new(&path, &doc, &builtins)?;
    let mut findings = Vec::new();
    let mut lists: [Vec<maps::Map>; 3] = Default::default();
    for kind in MapKind::CORE {
        let value = p.get(kind.parameter())?;
        let at = p.place(&value);
        lists[kind.index()] = maps::read_list(dir, kind, &value, &at, &mut findings)
            .with_context(|| format!("reading the tables of {}", kind.parameter()))?;
    }
    let tables = maps::Tables::new(lists);
    let relayhost = p.get("relayhost")?;
    let rules = resolve::Rules {
        relayhost: Some(relayhost.text.clone()).filter(|r| !r.is_empty()),
        sender_auth: params::is_yes(&p.get("smtp_sender_dependent_authentication")?.text),
        delimiters: p.get("recipient_delimiter")?.text,
        null_key: p.get("empty_address_relayhost_maps_lookup_key")?.text,
    };
    if rules.relayhost.is_none() && MapKind::CORE.iter().all(|k| tables.maps(*k).is_empty()) {
        bail!(
            "{}: nothing to import: no relayhost, and no table in smtp_sasl_password_maps, sender_dependent_relayhost_maps or smtp_tls_policy_maps that import can read",
            path.display()
        );
    }
    settings(&p, &tables, &mut findings)?;
    let mut types = MapKind::CORE
        .iter()
        .flat_map(|k| tables.maps(*k))
        .map(|m| m.map_type.clone());
    let first = types.next();
    let map_type = first.filter(|t| types.all(|o| o == *t));
    Ok(Host {
        global_tls: global_tls(&p)?,
        relayhost_at: p.place(&relayhost),
        tables,
        rules,
        map_type,
        findings,
    })
}

/// The effective global TLS level: `smtp_tls_security_level`, else its legacy
/// equivalents (`smtp_tls_policy.c`, `global_tls_level`).
fn global_tls(p: &params::Params) -> Result<build::GlobalTls> {
    let level = p.get("smtp_tls_security_level")?;
    if !level.text.is_empty() {
        return Ok(build::GlobalTls {
            at: p.place(&level),
            what: format!("smtp_tls_security_level = {}", level.text),
            level: level.text,
        });
    }
    let yes = |name: &str| -> Result<Option<params::Value>> {
        let v = p.get(name)?;
        Ok(params::is_yes(&v.text).then_some(v))
    };
    let (level, setting) = if let Some(v) = yes("smtp_enforce_tls")? {
        let peer = yes("smtp_tls_enforce_peername")?.is_some();
        (
            if peer { "verify" } else { "encrypt" },
            Some(("smtp_enforce_tls", v)),
        )
    } else if let Some(v) = yes("smtp_use_tls")? {
        ("may", Some(("smtp_use_tls", v)))
    } else {
        ("none", None)
    };
    let (at, what) = match setting {
        Some((name, v)) => (
            p.place(&v),
            format!("{name} = yes (legacy; smtp_tls_security_level is empty)"),
        ),
        None => (
            p.path.display().to_string(),
            "smtp_tls_security_level is empty (Postfix's default: no TLS)".to_string(),
        ),
    };
    Ok(build::GlobalTls {
        level: level.to_string(),
        at,
        what,
    })
}

/// Settings that change what the imported entries mean, or that postrelay will change.
fn settings(p: &params::Params, tables: &maps::Tables, findings: &mut Vec<Finding>) -> Result<()> {
    let mut note = |name: &str, message: &str| -> Result<()> {
        let v = p.get(name)?;
        findings.push(Finding::at(
            &p.place(&v),
            format!("{name} = {}: {message}", v.text),
        ));
        Ok(())
    };
    if !params::is_yes(&p.get("smtp_sasl_auth_enable")?.text)
        && !tables.maps(MapKind::SaslPasswd).is_empty()
    {
        note(
            "smtp_sasl_auth_enable",
            "Postfix sends no credentials now; the credentials in the maps are imported, and apply turns SASL on",
        )?;
    }
    for name in ["transport_maps", "sender_dependent_default_transport_maps"] {
        if !p.get(name)?.text.is_empty() {
            note(
                name,
                "it can override the next hop of some mail; import does not read it and postrelay does not manage it",
            )?;
        }
    }
    for name in ["default_transport", "relay_transport"] {
        if p.get(name)?.text.contains(':') {
            note(
                name,
                "a next hop set here overrides the relayhost and the sender relays; postrelay does not manage it",
            )?;
        }
    }
    if p.get("smtp_tls_policy_maps")?.text.is_empty()
        && !p.get("smtp_tls_per_site")?.text.is_empty()
    {
        note(
            "smtp_tls_per_site",
            "legacy per-site TLS table, not imported: apply writes smtp_tls_policy_maps, which makes Postfix ignore it",
        )?;
    }
    Ok(())
}
