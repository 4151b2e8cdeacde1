//! Lossless edits of the desired-state file, through toml_edit: the `[[sender]]` entries
//! `mailgun sync` adds, and the login `mailgun rotate` switches. Every other byte
//! (comments, order, spacing, the other entries) is kept. The caller validates the
//! edited text as a whole (`desired::parse`) before it writes it.

use std::path::Path;

use anyhow::{Context, Result, bail};
use toml_edit::{ArrayOfTables, DocumentMut, Item, Table, Value, value};

/// A `[[sender]]` entry for one domain of a provider, its password in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewSender<'a> {
    pub domain: &'a str,
    pub provider: &'a str,
    /// Written only when not the provider's default.
    pub region: Option<&'a str>,
    pub username: &'a str,
    pub password_file: &'a Path,
}

/// A `[[sender]]` entry with a `provider`, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEntry {
    pub provider: String,
    pub region: Option<String>,
    pub username: Option<String>,
    /// As written (relative to the file's directory, or absolute).
    pub password_file: Option<String>,
}

fn document(path: &Path, text: &str) -> Result<DocumentMut> {
    text.parse::<DocumentMut>()
        .with_context(|| format!("{}: not TOML", path.display()))
}

/// `text` with `senders` appended as `[[sender]]` tables, after the last one.
pub fn add_senders(path: &Path, text: &str, senders: &[NewSender<'_>]) -> Result<String> {
    let mut doc = document(path, text)?;
    let list = doc
        .entry("sender")
        .or_insert_with(|| Item::ArrayOfTables(ArrayOfTables::new()));
    let Some(list) = list.as_array_of_tables_mut() else {
        bail!(
            "{}: `sender` is not a list of [[sender]] tables",
            path.display()
        );
    };
    for s in senders {
        let mut t = Table::new();
        t.insert("domain", value(s.domain));
        t.insert("provider", value(s.provider));
        if let Some(r) = s.region {
            t.insert("region", value(r));
        }
        t.insert("username", value(s.username));
        t.insert(
            "password_file",
            value(s.password_file.display().to_string()),
        );
        t.decor_mut().set_prefix("\n");
        list.push(t);
    }
    let mut out = doc.to_string();
    if !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

/// The `[[sender]]` table for `domain` (its `domain` key, as written, compared
/// case-insensitively).
fn sender_mut<'d>(path: &Path, doc: &'d mut DocumentMut, domain: &str) -> Result<&'d mut Table> {
    let found = doc
        .get_mut("sender")
        .and_then(Item::as_array_of_tables_mut)
        .and_then(|list| {
            list.iter_mut().find(|t| {
                t.get("domain")
                    .and_then(Item::as_str)
                    .is_some_and(|d| d.trim_start_matches('@').eq_ignore_ascii_case(domain))
            })
        });
    found.with_context(|| format!("{}: no [[sender]] with domain = {domain:?}", path.display()))
}

/// What the entry for `domain` says of its provider and login.
pub fn provider_entry(path: &Path, text: &str, domain: &str) -> Result<ProviderEntry> {
    let mut doc = document(path, text)?;
    let t = sender_mut(path, &mut doc, domain)?;
    let get = |k: &str| t.get(k).and_then(Item::as_str).map(str::to_string);
    let Some(provider) = get("provider") else {
        bail!(
            "{}: the [[sender]] for {domain} has no provider = \"mailgun\"",
            path.display()
        );
    };
    Ok(ProviderEntry {
        provider,
        region: get("region"),
        username: get("username"),
        password_file: get("password_file"),
    })
}

/// `text` with the entry for `domain` logging in as `username` with the password in
/// `password_file` (an inline `password` is removed).
pub fn switch_login(
    path: &Path,
    text: &str,
    domain: &str,
    username: &str,
    password_file: &Path,
) -> Result<String> {
    let mut doc = document(path, text)?;
    let t = sender_mut(path, &mut doc, domain)?;
    set_keeping_decor(t, "username", username);
    t.remove("password");
    set_keeping_decor(t, "password_file", &password_file.display().to_string());
    Ok(doc.to_string())
}

/// Sets `key` to the string `v`, keeping the spacing and comment around the old value.
fn set_keeping_decor(t: &mut Table, key: &str, v: &str) {
    match t.get_mut(key).and_then(Item::as_value_mut) {
        Some(old) => {
            let decor = old.decor().clone();
            let mut new = Value::from(v);
            *new.decor_mut() = decor;
            *old = new;
        }
        None => {
            t.insert(key, value(v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# My relays.
[relayhost]
relay = \"[smtp.example.net]:587\"   # the catch-all

[[sender]]
domain = \"a.example\"
provider = \"mailgun\"
username = \"postrelay@a.example\"
password = \"old\"  # inline, for now
";

    #[test]
    fn senders_are_appended_and_every_other_byte_kept() {
        let f = Path::new("/etc/postrelay/secrets/postrelay@b.example");
        let new = NewSender {
            domain: "b.example",
            provider: "mailgun",
            region: Some("eu"),
            username: "postrelay@b.example",
            password_file: f,
        };
        let out = add_senders(Path::new("p.toml"), TEXT, &[new]).unwrap();
        assert_eq!(
            out,
            format!(
                "{TEXT}\n[[sender]]\ndomain = \"b.example\"\nprovider = \"mailgun\"\nregion = \"eu\"\nusername = \"postrelay@b.example\"\npassword_file = \"{}\"\n",
                f.display()
            )
        );
        let empty = add_senders(Path::new("p.toml"), "", &[new]).unwrap();
        assert!(
            empty.starts_with("\n[[sender]]\ndomain = \"b.example\""),
            "{empty}"
        );
    }

    #[test]
    fn a_login_is_switched_in_place() {
        let out = switch_login(
            Path::new("p.toml"),
            TEXT,
            "A.example",
            "postrelay-2@a.example",
            Path::new("/s/postrelay-2@a.example"),
        )
        .unwrap();
        assert_eq!(
            out,
            TEXT.replace("postrelay@a.example", "postrelay-2@a.example")
                .replace("password = \"old\"  # inline, for now\n", "")
                + "password_file = \"/s/postrelay-2@a.example\"\n"
        );
        let e = provider_entry(Path::new("p.toml"), TEXT, "a.example").unwrap();
        assert_eq!(e.provider, "mailgun");
        assert_eq!(e.username.as_deref(), Some("postrelay@a.example"));
        assert!(provider_entry(Path::new("p.toml"), TEXT, "c.example").is_err());
    }
}
