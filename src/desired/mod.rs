//! The desired-state file (`postrelay.toml`): the model, its invariants, and loading.
//!
//! [`load`] is a short pipeline: read the file (the hardened reader, bounded) → parse
//! the TOML into the raw serde model → check each entry's fields and read its password
//! file (`entries`, with the pure checks in [`fields`]) → check the rules across
//! entries (`rules`). A plainly laid-out file is parsed table by table from
//! toml_parser's tokens, each table checked as it ends (`stream`); any other file is
//! parsed as a whole by toml (`raw`), whose messages it keeps. Every problem found on
//! the way is collected with its file and line ([`Problems`]), and all of them are
//! reported together.
//!
//! Invariants of a [`Desired`] returned by [`load`]:
//! - at least one of `relayhost` and `senders` is non-empty, and every sender has a
//!   relay of its own or there is a relayhost;
//! - sender keys are lowercased, syntactically valid domains/addresses whose table keys
//!   (`@domain` / `address`) are unique; senders keep file order;
//! - every relay is a parsed [`Relay`] and has exactly one entry in `tls`;
//! - no address entry inherits its domain's credentials to send them to another relay;
//! - usernames contain no `:`, whitespace or control characters; passwords are non-empty,
//!   have no control characters other than inner tabs and no leading/trailing
//!   whitespace, so they survive a trip through Postfix lookup tables unchanged.
//!
//! No message, warning or log line ever contains a password or any part of one: TOML
//! errors are reduced to their bare message plus a line number (never the rendered
//! source excerpt), the `password` field is deserialised by a visitor that never echoes
//! the value it rejects, and passwords are [`Secret`]s.

pub mod edit;
mod entries;
pub mod fields;
mod raw;
mod rules;
mod stream;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::fs::{self, Links};
use crate::managed::MapKind;
use crate::problems::Problems;
use crate::routing::{self, Relay, Routing, Table};
use crate::secret::Secret;

/// Default location of the desired-state file.
pub const DEFAULT_CONFIG: &str = "/etc/postrelay/postrelay.toml";

/// The `--config` value that reads the desired state from standard input.
pub const STDIN: &str = "-";

/// How a desired state read from standard input is named in messages.
pub const STDIN_NAME: &str = "<stdin>";

/// Largest password file accepted, in bytes.
pub const MAX_FILE_SIZE: u64 = 10 * 1024 * 1024;

/// Largest desired-state file accepted, in bytes: 100,000 senders with inline
/// credentials take about 13 MiB, so the limit leaves room above that scale while
/// still refusing a file that is clearly not a desired state.
pub const MAX_DESIRED_SIZE: u64 = 64 * 1024 * 1024;

/// Lookup-table types accepted for `[postfix] map_type`.
pub const MAP_TYPES: &[&str] = &["hash", "btree", "lmdb", "cdb", "texthash"];

/// TLS policy for one relay, as written to `tls_policy` (Postfix's TLS security levels,
/// TLS_README).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tls {
    /// TLS, certificate chain verified and its name matching the next hop.
    Secure,
    /// TLS, certificate chain verified and its name matching the server's host name.
    Verify,
    /// TLS, certificate not checked.
    Encrypt,
    /// TLS when offered: credentials may go out in clear text.
    May,
    /// No TLS: credentials go out in clear text.
    None,
}

impl Tls {
    pub fn as_str(self) -> &'static str {
        match self {
            Tls::Secure => "secure",
            Tls::Verify => "verify",
            Tls::Encrypt => "encrypt",
            Tls::May => "may",
            Tls::None => "none",
        }
    }

    /// A level that may send credentials without TLS (`may`, `none`).
    pub fn is_weak(self) -> bool {
        matches!(self, Tls::May | Tls::None)
    }

    /// A level that checks the server's certificate against a CA (`secure`, `verify`).
    pub fn verifies_certificate(self) -> bool {
        matches!(self, Tls::Secure | Tls::Verify)
    }

    /// The level of a relay without a `tls` setting: `secure` for a host name (the big
    /// relays present publicly trusted certificates for their SMTP host names),
    /// `encrypt` for an IP literal, which no certificate names.
    pub fn default_for(relay: &Relay) -> Tls {
        if relay.is_ip_literal() {
            Tls::Encrypt
        } else {
            Tls::Secure
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Credentials {
    pub username: String,
    pub password: Secret<String>,
}

/// Who a `[[sender]]` entry matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SenderKey {
    /// Lowercased domain, without the `@`.
    Domain(String),
    /// Every subdomain of this lowercased domain, at any depth (`*.shop.example`, held
    /// as `shop.example`): regexp tables, never a hash key.
    Wildcard(String),
    /// Lowercased full address.
    Address(String),
}

impl SenderKey {
    /// The `[[sender]]` key of the domain an address belongs to (Postfix falls back from
    /// an address to its `@domain` entry in every table); `None` for a domain.
    pub fn domain_key(&self) -> Option<SenderKey> {
        match self {
            SenderKey::Domain(_) | SenderKey::Wildcard(_) => None,
            SenderKey::Address(a) => {
                let (_, domain) = a.rsplit_once('@')?;
                Some(SenderKey::Domain(domain.to_string()))
            }
        }
    }

    /// The lookup-table key: `@domain` or `address`; a wildcard as written
    /// (`*.shop.example`), which no hash table holds.
    pub fn table_key(&self) -> String {
        match self {
            SenderKey::Domain(d) => format!("@{d}"),
            SenderKey::Wildcard(d) => format!("*.{d}"),
            SenderKey::Address(a) => a.clone(),
        }
    }

    /// Whether this key covers mail from `domain`: the domain itself, or a strict
    /// subdomain of a wildcard's.
    pub fn covers_domain(&self, domain: &str) -> bool {
        match self {
            SenderKey::Domain(d) => d == domain,
            SenderKey::Wildcard(w) => {
                domain.len() > w.len() + 1
                    && domain.ends_with(w.as_str())
                    && domain.as_bytes()[domain.len() - w.len() - 1] == b'.'
            }
            SenderKey::Address(_) => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    pub key: SenderKey,
    pub relay: Option<Relay>,
    pub credentials: Option<Credentials>,
    /// 1-based line of the `[[sender]]` table in the desired-state file.
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayHost {
    pub relay: Relay,
    pub credentials: Option<Credentials>,
}

/// A non-fatal finding: a relay whose TLS level lets credentials go out in clear text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Line of the `tls` setting.
    pub line: usize,
    pub relay: Relay,
    pub tls: Tls,
}

/// A validated desired state.
#[derive(Debug, Clone)]
pub struct Desired {
    pub path: PathBuf,
    pub config_dir: Option<PathBuf>,
    pub map_type: Option<String>,
    pub relayhost: Option<RelayHost>,
    pub senders: Vec<Sender>,
    /// Every distinct relay (senders' and the relayhost's) with its resolved TLS policy.
    pub tls: BTreeMap<Relay, Tls>,
    pub warnings: Vec<Warning>,
    /// The managed tables, rendered once when first asked for.
    tables: OnceLock<[Table; 7]>,
}

impl Desired {
    /// Postfix's lookup rule over these entries.
    pub fn routing(&self) -> Routing<'_> {
        Routing::new(self.relayhost.as_ref(), &self.senders)
    }

    /// Whether a relay is on port 465, which needs sender_transport (and postrelay's
    /// master.cf service).
    pub fn needs_transport_map(&self) -> bool {
        self.tls.keys().any(Relay::implicit_tls)
    }

    /// Whether a sender is a wildcard (`*.shop.example`), which needs the regexp tables.
    pub fn has_wildcards(&self) -> bool {
        self.senders
            .iter()
            .any(|s| matches!(s.key, SenderKey::Wildcard(_)))
    }

    /// What the managed table `kind` must hold.
    pub fn table(&self, kind: MapKind) -> &Table {
        &self.tables.get_or_init(|| routing::tables(self))[kind.index()]
    }

    /// The TLS policy of a relay of this desired state.
    pub fn tls_of(&self, relay: &Relay) -> Tls {
        self.tls
            .get(relay)
            .copied()
            .unwrap_or_else(|| Tls::default_for(relay))
    }
}

/// The desired-state text, with line lookups for messages.
pub(crate) struct Source<'a> {
    pub path: &'a Path,
    pub text: &'a str,
    /// The last offset looked up and its line: lookups come in about file order, so
    /// each counts only the newlines between it and the one before (no index of every
    /// line, which for a large file would be as large as the model).
    cursor: Cell<(usize, usize)>,
}

impl<'a> Source<'a> {
    fn new(path: &'a Path, text: &'a str) -> Source<'a> {
        Source {
            path,
            text,
            cursor: Cell::new((0, 1)),
        }
    }

    /// 1-based line of the start of `span`.
    pub fn line(&self, span: Range<usize>) -> usize {
        let to = span.start.min(self.text.len());
        let (from, line) = self.cursor.get();
        let newlines = |r: Range<usize>| {
            self.text.as_bytes()[r]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
        };
        let line = if to >= from {
            line + newlines(from..to)
        } else {
            line - newlines(to..from)
        };
        self.cursor.set((to, line));
        line
    }

    /// The directory relative `password_file`s are read from; `None` for a desired
    /// state read from standard input, which has none.
    pub fn dir(&self) -> Option<&Path> {
        if self.is_stdin() {
            return None;
        }
        Some(self.path.parent().unwrap_or(Path::new("")))
    }

    /// Whether the text came from standard input (`--config -`).
    pub fn is_stdin(&self) -> bool {
        self.path == Path::new(STDIN_NAME)
    }
}

/// Reads, parses and validates the desired-state file at `path`; `-` ([`STDIN`])
/// reads standard input, named [`STDIN_NAME`] in messages. Text from standard input has
/// no permissions to check (the rule for inline passwords is about who else can read a
/// file); the password files it names are checked as always, and must be absolute.
pub fn load(path: &Path) -> Result<Desired, Problems> {
    if path == Path::new(STDIN) {
        let name = Path::new(STDIN_NAME);
        let bytes = fs::read_stdin(MAX_DESIRED_SIZE)
            .map_err(|e| Problems::one(name, None, e.to_string()))?;
        let text = utf8(name, bytes.into_inner())?;
        return parse(name, &text, 0o600);
    }
    let snapshot = fs::read(path, MAX_DESIRED_SIZE, Links::Trusted)
        .map_err(|e| Problems::one(path, None, e.to_string()))?;
    let text = utf8(path, snapshot.bytes.into_inner())?;
    parse(path, &text, snapshot.meta.mode)
}

/// The text of a desired state, or the line where it stops being UTF-8.
fn utf8(path: &Path, bytes: Vec<u8>) -> Result<String, Problems> {
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        Problems::one(path, Some(line), "not valid UTF-8")
    })
}

/// Parses and validates desired-state `text` read from `path` (named in messages; its
/// directory is where relative password files are), whose permission bits are `mode`.
pub fn parse(path: &Path, text: &str, mode: u32) -> Result<Desired, Problems> {
    parse_with(path, text, mode, Reader::Stream)
}

/// How the TOML is read: streamed (falling back to a whole-document parse for a file
/// not laid out plainly, see `stream`), or as a whole document in any case (for tests
/// that compare the two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reader {
    Stream,
    #[cfg(test)]
    Whole,
}

fn parse_with(path: &Path, text: &str, mode: u32, reader: Reader) -> Result<Desired, Problems> {
    let source = Source::new(path, text);
    let streamed = match reader {
        Reader::Stream => stream::parse(&source),
        #[cfg(test)]
        Reader::Whole => None,
    };
    let (parts, mut problems) = match streamed {
        Some(checked) => checked,
        None => {
            tracing::debug!(
                "{}: not laid out plainly; parsed as a whole",
                path.display()
            );
            let raw = raw::parse(&source)?;
            let mut problems = Problems::new(path);
            (entries::check(&source, raw, &mut problems), problems)
        }
    };
    let (tls, warnings) = rules::check(&source, &parts, mode, &mut problems);
    problems.into_result()?;
    Ok(Desired {
        path: path.to_path_buf(),
        config_dir: parts.config_dir,
        map_type: parts.map_type,
        relayhost: parts.relayhost,
        senders: parts.senders,
        tls,
        warnings,
        tables: OnceLock::new(),
    })
}

/// [`parse`] for tests: a private file `test.toml` in the current directory.
#[cfg(test)]
pub fn parse_str(text: &str) -> Result<Desired, Problems> {
    parse(Path::new("test.toml"), text, 0o600)
}

#[cfg(test)]
mod tests;
