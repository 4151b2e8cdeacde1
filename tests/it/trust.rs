//! Root's trust boundary. Run as root, postrelay reads a desired-state file, a password
//! file, a config directory or main.cf only when root alone can change it: it and every
//! directory above it owned by root and not writable by group or others (a root-owned
//! sticky directory, like /tmp, is fine), every link on the way root's too. Anything
//! else is refused (exit 2, naming the path) before any Postfix program runs; Postfix's
//! programs come from Postfix's own directories, never from PATH; and a config dir path
//! main.cf could not hold is refused. The other user is `postrelay-mallory`, created by
//! the harness.

use std::fs;
use std::os::unix::fs::{PermissionsExt, chown, symlink};
use std::path::{Path, PathBuf};

use crate::harness::api::TOOL_DIR_VAR;
use crate::harness::host::write_with_mode;
use crate::harness::{CANARY, Cmd, DEBIAN_MAIN_CF, Host, Need, Run, mallory};
use crate::require;

fn valid_desired(password_file: Option<&Path>) -> String {
    let credentials = match password_file {
        Some(p) => format!("password_file = \"{}\"", p.display()),
        None => format!("password = \"{CANARY}\""),
    };
    format!("[relayhost]\nrelay = \"[smtp.example.net]:587\"\nusername = \"u\"\n{credentials}\n")
}

/// A directory `name` under the host's temp dir, with `owner` and `mode`.
fn dir(host: &Host, name: &str, owner: u32, mode: u32) -> PathBuf {
    let d = host.tmp.path().join(name);
    fs::create_dir_all(&d).unwrap();
    chown(&d, Some(owner), Some(owner)).unwrap();
    fs::set_permissions(&d, fs::Permissions::from_mode(mode)).unwrap();
    d
}

/// validate, plan and apply with `config` on `host`: each exits 2 with `want` in its
/// error, and the config dir is unchanged.
fn refused(host: &Host, config: &Path, want: &str) {
    let before = host.files();
    for sub in ["validate", "plan", "apply"] {
        let run = Cmd::new(&[sub, "--config", &config.display().to_string()])
            .args(&["--postfix-dir", &host.etc.display().to_string()])
            .run();
        run.error().stderr_has(want);
        assert_eq!(host.files(), before, "{sub} changed the config dir");
    }
}

#[test]
fn a_desired_state_file_others_can_change_is_refused() {
    require!(Need::Postfix, Need::Root);
    let host = Host::new(DEBIAN_MAIN_CF);
    let m = mallory();
    let text = valid_desired(None);
    // Owned by another user.
    let theirs = host.tmp.path().join("theirs.toml");
    write_with_mode(&theirs, &text, 0o600);
    chown(&theirs, Some(m), Some(m)).unwrap();
    refused(
        &host,
        &theirs,
        &format!("{} is owned by uid {m}, not root", theirs.display()),
    );
    // Root's, but anyone may write it.
    let open = host.tmp.path().join("open.toml");
    write_with_mode(&open, &text, 0o666);
    refused(&host, &open, "is writable by group or others (mode 0666)");
    // Root's, in a directory another user owns (and could swap the file in).
    let home = dir(&host, "home-mallory", m, 0o755);
    let inside = home.join("p.toml");
    write_with_mode(&inside, &text, 0o600);
    refused(
        &host,
        &inside,
        &format!("{} is owned by uid {m}, not root", home.display()),
    );
    // Root's, in a group-writable directory of root's.
    let shared = dir(&host, "shared", 0, 0o775);
    let grouped = shared.join("p.toml");
    write_with_mode(&grouped, &text, 0o600);
    refused(
        &host,
        &grouped,
        &format!(
            "{} is writable by group or others (mode 0775)",
            shared.display()
        ),
    );
    // Through a link, at any component, that another user planted (in a sticky
    // directory anyone may write, like /tmp).
    let sticky = dir(&host, "sticky", 0, 0o1777);
    let safe = dir(&host, "safe", 0, 0o700);
    write_with_mode(&safe.join("p.toml"), &text, 0o600);
    let link = sticky.join("to-safe");
    symlink(&safe, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(m), Some(m)).unwrap();
    let want = format!(
        "{} is a symbolic link owned by uid {m}, not root",
        link.display()
    );
    refused(&host, &link.join("p.toml"), &want);
    // Root's, in a root-owned sticky directory anyone may write (like /tmp): fine.
    let ok = sticky.join("p.toml");
    write_with_mode(&ok, &text, 0o600);
    Cmd::new(&["validate", "--config", &ok.display().to_string()])
        .args(&["--postfix-dir", &host.etc.display().to_string()])
        .run()
        .success();
}

#[test]
fn a_password_file_others_can_change_or_read_is_refused() {
    require!(Need::Postfix, Need::Root);
    let host = Host::new(DEBIAN_MAIN_CF);
    let m = mallory();
    let cases: Vec<(PathBuf, String)> = {
        let theirs = host.secret_file("theirs.pw", "pw\n");
        chown(&theirs, Some(m), Some(m)).unwrap();
        let readable = host.tmp.path().join("readable.pw");
        write_with_mode(&readable, "pw\n", 0o644);
        // mallory's link in mallory's directory, to a secret of root's (/etc/shadow in
        // the trial): root must not read it on mallory's word.
        let home = dir(&host, "home-mallory", m, 0o755);
        let root_secret = host.secret_file("root-only.pw", format!("{CANARY}\n"));
        let pwlink = home.join("pwlink");
        symlink(&root_secret, &pwlink).unwrap();
        std::os::unix::fs::lchown(&pwlink, Some(m), Some(m)).unwrap();
        vec![
            (
                theirs.clone(),
                format!("{} is owned by uid {m}, not root", theirs.display()),
            ),
            (
                readable.clone(),
                format!(
                    "readable by group or others (mode 0644); run: chmod 600 {}",
                    readable.display()
                ),
            ),
            (
                pwlink,
                format!("{} is owned by uid {m}, not root", home.display()),
            ),
        ]
    };
    for (path, want) in cases {
        host.desired(&valid_desired(Some(&path)));
        refused(&host, &host.config, &want);
        // Nor does verify or plan --show-secrets get as far as using it.
        host.cmd("verify").run().error().stderr_has(&want);
        host.cmd("plan").args(&["--show-secrets"]).run().error();
    }
}

/// A stub for every Postfix program, in a tool dir, logging its calls to `log`.
fn stub_all(host: &Host, log: &Path) -> String {
    let mut dir = String::new();
    for tool in ["postfix", "postconf", "postmap"] {
        dir = host.stub(
            tool,
            &format!("echo {tool} \"$@\" >> {}\nexit 1", log.display()),
        );
    }
    dir
}

#[test]
fn a_config_dir_others_can_change_is_refused_before_any_postfix_command() {
    require!(Need::Postfix, Need::Root, Need::DebugBuild);
    let m = mallory();
    type Break = fn(&Host, u32) -> PathBuf;
    let cases: [(&str, Break); 4] = [
        ("config dir owned by another user", |h, m| {
            chown(&h.etc, Some(m), Some(m)).unwrap();
            h.etc.clone()
        }),
        ("group-writable config dir", |h, _| {
            fs::set_permissions(&h.etc, fs::Permissions::from_mode(0o775)).unwrap();
            h.etc.clone()
        }),
        ("main.cf owned by another user", |h, m| {
            chown(h.main_cf(), Some(m), Some(m)).unwrap();
            h.main_cf()
        }),
        ("main.cf a link to another user's file", |h, m| {
            let theirs = h.tmp.path().join("their-main.cf");
            fs::rename(h.main_cf(), &theirs).unwrap();
            chown(&theirs, Some(m), Some(m)).unwrap();
            symlink(&theirs, h.main_cf()).unwrap();
            theirs
        }),
    ];
    for (name, break_it) in cases {
        let host = Host::new(DEBIAN_MAIN_CF);
        host.desired(&valid_desired(None));
        let named = break_it(&host, m);
        let log = host.tmp.path().join("calls");
        let tools = stub_all(&host, &log);
        for sub in ["plan", "apply"] {
            let run = host.cmd(sub).env(TOOL_DIR_VAR, &tools).run();
            run.error().stderr_has(&named.display().to_string());
        }
        assert!(
            !log.exists(),
            "{name}: a Postfix program ran: {:?}",
            fs::read_to_string(&log)
        );
    }
}

#[test]
fn config_dir_paths_main_cf_cannot_hold_are_refused() {
    require!(Need::Postfix);
    let host = Host::new(DEBIAN_MAIN_CF);
    host.desired(&valid_desired(None));
    for name in [
        "etc\nmynetworks = 0.0.0.0/0",
        "etc two",
        "etc,x",
        "etc$x",
        "etc{x}",
    ] {
        let dir = host.tmp.path().join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::copy(host.main_cf(), dir.join("main.cf")).unwrap();
        for sub in ["plan", "apply"] {
            let run = Cmd::new(&[sub, "--config", &host.config.display().to_string()])
                .args(&["--postfix-dir", &dir.display().to_string()])
                .run();
            run.error()
                .stderr_has("main.cf names the maps by this path");
        }
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "{name:?}: files written"
        );
    }
    host.desired(&format!(
        "[postfix]\nconfig_dir = \"/etc/post fix\"\n{}",
        valid_desired(None)
    ));
    host.cmd("validate").run().error().stderr_has(&format!(
        "{}, line 2: config_dir \"/etc/post fix\": holds ' '",
        host.config.display()
    ));
}

#[test]
fn postfix_programs_come_from_postfix_directories_never_from_path() {
    require!(Need::Postfix, Need::Root);
    let host = Host::new(DEBIAN_MAIN_CF);
    host.desired(&valid_desired(None));
    let log = host.tmp.path().join("calls");
    let bin = stub_all(&host, &log);
    let path = format!("{bin}:{}", std::env::var("PATH").unwrap_or_default());
    let run: Run = host.cmd("apply").env("PATH", &path).run();
    run.success().stdout_has("Postfix is not running");
    assert!(
        !log.exists(),
        "a program from PATH ran: {:?}",
        fs::read_to_string(&log)
    );
}
