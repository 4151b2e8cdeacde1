//! Mailgun's HTTP API, the four calls postrelay makes: list the account's domains
//! (`GET /v4/domains`, pages of 1000 by `limit`/`skip`), and list, create and delete a
//! domain's SMTP logins (`/v3/domains/{domain}/credentials`). postrelay never changes
//! an existing login's password: a login it did not create may be another host's.
//!
//! HTTP Basic with user `api` and the API key, over ureq with rustls, certificates
//! checked against the system's CA bundle (Mozilla's roots where there is none). A base
//! other than `https://` is taken only for a loopback address (tests, a local proxy), so
//! the key never crosses a network in clear text.
//!
//! The key and the passwords are [`Secret`]s, and no error quotes a request: a failure
//! names the method, the path and what Mailgun answered (`{"message": …}`).

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use serde::Deserialize;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
use ureq::unversioned::multipart::Form;

use crate::managed;
use crate::secret::Secret;

/// The API of Mailgun's US region.
pub const US: &str = "https://api.mailgun.net";
/// The API of Mailgun's EU region.
pub const EU: &str = "https://api.eu.mailgun.net";

/// The API host of a Mailgun region (`us`, `eu`), as the mailgun preset names them.
pub fn base_for(region: &str) -> &'static str {
    match region {
        "eu" => EU,
        _ => US,
    }
}

/// Domains per page (Mailgun's maximum).
pub const PAGE: usize = 1000;

/// How long one request may take in all.
const TIMEOUT: Duration = Duration::from_secs(30);

/// One domain of the account.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Domain {
    pub name: String,
    /// `active`, `unverified` or `disabled`.
    #[serde(default)]
    pub state: String,
}

/// What Mailgun answered with an error status.
#[derive(Debug)]
pub struct ApiError {
    pub method: &'static str,
    pub path: String,
    pub status: u16,
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hint = match self.status {
            401 | 403 => " (check the API key and the region)",
            _ => "",
        };
        write!(
            f,
            "Mailgun API: {} {}: {} {}{hint}",
            self.method, self.path, self.status, self.message
        )
    }
}

impl std::error::Error for ApiError {}

/// A client for one API base with one key.
pub struct Api {
    agent: ureq::Agent,
    base: String,
    authorization: Secret<String>,
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Api").field("base", &self.base).finish()
    }
}

#[derive(Deserialize)]
struct Page<T> {
    #[serde(default)]
    total_count: Option<usize>,
    items: Vec<T>,
}

#[derive(Deserialize)]
struct Login {
    login: String,
}

#[derive(Deserialize)]
struct Message {
    message: String,
}

impl Api {
    /// A client for `base` (`https://…`, or `http://` to a loopback address).
    pub fn new(base: &str, key: &Secret<String>) -> Result<Api> {
        let base = base.trim_end_matches('/').to_string();
        check_base(&base)?;
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("api:{}", key.expose()));
        let tls = TlsConfig::builder().root_certs(roots()).build();
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false)
            // A redirect could take the key elsewhere: none is followed.
            .max_redirects(0)
            .user_agent(concat!("postrelay/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls)
            .build()
            .new_agent();
        Ok(Api {
            agent,
            base,
            authorization: Secret::new(format!("Basic {token}")),
        })
    }

    /// Every domain of the account, page by page.
    pub fn domains(&self) -> Result<Vec<Domain>> {
        self.paged("/v4/domains")
    }

    /// The full logins (`name@domain`) of `domain`'s SMTP credentials.
    pub fn logins(&self, domain: &str) -> Result<Vec<String>> {
        let path = format!("/v3/domains/{}/credentials", segment(domain)?);
        let logins: Vec<Login> = self.paged(&path)?;
        Ok(logins.into_iter().map(|l| l.login).collect())
    }

    /// Creates the SMTP login `login` (`name@domain`) with `password`.
    pub fn create_login(&self, domain: &str, login: &str, password: &Secret<String>) -> Result<()> {
        let path = format!("/v3/domains/{}/credentials", segment(domain)?);
        let form = Form::new()
            .text("login", login)
            .text("password", password.expose());
        let url = format!("{}{path}", self.base);
        let response = self
            .agent
            .post(&url)
            .header("Authorization", self.authorization.expose())
            .send(form)
            .map_err(|e| transport("POST", &path, e))?;
        self.answer("POST", &path, response).map(drop)
    }

    /// Deletes the login `login` (`name@domain`).
    pub fn delete_login(&self, domain: &str, login: &str) -> Result<()> {
        let path = login_path(domain, login)?;
        let url = format!("{}{path}", self.base);
        let response = self
            .agent
            .delete(&url)
            .header("Authorization", self.authorization.expose())
            .call()
            .map_err(|e| transport("DELETE", &path, e))?;
        self.answer("DELETE", &path, response).map(drop)
    }

    /// Every item of a paged list, `limit`/`skip` until a short page or `total_count`.
    fn paged<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<Vec<T>> {
        let mut items = Vec::new();
        loop {
            let url = format!("{}{path}", self.base);
            let response = self
                .agent
                .get(&url)
                .query("limit", PAGE.to_string())
                .query("skip", items.len().to_string())
                .header("Authorization", self.authorization.expose())
                .call()
                .map_err(|e| transport("GET", path, e))?;
            let body = self.answer("GET", path, response)?;
            let page: Page<T> = serde_json::from_str(&body)
                .with_context(|| format!("Mailgun API: GET {path}: unexpected answer"))?;
            let got = page.items.len();
            items.extend(page.items);
            let done = match page.total_count {
                Some(total) => items.len() >= total,
                None => got < PAGE,
            };
            if done || got == 0 {
                return Ok(items);
            }
        }
    }

    /// The body of a 2xx answer, or the error Mailgun gave.
    fn answer(
        &self,
        method: &'static str,
        path: &str,
        mut response: ureq::http::Response<ureq::Body>,
    ) -> Result<String> {
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| transport(method, path, e))?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let message = serde_json::from_str::<Message>(&body)
            .map(|m| m.message)
            .unwrap_or_else(|_| {
                response
                    .status()
                    .canonical_reason()
                    .unwrap_or("error")
                    .to_string()
            });
        Err(ApiError {
            method,
            path: path.to_string(),
            status,
            message: printable(&message),
        }
        .into())
    }
}

/// A transport failure (no answer), naming the request but not its headers.
fn transport(method: &str, path: &str, e: ureq::Error) -> anyhow::Error {
    anyhow::anyhow!("Mailgun API: {method} {path}: {e}")
}

/// Refuses a base that would send the key in clear text over a network.
fn check_base(base: &str) -> Result<()> {
    if base.starts_with("https://") {
        return Ok(());
    }
    let Some(rest) = base.strip_prefix("http://") else {
        bail!("--api-base {base:?}: expected https://HOST (or http:// to a loopback address)");
    };
    let host = rest.split('/').next().unwrap_or("");
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        bail!(
            "--api-base {base:?}: http:// would send the API key in clear text; only a loopback address may use it"
        );
    }
    Ok(())
}

/// The system's CA bundle, or Mozilla's roots (built in) where there is none.
fn roots() -> RootCerts {
    let Some(bundle) = managed::system_ca_bundle() else {
        return RootCerts::WebPki;
    };
    let Ok(pem) = std::fs::read(&bundle) else {
        return RootCerts::WebPki;
    };
    let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    match certs.is_empty() {
        true => RootCerts::WebPki,
        false => RootCerts::Specific(Arc::new(certs)),
    }
}

/// A domain as one path segment (a domain name has no `/`, `?`, `#` or `%`).
fn segment(domain: &str) -> Result<&str> {
    if domain.is_empty() || domain.contains(['/', '?', '#', '%', ' ']) {
        bail!("{domain:?}: not a domain name");
    }
    Ok(domain)
}

/// `/v3/domains/{domain}/credentials/{name}`: Mailgun names a login by the part before
/// the `@`.
fn login_path(domain: &str, login: &str) -> Result<String> {
    let name = login.strip_suffix(&format!("@{domain}")).unwrap_or(login);
    if name.is_empty() || name.contains(['/', '?', '#', '%', ' ', '@']) {
        bail!("{login:?}: not a login of {domain}");
    }
    Ok(format!(
        "/v3/domains/{}/credentials/{name}",
        segment(domain)?
    ))
}

/// Mailgun's message, without control characters (it is printed to a terminal).
fn printable(message: &str) -> String {
    message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http_is_a_base() {
        assert!(check_base("https://api.mailgun.net").is_ok());
        assert!(check_base("http://127.0.0.1:8080").is_ok());
        assert!(check_base("http://[::1]:8080/x").is_ok());
        assert!(check_base("http://localhost:1").is_ok());
        let e = check_base("http://api.mailgun.net")
            .unwrap_err()
            .to_string();
        assert!(e.contains("clear text"), "{e}");
        assert!(check_base("ftp://x").is_err());
    }

    #[test]
    fn logins_are_named_by_their_local_part() {
        assert_eq!(
            login_path("a.example", "postrelay@a.example").unwrap(),
            "/v3/domains/a.example/credentials/postrelay"
        );
        assert!(login_path("a.example", "x/y@a.example").is_err());
        assert!(segment("a/b").is_err());
    }

    #[test]
    fn the_key_is_not_in_debug() {
        let api = Api::new("http://127.0.0.1:1", &Secret::new("key-abc123".into())).unwrap();
        assert!(!format!("{api:?}").contains("abc123"));
    }
}
