//! The rules of an archive, written once (`format-spec/archive-v1.md` §5–§7).
//!
//! Every reader of an archive — the streaming [`super::ArchiveReader`], the random-access
//! [`super::BlobIndex`], `verify`, `inspect`, `import` and `serve` — admits entries through
//! [`EntryRules`] and checks the manifest graph through [`Closure`], so an archive that one
//! of them refuses, all of them refuse.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::manifest::{Manifest, PlannedEntry, REF_NAME as REF_NAME_KEY, Role};
use super::tar::{self, RawEntry};
use super::{ArchiveError, EntryName, INDEX_JSON};
use crate::digest::Digest;
use crate::oci::{RawManifest, media_type};
use crate::reference::Reference;

/// How far the tar stream may run past the content the manifest declares before reading
/// stops: small surplus entries are still read and reported by name (unlisted, duplicate),
/// larger ones are refused at their header (a zstd bomb is never inflated).
const BOMB_SLACK: u64 = 64 << 20;

/// Which entries may follow the leading ones, in which order, at which sizes.
#[derive(Debug, Clone)]
pub struct EntryRules {
    /// The content entries this file must hold, in order.
    expected: Vec<PlannedEntry>,
    position: HashMap<String, usize>,
    seen: HashSet<usize>,
    last: Option<usize>,
    /// Offset in the tar stream past which no entry of this archive can extend.
    declared_end: u64,
    /// Whether the signed manifest declares a volume set.
    volume_set: bool,
}

impl EntryRules {
    /// The rules for one file (`volume` as in [`Manifest::entries_for`]) whose blob entries
    /// start at `data_start` in the uncompressed tar stream.
    pub fn new(manifest: &Manifest, volume: Option<u32>, data_start: u64) -> EntryRules {
        let expected = manifest.entries_for(volume);
        let position = expected
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.clone(), i))
            .collect();
        let declared_end =
            manifest
                .blobs
                .iter()
                .fold(data_start.saturating_add(BOMB_SLACK), |end, b| {
                    end.saturating_add(tar::BLOCK)
                        .saturating_add(b.size)
                        .saturating_add(tar::padding(b.size))
                });
        EntryRules {
            expected,
            position,
            seen: HashSet::new(),
            last: None,
            declared_end,
            volume_set: manifest.volume.is_some(),
        }
    }

    /// Admits the next tar entry after the leading ones, or says why it may not be there.
    ///
    /// Errors for which [`ArchiveError::is_fatal`] is false concern only that entry.
    pub(crate) fn admit(&mut self, e: &RawEntry) -> Result<&PlannedEntry, ArchiveError> {
        // No entry may reach past what the manifest declares: refused at the header, so a
        // zstd bomb (a huge entry of zeros) is never inflated, not even to be skipped.
        let end = e.data_offset.saturating_add(e.size);
        if end > self.declared_end {
            return Err(ArchiveError::BadHeader {
                offset: e.data_offset.saturating_sub(tar::BLOCK),
                reason: format!(
                    "entry {:?} of {} bytes would end at byte {end}, more than 64 MiB past the \
                     content the airlift manifest declares (decompression bomb?)",
                    e.name.chars().take(300).collect::<String>(),
                    e.size,
                ),
            });
        }
        let name = EntryName::parse(&e.name)?;
        if let Some(kind) = e.irregular_kind() {
            return Err(ArchiveError::BadEntryType {
                name: e.name.chars().take(300).collect(),
                kind,
            });
        }
        match name {
            EntryName::Blob(_) | EntryName::Part(..) => {}
            EntryName::Signature(_) => {
                return Err(ArchiveError::Order {
                    name: e.name.clone(),
                    expected: "only blob entries after index.json".into(),
                });
            }
            EntryName::Volume if !self.volume_set => {
                return Err(ArchiveError::Invalid {
                    name: e.name.clone(),
                    reason: "a volume record in an archive whose signed manifest declares no \
                             volume set (only volumes of a --volume-size export carry one)"
                        .into(),
                });
            }
            _ => {
                return Err(ArchiveError::Duplicate {
                    name: e.name.clone(),
                });
            }
        }
        let Some(&pos) = self.position.get(&e.name) else {
            return Err(ArchiveError::Unlisted {
                name: e.name.clone(),
            });
        };
        if !self.seen.insert(pos) {
            return Err(ArchiveError::Duplicate {
                name: e.name.clone(),
            });
        }
        let entry = &self.expected[pos];
        if e.size != entry.size {
            return Err(ArchiveError::SizeMismatch {
                digest: entry.digest.clone(),
                expected: entry.size,
                found: e.size,
            });
        }
        if let Some(last) = self.last
            && last > pos
        {
            return Err(ArchiveError::Order {
                name: e.name.clone(),
                expected: "blobs grouped manifests, configs, layers, each sorted by digest".into(),
            });
        }
        self.last = Some(pos);
        Ok(entry)
    }

    /// Entries this file must hold but not (yet) admitted.
    pub fn missing(&self) -> Vec<&PlannedEntry> {
        self.expected
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.seen.contains(i))
            .map(|(_, e)| e)
            .collect()
    }

    /// Fails unless every planned entry was admitted.
    pub fn complete(&self, file: &str) -> Result<(), ArchiveError> {
        let missing = self.missing();
        if missing.is_empty() {
            return Ok(());
        }
        Err(ArchiveError::Missing {
            file: file.to_owned(),
            count: missing.len(),
            first: missing.iter().take(10).map(|e| e.name.clone()).collect(),
        })
    }
}

/// Category of a failure (stable names, part of the verify report schema).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// The file is not a readable (optionally zstd) ustar stream.
    Container,
    /// An entry name the format does not allow.
    EntryName,
    /// An entry that is not a regular file.
    EntryType,
    /// An entry out of the prescribed order.
    EntryOrder,
    /// The same entry twice.
    DuplicateEntry,
    /// A blob entry the manifest does not list.
    UnlistedEntry,
    /// Size differs from the manifest's.
    SizeMismatch,
    /// Content does not hash to its digest.
    DigestMismatch,
    /// A listed blob (or a lock's image) absent from the archive.
    MissingBlob,
    /// A descriptor (in index.json or a manifest) naming an unlisted blob or another size.
    UnlistedDescriptor,
    /// A listed blob that nothing references.
    UnreachableBlob,
    /// JSON that does not parse or breaks a rule of the format.
    InvalidContent,
    /// A format version or feature this verifier does not implement.
    Unsupported,
    /// A trusted key's signature that does not verify, or a malformed signature entry.
    SignatureInvalid,
    /// Fewer valid trusted signatures than required.
    NotEnoughSignatures,
}

/// One thing wrong with the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Category.
    pub kind: FailureKind,
    /// Human explanation.
    pub message: String,
    /// The tar entry concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// The blob concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    /// What was expected, if applicable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// What was found, if applicable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found: Option<String>,
}

impl Failure {
    /// A failure with only a kind and a message.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
            entry: None,
            digest: None,
            expected: None,
            found: None,
        }
    }
}

/// The graph rules: every descriptor names a listed blob of the listed size, every root and
/// lock image is in `index.json`, every listed blob is reachable.
#[derive(Debug, Default)]
pub struct Closure {
    referenced: HashSet<Digest>,
    failures: Vec<Failure>,
}

impl Closure {
    /// Starts from `index.json` (its bytes are covered by the signed manifest).
    pub fn new(manifest: &Manifest, index_json: &[u8]) -> Closure {
        let mut c = Closure::default();
        let index_bytes = Bytes::from(index_json.to_vec());
        match RawManifest::from_bytes(index_bytes, Some(media_type::OCI_INDEX)) {
            Ok(index) if index.media_type == media_type::OCI_INDEX => {
                let mut names: HashSet<(String, Digest)> = HashSet::new();
                for d in index.child_manifests() {
                    c.descriptor(manifest, INDEX_JSON, &d.digest, d.size);
                    if let Some(n) = d.annotations.as_ref().and_then(|a| a.get(REF_NAME_KEY)) {
                        names.insert((n.clone(), d.digest.clone()));
                    }
                }
                for root in &manifest.roots {
                    if !names.contains(&(root.reference.clone(), root.digest.clone())) {
                        c.failures.push(Failure {
                            entry: Some(INDEX_JSON.into()),
                            digest: Some(root.digest.clone()),
                            expected: Some(format!("{REF_NAME_KEY}={}", root.reference)),
                            ..Failure::new(
                                FailureKind::InvalidContent,
                                format!("root {} is not in index.json", root.reference),
                            )
                        });
                    }
                }
                for bundle in &manifest.bundles {
                    for img in &bundle.images {
                        if !names.iter().any(|(n, _)| *n == img.image) {
                            c.failures.push(Failure {
                                entry: Some(INDEX_JSON.into()),
                                expected: Some(format!("{REF_NAME_KEY}={}", img.image)),
                                ..Failure::new(
                                    FailureKind::InvalidContent,
                                    format!(
                                        "image {} of bundle {} is not in index.json",
                                        img.image, bundle.digest
                                    ),
                                )
                            });
                        }
                    }
                }
            }
            Ok(other) => c.failures.push(Failure {
                entry: Some(INDEX_JSON.into()),
                expected: Some(media_type::OCI_INDEX.into()),
                found: Some(other.media_type),
                ..Failure::new(
                    FailureKind::InvalidContent,
                    "index.json is not an OCI image index",
                )
            }),
            Err(e) => c.failures.push(Failure {
                entry: Some(INDEX_JSON.into()),
                ..Failure::new(FailureKind::InvalidContent, format!("index.json: {e}"))
            }),
        }
        c
    }

    /// Checks one manifest or index blob (already verified against its digest) and returns it
    /// parsed, or `None` when it does not parse (the failure is recorded).
    pub fn manifest(
        &mut self,
        manifest: &Manifest,
        entry: &str,
        digest: &Digest,
        listed_media_type: &str,
        bytes: Bytes,
    ) -> Option<RawManifest> {
        let parsed = match RawManifest::from_bytes(bytes, Some(listed_media_type)) {
            Ok(m) => m,
            Err(e) => {
                self.failures.push(Failure {
                    entry: Some(entry.to_owned()),
                    digest: Some(digest.clone()),
                    ..Failure::new(FailureKind::InvalidContent, e.to_string())
                });
                return None;
            }
        };
        if parsed.media_type != listed_media_type {
            self.failures.push(Failure {
                entry: Some(entry.to_owned()),
                digest: Some(digest.clone()),
                expected: Some(listed_media_type.to_owned()),
                found: Some(parsed.media_type.clone()),
                ..Failure::new(
                    FailureKind::InvalidContent,
                    "manifest media type differs from the blob table",
                )
            });
        }
        let children: Vec<(Digest, u64)> = parsed
            .child_manifests()
            .iter()
            .chain(parsed.blobs())
            .map(|d| (d.digest.clone(), d.size))
            .collect();
        for (d, size) in children {
            self.descriptor(manifest, entry, &d, size);
        }
        Some(parsed)
    }

    fn descriptor(&mut self, manifest: &Manifest, parent: &str, digest: &Digest, size: u64) {
        self.referenced.insert(digest.clone());
        match manifest.blob(digest) {
            Some(b) if b.size == size => {}
            Some(b) => self.failures.push(Failure {
                entry: Some(parent.to_owned()),
                digest: Some(digest.clone()),
                expected: Some(format!("{} bytes (blob table)", b.size)),
                found: Some(format!("{size} bytes (descriptor)")),
                ..Failure::new(
                    FailureKind::UnlistedDescriptor,
                    format!("{parent} names {digest} with another size than the blob table"),
                )
            }),
            None => self.failures.push(Failure {
                entry: Some(parent.to_owned()),
                digest: Some(digest.clone()),
                ..Failure::new(
                    FailureKind::UnlistedDescriptor,
                    format!("{parent} names {digest}, which the airlift manifest does not list"),
                )
            }),
        }
    }

    /// Failures recorded since the last call (descriptors, `index.json`).
    pub fn take_failures(&mut self) -> Vec<Failure> {
        std::mem::take(&mut self.failures)
    }

    /// Every lock image must be a digest reference to a listed manifest; every filtered
    /// digest of `platforms` a listed manifest, each original named once and not carried.
    pub fn locks(manifest: &Manifest) -> Vec<Failure> {
        let mut out = Vec::new();
        let mut originals = HashSet::new();
        for r in manifest.platforms.iter().flat_map(|p| &p.replaced) {
            let listed_manifest = manifest
                .blob(&r.filtered)
                .is_some_and(|b| matches!(b.role, Role::Manifest | Role::Index));
            if !listed_manifest {
                out.push(Failure {
                    digest: Some(r.filtered.clone()),
                    ..Failure::new(
                        FailureKind::MissingBlob,
                        format!(
                            "platforms: {} (filtered from {}) is not a manifest of the archive",
                            r.filtered, r.original
                        ),
                    )
                });
            }
            if !originals.insert(&r.original) || manifest.blob(&r.original).is_some() {
                out.push(Failure {
                    digest: Some(r.original.clone()),
                    ..Failure::new(
                        FailureKind::InvalidContent,
                        format!(
                            "platforms: original {} is replaced twice or also carried",
                            r.original
                        ),
                    )
                });
            }
        }
        for bundle in &manifest.bundles {
            if manifest.blob(&bundle.digest).is_none() {
                out.push(Failure {
                    digest: Some(bundle.digest.clone()),
                    ..Failure::new(
                        FailureKind::MissingBlob,
                        format!("bundle {} is not in the blob table", bundle.digest),
                    )
                });
            }
            for img in &bundle.images {
                let digest = Reference::parse(&img.image)
                    .ok()
                    .and_then(|rf| rf.digest().cloned());
                match digest {
                    Some(d) if manifest.blob(&d).is_some() => {}
                    Some(d) => out.push(Failure {
                        digest: Some(d.clone()),
                        ..Failure::new(
                            FailureKind::MissingBlob,
                            format!(
                                "image {} of bundle {} is not in the archive",
                                img.image, bundle.digest
                            ),
                        )
                    }),
                    None => out.push(Failure::new(
                        FailureKind::InvalidContent,
                        format!(
                            "lock image {:?} of bundle {} is not a digest reference",
                            img.image, bundle.digest
                        ),
                    )),
                }
            }
        }
        out
    }

    /// Every referrer and its subject must be manifests of the blob table, listed once, in
    /// order (the `referrers` field, additive to version 1).
    pub fn referrers(manifest: &Manifest) -> Vec<Failure> {
        let mut out = Vec::new();
        for pair in manifest.referrers.windows(2) {
            if (&pair[0].digest, &pair[0].subject) >= (&pair[1].digest, &pair[1].subject) {
                out.push(Failure {
                    digest: Some(pair[1].digest.clone()),
                    ..Failure::new(
                        FailureKind::InvalidContent,
                        format!(
                            "referrers not sorted by (digest, subject) or duplicated at {}",
                            pair[1].digest
                        ),
                    )
                });
            }
        }
        for r in &manifest.referrers {
            for (what, d) in [("referrer", &r.digest), ("subject", &r.subject)] {
                let is_manifest = manifest
                    .blob(d)
                    .is_some_and(|b| matches!(b.role, Role::Manifest | Role::Index));
                if !is_manifest {
                    out.push(Failure {
                        digest: Some(d.clone()),
                        ..Failure::new(
                            FailureKind::MissingBlob,
                            format!(
                                "{what} {d} (referrer {} of {}) is not a manifest of the blob table",
                                r.digest, r.subject
                            ),
                        )
                    });
                }
            }
        }
        out
    }

    /// Listed blobs that no descriptor seen so far names (judge only once every manifest
    /// blob was read).
    pub fn unreachable(&self, manifest: &Manifest) -> Vec<Failure> {
        manifest
            .blobs
            .iter()
            .filter(|b| !self.referenced.contains(&b.digest))
            .map(|b| Failure {
                entry: Some(EntryName::blob(&b.digest)),
                digest: Some(b.digest.clone()),
                ..Failure::new(
                    FailureKind::UnreachableBlob,
                    format!("blob {} is listed but nothing references it", b.digest),
                )
            })
            .collect()
    }
}

/// Every graph rule at once, for readers that hold all manifest blobs (import, serve):
/// the same failures `verify` reports in its index, completeness and closure steps.
pub fn graph_failures(
    manifest: &Manifest,
    index_json: &[u8],
    manifests: &[(String, Digest, String, Bytes)],
) -> (Vec<RawManifest>, Vec<Failure>) {
    let mut closure = Closure::new(manifest, index_json);
    let mut parsed = Vec::new();
    for (entry, digest, media_type, bytes) in manifests {
        if let Some(m) = closure.manifest(manifest, entry, digest, media_type, bytes.clone()) {
            parsed.push(m);
        }
    }
    let mut failures = closure.take_failures();
    failures.extend(Closure::locks(manifest));
    failures.extend(Closure::referrers(manifest));
    failures.extend(closure.unreachable(manifest));
    (parsed, failures)
}
