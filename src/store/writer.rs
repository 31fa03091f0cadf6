//! An airlift archive being written, as a sink that dictates the order it accepts blobs in.
//!
//! The signed manifest lists every blob before the first byte is written, so the archive is
//! planned whole up front (by the export policy); this sink then takes configs and layers in
//! the plan's order, streams each through a writer thread that hashes every byte (a mismatch
//! aborts the file), and at commit flushes, fsyncs, renames into place and writes the
//! checksum files. Until commit there is only `PATH.partial`.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::Reporter;
use super::{ByteStream, Pushed, Sink, StoreError};
use crate::archive::manifest::{
    self as am, BlobTableBuilder, IndexEntry, Manifest, Role, RootKind,
};
use crate::archive::reader::ArchiveReader;
use crate::archive::sums::FileSums;
use crate::archive::writer::{
    ArchiveWriter, ScanResult, WriteOptions, commit_rename, leading_bytes, scan_existing,
};
use crate::digest::Digest;
use crate::graph::{Graph, Kind};
use crate::oci::{Descriptor, RawManifest};
use crate::reference::Reference;

/// What an interrupted run left of one file.
enum FileState {
    /// Nothing usable: write it from the start.
    Fresh,
    /// Verified entries to keep, then continue.
    Resume(ScanResult),
    /// Complete under its final name.
    Done,
    /// Complete, still at `PATH.partial` (a volume set not yet renamed).
    DonePartial,
}

/// What to write: the whole archive, planned before the first byte.
pub struct ArchiveLayout {
    /// Each file (one, or every volume) and its volume number.
    pub files: Vec<(PathBuf, Option<u32>)>,
    /// The airlift manifest.
    pub manifest: Arc<Manifest>,
    /// Its canonical bytes (what the signatures cover).
    pub manifest_bytes: Vec<u8>,
    /// `(fingerprint, signature)` pairs.
    pub signatures: Vec<(String, [u8; crate::keys::SIGNATURE_LEN])>,
    /// The exact `index.json`.
    pub index_json: Vec<u8>,
    /// The manifest and index blobs (written from memory).
    pub manifest_blobs: HashMap<Digest, Bytes>,
    /// zstd, mtime.
    pub options: WriteOptions,
    /// Keep the verified entries an interrupted run left and write only the rest.
    pub resume: bool,
    /// Where the writer reports bytes and blobs.
    pub progress: Arc<dyn Reporter>,
    /// Blob streams opened ahead of the one being written.
    pub prefetch: usize,
    /// `(directory, NAME)` for `NAME.B3SUMS` and `NAME.SHA256SUMS`.
    pub checksums: (PathBuf, String),
}

/// The layout and what an interrupted run left of it.
struct ArchivePlan {
    layout: ArchiveLayout,
    /// What an interrupted run left of each file.
    states: Vec<FileState>,
    /// Leading bytes of a blob already written (parts kept from an interrupted run).
    skips: HashMap<Digest, u64>,
    /// The configs and layers still to write, in writing order.
    wanted: Vec<Digest>,
}

/// Builds the airlift manifest and `index.json` for a graph.
pub fn build_manifest(graph: &Graph, created: u64) -> Result<(Vec<u8>, Vec<u8>), StoreError> {
    let (manifest, index_json) = build_manifest_model(graph, created)?;
    let bytes = manifest.to_canonical_bytes().map_err(StoreError::from)?;
    Ok((bytes, index_json))
}

/// The airlift manifest model (before volume planning and base marking) and `index.json`.
pub fn build_manifest_model(
    graph: &Graph,
    created: u64,
) -> Result<(Manifest, Vec<u8>), StoreError> {
    let err = StoreError::from;
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
    // Referrers are named in index.json too, so that every reader (older ones included) finds
    // them reachable: by their cosign tag, or by their subject's tag-schema tag.
    for r in &graph.referrers {
        if let Some(node) = graph.manifests.get(&r.digest) {
            entries.push(IndexEntry {
                descriptor: node.manifest.descriptor(),
                ref_name: r
                    .tag
                    .clone()
                    .unwrap_or_else(|| crate::referrers::schema_tag(&r.subject)),
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
    let mut referrers = graph.referrers.clone();
    referrers.sort();
    referrers.dedup_by(|a, b| a.digest == b.digest && a.subject == b.subject);
    manifest.referrers = referrers;
    let mut table = BlobTableBuilder::new();
    for node in graph.manifests.values() {
        table.add_manifest(&node.manifest).map_err(err)?;
    }
    manifest.blobs = table.finish();
    Ok((manifest, index_json))
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
pub(crate) fn previous_manifest(first: &Path) -> Option<Manifest> {
    [first.to_path_buf(), partial_path(first)]
        .iter()
        .find_map(|p| ArchiveReader::open(p).ok())
        .map(|r| r.header().manifest.clone())
}

/// A blob stream handed to the writer thread, named by its digest.
type Fetched = (Digest, Box<dyn Read + Send>);

/// The writer thread and the channel that feeds it.
pub struct ArchiveSink {
    order: Vec<Digest>,
    wanted: HashSet<Digest>,
    tx: Mutex<Option<std::sync::mpsc::SyncSender<Fetched>>>,
    writer: tokio::sync::Mutex<Option<tokio::task::JoinHandle<Result<Written, StoreError>>>>,
    files: Vec<PathBuf>,
    checksums: (PathBuf, String),
    written: Mutex<Vec<PathBuf>>,
    resumed_entries: usize,
}

impl ArchiveSink {
    /// Plans the files (keeping, with `resume`, the entries of an interrupted run that
    /// re-hash to the plan) and starts the writer thread.
    pub async fn open(layout: ArchiveLayout) -> Result<ArchiveSink, StoreError> {
        let created = layout.options.mtime;
        let (files, manifest) = (layout.files.clone(), Arc::clone(&layout.manifest));
        // What interrupted runs left: verified entries are kept, anything else is refused or redone.
        let states: Vec<FileState> = {
            let (files, manifest, manifest_bytes, signatures, index_json) = (
                files.clone(),
                Arc::clone(&manifest),
                layout.manifest_bytes.clone(),
                layout.signatures.clone(),
                layout.index_json.clone(),
            );
            let resume = layout.resume;
            tokio::task::spawn_blocking(move || -> Result<Vec<FileState>, StoreError> {
                let mut out = Vec::new();
                for (path, vol) in &files {
                    if !resume {
                        out.push(FileState::Fresh);
                        continue;
                    }
                    let lead = leading_bytes(&manifest_bytes, &signatures, &index_json, *vol, created)
                        .map_err(StoreError::from)?;
                    let entries = manifest.entries_for(*vol);
                    let refuse = |e: crate::archive::ArchiveError| {
                        StoreError::Usage(format!(
                            "cannot resume: {e}; remove the old files or export without --resume"
                        ))
                    };
                    let partial = partial_path(path);
                    if path.exists() {
                        let scan = scan_existing(path, &lead, &entries, created).map_err(refuse)?;
                        if !scan.complete {
                            return Err(StoreError::Usage(format!(
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
            .map_err(StoreError::from)??
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

        let plan = ArchivePlan {
            layout,
            states,
            skips,
            wanted: fetch.into_iter().map(|(d, _)| d).collect(),
        };
        Ok(Self::start(plan, resumed_entries))
    }

    fn start(plan: ArchivePlan, resumed_entries: usize) -> ArchiveSink {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Fetched>(plan.layout.prefetch.max(1));
        let order = plan.wanted.clone();
        let wanted = plan.wanted.iter().cloned().collect();
        let files = plan.layout.files.iter().map(|(p, _)| p.clone()).collect();
        let checksums = plan.layout.checksums.clone();
        let writer = tokio::task::spawn_blocking(move || write_all(plan, &rx));
        ArchiveSink {
            order,
            wanted,
            tx: Mutex::new(Some(tx)),
            writer: tokio::sync::Mutex::new(Some(writer)),
            files,
            checksums,
            written: Mutex::new(Vec::new()),
            resumed_entries,
        }
    }

    /// Entries found whole in the files of an interrupted run and kept.
    pub fn resumed_entries(&self) -> usize {
        self.resumed_entries
    }

    /// The checksum files written at commit.
    pub fn checksum_files(&self) -> Vec<PathBuf> {
        self.written.lock().map(|w| w.clone()).unwrap_or_default()
    }

    /// Waits for the writer thread and returns its outcome.
    async fn join(&self) -> Result<Written, StoreError> {
        let handle = self.writer.lock().await.take();
        match handle {
            None => Err(StoreError::Refused(
                "the archive writer already stopped".into(),
            )),
            Some(h) => h.await?,
        }
    }
}

/// The checksums of the files this run wrote, by final path.
type Written = HashMap<PathBuf, FileSums>;

/// Writes every file of the plan; a volume set is renamed only when every volume is
/// complete, and a failed run removes the volumes it finished (a killed run leaves them for
/// `--resume`).
fn write_all(
    plan: ArchivePlan,
    rx: &std::sync::mpsc::Receiver<Fetched>,
) -> Result<Written, StoreError> {
    let is_set = plan.layout.manifest.volume.is_some();
    let mut finished: Vec<PathBuf> = Vec::new();
    let mut sums = Written::new();
    let result = write_files(&plan, rx, is_set, &mut finished, &mut sums);
    if let Err(e) = result {
        for p in &finished {
            let _ = std::fs::remove_file(p);
        }
        return Err(e);
    }
    if is_set {
        for (path, _) in &plan.layout.files {
            let partial = partial_path(path);
            if partial.exists() {
                commit_rename(&partial, path).map_err(|source| StoreError::Io {
                    context: format!("renaming {}", partial.display()),
                    source,
                })?;
            }
        }
    }
    Ok(sums)
}

impl Sink for ArchiveSink {
    async fn exists(
        &self,
        desc: &Descriptor,
        _from: Option<&Reference>,
    ) -> Result<bool, StoreError> {
        // Base blobs and entries kept from an interrupted run are not wanted again.
        Ok(!self.wanted.contains(&desc.digest))
    }

    async fn push_blob<F, Fut>(
        &self,
        desc: &Descriptor,
        _from: Option<&Reference>,
        open: F,
    ) -> Result<Pushed, StoreError>
    where
        F: Fn() -> Fut + Send + Sync,
        Fut: Future<Output = Result<ByteStream, StoreError>> + Send,
    {
        let stream = open().await?;
        let reader: Box<dyn Read + Send> = Box::new(StreamReader {
            inner: futures::executor::block_on_stream(stream),
            current: Bytes::new(),
        });
        let tx = self.tx.lock().ok().and_then(|t| t.clone());
        let digest = desc.digest.clone();
        // The send blocks while `prefetch` streams wait for the writer: that is the bound.
        let sent = match tx {
            Some(tx) => tokio::task::spawn_blocking(move || tx.send((digest, reader)).is_ok())
                .await
                .unwrap_or(false),
            None => false,
        };
        if !sent {
            // The writer stopped: its error says why.
            self.join().await?;
            return Err(StoreError::Refused(format!(
                "the archive writer stopped before blob {}",
                desc.digest
            )));
        }
        Ok(Pushed {
            uploaded: desc.size,
            uploads: 1,
            ..Pushed::default()
        })
    }

    async fn push_manifest(&self, _m: &RawManifest) -> Result<bool, StoreError> {
        // Manifests are part of the plan (the signed manifest lists them): already written.
        Ok(false)
    }

    async fn commit(&self) -> Result<Vec<String>, StoreError> {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let known = self.join().await?;
        let (dir, stem) = self.checksums.clone();
        let files = self.files.clone();
        let sums =
            tokio::task::spawn_blocking(move || write_checksums(&dir, &stem, &files, &known))
                .await??;
        if let Ok(mut w) = self.written.lock() {
            *w = sums;
        }
        Ok(self.files.iter().map(|p| p.display().to_string()).collect())
    }

    fn order(&self) -> Option<Vec<Digest>> {
        Some(self.order.clone())
    }
}

/// A blocking reader over a blob stream, for the writer thread.
struct StreamReader {
    inner: futures::executor::BlockingStream<ByteStream>,
    current: Bytes,
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.inner.next() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Writes the files that are not complete yet, in order, from the fetched blob streams.
fn write_files(
    plan: &ArchivePlan,
    rx: &std::sync::mpsc::Receiver<Fetched>,
    is_set: bool,
    finished: &mut Vec<PathBuf>,
    sums: &mut Written,
) -> Result<(), StoreError> {
    let l = &plan.layout;
    let (writer_files, writer_manifest, writer_bytes) =
        (&l.files, &*l.manifest, &l.manifest_bytes[..]);
    let (signatures, index_json, manifest_blobs, skips) = (
        &l.signatures[..],
        &l.index_json[..],
        &l.manifest_blobs,
        &plan.skips,
    );
    let (write_options, writer_progress) = (l.options, &*l.progress);
    let wrap = |what: String| {
        move |e: crate::archive::ArchiveError| StoreError::Refused(format!("{what}: {e}"))
    };
    let mut current: Option<Fetched> = None;
    for ((path, vol), state) in writer_files.iter().zip(&plan.states) {
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
                ArchiveWriter::resume_volume(path, write_options, *vol, writer_bytes, *scan)
                    .map_err(wrap(path.display().to_string()))?,
                scan.kept,
            ),
        };
        for e in &entries[start..] {
            let result = if matches!(e.role, Role::Manifest | Role::Index) {
                let bytes = manifest_blobs.get(&e.blob).cloned().unwrap_or_default();
                writer_progress.bytes(bytes.len() as u64);
                w.write_blob(&e.digest, e.size, &bytes[..])
            } else {
                if current.as_ref().map(|(d, _)| d) != Some(&e.blob) {
                    let (d, mut reader) = rx.recv().map_err(|_| {
                        StoreError::Refused(format!("download of {} was abandoned", e.blob))
                    })?;
                    if d != e.blob {
                        return Err(StoreError::Refused(format!(
                            "internal: expected blob {} from the fetcher, got {d}",
                            e.blob
                        )));
                    }
                    let skip = skips.get(&d).copied().unwrap_or(0);
                    let skipped =
                        std::io::copy(&mut (&mut reader).take(skip), &mut std::io::sink())
                            .map_err(|err| StoreError::Refused(format!("blob {d}: {err}")))?;
                    if skipped != skip {
                        return Err(StoreError::Refused(format!(
                            "blob {d}: shorter than its parts"
                        )));
                    }
                    current = Some((d, reader));
                }
                let Some((_, reader)) = current.as_mut() else {
                    return Err(StoreError::Refused("internal: no blob stream".into()));
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
            result.map_err(|err| StoreError::Refused(format!("writing {}: {err}", e.name)))?;
            if e.part.is_none_or(|(n, c)| n == c) {
                writer_progress.blob_done();
            }
        }
        let file_sums = if is_set {
            let (partial, file_sums) = w
                .finish_partial()
                .map_err(wrap(path.display().to_string()))?;
            finished.push(partial);
            file_sums
        } else {
            w.finish_with_sums()
                .map_err(wrap(path.display().to_string()))?
                .1
        };
        sums.insert(path.clone(), file_sums);
    }
    Ok(())
}

/// Counts bytes into the progress display as the writer reads them.
struct CountingReader<'a, R> {
    inner: R,
    progress: &'a dyn Reporter,
}

impl<R: std::io::Read> std::io::Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.bytes(n as u64);
        Ok(n)
    }
}

/// Writes `NAME.B3SUMS` and `NAME.SHA256SUMS` (the formats `b3sum -c` and `sha256sum -c` read)
/// listing each file by its bare name, so copies on media can be checked with stock tools.
/// Files in `known` were hashed as they were written; the others (finished by an earlier,
/// interrupted run) are read again.
pub fn write_checksums(
    dir: &Path,
    stem: &str,
    files: &[PathBuf],
    known: &HashMap<PathBuf, FileSums>,
) -> Result<Vec<PathBuf>, StoreError> {
    let io = |what: String| {
        move |source| StoreError::Io {
            context: what,
            source,
        }
    };
    let (mut b3, mut sha) = (String::new(), String::new());
    for path in files {
        let sums = match known.get(path) {
            Some(s) => s.clone(),
            None => std::fs::File::open(path)
                .and_then(FileSums::of)
                .map_err(io(format!("reading {}", path.display())))?,
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        b3.push_str(&format!("{}  {name}\n", sums.blake3));
        sha.push_str(&format!("{}  {name}\n", sums.sha256));
    }
    let mut out = Vec::new();
    for (ext, text) in [("B3SUMS", b3), ("SHA256SUMS", sha)] {
        let path = dir.join(format!("{stem}.{ext}"));
        crate::fsutil::write_atomic(&path, text.as_bytes(), crate::fsutil::PUBLIC)
            .map_err(io(format!("writing {}", path.display())))?;
        out.push(path);
    }
    Ok(out)
}

/// Where an export leaves its work in progress (for messages and cleanup checks).
pub fn partial_path(output: &Path) -> PathBuf {
    let mut s = output.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}
