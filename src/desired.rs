//! The desired-state file (`postrelay.toml`): its TOML model, loading and
//! validation.
//!
//! This module owns everything between the bytes of the desired-state file
//! and a [`Desired`] value: reading the file (and any `password_file`s),
//! parsing the TOML, checking every rule, normalising keys and relays, and
//! resolving one TLS policy per distinct relay. The rest of the crate can
//! rely on these invariants of a `Desired` returned by [`load`]:
//!
//! - at least one of `relayhost` and `senders` is non-empty, and every sender
//!   has a relay of its own or there is a relayhost;
//! - sender keys are lowercased, syntactically valid domains/addresses whose
//!   table keys (`@domain` / `address`) are unique; senders keep file order;
//! - every relay is normalised (`host`, `[host]`, `host:port`, `[host]:port`,
//!   host lowercased) and has exactly one entry in `tls`;
//! - usernames contain no `:`, whitespace or control characters; passwords are
//!   non-empty, have no control characters other than inner tabs and no
//!   leading/trailing whitespace, so they survive a trip through Postfix
//!   lookup tables unchanged.
//!
//! Validation collects every problem in one pass and reports them together,
//! one Postfix-style line each (`FILE, line N: message`). No message, warning
//! or log line ever contains a password or any part of one: TOML errors are
//! reduced to their bare message plus a line number (never the rendered
//! source excerpt), and the `password` field is deserialised by a visitor
//! that never echoes the value it rejects.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{Metadata, OpenOptions};
use std::io::{self, Read};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use toml::Spanned;

/// Default location of the desired-state file.
pub const DEFAULT_CONFIG: &str = "/etc/postrelay/postrelay.toml";

/// TLS policy for one relay, as written to `tls_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    Encrypt,
    May,
    None,
}

impl Tls {
    pub fn as_str(self) -> &'static str {
        match self {
            Tls::Encrypt => "encrypt",
            Tls::May => "may",
            Tls::None => "none",
        }
    }
}

/// A password. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("********")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("********")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

/// Who a `[[sender]]` entry matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderKey {
    /// Lowercased domain, without the `@`.
    Domain(String),
    /// Lowercased full address.
    Address(String),
}

impl SenderKey {
    /// The `[[sender]]` key of the domain an address belongs to (Postfix falls back from
    /// an address to its `@domain` entry in every table); `None` for a domain.
    pub fn domain_key(&self) -> Option<SenderKey> {
        match self {
            SenderKey::Domain(_) => None,
            SenderKey::Address(a) => {
                let (_, domain) = a.rsplit_once('@')?;
                Some(SenderKey::Domain(domain.to_string()))
            }
        }
    }

    /// The lookup-table key: `@domain` or `address`.
    pub fn table_key(&self) -> String {
        match self {
            SenderKey::Domain(d) => format!("@{d}"),
            SenderKey::Address(a) => a.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    pub key: SenderKey,
    /// Normalised relay (`host`, `[host]`, `host:port` or `[host]:port`, host lowercased).
    pub relay: Option<String>,
    pub credentials: Option<Credentials>,
    /// 1-based line of the `[[sender]]` table in the desired-state file.
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayHost {
    pub relay: String,
    pub credentials: Option<Credentials>,
}

#[derive(Debug, Clone)]
pub struct Desired {
    pub path: PathBuf,
    pub config_dir: Option<PathBuf>,
    pub map_type: Option<String>,
    pub relayhost: Option<RelayHost>,
    pub senders: Vec<Sender>,
    /// Every distinct relay (senders' and the relayhost's) with its resolved TLS policy.
    pub tls: BTreeMap<String, Tls>,
    /// Non-fatal findings (tls = may/none ...), one sentence each, naming file and line.
    pub warnings: Vec<String>,
}

/// Largest password file accepted, in bytes.
pub const MAX_FILE_SIZE: u64 = 10 * 1024 * 1024;

/// Largest desired-state file accepted, in bytes: 100,000 senders with inline
/// credentials take about 13 MiB, so the limit leaves room above that scale while
/// still refusing a file that is clearly not a desired state.
pub const MAX_DESIRED_SIZE: u64 = 64 * 1024 * 1024;

/// Lookup-table types accepted for `[postfix] map_type`.
pub const MAP_TYPES: &[&str] = &["hash", "btree", "lmdb", "cdb", "texthash"];

// ---------------------------------------------------------------------------
// Raw TOML model
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawFile {
    postfix: Option<Spanned<RawPostfix>>,
    relayhost: Option<Spanned<RawRelayHost>>,
    sender: Option<Vec<Spanned<RawSender>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [postfix] table")]
struct RawPostfix {
    config_dir: Option<Spanned<String>>,
    map_type: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [relayhost] table")]
struct RawRelayHost {
    relay: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    password: Option<Spanned<RawPassword>>,
    password_file: Option<Spanned<String>>,
    tls: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[sender]] table")]
struct RawSender {
    domain: Option<Spanned<String>>,
    address: Option<Spanned<String>>,
    relay: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    password: Option<Spanned<RawPassword>>,
    password_file: Option<Spanned<String>>,
    tls: Option<Spanned<String>>,
}

/// An inline `password` value. Its deserialiser rejects non-strings without
/// echoing the rejected value (serde's default error would quote it).
struct RawPassword(String);

impl<'de> Deserialize<'de> for RawPassword {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PasswordVisitor)
    }
}

struct PasswordVisitor;

fn not_a_string<E: de::Error>() -> E {
    E::custom("invalid type for password, expected a string")
}

impl<'de> Visitor<'de> for PasswordVisitor {
    type Value = RawPassword;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawPassword, E> {
        Ok(RawPassword(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<RawPassword, E> {
        Ok(RawPassword(v))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<RawPassword, E> {
        Err(not_a_string())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<RawPassword, E> {
        Err(not_a_string())
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<RawPassword, E> {
        Err(not_a_string())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<RawPassword, E> {
        Err(not_a_string())
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<RawPassword, E> {
        Err(not_a_string())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawPassword, E> {
        Err(not_a_string())
    }
    fn visit_char<E: de::Error>(self, _: char) -> Result<RawPassword, E> {
        Err(not_a_string())
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<RawPassword, E> {
        Err(not_a_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<RawPassword, E> {
        Err(not_a_string())
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<RawPassword, A::Error> {
        Err(not_a_string())
    }
    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<RawPassword, A::Error> {
        Err(not_a_string())
    }
}

// ---------------------------------------------------------------------------
// Syntax checks (public for reuse)
// ---------------------------------------------------------------------------

/// Checks a domain name and returns it lowercased.
///
/// ASCII only (IDNs must be written in punycode), labels of `[A-Za-z0-9-]`
/// not starting or ending with `-`, 1-63 characters each, at most 253 in
/// total, no leading `@` and no trailing dot. The error is a terse reason,
/// without the domain itself.
pub fn parse_domain(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("empty".into());
    }
    if !s.is_ascii() {
        return Err("non-ASCII characters; write it in punycode (IDNA) form, \"xn--...\"".into());
    }
    if s.starts_with('@') {
        return Err("leading '@'; write the domain without it".into());
    }
    if s.len() > 1 && s.ends_with('.') {
        return Err("trailing dot".into());
    }
    if s.len() > 253 {
        return Err("longer than 253 characters".into());
    }
    for label in s.split('.') {
        if label.is_empty() {
            return Err("empty label".into());
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(format!("label contains {c:?}"));
        }
        if label.len() > 63 {
            return Err(format!("label {label:?} longer than 63 characters"));
        }
        if label.starts_with('-') {
            return Err(format!("label {label:?} starts with '-'"));
        }
        if label.ends_with('-') {
            return Err(format!("label {label:?} ends with '-'"));
        }
    }
    Ok(s.to_ascii_lowercase())
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c)
}

/// Checks an email address (`local@domain`) and returns it lowercased.
///
/// Exactly one `@`; the local part is 1-64 characters of RFC 5322 atext plus
/// `.` and does not start with `#` (a comment in a lookup table); the domain
/// follows [`parse_domain`].
pub fn parse_address(s: &str) -> Result<String, String> {
    let Some((local, domain)) = s.split_once('@') else {
        return Err("no '@'".into());
    };
    if domain.contains('@') {
        return Err("more than one '@'".into());
    }
    if local.is_empty() {
        return Err("empty local part".into());
    }
    if let Some(c) = local.chars().find(|c| !is_atext(*c)) {
        return Err(format!("local part contains {c:?}"));
    }
    if local.len() > 64 {
        return Err("local part longer than 64 characters".into());
    }
    if local.starts_with('#') {
        return Err("local part starts with '#' (a lookup-table comment)".into());
    }
    let domain = parse_domain(domain).map_err(|e| format!("domain part: {e}"))?;
    Ok(format!("{}@{domain}", local.to_ascii_lowercase()))
}

/// Checks a relay (`host`, `[host]`, `host:port` or `[host]:port`) and
/// returns it normalised: host lowercased, otherwise as written.
///
/// The host is a DNS name (rules of [`parse_domain`]); inside brackets it may
/// also be an IPv4 address or `ipv6:` followed by an IPv6 address. The port
/// is decimal, 1-65535.
pub fn parse_relay(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("empty relay".into());
    }
    if s.chars().any(char::is_whitespace) {
        return Err("contains whitespace".into());
    }
    if !s.is_ascii() {
        return Err(
            "non-ASCII characters; write the host in punycode (IDNA) form, \"xn--...\"".into(),
        );
    }
    let port = if let Some(rest) = s.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err("'[' without ']'".into());
        };
        if host.is_empty() {
            return Err("empty host".into());
        }
        if let Some(v6) = host
            .get(..5)
            .filter(|p| p.eq_ignore_ascii_case("ipv6:"))
            .map(|_| &host[5..])
        {
            v6.parse::<Ipv6Addr>()
                .map_err(|_| format!("invalid IPv6 address {v6:?}"))?;
        } else if host.parse::<Ipv4Addr>().is_err() {
            if host.contains(':') {
                return Err("IPv6 addresses are written [ipv6:ADDRESS]".into());
            }
            if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                return Err(format!("invalid IPv4 address {host:?}"));
            }
            parse_domain(host).map_err(|e| format!("invalid host: {e}"))?;
        }
        if after.is_empty() {
            None
        } else if let Some(p) = after.strip_prefix(':') {
            Some(p)
        } else {
            return Err(format!("unexpected {after:?} after ']'"));
        }
    } else {
        let (host, port) = match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        };
        if host.is_empty() {
            return Err("empty host".into());
        }
        if port.is_some_and(|p| p.contains(':')) {
            return Err(if host.contains('.') {
                "more than one ':' (write host:port)".into()
            } else {
                "IPv6 addresses are written [ipv6:ADDRESS]".into()
            });
        }
        if host.contains(']') {
            return Err("']' without '['".into());
        }
        if host.parse::<Ipv4Addr>().is_ok() {
            return Err(format!("an IP address must be in brackets: [{host}]"));
        }
        parse_domain(host).map_err(|e| format!("invalid host: {e}"))?;
        port
    };
    if let Some(p) = port {
        if p.is_empty() {
            return Err("empty port".into());
        }
        if !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("port {p:?} is not a decimal number"));
        }
        let n = p.trim_start_matches('0');
        if n.is_empty() || n.len() > 5 || n.parse::<u32>().map_or(true, |n| n > 65535) {
            return Err("port outside 1-65535".into());
        }
    }
    Ok(s.to_ascii_lowercase())
}

/// Checks a SASL username: non-empty, no `:`, no whitespace, no control
/// characters.
pub fn check_username(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("empty".into());
    }
    if s.contains(':') {
        return Err("contains ':' (postfix splits username:password at the first ':')".into());
    }
    if s.chars().any(char::is_whitespace) {
        return Err("contains whitespace".into());
    }
    if s.chars().any(char::is_control) {
        return Err("contains a control character".into());
    }
    Ok(())
}

/// Checks a SASL password. The error never contains any part of it.
///
/// Non-empty; no control characters except a tab inside; no leading or
/// trailing whitespace (Postfix would strip it from the table value).
pub fn check_password(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("empty password".into());
    }
    if s.chars().any(|c| c == '\n' || c == '\r') {
        return Err("password contains a line break".into());
    }
    if s.contains('\0') {
        return Err("password contains a NUL character".into());
    }
    if s.starts_with(|c: char| c.is_whitespace()) || s.ends_with(|c: char| c.is_whitespace()) {
        return Err("password has leading or trailing whitespace (postfix would strip it)".into());
    }
    if s.chars().any(|c| c.is_control() && c != '\t') {
        return Err("password contains a control character".into());
    }
    Ok(())
}

fn io_reason(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => Errno::from_raw(n).desc().to_owned(),
        None => e.to_string(),
    }
}

/// Opens `path` without blocking (FIFOs), checks that it is a regular file
/// of at most `limit` bytes, and reads it. Returns the contents and
/// the metadata of the opened file.
fn read_regular(path: &Path, limit: u64) -> Result<(Vec<u8>, Metadata), String> {
    // Running as root, a link planted by another user must not choose what is read.
    if let Ok(link) = std::fs::symlink_metadata(path)
        && link.file_type().is_symlink()
    {
        let me = nix::unistd::Uid::effective().as_raw();
        if link.uid() != 0 && link.uid() != me {
            return Err(format!(
                "is a symbolic link owned by uid {}, not by root or you; refusing to follow it",
                link.uid()
            ));
        }
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|e| {
            let hint = if e.kind() == io::ErrorKind::PermissionDenied
                && !nix::unistd::Uid::effective().is_root()
            {
                " (run postrelay as root, e.g. with sudo)"
            } else {
                ""
            };
            format!("cannot open: {}{hint}", io_reason(&e))
        })?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot stat: {}", io_reason(&e)))?;
    if !meta.is_file() {
        let what = if meta.is_dir() {
            "a directory"
        } else if meta.file_type().is_fifo() {
            "a FIFO"
        } else {
            "a special file"
        };
        return Err(format!("not a regular file but {what}"));
    }
    let too_big = || format!("larger than {} MiB", limit / (1024 * 1024));
    if meta.len() > limit {
        return Err(too_big());
    }
    let mut buf = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("read error: {}", io_reason(&e)))?;
    if buf.len() as u64 > limit {
        return Err(too_big());
    }
    Ok((buf, meta))
}

/// Reads a password file: the password is its first line, without one
/// trailing `\n` or `\r\n`, and must pass [`check_password`]. The error
/// names neither the path nor any part of the password.
pub fn read_password_file(path: &Path) -> Result<Secret, String> {
    let (mut buf, _) = read_regular(path, MAX_FILE_SIZE)?;
    if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
        let end = if nl > 0 && buf[nl - 1] == b'\r' {
            nl - 1
        } else {
            nl
        };
        buf.truncate(end);
    }
    let pw = String::from_utf8(buf).map_err(|_| "password is not valid UTF-8".to_owned())?;
    check_password(&pw)?;
    Ok(Secret::new(pw))
}

// ---------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------

/// Problems found so far, each with its line (None: the whole file).
struct Ctx<'a> {
    file: String,
    text: &'a str,
    /// Byte offsets of every '\n' in `text`, for line lookups in O(log n).
    newlines: Vec<usize>,
    dir: PathBuf,
    problems: Vec<(Option<usize>, String)>,
}

impl Ctx<'_> {
    fn line(&self, span: Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.newlines.partition_point(|&nl| nl < end) + 1
    }
    fn at<T>(&mut self, v: &Spanned<T>, msg: String) {
        let line = self.line(v.span());
        self.err(line, msg);
    }
    fn err(&mut self, line: usize, msg: String) {
        self.problems.push((Some(line), msg));
    }

    /// Checks a relay field; `subj` names the entry in messages.
    fn relay(&mut self, subj: &str, relay: &Spanned<String>) -> Option<String> {
        match parse_relay(relay.get_ref()) {
            Ok(r) => Some(r),
            Err(e) => {
                self.at(relay, format!("{subj}: relay {:?}: {e}", relay.get_ref()));
                None
            }
        }
    }

    fn tls(&mut self, subj: &str, tls: &Spanned<String>) -> Option<(Tls, usize)> {
        let t = match tls.get_ref().as_str() {
            "encrypt" => Tls::Encrypt,
            "may" => Tls::May,
            "none" => Tls::None,
            other => {
                self.at(
                    tls,
                    format!("{subj}: tls {other:?}: expected \"encrypt\", \"may\" or \"none\""),
                );
                return None;
            }
        };
        Some((t, self.line(tls.span())))
    }

    /// Checks username/password/password_file of one entry. `Err(())` means
    /// a problem was recorded.
    fn credentials(
        &mut self,
        subj: &str,
        line: usize,
        username: Option<Spanned<String>>,
        password: Option<Spanned<RawPassword>>,
        password_file: Option<Spanned<String>>,
    ) -> Result<Option<Credentials>, ()> {
        let mut ok = true;
        if let Some(u) = &username
            && let Err(e) = check_username(u.get_ref())
        {
            self.at(u, format!("{subj}: username {:?}: {e}", u.get_ref()));
            ok = false;
        }
        // Secrets are only checked (and files only read) when they could be
        // used: with a username and without the other kind of secret.
        let secret = match (&password, &password_file) {
            _ if username.is_none() => None,
            (Some(p), Some(f)) => {
                let l = self.line(p.span()).max(self.line(f.span()));
                self.err(
                    l,
                    format!("{subj}: both password and password_file given; use one"),
                );
                None
            }
            (Some(p), None) => match check_password(&p.get_ref().0) {
                Ok(()) => Some(Secret::new(p.get_ref().0.clone())),
                Err(e) => {
                    self.at(p, format!("{subj}: {e}"));
                    None
                }
            },
            (None, Some(f)) => {
                let written = f.get_ref();
                if written.is_empty() {
                    self.at(f, format!("{subj}: empty password_file"));
                    None
                } else {
                    let path = self.dir.join(written);
                    match read_password_file(&path) {
                        Ok(s) => Some(s),
                        Err(e) => {
                            self.at(
                                f,
                                format!("{subj}: password_file {:?}: {e}", path.display()),
                            );
                            None
                        }
                    }
                }
            }
            (None, None) => None,
        };
        match (&username, &password, &password_file) {
            (Some(_), None, None) => {
                self.err(
                    line,
                    format!("{subj}: username without password or password_file"),
                );
                ok = false;
            }
            (None, Some(p), _) => {
                self.at(p, format!("{subj}: password without username"));
                ok = false;
            }
            (None, None, Some(f)) => {
                self.at(f, format!("{subj}: password_file without username"));
                ok = false;
            }
            _ => {}
        }
        if (password.is_some() || password_file.is_some()) && secret.is_none() {
            ok = false;
        }
        if !ok {
            return Err(());
        }
        Ok(match (username, secret) {
            (Some(u), Some(password)) => Some(Credentials {
                username: u.into_inner(),
                password,
            }),
            _ => None,
        })
    }
}

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// One use of a relay, for resolving its TLS policy.
struct RelayUse {
    relay: String,
    tls: Option<(Tls, usize)>,
}

/// Reads, parses and validates the desired-state file at `path`.
///
/// On failure the error's Display is every problem found, one per line, as
/// `FILE, line N: message` or `FILE: message`. Warnings of a successful load
/// are returned in [`Desired::warnings`] and logged with `tracing::warn!`.
pub fn load(path: &Path) -> anyhow::Result<Desired> {
    let file = path.display().to_string();
    let (bytes, meta) = read_regular(path, MAX_DESIRED_SIZE).map_err(|e| anyhow!("{file}: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        anyhow!("{file}, line {line}: not valid UTF-8")
    })?;
    let raw: RawFile = toml::from_str(&text).map_err(|e| match e.span() {
        Some(span) => anyhow!(
            "{file}, line {}: {}",
            line_of(&text, span.start),
            e.message()
        ),
        None => anyhow!("{file}: {}", e.message()),
    })?;

    let mut cx = Ctx {
        file: file.clone(),
        text: &text,
        newlines: text.match_indices('\n').map(|(i, _)| i).collect(),
        dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        problems: Vec::new(),
    };
    let mut uses: Vec<RelayUse> = Vec::new();

    // [postfix]
    let mut config_dir = None;
    let mut map_type = None;
    if let Some(pf) = raw.postfix {
        let pf = pf.into_inner();
        if let Some(d) = pf.config_dir {
            if Path::new(d.get_ref()).is_absolute() {
                config_dir = Some(PathBuf::from(d.get_ref()));
            } else {
                cx.at(
                    &d,
                    format!("config_dir {:?}: not an absolute path", d.get_ref()),
                );
            }
        }
        if let Some(m) = pf.map_type {
            if MAP_TYPES.contains(&m.get_ref().as_str()) {
                map_type = Some(m.into_inner());
            } else {
                cx.at(
                    &m,
                    format!(
                        "map_type {:?}: expected one of {}",
                        m.get_ref(),
                        MAP_TYPES.join(", ")
                    ),
                );
            }
        }
    }

    // Lines of inline passwords, for the permission check.
    let mut inline_pw_lines: Vec<usize> = Vec::new();

    // [relayhost]
    let has_relayhost = raw.relayhost.is_some();
    let mut relayhost = None;
    if let Some(rh) = raw.relayhost {
        let line = cx.line(rh.span());
        let rh = rh.into_inner();
        let subj = "relayhost";
        if let Some(p) = &rh.password {
            inline_pw_lines.push(cx.line(p.span()));
        }
        let relay = match &rh.relay {
            Some(r) => cx.relay(subj, r),
            None => {
                cx.err(line, format!("{subj}: missing relay"));
                None
            }
        };
        let tls = rh.tls.as_ref().and_then(|t| cx.tls(subj, t));
        let creds = cx.credentials(subj, line, rh.username, rh.password, rh.password_file);
        if let Some(relay) = relay {
            uses.push(RelayUse {
                relay: relay.clone(),
                tls,
            });
            if let Ok(credentials) = creds {
                relayhost = Some(RelayHost { relay, credentials });
            }
        }
    }

    // [[sender]]
    let raw_senders = raw.sender.unwrap_or_default();
    let nothing = !has_relayhost && raw_senders.is_empty();
    let mut senders = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for s in raw_senders {
        let line = cx.line(s.span());
        let s = s.into_inner();
        if let Some(p) = &s.password {
            inline_pw_lines.push(cx.line(p.span()));
        }
        let (subj, key) = match (&s.domain, &s.address) {
            (Some(d), Some(a)) => {
                cx.err(
                    line,
                    format!(
                        "sender {:?}/{:?}: both domain and address given; use one",
                        d.get_ref(),
                        a.get_ref()
                    ),
                );
                ("sender".to_owned(), None)
            }
            (None, None) => {
                cx.err(line, "sender: needs a domain or an address".to_owned());
                ("sender".to_owned(), None)
            }
            (Some(d), None) => {
                let subj = format!("sender {:?}", d.get_ref());
                let key = match parse_domain(d.get_ref()) {
                    Ok(d) => Some(SenderKey::Domain(d)),
                    Err(e) => {
                        cx.at(d, format!("{subj}: invalid domain: {e}"));
                        None
                    }
                };
                (subj, key)
            }
            (None, Some(a)) => {
                let subj = format!("sender {:?}", a.get_ref());
                let key = match parse_address(a.get_ref()) {
                    Ok(a) => Some(SenderKey::Address(a)),
                    Err(e) => {
                        cx.at(a, format!("{subj}: invalid address: {e}"));
                        None
                    }
                };
                (subj, key)
            }
        };
        if let Some(k) = &key {
            let tk = k.table_key();
            if let Some(first) = seen.get(&tk) {
                cx.err(
                    line,
                    format!("{subj}: duplicate of the sender at line {first} (key {tk:?})"),
                );
            } else {
                seen.insert(tk, line);
            }
        }
        let relay = s.relay.as_ref().map(|r| cx.relay(&subj, r));
        let tls = s.tls.as_ref().and_then(|t| cx.tls(&subj, t));
        match (&relay, &s.tls) {
            (None, Some(t)) => {
                let why = if has_relayhost {
                    "this sender goes through the relayhost"
                } else {
                    "this sender has no relay"
                };
                cx.at(t, format!("{subj}: tls belongs to a relay; {why}"));
            }
            (Some(Some(r)), _) => uses.push(RelayUse {
                relay: r.clone(),
                tls,
            }),
            _ => {}
        }
        if relay.is_none() && !has_relayhost {
            cx.err(
                line,
                format!("{subj}: no relay, and no [relayhost] to fall back to"),
            );
        }
        let creds = cx.credentials(&subj, line, s.username, s.password, s.password_file);
        if let (Some(key), Ok(credentials)) = (key, creds) {
            senders.push(Sender {
                key,
                relay: relay.flatten(),
                credentials,
                line,
            });
        }
    }

    // Postfix looks up each map by the full address, then by @domain, separately: an
    // address entry without credentials of its own would get its domain's, and send
    // them wherever the address is relayed. Refuse that unless both go to one relay.
    // (The routing fallback is closed by a DUNNO entry in sender_relay; see plan.rs.)
    let relayhost_relay = relayhost.as_ref().map(|r: &RelayHost| r.relay.clone());
    let effective = |s: &Sender| s.relay.clone().or_else(|| relayhost_relay.clone());
    for s in &senders {
        let Some(domain_key) = s.key.domain_key() else {
            continue;
        };
        let Some(parent) = senders.iter().find(|d| d.key == domain_key) else {
            continue;
        };
        if s.credentials.is_none()
            && parent.credentials.is_some()
            && effective(s) != effective(parent)
        {
            cx.err(
                s.line,
                format!(
                    "sender {:?}: has no credentials, so Postfix would send those of {:?} (line {}) to {}: give this address its own username and password, or the same relay as its domain",
                    s.key.table_key(),
                    parent.key.table_key(),
                    parent.line,
                    effective(s).unwrap_or_default()
                ),
            );
        }
    }

    if nothing {
        cx.problems.push((
            None,
            "nothing to configure: no [relayhost] and no [[sender]]".to_owned(),
        ));
    }

    // Inline passwords must not be readable by anyone but the owner.
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0
        && let Some(&first) = inline_pw_lines.iter().min()
    {
        cx.err(
            first,
            format!(
                "inline password in a file readable by group or others (mode {mode:04o}); run: chmod 600 {file}"
            ),
        );
    }

    // One TLS policy per relay; the first explicit value (in file order)
    // wins, a different explicit value elsewhere is a conflict.
    uses.sort_by_key(|u| u.tls.map_or(0, |(_, l)| l));
    let mut explicit: BTreeMap<String, Option<(Tls, usize)>> = BTreeMap::new();
    for u in &uses {
        let entry = explicit.entry(u.relay.clone()).or_insert(None);
        match (*entry, u.tls) {
            (None, t) => *entry = t,
            (Some((a, la)), Some((b, lb))) if a != b => cx.err(
                lb,
                format!(
                    "relay {:?}: tls {:?} conflicts with tls {:?} at line {la}",
                    u.relay,
                    b.as_str(),
                    a.as_str()
                ),
            ),
            _ => {}
        }
    }

    if !cx.problems.is_empty() {
        let mut problems = std::mem::take(&mut cx.problems);
        problems.sort_by_key(|(l, _)| *l);
        let text: Vec<String> = problems
            .into_iter()
            .map(|(l, m)| match l {
                Some(l) => format!("{}, line {l}: {m}", cx.file),
                None => format!("{}: {m}", cx.file),
            })
            .collect();
        bail!("{}", text.join("\n"));
    }

    let mut tls = BTreeMap::new();
    let mut warnings = Vec::new();
    for (relay, e) in explicit {
        let t = e.map_or(Tls::Encrypt, |(t, _)| t);
        if let Some((Tls::May | Tls::None, line)) = e {
            let w = format!(
                "{file}, line {line}: relay {relay:?} has tls {:?}: credentials for {relay} may be sent without TLS",
                t.as_str()
            );
            tracing::warn!("{w}");
            warnings.push(w);
        }
        tls.insert(relay, t);
    }

    Ok(Desired {
        path: path.to_path_buf(),
        config_dir,
        map_type,
        relayhost,
        senders,
        tls,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use tempfile::TempDir;

    const CANARY: &str = "CANARY-pw-7731";

    fn write(dir: &Path, name: &str, contents: &[u8], mode: u32) -> PathBuf {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&p, contents).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    /// Writes `postrelay.toml` (mode 0600) into a fresh directory.
    fn setup(contents: &str) -> (TempDir, PathBuf) {
        setup_mode(contents, 0o600)
    }

    fn setup_mode(contents: &str, mode: u32) -> (TempDir, PathBuf) {
        let dir = TempDir::new().unwrap();
        let p = write(dir.path(), "postrelay.toml", contents.as_bytes(), mode);
        (dir, p)
    }

    fn load_err(path: &Path) -> String {
        let msg = match load(path) {
            Ok(d) => panic!("expected an error, got {d:?}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(!msg.contains("CANARY"), "password leaked: {msg}");
        assert!(!msg.contains("7731"), "password leaked: {msg}");
        msg
    }

    /// Asserts that loading `contents` fails with exactly one message, on
    /// `line`, containing `needle`.
    fn assert_one(contents: &str, line: usize, needle: &str) {
        let (_d, p) = setup(contents);
        let msg = load_err(&p);
        let prefix = format!("{}, line {line}: ", p.display());
        assert_eq!(msg.lines().count(), 1, "expected one message: {msg}");
        assert!(
            msg.starts_with(&prefix),
            "expected {prefix:?} in {msg:?} for {contents:?}"
        );
        assert!(msg.contains(needle), "expected {needle:?} in {msg:?}");
    }

    fn load_ok(contents: &str) -> Desired {
        let (_d, p) = setup(contents);
        load(&p).unwrap()
    }

    const RH: &str = "[relayhost]\nrelay = \"[smtp.example.net]:587\"\n";

    // --- address entries under a domain entry ------------------------------

    #[test]
    fn address_without_credentials_under_a_domain_with_credentials() {
        let domain = "[[sender]]\ndomain = \"corp.test\"\nrelay = \"[dom.example]:587\"\nusername = \"d\"\npassword = \"CANARY-7731\"\n";
        // Own relay, no credentials: the domain's would go to [own.example]:587.
        let own_relay = format!(
            "{domain}\n[[sender]]\naddress = \"a@corp.test\"\nrelay = \"[own.example]:587\"\n"
        );
        assert_one(
            &own_relay,
            7,
            "sender \"a@corp.test\": has no credentials, so Postfix would send those of \"@corp.test\" (line 1) to [own.example]:587",
        );
        // No relay, no credentials: through the relayhost, with the domain's credentials.
        let via_relayhost = format!("{RH}\n{domain}\n[[sender]]\naddress = \"a@corp.test\"\n");
        assert_one(&via_relayhost, 10, "to [smtp.example.net]:587");
        // Same relay as the domain: the domain's credentials are the right ones.
        let same = format!(
            "{domain}\n[[sender]]\naddress = \"a@corp.test\"\nrelay = \"[dom.example]:587\"\n"
        );
        assert_eq!(load_ok(&same).senders.len(), 2);
        // Own credentials: fine anywhere.
        let own = format!("{own_relay}username = \"a\"\npassword = \"CANARY-7731-a\"\n");
        assert_eq!(load_ok(&own).senders.len(), 2);
    }

    // --- a full valid file --------------------------------------------------

    #[test]
    fn full_valid_file() {
        let dir = TempDir::new().unwrap();
        write(
            dir.path(),
            "secrets/example.net",
            b"rh-secret\nsecond line ignored\n",
            0o600,
        );
        let abs = write(dir.path(), "abs-secret", b"org pass\r\n", 0o600);
        let text = format!(
            r#"# postrelay desired state
[postfix]
config_dir = "/etc/postfix"
map_type = "lmdb"

[relayhost]
relay = "[SMTP.Mailgun.org]:587"
username = "postmaster@example.net"
password_file = "secrets/example.net"
tls = "encrypt"

[[sender]]
domain = "Example.COM"
relay = "[smtp.mailgun.org]:587"
username = "postmaster@example.com"
password = "s3cret	x"

[[sender]]
address = "Wes@Example.org"
relay = "smtp.office365.com:587"
username = "wes@example.org"
password_file = "{}"
tls = "may"

[[sender]]
domain = "example.info"

[[sender]]
address = "x@example.info"
relay = "[192.0.2.1]"
username = "x"
password = "pw"
"#,
            abs.display()
        );
        let p = write(dir.path(), "postrelay.toml", text.as_bytes(), 0o600);
        let d = load(&p).unwrap();
        assert_eq!(d.path, p);
        assert_eq!(d.config_dir, Some(PathBuf::from("/etc/postfix")));
        assert_eq!(d.map_type.as_deref(), Some("lmdb"));
        assert_eq!(
            d.relayhost,
            Some(RelayHost {
                relay: "[smtp.mailgun.org]:587".into(),
                credentials: Some(Credentials {
                    username: "postmaster@example.net".into(),
                    password: Secret::new("rh-secret".into()),
                }),
            })
        );
        assert_eq!(
            d.senders,
            vec![
                Sender {
                    key: SenderKey::Domain("example.com".into()),
                    relay: Some("[smtp.mailgun.org]:587".into()),
                    credentials: Some(Credentials {
                        username: "postmaster@example.com".into(),
                        password: Secret::new("s3cret\tx".into()),
                    }),
                    line: 12,
                },
                Sender {
                    key: SenderKey::Address("wes@example.org".into()),
                    relay: Some("smtp.office365.com:587".into()),
                    credentials: Some(Credentials {
                        username: "wes@example.org".into(),
                        password: Secret::new("org pass".into()),
                    }),
                    line: 18,
                },
                Sender {
                    key: SenderKey::Domain("example.info".into()),
                    relay: None,
                    credentials: None,
                    line: 25,
                },
                Sender {
                    key: SenderKey::Address("x@example.info".into()),
                    relay: Some("[192.0.2.1]".into()),
                    credentials: Some(Credentials {
                        username: "x".into(),
                        password: Secret::new("pw".into()),
                    }),
                    line: 28,
                },
            ]
        );
        let tls: Vec<(&str, Tls)> = d.tls.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(
            tls,
            vec![
                ("[192.0.2.1]", Tls::Encrypt),
                ("[smtp.mailgun.org]:587", Tls::Encrypt),
                ("smtp.office365.com:587", Tls::May),
            ]
        );
        assert_eq!(d.warnings.len(), 1);
        let w = &d.warnings[0];
        assert!(w.starts_with(&format!("{}, line 23: ", p.display())), "{w}");
        assert!(w.contains("credentials for smtp.office365.com:587 may be sent without TLS"));
        assert!(!w.contains("org pass"));
        // Secrets never show in Debug.
        let dbg = format!("{d:?}");
        assert!(!dbg.contains("s3cret") && !dbg.contains("rh-secret") && !dbg.contains("org pass"));
    }

    #[test]
    fn minimal_relayhost_only() {
        let d = load_ok("[relayhost]\nrelay = \"smtp.example.net\"\n");
        assert_eq!(d.config_dir, None);
        assert_eq!(d.map_type, None);
        assert!(d.senders.is_empty());
        assert_eq!(
            d.relayhost,
            Some(RelayHost {
                relay: "smtp.example.net".into(),
                credentials: None
            })
        );
        assert_eq!(d.tls.get("smtp.example.net"), Some(&Tls::Encrypt));
        assert!(d.warnings.is_empty());
    }

    #[test]
    fn inline_tables_and_sender_lines() {
        let d = load_ok(
            "relayhost = { relay = \"r.example\" }\n\nsender = [\n  { domain = \"a.example\" },\n  { address = \"b@a.example\" },\n]\n",
        );
        let lines: Vec<usize> = d.senders.iter().map(|s| s.line).collect();
        assert_eq!(lines, vec![4, 5]);
    }

    // --- TOML-level errors -------------------------------------------------

    #[test]
    fn malformed_toml_does_not_leak_password() {
        let cases: &[(&str, usize)] = &[
            // unterminated string on the password line
            (
                "[[sender]]\ndomain = \"a.example\"\nusername = \"u\"\npassword = \"CANARY-pw-7731\n",
                4,
            ),
            // unquoted password
            (
                "[[sender]]\ndomain = \"a.example\"\nusername = \"u\"\npassword = CANARY-pw-7731\n",
                4,
            ),
            // bad escape inside the password
            (
                "[[sender]]\ndomain = \"a.example\"\nusername = \"u\"\npassword = \"CANARY\\q-pw-7731\"\n",
                4,
            ),
            // trailing garbage after the password
            (
                "[[sender]]\ndomain = \"a.example\"\nusername = \"u\"\npassword = \"CANARY-pw-7731\" x\n",
                4,
            ),
            // literal string not closed
            (
                "[[sender]]\ndomain = \"a.example\"\nusername = \"u\"\npassword = 'CANARY-pw-7731\n",
                4,
            ),
            // control character inside the string
            (
                "[[sender]]\ndomain = \"a.example\"\nusername = \"u\"\npassword = \"CANARY-pw-7731\u{1}\"\n",
                4,
            ),
            // broken table header
            ("[[sender]\ndomain = \"a.example\"\n", 1),
            // duplicate key
            (
                "[[sender]]\ndomain = \"a.example\"\nusername = \"u\"\npassword = \"CANARY-pw-7731\"\npassword = \"CANARY-pw-7731\"\n",
                5,
            ),
        ];
        for (text, line) in cases {
            let (_d, p) = setup(text);
            let msg = load_err(&p);
            assert!(
                msg.starts_with(&format!("{}, line {line}: ", p.display())),
                "{text:?}: {msg}"
            );
            assert_eq!(msg.lines().count(), 1, "{msg}");
        }
    }

    #[test]
    fn unknown_keys() {
        assert_one(
            &format!(
                "{RH}\n[[sender]]\ndomain = \"a.example\"\nusername = \"u\"\npassword = \"{CANARY}\"\npasword = \"{CANARY}\"\n"
            ),
            8,
            "unknown field `pasword`",
        );
        assert_one(
            &format!("{RH}passwd = \"{CANARY}\"\n"),
            3,
            "unknown field `passwd`",
        );
        assert_one(
            "[postfix]\nconfig = \"/etc/postfix\"\n",
            2,
            "unknown field `config`",
        );
        assert_one(&format!("{RH}[smtp]\nx = 1\n"), 3, "unknown field `smtp`");
        assert_one(
            &format!("{RH}\n[[senders]]\ndomain = \"a\"\n"),
            4,
            "unknown field `senders`",
        );
    }

    #[test]
    fn wrong_types() {
        // A non-string password must not be echoed.
        assert_one(
            &format!("{RH}username = \"u\"\npassword = 7731\n"),
            4,
            "invalid type for password, expected a string",
        );
        for v in [
            "true",
            "77.31",
            "[\"CANARY-pw-7731\"]",
            "{ a = \"CANARY-pw-7731\" }",
            "1977-07-31",
        ] {
            assert_one(
                &format!("{RH}username = \"u\"\npassword = {v}\n"),
                4,
                "invalid type for password, expected a string",
            );
        }
        assert_one("[relayhost]\nrelay = 25\n", 2, "invalid type");
        assert_one(&format!("sender = 5\n{RH}"), 1, "invalid type");
        assert_one(
            &format!("{RH}[[sender]]\ndomain = [\"a\"]\n"),
            4,
            "invalid type",
        );
        assert_one(
            "relayhost = \"x\"\n",
            1,
            "invalid type: string \"x\", expected a [relayhost] table",
        );
        assert_one("sender = [5]\n", 1, "expected a [[sender]] table");
        assert_one(
            "postfix = 1\n[relayhost]\nrelay = \"r\"\n",
            1,
            "expected a [postfix] table",
        );
    }

    #[test]
    fn file_is_not_toml_at_all() {
        let (_d, p) = setup("this is not toml\n");
        let msg = load_err(&p);
        assert!(
            msg.starts_with(&format!("{}, line 1: ", p.display())),
            "{msg}"
        );
    }

    // --- the desired-state file itself --------------------------------------

    #[test]
    fn desired_file_missing() {
        let dir = TempDir::new().unwrap();
        let p = dir.path().join("nope.toml");
        let msg = load_err(&p);
        assert_eq!(
            msg,
            format!("{}: cannot open: No such file or directory", p.display())
        );
    }

    #[test]
    fn desired_file_directory() {
        let dir = TempDir::new().unwrap();
        let msg = load_err(dir.path());
        assert!(
            msg.starts_with(&format!("{}: ", dir.path().display())),
            "{msg}"
        );
        assert!(msg.contains("not a regular file"), "{msg}");
    }

    #[test]
    fn desired_file_fifo_does_not_hang() {
        let dir = TempDir::new().unwrap();
        let p = dir.path().join("fifo.toml");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let msg = load_err(&p);
        assert!(msg.contains("not a regular file but a FIFO"), "{msg}");
    }

    #[test]
    fn desired_file_too_big() {
        let (_d, p) = setup("");
        let f = fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(MAX_DESIRED_SIZE + 1).unwrap();
        let msg = load_err(&p);
        assert_eq!(msg, format!("{}: larger than 64 MiB", p.display()));
    }

    #[test]
    fn desired_file_not_utf8() {
        let dir = TempDir::new().unwrap();
        let p = write(
            dir.path(),
            "postrelay.toml",
            b"[relayhost]\nrelay = \"a\xff\"\n",
            0o600,
        );
        let msg = load_err(&p);
        assert_eq!(msg, format!("{}, line 2: not valid UTF-8", p.display()));
    }

    #[test]
    fn nothing_configured() {
        for text in ["", "[postfix]\nmap_type = \"hash\"\n", "sender = []\n"] {
            let (_d, p) = setup(text);
            assert_eq!(
                load_err(&p),
                format!(
                    "{}: nothing to configure: no [relayhost] and no [[sender]]",
                    p.display()
                )
            );
        }
    }

    // --- [postfix] ----------------------------------------------------------

    #[test]
    fn postfix_table() {
        let d = load_ok(&format!(
            "[postfix]\nconfig_dir = \"/etc/postfix-out\"\nmap_type = \"texthash\"\n{RH}"
        ));
        assert_eq!(d.config_dir, Some(PathBuf::from("/etc/postfix-out")));
        assert_eq!(d.map_type.as_deref(), Some("texthash"));
        for m in MAP_TYPES {
            let d = load_ok(&format!("[postfix]\nmap_type = \"{m}\"\n{RH}"));
            assert_eq!(d.map_type.as_deref(), Some(*m));
        }
        assert_one(
            &format!("{RH}[postfix]\nconfig_dir = \"etc/postfix\"\n"),
            4,
            "config_dir \"etc/postfix\": not an absolute path",
        );
        assert_one(
            &format!("{RH}[postfix]\nconfig_dir = \"\"\n"),
            4,
            "not an absolute path",
        );
        assert_one(
            &format!("{RH}[postfix]\nmap_type = \"dbm\"\n"),
            4,
            "map_type \"dbm\": expected one of hash, btree, lmdb, cdb, texthash",
        );
        assert_one(
            &format!("{RH}[postfix]\nmap_type = \"HASH\"\n"),
            4,
            "map_type \"HASH\"",
        );
    }

    // --- senders: domain / address -----------------------------------------

    #[test]
    fn sender_domain_and_address_exclusive() {
        assert_one(
            &format!("{RH}\n[[sender]]\ndomain = \"a.example\"\naddress = \"x@a.example\"\n"),
            4,
            "both domain and address given",
        );
        assert_one(
            &format!("{RH}\n[[sender]]\nrelay = \"r.example\"\n"),
            4,
            "sender: needs a domain or an address",
        );
    }

    #[test]
    fn parse_domain_cases() {
        let good = [
            ("example.com", "example.com"),
            ("Example.COM", "example.com"),
            ("a", "a"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("a-b.c0", "a-b.c0"),
        ];
        for (i, o) in good {
            assert_eq!(parse_domain(i).as_deref(), Ok(o), "{i}");
        }
        let long_label = "a".repeat(64);
        let ok_label = "a".repeat(63);
        assert_eq!(parse_domain(&ok_label), Ok(ok_label.clone()));
        let long_total = [ok_label.as_str(); 4].join("."); // 255
        let ok_total = format!("{}.{}.{}.{}", ok_label, ok_label, ok_label, "a".repeat(61)); // 253
        assert!(parse_domain(&ok_total).is_ok());
        let bad: Vec<(&str, &str)> = vec![
            ("", "empty"),
            ("exa mple.com", "label contains ' '"),
            ("exa_mple.com", "label contains '_'"),
            ("bücher.example", "punycode"),
            ("@example.com", "leading '@'; write the domain without it"),
            ("example.com.", "trailing dot"),
            ("example..com", "empty label"),
            (".example.com", "empty label"),
            ("-a.example", "starts with '-'"),
            ("a-.example", "ends with '-'"),
            (&long_label, "longer than 63"),
            (&long_total, "longer than 253"),
            ("a@b.example", "label contains '@'"),
            (".", "empty label"),
        ];
        for (i, e) in bad {
            let err = parse_domain(i).unwrap_err();
            assert!(err.contains(e), "{i:?}: {err:?} should contain {e:?}");
        }
    }

    #[test]
    fn sender_invalid_domain_in_file() {
        assert_one(
            &format!("{RH}\n[[sender]]\n# comment\ndomain = \"exa mple.com\"\n"),
            6,
            "sender \"exa mple.com\": invalid domain: label contains ' '",
        );
        assert_one(
            &format!("{RH}\n[[sender]]\ndomain = \"@example.com\"\n"),
            5,
            "write the domain without it",
        );
        assert_one(
            &format!("{RH}\n[[sender]]\ndomain = \"bücher.example\"\n"),
            5,
            "punycode",
        );
    }

    #[test]
    fn parse_address_cases() {
        assert_eq!(
            parse_address("Wes@Example.COM").as_deref(),
            Ok("wes@example.com")
        );
        assert_eq!(
            parse_address("a.b+c!#$%&'*/=?^_`{|}~-@x.example").as_deref(),
            Ok("a.b+c!#$%&'*/=?^_`{|}~-@x.example")
        );
        let long_local = format!("{}@x.example", "a".repeat(65));
        let ok_local = format!("{}@x.example", "a".repeat(64));
        assert!(parse_address(&ok_local).is_ok());
        let bad: Vec<(&str, &str)> = vec![
            ("example.com", "no '@'"),
            ("a@b@example.com", "more than one '@'"),
            ("@example.com", "empty local part"),
            ("a b@example.com", "local part contains ' '"),
            ("a\"b@example.com", "local part contains '\"'"),
            ("a(b)@example.com", "local part contains '('"),
            ("wés@example.com", "local part contains 'é'"),
            ("#x@example.com", "starts with '#'"),
            (&long_local, "longer than 64"),
            ("a@exa_mple.com", "domain part: label contains '_'"),
            ("a@", "domain part: empty"),
            ("a@example.com.", "domain part: trailing dot"),
        ];
        for (i, e) in bad {
            let err = parse_address(i).unwrap_err();
            assert!(err.contains(e), "{i:?}: {err:?} should contain {e:?}");
        }
    }

    #[test]
    fn sender_invalid_address_in_file() {
        assert_one(
            &format!("{RH}\n[[sender]]\naddress = \"#root@example.com\"\n"),
            5,
            "sender \"#root@example.com\": invalid address: local part starts with '#'",
        );
        assert_one(
            &format!("{RH}\n[[sender]]\naddress = \"a@b@example.com\"\n"),
            5,
            "invalid address: more than one '@'",
        );
    }

    #[test]
    fn duplicate_senders() {
        let text = format!(
            "{RH}\n[[sender]]\ndomain = \"example.com\"\n\n[[sender]]\ndomain = \"EXAMPLE.com\"\n\n[[sender]]\naddress = \"a@example.com\"\n\n[[sender]]\naddress = \"A@Example.COM\"\n"
        );
        let (_d, p) = setup(&text);
        let msg = load_err(&p);
        let f = p.display();
        assert_eq!(
            msg,
            format!(
                "{f}, line 7: sender \"EXAMPLE.com\": duplicate of the sender at line 4 (key \"@example.com\")\n\
                 {f}, line 13: sender \"A@Example.COM\": duplicate of the sender at line 10 (key \"a@example.com\")"
            )
        );
        // A domain and an address in it are different keys.
        let d = load_ok(&format!(
            "{RH}[[sender]]\ndomain = \"example.com\"\n[[sender]]\naddress = \"example.com@example.com\"\n"
        ));
        assert_eq!(d.senders.len(), 2);
    }

    // --- relays -------------------------------------------------------------

    #[test]
    fn parse_relay_cases() {
        let good = [
            ("smtp.example.com", "smtp.example.com"),
            ("SMTP.Example.com:587", "smtp.example.com:587"),
            ("[smtp.mailgun.org]:587", "[smtp.mailgun.org]:587"),
            ("[SMTP.mailgun.org]", "[smtp.mailgun.org]"),
            ("[192.0.2.1]:25", "[192.0.2.1]:25"),
            ("[192.0.2.1]", "[192.0.2.1]"),
            ("[ipv6:2001:DB8::1]:587", "[ipv6:2001:db8::1]:587"),
            ("[IPv6:::1]", "[ipv6:::1]"),
            ("relay:1", "relay:1"),
            ("relay:65535", "relay:65535"),
            ("relay:0587", "relay:0587"),
        ];
        for (i, o) in good {
            assert_eq!(parse_relay(i).as_deref(), Ok(o), "{i}");
        }
        let bad = [
            ("", "empty relay"),
            ("smtp.example.com:0", "port outside 1-65535"),
            ("smtp.example.com:65536", "port outside 1-65535"),
            (
                "smtp.example.com:99999999999999999999",
                "port outside 1-65535",
            ),
            ("[smtp.example.com]:000", "port outside 1-65535"),
            ("smtp.example.com:", "empty port"),
            ("smtp.example.com:+25", "not a decimal number"),
            ("smtp.example.com:smtp", "not a decimal number"),
            ("smtp.example.com :25", "whitespace"),
            (" smtp.example.com", "whitespace"),
            ("smtp\t.example.com", "whitespace"),
            ("[smtp.example.com", "'[' without ']'"),
            ("smtp.example.com]", "']' without '['"),
            ("[smtp.example.com]587", "after ']'"),
            ("[smtp.example.com]:587:1", "not a decimal number"),
            ("[]:25", "empty host"),
            (":25", "empty host"),
            ("192.0.2.1:25", "must be in brackets: [192.0.2.1]"),
            ("[192.0.2.300]", "invalid IPv4 address"),
            ("[ipv6:2001:db8::g]", "invalid IPv6 address"),
            ("[ipv6:192.0.2.1]", "invalid IPv6 address"),
            ("[2001:db8::1]", "[ipv6:ADDRESS]"),
            ("2001:db8::1", "[ipv6:ADDRESS]"),
            ("smtp_x.example.com", "invalid host: label contains '_'"),
            ("smtp.example.com.", "invalid host: trailing dot"),
            ("-smtp.example.com", "starts with '-'"),
            ("smtp.exämple.com", "punycode"),
            ("smtp.example.com/x", "label contains '/'"),
            ("user@smtp.example.com", "label contains '@'"),
        ];
        for (i, e) in bad {
            let err = parse_relay(i).unwrap_err();
            assert!(err.contains(e), "{i:?}: {err:?} should contain {e:?}");
        }
    }

    #[test]
    fn relay_errors_in_file() {
        assert_one(
            "[relayhost]\n\nrelay = \"smtp.example.com:0\"\n",
            3,
            "relayhost: relay \"smtp.example.com:0\": port outside 1-65535",
        );
        assert_one(
            &format!("{RH}[[sender]]\ndomain = \"a.example\"\nrelay = \"[x.example\"\n"),
            5,
            "sender \"a.example\": relay \"[x.example\": '[' without ']'",
        );
        assert_one(
            "[relayhost]\nusername = \"u\"\npassword_file = \"/nonexistent\"\n[relayhost.x]\n",
            4,
            "unknown field",
        );
        // relay is required in [relayhost]
        assert_one(
            "\n[relayhost]\ntls = \"may\"\n",
            2,
            "relayhost: missing relay",
        );
    }

    #[test]
    fn sender_without_any_relay() {
        assert_one(
            "[[sender]]\ndomain = \"a.example\"\n",
            1,
            "sender \"a.example\": no relay, and no [relayhost] to fall back to",
        );
        // Fine with a relayhost, or with its own relay.
        let d = load_ok("[[sender]]\ndomain = \"a.example\"\nrelay = \"r.example:25\"\n");
        assert_eq!(d.relayhost, None);
        assert_eq!(d.senders[0].relay.as_deref(), Some("r.example:25"));
        assert_eq!(d.tls.get("r.example:25"), Some(&Tls::Encrypt));
    }

    // --- credentials ---------------------------------------------------------

    #[test]
    fn check_username_cases() {
        for u in ["u", "postmaster@example.com", "ünïcode", "a;b#c"] {
            assert_eq!(check_username(u), Ok(()), "{u}");
        }
        for (u, e) in [
            ("", "empty"),
            ("a:b", "contains ':'"),
            ("a b", "whitespace"),
            ("a\tb", "whitespace"),
            ("a\u{7f}b", "control"),
            ("a\u{1}b", "control"),
        ] {
            let err = check_username(u).unwrap_err();
            assert!(err.contains(e), "{u:?}: {err}");
        }
    }

    #[test]
    fn username_errors_in_file() {
        assert_one(
            &format!(
                "[relayhost]\nrelay = \"r.example\"\nusername = \"a:b\"\npassword = \"{CANARY}\"\n"
            ),
            3,
            "relayhost: username \"a:b\": contains ':'",
        );
        assert_one(
            &format!(
                "{RH}[[sender]]\ndomain = \"a.example\"\nusername = \"\"\npassword = \"{CANARY}\"\n"
            ),
            5,
            "sender \"a.example\": username \"\": empty",
        );
    }

    #[test]
    fn check_password_cases() {
        for pw in ["x", "s3cret", "a b", "a\tb", "pässwörd", "a:b#c"] {
            assert_eq!(check_password(pw), Ok(()), "{pw:?}");
        }
        for (pw, e) in [
            ("", "empty password"),
            (" CANARY-pw-7731", "leading or trailing whitespace"),
            ("CANARY-pw-7731 ", "leading or trailing whitespace"),
            ("\tCANARY-pw-7731", "leading or trailing whitespace"),
            ("CANARY\n-pw-7731", "line break"),
            ("CANARY\r-pw-7731", "line break"),
            ("CANARY\0-pw-7731", "NUL"),
            ("CANARY\u{1b}-pw-7731", "control character"),
            ("CANARY\u{85}-pw-7731", "control character"),
        ] {
            let err = check_password(pw).unwrap_err();
            assert!(err.contains(e), "{pw:?}: {err}");
            assert!(!err.contains("CANARY") && !err.contains("7731"));
        }
    }

    #[test]
    fn inline_password_errors_in_file() {
        for (v, e) in [
            ("\"\"", "empty password"),
            ("\" CANARY-pw-7731\"", "leading or trailing whitespace"),
            ("\"CANARY-pw-7731 \"", "leading or trailing whitespace"),
            ("\"CANARY-pw-7731\\n\"", "line break"),
            ("\"CANARY-pw-7731\\r\"", "line break"),
            ("\"CANARY-pw-7731\\u0000\"", "NUL"),
            ("\"CANARY-pw-7731\\u0007\"", "control character"),
            ("'''\nCANARY-pw-7731\nx'''", "line break"),
        ] {
            assert_one(
                &format!(
                    "{RH}[[sender]]\ndomain = \"a.example\"\nusername = \"u\"\npassword = {v}\n"
                ),
                6,
                e,
            );
        }
    }

    #[test]
    fn credentials_pairing() {
        assert_one(
            &format!("{RH}[[sender]]\ndomain = \"a.example\"\nusername = \"u\"\n"),
            3,
            "sender \"a.example\": username without password or password_file",
        );
        assert_one(
            &format!("{RH}[[sender]]\ndomain = \"a.example\"\npassword = \"{CANARY}\"\n"),
            5,
            "sender \"a.example\": password without username",
        );
        assert_one(
            &format!("{RH}[[sender]]\ndomain = \"a.example\"\npassword_file = \"pw\"\n"),
            5,
            "sender \"a.example\": password_file without username",
        );
        assert_one(
            &format!(
                "{RH}[[sender]]\ndomain = \"a.example\"\nusername = \"u\"\npassword = \"{CANARY}\"\npassword_file = \"/nonexistent\"\n"
            ),
            7,
            "sender \"a.example\": both password and password_file given; use one",
        );
        assert_one(
            "[relayhost]\nrelay = \"r.example\"\nusername = \"u\"\n",
            1,
            "relayhost: username without password or password_file",
        );
        // password without username on the relayhost
        assert_one(
            &format!("[relayhost]\nrelay = \"r.example\"\npassword = \"{CANARY}\"\n"),
            3,
            "relayhost: password without username",
        );
    }

    // --- password_file --------------------------------------------------------

    fn with_pw_file(contents: &[u8]) -> Result<Desired, String> {
        let dir = TempDir::new().unwrap();
        write(dir.path(), "pw", contents, 0o600);
        let p = write(
            dir.path(),
            "postrelay.toml",
            format!(
                "{RH}[[sender]]\ndomain = \"a.example\"\nusername = \"u\"\npassword_file = \"pw\"\n"
            )
            .as_bytes(),
            0o644,
        );
        load(&p).map_err(|e| {
            let m = e.to_string();
            let prefix = format!(
                "{}, line 6: sender \"a.example\": password_file {:?}: ",
                p.display(),
                dir.path().join("pw").display()
            );
            assert!(m.starts_with(&prefix), "{m:?} should start with {prefix:?}");
            assert!(!m.contains("CANARY") && !m.contains("7731"), "{m}");
            m[prefix.len()..].to_owned()
        })
    }

    fn pw_of(d: &Desired) -> &str {
        d.senders[0].credentials.as_ref().unwrap().password.expose()
    }

    #[test]
    fn password_file_contents() {
        for (c, pw) in [
            (&b"secret"[..], "secret"),
            (b"secret\n", "secret"),
            (b"secret\r\n", "secret"),
            (b"secret\nother\n", "secret"),
            (b"sec ret\n\n", "sec ret"),
            (b"sec\tret\r\nx", "sec\tret"),
        ] {
            let d = with_pw_file(c).unwrap();
            assert_eq!(pw_of(&d), pw);
        }
        for (c, e) in [
            (&b""[..], "empty password"),
            (b"\n", "empty password"),
            (b"\r\nCANARY-pw-7731", "empty password"),
            (b"CANARY-pw-7731\r", "password contains a line break"),
            (
                b"CANARY-pw-7731 \n",
                "password has leading or trailing whitespace (postfix would strip it)",
            ),
            (
                b" CANARY-pw-7731\n",
                "password has leading or trailing whitespace (postfix would strip it)",
            ),
            (b"CANARY-pw-7731\n\n", "NEVER"),
            (b"CANARY\xff-pw-7731\n", "password is not valid UTF-8"),
            (b"CANARY\0-pw-7731\n", "password contains a NUL character"),
        ] {
            match with_pw_file(c) {
                Ok(_) if e == "NEVER" => {}
                Ok(_) => panic!("{c:?} should fail"),
                Err(m) => assert_eq!(m, e),
            }
        }
    }

    #[test]
    fn password_file_absolute_and_relative() {
        let dir = TempDir::new().unwrap();
        let sub = dir.path().join("conf");
        write(&sub, "rel-pw", b"relative\n", 0o600);
        let abs = write(dir.path(), "abs-pw", b"absolute\n", 0o600);
        let p = write(
            &sub,
            "postrelay.toml",
            format!(
                "[relayhost]\nrelay = \"r.example\"\nusername = \"u\"\npassword_file = \"rel-pw\"\n[[sender]]\ndomain = \"a.example\"\nusername = \"v\"\npassword_file = \"{}\"\n",
                abs.display()
            )
            .as_bytes(),
            0o644,
        );
        let d = load(&p).unwrap();
        let rh = d.relayhost.unwrap().credentials.unwrap();
        assert_eq!(rh.password.expose(), "relative");
        assert_eq!(
            pw_of(&Desired {
                relayhost: None,
                ..d
            }),
            "absolute"
        );
    }

    #[test]
    fn password_file_problems() {
        let dir = TempDir::new().unwrap();
        let missing = dir.path().join("missing");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let big = write(dir.path(), "big", b"", 0o600);
        fs::OpenOptions::new()
            .write(true)
            .open(&big)
            .unwrap()
            .set_len(MAX_FILE_SIZE + 1)
            .unwrap();
        let unreadable = write(dir.path(), "unreadable", b"x\n", 0o000);
        let root = nix::unistd::geteuid().is_root();
        let mut cases = vec![
            (missing.clone(), "cannot open: No such file or directory"),
            (
                dir.path().to_path_buf(),
                "not a regular file but a directory",
            ),
            (fifo.clone(), "not a regular file but a FIFO"),
            (big.clone(), "larger than 10 MiB"),
        ];
        if !root {
            cases.push((unreadable.clone(), "cannot open: Permission denied"));
        }
        let mut text = String::from(RH);
        for (i, (path, _)) in cases.iter().enumerate() {
            text.push_str(&format!(
                "\n[[sender]]\ndomain = \"s{i}.example\"\nusername = \"u\"\npassword_file = \"{}\"\n",
                path.display()
            ));
        }
        let p = write(dir.path(), "postrelay.toml", text.as_bytes(), 0o600);
        let msg = load_err(&p);
        let lines: Vec<&str> = msg.lines().collect();
        assert_eq!(lines.len(), cases.len(), "{msg}");
        for (i, ((path, e), line)) in cases.iter().zip(lines).enumerate() {
            assert_eq!(
                line,
                format!(
                    "{}, line {}: sender \"s{i}.example\": password_file {:?}: {e}",
                    p.display(),
                    7 + 5 * i,
                    path.display()
                )
            );
        }
        assert_one(
            &format!(
                "{RH}[[sender]]\ndomain = \"a.example\"\nusername = \"u\"\npassword_file = \"\"\n"
            ),
            6,
            "sender \"a.example\": empty password_file",
        );
    }

    // --- permissions -------------------------------------------------------------

    #[test]
    fn inline_password_needs_private_file() {
        let text = format!(
            "{RH}\n[[sender]]\ndomain = \"a.example\"\nusername = \"u\"\npassword = \"{CANARY}\"\n"
        );
        for mode in [0o644, 0o640, 0o604, 0o660, 0o601] {
            let (_d, p) = setup_mode(&text, mode);
            let msg = load_err(&p);
            assert_eq!(
                msg,
                format!(
                    "{f}, line 7: inline password in a file readable by group or others (mode {mode:04o}); run: chmod 600 {f}",
                    f = p.display()
                )
            );
        }
        for mode in [0o600, 0o400] {
            let (_d, p) = setup_mode(&text, mode);
            assert!(load(&p).is_ok());
        }
        // Without inline passwords, a readable file is fine.
        let (_d, p) = setup_mode(&format!("{RH}[[sender]]\ndomain = \"a.example\"\n"), 0o644);
        assert!(load(&p).is_ok());
    }

    // --- tls -----------------------------------------------------------------------

    #[test]
    fn tls_values() {
        for (v, t) in [
            ("encrypt", Tls::Encrypt),
            ("may", Tls::May),
            ("none", Tls::None),
        ] {
            let d = load_ok(&format!(
                "[relayhost]\nrelay = \"r.example\"\ntls = \"{v}\"\n"
            ));
            assert_eq!(d.tls.get("r.example"), Some(&t));
            assert_eq!(d.warnings.len(), usize::from(t != Tls::Encrypt));
        }
        for v in ["\"Encrypt\"", "\"secure\"", "\"\""] {
            assert_one(
                &format!("[relayhost]\nrelay = \"r.example\"\ntls = {v}\n"),
                3,
                "relayhost: tls",
            );
        }
        assert_one(
            "[relayhost]\nrelay = \"r.example\"\ntls = \"verify\"\n",
            3,
            "relayhost: tls \"verify\": expected \"encrypt\", \"may\" or \"none\"",
        );
        assert_one(
            "[relayhost]\nrelay = \"r.example\"\ntls = true\n",
            3,
            "invalid type",
        );
    }

    #[test]
    fn tls_on_sender_without_relay() {
        assert_one(
            &format!("{RH}[[sender]]\ndomain = \"a.example\"\ntls = \"may\"\n"),
            5,
            "sender \"a.example\": tls belongs to a relay; this sender goes through the relayhost",
        );
        let (_d, p) = setup("[[sender]]\ndomain = \"a.example\"\ntls = \"may\"\n");
        let msg = load_err(&p);
        assert_eq!(msg.lines().count(), 2, "{msg}");
        assert!(msg.contains(
            "line 3: sender \"a.example\": tls belongs to a relay; this sender has no relay"
        ));
        assert!(msg.contains("line 1: sender \"a.example\": no relay, and no [relayhost]"));
    }

    #[test]
    fn tls_conflicts() {
        let text = "[relayhost]\nrelay = \"[smtp.mailgun.org]:587\"\ntls = \"may\"\n\n\
                    [[sender]]\ndomain = \"a.example\"\nrelay = \"[SMTP.mailgun.org]:587\"\ntls = \"encrypt\"\n\n\
                    [[sender]]\ndomain = \"b.example\"\nrelay = \"[smtp.mailgun.org]:587\"\ntls = \"may\"\n\n\
                    [[sender]]\ndomain = \"c.example\"\nrelay = \"[smtp.mailgun.org]:587\"\ntls = \"none\"\n";
        let (_d, p) = setup(text);
        let f = p.display();
        assert_eq!(
            load_err(&p),
            format!(
                "{f}, line 8: relay \"[smtp.mailgun.org]:587\": tls \"encrypt\" conflicts with tls \"may\" at line 3\n\
                 {f}, line 18: relay \"[smtp.mailgun.org]:587\": tls \"none\" conflicts with tls \"may\" at line 3"
            )
        );
        // Different relays may have different policies.
        let d = load_ok(
            "[relayhost]\nrelay = \"a.example\"\ntls = \"may\"\n[[sender]]\ndomain = \"x.example\"\nrelay = \"a.example:25\"\ntls = \"none\"\n",
        );
        assert_eq!(d.tls.get("a.example"), Some(&Tls::May));
        assert_eq!(d.tls.get("a.example:25"), Some(&Tls::None));
        assert_eq!(d.warnings.len(), 2);
    }

    #[test]
    fn tls_propagates_per_relay() {
        // An explicit value anywhere applies to every entry using that relay.
        let text = "[[sender]]\ndomain = \"a.example\"\nrelay = \"[r.example]:587\"\n\n\
                    [[sender]]\ndomain = \"b.example\"\nrelay = \"[R.example]:587\"\ntls = \"none\"\n\n\
                    [[sender]]\ndomain = \"c.example\"\nrelay = \"[r.example]:587\"\ntls = \"none\"\n\n\
                    [[sender]]\ndomain = \"d.example\"\nrelay = \"other.example\"\n\n\
                    [relayhost]\nrelay = \"[r.example]:587\"\n";
        let d = load_ok(text);
        let tls: Vec<(&str, Tls)> = d.tls.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(
            tls,
            vec![
                ("[r.example]:587", Tls::None),
                ("other.example", Tls::Encrypt)
            ]
        );
        assert_eq!(d.warnings.len(), 1);
        assert_eq!(
            d.warnings[0],
            format!(
                "{}, line 8: relay \"[r.example]:587\" has tls \"none\": credentials for [r.example]:587 may be sent without TLS",
                d.path.display()
            )
        );
        // The relayhost's relay without any explicit tls defaults to encrypt.
        let d = load_ok(RH);
        assert_eq!(d.tls.get("[smtp.example.net]:587"), Some(&Tls::Encrypt));
    }

    // --- reporting ---------------------------------------------------------------

    #[test]
    fn all_problems_reported_in_line_order() {
        let text = format!(
            "[[sender]]\ndomain = \"bad_one.example\"\nusername = \"u\"\npassword = \"{CANARY} \"\n\n\
             [[sender]]\naddress = \"no-at.example\"\nusername = \"u\"\npassword = \"{CANARY}\"\n\n\
             [[sender]]\ndomain = \"ok.example\"\nrelay = \"r.example:0\"\n\n\
             [relayhost]\nrelay = \"r.example\"\n\n[postfix]\nmap_type = \"nope\"\n"
        );
        let (_d, p) = setup_mode(&text, 0o644);
        let msg = load_err(&p);
        let f = p.display();
        assert_eq!(
            msg,
            [
                format!("{f}, line 2: sender \"bad_one.example\": invalid domain: label contains '_'"),
                format!("{f}, line 4: sender \"bad_one.example\": password has leading or trailing whitespace (postfix would strip it)"),
                format!("{f}, line 4: inline password in a file readable by group or others (mode 0644); run: chmod 600 {f}"),
                format!("{f}, line 7: sender \"no-at.example\": invalid address: no '@'"),
                format!("{f}, line 13: sender \"ok.example\": relay \"r.example:0\": port outside 1-65535"),
                format!("{f}, line 19: map_type \"nope\": expected one of hash, btree, lmdb, cdb, texthash"),
            ]
            .join("\n")
        );
    }

    #[test]
    fn line_of_offsets() {
        assert_eq!(line_of("", 0), 1);
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 4), 3);
        assert_eq!(line_of("a\nb\nc", 100), 3);
    }
}
