//! `postrelay generate`: the man page as man-db and groff render it, the bash completion
//! as bash runs it, a closed pipe (`generate man | head -1`), and the subcommand's
//! absence from `--help`. What the page holds (every command and flag) is checked in
//! `src/manual.rs`'s unit tests, against clap's definition.

use std::fs;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Command, Stdio};

use assert_cmd::cargo::cargo_bin;

use crate::harness::{Cmd, Need, output_with_input};
use crate::require;

const WHAT: [&str; 4] = ["man", "complete-bash", "complete-zsh", "complete-fish"];

/// `postrelay generate WHAT`'s stdout; it must succeed and print nothing on stderr.
fn generated(what: &str) -> String {
    let run = Cmd::new(&["generate", what]).run();
    run.success();
    assert_eq!(run.stderr, "", "generate {what}");
    run.stdout
}

/// Runs `cmd` with `input` on stdin; its stdout, after checking that it succeeded
/// without a word on stderr.
fn filter(cmd: &mut Command, input: &[u8]) -> String {
    let out = output_with_input(cmd, input);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.is_empty(),
        "{cmd:?}: {}\n{stderr}",
        out.status
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn generate_man_renders_without_a_warning_in_80_columns() {
    require!(
        Need::Program("groff", "groff-base"),
        Need::Program("man", "man-db"),
        Need::Program("col", "bsdextrautils")
    );
    let page = generated("man");
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("postrelay.8");
    fs::write(&file, &page).unwrap();

    // Every warning on (-ww), output discarded (-z): groff must say nothing.
    let groff = Command::new("groff")
        .args(["-ww", "-man", "-z"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        groff.status.success() && groff.stderr.is_empty(),
        "groff: {}",
        String::from_utf8_lossy(&groff.stderr)
    );

    // As a reader sees it: man -l, 80 columns, overstrikes removed.
    let man = Command::new("man")
        .arg("-l")
        .arg(&file)
        .env("MANWIDTH", "80")
        .env("MANPAGER", "cat")
        .env_remove("MANOPT")
        .output()
        .unwrap();
    assert!(
        man.status.success() && man.stderr.is_empty(),
        "man -l: {}\n{}",
        man.status,
        String::from_utf8_lossy(&man.stderr)
    );
    let text = filter(Command::new("col").arg("-b"), &man.stdout);

    // Section headings start in column 0, as do the header and footer lines.
    let (title, headings): (Vec<&str>, Vec<&str>) = text
        .lines()
        .filter(|l| l.chars().next().is_some_and(|c| !c.is_whitespace()))
        .partition(|l| l.contains("POSTRELAY(8)"));
    assert_eq!(title.len(), 2, "header and footer: {title:?}");
    assert!(title[0].starts_with("POSTRELAY(8)"), "{}", title[0]);
    assert_eq!(
        headings,
        [
            "NAME",
            "SYNOPSIS",
            "DESCRIPTION",
            "OPTIONS",
            "COMMANDS",
            "EXIT STATUS",
            "DIAGNOSTICS",
            "DESIRED STATE FILE",
            "FILES",
            "ENVIRONMENT",
            "EXAMPLES",
            "SEE ALSO",
        ],
        "{text}"
    );
    for sub in ["plan", "apply", "verify", "import", "init", "validate"] {
        assert!(
            text.contains(&format!("\n   {sub}\n       postrelay {sub}")),
            "no subsection for {sub}:\n{text}"
        );
    }
    for line in text.lines() {
        assert!(
            line.chars().count() <= 80,
            "wider than 80 columns: {line:?}"
        );
        for raw in ["\\f", "\\-", "\\(", ".SH", ".TP"] {
            assert!(!line.contains(raw), "roff source in the page: {line:?}");
        }
    }
    assert!(text.contains("postrelay - Declarative sender-dependent SASL relaying"));
    assert!(text.contains("systemctl enable --now postrelay.timer"));
}

/// Runs `postrelay generate WHAT` with stdout a pipe whose reading end is already
/// closed, so its first write fails with EPIPE.
fn into_closed_pipe(what: &str) -> std::process::Output {
    let (read, write): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
    drop(read);
    Command::new(cargo_bin("postrelay"))
        .args(["generate", what])
        .stdin(Stdio::null())
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn generate_into_a_closed_pipe_exits_0_without_a_word() {
    for what in WHAT {
        let out = into_closed_pipe(what);
        assert_eq!(out.status.code(), Some(0), "generate {what}: {out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "",
            "generate {what} (a panic would say 'failed printing to stdout')"
        );
    }
    // Only generate treats a closed pipe as success: it prints nothing else.
}

#[test]
fn generate_man_piped_to_head_prints_the_first_line_and_exits_0() {
    let bin = cargo_bin("postrelay");
    let out = Command::new("bash")
        .args(["-o", "pipefail", "-c", "\"$0\" generate man | head -1"])
        .arg(&bin)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    let first = generated("man").lines().next().unwrap().to_string();
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{first}\n"));
}

/// What bash's completion offers for `words` (the last one being completed), after
/// sourcing the script.
fn bash_completes(script: &Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let current = words.last().unwrap();
    let previous = words[words.len() - 2];
    let program = format!(
        "source \"$0\"\n\
         COMP_WORDS=({words}); COMP_CWORD={cword}\n\
         COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}\n\
         _postrelay postrelay '{current}' '{previous}'\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        words = quoted.join(" "),
        cword = words.len() - 1,
    );
    let out = Command::new("bash")
        .args(["--norc", "-c", &program])
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{words:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn generate_complete_bash_completes_commands_and_flags_but_not_generate() {
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("postrelay.bash");
    fs::write(&script, generated("complete-bash")).unwrap();
    assert_eq!(bash_completes(&script, &["postrelay", "pl"]), ["plan"]);
    assert_eq!(
        bash_completes(&script, &["postrelay", "apply", "--no"]),
        ["--no-reload", "--no-syslog"]
    );
    assert_eq!(
        bash_completes(&script, &["postrelay", "plan", "--show"]),
        ["--show-secrets"]
    );
    assert!(bash_completes(&script, &["postrelay", "gen"]).is_empty());
}

#[test]
fn generate_is_hidden_from_help_and_takes_only_known_artifacts() {
    let help = Cmd::new(&["--help"]).run();
    help.success();
    assert!(!help.stdout.contains("generate"), "{}", help.stdout);
    let bad = Cmd::new(&["generate", "manual"]).run();
    bad.code(2);
    for what in WHAT {
        bad.stderr_has(what);
    }
}
