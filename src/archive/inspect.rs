//! What an archive holds, told from its header and manifest blobs alone (no layer data read).
//!
//! Auditors and operators need to know what is on a USB stick before they let it near a
//! registry: who signed it, which references it carries, what each image weighs. Everything
//! here comes from the leading entries and the manifest/index blobs (group (a) of the entry
//! order, archive-v1.md §2), so reading stops at the first config: cheap even for huge archives.
//! The report's JSON form is a stable contract: `format-spec/inspect.schema.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;

use super::manifest::{BaseRef, Manifest, Role, RootKind, VolumeSet};
use super::reader::ArchiveReader;
use super::{ArchiveError, EntryName, MANIFEST_ENTRY};
use crate::digest::Digest;
use crate::keys::{self, VerifyingKey};
use crate::oci::{Parsed, Platform, RawManifest};

/// Identifies the JSON report shape (bumped only on incompatible change).
pub const INSPECT_SCHEMA: &str = "airlift-inspect/v1";

/// How a signature relates to the `--trust` keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureStatus {
    /// Made by a trusted key and valid.
    Valid,
    /// Claims a trusted key's fingerprint but does not verify.
    Invalid,
    /// Its fingerprint matches no trusted key (some were given).
    Untrusted,
    /// No trusted keys were given, so nothing was checked.
    Unchecked,
}

/// One signature entry of the archive.
#[derive(Debug, Clone, Serialize)]
pub struct SignatureInfo {
    /// sha256 of the signer's SPKI DER (names the `.sig` entry).
    pub fingerprint: String,
    /// Outcome against the trusted keys.
    pub status: SignatureStatus,
}

/// One root the user asked to carry.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RootInfo {
    /// `bundle` or `image`.
    pub kind: RootKind,
    /// The reference as given at export.
    pub reference: String,
    /// The tag it was resolved from, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Manifest or index digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
}

/// One platform of an image (a single-platform image has one, with no `platform`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlatformInfo {
    /// The platform from the index entry (absent for a plain image manifest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// The platform's image manifest digest.
    pub digest: Digest,
    /// Number of layers of that manifest.
    pub layers: u64,
    /// Bytes of manifest + config + layers of that platform.
    pub size: u64,
}

/// An image (root or locked by a bundle), with what it weighs.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageInfo {
    /// Manifest or index digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// Every name the archive knows it by (root references and lock entries), sorted.
    pub references: Vec<String>,
    /// Platforms (index) or the single manifest.
    pub platforms: Vec<PlatformInfo>,
    /// Distinct layers over all platforms.
    pub layers: u64,
    /// Bytes of the distinct blobs (manifests, configs, layers) the image needs.
    pub size: u64,
}

/// One lock entry of a bundle.
#[derive(Debug, Clone, Serialize)]
pub struct LockEntryInfo {
    /// The reference as written in the lock (`repo@sha256:…`).
    pub image: String,
    /// Its digest.
    pub digest: Digest,
    /// Whether it is itself a bundle.
    pub bundle: bool,
    /// The lock entry's annotations.
    pub annotations: BTreeMap<String, String>,
}

/// A bundle in the archive (root or nested).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleInfo {
    /// Bundle manifest digest.
    pub digest: Digest,
    /// Names it is known by (root reference and/or lock entries of parent bundles), sorted.
    pub references: Vec<String>,
    /// Whether the user asked for it (a root) rather than reaching it through another bundle.
    pub root: bool,
    /// The lock, in lock order: original reference → digest.
    pub images: Vec<LockEntryInfo>,
    /// Digests of the bundles its lock names.
    pub nested_bundles: Vec<Digest>,
}

/// A signature, attestation, SBOM or other artifact, listed under the image it is about.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferrerInfo {
    /// The image (or index, or artifact) it is about.
    pub subject: Digest,
    /// The artifact's manifest digest.
    pub digest: Digest,
    /// Its manifest's size in bytes.
    pub size: u64,
    /// `signature`, `attestation`, `sbom` or `artifact`.
    pub kind: crate::referrers::ReferrerKind,
    /// How people call it: `cosign signature`, `cosign attestation`, `cosign SBOM`, `SBOM`,
    /// or the artifact type.
    pub description: String,
    /// The OCI artifact type, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The cosign tag it travels under (absent for an OCI 1.1 referrer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Fingerprint (sha256 of the public key's DER) of the `--cosign-key` that verifies this
    /// signature, when one does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
}

impl ReferrerInfo {
    fn of(r: &crate::referrers::Referrer, size: u64) -> ReferrerInfo {
        use crate::referrers::ReferrerKind as K;
        let description = match (r.kind, &r.tag, &r.artifact_type) {
            (K::Signature, Some(_), _) => "cosign signature".to_owned(),
            (K::Attestation, Some(_), _) => "cosign attestation".to_owned(),
            (K::Sbom, Some(_), _) => "cosign SBOM".to_owned(),
            (K::Signature, None, Some(t)) if t == crate::referrers::SIGSTORE_BUNDLE => {
                "cosign signature (sigstore bundle)".to_owned()
            }
            (K::Sbom, None, t) => format!("SBOM ({})", t.as_deref().unwrap_or("?")),
            (K::Attestation, None, t) => format!("attestation ({})", t.as_deref().unwrap_or("?")),
            (_, _, Some(t)) => t.clone(),
            (k, _, None) => k.name().to_owned(),
        };
        ReferrerInfo {
            subject: r.subject.clone(),
            digest: r.digest.clone(),
            size,
            kind: r.kind,
            description,
            artifact_type: r.artifact_type.clone(),
            tag: r.tag.clone(),
            signer: None,
        }
    }
}

/// Counts and bytes of one blob role.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RoleTotals {
    /// Blobs.
    pub count: u64,
    /// Bytes.
    pub bytes: u64,
}

/// The blob table in numbers.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlobTotals {
    /// Blobs in the archive.
    pub count: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Config and layer bytes stored once but named by several manifests (as `export` reports).
    pub dedup_saved_bytes: u64,
    /// Per role: `manifest`, `index`, `config`, `layer`.
    pub by_role: BTreeMap<String, RoleTotals>,
}

/// Everything `airlift inspect` reports about one archive.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Inspection {
    /// Always [`INSPECT_SCHEMA`].
    pub schema: String,
    /// The archive path as given.
    pub archive: String,
    /// The file's length.
    pub file_size: u64,
    /// Whether the archive is zstd-compressed.
    pub compressed: bool,
    /// Format name and version from the manifest.
    pub format: String,
    /// Format major version.
    pub version: u64,
    /// Creation time (RFC 3339).
    pub created: String,
    /// Writer tool.
    pub tool: String,
    /// sha256 of the exact `airlift/manifest.json` bytes: the archive's identity.
    pub manifest_digest: Digest,
    /// Signature entries, ascending fingerprint.
    pub signatures: Vec<SignatureInfo>,
    /// Whether `--trust` keys were given (else statuses are `unchecked`).
    pub trust_checked: bool,
    /// Distinct trusted keys with valid signatures.
    pub valid_signatures: u64,
    /// The roots, in export order.
    pub roots: Vec<RootInfo>,
    /// Every non-bundle image (roots and lock entries), by digest.
    pub images: Vec<ImageInfo>,
    /// Every bundle, by digest.
    pub bundles: Vec<BundleInfo>,
    /// Blob table totals.
    pub blobs: BlobTotals,
    /// The volume set this file belongs to (absent for a single-file archive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeSet>,
    /// Which volume of the set this file is (from `airlift/volume.json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub this_volume: Option<u32>,
    /// The base a delta archive relies on (absent for a self-contained archive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseRef>,
    /// Blobs relied on from the base and not carried (delta archives only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_blobs: Option<RoleTotals>,
    /// Manifest fields this version does not know.
    pub unknown_fields: Vec<String>,
    /// Signatures, attestations, SBOMs and other artifacts, by subject.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub referrers: Vec<ReferrerInfo>,
}

/// Inspects one archive; `trusted` keys (may be empty) classify the signatures.
pub fn inspect(path: &Path, trusted: &[VerifyingKey]) -> Result<Inspection, ArchiveError> {
    let file_size = std::fs::metadata(path)
        .map_err(ArchiveError::io(format!("reading {}", path.display())))?
        .len();
    let mut reader = ArchiveReader::open(path)?;
    let blobs = reader.read_manifests()?;
    let header = reader.header();
    let (compressed, this_volume) = (header.compressed, header.volume);
    let manifest = header.manifest.clone();
    let unknown_fields = header.unknown_fields.clone();
    let manifest_bytes = header.manifest_bytes.clone();
    let signatures = header.signatures.clone();
    // Group (a): manifests and indexes; no layer data is read.
    let mut manifests: BTreeMap<Digest, RawManifest> = BTreeMap::new();
    for b in blobs {
        let raw = RawManifest::from_bytes(b.bytes, Some(&b.media_type)).map_err(|err| {
            ArchiveError::Invalid {
                name: b.entry.clone(),
                reason: err.to_string(),
            }
        })?;
        manifests.insert(b.digest, raw);
    }

    let trust_checked = !trusted.is_empty();
    let trusted_fps: BTreeMap<String, &VerifyingKey> =
        trusted.iter().map(|k| (keys::fingerprint(k), k)).collect();
    let signatures: Vec<SignatureInfo> = signatures
        .iter()
        .map(|(fp, sig)| SignatureInfo {
            fingerprint: fp.clone(),
            status: match trusted_fps.get(fp) {
                _ if !trust_checked => SignatureStatus::Unchecked,
                None => SignatureStatus::Untrusted,
                Some(k) if keys::verify(k, &manifest_bytes, sig) => SignatureStatus::Valid,
                Some(_) => SignatureStatus::Invalid,
            },
        })
        .collect();
    let valid_signatures = signatures
        .iter()
        .filter(|s| s.status == SignatureStatus::Valid)
        .count() as u64;

    let roots = manifest
        .roots
        .iter()
        .map(|r| RootInfo {
            kind: r.kind,
            reference: r.reference.clone(),
            tag: r.tag.clone(),
            digest: r.digest.clone(),
            media_type: r.media_type.clone(),
        })
        .collect();

    // Names by digest: bundles and images, from roots and locks.
    let mut bundle_names: BTreeMap<Digest, (BTreeSet<String>, bool)> = BTreeMap::new();
    let mut image_names: BTreeMap<Digest, BTreeSet<String>> = BTreeMap::new();
    for r in &manifest.roots {
        match r.kind {
            RootKind::Bundle => {
                let e = bundle_names.entry(r.digest.clone()).or_default();
                e.0.insert(r.reference.clone());
                e.1 = true;
            }
            RootKind::Image => {
                image_names
                    .entry(r.digest.clone())
                    .or_default()
                    .insert(r.reference.clone());
            }
        }
    }
    let mut bundles = Vec::new();
    for b in &manifest.bundles {
        bundle_names.entry(b.digest.clone()).or_default();
        let mut images = Vec::new();
        let mut nested = Vec::new();
        for img in &b.images {
            let digest = lock_digest(&img.image, &b.digest)?;
            if img.bundle {
                bundle_names
                    .entry(digest.clone())
                    .or_default()
                    .0
                    .insert(img.image.clone());
                nested.push(digest.clone());
            } else {
                image_names
                    .entry(digest.clone())
                    .or_default()
                    .insert(img.image.clone());
            }
            images.push(LockEntryInfo {
                image: img.image.clone(),
                digest,
                bundle: img.bundle,
                annotations: img.annotations.clone(),
            });
        }
        bundles.push((b.digest.clone(), images, nested));
    }
    let bundles: Vec<BundleInfo> = bundles
        .into_iter()
        .map(|(digest, images, nested_bundles)| {
            let (names, root) = bundle_names.get(&digest).cloned().unwrap_or_default();
            BundleInfo {
                digest,
                references: names.into_iter().collect(),
                root,
                images,
                nested_bundles,
            }
        })
        .collect();

    let mut images = Vec::new();
    for (digest, names) in image_names {
        images.push(image_info(&manifest, &manifests, &digest, names)?);
    }

    let mut blobs = BlobTotals::default();
    for b in &manifest.blobs {
        blobs.count += 1;
        blobs.bytes += b.size;
        let role = serde_json::to_value(b.role)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let t = blobs.by_role.entry(role).or_default();
        t.count += 1;
        t.bytes += b.size;
        if matches!(b.role, Role::Config | Role::Layer) {
            blobs.dedup_saved_bytes += b.size * (b.referenced_by.len().saturating_sub(1) as u64);
        }
    }

    Ok(Inspection {
        schema: INSPECT_SCHEMA.into(),
        archive: path.display().to_string(),
        file_size,
        compressed,
        format: manifest.format.clone(),
        version: manifest.version,
        created: manifest.created.clone(),
        tool: manifest.tool.clone(),
        manifest_digest: Digest::sha256_of(&manifest_bytes),
        signatures,
        trust_checked,
        valid_signatures,
        roots,
        images,
        bundles,
        blobs,
        volume: manifest.volume.clone(),
        this_volume,
        base: manifest.base.clone(),
        base_blobs: manifest.base.as_ref().map(|_| RoleTotals {
            count: manifest.base_blobs().count() as u64,
            bytes: manifest.base_blobs().map(|b| b.size).sum(),
        }),
        unknown_fields,
        referrers: {
            let mut r: Vec<ReferrerInfo> = manifest
                .referrers
                .iter()
                .map(|r| ReferrerInfo::of(r, manifest.blob(&r.digest).map_or(0, |b| b.size)))
                .collect();
            r.sort_by(|a, b| (&a.subject, &a.digest).cmp(&(&b.subject, &b.digest)));
            r
        },
    })
}

/// The digest of a lock entry (`repo@sha256:…`).
fn lock_digest(image: &str, bundle: &Digest) -> Result<Digest, ArchiveError> {
    image
        .rsplit_once('@')
        .and_then(|(_, d)| d.parse().ok())
        .ok_or_else(|| ArchiveError::Invalid {
            name: MANIFEST_ENTRY.into(),
            reason: format!("bundle {bundle}: lock entry {image:?} has no digest"),
        })
}

fn missing(d: &Digest) -> ArchiveError {
    ArchiveError::Invalid {
        name: EntryName::blob(d),
        reason: "manifest blob listed but not in the archive's manifest group".into(),
    }
}

/// Platforms, layer count and size of one image, from its manifest blobs and the blob table.
fn image_info(
    table: &Manifest,
    manifests: &BTreeMap<Digest, RawManifest>,
    digest: &Digest,
    names: BTreeSet<String>,
) -> Result<ImageInfo, ArchiveError> {
    let top = manifests.get(digest).ok_or_else(|| missing(digest))?;
    let size_of = |d: &Digest| table.blob(d).map(|b| b.size).unwrap_or(0);
    let mut all: BTreeSet<Digest> = BTreeSet::from([digest.clone()]);
    let mut layers_all: BTreeSet<Digest> = BTreeSet::new();
    let mut platforms = Vec::new();
    let children: Vec<(Option<Platform>, Digest)> = match &top.parsed {
        Parsed::Image { .. } => vec![(None, digest.clone())],
        Parsed::Index { manifests: ds } => ds
            .iter()
            .map(|d| (d.platform.clone(), d.digest.clone()))
            .collect(),
    };
    for (platform, d) in children {
        let m = manifests.get(&d).ok_or_else(|| missing(&d))?;
        let mut own: BTreeSet<Digest> = BTreeSet::from([d.clone()]);
        let mut layers = 0u64;
        if let Parsed::Image { config, layers: ls } = &m.parsed {
            own.insert(config.digest.clone());
            for l in ls {
                own.insert(l.digest.clone());
                layers_all.insert(l.digest.clone());
                layers += 1;
            }
        }
        // A nested index (rare) counts as one entry without layers.
        let size = own.iter().map(size_of).sum();
        all.extend(own);
        platforms.push(PlatformInfo {
            platform,
            digest: d,
            layers,
            size,
        });
    }
    Ok(ImageInfo {
        digest: digest.clone(),
        media_type: top.media_type.clone(),
        references: names.into_iter().collect(),
        platforms,
        layers: layers_all.len() as u64,
        size: all.iter().map(size_of).sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::manifest::{BlobTableBuilder, IndexEntry, Root, oci_index_json};
    use crate::archive::tar::{header, write_entry};
    use crate::archive::{INDEX_JSON, OCI_LAYOUT, OCI_LAYOUT_CONTENT};
    use crate::oci::{Descriptor, media_type};
    use bytes::Bytes;

    fn desc(mt: &str, bytes: &[u8]) -> Descriptor {
        Descriptor {
            media_type: mt.into(),
            digest: Digest::sha256_of(bytes),
            size: bytes.len() as u64,
            platform: None,
            annotations: None,
        }
    }

    /// An archive whose manifest has the reserved `base` field and whose layer entry is cut
    /// short after its header: inspect must show `base` and never touch the layer's data.
    #[test]
    fn shows_reserved_fields_and_reads_no_layer_data() {
        let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
        let layer = vec![7u8; 4096];
        let image = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": media_type::OCI_MANIFEST,
            "config": desc(media_type::OCI_CONFIG, &config),
            "layers": [desc(media_type::OCI_LAYER_GZIP, &layer)],
        }))
        .unwrap();
        let raw = RawManifest::from_bytes(Bytes::from(image.clone()), None).unwrap();
        let mut table = BlobTableBuilder::new();
        table.add_manifest(&raw).unwrap();
        let index_json = oci_index_json(&[IndexEntry {
            descriptor: raw.descriptor(),
            ref_name: "example.test/app:1".into(),
        }])
        .unwrap();
        let mut m = Manifest::new(1_767_225_600, "airlift test", &index_json);
        m.roots.push(Root {
            kind: RootKind::Image,
            reference: "example.test/app:1".into(),
            tag: Some("1".into()),
            digest: raw.digest.clone(),
            media_type: raw.media_type.clone(),
        });
        m.blobs = table.finish();
        m.base = Some(crate::archive::BaseRef {
            manifest_digest: Digest::sha256_of(b"base"),
            created: "2026-01-01T00:00:00Z".into(),
            file: "app-1.0.tar".into(),
        });
        let manifest_bytes = m.to_canonical_bytes().unwrap();

        let mut tar = Vec::new();
        for (name, bytes) in [
            (OCI_LAYOUT.to_owned(), OCI_LAYOUT_CONTENT.to_vec()),
            (MANIFEST_ENTRY.to_owned(), manifest_bytes.clone()),
            (INDEX_JSON.to_owned(), index_json),
            (EntryName::blob(&raw.digest), image),
        ] {
            write_entry(&mut tar, &name, bytes.len() as u64, 0, &mut &bytes[..]).unwrap();
        }
        let config_digest = Digest::sha256_of(&config);
        tar.extend_from_slice(
            &header(&EntryName::blob(&config_digest), config.len() as u64, 0).unwrap(),
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.tar");
        std::fs::write(&path, &tar).unwrap();

        let r = inspect(&path, &[]).unwrap();
        assert_eq!(r.base, m.base);
        assert_eq!(r.base_blobs.as_ref().map(|t| t.count), Some(0));
        assert!(r.volume.is_none());
        assert_eq!(r.manifest_digest, Digest::sha256_of(&manifest_bytes));
        assert!(r.signatures.is_empty() && !r.trust_checked);
        assert_eq!(r.images.len(), 1);
        assert_eq!(r.images[0].layers, 1);
        assert_eq!(
            r.images[0].size,
            (raw.bytes.len() + config.len() + layer.len()) as u64
        );
        assert_eq!(r.blobs.count, 3);
        // The strict reader opens the header but the cut config entry is fatal.
        let mut reader = crate::archive::ArchiveReader::open(&path).unwrap();
        assert!(reader.header().manifest.base.is_some());
        let mut first = reader.next_blob().unwrap().unwrap();
        std::io::copy(&mut first, &mut std::io::sink()).unwrap();
        drop(first);
        let cut = match reader.next_blob() {
            Err(_) => true,
            Ok(None) => false,
            Ok(Some(mut b)) => std::io::copy(&mut b, &mut std::io::sink()).is_err(),
        };
        assert!(cut, "the cut config entry must fail");
    }
}
