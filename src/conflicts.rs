//! Settings on the host that postrelay does not own but that change what its own do:
//! main.cf parameters that override the sender-dependent relays for some mail, a
//! relayhost left in place without `[relayhost]`, and the maps postrelay keeps beside
//! its own (missing, unreadable, or holding a key postrelay's map now answers first).
//! Pure functions over what `state` read; `report` words them as warnings.

use std::collections::HashMap;
use std::path::Path;

use crate::desired::{Desired, SenderKey};
use crate::hold;
use crate::managed::{MapKind, RELAYHOST, SMTPS_SERVICE};
use crate::state::{Kept, KeptMap};
use crate::syntax::maincf::{self, MainCf};

/// Where the desired state defines a key that a kept map holds too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Definer {
    /// The `[[sender]]` at this line.
    Sender(usize),
    Relayhost,
    /// A relay's TLS level.
    Relay,
}

/// One setting that defeats or shadows what postrelay manages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// A kept map whose file is not there: Postfix's lookups through it fail.
    KeptMissing { kind: MapKind, spec: String },
    KeptUnreadable {
        kind: MapKind,
        spec: String,
        why: String,
    },
    /// A kept map holds `key`, which postrelay's map (searched first) defines too.
    Shadowed {
        kind: MapKind,
        spec: String,
        key: String,
        by: Definer,
    },
    /// A main.cf parameter that sends some mail past the sender-dependent relays.
    Overrides {
        parameter: &'static str,
        value: String,
    },
    /// main.cf's relayhost, kept without `[relayhost]`: unlisted senders and bounces
    /// use it without credentials.
    LeftRelayhost(String),
}

/// main.cf parameters (as Postfix reads them) that defeat sender-dependent relaying:
/// postconf(5) `sender_dependent_relayhost_maps` is overruled by `relay_transport`,
/// `sender_dependent_default_transport_maps`, `default_transport` and transport(5).
/// A hold a crashed apply left in `dir`'s main.cf is postrelay's own (the next apply
/// removes it), not a conflict.
pub fn settings(main_cf: &MainCf, desired: &Desired, dir: &Path) -> Vec<Conflict> {
    let set = |name: &str| main_cf.get(name).filter(|v| !v.trim().is_empty());
    let mut out = Vec::new();
    let mut overrides = |parameter: &'static str, value: Option<String>| {
        if let Some(value) = value {
            out.push(Conflict::Overrides { parameter, value });
        }
    };
    overrides("transport_maps", set("transport_maps"));
    // postrelay's own values: its service for a relayhost on port 465, its
    // sender_transport map, and a hold a crashed apply left.
    overrides(
        "default_transport",
        set("default_transport").filter(|v| !matches!(v.trim(), "smtp" | SMTPS_SERVICE)),
    );
    let others: Vec<String> = set(hold::PARAMETER)
        .map(|v| {
            maincf::list(&v)
                .into_iter()
                .filter(|e| !hold::is_hold(e, dir) && !MapKind::SenderTransport.is_own(e, dir))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    overrides(
        hold::PARAMETER,
        (!others.is_empty()).then(|| others.join(", ")),
    );
    // relay_domains = $mydestination (the old default) names local domains only.
    overrides(
        "relay_domains",
        set("relay_domains").filter(|v| !matches!(v.trim(), "$mydestination" | "${mydestination}")),
    );
    if desired.relayhost.is_none()
        && let Some(v) = set(RELAYHOST)
    {
        out.push(Conflict::LeftRelayhost(v));
    }
    out
}

/// What is wrong with the maps postrelay keeps: missing, unreadable, or shadowed.
pub fn kept(kept: &[KeptMap], desired: &Desired) -> Vec<Conflict> {
    // Each sender's line by key: only built when a kept map shadows an entry.
    let mut senders: Option<HashMap<&SenderKey, usize>> = None;
    let relayhost = desired.relayhost.as_ref().map(|rh| rh.relay.as_str());
    let mut out = Vec::new();
    for k in kept {
        let (kind, spec) = (k.kind, k.spec.clone());
        let entries = match &k.content {
            Kept::Entries(e) => e,
            Kept::Missing => {
                out.push(Conflict::KeptMissing { kind, spec });
                continue;
            }
            Kept::Unreadable(why) => {
                let why = why.clone();
                out.push(Conflict::KeptUnreadable { kind, spec, why });
                continue;
            }
            Kept::NotRead(_) => continue,
        };
        // Sorted by key.
        let wanted: Vec<&str> = desired
            .table(kind)
            .expose_entries()
            .map(|(k, _)| k)
            .collect();
        for (key, _) in entries.expose() {
            let key = key.to_ascii_lowercase();
            if wanted.binary_search(&key.as_str()).is_err() {
                continue;
            }
            let senders = senders
                .get_or_insert_with(|| desired.senders.iter().map(|s| (&s.key, s.line)).collect());
            let sender = match key.strip_prefix('@') {
                Some(domain) => SenderKey::Domain(domain.to_string()),
                None => SenderKey::Address(key.clone()),
            };
            let by = match (kind, senders.get(&sender)) {
                (MapKind::TlsPolicy, _) => Definer::Relay,
                (_, Some(&line)) => Definer::Sender(line),
                _ if relayhost == Some(key.as_str()) => Definer::Relayhost,
                _ => Definer::Relay,
            };
            out.push(Conflict::Shadowed {
                kind,
                spec: spec.clone(),
                key,
                by,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::parse_str;
    use crate::secret::Secret;

    #[test]
    fn settings_that_override_sender_dependent_relays() {
        let d =
            parse_str("[[sender]]\ndomain = \"a.example\"\nrelay = \"[r.example]:587\"\n").unwrap();
        let main_cf = MainCf::parse(
            b"transport_maps = hash:/etc/postfix/transport\ndefault_transport = smtp:[x]:25\n\
              sender_dependent_default_transport_maps =\nrelay_domains = $mydestination\n\
              relayhost = [legacy.example]:25\n",
        );
        assert_eq!(
            settings(&main_cf, &d, Path::new("/etc/postfix")),
            [
                Conflict::Overrides {
                    parameter: "transport_maps",
                    value: "hash:/etc/postfix/transport".into()
                },
                Conflict::Overrides {
                    parameter: "default_transport",
                    value: "smtp:[x]:25".into()
                },
                Conflict::LeftRelayhost("[legacy.example]:25".into()),
            ]
        );
        let quiet = MainCf::parse(b"default_transport = smtp\nrelay_domains =\nrelayhost =\n");
        assert_eq!(settings(&quiet, &d, Path::new("/etc/postfix")), []);
        let relays = MainCf::parse(b"relay_domains = b.example\n");
        assert_eq!(settings(&relays, &d, Path::new("/etc/postfix")).len(), 1);
        // A hold a crashed apply left is postrelay's own; what else is listed is not.
        let held = |value: &str| {
            let text = format!("sender_dependent_default_transport_maps = {value}\n");
            settings(
                &MainCf::parse(text.as_bytes()),
                &d,
                Path::new("/etc/postfix"),
            )
        };
        assert_eq!(held("texthash:/etc/postfix/postrelay_hold"), []);
        assert_eq!(
            held("texthash:/etc/postfix/postrelay_hold, hash:/etc/postfix/mine"),
            [Conflict::Overrides {
                parameter: "sender_dependent_default_transport_maps",
                value: "hash:/etc/postfix/mine".into()
            }]
        );
    }

    #[test]
    fn kept_maps_missing_unreadable_or_shadowed() {
        let d = parse_str(
            "[relayhost]\nrelay = \"[rh.example]:587\"\nusername = \"u\"\npassword = \"p\"\n\
             [[sender]]\ndomain = \"a.example\"\nusername = \"a\"\npassword = \"p\"\n",
        )
        .unwrap();
        let entries = |e: &[(&str, &str)]| {
            Kept::Entries(Secret::new(
                e.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ))
        };
        let map = |spec: &str, content| KeptMap {
            kind: MapKind::SaslPasswd,
            spec: spec.into(),
            content,
        };
        let kept_maps = [
            map("hash:/x", Kept::Missing),
            map("hash:/y", Kept::Unreadable("postmap cannot read it".into())),
            map("mysql:/z", Kept::NotRead("a mysql table".into())),
            map(
                "hash:/w",
                entries(&[
                    ("@A.example", "old:pw"),
                    ("@b.example", "b:pw"),
                    ("[rh.example]:587", "x:y"),
                ]),
            ),
        ];
        let sasl = MapKind::SaslPasswd;
        assert_eq!(
            kept(&kept_maps, &d),
            [
                Conflict::KeptMissing {
                    kind: sasl,
                    spec: "hash:/x".into()
                },
                Conflict::KeptUnreadable {
                    kind: sasl,
                    spec: "hash:/y".into(),
                    why: "postmap cannot read it".into()
                },
                Conflict::Shadowed {
                    kind: sasl,
                    spec: "hash:/w".into(),
                    key: "@a.example".into(),
                    by: Definer::Sender(5)
                },
                Conflict::Shadowed {
                    kind: sasl,
                    spec: "hash:/w".into(),
                    key: "[rh.example]:587".into(),
                    by: Definer::Relayhost
                },
            ]
        );
    }
}
