//! Writes an archive in one streaming pass, atomically.
//!
//! Everything goes to `PATH.partial`; only a complete, fsynced archive is renamed to `PATH`,
//! so a USB stick pulled mid-export never holds something that looks like an archive.
//! Blobs are copied through a verifying reader, never buffered.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::manifest::{Manifest, PlannedEntry};
use super::reader::VolumeRecord;
use super::sums::{FileSums, SumsWriter};
use super::tar;
use super::{
    ArchiveError, EntryName, INDEX_JSON, MANIFEST_ENTRY, OCI_LAYOUT, OCI_LAYOUT_CONTENT,
    VOLUME_ENTRY,
};
use crate::digest::{Digest, DigestError, VerifyingReader};
use crate::fsutil::WriteBehind;
use crate::keys::{self, SIGNATURE_LEN, SigningKey};

/// How to write an archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOptions {
    /// Compress the whole tar with zstd.
    pub zstd: bool,
    /// Every entry's mtime: the archive's creation time (use `SOURCE_DATE_EPOCH` when set).
    pub mtime: u64,
}

/// zstd level: fixed, because output bytes must not depend on anything but the inputs.
const ZSTD_LEVEL: i32 = 3;

/// The file under the tar (or zstd) stream: hashed whole for the checksum files, and handed
/// to the disk window by window.
type Out = SumsWriter<WriteBehind>;

enum Sink {
    Plain(BufWriter<Out>),
    Zstd(zstd::stream::write::Encoder<'static, BufWriter<Out>>),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(buf),
            Sink::Zstd(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Zstd(w) => w.flush(),
        }
    }
}

/// Signs manifest bytes with each key, giving what [`ArchiveWriter::write_header`] takes.
pub fn sign_manifest(
    manifest_bytes: &[u8],
    signers: &[SigningKey],
) -> Vec<(String, [u8; SIGNATURE_LEN])> {
    signers
        .iter()
        .map(|k| {
            (
                keys::fingerprint(&k.verifying_key()),
                keys::sign(k, manifest_bytes),
            )
        })
        .collect()
}

/// Streams an archive to `PATH.partial` and renames it to `PATH` on [`ArchiveWriter::finish`].
///
/// Call order: [`create`](Self::create), [`write_header`](Self::write_header), then
/// [`write_blob`](Self::write_blob) for every blob of the manifest in
/// [`Manifest::blob_order`], then [`finish`](Self::finish). Any error, or dropping the
/// writer before `finish`, removes the partial file.
pub struct ArchiveWriter {
    path: PathBuf,
    partial: PathBuf,
    sink: Option<Sink>,
    mtime: u64,
    /// Which volume of a set this file is (`None`: a single-file archive).
    volume: Option<u32>,
    /// The entries still to write, in order (reversed: next is last).
    pending: Option<Vec<PlannedEntry>>,
    finished: bool,
}

/// What an existing (partial or finished) archive file holds of the planned content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanResult {
    /// Content entries found whole and verified, from the first.
    pub kept: usize,
    /// Byte offset just after the last kept entry (where writing resumes).
    pub offset: u64,
    /// Whether every planned entry and the end-of-archive trailer are there, and nothing more.
    pub complete: bool,
}

/// The exact bytes of the leading entries (layout, manifest, signatures, index, volume record).
pub fn leading_bytes(
    manifest_bytes: &[u8],
    signatures: &[(String, [u8; SIGNATURE_LEN])],
    index_json: &[u8],
    volume: Option<u32>,
    mtime: u64,
) -> Result<Vec<u8>, ArchiveError> {
    let parsed = Manifest::parse(manifest_bytes)?;
    parsed.manifest.index.check(index_json).map_err(|e| {
        ArchiveError::Usage(format!(
            "index.json does not match the manifest's `index`: {e}"
        ))
    })?;
    let mut sigs: Vec<&(String, [u8; SIGNATURE_LEN])> = signatures.iter().collect();
    sigs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::new();
    let io = |e| ArchiveError::io("building the archive header")(e);
    tar::write_entry(
        &mut out,
        OCI_LAYOUT,
        OCI_LAYOUT_CONTENT.len() as u64,
        mtime,
        &mut &OCI_LAYOUT_CONTENT[..],
    )
    .map_err(io)?;
    tar::write_entry(
        &mut out,
        MANIFEST_ENTRY,
        manifest_bytes.len() as u64,
        mtime,
        &mut &manifest_bytes[..],
    )
    .map_err(io)?;
    for (i, (fp, sig)) in sigs.iter().enumerate() {
        let name = format!("{}{fp}.sig", super::SIGNATURES_DIR);
        let ok = matches!(EntryName::parse(&name), Ok(EntryName::Signature(_)));
        if !ok || (i > 0 && sigs[i - 1].0 == *fp) {
            return Err(ArchiveError::Usage(format!(
                "bad or repeated signature fingerprint {fp:?}"
            )));
        }
        tar::write_entry(&mut out, &name, sig.len() as u64, mtime, &mut &sig[..]).map_err(io)?;
    }
    tar::write_entry(
        &mut out,
        INDEX_JSON,
        index_json.len() as u64,
        mtime,
        &mut &index_json[..],
    )
    .map_err(io)?;
    match (&parsed.manifest.volume, volume) {
        (Some(set), Some(n)) => {
            let record = VolumeRecord {
                manifest: Digest::sha256_of(manifest_bytes),
                volume: n,
                count: set.count,
            };
            record.check(&parsed.manifest, manifest_bytes)?;
            let bytes =
                super::manifest::canonical_json(&record).map_err(|source| ArchiveError::Json {
                    name: VOLUME_ENTRY.into(),
                    source,
                })?;
            tar::write_entry(
                &mut out,
                VOLUME_ENTRY,
                bytes.len() as u64,
                mtime,
                &mut &bytes[..],
            )
            .map_err(io)?;
        }
        (None, None) => {}
        (Some(_), None) => {
            return Err(ArchiveError::Usage(
                "a volume set is written one volume at a time".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(ArchiveError::Usage(
                "a volume number for an archive that is not a volume set".into(),
            ));
        }
    }
    Ok(out)
}

/// Checks an existing file against the planned bytes: the leading entries must be identical
/// (else the archive planned now is not the one that was being written: refused), then each
/// content entry is re-hashed; the scan stops at the first missing, cut or differing entry.
pub fn scan_existing(
    path: &Path,
    leading: &[u8],
    entries: &[PlannedEntry],
    mtime: u64,
) -> Result<ScanResult, ArchiveError> {
    let ctx = || format!("reading {}", path.display());
    let file = File::open(path).map_err(ArchiveError::io(ctx()))?;
    let len = file.metadata().map_err(ArchiveError::io(ctx()))?.len();
    let mut r = io::BufReader::with_capacity(1 << 20, file);
    let fresh = ScanResult {
        kept: 0,
        offset: 0,
        complete: false,
    };
    if len < leading.len() as u64 {
        // Cut inside the leading entries: nothing worth keeping.
        return Ok(fresh);
    }
    let mut head = vec![0u8; leading.len()];
    r.read_exact(&mut head).map_err(ArchiveError::io(ctx()))?;
    if head[..] != leading[..] {
        return Err(ArchiveError::Invalid {
            name: path.display().to_string(),
            reason: "its leading entries (signed manifest, signatures, index, volume record) differ from the archive planned now: the source or the options changed since it was written".into(),
        });
    }
    let mut offset = leading.len() as u64;
    let mut kept = 0;
    for e in entries {
        let pad = tar::padding(e.size);
        if offset + 512 + e.size + pad > len {
            break;
        }
        let mut h = [0u8; 512];
        r.read_exact(&mut h).map_err(ArchiveError::io(ctx()))?;
        if h != tar::header(&e.name, e.size, mtime)? {
            break;
        }
        // The digest covers the data only: hash exactly `size` bytes, then check the padding.
        let mut hasher = crate::digest::Hasher::new(e.digest.algorithm());
        let mut left = e.size;
        let mut buf = vec![0u8; 256 * 1024];
        while left > 0 {
            let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            r.read_exact(&mut buf[..want])
                .map_err(ArchiveError::io(ctx()))?;
            hasher.update(&buf[..want]);
            left -= want as u64;
        }
        let mut zeros = [0u8; 512];
        r.read_exact(&mut zeros[..pad as usize])
            .map_err(ArchiveError::io(ctx()))?;
        if hasher.finish() != e.digest || zeros.iter().any(|&b| b != 0) {
            break;
        }
        kept += 1;
        offset += 512 + e.size + pad;
    }
    let mut complete = false;
    if kept == entries.len() && len == offset + 1024 {
        let mut trailer = [0u8; 1024];
        r.read_exact(&mut trailer)
            .map_err(ArchiveError::io(ctx()))?;
        complete = trailer.iter().all(|&b| b == 0);
    }
    Ok(ScanResult {
        kept,
        offset,
        complete,
    })
}

fn partial_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

impl ArchiveWriter {
    /// Starts writing; creates (or truncates) `PATH.partial`.
    pub fn create(path: &Path, options: WriteOptions) -> Result<ArchiveWriter, ArchiveError> {
        Self::create_volume(path, options, None)
    }

    /// Starts writing volume `volume` of a set (`None`: a single-file archive).
    pub fn create_volume(
        path: &Path,
        options: WriteOptions,
        volume: Option<u32>,
    ) -> Result<ArchiveWriter, ArchiveError> {
        let partial = partial_path(path);
        // Never through a symlink planted at the temp name: it would aim the archive elsewhere.
        let file = crate::fsutil::create_nofollow(&partial, crate::fsutil::PUBLIC).map_err(
            ArchiveError::io(format!(
                "creating {} (a symlink there is refused, not followed)",
                partial.display()
            )),
        )?;
        Self::with_file(path, partial, file, options, volume)
    }

    /// Reopens `PATH.partial` after [`scan_existing`] found `scan.kept` whole entries: the
    /// tail after `scan.offset` is discarded and writing continues with the next entry.
    /// Uncompressed archives only.
    pub fn resume_volume(
        path: &Path,
        options: WriteOptions,
        volume: Option<u32>,
        manifest_bytes: &[u8],
        scan: ScanResult,
    ) -> Result<ArchiveWriter, ArchiveError> {
        if options.zstd {
            return Err(ArchiveError::Usage(
                "a zstd-compressed archive cannot be resumed".into(),
            ));
        }
        let partial = partial_path(path);
        let ctx = || format!("reopening {}", partial.display());
        let mut file = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&partial)
            .map_err(ArchiveError::io(ctx()))?;
        file.set_len(scan.offset).map_err(ArchiveError::io(ctx()))?;
        io::Seek::seek(&mut file, io::SeekFrom::Start(scan.offset))
            .map_err(ArchiveError::io(ctx()))?;
        let kept = File::open(&partial).map_err(ArchiveError::io(ctx()))?;
        let mut w = Self::with_file(path, partial, file, options, volume)?;
        if let Some(Sink::Plain(out)) = w.sink.as_mut() {
            let seeded = out.get_mut().seed(kept.take(scan.offset));
            seeded.map_err(ArchiveError::io(format!(
                "re-reading {}",
                w.partial.display()
            )))?;
        }
        let manifest = Manifest::parse(manifest_bytes)?.manifest;
        let mut order = manifest.entries_for(volume);
        if scan.kept > order.len() {
            return Err(ArchiveError::Usage("more entries kept than planned".into()));
        }
        order.drain(..scan.kept);
        order.reverse();
        w.pending = Some(order);
        Ok(w)
    }

    fn with_file(
        path: &Path,
        partial: PathBuf,
        file: File,
        options: WriteOptions,
        volume: Option<u32>,
    ) -> Result<ArchiveWriter, ArchiveError> {
        let file = WriteBehind::new(file).map_err(|e| {
            let _ = fs::remove_file(&partial);
            ArchiveError::io(format!("opening {}", partial.display()))(e)
        })?;
        let buf = BufWriter::with_capacity(1 << 20, SumsWriter::new(file));
        let sink = if options.zstd {
            let enc = zstd::stream::write::Encoder::new(buf, ZSTD_LEVEL)
                .and_then(|mut e| {
                    e.include_checksum(true)?;
                    Ok(e)
                })
                .map_err(|e| {
                    let _ = fs::remove_file(&partial);
                    ArchiveError::io("starting zstd")(e)
                })?;
            Sink::Zstd(enc)
        } else {
            Sink::Plain(buf)
        };
        Ok(ArchiveWriter {
            path: path.to_path_buf(),
            partial,
            sink: Some(sink),
            mtime: options.mtime,
            volume,
            pending: None,
            finished: false,
        })
    }

    fn sink(&mut self) -> Result<&mut Sink, ArchiveError> {
        self.sink
            .as_mut()
            .ok_or_else(|| ArchiveError::Usage("writer already failed".into()))
    }

    /// Runs one write step; on failure the writer is poisoned and the partial file removed.
    fn step<T>(
        &mut self,
        f: impl FnOnce(&mut Sink, u64) -> Result<T, ArchiveError>,
    ) -> Result<T, ArchiveError> {
        let mtime = self.mtime;
        let r = f(self.sink()?, mtime);
        if r.is_err() {
            self.abort();
        }
        r
    }

    fn abort(&mut self) {
        self.sink = None;
        let _ = fs::remove_file(&self.partial);
    }

    /// Writes `oci-layout`, the manifest, its signatures (sorted by fingerprint), `index.json`.
    ///
    /// The manifest is parsed to learn which blobs must follow and in which order.
    pub fn write_header(
        &mut self,
        manifest_bytes: &[u8],
        signatures: &[(String, [u8; SIGNATURE_LEN])],
        index_json: &[u8],
    ) -> Result<(), ArchiveError> {
        if self.pending.is_some() {
            return Err(ArchiveError::Usage("write_header called twice".into()));
        }
        let volume = self.volume;
        let built = leading_bytes(manifest_bytes, signatures, index_json, volume, self.mtime)
            .and_then(|lead| Ok((lead, Manifest::parse(manifest_bytes)?.manifest)));
        let (lead, manifest) = match built {
            Ok(x) => x,
            Err(e) => {
                self.abort();
                return Err(e);
            }
        };
        self.step(|out, _| {
            out.write_all(&lead)
                .map_err(ArchiveError::io("writing the archive header"))
        })?;
        let mut order = manifest.entries_for(volume);
        order.reverse();
        self.pending = Some(order);
        Ok(())
    }

    /// Streams one blob (or blob part) into the archive, checking size and digest as the
    /// bytes pass; `digest` is the entry's digest (a part's own digest for a part).
    ///
    /// Entries must come in [`Manifest::entries_for`] order. A mismatch aborts the archive.
    pub fn write_blob(
        &mut self,
        digest: &Digest,
        size: u64,
        reader: impl Read,
    ) -> Result<(), ArchiveError> {
        let next = match self.pending.as_ref() {
            None => return Err(ArchiveError::Usage("write_header must come first".into())),
            Some(p) => p.last().map(|e| (e.digest.clone(), e.size, e.name.clone())),
        };
        let name = match next {
            Some((d, s, name)) if d == *digest && s == size => name,
            Some((d, s, _)) => {
                self.abort();
                return Err(ArchiveError::Usage(format!(
                    "expected blob {d} ({s} bytes) next, got {digest} ({size} bytes)"
                )));
            }
            None => {
                self.abort();
                return Err(ArchiveError::Usage(format!(
                    "blob {digest} is not in the manifest (or written twice)"
                )));
            }
        };
        self.step(|out, mtime| {
            let mut src = VerifyingReader::new(reader, digest.clone(), Some(size));
            tar::write_entry(out, &name, size, mtime, &mut src).map_err(|e| {
                let digest_error = e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<DigestError>())
                    .map(clone_digest_error);
                match digest_error {
                    Some(d) => ArchiveError::Digest(d),
                    None => ArchiveError::io(format!("writing {name}"))(e),
                }
            })
        })?;
        if let Some(p) = self.pending.as_mut() {
            p.pop();
        }
        Ok(())
    }

    /// Ends the tar, finishes compression, fsyncs, renames to `PATH`, fsyncs the directory.
    pub fn finish(self) -> Result<PathBuf, ArchiveError> {
        self.finish_with_sums().map(|(path, _)| path)
    }

    /// Like [`finish`](Self::finish), also giving the finished file's checksums.
    pub fn finish_with_sums(self) -> Result<(PathBuf, FileSums), ArchiveError> {
        let path = self.path.clone();
        let sums = self.finish_inner(true)?;
        Ok((path, sums))
    }

    /// Like [`finish_with_sums`](Self::finish_with_sums) but leaves the complete, fsynced
    /// file at `PATH.partial` (returned): a volume set is renamed only once every volume is
    /// complete, so an interrupted export never leaves files that look like a finished set.
    pub fn finish_partial(self) -> Result<(PathBuf, FileSums), ArchiveError> {
        let partial = self.partial.clone();
        let sums = self.finish_inner(false)?;
        Ok((partial, sums))
    }

    fn finish_inner(mut self, rename: bool) -> Result<FileSums, ArchiveError> {
        match self.pending.as_ref() {
            None => {
                self.abort();
                return Err(ArchiveError::Usage("finish before write_header".into()));
            }
            Some(p) if !p.is_empty() => {
                let missing = p.len();
                let next = p.last().map(|e| e.name.clone()).unwrap_or_default();
                self.abort();
                return Err(ArchiveError::Usage(format!(
                    "{missing} blob(s) of the manifest not written, next {next}"
                )));
            }
            Some(_) => {}
        }
        let sink = match self.sink.take() {
            Some(s) => s,
            None => return Err(ArchiveError::Usage("writer already failed".into())),
        };
        let partial = self.partial.clone();
        let result = (|| -> io::Result<FileSums> {
            let buf = match sink {
                Sink::Plain(mut w) => {
                    tar::write_trailer(&mut w)?;
                    w
                }
                Sink::Zstd(mut w) => {
                    tar::write_trailer(&mut w)?;
                    w.finish()?
                }
            };
            let (file, sums) = buf.into_inner().map_err(|e| e.into_error())?.finish()?;
            let file = file.into_inner();
            file.sync_all()?;
            drop(file);
            if rename {
                commit_rename(&partial, &self.path)?;
            }
            Ok(sums)
        })();
        match result {
            Ok(sums) => {
                self.finished = true;
                Ok(sums)
            }
            Err(e) => {
                self.abort();
                Err(ArchiveError::io(format!(
                    "finishing {}",
                    self.path.display()
                ))(e))
            }
        }
    }
}

/// Renames a finished `PATH.partial` to `PATH` and fsyncs the directory.
pub fn commit_rename(partial: &Path, path: &Path) -> io::Result<()> {
    fs::rename(partial, path)?;
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl Drop for ArchiveWriter {
    fn drop(&mut self) {
        if !self.finished {
            self.abort();
        }
    }
}

/// `DigestError` is not `Clone`; rebuild it from the one inside an `io::Error`.
pub(crate) fn clone_digest_error(e: &DigestError) -> DigestError {
    match e {
        DigestError::Invalid { text, reason } => DigestError::Invalid {
            text: text.clone(),
            reason,
        },
        DigestError::Mismatch { expected, found } => DigestError::Mismatch {
            expected: expected.clone(),
            found: found.clone(),
        },
        DigestError::Size {
            digest,
            expected,
            found,
        } => DigestError::Size {
            digest: digest.clone(),
            expected: *expected,
            found: *found,
        },
    }
}
