//! Random access into another tool's plain tar by entry name: headers are read once (GNU and
//! pax names included, through the `tar` crate), data is later read by offset.
//!
//! Nothing is ever extracted, so a hostile name cannot write outside a target; still, every
//! name that could (`..`, absolute), every link whose target is not a regular file of the same
//! tar (`docker save` links each `<id>/layer.tar` to one blob), every device or FIFO,
//! duplicate names and sizes running past the end of the file are refused, naming the entry.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::ForeignError;

/// Entries indexed per file; a tar with more is refused (bounded memory and time).
pub const MAX_ENTRIES: usize = 1_000_000;

/// Where an entry's data lies in the tar file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// Offset of the data in the file.
    pub offset: u64,
    /// Its length.
    pub size: u64,
}

/// The regular files of a tar, by normalized name (no `./` prefix).
#[derive(Debug)]
pub struct TarFile {
    path: PathBuf,
    files: HashMap<String, Region>,
}

/// A tar entry name without `./` prefixes and trailing `/`; refuses names that climb out.
pub fn normalize(name: &str) -> Result<String, String> {
    if name.starts_with('/') {
        return Err("absolute path".into());
    }
    let mut parts = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err("contains a '..' component".into()),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// A link target as a name in the archive: relative to `base`, refusing absolute targets and
/// `..` that climbs above the archive's root.
fn resolve(base: &str, target: &str) -> Result<String, String> {
    if target.starts_with('/') {
        return Err("absolute target".into());
    }
    let mut parts: Vec<&str> = base.split('/').filter(|c| !c.is_empty()).collect();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err("points outside the archive".into());
                }
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

impl TarFile {
    /// Reads every header of `path` (seeking over data) under the rules above.
    pub fn index(path: &Path) -> Result<TarFile, ForeignError> {
        let file = File::open(path).map_err(ForeignError::io(path))?;
        let len = file.metadata().map_err(ForeignError::io(path))?.len();
        let mut archive = tar::Archive::new(file);
        let bad = |reason: String| ForeignError::Hostile {
            file: path.to_path_buf(),
            reason,
        };
        let not_tar = |e: std::io::Error| ForeignError::NotRecognised {
            file: path.to_path_buf(),
            what: format!("not a readable tar file ({e})"),
        };
        let mut files = HashMap::new();
        let mut links: Vec<(String, String, &'static str)> = Vec::new();
        let mut count = 0usize;
        for entry in archive.entries_with_seek().map_err(not_tar)? {
            let entry = entry.map_err(not_tar)?;
            count += 1;
            if count > MAX_ENTRIES {
                return Err(bad(format!("more than {MAX_ENTRIES} entries")));
            }
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let shown: String = raw.chars().take(300).collect();
            let name = normalize(&raw).map_err(|r| bad(format!("entry {shown:?}: {r}")))?;
            let kind = entry.header().entry_type();
            let size = entry.size();
            let offset = entry.raw_file_position();
            match kind {
                tar::EntryType::Directory => continue,
                tar::EntryType::Regular | tar::EntryType::Continuous => {}
                tar::EntryType::XGlobalHeader => continue,
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let target = entry
                        .link_name_bytes()
                        .map(|t| String::from_utf8_lossy(&t).into_owned())
                        .unwrap_or_default();
                    let (what, base) = if kind == tar::EntryType::Symlink {
                        // A symbolic link is relative to its own directory.
                        (
                            "symbolic link",
                            name.rsplit_once('/').map_or("", |(d, _)| d),
                        )
                    } else {
                        ("hard link", "")
                    };
                    let resolved = resolve(base, &target).map_err(|r| {
                        bad(format!("entry {shown:?} is a {what} to {target:?}: {r}"))
                    })?;
                    links.push((name, resolved, what));
                    continue;
                }
                other => {
                    return Err(bad(format!(
                        "entry {shown:?} is a {} (only regular files and directories are read)",
                        kind_name(other)
                    )));
                }
            }
            if offset.checked_add(size).is_none_or(|end| end > len) {
                return Err(bad(format!(
                    "entry {shown:?} claims {size} bytes at offset {offset}, past the end of the \
                     {len}-byte file (truncated, or a lying size)"
                )));
            }
            if files.insert(name, Region { offset, size }).is_some() {
                return Err(bad(format!("entry {shown:?} appears twice")));
            }
        }
        // Links resolve to regular files only (no chains, no directories, nothing outside).
        for (name, target, what) in links {
            let Some(&r) = files.get(&target) else {
                return Err(bad(format!(
                    "entry {name:?} is a {what} to {target:?}, which is not a regular file of \
                     the archive"
                )));
            };
            if files.insert(name.clone(), r).is_some() {
                return Err(bad(format!("entry {name:?} appears twice")));
            }
        }
        Ok(TarFile {
            path: path.to_path_buf(),
            files,
        })
    }

    /// The file this index is of.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the regular file `name` is, if the tar holds one.
    pub fn get(&self, name: &str) -> Option<Region> {
        self.files.get(name).copied()
    }

    /// Whether the tar holds a regular file `name`.
    pub fn has(&self, name: &str) -> bool {
        self.files.contains_key(name)
    }

    /// Every regular file name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// Reads entry `name` whole if it is at most `limit` bytes.
    pub fn read_small(&self, name: &str, limit: u64) -> Result<Vec<u8>, ForeignError> {
        let r = self.get(name).ok_or_else(|| ForeignError::Missing {
            file: self.path.clone(),
            what: name.to_owned(),
        })?;
        read_region(&self.path, r, limit, name)
    }
}

/// Reads `r` of `path` whole, refusing more than `limit` bytes.
pub fn read_region(
    path: &Path,
    r: Region,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>, ForeignError> {
    if r.size > limit {
        return Err(ForeignError::TooLarge {
            file: path.to_path_buf(),
            what: what.to_owned(),
            size: r.size,
            limit,
        });
    }
    let mut f = File::open(path).map_err(ForeignError::io(path))?;
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(r.offset))
        .map_err(ForeignError::io(path))?;
    let mut out = Vec::with_capacity(usize::try_from(r.size).unwrap_or(0));
    f.take(r.size)
        .read_to_end(&mut out)
        .map_err(ForeignError::io(path))?;
    if out.len() as u64 != r.size {
        return Err(ForeignError::Hostile {
            file: path.to_path_buf(),
            reason: format!("{what}: file ends inside the entry"),
        });
    }
    Ok(out)
}

fn kind_name(t: tar::EntryType) -> &'static str {
    match t {
        tar::EntryType::Symlink => "symbolic link",
        tar::EntryType::Link => "hard link",
        tar::EntryType::Char => "character device",
        tar::EntryType::Block => "block device",
        tar::EntryType::Fifo => "FIFO",
        tar::EntryType::GNUSparse => "GNU sparse file",
        _ => "special entry",
    }
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn names_are_normalized_and_climbing_ones_refused() {
        assert_eq!(normalize("./blobs/sha256/ab").unwrap(), "blobs/sha256/ab");
        assert_eq!(normalize("blobs/").unwrap(), "blobs");
        assert!(normalize("../etc/passwd").is_err());
        assert!(normalize("blobs/../../x").is_err());
        assert!(normalize("/etc/passwd").is_err());
    }

    #[test]
    fn link_targets_stay_inside_the_archive() {
        use super::resolve;
        assert_eq!(resolve("abc", "../sha.tar").unwrap(), "sha.tar");
        assert!(resolve("abc", "../../etc/passwd").is_err());
        assert!(resolve("", "/etc/shadow").is_err());
    }
}
