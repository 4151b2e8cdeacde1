//! A lossless main.cf document: parse, query and edit without disturbing anything else.
//!
//! The document is the list of physical lines (see [`super::lines`]); rendering an
//! unedited document gives back the input byte for byte, whatever its line endings,
//! tabs or missing final newline. Meaning is read the way Postfix reads it: logical
//! lines are split with the rules of `src/util/split_nameval.c` (name up to whitespace
//! or `=`, value trimmed at both ends, `#` is data unless it starts a line), and the
//! last definition of a name wins.
//!
//! Editing ([`MainCf::set_all`]) touches only what must change: a parameter whose value
//! already reads as wanted is left alone even if written over several lines; one that
//! must change is rewritten at its last definition (keeping the spelling up to the
//! value and the line ending) and its earlier duplicates are commented out the way
//! `postconf -#` does; missing parameters are appended after one comment line naming
//! postrelay, after first terminating an unterminated last line (which `postconf -e`
//! gets wrong).

use super::lines::{self, Kind, Line, Logical};

/// The comment line placed before parameters postrelay appends.
pub const MARKER: &str = "# Sender-dependent relaying, managed by postrelay:";

/// A main.cf problem that makes Postfix itself refuse the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// 1-based physical line.
    pub line: usize,
    pub message: String,
}

/// One `name = value` definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    pub name: String,
    /// The value as Postfix reads it: joined, trimmed, `#` included.
    pub value: String,
    /// 1-based line where the definition starts.
    pub line: usize,
    logical: Logical,
}

/// A parsed main.cf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MainCf {
    lines: Vec<Line>,
}

/// What [`MainCf::set_all`] did to one parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Rewritten in place at its last definition; `old` is the value Postfix read.
    Changed { name: String, old: String },
    /// Appended at the end.
    Added { name: String },
}

impl Edit {
    pub fn name(&self) -> &str {
        match self {
            Edit::Changed { name, .. } | Edit::Added { name } => name,
        }
    }
}

/// `split_nameval()`: returns (name, value) or Postfix's own error text.
fn split_nameval(text: &[u8]) -> Result<(&[u8], &[u8]), &'static str> {
    let np = text
        .iter()
        .position(|&b| !lines::is_space(b))
        .unwrap_or(text.len());
    if np == text.len() || text[np] == b'=' {
        return Err("missing attribute name");
    }
    let ep = np
        + text[np..]
            .iter()
            .position(|&b| lines::is_space(b) || b == b'=')
            .unwrap_or(text.len() - np);
    let cp = ep
        + text[ep..]
            .iter()
            .position(|&b| !lines::is_space(b))
            .unwrap_or(text.len() - ep);
    if cp == text.len() || text[cp] != b'=' {
        return Err("missing '=' after attribute name");
    }
    Ok((&text[np..ep], lines::trim(&text[cp + 1..])))
}

/// Values compare equal when Postfix would read the same words: runs of the separators
/// Postfix's list parser uses (space, tab, CR, LF; not `\v` or `\f`) count as one.
pub fn same_value(a: &str, b: &str) -> bool {
    fn words(s: &str) -> impl Iterator<Item = &str> {
        s.split([' ', '\t', '\r', '\n']).filter(|w| !w.is_empty())
    }
    words(a).eq(words(b))
}

/// The elements of a list value (`smtp_sasl_password_maps = hash:/a, hash:/b`), split
/// as Postfix's `mystrtokq()` splits lists: at commas and the separators of
/// [`same_value`], except inside `{...}` (so `inline:{ a=b, c=d }` is one element).
pub fn list(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = None;
    for (i, c) in value.char_indices() {
        let separator = depth == 0 && matches!(c, ',' | ' ' | '\t' | '\r' | '\n');
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        match (separator, start) {
            (true, Some(s)) => {
                out.push(&value[s..i]);
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(&value[s..]);
    }
    out
}

impl MainCf {
    /// Parses any bytes; never fails. Postfix-fatal lines are reported by [`MainCf::errors`].
    pub fn parse(input: &[u8]) -> MainCf {
        MainCf {
            lines: lines::split(input),
        }
    }

    /// The exact bytes of the document.
    pub fn render(&self) -> Vec<u8> {
        lines::render(&self.lines)
    }

    /// Every well-formed definition, in file order (duplicates included).
    pub fn definitions(&self) -> Vec<Definition> {
        lines::logical_lines(&self.lines)
            .into_iter()
            .filter_map(|logical| {
                let text = logical.text(&self.lines);
                let (name, value) = split_nameval(&text).ok()?;
                Some(Definition {
                    name: String::from_utf8_lossy(name).into_owned(),
                    value: String::from_utf8_lossy(value).into_owned(),
                    line: logical.line_number(),
                    logical,
                })
            })
            .collect()
    }

    /// Lines Postfix would reject (`postconf: fatal: ... line N: ...`).
    pub fn errors(&self) -> Vec<SyntaxError> {
        lines::logical_lines(&self.lines)
            .into_iter()
            .filter_map(|logical| {
                let text = logical.text(&self.lines);
                let message = split_nameval(&text).err()?;
                let shown: String = String::from_utf8_lossy(&text).chars().take(60).collect();
                Some(SyntaxError {
                    line: logical.line_number(),
                    message: format!("{message}: {shown:?}"),
                })
            })
            .collect()
    }

    /// The value Postfix reads for `name` (its last definition), if defined.
    pub fn get(&self, name: &str) -> Option<String> {
        self.definitions()
            .into_iter()
            .rev()
            .find(|d| d.name == name)
            .map(|d| d.value)
    }

    /// Makes every `(name, value)` read as given, editing as little as possible.
    /// Returns what was edited; an empty result means the document is unchanged.
    pub fn set_all(&mut self, params: &[(&str, &str)]) -> Vec<Edit> {
        let definitions = self.definitions();
        // Per line: None = keep, Some(bytes) = replace (empty = delete).
        let mut replace: Vec<Option<Vec<u8>>> = vec![None; self.lines.len()];
        let mut edits = Vec::new();
        let mut append = Vec::new();
        for &(name, value) in params {
            let defs: Vec<&Definition> = definitions.iter().filter(|d| d.name == name).collect();
            let Some((last, earlier)) = defs.split_last() else {
                append.push((name, value));
                edits.push(Edit::Added { name: name.into() });
                continue;
            };
            if same_value(&last.value, value) {
                continue;
            }
            let start = &self.lines[last.logical.start];
            replace[last.logical.start] = Some(rewrite_start(start, name, value));
            for &i in &last.logical.continuations {
                replace[i] = Some(Vec::new());
            }
            for def in earlier {
                for i in def.logical.line_indices() {
                    let mut commented = b"#".to_vec();
                    commented.extend_from_slice(&self.lines[i].raw);
                    replace[i] = Some(commented);
                }
            }
            edits.push(Edit::Changed {
                name: name.into(),
                old: last.value.clone(),
            });
        }
        if edits.is_empty() {
            return edits;
        }
        let eol = lines::dominant_ending(&self.lines).to_vec();
        let mut out = Vec::new();
        for (line, rep) in self.lines.iter().zip(replace) {
            match rep {
                None => out.extend_from_slice(&line.raw),
                Some(bytes) => out.extend_from_slice(&bytes),
            }
        }
        if !append.is_empty() {
            if !out.is_empty() && !out.ends_with(b"\n") {
                out.extend_from_slice(&eol);
            }
            let has_marker = self
                .lines
                .iter()
                .any(|l| l.kind == Kind::Comment && lines::trim(l.content()) == MARKER.as_bytes());
            if !has_marker {
                out.extend_from_slice(MARKER.as_bytes());
                out.extend_from_slice(&eol);
            }
            for (name, value) in append {
                out.extend_from_slice(format!("{name} = {value}").as_bytes());
                out.extend_from_slice(&eol);
            }
        }
        *self = MainCf::parse(&out);
        edits
    }
}

/// The new start line for a changed definition: the original spelling up to the value
/// (`name<ws>=<ws>`), the new value, the original terminator.
fn rewrite_start(line: &Line, name: &str, value: &str) -> Vec<u8> {
    let content = line.content();
    let mut out = match content.iter().position(|&b| b == b'=') {
        Some(eq) => {
            let after = &content[eq + 1..];
            let mut out = content[..eq + 1].to_vec();
            if lines::trim(after).is_empty() {
                // The old value started on a continuation line.
                out.push(b' ');
            } else {
                out.extend(after.iter().take_while(|&&b| b == b' ' || b == b'\t'));
            }
            out
        }
        // `name` alone on its line, `=` on a continuation line.
        None => format!("{name} = ").into_bytes(),
    };
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(line.ending());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(s: &str) -> MainCf {
        MainCf::parse(s.as_bytes())
    }

    fn set(input: &str, params: &[(&str, &str)]) -> (String, Vec<Edit>) {
        let mut d = doc(input);
        let edits = d.set_all(params);
        (String::from_utf8(d.render()).unwrap(), edits)
    }

    #[test]
    fn reads_values_as_postfix_does() {
        let d = doc(
            "# c\nrelayhost = [smtp.example.com]:587 # trailing text\n\nmydestination = a,\n   b\n# x\n\tc\n\n   d\nmyhostname=host   \nmyhostname   =   second\nempty =\n",
        );
        assert_eq!(
            d.get("relayhost").as_deref(),
            Some("[smtp.example.com]:587 # trailing text")
        );
        assert_eq!(d.get("mydestination").as_deref(), Some("a,   b\tc   d"));
        assert_eq!(d.get("myhostname").as_deref(), Some("second"));
        assert_eq!(d.get("empty").as_deref(), Some(""));
        assert_eq!(d.get("nosuch"), None);
        assert!(d.errors().is_empty());
    }

    #[test]
    fn crlf_value_is_trimmed() {
        assert_eq!(
            doc("relayhost = [a]:587\r\n").get("relayhost").as_deref(),
            Some("[a]:587")
        );
    }

    #[test]
    fn names_are_case_sensitive_and_equals_may_appear_in_values() {
        let d = doc("Relayhost = upper\nrelayhost = a=b=c\n");
        assert_eq!(d.get("relayhost").as_deref(), Some("a=b=c"));
        assert_eq!(d.get("Relayhost").as_deref(), Some("upper"));
    }

    #[test]
    fn indented_first_line_is_skipped() {
        let d = doc("  leading = ws\nrelayhost = x\n");
        assert_eq!(d.get("leading"), None);
        assert_eq!(d.get("relayhost").as_deref(), Some("x"));
    }

    #[test]
    fn accidentally_indented_parameter_joins_the_value_above() {
        let d = doc("mynetworks = 127.0.0.0/8\n  relayhost = [smtp.example.com]:587\n");
        assert_eq!(d.get("relayhost"), None);
        assert_eq!(
            d.get("mynetworks").as_deref(),
            Some("127.0.0.0/8  relayhost = [smtp.example.com]:587")
        );
    }

    #[test]
    fn reports_postfix_fatal_lines() {
        let errors = doc("relayhost = [a]:587\n= value\njustaword\n").errors();
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].line, 2);
        assert!(errors[0].message.starts_with("missing attribute name"));
        assert_eq!(errors[1].line, 3);
        assert!(
            errors[1]
                .message
                .starts_with("missing '=' after attribute name")
        );
    }

    #[test]
    fn equal_value_is_not_touched_even_over_several_lines() {
        let input = "smtp_sasl_security_options =\n    noanonymous\n";
        let (out, edits) = set(input, &[("smtp_sasl_security_options", "noanonymous")]);
        assert!(edits.is_empty());
        assert_eq!(out, input);
    }

    #[test]
    fn changed_value_is_edited_in_place_keeping_style() {
        let cases: &[(&str, &str)] = &[
            (
                "a = 1\nrelayhost = old\nb = 2\n",
                "a = 1\nrelayhost = new\nb = 2\n",
            ),
            ("relayhost=old\n", "relayhost=new\n"),
            (
                "relayhost\t=\told\r\nb = 2\r\n",
                "relayhost\t=\tnew\r\nb = 2\r\n",
            ),
            ("relayhost = old", "relayhost = new"),
            (
                "relayhost = old,\n# inner\n   more\nb = 2\n",
                "relayhost = new\n# inner\nb = 2\n",
            ),
            ("relayhost =\n   old\n", "relayhost = new\n"),
            ("relayhost\n  = old\n", "relayhost = new\n"),
        ];
        for (input, want) in cases {
            let (out, edits) = set(input, &[("relayhost", "new")]);
            assert_eq!(out, *want, "input {input:?}");
            assert_eq!(edits.len(), 1);
            assert_eq!(doc(&out).get("relayhost").as_deref(), Some("new"));
        }
    }

    #[test]
    fn earlier_duplicates_become_comments() {
        let input = "relayhost = one\n  cont\nx = 1\nrelayhost = two\n";
        let (out, edits) = set(input, &[("relayhost", "three")]);
        assert_eq!(out, "#relayhost = one\n#  cont\nx = 1\nrelayhost = three\n");
        assert_eq!(
            edits,
            vec![Edit::Changed {
                name: "relayhost".into(),
                old: "two".into()
            }]
        );
    }

    #[test]
    fn new_parameters_are_appended_once_after_the_marker() {
        let (out, _) = set("a = 1\n", &[("x", "1"), ("y", "2")]);
        assert_eq!(out, format!("a = 1\n{MARKER}\nx = 1\ny = 2\n"));
        let (again, edits) = set(&out, &[("z", "3")]);
        assert_eq!(edits.len(), 1);
        assert_eq!(again, format!("a = 1\n{MARKER}\nx = 1\ny = 2\nz = 3\n"));
    }

    #[test]
    fn append_handles_missing_final_newline_and_crlf() {
        let (out, _) = set("a = 1\r\n# last comment", &[("x", "1")]);
        assert_eq!(
            out,
            format!("a = 1\r\n# last comment\r\n{MARKER}\r\nx = 1\r\n")
        );
        assert_eq!(doc(&out).get("x").as_deref(), Some("1"));
        let (out, _) = set("", &[("x", "1")]);
        assert_eq!(out, format!("{MARKER}\nx = 1\n"));
    }

    #[test]
    fn lists_split_like_postfix() {
        assert_eq!(list("hash:/a, hash:/b"), ["hash:/a", "hash:/b"]);
        assert_eq!(
            list(" hash:/a,,\thash:/b\n  $x "),
            ["hash:/a", "hash:/b", "$x"]
        );
        assert_eq!(
            list("inline:{ a=b, c=d }, hash:/c"),
            ["inline:{ a=b, c=d }", "hash:/c"]
        );
        assert_eq!(list("{ {a b}, c }"), ["{ {a b}, c }"]);
        assert_eq!(list(""), Vec::<&str>::new());
    }

    #[test]
    fn same_value_ignores_whitespace_layout() {
        assert!(same_value("a  b\tc", "a b c"));
        assert!(!same_value("a,b", "a b"));
        assert!(!same_value("ab", "a b"));
    }
}
