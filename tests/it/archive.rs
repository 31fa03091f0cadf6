//! Archive format v1 through the public API: write, read, verify, determinism, openssl
//! interoperability of keys and signatures, and a tamper matrix.

use crate::support;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use airlift::archive::manifest::{BlobTableBuilder, IndexEntry, Role, Root, RootKind};
use airlift::archive::verify::{FailureKind, Report};
use airlift::archive::{
    ArchiveError, ArchiveReader, ArchiveWriter, BlobIndex, BundleLock, LockedImage, Manifest,
    VerifyOptions, WriteOptions, oci_index_json, sign_manifest, verify,
};
use airlift::digest::Digest;
use airlift::keys::{self, KeyError, SigningKey};
use airlift::oci::{Descriptor, RawManifest, media_type};
use bytes::Bytes;
use rand::{RngExt, SeedableRng};

const MTIME: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z

/// Synthetic content: blobs by digest, the airlift manifest, index.json.
struct Fixture {
    blobs: HashMap<Digest, Vec<u8>>,
    manifest: Manifest,
    index_json: Vec<u8>,
    layer: Digest,
    config: Digest,
    image_manifest: Digest,
}

fn descriptor(mt: &str, bytes: &[u8]) -> Descriptor {
    Descriptor {
        media_type: mt.to_owned(),
        digest: Digest::sha256_of(bytes),
        size: bytes.len() as u64,
        platform: None,
        annotations: None,
    }
}

/// A small valid OCI image: config + `layers` random layers. Returns the manifest bytes.
fn make_image(
    rng: &mut rand_chacha::ChaCha8Rng,
    arch: &str,
    layers: usize,
    blobs: &mut HashMap<Digest, Vec<u8>>,
) -> Vec<u8> {
    let mut layer_descs = Vec::new();
    for _ in 0..layers {
        let len = rng.random_range(100..5000);
        let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        layer_descs.push(descriptor(media_type::OCI_LAYER_GZIP, &data));
        blobs.insert(Digest::sha256_of(&data), data);
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch, "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
    }))
    .unwrap();
    let config_desc = descriptor(media_type::OCI_CONFIG, &config);
    blobs.insert(Digest::sha256_of(&config), config);
    let manifest = serde_json::to_vec_pretty(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_MANIFEST,
        "config": config_desc,
        "layers": layer_descs,
    }))
    .unwrap();
    blobs.insert(Digest::sha256_of(&manifest), manifest.clone());
    manifest
}

/// Roots: a single-platform image, a two-platform index, and a bundle whose lock names the
/// image and one platform image.
fn fixture() -> Fixture {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut blobs = HashMap::new();
    let img = make_image(&mut rng, "amd64", 2, &mut blobs);
    let amd = make_image(&mut rng, "amd64", 1, &mut blobs);
    let arm = make_image(&mut rng, "arm64", 1, &mut blobs);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "manifests": [
            {"mediaType": media_type::OCI_MANIFEST, "digest": Digest::sha256_of(&amd), "size": amd.len(),
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": media_type::OCI_MANIFEST, "digest": Digest::sha256_of(&arm), "size": arm.len(),
             "platform": {"architecture": "arm64", "os": "linux"}},
        ],
    }))
    .unwrap();
    blobs.insert(Digest::sha256_of(&index), index.clone());
    let bundle = make_image(&mut rng, "amd64", 1, &mut blobs);

    let raws: Vec<RawManifest> = [&img, &amd, &arm, &index, &bundle]
        .iter()
        .map(|b| RawManifest::from_bytes(Bytes::from((*b).clone()), None).unwrap())
        .collect();
    let mut table = BlobTableBuilder::new();
    for m in &raws {
        table.add_manifest(m).unwrap();
    }
    let img_ref = format!("registry.example/app@{}", raws[0].digest);
    let arm_ref = format!("registry.example/multi@{}", raws[2].digest);
    let roots = vec![
        Root {
            kind: RootKind::Image,
            reference: "registry.example/app:1.0".into(),
            tag: Some("1.0".into()),
            digest: raws[0].digest.clone(),
            media_type: raws[0].media_type.clone(),
        },
        Root {
            kind: RootKind::Image,
            reference: "registry.example/multi:latest".into(),
            tag: Some("latest".into()),
            digest: raws[3].digest.clone(),
            media_type: raws[3].media_type.clone(),
        },
        Root {
            kind: RootKind::Bundle,
            reference: format!("registry.example/bundle@{}", raws[4].digest),
            tag: None,
            digest: raws[4].digest.clone(),
            media_type: raws[4].media_type.clone(),
        },
    ];
    let mut entries: Vec<IndexEntry> = roots
        .iter()
        .zip([&raws[0], &raws[3], &raws[4]])
        .map(|(r, m)| IndexEntry {
            descriptor: m.descriptor(),
            ref_name: r.reference.clone(),
        })
        .collect();
    entries.push(IndexEntry {
        descriptor: raws[0].descriptor(),
        ref_name: img_ref.clone(),
    });
    entries.push(IndexEntry {
        descriptor: raws[2].descriptor(),
        ref_name: arm_ref.clone(),
    });
    let index_json = oci_index_json(&entries).unwrap();
    let mut manifest = Manifest::new(MTIME, "airlift test", &index_json);
    manifest.roots = roots;
    manifest.bundles = vec![BundleLock {
        digest: raws[4].digest.clone(),
        images: vec![
            LockedImage {
                image: img_ref,
                annotations: BTreeMap::from([("kbld.carvel.dev/id".into(), "app".into())]),
                bundle: false,
            },
            LockedImage {
                image: arm_ref,
                annotations: BTreeMap::new(),
                bundle: false,
            },
        ],
    }];
    manifest.blobs = table.finish();
    let first_layer = match &raws[0].parsed {
        airlift::oci::Parsed::Image { layers, config } => {
            (layers[0].digest.clone(), config.digest.clone())
        }
        _ => unreachable!(),
    };
    Fixture {
        blobs,
        manifest,
        index_json,
        layer: first_layer.0,
        config: first_layer.1,
        image_manifest: raws[0].digest.clone(),
    }
}

fn write_archive(fx: &Fixture, path: &Path, zstd: bool, signers: &[SigningKey]) -> PathBuf {
    let bytes = fx.manifest.to_canonical_bytes().unwrap();
    let sigs = sign_manifest(&bytes, signers);
    let mut w = ArchiveWriter::create(path, WriteOptions { zstd, mtime: MTIME }).unwrap();
    w.write_header(&bytes, &sigs, &fx.index_json).unwrap();
    for b in fx.manifest.blob_order() {
        w.write_blob(&b.digest, b.size, &fx.blobs[&b.digest][..])
            .unwrap();
    }
    w.finish().unwrap()
}

fn opts(keys: &[&SigningKey]) -> VerifyOptions {
    VerifyOptions {
        trusted: keys.iter().map(|k| k.verifying_key()).collect(),
        ..VerifyOptions::default()
    }
}

fn assert_ok(r: &Report) {
    assert!(r.ok, "{}", serde_json::to_string_pretty(r).unwrap());
    assert!(r.failures.is_empty());
    assert!(r.checks.iter().all(|c| c.ok), "{:?}", r.checks);
}

#[test]
fn round_trip_plain_and_zstd() {
    let fx = fixture();
    let key = keys::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for zstd in [false, true] {
        let path = write_archive(
            &fx,
            &dir.path().join(format!("a-{zstd}.tar")),
            zstd,
            std::slice::from_ref(&key),
        );
        let head = fs::read(&path).unwrap();
        assert_eq!(head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]), zstd);

        let mut reader = ArchiveReader::open(&path).unwrap();
        let h = reader.header();
        assert_eq!(h.compressed, zstd);
        assert_eq!(h.manifest, fx.manifest);
        assert_eq!(h.index_json, fx.index_json);
        assert_eq!(h.signatures.len(), 1);
        assert_eq!(
            h.check_signatures(&[key.verifying_key()], 1).unwrap().len(),
            1
        );
        let mut got = Vec::new();
        while let Some(mut b) = reader.next_blob().unwrap() {
            let mut data = Vec::new();
            b.read_to_end(&mut data).unwrap();
            assert_eq!(data, fx.blobs[&b.digest], "{}", b.digest);
            got.push((b.role, b.digest.clone()));
        }
        assert!(reader.missing().is_empty());
        let expected: Vec<(Role, Digest)> = fx
            .manifest
            .blob_order()
            .iter()
            .map(|b| (b.role, b.digest.clone()))
            .collect();
        assert_eq!(got, expected);
        assert_eq!(got.len(), fx.blobs.len());
        // Entry groups: manifests/indexes, then configs, then layers.
        let groups: Vec<u8> = got.iter().map(|(r, _)| r.group()).collect();
        assert!(groups.windows(2).all(|w| w[0] <= w[1]), "{groups:?}");

        let report = verify(&path, &opts(&[&key]));
        assert_ok(&report);
        assert_eq!(report.blobs_checked as usize, fx.blobs.len());
        assert_eq!(report.compressed, Some(zstd));
    }
}

#[test]
fn random_access_reads_blobs_concurrently() {
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    let path = write_archive(&fx, &dir.path().join("a.tar"), false, &[]);
    let index = BlobIndex::build(&path).unwrap();
    assert_eq!(index.len(), fx.blobs.len());
    std::thread::scope(|s| {
        for (d, data) in &fx.blobs {
            let index = &index;
            s.spawn(move || {
                let mut got = Vec::new();
                index.open_blob(d).unwrap().read_to_end(&mut got).unwrap();
                assert_eq!(&got, data);
            });
        }
    });
    let zpath = write_archive(&fx, &dir.path().join("a.tar.zst"), true, &[]);
    assert!(matches!(
        BlobIndex::build(&zpath),
        Err(ArchiveError::NotSeekable(_))
    ));
}

#[test]
fn output_is_deterministic() {
    let fx = fixture();
    let key = keys::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for zstd in [false, true] {
        let a = write_archive(
            &fx,
            &dir.path().join(format!("a{zstd}")),
            zstd,
            std::slice::from_ref(&key),
        );
        let b = write_archive(
            &fx,
            &dir.path().join(format!("b{zstd}")),
            zstd,
            std::slice::from_ref(&key),
        );
        let (a, b) = (fs::read(a).unwrap(), fs::read(b).unwrap());
        assert!(!a.is_empty());
        assert_eq!(a, b, "zstd={zstd}");
    }
    // The plain archive is a tar GNU tar reads, with the documented header fields.
    let plain = dir.path().join("afalse");
    let out = Command::new("tar")
        .args(["--numeric-owner", "-tvf"])
        .arg(&plain)
        .output()
        .unwrap();
    assert!(out.status.success());
    let listing = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 3 + 1 + fx.blobs.len());
    assert!(
        lines[0].starts_with("-rw-r--r-- 0/0") && lines[0].ends_with(" oci-layout"),
        "{}",
        lines[0]
    );
    assert!(lines[1].ends_with(" airlift/manifest.json"));
    assert!(
        lines[2].starts_with("-rw-r--r-- 0/0") && lines[2].contains("2026-01-01"),
        "{}",
        lines[2]
    );
    assert!(lines[3].ends_with(" index.json"));
}

fn openssl(args: &[&str]) -> std::process::Output {
    Command::new("openssl").args(args).output().unwrap()
}

#[test]
fn openssl_verifies_airlift_signatures_and_fingerprints() {
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("signer");
    let (key, key_path, pub_path) = keys::write_keypair(&base).unwrap();
    let path = write_archive(
        &fx,
        &dir.path().join("a.tar"),
        false,
        std::slice::from_ref(&key),
    );
    let reader = ArchiveReader::open(&path).unwrap();
    let h = reader.header();
    let (fp, sig) = &h.signatures[0];
    let m = dir.path().join("manifest.json");
    let s = dir.path().join("sig");
    fs::write(&m, &h.manifest_bytes).unwrap();
    fs::write(&s, sig).unwrap();
    let p = pub_path.to_str().unwrap();
    let ok = openssl(&[
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        p,
        "-rawin",
        "-in",
        m.to_str().unwrap(),
        "-sigfile",
        s.to_str().unwrap(),
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let mut tampered = h.manifest_bytes.clone();
    let at = tampered.len() / 2;
    tampered[at] ^= 1;
    fs::write(&m, &tampered).unwrap();
    let bad = openssl(&[
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        p,
        "-rawin",
        "-in",
        m.to_str().unwrap(),
        "-sigfile",
        s.to_str().unwrap(),
    ]);
    assert!(!bad.status.success());

    // Fingerprint = sha256 of the SPKI DER, as openssl computes it.
    let der = openssl(&["pkey", "-pubin", "-in", p, "-outform", "DER"]);
    assert!(der.status.success());
    let expected = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&der.stdout));
    assert_eq!(*fp, expected);
    assert_eq!(keys::fingerprint(&key.verifying_key()), expected);

    // keygen files: 0600 private key, both readable by openssl, same public key.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&key_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let derived = openssl(&["pkey", "-in", key_path.to_str().unwrap(), "-pubout"]);
    assert!(
        derived.status.success(),
        "{}",
        String::from_utf8_lossy(&derived.stderr)
    );
    assert_eq!(derived.stdout, fs::read(&pub_path).unwrap());
    // No overwrite of an existing key.
    assert!(matches!(
        keys::write_keypair(&base),
        Err(KeyError::Io { .. })
    ));
}

#[test]
fn openssl_made_keys_load_and_interoperate() {
    let dir = tempfile::tempdir().unwrap();
    let k = dir.path().join("k.pem");
    let p = dir.path().join("p.pem");
    assert!(
        openssl(&[
            "genpkey",
            "-algorithm",
            "ed25519",
            "-out",
            k.to_str().unwrap()
        ])
        .status
        .success()
    );
    assert!(
        openssl(&[
            "pkey",
            "-in",
            k.to_str().unwrap(),
            "-pubout",
            "-out",
            p.to_str().unwrap()
        ])
        .status
        .success()
    );
    let sk = keys::load_signing_key(&k).unwrap();
    let pk = keys::load_public_key(&p).unwrap();
    assert_eq!(sk.verifying_key(), pk);
    let sig = keys::sign(&sk, b"hello");
    assert!(keys::verify(&pk, b"hello", &sig));
    // openssl-made signature, checked by airlift.
    let msg = dir.path().join("msg");
    let sigf = dir.path().join("msg.sig");
    fs::write(&msg, b"airlift").unwrap();
    assert!(
        openssl(&[
            "pkeyutl",
            "-sign",
            "-inkey",
            k.to_str().unwrap(),
            "-rawin",
            "-in",
            msg.to_str().unwrap(),
            "-out",
            sigf.to_str().unwrap()
        ])
        .status
        .success()
    );
    let sig = keys::load_signature(&sigf).unwrap();
    assert!(keys::verify(&pk, b"airlift", &sig));
    assert!(!keys::verify(&pk, b"airlifT", &sig));
}

#[test]
fn key_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ec = dir.path().join("ec.pem");
    assert!(
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            ec.to_str().unwrap()
        ])
        .status
        .success()
    );
    let e = keys::load_signing_key(&ec).unwrap_err();
    assert!(matches!(e, KeyError::NotEd25519 { .. }), "{e}");
    assert!(
        e.to_string().contains("ec.pem") && e.to_string().contains("EC"),
        "{e}"
    );
    let ecpub = dir.path().join("ecpub.pem");
    assert!(
        openssl(&[
            "pkey",
            "-in",
            ec.to_str().unwrap(),
            "-pubout",
            "-out",
            ecpub.to_str().unwrap()
        ])
        .status
        .success()
    );
    let e = keys::load_public_key(&ecpub).unwrap_err();
    assert!(matches!(e, KeyError::NotEd25519 { .. }), "{e}");

    let junk = dir.path().join("junk.pem");
    fs::write(&junk, "not a key\n").unwrap();
    let e = keys::load_signing_key(&junk).unwrap_err();
    assert!(
        matches!(e, KeyError::Malformed { .. }) && e.to_string().contains("junk.pem"),
        "{e}"
    );
    // A public key where a private key is expected.
    let k = dir.path().join("k");
    let (_, _, pubp) = keys::write_keypair(&k).unwrap();
    let e = keys::load_signing_key(&pubp).unwrap_err();
    assert!(matches!(e, KeyError::Malformed { .. }), "{e}");

    let short = dir.path().join("short.sig");
    fs::write(&short, [0u8; 63]).unwrap();
    let e = keys::load_signature(&short).unwrap_err();
    assert!(
        matches!(e, KeyError::SignatureLength { found: 63, .. })
            && e.to_string().contains("short.sig"),
        "{e}"
    );
}

// ---- tamper matrix ----------------------------------------------------------------------

/// One tar entry for rebuilding archives by hand.
#[derive(Clone)]
struct Entry {
    name: Vec<u8>,
    kind: tar::EntryType,
    data: Vec<u8>,
}

impl Entry {
    /// A regular-file entry, the kind most tampering cases add.
    fn regular(name: Vec<u8>, data: &[u8]) -> Entry {
        Entry {
            name,
            kind: tar::EntryType::Regular,
            data: data.to_vec(),
        }
    }
}

fn entries_of(path: &Path) -> Vec<Entry> {
    let mut a = tar::Archive::new(fs::File::open(path).unwrap());
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path_bytes().to_vec();
            let kind = e.header().entry_type();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            Entry { name, kind, data }
        })
        .collect()
}

fn rebuild(path: &Path, entries: &[Entry]) {
    let mut out = Vec::new();
    for e in entries {
        let mut h = tar::Header::new_ustar();
        h.as_old_mut().name[..e.name.len()].copy_from_slice(&e.name);
        h.set_size(e.data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(MTIME);
        h.set_entry_type(e.kind);
        if e.kind == tar::EntryType::Symlink {
            h.set_link_name("/etc/passwd").unwrap();
        }
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&e.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    fs::File::create(path).unwrap().write_all(&out).unwrap();
}

fn blob_name(d: &Digest) -> Vec<u8> {
    format!("blobs/sha256/{}", d.hex()).into_bytes()
}

fn flip(entries: &mut [Entry], name: &[u8]) {
    let e = entries.iter_mut().find(|e| e.name == name).unwrap();
    let at = e.data.len() / 2;
    e.data[at] ^= 0x01;
}

fn expect_failure(r: &Report, kind: FailureKind, mention: &str) {
    assert!(!r.ok);
    let hit = r.failures.iter().any(|f| {
        f.kind == kind
            && (f.message.contains(mention)
                || f.entry.as_deref().is_some_and(|e| e.contains(mention))
                || f.digest
                    .as_ref()
                    .is_some_and(|d| d.to_string().contains(mention)))
    });
    assert!(
        hit,
        "no {kind:?} failure naming {mention:?}: {}",
        serde_json::to_string_pretty(&r.failures).unwrap()
    );
}

#[test]
fn tamper_matrix() {
    let fx = fixture();
    let key = keys::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let good = write_archive(
        &fx,
        &dir.path().join("good.tar"),
        false,
        std::slice::from_ref(&key),
    );
    let base = entries_of(&good);
    assert_eq!(base.len(), 4 + fx.blobs.len());
    let o = opts(&[&key]);
    // Sanity: rebuilding without changes by the test's own tar code verifies.
    let same = dir.path().join("same.tar");
    rebuild(&same, &base);
    assert_ok(&verify(&same, &o));

    let case = |name: &str, f: &dyn Fn(&mut Vec<Entry>)| -> Report {
        let mut e = base.clone();
        f(&mut e);
        let p = dir.path().join(format!("{name}.tar"));
        rebuild(&p, &e);
        verify(&p, &o)
    };
    let layer = fx.layer.clone();
    let r = case("layer", &|e| flip(e, &blob_name(&layer)));
    expect_failure(&r, FailureKind::DigestMismatch, &layer.to_string());
    // Only that blob fails; everything else was still checked.
    assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
    assert_eq!(r.blobs_checked as usize, fx.blobs.len());

    let config = fx.config.clone();
    let r = case("config", &|e| flip(e, &blob_name(&config)));
    expect_failure(&r, FailureKind::DigestMismatch, &config.to_string());

    let im = fx.image_manifest.clone();
    let r = case("manifest", &|e| flip(e, &blob_name(&im)));
    expect_failure(&r, FailureKind::DigestMismatch, &im.to_string());

    let r = case("index", &|e| flip(e, b"index.json"));
    expect_failure(&r, FailureKind::InvalidContent, "index.json");

    let r = case("airlift-manifest", &|e| {
        let m = e
            .iter_mut()
            .find(|e| e.name == b"airlift/manifest.json")
            .unwrap();
        let s = String::from_utf8(m.data.clone())
            .unwrap()
            .replace("airlift test", "airlift tesT");
        m.data = s.into_bytes();
    });
    expect_failure(&r, FailureKind::SignatureInvalid, "airlift/signatures/");
    expect_failure(&r, FailureKind::NotEnoughSignatures, "0 valid");

    let r = case("signature", &|e| {
        let s = e
            .iter_mut()
            .find(|e| e.name.starts_with(b"airlift/signatures/"))
            .unwrap();
        s.data[0] ^= 0x80;
    });
    expect_failure(
        &r,
        FailureKind::SignatureInvalid,
        &keys::fingerprint(&key.verifying_key()),
    );

    let r = case("removed", &|e| e.retain(|x| x.name != blob_name(&layer)));
    expect_failure(&r, FailureKind::MissingBlob, &layer.to_string());

    let extra = Digest::sha256_of(b"extra");
    let r = case("unlisted", &|e| {
        e.push(Entry::regular(blob_name(&extra), b"extra"))
    });
    expect_failure(&r, FailureKind::UnlistedEntry, &extra.hex()[..16]);

    let r = case("stray", &|e| {
        e.push(Entry::regular(b"README".to_vec(), b"hi"))
    });
    expect_failure(&r, FailureKind::EntryName, "README");

    let r = case("dotdot", &|e| {
        e.push(Entry::regular(b"../x".to_vec(), b"x"))
    });
    expect_failure(&r, FailureKind::EntryName, "../x");

    let r = case("absolute", &|e| {
        e.push(Entry::regular(b"/etc/x".to_vec(), b"x"))
    });
    expect_failure(&r, FailureKind::EntryName, "/etc/x");

    let r = case("symlink", &|e| {
        e.push(Entry {
            name: blob_name(&extra),
            kind: tar::EntryType::Symlink,
            data: Vec::new(),
        })
    });
    expect_failure(&r, FailureKind::EntryType, "symbolic link");

    let r = case("duplicate", &|e| {
        let dup = e
            .iter()
            .find(|x| x.name == blob_name(&layer))
            .unwrap()
            .clone();
        e.push(dup);
    });
    expect_failure(&r, FailureKind::DuplicateEntry, &layer.hex()[..16]);

    // Leading entries out of order are fatal.
    let r = case("order", &|e| e.swap(0, 1));
    expect_failure(&r, FailureKind::EntryOrder, "airlift/manifest.json");

    // Untrusted key; unsigned without and with allow_unsigned.
    let other = keys::generate().unwrap();
    let r = verify(&good, &opts(&[&other]));
    expect_failure(&r, FailureKind::NotEnoughSignatures, "0 valid");
    assert_eq!(
        r.signatures[0].status,
        airlift::archive::verify::SignatureState::Untrusted
    );
    let unsigned = write_archive(&fx, &dir.path().join("unsigned.tar"), false, &[]);
    let r = verify(&unsigned, &opts(&[&key]));
    expect_failure(&r, FailureKind::NotEnoughSignatures, "0 valid");
    let r = verify(
        &unsigned,
        &VerifyOptions {
            allow_unsigned: true,
            ..opts(&[&key])
        },
    );
    assert_ok(&r);

    // Truncation and compressed tampering are caught too.
    let bytes = fs::read(&good).unwrap();
    let cut = dir.path().join("cut.tar");
    fs::write(&cut, &bytes[..bytes.len() - 1024 - 700]).unwrap();
    let r = verify(&cut, &o);
    expect_failure(&r, FailureKind::Container, "truncated");
}

#[test]
fn reader_refuses_unsafe_entries_before_use() {
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    let good = write_archive(&fx, &dir.path().join("good.tar"), false, &[]);
    let mut e = entries_of(&good);
    let at = e.iter().position(|x| x.name == b"index.json").unwrap() + 1;
    e.insert(
        at,
        Entry {
            name: b"blobs/sha256/../../etc/passwd".to_vec(),
            kind: tar::EntryType::Regular,
            data: b"x".to_vec(),
        },
    );
    let p = dir.path().join("bad.tar");
    rebuild(&p, &e);
    let mut reader = ArchiveReader::open(&p).unwrap();
    let err = reader.next_blob().err().unwrap();
    assert!(matches!(err, ArchiveError::BadEntryName { .. }), "{err}");
    assert!(!err.is_fatal());
    // Reading continues past the bad entry.
    assert!(reader.next_blob().unwrap().is_some());
    assert!(matches!(
        BlobIndex::build(&p),
        Err(ArchiveError::BadEntryName { .. })
    ));
}

#[test]
fn writer_failure_leaves_nothing() {
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.tar");
    let partial = dir.path().join("out.tar.partial");
    let bytes = fx.manifest.to_canonical_bytes().unwrap();
    let order = fx.manifest.blob_order();

    // A source yielding wrong bytes.
    let mut w = ArchiveWriter::create(
        &path,
        WriteOptions {
            zstd: true,
            mtime: MTIME,
        },
    )
    .unwrap();
    w.write_header(&bytes, &[], &fx.index_json).unwrap();
    assert!(partial.exists());
    let first = order[0];
    let mut wrong = fx.blobs[&first.digest].clone();
    wrong[0] ^= 0xff;
    let e = w
        .write_blob(&first.digest, first.size, &wrong[..])
        .unwrap_err();
    assert!(matches!(e, ArchiveError::Digest(_)), "{e}");
    assert!(!partial.exists() && !path.exists());
    drop(w);
    assert!(!partial.exists() && !path.exists());

    // A short source, then a drop without finish.
    let mut w = ArchiveWriter::create(
        &path,
        WriteOptions {
            zstd: false,
            mtime: MTIME,
        },
    )
    .unwrap();
    w.write_header(&bytes, &[], &fx.index_json).unwrap();
    let data = &fx.blobs[&first.digest];
    assert!(
        w.write_blob(&first.digest, first.size, &data[..data.len() - 1])
            .is_err()
    );
    drop(w);
    assert!(!partial.exists() && !path.exists());

    let w = ArchiveWriter::create(
        &path,
        WriteOptions {
            zstd: false,
            mtime: MTIME,
        },
    )
    .unwrap();
    drop(w);
    assert!(!partial.exists() && !path.exists());

    // finish with blobs missing, and blobs out of order.
    let mut w = ArchiveWriter::create(
        &path,
        WriteOptions {
            zstd: false,
            mtime: MTIME,
        },
    )
    .unwrap();
    w.write_header(&bytes, &[], &fx.index_json).unwrap();
    assert!(matches!(w.finish(), Err(ArchiveError::Usage(_))));
    assert!(!partial.exists() && !path.exists());
    let mut w = ArchiveWriter::create(
        &path,
        WriteOptions {
            zstd: false,
            mtime: MTIME,
        },
    )
    .unwrap();
    w.write_header(&bytes, &[], &fx.index_json).unwrap();
    let last = order[order.len() - 1];
    assert!(
        w.write_blob(&last.digest, last.size, &fx.blobs[&last.digest][..])
            .is_err()
    );
    assert!(!partial.exists() && !path.exists());
}

#[test]
fn manifest_and_report_match_their_schemas() {
    let fx = fixture();
    let key = keys::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write_archive(
        &fx,
        &dir.path().join("a.tar"),
        false,
        std::slice::from_ref(&key),
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&fx.manifest.to_canonical_bytes().unwrap()).unwrap();
    crate::support::validate_json_schema("manifest.schema.json", &manifest);
    let good = serde_json::to_value(verify(&path, &opts(&[&key]))).unwrap();
    crate::support::validate_json_schema("verify-report.schema.json", &good);
    let mut bytes = fs::read(&path).unwrap();
    let idx = BlobIndex::build(&path).unwrap();
    let (off, _) = idx.get(&fx.layer).unwrap();
    bytes[off as usize] ^= 1;
    fs::write(&path, &bytes).unwrap();
    let bad = verify(&path, &opts(&[]));
    assert!(!bad.ok);
    crate::support::validate_json_schema(
        "verify-report.schema.json",
        &serde_json::to_value(&bad).unwrap(),
    );
    // The schema rejects a manifest of another version.
    let mut wrong = manifest.clone();
    wrong["version"] = serde_json::json!(2);
    let out =
        std::panic::catch_unwind(|| support::validate_json_schema("manifest.schema.json", &wrong));
    assert!(out.is_err());
}
