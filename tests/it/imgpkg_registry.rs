//! `--to-registry` keeps repository paths and also leaves each bundle's repository the way
//! `imgpkg copy --to-repo` leaves it, so the stock imgpkg (and kapp-controller) rewrite the
//! lock to the destination: checked against imgpkg 0.43.1's golden tag set and lock.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::behaviour::{golden_images, push_golden};
use crate::support::fixtures::{GOLDEN_HOST, fixtures, golden};
use crate::support::proxy::{Fault, FaultProxy};
use crate::support::{self, Corpus, Registry, airlift, expect_ok, registry_tags, s};

/// The gunzipped layer of the one-layer image at `repo:tag` on `reg`.
fn layer_tar(reg: &Registry, repo: &str, tag: &str) -> Vec<u8> {
    let raw = support::skopeo_inspect_raw(&format!("{repo}:{tag}"), reg);
    let m: Value = serde_json::from_slice(&raw).unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap();
    let gz = support::http_get(reg, &format!("/v2/{repo}/blobs/{layer}"));
    assert_eq!(gz.status, 200, "{repo}:{tag} layer {layer}");
    let mut tar = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz.body[..]), &mut tar).unwrap();
    tar
}

#[test]
fn to_registry_leaves_the_bundle_repository_as_imgpkg_copy_does() {
    let src = Registry::start_plain();
    let dst = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let images = golden_images();
    push_golden(&src, "guestbook-bundle", &images);
    let archive = h.join("guestbook.tar");
    expect_ok(&airlift(
        h,
        &[
            "export",
            "-q",
            "-b",
            &src.reference("guestbook-bundle:1.0"),
            "-o",
            s(&archive),
            "--unsigned",
        ],
    ));
    // Delay(0) rules change nothing; the proxy logs each request they match.
    let proxy = FaultProxy::start(dst.port());
    for filter in ["POST ", "PUT "] {
        proxy.inject(Fault::Delay(Duration::ZERO), 10_000, filter);
    }
    let out = airlift(
        h,
        &[
            "import",
            s(&archive),
            "--to-registry",
            &proxy.reference("airgap"),
            "--allow-unsigned",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    expect_ok(&out);
    let bundle_repo = "airgap/guestbook-bundle";
    assert!(
        stderr.contains(&format!(
            "{bundle_repo} also hosts the 3 manifest(s) its bundle lock reaches"
        )),
        "{stderr}"
    );

    // No blob is sent twice: the bundle repository gets the images by mount.
    let log: Vec<String> = proxy
        .log()
        .into_iter()
        .map(|l| l.replace("%3A", ":").replace("%2F", "/"))
        .collect();
    for img in &images {
        for layer in &img.layers {
            let d = support::sha256_digest(layer).to_string();
            let uploads = log
                .iter()
                .filter(|l| l.starts_with("PUT ") && l.contains(&format!("digest={d}")))
                .count();
            assert!(uploads <= 1, "{d} uploaded {uploads} times: {log:#?}");
        }
    }
    assert!(
        log.iter().any(
            |l| l.starts_with(&format!("POST /v2/{bundle_repo}/blobs/uploads"))
                && l.contains("mount=")
        ),
        "{log:#?}"
    );

    // imgpkg's tag set (the locations image's own tag aside: Go's gzip bytes differ), plus
    // airlift's relocations image and its tag.
    let golden_tags: Value = serde_json::from_str(&golden("tags-after-copy.json")).unwrap();
    assert_eq!(golden_tags["name"], bundle_repo);
    let bundle_digest = support::sha256_digest(&images[0].manifest);
    let locations_tag = format!("{}.image-locations.imgpkg", bundle_digest.tag_form());
    let relocations_tag = format!("{}.image-relocations.airlift", bundle_digest.tag_form());
    let imgpkg_tag_of = |raw: &[u8]| format!("{}.imgpkg", support::sha256_digest(raw).tag_form());
    let golden_locations_tag =
        imgpkg_tag_of(&std::fs::read(fixtures().join("locations.manifest.json")).unwrap());
    let our_locations_tag = imgpkg_tag_of(&support::skopeo_inspect_raw(
        &format!("{bundle_repo}:{locations_tag}"),
        &dst,
    ));
    let mut want: BTreeSet<String> = golden_tags["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .map(|t| {
            if t == golden_locations_tag {
                our_locations_tag.clone()
            } else {
                t
            }
        })
        .collect();
    want.insert(relocations_tag.clone());
    want.insert(imgpkg_tag_of(&support::skopeo_inspect_raw(
        &format!("{bundle_repo}:{relocations_tag}"),
        &dst,
    )));
    let got: BTreeSet<String> = registry_tags(&dst, bundle_repo).into_iter().collect();
    assert_eq!(got, want);
    // The locations image holds imgpkg's exact layer tar.
    assert!(
        layer_tar(&dst, bundle_repo, &locations_tag)
            == std::fs::read(fixtures().join("locations.layer.tar")).unwrap()
    );

    // imgpkg's rule: with the locations image there, `imgpkg pull -b` rewrites each entry to
    // the bundle repository. Every entry of the lock imgpkg writes then is served, exactly.
    let relocated = golden("imgpkg-pull-relocated.images.yml").replace(GOLDEN_HOST, &dst.host());
    let lock: Value = serde_norway::from_str(&relocated).unwrap();
    let entries = lock["images"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    for e in entries {
        let at = e["image"].as_str().unwrap();
        let path = at.strip_prefix(&format!("{}/", dst.host())).unwrap();
        assert!(path.starts_with(&format!("{bundle_repo}@")), "{at}");
        let raw = support::skopeo_inspect_raw(path, &dst);
        assert!(images.iter().any(|i| i.manifest == raw), "{at}");
        // Its blobs are in the bundle repository too (a pull by this reference works).
        let m: Value = serde_json::from_slice(&raw).unwrap();
        let config = m["config"]["digest"].as_str().unwrap();
        let resp = support::http_get(&dst, &format!("/v2/{bundle_repo}/blobs/{config}"));
        assert_eq!(resp.status, 200, "{at} config");
    }

    // The paths are kept as before: each image under its own path, with its imgpkg tag.
    for (repo, img) in [
        ("airgap/google_samples/gb-frontend", &images[1..]),
        ("airgap/library/redis", &images[1..]),
    ] {
        let tags = registry_tags(&dst, repo);
        assert_eq!(tags.len(), 1, "{repo}: {tags:?}");
        assert!(
            img.iter().any(|i| tags[0] == imgpkg_tag_of(&i.manifest)),
            "{repo}: {tags:?}"
        );
    }
    // airlift's own pull reads its relocations image and points at the path-keeping copies
    // (named by the address the import used: the proxy's).
    let pulled = h.join("pulled");
    expect_ok(&airlift(
        h,
        &[
            "pull",
            "-b",
            &dst.reference(&format!("{bundle_repo}:1.0")),
            "-o",
            s(&pulled),
        ],
    ));
    let ours = std::fs::read_to_string(pulled.join(".imgpkg/images.yml")).unwrap();
    assert!(
        ours.contains(&format!("{}@", proxy.reference("airgap/library/redis"))),
        "{ours}"
    );
}

/// Nested bundles: each bundle's repository hosts everything its lock reaches (imgpkg pulls
/// a nested bundle from the outer bundle's repository and looks for its images there).
#[test]
fn to_registry_nested_bundles_each_repository_hosts_its_locked_images() {
    let src = Registry::start_plain();
    let dst = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let corpus = Corpus::build(&src, h);
    let hosts = |repo: &str, digests: &[&airlift::digest::Digest]| {
        let tags = registry_tags(&dst, repo);
        for d in digests {
            assert!(
                tags.contains(&format!("{}.imgpkg", d.tag_form())),
                "{repo} lacks the tag of {d}: {tags:?}"
            );
            support::skopeo_inspect_raw(&format!("{repo}@{d}"), &dst);
        }
        tags
    };
    let locations =
        |b: &support::CorpusBundle| format!("{}.image-locations.imgpkg", b.image.digest.tag_form());
    let every = [
        &corpus.images[0].digest,
        &corpus.images[1].digest,
        &corpus.images[2].digest,
        &corpus.index.digest,
        &corpus.nested.image.digest,
        &corpus.outer.image.digest,
    ];
    // The same placement through import and through copy.
    let archive = h.join("corpus.tar");
    expect_ok(&airlift(
        h,
        &[
            "export",
            "-q",
            "-b",
            &corpus.outer.image.tag_ref,
            "-o",
            s(&archive),
            "--unsigned",
        ],
    ));
    expect_ok(&airlift(
        h,
        &[
            "import",
            "-q",
            s(&archive),
            "--to-registry",
            &dst.reference("imported"),
            "--allow-unsigned",
        ],
    ));
    expect_ok(&airlift(
        h,
        &[
            "copy",
            "-q",
            "-b",
            &corpus.outer.image.tag_ref,
            "--to-registry",
            &dst.reference("copied"),
        ],
    ));
    for prefix in ["imported", "copied"] {
        let outer = format!("{prefix}/corpus/outer");
        let tags = hosts(&outer, &every);
        assert!(tags.contains(&locations(&corpus.outer)), "{tags:?}");
        assert!(tags.contains(&locations(&corpus.nested)), "{tags:?}");
        assert!(tags.contains(&"v1".to_owned()), "{tags:?}");
        // Every platform of the index is in the outer repository too.
        for child in &corpus.index_written.images {
            let raw =
                support::skopeo_inspect_raw(&format!("{outer}@{}", child.manifest_digest), &dst);
            assert_eq!(raw, child.manifest);
        }
        let nested = format!("{prefix}/corpus/nested");
        let tags = hosts(
            &nested,
            &[&corpus.images[2].digest, &corpus.nested.image.digest],
        );
        assert!(tags.contains(&locations(&corpus.nested)), "{tags:?}");
        assert!(!tags.contains(&locations(&corpus.outer)), "{tags:?}");
        // Plain images keep only their own content.
        assert_eq!(
            registry_tags(&dst, &format!("{prefix}/corpus/app-a")),
            vec![format!("{}.imgpkg", corpus.images[0].digest.tag_form())]
        );
    }
    // A recursive pull of the outer bundle works from the destination alone.
    drop(src);
    let pulled = h.join("pulled");
    expect_ok(&airlift(
        h,
        &[
            "pull",
            "-r",
            "-b",
            &dst.reference("imported/corpus/outer:v1"),
            "-o",
            s(&pulled),
        ],
    ));
    assert!(pulled.join(".imgpkg/bundles").is_dir());
}
