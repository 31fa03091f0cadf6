//! Behaviour of the CLI that a refactor of the transfer engine must keep: dry runs, delta
//! refusals, imgpkg's tag set, resume refusals, registry flags, exit codes and mounts.
//!
//! Every test drives the real binary against real `docker-registry` instances on 127.0.0.1,
//! and looks at what the registry really stores (its API and its storage directory), not only
//! at what airlift says it did.

use crate::support;
use crate::support::{
    blob_entry_name as blob_entry, flip_entry as flip, keygen, push_images, tar_entry as entry,
};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::{
    ImageSpec, LayerSpec, Registry, WrittenImage, airlift, airlift_cmd, expect_code, expect_ok,
    output_text, registry_state, s,
};
use serde_json::Value;

/// Fixed archive creation time, so that two exports of the same source are byte-identical.
const EPOCH: &str = "1767225600";

/// `airlift ARGS` with a fixed SOURCE_DATE_EPOCH.
fn run(home: &Path, args: &[&str]) -> Output {
    airlift_cmd(home)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args(args)
        .output()
        .expect("run airlift")
}

/// Every file under a registry's storage dir (relative path → size): blobs, links, uploads.
/// Equal snapshots mean the registry stored nothing new, not even an unfinished upload.
fn storage_files(reg: &Registry) -> BTreeMap<String, u64> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, u64>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, m.len());
            }
        }
    }
    let mut out = BTreeMap::new();
    let root = reg.storage_dir();
    walk(&root, &root, &mut out);
    out
}

/// Digests (`sha256:…`) of the blobs in a registry's blob store, whatever repository links them.
fn stored_blob_digests(reg: &Registry) -> BTreeSet<String> {
    storage_files(reg)
        .keys()
        .filter_map(|p| {
            let rest = p.strip_prefix("docker/registry/v2/blobs/sha256/")?;
            let (_, hex) = rest.strip_suffix("/data")?.split_once('/')?;
            Some(format!("sha256:{hex}"))
        })
        .collect()
}

/// A bundle locking two small images, pushed to `reg`; returns it and the images.
fn small_bundle(
    reg: &Registry,
    home: &Path,
    prefix: &str,
) -> (support::CorpusBundle, Vec<WrittenImage>) {
    let a = format!("{prefix}/a:1.0");
    let b = format!("{prefix}/b:1.0");
    let images = push_images(
        reg,
        &[
            (
                &a,
                ImageSpec::new(
                    900,
                    vec![
                        LayerSpec::new(901, 64 * 1024),
                        LayerSpec::new(902, 16 * 1024),
                    ],
                ),
            ),
            (
                &b,
                ImageSpec::new(
                    903,
                    vec![
                        LayerSpec::new(901, 64 * 1024),
                        LayerSpec::new(904, 24 * 1024),
                    ],
                ),
            ),
        ],
    );
    let bundle = support::push_bundle(
        reg,
        home,
        &format!("{prefix}/bundle"),
        &[("a", &reg.reference(&a)), ("b", &reg.reference(&b))],
    );
    (bundle, images)
}

// ---------------------------------------------------------------------------------------------
// import --dry-run

/// A dry run verifies the whole archive (signatures and every blob, also blobs the destination
/// already has) and prints the plan, but leaves the destination byte for byte as it was.
#[test]
fn import_dry_run_verifies_everything_and_pushes_nothing() {
    let source = Registry::start_plain();
    let target = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let (bundle, images) = small_bundle(&source, h, "dry");
    let (key, public) = keygen(h, "release");
    let archive = h.join("dry.tar");
    expect_ok(&run(
        h,
        &[
            "export",
            "-q",
            "-b",
            &bundle.image.tag_ref,
            "-o",
            s(&archive),
            "--sign-key",
            s(&key),
        ],
    ));
    let good = std::fs::read(&archive).unwrap();
    let layer = images[1].layer_digests[1].to_string();
    let tampered = h.join("tampered.tar");
    std::fs::write(&tampered, flip(&good, &blob_entry(&layer))).unwrap();

    // The destination is not empty, so "unchanged" means more than "still empty".
    push_images(
        &target,
        &[(
            "other/app:1",
            ImageSpec::new(910, vec![LayerSpec::new(911, 8 * 1024)]),
        )],
    );
    let to_repo = target.reference("inside/app");
    let dry_run = |a: &Path| {
        run(
            h,
            &[
                "import",
                "-q",
                s(a),
                "--to-repo",
                &to_repo,
                "--trust",
                s(&public),
                "--dry-run",
            ],
        )
    };
    let before = (registry_state(&target), storage_files(&target));

    let out = dry_run(&archive);
    let stdout = expect_ok(&out);
    let text = output_text(&out);
    assert!(text.contains("dry run: archive verifies"), "{text}");
    // The plan names where the bundle would go.
    assert!(
        stdout.contains(&format!("{} -> {to_repo}", bundle.image.tag_ref)),
        "{stdout}"
    );
    assert!(
        (registry_state(&target), storage_files(&target)) == before,
        "a dry run changed the destination"
    );

    let text = expect_code(&dry_run(&tampered), 1);
    assert!(text.contains(layer.trim_start_matches("sha256:")), "{text}");
    assert!(
        (registry_state(&target), storage_files(&target)) == before,
        "a failed dry run changed the destination"
    );

    // Once the destination holds every blob, a dry run must still read and hash them all.
    expect_ok(&run(
        h,
        &[
            "import",
            "-q",
            s(&archive),
            "--to-repo",
            &to_repo,
            "--trust",
            s(&public),
        ],
    ));
    let after_import = (registry_state(&target), storage_files(&target));
    assert!(after_import != before, "the real import pushed nothing");
    let text = expect_code(&dry_run(&tampered), 1);
    assert!(text.contains(layer.trim_start_matches("sha256:")), "{text}");
    assert!(
        (registry_state(&target), storage_files(&target)) == after_import,
        "a failed dry run changed the destination"
    );
}

// ---------------------------------------------------------------------------------------------
// verify exit codes

/// Scripts tell "the archive is bad" (1) from "I called it wrong" (2): both must stay distinct.
#[test]
fn verify_exits_0_good_1_failed_check_2_usage_error() {
    let source = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    push_images(
        &source,
        &[(
            "codes/app:1",
            ImageSpec::new(920, vec![LayerSpec::new(921, 32 * 1024)]),
        )],
    );
    let (key, public) = keygen(h, "release");
    let (_, stranger) = keygen(h, "stranger");
    let archive = h.join("codes.tar");
    expect_ok(&run(
        h,
        &[
            "export",
            "-q",
            "-i",
            &source.reference("codes/app:1"),
            "-o",
            s(&archive),
            "--sign-key",
            s(&key),
        ],
    ));
    let bytes = std::fs::read(&archive).unwrap();
    let entries = support::tar_entries(&bytes);
    let layer = entries
        .iter()
        .filter(|e| e.name.starts_with("blobs/"))
        .max_by_key(|e| e.size)
        .unwrap()
        .name
        .clone();
    let tampered = h.join("tampered.tar");
    std::fs::write(&tampered, flip(&bytes, &layer)).unwrap();
    let (a, p, t, st) = (s(&archive), s(&public), s(&tampered), s(&stranger));

    expect_code(&airlift(h, &["verify", a, "--trust", p]), 0);
    expect_code(&airlift(h, &["verify", a, "--allow-unsigned"]), 0);
    expect_code(&airlift(h, &["verify", a, "--trust", p, "--json"]), 0);

    let failed: &[&[&str]] = &[
        &["verify", t, "--trust", p],
        &["verify", t, "--allow-unsigned"],
        &["verify", t, "--trust", p, "--json"],
        // Signed, but not by a trusted key.
        &["verify", a, "--trust", st],
        &["verify", a, "--trust", p, "--require-signatures", "2"],
    ];
    for args in failed {
        let out = airlift(h, args);
        let text = expect_code(&out, 1);
        if args.contains(&"--json") {
            let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
            assert_eq!(report["ok"], false, "{text}");
        } else {
            assert!(text.contains("FAILED"), "{args:?}: {text}");
        }
    }

    let missing = h.join("no-such.tar");
    let usage: &[&[&str]] = &[
        &["verify", a],
        &["verify", "--trust", p],
        &["verify", a, "--trust", p, "--allow-unsigned"],
        &["verify", a, "--trust", p, "--no-such-flag"],
        &["verify", a, "--trust", p, "--require-signatures", "two"],
        &["verify", s(&missing), "--bogus"],
    ];
    for args in usage {
        let out = airlift(h, args);
        let text = expect_code(&out, 2);
        assert!(text.starts_with("error: "), "{args:?}: {text}");
        assert!(out.stdout.is_empty(), "{args:?}: usage errors go to stderr");
    }
}

/// `--require-signatures` is declared `requires = "trust"`: with `--allow-unsigned` instead it
/// can never be met, so it must be refused as a usage error rather than silently dropped.
#[test]
fn verify_require_signatures_without_trust_is_a_usage_error() {
    let source = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    push_images(
        &source,
        &[(
            "codes/app:1",
            ImageSpec::new(920, vec![LayerSpec::new(921, 32 * 1024)]),
        )],
    );
    let archive = h.join("codes.tar");
    expect_ok(&run(
        h,
        &[
            "export",
            "-q",
            "-i",
            &source.reference("codes/app:1"),
            "-o",
            s(&archive),
            "--unsigned",
        ],
    ));
    expect_code(&airlift(h, &["verify", s(&archive), "--allow-unsigned"]), 0);
    let text = expect_code(
        &airlift(
            h,
            &[
                "verify",
                s(&archive),
                "--allow-unsigned",
                "--require-signatures",
                "2",
            ],
        ),
        2,
    );
    assert!(text.contains("--require-signatures"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// a delta whose base is only partly at the destination

/// An image to push: `(repo:tag, spec)`.
type Named = (&'static str, ImageSpec);

/// The images of release 1.0 and 1.1: every image shares one base layer; `web` is in both
/// releases unchanged.
fn release_specs() -> (Vec<Named>, Vec<Named>) {
    let base_layer = LayerSpec::new(50, 300 * 1024);
    let old = vec![
        (
            "rel/api:1.0",
            ImageSpec::new(51, vec![base_layer, LayerSpec::new(52, 100 * 1024)]),
        ),
        (
            "rel/web:1.0",
            ImageSpec::new(53, vec![base_layer, LayerSpec::new(54, 90 * 1024)]),
        ),
    ];
    let new = vec![
        (
            "rel/api:1.1",
            ImageSpec::new(55, vec![base_layer, LayerSpec::new(56, 110 * 1024)]),
        ),
        (
            "rel/jobs:1.1",
            ImageSpec::new(57, vec![base_layer, LayerSpec::new(58, 80 * 1024)]),
        ),
    ];
    (old, new)
}

/// The refusal must come before the first upload: a half-pushed delta would leave orphan blobs
/// and, worse, suggest to an operator that part of the release arrived.
#[test]
fn delta_over_a_partly_present_base_is_refused_before_any_blob_is_uploaded() {
    let src = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let (key, public) = keygen(h, "release");
    let (old_specs, new_specs) = release_specs();
    let old = push_images(&src, &old_specs);
    push_images(&src, &new_specs);
    let r = |t: &str| src.reference(t);
    let b10 = support::push_bundle(
        &src,
        h,
        "rel/bundle-1.0",
        &[("api", &r("rel/api:1.0")), ("web", &r("rel/web:1.0"))],
    );
    let b11 = support::push_bundle(
        &src,
        h,
        "rel/bundle-1.1",
        &[
            ("api", &r("rel/api:1.1")),
            ("web", &r("rel/web:1.0")),
            ("jobs", &r("rel/jobs:1.1")),
        ],
    );
    let out = tempfile::tempdir().unwrap();
    let full10 = out.path().join("app-1.0.tar");
    let delta = out.path().join("app-1.1.tar");
    for (b, o, since) in [(&b10, &full10, None), (&b11, &delta, Some(&full10))] {
        let mut args = vec![
            "export",
            "-q",
            "-b",
            &b.image.tag_ref,
            "-o",
            s(o),
            "--sign-key",
            s(&key),
        ];
        if let Some(base) = since {
            args.extend(["--since", s(base)]);
        }
        expect_ok(&run(h, &args));
    }
    // What the delta relies on (base: true) and what it carries itself.
    let bytes = std::fs::read(&delta).unwrap();
    let entries = support::tar_entries(&bytes);
    let manifest: Value =
        serde_json::from_slice(entry(&entries, "airlift/manifest.json").data(&bytes)).unwrap();
    let (relied, carried): (Vec<&Value>, Vec<&Value>) = manifest["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .partition(|b| b["base"] == true);
    let digest_of = |b: &&Value| b["digest"].as_str().unwrap().to_owned();
    let relied: BTreeSet<String> = relied.iter().map(digest_of).collect();
    let carried: BTreeSet<String> = carried.iter().map(digest_of).collect();
    let shared_base = old[0].layer_digests[0].to_string();
    let web_layer = old[1].layer_digests[1].to_string();
    assert_eq!(
        relied,
        BTreeSet::from([shared_base.clone(), web_layer.clone()]),
        "the delta should rely on exactly the two layers 1.0 delivered"
    );

    // The destination holds api 1.0 (so the shared base layer) but not web 1.0's own layer.
    let dst = Registry::start_plain();
    push_images(&dst, &[("prod/app:api-1.0", old_specs[0].1.clone())]);
    let before_files = storage_files(&dst);
    let before_state = registry_state(&dst);
    let before_blobs = stored_blob_digests(&dst);
    assert!(before_blobs.contains(&shared_base) && !before_blobs.contains(&web_layer));
    let new_here: Vec<&String> = carried.difference(&before_blobs).collect();
    assert!(!new_here.is_empty(), "the delta carries blobs of its own");

    let to_repo = dst.reference("prod/app");
    let import = || {
        run(
            h,
            &[
                "import",
                "-q",
                s(&delta),
                "--to-repo",
                &to_repo,
                "--trust",
                s(&public),
            ],
        )
    };
    let text = expect_code(&import(), 1);
    assert!(
        text.contains(&web_layer),
        "the missing blob is not named:\n{text}"
    );
    assert!(
        !text.contains(&shared_base),
        "a blob the destination has is named as missing:\n{text}"
    );
    assert!(
        text.contains("app-1.0.tar"),
        "the base is not named:\n{text}"
    );
    // Nothing reached the registry: no blob, no upload session, no link, no tag.
    assert_eq!(
        storage_files(&dst),
        before_files,
        "the refused import stored something"
    );
    assert!(registry_state(&dst) == before_state);
    for d in &new_here {
        let resp = support::http_get(&dst, &format!("/v2/prod/app/blobs/{d}"));
        assert_eq!(resp.status, 404, "{d} was uploaded by a refused import");
    }

    // With the rest of the base in place, the same delta imports: the refusal was about that blob.
    push_images(&dst, &[("prod/app:web-1.0", old_specs[1].1.clone())]);
    expect_ok(&import());
    for d in &new_here {
        let resp = support::http_get(&dst, &format!("/v2/prod/app/blobs/{d}"));
        let is_manifest = manifest["blobs"].as_array().unwrap().iter().any(|b| {
            b["digest"] == d.as_str()
                && ["manifest", "index"].contains(&b["role"].as_str().unwrap())
        });
        if !is_manifest {
            assert_eq!(resp.status, 200, "{d} missing after the import");
        }
    }
    assert!(support::registry_tags(&dst, "prod/app").contains(&"v1".to_owned()));
}

// ---------------------------------------------------------------------------------------------
// import --to-repo creates exactly imgpkg's tag set and lock

/// One image of imgpkg's copy tar: its exact manifest, config and gzip layer bytes.
pub(crate) struct GoldenImage {
    pub(crate) manifest: Vec<u8>,
    pub(crate) config: Vec<u8>,
    pub(crate) layers: Vec<Vec<u8>>,
    pub(crate) tag: String,
}

/// The images of `guestbook.imgpkg-copy.tar` (the golden bundle first), read with the `tar`
/// crate from imgpkg's own format: `manifest.json` plus `sha256-<hex>.tar.gz` per layer.
pub(crate) fn golden_images() -> Vec<GoldenImage> {
    use std::io::Read;
    let path = support::fixtures::fixtures().join("guestbook.imgpkg-copy.tar");
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut archive = tar::Archive::new(std::fs::File::open(&path).unwrap());
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        files.insert(name, data);
    }
    let index: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    index
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let img = &item["Image"];
            let layers = img["Layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| {
                    let d = l["Digest"].as_str().unwrap();
                    let data = files[&format!("{}.tar.gz", d.replacen(':', "-", 1))].clone();
                    assert_eq!(support::sha256_digest(&data).to_string(), d);
                    data
                })
                .collect();
            GoldenImage {
                manifest: img["Manifest"]["Raw"].as_str().unwrap().as_bytes().to_vec(),
                config: img["Config"]["Raw"].as_str().unwrap().as_bytes().to_vec(),
                layers,
                tag: img["Tag"].as_str().unwrap_or_default().to_owned(),
            }
        })
        .collect()
}

/// Pushes exact blob and manifest bytes with the library's registry client (skopeo would
/// convert or refuse imgpkg's Docker manifests in an OCI layout).
pub(crate) fn push_golden(reg: &Registry, repo: &str, images: &[GoldenImage]) {
    use airlift::oci::{Descriptor, RawManifest, media_type};
    use airlift::reference::Reference;
    use airlift::registry::{Registries, RegistryOptions};
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let registries = Registries::new(RegistryOptions::default()).unwrap();
        for (i, img) in images.iter().enumerate() {
            let tag = if img.tag.is_empty() {
                format!("golden-{i}")
            } else {
                img.tag.clone()
            };
            let target = Reference::parse(&reg.reference(&format!("{repo}:{tag}"))).unwrap();
            let client = registries.client(target.registry()).await.unwrap();
            let blobs = std::iter::once((&img.config, media_type::DOCKER_CONFIG)).chain(
                img.layers
                    .iter()
                    .map(|l| (l, media_type::DOCKER_LAYER_GZIP)),
            );
            for (bytes, mt) in blobs {
                let desc = Descriptor {
                    media_type: mt.to_owned(),
                    digest: support::sha256_digest(bytes),
                    size: bytes.len() as u64,
                    platform: None,
                    annotations: None,
                };
                let b = bytes::Bytes::from(bytes.clone());
                client
                    .put_blob(&target, &desc, || {
                        let b = b.clone();
                        async move { Ok(futures::stream::once(async move { Ok(b) })) }
                    })
                    .await
                    .unwrap();
            }
            let m =
                RawManifest::from_bytes(bytes::Bytes::from(img.manifest.clone()), None).unwrap();
            client.put_manifest(&target, &m).await.unwrap();
        }
    });
}

/// imgpkg users pull relocated bundles by these tags and diff lock files in review: the tag
/// set and the `--lock-output` bytes are a compatibility contract, checked against imgpkg
/// 0.43.1's own output for the same bundle (same digests: built from imgpkg's blobs).
#[test]
fn import_to_repo_creates_imgpkgs_tag_set_and_lock() {
    use support::fixtures::{GOLDEN_HOST, fixtures, golden};
    let src = Registry::start_plain();
    let dst = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let images = golden_images();
    assert_eq!(
        images[0].tag, "1.0",
        "the root bundle comes first in imgpkg's tar"
    );
    // Bundle and images in one repository: the walk finds locked images in the bundle's own
    // repository first (as imgpkg does for a relocated bundle), so the lock's 127.0.0.1:5070
    // references need no registry on that port.
    push_golden(&src, "guestbook-bundle", &images);
    let bundle_ref = src.reference("guestbook-bundle:1.0");
    let archive = h.join("guestbook.tar");
    expect_ok(&run(
        h,
        &[
            "export",
            "-q",
            "-b",
            &bundle_ref,
            "-o",
            s(&archive),
            "--unsigned",
        ],
    ));
    let lock_out = h.join("bundle-lock.yml");
    let to_repo = dst.reference("airgap/guestbook-bundle");
    expect_ok(&run(
        h,
        &[
            "import",
            "-q",
            s(&archive),
            "--to-repo",
            &to_repo,
            "--allow-unsigned",
            "--lock-output",
            s(&lock_out),
        ],
    ));

    // The lock: imgpkg's bytes, host substituted.
    assert_eq!(
        std::fs::read_to_string(&lock_out).unwrap(),
        golden("imgpkg-copy.bundle-lock.yml").replace(GOLDEN_HOST, &dst.host())
    );

    // The tags: imgpkg's set, except the locations image's own sha256-<hex>.imgpkg tag. That
    // image's layer is gzip'd by Go's deflate, which is not reproduced, so its manifest digest
    // (and that one tag) differ; everything that decides its content is checked below.
    let golden_tags: Value = serde_json::from_str(&golden("tags-after-copy.json")).unwrap();
    assert_eq!(golden_tags["name"], "airgap/guestbook-bundle");
    let golden_locations = std::fs::read(fixtures().join("locations.manifest.json")).unwrap();
    let golden_locations_tag = format!(
        "{}.imgpkg",
        support::sha256_digest(&golden_locations).tag_form()
    );
    let bundle_digest = support::sha256_digest(&images[0].manifest);
    let locations_tag = format!("{}.image-locations.imgpkg", bundle_digest.tag_form());
    let ours =
        support::skopeo_inspect_raw(&format!("airgap/guestbook-bundle:{locations_tag}"), &dst);
    let our_locations_tag = format!("{}.imgpkg", support::sha256_digest(&ours).tag_form());
    let want: BTreeSet<String> = golden_tags["tags"]
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
    assert_eq!(want.len(), 7, "{want:?}");
    // imgpkg's tags, plus airlift's record of which archive set the moving tags (rollback
    // protection); imgpkg and kapp-controller ignore a tag they do not look for.
    let got: BTreeSet<String> = support::registry_tags(&dst, "airgap/guestbook-bundle")
        .into_iter()
        .collect();
    assert_eq!(got, want);
    assert!(
        support::all_tags(&dst, "airgap/guestbook-bundle")
            .contains(&airlift::transfer::provenance::PROVENANCE_TAG.to_owned())
    );
    assert_eq!(
        support::catalog(&dst),
        vec!["airgap/guestbook-bundle".to_owned()]
    );

    // The locations image is imgpkg's but for the gzip bytes: same config, same layer tar.
    let m: Value = serde_json::from_slice(&ours).unwrap();
    let layer_digest = m["layers"][0]["digest"].as_str().unwrap();
    let layer_size = m["layers"][0]["size"].as_u64().unwrap();
    let g: Value = serde_json::from_slice(&golden_locations).unwrap();
    let expected = String::from_utf8(golden_locations.clone())
        .unwrap()
        .replace(g["layers"][0]["digest"].as_str().unwrap(), layer_digest)
        .replace(
            &format!("\"size\":{}", g["layers"][0]["size"]),
            &format!("\"size\":{layer_size}"),
        );
    assert_eq!(String::from_utf8(ours.clone()).unwrap(), expected);
    let gz = support::http_get(
        &dst,
        &format!("/v2/airgap/guestbook-bundle/blobs/{layer_digest}"),
    );
    assert_eq!(gz.status, 200);
    let mut layer_tar = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(&gz.body[..]),
        &mut layer_tar,
    )
    .unwrap();
    assert_eq!(
        layer_tar,
        std::fs::read(fixtures().join("locations.layer.tar")).unwrap()
    );
    // Every golden image is served at its imgpkg tag with its exact bytes.
    for img in &images {
        let d = support::sha256_digest(&img.manifest);
        let raw = support::skopeo_inspect_raw(
            &format!("airgap/guestbook-bundle:{}.imgpkg", d.tag_form()),
            &dst,
        );
        assert_eq!(raw, img.manifest);
    }
}

// ---------------------------------------------------------------------------------------------
// cross-repository mounts during copy on one registry

/// Relocating within one registry is the common mirror-to-project move; re-sending gigabytes
/// the registry already stores would make it as slow as a copy across the world.
#[test]
fn copy_within_one_registry_mounts_layers_instead_of_uploading_them() {
    use std::time::Duration;
    use support::proxy::{Fault, FaultProxy};
    let reg = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let img = push_images(
        &reg,
        &[(
            "team/a:v1",
            ImageSpec::new(
                940,
                vec![
                    LayerSpec::new(941, 2 * 1024 * 1024),
                    LayerSpec::new(942, 64 * 1024),
                ],
            ),
        )],
    )
    .remove(0);
    let stored_before = stored_blob_digests(&reg);
    // Delay(0) rules change nothing; the proxy logs each request they match.
    let proxy = FaultProxy::start(reg.port());
    for filter in ["POST ", "PATCH ", "PUT ", "GET /v2/team/a/blobs/"] {
        proxy.inject(Fault::Delay(Duration::ZERO), 10_000, filter);
    }
    let out = airlift(
        home.path(),
        &[
            "copy",
            "-q",
            "-i",
            &proxy.reference("team/a:v1"),
            "--to-repo",
            &proxy.reference("team/b"),
        ],
    );
    let text = output_text(&out);
    expect_ok(&out);
    let log: Vec<String> = proxy
        .log()
        .into_iter()
        .map(|l| l.replace("%3A", ":").replace("%2F", "/"))
        .collect();
    let seen =
        |prefix: &str| -> Vec<&String> { log.iter().filter(|l| l.starts_with(prefix)).collect() };
    assert!(seen("PATCH ").is_empty(), "layer data was sent: {log:#?}");
    assert!(
        !seen("PUT ").iter().any(|l| l.contains("/blobs/")),
        "a blob upload was completed instead of mounted: {log:#?}"
    );
    for layer in &img.layer_digests {
        let d = layer.to_string();
        assert!(
            seen("POST /v2/team/b/blobs/uploads/")
                .iter()
                .any(|l| l.contains(&format!("mount={d}")) && l.contains("from=team/a")),
            "no mount request for {d}: {log:#?}"
        );
        assert!(
            !seen("GET /v2/team/a/blobs/").iter().any(|l| l.contains(&d)),
            "layer {d} was read from the source: {log:#?}"
        );
        // The registry links the layer into team/b without storing a second copy.
        let link = reg.storage_dir().join(format!(
            "docker/registry/v2/repositories/team/b/_layers/sha256/{}/link",
            layer.hex()
        ));
        assert!(link.exists(), "{d} not linked into team/b");
        let resp = support::http_get(&reg, &format!("/v2/team/b/blobs/{d}"));
        assert_eq!(resp.status, 200);
        assert_eq!(&support::sha256_digest(&resp.body), layer);
    }
    assert_eq!(
        stored_blob_digests(&reg),
        stored_before,
        "new blob data was stored"
    );
    assert!(
        text.contains(&format!("{} mounted", img.layer_digests.len() + 1)),
        "{text}"
    );
    let served = support::skopeo_inspect_raw(&format!("team/b@{}", img.manifest_digest), &reg);
    assert_eq!(served, img.manifest);
}

// ---------------------------------------------------------------------------------------------
// registry flags against real registries

/// `airlift export -q -i IMAGE -o HOME/NAME.tar --unsigned EXTRA…` with env `vars`.
fn export_image(
    home: &Path,
    image: &str,
    name: &str,
    extra: &[&str],
    vars: &[(&str, &str)],
) -> Output {
    let out = home.join(format!("{name}.tar"));
    let mut cmd = airlift_cmd(home);
    cmd.args(["export", "-q", "-i", image, "-o", s(&out), "--unsigned"])
        .args(extra);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("run airlift")
}

/// `--registry-verify-certs=false` is the escape hatch for a registry whose CA is not at
/// hand; `--registry-insecure` only allows plain HTTP and must not weaken TLS checks.
#[test]
fn verify_certs_false_reaches_a_tls_registry_without_its_ca() {
    let reg = Registry::start_tls_auth();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let img = push_images(
        &reg,
        &[(
            "flags/app:1",
            ImageSpec::new(950, vec![LayerSpec::new(951, 16 * 1024)]),
        )],
    )
    .remove(0);
    let image = reg.reference("flags/app:1");
    let creds = [
        "--registry-username",
        reg.username(),
        "--registry-password",
        reg.password(),
    ];
    let text = expect_code(&export_image(h, &image, "no-ca", &creds, &[]), 1);
    assert!(text.contains("--registry-ca-cert-path"), "{text}");
    assert!(text.contains("--registry-verify-certs=false"), "{text}");
    assert!(!h.join("no-ca.tar").exists());

    let mut insecure = creds.to_vec();
    insecure.push("--registry-insecure");
    let text = expect_code(&export_image(h, &image, "insecure", &insecure, &[]), 1);
    assert!(text.contains("--registry-ca-cert-path"), "{text}");

    let mut unverified = creds.to_vec();
    unverified.push("--registry-verify-certs=false");
    expect_ok(&export_image(h, &image, "unverified", &unverified, &[]));
    let archive = h.join("unverified.tar");
    expect_ok(&airlift(h, &["verify", s(&archive), "--allow-unsigned"]));
    let bytes = std::fs::read(&archive).unwrap();
    let entries = support::tar_entries(&bytes);
    assert_eq!(
        entry(&entries, &blob_entry(&img.manifest_digest.to_string())).data(&bytes),
        &img.manifest[..]
    );
}

/// `--registry-insecure` allows plain HTTP to hosts that are not loopback by name (loopback
/// names always may fall back, as with docker). `2130706433` is 127.0.0.1 written as one
/// number: the resolver and URL parser turn it into 127.0.0.1, but it does not look like a
/// loopback host, so the flag decides. No address other than 127.0.0.1 is contacted.
#[test]
fn registry_insecure_allows_plain_http_to_a_host_not_named_loopback() {
    let reg = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let img = push_images(
        &reg,
        &[(
            "flags/plain:1",
            ImageSpec::new(952, vec![LayerSpec::new(953, 16 * 1024)]),
        )],
    )
    .remove(0);
    let image = format!("2130706433:{}/flags/plain:1", reg.port());
    let out = export_image(
        h,
        &image,
        "https-only",
        &["--registry-retry-count", "0"],
        &[],
    );
    assert!(
        !out.status.success(),
        "plain HTTP used without --registry-insecure:\n{}",
        output_text(&out)
    );
    let text = expect_code(&out, 1);
    // It tried TLS, which a plain-HTTP registry cannot answer.
    assert!(text.contains("https://"), "{text}");
    assert!(
        text.contains(&format!("2130706433:{}", reg.port())),
        "{text}"
    );
    assert!(!h.join("https-only.tar").exists());

    expect_ok(&export_image(
        h,
        &image,
        "insecure",
        &["--registry-insecure"],
        &[],
    ));
    let bytes = std::fs::read(h.join("insecure.tar")).unwrap();
    let entries = support::tar_entries(&bytes);
    for d in &img.layer_digests {
        assert_eq!(
            &support::sha256_digest(entry(&entries, &blob_entry(&d.to_string())).data(&bytes)),
            d
        );
    }
    // The loopback name needs no flag: the fallback is docker's rule for 127.0.0.1.
    expect_ok(&export_image(
        h,
        &reg.reference("flags/plain:1"),
        "loopback",
        &[],
        &[],
    ));
}

/// Writes an executable `docker-credential-NAME` into `bin` that logs each call to
/// `bin/NAME.log` and answers with `user`/`secret`.
fn credential_helper(bin: &Path, name: &str, user: &str, secret: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let log = bin.join(format!("{name}.log"));
    let script = format!(
        "#!/bin/sh\nread -r server\necho \"$1 $server\" >> '{log}'\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{secret}\"}}' \"$server\"\n",
        log = log.display()
    );
    let path = bin.join(format!("docker-credential-{name}"));
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    log
}

/// Calls logged by a helper (empty if it never ran).
fn helper_calls(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Air-gapped registries are often reached through docker's credential helpers; the lookup
/// order (credHelpers for the host, then credsStore) must hold with real helper programs.
#[test]
fn docker_config_creds_store_and_cred_helpers_run_real_helpers() {
    let reg = Registry::start_tls_auth();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    push_images(
        &reg,
        &[(
            "flags/auth:1",
            ImageSpec::new(954, vec![LayerSpec::new(955, 16 * 1024)]),
        )],
    );
    let image = reg.reference("flags/auth:1");
    let bin = tempfile::tempdir().unwrap();
    let store_log = credential_helper(bin.path(), "store", reg.username(), reg.password());
    let helper_log = credential_helper(bin.path(), "hosthelper", reg.username(), reg.password());
    let wrong_log = credential_helper(bin.path(), "wrong", reg.username(), "not-the-password");
    let path = format!("{}:/usr/bin:/bin", bin.path().display());
    let vars = [("PATH", path.as_str())];
    let ca = s(&reg.ca_cert_path()).to_owned();
    let flags = ["--registry-ca-cert-path", ca.as_str()];
    let config = h.join(".docker/config.json");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    let host = reg.host();
    let want_call = format!("get {host}");

    // No credentials anywhere: refused, so any success below is the helpers' doing.
    let text = expect_code(&export_image(h, &image, "anon", &flags, &vars), 1);
    assert!(text.contains("authentication failed"), "{text}");

    std::fs::write(&config, r#"{"credsStore":"store"}"#).unwrap();
    expect_ok(&export_image(h, &image, "store", &flags, &vars));
    assert!(
        helper_calls(&store_log).contains(&want_call),
        "{:?}",
        helper_calls(&store_log)
    );

    // credHelpers for this host wins over credsStore.
    let store_calls = helper_calls(&store_log).len();
    std::fs::write(
        &config,
        format!(r#"{{"credsStore":"store","credHelpers":{{"{host}":"hosthelper"}}}}"#),
    )
    .unwrap();
    expect_ok(&export_image(h, &image, "helper", &flags, &vars));
    assert!(
        helper_calls(&helper_log).contains(&want_call),
        "{:?}",
        helper_calls(&helper_log)
    );
    assert_eq!(
        helper_calls(&store_log).len(),
        store_calls,
        "credsStore asked although credHelpers answered"
    );

    // What the helper answers is what is sent: a wrong secret is refused, naming the helper.
    std::fs::write(&config, r#"{"credsStore":"wrong"}"#).unwrap();
    let text = expect_code(&export_image(h, &image, "wrong", &flags, &vars), 1);
    assert!(helper_calls(&wrong_log).contains(&want_call));
    assert!(text.contains("authentication failed"), "{text}");
    assert!(text.contains("docker-credential-wrong"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// export --resume refuses a source that changed

/// Digests of the whole layer entries of a (cut) archive whose data hashes right.
fn kept_layers(path: &Path, layers: &BTreeSet<String>) -> BTreeSet<String> {
    let bytes = std::fs::read(path).unwrap_or_default();
    support::whole_tar_entries(&bytes)
        .into_iter()
        .filter_map(|e| {
            let d = format!("sha256:{}", e.name.strip_prefix("blobs/sha256/")?);
            (layers.contains(&d) && support::sha256_digest(e.data(&bytes)).to_string() == d)
                .then_some(d)
        })
        .collect()
}

/// Interrupts an export by tag, moves one tag to other content, and resumes: mixing blobs of
/// two different sources into one signed archive would be silent corruption, so the resume
/// must refuse, keep what was written, and resume once the source is back. With `strict`,
/// the refusal must also name the reference that changed.
fn resume_after_a_retag(strict: bool) {
    use std::time::{Duration, Instant};
    use support::proxy::{Fault, FaultProxy};
    let reg = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let (key, _) = keygen(h, "release");
    let spec = |i: u64| {
        ImageSpec::new(
            960 + i,
            vec![
                LayerSpec::new(970 + i, 2 * 1024 * 1024),
                LayerSpec::new(980 + i, 100 * 1024),
            ],
        )
    };
    let names = ["res/img0:v1", "res/img1:v1", "res/img2:v1"];
    let images: Vec<WrittenImage> = names
        .iter()
        .enumerate()
        .map(|(i, n)| push_images(&reg, &[(n, spec(i as u64))]).remove(0))
        .collect();
    let layers: BTreeSet<String> = images
        .iter()
        .flat_map(|i| i.layer_digests.iter().map(|d| d.to_string()))
        .collect();
    let proxy = FaultProxy::start(reg.port());
    let refs: Vec<String> = names.iter().map(|n| proxy.reference(n)).collect();
    let args = |out: &Path, resume: bool| -> Vec<String> {
        let mut v: Vec<String> = ["export", "-q", "--sign-key", s(&key), "-o", s(out)]
            .iter()
            .map(|a| a.to_string())
            .collect();
        for r in &refs {
            v.extend(["-i".to_owned(), r.clone()]);
        }
        if resume {
            v.push("--resume".into());
        }
        v
    };
    let exec = |a: &[String]| run(h, &a.iter().map(String::as_str).collect::<Vec<_>>());
    let whole_dir = tempfile::tempdir().unwrap();
    let cut_dir = tempfile::tempdir().unwrap();
    let whole = whole_dir.path().join("rel.tar");
    let cut = cut_dir.path().join("rel.tar");
    let partial = cut_dir.path().join("rel.tar.partial");
    expect_ok(&exec(&args(&whole, false)));

    // Hold back the last layer the archive writes; kill the export once an earlier layer is
    // on disk (the writer writes in order, so it is stuck before that layer).
    let whole_bytes = std::fs::read(&whole).unwrap();
    let last_layer = support::tar_entries(&whole_bytes)
        .into_iter()
        .filter_map(|e| Some(format!("sha256:{}", e.name.strip_prefix("blobs/sha256/")?)))
        .rfind(|d| layers.contains(d))
        .unwrap();
    proxy.inject(
        Fault::Delay(Duration::from_secs(60)),
        10,
        &format!("/blobs/{last_layer}"),
    );
    let mut child = airlift_cmd(h)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args(args(&cut, false))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while kept_layers(&partial, &layers).is_empty() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "export ended before it could be interrupted"
        );
        assert!(Instant::now() < deadline, "no layer written within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    proxy.clear();
    assert!(
        !cut.exists(),
        "an interrupted export left a complete-looking file"
    );
    let kept = kept_layers(&partial, &layers);
    assert!(!kept.contains(&last_layer));
    let cut_bytes = std::fs::read(&partial).unwrap();

    // img1:v1 now names other content.
    let changed = push_images(&reg, &[(names[1], spec(7))]).remove(0);
    assert_ne!(changed.manifest_digest, images[1].manifest_digest);
    let text = expect_code(&exec(&args(&cut, true)), 1);
    assert!(text.contains("cannot resume"), "{text}");
    assert!(text.contains("changed"), "{text}");
    if strict {
        assert!(
            text.contains(names[1]),
            "the changed reference is not named:\n{text}"
        );
    }
    assert!(!cut.exists());
    assert_eq!(
        std::fs::read(&partial).unwrap(),
        cut_bytes,
        "the refused resume touched the partial file"
    );

    // Back to the original content: the resume keeps the written layers and completes,
    // byte-identical to the uninterrupted export, without fetching kept layers again.
    push_images(&reg, &[(names[1], spec(1))]);
    proxy.inject(Fault::Delay(Duration::ZERO), 10_000, "GET ");
    let out = exec(&args(&cut, true));
    let text = output_text(&out);
    expect_ok(&out);
    assert!(text.contains("resumed: kept"), "{text}");
    assert!(
        std::fs::read(&cut).unwrap() == whole_bytes,
        "resumed archive differs"
    );
    for d in &kept {
        assert!(
            !proxy
                .log()
                .iter()
                .any(|l| l.contains(&format!("/blobs/{d}"))),
            "kept layer {d} fetched again"
        );
    }
}

#[test]
fn export_resume_refuses_a_retagged_source_and_resumes_once_it_is_back() {
    resume_after_a_retag(false);
}

#[test]
fn export_resume_refusal_names_the_changed_reference() {
    resume_after_a_retag(true);
}
