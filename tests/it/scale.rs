//! Complexity guards, not benchmarks (those are in scripts/bench and
//! docs/benchmarks.md): inputs at a scale where a quadratic step takes minutes must
//! take seconds, and where holding everything at once takes hundreds of MB must fit in
//! a bounded address space.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{Cmd, DEBIAN_MAIN_CF, Host, Need, Run};
use crate::require;

/// 200,000 address entries (each address's domain has no entry of its own): validation
/// looks each address's domain up in a map, not by scanning every sender (before: 37.5 s
/// for 100,000; quadratic).
#[test]
fn two_hundred_thousand_address_senders_validate_in_seconds() {
    let host = Host::new("");
    let mut text = String::from("[relayhost]\nrelay = \"[smtp.example.net]:587\"\n");
    for i in 0..200_000 {
        text.push_str(&format!(
            "\n[[sender]]\naddress = \"user{i}@d{}.example\"\nusername = \"u\"\npassword = \"pw-{i}\"\n",
            i % 1000
        ));
    }
    host.desired(&text);
    let started = Instant::now();
    Cmd::new(&["validate", "--config", &host.config.display().to_string()])
        .args(&["--postfix-dir", &host.etc.display().to_string()])
        .run()
        .success()
        .stdout_has("valid (200000 sender(s)");
    let took = started.elapsed();
    eprintln!("scale: validate of 200,000 address senders: {took:.2?}");
    assert!(took < Duration::from_secs(60), "{took:?}");
}

/// The address space the 100,000-sender runs below get (`ulimit -v`, which Postfix's
/// tools inherit): twice what they need. Reading the desired state as a whole TOML
/// document took 274 MB of memory at this size; the streamed reading, about 40.
const ADDRESS_SPACE_KIB: u32 = 128 * 1024;

/// postrelay under [`ADDRESS_SPACE_KIB`]. With one malloc arena: glibc reserves 64 MiB
/// of address space for each arena a thread opens when another holds the main one's
/// lock, so how many threads met at an allocation (timing, under a loaded suite) would
/// decide the test, not how much memory postrelay uses.
fn bounded(args: &[&str]) -> Run {
    let bin = assert_cmd::cargo::cargo_bin("postrelay");
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("ulimit -v {ADDRESS_SPACE_KIB} && exec \"$@\""))
        .arg("sh")
        .arg(bin)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("POSTRELAY_FAILPOINT")
        .env("MALLOC_ARENA_MAX", "1")
        .output()
        .unwrap();
    Run::from_output(out)
}

/// 100,000 senders (13 MB, each with its own relay out of 5 and credentials) are
/// validated, planned, applied and checked in full within a 128 MiB address space.
#[test]
fn a_hundred_thousand_senders_fit_in_bounded_memory() {
    require!(Need::Postfix);
    let host = Host::new(DEBIAN_MAIN_CF);
    let mut text = String::from(
        "[relayhost]\nrelay = \"[smtp.example.net]:587\"\nusername = \"postmaster@catchall.example\"\npassword = \"catchall-pw\"\n",
    );
    for i in 0..100_000 {
        text.push_str(&format!(
            "\n[[sender]]\ndomain = \"d{i}.example\"\nrelay = \"[relay{}.example]:587\"\nusername = \"postmaster@d{i}.example\"\npassword = \"pw-{i}-x\"\n",
            i % 5
        ));
    }
    host.desired(&text);
    let config = host.config.display().to_string();
    let etc = host.etc.display().to_string();
    let target = ["--config", &config, "--postfix-dir", &etc];
    let run = |command: &[&str]| bounded(&[command, &target].concat());
    run(&["validate"])
        .success()
        .stdout_has("valid (100000 sender(s)");
    run(&["plan"]).code(1);
    run(&["apply"]).success();
    run(&["plan", "--full"]).success();
}
