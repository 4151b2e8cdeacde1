//! What postrelay owns in a Postfix config directory, and nothing else: the lookup
//! tables (their file names, the main.cf parameters that name them, their modes), the
//! fixed main.cf parameters, the master.cf service for relays on port 465, and the
//! reload marker. Contents are decided elsewhere (`routing` for the table entries,
//! `plan` for the parameter values and the service's lines).

use std::path::{Path, PathBuf};

use crate::syntax::maincf::{MainCf, list};

/// One managed lookup table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MapKind {
    SaslPasswd,
    SenderRelay,
    TlsPolicy,
    /// The transport (and next hop) of senders whose relay is on port 465: postrelay's
    /// [`SMTPS_SERVICE`]. Managed only on a host that needs it ([`MapKind::CORE`] are
    /// always managed).
    SenderTransport,
    /// The regexp tables of wildcard senders (`*.shop.example`), listed after the hash
    /// map of the same parameter: [`MapKind::SaslPasswd`]'s, [`MapKind::SenderRelay`]'s
    /// and [`MapKind::SenderTransport`]'s. Managed only on a host that needs them.
    SaslPasswdWildcards,
    SenderRelayWildcards,
    SenderTransportWildcards,
}

impl MapKind {
    /// Every map postrelay may own.
    pub const ALL: [MapKind; 7] = [
        MapKind::SaslPasswd,
        MapKind::SenderRelay,
        MapKind::TlsPolicy,
        MapKind::SenderTransport,
        MapKind::SaslPasswdWildcards,
        MapKind::SenderRelayWildcards,
        MapKind::SenderTransportWildcards,
    ];

    /// The maps postrelay manages on every host.
    pub const CORE: [MapKind; 3] = [
        MapKind::SaslPasswd,
        MapKind::SenderRelay,
        MapKind::TlsPolicy,
    ];

    /// File name in the config directory (as in the hand procedure).
    pub fn file_name(self) -> &'static str {
        match self {
            MapKind::SaslPasswd => "sasl_passwd",
            MapKind::SenderRelay => "sender_relay",
            MapKind::TlsPolicy => "tls_policy",
            MapKind::SenderTransport => "sender_transport",
            MapKind::SaslPasswdWildcards => "sasl_passwd_wildcards",
            MapKind::SenderRelayWildcards => "sender_relay_wildcards",
            MapKind::SenderTransportWildcards => "sender_transport_wildcards",
        }
    }

    /// The hash map whose parameter this map is listed in (itself for the hash maps).
    pub fn base(self) -> MapKind {
        match self {
            MapKind::SaslPasswdWildcards => MapKind::SaslPasswd,
            MapKind::SenderRelayWildcards => MapKind::SenderRelay,
            MapKind::SenderTransportWildcards => MapKind::SenderTransport,
            other => other,
        }
    }

    /// The regexp table of wildcard senders beside this hash map, if it has one.
    pub fn wildcards(self) -> Option<MapKind> {
        match self {
            MapKind::SaslPasswd => Some(MapKind::SaslPasswdWildcards),
            MapKind::SenderRelay => Some(MapKind::SenderRelayWildcards),
            MapKind::SenderTransport => Some(MapKind::SenderTransportWildcards),
            _ => None,
        }
    }

    /// Whether this is a regexp table (no postmap; read once per process, so a change
    /// needs a reload, as every change does).
    pub fn is_regexp(self) -> bool {
        self.base() != self
    }

    /// The map type main.cf names it with: `regexp` for the wildcard tables, else the
    /// instance's.
    pub fn map_type(self, instance: &str) -> &str {
        match self.is_regexp() {
            true => "regexp",
            false => instance,
        }
    }

    /// The main.cf parameter that points at this map.
    pub fn parameter(self) -> &'static str {
        match self.base() {
            MapKind::SaslPasswd => "smtp_sasl_password_maps",
            MapKind::SenderRelay => "sender_dependent_relayhost_maps",
            MapKind::TlsPolicy => "smtp_tls_policy_maps",
            MapKind::SenderTransport => SENDER_TRANSPORT_MAPS,
            _ => unreachable!("a base is a hash map"),
        }
    }

    /// Whether the map holds passwords: root-only, redacted in diffs.
    pub fn is_secret(self) -> bool {
        self.base() == MapKind::SaslPasswd
    }

    /// Mode of the source and compiled files.
    pub fn mode(self) -> u32 {
        if self.is_secret() { 0o600 } else { 0o644 }
    }

    /// Position in [`MapKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// How main.cf names postrelay's map: `TYPE:DIR/FILE`.
    pub fn spec(self, dir: &Path, map_type: &str) -> String {
        let map_type = self.map_type(map_type);
        format!("{map_type}:{}", dir.join(self.file_name()).display())
    }

    /// Whether main.cf (`doc`) names postrelay's map in its parameter.
    pub fn is_listed(self, doc: &MainCf, dir: &Path) -> bool {
        let value = doc.get(self.parameter()).unwrap_or_default();
        list(&value).iter().any(|e| self.is_own(e, dir))
    }

    /// Whether an element of the parameter's list is postrelay's map (its path, with
    /// `$config_directory` expanded, whatever the type): it is replaced, not kept.
    pub fn is_own(self, element: &str, dir: &Path) -> bool {
        let element = expand_config_directory(element, dir);
        element
            .split_once(':')
            .is_some_and(|(_, path)| Path::new(path) == dir.join(self.file_name()))
    }
}

/// The first character of `path` that main.cf cannot hold in a map name: whitespace and
/// `,` split a list, `$`, `{` and `}` expand, and a newline would start a parameter of
/// its own (`mynetworks = 0.0.0.0/0`).
pub fn unsafe_char(path: &str) -> Option<char> {
    path.chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, ',' | '$' | '{' | '}'))
}

/// `element` with `$config_directory` / `${config_directory}` replaced by `dir`, the one
/// parameter map specs commonly use (`hash:$config_directory/sasl_passwd`).
pub fn expand_config_directory(element: &str, dir: &Path) -> String {
    let dir = dir.display().to_string();
    element
        .replace("${config_directory}", &dir)
        .replace("$(config_directory)", &dir)
        .replace("$config_directory", &dir)
}

/// main.cf parameters whose value never depends on the desired state.
pub const FIXED_PARAMETERS: [(&str, &str); 4] = [
    ("smtp_sasl_auth_enable", "yes"),
    ("smtp_sasl_security_options", "noanonymous"),
    ("smtp_sasl_tls_security_options", "noanonymous"),
    ("smtp_sender_dependent_authentication", "yes"),
];

/// The CA parameters Postfix verifies certificates with (`secure`, `verify`). postrelay
/// fills [`CA_FILE`] only when both are empty, and never changes a configured CA.
pub const CA_FILE: &str = "smtp_tls_CAfile";
pub const CA_PATH: &str = "smtp_tls_CApath";

/// System CA bundles, in the order looked for: Debian/Ubuntu, RHEL/Fedora, Alpine/BSD.
pub const CA_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The first of [`CA_BUNDLES`] that exists on this host.
pub fn system_ca_bundle() -> Option<PathBuf> {
    CA_BUNDLES.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// Where Postfix finds the CAs it verifies relays' certificates with (`secure`,
/// `verify`), under postrelay's rule: what main.cf sets, or, when [`CA_FILE`] and
/// [`CA_PATH`] are both empty, the system bundle, which plan then writes to
/// [`CA_FILE`]. Plan (what to write) and verify (what to trust) both ask this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    /// main.cf's own: either value may be empty (`None`), not both.
    Configured {
        file: Option<String>,
        path: Option<String>,
    },
    /// Both empty: the system bundle postrelay sets.
    SystemBundle(PathBuf),
    /// Both empty and no system bundle: Postfix could verify no certificate.
    Missing,
}

/// The [`CaSource`] for main.cf's values of [`CA_FILE`] and [`CA_PATH`] (unset and
/// blank alike count as empty) and the host's system bundle ([`system_ca_bundle`]).
pub fn ca_source(ca_file: Option<&str>, ca_path: Option<&str>, bundle: Option<&Path>) -> CaSource {
    let set = |v: Option<&str>| {
        v.map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    match (set(ca_file), set(ca_path)) {
        (None, None) => match bundle {
            Some(b) => CaSource::SystemBundle(b.to_path_buf()),
            None => CaSource::Missing,
        },
        (file, path) => CaSource::Configured { file, path },
    }
}

/// The main.cf parameter set from `[relayhost]`.
pub const RELAYHOST: &str = "relayhost";

/// The parameter that names [`MapKind::SenderTransport`] (and, while apply switches
/// routes, the hold: see `hold`).
pub const SENDER_TRANSPORT_MAPS: &str = "sender_dependent_default_transport_maps";

/// The transport of mail with no sender-dependent one: bounces and unlisted senders.
/// postrelay sets it to [`SMTPS_SERVICE`] for a relayhost on port 465, only from
/// Postfix's default ([`DEFAULT_TRANSPORT_DEFAULT`]), and sets it back.
pub const DEFAULT_TRANSPORT: &str = "default_transport";
pub const DEFAULT_TRANSPORT_DEFAULT: &str = "smtp";

/// master.cf's file name in the config directory.
pub const MASTER_CF: &str = "master.cf";

/// postrelay's master.cf service for relays on port 465: Postfix's SMTP client with TLS
/// from the first byte. Each relay's own level (encrypt, verify, secure) stays in
/// tls_policy; the service's level is the floor wrapper mode needs.
pub const SMTPS_SERVICE: &str = "postrelay-smtps";

/// The lines of [`SMTPS_SERVICE`] in master.cf.
pub const SMTPS_ENTRY: &str = "postrelay-smtps unix  -       -       n       -       -       smtp\n  -o smtp_tls_wrappermode=yes\n  -o smtp_tls_security_level=encrypt";

/// main.cf's file name in the config directory.
pub const MAIN_CF: &str = "main.cf";

/// Left in the config directory while a running Postfix has not yet re-read a changed
/// configuration; removed after the reload. If apply is killed in between, the next run
/// finds it and reloads even though the files are already right.
pub const RELOAD_PENDING: &str = ".postrelay-reload-pending";

/// The lock file in the config directory: root's, 0600, held during apply.
pub const LOCK: &str = ".postrelay.lock";

/// Names of every file postrelay replaces in the config directory (for cleaning up the
/// temporaries of a crashed run).
pub fn replaced_names() -> Vec<&'static str> {
    let mut names: Vec<&str> = MapKind::ALL.iter().map(|k| k.file_name()).collect();
    names.push(MAIN_CF);
    names.push(MASTER_CF);
    names.push(crate::hold::FILE);
    names.push(crate::record::FILE);
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_maps_whatever_their_type_or_spelling() {
        let dir = Path::new("/etc/postfix");
        let kind = MapKind::SaslPasswd;
        assert_eq!(kind.spec(dir, "hash"), "hash:/etc/postfix/sasl_passwd");
        for own in [
            "hash:/etc/postfix/sasl_passwd",
            "btree:/etc/postfix/sasl_passwd",
            "hash:$config_directory/sasl_passwd",
            "texthash:${config_directory}/sasl_passwd",
        ] {
            assert!(kind.is_own(own, dir), "{own}");
        }
        for kept in [
            "hash:/etc/postfix/sasl/sasl_passwd",
            "proxy:hash:/etc/postfix/sasl_passwd",
            "hash:/etc/postfix/sender_relay",
            "inline:{ a=b }",
            "$other_maps",
        ] {
            assert!(!kind.is_own(kept, dir), "{kept}");
        }
    }
}
