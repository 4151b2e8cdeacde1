//! What main.cf tells `import`: the value Postfix reads for a parameter, with `$name`
//! references expanded the way Postfix expands them, and a map list split the way
//! Postfix splits it. Pure: main.cf comes in parsed, the few values that are not in it
//! (Postfix's defaults, `config_directory`) come in as built-ins.
//!
//! Expansion (postconf(5), "$name"): `$name`, `${name}` and `$(name)` are replaced by
//! the named parameter's value, itself expanded; `$$` is a literal `$`. A name main.cf
//! does not set takes its built-in value; one without either is an error (import
//! cannot know what Postfix would read). Conditional forms (`${name?value}`,
//! `${name:value}`) are refused rather than guessed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::problems::Problems;
use crate::syntax::maincf::MainCf;

/// Postfix 3.7's compiled-in defaults of the parameters import reads (`postconf -d`).
pub const DEFAULTS: &[(&str, &str)] = &[
    ("relayhost", ""),
    ("smtp_sasl_auth_enable", "no"),
    ("smtp_sender_dependent_authentication", "no"),
    ("smtp_sasl_password_maps", ""),
    ("sender_dependent_relayhost_maps", ""),
    ("smtp_tls_policy_maps", ""),
    ("smtp_tls_per_site", ""),
    ("smtp_tls_security_level", ""),
    ("smtp_use_tls", "no"),
    ("smtp_enforce_tls", "no"),
    ("smtp_tls_enforce_peername", "yes"),
    ("recipient_delimiter", ""),
    ("empty_address_relayhost_maps_lookup_key", "<>"),
    ("transport_maps", ""),
    ("sender_dependent_default_transport_maps", ""),
    ("default_transport", "smtp"),
    ("relay_transport", "relay"),
];

/// A parameter's value as Postfix reads it, and the line that sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// Expanded.
    pub text: String,
    /// 1-based line of its last definition; `None`: not set in main.cf.
    pub line: Option<usize>,
}

/// main.cf's parameters, ready to be read the way Postfix reads them.
pub struct Params {
    pub path: PathBuf,
    /// Each name's last definition: its raw value and line.
    defs: HashMap<String, (String, usize)>,
    builtins: HashMap<String, String>,
}

/// Deepest chain of `$name` references followed (Postfix's own limit is 100).
const MAX_DEPTH: usize = 100;

impl Params {
    /// main.cf at `path`, parsed; `builtins` are the values of names it does not set.
    /// A line Postfix would refuse is an error naming it.
    pub fn new(path: &Path, doc: &MainCf, builtins: &[(&str, String)]) -> Result<Params, Problems> {
        let mut problems = Problems::new(path);
        for e in doc.errors() {
            problems.at(e.line, e.message);
        }
        problems.into_result()?;
        let defs = doc
            .definitions()
            .into_iter()
            .map(|d| (d.name, (d.value, d.line)))
            .collect();
        let builtins = DEFAULTS
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .chain(builtins.iter().map(|(n, v)| (n.to_string(), v.clone())))
            .collect();
        Ok(Params {
            path: path.to_path_buf(),
            defs,
            builtins,
        })
    }

    /// The value of `name`, expanded. The error names main.cf and the line.
    pub fn get(&self, name: &str) -> Result<Value, Problems> {
        let line = self.defs.get(name).map(|(_, l)| *l);
        let raw = self.raw(name).ok_or_else(|| {
            Problems::one(&self.path, None, format!("{name}: no value and no default"))
        })?;
        let text = self
            .expand(raw, 0)
            .map_err(|e| Problems::one(&self.path, line, format!("{name}: {e}")))?;
        Ok(Value { text, line })
    }

    /// "main.cf, line N" (or just main.cf when the parameter is not set there).
    pub fn place(&self, value: &Value) -> String {
        match value.line {
            Some(l) => format!("{}, line {l}", self.path.display()),
            None => format!("{} (default)", self.path.display()),
        }
    }

    fn raw(&self, name: &str) -> Option<&str> {
        self.defs
            .get(name)
            .map(|(v, _)| v.as_str())
            .or_else(|| self.builtins.get(name).map(String::as_str))
    }

    fn expand(&self, text: &str, depth: usize) -> Result<String, String> {
        if depth > MAX_DEPTH {
            return Err("parameter references nested too deeply (a loop?)".into());
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(r) = after.strip_prefix('$') {
                out.push('$');
                rest = r;
                continue;
            }
            let (name, r) = reference(after)?;
            if name.is_empty() {
                out.push('$');
                rest = after;
                continue;
            }
            let value = self.raw(name).ok_or_else(|| {
                format!("${name} is not set in main.cf (import expands only what main.cf sets, config_directory, and the parameters it reads)")
            })?;
            out.push_str(&self.expand(value, depth + 1)?);
            rest = r;
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// The name referenced at the start of `s` (just after a `$`) and the text after the
/// reference; an empty name when no name follows (the `$` is then literal).
fn reference(s: &str) -> Result<(&str, &str), String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let close = match s.chars().next() {
        Some('{') => '}',
        Some('(') => ')',
        _ => {
            let end = s.find(|c: char| !is_name(c)).unwrap_or(s.len());
            return Ok((&s[..end], &s[end..]));
        }
    };
    let end = s
        .find(close)
        .ok_or_else(|| format!("'{}' without '{close}'", &s[..1]))?;
    let name = &s[1..end];
    if name.is_empty() || !name.chars().all(is_name) {
        return Err(format!(
            "cannot expand \"${}\": import expands only $name, ${{name}} and $(name)",
            &s[..=end]
        ));
    }
    Ok((name, &s[end + 1..]))
}

/// Splits a list the way Postfix splits `*_maps` values: on commas and whitespace,
/// except inside `{ }` (as in `inline:{ a=b, c=d }`).
pub fn split_list(value: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut token = String::new();
    let mut depth = 0usize;
    for c in value.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return Err("'}' without '{'".into()),
            '}' => depth -= 1,
            ',' | ' ' | '\t' | '\r' | '\n' if depth == 0 => {
                if !token.is_empty() {
                    out.push(std::mem::take(&mut token));
                }
                continue;
            }
            _ => {}
        }
        token.push(c);
    }
    if depth > 0 {
        return Err("'{' without '}'".into());
    }
    if !token.is_empty() {
        out.push(token);
    }
    Ok(out)
}

/// Whether a main.cf boolean reads as true (Postfix: `yes`, case-insensitive).
pub fn is_yes(value: &str) -> bool {
    value.eq_ignore_ascii_case("yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(text: &str) -> Params {
        let doc = MainCf::parse(text.as_bytes());
        Params::new(
            Path::new("/etc/postfix/main.cf"),
            &doc,
            &[("config_directory", "/etc/postfix".to_string())],
        )
        .unwrap()
    }

    #[test]
    fn expands_references_as_postfix_does() {
        let p = params(
            "maps = hash:$config_directory/a,\n  hash:${config_directory}/b\n\
             smtp_sasl_password_maps = $maps $(extra)\nextra = texthash:/x/$$literal\n\
             relayhost = [smtp.example.com]:587\nrelayhost = [last.example]:587\n",
        );
        let v = p.get("smtp_sasl_password_maps").unwrap();
        assert_eq!(
            v.text,
            "hash:/etc/postfix/a,  hash:/etc/postfix/b texthash:/x/$literal"
        );
        assert_eq!(v.line, Some(3));
        assert_eq!(
            split_list(&v.text).unwrap(),
            [
                "hash:/etc/postfix/a",
                "hash:/etc/postfix/b",
                "texthash:/x/$literal"
            ]
        );
        assert_eq!(p.get("relayhost").unwrap().text, "[last.example]:587");
        let d = p.get("smtp_tls_security_level").unwrap();
        assert_eq!((d.text.as_str(), d.line), ("", None));
        assert_eq!(
            p.get("empty_address_relayhost_maps_lookup_key")
                .unwrap()
                .text,
            "<>"
        );
    }

    #[test]
    fn refuses_what_it_cannot_know() {
        let p = params(
            "smtp_sasl_password_maps = hash:$nosuch/x\nsmtp_tls_policy_maps = ${a?b}\n\
             relayhost = ${open\nloop = $loop\nsender_dependent_relayhost_maps = $loop\n",
        );
        let err = |name: &str| p.get(name).unwrap_err().to_string();
        assert!(
            err("smtp_sasl_password_maps").contains(
                "main.cf, line 1: smtp_sasl_password_maps: $nosuch is not set in main.cf"
            )
        );
        assert!(err("smtp_tls_policy_maps").contains("cannot expand \"${a?b}\""));
        assert!(err("relayhost").contains("'{' without '}'"));
        assert!(err("sender_dependent_relayhost_maps").contains("nested too deeply"));
        let bad = Params::new(
            Path::new("main.cf"),
            &MainCf::parse(b"relayhost = x\njustaword\n"),
            &[],
        );
        assert!(
            bad.err()
                .unwrap()
                .to_string()
                .contains("main.cf, line 2: missing '='")
        );
    }

    #[test]
    fn splits_lists_with_braces() {
        assert_eq!(
            split_list(" hash:/a,hash:/b\t, inline:{ @x=u:p, @y=v:q } ,,regexp:/r ").unwrap(),
            [
                "hash:/a",
                "hash:/b",
                "inline:{ @x=u:p, @y=v:q }",
                "regexp:/r"
            ]
        );
        assert!(split_list("").unwrap().is_empty());
        assert_eq!(split_list("inline:{ {a} }").unwrap(), ["inline:{ {a} }"]);
        assert!(split_list("inline:{ a").is_err());
        assert!(split_list("a }").is_err());
        assert!(is_yes("YES") && !is_yes("no") && !is_yes(""));
    }
}
