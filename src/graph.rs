//! The content graph: roots → bundles' locks → indexes → manifests → configs and layers.
//!
//! Export, import and copy all start from a [`Graph`]; they differ only in where
//! the bytes come from and where they go.

use std::collections::{BTreeMap, BTreeSet};

use crate::digest::Digest;
use crate::oci::{Descriptor, RawManifest};
use crate::reference::Reference;

/// Whether a root or locked image is an imgpkg bundle or a plain image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// An imgpkg bundle (config label `dev.carvel.imgpkg.bundle`).
    Bundle,
    /// A plain image or index.
    Image,
}

/// Something the user asked for: a bundle (`-b`) or image (`-i`).
#[derive(Debug, Clone)]
pub struct Root {
    /// The reference as given (original text kept).
    pub reference: Reference,
    /// The manifest digest it resolved to.
    pub digest: Digest,
    /// The manifest's media type.
    pub media_type: String,
    /// Bundle or image.
    pub kind: Kind,
}

/// An image named by a bundle's `.imgpkg/images.yml`.
#[derive(Debug, Clone)]
pub struct LockedImage {
    /// The `image` text as written in the lock (a digest reference).
    pub image: String,
    /// Its digest.
    pub digest: Digest,
    /// The manifest's media type.
    pub media_type: String,
    /// Whether it is itself a bundle (nested bundle).
    pub kind: Kind,
    /// The bundle whose lock names it.
    pub locked_by: Digest,
}

/// A bundle and the exact lock file it carries.
#[derive(Debug, Clone)]
pub struct BundleLockInfo {
    /// The bundle's manifest digest.
    pub bundle: Digest,
    /// The exact bytes of its `.imgpkg/images.yml`.
    pub lock_bytes: Vec<u8>,
    /// The lock's entries, in file order: (image, annotations).
    pub entries: Vec<(String, BTreeMap<String, String>)>,
}

/// A manifest or index and the repository its content is fetched from.
#[derive(Debug, Clone)]
pub struct ManifestNode {
    /// Exact bytes, media type, digest, children.
    pub manifest: RawManifest,
    /// Where this manifest (and its blobs) live at the source.
    pub repo: Reference,
}

/// Role of a non-manifest blob.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum BlobRole {
    /// An image config.
    Config,
    /// A layer.
    Layer,
}

/// A config or layer blob, stored once however many manifests name it.
#[derive(Debug, Clone)]
pub struct BlobNode {
    /// Digest, size, media type.
    pub desc: Descriptor,
    /// Config or layer.
    pub role: BlobRole,
    /// Where to fetch it at the source (the repository of the first manifest naming it).
    pub repo: Reference,
    /// The manifests that reference it.
    pub referenced_by: BTreeSet<Digest>,
}

/// Everything a transfer moves, deduplicated by digest.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// What was asked for.
    pub roots: Vec<Root>,
    /// Images named by bundle locks (nested bundles included).
    pub locked: Vec<LockedImage>,
    /// Each bundle's lock.
    pub bundle_locks: Vec<BundleLockInfo>,
    /// Every manifest and index.
    pub manifests: BTreeMap<Digest, ManifestNode>,
    /// Every config and layer.
    pub blobs: BTreeMap<Digest, BlobNode>,
    /// Signatures, attestations, SBOMs and other artifacts: manifests of `manifests` that
    /// are about another one (their subject), in discovery order (subjects first).
    pub referrers: Vec<crate::referrers::Referrer>,
}

impl Graph {
    /// The subject of each referrer: the edge that orders it after what it is about.
    pub fn subjects(&self) -> std::collections::HashMap<&Digest, &Digest> {
        self.referrers
            .iter()
            .map(|r| (&r.digest, &r.subject))
            .collect()
    }

    /// Manifests ordered children before parents (so registries accept each push).
    pub fn manifests_children_first(&self) -> Vec<&ManifestNode> {
        let mut out = Vec::with_capacity(self.manifests.len());
        let mut done = BTreeSet::new();
        // Image manifests first (they have no manifest children), then indexes in dependency order.
        for node in self.manifests.values() {
            if !node.manifest.is_index() {
                done.insert(node.manifest.digest.clone());
                out.push(node);
            }
        }
        let mut remaining: Vec<&ManifestNode> = self
            .manifests
            .values()
            .filter(|n| n.manifest.is_index())
            .collect();
        while !remaining.is_empty() {
            let before = remaining.len();
            remaining.retain(|n| {
                let ready =
                    n.manifest.child_manifests().iter().all(|c| {
                        done.contains(&c.digest) || !self.manifests.contains_key(&c.digest)
                    });
                if ready {
                    done.insert(n.manifest.digest.clone());
                    out.push(n);
                }
                !ready
            });
            if remaining.len() == before {
                // A cycle cannot be pushed in any order; append what is left so callers see it fail.
                out.append(&mut remaining);
            }
        }
        out
    }

    /// Sum of the sizes of all unique blobs and manifests.
    pub fn unique_bytes(&self) -> u64 {
        self.blobs.values().map(|b| b.desc.size).sum::<u64>()
            + self
                .manifests
                .values()
                .map(|m| m.manifest.bytes.len() as u64)
                .sum::<u64>()
    }

    /// Bytes that would be stored again without deduplication (blobs named by more than one manifest).
    pub fn dedup_saved_bytes(&self) -> u64 {
        self.blobs
            .values()
            .map(|b| b.desc.size * (b.referenced_by.len().saturating_sub(1) as u64))
            .sum()
    }

    /// Adds a manifest's config and layers, recording which manifest names them.
    pub fn add_blobs_of(&mut self, node: &ManifestNode) {
        let parsed = node.manifest.blobs();
        for (i, desc) in parsed.into_iter().enumerate() {
            let role = if i == 0 {
                BlobRole::Config
            } else {
                BlobRole::Layer
            };
            self.blobs
                .entry(desc.digest.clone())
                .or_insert_with(|| BlobNode {
                    desc: desc.clone(),
                    role,
                    repo: node.repo.clone(),
                    referenced_by: BTreeSet::new(),
                })
                .referenced_by
                .insert(node.manifest.digest.clone());
        }
    }
}
