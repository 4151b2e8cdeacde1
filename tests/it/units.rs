//! The scheduling files in contrib/: the systemd service and timer (what they run, when,
//! `systemd-analyze verify`) and the cron example, and a real apply inside the
//! service's sandbox.
//!
//! Without systemd as PID 1 (here, and wherever the tests run in a container or a VM
//! whose init is something else) the sandbox is reproduced, directive by directive, with a mount namespace
//! (`unshare`) and `setpriv`: [`Sandbox`] knows how each hardening setting of the unit
//! restricts the process, and fails on a setting it does not know, so the unit cannot
//! gain one that no test has run apply under. The test instance lives under /tmp, so
//! `PrivateTmp` gives the sandbox a fresh /tmp with only the instance's directory in
//! it, which stands in for `ReadWritePaths=/etc/postfix`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use assert_cmd::cargo::cargo_bin;

use crate::harness::desired::{desired, domain};
use crate::harness::{CANARY, Need, Run, skip_or_fail};
use crate::instance::{Instance, deliver};
use crate::relay::{FakeRelay, RelayConfig};
use crate::require;

fn contrib(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(path)
}

/// A unit file's settings in order: (section, key, value), comments and blank lines
/// left out, as systemd reads them (`#` and `;` start a comment line).
fn settings(path: &Path) -> Vec<(String, String, String)> {
    let text = fs::read_to_string(path).unwrap();
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (key, value) = line.split_once('=').expect("key=value");
        out.push((
            section.clone(),
            key.trim().to_string(),
            value.trim().to_string(),
        ));
    }
    out
}

/// The value of `section`'s `key` (the last one given).
fn setting<'a>(all: &'a [(String, String, String)], section: &str, key: &str) -> Option<&'a str> {
    all.iter()
        .rev()
        .find(|(s, k, _)| s == section && k == key)
        .map(|(_, _, v)| v.as_str())
}

const EXEC_START: &str = "/usr/sbin/postrelay apply --quiet";

#[test]
fn units_run_one_quiet_apply_hourly_only_once_there_is_a_desired_state() {
    let service = settings(&contrib("systemd/postrelay.service"));
    let get = |s, k| setting(&service, s, k);
    assert_eq!(get("Service", "Type"), Some("oneshot"));
    assert_eq!(get("Service", "ExecStart"), Some(EXEC_START));
    assert_eq!(
        get("Unit", "ConditionPathExists"),
        Some("/etc/postrelay/postrelay.toml")
    );
    assert_eq!(get("Unit", "After"), Some("postfix.service"));
    assert_eq!(get("Unit", "Documentation"), Some("man:postrelay(8)"));
    // No [Install]: the service runs when the timer starts it, never on its own.
    assert!(
        service.iter().all(|(s, _, _)| s != "Install"),
        "{service:?}"
    );

    let timer = settings(&contrib("systemd/postrelay.timer"));
    let get = |s, k| setting(&timer, s, k);
    assert_eq!(get("Timer", "OnCalendar"), Some("hourly"));
    assert_eq!(get("Timer", "Persistent"), Some("true"));
    assert!(get("Timer", "RandomizedDelaySec").is_some());
    assert_eq!(get("Install", "WantedBy"), Some("timers.target"));
}

#[test]
fn cron_example_is_all_comments_and_runs_what_the_service_runs() {
    let text = fs::read_to_string(contrib("cron.d/postrelay")).unwrap();
    assert!(
        text.lines()
            .all(|l| l.trim().is_empty() || l.starts_with('#')),
        "an uncommented line would run apply once installed:\n{text}"
    );
    let jobs: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit() || c == '*'))
        .collect();
    assert_eq!(jobs.len(), 1, "{text}");
    assert!(jobs[0].contains(" root "), "cron.d lines name the user");
    assert!(
        jobs[0].ends_with(&format!("&& {EXEC_START}")),
        "{}",
        jobs[0]
    );
}

/// `systemd-analyze verify` on the units as installed, the binary path replaced by the
/// one cargo built (the package test verifies the installed units, man page included).
/// It works without systemd as PID 1; any word it prints is a finding (an unknown key
/// is only a warning, exit 0).
#[test]
fn units_pass_systemd_analyze_verify() {
    require!(Need::Program("systemd-analyze", "systemd"));
    let tmp = tempfile::tempdir().unwrap();
    let bin = cargo_bin("postrelay");
    let mut units = Vec::new();
    for name in ["postrelay.service", "postrelay.timer"] {
        let text = fs::read_to_string(contrib(&format!("systemd/{name}"))).unwrap();
        let path = tmp.path().join(name);
        fs::write(
            &path,
            text.replace("/usr/sbin/postrelay", &bin.display().to_string()),
        )
        .unwrap();
        units.push(path);
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "systemd-analyze verify: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The service's sandbox, reproduced around one command: a shell script run by
/// `unshare --mount` that remounts as the unit's settings say, then `exec`s the
/// command (through `setpriv --no-new-privs` for `NoNewPrivileges`).
struct Sandbox {
    script: String,
}

impl Sandbox {
    /// The sandbox of the `[Service]` settings of `unit`, with `keep` (a directory
    /// under /tmp) kept writable through `PrivateTmp`. Panics on a setting it cannot
    /// reproduce.
    fn of(unit: &Path, keep: &Path) -> Sandbox {
        let keep = keep.display();
        let mut script = String::from(
            r#"set -eu
# ro PATH: PATH and every mount under it read-only (skipped when missing).
ro() {
    [ -e "$1" ] || return 0
    mount --rbind "$1" "$1"
    awk -v p="$1" '$5 == p || index($5, p "/") == 1 { print $5 }' /proc/self/mountinfo |
        while read -r m; do mount -o remount,bind,ro "$m"; done
}
rw() { mount --bind "$1" "$1"; mount -o remount,bind,rw "$1"; }
"#,
        );
        let mut exec = "exec \"$@\"";
        for (section, key, value) in settings(unit) {
            if section != "Service" {
                continue;
            }
            let yes = matches!(value.as_str(), "yes" | "true" | "on" | "1");
            match (key.as_str(), value.as_str()) {
                ("Type" | "ExecStart", _) => {}
                ("ProtectSystem", "full") => script += "ro /usr; ro /boot; ro /efi; ro /etc\n",
                ("ProtectSystem", _) if yes => script += "ro /usr; ro /boot; ro /efi\n",
                ("ReadWritePaths", paths) => {
                    for path in paths.split_whitespace() {
                        match path.strip_prefix('-') {
                            Some(optional) => {
                                script += &format!("[ ! -e {optional} ] || rw {optional}\n")
                            }
                            None => script += &format!("rw {path}\n"),
                        }
                    }
                }
                ("ProtectHome", "read-only") => script += "ro /home; ro /root; ro /run/user\n",
                ("PrivateTmp", _) if yes => {
                    // A fresh /tmp and /var/tmp; the kept directory moved into the new /tmp.
                    script += &format!(
                        "mount --bind {keep} /mnt\n\
                         mount -t tmpfs -o mode=1777 tmpfs /tmp\n\
                         mkdir -p {keep}\n\
                         mount --move /mnt {keep}\n\
                         mount -t tmpfs -o mode=1777 tmpfs /var/tmp\n"
                    )
                }
                ("NoNewPrivileges", _) if yes => exec = "exec setpriv --no-new-privs \"$@\"",
                ("ProtectKernelTunables", _) if yes => {
                    script +=
                        "ro /proc/sys; ro /proc/sysrq-trigger; ro /proc/irq; ro /proc/fs; ro /sys\n"
                }
                ("ProtectControlGroups", _) if yes => script += "ro /sys/fs/cgroup\n",
                _ => panic!(
                    "postrelay.service sets {key}={value}, which tests/it/units.rs cannot \
                     reproduce: teach Sandbox::of how it restricts the process first"
                ),
            }
        }
        script += exec;
        script.push('\n');
        Sandbox { script }
    }

    /// The wrapper: `unshare ... sh -c SCRIPT sandbox`, to which the command is appended.
    fn wrapper(&self) -> Vec<&str> {
        vec![
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            &self.script,
            "sandbox",
        ]
    }

    /// A shell command run in the sandbox; its exit code and output.
    fn sh(&self, command: &str) -> Run {
        let mut args = self.wrapper();
        args.extend(["sh", "-c", command]);
        Run::from_output(Command::new(args[0]).args(&args[1..]).output().unwrap())
    }
}

#[test]
fn apply_works_inside_the_service_sandbox() {
    require!(
        Need::Live,
        Need::Program("unshare", "util-linux"),
        Need::Program("setpriv", "util-linux")
    );
    let probe = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "mount",
            "-t",
            "tmpfs",
        ])
        .args(["tmpfs", "/mnt"])
        .output()
        .unwrap();
    if !probe.status.success() {
        skip_or_fail(&format!(
            "cannot mount in a mount namespace: {}",
            String::from_utf8_lossy(&probe.stderr)
        ));
        return;
    }
    let password = format!("{CANARY}-sandbox");
    let relay = FakeRelay::start(RelayConfig::users(&[("sandbox-user", &password)]));
    let mut inst = Instance::new();
    inst.desired(&desired(
        None,
        &[domain(
            "sandboxed.test",
            Some(&relay),
            "sandbox-user",
            &password,
        )],
    ));
    inst.start();
    let root = fs::canonicalize(inst.tmp.path()).unwrap();
    let sandbox = Sandbox::of(&contrib("systemd/postrelay.service"), &root);

    // The sandbox restricts what the unit says, or the test would prove nothing.
    let etc = inst.etc.display();
    sandbox
        .sh(&format!(
            "set -e; touch {etc}/.sandbox-probe; rm {etc}/.sandbox-probe; \
             ! touch /etc/.postrelay-sandbox-probe 2>/dev/null; \
             ! touch /usr/.postrelay-sandbox-probe 2>/dev/null; \
             [ \"$(ls -A /tmp)\" = \"$(basename {})\" ]; \
             grep -q '^NoNewPrivs:[[:space:]]*1' /proc/self/status",
            root.display()
        ))
        .success();
    assert!(!Path::new("/etc/.postrelay-sandbox-probe").exists());

    // What the service runs (ExecStart's arguments), on the test instance, twice: the
    // first changes the running instance (postmap, postfix check, the held switch with
    // its reloads and postqueue -f), the second changes nothing.
    let args: Vec<&str> = EXEC_START.split_whitespace().skip(1).collect();
    let first = inst
        .cmd(args[0])
        .args(&args[1..])
        .run_under(&sandbox.wrapper());
    first.success();
    first
        .stdout_has(&format!("ran postfix -c {etc} check"))
        .stdout_has(&format!("ran postfix -c {etc} reload"));
    inst.settle();
    let files = inst.files();
    let second = inst
        .cmd(args[0])
        .args(&args[1..])
        .run_under(&sandbox.wrapper());
    second.success();
    assert_eq!(second.stdout, "", "--quiet and nothing changed");
    assert_eq!(second.stderr, "");
    assert_eq!(inst.files(), files, "the second apply changed files");

    // Postfix took the configuration: mail leaves through the relay with the password.
    let m = deliver(
        &inst,
        &[&relay],
        "someone@sandboxed.test",
        "r@remote.example",
    );
    assert_eq!(m.auth_user.as_deref(), Some("sandbox-user"));
    assert_eq!(m.auth_password.as_deref(), Some(password.as_str()));
    assert!(m.tls_at_auth);
}
