//! Registry errors that name the registry, repository and digest, and say what to do.

use crate::digest::{Digest, DigestError};
use crate::oci::ManifestError;

/// Something went wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// 401/403: the credentials were refused or missing.
    #[error(
        "authentication failed for {host} ({what}); credentials used: {credential_source}; looked in: {searched}. \
         Pass --registry-username/--registry-password, set AIRLIFT_REGISTRY_HOSTNAME/USERNAME/PASSWORD, or log in with docker"
    )]
    Unauthorized {
        /// Registry host.
        host: String,
        /// What was being done.
        what: String,
        /// Where the credential came from.
        credential_source: String,
        /// Where the lookup looked.
        searched: String,
    },
    /// 404: the manifest or blob is not there.
    #[error("{what} not found at {host}")]
    NotFound {
        /// Registry host.
        host: String,
        /// The reference or digest that was missing.
        what: String,
    },
    /// The server's certificate is not trusted.
    #[error(
        "TLS certificate of {host} is not trusted ({detail}); pass the registry's CA with --registry-ca-cert-path FILE \
         (or, at your own risk, --registry-verify-certs=false)"
    )]
    UntrustedCertificate {
        /// Registry host.
        host: String,
        /// The TLS error text.
        detail: String,
    },
    /// The registry could not be reached at all.
    #[error("cannot reach registry {host} ({what}): {detail}")]
    Unreachable {
        /// Registry host.
        host: String,
        /// What was being done.
        what: String,
        /// The transport error text.
        detail: String,
    },
    /// The registry went silent mid-request (`--registry-timeout`).
    #[error(
        "registry {host} sent nothing for {seconds} s during {what}; it is stalled or overloaded. \
         Try again later, check any proxy in between, or raise --registry-timeout SECONDS"
    )]
    Timeout {
        /// Registry host.
        host: String,
        /// What was being done.
        what: String,
        /// The idle timeout that expired.
        seconds: u64,
    },
    /// The registry answered with an error.
    #[error("registry {host} failed {what}: {detail}")]
    Server {
        /// Registry host.
        host: String,
        /// What was being done.
        what: String,
        /// HTTP status, when known.
        status: Option<u16>,
        /// The error text.
        detail: String,
    },
    /// Content did not match its digest.
    #[error("registry {host} served wrong content for {what}: {source}")]
    Content {
        /// Registry host.
        host: String,
        /// The reference or blob.
        what: String,
        /// The digest or size mismatch.
        source: DigestError,
    },
    /// A manifest could not be parsed.
    #[error("registry {host}: {source}")]
    Manifest {
        /// Registry host.
        host: String,
        /// The parse error.
        source: ManifestError,
    },
    /// A stream feeding an upload failed (e.g. the archive being read).
    #[error("uploading {digest} to {host}: {detail}")]
    Upload {
        /// Registry host.
        host: String,
        /// The blob.
        digest: Digest,
        /// What failed.
        detail: String,
    },
    /// A blob read into memory was larger than the caller allows.
    #[error("blob {digest} at {host} is {size} bytes, over the {limit}-byte limit for {what}")]
    TooLarge {
        /// Registry host.
        host: String,
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
        /// What the blob was read as (a config, a bundle layer).
        what: &'static str,
    },
    /// Options that cannot work (bad CA file, …).
    #[error("{0}")]
    Config(String),
}

impl RegistryError {
    /// Whether a retry might succeed (connection trouble, 5xx, 429).
    pub fn is_retryable(&self) -> bool {
        match self {
            RegistryError::Unreachable { .. } | RegistryError::Timeout { .. } => true,
            RegistryError::Server {
                status: Some(s), ..
            } => *s == 429 || *s >= 500 || *s == 408,
            _ => false,
        }
    }
}
