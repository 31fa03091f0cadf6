//! Minimal ustar reading and writing, exactly as the v1 format allows and no more.
//!
//! Written here rather than through the `tar` crate so that the bytes written are fully
//! determined by this file (determinism is part of the contract) and so that the reader sees
//! every header as is: pax and GNU extension headers are refused, not interpreted.

use std::io::{self, Read, Write};

use super::ArchiveError;

pub(crate) const BLOCK: u64 = 512;

/// One tar header, as read.
#[derive(Debug, Clone)]
pub(crate) struct RawEntry {
    pub name: String,
    pub typeflag: u8,
    pub size: u64,
    /// Offset of the entry's data in the uncompressed tar stream.
    pub data_offset: u64,
}

impl RawEntry {
    /// A human name for the entry type, or `None` for a regular file.
    pub fn irregular_kind(&self) -> Option<String> {
        let kind = match self.typeflag {
            b'0' | 0 => return None,
            b'1' => "hard link",
            b'2' => "symbolic link",
            b'3' => "character device",
            b'4' => "block device",
            b'5' => "directory",
            b'6' => "FIFO",
            b'7' => "contiguous file",
            b'x' => "pax extended header",
            b'g' => "pax global header",
            b'L' | b'K' => "GNU long name",
            other => return Some(format!("type {:?}", other as char)),
        };
        Some(kind.to_owned())
    }
}

pub(crate) fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

fn octal(field: &mut [u8], value: u64) {
    // width-1 octal digits then NUL.
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
}

/// A ustar header for a regular file (mode 0644, uid/gid 0).
pub(crate) fn header(name: &str, size: u64, mtime: u64) -> Result<[u8; 512], ArchiveError> {
    let mut h = [0u8; 512];
    if name.len() > 100 || name.is_empty() {
        return Err(ArchiveError::Usage(format!(
            "entry name {name:?} does not fit a ustar header"
        )));
    }
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    if size < 0o77777777777 {
        octal(&mut h[124..136], size);
    } else {
        h[124] = 0x80;
        h[128..136].copy_from_slice(&size.to_be_bytes());
    }
    if mtime > 0o77777777777 {
        return Err(ArchiveError::Usage(format!("mtime {mtime} too large")));
    }
    octal(&mut h[136..148], mtime);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    octal(&mut h[329..337], 0);
    octal(&mut h[337..345], 0);
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    octal(&mut h[148..155], sum);
    h[155] = b' ';
    Ok(h)
}

/// Writes one whole entry: header, data from `data` (exactly `size` bytes), padding.
pub(crate) fn write_entry<W: Write, R: Read>(
    out: &mut W,
    name: &str,
    size: u64,
    mtime: u64,
    data: &mut R,
) -> io::Result<()> {
    let h = header(name, size, mtime).map_err(io::Error::other)?;
    out.write_all(&h)?;
    let copied = io::copy(data, out)?;
    if copied != size {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("entry {name}: {copied} bytes, expected {size}"),
        ));
    }
    let zeros = [0u8; 512];
    out.write_all(&zeros[..padding(size) as usize])
}

/// End-of-archive: two zero blocks.
pub(crate) fn write_trailer<W: Write>(out: &mut W) -> io::Result<()> {
    out.write_all(&[0u8; 1024])
}

fn parse_octal(field: &[u8]) -> Option<u64> {
    let text: &[u8] = {
        let end = field
            .iter()
            .position(|&b| b == 0 || b == b' ')
            .unwrap_or(field.len());
        let start = field
            .iter()
            .take(end)
            .position(|&b| b != b' ')
            .unwrap_or(end);
        &field[start..end]
    };
    if text.is_empty() {
        return Some(0);
    }
    let mut v: u64 = 0;
    for &b in text {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

fn parse_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        // base-256: the first byte's other bits must be zero (no sign, no huge values).
        if field[0] != 0x80 || field[1..4].iter().any(|&b| b != 0) {
            return None;
        }
        let mut b = [0u8; 8];
        b.copy_from_slice(&field[4..12]);
        return Some(u64::from_be_bytes(b));
    }
    parse_octal(field)
}

/// Parses one 512-byte header at `offset`; `Ok(None)` for a zero block (end of archive).
pub(crate) fn parse_header(h: &[u8; 512], offset: u64) -> Result<Option<RawEntry>, ArchiveError> {
    if h.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let bad = |reason: &str| ArchiveError::BadHeader {
        offset,
        reason: reason.to_owned(),
    };
    let stored = parse_octal(&h[148..156]).ok_or_else(|| bad("checksum field is not octal"))?;
    let sum: u64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                u64::from(b' ')
            } else {
                u64::from(b)
            }
        })
        .sum();
    if sum != stored {
        return Err(bad("header checksum mismatch"));
    }
    if &h[257..263] != b"ustar\0" {
        return Err(bad("not a POSIX ustar header (magic)"));
    }
    let cstr = |f: &[u8]| -> Result<String, ArchiveError> {
        let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
        String::from_utf8(f[..end].to_vec()).map_err(|_| bad("entry name is not UTF-8"))
    };
    let name = cstr(&h[0..100])?;
    let prefix = cstr(&h[345..500])?;
    let name = if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    };
    let size = parse_size(&h[124..136]).ok_or_else(|| bad("size field is invalid"))?;
    Ok(Some(RawEntry {
        name,
        typeflag: h[156],
        size,
        data_offset: offset + BLOCK,
    }))
}

/// A tar stream that can jump over entry data it need not read (a plain file seeks; a
/// decompressor reads and drops).
pub(crate) trait Skip: Read {
    /// Moves up to `n` bytes ahead; fewer only at the end of the input.
    fn skip_ahead(&mut self, n: u64) -> io::Result<u64> {
        io::copy(&mut (&mut *self).take(n), &mut io::sink())
    }
}

impl Skip for &[u8] {}

impl<S: Skip + ?Sized> Skip for Box<S> {
    fn skip_ahead(&mut self, n: u64) -> io::Result<u64> {
        (**self).skip_ahead(n)
    }
}

impl Skip for io::BufReader<std::fs::File> {
    fn skip_ahead(&mut self, n: u64) -> io::Result<u64> {
        // Padding and small entries lie in the buffer: no system call for those.
        let buffered = self.buffer().len();
        if n <= buffered as u64 {
            io::BufRead::consume(self, n as usize);
            return Ok(n);
        }
        // Never past the end: a cut file must still read as cut.
        let pos = io::Seek::stream_position(self)?;
        let len = self.get_ref().metadata()?.len();
        let k = n.min(len.saturating_sub(pos));
        self.seek_relative(i64::try_from(k).map_err(io::Error::other)?)?;
        Ok(k)
    }
}

impl<R: io::BufRead> Skip for zstd::stream::read::Decoder<'_, R> {}

/// Reads a tar stream header by header, tracking the offset, with bounded entry reads.
pub(crate) struct TarReader<R> {
    inner: R,
    pos: u64,
    /// Data bytes left in the current entry, then its padding.
    remaining: u64,
    pad: u64,
    ended: bool,
}

impl<R: Skip> TarReader<R> {
    pub fn new(inner: R) -> Self {
        TarReader {
            inner,
            pos: 0,
            remaining: 0,
            pad: 0,
            ended: false,
        }
    }

    fn skip(&mut self, n: u64) -> Result<(), ArchiveError> {
        let copied = self
            .inner
            .skip_ahead(n)
            .map_err(ArchiveError::io("reading archive"))?;
        self.pos += copied;
        if copied != n {
            return Err(ArchiveError::Truncated { offset: self.pos });
        }
        Ok(())
    }

    /// The next header, skipping whatever is left of the current entry; `None` at the end.
    pub fn next_header(&mut self) -> Result<Option<RawEntry>, ArchiveError> {
        if self.ended {
            return Ok(None);
        }
        let rest = self.remaining + self.pad;
        self.remaining = 0;
        self.pad = 0;
        self.skip(rest)?;
        let mut h = [0u8; 512];
        let mut filled = 0;
        while filled < h.len() {
            match self.inner.read(&mut h[filled..]) {
                Ok(0) => return Err(ArchiveError::Truncated { offset: self.pos }),
                Ok(n) => {
                    filled += n;
                    self.pos += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ArchiveError::io("reading archive")(e)),
            }
        }
        let offset = self.pos - BLOCK;
        match parse_header(&h, offset)? {
            None => {
                self.ended = true;
                Ok(None)
            }
            Some(e) => {
                self.remaining = e.size;
                self.pad = padding(e.size);
                Ok(Some(e))
            }
        }
    }

    /// Reads the current entry's whole data if it is at most `limit` bytes.
    pub fn read_small(&mut self, name: &str, limit: u64) -> Result<Vec<u8>, ArchiveError> {
        if self.remaining > limit {
            return Err(ArchiveError::TooLarge {
                name: name.to_owned(),
                size: self.remaining,
                limit,
            });
        }
        let mut buf = Vec::with_capacity(self.remaining as usize);
        self.data().read_to_end(&mut buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                ArchiveError::Truncated { offset: self.pos }
            } else {
                ArchiveError::io(format!("reading {name}"))(e)
            }
        })?;
        Ok(buf)
    }

    /// A reader over the rest of the current entry's data.
    pub fn data(&mut self) -> EntryData<'_, R> {
        EntryData { tar: self }
    }
}

/// The data of the current tar entry; errors with `UnexpectedEof` if the stream is cut short.
pub(crate) struct EntryData<'a, R> {
    tar: &'a mut TarReader<R>,
}

impl<R: Skip> EntryData<'_, R> {
    /// Moves past the rest of the data without reading it where the stream allows; errors
    /// like [`Read::read`] if the stream is cut short.
    pub fn skip_rest(&mut self) -> io::Result<()> {
        let n = self.tar.remaining;
        let k = self.tar.inner.skip_ahead(n)?;
        self.tar.remaining -= k;
        self.tar.pos += k;
        if k < n {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("archive truncated at byte offset {}", self.tar.pos),
            ));
        }
        Ok(())
    }
}

impl<R: Read> Read for EntryData<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.tar.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.tar.remaining).unwrap_or(usize::MAX));
        let n = self.tar.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("archive truncated at byte offset {}", self.tar.pos),
            ));
        }
        self.tar.remaining -= n as u64;
        self.tar.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_small_and_large_sizes() {
        for size in [0u64, 1, 511, 512, 0o77777777776, 0o77777777777, 1 << 40] {
            let h = header("blobs/sha256/x", size, 1_700_000_000).unwrap();
            let e = parse_header(&h, 1024).unwrap().unwrap();
            assert_eq!(e.size, size);
            assert_eq!(e.name, "blobs/sha256/x");
            assert_eq!(e.data_offset, 1024 + 512);
            assert!(e.irregular_kind().is_none());
        }
    }

    #[test]
    fn corrupted_checksum_is_refused() {
        let mut h = header("index.json", 10, 0).unwrap();
        h[0] = b'j';
        assert!(matches!(
            parse_header(&h, 0),
            Err(ArchiveError::BadHeader { .. })
        ));
    }

    #[test]
    fn truncated_stream_is_detected() {
        let mut out = Vec::new();
        write_entry(&mut out, "a", 3, 0, &mut &b"abc"[..]).unwrap();
        let mut r = TarReader::new(&out[..]);
        assert!(r.next_header().unwrap().is_some());
        assert!(matches!(
            r.next_header(),
            Err(ArchiveError::Truncated { .. })
        ));
    }
}
