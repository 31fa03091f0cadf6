//! Import receipts: signed evidence of what an import put where (`format-spec/receipt-v1.md`).
//!
//! Change control inside an air gap wants proof that the archive approved outside is the
//! one that was imported, by whom, and where its content now lives. The receipt also lists
//! every blob the far side now holds, so a later delta export can take it as `--since`.
//! It is canonical JSON (like the airlift manifest) with an optional detached Ed25519
//! signature in `FILE.sig`, checkable with plain openssl.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::graph::{Graph, Kind};
use super::import::{ImportSummary, OpenedArchive};
use super::place::{Destination, Placement};
use crate::archive::manifest::{canonical_json, creation_time, rfc3339};
use crate::digest::Digest;
use crate::keys::{self, KeyError, SIGNATURE_LEN, SigningKey, VerifyingKey};

/// The `format` of every receipt.
pub const RECEIPT_FORMAT: &str = "airlift-import-receipt";
/// The receipt major version written and read here.
pub const RECEIPT_VERSION: u64 = 1;
/// Largest receipt accepted by [`verify_receipt`].
pub const MAX_RECEIPT: u64 = 64 << 20;

/// Why a receipt could not be written or checked.
#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    /// Reading or writing a file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The receipt is not valid JSON of the receipt shape.
    #[error("receipt {path}: {reason}")]
    Invalid {
        /// The receipt file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The receipt's signature is missing, by an untrusted key, or does not verify.
    #[error("receipt {path}: {reason}")]
    Signature {
        /// The receipt file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A key or signature file problem.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The import's result is inconsistent (a root without a destination).
    #[error("{0}")]
    Inconsistent(String),
}

/// The archive a receipt is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveIdentity {
    /// sha256 of the exact `airlift/manifest.json` bytes: what the exporter signed.
    pub manifest_digest: Digest,
    /// The archive's `created`.
    pub created: String,
    /// The archive's `tool`.
    pub tool: String,
    /// The archive file name (informational; the digest is the identity).
    pub file: String,
}

impl ArchiveIdentity {
    /// The identity of an opened archive (take it before `import` consumes the archive).
    pub fn of(opened: &OpenedArchive) -> ArchiveIdentity {
        let m = &opened.header.manifest;
        ArchiveIdentity {
            manifest_digest: Digest::sha256_of(&opened.header.manifest_bytes),
            created: m.created.clone(),
            tool: m.tool.clone(),
            file: opened
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    }
}

/// Where one root or locked image went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placed {
    /// `bundle` or `image`.
    pub kind: String,
    /// The reference as in the archive (root reference or lock entry).
    pub source: String,
    /// Its destination, by digest.
    pub destination: String,
    /// The manifest digest (same on both sides).
    pub digest: Digest,
}

/// What the destination registry now holds of one archive blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobStatus {
    /// Uploaded by this import (to at least one repository).
    Pushed,
    /// Already there everywhere it was needed.
    Present,
    /// Mounted from another repository of the same registry.
    Mounted,
}

/// One blob of the archive (manifests, indexes, configs, layers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptBlob {
    /// The blob's digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// `manifest`, `config` or `layer` (indexes count as manifests).
    pub role: String,
    /// What the import did with it.
    pub status: BlobStatus,
}

/// The import receipt (`format-spec/receipt.schema.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    /// Always [`RECEIPT_FORMAT`].
    pub format: String,
    /// Always [`RECEIPT_VERSION`].
    pub version: u64,
    /// When the import finished (RFC 3339; `SOURCE_DATE_EPOCH` when set).
    pub created: String,
    /// The importing tool.
    pub tool: String,
    /// Fingerprint of the key that signs this receipt (absent when unsigned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// The archive imported.
    pub archive: ArchiveIdentity,
    /// Fingerprints of the archive's trusted signers that verified (empty: `--allow-unsigned`).
    pub archive_signers: Vec<String>,
    /// `--to-repo REPO` or `--to-registry PREFIX`, as given.
    pub destination: String,
    /// Every root, in archive order.
    pub roots: Vec<Placed>,
    /// Every image and bundle named by a bundle lock, in lock order.
    pub locked: Vec<Placed>,
    /// Every blob of the archive, sorted by digest.
    pub blobs: Vec<ReceiptBlob>,
    /// The relocated lock (YAML: a BundleLock for one bundle root, else an ImagesLock).
    pub lock: String,
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Bundle => "bundle",
        Kind::Image => "image",
    }
}

impl Receipt {
    /// Builds the receipt of a finished import.
    pub fn build(
        archive: ArchiveIdentity,
        summary: &ImportSummary,
        graph: &Graph,
        placement: &Placement,
        dest: &Destination,
        signer: Option<&VerifyingKey>,
    ) -> Result<Receipt, ReceiptError> {
        let to = |original: &str| -> Result<String, ReceiptError> {
            placement
                .mapping
                .get(original)
                .map(|r| r.to_string())
                .ok_or_else(|| {
                    ReceiptError::Inconsistent(format!("no destination recorded for {original}"))
                })
        };
        let roots = graph
            .roots
            .iter()
            .map(|r| {
                Ok(Placed {
                    kind: kind_name(r.kind).into(),
                    source: r.reference.original().to_owned(),
                    destination: to(r.reference.original())?,
                    digest: r.digest.clone(),
                })
            })
            .collect::<Result<Vec<_>, ReceiptError>>()?;
        let locked = graph
            .locked
            .iter()
            .map(|l| {
                Ok(Placed {
                    kind: kind_name(l.kind).into(),
                    source: l.image.clone(),
                    destination: to(&l.image)?,
                    digest: l.digest.clone(),
                })
            })
            .collect::<Result<Vec<_>, ReceiptError>>()?;
        let report = &summary.report;
        let status = |d: &Digest| {
            if report.pushed_digests.contains(d) {
                BlobStatus::Pushed
            } else if report.mounted_digests.contains(d) {
                BlobStatus::Mounted
            } else {
                BlobStatus::Present
            }
        };
        let mut blobs: BTreeMap<Digest, ReceiptBlob> = BTreeMap::new();
        for (d, node) in &graph.manifests {
            blobs.insert(
                d.clone(),
                ReceiptBlob {
                    digest: d.clone(),
                    size: node.manifest.bytes.len() as u64,
                    role: "manifest".into(),
                    status: status(d),
                },
            );
        }
        for (d, b) in &graph.blobs {
            blobs.entry(d.clone()).or_insert_with(|| ReceiptBlob {
                digest: d.clone(),
                size: b.desc.size,
                role: match b.role {
                    super::graph::BlobRole::Config => "config".into(),
                    super::graph::BlobRole::Layer => "layer".into(),
                },
                status: status(d),
            });
        }
        Ok(Receipt {
            format: RECEIPT_FORMAT.into(),
            version: RECEIPT_VERSION,
            created: rfc3339(creation_time()),
            tool: format!("airlift {}", env!("CARGO_PKG_VERSION")),
            signer: signer.map(keys::fingerprint),
            archive,
            archive_signers: summary.signers.clone(),
            destination: match dest {
                Destination::Repo(r) => format!("--to-repo {}", r.repo_name()),
                Destination::Registry(p) => format!("--to-registry {p}"),
            },
            roots,
            locked,
            blobs: blobs.into_values().collect(),
            lock: crate::transfer::relocate::relocated_lock_yaml(graph, placement)
                .map_err(|e| ReceiptError::Inconsistent(e.to_string()))?,
        })
    }

    /// The exact bytes written and signed.
    pub fn to_canonical_bytes(&self) -> Result<Vec<u8>, ReceiptError> {
        canonical_json(self).map_err(|e| ReceiptError::Inconsistent(e.to_string()))
    }
}

/// The detached signature path of a receipt: `FILE.sig`.
pub fn signature_path(receipt: &Path) -> PathBuf {
    let mut s = receipt.as_os_str().to_owned();
    s.push(".sig");
    PathBuf::from(s)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReceiptError> {
    crate::fsutil::write_atomic(path, bytes, crate::fsutil::PRIVATE).map_err(|source| {
        ReceiptError::Io {
            what: format!("writing {}", path.display()),
            source,
        }
    })
}

/// Writes the receipt to `path` (canonical JSON) and, with `key`, its signature to `path.sig`.
///
/// An existing `path.sig` is removed when writing unsigned, so a stale signature never
/// sits next to a new receipt.
pub fn write_receipt(
    path: &Path,
    receipt: &Receipt,
    key: Option<&SigningKey>,
) -> Result<(), ReceiptError> {
    let bytes = receipt.to_canonical_bytes()?;
    write_atomic(path, &bytes)?;
    let sig_path = signature_path(path);
    match key {
        Some(k) => write_atomic(&sig_path, &keys::sign(k, &bytes))?,
        None => match std::fs::remove_file(&sig_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ReceiptError::Io {
                    what: format!("removing stale {}", sig_path.display()),
                    source,
                });
            }
        },
    }
    Ok(())
}

/// A checked receipt.
#[derive(Debug, Clone)]
pub struct CheckedReceipt {
    /// The parsed receipt.
    pub receipt: Receipt,
    /// sha256 of the receipt bytes.
    pub digest: Digest,
    /// Fingerprint of the trusted key whose signature verified (`None`: unsigned, allowed).
    pub signer: Option<String>,
}

/// Reads and checks a receipt: signature (`path.sig`) by one of `trusted`, then its shape.
///
/// Without a signature file the receipt is refused unless `allow_unsigned`.
pub fn verify_receipt(
    path: &Path,
    trusted: &[VerifyingKey],
    allow_unsigned: bool,
) -> Result<CheckedReceipt, ReceiptError> {
    use std::io::Read;
    let shown = path.display().to_string();
    let io = |what: String| move |source| ReceiptError::Io { what, source };
    let file = std::fs::File::open(path).map_err(io(format!("opening {shown}")))?;
    let mut bytes = Vec::new();
    file.take(MAX_RECEIPT + 1)
        .read_to_end(&mut bytes)
        .map_err(io(format!("reading {shown}")))?;
    if bytes.len() as u64 > MAX_RECEIPT {
        return Err(ReceiptError::Invalid {
            path: shown,
            reason: format!("larger than {MAX_RECEIPT} bytes"),
        });
    }
    let sig_path = signature_path(path);
    let signer = if sig_path.exists() {
        let sig: [u8; SIGNATURE_LEN] = keys::load_signature(&sig_path)?;
        let fp = trusted
            .iter()
            .find(|k| keys::verify(k, &bytes, &sig))
            .map(keys::fingerprint);
        match fp {
            Some(fp) => Some(fp),
            None if trusted.is_empty() && allow_unsigned => None,
            None => {
                return Err(ReceiptError::Signature {
                    path: shown,
                    reason: format!(
                        "signature {} does not verify against any trusted key",
                        sig_path.display()
                    ),
                });
            }
        }
    } else if allow_unsigned {
        None
    } else {
        return Err(ReceiptError::Signature {
            path: shown,
            reason: format!("unsigned ({} not found)", sig_path.display()),
        });
    };
    let receipt: Receipt = serde_json::from_slice(&bytes).map_err(|e| ReceiptError::Invalid {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    if receipt.format != RECEIPT_FORMAT || receipt.version != RECEIPT_VERSION {
        return Err(ReceiptError::Invalid {
            path: shown,
            reason: format!(
                "format {:?} version {}, expected {RECEIPT_FORMAT:?} version {RECEIPT_VERSION}",
                receipt.format, receipt.version
            ),
        });
    }
    if let (Some(claimed), Some(actual)) = (&receipt.signer, &signer)
        && claimed != actual
    {
        return Err(ReceiptError::Signature {
            path: shown,
            reason: format!("receipt names signer {claimed} but was signed by {actual}"),
        });
    }
    Ok(CheckedReceipt {
        digest: Digest::sha256_of(&bytes),
        receipt,
        signer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_path_appends_sig() {
        assert_eq!(
            signature_path(Path::new("/tmp/r.json")),
            PathBuf::from("/tmp/r.json.sig")
        );
    }
}
