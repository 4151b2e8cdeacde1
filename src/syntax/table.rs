//! Lookup-table sources (`postmap` input): lossless parsing and deterministic rendering.
//!
//! The line grammar is main.cf's (see [`super::lines`]); a logical line is `key
//! whitespace value` (postmap(1), INPUT FILE FORMAT): the key ends at the first
//! whitespace unless it is a double-quoted string (Postfix 3.2+, with `\"` and `\\`
//! escapes), the value is the rest, trimmed. A line without a value is one postmap skips
//! with a warning. Parsing never fails and keeps every byte; [`render`] produces the
//! files postrelay owns: a header comment, then one `key value` line per entry sorted by
//! key, always `\n`-terminated.

use std::borrow::Cow;

use super::lines::{self, Kind, Line};

/// The first line of every map file postrelay writes.
pub const HEADER: &str =
    "# Managed by postrelay: edit the desired-state file and run `postrelay apply` instead.";

/// One logical entry of a lookup table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1-based line where the entry starts.
    pub line: usize,
    pub key: Vec<u8>,
    /// Joined and trimmed; empty when the line has no value (postmap skips such lines).
    pub value: Vec<u8>,
}

/// A parsed lookup-table source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    lines: Vec<Line>,
}

/// Length of the key at the start of `text`: up to whitespace, or a whole quoted string.
pub fn key_len(text: &[u8]) -> usize {
    if text.first() == Some(&b'"') {
        let mut i = 1;
        while i < text.len() {
            match text[i] {
                b'\\' => i += 2,
                b'"' => return i + 1,
                _ => i += 1,
            }
        }
        // Unterminated quote: Postfix takes the key up to whitespace instead.
    }
    text.iter()
        .position(|&b| lines::is_space(b))
        .unwrap_or(text.len())
}

impl Table {
    /// Parses any bytes; never fails.
    pub fn parse(input: &[u8]) -> Table {
        Table {
            lines: lines::split(input),
        }
    }

    /// The exact bytes of the document.
    pub fn render(&self) -> Vec<u8> {
        lines::render(&self.lines)
    }

    /// The physical lines, classified.
    pub fn lines(&self) -> &[Line] {
        &self.lines
    }

    /// The logical entries in file order (duplicates included; postmap keeps the first).
    pub fn entries(&self) -> Vec<Entry> {
        let lines = self.lines.iter().map(|l| (l.kind, l.raw.as_slice()));
        entries_of(lines)
            .map(|e| Entry {
                line: e.line,
                key: e.key.into_owned(),
                value: e.value.into_owned(),
            })
            .collect()
    }
}

/// One logical entry, borrowed from the text it was read from where it lies on one
/// line (see [`entries`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRef<'a> {
    /// 1-based line where the entry starts.
    pub line: usize,
    pub key: Cow<'a, [u8]>,
    /// Joined and trimmed; empty when the line has no value (postmap skips such lines).
    pub value: Cow<'a, [u8]>,
}

/// The logical entries of `input` in file order, as [`Table::entries`] gives them, one
/// at a time and without copying the text of one-line entries: for large maps.
pub fn entries(input: &[u8]) -> impl Iterator<Item = EntryRef<'_>> {
    entries_of(lines::classify(input))
}

fn entries_of<'a>(
    lines: impl Iterator<Item = (Kind, &'a [u8])>,
) -> impl Iterator<Item = EntryRef<'a>> {
    lines::joined(lines).map(|(line, text)| {
        let k = key_len(&text);
        match text {
            Cow::Borrowed(t) => EntryRef {
                line,
                key: Cow::Borrowed(&t[..k]),
                value: Cow::Borrowed(lines::trim(&t[k..])),
            },
            Cow::Owned(t) => EntryRef {
                line,
                key: Cow::Owned(t[..k].to_vec()),
                value: Cow::Owned(lines::trim(&t[k..]).to_vec()),
            },
        }
    })
}

/// Renders a table postrelay owns: [`HEADER`], then `key value` lines sorted by key.
/// Keys and values must be single-line and keys free of whitespace (the desired-state
/// validation guarantees both).
pub fn render<K: AsRef<str>, V: AsRef<str>>(entries: &[(K, V)]) -> Vec<u8> {
    let mut sorted: Vec<(&str, &str)> = entries
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .collect();
    sorted.sort_unstable();
    let mut out = Vec::with_capacity(HEADER.len() + 1 + sorted.len() * 64);
    out.extend_from_slice(HEADER.as_bytes());
    out.push(b'\n');
    for (k, v) in sorted {
        debug_assert!(!k.bytes().any(lines::is_space) && !v.contains('\n'));
        out.extend_from_slice(k.as_bytes());
        out.push(b' ');
        out.extend_from_slice(v.as_bytes());
        out.push(b'\n');
    }
    out
}

/// Whether a physical line is the header postrelay writes.
pub fn is_header(line: &Line) -> bool {
    line.kind == Kind::Comment && lines::trim(line.content()) == HEADER.as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries_as_postmap_does() {
        let input = "# comment line\n   # indented comment\n[smtp.example.com]:587     user@example.com:p@ss:w0rd with spaces   \nAlice@Example.COM\talice:secret#notacomment # trailing\nmulti.example  part1\n    part2\n# between\n\n\tpart3\n\"key with space\"  quoted:ok\nnovalue\n";
        let t = Table::parse(input.as_bytes());
        assert_eq!(t.render(), input.as_bytes());
        let got: Vec<(usize, String, String)> = t
            .entries()
            .into_iter()
            .map(|e| {
                (
                    e.line,
                    String::from_utf8(e.key).unwrap(),
                    String::from_utf8(e.value).unwrap(),
                )
            })
            .collect();
        let want = [
            (
                3,
                "[smtp.example.com]:587",
                "user@example.com:p@ss:w0rd with spaces",
            ),
            (
                4,
                "Alice@Example.COM",
                "alice:secret#notacomment # trailing",
            ),
            (5, "multi.example", "part1    part2\tpart3"),
            (10, "\"key with space\"", "quoted:ok"),
            (11, "novalue", ""),
        ];
        let want: Vec<(usize, String, String)> = want
            .iter()
            .map(|(l, k, v)| (*l, k.to_string(), v.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn renders_sorted_with_header() {
        let out = render(&[("b", "2"), ("@a", "1"), ("[x]:587", "u:p")]);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            format!("{HEADER}\n@a 1\n[x]:587 u:p\nb 2\n")
        );
        let t = Table::parse(&out);
        assert!(is_header(&t.lines()[0]));
        assert_eq!(t.entries().len(), 3);
    }

    #[test]
    fn borrowed_entries_are_the_entries() {
        let inputs: &[&[u8]] = &[
            b"a 1\n  b 2\n# c\n\tc 3\n\n  d\nx y\n",
            b"  orphan 1\n  more\nk v\r\nk2 \"v 2\"  \n\"q k\" v",
            b"nul v\0after\ncont x\n  y\0z\n  w\nlast",
            b"",
            b"#only\n\n",
        ];
        for input in inputs {
            // As the logical lines of the whole document give them.
            let lines = lines::split(input);
            let owned: Vec<(usize, Vec<u8>, Vec<u8>)> = lines::logical_lines(&lines)
                .iter()
                .map(|l| {
                    let text = l.text(&lines);
                    let k = key_len(&text);
                    (
                        l.line_number(),
                        text[..k].to_vec(),
                        lines::trim(&text[k..]).to_vec(),
                    )
                })
                .collect();
            let parsed: Vec<(usize, Vec<u8>, Vec<u8>)> = Table::parse(input)
                .entries()
                .into_iter()
                .map(|e| (e.line, e.key, e.value))
                .collect();
            assert_eq!(parsed, owned, "{input:?}");
            let borrowed: Vec<(usize, Vec<u8>, Vec<u8>)> = entries(input)
                .map(|e| (e.line, e.key.into_owned(), e.value.into_owned()))
                .collect();
            assert_eq!(borrowed, owned, "{input:?}");
        }
        // One-line entries are not copied.
        let e = entries(b"k v\n").next().unwrap();
        assert!(matches!(
            (e.key, e.value),
            (Cow::Borrowed(b"k"), Cow::Borrowed(b"v"))
        ));
        assert_eq!(
            entries(b"nul v\0after\ncont x\n  y\0z\n")
                .map(|e| e.value.into_owned())
                .collect::<Vec<_>>(),
            [b"v".to_vec(), b"x  y".to_vec()]
        );
    }

    #[test]
    fn quoted_keys() {
        assert_eq!(key_len(b"\"a \\\" b\" v"), 8);
        assert_eq!(key_len(b"\"open v"), 5);
        assert_eq!(key_len(b"plain"), 5);
    }
}
