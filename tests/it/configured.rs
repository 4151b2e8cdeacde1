//! postrelay on a host someone already configured: the maps main.cf lists beside
//! postrelay's own stay (after its own, in their order) and are reported, with warnings
//! for a missing one and for an entry postrelay's map now answers first; main.cf
//! settings that defeat sender-dependent relaying are warnings in plan and validate;
//! warnings print as `postrelay: warning:` lines, and an apply with nothing to do (as
//! from cron) prints nothing at all; `init` writes a starter file once.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::harness::host::write_with_mode;
use crate::harness::{CANARY, CANARY2, Cmd, DEBIAN_MAIN_CF, Host, Need};
use crate::require;

/// A relayhost and one domain, both on Mailgun.
fn desired(host: &Host, extra: &str) {
    host.desired(&format!(
        "[relayhost]\nrelay = \"[smtp.mailgun.org]:587\"\nusername = \"rh\"\npassword = \"{CANARY}\"\n\n\
         [[sender]]\ndomain = \"example.com\"\nrelay = \"[smtp.mailgun.org]:587\"\n\
         username = \"postmaster@example.com\"\npassword = \"{CANARY}-com\"\n{extra}"
    ));
}

#[test]
fn maps_postrelay_does_not_own_stay_after_its_own() {
    require!(Need::Postfix);
    let host = Host::new(DEBIAN_MAIN_CF);
    let etc = host.etc.display().to_string();
    fs::create_dir(host.path("sasl")).unwrap();
    write_with_mode(
        &host.path("sasl/sasl_passwd"),
        format!("@example.com old-user:{CANARY2}\n@partner.example partner:{CANARY2}-p\n"),
        0o600,
    );
    host.postmap_build("sasl/sasl_passwd");
    host.write_etc(
        "my_tls_policy",
        "partner.example encrypt\n[mx.bank.example]:25 verify\n",
    );
    host.postmap_build("my_tls_policy");
    host.edit_main_cf(|t| {
        format!(
            "{t}smtp_sasl_password_maps = hash:{etc}/sasl/sasl_passwd\n\
             smtp_tls_policy_maps = hash:{etc}/my_tls_policy\n\
             sender_dependent_relayhost_maps = hash:{etc}/sender_relay, texthash:{etc}/gone\n"
        )
    });
    desired(&host, "");
    let kept_files = |h: &Host| {
        [
            "sasl/sasl_passwd",
            "sasl/sasl_passwd.db",
            "my_tls_policy",
            "my_tls_policy.db",
        ]
        .map(|f| fs::read(h.path(f)).unwrap())
    };
    let before = kept_files(&host);

    let plan = host.plan();
    plan.code(1)
        .stdout_has(&format!(
            "kept: hash:{etc}/sasl/sasl_passwd in smtp_sasl_password_maps, after postrelay's sasl_passwd: 2 entries, which still apply to senders and destinations the desired state does not name\n  \
             @example.com old-user:********\n  @partner.example partner:********\n"
        ))
        .stdout_has(&format!(
            "kept: hash:{etc}/my_tls_policy in smtp_tls_policy_maps, after postrelay's tls_policy: 2 entries, which still apply to senders and destinations the desired state does not name\n  \
             [mx.bank.example]:25 verify\n  partner.example encrypt\n"
        ))
        .stdout_has(&format!(
            "kept: texthash:{etc}/gone in sender_dependent_relayhost_maps, after postrelay's sender_relay (does not exist)\n"
        ));
    assert_eq!(
        plan.stderr,
        format!(
            "postrelay: warning: hash:{etc}/sasl/sasl_passwd holds \"@example.com\", which the desired state also defines (the sender at line 6): postrelay's sasl_passwd is searched first, so that entry of hash:{etc}/sasl/sasl_passwd no longer applies\n\
             postrelay: warning: texthash:{etc}/gone (kept in sender_dependent_relayhost_maps) does not exist: Postfix's lookups through it fail\n"
        )
    );

    // Apply says it too (it changes something); the second apply says nothing.
    let first = host.apply_twice();
    first.stderr_has("postrelay: warning: texthash:");
    let postconf = host.postconf();
    assert_eq!(
        postconf.h(&[
            "smtp_sasl_password_maps",
            "smtp_tls_policy_maps",
            "sender_dependent_relayhost_maps"
        ]),
        [
            format!("hash:{etc}/sasl_passwd, hash:{etc}/sasl/sasl_passwd"),
            format!("hash:{etc}/tls_policy, hash:{etc}/my_tls_policy"),
            format!("hash:{etc}/sender_relay, texthash:{etc}/gone"),
        ]
    );
    assert_eq!(kept_files(&host), before, "kept maps were touched");
    let quiet = host.cmd("apply").args(&["--quiet"]).run();
    quiet.success();
    assert_eq!((quiet.stdout.as_str(), quiet.stderr.as_str()), ("", ""));
}

/// A main.cf whose transport settings send mail past the sender-dependent relays.
const DEFEATING: &str = "transport_maps = hash:/etc/postfix/transport\n\
                         default_transport = smtp:[outbound.example]:25\n\
                         sender_dependent_default_transport_maps = hash:/etc/postfix/sdt\n\
                         relay_domains = relayed.example\n\
                         relayhost = [legacy.example]:25\n";

#[test]
fn settings_that_defeat_sender_dependent_relaying_are_warnings() {
    require!(Need::Postfix);
    let host = Host::new(&format!("{DEBIAN_MAIN_CF}{DEFEATING}"));
    host.desired(&format!(
        "[[sender]]\ndomain = \"example.com\"\nrelay = \"[smtp.mailgun.org]:587\"\n\
         username = \"u\"\npassword = \"{CANARY}\"\n"
    ));
    let want = "postrelay: warning: main.cf sets transport_maps = hash:/etc/postfix/transport: a transport(5) entry for a recipient overrides the sender-dependent relays\n\
                postrelay: warning: main.cf sets default_transport = smtp:[outbound.example]:25: it overrides sender_dependent_relayhost_maps and relayhost for mail to other domains\n\
                postrelay: warning: main.cf sets sender_dependent_default_transport_maps = hash:/etc/postfix/sdt: its entries override the sender-dependent relays\n\
                postrelay: warning: main.cf sets relay_domains = relayed.example: mail to those domains leaves through relay_transport, not the sender-dependent relays\n\
                postrelay: warning: no [relayhost] in the desired state: senders not listed, and bounces, will use main.cf's relayhost \"[legacy.example]:25\" without credentials\n";
    let plan = host.plan();
    plan.code(1);
    assert_eq!(plan.stderr, want);
    let validate = host.cmd("validate").run();
    validate.success().stdout_has("valid (1 sender(s)");
    assert_eq!(validate.stderr, want);
    // Without a readable main.cf, validate checks the desired-state file alone.
    let alone = Cmd::new(&["validate", "--config", &host.config.display().to_string()])
        .args(&[
            "--postfix-dir",
            &host.tmp.path().join("nowhere").display().to_string(),
        ])
        .run();
    alone.success();
    assert_eq!(alone.stderr, "");
}

#[test]
fn a_weak_tls_warns_until_acknowledged_and_cron_runs_stay_silent() {
    require!(Need::Postfix);
    let host = Host::new(DEBIAN_MAIN_CF);
    desired(&host, "tls = \"may\"\n");
    let file = host.config.display().to_string();
    let warning = format!(
        "postrelay: warning: {file}, line 11: relay \"[smtp.mailgun.org]:587\" has tls \"may\": credentials for [smtp.mailgun.org]:587 may be sent without TLS\n"
    );
    for sub in ["validate", "plan"] {
        let run = host.cmd(sub).run();
        assert_eq!(run.stderr, warning, "{sub}");
    }
    let first = host.apply();
    first.success();
    assert_eq!(first.stderr, warning, "apply changed something: it warns");
    for (args, stdout) in [(&["--quiet"][..], ""), (&[][..], "postrelay: no changes\n")] {
        let run = host.cmd("apply").args(args).run();
        run.success();
        assert_eq!(
            (run.stdout.as_str(), run.stderr.as_str()),
            (stdout, ""),
            "{args:?}"
        );
    }
    desired(&host, "tls = \"may\"\naccept_cleartext = true\n");
    for sub in ["validate", "plan"] {
        let run = host.cmd(sub).run();
        assert_eq!(run.stderr, "", "{sub}: acknowledged");
    }
}

#[test]
fn init_writes_a_private_starter_once() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("postrelay/postrelay.toml");
    let path = config.display().to_string();
    let run = Cmd::new(&["init", "--config", &path]).run();
    run.success()
        .stdout_has(&format!("wrote {path} (mode 0600)"))
        .stdout_has(&format!("2. postrelay verify --config {path}"));
    let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&config), 0o600);
    assert_eq!(mode(config.parent().unwrap()), 0o700);
    let written = fs::read(&config).unwrap();
    Cmd::new(&["init", "--config", &path])
        .run()
        .code(2)
        .stderr_has(&format!(
            "postrelay: error: {path}: exists; not overwritten"
        ));
    assert_eq!(fs::read(&config).unwrap(), written);
    Cmd::new(&["validate", "--config", &path])
        .run()
        .code(2)
        .stderr_has("nothing to configure");
}

/// main.cf may already hold passwords (`static:` and `inline:` maps): plan and apply
/// show those values masked, never the password.
#[test]
fn passwords_already_in_main_cf_are_never_printed() {
    require!(Need::Postfix);
    let host = Host::new(&format!(
        "{DEBIAN_MAIN_CF}smtp_sasl_password_maps = static:legacy:{CANARY2}, inline:{{ [r]:587=u:{CANARY2} }}\n"
    ));
    desired(&host, "");
    // Every run is checked for the canaries (Run::from_output); these must also show
    // what they mask.
    host.plan()
        .code(1)
        .stdout_has("smtp_sasl_password_maps (was \"static:********, inline:{ [r]:587=********}\")")
        .stdout_has("kept: static:******** in smtp_sasl_password_maps");
    let apply = host.cmd("apply").args(&["--quiet"]).run();
    apply.success().stdout_has("static:********");
    host.settle();
    assert_eq!(
        host.postconf().get("smtp_sasl_password_maps"),
        format!(
            "hash:{}/sasl_passwd, static:legacy:{CANARY2}, inline:{{ [r]:587=u:{CANARY2} }}",
            host.etc.display()
        )
    );
}
