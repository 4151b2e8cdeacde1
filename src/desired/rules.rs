//! The rules across entries of the desired state: unique sender keys, no credentials
//! inherited towards another relay, something to configure, inline passwords only in a
//! private file, and one TLS level per relay (which also yields the warnings).

use std::collections::{BTreeMap, HashSet};

use rustc_hash::FxHashMap;

use super::entries::{Parts, TlsSetting};
use super::{SenderKey, Source, Tls, Warning};
use crate::problems::Problems;
use crate::routing::{CredentialSource, Relay, Routing};

/// Checks the rules; returns every relay's TLS level and the warnings.
pub(super) fn check(
    source: &Source,
    parts: &Parts,
    mode: u32,
    problems: &mut Problems,
) -> (BTreeMap<Relay, Tls>, Vec<Warning>) {
    unique_keys(parts, problems);
    no_inherited_credentials(parts, problems);
    if !parts.has_relayhost && !parts.has_senders {
        problems.push(
            None,
            "nothing to configure: no [relayhost] and no [[sender]]",
        );
    }
    private_if_inline_passwords(source, parts, mode, problems);
    tls_levels(parts, problems)
}

fn unique_keys(parts: &Parts, problems: &mut Problems) {
    let mut first = FxHashMap::with_capacity_and_hasher(
        parts.senders.len() + parts.rejected_keys.len(),
        Default::default(),
    );
    for (key, line, subject) in parts.keys() {
        match first.get(key) {
            Some(first) => problems.at(
                line,
                format!(
                    "{subject}: duplicate of the sender at line {first} (key {:?})",
                    key.table_key()
                ),
            ),
            None => {
                first.insert(key, line);
            }
        }
    }
}

/// Postfix looks up each table by the full address, then by `@domain`, separately: an
/// address entry without credentials of its own gets its domain's, and sends them
/// wherever the address is relayed. Refuse that unless both go to one relay. (The
/// routing fallback is closed by a `DUNNO` entry in sender_relay; see `routing`.)
fn no_inherited_credentials(parts: &Parts, problems: &mut Problems) {
    let routing = Routing::new(parts.relayhost.as_ref(), &parts.senders);
    for s in &parts.senders {
        let route = routing.route(s);
        let Some((_, CredentialSource::Domain(domain))) = route.credentials else {
            continue;
        };
        if route.relay != routing.route(domain).relay {
            let (this, its) = match s.key {
                SenderKey::Address(_) => ("this address", "its domain"),
                _ => ("this entry", "that wildcard"),
            };
            problems.at(
                s.line,
                format!(
                    "sender {:?}: has no credentials, so Postfix would send those of {:?} (line {}) to {}: give {this} its own username and password, or the same relay as {its}",
                    s.key.table_key(),
                    domain.key.table_key(),
                    domain.line,
                    route.relay.map(Relay::as_str).unwrap_or_default()
                ),
            );
        }
    }
}

/// Inline passwords must not be readable by anyone but the owner.
fn private_if_inline_passwords(source: &Source, parts: &Parts, mode: u32, problems: &mut Problems) {
    let mode = mode & 0o7777;
    if mode & 0o077 != 0
        && let Some(&first) = parts.inline_passwords.iter().min()
    {
        problems.at(
            first,
            format!(
                "inline password in a file readable by group or others (mode {mode:04o}); run: chmod 600 {}",
                source.path.display()
            ),
        );
    }
}

/// One TLS level per relay: the first explicit value in file order wins, a different
/// explicit value elsewhere is a conflict, and a relay without one gets its default
/// ([`Tls::default_for`]). A weak level is a warning unless an entry of that relay sets
/// `accept_cleartext`, and an error on port 465 (TLS from the first byte: Postfix's
/// `smtp_tls_wrappermode` needs `encrypt` or stronger).
fn tls_levels(parts: &Parts, problems: &mut Problems) -> (BTreeMap<Relay, Tls>, Vec<Warning>) {
    let mut uses: Vec<_> = parts.uses.iter().collect();
    uses.sort_by_key(|u| u.tls.line);
    let mut explicit: BTreeMap<&Relay, Option<TlsSetting>> =
        parts.relays.iter().map(|r| (r, None)).collect();
    let mut accepted: HashSet<&Relay> = HashSet::new();
    for u in uses {
        if u.tls.accepted {
            accepted.insert(&u.relay);
        }
        let entry = explicit.entry(&u.relay).or_insert(None);
        match (*entry, u.tls) {
            (None, t) => *entry = Some(t),
            (Some(a), b) if a.tls != b.tls => problems.at(
                b.line,
                format!(
                    "relay {:?}: tls {:?} conflicts with tls {:?} at line {}",
                    u.relay.as_str(),
                    b.tls.as_str(),
                    a.tls.as_str(),
                    a.line
                ),
            ),
            _ => {}
        }
    }
    let mut levels = BTreeMap::new();
    let mut warnings = Vec::new();
    for (relay, given) in explicit {
        let tls = given.map_or_else(|| Tls::default_for(relay), |t| t.tls);
        if let Some(t) = given
            && t.tls.is_weak()
            && relay.implicit_tls()
        {
            problems.at(
                t.line,
                format!(
                    "relay {:?}: tls {:?} on port 465, where TLS starts with the connection: use \"encrypt\", \"verify\" or \"secure\"",
                    relay.as_str(),
                    t.tls.as_str()
                ),
            );
        } else if let Some(t) = given
            && t.tls.is_weak()
            && !accepted.contains(relay)
        {
            warnings.push(Warning {
                line: t.line,
                relay: relay.clone(),
                tls,
            });
        }
        levels.insert(relay.clone(), tls);
    }
    (levels, warnings)
}
