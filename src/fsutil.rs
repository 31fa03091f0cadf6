//! Writing output files so that nothing planted in the target directory is followed or
//! destroyed: unique temp names, no symlinks followed, fsync before and after the rename.
//!
//! Every file airlift writes goes through one of three calls:
//! - [`write_atomic`]: small outputs (locks, receipts, signatures) written whole.
//! - [`AtomicFile`]: streamed outputs (archives): a temp file beside the target, then
//!   [`AtomicFile::commit`]; dropped uncommitted, the temp file is removed.
//! - [`create_new`] / [`create_nofollow`]: direct writes (keys, extracted files) that must
//!   not replace an existing file, or must not write through a symlink.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Mode of private outputs (keys, receipts and their signatures).
pub const PRIVATE: u32 = 0o600;
/// Mode of ordinary outputs (locks, archives), before the umask.
pub const PUBLIC: u32 = 0o644;

/// Writes `bytes` to `path` through a fresh temp file beside it, fsynced, renamed over
/// `path`, then the directory fsynced. A symlink at `path` is replaced, never followed.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut f = AtomicFile::create(path, mode)?;
    f.file().write_all(bytes)?;
    f.commit()
}

/// A temp file that becomes `target` on [`AtomicFile::commit`], or disappears when dropped.
pub struct AtomicFile {
    file: File,
    tmp: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl AtomicFile {
    /// Creates `.<name>.<random>.tmp` next to `target` (`O_CREAT|O_EXCL|O_NOFOLLOW`, `mode`).
    pub fn create(target: &Path, mode: u32) -> io::Result<AtomicFile> {
        let name = target.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} names no file", target.display()),
            )
        })?;
        let dir = parent_dir(target);
        // A few attempts: a collision of 64 random bits means someone is guessing names.
        let mut last = None;
        for _ in 0..4 {
            let mut nonce = [0u8; 8];
            getrandom::fill(&mut nonce).map_err(io::Error::other)?;
            let mut tmp_name = OsString::from(".");
            tmp_name.push(name);
            tmp_name.push(format!(".{}.tmp", hex::encode(nonce)));
            let tmp = dir.join(tmp_name);
            match create_new(&tmp, mode) {
                Ok(file) => {
                    return Ok(AtomicFile {
                        file,
                        tmp,
                        target: target.to_path_buf(),
                        committed: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no unique temp name")))
    }

    /// The open temp file, for writing.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// The temp file's path (for messages).
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// fsyncs the data, renames it over the target, fsyncs the directory.
    pub fn commit(mut self) -> io::Result<()> {
        self.file.sync_all()?;
        fs::rename(&self.tmp, &self.target)?;
        self.committed = true;
        sync_dir(&parent_dir(&self.target))
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Creates a file that must not exist yet (`O_CREAT|O_EXCL|O_NOFOLLOW`, `mode`); a symlink
/// or file already at `path` is an error.
pub fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Creates or truncates a file, refusing (`ELOOP`) when `path` itself is a symlink.
pub fn create_nofollow(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// fsyncs a directory so a rename or creation in it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncommitted_temp_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        let mut f = AtomicFile::create(&target, PUBLIC).unwrap();
        f.file().write_all(b"x").unwrap();
        let tmp = f.temp_path().to_path_buf();
        assert!(tmp.exists());
        drop(f);
        assert!(!tmp.exists() && !target.exists());
    }
}
