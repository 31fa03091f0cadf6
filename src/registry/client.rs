//! One registry host: manifests by exact bytes, blobs as verified streams, retries around every call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::HeaderValue;
use oci_client::RegistryOperation;
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use tokio::sync::mpsc;

use super::auth::Resolved;
use super::error::RegistryError;
use super::retry::RetryPolicy;
use crate::digest::{Digest, DigestError, Verifier};
use crate::oci::{Descriptor, RawManifest, media_type};
use crate::reference::Reference;

/// Upper bound for a manifest's size: larger answers are refused, not buffered.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// Chunks buffered between a blob download and its consumer (bounds memory per blob).
const BLOB_CHANNEL_CHUNKS: usize = 4;

/// Most of an error answer's body kept for the message: a hostile registry's is not buffered.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// How long a pull authorization is reused before asking the registry again (oci-client's
/// own token cache assumes 60 s when the token server does not say).
const AUTHZ_TTL: Duration = Duration::from_secs(50);

/// The cache key for an authorization that holds for the whole registry (no token flow).
const ANY_REPO: &str = "";

/// Repositories whose authorization is cached at once; the cache starts over when full.
const AUTHZ_CACHE_ENTRIES: usize = 256;

/// A client for one registry host.
pub struct RegistryClient {
    host: String,
    client: oci_client::Client,
    auth: RegistryAuth,
    resolved: Resolved,
    retry: RetryPolicy,
    direct: Direct,
}

/// The plain HTTP client (same TLS roots and timeouts as oci-client's) for the requests whose
/// body must be read with a byte limit: oci-client reads manifests whole before any check.
pub(super) struct Direct {
    /// The reqwest client.
    pub http: reqwest::Client,
    /// `http` or `https`, as decided for this host.
    pub scheme: &'static str,
    /// The idle-read timeout in force, for messages.
    pub timeout: Duration,
    /// Authorization per repository and operation, reused for [`AUTHZ_TTL`]: without it
    /// every request would first probe `/v2/` (oci-client never caches an anonymous answer).
    authz: Mutex<HashMap<(String, Op), (Authz, Instant)>>,
}

impl Direct {
    /// A direct client over `http`.
    pub fn new(http: reqwest::Client, scheme: &'static str, timeout: Duration) -> Direct {
        Direct {
            http,
            scheme,
            timeout,
            authz: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, repo: &str, op: Op) -> Option<Authz> {
        let map = self.authz.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(repo.to_owned(), op))
            .filter(|(_, at)| at.elapsed() < AUTHZ_TTL)
            .map(|(a, _)| a.clone())
    }

    fn remember(&self, repo: &str, op: Op, a: &Authz) {
        let mut map = self.authz.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= AUTHZ_CACHE_ENTRIES {
            map.clear();
        }
        map.insert((repo.to_owned(), op), (a.clone(), Instant::now()));
    }

    fn forget(&self, repo: &str, op: Op) {
        let mut map = self.authz.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&(repo.to_owned(), op));
    }
}

/// What a request needs the right to do: read, or write (a push token also reads).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Op {
    Pull,
    Push,
}

/// One direct request, before authorization.
struct Call {
    op: Op,
    method: reqwest::Method,
    target: String,
    headers: reqwest::header::HeaderMap,
    payload: Payload,
}

impl Call {
    fn new(op: Op, method: reqwest::Method, target: impl Into<String>) -> Call {
        Call {
            op,
            method,
            target: target.into(),
            headers: reqwest::header::HeaderMap::new(),
            payload: Payload::Empty,
        }
    }

    /// A manifest request: every manifest type airlift understands is acceptable.
    fn manifest(method: reqwest::Method, target: impl Into<String>) -> Call {
        Call::new(Op::Pull, method, target).header(
            reqwest::header::ACCEPT,
            HeaderValue::from_str(&media_type::ALL_MANIFESTS.join(", "))
                .unwrap_or(HeaderValue::from_static("*/*")),
        )
    }

    fn header(mut self, name: reqwest::header::HeaderName, value: HeaderValue) -> Call {
        self.headers.insert(name, value);
        self
    }

    fn body(mut self, payload: Payload) -> Call {
        self.payload = payload;
        self
    }
}

/// The body of a direct request.
enum Payload {
    Empty,
    /// Small and in memory: sent again after a refreshed authorization.
    Bytes(Bytes),
    /// Streamed once: a refused authorization is not retried with it.
    Stream(reqwest::Body),
}

/// What a direct request sends as `Authorization`.
#[derive(Clone)]
enum Authz {
    None,
    Basic(String, String),
    Bearer(String),
}

/// The bytes of one blob, verified against its digest as they arrive.
///
/// The last item is an error if the content did not match: consumers must not
/// treat the data as good until the stream has ended without error.
pub struct BlobStream {
    rx: mpsc::Receiver<Result<Bytes, RegistryError>>,
}

impl BlobStream {
    /// The next chunk, `None` at a verified end.
    pub async fn next(&mut self) -> Option<Result<Bytes, RegistryError>> {
        self.rx.recv().await
    }

    /// The chunks as an `io::Result` stream, for uploads and other async consumers.
    pub fn into_io_stream(self) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        futures::stream::unfold(self.rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|r| (r.map_err(std::io::Error::other), rx))
        })
    }

    /// A blocking `Read` over the stream, for writers that run on their own thread.
    pub fn into_blocking_reader(self) -> BlockingBlobReader {
        BlockingBlobReader {
            rx: self.rx,
            current: Bytes::new(),
            done: false,
        }
    }
}

/// A blocking reader over a [`BlobStream`]; call from a blocking thread only.
pub struct BlockingBlobReader {
    rx: mpsc::Receiver<Result<Bytes, RegistryError>>,
    current: Bytes,
    done: bool,
}

impl std::io::Read for BlockingBlobReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            if self.done {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => {
                    self.done = true;
                    return Err(std::io::Error::other(e));
                }
                None => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// What a blob download checks as the bytes pass.
enum Check {
    /// Size and sha256: the consumer may trust what the stream ends without error on.
    Digest(Box<Verifier>),
    /// Size only: for consumers that hash the bytes themselves.
    Length {
        digest: Digest,
        expected: u64,
        seen: u64,
    },
}

impl Check {
    fn update(&mut self, chunk: &[u8]) -> Result<(), DigestError> {
        match self {
            Check::Digest(v) => v.update(chunk),
            Check::Length {
                digest,
                expected,
                seen,
            } => {
                *seen += chunk.len() as u64;
                if *seen > *expected {
                    return Err(DigestError::Size {
                        digest: digest.clone(),
                        expected: *expected,
                        found: *seen,
                    });
                }
                Ok(())
            }
        }
    }

    fn seen(&self) -> u64 {
        match self {
            Check::Digest(v) => v.seen(),
            Check::Length { seen, .. } => *seen,
        }
    }

    fn finish(self) -> Result<(), DigestError> {
        match self {
            Check::Digest(v) => v.finish(),
            Check::Length {
                digest,
                expected,
                seen,
            } if seen != expected => Err(DigestError::Size {
                digest,
                expected,
                found: seen,
            }),
            Check::Length { .. } => Ok(()),
        }
    }
}

fn oci_ref(r: &Reference) -> oci_client::Reference {
    match (r.tag(), r.digest()) {
        (_, Some(d)) => oci_client::Reference::with_digest(
            r.registry().to_owned(),
            r.repository().to_owned(),
            d.to_string(),
        ),
        (Some(t), None) => oci_client::Reference::with_tag(
            r.registry().to_owned(),
            r.repository().to_owned(),
            t.to_owned(),
        ),
        (None, None) => oci_client::Reference::with_tag(
            r.registry().to_owned(),
            r.repository().to_owned(),
            "latest".to_owned(),
        ),
    }
}

fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        src = s.source();
    }
    text
}

impl RegistryClient {
    pub(super) fn new(
        host: String,
        client: oci_client::Client,
        resolved: Resolved,
        retry: RetryPolicy,
        direct: Direct,
    ) -> RegistryClient {
        let auth = resolved.credential.to_registry_auth();
        RegistryClient {
            host,
            client,
            auth,
            resolved,
            retry,
            direct,
        }
    }

    /// The host this client talks to.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Turns an oci-client error into one that names the host and says what to do.
    fn map_err(&self, what: &str, e: OciDistributionError) -> RegistryError {
        let host = self.host.clone();
        let what = what.to_owned();
        let unauthorized = |host: String, what: String| RegistryError::Unauthorized {
            host,
            what,
            credential_source: self.resolved.source.clone(),
            searched: self.resolved.searched.join(", "),
        };
        match e {
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => unauthorized(host, what),
            OciDistributionError::RegistryError { envelope, .. } => {
                let code_text = |c: &oci_client::errors::OciErrorCode| {
                    serde_json::to_string(c)
                        .unwrap_or_default()
                        .trim_matches('"')
                        .to_owned()
                };
                let codes: Vec<String> =
                    envelope.errors.iter().map(|e| code_text(&e.code)).collect();
                let detail = envelope
                    .errors
                    .iter()
                    .map(|e| format!("{}: {}", code_text(&e.code), e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                if codes.iter().any(|c| {
                    matches!(
                        c.as_str(),
                        "MANIFEST_UNKNOWN" | "BLOB_UNKNOWN" | "NAME_UNKNOWN" | "NOT_FOUND"
                    )
                }) {
                    RegistryError::NotFound { host, what }
                } else if codes.iter().any(|c| c == "UNAUTHORIZED" || c == "DENIED") {
                    unauthorized(host, what)
                } else if let Some(status) = codes.iter().find_map(|c| transient_code_status(c)) {
                    // oci-client drops the HTTP status of an error envelope; the codes that
                    // distribution sends with 429/503/500 must stay retryable.
                    RegistryError::Server {
                        host,
                        what,
                        status: Some(status),
                        detail,
                    }
                } else {
                    RegistryError::Server {
                        host,
                        what,
                        status: Some(400),
                        detail,
                    }
                }
            }
            OciDistributionError::ServerError { code, message, .. } => match code {
                404 => RegistryError::NotFound { host, what },
                401 | 403 => unauthorized(host, what),
                _ => RegistryError::Server {
                    host,
                    what,
                    status: Some(code),
                    detail: format!(
                        "HTTP {code} {}",
                        message.chars().take(300).collect::<String>()
                    ),
                },
            },
            OciDistributionError::ImageManifestNotFoundError(_) => {
                RegistryError::NotFound { host, what }
            }
            OciDistributionError::RequestError(re) if re.is_timeout() => RegistryError::Timeout {
                host,
                what,
                seconds: self.direct.timeout.as_secs(),
            },
            OciDistributionError::RequestError(re) => {
                let detail = chain_text(&re);
                let lower = detail.to_lowercase();
                // Calls without an error body (HEAD, some GETs) surface their status only here.
                let status = re.status().map(|s| s.as_u16());
                if lower.contains("certificate") || lower.contains("unknownissuer") {
                    RegistryError::UntrustedCertificate { host, detail }
                } else if matches!(status, Some(401 | 403)) {
                    unauthorized(host, what)
                } else if status == Some(404) {
                    RegistryError::NotFound { host, what }
                } else if let Some(status) = re.status() {
                    RegistryError::Server {
                        host,
                        what,
                        status: Some(status.as_u16()),
                        detail,
                    }
                } else {
                    RegistryError::Unreachable { host, what, detail }
                }
            }
            OciDistributionError::IoError(io) => RegistryError::Unreachable {
                host,
                what,
                detail: io.to_string(),
            },
            OciDistributionError::DigestError(d) => RegistryError::Server {
                host,
                what,
                status: None,
                detail: format!("content does not match its digest: {d}"),
            },
            other => RegistryError::Server {
                host,
                what,
                status: None,
                detail: other.to_string(),
            },
        }
    }

    /// Fetches a manifest or index by tag or digest, keeping its exact bytes; checks the digest when asked by digest.
    ///
    /// Read with a byte limit: an answer over [`MAX_MANIFEST_BYTES`] is refused on its
    /// `Content-Length`, or as soon as that many bytes arrived when the header lies or is absent.
    pub async fn get_manifest(&self, r: &Reference) -> Result<RawManifest, RegistryError> {
        let what = format!("manifest {r}");
        let image = oci_ref(r);
        let (bytes, header_digest) = self
            .retry
            .run(|| async {
                let resp = self
                    .send_direct(
                        &image,
                        Call::manifest(reqwest::Method::GET, manifest_url(&image)),
                        &what,
                    )
                    .await?;
                let header = content_digest(&resp);
                let body = self
                    .read_limited(resp, MAX_MANIFEST_BYTES as u64, "a manifest", &what)
                    .await?;
                Ok((body, header))
            })
            .await?;
        let m = RawManifest::from_bytes(bytes, None).map_err(|source| RegistryError::Manifest {
            host: self.host.clone(),
            source,
        })?;
        // What oci-client checked: a registry's own digest header must match the bytes.
        if let Some(h) = header_digest
            && h.algorithm() == m.digest.algorithm()
        {
            h.expect(&m.digest)
                .map_err(|source| RegistryError::Content {
                    host: self.host.clone(),
                    what: what.clone(),
                    source,
                })?;
        }
        if let Some(d) = r.digest() {
            d.expect(&m.digest)
                .map_err(|source| RegistryError::Content {
                    host: self.host.clone(),
                    what: what.clone(),
                    source,
                })?;
        }
        Ok(m)
    }

    /// Resolves a reference to its manifest digest with a HEAD request (a bounded GET
    /// when the registry sends no `Docker-Content-Digest`).
    pub async fn resolve_digest(&self, r: &Reference) -> Result<Digest, RegistryError> {
        let what = format!("manifest {r}");
        let image = oci_ref(r);
        let header = self
            .retry
            .run(|| async {
                let resp = self
                    .send_direct(
                        &image,
                        Call::manifest(reqwest::Method::HEAD, manifest_url(&image)),
                        &what,
                    )
                    .await?;
                Ok(content_digest(&resp))
            })
            .await?;
        match header {
            Some(d) => Ok(d),
            None => Ok(self.get_manifest(r).await?.digest),
        }
    }

    /// Whether a manifest exists at `r` (tag or digest).
    pub async fn manifest_exists(&self, r: &Reference) -> Result<bool, RegistryError> {
        match self.resolve_digest(r).await {
            Ok(_) => Ok(true),
            Err(RegistryError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether the repository of `repo` has the blob `digest`.
    pub async fn blob_exists(
        &self,
        repo: &Reference,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        let what = format!("blob {}@{digest}", repo.repo_name());
        let image = oci_ref(repo);
        let url = blob_url(&image, digest);
        self.retry
            .run(|| async {
                let call = Call::new(Op::Pull, reqwest::Method::HEAD, url.as_str());
                match self.send_direct(&image, call, &what).await {
                    Ok(_) => Ok(true),
                    Err(RegistryError::NotFound { .. }) => Ok(false),
                    Err(e) => Err(e),
                }
            })
            .await
    }

    /// Lists the tags of the repository of `repo`.
    pub async fn list_tags(&self, repo: &Reference) -> Result<Vec<String>, RegistryError> {
        let what = format!("tag list of {}", repo.repo_name());
        let image = oci_ref(repo);
        let resp = self
            .retry
            .run(|| async {
                self.client
                    .list_tags(&image, &self.auth, None, None)
                    .await
                    .map_err(|e| self.map_err(&what, e))
            })
            .await;
        match resp {
            Ok(t) => Ok(t.tags),
            Err(RegistryError::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// The OCI 1.1 referrers of `digest` in `repo`'s repository from the referrers API, or
    /// `None` when the registry does not serve that API (Debian's docker-registry 2.8 answers
    /// 404): the caller then falls back to the referrers tag schema.
    pub async fn referrers(
        &self,
        repo: &Reference,
        digest: &Digest,
    ) -> Result<Option<Vec<Descriptor>>, RegistryError> {
        let what = format!("referrers of {}@{digest}", repo.repo_name());
        let image = oci_ref(repo);
        let path = format!("/v2/{}/referrers/{digest}", image.repository());
        let answer = self
            .retry
            .run(|| async {
                let resp = self
                    .send_direct(
                        &image,
                        Call::manifest(reqwest::Method::GET, path.as_str()),
                        &what,
                    )
                    .await?;
                let status = resp.status().as_u16();
                let body = self
                    .read_limited(resp, MAX_MANIFEST_BYTES as u64, "a referrers list", &what)
                    .await?;
                Ok((status, body))
            })
            .await;
        let (status, body) = match answer {
            Ok(a) => a,
            Err(RegistryError::NotFound { .. }) => return Ok(None),
            // Registries without the route answer these too (unsupported, method not allowed).
            Err(RegistryError::Server {
                status: Some(400 | 405 | 406 | 501),
                ..
            }) => return Ok(None),
            Err(e) => return Err(e),
        };
        if !crate::referrers::api_supported(status, &body) {
            return Ok(None);
        }
        #[derive(serde::Deserialize)]
        struct List {
            manifests: Vec<Descriptor>,
        }
        serde_json::from_slice::<List>(&body)
            .map(|l| Some(l.manifests))
            .map_err(|e| RegistryError::Server {
                host: self.host.clone(),
                what,
                status: Some(status),
                detail: format!("the referrers list does not parse: {e}"),
            })
    }

    /// Streams a blob, verifying size and digest, resuming with HTTP Range after a broken connection.
    pub fn get_blob(self: &Arc<Self>, repo: &Reference, desc: &Descriptor) -> BlobStream {
        self.spawn_pump(repo, desc, true)
    }

    /// Like [`RegistryClient::get_blob`] but checking only the length, for a consumer that
    /// hashes every byte itself and rejects a mismatch (the archive writer does): one sha256
    /// pass per byte instead of two.
    pub fn get_blob_length_checked(
        self: &Arc<Self>,
        repo: &Reference,
        desc: &Descriptor,
    ) -> BlobStream {
        self.spawn_pump(repo, desc, false)
    }

    fn spawn_pump(self: &Arc<Self>, repo: &Reference, desc: &Descriptor, hash: bool) -> BlobStream {
        let (tx, rx) = mpsc::channel(BLOB_CHANNEL_CHUNKS);
        let this = Arc::clone(self);
        let repo = repo.clone();
        let desc = desc.clone();
        tokio::spawn(async move {
            if let Err(e) = this.pump_blob(&repo, &desc, hash, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        BlobStream { rx }
    }

    /// Reads a small blob (a config, a bundle layer) into memory, refusing anything over `limit`.
    pub async fn read_small_blob(
        self: &Arc<Self>,
        repo: &Reference,
        desc: &Descriptor,
        limit: u64,
    ) -> Result<Bytes, RegistryError> {
        let too_large = |size| RegistryError::TooLarge {
            host: self.host.clone(),
            digest: desc.digest.clone(),
            size,
            limit,
            what: "a small blob (config or metadata layer)",
        };
        if desc.size > limit {
            return Err(too_large(desc.size));
        }
        let what = format!("blob {}@{}", repo.repo_name(), desc.digest);
        let image = oci_ref(repo);
        let url = blob_url(&image, &desc.digest);
        let body = self
            .retry
            .run(|| async {
                let resp = self
                    .send_direct(
                        &image,
                        Call::new(Op::Pull, reqwest::Method::GET, url.as_str()),
                        &what,
                    )
                    .await?;
                self.read_limited(
                    resp,
                    desc.size,
                    "a small blob (config or metadata layer)",
                    &what,
                )
                .await
            })
            .await?;
        let mut v = Verifier::new(desc.digest.clone(), Some(desc.size));
        v.update(&body)
            .and_then(|()| v.finish())
            .map_err(|source| RegistryError::Content {
                host: self.host.clone(),
                what,
                source,
            })?;
        Ok(body)
    }

    async fn pump_blob(
        &self,
        repo: &Reference,
        desc: &Descriptor,
        hash: bool,
        tx: &mpsc::Sender<Result<Bytes, RegistryError>>,
    ) -> Result<(), RegistryError> {
        let what = format!("blob {}@{}", repo.repo_name(), desc.digest);
        let image = oci_ref(repo);
        let url = blob_url(&image, &desc.digest);
        let mut verifier = if hash {
            Check::Digest(Box::new(Verifier::new(
                desc.digest.clone(),
                Some(desc.size),
            )))
        } else {
            Check::Length {
                digest: desc.digest.clone(),
                expected: desc.size,
                seen: 0,
            }
        };
        let mut attempt = 0u32;
        loop {
            let offset = verifier.seen();
            // A resumed download asks for the rest only; `verifier` hashes every byte once.
            let call = Call::new(Op::Pull, reqwest::Method::GET, url.as_str());
            let call = if offset > 0 {
                match HeaderValue::from_str(&format!("bytes={offset}-")) {
                    Ok(v) => call.header(reqwest::header::RANGE, v),
                    Err(_) => call,
                }
            } else {
                call
            };
            let opened = self.send_direct(&image, call, &what).await.map(|resp| {
                // The registry ignored Range (200, not 206): skip what we already have.
                let skip = if resp.status() == reqwest::StatusCode::PARTIAL_CONTENT {
                    0
                } else {
                    offset
                };
                (resp.bytes_stream(), skip)
            });
            let failure = match opened {
                Err(e) => e,
                Ok((mut stream, mut skip)) => {
                    let mut failure = None;
                    let mut last: Option<Bytes> = None;
                    while let Some(item) = stream.next().await {
                        match item {
                            Ok(mut chunk) => {
                                if skip > 0 {
                                    let n = (skip as usize).min(chunk.len());
                                    let _ = chunk.split_to(n);
                                    skip -= n as u64;
                                    if chunk.is_empty() {
                                        continue;
                                    }
                                }
                                verifier.update(&chunk).map_err(|source| {
                                    RegistryError::Content {
                                        host: self.host.clone(),
                                        what: what.clone(),
                                        source,
                                    }
                                })?;
                                if verifier.seen() == desc.size {
                                    // Held back until the digest is checked, so no consumer
                                    // (e.g. an upload with a known length) ever gets the
                                    // complete bytes of wrong content.
                                    last = Some(chunk);
                                    continue;
                                }
                                if tx.send(Ok(chunk)).await.is_err() {
                                    return Ok(()); // consumer gone
                                }
                            }
                            Err(e) => {
                                let text = chain_text(&e);
                                failure = Some(if e.is_timeout() || text.contains("timed out") {
                                    RegistryError::Timeout {
                                        host: self.host.clone(),
                                        what: what.clone(),
                                        seconds: self.direct.timeout.as_secs(),
                                    }
                                } else {
                                    RegistryError::Unreachable {
                                        host: self.host.clone(),
                                        what: what.clone(),
                                        detail: text,
                                    }
                                });
                                break;
                            }
                        }
                    }
                    match failure {
                        None if verifier.seen() == desc.size => {
                            // Worded like oci-client's own check that used to catch this first.
                            verifier.finish().map_err(|source| RegistryError::Server {
                                host: self.host.clone(),
                                what,
                                status: None,
                                detail: format!("content does not match {}: {source}", desc.digest),
                            })?;
                            if let Some(chunk) = last {
                                let _ = tx.send(Ok(chunk)).await;
                            }
                            return Ok(());
                        }
                        None => RegistryError::Unreachable {
                            host: self.host.clone(),
                            what: what.clone(),
                            detail: format!(
                                "connection ended after {} of {} bytes",
                                verifier.seen(),
                                desc.size
                            ),
                        },
                        Some(f) => f,
                    }
                }
            };
            if !failure.is_retryable() || attempt >= self.retry.retries {
                return Err(failure);
            }
            tokio::time::sleep(self.retry.delay(attempt)).await;
            attempt += 1;
        }
    }

    /// The `Authorization` for `op` on `image`'s repository, from oci-client's auth flow.
    async fn authorize(
        &self,
        image: &oci_client::Reference,
        op: Op,
    ) -> Result<Authz, RegistryError> {
        let repo = image.repository().to_owned();
        if let Some(a) = self
            .direct
            .cached(&repo, op)
            .or_else(|| self.direct.cached(ANY_REPO, op))
        {
            return Ok(a);
        }
        let a = match &self.auth {
            RegistryAuth::Bearer(t) => Authz::Bearer(t.clone()),
            auth => {
                let operation = match op {
                    Op::Pull => RegistryOperation::Pull,
                    Op::Push => RegistryOperation::Push,
                };
                let token = self
                    .client
                    .auth(image, auth, operation)
                    .await
                    .map_err(|e| self.map_err(&format!("authorization for {repo}"), e))?;
                match (token, auth) {
                    (Some(t), _) => Authz::Bearer(t),
                    (None, RegistryAuth::Basic(u, p)) => Authz::Basic(u.clone(), p.clone()),
                    (None, _) => Authz::None,
                }
            }
        };
        match a {
            Authz::Bearer(_) => self.direct.remember(&repo, op, &a),
            // No token flow: the same answer holds for every repository and operation.
            _ => {
                self.direct.remember(ANY_REPO, Op::Pull, &a);
                self.direct.remember(ANY_REPO, Op::Push, &a);
            }
        }
        Ok(a)
    }

    /// Sends one request (`target` is a path on this registry or an absolute upload
    /// location) with `op`'s authorization; a non-success answer becomes an error (its body
    /// read only up to [`MAX_ERROR_BODY`]).
    async fn send_direct(
        &self,
        image: &oci_client::Reference,
        call: Call,
        what: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        let Call {
            op,
            method,
            target,
            headers,
            payload,
        } = call;
        let registry = image.resolve_registry();
        let url = if target.starts_with('/') {
            format!("{}://{registry}{target}", self.direct.scheme)
        } else {
            target.to_owned()
        };
        // Credentials go to this registry only, never to a host an upload location names.
        let ours = reqwest::Url::parse(&url)
            .ok()
            .is_some_and(|u| u.authority() == registry);
        let mut payload = Some(payload);
        let mut refreshed = false;
        loop {
            let authz = if ours {
                self.authorize(image, op).await?
            } else {
                Authz::None
            };
            let req = self
                .direct
                .http
                .request(method.clone(), &url)
                .headers(headers.clone());
            let req = match &authz {
                Authz::None => req,
                Authz::Basic(u, p) => req.basic_auth(u, Some(p)),
                Authz::Bearer(t) => req.bearer_auth(t),
            };
            let (req, resendable) = match payload.take() {
                None | Some(Payload::Empty) => (req, true),
                Some(Payload::Bytes(b)) => {
                    payload = Some(Payload::Bytes(b.clone()));
                    (req.body(b), true)
                }
                Some(Payload::Stream(body)) => (req.body(body), false),
            };
            let resp = req
                .send()
                .await
                .map_err(|e| self.map_err(what, OciDistributionError::RequestError(e)))?;
            let status = resp.status();
            if status.is_success() {
                return Ok(resp);
            }
            if status.as_u16() == 401 && ours {
                // A cached token may have expired: ask once more before calling it refused.
                self.direct.forget(image.repository(), op);
                self.direct.forget(ANY_REPO, op);
                if !refreshed && resendable {
                    refreshed = true;
                    continue;
                }
            }
            let body = self.read_error_body(resp).await;
            let e = match serde_json::from_slice::<oci_client::errors::OciEnvelope>(&body) {
                // Only a client error's envelope: 5xx/429 keep their status (and stay retryable).
                Ok(envelope)
                    if !envelope.errors.is_empty()
                        && status.is_client_error()
                        && !matches!(status.as_u16(), 404 | 408 | 429) =>
                {
                    OciDistributionError::RegistryError { envelope, url }
                }
                _ => OciDistributionError::ServerError {
                    code: status.as_u16(),
                    url,
                    message: String::from_utf8_lossy(&body).into_owned(),
                },
            };
            return Err(self.map_err(what, e));
        }
    }

    /// At most [`MAX_ERROR_BODY`] bytes of an error answer; transport errors end it early.
    async fn read_error_body(&self, mut resp: reqwest::Response) -> Vec<u8> {
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            let room = MAX_ERROR_BODY - body.len();
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if body.len() >= MAX_ERROR_BODY {
                break;
            }
        }
        body
    }

    /// Reads a body of at most `limit` bytes: refused on `Content-Length` before reading,
    /// and after `limit` bytes whatever the header said.
    async fn read_limited(
        &self,
        mut resp: reqwest::Response,
        limit: u64,
        kind: &str,
        what: &str,
    ) -> Result<Bytes, RegistryError> {
        let too_large = |size: String| RegistryError::Server {
            host: self.host.clone(),
            what: what.to_owned(),
            status: None,
            detail: format!(
                "answer of {size} bytes exceeds the {limit}-byte limit for {kind}; refusing to read it"
            ),
        };
        if let Some(n) = resp.content_length()
            && n > limit
        {
            return Err(too_large(n.to_string()));
        }
        let mut buf = Vec::with_capacity(resp.content_length().unwrap_or(0) as usize);
        loop {
            let chunk = resp
                .chunk()
                .await
                .map_err(|e| self.map_err(what, OciDistributionError::RequestError(e)))?;
            let Some(chunk) = chunk else { break };
            if (buf.len() + chunk.len()) as u64 > limit {
                return Err(too_large(format!("more than {limit}")));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(buf))
    }

    /// Uploads a blob in one streamed PUT; `open` gives a fresh stream for each attempt.
    pub async fn put_blob<S, F, Fut>(
        &self,
        repo: &Reference,
        desc: &Descriptor,
        open: F,
    ) -> Result<(), RegistryError>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::io::Result<S>>,
    {
        self.put_blob_in(repo, desc, None, open).await
    }

    /// [`Self::put_blob`] into an upload `session` a [`Self::probe_blob`] already opened;
    /// a session the registry no longer knows is replaced by a fresh one.
    pub async fn put_blob_in<S, F, Fut>(
        &self,
        repo: &Reference,
        desc: &Descriptor,
        mut session: Option<reqwest::Url>,
        mut open: F,
    ) -> Result<(), RegistryError>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::io::Result<S>>,
    {
        let what = format!("upload of blob {} to {}", desc.digest, repo.repo_name());
        let image = oci_ref(repo);
        let open = &mut open;
        let mut attempt = 0u32;
        loop {
            let opened = session.take();
            let reused = opened.is_some();
            let stream = open().await.map_err(|e| RegistryError::Upload {
                host: self.host.clone(),
                digest: desc.digest.clone(),
                detail: e.to_string(),
            })?;
            // Remember whether our own stream failed (wrong content at the source, a bad
            // archive): that is final, not the destination's fault, and not worth a retry.
            // Matching the error text is not enough: the source's wording varies.
            let source_failure = Arc::new(std::sync::Mutex::new(None::<String>));
            let seen = Arc::clone(&source_failure);
            let stream = stream.map(move |r| {
                r.inspect_err(|e| {
                    if let Ok(mut slot) = seen.lock() {
                        slot.get_or_insert_with(|| e.to_string());
                    }
                })
            });
            let result = self
                .upload_once(
                    &image,
                    desc,
                    opened,
                    reqwest::Body::wrap_stream(stream),
                    &what,
                )
                .await
                .map_err(|e| {
                    let from_source = source_failure.lock().ok().and_then(|mut s| s.take());
                    match from_source {
                        Some(detail) => RegistryError::Upload {
                            host: self.host.clone(),
                            digest: desc.digest.clone(),
                            detail,
                        },
                        None => e,
                    }
                });
            match result {
                Ok(()) => return Ok(()),
                // The probe's session expired or was purged: open a new one, once.
                Err(RegistryError::NotFound { .. }) if reused => {}
                Err(e) if e.is_retryable() && attempt < self.retry.retries => {
                    tokio::time::sleep(self.retry.delay(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One monolithic upload: open a session (unless one is given), then PUT the whole body
    /// to its location.
    async fn upload_once(
        &self,
        image: &oci_client::Reference,
        desc: &Descriptor,
        session: Option<reqwest::Url>,
        body: reqwest::Body,
        what: &str,
    ) -> Result<(), RegistryError> {
        let mut location = match session {
            Some(url) => url,
            None => {
                // Some registries insist on a length even for the empty body that opens a session.
                let open = Call::new(Op::Push, reqwest::Method::POST, uploads_url(image)).header(
                    reqwest::header::CONTENT_LENGTH,
                    HeaderValue::from_static("0"),
                );
                let resp = self.send_direct(image, open, what).await?;
                self.location(&resp, what)?
            }
        };
        location
            .query_pairs_mut()
            .append_pair("digest", &desc.digest.to_string());
        let put = Call::new(Op::Push, reqwest::Method::PUT, location.as_str())
            .header(
                reqwest::header::CONTENT_LENGTH,
                HeaderValue::from(desc.size),
            )
            .header(
                reqwest::header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            )
            .body(Payload::Stream(body));
        self.send_direct(image, put, what).await.map(|_| ())
    }

    /// The upload session's `Location`, resolved against the request (it may be relative).
    fn location(
        &self,
        resp: &reqwest::Response,
        what: &str,
    ) -> Result<reqwest::Url, RegistryError> {
        resp.headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|l| resp.url().join(l).ok())
            .ok_or_else(|| RegistryError::Server {
                host: self.host.clone(),
                what: what.to_owned(),
                status: Some(resp.status().as_u16()),
                detail: "the registry opened an upload without a usable Location header".into(),
            })
    }

    /// Asks `repo` to mount `digest` from itself: one request instead of two (HEAD, then the
    /// POST that opens an upload) says whether it holds the blob, and opens the upload when it
    /// does not. A registry that answers anything but 201 or 202 gets an error: ask by HEAD.
    pub async fn probe_blob(
        &self,
        repo: &Reference,
        digest: &Digest,
    ) -> Result<Probe, RegistryError> {
        let what = format!("existence probe of blob {digest} in {}", repo.repo_name());
        let resp = self.post_mount(repo, repo, digest, &what).await?;
        match resp.status() {
            reqwest::StatusCode::CREATED => Ok(Probe::Present),
            reqwest::StatusCode::ACCEPTED => Ok(Probe::Absent(self.location(&resp, &what)?)),
            other => Err(RegistryError::Server {
                host: self.host.clone(),
                what,
                status: Some(other.as_u16()),
                detail: "neither a mount (201) nor an upload session (202)".into(),
            }),
        }
    }

    /// Asks the registry to mount `digest` from another repository; false when it would not.
    pub async fn mount_blob(&self, repo: &Reference, from: &Reference, digest: &Digest) -> bool {
        let what = format!("mount of blob {digest} into {}", repo.repo_name());
        // 201 is a mount; 202 means the registry opened an ordinary upload instead.
        matches!(
            self.post_mount(repo, from, digest, &what).await,
            Ok(resp) if resp.status() == reqwest::StatusCode::CREATED
        )
    }

    /// `POST …/blobs/uploads/?mount=DIGEST&from=REPO` into `repo`'s repository.
    async fn post_mount(
        &self,
        repo: &Reference,
        from: &Reference,
        digest: &Digest,
        what: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        let image = oci_ref(repo);
        // Repository names and digests need no escaping (their grammar has no `&`, `=`, `%`).
        let target = format!(
            "{}?mount={digest}&from={}",
            uploads_url(&image),
            from.repository()
        );
        let call = Call::new(Op::Push, reqwest::Method::POST, target).header(
            reqwest::header::CONTENT_LENGTH,
            HeaderValue::from_static("0"),
        );
        self.send_direct(&image, call, what).await
    }

    /// Pushes a manifest with its exact bytes and media type, at `r`'s tag or digest.
    pub async fn put_manifest(&self, r: &Reference, m: &RawManifest) -> Result<(), RegistryError> {
        let what = format!("push of manifest {} as {r}", m.digest);
        let image = oci_ref(r);
        let ct = HeaderValue::from_str(&m.media_type).map_err(|e| RegistryError::Server {
            host: self.host.clone(),
            what: what.clone(),
            status: None,
            detail: e.to_string(),
        })?;
        self.retry
            .run(|| async {
                let call = Call::new(Op::Push, reqwest::Method::PUT, manifest_url(&image))
                    .header(reqwest::header::CONTENT_TYPE, ct.clone())
                    .body(Payload::Bytes(m.bytes.clone()));
                self.send_direct(&image, call, &what).await.map(|_| ())
            })
            .await
    }
}

/// What [`RegistryClient::probe_blob`] found.
#[derive(Debug)]
pub enum Probe {
    /// The repository holds the blob.
    Present,
    /// It does not; an upload session is open at this location.
    Absent(reqwest::Url),
}

/// `/v2/<repo>/manifests/<tag or digest>`, as oci-client builds it.
fn manifest_url(image: &oci_client::Reference) -> String {
    let target = match image.digest() {
        Some(d) => d,
        None => image.tag().unwrap_or("latest"),
    };
    format!("/v2/{}/manifests/{target}", image.repository())
}

/// `/v2/<repo>/blobs/uploads/`, where an upload session (or a mount) starts.
fn uploads_url(image: &oci_client::Reference) -> String {
    format!("/v2/{}/blobs/uploads/", image.repository())
}

/// `/v2/<repo>/blobs/<digest>`.
fn blob_url(image: &oci_client::Reference, digest: &Digest) -> String {
    format!("/v2/{}/blobs/{digest}", image.repository())
}

/// The registry's `Docker-Content-Digest`, when it sent a well-formed one.
fn content_digest(resp: &reqwest::Response) -> Option<Digest> {
    resp.headers()
        .get("docker-content-digest")?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The HTTP status that distribution pairs with a transient error code (its `errcode`
/// table), so that an error envelope whose status oci-client dropped is still retried.
fn transient_code_status(code: &str) -> Option<u16> {
    match code {
        "TOOMANYREQUESTS" => Some(429),
        "UNAVAILABLE" => Some(503),
        "UNKNOWN" => Some(500),
        _ => None,
    }
}
