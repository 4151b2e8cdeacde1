//! `postrelay verify`: logs in to every relay with every credential of the desired state
//! (connect, EHLO, STARTTLS, AUTH, QUIT) without sending mail, so a wrong password or a
//! relay without TLS is found before Postfix starts deferring mail.
//!
//! Each check does what Postfix's SMTP client would do with the settings postrelay
//! writes: STARTTLS when the relay's policy is `encrypt` or `may` and the server offers
//! it; `encrypt` without STARTTLS is a failure before any password is sent. Like Postfix's
//! `encrypt` level, the server certificate is not verified (that would be `verify` or
//! `secure`). A relay written without brackets is connected to directly (its address
//! records), where Postfix would look up its MX records first.
//!
//! The SMTP dialogue is lettre's (a maintained client: STARTTLS with rustls, AUTH PLAIN
//! and LOGIN, reply parsing), not hand-written. Failures never contain the password:
//! server replies are scrubbed of it before they are shown.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Result, bail};
use lettre::transport::smtp::authentication::{Credentials as SmtpCredentials, Mechanism};
use lettre::transport::smtp::client::{SmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;

use crate::desired::{Credentials, Desired, Sender, Tls};

/// One login to try.
#[derive(Debug, Clone)]
pub struct Check {
    /// Who uses it: `@domain`, an address, or `relayhost`.
    pub who: String,
    pub relay: String,
    pub tls: Tls,
    pub credentials: Option<Credentials>,
}

/// What one check found.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub check: Check,
    /// `Ok(how)`: e.g. "STARTTLS, AUTH PLAIN"; `Err(why)`.
    pub result: Result<String, String>,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.check;
        let user = c
            .credentials
            .as_ref()
            .map(|cr| format!(" as {}", cr.username))
            .unwrap_or_default();
        match &self.result {
            Ok(how) => write!(f, "ok      {} via {}{user} ({how})", c.who, c.relay),
            Err(why) => write!(f, "FAILED  {} via {}{user}: {why}", c.who, c.relay),
        }
    }
}

/// The checks the desired state calls for, optionally only those of one sender
/// (`example.com`, `@example.com`, an address, or `relayhost`).
pub fn checks(desired: &Desired, only: Option<&str>) -> Result<Vec<Check>> {
    let tls_of = |relay: &str| desired.tls.get(relay).copied().unwrap_or(Tls::Encrypt);
    let mut out = Vec::new();
    if let Some(rh) = &desired.relayhost {
        out.push(Check {
            who: "relayhost".into(),
            relay: rh.relay.clone(),
            tls: tls_of(&rh.relay),
            credentials: rh.credentials.clone(),
        });
    }
    // What Postfix authenticates a sender with (smtp_sasl_password_maps is searched by
    // address, then @domain, then the next hop): its own credentials, else its domain
    // entry's, else those keyed by the relay itself (the relayhost's).
    let used_credentials = |s: &Sender, relay: &str| -> Option<Credentials> {
        let domain_entry = || {
            let domain = s.key.domain_key()?;
            desired
                .senders
                .iter()
                .find(|d| d.key == domain)?
                .credentials
                .clone()
        };
        let relay_entry = || {
            let rh = desired.relayhost.as_ref().filter(|rh| rh.relay == relay)?;
            rh.credentials.clone()
        };
        s.credentials
            .clone()
            .or_else(domain_entry)
            .or_else(relay_entry)
    };
    for s in &desired.senders {
        // A sender with neither relay nor credentials is just the relayhost's check.
        let relay = match (&s.relay, &desired.relayhost, &s.credentials) {
            (Some(r), _, _) => r.clone(),
            (None, Some(rh), Some(_)) => rh.relay.clone(),
            _ => continue,
        };
        out.push(Check {
            who: s.key.table_key(),
            tls: tls_of(&relay),
            credentials: used_credentials(s, &relay),
            relay,
        });
    }
    if let Some(only) = only {
        let want = only.to_ascii_lowercase();
        let bare = want.trim_start_matches('@');
        out.retain(|c| c.who == want || c.who.trim_start_matches('@') == bare);
        if out.is_empty() {
            bail!(
                "{}: no sender {only:?} with a relay or credentials to verify",
                desired.path.display()
            );
        }
    }
    Ok(out)
}

/// Splits a relay (`[host]:port`, `host:port`, `[host]`, `host`) into the host to
/// connect to and the port (25 when none is given, as Postfix's smtp service).
pub fn endpoint(relay: &str) -> (String, u16) {
    let (host, port) = match relay.strip_prefix('[') {
        Some(rest) => {
            let (host, after) = rest.split_once(']').unwrap_or((rest, ""));
            (host, after.strip_prefix(':'))
        }
        None => match relay.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (relay, None),
        },
    };
    let host = host.strip_prefix("ipv6:").unwrap_or(host);
    (
        host.to_string(),
        port.and_then(|p| p.parse().ok()).unwrap_or(25),
    )
}

fn hello_name() -> ClientId {
    let name = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    ClientId::Domain(name)
}

/// Runs one check. The error text is scrubbed of the password.
pub fn run_check(check: &Check, timeout: Duration) -> Result<String, String> {
    let password = check
        .credentials
        .as_ref()
        .map(|c| c.password.expose().to_string());
    login(check, timeout).map_err(|why| match &password {
        Some(p) if !p.is_empty() => why.replace(p.as_str(), "********"),
        _ => why,
    })
}

fn login(check: &Check, timeout: Duration) -> Result<String, String> {
    let (host, port) = endpoint(&check.relay);
    let hello = hello_name();
    tracing::debug!("verify {}: connecting to {host} port {port}", check.who);
    let mut conn =
        SmtpConnection::connect((host.as_str(), port), Some(timeout), &hello, None, None)
            .map_err(|e| format!("cannot connect to {host} port {port}: {}", chain(&e)))?;
    let mut how = Vec::new();
    if check.tls != Tls::None && conn.can_starttls() {
        let params = TlsParameters::builder(host.clone())
            .dangerous_accept_invalid_certs(true)
            .dangerous_accept_invalid_hostnames(true)
            .build_rustls()
            .map_err(|e| format!("TLS setup: {}", chain(&e)))?;
        conn.starttls(&params, &hello)
            .map_err(|e| format!("STARTTLS failed: {}", chain(&e)))?;
        how.push("STARTTLS".to_string());
    } else if check.tls == Tls::Encrypt {
        let _ = conn.quit();
        return Err("TLS required (tls = \"encrypt\") but the server does not offer STARTTLS; no password was sent".into());
    } else {
        how.push("no TLS".to_string());
    }
    match &check.credentials {
        Some(c) => {
            let mechanisms = [Mechanism::Plain, Mechanism::Login];
            let Some(mechanism) = conn.server_info().get_auth_mechanism(&mechanisms) else {
                let _ = conn.quit();
                return Err("the server offers no AUTH PLAIN or LOGIN".into());
            };
            let creds = SmtpCredentials::new(c.username.clone(), c.password.expose().to_string());
            conn.auth(&[mechanism], &creds)
                .map_err(|e| format!("authentication failed: {}", chain(&e)))?;
            how.push(format!("AUTH {mechanism}"));
        }
        None => how.push("no credentials".to_string()),
    }
    let _ = conn.quit();
    Ok(how.join(", "))
}

/// An error and its sources on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Runs all checks, several at a time, in the order given.
pub fn verify(checks: Vec<Check>, timeout: Duration) -> Vec<Outcome> {
    let results: Vec<Mutex<Option<Result<String, String>>>> =
        checks.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let workers = checks.len().clamp(1, 8);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(check) = checks.get(i) else { break };
                    let result = run_check(check, timeout);
                    *results[i].lock().expect("verify result lock") = Some(result);
                }
            });
        }
    });
    checks
        .into_iter()
        .zip(results)
        .map(|(check, r)| Outcome {
            check,
            result: r
                .into_inner()
                .expect("verify result lock")
                .expect("every check ran"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{RelayHost, Secret, SenderKey};

    fn creds(user: &str) -> Option<Credentials> {
        Some(Credentials {
            username: user.into(),
            password: Secret::new(format!("{user}-pw")),
        })
    }

    fn sender(key: SenderKey, relay: Option<&str>, user: Option<&str>) -> Sender {
        Sender {
            key,
            relay: relay.map(str::to_string),
            credentials: user.and_then(creds),
            line: 1,
        }
    }

    #[test]
    fn checks_use_the_credentials_postfix_would_use() {
        let desired = Desired {
            path: "p.toml".into(),
            config_dir: None,
            map_type: None,
            relayhost: Some(RelayHost {
                relay: "[rh.example]:587".into(),
                credentials: creds("rh"),
            }),
            senders: vec![
                sender(
                    SenderKey::Domain("a.example".into()),
                    Some("[a.example]:587"),
                    Some("a"),
                ),
                // Same relay as its domain, no credentials: the domain's.
                sender(
                    SenderKey::Address("x@a.example".into()),
                    Some("[a.example]:587"),
                    None,
                ),
                // Through the relayhost's relay, no credentials: the relayhost's.
                sender(
                    SenderKey::Domain("b.example".into()),
                    Some("[rh.example]:587"),
                    None,
                ),
                // Another relay, no credentials: none.
                sender(
                    SenderKey::Domain("c.example".into()),
                    Some("[c.example]:25"),
                    None,
                ),
                // No relay, own credentials: the relayhost's relay.
                sender(SenderKey::Address("y@c.example".into()), None, Some("y")),
                // Neither: nothing of its own to check.
                sender(SenderKey::Domain("d.example".into()), None, None),
            ],
            tls: Default::default(),
            warnings: Vec::new(),
        };
        let got: Vec<(String, String, Option<String>)> = checks(&desired, None)
            .unwrap()
            .into_iter()
            .map(|c| (c.who, c.relay, c.credentials.map(|c| c.username)))
            .collect();
        let want = [
            ("relayhost", "[rh.example]:587", Some("rh")),
            ("@a.example", "[a.example]:587", Some("a")),
            ("x@a.example", "[a.example]:587", Some("a")),
            ("@b.example", "[rh.example]:587", Some("rh")),
            ("@c.example", "[c.example]:25", None),
            ("y@c.example", "[rh.example]:587", Some("y")),
        ];
        let want: Vec<(String, String, Option<String>)> = want
            .iter()
            .map(|(w, r, u)| (w.to_string(), r.to_string(), u.map(str::to_string)))
            .collect();
        assert_eq!(got, want);
        assert_eq!(checks(&desired, Some("A.example")).unwrap().len(), 1);
        assert!(checks(&desired, Some("d.example")).is_err());
    }

    #[test]
    fn endpoints() {
        let cases = [
            ("[smtp.mailgun.org]:587", ("smtp.mailgun.org", 587)),
            ("[127.0.0.1]:2525", ("127.0.0.1", 2525)),
            ("relay.example", ("relay.example", 25)),
            ("relay.example:2525", ("relay.example", 2525)),
            ("[relay.example]", ("relay.example", 25)),
            ("[ipv6:2001:db8::1]:587", ("2001:db8::1", 587)),
        ];
        for (relay, (host, port)) in cases {
            assert_eq!(endpoint(relay), (host.to_string(), port), "{relay}");
        }
    }
}
