//! Blob digests checked on worker threads while the archive is read in order: an auditor's
//! check of many blobs is bounded by the disk, not by one core's sha256.
//!
//! The reader stays on the caller's thread (a tar stream is sequential); each blob's bytes
//! go to a worker in pooled buffers, so memory is bounded by the pool whatever the blob size.
//! In an uncompressed archive a worker instead reads its blob's range of the file itself, so
//! the reader moves on at once and two large blobs are hashed at the same time.
//! Results come back in the order the blobs were read, so reports stay deterministic.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::digest::{DigestError, Verifier};

/// Size of one pooled buffer.
const CHUNK: usize = 1 << 20;

/// Buffers in the pool: the most bytes read ahead of the hashing.
const BUFFERS: usize = 8;

/// Most worker threads (sha256 with SHA-NI runs at about one core's speed per thread).
const MAX_WORKERS: usize = 4;

enum Msg {
    Data(Vec<u8>, usize),
    End,
}

/// Where a worker gets a blob's bytes.
enum Feed {
    /// From the reader, chunk by chunk.
    Chunks(Receiver<Msg>),
    /// `len` bytes of `file` at `offset`, read by the worker.
    Range {
        file: Arc<File>,
        offset: u64,
        len: u64,
    },
}

struct Job {
    seq: u64,
    verifier: Verifier,
    feed: Feed,
}

/// `None` when the reader gave up on the blob (the caller reports why).
type Outcome = Option<Result<u64, DigestError>>;

/// A finished blob: its tag as given to [`Hashers::hash`] and its byte count or digest error.
pub(crate) type Checked<T> = (T, Result<u64, DigestError>);

/// A small pool of hashing threads fed in read order.
pub(crate) struct Hashers<T> {
    jobs: Option<SyncSender<Job>>,
    results: Receiver<(u64, Outcome)>,
    pool: Receiver<Vec<u8>>,
    pool_tx: SyncSender<Vec<u8>>,
    workers: Vec<JoinHandle<()>>,
    next_seq: u64,
    /// The next sequence number to hand back, and what finished out of order meanwhile.
    next_out: u64,
    done: BTreeMap<u64, Outcome>,
    tags: BTreeMap<u64, T>,
}

impl<T> Hashers<T> {
    /// Workers for the cores there are (at least one: reading still overlaps hashing).
    pub fn new() -> Hashers<T> {
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, MAX_WORKERS);
        let (jobs_tx, jobs_rx) = mpsc::sync_channel::<Job>(workers);
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let (results_tx, results) = mpsc::channel();
        let (pool_tx, pool) = mpsc::sync_channel(BUFFERS);
        for _ in 0..BUFFERS {
            // Cannot fail: the channel holds exactly BUFFERS.
            let _ = pool_tx.send(vec![0u8; CHUNK]);
        }
        let workers = (0..workers)
            .map(|_| {
                let jobs = Arc::clone(&jobs_rx);
                let results: Sender<(u64, Outcome)> = results_tx.clone();
                let pool = pool_tx.clone();
                std::thread::spawn(move || work(&jobs, &results, &pool))
            })
            .collect();
        Hashers {
            jobs: Some(jobs_tx),
            results,
            pool,
            pool_tx,
            workers,
            next_seq: 0,
            next_out: 0,
            done: BTreeMap::new(),
            tags: BTreeMap::new(),
        }
    }

    /// Reads `data` to its end into workers that check it against `verifier`; a read error
    /// is returned here and that blob yields no result.
    pub fn hash(&mut self, tag: T, mut data: impl Read, verifier: Verifier) -> io::Result<()> {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.tags.insert(seq, tag);
        let (tx, chunks) = mpsc::channel();
        self.send(Job {
            seq,
            verifier,
            feed: Feed::Chunks(chunks),
        })?;
        let gone = || io::Error::other("the hashing threads stopped");
        loop {
            let mut buf = self.pool.recv().map_err(|_| gone())?;
            let mut len = 0;
            while len < buf.len() {
                match data.read(&mut buf[len..]) {
                    Ok(0) => break,
                    Ok(n) => len += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = self.pool_tx.send(buf);
                        // Dropping `tx` without `End` tells the worker to give up.
                        return Err(e);
                    }
                }
            }
            if len == 0 {
                let _ = self.pool_tx.send(buf);
                return tx.send(Msg::End).map_err(|_| gone());
            }
            tx.send(Msg::Data(buf, len)).map_err(|_| gone())?;
        }
    }

    /// Has a worker read and check `len` bytes of `file` at `offset` (the caller still reads
    /// past them in its stream, which reports a truncated file). Waits while every worker
    /// is busy and one job is queued for each.
    pub fn hash_range(
        &mut self,
        tag: T,
        file: &Arc<File>,
        offset: u64,
        len: u64,
        verifier: Verifier,
    ) -> io::Result<()> {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.tags.insert(seq, tag);
        self.send(Job {
            seq,
            verifier,
            feed: Feed::Range {
                file: Arc::clone(file),
                offset,
                len,
            },
        })
    }

    fn send(&mut self, job: Job) -> io::Result<()> {
        let gone = || io::Error::other("the hashing threads stopped");
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send(job)
            .map_err(|_| gone())
    }

    /// The blobs finished so far whose predecessors are all finished, in read order.
    pub fn ready(&mut self) -> Vec<Checked<T>> {
        while let Ok((seq, outcome)) = self.results.try_recv() {
            self.done.insert(seq, outcome);
        }
        self.take_in_order()
    }

    /// Waits for every blob handed over so far; in read order.
    pub fn settle(&mut self) -> Vec<Checked<T>> {
        while self.next_out + (self.done.len() as u64) < self.next_seq {
            match self.results.recv() {
                Ok((seq, outcome)) => {
                    self.done.insert(seq, outcome);
                }
                // Every worker is gone (it panicked): what is missing stays unchecked.
                Err(_) => break,
            }
        }
        self.take_in_order()
    }

    fn take_in_order(&mut self) -> Vec<Checked<T>> {
        let mut out = Vec::new();
        while let Some(outcome) = self.done.remove(&self.next_out) {
            let tag = self.tags.remove(&self.next_out);
            self.next_out += 1;
            if let (Some(tag), Some(result)) = (tag, outcome) {
                out.push((tag, result));
            }
        }
        out
    }
}

impl<T> Drop for Hashers<T> {
    fn drop(&mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn work(jobs: &Mutex<Receiver<Job>>, results: &Sender<(u64, Outcome)>, pool: &SyncSender<Vec<u8>>) {
    // This worker's own buffer for range jobs, allocated on the first one.
    let mut own: Vec<u8> = Vec::new();
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(Job {
            seq,
            verifier,
            feed,
        }) = job
        else {
            return;
        };
        let outcome = match feed {
            Feed::Chunks(chunks) => from_chunks(verifier, &chunks, pool),
            Feed::Range { file, offset, len } => {
                own.resize(CHUNK, 0);
                from_range(verifier, &file, offset, len, &mut own)
            }
        };
        if results.send((seq, outcome)).is_err() {
            return;
        }
    }
}

fn from_chunks(
    mut verifier: Verifier,
    chunks: &Receiver<Msg>,
    pool: &SyncSender<Vec<u8>>,
) -> Outcome {
    let mut error = None;
    let mut seen = 0u64;
    for msg in chunks.iter() {
        match msg {
            Msg::Data(buf, len) => {
                if error.is_none()
                    && let Err(e) = verifier.update(&buf[..len])
                {
                    error = Some(e);
                }
                seen += len as u64;
                let _ = pool.send(buf);
            }
            Msg::End => {
                return Some(match error {
                    Some(e) => Err(e),
                    None => verifier.finish().map(|()| seen),
                });
            }
        }
    }
    // The reader gave up (a read error it reports itself).
    None
}

/// A short or failed read yields no result: the caller's own pass over the same bytes
/// meets the same end of file or error and reports it.
fn from_range(
    mut verifier: Verifier,
    file: &File,
    offset: u64,
    len: u64,
    buf: &mut [u8],
) -> Outcome {
    let mut done = 0u64;
    while done < len {
        let want = usize::try_from(len - done).map_or(buf.len(), |n| n.min(buf.len()));
        match file.read_at(&mut buf[..want], offset + done) {
            Ok(0) => return None,
            Ok(n) => {
                if let Err(e) = verifier.update(&buf[..n]) {
                    return Some(Err(e));
                }
                done += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(verifier.finish().map(|()| done))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;

    #[test]
    fn results_come_back_in_read_order_with_mismatches_named() {
        let mut h = Hashers::new();
        let mut expected = Vec::new();
        for i in 0..40u32 {
            // Sizes around the buffer size, some empty, every fifth with wrong content.
            let len = (i as usize * 97_003) % (3 * CHUNK);
            let data: Vec<u8> = (0..len).map(|j| (j as u32 ^ i) as u8).collect();
            let good = i % 5 != 3;
            let digest = if good {
                Digest::sha256_of(&data)
            } else {
                Digest::sha256_of(b"something else")
            };
            h.hash(i, &data[..], Verifier::new(digest, Some(len as u64)))
                .expect("in-memory read");
            expected.push((i, good, len as u64));
        }
        let got = h.settle();
        assert_eq!(got.len(), expected.len());
        for ((tag, result), (i, good, len)) in got.into_iter().zip(expected) {
            assert_eq!(tag, i);
            match result {
                Ok(n) => {
                    assert!(good, "blob {i} with wrong content passed");
                    assert_eq!(n, len);
                }
                Err(_) => assert!(!good, "blob {i} with right content failed"),
            }
        }
    }

    #[test]
    fn a_blob_whose_read_fails_yields_no_result() {
        struct Broken(usize);
        impl Read for Broken {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("disk on fire"));
                }
                let n = buf.len().min(self.0);
                self.0 -= n;
                Ok(n)
            }
        }
        let mut h = Hashers::new();
        let ok = b"fine".to_vec();
        h.hash("a", &ok[..], Verifier::new(Digest::sha256_of(&ok), Some(4)))
            .expect("in-memory read");
        let err = h
            .hash(
                "b",
                Broken(CHUNK + 5),
                Verifier::new(Digest::sha256_of(b"x"), None),
            )
            .expect_err("the read error reaches the caller");
        assert_eq!(err.to_string(), "disk on fire");
        let got = h.settle();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "a");
        assert_eq!(got[0].1.as_ref().ok(), Some(&4));
    }

    #[test]
    fn ranges_of_a_file_mixed_with_streamed_blobs_keep_read_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("data");
        let data: Vec<u8> = (0..(3 * CHUNK + 999)).map(|j| (j % 253) as u8).collect();
        std::fs::write(&path, &data).expect("write");
        let file = Arc::new(File::open(&path).expect("open"));
        let mut h = Hashers::new();
        let (a, b) = (&data[10..2 * CHUNK + 7], &data[5..50]);
        let ok = |d: &[u8]| Verifier::new(Digest::sha256_of(d), Some(d.len() as u64));
        h.hash_range("range", &file, 10, a.len() as u64, ok(a))
            .expect("queued");
        h.hash("stream", b, ok(b)).expect("in-memory read");
        let wrong = Verifier::new(Digest::sha256_of(b"other"), Some(100));
        h.hash_range("wrong", &file, 0, 100, wrong).expect("queued");
        // Past the end of the file: the caller's own pass reports the truncation.
        let tail = data.len() as u64 - 20;
        let short = Verifier::new(Digest::sha256_of(b"x"), Some(40));
        h.hash_range("short", &file, tail, 40, short)
            .expect("queued");
        let got = h.settle();
        let tags: Vec<&str> = got.iter().map(|(t, _)| *t).collect();
        assert_eq!(tags, ["range", "stream", "wrong"]);
        assert_eq!(got[0].1.as_ref().ok(), Some(&(a.len() as u64)));
        assert_eq!(got[1].1.as_ref().ok(), Some(&(b.len() as u64)));
        assert!(got[2].1.is_err(), "wrong content passed");
    }
}
