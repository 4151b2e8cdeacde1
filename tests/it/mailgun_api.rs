//! A loopback stand-in for Mailgun's API, as `postrelay mailgun` uses it: `GET
//! /v4/domains` (pages by `limit` ≤ 1000 and `skip`, with `total_count`), and `GET`,
//! multipart `POST`, multipart `PUT` and `DELETE` on `/v3/domains/{domain}/credentials`.
//! It checks HTTP Basic auth (`api` and the key: 401 otherwise), the paging
//! parameters (400), the password length Mailgun takes (5 to 32: 400), and answers
//! unknown domains and logins with 404, each error as Mailgun's `{"message": …}`.
//!
//! Tests read what it holds (logins and passwords), every request it saw, and can make
//! the next requests matching a method and path fail ([`MockMailgun::fail`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use base64::Engine as _;
use serde_json::json;

/// One request as the mock saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    /// Whether it carried the right key.
    pub authorized: bool,
    /// The multipart field names and values (passwords included: tests compare them).
    pub fields: BTreeMap<String, String>,
    pub content_type: String,
}

/// A failure to inject: the next `count` requests with this method whose path contains
/// `path` get `status` and `{"message": message}`.
#[derive(Debug, Clone)]
struct Fault {
    method: String,
    path: String,
    status: u16,
    message: String,
    count: usize,
}

#[derive(Debug, Default)]
struct Account {
    /// Domain name → state.
    domains: BTreeMap<String, String>,
    /// Domain → full login → password.
    logins: BTreeMap<String, BTreeMap<String, String>>,
    seen: Vec<Seen>,
    faults: Vec<Fault>,
}

pub struct MockMailgun {
    port: u16,
    key: String,
    account: Arc<Mutex<Account>>,
    stop: Arc<AtomicBool>,
    server: Option<thread::JoinHandle<()>>,
}

impl MockMailgun {
    /// Serves on 127.0.0.1 (a port the kernel chooses) for the API key `key`.
    pub fn start(key: &str) -> MockMailgun {
        let server = tiny_http::Server::http("127.0.0.1:0").expect("bind the mock API");
        let port = server.server_addr().to_ip().unwrap().port();
        let account = Arc::new(Mutex::new(Account::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (account, stop, key) = (account.clone(), stop.clone(), key.to_string());
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(Some(request)) = server.recv_timeout(Duration::from_millis(20)) {
                        serve(request, &key, &account);
                    }
                }
            })
        };
        MockMailgun {
            port,
            key: key.to_string(),
            account,
            stop,
            server: Some(handle),
        }
    }

    /// `http://127.0.0.1:PORT`, for `--api-base`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn add_domain(&self, name: &str, state: &str) {
        let mut a = self.account.lock().unwrap();
        a.domains.insert(name.to_string(), state.to_string());
        a.logins.entry(name.to_string()).or_default();
    }

    pub fn add_login(&self, domain: &str, login: &str, password: &str) {
        let mut a = self.account.lock().unwrap();
        a.logins
            .entry(domain.to_string())
            .or_default()
            .insert(login.to_string(), password.to_string());
    }

    /// The logins of `domain` with their passwords.
    pub fn logins(&self, domain: &str) -> BTreeMap<String, String> {
        let a = self.account.lock().unwrap();
        a.logins.get(domain).cloned().unwrap_or_default()
    }

    /// Every login of the account, `login → password`.
    pub fn all_logins(&self) -> BTreeMap<String, String> {
        let a = self.account.lock().unwrap();
        a.logins
            .values()
            .flatten()
            .map(|(l, p)| (l.clone(), p.clone()))
            .collect()
    }

    /// Whether the account has this login with this password now: what Mailgun's SMTP
    /// relay checks at AUTH.
    pub fn accounts(&self) -> crate::relay::Accounts {
        let account = self.account.clone();
        Box::new(move |user: &str, password: &str| {
            let a = account.lock().unwrap();
            a.logins
                .values()
                .any(|l| l.get(user).is_some_and(|p| p == password))
        })
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.account.lock().unwrap().seen.clone()
    }

    /// Requests seen with this method.
    pub fn count(&self, method: &str) -> usize {
        self.seen().iter().filter(|s| s.method == method).count()
    }

    pub fn forget_requests(&self) {
        self.account.lock().unwrap().seen.clear();
    }

    /// The next `count` requests `METHOD` whose path contains `path` fail with `status`.
    pub fn fail(&self, method: &str, path: &str, status: u16, message: &str, count: usize) {
        self.account.lock().unwrap().faults.push(Fault {
            method: method.to_string(),
            path: path.to_string(),
            status,
            message: message.to_string(),
            count,
        });
    }
}

impl Drop for MockMailgun {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.server.take() {
            let _ = h.join();
        }
    }
}

fn respond(request: tiny_http::Request, status: u16, body: serde_json::Value) {
    let header = tiny_http::Header::from_bytes("Content-Type", "application/json").unwrap();
    let response = tiny_http::Response::from_string(body.to_string())
        .with_status_code(status)
        .with_header(header);
    let _ = request.respond(response);
}

fn message(text: &str) -> serde_json::Value {
    json!({ "message": text })
}

fn serve(mut request: tiny_http::Request, key: &str, account: &Mutex<Account>) {
    let method = request.method().as_str().to_string();
    let (path, query) = match request.url().split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (request.url().to_string(), String::new()),
    };
    let query: BTreeMap<String, String> = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.to_string(), String::new()),
        })
        .collect();
    let header = |name: &str| {
        request
            .headers()
            .iter()
            .find(|h| h.field.to_string().eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str().to_string())
            .unwrap_or_default()
    };
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("api:{key}"))
    );
    let authorized = header("Authorization") == want;
    let content_type = header("Content-Type");
    let mut body = Vec::new();
    let _ = request.as_reader().read_to_end(&mut body);
    let fields = multipart_fields(&content_type, &body);
    let mut a = account.lock().unwrap();
    a.seen.push(Seen {
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        authorized,
        fields: fields.clone(),
        content_type: content_type.clone(),
    });
    if !authorized {
        drop(a);
        return respond(request, 401, message("Invalid private key"));
    }
    if let Some(f) = a
        .faults
        .iter_mut()
        .find(|f| f.count > 0 && f.method == method && path.contains(&f.path))
    {
        f.count -= 1;
        let (status, text) = (f.status, f.message.clone());
        drop(a);
        return respond(request, status, message(&text));
    }
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (status, body) = route(&mut a, &method, &parts, &query, &content_type, &fields);
    drop(a);
    respond(request, status, body)
}

/// Paging as Mailgun takes it: `limit` 1..=1000 and `skip` ≥ 0, both given by postrelay.
fn page(query: &BTreeMap<String, String>) -> Result<(usize, usize), String> {
    let limit = query.get("limit").ok_or("limit missing")?;
    let skip = query.get("skip").ok_or("skip missing")?;
    let limit: usize = limit.parse().map_err(|_| "limit: not a number")?;
    let skip: usize = skip.parse().map_err(|_| "skip: not a number")?;
    if !(1..=1000).contains(&limit) {
        return Err("limit: must be between 1 and 1000".into());
    }
    Ok((limit, skip))
}

fn route(
    a: &mut Account,
    method: &str,
    parts: &[&str],
    query: &BTreeMap<String, String>,
    content_type: &str,
    fields: &BTreeMap<String, String>,
) -> (u16, serde_json::Value) {
    let multipart = content_type.starts_with("multipart/form-data; boundary=");
    match (method, parts) {
        ("GET", ["v4", "domains"]) => match page(query) {
            Ok((limit, skip)) => {
                let items: Vec<_> = a
                    .domains
                    .iter()
                    .skip(skip)
                    .take(limit)
                    .map(|(name, state)| json!({ "name": name, "state": state, "type": "custom" }))
                    .collect();
                (
                    200,
                    json!({ "total_count": a.domains.len(), "items": items }),
                )
            }
            Err(e) => (400, message(&e)),
        },
        (_, ["v3", "domains", domain, "credentials", rest @ ..]) => {
            let domain = domain.to_string();
            if !a.domains.contains_key(&domain) {
                return (404, message("Domain not found"));
            }
            let logins = a.logins.entry(domain.clone()).or_default();
            match (method, rest) {
                ("GET", []) => match page(query) {
                    Ok((limit, skip)) => {
                        let items: Vec<_> = logins
                            .keys()
                            .skip(skip)
                            .take(limit)
                            .map(|l| json!({ "login": l, "created_at": "Mon, 30 Nov 2026 10:00:00 -0000", "mailbox": l, "size_bytes": null }))
                            .collect();
                        (200, json!({ "total_count": logins.len(), "items": items }))
                    }
                    Err(e) => (400, message(&e)),
                },
                ("POST", []) if multipart => {
                    let (Some(login), Some(password)) =
                        (fields.get("login"), fields.get("password"))
                    else {
                        return (400, message("login and password are required"));
                    };
                    let login = match login.contains('@') {
                        true => login.clone(),
                        false => format!("{login}@{domain}"),
                    };
                    if !login.ends_with(&format!("@{domain}")) {
                        return (400, message("login must belong to the domain"));
                    }
                    if let Some(refused) = password_refused(password) {
                        return refused;
                    }
                    if logins.contains_key(&login) {
                        return (400, message("Credentials already exist"));
                    }
                    logins.insert(login, password.clone());
                    (200, message("Created 1 credentials pair(s)"))
                }
                ("PUT", [name]) if multipart => {
                    let login = format!("{name}@{domain}");
                    let Some(password) = fields.get("password") else {
                        return (400, message("password is required"));
                    };
                    if let Some(refused) = password_refused(password) {
                        return refused;
                    }
                    match logins.get_mut(&login) {
                        Some(p) => {
                            *p = password.clone();
                            (200, message("Password changed"))
                        }
                        None => (404, message("Credentials not found")),
                    }
                }
                ("DELETE", [name]) => {
                    let login = format!("{name}@{domain}");
                    match logins.remove(&login) {
                        Some(_) => (
                            200,
                            json!({ "message": "Credentials have been deleted", "spec": login }),
                        ),
                        None => (404, message("Credentials not found")),
                    }
                }
                ("POST" | "PUT", _) => (400, message("expected multipart/form-data")),
                _ => (404, message("Not found")),
            }
        }
        _ => (404, message("Not found")),
    }
}

/// Mailgun's answer to a password it does not take (5 to 32 characters), if so.
fn password_refused(password: &str) -> Option<(u16, serde_json::Value)> {
    let n = password.chars().count();
    (!(5..=32).contains(&n)).then(|| {
        (
            400,
            message("Password length must be between 5 and 32 characters."),
        )
    })
}

/// The text fields of a multipart/form-data body.
fn multipart_fields(content_type: &str, body: &[u8]) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    let Some(boundary) = content_type.split("boundary=").nth(1) else {
        return fields;
    };
    let boundary = format!("--{}", boundary.trim_matches('"'));
    let text = String::from_utf8_lossy(body);
    for part in text.split(boundary.as_str()).skip(1) {
        let Some((head, value)) = part.split_once("\r\n\r\n") else {
            continue;
        };
        let name = head
            .split("name=\"")
            .nth(1)
            .and_then(|r| r.split('"').next());
        if let Some(name) = name {
            fields.insert(name.to_string(), value.trim_end_matches("\r\n").to_string());
        }
    }
    fields
}
