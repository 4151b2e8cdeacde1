//! What Postfix resolves today for a sender: the next hop, the credentials and the TLS
//! policy, computed over the tables import read, in Postfix's own lookup order. This
//! is the other side of `routing`: that module says which entries postrelay writes for
//! a route; this one says which route the entries found on the host give.
//!
//! - Next hop (trivial-rewrite, `sender_dependent_relayhost_maps`): the full sender
//!   address, the address without its extension (when `recipient_delimiter` is set),
//!   then `@domain`; the null sender is looked up as
//!   `empty_address_relayhost_maps_lookup_key`. `DUNNO` (any case) or no match: the
//!   relayhost; no relayhost either: the recipient's MX.
//! - Credentials (smtp, `smtp_sasl_password_maps`): the same sender keys when
//!   `smtp_sender_dependent_authentication` is on and the sender is not empty, then
//!   the server's host name (no brackets, no port), then the next hop as written.
//! - TLS (`smtp_tls_policy_maps`, postconf(5) and `smtp_tls_policy.c`): the next hop as
//!   written; when it is a bare host name (no brackets, no port), then each parent
//!   domain as `.parent`; no entry: the global level.
//!
//! Every list is searched key by key across all its tables ([`Tables::find`]). Local
//! part keys (senders in local domains) are not looked up; import reports such keys.

use super::maps::{EntryId, Tables};
use crate::desired::{SenderKey, fields};
use crate::managed::MapKind;

/// The main.cf settings that shape the lookups.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// `relayhost`; `None` when empty.
    pub relayhost: Option<String>,
    /// `smtp_sender_dependent_authentication`.
    pub sender_auth: bool,
    /// `recipient_delimiter`: each character separates an extension.
    pub delimiters: String,
    /// `empty_address_relayhost_maps_lookup_key`.
    pub null_key: String,
}

/// Who sends.
#[derive(Debug, Clone, Copy)]
pub enum Sender<'a> {
    /// An address or an unlisted address of a domain (looked up from its table key on).
    Key(&'a SenderKey),
    /// An address no table lists.
    Unlisted,
    /// The null sender (bounces).
    Null,
}

/// What Postfix resolves for a sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The next hop as written where it was found; `None`: the recipient's MX.
    pub next_hop: Option<String>,
    /// The `sender_dependent_relayhost_maps` entry that decided (a relay or `DUNNO`).
    pub via: Option<EntryId>,
    /// The `smtp_sasl_password_maps` entry used; `None`: no AUTH.
    pub credentials: Option<EntryId>,
}

/// Postfix's lookups over the tables read.
pub struct Resolver<'a> {
    pub tables: &'a Tables,
    pub rules: &'a Rules,
}

impl Resolver<'_> {
    /// The route of mail from `sender`.
    pub fn route(&self, sender: Sender) -> Route {
        let keys = self.sender_keys(sender);
        let relay_keys = match sender {
            Sender::Null => vec![self.rules.null_key.clone()],
            _ => keys.clone(),
        };
        let via = self.tables.find(MapKind::SenderRelay, &relay_keys);
        let next_hop = match via.map(|id| self.tables.entry(id).value.expose()) {
            Some(v) if !v.eq_ignore_ascii_case("DUNNO") => Some(v.clone()),
            _ => self.rules.relayhost.clone(),
        };
        let mut sasl_keys = if self.rules.sender_auth {
            keys
        } else {
            Vec::new()
        };
        if let Some(hop) = &next_hop {
            sasl_keys.extend([server_host(hop), hop.clone()]);
        }
        Route {
            credentials: self.tables.find(MapKind::SaslPasswd, &sasl_keys),
            next_hop,
            via,
        }
    }

    /// The `smtp_tls_policy_maps` entry for a next hop; `None`: the global level.
    pub fn tls(&self, next_hop: &str) -> Option<EntryId> {
        let hop = next_hop.to_ascii_lowercase();
        let mut keys = vec![hop.clone()];
        if !hop.contains(['[', ':']) && fields::parse_domain(&hop).is_ok() {
            let mut rest = hop.as_str();
            while let Some(dot) = rest[1..].find('.') {
                rest = &rest[dot + 1..];
                keys.push(rest.to_string());
            }
        }
        self.tables.find(MapKind::TlsPolicy, &keys)
    }

    /// The sender key forms Postfix tries (`mail_addr_find`), lowercased.
    fn sender_keys(&self, sender: Sender) -> Vec<String> {
        let (address, domain) = match sender {
            Sender::Key(SenderKey::Domain(d)) => return vec![format!("@{d}")],
            // Import reads hash-like tables only, which hold no wildcard.
            Sender::Key(SenderKey::Wildcard(_)) => return Vec::new(),
            Sender::Key(SenderKey::Address(a)) => match a.rsplit_once('@') {
                Some((_, d)) => (a.as_str(), d),
                None => return vec![a.clone()],
            },
            Sender::Unlisted | Sender::Null => return Vec::new(),
        };
        let mut keys = vec![address.to_string()];
        if let Some(stripped) = self.without_extension(address) {
            keys.push(stripped);
        }
        keys.push(format!("@{domain}"));
        keys
    }

    /// `user+ext@domain` → `user@domain` (split_addr: at the first delimiter, never
    /// leaving an empty local part).
    fn without_extension(&self, address: &str) -> Option<String> {
        let (local, domain) = address.rsplit_once('@')?;
        let cut = local.find(|c| self.rules.delimiters.contains(c))?;
        (cut > 0).then(|| format!("{}@{domain}", &local[..cut]))
    }
}

/// The server's host name Postfix tries as a password key: the next hop without
/// brackets (and `ipv6:`) and without its port.
pub fn server_host(next_hop: &str) -> String {
    let host = match next_hop.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => next_hop.split(':').next().unwrap_or(next_hop),
    };
    let host = host
        .get(..5)
        .filter(|p| p.eq_ignore_ascii_case("ipv6:"))
        .map_or(host, |_| &host[5..]);
    host.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::maps::Map;
    use crate::secret::Secret;
    use std::path::PathBuf;

    fn map(pairs: &[(&str, &str)]) -> Map {
        let pairs = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Secret::new(v.to_string()), None))
            .collect();
        Map::new(PathBuf::from("/m"), "hash", pairs)
    }

    fn tables() -> Tables {
        Tables::new([
            vec![map(&[
                ("@example.com", "dom:pw"),
                ("wes@example.com", "wes:pw"),
                ("smtp.rh.example", "host:pw"),
                ("[other.example]:2525", "hop:pw"),
            ])],
            vec![map(&[
                ("@example.com", "[other.example]:2525"),
                ("wes@example.com", "DUNNO"),
                ("x@example.com", "dunno"),
                ("<>", "[bounce.example]"),
            ])],
            vec![map(&[
                ("[smtp.rh.example]:587", "encrypt"),
                (".mx.example", "may"),
            ])],
        ])
    }

    fn rules(sender_auth: bool) -> Rules {
        Rules {
            relayhost: Some("[smtp.rh.example]:587".into()),
            sender_auth,
            delimiters: "+".into(),
            null_key: "<>".into(),
        }
    }

    fn route(t: &Tables, r: &Rules, s: Sender) -> (Option<String>, Option<String>) {
        let route = Resolver {
            tables: t,
            rules: r,
        }
        .route(s);
        let creds = route
            .credentials
            .map(|id| t.entry(id).value.expose().clone());
        (route.next_hop, creds)
    }

    fn some(a: &str, b: &str) -> (Option<String>, Option<String>) {
        (Some(a.into()), Some(b.into()))
    }

    #[test]
    fn routes_follow_postfix_lookup_order() {
        let t = tables();
        let r = rules(true);
        let addr = |a: &str| SenderKey::Address(a.into());
        let dom = SenderKey::Domain("example.com".into());
        let rh = "[smtp.rh.example]:587";
        assert_eq!(
            route(&t, &r, Sender::Key(&dom)),
            some("[other.example]:2525", "dom:pw")
        );
        assert_eq!(
            route(&t, &r, Sender::Key(&addr("wes@example.com"))),
            some(rh, "wes:pw")
        );
        assert_eq!(
            route(&t, &r, Sender::Key(&addr("wes+news@example.com"))),
            some(rh, "wes:pw")
        );
        assert_eq!(
            route(&t, &r, Sender::Key(&addr("x@example.com"))),
            some(rh, "dom:pw")
        );
        assert_eq!(route(&t, &r, Sender::Unlisted), some(rh, "host:pw"));
        assert_eq!(
            route(&t, &r, Sender::Null),
            (Some("[bounce.example]".into()), None)
        );
        let off = rules(false);
        assert_eq!(
            route(&t, &off, Sender::Key(&dom)),
            some("[other.example]:2525", "hop:pw")
        );
        let mx = Rules {
            relayhost: None,
            ..rules(true)
        };
        assert_eq!(route(&t, &mx, Sender::Unlisted), (None, None));
    }

    #[test]
    fn tls_tries_parent_domains_only_for_bare_host_names() {
        let t = tables();
        let r = rules(true);
        let res = Resolver {
            tables: &t,
            rules: &r,
        };
        let value = |hop: &str| res.tls(hop).map(|id| t.entry(id).value.expose().clone());
        assert_eq!(value("[SMTP.rh.example]:587").as_deref(), Some("encrypt"));
        assert_eq!(value("smtp.eu.mx.example").as_deref(), Some("may"));
        assert_eq!(value("[smtp.eu.mx.example]"), None);
        assert_eq!(value("smtp.eu.mx.example:25"), None);
        assert_eq!(value("[smtp.rh.example]"), None);
    }

    #[test]
    fn server_host_names() {
        assert_eq!(server_host("[SMTP.Example.com]:587"), "smtp.example.com");
        assert_eq!(
            server_host("smtp.example.com:submission"),
            "smtp.example.com"
        );
        assert_eq!(server_host("[ipv6:2001:db8::1]:25"), "2001:db8::1");
        assert_eq!(server_host("[192.0.2.1]"), "192.0.2.1");
    }
}
