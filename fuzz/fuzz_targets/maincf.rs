//! Fuzz target: the lossless main.cf document. For any bytes: parsing never panics,
//! rendering gives the input back byte for byte, every query works, and an edit reads
//! back as set, is idempotent, and still round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postrelay::syntax::maincf::{MainCf, same_value};

fuzz_target!(|data: &[u8]| {
    let doc = MainCf::parse(data);
    assert_eq!(doc.render(), data);
    let _ = doc.errors();
    let defs = doc.definitions();
    for d in &defs {
        assert!(d.line >= 1);
    }
    let mut edited = doc.clone();
    let params = [("relayhost", "[smtp.example.com]:587"), ("smtp_sasl_auth_enable", "yes")];
    let edits = edited.set_all(&params);
    let bytes = edited.render();
    let reparsed = MainCf::parse(&bytes);
    assert_eq!(reparsed.render(), bytes);
    if doc.errors().is_empty() {
        for (name, value) in params {
            let got = reparsed.get(name).expect("a set parameter is defined");
            assert!(same_value(&got, value), "{name}: {got:?}");
        }
    }
    let mut again = reparsed.clone();
    if doc.errors().is_empty() {
        assert!(again.set_all(&params).is_empty(), "second edit after {edits:?}");
        assert_eq!(again.render(), bytes);
    }
});
