//! `postrelay import` adopts a hand-made setup without changing its routing.
//!
//! Each setup is a fixture `fixtures/handmade/NAME/`: a main.cf fragment (`@ETC@` is
//! the config dir), the map sources it names (relative to the config dir), `senders`
//! (the senders to resolve, one a line, `<>` the null sender) and, when import must
//! report something, `findings` (a text each finding line must hold, one a line).
//!
//! The proof, per setup: install it in a temp config dir and compile its maps with
//! postmap; resolve every sender as Postfix does, asking the real maps main.cf lists
//! with `postmap -q` for every key form, in Postfix's order ([`Lookups`]); import;
//! `validate` accepts the result; before apply, every entry of the three maps `plan`
//! would write equals what Postfix resolves now for its key; apply twice (the second
//! changes nothing); resolve again: the same next hop, credentials and TLS policy for
//! every sender, and still the same with the tables postrelay does not own listed after
//! its own (as apply may keep them). No password is printed by any of these runs.
//!
//! Then: what import cannot express is reported with its place and reason and never
//! quotes a password (`inexpressible`); stdout gets the document only with
//! `--password-dir`, and no existing file is ever overwritten; a missing or stale source
//! is read as Postfix reads it (the compiled map); bad input is an error naming file and
//! line that writes nothing; the defaults import assumes are the installed Postfix's.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use postrelay::syntax::maincf::MainCf;
use postrelay::syntax::table::Table;

use crate::harness::postfix::{self, postmap};
use crate::harness::{Cmd, Host, Need, Run, api, backdate, output_ok, output_with_input};
use crate::require;

/// The map parameters, in the order Postfix's lookups use them here.
const SASL: &str = "smtp_sasl_password_maps";
const RELAY: &str = "sender_dependent_relayhost_maps";
const POLICY: &str = "smtp_tls_policy_maps";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/handmade")
        .join(name)
}

/// Lines of a fixture file (none when it is missing), without blank ones.
fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// A hand-made setup installed in a temp config dir, its maps compiled.
struct Setup {
    host: Host,
    senders: Vec<String>,
    findings: Vec<String>,
}

fn install(name: &str) -> Setup {
    let dir = fixture(name);
    let host = Host::new("");
    let fragment = host.expand(&fs::read_to_string(dir.join("main.cf")).unwrap());
    host.edit_main_cf(|text| text + &fragment);
    copy_maps(&dir, &dir, &host);
    // Every Postfix host has a master.cf; a relay on port 465 needs postrelay's service
    // added to it.
    host.write_etc(
        "master.cf",
        "smtp      unix  -       -       y       -       -       smtp\n",
    );
    for map in [SASL, RELAY, POLICY].iter().flat_map(|p| maps_of(&host, p)) {
        if map.starts_with("hash:") || map.starts_with("btree:") {
            output_ok(&mut postmap(&host.etc, &[map.as_ref()]));
        }
    }
    Setup {
        senders: lines(&dir.join("senders")),
        findings: lines(&dir.join("findings")),
        host,
    }
}

/// Copies the map sources under `dir` into the config dir, keeping relative paths.
fn copy_maps(root: &Path, dir: &Path, host: &Host) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let rel = path.strip_prefix(root).unwrap();
        if path.is_dir() {
            fs::create_dir_all(host.etc.join(rel)).unwrap();
            copy_maps(root, &path, host);
        } else if !["main.cf", "senders", "findings"].contains(&rel.to_str().unwrap()) {
            host.write_etc(rel.to_str().unwrap(), fs::read(&path).unwrap());
        }
    }
}

/// `postconf -x -h NAME`: the value Postfix uses, `$name` expanded.
fn postconf_x(host: &Host, name: &str) -> String {
    let out = output_ok(&mut host.postconf().command(&["-x", "-h", name]));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The tables a `*_maps` parameter lists, as `type:name`, in order.
fn maps_of(host: &Host, param: &str) -> Vec<String> {
    postconf_x(host, param)
        .split([',', ' ', '\t', '\n'])
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .collect()
}

/// What Postfix resolves for one sender.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Route {
    /// Lowercased; empty: the recipient's MX.
    next_hop: String,
    /// `user:password` as the password map returns it.
    credentials: Option<String>,
    /// The TLS policy for the next hop: its level (lowercased) and attributes.
    tls: String,
}

/// Postfix's lookups for one config dir, answered by `postmap -q` against the maps
/// main.cf lists now (read again for every [`Lookups::new`]).
struct Lookups {
    etc: PathBuf,
    relayhost: String,
    sasl_on: bool,
    sender_auth: bool,
    delimiters: String,
    global_tls: String,
    maps: HashMap<&'static str, Vec<String>>,
}

impl Lookups {
    fn new(host: &Host) -> Lookups {
        let yes = |name| postconf_x(host, name) == "yes";
        let global_tls = postconf_x(host, "smtp_tls_security_level");
        Lookups {
            etc: host.etc.clone(),
            relayhost: postconf_x(host, "relayhost"),
            sasl_on: yes("smtp_sasl_auth_enable"),
            sender_auth: yes("smtp_sender_dependent_authentication"),
            delimiters: postconf_x(host, "recipient_delimiter"),
            global_tls: if global_tls.is_empty() {
                "none".into()
            } else {
                global_tls
            },
            maps: [SASL, RELAY, POLICY]
                .into_iter()
                .map(|p| (p, maps_of(host, p)))
                .collect(),
        }
    }

    /// `postmap -q - MAP` with `keys` on stdin: what the map holds for each.
    fn query(&self, map: &str, keys: &[String]) -> HashMap<String, String> {
        let mut postmap = postmap(&self.etc, &["-q".as_ref(), "-".as_ref(), map.as_ref()]);
        let out = output_with_input(&mut postmap, keys.join("\n").as_bytes());
        assert!(
            out.stderr.is_empty(),
            "postmap -q - {map}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect()
    }

    /// The value for the first key found, each key tried in every map of `param`
    /// before the next key (Postfix's maps_find).
    fn first(&self, param: &str, keys: &[String]) -> Option<String> {
        let keys: Vec<String> = keys.iter().map(|k| k.to_ascii_lowercase()).collect();
        let found: Vec<HashMap<String, String>> = self.maps[param]
            .iter()
            .map(|m| self.query(m, &keys))
            .collect();
        keys.iter()
            .find_map(|k| found.iter().find_map(|f| f.get(k).cloned()))
    }

    /// The address, the address without its extension, `@domain`.
    fn address_keys(&self, address: &str) -> Vec<String> {
        let (local, domain) = address.rsplit_once('@').unwrap();
        let mut keys = vec![address.to_string()];
        if let Some(cut) = local
            .find(|c| self.delimiters.contains(c))
            .filter(|&c| c > 0)
        {
            keys.push(format!("{}@{domain}", &local[..cut]));
        }
        keys.push(format!("@{domain}"));
        keys
    }

    /// The route of mail from `sender` (`<>`: the null sender).
    fn route(&self, sender: &str) -> Route {
        let sender = sender.to_ascii_lowercase();
        let keys = if sender == "<>" {
            Vec::new()
        } else {
            self.address_keys(&sender)
        };
        let relay_keys = if sender == "<>" {
            vec![sender.clone()]
        } else {
            keys.clone()
        };
        let next_hop = self
            .first(RELAY, &relay_keys)
            .filter(|v| !v.eq_ignore_ascii_case("DUNNO"))
            .unwrap_or_else(|| self.relayhost.clone());
        let credentials = if self.sasl_on && !next_hop.is_empty() {
            let mut sasl_keys = if self.sender_auth { keys } else { Vec::new() };
            let host = next_hop
                .trim_start_matches('[')
                .split([']', ':'])
                .next()
                .unwrap();
            sasl_keys.extend([host.to_string(), next_hop.clone()]);
            self.first(SASL, &sasl_keys)
        } else {
            None
        };
        Route {
            tls: self.tls(&next_hop),
            next_hop: next_hop.to_ascii_lowercase(),
            credentials,
        }
    }

    /// The TLS policy for a next hop: the hop, then (a bare host name only) each
    /// parent domain as `.parent`; else the global level.
    fn tls(&self, next_hop: &str) -> String {
        let hop = next_hop.to_ascii_lowercase();
        let mut keys = vec![hop.clone()];
        if !hop.contains(['[', ':']) {
            keys.extend(hop.match_indices('.').map(|(i, _)| hop[i..].to_string()));
        }
        let policy = self
            .first(POLICY, &keys)
            .unwrap_or_else(|| self.global_tls.clone());
        let mut words = policy.split_whitespace();
        let level = words.next().unwrap_or_default().to_ascii_lowercase();
        std::iter::once(level)
            .chain(words.map(str::to_string))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn routes(&self, senders: &[String]) -> Vec<(String, Route)> {
        senders.iter().map(|s| (s.clone(), self.route(s))).collect()
    }
}

/// A sender a table key stands for: the address, or an address no table lists in
/// the `@domain`.
fn probe(key: &str) -> String {
    match key.strip_prefix('@') {
        Some(domain) => format!("import-probe@{domain}"),
        None => key.to_string(),
    }
}

/// Every password the setup's password maps hold now (`postmap -s`), except one that
/// is also its username (Postmark's server token is both): usernames are shown.
fn passwords(host: &Host) -> Vec<String> {
    maps_of(host, SASL)
        .iter()
        .flat_map(|m| postfix::dump(&host.etc, m))
        .filter_map(|line| {
            let (user, password) = line.split_once('\t')?.1.split_once(':')?;
            (user != password).then(|| password.to_string())
        })
        .collect()
}

#[track_caller]
fn assert_hides(run: &Run, passwords: &[String]) {
    for p in passwords {
        run.assert_hides(p);
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().mode() & 0o7777
}

/// The entries of each map `plan` would write equal what Postfix resolves now for
/// their keys, and so does the relayhost.
fn plan_keeps_routing(host: &Host, now: &Lookups) {
    let planned = api::planned(&host.config, &host.etc);
    let entries = |name: &str| -> Vec<(String, String)> {
        let bytes = planned
            .maps
            .get(name)
            .cloned()
            .unwrap_or_else(|| fs::read(host.path(name)).unwrap());
        let s = |b: Vec<u8>| String::from_utf8(b).unwrap();
        Table::parse(&bytes)
            .entries()
            .into_iter()
            .map(|e| (s(e.key), s(e.value)))
            .collect()
    };
    let main_cf = planned
        .main_cf
        .clone()
        .unwrap_or_else(|| fs::read(host.main_cf()).unwrap());
    let relayhost = MainCf::parse(&main_cf).get("relayhost").unwrap_or_default();
    assert_eq!(relayhost, now.relayhost.to_ascii_lowercase(), "relayhost");
    for (key, value) in entries("sender_relay") {
        let want = if value == "DUNNO" {
            relayhost.clone()
        } else {
            value
        };
        assert_eq!(now.route(&probe(&key)).next_hop, want, "sender_relay {key}");
    }
    for (key, value) in entries("sasl_passwd") {
        let sender = if key.contains('@') {
            probe(&key)
        } else {
            "<>".to_string()
        };
        if !key.contains('@') {
            assert_eq!(key, relayhost, "a next-hop key other than the relayhost");
        }
        assert_eq!(
            now.route(&sender).credentials.as_ref(),
            Some(&value),
            "sasl_passwd {key}"
        );
    }
    for (key, value) in entries("tls_policy") {
        assert_eq!(now.tls(&key), value, "tls_policy {key}");
    }
}

/// The whole proof for one setup (see the module doc).
fn prove(name: &str) {
    require!(Need::Postfix, Need::Root);
    let Setup {
        host,
        senders,
        findings,
    } = install(name);
    let before = Lookups::new(&host).routes(&senders);
    assert!(
        before.iter().any(|(_, r)| r.credentials.is_some()),
        "{name}: the setup authenticates no sender"
    );
    let secrets = passwords(&host);
    let password_dir = host.tmp.path().join("secrets");
    let run = Cmd::new(&["import", "--postfix-dir", host.etc.to_str().unwrap()])
        .args(&["--output", host.config.to_str().unwrap()])
        .args(&["--password-dir", password_dir.to_str().unwrap()])
        .run();
    assert_hides(&run, &secrets);
    run.code(if findings.is_empty() { 0 } else { 1 })
        .stdout_has(&format!("into {}", host.config.display()));
    let reported: Vec<&str> = run.stderr.lines().collect();
    if findings.is_empty() {
        assert_eq!(run.stderr, "", "{name}: import reported something");
    } else {
        assert_eq!(
            reported.len(),
            findings.len() + 1,
            "{name}:\n{}",
            run.stderr
        );
        for f in &findings {
            run.stderr_has(f);
        }
    }
    let text = fs::read_to_string(&host.config).unwrap();
    assert!(
        !text.contains("\npassword = "),
        "{name}: an inline password:\n{text}"
    );
    for p in &secrets {
        assert!(
            !text.contains(p.as_str()),
            "{name}: a password in the desired state:\n{text}"
        );
    }
    assert_eq!((mode(&host.config), mode(&password_dir)), (0o600, 0o700));
    for file in fs::read_dir(&password_dir).unwrap() {
        let file = file.unwrap().path();
        assert_eq!(mode(&file), 0o600, "{}", file.display());
        let pw = fs::read_to_string(&file).unwrap();
        assert!(text.contains(&format!("password_file = \"{}\"", file.display())));
        assert!(
            pw.ends_with('\n') && !pw.trim_end().is_empty(),
            "{}",
            file.display()
        );
    }
    assert_hides(host.cmd("validate").run().success(), &secrets);
    plan_keeps_routing(&host, &Lookups::new(&host));
    assert_hides(host.plan().code(1), &secrets);
    let original: Vec<Vec<String>> = [SASL, RELAY, POLICY].map(|p| maps_of(&host, p)).into();
    assert_hides(&host.apply_twice(), &secrets);
    let after = Lookups::new(&host).routes(&senders);
    assert_eq!(after, before, "{name}: the routing changed");
    // Should apply keep the tables it does not own after its own, nothing changes either.
    let mut settings = Vec::new();
    for (param, original) in [SASL, RELAY, POLICY].into_iter().zip(original) {
        let own = maps_of(&host, param);
        let others = original.into_iter().filter(|m| !own.contains(m));
        let kept: Vec<String> = own.iter().cloned().chain(others).collect();
        settings.push(format!("{param} = {}", kept.join(", ")));
    }
    let mut edit = vec!["-e"];
    edit.extend(settings.iter().map(String::as_str));
    output_ok(&mut host.postconf().command(&edit));
    backdate(&host.main_cf());
    let kept = Lookups::new(&host).routes(&senders);
    assert_eq!(
        kept, before,
        "{name}: the routing changed with the old tables kept"
    );
}

#[test]
fn the_guides_multi_relay_setup_with_a_catch_all_keeps_its_routing() {
    prove("guide-multi-relay");
}

#[test]
fn the_guides_single_relay_variant_keeps_its_routing() {
    prove("guide-single-relay");
}

#[test]
fn a_debian_sasl_directory_layout_keeps_its_routing() {
    prove("debian-sasl-dir");
}

#[test]
fn address_entries_keep_their_routing() {
    prove("address-entries");
}

#[test]
fn a_separate_tls_policy_map_keeps_its_policies() {
    prove("tls-policy-map");
}

#[test]
fn texthash_maps_keep_their_routing() {
    prove("texthash");
}

#[test]
fn map_lists_over_several_lines_keep_their_routing() {
    prove("continued-lists");
}

/// The secrets of the `inexpressible` fixture.
const INEXPRESSIBLE_SECRETS: &[&str] = &[
    "DOMAIN-SECRET-81b2",
    "RELAY-SECRET-0a7d",
    "OLD-SECRET-33f0",
    "LOCALPART-SECRET-e91c",
    "INLINE-SECRET-5c1e",
    "nopass-user",
];

#[test]
fn import_reports_what_it_cannot_express_and_prints_no_password() {
    require!(Need::Postfix);
    let Setup { host, findings, .. } = install("inexpressible");
    let run = Cmd::new(&["import", "--postfix-dir", host.etc.to_str().unwrap()])
        .args(&["--output", host.config.to_str().unwrap()])
        .run();
    for s in INEXPRESSIBLE_SECRETS {
        run.assert_hides(s);
    }
    run.code(1);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), findings.len() + 1, "{}", run.stderr);
    assert!(lines.iter().all(|l| l.starts_with("postrelay: import: ")));
    for f in &findings {
        run.stderr_has(f);
    }
    run.stderr_has(&format!(
        "{} finding(s): what they name is not imported",
        findings.len()
    ));
    // Inline passwords, in a private file: the imported ones only.
    let text = fs::read_to_string(&host.config).unwrap();
    assert_eq!(mode(&host.config), 0o600);
    for (secret, imported) in [("DOMAIN-SECRET-81b2", true), ("RELAY-SECRET-0a7d", true)]
        .into_iter()
        .chain(INEXPRESSIBLE_SECRETS[2..].iter().map(|s| (*s, false)))
    {
        assert_eq!(text.contains(secret), imported, "{secret} in:\n{text}");
    }
    assert!(
        text.contains("relay = \"[smtp.example.net]:587\""),
        "{text}"
    );
    assert!(text.contains("# Not imported as it was"), "{text}");
    let validate = host.cmd("validate").run();
    validate.success();
    for s in INEXPRESSIBLE_SECRETS {
        validate.assert_hides(s);
    }
}

#[test]
fn import_to_stdout_needs_a_password_dir_and_never_overwrites_a_file() {
    require!(Need::Postfix);
    let Setup { host, .. } = install("guide-multi-relay");
    let secrets = passwords(&host);
    let etc = host.etc.to_str().unwrap().to_string();
    let import = |args: &[&str]| {
        let run = Cmd::new(&["import", "--postfix-dir", &etc])
            .args(args)
            .run();
        assert_hides(&run, &secrets);
        run
    };
    let before = host.files();
    let dir = host.tmp.path().join("pw");
    let dir_s = dir.to_str().unwrap();

    import(&["--output", "-"])
        .error()
        .stderr_has("--output - prints the desired state on stdout, where no password may go: give --password-dir DIR too");

    // At the highest verbosity too, stdout is the document alone and no password shows.
    let run = Cmd::new(&["import", "--postfix-dir", &etc])
        .args(&["--output", "-", "--password-dir", dir_s])
        .loud()
        .run();
    assert_hides(&run, &secrets);
    run.success().stderr_has("running postmap");
    assert!(
        run.stdout.starts_with("# postrelay desired state"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("password_file = "), "{}", run.stdout);
    host.desired(&run.stdout);
    host.cmd("validate").run().success();
    assert_eq!(mode(&dir), 0o700);

    // An existing desired-state file is named and left alone; nothing else is created.
    let other = host.tmp.path().join("other-pw");
    import(&[
        "--output",
        host.config.to_str().unwrap(),
        "--password-dir",
        other.to_str().unwrap(),
    ])
    .error()
    .stderr_has(&format!(
        "{}: already exists; import never overwrites a file",
        host.config.display()
    ));
    assert_eq!(fs::read_to_string(&host.config).unwrap(), run.stdout);
    assert!(!other.exists());

    // So is an existing password file, before anything is written.
    let fresh = host.tmp.path().join("fresh.toml");
    import(&["--output", fresh.to_str().unwrap(), "--password-dir", dir_s])
        .error()
        .stderr_has(&format!(
            "{}: already exists",
            dir.join("relayhost").display()
        ));
    assert!(!fresh.exists());
    assert_eq!(host.files(), before, "import wrote in the config dir");
}

#[test]
fn import_reads_what_postfix_uses_even_when_the_source_is_missing_or_stale() {
    require!(Need::Postfix, Need::Root);
    // Only the compiled sender_relay.db is left: postmap -s gives its entries.
    let Setup { host, senders, .. } = install("guide-multi-relay");
    let before = Lookups::new(&host).routes(&senders);
    fs::remove_file(host.path("sender_relay")).unwrap();
    Cmd::new(&["import", "--postfix-dir", host.etc.to_str().unwrap()])
        .args(&["--output", host.config.to_str().unwrap()])
        .run()
        .success();
    host.apply_twice();
    assert_eq!(Lookups::new(&host).routes(&senders), before);

    // A source edited after postmap: Postfix still uses the compiled map, so does import.
    let Setup { host, senders, .. } = install("guide-multi-relay");
    let before = Lookups::new(&host).routes(&senders);
    let source = fs::read_to_string(host.path("sasl_passwd")).unwrap();
    host.write_etc(
        "sasl_passwd",
        source.replace("Gu1de-necrux-2016", "edited-not-compiled"),
    );
    let run = Cmd::new(&["import", "--postfix-dir", host.etc.to_str().unwrap()])
        .args(&["--output", host.config.to_str().unwrap()])
        .run();
    run.code(1).stderr_has(&format!(
        "{}: {}.db holds other entries than its source (postmap not run since the last edit?): imported what Postfix uses, the compiled map",
        host.path("sasl_passwd").display(),
        host.path("sasl_passwd").display()
    ));
    run.assert_hides("edited-not-compiled");
    run.assert_hides("Gu1de-necrux-2016");
    let text = fs::read_to_string(&host.config).unwrap();
    assert!(text.contains("Gu1de-necrux-2016") && !text.contains("edited-not-compiled"));
    host.apply_twice();
    assert_eq!(Lookups::new(&host).routes(&senders), before);
}

#[test]
fn the_defaults_import_assumes_are_postfixs() {
    require!(Need::Postfix);
    let host = Host::new("");
    for (name, value) in postrelay::import::DEFAULTS {
        let out = output_ok(&mut host.postconf().command(&["-d", "-h", name]));
        assert_eq!(
            String::from_utf8(out.stdout).unwrap().trim_end(),
            *value,
            "{name}"
        );
    }
}

#[test]
fn bad_input_is_an_error_naming_file_and_line_and_writes_nothing() {
    require!(Need::Postfix);
    let cases: &[(&str, &str)] = &[
        (
            "relayhost = [a.example]:587\njustaword\n",
            "main.cf, line 4: missing '=' after attribute name",
        ),
        (
            "relayhost = [a.example]:587\nsmtp_sasl_password_maps = hash:$nosuch/sasl_passwd\n",
            "main.cf, line 4: smtp_sasl_password_maps: $nosuch is not set in main.cf",
        ),
        (
            "relayhost = [a.example]:587\nsmtp_sasl_password_maps = hash:@ETC@/missing\n",
            "reading the tables of smtp_sasl_password_maps: @ETC@/missing: no such file (and no compiled map)",
        ),
        (
            "myhostname = a.example\n",
            "nothing to import: no relayhost, and no table",
        ),
    ];
    for (main_cf, error) in cases {
        let host = Host::new("");
        let text = host.expand(main_cf);
        host.edit_main_cf(|t| t + &text);
        let before = host.files();
        let pw = host.tmp.path().join("pw");
        Cmd::new(&["import", "--postfix-dir", host.etc.to_str().unwrap()])
            .args(&["--output", host.config.to_str().unwrap()])
            .args(&["--password-dir", pw.to_str().unwrap()])
            .run()
            .error()
            .stderr_has(&host.expand(error));
        assert!(
            !host.config.exists() && !pw.exists(),
            "{main_cf}: something was written"
        );
        assert_eq!(host.files(), before);
    }
    let help = Cmd::new(&["import", "--help"]).run();
    help.success().stdout_has("--password-dir <DIR>");
    Cmd::new(&["--help"]).run().success().stdout_has(
        "import    0 imported, 1 imported with findings (listed on stderr: review them before",
    );
}
