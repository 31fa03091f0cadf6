//! Volume sets imported one stick per run: the gate that holds manifests and tags back until
//! every blob is at the destination, and the assembly of blobs split across volumes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;

use super::TransferError;
use super::engine::{CopyReport, Hooks};
use crate::archive::manifest::Manifest;
use crate::digest::Digest;
use crate::graph::Graph;
use crate::oci::Descriptor;
use crate::reference::Reference;
use crate::registry::Registries;
use crate::store::archive::{ArchiveStore as OpenedArchive, Segment, VolumeSource, segment_stream};
use crate::store::place::Placement;
use crate::store::registry::RegistrySink;

/// Holds manifests and tags back until every carried blob is at the destination (a volume
/// set imported one stick per run), and assembles split blobs whose parts came over runs.
pub(crate) struct VolumeGate<'a> {
    pub(crate) registries: &'a Registries,
    pub(crate) sink: &'a RegistrySink<'a>,
    pub(crate) graph: &'a Graph,
    pub(crate) placement: &'a Placement,
    pub(crate) opened: &'a OpenedArchive,
    pub(crate) needed: Mutex<Vec<u32>>,
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
        let others: Vec<Descriptor> = self
            .graph
            .blobs
            .values()
            .filter(|b| {
                let d = &b.desc.digest;
                !self.opened.carries(d)
                    && !report.pushed_digests.contains(d)
                    && manifest.blob(d).is_some_and(|e| !e.base)
            })
            .map(|b| b.desc.clone())
            .collect();
        let absent = self.sink.absent(&others).await?;
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
