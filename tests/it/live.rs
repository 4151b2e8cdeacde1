//! Live: `postrelay apply` changes a running Postfix while mail flows through it, for
//! the three changes of issue 8 — a sender domain removed, one added, a password
//! rotated. Messages go in at a steady rate from before the apply until well after it
//! (longer than trivial-rewrite's ~8 s lag behind a rebuilt map): from the changed
//! domain, both from one fixed sender/recipient pair (the pair trivial-rewrite's client
//! caches) and from new pairs, and from two unchanged domains (one with its own relay,
//! one through the relayhost). The fake relays behave as providers do: `530 5.7.0` to
//! mail without AUTH (Postfix bounces it), 535 to credentials they do not know.
//!
//! What each test proves, on the wire: no relay ever sees a message without AUTH or a
//! password its entries do not name (no mixed state: one map's new content used with
//! another's old); nothing bounces; every message is delivered exactly once, by its
//! sender's old route or its new route (relay, user and password together), never by
//! a route of neither state; the only deferrals are apply's hold (`src/hold.rs`), for
//! the changed domain alone, and a rotation holds nothing; nothing is left in the
//! queue, with no flush by the test; everything submitted after the routing daemons
//! of the old configuration exited goes the new way or is held, so neither
//! trivial-rewrite's lag nor its 30 s resolve cache outlives the apply. The figures are
//! printed (`--nocapture`; docs/reliability.md). Two more tests prove the order: a
//! change is checked before any file is replaced, and a run killed in the middle of
//! the hold leaves it to the next run, which releases the held mail.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::api::{self, RELOAD_PENDING, TEMP_MARK, TOOL_DIR_VAR};
use crate::harness::desired::{Sender, desired, domain};
use crate::harness::{CANARY, CANARY2, Need};
use crate::instance::{Instance, WAIT, deliver, is_live, message_id};
use crate::relay::{Accepted, FakeRelay, RelayConfig};
use crate::require;

/// Messages submitted per second, in all; two thirds come from the changed domain.
const RATE: u32 = 12;
/// Traffic before the apply starts.
const LEAD: Duration = Duration::from_secs(2);
/// Traffic after the apply returned: longer than trivial-rewrite's ~8 s lag.
const TAIL: Duration = Duration::from_secs(10);
/// The domain whose entry each test changes, and the two it leaves alone.
const CHANGED: &str = "changed.test";
const KEPT: &str = "kept.test";
const UNLISTED: &str = "unlisted.test";
/// The compiled maps apply replaces.
const COMPILED: [&str; 3] = ["sasl_passwd.db", "sender_relay.db", "tls_policy.db"];

/// Where a message goes and how it logs in there.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Route {
    port: u16,
    user: String,
    password: String,
}

impl Route {
    fn of(m: &Accepted) -> Option<Route> {
        Some(Route {
            port: m.port,
            user: m.auth_user.clone()?,
            password: m.auth_password.clone()?,
        })
    }
}

/// A desired state as these tests model it: the relayhost and domain entries with
/// credentials. Its file comes from [`desired`]; the routes it implies are stated here
/// independently of postrelay.
struct State<'a> {
    relayhost: (&'a FakeRelay, &'a str, &'a str),
    senders: Vec<Sender<'a>>,
}

impl State<'_> {
    fn toml(&self) -> String {
        desired(Some(self.relayhost), &self.senders)
    }

    /// How mail from `domain` must leave: through its entry's relay (or the
    /// relayhost) with its entry's credentials (its own entry, else a wildcard's that
    /// covers it); without an entry, through the relayhost with the relayhost's.
    fn route(&self, domain: &str) -> Route {
        let (rh, rh_user, rh_password) = self.relayhost;
        let covers = |key: &str| {
            key.strip_prefix("*.")
                .is_some_and(|w| domain.ends_with(&format!(".{w}")))
        };
        let entry = self
            .senders
            .iter()
            .find(|s| s.key == domain)
            .or_else(|| self.senders.iter().find(|s| covers(s.key)));
        assert!(
            entry.is_none_or(|s| s.kind == "domain" && s.credentials.is_some()),
            "the model knows only domain entries with credentials"
        );
        let (user, password) = entry
            .and_then(|s| s.credentials)
            .unwrap_or((rh_user, rh_password));
        Route {
            port: entry.and_then(|s| s.relay).unwrap_or(rh).port(),
            user: user.to_string(),
            password: password.to_string(),
        }
    }

    /// Every route the state names: the only credentials any relay may be offered.
    fn assigned(&self) -> Vec<Route> {
        let mut routes = vec![self.route(UNLISTED)];
        routes.extend(self.senders.iter().map(|s| self.route(s.key)));
        routes
    }
}

/// One submitted message.
struct Sent {
    id: String,
    domain: &'static str,
    at: Instant,
}

/// The envelope of the `i`th message, in a cycle of six: the changed domain from one
/// fixed pair (0, 3) and from new pairs (1, 4), an unchanged domain with its own relay
/// (2) and one through the relayhost (5), each from a new pair.
fn envelope(i: usize) -> (&'static str, String, String) {
    let new_pair = |domain: &'static str| {
        (
            domain,
            format!("n{i}@{domain}"),
            format!("r{i}@remote.example"),
        )
    };
    match i % 6 {
        0 | 3 => (
            CHANGED,
            format!("same@{CHANGED}"),
            "same@remote.example".into(),
        ),
        2 => new_pair(KEPT),
        5 => new_pair(UNLISTED),
        _ => new_pair(CHANGED),
    }
}

/// Submits messages at [`RATE`], on a fixed schedule, until `stop` is set.
fn traffic(inst: &Instance, stop: &AtomicBool) -> Vec<Sent> {
    let period = Duration::from_secs(1) / RATE;
    let start = Instant::now();
    let mut sent = Vec::new();
    for i in 0.. {
        let due = start + period * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let (domain, from, to) = envelope(i);
        let id = message_id("live");
        let at = Instant::now();
        inst.send(&from, &[&to], &id);
        sent.push(Sent { id, domain, at });
    }
    sent
}

/// When the daemons switched, seen from outside.
#[derive(Debug, Default)]
struct Switch {
    /// The first compiled map replaced: from then on, new smtp processes read new maps.
    maps_replaced: Option<Instant>,
    /// The queue manager running before the apply exited (it resolved with the old
    /// trivial-rewrite answers).
    old_qmgr_gone: Option<Instant>,
    /// The last of the trivial-rewrite processes running before the apply exited.
    old_rewrite_gone: Option<Instant>,
}

/// What the watcher compares with: the compiled maps' inodes and the daemons running
/// before the apply.
struct Before {
    maps: Vec<(PathBuf, Option<u64>)>,
    qmgr: Vec<i32>,
    rewrite: Vec<i32>,
}

fn inode(path: &Path) -> Option<u64> {
    std::fs::metadata(path).map(|m| m.ino()).ok()
}

impl Before {
    fn note(inst: &Instance) -> Before {
        let before = Before {
            maps: COMPILED
                .iter()
                .map(|name| (inst.path(name), inode(&inst.path(name))))
                .collect(),
            qmgr: inst.daemons("qmgr"),
            rewrite: inst.daemons("trivial-rewrite"),
        };
        assert_eq!(before.qmgr.len(), 1, "one queue manager: {:?}", before.qmgr);
        before
    }

    /// Polls every millisecond until the old queue manager and trivial-rewrite
    /// processes are gone, or `done` has been set for 10 s.
    fn watch(&self, done: &AtomicBool) -> Switch {
        let mut switch = Switch::default();
        let mut deadline = None;
        loop {
            let now = Instant::now();
            if self.maps.iter().any(|(path, was)| inode(path) != *was) {
                switch.maps_replaced.get_or_insert(now);
            }
            if !self.qmgr.iter().copied().any(is_live) {
                switch.old_qmgr_gone.get_or_insert(now);
            }
            if !self.rewrite.iter().copied().any(is_live) {
                switch.old_rewrite_gone.get_or_insert(now);
            }
            if switch.old_qmgr_gone.is_some()
                && switch.old_rewrite_gone.is_some()
                && switch.maps_replaced.is_some()
            {
                return switch;
            }
            if done.load(Ordering::SeqCst) {
                let deadline = *deadline.get_or_insert(now + Duration::from_secs(10));
                if now >= deadline {
                    return switch;
                }
            }
            thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Sets its flag when dropped, so that a panic in the test's own thread still ends
/// the threads it waits for.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// When apply started and ended each run of a Postfix command, from its `-vv` log lines.
fn command_spans(lines: &[(Instant, String)], command: &str) -> Vec<(Instant, Instant)> {
    let starts = lines
        .iter()
        .filter(|(_, l)| l.contains(&format!("running {command}")));
    let ends = lines
        .iter()
        .filter(|(_, l)| l.contains(&format!("{command}: exit status")));
    starts.zip(ends).map(|(a, b)| (a.0, b.0)).collect()
}

/// Waits until every message reached a relay and the queue is empty, or nothing moves
/// any more (only mail that was tried and deferred is left, and nothing was delivered
/// for 3 s), or [`WAIT`] passed.
fn settle(inst: &Instance, relays: &[&FakeRelay], sent: &[Sent]) {
    let start = Instant::now();
    let (mut count, mut changed) = (0, start);
    loop {
        let queue = inst.queue();
        let delivered: usize = relays.iter().map(|r| r.messages().len()).sum();
        if delivered != count {
            (count, changed) = (delivered, Instant::now());
        }
        // Not yet tried: a message whose delivery was in progress during the reload
        // and failed sits in incoming, tried, until a later queue run.
        let moving = queue
            .iter()
            .any(|m| m.recipients.iter().any(|r| r.delay_reason.is_none()));
        if !moving && (delivered >= sent.len() || changed.elapsed() > Duration::from_secs(3))
            || start.elapsed() > WAIT
        {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// What one change under traffic observed.
struct Observed {
    sent: Vec<Sent>,
    switch: Switch,
    apply_start: Instant,
    apply_end: Instant,
    /// apply's `-vv` log lines, with when each arrived.
    log: Vec<(Instant, String)>,
}

/// With `new` as the desired state, runs traffic, applies in the middle of it, and
/// keeps the traffic going for [`TAIL`] after apply returned.
fn apply_under_traffic(inst: &Instance, new: &State) -> Observed {
    inst.desired(&new.toml());
    let stop = AtomicBool::new(false);
    let applied = AtomicBool::new(false);
    thread::scope(|s| {
        let _stop = SetOnDrop(&stop);
        let _applied = SetOnDrop(&applied);
        let sender = s.spawn(|| traffic(inst, &stop));
        thread::sleep(LEAD);
        let before = Before::note(inst);
        let done = &applied;
        let watcher = s.spawn(move || before.watch(done));
        let apply_start = Instant::now();
        let (run, log) = inst.cmd("apply").args(&["-vv"]).run_stamped();
        let apply_end = Instant::now();
        applied.store(true, Ordering::SeqCst);
        inst.settle();
        run.success()
            .stdout_has(&format!("ran postfix -c {} reload", inst.etc.display()));
        thread::sleep(TAIL);
        stop.store(true, Ordering::SeqCst);
        Observed {
            sent: sender.join().unwrap(),
            switch: watcher.join().unwrap(),
            apply_start,
            apply_end,
            log,
        }
    })
}

/// A relay event only a mixed state causes: `MAIL FROM` without AUTH (530: the message
/// bounces) or credentials the relay's entries do not name (535: a password went to
/// the wrong relay).
struct Mixed {
    what: String,
    at: Instant,
}

/// Every mixed-state event the relays saw.
fn mixed_events(relays: &[&FakeRelay], allowed: &BTreeSet<Route>) -> Vec<Mixed> {
    let mut events = Vec::new();
    for r in relays {
        for f in r.refused() {
            events.push(Mixed {
                what: format!("port {}: 530 to MAIL FROM:<{}>", r.port(), f.mail_from),
                at: f.at,
            });
        }
        for a in r.auth_attempts() {
            let route = Route {
                port: r.port(),
                user: a.user,
                password: a.password,
            };
            if !allowed.contains(&route) {
                events.push(Mixed {
                    what: format!(
                        "port {}: AUTH as {} with another entry's password",
                        route.port, route.user
                    ),
                    at: a.at,
                });
            }
        }
    }
    events
}

/// Each message's fate, judged against the old and the new state.
#[derive(Default)]
struct Tally {
    /// The changed domain's messages by the old and by the new route.
    by_old: usize,
    by_new: usize,
    last_old: Option<Instant>,
    first_new: Option<Instant>,
    /// The longest a message submitted while apply ran took to reach its relay.
    slowest: Duration,
    /// Delivered by neither state's route.
    neither: Vec<String>,
    lost: Vec<String>,
    twice: Vec<String>,
    /// Delivered the new way before any map was replaced.
    new_too_early: Vec<String>,
    /// Submitted after the old queue manager exited, delivered the old way.
    old_too_late: Vec<String>,
}

fn tally(obs: &Observed, relays: &[&FakeRelay], old: &State, new: &State) -> Tally {
    let mut delivered: BTreeMap<String, Vec<Accepted>> = BTreeMap::new();
    for m in relays.iter().flat_map(|r| r.messages()) {
        if let Some(id) = m.message_id.clone() {
            delivered.entry(id).or_default().push(m);
        }
    }
    let mut t = Tally::default();
    for s in &obs.sent {
        let got = delivered.get(&s.id).map(Vec::as_slice).unwrap_or_default();
        let [m] = got else {
            let list = if got.is_empty() {
                &mut t.lost
            } else {
                &mut t.twice
            };
            list.push(s.id.clone());
            continue;
        };
        if (obs.apply_start..=obs.apply_end).contains(&s.at) {
            t.slowest = t.slowest.max(m.at.saturating_duration_since(s.at));
        }
        let (was, will) = (old.route(s.domain), new.route(s.domain));
        let route = Route::of(m);
        if route.as_ref() == Some(&was) && was != will {
            t.by_old += 1;
            t.last_old = t.last_old.max(Some(m.at));
            if obs.switch.old_qmgr_gone.is_some_and(|gone| s.at > gone) {
                t.old_too_late.push(s.id.clone());
            }
        } else if route.as_ref() == Some(&will) && was != will {
            t.by_new += 1;
            t.first_new = Some(t.first_new.map_or(m.at, |f| f.min(m.at)));
            if obs
                .switch
                .maps_replaced
                .is_none_or(|replaced| m.at < replaced)
            {
                t.new_too_early.push(s.id.clone());
            }
        } else if route.as_ref() != Some(&was) {
            t.neither.push(format!("{}: {route:?}", s.id));
        }
    }
    t
}

/// `t` relative to `origin`, signed, in milliseconds.
fn since(origin: Instant, t: Option<Instant>) -> String {
    match t {
        None => "never".into(),
        Some(t) if t >= origin => format!("+{} ms", (t - origin).as_millis()),
        Some(t) => format!("-{} ms", (origin - t).as_millis()),
    }
}

/// The reason apply's hold defers with (`src/hold.rs`), as the mail log shows it.
const HELD: &str = "status=deferred (postrelay is switching this sender's relay)";

/// The sender of each message the hold deferred, from the mail log (the queue ID of
/// each deferral, and the queue manager's `from=` line for that ID).
fn held_senders(log: &str) -> Vec<String> {
    // "... postfix/qmgr[PID]: QUEUEID: from=<...>"
    let queue_id = |line: &str| line.split(": ").nth(1).map(str::to_string);
    let mut senders = BTreeMap::new();
    for line in log.lines() {
        if let (Some(id), Some((_, rest))) = (queue_id(line), line.split_once(": from=<")) {
            senders.insert(id, rest.split('>').next().unwrap_or_default().to_string());
        }
    }
    log.lines()
        .filter(|l| l.contains(HELD))
        .map(|l| {
            let id = queue_id(l).unwrap_or_default();
            senders.get(&id).cloned().unwrap_or(format!("? ({id})"))
        })
        .collect()
}

/// What one change under traffic measured, printed as one line.
struct Figures<'a> {
    name: &'a str,
    obs: &'a Observed,
    tally: &'a Tally,
    mixed: &'a [Mixed],
    /// When apply ran each `postfix check` and `postfix reload`.
    checks: Vec<(Instant, Instant)>,
    reloads: Vec<(Instant, Instant)>,
    /// In the mail log: bounces, deferrals, and the deferrals of the hold.
    bounced: usize,
    deferred: usize,
    held: usize,
}

impl std::fmt::Display for Figures<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (o, s, t) = (self.obs, &self.obs.switch, self.tally);
        let at = |t: Option<Instant>| since(o.apply_start, t);
        let spans = |spans: &[(Instant, Instant)]| {
            let shown: Vec<String> = spans
                .iter()
                .map(|(a, b)| format!("{} ({} ms)", at(Some(*a)), (*b - *a).as_millis()))
                .collect();
            shown.join(", ")
        };
        let secs = (o.sent[o.sent.len() - 1].at - o.sent[0].at).as_secs_f64();
        write!(
            f,
            "live {}: {:.1} msg/s for {secs:.1} s, {} sent, {} from {CHANGED}; of the senders whose route changed, {} by the old route, {} by the new; ",
            self.name,
            o.sent.len() as f64 / secs,
            o.sent.len(),
            o.sent.iter().filter(|m| m.domain == CHANGED).count(),
            t.by_old,
            t.by_new,
        )?;
        write!(
            f,
            "apply {} ms, {} submitted while it ran, slowest of them {} ms to its relay; from its start: checks {}, \
             reloads {}, maps replaced {}, old qmgr gone {}, old trivial-rewrite gone {}, last old route {}, first new {}; ",
            (o.apply_end - o.apply_start).as_millis(),
            o.sent
                .iter()
                .filter(|m| (o.apply_start..=o.apply_end).contains(&m.at))
                .count(),
            t.slowest.as_millis(),
            spans(&self.checks),
            spans(&self.reloads),
            at(s.maps_replaced),
            at(s.old_qmgr_gone),
            at(s.old_rewrite_gone),
            at(t.last_old),
            at(t.first_new),
        )?;
        write!(
            f,
            "held {}, other deferrals {}, bounced {}, mixed-state events {}, lost {}, twice {}, neither route {}",
            self.held,
            self.deferred - self.held,
            self.bounced,
            self.mixed.len(),
            t.lost.len(),
            t.twice.len(),
            t.neither.len(),
        )
    }
}

/// Changes the running instance from `old` to `new` while mail flows, prints the
/// figures and checks every claim of the module doc.
fn change_under_traffic(name: &str, relays: &[&FakeRelay], old: &State, new: &State) {
    let mut inst = Instance::new();
    inst.desired(&old.toml());
    inst.apply_ok();
    inst.start();
    let obs = apply_under_traffic(&inst, new);
    settle(&inst, relays, &obs.sent);

    let allowed: BTreeSet<Route> = old.assigned().into_iter().chain(new.assigned()).collect();
    let mixed = mixed_events(relays, &allowed);
    let tally = tally(&obs, relays, old, new);
    let accepted: Vec<Accepted> = relays.iter().flat_map(|r| r.messages()).collect();
    let bounces: Vec<&Accepted> = accepted.iter().filter(|m| m.mail_from.is_empty()).collect();
    let log = inst.maillog();
    let etc = inst.etc.display();
    let figures = Figures {
        name,
        obs: &obs,
        tally: &tally,
        mixed: &mixed,
        checks: command_spans(&obs.log, &format!("postfix -c {etc} check")),
        reloads: command_spans(&obs.log, &format!("postfix -c {etc} reload")),
        bounced: log.matches("status=bounced").count(),
        deferred: log.matches("status=deferred").count(),
        held: log.matches(HELD).count(),
    };
    eprintln!("{figures}");

    let diagnostics = inst.diagnostics();
    let origin = obs.apply_start;
    let events: Vec<String> = mixed
        .iter()
        .map(|e| format!("{} at {}", e.what, since(origin, Some(e.at))))
        .collect();
    assert!(
        events.is_empty(),
        "mixed-state events: {events:#?}\n{diagnostics}"
    );
    assert_eq!(
        (figures.bounced, bounces.len()),
        (0, 0),
        "bounces (in the mail log, at the relays)\n{diagnostics}"
    );
    assert_eq!(
        figures.deferred, figures.held,
        "deferrals other than the hold's\n{diagnostics}"
    );
    // Held: the changed domain's mail alone, and only when its route changes. A
    // wildcard's change names no sender: then everyone's mail is held.
    let held = held_senders(&log);
    assert_eq!(held.len(), figures.held);
    let wildcard = old
        .senders
        .iter()
        .chain(&new.senders)
        .any(|s| s.key.starts_with("*."));
    let others: Vec<&String> = held
        .iter()
        .filter(|s| !s.ends_with(&format!("@{CHANGED}")))
        .collect();
    assert!(
        wildcard || others.is_empty(),
        "held, though not of {CHANGED}: {others:?}"
    );
    if old.route(CHANGED).port == new.route(CHANGED).port {
        assert_eq!(figures.held, 0, "a rotation holds nothing\n{diagnostics}");
    }
    assert!(
        tally.lost.is_empty(),
        "lost: {:?}\n{diagnostics}",
        tally.lost
    );
    assert!(
        tally.neither.is_empty(),
        "delivered by neither state's route: {:#?}",
        tally.neither
    );
    assert!(tally.twice.is_empty(), "delivered twice: {:?}", tally.twice);
    let left = inst.queue();
    assert!(
        left.is_empty(),
        "left in the queue: {left:#?}\n{diagnostics}"
    );
    assert!(
        tally.new_too_early.is_empty(),
        "delivered the new way before any map was replaced: {:?}",
        tally.new_too_early
    );
    assert!(
        tally.old_too_late.is_empty(),
        "submitted after the old queue manager exited, yet routed the old way: {:?}",
        tally.old_too_late
    );
    assert!(
        tally.by_old > 0 && tally.by_new > 0,
        "{CHANGED}: {} by the old route, {} by the new: the change did not happen under traffic",
        tally.by_old,
        tally.by_new
    );
}

/// A password for these tests (a canary: apply's output must never show it).
fn pw(tag: &str) -> String {
    format!("{CANARY}-live-{tag}")
}

/// Each test's relays, refusing mail without AUTH as providers do: the relayhost,
/// kept.test's own relay, and the changed domain's own relay.
struct Relays {
    rh: FakeRelay,
    kept: FakeRelay,
    own: FakeRelay,
    passwords: (String, String),
}

impl Relays {
    /// The changed domain's relay accepts `changed-user` with each of `passwords`.
    fn start(passwords: &[&str]) -> Relays {
        Relays::with_own(passwords, FakeRelay::start)
    }

    /// [`Relays::start`], the changed domain's relay on port 465 of `ip` (TLS from the
    /// first byte), through postrelay's master.cf service.
    fn start_smtps(passwords: &[&str], ip: &str) -> Relays {
        let addr = format!("{ip}:465");
        Relays::with_own(passwords, |config| {
            FakeRelay::start_at(config.implicit_tls(), &addr)
        })
    }

    fn with_own(passwords: &[&str], own: impl FnOnce(RelayConfig) -> FakeRelay) -> Relays {
        let provider =
            |users: &[(&str, &str)]| FakeRelay::start(RelayConfig::users(users).requiring_auth());
        let (p_rh, p_kept) = (pw("rh"), pw("kept"));
        let users: Vec<(&str, &str)> = passwords.iter().map(|p| ("changed-user", *p)).collect();
        Relays {
            rh: provider(&[("rh-user", &p_rh)]),
            kept: provider(&[("kept-user", &p_kept)]),
            own: own(RelayConfig::users(&users).requiring_auth()),
            passwords: (p_rh, p_kept),
        }
    }

    /// The relayhost and kept.test's entry, plus, with a password, the changed
    /// domain's entry on its own relay.
    fn state(&self, changed: Option<&'static str>) -> State<'_> {
        let (p_rh, p_kept) = (&self.passwords.0, &self.passwords.1);
        let mut senders = vec![domain(KEPT, Some(&self.kept), "kept-user", p_kept)];
        senders.extend(changed.map(|p| domain(CHANGED, Some(&self.own), "changed-user", p)));
        State {
            relayhost: (&self.rh, "rh-user", p_rh),
            senders,
        }
    }

    fn all(&self) -> [&FakeRelay; 3] {
        [&self.rh, &self.kept, &self.own]
    }
}

/// The changed domain's passwords, before and after a rotation.
const OLD: &str = CANARY;
const NEW: &str = CANARY2;

/// A domain with its own relay and credentials removed: its mail moves to the relayhost
/// with the relayhost's credentials. The mix the trial saw (old sender_relay, new
/// sasl_passwd: no password for the old relay) bounced 7 messages at 1 msg/s.
#[test]
fn live_removing_a_domain_under_traffic() {
    require!(Need::Live);
    let r = Relays::start(&[OLD]);
    change_under_traffic(
        "remove a domain",
        &r.all(),
        &r.state(Some(OLD)),
        &r.state(None),
    );
}

/// A domain that went through the relayhost gets its own relay and credentials. The
/// mix the trial saw (old sender_relay, new sasl_passwd) sent the domain's password to
/// the relayhost.
#[test]
fn live_adding_a_domain_under_traffic() {
    require!(Need::Live);
    let r = Relays::start(&[OLD]);
    change_under_traffic(
        "add a domain",
        &r.all(),
        &r.state(None),
        &r.state(Some(OLD)),
    );
}

/// A domain that went through the relayhost gets its own relay on port 465: the first
/// relay on 465 of the host, so apply also adds postrelay's master.cf service and the
/// sender_transport map, all switched under the hold.
#[test]
fn live_adding_a_domain_on_port_465_under_traffic() {
    require!(Need::Live);
    let r = Relays::start_smtps(&[OLD], "127.0.0.65");
    change_under_traffic(
        "add a domain on port 465",
        &r.all(),
        &r.state(None),
        &r.state(Some(OLD)),
    );
}

/// A wildcard added under traffic: `*.test` takes changed.test and unlisted.test from
/// the relayhost to its own relay, while kept.test, an exact entry, keeps its relay (a
/// wildcard never shadows a more specific entry, here while the switch happens).
#[test]
fn live_adding_a_wildcard_under_traffic() {
    require!(Need::Live);
    let r = Relays::start(&[OLD]);
    let mut new = r.state(None);
    new.senders
        .push(domain("*.test", Some(&r.own), "changed-user", OLD));
    change_under_traffic("add a wildcard", &r.all(), &r.state(None), &new);
}

/// A password rotated on the same relay, which accepts both while both exist (as a
/// provider does during a rotation).
#[test]
fn live_rotating_a_password_under_traffic() {
    require!(Need::Live);
    let r = Relays::start(&[OLD, NEW]);
    change_under_traffic(
        "rotate a password",
        &r.all(),
        &r.state(Some(OLD)),
        &r.state(Some(NEW)),
    );
}

/// A change of the maps alone is checked before any file is replaced (the check then
/// lies outside the window): killed right after `postfix check`, or with `postfix check`
/// failing, apply has replaced nothing — every file keeps its bytes, inode and mtime,
/// no reload is owed — and the running instance goes on routing the old way. The next
/// apply does it all, check first, and the new route takes over.
#[test]
fn live_map_change_is_checked_before_any_file_is_replaced() {
    require!(Need::Live, Need::DebugBuild);
    let r = Relays::start(&[OLD]);
    let (before, after) = (r.state(None), r.state(Some(OLD)));
    let mut inst = Instance::new();
    inst.desired(&before.toml());
    inst.apply_ok();
    inst.start();
    inst.desired(&after.toml());
    let untouched = |ctx: &str| {
        let mut files = inst.files();
        files.retain(|name, _| !name.contains(TEMP_MARK));
        assert!(
            !files.contains_key(RELOAD_PENDING),
            "{ctx}: a reload is owed"
        );
        files
    };
    let original = untouched("before");

    let killed = inst.cmd("apply").env("POSTRELAY_FAILPOINT", "check").run();
    assert_eq!(killed.signal, Some(9), "not killed after check: {killed:?}");
    assert_eq!(untouched("killed after check"), original);

    let real = api::tool("postfix").unwrap();
    let path = inst.stub(
        "postfix",
        &format!(
            "case \"$3\" in check) echo 'postfix: fatal: injected check failure' >&2; exit 1;; esac\nexec {} \"$@\"",
            real.display()
        ),
    );
    inst.cmd("apply")
        .env(TOOL_DIR_VAR, &path)
        .run()
        .code(2)
        .stderr_has("no file was replaced")
        .stderr_has("injected check failure");
    assert_eq!(untouched("check failed"), original);
    assert!(inst.temporaries().is_empty(), "{:?}", inst.temporaries());
    let relays = r.all();
    let changed = format!("a@{CHANGED}");
    let m = deliver(&inst, &relays, &changed, "x@remote.example");
    assert_eq!(Route::of(&m), Some(before.route(CHANGED)), "{m:#?}");

    let run = inst.apply_ok();
    let etc = inst.etc.display();
    let check = run.stdout.find(&format!("ran postfix -c {etc} check"));
    let map = run.stdout.find(&format!("{etc}/sasl_passwd"));
    assert!(
        check.is_some() && check < map,
        "the check is not reported first:\n{}",
        run.stdout
    );
    run.stdout_has(&format!("ran postfix -c {etc} reload"));
    let m = deliver(&inst, &relays, &changed, "y@remote.example");
    assert_eq!(Route::of(&m), Some(after.route(CHANGED)), "{m:#?}");
}

/// Sends one message from `from` and waits until the mail log shows it deferred by
/// the hold; returns its Message-ID.
fn send_held(inst: &Instance, from: &str) -> String {
    let id = message_id("held");
    let before = inst.maillog().matches(HELD).count();
    inst.send(from, &["held@remote.example"], &id);
    let start = Instant::now();
    while inst.maillog().matches(HELD).count() == before {
        assert!(
            start.elapsed() < WAIT,
            "<{id}> from {from} was not held\n{}",
            inst.diagnostics()
        );
        thread::sleep(Duration::from_millis(50));
    }
    id
}

/// Waits for each of `ids` at the relays; returns the route each took.
fn routes_of(relays: &[&FakeRelay], ids: &[String]) -> Vec<Option<Route>> {
    let start = Instant::now();
    ids.iter()
        .map(|id| {
            loop {
                let found = relays
                    .iter()
                    .find_map(|r| r.wait_for_message(id, Duration::ZERO));
                if let Some(m) = found {
                    break Route::of(&m);
                }
                assert!(start.elapsed() < WAIT, "<{id}> never reached a relay");
                thread::sleep(Duration::from_millis(50));
            }
        })
        .collect()
}

/// A run killed while the hold is listed, before Postfix reloaded (`held`) or after the
/// maps were switched under it (`switched`), leaves the hold to the next run: plan
/// says it removes it and releases the held mail, apply does, the held mail leaves by
/// the new route with nothing bounced, and a further apply changes nothing.
#[test]
fn live_a_run_killed_while_holding_leaves_the_release_to_the_next() {
    require!(Need::Live, Need::DebugBuild);
    let r = Relays::start(&[OLD]);
    let (before, after) = (r.state(Some(OLD)), r.state(None));
    let relays = r.all();
    let changed = format!("a@{CHANGED}");
    for point in ["held", "switched"] {
        let mut inst = Instance::new();
        inst.desired(&before.toml());
        inst.apply_ok();
        inst.start();
        inst.desired(&after.toml());
        let killed = inst.cmd("apply").env("POSTRELAY_FAILPOINT", point).run();
        assert_eq!(killed.signal, Some(9), "{point}: not killed: {killed:?}");
        assert!(inst.path("postrelay_hold").exists(), "{point}: no hold");
        if point == "held" {
            inst.postfix("reload");
        }
        let held = vec![send_held(&inst, &changed), send_held(&inst, &changed)];

        inst.cmd("plan")
            .run()
            .stdout_has("sender_dependent_default_transport_maps")
            .stdout_has(&format!("postqueue -c {} -f", inst.etc.display()));
        inst.apply_ok()
            .stdout_has("released the held mail")
            .stdout_has(&format!("ran postfix -c {} reload", inst.etc.display()));
        assert_eq!(
            routes_of(&relays, &held),
            [Some(after.route(CHANGED)), Some(after.route(CHANGED))],
            "{point}: the held mail"
        );
        assert!(!inst.path("postrelay_hold").exists(), "{point}");
        let files = inst.files();
        inst.apply_ok().stdout_has("no changes");
        assert_eq!(
            inst.files(),
            files,
            "{point}: the next apply changed something"
        );
        let log = inst.maillog();
        assert_eq!(log.matches("status=bounced").count(), 0, "{point}\n{log}");
        assert!(inst.queue().is_empty(), "{point}: {:?}", inst.queue());
        let m = deliver(&inst, &relays, &changed, "x@remote.example");
        assert_eq!(Route::of(&m), Some(after.route(CHANGED)), "{point}");
    }
}

/// When Postfix refuses the switched files (`postfix check` fails once the maps are
/// replaced), apply goes back the way it came: the previous files are restored (bytes,
/// mode, owner), the mail held meanwhile is released and leaves by the old route,
/// nothing bounces, no hold and no reload are left over.
#[test]
fn live_a_refused_switch_goes_back_under_the_hold() {
    require!(Need::Live, Need::DebugBuild);
    let r = Relays::start(&[OLD]);
    let (before, after) = (r.state(Some(OLD)), r.state(None));
    let relays = r.all();
    let changed = format!("a@{CHANGED}");
    let mut inst = Instance::new();
    inst.desired(&before.toml());
    inst.apply_ok();
    inst.start();
    inst.desired(&after.toml());
    let original = inst.files();
    // Fails the check of the switched files: main.cf lists the hold and sasl_passwd
    // no longer names the changed domain.
    let real = api::tool("postfix").unwrap();
    let path = inst.stub(
        "postfix",
        &format!(
            "if [ \"$3\" = check ] && grep -q postrelay_hold \"$2/main.cf\" && ! grep -q {CHANGED} \"$2/sasl_passwd\"; then\n\
             echo 'postfix: fatal: injected check failure' >&2; exit 1; fi\nexec {} \"$@\"",
            real.display()
        ),
    );
    let stop = AtomicBool::new(false);
    let sent = thread::scope(|s| {
        let _stop = SetOnDrop(&stop);
        let traffic = s.spawn(|| traffic(&inst, &stop));
        thread::sleep(LEAD);
        inst.cmd("apply")
            .env(TOOL_DIR_VAR, &path)
            .run()
            .code(2)
            .stderr_has("injected check failure")
            .stderr_has("restored the previous files");
        thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::SeqCst);
        traffic.join().unwrap()
    });
    let now = inst.files();
    for (name, was) in &original {
        let is = &now[name];
        assert_eq!(
            (&is.bytes, is.mode, is.uid, is.gid),
            (&was.bytes, was.mode, was.uid, was.gid),
            "{name} not restored"
        );
    }
    assert_eq!(
        now.keys().collect::<Vec<_>>(),
        original.keys().collect::<Vec<_>>()
    );
    settle(&inst, &relays, &sent);
    let log = inst.maillog();
    // Whether anything was held depends on whether a message was routed in the second
    // or two the hold lasted (daemons pause on a just-written main.cf); not asserted.
    eprintln!(
        "refused switch: {} sent, {} held",
        sent.len(),
        log.matches(HELD).count()
    );
    assert_eq!(log.matches("status=bounced").count(), 0, "{log}");
    let ids: Vec<String> = sent.iter().map(|m| m.id.clone()).collect();
    for (m, route) in sent.iter().zip(routes_of(&relays, &ids)) {
        assert_eq!(route, Some(before.route(m.domain)), "<{}>", m.id);
    }
    assert!(inst.queue().is_empty(), "{:?}", inst.queue());
    inst.apply_ok();
    let m = deliver(&inst, &relays, &changed, "x@remote.example");
    assert_eq!(Route::of(&m), Some(after.route(CHANGED)));
}

/// Without a `retry` service in master.cf nothing can be held: apply says so as a
/// warning and switches with the reload alone, and the new route takes over.
#[test]
fn live_without_a_retry_service_apply_warns_and_switches_unheld() {
    require!(Need::Live);
    let r = Relays::start(&[OLD]);
    let (before, after) = (r.state(Some(OLD)), r.state(None));
    let mut inst = Instance::new();
    inst.desired(&before.toml());
    inst.apply_ok();
    let master_cf = std::fs::read_to_string(inst.path("master.cf")).unwrap();
    let without: String = master_cf
        .lines()
        .filter(|l| !l.starts_with("retry "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(
        without, master_cf,
        "the instance's master.cf has a retry service"
    );
    inst.write_etc("master.cf", without);
    inst.start();
    inst.desired(&after.toml());
    let run = inst.apply_ok();
    run.stderr_has(
        "postrelay: warning: switched without holding mail: master.cf has no retry/unix service",
    )
    .stdout_has("switched without holding mail")
    .stdout_has(&format!("ran postfix -c {} reload", inst.etc.display()));
    assert!(!run.stdout.contains("holding the mail"), "{}", run.stdout);
    assert!(!inst.path("postrelay_hold").exists());
    let m = deliver(&inst, &r.all(), &format!("a@{CHANGED}"), "x@remote.example");
    assert_eq!(Route::of(&m), Some(after.route(CHANGED)));
}
