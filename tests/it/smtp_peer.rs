//! A scripted SMTP peer for verify's tests of a hostile or tampered network: a server on
//! 127.0.0.1 that either behaves (greeting, EHLO, STARTTLS with the certificate chain
//! it is given, AUTH PLAIN and LOGIN, QUIT) or plays a scripted misbehaviour (an
//! endless multi-line greeting, an endless line), and records every command verb it
//! received and whether TLS was up, so a test can prove that no AUTH arrived.
//!
//! Certificates come from `harness::tls` (a test CA made with rcgen at test time, the
//! leaves it issues, expired or not, and self-signed ones); listening, timeouts and
//! shutting sessions down on drop from `harness::wire`, as for the fake relay.

use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use rustls::{ServerConfig, ServerConnection, StreamOwned};

use crate::harness::wire::{self, Conn, Listening, Server, Sessions};
use crate::relay::{decode, encode};

/// Longest command line accepted.
const MAX_LINE: usize = 8192;

/// A server certificate chain and its key, as a rustls server configuration
/// (`harness::tls::Leaf::server_config`).
pub type Chain = Arc<ServerConfig>;

/// What the peer does once a client connects.
#[derive(Clone)]
pub enum Script {
    /// Behaves: offers STARTTLS when it has a chain, takes AUTH for `user`/`password`;
    /// with `echo`, a refused AUTH's reply quotes what the client sent (the base64
    /// credentials), as a hostile relay could.
    Serve {
        tls: Option<Chain>,
        user: String,
        password: String,
        echo: bool,
    },
    /// `220-` continuation lines, one every `every`, never the last line.
    EndlessContinuation { every: Duration },
    /// `220 ` and then `A`s as fast as the client takes them, never a line end.
    EndlessLine,
}

/// One command line received: its verb (uppercased; the rest is not kept, it may hold
/// credentials) and whether TLS was up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub verb: String,
    pub tls: bool,
}

#[derive(Default)]
struct Log {
    sessions: usize,
    received: Vec<Received>,
    /// Logins that succeeded: (user, over TLS).
    logins: Vec<(String, bool)>,
    /// A TLS handshake the client broke off (a certificate it refused).
    handshake_failures: Vec<String>,
    /// Octets written by the misbehaving scripts.
    written: u64,
}

struct Shared {
    script: Script,
    log: Mutex<Log>,
    sessions: Sessions,
}

impl Server for Shared {
    fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    fn serve(&self, _id: u64, stream: TcpStream) -> io::Result<()> {
        self.log().sessions += 1;
        session(self, stream)
    }
}

impl Shared {
    fn log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running peer; stops when dropped.
pub struct Peer {
    listening: Listening<Shared>,
}

impl Peer {
    pub fn start(script: Script) -> Peer {
        let listening = Listening::start("smtp-peer", |_| Shared {
            script,
            log: Mutex::default(),
            sessions: Sessions::default(),
        });
        Peer { listening }
    }

    fn shared(&self) -> &Shared {
        &self.listening.server
    }

    /// A behaving peer: STARTTLS with `tls` (if any), AUTH for `user`/`password`.
    pub fn serving(tls: Option<Chain>, user: &str, password: &str) -> Peer {
        Peer::start(Script::Serve {
            tls,
            user: user.into(),
            password: password.into(),
            echo: false,
        })
    }

    /// A peer without TLS that takes no credentials and quotes them back in its 535.
    pub fn echoing() -> Peer {
        Peer::start(Script::Serve {
            tls: None,
            user: String::new(),
            password: String::new(),
            echo: true,
        })
    }

    pub fn port(&self) -> u16 {
        self.listening.port
    }

    /// Connections accepted so far.
    pub fn sessions(&self) -> usize {
        self.shared().log().sessions
    }

    /// Every command verb received, in order.
    pub fn received(&self) -> Vec<Received> {
        self.shared().log().received.clone()
    }

    /// Whether an AUTH command (or anything after one) ever arrived.
    pub fn saw_auth(&self) -> bool {
        self.received().iter().any(|r| r.verb == "AUTH")
    }

    /// Successful logins: (user, over TLS).
    pub fn logins(&self) -> Vec<(String, bool)> {
        self.shared().log().logins.clone()
    }

    /// Handshakes that failed, with rustls's reason (the client's alert).
    pub fn handshake_failures(&self) -> Vec<String> {
        self.shared().log().handshake_failures.clone()
    }

    /// Waits until every session has ended (the client hung up and the peer noticed,
    /// so everything it will record is recorded); false after `limit`.
    pub fn wait_idle(&self, limit: Duration) -> bool {
        let started = std::time::Instant::now();
        loop {
            if self.shared().sessions.is_empty() {
                return true;
            }
            if started.elapsed() > limit {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Octets the misbehaving scripts wrote before the client went away.
    pub fn written(&self) -> u64 {
        self.shared().log().written
    }
}

fn session(shared: &Shared, mut stream: TcpStream) -> io::Result<()> {
    match shared.script.clone() {
        Script::EndlessContinuation { every } => {
            while !shared.sessions.stopping() {
                let line = b"220-still greeting you\r\n";
                stream.write_all(line)?;
                shared.log().written += line.len() as u64;
                thread::sleep(every);
            }
            Ok(())
        }
        Script::EndlessLine => {
            stream.write_all(b"220 ")?;
            let chunk = [b'A'; 64 * 1024];
            while !shared.sessions.stopping() {
                let n = stream.write(&chunk)?;
                shared.log().written += n as u64;
            }
            Ok(())
        }
        Script::Serve {
            tls,
            user,
            password,
            echo,
        } => Serving {
            shared,
            conn: Conn::Plain(stream),
            buf: Vec::new(),
            tls,
            user,
            password,
            echo,
            sent: Vec::new(),
        }
        .run(),
    }
}

struct Serving<'a> {
    shared: &'a Shared,
    conn: Conn,
    buf: Vec<u8>,
    tls: Option<Chain>,
    user: String,
    password: String,
    echo: bool,
    /// What the client sent in the current AUTH exchange, for `echo`.
    sent: Vec<String>,
}

impl Serving<'_> {
    fn reply(&mut self, text: &str) -> io::Result<()> {
        wire::write_line(&mut self.conn, text)
    }

    /// One line without its CRLF or bare LF; None at EOF.
    fn line(&mut self) -> io::Result<Option<String>> {
        wire::read_line(&mut self.conn, &mut self.buf, MAX_LINE)
    }

    fn run(mut self) -> io::Result<()> {
        self.reply("220 peer.test ESMTP")?;
        while let Some(line) = self.line()? {
            let (verb, arg) = match line.split_once(' ') {
                Some((v, a)) => (v.to_ascii_uppercase(), a.trim().to_string()),
                None => (line.trim().to_ascii_uppercase(), String::new()),
            };
            self.shared.log().received.push(Received {
                verb: verb.clone(),
                tls: self.conn.is_tls(),
            });
            match verb.as_str() {
                "EHLO" => {
                    let mut text = String::from("250-peer.test\r\n");
                    if self.tls.is_some() && !self.conn.is_tls() {
                        text.push_str("250-STARTTLS\r\n");
                    }
                    text.push_str("250 AUTH PLAIN LOGIN");
                    self.reply(&text)?;
                }
                "STARTTLS" => {
                    let Some(config) = self.tls.clone().filter(|_| !self.conn.is_tls()) else {
                        self.reply("502 5.5.1 not offered")?;
                        continue;
                    };
                    self.reply("220 2.0.0 go ahead")?;
                    self.buf.clear();
                    let stand_in = Conn::Plain(self.plain_clone()?);
                    let Conn::Plain(mut sock) = std::mem::replace(&mut self.conn, stand_in) else {
                        unreachable!("checked above")
                    };
                    let mut tls = ServerConnection::new(config).map_err(io::Error::other)?;
                    while tls.is_handshaking() {
                        if let Err(e) = tls.complete_io(&mut sock) {
                            self.shared.log().handshake_failures.push(e.to_string());
                            return Ok(());
                        }
                    }
                    self.conn = Conn::Tls(Box::new(StreamOwned::new(tls, sock)));
                }
                "AUTH" => {
                    let ok = self.auth(&arg)?;
                    if ok {
                        let tls = self.conn.is_tls();
                        self.shared.log().logins.push((self.user.clone(), tls));
                        self.reply("235 2.7.0 Authentication successful")?;
                    } else if self.echo {
                        let sent = std::mem::take(&mut self.sent).join(" ");
                        self.reply(&format!("535 5.7.8 rejected AUTH {arg} {sent}"))?;
                    } else {
                        self.reply("535 5.7.8 Authentication credentials invalid")?;
                    }
                }
                "QUIT" => {
                    self.reply("221 2.0.0 Bye")?;
                    return Ok(());
                }
                _ => self.reply("502 5.5.2 not here")?,
            }
        }
        Ok(())
    }

    /// A second handle on the plain socket, to stand in while TLS takes the first.
    fn plain_clone(&self) -> io::Result<TcpStream> {
        match &self.conn {
            Conn::Plain(s) => s.try_clone(),
            Conn::Tls(_) | Conn::Closed => Err(io::Error::other("TLS is already up")),
        }
    }

    /// AUTH PLAIN (initial response or not) or LOGIN; whether the credentials match.
    fn auth(&mut self, arg: &str) -> io::Result<bool> {
        let (mechanism, initial) = match arg.split_once(' ') {
            Some((m, i)) => (m.to_ascii_uppercase(), Some(i.to_string())),
            None => (arg.to_ascii_uppercase(), None),
        };
        let text =
            |s: String| String::from_utf8(decode(&s).unwrap_or_default()).unwrap_or_default();
        match mechanism.as_str() {
            "PLAIN" => {
                let response = match initial {
                    Some(i) => i,
                    None => {
                        self.reply("334 ")?;
                        self.line()?.unwrap_or_default()
                    }
                };
                self.sent.push(response.clone());
                let plain = text(response);
                let mut parts = plain.split('\0').skip(1);
                Ok(parts.next() == Some(&self.user) && parts.next() == Some(&self.password))
            }
            "LOGIN" => {
                self.reply(&format!("334 {}", encode(b"Username:")))?;
                let user = self.line()?.unwrap_or_default();
                self.reply(&format!("334 {}", encode(b"Password:")))?;
                let password = self.line()?.unwrap_or_default();
                self.sent.extend([user.clone(), password.clone()]);
                let (user, password) = (text(user), text(password));
                Ok(user == self.user && password == self.password)
            }
            _ => Ok(false),
        }
    }
}
