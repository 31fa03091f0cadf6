//! `airlift export` end to end: the real binary against a real registry holding the corpus
//! (tests/it/support/corpus.rs), the archive checked with independent tools (GNU tar, skopeo,
//! openssl) and by parsing tar headers directly.

use crate::support;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{
    Corpus, ImageSpec, LayerSpec, Registry, airlift, expect_code, expect_ok, run_tool,
};
use serde_json::Value;

use crate::support::s;

/// Names in a tar file, by GNU tar (`tar -tf`), in order.
pub(crate) fn gnu_tar_list(archive: &Path) -> Vec<String> {
    String::from_utf8(run_tool(Command::new("tar").arg("-tf").arg(archive)))
        .expect("tar names are UTF-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// One member's bytes, by GNU tar (`tar -xOf`).
fn gnu_tar_extract(archive: &Path, member: &str) -> Vec<u8> {
    run_tool(Command::new("tar").arg("-xOf").arg(archive).arg(member))
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("valid JSON")
}

/// `airlift export ARGS -o OUT` with a fixed SOURCE_DATE_EPOCH; returns the output.
fn export(home: &Path, out: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["export", "-q", "-o", s(out)];
    all.extend_from_slice(args);
    crate::support::airlift_cmd(home)
        .args(&all)
        .env("SOURCE_DATE_EPOCH", "1767225600")
        .output()
        .expect("run airlift")
}

fn partial(out: &Path) -> PathBuf {
    let mut p = out.as_os_str().to_owned();
    p.push(".partial");
    PathBuf::from(p)
}

#[test]
fn outer_bundle_archive_holds_every_blob_once_and_describes_the_graph() {
    let reg = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let corpus = Corpus::build(&reg, home.path());
    let out = home.path().join("outer.tar");
    let root = corpus.outer.image.tag_ref.clone();
    expect_ok(&export(home.path(), &out, &["-b", &root, "--unsigned"]));

    // Every blob exactly once, nothing else but the leading metadata entries.
    let names = gnu_tar_list(&out);
    assert_eq!(
        &names[..3],
        ["oci-layout", "airlift/manifest.json", "index.json"]
    );
    let blob_names: Vec<&String> = names[3..].iter().collect();
    let unique: BTreeSet<&String> = blob_names.iter().copied().collect();
    assert_eq!(
        unique.len(),
        blob_names.len(),
        "duplicate entries: {names:?}"
    );
    let expected: BTreeSet<String> = corpus
        .blobs
        .keys()
        .map(|d| format!("blobs/{}", d.replace(':', "/")))
        .collect();
    assert_eq!(
        unique.into_iter().cloned().collect::<BTreeSet<_>>(),
        expected
    );

    // Size: unique blob bytes plus headers/padding and the two metadata documents.
    let bytes = std::fs::read(&out).unwrap();
    let entries = support::tar_entries(&bytes);
    assert_eq!(entries.len(), names.len());
    for e in &entries[3..] {
        let digest = e.name.trim_start_matches("blobs/").replacen('/', ":", 1);
        assert_eq!(
            Some(&(e.size as u64)),
            corpus.blobs.get(&digest),
            "{}",
            e.name
        );
    }
    let unique_bytes = corpus.unique_bytes();
    let metadata: u64 = entries[..3].iter().map(|e| e.size as u64).sum();
    let archive_len = bytes.len() as u64;
    let overhead = archive_len - unique_bytes - metadata;
    let header_budget = 1024 * entries.len() as u64 + 10 * 1024;
    assert!(
        overhead <= header_budget,
        "archive {archive_len} B, blobs {unique_bytes} B, metadata {metadata} B: \
         overhead {overhead} B > {header_budget} B"
    );
    assert!(
        archive_len <= unique_bytes + unique_bytes / 200 + metadata + header_budget,
        "archive {archive_len} B vs unique {unique_bytes} B"
    );

    // The airlift manifest: blobs, roots, bundle locks (nested too).
    let manifest = json(&gnu_tar_extract(&out, "airlift/manifest.json"));
    assert_eq!(manifest["format"], "airlift-archive");
    assert_eq!(manifest["version"], 1);
    assert_eq!(manifest["created"], "2026-01-01T00:00:00Z");
    let table: BTreeMap<String, u64> = manifest["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["digest"].as_str().unwrap().to_owned(),
                b["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(table, corpus.blobs);
    let role = |d: &str| -> String {
        manifest["blobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["digest"] == d)
            .unwrap_or_else(|| panic!("{d} not in blob table"))["role"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(role(&corpus.index.digest.to_string()), "index");
    assert_eq!(role(&corpus.outer.image.digest.to_string()), "manifest");
    assert_eq!(role(&corpus.outer.layer.0.to_string()), "layer");
    assert_eq!(role(&corpus.written[0].config_digest.to_string()), "config");
    // The shared base layer is named by every image manifest that uses it.
    let base = corpus.written[0].layer_digests[0].to_string();
    let base_entry = manifest["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["digest"] == base.as_str())
        .unwrap();
    let mut users: Vec<String> = corpus
        .written
        .iter()
        .chain(&corpus.index_written.images)
        .map(|w| w.manifest_digest.to_string())
        .collect();
    users.sort();
    assert_eq!(
        base_entry["referencedBy"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect::<Vec<_>>(),
        users
    );

    let roots = manifest["roots"].as_array().unwrap();
    assert_eq!(roots.len(), 1);
    assert_eq!(roots[0]["kind"], "bundle");
    assert_eq!(roots[0]["reference"], root.as_str());
    assert_eq!(roots[0]["tag"], "v1");
    assert_eq!(roots[0]["digest"], corpus.outer.image.digest.to_string());

    let bundles = manifest["bundles"].as_array().unwrap();
    let mut expected_bundles = vec![&corpus.outer, &corpus.nested];
    expected_bundles.sort_by_key(|b| b.image.digest.to_string());
    assert_eq!(bundles.len(), 2);
    for (got, want) in bundles.iter().zip(expected_bundles) {
        assert_eq!(got["digest"], want.image.digest.to_string());
        let images: Vec<&str> = got["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["image"].as_str().unwrap())
            .collect();
        assert_eq!(images, want.lock_images);
        let flags: Vec<bool> = got["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["bundle"].as_bool().unwrap())
            .collect();
        let want_flags: Vec<bool> = want
            .lock_images
            .iter()
            .map(|i| i.contains("/corpus/nested@"))
            .collect();
        assert_eq!(flags, want_flags);
    }

    // index.json: the root by its reference, every locked image by its lock text.
    let index_bytes = gnu_tar_extract(&out, "index.json");
    assert_eq!(
        manifest["index"]["digest"],
        crate::support::sha256_digest(&index_bytes).to_string()
    );
    let index = json(&index_bytes);
    let refs: BTreeMap<String, String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            // containerd's import reads its own annotation: the same name in both.
            assert_eq!(
                m["annotations"]["io.containerd.image.name"],
                m["annotations"]["org.opencontainers.image.ref.name"]
            );
            (
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                m["digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut want_refs = BTreeMap::new();
    want_refs.insert(root.clone(), corpus.outer.image.digest.to_string());
    for img in corpus.all_lock_images() {
        let d = img.rsplit('@').next().unwrap().to_owned();
        want_refs.insert(img, d);
    }
    assert_eq!(refs, want_refs);
}

#[test]
fn single_image_archive_is_readable_by_skopeo_and_copies_back_identically() {
    let reg = Registry::start_plain();
    let target = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let layout = tempfile::tempdir().unwrap();
    let img = support::write_oci_image(
        layout.path(),
        "x",
        &ImageSpec::new(
            7,
            vec![LayerSpec::new(70, 64 * 1024), LayerSpec::new(71, 32 * 1024)],
        ),
    );
    crate::support::skopeo_push(layout.path(), "x", "solo/app:v1", &reg);
    let root = reg.reference("solo/app:v1");
    let out = home.path().join("solo.tar");
    expect_ok(&export(home.path(), &out, &["-i", &root, "--unsigned"]));

    let src = format!("oci-archive:{}:{root}", out.display());
    let inspected =
        run_tool(Command::new("skopeo").args(["--insecure-policy", "inspect", "--raw", &src]));
    assert_eq!(inspected, img.manifest);

    let dest = format!("docker://{}/copied/app:v1", target.host());
    run_tool(Command::new("skopeo").args([
        "--insecure-policy",
        "copy",
        "--quiet",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &src,
        &dest,
    ]));
    let pushed = support::skopeo_inspect_raw("copied/app:v1", &target);
    assert_eq!(support::sha256_digest(&pushed), img.manifest_digest);
}

#[test]
fn signatures_verify_with_openssl_and_tampering_is_detected() {
    let reg = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let layout = tempfile::tempdir().unwrap();
    crate::support::write_oci_image(
        layout.path(),
        "x",
        &ImageSpec::new(8, vec![LayerSpec::new(80, 4096)]),
    );
    crate::support::skopeo_push(layout.path(), "x", "signed/app:v1", &reg);
    let key = home.path().join("release");
    expect_ok(&airlift(home.path(), &["keygen", "--out", s(&key)]));
    let (priv_key, pub_key) = (key.with_extension("key"), key.with_extension("pub"));
    let out = home.path().join("signed.tar");
    expect_ok(&export(
        home.path(),
        &out,
        &[
            "-i",
            &reg.reference("signed/app:v1"),
            "--sign-key",
            s(&priv_key),
        ],
    ));

    // The signature's name is the sha256 of the public key's DER, computed by openssl.
    let der = Command::new("openssl")
        .args(["pkey", "-pubin", "-in", s(&pub_key), "-outform", "DER"])
        .output()
        .unwrap();
    assert!(der.status.success());
    let fingerprint = support::sha256_digest(&der.stdout)
        .to_string()
        .trim_start_matches("sha256:")
        .to_owned();
    let sig_name = format!("airlift/signatures/{fingerprint}.sig");
    let names = gnu_tar_list(&out);
    assert_eq!(names[2], sig_name, "{names:?}");

    let dir = home.path().join("x");
    std::fs::create_dir(&dir).unwrap();
    let manifest = dir.join("manifest.json");
    let sig = dir.join("sig");
    std::fs::write(&manifest, gnu_tar_extract(&out, "airlift/manifest.json")).unwrap();
    std::fs::write(&sig, gnu_tar_extract(&out, &sig_name)).unwrap();
    assert_eq!(std::fs::metadata(&sig).unwrap().len(), 64);
    let openssl_verify = |m: &Path| {
        Command::new("openssl")
            .args([
                "pkeyutl",
                "-verify",
                "-pubin",
                "-inkey",
                s(&pub_key),
                "-rawin",
            ])
            .args(["-in", s(m), "-sigfile", s(&sig)])
            .output()
            .unwrap()
    };
    let good = openssl_verify(&manifest);
    assert!(
        good.status.success(),
        "openssl: {}{}",
        String::from_utf8_lossy(&good.stdout),
        String::from_utf8_lossy(&good.stderr)
    );
    let mut tampered = std::fs::read(&manifest).unwrap();
    let at = tampered.len() / 2;
    tampered[at] ^= 0x01;
    let bad_path = dir.join("tampered.json");
    std::fs::write(&bad_path, tampered).unwrap();
    assert!(!openssl_verify(&bad_path).status.success());
}

#[test]
fn repeated_exports_are_byte_identical() {
    let reg = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let corpus = Corpus::build(&reg, home.path());
    let root = corpus.outer.image.tag_ref.clone();
    let key = home.path().join("k");
    expect_ok(&airlift(home.path(), &["keygen", "--out", s(&key)]));
    let key = key.with_extension("key");
    let run = |name: &str, extra: &[&str]| -> Vec<u8> {
        let out = home.path().join(name);
        let mut args = vec!["-b", root.as_str(), "--sign-key", s(&key)];
        args.extend_from_slice(extra);
        expect_ok(&export(home.path(), &out, &args));
        std::fs::read(&out).unwrap()
    };
    let plain1 = run("p1.tar", &["--concurrency", "1"]);
    let plain8 = run("p8.tar", &["--concurrency", "8"]);
    assert!(
        plain1 == plain8,
        "plain exports differ (concurrency 1 vs 8)"
    );
    let z1 = run("z1.tar.zst", &["--zstd", "--concurrency", "1"]);
    let z8 = run("z8.tar.zst", &["--zstd", "--concurrency", "8"]);
    assert!(z1 == z8, "zstd exports differ (concurrency 1 vs 8)");
    assert_eq!(&z1[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
    // The zstd archive is the plain one, compressed.
    let unz = Command::new("zstd")
        .args(["-d", "-c", s(&home.path().join("z1.tar.zst"))])
        .output()
        .unwrap();
    assert!(unz.status.success());
    assert!(
        unz.stdout == plain1,
        "zstd archive does not decompress to the plain one"
    );
}

/// Runs a failing export and checks: exit 1, message contains `needle`, no FILE, no FILE.partial.
fn assert_failed_cleanly(home: &Path, args: &[&str], needle: &str) {
    let out = home.join(format!("fail-{}.tar", needle.len()));
    let mut all = args.to_vec();
    all.push("--unsigned");
    let text = expect_code(&export(home, &out, &all), 1);
    assert!(text.contains(needle), "message lacks {needle:?}:\n{text}");
    assert!(!out.exists(), "{} left behind", out.display());
    assert!(!partial(&out).exists(), "partial file left behind");
}

#[test]
fn failed_exports_leave_no_file_and_name_the_cause() {
    let reg = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let layout = tempfile::tempdir().unwrap();
    let img = support::write_oci_image(
        layout.path(),
        "x",
        &ImageSpec::new(9, vec![LayerSpec::new(90, 8192)]),
    );
    crate::support::skopeo_push(layout.path(), "x", "fail/app:v1", &reg);

    // A tag that does not exist: the reference is named.
    let missing = reg.reference("fail/nope:v1");
    assert_failed_cleanly(home.path(), &["-i", &missing], &missing);

    // A registry nobody listens on: the registry is named.
    let dead = format!("127.0.0.1:{}", support::free_port());
    assert_failed_cleanly(
        home.path(),
        &[
            "-i",
            &format!("{dead}/app:v1"),
            "--registry-retry-count",
            "0",
        ],
        &dead,
    );

    // A blob served with wrong content (same length): its digest is named.
    let layer = img.layer_digests[0].to_string();
    let hex = layer.trim_start_matches("sha256:");
    let data = reg
        .storage_dir()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    let mut bytes = std::fs::read(&data).unwrap();
    for b in &mut bytes {
        *b = !*b;
    }
    std::fs::write(&data, bytes).unwrap();
    assert_failed_cleanly(home.path(), &["-i", &reg.reference("fail/app:v1")], hex);

    // Neither --sign-key nor --unsigned: usage error, nothing written.
    let out = home.path().join("usage.tar");
    expect_code(
        &export(home.path(), &out, &["-i", &reg.reference("fail/app:v1")]),
        2,
    );
    assert!(!out.exists() && !partial(&out).exists());
}
