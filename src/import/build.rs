//! From the routes Postfix resolves today to postrelay entries that give the same
//! routes under postrelay's rule (`routing`).
//!
//! Every sender key found in `sender_dependent_relayhost_maps` (and, with
//! sender-dependent authentication on, in `smtp_sasl_password_maps`) becomes a
//! `[[sender]]`; `relayhost` becomes `[relayhost]` with the credentials an unlisted
//! sender gets. For each sender, the route Postfix resolves ([`Resolver`]) is written
//! so that postrelay's rule yields it exactly:
//! - relay: its own when its own entry names one, or when it resolves elsewhere than
//!   the relayhost (an address that inherits its domain's relay gets it written
//!   explicitly); otherwise none (through the relayhost; postrelay writes `DUNNO`
//!   where that is needed);
//! - credentials: none when postrelay's fallback (its domain's, the relayhost's) already
//!   gives the same ones to the same relay; else written explicitly, whatever key
//!   Postfix found them under today (bare host name, next hop, domain);
//! - TLS: per relay, from the first policy entry Postfix finds for it, else the global
//!   `smtp_tls_security_level`, always written explicitly.
//!
//! What cannot be written that way is a [`Finding`], as is every table entry no route
//! uses. A last pass checks each imported route against postrelay's rule.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::Finding;
use super::maps::{EntryId, Tables};
use super::resolve::{Resolver, Route, Rules, Sender, server_host};
use crate::desired::{Credentials, RelayHost, SenderKey, Tls, fields};
use crate::managed::MapKind;
use crate::routing::{CredentialSource, Relay, Routing};

/// The effective global TLS level (`smtp_tls_security_level` or its legacy
/// equivalents) and where it comes from.
#[derive(Debug, Clone)]
pub struct GlobalTls {
    pub level: String,
    /// main.cf, with the line when the setting is there.
    pub at: String,
    /// The setting, as written (`smtp_tls_security_level = may`).
    pub what: String,
}

/// One imported entry: `[relayhost]` (no key) or a `[[sender]]`, with where each value
/// came from (for comments).
#[derive(Debug, Clone)]
pub struct Item {
    pub key: Option<SenderKey>,
    /// Its own relay (always, for `[relayhost]`).
    pub relay: Option<Relay>,
    pub relay_from: String,
    /// Written explicitly.
    pub credentials: Option<Credentials>,
    pub credentials_from: String,
    /// Postfix uses credentials that postrelay's rule gives without writing them
    /// (its domain's, or the relayhost's).
    pub inherited: bool,
    /// The relay's TLS level, on entries with a relay of their own.
    pub tls: Option<(Tls, String)>,
}

/// The desired state import writes.
#[derive(Debug, Clone, Default)]
pub struct Imported {
    pub relayhost: Option<Item>,
    pub senders: Vec<Item>,
}

impl Imported {
    /// `[relayhost]` first, then the senders in file order.
    pub fn items(&self) -> impl Iterator<Item = &Item> {
        self.relayhost.iter().chain(&self.senders)
    }
}

/// A sender's route today, as postrelay values: the relay and the credentials.
struct Expected {
    relay: Relay,
    credentials: Option<Credentials>,
}

struct Builder<'a> {
    resolver: Resolver<'a>,
    global: &'a GlobalTls,
    findings: &'a mut Vec<Finding>,
    /// Entries some route uses.
    used: HashSet<EntryId>,
    /// Entries already named in a finding.
    reported: HashSet<EntryId>,
    /// Senders (table keys) whose route is already reported.
    flagged: HashSet<String>,
    /// Each next hop as written, parsed (`None`: postrelay cannot write it).
    relays: HashMap<String, Option<Relay>>,
    /// Each relay's spelling as first found: the key of its TLS policy lookup.
    written: BTreeMap<Relay, String>,
}

/// Builds the entries for what `tables` and `rules` resolve; findings are added.
pub fn build(
    tables: &Tables,
    rules: &Rules,
    global: &GlobalTls,
    relayhost_at: &str,
    findings: &mut Vec<Finding>,
) -> Imported {
    let mut b = Builder {
        resolver: Resolver { tables, rules },
        global,
        findings,
        used: HashSet::new(),
        reported: HashSet::new(),
        flagged: HashSet::new(),
        relays: HashMap::new(),
        written: BTreeMap::new(),
    };
    let relayhost = b.relayhost(relayhost_at);
    let mut senders = Vec::new();
    for (key, ids) in b.sender_keys() {
        if let Some(item) = b.sender(key, &ids) {
            senders.push(item);
        }
    }
    let (senders, expected): (Vec<Item>, Vec<Expected>) = senders.into_iter().unzip();
    let mut imported = Imported { relayhost, senders };
    b.credentials(&mut imported, &expected);
    b.tls(&mut imported);
    b.unused();
    imported
}

impl<'a> Builder<'a> {
    fn tables(&self) -> &'a Tables {
        self.resolver.tables
    }

    fn report(&mut self, id: EntryId, message: String) {
        let at = self.tables().place(id);
        self.findings.push(Finding::at(&at, message));
        self.reported.insert(id);
    }

    fn mark(&mut self, route: &Route) {
        self.used
            .extend(route.via.into_iter().chain(route.credentials));
    }

    /// `[relayhost]`: main.cf's relay with the credentials an unlisted sender gets.
    fn relayhost(&mut self, at: &str) -> Option<Item> {
        let written = self.resolver.rules.relayhost.clone()?;
        let relay = self.relay(&written, at)?;
        let route = self.resolver.route(Sender::Unlisted);
        self.mark(&route);
        let bounce = self.resolver.route(Sender::Null);
        match bounce.via {
            Some(id) if bounce.next_hop != route.next_hop => {
                let hop = bounce.next_hop.clone().unwrap_or_default();
                self.report(id, format!(
                    "bounces (the null sender) go to {hop} now; postrelay sends them through the relayhost; not imported"
                ));
            }
            _ => self.mark(&bounce),
        }
        let (credentials, credentials_from) = self.found_credentials(&route, None);
        Some(Item {
            key: None,
            relay: Some(relay),
            relay_from: format!("{at} (relayhost = {written})"),
            credentials,
            credentials_from,
            inherited: false,
            tls: None,
        })
    }

    /// Every sender key of the maps, with the entries that carry it, in output order
    /// (by domain, the domain before its addresses). Keys that are no sender are
    /// findings here; host-name and next-hop keys of the password maps are not senders.
    fn sender_keys(&mut self) -> Vec<(SenderKey, Vec<EntryId>)> {
        let mut keys: BTreeMap<(String, bool, String), (SenderKey, Vec<EntryId>)> = BTreeMap::new();
        let ids: Vec<EntryId> = self.tables().ids().collect();
        for id in ids {
            let key = self.tables().entry(id).key.clone();
            let relay_map = id.kind == MapKind::SenderRelay;
            let sasl_sender = id.kind == MapKind::SaslPasswd && self.resolver.rules.sender_auth;
            let null = relay_map && key == self.resolver.rules.null_key.to_ascii_lowercase();
            let candidate = if relay_map {
                !null
            } else {
                sasl_sender && key.contains('@')
            };
            if !candidate {
                continue;
            }
            let parsed = match key.strip_prefix('@') {
                Some(d) => fields::parse_domain(d).map(SenderKey::Domain),
                None if key.contains('@') => fields::parse_address(&key).map(SenderKey::Address),
                None => Err(
                    "a key without a domain (a local part, or the null sender): postrelay has no such entry"
                        .to_string(),
                ),
            };
            match parsed {
                Ok(k) => {
                    let domain = key.rsplit_once('@').map(|(_, d)| d.to_string());
                    let order = (domain.unwrap_or_default(), !key.starts_with('@'), key);
                    keys.entry(order)
                        .or_insert_with(|| (k, Vec::new()))
                        .1
                        .push(id);
                }
                Err(e) => self.report(id, format!("{key}: {e}; not imported")),
            }
        }
        keys.into_values().collect()
    }

    /// The entry for one sender key, and its route today.
    fn sender(&mut self, key: SenderKey, ids: &[EntryId]) -> Option<(Item, Expected)> {
        let table_key = key.table_key();
        let route = self.resolver.route(Sender::Key(&key));
        self.mark(&route);
        let at = self.tables().place(ids[0]);
        let Some(hop) = route.next_hop.clone() else {
            let msg = format!(
                "{table_key}: its mail goes straight to the recipient's MX (no relay for it, no relayhost); postrelay needs a relay for every sender; not imported"
            );
            return self.skip(&table_key, ids, msg);
        };
        let via = route.via.map(|id| (id, self.tables().entry(id)));
        let dunno = via.is_some_and(|(_, e)| e.value.expose().eq_ignore_ascii_case("DUNNO"));
        let own_entry = via.is_some_and(|(_, e)| e.key == table_key) && !dunno;
        let through_relayhost = !own_entry && Some(&hop) == self.resolver.rules.relayhost.as_ref();
        let relay_from = match via {
            Some((id, e)) if dunno => format!(
                "{}: {} DUNNO, so the relayhost",
                self.tables().place(id),
                e.key
            ),
            Some((id, e)) => format!(
                "{} ({} {})",
                self.tables().place(id),
                e.key,
                e.value.expose()
            ),
            None => "no sender_dependent_relayhost_maps entry, so the relayhost".to_string(),
        };
        let Some(relay) = self.relay(&hop, &at) else {
            return self.skip(
                &table_key,
                ids,
                format!("{table_key}: its relay cannot be written; not imported"),
            );
        };
        let (credentials, credentials_from) = self.found_credentials(&route, Some(&table_key));
        let item = Item {
            key: Some(key),
            relay: (!through_relayhost).then(|| relay.clone()),
            relay_from,
            credentials: None,
            credentials_from,
            inherited: false,
            tls: None,
        };
        Some((item, Expected { relay, credentials }))
    }

    fn skip(
        &mut self,
        table_key: &str,
        ids: &[EntryId],
        message: String,
    ) -> Option<(Item, Expected)> {
        let at = self.tables().place(ids[0]);
        self.findings.push(Finding::at(&at, message));
        self.reported.extend(ids);
        self.flagged.insert(table_key.to_string());
        None
    }

    /// The credentials a route uses, parsed (a value postrelay cannot hold is a
    /// finding), and where they come from.
    fn found_credentials(
        &mut self,
        route: &Route,
        sender: Option<&str>,
    ) -> (Option<Credentials>, String) {
        let Some(id) = route.credentials else {
            return (
                None,
                "none: Postfix finds no credentials for this route".to_string(),
            );
        };
        let entry = self.tables().entry(id);
        let from = format!("{} (key {})", self.tables().place(id), entry.key);
        match parse_credentials(entry.value.expose()) {
            Ok(c) => {
                let hop = route.next_hop.as_deref().unwrap_or_default();
                if !hop.starts_with('[')
                    && entry.key == server_host(hop)
                    && self.reported.insert(id)
                {
                    let (at, key) = (self.tables().place(id), entry.key.clone());
                    self.findings.push(Finding::at(&at, format!(
                        "credentials for {key}: the host name of the relay {hop}, which has no brackets: Postfix uses them only if the server it reaches after the MX lookup is named {key}; imported as if it were"
                    )));
                }
                (Some(c), from)
            }
            Err(e) => {
                let key = entry.key.clone();
                if self.reported.insert(id) {
                    let at = self.tables().place(id);
                    self.findings.push(Finding::at(
                        &at,
                        format!("credentials under {key}: {e}; not imported"),
                    ));
                }
                self.flagged.extend(sender.map(str::to_string));
                (None, from)
            }
        }
    }

    /// A relay as postrelay writes it; a port given as a service name is written as
    /// its number (and reported); anything else that does not parse is a finding.
    fn relay(&mut self, written: &str, at: &str) -> Option<Relay> {
        if let Some(known) = self.relays.get(written) {
            return known.clone();
        }
        let relay = match Relay::parse(written) {
            Ok(r) => Some(r),
            Err(e) => match numeric_port(written) {
                Some(numeric) => {
                    self.findings.push(Finding::at(at, format!(
                        "relay {written}: a port given as a service name; written as {numeric} (postrelay takes numeric ports: Postfix connects to the same port, but the next hop is spelled differently in main.cf and the maps)"
                    )));
                    Relay::parse(&numeric).ok()
                }
                None => {
                    self.findings.push(Finding::at(
                        at,
                        format!("relay {written:?}: {e}; not imported"),
                    ));
                    None
                }
            },
        };
        self.relays.insert(written.to_string(), relay.clone());
        if let Some(r) = &relay {
            self.written
                .entry(r.clone())
                .or_insert_with(|| written.to_string());
        }
        relay
    }

    /// Decides which senders get explicit credentials: those for whom postrelay's
    /// fallback (domain, relayhost) would not give what Postfix uses today, or would
    /// give their domain's to another relay (which postrelay refuses). Domains first:
    /// addresses fall back to them. Then checks every route.
    fn credentials(&mut self, imported: &mut Imported, expected: &[Expected]) {
        let rh = imported.relayhost.as_ref().map(|i| RelayHost {
            relay: i.relay.clone().expect("the relayhost has a relay"),
            credentials: i.credentials.clone(),
        });
        let mut senders: Vec<crate::desired::Sender> = imported
            .senders
            .iter()
            .map(|i| crate::desired::Sender {
                key: i.key.clone().expect("a sender has a key"),
                relay: i.relay.clone(),
                credentials: None,
                line: 0,
            })
            .collect();
        for addresses in [false, true] {
            let explicit: Vec<usize> = {
                let routing = Routing::new(rh.as_ref(), &senders);
                (0..senders.len())
                    .filter(|&i| matches!(senders[i].key, SenderKey::Address(_)) == addresses)
                    .filter(|&i| {
                        let route = routing.route(&senders[i]);
                        let inherited = match route.credentials {
                            Some((_, CredentialSource::Domain(d))) => {
                                routing.route(d).relay != route.relay
                            }
                            _ => false,
                        };
                        inherited
                            || route.credentials.map(|(c, _)| c) != expected[i].credentials.as_ref()
                    })
                    .collect()
            };
            for i in explicit {
                senders[i].credentials = expected[i].credentials.clone();
            }
        }
        let routing = Routing::new(rh.as_ref(), &senders);
        for (i, s) in senders.iter().enumerate() {
            let key = s.key.table_key();
            let route = routing.route(s);
            let same = route.relay == Some(&expected[i].relay)
                && route.credentials.map(|(c, _)| c) == expected[i].credentials.as_ref();
            if !same && self.flagged.insert(key.clone()) {
                self.findings.push(Finding::general(format!(
                    "{key}: postrelay's rule cannot give it the route Postfix uses today ({} with {}); imported as close as it can",
                    expected[i].relay,
                    expected[i].credentials.as_ref().map_or("no credentials".to_string(), |c| format!("the credentials of {}", c.username))
                )));
            }
            imported.senders[i].credentials = s.credentials.clone();
            imported.senders[i].inherited =
                s.credentials.is_none() && expected[i].credentials.is_some();
        }
    }

    /// The TLS level of each relay, on `[relayhost]` and on every sender with a relay
    /// of its own.
    fn tls(&mut self, imported: &mut Imported) {
        let mut levels: HashMap<Relay, (Tls, String)> = HashMap::new();
        let items = imported
            .relayhost
            .iter_mut()
            .chain(imported.senders.iter_mut());
        for item in items {
            let Some(relay) = item.relay.clone() else {
                continue;
            };
            if !levels.contains_key(&relay) {
                let level = self.level(&relay);
                levels.insert(relay.clone(), level);
            }
            item.tls = levels.get(&relay).cloned();
        }
    }

    /// A relay's TLS level: from the first policy entry for it, else the global level.
    /// What postrelay cannot write as it is becomes a finding at the policy's place.
    fn level(&mut self, relay: &Relay) -> (Tls, String) {
        let written = self
            .written
            .get(relay)
            .cloned()
            .unwrap_or_else(|| relay.to_string());
        let (text, at, from) = match self.resolver.tls(&written) {
            Some(id) => {
                self.used.insert(id);
                let e = self.tables().entry(id);
                let at = self.tables().place(id);
                let from = format!("{at} ({} {})", e.key, e.value.expose());
                (e.value.expose().clone(), at, from)
            }
            None => {
                let g = self.global;
                let from = format!("no smtp_tls_policy_maps entry, so {}: {}", g.at, g.what);
                (g.level.clone(), g.at.clone(), from)
            }
        };
        let mut words = text.split([',', ' ', '\t']).filter(|w| !w.is_empty());
        let level = words.next().unwrap_or("").to_ascii_lowercase();
        let attributes: Vec<&str> = words.collect();
        let (tls, problem) = match level.as_str() {
            "secure" | "verify" | "encrypt" | "may" | "none" => (
                crate::desired::fields::parse_tls(&level).unwrap_or(Tls::Encrypt),
                None,
            ),
            "dane" | "dane-only" | "fingerprint" => (
                Tls::Encrypt,
                Some(
                    "checks the server more than postrelay can express; written as \"encrypt\", which does not verify the certificate",
                ),
            ),
            _ => (
                Tls::Encrypt,
                Some(
                    "is not a valid level (Postfix defers this relay's mail now); written as \"encrypt\"",
                ),
            ),
        };
        if let Some(problem) = problem {
            let msg = format!("relay {relay}: TLS level {level:?} {problem}");
            self.findings.push(Finding::at(&at, msg));
        }
        if !attributes.is_empty() {
            let msg = format!(
                "relay {relay}: TLS attributes {:?} dropped: postrelay writes the level only",
                attributes.join(" ")
            );
            self.findings.push(Finding::at(&at, msg));
        }
        (tls, from)
    }

    /// Every entry no route uses is a finding: it is not imported.
    fn unused(&mut self) {
        let ids: Vec<EntryId> = self.tables().ids().collect();
        for id in ids {
            if self.used.contains(&id) || self.reported.contains(&id) {
                continue;
            }
            let key = self.tables().entry(id).key.clone();
            let shadow = self
                .tables()
                .find(id.kind, std::slice::from_ref(&key))
                .filter(|f| *f != id);
            let msg = match (id.kind, shadow) {
                (_, Some(first)) => format!(
                    "{key}: Postfix uses the entry at {} instead; not imported",
                    self.tables().place(first)
                ),
                (MapKind::SaslPasswd, _)
                    if key.contains('@') && !self.resolver.rules.sender_auth =>
                {
                    format!(
                        "credentials for sender {key}: Postfix ignores them (smtp_sender_dependent_authentication is off); not imported"
                    )
                }
                (MapKind::SaslPasswd, _) => format!(
                    "credentials for {key}: no sender's relay and not the relayhost (no route's server name or next hop is {key}); not imported"
                ),
                (MapKind::SenderRelay, _) => {
                    format!("{key}: no route uses this entry; not imported")
                }
                (MapKind::TlsPolicy, _) => format!(
                    "TLS policy for {key}: no sender's relay is {key} (postrelay's tls_policy holds its relays only); not imported"
                ),
                // Not read by import (its tables are the three core maps').
                (
                    MapKind::SenderTransport
                    | MapKind::SaslPasswdWildcards
                    | MapKind::SenderRelayWildcards
                    | MapKind::SenderTransportWildcards,
                    _,
                ) => format!("{key}: not imported"),
            };
            self.report(id, msg);
        }
    }
}

/// `user:password`, split at the first `:` as Postfix splits it, checked as the
/// desired state checks it. The error never quotes the password.
pub fn parse_credentials(value: &str) -> Result<Credentials, String> {
    let Some((username, password)) = value.split_once(':') else {
        return Err(
            "no ':' between username and password (Postfix would send an empty password)".into(),
        );
    };
    fields::check_username(username).map_err(|e| format!("username {username:?}: {e}"))?;
    fields::check_password(password)?;
    Ok(Credentials {
        username: username.to_string(),
        password: crate::secret::Secret::new(password.to_string()),
    })
}

/// `host:service` with a well-known SMTP service name, as `host:port`.
fn numeric_port(written: &str) -> Option<String> {
    let (host, service) = written.rsplit_once(':')?;
    let port = match service.to_ascii_lowercase().as_str() {
        "smtp" => 25,
        "submission" => 587,
        "submissions" | "smtps" | "ssmtp" => 465,
        _ => return None,
    };
    Some(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests;
