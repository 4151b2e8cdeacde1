//! The mail exchangers of a next hop written without brackets, found as Postfix's SMTP
//! client finds them, so that a check can go where Postfix delivers.
//!
//! Postfix reads a next hop `relay.example` (no brackets) as a mail domain: smtp(8) looks
//! up its MX records and tries their hosts by preference; only `[relay.example]` names
//! the host to connect to. This module owns that lookup, [`mx_hosts`], and answers with
//! host names: finding their addresses and connecting is the caller's. It follows
//! Postfix's `smtp_domain_addr()` and `dns_lookup()` (src/smtp/smtp_addr.c,
//! src/dns/dns_lookup.c):
//!
//! - MX records: their hosts, lowest preference first. Postfix shuffles hosts of equal
//!   preference before every delivery (`smtp_randomize_addresses = yes`; RFC 5321 §5.1
//!   asks for it), so any of them may be tried first. Here they come in a fixed order,
//!   by name, so that the same DNS data always gives the same list and a check's output
//!   does not change from run to run; a caller that must cover every choice Postfix
//!   may make tries all hosts of the best preference. A host listed twice comes once.
//! - No MX record (NOERROR without one, "NODATA"): the domain itself, the implicit MX of
//!   RFC 5321 §5.1 (Postfix then connects to its A/AAAA records).
//! - NXDOMAIN: an error naming the domain. (Postfix goes on to look up the domain's
//!   address records, which do not exist either, and bounces the mail.)
//! - A null MX (RFC 7505, `0 .`): an error, the domain accepts no mail. Like Postfix,
//!   any MX record whose host is the root counts, whatever its preference.
//! - A CNAME: MX records of the name it leads to count; an answer holding only the alias
//!   is asked again for the alias, at most [`MAX_ALIASES`] times (Postfix's limit).
//! - MX hosts that are not host names (letters, digits, `-`, `_`) are skipped, as Postfix
//!   skips "malformed domain name"s; none left is an error.
//! - SERVFAIL, REFUSED or another error code from every nameserver, a nameserver that
//!   cannot be reached, or no usable answer within the timeout: an error saying which.
//!
//! The resolver is a stub, as the C library's resolver that Postfix uses: the
//! nameservers of `/etc/resolv.conf` (at most three, `127.0.0.1` when it lists none;
//! its `options` and `search` lines are not used, and Postfix does not append search
//! domains to these lookups), each asked in turn over UDP port 53, in two rounds that
//! share the caller's timeout, which bounds the whole lookup. Every query goes from a
//! fresh socket (a port the kernel picks at random) with a random ID and recursion
//! desired. A reply counts only if it comes from the address asked (the socket is
//! connected, so the kernel drops others), carries the query's ID, the QR bit, a
//! standard-query opcode and the same single question; anything else is ignored and
//! the wait goes on. A truncated reply (TC bit) is asked again over TCP, as the C
//! library does. Sizes are bounded: a datagram is at most 64 KiB, a TCP reply is as
//! long as its 16-bit prefix says, and a message whose section counts cannot fit in its
//! length is refused before it is parsed. DNS messages are built and parsed by the
//! simple-dns crate, not by hand.
//!
//! In debug builds, [`NAMESERVER_VAR`] replaces the nameservers of `/etc/resolv.conf`:
//! the tests' fake servers. Release builds ignore it.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use simple_dns::rdata::RData;
use simple_dns::{CLASS, Name, OPCODE, Packet, PacketFlag, QCLASS, QTYPE, Question, RCODE, TYPE};

use crate::desired::fields;
use crate::fs::reason;

/// In debug builds only: `ADDRESS:PORT[,ADDRESS:PORT…]`, the nameservers to ask instead
/// of those of [`RESOLV_CONF`] (the tests' fake DNS servers). Release builds ignore it.
pub const NAMESERVER_VAR: &str = "POSTRELAY_NAMESERVER";

/// Where the nameservers are listed, as for the C library's resolver.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// At most this many nameservers are used: the C library's `MAXNS`.
pub const MAX_NAMESERVERS: usize = 3;

/// CNAME hops followed before giving up: Postfix's limit in `dns_lookup_x()`.
pub const MAX_ALIASES: usize = 10;

/// Rounds over the nameservers, as the C library's default `attempts:2`.
const ROUNDS: usize = 2;

/// The largest resolv.conf read.
const MAX_RESOLV_CONF: u64 = 64 * 1024;

/// The largest UDP datagram received (larger ones cannot exist).
const MAX_DATAGRAM: usize = 65_535;

/// The nameserver the C library uses when resolv.conf lists none.
const DEFAULT_NAMESERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53);

/// The hosts Postfix's SMTP client would try for an unbracketed next-hop domain, in order.
///
/// `domain` is a DNS name (a trailing dot is allowed). `timeout` bounds the whole
/// lookup. The order, the implicit MX, null MX, NXDOMAIN and CNAME rules are those of
/// the module doc. The error is an [`MxError`] (`err.downcast_ref::<MxError>()`), except
/// when the nameservers cannot be read from [`RESOLV_CONF`] or [`NAMESERVER_VAR`].
pub fn mx_hosts(domain: &str, timeout: Duration) -> Result<Vec<String>> {
    mx_hosts_from(&nameservers()?, domain, timeout)
}

/// [`mx_hosts`], asking `servers` (in order) instead of the system's nameservers.
pub fn mx_hosts_from(
    servers: &[SocketAddr],
    domain: &str,
    timeout: Duration,
) -> Result<Vec<String>> {
    Ok(lookup(servers, domain, timeout)?)
}

/// Why [`mx_hosts`] found no host. Every message names the domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxError {
    /// Not a name that can have MX records.
    InvalidDomain { domain: String, reason: String },
    /// NXDOMAIN for the domain, or for the name its CNAME leads to (`name`).
    NoSuchDomain { domain: String, name: String },
    /// A null MX (RFC 7505): the domain accepts no mail.
    NullMx { domain: String },
    /// MX records, none naming a valid host (the hosts as the answer spelled them).
    NoValidHost { domain: String, hosts: Vec<String> },
    /// More than [`MAX_ALIASES`] CNAME hops, or a loop.
    AliasLoop { domain: String },
    /// A nameserver answered with an error code (SERVFAIL, REFUSED…), and no other
    /// answered better.
    ServerError {
        domain: String,
        server: SocketAddr,
        rcode: String,
    },
    /// A nameserver could not be asked (port unreachable, TCP refused…), and no other
    /// answered better.
    Unreachable {
        domain: String,
        server: SocketAddr,
        error: String,
    },
    /// No usable answer within the timeout. `ignored`: replies that were not accepted,
    /// and why the last one was not.
    TimedOut {
        domain: String,
        after: Duration,
        servers: Vec<SocketAddr>,
        ignored: Option<(usize, String)>,
    },
}

impl fmt::Display for MxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MxError::InvalidDomain { domain, reason } => {
                write!(f, "cannot look up the MX records of {domain:?}: {reason}")
            }
            MxError::NoSuchDomain { domain, name } if domain == name => {
                write!(f, "{domain}: no such domain (NXDOMAIN)")
            }
            MxError::NoSuchDomain { domain, name } => write!(
                f,
                "{domain}: no such domain: its alias {name} does not exist (NXDOMAIN)"
            ),
            MxError::NullMx { domain } => write!(
                f,
                "{domain}: domain accepts no mail (null MX record, RFC 7505)"
            ),
            MxError::NoValidHost { domain, hosts } => write!(
                f,
                "{domain}: no MX record names a valid host ({})",
                hosts.join(", ")
            ),
            MxError::AliasLoop { domain } => write!(
                f,
                "{domain}: more than {MAX_ALIASES} CNAME hops, or a CNAME loop"
            ),
            MxError::ServerError {
                domain,
                server,
                rcode,
            } => write!(
                f,
                "MX lookup of {domain} failed: nameserver {server} answered {rcode}"
            ),
            MxError::Unreachable {
                domain,
                server,
                error,
            } => write!(
                f,
                "MX lookup of {domain} failed: nameserver {server}: {error}"
            ),
            MxError::TimedOut {
                domain,
                after,
                servers,
                ignored,
            } => {
                let servers: Vec<String> = servers.iter().map(SocketAddr::to_string).collect();
                write!(
                    f,
                    "MX lookup of {domain} timed out: no answer from {} within {} s",
                    servers.join(", "),
                    after.as_secs_f64()
                )?;
                match ignored {
                    Some((1, why)) => write!(f, " (1 reply ignored: {why})"),
                    Some((n, why)) => write!(f, " ({n} replies ignored, the last: {why})"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl std::error::Error for MxError {}

/// The nameservers to ask: [`NAMESERVER_VAR`] in debug builds, else [`RESOLV_CONF`].
fn nameservers() -> Result<Vec<SocketAddr>> {
    if cfg!(debug_assertions)
        && let Some(value) = std::env::var_os(NAMESERVER_VAR)
    {
        let value = value.to_string_lossy();
        return parse_override(&value)
            .map_err(|e| anyhow::anyhow!("{NAMESERVER_VAR}={value}: {e}"));
    }
    read_resolv_conf(Path::new(RESOLV_CONF))
}

/// `ADDRESS:PORT[,ADDRESS:PORT…]`.
fn parse_override(value: &str) -> Result<Vec<SocketAddr>, String> {
    let servers = value
        .split(',')
        .map(|s| {
            s.trim()
                .parse::<SocketAddr>()
                .map_err(|_| format!("{:?} is not ADDRESS:PORT", s.trim()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if servers.len() > MAX_NAMESERVERS {
        return Err(format!("more than {MAX_NAMESERVERS} nameservers"));
    }
    Ok(servers)
}

/// The nameservers of resolv.conf. It is read as the C library reads it, without
/// postrelay's trust rule for its own inputs: it is the system's (under
/// systemd-resolved, a link into a directory that user owns), and Postfix uses it as it
/// is. A missing file means the local nameserver, as for the C library.
fn read_resolv_conf(path: &Path) -> Result<Vec<SocketAddr>> {
    let cannot = |e: io::Error| anyhow::anyhow!("{}: cannot read: {}", path.display(), reason(&e));
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::debug!("{}: not found; asking {DEFAULT_NAMESERVER}", path.display());
            return Ok(vec![DEFAULT_NAMESERVER]);
        }
        Err(e) => return Err(cannot(e)),
    };
    if !file.metadata().map_err(cannot)?.is_file() {
        anyhow::bail!("{}: not a regular file", path.display());
    }
    let mut bytes = Vec::new();
    file.take(MAX_RESOLV_CONF + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_RESOLV_CONF {
        anyhow::bail!("{}: larger than {MAX_RESOLV_CONF} bytes", path.display());
    }
    Ok(parse_resolv_conf(&String::from_utf8_lossy(&bytes)))
}

/// The `nameserver` lines of resolv.conf, parsed as the C library's `res_init` does: the
/// keyword at the start of a line, then blanks, then the address up to a blank, `#` or
/// `;`; at most [`MAX_NAMESERVERS`]; an address it cannot use is skipped. None:
/// `127.0.0.1`.
fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut servers = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("nameserver") else {
            continue;
        };
        if !rest.starts_with([' ', '\t']) {
            continue;
        }
        let rest = rest.trim_start_matches([' ', '\t']);
        let address = rest.split([' ', '\t', '#', ';']).next().unwrap_or_default();
        match address.parse::<IpAddr>() {
            Ok(ip) if servers.len() < MAX_NAMESERVERS => servers.push(SocketAddr::new(ip, 53)),
            Ok(_) => {}
            // A scoped IPv6 address (fe80::1%eth0) would need the interface's index.
            Err(_) => tracing::warn!("{RESOLV_CONF}: nameserver {address:?} not used"),
        }
    }
    if servers.is_empty() {
        servers.push(DEFAULT_NAMESERVER);
    }
    servers
}

/// [`mx_hosts`] against the given nameservers.
fn lookup(servers: &[SocketAddr], domain: &str, timeout: Duration) -> Result<Vec<String>, MxError> {
    let deadline = Instant::now() + timeout;
    let domain = check_domain(domain)?;
    let mut asked = vec![domain.clone()];
    loop {
        let name = asked.last().expect("starts with the domain");
        let reply = ask(servers, name, &domain, deadline, timeout)?;
        match meaning(&reply, name) {
            Meaning::Hosts(records) => return hosts(&domain, records),
            Meaning::NoData => return Ok(vec![domain]),
            Meaning::NullMx => return Err(MxError::NullMx { domain }),
            Meaning::NoSuchDomain(name) => return Err(MxError::NoSuchDomain { domain, name }),
            Meaning::Alias(target) => {
                let target = check_host(&target).ok_or_else(|| MxError::InvalidDomain {
                    domain: domain.clone(),
                    reason: format!("its CNAME leads to {target:?}, not a host name"),
                })?;
                if asked.len() > MAX_ALIASES || asked.contains(&target) {
                    return Err(MxError::AliasLoop { domain });
                }
                tracing::debug!("{name} is an alias of {target}");
                asked.push(target);
            }
        }
    }
}

/// The domain as it is queried: lowercased, without a trailing dot.
fn check_domain(domain: &str) -> Result<String, MxError> {
    let invalid = |reason: String| MxError::InvalidDomain {
        domain: domain.to_string(),
        reason,
    };
    let name = domain.strip_suffix('.').unwrap_or(domain);
    if name.parse::<IpAddr>().is_ok() {
        return Err(invalid("an IP address has no MX records".into()));
    }
    fields::parse_domain(name).map_err(invalid)
}

/// A host name from an answer, lowercased, without a trailing dot: labels of 1-63
/// letters, digits, `-` and `_`, 253 characters at most (Postfix's `valid_hostname`,
/// which also lets `_` through). `None` for anything else, the root included.
fn check_host(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    ok.then(|| name.to_ascii_lowercase())
}

/// The MX records' hosts in the order of the module doc: by preference, then by name;
/// each host once; invalid names skipped.
fn hosts(domain: &str, records: Vec<(u16, String)>) -> Result<Vec<String>, MxError> {
    let mut valid: Vec<(u16, String)> = Vec::with_capacity(records.len());
    let mut invalid = Vec::new();
    for (preference, host) in records {
        match check_host(&host) {
            Some(host) => valid.push((preference, host)),
            None => {
                tracing::warn!("{domain}: MX host {host:?} is not a valid host name; skipped");
                invalid.push(host);
            }
        }
    }
    if valid.is_empty() {
        return Err(MxError::NoValidHost {
            domain: domain.to_string(),
            hosts: invalid,
        });
    }
    valid.sort();
    let mut seen = Vec::with_capacity(valid.len());
    for (_, host) in valid {
        if !seen.contains(&host) {
            seen.push(host);
        }
    }
    Ok(seen)
}

/// A reply accepted for our query, reduced to what the lookup needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reply {
    rcode: RCODE,
    truncated: bool,
    answers: Vec<Answer>,
}

/// A record of the answer section, class IN. Names are lowercased, without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// `host`: `None` for the root (a null MX).
    Mx {
        owner: String,
        preference: u16,
        host: Option<String>,
    },
    Cname {
        owner: String,
        target: String,
    },
}

/// What a reply says about the name asked.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Meaning {
    /// MX records: (preference, host as spelled in the answer).
    Hosts(Vec<(u16, String)>),
    /// No MX record and no alias: the implicit MX.
    NoData,
    NullMx,
    /// NXDOMAIN, for this name (the end of the CNAME chain in the answer).
    NoSuchDomain(String),
    /// Only a CNAME chain: ask again for where it ends.
    Alias(String),
}

/// What `reply` says about `name`. MX records count when their owner is `name` or a
/// name the answer's CNAME chain from `name` leads to; other records are not about
/// this question.
fn meaning(reply: &Reply, name: &str) -> Meaning {
    let mut chain = vec![name.to_string()];
    while chain.len() <= reply.answers.len() {
        let last = chain.last().expect("not empty");
        let next = reply.answers.iter().find_map(|a| match a {
            Answer::Cname { owner, target } if owner == last && !chain.contains(target) => {
                Some(target.clone())
            }
            _ => None,
        });
        match next {
            Some(target) => chain.push(target),
            None => break,
        }
    }
    let end = chain.last().expect("not empty").clone();
    if reply.rcode == RCODE::NameError {
        return Meaning::NoSuchDomain(end);
    }
    let mut records = Vec::new();
    for answer in &reply.answers {
        if let Answer::Mx {
            owner,
            preference,
            host,
        } = answer
            && chain.contains(owner)
        {
            match host {
                // Postfix: an MX with an empty host ends the lookup (dns_get_answer).
                None => return Meaning::NullMx,
                Some(host) => records.push((*preference, host.clone())),
            }
        }
    }
    if !records.is_empty() {
        Meaning::Hosts(records)
    } else if chain.len() > 1 {
        Meaning::Alias(end)
    } else {
        Meaning::NoData
    }
}

/// The query for `name`'s MX records, with recursion desired.
fn query(id: u16, name: &Name) -> Result<Vec<u8>, Failure> {
    let mut packet = Packet::new_query(id);
    packet.set_flags(PacketFlag::RECURSION_DESIRED);
    packet.questions.push(Question::new(
        name.clone(),
        QTYPE::TYPE(TYPE::MX),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    packet
        .build_bytes_vec()
        .map_err(|e| Failure::Io(format!("cannot build the query: {e}")))
}

/// A fresh query ID from the operating system's random source.
fn random_id() -> Result<u16, Failure> {
    let mut bytes = [0u8; 2];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| Failure::Io(format!("no random query ID: {e}")))?;
    Ok(u16::from_be_bytes(bytes))
}

/// `bytes` as the reply to query `id` for `name`'s MX records, or why it is not one.
fn parse_reply(bytes: &[u8], id: u16, name: &Name) -> Result<Reply, String> {
    if bytes.len() < 12 {
        return Err(format!("{} bytes, shorter than a DNS header", bytes.len()));
    }
    let got = u16::from_be_bytes([bytes[0], bytes[1]]);
    if got != id {
        return Err(format!("ID {got}, not the query's {id}"));
    }
    // Each question takes at least 5 bytes, each record 11: refuse counts that cannot
    // fit before the parser reserves room for them.
    let count = |at: usize| usize::from(u16::from_be_bytes([bytes[at], bytes[at + 1]]));
    let least = 12 + 5 * count(4) + 11 * (count(6) + count(8) + count(10));
    if least > bytes.len() {
        return Err(format!(
            "section counts that need {least} bytes in a {}-byte message",
            bytes.len()
        ));
    }
    let packet = Packet::parse(bytes).map_err(|e| format!("malformed: {e}"))?;
    if !packet.has_flags(PacketFlag::RESPONSE) {
        return Err("a query, not a response (QR bit clear)".into());
    }
    if packet.opcode() != OPCODE::StandardQuery {
        return Err(format!(
            "opcode {:?}, not a standard query",
            packet.opcode()
        ));
    }
    match packet.questions.as_slice() {
        [q] if q.qname == *name
            && q.qtype == QTYPE::TYPE(TYPE::MX)
            && q.qclass == QCLASS::CLASS(CLASS::IN)
            && !q.unicast_response => {}
        [q] => {
            return Err(format!(
                "the answer to another question ({} {:?})",
                q.qname, q.qtype
            ));
        }
        qs => return Err(format!("{} questions, not the query's one", qs.len())),
    }
    let lower = |n: &Name| n.to_string().to_ascii_lowercase();
    let answers = packet
        .answers
        .iter()
        .filter(|rr| rr.class == CLASS::IN)
        .filter_map(|rr| match &rr.rdata {
            RData::MX(mx) => Some(Answer::Mx {
                owner: lower(&rr.name),
                preference: mx.preference,
                host: (!mx.exchange.get_labels().is_empty()).then(|| lower(&mx.exchange)),
            }),
            RData::CNAME(cname) => Some(Answer::Cname {
                owner: lower(&rr.name),
                target: lower(&cname.0),
            }),
            _ => None,
        })
        .collect();
    Ok(Reply {
        rcode: packet.rcode(),
        truncated: packet.has_flags(PacketFlag::TRUNCATION),
        answers,
    })
}

/// Why one exchange with a nameserver gave no reply.
#[derive(Debug)]
enum Failure {
    /// Nothing usable in the time given.
    NoAnswer,
    /// The server cannot be asked: a reason to stop asking it.
    Io(String),
}

fn io_failure(e: &io::Error) -> Failure {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Failure::NoAnswer,
        _ => Failure::Io(reason(e)),
    }
}

/// Replies not accepted: how many, and why the last was not.
#[derive(Debug, Default)]
struct Ignored(Option<(usize, String)>);

impl Ignored {
    fn note(&mut self, server: SocketAddr, why: String) {
        tracing::debug!("ignoring a reply from {server}: {why}");
        let n = self.0.as_ref().map_or(0, |(n, _)| *n);
        self.0 = Some((n + 1, why));
    }
}

/// Asks the nameservers in turn for `name`'s MX records until one replies NOERROR or
/// NXDOMAIN. Each try waits for an equal share of the time left; a server that
/// answers with another code, or cannot be reached, is not asked again.
fn ask(
    servers: &[SocketAddr],
    name: &str,
    domain: &str,
    deadline: Instant,
    timeout: Duration,
) -> Result<Reply, MxError> {
    let qname = Name::new(name).map_err(|e| MxError::InvalidDomain {
        domain: domain.to_string(),
        reason: e.to_string(),
    })?;
    let tries: Vec<usize> = (0..ROUNDS).flat_map(|_| 0..servers.len()).collect();
    let mut given_up = vec![false; servers.len()];
    let mut failure = None;
    let mut ignored = Ignored::default();
    for (i, &s) in tries.iter().enumerate() {
        if given_up[s] {
            continue;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let left = tries[i..].iter().filter(|&&t| !given_up[t]).count() as u32;
        let until = now + (deadline - now) / left;
        let server = servers[s];
        tracing::debug!("asking {server} for the MX records of {name}");
        let result = match udp_exchange(server, &qname, until, &mut ignored) {
            Ok(reply) if reply.truncated => {
                tracing::debug!("{server}: truncated reply; asking again over TCP");
                tcp_exchange(server, &qname, deadline)
            }
            other => other,
        };
        match result {
            Ok(reply) if matches!(reply.rcode, RCODE::NoError | RCODE::NameError) => {
                return Ok(reply);
            }
            Ok(reply) => {
                given_up[s] = true;
                failure = Some(MxError::ServerError {
                    domain: domain.to_string(),
                    server,
                    rcode: rcode_name(reply.rcode),
                });
            }
            Err(Failure::NoAnswer) => {}
            Err(Failure::Io(error)) => {
                given_up[s] = true;
                failure = Some(MxError::Unreachable {
                    domain: domain.to_string(),
                    server,
                    error,
                });
            }
        }
    }
    Err(failure.unwrap_or_else(|| MxError::TimedOut {
        domain: domain.to_string(),
        after: timeout,
        servers: servers.to_vec(),
        ignored: ignored.0,
    }))
}

fn rcode_name(rcode: RCODE) -> String {
    match rcode {
        RCODE::NoError => "NOERROR".into(),
        RCODE::FormatError => "FORMERR".into(),
        RCODE::ServerFailure => "SERVFAIL".into(),
        RCODE::NameError => "NXDOMAIN".into(),
        RCODE::NotImplemented => "NOTIMP".into(),
        RCODE::Refused => "REFUSED".into(),
        other => format!("error code {other:?}"),
    }
}

/// One query over UDP, waiting until `until` for a reply that is accepted.
fn udp_exchange(
    server: SocketAddr,
    name: &Name,
    until: Instant,
    ignored: &mut Ignored,
) -> Result<Reply, Failure> {
    let local = match server {
        SocketAddr::V4(_) => SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0),
        SocketAddr::V6(_) => SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0),
    };
    let socket = UdpSocket::bind(local).map_err(|e| Failure::Io(reason(&e)))?;
    // Connected: the kernel delivers only datagrams from the server's address and port.
    socket
        .connect(server)
        .map_err(|e| Failure::Io(reason(&e)))?;
    let id = random_id()?;
    socket
        .send(&query(id, name)?)
        .map_err(|e| Failure::Io(reason(&e)))?;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::NoAnswer);
        }
        socket
            .set_read_timeout(Some(left))
            .map_err(|e| Failure::Io(reason(&e)))?;
        match socket.recv(&mut buf) {
            Ok(n) => match parse_reply(&buf[..n], id, name) {
                Ok(reply) => return Ok(reply),
                Err(why) => ignored.note(server, why),
            },
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_failure(&e)),
        }
    }
}

/// One query over TCP (after a truncated UDP reply), until `deadline`.
fn tcp_exchange(server: SocketAddr, name: &Name, deadline: Instant) -> Result<Reply, Failure> {
    let left = || match deadline.saturating_duration_since(Instant::now()) {
        d if d.is_zero() => Err(Failure::NoAnswer),
        d => Ok(d),
    };
    let tcp = |e: &io::Error| match io_failure(e) {
        Failure::Io(why) => Failure::Io(format!("TCP: {why}")),
        other => other,
    };
    let mut stream = TcpStream::connect_timeout(&server, left()?).map_err(|e| tcp(&e))?;
    let id = random_id()?;
    let query = query(id, name)?;
    let mut message = Vec::with_capacity(2 + query.len());
    message.extend_from_slice(&(query.len() as u16).to_be_bytes());
    message.extend_from_slice(&query);
    stream
        .set_write_timeout(Some(left()?))
        .map_err(|e| tcp(&e))?;
    stream.write_all(&message).map_err(|e| tcp(&e))?;
    let mut read_exact = |buf: &mut [u8]| -> Result<(), Failure> {
        let mut filled = 0;
        while filled < buf.len() {
            stream
                .set_read_timeout(Some(left()?))
                .map_err(|e| tcp(&e))?;
            match stream.read(&mut buf[filled..]) {
                Ok(0) => {
                    return Err(Failure::Io(
                        "TCP: connection closed before the reply".into(),
                    ));
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(tcp(&e)),
            }
        }
        Ok(())
    };
    let mut length = [0u8; 2];
    read_exact(&mut length)?;
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(length))];
    read_exact(&mut reply)?;
    parse_reply(&reply, id, name).map_err(|why| Failure::Io(format!("TCP: unusable reply: {why}")))
}

#[cfg(test)]
mod tests;
