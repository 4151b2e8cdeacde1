//! The streamed reading against the whole-document one: for every file, plain or not,
//! valid or not, both give the same desired state or the same problems, in the same
//! order; and the plain layouts are the ones streamed.

use std::path::Path;

use proptest::prelude::*;

use super::super::raw::{POSTFIX_KEYS, RELAYHOST_KEYS, SENDER_KEYS};
use super::super::{Credentials, Desired, Reader, Source, parse_with};
use crate::problems::Problems;

/// A result as a string that shows everything, passwords included.
fn shown(r: &Result<Desired, Problems>) -> String {
    match r {
        Ok(d) => {
            let pw = |c: &Option<Credentials>| c.as_ref().map(|c| c.password.expose().clone());
            let mut out = format!(
                "{d:?}\nrelayhost password: {:?}",
                d.relayhost.as_ref().map(|r| pw(&r.credentials))
            );
            for s in &d.senders {
                out += &format!("\n{:?}: {:?}", s.key, pw(&s.credentials));
            }
            out
        }
        Err(p) => format!("error:\n{p}"),
    }
}

/// Whether `text` is streamed; asserts that it reads as the whole document reads.
fn streamed(text: &str) -> bool {
    let path = Path::new("test.toml");
    let whole = shown(&parse_with(path, text, 0o600, Reader::Whole));
    let stream = shown(&parse_with(path, text, 0o600, Reader::Stream));
    assert_eq!(stream, whole, "{text:?}");
    super::parse(&Source::new(path, text)).is_some()
}

const RELAYHOST: &str =
    "[relayhost]\nrelay = \"[rh.example]:587\"\nusername = \"rh\"\npassword = \"rh-pw\"\n";

#[test]
fn plain_layouts_are_streamed() {
    let cases = [
        String::new(),
        "# only a comment\n\n   \n".to_string(),
        RELAYHOST.to_string(),
        format!(
            "{RELAYHOST}\n[[sender]]\ndomain = \"a.example\"\nrelay = \"[a.example]:587\"\nusername = \"a\"\npassword = \"a-pw\"\n"
        ),
        // Indentation, comments after values and headers, no spaces around `=`.
        format!(
            "  # header\n{RELAYHOST}\n  [[sender]]   # first\n  domain=\"a.example\"# c\n\trelay = 'a.example:25' \n[postfix] #\nmap_type = \"hash\"\nconfig_dir = '/etc/postfix'\n"
        ),
        // CRLF line ends, a byte order mark, no final newline.
        format!("\u{feff}{}", RELAYHOST.replace('\n', "\r\n")),
        format!(
            "{RELAYHOST}[[sender]]\r\ndomain = \"a.example\"\r\nusername = \"u\"\r\npassword = \"p\""
        ),
        // Headers inside multi-line strings are not headers.
        format!(
            "{RELAYHOST}[[sender]]\ndomain = \"a.example\"\nusername = \"\"\"\n[[sender]]\n[relayhost]\"\"\"\npassword = '''\n[postfix]\n'''\n"
        ),
        // Escapes, decoded by toml's decoder.
        format!(
            "{RELAYHOST}[[sender]]\ndomain = \"\\u0061.example\"\nusername = \"u\\u0041\"\npassword = \"p\\tw\"\n"
        ),
        // `[relayhost]` after the senders, or only in a comment or a string.
        format!("[[sender]]\ndomain = \"a.example\"\n{RELAYHOST}"),
        "# no [relayhost] here\n[[sender]]\ndomain = \"a.example\"\n".to_string(),
        "[[sender]]\ndomain = \"a.example\"\nrelay = \"[relayhost]\"\ntls = \"may\"\n".to_string(),
        "[[sender]]\ndomain = \"a.example\"\ntls = \"may\"\n".to_string(),
        // accept_cleartext.
        format!(
            "{RELAYHOST}tls = \"may\"\naccept_cleartext = true\n[[sender]]\ndomain = \"a.example\"\naccept_cleartext = false\n"
        ),
        // Problems found by the entry checks and the rules, with their lines.
        format!(
            "{RELAYHOST}[[sender]]\ndomain = \"Bad_Domain\"\n[[sender]]\naddress = \"x\"\n[[sender]]\n[[sender]]\ndomain = \"a.example\"\naddress = \"b@a.example\"\n"
        ),
        format!(
            "{RELAYHOST}[[sender]]\ndomain = \"A.Example\"\n[[sender]]\ndomain = \"a.example\"\n[[sender]]\ndomain = \"a.EXAMPLE\"\nusername = \"u\"\n"
        ),
        format!(
            "{RELAYHOST}[[sender]]\ndomain = \"a.example\"\nrelay = \"r.example\"\ntls = \"may\"\n[[sender]]\ndomain = \"b.example\"\nrelay = \"R.example\"\ntls = \"none\"\n"
        ),
        format!(
            "{RELAYHOST}[[sender]]\ndomain = \"a.example\"\nrelay = \"[a.example]:587\"\nusername = \"u\"\npassword = \"p\"\n[[sender]]\naddress = \"x@a.example\"\n"
        ),
        format!(
            "{RELAYHOST}[[sender]]\ndomain = \"a.example\"\npassword_file = \"missing\"\nusername = \"u\"\n[postfix]\nmap_type = \"dbm\"\nconfig_dir = \"rel\"\n"
        ),
        "[postfix]\nmap_type = \"hash\"\n".to_string(),
        "[relayhost]\n".to_string(),
    ];
    for text in &cases {
        assert!(streamed(text), "not streamed: {text:?}");
    }
}

#[test]
fn other_layouts_are_read_as_a_whole() {
    let s = "[[sender]]\ndomain = \"a.example\"\n";
    let cases = [
        // Other spellings of the headers.
        format!("{RELAYHOST}[ sender ]\ndomain = \"a.example\"\n"),
        format!("{RELAYHOST}[[ sender ]]\ndomain = \"a.example\"\n"),
        format!("{RELAYHOST}[[\"sender\"]]\ndomain = \"a.example\"\n"),
        format!("{RELAYHOST}[[sender] ]\ndomain = \"a.example\"\n"),
        "[ relayhost ]\nrelay = \"r.example\"\n".to_string(),
        "[\"relayhost\"]\nrelay = \"r.example\"\n".to_string(),
        format!("{RELAYHOST}[sender]\ndomain = \"a.example\"\n"),
        format!("[[relayhost]]\nrelay = \"r.example\"\n{s}"),
        format!("{RELAYHOST}[[postfix]]\n"),
        format!("{RELAYHOST}[relayhost.tls]\n"),
        format!("{RELAYHOST}[senders]\n"),
        // Tables defined twice, keys given twice.
        format!("{RELAYHOST}{RELAYHOST}"),
        "[postfix]\n[postfix]\n".to_string(),
        format!("{RELAYHOST}{s}domain = \"b.example\"\n"),
        // Keys at the top level, dotted or quoted keys, inline tables and arrays.
        "relayhost = { relay = \"r.example\" }\n".to_string(),
        "sender = []\n".to_string(),
        format!("x = 1\n{RELAYHOST}"),
        format!("{RELAYHOST}{s}relay.x = \"y\"\n"),
        format!("{RELAYHOST}[[sender]]\n\"domain\" = \"a.example\"\n"),
        format!("{RELAYHOST}[[sender]]\n'domain' = \"a.example\"\n"),
        format!("{RELAYHOST}{s}relay = [\n\"[x]\",\n]\n"),
        format!("{RELAYHOST}{s}relay = {{ host = \"x\" }}\n"),
        // Unknown keys, values of another type.
        format!("{RELAYHOST}{s}domian = \"a.example\"\n"),
        format!("{RELAYHOST}tls = 1\n"),
        format!("{RELAYHOST}{s}password = 12345\nusername = \"u\"\n"),
        format!("{RELAYHOST}{s}password = true\nusername = \"u\"\n"),
        format!("{RELAYHOST}accept_cleartext = \"yes\"\n"),
        format!("{RELAYHOST}accept_cleartext = True\n"),
        // Syntax errors.
        format!("{RELAYHOST}{s}relay = \"unterminated\n"),
        format!("{RELAYHOST}{s}relay = \"bad \\q escape\"\n"),
        format!("{RELAYHOST}# a control \u{1} character\n"),
        format!("{RELAYHOST}\r[[sender]]\n"),
        format!("{RELAYHOST}{s}relay = \"a\" \"b\"\n"),
        format!("{RELAYHOST}{s}relay =\n"),
        format!("{RELAYHOST}{s}= \"x\"\n"),
        format!("{RELAYHOST}[[sender]] x\n"),
        format!("{RELAYHOST}]\n"),
        format!("{RELAYHOST}domain = \"a.example\" relay = \"x\"\n"),
        "\u{feff}\u{feff}[relayhost]\n".to_string(),
    ];
    for text in &cases {
        assert!(!streamed(text), "streamed: {text:?}");
    }
}

/// Pieces of desired-state files, plain and not, valid and not.
fn line() -> impl Strategy<Value = String> {
    let header = prop::sample::select(vec![
        "[[sender]]",
        "[[sender]]",
        "[[sender]]",
        "[relayhost]",
        "[postfix]",
        "[[ sender ]]",
        "[ relayhost ]",
        "[sender]",
        "[[relayhost]]",
        "[relayhost.x]",
        "[\"postfix\"]",
        "[[sender]] # c",
        "\t[[sender]]",
        "[[sender]",
    ]);
    // Every key the file may hold (as the structs name them), and some it may not.
    let keys: Vec<&str> = [SENDER_KEYS, RELAYHOST_KEYS, POSTFIX_KEYS]
        .concat()
        .into_iter()
        .chain(["domian", "\"domain\"", "relay.x", ""])
        .collect();
    let key = prop::sample::select(keys);
    let value = prop::sample::select(vec![
        "\"a.example\"",
        "\"A.Example\"",
        "\"u@a.example\"",
        "\"x@b.example\"",
        "\"[r.example]:587\"",
        "'r.example:25'",
        "\"[192.0.2.1]\"",
        "\"may\"",
        "\"encrypt\"",
        "\"none\"",
        "\"bad tls\"",
        "\"pw\"",
        "\" pw\"",
        "\"\"",
        "\"\\u0041b\"",
        "\"\\q\"",
        "\"\"\"\n[[sender]]\"\"\"",
        "'''\n[relayhost]\n'''",
        "true",
        "false",
        "1",
        "[\"x\"]",
        "{ a = 1 }",
        "\"hash\"",
        "\"/etc/postfix\"",
        "\"rel\"",
        "\"missing-file\"",
        "\"unterminated",
        "\"mailgun\"",
        "\"ses\"",
        "\"sendgrid\"",
        "\"eu\"",
        "\"eu-west-1\"",
    ]);
    let filler = prop::sample::select(vec![
        "",
        "# comment",
        "  ",
        "# [relayhost]",
        "x = 1",
        "\u{1}",
    ]);
    prop_oneof![
        3 => header.prop_map(str::to_string),
        8 => (key, value, prop::sample::select(vec![" = ", "=", " =", " = ", "\t=\t"]), prop::sample::select(vec!["", " # c", "#c", " "]))
            .prop_map(|(k, v, eq, tail)| format!("{k}{eq}{v}{tail}")),
        2 => filler.prop_map(str::to_string),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn streamed_reads_as_the_whole_document(
        lines in prop::collection::vec(line(), 0..24),
        crlf in any::<bool>(),
        final_newline in any::<bool>(),
        relayhost_first in any::<bool>(),
    ) {
        let mut lines = lines;
        if relayhost_first {
            lines.insert(0, "[relayhost]\nrelay = \"[rh.example]:587\"".to_string());
        }
        let nl = if crlf { "\r\n" } else { "\n" };
        let mut text = lines.join(nl);
        if final_newline {
            text.push_str(nl);
        }
        streamed(&text);
    }
}

/// One of the values of a pool, or none.
fn maybe(key: &'static str, values: &[&'static str]) -> impl Strategy<Value = Option<String>> {
    prop::option::of(
        prop::sample::select(values.to_vec()).prop_map(move |v| format!("{key} = {v}")),
    )
}

/// A file laid out plainly: a `[relayhost]` and a `[postfix]` or not, anywhere among
/// the senders; each table's keys in any order; valid or not.
fn file() -> impl Strategy<Value = Vec<String>> {
    let key = prop_oneof![
        4 => (0..40u32).prop_map(|n| format!("domain = \"d{n}.example\"")),
        3 => (0..40u32, 0..40u32).prop_map(|(u, n)| format!("address = \"u{u}@d{n}.example\"")),
        1 => prop::sample::select(vec![
            "domain = \"B.Example\"", "domain = 'b.example'", "address = \"U@B.example\"",
            "domain = \"bad_domain\"", "",
        ]).prop_map(str::to_string),
    ];
    let credentials = prop::sample::select(vec![
        vec![],
        vec!["username = \"user\"", "password = \"pw\""],
        vec!["username = '''u'''", "password = \"\"\"p w\"\"\""],
        vec!["username = \"user\"", "password_file = \"missing-file\""],
        vec!["username = \"a:b\"", "password = \" pw\""],
        vec!["username = \"user\""],
        vec!["password = \"pw\""],
    ]);
    let sender = (
        key,
        maybe(
            "relay",
            &[
                "\"[r.example]:587\"",
                "\"[R.example]:587\"",
                "'s.example:25'",
                "\"[192.0.2.1]\"",
                "\"bad relay\"",
            ],
        ),
        credentials,
        maybe(
            "tls",
            &[
                "\"may\"",
                "\"none\"",
                "\"encrypt\"",
                "\"secure\"",
                "\"bad\"",
            ],
        ),
        maybe("accept_cleartext", &["true", "false"]),
    )
        .prop_map(|(k, r, c, t, a)| {
            let mut lines: Vec<String> = vec![k];
            lines.extend(c.into_iter().map(str::to_string));
            lines.extend([r, t, a].into_iter().flatten());
            lines
        });
    let relayhost = (
        maybe(
            "relay",
            &[
                "\"[rh.example]:587\"",
                "\"[r.example]:587\"",
                "\"bad relay\"",
            ],
        ),
        maybe("username", &["\"rh\""]),
        maybe("password", &["\"rh-pw\""]),
        maybe("tls", &["\"may\"", "\"encrypt\""]),
    )
        .prop_map(|(r, u, p, t)| [r, u, p, t].into_iter().flatten().collect::<Vec<_>>());
    let postfix = (
        maybe("map_type", &["\"hash\"", "\"dbm\""]),
        maybe("config_dir", &["\"/etc/postfix\"", "\"rel\""]),
    )
        .prop_map(|(m, c)| [m, c].into_iter().flatten().collect::<Vec<_>>());
    let one = |header: &'static str| {
        move |lines: Vec<String>| format!("{header}\n{}\n", lines.join("\n"))
    };
    (
        prop::option::of(relayhost.prop_shuffle().prop_map(one("[relayhost]"))),
        prop::option::of(postfix.prop_map(one("[postfix]"))),
        prop::collection::vec(sender.prop_shuffle().prop_map(one("[[sender]]")), 0..5),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(relayhost, postfix, mut tables, at)| {
            for t in [relayhost, postfix].into_iter().flatten() {
                let i = at.index(tables.len() + 1);
                tables.insert(i, t);
            }
            tables
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn plain_files_read_as_the_whole_document(tables in file(), blank in any::<bool>()) {
        let text = tables.join(if blank { "\n" } else { "" });
        prop_assert!(streamed(&text), "not streamed: {:?}", text);
    }
}

#[test]
fn plain_strings_skip_the_decoder_only_when_nothing_needs_decoding() {
    use super::plain;
    assert_eq!(plain("\"pw\""), Some("pw"));
    assert_eq!(plain("'a\\b'"), Some("a\\b"));
    assert_eq!(plain("\"\""), Some(""));
    assert_eq!(plain("\"tab\there\""), Some("tab\there"));
    for needs in [
        "\"a\\nb\"",
        "\"unclosed",
        "\"",
        "'x",
        "\"nul\u{0}\"",
        "\"del\u{7f}\"",
    ] {
        assert_eq!(plain(needs), None, "{needs:?}");
    }
}
