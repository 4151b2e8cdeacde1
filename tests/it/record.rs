//! The record of the last apply (`DIR/postrelay.state`): a plan right after apply starts
//! no Postfix process, and every kind of drift is still caught through that fast path:
//! an edited source whose mtime was put back, a rebuilt compiled map, a mode change and
//! back, a compiled map replaced by one of the same size and mtime, one edited in place.
//! A record someone else could write is refused; a damaged one means the full check.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::harness::host::write_with_mode;
use crate::harness::{CANARY, DEBIAN_MAIN_CF, Host, Need, Run, output_ok};
use crate::require;

/// A host that apply has configured (and recorded), with its main.cf settled.
fn applied() -> Host {
    let host = Host::new(DEBIAN_MAIN_CF);
    host.desired(&format!(
        "[relayhost]\nrelay = \"[relay.example]:587\"\nusername = \"rh\"\npassword = \"{CANARY}-rh\"\n\n\
         [[sender]]\ndomain = \"example.com\"\nrelay = \"[smtp.example]:587\"\nusername = \"pm\"\npassword = \"{CANARY}-ab\"\n"
    ));
    host.apply_twice();
    host
}

/// `plan -vv`: the run and the Postfix programs it started (from its debug log).
fn plan_logged(host: &Host, extra: &[&str]) -> (Run, Vec<String>) {
    let run = host.cmd("plan").args(&["-vv"]).args(extra).run();
    let started = run
        .stderr
        .lines()
        .filter_map(|l| l.split_once("running ").map(|(_, cmd)| cmd.to_string()))
        .collect();
    (run, started)
}

/// How many `postmap -s` a run started.
fn dumps(started: &[String]) -> usize {
    started
        .iter()
        .filter(|c| c.starts_with("postmap -c"))
        .count()
}

/// Sets a file's mtime (and atime) back to `from`'s.
fn put_back_times(path: &Path, from: &fs::Metadata) {
    let times = fs::FileTimes::new()
        .set_modified(from.modified().unwrap())
        .set_accessed(from.accessed().unwrap());
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_times(times)
        .unwrap();
}

#[test]
fn plan_after_apply_starts_no_postfix_process() {
    require!(Need::Postfix);
    let host = applied();
    let record = host.etc.join("postrelay.state");
    let meta = fs::metadata(&record).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let text = fs::read_to_string(&record).unwrap();
    assert!(!text.contains(CANARY), "the record holds a password");

    let (run, started) = plan_logged(&host, &[]);
    run.success();
    assert_eq!(started, Vec::<String>::new(), "{}", run.stderr);

    // --full reads every compiled map anyway, and agrees.
    let (run, started) = plan_logged(&host, &["--full"]);
    run.success();
    assert_eq!(dumps(&started), 3, "{started:?}");
}

#[test]
fn plan_right_after_apply_does_not_wait_for_main_cf_to_cool_down() {
    require!(Need::Postfix);
    let host = Host::new(DEBIAN_MAIN_CF);
    host.desired(
        "[relayhost]\nrelay = \"[relay.example]:587\"\nusername = \"rh\"\npassword = \"pw-rh\"\n",
    );
    host.cmd("apply").run().success();
    // main.cf is seconds old: every Postfix tool would pause for it (up to 2 s).
    let start = std::time::Instant::now();
    host.plan().success();
    let took = start.elapsed();
    assert!(
        took < std::time::Duration::from_millis(1000),
        "plan took {took:?}"
    );
}

#[test]
fn an_edited_source_with_its_mtime_put_back_is_caught() {
    require!(Need::Postfix);
    let host = applied();
    let source = host.etc.join("sasl_passwd");
    let before = fs::metadata(&source).unwrap();
    let text = fs::read_to_string(&source).unwrap();
    // Same length, other password.
    let edited = text.replace(&format!("{CANARY}-ab"), &format!("{CANARY}-xy"));
    assert_eq!(edited.len(), text.len());
    fs::write(&source, edited).unwrap();
    put_back_times(&source, &before);
    host.plan()
        .code(1)
        .stdout_has("sasl_passwd: content differs")
        .stdout_has("@example.com password changed");
}

#[test]
fn a_rebuilt_compiled_map_is_read_again() {
    require!(Need::Postfix);
    let host = applied();
    let source = host.etc.join("sasl_passwd");
    let before = fs::metadata(&source).unwrap();
    let text = fs::read_to_string(&source).unwrap();
    // Built from another source, then the source put back as it was.
    fs::write(&source, text.replace("@example.com", "@example.org")).unwrap();
    host.postmap_build("sasl_passwd");
    write_with_mode(&source, &text, 0o600);
    put_back_times(&source, &before);
    host.plan()
        .code(1)
        .stdout_has("sasl_passwd.db differs from its source");

    // Rebuilt from the right source: read again, and found right.
    host.apply().success();
    host.postmap_build("sasl_passwd");
    let (run, started) = plan_logged(&host, &[]);
    run.success();
    assert_eq!(dumps(&started), 1, "{started:?}");
}

#[test]
fn a_mode_change_is_caught_and_a_change_undone_is_read_again() {
    require!(Need::Postfix);
    let host = applied();
    let compiled = host.etc.join("sasl_passwd.db");
    fs::set_permissions(&compiled, fs::Permissions::from_mode(0o644)).unwrap();
    host.plan()
        .code(1)
        .stdout_has("sasl_passwd.db has mode 0644, want 0600");
    fs::set_permissions(&compiled, fs::Permissions::from_mode(0o600)).unwrap();
    // Back as it was, but its ctime moved: nothing proves it untouched, so it is dumped.
    let (run, started) = plan_logged(&host, &[]);
    run.success();
    assert!(
        started.iter().any(|c| c.contains("sasl_passwd")),
        "{started:?}"
    );
}

#[test]
fn a_compiled_map_replaced_by_one_of_the_same_size_and_mtime_is_caught() {
    require!(Need::Postfix);
    let host = applied();
    let source = host.etc.join("sasl_passwd");
    let compiled = host.etc.join("sasl_passwd.db");
    let before = fs::metadata(&compiled).unwrap();
    // A map built elsewhere from a source whose password differs in one character.
    let other = tempfile::tempdir().unwrap();
    let text = fs::read_to_string(&source).unwrap();
    let copy = other.path().join("sasl_passwd");
    fs::write(
        &copy,
        text.replace(&format!("{CANARY}-ab"), &format!("{CANARY}-xy")),
    )
    .unwrap();
    output_ok(
        Command::new("/usr/sbin/postmap")
            .args(["-c", &host.etc.display().to_string()])
            .arg(format!("hash:{}", copy.display())),
    );
    let built = other.path().join("sasl_passwd.db");
    assert_eq!(
        fs::metadata(&built).unwrap().len(),
        before.len(),
        "not the same size"
    );
    fs::set_permissions(&built, fs::Permissions::from_mode(0o600)).unwrap();
    put_back_times(&built, &before);
    fs::rename(&built, &compiled).unwrap();
    host.plan()
        .code(1)
        .stdout_has("sasl_passwd.db differs from its source");
}

#[test]
fn a_compiled_map_edited_in_place_is_caught() {
    require!(Need::Postfix);
    let host = applied();
    let compiled = host.etc.join("sasl_passwd.db");
    let before = fs::metadata(&compiled).unwrap();
    let mut bytes = fs::read(&compiled).unwrap();
    let at = bytes
        .windows(CANARY.len())
        .position(|w| w == CANARY.as_bytes())
        .expect("the password in the compiled map");
    bytes[at] ^= 0x20;
    // Same inode, size and mtime: only the ctime tells.
    fs::OpenOptions::new()
        .write(true)
        .open(&compiled)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes))
        .unwrap();
    put_back_times(&compiled, &before);
    host.plan()
        .code(1)
        .stdout_has("sasl_passwd.db differs from its source");
}

#[test]
fn a_record_others_could_write_is_refused_and_a_damaged_one_ignored() {
    require!(Need::Postfix);
    let host = applied();
    let record = host.etc.join("postrelay.state");
    fs::set_permissions(&record, fs::Permissions::from_mode(0o644)).unwrap();
    host.plan()
        .code(2)
        .stderr_has(&format!("{}: owned by uid", record.display()))
        .stderr_has("mode 0644");
    // Damaged: the full check runs and finds everything right; apply writes it anew.
    write_with_mode(&record, "{ not json", 0o600);
    let (run, started) = plan_logged(&host, &[]);
    run.success();
    assert_eq!(dumps(&started), 3, "{started:?}");
    host.apply().success().stdout_has("postrelay: no changes");
    let (run, started) = plan_logged(&host, &[]);
    run.success();
    assert_eq!(started, Vec::<String>::new());
}
