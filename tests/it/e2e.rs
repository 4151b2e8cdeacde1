//! End to end: a real Postfix instance configured only by `postrelay apply`, delivering
//! to fake relays that record which relay each message reached, as which user, with
//! which password, and whether TLS protected the credentials. Each scenario is the
//! claim a user relies on: mail from each sender goes through that sender's relay with
//! that sender's credentials, never in clear text, and stays right across rotation and
//! drift repair on a running instance.

use std::time::Instant;

use crate::harness::desired::{Sender, address, desired, domain};
use crate::harness::{CANARY, CANARY2, Need, pw};
use crate::instance::{Instance, WAIT, deliver, message_id};
use crate::relay::{Accepted, FakeRelay, RelayConfig};
use crate::require;

/// Prints the scenario's wall time when dropped (declare it first: it drops last, after
/// the instance has stopped).
struct Timer(&'static str, Instant);

impl Timer {
    fn start(name: &'static str) -> Timer {
        Timer(name, Instant::now())
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        eprintln!("e2e {}: {:.2?}", self.0, self.1.elapsed());
    }
}

/// A relay with STARTTLS accepting the given users.
fn relay(users: &[(&str, &str)]) -> FakeRelay {
    FakeRelay::start(RelayConfig::users(users))
}

/// Asserts that `m` reached `relay` from `from` to `to`, authenticated as `user` with
/// `password` under TLS.
#[track_caller]
fn assert_sent_as(
    m: &Accepted,
    relay: &FakeRelay,
    from: &str,
    to: &[&str],
    user: &str,
    password: &str,
) {
    assert_eq!(
        m.port,
        relay.port(),
        "{:?} from {from} reached the wrong relay: {m:#?}",
        m.message_id
    );
    assert_eq!(m.mail_from, from, "{m:#?}");
    assert_eq!(m.rcpt_to, to, "{m:#?}");
    assert_eq!(m.auth_user.as_deref(), Some(user), "{m:#?}");
    assert_eq!(m.auth_password.as_deref(), Some(password), "{m:#?}");
    assert!(m.tls_at_auth, "credentials sent without TLS: {m:#?}");
}

/// Sends a message `from` → `to` and asserts that it reached `via` (and no other of
/// `relays`), authenticated as `user` with `password` under TLS.
#[track_caller]
fn assert_routed(
    inst: &Instance,
    relays: &[&FakeRelay],
    (from, to): (&str, &str),
    (via, user, password): (&FakeRelay, &str, &str),
) {
    let m = deliver(inst, relays, from, to);
    assert_sent_as(&m, via, from, &[to], user, password);
}

/// Sends a message from `from` and waits until Postfix defers it; the delay reason.
fn deferral_reason(inst: &Instance, from: &str) -> String {
    inst.send(from, &["x@remote.example"], &message_id("deferred"));
    let q = inst.wait_deferred(from, WAIT);
    q.recipients[0].delay_reason.clone().unwrap()
}

/// An instance configured by `postrelay apply` from `toml`, then started.
fn running(toml: &str) -> Instance {
    let mut inst = Instance::new();
    inst.desired(toml);
    inst.apply_ok();
    inst.start();
    inst
}

/// Every AUTH the relay saw succeeded and was protected by TLS.
#[track_caller]
fn assert_all_auth_ok_under_tls(relay: &FakeRelay) {
    for a in relay.auth_attempts() {
        assert!(a.ok && a.tls, "relay {}: {a:?}", relay.port());
    }
}

/// The guide's multi-relay setup: two domains on their own relays with their own
/// credentials, and a catch-all relayhost with its own, configured on a running
/// instance (so apply's `postfix check` and `reload` are exercised).
#[test]
fn e2e_guide_multi_relay_routes_each_domain_through_its_relay() {
    require!(Need::Live);
    let _t = Timer::start("guide_multi_relay");
    let (pa, pb, pc) = (pw("alpha"), pw("beta"), pw("catchall"));
    let a = relay(&[("alpha-user", &pa)]);
    let b = relay(&[("beta-user", &pb)]);
    let c = relay(&[("catchall-user", &pc)]);
    let all = [&a, &b, &c];
    let mut inst = Instance::new();
    // The relayhost's password from a file, as the guide keeps it.
    inst.secret_file("catchall.pw", format!("{pc}\n"));
    let toml = desired(
        Some((&c, "catchall-user", &pc)),
        &[
            domain("alpha.test", Some(&a), "alpha-user", &pa),
            domain("beta.test", Some(&b), "beta-user", &pb),
        ],
    );
    let toml = toml.replacen(
        &format!("password = \"{pc}\""),
        "password_file = \"@TMP@/catchall.pw\"",
        1,
    );
    assert!(toml.contains("password_file"));
    inst.desired(&toml);
    inst.start();
    let etc = inst.etc.display().to_string();
    inst.apply_ok()
        .stdout_has(&format!("ran postfix -c {etc} check"))
        .stdout_has(&format!("ran postfix -c {etc} reload"));

    let routes: [(&str, &str, (&FakeRelay, &str, &str)); 3] = [
        (
            "alice@alpha.test",
            "r1@remote.example",
            (&a, "alpha-user", &pa),
        ),
        ("bob@beta.test", "r2@remote.example", (&b, "beta-user", &pb)),
        (
            "carol@unlisted.test",
            "r3@remote.example",
            (&c, "catchall-user", &pc),
        ),
    ];
    for (from, to, via) in routes {
        assert_routed(&inst, &all, (from, to), via);
    }
    for r in all {
        assert_eq!(r.messages().len(), 1, "relay {}", r.port());
        assert_all_auth_ok_under_tls(r);
    }
}

/// One relay (the relayhost) shared by three domains, each with its own
/// credentials; an unlisted domain uses the relayhost's.
#[test]
fn e2e_single_relay_uses_each_domains_credentials() {
    require!(Need::Live);
    let _t = Timer::start("single_relay_per_domain_credentials");
    let names = ["one.test", "two.test", "three.test"];
    let creds: Vec<(String, String)> = names.iter().map(|d| (format!("user@{d}"), pw(d))).collect();
    let prh = pw("rh");
    let users: Vec<(&str, &str)> = creds
        .iter()
        .map(|(u, p)| (u.as_str(), p.as_str()))
        .chain([("relayhost-user", prh.as_str())])
        .collect();
    let r = relay(&users);
    let senders: Vec<Sender> = names
        .iter()
        .zip(&creds)
        .map(|(d, (u, p))| domain(d, None, u, p))
        .collect();
    let inst = running(&desired(Some((&r, "relayhost-user", &prh)), &senders));

    for (d, (user, password)) in names.iter().zip(&creds) {
        let (from, to) = (format!("sender@{d}"), format!("to-{d}@remote.example"));
        assert_routed(&inst, &[&r], (&from, &to), (&r, user, password));
    }
    assert_routed(
        &inst,
        &[&r],
        ("someone@unlisted.test", "x@remote.example"),
        (&r, "relayhost-user", &prh),
    );
    assert_eq!(r.messages().len(), 4);
    assert_all_auth_ok_under_tls(&r);
}

/// An address entry beats its domain's entry: an address with its own relay and
/// credentials uses them; an address with its own credentials under a domain that goes
/// through the relayhost authenticates as itself there; the domains' other addresses
/// keep the domain's relay and credentials.
#[test]
fn e2e_address_entry_overrides_its_domain() {
    require!(Need::Live);
    let _t = Timer::start("address_overrides_domain");
    let (p_dom, p_vip, p_dom2, p_boss, p_rh) =
        (pw("dom"), pw("vip"), pw("dom2"), pw("boss"), pw("rh"));
    let dom = relay(&[("dom-user", &p_dom)]);
    let vip = relay(&[("vip-user", &p_vip)]);
    let rh = relay(&[
        ("rh-user", &p_rh),
        ("dom2-user", &p_dom2),
        ("boss-user", &p_boss),
    ]);
    let all = [&dom, &vip, &rh];
    let inst = running(&desired(
        Some((&rh, "rh-user", &p_rh)),
        &[
            domain("corp.test", Some(&dom), "dom-user", &p_dom),
            address("vip@corp.test", Some(&vip), Some(("vip-user", &p_vip))),
            domain("corp2.test", None, "dom2-user", &p_dom2),
            address("boss@corp2.test", None, Some(("boss-user", &p_boss))),
        ],
    ));

    let routes: [(&str, &str, (&FakeRelay, &str, &str)); 4] = [
        (
            "vip@corp.test",
            "v@remote.example",
            (&vip, "vip-user", &p_vip),
        ),
        (
            "staff@corp.test",
            "s@remote.example",
            (&dom, "dom-user", &p_dom),
        ),
        (
            "boss@corp2.test",
            "b@remote.example",
            (&rh, "boss-user", &p_boss),
        ),
        (
            "worker@corp2.test",
            "w@remote.example",
            (&rh, "dom2-user", &p_dom2),
        ),
    ];
    for (from, to, via) in routes {
        assert_routed(&inst, &all, (from, to), via);
    }
    for r in all {
        assert_all_auth_ok_under_tls(r);
    }
}

/// An address with its own credentials but no relay of its own goes through the
/// relayhost (README: `relay` is "optional with [relayhost]: then it goes through it";
/// `validate` says "this sender goes through the relayhost"), even when its domain has
/// a relay of its own.
#[test]
fn e2e_address_with_credentials_only_goes_through_relayhost() {
    require!(Need::Live);
    let _t = Timer::start("address_credentials_only");
    let (p_dom, p_cred, p_rh) = (pw("dom"), pw("cred"), pw("rh"));
    let dom = relay(&[("dom-user", &p_dom)]);
    let rh = relay(&[("rh-user", &p_rh), ("cred-user", &p_cred)]);
    let inst = running(&desired(
        Some((&rh, "rh-user", &p_rh)),
        &[
            domain("corp.test", Some(&dom), "dom-user", &p_dom),
            address("cred@corp.test", None, Some(("cred-user", &p_cred))),
        ],
    ));

    assert_routed(
        &inst,
        &[&dom, &rh],
        ("cred@corp.test", "c@remote.example"),
        (&rh, "cred-user", &p_cred),
    );
    assert!(
        dom.auth_attempts().is_empty(),
        "the domain's relay saw the address's credentials: {:?}",
        dom.auth_attempts()
    );
}

/// An address with a relay of its own and no credentials: Postfix's SASL lookup falls
/// back from the address to its @domain entry, so the domain's password would go to the
/// address's relay. postrelay refuses that desired state; with credentials of its own
/// the address authenticates as itself and the domain's password stays with its relay.
#[test]
fn e2e_domain_password_never_reaches_an_address_relay() {
    require!(Need::Live);
    let _t = Timer::start("address_relay_without_credentials");
    let (p_dom, p_own) = (pw("dom"), pw("own"));
    let dom = relay(&[("dom-user", &p_dom)]);
    let other = relay(&[("own-user", &p_own)]);
    let mut inst = Instance::new();
    inst.desired(&desired(
        None,
        &[
            domain("corp.test", Some(&dom), "dom-user", &p_dom),
            address("noauth@corp.test", Some(&other), None),
        ],
    ));
    let before = std::fs::read(inst.main_cf()).unwrap();
    let refused = inst.cmd("apply").run();
    refused
        .code(2)
        .stderr_has("sender \"noauth@corp.test\": has no credentials, so Postfix would send those of \"@corp.test\"");
    assert_eq!(std::fs::read(inst.main_cf()).unwrap(), before);
    assert!(!inst.path("sasl_passwd").exists());

    inst.desired(&desired(
        None,
        &[
            domain("corp.test", Some(&dom), "dom-user", &p_dom),
            address("noauth@corp.test", Some(&other), Some(("own-user", &p_own))),
        ],
    ));
    inst.apply_ok();
    inst.start();
    assert_routed(
        &inst,
        &[&dom, &other],
        ("noauth@corp.test", "n@remote.example"),
        (&other, "own-user", &p_own),
    );
    assert!(
        !other.auth_attempts().iter().any(|a| a.password == p_dom),
        "corp.test's password went to the relay of noauth@corp.test: {:?}",
        other.auth_attempts()
    );
}

/// A bounce (null sender) goes through the relayhost with the relayhost's
/// credentials, not through the sender domain's relay.
#[test]
fn e2e_bounce_goes_through_relayhost_with_its_credentials() {
    require!(Need::Live);
    let _t = Timer::start("bounce_through_relayhost");
    let (pa, pc) = (pw("alpha"), pw("catchall"));
    let a = FakeRelay::start(RelayConfig {
        reject_rcpt: vec!["nobody@remote.example".into()],
        ..RelayConfig::user("alpha-user", &pa)
    });
    let c = relay(&[("catchall-user", &pc)]);
    let inst = running(&desired(
        Some((&c, "catchall-user", &pc)),
        &[domain("alpha.test", Some(&a), "alpha-user", &pa)],
    ));

    let id = message_id("bounce");
    inst.send(
        "alice@alpha.test",
        &["ok@remote.example", "nobody@remote.example"],
        &id,
    );
    let m = inst.expect_delivery(&a, &id);
    assert_sent_as(
        &m,
        &a,
        "alice@alpha.test",
        &["ok@remote.example"],
        "alpha-user",
        &pa,
    );
    let bounce = inst.expect_on(
        &[&a, &c],
        |m| m.mail_from.is_empty(),
        "the bounce to alice@alpha.test",
    );
    assert_sent_as(&bounce, &c, "", &["alice@alpha.test"], "catchall-user", &pc);
    assert_ne!(bounce.message_id.as_deref(), Some(id.as_str()));
    assert_eq!(a.messages().len(), 1);
    assert_eq!(c.messages().len(), 1);
    assert_all_auth_ok_under_tls(&a);
    assert_all_auth_ok_under_tls(&c);
}

/// With the default `tls = "encrypt"`, a relay without STARTTLS never sees the
/// password: the message stays deferred.
#[test]
fn e2e_relay_without_starttls_never_sees_the_password() {
    require!(Need::Live);
    let _t = Timer::start("tls_enforced");
    let password = pw("plain");
    let plain = FakeRelay::start(RelayConfig {
        starttls: false,
        ..RelayConfig::user("plain-user", &password)
    });
    let inst = running(&desired(
        None,
        &[domain("plain.test", Some(&plain), "plain-user", &password)],
    ));

    let reason = deferral_reason(&inst, "alice@plain.test");
    assert!(reason.contains("TLS is required"), "delay_reason: {reason}");
    assert!(
        plain.auth_attempts().is_empty(),
        "the password reached a relay without TLS: {:?}",
        plain.auth_attempts()
    );
    assert!(plain.messages().is_empty(), "{:?}", plain.messages());
}

/// Rotating a password on a running instance: the next message uses the new one, after
/// a reload (every change is reloaded: daemons notice a rebuilt map each at its own
/// time) but no restart (the master keeps its PID).
#[test]
fn e2e_rotated_password_is_used_without_restart() {
    require!(Need::Live);
    let _t = Timer::start("rotation");
    let r = relay(&[("rot-user", CANARY), ("rot-user", CANARY2)]);
    let rot = |password: &str| desired(None, &[domain("rot.test", Some(&r), "rot-user", password)]);
    let inst = running(&rot(CANARY));
    let master = inst.master_pid();

    assert_routed(
        &inst,
        &[&r],
        ("first@rot.test", "a@remote.example"),
        (&r, "rot-user", CANARY),
    );

    inst.desired(&rot(CANARY2));
    let etc = inst.etc.display().to_string();
    // The JSON report of a change on a running Postfix: reloaded, the rotation named
    // and masked (Run checks that no canary was printed).
    let run = inst.cmd("apply").args(&["--format", "json"]).run();
    run.success();
    inst.settle();
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["changed"], true, "{report}");
    assert_eq!(report["reload"], "done", "{report}");
    let reload = format!("postfix -c {etc} reload");
    assert!(
        report["commands"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| *c == reload.as_str()),
        "{report}"
    );
    assert_eq!(
        report["files"][0]["entries_changed"][0]["change"],
        "password"
    );
    assert_routed(
        &inst,
        &[&r],
        ("second@rot.test", "b@remote.example"),
        (&r, "rot-user", CANARY2),
    );
    assert_eq!(inst.master_pid(), master, "Postfix was restarted");
    let used: Vec<String> = r.auth_attempts().into_iter().map(|a| a.password).collect();
    assert_eq!(used, [CANARY, CANARY2]);
}

/// Drift on a running instance (a managed parameter deleted from main.cf and
/// reloaded, a compiled map deleted): plan reports both, apply repairs, and mail routes
/// through the right relays as the right users again.
#[test]
fn e2e_drift_on_running_instance_is_repaired() {
    require!(Need::Live);
    let _t = Timer::start("drift_repair");
    let (pa, pc) = (pw("alpha"), pw("catchall"));
    let a = relay(&[("alpha-user", &pa)]);
    let c = relay(&[("catchall-user", &pc)]);
    let all = [&a, &c];
    let inst = running(&desired(
        Some((&c, "catchall-user", &pc)),
        &[domain("alpha.test", Some(&a), "alpha-user", &pa)],
    ));
    assert_routed(
        &inst,
        &all,
        ("before@alpha.test", "b1@remote.example"),
        (&a, "alpha-user", &pa),
    );

    // Break it by hand.
    let main_cf = std::fs::read_to_string(inst.main_cf()).unwrap();
    let broken: String = main_cf
        .lines()
        .filter(|l| !l.starts_with("smtp_sender_dependent_authentication"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(broken, main_cf, "main.cf lacks the parameter:\n{main_cf}");
    inst.write_etc("main.cf", &broken);
    inst.reload();
    std::fs::remove_file(inst.path("sender_relay.db")).unwrap();

    inst.plan()
        .code(1)
        .stdout_has("smtp_sender_dependent_authentication")
        .stdout_has("sender_relay.db");
    let etc = inst.etc.display().to_string();
    inst.apply_ok()
        .stdout_has(&format!("ran postfix -c {etc} reload"));
    inst.plan().code(0);

    // New senders and recipients: trivial-rewrite's 30 s resolve cache can't answer.
    assert_routed(
        &inst,
        &all,
        ("after@alpha.test", "a1@remote.example"),
        (&a, "alpha-user", &pa),
    );
    assert_routed(
        &inst,
        &all,
        ("after@other.test", "a2@remote.example"),
        (&c, "catchall-user", &pc),
    );
    assert_all_auth_ok_under_tls(&a);
    assert_all_auth_ok_under_tls(&c);
}

/// A password the relay does not accept: the message is deferred with the relay's
/// 535, and the relay saw the desired password, under TLS.
#[test]
fn e2e_wrong_password_defers_with_535() {
    require!(Need::Live);
    let _t = Timer::start("wrong_password");
    let r = relay(&[("user@bad.test", "the-right-one")]);
    let inst = running(&desired(
        None,
        &[domain("bad.test", Some(&r), "user@bad.test", CANARY)],
    ));

    let reason = deferral_reason(&inst, "alice@bad.test");
    assert!(reason.contains("535"), "delay_reason: {reason}");
    let attempts = r.auth_attempts();
    assert!(!attempts.is_empty());
    for a in &attempts {
        assert!(
            !a.ok && a.tls && a.user == "user@bad.test" && a.password == CANARY,
            "{a:?}"
        );
    }
    assert!(r.messages().is_empty(), "{:?}", r.messages());
}
