//! The desired-state file as TOML gives it: serde structs that deny unknown fields and
//! keep each value's span (for line numbers), before any rule is checked. The TOML is
//! parsed once; every unknown key is reported (with its line) before serde, which would
//! stop at the first.
//!
//! A TOML error becomes one problem with its bare message and line, never toml's
//! rendered excerpt of the source (which could show a password). An inline `password`
//! is deserialised by a visitor that rejects non-strings without echoing the value
//! (serde's default error would quote it).

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::Source;
use crate::problems::Problems;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawFile {
    pub postfix: Option<Spanned<RawPostfix>>,
    pub relayhost: Option<Spanned<RawRelayHost>>,
    pub sender: Option<Vec<Spanned<RawSender>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a [postfix] table")]
pub(super) struct RawPostfix {
    pub config_dir: Option<Spanned<String>>,
    pub map_type: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a [relayhost] table")]
pub(super) struct RawRelayHost {
    pub relay: Option<Spanned<String>>,
    pub username: Option<Spanned<String>>,
    pub password: Option<Spanned<RawPassword>>,
    pub password_file: Option<Spanned<String>>,
    pub tls: Option<Spanned<String>>,
    pub accept_cleartext: Option<Spanned<bool>>,
    pub provider: Option<Spanned<String>>,
    pub region: Option<Spanned<String>>,
    pub secret_access_key_file: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a [[sender]] table")]
pub(super) struct RawSender {
    pub domain: Option<Spanned<String>>,
    pub address: Option<Spanned<String>>,
    pub relay: Option<Spanned<String>>,
    pub username: Option<Spanned<String>>,
    pub password: Option<Spanned<RawPassword>>,
    pub password_file: Option<Spanned<String>>,
    pub tls: Option<Spanned<String>>,
    pub accept_cleartext: Option<Spanned<bool>>,
    pub provider: Option<Spanned<String>>,
    pub region: Option<Spanned<String>>,
    pub secret_access_key_file: Option<Spanned<String>>,
}

/// The credential fields shared by `[relayhost]` and `[[sender]]`.
pub(super) struct RawCredentials {
    pub username: Option<Spanned<String>>,
    pub password: Option<Spanned<RawPassword>>,
    pub password_file: Option<Spanned<String>>,
    pub secret_access_key_file: Option<Spanned<String>>,
}

/// An inline `password` value.
pub(super) struct RawPassword(pub String);

impl<'de> Deserialize<'de> for RawPassword {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PasswordVisitor)
    }
}

struct PasswordVisitor;

fn not_a_string<E: de::Error>() -> E {
    E::custom("invalid type for password, expected a string")
}

impl<'de> Visitor<'de> for PasswordVisitor {
    type Value = RawPassword;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawPassword, E> {
        Ok(RawPassword(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<RawPassword, E> {
        Ok(RawPassword(v))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<RawPassword, E> {
        Err(not_a_string())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<RawPassword, E> {
        Err(not_a_string())
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<RawPassword, E> {
        Err(not_a_string())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<RawPassword, E> {
        Err(not_a_string())
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<RawPassword, E> {
        Err(not_a_string())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawPassword, E> {
        Err(not_a_string())
    }
    fn visit_char<E: de::Error>(self, _: char) -> Result<RawPassword, E> {
        Err(not_a_string())
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<RawPassword, E> {
        Err(not_a_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<RawPassword, E> {
        Err(not_a_string())
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<RawPassword, A::Error> {
        Err(not_a_string())
    }
    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<RawPassword, A::Error> {
        Err(not_a_string())
    }
}

/// The keys of each table, as the structs above name their fields.
const TOP_KEYS: &[&str] = &["postfix", "relayhost", "sender"];
pub(super) const POSTFIX_KEYS: &[&str] = &["config_dir", "map_type"];
/// The keys of `[relayhost]`; a `[[sender]]` has `domain` and `address` first.
pub(super) const RELAYHOST_KEYS: &[&str] = &[
    "relay",
    "username",
    "password",
    "password_file",
    "tls",
    "accept_cleartext",
    "provider",
    "region",
    "secret_access_key_file",
];
pub(super) const SENDER_KEYS: &[&str] = &["domain", "address"];

/// Parses the TOML; a syntax error is one problem with toml's bare message and its line,
/// unknown keys are one problem each.
pub(super) fn parse(source: &Source) -> Result<RawFile, Problems> {
    let toml_problem = |e: toml::de::Error| {
        let line = e.span().map(|span| source.line(span));
        Problems::one(source.path, line, e.message())
    };
    let doc = DeTable::parse(source.text).map_err(toml_problem)?;
    let mut problems = Problems::new(source.path);
    unknown_keys(source, doc.get_ref(), TOP_KEYS, &mut problems);
    for (key, value) in doc.get_ref() {
        let allowed: Vec<&str> = match key.get_ref().as_ref() {
            "postfix" => POSTFIX_KEYS.to_vec(),
            "relayhost" => RELAYHOST_KEYS.to_vec(),
            "sender" => [SENDER_KEYS, RELAYHOST_KEYS].concat(),
            _ => continue,
        };
        let tables: Vec<&DeTable> = match value.get_ref() {
            DeValue::Table(t) => vec![t],
            DeValue::Array(items) => items
                .iter()
                .filter_map(|i| match i.get_ref() {
                    DeValue::Table(t) => Some(t),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        for t in tables {
            unknown_keys(source, t, &allowed, &mut problems);
        }
    }
    problems.into_result()?;
    RawFile::deserialize(toml::de::Deserializer::from(doc)).map_err(toml_problem)
}

/// One problem per key of `table` not in `allowed`, worded as serde words it.
fn unknown_keys(source: &Source, table: &DeTable, allowed: &[&str], problems: &mut Problems) {
    for key in table.keys() {
        let name = key.get_ref().as_ref();
        if !allowed.contains(&name) {
            let names: Vec<String> = allowed.iter().map(|k| format!("`{k}`")).collect();
            let expected = match names.as_slice() {
                [a, b] => format!("{a} or {b}"),
                _ => format!("one of {}", names.join(", ")),
            };
            problems.at(
                source.line(key.span()),
                format!("unknown field `{name}`, expected {expected}"),
            );
        }
    }
}
