//! `postrelay verify`: logs in to every relay with the credentials Postfix would use for
//! each sender (connect, EHLO, STARTTLS, AUTH, QUIT) without sending mail, so a wrong
//! password, a relay without TLS or a certificate Postfix would refuse is found before
//! Postfix starts deferring mail.
//!
//! Which relay and which credentials come from `routing`, the same rule validation and
//! plan use. Each check does what Postfix's SMTP client would do at the relay's TLS
//! level (`login`): STARTTLS when the level is not `none` and the server offers it;
//! `encrypt`, `verify` and `secure` without STARTTLS fail before any password is sent;
//! at `secure` and `verify` the certificate chain is checked against Postfix's own
//! trust store ([`trust`]) and its name against the relay's host name, and a refused
//! certificate ends the check before AUTH ([`tls`]). Which servers a check tries is
//! decided in one place, [`servers`]: a relay in brackets itself, a relay without
//! brackets its MX hosts in order of preference (`dns`), as Postfix's SMTP client.
//!
//! The SMTP client is our own ([`smtp`]) rather than a crate's, because a check must
//! stay bounded against a hostile network: one deadline for the whole dialogue, capped
//! reply lines and replies, and certificate checks against Postfix's CA settings. One
//! check's budget is `--timeout`, from connect to QUIT. Results are data ([`Outcome`]);
//! `report` words them. Failures never contain the password: everything taken from a
//! server's reply is scrubbed of it and of its base64 AUTH forms.

mod login;
pub mod smtp;
pub mod tls;
pub mod trust;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Result, bail};
use base64::Engine as _;

use crate::desired::{Credentials, Desired, SenderKey, Tls};
use crate::dns;
use crate::routing::{Relay, Route};
use crate::secret::{MASK, Secret};
use crate::state;

pub use smtp::ReplyProblem;
pub use tls::CertProblem;

use crate::managed::CaSource;
use smtp::Deadline;

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

/// What the client was waiting for when a check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// The MX lookup of a relay written without brackets.
    Lookup,
    Connection,
    Greeting,
    Ehlo,
    StartTls,
    TlsHandshake,
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
    /// TLS from the first byte (a relay on port 465), without STARTTLS.
    pub implicit_tls: bool,
    /// The AUTH mechanism used; `None` without credentials.
    pub mechanism: Option<String>,
}

/// Why a login failed. Text that came from the server is kept as data (control
/// characters replaced) and scrubbed of the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The MX lookup of a relay written without brackets found no server (`dns`).
    Lookup {
        domain: String,
        error: String,
    },
    Connect {
        host: String,
        port: u16,
        error: String,
    },
    TlsSetup(String),
    /// STARTTLS refused, or a TLS handshake that failed for another reason than the
    /// certificate.
    StartTls(String),
    /// A relay on port 465 whose TLS handshake (before the greeting) failed for another
    /// reason than the certificate: no password was sent.
    ImplicitTls(String),
    /// A level that needs TLS (`encrypt`, `verify`, `secure`) and no STARTTLS offered:
    /// no password was sent.
    NoStartTls(Tls),
    /// `secure` or `verify`: the certificate for `name` was refused; no password was sent.
    Certificate {
        level: Tls,
        name: String,
        problem: CertProblem,
        trust: CaSource,
    },
    /// The check's whole budget (`after`) ran out.
    TimedOut {
        waiting: Waiting,
        after: Duration,
    },
    /// The server closed the connection, or it broke (`error`).
    Closed {
        waiting: Waiting,
        error: Option<String>,
    },
    /// A reply postrelay refuses to read (too long, malformed).
    BadReply {
        waiting: Waiting,
        problem: ReplyProblem,
    },
    /// The greeting or the EHLO reply was not a success.
    Refused {
        waiting: Waiting,
        reply: String,
    },
    NoAuthMechanism,
    Auth(String),
}

/// Every form of a login that may come back in a server's reply: the password, the
/// base64 `AUTH PLAIN` string (`\0user\0password`) and `AUTH LOGIN`'s base64 password.
fn secret_forms(c: &Credentials) -> Vec<Secret<String>> {
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
    forms.into_iter().map(Secret::new).collect()
}

/// Replaces every secret form in text that came from a server or a library.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scrubber {
    forms: Vec<Secret<String>>,
}

impl Scrubber {
    fn new(credentials: Option<&Credentials>) -> Scrubber {
        Scrubber {
            forms: credentials.map(secret_forms).unwrap_or_default(),
        }
    }

    fn clean(&self, text: &str) -> String {
        let mut t = text.to_string();
        for form in &self.forms {
            t = t.replace(form.expose().as_str(), MASK);
        }
        t
    }
}

impl Failure {
    /// The failure with every secret form replaced in the texts from the server or library.
    fn scrub(self, scrubber: &Scrubber) -> Failure {
        let s = |t: String| scrubber.clean(&t);
        match self {
            Failure::Connect { host, port, error } => Failure::Connect {
                host,
                port,
                error: s(error),
            },
            Failure::TlsSetup(e) => Failure::TlsSetup(s(e)),
            Failure::StartTls(e) => Failure::StartTls(s(e)),
            Failure::ImplicitTls(e) => Failure::ImplicitTls(s(e)),
            Failure::Auth(e) => Failure::Auth(s(e)),
            Failure::Closed { waiting, error } => Failure::Closed {
                waiting,
                error: error.map(s),
            },
            Failure::Refused { waiting, reply } => Failure::Refused {
                waiting,
                reply: s(reply),
            },
            Failure::BadReply {
                waiting,
                problem: ReplyProblem::Malformed { line },
            } => Failure::BadReply {
                waiting,
                problem: ReplyProblem::Malformed { line: s(line) },
            },
            Failure::Certificate {
                level,
                name,
                problem: CertProblem::Other(e),
                trust,
            } => Failure::Certificate {
                level,
                name,
                problem: CertProblem::Other(s(e)),
                trust,
            },
            other => other,
        }
    }
}

/// What one check found.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub check: Check,
    pub result: Result<Success, Failure>,
    /// The login this check shares with the other checks of the same relay, TLS level
    /// and credentials, which ran once for all of them (an index in first-seen order).
    pub login: usize,
}

impl Failure {
    /// Whether the relay itself did not answer (no server, no connection, no greeting):
    /// a failure before any credentials, which other logins to it would meet too.
    fn before_login(&self) -> bool {
        match self {
            Failure::Lookup { .. } | Failure::Connect { .. } => true,
            Failure::TimedOut { waiting, .. } | Failure::Closed { waiting, .. } => {
                matches!(
                    waiting,
                    Waiting::Lookup | Waiting::Connection | Waiting::Greeting
                )
            }
            _ => false,
        }
    }
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

/// One server a check may log in to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub host: String,
    pub port: u16,
}

/// The servers a check tries, in order, until one answers: the one place that decides
/// them. Postfix connects to a relay in brackets (and to an IP literal) directly, by its
/// address records; for a relay without brackets it looks up the domain's MX records
/// first and tries those hosts in order of preference, on the relay's port (`dns`).
/// The deadline is the check's: the lookup must fit in it.
pub fn servers(relay: &Relay, deadline: &Deadline) -> Result<Vec<Server>, Failure> {
    let (host, port) = relay.endpoint();
    let direct = || Server {
        host: host.to_string(),
        port,
    };
    if relay.is_bracketed() || relay.is_ip_literal() {
        return Ok(vec![direct()]);
    }
    let Some(left) = deadline.left() else {
        return Err(Failure::TimedOut {
            waiting: Waiting::Lookup,
            after: deadline.total(),
        });
    };
    let hosts = dns::mx_hosts(host, left).map_err(|e| Failure::Lookup {
        domain: host.to_string(),
        error: format!("{e:#}"),
    })?;
    tracing::debug!("verify: MX hosts of {host}: {}", hosts.join(", "));
    Ok(hosts
        .into_iter()
        .map(|host| Server { host, port })
        .collect())
}

/// Whether any of `checks` verifies certificates, and so needs Postfix's trust store.
pub fn needs_trust_store(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.tls.verifies_certificate())
}

/// How checks run: each check's whole budget, how many run at once, and the trust
/// store for `secure` and `verify` (`None` when no check needs one: see
/// [`needs_trust_store`]).
#[derive(Debug, Clone)]
pub struct Settings {
    pub timeout: Duration,
    pub jobs: usize,
    pub trust: Option<trust::TrustStore>,
}

/// How many logins run at once unless `--jobs` says otherwise.
pub const DEFAULT_JOBS: usize = 32;

/// One check's budget unless `--timeout` says otherwise (and in `apply --verify`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `checks` for `desired` (see [`run`]). Postfix's trust store, in the config dir
/// `postfix_dir` or the desired state's, is read only when a check verifies
/// certificates (`secure`, `verify`).
pub fn run_for(
    desired: &Desired,
    postfix_dir: Option<&Path>,
    checks: Vec<Check>,
    timeout: Duration,
    jobs: usize,
) -> Result<Vec<Outcome>> {
    let trust = match needs_trust_store(&checks) {
        true => Some(trust::load(&state::config_dir(desired, postfix_dir)?)?),
        false => None,
    };
    let settings = Settings {
        timeout,
        jobs,
        trust,
    };
    Ok(run(checks, &settings))
}

/// Whether every check succeeded.
pub fn all_ok(outcomes: &[Outcome]) -> bool {
    outcomes.iter().all(|o| o.result.is_ok())
}

/// Runs one check within `settings.timeout`. Failures are scrubbed of the password.
fn run_check(
    check: &Check,
    clients: &Result<tls::Clients, String>,
    settings: &Settings,
) -> Result<Success, Failure> {
    let scrubber = Scrubber::new(check.credentials.as_ref());
    let deadline = Deadline::after(settings.timeout);
    let trust = settings.trust.as_ref().map(|t| &t.source);
    login::login(check, clients, trust, deadline, &scrubber).map_err(|f| f.scrub(&scrubber))
}

/// Runs all checks and returns their outcomes in the order given. Each distinct login
/// (relay, TLS level, credentials) runs once, whichever senders share it, at most
/// `settings.jobs` at a time. The first login to each relay runs before the others to
/// it: when the relay does not answer, its other logins take that failure instead of
/// each waiting out its own timeout.
pub fn run(checks: Vec<Check>, settings: &Settings) -> Vec<Outcome> {
    let mut index: HashMap<(&Relay, Tls, Option<&Credentials>), usize> = HashMap::new();
    let mut logins: Vec<&Check> = Vec::new();
    let login_of: Vec<usize> = checks
        .iter()
        .map(|c| {
            *index
                .entry((&c.relay, c.tls, c.credentials.as_ref()))
                .or_insert_with(|| {
                    logins.push(c);
                    logins.len() - 1
                })
        })
        .collect();
    let mut seen = HashSet::new();
    let (first, rest): (Vec<usize>, Vec<usize>) =
        (0..logins.len()).partition(|&i| seen.insert(&logins[i].relay));

    let clients = tls::Clients::new(settings.trust.as_ref());
    let results: Vec<Mutex<Option<Result<Success, Failure>>>> =
        logins.iter().map(|_| Mutex::new(None)).collect();
    let result = |i: usize| results[i].lock().expect("verify result lock").clone();
    in_parallel(&first, settings.jobs, |i| {
        let r = run_check(logins[i], &clients, settings);
        *results[i].lock().expect("verify result lock") = Some(r);
    });
    let unanswered: HashMap<&Relay, Failure> = first
        .iter()
        .filter_map(|&i| match result(i) {
            Some(Err(f)) if f.before_login() => Some((&logins[i].relay, f)),
            _ => None,
        })
        .collect();
    in_parallel(&rest, settings.jobs, |i| {
        let r = match unanswered.get(&logins[i].relay) {
            Some(f) => Err(f.clone()),
            None => run_check(logins[i], &clients, settings),
        };
        *results[i].lock().expect("verify result lock") = Some(r);
    });
    let results: Vec<Result<Success, Failure>> = results
        .into_iter()
        .map(|r| {
            r.into_inner()
                .expect("verify result lock")
                .expect("every login ran")
        })
        .collect();
    checks
        .into_iter()
        .zip(login_of)
        .map(|(check, login)| Outcome {
            check,
            result: results[login].clone(),
            login,
        })
        .collect()
}

/// Calls `f` on each of `items`, on at most `jobs` threads.
fn in_parallel(items: &[usize], jobs: usize, f: impl Fn(usize) + Sync) {
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..items.len().clamp(1, jobs.max(1)) {
            scope.spawn(|| {
                while let Some(&i) = items.get(next.fetch_add(1, Ordering::Relaxed)) {
                    f(i);
                }
            });
        }
    });
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
        let forms: Vec<String> = secret_forms(&c)
            .into_iter()
            .map(Secret::into_inner)
            .collect();
        // AUTH PLAIN's "\0u\0hunter2" and AUTH LOGIN's "hunter2", in base64.
        assert_eq!(forms, ["AHUAaHVudGVyMg==", "aHVudGVyMg==", "hunter2"]);
        let scrubber = Scrubber::new(Some(&c));
        // Secret forms do not show in a Debug print of the scrubber either.
        assert!(!format!("{scrubber:?}").contains("hunter2"));
        let f = Failure::Auth(
            "535 bad credentials for u:hunter2, echo AHUAaHVudGVyMg== / aHVudGVyMg==".into(),
        );
        assert_eq!(
            f.scrub(&scrubber),
            Failure::Auth("535 bad credentials for u:********, echo ******** / ********".into())
        );
        // Every text that may quote the server is scrubbed.
        let waiting = Waiting::Greeting;
        for (dirty, clean) in [
            (
                Failure::Refused {
                    waiting,
                    reply: "554 hunter2".into(),
                },
                Failure::Refused {
                    waiting,
                    reply: "554 ********".into(),
                },
            ),
            (
                Failure::BadReply {
                    waiting,
                    problem: ReplyProblem::Malformed {
                        line: "xyz aHVudGVyMg==".into(),
                    },
                },
                Failure::BadReply {
                    waiting,
                    problem: ReplyProblem::Malformed {
                        line: "xyz ********".into(),
                    },
                },
            ),
            (
                Failure::Closed {
                    waiting,
                    error: Some("reset after hunter2".into()),
                },
                Failure::Closed {
                    waiting,
                    error: Some("reset after ********".into()),
                },
            ),
            (
                Failure::StartTls("454 hunter2".into()),
                Failure::StartTls("454 ********".into()),
            ),
        ] {
            assert_eq!(dirty.scrub(&scrubber), clean);
        }
        assert_eq!(
            Failure::NoStartTls(Tls::Encrypt).scrub(&scrubber),
            Failure::NoStartTls(Tls::Encrypt)
        );
    }
}
