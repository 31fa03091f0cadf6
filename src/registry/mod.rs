//! Talking to OCI registries: auth, TLS, retries, streaming, over `oci-client`.
//!
//! [`Registries`] hands out one [`RegistryClient`] per host, configured once with
//! the credentials, CA certificates and protocol that host needs.

pub mod auth;
pub mod client;
pub mod error;
pub mod retry;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use client::{BlobStream, Probe, RegistryClient};
pub use error::RegistryError;
pub use retry::RetryPolicy;

/// Default idle-read timeout: long enough for a slow registry, short enough that a stalled
/// one fails the transfer in minutes rather than never.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest wait for a TCP/TLS connection to be set up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach registries: the `--registry-*` options.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Extra CA certificates (PEM files) trusted in addition to the system roots.
    pub ca_cert_paths: Vec<PathBuf>,
    /// `false` skips certificate verification (`--registry-verify-certs=false`).
    pub verify_certs: bool,
    /// Allow plain HTTP to every registry (`--registry-insecure`).
    pub insecure: bool,
    /// Retries for connection errors, 5xx and 429.
    pub retry: RetryPolicy,
    /// How long a request may wait for the next byte (`--registry-timeout`); connecting
    /// waits at most [`CONNECT_TIMEOUT`] or this, whichever is shorter.
    pub timeout: Duration,
    /// Credentials from flags.
    pub auth: auth::AuthOptions,
    /// Environment snapshot for credential lookup.
    pub env: auth::Env,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            ca_cert_paths: Vec::new(),
            verify_certs: true,
            insecure: false,
            retry: RetryPolicy::default(),
            timeout: DEFAULT_TIMEOUT,
            auth: auth::AuthOptions::default(),
            env: auth::Env::from_process(),
        }
    }
}

/// The registries one command talks to, one configured client per host.
pub struct Registries {
    opts: RegistryOptions,
    certs: Vec<Certificate>,
    direct_certs: Vec<reqwest::Certificate>,
    clients: Mutex<HashMap<String, Arc<RegistryClient>>>,
}

/// Whether docker would try plain HTTP for this host without being told (loopback).
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    name == "localhost" || name.starts_with("127.") || name == "[::1]"
}

impl Registries {
    /// Reads the CA files now, so a bad path fails before any work starts.
    pub fn new(opts: RegistryOptions) -> Result<Registries, RegistryError> {
        let mut certs = Vec::new();
        let mut direct_certs = Vec::new();
        for p in &opts.ca_cert_paths {
            let data = std::fs::read(p).map_err(|e| {
                RegistryError::Config(format!(
                    "cannot read CA certificate {} (--registry-ca-cert-path): {e}",
                    p.display()
                ))
            })?;
            if !String::from_utf8_lossy(&data).contains("-----BEGIN CERTIFICATE-----") {
                return Err(RegistryError::Config(format!(
                    "{} is not a PEM certificate (--registry-ca-cert-path)",
                    p.display()
                )));
            }
            direct_certs.push(reqwest::Certificate::from_pem(&data).map_err(|e| {
                RegistryError::Config(format!(
                    "{} is not a usable PEM certificate (--registry-ca-cert-path): {e}",
                    p.display()
                ))
            })?);
            certs.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            });
        }
        Ok(Registries {
            opts,
            certs,
            direct_certs,
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// The options in force.
    pub fn options(&self) -> &RegistryOptions {
        &self.opts
    }

    /// The client for `host`, created on first use.
    pub async fn client(&self, host: &str) -> Result<Arc<RegistryClient>, RegistryError> {
        if let Some(c) = self.lock().get(host) {
            return Ok(Arc::clone(c));
        }
        let plain = (self.opts.insecure || is_loopback_host(host)) && speaks_plain_http(host).await;
        // Credential helpers are external programs: run the lookup off the async threads.
        let (h, a, env) = (
            host.to_owned(),
            self.opts.auth.clone(),
            self.opts.env.clone(),
        );
        let resolved = tokio::task::spawn_blocking(move || auth::resolve(&h, &a, &env))
            .await
            .map_err(|e| RegistryError::Config(format!("credential lookup for {host}: {e}")))?
            .map_err(|e| RegistryError::Config(e.to_string()))?;
        install_crypto_provider();
        let config = ClientConfig {
            protocol: if plain {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            accept_invalid_certificates: !self.opts.verify_certs,
            extra_root_certificates: self.certs.clone(),
            use_monolithic_push: true,
            connect_timeout: Some(self.connect_timeout()),
            read_timeout: Some(self.opts.timeout),
            ..ClientConfig::default()
        };
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(!self.opts.verify_certs)
            .tls_certs_merge(self.direct_certs.clone())
            .connect_timeout(self.connect_timeout())
            .read_timeout(self.opts.timeout)
            .user_agent(concat!("airlift/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                RegistryError::Config(format!("cannot set up a client for {host}: {e}"))
            })?;
        let direct = client::Direct::new(
            http,
            if plain { "http" } else { "https" },
            self.opts.timeout,
        );
        let client = oci_client::Client::try_from(config).map_err(|e| {
            RegistryError::Config(format!("cannot set up a client for {host}: {e}"))
        })?;
        // oci-client only sends credentials on calls that take none (HEAD blob, uploads,
        // mounts) once some are stored for the registry. Pulls store them as a side
        // effect, but a destination's first call is a HEAD: store them up front.
        let key = oci_client::Reference::with_tag(
            host.to_owned(),
            "airlift/probe".to_owned(),
            "latest".to_owned(),
        );
        client
            .store_auth_if_needed(
                key.resolve_registry(),
                &resolved.credential.to_registry_auth(),
            )
            .await;
        let c = Arc::new(RegistryClient::new(
            host.to_owned(),
            client,
            resolved,
            self.opts.retry,
            direct,
        ));
        self.lock()
            .entry(host.to_owned())
            .or_insert_with(|| Arc::clone(&c));
        Ok(c)
    }

    fn connect_timeout(&self) -> Duration {
        CONNECT_TIMEOUT.min(self.opts.timeout)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<RegistryClient>>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Probes whether `host` answers plain HTTP (as docker falls back to for insecure registries).
///
/// Sends `GET /v2/` over bare TCP; a TLS server answers with a TLS alert or Go's
/// "HTTP request to an HTTPS server" reply, both of which count as "no".
async fn speaks_plain_http(host: &str) -> bool {
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(host).await.ok()?;
        let req = format!("GET /v2/ HTTP/1.0\r\nHost: {host}\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = vec![0u8; 512];
        let mut n = 0;
        while n < buf.len() {
            match s.read(&mut buf[n..]).await {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        Some(text.starts_with("HTTP/") && !text.contains("HTTPS server"))
    };
    tokio::time::timeout(Duration::from_secs(5), probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// reqwest and oci-client build their TLS configuration from rustls's process-wide provider
/// (the `-no-provider` features): ring, installed once before the first client.
fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Fails only when some provider is installed already, which then serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
