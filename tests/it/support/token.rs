//! A tiny Docker-style token server on 127.0.0.1, so the registry's bearer-token auth can be
//! tested end to end (Debian ships no token server).
//!
//! `GET /token?service=S&scope=repository:NAME:pull,push[&scope=…]` with HTTP basic
//! credentials answers `{"token": JWT, "access_token": JWT, "expires_in": …, "issued_at": …}`;
//! wrong or missing credentials answer 401. The JWT is what CNCF distribution 2.8
//! (`registry/auth/token`) verifies: header `{"typ":"JWT","alg":"ES256","x5c":[cert]}` where
//! `cert` is a self-signed certificate that is also the registry's `rootcertbundle`; claims
//! `iss`, `sub`, `aud` (= service), `exp`, `nbf`, `iat`, `jti` and
//! `access: [{type, name, actions}]`. The signature is ECDSA P-256 in JOSE form (r‖s, 64 bytes).
//! Every requested action is granted to the one known user: the test is about the protocol,
//! not about policy.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rcgen::{CertificateParams, DnType, KeyPair, SigningKey as _};
use serde_json::json;

use super::http::{self, Endpoint};

/// Lifetime of an issued token; long enough for any test, short like real ones.
const TOKEN_LIFETIME_SECS: u64 = 300;
/// Largest request head the server reads; token requests are a few hundred bytes.
const MAX_REQUEST: usize = 16 * 1024;
/// Read/write timeout of one connection, so a stuck client cannot pin a thread.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// One request the server answered, for tests that check the flow really happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    /// `service` query parameter (empty if absent).
    pub service: String,
    /// Every `scope` query parameter, decoded, in order.
    pub scopes: Vec<String>,
    /// User name from the basic credentials (`None` without credentials).
    pub user: Option<String>,
    /// Status answered: 200, 400 or 401.
    pub status: u16,
}

/// State shared with the accept thread.
struct Inner {
    user: String,
    password: String,
    service: String,
    issuer: String,
    key: KeyPair,
    cert_der: Vec<u8>,
    requests: Mutex<Vec<TokenRequest>>,
}

/// A running token server; dropping it stops the accept thread.
pub struct TokenServer {
    inner: Arc<Inner>,
    port: u16,
    cert_pem: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TokenServer {
    /// Starts a token server on a free 127.0.0.1 port accepting only `user`/`password`,
    /// issuing tokens with `aud` = `service` and `iss` = `issuer`.
    pub fn start(user: &str, password: &str, service: &str, issuer: &str) -> TokenServer {
        let key = KeyPair::generate().expect("generate token signing key (P-256)");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("token cert params");
        params
            .distinguished_name
            .push(DnType::CommonName, "airlift test token issuer");
        let cert = params.self_signed(&key).expect("self-sign token cert");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind token server");
        let port = listener.local_addr().expect("token server addr").port();
        let inner = Arc::new(Inner {
            user: user.to_owned(),
            password: password.to_owned(),
            service: service.to_owned(),
            issuer: issuer.to_owned(),
            key,
            cert_der: cert.der().to_vec(),
            requests: Mutex::new(Vec::new()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let inner = Arc::clone(&inner);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || accept_loop(listener, inner, stop))
        };
        TokenServer {
            inner,
            port,
            cert_pem: cert.pem(),
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT/token`: the `realm` the registry puts in its challenge.
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// PEM of the signing certificate: the registry's `rootcertbundle`.
    pub fn root_cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The `service` (token audience) this server issues for.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// The `iss` claim of issued tokens.
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// The one accepted user.
    pub fn username(&self) -> &str {
        &self.inner.user
    }

    /// Its password.
    pub fn password(&self) -> &str {
        &self.inner.password
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.inner
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Asks the server over HTTP, as a registry client would, for a token with `scope`
    /// (e.g. `repository:team/app:pull`) using `user`/`password`. Returns status and body.
    pub fn request(&self, user: &str, password: &str, scope: &str) -> (u16, Vec<u8>) {
        let ep = Endpoint {
            port: self.port,
            tls_ca_der: None,
            basic_auth: Some((user.to_owned(), password.to_owned())),
        };
        let path = format!(
            "/token?service={}&scope={}",
            percent_encode(&self.inner.service),
            percent_encode(scope)
        );
        let resp = http::get(&ep, &path, true)
            .unwrap_or_else(|e| panic!("GET {path} on token server: {e}"));
        (resp.status, resp.body)
    }

    /// A token for `scope` fetched over HTTP with the right credentials; panics otherwise.
    pub fn fetch_token(&self, scope: &str) -> String {
        let (status, body) = self.request(&self.inner.user, &self.inner.password, scope);
        assert_eq!(
            status,
            200,
            "token server refused: {}",
            String::from_utf8_lossy(&body)
        );
        let json: serde_json::Value = serde_json::from_slice(&body).expect("token answer is JSON");
        json["token"]
            .as_str()
            .expect("token answer has a token")
            .to_owned()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept; it sees the flag and returns.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, inner: Arc<Inner>, stop: Arc<AtomicBool>) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(conn) = conn else { continue };
        let inner = Arc::clone(&inner);
        // One thread per connection: concurrent uploads ask for tokens in parallel.
        std::thread::spawn(move || {
            let _ = serve(conn, &inner);
        });
    }
}

/// Reads one request, answers it and closes the connection.
fn serve(mut conn: TcpStream, inner: &Inner) -> std::io::Result<()> {
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 || head.len() + n > MAX_REQUEST {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let (status, body) = answer(&text, inner);
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Bad Request",
    };
    let mut resp = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status == 401 {
        resp.push_str("WWW-Authenticate: Basic realm=\"airlift-test-token\"\r\n");
    }
    resp.push_str("\r\n");
    resp.push_str(&body);
    conn.write_all(resp.as_bytes())?;
    conn.flush()?;
    let _ = conn.shutdown(Shutdown::Both);
    Ok(())
}

/// Status and JSON body for one request head.
fn answer(head: &str, inner: &Inner) -> (u16, String) {
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if method != "GET" || path != "/token" {
        return (404, json!({"error": "not found"}).to_string());
    }
    let mut service = String::new();
    let mut scopes = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "service" => service = percent_decode(v),
            "scope" => scopes.push(percent_decode(v)),
            _ => {}
        }
    }
    let basic = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("authorization"))
        .and_then(|(_, v)| v.trim().strip_prefix("Basic ").map(str::to_owned))
        .and_then(|b64| STANDARD.decode(b64.trim()).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned())));
    let user = basic.as_ref().map(|(u, _)| u.clone());
    let (status, body) = match &basic {
        _ if service != inner.service => (
            400,
            json!({"error": format!("unknown service {service:?}")}).to_string(),
        ),
        Some((u, p)) if *u == inner.user && *p == inner.password => {
            match issue(inner, u, &scopes) {
                Ok(token) => {
                    let now = chrono::Utc::now().to_rfc3339();
                    let body = json!({
                        "token": token,
                        "access_token": token,
                        "expires_in": TOKEN_LIFETIME_SECS,
                        "issued_at": now,
                    });
                    (200, body.to_string())
                }
                Err(e) => (400, json!({"error": e}).to_string()),
            }
        }
        _ => (
            401,
            json!({"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}).to_string(),
        ),
    };
    inner
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(TokenRequest {
            service,
            scopes,
            user,
            status,
        });
    (status, body)
}

/// Builds and signs the JWT granting every action of every `type:name:actions` scope.
fn issue(inner: &Inner, subject: &str, scopes: &[String]) -> Result<String, String> {
    let mut access = Vec::new();
    for scope in scopes {
        // The name may not contain ':' for repositories, but split from both ends anyway.
        let (kind, rest) = scope
            .split_once(':')
            .ok_or_else(|| format!("bad scope {scope:?}"))?;
        let (name, actions) = rest
            .rsplit_once(':')
            .ok_or_else(|| format!("bad scope {scope:?}"))?;
        let actions: Vec<&str> = actions.split(',').filter(|a| !a.is_empty()).collect();
        access.push(json!({"type": kind, "name": name, "actions": actions}));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let header = json!({
        "typ": "JWT",
        "alg": "ES256",
        "x5c": [STANDARD.encode(&inner.cert_der)],
    });
    let claims = json!({
        "iss": inner.issuer,
        "sub": subject,
        "aud": inner.service,
        "exp": now + TOKEN_LIFETIME_SECS,
        "nbf": now,
        "iat": now,
        "jti": hex::encode(rand::random::<[u8; 16]>()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let der = inner
        .key
        .sign(signing_input.as_bytes())
        .map_err(|e| format!("sign token: {e}"))?;
    let raw = ecdsa_der_to_jose(&der).ok_or("signature is not DER ECDSA")?;
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(raw)))
}

/// DER `SEQUENCE { INTEGER r, INTEGER s }` → JOSE's fixed 64-byte `r ‖ s` (RFC 7518 §3.4).
pub fn ecdsa_der_to_jose(der: &[u8]) -> Option<[u8; 64]> {
    // P-256 signatures are at most 72 bytes, so every DER length is a single short-form byte.
    let (&tag, rest) = der.split_first()?;
    let (&len, mut rest) = rest.split_first()?;
    if tag != 0x30 || usize::from(len) != rest.len() {
        return None;
    }
    let mut out = [0u8; 64];
    for half in out.chunks_mut(32) {
        let (&tag, r) = rest.split_first()?;
        let (&len, r) = r.split_first()?;
        let len = usize::from(len);
        if tag != 0x02 || r.len() < len {
            return None;
        }
        let (int, r) = r.split_at(len);
        // Drop the sign byte DER adds when the top bit is set; left-pad short integers.
        let int = match int {
            [0, tail @ ..] => tail,
            _ => int,
        };
        if int.len() > 32 {
            return None;
        }
        half[32 - int.len()..].copy_from_slice(int);
        rest = r;
    }
    rest.is_empty().then_some(out)
}

/// Decodes `%XX` escapes and `+` (form encoding, as reqwest's `query` writes it).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Escapes everything but unreserved characters, for query values.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
