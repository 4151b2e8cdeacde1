//! Every word the user reads: plans as unified diffs with passwords redacted, what apply
//! did, the commands, verify's lines, warnings, validation's summary and error lines,
//! all rendered from data (a later JSON output renders from the same data).
//!
//! Diffs are computed on the real text, then each displayed line is replaced by its
//! redacted form, looked up by its line number in the old or new file. So rotating a
//! password shows as a changed line for that key (`-@example.com user:********` /
//! `+@example.com user:********`), never as an empty diff, and no byte of a password
//! (old or new, or from a hand-edited line or comment) is printed unless the user asks
//! for `--show-secrets`.

use std::fmt::Write as _;

use similar::{ChangeTag, TextDiff};

use crate::apply::{Outcome, Skip, Step};
use crate::desired::{Desired, Warning};
use crate::plan::{Command, MapChange, Note, Part, Plan, Reason};
use crate::postfix::{self, Control};
use crate::problems::Problems;
use crate::secret::MASK;
use crate::syntax::lines::{self, Kind};
use crate::syntax::maincf::Edit;
use crate::syntax::table;
use crate::verify::{self, Failure};

/// Each physical line of a password map, with everything after `user:` masked.
/// Comments are masked too (an old password may sit in a commented-out entry), except
/// postrelay's own header.
pub fn redact_lines(text: &str) -> Vec<String> {
    lines::split(text.as_bytes())
        .iter()
        .map(|line| {
            let content = String::from_utf8_lossy(line.content());
            let content = content.trim_end_matches('\r');
            let indent = content.len() - content.trim_start().len();
            match line.kind {
                Kind::Blank => content.to_string(),
                Kind::Comment if table::is_header(line) => content.to_string(),
                Kind::Comment => format!("{}#{MASK}", &content[..indent]),
                Kind::Continuation | Kind::Orphan => format!("{}{MASK}", &content[..indent]),
                Kind::Start => {
                    let key = table::key_len(content.as_bytes());
                    let rest = &content[key..];
                    let value_at = key + (rest.len() - rest.trim_start().len());
                    let value = &content[value_at..];
                    if value.is_empty() {
                        content.to_string()
                    } else {
                        let user = value.find(':').map_or("", |i| &value[..=i]);
                        format!("{}{user}{MASK}", &content[..value_at])
                    }
                }
            }
        })
        .collect()
}

/// A unified diff of `old` -> `new` labelled with `path`; `redact` masks secrets.
pub fn diff(path: &str, old: Option<&[u8]>, new: &[u8], redact: bool) -> String {
    let old_text = old.map(String::from_utf8_lossy).unwrap_or_default();
    let new_text = String::from_utf8_lossy(new);
    let show = |text: &str| -> Vec<String> {
        if redact {
            redact_lines(text)
        } else {
            text.split_inclusive('\n')
                .map(|l| l.trim_end_matches('\n').trim_end_matches('\r').to_string())
                .collect()
        }
    };
    let old_lines = show(&old_text);
    let new_lines = show(&new_text);
    let from = if old.is_some() { path } else { "/dev/null" };
    let mut out = format!("--- {from}\n+++ {path}\n");
    // Split on '\n' only, as Postfix and `lines::split` do (similar's own line splitter
    // also breaks at a lone '\r', which would desynchronise the redacted lines).
    let old_split: Vec<&str> = old_text.split_inclusive('\n').collect();
    let new_split: Vec<&str> = new_text.split_inclusive('\n').collect();
    let diff = TextDiff::from_slices(&old_split, &new_split);
    for hunk in diff.unified_diff().context_radius(3).iter_hunks() {
        let _ = writeln!(out, "{}", hunk.header());
        for change in hunk.iter_changes() {
            let (sign, line) = match change.tag() {
                ChangeTag::Equal => (' ', &old_lines[change.old_index().unwrap_or_default()]),
                ChangeTag::Delete => ('-', &old_lines[change.old_index().unwrap_or_default()]),
                ChangeTag::Insert => ('+', &new_lines[change.new_index().unwrap_or_default()]),
            };
            let _ = writeln!(out, "{sign}{line}");
            if change.missing_newline() {
                out.push_str("\\ No newline at end of file\n");
            }
        }
    }
    out
}

/// Why one map changes, as a short phrase.
pub fn reason(m: &MapChange, reason: &Reason) -> String {
    let compiled = m
        .compiled_path
        .as_ref()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let file = |part: Part| match part {
        Part::Source => m.kind.file_name().to_string(),
        Part::Compiled => compiled.clone(),
    };
    match reason {
        Reason::New => "new".into(),
        Reason::ContentDiffers => "content differs".into(),
        Reason::Mode { part, mode } => format!(
            "{} has mode {mode:04o}, want {:04o}",
            file(*part),
            m.kind.mode()
        ),
        Reason::Owner { part, uid, want } => {
            format!("{} is owned by uid {uid}, want {want}", file(*part))
        }
        Reason::CompiledMissing => format!("{compiled} missing"),
        Reason::CompiledUnreadable => format!("{compiled} unreadable by postmap"),
        Reason::CompiledDiffers => format!("{compiled} differs from its source"),
    }
}

fn reasons(m: &MapChange) -> String {
    let all: Vec<String> = m.reasons.iter().map(|r| reason(m, r)).collect();
    all.join(", ")
}

fn edits(edits: &[Edit]) -> String {
    edits
        .iter()
        .map(|e| match e {
            Edit::Changed { name, old } => format!("{name} (was {old:?})"),
            Edit::Added { name } => format!("{name} (added)"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn note(n: &Note) -> String {
    match n {
        Note::ExistingRelayhost(v) => format!(
            "no [relayhost] in the desired state: senders not listed, and bounces, will use the existing relayhost {v:?} without credentials"
        ),
        Note::NoRelayhost => "no [relayhost] in the desired state and none in main.cf: senders not listed, and bounces, are delivered directly to the recipient's MX".into(),
    }
}

/// The command lines of a plan's commands, as shown.
pub fn commands(plan: &Plan) -> Vec<String> {
    let dir = &plan.target.config_dir;
    plan.commands()
        .iter()
        .map(|c| match c {
            Command::Postmap { source } => {
                postfix::postmap_argv(dir, &plan.target.map_type, source).join(" ")
            }
            Command::Check => if_running(dir, Control::Check),
            Command::Reload => if_running(dir, Control::Reload),
        })
        .collect()
}

fn if_running(dir: &std::path::Path, action: Control) -> String {
    let argv = postfix::control_argv(dir, action);
    let (prefix, action) = argv.split_at(argv.len() - 1);
    format!(
        "{} {:<8} (if Postfix is running)",
        prefix.join(" "),
        action[0]
    )
}

/// The text `postrelay plan` prints.
pub fn plan(plan: &Plan, show_secrets: bool) -> String {
    let mut out = String::new();
    if let Some(m) = &plan.main_cf {
        let _ = writeln!(out, "main.cf: set {}", edits(&m.edits));
        out.push_str(&diff(
            &m.path.display().to_string(),
            Some(&m.old),
            &m.new,
            false,
        ));
    }
    for m in &plan.maps {
        let _ = writeln!(
            out,
            "{}: {} ({} entries)",
            m.kind.file_name(),
            reasons(m),
            m.entries
        );
        let old = m.old.as_ref().map(|o| o.expose().as_slice());
        if m.write_source && old != Some(m.new.expose().as_slice()) {
            let redact = m.kind.is_secret() && !show_secrets;
            let path = m.source_path.display().to_string();
            out.push_str(&diff(&path, old, m.new.expose(), redact));
        }
    }
    if plan.reload_pending {
        out.push_str(
            "postfix: an earlier apply changed the configuration and Postfix has not re-read it (reload owed)\n",
        );
    }
    let commands = commands(plan);
    if !commands.is_empty() {
        out.push_str("commands:\n");
        for c in &commands {
            let _ = writeln!(out, "  {c}");
        }
    }
    for n in &plan.notes {
        let _ = writeln!(out, "note: {}", note(n));
    }
    if plan.is_empty() {
        out.push_str("plan: in sync, nothing to do\n");
    } else {
        let files = plan.maps.len() + usize::from(plan.main_cf.is_some());
        let _ = writeln!(
            out,
            "plan: {files} file(s) to change, {} command(s) to run",
            commands.len()
        );
    }
    out
}

fn step(outcome: &Outcome, step: &Step) -> String {
    let plan = &outcome.plan;
    let dir = plan.target.config_dir.display();
    match step {
        Step::Map(i) => {
            let m = &plan.maps[*i];
            let mut done = Vec::new();
            if m.write_source {
                done.push(format!("wrote {}", m.source_path.display()));
            }
            if let (true, Some(c)) = (m.rebuild, &m.compiled_path) {
                done.push(format!("rebuilt {}", c.display()));
            }
            format!("{} ({})", done.join(", "), reasons(m))
        }
        Step::MainCf => match &plan.main_cf {
            Some(m) => format!("updated {}: {}", m.path.display(), edits(&m.edits)),
            None => String::new(),
        },
        Step::Skipped(Skip::NoReload) => "skipped postfix check and reload (--no-reload)".into(),
        Step::Skipped(Skip::NotRoot) => {
            "not root: cannot query Postfix; skipped postfix check and reload".into()
        }
        Step::Skipped(Skip::NotRunning) => {
            format!("Postfix is not running (postfix -c {dir} status): skipped check and reload")
        }
        Step::Ran(action) => format!(
            "ran {}",
            postfix::control_argv(&plan.target.config_dir, *action).join(" ")
        ),
        Step::ReloadOwed => {
            "Postfix still has to re-read its configuration: the next apply reloads it".into()
        }
    }
}

/// The text `postrelay apply` prints; with `quiet`, nothing when nothing changed.
pub fn applied(outcome: &Outcome, quiet: bool) -> String {
    if outcome.steps.is_empty() {
        return if quiet {
            String::new()
        } else {
            "postrelay: no changes\n".into()
        };
    }
    let mut out = String::new();
    for s in &outcome.steps {
        let _ = writeln!(out, "{}", step(outcome, s));
    }
    out.push_str("postrelay: applied\n");
    out
}

fn failure(f: &Failure) -> String {
    match f {
        Failure::Connect { host, port, error } => {
            format!("cannot connect to {host} port {port}: {error}")
        }
        Failure::TlsSetup(e) => format!("TLS setup: {e}"),
        Failure::StartTls(e) => format!("STARTTLS failed: {e}"),
        Failure::NoStartTls => "TLS required (tls = \"encrypt\") but the server does not offer STARTTLS; no password was sent".into(),
        Failure::NoAuthMechanism => "the server offers no AUTH PLAIN or LOGIN".into(),
        Failure::Auth(e) => format!("authentication failed: {e}"),
    }
}

/// One line per check, then a summary: what `postrelay verify` prints.
pub fn verify(outcomes: &[verify::Outcome]) -> String {
    let mut out = String::new();
    for o in outcomes {
        let c = &o.check;
        let user = c
            .credentials
            .as_ref()
            .map(|cr| format!(" as {}", cr.username))
            .unwrap_or_default();
        let (who, relay) = (c.who.name(), &c.relay);
        let _ = match &o.result {
            Ok(s) => {
                let tls = if s.starttls { "STARTTLS" } else { "no TLS" };
                let auth = match &s.mechanism {
                    Some(m) => format!("AUTH {m}"),
                    None => "no credentials".into(),
                };
                writeln!(out, "ok      {who} via {relay}{user} ({tls}, {auth})")
            }
            Err(f) => writeln!(out, "FAILED  {who} via {relay}{user}: {}", failure(f)),
        };
    }
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    let _ = writeln!(out, "verify: {} checked, {failed} failed", outcomes.len());
    out
}

/// What `postrelay validate` prints for a valid file.
pub fn validated(d: &Desired) -> String {
    format!(
        "{}: valid ({} sender(s), {} relay(s){})\n",
        d.path.display(),
        d.senders.len(),
        d.tls.len(),
        if d.relayhost.is_some() {
            ", catch-all relayhost"
        } else {
            ""
        }
    )
}

/// A warning about the desired state, as logged.
pub fn warning(d: &Desired, w: &Warning) -> String {
    let relay = w.relay.as_str();
    format!(
        "{}, line {}: relay {relay:?} has tls {:?}: credentials for {relay} may be sent without TLS",
        d.path.display(),
        w.line,
        w.tls.as_str()
    )
}

/// An error as printed on stderr: one `postrelay: error:` line per problem of an input
/// file, else the error and its causes.
pub fn error(err: &anyhow::Error) -> String {
    match err.downcast_ref::<Problems>() {
        Some(problems) if err.chain().count() == 1 => problems
            .iter()
            .map(|p| format!("postrelay: error: {p}\n"))
            .collect(),
        _ => format!("postrelay: error: {err:#}\n"),
    }
}

#[cfg(test)]
mod tests;
