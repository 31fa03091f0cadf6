//! The airlift archive format v1: an OCI image layout in a signed, deterministic tar.
//!
//! The archive is what crosses the air gap, so it is a public contract, specified in
//! `format-spec/archive-v1.md`. This module holds the synchronous code that writes, reads
//! and verifies it; the graph walks that decide *what* goes in live in `transfer`.
//!
//! - [`manifest`]: the signed airlift manifest (model, canonical JSON, `index.json` helper);
//! - [`writer`]: [`ArchiveWriter`], streaming, atomic (`PATH.partial` then rename);
//! - [`sums`]: the whole-file checksums, computed while writing;
//! - [`reader`]: [`ArchiveReader`] (one streaming pass) and [`BlobIndex`] (random access);
//! - [`verify`]: the offline verification algorithm and its [`Report`];
//! - [`inspect`]: what an archive holds, from its header and manifest blobs only.

pub mod check;
mod hashers;
pub mod inspect;
pub mod manifest;
pub mod plan;
pub mod reader;
pub mod sums;
mod tar;
pub mod verify;
pub mod writer;

use std::io;

use crate::digest::{Digest, DigestError};
use crate::keys::KeyError;

pub use check::{Closure, EntryRules, Failure, FailureKind};
pub use manifest::{
    BaseRef, BlobEntry, BlobPart, BlobTableBuilder, BundleLock, IndexEntry, IndexRef, LockedImage,
    Manifest, PlannedEntry, Role, Root, RootKind, VolumeSet,
};
pub use manifest::{canonical_json, creation_time, oci_index_json, rfc3339};
pub use reader::{ArchiveHeader, ArchiveReader, BlobIndex, BlobReader};
pub use sums::FileSums;
pub use verify::{Report, VerifyOptions, verify};
pub use writer::{ArchiveWriter, WriteOptions, sign_manifest};

/// Entry name of the OCI layout marker.
pub const OCI_LAYOUT: &str = "oci-layout";
/// Exact content of the `oci-layout` entry.
pub const OCI_LAYOUT_CONTENT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// Entry name of the signed airlift manifest.
pub const MANIFEST_ENTRY: &str = "airlift/manifest.json";
/// Directory of signature entries.
pub const SIGNATURES_DIR: &str = "airlift/signatures/";
/// Entry name of the OCI index.
pub const INDEX_JSON: &str = "index.json";
/// Entry name of the (unsigned) volume record, right after `index.json` in a volume set.
pub const VOLUME_ENTRY: &str = "airlift/volume.json";
/// Largest accepted `airlift/volume.json`.
pub const MAX_VOLUME_RECORD: u64 = 4096;
/// Largest accepted airlift manifest.
pub const MAX_MANIFEST: u64 = 64 << 20;
/// Largest accepted `index.json`, and largest manifest/index blob parsed by verify.
pub const MAX_INDEX: u64 = 16 << 20;
/// Largest accepted `oci-layout`.
pub const MAX_OCI_LAYOUT: u64 = 4096;
/// zstd frame magic: how readers tell a compressed archive.
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Why an archive could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// An I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done (and on which file).
        context: String,
        /// The I/O error.
        source: io::Error,
    },
    /// The tar stream ends before its end-of-archive marker or inside an entry.
    #[error("archive truncated at byte offset {offset}")]
    Truncated {
        /// Offset (in the uncompressed tar stream) where data ran out.
        offset: u64,
    },
    /// A tar header that is not a valid ustar header.
    #[error("invalid tar header at byte offset {offset}: {reason}")]
    BadHeader {
        /// Offset of the header in the uncompressed tar stream.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An entry name not allowed by the format (`..`, absolute, unknown, bad digest).
    #[error("entry {name:?}: name not allowed: {reason}")]
    BadEntryName {
        /// The name as found.
        name: String,
        /// Why it is refused.
        reason: String,
    },
    /// An entry that is not a regular file (link, directory, device, FIFO, pax, ...).
    #[error("entry {name:?}: {kind} entries are not allowed (regular files only)")]
    BadEntryType {
        /// The entry name.
        name: String,
        /// What kind of entry it is.
        kind: String,
    },
    /// The same name twice.
    #[error("entry {name:?} appears twice")]
    Duplicate {
        /// The entry name.
        name: String,
    },
    /// An entry out of the order the format prescribes.
    #[error("entry {name:?} out of order: expected {expected}")]
    Order {
        /// The entry found.
        name: String,
        /// What should have come.
        expected: String,
    },
    /// An entry larger than its limit.
    #[error("entry {name:?} is {size} bytes, limit {limit}")]
    TooLarge {
        /// The entry name.
        name: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A blob entry that the airlift manifest does not list.
    #[error("entry {name:?} is not listed in the airlift manifest")]
    Unlisted {
        /// The entry name.
        name: String,
    },
    /// Entries the signed manifest places in a file that the file does not hold.
    #[error("{file}: {count} entr(ies) listed in the airlift manifest are missing: {}", first.join(", "))]
    Missing {
        /// The archive or volume file.
        file: String,
        /// How many are missing.
        count: usize,
        /// The first few entry names.
        first: Vec<String>,
    },
    /// A blob whose tar size differs from the manifest's.
    #[error("blob {digest}: size {found} in the tar, {expected} in the manifest")]
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// The manifest's size.
        expected: u64,
        /// The tar entry's size.
        found: u64,
    },
    /// Content that does not hash to its digest.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// JSON that does not parse.
    #[error("{name}: invalid JSON: {source}")]
    Json {
        /// The entry concerned.
        name: String,
        /// The parse error.
        source: serde_json::Error,
    },
    /// Content that parses but breaks a rule of the format.
    #[error("{name}: {reason}")]
    Invalid {
        /// The entry concerned.
        name: String,
        /// The rule broken.
        reason: String,
    },
    /// A format name, version or feature this reader does not implement.
    #[error("unsupported archive: {0}")]
    Unsupported(String),
    /// The signed `expires` time has passed.
    #[error(
        "archive expired at {expires} (the `expires` time its publisher signed); get a newer \
         archive, or pass --allow-expired to accept this one anyway"
    )]
    Expired {
        /// The `expires` value.
        expires: String,
    },
    /// Random access was asked of a compressed archive.
    #[error("{0}: random access needs an uncompressed archive (this one is zstd-compressed)")]
    NotSeekable(String),
    /// The writer was used out of sequence, or given blobs not in the manifest's order.
    #[error("archive writer: {0}")]
    Usage(String),
    /// A key or signature problem.
    #[error(transparent)]
    Key(#[from] KeyError),
}

impl ArchiveError {
    /// Whether the tar stream itself is broken, so no further entry can be read.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            ArchiveError::Io { .. }
                | ArchiveError::Truncated { .. }
                | ArchiveError::BadHeader { .. }
        )
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> ArchiveError {
        let context = context.into();
        move |source| ArchiveError::Io { context, source }
    }
}

/// What an entry name means, once validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryName {
    /// `oci-layout`.
    OciLayout,
    /// `airlift/manifest.json`.
    Manifest,
    /// `airlift/signatures/<fingerprint>.sig`.
    Signature(String),
    /// `index.json`.
    IndexJson,
    /// `airlift/volume.json`.
    Volume,
    /// `blobs/<alg>/<hex>`.
    Blob(Digest),
    /// `blobs/<alg>/<hex>.part-NNNN-of-MMMM`: part `n` of `count` of a split blob.
    Part(Digest, u32, u32),
}

impl EntryName {
    /// Classifies a tar entry name, refusing anything the format does not allow.
    pub fn parse(name: &str) -> Result<EntryName, ArchiveError> {
        let bad = |reason: &str| ArchiveError::BadEntryName {
            name: name.chars().take(300).collect(),
            reason: reason.to_owned(),
        };
        if name.starts_with('/') {
            return Err(bad("absolute path"));
        }
        if name.split('/').any(|c| c == ".." || c == ".") {
            return Err(bad("contains a '.' or '..' component"));
        }
        match name {
            OCI_LAYOUT => return Ok(EntryName::OciLayout),
            MANIFEST_ENTRY => return Ok(EntryName::Manifest),
            INDEX_JSON => return Ok(EntryName::IndexJson),
            VOLUME_ENTRY => return Ok(EntryName::Volume),
            _ => {}
        }
        if let Some(rest) = name.strip_prefix(SIGNATURES_DIR) {
            let fp = rest
                .strip_suffix(".sig")
                .ok_or_else(|| bad("signature entries end in .sig"))?;
            if fp.len() != 64 || !fp.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(bad(
                    "signature fingerprint must be 64 lower-case hex digits",
                ));
            }
            return Ok(EntryName::Signature(fp.to_owned()));
        }
        if let Some(rest) = name.strip_prefix("blobs/") {
            let (alg, hex) = rest
                .split_once('/')
                .ok_or_else(|| bad("blob names are blobs/<algorithm>/<hex>"))?;
            if let Some((hex, part)) = hex.split_once(".part-") {
                let digest: Digest = format!("{alg}:{hex}")
                    .parse()
                    .map_err(|_| bad("blob name is not a valid digest"))?;
                let four = |t: &str| -> Option<u32> {
                    (t.len() == 4 && t.bytes().all(|b| b.is_ascii_digit()))
                        .then(|| t.parse().ok())
                        .flatten()
                };
                let (n, count) = part
                    .split_once("-of-")
                    .and_then(|(n, c)| Some((four(n)?, four(c)?)))
                    .filter(|(n, c)| *n >= 1 && n <= c && *c >= 2)
                    .ok_or_else(|| {
                        bad("part names end in .part-NNNN-of-MMMM (1 <= N <= M, M >= 2)")
                    })?;
                return Ok(EntryName::Part(digest, n, count));
            }
            let digest: Digest = format!("{alg}:{hex}")
                .parse()
                .map_err(|_| bad("blob name is not a valid digest"))?;
            return Ok(EntryName::Blob(digest));
        }
        Err(bad("not a name allowed in an airlift archive"))
    }

    /// The entry name of a blob.
    pub fn blob(digest: &Digest) -> String {
        format!("blobs/{}/{}", digest.algorithm().name(), digest.hex())
    }

    /// The entry name of part `n` of `count` of a split blob.
    pub fn part(digest: &Digest, n: u32, count: u32) -> String {
        format!("{}.part-{n:04}-of-{count:04}", Self::blob(digest))
    }

    /// The name as it appears in the tar.
    pub fn to_entry_string(&self) -> String {
        match self {
            EntryName::OciLayout => OCI_LAYOUT.to_owned(),
            EntryName::Manifest => MANIFEST_ENTRY.to_owned(),
            EntryName::Signature(fp) => format!("{SIGNATURES_DIR}{fp}.sig"),
            EntryName::IndexJson => INDEX_JSON.to_owned(),
            EntryName::Volume => VOLUME_ENTRY.to_owned(),
            EntryName::Blob(d) => Self::blob(d),
            EntryName::Part(d, n, c) => Self::part(d, *n, *c),
        }
    }
}
