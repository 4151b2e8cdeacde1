//! `build` on tables held in memory: each route Postfix resolves comes out as entries
//! that give it under postrelay's rule, and the rest as findings.

use std::path::{Path, PathBuf};

use super::*;
use crate::import::maps::Map;
use crate::import::render;
use crate::secret::Secret;

fn map(pairs: &[(&str, &str)]) -> Vec<Map> {
    let pairs = pairs
        .iter()
        .enumerate()
        .map(|(i, (k, v))| (k.to_string(), Secret::new(v.to_string()), Some(i + 1)))
        .collect();
    vec![Map::new(PathBuf::from("/m"), "hash", pairs)]
}

fn rules(relayhost: Option<&str>, sender_auth: bool) -> Rules {
    Rules {
        relayhost: relayhost.map(str::to_string),
        sender_auth,
        delimiters: String::new(),
        null_key: "<>".into(),
    }
}

fn run(tables: &Tables, rules: &Rules) -> (Imported, Vec<String>) {
    let global = GlobalTls {
        level: "may".into(),
        at: "main.cf, line 2".into(),
        what: "smtp_tls_security_level = may".into(),
    };
    let mut findings = Vec::new();
    let imported = build(tables, rules, &global, "main.cf, line 1", &mut findings);
    (imported, findings.iter().map(ToString::to_string).collect())
}

/// (key, relay, username written, inherited, tls) of each entry.
type Row = (String, Option<String>, Option<String>, bool, Option<Tls>);

fn rows(imported: &Imported) -> Vec<Row> {
    imported
        .items()
        .map(|i| {
            (
                i.key
                    .as_ref()
                    .map_or("relayhost".into(), SenderKey::table_key),
                i.relay.as_ref().map(ToString::to_string),
                i.credentials.as_ref().map(|c| c.username.clone()),
                i.inherited,
                i.tls.as_ref().map(|(t, _)| *t),
            )
        })
        .collect()
}

fn row(
    key: &str,
    relay: Option<&str>,
    user: Option<&str>,
    inherited: bool,
    tls: Option<Tls>,
) -> Row {
    let s = |v: Option<&str>| v.map(str::to_string);
    (key.into(), s(relay), s(user), inherited, tls)
}

/// The imported entries, written inline and loaded by postrelay, are what was built.
fn loads(imported: &Imported) {
    let header = render::Header {
        config_dir: Path::new("/etc/postfix"),
        map_type: None,
    };
    let files = render::password_files(imported, None);
    let text = render::desired(&header, imported, &[], &files);
    let d = crate::desired::parse(Path::new("/x.toml"), &text, 0o600)
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    render::check_same(&d, imported).unwrap();
}

const RH: &str = "[rh.example]:587";
const R1: &str = "[r1.example]:587";
const R2: &str = "[r2.example]:2525";

#[test]
fn each_route_is_written_so_that_postrelay_gives_it() {
    let tables = Tables::new([
        map(&[
            ("@a.example", "a:pw"),
            ("y@a.example", "y:pw"),
            (RH, "rh:pw"),
            ("r1.example", "host:pw"),
        ]),
        map(&[
            ("@a.example", R1),
            ("x@a.example", "DUNNO"),
            ("z@a.example", R2),
            ("@b.example", RH),
        ]),
        map(&[(R1, "encrypt"), ("[gone.example]:25", "may")]),
    ]);
    let (imported, findings) = run(&tables, &rules(Some(RH), true));
    assert_eq!(
        rows(&imported),
        [
            row("relayhost", Some(RH), Some("rh"), false, Some(Tls::May)),
            // Its own relay and credentials.
            row("@a.example", Some(R1), Some("a"), false, Some(Tls::Encrypt)),
            // DUNNO: through the relayhost, with its domain's credentials (as Postfix
            // sends them now), which postrelay needs written to send them elsewhere.
            row("x@a.example", None, Some("a"), false, None),
            // Its domain's relay, written (postrelay would send it via the relayhost).
            row(
                "y@a.example",
                Some(R1),
                Some("y"),
                false,
                Some(Tls::Encrypt)
            ),
            row("z@a.example", Some(R2), Some("a"), false, Some(Tls::May)),
            // The relayhost's relay: the relayhost's credentials, not written.
            row("@b.example", Some(RH), None, true, Some(Tls::May)),
        ]
    );
    assert_eq!(
        findings,
        [
            "/m, line 4: credentials for r1.example: no sender's relay and not the relayhost (no route's server name or next hop is r1.example); not imported",
            "/m, line 2: TLS policy for [gone.example]:25: no sender's relay is [gone.example]:25 (postrelay's tls_policy holds its relays only); not imported",
        ]
    );
    loads(&imported);
}

#[test]
fn credentials_found_by_host_name_or_next_hop_are_written_for_their_senders() {
    let tables = Tables::new([
        map(&[
            ("rh.example", "host:pw"),
            (R2, "hop:pw"),
            ("@c.example", "c:pw"),
        ]),
        map(&[
            ("@a.example", "[RH.example]:2525"),
            ("@b.example", R2),
            ("@c.example", R2),
        ]),
        Vec::new(),
    ]);
    // Without sender-dependent authentication, @c.example's own entry is ignored.
    let (imported, findings) = run(&tables, &rules(Some(RH), false));
    assert_eq!(
        rows(&imported),
        [
            row("relayhost", Some(RH), Some("host"), false, Some(Tls::May)),
            row(
                "@a.example",
                Some("[rh.example]:2525"),
                Some("host"),
                false,
                Some(Tls::May)
            ),
            row("@b.example", Some(R2), Some("hop"), false, Some(Tls::May)),
            row("@c.example", Some(R2), Some("hop"), false, Some(Tls::May)),
        ]
    );
    assert_eq!(
        findings,
        [
            "/m, line 3: credentials for sender @c.example: Postfix ignores them (smtp_sender_dependent_authentication is off); not imported"
        ]
    );
    loads(&imported);
}

#[test]
fn what_postrelay_cannot_express_is_reported_not_imported() {
    let tables = Tables::new([
        map(&[("@mx.example", "mx:pw"), ("@bad.example", "no-colon")]),
        map(&[
            ("@bad.example", "[bad.example]:2525"),
            ("<>", "[bounce.example]"),
        ]),
        map(&[("[bad.example]:2525", "verify match=nexthop")]),
    ]);
    let (imported, findings) = run(&tables, &rules(None, true));
    assert_eq!(
        rows(&imported),
        [row(
            "@bad.example",
            Some("[bad.example]:2525"),
            None,
            false,
            Some(Tls::Verify)
        )]
    );
    assert_eq!(
        findings,
        [
            "/m, line 2: credentials under @bad.example: no ':' between username and password (Postfix would send an empty password); not imported",
            "/m, line 1: @mx.example: its mail goes straight to the recipient's MX (no relay for it, no relayhost); postrelay needs a relay for every sender; not imported",
            "/m, line 1: relay [bad.example]:2525: TLS attributes \"match=nexthop\" dropped: postrelay writes the level only",
            "/m, line 2: <>: no route uses this entry; not imported",
        ]
    );
}
