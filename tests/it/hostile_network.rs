//! Issue 9, a hostile or tampered network: `postrelay verify` against scripted peers
//! (`smtp_peer.rs`). A server that never finishes its greeting cannot hold a check past
//! `--timeout`; one that sends an endless line cannot make verify buffer it; and at
//! `secure` and `verify` a certificate Postfix's own trust store (`smtp_tls_CAfile`,
//! `smtp_tls_CApath`, read with postconf) would refuse ends the check before any AUTH
//! is sent, while `encrypt` accepts any certificate, as Postfix does. A relay that
//! quotes the credentials back in its reply finds them masked in every output.

use std::io::Read;
use std::time::{Duration, Instant};

use crate::harness::tls::{Leaf, TestCa};
use crate::harness::{CANARY, Host, Need, Run};
use crate::require;
use crate::smtp_peer::{Chain, Peer, Script};

/// A desired state whose relayhost is `relay`, user `u`, password the canary, and
/// `tls` when given.
fn relayhost(host: &Host, relay: &str, tls: Option<&str>) {
    let tls = tls.map(|t| format!("tls = \"{t}\"\n")).unwrap_or_default();
    host.desired(&format!(
        "[relayhost]\nrelay = \"{relay}\"\nusername = \"u\"\npassword = \"{CANARY}\"\n{tls}"
    ));
}

/// The peak resident set size in KiB (`VmHWM`) of the postrelay process `pid`, read
/// once it runs postrelay's own image: a spawned child shares the test process's memory
/// until exec, and `ru_maxrss` (wait4, getrusage) keeps that earlier high-water mark,
/// so only the exec'd image's own mark measures postrelay.
fn peak_rss(pid: u32) -> u64 {
    let proc_dir = format!("/proc/{pid}");
    let exe = std::fs::read_link(format!("{proc_dir}/exe")).unwrap();
    assert_eq!(
        exe.file_name().unwrap(),
        "postrelay",
        "{pid} is not running postrelay yet"
    );
    let status = std::fs::read_to_string(format!("{proc_dir}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {status}"))
}

/// Runs verify on a host whose relayhost is `relay` (at `tls = "may"`) and one sender
/// whose relay is `slow`, a peer that never finishes its greeting: while verify waits
/// for it (until its `--timeout 3`), the relayhost's check is over, and the process's
/// peak memory so far is read. The run and that peak in KiB.
fn peak_rss_of_a_check(relay: &str, slow: &Peer) -> (Run, u64) {
    let host = Host::new("");
    host.desired(&format!(
        "[relayhost]\nrelay = \"{relay}\"\nusername = \"u\"\npassword = \"{CANARY}\"\ntls = \"may\"\naccept_cleartext = true\n\n\
         [[sender]]\ndomain = \"slow.example\"\nrelay = \"[127.0.0.1]:{}\"\n",
        slow.port()
    ));
    let sessions = slow.sessions();
    let mut child = host.cmd("verify").args(&["--timeout", "3"]).spawn();
    let started = Instant::now();
    while slow.sessions() == sessions {
        assert!(started.elapsed() < Duration::from_secs(3), "no connection");
        std::thread::sleep(Duration::from_millis(5));
    }
    // The other check (milliseconds) is long over well before the slow one's deadline.
    std::thread::sleep(Duration::from_millis(1000));
    let peak = peak_rss(child.id());
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let run = Run::wait(child);
    assert!(
        out.contains("FAILED  @slow.example via") && out.contains("no greeting within 3 s"),
        "{out}"
    );
    let run = Run { stdout: out, ..run };
    (run, peak)
}

#[test]
fn an_endless_greeting_ends_at_the_check_deadline() {
    // 220- continuation lines every second, forever: each read alone would succeed.
    let peer = Peer::start(Script::EndlessContinuation {
        every: Duration::from_secs(1),
    });
    let host = Host::new("");
    let relay = format!("[127.0.0.1]:{}", peer.port());
    relayhost(&host, &relay, None);
    let started = Instant::now();
    let run = host
        .cmd("verify")
        .args(&["--timeout", "2"])
        .run_within(Duration::from_secs(20));
    let took = started.elapsed();
    eprintln!("endless greeting: verify --timeout 2 took {took:?}");
    run.code(1).stdout_has(&format!(
        "FAILED  relayhost via {relay} as u: no greeting within 2 s\n"
    ));
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "took {took:?}"
    );
    assert_eq!(peer.sessions(), 1);
}

#[test]
fn an_endless_line_fails_at_once_without_filling_memory() {
    // "220 " and then 'A's as fast as the socket takes them.
    let peer = Peer::start(Script::EndlessLine);
    let relay = format!("[127.0.0.1]:{}", peer.port());
    let host = Host::new("");
    relayhost(&host, &relay, None);
    let started = Instant::now();
    let run = host
        .cmd("verify")
        .args(&["--timeout", "10"])
        .run_within(Duration::from_secs(20));
    let took = started.elapsed();
    run.code(1).stdout_has(&format!(
        "FAILED  relayhost via {relay} as u: bad greeting: reply line longer than 4096 octets\n"
    ));
    assert!(took < Duration::from_secs(3), "took {took:?}");

    // Its peak memory, against a good login's, each measured in a run kept alive by a
    // second, slow check.
    let slow = Peer::start(Script::EndlessContinuation {
        every: Duration::from_secs(10),
    });
    let good = Peer::serving(None, "u", CANARY);
    let (run, baseline) = peak_rss_of_a_check(&format!("[127.0.0.1]:{}", good.port()), &slow);
    assert!(
        run.stdout.starts_with("ok      relayhost"),
        "{}",
        run.stdout
    );
    let (run, peak) = peak_rss_of_a_check(&relay, &slow);
    assert!(
        run.stdout.contains("reply line longer than 4096 octets"),
        "{}",
        run.stdout
    );
    eprintln!(
        "endless line: failed in {took:?}; peak RSS {peak} KiB (a good login: {baseline} KiB); the peer wrote {} octets",
        peer.written()
    );
    assert!(peak < 50 * 1024, "peak RSS {peak} KiB");
    // Not more than one line and one read beyond a good login's memory, give or take
    // the allocator.
    assert!(
        peak < baseline + 4 * 1024,
        "peak RSS {peak} KiB against {baseline} KiB"
    );
}

/// A host whose main.cf points `smtp_tls_CAfile` at the test CA (through
/// `$config_directory`, which postconf expands).
fn host_trusting(pki: &TestCa) -> Host {
    let host = Host::new("smtp_tls_CAfile = $config_directory/test-ca.pem\n");
    host.write_etc("test-ca.pem", pki.pem());
    host
}

#[test]
fn certificates_are_checked_against_postfixs_trust_store_before_any_auth() {
    require!(Need::Postfix);
    let pki = TestCa::new("postrelay test CA");
    let forged = || Leaf::self_signed("attacker.invalid", &["localhost"]).server_config();
    // (what, certificate, tls, expected end of the verify line; None: ok)
    let cases: Vec<(&str, Chain, Option<&str>, Option<String>)> = vec![
        (
            "a leaf from Postfix's CA, default level (secure)",
            pki.issue(&["localhost"]).server_config(),
            None,
            None,
        ),
        (
            "the same at verify",
            pki.issue(&["localhost"]).server_config(),
            Some("verify"),
            None,
        ),
        (
            "a self-signed CN=attacker.invalid for localhost",
            forged(),
            None,
            Some("certificate not trusted: no CA in smtp_tls_CAfile = @ETC@/test-ca.pem issued it (tls = \"secure\"); no password was sent".into()),
        ),
        (
            "the same at verify",
            forged(),
            Some("verify"),
            Some("certificate not trusted: no CA in smtp_tls_CAfile = @ETC@/test-ca.pem issued it (tls = \"verify\"); no password was sent".into()),
        ),
        (
            "a leaf from Postfix's CA for another name",
            pki.issue(&["other.example"]).server_config(),
            None,
            Some("certificate name mismatch: it is for other.example, not localhost (tls = \"secure\"); no password was sent".into()),
        ),
        (
            "an expired leaf from Postfix's CA",
            pki.issue_expired(&["localhost"]).server_config(),
            None,
            Some("certificate expired (tls = \"secure\"); no password was sent".into()),
        ),
        (
            "a self-signed certificate at encrypt: not checked, as in Postfix",
            forged(),
            Some("encrypt"),
            None,
        ),
        (
            "no STARTTLS offered at secure",
            pki.issue(&["localhost"]).server_config(),
            Some("no-starttls"),
            Some("TLS required (tls = \"secure\") but the server does not offer STARTTLS; no password was sent".into()),
        ),
    ];
    let host = host_trusting(&pki);
    for (what, chain, tls, want) in cases {
        let (peer, tls) = match tls {
            Some("no-starttls") => (Peer::serving(None, "u", CANARY), None),
            _ => (Peer::serving(Some(chain), "u", CANARY), tls),
        };
        let relay = format!("[localhost]:{}", peer.port());
        relayhost(&host, &relay, tls);
        let run = host.cmd("verify").args(&["--timeout", "10"]).run();
        eprintln!("{what}:\n{}", run.stdout);
        let line = run.stdout.lines().next().unwrap_or_default().to_string();
        assert!(
            peer.wait_idle(Duration::from_secs(10)),
            "{what}: session still open"
        );
        match want {
            None => {
                run.success();
                assert_eq!(
                    line,
                    format!("ok      relayhost via {relay} as u (STARTTLS, AUTH PLAIN)"),
                    "{what}"
                );
                assert_eq!(peer.logins(), [("u".to_string(), true)], "{what}");
            }
            Some(want) => {
                run.code(1);
                let want = host.expand(&want);
                let want = format!("FAILED  relayhost via {relay} as u: {want}");
                assert_eq!(line, want, "{what}");
                assert!(!peer.saw_auth(), "{what}: AUTH reached the server");
                // A refused certificate: the client broke the handshake off.
                assert_eq!(
                    peer.handshake_failures().len(),
                    usize::from(want.contains("certificate")),
                    "{what}: {:?}",
                    peer.handshake_failures()
                );
                assert!(peer.logins().is_empty(), "{what}");
            }
        }
        let verbs: Vec<String> = peer.received().into_iter().map(|r| r.verb).collect();
        // Never anything that sends mail.
        assert!(
            verbs
                .iter()
                .all(|v| ["EHLO", "STARTTLS", "AUTH", "QUIT"].contains(&v.as_str())),
            "{what}: {verbs:?}"
        );
    }
}

#[test]
fn a_refused_certificate_is_a_failed_check_in_apply_verify_too() {
    require!(Need::Postfix);
    let pki = TestCa::new("postrelay test CA");
    let peer = Peer::serving(
        Some(Leaf::self_signed("attacker.invalid", &["localhost"]).server_config()),
        "u",
        CANARY,
    );
    let host = host_trusting(&pki);
    relayhost(&host, &format!("[localhost]:{}", peer.port()), None);
    let before = host.files();
    host.cmd("apply")
        .args(&["--verify"])
        .run()
        .code(2)
        .stdout_has("certificate not trusted")
        .stderr_has("credential verification failed; nothing changed");
    assert_eq!(host.files(), before);
    assert!(!peer.saw_auth());
}

#[test]
fn the_trust_store_is_ca_path_or_else_the_system_bundle() {
    require!(Need::Postfix);
    let pki = TestCa::new("postrelay test CA");
    let peer = Peer::serving(Some(pki.issue(&["localhost"]).server_config()), "u", CANARY);
    let relay = format!("[localhost]:{}", peer.port());

    // smtp_tls_CApath: every certificate file in the directory counts; other entries
    // (a file without a certificate, a subdirectory) are skipped.
    let host = Host::new("smtp_tls_CApath = $config_directory/cas\n");
    std::fs::create_dir_all(host.path("cas/sub")).unwrap();
    std::fs::write(host.path("cas/test-ca.pem"), pki.pem()).unwrap();
    std::fs::write(host.path("cas/README"), "not a certificate\n").unwrap();
    relayhost(&host, &relay, None);
    host.cmd("verify").run().success().stdout_has(&format!(
        "ok      relayhost via {relay} as u (STARTTLS, AUTH PLAIN)"
    ));

    // Neither set: the system bundle plan would write, which does not hold the test CA.
    let host = Host::new("");
    relayhost(&host, &relay, None);
    let run = host.cmd("verify").run();
    let bundle = [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ]
    .into_iter()
    .find(|b| std::path::Path::new(b).is_file());
    match bundle {
        Some(bundle) => {
            run.code(1).stdout_has(&format!(
                "certificate not trusted: no CA in the system bundle {bundle} issued it (tls = \"secure\"); no password was sent"
            ));
        }
        None => {
            run.error()
                .stderr_has("Postfix has no CA to verify relays' certificates with");
        }
    }
    assert_eq!(peer.logins(), [("u".to_string(), true)]);
    assert_eq!(
        peer.received().iter().filter(|r| r.verb == "AUTH").count(),
        1,
        "AUTH only in the trusted session"
    );

    // A CA file with no certificate is an error naming it: Postfix could verify nothing.
    let host = Host::new("smtp_tls_CAfile = $config_directory/empty.pem\n");
    host.write_etc("empty.pem", "");
    relayhost(&host, &relay, None);
    host.cmd("verify")
        .run()
        .error()
        .stderr_has("empty.pem: no usable CA certificate in it");
}

#[test]
fn a_relay_quoting_the_credentials_back_sees_them_masked_in_every_output() {
    let peer = Peer::echoing();
    let host = Host::new("");
    let relay = format!("[127.0.0.1]:{}", peer.port());
    relayhost(&host, &relay, Some("may"));
    // Its 535 quotes AUTH PLAIN's base64 "\0u\0password" back.
    let plain = crate::relay::encode(format!("\0u\0{CANARY}").as_bytes());
    let run = host.cmd("verify").loud().run();
    run.code(1).stdout_has(&format!(
        "FAILED  relayhost via {relay} as u: authentication failed: 535 5.7.8 rejected AUTH PLAIN ******** ********\n"
    ));
    assert!(run.stderr.contains("TRACE"), "{}", run.stderr);
    for out in [&run.stdout, &run.stderr] {
        assert!(
            !out.contains(&plain),
            "the AUTH PLAIN string leaked:\n{out}"
        );
    }
    assert!(peer.saw_auth());
}
