//! `airlift verify` and `airlift import` end to end: archives made by the real binary from real
//! registries, imported into real registries (plain, and TLS + basic auth), checked through the
//! registry API and skopeo; tampered archives made by rewriting tar bytes at parsed offsets.

use crate::support;
use crate::support::{
    blob_entry_name as blob_name, flip_entry as flip, keygen, tar_entry as entry,
};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::s;
use crate::support::{
    Corpus, ImageSpec, LayerSpec, Registry, airlift, expect_code, expect_ok, registry_state,
    registry_tags,
};
use serde_json::Value;

/// Registry flags for airlift talking to `reg` (CA and credentials for the TLS flavour).
fn reg_flags(reg: &Registry) -> Vec<String> {
    match reg.credentials() {
        None => Vec::new(),
        Some((user, pass)) => vec![
            "--registry-ca-cert-path".into(),
            s(&reg.ca_cert_path()).to_owned(),
            "--registry-username".into(),
            user.to_owned(),
            "--registry-password".into(),
            pass.to_owned(),
        ],
    }
}

fn run(home: &Path, args: &[&str], extra: &[String]) -> std::process::Output {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(extra.iter().map(String::as_str));
    airlift(home, &all)
}

/// `airlift export -q -b BUNDLE -o ARCHIVE EXTRA…`, which must succeed.
fn export_bundle(home: &Path, bundle: &str, archive: &Path, extra: &[&str]) {
    let mut args = vec!["export", "-q", "-b", bundle, "-o", s(archive)];
    args.extend_from_slice(extra);
    expect_ok(&airlift(home, &args));
}

fn hex_of(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

/// Pushes `n` small images under `prefix/` and a bundle locking them; returns the bundle.
fn small_bundle(reg: &Registry, home: &Path, repo: &str, names: &[&str]) -> support::CorpusBundle {
    let layout = tempfile::tempdir().unwrap();
    let mut refs = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let tag = format!("t{i}");
        crate::support::write_oci_image(
            layout.path(),
            &tag,
            &ImageSpec::new(
                300 + i as u64,
                vec![
                    LayerSpec::new(1, 16 * 1024),
                    LayerSpec::new(400 + i as u64, 8 * 1024),
                ],
            ),
        );
        crate::support::skopeo_push(layout.path(), &tag, &format!("{name}:1.0"), reg);
        refs.push((
            name.rsplit('/').next().unwrap(),
            reg.reference(&format!("{name}:1.0")),
        ));
    }
    let refs: Vec<(&str, &str)> = refs.iter().map(|(k, r)| (*k, r.as_str())).collect();
    crate::support::push_bundle(reg, home, repo, &refs)
}

#[test]
fn walk_through_into_tls_auth_registry() {
    let internet = Registry::start_plain();
    let internal = Registry::start_tls_auth();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let bundle = small_bundle(
        &internet,
        h,
        "guestbook-bundle",
        &[
            "google_samples/gb-frontend",
            "google_samples/gb-redis-follower",
            "library/redis",
        ],
    );
    let (key, pubkey) = keygen(h, "release");
    let archive = h.join("guestbook.tar");
    export_bundle(h, &bundle.image.tag_ref, &archive, &["--sign-key", s(&key)]);
    expect_ok(&airlift(h, &["verify", s(&archive), "--trust", s(&pubkey)]));

    let repo = "apps/guestbook";
    let to_repo = internal.reference(repo);
    let lock_out = h.join("relocated.lock.yml");
    let flags = reg_flags(&internal);
    expect_ok(&run(
        h,
        &[
            "import",
            "-q",
            s(&archive),
            "--to-repo",
            &to_repo,
            "--trust",
            s(&pubkey),
            "--lock-output",
            s(&lock_out),
        ],
        &flags,
    ));

    // Tags: one imgpkg tag per image and for the bundle, the bundle's own tag, the locations image.
    let got = registry_tags(&internal, repo);
    let mut want: BTreeSet<String> = bundle
        .lock_images
        .iter()
        .map(|i| format!("sha256-{}.imgpkg", hex_of(i.rsplit('@').next().unwrap())))
        .collect();
    let bundle_hex = hex_of(&bundle.image.digest.to_string()).to_owned();
    want.insert(format!("sha256-{bundle_hex}.imgpkg"));
    want.insert("v1".to_owned());
    want.insert(format!("sha256-{bundle_hex}.image-locations.imgpkg"));
    let got_set: BTreeSet<String> = got.iter().cloned().collect();
    assert!(
        got_set.is_superset(&want),
        "tags {got:?}, want at least {want:?}"
    );
    // Anything else is an imgpkg tag (the locations image keeps itself alive that way).
    for t in got_set.difference(&want) {
        assert!(t.starts_with("sha256-") && t.ends_with(".imgpkg"), "{t}");
    }
    assert_eq!(support::catalog(&internal), vec![repo.to_owned()]);
    let served = support::skopeo_inspect_raw(&format!("{repo}:v1"), &internal);
    assert_eq!(served, bundle.manifest);

    // The relocated lock is a BundleLock naming the new repository.
    let lock: Value = serde_norway::from_str(&std::fs::read_to_string(&lock_out).unwrap()).unwrap();
    assert_eq!(lock["kind"], "BundleLock");
    assert_eq!(
        lock["bundle"]["image"],
        format!("{to_repo}@{}", bundle.image.digest)
    );
    assert_eq!(lock["bundle"]["tag"], "v1");

    // pull -b of the relocated bundle, then rewrite: every image at the internal repo by digest.
    let pulled = h.join("pulled");
    expect_ok(&run(
        h,
        &[
            "pull",
            "-q",
            "-b",
            &format!("{to_repo}:v1"),
            "-o",
            s(&pulled),
        ],
        &flags,
    ));
    let rewritten = expect_ok(&airlift(
        h,
        &[
            "rewrite",
            "-f",
            s(&pulled.join("config")),
            "--lock",
            s(&pulled.join(".imgpkg/images.yml")),
        ],
    ));
    let images: Vec<&str> = rewritten
        .lines()
        .filter_map(|l| l.trim().strip_prefix("image: "))
        .collect();
    assert_eq!(images.len(), 3, "{rewritten}");
    for (img, original) in images.iter().zip(&bundle.lock_images) {
        let digest = original.rsplit('@').next().unwrap();
        assert_eq!(*img, format!("{to_repo}@{digest}"), "{rewritten}");
        let raw = support::skopeo_inspect_raw(&format!("{repo}@{digest}"), &internal);
        assert_eq!(support::sha256_digest(&raw).to_string(), digest);
    }
}

#[test]
fn tampered_archives_fail_verify_and_import_without_leaving_anything() {
    let source = Registry::start_plain();
    let target = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let bundle = small_bundle(&source, h, "tamper/bundle", &["tamper/a", "tamper/b"]);
    let (key, pubkey) = keygen(h, "trusted");
    let (other_key, _) = keygen(h, "stranger");
    let export = |name: &str, sign: &[&str]| -> Vec<u8> {
        let out = h.join(name);
        let mut args = vec!["export", "-q", "-b", &bundle.image.tag_ref, "-o", s(&out)];
        args.extend_from_slice(sign);
        expect_ok(&airlift(h, &args));
        std::fs::read(&out).unwrap()
    };
    let good = export("good.tar", &["--sign-key", s(&key)]);
    let entries = support::tar_entries(&good);
    let manifest: Value = serde_json::from_slice(
        &good[entry(&entries, "airlift/manifest.json").data_offset..]
            [..entry(&entries, "airlift/manifest.json").size],
    )
    .unwrap();
    let by_role = |role: &str, not: &str| -> String {
        manifest["blobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["role"] == role && b["digest"] != not)
            .unwrap_or_else(|| panic!("no {role} blob"))["digest"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let bundle_digest = bundle.image.digest.to_string();
    let layer = by_role("layer", "");
    let config = by_role("config", "");
    let image_manifest = by_role("manifest", &bundle_digest);
    let sig = entries
        .iter()
        .find(|e| e.name.starts_with("airlift/signatures/"))
        .expect("signature entry")
        .name
        .clone();

    // Remove one blob entry (header, data, padding).
    let removed = {
        let e = entry(&entries, &blob_name(&layer));
        let mut out = good[..e.header_offset].to_vec();
        out.extend_from_slice(&good[e.end_offset()..]);
        out
    };
    // Add a well-formed blob entry that the signed manifest does not list.
    let extra_content = b"not listed anywhere\n";
    let extra_digest = support::sha256_digest(extra_content).to_string();
    let added = {
        let end = entries.last().unwrap().end_offset();
        let mut out = good[..end].to_vec();
        out.extend_from_slice(&support::ustar_header(
            &blob_name(&extra_digest),
            extra_content.len() as u64,
        ));
        out.extend_from_slice(extra_content);
        out.resize(out.len() + 512 - extra_content.len(), 0);
        out.extend_from_slice(&good[end..]);
        out
    };
    // A changed hex digit inside the airlift manifest keeps it valid JSON: only the signature
    // can tell.
    let manifest_flipped = {
        let e = entry(&entries, "airlift/manifest.json");
        let data = &good[e.data_offset..e.data_offset + e.size];
        let at = e.data_offset
            + data
                .windows(7)
                .position(|w| w == b"sha256:")
                .expect("a digest")
            + 7;
        let mut out = good.clone();
        out[at] = if out[at] == b'0' { b'1' } else { b'0' };
        out
    };
    // Cases that must fail before any blob is sent come first: the target stays untouched.
    // (what, tampered archive, text the verify report must contain, fails before any push)
    let cases: Vec<(&str, Vec<u8>, String, bool)> = vec![
        (
            "index.json byte",
            flip(&good, "index.json"),
            "index.json".to_owned(),
            true,
        ),
        (
            "airlift manifest byte",
            manifest_flipped,
            "does not verify".to_owned(),
            true,
        ),
        (
            "signature byte",
            flip(&good, &sig),
            "does not verify".to_owned(),
            true,
        ),
        ("removed blob", removed, hex_of(&layer).to_owned(), true),
        (
            "unlisted entry",
            added,
            hex_of(&extra_digest).to_owned(),
            true,
        ),
        (
            "untrusted signer",
            export("stranger.tar", &["--sign-key", s(&other_key)]),
            "(Untrusted)".to_owned(),
            true,
        ),
        (
            "unsigned",
            export("unsigned.tar", &["--unsigned"]),
            "0 valid signature(s)".to_owned(),
            true,
        ),
        (
            "manifest byte",
            flip(&good, &blob_name(&image_manifest)),
            hex_of(&image_manifest).to_owned(),
            true,
        ),
        // Blobs before the tampered one may be uploaded, but no manifest or tag may appear;
        // the second case's config is then already in the registry and must still be checked.
        (
            "layer byte",
            flip(&good, &blob_name(&layer)),
            hex_of(&layer).to_owned(),
            false,
        ),
        (
            "config byte",
            flip(&good, &blob_name(&config)),
            hex_of(&config).to_owned(),
            false,
        ),
    ];
    // The good archive passes, so every failure below is the tampering's doing.
    expect_ok(&airlift(
        h,
        &["verify", s(&h.join("good.tar")), "--trust", s(&pubkey)],
    ));
    for (i, (what, bytes, needle, early)) in cases.iter().enumerate() {
        let path = h.join(format!("case-{i}.tar"));
        std::fs::write(&path, bytes).unwrap();
        let text = expect_code(&airlift(h, &["verify", s(&path), "--trust", s(&pubkey)]), 1);
        assert!(
            text.contains(needle.as_str()),
            "{what}: verify output lacks {needle:?}:\n{text}"
        );
        let out = airlift(
            h,
            &[
                "import",
                "-q",
                s(&path),
                "--to-repo",
                &target.reference("inside/app"),
                "--trust",
                s(&pubkey),
            ],
        );
        assert!(!out.status.success(), "{what}: import succeeded");
        if *early {
            assert_eq!(support::catalog(&target), Vec::<String>::new(), "{what}");
        }
        // Nothing visible: no tag, no manifest in any repository.
        for repo in support::catalog(&target) {
            assert_eq!(
                registry_tags(&target, &repo),
                Vec::<String>::new(),
                "{what}: tags in {repo}"
            );
        }
        let manifests = target.storage_dir().join("docker/registry/v2/repositories");
        assert_eq!(
            manifest_links(&manifests),
            0,
            "{what}: manifests were pushed"
        );
    }
    // Only the blob uploads of the late cases left a trace: a repository without tags.
    assert_eq!(support::catalog(&target), vec!["inside/app".to_owned()]);
}

/// Number of manifest revision links under a registry's `repositories` storage dir.
fn manifest_links(dir: &Path) -> usize {
    fn walk(p: &Path, in_revisions: bool, n: &mut usize) {
        let Ok(rd) = std::fs::read_dir(p) else {
            return;
        };
        for e in rd {
            let e = e.unwrap();
            let path = e.path();
            let name = e.file_name();
            if path.is_dir() {
                walk(&path, in_revisions || name == "revisions", n);
            } else if in_revisions && name == "link" {
                *n += 1;
            }
        }
    }
    let mut n = 0;
    walk(dir, false, &mut n);
    n
}

/// A blob the destination already has is skipped by the upload, but the archive must still
/// verify whole: a tampered copy of it fails the import (plain and zstd archives), and the
/// destination's tags and manifests stay as they were.
#[test]
fn tampered_blob_already_at_destination_still_fails() {
    let source = Registry::start_plain();
    let target = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let bundle = small_bundle(&source, h, "skip/bundle", &["skip/a"]);
    let good = h.join("good.tar");
    export_bundle(h, &bundle.image.tag_ref, &good, &["--unsigned"]);
    let to_repo = target.reference("inside/app");
    let import = |archive: &Path| {
        airlift(
            h,
            &[
                "import",
                "-q",
                s(archive),
                "--to-repo",
                &to_repo,
                "--allow-unsigned",
            ],
        )
    };
    expect_ok(&import(&good));
    let before = registry_state(&target);

    let bytes = std::fs::read(&good).unwrap();
    let entries = support::tar_entries(&bytes);
    let manifest_entry = entry(&entries, "airlift/manifest.json");
    let manifest: Value = serde_json::from_slice(
        &bytes[manifest_entry.data_offset..manifest_entry.data_offset + manifest_entry.size],
    )
    .unwrap();
    for role in ["config", "layer"] {
        let digest = manifest["blobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["role"] == role)
            .unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_owned();
        let tampered = flip(&bytes, &blob_name(&digest));
        let plain = h.join(format!("{role}.tar"));
        std::fs::write(&plain, &tampered).unwrap();
        let zst = h.join(format!("{role}.tar.zst"));
        std::fs::write(&zst, zstd::encode_all(&tampered[..], 3).unwrap()).unwrap();
        for archive in [&plain, &zst] {
            let out = import(archive);
            assert!(
                !out.status.success(),
                "{role} in {}: import of a tampered archive succeeded",
                archive.display()
            );
            assert!(
                String::from_utf8_lossy(&out.stderr).contains(hex_of(&digest)),
                "{role}: error does not name the blob:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    assert_eq!(registry_state(&target), before);
}

/// Number of committed blob `data` files in a registry's storage, and how many are over `min` bytes.
fn stored_blobs(reg: &Registry, min: u64) -> (usize, usize) {
    let root = reg.storage_dir().join("docker/registry/v2/blobs/sha256");
    let mut all = 0;
    let mut big = 0;
    let Ok(prefixes) = std::fs::read_dir(&root) else {
        return (0, 0);
    };
    for p in prefixes.flatten() {
        for b in std::fs::read_dir(p.path()).into_iter().flatten().flatten() {
            if let Ok(m) = std::fs::metadata(b.path().join("data")) {
                all += 1;
                if m.len() > min {
                    big += 1;
                }
            }
        }
    }
    (all, big)
}

#[test]
fn interrupted_import_resumes_to_the_same_state_as_an_uninterrupted_one() {
    const MIB: u64 = 1024 * 1024;
    let source = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let layout = tempfile::tempdir().unwrap();
    let mut refs = Vec::new();
    for i in 0..3u64 {
        let tag = format!("big{i}");
        crate::support::write_oci_image(
            layout.path(),
            &tag,
            &ImageSpec::new(
                500 + i,
                vec![LayerSpec::new(1, 4096), LayerSpec::new(600 + i, 30 * MIB)],
            ),
        );
        let repo = format!("heavy/img{i}");
        crate::support::skopeo_push(layout.path(), &tag, &format!("{repo}:1"), &source);
        refs.push((format!("img{i}"), source.reference(&format!("{repo}:1"))));
    }
    let refs: Vec<(&str, &str)> = refs.iter().map(|(k, r)| (k.as_str(), r.as_str())).collect();
    let bundle = support::push_bundle(&source, h, "heavy/bundle", &refs);
    let archive = h.join("heavy.tar");
    export_bundle(h, &bundle.image.tag_ref, &archive, &["--unsigned"]);

    let interrupted = Registry::start_plain();
    let import_args = |reg: &Registry| -> Vec<String> {
        vec![
            "import".into(),
            "-q".into(),
            s(&archive).into(),
            "--to-repo".into(),
            reg.reference("inside/heavy"),
            "--allow-unsigned".into(),
            "--concurrency".into(),
            "1".into(),
        ]
    };
    let mut child = support::airlift_cmd(h)
        .args(import_args(&interrupted))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once the first big layer is committed (and before the last one is).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, big) = stored_blobs(&interrupted, MIB);
        if big >= 1 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "import ended before it could be interrupted"
        );
        assert!(Instant::now() < deadline, "no layer arrived within 60 s");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "import finished before the kill");
    let (_, big) = stored_blobs(&interrupted, MIB);
    assert!(
        big < 3,
        "all layers were already pushed: the kill came too late"
    );
    assert_eq!(
        registry_tags(&interrupted, "inside/heavy"),
        Vec::<String>::new()
    );
    assert_eq!(manifest_links(&interrupted.storage_dir()), 0);

    // The re-run completes; the result equals an uninterrupted import into a fresh registry.
    let args = import_args(&interrupted);
    expect_ok(&airlift(
        h,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let fresh = Registry::start_plain();
    let args = import_args(&fresh);
    expect_ok(&airlift(
        h,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let resumed_state = registry_state(&interrupted);
    let fresh_state = registry_state(&fresh);
    assert_eq!(resumed_state.len(), 1);
    assert!(resumed_state["inside/heavy"].contains_key("v1"));
    assert!(
        resumed_state == fresh_state,
        "resumed and fresh imports differ"
    );
    assert_eq!(stored_blobs(&interrupted, 0), stored_blobs(&fresh, 0));
}

#[test]
fn require_signatures_counts_distinct_trusted_signers() {
    let source = Registry::start_plain();
    let target = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let layout = tempfile::tempdir().unwrap();
    let img = support::write_oci_image(
        layout.path(),
        "x",
        &ImageSpec::new(77, vec![LayerSpec::new(770, 4096)]),
    );
    crate::support::skopeo_push(layout.path(), "x", "sig/app:1", &source);
    let (k1, p1) = keygen(h, "alice");
    let (k2, p2) = keygen(h, "bob");
    let root = source.reference("sig/app:1");
    let two = h.join("two.tar");
    let one = h.join("one.tar");
    expect_ok(&airlift(
        h,
        &[
            "export",
            "-q",
            "-i",
            &root,
            "-o",
            s(&two),
            "--sign-key",
            s(&k1),
            "--sign-key",
            s(&k2),
        ],
    ));
    expect_ok(&airlift(
        h,
        &[
            "export",
            "-q",
            "-i",
            &root,
            "-o",
            s(&one),
            "--sign-key",
            s(&k1),
        ],
    ));
    let trust = [
        "--trust",
        s(&p1),
        "--trust",
        s(&p2),
        "--require-signatures",
        "2",
    ];
    let verify = |archive: &Path| {
        let mut args = vec!["verify", s(archive)];
        args.extend_from_slice(&trust);
        airlift(h, &args)
    };
    expect_ok(&verify(&two));
    let text = expect_code(&verify(&one), 1);
    assert!(text.contains("1 valid signature(s)"), "{text}");
    // Two trusted keys, but the same signer twice does not count as two.
    let text = expect_code(
        &airlift(
            h,
            &[
                "verify",
                s(&one),
                "--trust",
                s(&p1),
                "--trust",
                s(&p1),
                "--require-signatures",
                "2",
            ],
        ),
        1,
    );
    assert!(text.contains("2 required"), "{text}");

    let import = |archive: &Path, repo: &str| {
        let to = target.reference(repo);
        let mut args = vec!["import", "-q", s(archive), "--to-repo", &to];
        args.extend_from_slice(&trust);
        airlift(h, &args)
    };
    assert!(!import(&one, "one/app").status.success());
    assert_eq!(support::catalog(&target), Vec::<String>::new());
    expect_ok(&import(&two, "two/app"));
    assert_eq!(
        registry_tags(&target, "two/app"),
        vec![
            "1".to_owned(),
            format!("{}.imgpkg", img.manifest_digest.tag_form())
        ]
    );
}

#[test]
fn to_registry_keeps_repository_paths_and_writes_relocations() {
    let source = Registry::start_plain();
    let target = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let corpus = Corpus::build(&source, h);
    let archive = h.join("corpus.tar");
    export_bundle(h, &corpus.outer.image.tag_ref, &archive, &["--unsigned"]);
    let prefix = format!("{}/mirror", target.host());
    let lock_out = h.join("lock.yml");
    let out = expect_ok(&airlift(
        h,
        &[
            "import",
            "-q",
            s(&archive),
            "--to-registry",
            &prefix,
            "--allow-unsigned",
            "--lock-output",
            s(&lock_out),
        ],
    ));

    // One repository per source repository, under the prefix.
    let mut want_repos: Vec<String> = corpus
        .images
        .iter()
        .chain([&corpus.index, &corpus.nested.image, &corpus.outer.image])
        .map(|i| format!("mirror/{}", i.repo))
        .collect();
    want_repos.sort();
    assert_eq!(support::catalog(&target), want_repos, "{out}");

    // Locked images keep their content alive with imgpkg tags, the root keeps its tag, and
    // each bundle gets airlift's relocations image.
    let tag_of = |d: &airlift::digest::Digest| format!("{}.imgpkg", d.tag_form());
    for (img, locked_by) in [
        (&corpus.images[0], "outer"),
        (&corpus.images[1], "outer"),
        (&corpus.index, "outer"),
        (&corpus.images[2], "nested"),
    ] {
        assert_eq!(
            registry_tags(&target, &format!("mirror/{}", img.repo)),
            vec![tag_of(&img.digest)],
            "{} (locked by {locked_by})",
            img.repo
        );
        let raw = crate::support::skopeo_inspect_raw(
            &format!("mirror/{}@{}", img.repo, img.digest),
            &target,
        );
        assert_eq!(support::sha256_digest(&raw), img.digest);
    }
    // Every platform of the index came along.
    for child in &corpus.index_written.images {
        let raw = support::skopeo_inspect_raw(
            &format!("mirror/corpus/multi@{}", child.manifest_digest),
            &target,
        );
        assert_eq!(raw, child.manifest);
    }
    let relocations = |b: &support::CorpusBundle| {
        format!("{}.image-relocations.airlift", b.image.digest.tag_form())
    };
    let outer_tags = registry_tags(&target, "mirror/corpus/outer");
    assert!(outer_tags.contains(&"v1".to_owned()), "{outer_tags:?}");
    assert!(
        outer_tags.contains(&relocations(&corpus.outer)),
        "{outer_tags:?}"
    );
    let nested_tags = registry_tags(&target, "mirror/corpus/nested");
    assert!(
        nested_tags.contains(&tag_of(&corpus.nested.image.digest)),
        "{nested_tags:?}"
    );
    assert!(
        nested_tags.contains(&relocations(&corpus.nested)),
        "{nested_tags:?}"
    );
    let served = support::skopeo_inspect_raw("mirror/corpus/outer:v1", &target);
    assert_eq!(served, corpus.outer.manifest);

    let lock: Value = serde_norway::from_str(&std::fs::read_to_string(&lock_out).unwrap()).unwrap();
    assert_eq!(lock["kind"], "BundleLock");
    assert_eq!(
        lock["bundle"]["image"],
        format!("{prefix}/corpus/outer@{}", corpus.outer.image.digest)
    );
    assert_eq!(lock["bundle"]["tag"], "v1");

    // `pull -b` finds airlift's relocations image next to the bundle and rewrites each lock
    // entry to where the image went, keeping annotations and order.
    let pulled = h.join("pulled");
    let stdout = expect_ok(&airlift(
        h,
        &[
            "pull",
            "-b",
            &format!("{prefix}/corpus/outer:v1"),
            "-o",
            s(&pulled),
        ],
    ));
    assert!(
        stdout.contains("was relocated (airlift --to-registry)"),
        "{stdout}"
    );
    let original: Value = serde_norway::from_str(&corpus.outer.lock_text).unwrap();
    let rewritten: Value = serde_norway::from_str(
        &std::fs::read_to_string(pulled.join(".imgpkg/images.yml")).unwrap(),
    )
    .unwrap();
    let (before, after) = (
        original["images"].as_array().unwrap(),
        rewritten["images"].as_array().unwrap(),
    );
    assert_eq!(before.len(), corpus.outer.lock_images.len());
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(after) {
        assert_eq!(b["annotations"], a["annotations"], "annotations kept");
        let old = b["image"].as_str().unwrap();
        let (old_repo, digest) = old.split_once('@').unwrap();
        let path = old_repo.split_once('/').unwrap().1;
        assert_eq!(
            a["image"].as_str().unwrap(),
            format!("{prefix}/{path}@{digest}"),
            "{old} moved under the prefix with its path"
        );
    }
}

#[test]
fn zstd_archive_imports_to_the_same_result_as_plain() {
    let source = Registry::start_plain();
    let target = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let corpus = Corpus::build(&source, h);
    let (key, pubkey) = keygen(h, "k");
    for (name, extra) in [("plain", None), ("zstd", Some("--zstd"))] {
        let archive = h.join(format!("{name}.tar"));
        let mut args = vec![
            "export",
            "-q",
            "-b",
            &corpus.outer.image.tag_ref,
            "-o",
            s(&archive),
            "--sign-key",
            s(&key),
        ];
        args.extend(extra);
        expect_ok(&airlift(h, &args));
        expect_ok(&airlift(h, &["verify", s(&archive), "--trust", s(&pubkey)]));
        expect_ok(&airlift(
            h,
            &[
                "import",
                "-q",
                s(&archive),
                "--to-repo",
                &target.reference(&format!("{name}/outer")),
                "--trust",
                s(&pubkey),
            ],
        ));
    }
    let state = registry_state(&target);
    assert_eq!(state.len(), 2, "{:?}", state.keys());
    assert!(
        state["zstd/outer"] == state["plain/outer"],
        "zstd and plain imports differ"
    );
    // Every image of the corpus is there by digest.
    for d in corpus.blobs.keys() {
        let resp = support::http_get(&target, &format!("/v2/zstd/outer/blobs/{d}"));
        // Manifests are not blobs to the registry API; configs and layers are.
        let is_manifest = corpus.images.iter().any(|i| i.digest.to_string() == *d)
            || corpus.index.digest.to_string() == *d
            || corpus
                .index_written
                .images
                .iter()
                .any(|i| i.manifest_digest.to_string() == *d)
            || [&corpus.outer, &corpus.nested]
                .iter()
                .any(|b| b.image.digest.to_string() == *d);
        if !is_manifest {
            assert_eq!(resp.status, 200, "blob {d} missing in zstd/outer");
        }
    }
}
