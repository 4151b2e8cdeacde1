//! What postrelay tells the user: plans as unified diffs, with passwords redacted.
//!
//! Diffs are computed on the real text, then each displayed line is replaced by its
//! redacted form, looked up by its line number in the old or new file. So rotating a
//! password shows as a changed line for that key (`-@example.com user:********` /
//! `+@example.com user:********`), never as an empty diff, and no byte of a password
//! (old or new, or from a hand-edited line or comment) is printed unless the user asks
//! for `--show-secrets`.

use std::fmt::Write as _;

use similar::{ChangeTag, TextDiff};

use crate::plan::{MapChange, Plan};
use crate::syntax::lines::{self, Kind};
use crate::syntax::maincf::Edit;
use crate::syntax::table;

/// What replaces a password.
pub const MASK: &str = "********";

/// Each physical line of a password map, with everything after `user:` masked.
/// Comments are masked too (an old password may sit in a commented-out entry), except
/// postrelay's own header.
pub fn redact_lines(text: &str) -> Vec<String> {
    lines::split(text.as_bytes())
        .iter()
        .map(|line| {
            let content = String::from_utf8_lossy(line.content());
            let content = content.trim_end_matches('\r');
            match line.kind {
                Kind::Blank => content.to_string(),
                Kind::Comment if table::is_header(line) => content.to_string(),
                Kind::Comment => {
                    let indent = content.len() - content.trim_start().len();
                    format!("{}#{MASK}", &content[..indent])
                }
                Kind::Continuation | Kind::Orphan => {
                    let indent = content.len() - content.trim_start().len();
                    format!("{}{MASK}", &content[..indent])
                }
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
    let mut out = String::new();
    let from = if old.is_some() {
        path.to_string()
    } else {
        "/dev/null".to_string()
    };
    let _ = writeln!(out, "--- {from}\n+++ {path}");
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

fn describe_map(m: &MapChange) -> String {
    let name = m.kind.file_name();
    format!("{name}: {} ({} entries)", m.reasons.join(", "), m.entries)
}

fn describe_edits(edits: &[Edit]) -> String {
    edits
        .iter()
        .map(|e| match e {
            Edit::Changed { name, old } => format!("{name} (was {old:?})"),
            Edit::Added { name } => format!("{name} (added)"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The text `postrelay plan` prints.
pub fn plan(plan: &Plan, show_secrets: bool) -> String {
    let mut out = String::new();
    if let Some(m) = &plan.main_cf {
        let _ = writeln!(out, "main.cf: set {}", describe_edits(&m.edits));
        out.push_str(&diff(
            &m.path.display().to_string(),
            Some(&m.old),
            &m.new,
            false,
        ));
    }
    for m in &plan.maps {
        let _ = writeln!(out, "{}", describe_map(m));
        if m.write_source && m.old.as_deref() != Some(m.new.as_slice()) {
            let redact = m.kind.is_secret() && !show_secrets;
            out.push_str(&diff(
                &m.source_path.display().to_string(),
                m.old.as_deref(),
                &m.new,
                redact,
            ));
        }
    }
    if plan.reload_pending {
        let _ = writeln!(
            out,
            "postfix: an interrupted apply changed the configuration but did not reload Postfix"
        );
    }
    let commands = plan.commands();
    if !commands.is_empty() {
        out.push_str("commands:\n");
        for c in &commands {
            let _ = writeln!(out, "  {c}");
        }
    }
    for note in &plan.notes {
        let _ = writeln!(out, "note: {note}");
    }
    let files = plan.maps.len() + usize::from(plan.main_cf.is_some());
    if plan.is_empty() {
        out.push_str("plan: in sync, nothing to do\n");
    } else {
        let _ = writeln!(
            out,
            "plan: {files} file(s) to change, {} command(s) to run",
            commands.len()
        );
    }
    out
}

/// One line per change apply made.
pub fn applied(plan: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    for m in &plan.maps {
        let mut done = Vec::new();
        if m.write_source {
            done.push(format!("wrote {}", m.source_path.display()));
        }
        if let (true, Some(c)) = (m.rebuild, &m.compiled_path) {
            done.push(format!("rebuilt {}", c.display()));
        }
        out.push(format!("{} ({})", done.join(", "), m.reasons.join(", ")));
    }
    if let Some(m) = &plan.main_cf {
        out.push(format!(
            "updated {}: {}",
            m.path.display(),
            describe_edits(&m.edits)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_everywhere() {
        let text = format!(
            "{}\n@a.com user@a.com:pw1\n# @old.com u:oldpw\n[h]:587\tu2:p:w with space\nmulti x:pw2\n   pw3\nnovalue\n",
            table::HEADER
        );
        let got = redact_lines(&text);
        assert_eq!(
            got,
            vec![
                table::HEADER.to_string(),
                "@a.com user@a.com:********".into(),
                "#********".into(),
                "[h]:587\tu2:********".into(),
                "multi x:********".into(),
                "   ********".into(),
                "novalue".into(),
            ]
        );
        for secret in ["pw1", "oldpw", "p:w", "pw2", "pw3"] {
            assert!(!got.join("\n").contains(secret));
        }
    }

    #[test]
    fn rotation_shows_a_changed_redacted_line() {
        let d = diff(
            "sasl_passwd",
            Some(b"@a.com u:old\n"),
            b"@a.com u:new\n",
            true,
        );
        assert!(
            d.contains("-@a.com u:********\n+@a.com u:********\n"),
            "{d}"
        );
        assert!(!d.contains("old") && !d.contains("new"));
    }

    #[test]
    fn diff_marks_missing_final_newline_and_new_files() {
        let d = diff("main.cf", Some(b"a = 1"), b"a = 1\nb = 2\n", false);
        assert!(
            d.contains("-a = 1\n\\ No newline at end of file\n+a = 1\n+b = 2\n"),
            "{d}"
        );
        let d = diff("f", None, b"x\n", false);
        assert!(
            d.starts_with("--- /dev/null\n+++ f\n@@ -0,0 +1 @@\n+x\n"),
            "{d}"
        );
    }
}
