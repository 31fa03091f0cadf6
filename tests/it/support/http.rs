//! A deliberately tiny HTTP/1.1 GET client for the registry API (readiness probe, catalog).
//! Plain TCP for the plain registry; rustls trusting only the test CA for the TLS one.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;

use super::registry::Registry;

/// Largest response the helper reads; registry API answers used in tests are far smaller.
const MAX_RESPONSE: u64 = 16 * 1024 * 1024;
/// Connect/read/write timeout of one request.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach a registry: port on 127.0.0.1, CA to trust (TLS when set), basic credentials.
pub(super) struct Endpoint {
    pub port: u16,
    pub tls_ca_der: Option<Vec<u8>>,
    pub basic_auth: Option<(String, String)>,
}

/// Status, headers and body of one response.
#[derive(Debug)]
pub struct HttpResponse {
    /// HTTP status code.
    pub status: u16,
    /// Header lines as (lowercased name, value).
    pub headers: Vec<(String, String)>,
    /// Body, de-chunked.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// First header value with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` on the registry, with its basic credentials if it has some. Panics on I/O errors.
pub fn http_get(registry: &Registry, path: &str) -> HttpResponse {
    get(&registry.endpoint(), path, true)
        .unwrap_or_else(|e| panic!("GET {path} on {}: {e}", registry.host()))
}

/// Repository names from `GET /v2/_catalog` (basic auth for the TLS flavour), following
/// `Link` pagination.
pub fn catalog(registry: &Registry) -> Vec<String> {
    let mut repos = Vec::new();
    let mut path = "/v2/_catalog?n=1000".to_string();
    loop {
        let resp = http_get(registry, &path);
        assert_eq!(
            resp.status,
            200,
            "catalog: {}",
            String::from_utf8_lossy(&resp.body)
        );
        let json: serde_json::Value =
            serde_json::from_slice(&resp.body).expect("catalog answer is JSON");
        repos.extend(
            json["repositories"]
                .as_array()
                .expect("catalog has a repositories array")
                .iter()
                .map(|r| r.as_str().expect("repository name is a string").to_string()),
        );
        // Link: </v2/_catalog?last=x&n=1000>; rel="next"
        match resp
            .header("link")
            .and_then(|l| l.split_once('<'))
            .and_then(|(_, rest)| rest.split_once('>'))
        {
            Some((next, _)) => path = next.to_string(),
            None => return repos,
        }
    }
}

/// One GET over a fresh connection (`Connection: close`); `auth` adds basic credentials.
pub(super) fn get(ep: &Endpoint, path: &str, auth: bool) -> io::Result<HttpResponse> {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUser-Agent: airlift-test-harness\r\nConnection: close\r\n",
        ep.port
    );
    if auth && let Some((user, pass)) = &ep.basic_auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        req.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    req.push_str("\r\n");

    let tcp = TcpStream::connect_timeout(&([127, 0, 0, 1], ep.port).into(), IO_TIMEOUT)?;
    tcp.set_read_timeout(Some(IO_TIMEOUT))?;
    tcp.set_write_timeout(Some(IO_TIMEOUT))?;
    let raw = match &ep.tls_ca_der {
        None => exchange(tcp, req.as_bytes())?,
        Some(ca) => {
            let conn = rustls::ClientConnection::new(
                tls_config(ca)?,
                "127.0.0.1".try_into().map_err(io::Error::other)?,
            )
            .map_err(io::Error::other)?;
            exchange(rustls::StreamOwned::new(conn, tcp), req.as_bytes())?
        }
    };
    parse(&raw)
}

/// rustls client config trusting exactly the test CA.
fn tls_config(ca_der: &[u8]) -> io::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(ca_der.to_vec()))
        .map_err(io::Error::other)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Writes the request and reads until EOF (bounded). A TLS peer that closes without
/// close_notify yields UnexpectedEof: what was read so far is kept and checked by `parse`.
fn exchange<S: Read + Write>(mut stream: S, req: &[u8]) -> io::Result<Vec<u8>> {
    stream.write_all(req)?;
    stream.flush()?;
    let mut raw = Vec::new();
    match stream.take(MAX_RESPONSE).read_to_end(&mut raw) {
        Ok(_) => Ok(raw),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !raw.is_empty() => Ok(raw),
        Err(e) => Err(e),
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Parses status line, headers and a Content-Length or chunked body.
fn parse(raw: &[u8]) -> io::Result<HttpResponse> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad("headers not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("empty response"))?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[split + 4..];
    let find = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let body = if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = find("content-length") {
        let len: usize = len.parse().map_err(|_| bad("bad content-length"))?;
        if rest.len() < len {
            return Err(bad(format!(
                "body truncated: {} of {len} bytes",
                rest.len()
            )));
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("chunk size line"))?;
        let size_text = std::str::from_utf8(&data[..eol]).map_err(|_| bad("chunk size"))?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("chunk size hex"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err(bad("chunk truncated"));
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}
