//! Fuzz target: lookup-table sources and the redaction of password maps. For any bytes:
//! parsing never panics and round-trips, entries are well formed, and the redacted view
//! has one line per physical line and never shows a value's text after `user:`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postrelay::report::redact_lines;
use postrelay::secret::MASK;
use postrelay::syntax::table::Table;

fuzz_target!(|data: &[u8]| {
    let t = Table::parse(data);
    assert_eq!(t.render(), data);
    for e in t.entries() {
        assert!(!e.key.contains(&0) && !e.value.contains(&0));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let red = redact_lines(text, &[]);
        assert_eq!(red.len(), t.lines().len());
        for (line, shown) in t.lines().iter().zip(&red) {
            // A line is shown as it is, or cut after `key user:` (or its indent) and masked.
            let content = String::from_utf8_lossy(line.content());
            let content = content.trim_end_matches('\r');
            if shown != content {
                assert!(shown.ends_with(MASK), "{content:?} -> {shown:?}");
                let kept = &shown[..shown.len() - MASK.len()];
                assert!(kept.trim_start_matches('#').len() <= content.len());
            }
        }
    }
});
