//! Building imgpkg bundle (and plain image) layers, configs and manifests.
//!
//! The uncompressed tar is byte-identical to imgpkg's (so the DiffID and config match), and
//! the manifest is Docker schema 2 with a Docker gzip layer, which imgpkg requires to copy.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;

use super::lock::ImageLocations;
use super::{AuthorError, io_err};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::oci::media_type;

/// The config label that marks an image as an imgpkg bundle.
pub const BUNDLE_LABEL: &str = "dev.carvel.imgpkg.bundle";
/// The directory holding a bundle's metadata.
pub const IMGPKG_DIR: &str = ".imgpkg";
/// File name of the ImagesLock within [`IMGPKG_DIR`].
pub const IMAGES_LOCK_FILE: &str = "images.yml";
/// File name of the locations document in a locations image.
pub const LOCATIONS_FILE: &str = "image-locations.yml";
/// Names excluded from layers (imgpkg's default `--file-exclusion`).
pub const EXCLUDED: &[&str] = &[".git"];

/// Checks bundle inputs like `imgpkg push -b`: exactly one `.imgpkg` directory, directly under
/// one of `inputs`, containing `images.yml`. Returns the path of that `images.yml`.
pub fn validate_bundle_inputs(inputs: &[PathBuf]) -> Result<PathBuf, AuthorError> {
    let mut found = Vec::new();
    for input in inputs {
        find_imgpkg_dirs(input, &mut found)?;
    }
    let first = inputs.first().cloned().unwrap_or_default();
    match found.as_slice() {
        [] => Err(AuthorError::InvalidInput {
            path: first,
            message: "a bundle needs a '.imgpkg' directory (with images.yml) directly under one \
                      of the input directories"
                .to_owned(),
        }),
        [one] => {
            let parent = one.parent().map(Path::to_path_buf).unwrap_or_default();
            if !inputs.contains(&parent) {
                return Err(AuthorError::InvalidInput {
                    path: one.clone(),
                    message: "the '.imgpkg' directory must be directly under one of the input \
                              directories (-f)"
                        .to_owned(),
                });
            }
            let lock = one.join(IMAGES_LOCK_FILE);
            if !std::fs::symlink_metadata(&lock).is_ok_and(|m| m.is_file()) {
                return Err(AuthorError::InvalidInput {
                    path: lock,
                    message: "the '.imgpkg' directory must contain images.yml (an ImagesLock)"
                        .to_owned(),
                });
            }
            Ok(lock)
        }
        many => Err(AuthorError::InvalidInput {
            path: many[1].clone(),
            message: format!(
                "expected exactly one '.imgpkg' directory, found {}: {}",
                many.len(),
                many.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// Checks plain-image inputs like `imgpkg push -i`: no `.imgpkg` directory anywhere.
pub fn validate_image_inputs(inputs: &[PathBuf]) -> Result<(), AuthorError> {
    let mut found = Vec::new();
    for input in inputs {
        find_imgpkg_dirs(input, &mut found)?;
    }
    match found.first() {
        Some(p) => Err(AuthorError::InvalidInput {
            path: p.clone(),
            message: "images cannot be pushed with '.imgpkg' directories; push it as a bundle \
                      instead"
                .to_owned(),
        }),
        None => Ok(()),
    }
}

fn find_imgpkg_dirs(path: &Path, found: &mut Vec<PathBuf>) -> Result<(), AuthorError> {
    let meta = std::fs::symlink_metadata(path).map_err(io_err(path))?;
    if !meta.is_dir() {
        return Ok(());
    }
    for (name, child) in sorted_children(path)? {
        if EXCLUDED.contains(&name.as_str()) {
            continue;
        }
        let m = std::fs::symlink_metadata(&child).map_err(io_err(&child))?;
        if m.is_dir() {
            if name == IMGPKG_DIR {
                found.push(child.clone());
            }
            find_imgpkg_dirs(&child, found)?;
        }
    }
    Ok(())
}

fn sorted_children(dir: &Path) -> Result<Vec<(String, PathBuf)>, AuthorError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        let name = e
            .file_name()
            .into_string()
            .map_err(|n| AuthorError::InvalidInput {
                path: dir.join(&n),
                message: "file name is not UTF-8".to_owned(),
            })?;
        out.push((name, e.path()));
    }
    // Go's filepath.Walk visits names in byte order.
    out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(out)
}

/// Writes USTAR entries exactly like imgpkg's layer writer.
pub struct LayerTarWriter<W: Write> {
    out: W,
    seen: std::collections::BTreeSet<String>,
}

const BLOCK: usize = 512;

impl<W: Write> LayerTarWriter<W> {
    /// Starts a layer tar with its root entry `.`.
    pub fn new(out: W) -> io::Result<Self> {
        let mut w = LayerTarWriter {
            out,
            seen: Default::default(),
        };
        w.header(".", 0o700, 0, b'5')?;
        Ok(w)
    }

    fn header(&mut self, name: &str, mode: u32, size: u64, kind: u8) -> io::Result<()> {
        if !self.seen.insert(name.to_owned()) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("duplicate entry {name:?} in layer"),
            ));
        }
        let mut h = [0u8; BLOCK];
        let (prefix, short) = split_name(name)?;
        h[..short.len()].copy_from_slice(short.as_bytes());
        h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
        octal(&mut h[100..108], u64::from(mode));
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        if size >= 8 << 30 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name}: files of 8 GiB or more are not supported in a USTAR layer"),
            ));
        }
        octal(&mut h[124..136], size);
        octal(&mut h[136..148], 0);
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        octal(&mut h[329..337], 0);
        octal(&mut h[337..345], 0);
        h[148..156].fill(b' ');
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        let text = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(text.as_bytes());
        self.out.write_all(&h)
    }

    /// Adds a directory entry (mode 0700, as imgpkg writes every directory).
    pub fn add_dir(&mut self, name: &str) -> io::Result<()> {
        self.header(name, 0o700, 0, b'5')
    }

    /// Adds a regular file of `size` bytes read from `data` (mode keeps owner bits only).
    pub fn add_file(
        &mut self,
        name: &str,
        mode: u32,
        size: u64,
        data: &mut dyn Read,
    ) -> io::Result<()> {
        self.header(name, mode & 0o700, size, b'0')?;
        let copied = io::copy(&mut data.take(size), &mut self.out)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{name}: file shrank while being archived"),
            ));
        }
        let pad = (BLOCK - (size as usize % BLOCK)) % BLOCK;
        self.out.write_all(&[0u8; BLOCK][..pad])
    }

    /// Writes the two zero blocks that end the archive (no record padding) and returns the sink.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 2 * BLOCK])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let text = format!("{value:0width$o}");
    field[..width].copy_from_slice(&text.as_bytes()[text.len() - width..]);
    field[width] = 0;
}

fn split_name(name: &str) -> io::Result<(&str, &str)> {
    if name.len() <= 100 {
        return Ok(("", name));
    }
    for (i, _) in name.match_indices('/') {
        let (prefix, rest) = (&name[..i], &name[i + 1..]);
        if prefix.len() <= 155 && rest.len() <= 100 && !rest.is_empty() {
            return Ok((prefix, rest));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("path {name:?} is too long for a USTAR layer"),
    ))
}

/// Writes the layer tar of `inputs` (directories' contents, or files at the root) to `out`.
///
/// Symlinks and special files are refused, `.git` is skipped, order is lexical.
pub fn write_layer_tar<W: Write>(inputs: &[PathBuf], out: W) -> Result<W, AuthorError> {
    let mut tar = LayerTarWriter::new(out).map_err(io_err("<layer>"))?;
    for input in inputs {
        let meta = std::fs::symlink_metadata(input).map_err(io_err(input))?;
        if meta.is_dir() {
            add_tree(&mut tar, input, "")?;
        } else {
            let name = input
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| AuthorError::InvalidInput {
                    path: input.clone(),
                    message: "input file name is not UTF-8".to_owned(),
                })?
                .to_owned();
            add_entry(&mut tar, input, &name, &meta)?;
        }
    }
    tar.finish().map_err(io_err("<layer>"))
}

fn add_tree<W: Write>(
    tar: &mut LayerTarWriter<W>,
    dir: &Path,
    rel: &str,
) -> Result<(), AuthorError> {
    for (name, path) in sorted_children(dir)? {
        if EXCLUDED.contains(&name.as_str()) {
            continue;
        }
        let entry = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let meta = std::fs::symlink_metadata(&path).map_err(io_err(&path))?;
        add_entry(tar, &path, &entry, &meta)?;
        if meta.is_dir() {
            add_tree(tar, &path, &entry)?;
        }
    }
    Ok(())
}

fn add_entry<W: Write>(
    tar: &mut LayerTarWriter<W>,
    path: &Path,
    entry: &str,
    meta: &std::fs::Metadata,
) -> Result<(), AuthorError> {
    use std::os::unix::fs::PermissionsExt;
    let ft = meta.file_type();
    if ft.is_dir() {
        tar.add_dir(entry).map_err(io_err(path))
    } else if ft.is_file() {
        let mut f = File::open(path).map_err(io_err(path))?;
        tar.add_file(entry, meta.permissions().mode(), meta.len(), &mut f)
            .map_err(io_err(path))
    } else if ft.is_symlink() {
        Err(AuthorError::InvalidInput {
            path: path.to_owned(),
            message: "symlinks are not supported in bundles or images (imgpkg refuses them too)"
                .to_owned(),
        })
    } else {
        Err(AuthorError::InvalidInput {
            path: path.to_owned(),
            message: "only regular files and directories can be packaged".to_owned(),
        })
    }
}

/// Digests and sizes of a built layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// sha256 of the uncompressed tar (goes into the config's `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// sha256 of the gzip bytes (the blob digest).
    pub digest: Digest,
    /// Size of the gzip bytes.
    pub size: u64,
}

struct HashWriter<W> {
    inner: W,
    hasher: Hasher,
    count: u64,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn hash_writer<W: Write>(inner: W) -> HashWriter<W> {
    HashWriter {
        inner,
        hasher: Hasher::new(Algorithm::Sha256),
        count: 0,
    }
}

/// Streams the gzip-compressed layer of `inputs` into `out`, returning its digests.
pub fn write_layer_gzip<W: Write>(
    inputs: &[PathBuf],
    out: W,
) -> Result<(LayerInfo, W), AuthorError> {
    gzip_with(out, |w| write_layer_tar(inputs, w).map(|_| ()))
}

fn gzip_with<W: Write>(
    out: W,
    body: impl FnOnce(&mut HashWriter<GzEncoder<HashWriter<W>>>) -> Result<(), AuthorError>,
) -> Result<(LayerInfo, W), AuthorError> {
    let gz = GzEncoder::new(hash_writer(out), Compression::fast());
    let mut tar_hash = hash_writer(gz);
    body(&mut tar_hash)?;
    let diff_id = tar_hash.hasher.finish();
    let compressed = tar_hash.inner.finish().map_err(io_err("<layer>"))?;
    let digest = compressed.hasher.finish();
    Ok((
        LayerInfo {
            diff_id,
            digest,
            size: compressed.count,
        },
        compressed.inner,
    ))
}

/// The image config bytes imgpkg writes for a layer with `diff_id` (`bundle` adds the label).
pub fn config_bytes(diff_id: &Digest, bundle: bool) -> Vec<u8> {
    let zero = "0001-01-01T00:00:00Z";
    let config = if bundle {
        format!("{{\"Labels\":{{\"{BUNDLE_LABEL}\":\"true\"}}}}")
    } else {
        "{}".to_owned()
    };
    format!(
        "{{\"architecture\":\"\",\"created\":\"{zero}\",\"history\":[{{\"author\":\"imgpkg\",\
         \"created\":\"{zero}\",\"created_by\":\"imgpkg\"}}],\"os\":\"\",\"rootfs\":{{\"type\":\
         \"layers\",\"diff_ids\":[\"{diff_id}\"]}},\"config\":{config}}}"
    )
    .into_bytes()
}

/// The Docker schema 2 manifest bytes for one config and one gzip layer, compact like imgpkg's.
pub fn manifest_bytes(config: &[u8], layer: &LayerInfo) -> Vec<u8> {
    format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{}\",\"config\":{{\"mediaType\":\"{}\",\"size\":{},\
         \"digest\":\"{}\"}},\"layers\":[{{\"mediaType\":\"{}\",\"size\":{},\"digest\":\"{}\"}}]}}",
        media_type::DOCKER_MANIFEST,
        media_type::DOCKER_CONFIG,
        config.len(),
        Digest::sha256_of(config),
        media_type::DOCKER_LAYER_GZIP,
        layer.size,
        layer.digest
    )
    .into_bytes()
}

/// The uncompressed layer tar of a locations image: `.` and `image-locations.yml` (0600).
pub fn locations_layer_tar(locations: &ImageLocations) -> Result<Vec<u8>, AuthorError> {
    single_file_layer_tar(LOCATIONS_FILE, locations.to_yaml().as_bytes())
}

/// A layer tar holding `.` and one file (mode 0600), as imgpkg writes metadata images.
pub fn single_file_layer_tar(name: &str, contents: &[u8]) -> Result<Vec<u8>, AuthorError> {
    let what = format!("<{name} layer>");
    let mut tar = LayerTarWriter::new(Vec::new()).map_err(io_err(&what))?;
    tar.add_file(name, 0o600, contents.len() as u64, &mut &contents[..])
        .map_err(io_err(&what))?;
    tar.finish().map_err(io_err(&what))
}

/// A small image held in memory: gzip layer, config and manifest bytes.
#[derive(Debug, Clone)]
pub struct SmallImage {
    /// The gzip-compressed layer.
    pub layer: Vec<u8>,
    /// Its digests.
    pub layer_info: LayerInfo,
    /// Config bytes.
    pub config: Vec<u8>,
    /// Manifest bytes (Docker schema 2).
    pub manifest: Vec<u8>,
}

/// The locations image imgpkg writes next to a relocated bundle (plain image, `"config":{}`).
pub fn locations_image(locations: &ImageLocations) -> Result<SmallImage, AuthorError> {
    small_image(&locations_layer_tar(locations)?)
}

/// A plain imgpkg-style image (one gzip layer, `"config":{}`) around an uncompressed layer tar.
pub fn small_image(tar: &[u8]) -> Result<SmallImage, AuthorError> {
    let (layer_info, layer) = gzip_with(Vec::new(), |w| {
        w.write_all(tar).map_err(io_err("<small image layer>"))
    })?;
    let config = config_bytes(&layer_info.diff_id, false);
    let manifest = manifest_bytes(&config, &layer_info);
    Ok(SmallImage {
        layer,
        layer_info,
        config,
        manifest,
    })
}

/// Whether a config JSON carries the imgpkg bundle label (the key's presence is what counts).
pub fn config_is_bundle(config: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Cfg {
        config: Option<Inner>,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        #[serde(rename = "Labels")]
        labels: Option<std::collections::BTreeMap<String, serde_json::Value>>,
    }
    serde_json::from_slice::<Cfg>(config)
        .ok()
        .and_then(|c| c.config)
        .and_then(|c| c.labels)
        .is_some_and(|l| l.contains_key(BUNDLE_LABEL))
}

/// A bundle image whose layer is `gz` (an imgpkg bundle layer) with the file `replace`
/// swapped for `contents`, re-written entry by entry as imgpkg writes a layer (derived bundles
/// of a platform-filtered export); the uncompressed tar may not exceed `limit` bytes.
pub fn rewrite_bundle_layer(
    gz: &[u8],
    replace: &str,
    contents: &[u8],
    limit: u64,
) -> Result<SmallImage, AuthorError> {
    let what = format!("<bundle layer, replacing {replace}>");
    let bad = |message: String| AuthorError::InvalidInput {
        path: PathBuf::from(&what),
        message,
    };
    let mut tar = LayerTarWriter::new(Vec::new()).map_err(io_err(&what))?;
    let mut replaced = false;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz).take(limit));
    for entry in archive.entries().map_err(io_err(&what))? {
        let mut entry = entry.map_err(io_err(&what))?;
        let path = entry.path().map_err(io_err(&what))?;
        let name = path
            .to_str()
            .ok_or_else(|| bad("an entry name is not UTF-8".into()))?
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_owned();
        if name.is_empty() || name == "." {
            continue;
        }
        if name.split('/').any(|c| c == ".." || c.is_empty()) || name.starts_with('/') {
            return Err(bad(format!("entry {name:?} leaves the bundle")));
        }
        let mode = entry.header().mode().map_err(io_err(&what))?;
        match entry.header().entry_type() {
            tar::EntryType::Directory => tar.add_dir(&name).map_err(io_err(&what))?,
            tar::EntryType::Regular if name == replace => {
                replaced = true;
                tar.add_file(&name, mode, contents.len() as u64, &mut &contents[..])
                    .map_err(io_err(&what))?;
            }
            tar::EntryType::Regular => {
                let size = entry.size();
                tar.add_file(&name, mode, size, &mut entry)
                    .map_err(io_err(&what))?;
            }
            other => {
                return Err(bad(format!(
                    "entry {name:?} is a {other:?}; a bundle holds only files and directories"
                )));
            }
        }
    }
    if !replaced {
        return Err(bad(format!("the layer has no {replace}")));
    }
    let tar_bytes = tar.finish().map_err(io_err(&what))?;
    let (layer_info, layer) = gzip_with(Vec::new(), |w| {
        w.write_all(&tar_bytes).map_err(io_err(&what))
    })?;
    let config = config_bytes(&layer_info.diff_id, true);
    let manifest = manifest_bytes(&config, &layer_info);
    Ok(SmallImage {
        layer,
        layer_info,
        config,
        manifest,
    })
}
