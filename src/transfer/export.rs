//! Export: a walked graph into a signed archive, streamed from the registry.
//!
//! The airlift manifest (with the complete blob table) is built from the graph
//! before the first byte is written, so signatures come first in the tar; then
//! blobs follow in the manifest's order, each downloaded while earlier ones are
//! written (bounded prefetch), each verified as it passes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::TransferError;
use super::graph::{Graph, Kind};
use super::progress::{Progress, ProgressMode};
use crate::archive::manifest::{
    self as am, BlobTableBuilder, IndexEntry, Manifest, Role, RootKind,
};
use crate::archive::writer::{ArchiveWriter, WriteOptions, sign_manifest};
use crate::digest::Digest;
use crate::keys::SigningKey;
use crate::registry::Registries;

/// How to write the archive.
pub struct ExportOptions {
    /// The archive path (written as `PATH.partial`, renamed when complete).
    pub output: PathBuf,
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
}

/// What an export wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportSummary {
    /// The archive written.
    pub path: PathBuf,
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

/// Builds the airlift manifest and `index.json` for a graph.
pub fn build_manifest(graph: &Graph, created: u64) -> Result<(Vec<u8>, Vec<u8>), TransferError> {
    let err = |e: crate::archive::ArchiveError| TransferError::Other(e.to_string());
    let mut entries = Vec::new();
    for root in &graph.roots {
        if let Some(node) = graph.manifests.get(&root.digest) {
            entries.push(IndexEntry {
                descriptor: node.manifest.descriptor(),
                ref_name: root.reference.original().to_owned(),
            });
        }
    }
    for img in &graph.locked {
        if let Some(node) = graph.manifests.get(&img.digest) {
            entries.push(IndexEntry {
                descriptor: node.manifest.descriptor(),
                ref_name: img.image.clone(),
            });
        }
    }
    let index_json = am::oci_index_json(&entries).map_err(err)?;
    let mut manifest = Manifest::new(
        created,
        format!("airlift {}", env!("CARGO_PKG_VERSION")),
        &index_json,
    );
    manifest.roots = graph
        .roots
        .iter()
        .map(|r| am::Root {
            kind: match r.kind {
                Kind::Bundle => RootKind::Bundle,
                Kind::Image => RootKind::Image,
            },
            reference: r.reference.original().to_owned(),
            tag: r.reference.tag().map(str::to_owned),
            digest: r.digest.clone(),
            media_type: r.media_type.clone(),
        })
        .collect();
    let mut bundles: Vec<am::BundleLock> = graph
        .bundle_locks
        .iter()
        .map(|b| am::BundleLock {
            digest: b.bundle.clone(),
            images: b
                .entries
                .iter()
                .map(|(image, annotations)| am::LockedImage {
                    image: image.clone(),
                    annotations: annotations.clone(),
                    bundle: graph.locked.iter().any(|l| {
                        l.locked_by == b.bundle && &l.image == image && l.kind == Kind::Bundle
                    }),
                })
                .collect(),
        })
        .collect();
    bundles.sort_by(|a, b| a.digest.cmp(&b.digest));
    bundles.dedup_by(|a, b| a.digest == b.digest);
    manifest.bundles = bundles;
    let mut table = BlobTableBuilder::new();
    for node in graph.manifests.values() {
        table.add_manifest(&node.manifest).map_err(err)?;
    }
    manifest.blobs = table.finish();
    let bytes = manifest.to_canonical_bytes().map_err(err)?;
    Ok((bytes, index_json))
}

/// Writes `graph` to an archive, streaming configs and layers from the registries.
pub async fn export(
    registries: &Registries,
    graph: &Graph,
    opts: ExportOptions,
) -> Result<ExportSummary, TransferError> {
    let (manifest_bytes, index_json) = build_manifest(graph, opts.created)?;
    let manifest_digest = Digest::sha256_of(&manifest_bytes);
    let signatures = sign_manifest(&manifest_bytes, &opts.signers);
    let signers: Vec<String> = signatures.iter().map(|(fp, _)| fp.clone()).collect();
    let parsed =
        Manifest::parse(&manifest_bytes).map_err(|e| TransferError::Other(e.to_string()))?;
    let order: Vec<(Digest, u64, Role)> = parsed
        .manifest
        .blob_order()
        .into_iter()
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

    // Streams for configs and layers, opened in order, at most `prefetch` ahead of the writer.
    let (tx, rx) = std::sync::mpsc::sync_channel(opts.prefetch.max(1));
    let writer_progress = Arc::clone(&progress);
    let output = opts.output.clone();
    let write_options = WriteOptions {
        zstd: opts.zstd,
        mtime: opts.created,
    };
    let order_for_writer = order.clone();
    let writer = tokio::task::spawn_blocking(move || -> Result<PathBuf, TransferError> {
        let mut w = ArchiveWriter::create(&output, write_options)
            .map_err(|e| TransferError::Other(e.to_string()))?;
        w.write_header(&manifest_bytes, &signatures, &index_json)
            .map_err(|e| TransferError::Other(e.to_string()))?;
        for (digest, size, role) in order_for_writer {
            let result = if matches!(role, Role::Manifest | Role::Index) {
                let bytes = manifest_blobs.get(&digest).cloned().unwrap_or_default();
                w.write_blob(&digest, size, &bytes[..])
            } else {
                let reader: crate::registry::client::BlockingBlobReader =
                    rx.recv().map_err(|_| {
                        TransferError::Other(format!("download of {digest} was abandoned"))
                    })?;
                let counted = CountingReader {
                    inner: reader,
                    progress: &writer_progress,
                };
                w.write_blob(&digest, size, counted)
            };
            result.map_err(|e| TransferError::Other(format!("writing blob {digest}: {e}")))?;
            writer_progress.blob_done();
        }
        w.finish().map_err(|e| TransferError::Other(e.to_string()))
    });

    for (digest, _, role) in &order {
        if matches!(role, Role::Manifest | Role::Index) {
            continue;
        }
        let Some(node) = graph.blobs.get(digest) else {
            return Err(TransferError::Graph(format!(
                "blob {digest} missing from the graph"
            )));
        };
        let client = registries.client(node.repo.registry()).await?;
        // The archive writer hashes every byte and aborts on a mismatch, so the download
        // checks only the length: one sha256 pass per byte instead of two.
        let stream = client.get_blob_length_checked(&node.repo, &node.desc);
        let reader = stream.into_blocking_reader();
        // The writer holds at most `prefetch` readers in the channel; the send blocks otherwise.
        let tx2 = tx.clone();
        let sent = tokio::task::spawn_blocking(move || tx2.send(reader).is_ok())
            .await
            .unwrap_or(false);
        if !sent {
            break; // the writer stopped; its error is reported below
        }
    }
    drop(tx);
    let path = writer
        .await
        .map_err(|e| TransferError::Other(format!("archive writer crashed: {e}")))??;
    progress.finish();
    let archive_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    Ok(ExportSummary {
        path,
        images: graph.roots.len() + graph.locked.len(),
        blobs: order.len(),
        blob_bytes: total_bytes,
        dedup_saved_bytes: graph.dedup_saved_bytes(),
        archive_bytes,
        manifest_digest,
        signers,
    })
}

/// Counts bytes into the progress display as the writer reads them.
struct CountingReader<'a, R> {
    inner: R,
    progress: &'a Progress,
}

impl<R: std::io::Read> std::io::Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.add_bytes(n as u64);
        Ok(n)
    }
}

/// Where an export leaves its work in progress (for messages and cleanup checks).
pub fn partial_path(output: &Path) -> PathBuf {
    let mut s = output.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}
