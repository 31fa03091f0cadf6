//! A fault-injecting HTTP/1.1 proxy between airlift and a real registry, on 127.0.0.1 only.
//!
//! Why: retries, Range resume and "re-run completes the work" can only be proven against a
//! network that misbehaves on cue. The proxy understands just enough HTTP/1.1 to find request
//! and response boundaries on keep-alive connections (Content-Length, chunked, HEAD, 1xx, 204,
//! 304, read-to-close), so a fault hits exactly the request it is meant for and every other
//! request passes through byte for byte. Bodies are streamed through fixed 64 KiB buffers.
//!
//! Faults are rules: [`FaultProxy::inject`]`(fault, times, filter)` applies `fault` to the next
//! `times` requests whose `"METHOD /path?query"` contains `filter` (`""` matches every request).
//! A [`Fault`] answers with a status (500/503/429…) without forwarding, cuts the connection after
//! N bytes of the response or of the request, or delays the request. Counters tell a test how
//! many requests passed and how many faults fired.
//!
//! ```ignore
//! let reg = Registry::start_plain();
//! let proxy = FaultProxy::start(reg.port());
//! proxy.inject(Fault::Status(503), 3, "/blobs/");
//! proxy.inject(Fault::CutResponse(100_000), 2, "GET /v2/");
//! // use proxy.reference("team/app:v1") wherever airlift would use reg.reference(...)
//! ```

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Largest request or response head the proxy accepts.
const MAX_HEAD: usize = 64 * 1024;
/// Request lines kept for [`FaultProxy::request_lines`].
const MAX_LINES: usize = 100_000;
/// How long a connection may sit idle before the proxy gives up on it.
const IDLE: Duration = Duration::from_secs(120);

/// What to do to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this HTTP status (body drained, not forwarded) and close the connection.
    Status(u16),
    /// Forward, then close both sides after this many bytes of the response (head included).
    CutResponse(u64),
    /// Forward only this many bytes of the request (head included), then close both sides.
    CutRequest(u64),
    /// Wait this long, then forward normally.
    Delay(Duration),
}

#[derive(Debug)]
struct Rule {
    fault: Fault,
    remaining: u32,
    filter: String,
}

#[derive(Debug, Default)]
struct Shared {
    rules: Mutex<Vec<Rule>>,
    log: Mutex<Vec<String>>,
    /// Every request line (`METHOD /path?query`), the first [`MAX_LINES`].
    lines: Mutex<Vec<String>>,
    requests: AtomicU64,
    injected: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    /// The fault for the next request `line`, consuming one use of the first matching rule.
    fn fault_for(&self, line: &str) -> Option<Fault> {
        let mut rules = self.rules.lock().unwrap();
        let rule = rules
            .iter_mut()
            .find(|r| r.remaining > 0 && line.contains(&r.filter))?;
        rule.remaining -= 1;
        self.injected.fetch_add(1, Ordering::SeqCst);
        self.log
            .lock()
            .unwrap()
            .push(format!("{line} <- {:?}", rule.fault));
        Some(rule.fault)
    }
}

/// A running proxy; dropping it stops accepting connections.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens on a free 127.0.0.1 port and forwards to `127.0.0.1:upstream_port`.
    pub fn start(upstream_port: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let upstream = SocketAddr::from(([127, 0, 0, 1], upstream_port));
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        let acceptor = thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let s = Arc::clone(&s);
                thread::spawn(move || {
                    let _ = serve(client, upstream, &s);
                });
            }
        });
        FaultProxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `127.0.0.1:PORT` of the proxy, for references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `127.0.0.1:PORT/<repo_ref>` through the proxy.
    pub fn reference(&self, repo_ref: &str) -> String {
        format!("{}/{repo_ref}", self.host())
    }

    /// Applies `fault` to the next `times` requests whose `"METHOD /path"` contains `filter`.
    pub fn inject(&self, fault: Fault, times: u32, filter: &str) {
        self.shared.rules.lock().unwrap().push(Rule {
            fault,
            remaining: times,
            filter: filter.to_owned(),
        });
    }

    /// Removes every rule (faults not yet fired are forgotten).
    pub fn clear(&self) {
        self.shared.rules.lock().unwrap().clear();
    }

    /// Requests seen so far (faulted or not).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Every request line seen so far (`METHOD /path?query`), in arrival order.
    pub fn request_lines(&self) -> Vec<String> {
        self.shared.lines.lock().unwrap().clone()
    }

    /// Faults not yet fired.
    pub fn pending(&self) -> u32 {
        self.shared
            .rules
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.remaining)
            .sum()
    }

    /// One line per fired fault: the request line and the fault.
    pub fn log(&self) -> Vec<String> {
        self.shared.log.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

/// A parsed message head: the raw bytes and what framing the body uses.
struct Head {
    raw: Vec<u8>,
    first_line: String,
    content_length: Option<u64>,
    chunked: bool,
    close: bool,
}

/// Reads one head (up to the blank line); `Ok(None)` on a clean EOF before any byte.
fn read_head<R: BufRead>(r: &mut R) -> io::Result<Option<Head>> {
    let mut raw = Vec::new();
    loop {
        let before = raw.len();
        let n = r
            .take((MAX_HEAD - raw.len()) as u64)
            .read_until(b'\n', &mut raw)?;
        if n == 0 {
            if raw.is_empty() {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "head cut short",
            ));
        }
        if raw.len() >= MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
        }
        let line = &raw[before..];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let mut lines = text.split("\r\n");
    let first_line = lines.next().unwrap_or_default().to_owned();
    let (mut content_length, mut chunked, mut close) = (None, false, false);
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
        match k.as_str() {
            "content-length" => content_length = v.parse().ok(),
            "transfer-encoding" => chunked = v.contains("chunked"),
            "connection" => close = v.contains("close"),
            _ => {}
        }
    }
    // HTTP/1.0 closes after one exchange unless asked otherwise.
    if first_line.starts_with("HTTP/1.0") || first_line.ends_with("HTTP/1.0") {
        close = true;
    }
    Ok(Some(Head {
        raw,
        first_line,
        content_length,
        chunked,
        close,
    }))
}

/// Where relayed bytes go, with an optional budget after which the relay stops.
struct Sink<'a, W: Write> {
    out: &'a mut W,
    budget: Option<u64>,
}

impl<W: Write> Sink<'_, W> {
    /// Writes `buf`, or as much as the budget allows; `false` once the budget is spent.
    fn put(&mut self, buf: &[u8]) -> io::Result<bool> {
        match &mut self.budget {
            None => {
                self.out.write_all(buf)?;
                Ok(true)
            }
            Some(left) => {
                let n = (*left).min(buf.len() as u64) as usize;
                self.out.write_all(&buf[..n])?;
                *left -= n as u64;
                Ok(n == buf.len())
            }
        }
    }
}

/// Copies exactly `n` bytes; `false` if the sink's budget ran out.
fn relay_exact<R: Read, W: Write>(r: &mut R, sink: &mut Sink<W>, mut n: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; 64 * 1024];
    while n > 0 {
        let want = n.min(buf.len() as u64) as usize;
        let got = r.read(&mut buf[..want])?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "body cut short",
            ));
        }
        n -= got as u64;
        if !sink.put(&buf[..got])? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Copies a chunked body, framing included; `false` if the sink's budget ran out.
fn relay_chunked<R: BufRead, W: Write>(r: &mut R, sink: &mut Sink<W>) -> io::Result<bool> {
    loop {
        let mut line = Vec::new();
        r.take(4096).read_until(b'\n', &mut line)?;
        if !sink.put(&line)? {
            return Ok(false);
        }
        let text = String::from_utf8_lossy(&line);
        let size_text = text.trim().split(';').next().unwrap_or("").to_owned();
        let size = u64::from_str_radix(&size_text, 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
        if size == 0 {
            // Trailers up to the blank line.
            loop {
                let mut t = Vec::new();
                r.take(4096).read_until(b'\n', &mut t)?;
                if !sink.put(&t)? {
                    return Ok(false);
                }
                if t == b"\r\n" || t.is_empty() {
                    return Ok(true);
                }
            }
        }
        if !relay_exact(r, sink, size + 2)? {
            return Ok(false);
        }
    }
}

/// Copies until EOF; `false` if the sink's budget ran out.
fn relay_to_eof<R: Read, W: Write>(r: &mut R, sink: &mut Sink<W>) -> io::Result<bool> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let got = r.read(&mut buf)?;
        if got == 0 {
            return Ok(true);
        }
        if !sink.put(&buf[..got])? {
            return Ok(false);
        }
    }
}

/// Relays a body framed as `head` says; `false` if the budget ran out.
fn relay_body<R: BufRead, W: Write>(
    head: &Head,
    has_body: bool,
    r: &mut R,
    sink: &mut Sink<W>,
    request: bool,
) -> io::Result<bool> {
    if !has_body {
        return Ok(true);
    }
    if head.chunked {
        relay_chunked(r, sink)
    } else if let Some(n) = head.content_length {
        relay_exact(r, sink, n)
    } else if request {
        Ok(true)
    } else {
        relay_to_eof(r, sink)
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Injected Fault",
    }
}

/// Copies bytes both ways until either side closes (no HTTP parsing, no faults).
fn pipe(
    mut client_r: BufReader<TcpStream>,
    client_w: TcpStream,
    upstream: SocketAddr,
) -> io::Result<()> {
    let Ok(up) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) else {
        let _ = client_w.shutdown(Shutdown::Both);
        return Ok(());
    };
    let mut up_r = up.try_clone()?;
    let mut up_w = up.try_clone()?;
    let mut back = client_w.try_clone()?;
    let t = thread::spawn(move || {
        let _ = io::copy(&mut up_r, &mut back);
        let _ = back.shutdown(Shutdown::Both);
    });
    let _ = io::copy(&mut client_r, &mut up_w);
    let _ = up.shutdown(Shutdown::Both);
    let _ = client_w.shutdown(Shutdown::Both);
    let _ = t.join();
    Ok(())
}

/// Serves one client connection until either side closes.
fn serve(client: TcpStream, upstream: SocketAddr, shared: &Shared) -> io::Result<()> {
    client.set_read_timeout(Some(IDLE))?;
    let mut client_w = client.try_clone()?;
    let mut client_r = BufReader::with_capacity(64 * 1024, client.try_clone()?);
    // A TLS ClientHello (airlift tries HTTPS first, then falls back to HTTP on loopback):
    // pass the connection through untouched so the client sees what the registry answers.
    if client_r.fill_buf()?.first() == Some(&0x16) {
        return pipe(client_r, client_w, upstream);
    }
    let mut up: Option<(TcpStream, BufReader<TcpStream>)> = None;
    let close_all = |up: &Option<(TcpStream, BufReader<TcpStream>)>| {
        let _ = client.shutdown(Shutdown::Both);
        if let Some((u, _)) = up {
            let _ = u.shutdown(Shutdown::Both);
        }
    };
    loop {
        let Some(req) = read_head(&mut client_r)? else {
            close_all(&up);
            return Ok(());
        };
        shared.requests.fetch_add(1, Ordering::SeqCst);
        let line = req
            .first_line
            .rsplit_once(' ')
            .map_or(req.first_line.as_str(), |(l, _)| l)
            .to_owned();
        if let Ok(mut lines) = shared.lines.lock()
            && lines.len() < MAX_LINES
        {
            lines.push(line.clone());
        }
        let fault = shared.fault_for(&line);
        if let Some(Fault::Status(status)) = fault {
            let mut drain = Sink {
                out: &mut io::sink(),
                budget: None,
            };
            relay_body(&req, true, &mut client_r, &mut drain, true)?;
            // What distribution sends with these statuses (its errcode table); a gateway's
            // 502/504 carries no OCI error body.
            let (content_type, body) = match status {
                429 | 500 | 503 => {
                    let code = match status {
                        429 => "TOOMANYREQUESTS",
                        503 => "UNAVAILABLE",
                        _ => "UNKNOWN",
                    };
                    (
                        "application/json",
                        format!(
                            r#"{{"errors":[{{"code":"{code}","message":"injected {status} by the test proxy"}}]}}"#
                        ),
                    )
                }
                _ => (
                    "text/plain",
                    format!("injected {status} by the test proxy\n"),
                ),
            };
            let retry_after = if status == 429 {
                "Retry-After: 0\r\n"
            } else {
                ""
            };
            write!(
                client_w,
                "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{retry_after}Connection: close\r\n\r\n{body}",
                reason(status),
                body.len()
            )?;
            client_w.flush()?;
            close_all(&up);
            return Ok(());
        }
        if let Some(Fault::Delay(d)) = fault {
            thread::sleep(d);
        }
        if up.is_none() {
            let Ok(u) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) else {
                // Upstream is down: behave like it, the client sees the connection close.
                close_all(&up);
                return Ok(());
            };
            u.set_read_timeout(Some(IDLE))?;
            let r = BufReader::with_capacity(64 * 1024, u.try_clone()?);
            up = Some((u, r));
        }
        let Some((up_w, up_r)) = up.as_mut() else {
            return Ok(());
        };
        // Request: head and body upstream.
        let mut to_up = Sink {
            out: up_w,
            budget: match fault {
                Some(Fault::CutRequest(n)) => Some(n),
                _ => None,
            },
        };
        let complete =
            to_up.put(&req.raw)? && relay_body(&req, true, &mut client_r, &mut to_up, true)?;
        if !complete {
            close_all(&up);
            return Ok(());
        }
        to_up.out.flush()?;
        // Response: head and body back.
        let Some(resp) = read_head(up_r)? else {
            close_all(&up);
            return Ok(());
        };
        let status: u16 = resp
            .first_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let has_body = !(line.starts_with("HEAD ")
            || (100..200).contains(&status)
            || status == 204
            || status == 304);
        let mut to_client = Sink {
            out: &mut client_w,
            budget: match fault {
                Some(Fault::CutResponse(n)) => Some(n),
                _ => None,
            },
        };
        let complete =
            to_client.put(&resp.raw)? && relay_body(&resp, has_body, up_r, &mut to_client, false)?;
        client_w.flush()?;
        let read_to_close = has_body && !resp.chunked && resp.content_length.is_none();
        if !complete || req.close || resp.close || read_to_close {
            close_all(&up);
            return Ok(());
        }
    }
}
