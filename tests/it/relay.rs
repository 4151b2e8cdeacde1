//! A fake SMTP relay for end-to-end tests: a small ESMTP server on 127.0.0.1 that
//! offers STARTTLS (rustls; by default a self-signed certificate from rcgen, or one the
//! test chooses: see `harness/tls.rs`) and `AUTH PLAIN LOGIN`, and records what each
//! session did: every command's verb, every completed TLS handshake, every
//! authentication attempt, and for each completed DATA the envelope, the credentials
//! and whether TLS was active when they were sent. Tests point a real Postfix at it (`relay = "[127.0.0.1]:PORT"`) and assert
//! on what it recorded, so "which relay, which user, which password, over TLS or not"
//! is observed on the wire rather than inferred from configuration files.
//!
//! Listening, timeouts and shutting sessions down on drop are `harness::wire`'s
//! (shared with the scripted peer of `smtp_peer.rs`). Lines may end in CRLF or bare LF. Anything pipelined
//! before STARTTLS is discarded (as a real server must), and the session restarts after
//! the handshake: the client must EHLO again and any earlier AUTH is forgotten.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use rustls::{ServerConfig, ServerConnection, StreamOwned};

use crate::harness::tls::Leaf;
use crate::harness::wire::{self, Conn, Listening, Server, Sessions};

/// Longest command or message line accepted (RFC 5321 allows 1000 octets).
const MAX_LINE: usize = 64 * 1024;

/// What a relay accepts.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Advertise and support STARTTLS.
    pub starttls: bool,
    /// TLS from the first byte (port 465, "submissions"): the handshake before the
    /// greeting, no STARTTLS. Uses the same certificate.
    pub implicit_tls: bool,
    /// Accepted `(user, password)` pairs for AUTH.
    pub users: Vec<(String, String)>,
    /// RCPT TO addresses answered `550 5.1.1` (compared case-insensitively).
    pub reject_rcpt: Vec<String>,
    /// Answer `MAIL FROM` without a successful AUTH `530 5.7.0 Authentication
    /// required`, as a provider's submission port does: Postfix then hard-bounces the
    /// message, as it did in the trial of issue 8 when it found no password to send.
    pub require_auth: bool,
    /// The certificate presented after STARTTLS. None: a self-signed one for
    /// `localhost` and `127.0.0.1`, fresh for each relay ([`Leaf::localhost_self_signed`]).
    pub certificate: Option<Leaf>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            starttls: true,
            implicit_tls: false,
            users: Vec::new(),
            reject_rcpt: Vec::new(),
            require_auth: false,
            certificate: None,
        }
    }
}

impl RelayConfig {
    /// The default relay (STARTTLS) accepting these `(user, password)` pairs.
    pub fn users(users: &[(&str, &str)]) -> RelayConfig {
        RelayConfig {
            users: users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
            ..RelayConfig::default()
        }
    }

    /// The default relay (STARTTLS) accepting one user.
    pub fn user(user: &str, password: &str) -> RelayConfig {
        RelayConfig::users(&[(user, password)])
    }

    /// This relay, refusing mail without AUTH (see [`RelayConfig::require_auth`]).
    pub fn requiring_auth(self) -> RelayConfig {
        RelayConfig {
            require_auth: true,
            ..self
        }
    }

    /// This relay with TLS from the first byte instead of STARTTLS.
    pub fn implicit_tls(self) -> RelayConfig {
        RelayConfig {
            implicit_tls: true,
            ..self
        }
    }

    /// This relay, presenting `certificate` after STARTTLS.
    pub fn presenting(self, certificate: Leaf) -> RelayConfig {
        RelayConfig {
            certificate: Some(certificate),
            ..self
        }
    }
}

/// One command a client sent: its verb only, never its argument (which may carry
/// credentials).
#[derive(Debug, Clone)]
pub struct Verb {
    /// Which connection (numbered across all relays of the test process).
    pub conn: u64,
    /// TLS was active.
    pub tls: bool,
    /// Upper case: `EHLO`, `STARTTLS`, `AUTH`, `MAIL`, `QUIT`...
    pub verb: String,
}

/// One AUTH exchange that got as far as credentials.
#[derive(Debug, Clone)]
pub struct AuthAttempt {
    pub user: String,
    pub password: String,
    /// TLS was active.
    pub tls: bool,
    /// Answered 235.
    pub ok: bool,
    /// When the credentials arrived.
    pub at: Instant,
}

/// One message accepted (a DATA completed with at least one accepted recipient).
#[derive(Debug, Clone)]
pub struct Accepted {
    /// Which relay.
    pub port: u16,
    /// TLS was active when AUTH succeeded (false if no AUTH).
    pub tls_at_auth: bool,
    pub auth_user: Option<String>,
    pub auth_password: Option<String>,
    /// Without `<>`; `""` for the null sender.
    pub mail_from: String,
    /// Accepted recipients only.
    pub rcpt_to: Vec<String>,
    /// From the Message-ID header, without `<>`.
    pub message_id: Option<String>,
    /// When the final `.` of DATA arrived.
    pub at: Instant,
}

/// A `MAIL FROM` refused because the session had not authenticated
/// ([`RelayConfig::require_auth`]): the client gets a 530, which Postfix turns into a
/// bounce.
#[derive(Debug, Clone)]
pub struct Refused {
    /// Without `<>`.
    pub mail_from: String,
    pub at: Instant,
}

#[derive(Default)]
struct Log {
    messages: Vec<Accepted>,
    auth_attempts: Vec<AuthAttempt>,
    refused: Vec<Refused>,
    verbs: Vec<Verb>,
    /// Connections whose STARTTLS handshake completed.
    handshakes: Vec<u64>,
}

struct Shared {
    port: u16,
    config: RelayConfig,
    tls: Option<Arc<ServerConfig>>,
    log: Mutex<Log>,
    sessions: Sessions,
    /// Credentials accepted besides `config.users`, asked at each AUTH.
    also: Mutex<Option<Accounts>>,
}

/// A check of credentials the relay asks at AUTH time (a provider's account, which
/// changes while the relay runs).
pub type Accounts = Box<dyn Fn(&str, &str) -> bool + Send>;

impl Server for Shared {
    fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    fn serve(&self, id: u64, stream: TcpStream) -> io::Result<()> {
        Session::new(self, id, stream).run()
    }
}

impl Shared {
    fn log(&self) -> MutexGuard<'_, Log> {
        // A panicking session thread must not hide what was recorded before it.
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running fake relay; stops when dropped.
pub struct FakeRelay {
    listening: Listening<Shared>,
    /// The address it listens on.
    ip: String,
}

impl FakeRelay {
    /// Binds 127.0.0.1 on a port the kernel chooses and serves each connection on its
    /// own thread.
    pub fn start(config: RelayConfig) -> FakeRelay {
        FakeRelay::start_at(config, "127.0.0.1:0")
    }

    /// [`FakeRelay::start`] on `addr` (`IP:PORT`).
    pub fn start_at(config: RelayConfig, addr: &str) -> FakeRelay {
        let tls = (config.starttls || config.implicit_tls).then(|| {
            config
                .certificate
                .clone()
                .unwrap_or_else(Leaf::localhost_self_signed)
                .server_config()
        });
        let listening = Listening::start_at("fake-relay", addr, |port| Shared {
            port,
            config,
            tls,
            log: Mutex::default(),
            sessions: Sessions::default(),
            also: Mutex::default(),
        });
        let ip = addr
            .rsplit_once(':')
            .map_or("127.0.0.1", |(ip, _)| ip)
            .to_string();
        FakeRelay { listening, ip }
    }

    fn shared(&self) -> &Shared {
        &self.listening.server
    }

    pub fn port(&self) -> u16 {
        self.listening.port
    }

    /// `[IP]:PORT` (127.0.0.1 unless started elsewhere), as written in desired-state
    /// files.
    pub fn relay(&self) -> String {
        format!("[{}]:{}", self.ip, self.port())
    }

    /// `[localhost]:PORT`: the relay named by host name, as a certificate can name it
    /// (`localhost` resolves to 127.0.0.1 through /etc/hosts).
    pub fn relay_by_name(&self) -> String {
        format!("[localhost]:{}", self.port())
    }

    /// From now on also accepts the credentials `accounts` accepts.
    pub fn also_accept(&self, accounts: Accounts) {
        *self.shared().also.lock().unwrap() = Some(accounts);
    }

    pub fn messages(&self) -> Vec<Accepted> {
        self.shared().log().messages.clone()
    }

    pub fn auth_attempts(&self) -> Vec<AuthAttempt> {
        self.shared().log().auth_attempts.clone()
    }

    /// Every `MAIL FROM` refused for want of AUTH.
    pub fn refused(&self) -> Vec<Refused> {
        self.shared().log().refused.clone()
    }

    /// Every command received, in order (verbs only).
    pub fn verbs(&self) -> Vec<Verb> {
        self.shared().log().verbs.clone()
    }

    /// Each command's verb with whether it came under TLS, in order.
    pub fn verbs_tls(&self) -> Vec<(bool, String)> {
        self.verbs().into_iter().map(|v| (v.tls, v.verb)).collect()
    }

    /// The connections whose STARTTLS handshake completed, in order.
    pub fn handshakes(&self) -> Vec<u64> {
        self.shared().log().handshakes.clone()
    }

    /// Polls until a message with this Message-ID is recorded; None on timeout.
    pub fn wait_for_message(&self, message_id: &str, timeout: Duration) -> Option<Accepted> {
        self.wait_for(|m| m.message_id.as_deref() == Some(message_id), timeout)
    }

    /// Polls until a recorded message satisfies `pred`; None on timeout.
    pub fn wait_for(
        &self,
        pred: impl Fn(&Accepted) -> bool,
        timeout: Duration,
    ) -> Option<Accepted> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) = self.shared().log().messages.iter().find(|m| pred(m)) {
                return Some(m.clone());
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A successful AUTH: user, password, TLS active.
struct Login {
    user: String,
    password: String,
    tls: bool,
}

struct Session<'a> {
    shared: &'a Shared,
    /// The connection's number (see [`Verb::conn`]).
    id: u64,
    conn: Conn,
    /// Bytes read but not yet consumed as lines.
    buf: Vec<u8>,
    tls: bool,
    greeted: bool,
    login: Option<Login>,
    mail_from: Option<String>,
    rcpt_to: Vec<String>,
    queued: u32,
}

impl<'a> Session<'a> {
    fn new(shared: &'a Shared, id: u64, stream: TcpStream) -> Session<'a> {
        Session {
            shared,
            id,
            conn: Conn::Plain(stream),
            buf: Vec::new(),
            tls: false,
            greeted: false,
            login: None,
            mail_from: None,
            rcpt_to: Vec::new(),
            queued: 0,
        }
    }

    fn reply(&mut self, text: &str) -> io::Result<()> {
        wire::write_line(&mut self.conn, text)
    }

    /// One line without its CRLF or bare LF; None at EOF.
    fn read_line(&mut self) -> io::Result<Option<String>> {
        wire::read_line(&mut self.conn, &mut self.buf, MAX_LINE)
    }

    fn reset_transaction(&mut self) {
        self.mail_from = None;
        self.rcpt_to.clear();
    }

    fn run(&mut self) -> io::Result<()> {
        if self.shared.config.implicit_tls {
            let config = self.shared.tls.clone().expect("implicit TLS has a config");
            self.start_tls(config)?;
            self.shared.log().handshakes.push(self.id);
            self.tls = true;
        }
        self.reply("220 fake ESMTP")?;
        while let Some(line) = self.read_line()? {
            let (verb, arg) = match line.split_once(' ') {
                Some((v, a)) => (v.to_ascii_uppercase(), a.trim().to_string()),
                None => (line.trim().to_ascii_uppercase(), String::new()),
            };
            self.shared.log().verbs.push(Verb {
                conn: self.id,
                tls: self.tls,
                verb: verb.clone(),
            });
            match verb.as_str() {
                "HELO" => {
                    self.greeted = true;
                    self.reset_transaction();
                    self.reply("250 fake")?;
                }
                "EHLO" => {
                    self.greeted = true;
                    self.reset_transaction();
                    let mut lines = vec!["fake", "8BITMIME"];
                    if self.shared.config.starttls && self.shared.tls.is_some() && !self.tls {
                        lines.push("STARTTLS");
                    }
                    lines.push("AUTH PLAIN LOGIN");
                    let last = lines.len() - 1;
                    let text: Vec<String> = lines
                        .iter()
                        .enumerate()
                        .map(|(i, l)| format!("250{}{l}", if i == last { ' ' } else { '-' }))
                        .collect();
                    self.reply(&text.join("\r\n"))?;
                }
                "STARTTLS" => {
                    let offered = self.shared.config.starttls && !self.tls;
                    let Some(config) = self.shared.tls.clone().filter(|_| offered) else {
                        self.reply("502 5.5.1 Error: command not implemented")?;
                        continue;
                    };
                    if !arg.is_empty() {
                        self.reply("501 5.5.4 Syntax: STARTTLS")?;
                        continue;
                    }
                    self.reply("220 2.0.0 Ready to start TLS")?;
                    // Plaintext pipelined after STARTTLS must not count as protected.
                    self.buf.clear();
                    self.start_tls(config)?;
                    self.shared.log().handshakes.push(self.id);
                    self.tls = true;
                    self.greeted = false;
                    self.login = None;
                    self.reset_transaction();
                }
                "AUTH" => self.auth(&arg)?,
                "MAIL" => self.mail(&arg)?,
                "RCPT" => self.rcpt(&arg)?,
                "DATA" => {
                    if self.mail_from.is_none() {
                        self.reply("503 5.5.1 Error: need MAIL command")?;
                    } else if self.rcpt_to.is_empty() {
                        self.reply("554 5.5.1 Error: no valid recipients")?;
                    } else {
                        self.reply("354 End data with <CR><LF>.<CR><LF>")?;
                        if !self.data()? {
                            return Ok(());
                        }
                    }
                }
                "RSET" => {
                    self.reset_transaction();
                    self.reply("250 2.0.0 Ok")?;
                }
                "NOOP" => self.reply("250 2.0.0 Ok")?,
                "QUIT" => {
                    // Postfix does not wait for this reply (smtp_skip_quit_response) and
                    // may have closed already.
                    let _ = self.reply("221 2.0.0 Bye");
                    return Ok(());
                }
                "" => self.reply("500 5.5.2 Error: bad syntax")?,
                _ => self.reply("502 5.5.2 Error: command not recognized")?,
            }
        }
        Ok(())
    }

    fn start_tls(&mut self, config: Arc<ServerConfig>) -> io::Result<()> {
        let Conn::Plain(mut sock) = std::mem::replace(&mut self.conn, Conn::Closed) else {
            return Err(io::Error::other("STARTTLS on a TLS connection"));
        };
        let mut tls = ServerConnection::new(config).map_err(io::Error::other)?;
        while tls.is_handshaking() {
            tls.complete_io(&mut sock)?;
        }
        self.conn = Conn::Tls(Box::new(StreamOwned::new(tls, sock)));
        Ok(())
    }

    /// Reads one SASL response line after a 334 challenge; None when the client
    /// cancelled (`*`) or went away.
    fn challenge(&mut self, prompt: &str) -> io::Result<Option<String>> {
        self.reply(&format!("334 {prompt}"))?;
        Ok(self.read_line()?.filter(|l| l.trim() != "*"))
    }

    fn auth(&mut self, arg: &str) -> io::Result<()> {
        if !self.greeted {
            return self.reply("503 5.5.1 Error: send EHLO first");
        }
        if self.login.is_some() {
            return self.reply("503 5.5.1 Error: already authenticated");
        }
        if self.mail_from.is_some() {
            return self.reply("503 5.5.1 Error: MAIL transaction in progress");
        }
        let mut words = arg.split_whitespace();
        let mechanism = words.next().unwrap_or("").to_ascii_uppercase();
        let initial = words.next().map(str::to_string);
        let credentials = match mechanism.as_str() {
            "PLAIN" => {
                let response = match initial {
                    Some(r) => Some(r),
                    None => self.challenge("")?,
                };
                let Some(response) = response else {
                    return self.reply("501 5.7.0 Authentication aborted");
                };
                // authzid NUL authcid NUL password
                decode_text(&response).and_then(|text| {
                    let mut parts = text.split('\0');
                    let (_authzid, user, password) = (parts.next()?, parts.next()?, parts.next()?);
                    parts
                        .next()
                        .is_none()
                        .then(|| (user.to_string(), password.to_string()))
                })
            }
            "LOGIN" => {
                let user = match initial {
                    Some(r) => Some(r),
                    None => self.challenge(&encode(b"Username:"))?,
                };
                let Some(user) = user else {
                    return self.reply("501 5.7.0 Authentication aborted");
                };
                let Some(password) = self.challenge(&encode(b"Password:"))? else {
                    return self.reply("501 5.7.0 Authentication aborted");
                };
                decode_text(&user).zip(decode_text(&password))
            }
            _ => return self.reply("504 5.5.4 Unrecognized authentication type"),
        };
        let Some((user, password)) = credentials else {
            return self.reply("501 5.5.2 Cannot decode response");
        };
        let ok = self
            .shared
            .config
            .users
            .iter()
            .any(|(u, p)| *u == user && *p == password)
            || self
                .shared
                .also
                .lock()
                .unwrap()
                .as_ref()
                .is_some_and(|accepts| accepts(&user, &password));
        self.shared.log().auth_attempts.push(AuthAttempt {
            user: user.clone(),
            password: password.clone(),
            tls: self.tls,
            ok,
            at: Instant::now(),
        });
        if ok {
            self.login = Some(Login {
                user,
                password,
                tls: self.tls,
            });
            self.reply("235 2.7.0 Authentication successful")
        } else {
            self.reply("535 5.7.8 Authentication credentials invalid")
        }
    }

    fn mail(&mut self, arg: &str) -> io::Result<()> {
        if !self.greeted {
            return self.reply("503 5.5.1 Error: send HELO/EHLO first");
        }
        if self.mail_from.is_some() {
            return self.reply("503 5.5.1 Error: nested MAIL command");
        }
        match path_arg(arg, "FROM:") {
            Some(from) if self.shared.config.require_auth && self.login.is_none() => {
                self.shared.log().refused.push(Refused {
                    mail_from: from,
                    at: Instant::now(),
                });
                self.reply("530 5.7.0 Authentication required")
            }
            Some(from) => {
                self.mail_from = Some(from);
                self.reply("250 2.1.0 Ok")
            }
            None => self.reply("501 5.5.4 Syntax: MAIL FROM:<address>"),
        }
    }

    fn rcpt(&mut self, arg: &str) -> io::Result<()> {
        if self.mail_from.is_none() {
            return self.reply("503 5.5.1 Error: need MAIL command");
        }
        let Some(to) = path_arg(arg, "TO:").filter(|t| !t.is_empty()) else {
            return self.reply("501 5.5.4 Syntax: RCPT TO:<address>");
        };
        let rejected = self
            .shared
            .config
            .reject_rcpt
            .iter()
            .any(|r| r.eq_ignore_ascii_case(&to));
        if rejected {
            self.reply(&format!(
                "550 5.1.1 <{to}>: Recipient address rejected: User unknown"
            ))
        } else {
            self.rcpt_to.push(to);
            self.reply("250 2.1.5 Ok")
        }
    }

    /// Reads the message up to the lone "."; false when the client went away first.
    fn data(&mut self) -> io::Result<bool> {
        let mut lines = Vec::new();
        loop {
            let Some(line) = self.read_line()? else {
                return Ok(false);
            };
            if line == "." {
                break;
            }
            // Undo dot-stuffing (RFC 5321 4.5.2).
            lines.push(line.strip_prefix('.').map(str::to_string).unwrap_or(line));
        }
        let accepted = Accepted {
            port: self.shared.port,
            tls_at_auth: self.login.as_ref().is_some_and(|l| l.tls),
            auth_user: self.login.as_ref().map(|l| l.user.clone()),
            auth_password: self.login.as_ref().map(|l| l.password.clone()),
            mail_from: self.mail_from.take().unwrap_or_default(),
            rcpt_to: std::mem::take(&mut self.rcpt_to),
            message_id: header(&lines, "Message-ID").map(|v| {
                v.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            }),
            at: Instant::now(),
        };
        self.shared.log().messages.push(accepted);
        self.queued += 1;
        self.reply(&format!(
            "250 2.0.0 Ok: queued as F{}x{}",
            self.shared.port, self.queued
        ))?;
        Ok(true)
    }
}

/// The address in `FROM:<addr> PARAMS` / `TO:<addr> PARAMS` (parameters ignored), or
/// None when the keyword is missing.
fn path_arg(arg: &str, keyword: &str) -> Option<String> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].trim_start();
    match rest.strip_prefix('<') {
        Some(inner) => inner.split_once('>').map(|(addr, _)| addr.to_string()),
        None => Some(rest.split_whitespace().next().unwrap_or("").to_string()),
    }
}

/// The unfolded value of the first header `name` in a message's header section.
fn header(lines: &[String], name: &str) -> Option<String> {
    let mut found: Option<String> = None;
    for line in lines {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(v) = found.as_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if found.is_some() {
            break;
        }
        if let Some((n, v)) = line.split_once(':')
            && n.trim().eq_ignore_ascii_case(name)
        {
            found = Some(v.trim().to_string());
        }
    }
    found
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64, padding optional; None on any other character. `=` alone (the
/// SASL spelling of an empty response) decodes to nothing.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim().trim_end_matches('=');
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = BASE64.iter().position(|&b| b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // A single leftover character cannot encode a byte.
    (bits < 6).then_some(out)
}

fn decode_text(text: &str) -> Option<String> {
    String::from_utf8(decode(text)?).ok()
}

#[cfg(test)]
mod tests {
    //! The relay against a tiny SMTP client, over plain TCP and over STARTTLS.

    use super::*;
    use crate::harness::tls::TestCa;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};

    struct Client<S: Read + Write> {
        s: S,
        buf: Vec<u8>,
    }

    impl<S: Read + Write> Client<S> {
        fn new(s: S) -> Self {
            Client { s, buf: Vec::new() }
        }

        fn line(&mut self) -> String {
            loop {
                if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = self.buf.drain(..=i).collect();
                    return String::from_utf8(line).unwrap().trim_end().to_string();
                }
                let mut chunk = [0u8; 4096];
                let n = self.s.read(&mut chunk).unwrap();
                assert!(n > 0, "server closed the connection");
                self.buf.extend_from_slice(&chunk[..n]);
            }
        }

        /// A whole (possibly multi-line) reply: code and the lines' text.
        fn reply(&mut self) -> (u16, Vec<String>) {
            let mut lines = Vec::new();
            loop {
                let line = self.line();
                let code = line[..3].parse().unwrap();
                let more = line.as_bytes().get(3) == Some(&b'-');
                lines.push(line[4.min(line.len())..].to_string());
                if !more {
                    return (code, lines);
                }
            }
        }

        fn send(&mut self, raw: &str) {
            self.s.write_all(raw.as_bytes()).unwrap();
            self.s.flush().unwrap();
        }

        fn cmd(&mut self, line: &str) -> (u16, Vec<String>) {
            self.send(&format!("{line}\r\n"));
            self.reply()
        }

        fn code(&mut self, line: &str) -> u16 {
            self.cmd(line).0
        }
    }

    fn connect(relay: &FakeRelay) -> Client<TcpStream> {
        let s = TcpStream::connect(("127.0.0.1", relay.port())).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut c = Client::new(s);
        assert_eq!(c.reply(), (220, vec!["fake ESMTP".to_string()]));
        c
    }

    fn plain(user: &str, password: &str) -> String {
        encode(format!("\0{user}\0{password}").as_bytes())
    }

    fn relay_with_alice() -> FakeRelay {
        FakeRelay::start(RelayConfig {
            starttls: false,
            users: vec![("alice".into(), "pw-alice".into())],
            reject_rcpt: vec!["nobody@remote.test".into()],
            ..RelayConfig::default()
        })
    }

    #[test]
    fn base64_round_trips() {
        for s in [
            "",
            "a",
            "ab",
            "abc",
            "abcd",
            "\0user\0pass:word with spaces",
        ] {
            assert_eq!(decode(&encode(s.as_bytes())).unwrap(), s.as_bytes());
        }
        assert_eq!(encode(b"Username:"), "VXNlcm5hbWU6");
        assert_eq!(encode(b"Password:"), "UGFzc3dvcmQ6");
        assert_eq!(decode("="), Some(Vec::new()));
        assert_eq!(decode("a"), None);
        assert_eq!(decode("a*bc"), None);
    }

    #[test]
    fn auth_plain_rcpt_reject_and_data_are_recorded() {
        let relay = relay_with_alice();
        let mut c = connect(&relay);
        let (code, ehlo) = c.cmd("EHLO client.test");
        assert_eq!(code, 250);
        assert!(ehlo.contains(&"AUTH PLAIN LOGIN".to_string()), "{ehlo:?}");
        assert!(!ehlo.contains(&"STARTTLS".to_string()), "{ehlo:?}");
        assert_eq!(
            c.code(&format!("AUTH PLAIN {}", plain("alice", "wrong"))),
            535
        );
        assert_eq!(
            c.code(&format!("AUTH PLAIN {}", plain("alice", "pw-alice"))),
            235
        );
        assert_eq!(
            c.code("MAIL FROM:<a@sender.test> SIZE=123 BODY=8BITMIME"),
            250
        );
        assert_eq!(c.code("RCPT TO:<nobody@remote.test>"), 550);
        assert_eq!(c.code("RCPT TO:<b@remote.test>"), 250);
        assert_eq!(c.code("DATA"), 354);
        c.send("Subject: hi\r\nMessage-ID:\r\n <m1@sender.test>\r\n\r\n..leading dot\r\n.\r\n");
        assert_eq!(c.reply().0, 250);
        assert_eq!(c.code("NOOP"), 250);
        assert_eq!(c.code("FROB"), 502);
        assert_eq!(c.code("QUIT"), 221);

        let m = relay
            .wait_for_message("m1@sender.test", Duration::from_secs(5))
            .expect("message recorded");
        assert_eq!(m.port, relay.port());
        assert_eq!(m.mail_from, "a@sender.test");
        assert_eq!(m.rcpt_to, ["b@remote.test"]);
        assert_eq!(m.auth_user.as_deref(), Some("alice"));
        assert_eq!(m.auth_password.as_deref(), Some("pw-alice"));
        assert!(!m.tls_at_auth);
        let attempts = relay.auth_attempts();
        assert_eq!(attempts.len(), 2);
        assert!(!attempts[0].ok && attempts[0].password == "wrong" && !attempts[0].tls);
        assert!(attempts[1].ok && attempts[1].user == "alice");
    }

    #[test]
    fn auth_continuations_login_null_sender_and_bare_lf() {
        let relay = relay_with_alice();
        let mut c = connect(&relay);
        // Bare LF line endings, HELO instead of EHLO.
        c.send("HELO client.test\n");
        assert_eq!(c.reply().0, 250);
        assert_eq!(c.cmd("AUTH PLAIN"), (334, vec![String::new()]));
        assert_eq!(c.code(&plain("alice", "nope")), 535);
        assert_eq!(c.cmd("AUTH LOGIN"), (334, vec!["VXNlcm5hbWU6".to_string()]));
        assert_eq!(
            c.cmd(&encode(b"alice")),
            (334, vec!["UGFzc3dvcmQ6".to_string()])
        );
        assert_eq!(c.code(&encode(b"pw-alice")), 235);
        c.send("MAIL FROM:<>\nRCPT TO:<x@remote.test>\n");
        assert_eq!(c.reply().0, 250);
        assert_eq!(c.reply().0, 250);
        assert_eq!(c.code("DATA"), 354);
        c.send("Message-Id: <bounce@x>\n\nbody\n.\n");
        assert_eq!(c.reply().0, 250);
        // RSET and a second transaction without recipients.
        assert_eq!(c.code("MAIL FROM:<y@sender.test>"), 250);
        assert_eq!(c.code("RSET"), 250);
        assert_eq!(c.code("MAIL FROM:<y@sender.test>"), 250);
        assert_eq!(c.code("DATA"), 554);
        assert_eq!(c.code("QUIT"), 221);

        let m = relay
            .wait_for_message("bounce@x", Duration::from_secs(5))
            .unwrap();
        assert_eq!(m.mail_from, "");
        assert_eq!(m.auth_user.as_deref(), Some("alice"));
        assert_eq!(relay.messages().len(), 1);
        let oks: Vec<bool> = relay.auth_attempts().iter().map(|a| a.ok).collect();
        assert_eq!(oks, [false, true]);
    }

    /// Accepts any server certificate (the relay's is self-signed).
    #[derive(Debug)]
    struct AcceptAny(Vec<SignatureScheme>);

    impl ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }

        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.clone()
        }
    }

    #[test]
    fn starttls_restarts_the_session_and_auth_is_marked_tls() {
        let relay = FakeRelay::start(RelayConfig::user("tls-user", "pw-tls"));
        let mut c = connect(&relay);
        let (_, ehlo) = c.cmd("EHLO client.test");
        assert!(ehlo.contains(&"STARTTLS".to_string()), "{ehlo:?}");
        assert_eq!(c.code("STARTTLS"), 220);

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let schemes = provider
            .signature_verification_algorithms
            .supported_schemes();
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(schemes)))
            .with_no_client_auth();
        let name = ServerName::try_from("localhost").unwrap();
        let tls = ClientConnection::new(Arc::new(config), name).unwrap();
        let mut c = Client::new(StreamOwned::new(tls, c.s));

        // The session restarted: EHLO first, and no second STARTTLS on offer.
        assert_eq!(c.code("MAIL FROM:<a@sender.test>"), 503);
        let (_, ehlo) = c.cmd("EHLO client.test");
        assert!(!ehlo.contains(&"STARTTLS".to_string()), "{ehlo:?}");
        assert_eq!(c.code("STARTTLS"), 502);
        assert_eq!(
            c.code(&format!("AUTH PLAIN {}", plain("tls-user", "pw-tls"))),
            235
        );
        assert_eq!(c.code("MAIL FROM:<a@sender.test>"), 250);
        assert_eq!(c.code("RCPT TO:<b@remote.test>"), 250);
        assert_eq!(c.code("DATA"), 354);
        c.send("Message-ID: <tls1@sender.test>\r\n\r\nhello\r\n.\r\n");
        assert_eq!(c.reply().0, 250);
        assert_eq!(c.code("QUIT"), 221);

        let m = relay
            .wait_for_message("tls1@sender.test", Duration::from_secs(5))
            .unwrap();
        assert!(m.tls_at_auth);
        assert_eq!(m.auth_user.as_deref(), Some("tls-user"));
        let attempts = relay.auth_attempts();
        assert_eq!(attempts.len(), 1);
        assert!(attempts[0].tls && attempts[0].ok);
    }

    /// EHLO, STARTTLS, and a handshake that verifies the relay's certificate against
    /// `ca` for the server name `name`, as a client at Postfix's `secure` level does;
    /// the client's error when verification failed.
    fn handshake_verifying(relay: &FakeRelay, ca: &TestCa, name: &str) -> Result<(), String> {
        let mut c = connect(relay);
        assert_eq!(c.code("EHLO client.test"), 250);
        assert_eq!(c.code("STARTTLS"), 220);
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.certificate()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from(name.to_string()).unwrap();
        let mut tls = ClientConnection::new(Arc::new(config), name).unwrap();
        let mut sock = c.s;
        while tls.is_handshaking() {
            tls.complete_io(&mut sock).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Waits (up to 5 s) until `pred` holds of the relay: it records a handshake or a
    /// command after the client has already moved on.
    fn settle(relay: &FakeRelay, pred: impl Fn(&FakeRelay) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !pred(relay) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_relay_presents_the_certificate_the_test_chose() {
        let ca = TestCa::new("postrelay test CA");
        let issued =
            FakeRelay::start(RelayConfig::user("u", "p").presenting(ca.issue(&["localhost"])));
        assert_eq!(handshake_verifying(&issued, &ca, "localhost"), Ok(()));
        settle(&issued, |r| r.handshakes().len() == 1);
        assert_eq!(issued.handshakes().len(), 1);
        assert_eq!(
            issued.verbs_tls(),
            [(false, "EHLO".to_string()), (false, "STARTTLS".to_string())]
        );

        // The same certificate, checked for another name.
        let err = handshake_verifying(&issued, &ca, "other.example").unwrap_err();
        assert!(err.contains("not valid for name"), "{err}");
        assert_eq!(
            issued.relay_by_name(),
            format!("[localhost]:{}", issued.port())
        );

        let other =
            FakeRelay::start(RelayConfig::default().presenting(ca.issue(&["other.example"])));
        assert_eq!(handshake_verifying(&other, &ca, "other.example"), Ok(()));
        let err = handshake_verifying(&other, &ca, "localhost").unwrap_err();
        assert!(err.contains("not valid for name"), "{err}");

        let attacker = FakeRelay::start(
            RelayConfig::default()
                .presenting(Leaf::self_signed("attacker.invalid", &["attacker.invalid"])),
        );
        let err = handshake_verifying(&attacker, &ca, "attacker.invalid").unwrap_err();
        assert!(err.contains("UnknownIssuer"), "{err}");
        // The default certificate is self-signed too: no CA vouches for it.
        let default = FakeRelay::start(RelayConfig::default());
        let err = handshake_verifying(&default, &ca, "localhost").unwrap_err();
        assert!(err.contains("UnknownIssuer"), "{err}");
        settle(&attacker, |r| !r.verbs().is_empty());
        assert!(attacker.handshakes().is_empty());
    }

    #[test]
    fn a_relay_requiring_auth_refuses_mail_until_a_login_succeeds() {
        let relay = FakeRelay::start(RelayConfig {
            starttls: false,
            ..RelayConfig::user("alice", "pw-alice").requiring_auth()
        });
        let mut c = connect(&relay);
        assert_eq!(c.code("EHLO client.test"), 250);
        assert_eq!(
            c.cmd("MAIL FROM:<a@sender.test>"),
            (530, vec!["5.7.0 Authentication required".to_string()])
        );
        assert_eq!(
            c.code(&format!("AUTH PLAIN {}", plain("alice", "wrong"))),
            535
        );
        assert_eq!(c.code("MAIL FROM:<a@sender.test>"), 530);
        assert_eq!(
            c.code(&format!("AUTH PLAIN {}", plain("alice", "pw-alice"))),
            235
        );
        assert_eq!(c.code("MAIL FROM:<a@sender.test>"), 250);
        assert_eq!(c.code("QUIT"), 221);
        let attempts = relay.auth_attempts();
        assert_eq!(attempts.len(), 2);
        assert!(attempts[0].at <= attempts[1].at);
        let refused = relay.refused();
        assert_eq!(refused.len(), 2);
        assert_eq!(refused[0].mail_from, "a@sender.test");
        assert!(refused[1].at <= attempts[1].at);
        assert!(relay.messages().is_empty());
    }

    #[test]
    fn drop_does_not_wait_for_idle_clients() {
        let relay = relay_with_alice();
        let idle = connect(&relay);
        let started = Instant::now();
        drop(relay);
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(idle);
    }
}
