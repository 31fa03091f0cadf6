//! Places content lives, behind two small traits keyed by descriptor.
//!
//! A [`Source`] hands out blobs as verified streams; a [`Sink`] takes blobs and manifests and
//! makes them addressable only at [`Sink::commit`]. Each store is scoped by construction (a
//! registry store knows the graph's repositories and the destination's placement; an archive
//! store knows its files), so the one engine in [`crate::transfer::engine`] moves content
//! between any two of them without knowing which.
//!
//! - [`registry`]: registries as a source (the graph's repositories) and as a sink (a
//!   placement: `--to-repo`, `--to-registry`; cross-repository mounts live here);
//! - [`archive`]: an airlift archive being read: random access into plain tar files by offset,
//!   one sequential pass for zstd, and volume sets;
//! - [`writer`]: an airlift archive being written: an ordered sink that dictates the order it
//!   accepts blobs in; commit = flush, fsync, rename, checksums;
//! - [`foreign`]: other tools' archives (OCI layouts, `docker save`, imgpkg tars) as sources;
//! - [`memory`]: an in-memory store, for tests of the engine.

pub mod archive;
pub mod foreign;
pub mod memory;
pub mod place;
pub mod registry;
pub mod writer;

use std::future::Future;

use bytes::Bytes;
use futures::stream::BoxStream;

use crate::archive::ArchiveError;
use crate::digest::Digest;
use crate::oci::{Descriptor, RawManifest};
use crate::reference::Reference;
use crate::registry::RegistryError;

/// A stream of blob bytes; the last item is an error if the content did not verify.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A registry call failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// An archive could not be read or written, or broke a rule of the format.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// Another tool's archive could not be read, or broke a rule of safe reading.
    #[error(transparent)]
    Foreign(#[from] foreign::ForeignError),
    /// A local file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, on which file.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A background task panicked or was cancelled.
    #[error("background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// The store does not hold this content.
    #[error("{0} is not in this store")]
    NotFound(Digest),
    /// The store cannot do this (order, capability), and says why.
    #[error("{0}")]
    Refused(String),
    /// Content failed a check (signature, digest, completeness): nothing may be published.
    #[error("verification failed: {0}")]
    Verification(String),
    /// The request does not fit the content or the store (a usage error).
    #[error("{0}")]
    Usage(String),
}

impl StoreError {
    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
        let context = context.into();
        move |source| StoreError::Io { context, source }
    }
}

/// Receives progress; the CLI draws it, the library only counts.
pub trait Reporter: Send + Sync {
    /// Bytes of blob content moved (or verified and skipped).
    fn bytes(&self, n: u64);
    /// One blob finished.
    fn blob_done(&self);
}

/// A reporter that shows nothing.
pub struct Silent;

impl Reporter for Silent {
    fn bytes(&self, _: u64) {}
    fn blob_done(&self) {}
}

/// What a sink did with a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pushed {
    /// Bytes uploaded (summed over every destination repository).
    pub uploaded: u64,
    /// Destination repositories that received it by upload.
    pub uploads: u32,
    /// Destination repositories that received it by cross-repository mount.
    pub mounts: u32,
    /// Destination repositories that already had it.
    pub present: u32,
}

/// A place blobs can be read from.
pub trait Source: Send + Sync {
    /// Opens a blob as a stream verified against `desc`.
    fn fetch(
        &self,
        desc: &Descriptor,
    ) -> impl Future<Output = Result<ByteStream, StoreError>> + Send;

    /// Where the blob lives in a registry, so that a sink on the same registry can mount it.
    fn location(&self, _digest: &Digest) -> Option<Reference> {
        None
    }

    /// The only order blobs can be fetched in (one pass over a compressed archive); `None`
    /// when any order works.
    fn fixed_order(&self) -> Option<Vec<Digest>> {
        None
    }

    /// Confirms, once every blob was fetched or passed over, that the source held exactly
    /// what it promised (a sequential pass ends cleanly, nothing missing, nothing extra).
    fn finish(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        async { Ok(()) }
    }
}

/// A place blobs and manifests can be written to; nothing is addressable before `commit`.
pub trait Sink: Send + Sync {
    /// Whether the sink already holds the blob everywhere it must be; `from` is as for
    /// [`Sink::push_blob`], which follows at once when it does not.
    fn exists(
        &self,
        desc: &Descriptor,
        from: Option<&Reference>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Stores a blob, reading it from `open` (called again if an upload must restart);
    /// `from` is the blob's registry location at the source, for a cross-repository mount.
    fn push_blob<F, Fut>(
        &self,
        desc: &Descriptor,
        from: Option<&Reference>,
        open: F,
    ) -> impl Future<Output = Result<Pushed, StoreError>> + Send
    where
        F: Fn() -> Fut + Send + Sync,
        Fut: Future<Output = Result<ByteStream, StoreError>> + Send;

    /// Stores a manifest (its children are already in); true if it was not there before.
    fn push_manifest(
        &self,
        manifest: &RawManifest,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Makes the content addressable (tags, rename into place); returns what was named.
    fn commit(&self) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// The order the sink accepts blobs in (an archive being written); `None` when any order
    /// works. Blobs it does not list are not wanted.
    fn order(&self) -> Option<Vec<Digest>> {
        None
    }
}
