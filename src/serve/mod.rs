//! `airlift serve`: a read-only OCI registry straight from verified archives, in place.
//!
//! The archives are opened as stores under the same signature and archive rules as `import`
//! ([`crate::store::archive`]); [`catalog`] builds one namespace from them and refuses every
//! conflict at startup; [`http`] answers the distribution API's pull and discovery endpoints;
//! [`listener`] binds, limits, speaks TLS and shuts down gracefully.

pub mod auth;
pub mod catalog;
pub mod http;
pub mod listener;
pub mod route;

/// Why `serve` could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// An archive could not be opened, or failed its checks.
    #[error("{0}")]
    Archive(String),
    /// Two sources would give one name or tag different content.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The options do not fit the archives or files given.
    #[error("{0}")]
    Usage(String),
    /// The listener or a file could not be used.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TLS setup failed.
    #[error("TLS: {0}")]
    Tls(String),
}
