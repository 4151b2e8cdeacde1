//! master.cf as a lossless document. Postfix reads it with the line grammar of main.cf
//! (`lines`): each logical line is one service, `name type private unpriv chroot wakeup
//! maxproc command [args…]`, continued on indented lines.
//!
//! postrelay owns at most one service here, which it marks with a comment line directly
//! above it ([`MARK`]). [`MasterCf::set_own`] adds it at the end or rewrites it in
//! place; [`MasterCf::remove_own`] takes out exactly the lines it added, so the file
//! is byte for byte what it was before. A service of postrelay's name without the mark
//! is someone else's ([`Foreign`]), never overwritten. Every other byte stays as it
//! was; `render(parse(x)) == x` for every input.

use super::lines::{self, Kind, Line};

/// The comment line above postrelay's service.
pub const MARK: &str = "# postrelay: the service below delivers to relays on port 465 (TLS from the first byte). Written and removed by postrelay.";

/// [`MARK`] when postrelay had to end the file's last line with a newline before it:
/// removing the service removes that newline too.
const MARK_AFTER_UNENDED: &str = "# postrelay: the service below delivers to relays on port 465 (TLS from the first byte). Written and removed by postrelay (the line above had no newline).";

/// One service entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    /// The service type: `inet`, `unix`, `unix-dgram`, `fifo`, `pass`.
    pub kind: String,
    /// 1-based line of its first physical line.
    pub line: usize,
    /// Indices of its first and last physical lines (comments in between included).
    first: usize,
    last: usize,
    /// The index of the mark line above it, if it has one.
    mark: Option<usize>,
}

/// A service of postrelay's name that postrelay did not write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Foreign {
    pub name: String,
    pub line: usize,
}

impl Foreign {
    /// What is wrong, without the line.
    pub fn reason(&self) -> String {
        format!(
            "a service named {} that postrelay did not write (its mark comment is not above it); rename or remove it, postrelay never overwrites it",
            self.name
        )
    }
}

impl std::fmt::Display for Foreign {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterCf {
    lines: Vec<Line>,
}

impl MasterCf {
    pub fn parse(input: &[u8]) -> MasterCf {
        MasterCf {
            lines: lines::split(input),
        }
    }

    pub fn render(&self) -> Vec<u8> {
        lines::render(&self.lines)
    }

    /// Every service, in file order.
    pub fn services(&self) -> Vec<Service> {
        lines::logical_lines(&self.lines)
            .into_iter()
            .map(|l| {
                let text = l.text(&self.lines);
                let text = String::from_utf8_lossy(&text);
                let mut fields = text.split_ascii_whitespace();
                let name = fields.next().unwrap_or("").to_string();
                let kind = fields.next().unwrap_or("").to_string();
                let last = l.continuations.last().copied().unwrap_or(l.start);
                let mark = l.start.checked_sub(1).filter(|&i| self.is_mark(i));
                Service {
                    name,
                    kind,
                    line: l.line_number(),
                    first: l.start,
                    last,
                    mark,
                }
            })
            .collect()
    }

    fn is_mark(&self, i: usize) -> bool {
        let line = &self.lines[i];
        let text = String::from_utf8_lossy(lines::trim(line.content()));
        line.kind == Kind::Comment && (text == MARK || text == MARK_AFTER_UNENDED)
    }

    /// postrelay's service `name`, if there is one; an error if a service of that name
    /// is not postrelay's.
    pub fn own(&self, name: &str) -> Result<Option<Service>, Foreign> {
        let mut found = None;
        for s in self.services().into_iter().filter(|s| s.name == name) {
            if s.mark.is_none() || found.is_some() {
                return Err(Foreign {
                    name: name.to_string(),
                    line: s.line,
                });
            }
            found = Some(s);
        }
        Ok(found)
    }

    /// Makes postrelay's service `name` read `entry` (its text: one line, or a first line
    /// and indented continuations, `\n`-separated), added at the end of the file with
    /// the mark above it, or rewritten in place. Whether a byte changed.
    pub fn set_own(&mut self, name: &str, entry: &str) -> Result<bool, Foreign> {
        let ending = lines::dominant_ending(&self.lines);
        let new: Vec<Line> = lines::split(&with_ending(entry, ending));
        match self.own(name)? {
            Some(s) => {
                let old = &self.lines[s.first..=s.last];
                if old == new.as_slice() {
                    return Ok(false);
                }
                self.lines.splice(s.first..=s.last, new);
            }
            None => {
                let mark = match self.lines.last_mut() {
                    Some(last) if last.ending().is_empty() => {
                        last.raw.extend_from_slice(ending);
                        MARK_AFTER_UNENDED
                    }
                    _ => MARK,
                };
                self.lines.extend(lines::split(&with_ending(mark, ending)));
                self.lines.extend(new);
                // The text after the mark was classified on its own: re-classify the
                // whole file so continuations and orphans read as Postfix reads them.
                self.lines = lines::split(&self.render());
            }
        }
        Ok(true)
    }

    /// Removes postrelay's service `name` and its mark, leaving the file as it was
    /// before [`MasterCf::set_own`] added it. Whether a byte changed.
    pub fn remove_own(&mut self, name: &str) -> Result<bool, Foreign> {
        let Some(s) = self.own(name)? else {
            return Ok(false);
        };
        let mark = s.mark.expect("own services are marked");
        let unended =
            String::from_utf8_lossy(lines::trim(self.lines[mark].content())) == MARK_AFTER_UNENDED;
        self.lines.drain(mark..=s.last);
        if unended
            && mark == self.lines.len()
            && let Some(last) = self.lines.last_mut()
        {
            let keep = last.raw.len() - last.ending().len();
            last.raw.truncate(keep);
        }
        self.lines = lines::split(&self.render());
        Ok(true)
    }
}

/// `text` with each line ended by `ending`.
fn with_ending(text: &str, ending: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in text.lines() {
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(ending);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENTRY: &str = "postrelay-smtps unix  -       -       n       -       -       smtp\n  -o smtp_tls_wrappermode=yes\n  -o smtp_tls_security_level=encrypt";

    const DEBIAN: &str = "\
# Postfix master process configuration file.
smtp      inet  n       -       y       -       -       smtpd
#submission inet n       -       y       -       -       smtpd
#  -o syslog_name=postfix/submission
pickup    unix  n       -       y       60      1       pickup
smtp      unix  -       -       y       -       -       smtp
relay     unix  -       -       y       -       -       smtp
        -o syslog_name=postfix/$service_name
";

    #[test]
    fn services_are_read_with_their_continuations() {
        let m = MasterCf::parse(DEBIAN.as_bytes());
        let names: Vec<(String, String, usize)> = m
            .services()
            .into_iter()
            .map(|s| (s.name, s.kind, s.line))
            .collect();
        assert_eq!(
            names,
            [
                ("smtp", "inet", 2),
                ("pickup", "unix", 5),
                ("smtp", "unix", 6),
                ("relay", "unix", 7)
            ]
            .map(|(n, k, l)| (n.to_string(), k.to_string(), l))
        );
        assert_eq!(m.render(), DEBIAN.as_bytes());
    }

    #[test]
    fn the_own_service_is_added_rewritten_and_removed_byte_for_byte() {
        for original in [
            DEBIAN,
            "smtp unix - - n - - smtp",
            "",
            "a unix - - n - - smtp\r\n",
        ] {
            let mut m = MasterCf::parse(original.as_bytes());
            assert!(m.set_own("postrelay-smtps", ENTRY).unwrap());
            let added = String::from_utf8(m.render()).unwrap();
            assert!(added.starts_with(original.trim_end_matches(['\r', '\n'])));
            assert!(
                added.contains(MARK.split(" (TLS").next().unwrap()),
                "{added}"
            );
            let own = m.own("postrelay-smtps").unwrap().expect("present");
            assert_eq!(own.kind, "unix");
            assert!(!m.set_own("postrelay-smtps", ENTRY).unwrap(), "idempotent");
            // Changed in place.
            let other = ENTRY.replace("encrypt", "secure");
            assert!(m.set_own("postrelay-smtps", &other).unwrap());
            let rewritten = String::from_utf8(m.render()).unwrap();
            assert_eq!(rewritten, added.replace("level=encrypt", "level=secure"));
            assert!(m.remove_own("postrelay-smtps").unwrap());
            assert_eq!(m.render(), original.as_bytes(), "{original:?}");
            assert!(!m.remove_own("postrelay-smtps").unwrap());
        }
    }

    #[test]
    fn a_service_of_that_name_without_the_mark_is_foreign() {
        let text = format!("{DEBIAN}postrelay-smtps unix - - n - - smtp\n");
        let mut m = MasterCf::parse(text.as_bytes());
        let e = m.set_own("postrelay-smtps", ENTRY).unwrap_err();
        assert_eq!(e.line, 9);
        assert!(m.remove_own("postrelay-smtps").is_err());
        assert_eq!(m.render(), text.as_bytes(), "untouched");
        // Two, one marked: still refused.
        let mut m = MasterCf::parse(DEBIAN.as_bytes());
        m.set_own("postrelay-smtps", ENTRY).unwrap();
        let mut twice = String::from_utf8(m.render()).unwrap();
        twice.push_str("postrelay-smtps unix - - n - - smtp\n");
        assert!(
            MasterCf::parse(twice.as_bytes())
                .own("postrelay-smtps")
                .is_err()
        );
    }
}
