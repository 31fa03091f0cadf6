//! Export: a walked graph into a signed archive, streamed from the registry.
//!
//! The airlift manifest (with the complete blob table) is built from the graph
//! before the first byte is written, so signatures come first in the tar; then
//! blobs follow in the manifest's order, each downloaded while earlier ones are
//! written (bounded prefetch), each verified as it passes.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::TransferError;
use super::graph::{Graph, Kind};
use super::progress::{Progress, ProgressMode};
use crate::archive::manifest::BaseRef;
use crate::archive::manifest::{
    self as am, BlobTableBuilder, IndexEntry, Manifest, Role, RootKind,
};
use crate::archive::plan::{plan_volumes, set_part_digests};
use crate::archive::reader::ArchiveReader;
use crate::archive::writer::{
    ArchiveWriter, ScanResult, WriteOptions, commit_rename, leading_bytes, scan_existing,
    sign_manifest,
};
use crate::digest::{Digest, VerifyingReader};
use crate::keys::SigningKey;
use crate::registry::Registries;

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

/// Builds the airlift manifest and `index.json` for a graph.
pub fn build_manifest(graph: &Graph, created: u64) -> Result<(Vec<u8>, Vec<u8>), TransferError> {
    let (manifest, index_json) = build_manifest_model(graph, created)?;
    let bytes = manifest
        .to_canonical_bytes()
        .map_err(|e| TransferError::Other(e.to_string()))?;
    Ok((bytes, index_json))
}

/// The airlift manifest model (before volume planning and base marking) and `index.json`.
pub fn build_manifest_model(
    graph: &Graph,
    created: u64,
) -> Result<(Manifest, Vec<u8>), TransferError> {
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
    Ok((manifest, index_json))
}

/// What a delta export leaves out: the blobs an earlier archive (or import) delivered.
#[derive(Debug, Clone)]
pub struct Base {
    /// The base's identity, recorded in the delta's manifest.
    pub reference: BaseRef,
    /// Blobs the destination holds thanks to the base.
    pub blobs: HashSet<Digest>,
}

impl Base {
    /// Reads a base: an archive (any one of its volumes), its `airlift/manifest.json`, or an
    /// import receipt (`format-spec/receipt-v1.md`).
    pub fn load(path: &Path) -> Result<Base, TransferError> {
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bad = |m: String| TransferError::Usage(format!("--since {}: {m}", path.display()));
        if let Ok(reader) = ArchiveReader::open(path) {
            let h = reader.header();
            return Ok(Base::of_manifest(&h.manifest, &h.manifest_bytes, file));
        }
        let len = std::fs::metadata(path)
            .map_err(|e| bad(e.to_string()))?
            .len();
        if len > crate::archive::MAX_MANIFEST {
            return Err(bad("not an airlift archive, manifest or receipt".into()));
        }
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|_| bad("not an airlift archive, manifest or receipt".into()))?;
        match value.get("format").and_then(|f| f.as_str()) {
            Some(am::FORMAT_NAME) => {
                let m = Manifest::parse(&bytes).map_err(|e| bad(e.to_string()))?;
                Ok(Base::of_manifest(&m.manifest, &bytes, file))
            }
            Some(super::receipt::RECEIPT_FORMAT) => {
                let text =
                    |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(str::to_owned);
                let archive = value.get("archive");
                let manifest_digest: Digest = text(archive.and_then(|a| a.get("manifestDigest")))
                    .and_then(|t| t.parse().ok())
                    .ok_or_else(|| bad("receipt without archive.manifestDigest".into()))?;
                let created = text(archive.and_then(|a| a.get("created"))).unwrap_or_default();
                let mut blobs = HashSet::new();
                for b in value
                    .get("blobs")
                    .and_then(|b| b.as_array())
                    .into_iter()
                    .flatten()
                {
                    let d: Digest = text(b.get("digest"))
                        .and_then(|t| t.parse().ok())
                        .ok_or_else(|| bad("receipt blob without a valid digest".into()))?;
                    blobs.insert(d);
                }
                Ok(Base {
                    reference: BaseRef {
                        manifest_digest,
                        created,
                        file,
                    },
                    blobs,
                })
            }
            _ => Err(bad("not an airlift archive, manifest or receipt".into())),
        }
    }

    fn of_manifest(m: &Manifest, bytes: &[u8], file: String) -> Base {
        Base {
            reference: BaseRef {
                manifest_digest: Digest::sha256_of(bytes),
                created: m.created.clone(),
                file,
            },
            // Its base blobs count too: importing it required them at the destination.
            blobs: m.blobs.iter().map(|b| b.digest.clone()).collect(),
        }
    }
}

/// `(directory, NAME)` for an output `DIR/NAME.tar` (or `.tar.zst`, or any other name).
pub fn split_output(output: &Path) -> (PathBuf, String) {
    let dir = output
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "archive".into());
    let stem = name
        .strip_suffix(".tar.zst")
        .or_else(|| name.strip_suffix(".tar"))
        .unwrap_or(&name)
        .to_owned();
    (dir, stem)
}

/// `DIR/NAME.NNN.tar`: volume `n` of `count` (at least three digits, more for > 999 volumes).
pub fn volume_path(dir: &Path, stem: &str, n: u32, count: u32) -> PathBuf {
    let width = count.to_string().len().max(3);
    dir.join(format!("{stem}.{n:0width$}.tar"))
}

/// The manifest of whatever an interrupted run left (finished or partial first volume).
fn previous_manifest(first: &Path) -> Option<Manifest> {
    [first.to_path_buf(), partial_path(first)]
        .iter()
        .find_map(|p| ArchiveReader::open(p).ok())
        .map(|r| r.header().manifest.clone())
}

enum FileState {
    Fresh,
    Resume(ScanResult),
    /// Complete under its final name.
    Done,
    /// Complete, still at `PATH.partial` (a volume set not yet renamed).
    DonePartial,
}

/// Hashes each part of a blob that will be split, fetching it once (the signed manifest
/// lists part digests, so they are needed before the first byte is written).
async fn hash_parts(
    registries: &Registries,
    graph: &Graph,
    digest: &Digest,
    sizes: Vec<u64>,
) -> Result<Vec<Digest>, TransferError> {
    let node = graph
        .blobs
        .get(digest)
        .ok_or_else(|| TransferError::Graph(format!("blob {digest} missing from the graph")))?;
    let client = registries.client(node.repo.registry()).await?;
    let reader = client
        .get_blob(&node.repo, &node.desc)
        .into_blocking_reader();
    let (d, size) = (digest.clone(), node.desc.size);
    tokio::task::spawn_blocking(move || -> Result<Vec<Digest>, TransferError> {
        let io = |e: std::io::Error| TransferError::Other(format!("reading blob {d}: {e}"));
        let mut whole = VerifyingReader::new(reader, d.clone(), Some(size));
        let mut out = Vec::new();
        let mut buf = vec![0u8; 256 * 1024];
        for s in sizes {
            let mut h = crate::digest::Hasher::new(d.algorithm());
            let mut left = s;
            while left > 0 {
                let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
                whole.read_exact(&mut buf[..want]).map_err(io)?;
                h.update(&buf[..want]);
                left -= want as u64;
            }
            out.push(h.finish());
        }
        let mut rest = Vec::new();
        whole.read_to_end(&mut rest).map_err(io)?;
        Ok(out)
    })
    .await
    .map_err(|e| TransferError::Other(e.to_string()))?
}

/// Writes `graph` to an archive (one file or a volume set), streaming configs and layers from
/// the registries; with `resume`, keeps what an interrupted run wrote and fetches the rest.
pub async fn export(
    registries: &Registries,
    graph: &Graph,
    opts: ExportOptions,
) -> Result<ExportSummary, TransferError> {
    let other = |e: crate::archive::ArchiveError| TransferError::Other(e.to_string());
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
                None => hash_parts(registries, graph, &d, sizes).await?,
            };
            set_part_digests(&mut manifest, &d, digests).map_err(other)?;
        }
    }
    let manifest_bytes = manifest.to_canonical_bytes().map_err(other)?;
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

    // What interrupted runs left: verified entries are kept, anything else is refused or redone.
    let states: Vec<FileState> = {
        let (files, manifest, manifest_bytes, signatures, index_json) = (
            files.clone(),
            Arc::clone(&manifest),
            manifest_bytes.clone(),
            signatures.clone(),
            index_json.clone(),
        );
        let resume = opts.resume;
        tokio::task::spawn_blocking(move || -> Result<Vec<FileState>, TransferError> {
            let mut out = Vec::new();
            for (path, vol) in &files {
                if !resume {
                    out.push(FileState::Fresh);
                    continue;
                }
                let lead = leading_bytes(&manifest_bytes, &signatures, &index_json, *vol, created)
                    .map_err(other)?;
                let entries = manifest.entries_for(*vol);
                let refuse = |e: crate::archive::ArchiveError| {
                    TransferError::Usage(format!(
                        "cannot resume: {e}; remove the old files or export without --resume"
                    ))
                };
                let partial = partial_path(path);
                if path.exists() {
                    let scan = scan_existing(path, &lead, &entries, created).map_err(refuse)?;
                    if !scan.complete {
                        return Err(TransferError::Usage(format!(
                            "cannot resume: {} exists but is not the complete file planned; remove it",
                            path.display()
                        )));
                    }
                    out.push(FileState::Done);
                } else if partial.exists() {
                    let scan = scan_existing(&partial, &lead, &entries, created).map_err(refuse)?;
                    out.push(if scan.complete {
                        FileState::DonePartial
                    } else if scan.offset == 0 {
                        FileState::Fresh
                    } else {
                        FileState::Resume(scan)
                    });
                } else {
                    out.push(FileState::Fresh);
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| TransferError::Other(e.to_string()))??
    };

    // Which blobs must be fetched, in writing order, and how many leading bytes of each are
    // already written (parts of a split blob kept from an interrupted run).
    let mut fetch: Vec<(Digest, u64)> = Vec::new();
    let mut seen: HashSet<Digest> = HashSet::new();
    let mut resumed_entries = 0usize;
    for ((_, vol), state) in files.iter().zip(&states) {
        let entries = manifest.entries_for(*vol);
        let start = match state {
            FileState::Done | FileState::DonePartial => {
                resumed_entries += entries.len();
                continue;
            }
            FileState::Fresh => 0,
            FileState::Resume(s) => {
                resumed_entries += s.kept;
                s.kept
            }
        };
        for e in &entries[start..] {
            if matches!(e.role, Role::Manifest | Role::Index) || !seen.insert(e.blob.clone()) {
                continue;
            }
            let skip = match (e.part, manifest.blob(&e.blob)) {
                (Some((n, _)), Some(b)) => {
                    b.parts.iter().take(n as usize - 1).map(|p| p.size).sum()
                }
                _ => 0,
            };
            fetch.push((e.blob.clone(), skip));
        }
    }
    let skips: HashMap<Digest, u64> = fetch.iter().cloned().collect();
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

    // Streams for configs and layers, opened in order, at most `prefetch` ahead of the writer.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Fetched>(opts.prefetch.max(1));
    let writer_progress = Arc::clone(&progress);
    let write_options = WriteOptions {
        zstd: opts.zstd,
        mtime: created,
    };
    let writer_files = files.clone();
    let writer_manifest = Arc::clone(&manifest);
    let writer_bytes = manifest_bytes.clone();
    let is_set = manifest.volume.is_some();
    let writer = tokio::task::spawn_blocking(move || -> Result<(), TransferError> {
        // A volume set is renamed only when every volume is complete; a failed run removes
        // the volumes it finished (a killed run leaves them for --resume).
        let mut finished: Vec<PathBuf> = Vec::new();
        let result = write_files(
            &writer_files,
            states,
            &writer_manifest,
            &writer_bytes,
            &signatures,
            &index_json,
            &manifest_blobs,
            &skips,
            &rx,
            write_options,
            &writer_progress,
            is_set,
            &mut finished,
        );
        if result.is_err() {
            for p in &finished {
                let _ = std::fs::remove_file(p);
            }
            return result;
        }
        if is_set {
            for (path, _) in &writer_files {
                let partial = partial_path(path);
                if partial.exists() {
                    commit_rename(&partial, path).map_err(|source| TransferError::Io {
                        what: format!("renaming {}", partial.display()),
                        source,
                    })?;
                }
            }
        }
        Ok(())
    });

    for (digest, _) in &fetch {
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
        let d = digest.clone();
        let sent = tokio::task::spawn_blocking(move || tx2.send((d, reader)).is_ok())
            .await
            .unwrap_or(false);
        if !sent {
            break; // the writer stopped; its error is reported below
        }
    }
    drop(tx);
    writer
        .await
        .map_err(|e| TransferError::Other(format!("archive writer crashed: {e}")))??;
    progress.finish();
    let paths: Vec<PathBuf> = files.iter().map(|(p, _)| p.clone()).collect();
    let sums_paths = paths.clone();
    let checksum_files =
        tokio::task::spawn_blocking(move || write_checksums(&dir, &stem, &sums_paths))
            .await
            .map_err(|e| TransferError::Other(e.to_string()))??;
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

/// Writes the files that are not complete yet, in order, from the fetched blob streams.
#[allow(clippy::too_many_arguments)]
fn write_files(
    writer_files: &[(PathBuf, Option<u32>)],
    states: Vec<FileState>,
    writer_manifest: &Manifest,
    writer_bytes: &[u8],
    signatures: &[(String, [u8; crate::keys::SIGNATURE_LEN])],
    index_json: &[u8],
    manifest_blobs: &HashMap<Digest, Bytes>,
    skips: &HashMap<Digest, u64>,
    rx: &std::sync::mpsc::Receiver<Fetched>,
    write_options: WriteOptions,
    writer_progress: &Progress,
    is_set: bool,
    finished: &mut Vec<PathBuf>,
) -> Result<(), TransferError> {
    let wrap = |what: String| {
        move |e: crate::archive::ArchiveError| TransferError::Other(format!("{what}: {e}"))
    };
    let mut current: Option<Fetched> = None;
    for ((path, vol), state) in writer_files.iter().zip(states) {
        let entries = writer_manifest.entries_for(*vol);
        let (mut w, start) = match state {
            FileState::Done | FileState::DonePartial => continue,
            FileState::Fresh => {
                let mut w = ArchiveWriter::create_volume(path, write_options, *vol)
                    .map_err(wrap(path.display().to_string()))?;
                w.write_header(writer_bytes, signatures, index_json)
                    .map_err(wrap(path.display().to_string()))?;
                (w, 0)
            }
            FileState::Resume(scan) => (
                ArchiveWriter::resume_volume(path, write_options, *vol, writer_bytes, scan)
                    .map_err(wrap(path.display().to_string()))?,
                scan.kept,
            ),
        };
        for e in &entries[start..] {
            let result = if matches!(e.role, Role::Manifest | Role::Index) {
                let bytes = manifest_blobs.get(&e.blob).cloned().unwrap_or_default();
                writer_progress.add_bytes(bytes.len() as u64);
                w.write_blob(&e.digest, e.size, &bytes[..])
            } else {
                if current.as_ref().map(|(d, _)| d) != Some(&e.blob) {
                    let (d, mut reader) = rx.recv().map_err(|_| {
                        TransferError::Other(format!("download of {} was abandoned", e.blob))
                    })?;
                    if d != e.blob {
                        return Err(TransferError::Other(format!(
                            "internal: expected blob {} from the fetcher, got {d}",
                            e.blob
                        )));
                    }
                    let skip = skips.get(&d).copied().unwrap_or(0);
                    let skipped =
                        std::io::copy(&mut (&mut reader).take(skip), &mut std::io::sink())
                            .map_err(|err| TransferError::Other(format!("blob {d}: {err}")))?;
                    if skipped != skip {
                        return Err(TransferError::Other(format!(
                            "blob {d}: shorter than its parts"
                        )));
                    }
                    current = Some((d, reader));
                }
                let Some((_, reader)) = current.as_mut() else {
                    return Err(TransferError::Other("internal: no blob stream".into()));
                };
                let r = match e.part {
                    None => w.write_blob(
                        &e.digest,
                        e.size,
                        CountingReader {
                            inner: reader,
                            progress: writer_progress,
                        },
                    ),
                    Some(_) => w.write_blob(
                        &e.digest,
                        e.size,
                        CountingReader {
                            inner: reader.take(e.size),
                            progress: writer_progress,
                        },
                    ),
                };
                if e.part.is_none_or(|(n, c)| n == c) {
                    current = None;
                }
                r
            };
            result.map_err(|err| TransferError::Other(format!("writing {}: {err}", e.name)))?;
            if e.part.is_none_or(|(n, c)| n == c) {
                writer_progress.blob_done();
            }
        }
        if is_set {
            finished.push(
                w.finish_partial()
                    .map_err(wrap(path.display().to_string()))?,
            );
        } else {
            w.finish().map_err(wrap(path.display().to_string()))?;
        }
    }
    Ok(())
}

/// A blob stream from the fetcher, named by its digest.
type Fetched = (Digest, crate::registry::client::BlockingBlobReader);

/// Writes `NAME.B3SUMS` and `NAME.SHA256SUMS` (the formats `b3sum -c` and `sha256sum -c` read)
/// listing each file by its bare name, so copies on media can be checked with stock tools.
pub fn write_checksums(
    dir: &Path,
    stem: &str,
    files: &[PathBuf],
) -> Result<Vec<PathBuf>, TransferError> {
    let io = |what: String| move |source| TransferError::Io { what, source };
    let (mut b3, mut sha) = (String::new(), String::new());
    for path in files {
        let mut f = std::fs::File::open(path).map_err(io(format!("reading {}", path.display())))?;
        let mut h3 = blake3::Hasher::new();
        let mut h2 = crate::digest::Hasher::new(crate::digest::Algorithm::Sha256);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f
                .read(&mut buf)
                .map_err(io(format!("reading {}", path.display())))?;
            if n == 0 {
                break;
            }
            h3.update(&buf[..n]);
            h2.update(&buf[..n]);
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        b3.push_str(&format!("{}  {name}\n", h3.finalize().to_hex()));
        sha.push_str(&format!("{}  {name}\n", h2.finish().hex()));
    }
    let mut out = Vec::new();
    for (ext, text) in [("B3SUMS", b3), ("SHA256SUMS", sha)] {
        let path = dir.join(format!("{stem}.{ext}"));
        let partial = partial_path(&path);
        let mut f = std::fs::File::create(&partial)
            .map_err(io(format!("writing {}", partial.display())))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io(format!("writing {}", partial.display())))?;
        std::fs::rename(&partial, &path).map_err(io(format!("renaming {}", partial.display())))?;
        out.push(path);
    }
    Ok(out)
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
