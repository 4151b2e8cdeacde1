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

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt::Write as _;

use similar::{ChangeTag, TextDiff};

use crate::apply::{Outcome, SWITCH_TIMEOUT, Skip, Step};
use crate::conflicts::{Conflict, Definer};
use crate::desired::{Desired, Warning};
use crate::hold::{self, Hold};
use crate::managed::SMTPS_SERVICE;
use crate::managed::{CA_FILE, CA_PATH, CaSource, MapKind};
use crate::plan::{
    Changed, Command, EntryChange, MainCfChange, MapChange, MasterCfChange, Note, Part, Plan,
    Reason, ServiceChange,
};
use crate::postfix::{self, Control};
use crate::problems::Problems;
use crate::secret::MASK;
use crate::state::{Kept, KeptMap};
use crate::syntax::lines::{self, Kind};
use crate::syntax::maincf::Edit;
use crate::syntax::table;
use crate::verify::{self, CertProblem, Failure, ReplyProblem, Waiting};

/// Each physical line of a password map, with everything after `user:` masked, in
/// entries and in commented-out entries (`# key user:password`) alike. Other comments
/// show as written unless they hold one of `secrets` (the passwords of the old and new
/// entries); continuation lines are masked whole.
pub fn redact_lines(text: &str, secrets: &[&str]) -> Vec<String> {
    let holds_secret = |c: &str| secrets.iter().any(|p| !p.is_empty() && c.contains(p));
    lines::classify(text.as_bytes())
        .map(|(kind, raw)| redact_line(kind, raw, holds_secret))
        .collect()
}

/// One line of [`redact_lines`], of the given kind; `holds_secret` says whether a
/// comment (its whole text) holds one of the passwords.
fn redact_line(kind: Kind, raw: &[u8], holds_secret: impl FnOnce(&str) -> bool) -> String {
    let content = String::from_utf8_lossy(raw.strip_suffix(b"\n").unwrap_or(raw));
    let content = content.trim_end_matches('\r');
    let indent = content.len() - content.trim_start().len();
    match kind {
        Kind::Blank => content.to_string(),
        Kind::Comment => {
            let hash = indent + 1;
            let body = &content[hash..];
            let body_at = hash + (body.len() - body.trim_start().len());
            match mask_entry(&content[body_at..]).filter(|_| looks_like_entry(body)) {
                Some(masked) => format!("{}{masked}", &content[..body_at]),
                None if holds_secret(content) => format!("{}#{MASK}", &content[..indent]),
                None => content.to_string(),
            }
        }
        Kind::Continuation | Kind::Orphan => format!("{}{MASK}", &content[..indent]),
        Kind::Start => mask_entry(content).unwrap_or_else(|| content.to_string()),
    }
}

/// `key user:password` with the password masked (`key value` without `:` masked
/// whole); `None` when the text is a key alone.
fn mask_entry(text: &str) -> Option<String> {
    let key = table::key_len(text.as_bytes());
    let rest = &text[key..];
    let value_at = key + (rest.len() - rest.trim_start().len());
    let value = &text[value_at..];
    if value.is_empty() || value_at == key {
        return None;
    }
    let user = value.find(':').map_or("", |i| &value[..=i]);
    Some(format!("{}{user}{MASK}", &text[..value_at]))
}

/// Whether a comment's text reads as a commented-out entry, `key user:password`: a
/// key, then a value whose username (before the first `:`) is one word.
fn looks_like_entry(comment: &str) -> bool {
    let text = comment.trim_start();
    let key = table::key_len(text.as_bytes());
    let value = text[key..].trim_start();
    value
        .split_once(':')
        .is_some_and(|(user, _)| !user.is_empty() && !user.contains(char::is_whitespace))
}

/// The passwords in a password map's entries (after each value's first `:`), one at a
/// time.
fn passwords(text: &[u8]) -> impl Iterator<Item = Cow<'_, str>> {
    table::entries(text).filter_map(|e| match e.value {
        Cow::Borrowed(v) => match String::from_utf8_lossy(v) {
            Cow::Borrowed(v) => Some(Cow::Borrowed(v.split_once(':')?.1)),
            Cow::Owned(v) => Some(Cow::Owned(v.split_once(':')?.1.to_string())),
        },
        Cow::Owned(v) => {
            let v = String::from_utf8_lossy(&v);
            Some(Cow::Owned(v.split_once(':')?.1.to_string()))
        }
    })
}

/// What a diff masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mask {
    /// Nothing: the `--show-secrets` view of a password map.
    Nothing,
    /// A password map's passwords (see [`redact_lines`]).
    PasswordMap,
    /// The secrets a main.cf value may hold (see [`mask_map_secrets`]).
    MainCf,
}

/// `text` with the values of `static:` and `inline:{ key=value }` maps masked: main.cf
/// may carry passwords there (`smtp_sasl_password_maps = static:user:password`).
pub fn mask_map_secrets(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let next = ["static:", "inline:"]
            .iter()
            .filter_map(|p| rest.find(p).map(|i| (i, *p)))
            .min();
        let Some((at, prefix)) = next else { break };
        let after = at + prefix.len();
        out.push_str(&rest[..after]);
        rest = &rest[after..];
        let end = if rest.starts_with('{') {
            group_end(rest)
        } else if prefix == "static:" {
            rest.find([' ', '\t', ',', '}']).unwrap_or(rest.len())
        } else {
            0
        };
        if prefix == "inline:" && rest.starts_with('{') {
            out.push_str(&mask_inline(&rest[..end]));
        } else if end > 0 {
            out.push_str(MASK);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The length of the `{...}` group `text` starts with (all of it if unterminated).
fn group_end(text: &str) -> usize {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth <= 1 => return i + 1,
            '}' => depth -= 1,
            _ => {}
        }
    }
    text.len()
}

/// `{ key=value, { key = text, with commas } }` with each value masked.
fn mask_inline(group: &str) -> String {
    let mut out = String::with_capacity(group.len());
    let mut depth = 0usize;
    // The depth of the element whose value is being masked.
    let mut masking: Option<usize> = None;
    for c in group.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if let Some(at) = masking {
            let ends = (c == ',' && depth == 1 && at == 1) || (c == '}' && depth < at);
            if !ends {
                continue;
            }
            masking = None;
        }
        out.push(c);
        if c == '=' && depth >= 1 {
            out.push_str(MASK);
            masking = Some(depth);
        }
    }
    out
}

/// A unified diff of `old` -> `new` labelled with `path`, masked as `mask` says.
pub fn diff(path: &str, old: Option<&[u8]>, new: &[u8], mask: Mask) -> String {
    let old_text = old.map(String::from_utf8_lossy).unwrap_or_default();
    let new_text = String::from_utf8_lossy(new);
    let from = if old.is_some() { path } else { "/dev/null" };
    let mut out = format!("--- {from}\n+++ {path}\n");
    // Split on '\n' only, as Postfix and `lines::split` do (similar's own line splitter
    // also breaks at a lone '\r', which would desynchronise the redacted lines).
    let old_split: Vec<&str> = old_text.split_inclusive('\n').collect();
    let new_split: Vec<&str> = new_text.split_inclusive('\n').collect();
    // Each shown line is masked when it is written, not all of them beforehand.
    let kinds = |text: &str| -> Vec<Kind> {
        match mask {
            Mask::PasswordMap => lines::classify(text.as_bytes()).map(|(k, _)| k).collect(),
            Mask::MainCf | Mask::Nothing => Vec::new(),
        }
    };
    let (old_kinds, new_kinds) = (kinds(&old_text), kinds(&new_text));
    let diff = TextDiff::from_slices(&old_split, &new_split);
    let hunks = || {
        diff.unified_diff()
            .context_radius(3)
            .iter_hunks()
            .collect::<Vec<_>>()
    };
    let line = |change: &similar::Change<&str>| match change.tag() {
        ChangeTag::Equal | ChangeTag::Delete => {
            let at = change.old_index().unwrap_or_default();
            (old_split[at], old_kinds.get(at))
        }
        ChangeTag::Insert => {
            let at = change.new_index().unwrap_or_default();
            (new_split[at], new_kinds.get(at))
        }
    };
    // The comments shown that may hold a password, then those that do: checked against
    // each password in one pass, none of them kept.
    let mut asked: Vec<String> = Vec::new();
    for hunk in hunks() {
        for change in hunk.iter_changes() {
            if let (text, Some(&Kind::Comment)) = line(&change) {
                redact_line(Kind::Comment, text.as_bytes(), |c| {
                    asked.push(c.to_string());
                    false
                });
            }
        }
    }
    let mut holding: HashSet<&str> = HashSet::new();
    if !asked.is_empty() {
        for p in passwords(new).chain(old.into_iter().flat_map(passwords)) {
            for c in asked
                .iter()
                .filter(|c| !p.is_empty() && c.contains(p.as_ref()))
            {
                holding.insert(c);
            }
        }
    }
    let show = |(text, kind): (&str, Option<&Kind>)| -> String {
        let trimmed = text.trim_end_matches('\n').trim_end_matches('\r');
        match (mask, kind) {
            (Mask::PasswordMap, Some(&kind)) => {
                redact_line(kind, text.as_bytes(), |c| holding.contains(c))
            }
            (Mask::MainCf, _) => mask_map_secrets(trimmed),
            _ => trimmed.to_string(),
        }
    };
    for hunk in hunks() {
        let _ = writeln!(out, "{}", hunk.header());
        for change in hunk.iter_changes() {
            let sign = match change.tag() {
                ChangeTag::Equal => ' ',
                ChangeTag::Delete => '-',
                ChangeTag::Insert => '+',
            };
            let _ = writeln!(out, "{sign}{}", show(line(&change)));
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
        Reason::Unused => match m.kind.base() {
            MapKind::SenderTransport if !m.kind.is_regexp() => {
                "no longer needed (no relay on port 465): removed".into()
            }
            _ => "no longer needed (no wildcard sender): removed".into(),
        },
    }
}

fn reasons(m: &MapChange) -> String {
    let all: Vec<String> = m.reasons.iter().map(|r| reason(m, r)).collect();
    all.join(", ")
}

/// At most this many entry changes are named in a summary line; the diff shows all.
const NAMED_CHANGES: usize = 10;

/// How the entries of a rewritten map change, as named in its summary line.
fn entry_changes(m: &MapChange) -> String {
    let what = |c: &Changed| match (c, m.kind) {
        (Changed::Password, _) => "password changed",
        (Changed::Username, _) => "username changed",
        (Changed::Credentials, _) => "username and password changed",
        (Changed::Value, MapKind::TlsPolicy) => "TLS policy changed",
        (Changed::Value, MapKind::SenderTransport) => "transport changed",
        (Changed::Value, _) => "relay changed",
    };
    let mut named: Vec<String> = m
        .entries_changed
        .iter()
        .take(NAMED_CHANGES)
        .map(|c| match c {
            EntryChange::Added(k) => format!("{k} added"),
            EntryChange::Removed(k) => format!("{k} removed (not in the desired state)"),
            EntryChange::Changed(k, c) => format!("{k} {}", what(c)),
        })
        .collect();
    let more = m.entries_changed.len().saturating_sub(NAMED_CHANGES);
    if more > 0 {
        named.push(format!("and {more} more"));
    }
    if named.is_empty() && m.reasons.contains(&Reason::ContentDiffers) {
        return " (same entries; only their layout differs)".into();
    }
    if named.is_empty() {
        String::new()
    } else {
        format!(": {}", named.join("; "))
    }
}

fn edits(edits: &[Edit]) -> String {
    edits
        .iter()
        .map(|e| match e {
            Edit::Changed { name, old } => format!("{name} (was {:?})", mask_map_secrets(old)),
            Edit::Added { name } => format!("{name} (added)"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn note(n: &Note) -> String {
    match n {
        Note::NoRelayhost => "no [relayhost] in the desired state and none in main.cf: senders not listed, and bounces, are delivered directly to the recipient's MX".into(),
    }
}

/// At most this many entries of a kept map are listed.
const LISTED_ENTRIES: usize = 20;

/// A kept map, with its entries (passwords masked).
fn kept(k: &KeptMap) -> String {
    let head = format!(
        "kept: {} in {}, after postrelay's {}",
        mask_map_secrets(&k.spec),
        k.kind.parameter(),
        k.kind.file_name()
    );
    let entries = match &k.content {
        Kept::Entries(e) => e.expose(),
        Kept::NotRead(what) => return format!("{head} ({what}: not read)\n"),
        Kept::Missing => return format!("{head} (does not exist)\n"),
        Kept::Unreadable(why) => return format!("{head} (cannot be read: {why})\n"),
    };
    let mut out = format!(
        "{head}: {} entries, which still apply to senders and destinations the desired state does not name\n",
        entries.len()
    );
    for (key, value) in entries.iter().take(LISTED_ENTRIES) {
        let value = match (k.kind.is_secret(), value.split_once(':')) {
            (false, _) => value.clone(),
            (true, Some((user, _))) => format!("{user}:{MASK}"),
            (true, None) => MASK.to_string(),
        };
        let _ = writeln!(out, "  {key} {value}");
    }
    if entries.len() > LISTED_ENTRIES {
        let _ = writeln!(out, "  … and {} more", entries.len() - LISTED_ENTRIES);
    }
    out
}

/// One host setting that defeats or shadows what postrelay manages, in words.
pub fn conflict(c: &Conflict) -> String {
    mask_map_secrets(&conflict_text(c))
}

fn conflict_text(c: &Conflict) -> String {
    match c {
        Conflict::KeptMissing { kind, spec } => format!(
            "{spec} (kept in {}) does not exist: Postfix's lookups through it fail",
            kind.parameter()
        ),
        Conflict::KeptUnreadable { kind, spec, why } => {
            format!(
                "{spec} (kept in {}) cannot be read: {why}",
                kind.parameter()
            )
        }
        Conflict::Shadowed {
            kind,
            spec,
            key,
            by,
        } => {
            let by = match by {
                Definer::Sender(line) => format!("the sender at line {line}"),
                Definer::Relayhost => "[relayhost]".into(),
                Definer::Relay => "a relay".into(),
            };
            format!(
                "{spec} holds {key:?}, which the desired state also defines ({by}): postrelay's {} is searched first, so that entry of {spec} no longer applies",
                kind.file_name()
            )
        }
        Conflict::Overrides { parameter, value } => {
            let what = match *parameter {
                "transport_maps" => {
                    "a transport(5) entry for a recipient overrides the sender-dependent relays"
                }
                "default_transport" => {
                    "it overrides sender_dependent_relayhost_maps and relayhost for mail to other domains"
                }
                "relay_domains" => {
                    "mail to those domains leaves through relay_transport, not the sender-dependent relays"
                }
                _ => "its entries override the sender-dependent relays",
            };
            format!("main.cf sets {parameter} = {value}: {what}")
        }
        Conflict::LeftRelayhost(v) => format!(
            "no [relayhost] in the desired state: senders not listed, and bounces, will use main.cf's relayhost {v:?} without credentials"
        ),
    }
}

/// The warnings about a desired state and the host, one `postrelay: warning:` line each.
pub fn warnings(d: &Desired, conflicts: &[Conflict]) -> String {
    warning_lines(&warning_texts(d, conflicts))
}

/// The warnings about a desired state and the host.
fn warning_texts(d: &Desired, conflicts: &[Conflict]) -> Vec<String> {
    d.warnings
        .iter()
        .map(|w| warning(d, w))
        .chain(conflicts.iter().map(conflict))
        .collect()
}

/// Warnings as printed on stderr.
fn warning_lines(texts: &[String]) -> String {
    texts
        .iter()
        .map(|t| format!("postrelay: warning: {t}\n"))
        .collect()
}

/// The command lines of a plan's commands, as shown.
pub fn commands(plan: &Plan) -> Vec<String> {
    plan.commands()
        .iter()
        .map(|c| {
            let line = command_line(plan, c);
            match c {
                Command::Postmap { .. } => line.unwrap_or_default(),
                Command::Check | Command::Reload => {
                    let line = line.unwrap_or_default();
                    let (prefix, action) = line.rsplit_once(' ').unwrap_or(("", &line));
                    format!("{prefix} {action:<8} (if Postfix is running)")
                }
                Command::Hold(h) => format!(
                    "hold {} in the queue during the switch (if Postfix is running)",
                    held(h)
                ),
                Command::Release => format!(
                    "{} (if Postfix is running: releases the held mail)",
                    line.unwrap_or_default()
                ),
            }
        })
        .collect()
}

/// The command line a plan's command runs; `None` for the hold, which is a sequence
/// of edits and reloads.
fn command_line(plan: &Plan, c: &Command) -> Option<String> {
    let dir = &plan.target.config_dir;
    let argv = match c {
        Command::Postmap { source } => postfix::postmap_argv(dir, &plan.target.map_type, source),
        Command::Check => postfix::control_argv(dir, Control::Check),
        Command::Reload => postfix::control_argv(dir, Control::Reload),
        Command::Hold(_) => return None,
        Command::Release => postfix::flush_argv(dir),
    };
    Some(argv.join(" "))
}

/// Whose mail a hold keeps in the queue.
fn held(hold: &Hold) -> String {
    const SHOWN: usize = 5;
    match hold {
        Hold::All => "all outgoing mail".into(),
        Hold::Senders(keys) => {
            let mut named = keys
                .iter()
                .take(SHOWN)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            if keys.len() > SHOWN {
                named.push_str(&format!(" and {} more", keys.len() - SHOWN));
            }
            format!("the mail of {named}")
        }
    }
}

/// main.cf's diff, secrets in map values masked.
fn main_cf_diff(m: &MainCfChange) -> String {
    let path = m.path.display().to_string();
    diff(&path, Some(&m.old), &m.new, Mask::MainCf)
}

/// A map source's diff, passwords masked unless `show_secrets`; `None` when its
/// content stays (only its permissions or its compiled form change).
fn map_diff(m: &MapChange, show_secrets: bool) -> Option<String> {
    let old = m.old.as_ref().map(|o| o.expose().as_slice());
    if !m.write_source || old == Some(m.new.expose().as_slice()) {
        return None;
    }
    let mask = match m.kind.is_secret() && !show_secrets {
        true => Mask::PasswordMap,
        false => Mask::Nothing,
    };
    let path = m.source_path.display().to_string();
    Some(diff(&path, old, m.new.expose(), mask))
}

/// A changed map in one line: why, its entries, which of them change.
fn map_summary(m: &MapChange) -> String {
    format!(
        "{}: {} ({} entries){}",
        m.kind.file_name(),
        reasons(m),
        m.entries,
        entry_changes(m)
    )
}

/// main.cf's change in one line: the parameters set (old values masked).
fn main_cf_summary(m: &MainCfChange) -> String {
    format!("main.cf: set {}", edits(&m.edits))
}

/// master.cf's change in one line.
fn master_cf_summary(m: &MasterCfChange) -> String {
    let what = match m.change {
        ServiceChange::Added => "add",
        ServiceChange::Changed => "update",
        ServiceChange::Removed => "remove",
    };
    format!(
        "master.cf: {what} the {SMTPS_SERVICE} service (relays on port 465, TLS from the first byte)"
    )
}

/// master.cf's diff (it holds no secret postrelay knows of; shown as it is).
fn master_cf_diff(m: &MasterCfChange) -> String {
    let path = m.path.display().to_string();
    diff(&path, Some(&m.old), &m.new, Mask::Nothing)
}

/// The text `postrelay plan` prints.
pub fn plan(plan: &Plan, show_secrets: bool) -> String {
    let mut out = String::new();
    if let Some(m) = &plan.master_cf {
        let _ = writeln!(out, "{}", master_cf_summary(m));
        out.push_str(&master_cf_diff(m));
    }
    if let Some(m) = &plan.main_cf {
        let _ = writeln!(out, "{}", main_cf_summary(m));
        out.push_str(&main_cf_diff(m));
    }
    for m in &plan.maps {
        let _ = writeln!(out, "{}", map_summary(m));
        if let Some(d) = map_diff(m, show_secrets) {
            out.push_str(&d);
        }
    }
    if plan.reload_pending {
        out.push_str(
            "postfix: an earlier apply changed the configuration and Postfix has not re-read it (reload owed)\n",
        );
    }
    for k in &plan.kept {
        out.push_str(&kept(k));
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
    let _ = writeln!(out, "plan: {}", plan_summary(plan));
    out
}

/// A plan in a few words, as its report's last line says it.
fn plan_summary(plan: &Plan) -> String {
    if plan.is_empty() {
        return "in sync, nothing to do".into();
    }
    let files = plan.maps.len()
        + usize::from(plan.main_cf.is_some())
        + usize::from(plan.master_cf.is_some());
    format!(
        "{files} file(s) to change, {} command(s) to run",
        plan.commands().len()
    )
}

fn step(outcome: &Outcome, step: &Step) -> String {
    let plan = &outcome.plan;
    let dir = plan.target.config_dir.display();
    match step {
        Step::Map(i) if plan.maps[*i].remove => {
            let m = &plan.maps[*i];
            let compiled = m.compiled_path.iter().map(|c| format!(", {}", c.display()));
            format!(
                "removed {}{} ({})",
                m.source_path.display(),
                compiled.collect::<String>(),
                reasons(m)
            )
        }
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
        Step::MasterCf => match &plan.master_cf {
            Some(m) => format!("updated {}: {}", m.path.display(), master_cf_summary(m)),
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
        Step::Held => match &plan.hold {
            Some(h) => format!(
                "holding {} in the queue during the switch ({} {})",
                held(h),
                hold::PARAMETER,
                h.element(&plan.target.config_dir)
            ),
            None => String::new(),
        },
        Step::NotHeld => format!(
            "switched without holding mail: master.cf has no {}/unix service running error(8), so a message routed just before the reload may meet the new credentials",
            hold::SERVICE
        ),
        Step::Switched(after) => format!(
            "the daemons of the previous configuration had exited after {} ms",
            after.as_millis()
        ),
        Step::SwitchSlow => format!(
            "daemons of the previous configuration still ran {} s later",
            SWITCH_TIMEOUT.as_secs()
        ),
        Step::Released => format!(
            "released the held mail: ran {}",
            postfix::flush_argv(&plan.target.config_dir).join(" ")
        ),
        Step::NotReleased => {
            "could not release the held mail (see above); it leaves at its next retry".into()
        }
    }
}

/// What apply did that the user must know of, one `postrelay: warning:` line each.
pub fn apply_warnings(outcome: &Outcome) -> String {
    warning_lines(&apply_warning_texts(outcome))
}

/// What apply did that the user must know of.
fn apply_warning_texts(outcome: &Outcome) -> Vec<String> {
    outcome
        .steps
        .iter()
        .filter(|s| matches!(s, Step::NotHeld | Step::SwitchSlow | Step::NotReleased))
        .map(|s| step(outcome, s))
        .collect()
}

/// The text `postrelay apply` prints; with `quiet`, nothing when nothing changed.
pub fn applied(outcome: &Outcome, quiet: bool) -> String {
    if outcome.steps.is_empty() && quiet {
        return String::new();
    }
    let mut out = String::new();
    for s in &outcome.steps {
        let _ = writeln!(out, "{}", step(outcome, s));
    }
    let _ = writeln!(out, "postrelay: {}", apply_summary(outcome));
    out
}

/// What apply did, in a word.
fn apply_summary(outcome: &Outcome) -> &'static str {
    match outcome.steps.is_empty() {
        true => "no changes",
        false => "applied",
    }
}

/// Most bytes of an audit line, the text of apply's record in the mail log (after the
/// `postrelay[PID]: ` Postfix puts first): within the 1024 of a classic syslog record.
pub const MAX_AUDIT: usize = 900;

/// Most bytes of one part of an audit line (one file's changes, one problem): room
/// for every parameter of a first apply's main.cf edit.
const MAX_AUDIT_PART: usize = 400;

/// `text` as one line for the mail log: each line trimmed, blank lines and the `---`
/// rulers around a tool's stderr dropped, the rest joined with spaces; tabs become
/// spaces and other control characters `?` (as Postfix writes them).
fn one_line(text: &str) -> String {
    let joined = text
        .lines()
        .map(|l| {
            let l = l.trim();
            l.strip_prefix("---").unwrap_or(l).trim()
        })
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    joined
        .chars()
        .map(|c| match c {
            '\t' => ' ',
            c if c.is_control() => '?',
            c => c,
        })
        .collect()
}

/// `text` cut to at most `max` bytes, at a character boundary, `...` marking the cut
/// (ASCII: Postfix logs other bytes as `?` unless `smtputf8_enable` is on).
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// `head: `, then as many `parts` as fit (the others counted as "and N more `noun`"),
/// then `tail`, joined with `; `: one line of at most [`MAX_AUDIT`] bytes.
fn audit_line(head: &str, parts: &[String], noun: &str, tail: &str) -> String {
    let head = one_line(head);
    let tail = one_line(tail);
    let parts: Vec<String> = parts
        .iter()
        .map(|p| cut(&one_line(p), MAX_AUDIT_PART))
        .collect();
    let more = |n: usize| format!("and {n} more {noun}");
    let reserve = more(parts.len()).len() + tail.len() + 6;
    let budget = MAX_AUDIT.saturating_sub(head.len() + reserve);
    let mut body: Vec<String> = Vec::new();
    let mut used = 0;
    for (i, p) in parts.iter().enumerate() {
        if used + p.len() + 2 > budget {
            body.push(more(parts.len() - i));
            break;
        }
        used += p.len() + 2;
        body.push(p.clone());
    }
    if !tail.is_empty() {
        body.push(tail);
    }
    cut(&format!("{head}: {}", body.join("; ")), MAX_AUDIT)
}

/// What apply did with Postfix, for the audit line: reloaded, or why not.
fn audit_postfix(outcome: &Outcome) -> String {
    if outcome.steps.contains(&Step::Ran(Control::Reload)) {
        return "reloaded".into();
    }
    outcome
        .steps
        .iter()
        .find(|s| matches!(s, Step::Skipped(_)))
        .map(|s| step(outcome, s))
        .unwrap_or_default()
}

/// The text of apply's record in the mail log when it changed something: the
/// desired-state file and the config dir, what changed in each file (the entries and
/// main.cf parameters, as the plan names them, passwords masked), a reload owed by an
/// earlier run, and whether Postfix was reloaded. One line of at most [`MAX_AUDIT`] bytes, without control characters.
pub fn audit_applied(config: &std::path::Path, outcome: &Outcome) -> String {
    let plan = &outcome.plan;
    let mut parts: Vec<String> = plan.maps.iter().map(map_summary).collect();
    parts.extend(plan.master_cf.as_ref().map(master_cf_summary));
    parts.extend(plan.main_cf.as_ref().map(main_cf_summary));
    if plan.reload_pending {
        parts.push("the reload an earlier apply owed".into());
    }
    let head = format!(
        "applied {} to {}",
        config.display(),
        plan.target.config_dir.display()
    );
    audit_line(&head, &parts, "file(s)", &audit_postfix(outcome))
}

/// The start of every line [`error`] writes.
const ERROR_PREFIX: &str = "postrelay: error: ";

/// The text of a failed apply's record in the mail log (logged as a warning): the
/// error as [`error`] prints it, each problem a part, without the prefix. One line of
/// at most [`MAX_AUDIT`] bytes, without control characters.
pub fn audit_failed(config: &std::path::Path, err: &anyhow::Error) -> String {
    let mut problems: Vec<String> = Vec::new();
    for line in error(err).lines() {
        match (line.strip_prefix(ERROR_PREFIX), problems.last_mut()) {
            (Some(first), _) => problems.push(first.to_string()),
            (None, Some(last)) => {
                last.push('\n');
                last.push_str(line);
            }
            (None, None) => problems.push(line.to_string()),
        }
    }
    let head = format!("apply of {} failed", config.display());
    audit_line(&head, &problems, "problem(s)", "")
}

/// Why apply's record is not in the mail log, as a warning's text (JSON's `warnings`).
fn not_recorded(err: &anyhow::Error) -> String {
    format!("not recorded in the mail log: {err:#}")
}

/// The warning on stderr when apply's record could not be written to the mail log.
pub fn audit_not_recorded(err: &anyhow::Error) -> String {
    warning_lines(&[not_recorded(err)])
}

/// Most characters of a server's text quoted in a verify line.
const MAX_QUOTED: usize = 300;

/// Text from a server (already scrubbed and free of control characters), cut to
/// [`MAX_QUOTED`] characters.
fn quoted(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// What verify was waiting for, as the object of "no … within N s".
fn awaited(waiting: Waiting) -> &'static str {
    match waiting {
        Waiting::Lookup => "MX lookup",
        Waiting::Connection => "connection",
        Waiting::Greeting => "greeting",
        Waiting::Ehlo => "reply to EHLO",
        Waiting::StartTls => "reply to STARTTLS",
        Waiting::TlsHandshake => "TLS handshake",
        Waiting::Auth => "reply to AUTH",
    }
}

/// The CAs a certificate was checked against.
fn trust_store(source: &CaSource) -> String {
    match source {
        CaSource::Configured { file, path } => [(CA_FILE, file), (CA_PATH, path)]
            .iter()
            .filter_map(|(name, v)| v.as_ref().map(|v| format!("{name} = {v}")))
            .collect::<Vec<_>>()
            .join(" or "),
        CaSource::SystemBundle(bundle) => format!("the system bundle {}", bundle.display()),
        CaSource::Missing => "no trust store".into(),
    }
}

fn reply_problem(p: &ReplyProblem) -> String {
    match p {
        ReplyProblem::LineTooLong { limit } => format!("reply line longer than {limit} octets"),
        ReplyProblem::TooLong { limit } => format!("reply longer than {limit} octets"),
        ReplyProblem::TooManyLines { limit } => format!("reply of more than {limit} lines"),
        ReplyProblem::Malformed { line } => format!("malformed reply line {:?}", quoted(line)),
    }
}

fn certificate(name: &str, problem: &CertProblem, trust: &CaSource) -> String {
    match problem {
        CertProblem::UnknownIssuer => format!(
            "certificate not trusted: no CA in {} issued it",
            trust_store(trust)
        ),
        CertProblem::NameMismatch { presented } if presented.is_empty() => {
            format!("certificate name mismatch: it is not for {name}")
        }
        CertProblem::NameMismatch { presented } => {
            let mut names: Vec<String> = presented.iter().take(5).map(|n| quoted(n)).collect();
            if presented.len() > 5 {
                names.push(format!("{} more", presented.len() - 5));
            }
            format!(
                "certificate name mismatch: it is for {}, not {name}",
                names.join(", ")
            )
        }
        CertProblem::Expired => "certificate expired".into(),
        CertProblem::NotYetValid => "certificate not valid yet".into(),
        CertProblem::Revoked => "certificate revoked".into(),
        CertProblem::Other(e) => format!("certificate refused: {}", quoted(e)),
    }
}

pub fn failure(f: &Failure) -> String {
    match f {
        Failure::Lookup { domain, error } => {
            format!("no server for {domain} (a relay without brackets: its MX hosts): {error}")
        }
        Failure::Connect { host, port, error } => {
            format!("cannot connect to {host} port {port}: {error}")
        }
        Failure::TlsSetup(e) => format!("TLS setup: {e}"),
        Failure::StartTls(e) => format!("STARTTLS failed: {}", quoted(e)),
        Failure::ImplicitTls(e) => format!(
            "TLS on connect (port 465) failed: {}; no password was sent",
            quoted(e)
        ),
        Failure::NoStartTls(level) => format!(
            "TLS required (tls = \"{}\") but the server does not offer STARTTLS; no password was sent",
            level.as_str()
        ),
        Failure::Certificate {
            level,
            name,
            problem,
            trust,
        } => format!(
            "{} (tls = \"{}\"); no password was sent",
            certificate(name, problem, trust),
            level.as_str()
        ),
        Failure::NoAuthMechanism => "the server offers no AUTH PLAIN or LOGIN".into(),
        Failure::TimedOut { waiting, after } => {
            format!("no {} within {} s", awaited(*waiting), after.as_secs_f64())
        }
        Failure::Closed { waiting, error } => match error {
            None => format!(
                "the server closed the connection; no {} came",
                awaited(*waiting)
            ),
            Some(e) => format!(
                "connection lost waiting for the {}: {}",
                awaited(*waiting),
                quoted(e)
            ),
        },
        Failure::BadReply { waiting, problem } => match waiting {
            Waiting::Greeting => format!("bad greeting: {}", reply_problem(problem)),
            w => format!("bad {}: {}", awaited(*w), reply_problem(problem)),
        },
        Failure::Refused { waiting, reply } => match waiting {
            Waiting::Greeting => format!("the server refused the session: {}", quoted(reply)),
            Waiting::Ehlo => format!("EHLO refused: {}", quoted(reply)),
            w => format!("{} refused: {}", awaited(*w), quoted(reply)),
        },
        Failure::Auth(e) => format!("authentication failed: {}", quoted(e)),
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
                let tls = match (s.implicit_tls, s.starttls) {
                    (true, _) => "TLS on connect",
                    (false, true) => "STARTTLS",
                    (false, false) => "no TLS",
                };
                let auth = match &s.mechanism {
                    Some(m) => format!("AUTH {m}"),
                    None => "no credentials".into(),
                };
                writeln!(out, "ok      {who} via {relay}{user} ({tls}, {auth})")
            }
            Err(f) => writeln!(out, "FAILED  {who} via {relay}{user}: {}", failure(f)),
        };
    }
    let _ = writeln!(out, "verify: {}", verify_summary(outcomes));
    out
}

/// verify's outcome in a few words.
fn verify_summary(outcomes: &[verify::Outcome]) -> String {
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    let logins: std::collections::HashSet<usize> = outcomes.iter().map(|o| o.login).collect();
    let shared = match logins.len() < outcomes.len() {
        true => format!(" ({} logins)", logins.len()),
        false => String::new(),
    };
    format!("{} checked, {failed} failed{shared}", outcomes.len())
}

/// What `postrelay init` prints: where the file is, and what to do next.
pub fn initialized(path: &std::path::Path) -> String {
    let file = path.display();
    format!(
        "wrote {file} (mode 0600): a commented starter desired state\n\
         next:\n  \
         1. edit {file}: the relayhost and one [[sender]] per domain, passwords in password_file(s) of mode 0600\n  \
         2. postrelay verify --config {file}    logs in to each relay; sends no mail\n  \
         3. postrelay plan --config {file}      shows what would change, passwords masked\n  \
         4. postrelay apply --config {file}     makes Postfix match\n"
    )
}

/// What `postrelay validate` prints for a valid file.
pub fn validated(d: &Desired) -> String {
    format!("{}\n", validate_summary(d))
}

/// A valid desired state in a few words.
fn validate_summary(d: &Desired) -> String {
    format!(
        "{}: valid ({} sender(s), {} relay(s){})",
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

/// How many problems an input file has, in a few words.
fn problems_summary(problems: &Problems) -> String {
    let n = problems.iter().count();
    let file = problems.iter().next().map(|p| p.file.display().to_string());
    format!(
        "{n} problem{} in {}",
        if n == 1 { "" } else { "s" },
        file.unwrap_or_default()
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

pub mod json;
pub mod mailgun;

#[cfg(test)]
mod tests;
