//! Complexity guards, not benchmarks (those are in scripts/bench and
//! docs/benchmarks.md): inputs at a scale where a quadratic step takes minutes must
//! take seconds.

use std::time::{Duration, Instant};

use crate::harness::{Cmd, Host};

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
