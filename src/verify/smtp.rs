//! The SMTP client under verify's logins: a connection (plain, then TLS after STARTTLS)
//! that sends command lines and reads replies, built to stay bounded against a hostile
//! or broken server. It knows nothing of what the commands mean (that is `login`) and
//! never sees a password in the clear in anything it logs (it logs nothing).
//!
//! Invariants:
//! - **One deadline per check** ([`Deadline`]): before every socket read and write the
//!   socket's timeout is set to the time left, and a passed deadline fails the operation
//!   at once, so no sequence of slow replies, trickled bytes or TLS records (rustls reads
//!   through the same bounded socket, [`Timed`]) holds a check past it. Name resolution,
//!   which the C library does without a timeout, runs on a helper thread that is waited
//!   for only as long as the deadline allows (a stuck resolver thread is left behind;
//!   it ends with the process).
//! - **Bounded memory**: a reply line longer than [`MAX_LINE`] octets, a reply longer
//!   than [`MAX_REPLY`] octets or of more than [`MAX_LINES`] lines is refused as soon as
//!   it crosses the limit. Nothing is buffered beyond one line and one read.
//! - **Server text is data**: control characters in replies are replaced before any
//!   text leaves this module, so a reply cannot rewrite the operator's terminal.
//!   RFC 5321 allows reply lines of 512 octets; the limits leave room for servers that
//!   exceed it and still cap what one check can cost.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

/// Longest reply line accepted, CRLF excluded (RFC 5321 section 4.5.3.1.5: 512 with it).
pub const MAX_LINE: usize = 4096;
/// Longest whole reply accepted, line ends included.
pub const MAX_REPLY: usize = 64 * 1024;
/// Most lines in one reply (an EHLO reply has a dozen or two).
pub const MAX_LINES: usize = 512;

/// The moment a check must be over by, and the budget it was set from.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    end: Instant,
    total: Duration,
}

impl Deadline {
    /// `total` from now.
    pub fn after(total: Duration) -> Deadline {
        Deadline {
            end: Instant::now() + total,
            total,
        }
    }

    /// The budget it was set from (what a timeout reports).
    pub fn total(&self) -> Duration {
        self.total
    }

    /// The time left; `None` once it has passed.
    pub fn left(&self) -> Option<Duration> {
        self.end
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }
}

/// A reply postrelay refuses to read further.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyProblem {
    /// A line longer than [`MAX_LINE`] octets.
    LineTooLong { limit: usize },
    /// More than [`MAX_REPLY`] octets in one reply.
    TooLong { limit: usize },
    /// More than [`MAX_LINES`] lines in one reply.
    TooManyLines { limit: usize },
    /// Not `DDD`, `DDD text` or `DDD-text`, or a continuation with another code.
    Malformed { line: String },
}

/// Why an exchange with the server failed; the caller knows what it was waiting for.
#[derive(Debug)]
pub enum Error {
    /// The deadline passed.
    TimedOut,
    /// The server closed the connection (`None`), or it broke (`Some(reason)`).
    Closed(Option<String>),
    Reply(ReplyProblem),
    /// TLS failed: the handshake (a certificate refused, no common cipher) or a record.
    Tls(rustls::Error),
}

fn deadline_passed() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "deadline passed")
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Error::TimedOut,
            io::ErrorKind::UnexpectedEof => Error::Closed(None),
            io::ErrorKind::InvalidData if e.get_ref().is_some_and(|i| i.is::<rustls::Error>()) => {
                let inner = e.into_inner().expect("checked above");
                match inner.downcast::<rustls::Error>() {
                    Ok(tls) => Error::Tls(*tls),
                    Err(other) => Error::Closed(Some(other.to_string())),
                }
            }
            _ => Error::Closed(Some(crate::fs::reason(&e))),
        }
    }
}

/// The socket, every read and write bounded by the deadline (see the module doc). Read
/// timeouts surface as `TimedOut`, never `WouldBlock`, so rustls passes them on.
pub struct Timed {
    tcp: TcpStream,
    deadline: Deadline,
}

impl Timed {
    fn left(&self) -> io::Result<Duration> {
        self.deadline.left().ok_or_else(deadline_passed)
    }
}

fn timeout_as_deadline(e: io::Error) -> io::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => deadline_passed(),
        _ => e,
    }
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.left()?;
        self.tcp.set_read_timeout(Some(left))?;
        self.tcp.read(buf).map_err(timeout_as_deadline)
    }
}

impl Write for Timed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.left()?;
        self.tcp.set_write_timeout(Some(left))?;
        self.tcp.write(buf).map_err(timeout_as_deadline)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

enum Stream {
    Plain(Timed),
    Tls(Box<StreamOwned<ClientConnection, Timed>>),
}

impl Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.write_all(bytes).and_then(|()| s.flush()),
            Stream::Tls(s) => s.write_all(bytes).and_then(|()| s.flush()),
        }
    }
}

/// One reply: its code and the text of each line (after `DDD ` / `DDD-`), control
/// characters replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// The reply on one line: `535 5.7.8 text more text`.
    pub fn text(&self) -> String {
        let mut out = self.code.to_string();
        for line in self.lines.iter().filter(|l| !l.is_empty()) {
            out.push(' ');
            out.push_str(line);
        }
        out
    }
}

/// Server bytes as text: invalid UTF-8 and control characters become U+FFFD.
fn sanitize(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}

/// Parses one reply line: its code, whether more lines follow, and its text.
fn parse_line(line: &[u8]) -> Option<(u16, bool, &[u8])> {
    let digits = line.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    match line.get(3) {
        None => Some((code, false, &[])),
        Some(b' ') => Some((code, false, &line[4..])),
        Some(b'-') => Some((code, true, &line[4..])),
        Some(_) => None,
    }
}

/// The addresses of `host` (an IP address is its own), resolved within the deadline.
fn resolve(host: &str, port: u16, deadline: &Deadline) -> Result<Vec<SocketAddr>, Error> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let (tx, rx) = mpsc::channel();
    let name = host.to_string();
    std::thread::Builder::new()
        .name("verify-resolve".into())
        .spawn(move || {
            let found = (name.as_str(), port)
                .to_socket_addrs()
                .map(|a| a.collect::<Vec<_>>());
            // The receiver may have given up: nothing to do then.
            let _ = tx.send(found);
        })
        .map_err(|e| Error::Closed(Some(format!("cannot start a resolver thread: {e}"))))?;
    let left = deadline.left().ok_or(Error::TimedOut)?;
    match rx.recv_timeout(left) {
        Ok(Ok(addrs)) if !addrs.is_empty() => Ok(addrs),
        Ok(Ok(_)) => Err(Error::Closed(Some("the name has no address".into()))),
        Ok(Err(e)) => Err(Error::Closed(Some(e.to_string()))),
        Err(_) => Err(Error::TimedOut),
    }
}

/// An SMTP connection to one server.
pub struct Session {
    stream: Stream,
    /// Bytes read past the last line returned: at most [`MAX_LINE`] plus one read.
    pending: Vec<u8>,
    deadline: Deadline,
}

impl Session {
    /// Connects to `host` port `port`, trying each of its addresses in turn, within the
    /// deadline. Does not read the greeting.
    pub fn connect(host: &str, port: u16, deadline: Deadline) -> Result<Session, Error> {
        let mut last = None;
        for addr in resolve(host, port, &deadline)? {
            let left = deadline.left().ok_or(Error::TimedOut)?;
            tracing::debug!("connecting to {addr}");
            match TcpStream::connect_timeout(&addr, left) {
                Ok(tcp) => {
                    let _ = tcp.set_nodelay(true);
                    return Ok(Session {
                        stream: Stream::Plain(Timed { tcp, deadline }),
                        pending: Vec::new(),
                        deadline,
                    });
                }
                Err(e) => {
                    tracing::debug!("{addr}: {e}");
                    if deadline.left().is_none() {
                        return Err(Error::TimedOut);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.map_or(Error::TimedOut, Error::from))
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// Sends one command line (CRLF added). The caller logs it, masked as needed.
    pub fn send(&mut self, line: &str) -> Result<(), Error> {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.stream.write_all(&bytes)?;
        Ok(())
    }

    /// One line without its line end (CRLF or bare LF).
    fn read_line(&mut self) -> Result<Vec<u8>, Error> {
        loop {
            if let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.pending.drain(..=i).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.len() > MAX_LINE {
                    return Err(Error::Reply(ReplyProblem::LineTooLong { limit: MAX_LINE }));
                }
                return Ok(line);
            }
            // The CR of a CRLF split across reads may sit at the end.
            if self.pending.len() > MAX_LINE + 1 {
                return Err(Error::Reply(ReplyProblem::LineTooLong { limit: MAX_LINE }));
            }
            let mut chunk = [0u8; 4096];
            let n = match self.stream.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                return Err(Error::Closed(None));
            }
            self.pending.extend_from_slice(&chunk[..n]);
        }
    }

    /// One whole reply, within the limits of the module doc.
    pub fn read_reply(&mut self) -> Result<Reply, Error> {
        let mut lines = Vec::new();
        let mut size = 0usize;
        let mut first_code = None;
        loop {
            let line = self.read_line()?;
            size += line.len() + 2;
            if size > MAX_REPLY {
                return Err(Error::Reply(ReplyProblem::TooLong { limit: MAX_REPLY }));
            }
            if lines.len() == MAX_LINES {
                return Err(Error::Reply(ReplyProblem::TooManyLines {
                    limit: MAX_LINES,
                }));
            }
            let malformed = || {
                Error::Reply(ReplyProblem::Malformed {
                    line: sanitize(&line[..line.len().min(200)]),
                })
            };
            let (code, more, text) = parse_line(&line).ok_or_else(malformed)?;
            if *first_code.get_or_insert(code) != code {
                return Err(malformed());
            }
            lines.push(sanitize(text));
            if !more {
                return Ok(Reply { code, lines });
            }
        }
    }

    /// Sends a command and reads its reply.
    pub fn command(&mut self, line: &str) -> Result<Reply, Error> {
        self.send(line)?;
        self.read_reply()
    }

    /// Switches to TLS after the server's `220` to STARTTLS: anything the server sent
    /// in clear text after that reply is dropped (it could be an injected response), and
    /// the handshake runs within the deadline. `name` is what the certificate is
    /// checked against, when `config` checks it.
    pub fn start_tls(
        self,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<Session, Error> {
        let Stream::Plain(timed) = self.stream else {
            return Err(Error::Closed(Some("TLS is already active".into())));
        };
        if !self.pending.is_empty() {
            tracing::debug!(
                "dropped {} octets the server sent in clear text after its STARTTLS reply",
                self.pending.len()
            );
        }
        let conn = ClientConnection::new(config, name).map_err(Error::Tls)?;
        let mut tls = StreamOwned::new(conn, timed);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(Session {
            stream: Stream::Tls(Box::new(tls)),
            pending: Vec::new(),
            deadline: self.deadline,
        })
    }

    /// `QUIT`, its reply if it comes before the deadline, and TLS's close_notify. Errors
    /// are ignored: the check's result is already known.
    pub fn quit(mut self) {
        if self.deadline.left().is_none() {
            return;
        }
        if self.command("QUIT").is_err() {
            return;
        }
        if let Stream::Tls(tls) = &mut self.stream {
            tls.conn.send_close_notify();
            let _ = tls.conn.complete_io(&mut tls.sock);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A server on 127.0.0.1 that writes `bytes` and then hangs up, or (`hang_up`
    /// false) waits for the client to.
    fn serving(bytes: Vec<u8>, hang_up: bool) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let _ = s.write_all(&bytes);
            if hang_up {
                return;
            }
            let mut sink = [0u8; 64];
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
        });
        port
    }

    fn reply_to(bytes: &[u8]) -> Result<Reply, Error> {
        let port = serving(bytes.to_vec(), false);
        let deadline = Deadline::after(Duration::from_secs(5));
        Session::connect("127.0.0.1", port, deadline)?.read_reply()
    }

    #[test]
    fn replies_are_parsed_line_by_line() {
        let r = reply_to(b"250-mx.example\r\n250-STARTTLS\n250 AUTH PLAIN\r\n").unwrap();
        assert_eq!(r.code, 250);
        assert_eq!(r.lines, ["mx.example", "STARTTLS", "AUTH PLAIN"]);
        assert_eq!(r.text(), "250 mx.example STARTTLS AUTH PLAIN");
        assert_eq!(reply_to(b"220\r\n").unwrap().lines, [""]);
        // Control characters (a terminal escape) do not pass through.
        let r = reply_to(b"554 no\x1b[2J way\r\n").unwrap();
        assert_eq!(r.lines, ["no\u{FFFD}[2J way"]);
    }

    #[test]
    fn bad_replies_are_refused_at_their_limit() {
        let long = [b"220 ".as_slice(), &[b'A'; MAX_LINE], b"\r\n"].concat();
        assert!(matches!(
            reply_to(&long),
            Err(Error::Reply(ReplyProblem::LineTooLong { limit: MAX_LINE }))
        ));
        let many: Vec<u8> = b"250-x\r\n".repeat(MAX_LINES + 1);
        assert!(matches!(
            reply_to(&many),
            Err(Error::Reply(ReplyProblem::TooManyLines { .. }))
        ));
        let big_line = [b"250-".as_slice(), &[b'B'; 4000], b"\r\n"].concat();
        assert!(matches!(
            reply_to(&big_line.repeat(20)),
            Err(Error::Reply(ReplyProblem::TooLong { limit: MAX_REPLY }))
        ));
        for bad in [
            &b"hello\r\n"[..],
            b"25\r\n",
            b"250x\r\n",
            b"250-a\r\n251 b\r\n",
        ] {
            assert!(
                matches!(
                    reply_to(bad),
                    Err(Error::Reply(ReplyProblem::Malformed { .. }))
                ),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // Half a reply, then the server hangs up.
        let port = serving(b"250-half".to_vec(), true);
        let deadline = Deadline::after(Duration::from_secs(5));
        let mut session = Session::connect("127.0.0.1", port, deadline).unwrap();
        assert!(matches!(session.read_reply(), Err(Error::Closed(None))));
    }

    #[test]
    fn the_deadline_covers_the_whole_reply_not_each_read() {
        // One continuation line every 200 ms, forever.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            while s.write_all(b"220-still here\r\n").is_ok() {
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let started = Instant::now();
        let deadline = Deadline::after(Duration::from_millis(900));
        let mut session = Session::connect("127.0.0.1", port, deadline).unwrap();
        assert!(matches!(session.read_reply(), Err(Error::TimedOut)));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_millis(1500),
            "{took:?}"
        );
    }
}
