//! What a valid desired state loads as. (Every invalid file, with its exact messages,
//! is a fixture under `fixtures/desired/bad/`, run through the binary by the
//! integration tests; the field checks have their table tests in `fields`.)

use std::fs;
use std::os::unix::fs::PermissionsExt;

use tempfile::TempDir;

use super::*;

fn write(dir: &Path, name: &str, contents: &[u8], mode: u32) -> PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(&p, contents).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    p
}

fn relay(s: &str) -> Relay {
    Relay::parse(s).unwrap()
}

fn creds(username: &str, password: &str) -> Option<Credentials> {
    Some(Credentials {
        username: username.into(),
        password: Secret::new(password.into()),
    })
}

fn tls_levels(d: &Desired) -> Vec<(&str, Tls)> {
    d.tls.iter().map(|(k, v)| (k.as_str(), *v)).collect()
}

const RH: &str = "[relayhost]\nrelay = \"[smtp.example.net]:587\"\n";

/// Every kind of entry, valid: loaded by [`full_valid_file`] (`@ABS@`: an absolute
/// password file).
const FULL: &str = r#"# postrelay desired state
[postfix]
config_dir = "/etc/postfix"
map_type = "lmdb"

[relayhost]
relay = "[SMTP.Mailgun.org]:587"
username = "postmaster@example.net"
password_file = "secrets/example.net"
tls = "encrypt"

[[sender]]
domain = "Example.COM"
relay = "[smtp.mailgun.org]:587"
username = "postmaster@example.com"
password = "s3cret	x"

[[sender]]
address = "Wes@Example.org"
relay = "smtp.office365.com:587"
username = "wes@example.org"
password_file = "@ABS@"
tls = "may"

[[sender]]
domain = "example.info"

[[sender]]
address = "x@example.info"
relay = "[192.0.2.1]"
username = "x"
password = "pw"
"#;

#[test]
fn full_valid_file() {
    let dir = TempDir::new().unwrap();
    write(
        dir.path(),
        "secrets/example.net",
        b"rh-secret\nsecond line ignored\n",
        0o600,
    );
    let abs = write(dir.path(), "abs-secret", b"org pass\r\n", 0o600);
    let text = FULL.replace("@ABS@", &abs.display().to_string());
    let p = write(dir.path(), "postrelay.toml", text.as_bytes(), 0o600);
    let d = load(&p).unwrap();
    assert_eq!(d.path, p);
    assert_eq!(d.config_dir, Some(PathBuf::from("/etc/postfix")));
    assert_eq!(d.map_type.as_deref(), Some("lmdb"));
    assert_eq!(
        d.relayhost,
        Some(RelayHost {
            relay: relay("[smtp.mailgun.org]:587"),
            credentials: creds("postmaster@example.net", "rh-secret"),
        })
    );
    assert_eq!(
        d.senders,
        vec![
            Sender {
                key: SenderKey::Domain("example.com".into()),
                relay: Some(relay("[smtp.mailgun.org]:587")),
                credentials: creds("postmaster@example.com", "s3cret\tx"),
                line: 12,
            },
            Sender {
                key: SenderKey::Address("wes@example.org".into()),
                relay: Some(relay("smtp.office365.com:587")),
                credentials: creds("wes@example.org", "org pass"),
                line: 18,
            },
            Sender {
                key: SenderKey::Domain("example.info".into()),
                relay: None,
                credentials: None,
                line: 25,
            },
            Sender {
                key: SenderKey::Address("x@example.info".into()),
                relay: Some(relay("[192.0.2.1]")),
                credentials: creds("x", "pw"),
                line: 28,
            },
        ]
    );
    assert_eq!(
        tls_levels(&d),
        vec![
            ("[192.0.2.1]", Tls::Encrypt),
            ("[smtp.mailgun.org]:587", Tls::Encrypt),
            ("smtp.office365.com:587", Tls::May),
        ]
    );
    assert_eq!(
        d.warnings,
        [Warning {
            line: 23,
            relay: relay("smtp.office365.com:587"),
            tls: Tls::May
        }]
    );
    // Secrets never show in Debug.
    let dbg = format!("{d:?}");
    assert!(!dbg.contains("s3cret") && !dbg.contains("rh-secret") && !dbg.contains("org pass"));
}

#[test]
fn minimal_relayhost_only() {
    let d = parse_str("[relayhost]\nrelay = \"smtp.example.net\"\n").unwrap();
    assert_eq!(d.config_dir, None);
    assert_eq!(d.map_type, None);
    assert!(d.senders.is_empty());
    assert_eq!(
        d.relayhost,
        Some(RelayHost {
            relay: relay("smtp.example.net"),
            credentials: None
        })
    );
    // A relay named by host name defaults to secure.
    assert_eq!(tls_levels(&d), [("smtp.example.net", Tls::Secure)]);
    assert!(d.warnings.is_empty());
}

#[test]
fn inline_tables_and_sender_lines() {
    let d = parse_str(
        "relayhost = { relay = \"r.example\" }\n\nsender = [\n  { domain = \"a.example\" },\n  { address = \"b@a.example\" },\n]\n",
    )
    .unwrap();
    let lines: Vec<usize> = d.senders.iter().map(|s| s.line).collect();
    assert_eq!(lines, vec![4, 5]);
}

#[test]
fn postfix_table() {
    let d = parse_str(&format!(
        "[postfix]\nconfig_dir = \"/etc/postfix-out\"\nmap_type = \"texthash\"\n{RH}"
    ))
    .unwrap();
    assert_eq!(d.config_dir, Some(PathBuf::from("/etc/postfix-out")));
    for m in MAP_TYPES {
        let d = parse_str(&format!("[postfix]\nmap_type = \"{m}\"\n{RH}")).unwrap();
        assert_eq!(d.map_type.as_deref(), Some(*m));
    }
}

#[test]
fn tls_levels_and_their_warnings() {
    for (v, t) in [
        ("encrypt", Tls::Encrypt),
        ("may", Tls::May),
        ("none", Tls::None),
    ] {
        let d = parse_str(&format!(
            "[relayhost]\nrelay = \"r.example\"\ntls = \"{v}\"\n"
        ))
        .unwrap();
        assert_eq!(tls_levels(&d), [("r.example", t)]);
        assert_eq!(d.warnings.len(), usize::from(t != Tls::Encrypt));
    }
    // Different relays may have different policies.
    let d = parse_str(
        "[relayhost]\nrelay = \"a.example\"\ntls = \"may\"\n[[sender]]\ndomain = \"x.example\"\nrelay = \"a.example:25\"\ntls = \"none\"\n",
    )
    .unwrap();
    assert_eq!(
        tls_levels(&d),
        [("a.example", Tls::May), ("a.example:25", Tls::None)]
    );
    assert_eq!(d.warnings.len(), 2);
}

#[test]
fn tls_propagates_per_relay() {
    // An explicit value anywhere applies to every entry using that relay.
    let text = "[[sender]]\ndomain = \"a.example\"\nrelay = \"[r.example]:587\"\n\n\
                [[sender]]\ndomain = \"b.example\"\nrelay = \"[R.example]:587\"\ntls = \"none\"\n\n\
                [[sender]]\ndomain = \"c.example\"\nrelay = \"[r.example]:587\"\ntls = \"none\"\n\n\
                [[sender]]\ndomain = \"d.example\"\nrelay = \"other.example\"\n\n\
                [relayhost]\nrelay = \"[r.example]:587\"\n";
    let d = parse_str(text).unwrap();
    assert_eq!(
        tls_levels(&d),
        [
            ("[r.example]:587", Tls::None),
            ("other.example", Tls::Secure)
        ]
    );
    assert_eq!(
        d.warnings,
        [Warning {
            line: 8,
            relay: relay("[r.example]:587"),
            tls: Tls::None
        }]
    );
    // Without any explicit tls: secure for a host name, encrypt for an IP literal.
    let d = parse_str(RH).unwrap();
    assert_eq!(d.tls_of(&relay("[smtp.example.net]:587")), Tls::Secure);
    let d = parse_str("[relayhost]\nrelay = \"[192.0.2.1]:587\"\n").unwrap();
    assert_eq!(d.tls_of(&relay("[192.0.2.1]:587")), Tls::Encrypt);
}

#[test]
fn password_files_absolute_and_relative() {
    let dir = TempDir::new().unwrap();
    let sub = dir.path().join("conf");
    write(&sub, "rel-pw", b"relative\n", 0o600);
    let abs = write(dir.path(), "abs-pw", b"absolute\n", 0o600);
    let p = write(
        &sub,
        "postrelay.toml",
        format!(
            "[relayhost]\nrelay = \"r.example\"\nusername = \"u\"\npassword_file = \"rel-pw\"\n[[sender]]\ndomain = \"a.example\"\nusername = \"v\"\npassword_file = \"{}\"\n",
            abs.display()
        )
        .as_bytes(),
        0o644,
    );
    let d = load(&p).unwrap();
    let rh = d.relayhost.unwrap().credentials.unwrap();
    assert_eq!(rh.password.expose(), "relative");
    let s = d.senders[0].credentials.as_ref().unwrap();
    assert_eq!(s.password.expose(), "absolute");
}

#[test]
fn an_address_may_use_its_domains_credentials_on_the_same_relay() {
    let domain = "[[sender]]\ndomain = \"corp.test\"\nrelay = \"[dom.example]:587\"\nusername = \"d\"\npassword = \"pw\"\n";
    let same =
        format!("{domain}\n[[sender]]\naddress = \"a@corp.test\"\nrelay = \"[dom.example]:587\"\n");
    assert_eq!(parse_str(&same).unwrap().senders.len(), 2);
    let own = format!(
        "{domain}\n[[sender]]\naddress = \"a@corp.test\"\nrelay = \"[own.example]:587\"\nusername = \"a\"\npassword = \"pw-a\"\n"
    );
    assert_eq!(parse_str(&own).unwrap().senders.len(), 2);
    // A domain and an address in it are different keys.
    let d = parse_str(&format!(
        "{RH}[[sender]]\ndomain = \"example.com\"\n[[sender]]\naddress = \"example.com@example.com\"\n"
    ))
    .unwrap();
    assert_eq!(d.senders.len(), 2);
}

#[test]
fn without_inline_passwords_a_readable_file_is_fine() {
    let d = parse(
        Path::new("p.toml"),
        &format!("{RH}[[sender]]\ndomain = \"a.example\"\n"),
        0o644,
    );
    assert!(d.is_ok());
    let inline = format!("{RH}username = \"u\"\npassword = \"pw\"\n");
    for mode in [0o600, 0o400] {
        assert!(parse(Path::new("p.toml"), &inline, mode).is_ok());
    }
}

#[test]
fn lines_of_offsets() {
    let s = Source::new(Path::new("f"), "a\nb\nc");
    assert_eq!(s.line(0..1), 1);
    assert_eq!(s.line(2..3), 2);
    assert_eq!(s.line(4..5), 3);
    assert_eq!(s.line(100..101), 3);
    assert_eq!(Source::new(Path::new("f"), "").line(0..0), 1);
}

#[test]
fn accept_cleartext_ends_the_warning_of_its_relay() {
    let d = parse_str(
        "[relayhost]\nrelay = \"r.example\"\ntls = \"may\"\naccept_cleartext = true\n\
         [[sender]]\ndomain = \"a.example\"\nrelay = \"r.example\"\ntls = \"may\"\n",
    )
    .unwrap();
    assert_eq!(tls_levels(&d), [("r.example", Tls::May)]);
    assert!(d.warnings.is_empty());
    let d =
        parse_str("[relayhost]\nrelay = \"r.example\"\ntls = \"none\"\naccept_cleartext = false\n")
            .unwrap();
    assert_eq!(d.warnings.len(), 1);
}

#[test]
fn duplicates_are_told_in_file_order_even_on_one_line() {
    let err = |text: &str| parse_str(text).unwrap_err().to_string();
    let rh = "relayhost = { relay = \"r.example\" }\n";
    assert_eq!(
        err(&format!(
            "{rh}sender = [{{ domain = \"A.example\", username = \"u\" }}, {{ domain = \"a.Example\" }}, {{ domain = \"B.example\" }}]\n"
        )),
        "test.toml, line 2: sender \"A.example\": username without password or password_file\n\
         test.toml, line 2: sender \"a.Example\": duplicate of the sender at line 2 (key \"@a.example\")"
    );
    assert_eq!(
        err(&format!(
            "{rh}sender = [{{ domain = \"B.example\" }}, {{ domain = \"A.example\" }}, {{ domain = \"a.Example\", username = \"u\" }}, {{ domain = \"b.EXAMPLE\" }}]\n"
        )),
        "test.toml, line 2: sender \"a.Example\": username without password or password_file\n\
         test.toml, line 2: sender \"a.Example\": duplicate of the sender at line 2 (key \"@a.example\")\n\
         test.toml, line 2: sender \"b.EXAMPLE\": duplicate of the sender at line 2 (key \"@b.example\")"
    );
}

/// `provider` presets: the relay they stand for (in brackets, TLS `secure` by default),
/// an equal explicit relay and tls accepted, SES's password derived from the secret
/// access key file.
#[test]
fn provider_presets_fill_in_the_relay_and_derive_the_ses_password() {
    let dir = TempDir::new().unwrap();
    let key = write(dir.path(), "ses.key", b"some+secret+key\n", 0o600);
    let toml = format!(
        r#"
[relayhost]
provider = "mailgun"
region = "eu"
username = "postmaster@mg.example"
password = "mg-pw"

[[sender]]
domain = "ses.example"
provider = "ses"
region = "eu-central-1"
username = "AKIAIOSFODNN7EXAMPLE"
secret_access_key_file = "{}"

[[sender]]
domain = "sg.example"
provider = "sendgrid"
relay = "[smtp.sendgrid.net]:587"
tls = "secure"
username = "apikey"
password = "SG.key"

[[sender]]
domain = "pm.example"
provider = "postmark"
username = "pm-token"
password = "pm-token"
"#,
        key.display()
    );
    let d = parse(&dir.path().join("p.toml"), &toml, 0o600).unwrap();
    let rh = d.relayhost.as_ref().unwrap();
    assert_eq!(rh.relay, relay("[smtp.eu.mailgun.org]:587"));
    let by = |domain: &str| {
        d.senders
            .iter()
            .find(|s| s.key == SenderKey::Domain(domain.into()))
            .unwrap()
    };
    let ses = by("ses.example");
    assert_eq!(
        ses.relay,
        Some(relay("[email-smtp.eu-central-1.amazonaws.com]:587"))
    );
    assert_eq!(
        ses.credentials,
        creds(
            "AKIAIOSFODNN7EXAMPLE",
            "BMXhUYlu5Z3gSXVQORxlVa7XPaz91aGWdfHxvkOZdWZ2"
        )
    );
    assert_eq!(
        by("sg.example").relay,
        Some(relay("[smtp.sendgrid.net]:587"))
    );
    assert_eq!(
        by("pm.example").relay,
        Some(relay("[smtp.postmarkapp.com]:587"))
    );
    assert!(
        tls_levels(&d).iter().all(|(_, t)| *t == Tls::Secure),
        "{:?}",
        tls_levels(&d)
    );
}
