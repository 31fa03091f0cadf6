//! The distribution API's pull and discovery endpoints over a [`Catalog`].
//!
//! Manifests come from memory; blobs are read in place from the archive files by offset. A
//! blob is checked against its digest the first time it is read whole; its last chunk is held
//! back until the digest matches, so a client never receives a complete wrong body.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{BodyExt, Full, StreamBody};
use tokio::sync::mpsc;

use super::auth::Htpasswd;
use super::catalog::{BlobState, Catalog, ServedBlob};
use super::route::{self, ManifestRef, Route, RouteError};
use crate::digest::{Digest, Hasher};
use crate::store::archive::Extent;

/// Bytes per chunk read from an archive file.
const CHUNK: usize = 256 * 1024;
/// Chunks buffered per response between the file reader and the socket.
const CHUNKS_IN_FLIGHT: usize = 4;
/// Longest request target accepted (path and query).
pub const MAX_URI: usize = 8 * 1024;
/// Largest page of a tag or repository list.
const MAX_PAGE: usize = 10_000;

/// A response body: bytes from memory or a stream of chunks read from an archive.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

/// Counts kept for the shutdown summary.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests answered.
    pub requests: AtomicU64,
    /// Body bytes sent.
    pub bytes: AtomicU64,
    /// Responses with a 4xx or 5xx status.
    pub errors: AtomicU64,
    /// Bodies that ended before they were complete (client gone, or a blob failed its digest).
    pub aborted: AtomicU64,
    /// Blobs that failed their digest.
    pub bad_blobs: AtomicU64,
}

/// What every request handler shares.
pub struct Server {
    /// What is served.
    pub catalog: Arc<Catalog>,
    /// Basic auth, when `--htpasswd` was given.
    pub auth: Option<Htpasswd>,
    /// Counters.
    pub stats: Stats,
    /// Print a line per request on stderr.
    pub log_requests: bool,
}

impl Server {
    /// Answers one request; never fails (every error is a response).
    pub async fn handle<B>(self: Arc<Self>, req: Request<B>) -> Response<LoggedBody> {
        let started = Instant::now();
        let method = req.method().clone();
        let target = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        let resp = self.respond(&req).await;
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        if resp.status().is_client_error() || resp.status().is_server_error() {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        let (mut parts, body) = resp.into_parts();
        parts.headers.insert(
            "docker-distribution-api-version",
            HeaderValue::from_static("registry/2.0"),
        );
        let status = parts.status;
        let body = if method == Method::HEAD {
            empty()
        } else {
            body
        };
        Response::from_parts(
            parts,
            LoggedBody {
                inner: body,
                sent: 0,
                finished: false,
                line: Some(LogLine {
                    method,
                    target,
                    status,
                    started,
                    server: self,
                }),
            },
        )
    }

    async fn respond<B>(self: &Arc<Self>, req: &Request<B>) -> Response<Body> {
        let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
        if uri_len > MAX_URI {
            return error(
                StatusCode::URI_TOO_LONG,
                "UNSUPPORTED",
                &format!("request target of {uri_len} bytes is over the {MAX_URI}-byte limit"),
            );
        }
        if let Some(auth) = &self.auth {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            if !auth.check(given).await {
                let mut r = error(
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHORIZED",
                    "authentication required",
                );
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"airlift\""),
                );
                return r;
            }
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "UNSUPPORTED",
                &format!(
                    "{} is not supported: this registry is read-only (airlift serve)",
                    req.method()
                ),
            );
        }
        let route = match route::parse(req.uri().path()) {
            Ok(r) => r,
            Err(e) => return route_error(e),
        };
        let query = req.uri().query();
        let ns = route::query_param(query, "ns");
        let c = &self.catalog;
        let repo_of = |name: &str| {
            c.repository(name, ns).ok_or_else(|| {
                Box::new(error(
                    StatusCode::NOT_FOUND,
                    "NAME_UNKNOWN",
                    &format!("repository {name} is not in the archives served"),
                ))
            })
        };
        match route {
            Route::Base => json(StatusCode::OK, b"{}".to_vec()),
            Route::Catalog => {
                let names: Vec<&str> = c.repositories().collect();
                match page(&names, query, "/v2/_catalog") {
                    Ok((items, link)) => {
                        let body = serde_json::json!({ "repositories": items });
                        with_link(json(StatusCode::OK, body.to_string().into_bytes()), link)
                    }
                    Err(r) => *r,
                }
            }
            Route::Tags(name) => {
                let repo = match repo_of(&name) {
                    Ok(r) => r,
                    Err(r) => return *r,
                };
                let tags: Vec<&str> = c
                    .tags(repo)
                    .map(|t| t.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                match page(&tags, query, &format!("/v2/{name}/tags/list")) {
                    Ok((items, link)) => {
                        let body = serde_json::json!({ "name": name, "tags": items });
                        with_link(json(StatusCode::OK, body.to_string().into_bytes()), link)
                    }
                    Err(r) => *r,
                }
            }
            Route::Manifest(name, reference) => {
                let repo = match repo_of(&name) {
                    Ok(r) => r,
                    Err(r) => return *r,
                };
                let digest = match &reference {
                    ManifestRef::Digest(d) => Some(d.clone()),
                    ManifestRef::Tag(t) => c.tags(repo).and_then(|tags| tags.get(t)).cloned(),
                };
                let Some((d, m)) = digest.and_then(|d| c.manifest(&d).map(|m| (d, m))) else {
                    return error(
                        StatusCode::NOT_FOUND,
                        "MANIFEST_UNKNOWN",
                        &format!(
                            "manifest {name}:{} is not in the archives served",
                            show(&reference)
                        ),
                    );
                };
                let mut r = bytes_response(StatusCode::OK, m.bytes.clone());
                set(r.headers_mut(), header::CONTENT_TYPE, &m.media_type);
                set(r.headers_mut(), "docker-content-digest", &d.to_string());
                set(r.headers_mut(), header::ETAG, &format!("\"{d}\""));
                r
            }
            Route::Blob(name, d) => {
                if let Err(r) = repo_of(&name) {
                    return *r;
                }
                self.blob(&d, req.headers(), req.method() == Method::HEAD)
                    .await
            }
            Route::Referrers(name, d) => {
                if let Err(r) = repo_of(&name) {
                    return *r;
                }
                let filter = route::query_param(query, "artifactType");
                let list: Vec<_> = c
                    .referrers(&d)
                    .iter()
                    .filter(|r| filter.is_none_or(|f| r.artifact_type.as_deref() == Some(f)))
                    .collect();
                let body = serde_json::json!({
                    "schemaVersion": 2,
                    "mediaType": crate::oci::media_type::OCI_INDEX,
                    "manifests": list,
                });
                let mut r = bytes_response(StatusCode::OK, Bytes::from(body.to_string()));
                set(
                    r.headers_mut(),
                    header::CONTENT_TYPE,
                    crate::oci::media_type::OCI_INDEX,
                );
                if filter.is_some() {
                    set(r.headers_mut(), "oci-filters-applied", "artifactType");
                }
                r
            }
            Route::Upload(_) => error(
                StatusCode::METHOD_NOT_ALLOWED,
                "UNSUPPORTED",
                "uploads are not supported: this registry is read-only (airlift serve)",
            ),
        }
    }

    async fn blob(self: &Arc<Self>, d: &Digest, headers: &HeaderMap, head: bool) -> Response<Body> {
        let c = &self.catalog;
        // Manifests are blobs too, for clients that fetch them by the blob endpoint.
        if let Some(m) = c.manifest(d) {
            return ranged_memory(d, &m.bytes, headers);
        }
        let Some(blob) = c.blob(d) else {
            return error(
                StatusCode::NOT_FOUND,
                "BLOB_UNKNOWN",
                &format!("blob {d} is not in the archives served"),
            );
        };
        if blob.state() == BlobState::Bad {
            return self.bad_blob(d, blob);
        }
        let range = match parse_range(headers.get(header::RANGE), blob.size) {
            Ok(r) => r,
            Err(()) => return unsatisfiable(blob.size),
        };
        let mut r = Response::new(empty());
        blob_headers(r.headers_mut(), d);
        let (start, len) = match range {
            None => (0, blob.size),
            Some((start, len)) => {
                *r.status_mut() = StatusCode::PARTIAL_CONTENT;
                set(
                    r.headers_mut(),
                    header::CONTENT_RANGE,
                    &format!("bytes {start}-{}/{}", start + len - 1, blob.size),
                );
                (start, len)
            }
        };
        set(r.headers_mut(), header::CONTENT_LENGTH, &len.to_string());
        if head {
            return r;
        }
        let whole = start == 0 && len == blob.size;
        if !whole && blob.state() == BlobState::Unchecked {
            // A part of a blob is only served once the whole is known good.
            let ok = self.check_whole(d).await;
            if !ok {
                return self.bad_blob(d, blob);
            }
        }
        let verify = (whole && blob.state() == BlobState::Unchecked).then(|| d.clone());
        *r.body_mut() = self.stream(d.clone(), start, len, verify);
        r
    }

    fn bad_blob(&self, d: &Digest, blob: &ServedBlob) -> Response<Body> {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "BLOB_UNKNOWN",
            &format!(
                "blob {d} in {} does not match its digest (the archive changed or is damaged); \
                 it is not served: run `airlift verify` on the archive",
                self.catalog.archive_of(blob).display()
            ),
        )
    }

    /// Reads a whole blob once and records whether it matches its digest.
    async fn check_whole(&self, d: &Digest) -> bool {
        let catalog = Arc::clone(&self.catalog);
        let digest = d.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let blob = catalog.blob(&digest)?;
            Some(read_extents(
                &blob.extents,
                0,
                blob.size,
                Some(&digest),
                None,
            ))
        })
        .await
        .ok()
        .flatten();
        self.record(d, outcome)
    }

    fn record(&self, d: &Digest, outcome: Option<Outcome>) -> bool {
        let Some(blob) = self.catalog.blob(d) else {
            return false;
        };
        match outcome {
            Some(Outcome::Matched) => {
                blob.mark(true);
                true
            }
            Some(Outcome::Mismatch(found)) => {
                blob.mark(false);
                self.stats.bad_blobs.fetch_add(1, Ordering::Relaxed);
                eprintln!(
                    "airlift serve: blob {d} in {} does not match its digest (read {found}); \
                     refusing it from now on",
                    self.catalog.archive_of(blob).display()
                );
                false
            }
            Some(Outcome::Io(e)) => {
                eprintln!(
                    "airlift serve: reading blob {d} from {}: {e}",
                    self.catalog.archive_of(blob).display()
                );
                false
            }
            Some(Outcome::Sent) | Some(Outcome::ClientGone) | None => false,
        }
    }

    /// A body streaming `len` bytes of a blob from `start`, verified when `verify` is set.
    fn stream(self: &Arc<Self>, d: Digest, start: u64, len: u64, verify: Option<Digest>) -> Body {
        let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(CHUNKS_IN_FLIGHT);
        let server = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let Some(blob) = server.catalog.blob(&d) else {
                return;
            };
            let outcome = read_extents(&blob.extents, start, len, verify.as_ref(), Some(&tx));
            match &outcome {
                Outcome::Mismatch(_) => {
                    let _ = tx.blocking_send(Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("blob {d} does not match its digest"),
                    )));
                }
                Outcome::Io(e) => {
                    let _ = tx.blocking_send(Err(std::io::Error::new(e.kind(), e.to_string())));
                }
                _ => {}
            }
            if verify.is_some() || matches!(outcome, Outcome::Io(_)) {
                server.record(&d, Some(outcome));
            }
        });
        StreamBody::new(channel_stream(rx).map(|r| r.map(Frame::data))).boxed_unsync()
    }
}

fn show(r: &ManifestRef) -> String {
    match r {
        ManifestRef::Tag(t) => t.clone(),
        ManifestRef::Digest(d) => d.to_string(),
    }
}

/// How a read of extents ended.
enum Outcome {
    /// Everything was sent (no verification asked).
    Sent,
    /// Read whole and matched the digest (and sent, if there was a receiver).
    Matched,
    /// Read whole and did not match (the last chunk was held back).
    Mismatch(Digest),
    /// The receiver went away.
    ClientGone,
    /// The file could not be read.
    Io(std::io::Error),
}

/// Reads `len` bytes from `start` across `extents`, sending chunks to `tx` (if any); with
/// `verify`, hashes them and holds the last chunk back until the digest matches.
fn read_extents(
    extents: &[Extent],
    start: u64,
    len: u64,
    verify: Option<&Digest>,
    tx: Option<&mpsc::Sender<std::io::Result<Bytes>>>,
) -> Outcome {
    let mut hasher = verify.map(|d| Hasher::new(d.algorithm()));
    let mut held: Option<Bytes> = None;
    let mut skip = start;
    let mut left = len;
    for e in extents {
        if left == 0 {
            break;
        }
        if skip >= e.size {
            skip -= e.size;
            continue;
        }
        let file = match File::open(&e.path) {
            Ok(f) => f,
            Err(err) => return Outcome::Io(err),
        };
        let mut pos = e.offset + skip;
        let mut in_extent = (e.size - skip).min(left);
        skip = 0;
        while in_extent > 0 {
            let n = in_extent.min(CHUNK as u64) as usize;
            let mut buf = vec![0u8; n];
            if let Err(err) = file.read_exact_at(&mut buf, pos) {
                return Outcome::Io(err);
            }
            pos += n as u64;
            in_extent -= n as u64;
            left -= n as u64;
            if let Some(h) = hasher.as_mut() {
                h.update(&buf);
            }
            let chunk = Bytes::from(buf);
            let to_send = if hasher.is_some() {
                held.replace(chunk)
            } else {
                Some(chunk)
            };
            if let (Some(tx), Some(c)) = (tx, to_send)
                && tx.blocking_send(Ok(c)).is_err()
            {
                return Outcome::ClientGone;
            }
        }
    }
    if left > 0 {
        return Outcome::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "blob shorter than its extents",
        ));
    }
    let (Some(h), Some(expected)) = (hasher, verify) else {
        return Outcome::Sent;
    };
    let found = h.finish();
    if &found != expected {
        return Outcome::Mismatch(found);
    }
    if let (Some(tx), Some(c)) = (tx, held)
        && tx.blocking_send(Ok(c)).is_err()
    {
        return Outcome::ClientGone;
    }
    Outcome::Matched
}

fn channel_stream(
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
}

fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn bytes_response(status: StatusCode, bytes: Bytes) -> Response<Body> {
    let len = bytes.len();
    let mut r = Response::new(
        Full::new(bytes)
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    set(r.headers_mut(), header::CONTENT_LENGTH, &len.to_string());
    r
}

fn json(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut r = bytes_response(status, Bytes::from(body));
    set(r.headers_mut(), header::CONTENT_TYPE, "application/json");
    r
}

/// An error in the distribution spec's JSON envelope.
fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "errors": [{ "code": code, "message": message }] });
    json(status, body.to_string().into_bytes())
}

fn route_error(e: RouteError) -> Response<Body> {
    match e {
        RouteError::NotFound => error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "no such endpoint: this registry serves the distribution API under /v2/",
        ),
        RouteError::NameInvalid(n) => error(
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
            &format!("invalid repository name {n:?}"),
        ),
        RouteError::DigestInvalid(d) => error(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            &format!("invalid digest {d:?}"),
        ),
        RouteError::TagInvalid(t) => error(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            &format!("{t:?} is not a valid tag or digest"),
        ),
    }
}

fn set(h: &mut HeaderMap, name: impl header::IntoHeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

fn with_link(mut r: Response<Body>, link: Option<String>) -> Response<Body> {
    if let Some(l) = link {
        set(r.headers_mut(), header::LINK, &l);
    }
    r
}

/// A page of names and the `Link` header to the next one.
type Page<'a> = (Vec<&'a str>, Option<String>);

/// One page of a sorted list, after `last`, at most `n` long, with the `Link` to the next.
fn page<'a>(
    items: &[&'a str],
    query: Option<&str>,
    path: &str,
) -> Result<Page<'a>, Box<Response<Body>>> {
    let n = match route::query_param(query, "n") {
        None | Some("") => None,
        Some(t) => match t.parse::<usize>() {
            Ok(n) => Some(n.min(MAX_PAGE)),
            Err(_) => {
                return Err(Box::new(error(
                    StatusCode::BAD_REQUEST,
                    "PAGINATION_NUMBER_INVALID",
                    &format!("n={t:?} is not a number"),
                )));
            }
        },
    };
    let last = route::query_param(query, "last").filter(|l| !l.is_empty());
    let from = match last {
        Some(l) => items.partition_point(|x| *x <= l),
        None => 0,
    };
    let rest = &items[from..];
    let take = n.unwrap_or(rest.len()).min(rest.len()).min(MAX_PAGE);
    let out: Vec<&str> = rest[..take].to_vec();
    let link = match (n, out.last()) {
        (Some(n), Some(last)) if take < rest.len() => {
            Some(format!("<{path}?n={n}&last={last}>; rel=\"next\""))
        }
        _ => None,
    };
    Ok((out, link))
}

/// `Range: bytes=…` → `Some((start, len))`; `None` serves the whole body (no header, or a
/// form this server does not split, such as several ranges); `Err` is unsatisfiable.
fn parse_range(value: Option<&HeaderValue>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(v) = value.and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let parse = |t: &str| t.parse::<u64>().map_err(|_| ());
    let (start, end) = match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ok(None),
        (true, false) => {
            let suffix = parse(b)?;
            if suffix == 0 || size == 0 {
                return Err(());
            }
            (size.saturating_sub(suffix), size - 1)
        }
        (false, true) => (parse(a)?, size.saturating_sub(1)),
        (false, false) => {
            let (s, e) = (parse(a)?, parse(b)?);
            if e < s {
                return Ok(None);
            }
            (s, e.min(size.saturating_sub(1)))
        }
    };
    if start >= size {
        return Err(());
    }
    Ok(Some((start, end - start + 1)))
}

fn unsatisfiable(size: u64) -> Response<Body> {
    let mut r = error(
        StatusCode::RANGE_NOT_SATISFIABLE,
        "RANGE_INVALID",
        &format!("the requested range is outside the blob's {size} bytes"),
    );
    set(
        r.headers_mut(),
        header::CONTENT_RANGE,
        &format!("bytes */{size}"),
    );
    r
}

/// A manifest fetched through the blob endpoint, ranges included.
fn ranged_memory(d: &Digest, bytes: &Bytes, headers: &HeaderMap) -> Response<Body> {
    let size = bytes.len() as u64;
    let mut r = match parse_range(headers.get(header::RANGE), size) {
        Err(()) => return unsatisfiable(size),
        Ok(None) => bytes_response(StatusCode::OK, bytes.clone()),
        Ok(Some((start, len))) => {
            let (s, e) = (start as usize, (start + len) as usize);
            let mut r = bytes_response(StatusCode::PARTIAL_CONTENT, bytes.slice(s..e));
            set(
                r.headers_mut(),
                header::CONTENT_RANGE,
                &format!("bytes {start}-{}/{size}", start + len - 1),
            );
            r
        }
    };
    blob_headers(r.headers_mut(), d);
    r
}

/// What every blob response says of itself, from memory or from the archive.
fn blob_headers(h: &mut HeaderMap, d: &Digest) {
    set(h, header::CONTENT_TYPE, "application/octet-stream");
    set(h, "docker-content-digest", &d.to_string());
    set(h, header::ACCEPT_RANGES, "bytes");
    set(h, header::ETAG, &format!("\"{d}\""));
}

/// A response body that counts what it sends and logs one line when it is done or dropped.
pub struct LoggedBody {
    inner: Body,
    sent: u64,
    finished: bool,
    line: Option<LogLine>,
}

struct LogLine {
    method: Method,
    target: String,
    status: StatusCode,
    started: Instant,
    server: Arc<Server>,
}

impl HttpBody for LoggedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.sent += data.len() as u64;
                }
            }
            Poll::Ready(None) => this.finished = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        let Some(l) = self.line.take() else {
            return;
        };
        let complete = self.finished || self.inner.is_end_stream();
        let stats = &l.server.stats;
        stats.bytes.fetch_add(self.sent, Ordering::Relaxed);
        if !complete {
            stats.aborted.fetch_add(1, Ordering::Relaxed);
        }
        if l.server.log_requests {
            eprintln!(
                "{} {} {} {} B {} ms{}",
                l.method,
                l.target,
                l.status.as_u16(),
                self.sent,
                l.started.elapsed().as_millis(),
                if complete { "" } else { " (incomplete)" }
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(Some(&hv("bytes=0-3")), 10), Ok(Some((0, 4))));
        assert_eq!(parse_range(Some(&hv("bytes=5-")), 10), Ok(Some((5, 5))));
        assert_eq!(parse_range(Some(&hv("bytes=-3")), 10), Ok(Some((7, 3))));
        assert_eq!(parse_range(Some(&hv("bytes=8-100")), 10), Ok(Some((8, 2))));
        assert_eq!(parse_range(Some(&hv("bytes=10-")), 10), Err(()));
        assert_eq!(parse_range(Some(&hv("bytes=0-1,3-4")), 10), Ok(None));
        assert_eq!(parse_range(Some(&hv("bytes=x-1")), 10), Err(()));
    }

    #[test]
    fn pages() {
        let items = ["a", "b", "c", "d"];
        let (p, link) = page(&items, Some("n=2"), "/v2/x/tags/list").unwrap();
        assert_eq!(p, vec!["a", "b"]);
        assert_eq!(link.unwrap(), "</v2/x/tags/list?n=2&last=b>; rel=\"next\"");
        let (p, link) = page(&items, Some("n=2&last=b"), "/p").unwrap();
        assert_eq!(p, vec!["c", "d"]);
        assert!(link.is_none());
        let (p, _) = page(&items, None, "/p").unwrap();
        assert_eq!(p.len(), 4);
        assert!(page(&items, Some("n=x"), "/p").is_err());
    }
}
