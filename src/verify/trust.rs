//! The CAs verify trusts for `secure` and `verify`: exactly those Postfix's SMTP client
//! verifies with, so a check passes only if Postfix would accept the certificate. That
//! is `smtp_tls_CAfile` and `smtp_tls_CApath` as Postfix reads them (`postconf -xh`,
//! through `postfix`), or, when both are empty, the system bundle postrelay's plan writes
//! to `smtp_tls_CAfile` ([`managed::ca_source`], the one rule both follow). Postfix does
//! not add OpenSSL's default CAs (`tls_append_default_CA = no`), and neither does this.
//!
//! The files are read with `fs`'s hardened reader under root's trust rule: a CA file
//! another user could change would let that user choose whom verify sends passwords
//! to. Every certificate file in a CApath directory is loaded (OpenSSL looks them up by
//! hash name; loading them all trusts the same set). A CA file, or a whole trust store,
//! without a single certificate is an error: Postfix could verify nothing with it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::fs::{self, Links};
use crate::managed::{self, CA_BUNDLES, CA_FILE, CA_PATH, CaSource};
use crate::postfix;

/// Largest CA file read (Debian's whole bundle is about 220 KiB).
pub const MAX_CA_FILE: u64 = 10 * 1024 * 1024;
/// Most entries read from a CApath directory (Debian's /etc/ssl/certs has about 300).
pub const MAX_CA_PATH_ENTRIES: usize = 10_000;

/// The loaded trust store and where it came from.
#[derive(Debug, Clone)]
pub struct TrustStore {
    pub roots: Arc<RootCertStore>,
    /// [`CaSource::Configured`] or [`CaSource::SystemBundle`], never `Missing`.
    pub source: CaSource,
}

/// The trust store of the Postfix instance in `config_dir`.
pub fn load(config_dir: &Path) -> Result<TrustStore> {
    let values = postfix::values(config_dir, &[CA_FILE, CA_PATH])?;
    let bundle = managed::system_ca_bundle();
    let source = managed::ca_source(Some(&values[0]), Some(&values[1]), bundle.as_deref());
    let mut roots = RootCertStore::empty();
    match &source {
        CaSource::Missing => bail!(
            "{}: Postfix has no CA to verify relays' certificates with (tls \"secure\" or \"verify\"): {CA_FILE} and {CA_PATH} are empty and none of {} exists; set {CA_FILE} or {CA_PATH} in main.cf, or give those relays tls = \"encrypt\"",
            config_dir.join(managed::MAIN_CF).display(),
            CA_BUNDLES.join(", ")
        ),
        CaSource::Configured { file, path } => {
            if let Some(file) = file {
                add_file(&mut roots, Path::new(file))
                    .with_context(|| format!("{CA_FILE} = {file}"))?;
            }
            if let Some(dir) = path {
                add_dir(&mut roots, Path::new(dir))
                    .with_context(|| format!("{CA_PATH} = {dir}"))?;
            }
        }
        CaSource::SystemBundle(bundle) => add_file(&mut roots, bundle).with_context(|| {
            format!("the system CA bundle (main.cf sets neither {CA_FILE} nor {CA_PATH})")
        })?,
    }
    if roots.is_empty() {
        bail!(
            "{}: no CA certificate in {}: Postfix could verify no relay's certificate",
            config_dir.join(managed::MAIN_CF).display(),
            describe(&source)
        );
    }
    tracing::info!(
        "trusting {} CA certificate(s) from {}",
        roots.len(),
        describe(&source)
    );
    Ok(TrustStore {
        roots: Arc::new(roots),
        source,
    })
}

/// `smtp_tls_CAfile = /x` and/or `smtp_tls_CApath = /y`, or the bundle's path: for logs
/// and errors (report words it for the verify lines).
fn describe(source: &CaSource) -> String {
    match source {
        CaSource::Configured { file, path } => [(CA_FILE, file), (CA_PATH, path)]
            .iter()
            .filter_map(|(name, v)| v.as_ref().map(|v| format!("{name} = {v}")))
            .collect::<Vec<_>>()
            .join(", "),
        CaSource::SystemBundle(b) => b.display().to_string(),
        CaSource::Missing => "no CA".into(),
    }
}

/// The certificates in PEM `bytes` (other PEM sections are skipped).
fn certificates(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("not a PEM file of certificates: {e}"))
}

/// Adds the certificates of a CA file; at least one must be usable.
fn add_file(roots: &mut RootCertStore, path: &Path) -> Result<()> {
    let snapshot = fs::read(path, MAX_CA_FILE, Links::Trusted)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let certs =
        certificates(snapshot.bytes.expose()).with_context(|| path.display().to_string())?;
    let (added, ignored) = roots.add_parsable_certificates(certs);
    tracing::debug!(
        "{}: {added} CA certificate(s), {ignored} unusable",
        path.display()
    );
    if added == 0 {
        bail!("{}: no usable CA certificate in it", path.display());
    }
    Ok(())
}

/// Adds the certificates of every file in a CApath directory. Entries that are no
/// regular file (subdirectories, dangling links) and files holding no certificate are
/// skipped, as OpenSSL skips them; a file others could change is an error.
fn add_dir(roots: &mut RootCertStore, dir: &Path) -> Result<()> {
    let resolved = fs::trusted_dir(dir)?;
    let mut names: Vec<PathBuf> = std::fs::read_dir(&resolved)
        .map_err(|e| fs::explain(e, dir, "list"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| fs::explain(e, dir, "list"))?;
    if names.len() > MAX_CA_PATH_ENTRIES {
        bail!("{}: more than {MAX_CA_PATH_ENTRIES} entries", dir.display());
    }
    names.sort();
    let (mut files, mut added) = (0, 0);
    for path in names {
        let snapshot = match fs::read(&path, MAX_CA_FILE, Links::Trusted) {
            Ok(s) => s,
            Err(e) if e.is_not_found() || matches!(e, fs::ReadError::NotRegular(_)) => continue,
            Err(e) => bail!("{}: {e}", path.display()),
        };
        match certificates(snapshot.bytes.expose()) {
            Ok(certs) if !certs.is_empty() => {
                files += 1;
                added += roots.add_parsable_certificates(certs).0;
            }
            Ok(_) => tracing::debug!("{}: no certificate in it", path.display()),
            Err(e) => tracing::debug!("{}: skipped: {e}", path.display()),
        }
    }
    tracing::debug!(
        "{}: {added} CA certificate(s) from {files} file(s)",
        dir.display()
    );
    Ok(())
}
