//! The desired-state file import writes, as text: a commented TOML document whose
//! every value says where it came from, and the password files beside it. Strings are
//! rendered by the `toml` crate (escaping), comments are single lines with control
//! characters replaced. [`check_same`] proves a rendering faithful: the file parsed by
//! postrelay's own loader gives the same entries.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::Finding;
use super::build::{Imported, Item};
use crate::desired::{Desired, SenderKey};
use crate::secret::Secret;

/// A password file to create: first line the password.
#[derive(Debug, Clone)]
pub struct PasswordFile {
    pub path: PathBuf,
    pub password: Secret<String>,
}

/// Where each item's password goes, in [`Imported::items`] order: a file under `dir`
/// (named after the sender, `relayhost` for the relayhost), or inline when `dir` is
/// `None`. Items without credentials get `None`.
pub fn password_files(imported: &Imported, dir: Option<&Path>) -> Vec<Option<PasswordFile>> {
    let mut taken = HashSet::new();
    imported
        .items()
        .map(|item| {
            let (dir, c) = (dir?, item.credentials.as_ref()?);
            let base = match &item.key {
                None => "relayhost".to_string(),
                Some(SenderKey::Domain(d)) => d.clone(),
                Some(SenderKey::Wildcard(w)) => format!("any.{w}"),
                Some(SenderKey::Address(a)) => a.clone(),
            };
            let base: String = base
                .chars()
                .map(|ch| match ch {
                    'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' | '@' | '+' => ch,
                    _ => '_',
                })
                .collect();
            let base = base.replacen('.', "_", usize::from(base.starts_with('.')));
            let name = (1..)
                .map(|n| {
                    if n == 1 {
                        base.clone()
                    } else {
                        format!("{base}.{n}")
                    }
                })
                .find(|n| taken.insert(n.clone()))
                .expect("an unused name");
            Some(PasswordFile {
                path: dir.join(name),
                password: c.password.clone(),
            })
        })
        .collect()
}

/// A TOML string.
fn string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// `# text` on one line, control characters replaced.
fn comment(out: &mut String, text: &str) {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    let _ = writeln!(out, "# {clean}");
}

/// What the document says about its origin.
pub struct Header<'a> {
    pub config_dir: &'a Path,
    /// The one type all imported maps have, if they share one.
    pub map_type: Option<&'a str>,
}

/// The desired-state document. `files` is [`password_files`]'s result; an item with
/// credentials and no file gets its password inline.
pub fn desired(
    header: &Header,
    imported: &Imported,
    findings: &[Finding],
    files: &[Option<PasswordFile>],
) -> String {
    let mut out = String::new();
    let dir = header.config_dir.display().to_string();
    comment(
        &mut out,
        "postrelay desired state, written by `postrelay import` from the Postfix",
    );
    comment(
        &mut out,
        &format!("configuration in {dir} (main.cf and the maps it names). Each value is what"),
    );
    comment(
        &mut out,
        "Postfix resolved then; the comment above it says where it came from.",
    );
    comment(
        &mut out,
        "`postrelay plan` shows what apply would change before it changes anything.",
    );
    if !findings.is_empty() {
        out.push_str("#\n");
        comment(
            &mut out,
            "Not imported as it was (also reported on stderr):",
        );
        for f in findings {
            comment(&mut out, &format!("- {f}"));
        }
    }
    out.push_str("\n[postfix]\n");
    let _ = writeln!(out, "config_dir = {}", string(&dir));
    if let Some(t) = header.map_type {
        comment(&mut out, "map_type: the type of the maps imported");
        let _ = writeln!(out, "map_type = {}", string(t));
    }
    for (item, file) in imported.items().zip(files) {
        out.push('\n');
        entry(&mut out, item, file.as_ref());
    }
    out
}

fn entry(out: &mut String, item: &Item, file: Option<&PasswordFile>) {
    match &item.key {
        None => out.push_str("[relayhost]\n"),
        Some(k) => {
            out.push_str("[[sender]]\n");
            let (field, value) = match k {
                SenderKey::Domain(d) => ("domain", d.clone()),
                SenderKey::Wildcard(w) => ("domain", format!("*.{w}")),
                SenderKey::Address(a) => ("address", a.clone()),
            };
            let _ = writeln!(out, "{field} = {}", string(&value));
        }
    }
    match &item.relay {
        Some(r) => {
            comment(out, &format!("relay: {}", item.relay_from));
            let _ = writeln!(out, "relay = {}", string(r.as_str()));
        }
        None => comment(out, &format!("relay: none of its own: {}", item.relay_from)),
    }
    match &item.credentials {
        Some(c) => {
            comment(out, &format!("credentials: {}", item.credentials_from));
            let _ = writeln!(out, "username = {}", string(&c.username));
            match file {
                Some(f) => {
                    let path = f.path.display().to_string();
                    let _ = writeln!(out, "password_file = {}", string(&path));
                }
                None => {
                    let _ = writeln!(out, "password = {}", string(c.password.expose()));
                }
            }
        }
        None if item.inherited => comment(
            out,
            &format!(
                "credentials: not written: postrelay's rule gives the same ones, {}",
                item.credentials_from
            ),
        ),
        None => comment(out, &format!("credentials: {}", item.credentials_from)),
    }
    if let Some((tls, from)) = &item.tls {
        comment(out, &format!("tls: {from}"));
        let _ = writeln!(out, "tls = {}", string(tls.as_str()));
        if tls.is_weak() {
            comment(
                out,
                &format!(
                    "Postfix used \"{}\" for this relay, so credentials may go out without TLS;",
                    tls.as_str()
                ),
            );
            comment(
                out,
                "accept_cleartext keeps that (and postrelay's warning quiet). Prefer tls = \"encrypt\"",
            );
            comment(
                out,
                "(and remove accept_cleartext) once the relay is known to offer STARTTLS.",
            );
            out.push_str("accept_cleartext = true\n");
        }
    }
}

/// Whether `parsed` (the rendered document, loaded by postrelay) holds exactly the
/// imported entries: same relayhost, senders in order with their relays and
/// credentials, and each relay's TLS level.
pub fn check_same(parsed: &Desired, imported: &Imported) -> Result<(), String> {
    let rh = match (&parsed.relayhost, &imported.relayhost) {
        (Some(p), Some(i)) => Some(&p.relay) == i.relay.as_ref() && p.credentials == i.credentials,
        (None, None) => true,
        _ => false,
    };
    if !rh {
        return Err("[relayhost] differs".into());
    }
    if parsed.senders.len() != imported.senders.len() {
        return Err("the number of senders differs".into());
    }
    for (p, i) in parsed.senders.iter().zip(&imported.senders) {
        if Some(&p.key) != i.key.as_ref() || p.relay != i.relay || p.credentials != i.credentials {
            return Err(format!("sender {} differs", p.key.table_key()));
        }
    }
    for item in imported.items() {
        if let (Some(relay), Some((tls, _))) = (&item.relay, &item.tls)
            && parsed.tls_of(relay) != *tls
        {
            return Err(format!("the tls of {relay} differs"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{Credentials, Tls, parse};
    use crate::routing::Relay;

    fn item(
        key: Option<SenderKey>,
        relay: Option<&str>,
        user: Option<&str>,
        tls: Option<Tls>,
    ) -> Item {
        Item {
            key,
            relay: relay.map(|r| Relay::parse(r).unwrap()),
            relay_from: "main.cf, line 3\nwith a newline".into(),
            credentials: user.map(|u| Credentials {
                username: u.into(),
                password: Secret::new(format!("pw \"{u}\" \\ # x")),
            }),
            credentials_from: "sasl_passwd, line 1".into(),
            inherited: false,
            tls: tls.map(|t| (t, "no smtp_tls_policy_maps entry".to_string())),
        }
    }

    fn imported() -> Imported {
        let rh = "[smtp.mailgun.org]:587";
        Imported {
            relayhost: Some(item(None, Some(rh), Some("catch@all"), Some(Tls::May))),
            senders: vec![
                item(
                    Some(SenderKey::Domain("example.com".into())),
                    Some(rh),
                    Some("dom"),
                    Some(Tls::May),
                ),
                item(
                    Some(SenderKey::Address("wes@example.com".into())),
                    None,
                    Some("wes"),
                    None,
                ),
                item(
                    Some(SenderKey::Domain("b.example".into())),
                    Some("[other.example]:2525"),
                    None,
                    Some(Tls::Encrypt),
                ),
                item(
                    Some(SenderKey::Address("x@b.example".into())),
                    Some("[none.example]"),
                    None,
                    Some(Tls::None),
                ),
            ],
        }
    }

    #[test]
    fn inline_passwords_round_trip_through_the_loader() {
        let imp = imported();
        let header = Header {
            config_dir: Path::new("/etc/postfix"),
            map_type: Some("hash"),
        };
        let findings = [Finding::at(
            "/etc/postfix/sasl_passwd, line 9",
            "a note\nwith a newline",
        )];
        let files = password_files(&imp, None);
        let text = desired(&header, &imp, &findings, &files);
        let d = parse(Path::new("/tmp/postrelay.toml"), &text, 0o600)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        check_same(&d, &imp).unwrap();
        assert!(
            d.warnings.is_empty(),
            "accept_cleartext silences the warnings"
        );
        assert_eq!(d.map_type.as_deref(), Some("hash"));
        assert!(text.contains("# - /etc/postfix/sasl_passwd, line 9: a note?with a newline\n"));
        assert!(text.contains("# relay: main.cf, line 3?with a newline\n"));
    }

    #[test]
    fn password_files_round_trip_and_have_distinct_names() {
        let mut imp = imported();
        imp.senders.push(item(
            Some(SenderKey::Domain("relayhost".into())),
            Some("[r.example]"),
            Some("r"),
            Some(Tls::Encrypt),
        ));
        imp.senders.push(item(
            Some(SenderKey::Address(".a/b@x.example".into())),
            Some("[r.example]"),
            Some("s"),
            Some(Tls::Encrypt),
        ));
        let dir = tempfile::tempdir().unwrap();
        let files = password_files(&imp, Some(dir.path()));
        let names: Vec<String> = files
            .iter()
            .flatten()
            .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "relayhost",
                "example.com",
                "wes@example.com",
                "relayhost.2",
                "_a_b@x.example"
            ]
        );
        for f in files.iter().flatten() {
            std::fs::write(&f.path, format!("{}\n", f.password.expose())).unwrap();
            let private = std::os::unix::fs::PermissionsExt::from_mode(0o600);
            std::fs::set_permissions(&f.path, private).unwrap();
        }
        let header = Header {
            config_dir: Path::new("/etc/postfix"),
            map_type: None,
        };
        let text = desired(&header, &imp, &[], &files);
        for f in files.iter().flatten() {
            assert!(!text.contains(f.password.expose().as_str()), "{text}");
        }
        let d = parse(&dir.path().join("postrelay.toml"), &text, 0o644)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        check_same(&d, &imp).unwrap();
        imp.senders[0].credentials = None;
        assert_eq!(
            check_same(&d, &imp),
            Err("sender @example.com differs".into())
        );
    }
}
