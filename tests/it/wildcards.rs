//! Wildcard senders (`domain = "*.shop.example"`) on a running instance: mail from any
//! subdomain goes through the wildcard's relay with its credentials, and the most
//! specific entry wins, in every table: an address entry, then an exact domain, then
//! the wildcard with the longest domain, then the relayhost (the wildcard's own domain
//! is not covered). Postfix gives a regexp table the full address before it tries
//! `@domain` in any map, so postrelay's regexp tables carry the exact domains a
//! wildcard covers ahead of the wildcards; these tests prove on the wire that no
//! wildcard shadows a more specific entry. Every apply runs twice; a hand edit of a
//! regexp table is drift that plan reports and apply repairs.

use std::fs;

use crate::harness::desired::{Sender, address, desired, domain};
use crate::harness::{Need, pw};
use crate::instance::{Instance, message_id};
use crate::relay::{FakeRelay, RelayConfig};
use crate::require;

fn relay(user: &str, password: &str) -> FakeRelay {
    FakeRelay::start(RelayConfig::user(user, password).requiring_auth())
}

#[test]
fn wildcards_route_subdomains_and_yield_to_more_specific_entries() {
    require!(Need::Live);
    let (pw_w, pw_z, pw_eu, pw_vip, pw_rh) =
        (pw("wild"), pw("deep"), pw("eu"), pw("vip"), pw("rh"));
    let (wild, deep, eu, vip, rh) = (
        relay("wild-user", &pw_w),
        relay("deep-user", &pw_z),
        relay("eu-user", &pw_eu),
        relay("vip-user", &pw_vip),
        relay("rh-user", &pw_rh),
    );
    let senders: Vec<Sender> = vec![
        domain("*.shop.example", Some(&wild), "wild-user", &pw_w),
        domain("*.z.shop.example", Some(&deep), "deep-user", &pw_z),
        domain("eu.shop.example", Some(&eu), "eu-user", &pw_eu),
        address(
            "vip@eu.shop.example",
            Some(&vip),
            Some(("vip-user", &pw_vip)),
        ),
    ];
    let toml = desired(Some((&rh, "rh-user", &pw_rh)), &senders);
    let mut inst = Instance::new();
    inst.desired(&toml);
    let first = inst.apply_ok();
    assert!(!first.stderr.contains("warning"), "{}", first.stderr);
    inst.start();
    let before = inst.files();
    inst.apply_ok().stdout_has("no changes");
    assert_eq!(inst.files(), before, "the second apply changed a file");
    let params = inst.postconf();
    let etc = inst.etc_canonical();
    assert_eq!(
        params.get("sender_dependent_relayhost_maps"),
        format!(
            "hash:{0}/sender_relay, regexp:{0}/sender_relay_wildcards",
            etc.display()
        )
    );
    let all = [&wild, &deep, &eu, &vip, &rh];
    let cases: [(&str, &FakeRelay, &str, &str); 7] = [
        ("a@x.shop.example", &wild, "wild-user", &pw_w),
        ("b@y.z.shop.example", &deep, "deep-user", &pw_z),
        ("c@z.shop.example", &wild, "wild-user", &pw_w),
        ("d@eu.shop.example", &eu, "eu-user", &pw_eu),
        ("vip@eu.shop.example", &vip, "vip-user", &pw_vip),
        ("e@sub.eu.shop.example", &wild, "wild-user", &pw_w),
        ("f@shop.example", &rh, "rh-user", &pw_rh),
    ];
    for (from, via, user, password) in cases {
        let id = message_id(from);
        inst.send(from, &["someone@dest.test"], &id);
        let m = inst.expect_on(
            &all,
            |m| m.message_id.as_deref() == Some(id.as_str()),
            &format!("the message from {from}"),
        );
        assert_eq!(
            (
                m.port,
                m.auth_user.as_deref(),
                m.auth_password.as_deref(),
                m.tls_at_auth
            ),
            (via.port(), Some(user), Some(password), true),
            "{from}"
        );
    }
    // One wildcard fewer, on the running instance: its subdomains fall to the other.
    let fewer: Vec<Sender> = senders
        .iter()
        .copied()
        .filter(|s| s.key != "*.z.shop.example")
        .collect();
    inst.desired(&desired(Some((&rh, "rh-user", &pw_rh)), &fewer));
    inst.apply_twice().stdout_has("applied");
    let id = message_id("deep-after");
    inst.send("b@y.z.shop.example", &["someone@dest.test"], &id);
    let m = inst.expect_delivery(&wild, &id);
    assert_eq!(
        (m.auth_user.as_deref(), m.auth_password.as_deref()),
        (Some("wild-user"), Some(pw_w.as_str()))
    );
    // A hand edit of a regexp table is drift: plan says so, apply puts it back (below);
    // with no wildcard left, the tables go and main.cf names them no more.
    let table = inst.path("sender_relay_wildcards");
    let good = fs::read(&table).unwrap();
    let edited = String::from_utf8(good.clone())
        .unwrap()
        .replace(&eu.relay(), &rh.relay());
    fs::write(&table, edited).unwrap();
    inst.plan().code(1).stdout_has("sender_relay_wildcards");
    inst.apply_ok().stdout_has("applied");
    assert_eq!(fs::read(&table).unwrap(), good);
    let exact: Vec<Sender> = fewer
        .iter()
        .copied()
        .filter(|s| !s.key.starts_with("*."))
        .collect();
    inst.desired(&desired(Some((&rh, "rh-user", &pw_rh)), &exact));
    inst.apply_twice().stdout_has("applied");
    for file in ["sasl_passwd_wildcards", "sender_relay_wildcards"] {
        assert!(!inst.path(file).exists(), "{file} left behind");
    }
    assert_eq!(
        inst.postconf().get("sender_dependent_relayhost_maps"),
        format!("hash:{}/sender_relay", etc.display())
    );
    let id = message_id("wild-gone");
    inst.send("a@x.shop.example", &["someone@dest.test"], &id);
    assert_eq!(
        inst.expect_delivery(&rh, &id).auth_user.as_deref(),
        Some("rh-user")
    );
}
