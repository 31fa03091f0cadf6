//! Import: an archive into a registry; nothing addressable until everything verified.
//!
//! A policy over the engine: the source is the archive store (signatures checked first, every
//! entry admitted under the archive rules, the graph's closure checked), the sink a registry
//! placement. Every blob is verified while it streams, also those the destination already has
//! (`verify_skipped`), and a gate before the manifests holds back a volume set whose blobs
//! are not all at the destination yet. A delta is refused before any push when a blob of its
//! base is missing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::TransferError;
use super::engine::{self, CopyOptions, CopyReport, Reporter};
use super::graph::Graph;
use super::place::{Destination, Placement};
use super::progress::{Progress, ProgressMode};
use super::provenance;
use super::relocate::metadata_images;
use super::volumes::VolumeGate;
use crate::archive::manifest::Manifest;
use crate::digest::Digest;
use crate::oci::Descriptor;
use crate::registry::Registries;
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
    /// Tags moved back to an older release (only with `allow_downgrade`).
    pub rollbacks: Vec<String>,
}

/// How an import runs.
#[derive(Debug, Clone, Copy)]
pub struct ImportOptions {
    /// Uploads in flight at once.
    pub concurrency: usize,
    /// Progress display.
    pub progress: ProgressMode,
    /// Read back the blobs the destination already has and check their digests.
    pub verify_existing: bool,
    /// Move tags back to an older release on purpose (a rollback).
    pub allow_downgrade: bool,
}

/// Pushes an opened archive to `dest`.
pub async fn import(
    registries: &Registries,
    opened: OpenedArchive,
    dest: &Destination,
    options: ImportOptions,
) -> Result<(ImportSummary, Placement, Graph), TransferError> {
    let ImportOptions {
        concurrency,
        progress,
        verify_existing,
        allow_downgrade,
    } = options;
    // Borrowed, not cloned: at 10,000 images a copy of the graph is tens of MiB.
    let graph = &opened.graph;
    let placement = Placement::plan(graph, dest)?;
    let manifest = &opened.header.manifest;
    // A delta relies on blobs of its base: they must be at the destination before anything else.
    let sink = RegistrySink::new(
        registries,
        &placement,
        graph,
        metadata_images(graph, &placement, dest)?,
    )
    .verify_existing(verify_existing);
    check_base_present(&sink, graph, manifest).await?;
    // No tag moves back to an older release, whichever host imported the newer one.
    let release = release_of(&opened);
    let (records, rollbacks) =
        provenance::check(registries, &placement, &release, allow_downgrade).await?;
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
    let gate = VolumeGate {
        registries,
        sink: &sink,
        graph,
        placement: &placement,
        opened: &opened,
        needed: Mutex::new(Vec::new()),
    };
    let opts = CopyOptions {
        concurrency,
        verify_skipped: true,
    };
    let report = engine::copy(&opened, &sink, graph, blobs, opts, &reporter, &gate).await?;
    progress.finish();
    let complete = report.complete;
    if complete {
        provenance::record(registries, &placement, &release, records).await?;
    }
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
        rollbacks,
    };
    Ok((summary, placement, opened.graph))
}

/// How the tag provenance record names this archive.
fn release_of(opened: &OpenedArchive) -> provenance::Release {
    let h = &opened.header;
    provenance::Release {
        archive: Digest::sha256_of(&h.manifest_bytes),
        created: h.manifest.created.clone(),
        sequence: h.manifest.sequence,
        file: opened
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    }
}

/// Fails, naming the blobs and the base, unless every blob a delta relies on is at the
/// destination (a blob in another repository of the same registry is mounted).
async fn check_base_present(
    sink: &RegistrySink<'_>,
    graph: &Graph,
    manifest: &Manifest,
) -> Result<(), TransferError> {
    let Some(base) = &manifest.base else {
        return Ok(());
    };
    let mut missing = Vec::new();
    for b in manifest.base_blobs() {
        if let Some(node) = graph.blobs.get(&b.digest)
            && !sink.ensure_present(&node.desc).await?
        {
            missing.push(b.digest.to_string());
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
