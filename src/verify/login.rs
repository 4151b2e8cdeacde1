//! One check's dialogue, as Postfix's SMTP client conducts it at the relay's TLS level:
//! greeting, EHLO, STARTTLS (unless the level is `none`; required unless it is `may`;
//! on port 465 the TLS handshake comes before the greeting instead),
//! EHLO again over TLS, AUTH PLAIN (else AUTH LOGIN, as offered) with the check's
//! credentials, QUIT. No command that could send mail is ever sent.
//!
//! The order is the safety argument: the password is sent only after the TLS the level
//! requires is up, with the certificate accepted at `secure` and `verify`; any earlier
//! failure returns before [`authenticate`] is reached. Every step runs within the
//! check's one deadline (`smtp`). Logs at trace level show the dialogue with the
//! credentials masked and the server's text scrubbed.

use base64::Engine as _;
use rustls::pki_types::ServerName;

use super::smtp::{self, Deadline, Reply, Session};
use super::tls::{CertProblem, Clients};
use super::{Check, Failure, Scrubber, Server, Success, Waiting};
use crate::desired::{Credentials, Tls};
use crate::managed::CaSource;
use crate::secret::Secret;

/// The mechanisms tried, in order of preference (Postfix's Cyrus SASL client prefers
/// PLAIN to LOGIN too).
const MECHANISMS: [&str; 2] = ["PLAIN", "LOGIN"];

/// Logs in to the servers [`super::servers`] names, in order, until one answers; a
/// server that refuses the connection or the session gives way to the next, as in
/// Postfix. All of it within `deadline`.
pub(super) fn login(
    check: &Check,
    clients: &Result<Clients, String>,
    trust: Option<&CaSource>,
    deadline: Deadline,
    scrubber: &Scrubber,
) -> Result<Success, Failure> {
    let servers = super::servers(&check.relay, &deadline)?;
    let mut last = None;
    for server in &servers {
        match attempt(check, server, clients, trust, deadline, scrubber) {
            Ok(s) => return Ok(s),
            Err(f) if tries_next(&f) => {
                tracing::debug!(
                    "verify {}: {} port {}: {:?}",
                    check.who.name(),
                    server.host,
                    server.port,
                    f.clone().scrub(scrubber)
                );
                last = Some(f);
            }
            Err(f) => return Err(f),
        }
    }
    let (host, port) = check.relay.endpoint();
    Err(last.unwrap_or_else(|| Failure::Connect {
        host: host.to_string(),
        port,
        error: "no server to connect to".into(),
    }))
}

/// Failures after which Postfix tries the next server: it could not connect, or the
/// server did not accept the session.
fn tries_next(f: &Failure) -> bool {
    matches!(
        f,
        Failure::Connect { .. }
            | Failure::Refused {
                waiting: Waiting::Greeting,
                ..
            }
            | Failure::Closed {
                waiting: Waiting::Greeting,
                ..
            }
    )
}

/// The name the server's certificate must hold: at `secure` the next hop, the relay's
/// host as written (Postfix's `smtp_tls_secure_cert_match = nexthop, dot-nexthop`); at
/// `verify` the host connected to (`smtp_tls_verify_cert_match = hostname`). Both are
/// the relay's host until MX hosts are tried. Unlike Postfix's `dot-nexthop`, a
/// certificate for a subdomain of the next hop does not match.
fn certificate_name<'a>(check: &'a Check, server: &'a Server) -> &'a str {
    match check.tls {
        Tls::Secure => check.relay.endpoint().0,
        _ => &server.host,
    }
}

/// The EHLO name: the host name, as Postfix's `myhostname` defaults to.
fn hello_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// What an EHLO reply offers that a login needs.
#[derive(Debug, Default)]
struct Extensions {
    starttls: bool,
    /// Uppercase mechanism names, from `AUTH ...` and the old `AUTH=...` lines.
    auth: Vec<String>,
}

fn extensions(reply: &Reply) -> Extensions {
    let mut ext = Extensions::default();
    for line in reply.lines.iter().skip(1) {
        let line = line.to_ascii_uppercase();
        let mut words = line.split([' ', '=']).filter(|w| !w.is_empty());
        match words.next() {
            Some("STARTTLS") => ext.starttls = true,
            Some("AUTH") => ext.auth.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    ext
}

/// A session with what the failures and logs need to know.
struct Dialogue<'a> {
    session: Session,
    deadline: Deadline,
    scrubber: &'a Scrubber,
    who: String,
}

impl Dialogue<'_> {
    /// An error of the client, as a failure while waiting for `waiting`.
    fn failure(&self, waiting: Waiting, e: smtp::Error) -> Failure {
        match e {
            smtp::Error::TimedOut => Failure::TimedOut {
                waiting,
                after: self.deadline.total(),
            },
            smtp::Error::Closed(error) => Failure::Closed { waiting, error },
            smtp::Error::Reply(problem) => Failure::BadReply { waiting, problem },
            smtp::Error::Tls(e) => Failure::Closed {
                waiting,
                error: Some(e.to_string()),
            },
        }
    }

    fn reply(&mut self, waiting: Waiting) -> Result<Reply, Failure> {
        let reply = self
            .session
            .read_reply()
            .map_err(|e| self.failure(waiting, e))?;
        tracing::trace!(
            "verify {}: S: {}",
            self.who,
            self.scrubber.clean(&reply.text())
        );
        Ok(reply)
    }

    /// Sends `line`, logged as `shown`, and reads the reply.
    fn command(&mut self, line: &str, shown: &str, waiting: Waiting) -> Result<Reply, Failure> {
        tracing::trace!("verify {}: C: {shown}", self.who);
        self.session
            .send(line)
            .map_err(|e| self.failure(waiting, e))?;
        self.reply(waiting)
    }

    fn ehlo(&mut self) -> Result<Extensions, Failure> {
        let line = format!("EHLO {}", hello_name());
        let reply = self.command(&line, &line, Waiting::Ehlo)?;
        if reply.code != 250 {
            return Err(Failure::Refused {
                waiting: Waiting::Ehlo,
                reply: reply.text(),
            });
        }
        Ok(extensions(&reply))
    }

    /// Ends the session politely and returns `f`.
    fn quit_with<T>(self, f: Failure) -> Result<T, Failure> {
        self.session.quit();
        Err(f)
    }
}

/// One server: the whole dialogue.
fn attempt(
    check: &Check,
    server: &Server,
    clients: &Result<Clients, String>,
    trust: Option<&CaSource>,
    deadline: Deadline,
    scrubber: &Scrubber,
) -> Result<Success, Failure> {
    let who = check.who.name();
    tracing::debug!(
        "verify {who}: connecting to {} port {}",
        server.host,
        server.port
    );
    let mut d = Dialogue {
        session: connect(server, deadline)?,
        deadline,
        scrubber,
        who,
    };
    // Port 465: the handshake comes first, at the check's level, as Postfix's
    // `smtp_tls_wrappermode` does it; no STARTTLS after.
    let implicit_tls = check.relay.implicit_tls();
    if implicit_tls {
        d = start_tls(d, check, server, clients, trust)?;
    }
    let greeting = d.reply(Waiting::Greeting)?;
    if greeting.code != 220 {
        let reply = greeting.text();
        return d.quit_with(Failure::Refused {
            waiting: Waiting::Greeting,
            reply,
        });
    }
    let mut ext = d.ehlo()?;
    let starttls = !implicit_tls && check.tls != Tls::None && ext.starttls;
    if starttls {
        let reply = d.command("STARTTLS", "STARTTLS", Waiting::StartTls)?;
        if reply.code != 220 {
            let refused = format!("refused: {}", reply.text());
            return d.quit_with(Failure::StartTls(refused));
        }
        d = start_tls(d, check, server, clients, trust)?;
        ext = d.ehlo()?;
    } else if !implicit_tls && !check.tls.is_weak() {
        return d.quit_with(Failure::NoStartTls(check.tls));
    }
    debug_assert!((starttls || implicit_tls) == d.session.is_tls());
    let mechanism = match &check.credentials {
        Some(c) => match authenticate(&mut d, c, &ext.auth) {
            Ok(m) => Some(m.to_string()),
            Err(f @ (Failure::Auth(_) | Failure::NoAuthMechanism)) => return d.quit_with(f),
            Err(f) => return Err(f),
        },
        None => None,
    };
    d.session.quit();
    Ok(Success {
        starttls,
        implicit_tls,
        mechanism,
    })
}

/// The TCP connection to `server`, within `deadline`.
fn connect(server: &Server, deadline: Deadline) -> Result<Session, Failure> {
    let (host, port) = (&server.host, server.port);
    Session::connect(host, port, deadline).map_err(|e| match e {
        smtp::Error::TimedOut => Failure::TimedOut {
            waiting: Waiting::Connection,
            after: deadline.total(),
        },
        smtp::Error::Closed(error) => Failure::Connect {
            host: host.clone(),
            port,
            error: error.unwrap_or_else(|| "connection closed".into()),
        },
        other => Failure::Connect {
            host: host.clone(),
            port,
            error: format!("{other:?}"),
        },
    })
}

/// The TLS handshake after the server accepted STARTTLS, at the check's level: the
/// certificate checked at `secure` and `verify` (a refusal ends the check before AUTH).
fn start_tls<'a>(
    d: Dialogue<'a>,
    check: &Check,
    server: &Server,
    clients: &Result<Clients, String>,
    trust: Option<&CaSource>,
) -> Result<Dialogue<'a>, Failure> {
    let config = clients
        .as_ref()
        .map_err(|e| Failure::TlsSetup(e.clone()))?
        .for_level(check.tls)
        .ok_or_else(|| Failure::TlsSetup("no trust store was loaded".into()))?;
    let name = certificate_name(check, server);
    let server_name = ServerName::try_from(name.to_string())
        .map_err(|e| Failure::TlsSetup(format!("{name}: {e}")))?;
    let Dialogue {
        session,
        deadline,
        scrubber,
        who,
    } = d;
    let session = session
        .start_tls(config, server_name)
        .map_err(|e| match e {
            smtp::Error::Tls(e) => match CertProblem::of(&e) {
                Some(problem) if check.tls.verifies_certificate() => Failure::Certificate {
                    level: check.tls,
                    name: name.to_string(),
                    problem,
                    trust: trust.cloned().unwrap_or(CaSource::Missing),
                },
                _ if check.relay.implicit_tls() => {
                    Failure::ImplicitTls(format!("TLS handshake failed: {e}"))
                }
                _ => Failure::StartTls(format!("TLS handshake failed: {e}")),
            },
            smtp::Error::TimedOut => Failure::TimedOut {
                waiting: Waiting::TlsHandshake,
                after: deadline.total(),
            },
            smtp::Error::Closed(error) => Failure::Closed {
                waiting: Waiting::TlsHandshake,
                error,
            },
            smtp::Error::Reply(problem) => Failure::BadReply {
                waiting: Waiting::TlsHandshake,
                problem,
            },
        })?;
    tracing::debug!("verify {who}: TLS established with {}", server.host);
    Ok(Dialogue {
        session,
        deadline,
        scrubber,
        who,
    })
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// AUTH with the first of [`MECHANISMS`] the server offers; the mechanism used.
fn authenticate(
    d: &mut Dialogue<'_>,
    c: &Credentials,
    offered: &[String],
) -> Result<&'static str, Failure> {
    let mechanism = MECHANISMS
        .into_iter()
        .find(|m| offered.iter().any(|o| o == m))
        .ok_or(Failure::NoAuthMechanism)?;
    let password = c.password.expose();
    let last = match mechanism {
        "PLAIN" => {
            let token = Secret::new(b64(format!("\0{}\0{password}", c.username).as_bytes()));
            let line = Secret::new(format!("AUTH PLAIN {}", token.expose()));
            d.command(line.expose(), "AUTH PLAIN ********", Waiting::Auth)?
        }
        _ => {
            let steps = [
                ("AUTH LOGIN".to_string(), "AUTH LOGIN"),
                (b64(c.username.as_bytes()), "******** (the username)"),
            ];
            for (line, shown) in steps {
                let reply = d.command(&line, shown, Waiting::Auth)?;
                if reply.code != 334 {
                    return Err(Failure::Auth(reply.text()));
                }
            }
            let line = Secret::new(b64(password.as_bytes()));
            d.command(line.expose(), "********", Waiting::Auth)?
        }
    };
    match last.code {
        235 => Ok(mechanism),
        334 => {
            // A challenge where the outcome was due: cancel the exchange (RFC 4954).
            d.command("*", "*", Waiting::Auth)?;
            Err(Failure::Auth(format!(
                "unexpected challenge: {}",
                last.text()
            )))
        }
        _ => Err(Failure::Auth(last.text())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ehlo_offers_starttls_and_auth_in_both_spellings() {
        let reply = Reply {
            code: 250,
            lines: vec![
                "mx.example Hello".into(),
                "PIPELINING".into(),
                "starttls".into(),
                "AUTH=LOGIN".into(),
                "AUTH PLAIN  XOAUTH2".into(),
            ],
        };
        let ext = extensions(&reply);
        assert!(ext.starttls);
        assert_eq!(ext.auth, ["LOGIN", "PLAIN", "XOAUTH2"]);
        // The first line is the server's name, not an extension.
        let ext = extensions(&Reply {
            code: 250,
            lines: vec!["STARTTLS".into()],
        });
        assert!(!ext.starttls);
    }
}
