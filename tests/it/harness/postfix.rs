//! What the real Postfix tools read from a config directory: the one wrapper around
//! `postconf` and the one around `postmap` that the tests use to check results.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{api, output_ok};

/// `NAME` (a Postfix program) as a command with stdin closed. Panics when Postfix is
/// not installed: tests that get here have `require!(Need::Postfix)`.
pub fn command(name: &str) -> Command {
    let program = api::tool(name).unwrap_or_else(|| panic!("{name}: not installed"));
    let mut cmd = Command::new(program);
    cmd.stdin(Stdio::null());
    cmd
}

/// `postconf -c DIR`: the parameters Postfix reads from the main.cf in DIR.
pub struct Postconf {
    dir: PathBuf,
}

impl Postconf {
    pub fn new(dir: &Path) -> Postconf {
        Postconf {
            dir: dir.to_path_buf(),
        }
    }

    /// `postconf -c DIR ARGS...`, not yet run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = command("postconf");
        cmd.arg("-c").arg(&self.dir).args(args);
        cmd
    }

    fn stdout(&self, args: &[&str]) -> String {
        String::from_utf8(output_ok(&mut self.command(args)).stdout).unwrap()
    }

    /// `postconf -n` as name -> value, without the `config_directory` that `-c` adds.
    /// postconf prints an empty value as `name =`, without a trailing space.
    pub fn n(&self) -> BTreeMap<String, String> {
        self.stdout(&["-n"])
            .lines()
            .map(|l| {
                let (k, v) = l
                    .split_once(" =")
                    .unwrap_or_else(|| panic!("odd postconf -n line {l:?}"));
                (k.to_string(), v.strip_prefix(' ').unwrap_or(v).to_string())
            })
            .filter(|(k, _)| k != "config_directory")
            .collect()
    }

    /// `postconf -h NAME...`: the value of each name, in order.
    pub fn h(&self, names: &[&str]) -> Vec<String> {
        let mut args = vec!["-h"];
        args.extend_from_slice(names);
        let text = self.stdout(&args);
        let values: Vec<String> = text.lines().map(str::to_string).collect();
        assert_eq!(
            values.len(),
            names.len(),
            "postconf -h {names:?} gave {text:?}"
        );
        values
    }

    /// `postconf -h NAME`.
    pub fn get(&self, name: &str) -> String {
        self.h(&[name]).remove(0)
    }
}

/// `postmap -c DIR ARGS...`, not yet run.
pub fn postmap(dir: &Path, args: &[&OsStr]) -> Command {
    let mut cmd = command("postmap");
    cmd.arg("-c").arg(dir).args(args);
    cmd
}

/// `postmap -c DIR -s TYPE:PATH`: every entry as a `key\tvalue` line, sorted. A
/// compiled map postmap cannot read (torn, half-written) fails the test.
pub fn dump(dir: &Path, map: &str) -> Vec<String> {
    let out = postmap(dir, &["-s".as_ref(), map.as_ref()])
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "postmap -s {map}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

/// `postmap -c DIR -q KEY TYPE:PATH`: the value, or None when not found.
pub fn query(dir: &Path, map: &str, key: &str) -> Option<String> {
    let out = postmap(dir, &["-q".as_ref(), key.as_ref(), map.as_ref()])
        .output()
        .unwrap();
    assert!(
        out.status.success() || out.stderr.is_empty(),
        "postmap -q failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.status.success().then(|| {
        String::from_utf8(out.stdout)
            .unwrap()
            .trim_end()
            .to_string()
    })
}
