//! The plan for hand-made host states, one reason at a time: no Postfix, no files.

use std::path::{Path, PathBuf};

use super::*;
use crate::desired::parse_str;
use crate::fs::{Meta, Snapshot};
use crate::state::{Compiled, MainCfFile};
use crate::syntax::maincf::MainCf;

const DIR: &str = "/etc/postfix";
const ROOT: (u32, u32) = (0, 0);

fn desired() -> Desired {
    parse_str(
        r#"
        [relayhost]
        relay = "[rh.example]:587"
        username = "rh"
        password = "rh-pw"
        [[sender]]
        domain = "a.example"
        relay = "[a.example]:587"
        username = "a"
        password = "a-pw"
        "#,
    )
    .unwrap()
}

fn meta(mode: u32, uid: u32) -> Meta {
    Meta {
        mode,
        uid,
        gid: 0,
        dev: 1,
        ino: 2,
        size: 3,
        mtime: (4, 5),
        ctime: (4, 5),
    }
}

fn snapshot(bytes: &[u8], mode: u32) -> Snapshot {
    Snapshot {
        bytes: Secret::new(bytes.to_vec()),
        meta: meta(mode, 0),
    }
}

fn target(map_type: &str) -> Target {
    Target {
        config_dir: PathBuf::from(DIR),
        map_type: map_type.into(),
    }
}

/// main.cf holding every managed parameter as `d` wants it, and a CA (so relays named
/// by host name, `secure` by default, need no CA parameter).
fn synced_main_cf(d: &Desired, map_type: &str) -> String {
    let mut text = String::from("smtp_tls_CApath = /etc/ssl/certs\n");
    for (n, v) in parameters(d, &target(map_type), &[], &MapKind::CORE, &[]) {
        text.push_str(&format!("{n} = {v}\n"));
    }
    text
}

/// A host already in sync with `d`: sources, compiled maps and main.cf all right.
fn synced(d: &Desired, map_type: &str) -> State {
    let maps = MapKind::CORE
        .iter()
        .map(|&kind| {
            let table = d.table(kind);
            let compiled = map_type != "texthash";
            MapFile {
                kind,
                source_path: Path::new(DIR).join(kind.file_name()),
                source: Some(snapshot(table.bytes.expose(), kind.mode()).into()),
                compiled_path: compiled
                    .then(|| Path::new(DIR).join(format!("{}.db", kind.file_name()))),
                compiled: compiled.then(|| Compiled {
                    meta: meta(kind.mode(), 0),
                    content: Content::Desired,
                }),
            }
        })
        .collect();
    State {
        target: target(map_type),
        owner: ROOT,
        main_cf: MainCfFile {
            link: Path::new(DIR).join("main.cf"),
            path: Path::new(DIR).join("main.cf"),
            snapshot: snapshot(synced_main_cf(d, map_type).as_bytes(), 0o644),
        },
        master_cf: None,
        maps,
        kept: Vec::new(),
        reload_pending: false,
        ca_bundle: Some(PathBuf::from("/etc/ssl/certs/ca-certificates.crt")),
        record: None,
        postconf: None,
    }
}

fn map(state: &mut State, kind: MapKind) -> &mut MapFile {
    &mut state.maps[kind.index()]
}

/// (kind, reasons, write_source, rebuild) of each map change.
fn summary(p: &Plan) -> Vec<(MapKind, Vec<Reason>, bool, bool)> {
    p.maps
        .iter()
        .map(|m| (m.kind, m.reasons.clone(), m.write_source, m.rebuild))
        .collect()
}

#[test]
fn a_host_in_sync_needs_nothing() {
    let d = desired();
    let p = plan(&d, &synced(&d, "hash")).unwrap();
    assert!(p.is_empty());
    assert!(p.maps.is_empty() && p.main_cf.is_none() && p.notes.is_empty());
    assert_eq!(p.commands(), []);
}

#[test]
fn a_fresh_host_gets_everything() {
    let d = desired();
    let mut s = synced(&d, "hash");
    for m in &mut s.maps {
        m.source = None;
        m.compiled = None;
    }
    s.main_cf.snapshot = snapshot(b"myhostname = h\n", 0o644);
    let p = plan(&d, &s).unwrap();
    assert_eq!(
        summary(&p),
        MapKind::CORE.map(|k| (k, vec![Reason::New], true, true))
    );
    assert!(p.maps.iter().all(|m| m.old.is_none()));
    assert_eq!(p.maps[0].new, d.table(MapKind::SaslPasswd).bytes);
    assert_eq!(p.maps[0].entries, 2);
    let edits = &p.main_cf.as_ref().unwrap().edits;
    // The 8 managed parameters, and a CA for the relays' default level, secure.
    assert_eq!(edits.len(), 9);
    assert!(edits.iter().all(|e| matches!(e, Edit::Added { .. })));
    let postmap = |name: &str| Command::Postmap {
        source: Path::new(DIR).join(name),
    };
    let postmaps = ["sasl_passwd", "sender_relay", "tls_policy"].map(postmap);
    assert_eq!(p.commands(), held_all(postmaps.to_vec()));
}

/// `postmaps`, then the commands of a switch holding all mail.
fn held_all(postmaps: Vec<Command>) -> Vec<Command> {
    let switch = [
        Command::Hold(Hold::All),
        Command::Check,
        Command::Reload,
        Command::Release,
    ];
    [postmaps, switch.to_vec()].concat()
}

/// One kind of drift: how to make it, and what the plan must say.
struct Drift {
    name: &'static str,
    kind: MapKind,
    make: fn(&mut MapFile),
    reasons: Vec<Reason>,
    write_source: bool,
    rebuild: bool,
}

fn drifts() -> Vec<Drift> {
    use Reason::*;
    vec![
        Drift {
            name: "source missing, compiled present",
            kind: MapKind::SenderRelay,
            make: |m| m.source = None,
            reasons: vec![New],
            write_source: true,
            rebuild: true,
        },
        Drift {
            name: "source differs",
            kind: MapKind::TlsPolicy,
            make: |m| m.source = Some(snapshot(b"[x]:25 may\n", 0o644).into()),
            reasons: vec![ContentDiffers],
            write_source: true,
            rebuild: true,
        },
        Drift {
            name: "password source readable by others",
            kind: MapKind::SaslPasswd,
            make: |m| m.source.as_mut().unwrap().meta.mode = 0o644,
            reasons: vec![Mode {
                part: Part::Source,
                mode: 0o644,
            }],
            write_source: true,
            rebuild: true,
        },
        Drift {
            name: "password source owned by nobody",
            kind: MapKind::SaslPasswd,
            make: |m| m.source.as_mut().unwrap().meta.uid = 65534,
            reasons: vec![Owner {
                part: Part::Source,
                uid: 65534,
                want: 0,
            }],
            write_source: true,
            rebuild: true,
        },
        Drift {
            name: "compiled password map readable by others and owned by nobody",
            kind: MapKind::SaslPasswd,
            make: |m| m.compiled.as_mut().unwrap().meta = meta(0o640, 65534),
            reasons: vec![
                Mode {
                    part: Part::Compiled,
                    mode: 0o640,
                },
                Owner {
                    part: Part::Compiled,
                    uid: 65534,
                    want: 0,
                },
            ],
            write_source: false,
            rebuild: true,
        },
        Drift {
            name: "compiled map missing",
            kind: MapKind::SenderRelay,
            make: |m| m.compiled = None,
            reasons: vec![CompiledMissing],
            write_source: false,
            rebuild: true,
        },
        Drift {
            name: "compiled map unreadable",
            kind: MapKind::SaslPasswd,
            make: |m| m.compiled.as_mut().unwrap().content = Content::Unreadable,
            reasons: vec![CompiledUnreadable],
            write_source: false,
            rebuild: true,
        },
        Drift {
            name: "compiled map holds other entries",
            kind: MapKind::TlsPolicy,
            make: |m| m.compiled.as_mut().unwrap().content = Content::Other,
            reasons: vec![CompiledDiffers],
            write_source: false,
            rebuild: true,
        },
        Drift {
            name: "compiled map not read",
            kind: MapKind::TlsPolicy,
            make: |m| m.compiled.as_mut().unwrap().content = Content::NotRead,
            reasons: vec![CompiledDiffers],
            write_source: false,
            rebuild: true,
        },
    ]
}

#[test]
fn every_drift_has_its_reason() {
    let d = desired();
    for drift in drifts() {
        let mut s = synced(&d, "hash");
        (drift.make)(map(&mut s, drift.kind));
        let p = plan(&d, &s).unwrap();
        assert_eq!(
            summary(&p),
            [(drift.kind, drift.reasons, drift.write_source, drift.rebuild)],
            "{}",
            drift.name
        );
        assert!(p.main_cf.is_none(), "{}", drift.name);
        // Drift of sender_relay's content: what Postfix routes by now is not known from
        // the source, so all mail is held during the switch.
        let held = drift.kind == MapKind::SenderRelay;
        let postmap = vec![Command::Postmap {
            source: Path::new(DIR).join(drift.kind.file_name()),
        }];
        let commands = if held {
            held_all(postmap)
        } else {
            [postmap, vec![Command::Check, Command::Reload]].concat()
        };
        assert_eq!(
            p.commands(),
            commands,
            "{}: a map change is reloaded too",
            drift.name
        );
    }
}

#[test]
fn every_map_has_its_permissions_checked() {
    let d = desired();
    let mut s = synced(&d, "hash");
    let m = map(&mut s, MapKind::SenderRelay);
    m.source.as_mut().unwrap().meta = meta(0o666, 65534);
    m.compiled.as_mut().unwrap().meta = meta(0o600, 0);
    let p = plan(&d, &s).unwrap();
    let mode = |part, mode| Reason::Mode { part, mode };
    assert_eq!(
        summary(&p),
        [(
            MapKind::SenderRelay,
            vec![
                mode(Part::Source, 0o666),
                Reason::Owner {
                    part: Part::Source,
                    uid: 65534,
                    want: 0
                },
                mode(Part::Compiled, 0o600)
            ],
            true,
            true
        )]
    );
}

#[test]
fn entry_changes_name_each_key() {
    let d = desired();
    let mut s = synced(&d, "hash");
    // By hand: a's password and the relayhost's username differ, a stale entry, a
    // duplicate (postmap keeps the first) and mixed case.
    let old = "@A.example a:old-pw\n[rh.example]:587 someone:rh-pw\n@stale.example s:pw\n@stale.example t:pw\n";
    map(&mut s, MapKind::SaslPasswd).source = Some(snapshot(old.as_bytes(), 0o600).into());
    let relay = "@a.example [elsewhere.example]:25\n";
    map(&mut s, MapKind::SenderRelay).source = Some(snapshot(relay.as_bytes(), 0o644).into());
    let tls = format!(
        "# hand-made\n{}",
        String::from_utf8_lossy(d.table(MapKind::TlsPolicy).bytes.expose())
            .lines()
            .skip(1)
            .collect::<Vec<_>>()
            .join("\n")
    );
    map(&mut s, MapKind::TlsPolicy).source = Some(snapshot(tls.as_bytes(), 0o644).into());
    let p = plan(&d, &s).unwrap();
    let changes: Vec<&Vec<EntryChange>> = p.maps.iter().map(|m| &m.entries_changed).collect();
    assert_eq!(
        changes,
        [
            &vec![
                EntryChange::Changed("@a.example".into(), Changed::Password),
                EntryChange::Removed("@stale.example".into()),
                EntryChange::Changed("[rh.example]:587".into(), Changed::Username),
            ],
            &vec![EntryChange::Changed("@a.example".into(), Changed::Value)],
            &vec![],
        ]
    );
    assert_eq!(p.maps[2].reasons, [Reason::ContentDiffers], "layout only");
}

#[test]
fn kept_maps_stay_after_postrelays_own() {
    let d = desired();
    let mut s = synced(&d, "hash");
    s.kept = vec![
        KeptMap {
            kind: MapKind::SaslPasswd,
            spec: "hash:/etc/postfix/sasl/sasl_passwd".into(),
            content: crate::state::Kept::Missing,
        },
        KeptMap {
            kind: MapKind::TlsPolicy,
            spec: "texthash:/etc/postfix/my_tls".into(),
            content: crate::state::Kept::NotRead("x".into()),
        },
    ];
    let p = plan(&d, &s).unwrap();
    let m = p.main_cf.as_ref().unwrap();
    let doc = MainCf::parse(&m.new);
    assert_eq!(
        doc.get("smtp_sasl_password_maps").unwrap(),
        "hash:/etc/postfix/sasl_passwd, hash:/etc/postfix/sasl/sasl_passwd"
    );
    assert_eq!(
        doc.get("smtp_tls_policy_maps").unwrap(),
        "hash:/etc/postfix/tls_policy, texthash:/etc/postfix/my_tls"
    );
    assert_eq!(p.kept, s.kept);
    assert!(matches!(p.conflicts[..], [Conflict::KeptMissing { .. }]));
    // A list already holding those maps stays as written.
    let written = String::from_utf8(m.new.clone()).unwrap().replace(
        ", hash:/etc/postfix/sasl/sasl_passwd",
        ",hash:/etc/postfix/sasl/sasl_passwd",
    );
    s.main_cf.snapshot = snapshot(written.as_bytes(), 0o644);
    assert!(plan(&d, &s).unwrap().main_cf.is_none());
}

#[test]
fn texthash_maps_are_written_without_postmap() {
    let d = desired();
    let mut s = synced(&d, "texthash");
    assert!(plan(&d, &s).unwrap().is_empty());
    map(&mut s, MapKind::SenderRelay).source = None;
    let p = plan(&d, &s).unwrap();
    assert_eq!(
        summary(&p),
        [(MapKind::SenderRelay, vec![Reason::New], true, false)]
    );
    assert_eq!(p.commands(), held_all(Vec::new()));
}

#[test]
fn main_cf_edits_and_relayhost_notes() {
    let d = desired();
    let mut s = synced(&d, "hash");
    let text = synced_main_cf(&d, "hash").replace("[rh.example]:587", "[old.example]:25");
    s.main_cf.snapshot = snapshot(text.as_bytes(), 0o640);
    let p = plan(&d, &s).unwrap();
    let m = p.main_cf.as_ref().unwrap();
    assert_eq!(
        m.edits,
        [Edit::Changed {
            name: "relayhost".into(),
            old: "[old.example]:25".into()
        }]
    );
    assert_eq!(m.old, text.as_bytes());
    assert_eq!(m.new, synced_main_cf(&d, "hash").as_bytes());
    // A new relayhost moves every sender it serves: all mail is held.
    assert_eq!(p.hold, Some(Hold::All));

    // Without [relayhost], main.cf's relayhost is kept, with a warning.
    let no_rh =
        parse_str("[[sender]]\ndomain = \"a.example\"\nrelay = \"[a.example]:587\"\n").unwrap();
    let mut s = synced(&no_rh, "hash");
    let with = format!(
        "{}relayhost = [legacy.example]:25\n",
        synced_main_cf(&no_rh, "hash")
    );
    s.main_cf.snapshot = snapshot(with.as_bytes(), 0o644);
    let p = plan(&no_rh, &s).unwrap();
    assert!(p.is_empty() && p.notes.is_empty());
    assert_eq!(
        p.conflicts,
        [Conflict::LeftRelayhost("[legacy.example]:25".into())]
    );
    let p = plan(&no_rh, &synced(&no_rh, "hash")).unwrap();
    assert_eq!(p.notes, [Note::NoRelayhost]);
}

#[test]
fn a_main_cf_postfix_refuses_is_every_bad_line() {
    let d = desired();
    let mut s = synced(&d, "hash");
    s.main_cf.snapshot = snapshot(b"a = 1\njustaword\n= value\n", 0o644);
    let err = plan(&d, &s).unwrap_err().to_string();
    assert_eq!(
        err,
        "/etc/postfix/main.cf, line 2: missing '=' after attribute name: \"justaword\"\n\
         /etc/postfix/main.cf, line 3: missing attribute name: \"= value\""
    );
}

#[test]
fn an_owed_reload_is_a_change() {
    let d = desired();
    let mut s = synced(&d, "hash");
    s.reload_pending = true;
    let p = plan(&d, &s).unwrap();
    assert!(!p.is_empty());
    // What Postfix routes by until it reloads is not known: all mail is held.
    assert_eq!(p.commands(), held_all(Vec::new()));
}

#[test]
fn a_verifying_level_gets_a_ca_only_when_main_cf_has_none() {
    let d = desired();
    let mut s = synced(&d, "hash");
    // No CA in main.cf: the system bundle is filled in.
    let without = synced_main_cf(&d, "hash").replace("smtp_tls_CApath = /etc/ssl/certs\n", "");
    s.main_cf.snapshot = snapshot(without.as_bytes(), 0o644);
    let p = plan(&d, &s).unwrap();
    assert_eq!(
        p.main_cf.unwrap().edits,
        [Edit::Added {
            name: "smtp_tls_CAfile".into()
        }]
    );
    // No bundle either: refused, naming the parameters.
    s.ca_bundle = None;
    let err = plan(&d, &s).unwrap_err().to_string();
    assert!(
        err.starts_with(
            "/etc/postfix/main.cf: relays [a.example]:587, [rh.example]:587 check certificates"
        ) && err.contains("set smtp_tls_CAfile or smtp_tls_CApath in main.cf"),
        "{err}"
    );
    // Relays that do not verify certificates need no CA.
    let encrypt =
        parse_str("[relayhost]\nrelay = \"[rh.example]:587\"\ntls = \"encrypt\"\n").unwrap();
    let mut s = synced(&encrypt, "hash");
    s.ca_bundle = None;
    s.main_cf.snapshot = snapshot(
        synced_main_cf(&encrypt, "hash")
            .replace("smtp_tls_CApath = /etc/ssl/certs\n", "")
            .as_bytes(),
        0o644,
    );
    assert!(plan(&encrypt, &s).unwrap().is_empty());
}

#[test]
fn only_senders_whose_route_changes_are_held() {
    let two = |a_relay: &str, b: bool, a_pw: &str| {
        let b = if b {
            "[[sender]]\ndomain = \"b.example\"\nrelay = \"[b.example]:587\"\nusername = \"b\"\npassword = \"b-pw\"\n"
        } else {
            ""
        };
        parse_str(&format!(
            "[relayhost]\nrelay = \"[rh.example]:587\"\n\
             [[sender]]\ndomain = \"a.example\"\nrelay = \"{a_relay}\"\nusername = \"a\"\npassword = \"{a_pw}\"\n\
             [[sender]]\naddress = \"u@c.example\"\nrelay = \"[c.example]:587\"\nusername = \"c\"\npassword = \"c-pw\"\n{b}"
        ))
        .unwrap()
    };
    let old = two("[a.example]:587", true, "a-pw");
    let host = synced(&old, "hash");
    let hold = |new: &Desired| plan(new, &host).unwrap().hold;
    assert_eq!(hold(&old), None, "in sync");
    assert_eq!(
        hold(&two("[a.example]:587", true, "a-pw2")),
        None,
        "a rotation"
    );
    assert_eq!(
        hold(&two("[a2.example]:587", true, "a-pw")),
        Some(Hold::Senders(vec!["@a.example".into()])),
        "a domain moved to another relay"
    );
    assert_eq!(
        hold(&two("[a.example]:587", false, "a-pw")),
        Some(Hold::Senders(vec!["@b.example".into()])),
        "a domain removed: it moves to the relayhost"
    );
    let mut added = synced(&two("[a.example]:587", false, "a-pw"), "hash");
    added.main_cf = host.main_cf.clone();
    assert_eq!(
        plan(&old, &added).unwrap().hold,
        Some(Hold::Senders(vec!["@b.example".into()])),
        "a domain added: it leaves the relayhost"
    );
    // Only permissions: nothing moves.
    let mut perms = synced(&old, "hash");
    map(&mut perms, MapKind::SenderRelay)
        .source
        .as_mut()
        .unwrap()
        .meta
        .mode = 0o600;
    assert_eq!(plan(&old, &perms).unwrap().hold, None);
}

#[test]
fn a_hold_left_by_a_crashed_run_is_removed_and_the_mail_released() {
    let d = desired();
    let mut s = synced(&d, "hash");
    let text = format!(
        "{}sender_dependent_default_transport_maps = texthash:{DIR}/postrelay_hold, hash:/etc/postfix/mine\n",
        synced_main_cf(&d, "hash")
    );
    s.main_cf.snapshot = snapshot(text.as_bytes(), 0o644);
    let p = plan(&d, &s).unwrap();
    assert!(p.release);
    assert_eq!(p.hold, None, "removing a hold holds nothing");
    let m = p.main_cf.as_ref().unwrap();
    assert_eq!(
        MainCf::parse(&m.new)
            .get("sender_dependent_default_transport_maps")
            .unwrap(),
        "hash:/etc/postfix/mine"
    );
    assert_eq!(
        p.commands(),
        [Command::Check, Command::Reload, Command::Release]
    );
}
