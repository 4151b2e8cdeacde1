//! Parser tests for `postrelay::syntax`: lossless round trips, agreement with what the
//! real `postconf` reads, golden edit cases, and property tests.
//!
//! Golden files live in `fixtures/edits/<fixture stem>.expected`: the bytes
//! `MainCf::set_all(MANAGED)` must produce for `fixtures/maincf/<fixture stem>.cf`.
//! Regenerate them with `UPDATE_GOLDEN=1 cargo test --test it parser::golden`, then
//! review every changed file by eye before committing.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;

use postrelay::syntax::lines::{self, Line};
use postrelay::syntax::maincf::{Edit, MARKER, MainCf, same_value};
use postrelay::syntax::table::{self, Table};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};

use crate::harness::{Host, Need, output_ok};
use crate::require;

/// Debian's full commented main.cf, read at test time (never copied into the repo).
const DIST: &str = "/usr/share/postfix/main.cf.dist";

/// The parameters postrelay manages, with the values of a typical desired state.
const MANAGED: &[(&str, &str)] = &[
    ("smtp_sasl_auth_enable", "yes"),
    ("smtp_sasl_security_options", "noanonymous"),
    ("smtp_sasl_tls_security_options", "noanonymous"),
    ("smtp_sender_dependent_authentication", "yes"),
    ("smtp_sasl_password_maps", "hash:/etc/postfix/sasl_passwd"),
    (
        "sender_dependent_relayhost_maps",
        "hash:/etc/postfix/sender_relay",
    ),
    ("smtp_tls_policy_maps", "hash:/etc/postfix/tls_policy"),
    ("relayhost", "[smtp.mailgun.org]:587"),
];

/// Real Postfix parameters used by the generated documents.
const NAMES: &[&str] = &[
    "relayhost",
    "myhostname",
    "mydomain",
    "myorigin",
    "mydestination",
    "mynetworks",
    "smtp_sasl_auth_enable",
    "smtp_sasl_password_maps",
    "smtp_sasl_security_options",
    "smtp_sasl_tls_security_options",
    "smtp_sender_dependent_authentication",
    "sender_dependent_relayhost_maps",
    "smtp_tls_policy_maps",
    "smtp_tls_security_level",
    "alias_maps",
    "smtpd_banner",
    "recipient_delimiter",
    "transport_maps",
    "relay_domains",
];

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every file in fixtures/maincf, sorted by name, read at test time.
fn fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = root().join("fixtures/maincf");
    let mut out: Vec<(String, Vec<u8>)> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    assert!(out.len() >= 5, "fixtures/maincf looks empty");
    out
}

fn golden_path(fixture: &str) -> PathBuf {
    let stem = fixture.strip_suffix(".cf").unwrap_or(fixture);
    root()
        .join("fixtures/edits")
        .join(format!("{stem}.expected"))
}

fn dist() -> Vec<u8> {
    fs::read(DIST).unwrap_or_else(|e| panic!("{DIST}: {e} (the postfix package ships it)"))
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn set_all(input: &[u8], params: &[(&str, &str)]) -> (Vec<u8>, Vec<Edit>) {
    let mut doc = MainCf::parse(input);
    let edits = doc.set_all(params);
    (doc.render(), edits)
}

/// Every defined name with the value Postfix reads (the last definition).
fn values(doc: &MainCf) -> BTreeMap<String, String> {
    doc.definitions()
        .into_iter()
        .map(|d| (d.name, d.value))
        .collect()
}

/// Names of every built-in Postfix parameter (`postconf -dH`).
fn known_parameters() -> &'static BTreeSet<String> {
    static KNOWN: OnceLock<BTreeSet<String>> = OnceLock::new();
    KNOWN.get_or_init(|| {
        let out = output_ok(&mut Host::raw(b"").postconf().command(&["-d", "-H"]));
        let known: BTreeSet<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        assert!(known.contains("relayhost") && known.len() > 500);
        known
    })
}

/// `MainCf::get` agrees with what postconf reports for the main.cf in `conf`: every
/// name `postconf -n` shows is defined with the same value, and every defined built-in
/// parameter is shown.
fn assert_agrees_with_postconf(label: &str, doc: &MainCf, conf: &Host) {
    let shown = conf.postconf().n();
    for (name, value) in &shown {
        let got = doc.get(name);
        assert!(
            got.as_deref().is_some_and(|g| same_value(g, value)),
            "{label}: postconf reads {name} = {value:?}, MainCf::get gives {got:?}"
        );
    }
    for (name, value) in values(doc) {
        if known_parameters().contains(&name) {
            assert!(
                shown.contains_key(&name),
                "{label}: MainCf defines {name} = {value:?}, postconf -n does not show it"
            );
        }
    }
}

/// Postfix's `split_nameval()`, written independently of src/, for the edit model.
fn nameval(text: &[u8]) -> Option<(&[u8], &[u8])> {
    let sp = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let s = &text[text.iter().position(|b| !sp(b))?..];
    let name_len = s
        .iter()
        .position(|b| sp(b) || *b == b'=')
        .unwrap_or(s.len());
    if name_len == 0 {
        return None;
    }
    let rest = &s[name_len..];
    let rest = rest[rest.iter().position(|b| !sp(b))?..].strip_prefix(b"=")?;
    let v0 = rest.iter().position(|b| !sp(b)).unwrap_or(rest.len());
    let v1 = rest.iter().rposition(|b| !sp(b)).map_or(v0, |i| i + 1);
    Some((&s[..name_len], &rest[v0..v1]))
}

/// What the module doc of `maincf` promises for one physical line.
#[derive(Clone, Debug, PartialEq)]
enum Want {
    Keep,
    /// `#` prepended (an earlier duplicate of a changed parameter).
    Comment,
    /// The start line of the last definition, rewritten to `name = value`.
    Rewrite(String, String),
    /// A continuation line of a rewritten definition.
    Delete,
}

/// Runs `set_all(params)` on `before` and checks the result against an independent model
/// of the rules in `maincf`'s module doc: only the lines of changed parameters are
/// touched (last definition rewritten in place keeping the spelling up to the value and
/// its line ending, its continuations dropped, earlier duplicates commented out with
/// `#`), equal values are left alone, missing ones are appended after a single marker
/// (terminating an unterminated last line first) with the document's line ending; the
/// returned edits say exactly that; the result reads as wanted, other parameters read
/// as before, and a second `set_all` is a no-op. Returns the new bytes.
fn check_set_all(before: &[u8], params: &[(&str, &str)]) -> Result<Vec<u8>, String> {
    let old = MainCf::parse(before);
    let phys = lines::split(before);
    let logical = lines::logical_lines(&phys);
    let defs: Vec<(String, String, &lines::Logical)> = logical
        .iter()
        .filter_map(|l| {
            let text = l.text(&phys);
            let (n, v) = nameval(&text)?;
            Some((lossy(n), lossy(v), l))
        })
        .collect();

    let mut want = vec![Want::Keep; phys.len()];
    let mut added: Vec<(&str, &str)> = Vec::new();
    let mut expected_edits = Vec::new();
    for &(name, value) in params {
        let mine: Vec<_> = defs.iter().filter(|d| d.0 == name).collect();
        match mine.split_last() {
            None => {
                added.push((name, value));
                expected_edits.push(Edit::Added { name: name.into() });
            }
            Some((last, _)) if same_value(&last.1, value) => {}
            Some((last, earlier)) => {
                want[last.2.start] = Want::Rewrite(name.into(), value.into());
                for &c in &last.2.continuations {
                    want[c] = Want::Delete;
                }
                for d in earlier {
                    for i in d.2.line_indices() {
                        want[i] = Want::Comment;
                    }
                }
                expected_edits.push(Edit::Changed {
                    name: name.into(),
                    old: last.1.clone(),
                });
            }
        }
    }

    let (after, edits) = set_all(before, params);
    let show = || format!("before:\n{:?}\nafter:\n{:?}", lossy(before), lossy(&after));
    if edits != expected_edits {
        return Err(format!(
            "edits {edits:?}, expected {expected_edits:?}\n{}",
            show()
        ));
    }
    if edits.is_empty() && after != before {
        return Err(format!("no edits reported but bytes changed\n{}", show()));
    }

    // Walk the output line by line against the model.
    let eol = lines::dominant_ending(&phys);
    let out = lines::split(&after);
    let kept: Vec<(&Line, &Want)> = phys
        .iter()
        .zip(&want)
        .filter(|(_, w)| **w != Want::Delete)
        .collect();
    let appending = !added.is_empty();
    let mut o = 0;
    for (k, (line, w)) in kept.iter().enumerate() {
        let Some(got) = out.get(o) else {
            return Err(format!("output too short at line {}\n{}", o + 1, show()));
        };
        o += 1;
        // The last line gets a terminator when something is appended after it.
        let ending: &[u8] = if appending && k == kept.len() - 1 && line.ending().is_empty() {
            eol
        } else {
            line.ending()
        };
        let body = line.raw.strip_suffix(line.ending()).unwrap();
        let ok = match w {
            Want::Keep => got.raw == [body, ending].concat(),
            Want::Comment => got.raw == [b"#", body, ending].concat(),
            Want::Rewrite(name, value) => {
                let content = got.raw.strip_suffix(ending).unwrap_or(&[]);
                let spelling_kept = match body.iter().position(|&b| b == b'=') {
                    Some(eq) => content.starts_with(&body[..=eq]),
                    None => content.starts_with(name.as_bytes()),
                };
                got.raw.ends_with(ending)
                    && spelling_kept
                    && nameval(content) == Some((name.as_bytes(), value.as_bytes()))
            }
            Want::Delete => unreachable!(),
        };
        if !ok {
            return Err(format!(
                "line {o}: want {w:?} of {:?}, got {:?}\n{}",
                lossy(&line.raw),
                lossy(&got.raw),
                show()
            ));
        }
    }
    let mut tail: Vec<Vec<u8>> = Vec::new();
    if appending {
        let has_marker = phys.iter().any(|l| {
            l.kind == lines::Kind::Comment && lines::trim(l.content()) == MARKER.as_bytes()
        });
        if !has_marker {
            tail.push([MARKER.as_bytes(), eol].concat());
        }
        for (name, value) in &added {
            tail.push([format!("{name} = {value}").as_bytes(), eol].concat());
        }
    }
    let rest: Vec<Vec<u8>> = out[o..].iter().map(|l| l.raw.clone()).collect();
    if rest != tail {
        return Err(format!(
            "appended lines {:?}, expected {:?}\n{}",
            rest.iter().map(|l| lossy(l)).collect::<Vec<_>>(),
            tail.iter().map(|l| lossy(l)).collect::<Vec<_>>(),
            show()
        ));
    }
    if after
        .windows(MARKER.len())
        .filter(|w| *w == MARKER.as_bytes())
        .count()
        > 1
    {
        return Err(format!("more than one marker\n{}", show()));
    }

    // Meaning: wanted values read back exactly, everything else as before.
    let new = MainCf::parse(&after);
    if new.errors().len() != old.errors().len() {
        return Err(format!("errors changed: {:?}\n{}", new.errors(), show()));
    }
    let mut old_values = values(&old);
    let mut new_values = values(&new);
    for &(name, value) in params {
        let got = new_values.remove(name);
        let before_value = old_values.remove(name);
        let untouched = before_value
            .as_deref()
            .is_some_and(|b| same_value(b, value));
        let ok = if untouched {
            got == before_value
        } else {
            got.as_deref() == Some(value)
        };
        if !ok {
            return Err(format!("{name} reads {got:?}, want {value:?}\n{}", show()));
        }
    }
    if old_values != new_values {
        return Err(format!(
            "other parameters changed: {old_values:?} -> {new_values:?}\n{}",
            show()
        ));
    }

    // Idempotence.
    let (again, edits) = set_all(&after, params);
    if !edits.is_empty() || again != after {
        return Err(format!(
            "second set_all not a no-op: {edits:?}\n{}\nagain:\n{:?}",
            show(),
            lossy(&again)
        ));
    }
    Ok(after)
}

/// Writes `before`, then the result of `set_all(params)`, and asks postconf: every wanted
/// value reads back, every other parameter reads as before.
fn check_set_all_with_postconf(label: &str, before: &[u8], params: &[(&str, &str)]) {
    let conf = Host::raw(before);
    let doc = MainCf::parse(before);
    assert!(doc.errors().is_empty(), "{label}: {:?}", doc.errors());
    assert_agrees_with_postconf(label, &doc, &conf);
    let shown_before = conf.postconf().n();
    let (after, _) = set_all(before, params);
    conf.write_etc("main.cf", &after);
    let names: Vec<&str> = params.iter().map(|p| p.0).collect();
    for (got, (name, want)) in conf.postconf().h(&names).iter().zip(params) {
        assert!(
            same_value(got, want),
            "{label}: postconf -h {name} reads {got:?} after set_all, want {want:?}\n{}",
            lossy(&after)
        );
    }
    let mut shown_after = conf.postconf().n();
    let mut shown_before = shown_before;
    for name in &names {
        shown_after.remove(*name);
        shown_before.remove(*name);
    }
    assert_eq!(
        shown_before,
        shown_after,
        "{label}: other parameters changed\n{}",
        lossy(&after)
    );
    assert_agrees_with_postconf(label, &MainCf::parse(&after), &conf);
}

fn unified_diff(want: &[u8], got: &[u8]) -> String {
    let (want, got) = (lossy(want), lossy(got));
    similar::TextDiff::from_lines(&want, &got)
        .unified_diff()
        .header("golden", "set_all")
        .to_string()
}

// ---------------------------------------------------------------------------------------
// 1. Round trips
// ---------------------------------------------------------------------------------------

#[test]
fn fixtures_round_trip_byte_for_byte() {
    for (name, bytes) in fixtures() {
        assert_eq!(MainCf::parse(&bytes).render(), bytes, "MainCf: {name}");
        assert_eq!(Table::parse(&bytes).render(), bytes, "Table: {name}");
        // Every fixture is a file Postfix accepts (bad input has its own tests).
        assert!(
            MainCf::parse(&bytes).errors().is_empty(),
            "{name}: {:?}",
            MainCf::parse(&bytes).errors()
        );
    }
}

#[test]
fn main_cf_dist_round_trips_and_reads_like_postconf() {
    require!(Need::Postfix);
    let bytes = dist();
    assert_eq!(MainCf::parse(&bytes).render(), bytes, "MainCf round trip");
    assert_eq!(Table::parse(&bytes).render(), bytes, "Table round trip");
    let doc = MainCf::parse(&bytes);
    assert!(doc.errors().is_empty(), "{:?}", doc.errors());
    // Commented-out examples are not definitions.
    assert!(lossy(&bytes).contains("\n#myhostname = "));
    assert_eq!(doc.get("myhostname"), None);
    assert_eq!(doc.get("relayhost"), None);
    // debugger_command's value is on indented lines below the `=`.
    let debugger = doc.get("debugger_command").expect("debugger_command");
    assert!(
        debugger.starts_with("PATH=/bin") && debugger.contains("ddd $daemon_directory"),
        "{debugger:?}"
    );

    let conf = Host::raw(&bytes);
    assert_agrees_with_postconf("main.cf.dist", &doc, &conf);
    // A handful through `postconf -h`, only those the file defines.
    let shown = conf.postconf().n();
    let names: Vec<&str> = [
        "compatibility_level",
        "mynetworks",
        "smtpd_banner",
        "debugger_command",
        "inet_protocols",
        "sendmail_path",
        "data_directory",
    ]
    .into_iter()
    .filter(|n| shown.contains_key(*n))
    .collect();
    assert!(
        names.len() >= 4,
        "main.cf.dist defines too little: {shown:?}"
    );
    for (got, name) in conf.postconf().h(&names).iter().zip(&names) {
        let mine = doc.get(name).unwrap();
        assert!(
            same_value(got, &mine),
            "{name}: postconf {got:?}, get {mine:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 2. MainCf::get agrees with postconf -n
// ---------------------------------------------------------------------------------------

#[test]
fn get_agrees_with_postconf_on_every_fixture_and_main_cf_dist() {
    require!(Need::Postfix);
    let mut all = fixtures();
    all.push(("main.cf.dist".into(), dist()));
    for (name, bytes) in all {
        let doc = MainCf::parse(&bytes);
        let conf = Host::raw(&bytes);
        assert_agrees_with_postconf(&name, &doc, &conf);
    }
}

// ---------------------------------------------------------------------------------------
// 3. Golden edit cases
// ---------------------------------------------------------------------------------------

#[test]
fn golden_edits_of_every_fixture() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for (name, input) in fixtures() {
        let out = check_set_all(&input, MANAGED).unwrap_or_else(|e| panic!("{name}: {e}"));
        let path = golden_path(&name);
        if update {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, &out).unwrap();
            continue;
        }
        match fs::read(&path) {
            Ok(want) if want == out => {}
            Ok(want) => failures.push(format!(
                "{name}: differs from {}:\n{}",
                path.display(),
                unified_diff(&want, &out)
            )),
            Err(e) => failures.push(format!(
                "{name}: {}: {e}; generate it with UPDATE_GOLDEN=1 cargo test --test it parser::golden and review it",
                path.display()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn golden_edits_read_as_wanted_by_postconf() {
    require!(Need::Postfix);
    let mut all = fixtures();
    all.push(("main.cf.dist".into(), dist()));
    for (name, input) in all {
        check_set_all_with_postconf(&name, &input, MANAGED);
    }
}

/// Every golden file belongs to a fixture (none left behind by a rename).
#[test]
fn golden_files_have_fixtures() {
    let names: BTreeSet<PathBuf> = fixtures().iter().map(|(n, _)| golden_path(n)).collect();
    let dir = root().join("fixtures/edits");
    let Ok(entries) = fs::read_dir(&dir) else {
        return; // reported by golden_edits_of_every_fixture
    };
    for e in entries {
        let p = e.unwrap().path();
        assert!(names.contains(&p), "{} has no fixture", p.display());
    }
}

// ---------------------------------------------------------------------------------------
// 5. Targeted edge cases
// ---------------------------------------------------------------------------------------

const EDGE_PARAMS: &[(&str, &str)] = &[
    ("relayhost", "[smtp.mailgun.org]:587"),
    ("smtp_sasl_auth_enable", "yes"),
];

/// (label, input, exact output of set_all(EDGE_PARAMS)); `@M@` stands for the marker.
const EDGE_CASES: &[(&str, &str, &str)] = &[
    (
        "empty file",
        "",
        "@M@\nrelayhost = [smtp.mailgun.org]:587\nsmtp_sasl_auth_enable = yes\n",
    ),
    (
        "only comments",
        "# one\n  # two\n\n#relayhost = [commented.example]:25\n",
        "# one\n  # two\n\n#relayhost = [commented.example]:25\n@M@\nrelayhost = [smtp.mailgun.org]:587\nsmtp_sasl_auth_enable = yes\n",
    ),
    (
        "last line a comment without newline",
        "myhostname = h.example\n# last comment",
        "myhostname = h.example\n# last comment\n@M@\nrelayhost = [smtp.mailgun.org]:587\nsmtp_sasl_auth_enable = yes\n",
    ),
    (
        "last line a CRLF comment without newline",
        "myhostname = h.example\r\n# last comment",
        "myhostname = h.example\r\n# last comment\r\n@M@\r\nrelayhost = [smtp.mailgun.org]:587\r\nsmtp_sasl_auth_enable = yes\r\n",
    ),
    (
        "last line whitespace only without newline",
        "myhostname = h.example\n \t",
        "myhostname = h.example\n \t\n@M@\nrelayhost = [smtp.mailgun.org]:587\nsmtp_sasl_auth_enable = yes\n",
    ),
    (
        "last line a definition without newline",
        "relayhost = [old.example]:25",
        "relayhost = [smtp.mailgun.org]:587\n@M@\nsmtp_sasl_auth_enable = yes\n",
    ),
    (
        "= on a continuation line",
        "relayhost\n    = [old.example]:25\nsmtp_sasl_auth_enable\n\t= yes\n",
        "relayhost = [smtp.mailgun.org]:587\nsmtp_sasl_auth_enable\n\t= yes\n",
    ),
    (
        "value only on a continuation line",
        "relayhost =\n# note\n    [old.example]:25\nmyhostname = h.example\n",
        "relayhost = [smtp.mailgun.org]:587\n# note\nmyhostname = h.example\n@M@\nsmtp_sasl_auth_enable = yes\n",
    ),
    (
        "orphan indented first line",
        "  relayhost = [orphan.example]:25\n    more orphan text\nmyhostname = h.example\n",
        "  relayhost = [orphan.example]:25\n    more orphan text\nmyhostname = h.example\n@M@\nrelayhost = [smtp.mailgun.org]:587\nsmtp_sasl_auth_enable = yes\n",
    ),
    (
        "accidentally indented parameter",
        "mynetworks = 127.0.0.0/8\n  relayhost = [x.example]:25\n",
        "mynetworks = 127.0.0.0/8\n  relayhost = [x.example]:25\n@M@\nrelayhost = [smtp.mailgun.org]:587\nsmtp_sasl_auth_enable = yes\n",
    ),
    (
        "trailing # text is part of the value",
        "relayhost = [smtp.mailgun.org]:587 # mailgun\nsmtp_sasl_auth_enable = yes\n",
        "relayhost = [smtp.mailgun.org]:587\nsmtp_sasl_auth_enable = yes\n",
    ),
    (
        "equal value over several lines is untouched",
        "relayhost =\n   [smtp.mailgun.org]:587   \nsmtp_sasl_auth_enable=\tyes\n",
        "relayhost =\n   [smtp.mailgun.org]:587   \nsmtp_sasl_auth_enable=\tyes\n",
    ),
    (
        "earlier duplicate of an equal last value is untouched",
        "relayhost = [a.example]:25\nrelayhost = [smtp.mailgun.org]:587\nsmtp_sasl_auth_enable = yes\n",
        "relayhost = [a.example]:25\nrelayhost = [smtp.mailgun.org]:587\nsmtp_sasl_auth_enable = yes\n",
    ),
    (
        "earlier duplicates are commented out",
        "relayhost = [a.example]:25\n\t[b.example]:25\nsmtp_sasl_auth_enable = no\nrelayhost=[c.example]:25\n",
        "#relayhost = [a.example]:25\n#\t[b.example]:25\nsmtp_sasl_auth_enable = yes\nrelayhost=[smtp.mailgun.org]:587\n",
    ),
    (
        "commented-out definition is not reused",
        "#relayhost = [old.example]:25\nsmtp_sasl_auth_enable = yes\n",
        "#relayhost = [old.example]:25\nsmtp_sasl_auth_enable = yes\n@M@\nrelayhost = [smtp.mailgun.org]:587\n",
    ),
    (
        "marker already present",
        "@M@\nsmtp_sasl_auth_enable = yes\nmyhostname = h.example\n",
        "@M@\nsmtp_sasl_auth_enable = yes\nmyhostname = h.example\nrelayhost = [smtp.mailgun.org]:587\n",
    ),
    (
        "tabs around = are kept",
        "relayhost\t=\t[old.example]:25\t\nsmtp_sasl_auth_enable=no\n",
        "relayhost\t=\t[smtp.mailgun.org]:587\nsmtp_sasl_auth_enable=yes\n",
    ),
];

#[test]
fn edge_cases_edit_exactly_as_specified() {
    for (label, input, want) in EDGE_CASES {
        let input = input.replace("@M@", MARKER);
        let want = want.replace("@M@", MARKER);
        assert_eq!(
            MainCf::parse(input.as_bytes()).render(),
            input.as_bytes(),
            "{label}"
        );
        let out =
            check_set_all(input.as_bytes(), EDGE_PARAMS).unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(lossy(&out), want, "{label}");
    }
}

#[test]
fn edge_cases_read_as_wanted_by_postconf() {
    require!(Need::Postfix);
    for (label, input, _) in EDGE_CASES {
        let input = input.replace("@M@", MARKER);
        check_set_all_with_postconf(label, input.as_bytes(), EDGE_PARAMS);
    }
}

/// What postconf reads from the edge cases before any edit, spelled out.
#[test]
fn edge_cases_read_like_postconf() {
    let cases: &[(&str, Option<&str>)] = &[
        ("", None),
        ("# only\n  # comments\n\n", None),
        ("relayhost = [a]:25\n# last comment", Some("[a]:25")),
        ("relayhost\n    = [a]:25\n", Some("[a]:25")),
        (
            "relayhost =\n\n# c\n\t[a]:25\n  [b]:25\n",
            Some("[a]:25  [b]:25"),
        ),
        ("  relayhost = [orphan]:25\nmyhostname = h\n", None),
        ("  x = 1\n  relayhost = [orphan]:25\nmyhostname = h\n", None),
        ("mynetworks = 127.0.0.0/8\n  relayhost = [x]:25\n", None),
        ("\x0brelayhost = [vt]:25\nmyhostname = h\n", None),
        ("relayhost = [a]:25 # note\n", Some("[a]:25 # note")),
        ("relayhost=[a]:25\r\n", Some("[a]:25")),
        ("relayhost = [a]:25\nrelayhost = [b]:25\n", Some("[b]:25")),
        ("relayhost =", Some("")),
        ("relayhost = a=b", Some("a=b")),
        // Vertical tab and form feed are C whitespace: trimmed, and they continue lines.
        ("relayhost =\x0c[a]:25\x0b\n", Some("[a]:25")),
        ("relayhost = [a]:25\n\x0b[b]:25\n", Some("[a]:25\x0b[b]:25")),
    ];
    for (input, want) in cases {
        let doc = MainCf::parse(input.as_bytes());
        assert!(doc.errors().is_empty(), "{input:?}: {:?}", doc.errors());
        assert_eq!(doc.get("relayhost").as_deref(), *want, "{input:?}");
    }
    require!(Need::Postfix);
    for (input, _) in cases {
        let conf = Host::raw(input.as_bytes());
        assert_agrees_with_postconf(
            &format!("{input:?}"),
            &MainCf::parse(input.as_bytes()),
            &conf,
        );
    }
}

/// `errors()` names exactly the lines postconf dies on, and nothing postconf accepts.
#[test]
fn errors_match_postconf_fatal_lines() {
    let cases: &[(&str, Option<usize>)] = &[
        ("relayhost = [a]:587\n= value\n", Some(2)),
        ("justaword\n", Some(1)),
        ("relayhost = x\nfoo\n  bar\n\n  baz\n", Some(2)),
        ("relayhost\n\n# c\n  \n", Some(1)),
        ("relayhost = x\nfoo bar = x\n", Some(2)),
        ("relayhost = x\nname_only", Some(2)),
        ("# c\n  orphan without equals\nrelayhost = x\n", None),
        ("relayhost\n  = x\n", None),
        ("relayhost = x\n  continued without equals\n", None),
    ];
    for (input, line) in cases {
        let errors = MainCf::parse(input.as_bytes()).errors();
        assert_eq!(
            errors.first().map(|e| e.line),
            *line,
            "{input:?}: {errors:?}"
        );
    }
    require!(Need::Postfix);
    // postconf sleeps 1 s before a fatal exit: run all cases at once.
    let runs: Vec<(Host, std::process::Child)> = cases
        .iter()
        .map(|(input, _)| {
            let conf = Host::raw(input.as_bytes());
            let child = conf
                .postconf()
                .command(&["-n"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (conf, child)
        })
        .collect();
    for ((input, line), (_conf, child)) in cases.iter().zip(runs) {
        let out = child.wait_with_output().unwrap();
        let stderr = lossy(&out.stderr);
        match line {
            Some(n) => {
                assert!(!out.status.success(), "{input:?}: postconf accepted it");
                assert!(
                    stderr.contains(&format!("main.cf, line {n}: ")),
                    "{input:?}: {stderr}"
                );
            }
            None => assert!(out.status.success(), "{input:?}: {stderr}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// 4. Property tests
// ---------------------------------------------------------------------------------------

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Never write proptest-regressions/ files into the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Bytes biased towards the ones the line grammar cares about.
fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            2 => any::<u8>(),
            3 => prop::sample::select(b" \t\r\n#=ax\x0b\x0c\0".to_vec()),
        ],
        0..400,
    )
}

fn name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(NAMES)
}

/// A value for set_all: 1-3 words of [a-z0-9.:/\[\]-].
fn set_value() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z0-9.:/\\[\\]-]{1,10}", 1..=3).prop_map(|w| w.join(" "))
}

/// Words of values inside generated documents (`#`, `=` and `,` are data there).
fn doc_words(min: usize) -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z0-9.:/\\[\\]=,#-]{1,10}", min..=3).prop_map(|w| w.join(" "))
}

fn gap() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&["", " ", "  ", "\t", " \t"][..])
}

fn indent() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&[" ", "  ", "    ", "\t", " \t", "\t "][..])
}

/// One item of a main.cf-like document: its physical lines, without terminators.
fn item(garbage: bool) -> BoxedStrategy<Vec<String>> {
    let def = (name(), gap(), gap(), doc_words(0), gap())
        .prop_map(|(n, a, b, v, t)| vec![format!("{n}{a}={b}{v}{t}")]);
    let eq_below = (name(), gap(), indent(), gap(), doc_words(1))
        .prop_map(|(n, a, i, b, v)| vec![format!("{n}{a}"), format!("{i}={b}{v}")]);
    let value_below = (name(), gap(), indent(), doc_words(1))
        .prop_map(|(n, a, i, v)| vec![format!("{n}{a}="), format!("{i}{v}")]);
    let continuation = (indent(), doc_words(1)).prop_map(|(i, v)| vec![format!("{i}{v}")]);
    let comment = ("[ \t]{0,3}", "[ -~]{0,20}").prop_map(|(i, t)| vec![format!("{i}#{t}")]);
    let blank = "[ \t]{0,3}".prop_map(|s| vec![s]);
    let valid = prop_oneof![
        5 => def,
        1 => eq_below,
        1 => value_below,
        3 => continuation,
        2 => comment,
        2 => blank,
    ];
    if garbage {
        let bad =
            prop::sample::select(&["justaword", "= value", "foo bar = x", "=", "x\x0b= 1"][..])
                .prop_map(|s| vec![s.to_string()]);
        prop_oneof![9 => valid, 1 => bad].boxed()
    } else {
        valid.boxed()
    }
}

/// A main.cf-like document: `\n` or `\r\n` endings (mixed per item when `mixed`), and
/// possibly no final newline.
fn document(garbage: bool, mixed: bool) -> impl Strategy<Value = String> {
    let ending = || prop::sample::select(&["\n", "\r\n"][..]);
    (
        prop::collection::vec((item(garbage), ending()), 0..20),
        ending(),
        any::<bool>(),
    )
        .prop_map(move |(items, doc_ending, final_newline)| {
            let mut out = String::new();
            for (lines, item_ending) in items {
                let eol = if mixed { item_ending } else { doc_ending };
                for l in lines {
                    out.push_str(&l);
                    out.push_str(eol);
                }
            }
            if !final_newline {
                for eol in ["\r\n", "\n"] {
                    if let Some(s) = out.strip_suffix(eol) {
                        out.truncate(s.len());
                        break;
                    }
                }
            }
            out
        })
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn prop_maincf_round_trips_arbitrary_bytes(input in bytes()) {
        let doc = MainCf::parse(&input);
        prop_assert_eq!(doc.render(), input.clone());
        // Queries never panic; the line numbers they give are real lines.
        let lines = input.split_inclusive(|&b| b == b'\n').count();
        for d in doc.definitions() {
            prop_assert!(d.line >= 1 && d.line <= lines);
        }
        for e in doc.errors() {
            prop_assert!(e.line >= 1 && e.line <= lines);
        }
        let _ = doc.get("relayhost");
    }

    #[test]
    fn prop_set_all_on_arbitrary_bytes_reads_back_and_is_idempotent(input in bytes(), value in set_value()) {
        let mut doc = MainCf::parse(&input);
        let errors = doc.errors().len();
        doc.set_all(&[("relayhost", &value)]);
        let got = doc.get("relayhost");
        prop_assert!(got.as_deref().is_some_and(|g| same_value(g, &value)), "{:?}", got);
        prop_assert_eq!(doc.errors().len(), errors);
        let once = doc.render();
        prop_assert!(doc.set_all(&[("relayhost", &value)]).is_empty());
        prop_assert_eq!(doc.render(), once);
    }

    #[test]
    fn prop_maincf_round_trips_generated_documents(input in document(true, true)) {
        prop_assert_eq!(MainCf::parse(input.as_bytes()).render(), input.as_bytes().to_vec());
        prop_assert_eq!(Table::parse(input.as_bytes()).render(), input.as_bytes().to_vec());
    }

    #[test]
    fn prop_table_round_trips_arbitrary_bytes(input in bytes()) {
        let t = Table::parse(&input);
        prop_assert_eq!(t.render(), input.clone());
        let starts = t.lines().iter().filter(|l| l.kind == lines::Kind::Start).count();
        let entries = t.entries();
        prop_assert_eq!(entries.len(), starts);
        for e in entries {
            // A NUL byte ends the logical line (C strings), so a key may be cut to nothing.
            prop_assert!(!e.key.contains(&0) && !e.value.contains(&0));
            prop_assert!(e.key.first().is_none_or(|&b| !lines::is_space(b)));
            prop_assert_eq!(lines::trim(&e.value), &e.value[..]);
        }
    }

    #[test]
    fn prop_table_render_parses_back(
        map in prop::collection::btree_map("[a-z0-9@.\\[\\]:_-]{1,12}", "[ -~]{0,20}[!-~]", 0..12)
    ) {
        let pairs: Vec<(String, String)> = map.iter().map(|(k, v)| (k.clone(), v.trim().to_string())).collect();
        let bytes = table::render(&pairs);
        let t = Table::parse(&bytes);
        prop_assert_eq!(t.render(), bytes.clone());
        prop_assert!(table::is_header(&t.lines()[0]));
        let got: Vec<(String, String)> = t.entries().into_iter()
            .map(|e| (lossy(&e.key), lossy(&e.value))).collect();
        prop_assert_eq!(got, pairs);
    }

    #[test]
    fn prop_set_all_follows_the_edit_rules_and_is_idempotent(
        input in document(true, false),
        params in prop::collection::btree_map(name(), set_value(), 1..5),
    ) {
        let params: Vec<(&str, &str)> = params.iter().map(|(n, v)| (*n, v.as_str())).collect();
        check_set_all(input.as_bytes(), &params).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn prop_set_all_with_equal_values_changes_nothing(input in document(true, true)) {
        // Asking for what the document already says is never an edit, even when the
        // document spreads a value over several lines or spaces it differently.
        let doc = MainCf::parse(input.as_bytes());
        let current: Vec<(String, String)> = values(&doc)
            .into_iter()
            .map(|(n, v)| (n, v.split_ascii_whitespace().collect::<Vec<_>>().join(" ")))
            .collect();
        let params: Vec<(&str, &str)> = current.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let (out, edits) = set_all(input.as_bytes(), &params);
        prop_assert!(edits.is_empty(), "{:?}", edits);
        prop_assert_eq!(out, input.as_bytes().to_vec());
    }
}

/// After `set_all([(name, v)])` on a valid generated document, postconf reads `v`, and
/// every other parameter reads as before. Also checks `get` against postconf on the
/// generated documents themselves. Each case runs postconf three times.
#[test]
fn prop_set_all_is_what_postconf_reads() {
    require!(Need::Postfix);
    let conf = Host::raw(b"");
    let mut runner = TestRunner::new(config(48));
    let result = runner.run(
        &(document(false, false), name(), set_value()),
        |(input, name, value)| {
            let mut doc = MainCf::parse(input.as_bytes());
            prop_assume!(doc.errors().is_empty());
            conf.write_etc("main.cf", input.as_bytes());
            assert_agrees_with_postconf("generated document", &doc, &conf);
            let mut before = conf.postconf().n();

            doc.set_all(&[(name, &value)]);
            let after_bytes = doc.render();
            conf.write_etc("main.cf", &after_bytes);
            let got = conf.postconf().h(&[name]).remove(0);
            prop_assert!(
                same_value(&got, &value),
                "postconf -h {} = {:?}, want {:?}\n{:?}",
                name,
                got,
                value,
                lossy(&after_bytes)
            );
            let mut after = conf.postconf().n();
            before.remove(name);
            after.remove(name);
            prop_assert_eq!(before, after, "{:?}", lossy(&after_bytes));
            Ok(())
        },
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------------------
// Two past bugs of src/syntax, kept as regression tests
// ---------------------------------------------------------------------------------------

/// Postfix parses each logical line as a C string, so a NUL byte ends it: `errors()`
/// names the lines Postfix dies on, and `get` returns only the text Postfix sees.
/// postconf on these inputs:
///   "relayhost\0x = 1\n"          -> fatal: line 1: missing '=' after attribute name: "relayhost"
///   "relayhost = x\n\0\n"          -> fatal: line 2: missing attribute name: ""
///   "relayhost = [a]:25\0junk\n"   -> relayhost = [a]:25
#[test]
fn a_nul_byte_ends_a_logical_line_as_for_postfix() {
    let errors = MainCf::parse(b"relayhost\0x = 1\n").errors();
    assert_eq!(errors.first().map(|e| e.line), Some(1), "{errors:?}");
    let errors = MainCf::parse(b"relayhost = x\n\0\n").errors();
    assert_eq!(errors.first().map(|e| e.line), Some(2), "{errors:?}");
    let doc = MainCf::parse(b"relayhost = [a]:25\0junk\n");
    assert_eq!(doc.get("relayhost").as_deref(), Some("[a]:25"));
}

/// Postfix splits lists on ", \t\r\n" only (`CHARS_COMMA_SP`) and postconf displays
/// `\v`/`\f` verbatim, so `same_value` does not take vertical tab or form feed for a
/// separator: `a\vb` is one element (here an invalid network), and `set_all` rewrites it.
#[test]
fn vertical_tab_and_form_feed_are_not_list_separators() {
    assert!(!same_value(
        "10.0.0.0/8\x0b192.168.0.0/16",
        "10.0.0.0/8 192.168.0.0/16"
    ));
    assert!(!same_value("a\x0cb", "a b"));
    let want = "10.0.0.0/8 192.168.0.0/16";
    let (out, edits) = set_all(
        b"mynetworks = 10.0.0.0/8\x0b192.168.0.0/16\n",
        &[("mynetworks", want)],
    );
    assert_eq!(edits.len(), 1, "no edit made: {:?}", lossy(&out));
    require!(Need::Postfix);
    let conf = Host::raw(&out);
    assert_eq!(conf.postconf().h(&["mynetworks"]), [want]);
}

/// The regexp tables postrelay will write for wildcard senders, read by Postfix's own
/// regexp engine (`postmap -q`, POSIX extended expressions): an exact domain, the
/// longer wildcard and the shorter one in that order; the first match wins; the domain
/// of a wildcard itself, a look-alike and another domain do not match; a `$` in a value
/// comes back as written.
#[test]
fn regexp_tables_match_in_postfix_as_the_regex_crate_says() {
    use postrelay::syntax::regexp::{Pattern, Rule, render};
    require!(Need::Postfix);
    let host = Host::new("");
    let rules = vec![
        Rule {
            pattern: Pattern::Domain("eu.shop.example".into()),
            value: "exact:pa$1ss".into(),
        },
        Rule {
            pattern: Pattern::Subdomains("z.shop.example".into()),
            value: "deeper".into(),
        },
        Rule {
            pattern: Pattern::Subdomains("shop.example".into()),
            value: "wild".into(),
        },
    ];
    host.write_etc("wild", render("test", &rules).unwrap());
    let cases = [
        ("a@eu.shop.example", Some("exact:pa$1ss")),
        ("A@EU.Shop.Example", Some("exact:pa$1ss")),
        ("a@x.eu.shop.example", Some("wild")),
        ("a@x.shop.example", Some("wild")),
        ("b@y.z.shop.example", Some("deeper")),
        ("b@z.shop.example", Some("wild")),
        ("a@shop.example", None),
        ("a@xshop.example", None),
        ("a@x.shop.example.evil", None),
        ("a@eu-shop.example", None),
        ("@x.shop.example", None),
    ];
    for (address, want) in cases {
        assert_eq!(
            host.postmap_q("regexp", "wild", address).as_deref(),
            want,
            "{address}"
        );
        let crate_says = rules
            .iter()
            .find(|r| r.pattern.matches(address))
            .map(|r| r.value.as_str());
        assert_eq!(crate_says, want, "the regex crate on {address}");
    }
}
