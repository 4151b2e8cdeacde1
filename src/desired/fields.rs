//! The pure checks of single fields of the desired state: domain, address, username,
//! password (inline or a password file's bytes) and TLS level. Each returns the
//! normalised value or a terse reason that never quotes a password. (A relay is parsed
//! by [`crate::routing::Relay::parse`], next to the type it produces.)

use super::Tls;
use crate::secret::Secret;

/// Checks a domain name and returns it lowercased.
///
/// ASCII only (IDNs must be written in punycode), labels of `[A-Za-z0-9-]` not starting
/// or ending with `-`, 1-63 characters each, at most 253 in total, no leading `@` and no
/// trailing dot. The error is a terse reason, without the domain itself.
pub fn parse_domain(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("empty".into());
    }
    if !s.is_ascii() {
        return Err("non-ASCII characters; write it in punycode (IDNA) form, \"xn--...\"".into());
    }
    if s.starts_with('@') {
        return Err("leading '@'; write the domain without it".into());
    }
    if s.len() > 1 && s.ends_with('.') {
        return Err("trailing dot".into());
    }
    if s.len() > 253 {
        return Err("longer than 253 characters".into());
    }
    for label in s.split('.') {
        if label.is_empty() {
            return Err("empty label".into());
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(format!("label contains {c:?}"));
        }
        if label.len() > 63 {
            return Err(format!("label {label:?} longer than 63 characters"));
        }
        if label.starts_with('-') {
            return Err(format!("label {label:?} starts with '-'"));
        }
        if label.ends_with('-') {
            return Err(format!("label {label:?} ends with '-'"));
        }
    }
    Ok(s.to_ascii_lowercase())
}

/// Checks a wildcard domain, `*.` then a domain (`*.shop.example`: every subdomain of
/// shop.example at any depth, not shop.example itself), and returns the domain after
/// the `*.`, lowercased.
pub fn parse_wildcard(s: &str) -> Result<String, String> {
    let usage = "a wildcard is \"*.\" followed by a domain, as in \"*.shop.example\"";
    let Some(rest) = s.strip_prefix("*.") else {
        return Err(format!("'*' only as the first label; {usage}"));
    };
    if rest.contains('*') {
        return Err(format!("one '*', as the first label only; {usage}"));
    }
    if rest.is_empty() {
        return Err(format!("no domain after \"*.\"; {usage}"));
    }
    parse_domain(rest)
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c)
}

/// Checks an email address (`local@domain`) and returns it lowercased.
///
/// Exactly one `@`; the local part is 1-64 characters of RFC 5322 atext plus `.` and
/// does not start with `#` (a comment in a lookup table); the domain follows
/// [`parse_domain`].
pub fn parse_address(s: &str) -> Result<String, String> {
    let Some((local, domain)) = s.split_once('@') else {
        return Err("no '@'".into());
    };
    if domain.contains('@') {
        return Err("more than one '@'".into());
    }
    if local.is_empty() {
        return Err("empty local part".into());
    }
    if let Some(c) = local.chars().find(|c| !is_atext(*c)) {
        return Err(format!("local part contains {c:?}"));
    }
    if local.len() > 64 {
        return Err("local part longer than 64 characters".into());
    }
    if local.starts_with('#') {
        return Err("local part starts with '#' (a lookup-table comment)".into());
    }
    let domain = parse_domain(domain).map_err(|e| format!("domain part: {e}"))?;
    Ok(format!("{}@{domain}", local.to_ascii_lowercase()))
}

/// Checks a SASL username: non-empty, no `:`, no whitespace, no control characters.
pub fn check_username(s: &str) -> Result<(), String> {
    // The common case at a glance: printable ASCII, no space, no ':'.
    if !s.is_empty() && s.bytes().all(|b| b > b' ' && b < 0x7f && b != b':') {
        return Ok(());
    }
    if s.is_empty() {
        return Err("empty".into());
    }
    if s.contains(':') {
        return Err("contains ':' (postfix splits username:password at the first ':')".into());
    }
    if s.chars().any(char::is_whitespace) {
        return Err("contains whitespace".into());
    }
    if s.chars().any(char::is_control) {
        return Err("contains a control character".into());
    }
    Ok(())
}

/// Checks a SASL password. The error never contains any part of it.
///
/// Non-empty; no control characters except a tab inside; no leading or trailing
/// whitespace (Postfix would strip it from the table value).
pub fn check_password(s: &str) -> Result<(), String> {
    // The common case at a glance: printable ASCII without a space at either end.
    let printable = s.bytes().all(|b| (b' '..0x7f).contains(&b));
    if printable && !s.starts_with(' ') && !s.ends_with(' ') && !s.is_empty() {
        return Ok(());
    }
    if s.is_empty() {
        return Err("empty password".into());
    }
    if s.chars().any(|c| c == '\n' || c == '\r') {
        return Err("password contains a line break".into());
    }
    if s.contains('\0') {
        return Err("password contains a NUL character".into());
    }
    if s.starts_with(|c: char| c.is_whitespace()) || s.ends_with(|c: char| c.is_whitespace()) {
        return Err("password has leading or trailing whitespace (postfix would strip it)".into());
    }
    if s.chars().any(|c| c.is_control() && c != '\t') {
        return Err("password contains a control character".into());
    }
    Ok(())
}

/// The password in a password file's bytes: its first line, without one trailing `\n`
/// or `\r\n`, checked by [`check_password`].
pub fn password_from_file(mut bytes: Vec<u8>) -> Result<Secret<String>, String> {
    if let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
        let end = if nl > 0 && bytes[nl - 1] == b'\r' {
            nl - 1
        } else {
            nl
        };
        bytes.truncate(end);
    }
    let pw = String::from_utf8(bytes).map_err(|_| "password is not valid UTF-8".to_owned())?;
    check_password(&pw)?;
    Ok(Secret::new(pw))
}

/// Checks a `tls` value.
pub fn parse_tls(s: &str) -> Result<Tls, String> {
    match s {
        "secure" => Ok(Tls::Secure),
        "verify" => Ok(Tls::Verify),
        "encrypt" => Ok(Tls::Encrypt),
        "may" => Ok(Tls::May),
        "none" => Ok(Tls::None),
        other => Err(format!(
            "tls {other:?}: expected \"secure\", \"verify\", \"encrypt\", \"may\" or \"none\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every bad case: the error contains the reason, and never the value's "secret" part.
    fn assert_bad<T: std::fmt::Debug>(
        check: impl Fn(&str) -> Result<T, String>,
        cases: &[(&str, &str)],
    ) {
        for (input, reason) in cases {
            let err = check(input).unwrap_err();
            assert!(
                err.contains(reason),
                "{input:?}: {err:?} should contain {reason:?}"
            );
            assert!(
                !err.contains("CANARY") && !err.contains("7731"),
                "{input:?}: {err}"
            );
        }
    }

    #[test]
    fn domains() {
        let good = [
            ("example.com", "example.com"),
            ("Example.COM", "example.com"),
            ("a", "a"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("a-b.c0", "a-b.c0"),
        ];
        for (i, o) in good {
            assert_eq!(parse_domain(i).as_deref(), Ok(o), "{i}");
        }
        let ok_label = "a".repeat(63);
        assert_eq!(parse_domain(&ok_label), Ok(ok_label.clone()));
        let ok_total = format!("{ok_label}.{ok_label}.{ok_label}.{}", "a".repeat(61)); // 253
        assert!(parse_domain(&ok_total).is_ok());
        let long_label = "a".repeat(64);
        let long_total = [ok_label.as_str(); 4].join("."); // 255
        assert_bad(
            parse_domain,
            &[
                ("", "empty"),
                ("exa mple.com", "label contains ' '"),
                ("exa_mple.com", "label contains '_'"),
                ("bücher.example", "punycode"),
                ("@example.com", "leading '@'; write the domain without it"),
                ("example.com.", "trailing dot"),
                ("example..com", "empty label"),
                (".example.com", "empty label"),
                ("-a.example", "starts with '-'"),
                ("a-.example", "ends with '-'"),
                (&long_label, "longer than 63"),
                (&long_total, "longer than 253"),
                ("a@b.example", "label contains '@'"),
                (".", "empty label"),
            ],
        );
    }

    #[test]
    fn addresses() {
        assert_eq!(
            parse_address("Wes@Example.COM").as_deref(),
            Ok("wes@example.com")
        );
        assert_eq!(
            parse_address("a.b+c!#$%&'*/=?^_`{|}~-@x.example").as_deref(),
            Ok("a.b+c!#$%&'*/=?^_`{|}~-@x.example")
        );
        assert!(parse_address(&format!("{}@x.example", "a".repeat(64))).is_ok());
        let long_local = format!("{}@x.example", "a".repeat(65));
        assert_bad(
            parse_address,
            &[
                ("example.com", "no '@'"),
                ("a@b@example.com", "more than one '@'"),
                ("@example.com", "empty local part"),
                ("a b@example.com", "local part contains ' '"),
                ("a\"b@example.com", "local part contains '\"'"),
                ("a(b)@example.com", "local part contains '('"),
                ("wés@example.com", "local part contains 'é'"),
                ("#x@example.com", "starts with '#'"),
                (&long_local, "longer than 64"),
                ("a@exa_mple.com", "domain part: label contains '_'"),
                ("a@", "domain part: empty"),
                ("a@example.com.", "domain part: trailing dot"),
            ],
        );
    }

    #[test]
    fn usernames() {
        for u in ["u", "postmaster@example.com", "ünïcode", "a;b#c"] {
            assert_eq!(check_username(u), Ok(()), "{u}");
        }
        assert_bad(
            check_username,
            &[
                ("", "empty"),
                ("a:b", "contains ':'"),
                ("a b", "whitespace"),
                ("a\tb", "whitespace"),
                ("a\u{7f}b", "control"),
                ("a\u{1}b", "control"),
            ],
        );
    }

    #[test]
    fn passwords() {
        for pw in ["x", "s3cret", "a b", "a\tb", "pässwörd", "a:b#c"] {
            assert_eq!(check_password(pw), Ok(()), "{pw:?}");
        }
        assert_bad(
            check_password,
            &[
                ("", "empty password"),
                (" CANARY-pw-7731", "leading or trailing whitespace"),
                ("CANARY-pw-7731 ", "leading or trailing whitespace"),
                ("\tCANARY-pw-7731", "leading or trailing whitespace"),
                ("CANARY\n-pw-7731", "line break"),
                ("CANARY\r-pw-7731", "line break"),
                ("CANARY\0-pw-7731", "NUL"),
                ("CANARY\u{1b}-pw-7731", "control character"),
                ("CANARY\u{85}-pw-7731", "control character"),
            ],
        );
    }

    #[test]
    fn password_files_give_their_first_line() {
        let from = |b: &[u8]| password_from_file(b.to_vec());
        for (c, pw) in [
            (&b"secret"[..], "secret"),
            (b"secret\n", "secret"),
            (b"secret\r\n", "secret"),
            (b"secret\nother\n", "secret"),
            (b"sec ret\n\n", "sec ret"),
            (b"sec\tret\r\nx", "sec\tret"),
            (b"CANARY-pw-7731\n\n", "CANARY-pw-7731"),
        ] {
            assert_eq!(from(c).unwrap().expose(), pw, "{c:?}");
        }
        for (c, e) in [
            (&b""[..], "empty password"),
            (b"\n", "empty password"),
            (b"\r\nCANARY-pw-7731", "empty password"),
            (b"CANARY-pw-7731\r", "password contains a line break"),
            (
                b"CANARY-pw-7731 \n",
                "password has leading or trailing whitespace (postfix would strip it)",
            ),
            (
                b" CANARY-pw-7731\n",
                "password has leading or trailing whitespace (postfix would strip it)",
            ),
            (b"CANARY\xff-pw-7731\n", "password is not valid UTF-8"),
            (b"CANARY\0-pw-7731\n", "password contains a NUL character"),
        ] {
            assert_eq!(from(c).unwrap_err(), e, "{c:?}");
        }
    }

    #[test]
    fn tls_levels() {
        assert_eq!(parse_tls("secure"), Ok(Tls::Secure));
        assert_eq!(parse_tls("verify"), Ok(Tls::Verify));
        assert_eq!(parse_tls("encrypt"), Ok(Tls::Encrypt));
        assert_eq!(parse_tls("may"), Ok(Tls::May));
        assert_eq!(parse_tls("none"), Ok(Tls::None));
        assert_bad(
            parse_tls,
            &[
                ("Encrypt", "tls \"Encrypt\": expected"),
                (
                    "dane",
                    "tls \"dane\": expected \"secure\", \"verify\", \"encrypt\", \"may\" or \"none\"",
                ),
                ("", "tls \"\""),
            ],
        );
    }
}
