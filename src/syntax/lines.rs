//! Physical and logical lines, exactly as Postfix's `readlline()` groups them.
//!
//! main.cf and lookup-table sources share one line grammar (`src/util/readlline.c`):
//! a line that is empty, all whitespace, or whose first non-whitespace byte is `#` is
//! ignored; a line that starts with whitespace continues the logical line before it,
//! *even across ignored lines*; an indented line before any logical line has started is
//! skipped with a warning, together with its own continuations. The newline of each
//! physical line is dropped when lines are joined, and a continuation line keeps its
//! leading whitespace.
//!
//! This module only classifies; it never changes a byte. Every physical line keeps its
//! exact text including its terminator (`\n`, `\r\n`, or nothing on a last line without
//! a final newline), so concatenating the lines gives back the input.

use std::borrow::Cow;

/// How Postfix treats one physical line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Empty or whitespace-only: ignored.
    Blank,
    /// First non-whitespace byte is `#`: ignored.
    Comment,
    /// Starts a logical line (first byte is not whitespace).
    Start,
    /// Starts with whitespace after a logical line began: appended to it.
    Continuation,
    /// Starts with whitespace before any logical line: Postfix skips it with a warning.
    Orphan,
}

/// One physical line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The exact bytes, terminator included.
    pub raw: Vec<u8>,
    pub kind: Kind,
}

impl Line {
    /// The line without its `\n` (a `\r` before it stays: Postfix treats it as whitespace).
    pub fn content(&self) -> &[u8] {
        self.raw.strip_suffix(b"\n").unwrap_or(&self.raw)
    }

    /// The terminator: `"\r\n"`, `"\n"` or `""`.
    pub fn ending(&self) -> &'static [u8] {
        if self.raw.ends_with(b"\r\n") {
            b"\r\n"
        } else if self.raw.ends_with(b"\n") {
            b"\n"
        } else {
            b""
        }
    }
}

/// A logical line: a `Start` line and the indices of its `Continuation` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logical {
    /// Index of the `Start` line in the line vector.
    pub start: usize,
    /// Indices of the continuation lines, in order (ignored lines in between are not listed).
    pub continuations: Vec<usize>,
}

impl Logical {
    /// All line indices that carry text of this logical line.
    pub fn line_indices(&self) -> impl Iterator<Item = usize> + '_ {
        std::iter::once(self.start).chain(self.continuations.iter().copied())
    }

    /// The joined text, as Postfix builds it: each physical line without its newline.
    /// Postfix then reads it as a C string, so the text ends at the first NUL byte.
    pub fn text(&self, lines: &[Line]) -> Vec<u8> {
        let mut out = Vec::new();
        for i in self.line_indices() {
            out.extend_from_slice(lines[i].content());
        }
        if let Some(nul) = out.iter().position(|&b| b == 0) {
            out.truncate(nul);
        }
        out
    }

    /// 1-based number of the first physical line.
    pub fn line_number(&self) -> usize {
        self.start + 1
    }
}

/// C `isspace()` in the "C" locale, which Postfix's `ISSPACE` is.
pub fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Trims C whitespace from both ends.
pub fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_space(b)).unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&b| !is_space(b))
        .map_or(start, |i| i + 1);
    &s[start..end]
}

/// Splits `input` into classified physical lines. Never fails; `render(split(x)) == x`.
pub fn split(input: &[u8]) -> Vec<Line> {
    classify(input)
        .map(|(kind, raw)| Line {
            raw: raw.to_vec(),
            kind,
        })
        .collect()
}

/// The physical lines of `input` (terminator included) with their kinds, one at a time
/// and borrowed: [`split`] without holding every line.
pub fn classify(input: &[u8]) -> impl Iterator<Item = (Kind, &[u8])> {
    let mut in_logical = false;
    input.split_inclusive(|&b| b == b'\n').map(move |raw| {
        let first_text = raw.iter().position(|&b| !is_space(b));
        let kind = match first_text {
            None => Kind::Blank,
            Some(i) if raw[i] == b'#' => Kind::Comment,
            Some(0) => {
                in_logical = true;
                Kind::Start
            }
            Some(_) if in_logical => Kind::Continuation,
            Some(_) => Kind::Orphan,
        };
        (kind, raw)
    })
}

/// The text of each logical line (as [`Logical::text`] joins it) with its 1-based line
/// number, from classified physical lines: borrowed from the input when the logical
/// line is one physical line, joined only when it has continuations.
pub fn joined<'a>(
    lines: impl Iterator<Item = (Kind, &'a [u8])>,
) -> impl Iterator<Item = (usize, Cow<'a, [u8]>)> {
    let content = |raw: &'a [u8]| raw.strip_suffix(b"\n").unwrap_or(raw);
    let mut lines = lines.enumerate().peekable();
    std::iter::from_fn(move || {
        let (start, raw) = loop {
            match lines.next()? {
                (i, (Kind::Start, raw)) => break (i, raw),
                _ => continue,
            }
        };
        let mut text = Cow::Borrowed(content(raw));
        // Continuations, across ignored lines, up to the next logical line.
        while let Some((_, (kind, raw))) = lines.next_if(|(_, (kind, _))| *kind != Kind::Start) {
            if kind == Kind::Continuation {
                text.to_mut().extend_from_slice(content(raw));
            }
        }
        if let Some(nul) = text.iter().position(|&b| b == 0) {
            match &mut text {
                Cow::Borrowed(t) => *t = &t[..nul],
                Cow::Owned(t) => t.truncate(nul),
            }
        }
        Some((start + 1, text))
    })
}

/// Groups `Start` lines with their continuations.
pub fn logical_lines(lines: &[Line]) -> Vec<Logical> {
    let mut out: Vec<Logical> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        match line.kind {
            Kind::Start => out.push(Logical {
                start: i,
                continuations: Vec::new(),
            }),
            Kind::Continuation => {
                if let Some(last) = out.last_mut() {
                    last.continuations.push(i);
                }
            }
            Kind::Blank | Kind::Comment | Kind::Orphan => {}
        }
    }
    out
}

/// Concatenates the lines back into bytes.
pub fn render(lines: &[Line]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines.iter().map(|l| l.raw.len()).sum());
    for line in lines {
        out.extend_from_slice(&line.raw);
    }
    out
}

/// The line terminator a new line should use: the first terminated line's, else `\n`.
pub fn dominant_ending(lines: &[Line]) -> &'static [u8] {
    lines
        .iter()
        .map(Line::ending)
        .find(|e| !e.is_empty())
        .unwrap_or(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(input: &str) -> Vec<Kind> {
        split(input.as_bytes()).iter().map(|l| l.kind).collect()
    }

    #[test]
    fn classifies_like_readlline() {
        use Kind::*;
        let cases: &[(&str, &[Kind])] = &[
            ("a = 1\n", &[Start]),
            ("a = 1\n  b\n", &[Start, Continuation]),
            ("a = 1\n\n  b\n", &[Start, Blank, Continuation]),
            ("a = 1\n# c\n\tb\n", &[Start, Comment, Continuation]),
            ("  # c\n", &[Comment]),
            ("  x = 1\ny = 2\n  z\n", &[Orphan, Start, Continuation]),
            ("a = 1\r\n  b\r\n", &[Start, Continuation]),
            (" \t \n", &[Blank]),
            ("a = 1", &[Start]),
            ("", &[]),
        ];
        for (input, want) in cases {
            assert_eq!(kinds(input), *want, "input {input:?}");
            assert_eq!(render(&split(input.as_bytes())), input.as_bytes());
        }
    }

    #[test]
    fn joins_continuations_across_ignored_lines() {
        let input = b"mydestination = a.example,\n   b.example\n# note\n\tc.example\n\n   d.example\nx = y\n";
        let lines = split(input);
        let logical = logical_lines(&lines);
        assert_eq!(logical.len(), 2);
        assert_eq!(
            logical[0].text(&lines),
            b"mydestination = a.example,   b.example\tc.example   d.example".to_vec()
        );
        assert_eq!(logical[1].line_number(), 7);
    }

    #[test]
    fn trims_c_whitespace() {
        assert_eq!(trim(b" \t a b \r\x0b"), b"a b");
        assert_eq!(trim(b"   "), b"");
    }

    #[test]
    fn endings() {
        let lines = split(b"a\r\nb\nc");
        assert_eq!(lines[0].ending(), b"\r\n");
        assert_eq!(lines[1].ending(), b"\n");
        assert_eq!(lines[2].ending(), b"");
        assert_eq!(dominant_ending(&lines), b"\r\n");
        assert_eq!(dominant_ending(&split(b"x")), b"\n");
    }
}
