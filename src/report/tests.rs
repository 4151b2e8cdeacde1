//! The words, for hand-made data.

use std::path::{Path, PathBuf};

use super::*;
use crate::conflicts::{Conflict, Definer};
use crate::desired::{Credentials, SenderKey, parse_str};
use crate::managed::MapKind;
use crate::routing::Relay;
use crate::secret::Secret;
use crate::state::Target;
use crate::state::{Kept, KeptMap};
use crate::verify::{Check, Success, Who};

#[test]
fn redacts_passwords_everywhere() {
    let text = format!(
        "{}\n@a.com user@a.com:pw1\n# @old.com u:oldpw\n# Note: kept for the audit\n# pw1 was here\n[h]:587\tu2:p:w with space\nmulti x:pw2\n   pw3\nnovalue\n",
        table::HEADER
    );
    let got = redact_lines(&text, &["pw1"]);
    assert_eq!(
        got,
        vec![
            table::HEADER.to_string(),
            "@a.com user@a.com:********".into(),
            // A commented-out entry is masked like an entry.
            "# @old.com u:********".into(),
            // Prose stays prose, unless it holds a password.
            "# Note: kept for the audit".into(),
            "#********".into(),
            "[h]:587\tu2:********".into(),
            "multi x:********".into(),
            "   ********".into(),
            "novalue".into(),
        ]
    );
    for secret in ["pw1", "oldpw", "p:w", "pw2", "pw3"] {
        assert!(!got.join("\n").contains(secret));
    }
}

#[test]
fn rotation_shows_a_changed_redacted_line() {
    let d = diff(
        "sasl_passwd",
        Some(b"@a.com u:old\n"),
        b"@a.com u:new\n",
        Mask::PasswordMap,
    );
    assert!(
        d.contains("-@a.com u:********\n+@a.com u:********\n"),
        "{d}"
    );
    assert!(!d.contains("old") && !d.contains("new"));
}

#[test]
fn diff_masks_shown_comments_that_hold_an_old_or_new_password() {
    let old = b"# notes: the old one was Old-Pw-1\n# plain prose\n# continued x\nkey-old u:Old-Pw-1\nmulti u:Cont\n  -Pw-2\n";
    let new =
        b"# notes: the old one was Old-Pw-1\n# plain prose\n# now New-Pw-9\nkey-new u:New-Pw-9\n";
    let d = diff("sasl_passwd", Some(old), new, Mask::PasswordMap);
    assert!(
        d.contains(" #********\n # plain prose\n-# continued x\n"),
        "{d}"
    );
    assert!(d.contains("+#********\n+key-new u:********\n"), "{d}");
    for secret in ["Old-Pw-1", "New-Pw-9", "Cont", "Pw-2"] {
        assert!(!d.contains(secret), "{secret}: {d}");
    }
    // With --show-secrets nothing is masked.
    let d = diff("sasl_passwd", Some(old), new, Mask::Nothing);
    assert!(d.contains("+# now New-Pw-9\n"), "{d}");
}

#[test]
fn diff_marks_missing_final_newline_and_new_files() {
    let d = diff("main.cf", Some(b"a = 1"), b"a = 1\nb = 2\n", Mask::MainCf);
    assert!(
        d.contains("-a = 1\n\\ No newline at end of file\n+a = 1\n+b = 2\n"),
        "{d}"
    );
    let d = diff("f", None, b"x\n", Mask::Nothing);
    assert!(
        d.starts_with("--- /dev/null\n+++ f\n@@ -0,0 +1 @@\n+x\n"),
        "{d}"
    );
}

fn change(reasons: Vec<Reason>) -> MapChange {
    MapChange {
        kind: MapKind::SaslPasswd,
        source_path: PathBuf::from("/etc/postfix/sasl_passwd"),
        compiled_path: Some(PathBuf::from("/etc/postfix/sasl_passwd.db")),
        old: Some(Secret::new(b"@a u:old\n".to_vec().into())),
        new: Secret::new(b"@a u:new\n".to_vec().into()),
        entries: 1,
        write_source: true,
        rebuild: true,
        remove: false,
        reasons,
        entries_changed: Vec::new(),
    }
}

fn a_plan(maps: Vec<MapChange>, reload_pending: bool) -> Plan {
    Plan {
        target: Target {
            config_dir: PathBuf::from("/etc/postfix"),
            map_type: "hash".into(),
        },
        owner: (0, 0),
        maps,
        main_cf: None,
        master_cf: None,
        reload_pending,
        notes: vec![Note::NoRelayhost],
        kept: Vec::new(),
        conflicts: Vec::new(),
        hold: None,
        release: false,
    }
}

#[test]
fn every_reason_in_words() {
    let m = change(Vec::new());
    let cases = [
        (Reason::New, "new"),
        (Reason::ContentDiffers, "content differs"),
        (
            Reason::Mode {
                part: Part::Source,
                mode: 0o644,
            },
            "sasl_passwd has mode 0644, want 0600",
        ),
        (
            Reason::Owner {
                part: Part::Compiled,
                uid: 65534,
                want: 0,
            },
            "sasl_passwd.db is owned by uid 65534, want 0",
        ),
        (Reason::CompiledMissing, "sasl_passwd.db missing"),
        (
            Reason::CompiledUnreadable,
            "sasl_passwd.db unreadable by postmap",
        ),
        (
            Reason::CompiledDiffers,
            "sasl_passwd.db differs from its source",
        ),
    ];
    for (r, words) in cases {
        assert_eq!(reason(&m, &r), words);
    }
}

#[test]
fn a_plan_in_words() {
    let rotated = MapChange {
        entries_changed: vec![EntryChange::Changed("@a".into(), Changed::Password)],
        ..change(vec![Reason::ContentDiffers])
    };
    let p = a_plan(vec![rotated], false);
    assert_eq!(
        plan(&p, false),
        "sasl_passwd: content differs (1 entries): @a password changed\n\
         --- /etc/postfix/sasl_passwd\n+++ /etc/postfix/sasl_passwd\n@@ -1 +1 @@\n\
         -@a u:********\n+@a u:********\n\
         commands:\n  postmap -c /etc/postfix hash:/etc/postfix/sasl_passwd\n  \
         postfix -c /etc/postfix check    (if Postfix is running)\n  \
         postfix -c /etc/postfix reload   (if Postfix is running)\n\
         note: no [relayhost] in the desired state and none in main.cf: senders not listed, and bounces, are delivered directly to the recipient's MX\n\
         plan: 1 file(s) to change, 3 command(s) to run\n"
    );
    assert!(plan(&p, true).contains("-@a u:old\n+@a u:new\n"));
    let owed = a_plan(Vec::new(), true);
    assert_eq!(
        commands(&owed),
        [
            "postfix -c /etc/postfix check    (if Postfix is running)",
            "postfix -c /etc/postfix reload   (if Postfix is running)"
        ]
    );
    assert!(plan(&owed, false).contains("has not re-read it (reload owed)\n"));
    assert!(plan(&a_plan(Vec::new(), false), false).ends_with("plan: in sync, nothing to do\n"));
}

#[test]
fn what_apply_did_in_words() {
    let outcome = Outcome {
        plan: a_plan(vec![change(vec![Reason::New])], true),
        steps: vec![
            Step::Map(0),
            Step::Skipped(Skip::NotRunning),
            Step::Ran(Control::Check),
            Step::ReloadOwed,
        ],
    };
    assert_eq!(
        applied(&outcome, true),
        "wrote /etc/postfix/sasl_passwd, rebuilt /etc/postfix/sasl_passwd.db (new)\n\
         Postfix is not running (postfix -c /etc/postfix status): skipped check and reload\n\
         ran postfix -c /etc/postfix check\n\
         Postfix still has to re-read its configuration: the next apply reloads it\n\
         postrelay: applied\n"
    );
    let none = Outcome {
        plan: a_plan(Vec::new(), false),
        steps: Vec::new(),
    };
    assert_eq!(applied(&none, false), "postrelay: no changes\n");
    assert_eq!(applied(&none, true), "");
}

#[test]
fn a_hold_in_words() {
    let keys: Vec<String> = (1..=7).map(|i| format!("@d{i}.example")).collect();
    let mut p = a_plan(Vec::new(), true);
    p.hold = Some(Hold::Senders(keys));
    assert_eq!(
        commands(&p),
        [
            "hold the mail of @d1.example, @d2.example, @d3.example, @d4.example, @d5.example and 2 more in the queue during the switch (if Postfix is running)",
            "postfix -c /etc/postfix check    (if Postfix is running)",
            "postfix -c /etc/postfix reload   (if Postfix is running)",
            "postqueue -c /etc/postfix -f (if Postfix is running: releases the held mail)",
        ]
    );
    p.hold = Some(Hold::All);
    let outcome = Outcome {
        plan: p,
        steps: vec![
            Step::Ran(Control::Check),
            Step::Held,
            Step::Ran(Control::Reload),
            Step::Switched(std::time::Duration::from_millis(31)),
            Step::Released,
        ],
    };
    assert_eq!(
        applied(&outcome, false),
        "ran postfix -c /etc/postfix check\n\
         holding all outgoing mail in the queue during the switch (sender_dependent_default_transport_maps static:{retry:4.3.0 postrelay is switching this sender's relay})\n\
         ran postfix -c /etc/postfix reload\n\
         the daemons of the previous configuration had exited after 31 ms\n\
         released the held mail: ran postqueue -c /etc/postfix -f\n\
         postrelay: applied\n"
    );
}

#[test]
fn verify_in_words() {
    let check = |who: Who, user: Option<&str>| Check {
        who,
        relay: Relay::parse("[r.example]:587").unwrap(),
        tls: crate::desired::Tls::Encrypt,
        credentials: user.map(|u| Credentials {
            username: u.into(),
            password: Secret::new("pw".into()),
        }),
    };
    let outcomes = [
        verify::Outcome {
            check: check(Who::Relayhost, Some("rh")),
            result: Ok(Success {
                starttls: true,
                implicit_tls: false,
                mechanism: Some("PLAIN".into()),
            }),
            login: 0,
        },
        verify::Outcome {
            check: check(Who::Sender(SenderKey::Domain("a.example".into())), None),
            result: Ok(Success {
                starttls: false,
                implicit_tls: false,
                mechanism: None,
            }),
            login: 1,
        },
        verify::Outcome {
            check: check(
                Who::Sender(SenderKey::Address("x@a.example".into())),
                Some("x"),
            ),
            result: Err(Failure::NoStartTls(crate::desired::Tls::Encrypt)),
            login: 2,
        },
    ];
    assert_eq!(
        verify(&outcomes),
        "ok      relayhost via [r.example]:587 as rh (STARTTLS, AUTH PLAIN)\n\
         ok      @a.example via [r.example]:587 (no TLS, no credentials)\n\
         FAILED  x@a.example via [r.example]:587 as x: TLS required (tls = \"encrypt\") but the server does not offer STARTTLS; no password was sent\n\
         verify: 3 checked, 1 failed\n"
    );
}

#[test]
fn problems_are_one_error_line_each_and_warnings_name_the_line() {
    let mut p = Problems::new(Path::new("/p.toml"));
    p.at(3, "first");
    p.at(9, "second");
    let err = anyhow::Error::new(p.into_result().unwrap_err());
    assert_eq!(
        error(&err),
        "postrelay: error: /p.toml, line 3: first\npostrelay: error: /p.toml, line 9: second\n"
    );
    let other = anyhow::anyhow!("inner").context("outer");
    assert_eq!(error(&other), "postrelay: error: outer: inner\n");

    let d = parse_str("[relayhost]\nrelay = \"[r.example]:587\"\ntls = \"none\"\n").unwrap();
    assert_eq!(
        warning(&d, &d.warnings[0]),
        "test.toml, line 3: relay \"[r.example]:587\" has tls \"none\": credentials for [r.example]:587 may be sent without TLS"
    );
    assert_eq!(
        validated(&d),
        "test.toml: valid (0 sender(s), 1 relay(s), catch-all relayhost)\n"
    );
}

#[test]
fn entry_changes_kept_maps_and_conflicts_in_words() {
    let many = MapChange {
        kind: MapKind::SenderRelay,
        entries_changed: (0..12)
            .map(|i| EntryChange::Removed(format!("@d{i:02}.example")))
            .chain([EntryChange::Changed("@x.example".into(), Changed::Value)])
            .collect(),
        ..change(vec![Reason::ContentDiffers])
    };
    let summary = entry_changes(&many);
    assert!(
        summary.starts_with(": @d00.example removed (not in the desired state); @d01.example"),
        "{summary}"
    );
    assert!(summary.ends_with("; and 3 more"), "{summary}");
    assert_eq!(
        entry_changes(&change(vec![Reason::ContentDiffers])),
        " (same entries; only their layout differs)"
    );

    let listed = KeptMap {
        kind: MapKind::SaslPasswd,
        spec: "hash:/etc/postfix/sasl/sasl_passwd".into(),
        content: Kept::Entries(Secret::new(vec![
            ("@b.example".into(), "b:secret-b".into()),
            ("[x]:587".into(), "nouser".into()),
        ])),
    };
    assert_eq!(
        kept(&listed),
        "kept: hash:/etc/postfix/sasl/sasl_passwd in smtp_sasl_password_maps, after postrelay's sasl_passwd: 2 entries, which still apply to senders and destinations the desired state does not name\n  @b.example b:********\n  [x]:587 ********\n"
    );
    let missing = KeptMap {
        content: Kept::Missing,
        ..listed.clone()
    };
    assert!(kept(&missing).ends_with("(does not exist)\n"));

    let d = parse_str(
        "[[sender]]\ndomain = \"a.example\"\nrelay = \"[r.example]:587\"\ntls = \"may\"\n",
    )
    .unwrap();
    let conflicts = [
        Conflict::Shadowed {
            kind: MapKind::SenderRelay,
            spec: "hash:/x".into(),
            key: "@a.example".into(),
            by: Definer::Sender(1),
        },
        Conflict::Overrides {
            parameter: "transport_maps",
            value: "hash:/t".into(),
        },
    ];
    assert_eq!(
        warnings(&d, &conflicts),
        "postrelay: warning: test.toml, line 4: relay \"[r.example]:587\" has tls \"may\": credentials for [r.example]:587 may be sent without TLS\n\
         postrelay: warning: hash:/x holds \"@a.example\", which the desired state also defines (the sender at line 1): postrelay's sender_relay is searched first, so that entry of hash:/x no longer applies\n\
         postrelay: warning: main.cf sets transport_maps = hash:/t: a transport(5) entry for a recipient overrides the sender-dependent relays\n"
    );
}

#[test]
fn secrets_in_main_cf_values_are_masked() {
    let cases = [
        ("static:user:hunter2", "static:********"),
        (
            "hash:/a, static:user:hunter2, hash:/b",
            "hash:/a, static:********, hash:/b",
        ),
        ("static:{ user:hunt er2 }", "static:********"),
        (
            "inline:{ [r]:587=u:hunter2, { @a.example = v:pw, with comma } }, hash:/x",
            "inline:{ [r]:587=********, { @a.example =********} }, hash:/x",
        ),
        ("inline:{ a=u:hunter2 }", "inline:{ a=********}"),
        ("inline:{ a=u:hunter2", "inline:{ a=********"),
        (
            "hash:/etc/postfix/sasl_passwd",
            "hash:/etc/postfix/sasl_passwd",
        ),
    ];
    for (value, masked) in cases {
        assert_eq!(mask_map_secrets(value), masked, "{value}");
    }
    let d = diff(
        "main.cf",
        Some(b"smtp_sasl_password_maps = static:u:hunter2\n"),
        b"smtp_sasl_password_maps = hash:/etc/postfix/sasl_passwd\n",
        Mask::MainCf,
    );
    assert!(!d.contains("hunter2"), "{d}");
    let e = edits(&[Edit::Changed {
        name: "smtp_sasl_password_maps".into(),
        old: "inline:{ a=u:hunter2 }".into(),
    }]);
    assert_eq!(e, "smtp_sasl_password_maps (was \"inline:{ a=********}\")");
}

/// An audit line is fit for `postlog TEXT`: one line, no control character, at most
/// [`MAX_AUDIT`] bytes.
#[track_caller]
fn assert_loggable(line: &str) {
    assert!(line.len() <= MAX_AUDIT, "{} bytes: {line}", line.len());
    assert!(!line.chars().any(char::is_control), "{line:?}");
}

#[test]
fn an_applied_change_in_one_audit_line() {
    let rotated = MapChange {
        entries_changed: vec![
            EntryChange::Changed("@a.example".into(), Changed::Password),
            EntryChange::Added("shop@b.example".into()),
        ],
        ..change(vec![Reason::ContentDiffers])
    };
    let mut p = a_plan(vec![rotated], false);
    p.main_cf = Some(MainCfChange {
        path: PathBuf::from("/etc/postfix/main.cf"),
        old: Vec::new(),
        new: Vec::new(),
        edits: vec![
            Edit::Changed {
                name: "relayhost".into(),
                old: "[old.example]:587".into(),
            },
            Edit::Changed {
                name: "smtp_sasl_password_maps".into(),
                old: "static:user:CANARY-main-cf".into(),
            },
        ],
    });
    let outcome = |steps: Vec<Step>| Outcome {
        plan: p.clone(),
        steps,
    };
    let config = Path::new("/etc/postrelay/postrelay.toml");
    let line = audit_applied(
        config,
        &outcome(vec![
            Step::Map(0),
            Step::MainCf,
            Step::Ran(Control::Check),
            Step::Ran(Control::Reload),
        ]),
    );
    assert_eq!(
        line,
        "applied /etc/postrelay/postrelay.toml to /etc/postfix: \
         sasl_passwd: content differs (1 entries): @a.example password changed; shop@b.example added; \
         main.cf: set relayhost (was \"[old.example]:587\"), smtp_sasl_password_maps (was \"static:********\"); \
         reloaded"
    );
    assert_loggable(&line);
    // Without a reload, the line says why.
    let line = audit_applied(
        config,
        &outcome(vec![
            Step::Map(0),
            Step::MainCf,
            Step::Skipped(Skip::NoReload),
            Step::ReloadOwed,
        ]),
    );
    assert!(
        line.ends_with("; skipped postfix check and reload (--no-reload)"),
        "{line}"
    );
    let line = audit_applied(config, &outcome(vec![Step::Skipped(Skip::NotRunning)]));
    assert!(
        line.ends_with(
            "; Postfix is not running (postfix -c /etc/postfix status): skipped check and reload"
        ),
        "{line}"
    );
    // A reload owed by an earlier run, and nothing else.
    let owed = Outcome {
        plan: a_plan(Vec::new(), true),
        steps: vec![Step::Ran(Control::Check), Step::Ran(Control::Reload)],
    };
    assert_eq!(
        audit_applied(config, &owed),
        "applied /etc/postrelay/postrelay.toml to /etc/postfix: the reload an earlier apply owed; reloaded"
    );
}

#[test]
fn a_large_change_is_one_bounded_audit_line() {
    // 40 entries in each of three maps, and hostile bytes in a key and the path.
    let map = |kind: MapKind| MapChange {
        kind,
        entries: 40,
        entries_changed: (0..40)
            .map(|i| EntryChange::Added(format!("@d{i}.example\n\t\u{1b}[31m")))
            .collect(),
        ..change(vec![Reason::ContentDiffers])
    };
    let p = a_plan(
        vec![
            map(MapKind::SaslPasswd),
            map(MapKind::SenderRelay),
            map(MapKind::TlsPolicy),
        ],
        false,
    );
    let outcome = Outcome {
        steps: vec![
            Step::Map(0),
            Step::Map(1),
            Step::Map(2),
            Step::Ran(Control::Reload),
        ],
        plan: p,
    };
    let line = audit_applied(Path::new("/etc/post\nrelay.toml"), &outcome);
    assert_loggable(&line);
    assert!(line.starts_with("applied /etc/post relay.toml to /etc/postfix: sasl_passwd: content differs (40 entries): @d0.example ?[31m added; "), "{line}");
    // Each map names ten entries, then counts the rest; what does not fit is counted
    // by file; the reload is always said.
    assert!(line.contains("; and 30 more; "), "{line}");
    assert!(line.contains("and 1 more file(s); reloaded"), "{line}");
    assert!(line.ends_with("; reloaded"), "{line}");

    // A part longer than its share is cut.
    let long = MapChange {
        entries_changed: vec![EntryChange::Added(format!("@{}.example", "x".repeat(2000)))],
        ..change(vec![Reason::ContentDiffers])
    };
    let outcome = Outcome {
        steps: vec![Step::Map(0), Step::Ran(Control::Reload)],
        plan: a_plan(vec![long], false),
    };
    let line = audit_applied(Path::new("/p.toml"), &outcome);
    assert_loggable(&line);
    assert!(line.contains("xxx...; reloaded"), "{line}");
}

#[test]
fn a_failed_apply_in_one_audit_line() {
    let config = Path::new("/etc/postrelay/postrelay.toml");
    // A tool's failure: its stderr between rulers, in context.
    let err = anyhow::anyhow!(
        "`postfix -c /etc/postfix check` failed (exit status: 1):\n---\npostfix: fatal: bad\n\tthing\n---"
    )
    .context("restored the previous files; nothing changed");
    let line = audit_failed(config, &err);
    assert_eq!(
        line,
        "apply of /etc/postrelay/postrelay.toml failed: restored the previous files; nothing changed: \
         `postfix -c /etc/postfix check` failed (exit status: 1): postfix: fatal: bad thing"
    );
    assert_loggable(&line);
    // Problems of an input file: one part each, as `error` prints them.
    let mut p = Problems::new(config);
    for line in 1..=100 {
        p.at(line, "unknown key \"x\u{7}\"");
    }
    let err = anyhow::Error::new(p.into_result().unwrap_err());
    let line = audit_failed(config, &err);
    assert_loggable(&line);
    assert!(
        line.starts_with("apply of /etc/postrelay/postrelay.toml failed: /etc/postrelay/postrelay.toml, line 1: unknown key \"x?\"; /etc/postrelay/postrelay.toml, line 2: "),
        "{line}"
    );
    // Those that do not fit are counted: every problem is named or counted.
    let (_, more) = line.rsplit_once("; and ").unwrap();
    let more: usize = more
        .strip_suffix(" more problem(s)")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(line.matches(": unknown key").count() + more, 100, "{line}");
    assert_eq!(
        audit_not_recorded(&anyhow::anyhow!("`postlog -c /x` failed (exit status: 1)")),
        "postrelay: warning: not recorded in the mail log: `postlog -c /x` failed (exit status: 1)\n"
    );
}
