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

/// How far ahead of the disk a [`WriteBehind`] lets the writer get before it waits.
const WRITE_BEHIND_WINDOW: u64 = 16 << 20;

/// A file writer that hands each full window to the disk at once (`sync_file_range`) and
/// waits for the window before it: the disk writes while the source is still being read,
/// so the final fsync is short and dirty pages stay bounded whatever the archive's size.
pub struct WriteBehind {
    file: File,
    /// Offset of the next byte written.
    pos: u64,
    /// Writeback has been started up to here.
    started: u64,
    /// Writeback has completed up to here.
    done: u64,
}

impl WriteBehind {
    /// Writes continue at the file's current offset.
    pub fn new(mut file: File) -> io::Result<WriteBehind> {
        let pos = io::Seek::stream_position(&mut file)?;
        Ok(WriteBehind {
            file,
            pos,
            started: pos,
            done: pos,
        })
    }

    /// The file, for the final fsync (which alone says whether the bytes are on disk).
    pub fn into_inner(self) -> File {
        self.file
    }

    fn start_window(&mut self) {
        use std::os::fd::AsRawFd;
        let fd = self.file.as_raw_fd();
        // Advisory only: an error here (a filesystem without it) leaves the fsync to do it all.
        // SAFETY: `fd` is open for the lifetime of `self.file`; the call reads no memory.
        unsafe {
            let len = (self.pos - self.started) as libc::off64_t;
            libc::sync_file_range(
                fd,
                self.started as libc::off64_t,
                len,
                libc::SYNC_FILE_RANGE_WRITE,
            );
            if self.started > self.done {
                libc::sync_file_range(
                    fd,
                    self.done as libc::off64_t,
                    (self.started - self.done) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WAIT_BEFORE
                        | libc::SYNC_FILE_RANGE_WRITE
                        | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                );
            }
        }
        self.done = self.started;
        self.started = self.pos;
    }
}

impl Write for WriteBehind {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.pos += n as u64;
        if self.pos - self.started >= WRITE_BEHIND_WINDOW {
            self.start_window();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
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
    fn write_behind_writes_every_byte_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut f = File::create(&path).unwrap();
        f.write_all(b"head").unwrap();
        let mut w = WriteBehind::new(f).unwrap();
        let chunk: Vec<u8> = (0..=255u8).cycle().take(3 << 20).collect();
        for _ in 0..12 {
            w.write_all(&chunk).unwrap();
        }
        w.into_inner().sync_all().unwrap();
        let back = fs::read(&path).unwrap();
        assert_eq!(back.len(), 4 + 12 * chunk.len());
        assert_eq!(&back[..4], b"head");
        assert!(back[4..].chunks(chunk.len()).all(|c| c == chunk.as_slice()));
    }

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
