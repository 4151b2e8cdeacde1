//! Hostile input: random valid desired states must reach Postfix exactly as written;
//! values crafted to inject lines, entries or parameters must either be refused or land
//! byte for byte where Postfix reads them; and hostile files where postrelay reads its
//! input (a symlink owned by another user, a FIFO, a directory, a huge file) must be
//! refused without hanging and without changing anything.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::harness::{
    self, CANARY, CANARY_FILE, DEBIAN_MAIN_CF, Host, NOBODY, Need, api, in_parallel,
    managed_parameters,
};
use crate::require;

// --- shared helpers ------------------------------------------------------------------

/// `s` as a TOML basic string: quotes, backslashes and every control character escaped.
pub fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Sorted `key\tvalue` lines.
fn lines(entries: &BTreeMap<String, String>) -> Vec<String> {
    let mut v: Vec<String> = entries.iter().map(|(k, v)| format!("{k}\t{v}")).collect();
    v.sort();
    v
}

// --- 1. property: random valid desired states ----------------------------------------

#[derive(Debug, Clone)]
struct Creds {
    username: String,
    password: String,
    /// Given through a `password_file` rather than inline.
    from_file: bool,
}

#[derive(Debug, Clone)]
enum Key {
    Domain(String),
    Address(String),
}

#[derive(Debug, Clone)]
struct SenderSpec {
    key: Key,
    relay: Option<String>,
    creds: Option<Creds>,
}

#[derive(Debug, Clone)]
struct State {
    relayhost: Option<(String, Option<Creds>)>,
    senders: Vec<SenderSpec>,
}

/// `[hostN.example]:PORT` or `hostN.example`, sometimes in mixed case (a few hosts and
/// common ports, so relays are shared between entries).
fn relay_strategy() -> impl Strategy<Value = String> {
    (
        0..4u8,
        any::<bool>(),
        any::<bool>(),
        prop_oneof![Just(587u16), Just(25), 1..=65535u16],
    )
        .prop_map(|(n, bracket, upper, port)| {
            let host = if upper {
                format!("Host{n}.EXAMPLE")
            } else {
                format!("host{n}.example")
            };
            if bracket {
                format!("[{host}]:{port}")
            } else {
                host
            }
        })
}

/// Printable ASCII, no leading or trailing space; `:`, `#`, `=`, `"`, `\` and inner
/// spaces all occur.
fn password_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        "[!-~]([ -~]{0,30}[!-~])?",
        "[#:=]{1,3}[ -~]{0,10}[:#=\\\\\"][ -~]{0,10}[!-~]",
    ]
}

fn creds_strategy() -> impl Strategy<Value = Option<Creds>> {
    proptest::option::of(
        ("[!-9;-~]{1,20}", password_strategy(), any::<bool>()).prop_map(
            |(username, password, from_file)| Creds {
                username,
                password,
                from_file,
            },
        ),
    )
}

fn state_strategy() -> impl Strategy<Value = State> {
    let sender = (
        any::<bool>(),
        "[a-zA-Z][a-zA-Z0-9-]{0,10}",
        "[a-zA-Z0-9][a-zA-Z0-9!$%&'*+/=?^_`{|}~.#-]{0,12}",
        proptest::option::of(relay_strategy()),
        relay_strategy(),
        creds_strategy(),
    );
    (
        proptest::option::of((relay_strategy(), creds_strategy())),
        proptest::collection::vec(sender, 1..=6),
    )
        .prop_map(|(relayhost, raw)| {
            let senders = raw
                .into_iter()
                .enumerate()
                .map(|(i, (is_domain, label, local, relay, fallback, creds))| {
                    // The index (one digit, last) keeps keys unique after lowercasing.
                    let key = if is_domain {
                        Key::Domain(format!("{label}{i}.Example"))
                    } else {
                        Key::Address(format!("{local}{i}@{label}{i}.example"))
                    };
                    let relay = if relayhost.is_none() {
                        Some(relay.unwrap_or(fallback))
                    } else {
                        relay
                    };
                    SenderSpec { key, relay, creds }
                })
                .collect();
            State { relayhost, senders }
        })
}

/// The desired-state file for `state`; password files are written under the temp dir.
fn render_state(host: &Host, state: &State) -> String {
    let mut n = 0;
    let mut creds_lines = |c: &Creds| -> String {
        let mut s = format!("username = {}\n", toml_str(&c.username));
        if c.from_file {
            n += 1;
            let p = host.secret_file(&format!("pw-{n}"), format!("{}\n", c.password));
            let _ = writeln!(s, "password_file = {}", toml_str(&p.display().to_string()));
        } else {
            let _ = writeln!(s, "password = {}", toml_str(&c.password));
        }
        s
    };
    let mut out = String::from("[postfix]\nmap_type = \"hash\"\n");
    if let Some((relay, creds)) = &state.relayhost {
        let _ = writeln!(out, "\n[relayhost]\nrelay = {}", toml_str(relay));
        if let Some(c) = creds {
            out.push_str(&creds_lines(c));
        }
    }
    for s in &state.senders {
        out.push_str("\n[[sender]]\n");
        match &s.key {
            Key::Domain(d) => {
                let _ = writeln!(out, "domain = {}", toml_str(d));
            }
            Key::Address(a) => {
                let _ = writeln!(out, "address = {}", toml_str(a));
            }
        }
        if let Some(r) = &s.relay {
            let _ = writeln!(out, "relay = {}", toml_str(r));
        }
        if let Some(c) = &s.creds {
            out.push_str(&creds_lines(c));
        }
    }
    out
}

/// The three maps the state calls for, as sorted `key\tvalue` lines.
fn expected_maps(state: &State) -> [(&'static str, Vec<String>); 3] {
    let mut sasl = BTreeMap::new();
    let mut relays = BTreeMap::new();
    let mut tls = BTreeMap::new();
    let up = |c: &Creds| format!("{}:{}", c.username, c.password);
    if let Some((relay, creds)) = &state.relayhost {
        let relay = relay.to_ascii_lowercase();
        if let Some(c) = creds {
            sasl.insert(relay.clone(), up(c));
        }
        tls.insert(relay, "secure".to_string());
    }
    for s in &state.senders {
        let key = match &s.key {
            Key::Domain(d) => format!("@{}", d.to_ascii_lowercase()),
            Key::Address(a) => a.to_ascii_lowercase(),
        };
        if let Some(c) = &s.creds {
            sasl.insert(key.clone(), up(c));
        }
        if let Some(r) = &s.relay {
            let r = r.to_ascii_lowercase();
            relays.insert(key, r.clone());
            tls.insert(r, "secure".to_string());
        }
    }
    [
        ("sasl_passwd", lines(&sasl)),
        ("sender_relay", lines(&relays)),
        ("tls_policy", lines(&tls)),
    ]
}

fn check_state(state: &State) -> Result<(), TestCaseError> {
    let host = Host::new(DEBIAN_MAIN_CF);
    let text = render_state(&host, state);
    // Verbatim, without `@TMP@` expansion: random passwords may hold anything.
    host.desired_bytes(text.as_bytes());
    let run = host.apply();
    prop_assert_eq!(
        run.code,
        0,
        "apply failed for\n{}\nstderr:\n{}",
        text,
        run.stderr
    );
    // The Debian main.cf has an empty relayhost, left alone without [relayhost].
    let relayhost = state
        .relayhost
        .as_ref()
        .map(|(r, _)| r.to_ascii_lowercase())
        .unwrap_or_default();
    let (names, want): (Vec<&str>, Vec<String>) =
        managed_parameters(&host.etc_canonical(), &relayhost)
            .into_iter()
            .unzip();
    prop_assert_eq!(host.postconf().h(&names), want, "main.cf for\n{}", text);
    for (map, want) in expected_maps(state) {
        prop_assert_eq!(host.dump(map), want, "{} for\n{}", map, text);
    }
    let second = host.apply();
    prop_assert_eq!(
        second.stdout.as_str(),
        "postrelay: no changes\n",
        "second apply for\n{}\nstderr:\n{}",
        text,
        second.stderr
    );
    Ok(())
}

/// The escaper the tests below rely on: any string survives a trip through TOML.
#[test]
fn toml_escaper_round_trips_any_string() {
    let mut runner = TestRunner::new(Config {
        cases: 512,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&any::<String>(), |s| {
            let doc = format!("v = {}\n", toml_str(&s));
            let parsed: BTreeMap<String, String> = toml::from_str(&doc).unwrap();
            prop_assert_eq!(&parsed["v"], &s);
            Ok(())
        })
        .unwrap();
}

/// Random valid desired states (1-6 senders, domain or address keys, random relays and
/// credentials with printable-ASCII passwords, inline or from a file, optional
/// [relayhost]): after apply, what postconf and postmap read is exactly the desired
/// state, and a second apply changes nothing.
#[test]
fn random_valid_states_reach_postfix_exactly() {
    require!(Need::Postfix);
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        max_shrink_iters: 64,
        ..Config::default()
    });
    runner.run(&state_strategy(), |s| check_state(&s)).unwrap();
}

// --- 2. injection ----------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Domain,
    Address,
    Username,
    Password,
    PasswordFile,
    Relay,
}

const FIELDS: [Field; 6] = [
    Field::Domain,
    Field::Address,
    Field::Username,
    Field::Password,
    Field::PasswordFile,
    Field::Relay,
];

impl Field {
    /// The valid value the hostile one is built from.
    fn base(self) -> &'static str {
        match self {
            Field::Domain => "example.com",
            Field::Address => "wes@example.com",
            Field::Username => "user",
            Field::Password | Field::PasswordFile => "pass",
            Field::Relay => "[smtp.example.net]:587",
        }
    }
}

/// `ins` inserted after the first two characters of `base`.
fn inside(base: &str, ins: &str) -> String {
    format!("{}{ins}{}", &base[..2], &base[2..])
}

/// A line that would add a map entry and a main.cf parameter if it got through.
const PAYLOAD: &str = "@evil.example evil:pw";
const PAYLOAD_PARAM: &str = "mynetworks = 0.0.0.0/0";

/// One hostile value: how it is made from a field's valid value, and whether postrelay
/// accepts it, per field in [`FIELDS`] order (by the rules of src/desired.rs).
struct Hostile {
    name: &'static str,
    make: fn(&str) -> String,
    /// domain, address, username, password, password_file content, relay.
    accept: [bool; 6],
}

const A: bool = true;
const R: bool = false;

fn hostile_values() -> Vec<Hostile> {
    vec![
        Hostile {
            name: "LF + injected lines",
            make: |b| format!("{b}\n{PAYLOAD}\n{PAYLOAD_PARAM}"),
            // A password file's password is its first line: the rest is ignored.
            accept: [R, R, R, R, A, R],
        },
        Hostile {
            name: "CR + injected lines",
            make: |b| format!("{b}\r{PAYLOAD}\r{PAYLOAD_PARAM}"),
            accept: [R, R, R, R, R, R],
        },
        Hostile {
            name: "NUL",
            make: |b| format!("{b}\0{PAYLOAD}"),
            accept: [R, R, R, R, R, R],
        },
        Hostile {
            name: "# at start",
            make: |b| format!("#{b}"),
            accept: [R, R, A, A, A, R],
        },
        Hostile {
            name: "# inside",
            make: |b| inside(b, "#"),
            accept: [R, A, A, A, A, R],
        },
        Hostile {
            name: "leading space",
            make: |b| format!(" {b}"),
            accept: [R, R, R, R, R, R],
        },
        Hostile {
            name: "trailing space",
            make: |b| format!("{b} "),
            accept: [R, R, R, R, R, R],
        },
        Hostile {
            name: "= inside",
            make: |b| inside(b, "="),
            accept: [R, A, A, A, A, R],
        },
        Hostile {
            name: ": inside",
            make: |b| inside(b, ":"),
            accept: [R, R, R, A, A, R],
        },
        Hostile {
            name: "tab inside",
            make: |b| inside(b, "\t"),
            accept: [R, R, R, A, A, R],
        },
        Hostile {
            name: "10,000 characters",
            make: |b| inside(b, &"x".repeat(10_000 - b.len())),
            accept: [R, R, A, A, A, R],
        },
        Hostile {
            name: "unicode",
            make: |b| inside(b, "ü✓пароль"),
            accept: [R, R, A, A, A, R],
        },
    ]
}

/// The values of one injection desired state.
struct Injection {
    domain: String,
    address: String,
    username: String,
    /// Inline password, or the bytes of a password file.
    password: Result<String, Vec<u8>>,
    relay: String,
}

impl Injection {
    fn base() -> Injection {
        Injection {
            domain: Field::Domain.base().into(),
            address: Field::Address.base().into(),
            username: Field::Username.base().into(),
            password: Ok(Field::Password.base().into()),
            relay: Field::Relay.base().into(),
        }
    }

    fn with(field: Field, value: String) -> Injection {
        let mut v = Injection::base();
        match field {
            Field::Domain => v.domain = value,
            Field::Address => v.address = value,
            Field::Username => v.username = value,
            Field::Password => v.password = Ok(value),
            Field::PasswordFile => v.password = Err(format!("{value}\n").into_bytes()),
            Field::Relay => v.relay = value,
        }
        v
    }

    /// Writes the desired state (and the password file).
    fn write(&self, host: &Host) {
        let pw_line = match &self.password {
            Ok(p) => format!("password = {}", toml_str(p)),
            Err(bytes) => {
                let p = host.secret_file("pw", bytes);
                format!("password_file = {}", toml_str(&p.display().to_string()))
            }
        };
        let text = format!(
            "[postfix]\nmap_type = \"hash\"\n\n\
             [relayhost]\nrelay = {}\nusername = \"rh-user\"\npassword = \"rh-pass\"\n\n\
             [[sender]]\ndomain = {}\nrelay = \"[smtp.sender.example]:587\"\nusername = {}\n{pw_line}\n\n\
             [[sender]]\naddress = {}\nrelay = \"[smtp.sender.example]:587\"\nusername = \"addr-user\"\npassword = \"addr-pass\"\n",
            toml_str(&self.relay),
            toml_str(&self.domain),
            toml_str(&self.username),
            toml_str(&self.address),
        );
        // Verbatim, without `@TMP@` expansion: hostile values may hold anything.
        host.desired_bytes(text.as_bytes());
    }

    /// The password Postfix must read: inline as written, from a file its first line.
    fn password(&self) -> String {
        match &self.password {
            Ok(p) => p.clone(),
            Err(bytes) => {
                let text = String::from_utf8_lossy(bytes);
                let first = text.split('\n').next().unwrap_or_default();
                first.strip_suffix('\r').unwrap_or(first).to_string()
            }
        }
    }

    /// Every map entry this state calls for.
    fn maps(&self) -> [(&'static str, Vec<String>); 3] {
        let relay = self.relay.to_ascii_lowercase();
        let domain = format!("@{}", self.domain.to_ascii_lowercase());
        let address = self.address.to_ascii_lowercase();
        let sender_relay = "[smtp.sender.example]:587".to_string();
        let map = |pairs: Vec<(String, String)>| lines(&pairs.into_iter().collect());
        [
            (
                "sasl_passwd",
                map(vec![
                    (relay.clone(), "rh-user:rh-pass".into()),
                    (
                        domain.clone(),
                        format!("{}:{}", self.username, self.password()),
                    ),
                    (address.clone(), "addr-user:addr-pass".into()),
                ]),
            ),
            (
                "sender_relay",
                map(vec![
                    (domain, sender_relay.clone()),
                    (address, sender_relay.clone()),
                ]),
            ),
            (
                "tls_policy",
                map(vec![
                    (relay, "secure".into()),
                    (sender_relay, "secure".into()),
                ]),
            ),
        ]
    }

    /// The key the field under test lands in (sasl_passwd), with its intended value.
    fn probe(&self, field: Field) -> (String, String) {
        match field {
            Field::Address => (
                self.address.to_ascii_lowercase(),
                "addr-user:addr-pass".into(),
            ),
            Field::Relay => (self.relay.to_ascii_lowercase(), "rh-user:rh-pass".into()),
            _ => (
                format!("@{}", self.domain.to_ascii_lowercase()),
                format!("{}:{}", self.username, self.password()),
            ),
        }
    }
}

/// Shortens a value for the results table.
fn show(v: &str) -> String {
    let s = format!("{v:?}");
    if s.chars().count() > 40 {
        format!(
            "{}…({} chars)",
            s.chars().take(30).collect::<String>(),
            v.len()
        )
    } else {
        s
    }
}

/// Every field × every hostile value: apply either refuses it (exit 2, a message naming
/// the desired-state file, nothing changed) or Postfix reads exactly the intended value
/// with no extra map entry and no extra main.cf parameter. Each row's outcome must be
/// the one the validation rules call for.
#[test]
fn injected_values_are_refused_or_round_trip_exactly() {
    require!(Need::Postfix);
    // One host in the baseline state; every row starts from it and an accepted row
    // restores it afterwards.
    let host = Host::new(DEBIAN_MAIN_CF);
    let base_names: BTreeSet<String> = host.postconf().n().into_keys().collect();
    let want_names: BTreeSet<String> = base_names
        .iter()
        .cloned()
        .chain(
            managed_parameters(&host.etc, "")
                .into_iter()
                .map(|(n, _)| n.to_string()),
        )
        .collect();
    let baseline = || {
        Injection::base().write(&host);
        host.apply().success();
    };
    baseline();
    let config = host.config.display().to_string();

    let mut table = Vec::new();
    let mut mismatches = Vec::new();
    for hv in hostile_values() {
        for (i, field) in FIELDS.into_iter().enumerate() {
            let value = (hv.make)(field.base());
            let row = format!("{field:?} × {} ({})", hv.name, show(&value));
            let inj = Injection::with(field, value);
            inj.write(&host);
            let before = host.files();
            let run = host.cmd("apply").run();
            host.settle();
            let accepted = match run.code {
                2 => {
                    assert_eq!(run.stdout, "", "{row}: stdout");
                    assert!(
                        run.stderr
                            .starts_with(&format!("postrelay: error: {config}")),
                        "{row}: the message must name the desired-state file:\n{}",
                        run.stderr
                    );
                    assert_eq!(host.files(), before, "{row}: refused, yet files changed");
                    false
                }
                0 => {
                    let (key, want) = inj.probe(field);
                    assert_eq!(
                        host.postmap_q("hash", "sasl_passwd", &key),
                        Some(want),
                        "{row}: postmap -q {key:?}"
                    );
                    for (map, want) in inj.maps() {
                        assert_eq!(host.dump(map), want, "{row}: {map} entries");
                    }
                    let names: BTreeSet<String> = host.postconf().n().into_keys().collect();
                    assert_eq!(names, want_names, "{row}: main.cf parameters");
                    assert_eq!(
                        host.postconf().get("relayhost"),
                        inj.relay.to_ascii_lowercase(),
                        "{row}: relayhost"
                    );
                    baseline();
                    true
                }
                other => panic!("{row}: exit {other}\n{}", run.stderr),
            };
            let verdict = if accepted { "accepted" } else { "rejected" };
            table.push(format!("{verdict}  {row}"));
            if accepted != hv.accept[i] {
                mismatches.push(format!("{row}: {verdict}, expected the opposite"));
            }
        }
    }
    eprintln!("injection results:\n{}", table.join("\n"));
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

// --- 3. hostile files ------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Where {
    DesiredState,
    PasswordFile,
    MapSource,
}

#[derive(Debug, Clone, Copy)]
enum What {
    SymlinkOwnedByNobody,
    /// A root-owned link to a link owned by nobody: every hop must be trusted.
    SymlinkChainThroughNobody,
    Fifo,
    Directory,
    Huge,
}

impl What {
    /// Words one of which the message must hold.
    fn reason(self) -> &'static [&'static str] {
        match self {
            What::SymlinkOwnedByNobody | What::SymlinkChainThroughNobody => {
                &["symlink", "symbolic link", "owned by"]
            }
            What::Fifo => &["FIFO", "not a regular file"],
            What::Directory => &["directory", "not a regular file"],
            What::Huge => &["larger than", "too large", "too big"],
        }
    }
}

/// Replaces the regular file at `path` with the hostile object. `limit` is the size
/// limit a huge file must exceed.
fn make_hostile(host: &Host, path: &Path, what: What, limit: u64) {
    match what {
        What::SymlinkOwnedByNobody => {
            // Same content (and root 0600) behind the link: only its owner is hostile.
            let real = host.tmp.path().join(format!(
                "{}.real",
                path.file_name().unwrap().to_string_lossy()
            ));
            fs::rename(path, &real).unwrap();
            symlink(&real, path).unwrap();
            std::os::unix::fs::lchown(path, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        What::SymlinkChainThroughNobody => {
            make_hostile(host, path, What::SymlinkOwnedByNobody, limit);
            let hop = path.with_extension("hop");
            fs::rename(path, &hop).unwrap();
            symlink(&hop, path).unwrap();
        }
        What::Fifo => {
            fs::remove_file(path).unwrap();
            nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        }
        What::Directory => {
            fs::remove_file(path).unwrap();
            fs::create_dir(path).unwrap();
        }
        What::Huge => {
            // Sparse: the valid content, then zeros up to one byte over the limit.
            let f = fs::OpenOptions::new().write(true).open(path).unwrap();
            f.set_len(limit + 1).unwrap();
        }
    }
}

/// The desired-state file, a password file and the sasl_passwd map source, each as a
/// symlink owned by another user, a FIFO, a directory and a huge file (sparse: over
/// 64 MiB for the desired state, over 10 MiB for the password file, over 11 MiB for
/// the map source): plan and apply exit 2
/// within 10 s with a message naming the file, and change nothing.
#[test]
fn hostile_files_are_refused_without_hanging() {
    require!(Need::Postfix);
    let mut cells = Vec::new();
    for place in [Where::DesiredState, Where::PasswordFile, Where::MapSource] {
        for what in [
            What::SymlinkOwnedByNobody,
            What::SymlinkChainThroughNobody,
            What::Fifo,
            What::Directory,
            What::Huge,
        ] {
            // lchown to nobody needs root.
            let symlink = matches!(
                what,
                What::SymlinkOwnedByNobody | What::SymlinkChainThroughNobody
            );
            if symlink && !harness::require(&[Need::Root]) {
                continue;
            }
            cells.push((place, what));
        }
    }
    // Cells are independent hosts: run them two at a time.
    let results = in_parallel(&cells, 2, |&(place, what)| {
        let name = format!("{place:?} × {what:?}");
        (name, hostile_file_cell(place, what).err())
    });
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(name, e)| e.as_ref().map(|e| format!("{name}: {e}")))
        .collect();
    eprintln!(
        "hostile files: {} cells, {} failed",
        results.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "\n{}", failed.join("\n\n"));
}

/// At most 2,000 characters of `s` (a huge file's diff would be megabytes).
fn clip(s: &str) -> String {
    match s.char_indices().nth(2000) {
        Some((i, _)) => format!("{}\n…({} bytes in all)\n", &s[..i], s.len()),
        None => s.to_string(),
    }
}

/// One cell; `Err(why)` when postrelay did not refuse it as required.
fn hostile_file_cell(place: Where, what: What) -> Result<(), String> {
    let host = Host::new(DEBIAN_MAIN_CF);
    let pw = host.secret_file("pw", format!("{CANARY_FILE}\n"));
    host.desired(&format!(
        "[relayhost]\nrelay = \"[smtp.example.net]:587\"\nusername = \"rh\"\npassword_file = \"@TMP@/pw\"\n\n\
         [[sender]]\ndomain = \"example.com\"\nrelay = \"[smtp.mailgun.org]:587\"\nusername = \"u\"\npassword = \"{CANARY}\"\n"
    ));
    // Configured first, so "nothing changed" covers existing maps too.
    host.apply().success();
    let (path, named, limit) = match place {
        Where::DesiredState => (
            host.config.clone(),
            host.config.clone(),
            api::MAX_DESIRED_SIZE,
        ),
        Where::PasswordFile => (pw.clone(), pw, api::MAX_FILE_SIZE),
        // A map source may exceed 10 MiB by what postrelay itself would write there
        // (src/plan.rs): 1 MiB more is beyond that for this small desired state.
        Where::MapSource => (
            host.path("sasl_passwd"),
            host.etc_canonical().join("sasl_passwd"),
            api::MAX_CONFIG_SIZE + 1024 * 1024,
        ),
    };
    make_hostile(&host, &path, what, limit);
    let before = host.files();
    let mut problems = Vec::new();
    for sub in ["plan", "apply"] {
        let run = host.cmd(sub).run_within(Duration::from_secs(10));
        host.settle();
        let named = named.display().to_string();
        let ok = run.code == 2
            && run.stdout.is_empty()
            && run.stderr.starts_with("postrelay: error: ")
            && run.stderr.contains(&named)
            && what.reason().iter().any(|w| run.stderr.contains(w));
        if !ok {
            problems.push(format!(
                "{sub}: exit {}, want 2 with a message naming {named} and saying one of {:?}\nstdout:\n{}stderr:\n{}",
                run.code,
                what.reason(),
                clip(&run.stdout),
                clip(&run.stderr)
            ));
        }
        if host.files() != before {
            problems.push(format!("{sub}: changed the config dir"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}
