//! `export --platform`: only the asked platforms of every index travel; filtered indexes and
//! derived bundles keep the graph consistent, so the far side sees one bundle everywhere.

use std::collections::BTreeSet;

use airlift::digest::Digest;
use serde_json::Value;

use crate::support::{
    self, Corpus, Registry, airlift, expect_failed, expect_ok, s, tar_entries, tar_entry,
};

fn gunzip(gz: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz), &mut out).unwrap();
    out
}

/// The number printed before `word` in `text` (`… 123 bytes left out`).
fn number_before(text: &str, word: &str) -> u64 {
    let at = text
        .find(word)
        .unwrap_or_else(|| panic!("{word:?} in {text}"));
    text[..at]
        .split_whitespace()
        .last()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn export_platform_filters_the_index_and_derives_the_bundle_that_locks_it() {
    let src = Registry::start_plain();
    let dst = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let corpus = Corpus::build(&src, h);
    let full = h.join("full.tar");
    let amd = h.join("amd64.tar");
    let export = |out: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "export",
            "-q",
            "-b",
            &corpus.outer.image.tag_ref,
            "-o",
            s(out),
            "--unsigned",
        ];
        args.extend_from_slice(extra);
        airlift(h, &args)
    };
    expect_ok(&export(&full, &[]));
    let out = export(&amd, &["--platform", "linux/amd64"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    expect_ok(&out);
    assert!(
        stderr.contains("platform filter linux/amd64: 1 index(es) filtered, 1 bundle(s) derived"),
        "{stderr}"
    );
    // What is left out: the arm64 image's own blobs (its base layer is shared), give or take
    // the few hundred bytes the filtered index and derived bundle differ by.
    let [amd64, arm64] = &corpus.index_written.images[..] else {
        panic!("two platforms")
    };
    let others: BTreeSet<&Digest> = corpus
        .written
        .iter()
        .chain([amd64])
        .flat_map(|i| i.layer_digests.iter())
        .collect();
    let arm64_only: u64 = arm64.manifest.len() as u64
        + arm64.config_size
        + arm64
            .layer_digests
            .iter()
            .zip(&arm64.layer_sizes)
            .filter(|(d, _)| !others.contains(d))
            .map(|(_, s)| s)
            .sum::<u64>();
    let left_out = number_before(&stderr, "bytes left out");
    assert!(
        left_out.abs_diff(arm64_only) < 2048,
        "{left_out} left out, arm64 alone is {arm64_only}"
    );
    let (full_len, amd_len) = (
        std::fs::metadata(&full).unwrap().len(),
        std::fs::metadata(&amd).unwrap().len(),
    );
    assert!(
        full_len - amd_len >= arm64_only - 4096,
        "{full_len} vs {amd_len}"
    );
    eprintln!(
        "measured: full archive {full_len} B, linux/amd64 archive {amd_len} B, reported left out {left_out} B, arm64-only content {arm64_only} B"
    );
    expect_ok(&airlift(h, &["verify", s(&amd), "--allow-unsigned"]));

    // The signed manifest records original -> filtered for the index and the bundle.
    let bytes = std::fs::read(&amd).unwrap();
    let entries = tar_entries(&bytes);
    let e = tar_entry(&entries, "airlift/manifest.json");
    let m: Value = serde_json::from_slice(&bytes[e.data_offset..e.data_offset + e.size]).unwrap();
    assert_eq!(m["platforms"]["kept"], serde_json::json!(["linux/amd64"]));
    let replaced = m["platforms"]["replaced"].as_array().unwrap();
    let filtered_of = |d: &Digest| -> Digest {
        replaced
            .iter()
            .find(|r| r["original"] == d.to_string())
            .unwrap_or_else(|| panic!("{d} not replaced: {replaced:?}"))["filtered"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let index = filtered_of(&corpus.index.digest);
    let bundle = filtered_of(&corpus.outer.image.digest);
    assert_eq!(replaced.len(), 2, "{replaced:?}");

    expect_ok(&airlift(
        h,
        &[
            "import",
            "-q",
            s(&amd),
            "--to-registry",
            &dst.reference("mirror"),
            "--allow-unsigned",
        ],
    ));
    // The filtered index: the original's bytes and fields but for the arm64 entry.
    let raw = support::skopeo_inspect_raw(&format!("mirror/corpus/multi@{index}"), &dst);
    assert_eq!(support::sha256_digest(&raw), index);
    let mut want: Value = serde_json::from_slice(&corpus.index_written.index).unwrap();
    want["manifests"]
        .as_array_mut()
        .unwrap()
        .retain(|c| c["platform"]["architecture"] == "amd64");
    assert_eq!(serde_json::from_slice::<Value>(&raw).unwrap(), want);
    assert!(raw.len() < corpus.index_written.index.len());
    let child = support::skopeo_inspect_raw(
        &format!("mirror/corpus/multi@{}", amd64.manifest_digest),
        &dst,
    );
    assert_eq!(child, amd64.manifest);
    let arm = support::http_get(
        &dst,
        &format!(
            "/v2/mirror/corpus/multi/manifests/{}",
            arm64.manifest_digest
        ),
    );
    assert_eq!(arm.status, 404, "arm64 was left out");

    // The derived bundle carries the tag, and its layer is what imgpkg writes for the same
    // files with the rewritten lock (the layer writer reproduces imgpkg's, golden-tested).
    let served = support::skopeo_inspect_raw("mirror/corpus/outer:v1", &dst);
    assert_eq!(support::sha256_digest(&served), bundle);
    let bm: Value = serde_json::from_slice(&served).unwrap();
    let layer = bm["layers"][0]["digest"].as_str().unwrap();
    let gz = support::http_get(&dst, &format!("/v2/mirror/corpus/outer/blobs/{layer}"));
    assert_eq!(gz.status, 200);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join(".imgpkg")).unwrap();
    std::fs::create_dir(dir.path().join("config")).unwrap();
    let mut yaml = String::new();
    for (key, r) in [
        ("app-a", &corpus.images[0].tag_ref),
        ("app-b", &corpus.images[1].tag_ref),
        ("multi", &corpus.index.tag_ref),
        ("nested", &corpus.nested.image.tag_ref),
    ] {
        yaml.push_str(&format!("{key}:\n  image: {r}\n"));
    }
    std::fs::write(dir.path().join("config/app.yaml"), &yaml).unwrap();
    let new_lock = corpus
        .outer
        .lock_text
        .replace(&corpus.index.digest.to_string(), &index.to_string());
    assert_ne!(new_lock, corpus.outer.lock_text);
    std::fs::write(dir.path().join(".imgpkg/images.yml"), &new_lock).unwrap();
    let want_tar =
        airlift::author::bundle::write_layer_tar(&[dir.path().to_owned()], Vec::new()).unwrap();
    assert!(gunzip(&gz.body) == want_tar, "derived bundle layer differs");
    // Its config is the original bundle's but for the layer's diff_id.
    let config = bm["config"]["digest"].as_str().unwrap();
    let got = support::http_get(&dst, &format!("/v2/mirror/corpus/outer/blobs/{config}"));
    let orig = support::http_get(
        &src,
        &format!("/v2/corpus/outer/blobs/{}", corpus.outer.config.0),
    );
    let diff = |b: &[u8]| -> Value {
        let mut v: Value = serde_json::from_slice(b).unwrap();
        v["rootfs"]["diff_ids"] = Value::Null;
        v
    };
    assert_eq!(diff(&got.body), diff(&orig.body));

    // airlift pull and a kbld-style rewrite see the filtered index everywhere.
    let pulled = h.join("pulled");
    expect_ok(&airlift(
        h,
        &[
            "pull",
            "-b",
            &dst.reference("mirror/corpus/outer:v1"),
            "-o",
            s(&pulled),
        ],
    ));
    let lock = std::fs::read_to_string(pulled.join(".imgpkg/images.yml")).unwrap();
    let multi_at = format!("{}@{index}", dst.reference("mirror/corpus/multi"));
    assert!(lock.contains(&multi_at), "{lock}");
    assert!(!lock.contains(&corpus.index.digest.to_string()), "{lock}");
    let rewritten = expect_ok(&airlift(
        h,
        &[
            "rewrite",
            "-f",
            s(&pulled.join("config")),
            "-f",
            s(&pulled.join(".imgpkg/images.yml")),
        ],
    ));
    assert!(rewritten.contains(&multi_at), "{rewritten}");
    // The same lock in the archive's own lock record.
    let outer_lock = m["bundles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["digest"] == bundle.to_string())
        .unwrap();
    assert!(
        outer_lock["images"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["image"].as_str().unwrap().ends_with(&format!("@{index}")))
    );
}

#[test]
fn export_platform_on_a_plain_index_and_a_platform_it_lacks() {
    let src = Registry::start_plain();
    let dst = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let corpus = Corpus::build(&src, h);
    let archive = h.join("arm.tar");
    expect_ok(&airlift(
        h,
        &[
            "export",
            "-q",
            "-i",
            &corpus.index.tag_ref,
            "-o",
            s(&archive),
            "--unsigned",
            "--platform",
            "linux/arm64",
        ],
    ));
    expect_ok(&airlift(
        h,
        &[
            "import",
            "-q",
            s(&archive),
            "--to-registry",
            &dst.reference("m"),
            "--allow-unsigned",
        ],
    ));
    let raw = support::skopeo_inspect_raw("m/corpus/multi:v1", &dst);
    let v: Value = serde_json::from_slice(&raw).unwrap();
    let children = v["manifests"].as_array().unwrap();
    assert_eq!(children.len(), 1, "{v}");
    assert_eq!(children[0]["platform"]["architecture"], "arm64");
    let arm64 = &corpus.index_written.images[1];
    assert_eq!(
        support::skopeo_inspect_raw(&format!("m/corpus/multi@{}", arm64.manifest_digest), &dst),
        arm64.manifest
    );

    let err = expect_failed(&airlift(
        h,
        &[
            "export",
            "-q",
            "-i",
            &corpus.index.tag_ref,
            "-o",
            s(&h.join("none.tar")),
            "--unsigned",
            "--platform",
            "windows/amd64",
        ],
    ));
    assert!(err.contains(&corpus.index.tag_ref), "{err}");
    assert!(err.contains("linux/amd64, linux/arm64"), "{err}");
    assert!(!h.join("none.tar").exists());
}

#[test]
fn copy_platform_carries_the_derived_bundle_straight_to_the_registry() {
    let src = Registry::start_plain();
    let dst = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let corpus = Corpus::build(&src, h);
    let out = airlift(
        h,
        &[
            "copy",
            "-q",
            "-b",
            &corpus.outer.image.tag_ref,
            "--to-registry",
            &dst.reference("c"),
            "--platform",
            "linux/arm64",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    expect_ok(&out);
    assert!(
        stderr.contains("1 index(es) filtered, 1 bundle(s) derived"),
        "{stderr}"
    );
    let served = support::skopeo_inspect_raw("c/corpus/outer:v1", &dst);
    assert_ne!(support::sha256_digest(&served), corpus.outer.image.digest);
    let pulled = h.join("pulled");
    expect_ok(&airlift(
        h,
        &[
            "pull",
            "-b",
            &dst.reference("c/corpus/outer:v1"),
            "-o",
            s(&pulled),
        ],
    ));
    let lock: Value = serde_norway::from_str(
        &std::fs::read_to_string(pulled.join(".imgpkg/images.yml")).unwrap(),
    )
    .unwrap();
    let multi = lock["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["image"].as_str().unwrap().to_owned())
        .find(|i| i.contains("/corpus/multi@"))
        .unwrap();
    let path = multi.strip_prefix(&format!("{}/", dst.host())).unwrap();
    let index: Value = serde_json::from_slice(&support::skopeo_inspect_raw(path, &dst)).unwrap();
    let children = index["manifests"].as_array().unwrap();
    assert_eq!(children.len(), 1, "{index}");
    assert_eq!(children[0]["platform"]["architecture"], "arm64");
}

/// A nested bundle that locks the index is derived, and so is the outer bundle that locks it.
#[test]
fn platform_filter_propagates_through_nested_bundles() {
    let src = Registry::start_plain();
    let dst = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let corpus = Corpus::build(&src, h);
    let inner = support::push_bundle(&src, h, "deep/inner", &[("multi", &corpus.index.tag_ref)]);
    let outer = support::push_bundle(
        &src,
        h,
        "deep/outer",
        &[
            ("inner", &inner.image.tag_ref),
            ("app-a", &corpus.images[0].tag_ref),
        ],
    );
    let archive = h.join("deep.tar");
    let out = airlift(
        h,
        &[
            "export",
            "-q",
            "-b",
            &outer.image.tag_ref,
            "-o",
            s(&archive),
            "--unsigned",
            "--platform",
            "linux/amd64",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    expect_ok(&out);
    assert!(
        stderr.contains("1 index(es) filtered, 2 bundle(s) derived"),
        "{stderr}"
    );
    expect_ok(&airlift(h, &["verify", s(&archive), "--allow-unsigned"]));
    expect_ok(&airlift(
        h,
        &[
            "import",
            "-q",
            s(&archive),
            "--to-repo",
            &dst.reference("flat/deep"),
            "--allow-unsigned",
        ],
    ));
    let pulled = h.join("pulled");
    let pull = expect_ok(&airlift(
        h,
        &[
            "pull",
            "-r",
            "-b",
            &dst.reference("flat/deep:v1"),
            "-o",
            s(&pulled),
        ],
    ));
    // The outer lock names the derived inner bundle, whose lock names the filtered index;
    // both are served from the destination.
    let outer_lock = std::fs::read_to_string(pulled.join(".imgpkg/images.yml")).unwrap();
    assert!(
        !outer_lock.contains(&inner.image.digest.to_string()),
        "{outer_lock}"
    );
    let nested_dirs: Vec<_> = std::fs::read_dir(pulled.join(".imgpkg/bundles"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(nested_dirs.len(), 1, "{pull}");
    let inner_lock = std::fs::read_to_string(nested_dirs[0].join(".imgpkg/images.yml")).unwrap();
    assert!(
        !inner_lock.contains(&corpus.index.digest.to_string()),
        "{inner_lock}"
    );
    let v: Value = serde_norway::from_str(&inner_lock).unwrap();
    let at = v["images"][0]["image"].as_str().unwrap();
    let path = at.strip_prefix(&format!("{}/", dst.host())).unwrap();
    let index: Value = serde_json::from_slice(&support::skopeo_inspect_raw(path, &dst)).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1, "{index}");
}
