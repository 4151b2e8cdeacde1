//! Postfix's lookup rule for sender-dependent relaying, written once, and the table
//! entries that implement it. Validation, plan and verify all ask this module.
//!
//! The rule (postconf(5) `sender_dependent_relayhost_maps`, `smtp_sasl_password_maps`;
//! SASL_README): for a sender, Postfix looks up each table by the full address, then by
//! `@domain`, then by the next hop. So an address entry inherits its domain entry's
//! relay unless `sender_relay` stops the search with `DUNNO`, and inherits its domain
//! entry's credentials unless it has its own; an entry without credentials of either
//! kind authenticates with those keyed by its next hop (the relayhost's, when it goes
//! where the relayhost goes).
//!
//! Two extensions of the rule live here too. A wildcard entry (`*.shop.example`) covers
//! every subdomain; the most specific entry wins (address, exact domain, the wildcard
//! with the longest domain, relayhost), and the regexp tables that implement it carry
//! the exact domains a wildcard covers ahead of the wildcards, since Postfix gives a
//! regexp table the full address before it tries `@domain` anywhere. A relay on port
//! 465 is reached through postrelay's own master.cf service, named per sender in
//! `sender_transport` ([`Routing::transport`]).
//!
//! [`Relay`] is a relay as written in the desired state, parsed once: its Postfix
//! spelling (`[host]:port`, host lowercased) for the tables and main.cf, and the host and
//! port to connect to for `verify`.

use rustc_hash::FxHashMap;
use std::cmp::Ordering;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, OnceLock};

use crate::desired::{Credentials, Desired, RelayHost, Sender, SenderKey, fields};
use crate::managed::{MapKind, SMTPS_SERVICE};
use crate::secret::Secret;
use crate::syntax::regexp::{self, Pattern, Rule};
use crate::syntax::table;

/// A relay: `host`, `[host]`, `host:port` or `[host]:port`. Cheap to clone: the senders
/// of one relay share one copy (a desired state has few relays and many senders).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Relay(Arc<Parsed>);

#[derive(PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Parsed {
    /// As Postfix is given it: as written, host lowercased.
    spelling: String,
    /// The host to connect to: without brackets or `ipv6:`.
    host: String,
    /// The port to connect to: 25 when none is written, as Postfix's smtp service.
    port: u16,
}

impl Relay {
    /// Checks a relay and normalises it (host lowercased, otherwise as written).
    ///
    /// The host is a DNS name (rules of [`fields::parse_domain`]); inside brackets it may
    /// also be an IPv4 address or `ipv6:` followed by an IPv6 address. The port is
    /// decimal, 1-65535. The error is a terse reason.
    pub fn parse(s: &str) -> Result<Relay, String> {
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
        let (host, port) = match s.strip_prefix('[') {
            Some(rest) => bracketed(rest)?,
            None => bare(s)?,
        };
        let port = match port {
            None => 25,
            Some(p) => parse_port(p)?,
        };
        Ok(Relay(Arc::new(Parsed {
            spelling: s.to_ascii_lowercase(),
            host: host.to_ascii_lowercase(),
            port,
        })))
    }

    /// The Postfix spelling, as written to main.cf and the tables.
    pub fn as_str(&self) -> &str {
        &self.0.spelling
    }

    /// The host and port to connect to.
    pub fn endpoint(&self) -> (&str, u16) {
        (&self.0.host, self.0.port)
    }

    /// Whether the host is an IP address (`[192.0.2.1]`, `[ipv6:…]`), not a name.
    pub fn is_ip_literal(&self) -> bool {
        self.0.host.parse::<std::net::IpAddr>().is_ok()
    }

    /// Whether the relay takes TLS from the first byte (port 465, "submissions", RFC
    /// 8314) rather than STARTTLS: Postfix's SMTP client then needs
    /// `smtp_tls_wrappermode`, and verify shakes hands before the greeting.
    pub fn implicit_tls(&self) -> bool {
        self.0.port == 465
    }

    /// Whether Postfix connects to the host as written (`[host]`), not to its MX hosts.
    pub fn is_bracketed(&self) -> bool {
        self.0.spelling.starts_with('[')
    }
}

/// `[host]` or `[host]:port` after the `[`: the host and the port text.
fn bracketed(rest: &str) -> Result<(&str, Option<&str>), String> {
    let Some((host, after)) = rest.split_once(']') else {
        return Err("'[' without ']'".into());
    };
    if host.is_empty() {
        return Err("empty host".into());
    }
    let host = if let Some(v6) = host
        .get(..5)
        .filter(|p| p.eq_ignore_ascii_case("ipv6:"))
        .map(|_| &host[5..])
    {
        v6.parse::<Ipv6Addr>()
            .map_err(|_| format!("invalid IPv6 address {v6:?}"))?;
        v6
    } else {
        if host.parse::<Ipv4Addr>().is_err() {
            if host.contains(':') {
                return Err("IPv6 addresses are written [ipv6:ADDRESS]".into());
            }
            if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                return Err(format!("invalid IPv4 address {host:?}"));
            }
            fields::parse_domain(host).map_err(|e| format!("invalid host: {e}"))?;
        }
        host
    };
    let port = if after.is_empty() {
        None
    } else if let Some(p) = after.strip_prefix(':') {
        Some(p)
    } else {
        return Err(format!("unexpected {after:?} after ']'"));
    };
    Ok((host, port))
}

/// `host` or `host:port`: the host and the port text.
fn bare(s: &str) -> Result<(&str, Option<&str>), String> {
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
    fields::parse_domain(host).map_err(|e| format!("invalid host: {e}"))?;
    Ok((host, port))
}

fn parse_port(p: &str) -> Result<u16, String> {
    if p.is_empty() {
        return Err("empty port".into());
    }
    if !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port {p:?} is not a decimal number"));
    }
    let n = p.trim_start_matches('0');
    match n.parse::<u16>() {
        Ok(port) if !n.is_empty() && n.len() <= 5 => Ok(port),
        _ => Err("port outside 1-65535".into()),
    }
}

impl fmt::Display for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.spelling)
    }
}

impl fmt::Debug for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Relay({:?})", self.0.spelling)
    }
}

/// Whose credentials Postfix authenticates a sender with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialSource<'a> {
    /// The entry's own.
    Own,
    /// Its `@domain` entry's (an address without credentials of its own).
    Domain(&'a Sender),
    /// Those keyed by its next hop: the relayhost's.
    Relayhost,
}

/// What `sender_relay` holds for an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderRelay<'a> {
    Relay(&'a Relay),
    /// Stops Postfix from falling back to the `@domain` entry's relay: the relayhost.
    Dunno,
}

/// What `sender_transport` holds for an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport<'a> {
    /// This master.cf service to this next hop (`postrelay-smtps:[host]:465`, or
    /// `smtp:[host]:587` beside a relayhost on port 465).
    Via(&'static str, &'a Relay),
    /// Stops Postfix from falling back to the `@domain` entry's transport.
    Dunno,
}

/// Where Postfix sends a sender's mail, and as whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route<'a> {
    /// The next hop: the entry's relay, else the relayhost's; `None`: the recipient's MX.
    pub relay: Option<&'a Relay>,
    pub credentials: Option<(&'a Credentials, CredentialSource<'a>)>,
    /// The entry's `sender_relay` value, if it needs one.
    pub sender_relay: Option<SenderRelay<'a>>,
}

/// The lookup rule over one set of entries.
pub struct Routing<'a> {
    relayhost: Option<&'a RelayHost>,
    senders: &'a [Sender],
    /// The entries by key, built at the first lookup: a domain's route needs none (it
    /// has no `@domain` entry to fall back to), so with domains only it is never built.
    by_key: OnceLock<FxHashMap<&'a SenderKey, &'a Sender>>,
    /// The wildcard entries, the longest domain first (the most specific wins); found
    /// at the first lookup.
    wildcards: OnceLock<Vec<&'a Sender>>,
}

impl<'a> Routing<'a> {
    pub fn new(relayhost: Option<&'a RelayHost>, senders: &'a [Sender]) -> Routing<'a> {
        Routing {
            relayhost,
            senders,
            by_key: OnceLock::new(),
            wildcards: OnceLock::new(),
        }
    }

    fn by_key(&self) -> &FxHashMap<&'a SenderKey, &'a Sender> {
        self.by_key.get_or_init(|| {
            let senders = self.senders;
            // With duplicate keys (an error the desired state reports), the first one
            // counts.
            let mut by_key = FxHashMap::with_capacity_and_hasher(senders.len(), Default::default());
            for s in senders {
                by_key.entry(&s.key).or_insert(s);
            }
            by_key
        })
    }

    /// The entry Postfix uses for mail from `address`, most specific first: the
    /// address's own, its domain's, the wildcard of its domain with the longest domain;
    /// `None`: none (the relayhost's route).
    pub fn entry_for(&self, address: &str) -> Option<&'a Sender> {
        let key = SenderKey::Address(address.to_ascii_lowercase());
        let by_key = self.by_key();
        by_key
            .get(&key)
            .copied()
            .or_else(|| self.domain_entry_of(&key))
    }

    /// The entry `s` falls back to in every table: for an address its domain's, else
    /// its domain's wildcard; for a domain or a wildcard, the wildcard of a shorter
    /// domain that covers it.
    pub fn domain_entry(&self, s: &Sender) -> Option<&'a Sender> {
        self.domain_entry_of(&s.key)
    }

    fn domain_entry_of(&self, key: &SenderKey) -> Option<&'a Sender> {
        let domain = match key {
            SenderKey::Address(a) => {
                let (_, d) = a.rsplit_once('@')?;
                if let Some(&s) = self.by_key().get(&SenderKey::Domain(d.to_string())) {
                    return Some(s);
                }
                d
            }
            // A domain's own route looks nothing up unless there are wildcards.
            SenderKey::Domain(d) | SenderKey::Wildcard(d) => d,
        };
        self.wildcards()
            .iter()
            .find(|w| w.key.covers_domain(domain))
            .copied()
    }

    /// The wildcard entries, the longest domain first (the first of duplicates).
    pub fn wildcards(&self) -> &[&'a Sender] {
        self.wildcards.get_or_init(|| {
            let mut seen = std::collections::HashSet::new();
            let mut wildcards: Vec<&'a Sender> = self
                .senders
                .iter()
                .filter(|s| matches!(s.key, SenderKey::Wildcard(_)) && seen.insert(&s.key))
                .collect();
            // The longest domain first; among equals, by name (no key is built per comparison).
            fn domain(s: &Sender) -> &str {
                match &s.key {
                    SenderKey::Wildcard(d) => d,
                    _ => "",
                }
            }
            wildcards.sort_by(|a, b| {
                let (a, b) = (domain(a), domain(b));
                b.len().cmp(&a.len()).then_with(|| a.cmp(b))
            });
            wildcards
        })
    }

    /// The route of mail from `s`.
    pub fn route(&self, s: &'a Sender) -> Route<'a> {
        let domain = self.domain_entry(s);
        let relay = s.relay.as_ref().or(self.relayhost.map(|rh| &rh.relay));
        let sender_relay = match &s.relay {
            Some(r) => Some(SenderRelay::Relay(r)),
            None if domain.is_some_and(|d| d.relay.is_some()) => Some(SenderRelay::Dunno),
            None => None,
        };
        let credentials = s
            .credentials
            .as_ref()
            .map(|c| (c, CredentialSource::Own))
            .or_else(|| {
                let d = domain?;
                Some((d.credentials.as_ref()?, CredentialSource::Domain(d)))
            })
            .or_else(|| self.next_hop_credentials(relay?));
        Route {
            relay,
            credentials,
            sender_relay,
        }
    }

    /// The `sender_transport` entry of `s`, if it needs one. A relay on port 465 goes
    /// through postrelay's own service (TLS from the first byte). Beside a relayhost on
    /// port 465, which makes that service the `default_transport`, every other relay
    /// names Postfix's `smtp` service. An entry that leaves its domain's relay (an
    /// address override) says `DUNNO` where the domain has an entry here, as in
    /// sender_relay.
    pub fn transport(&self, s: &'a Sender) -> Option<Transport<'a>> {
        let own = |s: &'a Sender| -> Option<Transport<'a>> {
            let relay = s.relay.as_ref()?;
            match relay.implicit_tls() {
                true => Some(Transport::Via(SMTPS_SERVICE, relay)),
                false if self.relayhost_implicit_tls() => Some(Transport::Via("smtp", relay)),
                false => None,
            }
        };
        own(s).or_else(|| {
            let domain = self.domain_entry(s)?;
            let leaves = s.relay.as_ref() != domain.relay.as_ref();
            (leaves && own(domain).is_some()).then_some(Transport::Dunno)
        })
    }

    /// Whether the relayhost is on port 465.
    pub fn relayhost_implicit_tls(&self) -> bool {
        self.relayhost.is_some_and(|rh| rh.relay.implicit_tls())
    }

    /// The route of mail from unlisted senders and of bounces: the relayhost.
    pub fn relayhost_route(&self) -> Option<Route<'a>> {
        let rh = self.relayhost?;
        Some(Route {
            relay: Some(&rh.relay),
            credentials: self.next_hop_credentials(&rh.relay),
            sender_relay: None,
        })
    }

    fn next_hop_credentials(
        &self,
        relay: &Relay,
    ) -> Option<(&'a Credentials, CredentialSource<'a>)> {
        let rh = self.relayhost.filter(|rh| rh.relay == *relay)?;
        Some((rh.credentials.as_ref()?, CredentialSource::Relayhost))
    }
}

/// One managed table as the desired state calls for it: the bytes of the file postrelay
/// writes (a header, then `key value` lines sorted by key; see [`table::render`]), held
/// once and shared with the plan that writes them. Its entries are read back from them
/// ([`table::entries`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub bytes: Secret<Arc<Vec<u8>>>,
    /// How many entries.
    pub len: usize,
}

impl Table {
    /// The entries `(key, value)`, sorted by key, read back from the bytes: values of
    /// `sasl_passwd` are `username:password`.
    pub fn expose_entries(&self) -> impl Iterator<Item = (&str, &str)> {
        let text = std::str::from_utf8(self.bytes.expose()).unwrap_or_default();
        text.lines().skip(1).filter_map(|l| l.split_once(' '))
    }
}

impl Table {
    /// A table without entries (its header only).
    pub fn empty() -> Table {
        Table {
            bytes: Secret::new(Arc::new(render(&[]))),
            len: 0,
        }
    }

    /// Whether `entries`, sorted, are exactly this table's.
    pub fn holds(&self, entries: &[(&str, &str)]) -> bool {
        entries.len() == self.len && entries.iter().copied().eq(self.expose_entries())
    }
}

/// The managed tables, in [`MapKind::ALL`] order (sender_transport empty when no relay
/// is on port 465, the wildcard tables without wildcard senders).
pub fn tables(desired: &Desired) -> [Table; 7] {
    MapKind::ALL.map(|kind| {
        if kind.is_regexp() {
            return wildcard_table(kind.base(), desired);
        }
        if kind == MapKind::SenderTransport && !desired.needs_transport_map() {
            return Table::empty();
        }
        // Keys are unique in a desired state (a duplicate is an error), so sorting by key
        // alone is sorting by entry. Each key's first 8 bytes, as one number, decide
        // most comparisons without comparing the strings.
        let mut entries = entries(kind, desired);
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        Table {
            bytes: Secret::new(Arc::new(render(&entries))),
            len: entries.len(),
        }
    })
}

/// A table key, borrowed from the desired state: `@domain` or as written.
#[derive(PartialEq, Eq)]
enum Key<'a> {
    /// `@` then the text.
    At(&'a str),
    Plain(&'a str),
}

impl Key<'_> {
    fn parts(&self) -> (&'static str, &str) {
        match self {
            Key::At(s) => ("@", s),
            Key::Plain(s) => ("", s),
        }
    }

    /// The first 8 bytes of the key as written, zero-padded, as a big-endian number:
    /// keys whose prefixes differ are in the order of their prefixes (a shorter key that
    /// is padded is also the smaller one), others are compared in full.
    fn prefix(&self) -> u64 {
        let (at, key) = self.parts();
        let mut bytes = [0u8; 8];
        for (b, k) in bytes.iter_mut().zip(at.bytes().chain(key.bytes())) {
            *b = k;
        }
        u64::from_be_bytes(bytes)
    }
}

impl Ord for Key<'_> {
    /// The order of the keys' bytes, as written to the table.
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Key::At(a), Key::At(b)) | (Key::Plain(a), Key::Plain(b)) => a.cmp(b),
            _ => {
                let (a, b) = (self.parts(), other.parts());
                a.0.bytes()
                    .chain(a.1.bytes())
                    .cmp(b.0.bytes().chain(b.1.bytes()))
            }
        }
    }
}

impl PartialOrd for Key<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A table value, borrowed from the desired state.
enum Value<'a> {
    /// `username:password`.
    Login(&'a Credentials),
    Text(&'a str),
    /// `transport:nexthop`.
    Transport(&'static str, &'a Relay),
}

/// A sender's key in a hash table; `None` for a wildcard (regexp tables only).
fn sender_key(key: &SenderKey) -> Option<Key<'_>> {
    match key {
        SenderKey::Domain(d) => Some(Key::At(d)),
        SenderKey::Wildcard(_) => None,
        SenderKey::Address(a) => Some(Key::Plain(a)),
    }
}

/// What the sender-keyed table `kind` holds for `s`.
fn sender_value<'a>(kind: MapKind, routing: &Routing<'a>, s: &'a Sender) -> Option<Value<'a>> {
    match kind {
        MapKind::SaslPasswd => s.credentials.as_ref().map(Value::Login),
        MapKind::SenderRelay => Some(match routing.route(s).sender_relay? {
            SenderRelay::Relay(r) => Value::Text(r.as_str()),
            SenderRelay::Dunno => Value::Text("DUNNO"),
        }),
        MapKind::SenderTransport => Some(match routing.transport(s)? {
            Transport::Via(service, relay) => Value::Transport(service, relay),
            Transport::Dunno => Value::Text("DUNNO"),
        }),
        _ => None,
    }
}

/// The text of a value, as a regexp table holds it (before `$` escaping).
fn value_text(v: &Value) -> String {
    match v {
        Value::Login(c) => format!("{}:{}", c.username, c.password.expose()),
        Value::Text(t) => t.to_string(),
        Value::Transport(service, relay) => format!("{service}:{relay}"),
    }
}

/// The regexp table beside the hash map `base`: Postfix gives it the full address
/// before it tries `@domain` in any map of the list, so it holds, first, every domain
/// entry that a wildcard covers (its own value, `DUNNO` included, so the wildcard
/// cannot shadow it), then the wildcards, the longest domain first. Addresses stay in
/// the hash map, which is listed first.
fn wildcard_table(base: MapKind, desired: &Desired) -> Table {
    let routing = desired.routing();
    let mut rules = Vec::new();
    if !routing.wildcards().is_empty() {
        for s in &desired.senders {
            let SenderKey::Domain(d) = &s.key else {
                continue;
            };
            if routing.wildcards().iter().any(|w| w.key.covers_domain(d))
                && let Some(v) = sender_value(base, &routing, s)
            {
                rules.push(Rule {
                    pattern: Pattern::Domain(d.clone()),
                    value: value_text(&v),
                });
            }
        }
        rules.sort_by_key(|r| r.pattern.expression());
        for w in routing.wildcards() {
            let SenderKey::Wildcard(d) = &w.key else {
                continue;
            };
            if let Some(v) = sender_value(base, &routing, w) {
                rules.push(Rule {
                    pattern: Pattern::Subdomains(d.clone()),
                    value: value_text(&v),
                });
            }
        }
    }
    let header = table::HEADER.trim_start_matches("# ");
    let bytes = regexp::render(header, &rules).expect("validated domains make valid patterns");
    Table {
        bytes: Secret::new(Arc::new(bytes)),
        len: rules.len(),
    }
}

/// The entries of table `kind`, each with its key's [`Key::prefix`], unsorted.
fn entries<'a>(kind: MapKind, desired: &'a Desired) -> Vec<(u64, Key<'a>, Value<'a>)> {
    let entry = |key: Key<'a>, value| (key.prefix(), key, value);
    match kind {
        MapKind::SaslPasswd => {
            let senders = desired.senders.iter().filter_map(|s| {
                let c = s.credentials.as_ref()?;
                Some(entry(sender_key(&s.key)?, Value::Login(c)))
            });
            let relayhost = desired.relayhost.iter().filter_map(|rh| {
                let c = rh.credentials.as_ref()?;
                Some(entry(Key::Plain(rh.relay.as_str()), Value::Login(c)))
            });
            senders.chain(relayhost).collect()
        }
        MapKind::SenderRelay | MapKind::SenderTransport => {
            let routing = desired.routing();
            desired
                .senders
                .iter()
                .filter_map(|s| {
                    let value = sender_value(kind, &routing, s)?;
                    Some(entry(sender_key(&s.key)?, value))
                })
                .collect()
        }
        MapKind::TlsPolicy => desired
            .tls
            .iter()
            .map(|(relay, tls)| entry(Key::Plain(relay.as_str()), Value::Text(tls.as_str())))
            .collect(),
        // The regexp tables: `wildcard_table`.
        _ => Vec::new(),
    }
}

/// The bytes of a table with these entries, in this order: [`table::HEADER`], then one
/// `key value` line each (the layout [`table::render`] gives), in a buffer of the exact
/// size.
fn render(entries: &[(u64, Key, Value)]) -> Vec<u8> {
    let value_len = |v: &Value| match v {
        Value::Login(c) => c.username.len() + 1 + c.password.expose().len(),
        Value::Text(t) => t.len(),
        Value::Transport(service, relay) => service.len() + 1 + relay.as_str().len(),
    };
    let size = entries.iter().map(|(_, k, v)| {
        let (at, key) = k.parts();
        at.len() + key.len() + 1 + value_len(v) + 1
    });
    let mut out = Vec::with_capacity(table::HEADER.len() + 1 + size.sum::<usize>());
    out.extend_from_slice(table::HEADER.as_bytes());
    out.push(b'\n');
    for (_, k, v) in entries {
        let (at, key) = k.parts();
        out.extend_from_slice(at.as_bytes());
        out.extend_from_slice(key.as_bytes());
        out.push(b' ');
        match v {
            Value::Login(c) => {
                out.extend_from_slice(c.username.as_bytes());
                out.push(b':');
                out.extend_from_slice(c.password.expose().as_bytes());
            }
            Value::Text(t) => out.extend_from_slice(t.as_bytes()),
            Value::Transport(service, relay) => {
                out.extend_from_slice(service.as_bytes());
                out.push(b':');
                out.extend_from_slice(relay.as_str().as_bytes());
            }
        }
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::parse_str;

    proptest::proptest! {
        /// Comparing keys by their prefixes first orders them as comparing them in full.
        #[test]
        fn prefixes_order_keys_as_their_bytes(
            a in "[@a-c.]{0,10}",
            b in "[@a-c.]{0,10}",
            a_at: bool,
            b_at: bool,
        ) {
            fn key(s: &str, at: bool) -> Key<'_> {
                if at { Key::At(s) } else { Key::Plain(s) }
            }
            let (a, b) = (key(&a, a_at), key(&b, b_at));
            let bytes = |k: &Key| {
                let (at, key) = k.parts();
                format!("{at}{key}")
            };
            proptest::prop_assert_eq!(a.cmp(&b), bytes(&a).cmp(&bytes(&b)));
            let by_prefix = a.prefix().cmp(&b.prefix()).then_with(|| a.cmp(&b));
            proptest::prop_assert_eq!(by_prefix, a.cmp(&b));
        }
    }

    #[test]
    fn relays_parse_to_a_spelling_and_an_endpoint() {
        let good = [
            (
                "smtp.example.com",
                "smtp.example.com",
                ("smtp.example.com", 25),
            ),
            (
                "SMTP.Example.com:587",
                "smtp.example.com:587",
                ("smtp.example.com", 587),
            ),
            (
                "[smtp.mailgun.org]:587",
                "[smtp.mailgun.org]:587",
                ("smtp.mailgun.org", 587),
            ),
            (
                "[SMTP.mailgun.org]",
                "[smtp.mailgun.org]",
                ("smtp.mailgun.org", 25),
            ),
            ("[192.0.2.1]:25", "[192.0.2.1]:25", ("192.0.2.1", 25)),
            ("[192.0.2.1]", "[192.0.2.1]", ("192.0.2.1", 25)),
            ("[127.0.0.1]:2525", "[127.0.0.1]:2525", ("127.0.0.1", 2525)),
            (
                "[ipv6:2001:DB8::1]:587",
                "[ipv6:2001:db8::1]:587",
                ("2001:db8::1", 587),
            ),
            ("[IPv6:::1]", "[ipv6:::1]", ("::1", 25)),
            ("relay:1", "relay:1", ("relay", 1)),
            ("relay:65535", "relay:65535", ("relay", 65535)),
            ("relay:0587", "relay:0587", ("relay", 587)),
        ];
        for (input, spelling, endpoint) in good {
            let r = Relay::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.as_str(), spelling, "{input}");
            assert_eq!(r.endpoint(), endpoint, "{input}");
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
        for (input, e) in bad {
            let err = Relay::parse(input).unwrap_err();
            assert!(err.contains(e), "{input:?}: {err:?} should contain {e:?}");
        }
    }

    /// (table key, next hop, username of the credentials used, sender_relay value).
    type Row = (String, Option<String>, Option<String>, Option<String>);

    fn routes(text: &str) -> Vec<Row> {
        let d = parse_str(text).unwrap();
        let routing = d.routing();
        d.senders
            .iter()
            .map(|s| {
                let r = routing.route(s);
                (
                    s.key.table_key(),
                    r.relay.map(|r| r.to_string()),
                    r.credentials.map(|(c, _)| c.username.clone()),
                    r.sender_relay.map(|v| match v {
                        SenderRelay::Relay(r) => r.to_string(),
                        SenderRelay::Dunno => "DUNNO".into(),
                    }),
                )
            })
            .collect()
    }

    fn row(key: &str, relay: Option<&str>, user: Option<&str>, value: Option<&str>) -> Row {
        let s = |v: Option<&str>| v.map(str::to_string);
        (key.to_string(), s(relay), s(user), s(value))
    }

    #[test]
    fn addresses_fall_back_to_their_domain_and_entries_to_the_next_hop() {
        let got = routes(
            r#"
            [relayhost]
            relay = "[rh.example]:587"
            username = "rh"
            password = "p"
            [[sender]]
            domain = "a.example"
            relay = "[a.example]:587"
            username = "a"
            password = "p"
            [[sender]]
            address = "same@a.example"
            relay = "[a.example]:587"
            [[sender]]
            address = "own@a.example"
            username = "own"
            password = "p"
            [[sender]]
            domain = "b.example"
            relay = "[rh.example]:587"
            [[sender]]
            domain = "c.example"
            relay = "[c.example]:25"
            [[sender]]
            address = "x@c.example"
            [[sender]]
            domain = "d.example"
            "#,
        );
        assert_eq!(
            got,
            [
                row(
                    "@a.example",
                    Some("[a.example]:587"),
                    Some("a"),
                    Some("[a.example]:587")
                ),
                row(
                    "same@a.example",
                    Some("[a.example]:587"),
                    Some("a"),
                    Some("[a.example]:587")
                ),
                row(
                    "own@a.example",
                    Some("[rh.example]:587"),
                    Some("own"),
                    Some("DUNNO")
                ),
                row(
                    "@b.example",
                    Some("[rh.example]:587"),
                    Some("rh"),
                    Some("[rh.example]:587")
                ),
                row(
                    "@c.example",
                    Some("[c.example]:25"),
                    None,
                    Some("[c.example]:25")
                ),
                row(
                    "x@c.example",
                    Some("[rh.example]:587"),
                    Some("rh"),
                    Some("DUNNO")
                ),
                row("@d.example", Some("[rh.example]:587"), Some("rh"), None),
            ]
        );
    }

    #[test]
    fn tables_hold_what_the_routes_need() {
        let d = parse_str(
            r#"
            [relayhost]
            relay = "[rh.example]:587"
            username = "rh"
            password = "rh-pw"
            tls = "may"
            [[sender]]
            domain = "a.example"
            relay = "[a.example]:587"
            username = "a"
            password = "a-pw"
            [[sender]]
            address = "x@a.example"
            username = "x"
            password = "x-pw"
            "#,
        )
        .unwrap();
        let [sasl, relay, tls, transport, ..] = tables(&d);
        assert_eq!(transport.len, 0, "no relay on port 465");
        let pairs = |t: &Table| -> Vec<String> {
            t.expose_entries()
                .map(|(k, v)| format!("{k} {v}"))
                .collect()
        };
        assert_eq!(
            pairs(&sasl),
            [
                "@a.example a:a-pw",
                "[rh.example]:587 rh:rh-pw",
                "x@a.example x:x-pw"
            ]
        );
        assert_eq!(
            pairs(&relay),
            ["@a.example [a.example]:587", "x@a.example DUNNO"]
        );
        // What `postmap -s` dumps, sorted, is compared entry by entry.
        let dumped = [("@a.example", "[a.example]:587"), ("x@a.example", "DUNNO")];
        assert!(relay.holds(&dumped));
        assert!(!relay.holds(&dumped[..1]));
        assert!(!relay.holds(&[dumped[0], ("x@a.example", "[a.example]:587")]));
        assert!(!relay.holds(&[dumped[0], dumped[1], ("y@a.example", "DUNNO")]));
        assert!(!tls.holds(&dumped));
        assert_eq!(
            pairs(&tls),
            ["[a.example]:587 secure", "[rh.example]:587 may"]
        );
        assert_eq!(
            String::from_utf8(relay.bytes.expose().to_vec()).unwrap(),
            format!(
                "{}\n@a.example [a.example]:587\nx@a.example DUNNO\n",
                table::HEADER
            )
        );
    }

    /// sender_transport: a relay on 465 goes through postrelay's service; an address
    /// that leaves its domain's relay on 465 says DUNNO; beside a relayhost on 465 every
    /// other relay names Postfix's smtp service.
    #[test]
    fn transports_send_relays_on_465_through_the_service() {
        let entries = |text: &str| -> Vec<String> {
            let d = parse_str(text).unwrap();
            d.table(MapKind::SenderTransport)
                .expose_entries()
                .map(|(k, v)| format!("{k} {v}"))
                .collect()
        };
        let senders = r#"
            [[sender]]
            domain = "w.example"
            relay = "[smtps.example]:465"
            [[sender]]
            address = "x@w.example"
            relay = "[other.example]:587"
            [[sender]]
            address = "y@w.example"
            username = "y"
            password = "y-pw"
            [[sender]]
            domain = "o.example"
            relay = "[other.example]:587"
        "#;
        let relayhost = |relay: &str| format!("[relayhost]\nrelay = \"{relay}\"\n{senders}");
        assert_eq!(
            entries(&relayhost("[rh.example]:587")),
            [
                "@w.example postrelay-smtps:[smtps.example]:465",
                "x@w.example DUNNO",
                "y@w.example DUNNO",
            ]
        );
        assert_eq!(
            entries(&relayhost("[rh.example]:465")),
            [
                "@o.example smtp:[other.example]:587",
                "@w.example postrelay-smtps:[smtps.example]:465",
                "x@w.example smtp:[other.example]:587",
                "y@w.example DUNNO",
            ]
        );
        assert!(entries(&relayhost("[rh.example]:587").replace(":465", ":2465")).is_empty());
    }

    /// Wildcards: the most specific entry wins (address, exact domain, the longest
    /// wildcard, the relayhost), and the regexp tables carry the exact domains a
    /// wildcard covers before the wildcards, the longest first.
    #[test]
    fn wildcards_yield_to_more_specific_entries() {
        let d = parse_str(
            r#"
            [relayhost]
            relay = "[rh.example]:587"
            [[sender]]
            domain = "*.shop.example"
            relay = "[wild.example]:587"
            username = "w"
            password = "w-pw$1"
            [[sender]]
            domain = "*.z.shop.example"
            relay = "[deep.example]:587"
            username = "z"
            password = "z-pw"
            [[sender]]
            domain = "eu.shop.example"
            relay = "[eu.example]:587"
            username = "eu"
            password = "eu-pw"
            [[sender]]
            address = "vip@eu.shop.example"
            relay = "[vip.example]:587"
            username = "vip"
            password = "vip-pw"
            [[sender]]
            domain = "other.example"
            relay = "[other.example]:587"
            "#,
        )
        .unwrap();
        let r = d.routing();
        let via = |a: &str| r.entry_for(a).map(|s| s.key.table_key());
        assert_eq!(via("a@x.shop.example").as_deref(), Some("*.shop.example"));
        assert_eq!(
            via("b@y.z.shop.example").as_deref(),
            Some("*.z.shop.example")
        );
        assert_eq!(via("c@z.shop.example").as_deref(), Some("*.shop.example"));
        assert_eq!(
            via("d@eu.shop.example").as_deref(),
            Some("@eu.shop.example")
        );
        assert_eq!(
            via("vip@eu.shop.example").as_deref(),
            Some("vip@eu.shop.example")
        );
        assert_eq!(
            via("e@sub.eu.shop.example").as_deref(),
            Some("*.shop.example")
        );
        assert_eq!(
            via("f@shop.example"),
            None,
            "the wildcard's own domain: relayhost"
        );
        let text = |k: MapKind| String::from_utf8(d.table(k).bytes.expose().to_vec()).unwrap();
        assert_eq!(
            text(MapKind::SenderRelayWildcards)
                .lines()
                .skip(1)
                .collect::<Vec<_>>(),
            [
                "/.@eu\\.shop\\.example$/ [eu.example]:587",
                "/.@[^@]+\\.z\\.shop\\.example$/ [deep.example]:587",
                "/.@[^@]+\\.shop\\.example$/ [wild.example]:587",
            ]
        );
        assert_eq!(
            text(MapKind::SaslPasswdWildcards)
                .lines()
                .skip(1)
                .collect::<Vec<_>>(),
            [
                "/.@eu\\.shop\\.example$/ eu:eu-pw",
                "/.@[^@]+\\.z\\.shop\\.example$/ z:z-pw",
                "/.@[^@]+\\.shop\\.example$/ w:w-pw$$1",
            ]
        );
        // The hash maps hold no wildcard.
        assert!(!text(MapKind::SenderRelay).contains('*'));
        assert!(text(MapKind::SenderRelayWildcards).lines().count() == 4);
        // Without wildcards, the regexp tables are empty.
        let plain =
            parse_str("[[sender]]\ndomain = \"a.example\"\nrelay = \"[r.example]:587\"\n").unwrap();
        assert_eq!(plain.table(MapKind::SenderRelayWildcards).len, 0);
    }
}
