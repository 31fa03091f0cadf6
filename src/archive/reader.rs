//! Reads an archive: the signed header first, then blobs streamed and verified one by one.
//!
//! Every entry is checked before its bytes are used (name, type, duplicates, listed in the
//! manifest, size), and every blob hashes as it is read, so nothing unverified ever reaches
//! a registry. [`BlobIndex`] adds random access for uncompressed archives (parallel import).

use std::collections::HashMap;

use super::check::EntryRules;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::manifest::{Manifest, PlannedEntry, Role};
use super::tar::{self, RawEntry, TarReader};
use super::{
    ArchiveError, EntryName, INDEX_JSON, MANIFEST_ENTRY, MAX_INDEX, MAX_MANIFEST, MAX_OCI_LAYOUT,
    MAX_VOLUME_RECORD, OCI_LAYOUT, OCI_LAYOUT_CONTENT, VOLUME_ENTRY, ZSTD_MAGIC,
};
use crate::digest::{Digest, VerifyingReader};
use crate::keys::{self, SIGNATURE_LEN};

/// The leading entries of an archive: everything needed before the first blob.
#[derive(Debug, Clone)]
pub struct ArchiveHeader {
    /// The exact `airlift/manifest.json` bytes (what signatures cover).
    pub manifest_bytes: Vec<u8>,
    /// The parsed manifest.
    pub manifest: Manifest,
    /// Manifest fields this version does not know (tolerated; to be reported).
    pub unknown_fields: Vec<String>,
    /// `(fingerprint, signature)` pairs, in entry order (ascending fingerprint).
    pub signatures: Vec<(String, [u8; SIGNATURE_LEN])>,
    /// The exact `index.json` bytes.
    pub index_json: Vec<u8>,
    /// Whether the archive was zstd-compressed.
    pub compressed: bool,
    /// In a volume set, which volume this file is (from `airlift/volume.json`, checked
    /// against the signed manifest).
    pub volume: Option<u32>,
    /// Offset in the uncompressed tar stream where the blob entries start.
    pub data_start: u64,
}

/// The unsigned `airlift/volume.json` record: which volume of which archive this file is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeRecord {
    /// sha256 of the signed airlift manifest (the same in every volume).
    pub manifest: Digest,
    /// This volume's number, 1-based.
    pub volume: u32,
    /// How many volumes the set has.
    pub count: u32,
}

impl VolumeRecord {
    /// Checks the record's claims against the signed manifest bytes.
    pub fn check(&self, manifest: &Manifest, manifest_bytes: &[u8]) -> Result<(), ArchiveError> {
        let bad = |reason: String| ArchiveError::Invalid {
            name: VOLUME_ENTRY.into(),
            reason,
        };
        let Some(set) = &manifest.volume else {
            return Err(bad("present in an archive that is not a volume set".into()));
        };
        if self.manifest != Digest::sha256_of(manifest_bytes) {
            return Err(bad(format!(
                "names manifest {}, but this file's manifest is {}",
                self.manifest,
                Digest::sha256_of(manifest_bytes)
            )));
        }
        if self.count != set.count || self.volume < 1 || self.volume > set.count {
            return Err(bad(format!(
                "claims volume {} of {}, the signed manifest has {} volume(s)",
                self.volume, self.count, set.count
            )));
        }
        Ok(())
    }
}

/// Opens a file and returns a reader of its tar stream, decompressing if it starts with
/// the zstd magic.
fn open_stream(path: &Path) -> Result<(Box<dyn tar::Skip + Send>, bool), ArchiveError> {
    let file = File::open(path).map_err(ArchiveError::io(format!("opening {}", path.display())))?;
    let mut buf = BufReader::with_capacity(1 << 20, file);
    let head = buf
        .fill_buf()
        .map_err(ArchiveError::io(format!("reading {}", path.display())))?;
    if head.starts_with(&ZSTD_MAGIC) {
        let dec = zstd::stream::read::Decoder::with_buffer(buf)
            .map_err(ArchiveError::io("starting zstd decoder"))?;
        Ok((Box::new(dec), true))
    } else {
        Ok((Box::new(buf), false))
    }
}

fn check_regular(e: &RawEntry) -> Result<(), ArchiveError> {
    match e.irregular_kind() {
        None => Ok(()),
        Some(kind) => Err(ArchiveError::BadEntryType {
            name: e.name.chars().take(300).collect(),
            kind,
        }),
    }
}

/// Reads the next header, which must exist and be a regular file with an allowed name.
fn next_checked<R: tar::Skip>(
    tar: &mut TarReader<R>,
    expected: &str,
) -> Result<(RawEntry, EntryName), ArchiveError> {
    let e = tar.next_header()?.ok_or_else(|| ArchiveError::Order {
        name: "(end of archive)".into(),
        expected: expected.to_owned(),
    })?;
    let name = EntryName::parse(&e.name)?;
    check_regular(&e)?;
    Ok((e, name))
}

/// One pass over an archive: header on open, then [`ArchiveReader::next_blob`].
pub struct ArchiveReader {
    path: PathBuf,
    tar: TarReader<Box<dyn tar::Skip + Send>>,
    header: ArchiveHeader,
    rules: EntryRules,
    /// An entry admitted by [`ArchiveReader::read_manifests`] whose data is next in the stream.
    pending: Option<PlannedEntry>,
}

/// A manifest or index blob as read from an archive (verified against its digest).
#[derive(Debug, Clone)]
pub struct ManifestBlob {
    /// The tar entry name.
    pub entry: String,
    /// Its digest.
    pub digest: Digest,
    /// The media type the blob table gives it.
    pub media_type: String,
    /// The exact bytes.
    pub bytes: bytes::Bytes,
}

impl ArchiveReader {
    /// Opens an archive and reads its leading entries (layout, manifest, signatures, index).
    ///
    /// Signatures are *not* checked here: call [`ArchiveHeader::check_signatures`] (or
    /// [`super::verify`]) before trusting anything that follows.
    pub fn open(path: &Path) -> Result<ArchiveReader, ArchiveError> {
        let (stream, compressed) = open_stream(path)?;
        let mut tar = TarReader::new(stream);

        let (_, name) = next_checked(&mut tar, OCI_LAYOUT)?;
        if name != EntryName::OciLayout {
            return Err(order(&name, OCI_LAYOUT));
        }
        let layout = tar.read_small(OCI_LAYOUT, MAX_OCI_LAYOUT)?;
        if layout != OCI_LAYOUT_CONTENT {
            return Err(ArchiveError::Invalid {
                name: OCI_LAYOUT.into(),
                reason: format!(
                    "content must be {}",
                    String::from_utf8_lossy(OCI_LAYOUT_CONTENT)
                ),
            });
        }

        let (_, name) = next_checked(&mut tar, MANIFEST_ENTRY)?;
        if name != EntryName::Manifest {
            return Err(order(&name, MANIFEST_ENTRY));
        }
        let manifest_bytes = tar.read_small(MANIFEST_ENTRY, MAX_MANIFEST)?;
        let parsed = Manifest::parse(&manifest_bytes)?;

        let mut signatures: Vec<(String, [u8; SIGNATURE_LEN])> = Vec::new();
        let (index_json, index_end) = loop {
            let (e, name) = next_checked(&mut tar, INDEX_JSON)?;
            match name {
                EntryName::Signature(fp) => {
                    if e.size != SIGNATURE_LEN as u64 {
                        return Err(keys::KeyError::SignatureLength {
                            path: PathBuf::from(&e.name),
                            found: usize::try_from(e.size).unwrap_or(usize::MAX),
                        }
                        .into());
                    }
                    if let Some((prev, _)) = signatures.last()
                        && *prev >= fp
                    {
                        return Err(if *prev == fp {
                            ArchiveError::Duplicate { name: e.name }
                        } else {
                            ArchiveError::Order {
                                name: e.name,
                                expected: "signatures sorted by fingerprint".into(),
                            }
                        });
                    }
                    let bytes = tar.read_small(&e.name, SIGNATURE_LEN as u64)?;
                    let sig = keys::signature_from_slice(Path::new(&e.name), &bytes)?;
                    signatures.push((fp, sig));
                }
                EntryName::IndexJson => {
                    let bytes = tar.read_small(INDEX_JSON, MAX_INDEX)?;
                    parsed
                        .manifest
                        .index
                        .check(&bytes)
                        .map_err(|e| ArchiveError::Invalid {
                            name: INDEX_JSON.into(),
                            reason: format!("does not match the airlift manifest's `index`: {e}"),
                        })?;
                    break (bytes, e.data_offset + e.size + tar::padding(e.size));
                }
                other => return Err(order(&other, INDEX_JSON)),
            }
        };
        let mut data_start = index_end;
        let volume = if parsed.manifest.volume.is_some() {
            let (e, name) = next_checked(&mut tar, VOLUME_ENTRY)?;
            if name != EntryName::Volume {
                return Err(order(&name, VOLUME_ENTRY));
            }
            let bytes = tar.read_small(VOLUME_ENTRY, MAX_VOLUME_RECORD)?;
            let record: VolumeRecord =
                serde_json::from_slice(&bytes).map_err(|source| ArchiveError::Json {
                    name: VOLUME_ENTRY.into(),
                    source,
                })?;
            record.check(&parsed.manifest, &manifest_bytes)?;
            data_start = e.data_offset + e.size + tar::padding(e.size);
            Some(record.volume)
        } else {
            None
        };
        let rules = EntryRules::new(&parsed.manifest, volume, data_start);
        Ok(ArchiveReader {
            path: path.to_path_buf(),
            tar,
            header: ArchiveHeader {
                manifest_bytes,
                manifest: parsed.manifest,
                unknown_fields: parsed.unknown_fields,
                signatures,
                index_json,
                compressed,
                volume,
                data_start,
            },
            rules,
            pending: None,
        })
    }

    /// Reads the manifest and index blobs that lead the blob entries (group (a) of the entry
    /// order), each verified and bounded; the first other blob is left for [`Self::next_blob`].
    pub fn read_manifests(&mut self) -> Result<Vec<ManifestBlob>, ArchiveError> {
        let mut out = Vec::new();
        loop {
            if self.pending.is_some() {
                return Ok(out);
            }
            let Some(e) = self.tar.next_header()? else {
                return Ok(out);
            };
            let entry = self.rules.admit(&e)?.clone();
            if !matches!(entry.role, Role::Manifest | Role::Index) {
                self.pending = Some(entry);
                return Ok(out);
            }
            if entry.size > MAX_INDEX {
                return Err(ArchiveError::TooLarge {
                    name: entry.name,
                    size: entry.size,
                    limit: MAX_INDEX,
                });
            }
            let mut bytes = Vec::with_capacity(usize::try_from(entry.size).unwrap_or(0));
            VerifyingReader::new(self.tar.data(), entry.digest.clone(), Some(entry.size))
                .read_to_end(&mut bytes)
                .map_err(|source| match source.into_inner() {
                    Some(inner) => match inner.downcast::<crate::digest::DigestError>() {
                        Ok(d) => ArchiveError::Digest(*d),
                        Err(other) => ArchiveError::Io {
                            context: format!("reading {}", entry.name),
                            source: io::Error::other(other),
                        },
                    },
                    None => ArchiveError::Io {
                        context: format!("reading {}", entry.name),
                        source: io::Error::other("read failed"),
                    },
                })?;
            let media_type = self
                .header
                .manifest
                .blob(&entry.blob)
                .map(|b| b.media_type.clone())
                .unwrap_or_default();
            out.push(ManifestBlob {
                entry: entry.name,
                digest: entry.blob,
                media_type,
                bytes: bytes.into(),
            });
        }
    }

    /// The leading entries.
    pub fn header(&self) -> &ArchiveHeader {
        &self.header
    }

    /// The archive's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next blob entry, checked against the manifest; `None` at the end of the archive.
    ///
    /// The returned reader verifies size and sha256 as it is read: read it to the end (its
    /// final `read` fails with `InvalidData` on a mismatch). Errors for which
    /// [`ArchiveError::is_fatal`] is false concern only that entry; reading may continue.
    pub fn next_blob(&mut self) -> Result<Option<BlobReader<'_>>, ArchiveError> {
        let (entry, offset) = match self.pending.take() {
            Some(entry) => (entry, None),
            None => match self.tar.next_header()? {
                None => return Ok(None),
                Some(e) => {
                    let offset = (!self.header.compressed).then_some(e.data_offset);
                    (self.rules.admit(&e)?.clone(), offset)
                }
            },
        };
        let media_type = self
            .header
            .manifest
            .blob(&entry.blob)
            .map(|b| b.media_type.clone())
            .unwrap_or_default();
        Ok(Some(BlobReader {
            inner: VerifyingReader::new(self.tar.data(), entry.digest.clone(), Some(entry.size)),
            digest: entry.blob,
            size: entry.size,
            role: entry.role,
            media_type,
            name: entry.name,
            part: entry.part,
            offset,
        }))
    }

    /// Entries this file must hold but not (yet) seen: after the last blob, the missing ones.
    pub fn missing(&self) -> Vec<&PlannedEntry> {
        self.rules.missing()
    }

    /// Fails unless every entry this file must hold was read.
    pub fn complete(&self) -> Result<(), ArchiveError> {
        self.rules.complete(&self.path.display().to_string())
    }
}

fn order(found: &EntryName, expected: &str) -> ArchiveError {
    ArchiveError::Order {
        name: found.to_entry_string(),
        expected: expected.to_owned(),
    }
}

/// One blob's content, verified against its digest and size while it is read.
pub struct BlobReader<'a> {
    inner: VerifyingReader<tar::EntryData<'a, Box<dyn tar::Skip + Send>>>,
    /// The blob's digest (of the whole blob, also for a part).
    pub digest: Digest,
    /// The entry's size (the part's size for a part).
    pub size: u64,
    /// Its role in the manifest's blob table.
    pub role: Role,
    /// Its media type in the blob table.
    pub media_type: String,
    /// The tar entry name.
    pub name: String,
    /// `(number, count)` when the entry is a part of a split blob.
    pub part: Option<(u32, u32)>,
    /// Where the data starts in the file, when the archive is not compressed (so the same
    /// bytes can be read again by position, on another thread).
    pub offset: Option<u64>,
}

impl<'a> BlobReader<'a> {
    /// The entry's raw data and the verifier it must pass, so the hashing can happen on
    /// another thread while the next entry is read.
    pub fn into_parts(self) -> (impl Read + 'a, Option<crate::digest::Verifier>) {
        self.inner.into_parts()
    }

    /// Moves past the data unread (a seek in an uncompressed archive) and gives the verifier
    /// it must pass, for a check that reads the same bytes by [`offset`](Self::offset).
    pub fn skip_data(self) -> (io::Result<()>, Option<crate::digest::Verifier>) {
        let (mut data, verifier) = self.inner.into_parts();
        (data.skip_rest(), verifier)
    }
}

impl Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl ArchiveHeader {
    /// Fingerprints of the `trusted` keys whose signature over the manifest is present and
    /// valid; signatures by keys not in `trusted` are ignored.
    pub fn valid_signers(&self, trusted: &[keys::VerifyingKey]) -> Vec<String> {
        let mut out = Vec::new();
        for key in trusted {
            let fp = keys::fingerprint(key);
            if out.contains(&fp) {
                continue;
            }
            if let Some((_, sig)) = self.signatures.iter().find(|(f, _)| *f == fp)
                && keys::verify(key, &self.manifest_bytes, sig)
            {
                out.push(fp);
            }
        }
        out
    }

    /// Fails unless at least `required` distinct trusted keys signed the manifest.
    pub fn check_signatures(
        &self,
        trusted: &[keys::VerifyingKey],
        required: usize,
    ) -> Result<Vec<String>, ArchiveError> {
        let valid = self.valid_signers(trusted);
        if valid.len() < required {
            return Err(ArchiveError::Invalid {
                name: MANIFEST_ENTRY.into(),
                reason: format!(
                    "{} valid signature(s) by trusted keys, {required} required",
                    valid.len()
                ),
            });
        }
        Ok(valid)
    }
}

/// Where each blob's bytes sit in an uncompressed archive, for concurrent random reads.
///
/// Built from tar headers only (one pass, seeking over data); it does not check signatures
/// or contents, so use it after [`super::verify`] or [`ArchiveReader::open`] +
/// [`ArchiveHeader::check_signatures`]. Every read through [`BlobIndex::open_blob`] still
/// verifies the blob's digest.
#[derive(Debug, Clone)]
pub struct BlobIndex {
    path: PathBuf,
    blobs: HashMap<Digest, (u64, u64)>,
    parts: HashMap<(Digest, u32), (u64, u64)>,
}

impl BlobIndex {
    /// Opens the uncompressed archive at `path` (leading entries as [`ArchiveReader::open`])
    /// and scans its blob headers under the same [`EntryRules`]; every planned entry must be
    /// there.
    pub fn build(path: &Path) -> Result<BlobIndex, ArchiveError> {
        let header = ArchiveReader::open(path)?.header().clone();
        Self::build_with(path, &header)
    }

    /// As [`BlobIndex::build`], for a header already read (and its signatures checked).
    pub fn build_with(path: &Path, header: &ArchiveHeader) -> Result<BlobIndex, ArchiveError> {
        if header.compressed {
            return Err(ArchiveError::NotSeekable(path.display().to_string()));
        }
        let ctx = || format!("reading {}", path.display());
        let mut file = File::open(path).map_err(ArchiveError::io(ctx()))?;
        let len = file.metadata().map_err(ArchiveError::io(ctx()))?.len();
        let mut rules = EntryRules::new(&header.manifest, header.volume, header.data_start);
        let mut blobs = HashMap::new();
        let mut parts = HashMap::new();
        let mut pos = header.data_start;
        loop {
            if pos + tar::BLOCK > len {
                return Err(ArchiveError::Truncated { offset: pos });
            }
            file.seek(SeekFrom::Start(pos))
                .map_err(ArchiveError::io(ctx()))?;
            let mut h = [0u8; 512];
            file.read_exact(&mut h).map_err(ArchiveError::io(ctx()))?;
            let e = match tar::parse_header(&h, pos)? {
                None => break,
                Some(e) => e,
            };
            let end = e
                .data_offset
                .checked_add(e.size)
                .ok_or(ArchiveError::Truncated { offset: pos })?;
            if end > len {
                return Err(ArchiveError::Truncated { offset: len });
            }
            let entry = rules.admit(&e)?;
            match entry.part {
                None => blobs.insert(entry.blob.clone(), (e.data_offset, e.size)),
                Some((n, _)) => parts.insert((entry.blob.clone(), n), (e.data_offset, e.size)),
            };
            pos = end + tar::padding(e.size);
        }
        rules.complete(&path.display().to_string())?;
        Ok(BlobIndex {
            path: path.to_path_buf(),
            blobs,
            parts,
        })
    }

    /// `(data offset, size)` of part `n` of a split blob, if the archive holds it.
    pub fn get_part(&self, digest: &Digest, n: u32) -> Option<(u64, u64)> {
        self.parts.get(&(digest.clone(), n)).copied()
    }

    /// Number of part entries found.
    pub fn part_count(&self) -> usize {
        self.parts.len()
    }

    /// The archive file this index reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A fresh reader of `size` bytes at `offset`, verified against `digest` (a part).
    pub fn open_range(
        &self,
        offset: u64,
        size: u64,
        digest: &Digest,
    ) -> Result<impl Read + Send + use<>, ArchiveError> {
        let ctx = || format!("reading {}", self.path.display());
        let mut file = File::open(&self.path).map_err(ArchiveError::io(ctx()))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(ArchiveError::io(ctx()))?;
        Ok(VerifyingReader::new(
            BufReader::with_capacity(256 * 1024, file).take(size),
            digest.clone(),
            Some(size),
        ))
    }

    /// `(data offset, size)` of a blob, if the archive holds it.
    pub fn get(&self, digest: &Digest) -> Option<(u64, u64)> {
        self.blobs.get(digest).copied()
    }

    /// Number of blobs found.
    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    /// Whether no blob was found.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// A fresh, independent reader of one blob (its own file handle), verifying as it reads.
    pub fn open_blob(&self, digest: &Digest) -> Result<impl Read + Send + use<>, ArchiveError> {
        let (offset, size) = self.get(digest).ok_or_else(|| ArchiveError::Unlisted {
            name: EntryName::blob(digest),
        })?;
        self.open_range(offset, size, digest)
    }
}
