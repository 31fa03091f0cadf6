//! `export --platform`: keep only some platforms of every index, and keep the graph consistent.
//!
//! A registry refuses an index whose children are missing, so each index that loses children
//! is replaced by a filtered index (the original's bytes with the dropped descriptors cut out,
//! `format-spec/archive-v1.md` §11), and every bundle whose lock names a replaced digest is
//! replaced by a derived bundle: the same files with a rewritten `.imgpkg/images.yml`, its
//! layer written as imgpkg writes one, and a new bundle manifest. Nested bundles propagate.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use serde::Deserialize;

use super::TransferError;
use crate::archive::manifest::{PlatformFilter, Replacement};
use crate::author::bundle::rewrite_bundle_layer;
use crate::digest::Digest;
use crate::graph::{Graph, ManifestNode};
use crate::oci::{Descriptor, Platform, RawManifest, media_type};
use crate::reference::Reference;
use crate::registry::Registries;
use crate::store::{ByteStream, Source, StoreError};

/// Annotation marking a BuildKit attestation manifest in an index.
pub const REFERENCE_TYPE: &str = "vnd.docker.reference.type";
/// Annotation naming the manifest an attestation is about.
pub const REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";
/// Largest bundle layer (gzip) or uncompressed bundle tar a derived bundle is made from.
const MAX_BUNDLE_LAYER: u64 = 64 << 20;
/// The lock file a derived bundle rewrites.
const LOCK_PATH: &str = ".imgpkg/images.yml";

/// One `--platform` value: `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformSpec {
    /// Operating system.
    pub os: String,
    /// CPU architecture.
    pub architecture: String,
    /// CPU variant; any variant matches when absent.
    pub variant: Option<String>,
}

impl PlatformSpec {
    /// Parses `linux/amd64` or `linux/arm64/v8`.
    pub fn parse(text: &str) -> Result<PlatformSpec, String> {
        let parts: Vec<&str> = text.split('/').collect();
        let ok = |s: &&str| !s.is_empty();
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(PlatformSpec {
                os: (*os).to_owned(),
                architecture: (*arch).to_owned(),
                variant: None,
            }),
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => Ok(PlatformSpec {
                os: (*os).to_owned(),
                architecture: (*arch).to_owned(),
                variant: Some((*v).to_owned()),
            }),
            _ => Err(format!(
                "{text:?} is not a platform: give os/arch or os/arch/variant (linux/amd64, linux/arm64/v8)"
            )),
        }
    }

    fn matches(&self, p: &Platform) -> bool {
        p.os == self.os
            && p.architecture == self.architecture
            && (self.variant.is_none() || self.variant == p.variant)
    }
}

impl std::fmt::Display for PlatformSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// What filtering did.
#[derive(Debug, Clone, Default)]
pub struct Filtered {
    /// The signed record for the archive manifest (`None` when nothing was replaced).
    pub record: Option<PlatformFilter>,
    /// Indexes replaced by filtered ones.
    pub indexes: usize,
    /// Bundles replaced by derived ones.
    pub bundles: usize,
    /// Bytes of content the filtered graph no longer holds.
    pub left_out_bytes: u64,
    /// Blobs made here (derived bundles' configs and layers), served to the archive writer.
    pub derived_blobs: HashMap<Digest, Bytes>,
}

/// The original index bytes with the `manifests` entries not in `keep` cut out; every other
/// byte (field order, whitespace, annotations, media type) is the original's.
pub fn filter_index_bytes(text: &str, keep: &[bool]) -> Result<String, String> {
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(borrow)]
        manifests: Vec<&'a serde_json::value::RawValue>,
    }
    let probe: Probe = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if probe.manifests.len() != keep.len() || probe.manifests.is_empty() {
        return Err("index children changed while filtering".into());
    }
    let base = text.as_ptr() as usize;
    let mut spans = Vec::with_capacity(probe.manifests.len());
    for raw in &probe.manifests {
        let s = raw.get();
        let start = (s.as_ptr() as usize)
            .checked_sub(base)
            .filter(|&o| o + s.len() <= text.len())
            .ok_or("index entry outside the index text")?;
        spans.push((start, start + s.len()));
    }
    let kept: Vec<usize> = (0..spans.len()).filter(|&i| keep[i]).collect();
    if kept.is_empty() {
        return Err("no entry kept".into());
    }
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..spans[0].0]);
    for (n, &i) in kept.iter().enumerate() {
        out.push_str(&text[spans[i].0..spans[i].1]);
        if let Some(&next) = kept.get(n + 1) {
            // The separator that followed this entry in the original (comma and indentation).
            let sep_end = spans.get(i + 1).map_or(spans[next].0, |s| s.0);
            out.push_str(&text[spans[i].1..sep_end]);
        }
    }
    out.push_str(&text[spans[spans.len() - 1].1..]);
    Ok(out)
}

/// Which children of an index to keep: matching platforms, and attestations of kept ones.
fn keep_children(children: &[Descriptor], platforms: &[PlatformSpec]) -> Vec<bool> {
    let matched: Vec<bool> = children
        .iter()
        .map(|c| {
            let attestation = c
                .annotations
                .as_ref()
                .and_then(|a| a.get(REFERENCE_TYPE))
                .is_some_and(|t| t == "attestation-manifest");
            !attestation
                && c.platform
                    .as_ref()
                    .is_some_and(|p| platforms.iter().any(|s| s.matches(p)))
        })
        .collect();
    let kept: BTreeSet<String> = children
        .iter()
        .zip(&matched)
        .filter(|(_, m)| **m)
        .map(|(c, _)| c.digest.to_string())
        .collect();
    children
        .iter()
        .zip(&matched)
        .map(|(c, m)| {
            *m || c
                .annotations
                .as_ref()
                .and_then(|a| a.get(REFERENCE_DIGEST))
                .is_some_and(|d| kept.contains(d))
        })
        .collect()
}

/// The name to show for a manifest: the reference a root or lock gave it, else where it was found.
fn name_of(graph: &Graph, d: &Digest) -> String {
    if let Some(r) = graph.roots.iter().find(|r| &r.digest == d) {
        return r.reference.original().to_owned();
    }
    if let Some(l) = graph.locked.iter().find(|l| &l.digest == d) {
        return l.image.clone();
    }
    graph
        .manifests
        .get(d)
        .map(|n| n.repo.with_digest(d).to_string())
        .unwrap_or_else(|| d.to_string())
}

fn replace_digests(text: &str, map: &BTreeMap<Digest, Digest>) -> String {
    let mut out = text.to_owned();
    for (old, new) in map {
        out = out.replace(&old.to_string(), &new.to_string());
    }
    out
}

/// Filters every index of `graph` to `platforms` and derives the bundles whose locks named a
/// replaced index; fetches only the layers of those bundles.
pub async fn filter(
    registries: &Registries,
    graph: Graph,
    platforms: &[PlatformSpec],
) -> Result<(Graph, Filtered), TransferError> {
    let before = graph.unique_bytes();
    let mut replaced: BTreeMap<Digest, Digest> = BTreeMap::new();
    let mut new_nodes: BTreeMap<Digest, ManifestNode> = BTreeMap::new();
    for (d, node) in &graph.manifests {
        let children = node.manifest.child_manifests();
        if children.is_empty() {
            continue;
        }
        let keep = keep_children(children, platforms);
        if keep.iter().all(|k| *k) {
            continue;
        }
        if !keep.iter().any(|k| *k) {
            let has: BTreeSet<String> = children
                .iter()
                .filter_map(|c| c.platform.as_ref().map(|p| p.to_string()))
                .collect();
            return Err(TransferError::Usage(format!(
                "{} has no manifest for {}; it has {}: add one of those with --platform",
                name_of(&graph, d),
                platforms
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                has.into_iter().collect::<Vec<_>>().join(", ")
            )));
        }
        let text = std::str::from_utf8(&node.manifest.bytes)
            .map_err(|_| TransferError::Graph(format!("index {d} is not UTF-8")))?;
        let bytes = filter_index_bytes(text, &keep)
            .map_err(|e| TransferError::Graph(format!("index {d}: {e}")))?;
        let m = RawManifest::from_bytes(Bytes::from(bytes), Some(&node.manifest.media_type))?;
        replaced.insert(d.clone(), m.digest.clone());
        new_nodes.insert(
            m.digest.clone(),
            ManifestNode {
                manifest: m,
                repo: node.repo.clone(),
            },
        );
    }
    let indexes = replaced.len();
    // Bundles: re-derived from their original lock with every replacement known so far, until
    // nothing changes (a nested bundle's new digest reaches the outer lock); bounded by the
    // number of bundles.
    let mut layers: HashMap<Digest, Bytes> = HashMap::new();
    let mut derived: Derived = BTreeMap::new();
    for _ in 0..=graph.bundle_locks.len() {
        let mut changed = false;
        for lock in &graph.bundle_locks {
            let applicable: BTreeMap<Digest, Digest> = graph
                .locked
                .iter()
                .filter(|l| l.locked_by == lock.bundle)
                .filter_map(|l| {
                    replaced
                        .get(&l.digest)
                        .map(|n| (l.digest.clone(), n.clone()))
                })
                .collect();
            if applicable.is_empty() {
                continue;
            }
            let node = graph
                .manifests
                .get(&lock.bundle)
                .ok_or_else(|| StoreError::NotFound(lock.bundle.clone()))?;
            let [_, layer] = node.manifest.blobs()[..] else {
                return Err(TransferError::Graph(format!(
                    "bundle {} must have exactly one layer",
                    name_of(&graph, &lock.bundle)
                )));
            };
            if !layers.contains_key(&lock.bundle) {
                let at = node.repo.with_digest(&lock.bundle);
                let client = registries.client(at.registry()).await?;
                let gz = client.read_small_blob(&at, layer, MAX_BUNDLE_LAYER).await?;
                layers.insert(lock.bundle.clone(), gz);
            }
            let text = String::from_utf8_lossy(&lock.lock_bytes);
            let new_lock = replace_digests(&text, &applicable);
            let gz = &layers[&lock.bundle];
            let img = rewrite_bundle_layer(gz, LOCK_PATH, new_lock.as_bytes(), MAX_BUNDLE_LAYER)?;
            let m = RawManifest::from_bytes(
                Bytes::from(img.manifest.clone()),
                Some(media_type::DOCKER_MANIFEST),
            )?;
            if replaced.get(&lock.bundle) == Some(&m.digest) {
                continue;
            }
            changed = true;
            replaced.insert(lock.bundle.clone(), m.digest.clone());
            let [config_desc, layer_desc] = m.blobs()[..] else {
                return Err(TransferError::Graph("derived bundle has no layer".into()));
            };
            let blobs = vec![
                (config_desc.clone(), Bytes::from(img.config)),
                (layer_desc.clone(), Bytes::from(img.layer)),
            ];
            derived.insert(
                lock.bundle.clone(),
                (
                    ManifestNode {
                        manifest: m,
                        repo: node.repo.clone(),
                    },
                    new_lock.into_bytes(),
                    blobs,
                ),
            );
        }
        if !changed {
            break;
        }
    }
    let bundles = derived.len();
    let mut out = rebuild(graph, &replaced, new_nodes, &derived);
    let mut derived_blobs = HashMap::new();
    for (_, _, blobs) in derived.values() {
        for (desc, bytes) in blobs {
            derived_blobs.insert(desc.digest.clone(), bytes.clone());
        }
    }
    prune(&mut out);
    let after = out.unique_bytes();
    let record = (!replaced.is_empty()).then(|| PlatformFilter {
        kept: platforms.iter().map(|p| p.to_string()).collect(),
        replaced: replaced
            .iter()
            .map(|(o, f)| Replacement {
                original: o.clone(),
                filtered: f.clone(),
            })
            .collect(),
    });
    Ok((
        out,
        Filtered {
            record,
            indexes,
            bundles,
            left_out_bytes: before.saturating_sub(after),
            derived_blobs,
        },
    ))
}

/// Each derived bundle by original digest: its node, new lock bytes, config and layer.
type Derived = BTreeMap<Digest, (ManifestNode, Vec<u8>, Vec<(Descriptor, Bytes)>)>;

/// The graph with every replaced digest swapped for its replacement.
fn rebuild(
    mut graph: Graph,
    replaced: &BTreeMap<Digest, Digest>,
    new_nodes: BTreeMap<Digest, ManifestNode>,
    derived: &Derived,
) -> Graph {
    let swap = |d: &Digest| replaced.get(d).cloned().unwrap_or_else(|| d.clone());
    for root in &mut graph.roots {
        root.digest = swap(&root.digest);
    }
    for l in &mut graph.locked {
        if let Some(new) = replaced.get(&l.digest) {
            l.image = l.image.replace(&l.digest.to_string(), &new.to_string());
            l.digest = new.clone();
        }
        l.locked_by = swap(&l.locked_by);
    }
    for lock in &mut graph.bundle_locks {
        if let Some((_, lock_bytes, _)) = derived.get(&lock.bundle) {
            lock.lock_bytes = lock_bytes.clone();
            for (image, _) in &mut lock.entries {
                *image = replace_digests(image, replaced);
            }
        }
        lock.bundle = swap(&lock.bundle);
    }
    for old in replaced.keys() {
        graph.manifests.remove(old);
    }
    graph.manifests.extend(new_nodes);
    for (node, _, _) in derived.values() {
        graph
            .manifests
            .insert(node.manifest.digest.clone(), node.clone());
    }
    graph
}

/// Drops manifests nothing reaches any more and rebuilds the blob table from what is left.
fn prune(graph: &mut Graph) {
    let mut reach: BTreeSet<Digest> = BTreeSet::new();
    let mut queue: Vec<Digest> = graph
        .roots
        .iter()
        .map(|r| r.digest.clone())
        .chain(graph.locked.iter().map(|l| l.digest.clone()))
        .collect();
    while let Some(d) = queue.pop() {
        if !reach.insert(d.clone()) {
            continue;
        }
        if let Some(n) = graph.manifests.get(&d) {
            queue.extend(
                n.manifest
                    .child_manifests()
                    .iter()
                    .map(|c| c.digest.clone()),
            );
        }
    }
    graph.manifests.retain(|d, _| reach.contains(d));
    let old_blobs = std::mem::take(&mut graph.blobs);
    let nodes: Vec<ManifestNode> = graph.manifests.values().cloned().collect();
    for node in &nodes {
        graph.add_blobs_of(node);
    }
    // Keep each blob's source location from the walk (where it can be fetched).
    for (d, b) in &mut graph.blobs {
        if let Some(old) = old_blobs.get(d) {
            b.repo = old.repo.clone();
        }
    }
}

/// The registry source, plus the blobs of derived bundles made in memory.
pub struct WithDerived<'a, S> {
    /// Where everything else comes from.
    pub inner: S,
    /// Derived configs and layers.
    pub derived: &'a HashMap<Digest, Bytes>,
}

impl<S: Source> Source for WithDerived<'_, S> {
    async fn fetch(&self, desc: &Descriptor) -> Result<ByteStream, StoreError> {
        match self.derived.get(&desc.digest) {
            Some(b) => {
                let b = b.clone();
                Ok(Box::pin(futures::stream::iter([Ok::<_, std::io::Error>(
                    b,
                )])))
            }
            None => self.inner.fetch(desc).await,
        }
    }

    fn location(&self, digest: &Digest) -> Option<Reference> {
        self.inner.location(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filtered_index_keeps_every_other_byte() {
        let text = "{\n  \"schemaVersion\": 2,\n  \"manifests\": [\n    {\"a\":1},\n    {\"b\":2},\n    {\"c\":3}\n  ],\n  \"annotations\": {\"x\":\"y\"}\n}";
        assert_eq!(
            filter_index_bytes(text, &[true, false, true]).unwrap(),
            "{\n  \"schemaVersion\": 2,\n  \"manifests\": [\n    {\"a\":1},\n    {\"c\":3}\n  ],\n  \"annotations\": {\"x\":\"y\"}\n}"
        );
        assert_eq!(
            filter_index_bytes(text, &[false, false, true]).unwrap(),
            "{\n  \"schemaVersion\": 2,\n  \"manifests\": [\n    {\"c\":3}\n  ],\n  \"annotations\": {\"x\":\"y\"}\n}"
        );
        assert_eq!(
            filter_index_bytes(r#"{"manifests":[{"a":1},{"b":2}]}"#, &[true, false]).unwrap(),
            r#"{"manifests":[{"a":1}]}"#
        );
    }

    #[test]
    fn attestations_follow_the_child_they_describe() {
        let desc = |digest: &Digest, arch: Option<&str>, about: Option<&Digest>| Descriptor {
            media_type: media_type::OCI_MANIFEST.into(),
            digest: digest.clone(),
            size: 1,
            platform: Some(Platform {
                architecture: arch.unwrap_or("unknown").into(),
                os: if arch.is_some() { "linux" } else { "unknown" }.into(),
                variant: None,
                os_version: None,
            }),
            annotations: about.map(|d| {
                BTreeMap::from([
                    (REFERENCE_TYPE.to_owned(), "attestation-manifest".to_owned()),
                    (REFERENCE_DIGEST.to_owned(), d.to_string()),
                ])
            }),
        };
        let (amd, arm) = (Digest::sha256_of(b"amd"), Digest::sha256_of(b"arm"));
        let children = [
            desc(&amd, Some("amd64"), None),
            desc(&arm, Some("arm64"), None),
            desc(&Digest::sha256_of(b"a1"), None, Some(&amd)),
            desc(&Digest::sha256_of(b"a2"), None, Some(&arm)),
        ];
        let keep = keep_children(&children, &[PlatformSpec::parse("linux/amd64").unwrap()]);
        assert_eq!(keep, vec![true, false, true, false]);
    }

    #[test]
    fn the_checker_refuses_a_replacement_that_is_not_carried() {
        use crate::archive::check::Closure;
        use crate::archive::manifest::Manifest;
        let mut m = Manifest::new(0, "test", b"{}");
        m.platforms = Some(PlatformFilter {
            kept: vec!["linux/amd64".into()],
            replaced: vec![Replacement {
                original: Digest::sha256_of(b"original"),
                filtered: Digest::sha256_of(b"filtered"),
            }],
        });
        let failures = Closure::locks(&m);
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(
            failures[0]
                .message
                .contains("is not a manifest of the archive")
        );
    }

    #[test]
    fn platform_specs_parse_and_match() {
        let p = PlatformSpec::parse("linux/arm64").unwrap();
        let arm = Platform {
            architecture: "arm64".into(),
            os: "linux".into(),
            variant: Some("v8".into()),
            os_version: None,
        };
        assert!(p.matches(&arm));
        assert!(!PlatformSpec::parse("linux/arm64/v7").unwrap().matches(&arm));
        assert!(PlatformSpec::parse("linux").is_err());
        assert!(PlatformSpec::parse("linux//v8").is_err());
    }
}
