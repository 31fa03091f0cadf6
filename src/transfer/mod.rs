//! Moving content: one graph, one engine, several places it can come from or go to.
//!
//! - [`walk`] builds a [`graph::Graph`] from a registry;
//! - [`engine`] copies a graph from any [`crate::store::Source`] into any
//!   [`crate::store::Sink`]: blobs first, manifests children-first, commit (tags) last;
//! - [`export`], [`import`] and [`copy`] are policies over it (which stores, which hooks);
//! - [`place`] decides where each manifest and blob goes at a destination registry
//!   (imgpkg's flat `--to-repo` layout, or `--to-registry` keeping paths);
//! - [`platform`] narrows a graph to some platforms (`export --platform`), deriving bundles;
//! - [`receipt`] records what an import put where, signed, for audits and delta exports.

pub mod copy;
pub mod delta;
pub mod engine;
pub mod export;
pub mod foreign;
pub use crate::graph;
pub use crate::store::place;
pub mod import;
pub mod platform;
pub mod progress;
pub mod provenance;
pub mod receipt;
pub mod referrers;
pub mod relocate;
pub mod volumes;
pub mod walk;

use crate::registry::RegistryError;

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// A registry call failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A store operation of the engine failed (which one, on which side).
    #[error(transparent)]
    Copy(Box<engine::CopyError>),
    /// A store failed outside the engine (opening, planning).
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// An archive could not be read or broke a rule of the format.
    #[error(transparent)]
    Archive(#[from] crate::archive::ArchiveError),
    /// The content graph is malformed (missing lock, bad reference, cycle, …).
    #[error("{0}")]
    Graph(String),
    /// An archive failed a check (signature, digest, completeness): nothing was published.
    #[error("verification failed: {0}")]
    Verification(String),
    /// The request does not fit the content (e.g. `-b` on a plain image).
    #[error("{0}")]
    Usage(String),
    /// Something was bigger than airlift accepts.
    #[error("{what} is {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// What.
        what: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Reading or writing a local file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// imgpkg metadata (a locations or relocations image) could not be built.
    #[error(transparent)]
    Author(#[from] crate::author::AuthorError),
    /// A manifest made or read here does not parse.
    #[error(transparent)]
    Manifest(#[from] crate::oci::ManifestError),
}

impl From<engine::CopyError> for TransferError {
    fn from(e: engine::CopyError) -> Self {
        TransferError::Copy(Box::new(e))
    }
}
