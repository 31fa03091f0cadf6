//! The whole-file checksums (`NAME.SHA256SUMS`, `NAME.B3SUMS`) computed on a thread while the
//! file is written: reading a finished archive back to hash it would cost a second pass.

use std::io::{self, Read, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use crate::digest::{Algorithm, Hasher};

/// Size of one pooled buffer.
const CHUNK: usize = 1 << 20;

/// Buffers in the pool: the most bytes the writer gets ahead of the hashing.
const BUFFERS: usize = 4;

/// A file's sha256 and BLAKE3, lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSums {
    /// sha256 of every byte of the file.
    pub sha256: String,
    /// BLAKE3 of every byte of the file.
    pub blake3: String,
}

impl FileSums {
    /// Reads `data` to its end, for a file written by an earlier run.
    pub fn of(mut data: impl Read) -> io::Result<FileSums> {
        let mut state = State::new();
        let mut buf = vec![0u8; CHUNK];
        loop {
            match data.read(&mut buf) {
                Ok(0) => return Ok(state.finish()),
                Ok(n) => state.update(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

struct State {
    sha256: Hasher,
    blake3: blake3::Hasher,
}

impl State {
    fn new() -> State {
        State {
            sha256: Hasher::new(Algorithm::Sha256),
            blake3: blake3::Hasher::new(),
        }
    }

    fn update(&mut self, b: &[u8]) {
        self.sha256.update(b);
        self.blake3.update(b);
    }

    fn finish(self) -> FileSums {
        FileSums {
            sha256: self.sha256.finish().hex().to_owned(),
            blake3: self.blake3.finalize().to_hex().to_string(),
        }
    }
}

/// Passes writes to `inner` and a copy of every byte to a hashing thread.
pub(crate) struct SumsWriter<W> {
    inner: W,
    /// `None` once finished.
    tx: Option<SyncSender<(Vec<u8>, usize)>>,
    pool: Receiver<Vec<u8>>,
    /// Gives back a buffer the writer took but did not fill.
    pool_tx: SyncSender<Vec<u8>>,
    worker: Option<JoinHandle<FileSums>>,
}

impl<W: Write> SumsWriter<W> {
    pub(crate) fn new(inner: W) -> SumsWriter<W> {
        let (tx, rx) = mpsc::sync_channel::<(Vec<u8>, usize)>(BUFFERS);
        let (pool_tx, pool) = mpsc::sync_channel(BUFFERS);
        for _ in 0..BUFFERS {
            // Cannot fail: the channel holds exactly BUFFERS.
            let _ = pool_tx.send(vec![0u8; CHUNK]);
        }
        let back = pool_tx.clone();
        let worker = std::thread::spawn(move || {
            let mut state = State::new();
            for (buf, n) in rx {
                state.update(&buf[..n]);
                // The writer may be gone (dropped on failure): nothing waits for this buffer.
                let _ = pool_tx.send(buf);
            }
            state.finish()
        });
        SumsWriter {
            inner,
            tx: Some(tx),
            pool,
            pool_tx: back,
            worker: Some(worker),
        }
    }

    /// Hashes bytes already in the file (an interrupted run's kept prefix) without writing.
    pub(crate) fn seed(&mut self, mut data: impl Read) -> io::Result<()> {
        loop {
            let mut buf = self.buffer()?;
            let n = loop {
                match data.read(&mut buf) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    other => break other?,
                }
            };
            if n == 0 {
                // Cannot block: this buffer came out of the pool, so its place is free.
                let _ = self.pool_tx.try_send(buf);
                return Ok(());
            }
            self.send(buf, n)?;
        }
    }

    /// The inner writer and the sums of everything written (and seeded).
    pub(crate) fn finish(mut self) -> io::Result<(W, FileSums)> {
        self.tx = None;
        let sums = self
            .worker
            .take()
            .map(|w| w.join())
            .transpose()
            .map_err(|_| io::Error::other("the checksum thread panicked"))?
            .ok_or_else(|| io::Error::other("checksums already taken"))?;
        Ok((self.inner, sums))
    }

    fn buffer(&mut self) -> io::Result<Vec<u8>> {
        self.pool
            .recv()
            .map_err(|_| io::Error::other("the checksum thread stopped"))
    }

    fn send(&mut self, buf: Vec<u8>, n: usize) -> io::Result<()> {
        self.tx
            .as_ref()
            .ok_or_else(|| io::Error::other("checksums already taken"))?
            .send((buf, n))
            .map_err(|_| io::Error::other("the checksum thread stopped"))
    }
}

impl<W: Write> Write for SumsWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        for part in data[..n].chunks(CHUNK) {
            let mut buf = self.buffer()?;
            buf[..part.len()].copy_from_slice(part);
            self.send(buf, part.len())?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_of_written_and_seeded_bytes_match_a_second_read() {
        let data: Vec<u8> = (0..(5 * CHUNK + 123))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let (head, tail) = data.split_at(CHUNK + 17);
        let mut w = SumsWriter::new(Vec::new());
        w.seed(head).unwrap();
        for piece in tail.chunks(300_000) {
            w.write_all(piece).unwrap();
        }
        let (inner, sums) = w.finish().unwrap();
        assert_eq!(inner, tail);
        let direct = FileSums::of(&data[..]).unwrap();
        assert_eq!(sums, direct);
        let mut h = Hasher::new(Algorithm::Sha256);
        h.update(&data);
        assert_eq!(sums.sha256, h.finish().hex());
        assert_eq!(sums.blake3, blake3::hash(&data).to_hex().to_string());
    }
}
