//! `postrelay verify` and `apply --verify` against fake relays on 127.0.0.1: good
//! credentials, a wrong password, a relay that is down, a relay without STARTTLS under
//! `tls = "encrypt"`; no mail is sent and no password is printed.

use std::net::TcpListener;

use simple_dns::RCODE;

use crate::dns::{FakeDns, Out, mx_reply, reply};
use crate::harness::{CANARY, CANARY2, Host, Need, Run, closed_port};
use crate::relay::{FakeRelay, RelayConfig};
use crate::require;

fn relay(starttls: bool, user: &str, password: &str) -> FakeRelay {
    FakeRelay::start(RelayConfig {
        starttls,
        ..RelayConfig::user(user, password)
    })
}

fn verify(host: &Host, extra: &[&str]) -> Run {
    host.cmd("verify").args(extra).run()
}

#[test]
fn verify_reports_each_sender_relay_pair() {
    let good = relay(true, "good@example.com", CANARY);
    let wrong = relay(true, "wrong@example.org", "another-password");
    let plain = relay(false, "plain@example.net", CANARY);
    let catch_all = relay(true, "catchall", CANARY2);
    let down = closed_port();
    let host = Host::new("");
    host.desired(&format!(
        r#"
[relayhost]
relay = "{catch_all}"
username = "catchall"
password = "{CANARY2}"

[[sender]]
domain = "example.com"
relay = "{good}"
username = "good@example.com"
password = "{CANARY}"

[[sender]]
domain = "example.org"
relay = "{wrong}"
username = "wrong@example.org"
password = "{CANARY}"

[[sender]]
domain = "example.net"
relay = "{plain}"
username = "plain@example.net"
password = "{CANARY}"

[[sender]]
domain = "down.example"
relay = "[127.0.0.1]:{down}"
username = "down"
password = "{CANARY}"

[[sender]]
address = "wes@example.com"
username = "catchall"
password = "{CANARY2}"
"#,
        catch_all = catch_all.relay(),
        good = good.relay(),
        wrong = wrong.relay(),
        plain = plain.relay(),
    ));
    let run = verify(&host, &["--timeout", "5"]);
    // Shown with --nocapture: what an operator sees.
    eprintln!("$ postrelay verify --timeout 5\n{}", run.stdout);
    run.code(1);
    let line = |who: &str| -> String {
        run.stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(who))
            .unwrap_or_else(|| panic!("no line for {who}:\n{}", run.stdout))
            .to_string()
    };
    assert_eq!(
        line("relayhost"),
        format!(
            "ok      relayhost via {} as catchall (STARTTLS, AUTH PLAIN)",
            catch_all.relay()
        )
    );
    assert!(line("@example.com").starts_with("ok "), "{}", run.stdout);
    let wrong_line = line("@example.org");
    assert!(
        wrong_line.starts_with("FAILED  @example.org"),
        "{wrong_line}"
    );
    assert!(
        wrong_line.contains("authentication failed") && wrong_line.contains("535"),
        "{wrong_line}"
    );
    let plain_line = line("@example.net");
    assert!(
        plain_line.contains("does not offer STARTTLS; no password was sent"),
        "{plain_line}"
    );
    let down_line = line("@down.example");
    assert!(down_line.contains("Connection refused"), "{down_line}");
    // An address without a relay of its own is checked against the relayhost.
    assert_eq!(
        line("wes@example.com"),
        format!(
            "ok      wes@example.com via {} as catchall (STARTTLS, AUTH PLAIN)",
            catch_all.relay()
        )
    );
    assert!(
        // wes@ shares the relayhost's relay and credentials: one login for both.
        run.stdout
            .ends_with("verify: 6 checked, 3 failed (5 logins)\n"),
        "{}",
        run.stdout
    );

    // What the relays saw: TLS before AUTH, the right secrets, no mail at all.
    let attempts = good.auth_attempts();
    assert_eq!(attempts.len(), 1);
    assert!(attempts[0].tls && attempts[0].ok && attempts[0].password == CANARY);
    assert!(!wrong.auth_attempts()[0].ok);
    assert_eq!(
        catch_all.auth_attempts().len(),
        1,
        "one login for two senders"
    );
    assert!(
        plain.auth_attempts().is_empty(),
        "the password went to a relay without TLS"
    );
    for r in [&good, &wrong, &plain, &catch_all] {
        assert!(r.messages().is_empty(), "verify sent mail");
    }

    // --sender picks one; a good one exits 0.
    let one = verify(&host, &["--sender", "example.com"]);
    one.success();
    assert_eq!(one.stdout.lines().count(), 2, "{}", one.stdout);
    verify(&host, &["--sender", "@example.org"]).code(1);
    verify(&host, &["--sender", "nosuch.example"])
        .code(2)
        .stderr_has("no sender \"nosuch.example\"");
    // An address resolves as Postfix resolves it: its own entry, else its domain's,
    // else the relayhost.
    verify(&host, &["--sender", "Someone@Example.com"])
        .success()
        .stdout_has(&format!(
            "ok      someone@example.com (@example.com) via {} as good@example.com",
            good.relay()
        ));
    verify(&host, &["--sender", "someone@nosuch.example"])
        .success()
        .stdout_has(&format!(
            "ok      someone@nosuch.example (relayhost) via {} as catchall",
            catch_all.relay()
        ));
}

#[test]
fn verify_times_out_instead_of_hanging() {
    // A listener that accepts but never greets.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let host = Host::new("");
    host.desired(&format!(
        "[relayhost]\nrelay = \"[127.0.0.1]:{port}\"\nusername = \"u\"\npassword = \"{CANARY}\"\n"
    ));
    let started = std::time::Instant::now();
    let run = verify(&host, &["--timeout", "1"]);
    run.code(1).stdout_has(&format!(
        "FAILED  relayhost via [127.0.0.1]:{port} as u: no greeting within 1 s\n"
    ));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    drop(silent);
}

#[test]
fn apply_with_verify_changes_nothing_when_a_credential_fails() {
    require!(Need::Postfix);
    let r = relay(true, "u@example.com", CANARY);
    let host = Host::new("");
    let desired = |password: &str| {
        format!(
            "[relayhost]\nrelay = \"{}\"\nusername = \"u@example.com\"\npassword = \"{password}\"\n",
            r.relay()
        )
    };
    host.desired(&desired(CANARY2));
    let before = host.files();
    host.cmd("apply")
        .args(&["--verify"])
        .run()
        .code(2)
        .stdout_has("FAILED  relayhost")
        .stderr_has("credential verification failed; nothing changed");
    assert_eq!(host.files(), before);

    host.desired(&desired(CANARY));
    host.cmd("apply")
        .args(&["--verify"])
        .run()
        .success()
        .stdout_has("ok      relayhost")
        .stdout_has("postrelay: applied");
    host.settle();
    assert_eq!(
        host.postmap_q("hash", "sasl_passwd", &r.relay()),
        Some(format!("u@example.com:{CANARY}"))
    );
}

#[test]
fn verify_at_the_highest_verbosity_shows_no_password_even_encoded() {
    let r = relay(true, "u@example.com", CANARY);
    let host = Host::new("");
    host.desired(&format!(
        "[relayhost]\nrelay = \"{}\"\nusername = \"u@example.com\"\npassword = \"{CANARY}\"\n",
        r.relay()
    ));
    // Run checks the plain canary; AUTH PLAIN sends it base64-encoded, so look for that too.
    let plain = crate::relay::encode(format!("\0u@example.com\0{CANARY}").as_bytes());
    let run = host.cmd("verify").loud().run();
    run.success().stdout_has("ok      relayhost");
    assert!(!run.stderr.is_empty(), "expected trace logs");
    for out in [&run.stdout, &run.stderr] {
        assert!(
            !out.contains(&plain),
            "the encoded AUTH PLAIN leaked:\n{out}"
        );
    }
    assert!(r.auth_attempts()[0].ok);
}

/// A relay written without brackets is reached through its MX hosts, as Postfix's SMTP
/// client reaches it: `relay.test` has no address record, its MX (a fake DNS server,
/// named through the debug-only `POSTRELAY_NAMESERVER`) points at `localhost`, where the
/// relay listens on the relay's port. A domain that does not exist fails, naming it,
/// and nothing is sent anywhere.
#[test]
fn verify_reaches_a_relay_without_brackets_through_its_mx_hosts() {
    require!(Need::DebugBuild);
    let good = relay(true, "mx-user", CANARY);
    let dns = FakeDns::start(|q| {
        vec![Out::Datagram(match q.name.as_str() {
            "relay.test" => mx_reply(q, &[(20, "unreachable.invalid"), (10, "localhost")]),
            _ => reply(q, RCODE::NameError, Vec::new()),
        })]
    });
    let host = Host::new("");
    host.desired(&format!(
        r#"
[[sender]]
domain = "example.com"
relay = "relay.test:{port}"
username = "mx-user"
password = "{CANARY}"
tls = "encrypt"

[[sender]]
domain = "example.org"
relay = "gone.test:{port}"
username = "mx-user"
password = "{CANARY}"
tls = "encrypt"
"#,
        port = good.port()
    ));
    let run = host
        .cmd("verify")
        .env("POSTRELAY_NAMESERVER", &dns.addr.to_string())
        .args(&["--timeout", "5"])
        .run();
    run.code(1)
        .stdout_has("ok      @example.com via relay.test:")
        .stdout_has("no server for gone.test (a relay without brackets: its MX hosts): gone.test: no such domain (NXDOMAIN)");
    assert!(!run.stdout.contains(CANARY) && !run.stderr.contains(CANARY));
    let logins = good.auth_attempts();
    assert_eq!(logins.len(), 1, "{logins:?}");
    assert!(good.messages().is_empty(), "verify sent mail");
}

/// 1,000 senders that share 5 credentials on one relay: 5 logins, each sender reported.
#[test]
fn verify_logs_in_once_per_distinct_credential() {
    let users: Vec<(String, String)> = (0..5)
        .map(|i| (format!("shared{i}"), format!("{CANARY}-{i}")))
        .collect();
    let pairs: Vec<(&str, &str)> = users
        .iter()
        .map(|(u, p)| (u.as_str(), p.as_str()))
        .collect();
    let r = FakeRelay::start(RelayConfig::users(&pairs));
    let host = Host::new("");
    let mut toml = String::new();
    for i in 0..1000 {
        let (user, pw) = &users[i % 5];
        toml.push_str(&format!(
            "[[sender]]\ndomain = \"d{i}.example\"\nrelay = \"{}\"\nusername = \"{user}\"\npassword = \"{pw}\"\n\n",
            r.relay()
        ));
    }
    host.desired(&toml);
    let run = verify(&host, &[]);
    run.success()
        .stdout_has("verify: 1000 checked, 0 failed (5 logins");
    assert_eq!(
        run.stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        1000
    );
    let attempts = r.auth_attempts();
    assert_eq!(attempts.len(), 5, "{attempts:?}");
    assert!(attempts.iter().all(|a| a.ok));
}

/// A relay that never finishes its greeting: the first login waits out its timeout, the
/// 49 others to that relay take its failure instead of each waiting their own.
#[test]
fn verify_does_not_retry_a_relay_that_did_not_answer() {
    use crate::smtp_peer::{Peer, Script};
    let peer = Peer::start(Script::EndlessContinuation {
        every: std::time::Duration::from_millis(500),
    });
    let host = Host::new("");
    let mut toml = String::new();
    for i in 0..50 {
        toml.push_str(&format!(
            "[[sender]]\ndomain = \"d{i}.example\"\nrelay = \"[127.0.0.1]:{}\"\nusername = \"u{i}\"\npassword = \"{CANARY}-{i}\"\n\n",
            peer.port()
        ));
    }
    host.desired(&toml);
    let start = std::time::Instant::now();
    let run = verify(&host, &["--timeout", "2"]);
    let took = start.elapsed();
    run.code(1).stdout_has("verify: 50 checked, 50 failed");
    assert_eq!(
        run.stdout
            .lines()
            .filter(|l| l.contains("no greeting within 2 s"))
            .count(),
        50,
        "{}",
        run.stdout
    );
    assert_eq!(peer.sessions(), 1, "the relay was tried again");
    assert!(took < std::time::Duration::from_secs(4), "took {took:?}");
}

/// A relay on port 465 takes TLS from the first byte: verify shakes hands before the
/// greeting and sends no STARTTLS; a STARTTLS-only server on 465 fails the handshake
/// before any password is sent. (Port 465 is privileged: the relays bind loopback
/// addresses of their own as root.)
#[test]
fn verify_speaks_tls_from_the_first_byte_on_port_465() {
    require!(Need::Root);
    let wrapped = FakeRelay::start_at(
        RelayConfig::user("smtps-user", CANARY).implicit_tls(),
        "127.0.0.46:465",
    );
    let starttls_only =
        FakeRelay::start_at(RelayConfig::user("smtps-user", CANARY2), "127.0.0.47:465");
    let host = Host::new("");
    host.desired(&format!(
        r#"
[[sender]]
domain = "wrapped.example"
relay = "[127.0.0.46]:465"
tls = "encrypt"
username = "smtps-user"
password = "{CANARY}"

[[sender]]
domain = "starttls.example"
relay = "[127.0.0.47]:465"
tls = "encrypt"
username = "smtps-user"
password = "{CANARY2}"
"#
    ));
    let run = verify(&host, &["--timeout", "5"]);
    run.code(1)
        .stdout_has("ok      @wrapped.example via [127.0.0.46]:465 as smtps-user (TLS on connect, AUTH PLAIN)")
        .stdout_has("FAILED  @starttls.example via [127.0.0.47]:465 as smtps-user: TLS on connect (port 465) failed: TLS handshake failed: received corrupt message");
    assert_eq!(
        wrapped.verbs_tls(),
        [(true, "EHLO"), (true, "AUTH"), (true, "QUIT")].map(|(t, v)| (t, v.to_string()))
    );
    assert_eq!(wrapped.handshakes().len(), 1);
    assert!(
        starttls_only.auth_attempts().is_empty(),
        "no password to a server that spoke first in clear"
    );
    let json = host
        .cmd("verify")
        .args(&["--format", "json", "--sender", "wrapped.example"])
        .run();
    json.success();
    assert!(
        json.stdout.contains("\"starttls\": false")
            && json.stdout.contains("\"implicit_tls\": true"),
        "{}",
        json.stdout
    );
}
