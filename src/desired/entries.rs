//! The field checks of each entry of the desired state: `[postfix]`, `[relayhost]` and
//! every `[[sender]]`, one at a time. Reads password files. Problems go to the shared
//! list with their line; entries that pass become model values, and what the rules
//! across entries need (every key, every relay use, inline passwords) is recorded.

use std::fmt;

use rustc_hash::{FxHashMap, FxHashSet};
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::raw::{RawCredentials, RawFile, RawPostfix, RawRelayHost, RawSender};
use super::{
    Credentials, MAP_TYPES, MAX_FILE_SIZE, RelayHost, Sender, SenderKey, Source, Tls, fields,
};
use crate::fs;
use crate::problems::Problems;
use crate::providers::{self, Login, Preset};
use crate::routing::Relay;
use crate::secret::Secret;

/// The key of a sender that is not in [`Parts::senders`] (another of its fields is
/// invalid), which still counts in the duplicate check.
pub(super) struct KeyUse {
    pub key: SenderKey,
    pub line: usize,
    /// `sender "as written"`, for messages.
    pub subject: String,
    /// How many senders of [`Parts::senders`] come before it in the file.
    pub after: usize,
}

/// What an entry's `provider` gave: the preset and its relay (with the provider's span
/// for messages), the region; `failed` when it or a setting beside it was refused.
#[derive(Default)]
pub(super) struct PresetUse {
    preset: Option<&'static Preset>,
    relay: Option<Spanned<String>>,
    region: Option<String>,
    failed: bool,
}

impl PresetUse {
    /// The relay the entry names: the preset's, else its own `relay`.
    fn relay_or<'a>(&'a self, own: &'a Option<Spanned<String>>) -> Option<&'a Spanned<String>> {
        self.relay.as_ref().or(own.as_ref())
    }
}

/// How an entry is named in messages: `relayhost`, `sender`, or `sender "as written"`;
/// written out only when a message is.
#[derive(Debug, Clone, Copy)]
pub(super) enum Subject<'a> {
    Plain(&'static str),
    Sender(&'a str),
}

impl fmt::Display for Subject<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Plain(s) => f.write_str(s),
            Subject::Sender(written) => write!(f, "sender {written:?}"),
        }
    }
}

/// A `tls` setting: its level, its line, and whether `accept_cleartext` acknowledges
/// that a weak level may send credentials in clear text.
#[derive(Debug, Clone, Copy)]
pub(super) struct TlsSetting {
    pub tls: Tls,
    pub line: usize,
    pub accepted: bool,
}

/// A use of a relay that gives a `tls`, for resolving its TLS policy.
pub(super) struct RelayUse {
    pub relay: Relay,
    pub tls: TlsSetting,
}

/// What the entries hold once each is checked on its own. The senders themselves carry
/// what the rules across entries need of them (key, line, relay), so the bookkeeping
/// beside them stays small: a 100,000-sender file has few relays and few mistakes.
#[derive(Default)]
pub(super) struct Parts {
    pub config_dir: Option<PathBuf>,
    pub map_type: Option<String>,
    pub relayhost: Option<RelayHost>,
    pub senders: Vec<Sender>,
    /// Whether the file has a `[relayhost]` table (valid or not).
    pub has_relayhost: bool,
    /// Whether the file has any `[[sender]]` table (valid or not).
    pub has_senders: bool,
    /// The valid keys of the senders left out of `senders`, in file order.
    pub rejected_keys: Vec<KeyUse>,
    /// How the domain or address of a sender in `senders` is written, by its index
    /// there, where that is not its key (capitals): for messages.
    pub written: FxHashMap<usize, String>,
    /// Every relay used (valid), once: the relayhost's and the senders'.
    pub relays: FxHashSet<Relay>,
    /// The uses of relays that give a `tls`.
    pub uses: Vec<RelayUse>,
    /// Lines of inline passwords.
    pub inline_passwords: Vec<usize>,
}

/// How [`Parts::keys`] names a sender in messages, written out only when one is.
pub(super) enum KeyName<'a> {
    Accepted(Subject<'a>),
    /// A rejected sender's subject, kept as text.
    Rejected(&'a str),
}

impl fmt::Display for KeyName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyName::Accepted(s) => s.fmt(f),
            KeyName::Rejected(s) => f.write_str(s),
        }
    }
}

impl Parts {
    /// Every valid sender key in file order, with its line and how it is named in
    /// messages (`sender "as written"`).
    pub fn keys(&self) -> impl Iterator<Item = (&SenderKey, usize, KeyName<'_>)> {
        let mut accepted = self.senders.iter().enumerate().peekable();
        let mut rejected = self.rejected_keys.iter().peekable();
        std::iter::from_fn(move || {
            let take_rejected = match (accepted.peek(), rejected.peek()) {
                (Some((i, _)), Some(k)) => k.after <= *i,
                (None, Some(_)) => true,
                (_, None) => false,
            };
            if take_rejected {
                let k = rejected.next()?;
                return Some((&k.key, k.line, KeyName::Rejected(&k.subject)));
            }
            let (i, s) = accepted.next()?;
            let written = match (self.written.get(&i), &s.key) {
                (Some(w), _) => w.as_str(),
                (None, SenderKey::Domain(k) | SenderKey::Address(k)) => k.as_str(),
                // Always written down (`*.` is not in the key).
                (None, SenderKey::Wildcard(k)) => k.as_str(),
            };
            Some((&s.key, s.line, KeyName::Accepted(Subject::Sender(written))))
        })
    }
}

/// Checks every entry of `raw`.
pub(super) fn check(source: &Source, raw: RawFile, problems: &mut Problems) -> Parts {
    let senders = raw.sender.as_ref().map_or(0, Vec::len);
    let mut c = Checker::new(source, problems, raw.relayhost.is_some(), senders);
    if let Some(pf) = raw.postfix {
        c.postfix(pf.into_inner());
    }
    if let Some(rh) = raw.relayhost {
        c.relayhost(rh);
    }
    for s in raw.sender.unwrap_or_default() {
        c.sender(s);
    }
    c.finish(senders > 0)
}

/// A field checked: its value, or invalid (the problem is recorded).
enum Checked<T> {
    Valid(T),
    Invalid,
}

/// Checks entries one at a time, as they are parsed (`raw` gives them all at once,
/// `stream` one table at a time), into [`Parts`].
pub(super) struct Checker<'s, 'p> {
    source: &'s Source<'s>,
    problems: &'p mut Problems,
    parts: Parts,
    /// The valid relays parsed so far, by spelling.
    relays: FxHashMap<String, Relay>,
}

impl<'s, 'p> Checker<'s, 'p> {
    /// A checker for a file that has a `[relayhost]` table or not (a sender without a
    /// relay of its own needs one), with room for about `senders` senders.
    pub(super) fn new(
        source: &'s Source<'s>,
        problems: &'p mut Problems,
        has_relayhost: bool,
        senders: usize,
    ) -> Checker<'s, 'p> {
        let parts = Parts {
            has_relayhost,
            senders: Vec::with_capacity(senders),
            ..Parts::default()
        };
        Checker {
            source,
            problems,
            parts,
            relays: FxHashMap::default(),
        }
    }

    /// What the entries hold; `has_senders`: whether the file has any `[[sender]]`.
    pub(super) fn finish(self, has_senders: bool) -> Parts {
        Parts {
            has_senders,
            ..self.parts
        }
    }
}

impl Checker<'_, '_> {
    fn line<T>(&self, v: &Spanned<T>) -> usize {
        self.source.line(v.span())
    }

    fn at<T>(&mut self, v: &Spanned<T>, message: String) {
        let line = self.line(v);
        self.problems.at(line, message);
    }

    pub(super) fn postfix(&mut self, pf: RawPostfix) {
        if let Some(d) = pf.config_dir {
            let written = d.get_ref();
            if !Path::new(written).is_absolute() {
                let msg = format!("config_dir {written:?}: not an absolute path");
                self.at(&d, msg);
            } else if let Some(c) = crate::managed::unsafe_char(written) {
                let msg = format!(
                    "config_dir {written:?}: holds {c:?}; main.cf names the maps by this path, so it may not hold whitespace, ',', '$', '{{', '}}' or control characters"
                );
                self.at(&d, msg);
            } else {
                self.parts.config_dir = Some(PathBuf::from(written));
            }
        }
        if let Some(m) = pf.map_type {
            if MAP_TYPES.contains(&m.get_ref().as_str()) {
                self.parts.map_type = Some(m.into_inner());
            } else {
                let msg = format!(
                    "map_type {:?}: expected one of {}",
                    m.get_ref(),
                    MAP_TYPES.join(", ")
                );
                self.at(&m, msg);
            }
        }
    }

    pub(super) fn relayhost(&mut self, rh: Spanned<RawRelayHost>) {
        let line = self.line(&rh);
        let rh = rh.into_inner();
        let subject = Subject::Plain("relayhost");
        let preset = self.preset(subject, &rh.provider, &rh.region, &rh.relay, &rh.tls);
        let relay = match preset.relay_or(&rh.relay) {
            Some(r) => self.relay(subject, r),
            None if preset.failed => None,
            None => {
                self.problems.at(line, format!("{subject}: missing relay"));
                None
            }
        };
        let tls = self.tls(subject, &rh.tls, &rh.accept_cleartext);
        let credentials = RawCredentials {
            username: rh.username,
            password: rh.password,
            password_file: rh.password_file,
            secret_access_key_file: rh.secret_access_key_file,
        };
        let credentials = self.credentials(subject, line, credentials, &preset);
        if let Some(relay) = relay {
            self.used(&relay, tls);
            if let Checked::Valid(credentials) = credentials {
                self.parts.relayhost = Some(RelayHost { relay, credentials });
            }
        }
    }

    pub(super) fn sender(&mut self, s: Spanned<RawSender>) {
        let line = self.line(&s);
        let s = s.into_inner();
        let (subject, key) = self.key(line, &s.domain, &s.address);
        let preset = self.preset(subject, &s.provider, &s.region, &s.relay, &s.tls);
        let relay = match preset.relay_or(&s.relay) {
            Some(r) => Some(self.relay(subject, r)),
            None if preset.failed => Some(None),
            None => None,
        };
        let tls = self.tls(subject, &s.tls, &s.accept_cleartext);
        match (&relay, &s.tls) {
            (None, Some(t)) => {
                let why = if self.parts.has_relayhost {
                    "this sender goes through the relayhost"
                } else {
                    "this sender has no relay"
                };
                self.at(t, format!("{subject}: tls belongs to a relay; {why}"));
            }
            (Some(Some(r)), _) => self.used(r, tls),
            _ => {}
        }
        if relay.is_none() && !self.parts.has_relayhost {
            let msg = format!("{subject}: no relay, and no [relayhost] to fall back to");
            self.problems.at(line, msg);
        }
        let credentials = RawCredentials {
            username: s.username,
            password: s.password,
            password_file: s.password_file,
            secret_access_key_file: s.secret_access_key_file,
        };
        let credentials = self.credentials(subject, line, credentials, &preset);
        match (key, credentials) {
            (Some(key), Checked::Valid(credentials)) => {
                let written = s.domain.as_ref().or(s.address.as_ref());
                if let Some(w) = written.map(Spanned::get_ref)
                    && !matches!(&key, SenderKey::Domain(k) | SenderKey::Address(k) if k == w)
                {
                    let at = self.parts.senders.len();
                    self.parts.written.insert(at, w.clone());
                }
                self.parts.senders.push(Sender {
                    key,
                    relay: relay.flatten(),
                    credentials,
                    line,
                });
            }
            (Some(key), Checked::Invalid) => {
                let after = self.parts.senders.len();
                let k = KeyUse {
                    key,
                    line,
                    subject: subject.to_string(),
                    after,
                };
                self.parts.rejected_keys.push(k);
            }
            (None, _) => {}
        }
    }

    /// Records a use of a valid relay, and its `tls` if given.
    fn used(&mut self, relay: &Relay, tls: Option<TlsSetting>) {
        if !self.parts.relays.contains(relay) {
            self.parts.relays.insert(relay.clone());
        }
        if let Some(tls) = tls {
            self.parts.uses.push(RelayUse {
                relay: relay.clone(),
                tls,
            });
        }
    }

    /// The sender's subject for messages and its key, if valid.
    fn key<'w>(
        &mut self,
        line: usize,
        domain: &'w Option<Spanned<String>>,
        address: &'w Option<Spanned<String>>,
    ) -> (Subject<'w>, Option<SenderKey>) {
        match (domain, address) {
            (Some(d), Some(a)) => {
                let msg = format!(
                    "sender {:?}/{:?}: both domain and address given; use one",
                    d.get_ref(),
                    a.get_ref()
                );
                self.problems.at(line, msg);
                (Subject::Plain("sender"), None)
            }
            (None, None) => {
                let msg = "sender: needs a domain or an address";
                self.problems.at(line, msg);
                (Subject::Plain("sender"), None)
            }
            (Some(d), None) if d.get_ref().contains('*') => {
                self.parsed_key(d, "domain", fields::parse_wildcard, SenderKey::Wildcard)
            }
            (Some(d), None) => {
                self.parsed_key(d, "domain", fields::parse_domain, SenderKey::Domain)
            }
            (None, Some(a)) => {
                self.parsed_key(a, "address", fields::parse_address, SenderKey::Address)
            }
        }
    }

    /// A domain or address key: its subject for messages, and the key if valid.
    fn parsed_key<'w>(
        &mut self,
        written: &'w Spanned<String>,
        what: &str,
        parse: fn(&str) -> Result<String, String>,
        key: fn(String) -> SenderKey,
    ) -> (Subject<'w>, Option<SenderKey>) {
        let subject = Subject::Sender(written.get_ref());
        match parse(written.get_ref()) {
            Ok(k) => (subject, Some(key(k))),
            Err(e) => {
                self.at(written, format!("{subject}: invalid {what}: {e}"));
                (subject, None)
            }
        }
    }

    /// A relay, parsed once per spelling: the senders that name it share it.
    fn relay(&mut self, subject: Subject<'_>, relay: &Spanned<String>) -> Option<Relay> {
        if let Some(r) = self.relays.get(relay.get_ref()) {
            return Some(r.clone());
        }
        match Relay::parse(relay.get_ref()) {
            Ok(r) => {
                self.relays.insert(relay.get_ref().clone(), r.clone());
                Some(r)
            }
            Err(e) => {
                self.at(
                    relay,
                    format!("{subject}: relay {:?}: {e}", relay.get_ref()),
                );
                None
            }
        }
    }

    /// The entry's `tls` and `accept_cleartext`, which only acknowledges a weak level.
    fn tls(
        &mut self,
        subject: Subject<'_>,
        tls: &Option<Spanned<String>>,
        accept: &Option<Spanned<bool>>,
    ) -> Option<TlsSetting> {
        let setting = tls
            .as_ref()
            .and_then(|t| match fields::parse_tls(t.get_ref()) {
                Ok(level) => Some(TlsSetting {
                    tls: level,
                    line: self.line(t),
                    accepted: false,
                }),
                Err(e) => {
                    self.at(t, format!("{subject}: {e}"));
                    None
                }
            });
        let Some(accept) = accept.as_ref().filter(|a| *a.get_ref()) else {
            return setting;
        };
        match (setting, tls) {
            (Some(s), _) if s.tls.is_weak() => Some(TlsSetting {
                accepted: true,
                ..s
            }),
            (_, Some(t)) if fields::parse_tls(t.get_ref()).is_err() => None,
            _ => {
                let msg = format!(
                    "{subject}: accept_cleartext acknowledges tls = \"may\" or \"none\"; this entry does not set either"
                );
                self.at(accept, msg);
                setting
            }
        }
    }

    /// Checks username/password/password_file of one entry.
    fn credentials(
        &mut self,
        subject: Subject<'_>,
        line: usize,
        mut raw: RawCredentials,
        preset: &PresetUse,
    ) -> Checked<Option<Credentials>> {
        if let Some(p) = &raw.password {
            self.parts.inline_passwords.push(self.line(p));
        }
        let mut ok = true;
        if let Some(u) = &raw.username
            && let Err(e) = fields::check_username(u.get_ref())
        {
            // Not quoted: a username may hold a password typed in by mistake (`user:pw`).
            self.at(u, format!("{subject}: username: {e}"));
            ok = false;
        }
        // Secrets are only checked (and files only read) when they could be used: with
        // a username and without the other kind of secret.
        let secret = match (&mut raw.password, &raw.password_file) {
            _ if raw.username.is_none() => None,
            (None, None) if raw.secret_access_key_file.is_some() => {
                self.derived_password(subject, &raw, preset)
            }
            (Some(_), _) | (_, Some(_)) if raw.secret_access_key_file.is_some() => {
                let f = raw.secret_access_key_file.as_ref().expect("checked above");
                let msg = format!(
                    "{subject}: secret_access_key_file gives the password; no password or password_file beside it"
                );
                self.at(f, msg);
                None
            }
            (Some(p), Some(f)) => {
                let l = self.line(p).max(self.line(f));
                let msg = format!("{subject}: both password and password_file given; use one");
                self.problems.at(l, msg);
                None
            }
            // Moved out: only its span is looked at from here on.
            (Some(p), None) => match fields::check_password(&p.get_ref().0) {
                Ok(()) => Some(Secret::new(std::mem::take(&mut p.get_mut().0))),
                Err(e) => {
                    self.at(p, format!("{subject}: {e}"));
                    None
                }
            },
            (None, Some(f)) => self.password_file(subject, f, "password_file"),
            (None, None) => None,
        };
        ok &= self.pairing(subject, line, &raw);
        let given = raw.password.is_some()
            || raw.password_file.is_some()
            || raw.secret_access_key_file.is_some();
        if given && secret.is_none() {
            ok = false;
        }
        if let (Some(u), Some(p), Some(preset)) = (&raw.username, &secret, preset.preset) {
            ok &= self.login_rule(subject, u, p, preset);
        }
        if !ok {
            return Checked::Invalid;
        }
        Checked::Valid(match (raw.username, secret) {
            (Some(u), Some(password)) => Some(Credentials {
                username: u.into_inner(),
                password,
            }),
            _ => None,
        })
    }

    /// The provider preset an entry names, and the relay it stands for. A `relay` or
    /// `tls` beside it must say what the preset says; `region` and
    /// `secret_access_key_file` belong to a preset that has them.
    fn preset(
        &mut self,
        subject: Subject<'_>,
        provider: &Option<Spanned<String>>,
        region: &Option<Spanned<String>>,
        relay: &Option<Spanned<String>>,
        tls: &Option<Spanned<String>>,
    ) -> PresetUse {
        let mut used = PresetUse::default();
        let Some(provider) = provider else {
            if let Some(r) = region {
                self.at(r, format!("{subject}: region belongs to a provider preset"));
            }
            return used;
        };
        let found = providers::find(provider.get_ref()).and_then(|p| {
            p.relay(region.as_ref().map(|r| r.get_ref().as_str()))
                .map(|relay| (p, relay))
        });
        let (preset, preset_relay) = match found {
            Ok(found) => found,
            Err(e) => {
                let at = region
                    .as_ref()
                    .filter(|_| e.contains("region"))
                    .unwrap_or(provider);
                self.at(at, format!("{subject}: {e}"));
                used.failed = true;
                return used;
            }
        };
        if let Some(r) = relay.as_ref().filter(|r| *r.get_ref() != preset_relay) {
            let msg = format!(
                "{subject}: relay {:?} differs from provider {:?}'s {preset_relay:?}; remove it or the provider",
                r.get_ref(),
                preset.name
            );
            self.at(r, msg);
            used.failed = true;
        }
        if let Some(t) = tls.as_ref().filter(|t| t.get_ref() != providers::TLS) {
            let msg = format!(
                "{subject}: tls {:?} differs from provider {:?}'s {:?}; remove it or the provider",
                t.get_ref(),
                preset.name,
                providers::TLS
            );
            self.at(t, msg);
            used.failed = true;
        }
        used.relay = Some(Spanned::new(provider.span(), preset_relay));
        used.region = region.as_ref().map(|r| r.get_ref().clone());
        used.preset = Some(preset);
        used
    }

    /// SES's SMTP password, derived from the secret access key in
    /// `secret_access_key_file`.
    fn derived_password(
        &mut self,
        subject: Subject<'_>,
        raw: &RawCredentials,
        preset: &PresetUse,
    ) -> Option<Secret<String>> {
        let f = raw.secret_access_key_file.as_ref()?;
        let region = match (preset.preset, &preset.region) {
            (Some(p), Some(region)) if p.login == Login::AwsKey => region,
            (None, _) if preset.failed => return None,
            _ => {
                let msg = format!(
                    "{subject}: secret_access_key_file belongs to provider \"ses\" (with its region)"
                );
                self.at(f, msg);
                return None;
            }
        };
        let secret = self.password_file(subject, f, "secret_access_key_file")?;
        Some(Secret::new(providers::ses_smtp_password(
            secret.expose(),
            region,
        )))
    }

    /// The login rule of a preset (SendGrid's `apikey`, Postmark's one token).
    fn login_rule(
        &mut self,
        subject: Subject<'_>,
        username: &Spanned<String>,
        password: &Secret<String>,
        preset: &Preset,
    ) -> bool {
        let problem = match preset.login {
            Login::Username(want) if username.get_ref() != want => format!(
                "{subject}: provider {:?} takes username {want:?} (the password is the API key)",
                preset.name
            ),
            Login::SameToken if username.get_ref() != password.expose() => format!(
                "{subject}: provider {:?} takes the server token as both username and password",
                preset.name
            ),
            _ => return true,
        };
        self.at(username, problem);
        false
    }

    /// A username needs a secret and a secret a username.
    fn pairing(&mut self, subject: Subject<'_>, line: usize, raw: &RawCredentials) -> bool {
        if let (None, Some(f)) = (&raw.username, &raw.secret_access_key_file) {
            let msg =
                format!("{subject}: secret_access_key_file without username (the access key ID)");
            self.at(f, msg);
            return false;
        }
        match (&raw.username, &raw.password, &raw.password_file) {
            (Some(_), None, None) if raw.secret_access_key_file.is_some() => return true,
            (Some(_), None, None) => {
                let msg = format!("{subject}: username without password or password_file");
                self.problems.at(line, msg);
            }
            (None, Some(p), _) => self.at(p, format!("{subject}: password without username")),
            (None, None, Some(f)) => {
                self.at(f, format!("{subject}: password_file without username"))
            }
            _ => return true,
        }
        false
    }

    /// Reads a `password_file` (relative to the desired-state file's directory).
    fn password_file(
        &mut self,
        subject: Subject<'_>,
        f: &Spanned<String>,
        what: &str,
    ) -> Option<Secret<String>> {
        let written = f.get_ref();
        if written.is_empty() {
            self.at(f, format!("{subject}: empty {what}"));
            return None;
        }
        let path = match self.source.dir() {
            Some(dir) => dir.join(written),
            None if Path::new(written).is_absolute() => PathBuf::from(written),
            None => {
                let msg = format!(
                    "{subject}: {what} {written:?} is relative, and a desired state read from standard input has no directory: give an absolute path"
                );
                self.at(f, msg);
                return None;
            }
        };
        let read = fs::read_private(&path, MAX_FILE_SIZE)
            .and_then(|s| fields::password_from_file(s.bytes.into_inner()));
        match read {
            Ok(pw) => Some(pw),
            Err(e) => {
                let msg = format!("{subject}: {what} {:?}: {e}", path.display());
                self.at(f, msg);
                None
            }
        }
    }
}
