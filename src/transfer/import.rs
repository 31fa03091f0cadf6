//! Import: an archive into a registry; nothing addressable until everything verified.
//!
//! A policy over the engine: the source is the archive store (signatures checked first, every
//! entry admitted under the archive rules, the graph's closure checked), the sink a registry
//! placement. Every blob is verified while it streams, also those the destination already has
//! (`verify_skipped`), and a gate before the manifests holds back a volume set whose blobs
//! are not all at the destination yet. A delta is refused before any push when a blob of its
//! base is missing.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use futures::StreamExt;

use super::TransferError;
use super::engine::{self, CopyOptions, CopyReport, Hooks, Reporter};
use super::graph::Graph;
use super::place::{Destination, Placement};
use super::progress::{Progress, ProgressMode};
use super::relocate::metadata_images;
use crate::archive::manifest::Manifest;
use crate::digest::Digest;
use crate::oci::Descriptor;
use crate::reference::Reference;
use crate::registry::Registries;
use crate::store::archive::{Segment, VolumeSource, segment_stream};
use crate::store::registry::RegistrySink;

pub use crate::store::archive::{
    ArchiveStore as OpenedArchive, Trust, graph_from_archive, open_archive, open_archives,
};

/// What an import did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImportSummary {
    /// sha256 of the archive's airlift manifest.
    pub manifest_digest: Digest,
    /// Trusted signers.
    pub signers: Vec<String>,
    /// The registry work.
    pub report: CopyReport,
    /// Where each root and locked image went.
    pub mapping: BTreeMap<String, String>,
    /// Whether every blob is now at the destination and manifests and tags were pushed
    /// (false after a run given only some volumes of a set).
    pub complete: bool,
    /// Volumes still to import before manifests and tags can be pushed.
    pub volumes_needed: Vec<u32>,
}

/// Pushes an opened archive to `dest`.
pub async fn import(
    registries: &Registries,
    opened: OpenedArchive,
    dest: &Destination,
    concurrency: usize,
    progress: ProgressMode,
) -> Result<(ImportSummary, Placement, Graph), TransferError> {
    let graph = opened.graph.clone();
    let placement = Placement::plan(&graph, dest)?;
    let manifest = &opened.header.manifest;
    // A delta relies on blobs of its base: they must be at the destination before anything else.
    check_base_present(registries, &graph, &placement, manifest).await?;
    // This run pushes what its files carry: for volumes, whole blobs and split blobs with all parts.
    let blobs: Vec<Descriptor> = graph
        .blobs
        .values()
        .filter(|b| opened.carries(&b.desc.digest))
        .map(|b| b.desc.clone())
        .collect();
    let total: u64 = blobs.iter().map(|b| b.size).sum();
    let progress = Arc::new(Progress::new(progress, "import", blobs.len() as u64, total));
    let reporter: Arc<dyn Reporter> = progress.clone();
    let sink = RegistrySink::new(
        registries,
        &placement,
        &graph,
        metadata_images(&graph, &placement, dest)?,
    );
    let gate = VolumeGate {
        registries,
        graph: &graph,
        placement: &placement,
        opened: &opened,
        needed: Mutex::new(Vec::new()),
    };
    let opts = CopyOptions {
        concurrency,
        verify_skipped: true,
    };
    let report = engine::copy(&opened, &sink, &graph, blobs, opts, &reporter, &gate).await?;
    progress.finish();
    let complete = report.complete;
    let summary = ImportSummary {
        manifest_digest: crate::digest::Digest::sha256_of(&opened.header.manifest_bytes),
        signers: opened.signers.clone(),
        report,
        mapping: if complete {
            placement
                .mapping
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect()
        } else {
            BTreeMap::new()
        },
        complete,
        volumes_needed: gate.needed.into_inner().unwrap_or_default(),
    };
    Ok((summary, placement, graph))
}

/// Holds manifests and tags back until every carried blob is at the destination (a volume
/// set imported one stick per run), and assembles split blobs whose parts came over runs.
struct VolumeGate<'a> {
    registries: &'a Registries,
    graph: &'a Graph,
    placement: &'a Placement,
    opened: &'a OpenedArchive,
    needed: Mutex<Vec<u32>>,
}

impl Hooks for VolumeGate<'_> {
    async fn before_manifests(&self, report: &mut CopyReport) -> Result<bool, TransferError> {
        let manifest = &self.opened.header.manifest;
        let split_needed = match self.opened.volume_source() {
            Some(v) => {
                handle_split_blobs(
                    self.registries,
                    self.graph,
                    self.placement,
                    manifest,
                    v,
                    report,
                )
                .await?
            }
            None => HashMap::new(),
        };
        // Every carried blob not handled by this run must already be at the destination.
        let others: Vec<Digest> = self
            .graph
            .blobs
            .keys()
            .filter(|d| {
                !self.opened.carries(d)
                    && !report.pushed_digests.contains(*d)
                    && manifest.blob(d).is_some_and(|b| !b.base)
            })
            .cloned()
            .collect();
        let absent = absent_blobs(self.registries, self.placement, &others).await?;
        if absent.is_empty() {
            return Ok(true);
        }
        let mut needed: Vec<u32> = absent
            .iter()
            .filter_map(|d| manifest.blob(d))
            .flat_map(|b| match split_needed.get(&b.digest) {
                Some(v) => v.clone(),
                None => manifest.volumes_of(b),
            })
            .collect();
        needed.sort_unstable();
        needed.dedup();
        if let Ok(mut n) = self.needed.lock() {
            *n = needed;
        }
        Ok(false)
    }
}

/// Reads one volume entry to its end, verifying it.
async fn verify_segment(seg: Segment) -> Result<(), TransferError> {
    let mut s = segment_stream(seg);
    while let Some(chunk) = s.next().await {
        chunk.map_err(|e| TransferError::Verification(e.to_string()))?;
    }
    Ok(())
}

/// Split blobs whose parts are spread over volumes given to different runs.
///
/// A run that lacks some parts pushes the parts it has to the destination as blobs of their
/// own (named by their part digests, which the signed manifest lists). The run that has, or
/// finds at the destination, every part streams them in order (from its volumes or back from
/// the registry) into one upload of the whole blob, which the registry checks against the
/// blob's digest. Returns, for each split blob still incomplete, the volumes it still needs.
async fn handle_split_blobs(
    registries: &Registries,
    graph: &Graph,
    placement: &Placement,
    manifest: &Manifest,
    vols: &VolumeSource,
    report: &mut CopyReport,
) -> Result<HashMap<Digest, Vec<u32>>, TransferError> {
    let mut needed = HashMap::new();
    for b in manifest
        .blobs
        .iter()
        .filter(|b| !b.parts.is_empty() && !b.base)
    {
        if vols.complete.contains_key(&b.digest) {
            continue;
        }
        let Some(node) = graph.blobs.get(&b.digest) else {
            continue;
        };
        let slots = vols.partial.get(&b.digest).cloned().unwrap_or_default();
        let local = |i: usize| slots.get(i).cloned().flatten();
        let part_desc = |p: &crate::archive::BlobPart| Descriptor {
            media_type: "application/octet-stream".into(),
            digest: p.digest.clone(),
            size: p.size,
            platform: None,
            annotations: None,
        };
        let repos: Vec<String> = placement
            .blob_repos
            .get(&b.digest)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for repo in repos {
            let at = Placement::at(&repo, &b.digest)?;
            let client = registries.client(at.registry()).await?;
            if client.blob_exists(&at, &b.digest).await? {
                continue;
            }
            let mut there = Vec::new();
            for p in &b.parts {
                let part_at = Placement::at(&repo, &p.digest)?;
                there.push(client.blob_exists(&part_at, &p.digest).await?);
            }
            let all = (0..b.parts.len()).all(|i| there[i] || local(i).is_some());
            if all {
                let sources: Vec<(Option<Segment>, Reference, Descriptor)> = b
                    .parts
                    .iter()
                    .enumerate()
                    .map(|(i, p)| Ok((local(i), Placement::at(&repo, &p.digest)?, part_desc(p))))
                    .collect::<Result<_, TransferError>>()?;
                let c = Arc::clone(&client);
                client
                    .put_blob(&at, &node.desc, || {
                        let sources = sources.clone();
                        let c = Arc::clone(&c);
                        async move {
                            let s = futures::stream::iter(sources)
                                .map(move |(seg, part_at, desc)| match seg {
                                    Some(seg) => segment_stream(seg),
                                    None => c.get_blob(&part_at, &desc).into_io_stream().boxed(),
                                })
                                .flatten();
                            Ok(s)
                        }
                    })
                    .await?;
                report.blobs_pushed += 1;
                report.bytes_pushed += b.size;
                report.pushed_digests.insert(b.digest.clone());
            } else {
                for (i, p) in b.parts.iter().enumerate() {
                    if let Some(seg) = local(i).filter(|_| there[i]) {
                        // Already at the destination: still read and verified, so a tampered
                        // volume fails whatever the destination holds.
                        verify_segment(seg).await?;
                        continue;
                    }
                    if let Some(seg) = local(i).filter(|_| !there[i]) {
                        let part_at = Placement::at(&repo, &p.digest)?;
                        client
                            .put_blob(&part_at, &part_desc(p), || {
                                let seg = seg.clone();
                                async move { Ok(segment_stream(seg)) }
                            })
                            .await?;
                        there[i] = true;
                    }
                }
                let mut vols_needed: Vec<u32> = b
                    .parts
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !there[*i])
                    .map(|(_, p)| p.volume)
                    .collect();
                vols_needed.dedup();
                needed.insert(b.digest.clone(), vols_needed);
            }
        }
    }
    Ok(needed)
}

/// The blobs among `digests` missing from at least one repository they belong in.
async fn absent_blobs(
    registries: &Registries,
    placement: &Placement,
    digests: &[Digest],
) -> Result<Vec<Digest>, TransferError> {
    let checks = futures::stream::iter(digests.iter().cloned())
        .map(|d| async move {
            let repos = placement.blob_repos.get(&d).cloned().unwrap_or_default();
            for repo in repos {
                let at = Placement::at(&repo, &d)?;
                let client = registries.client(at.registry()).await?;
                if !client.blob_exists(&at, &d).await? {
                    return Ok::<_, TransferError>(Some(d));
                }
            }
            Ok(None)
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    let mut out = Vec::new();
    for c in checks {
        if let Some(d) = c? {
            out.push(d);
        }
    }
    out.sort();
    Ok(out)
}

/// Fails, naming the blobs and the base, unless every blob a delta relies on is at the
/// destination (a blob in another repository of the same registry is mounted).
async fn check_base_present(
    registries: &Registries,
    graph: &Graph,
    placement: &Placement,
    manifest: &Manifest,
) -> Result<(), TransferError> {
    let Some(base) = &manifest.base else {
        return Ok(());
    };
    let mut missing = Vec::new();
    for b in manifest.base_blobs() {
        if !graph.blobs.contains_key(&b.digest) {
            continue;
        }
        let repos: Vec<String> = placement
            .blob_repos
            .get(&b.digest)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        let mut have = Vec::new();
        let mut lack = Vec::new();
        for repo in &repos {
            let at = Placement::at(repo, &b.digest)?;
            let client = registries.client(at.registry()).await?;
            if client.blob_exists(&at, &b.digest).await? {
                have.push(at);
            } else {
                lack.push(at);
            }
        }
        for at in lack {
            let client = registries.client(at.registry()).await?;
            let from = have.iter().find(|h| h.registry() == at.registry());
            let mounted = match from {
                Some(from) => {
                    client.mount_blob(&at, from, &b.digest).await
                        && client.blob_exists(&at, &b.digest).await?
                }
                None => false,
            };
            if !mounted {
                missing.push(b.digest.to_string());
                break;
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(TransferError::Verification(format!(
        "this delta relies on {} blob(s) missing from the destination: {}; they came with the base archive {} (manifest {}, created {}): import it first",
        missing.len(),
        first_ten(&missing),
        base.file,
        base.manifest_digest,
        base.created
    )))
}

/// The first ten items of a list, comma-separated: enough to act on, bounded for huge archives.
fn first_ten(items: &[impl std::fmt::Display]) -> String {
    items
        .iter()
        .take(10)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
