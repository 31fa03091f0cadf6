//! Content digests and streams that hash while they move bytes.
//!
//! Every blob airlift moves is checked against its digest on the fly, so that a
//! corrupted or substituted byte is caught before anything is published.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;

/// A digest algorithm airlift understands; sha512 is accepted for reading only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// `sha256`, the only algorithm airlift writes.
    Sha256,
    /// `sha512`, accepted when reading manifests written by others.
    Sha512,
}

impl Algorithm {
    /// The algorithm's name as written in a digest string.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// Why a digest string or a stream failed its check.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    /// The text is not `algorithm:hex` with a known algorithm and valid hex.
    #[error("invalid digest {text:?}: {reason}")]
    Invalid {
        /// The offending text.
        text: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The content hashed to something other than what was expected.
    #[error("digest mismatch: expected {expected}, found {found}")]
    Mismatch {
        /// The digest the content should have had.
        expected: Digest,
        /// The digest the content had.
        found: Digest,
    },
    /// The content had another length than the descriptor said.
    #[error("size mismatch for {digest}: expected {expected} bytes, found {found}")]
    Size {
        /// The blob concerned.
        digest: Digest,
        /// The size the descriptor declared.
        expected: u64,
        /// The size actually read.
        found: u64,
    },
}

/// A validated content digest (`sha256:<64 lower-case hex>`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// The sha256 digest of a byte slice, for small things held in memory (manifests, configs).
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        let mut h = Hasher::new(Algorithm::Sha256);
        h.update(bytes);
        h.finish()
    }

    /// The algorithm part.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The hex part, lower case.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// `sha256-<hex>`: the form imgpkg uses in tags.
    pub fn tag_form(&self) -> String {
        format!("{}-{}", self.algorithm.name(), self.hex)
    }

    /// Fails with [`DigestError::Mismatch`] unless `found` equals `self`.
    pub fn expect(&self, found: &Digest) -> Result<(), DigestError> {
        if self == found {
            Ok(())
        } else {
            Err(DigestError::Mismatch {
                expected: self.clone(),
                found: found.clone(),
            })
        }
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| DigestError::Invalid {
            text: text.chars().take(200).collect(),
            reason,
        };
        let (algo, hex) = text
            .split_once(':')
            .ok_or_else(|| invalid("expected <algorithm>:<hex>"))?;
        let algorithm = match algo {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => return Err(invalid("unsupported algorithm (sha256 or sha512)")),
        };
        if hex.len() != algorithm.hex_len() {
            return Err(invalid("wrong hex length for algorithm"));
        }
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid("hex must be lower-case 0-9a-f"));
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_owned(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An incremental hash for either algorithm.
#[derive(Clone)]
pub enum Hasher {
    /// sha256 state.
    Sha256(sha2::Sha256),
    /// sha512 state.
    Sha512(sha2::Sha512),
}

impl Hasher {
    /// A fresh hasher for `algorithm`.
    pub fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest {
                algorithm: Algorithm::Sha256,
                hex: hex::encode(h.finalize()),
            },
            Hasher::Sha512(h) => Digest {
                algorithm: Algorithm::Sha512,
                hex: hex::encode(h.finalize()),
            },
        }
    }
}

/// Checks a stream of chunks against an expected digest and size as the chunks pass.
///
/// Shared by the sync reader/writer below and by async code that moves `Bytes` chunks.
pub struct Verifier {
    expected: Digest,
    expected_size: Option<u64>,
    hasher: Hasher,
    seen: u64,
}

impl Verifier {
    /// Starts checking content that must hash to `expected` (and be `expected_size` long, if given).
    pub fn new(expected: Digest, expected_size: Option<u64>) -> Verifier {
        Verifier {
            hasher: Hasher::new(expected.algorithm()),
            expected,
            expected_size,
            seen: 0,
        }
    }

    /// Feeds one chunk; fails early when the content is already longer than declared.
    pub fn update(&mut self, chunk: &[u8]) -> Result<(), DigestError> {
        self.seen += chunk.len() as u64;
        if let Some(size) = self.expected_size
            && self.seen > size
        {
            return Err(DigestError::Size {
                digest: self.expected.clone(),
                expected: size,
                found: self.seen,
            });
        }
        self.hasher.update(chunk);
        Ok(())
    }

    /// Bytes seen so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// The digest being checked for.
    pub fn expected(&self) -> &Digest {
        &self.expected
    }

    /// Ends the stream: size and digest must both match.
    pub fn finish(self) -> Result<(), DigestError> {
        if let Some(size) = self.expected_size
            && self.seen != size
        {
            return Err(DigestError::Size {
                digest: self.expected,
                expected: size,
                found: self.seen,
            });
        }
        let found = self.hasher.finish();
        self.expected.expect(&found)
    }
}

fn invalid_data(e: DigestError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// A reader that fails with `InvalidData` at EOF (or earlier, on overlength) unless the bytes matched.
pub struct VerifyingReader<R> {
    inner: R,
    verifier: Option<Verifier>,
}

impl<R: Read> VerifyingReader<R> {
    /// Wraps `inner`, which must yield exactly the content of `expected`.
    pub fn new(inner: R, expected: Digest, expected_size: Option<u64>) -> Self {
        VerifyingReader {
            inner,
            verifier: Some(Verifier::new(expected, expected_size)),
        }
    }
}

impl<R> VerifyingReader<R> {
    /// The unread source and the verifier, for a caller that hashes on another thread.
    pub fn into_parts(self) -> (R, Option<Verifier>) {
        (self.inner, self.verifier)
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 {
            if !buf.is_empty()
                && let Some(v) = self.verifier.take()
            {
                v.finish().map_err(invalid_data)?;
            }
            return Ok(0);
        }
        if let Some(v) = self.verifier.as_mut() {
            v.update(&buf[..n]).map_err(invalid_data)?;
        }
        Ok(n)
    }
}

/// A writer that hashes what passes through; [`VerifyingWriter::finish`] checks the result.
pub struct VerifyingWriter<W> {
    inner: W,
    verifier: Verifier,
}

impl<W: Write> VerifyingWriter<W> {
    /// Wraps `inner`; the bytes written must be the content of `expected`.
    pub fn new(inner: W, expected: Digest, expected_size: Option<u64>) -> Self {
        VerifyingWriter {
            inner,
            verifier: Verifier::new(expected, expected_size),
        }
    }

    /// Checks digest and size, and hands back the inner writer.
    pub fn finish(self) -> Result<W, DigestError> {
        self.verifier.finish()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for VerifyingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.verifier.update(&buf[..n]).map_err(invalid_data)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_prints() {
        let d: Digest = EMPTY.parse().unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(d, Digest::sha256_of(b""));
        assert_eq!(d.tag_form(), EMPTY.replace(':', "-"));
    }

    #[test]
    fn rejects_bad_digests() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            &EMPTY.to_uppercase(),
            &EMPTY.replace("sha256", "SHA256"),
            &EMPTY[..EMPTY.len() - 1],
            &format!("{EMPTY}0"),
            "sha256:zz0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad:?} accepted");
        }
        let sha512 = format!("sha512:{}", "a".repeat(128));
        assert_eq!(
            sha512.parse::<Digest>().unwrap().algorithm(),
            Algorithm::Sha512
        );
    }

    #[test]
    fn verifying_reader_accepts_good_and_refuses_bad() {
        let data = b"hello world".to_vec();
        let d = Digest::sha256_of(&data);
        let mut out = Vec::new();
        VerifyingReader::new(&data[..], d.clone(), Some(11))
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);

        let err = VerifyingReader::new(&b"hello World"[..], d.clone(), None)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("digest mismatch"), "{err}");

        let err = VerifyingReader::new(&data[..], d.clone(), Some(5))
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(err.to_string().contains("size mismatch"), "{err}");
    }

    #[test]
    fn verifying_writer_checks_on_finish() {
        let d = Digest::sha256_of(b"abc");
        let mut w = VerifyingWriter::new(Vec::new(), d.clone(), Some(3));
        w.write_all(b"abc").unwrap();
        assert_eq!(w.finish().unwrap(), b"abc");

        let mut w = VerifyingWriter::new(Vec::new(), d, Some(3));
        w.write_all(b"abd").unwrap();
        assert!(matches!(w.finish(), Err(DigestError::Mismatch { .. })));
    }
}
