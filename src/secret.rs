//! A wrapper for every value that may hold a password: a password itself, the bytes of
//! `sasl_passwd` (source, rendering, snapshot) and what `postmap -s` dumps of it.
//!
//! `Debug` and `Display` print `********`, so a secret cannot reach a log line, an error
//! message or a `{:?}` of a larger structure by accident. Reading the value takes an
//! explicit [`Secret::expose`], which is easy to find and review.

use std::fmt;

/// What a secret shows instead of itself.
pub const MASK: &str = "********";

/// A value whose `Debug` and `Display` never show it.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Secret<T> {
        Secret(value)
    }

    /// The value itself: for the few places that must write or compare it.
    pub fn expose(&self) -> &T {
        &self.0
    }

    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_are_masked() {
        let s = Secret::new("hunter2".to_string());
        let b = Secret::new(b"@a u:hunter2\n".to_vec());
        for shown in [
            format!("{s}"),
            format!("{s:?}"),
            format!("{b:?}"),
            format!("{:?}", Some(&s)),
        ] {
            assert!(!shown.contains("hunter2"), "{shown}");
        }
        assert_eq!(format!("{s:#?}"), MASK);
        assert_eq!(s.expose(), "hunter2");
    }
}
