//! The shared test harness, one owner per concern:
//!
//! - [`host`]: a throw-away Postfix config directory ([`Host`]) with its desired-state
//!   file, and snapshots of its files to prove that a run wrote nothing.
//! - [`run`]: a builder for running the postrelay binary ([`Cmd`]) and its result
//!   ([`Run`]), which checks on every run that no canary password was printed.
//! - [`postfix`]: what the real Postfix tools read: `postconf -n`/`-h`
//!   ([`postfix::Postconf`]), `postmap -s`/`-q`.
//! - [`need`]: prerequisites ([`Need`], [`require!`]) and the one skip policy.
//! - [`api`]: everything the tests take from the postrelay library, in one place
//!   (parser.rs and dns.rs aside: they test `postrelay::syntax` and `postrelay::dns`
//!   themselves).
//! - [`desired`]: desired-state files for the end-to-end tests, whose relays are the
//!   fake relays of `relay.rs`.
//! - [`tls`]: the fake relays' certificates: a test CA that issues them and writes
//!   its certificate as PEM for an instance's `smtp_tls_CAfile`, and self-signed ones.
//! - [`wire`]: the server side of the tests' SMTP peers: a plain or TLS connection and
//!   its bounded lines.
//! - here: the canary passwords, [`NOBODY`], the managed parameters, and small
//!   helpers (a closed port, running independent cases side by side).
//!
//! # Prerequisites and skipping
//!
//! The suite needs the Postfix tools and, for part of it, root (CI runs it as root on
//! Debian 12 after `scripts/install-deps`). A test states what it needs with
//! `require!(Need::Postfix, Need::Root)`; a runtime obstacle (a mount that fails, a
//! binary user nobody cannot reach) goes through [`skip_or_fail`]. When something is
//! missing the test **fails** with the reason, always under `CI=true`, and elsewhere
//! too unless `POSTRELAY_ALLOW_SKIP=1` is set: then it prints `SKIPPED: <reason>` on
//! stderr and returns. A missing prerequisite is never a silent pass.

pub mod api;
pub mod desired;
pub mod host;
pub mod need;
pub mod postfix;
pub mod run;
pub mod tls;
pub mod wire;

use std::ffi::OsStr;
use std::io::Write;
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};

pub use host::{DEBIAN_MAIN_CF, FileState, Host, assert_restored, backdate};
pub use need::{Need, on_path, require, skip_or_fail};
pub use run::{Cmd, Run};

/// A password that must never appear in any output.
pub const CANARY: &str = "CANARY-s3cret-9d1f";
pub const CANARY2: &str = "CANARY-rotated-44b2";
pub const CANARY_FILE: &str = "CANARY-fromfile-71ce";

/// A password for one relay of a scenario: the canary (which no postrelay output may
/// show) with a tag.
pub fn pw(tag: &str) -> String {
    format!("{CANARY}-{tag}")
}

/// The unprivileged user (and group) the tests switch to or hand files to.
pub const NOBODY: u32 = 65534;

/// The unprivileged account the trust tests hand files to: `postrelay-mallory`, created
/// (a system user without home or shell) the first time a test asks for it. Its uid.
pub fn mallory() -> u32 {
    static UID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UID.get_or_init(|| {
        let name = "postrelay-mallory";
        let exists = |n: &str| nix::unistd::User::from_name(n).ok().flatten();
        if exists(name).is_none() {
            output_ok(Command::new("useradd").args([
                "--system",
                "--no-create-home",
                "--user-group",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ]));
        }
        exists(name).expect("useradd created no user").uid.as_raw()
    })
}

/// Runs `cmd`, which must succeed; its output.
pub fn output_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{} {:?} failed ({}):\n{}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args().collect::<Vec<&OsStr>>(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `cmd` with `input` on its stdin (written from another thread, so a child that
/// writes much before it reads cannot deadlock); its output.
pub fn output_with_input(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    // A child that exits without reading all of it closes the pipe: not an error here.
    let _ = writer.join().unwrap();
    out
}

/// Whether `bytes` hold `s` anywhere.
pub fn holds(bytes: &[u8], s: &str) -> bool {
    bytes.windows(s.len()).any(|w| w == s.as_bytes())
}

/// `f` on every item, on `threads` threads at once (each takes a run of items in
/// turn); the results in item order. A panic in `f` fails the caller with its message.
pub fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let f = &f;
    let chunk = items.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// A port on 127.0.0.1 nothing listens on (connections are refused).
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The parameters postrelay manages, in the order it writes them, with the values
/// apply gives them for hash maps in `etc` (as postrelay names it) and `relayhost`.
pub fn managed_parameters(etc: &std::path::Path, relayhost: &str) -> Vec<(&'static str, String)> {
    let etc = etc.display();
    vec![
        ("smtp_sasl_auth_enable", "yes".into()),
        ("smtp_sasl_security_options", "noanonymous".into()),
        ("smtp_sasl_tls_security_options", "noanonymous".into()),
        ("smtp_sender_dependent_authentication", "yes".into()),
        ("smtp_sasl_password_maps", format!("hash:{etc}/sasl_passwd")),
        (
            "sender_dependent_relayhost_maps",
            format!("hash:{etc}/sender_relay"),
        ),
        ("smtp_tls_policy_maps", format!("hash:{etc}/tls_policy")),
        ("relayhost", relayhost.into()),
    ]
}
