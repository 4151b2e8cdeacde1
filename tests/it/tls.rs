//! Live: the certificate-checking TLS levels (`secure`, `verify`) on a running Postfix
//! configured only by `postrelay apply`, against fake relays named by host name
//! (`relay = "[localhost]:PORT"`, so `secure` is the default level) that present a
//! certificate the test chose (`harness/tls.rs`): one a test CA issued for `localhost`,
//! one it issued for another name, a self-signed one.
//!
//! Each instance's main.cf names the test CA (`smtp_tls_CAfile`) before the first
//! apply, as an administrator with a private CA would: postrelay keeps a configured CA
//! (`plan.rs`, `ca_file`), and each test checks that it did. What each test proves is
//! observed on the wire and in the mail log, not inferred from the files: whether the
//! relay saw a TLS handshake, any AUTH command at all, which user and password, and
//! whether Postfix logged the connection `Verified`. A relay whose certificate fails
//! the check never sees the password: Postfix checks the certificate right after the
//! handshake and defers the message before it authenticates.
//!
//! Postfix's rules (postconf(5), `smtp_tls_policy_maps`, `smtp_tls_secure_cert_match`,
//! `smtp_tls_verify_cert_match`): `secure` matches the certificate against the next hop
//! (`nexthop, dot-nexthop`: the relay's host name or a subdomain of it); `verify`
//! against the server's host name (`hostname`), which for a next hop in brackets (no
//! MX lookup) is the next hop itself. So for `[localhost]:PORT` both levels check for
//! `localhost`, and differ only in that `secure` also accepts a subdomain
//! (`mx.localhost`); the tests show both.
//!
//! Every apply runs twice: the second prints "no changes" and leaves every file's
//! bytes, inode and mtime alone ([`Host::apply_twice`](crate::harness::Host::apply_twice)).

use std::time::{Duration, Instant};

use crate::harness::tls::{Leaf, TestCa};
use crate::harness::{Need, pw};
use crate::instance::{Instance, Queued, WAIT, message_id};
use crate::relay::{Accepted, FakeRelay, RelayConfig};
use crate::require;

/// The recipient of every test message.
const TO: &str = "rcpt@remote.example";

/// One sender domain with its own relay, named by host name, and its level (None: the
/// default, `secure`).
struct Route<'a> {
    domain: &'a str,
    relay: &'a FakeRelay,
    tls: Option<&'a str>,
    user: String,
    password: String,
}

impl<'a> Route<'a> {
    fn new(domain: &'a str, relay: &'a FakeRelay, tls: Option<&'a str>) -> Route<'a> {
        Route {
            domain,
            relay,
            tls,
            user: format!("user@{domain}"),
            password: pw(domain),
        }
    }

    /// The relay accepting this route's credentials, presenting `certificate`.
    fn relay_config(domain: &str, certificate: Leaf) -> RelayConfig {
        RelayConfig::user(&format!("user@{domain}"), &pw(domain)).presenting(certificate)
    }

    fn sender(&self) -> String {
        format!("sender@{}", self.domain)
    }

    /// The tls_policy key: the relay as written.
    fn key(&self) -> String {
        self.relay.relay_by_name()
    }
}

/// The desired-state file for `routes`.
fn desired(routes: &[&Route]) -> String {
    let mut toml = String::new();
    for r in routes {
        toml += &format!(
            "[[sender]]\ndomain = \"{}\"\nrelay = \"{}\"\nusername = \"{}\"\npassword = \"{}\"\n",
            r.domain,
            r.key(),
            r.user,
            r.password
        );
        if let Some(level) = r.tls {
            toml += &format!("tls = \"{level}\"\n");
        }
        toml += "\n";
    }
    toml
}

/// A stopped instance whose main.cf trusts `ca` (`smtp_tls_CAfile` = its certificate,
/// written under the temp dir); the path.
fn instance_trusting(ca: &TestCa) -> (Instance, String) {
    let inst = Instance::new();
    let pem = inst.tmp.path().join("test-ca.pem");
    ca.write_pem(&pem);
    let pem = pem.display().to_string();
    inst.edit_main_cf(|text| format!("{text}smtp_tls_CAfile = {pem}\n"));
    (inst, pem)
}

/// An instance trusting `ca`, configured for `routes` by `postrelay apply` (twice), then
/// started; checks that tls_policy holds each route's level and that the CA stayed.
fn running(ca: &TestCa, routes: &[&Route]) -> Instance {
    let (mut inst, pem) = instance_trusting(ca);
    inst.desired(&desired(routes));
    inst.apply_twice();
    assert_policies(&inst, routes);
    assert_eq!(
        inst.postconf().get("smtp_tls_CAfile"),
        pem,
        "postrelay changed the configured CA"
    );
    inst.start();
    inst
}

/// `postmap -q` finds each route's level in tls_policy under the relay as written.
#[track_caller]
fn assert_policies(inst: &Instance, routes: &[&Route]) {
    for r in routes {
        assert_eq!(
            inst.postmap_q("hash", "tls_policy", &r.key()).as_deref(),
            Some(r.tls.unwrap_or("secure")),
            "tls_policy entry for {}",
            r.key()
        );
    }
}

/// The lines of the mail log, from byte `from` on, holding every one of `needles`.
fn log_lines_from(inst: &Instance, from: usize, needles: &[&str]) -> Vec<String> {
    inst.maillog()
        .get(from..)
        .unwrap_or_default()
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_string)
        .collect()
}

/// The mail log's lines holding every one of `needles`.
fn log_lines(inst: &Instance, needles: &[&str]) -> Vec<String> {
    log_lines_from(inst, 0, needles)
}

/// Waits (up to [`WAIT`]) until the mail log, from byte `from` on, has a line holding
/// every one of `needles`; all such lines. Postfix's daemons log through postlogd, a
/// datagram away: a line can land after the relay saw the message or the queue shows
/// the deferral.
#[track_caller]
fn wait_log(inst: &Instance, from: usize, needles: &[&str]) -> Vec<String> {
    let start = Instant::now();
    loop {
        let lines = log_lines_from(inst, from, needles);
        if !lines.is_empty() {
            return lines;
        }
        assert!(
            start.elapsed() < WAIT,
            "no mail log line with {needles:?} within {WAIT:?}\n{}",
            inst.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `localhost[127.0.0.1]:PORT`, as Postfix names the relay in its log.
fn logged_peer(relay: &FakeRelay) -> String {
    format!("localhost[127.0.0.1]:{}", relay.port())
}

/// Waits until `relay` records the message `id`, running `postqueue -f` every 5 s;
/// fails with the queue and the mail log on timeout. (Unlike
/// [`Instance::expect_on`], other messages may sit deferred meanwhile.)
fn wait_delivered(inst: &Instance, relay: &FakeRelay, id: &str) -> Accepted {
    let start = Instant::now();
    loop {
        if let Some(m) = relay.wait_for_message(id, Duration::from_secs(5)) {
            return m;
        }
        assert!(
            start.elapsed() < WAIT,
            "<{id}> did not reach the relay on port {} within {WAIT:?}\n{}",
            relay.port(),
            inst.diagnostics()
        );
        inst.flush();
    }
}

/// `m` came from `route`'s sender and authenticated with its credentials under TLS.
#[track_caller]
fn assert_delivered_as(m: &Accepted, route: &Route) {
    assert_eq!(m.port, route.relay.port(), "{m:#?}");
    assert_eq!(m.mail_from, route.sender(), "{m:#?}");
    assert_eq!(m.rcpt_to, [TO], "{m:#?}");
    assert_eq!(m.auth_user.as_deref(), Some(route.user.as_str()), "{m:#?}");
    assert_eq!(
        m.auth_password.as_deref(),
        Some(route.password.as_str()),
        "{m:#?}"
    );
    assert!(m.tls_at_auth, "credentials sent without TLS: {m:#?}");
}

/// Sends a message from `route`'s sender; its Message-ID.
fn send(inst: &Instance, route: &Route) -> String {
    let id = message_id(route.domain);
    inst.send(&route.sender(), &[TO], &id);
    id
}

/// The message was delivered through `route` with its credentials over TLS, the
/// relay's every AUTH was under TLS and accepted, and Postfix logged the connection
/// as `Verified` (the chain trusted and the name matched).
#[track_caller]
fn assert_verified_delivery(inst: &Instance, route: &Route, id: &str) {
    let m = wait_delivered(inst, route.relay, id);
    assert_delivered_as(&m, route);
    for a in route.relay.auth_attempts() {
        assert!(a.ok && a.tls, "relay {}: {a:?}", route.relay.port());
    }
    let peer = logged_peer(route.relay);
    let verified = wait_log(
        inst,
        0,
        &[&format!("Verified TLS connection established to {peer}")],
    );
    wait_log(inst, 0, &[&format!("relay={peer}"), "status=sent"]);
    assert!(
        log_lines(inst, &[&peer, "verification failed"]).is_empty(),
        "{}",
        inst.diagnostics()
    );
    assert_eq!(
        log_lines(inst, &[&format!("relay={peer}"), "status=sent"]).len(),
        1,
        "{}",
        inst.diagnostics()
    );
    eprintln!(
        "tls {} ({}): relay got {:?}; {}",
        route.domain,
        route.tls.unwrap_or("secure"),
        transcript(route.relay),
        after_pid(&verified[0])
    );
}

/// What each connection to `relay` sent, one line per connection: the verbs, with
/// `[TLS]` where the handshake completed (`EHLO STARTTLS [TLS] QUIT`).
fn transcript(relay: &FakeRelay) -> Vec<String> {
    let verbs = relay.verbs();
    let mut conns: Vec<u64> = verbs.iter().map(|v| v.conn).collect();
    conns.sort_unstable();
    conns.dedup();
    conns
        .into_iter()
        .map(|conn| {
            let mut line = Vec::new();
            let mut tls = false;
            for v in verbs.iter().filter(|v| v.conn == conn) {
                if v.tls && !tls {
                    line.push("[TLS]".to_string());
                    tls = true;
                }
                line.push(v.verb.clone());
            }
            line.join(" ")
        })
        .collect()
}

/// A mail log line from the `]: ` after the process id on.
fn after_pid(line: &str) -> &str {
    line.split_once("]: ").map_or(line, |(_, rest)| rest)
}

/// The message from `route`'s sender is deferred because of the relay's certificate
/// (the mail log names `cause`), after a completed TLS handshake and before any AUTH:
/// under TLS the relay got nothing but `QUIT`, so no AUTH command, no password, no
/// message.
#[track_caller]
fn assert_deferred_for_certificate(inst: &Instance, route: &Route, cause: &str) {
    let q: Queued = inst.wait_deferred(&route.sender(), WAIT);
    assert_eq!(
        q.recipients[0].delay_reason.as_deref(),
        Some("Server certificate not verified"),
        "{}",
        inst.diagnostics()
    );
    let relay = route.relay;
    // The relay notes the handshake as it ends; Postfix may have moved on already.
    let start = Instant::now();
    while relay.handshakes().is_empty() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !relay.handshakes().is_empty(),
        "Postfix completed no TLS handshake with the relay on port {}: the deferral proves nothing about the certificate\n{}",
        relay.port(),
        inst.diagnostics()
    );
    let transcript = transcript(relay);
    assert!(
        relay.verbs().iter().all(|v| !v.tls || v.verb == "QUIT"),
        "the relay on port {} got more than QUIT under TLS: {transcript:?}",
        relay.port()
    );
    assert!(
        relay.auth_attempts().is_empty() && relay.verbs().iter().all(|v| v.verb != "AUTH"),
        "AUTH reached a relay whose certificate failed: {transcript:?}"
    );
    assert!(relay.messages().is_empty(), "{:?}", relay.messages());
    let peer = logged_peer(relay);
    let deferred = wait_log(inst, 0, &[&format!("relay={peer}"), "status="]);
    assert!(
        !deferred.is_empty()
            && deferred.iter().all(|l| {
                l.contains("dsn=4.7.5, status=deferred (Server certificate not verified)")
            }),
        "{deferred:#?}\n{}",
        inst.diagnostics()
    );
    let failed = wait_log(
        inst,
        0,
        &[&format!("verification failed for {peer}: "), cause],
    );
    eprintln!(
        "tls {} ({}): relay got {transcript:?}; {}; {}",
        route.domain,
        route.tls.unwrap_or("secure"),
        after_pid(&failed[0]),
        after_pid(&deferred[0])
    );
}

/// Nothing bounced: no `status=bounced` in the mail log and no bounce (null sender)
/// in the queue or at any relay.
#[track_caller]
fn assert_nothing_bounced(inst: &Instance, relays: &[&FakeRelay]) {
    assert!(
        log_lines(inst, &["status=bounced"]).is_empty(),
        "{}",
        inst.diagnostics()
    );
    assert!(inst.queue().iter().all(|m| !m.sender.is_empty()));
    for r in relays {
        assert!(r.messages().iter().all(|m| !m.mail_from.is_empty()));
    }
}

/// A relay named by host name, at the default level (`secure`) and at `verify`,
/// presenting a certificate the trusted test CA issued for `localhost`: the message
/// goes through with the right credentials over a connection Postfix logs as
/// `Verified`.
#[test]
fn tls_secure_and_verify_deliver_to_a_relay_with_a_certificate_for_its_name() {
    require!(Need::Live);
    let ca = TestCa::new("postrelay test CA");
    let cert = || ca.issue(&["localhost"]);
    let a = FakeRelay::start(Route::relay_config("secure.test", cert()));
    let b = FakeRelay::start(Route::relay_config("verify.test", cert()));
    let secure = Route::new("secure.test", &a, None);
    let verify = Route::new("verify.test", &b, Some("verify"));
    let inst = running(&ca, &[&secure, &verify]);

    for route in [&secure, &verify] {
        let id = send(&inst, route);
        assert_verified_delivery(&inst, route, &id);
        assert_eq!(route.relay.messages().len(), 1);
    }
    assert_nothing_bounced(&inst, &[&a, &b]);
    assert!(inst.queue().is_empty(), "{:?}", inst.queue());
}

/// A relay presenting a self-signed certificate (`CN=attacker.invalid`) at the default
/// level (`secure`): the message is deferred for the certificate and the relay never
/// sees an AUTH command; nothing bounces. Changing that relay to `tls = "encrypt"`
/// (which does not check certificates) and flushing the queue delivers it, with the
/// credentials under TLS: the level alone made the difference.
#[test]
fn tls_secure_defers_a_self_signed_relay_until_encrypt_is_chosen() {
    require!(Need::Live);
    let ca = TestCa::new("postrelay test CA");
    let attacker = Leaf::self_signed("attacker.invalid", &["attacker.invalid"]);
    let r = FakeRelay::start(Route::relay_config("selfsigned.test", attacker));
    let secure = Route::new("selfsigned.test", &r, None);
    let inst = running(&ca, &[&secure]);

    let id = send(&inst, &secure);
    assert_deferred_for_certificate(&inst, &secure, "self-signed certificate");
    assert_nothing_bounced(&inst, &[&r]);
    let queue = inst.queue();
    assert_eq!(queue.len(), 1, "{queue:?}");
    assert_eq!(queue[0].queue_name, "deferred");

    // Only the level changes: the same relay, certificate and credentials.
    let encrypt = Route::new("selfsigned.test", &r, Some("encrypt"));
    inst.desired(&desired(&[&encrypt]));
    let logged_before = inst.maillog().len();
    let etc = inst.etc.display().to_string();
    inst.apply_twice()
        .stdout_has(&format!("ran postfix -c {etc} reload"));
    assert_policies(&inst, &[&encrypt]);
    inst.flush();
    let m = wait_delivered(&inst, &r, &id);
    assert_delivered_as(&m, &encrypt);

    // The mail log since the switch: the same certificate, accepted unverified.
    let peer = logged_peer(&r);
    wait_log(&inst, logged_before, &[&format!("relay={peer}"), "status="]);
    let since = inst.maillog()[logged_before..].to_string();
    let lines =
        |needle: &str| -> Vec<&str> { since.lines().filter(|l| l.contains(needle)).collect() };
    let established = lines(&format!("Untrusted TLS connection established to {peer}"));
    assert_eq!(established.len(), 1, "{since}");
    assert!(lines("verification failed").is_empty(), "{since}");
    let sent: Vec<&str> = lines(&format!("relay={peer}"));
    assert!(
        sent.len() == 1 && sent[0].contains("status=sent"),
        "{since}"
    );
    eprintln!(
        "tls selfsigned.test (encrypt): relay got {:?}; {}; {}",
        transcript(&r),
        after_pid(established[0]),
        after_pid(sent[0])
    );
    assert_nothing_bounced(&inst, &[&r]);
    assert!(inst.queue().is_empty(), "{:?}", inst.queue());
}

/// Certificates the trusted test CA issued for names other than the relay's: for
/// `other.example`, deferred at `secure` and at `verify`, no AUTH; for `mx.localhost`
/// (a subdomain of the relay's name), delivered at `secure` (`dot-nexthop`) and
/// deferred at `verify` (which matches the host name exactly).
#[test]
fn tls_a_certificate_for_another_name_is_refused_a_subdomain_passes_secure_only() {
    require!(Need::Live);
    let ca = TestCa::new("postrelay test CA");
    let relay =
        |domain: &str, name: &str| FakeRelay::start(Route::relay_config(domain, ca.issue(&[name])));
    let (r1, r2) = (
        relay("other-secure.test", "other.example"),
        relay("other-verify.test", "other.example"),
    );
    let (r3, r4) = (
        relay("sub-secure.test", "mx.localhost"),
        relay("sub-verify.test", "mx.localhost"),
    );
    let other_secure = Route::new("other-secure.test", &r1, None);
    let other_verify = Route::new("other-verify.test", &r2, Some("verify"));
    let sub_secure = Route::new("sub-secure.test", &r3, None);
    let sub_verify = Route::new("sub-verify.test", &r4, Some("verify"));
    let all = [&other_secure, &other_verify, &sub_secure, &sub_verify];
    let inst = running(&ca, &all);

    let ids: Vec<String> = all.iter().map(|r| send(&inst, r)).collect();
    for route in [&other_secure, &other_verify, &sub_verify] {
        assert_deferred_for_certificate(&inst, route, "hostname mismatch");
    }
    assert_verified_delivery(&inst, &sub_secure, &ids[2]);
    assert_nothing_bounced(&inst, &[&r1, &r2, &r3, &r4]);
    let queue = inst.queue();
    assert_eq!(queue.len(), 3, "{queue:#?}");
    assert!(queue.iter().all(|m| m.queue_name == "deferred"));
}
