//! TLS for verify's logins, level by level as Postfix's SMTP client does it (TLS_README):
//! `secure` and `verify` check the server's certificate chain against Postfix's trust
//! store ([`super::trust`]) and its name against the relay; `encrypt` and `may` take any
//! chain, as Postfix does at those levels, but still check that the server holds the
//! certificate's key (the handshake signature is verified with the crypto provider, so
//! the session is encrypted to whoever presented that certificate); `none` never
//! starts TLS.
//!
//! Like Postfix (`smtp_tls_servername` empty by default), no SNI is sent: the server
//! shows the certificate Postfix would get. A refused certificate is a typed
//! [`CertProblem`]; the handshake stops there, so no AUTH is ever sent after it.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};

use super::trust::TrustStore;
use crate::desired::Tls;

/// Why a server certificate was not accepted at `secure` or `verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertProblem {
    /// No CA of the trust store issued the chain (a self-signed certificate, too).
    UnknownIssuer,
    /// Valid, but for other names (`presented`, when known).
    NameMismatch {
        presented: Vec<String>,
    },
    Expired,
    NotYetValid,
    Revoked,
    /// Anything else rustls refuses, in its words.
    Other(String),
}

impl CertProblem {
    /// The certificate problem in a TLS error; `None` for any other TLS failure.
    pub fn of(e: &rustls::Error) -> Option<CertProblem> {
        let rustls::Error::InvalidCertificate(c) = e else {
            return None;
        };
        Some(match c {
            CertificateError::UnknownIssuer => CertProblem::UnknownIssuer,
            CertificateError::NotValidForName => CertProblem::NameMismatch {
                presented: Vec::new(),
            },
            CertificateError::NotValidForNameContext { presented, .. } => {
                CertProblem::NameMismatch {
                    presented: presented.iter().map(|n| shown_name(n)).collect(),
                }
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                CertProblem::Expired
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                CertProblem::NotYetValid
            }
            CertificateError::Revoked => CertProblem::Revoked,
            _ => CertProblem::Other(e.to_string()),
        })
    }
}

/// A name webpki found in a certificate (`DnsName("mx.example")`) as the name itself,
/// control characters replaced: it comes from the server.
fn shown_name(name: &str) -> String {
    let inner = name
        .strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"))
        .unwrap_or(name);
    inner
        .chars()
        .take(256)
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}

/// The rustls client configurations of one run: one that verifies against the trust
/// store (when one was loaded) and one that takes any chain.
#[derive(Debug, Clone)]
pub struct Clients {
    verifying: Option<Arc<ClientConfig>>,
    unverified: Arc<ClientConfig>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config(
    provider: Arc<CryptoProvider>,
    verifier: Arc<dyn ServerCertVerifier>,
) -> Result<Arc<ClientConfig>, String> {
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.enable_sni = false;
    Ok(Arc::new(config))
}

impl Clients {
    pub fn new(trust: Option<&TrustStore>) -> Result<Clients, String> {
        let provider = provider();
        let verifying = match trust {
            Some(t) => {
                let verifier =
                    WebPkiServerVerifier::builder_with_provider(t.roots.clone(), provider.clone())
                        .build()
                        .map_err(|e| e.to_string())?;
                Some(config(provider.clone(), verifier)?)
            }
            None => None,
        };
        let any = Arc::new(AnyChain {
            algorithms: provider.signature_verification_algorithms,
        });
        Ok(Clients {
            verifying,
            unverified: config(provider, any)?,
        })
    }

    /// The configuration for a level that starts TLS; `None` for `secure` and `verify`
    /// without a trust store.
    pub fn for_level(&self, level: Tls) -> Option<Arc<ClientConfig>> {
        if level.verifies_certificate() {
            self.verifying.clone()
        } else {
            Some(self.unverified.clone())
        }
    }
}

/// Accepts any certificate chain (Postfix's `encrypt` and `may` do not check it), but
/// verifies the handshake signatures with the certificate's key, as any TLS client must.
#[derive(Debug)]
struct AnyChain {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyChain {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_errors_are_told_apart() {
        let cert = |c: CertificateError| CertProblem::of(&rustls::Error::InvalidCertificate(c));
        assert_eq!(
            cert(CertificateError::UnknownIssuer),
            Some(CertProblem::UnknownIssuer)
        );
        assert_eq!(cert(CertificateError::Expired), Some(CertProblem::Expired));
        assert_eq!(
            cert(CertificateError::NotValidForNameContext {
                expected: ServerName::try_from("localhost").unwrap(),
                presented: vec!["DnsName(\"other.example\")".into()],
            }),
            Some(CertProblem::NameMismatch {
                presented: vec!["other.example".into()]
            })
        );
        assert!(matches!(
            cert(CertificateError::BadSignature),
            Some(CertProblem::Other(_))
        ));
        assert_eq!(CertProblem::of(&rustls::Error::HandshakeNotComplete), None);
    }

    #[test]
    fn unverified_levels_still_have_a_configuration_without_a_trust_store() {
        let clients = Clients::new(None).unwrap();
        assert!(clients.for_level(Tls::Encrypt).is_some());
        assert!(clients.for_level(Tls::May).is_some());
        assert!(clients.for_level(Tls::Secure).is_none());
        assert!(!clients.for_level(Tls::Encrypt).unwrap().enable_sni);
    }
}
