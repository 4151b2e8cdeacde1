//! Certificates for the fake relays, all made at test time with rcgen: a test
//! certificate authority ([`TestCa`]) that issues server certificates ([`Leaf`]) for
//! given DNS names and writes its own certificate as PEM for a Postfix instance's
//! `smtp_tls_CAfile`, and self-signed certificates ([`Leaf::self_signed`]) that no CA
//! vouches for. The fake relay (`relay.rs`) presents a [`Leaf`] after STARTTLS.
//!
//! Every CA and every key is fresh for each call, so no test trusts another test's
//! certificates. Keys are ECDSA P-256 (rcgen's default), which Debian's OpenSSL
//! accepts at its default security level; certificates are valid from 1975 to 4096
//! (rcgen's defaults), so a clock far off does not fail a test.

use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A server certificate (with the chain a server sends: the leaf only, as the test CA
/// issues directly) and its private key.
#[derive(Clone)]
pub struct Leaf {
    /// What it is, for failure messages: its subject and names, and who issued it.
    what: String,
    chain: Vec<CertificateDer<'static>>,
    /// PKCS#8 DER (kept as bytes: rustls's key type is not `Clone`).
    key: Vec<u8>,
}

impl fmt::Debug for Leaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

impl Leaf {
    /// The fake relay's default: a self-signed certificate for `localhost` and
    /// `127.0.0.1` (rcgen's simple self-signed certificate, subject `CN=rcgen self
    /// signed cert`).
    pub fn localhost_self_signed() -> Leaf {
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let certified =
            rcgen::generate_simple_self_signed(names).expect("rcgen: self-signed certificate");
        Leaf {
            what: "self-signed for [\"localhost\", \"127.0.0.1\"]".to_string(),
            chain: vec![certified.cert.der().clone()],
            key: certified.signing_key.serialize_der(),
        }
    }

    /// A self-signed certificate with subject `CN=cn` and the subject alternative names
    /// `names` (DNS names, or IP addresses when they parse as one).
    pub fn self_signed(cn: &str, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().expect("rcgen: key pair");
        let params = leaf_params(cn, names);
        let cert = params
            .self_signed(&key)
            .expect("rcgen: self-signed certificate");
        Leaf {
            what: format!("self-signed CN={cn} for {names:?}"),
            chain: vec![cert.der().clone()],
            key: key.serialize_der(),
        }
    }

    /// The chain to send, leaf first.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.chain.clone()
    }

    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()))
    }

    /// A rustls server configuration presenting this certificate.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("rustls: protocol versions")
            .with_no_client_auth()
            .with_single_cert(self.chain(), self.key())
            .expect("rustls: server certificate");
        Arc::new(config)
    }
}

/// Parameters of a server certificate: subject `CN=cn`, the names as subject
/// alternative names (what Postfix matches; it ignores the CN when SANs are present),
/// for TLS server authentication.
fn leaf_params(cn: &str, names: &[&str]) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).expect("rcgen: subject alternative names");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params
}

/// A certificate authority that exists only for one test.
pub struct TestCa {
    cn: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    /// A new self-signed root, subject `CN=cn`, allowed to sign certificates.
    pub fn new(cn: &str) -> TestCa {
        let key = KeyPair::generate().expect("rcgen: CA key pair");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, key).expect("rcgen: CA certificate");
        TestCa {
            cn: cn.to_string(),
            issuer,
        }
    }

    /// A server certificate signed by this CA: subject `CN=` the first name, every name
    /// a subject alternative name.
    pub fn issue(&self, names: &[&str]) -> Leaf {
        self.sign(names, |_| {}, "")
    }

    /// The same, but valid only in the year 2000: expired.
    pub fn issue_expired(&self, names: &[&str]) -> Leaf {
        let expired = |params: &mut CertificateParams| {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        };
        self.sign(names, expired, ", expired in 2001")
    }

    fn sign(
        &self,
        names: &[&str],
        adjust: impl FnOnce(&mut CertificateParams),
        note: &str,
    ) -> Leaf {
        let cn = names.first().copied().unwrap_or("no name");
        let key = KeyPair::generate().expect("rcgen: key pair");
        let mut params = leaf_params(cn, names);
        adjust(&mut params);
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("rcgen: certificate signed by the test CA");
        Leaf {
            what: format!("CN={cn} for {names:?}, issued by CN={}{note}", self.cn),
            chain: vec![cert.der().clone()],
            key: key.serialize_der(),
        }
    }

    /// The CA's certificate, DER.
    pub fn certificate(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// The CA's certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA's certificate as PEM to `path`, mode 0644 (it is public; Postfix's
    /// smtp processes read it).
    pub fn write_pem(&self, path: &Path) {
        fs::write(path, self.pem()).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
    }
}
