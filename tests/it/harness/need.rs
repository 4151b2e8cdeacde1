//! What a test needs from the machine, and the one policy for when it is missing:
//! fail, unless the developer asked to skip (see the [harness](super) module doc).

use std::fs;
use std::path::PathBuf;

use super::api;

/// A prerequisite of a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// postconf, postmap, postfix and postlog.
    Postfix,
    /// Effective uid 0: chown, mount, switching to nobody.
    Root,
    /// A Postfix instance can run: [`Need::Postfix`], [`Need::Root`] (the master
    /// daemon), `sendmail` and `postqueue`, and the Cyrus SASL PLAIN client module.
    Live,
    /// A debug build of postrelay: fail points exist only with debug assertions.
    DebugBuild,
    /// A program on PATH (`systemd-analyze`, `dpkg`, `man`...), and the package that
    /// has it.
    Program(&'static str, &'static str),
    /// `cargo deb` (cargo-deb), which scripts/build-deb runs.
    CargoDeb,
}

impl Need {
    /// What is missing for this need, each as a reason a person can act on.
    fn missing(self) -> Vec<String> {
        let mut missing = Vec::new();
        match self {
            Need::Postfix => {
                if ["postconf", "postmap", "postfix", "postlog"]
                    .iter()
                    .any(|t| api::tool(t).is_none())
                {
                    missing.push(
                        "the Postfix tools postconf, postmap, postfix and postlog (package postfix; scripts/install-deps installs it)"
                            .to_string(),
                    );
                }
            }
            Need::Root => {
                if !nix::unistd::Uid::effective().is_root() {
                    missing.push("root (effective uid 0)".to_string());
                }
            }
            Need::Live => {
                missing.extend(Need::Postfix.missing());
                missing.extend(Need::Root.missing());
                for tool in ["sendmail", "postqueue"] {
                    if api::tool(tool).is_none() {
                        missing.push(format!("{tool} (package postfix)"));
                    }
                }
                if !sasl_plain_module_installed() {
                    missing.push(
                        "the Cyrus SASL PLAIN module (package libsasl2-modules; without it the SMTP client finds \"no worthy mechs\")"
                            .to_string(),
                    );
                }
            }
            Need::DebugBuild => {
                if !cfg!(debug_assertions) {
                    missing.push(
                        "a debug build (fail points exist only with debug assertions)".to_string(),
                    );
                }
            }
            Need::Program(name, package) => {
                if !on_path(name) {
                    missing.push(format!(
                        "{name} (package {package}; scripts/install-deps installs it)"
                    ));
                }
            }
            Need::CargoDeb => {
                let runs = std::process::Command::new("cargo")
                    .args(["deb", "--version"])
                    .output()
                    .is_ok_and(|o| o.status.success());
                if !runs {
                    missing.push(
                        "cargo-deb (cargo install cargo-deb --locked; scripts/install-deps installs it)"
                            .to_string(),
                    );
                }
            }
        }
        missing
    }
}

/// Whether an executable `name` is in a directory of PATH.
pub fn on_path(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            fs::metadata(dir.join(name))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Whether every need is met. When one is not, the calling test fails with the
/// reason ([`skip_or_fail`]), or, where skipping is allowed, this prints `SKIPPED:`
/// and returns false. Most tests call it through [`require!`](crate::require); call
/// it directly to skip only part of a test.
#[must_use]
pub fn require(needs: &[Need]) -> bool {
    let mut missing: Vec<String> = Vec::new();
    for reason in needs.iter().flat_map(|n| n.missing()) {
        if !missing.contains(&reason) {
            missing.push(reason);
        }
    }
    if missing.is_empty() {
        return true;
    }
    skip_or_fail(&format!("needs {}", missing.join(", ")));
    false
}

/// A test cannot run here, for `reason`: panics, unless skipping is allowed
/// (`POSTRELAY_ALLOW_SKIP=1` and not `CI=true`); then prints `SKIPPED: reason` on
/// stderr and returns, and the caller returns too.
pub fn skip_or_fail(reason: &str) {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let allowed = std::env::var("POSTRELAY_ALLOW_SKIP").is_ok_and(|v| v == "1");
    if allowed && !ci {
        eprintln!("SKIPPED: {reason}");
    } else if ci {
        panic!("cannot run under CI=true: {reason}");
    } else {
        panic!("cannot run: {reason} (set POSTRELAY_ALLOW_SKIP=1 to skip such tests instead)");
    }
}

/// Returns from the calling test unless every [`Need`] is met (see [`require`]).
#[macro_export]
macro_rules! require {
    ($($need:expr),+ $(,)?) => {
        if !$crate::harness::require(&[$($need),+]) {
            return;
        }
    };
}

fn sasl_plain_module_installed() -> bool {
    let mut dirs = vec![
        PathBuf::from("/usr/lib/sasl2"),
        PathBuf::from("/usr/lib64/sasl2"),
    ];
    if let Ok(entries) = fs::read_dir("/usr/lib") {
        dirs.extend(entries.flatten().map(|e| e.path().join("sasl2")));
    }
    dirs.iter().any(|d| {
        fs::read_dir(d).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("libplain.so"))
        })
    })
}
