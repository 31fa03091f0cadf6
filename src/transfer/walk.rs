//! Builds a [`Graph`] by walking a registry from the roots the user named.
//!
//! Manifests are fetched (and checked against their digests) with bounded
//! concurrency; config and layer blobs are only recorded, never read, except the
//! small config and layer of a bundle, which are needed to find its lock.

use std::collections::BTreeSet;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::TransferError;
use super::graph::{BundleLockInfo, Graph, Kind, LockedImage, ManifestNode, Root};
use crate::digest::Digest;
use crate::oci::{Descriptor, RawManifest};
use crate::reference::Reference;
use crate::registry::{Registries, RegistryError};

use crate::author::bundle::BUNDLE_LABEL;
/// Largest bundle config or layer read into memory.
const MAX_SMALL_BLOB: u64 = 64 * 1024 * 1024;
/// Largest `.imgpkg/images.yml` accepted.
const MAX_LOCK_BYTES: u64 = 16 * 1024 * 1024;
/// Nesting depth of bundles beyond which the walk stops (cycles, hostile locks).
const MAX_BUNDLE_DEPTH: usize = 32;

/// What the user asked to move.
#[derive(Debug, Clone)]
pub enum RootRequest {
    /// `-b REF`: a bundle and everything its lock names.
    Bundle(Reference),
    /// `-i REF`: an image or index.
    Image(Reference),
}

/// Walks registries to build the graph for `requests`.
pub struct Walker<'a> {
    registries: &'a Registries,
    concurrency: usize,
}

impl<'a> Walker<'a> {
    /// A walker that keeps at most `concurrency` requests in flight.
    pub fn new(registries: &'a Registries, concurrency: usize) -> Self {
        Walker {
            registries,
            concurrency: concurrency.max(1),
        }
    }

    /// Fetches one manifest (by tag or digest).
    pub async fn manifest(&self, at: &Reference) -> Result<RawManifest, RegistryError> {
        self.registries
            .client(at.registry())
            .await?
            .get_manifest(at)
            .await
    }

    /// Reads a small blob (a config, a bundle layer) into memory, refusing anything over `limit`.
    pub async fn small_blob(
        &self,
        repo: &Reference,
        desc: &Descriptor,
        limit: u64,
    ) -> Result<Bytes, TransferError> {
        let client = self.registries.client(repo.registry()).await?;
        Ok(client.read_small_blob(repo, desc, limit).await?)
    }

    /// Whether an image manifest's config carries the imgpkg bundle label.
    async fn is_bundle(&self, node: &ManifestNode) -> Result<bool, TransferError> {
        let blobs = node.manifest.blobs();
        let Some(config) = blobs.first() else {
            return Ok(false);
        };
        let bytes = self.small_blob(&node.repo, config, MAX_SMALL_BLOB).await?;
        Ok(crate::author::bundle::config_is_bundle(&bytes))
    }

    /// Fetches a manifest and, if it is an index, all its children (all platforms), into `graph`.
    pub(crate) async fn add_tree(
        &self,
        graph: &mut Graph,
        top: RawManifest,
        repo: &Reference,
    ) -> Result<(), TransferError> {
        let mut level = vec![ManifestNode {
            manifest: top,
            repo: repo.clone(),
        }];
        let mut seen_depth = 0usize;
        while !level.is_empty() {
            seen_depth += 1;
            if seen_depth > 16 {
                return Err(TransferError::Graph(format!(
                    "index nesting deeper than 16 under {repo}: refusing (cycle?)"
                )));
            }
            let mut next_refs: Vec<(Reference, Descriptor)> = Vec::new();
            for node in level.drain(..) {
                if graph.manifests.contains_key(&node.manifest.digest) {
                    continue;
                }
                for child in node.manifest.child_manifests() {
                    if !graph.manifests.contains_key(&child.digest) {
                        next_refs.push((node.repo.with_digest(&child.digest), child.clone()));
                    }
                }
                graph.add_blobs_of(&node);
                graph.manifests.insert(node.manifest.digest.clone(), node);
            }
            let mut seen = BTreeSet::new();
            next_refs.retain(|(_, d)| seen.insert(d.digest.clone()));
            level = futures::stream::iter(next_refs)
                .map(|(at, desc)| async move {
                    let m = self.manifest(&at).await?;
                    if m.bytes.len() as u64 != desc.size {
                        return Err(TransferError::Graph(format!(
                            "manifest {at} is {} bytes but its index says {}",
                            m.bytes.len(),
                            desc.size
                        )));
                    }
                    Ok(ManifestNode {
                        manifest: m,
                        repo: at,
                    })
                })
                .buffer_unordered(self.concurrency)
                .try_collect()
                .await?;
        }
        Ok(())
    }

    /// Builds the whole graph for the requests.
    pub async fn walk(&self, requests: &[RootRequest]) -> Result<Graph, TransferError> {
        let mut graph = Graph::default();
        // Bundles whose locks still have to be read: (bundle node digest, depth).
        let mut bundles: Vec<(Digest, usize)> = Vec::new();
        for req in requests {
            let (r, want_bundle) = match req {
                RootRequest::Bundle(r) => (r, true),
                RootRequest::Image(r) => (r, false),
            };
            let m = self.manifest(r).await?;
            let digest = m.digest.clone();
            let media_type = m.media_type.clone();
            let repo = r.clone();
            self.add_tree(&mut graph, m, &repo).await?;
            let node = graph
                .manifests
                .get(&digest)
                .cloned()
                .ok_or_else(|| TransferError::Graph(format!("{r} vanished from the graph")))?;
            let is_bundle = !node.manifest.is_index() && self.is_bundle(&node).await?;
            match (want_bundle, is_bundle) {
                (true, false) => {
                    return Err(TransferError::Usage(format!(
                        "{} is not an imgpkg bundle (its config has no {BUNDLE_LABEL} label); use -i for images",
                        r.original()
                    )));
                }
                (false, true) => {
                    return Err(TransferError::Usage(format!(
                        "{} is an imgpkg bundle; use -b so that the images it locks come along",
                        r.original()
                    )));
                }
                _ => {}
            }
            if is_bundle {
                bundles.push((digest.clone(), 0));
            }
            graph.roots.push(Root {
                reference: r.clone(),
                digest,
                media_type,
                kind: if is_bundle { Kind::Bundle } else { Kind::Image },
            });
        }
        let mut done_bundles = BTreeSet::new();
        while let Some((bundle_digest, depth)) = bundles.pop() {
            if !done_bundles.insert(bundle_digest.clone()) {
                continue;
            }
            if depth > MAX_BUNDLE_DEPTH {
                return Err(TransferError::Graph(format!(
                    "bundles nested deeper than {MAX_BUNDLE_DEPTH} at {bundle_digest}"
                )));
            }
            let node = graph
                .manifests
                .get(&bundle_digest)
                .cloned()
                .ok_or_else(|| TransferError::Graph(format!("bundle {bundle_digest} missing")))?;
            let lock = self.read_bundle_lock(&node).await?;
            for (image, _) in &lock.entries {
                let locked = Reference::parse(image).map_err(|e| {
                    TransferError::Graph(format!(
                        "bundle {}: .imgpkg/images.yml: {e}",
                        node.repo.with_digest(&bundle_digest)
                    ))
                })?;
                let Some(d) = locked.digest().cloned() else {
                    return Err(TransferError::Graph(format!(
                        "bundle {}: .imgpkg/images.yml names {image}, which is not a digest reference",
                        node.repo.with_digest(&bundle_digest)
                    )));
                };
                // As imgpkg does: look in the bundle's own repository first (a relocated bundle), then at the lock's location.
                let in_bundle_repo = node.repo.with_digest(&d);
                let (m, repo) = match self.manifest(&in_bundle_repo).await {
                    Ok(m) => (m, in_bundle_repo),
                    Err(_) => {
                        let at = locked.with_digest(&d);
                        (self.manifest(&at).await?, at)
                    }
                };
                let media_type = m.media_type.clone();
                let is_index = m.is_index();
                self.add_tree(&mut graph, m, &repo).await?;
                let child = graph
                    .manifests
                    .get(&d)
                    .cloned()
                    .ok_or_else(|| TransferError::Graph(format!("{image} vanished")))?;
                let nested = !is_index && self.is_bundle(&child).await?;
                if nested {
                    bundles.push((d.clone(), depth + 1));
                }
                graph.locked.push(LockedImage {
                    image: image.clone(),
                    digest: d,
                    media_type,
                    kind: if nested { Kind::Bundle } else { Kind::Image },
                    locked_by: bundle_digest.clone(),
                });
            }
            graph.bundle_locks.push(lock);
        }
        Ok(graph)
    }

    async fn read_bundle_lock(&self, node: &ManifestNode) -> Result<BundleLockInfo, TransferError> {
        let blobs = node.manifest.blobs();
        let at = node.repo.with_digest(&node.manifest.digest);
        let [_config, layer] = blobs.as_slice() else {
            return Err(TransferError::Graph(format!(
                "bundle {at} must have exactly one layer, has {}",
                blobs.len().saturating_sub(1)
            )));
        };
        let gz = self.small_blob(&node.repo, layer, MAX_SMALL_BLOB).await?;
        let lock_bytes =
            crate::author::extract::file_from_gzip_layer(&gz, ".imgpkg/images.yml", MAX_LOCK_BYTES)
                .map_err(|e| TransferError::Graph(format!("bundle {at}: {e}")))?;
        let text = String::from_utf8(lock_bytes.clone()).map_err(|_| {
            TransferError::Graph(format!("bundle {at}: .imgpkg/images.yml is not UTF-8"))
        })?;
        let name = std::path::PathBuf::from(format!("{at}: .imgpkg/images.yml"));
        let entries =
            crate::author::lock::ImagesLock::parse(&text, &name, &crate::yaml::Limits::default())
                .map_err(|e| TransferError::Graph(e.to_string()))?
                .images
                .into_iter()
                .map(|i| (i.image, i.annotations))
                .collect();
        Ok(BundleLockInfo {
            bundle: node.manifest.digest.clone(),
            lock_bytes,
            entries,
        })
    }
}
