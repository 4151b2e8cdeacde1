//! A throw-away Postfix instance under a temp dir, for end-to-end tests: its own
//! config, queue, data and log directories, a minimal master.cf with no `inet`
//! listener and no chroot, and a main.cf holding only the instance plumbing. Every
//! relaying setting (relayhost, SASL, maps, TLS policy) comes from `postrelay apply` on
//! a desired-state file; the tests never write them.
//!
//! It follows `../shared/reference/live-postfix-test-recipe.md`: the queue directory
//! exists before the first `postfix -c` call; main.cf and master.cf are backdated after
//! every write (Postfix re-reads a main.cf younger than ~1 s in 300 ms steps); `postfix`
//! prints nothing without a TTY, so failures quote the instance's mail log; delivery is
//! awaited by polling, with a `postqueue -f` whenever nothing happened for 5 s; and drop
//! stops the instance and waits until no live process has its cwd in the queue
//! directory (zombies don't count) before the temp dir goes. It never runs `postfix
//! set-permissions` or `upgrade-configuration`, which would touch the system instance.
//!
//! Tests using it need `require!(Need::Live)`: root (the master daemon runs as
//! root), `sendmail`, `postqueue` and the SASL PLAIN client module.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::harness::postfix;
use crate::harness::{Host, Run, backdate};
use crate::relay::{Accepted, FakeRelay};

/// How long a test waits for a delivery or a deferral. Generous for slow CI machines;
/// locally both take well under a second.
pub const WAIT: Duration = Duration::from_secs(30);
/// With nothing delivered for this long, ask Postfix to flush its queue.
const FLUSH_AFTER: Duration = Duration::from_secs(5);

/// A Message-ID unique across tests and runs.
pub fn message_id(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{tag}.{}.{}.{nanos}@postrelay-e2e.test",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Sends one message and returns what the relay it reached (one of `relays`) recorded.
pub fn deliver(inst: &Instance, relays: &[&FakeRelay], from: &str, to: &str) -> Accepted {
    let id = message_id(&from.replace('@', "-at-"));
    inst.send(from, &[to], &id);
    let m = inst.expect_on(
        relays,
        |m| m.message_id.as_deref() == Some(id.as_str()),
        &format!("<{id}> from {from}"),
    );
    // And only that relay.
    for r in relays.iter().filter(|r| r.port() != m.port) {
        assert!(
            r.wait_for_message(&id, Duration::ZERO).is_none(),
            "<{id}> reached two relays"
        );
    }
    m
}

/// A message in the queue, as `postqueue -j` reports it (one JSON object per line;
/// fields the tests do not use are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Queued {
    /// `maildrop`, `incoming`, `active`, `deferred` or `hold`.
    pub queue_name: String,
    pub queue_id: String,
    /// `""` for the null sender.
    pub sender: String,
    pub recipients: Vec<QueuedRecipient>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct QueuedRecipient {
    pub address: String,
    /// Why delivery was deferred; absent before the first attempt ended.
    pub delay_reason: Option<String>,
}

/// A throw-away Postfix instance; stopped and removed when dropped. It is a [`Host`]
/// (temp dir, config dir, desired-state file, postrelay runs) with a real instance's
/// main.cf and master.cf, which it can start.
pub struct Instance {
    host: Host,
    /// The temp dir, canonical (so it compares with `/proc/PID/cwd`).
    root: PathBuf,
    /// Whether `postfix start` was attempted (drop then stops and waits).
    started: bool,
}

impl std::ops::Deref for Instance {
    type Target = Host;
    fn deref(&self) -> &Host {
        &self.host
    }
}

impl Default for Instance {
    fn default() -> Self {
        Instance::new()
    }
}

impl Instance {
    /// Writes the instance's files; does not start it.
    pub fn new() -> Instance {
        let mut host = Host::new("");
        let root = fs::canonicalize(host.tmp.path()).unwrap();
        // The master opens data_directory/master.lock as the mail owner, through the
        // absolute path: the temp dir must be searchable by others whatever the umask.
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        // data/ is left to `postfix start` (post-install create-missing), which makes it
        // owned by the mail owner, as tlsmgr and verify need.
        fs::create_dir(root.join("log")).unwrap();
        host.maillog = Some(root.join("log/maillog"));
        let instance = Instance {
            host,
            root,
            started: false,
        };
        instance.write_etc("main.cf", instance.main_cf_text());
        instance.write_etc("master.cf", MASTER_CF);
        instance
    }

    pub fn queue_dir(&self) -> PathBuf {
        self.root.join("queue")
    }

    fn main_cf_text(&self) -> String {
        let root = self.root.display();
        format!(
            "\
# A throw-away instance for postrelay's end-to-end tests (tests/it/instance.rs).
# Only the instance plumbing is here; relaying settings come from postrelay apply.
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
maillog_file = {root}/log/maillog
maillog_file_prefixes = {root}
myhostname = mta.postrelay-e2e.test
mydomain = postrelay-e2e.test
myorigin = $myhostname
mydestination =
relay_domains =
local_transport = error:local delivery is disabled in this test instance
alias_maps =
alias_database =
inet_interfaces = loopback-only
inet_protocols = ipv4
smtp_connect_timeout = 5s
smtp_host_lookup = native
smtp_tls_loglevel = 1
"
        )
    }

    /// `postrelay apply`, which must succeed (main.cf is backdated afterwards, so the
    /// daemons a reload restarts don't pause on a fresh main.cf).
    pub fn apply_ok(&self) -> Run {
        let run = self.apply();
        run.success();
        run
    }

    /// `NAME -c ETC ARG`: a Postfix program (postfix, postqueue) on this instance.
    fn tool(&self, name: &str, arg: &str) -> Command {
        let mut cmd = postfix::command(name);
        cmd.arg("-c").arg(&self.etc).arg(arg);
        cmd
    }

    /// `NAME -c ETC ARG`, which must succeed (failures quote the mail log); its output.
    fn run_ok(&self, name: &str, arg: &str) -> Output {
        let out = self.tool(name, arg).output().unwrap();
        self.check(&format!("{name} -c ETC {arg}"), &out);
        out
    }

    /// `postfix -c ETC ARG`; panics with the mail log when it fails.
    pub fn postfix(&self, arg: &str) {
        self.run_ok("postfix", arg);
    }

    fn check(&self, what: &str, out: &Output) {
        assert!(
            out.status.success(),
            "{what} failed ({})\nstdout:\n{}\nstderr:\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.diagnostics()
        );
    }

    /// `postfix -c ETC start`, then waits until the master daemon has written its PID.
    pub fn start(&mut self) {
        self.start_under(&[]);
    }

    /// [`Instance::start`] under `wrapper` (a program and its arguments, to which
    /// `postfix -c ETC start` is appended): the master daemon and every daemon it
    /// starts stay in what the wrapper set up (a mount namespace, say).
    pub fn start_under(&mut self, wrapper: &[&str]) {
        backdate(&self.main_cf());
        backdate(&self.path("master.cf"));
        self.started = true;
        match wrapper.split_first() {
            None => self.postfix("start"),
            Some((program, args)) => {
                let postfix = self.tool("postfix", "start");
                let out = Command::new(program)
                    .args(args)
                    .arg(postfix.get_program())
                    .args(postfix.get_args())
                    .output()
                    .unwrap();
                self.check("postfix -c ETC start (wrapped)", &out);
            }
        }
        let deadline = Instant::now() + WAIT;
        while self.master_pid_opt().is_none() {
            assert!(
                Instant::now() < deadline,
                "the master daemon wrote no PID file\n{}",
                self.diagnostics()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `postfix -c ETC reload`.
    pub fn reload(&self) {
        self.postfix("reload");
    }

    fn master_pid_opt(&self) -> Option<u32> {
        let text = fs::read_to_string(self.queue_dir().join("pid/master.pid")).ok()?;
        text.trim()
            .parse()
            .ok()
            .filter(|pid| Path::new(&format!("/proc/{pid}")).exists())
    }

    /// The master daemon's PID (`queue/pid/master.pid`).
    pub fn master_pid(&self) -> u32 {
        self.master_pid_opt()
            .unwrap_or_else(|| panic!("no running master\n{}", self.diagnostics()))
    }

    /// Submits a message with `sendmail -C ETC -i -f FROM -- TO...`; its Message-ID
    /// header is `<message_id>`.
    pub fn send(&self, from: &str, to: &[&str], message_id: &str) {
        let message = format!(
            "From: <{from}>\nTo: {}\nSubject: postrelay e2e {message_id}\nMessage-ID: <{message_id}>\n\nA test message from postrelay's end-to-end tests.\n",
            to.iter()
                .map(|t| format!("<{t}>"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.sendmail(from, to, &message);
    }

    /// Submits `message` as is (`from` may be `<>` for the null sender).
    pub fn sendmail(&self, from: &str, to: &[&str], message: &str) {
        let mut child = postfix::command("sendmail")
            .arg("-C")
            .arg(&self.etc)
            .args(["-i", "-f", from, "--"])
            .args(to)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(message.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        self.check(&format!("sendmail -f {from} -- {}", to.join(" ")), &out);
    }

    /// `postqueue -c ETC -f`: attempt delivery of everything queued now.
    pub fn flush(&self) {
        self.run_ok("postqueue", "-f");
    }

    /// The queue, from `postqueue -c ETC -j` (one JSON object per message).
    pub fn queue(&self) -> Vec<Queued> {
        let out = self.run_ok("postqueue", "-j");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("postqueue -j: {e}: {l}")))
            .collect()
    }

    /// Waits until the message from `sender` sits in the deferred queue with a delay
    /// reason for every recipient, and returns it.
    pub fn wait_deferred(&self, sender: &str, timeout: Duration) -> Queued {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self.queue().into_iter().find(|m| {
                m.sender == sender
                    && m.queue_name == "deferred"
                    && m.recipients.iter().all(|r| r.delay_reason.is_some())
            });
            if let Some(m) = found {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "no deferred message from {sender:?} after {timeout:?}\n{}",
                self.diagnostics()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (up to [`WAIT`]) until `relay` records the message with this Message-ID.
    pub fn expect_delivery(&self, relay: &FakeRelay, message_id: &str) -> Accepted {
        self.expect_on(
            &[relay],
            |m| m.message_id.as_deref() == Some(message_id),
            &format!("the message <{message_id}>"),
        )
    }

    /// Waits (up to [`WAIT`]) until one of `relays` records a message satisfying `pred`
    /// and returns it (its `port` says which relay). Runs `postqueue -f` whenever
    /// nothing arrived for 5 s. Fails at once when a message is deferred meanwhile (so
    /// a misrouted or refused message fails the test with the reason, not a timeout),
    /// and with the queue and the mail log on timeout.
    pub fn expect_on(
        &self,
        relays: &[&FakeRelay],
        pred: impl Fn(&Accepted) -> bool,
        what: &str,
    ) -> Accepted {
        let start = Instant::now();
        let mut last_flush = start;
        loop {
            for relay in relays {
                if let Some(m) = relay.wait_for(&pred, Duration::ZERO) {
                    return m;
                }
            }
            let now = Instant::now();
            if now.duration_since(start) >= Duration::from_millis(300) {
                let deferred: Vec<Queued> = self
                    .queue()
                    .into_iter()
                    .filter(|m| m.queue_name == "deferred")
                    .collect();
                assert!(
                    deferred.is_empty(),
                    "waiting for {what}, a message was deferred: {deferred:#?}\n{}",
                    self.diagnostics()
                );
            }
            assert!(
                now.duration_since(start) < WAIT,
                "{what} did not reach the relays on ports {:?} within {WAIT:?}\nthey recorded: {:#?}\n{}",
                relays.iter().map(|r| r.port()).collect::<Vec<_>>(),
                relays.iter().map(|r| r.messages()).collect::<Vec<_>>(),
                self.diagnostics()
            );
            if now.duration_since(last_flush) >= FLUSH_AFTER {
                self.flush();
                last_flush = now;
            }
            thread::sleep(Duration::from_millis(
                if now.duration_since(start) < Duration::from_millis(300) {
                    10
                } else {
                    100
                },
            ));
        }
    }

    /// The queue and the mail log, for failure messages.
    pub fn diagnostics(&self) -> String {
        let mut s = String::new();
        if self.queue_dir().join("pid/master.pid").exists() {
            let out = self.tool("postqueue", "-j").output();
            if let Ok(out) = out {
                let _ = writeln!(
                    s,
                    "--- postqueue -j:\n{}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
        }
        let _ = write!(s, "--- maillog:\n{}--- end", self.maillog());
        s
    }

    /// Live processes (not zombies) whose cwd is inside the queue directory.
    fn queue_processes(&self) -> Vec<i32> {
        let queue = self.queue_dir();
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| {
                fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(&queue))
                    && is_live(pid)
            })
            .collect()
    }

    /// This instance's live daemons called `name` (`/proc/PID/comm`: "qmgr",
    /// "trivial-rewrite", "smtp"...).
    pub fn daemons(&self, name: &str) -> Vec<i32> {
        self.queue_processes()
            .into_iter()
            .filter(|pid| {
                fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == name)
            })
            .collect()
    }
}

/// Whether process `pid` exists and is not a zombie.
pub fn is_live(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name, which is in parentheses.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            != Some("Z")
    })
}

impl Drop for Instance {
    fn drop(&mut self) {
        if !self.started {
            return;
        }
        let _ = self.tool("postfix", "stop").output();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = self.queue_processes();
            if left.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                // Only this instance's processes: their cwd is in its queue directory.
                eprintln!(
                    "instance {}: processes {left:?} still running 10 s after postfix stop; killing them",
                    self.root.display()
                );
                for pid in left {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                thread::sleep(Duration::from_millis(200));
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// No `inet` service (nothing listens), no chroot, no local delivery agents; `postlog`
/// because main.cf sets `maillog_file`, `tlsmgr` because postrelay's TLS policy map
/// turns TLS on (without it every smtp process stalls ~1 s "no entropy").
const MASTER_CF: &str = "\
# service type  private unpriv  chroot  wakeup  maxproc command + args
pickup     unix  n       -       n       60      1       pickup
cleanup    unix  n       -       n       -       0       cleanup
qmgr       unix  n       -       n       300     1       qmgr
tlsmgr     unix  -       -       n       1000?   1       tlsmgr
rewrite    unix  -       -       n       -       -       trivial-rewrite
bounce     unix  -       -       n       -       0       bounce
defer      unix  -       -       n       -       0       bounce
trace      unix  -       -       n       -       0       bounce
verify     unix  -       -       n       -       1       verify
flush      unix  n       -       n       1000?   0       flush
proxymap   unix  -       -       n       -       -       proxymap
proxywrite unix  -       -       n       -       1       proxymap
smtp       unix  -       -       n       -       -       smtp
relay      unix  -       -       n       -       -       smtp
showq      unix  n       -       n       -       -       showq
error      unix  -       -       n       -       -       error
retry      unix  -       -       n       -       -       error
discard    unix  -       -       n       -       -       discard
anvil      unix  -       -       n       -       1       anvil
scache     unix  -       -       n       -       1       scache
postlog    unix-dgram n  -       n       -       1       postlogd
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postqueue_json_lines_parse() {
        let line = r#"{"queue_name": "deferred", "queue_id": "4Xb1Z2", "arrival_time": 1732550000, "message_size": 123, "forced_expire": false, "sender": "a@x.test", "recipients": [{"address": "b@y.test", "delay_reason": "SASL authentication failed; server 127.0.0.1[127.0.0.1] said: 535 5.7.8 \"no\"\u00e9\ud83d\ude00"}, {"address": "c@y.test"}]}"#;
        let q: Queued = serde_json::from_str(line).unwrap();
        assert_eq!(q.queue_name, "deferred");
        assert_eq!(q.queue_id, "4Xb1Z2");
        assert_eq!(q.sender, "a@x.test");
        assert_eq!(q.recipients.len(), 2);
        assert_eq!(
            q.recipients[0].delay_reason.as_deref(),
            Some(
                "SASL authentication failed; server 127.0.0.1[127.0.0.1] said: 535 5.7.8 \"no\"é😀"
            )
        );
        assert_eq!(q.recipients[1].address, "c@y.test");
        assert_eq!(q.recipients[1].delay_reason, None);
    }
}
