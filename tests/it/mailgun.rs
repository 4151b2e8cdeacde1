//! `postrelay mailgun sync` and `rotate` against a loopback stand-in for Mailgun's API
//! (`mailgun_api`): paging through 2,500 domains, an account partly configured already,
//! a wrong or badly kept API key, a sync that stops partway and resumes, and a rotation
//! stopped at each of its five steps, after which the host still delivers through a
//! login that works. Rotations log in to the relay and deliver through a running
//! instance: the preset's relay, `[smtp.mailgun.org]:587`, is a fake relay on a
//! loopback address of its own, named so by a private /etc/hosts ([`Hosts`]) in a mount
//! namespace around postrelay and the instance's master.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::harness::host::{FileState, write_with_mode};
use crate::harness::tls::TestCa;
use crate::harness::{Cmd, Need, Run};
use crate::instance::{Instance, message_id};
use crate::mailgun_api::MockMailgun;
use crate::relay::{FakeRelay, RelayConfig};

const KEY: &str = "key-0123456789abcdef0123456789abcdef";

/// A place for a desired-state file and its secrets directory.
struct Site {
    tmp: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o700)).unwrap();
        Site { tmp }
    }

    fn config(&self) -> PathBuf {
        self.tmp.path().join("postrelay.toml")
    }

    fn secrets(&self) -> PathBuf {
        self.tmp.path().join("secrets")
    }

    fn text(&self) -> String {
        fs::read_to_string(self.config()).unwrap()
    }

    /// `postrelay mailgun sync` on this site against `api`, with the key in the
    /// environment.
    fn sync(&self, api: &MockMailgun, extra: &[&str]) -> Run {
        let (config, secrets, base) = (self.config(), self.secrets(), api.base());
        let mut args = sync_args(&config, &secrets, &base);
        args.extend(extra);
        Cmd::new(&args).env("MAILGUN_API_KEY", api.key()).run()
    }
}

/// `mailgun sync` on this desired-state file and secrets directory, against `base`.
fn sync_args<'a>(config: &'a Path, secrets: &'a Path, base: &'a str) -> Vec<&'a str> {
    vec![
        "mailgun",
        "sync",
        "--config",
        config.to_str().unwrap(),
        "--secrets-dir",
        secrets.to_str().unwrap(),
        "--api-base",
        base,
    ]
}

/// The password file of `login` holds the password Mailgun has for it, 32 letters and
/// digits, and is 0600; returns the password.
fn assert_password_file(site: &Site, api: &MockMailgun, domain: &str, login: &str) -> String {
    let path = site.secrets().join(login);
    let meta = fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(meta.mode() & 0o7777, 0o600, "{}", path.display());
    let text = fs::read_to_string(&path).unwrap();
    let password = text.strip_suffix('\n').expect("one line");
    assert_eq!(password.len(), 32);
    assert!(
        password.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{password}"
    );
    assert_eq!(
        api.logins(domain).get(login).map(String::as_str),
        Some(password)
    );
    password.to_string()
}

#[test]
fn sync_pages_through_2500_domains_and_a_second_run_changes_nothing() {
    let api = MockMailgun::start(KEY);
    for i in 0..2500 {
        api.add_domain(&format!("d{i:04}.example"), "active");
    }
    let site = Site::new();
    let run = site.sync(&api, &[]);
    run.success()
        .stdout_has("2500 domain(s) in the account (us), 0 already in")
        .stdout_has("2500 added")
        .stdout_has("next: postrelay plan, then postrelay apply --verify");
    // Three pages of at most 1000, each authorised.
    let pages: Vec<(String, String)> = api
        .seen()
        .iter()
        .filter(|s| s.path == "/v4/domains")
        .map(|s| (s.query["limit"].clone(), s.query["skip"].clone()))
        .collect();
    assert_eq!(
        pages,
        [("1000", "0"), ("1000", "1000"), ("1000", "2000")]
            .map(|(l, s)| (l.to_string(), s.to_string()))
    );
    assert!(api.seen().iter().all(|s| s.authorized));
    let posts: Vec<_> = api
        .seen()
        .into_iter()
        .filter(|s| s.method == "POST")
        .collect();
    assert_eq!(posts.len(), 2500);
    assert!(
        posts
            .iter()
            .all(|p| p.content_type.starts_with("multipart/form-data")
                && p.fields["login"].starts_with("postrelay@d")
                && p.fields["password"].len() == 32)
    );
    assert_eq!(api.all_logins().len(), 2500);
    for i in [0, 999, 1000, 2499] {
        let d = format!("d{i:04}.example");
        assert_password_file(&site, &api, &d, &format!("postrelay@{d}"));
    }
    let secrets = fs::metadata(site.secrets()).unwrap();
    assert_eq!(secrets.mode() & 0o7777, 0o700);
    assert_eq!(fs::read_dir(site.secrets()).unwrap().count(), 2500);
    let config = fs::metadata(site.config()).unwrap();
    assert_eq!(config.mode() & 0o7777, 0o600);
    let text = site.text();
    assert_eq!(text.matches("[[sender]]").count(), 2500);
    assert!(text.contains(&format!(
        "[[sender]]\ndomain = \"d0007.example\"\nprovider = \"mailgun\"\nusername = \"postrelay@d0007.example\"\npassword_file = \"{}\"\n",
        site.secrets().join("postrelay@d0007.example").display()
    )));
    // The file is a desired state postrelay takes as it is.
    Cmd::new(&["validate", "--config", site.config().to_str().unwrap()])
        .run()
        .success()
        .stdout_has("2500 sender(s)");

    // Again: every domain is present; nothing is created or written.
    let before = FileState::of(&site.config());
    api.forget_requests();
    site.sync(&api, &[])
        .success()
        .stdout_has("2500 already in")
        .stdout_has(", 0 added");
    assert_eq!(FileState::of(&site.config()), before);
    assert_eq!(api.count("POST"), 0);
    assert_eq!(api.count("GET"), 3, "only the domain list");
}

#[test]
fn sync_leaves_configured_domains_and_the_file_alone_and_says_what_it_left_out() {
    let api = MockMailgun::start(KEY);
    for (d, state) in [
        ("a.example", "active"),
        ("b.example", "unverified"),
        ("c.example", "disabled"),
        ("d.example", "active"),
        ("e.example", "active"),
        ("x..example", "active"),
    ] {
        api.add_domain(d, state);
    }
    // d.example's login is someone else's: its password is not on this host.
    api.add_login("d.example", "postrelay@d.example", "someone-elses-pw");
    let site = Site::new();
    let original = "\
# Relays for this host. Keep the catch-all first.
[relayhost]
relay = \"[smtp.example.net]:587\"   # the ISP

[[sender]]
domain = \"a.example\"   # configured by hand
relay = \"[mail.a.example]:587\"
";
    write_with_mode(&site.config(), original, 0o600);

    // --dry-run: says what it would do, creates and writes nothing.
    let dry = site.sync(&api, &["--dry-run"]);
    dry.code(1)
        .stdout_has("+ b.example: login postrelay@b.example would be created")
        .stdout_has("- c.example: disabled at Mailgun, left out")
        .stdout_has("! d.example: the login postrelay@d.example exists at Mailgun")
        .stdout_has("1 already in");
    assert!(!dry.stdout.contains("a.example:"), "{}", dry.stdout);
    assert_eq!(site.text(), original);
    assert!(!site.secrets().exists());
    assert_eq!(api.count("POST"), 0);

    // --domain narrows; a domain not in the account is an error before anything.
    site.sync(&api, &["--domain", "zz.example", "--domain", "b.example"])
        .error()
        .stderr_has("not in the Mailgun account (us region): zz.example");
    assert_eq!(site.text(), original);

    let run = site.sync(&api, &["--region", "eu"]);
    run.code(1)
        .stdout_has("+ b.example: login postrelay@b.example created")
        .stdout_has("+ e.example: login postrelay@e.example created")
        .stdout_has("! \"x..example\": not a domain name postrelay takes")
        .stdout_has("6 domain(s) in the account (eu), 1 already in")
        .stdout_has("2 added, 2 left out");
    // The hand-written part is kept byte for byte; the new entries follow it.
    let text = site.text();
    assert!(text.starts_with(original), "{text}");
    assert!(text.contains("domain = \"b.example\"\nprovider = \"mailgun\"\nregion = \"eu\"\n"));
    assert_eq!(text.matches("[[sender]]").count(), 3);
    assert_password_file(&site, &api, "b.example", "postrelay@b.example");
    assert_eq!(
        api.logins("d.example")
            .get("postrelay@d.example")
            .map(String::as_str),
        Some("someone-elses-pw"),
        "another host's login is never touched"
    );
    assert!(api.logins("c.example").is_empty());
    // --login names the logins.
    api.add_domain("f.example", "active");
    site.sync(&api, &["--login", "mta1", "--domain", "f.example"])
        .success()
        .stdout_has("+ f.example: login mta1@f.example created");
    assert_password_file(&site, &api, "f.example", "mta1@f.example");
    site.sync(&api, &["--login", "a b"])
        .error()
        .stderr_has("--login \"a b\": expected a name of letters, digits");
}

#[test]
fn a_wrong_or_badly_kept_api_key_changes_nothing_and_is_never_printed() {
    let api = MockMailgun::start(KEY);
    api.add_domain("a.example", "active");
    let site = Site::new();
    let (config, secrets) = (site.config(), site.secrets());
    let base = api.base();
    let sync = |extra: &[&str], key: Option<&str>| {
        let mut args = vec!["-vvv"];
        args.extend(sync_args(&config, &secrets, &base));
        args.extend(extra);
        let mut cmd = Cmd::new(&args);
        cmd.env("RUST_LOG", "trace");
        if let Some(k) = key {
            cmd.env("MAILGUN_API_KEY", k);
        }
        cmd.run()
    };
    let wrong = "key-wrong-wrong-wrong-wrong-wrong00";
    let run = sync(&[], Some(wrong));
    run.error().stderr_has(
        "Mailgun API: GET /v4/domains: 401 Invalid private key (check the API key and the region)",
    );
    run.assert_hides(wrong);
    assert!(!config.exists() && !secrets.exists(), "nothing written");
    assert!(api.seen().iter().all(|s| !s.authorized));

    sync(&[], None).error().stderr_has(
        "no Mailgun API key: give --api-key-file FILE (mode 0600) or set MAILGUN_API_KEY",
    );

    // A key file others can read is refused, naming it; a private one works.
    let key_file = site.tmp.path().join("mailgun.key");
    write_with_mode(&key_file, format!("{KEY}\n"), 0o644);
    let kf = key_file.to_str().unwrap();
    sync(&["--api-key-file", kf], None)
        .error()
        .stderr_has(&format!(
            "{kf}: readable by group or others (mode 0644); run: chmod 600 {kf}"
        ));
    assert!(!config.exists());
    fs::set_permissions(&key_file, fs::Permissions::from_mode(0o600)).unwrap();
    let ok = sync(&["--api-key-file", kf], None);
    ok.success().stdout_has("+ a.example");
    // Neither the key, its Basic form, nor the new password shows, even at trace level.
    let password = assert_password_file(&site, &api, "a.example", "postrelay@a.example");
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("api:{KEY}"),
    );
    for secret in [KEY, basic.as_str(), password.as_str()] {
        ok.assert_hides(secret);
    }
    // Not an https:// base, and not loopback: refused before the key is sent.
    Cmd::new(&[
        "mailgun",
        "sync",
        "--config",
        config.to_str().unwrap(),
        "--api-base",
        "http://api.mailgun.net",
    ])
    .env("MAILGUN_API_KEY", KEY)
    .run()
    .error()
    .stderr_has("http:// would send the API key in clear text");
}

#[test]
fn a_sync_that_stops_partway_keeps_what_it_did_and_the_next_run_finishes() {
    let api = MockMailgun::start(KEY);
    for d in ["a.example", "b.example", "c.example", "d.example"] {
        api.add_domain(d, "active");
    }
    let site = Site::new();
    // c.example's login cannot be created this time.
    api.fail("POST", "/v3/domains/c.example/", 500, "Internal error", 1);
    let run = site.sync(&api, &[]);
    run.code(2)
        .stderr_has("mailgun sync stopped at c.example: Mailgun API: POST /v3/domains/c.example/credentials: 500 Internal error")
        .stderr_has("2 domain(s) before it were added to");
    let text = site.text();
    assert!(text.contains("\"a.example\"") && text.contains("\"b.example\""));
    assert!(!text.contains("c.example") && !text.contains("d.example"));
    assert!(
        !site.secrets().join("postrelay@c.example").exists(),
        "the password file of a login not created is removed"
    );
    // A run killed after writing d.example's password file, before creating its login:
    // the next run creates the login with that password.
    write_with_mode(
        &site.secrets().join("postrelay@d.example"),
        "Left-by-a-killed-run-0123456789\n",
        0o600,
    );
    site.sync(&api, &[])
        .success()
        .stdout_has("+ c.example: login postrelay@c.example created")
        .stdout_has("+ d.example: login postrelay@d.example and")
        .stdout_has("left by an earlier run, reused")
        .stdout_has("2 already in");
    assert_eq!(
        api.logins("d.example")
            .get("postrelay@d.example")
            .map(String::as_str),
        Some("Left-by-a-killed-run-0123456789")
    );
    assert_eq!(site.text().matches("[[sender]]").count(), 4);
    assert_eq!(api.all_logins().len(), 4);
}

// ---------------------------------------------------------------------------------
// Rotation, on a running instance whose smtp.mailgun.org is a fake relay.

/// A private /etc/hosts naming `smtp.mailgun.org` (and the EU relay) as a loopback
/// address of the test's own, bound over the real one in a mount namespace around the
/// commands that resolve it (postrelay's verify, and the instance's master, whose SMTP
/// clients use `smtp_host_lookup = native`).
pub struct Hosts {
    _dir: tempfile::TempDir,
    file: PathBuf,
}

/// The shell that binds the hosts file (`$0`) over /etc/hosts, then runs the command.
const BIND_HOSTS: &str = "mount --bind \"$0\" /etc/hosts && exec \"$@\"";

impl Hosts {
    pub fn new(ip: &str) -> Hosts {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hosts");
        fs::write(
            &file,
            format!("127.0.0.1 localhost\n{ip} smtp.mailgun.org smtp.eu.mailgun.org\n"),
        )
        .unwrap();
        Hosts { _dir: dir, file }
    }

    /// The wrapper for [`Cmd::run_under`] and [`Instance::start_under`].
    pub fn wrapper(&self) -> Vec<String> {
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            BIND_HOSTS,
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([self.file.display().to_string()])
        .collect()
    }
}

/// A running instance that trusts a test CA, a fake smtp.mailgun.org presenting a
/// certificate from it on port 587 of its own loopback address, the mock API, and a
/// desired state with one mailgun sender (`shop.example`, login `postrelay@…`), applied.
struct World {
    inst: Instance,
    relay: FakeRelay,
    api: MockMailgun,
    hosts: Hosts,
    site_dir: tempfile::TempDir,
}

const SHOP: &str = "shop.example";
const OLD_LOGIN: &str = "postrelay@shop.example";
const OLD_PASSWORD: &str = "Old-password-0123456789abcdefgh";

impl World {
    /// `n` picks the loopback address (127.0.0.(100+n)): worlds run side by side.
    fn new(n: u8) -> World {
        let ip = format!("127.0.0.{}", 100 + n);
        let ca = TestCa::new("postrelay mailgun test CA");
        let leaf = ca.issue(&["smtp.mailgun.org", "smtp.eu.mailgun.org"]);
        let relay = FakeRelay::start_at(
            RelayConfig::user(OLD_LOGIN, OLD_PASSWORD)
                .requiring_auth()
                .presenting(leaf),
            &format!("{ip}:587"),
        );
        let hosts = Hosts::new(&ip);
        let mut inst = Instance::new();
        let pem = inst.path("test-ca.pem");
        ca.write_pem(&pem);
        inst.edit_main_cf(|text| format!("{text}smtp_tls_CAfile = {}\n", pem.display()));
        let wrapper = hosts.wrapper();
        let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        inst.start_under(&wrapper);
        let api = MockMailgun::start(KEY);
        api.add_domain(SHOP, "active");
        api.add_login(SHOP, OLD_LOGIN, OLD_PASSWORD);
        let site_dir = tempfile::tempdir().unwrap();
        fs::set_permissions(site_dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let world = World {
            inst,
            relay,
            api,
            hosts,
            site_dir,
        };
        write_with_mode(
            &world.secrets().join(OLD_LOGIN),
            format!("{OLD_PASSWORD}\n"),
            0o600,
        );
        fs::set_permissions(world.secrets(), fs::Permissions::from_mode(0o700)).unwrap();
        let text = format!(
            "# The shop's mail goes out through Mailgun.\n[postfix]\nconfig_dir = \"{}\"\n\n[[sender]]\ndomain = \"{SHOP}\"\nprovider = \"mailgun\"   # US region\nusername = \"{OLD_LOGIN}\"\npassword_file = \"{}\"\n",
            world.inst.etc.display(),
            world.secrets().join(OLD_LOGIN).display()
        );
        write_with_mode(&world.config(), text, 0o600);
        world
            .postrelay(&[
                "apply",
                "--verify",
                "--config",
                world.config().to_str().unwrap(),
            ])
            .success();
        world
    }

    fn config(&self) -> PathBuf {
        self.site_dir.path().join("postrelay.toml")
    }

    fn secrets(&self) -> PathBuf {
        let s = self.site_dir.path().join("secrets");
        fs::create_dir_all(&s).unwrap();
        s
    }

    /// postrelay in the namespace where smtp.mailgun.org is the fake relay.
    fn postrelay(&self, args: &[&str]) -> Run {
        self.postrelay_in(&[], args)
    }

    /// [`World::postrelay`] with these environment variables beside the API key.
    fn postrelay_in(&self, env: &[(&str, &str)], args: &[&str]) -> Run {
        let wrapper = self.hosts.wrapper();
        let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        let mut cmd = Cmd::new(args);
        cmd.env("MAILGUN_API_KEY", KEY);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.run_under(&wrapper)
    }

    fn rotate(&self, extra: &[&str]) -> Run {
        self.rotate_with(&self.secrets(), extra)
    }

    /// `mailgun rotate` with this secrets directory.
    fn rotate_with(&self, secrets: &std::path::Path, extra: &[&str]) -> Run {
        self.rotate_in(secrets, &[], extra)
    }

    /// `mailgun rotate` with this secrets directory and these environment variables
    /// beside the API key.
    fn rotate_in(&self, secrets: &std::path::Path, env: &[(&str, &str)], extra: &[&str]) -> Run {
        let (config, base) = (self.config(), self.api.base());
        let mut args = vec![
            "mailgun",
            "rotate",
            "--sender",
            SHOP,
            "--config",
            config.to_str().unwrap(),
            "--secrets-dir",
            secrets.to_str().unwrap(),
            "--api-base",
            base.as_str(),
            "--settle",
            "0",
            "--no-syslog",
        ];
        args.extend(extra);
        self.postrelay_in(env, &args)
    }

    /// Sends a message from the shop and returns the login it was delivered with.
    fn deliver(&self, tag: &str) -> (String, String) {
        let id = message_id(tag);
        self.inst
            .send(&format!("orders@{SHOP}"), &["customer@dest.test"], &id);
        let m = self.inst.expect_delivery(&self.relay, &id);
        assert!(m.tls_at_auth, "logged in over TLS");
        (m.auth_user.unwrap(), m.auth_password.unwrap())
    }

    /// The desired state, the password files and the host's config dir as they are.
    fn files(&self) -> BTreeMap<String, FileState> {
        let mut all = self.inst.files();
        all.insert("postrelay.toml".into(), FileState::of(&self.config()));
        all
    }
}

fn new_login_of(world: &World) -> Option<(String, String)> {
    world
        .api
        .logins(SHOP)
        .into_iter()
        .find(|(l, _)| l != OLD_LOGIN)
}

fn live_ok() -> bool {
    crate::harness::require(&[Need::Live, Need::Program("unshare", "util-linux")])
}

#[test]
fn rotation_replaces_the_login_and_mail_flows_before_and_after() {
    if !live_ok() {
        return;
    }
    let world = World::new(1);
    assert_eq!(world.deliver("before").0, OLD_LOGIN);
    // The relay will take the new login once Mailgun has it (as Mailgun's does).
    world.relay.also_accept(world.api.accounts());
    let run = world.rotate(&[]);
    run.success()
        .stdout_has("2. login postrelay-2@shop.example at Mailgun")
        .stdout_has("3. the relay accepted postrelay-2@shop.example (1 check(s))")
        .stdout_has("5. old login postrelay@shop.example deleted at Mailgun")
        .stdout_has(
            "postrelay: mailgun rotate: shop.example now sends as postrelay-2@shop.example",
        );
    let (login, password) = new_login_of(&world).expect("the new login");
    assert_eq!(login, "postrelay-2@shop.example");
    assert!(
        !world.api.logins(SHOP).contains_key(OLD_LOGIN),
        "old login deleted"
    );
    assert!(
        !world.secrets().join(OLD_LOGIN).exists(),
        "old password file removed"
    );
    run.assert_hides(&password);
    let text = fs::read_to_string(world.config()).unwrap();
    assert!(
        text.contains(
            "provider = \"mailgun\"   # US region\nusername = \"postrelay-2@shop.example\"\n"
        ),
        "{text}"
    );
    assert_eq!(world.deliver("after"), (login.clone(), password));
    // The host matches the desired state: apply changes nothing, twice.
    let before = world.files();
    world
        .postrelay(&["apply", "--config", world.config().to_str().unwrap()])
        .success()
        .stdout_has("no changes");
    assert_eq!(world.files(), before);
    // And again: postrelay-3, and postrelay-2 deleted.
    world
        .rotate(&[])
        .success()
        .stdout_has("now sends as postrelay-3@shop.example");
    assert_eq!(
        world.api.logins(SHOP).keys().collect::<Vec<_>>(),
        ["postrelay-3@shop.example"]
    );
    assert_eq!(world.deliver("third").0, "postrelay-3@shop.example");
}

/// What a rotation stopped before the host switched leaves: the desired state and the
/// host's files as they were, the old login at Mailgun, and mail still going out
/// through it.
fn assert_still_old(world: &World, before: &BTreeMap<String, FileState>, tag: &str) {
    let now = world.files();
    let changed: Vec<&String> = now
        .keys()
        .chain(before.keys())
        .filter(|k| now.get(*k) != before.get(*k))
        .collect();
    assert!(changed.is_empty(), "{tag}: changed: {changed:?}");
    assert!(world.api.logins(SHOP).contains_key(OLD_LOGIN));
    assert_eq!(
        world.deliver(tag),
        (OLD_LOGIN.to_string(), OLD_PASSWORD.to_string())
    );
}

#[test]
fn rotation_stopped_at_each_step_leaves_a_working_login_and_resumes() {
    if !live_ok() {
        return;
    }
    let world = World::new(2);
    let before = world.files();
    let new_file = world.secrets().join("postrelay-2@shop.example");

    // Step 1: the password file cannot be written (the secrets path is not a directory).
    let blocked = world.site_dir.path().join("blocked");
    fs::write(&blocked, "").unwrap();
    world
        .rotate_with(&blocked, &[])
        .error()
        .stderr_has("mailgun rotate stopped at step 1 of 5 (write the new password file)")
        .stderr_has("The host still sends as postrelay@shop.example, which still works.");
    fs::remove_file(&blocked).unwrap();
    assert_eq!(world.api.logins(SHOP).len(), 1, "no login created");
    assert_still_old(&world, &before, "step1");

    // Step 2: Mailgun refuses the new login.
    world
        .api
        .fail("POST", "/credentials", 500, "Internal error", 1);
    world
        .rotate(&[])
        .error()
        .stderr_has("stopped at step 2 of 5 (create the new login at Mailgun): Mailgun API: POST /v3/domains/shop.example/credentials: 500 Internal error")
        .stderr_has("Run the same command again to resume");
    assert!(
        new_file.exists(),
        "the password file waits for the next run"
    );
    assert_still_old(&world, &before, "step2");

    // Step 3: the relay does not take the new login (yet).
    world
        .rotate(&[])
        .error()
        .stderr_has("stopped at step 3 of 5 (log in to the relay with the new login): the relay refused the new login")
        .stderr_has("The host still sends as postrelay@shop.example");
    assert!(
        world
            .api
            .logins(SHOP)
            .contains_key("postrelay-2@shop.example")
    );
    assert_still_old(&world, &before, "step3");

    // Step 4: apply fails (postmap breaks); the desired state is put back.
    world.relay.also_accept(world.api.accounts());
    let bin = world
        .inst
        .stub("postmap", "echo 'postmap: fatal: injected' >&2; exit 1");
    world
        .rotate_in(
            &world.secrets(),
            &[(crate::harness::api::TOOL_DIR_VAR, &bin)],
            &[],
        )
        .error()
        .stderr_has(
            "stopped at step 4 of 5 (apply the new login, then name it in the desired state)",
        )
        .stderr_has("The host still sends as postrelay@shop.example, which still works.");
    assert_still_old(&world, &before, "step4");

    // Step 5: the old login cannot be deleted; the host already uses the new one.
    world.api.fail(
        "DELETE",
        "/credentials/postrelay",
        503,
        "Service unavailable",
        1,
    );
    world
        .rotate(&[])
        .error()
        .stderr_has("stopped at step 5 of 5 (delete the old login at Mailgun)")
        .stderr_has("The host now sends as postrelay-2@shop.example (checked and applied); the old login postrelay@shop.example still exists at Mailgun.")
        .stderr_has("postrelay mailgun rotate --sender shop.example --delete-login postrelay@shop.example");
    assert_eq!(world.deliver("step5").0, "postrelay-2@shop.example");
    // The login in use cannot be deleted; the old one can.
    world
        .rotate(&["--delete-login", "postrelay-2@shop.example"])
        .error()
        .stderr_has("uses this login for shop.example; rotate first");
    world
        .rotate(&["--delete-login", OLD_LOGIN])
        .success()
        .stdout_has("postrelay@shop.example deleted at Mailgun");
    assert_eq!(
        world.api.logins(SHOP).keys().collect::<Vec<_>>(),
        ["postrelay-2@shop.example"]
    );
    assert_eq!(world.deliver("done").0, "postrelay-2@shop.example");
}

/// The live path of the guide: an account with three domains, `mailgun sync`, then
/// `apply --verify`, then mail from each domain leaves with its own new login.
#[test]
fn sync_then_apply_verify_then_each_domain_delivers_with_its_new_login() {
    if !live_ok() {
        return;
    }
    let world = World::new(3);
    let domains = ["one.example", "two.example", "three.example"];
    for d in domains {
        world.api.add_domain(d, "active");
    }
    world.relay.also_accept(world.api.accounts());
    let (config, secrets, base) = (world.config(), world.secrets(), world.api.base());
    world
        .postrelay(&sync_args(&config, &secrets, &base))
        .success()
        .stdout_has("4 domain(s) in the account (us), 1 already in")
        .stdout_has("3 added");
    let run = world.postrelay(&["apply", "--verify", "--config", config.to_str().unwrap()]);
    run.success().stdout_has("ok");
    for d in domains {
        let login = format!("postrelay@{d}");
        let password = world.api.logins(d)[&login].clone();
        run.assert_hides(&password);
        let id = message_id(d);
        world
            .inst
            .send(&format!("news@{d}"), &["reader@dest.test"], &id);
        let m = world.inst.expect_delivery(&world.relay, &id);
        assert_eq!(
            (m.auth_user.as_deref(), m.auth_password.as_deref()),
            (Some(login.as_str()), Some(password.as_str()))
        );
        assert!(m.tls_at_auth);
    }
    // The shop is untouched and a second apply changes nothing.
    assert_eq!(world.deliver("shop").0, OLD_LOGIN);
    let before = world.files();
    world
        .postrelay(&["apply", "--config", config.to_str().unwrap()])
        .success()
        .stdout_has("no changes");
    assert_eq!(world.files(), before);
}
