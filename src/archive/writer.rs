//! Writes an archive in one streaming pass, atomically.
//!
//! Everything goes to `PATH.partial`; only a complete, fsynced archive is renamed to `PATH`,
//! so a USB stick pulled mid-export never holds something that looks like an archive.
//! Blobs are copied through a verifying reader, never buffered.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::manifest::Manifest;
use super::tar;
use super::{ArchiveError, EntryName, INDEX_JSON, MANIFEST_ENTRY, OCI_LAYOUT, OCI_LAYOUT_CONTENT};
use crate::digest::{Digest, DigestError, VerifyingReader};
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

enum Sink {
    Plain(BufWriter<File>),
    Zstd(zstd::stream::write::Encoder<'static, BufWriter<File>>),
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
    /// The blobs still to write, in order (reversed: next is last).
    pending: Option<Vec<(Digest, u64)>>,
    finished: bool,
}

fn partial_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

impl ArchiveWriter {
    /// Starts writing; creates (or truncates) `PATH.partial`.
    pub fn create(path: &Path, options: WriteOptions) -> Result<ArchiveWriter, ArchiveError> {
        let partial = partial_path(path);
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&partial)
            .map_err(ArchiveError::io(format!("creating {}", partial.display())))?;
        let buf = BufWriter::with_capacity(1 << 20, file);
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

    fn small_entry(
        out: &mut Sink,
        name: &str,
        bytes: &[u8],
        mtime: u64,
    ) -> Result<(), ArchiveError> {
        tar::write_entry(out, name, bytes.len() as u64, mtime, &mut &bytes[..])
            .map_err(ArchiveError::io(format!("writing {name}")))
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
        let parsed = match Manifest::parse(manifest_bytes) {
            Ok(p) => p,
            Err(e) => {
                self.abort();
                return Err(e);
            }
        };
        if let Err(e) = parsed.manifest.index.check(index_json) {
            self.abort();
            return Err(ArchiveError::Usage(format!(
                "index.json does not match the manifest's `index`: {e}"
            )));
        }
        let mut sigs: Vec<&(String, [u8; SIGNATURE_LEN])> = signatures.iter().collect();
        sigs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut names = Vec::new();
        for (i, (fp, _)) in sigs.iter().enumerate() {
            let name = format!("{}{fp}.sig", super::SIGNATURES_DIR);
            let ok = matches!(EntryName::parse(&name), Ok(EntryName::Signature(_)));
            if !ok || (i > 0 && sigs[i - 1].0 == *fp) {
                self.abort();
                return Err(ArchiveError::Usage(format!(
                    "bad or repeated signature fingerprint {fp:?}"
                )));
            }
            names.push(name);
        }
        self.step(|out, mtime| {
            Self::small_entry(out, OCI_LAYOUT, OCI_LAYOUT_CONTENT, mtime)?;
            Self::small_entry(out, MANIFEST_ENTRY, manifest_bytes, mtime)?;
            for (name, (_, sig)) in names.iter().zip(&sigs) {
                Self::small_entry(out, name, sig, mtime)?;
            }
            Self::small_entry(out, INDEX_JSON, index_json, mtime)
        })?;
        let mut order: Vec<(Digest, u64)> = parsed
            .manifest
            .blob_order()
            .into_iter()
            .map(|b| (b.digest.clone(), b.size))
            .collect();
        order.reverse();
        self.pending = Some(order);
        Ok(())
    }

    /// Streams one blob into the archive, checking size and digest as the bytes pass.
    ///
    /// Blobs must come in [`Manifest::blob_order`]. A mismatch aborts the whole archive.
    pub fn write_blob(
        &mut self,
        digest: &Digest,
        size: u64,
        reader: impl Read,
    ) -> Result<(), ArchiveError> {
        let next = match self.pending.as_ref() {
            None => return Err(ArchiveError::Usage("write_header must come first".into())),
            Some(p) => p.last().cloned(),
        };
        match next {
            Some((d, s)) if d == *digest && s == size => {}
            Some((d, s)) => {
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
        }
        let name = EntryName::blob(digest);
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
    pub fn finish(mut self) -> Result<PathBuf, ArchiveError> {
        match self.pending.as_ref() {
            None => {
                self.abort();
                return Err(ArchiveError::Usage("finish before write_header".into()));
            }
            Some(p) if !p.is_empty() => {
                let missing = p.len();
                let next = p.last().map(|(d, _)| d.to_string()).unwrap_or_default();
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
        let result = (|| -> io::Result<()> {
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
            let file = buf.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            drop(file);
            fs::rename(&partial, &self.path)?;
            if let Some(dir) = self.path.parent() {
                let dir = if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                };
                File::open(dir)?.sync_all()?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                self.finished = true;
                Ok(self.path.clone())
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
