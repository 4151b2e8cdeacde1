use super::*;

use simple_dns::ResourceRecord;
use simple_dns::rdata::{CNAME, MX};

const ID: u16 = 0x5eed;

/// A reply to query [`ID`] for `qname`'s MX records.
fn reply_to(qname: &str, rcode: RCODE, answers: Vec<ResourceRecord<'_>>) -> Vec<u8> {
    let mut p = Packet::new_reply(ID);
    p.questions.push(Question::new(
        Name::new_unchecked(qname),
        QTYPE::TYPE(TYPE::MX),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    *p.rcode_mut() = rcode;
    p.answers = answers;
    p.build_bytes_vec_compressed().unwrap()
}

fn mx<'a>(owner: &'a str, preference: u16, host: &'a str) -> ResourceRecord<'a> {
    let exchange = Name::new_unchecked(host);
    let rdata = RData::MX(MX {
        preference,
        exchange,
    });
    ResourceRecord::new(Name::new_unchecked(owner), CLASS::IN, 300, rdata)
}

fn cname<'a>(owner: &'a str, target: &'a str) -> ResourceRecord<'a> {
    let rdata = RData::CNAME(CNAME(Name::new_unchecked(target)));
    ResourceRecord::new(Name::new_unchecked(owner), CLASS::IN, 300, rdata)
}

fn parse(bytes: &[u8], qname: &str) -> Result<Reply, String> {
    parse_reply(bytes, ID, &Name::new(qname).unwrap())
}

fn mx_answer(owner: &str, preference: u16, host: Option<&str>) -> Answer {
    Answer::Mx {
        owner: owner.into(),
        preference,
        host: host.map(String::from),
    }
}

fn cname_answer(owner: &str, target: &str) -> Answer {
    Answer::Cname {
        owner: owner.into(),
        target: target.into(),
    }
}

fn noerror(answers: Vec<Answer>) -> Reply {
    Reply {
        rcode: RCODE::NoError,
        truncated: false,
        answers,
    }
}

// --- the query ---

#[test]
fn query_asks_one_mx_question_with_recursion_desired() {
    let bytes = query(ID, &Name::new("example.net").unwrap()).unwrap();
    let p = Packet::parse(&bytes).unwrap();
    assert_eq!(p.id(), ID);
    assert!(p.has_flags(PacketFlag::RECURSION_DESIRED));
    assert!(!p.has_flags(PacketFlag::RESPONSE));
    assert_eq!(p.opcode(), OPCODE::StandardQuery);
    assert_eq!(p.questions.len(), 1);
    let q = &p.questions[0];
    assert_eq!(q.qname.to_string(), "example.net");
    assert_eq!(q.qtype, QTYPE::TYPE(TYPE::MX));
    assert_eq!(q.qclass, QCLASS::CLASS(CLASS::IN));
    assert!(p.answers.is_empty() && p.additional_records.is_empty());
}

#[test]
fn query_ids_differ() {
    let ids: Vec<u16> = (0..8).map(|_| random_id().unwrap()).collect();
    let mut distinct = ids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    // Eight 16-bit random numbers are all equal with probability 2^-112.
    assert!(distinct.len() > 1, "{ids:?}");
}

// --- accepting a reply ---

#[test]
fn a_matching_reply_is_accepted_with_its_mx_and_cname_records() {
    let bytes = reply_to(
        "Mail.Example.NET",
        RCODE::NoError,
        vec![
            cname("mail.example.net", "MX-Alias.example.org"),
            mx("mx-alias.example.org", 10, "MX1.example.org"),
            mx("mx-alias.example.org", 0, "."),
        ],
    );
    let reply = parse(&bytes, "mail.example.net").unwrap();
    assert_eq!(
        reply,
        noerror(vec![
            cname_answer("mail.example.net", "mx-alias.example.org"),
            mx_answer("mx-alias.example.org", 10, Some("mx1.example.org")),
            mx_answer("mx-alias.example.org", 0, None),
        ])
    );
}

#[test]
fn rcode_and_truncation_are_kept() {
    let mut bytes = reply_to("example.net", RCODE::NameError, vec![]);
    assert_eq!(
        parse(&bytes, "example.net").unwrap().rcode,
        RCODE::NameError
    );
    bytes[2] |= 0x02; // TC
    assert!(parse(&bytes, "example.net").unwrap().truncated);
}

#[test]
fn records_of_another_class_or_type_are_left_out() {
    let mut chaos = mx("example.net", 5, "chaos.example.net");
    chaos.class = CLASS::CH;
    let a = ResourceRecord::new(
        Name::new_unchecked("example.net"),
        CLASS::IN,
        300,
        RData::A(simple_dns::rdata::A {
            address: 0x7f00_0001,
        }),
    );
    let bytes = reply_to(
        "example.net",
        RCODE::NoError,
        vec![chaos, a, mx("example.net", 10, "mx.example.net")],
    );
    assert_eq!(
        parse(&bytes, "example.net").unwrap().answers,
        vec![mx_answer("example.net", 10, Some("mx.example.net"))]
    );
}

#[test]
fn replies_that_do_not_answer_the_query_are_refused_with_the_reason() {
    let good = reply_to(
        "example.net",
        RCODE::NoError,
        vec![mx("example.net", 1, "a.example.net")],
    );
    assert!(parse(&good, "example.net").is_ok());

    let mut wrong_id = good.clone();
    wrong_id[1] ^= 1;
    let mut not_response = good.clone();
    not_response[2] &= !0x80;
    let mut opcode = good.clone();
    opcode[2] |= 2 << 3; // STATUS
    let other_name = reply_to("example.org", RCODE::NoError, vec![]);
    let other_type = {
        let mut p = Packet::parse(&good).unwrap();
        p.questions[0].qtype = QTYPE::TYPE(TYPE::A);
        p.build_bytes_vec().unwrap()
    };
    let two_questions = {
        let mut p = Packet::parse(&good).unwrap();
        p.questions.push(p.questions[0].clone());
        p.build_bytes_vec().unwrap()
    };
    let no_question = {
        let mut p = Packet::parse(&good).unwrap();
        p.questions.clear();
        p.build_bytes_vec().unwrap()
    };
    let mut inflated = good.clone();
    inflated[6] = 0xff; // ANCOUNT 0xff01
    // 12 + 5 × 1 question + 11 × 0xff01 records.
    let counts = format!(
        "section counts that need 718108 bytes in a {}-byte message",
        good.len()
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("wrong ID", wrong_id, "ID 24300, not the query's 24301"),
        (
            "QR clear",
            not_response,
            "a query, not a response (QR bit clear)",
        ),
        (
            "opcode",
            opcode,
            "opcode ServerStatusRequest, not a standard query",
        ),
        (
            "other name",
            other_name,
            "the answer to another question (example.org TYPE(MX))",
        ),
        (
            "other type",
            other_type,
            "the answer to another question (example.net TYPE(A))",
        ),
        (
            "two questions",
            two_questions,
            "2 questions, not the query's one",
        ),
        (
            "no question",
            no_question,
            "0 questions, not the query's one",
        ),
        (
            "short",
            good[..11].to_vec(),
            "11 bytes, shorter than a DNS header",
        ),
        ("counts", inflated, &counts),
        (
            "cut",
            good[..good.len() - 3].to_vec(),
            "malformed: Incomplete dns packet",
        ),
    ];
    for (what, bytes, why) in cases {
        assert_eq!(parse(&bytes, "example.net"), Err(why.to_string()), "{what}");
    }
}

#[test]
fn the_question_echo_is_compared_without_case() {
    let bytes = reply_to("EXAMPLE.net", RCODE::NoError, vec![]);
    assert!(parse(&bytes, "example.NET").is_ok());
}

// --- what a reply means ---

#[test]
fn meaning_of_replies() {
    let hosts =
        |v: &[(u16, &str)]| Meaning::Hosts(v.iter().map(|(p, h)| (*p, h.to_string())).collect());
    let cases: Vec<(&str, Reply, Meaning)> = vec![
        (
            "MX records",
            noerror(vec![
                mx_answer("d.example", 20, Some("b.example")),
                mx_answer("d.example", 10, Some("a.example")),
            ]),
            hosts(&[(20, "b.example"), (10, "a.example")]),
        ),
        ("no MX: NODATA", noerror(vec![]), Meaning::NoData),
        (
            "MX records of another owner are not about the question",
            noerror(vec![mx_answer("other.example", 10, Some("a.example"))]),
            Meaning::NoData,
        ),
        (
            "null MX",
            noerror(vec![mx_answer("d.example", 0, None)]),
            Meaning::NullMx,
        ),
        (
            "a null MX among others still ends the lookup (Postfix)",
            noerror(vec![
                mx_answer("d.example", 10, Some("a.example")),
                mx_answer("d.example", 20, None),
            ]),
            Meaning::NullMx,
        ),
        (
            "NXDOMAIN",
            Reply {
                rcode: RCODE::NameError,
                truncated: false,
                answers: vec![],
            },
            Meaning::NoSuchDomain("d.example".into()),
        ),
        (
            "NXDOMAIN at the end of a CNAME chain",
            Reply {
                rcode: RCODE::NameError,
                truncated: false,
                answers: vec![cname_answer("d.example", "gone.example")],
            },
            Meaning::NoSuchDomain("gone.example".into()),
        ),
        (
            "CNAME chain with the target's MX records, in any order",
            noerror(vec![
                mx_answer("t.example", 5, Some("mx.t.example")),
                cname_answer("m.example", "t.example"),
                cname_answer("d.example", "m.example"),
            ]),
            hosts(&[(5, "mx.t.example")]),
        ),
        (
            "CNAME only: ask for the target",
            noerror(vec![cname_answer("d.example", "t.example")]),
            Meaning::Alias("t.example".into()),
        ),
        (
            "a CNAME loop in one answer ends",
            noerror(vec![
                cname_answer("d.example", "t.example"),
                cname_answer("t.example", "d.example"),
            ]),
            Meaning::Alias("t.example".into()),
        ),
    ];
    for (what, reply, expected) in cases {
        assert_eq!(meaning(&reply, "d.example"), expected, "{what}");
    }
}

#[test]
fn hosts_come_by_preference_then_name_each_once() {
    let records = [
        (20, "b.example"),
        (10, "Z.example"),
        (10, "a.example."),
        (30, "c.example"),
        (10, "m.example"),
        (40, "a.example"),
    ]
    .map(|(p, h)| (p, h.to_string()))
    .to_vec();
    assert_eq!(
        hosts("d.example", records).unwrap(),
        [
            "a.example",
            "m.example",
            "z.example",
            "b.example",
            "c.example"
        ]
    );
}

#[test]
fn invalid_mx_hosts_are_skipped_and_none_left_is_an_error() {
    let records = vec![
        (10, "bad host.example".to_string()),
        (20, "ok_host.example".to_string()),
    ];
    assert_eq!(hosts("d.example", records).unwrap(), ["ok_host.example"]);
    let err = hosts("d.example", vec![(10, r"a\.b.example".to_string())]).unwrap_err();
    assert_eq!(
        err.to_string(),
        r"d.example: no MX record names a valid host (a\.b.example)"
    );
}

#[test]
fn host_names_from_answers() {
    let cases = [
        ("mx1.example.net", Some("mx1.example.net")),
        ("MX1.Example.NET.", Some("mx1.example.net")),
        ("_dmarc-ish_.example", Some("_dmarc-ish_.example")),
        ("192.0.2.7", Some("192.0.2.7")),
        ("", None),
        (".", None),
        ("a..b", None),
        ("a b.example", None),
        ("é.example", None),
        (r"a\.b", None),
    ];
    for (name, expected) in cases {
        assert_eq!(check_host(name).as_deref(), expected, "{name:?}");
    }
    assert!(check_host(&format!("{}.example", "a".repeat(63))).is_some());
    assert!(check_host(&format!("{}.example", "a".repeat(64))).is_none());
    assert!(check_host(&["a"; 127].join(".")).is_some()); // 253 characters
    assert!(check_host(&format!("{}.b", ["a"; 127].join("."))).is_none());
}

#[test]
fn domains_asked_for() {
    assert_eq!(
        check_domain("Mail.Example.NET").unwrap(),
        "mail.example.net"
    );
    assert_eq!(check_domain("example.net.").unwrap(), "example.net");
    for (domain, message) in [
        ("", r#"cannot look up the MX records of "": empty"#),
        (
            "192.0.2.1",
            r#"cannot look up the MX records of "192.0.2.1": an IP address has no MX records"#,
        ),
        (
            "a..example",
            r#"cannot look up the MX records of "a..example": empty label"#,
        ),
        (
            "under_score.example",
            r#"cannot look up the MX records of "under_score.example": label contains '_'"#,
        ),
    ] {
        assert_eq!(check_domain(domain).unwrap_err().to_string(), message);
    }
}

// --- where the nameservers come from ---

#[test]
fn resolv_conf_nameservers_as_the_c_library_reads_them() {
    let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
    let cases: Vec<(&str, Vec<SocketAddr>)> = vec![
        ("nameserver 192.0.2.53\n", vec![sa("192.0.2.53:53")]),
        (
            "# comment\n; comment\nsearch example.net\noptions timeout:1\nnameserver\t192.0.2.1 # first\nnameserver 2001:db8::53;x\n",
            vec![sa("192.0.2.1:53"), sa("[2001:db8::53]:53")],
        ),
        (
            "nameserver 192.0.2.1\nnameserver 192.0.2.2\nnameserver 192.0.2.3\nnameserver 192.0.2.4\n",
            vec![sa("192.0.2.1:53"), sa("192.0.2.2:53"), sa("192.0.2.3:53")],
        ),
        // Not a nameserver line: indented, glued to the keyword, commented out.
        (
            " nameserver 192.0.2.1\nnameserver192.0.2.2\n#nameserver 192.0.2.3\n",
            vec![sa("127.0.0.1:53")],
        ),
        // Unusable addresses are skipped; a scoped IPv6 address too.
        (
            "nameserver fe80::1%eth0\nnameserver not-an-ip\nnameserver 192.0.2.9\n",
            vec![sa("192.0.2.9:53")],
        ),
        ("", vec![sa("127.0.0.1:53")]),
        ("nameserver 192.0.2.1\r\n", vec![sa("192.0.2.1:53")]),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_resolv_conf(text), expected, "{text:?}");
    }
}

#[test]
fn resolv_conf_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resolv.conf");
    assert_eq!(
        read_resolv_conf(&path).unwrap(),
        vec![DEFAULT_NAMESERVER],
        "missing: the local nameserver, as the C library"
    );
    std::fs::write(&path, "nameserver 192.0.2.5\n").unwrap();
    assert_eq!(
        read_resolv_conf(&path).unwrap(),
        vec!["192.0.2.5:53".parse().unwrap()]
    );
    std::fs::write(&path, vec![b'#'; MAX_RESOLV_CONF as usize + 1]).unwrap();
    assert_eq!(
        read_resolv_conf(&path).unwrap_err().to_string(),
        format!("{}: larger than 65536 bytes", path.display())
    );
    assert_eq!(
        read_resolv_conf(dir.path()).unwrap_err().to_string(),
        format!("{}: not a regular file", dir.path().display())
    );
}

#[test]
fn nameserver_override() {
    assert_eq!(
        parse_override("127.0.0.1:5353").unwrap(),
        vec!["127.0.0.1:5353".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(
        parse_override("127.0.0.1:1, [::1]:2").unwrap(),
        vec![
            "127.0.0.1:1".parse::<SocketAddr>().unwrap(),
            "[::1]:2".parse().unwrap()
        ]
    );
    assert_eq!(
        parse_override("127.0.0.1").unwrap_err(),
        r#""127.0.0.1" is not ADDRESS:PORT"#
    );
    assert_eq!(
        parse_override("127.0.0.1:1,127.0.0.1:2,127.0.0.1:3,127.0.0.1:4").unwrap_err(),
        "more than 3 nameservers"
    );
}

// --- messages ---

#[test]
fn error_messages_name_the_domain() {
    let server: SocketAddr = "127.0.0.1:53".parse().unwrap();
    let cases = [
        (
            MxError::NoSuchDomain {
                domain: "d.example".into(),
                name: "d.example".into(),
            },
            "d.example: no such domain (NXDOMAIN)",
        ),
        (
            MxError::NoSuchDomain {
                domain: "d.example".into(),
                name: "t.example".into(),
            },
            "d.example: no such domain: its alias t.example does not exist (NXDOMAIN)",
        ),
        (
            MxError::NullMx {
                domain: "d.example".into(),
            },
            "d.example: domain accepts no mail (null MX record, RFC 7505)",
        ),
        (
            MxError::AliasLoop {
                domain: "d.example".into(),
            },
            "d.example: more than 10 CNAME hops, or a CNAME loop",
        ),
        (
            MxError::ServerError {
                domain: "d.example".into(),
                server,
                rcode: rcode_name(RCODE::ServerFailure),
            },
            "MX lookup of d.example failed: nameserver 127.0.0.1:53 answered SERVFAIL",
        ),
        (
            MxError::Unreachable {
                domain: "d.example".into(),
                server,
                error: "Connection refused".into(),
            },
            "MX lookup of d.example failed: nameserver 127.0.0.1:53: Connection refused",
        ),
        (
            MxError::TimedOut {
                domain: "d.example".into(),
                after: Duration::from_millis(1500),
                servers: vec![server, "[::1]:53".parse().unwrap()],
                ignored: None,
            },
            "MX lookup of d.example timed out: no answer from 127.0.0.1:53, [::1]:53 within 1.5 s",
        ),
        (
            MxError::TimedOut {
                domain: "d.example".into(),
                after: Duration::from_secs(2),
                servers: vec![server],
                ignored: Some((3, "ID 1, not the query's 2".into())),
            },
            "MX lookup of d.example timed out: no answer from 127.0.0.1:53 within 2 s (3 replies ignored, the last: ID 1, not the query's 2)",
        ),
    ];
    for (error, message) in cases {
        assert_eq!(error.to_string(), message);
    }
}

// --- hostile replies ---

mod hostile {
    use super::*;
    use proptest::prelude::*;

    fn config(cases: u32) -> ProptestConfig {
        ProptestConfig {
            cases,
            // Never write proptest-regressions/ files into the source tree.
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// A reply with compressed names, an alias chain and several MX records: the bytes
    /// the damage is done to.
    fn rich_reply() -> Vec<u8> {
        reply_to(
            "d.example",
            RCODE::NoError,
            vec![
                cname("d.example", "m.d.example"),
                mx("m.d.example", 10, "mx1.d.example"),
                mx("m.d.example", 20, "mx2.m.d.example"),
                mx("m.d.example", 0, "."),
            ],
        )
    }

    proptest! {
        #![proptest_config(config(2048))]

        /// Any bytes that carry the query's ID and the QR bit are refused with a reason
        /// or accepted; the parser never panics and a lookup of what it accepts ends.
        #[test]
        fn prop_any_bytes_are_a_reply_or_a_reason(
            mut bytes in prop::collection::vec(any::<u8>(), 0..600),
        ) {
            if bytes.len() >= 3 {
                bytes[..2].copy_from_slice(&ID.to_be_bytes());
                bytes[2] |= 0x80;
            }
            if let Ok(reply) = parse(&bytes, "d.example") {
                let _ = meaning(&reply, "d.example");
            }
        }

        /// A valid reply with bytes overwritten, cut short or extended: refused or
        /// accepted, never a panic, and the hosts of what is accepted can be ordered.
        #[test]
        fn prop_damaged_replies_never_panic(
            damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
            tail in prop::collection::vec(any::<u8>(), 0..40),
        ) {
            let mut bytes = rich_reply();
            for (at, b) in damage {
                let i = at.index(bytes.len());
                bytes[i] = b;
            }
            bytes.truncate(cut.index(bytes.len() + 1).max(1));
            bytes.extend(tail);
            if let Ok(reply) = parse(&bytes, "d.example")
                && let Meaning::Hosts(records) = meaning(&reply, "d.example")
            {
                let _ = hosts("d.example", records);
            }
        }
    }
}
