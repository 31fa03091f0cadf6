//! Replays the committed fuzz corpus and every fuzz regression input through the fuzz targets'
//! own code (`tests/fuzz/src/lib.rs`) on the stable toolchain, so that `make test` keeps every
//! input the fuzzers ever found interesting (and every crash they found) passing.

use std::path::{Path, PathBuf};

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod targets;

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz");
    let mut out = Vec::new();
    for dir in [
        root.join("corpus").join(target),
        root.join("regressions").join(target),
    ] {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            if e.path().is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

fn replay(target: &str, f: fn(&[u8])) {
    let files = inputs(target);
    assert!(
        !files.is_empty(),
        "no corpus committed for fuzz target {target}"
    );
    for p in &files {
        let data = std::fs::read(p).unwrap();
        let r = std::panic::catch_unwind(|| f(&data));
        assert!(
            r.is_ok(),
            "fuzz input {} fails target {target}",
            p.display()
        );
    }
}

#[test]
fn archive_reader_corpus() {
    replay("archive_reader", targets::archive_reader);
}

#[test]
fn reference_corpus() {
    replay("reference", targets::reference);
}

#[test]
fn lock_corpus() {
    replay("lock", targets::lock);
}

#[test]
fn yaml_scan_corpus() {
    replay("yaml_scan", targets::yaml_scan);
}

/// Regenerates the archive seeds (`cargo test --release --test it -- fuzz_replay:: --ignored`): a tiny
/// one-image archive, plain, zstd and signed, plus its airlift manifest and `index.json`.
#[test]
#[ignore = "writes the committed seed corpus; run by hand"]
fn write_archive_seeds() {
    use airlift::archive::{
        ArchiveWriter, BlobTableBuilder, IndexEntry, Manifest, Root, RootKind, WriteOptions,
        oci_index_json, sign_manifest,
    };
    use airlift::digest::Digest;
    use airlift::oci::RawManifest;

    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = b"layer bytes for the fuzz seed".to_vec();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": Digest::sha256_of(config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": Digest::sha256_of(&layer), "size": layer.len()}],
    }))
    .unwrap();
    let raw = RawManifest::from_bytes(bytes::Bytes::from(manifest.clone()), None).unwrap();
    let mut table = BlobTableBuilder::new();
    table.add_manifest(&raw).unwrap();
    let root = Root {
        kind: RootKind::Image,
        reference: "registry.example/app:1".into(),
        tag: Some("1".into()),
        digest: raw.digest.clone(),
        media_type: raw.media_type.clone(),
    };
    let index_json = oci_index_json(&[IndexEntry {
        descriptor: raw.descriptor(),
        ref_name: root.reference.clone(),
    }])
    .unwrap();
    let mut m = Manifest::new(1_700_000_000, "airlift fuzz seed", &index_json);
    m.roots = vec![root];
    m.blobs = table.finish();
    let bytes = m.to_canonical_bytes().unwrap();
    let blobs: std::collections::HashMap<Digest, Vec<u8>> = [
        (raw.digest.clone(), manifest.clone()),
        (Digest::sha256_of(config), config.to_vec()),
        (Digest::sha256_of(&layer), layer.clone()),
    ]
    .into_iter()
    .collect();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/corpus/archive_reader");
    std::fs::create_dir_all(&dir).unwrap();
    let key = airlift::keys::generate().unwrap();
    for (name, zstd, signers) in [
        ("plain.tar", false, vec![]),
        ("zstd.tar.zst", true, vec![]),
        ("signed.tar", false, vec![key]),
    ] {
        let sigs = sign_manifest(&bytes, &signers);
        let path = dir.join(name);
        let mut w = ArchiveWriter::create(
            &path,
            WriteOptions {
                zstd,
                mtime: 1_700_000_000,
            },
        )
        .unwrap();
        w.write_header(&bytes, &sigs, &index_json).unwrap();
        for b in m.blob_order() {
            w.write_blob(&b.digest, b.size, &blobs[&b.digest][..])
                .unwrap();
        }
        w.finish().unwrap();
    }
    std::fs::write(dir.join("airlift-manifest.json"), &bytes).unwrap();
    std::fs::write(dir.join("index.json"), &index_json).unwrap();
    std::fs::write(dir.join("image-manifest.json"), &manifest).unwrap();
}
