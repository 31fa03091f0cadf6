//! Other tools' archives as sources: the way in for users migrating to airlift.
//!
//! Each format is one graph builder over the one [`ForeignStore`], which hands blobs to the
//! transfer engine like any other [`Source`], so `inspect`, `verify`, `import` and
//! `export --from` need no copy loop of their own:
//!
//! - [`oci_layout`]: OCI image layouts (skopeo `oci:`/`oci-archive:`, umoci, oras, crane,
//!   BuildKit), as a directory or a plain tar (directory entries, GNU or pax headers);
//! - [`docker_save`]: `docker save` tars (the `manifest.json` list of Config/RepoTags/Layers);
//! - [`imgpkg_tar`]: imgpkg `copy --to-tar` files (`manifest.json` + `sha256-<hex>.tar.gz`).
//!
//! The format is told from the content ([`detect`]), never from the file name. Manifests are
//! checked against their digests when the graph is built; every config and layer is verified
//! as it streams. Nothing is extracted: data is read by offset from the tar, bounded.

pub mod docker_save;
pub mod imgpkg_tar;
pub mod oci_layout;
pub mod tarfile;

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::{ByteStream, Source, StoreError};
use crate::author::bundle::config_is_bundle;
use crate::digest::{Digest, VerifyingReader};
use crate::graph::{BundleLockInfo, Graph, Kind, LockedImage, ManifestNode, Root};
use crate::oci::{Descriptor, RawManifest};
use crate::reference::Reference;
use tarfile::{Region, TarFile};

/// Largest JSON document (index.json, manifest.json, a manifest, a config) read into memory.
pub const MAX_JSON: u64 = 16 << 20;
/// Largest bundle layer read into memory to find its lock.
const MAX_BUNDLE_LAYER: u64 = 64 << 20;
/// Largest `.imgpkg/images.yml`.
const MAX_LOCK: u64 = 16 << 20;
/// Manifests a foreign archive may hold (bounded walk).
const MAX_MANIFESTS: usize = 100_000;
/// Index nesting and bundle nesting beyond which the walk stops (cycles, hostile files).
const MAX_DEPTH: usize = 16;
/// Bytes per chunk streamed.
const CHUNK: usize = 256 * 1024;
/// Chunks buffered per blob.
const CHUNKS_IN_FLIGHT: usize = 16;

/// Why another tool's archive could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ForeignError {
    /// A file operation failed.
    #[error("{}: {source}", file.display())]
    Io {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The content is not one of the formats airlift reads.
    #[error("{}: {what}", file.display())]
    NotRecognised {
        /// The file.
        file: PathBuf,
        /// What it is, as far as can be told, and what to do.
        what: String,
    },
    /// A rule of safe reading is broken (names, links, devices, duplicates, lying sizes).
    #[error("{}: refusing the archive: {reason}", file.display())]
    Hostile {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Something the archive names is not in it.
    #[error("{}: {what} is not in the archive", file.display())]
    Missing {
        /// The file.
        file: PathBuf,
        /// What is missing.
        what: String,
    },
    /// An entry over its size limit.
    #[error("{}: {what} is {size} bytes, over the {limit}-byte limit", file.display())]
    TooLarge {
        /// The file.
        file: PathBuf,
        /// The entry.
        what: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Content that parses badly or does not match its digest.
    #[error("{}: {what}: {reason}", file.display())]
    Invalid {
        /// The file.
        file: PathBuf,
        /// The entry or object.
        what: String,
        /// The rule broken.
        reason: String,
    },
}

impl ForeignError {
    fn io(file: &Path) -> impl FnOnce(std::io::Error) -> ForeignError + '_ {
        move |source| ForeignError::Io {
            file: file.to_path_buf(),
            source,
        }
    }
}

/// The formats read as sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// An OCI image layout directory.
    OciLayoutDir,
    /// An OCI image layout in a tar (skopeo `oci-archive:`, BuildKit `type=oci`).
    OciLayoutTar,
    /// A `docker save` tar.
    DockerSave,
    /// An imgpkg `copy --to-tar` file.
    ImgpkgTar,
}

impl Format {
    /// How messages name the format.
    pub fn describe(self) -> &'static str {
        match self {
            Format::OciLayoutDir => "an OCI image layout directory",
            Format::OciLayoutTar => "an OCI image layout tar",
            Format::DockerSave => "a docker save archive",
            Format::ImgpkgTar => "an imgpkg copy --to-tar archive",
        }
    }
}

/// What a path holds, told from its content.
#[derive(Debug)]
pub enum Detected {
    /// An airlift archive (or something only airlift's own reader can judge).
    Airlift,
    /// Another tool's archive, already indexed.
    Foreign(Format, Files),
}

/// Where a foreign archive's files are: a directory or an indexed tar.
#[derive(Debug)]
pub enum Files {
    /// A layout directory.
    Dir(PathBuf),
    /// A plain tar.
    Tar(TarFile),
}

/// Where one blob's bytes are.
#[derive(Debug, Clone)]
enum Loc {
    /// A region of the tar.
    Region(Region),
    /// A regular file of a layout directory.
    Path(PathBuf, u64),
    /// Held in memory (a config embedded in imgpkg's manifest.json).
    Memory(Bytes),
}

impl Loc {
    fn size(&self) -> u64 {
        match self {
            Loc::Region(r) => r.size,
            Loc::Path(_, s) => *s,
            Loc::Memory(b) => b.len() as u64,
        }
    }
}

impl Files {
    /// The file or directory read.
    pub fn path(&self) -> &Path {
        match self {
            Files::Dir(d) => d,
            Files::Tar(t) => t.path(),
        }
    }

    fn loc(&self, name: &str) -> Result<Option<Loc>, ForeignError> {
        match self {
            Files::Tar(t) => Ok(t.get(name).map(Loc::Region)),
            Files::Dir(d) => {
                let p = d.join(name);
                match regular_file(&p) {
                    Ok(size) => Ok(Some(Loc::Path(p, size))),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(ForeignError::Hostile {
                        file: d.clone(),
                        reason: format!("{name}: {e}"),
                    }),
                }
            }
        }
    }

    fn read_small(&self, name: &str, limit: u64) -> Result<Vec<u8>, ForeignError> {
        match self.loc(name)? {
            Some(loc) => read_loc(self.path(), &loc, limit, name),
            None => Err(ForeignError::Missing {
                file: self.path().to_path_buf(),
                what: name.to_owned(),
            }),
        }
    }
}

/// The size of a regular file; links, devices and FIFOs are refused (a layout directory
/// whose blob is a symlink could leak any file the user can read into an archive).
fn regular_file(p: &Path) -> std::io::Result<u64> {
    let m = std::fs::symlink_metadata(p)?;
    if !m.file_type().is_file() {
        return Err(std::io::Error::other(
            "not a regular file (links, devices and FIFOs are refused)",
        ));
    }
    Ok(m.len())
}

fn read_loc(file: &Path, loc: &Loc, limit: u64, what: &str) -> Result<Vec<u8>, ForeignError> {
    match loc {
        Loc::Memory(b) => Ok(b.to_vec()),
        Loc::Region(r) => tarfile::read_region(file, *r, limit, what),
        Loc::Path(p, size) => tarfile::read_region(
            p,
            Region {
                offset: 0,
                size: *size,
            },
            limit,
            what,
        ),
    }
}

/// Tells what `path` is from its content; anything not positively another tool's archive is
/// left to airlift's own reader (its messages are the ones for airlift archives).
pub fn detect(path: &Path) -> Result<Detected, ForeignError> {
    let meta = std::fs::metadata(path).map_err(ForeignError::io(path))?;
    if meta.is_dir() {
        if regular_file(&path.join(crate::archive::OCI_LAYOUT)).is_ok() {
            return Ok(Detected::Foreign(
                Format::OciLayoutDir,
                Files::Dir(path.to_path_buf()),
            ));
        }
        return Err(ForeignError::NotRecognised {
            file: path.to_path_buf(),
            what: "a directory without an oci-layout file: not an OCI image layout".into(),
        });
    }
    let mut magic = [0u8; 262];
    let mut f = File::open(path).map_err(ForeignError::io(path))?;
    let n = read_up_to(&mut f, &mut magic).map_err(ForeignError::io(path))?;
    let magic = &magic[..n];
    if magic.starts_with(&crate::archive::ZSTD_MAGIC) {
        return Ok(Detected::Airlift);
    }
    if magic.starts_with(&[0x1f, 0x8b]) {
        return Err(ForeignError::NotRecognised {
            file: path.to_path_buf(),
            what: "a gzip-compressed file; airlift reads other tools' archives as plain tar: \
                   `gunzip -k` it first"
                .into(),
        });
    }
    if n < 262 || !magic[257..262].starts_with(b"ustar") {
        return Err(ForeignError::NotRecognised {
            file: path.to_path_buf(),
            what: "not a tar file (nor zstd): neither an airlift archive nor another tool's \
                   archive (OCI layout, docker save, imgpkg copy --to-tar)"
                .into(),
        });
    }
    let files = match TarFile::index(path) {
        Ok(t) => t,
        // A tar the safe indexer refuses may still be an airlift archive with its own rules.
        Err(ForeignError::Hostile { .. }) | Err(ForeignError::NotRecognised { .. })
            if looks_like_airlift(path) =>
        {
            return Ok(Detected::Airlift);
        }
        Err(e) => return Err(e),
    };
    if files.has(crate::archive::MANIFEST_ENTRY) {
        return Ok(Detected::Airlift);
    }
    if files.has(crate::archive::OCI_LAYOUT) && files.has(crate::archive::INDEX_JSON) {
        return Ok(Detected::Foreign(Format::OciLayoutTar, Files::Tar(files)));
    }
    if files.has("manifest.json") {
        let bytes = files.read_small("manifest.json", MAX_JSON)?;
        let format = if imgpkg_tar::looks_like(&bytes) {
            Format::ImgpkgTar
        } else {
            Format::DockerSave
        };
        return Ok(Detected::Foreign(format, Files::Tar(files)));
    }
    Ok(Detected::Airlift)
}

/// Whether the tar opens the way an airlift archive must: `oci-layout`, then
/// `airlift/manifest.json` (its own reader then judges the rest, with its own messages).
fn looks_like_airlift(path: &Path) -> bool {
    let name_is = |h: &[u8], name: &str| h.starts_with(name.as_bytes()) && h[name.len()] == 0;
    let mut h = [0u8; 512];
    let Ok(mut f) = File::open(path) else {
        return false;
    };
    if f.read_exact(&mut h).is_err() || !name_is(&h, crate::archive::OCI_LAYOUT) {
        return false;
    }
    let size = std::str::from_utf8(&h[124..135])
        .ok()
        .and_then(|t| u64::from_str_radix(t.trim_matches(|c| c == '\0' || c == ' '), 8).ok());
    let Some(size) = size else {
        return false;
    };
    f.seek(SeekFrom::Start(512 + size.div_ceil(512) * 512))
        .is_ok()
        && f.read_exact(&mut h).is_ok()
        && name_is(&h, crate::archive::MANIFEST_ENTRY)
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// What a format's parser hands the shared graph builder.
struct Parts {
    /// The roots, in file order: how each is known, and its digest.
    roots: Vec<(Reference, Digest)>,
    /// Manifests found so far (verified against their digests by the builder).
    manifests: HashMap<Digest, Bytes>,
    /// Config and layer locations found so far.
    blobs: HashMap<Digest, Loc>,
    /// Bytes identifying the archive (its index.json or manifest.json).
    identity: Vec<u8>,
}

/// How a format finds a manifest or blob the parser did not list up front (OCI layouts
/// address everything by digest).
trait Lookup {
    fn manifest(&self, d: &Digest) -> Result<Option<Bytes>, ForeignError>;
    fn blob(&self, d: &Digest) -> Result<Option<Loc>, ForeignError>;
}

/// Nothing beyond what the parser listed.
struct Listed;

impl Lookup for Listed {
    fn manifest(&self, _: &Digest) -> Result<Option<Bytes>, ForeignError> {
        Ok(None)
    }
    fn blob(&self, _: &Digest) -> Result<Option<Loc>, ForeignError> {
        Ok(None)
    }
}

/// Another tool's archive opened as a source: graph built, manifests checked.
pub struct ForeignStore {
    /// The file or directory.
    pub path: PathBuf,
    /// Its format.
    pub format: Format,
    /// The content graph it carries.
    pub graph: Graph,
    /// sha256 of the archive's index.json or manifest.json: what identifies it.
    pub identity: Digest,
    locs: HashMap<Digest, Loc>,
}

/// Opens `path` if it is another tool's archive; `None` for an airlift archive.
pub fn open(path: &Path) -> Result<Option<ForeignStore>, ForeignError> {
    match detect(path)? {
        Detected::Airlift => Ok(None),
        Detected::Foreign(format, files) => open_detected(format, files).map(Some),
    }
}

/// Opens an archive whose format is known.
pub fn open_detected(format: Format, files: Files) -> Result<ForeignStore, ForeignError> {
    let path = files.path().to_path_buf();
    let (parts, lookup): (Parts, Box<dyn Lookup>) = match format {
        Format::OciLayoutDir | Format::OciLayoutTar => {
            let parts = oci_layout::parse(&files)?;
            (parts, Box::new(oci_layout::ByDigest(files)))
        }
        Format::DockerSave => (docker_save::parse(&files)?, Box::new(Listed)),
        Format::ImgpkgTar => (imgpkg_tar::parse(&files)?, Box::new(Listed)),
    };
    build(path, format, parts, lookup.as_ref())
}

/// The shared graph builder: roots, their index trees, bundles and what their locks name.
fn build(
    path: PathBuf,
    format: Format,
    parts: Parts,
    lookup: &dyn Lookup,
) -> Result<ForeignStore, ForeignError> {
    let mut b = Builder {
        path: &path,
        parts,
        lookup,
        graph: Graph::default(),
        locs: HashMap::new(),
    };
    let roots = std::mem::take(&mut b.parts.roots);
    if roots.is_empty() {
        return Err(ForeignError::Invalid {
            file: path.clone(),
            what: format.describe().into(),
            reason: "names no image".into(),
        });
    }
    let mut bundles: Vec<(Digest, usize)> = Vec::new();
    for (reference, digest) in roots {
        b.add_tree(&digest, &reference)?;
        let kind = b.kind_of(&digest)?;
        if kind == Kind::Bundle {
            bundles.push((digest.clone(), 0));
        }
        let media_type = b.media_type(&digest);
        b.graph.roots.push(Root {
            reference,
            digest,
            media_type,
            kind,
        });
    }
    let mut done = BTreeSet::new();
    while let Some((bundle, depth)) = bundles.pop() {
        if !done.insert(bundle.clone()) {
            continue;
        }
        if depth > MAX_DEPTH {
            return Err(b.invalid(&bundle, format!("bundles nested deeper than {MAX_DEPTH}")));
        }
        let lock = b.read_lock(&bundle)?;
        for (image, _) in &lock.entries {
            let at = Reference::parse(image)
                .map_err(|e| b.invalid(&bundle, format!(".imgpkg/images.yml: {e}")))?;
            let d = at.digest().cloned().ok_or_else(|| {
                b.invalid(&bundle, format!("lock names {image} without a digest"))
            })?;
            b.add_tree(&d, &at)?;
            let kind = b.kind_of(&d)?;
            if kind == Kind::Bundle {
                bundles.push((d.clone(), depth + 1));
            }
            let media_type = b.media_type(&d);
            b.graph.locked.push(LockedImage {
                image: image.clone(),
                digest: d,
                media_type,
                kind,
                locked_by: bundle.clone(),
            });
        }
        b.graph.bundle_locks.push(lock);
    }
    let identity = Digest::sha256_of(&b.parts.identity);
    Ok(ForeignStore {
        path: path.clone(),
        format,
        graph: b.graph,
        identity,
        locs: b.locs,
    })
}

struct Builder<'a> {
    path: &'a Path,
    parts: Parts,
    lookup: &'a dyn Lookup,
    graph: Graph,
    locs: HashMap<Digest, Loc>,
}

impl Builder<'_> {
    fn invalid(&self, d: &Digest, reason: String) -> ForeignError {
        ForeignError::Invalid {
            file: self.path.to_path_buf(),
            what: format!("manifest {d}"),
            reason,
        }
    }

    fn media_type(&self, d: &Digest) -> String {
        self.graph
            .manifests
            .get(d)
            .map(|n| n.manifest.media_type.clone())
            .unwrap_or_default()
    }

    fn manifest(&self, desc: &Descriptor, parent: &str) -> Result<RawManifest, ForeignError> {
        let d = &desc.digest;
        let bytes = match self.parts.manifests.get(d) {
            Some(b) => Some(b.clone()),
            None => self.lookup.manifest(d)?,
        }
        .ok_or_else(|| ForeignError::Missing {
            file: self.path.to_path_buf(),
            what: format!("manifest {d} (named by {parent})"),
        })?;
        if bytes.len() as u64 > MAX_JSON {
            return Err(ForeignError::TooLarge {
                file: self.path.to_path_buf(),
                what: format!("manifest {d}"),
                size: bytes.len() as u64,
                limit: MAX_JSON,
            });
        }
        let found = Digest::sha256_of(&bytes);
        if &found != d {
            return Err(self.invalid(d, format!("its content hashes to {found}")));
        }
        if desc.size != 0 && desc.size != bytes.len() as u64 {
            return Err(self.invalid(
                d,
                format!(
                    "{parent} says {} bytes, the archive holds {}",
                    desc.size,
                    bytes.len()
                ),
            ));
        }
        let declared = (!desc.media_type.is_empty()).then_some(desc.media_type.as_str());
        RawManifest::from_bytes(bytes, declared).map_err(|e| self.invalid(d, e.to_string()))
    }

    /// Adds a manifest and its index tree (all platforms), with every blob located.
    fn add_tree(&mut self, top: &Digest, at: &Reference) -> Result<(), ForeignError> {
        let mut level = vec![(
            Descriptor {
                media_type: String::new(),
                digest: top.clone(),
                size: 0,
                platform: None,
                annotations: None,
            },
            at.to_string(),
        )];
        for _ in 0..=MAX_DEPTH {
            let mut next = Vec::new();
            for (desc, parent) in level.drain(..) {
                if self.graph.manifests.contains_key(&desc.digest) {
                    continue;
                }
                if self.graph.manifests.len() >= MAX_MANIFESTS {
                    return Err(ForeignError::Hostile {
                        file: self.path.to_path_buf(),
                        reason: format!("more than {MAX_MANIFESTS} manifests"),
                    });
                }
                let m = self.manifest(&desc, &parent)?;
                for child in m.child_manifests() {
                    next.push((child.clone(), format!("index {}", m.digest)));
                }
                for blob in m.blobs() {
                    self.locate(blob, &m.digest)?;
                }
                let node = ManifestNode {
                    manifest: m,
                    repo: at.clone(),
                };
                self.graph.add_blobs_of(&node);
                self.graph
                    .manifests
                    .insert(node.manifest.digest.clone(), node);
            }
            if next.is_empty() {
                return Ok(());
            }
            level = next;
        }
        Err(self.invalid(
            top,
            format!("index nesting deeper than {MAX_DEPTH} (cycle?)"),
        ))
    }

    fn locate(&mut self, blob: &Descriptor, manifest: &Digest) -> Result<(), ForeignError> {
        if self.locs.contains_key(&blob.digest) {
            return Ok(());
        }
        let loc = match self.parts.blobs.get(&blob.digest) {
            Some(l) => Some(l.clone()),
            None => self.lookup.blob(&blob.digest)?,
        }
        .ok_or_else(|| ForeignError::Missing {
            file: self.path.to_path_buf(),
            what: format!("blob {} (named by manifest {manifest})", blob.digest),
        })?;
        if loc.size() != blob.size {
            return Err(self.invalid(
                manifest,
                format!(
                    "names blob {} of {} bytes; the archive holds {} bytes",
                    blob.digest,
                    blob.size,
                    loc.size()
                ),
            ));
        }
        self.locs.insert(blob.digest.clone(), loc);
        Ok(())
    }

    fn small_blob(&self, desc: &Descriptor, limit: u64) -> Result<Vec<u8>, ForeignError> {
        let loc = self
            .locs
            .get(&desc.digest)
            .ok_or_else(|| ForeignError::Missing {
                file: self.path.to_path_buf(),
                what: format!("blob {}", desc.digest),
            })?;
        let bytes = read_loc(self.path, loc, limit, &format!("blob {}", desc.digest))?;
        let found = Digest::sha256_of(&bytes);
        if found != desc.digest {
            return Err(ForeignError::Invalid {
                file: self.path.to_path_buf(),
                what: format!("blob {}", desc.digest),
                reason: format!("its content hashes to {found}"),
            });
        }
        Ok(bytes)
    }

    fn kind_of(&self, d: &Digest) -> Result<Kind, ForeignError> {
        let Some(node) = self.graph.manifests.get(d) else {
            return Ok(Kind::Image);
        };
        let blobs = node.manifest.blobs();
        let Some(config) = blobs.first() else {
            return Ok(Kind::Image);
        };
        let bytes = self.small_blob(config, MAX_JSON)?;
        Ok(if config_is_bundle(&bytes) {
            Kind::Bundle
        } else {
            Kind::Image
        })
    }

    fn read_lock(&self, bundle: &Digest) -> Result<BundleLockInfo, ForeignError> {
        let node = self
            .graph
            .manifests
            .get(bundle)
            .ok_or_else(|| self.invalid(bundle, "vanished from the graph".into()))?;
        let blobs = node.manifest.blobs();
        let [_config, layer] = blobs.as_slice() else {
            return Err(self.invalid(
                bundle,
                format!(
                    "a bundle has exactly one layer, this one has {}",
                    blobs.len().saturating_sub(1)
                ),
            ));
        };
        let gz = self.small_blob(layer, MAX_BUNDLE_LAYER)?;
        let lock_bytes =
            crate::author::extract::file_from_gzip_layer(&gz, ".imgpkg/images.yml", MAX_LOCK)
                .map_err(|e| self.invalid(bundle, e))?;
        let text = String::from_utf8(lock_bytes.clone())
            .map_err(|_| self.invalid(bundle, ".imgpkg/images.yml is not UTF-8".into()))?;
        let name = PathBuf::from(format!("bundle {bundle}: .imgpkg/images.yml"));
        let entries =
            crate::author::lock::ImagesLock::parse(&text, &name, &crate::yaml::Limits::default())
                .map_err(|e| self.invalid(bundle, e.to_string()))?
                .images
                .into_iter()
                .map(|i| (i.image, i.annotations))
                .collect();
        Ok(BundleLockInfo {
            bundle: bundle.clone(),
            lock_bytes,
            entries,
        })
    }
}

/// How a root without a usable name is known: the file's stem as a repository.
fn fallback_repo(path: &Path) -> String {
    let stem = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = stem
        .trim_end_matches(".tar")
        .trim_end_matches(".oci")
        .to_ascii_lowercase();
    let clean: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let clean = clean.trim_matches('-').to_owned();
    if clean.is_empty() {
        "image".into()
    } else {
        clean
    }
}

/// A root's reference from the names another tool recorded: a full reference as is; a bare
/// tag (`1.0`, as skopeo `oci:DIR:1.0` records) under the file's stem; none at all by digest.
fn root_reference(path: &Path, names: &[&str], digest: &Digest) -> Result<Reference, ForeignError> {
    for name in names {
        let full = name.contains('/') || name.contains(':') || name.contains('@');
        if full && let Ok(r) = Reference::parse(name) {
            return Ok(r);
        }
    }
    let repo = fallback_repo(path);
    let text = match names.first() {
        Some(tag) if !tag.is_empty() => format!("{repo}:{tag}"),
        _ => format!("{repo}@{digest}"),
    };
    Reference::parse(&text)
        .or_else(|_| Reference::parse(&format!("{repo}@{digest}")))
        .map_err(|e| ForeignError::Invalid {
            file: path.to_path_buf(),
            what: format!("manifest {digest}"),
            reason: format!("no usable name: {e}"),
        })
}

/// What `verify` found in another tool's archive.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ForeignReport {
    /// The file or directory.
    pub archive: String,
    /// Its format.
    pub format: Format,
    /// Manifests and indexes checked (when the graph was built).
    pub manifests_checked: usize,
    /// Configs and layers hashed.
    pub blobs_checked: u64,
    /// Bytes hashed.
    pub bytes_checked: u64,
    /// What failed, one line each.
    pub failures: Vec<String>,
    /// Whether everything verified.
    pub ok: bool,
}

impl ForeignStore {
    /// Reads every config and layer through its digest check (blocking: call off the runtime).
    pub fn verify_all(&self) -> ForeignReport {
        let mut report = ForeignReport {
            archive: self.path.display().to_string(),
            format: self.format,
            manifests_checked: self.graph.manifests.len(),
            blobs_checked: 0,
            bytes_checked: 0,
            failures: Vec::new(),
            ok: true,
        };
        for blob in self.graph.blobs.values() {
            let d = &blob.desc.digest;
            let result = self
                .reader(&blob.desc)
                .and_then(|mut r| std::io::copy(&mut r, &mut std::io::sink()));
            match result {
                Ok(_) => {
                    report.blobs_checked += 1;
                    report.bytes_checked += blob.desc.size;
                }
                Err(e) => report.failures.push(format!("blob {d}: {e}")),
            }
        }
        report.ok = report.failures.is_empty();
        report
    }

    /// A reader of one blob that fails unless its bytes match the descriptor.
    fn reader(&self, desc: &Descriptor) -> std::io::Result<Box<dyn Read + Send>> {
        let loc = self.locs.get(&desc.digest).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "not in this archive")
        })?;
        let inner: Box<dyn Read + Send> = match loc {
            Loc::Memory(b) => Box::new(std::io::Cursor::new(b.clone())),
            Loc::Path(p, len) => Box::new(File::open(p)?.take(*len)),
            Loc::Region(r) => {
                let mut f = File::open(&self.path)?;
                f.seek(SeekFrom::Start(r.offset))?;
                Box::new(f.take(r.size))
            }
        };
        Ok(Box::new(VerifyingReader::new(
            inner,
            desc.digest.clone(),
            Some(desc.size),
        )))
    }
}

impl Source for ForeignStore {
    async fn fetch(&self, desc: &Descriptor) -> Result<ByteStream, StoreError> {
        if !self.locs.contains_key(&desc.digest) {
            return Err(StoreError::NotFound(desc.digest.clone()));
        }
        let opened = self.reader(desc);
        let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(CHUNKS_IN_FLIGHT);
        tokio::task::spawn_blocking(move || {
            let mut r = match opened {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            loop {
                let mut buf = vec![0u8; CHUNK];
                match r.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
        });
        Ok(
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
                .boxed(),
        )
    }
}
