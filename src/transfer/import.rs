//! Import: an archive into a registry, nothing addressable until everything verified.
//!
//! Order of work:
//! 1. read the header and check signatures (before any blob is read);
//! 2. read every manifest and index blob (verified), build the [`Graph`], check that
//!    it is closed (every descriptor listed) and that every listed blob is in the archive;
//! 3. push configs and layers, each verified while it streams (skipping what the
//!    registry already has: a re-run resumes);
//! 4. only then push manifests children-first, the metadata images, and tags.
//!
//! Uncompressed archives are read with random access (parallel uploads);
//! zstd archives are read in one sequential pass.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::TransferError;
use super::graph::{BundleLockInfo, Graph, Kind, LockedImage, ManifestNode, Root};
use super::place::{Destination, Placement};
use super::progress::{Progress, ProgressMode};
use super::publish::{BlobSource, ByteStream, PublishReport, push_blobs, push_manifests_and_tags};
use super::relocate::metadata_images;
use crate::archive::manifest::{Manifest, Role, RootKind};
use crate::archive::reader::{ArchiveHeader, ArchiveReader, BlobIndex};
use crate::archive::{ArchiveError, MAX_INDEX};
use crate::digest::Digest;
use crate::keys::VerifyingKey;
use crate::oci::{Descriptor, RawManifest};
use crate::reference::Reference;
use crate::registry::Registries;

/// Bytes per chunk read from an archive.
const CHUNK: usize = 256 * 1024;
/// Chunks buffered per blob between the archive reader and an upload.
const CHUNKS_IN_FLIGHT: usize = 16;

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
    pub fn check(&self, header: &ArchiveHeader) -> Result<Vec<String>, TransferError> {
        let valid = header.valid_signers(&self.keys);
        if self.allow_unsigned {
            return Ok(valid);
        }
        if self.keys.is_empty() {
            return Err(TransferError::Usage(
                "no trusted keys given: pass --trust PUB (or --allow-unsigned to skip signature checks)".into(),
            ));
        }
        if header.signatures.is_empty() {
            return Err(TransferError::Verification(
                "the archive is unsigned; refusing it (pass --allow-unsigned to accept unsigned archives)".into(),
            ));
        }
        header
            .check_signatures(&self.keys, self.required.max(1))
            .map_err(|e| {
                TransferError::Verification(format!(
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

/// An archive opened for import: header checked, manifests read, graph built.
pub struct OpenedArchive {
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
    source: ArchiveSource,
}

fn archive_err(path: &Path) -> impl Fn(ArchiveError) -> TransferError + '_ {
    move |e| TransferError::Verification(format!("{}: {e}", path.display()))
}

/// Builds the graph an archive carries from its airlift manifest and manifest blobs.
pub fn graph_from_archive(
    manifest: &Manifest,
    manifests: Vec<RawManifest>,
) -> Result<Graph, TransferError> {
    let bad = |m: String| TransferError::Verification(m);
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
    // Closure: every blob any manifest names must be in the blob table, with the same size.
    for (d, blob) in &graph.blobs {
        match manifest.blob(d) {
            Some(e) if e.size == blob.desc.size => {}
            Some(e) => {
                return Err(bad(format!(
                    "blob {d}: manifests say {} bytes, the airlift manifest says {}",
                    blob.desc.size, e.size
                )));
            }
            None => {
                return Err(bad(format!(
                    "blob {d} is referenced but not listed in the airlift manifest"
                )));
            }
        }
    }
    Ok(graph)
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
struct Segment {
    index: Arc<BlobIndex>,
    offset: u64,
    size: u64,
    digest: Digest,
}

impl Segment {
    /// A verified reader of this entry whose errors name the volume file.
    fn open(&self) -> Result<impl Read + Send + use<>, ArchiveError> {
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
struct VolumeSource {
    /// Blobs whose every entry (whole blob, or all parts) is in the given volumes.
    complete: HashMap<Digest, Vec<Segment>>,
    /// Split blobs with only some parts in the given volumes: slot `i` is part `i + 1`.
    partial: HashMap<Digest, Vec<Option<Segment>>>,
    /// Every content entry of the given volumes, by blob.
    entries: Vec<(Digest, Segment)>,
}

/// A verified stream of one volume entry.
fn segment_stream(seg: Segment) -> ByteStream {
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
    report: &mut PublishReport,
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
                                .then(move |(seg, part_at, desc)| {
                                    let c = Arc::clone(&c);
                                    async move {
                                        match seg {
                                            Some(seg) => segment_stream(seg),
                                            None => {
                                                c.get_blob(&part_at, &desc).into_io_stream().boxed()
                                            }
                                        }
                                    }
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

/// One blob offered by the sequential reader: its digest and its chunks.
type Offer = (Digest, mpsc::Receiver<std::io::Result<Bytes>>);
/// The sequential reader's final word: blobs never seen, or why it stopped.
type PassResult = oneshot::Receiver<Result<Vec<Digest>, ArchiveError>>;

struct SequentialBlobs {
    next: Mutex<mpsc::Receiver<Offer>>,
    done: Mutex<Option<PassResult>>,
}

impl BlobSource for ArchiveSource {
    async fn open(
        &self,
        _repo: &Reference,
        desc: &Descriptor,
    ) -> Result<ByteStream, TransferError> {
        match self {
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
                    TransferError::Other(format!(
                        "blob {} is not in the volumes given",
                        desc.digest
                    ))
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
                            return Err(TransferError::Other(format!(
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
pub async fn open_archives(
    paths: &[PathBuf],
    trust: &Trust,
) -> Result<OpenedArchive, TransferError> {
    let first = paths
        .first()
        .ok_or_else(|| TransferError::Usage("no archive given".into()))?;
    let p = first.clone();
    let is_set = tokio::task::spawn_blocking(move || {
        ArchiveReader::open(&p).map(|r| r.header().manifest.volume.is_some())
    })
    .await
    .map_err(|e| TransferError::Other(e.to_string()))?
    .map_err(archive_err(first))?;
    if !is_set {
        if paths.len() > 1 {
            return Err(TransferError::Usage(format!(
                "{} is a single-file archive: import it alone",
                first.display()
            )));
        }
        return open_archive(first, trust).await;
    }
    open_volume_set(paths, trust).await
}

/// Header, signatures, manifest blobs of one volume.
type VolumeHead = (ArchiveHeader, Vec<RawManifest>, Vec<String>);

fn read_manifest_blobs(
    reader: &mut ArchiveReader,
    p: &Path,
) -> Result<Vec<RawManifest>, TransferError> {
    let mut manifests = Vec::new();
    while let Some(mut blob) = reader.next_blob().map_err(archive_err(p))? {
        if !matches!(blob.role, Role::Manifest | Role::Index) {
            break;
        }
        if blob.size > MAX_INDEX {
            return Err(TransferError::Verification(format!(
                "manifest blob {} is {} bytes, over the {MAX_INDEX}-byte limit",
                blob.digest, blob.size
            )));
        }
        let mut bytes = Vec::with_capacity(blob.size as usize);
        let (media_type, digest) = (blob.media_type.clone(), blob.digest.clone());
        blob.read_to_end(&mut bytes).map_err(|e| {
            TransferError::Verification(format!("{}: blob {digest}: {e}", p.display()))
        })?;
        manifests.push(
            RawManifest::from_bytes(Bytes::from(bytes), Some(&media_type))
                .map_err(|e| TransferError::Verification(e.to_string()))?,
        );
    }
    Ok(manifests)
}

async fn open_volume_set(paths: &[PathBuf], trust: &Trust) -> Result<OpenedArchive, TransferError> {
    let paths_owned = paths.to_vec();
    let trust = trust.clone();
    let blocking = tokio::task::spawn_blocking(move || -> Result<_, TransferError> {
        let mut head: Option<VolumeHead> = None;
        let mut volumes: Vec<(PathBuf, u32)> = Vec::new();
        for p in &paths_owned {
            let mut reader = ArchiveReader::open(p).map_err(archive_err(p))?;
            let signers = trust.check(reader.header()).map_err(|e| match e {
                TransferError::Verification(m) => {
                    TransferError::Verification(format!("{}: {m}", p.display()))
                }
                other => other,
            })?;
            let h = reader.header().clone();
            let Some(v) = h.volume else {
                return Err(TransferError::Usage(format!(
                    "{} is a single-file archive, not a volume of this set",
                    p.display()
                )));
            };
            if let Some((first, _, _)) = &head
                && first.manifest_bytes != h.manifest_bytes
            {
                return Err(TransferError::Verification(format!(
                    "{} is a volume of another archive (manifest {}, expected {})",
                    p.display(),
                    Digest::sha256_of(&h.manifest_bytes),
                    Digest::sha256_of(&first.manifest_bytes)
                )));
            }
            if let Some((other, _)) = volumes.iter().find(|(_, n)| *n == v) {
                return Err(TransferError::Usage(format!(
                    "volume {v} given twice: {} and {}",
                    other.display(),
                    p.display()
                )));
            }
            if head.is_none() {
                let manifests = read_manifest_blobs(&mut reader, p)?;
                head = Some((h, manifests, signers));
            }
            volumes.push((p.clone(), v));
        }
        let (header, manifests, signers) =
            head.ok_or_else(|| TransferError::Usage("no archive given".into()))?;
        // Every volume must hold exactly the entries the signed manifest places in it.
        let mut parts: HashMap<Digest, Vec<Option<Segment>>> = HashMap::new();
        let mut entries = Vec::new();
        for (p, v) in &volumes {
            let index = Arc::new(BlobIndex::build(p).map_err(archive_err(p))?);
            let planned = header.manifest.entries_for(Some(*v));
            for e in &planned {
                let found = match e.part {
                    None => index.get(&e.blob),
                    Some((n, _)) => index.get_part(&e.blob, n),
                };
                let Some((offset, size)) = found.filter(|(_, s)| *s == e.size) else {
                    return Err(TransferError::Verification(format!(
                        "{} (volume {v}): entry {} is missing or has the wrong size: the volume is incomplete or damaged",
                        p.display(),
                        e.name
                    )));
                };
                let seg = Segment {
                    index: Arc::clone(&index),
                    offset,
                    size,
                    digest: e.digest.clone(),
                };
                entries.push((e.blob.clone(), seg.clone()));
                if matches!(e.role, Role::Manifest | Role::Index) {
                    continue;
                }
                let (n, count) = e.part.unwrap_or((1, 1));
                let slots = parts
                    .entry(e.blob.clone())
                    .or_insert_with(|| vec![None; count as usize]);
                if let Some(slot) = slots.get_mut(n as usize - 1) {
                    *slot = Some(seg);
                }
            }
            if index.len() + index.part_count() != planned.len() {
                return Err(TransferError::Verification(format!(
                    "{} (volume {v}): {} entries, the signed manifest places {} in it",
                    p.display(),
                    index.len() + index.part_count(),
                    planned.len()
                )));
            }
        }
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
            manifests,
            signers,
            volumes,
            VolumeSource {
                complete,
                partial,
                entries,
            },
        ))
    });
    let (header, manifests, signers, volumes, source) = blocking
        .await
        .map_err(|e| TransferError::Other(e.to_string()))??;
    let graph = graph_from_archive(&header.manifest, manifests)?;
    Ok(OpenedArchive {
        path: volumes.first().map(|(p, _)| p.clone()).unwrap_or_default(),
        header,
        graph,
        signers,
        volumes,
        source: ArchiveSource::Volumes(Arc::new(source)),
    })
}

/// Opens an archive for import: signatures first, then manifests and the graph.
pub async fn open_archive(path: &Path, trust: &Trust) -> Result<OpenedArchive, TransferError> {
    let path_buf = path.to_path_buf();
    let trust = trust.clone();
    let (head_tx, head_rx) = oneshot::channel();
    let (blob_tx, blob_rx) = mpsc::channel(1);
    let (done_tx, done_rx) = oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let p = path_buf.clone();
        let mut reader = match ArchiveReader::open(&p) {
            Ok(r) => r,
            Err(e) => {
                let _ = head_tx.send(Err(archive_err(&p)(e)));
                return;
            }
        };
        let signers = match trust.check(reader.header()) {
            Ok(s) => s,
            Err(e) => {
                let _ = head_tx.send(Err(e));
                return;
            }
        };
        let compressed = reader.header().compressed;
        let header = reader.header().clone();
        // Manifests are read in this pass; a zstd archive keeps going from the first config.
        let mut manifests = Vec::new();
        loop {
            let mut blob = match reader.next_blob() {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(e) => {
                    let _ = head_tx.send(Err(archive_err(&p)(e)));
                    return;
                }
            };
            if matches!(blob.role, Role::Manifest | Role::Index) {
                if blob.size > MAX_INDEX {
                    let _ = head_tx.send(Err(TransferError::Verification(format!(
                        "manifest blob {} is {} bytes, over the {MAX_INDEX}-byte limit",
                        blob.digest, blob.size
                    ))));
                    return;
                }
                let mut bytes = Vec::with_capacity(blob.size as usize);
                let media_type = blob.media_type.clone();
                let digest = blob.digest.clone();
                if let Err(e) = blob.read_to_end(&mut bytes) {
                    let _ = head_tx.send(Err(TransferError::Verification(format!(
                        "{}: blob {digest}: {e}",
                        p.display()
                    ))));
                    return;
                }
                match RawManifest::from_bytes(Bytes::from(bytes), Some(&media_type)) {
                    Ok(m) => manifests.push(m),
                    Err(e) => {
                        let _ = head_tx.send(Err(TransferError::Verification(e.to_string())));
                        return;
                    }
                }
                continue;
            }
            if !compressed {
                break;
            }
            // Sequential mode: the graph goes to the caller, then blobs follow in archive order.
            if head_tx.send(Ok((header, manifests, signers))).is_err() {
                return;
            }
            let first = hand_over(&mut blob, &blob_tx);
            drop(blob);
            let result = first.and_then(|()| stream_rest(&mut reader, &blob_tx));
            let _ = done_tx.send(result);
            return;
        }
        let missing: Vec<Digest> = if compressed {
            reader
                .missing()
                .into_iter()
                .map(|b| b.digest.clone())
                .collect()
        } else {
            Vec::new()
        };
        let _ = head_tx.send(Ok((header, manifests, signers)));
        let _ = done_tx.send(Ok(missing));
    });
    let (header, manifests, signers) = head_rx
        .await
        .map_err(|_| TransferError::Other("archive reader stopped".into()))??;
    let graph = graph_from_archive(&header.manifest, manifests)?;
    let source = if header.compressed {
        ArchiveSource::Sequential(SequentialBlobs {
            next: Mutex::new(blob_rx),
            done: Mutex::new(Some(done_rx)),
        })
    } else {
        let p = path.to_path_buf();
        let index = tokio::task::spawn_blocking(move || BlobIndex::build(&p))
            .await
            .map_err(|e| TransferError::Other(e.to_string()))?
            .map_err(archive_err(path))?;
        let missing: Vec<String> = header
            .manifest
            .blobs
            .iter()
            .filter(|b| !b.base && index.get(&b.digest).is_none())
            .map(|b| b.digest.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(missing_blobs(path, &missing));
        }
        // Every listed blob is present and entries are unique, so a surplus is an unlisted entry:
        // content the signature does not cover must not pass.
        let carried = header.manifest.blobs.iter().filter(|b| !b.base).count();
        if index.len() + index.part_count() > carried {
            return Err(TransferError::Verification(format!(
                "{}: {} blob entr(ies) not listed in the airlift manifest",
                path.display(),
                index.len() + index.part_count() - carried
            )));
        }
        ArchiveSource::Indexed(Arc::new(index))
    };
    Ok(OpenedArchive {
        path: path.to_path_buf(),
        header,
        graph,
        signers,
        volumes: Vec::new(),
        source,
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

/// Hashes blobs that were never read because the destination already had them: the archive
/// must verify whole, whatever the destination holds.
async fn verify_unread(
    index: &Arc<BlobIndex>,
    digests: Vec<Digest>,
    path: &Path,
) -> Result<(), TransferError> {
    let index = Arc::clone(index);
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        for d in digests {
            let mut r = index.open_blob(&d).map_err(archive_err(&path))?;
            drain(&mut r).map_err(|e| {
                TransferError::Verification(format!("{}: blob {d}: {e}", path.display()))
            })?;
        }
        Ok(())
    })
    .await
    .map_err(|e| TransferError::Other(e.to_string()))?
}

/// The sequential pass over the rest of a zstd archive; returns blobs never seen.
fn stream_rest(
    reader: &mut ArchiveReader,
    blob_tx: &mpsc::Sender<Offer>,
) -> Result<Vec<Digest>, ArchiveError> {
    loop {
        let mut blob = match reader.next_blob()? {
            None => break,
            Some(b) => b,
        };
        hand_over(&mut blob, blob_tx)?;
    }
    Ok(reader
        .missing()
        .into_iter()
        .map(|b| b.digest.clone())
        .collect())
}

/// What an import did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImportSummary {
    /// sha256 of the archive's airlift manifest.
    pub manifest_digest: Digest,
    /// Trusted signers.
    pub signers: Vec<String>,
    /// The registry work.
    pub report: PublishReport,
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
    let graph = opened.graph;
    let placement = Placement::plan(&graph, dest)?;
    let manifest = &opened.header.manifest;
    // A delta relies on blobs of its base: they must be at the destination before anything else.
    check_base_present(registries, &graph, &placement, manifest).await?;
    let concurrency = match opened.source {
        ArchiveSource::Sequential(_) => 1,
        _ => concurrency,
    };
    // This run pushes what its files carry: for volumes, whole blobs and split blobs with all parts.
    let mut subset = graph.clone();
    subset.blobs.retain(|d, _| {
        let carried = manifest.blob(d).is_some_and(|b| !b.base);
        match &opened.source {
            ArchiveSource::Volumes(v) => carried && v.complete.contains_key(d),
            _ => carried,
        }
    });
    let total: u64 = subset.blobs.values().map(|b| b.desc.size).sum();
    let progress = Arc::new(Progress::new(
        progress,
        "import",
        subset.blobs.len() as u64,
        total,
    ));
    let mut report = push_blobs(
        registries,
        &subset,
        &placement,
        &opened.source,
        concurrency,
        &progress,
    )
    .await?;
    if let ArchiveSource::Indexed(index) = &opened.source {
        let unread: Vec<Digest> = subset
            .blobs
            .keys()
            .filter(|d| !report.pushed_digests.contains(*d))
            .cloned()
            .collect();
        verify_unread(index, unread, &opened.path).await?;
    }
    if let ArchiveSource::Volumes(v) = &opened.source {
        let unread: Vec<Segment> = v
            .entries
            .iter()
            .filter(|(d, _)| !report.pushed_digests.contains(d))
            .map(|(_, s)| s.clone())
            .collect();
        tokio::task::spawn_blocking(move || -> Result<(), TransferError> {
            for seg in unread {
                let mut r = seg
                    .open()
                    .map_err(|e| TransferError::Verification(e.to_string()))?;
                drain(&mut r).map_err(|e| TransferError::Verification(e.to_string()))?;
            }
            Ok(())
        })
        .await
        .map_err(|e| TransferError::Other(e.to_string()))??;
    }
    // A compressed archive is only known complete once the pass has ended.
    if let ArchiveSource::Sequential(seq) = &opened.source {
        {
            let mut next = seq.next.lock().await;
            while next.recv().await.is_some() {}
        }
        let done = seq.done.lock().await.take();
        if let Some(done) = done {
            let missing = done
                .await
                .map_err(|_| TransferError::Other("archive reader stopped".into()))?
                .map_err(archive_err(&opened.path))?;
            if !missing.is_empty() {
                return Err(missing_blobs(&opened.path, &missing));
            }
        }
    }
    let split_needed = match &opened.source {
        ArchiveSource::Volumes(v) => {
            handle_split_blobs(registries, &graph, &placement, manifest, v, &mut report).await?
        }
        _ => HashMap::new(),
    };
    // Every carried blob not handled by this run must already be at the destination.
    let others: Vec<Digest> = graph
        .blobs
        .keys()
        .filter(|d| {
            !subset.blobs.contains_key(*d)
                && !report.pushed_digests.contains(*d)
                && manifest.blob(d).is_some_and(|b| !b.base)
        })
        .cloned()
        .collect();
    let absent = absent_blobs(registries, &placement, &others).await?;
    if !absent.is_empty() {
        progress.finish();
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
        return Ok((
            ImportSummary {
                manifest_digest: Digest::sha256_of(&opened.header.manifest_bytes),
                signers: opened.signers,
                report,
                mapping: BTreeMap::new(),
                complete: false,
                volumes_needed: needed,
            },
            placement,
            graph,
        ));
    }
    let extras = metadata_images(&graph, &placement, dest)?;
    push_manifests_and_tags(registries, &graph, &placement, &extras, &mut report).await?;
    progress.finish();
    let summary = ImportSummary {
        manifest_digest: Digest::sha256_of(&opened.header.manifest_bytes),
        signers: opened.signers,
        report,
        mapping: placement
            .mapping
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect(),
        complete: true,
        volumes_needed: Vec::new(),
    };
    Ok((summary, placement, graph))
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

/// The error for blobs the signed manifest lists but the archive does not hold.
fn missing_blobs(path: &Path, missing: &[impl std::fmt::Display]) -> TransferError {
    TransferError::Verification(format!(
        "{}: {} blob(s) listed in the airlift manifest are missing: {}",
        path.display(),
        missing.len(),
        first_ten(missing)
    ))
}
