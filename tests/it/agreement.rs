//! Validation, plan and verify agree, because they share one lookup rule (`routing`):
//! on 20 mixed address/domain/relayhost cases, Postfix's lookups over the tables the
//! plan writes (simulated here, in Postfix's order: address, `@domain`, next hop) give
//! every sender exactly the relay and credentials `verify` checks; no password is ever
//! looked up for a relay other than its own entry's; and validation refuses exactly the
//! cases where one would be, naming that relay.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;

use postrelay::desired::{self, Desired, SenderKey};
use postrelay::managed::MapKind;
use postrelay::plan;
use postrelay::state::{self, State};
use postrelay::syntax::maincf::MainCf;
use postrelay::syntax::table::Table;
use postrelay::verify::{self, Who};

/// A `[[sender]]`: `@domain` or an address, its relay, its username (password
/// `USER-pw`).
struct Entry(&'static str, Option<&'static str>, Option<&'static str>);

struct Case {
    name: &'static str,
    /// The relay and username of `[relayhost]`.
    relayhost: Option<(&'static str, Option<&'static str>)>,
    senders: Vec<Entry>,
    /// The address validation must refuse, or `None`.
    refused: Option<&'static str>,
}

const R1: &str = "[r1.example]:587";
const R2: &str = "[r2.example]:2525";
const RH: &str = "[rh.example]:587";

fn cases() -> Vec<Case> {
    let case = |name, relayhost, senders, refused| Case {
        name,
        relayhost,
        senders,
        refused,
    };
    let rh = Some((RH, Some("rh")));
    vec![
        case("relayhost only", rh, vec![], None),
        case(
            "relayhost without credentials, a domain on its own relay",
            Some((RH, None)),
            vec![Entry("@a.example", Some(R1), Some("a"))],
            None,
        ),
        case(
            "address on its domain's relay, no credentials",
            rh,
            vec![
                Entry("@a.example", Some(R1), Some("a")),
                Entry("x@a.example", Some(R1), None),
            ],
            None,
        ),
        case(
            "address on another relay, no credentials",
            rh,
            vec![
                Entry("@a.example", Some(R1), Some("a")),
                Entry("x@a.example", Some(R2), None),
            ],
            Some("x@a.example"),
        ),
        case(
            "address through the relayhost, no credentials, domain on its own relay",
            rh,
            vec![
                Entry("@a.example", Some(R1), Some("a")),
                Entry("x@a.example", None, None),
            ],
            Some("x@a.example"),
        ),
        case(
            "address through the relayhost with its own credentials",
            rh,
            vec![
                Entry("@a.example", Some(R1), Some("a")),
                Entry("x@a.example", None, Some("x")),
            ],
            None,
        ),
        case(
            "domain and address both through the relayhost",
            rh,
            vec![
                Entry("@a.example", None, Some("a")),
                Entry("x@a.example", None, None),
            ],
            None,
        ),
        case(
            "domain through the relayhost, address on its own relay without credentials",
            rh,
            vec![
                Entry("@a.example", None, Some("a")),
                Entry("x@a.example", Some(R1), None),
            ],
            Some("x@a.example"),
        ),
        case(
            "nobody has credentials but the relayhost",
            rh,
            vec![
                Entry("@a.example", None, None),
                Entry("x@a.example", Some(R1), None),
            ],
            None,
        ),
        case(
            "a domain on the relayhost's relay uses its credentials",
            rh,
            vec![Entry("@a.example", Some(RH), None)],
            None,
        ),
        case(
            "an address without a domain entry",
            rh,
            vec![Entry("x@a.example", Some(R1), Some("x"))],
            None,
        ),
        case(
            "an address with nothing of its own",
            rh,
            vec![Entry("x@a.example", None, None)],
            None,
        ),
        case(
            "no relayhost, a domain without credentials",
            None,
            vec![Entry("@a.example", Some(R1), None)],
            None,
        ),
        case(
            "no relayhost, two domains on one relay",
            None,
            vec![
                Entry("@a.example", Some(R1), Some("a")),
                Entry("@b.example", Some(R1), Some("b")),
            ],
            None,
        ),
        case(
            "address on another relay with its own credentials",
            rh,
            vec![
                Entry("@a.example", Some(R1), Some("a")),
                Entry("x@a.example", Some(R2), Some("x")),
            ],
            None,
        ),
        case(
            "keys in mixed case",
            rh,
            vec![
                Entry("@Example.ORG", Some(R1), Some("org")),
                Entry("Wes@Example.org", Some(R1), None),
            ],
            None,
        ),
        case(
            "relayhost without credentials, a domain on its relay",
            Some((RH, None)),
            vec![Entry("@a.example", Some(RH), None)],
            None,
        ),
        case(
            "relayhost without credentials, a domain's credentials through it",
            Some((RH, None)),
            vec![Entry("@a.example", None, Some("a"))],
            None,
        ),
        case(
            "domain on its own relay without credentials, address through the relayhost",
            rh,
            vec![
                Entry("@a.example", Some(R1), None),
                Entry("x@a.example", None, None),
            ],
            None,
        ),
        case(
            "domain on the relayhost's relay with credentials, address through the relayhost",
            rh,
            vec![
                Entry("@a.example", Some(RH), Some("a")),
                Entry("x@a.example", None, None),
            ],
            None,
        ),
    ]
}

fn toml(relayhost: Option<(&str, Option<&str>)>, senders: &[Entry]) -> String {
    let creds = |user: Option<&str>| {
        user.map_or(String::new(), |u| {
            format!("username = \"{u}\"\npassword = \"{u}-pw\"\n")
        })
    };
    let mut out = String::from("[postfix]\nmap_type = \"hash\"\n");
    if let Some((relay, user)) = relayhost {
        out += &format!("[relayhost]\nrelay = \"{relay}\"\n{}", creds(user));
    }
    for Entry(key, relay, user) in senders {
        out += &match key.strip_prefix('@') {
            Some(domain) => format!("[[sender]]\ndomain = \"{domain}\"\n"),
            None => format!("[[sender]]\naddress = \"{key}\"\n"),
        };
        if let Some(r) = relay {
            out += &format!("relay = \"{r}\"\n");
        }
        out += &creds(*user);
    }
    out
}

/// The tables and relayhost a plan writes on a fresh host.
struct Written {
    sasl: HashMap<String, String>,
    sender_relay: HashMap<String, String>,
    relayhost: Option<String>,
}

fn written(d: &Desired) -> Written {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("main.cf"), "").unwrap();
    let dir = state::config_dir(d, Some(tmp.path())).unwrap();
    let p = plan::plan(d, &State::read(d, dir).unwrap()).unwrap();
    let table = |kind: MapKind| -> HashMap<String, String> {
        let m = p.maps.iter().find(|m| m.kind == kind).unwrap();
        Table::parse(m.new.expose())
            .entries()
            .into_iter()
            .map(|e| {
                let s = |b: Vec<u8>| String::from_utf8(b).unwrap();
                (s(e.key), s(e.value))
            })
            .collect()
    };
    let main_cf = MainCf::parse(&p.main_cf.as_ref().unwrap().new);
    Written {
        sasl: table(MapKind::SaslPasswd),
        sender_relay: table(MapKind::SenderRelay),
        relayhost: main_cf.get("relayhost").filter(|r| !r.is_empty()),
    }
}

/// What Postfix does for mail from `sender` ("" for a bounce): the next hop, and the
/// `sasl_passwd` key and value it authenticates with.
fn lookup(w: &Written, sender: &str) -> (Option<String>, Option<(String, String)>) {
    let sender = sender.to_ascii_lowercase();
    let keys: Vec<String> = match sender.rsplit_once('@') {
        Some((_, domain)) => vec![sender.clone(), format!("@{domain}")],
        None => Vec::new(),
    };
    // sender_dependent_relayhost_maps: the first key found decides; DUNNO means relayhost.
    let relay = match keys.iter().find_map(|k| w.sender_relay.get(k)) {
        Some(v) if v != "DUNNO" => Some(v.clone()),
        _ => w.relayhost.clone(),
    };
    // smtp_sasl_password_maps: sender keys, then the server's name, then the next hop.
    let mut sasl_keys = keys;
    if let Some(r) = &relay {
        let host = r.trim_start_matches('[').split([']', ':']).next().unwrap();
        sasl_keys.extend([host.to_string(), r.clone()]);
    }
    let creds = sasl_keys
        .into_iter()
        .find_map(|k| Some((k.clone(), w.sasl.get(&k)?.clone())));
    (relay, creds)
}

/// An address that sends as `key` (a domain entry's key is `@domain`).
fn probe(key: &str) -> String {
    match key.strip_prefix('@') {
        Some(domain) => format!("probe@{domain}"),
        None => key.to_string(),
    }
}

/// The relay the password under `sasl_key` belongs to: its entry's next hop.
fn own_relay(w: &Written, sasl_key: &str) -> Option<String> {
    if w.relayhost.as_deref() == Some(sasl_key) {
        return w.relayhost.clone();
    }
    lookup(w, &probe(sasl_key)).0
}

fn check_accepted(case: &Case, d: &Desired) {
    let w = written(d);
    let mut senders: Vec<String> = case.senders.iter().map(|e| probe(e.0)).collect();
    senders.extend(["probe@unlisted.example".to_string(), String::new()]);
    for sender in &senders {
        let (relay, creds) = lookup(&w, sender);
        if let Some((key, _)) = creds {
            assert_eq!(
                own_relay(&w, &key),
                relay,
                "{}: {sender:?} offers the password of {key:?} to {relay:?}",
                case.name
            );
        }
    }
    for check in verify::checks(d, None).unwrap() {
        let sender = match &check.who {
            Who::Relayhost => "probe@unlisted.example".to_string(),
            Who::Sender(SenderKey::Domain(domain)) => format!("probe@{domain}"),
            Who::Sender(SenderKey::Wildcard(domain)) => format!("probe@any.{domain}"),
            Who::Sender(SenderKey::Address(address)) | Who::Address { address, .. } => {
                address.clone()
            }
        };
        let (relay, creds) = lookup(&w, &sender);
        let checked = check
            .credentials
            .map(|c| format!("{}:{}", c.username, c.password.expose()));
        assert_eq!(
            (Some(check.relay.to_string()), checked),
            (relay, creds.map(|(_, v)| v)),
            "{}: verify checks {} otherwise than Postfix sends",
            case.name,
            check.who.name()
        );
    }
}

/// The refused address, given credentials of its own so the case loads; without that
/// entry, Postfix would look up its domain's password for another relay.
fn check_refused(case: &Case, address: &str, message: &str) {
    let senders: Vec<Entry> = case
        .senders
        .iter()
        .map(|e| match e.0 == address {
            true => Entry(e.0, e.1, Some("fix")),
            false => Entry(e.0, e.1, e.2),
        })
        .collect();
    let fixed = desired::parse(
        "fixed.toml".as_ref(),
        &toml(case.relayhost, &senders),
        0o600,
    )
    .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    let mut w = written(&fixed);
    w.sasl.remove(address);
    let (relay, creds) = lookup(&w, address);
    let (key, _) = creds.expect("the domain's password");
    let relay = relay.unwrap();
    assert_ne!(own_relay(&w, &key), Some(relay.clone()), "{}", case.name);
    let want =
        format!("sender {address:?}: has no credentials, so Postfix would send those of {key:?}");
    assert!(
        message.contains(&want) && message.contains(&format!(" to {relay}: ")),
        "{}: {message}",
        case.name
    );
}

#[test]
fn validation_plan_and_verify_agree_on_every_route() {
    let cases = cases();
    assert_eq!(cases.len(), 20);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("postrelay.toml");
    for case in &cases {
        fs::write(&path, toml(case.relayhost, &case.senders)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        match (desired::load(&path), case.refused) {
            (Ok(d), None) => check_accepted(case, &d),
            (Err(e), Some(address)) => check_refused(case, address, &e.to_string()),
            (Ok(_), Some(a)) => panic!("{}: accepted, but {a} leaks", case.name),
            (Err(e), None) => panic!("{}: refused: {e}", case.name),
        }
    }
}
