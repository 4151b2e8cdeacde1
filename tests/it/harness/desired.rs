//! Desired-state files for the end-to-end tests: an optional `[relayhost]` and
//! `[[sender]]` entries whose relays are fake relays ([`FakeRelay`]) on 127.0.0.1.

use crate::relay::FakeRelay;

/// A desired-state file: an optional `[relayhost]` (relay, username, password), then
/// the senders, all with inline passwords.
pub fn desired(relayhost: Option<(&FakeRelay, &str, &str)>, senders: &[Sender]) -> String {
    let mut toml = String::new();
    if let Some((relay, user, password)) = relayhost {
        toml += &format!(
            "[relayhost]\nrelay = \"{}\"\nusername = \"{user}\"\npassword = \"{password}\"\n",
            relay.relay()
        );
    }
    for s in senders {
        toml += &format!("\n[[sender]]\n{} = \"{}\"\n", s.kind, s.key);
        if let Some(relay) = s.relay {
            toml += &format!("relay = \"{}\"\n", relay.relay());
        }
        if let Some((user, password)) = s.credentials {
            toml += &format!("username = \"{user}\"\npassword = \"{password}\"\n");
        }
    }
    toml
}

/// One `[[sender]]` entry.
#[derive(Clone, Copy)]
pub struct Sender<'a> {
    /// "domain" or "address".
    pub kind: &'static str,
    pub key: &'a str,
    /// None: through the relayhost.
    pub relay: Option<&'a FakeRelay>,
    /// `(username, password)`.
    pub credentials: Option<(&'a str, &'a str)>,
}

/// A `domain = KEY` entry with credentials.
pub fn domain<'a>(
    key: &'a str,
    relay: Option<&'a FakeRelay>,
    user: &'a str,
    pw: &'a str,
) -> Sender<'a> {
    Sender {
        kind: "domain",
        key,
        relay,
        credentials: Some((user, pw)),
    }
}

/// An `address = KEY` entry.
pub fn address<'a>(
    key: &'a str,
    relay: Option<&'a FakeRelay>,
    credentials: Option<(&'a str, &'a str)>,
) -> Sender<'a> {
    Sender {
        kind: "address",
        key,
        relay,
        credentials,
    }
}
