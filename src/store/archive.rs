//! An airlift archive being read, as a store: random access by offset into plain tar files,
//! one sequential pass for zstd, and volume sets (some or all volumes of one archive).
//!
//! Opening checks signatures first, then admits every entry through the one set of archive
//! rules ([`crate::archive::check`]) and checks the graph's closure, so what this store hands
//! out is exactly what `airlift verify` accepts; every blob is still verified as it streams.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{ByteStream, Source, StoreError};
use crate::archive::ArchiveError;
use crate::archive::check::graph_failures;
use crate::archive::manifest::{Manifest, Role, RootKind};
use crate::archive::reader::{ArchiveHeader, ArchiveReader, BlobIndex, ManifestBlob};
use crate::digest::Digest;
use crate::graph::{BundleLockInfo, Graph, Kind, LockedImage, ManifestNode, Root};
use crate::keys::VerifyingKey;
use crate::oci::{Descriptor, RawManifest};
use crate::reference::Reference;

/// A run of a blob's bytes inside one archive file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent {
    /// The archive or volume file.
    pub path: PathBuf,
    /// Offset of the first byte in the file.
    pub offset: u64,
    /// Number of bytes.
    pub size: u64,
}

/// Bytes per chunk read from an archive.
const CHUNK: usize = 256 * 1024;
/// Chunks buffered per blob between the archive reader and an upload: 1 MiB per blob keeps
/// the upload fed from the page cache, and the default eight uploads under 10 MiB of buffers.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Which signatures an import insists on.
#[derive(Debug, Clone)]
pub struct Trust {
    /// Public keys whose signatures count.
    pub keys: Vec<VerifyingKey>,
    /// Distinct trusted signers required.
    pub required: usize,
    /// Accept an archive without them (`--allow-unsigned`).
    pub allow_unsigned: bool,
}

impl Trust {
    /// Checks the header's signatures; returns the fingerprints of trusted signers.
    pub fn check(&self, header: &ArchiveHeader) -> Result<Vec<String>, StoreError> {
        let valid = header.valid_signers(&self.keys);
        if self.allow_unsigned {
            return Ok(valid);
        }
        if self.keys.is_empty() {
            return Err(StoreError::Usage(
                "no trusted keys given: pass --trust PUB (or --allow-unsigned to skip signature checks)".into(),
            ));
        }
        if header.signatures.is_empty() {
            return Err(StoreError::Verification(
                "the archive is unsigned; refusing it (pass --allow-unsigned to accept unsigned archives)".into(),
            ));
        }
        header
            .check_signatures(&self.keys, self.required.max(1))
            .map_err(|e| {
                StoreError::Verification(format!(
                    "{e}; archive signed by {}",
                    header
                        .signatures
                        .iter()
                        .map(|(fp, _)| fp.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }
}

/// An archive opened as a source: signatures checked, manifests read and checked, graph built.
pub struct ArchiveStore {
    /// The archive file.
    pub path: PathBuf,
    /// Its leading entries.
    pub header: ArchiveHeader,
    /// The content graph it carries.
    pub graph: Graph,
    /// Fingerprints of trusted signers.
    pub signers: Vec<String>,
    /// The volume files given, with their numbers (empty for a single-file archive).
    pub volumes: Vec<(PathBuf, u32)>,
    kind: ArchiveSource,
}

impl ArchiveStore {
    /// Whether blobs can be read in any order before the transfer (not a zstd archive, which
    /// is read in one pass).
    pub fn random_access(&self) -> bool {
        !matches!(self.kind, ArchiveSource::Sequential(_))
    }

    /// Whether this run's files carry the blob (not a base blob, and for volumes: every part
    /// of it is in the volumes given).
    pub fn carries(&self, d: &Digest) -> bool {
        let listed = self.header.manifest.blob(d).is_some_and(|b| !b.base);
        match &self.kind {
            ArchiveSource::Volumes(v) => listed && v.complete.contains_key(d),
            _ => listed,
        }
    }

    /// Where a blob's bytes lie in the given files, in order, for reads of a byte range in
    /// place (`None` when the archive is compressed or does not carry the blob whole).
    pub fn extents(&self, d: &Digest) -> Option<Vec<Extent>> {
        match &self.kind {
            ArchiveSource::Indexed(index) => index.get(d).map(|(offset, size)| {
                vec![Extent {
                    path: index.path().to_path_buf(),
                    offset,
                    size,
                }]
            }),
            ArchiveSource::Volumes(v) => v.complete.get(d).map(|segs| {
                segs.iter()
                    .map(|s| Extent {
                        path: s.index.path().to_path_buf(),
                        offset: s.offset,
                        size: s.size,
                    })
                    .collect()
            }),
            ArchiveSource::Sequential(_) => None,
        }
    }

    /// Whether blobs can be read in any order (a plain file or volumes, not zstd).
    pub fn is_random_access(&self) -> bool {
        !matches!(self.kind, ArchiveSource::Sequential(_))
    }

    /// The volumes given, for split blobs spread over runs (`None` for a single file).
    pub(crate) fn volume_source(&self) -> Option<&VolumeSource> {
        match &self.kind {
            ArchiveSource::Volumes(v) => Some(v),
            _ => None,
        }
    }
}

pub(crate) fn archive_err(path: &Path) -> impl Fn(ArchiveError) -> StoreError + '_ {
    move |e| StoreError::Verification(format!("{}: {e}", path.display()))
}

/// Builds the graph an archive carries from its airlift manifest and manifest blobs.
pub fn graph_from_archive(
    manifest: &Manifest,
    manifests: Vec<RawManifest>,
) -> Result<Graph, StoreError> {
    let bad = |m: String| StoreError::Verification(m);
    let by_digest: HashMap<Digest, RawManifest> = manifests
        .into_iter()
        .map(|m| (m.digest.clone(), m))
        .collect();
    let mut graph = Graph::default();
    // Each top-level manifest is "found at" the reference it is known by; children inherit it.
    let mut tops: Vec<(Digest, Reference)> = Vec::new();
    for r in &manifest.roots {
        let reference = Reference::parse(&r.reference)
            .map_err(|e| bad(format!("airlift manifest root: {e}")))?;
        graph.roots.push(Root {
            reference: reference.clone(),
            digest: r.digest.clone(),
            media_type: r.media_type.clone(),
            kind: match r.kind {
                RootKind::Bundle => Kind::Bundle,
                RootKind::Image => Kind::Image,
            },
        });
        tops.push((r.digest.clone(), reference));
    }
    for b in &manifest.bundles {
        let mut entries = Vec::new();
        for img in &b.images {
            let reference = Reference::parse(&img.image)
                .map_err(|e| bad(format!("bundle {} lock: {e}", b.digest)))?;
            let digest = reference.digest().cloned().ok_or_else(|| {
                bad(format!(
                    "bundle {} lock names {} without a digest",
                    b.digest, img.image
                ))
            })?;
            let media_type = by_digest
                .get(&digest)
                .map(|m| m.media_type.clone())
                .ok_or_else(|| {
                    bad(format!(
                        "{} (locked by bundle {}) is not in the archive",
                        img.image, b.digest
                    ))
                })?;
            graph.locked.push(LockedImage {
                image: img.image.clone(),
                digest: digest.clone(),
                media_type,
                kind: if img.bundle {
                    Kind::Bundle
                } else {
                    Kind::Image
                },
                locked_by: b.digest.clone(),
            });
            entries.push((img.image.clone(), img.annotations.clone()));
            tops.push((digest, reference));
        }
        graph.bundle_locks.push(BundleLockInfo {
            bundle: b.digest.clone(),
            lock_bytes: Vec::new(),
            entries,
        });
    }
    let mut queue: Vec<(Digest, Reference)> = tops;
    while let Some((d, at)) = queue.pop() {
        if graph.manifests.contains_key(&d) {
            continue;
        }
        let m = by_digest
            .get(&d)
            .cloned()
            .ok_or_else(|| bad(format!("manifest {d} (for {at}) is not in the archive")))?;
        for child in m.child_manifests() {
            queue.push((child.digest.clone(), at.clone()));
        }
        let node = ManifestNode {
            manifest: m,
            repo: at,
        };
        graph.add_blobs_of(&node);
        graph.manifests.insert(d, node);
    }
    add_referrers(&mut graph, manifest, &by_digest)?;
    Ok(graph)
}

/// Adds the archive's referrers, each "found at" its subject's repository, subjects first
/// (a signature of an attestation follows the attestation).
fn add_referrers(
    graph: &mut Graph,
    manifest: &Manifest,
    by_digest: &HashMap<Digest, RawManifest>,
) -> Result<(), StoreError> {
    let mut pending: Vec<&crate::referrers::Referrer> = manifest.referrers.iter().collect();
    while !pending.is_empty() {
        let before = pending.len();
        let mut rest = Vec::new();
        for r in pending {
            let Some(repo) = graph.manifests.get(&r.subject).map(|n| n.repo.clone()) else {
                rest.push(r);
                continue;
            };
            let mut queue = vec![r.digest.clone()];
            while let Some(d) = queue.pop() {
                if graph.manifests.contains_key(&d) {
                    continue;
                }
                let m = by_digest.get(&d).cloned().ok_or_else(|| {
                    StoreError::Verification(format!(
                        "referrer {d} of {} is not in the archive",
                        r.subject
                    ))
                })?;
                queue.extend(m.child_manifests().iter().map(|c| c.digest.clone()));
                let node = ManifestNode {
                    manifest: m,
                    repo: repo.clone(),
                };
                graph.add_blobs_of(&node);
                graph.manifests.insert(d, node);
            }
            graph.referrers.push(r.clone());
        }
        if rest.len() == before {
            return Err(StoreError::Verification(format!(
                "referrer {} names subject {}, which nothing in the archive leads to",
                rest[0].digest, rest[0].subject
            )));
        }
        pending = rest;
    }
    Ok(())
}

/// Where an import reads blobs from.
enum ArchiveSource {
    /// Uncompressed: random access, parallel reads.
    Indexed(Arc<BlobIndex>),
    /// zstd: one pass, blobs handed over in archive order.
    Sequential(SequentialBlobs),
    /// Some volumes of a set: random access across their files.
    Volumes(Arc<VolumeSource>),
}

/// One content entry in one volume file.
#[derive(Clone)]
pub(crate) struct Segment {
    index: Arc<BlobIndex>,
    offset: u64,
    size: u64,
    digest: Digest,
}

impl Segment {
    /// A verified reader of this entry whose errors name the volume file.
    pub(crate) fn open(&self) -> Result<impl Read + Send + use<>, ArchiveError> {
        let inner = self
            .index
            .open_range(self.offset, self.size, &self.digest)?;
        Ok(Named {
            inner,
            path: self.index.path().display().to_string(),
        })
    }
}

/// Reads segments one after the other, opening each only when the previous one is done
/// (a blob split into many parts holds one file handle and buffer at a time).
struct LazyChain {
    rest: std::collections::VecDeque<Segment>,
    current: Option<Box<dyn Read + Send>>,
}

impl Read for LazyChain {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some(r) = self.current.as_mut() {
                let n = r.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                self.current = None;
            }
            match self.rest.pop_front() {
                None => return Ok(0),
                Some(seg) => {
                    self.current = Some(Box::new(seg.open().map_err(std::io::Error::other)?))
                }
            }
        }
    }
}

/// Prefixes read errors with the file they came from.
struct Named<R> {
    inner: R,
    path: String,
}

impl<R: Read> Read for Named<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner
            .read(buf)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", self.path)))
    }
}

/// The blobs a run can read from the volumes it was given.
pub(crate) struct VolumeSource {
    /// Blobs whose every entry (whole blob, or all parts) is in the given volumes.
    pub(crate) complete: HashMap<Digest, Vec<Segment>>,
    /// Split blobs with only some parts in the given volumes: slot `i` is part `i + 1`.
    pub(crate) partial: HashMap<Digest, Vec<Option<Segment>>>,
}

/// A verified stream of one volume entry.
pub(crate) fn segment_stream(seg: Segment) -> ByteStream {
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(CHUNKS_IN_FLIGHT);
    tokio::task::spawn_blocking(move || match seg.open() {
        Ok(mut r) => {
            pump(&mut r, &tx);
        }
        Err(e) => {
            let _ = tx.blocking_send(Err(std::io::Error::other(e)));
        }
    });
    channel_stream(rx)
}

/// One blob offered by the sequential reader: its digest and its chunks.
type Offer = (Digest, mpsc::Receiver<std::io::Result<Bytes>>);
/// The sequential reader's final word: the pass ended cleanly, or why it stopped.
type PassResult = oneshot::Receiver<Result<(), ArchiveError>>;

struct SequentialBlobs {
    next: Mutex<mpsc::Receiver<Offer>>,
    done: Mutex<Option<PassResult>>,
}

impl Source for ArchiveStore {
    async fn fetch(&self, desc: &Descriptor) -> Result<ByteStream, StoreError> {
        match &self.kind {
            ArchiveSource::Indexed(index) => {
                let index = Arc::clone(index);
                let digest = desc.digest.clone();
                let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(CHUNKS_IN_FLIGHT);
                tokio::task::spawn_blocking(move || {
                    let mut r = match index.open_blob(&digest) {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = tx.blocking_send(Err(std::io::Error::other(e)));
                            return;
                        }
                    };
                    pump(&mut r, &tx);
                });
                Ok(channel_stream(rx))
            }
            ArchiveSource::Volumes(vols) => {
                let segments = vols.complete.get(&desc.digest).cloned().ok_or_else(|| {
                    StoreError::Refused(format!("blob {} is not in the volumes given", desc.digest))
                })?;
                let (digest, size) = (desc.digest.clone(), desc.size);
                let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(CHUNKS_IN_FLIGHT);
                tokio::task::spawn_blocking(move || {
                    let chained = LazyChain {
                        rest: segments.into(),
                        current: None,
                    };
                    // Parts are verified one by one, the reassembled blob as a whole.
                    let mut whole =
                        crate::digest::VerifyingReader::new(chained, digest, Some(size));
                    pump(&mut whole, &tx);
                });
                Ok(channel_stream(rx))
            }
            ArchiveSource::Sequential(seq) => {
                let mut next = seq.next.lock().await;
                loop {
                    match next.recv().await {
                        Some((d, chunks)) if d == desc.digest => return Ok(channel_stream(chunks)),
                        Some(_) => continue, // already in the registry: skipped (the reader still verifies it)
                        None => {
                            return Err(StoreError::Refused(format!(
                                "blob {} is not available from the compressed archive (out of order, \
                                 or a retry after a partial upload: re-run the import to resume)",
                                desc.digest
                            )));
                        }
                    }
                }
            }
        }
    }

    fn fixed_order(&self) -> Option<Vec<Digest>> {
        match &self.kind {
            ArchiveSource::Sequential(_) => Some(
                self.header
                    .manifest
                    .blob_order()
                    .into_iter()
                    .filter(|b| !b.base && !matches!(b.role, Role::Manifest | Role::Index))
                    .map(|b| b.digest.clone())
                    .collect(),
            ),
            _ => None,
        }
    }

    async fn finish(&self) -> Result<(), StoreError> {
        // A compressed archive is only known whole once its one pass has ended.
        let ArchiveSource::Sequential(seq) = &self.kind else {
            return Ok(());
        };
        {
            let mut next = seq.next.lock().await;
            while next.recv().await.is_some() {}
        }
        let done = seq.done.lock().await.take();
        match done {
            None => Ok(()),
            Some(done) => match done.await {
                Ok(result) => Ok(result?),
                Err(_) => Err(StoreError::Refused(format!(
                    "{}: the archive reader stopped",
                    self.path.display()
                ))),
            },
        }
    }
}

fn pump(r: &mut impl Read, tx: &mpsc::Sender<std::io::Result<Bytes>>) -> bool {
    loop {
        let mut buf = vec![0u8; CHUNK];
        match r.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => {
                buf.truncate(n);
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return false;
                }
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return false;
            }
        }
    }
}

fn channel_stream(rx: mpsc::Receiver<std::io::Result<Bytes>>) -> ByteStream {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) }).boxed()
}

/// Opens one archive, or some volumes of a set, for import (signatures first).
pub async fn open_archives(paths: &[PathBuf], trust: &Trust) -> Result<ArchiveStore, StoreError> {
    let first = paths
        .first()
        .ok_or_else(|| StoreError::Usage("no archive given".into()))?;
    let p = first.clone();
    let is_set = tokio::task::spawn_blocking(move || {
        ArchiveReader::open(&p).map(|r| r.header().manifest.volume.is_some())
    })
    .await
    .map_err(StoreError::from)?
    .map_err(archive_err(first))?;
    if !is_set {
        if paths.len() > 1 {
            return Err(StoreError::Usage(format!(
                "{} is a single-file archive: import it alone",
                first.display()
            )));
        }
        return open_archive(first, trust).await;
    }
    open_volume_set(paths, trust).await
}

/// Checks the graph rules on the manifest blobs an archive leads with and builds its graph.
fn checked_graph(
    path: &Path,
    header: &ArchiveHeader,
    blobs: &[ManifestBlob],
) -> Result<Graph, StoreError> {
    let listed: Vec<(String, Digest, String, Bytes)> = blobs
        .iter()
        .map(|b| {
            (
                b.entry.clone(),
                b.digest.clone(),
                b.media_type.clone(),
                b.bytes.clone(),
            )
        })
        .collect();
    let (manifests, failures) = graph_failures(&header.manifest, &header.index_json, &listed);
    if !failures.is_empty() {
        let shown: Vec<&str> = failures
            .iter()
            .take(10)
            .map(|f| f.message.as_str())
            .collect();
        return Err(StoreError::Verification(format!(
            "{}: {}{}",
            path.display(),
            shown.join("; "),
            match failures.len() {
                n if n > shown.len() => {
                    format!(" (and {} more: run `airlift verify`)", n - shown.len())
                }
                _ => String::new(),
            }
        )));
    }
    graph_from_archive(&header.manifest, manifests)
}

/// Opens one volume: header, signatures, and its manifest blobs (verified).
fn open_volume(
    p: &Path,
    trust: &Trust,
) -> Result<(ArchiveHeader, Vec<ManifestBlob>, Vec<String>), StoreError> {
    let mut reader = ArchiveReader::open(p).map_err(archive_err(p))?;
    let signers = trust.check(reader.header()).map_err(|e| match e {
        StoreError::Verification(m) => StoreError::Verification(format!("{}: {m}", p.display())),
        other => other,
    })?;
    let blobs = reader.read_manifests().map_err(archive_err(p))?;
    Ok((reader.header().clone(), blobs, signers))
}

async fn open_volume_set(paths: &[PathBuf], trust: &Trust) -> Result<ArchiveStore, StoreError> {
    let paths_owned = paths.to_vec();
    let trust = trust.clone();
    let blocking = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
        let mut head: Option<(ArchiveHeader, Vec<ManifestBlob>, Vec<String>)> = None;
        let mut volumes: Vec<(PathBuf, u32)> = Vec::new();
        let mut parts: HashMap<Digest, Vec<Option<Segment>>> = HashMap::new();
        for p in &paths_owned {
            let (h, blobs, signers) = open_volume(p, &trust)?;
            let Some(v) = h.volume else {
                return Err(StoreError::Usage(format!(
                    "{} is a single-file archive, not a volume of this set",
                    p.display()
                )));
            };
            if let Some((first, _, _)) = &head
                && first.manifest_bytes != h.manifest_bytes
            {
                return Err(StoreError::Verification(format!(
                    "{} is a volume of another archive (manifest {}, expected {})",
                    p.display(),
                    Digest::sha256_of(&h.manifest_bytes),
                    Digest::sha256_of(&first.manifest_bytes)
                )));
            }
            if let Some((other, _)) = volumes.iter().find(|(_, n)| *n == v) {
                return Err(StoreError::Usage(format!(
                    "volume {v} given twice: {} and {}",
                    other.display(),
                    p.display()
                )));
            }
            // The same rules as every reader: exactly the entries the signed manifest places
            // in this volume, in order, at their sizes.
            let index = Arc::new(BlobIndex::build_with(p, &h).map_err(archive_err(p))?);
            for e in h.manifest.entries_for(Some(v)) {
                if matches!(e.role, Role::Manifest | Role::Index) {
                    continue;
                }
                let found = match e.part {
                    None => index.get(&e.blob),
                    Some((n, _)) => index.get_part(&e.blob, n),
                };
                let Some((offset, size)) = found else {
                    continue;
                };
                let seg = Segment {
                    index: Arc::clone(&index),
                    offset,
                    size,
                    digest: e.digest.clone(),
                };
                let (n, count) = e.part.unwrap_or((1, 1));
                let slots = parts
                    .entry(e.blob.clone())
                    .or_insert_with(|| vec![None; count as usize]);
                if let Some(slot) = slots.get_mut(n as usize - 1) {
                    *slot = Some(seg);
                }
            }
            if head.is_none() {
                head = Some((h, blobs, signers));
            }
            volumes.push((p.clone(), v));
        }
        let (header, blobs, signers) =
            head.ok_or_else(|| StoreError::Usage("no archive given".into()))?;
        let (complete, partial): (HashMap<_, _>, HashMap<_, _>) = parts
            .into_iter()
            .partition(|(_, slots)| slots.iter().all(Option::is_some));
        let complete = complete
            .into_iter()
            .map(|(d, slots)| (d, slots.into_iter().flatten().collect()))
            .collect();
        volumes.sort_by_key(|(_, n)| *n);
        Ok((
            header,
            blobs,
            signers,
            volumes,
            VolumeSource { complete, partial },
        ))
    });
    let (header, blobs, signers, volumes, source) = blocking.await.map_err(StoreError::from)??;
    let path = volumes.first().map(|(p, _)| p.clone()).unwrap_or_default();
    let graph = checked_graph(&path, &header, &blobs)?;
    Ok(ArchiveStore {
        path,
        header,
        graph,
        signers,
        volumes,
        kind: ArchiveSource::Volumes(Arc::new(source)),
    })
}

/// Opens an archive: signatures first, then manifests and the graph, under the archive rules.
pub async fn open_archive(path: &Path, trust: &Trust) -> Result<ArchiveStore, StoreError> {
    let p = path.to_path_buf();
    let trust = trust.clone();
    let (mut reader, blobs, signers) =
        tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
            let mut reader = ArchiveReader::open(&p).map_err(archive_err(&p))?;
            let signers = trust.check(reader.header())?;
            let blobs = reader.read_manifests().map_err(archive_err(&p))?;
            Ok((reader, blobs, signers))
        })
        .await
        .map_err(StoreError::from)??;
    let header = reader.header().clone();
    let graph = checked_graph(path, &header, &blobs)?;
    let kind = if header.compressed {
        // One pass from here: blobs are offered in archive order as the engine asks for them.
        let (blob_tx, blob_rx) = mpsc::channel(1);
        let (done_tx, done_rx) = oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let _ = done_tx.send(stream_rest(&mut reader, &blob_tx));
        });
        ArchiveSource::Sequential(SequentialBlobs {
            next: Mutex::new(blob_rx),
            done: Mutex::new(Some(done_rx)),
        })
    } else {
        drop(reader);
        let (p, h) = (path.to_path_buf(), header.clone());
        let index = tokio::task::spawn_blocking(move || BlobIndex::build_with(&p, &h))
            .await
            .map_err(StoreError::from)?
            .map_err(archive_err(path))?;
        ArchiveSource::Indexed(Arc::new(index))
    };
    Ok(ArchiveStore {
        path: path.to_path_buf(),
        header,
        graph,
        signers,
        volumes: Vec::new(),
        kind,
    })
}

/// Offers one blob to the uploader; whatever it takes, the entry is read to its end and verified,
/// so a tampered blob the destination already has (and so skips) still fails the import.
fn hand_over(
    blob: &mut (impl Read + HasDigest),
    blob_tx: &mpsc::Sender<Offer>,
) -> Result<(), ArchiveError> {
    let digest = blob.digest();
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    // The uploader may drop an offer unread (blob already present), error included: keep our own copy.
    let mut watched = Watched {
        inner: blob,
        error: None,
    };
    if blob_tx.blocking_send((digest.clone(), rx)).is_ok() {
        pump(&mut watched, &tx);
    }
    let drained = drain(&mut watched);
    match watched.error.take().map_or(drained, Err) {
        Ok(()) => Ok(()),
        Err(source) => Err(ArchiveError::Io {
            context: format!("blob {digest}"),
            source,
        }),
    }
}

/// A reader that remembers its first error (a digest mismatch shows up once, at the end).
struct Watched<'a, R> {
    inner: &'a mut R,
    error: Option<std::io::Error>,
}

impl<R: Read> Read for Watched<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if self.error.is_none() {
                self.error = Some(std::io::Error::new(e.kind(), e.to_string()));
            }
        })
    }
}

/// A blob being read, named by its digest.
trait HasDigest {
    fn digest(&self) -> Digest;
}

impl HasDigest for crate::archive::reader::BlobReader<'_> {
    fn digest(&self) -> Digest {
        self.digest.clone()
    }
}

/// Reads a blob to its end (verifying it) without sending it anywhere.
fn drain(r: &mut impl Read) -> std::io::Result<()> {
    std::io::copy(r, &mut std::io::sink()).map(|_| ())
}

/// The sequential pass over the rest of a zstd archive, under the archive rules to its end.
fn stream_rest(
    reader: &mut ArchiveReader,
    blob_tx: &mpsc::Sender<Offer>,
) -> Result<(), ArchiveError> {
    while let Some(mut blob) = reader.next_blob()? {
        hand_over(&mut blob, blob_tx)?;
    }
    reader.complete()
}
