//! Export: a walked graph into a signed archive, streamed from the registry.
//!
//! The airlift manifest (with the complete blob table) is built from the graph
//! before the first byte is written, so signatures come first in the tar; then
//! blobs follow in the manifest's order, each downloaded while earlier ones are
//! written (bounded prefetch), each verified as it passes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;

use super::TransferError;
pub use super::delta::Base;
use super::engine::{self, CopyOptions, NoHooks, Reporter, Silent};
use super::progress::{Progress, ProgressMode};
use crate::archive::manifest::Role;
use crate::archive::plan::{plan_volumes, set_part_digests};
use crate::archive::writer::{WriteOptions, sign_manifest};
use crate::digest::{Digest, Hasher};
use crate::graph::Graph;
use crate::keys::SigningKey;
use crate::oci::Descriptor;
use crate::registry::Registries;
use crate::store::registry::RegistrySource;
use crate::store::writer::{ArchiveLayout, ArchiveSink, previous_manifest};
pub use crate::store::writer::{
    build_manifest, build_manifest_model, partial_path, split_output, volume_path, write_checksums,
};
use crate::store::{Source, StoreError};

/// How to write the archive.
pub struct ExportOptions {
    /// The archive path (written as `PATH.partial`, renamed when complete); with volumes,
    /// `NAME.tar` gives `NAME.001.tar`, `NAME.002.tar`, ….
    pub output: PathBuf,
    /// Split into volume files of at most this many bytes.
    pub volume_size: Option<u64>,
    /// Leave out the layers this base already delivered (a delta archive).
    pub base: Option<Base>,
    /// Keep the verified entries of `.partial` (and finished) files of an interrupted run.
    pub resume: bool,
    /// Compress with zstd.
    pub zstd: bool,
    /// Keys to sign with (none: unsigned, which must have been asked for explicitly).
    pub signers: Vec<SigningKey>,
    /// Creation time (`SOURCE_DATE_EPOCH` for reproducible archives).
    pub created: u64,
    /// Blobs downloaded ahead of the one being written.
    pub prefetch: usize,
    /// Progress display.
    pub progress: ProgressMode,
    /// The signed `sequence` and `expires` freeze fields.
    pub freeze: crate::archive::manifest::Freeze,
    /// What `--platform` filtering did (recorded, signed; its derived blobs are written from
    /// memory); default when not filtering.
    pub platforms: super::platform::Filtered,
}

/// What an export wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportSummary {
    /// The archive written (the first volume of a set).
    pub path: PathBuf,
    /// Every archive file written (one, or each volume in order).
    pub files: Vec<PathBuf>,
    /// The `NAME.B3SUMS` and `NAME.SHA256SUMS` files.
    pub checksum_files: Vec<PathBuf>,
    /// Blobs relied on from the base and not carried.
    pub base_blobs: usize,
    /// Entries found whole in files of an interrupted run and kept.
    pub resumed_entries: usize,
    /// Roots plus locked images.
    pub images: usize,
    /// Blobs stored (manifests included).
    pub blobs: usize,
    /// Bytes of blob content stored.
    pub blob_bytes: u64,
    /// Bytes not stored twice thanks to deduplication.
    pub dedup_saved_bytes: u64,
    /// Size of the archive file.
    pub archive_bytes: u64,
    /// sha256 of the airlift manifest: the archive's identity.
    pub manifest_digest: Digest,
    /// Fingerprints of the signers.
    pub signers: Vec<String>,
}

/// Hashes each part of a blob that will be split, fetching it once (the signed manifest
/// lists part digests, so they are needed before the first byte is written).
async fn hash_parts(
    source: &impl Source,
    desc: &Descriptor,
    sizes: Vec<u64>,
) -> Result<Vec<Digest>, TransferError> {
    let mut stream = source.fetch(desc).await?;
    let mut sizes = sizes.into_iter();
    let (mut left, mut out) = (sizes.next(), Vec::new());
    let mut h = Hasher::new(desc.digest.algorithm());
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(StoreError::io(format!("reading blob {}", desc.digest)))?;
        let mut rest = &chunk[..];
        while let (Some(l), false) = (left, rest.is_empty()) {
            let n = usize::try_from(l).unwrap_or(usize::MAX).min(rest.len());
            h.update(&rest[..n]);
            rest = &rest[n..];
            left = Some(l - n as u64);
            if left == Some(0) {
                out.push(std::mem::replace(&mut h, Hasher::new(desc.digest.algorithm())).finish());
                left = sizes.next();
            }
        }
    }
    Ok(out)
}

/// Refuses to resume when a root now resolves to other content than the interrupted run
/// exported, naming it: the operator must know which tag moved.
fn refuse_moved_roots(
    previous: &crate::archive::Manifest,
    now: &crate::archive::Manifest,
) -> Result<(), TransferError> {
    for root in &now.roots {
        if let Some(old) = previous
            .roots
            .iter()
            .find(|r| r.reference == root.reference && r.digest != root.digest)
        {
            return Err(TransferError::Usage(format!(
                "cannot resume: the source changed since the interrupted run: {} now resolves \
                 to {}, the interrupted run exported {}; remove the old files or export \
                 without --resume",
                root.reference, root.digest, old.digest
            )));
        }
    }
    Ok(())
}

/// Writes `graph` to an archive (one file or a volume set), streaming configs and layers from
/// the registries; with `resume`, keeps what an interrupted run wrote and fetches the rest.
pub async fn export(
    registries: &Registries,
    graph: &Graph,
    opts: ExportOptions,
) -> Result<ExportSummary, TransferError> {
    // The writer hashes every byte and aborts on a mismatch, so downloads check only length.
    // Blobs of derived (platform-filtered) bundles exist only in memory until written.
    let derived = opts.platforms.derived_blobs.clone();
    let source = super::platform::WithDerived {
        inner: RegistrySource::new(registries, graph).length_checked(),
        derived: &derived,
    };
    export_from(&source, graph, opts).await
}

/// [`export`] from any source (another tool's archive for `export --from`): one writer path.
pub async fn export_from(
    source: &impl Source,
    graph: &Graph,
    opts: ExportOptions,
) -> Result<ExportSummary, TransferError> {
    if opts.zstd && (opts.volume_size.is_some() || opts.resume) {
        return Err(TransferError::Usage(
            "--zstd cannot be combined with --volume-size or --resume (compressed sizes are not known in advance, and a compressed stream cannot be reopened)".into(),
        ));
    }
    let (dir, stem) = split_output(&opts.output);
    let first = match opts.volume_size {
        None => opts.output.clone(),
        // The volume count is not known yet; the width is at least 3, so try the usual names.
        Some(_) => volume_path(&dir, &stem, 1, 1),
    };
    let previous = if opts.resume {
        previous_manifest(&first)
    } else {
        None
    };
    let created = match &previous {
        Some(m) if std::env::var_os("SOURCE_DATE_EPOCH").is_none() => {
            chrono::DateTime::parse_from_rfc3339(&m.created)
                .ok()
                .and_then(|t| u64::try_from(t.timestamp()).ok())
                .unwrap_or(opts.created)
        }
        _ => opts.created,
    };
    let (mut manifest, index_json) = build_manifest_model(graph, created)?;
    opts.freeze.apply(&mut manifest, created);
    manifest.platforms = opts.platforms.record.clone();
    if let Some(prev) = &previous {
        refuse_moved_roots(prev, &manifest)?;
    }
    let mut base_blobs = 0;
    if let Some(base) = &opts.base {
        for b in manifest.blobs.iter_mut() {
            if b.role == Role::Layer && base.blobs.contains(&b.digest) {
                b.base = true;
                base_blobs += 1;
            }
        }
        manifest.base = Some(base.reference.clone());
    }
    if let Some(size) = opts.volume_size {
        plan_volumes(
            &mut manifest,
            size,
            opts.signers.len(),
            index_json.len() as u64,
        )
        .map_err(|e| TransferError::Usage(e.to_string()))?;
        let split: Vec<(Digest, Vec<u64>)> = manifest
            .blobs
            .iter()
            .filter(|b| !b.parts.is_empty())
            .map(|b| (b.digest.clone(), b.parts.iter().map(|p| p.size).collect()))
            .collect();
        for (d, sizes) in split {
            let known: Option<Vec<Digest>> = previous
                .as_ref()
                .and_then(|m| m.blob(&d))
                .filter(|b| b.parts.iter().map(|p| p.size).eq(sizes.iter().copied()))
                .map(|b| b.parts.iter().map(|p| p.digest.clone()).collect());
            let digests = match known {
                Some(v) => v,
                None => {
                    let desc = &graph
                        .blobs
                        .get(&d)
                        .ok_or_else(|| StoreError::NotFound(d.clone()))?
                        .desc;
                    hash_parts(source, desc, sizes).await?
                }
            };
            set_part_digests(&mut manifest, &d, digests)?;
        }
    }
    let manifest_bytes = manifest.to_canonical_bytes()?;
    let manifest_digest = Digest::sha256_of(&manifest_bytes);
    let signatures = sign_manifest(&manifest_bytes, &opts.signers);
    let signers: Vec<String> = signatures.iter().map(|(fp, _)| fp.clone()).collect();
    let files: Vec<(PathBuf, Option<u32>)> = match manifest.volume.as_ref().map(|v| v.count) {
        None => vec![(opts.output.clone(), None)],
        Some(c) => (1..=c)
            .map(|n| (volume_path(&dir, &stem, n, c), Some(n)))
            .collect(),
    };
    let manifest = Arc::new(manifest);

    let order: Vec<(Digest, u64, Role)> = manifest
        .blob_order()
        .into_iter()
        .filter(|b| !b.base)
        .map(|b| (b.digest.clone(), b.size, b.role))
        .collect();
    let manifest_blobs: HashMap<Digest, Bytes> = graph
        .manifests
        .iter()
        .map(|(d, n)| (d.clone(), n.manifest.bytes.clone()))
        .collect();
    let total_bytes: u64 = order.iter().map(|(_, s, _)| s).sum();
    let progress = Arc::new(Progress::new(
        opts.progress,
        "export",
        order.len() as u64,
        total_bytes,
    ));

    let write_options = WriteOptions {
        zstd: opts.zstd,
        mtime: created,
    };
    let paths: Vec<PathBuf> = files.iter().map(|(p, _)| p.clone()).collect();
    let sink = ArchiveSink::open(ArchiveLayout {
        files,
        manifest: Arc::clone(&manifest),
        manifest_bytes: manifest_bytes.clone(),
        signatures,
        index_json,
        manifest_blobs,
        options: write_options,
        resume: opts.resume,
        progress: Arc::clone(&progress) as Arc<dyn Reporter>,
        prefetch: opts.prefetch,
        checksums: (dir, stem),
    })
    .await?;
    let resumed_entries = sink.resumed_entries();
    let blobs: Vec<Descriptor> = graph.blobs.values().map(|b| b.desc.clone()).collect();
    let copy_opts = CopyOptions {
        concurrency: 1,
        verify_skipped: false,
    };
    // The writer thread reports progress as it writes; the engine's own count would be a second one.
    let silent: Arc<dyn Reporter> = Arc::new(Silent);
    engine::copy(source, &sink, graph, blobs, copy_opts, &silent, &NoHooks).await?;
    progress.finish();
    let checksum_files = sink.checksum_files();
    let archive_bytes = paths
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    Ok(ExportSummary {
        path: paths.first().cloned().unwrap_or_default(),
        files: paths,
        checksum_files,
        base_blobs,
        resumed_entries,
        images: graph.roots.len() + graph.locked.len(),
        blobs: order.len(),
        blob_bytes: total_bytes,
        dedup_saved_bytes: graph.dedup_saved_bytes(),
        archive_bytes,
        manifest_digest,
        signers,
    })
}
