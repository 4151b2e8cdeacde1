//! The desired-state file as TOML gives it: serde structs that deny unknown fields and
//! keep each value's span (for line numbers), before any rule is checked.
//!
//! A TOML error becomes one problem with its bare message and line, never toml's
//! rendered excerpt of the source (which could show a password). An inline `password`
//! is deserialised by a visitor that rejects non-strings without echoing the value
//! (serde's default error would quote it).

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use toml::Spanned;

use super::Source;
use crate::problems::Problems;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawFile {
    pub postfix: Option<Spanned<RawPostfix>>,
    pub relayhost: Option<Spanned<RawRelayHost>>,
    pub sender: Option<Vec<Spanned<RawSender>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [postfix] table")]
pub(super) struct RawPostfix {
    pub config_dir: Option<Spanned<String>>,
    pub map_type: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [relayhost] table")]
pub(super) struct RawRelayHost {
    pub relay: Option<Spanned<String>>,
    pub username: Option<Spanned<String>>,
    pub password: Option<Spanned<RawPassword>>,
    pub password_file: Option<Spanned<String>>,
    pub tls: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[sender]] table")]
pub(super) struct RawSender {
    pub domain: Option<Spanned<String>>,
    pub address: Option<Spanned<String>>,
    pub relay: Option<Spanned<String>>,
    pub username: Option<Spanned<String>>,
    pub password: Option<Spanned<RawPassword>>,
    pub password_file: Option<Spanned<String>>,
    pub tls: Option<Spanned<String>>,
}

/// The credential fields shared by `[relayhost]` and `[[sender]]`.
pub(super) struct RawCredentials {
    pub username: Option<Spanned<String>>,
    pub password: Option<Spanned<RawPassword>>,
    pub password_file: Option<Spanned<String>>,
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

/// Parses the TOML; an error is one problem with toml's bare message and its line.
pub(super) fn parse(source: &Source) -> Result<RawFile, Problems> {
    toml::from_str(source.text).map_err(|e| {
        let line = e.span().map(|span| source.line(span));
        Problems::one(source.path, line, e.message())
    })
}
