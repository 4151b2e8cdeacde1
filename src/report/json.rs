//! The reports as JSON (`--format json`): one document per run on stdout, rendered from
//! the same data and with the same words and masking as the text reports of the parent
//! module. The schema is docs/json.md (and docs/json.schema.json, which the tests check
//! real outputs against); [`FORMAT_VERSION`] changes when a field changes meaning or
//! goes away, not when one is added.

use serde::Serialize;

use super::{
    apply_summary, apply_warning_texts, command_line, edits, failure, main_cf_diff, map_diff,
    mask_map_secrets, master_cf_diff, master_cf_summary, note, plan_summary, problems_summary,
    reason, step, validate_summary, verify_summary, warning_texts,
};
use crate::apply::{Outcome, Skip, Step};
use crate::desired::Desired;
use crate::hold::Hold;
use crate::managed::MapKind;
use crate::plan::{
    Changed, Command, EntryChange, MainCfChange, MapChange, MasterCfChange, Part, Plan, Reason,
};
use crate::postfix::Control;
use crate::problems::Problems;
use crate::state::{Kept, KeptMap};
use crate::syntax::maincf::Edit;
use crate::verify;

/// The version of the document's layout.
pub const FORMAT_VERSION: u32 = 1;

/// What a run reports.
#[derive(Debug, Serialize)]
struct Document {
    format_version: u32,
    command: &'static str,
    /// The desired-state file (`<stdin>` for `--config -`).
    config: String,
    /// plan: whether apply would change anything; apply: whether it did.
    changed: bool,
    /// The text report's summary line (what Salt's stateful `cmd.run` shows).
    comment: String,
    files: Vec<File>,
    /// plan: the commands apply would run (`postfix` and `postqueue` only if Postfix is
    /// running); apply: those it ran.
    commands: Vec<String>,
    /// plan: the mail apply would hold in the queue while Postfix switches; apply: the
    /// mail it held. `null`: none.
    hold: Option<HoldJson>,
    warnings: Vec<String>,
    reload: Reload,
    /// verify, and apply --verify: one per login.
    checks: Vec<CheckResult>,
    /// plan and apply: the Postfix configuration directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    postfix_dir: Option<String>,
    /// plan and apply: things to know that are not changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    notes: Option<Vec<String>>,
    /// plan and apply: the maps listed after postrelay's own, which stay.
    #[serde(skip_serializing_if = "Option::is_none")]
    kept: Option<Vec<KeptJson>>,
    /// apply: what it did, in order, as the text report says it.
    #[serde(skip_serializing_if = "Option::is_none")]
    steps: Option<Vec<String>>,
    /// validate: what the desired state holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<Summary>,
}

impl Document {
    fn new(command: &'static str, config: String) -> Document {
        Document {
            format_version: FORMAT_VERSION,
            command,
            config,
            changed: false,
            comment: String::new(),
            files: Vec::new(),
            commands: Vec::new(),
            hold: None,
            warnings: Vec::new(),
            reload: Reload::NotNeeded,
            checks: Vec::new(),
            postfix_dir: None,
            notes: None,
            kept: None,
            steps: None,
            summary: None,
        }
    }

    /// The fields plan and apply share, from the plan.
    fn planned(command: &'static str, d: &Desired, plan: &Plan, show_secrets: bool) -> Document {
        let mut doc = Document::new(command, d.path.display().to_string());
        doc.postfix_dir = Some(plan.target.config_dir.display().to_string());
        doc.files = plan
            .master_cf
            .iter()
            .map(master_cf_file)
            .chain(plan.main_cf.iter().map(main_cf_file))
            .chain(plan.maps.iter().map(|m| map_file(m, show_secrets)))
            .collect();
        doc.warnings = warning_texts(d, &plan.conflicts);
        doc.notes = Some(plan.notes.iter().map(note).collect());
        doc.kept = Some(plan.kept.iter().map(kept).collect());
        doc
    }

    fn render(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a report serialises");
        text.push('\n');
        text
    }
}

#[derive(Debug, Serialize)]
struct HoldJson {
    /// Every sender's mail (the old routing could not be told apart).
    all: bool,
    /// Else the sender_relay keys whose mail is held.
    senders: Vec<String>,
}

fn hold(h: &Hold) -> HoldJson {
    match h {
        Hold::All => HoldJson {
            all: true,
            senders: Vec::new(),
        },
        Hold::Senders(keys) => HoldJson {
            all: false,
            senders: keys.clone(),
        },
    }
}

/// Whether Postfix has read what changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Reload {
    /// apply reloaded Postfix.
    Done,
    /// Postfix has not read the changes: plan has some to make, or an earlier apply
    /// left the reload to a later run (`--no-reload`, not root).
    Owed,
    /// Nothing changed, and nothing is owed.
    NotNeeded,
    /// Postfix does not run: it reads the files when it starts.
    NotRunning,
}

/// One file plan would change or apply changed.
#[derive(Debug, Serialize)]
struct File {
    path: String,
    /// `main.cf`, `sasl_passwd`, `sender_relay` or `tls_policy`.
    kind: &'static str,
    action: Action,
    reasons: Vec<ReasonJson>,
    /// Maps: how many entries the source holds (after the change).
    #[serde(skip_serializing_if = "Option::is_none")]
    entries: Option<usize>,
    /// Maps: the keys whose entries change.
    entries_changed: Vec<EntryJson>,
    /// main.cf: the parameters set, with the values Postfix read before (masked as in
    /// the diff; `null`: added).
    parameters: Vec<Parameter>,
    /// Maps: the compiled form (`null` for texthash), and whether postmap rebuilds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    compiled: Option<Option<String>>,
    rebuild: bool,
    mode_changes: Vec<ModeChange>,
    owner_changes: Vec<OwnerChange>,
    /// The unified diff of the content, redacted as in the text report; `null` when
    /// the content stays.
    diff: Option<String>,
}

/// What happens to a file, the strongest reason first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Action {
    /// It does not exist yet.
    Create,
    /// Its content changes.
    Update,
    /// Only its compiled form is rebuilt.
    Rebuild,
    /// Only its mode or owner changes.
    Permissions,
    /// It is no longer needed: removed.
    Remove,
}

#[derive(Debug, Serialize)]
struct ReasonJson {
    code: &'static str,
    text: String,
}

#[derive(Debug, Serialize)]
struct EntryJson {
    key: String,
    /// `added`, `removed`, `password`, `username`, `credentials` (both), `relay` or
    /// `tls_policy`.
    change: &'static str,
}

#[derive(Debug, Serialize)]
struct Parameter {
    name: String,
    was: Option<String>,
}

#[derive(Debug, Serialize)]
struct ModeChange {
    file: String,
    /// Octal, as `ls -l` and chmod take it: `0644`.
    from: String,
    to: String,
}

#[derive(Debug, Serialize)]
struct OwnerChange {
    file: String,
    from_uid: u32,
    to_uid: u32,
}

#[derive(Debug, Serialize)]
struct KeptJson {
    parameter: &'static str,
    /// As main.cf lists it, secrets masked.
    map: String,
    /// `read` (then `entries`), `not_read`, `missing` or `unreadable`.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    entries: Option<usize>,
    text: String,
}

/// One login of verify.
#[derive(Debug, Serialize)]
struct CheckResult {
    sender: String,
    relay: String,
    username: Option<String>,
    tls: &'static str,
    /// `ok` or `failed`.
    result: &'static str,
    error: Option<String>,
    /// ok: whether the session used STARTTLS.
    starttls: Option<bool>,
    /// ok: whether TLS came first, without STARTTLS (a relay on port 465).
    implicit_tls: Option<bool>,
    /// ok: the AUTH mechanism (`null` without credentials).
    mechanism: Option<String>,
}

#[derive(Debug, Serialize)]
struct Summary {
    senders: usize,
    relays: usize,
    relayhost: bool,
}

/// What an error reports.
#[derive(Debug, Serialize)]
struct ErrorDocument {
    format_version: u32,
    command: &'static str,
    error: String,
    /// The same as `error` (Salt's stateful `cmd.run` shows `comment`).
    comment: String,
    /// The problems of an input file, each with its file and line; empty for other
    /// errors.
    problems: Vec<ProblemJson>,
    /// apply --verify that failed: the logins.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    checks: Vec<CheckResult>,
}

#[derive(Debug, Serialize)]
struct ProblemJson {
    file: String,
    line: Option<usize>,
    message: String,
}

fn master_cf_file(m: &MasterCfChange) -> File {
    File {
        path: m.path.display().to_string(),
        kind: "master.cf",
        action: Action::Update,
        reasons: vec![ReasonJson {
            code: "service",
            text: master_cf_summary(m),
        }],
        entries: None,
        entries_changed: Vec::new(),
        parameters: Vec::new(),
        compiled: None,
        rebuild: false,
        mode_changes: Vec::new(),
        owner_changes: Vec::new(),
        diff: Some(master_cf_diff(m)),
    }
}

fn main_cf_file(m: &MainCfChange) -> File {
    File {
        path: m.path.display().to_string(),
        kind: "main.cf",
        action: Action::Update,
        reasons: vec![ReasonJson {
            code: "parameters",
            text: format!("set {}", edits(&m.edits)),
        }],
        entries: None,
        entries_changed: Vec::new(),
        parameters: m
            .edits
            .iter()
            .map(|e| Parameter {
                name: e.name().to_string(),
                was: match e {
                    Edit::Changed { old, .. } => Some(mask_map_secrets(old)),
                    Edit::Added { .. } => None,
                },
            })
            .collect(),
        compiled: None,
        rebuild: false,
        mode_changes: Vec::new(),
        owner_changes: Vec::new(),
        diff: Some(main_cf_diff(m)),
    }
}

fn map_file(m: &MapChange, show_secrets: bool) -> File {
    let part_path = |part: Part| match (part, &m.compiled_path) {
        (Part::Compiled, Some(c)) => c.display().to_string(),
        _ => m.source_path.display().to_string(),
    };
    let action = if m.remove {
        Action::Remove
    } else if m.reasons.contains(&Reason::New) {
        Action::Create
    } else if m.reasons.contains(&Reason::ContentDiffers) {
        Action::Update
    } else if m.rebuild {
        Action::Rebuild
    } else {
        Action::Permissions
    };
    File {
        path: m.source_path.display().to_string(),
        kind: m.kind.file_name(),
        action,
        reasons: m
            .reasons
            .iter()
            .map(|r| ReasonJson {
                code: reason_code(r),
                text: reason(m, r),
            })
            .collect(),
        entries: Some(m.entries),
        entries_changed: m
            .entries_changed
            .iter()
            .map(|c| entry_change(c, m.kind))
            .collect(),
        parameters: Vec::new(),
        compiled: Some(m.compiled_path.as_ref().map(|c| c.display().to_string())),
        rebuild: m.rebuild && m.compiled_path.is_some(),
        mode_changes: m
            .reasons
            .iter()
            .filter_map(|r| match r {
                Reason::Mode { part, mode } => Some(ModeChange {
                    file: part_path(*part),
                    from: format!("{mode:04o}"),
                    to: format!("{:04o}", m.kind.mode()),
                }),
                _ => None,
            })
            .collect(),
        owner_changes: m
            .reasons
            .iter()
            .filter_map(|r| match r {
                Reason::Owner { part, uid, want } => Some(OwnerChange {
                    file: part_path(*part),
                    from_uid: *uid,
                    to_uid: *want,
                }),
                _ => None,
            })
            .collect(),
        diff: map_diff(m, show_secrets),
    }
}

fn reason_code(r: &Reason) -> &'static str {
    match r {
        Reason::New => "new",
        Reason::ContentDiffers => "content_differs",
        Reason::Mode { .. } => "mode",
        Reason::Owner { .. } => "owner",
        Reason::CompiledMissing => "compiled_missing",
        Reason::CompiledUnreadable => "compiled_unreadable",
        Reason::CompiledDiffers => "compiled_differs",
        Reason::Unused => "unused",
    }
}

fn entry_change(c: &EntryChange, kind: MapKind) -> EntryJson {
    let (key, change) = match c {
        EntryChange::Added(k) => (k, "added"),
        EntryChange::Removed(k) => (k, "removed"),
        EntryChange::Changed(k, what) => (
            k,
            match (what, kind) {
                (Changed::Password, _) => "password",
                (Changed::Username, _) => "username",
                (Changed::Credentials, _) => "credentials",
                (Changed::Value, MapKind::TlsPolicy) => "tls_policy",
                (Changed::Value, MapKind::SenderTransport) => "transport",
                (Changed::Value, _) => "relay",
            },
        ),
    };
    EntryJson {
        key: key.clone(),
        change,
    }
}

fn kept(k: &KeptMap) -> KeptJson {
    let (status, entries) = match &k.content {
        Kept::Entries(e) => ("read", Some(e.expose().len())),
        Kept::NotRead(_) => ("not_read", None),
        Kept::Missing => ("missing", None),
        Kept::Unreadable(_) => ("unreadable", None),
    };
    KeptJson {
        parameter: k.kind.parameter(),
        map: mask_map_secrets(&k.spec),
        status,
        entries,
        text: super::kept(k).trim_end().to_string(),
    }
}

fn check(o: &verify::Outcome) -> CheckResult {
    let c = &o.check;
    let (result, error, starttls, implicit_tls, mechanism) = match &o.result {
        Ok(s) => (
            "ok",
            None,
            Some(s.starttls),
            Some(s.implicit_tls),
            s.mechanism.clone(),
        ),
        Err(f) => ("failed", Some(failure(f)), None, None, None),
    };
    CheckResult {
        sender: c.who.name(),
        relay: c.relay.as_str().to_string(),
        username: c.credentials.as_ref().map(|cr| cr.username.clone()),
        tls: c.tls.as_str(),
        result,
        error,
        starttls,
        implicit_tls,
        mechanism,
    }
}

/// `postrelay plan --format json`.
pub fn plan(d: &Desired, plan: &Plan, show_secrets: bool) -> String {
    let mut doc = Document::planned("plan", d, plan, show_secrets);
    doc.changed = !plan.is_empty();
    doc.comment = plan_summary(plan);
    doc.commands = plan
        .commands()
        .iter()
        .filter_map(|c| command_line(plan, c))
        .collect();
    doc.hold = plan.hold.as_ref().map(hold);
    doc.reload = if plan.is_empty() {
        Reload::NotNeeded
    } else {
        Reload::Owed
    };
    doc.render()
}

/// `postrelay apply --format json`; `checks` are those of `--verify`; `not_recorded`:
/// why the audit line is not in the mail log, if it is not.
pub fn applied(
    d: &Desired,
    outcome: &Outcome,
    checks: &[verify::Outcome],
    not_recorded: Option<&anyhow::Error>,
) -> String {
    let plan = &outcome.plan;
    let mut doc = Document::planned("apply", d, plan, false);
    if outcome.steps.is_empty() {
        doc.files.clear();
    }
    doc.changed = !outcome.steps.is_empty();
    doc.comment = apply_summary(outcome).to_string();
    doc.commands = commands_run(outcome);
    if outcome.steps.contains(&Step::Held) {
        doc.hold = plan.hold.as_ref().map(hold);
    }
    doc.warnings.extend(apply_warning_texts(outcome));
    doc.warnings.extend(not_recorded.map(super::not_recorded));
    doc.reload = reload_done(outcome);
    doc.checks = checks.iter().map(check).collect();
    doc.steps = Some(outcome.steps.iter().map(|s| step(outcome, s)).collect());
    doc.render()
}

/// Whether apply's run left Postfix with the configuration it wrote.
fn reload_done(outcome: &Outcome) -> Reload {
    let mut reload = Reload::NotNeeded;
    for s in &outcome.steps {
        reload = match s {
            Step::Ran(Control::Reload) => Reload::Done,
            Step::Skipped(Skip::NotRunning) => Reload::NotRunning,
            Step::Skipped(Skip::NoReload | Skip::NotRoot) | Step::ReloadOwed => Reload::Owed,
            _ => continue,
        };
    }
    reload
}

/// The command lines apply ran, in order.
fn commands_run(outcome: &Outcome) -> Vec<String> {
    let plan = &outcome.plan;
    outcome
        .steps
        .iter()
        .filter_map(|s| {
            let command = match s {
                Step::Map(i) => {
                    let m = &plan.maps[*i];
                    m.compiled_path.as_ref().filter(|_| m.rebuild)?;
                    Command::Postmap {
                        source: m.source_path.clone(),
                    }
                }
                Step::Ran(Control::Check) => Command::Check,
                Step::Ran(Control::Reload) => Command::Reload,
                Step::Released => Command::Release,
                _ => return None,
            };
            command_line(plan, &command)
        })
        .collect()
}

/// `postrelay verify --format json`.
pub fn verify(d: &Desired, outcomes: &[verify::Outcome]) -> String {
    let mut doc = Document::new("verify", d.path.display().to_string());
    doc.checks = outcomes.iter().map(check).collect();
    doc.comment = verify_summary(outcomes);
    doc.render()
}

/// `postrelay validate --format json`.
pub fn validated(d: &Desired, conflicts: &[crate::conflicts::Conflict]) -> String {
    let mut doc = Document::new("validate", d.path.display().to_string());
    doc.warnings = warning_texts(d, conflicts);
    doc.comment = validate_summary(d);
    doc.summary = Some(Summary {
        senders: d.senders.len(),
        relays: d.tls.len(),
        relayhost: d.relayhost.is_some(),
    });
    doc.render()
}

/// An error of `command` (`checks`: those of a failed `apply --verify`).
pub fn error(command: &'static str, err: &anyhow::Error, checks: &[verify::Outcome]) -> String {
    let (error, problems) = match err.downcast_ref::<Problems>() {
        Some(p) if err.chain().count() == 1 => (
            problems_summary(p),
            p.iter()
                .map(|p| ProblemJson {
                    file: p.file.display().to_string(),
                    line: p.line,
                    message: p.message.clone(),
                })
                .collect(),
        ),
        _ => (format!("{err:#}"), Vec::new()),
    };
    let doc = ErrorDocument {
        format_version: FORMAT_VERSION,
        command,
        comment: error.clone(),
        error,
        problems,
        checks: checks.iter().map(check).collect(),
    };
    let mut text = serde_json::to_string_pretty(&doc).expect("a report serialises");
    text.push('\n');
    text
}
