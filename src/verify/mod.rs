//! `postrelay verify`: logs in to every relay with the credentials Postfix would use for
//! each sender (connect, EHLO, STARTTLS, AUTH, QUIT) without sending mail, so a wrong
//! password or a relay without TLS is found before Postfix starts deferring mail.
//!
//! Which relay and which credentials come from `routing`, the same rule validation and
//! plan use. Each check does what Postfix's SMTP client would do with the settings
//! postrelay writes: STARTTLS when the relay's policy is `encrypt` or `may` and the
//! server offers it; `encrypt` without STARTTLS is a failure before any password is
//! sent. Like Postfix's `encrypt` level, the server certificate is not verified (that
//! would be `verify` or `secure`). A relay written without brackets is connected to
//! directly (its address records), where Postfix would look up its MX records first.
//!
//! The SMTP dialogue is lettre's (a maintained client: STARTTLS with rustls, AUTH PLAIN
//! and LOGIN, reply parsing), not hand-written. Results are data ([`Outcome`]); `report`
//! words them. Failures never contain the password: server replies are scrubbed of it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Result, bail};
use lettre::transport::smtp::authentication::{Credentials as SmtpCredentials, Mechanism};
use lettre::transport::smtp::client::{SmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;

use crate::desired::{Credentials, Desired, SenderKey, Tls};
use crate::routing::{Relay, Route};
use base64::Engine as _;

use crate::secret::MASK;

/// Whose mail a check is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// Unlisted senders and bounces.
    Relayhost,
    Sender(SenderKey),
    /// An address asked for with `--sender`, routed by another entry's route (its
    /// domain's), or by the relayhost's (`via: None`).
    Address {
        address: String,
        via: Option<SenderKey>,
    },
}

impl Who {
    /// `relayhost`, `@domain`, the address, or `address (@domain)` for one routed by another entry.
    pub fn name(&self) -> String {
        match self {
            Who::Relayhost => "relayhost".into(),
            Who::Sender(key) => key.table_key(),
            Who::Address { address, via } => match via {
                Some(key) => format!("{address} ({})", key.table_key()),
                None => format!("{address} (relayhost)"),
            },
        }
    }
}

/// What the client was waiting for when a check timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    Connection,
    Greeting,
    StartTls,
    Auth,
}

/// One login to try.
#[derive(Debug, Clone)]
pub struct Check {
    pub who: Who,
    pub relay: Relay,
    pub tls: Tls,
    /// What Postfix authenticates with there (`None`: no AUTH).
    pub credentials: Option<Credentials>,
}

/// How a login went through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Success {
    pub starttls: bool,
    /// The AUTH mechanism used; `None` without credentials.
    pub mechanism: Option<String>,
}

/// Why a login failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Connect {
        host: String,
        port: u16,
        error: String,
    },
    TlsSetup(String),
    StartTls(String),
    /// `tls = "encrypt"` and no STARTTLS offered: no password was sent.
    NoStartTls,
    /// Nothing came within the timeout.
    TimedOut {
        waiting: Waiting,
        after: Duration,
    },
    NoAuthMechanism,
    Auth(String),
}

/// Every form of a login that may come back in a server's reply: the password, the
/// base64 `AUTH PLAIN` string (`\0user\0password`) and `AUTH LOGIN`'s base64 password.
fn secret_forms(c: &Credentials) -> Vec<String> {
    let password = c.password.expose();
    if password.is_empty() {
        return Vec::new();
    }
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
    let mut forms = vec![
        password.clone(),
        b64(format!("\0{}\0{password}", c.username)),
        b64(password.clone()),
    ];
    // Longest first, so no form is cut by a shorter one inside it.
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    forms
}

impl Failure {
    /// Replaces every occurrence of each of `secrets` in the texts from the server or
    /// library.
    fn scrub(self, secrets: &[String]) -> Failure {
        let s = |mut t: String| {
            for secret in secrets {
                t = t.replace(secret.as_str(), MASK);
            }
            t
        };
        match self {
            Failure::Connect { host, port, error } => Failure::Connect {
                host,
                port,
                error: s(error),
            },
            Failure::TlsSetup(e) => Failure::TlsSetup(s(e)),
            Failure::StartTls(e) => Failure::StartTls(s(e)),
            Failure::Auth(e) => Failure::Auth(s(e)),
            other => other,
        }
    }
}

/// What one check found.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub check: Check,
    pub result: Result<Success, Failure>,
}

/// The checks the desired state calls for; with `only`, the one check of that sender:
/// `relayhost`, a domain (`example.com` or `@example.com`) with an entry, or any address,
/// resolved as Postfix resolves it (the address's entry, else its domain's, else the
/// relayhost).
pub fn checks(desired: &Desired, only: Option<&str>) -> Result<Vec<Check>> {
    let routing = desired.routing();
    let check = |who: Who, route: Route| -> Option<Check> {
        let relay = route.relay?.clone();
        Some(Check {
            who,
            tls: desired.tls_of(&relay),
            relay,
            credentials: route.credentials.map(|(c, _)| c.clone()),
        })
    };
    if let Some(only) = only {
        let want = only.to_ascii_lowercase();
        let found = match want.split_once('@') {
            _ if want == "relayhost" => routing.relayhost_route().map(|r| (Who::Relayhost, r)),
            Some((local, _)) if !local.is_empty() => {
                let entry = routing.entry_for(&want);
                let route =
                    entry.map_or_else(|| routing.relayhost_route(), |e| Some(routing.route(e)));
                let who = match entry {
                    Some(e) if e.key == SenderKey::Address(want.clone()) => {
                        Who::Sender(e.key.clone())
                    }
                    e => Who::Address {
                        address: want.clone(),
                        via: e.map(|e| e.key.clone()),
                    },
                };
                route.map(|r| (who, r))
            }
            _ => {
                let domain = SenderKey::Domain(want.trim_start_matches('@').to_string());
                let entry = desired.senders.iter().find(|s| s.key == domain);
                entry.map(|e| (Who::Sender(e.key.clone()), routing.route(e)))
            }
        };
        return match found.and_then(|(who, route)| check(who, route)) {
            Some(c) => Ok(vec![c]),
            None => bail!(
                "{}: no sender {only:?} with a relay or credentials to verify",
                desired.path.display()
            ),
        };
    }
    let mut out: Vec<Check> = routing
        .relayhost_route()
        .and_then(|route| check(Who::Relayhost, route))
        .into_iter()
        .collect();
    // A sender with neither relay nor credentials of its own is just the relayhost's check.
    out.extend(
        desired
            .senders
            .iter()
            .filter(|s| s.relay.is_some() || s.credentials.is_some())
            .filter_map(|s| check(Who::Sender(s.key.clone()), routing.route(s))),
    );
    Ok(out)
}

fn hello_name() -> ClientId {
    let name = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    ClientId::Domain(name)
}

/// Runs one check. Failures are scrubbed of the password.
pub fn run_check(check: &Check, timeout: Duration) -> Result<Success, Failure> {
    login(check, timeout).map_err(|f| match &check.credentials {
        Some(c) => f.scrub(&secret_forms(c)),
        None => f,
    })
}

/// A timeout in lettre's error, as what was awaited: a connect that timed out, or a read
/// that did (`EAGAIN` from the socket's read timeout).
fn timed_out(
    e: &lettre::transport::smtp::Error,
    reading: Waiting,
    timeout: Duration,
) -> Option<Failure> {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            let waiting = match io.kind() {
                std::io::ErrorKind::TimedOut if reading == Waiting::Greeting => Waiting::Connection,
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => reading,
                _ => return None,
            };
            return Some(Failure::TimedOut {
                waiting,
                after: timeout,
            });
        }
        source = err.source();
    }
    None
}

fn login(check: &Check, timeout: Duration) -> Result<Success, Failure> {
    let (host, port) = check.relay.endpoint();
    let hello = hello_name();
    tracing::debug!(
        "verify {}: connecting to {host} port {port}",
        check.who.name()
    );
    let mut conn = SmtpConnection::connect((host, port), Some(timeout), &hello, None, None)
        .map_err(|e| {
            timed_out(&e, Waiting::Greeting, timeout).unwrap_or_else(|| Failure::Connect {
                host: host.to_string(),
                port,
                error: chain(&e),
            })
        })?;
    let starttls = check.tls != Tls::None && conn.can_starttls();
    if starttls {
        let params = TlsParameters::builder(host.to_string())
            .dangerous_accept_invalid_certs(true)
            .dangerous_accept_invalid_hostnames(true)
            .build_rustls()
            .map_err(|e| Failure::TlsSetup(chain(&e)))?;
        conn.starttls(&params, &hello).map_err(|e| {
            timed_out(&e, Waiting::StartTls, timeout)
                .unwrap_or_else(|| Failure::StartTls(chain(&e)))
        })?;
    } else if !check.tls.is_weak() {
        let _ = conn.quit();
        return Err(Failure::NoStartTls);
    }
    let mechanism = match &check.credentials {
        Some(c) => {
            let mechanisms = [Mechanism::Plain, Mechanism::Login];
            let Some(mechanism) = conn.server_info().get_auth_mechanism(&mechanisms) else {
                let _ = conn.quit();
                return Err(Failure::NoAuthMechanism);
            };
            let creds = SmtpCredentials::new(c.username.clone(), c.password.expose().to_string());
            conn.auth(&[mechanism], &creds).map_err(|e| {
                timed_out(&e, Waiting::Auth, timeout).unwrap_or_else(|| Failure::Auth(chain(&e)))
            })?;
            Some(mechanism.to_string())
        }
        None => None,
    };
    let _ = conn.quit();
    Ok(Success {
        starttls,
        mechanism,
    })
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

/// Runs all checks, several at a time, and returns their outcomes in the order given.
pub fn run(checks: Vec<Check>, timeout: Duration) -> Vec<Outcome> {
    let results: Vec<Mutex<Option<Result<Success, Failure>>>> =
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
    use crate::desired::parse_str;

    #[test]
    fn checks_use_the_credentials_postfix_would_use() {
        let desired = parse_str(
            r#"
            [relayhost]
            relay = "[rh.example]:587"
            username = "rh"
            password = "rh-pw"
            # Own relay and credentials.
            [[sender]]
            domain = "a.example"
            relay = "[a.example]:587"
            username = "a"
            password = "a-pw"
            # Same relay as its domain, no credentials: the domain's.
            [[sender]]
            address = "x@a.example"
            relay = "[a.example]:587"
            # Through the relayhost's relay, no credentials: the relayhost's.
            [[sender]]
            domain = "b.example"
            relay = "[rh.example]:587"
            # Another relay, no credentials: none.
            [[sender]]
            domain = "c.example"
            relay = "[c.example]:25"
            # No relay, own credentials: the relayhost's relay.
            [[sender]]
            address = "y@c.example"
            username = "y"
            password = "y-pw"
            # Neither: nothing of its own to check.
            [[sender]]
            domain = "d.example"
            "#,
        )
        .unwrap();
        let got: Vec<(String, String, Option<String>)> = checks(&desired, None)
            .unwrap()
            .into_iter()
            .map(|c| {
                (
                    c.who.name(),
                    c.relay.to_string(),
                    c.credentials.map(|c| c.username),
                )
            })
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
        // An address resolves as Postfix resolves it: its entry, its domain's, the relayhost.
        let one = |sender: &str| {
            let c = checks(&desired, Some(sender)).unwrap().remove(0);
            (
                c.who.name(),
                c.relay.to_string(),
                c.credentials.map(|c| c.username),
            )
        };
        let row = |who: &str, relay: &str, user: &str| {
            (who.to_string(), relay.to_string(), Some(user.to_string()))
        };
        assert_eq!(
            one("X@a.example"),
            row("x@a.example", "[a.example]:587", "a")
        );
        assert_eq!(
            one("someone@a.example"),
            row("someone@a.example (@a.example)", "[a.example]:587", "a")
        );
        assert_eq!(
            one("someone@d.example"),
            row("someone@d.example (@d.example)", "[rh.example]:587", "rh")
        );
        assert_eq!(
            one("someone@unlisted.example"),
            row(
                "someone@unlisted.example (relayhost)",
                "[rh.example]:587",
                "rh"
            )
        );
        assert_eq!(one("relayhost"), row("relayhost", "[rh.example]:587", "rh"));
        // A domain without an entry is an error; its addresses go through the relayhost.
        assert!(checks(&desired, Some("unlisted.example")).is_err());
    }

    #[test]
    fn failures_are_scrubbed_of_the_password_in_every_encoding() {
        let c = Credentials {
            username: "u".into(),
            password: crate::secret::Secret::new("hunter2".into()),
        };
        let forms = secret_forms(&c);
        // AUTH PLAIN's "\0u\0hunter2" and AUTH LOGIN's "hunter2", in base64.
        assert_eq!(forms, ["AHUAaHVudGVyMg==", "aHVudGVyMg==", "hunter2"]);
        let f = Failure::Auth(
            "535 bad credentials for u:hunter2, echo AHUAaHVudGVyMg== / aHVudGVyMg==".into(),
        );
        assert_eq!(
            f.scrub(&forms),
            Failure::Auth("535 bad credentials for u:********, echo ******** / ********".into())
        );
        assert_eq!(Failure::NoStartTls.scrub(&forms), Failure::NoStartTls);
    }
}
