//! `postrelay generate`: the man page postrelay(8) and the bash, zsh and fish completion
//! scripts, all made from the clap definition in `cli`, so that a flag added there
//! appears in them without an edit here. The man page walks clap's command tree
//! (every visible subcommand, every visible flag, rendered by clap_mangen) and the exit
//! statuses of `--help`; the prose clap has no place for (the desired-state file, the
//! files postrelay owns, examples) is written here with the `roff` crate, naming paths
//! through the constants of `desired`, `managed` and `hold`. Like `--help` in `cli`,
//! this text is the command's documentation, not a report, so it lives here rather
//! than in `report`.
//!
//! Writing it stops quietly when the reader goes away (`postrelay generate man | head`):
//! a closed pipe is success, not an error.

use std::io::{self, Write};

use clap::{Arg, ArgAction, Command, CommandFactory};
use clap_complete::Shell;
use clap_mangen::Man;
use roff::{Inline, Roff, bold, italic, roman};

use crate::cli::{Cli, Generated};
use crate::desired::{DEFAULT_CONFIG, MAP_TYPES};
use crate::managed::{self, MapKind};

/// The man page's section: administration commands.
pub const SECTION: &str = "8";

/// Where the Debian package installs the systemd units, the cron example and the
/// example desired state (`[package.metadata.deb]` in Cargo.toml).
pub const SERVICE_UNIT: &str = "/usr/lib/systemd/system/postrelay.service";
pub const TIMER_UNIT: &str = "/usr/lib/systemd/system/postrelay.timer";
pub const CRON_EXAMPLE: &str = "/etc/cron.d/postrelay";
pub const EXAMPLE_CONFIG: &str = "/usr/share/doc/postrelay/examples/postrelay.toml";

/// Writes `what` to `out`. A reader that has gone away (`EPIPE`: Rust ignores
/// `SIGPIPE`, so a closed pipe is an error from `write`) ends the output early and
/// successfully.
pub fn write(what: Generated, out: &mut impl Write) -> io::Result<()> {
    match out.write_all(&render(what)).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// The bytes of `what`, for postrelay's own command line.
pub fn render(what: Generated) -> Vec<u8> {
    let cmd = Cli::command();
    match what {
        Generated::Man => man_page(cmd).into_bytes(),
        Generated::CompleteBash => completion(Shell::Bash, cmd),
        Generated::CompleteZsh => completion(Shell::Zsh, cmd),
        Generated::CompleteFish => completion(Shell::Fish, cmd),
    }
}

/// A completion script for `shell`, for `cmd` as [`Cli::command`] gives it (not built).
pub fn completion(shell: Shell, cmd: Command) -> Vec<u8> {
    let mut shown = visible(&cmd);
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut shown, cmd.get_name().to_string(), &mut out);
    out
}

/// `cmd` without its hidden subcommands (`generate`), which clap_complete would offer:
/// its generators complete every subcommand. clap cannot remove a subcommand, so this
/// builds the command again from the visible parts; its name and version are postrelay's.
fn visible(cmd: &Command) -> Command {
    Command::new(env!("CARGO_PKG_NAME"))
        .version(env!("CARGO_PKG_VERSION"))
        .args(cmd.get_arguments().filter(|a| !a.is_hide_set()).cloned())
        .subcommands(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned())
}

/// The man page of `cmd` as roff source, in section [`SECTION`].
pub fn man_page(mut cmd: Command) -> String {
    cmd.build();
    let name = cmd.get_name().to_string();
    let version = cmd.get_version().unwrap_or_default().to_string();
    let man = Man::new(cmd.clone())
        .title(name.to_uppercase())
        .section(SECTION)
        // No date, for a reproducible page; an empty argument must be written `""`, or
        // .TH would take the source for the date.
        .date("\"\"")
        .source(format!("{name} {version}"))
        .manual("System Manager's Manual");

    let mut page = String::new();
    push_clap(&mut page, |w| man.render_title(w));
    // Flags and paths read better unhyphenated and unjustified in a terminal.
    let mut layout = Roff::new();
    layout.control("nh", []).control("ad", ["l"]);
    push(&mut page, &layout.render());
    push_clap(&mut page, |w| man.render_name_section(w));

    let mut synopsis = Roff::new();
    synopsis.control("SH", ["SYNOPSIS"]);
    for sub in subcommands(&cmd) {
        synopsis.text(usage(sub)).control("br", []);
    }
    push(&mut page, &synopsis.render());

    push(&mut page, &description().render());
    // The global options (-v, --help, --version), as clap_mangen renders them.
    push_clap(&mut page, |w| man.render_options_section(w));
    push(&mut page, &commands(&cmd));
    for section in [
        exit_status(&cmd),
        desired_state_file(),
        files(),
        environment(),
        examples(),
        see_also(),
    ] {
        push(&mut page, &section.render());
    }
    page
}

/// The visible subcommands, in their order of definition, without the `help` clap
/// adds (OPTIONS has --help).
fn subcommands(cmd: &Command) -> impl Iterator<Item = &Command> {
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
}

/// The commands the page documents, each with its full name: a command with commands
/// of its own (mailgun) stands for them (`mailgun sync`, `mailgun rotate`).
fn documented(cmd: &Command) -> Vec<(String, &Command)> {
    subcommands(cmd)
        .flat_map(|sub| {
            let nested: Vec<(String, &Command)> = subcommands(sub)
                .map(|n| (format!("{} {}", sub.get_name(), n.get_name()), n))
                .collect();
            match nested.is_empty() {
                true => vec![(sub.get_name().to_string(), sub)],
                false => nested,
            }
        })
        .collect()
}

/// A subcommand's own flags: visible, not the global ones (documented once, under
/// OPTIONS) nor `--help`.
fn own_args(sub: &Command) -> impl Iterator<Item = &Arg> {
    sub.get_arguments().filter(|a| {
        !a.is_hide_set() && !a.is_global_set() && !matches!(a.get_action(), ArgAction::Help)
    })
}

/// `postrelay plan [--config FILE] [--postfix-dir DIR] [--show-secrets]`.
fn usage(sub: &Command) -> Vec<Inline> {
    let bin = sub.get_bin_name().unwrap_or_else(|| sub.get_name());
    let mut line = vec![bold(bin)];
    for arg in own_args(sub) {
        let (open, close) = if arg.is_required_set() {
            ("", "")
        } else {
            ("[", "]")
        };
        line.push(roman(format!(" {open}")));
        if arg.is_positional() {
            let name = arg
                .get_value_names()
                .map(|v| v.join(" "))
                .unwrap_or_else(|| arg.get_id().to_string().to_uppercase());
            line.push(italic(name));
        } else {
            match (arg.get_long(), arg.get_short()) {
                (Some(long), _) => line.push(bold(format!("--{long}"))),
                (None, Some(short)) => line.push(bold(format!("-{short}"))),
                (None, None) => {}
            }
            let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values());
            if takes_value && let Some(names) = arg.get_value_names() {
                line.push(roman(" "));
                line.push(italic(names.join(" ")));
            }
        }
        line.push(roman(close));
    }
    line
}

/// COMMANDS: each visible subcommand with its usage, its description and its flags
/// (rendered by clap_mangen, as OPTIONS is), as roff source.
fn commands(cmd: &Command) -> String {
    let mut out = String::new();
    let mut heading = Roff::new();
    heading.control("SH", ["COMMANDS"]);
    push(&mut out, &heading.render());
    for (name, sub) in documented(cmd) {
        let mut r = Roff::new();
        r.control("SS", [name.as_str()]);
        r.text(usage(sub));
        if let Some(about) = sub.get_long_about().or_else(|| sub.get_about()) {
            // clap drops the final period of a one-paragraph doc comment.
            let mut about = about.to_string();
            if !about.ends_with(['.', ')']) {
                about.push('.');
            }
            r.control("PP", []);
            r.text([roman(about)]);
        }
        push(&mut out, &r.render());
        if own_args(sub).next().is_some() {
            push(&mut out, &options(sub));
        }
    }
    out
}

/// A subcommand's own flags as clap_mangen renders a command's OPTIONS section, without
/// the section heading (it renders flags only as a whole section).
fn options(sub: &Command) -> String {
    let others: Vec<String> = sub
        .get_arguments()
        .filter(|a| !own_args(sub).any(|o| o.get_id() == a.get_id()))
        .map(|a| a.get_id().to_string())
        .collect();
    let own = others
        .into_iter()
        .fold(sub.clone(), |c, id| c.mut_arg(id, |a| a.hide(true)));
    let mut rendered = Vec::new();
    Man::new(own)
        .render_options_section(&mut rendered)
        .expect("writing to a Vec");
    let rendered = String::from_utf8(rendered).expect("clap_mangen writes UTF-8");
    let flags = strip_preamble(&rendered)
        .strip_prefix(".SH OPTIONS\n")
        .expect("clap_mangen's options section starts with its heading");
    let mut intro = Roff::new();
    intro.control("PP", []).text([italic("Options:")]);
    let mut out = String::new();
    push(&mut out, &intro.render());
    out.push_str(flags);
    out
}

/// EXIT STATUS, from the `Exit status:` block of `--help` (cli's `after_help`): one
/// entry per command, continuation lines joined. The paragraphs after it go to
/// DIAGNOSTICS.
fn exit_status(cmd: &Command) -> Roff {
    let after = cmd
        .get_after_long_help()
        .or_else(|| cmd.get_after_help())
        .map(|s| s.to_string())
        .unwrap_or_default();
    let (table, rest) = exit_table(&after);
    let mut r = Roff::new();
    r.control("SH", ["EXIT STATUS"]);
    r.text([roman(
        "0, 1 and 2 mean, for each command (a usage error, from clap, is 2 as well):",
    )]);
    for (command, meaning) in &table {
        r.control("TP", ["10"]).text([bold(command.as_str())]);
        r.text([roman(meaning.as_str())]);
    }
    if !rest.is_empty() {
        r.control("SH", ["DIAGNOSTICS"]);
        for paragraph in rest {
            r.control("PP", []).text([roman(paragraph)]);
        }
    }
    r
}

/// Splits `--help`'s after-help text into the exit-status rows (command, meaning) and
/// the other paragraphs. A row is a line indented by two spaces and starting with a
/// word; deeper indented lines continue it.
pub fn exit_table(after_help: &str) -> (Vec<(String, String)>, Vec<String>) {
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut rest = Vec::new();
    for paragraph in after_help.split("\n\n") {
        let mut lines = paragraph.lines();
        if lines.next().map(str::trim) != Some("Exit status:") {
            let text: Vec<&str> = paragraph.lines().map(str::trim).collect();
            if !text.is_empty() {
                rest.push(text.join(" "));
            }
            continue;
        }
        for line in lines {
            let row = line.strip_prefix("  ").filter(|l| !l.starts_with(' '));
            // The command (one or two words) ends at the first run of two spaces.
            match (row.and_then(|l| l.split_once("  ")), rows.last_mut()) {
                (Some((command, meaning)), _) => {
                    rows.push((command.to_string(), meaning.trim().to_string()))
                }
                (None, Some((_, meaning))) => {
                    meaning.push(' ');
                    meaning.push_str(line.trim());
                }
                (None, None) => {}
            }
        }
    }
    (rows, rest)
}

fn description() -> Roff {
    let mut r = Roff::new();
    r.control("SH", ["DESCRIPTION"]);
    r.text([
        bold("postrelay"),
        roman(
            " configures Postfix for sender-dependent SASL relaying: each sender domain (or \
             address) leaves through its own relay with its own SMTP credentials, from one \
             TOML file, the desired state. ",
        ),
        bold("plan"),
        roman(" shows what would change, as a diff with passwords masked; "),
        bold("apply"),
        roman(
            " makes the host match it: atomically, idempotently, and reloading Postfix only \
             when something changed, so it can run from cron or a systemd timer. ",
        ),
        bold("verify"),
        roman(" logs in to every relay with every credential before anything goes live, and "),
        bold("import"),
        roman(" writes a desired state from what Postfix does now."),
    ]);
    r.control("PP", []);
    r.text([roman(
        "postrelay runs as root and treats every file it reads as a possible attacker: the \
         desired-state file, every password file, the Postfix configuration directory and \
         main.cf are read only when root alone can change them, they and every directory \
         above them (anything else is refused with exit status 2). Postfix's programs are \
         run from /usr/sbin, /usr/local/sbin or /sbin, never from PATH. No password is put \
         on a command line, printed or logged.",
    )]);
    r
}

fn desired_state_file() -> Roff {
    let mut r = Roff::new();
    r.control("SH", ["DESIRED STATE FILE"]);
    r.text([
        roman("One TOML file, "),
        italic(DEFAULT_CONFIG),
        roman(" unless "),
        bold("--config"),
        roman(" names another. "),
        bold("postrelay init"),
        roman(" writes a commented starter; "),
        italic(EXAMPLE_CONFIG),
        roman(
            " is the same file. Unknown keys are errors; every problem is reported with the \
             file and line, all of them at once, and nothing is changed.",
        ),
    ]);
    preformatted(
        &mut r,
        r#"[postfix]                         # optional
config_dir = "/etc/postfix"
map_type = "hash"

[relayhost]                       # optional: the catch-all
relay = "[smtp.mailgun.org]:587"
username = "postmaster@example.net"
password_file = "/etc/postrelay/secrets/example.net"
tls = "secure"

[[sender]]                        # one per domain or address
domain = "example.com"
relay = "[smtp.mailgun.org]:587"
username = "postmaster@example.com"
password_file = "/etc/postrelay/secrets/example.com""#,
    );

    r.control("SS", ["[postfix] (optional)"]);
    key(
        &mut r,
        "config_dir",
        "The Postfix configuration directory (like postconf -c). Default /etc/postfix; \
         --postfix-dir overrides it.",
    );
    key(
        &mut r,
        "map_type",
        &format!(
            "The type of the lookup tables postrelay writes: {}. Default: Postfix's \
             default_database_type.",
            MAP_TYPES.join(", ")
        ),
    );

    r.control("SS", ["[relayhost] (optional)"]);
    r.text([roman(
        "The catch-all relay: senders without an entry of their own, and bounces (the null \
         sender), leave through it. Sets main.cf's relayhost.",
    )]);
    key(
        &mut r,
        "relay",
        "Required. host, [host], host:port or [host]:port. Brackets: no MX lookup, the host \
         itself is the server; without them Postfix (and verify) reach the domain's MX \
         hosts. An IP address must be in brackets, IPv6 as [ipv6:...]. Ports are numbers, \
         not service names.",
    );
    credential_keys(&mut r);
    provider_keys(&mut r);
    tls_keys(&mut r);

    r.control("SS", ["[[sender]] (any number)"]);
    key(
        &mut r,
        "domain, address",
        "Exactly one: a domain (every address in it, as Postfix's @domain key), a \
         wildcard domain (*.shop.example: every subdomain at any depth, not shop.example \
         itself) or one address. The most specific entry wins: the address, the exact \
         domain, the wildcard with the longest domain, then the relayhost.",
    );
    key(
        &mut r,
        "relay",
        "As in [relayhost]. Optional when there is a [relayhost]: a sender without a relay \
         of its own goes through the relayhost (with its own credentials, if it has any). \
         A relay on port 465 takes TLS from the first byte, through postrelay's \
         postrelay-smtps service in master.cf (tls may not be may or none there).",
    );
    credential_keys(&mut r);
    provider_keys(&mut r);
    tls_keys(&mut r);
    r.control("PP", []);
    r.text([roman(
        "On a sender, tls is allowed only with a relay of its own.",
    )]);
    r.control("PP", []);
    r.text([roman(
        "An address entry overrides its domain's entry completely: its relay (or the \
         relayhost) and its credentials (or none). Since Postfix looks up each table by \
         address and then by @domain, an address without credentials under a domain with \
         credentials would send the domain's password to the address's relay: that is an \
         error unless both use the same relay.",
    )]);

    r.control("SS", ["Passwords"]);
    r.text([
        bold("password"),
        roman(
            " holds the password inline; the file must then not be readable by group or \
             others (chmod 600). ",
        ),
        bold("password_file"),
        roman(
            " names a file whose first line is the password, owned by root, writable by \
             root alone and not readable by others; it keeps passwords out of the \
             desired-state file. Either way a password has no leading or trailing \
             whitespace (Postfix would strip it) and no newline. Passwords appear only in \
             the sasl_passwd map, never in output (",
        ),
        bold("plan --show-secrets"),
        roman(" aside)."),
    ]);

    r.control("SS", ["TLS levels"]);
    r.text([roman(
        "tls is per relay, as Postfix's TLS security levels: two entries that give one \
         relay different levels are an error.",
    )]);
    for (level, meaning) in [
        (
            "secure",
            "The default for a relay named by host name. TLS; the certificate chain \
             verified, its name the relay's host name or a subdomain of it.",
        ),
        (
            "verify",
            "TLS; the chain verified, the name matching the server's host name (for a relay \
             without brackets, the MX host).",
        ),
        (
            "encrypt",
            "The default for an IP address. TLS; the certificate not checked.",
        ),
        (
            "may, none",
            "Opportunistic TLS, or none: the password may be sent in clear text. A warning \
             until an entry of that relay sets accept_cleartext = true.",
        ),
    ] {
        key(&mut r, level, meaning);
    }
    r.control("PP", []);
    r.text([roman(format!(
        "For secure and verify Postfix needs CAs: when main.cf sets neither {} nor {}, \
         postrelay sets {} to the system bundle ({}). A configured CA is never changed, and \
         verify checks certificates against the same CAs.",
        managed::CA_FILE,
        managed::CA_PATH,
        managed::CA_FILE,
        managed::CA_BUNDLES.join(", ")
    ))]);
    r
}

fn credential_keys(r: &mut Roff) {
    key(r, "username", "The SMTP AUTH user name.");
    key(
        r,
        "password, password_file",
        "One of them, with username: both or neither (see Passwords).",
    );
}

fn provider_keys(r: &mut Roff) {
    let names: Vec<&str> = crate::providers::PRESETS.iter().map(|p| p.name).collect();
    key(
        r,
        "provider",
        &format!(
            "{}: the provider's relay, in brackets, at tls = \"secure\", and its login rules \
             (README, Provider presets). A relay or tls beside it must say the same.",
            names.join(", ")
        ),
    );
    key(
        r,
        "region",
        "mailgun: \"us\" (default) or \"eu\"; ses: the AWS region, required.",
    );
    key(
        r,
        "secret_access_key_file",
        "ses: a file (0600) holding the IAM secret access key; the SMTP password is derived \
         from it. Instead of password and password_file.",
    );
}

fn tls_keys(r: &mut Roff) {
    key(
        r,
        "tls",
        "secure, verify, encrypt, may or none (see TLS levels).",
    );
    key(
        r,
        "accept_cleartext",
        "true acknowledges tls = \"may\" or \"none\": no warning.",
    );
}

fn files() -> Roff {
    let mut r = Roff::new();
    r.control("SH", ["FILES"]);
    let mut file = |path: &str, what: String| {
        r.control("TP", []).text([italic(path)]);
        r.text([roman(what)]);
    };
    file(
        DEFAULT_CONFIG,
        "The desired state (mode 0600), written by postrelay init or import, never by the \
         package."
            .into(),
    );
    file(
        "/etc/postrelay/",
        "Root's, mode 0700: created by the package, removed on purge when empty.".into(),
    );
    file(
        EXAMPLE_CONFIG,
        "A commented example: the file postrelay init writes.".into(),
    );
    file(
        crate::mailgun::SECRETS_DIR,
        "Password files postrelay mailgun sync and rotate write (each 0600, named for its \
         login; the directory 0700)."
            .into(),
    );
    let dir = "/etc/postfix";
    let parameters: Vec<&str> = managed::FIXED_PARAMETERS
        .iter()
        .map(|(name, _)| *name)
        .chain(MapKind::ALL.iter().map(|k| k.parameter()))
        .chain([managed::CA_FILE, managed::RELAYHOST])
        .collect();
    file(
        &format!("{dir}/{}", managed::MAIN_CF),
        format!(
            "postrelay sets these parameters and no others: {} (the CA file and relayhost \
             only when needed). Postfix's configuration directory is /etc/postfix unless \
             config_dir or --postfix-dir names another.",
            parameters.join(", ")
        ),
    );
    for kind in MapKind::ALL {
        let what = match kind {
            MapKind::SaslPasswd => "the credentials per sender and for the relayhost",
            MapKind::SenderRelay => "the relay per sender",
            MapKind::TlsPolicy => "the TLS level per relay",
            MapKind::SenderTransport => {
                "the transport of senders whose relay is on port 465 (only on a host that has \
                 one; then named by sender_dependent_default_transport_maps)"
            }
            MapKind::SaslPasswdWildcards
            | MapKind::SenderRelayWildcards
            | MapKind::SenderTransportWildcards => {
                "the regexp table of wildcard senders (*.example.com) beside the map of the \
                 same name without _wildcards (only on a host that has one; no compiled form)"
            }
        };
        file(
            &format!("{dir}/{}", kind.file_name()),
            format!(
                "Owned entirely by postrelay: {what}; root's, mode {:04o}, as is its compiled \
                 map ({}.db for hash and btree, .lmdb, .cdb).",
                kind.mode(),
                kind.file_name()
            ),
        );
    }
    file(
        &format!("{dir}/{}", managed::MASTER_CF),
        format!(
            "Only on a host with a relay on port 465: postrelay's service {} (smtp with \
             TLS from the first byte), below a comment line that marks it; removed, with \
             the mark, when no such relay remains. No other line is touched.",
            managed::SMTPS_SERVICE
        ),
    );
    file(
        &format!("{dir}/{}", managed::LOCK),
        "The lock apply holds (root's, 0600).".into(),
    );
    file(
        &format!("{dir}/{}", managed::RELOAD_PENDING),
        "Present while Postfix has not yet re-read a changed configuration; the next apply \
         reloads."
            .into(),
    );
    file(
        &format!("{dir}/{}", crate::hold::FILE),
        "Present only while apply switches moved senders with their mail held.".into(),
    );
    file(
        SERVICE_UNIT,
        "Runs postrelay apply --quiet once (Type=oneshot), when the desired-state \
         file exists."
            .into(),
    );
    file(
        TIMER_UNIT,
        "Starts the service hourly. Installed disabled: systemctl enable --now \
         postrelay.timer."
            .into(),
    );
    file(
        CRON_EXAMPLE,
        "For hosts without systemd: apply every 15 minutes, once uncommented (every line \
         is commented out)."
            .into(),
    );
    r
}

fn environment() -> Roff {
    let mut r = Roff::new();
    r.control("SH", ["ENVIRONMENT"]);
    r.control("TP", []).text([bold("RUST_LOG")]);
    r.text([roman(
        "A log filter for stderr (error, warn, info, debug, trace) in place of -v.",
    )]);
    r.control("TP", []).text([bold(crate::mailgun::KEY_VAR)]);
    r.text([roman(
        "The Mailgun API key for postrelay mailgun, when --api-key-file is not given.",
    )]);
    r
}

fn examples() -> Roff {
    let mut r = Roff::new();
    r.control("SH", ["EXAMPLES"]);
    let mut example = |intro: &str, commands: &str| {
        r.control("PP", []).text([roman(intro)]);
        preformatted(&mut r, commands);
    };
    example(
        "First run: write the starter file, fill it in, check it, log in to each relay, \
         review, apply:",
        "postrelay init\n\
         $EDITOR /etc/postrelay/postrelay.toml\n\
         postrelay validate\n\
         postrelay verify\n\
         postrelay plan\n\
         postrelay apply",
    );
    example(
        "Every domain of a Mailgun account, each with a login of its own, then checked and \
         applied (the key file is root's, 0600):",
        "postrelay mailgun sync --api-key-file /etc/postrelay/mailgun.key --dry-run\n\
         postrelay mailgun sync --api-key-file /etc/postrelay/mailgun.key\n\
         postrelay apply --verify",
    );
    example(
        "A new password for one Mailgun sender, without a lost message:",
        "export MAILGUN_API_KEY=\"$(cat /etc/postrelay/mailgun.key)\"\n\
         postrelay mailgun rotate --sender example.com",
    );
    example(
        "Adopt what Postfix does today, passwords in files of their own:",
        "postrelay import --password-dir /etc/postrelay/secrets\n\
         postrelay plan",
    );
    example(
        "Repair drift hourly with the packaged timer (its runs are in the journal; an apply \
         that changes something also leaves a line in the mail log):",
        "systemctl enable --now postrelay.timer\n\
         systemctl list-timers postrelay.timer\n\
         journalctl -u postrelay.service",
    );
    example(
        "Or from cron (uncomment the line in /etc/cron.d/postrelay); cron mails only when \
         something changed or failed:",
        "*/15 * * * * root /usr/sbin/postrelay apply --quiet",
    );
    example(
        "A drift check without repair: 0 in sync, 1 drift, 2 error:",
        "postrelay plan >/dev/null; echo $?",
    );
    example(
        "The plan as JSON for other tools, and a desired state read from stdin:",
        "postrelay plan --format json\n\
         postrelay apply --config - < /root/relays.toml",
    );
    r
}

fn see_also() -> Roff {
    let mut r = Roff::new();
    r.control("SH", ["SEE ALSO"]);
    let pages = [
        ("postconf", "5"),
        ("postmap", "1"),
        ("postfix", "1"),
        ("postlog", "1"),
        ("systemctl", "1"),
        ("crontab", "5"),
    ];
    let mut line = Vec::new();
    for (i, (page, section)) in pages.iter().enumerate() {
        line.push(bold(*page));
        let sep = if i + 1 < pages.len() { ", " } else { "" };
        line.push(roman(format!("({section}){sep}")));
    }
    r.text(line);
    r
}

/// A definition: the key in bold, then its meaning.
fn key(r: &mut Roff, name: &str, meaning: &str) {
    r.control("TP", []).text([bold(name)]);
    r.text([roman(meaning)]);
}

/// Lines shown as they are, indented (a command or a file).
fn preformatted(r: &mut Roff, text: &str) {
    r.control("PP", []).control("RS", ["4"]).control("nf", []);
    for line in text.lines() {
        r.text([roman(line)]);
    }
    r.control("fi", []).control("RE", []);
}

/// The roff preamble every rendering starts with (the apostrophe definition).
fn preamble() -> String {
    Roff::new().render()
}

fn strip_preamble(s: &str) -> &str {
    let preamble = preamble();
    s.strip_prefix(preamble.as_str()).unwrap_or(s)
}

/// Appends rendered roff to `page`, with the preamble only at the very start.
fn push(page: &mut String, rendered: &str) {
    if page.is_empty() {
        page.push_str(rendered);
    } else {
        page.push_str(strip_preamble(rendered));
    }
}

/// A section clap_mangen renders, appended to `page`.
fn push_clap(page: &mut String, render: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) {
    let mut out = Vec::new();
    render(&mut out).expect("writing to a Vec");
    push(
        page,
        &String::from_utf8(out).expect("clap_mangen writes UTF-8"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built() -> Command {
        let mut cmd = Cli::command();
        cmd.build();
        cmd
    }

    /// How the page writes a flag: bold, its dashes escaped.
    fn flag(long: &str) -> String {
        format!("\\fB\\-\\-{}\\fR", long.replace('-', "\\-"))
    }

    #[test]
    fn the_page_documents_every_visible_command_and_flag() {
        let cmd = built();
        let page = man_page(Cli::command());
        let mut seen = 0;
        for (name, sub) in documented(&cmd) {
            let heading = match name.contains(' ') {
                true => format!(".SS \"{name}\"\n"),
                false => format!(".SS {name}\n"),
            };
            assert!(page.contains(&heading), "{page}");
            for arg in own_args(sub) {
                let long = arg.get_long().expect("every flag has a long form");
                assert!(page.contains(&flag(long)), "{name} --{long}");
                seen += 1;
            }
        }
        assert!(seen >= 15, "only {seen} flags");
        for global in ["verbose", "help", "version"] {
            assert!(page.contains(&flag(global)), "--{global}");
        }
        assert!(
            !page.contains("generate"),
            "the hidden subcommand is documented"
        );
        assert!(page.starts_with(&preamble()));
        assert_eq!(page.matches(&preamble()).count(), 1, "one preamble");
        assert!(page.contains(".TH POSTRELAY 8 \"\" \"postrelay "), "{page}");
    }

    #[test]
    fn a_flag_added_to_the_command_line_appears_in_the_page_and_completions() {
        let with_flag = || {
            Cli::command().mut_subcommand("plan", |plan| {
                plan.arg(
                    Arg::new("colour")
                        .long("colour")
                        .value_name("WHEN")
                        .value_parser(["never", "always"])
                        .help("Colour"),
                )
            })
        };
        let page = man_page(with_flag());
        // (mut_subcommand moves plan last.)
        let plan = &page[page.find(".SS plan").unwrap()..page.find(".SH \"EXIT STATUS\"").unwrap()];
        assert!(plan.contains(&flag("colour")), "{plan}");
        assert!(plan.contains("\\fIWHEN\\fR"), "{plan}");
        assert!(plan.contains("always"), "possible values: {plan}");
        let bash = String::from_utf8(completion(Shell::Bash, with_flag())).unwrap();
        assert!(bash.contains("--colour"), "{bash}");
        // And the real ones: --format with its values, on the four commands.
        let page = man_page(Cli::command());
        let option = format!("{} \\fI<FORMAT>\\fR [default: text]", flag("format"));
        assert_eq!(page.matches(&option).count(), 4, "{page}");
        assert!(page.contains("json"));
    }

    #[test]
    fn exit_statuses_come_from_the_help_text_one_per_command() {
        let cmd = built();
        let after = cmd.get_after_help().unwrap().to_string();
        let (rows, rest) = exit_table(&after);
        let names: Vec<&str> = rows.iter().map(|(c, _)| c.as_str()).collect();
        let documented = documented(&cmd);
        let mut expected: Vec<&str> = documented.iter().map(|(n, _)| n.as_str()).collect();
        let mut got = names.clone();
        expected.sort();
        got.sort();
        assert_eq!(got, expected);
        let import = &rows.iter().find(|(c, _)| c == "import").unwrap().1;
        // The continuation line is joined to its row.
        assert!(import.ends_with("2 error (nothing written)"), "{import}");
        assert!(import.contains("review them before apply"), "{import}");
        assert_eq!(rest.len(), 2, "{rest:?}");
        assert!(rest[0].starts_with("With --format json"));
        assert!(rest[1].starts_with("Logs and warnings go to stderr"));
    }

    #[test]
    fn completions_offer_the_visible_commands_only() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let script = String::from_utf8(completion(shell, Cli::command())).unwrap();
            for sub in subcommands(&built()) {
                assert!(
                    script.contains(sub.get_name()),
                    "{shell}: {}",
                    sub.get_name()
                );
            }
            assert!(script.contains("show-secrets"), "{shell}");
            assert!(!script.contains("generate"), "{shell} offers generate");
        }
    }

    /// A writer whose reader has gone away, or that fails otherwise.
    struct Failing(io::ErrorKind);

    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(self.0.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_pipe_ends_the_output_successfully_other_errors_do_not() {
        for what in [Generated::Man, Generated::CompleteBash] {
            write(what, &mut Failing(io::ErrorKind::BrokenPipe)).unwrap();
            let err = write(what, &mut Failing(io::ErrorKind::StorageFull)).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        }
        let mut out = Vec::new();
        write(Generated::Man, &mut out).unwrap();
        assert_eq!(out, render(Generated::Man));
    }
}
