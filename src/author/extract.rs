//! Safe extraction of bundle layers, and the lock rewrite `imgpkg pull` performs.
//!
//! imgpkg does not guard its extraction; airlift refuses anything that could write outside
//! the target directory (`..`, absolute paths, links, devices, FIFOs, existing symlinks).

use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;

use super::bundle::{IMAGES_LOCK_FILE, IMGPKG_DIR};
use super::lock::{ImageRelocations, ImagesLock, digest_reference};
use super::{AuthorError, io_err};
use crate::digest::Digest;
use crate::yaml::Limits;

/// Bounds on what one layer may unpack to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractLimits {
    /// Largest total size of all files, in bytes.
    pub max_total_bytes: u64,
    /// Largest number of entries.
    pub max_entries: u64,
}

impl Default for ExtractLimits {
    fn default() -> Self {
        ExtractLimits {
            max_total_bytes: 4 << 30,
            max_entries: 1_000_000,
        }
    }
}

/// Extracts a gzip-compressed layer into `dir` (created if missing); returns the relative
/// paths written, in archive order.
pub fn extract_gzip_layer<R: Read>(
    gz: R,
    dir: &Path,
    limits: &ExtractLimits,
) -> Result<Vec<PathBuf>, AuthorError> {
    extract_tar(GzDecoder::new(gz), dir, limits)
}

/// Extracts an uncompressed layer tar into `dir`; see [`extract_gzip_layer`].
pub fn extract_tar<R: Read>(
    tar: R,
    dir: &Path,
    limits: &ExtractLimits,
) -> Result<Vec<PathBuf>, AuthorError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut archive = tar::Archive::new(tar);
    let mut written = Vec::new();
    let (mut total, mut count) = (0u64, 0u64);
    let entries = archive.entries().map_err(io_err(dir))?;
    for entry in entries {
        let mut entry = entry.map_err(io_err(dir))?;
        let raw_name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let refuse = |reason: &str| AuthorError::UnsafeEntry {
            entry: raw_name.clone(),
            reason: reason.to_owned(),
        };
        count += 1;
        if count > limits.max_entries {
            return Err(refuse("too many entries in layer"));
        }
        let rel = safe_relative(&raw_name).map_err(refuse)?;
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().unwrap_or(0o600);
        match kind {
            tar::EntryType::Directory => {
                if rel.as_os_str().is_empty() {
                    continue;
                }
                make_dirs(dir, &rel).map_err(|e| refuse(&e))?;
                written.push(rel);
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if rel.as_os_str().is_empty() {
                    return Err(refuse("a file cannot be the root"));
                }
                let size = entry.header().size().map_err(io_err(dir))?;
                total = total.saturating_add(size);
                if total > limits.max_total_bytes {
                    return Err(refuse("layer unpacks to more than the size limit"));
                }
                if let Some(parent) = rel.parent() {
                    make_dirs(dir, parent).map_err(|e| refuse(&e))?;
                }
                let target = dir.join(&rel);
                if let Ok(m) = fs::symlink_metadata(&target)
                    && !m.is_file()
                {
                    return Err(refuse("an existing non-file is in the way"));
                }
                // O_NOFOLLOW: a symlink planted after the check above is refused, not followed.
                let mut f = crate::fsutil::create_nofollow(&target, (mode & 0o755) | 0o600)
                    .map_err(io_err(&target))?;
                let copied =
                    io::copy(&mut (&mut entry).take(size), &mut f).map_err(io_err(&target))?;
                if copied != size {
                    return Err(refuse("truncated entry"));
                }
                written.push(rel);
            }
            tar::EntryType::Symlink => return Err(refuse("symlinks are not allowed in a bundle")),
            tar::EntryType::Link => return Err(refuse("hard links are not allowed in a bundle")),
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(refuse("device files are not allowed in a bundle"));
            }
            tar::EntryType::Fifo => return Err(refuse("FIFOs are not allowed in a bundle")),
            _ => return Err(refuse("unsupported entry type")),
        }
    }
    Ok(written)
}

/// The entry's path relative to the target, or why it is unsafe.
fn safe_relative(name: &str) -> Result<PathBuf, &'static str> {
    if name.contains('\0') {
        return Err("NUL in name");
    }
    let p = Path::new(name);
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err("path contains '..'"),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path"),
        }
    }
    Ok(out)
}

/// Creates `dir/rel` component by component, refusing to pass through symlinks or files.
fn make_dirs(dir: &Path, rel: &Path) -> Result<(), String> {
    let mut cur = dir.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!("{} is an existing symlink", cur.display()));
            }
            Ok(_) => return Err(format!("{} exists and is not a directory", cur.display())),
            Err(_) => {
                use std::os::unix::fs::DirBuilderExt;
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&cur)
                    .map_err(|e| format!("{}: {e}", cur.display()))?;
            }
        }
    }
    Ok(())
}

/// Reads and validates `DIR/.imgpkg/images.yml` of an extracted bundle.
pub fn read_bundle_lock(dir: &Path, limits: &Limits) -> Result<ImagesLock, AuthorError> {
    ImagesLock::read(&dir.join(IMGPKG_DIR).join(IMAGES_LOCK_FILE), limits)
}

/// What `imgpkg pull` prints when it rewrote the lock to the bundle repository.
pub fn hosting_message(bundle_repo: &str) -> String {
    format!(
        "The bundle repo ({bundle_repo}) is hosting every image specified in the bundle's Images \
         Lock file (.imgpkg/images.yml)"
    )
}

/// What `imgpkg pull` prints when some image is missing from the bundle repository.
pub const SKIP_MESSAGE: &str =
    "One or more images not found in bundle repo; skipping lock file update";

/// The lock rewritten so each image is `bundle_repo@digest`, if `exists(digest)` holds for every
/// image (imgpkg's pull rule); `None` otherwise. Annotations and order are kept.
pub fn relocate_lock(
    lock: &ImagesLock,
    bundle_repo: &str,
    mut exists: impl FnMut(&Digest) -> bool,
) -> Result<Option<ImagesLock>, AuthorError> {
    let mut out = lock.clone();
    for img in &mut out.images {
        let r = digest_reference(&img.image, Path::new(IMAGES_LOCK_FILE))?;
        let Some(d) = r.digest() else {
            return Ok(None);
        };
        if !exists(d) {
            return Ok(None);
        }
        img.image = format!("{bundle_repo}@{d}");
    }
    Ok(Some(out))
}

/// Reads one file (`name`, relative, `./` optional) out of a small gzip layer held in memory.
///
/// Used for bundle locks and relocation metadata, which are read without extracting anything.
pub fn file_from_gzip_layer(gz: &[u8], name: &str, limit: u64) -> Result<Vec<u8>, String> {
    let mut archive = tar::Archive::new(GzDecoder::new(gz));
    let entries = archive.entries().map_err(|e| format!("layer: {e}"))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("layer: {e}"))?;
        let path = entry.path().map_err(|e| format!("layer: {e}"))?;
        if path.to_string_lossy().trim_start_matches("./") != name {
            continue;
        }
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(format!("{name} in the layer is not a regular file"));
        }
        if entry.size() > limit {
            return Err(format!("{name} exceeds {limit} bytes"));
        }
        let mut out = Vec::new();
        entry
            .take(limit + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("layer: {e}"))?;
        return Ok(out);
    }
    Err(format!("the layer has no {name}"))
}

/// Rewrites lock entries listed in an airlift relocations document (`--to-registry` imports),
/// keeping annotations and order; `None` unless every entry is listed.
pub fn apply_relocations(lock: &ImagesLock, relocations: &ImageRelocations) -> Option<ImagesLock> {
    let mut out = lock.clone();
    for img in &mut out.images {
        let to = relocations.images.iter().find(|r| r.image == img.image)?;
        img.image = to.relocated.clone();
    }
    Some(out)
}
