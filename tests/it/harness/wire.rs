//! The server side of the tests' SMTP peers (the fake relay, the scripted peer):
//! listening on 127.0.0.1 and serving each connection on a thread of its own
//! ([`Listening`], [`Server`]), a connection that is plain TCP or TLS after STARTTLS
//! ([`Conn`]), and reading and writing its lines with a bound on their length.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use rustls::{ServerConnection, StreamOwned};

/// A server's connection: plain, or TLS after STARTTLS.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
    /// Only while switching to TLS.
    Closed,
}

impl Conn {
    pub fn is_tls(&self) -> bool {
        matches!(self, Conn::Tls(_))
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
            Conn::Closed => Ok(0),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
            Conn::Closed => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
            Conn::Closed => Ok(()),
        }
    }
}

/// Writes `text` and CRLF, flushed.
pub fn write_line(conn: &mut impl Write, text: &str) -> io::Result<()> {
    conn.write_all(text.as_bytes())?;
    conn.write_all(b"\r\n")?;
    conn.flush()
}

/// One line from `conn` without its CRLF or bare LF (what was read past it stays in
/// `buf`); `None` at EOF, an error past `max` octets without a line end.
pub fn read_line(
    conn: &mut impl Read,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Option<String>> {
    loop {
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = buf.drain(..=i).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
        }
        if buf.len() > max {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
        }
        let mut chunk = [0u8; 8192];
        match conn.read(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A TLS peer that closes without close_notify.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

/// How long a session waits for its client before giving up.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// The sessions a test server is serving, and whether it is stopping: dropping the
/// server ([`Listening`]) sets the flag and shuts every session's socket down, so a
/// stuck client can never hang a test.
#[derive(Default)]
pub struct Sessions {
    stop: AtomicBool,
    /// A clone of each open session's socket, by session ID.
    conns: Mutex<HashMap<u64, TcpStream>>,
}

impl Sessions {
    fn conns(&self) -> MutexGuard<'_, HashMap<u64, TcpStream>> {
        // A panicking session thread must not wedge the others.
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the server is being dropped (long-running scripts poll it).
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.conns().is_empty()
    }
}

/// What a test SMTP server does with each connection it accepts.
pub trait Server: Send + Sync + 'static {
    fn sessions(&self) -> &Sessions;
    /// Serves session `id` until it ends (the socket has [`IO_TIMEOUT`]s).
    fn serve(&self, id: u64, stream: TcpStream) -> io::Result<()>;
}

/// A test server listening on 127.0.0.1, on a port the kernel chose; each connection
/// is served on its own thread. Stops when dropped.
pub struct Listening<S: Server> {
    pub port: u16,
    pub server: Arc<S>,
    acceptor: Option<JoinHandle<()>>,
}

impl<S: Server> Listening<S> {
    /// Binds, builds the server from its port, and starts accepting; `name` is for
    /// messages and thread names.
    pub fn start(name: &str, server: impl FnOnce(u16) -> S) -> Listening<S> {
        Listening::start_at(name, "127.0.0.1:0", server)
    }

    /// [`Listening::start`] on `addr` (`IP:PORT`).
    pub fn start_at(name: &str, addr: &str, server: impl FnOnce(u16) -> S) -> Listening<S> {
        let listener =
            TcpListener::bind(addr).unwrap_or_else(|e| panic!("{name}: bind {addr}: {e}"));
        let port = listener.local_addr().unwrap().port();
        // Non-blocking accept polled with a short sleep: drop only has to set a flag.
        listener.set_nonblocking(true).unwrap();
        let server = Arc::new(server(port));
        let name = format!("{name}-{port}");
        let acceptor = {
            let server = server.clone();
            thread::Builder::new()
                .name(name.clone())
                .spawn(move || accept_loop(listener, &name, server))
                .unwrap()
        };
        Listening {
            port,
            server,
            acceptor: Some(acceptor),
        }
    }
}

impl<S: Server> Drop for Listening<S> {
    fn drop(&mut self) {
        let sessions = self.server.sessions();
        sessions.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            // The accept loop polls the flag every few milliseconds.
            let _ = acceptor.join();
        }
        // Session threads then see EOF or an error at once and end on their own.
        for conn in sessions.conns().values() {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop<S: Server>(listener: TcpListener, name: &str, server: Arc<S>) {
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);
    while !server.sessions().stopping() {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) => {
                if e.kind() != io::ErrorKind::WouldBlock {
                    eprintln!("{name}: accept: {e}");
                }
                thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let setup = || -> io::Result<TcpStream> {
            stream.set_nonblocking(false)?;
            stream.set_read_timeout(Some(IO_TIMEOUT))?;
            stream.set_write_timeout(Some(IO_TIMEOUT))?;
            stream.set_nodelay(true)?;
            stream.try_clone()
        };
        let clone = match setup() {
            Ok(clone) => clone,
            Err(e) => {
                eprintln!("{name}: {e}");
                continue;
            }
        };
        server.sessions().conns().insert(id, clone);
        let server = server.clone();
        let thread_name = format!("{name}-{id}");
        let spawned = thread::Builder::new().name(thread_name).spawn(move || {
            if let Err(e) = server.serve(id, stream) {
                // Timeouts and resets end a session; they are not test failures.
                eprintln!(
                    "{}: session ended: {e}",
                    thread::current().name().unwrap_or("")
                );
            }
            // The clone would keep the socket open after the session's end.
            if let Some(conn) = server.sessions().conns().remove(&id) {
                let _ = conn.shutdown(Shutdown::Both);
            }
        });
        if let Err(e) = spawned {
            eprintln!("{name}: cannot spawn a session thread: {e}");
        }
    }
}
