//! The lookup tables main.cf names for sender-dependent relaying, read the way Postfix
//! reads them, and looked up the way Postfix looks them up.
//!
//! A table of a type postrelay supports (hash, btree, lmdb, cdb, texthash; `proxy:`
//! around one of them) is read from its source with the project's table parser (keys
//! lowercased, the first of duplicate keys wins, as postmap builds it), or with
//! `postmap -s` when only the compiled map exists. When both exist and hold different
//! entries (postmap was not run after an edit), Postfix uses the compiled map, so
//! import does too, and says so. Any other table (regexp, pcre, inline, static, …)
//! cannot become postrelay entries: it is reported, and never quoted when it is a
//! password table (`inline:{…}` and `static:` hold passwords in main.cf itself).
//!
//! [`Tables::find`] is Postfix's `maps_find` over a list with several key forms: each
//! key is tried in every table of the list before the next key (`src/global/maps.c`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use super::Finding;
use super::params::{self, Value};
use crate::desired::MAP_TYPES;
use crate::fs::{self, Links};
use crate::managed::MapKind;
use crate::postfix;
use crate::secret::Secret;
use crate::syntax::table::Table;

/// One entry as Postfix holds it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Lowercased, as postmap stores it.
    pub key: String,
    pub value: Secret<String>,
    /// 1-based line in the source; `None` when read from the compiled map.
    pub line: Option<usize>,
}

/// One table of a map list.
#[derive(Debug, Clone)]
pub struct Map {
    pub path: PathBuf,
    pub map_type: String,
    entries: Vec<Entry>,
    index: HashMap<String, usize>,
}

impl Map {
    /// A table from `(key, value, line)` in file order (no line: read from the
    /// compiled map): keys lowercased, the first of duplicates kept, as postmap keeps it.
    pub fn new(
        path: PathBuf,
        map_type: &str,
        pairs: Vec<(String, Secret<String>, Option<usize>)>,
    ) -> Map {
        let mut entries = Vec::with_capacity(pairs.len());
        let mut index = HashMap::with_capacity(pairs.len());
        for (key, value, line) in pairs {
            let key = key.to_ascii_lowercase();
            if !index.contains_key(&key) {
                index.insert(key.clone(), entries.len());
                entries.push(Entry { key, value, line });
            }
        }
        Map {
            path,
            map_type: map_type.to_string(),
            entries,
            index,
        }
    }
}

/// An entry of one of the three lists: which list, which table, which entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryId {
    pub kind: MapKind,
    pub map: usize,
    pub entry: usize,
}

/// The tables of the three parameters, in [`MapKind::CORE`] order, each list in
/// main.cf's order.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    lists: [Vec<Map>; 3],
}

impl Tables {
    pub fn new(lists: [Vec<Map>; 3]) -> Tables {
        Tables { lists }
    }

    pub fn maps(&self, kind: MapKind) -> &[Map] {
        &self.lists[kind.index()]
    }

    /// The first of `keys` found, each tried in every table of the list before the
    /// next (Postfix's `maps_find` for each key form in turn); keys are lowercased.
    pub fn find(&self, kind: MapKind, keys: &[String]) -> Option<EntryId> {
        keys.iter().find_map(|key| {
            let key = key.to_ascii_lowercase();
            self.maps(kind).iter().enumerate().find_map(|(map, m)| {
                let entry = *m.index.get(&key)?;
                Some(EntryId { kind, map, entry })
            })
        })
    }

    pub fn entry(&self, id: EntryId) -> &Entry {
        &self.maps(id.kind)[id.map].entries[id.entry]
    }

    /// Where an entry is: `FILE, line N`, or the compiled file.
    pub fn place(&self, id: EntryId) -> String {
        let map = &self.maps(id.kind)[id.map];
        match self.entry(id).line {
            Some(line) => format!("{}, line {line}", map.path.display()),
            None => format!("{} (compiled map)", map.path.display()),
        }
    }

    /// Every entry of every table.
    pub fn ids(&self) -> impl Iterator<Item = EntryId> + '_ {
        MapKind::CORE.into_iter().flat_map(move |kind| {
            self.maps(kind)
                .iter()
                .enumerate()
                .flat_map(move |(map, m)| {
                    (0..m.entries.len()).map(move |entry| EntryId { kind, map, entry })
                })
        })
    }
}

/// Reads every table of the list `value` of `kind`'s parameter; what cannot be read
/// as postrelay entries becomes a finding. `at` is where main.cf sets the value.
pub fn read_list(
    dir: &Path,
    kind: MapKind,
    value: &Value,
    at: &str,
    findings: &mut Vec<Finding>,
) -> Result<Vec<Map>> {
    let param = kind.parameter();
    let tokens =
        params::split_list(&value.text).map_err(|e| anyhow::anyhow!("{at}: {param}: {e}"))?;
    let mut maps = Vec::new();
    for token in tokens {
        let mut spec = token.as_str();
        while let Some(inner) = spec.strip_prefix("proxy:") {
            spec = inner;
        }
        let Some((map_type, name)) = spec.split_once(':') else {
            let shown = match kind.is_secret() {
                true => "an entry".to_string(),
                false => format!("{token:?}"),
            };
            let msg = format!("{param}: {shown} is not type:name; not read");
            findings.push(Finding::at(at, msg));
            continue;
        };
        if !MAP_TYPES.contains(&map_type) {
            findings.push(Finding::at(at, unsupported(kind, map_type, &token)));
            continue;
        }
        if !Path::new(name).is_absolute() {
            let msg = format!("{param}: {token:?}: not an absolute path; not read");
            findings.push(Finding::at(at, msg));
            continue;
        }
        maps.push(read_map(dir, map_type, Path::new(name), findings)?);
    }
    Ok(maps)
}

/// Why a table of an unsupported type is not imported, without quoting a password table.
fn unsupported(kind: MapKind, map_type: &str, token: &str) -> String {
    let param = kind.parameter();
    let what = match map_type {
        "regexp" | "pcre" => format!(
            "the {map_type}: table: postrelay writes exact @domain and address keys, not patterns"
        ),
        "inline" | "static" if kind.is_secret() => format!(
            "the {map_type}: table holds credentials in main.cf itself (not shown); postrelay keeps passwords in its own files"
        ),
        _ => format!(
            "the {map_type}: table: import reads hash, btree, lmdb, cdb and texthash tables only"
        ),
    };
    let shown = if kind.is_secret() {
        String::new()
    } else {
        format!(" ({token})")
    };
    format!(
        "{param}: {what}{shown}; not imported: apply keeps it listed after postrelay's own map, so it still answers for what the imported entries do not"
    )
}

/// Reads one table: its source, or its compiled map when that is what Postfix uses.
fn read_map(dir: &Path, map_type: &str, path: &Path, findings: &mut Vec<Finding>) -> Result<Map> {
    let suffix = postfix::compiled_suffix(map_type)?;
    let compiled = suffix.map(|s| PathBuf::from(format!("{}{s}", path.display())));
    let compiled = compiled.filter(|c| c.exists());
    let source = fs::read_if_exists(path, fs::MAX_CONFIG_SIZE, Links::Trusted)?;
    let from_source = source
        .as_ref()
        .map(|s| parse_source(path, s.bytes.expose(), findings));
    let at = path.display().to_string();
    match (from_source, &compiled) {
        (None, None) => bail!("{}: no such file (and no compiled map)", path.display()),
        (Some(pairs), None) => {
            if suffix.is_some() {
                let msg = format!(
                    "no compiled map{}: Postfix cannot use this table now; imported from the source",
                    suffix.unwrap_or_default()
                );
                findings.push(Finding::at(&at, msg));
            }
            Ok(Map::new(path.to_path_buf(), map_type, pairs))
        }
        (None, Some(_)) => dump(dir, map_type, path),
        (Some(pairs), Some(c)) => {
            let from_source = Map::new(path.to_path_buf(), map_type, pairs);
            let from_compiled = dump(dir, map_type, path)?;
            if sorted(&from_source) == sorted(&from_compiled) {
                return Ok(from_source);
            }
            let msg = format!(
                "{} holds other entries than its source (postmap not run since the last edit?): imported what Postfix uses, the compiled map",
                c.display()
            );
            findings.push(Finding::at(&at, msg));
            Ok(from_compiled)
        }
    }
}

/// A table's entries as `postmap -s` dumps them: sorted `(key, value)`.
fn sorted(map: &Map) -> Secret<Vec<(String, String)>> {
    let mut pairs: Vec<(String, String)> = map
        .entries
        .iter()
        .map(|e| (e.key.clone(), e.value.expose().clone()))
        .collect();
    pairs.sort_unstable();
    Secret::new(pairs)
}

/// The compiled map's entries, as `postmap -s` dumps them.
fn dump(dir: &Path, map_type: &str, path: &Path) -> Result<Map> {
    let Some(entries) = postfix::dump(dir, map_type, path)? else {
        bail!(
            "{}: postmap cannot read the compiled map of this {map_type} table",
            path.display()
        );
    };
    let pairs = entries
        .into_iter()
        .map(|(k, v)| (k, Secret::new(v), None))
        .collect();
    Ok(Map::new(path.to_path_buf(), map_type, pairs))
}

/// A source's entries as postmap reads them; lines it would skip are skipped, and a
/// line whose text is not UTF-8 is a finding (its bytes cannot be carried over).
fn parse_source(
    path: &Path,
    bytes: &[u8],
    findings: &mut Vec<Finding>,
) -> Vec<(String, Secret<String>, Option<usize>)> {
    let mut pairs = Vec::new();
    for e in Table::parse(bytes).entries() {
        if e.value.is_empty() {
            continue;
        }
        match (String::from_utf8(e.key), String::from_utf8(e.value)) {
            (Ok(key), Ok(value)) => pairs.push((key, Secret::new(value), Some(e.line))),
            _ => findings.push(Finding::at(
                &format!("{}, line {}", path.display(), e.line),
                "not valid UTF-8; not imported".to_string(),
            )),
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(name: &str, pairs: &[(&str, &str)]) -> Map {
        let pairs = pairs
            .iter()
            .enumerate()
            .map(|(i, (k, v))| (k.to_string(), Secret::new(v.to_string()), Some(i + 1)))
            .collect();
        Map::new(PathBuf::from(name), "hash", pairs)
    }

    #[test]
    fn keys_fold_and_the_first_duplicate_wins() {
        let m = map(
            "/m",
            &[("@Example.COM", "first"), ("@example.com", "second")],
        );
        assert_eq!(m.entries.len(), 1);
        assert_eq!(m.entries[0].key, "@example.com");
        assert_eq!(m.entries[0].value.expose(), "first");
    }

    #[test]
    fn each_key_is_tried_in_every_table_before_the_next() {
        let first = map("/first", &[("@example.com", "domain")]);
        let second = map("/second", &[("wes@example.com", "address")]);
        let t = Tables::new([vec![first, second], Vec::new(), Vec::new()]);
        let keys = ["Wes@Example.com".to_string(), "@example.com".to_string()];
        let id = t.find(MapKind::SaslPasswd, &keys).unwrap();
        assert_eq!(t.entry(id).value.expose(), "address");
        assert_eq!(t.place(id), "/second, line 1");
        assert_eq!(t.find(MapKind::SaslPasswd, &["nosuch".into()]), None);
        assert_eq!(t.ids().count(), 2);
    }

    #[test]
    fn unsupported_password_tables_are_not_quoted() {
        let msg = unsupported(MapKind::SaslPasswd, "inline", "inline:{ @a=u:SECRET }");
        assert!(!msg.contains("SECRET"), "{msg}");
        assert!(msg.contains("holds credentials in main.cf itself"));
        let msg = unsupported(MapKind::SenderRelay, "regexp", "regexp:/etc/postfix/re");
        assert!(msg.contains("regexp:/etc/postfix/re") && msg.contains("not patterns"));
    }
}
