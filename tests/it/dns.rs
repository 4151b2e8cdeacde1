//! `postrelay::dns::mx_hosts` against fake DNS servers on 127.0.0.1 whose answers each
//! test scripts: MX records in preference order, NODATA (the implicit MX), NXDOMAIN, a
//! null MX, a server that never answers, replies that must not be accepted (a wrong
//! ID, another question, another source port), SERVFAIL, an unreachable server, a
//! truncated reply asked again over TCP, and a CNAME.
//!
//! The tests name the fake server to `mx_hosts_from`; `mx_hosts` itself asks the
//! nameservers of /etc/resolv.conf (or, in debug builds, `POSTRELAY_NAMESERVER`, which
//! the verify tests set for the postrelay binary they run).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use simple_dns::rdata::{CNAME, MX, RData};
use simple_dns::{
    CLASS, Name, Packet, PacketFlag, QCLASS, QTYPE, Question, RCODE, ResourceRecord, TYPE,
};

use crate::harness::Need;
use crate::require;

/// What `mx_hosts_from` gave, and how long it took.
#[derive(Debug)]
struct Lookup {
    result: Result<Vec<String>, String>,
    elapsed: Duration,
}

/// `mx_hosts_from(servers, domain, timeout)`, timed, its error as text.
fn lookup(servers: &[SocketAddr], domain: &str, timeout: Duration) -> Lookup {
    let start = Instant::now();
    let result =
        postrelay::dns::mx_hosts_from(servers, domain, timeout).map_err(|e| format!("{e:#}"));
    Lookup {
        result,
        elapsed: start.elapsed(),
    }
}

/// A query the fake server received.
#[derive(Debug, Clone)]
pub struct Asked {
    id: u16,
    pub name: String,
    qtype: QTYPE,
    recursion_desired: bool,
    tcp: bool,
}

/// What the fake server sends back for a query.
pub enum Out {
    Datagram(Vec<u8>),
    /// The same, from another port of 127.0.0.1: a reply the client must drop.
    FromAnotherPort(Vec<u8>),
}

type Script = Box<dyn Fn(&Asked) -> Vec<Out> + Send + Sync>;

/// A DNS server on 127.0.0.1 (UDP, and TCP on the same port when it has a TCP script)
/// that records every query and answers as its script says. Stops when dropped.
pub struct FakeDns {
    pub addr: SocketAddr,
    asked: Arc<Mutex<Vec<Asked>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl FakeDns {
    pub fn start(udp: impl Fn(&Asked) -> Vec<Out> + Send + Sync + 'static) -> FakeDns {
        FakeDns::start_with(Box::new(udp), None)
    }

    fn start_with(udp: Script, tcp: Option<Script>) -> FakeDns {
        // With TCP, the same port number for both: find one free for both.
        let (socket, listener) = (0..50)
            .find_map(|_| {
                let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                if tcp.is_none() {
                    return Some((socket, None));
                }
                let listener = TcpListener::bind(socket.local_addr().unwrap()).ok()?;
                Some((socket, Some(listener)))
            })
            .expect("no port free for both UDP and TCP");
        let addr = socket.local_addr().unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        {
            let (asked, stop) = (asked.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                serve_udp(socket, &udp, &asked, &stop)
            }));
        }
        if let (Some(listener), Some(tcp)) = (listener, tcp) {
            let (asked, stop) = (asked.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                serve_tcp(listener, &tcp, &asked, &stop)
            }));
        }
        FakeDns {
            addr,
            asked,
            stop,
            threads,
        }
    }

    fn asked(&self) -> Vec<Asked> {
        self.asked.lock().unwrap().clone()
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The query in `bytes`, or None for anything else.
fn parse_query(bytes: &[u8], tcp: bool) -> Option<Asked> {
    let p = Packet::parse(bytes).ok()?;
    let q = p.questions.first()?;
    Some(Asked {
        id: p.id(),
        name: q.qname.to_string(),
        qtype: q.qtype,
        recursion_desired: p.has_flags(PacketFlag::RECURSION_DESIRED),
        tcp,
    })
}

fn serve_udp(socket: UdpSocket, script: &Script, asked: &Mutex<Vec<Asked>>, stop: &AtomicBool) {
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let other_port = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::SeqCst) {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let Some(q) = parse_query(&buf[..n], false) else {
            continue;
        };
        asked.lock().unwrap().push(q.clone());
        for out in script(&q) {
            let _ = match out {
                Out::Datagram(bytes) => socket.send_to(&bytes, from),
                Out::FromAnotherPort(bytes) => other_port.send_to(&bytes, from),
            };
        }
    }
}

fn serve_tcp(listener: TcpListener, script: &Script, asked: &Mutex<Vec<Asked>>, stop: &AtomicBool) {
    listener.set_nonblocking(true).unwrap();
    while !stop.load(Ordering::SeqCst) {
        let Ok((mut stream, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).is_err() {
            continue;
        }
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if stream.read_exact(&mut query).is_err() {
            continue;
        }
        let Some(q) = parse_query(&query, true) else {
            continue;
        };
        asked.lock().unwrap().push(q.clone());
        for out in script(&q) {
            if let Out::Datagram(bytes) = out {
                write_tcp(&mut stream, &bytes);
            }
        }
    }
}

fn write_tcp(stream: &mut TcpStream, bytes: &[u8]) {
    let mut message = (bytes.len() as u16).to_be_bytes().to_vec();
    message.extend_from_slice(bytes);
    let _ = stream.write_all(&message);
}

/// A reply to `q` as a recursive server gives it: same ID and question, QR, RD, RA.
pub fn reply(q: &Asked, rcode: RCODE, answers: Vec<ResourceRecord<'_>>) -> Vec<u8> {
    reply_as(q.id, &q.name, rcode, answers)
}

fn reply_as(id: u16, name: &str, rcode: RCODE, answers: Vec<ResourceRecord<'_>>) -> Vec<u8> {
    let mut p = Packet::new_reply(id);
    p.set_flags(PacketFlag::RECURSION_DESIRED | PacketFlag::RECURSION_AVAILABLE);
    p.questions.push(Question::new(
        Name::new_unchecked(name),
        QTYPE::TYPE(TYPE::MX),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    *p.rcode_mut() = rcode;
    p.answers = answers;
    p.build_bytes_vec_compressed().unwrap()
}

fn mx<'a>(owner: &'a str, preference: u16, host: &'a str) -> ResourceRecord<'a> {
    let rdata = RData::MX(MX {
        preference,
        exchange: Name::new_unchecked(host),
    });
    ResourceRecord::new(Name::new_unchecked(owner), CLASS::IN, 300, rdata)
}

/// A reply to `q` with these MX records for the name asked.
pub fn mx_reply(q: &Asked, records: &[(u16, &str)]) -> Vec<u8> {
    let answers = records.iter().map(|(p, h)| mx(&q.name, *p, h)).collect();
    reply(q, RCODE::NoError, answers)
}

fn ok(l: &Lookup) -> Vec<&str> {
    match &l.result {
        Ok(hosts) => hosts.iter().map(String::as_str).collect(),
        Err(e) => panic!("lookup failed: {e}"),
    }
}

fn err(l: &Lookup) -> &str {
    match &l.result {
        Ok(hosts) => panic!("lookup succeeded: {hosts:?}"),
        Err(e) => e,
    }
}

const TIMEOUT: Duration = Duration::from_secs(5);

#[test]
fn mx_hosts_come_in_preference_order() {
    require!(Need::DebugBuild);
    let dns = FakeDns::start(|q| {
        vec![Out::Datagram(mx_reply(
            q,
            &[
                (20, "mx2.relay.test"),
                (10, "mx1-b.relay.test"),
                (30, "backup.elsewhere.test"),
                (10, "MX1-A.relay.test"),
            ],
        ))]
    });
    let l = lookup(&[dns.addr], "Relay.Test", TIMEOUT);
    assert_eq!(
        ok(&l),
        [
            "mx1-a.relay.test",
            "mx1-b.relay.test",
            "mx2.relay.test",
            "backup.elsewhere.test"
        ]
    );
    let asked = dns.asked();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].name, "relay.test");
    assert_eq!(asked[0].qtype, QTYPE::TYPE(TYPE::MX));
    assert!(asked[0].recursion_desired && !asked[0].tcp);
}

#[test]
fn no_mx_record_means_the_domain_itself() {
    require!(Need::DebugBuild);
    let dns = FakeDns::start(|q| vec![Out::Datagram(reply(q, RCODE::NoError, vec![]))]);
    let l = lookup(&[dns.addr], "nodata.test", TIMEOUT);
    assert_eq!(ok(&l), ["nodata.test"]);
}

#[test]
fn nxdomain_is_an_error_naming_the_domain() {
    require!(Need::DebugBuild);
    let dns = FakeDns::start(|q| vec![Out::Datagram(reply(q, RCODE::NameError, vec![]))]);
    let l = lookup(&[dns.addr], "gone.test", TIMEOUT);
    assert_eq!(err(&l), "gone.test: no such domain (NXDOMAIN)");
}

#[test]
fn a_null_mx_is_an_error_the_domain_accepts_no_mail() {
    require!(Need::DebugBuild);
    let dns = FakeDns::start(|q| vec![Out::Datagram(mx_reply(q, &[(0, ".")]))]);
    let l = lookup(&[dns.addr], "nomail.test", TIMEOUT);
    assert_eq!(
        err(&l),
        "nomail.test: domain accepts no mail (null MX record, RFC 7505)"
    );
}

#[test]
fn a_silent_nameserver_is_an_error_within_the_timeout() {
    require!(Need::DebugBuild);
    let dns = FakeDns::start(|_| vec![]);
    let timeout = Duration::from_millis(1200);
    let l = lookup(&[dns.addr], "silent.test", timeout);
    assert_eq!(
        err(&l),
        format!(
            "MX lookup of silent.test timed out: no answer from {} within 1.2 s",
            dns.addr
        )
    );
    // The whole lookup, both tries included, ends at the timeout.
    assert!(
        l.elapsed >= timeout - Duration::from_millis(20)
            && l.elapsed < timeout + Duration::from_secs(1),
        "took {:?}",
        l.elapsed
    );
    let asked = dns.asked();
    assert_eq!(asked.len(), 2, "asked again once: {asked:?}");
    assert_ne!(asked[0].id, asked[1].id, "each query has its own ID");
}

#[test]
fn replies_with_a_wrong_id_for_another_question_or_from_another_port_are_ignored() {
    require!(Need::DebugBuild);
    let evil = |id: u16, name: &str| {
        reply_as(
            id,
            name,
            RCODE::NoError,
            vec![mx(name, 0, "evil.attacker.test")],
        )
    };
    let dns = FakeDns::start(move |q| {
        vec![
            Out::Datagram(evil(q.id.wrapping_add(1), &q.name)),
            Out::Datagram(evil(q.id, "other.test")),
            Out::FromAnotherPort(evil(q.id, &q.name)),
            Out::Datagram(mx_reply(q, &[(10, "mx.good.test")])),
        ]
    });
    let l = lookup(&[dns.addr], "good.test", TIMEOUT);
    assert_eq!(ok(&l), ["mx.good.test"]);
    assert_eq!(dns.asked().len(), 1);

    // Nothing but such replies: nothing is accepted, and the lookup times out saying why.
    let dns = FakeDns::start(move |q| {
        vec![
            Out::Datagram(evil(q.id.wrapping_add(1), &q.name)),
            Out::FromAnotherPort(evil(q.id, &q.name)),
            Out::Datagram(evil(q.id, "other.test")),
        ]
    });
    let l = lookup(&[dns.addr], "good.test", Duration::from_secs(1));
    assert_eq!(
        err(&l),
        format!(
            "MX lookup of good.test timed out: no answer from {} within 1 s (4 replies ignored, the last: the answer to another question (other.test TYPE(MX)))",
            dns.addr
        )
    );
}

#[test]
fn servfail_moves_on_to_the_next_nameserver_and_from_all_is_an_error() {
    require!(Need::DebugBuild);
    let failing = FakeDns::start(|q| vec![Out::Datagram(reply(q, RCODE::ServerFailure, vec![]))]);
    let working = FakeDns::start(|q| vec![Out::Datagram(mx_reply(q, &[(5, "mx.two.test")]))]);
    let l = lookup(&[failing.addr, working.addr], "two.test", TIMEOUT);
    assert_eq!(ok(&l), ["mx.two.test"]);

    let l = lookup(&[failing.addr], "two.test", TIMEOUT);
    assert_eq!(
        err(&l),
        format!(
            "MX lookup of two.test failed: nameserver {} answered SERVFAIL",
            failing.addr
        )
    );
    assert_eq!(
        failing.asked().len(),
        2,
        "a failing server is not asked again"
    );
    assert!(l.elapsed < Duration::from_secs(1), "took {:?}", l.elapsed);
}

#[test]
fn an_unreachable_nameserver_is_an_error_without_waiting() {
    require!(Need::DebugBuild);
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let l = lookup(&[port], "down.test", TIMEOUT);
    assert_eq!(
        err(&l),
        format!("MX lookup of down.test failed: nameserver {port}: Connection refused")
    );
    assert!(l.elapsed < Duration::from_secs(1), "took {:?}", l.elapsed);
}

#[test]
fn a_truncated_reply_is_asked_again_over_tcp() {
    require!(Need::DebugBuild);
    let dns = FakeDns::start_with(
        Box::new(|q| {
            let mut bytes = reply(q, RCODE::NoError, vec![]);
            bytes[2] |= 0x02; // TC
            vec![Out::Datagram(bytes)]
        }),
        Some(Box::new(|q| {
            let many: Vec<(u16, String)> =
                (0..40).map(|i| (i, format!("mx{i:02}.big.test"))).collect();
            let many: Vec<(u16, &str)> = many.iter().map(|(p, h)| (*p, h.as_str())).collect();
            vec![Out::Datagram(mx_reply(q, &many))]
        })),
    );
    let l = lookup(&[dns.addr], "big.test", TIMEOUT);
    let hosts = ok(&l);
    assert_eq!(hosts.len(), 40);
    assert_eq!((hosts[0], hosts[39]), ("mx00.big.test", "mx39.big.test"));
    let transports: Vec<bool> = dns.asked().iter().map(|a| a.tcp).collect();
    assert_eq!(transports, [false, true], "UDP, then TCP");
}

#[test]
fn an_alias_is_asked_for_again() {
    require!(Need::DebugBuild);
    let dns = FakeDns::start(|q| {
        let answer = if q.name == "alias.test" {
            let target = RData::CNAME(CNAME(Name::new_unchecked("target.test")));
            let record =
                ResourceRecord::new(Name::new_unchecked("alias.test"), CLASS::IN, 60, target);
            reply(q, RCODE::NoError, vec![record])
        } else {
            mx_reply(q, &[(10, "mx.target.test")])
        };
        vec![Out::Datagram(answer)]
    });
    let l = lookup(&[dns.addr], "alias.test", TIMEOUT);
    assert_eq!(ok(&l), ["mx.target.test"]);
    let names: Vec<String> = dns.asked().into_iter().map(|a| a.name).collect();
    assert_eq!(names, ["alias.test", "target.test"]);
}
