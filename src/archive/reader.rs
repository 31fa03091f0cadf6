//! Reads an archive: the signed header first, then blobs streamed and verified one by one.
//!
//! Every entry is checked before its bytes are used (name, type, duplicates, listed in the
//! manifest, size), and every blob hashes as it is read, so nothing unverified ever reaches
//! a registry. [`BlobIndex`] adds random access for uncompressed archives (parallel import).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::manifest::{BlobEntry, Manifest, Role};
use super::tar::{self, RawEntry, TarReader};
use super::{
    ArchiveError, EntryName, INDEX_JSON, MANIFEST_ENTRY, MAX_INDEX, MAX_MANIFEST, MAX_OCI_LAYOUT,
    OCI_LAYOUT, OCI_LAYOUT_CONTENT, ZSTD_MAGIC,
};
use crate::digest::{Digest, VerifyingReader};
use crate::keys::{self, SIGNATURE_LEN};

/// How far the tar stream may run past the content the manifest declares before reading
/// stops: small surplus entries are still read and reported by name (unlisted, duplicate),
/// larger ones are refused at their header (a zstd bomb is never inflated).
const BOMB_SLACK: u64 = 64 << 20;

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
}

/// Opens a file and returns a reader of its tar stream, decompressing if it starts with
/// the zstd magic.
fn open_stream(path: &Path) -> Result<(Box<dyn Read + Send>, bool), ArchiveError> {
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
fn next_checked<R: Read>(
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
    tar: TarReader<Box<dyn Read + Send>>,
    header: ArchiveHeader,
    seen: HashSet<Digest>,
    last: Option<(u8, Digest)>,
    /// Offset in the tar stream past which no entry of this archive can extend: the end of
    /// `index.json` plus a header, data and padding for every blob the manifest declares.
    declared_end: u64,
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
        let declared_end = parsed
            .manifest
            .blobs
            .iter()
            .fold(index_end + BOMB_SLACK, |end, b| {
                end.saturating_add(tar::BLOCK)
                    .saturating_add(b.size)
                    .saturating_add(tar::padding(b.size))
            });
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
            },
            seen: HashSet::new(),
            last: None,
            declared_end,
        })
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
        let e = match self.tar.next_header()? {
            None => return Ok(None),
            Some(e) => e,
        };
        // No entry may reach past what the manifest declares: refused at the header, so a
        // zstd bomb (a huge entry of zeros) is never inflated, not even to be skipped.
        let end = e.data_offset.saturating_add(e.size);
        if end > self.declared_end {
            return Err(ArchiveError::BadHeader {
                offset: e.data_offset - tar::BLOCK,
                reason: format!(
                    "entry {:?} of {} bytes would end at byte {end}, more than 64 MiB past the \
                     content the airlift manifest declares (decompression bomb?)",
                    e.name.chars().take(300).collect::<String>(),
                    e.size,
                ),
            });
        }
        let name = EntryName::parse(&e.name)?;
        check_regular(&e)?;
        let digest = match name {
            EntryName::Blob(d) => d,
            EntryName::Signature(_) => {
                return Err(order(&name, "only blob entries after index.json"));
            }
            _ => return Err(ArchiveError::Duplicate { name: e.name }),
        };
        if !self.seen.insert(digest.clone()) {
            return Err(ArchiveError::Duplicate { name: e.name });
        }
        let entry = self
            .header
            .manifest
            .blob(&digest)
            .ok_or_else(|| ArchiveError::Unlisted {
                name: e.name.clone(),
            })?;
        let (size, role, media_type) = (entry.size, entry.role, entry.media_type.clone());
        if e.size != size {
            return Err(ArchiveError::SizeMismatch {
                digest,
                expected: size,
                found: e.size,
            });
        }
        let key = (role.group(), digest.clone());
        if let Some(last) = &self.last
            && *last > key
        {
            return Err(ArchiveError::Order {
                name: e.name,
                expected: "blobs grouped manifests, configs, layers, each sorted by digest".into(),
            });
        }
        self.last = Some(key);
        Ok(Some(BlobReader {
            inner: VerifyingReader::new(self.tar.data(), digest.clone(), Some(size)),
            digest,
            size,
            role,
            media_type,
        }))
    }

    /// Blobs listed in the manifest but not (yet) seen: after the last blob, the missing ones.
    pub fn missing(&self) -> Vec<&BlobEntry> {
        self.header
            .manifest
            .blobs
            .iter()
            .filter(|b| !self.seen.contains(&b.digest))
            .collect()
    }
}

fn order(found: &EntryName, expected: &str) -> ArchiveError {
    let name = match found {
        EntryName::OciLayout => OCI_LAYOUT.to_owned(),
        EntryName::Manifest => MANIFEST_ENTRY.to_owned(),
        EntryName::Signature(fp) => format!("{}{fp}.sig", super::SIGNATURES_DIR),
        EntryName::IndexJson => INDEX_JSON.to_owned(),
        EntryName::Blob(d) => EntryName::blob(d),
    };
    ArchiveError::Order {
        name,
        expected: expected.to_owned(),
    }
}

/// One blob's content, verified against its digest and size while it is read.
pub struct BlobReader<'a> {
    inner: VerifyingReader<tar::EntryData<'a, Box<dyn Read + Send>>>,
    /// The blob's digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// Its role in the manifest's blob table.
    pub role: Role,
    /// Its media type in the blob table.
    pub media_type: String,
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
}

impl BlobIndex {
    /// Scans the headers of the uncompressed archive at `path`.
    pub fn build(path: &Path) -> Result<BlobIndex, ArchiveError> {
        let ctx = || format!("reading {}", path.display());
        let mut file = File::open(path).map_err(ArchiveError::io(ctx()))?;
        let len = file.metadata().map_err(ArchiveError::io(ctx()))?.len();
        let mut magic = [0u8; 4];
        let n = file.read(&mut magic).map_err(ArchiveError::io(ctx()))?;
        if n == 4 && magic == ZSTD_MAGIC {
            return Err(ArchiveError::NotSeekable(path.display().to_string()));
        }
        let mut blobs = HashMap::new();
        let mut others: HashSet<String> = HashSet::new();
        let mut pos = 0u64;
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
            let name = EntryName::parse(&e.name)?;
            check_regular(&e)?;
            let end = e
                .data_offset
                .checked_add(e.size)
                .ok_or(ArchiveError::Truncated { offset: pos })?;
            if end > len {
                return Err(ArchiveError::Truncated { offset: len });
            }
            // The same name twice is refused whatever it names: a second `index.json` after
            // the blobs would otherwise be ignored here but win in tools that extract the tar.
            let fresh = match name {
                EntryName::Blob(d) => blobs.insert(d, (e.data_offset, e.size)).is_none(),
                _ => others.insert(e.name.clone()),
            };
            if !fresh {
                return Err(ArchiveError::Duplicate { name: e.name });
            }
            pos = end + tar::padding(e.size);
        }
        Ok(BlobIndex {
            path: path.to_path_buf(),
            blobs,
        })
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
}
