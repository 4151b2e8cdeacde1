//! Relays on port 465 (TLS from the first byte) on a running instance: postrelay's own
//! master.cf service (`postrelay-smtps`, Postfix's smtp client with
//! `smtp_tls_wrappermode`), the sender_transport map that sends a sender through it,
//! and `default_transport` for a relayhost on 465, so that bounces and unlisted senders
//! go there too. The fake relays on 465 shake hands before their greeting; each listens
//! on a loopback address of its own (port 465 is privileged: these tests run as root).
//!
//! Each scenario applies twice (the second changes nothing, master.cf included), sends
//! mail, and checks on the wire which relay got it, with which credentials, under TLS.
//! Removing the last relay on 465 gives master.cf back byte for byte.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use crate::harness::desired::{desired, domain};
use crate::harness::{Need, pw};
use crate::instance::{Instance, message_id};
use crate::relay::{FakeRelay, RelayConfig};
use crate::require;

/// A relay on `ip`:465 speaking TLS first, accepting `user` / `password`.
fn smtps(ip: &str, user: &str, password: &str) -> FakeRelay {
    FakeRelay::start_at(
        RelayConfig::user(user, password)
            .requiring_auth()
            .implicit_tls(),
        &format!("{ip}:465"),
    )
}

/// A STARTTLS relay on 127.0.0.1 accepting `user` / `password`.
fn starttls(user: &str, password: &str) -> FakeRelay {
    FakeRelay::start(RelayConfig::user(user, password).requiring_auth())
}

/// Applies `toml` twice ([`Host::apply_twice`]: the second changes nothing at all, and
/// plan is in sync); the first changes something and warns of nothing.
///
/// [`Host::apply_twice`]: crate::harness::Host::apply_twice
fn apply_twice(inst: &Instance, toml: &str) {
    inst.desired(toml);
    let run = inst.apply_twice();
    run.stdout_has("applied");
    assert!(!run.stderr.contains("warning"), "{}", run.stderr);
}

/// Sends a message from `from` and returns (relay port, user, password, TLS at AUTH).
fn deliver(inst: &Instance, relays: &[&FakeRelay], from: &str) -> (u16, String, String, bool) {
    let id = message_id(from);
    inst.send(from, &["someone@dest.test"], &id);
    let m = inst.expect_on(
        relays,
        |m| m.message_id.as_deref() == Some(id.as_str()),
        &format!("the message from {from}"),
    );
    (
        m.port,
        m.auth_user.clone().unwrap_or_default(),
        m.auth_password.clone().unwrap_or_default(),
        m.tls_at_auth,
    )
}

/// No relay on 465 left: sender_transport and its compiled form are gone, and main.cf
/// names no map in sender_dependent_default_transport_maps.
fn assert_transport_gone(inst: &Instance) {
    for file in ["sender_transport", "sender_transport.db"] {
        assert!(!inst.path(file).exists(), "{file} left behind");
    }
    assert_eq!(
        inst.postconf()
            .get("sender_dependent_default_transport_maps"),
        ""
    );
}

fn master_cf(inst: &Instance) -> Vec<u8> {
    fs::read(inst.path("master.cf")).unwrap()
}

#[test]
fn a_sender_on_port_465_goes_through_postrelays_service_and_its_removal_restores_master_cf() {
    require!(Need::Live);
    let (p465, pother, prh) = (pw("smtps"), pw("other"), pw("relayhost"));
    let wrapped = smtps("127.0.0.61", "smtps-user", &p465);
    let other = starttls("other-user", &pother);
    let rh = starttls("rh-user", &prh);
    let mut inst = Instance::new();
    // A master.cf as some hosts keep it, 0640 root:postfix: apply keeps both.
    let master = inst.path("master.cf");
    let postfix_gid = nix::unistd::Group::from_name("postfix")
        .unwrap()
        .expect("the postfix group")
        .gid;
    nix::unistd::chown(&master, None, Some(postfix_gid)).unwrap();
    fs::set_permissions(&master, fs::Permissions::from_mode(0o640)).unwrap();
    let kept_owner = |inst: &Instance| {
        let meta = fs::metadata(inst.path("master.cf")).unwrap();
        (meta.mode() & 0o7777, meta.uid(), meta.gid())
    };
    let original = master_cf(&inst);
    let with_465 = desired(
        Some((&rh, "rh-user", &prh)),
        &[
            domain("wrapped.example", Some(&wrapped), "smtps-user", &p465),
            domain("other.example", Some(&other), "other-user", &pother),
        ],
    );
    inst.desired(&with_465);
    inst.apply_ok();
    inst.start();
    // Started on the applied files; a second apply changes nothing.
    let before = inst.files();
    inst.apply_ok().stdout_has("no changes");
    assert_eq!(inst.files(), before);
    let text = String::from_utf8(master_cf(&inst)).unwrap();
    assert!(text.starts_with(std::str::from_utf8(&original).unwrap()));
    assert_eq!(
        kept_owner(&inst),
        (0o640, 0, postfix_gid.as_raw()),
        "mode and owner kept"
    );
    assert!(
        text.ends_with("postrelay-smtps unix  -       -       n       -       -       smtp\n  -o smtp_tls_wrappermode=yes\n  -o smtp_tls_security_level=encrypt\n"),
        "{text}"
    );
    assert_eq!(
        inst.postmap_q("hash", "sender_transport", "@wrapped.example")
            .as_deref(),
        Some("postrelay-smtps:[127.0.0.61]:465")
    );
    assert_eq!(
        inst.postmap_q("hash", "sender_transport", "@other.example"),
        None
    );
    assert_eq!(inst.postconf().get("default_transport"), "smtp");
    let all = [&wrapped, &other, &rh];
    assert_eq!(
        deliver(&inst, &all, "a@wrapped.example"),
        (465, "smtps-user".into(), p465.clone(), true),
        "TLS from the first byte, with the sender's credentials"
    );
    assert_eq!(
        deliver(&inst, &all, "b@other.example"),
        (other.port(), "other-user".into(), pother.clone(), true)
    );
    assert_eq!(
        deliver(&inst, &all, "c@unlisted.example"),
        (rh.port(), "rh-user".into(), prh.clone(), true)
    );
    assert!(
        wrapped.verbs().iter().all(|v| v.tls),
        "nothing in clear on 465"
    );

    // The relay on 465 goes: master.cf is what it was, byte for byte; the sender's mail
    // goes through the relayhost.
    let without = desired(
        Some((&rh, "rh-user", &prh)),
        &[domain("other.example", Some(&other), "other-user", &pother)],
    );
    apply_twice(&inst, &without);
    assert_eq!(
        master_cf(&inst),
        original,
        "master.cf restored byte for byte"
    );
    assert_eq!(kept_owner(&inst), (0o640, 0, postfix_gid.as_raw()));
    assert_transport_gone(&inst);
    assert_eq!(
        deliver(&inst, &all, "d@wrapped.example"),
        (rh.port(), "rh-user".into(), prh.clone(), true)
    );
}

#[test]
fn a_relayhost_on_port_465_takes_bounces_and_unlisted_senders() {
    require!(Need::Live);
    let (prh, pother) = (pw("rh465"), pw("other"));
    let rh = smtps("127.0.0.62", "rh-user", &prh);
    let other = starttls("other-user", &pother);
    let rh_starttls = starttls("rh2-user", &prh);
    let mut inst = Instance::new();
    let original = master_cf(&inst);
    let toml = desired(
        Some((&rh, "rh-user", &prh)),
        &[domain("other.example", Some(&other), "other-user", &pother)],
    );
    inst.desired(&toml);
    inst.apply_ok();
    inst.start();
    let before = inst.files();
    inst.apply_ok().stdout_has("no changes");
    assert_eq!(inst.files(), before);
    assert_eq!(inst.postconf().get("default_transport"), "postrelay-smtps");
    // Beside a relayhost on 465, the other relay names Postfix's smtp service.
    assert_eq!(
        inst.postmap_q("hash", "sender_transport", "@other.example")
            .as_deref(),
        Some(format!("smtp:{}", other.relay()).as_str())
    );
    let all = [&rh, &other, &rh_starttls];
    assert_eq!(
        deliver(&inst, &all, "a@unlisted.example"),
        (465, "rh-user".into(), prh.clone(), true)
    );
    assert_eq!(
        deliver(&inst, &all, "b@other.example"),
        (other.port(), "other-user".into(), pother.clone(), true)
    );
    // A bounce (null sender) never consults sender-dependent maps: default_transport.
    let id = message_id("bounce");
    inst.sendmail(
        "<>",
        &["postmaster@dest.test"],
        &format!("From: MAILER-DAEMON\nMessage-ID: <{id}>\nSubject: bounce\n\nundeliverable\n"),
    );
    let m = inst.expect_delivery(&rh, &id);
    assert_eq!(
        (m.port, m.mail_from.as_str(), m.tls_at_auth),
        (465, "", true)
    );

    // Back to a relayhost on 587: default_transport is smtp again, master.cf as it was.
    let back = desired(
        Some((&rh_starttls, "rh2-user", &prh)),
        &[domain("other.example", Some(&other), "other-user", &pother)],
    );
    apply_twice(&inst, &back);
    assert_eq!(inst.postconf().get("default_transport"), "smtp");
    assert_eq!(master_cf(&inst), original);
    assert_transport_gone(&inst);
    assert_eq!(
        deliver(&inst, &all, "c@unlisted.example"),
        (rh_starttls.port(), "rh2-user".into(), prh.clone(), true)
    );
}

/// Refused with exit 2, nothing written: a service named postrelay-smtps that postrelay
/// did not write, a relayhost on 465 beside a default_transport of the admin's, and (as
/// root) a master.cf others may write.
#[test]
fn a_foreign_service_or_a_custom_default_transport_is_refused() {
    require!(Need::Postfix, Need::Root);
    let p = pw("x");
    let rh = FakeRelay::start(RelayConfig::user("u", &p));
    let toml = |relay: &str| {
        format!("[relayhost]\nrelay = \"{relay}\"\nusername = \"u\"\npassword = \"{p}\"\n")
    };
    let inst = Instance::new();
    let master = inst.path("master.cf");
    let foreign = format!(
        "{}postrelay-smtps unix - - n - - smtp\n",
        String::from_utf8(fs::read(&master).unwrap()).unwrap()
    );
    fs::write(&master, &foreign).unwrap();
    inst.desired(&toml("[127.0.0.63]:465"));
    let before = inst.files();
    inst.apply()
        .error()
        .stderr_has("master.cf, line ")
        .stderr_has("a service named postrelay-smtps that postrelay did not write");
    assert_eq!(inst.files(), before);

    fs::write(
        &master,
        foreign
            .lines()
            .filter(|l| !l.starts_with("postrelay-smtps"))
            .map(|l| format!("{l}\n"))
            .collect::<String>(),
    )
    .unwrap();
    inst.edit_main_cf(|t| format!("{t}default_transport = relay\n"));
    let before = inst.files();
    inst.plan()
        .error()
        .stderr_has("default_transport = relay: a relayhost on port 465 needs default_transport = postrelay-smtps");
    inst.apply().error();
    assert_eq!(inst.files(), before);
    // A master.cf others may write is refused, named, before anything is written.
    inst.edit_main_cf(|t| t.replace("default_transport = relay\n", ""));
    fs::set_permissions(&master, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let before = inst.files();
    inst.apply()
        .error()
        .stderr_has(&format!("{}: ", master.display()))
        .stderr_has("writable by group or others");
    assert_eq!(inst.files(), before);
    fs::set_permissions(&master, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    inst.edit_main_cf(|t| format!("{t}default_transport = relay\n"));
    // The same relayhost on another port is fine with that default_transport.
    inst.desired(&toml(&rh.relay()));
    inst.apply().success();
}
