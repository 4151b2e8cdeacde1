//! regexp_table(5) files as postrelay writes them: one rule a line, `/PATTERN/ VALUE`,
//! tried in order, the first match wins. Postfix gives a regexp table only the full
//! sender address (never `@domain`), so every pattern matches the address's domain part,
//! after a local part, anchored at both ends of the domain: `/.@eu\.shop\.example$/`
//! for one domain, `/.@[^@]+\.shop\.example$/` for every subdomain of shop.example at
//! any depth (not shop.example itself).
//!
//! Patterns are generated here from validated domain names, never typed by a user: a
//! name's dots are escaped, and nothing else in a domain name is special. Values
//! undergo Postfix's `$n` substitution in a regexp table, so a `$` in a value (a
//! password) is written `$$`. [`render`] checks every pattern with the regex crate
//! (whose syntax agrees with POSIX extended expressions on the few constructs used)
//! before it returns the bytes.

use regex::Regex;

/// What a rule matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// Addresses in exactly this domain.
    Domain(String),
    /// Addresses in any subdomain of this domain, at any depth.
    Subdomains(String),
}

impl Pattern {
    /// The regular expression, without the delimiters.
    pub fn expression(&self) -> String {
        match self {
            Pattern::Domain(d) => format!(".@{}$", escape_domain(d)),
            Pattern::Subdomains(d) => format!(".@[^@]+\\.{}$", escape_domain(d)),
        }
    }

    /// Whether the pattern matches `address`, as Postfix's regexp table would
    /// (case-insensitively).
    pub fn matches(&self, address: &str) -> bool {
        compile(self).is_ok_and(|re| re.is_match(address))
    }
}

/// One rule: the pattern and the value Postfix returns for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub pattern: Pattern,
    pub value: String,
}

/// A domain name with its dots escaped (a validated name holds only letters, digits,
/// `-` and `.`).
fn escape_domain(domain: &str) -> String {
    domain.replace('.', "\\.")
}

/// A value with Postfix's `$n` substitution neutralised.
pub fn escape_value(value: &str) -> String {
    value.replace('$', "$$")
}

fn compile(p: &Pattern) -> Result<Regex, String> {
    Regex::new(&format!("(?i){}", p.expression())).map_err(|e| e.to_string())
}

/// The table's bytes: `header` as comment lines, then each rule, in order. Fails on a
/// pattern the regex crate does not take, or a domain that is not a plain domain name
/// (which validation already refused).
pub fn render(header: &str, rules: &[Rule]) -> Result<Vec<u8>, String> {
    let mut out = String::new();
    for line in header.lines() {
        out.push_str("# ");
        out.push_str(line);
        out.push('\n');
    }
    for rule in rules {
        let (Pattern::Domain(d) | Pattern::Subdomains(d)) = &rule.pattern;
        if d.is_empty()
            || !d
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(format!("{d:?}: not a plain domain name"));
        }
        compile(&rule.pattern).map_err(|e| format!("{:?}: {e}", rule.pattern))?;
        if rule.value.contains(['\n', '\r']) {
            return Err("a value holds a line break".into());
        }
        out.push('/');
        out.push_str(&rule.pattern.expression());
        out.push_str("/ ");
        out.push_str(&escape_value(&rule.value));
        out.push('\n');
    }
    Ok(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_the_domain_part_only_and_subdomains_not_the_domain() {
        let wild = Pattern::Subdomains("shop.example".into());
        for yes in [
            "a@x.shop.example",
            "b@y.z.shop.example",
            "C@EU.Shop.Example",
        ] {
            assert!(wild.matches(yes), "{yes}");
        }
        for no in [
            "a@shop.example",
            "a@xshop.example",
            "a@x.shop.example.evil",
            "x.shop.example",
            "@x.shop.example",
            "a@x.shop_example",
            "@x.shop.example@other.example",
        ] {
            assert!(!wild.matches(no), "{no}");
        }
        let exact = Pattern::Domain("eu.shop.example".into());
        assert!(exact.matches("a@eu.shop.example"));
        assert!(!exact.matches("a@x.eu.shop.example"));
        assert!(!exact.matches("a@eu-shop.example"), "the dot is escaped");
    }

    #[test]
    fn values_escape_dollars_and_bad_rules_are_refused() {
        let rules = [
            Rule {
                pattern: Pattern::Domain("eu.shop.example".into()),
                value: "u:pa$1ss".into(),
            },
            Rule {
                pattern: Pattern::Subdomains("shop.example".into()),
                value: "[relay.example]:587".into(),
            },
        ];
        let text = String::from_utf8(render("postrelay", &rules).unwrap()).unwrap();
        assert_eq!(
            text,
            "# postrelay\n/.@eu\\.shop\\.example$/ u:pa$$1ss\n/.@[^@]+\\.shop\\.example$/ [relay.example]:587\n"
        );
        let bad = Rule {
            pattern: Pattern::Subdomains("a/b".into()),
            value: "x".into(),
        };
        assert!(render("", &[bad]).is_err());
    }
}
