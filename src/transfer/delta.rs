//! Deltas: what an earlier archive, its manifest or an import receipt already delivered, so
//! that `export --since` leaves those layers out and names the base it relies on.

use std::collections::HashSet;
use std::path::Path;

use super::TransferError;
use crate::archive::manifest::{self as am, BaseRef, Manifest};
use crate::archive::reader::ArchiveReader;
use crate::digest::Digest;

/// What a delta export leaves out: the blobs an earlier archive (or import) delivered.
#[derive(Debug, Clone)]
pub struct Base {
    /// The base's identity, recorded in the delta's manifest.
    pub reference: BaseRef,
    /// Blobs the destination holds thanks to the base.
    pub blobs: HashSet<Digest>,
    /// The base's signed `sequence` (receipts do not record one).
    pub sequence: Option<u64>,
}

impl Base {
    /// Reads a base: an archive (any one of its volumes), its `airlift/manifest.json`, or an
    /// import receipt (`format-spec/receipt-v1.md`).
    pub fn load(path: &Path) -> Result<Base, TransferError> {
        Self::read(path, "--since")
    }

    /// As [`Base::load`], with errors naming `flag` (`verify --not-older-than` reads the same
    /// files to learn an earlier release's `created` and `sequence`).
    pub fn read(path: &Path, flag: &str) -> Result<Base, TransferError> {
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bad = |m: String| TransferError::Usage(format!("{flag} {}: {m}", path.display()));
        if let Ok(reader) = ArchiveReader::open(path) {
            let h = reader.header();
            return Ok(Base::of_manifest(&h.manifest, &h.manifest_bytes, file));
        }
        let len = std::fs::metadata(path)
            .map_err(|e| bad(e.to_string()))?
            .len();
        if len > crate::archive::MAX_MANIFEST {
            return Err(bad("not an airlift archive, manifest or receipt".into()));
        }
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|_| bad("not an airlift archive, manifest or receipt".into()))?;
        match value.get("format").and_then(|f| f.as_str()) {
            Some(am::FORMAT_NAME) => {
                let m = Manifest::parse(&bytes).map_err(|e| bad(e.to_string()))?;
                Ok(Base::of_manifest(&m.manifest, &bytes, file))
            }
            Some(super::receipt::RECEIPT_FORMAT) => {
                let text =
                    |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(str::to_owned);
                let archive = value.get("archive");
                let manifest_digest: Digest = text(archive.and_then(|a| a.get("manifestDigest")))
                    .and_then(|t| t.parse().ok())
                    .ok_or_else(|| bad("receipt without archive.manifestDigest".into()))?;
                let created = text(archive.and_then(|a| a.get("created"))).unwrap_or_default();
                let mut blobs = HashSet::new();
                for b in value
                    .get("blobs")
                    .and_then(|b| b.as_array())
                    .into_iter()
                    .flatten()
                {
                    let d: Digest = text(b.get("digest"))
                        .and_then(|t| t.parse().ok())
                        .ok_or_else(|| bad("receipt blob without a valid digest".into()))?;
                    blobs.insert(d);
                }
                Ok(Base {
                    reference: BaseRef {
                        manifest_digest,
                        created,
                        file,
                    },
                    blobs,
                    sequence: None,
                })
            }
            _ => Err(bad("not an airlift archive, manifest or receipt".into())),
        }
    }

    fn of_manifest(m: &Manifest, bytes: &[u8], file: String) -> Base {
        Base {
            reference: BaseRef {
                manifest_digest: Digest::sha256_of(bytes),
                created: m.created.clone(),
                file,
            },
            // Its base blobs count too: importing it required them at the destination.
            blobs: m.blobs.iter().map(|b| b.digest.clone()).collect(),
            sequence: m.sequence,
        }
    }
}
