//! Bodies of airlift's fuzz targets, shared by `cargo fuzz` (the `fuzz_targets/` binaries) and
//! by the stable test `tests/it/fuzz_replay.rs`, which replays the committed corpus and every
//! regression input through exactly the same code in `make test`.
//!
//! Each function takes arbitrary bytes, feeds them to one parser of untrusted input and checks
//! invariants that must hold whatever the input: no panic, no unbounded allocation, and
//! agreement between independent readers (what one accepts the other must accept too).

use std::io::Read;
use std::path::{Path, PathBuf};

use airlift::archive::{ArchiveError, ArchiveReader, BlobIndex, Manifest, VerifyOptions, verify};
use airlift::author::lock::ImagesLock;
use airlift::author::scan;
use airlift::oci::RawManifest;
use airlift::reference::Reference;
use airlift::yaml::{self, Limits};

/// A scratch file unique to this process and thread (the replay test runs threads in parallel).
fn scratch_file() -> PathBuf {
    let dir = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let thread = format!("{:?}", std::thread::current().id());
    let thread: String = thread.chars().filter(char::is_ascii_digit).collect();
    dir.join(format!("airlift-fuzz-{}-{thread}.tar", std::process::id()))
}

/// Reads an archive with the streaming reader; `Ok(true)` if every entry read and verified.
fn stream_pass(path: &Path) -> bool {
    let Ok(mut reader) = ArchiveReader::open(path) else {
        return false;
    };
    let mut clean = true;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.next_blob() {
            Ok(None) => break,
            Ok(Some(mut blob)) => {
                let (size, mut total) = (blob.size, 0u64);
                loop {
                    match blob.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => total += n as u64,
                        Err(_) => {
                            clean = false;
                            break;
                        }
                    }
                }
                assert!(
                    total <= size,
                    "reader returned more bytes than the entry holds"
                );
            }
            Err(e) if e.is_fatal() => return false,
            Err(_) => clean = false,
        }
    }
    clean && reader.missing().is_empty()
}

/// The archive reader: tar container, airlift manifest, `index.json`, blob table, blobs.
///
/// The bytes are also parsed directly as an airlift manifest and as an OCI manifest/index,
/// so that the JSON parsers see inputs the tar layer would otherwise reject first.
pub fn archive_reader(data: &[u8]) {
    let _ = Manifest::parse(data);
    let _ = RawManifest::from_bytes(bytes_of(data), None);
    let _ = RawManifest::from_bytes(
        bytes_of(data),
        Some("application/vnd.oci.image.index.v1+json"),
    );

    let path = scratch_file();
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let streamed_ok = stream_pass(&path);
    let indexed = BlobIndex::build(&path);
    let report = verify(
        &path,
        &VerifyOptions {
            allow_unsigned: true,
            ..VerifyOptions::default()
        },
    );
    // Random access only on what the index found; every read still verifies.
    if let Ok(index) = &indexed
        && let Ok(mut reader) = ArchiveReader::open(&path)
    {
        for b in reader_digests(&mut reader) {
            if let Ok(mut r) = index.open_blob(&b) {
                let _ = std::io::copy(&mut r, &mut std::io::sink());
            }
        }
    }
    let _ = std::fs::remove_file(&path);
    // The full verifier and the streaming reader must agree on a clean archive.
    if report.ok {
        assert!(
            streamed_ok,
            "verify accepted an archive the streaming reader rejects"
        );
        // (BlobIndex only reads uncompressed archives.)
        assert!(
            matches!(indexed, Ok(_) | Err(ArchiveError::NotSeekable(_))),
            "verify accepted an archive BlobIndex rejects: {:?}",
            indexed.err()
        );
    }
}

/// Digests listed in the manifest of an opened archive.
fn reader_digests(reader: &mut ArchiveReader) -> Vec<airlift::digest::Digest> {
    reader
        .header()
        .manifest
        .blobs
        .iter()
        .map(|b| b.digest.clone())
        .collect()
}

fn bytes_of(data: &[u8]) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(data)
}

/// Image reference parsing: whatever parses prints back to text that parses to the same.
pub fn reference(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = Reference::parse(text) {
        let shown = r.to_string();
        let again = Reference::parse(&shown)
            .unwrap_or_else(|e| panic!("{text:?} parsed, its display {shown:?} does not: {e}"));
        assert_eq!(again.to_string(), shown, "display is not a fixed point");
        assert_eq!(again.registry(), r.registry());
        assert_eq!(again.repository(), r.repository());
        assert_eq!(again.tag(), r.tag());
        assert_eq!(again.digest(), r.digest());
    }
}

/// `.imgpkg/images.yml` parsing: a lock that parses serialises to a lock that parses equal.
pub fn lock(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let limits = Limits::default();
    if let Ok(l) = ImagesLock::parse(text, Path::new("fuzz.yml"), &limits) {
        let out = l.to_yaml();
        let again = ImagesLock::parse(&out, Path::new("fuzz-out.yml"), &limits)
            .unwrap_or_else(|e| panic!("re-serialised lock does not parse: {e}\n{out}"));
        assert_eq!(again, l, "lock changed in a round trip");
    }
}

/// The bounded YAML parser and kbld's image-key scanner.
pub fn yaml_scan(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let limits = Limits::default();
    if let Ok(docs) = yaml::parse_documents(text, Path::new("fuzz.yml"), &limits) {
        let extra = vec!["img".to_owned()];
        for d in &docs {
            let _ = scan::refs_in(d, &extra);
        }
        let _ = yaml::to_yaml_stream(&docs);
    }
}
