//! Audit features through the real binary against real registries: `inspect` (checked field
//! by field and against its schema), import receipts (`--receipt`, `verify-receipt`), and
//! reproducible exports.

use crate::support;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{
    ImageSpec, LayerSpec, Registry, WrittenImage, WrittenIndex, airlift_cmd, expect_code,
    expect_ok, s,
};
use airlift::digest::Digest;
use serde_json::Value;

const EPOCH: &str = "1767225600";
const EPOCH_RFC3339: &str = "2026-01-01T00:00:00Z";

/// airlift with this file's fixed `SOURCE_DATE_EPOCH`, so timestamps are predictable.
fn airlift(home: &Path, args: &[&str]) -> Output {
    airlift_cmd(home)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args(args)
        .output()
        .expect("run airlift")
}

/// Content built in a registry: an outer bundle locking an inner bundle and a multi-arch
/// index; the inner bundle locks a plain image.
struct World {
    _reg: Registry,
    home: tempfile::TempDir,
    multi: WrittenIndex,
    plain: WrittenImage,
    outer_ref: String,
    outer: Digest,
    inner: Digest,
    inner_lock_ref: String,
    multi_lock_ref: String,
    plain_lock_ref: String,
    /// Every blob the archive must hold: digest → size.
    blobs: BTreeMap<Digest, u64>,
    key: PathBuf,
    public: PathBuf,
    fingerprint: String,
}

fn lock_yaml(entries: &[(&str, &str)]) -> String {
    let mut y =
        String::from("---\napiVersion: imgpkg.carvel.dev/v1alpha1\nkind: ImagesLock\nimages:\n");
    for (image, id) in entries {
        y.push_str(&format!(
            "- annotations:\n    kbld.carvel.dev/id: {id}\n  image: {image}\n"
        ));
    }
    y
}

/// Manifest + config + layers of a single-platform manifest served by the registry.
fn add_manifest_blobs(
    reg: &Registry,
    reference: &str,
    blobs: &mut BTreeMap<Digest, u64>,
) -> Digest {
    let raw = support::skopeo_inspect_raw(reference, reg);
    let d = support::sha256_digest(&raw);
    blobs.insert(d.clone(), raw.len() as u64);
    let v: Value = serde_json::from_slice(&raw).unwrap();
    for desc in std::iter::once(&v["config"]).chain(v["layers"].as_array().unwrap()) {
        blobs.insert(
            desc["digest"].as_str().unwrap().parse().unwrap(),
            desc["size"].as_u64().unwrap(),
        );
    }
    d
}

fn image_blobs(img: &WrittenImage, blobs: &mut BTreeMap<Digest, u64>) {
    blobs.insert(img.manifest_digest.clone(), img.manifest.len() as u64);
    blobs.insert(img.config_digest.clone(), img.config_size);
    for (d, size) in img.layer_digests.iter().zip(&img.layer_sizes) {
        blobs.insert(d.clone(), *size);
    }
}

fn world() -> World {
    let reg = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let dir = home.path();
    let host = reg.host();
    let layout = dir.join("layout");
    // The two platforms share their base layer (dedup).
    let base = LayerSpec::new(1, 40_000);
    let multi = support::write_oci_index(
        &layout,
        "multi",
        &[
            (
                "amd64",
                ImageSpec::new(2, vec![base, LayerSpec::new(3, 5000)]),
            ),
            (
                "arm64",
                ImageSpec::new(4, vec![base, LayerSpec::new(5, 6000)]),
            ),
        ],
    );
    crate::support::skopeo_push(&layout, "multi", "apps/multi:1", &reg);
    let plain = support::write_oci_image(
        &layout,
        "plain",
        &ImageSpec::new(6, vec![LayerSpec::new(7, 3000)]),
    );
    crate::support::skopeo_push(&layout, "plain", "apps/plain:1", &reg);

    let plain_lock_ref = format!("{host}/apps/plain@{}", plain.manifest_digest);
    let inner_dir = dir.join("inner");
    std::fs::create_dir_all(inner_dir.join(".imgpkg")).unwrap();
    std::fs::write(
        inner_dir.join(".imgpkg/images.yml"),
        lock_yaml(&[(&plain_lock_ref, "plain")]),
    )
    .unwrap();
    std::fs::write(inner_dir.join("inner.yaml"), "image: plain\n").unwrap();
    expect_ok(&airlift(
        dir,
        &[
            "push",
            "-b",
            &reg.reference("apps/inner:1"),
            "-f",
            s(&inner_dir),
        ],
    ));
    let mut blobs = BTreeMap::new();
    let inner = add_manifest_blobs(&reg, "apps/inner:1", &mut blobs);

    let inner_lock_ref = format!("{host}/apps/inner@{inner}");
    let multi_lock_ref = format!("{host}/apps/multi@{}", multi.index_digest);
    let outer_dir = dir.join("outer");
    std::fs::create_dir_all(outer_dir.join(".imgpkg")).unwrap();
    std::fs::write(
        outer_dir.join(".imgpkg/images.yml"),
        lock_yaml(&[(&inner_lock_ref, "inner"), (&multi_lock_ref, "multi")]),
    )
    .unwrap();
    std::fs::write(outer_dir.join("outer.yaml"), "images: [inner, multi]\n").unwrap();
    let outer_ref = reg.reference("apps/outer:1");
    expect_ok(&airlift(
        dir,
        &["push", "-b", &outer_ref, "-f", s(&outer_dir)],
    ));
    let outer = add_manifest_blobs(&reg, "apps/outer:1", &mut blobs);

    blobs.insert(multi.index_digest.clone(), multi.index.len() as u64);
    for img in &multi.images {
        image_blobs(img, &mut blobs);
    }
    image_blobs(&plain, &mut blobs);

    let key = dir.join("release");
    let fingerprint = expect_ok(&airlift(dir, &["keygen", "--out", s(&key)]))
        .trim()
        .to_owned();
    World {
        public: PathBuf::from(format!("{}.pub", key.display())),
        key: PathBuf::from(format!("{}.key", key.display())),
        _reg: reg,
        home,
        multi,
        plain,
        outer_ref,
        outer,
        inner,
        inner_lock_ref,
        multi_lock_ref,
        plain_lock_ref,
        blobs,
        fingerprint,
    }
}

fn export(w: &World, out: &Path, extra: &[&str]) {
    let mut args = vec![
        "export",
        "-b",
        &w.outer_ref,
        "-o",
        s(out),
        "--sign-key",
        s(&w.key),
        "-q",
    ];
    args.extend_from_slice(extra);
    expect_ok(&airlift(w.home.path(), &args));
}

fn by_digest<'a>(items: &'a Value, digest: &Digest) -> &'a Value {
    items
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["digest"] == digest.to_string())
        .unwrap_or_else(|| panic!("{digest} not in {items}"))
}

#[test]
fn inspect_reports_what_was_exported() {
    let w = world();
    let dir = w.home.path();
    let archive = dir.join("outer.tar");
    export(&w, &archive, &[]);
    let bytes = std::fs::read(&archive).unwrap();
    let manifest_bytes = support::tar_entries(&bytes)
        .into_iter()
        .find(|e| e.name == "airlift/manifest.json")
        .unwrap()
        .data(&bytes)
        .to_vec();

    let out = airlift(
        dir,
        &["inspect", s(&archive), "--json", "--trust", s(&w.public)],
    );
    let report: Value = serde_json::from_str(&expect_ok(&out)).unwrap();
    crate::support::validate_json_schema("inspect.schema.json", &report);
    assert_eq!(report.as_array().unwrap().len(), 1);
    let r = &report[0];
    assert_eq!(r["schema"], "airlift-inspect/v1");
    assert_eq!(r["format"], "airlift-archive");
    assert_eq!(r["version"], 1);
    assert_eq!(r["compressed"], false);
    assert_eq!(r["fileSize"], bytes.len() as u64);
    assert_eq!(r["created"], EPOCH_RFC3339);
    assert_eq!(r["tool"], format!("airlift {}", env!("CARGO_PKG_VERSION")));
    assert_eq!(
        r["manifestDigest"],
        crate::support::sha256_digest(&manifest_bytes).to_string()
    );
    assert_eq!(r["trustChecked"], true);
    assert_eq!(r["validSignatures"], 1);
    assert_eq!(
        r["signatures"],
        serde_json::json!([{"fingerprint": w.fingerprint, "status": "valid"}])
    );

    // Roots.
    assert_eq!(
        r["roots"],
        serde_json::json!([{
            "kind": "bundle", "reference": w.outer_ref, "tag": "1",
            "digest": w.outer.to_string(),
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        }])
    );

    // Bundles: the outer (root) locks the inner bundle and the index; the inner locks the plain image.
    assert_eq!(r["bundles"].as_array().unwrap().len(), 2);
    let outer = by_digest(&r["bundles"], &w.outer);
    assert_eq!(outer["root"], true);
    assert_eq!(outer["references"], serde_json::json!([w.outer_ref]));
    assert_eq!(
        outer["nestedBundles"],
        serde_json::json!([w.inner.to_string()])
    );
    assert_eq!(
        outer["images"],
        serde_json::json!([
            {"image": w.inner_lock_ref, "digest": w.inner.to_string(), "bundle": true,
             "annotations": {"kbld.carvel.dev/id": "inner"}},
            {"image": w.multi_lock_ref, "digest": w.multi.index_digest.to_string(), "bundle": false,
             "annotations": {"kbld.carvel.dev/id": "multi"}},
        ])
    );
    let inner = by_digest(&r["bundles"], &w.inner);
    assert_eq!(inner["root"], false);
    assert_eq!(inner["references"], serde_json::json!([w.inner_lock_ref]));
    assert_eq!(inner["nestedBundles"], serde_json::json!([]));
    assert_eq!(inner["images"][0]["image"], w.plain_lock_ref);
    assert_eq!(
        inner["images"][0]["digest"],
        w.plain.manifest_digest.to_string()
    );

    // Images: the index with both platforms, and the plain image.
    assert_eq!(r["images"].as_array().unwrap().len(), 2);
    let multi = by_digest(&r["images"], &w.multi.index_digest);
    assert_eq!(multi["references"], serde_json::json!([w.multi_lock_ref]));
    assert_eq!(
        multi["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(multi["size"], w.multi.total_bytes);
    let distinct_layers: BTreeSet<&Digest> = w
        .multi
        .images
        .iter()
        .flat_map(|i| &i.layer_digests)
        .collect();
    assert_eq!(multi["layers"], distinct_layers.len() as u64);
    let platforms = multi["platforms"].as_array().unwrap();
    assert_eq!(platforms.len(), 2);
    for (p, (arch, img)) in platforms
        .iter()
        .zip(["amd64", "arm64"].iter().zip(&w.multi.images))
    {
        assert_eq!(p["platform"]["architecture"], *arch);
        assert_eq!(p["platform"]["os"], "linux");
        assert_eq!(p["digest"], img.manifest_digest.to_string());
        assert_eq!(p["layers"], img.layer_digests.len() as u64);
        assert_eq!(p["size"], img.total_bytes);
    }
    let plain = by_digest(&r["images"], &w.plain.manifest_digest);
    assert_eq!(plain["references"], serde_json::json!([w.plain_lock_ref]));
    assert_eq!(plain["layers"], w.plain.layer_digests.len() as u64);
    assert_eq!(plain["size"], w.plain.total_bytes);
    assert!(plain["platforms"][0].get("platform").is_none());

    // Blob totals: every blob once; the shared base layer is the dedup saving.
    assert_eq!(r["blobs"]["count"], w.blobs.len() as u64);
    assert_eq!(r["blobs"]["bytes"], w.blobs.values().sum::<u64>());
    assert_eq!(
        r["blobs"]["dedupSavedBytes"],
        w.multi.images[0].layer_sizes[0]
    );
    let roles = r["blobs"]["byRole"].as_object().unwrap();
    let role_count: u64 = roles.values().map(|t| t["count"].as_u64().unwrap()).sum();
    assert_eq!(role_count, w.blobs.len() as u64);
    assert_eq!(roles["index"]["count"], 1);
    assert_eq!(roles["manifest"]["count"], 5);
    assert!(r.get("volume").is_none() && r.get("base").is_none());

    // Human output names the essentials.
    let human = expect_ok(&airlift(dir, &["inspect", s(&archive)]));
    for needle in [
        w.outer_ref.as_str(),
        w.fingerprint.as_str(),
        "not checked",
        "linux/amd64, linux/arm64",
        w.inner_lock_ref.as_str(),
    ] {
        assert!(human.contains(needle), "{needle} missing from:\n{human}");
    }

    // Several archives: one array element each; an unreadable one is an error object, exit 1.
    let zst = dir.join("outer.tar.zst");
    export(&w, &zst, &["--zstd"]);
    let missing = dir.join("nope.tar");
    let out = airlift(
        dir,
        &["inspect", "--json", s(&archive), s(&zst), s(&missing)],
    );
    expect_code(&out, 1);
    let many: Value = serde_json::from_slice(&out.stdout).unwrap();
    crate::support::validate_json_schema("inspect.schema.json", &many);
    assert_eq!(many[0]["signatures"][0]["status"], "unchecked");
    assert_eq!(many[1]["compressed"], true);
    assert_eq!(many[1]["manifestDigest"], r["manifestDigest"]);
    assert_eq!(many[1]["images"], r["images"]);
    assert_eq!(many[2]["archive"], s(&missing));
    assert!(many[2]["error"].as_str().unwrap().contains("nope.tar"));

    // A key that did not sign: the signature is untrusted and inspect exits 1.
    let other = dir.join("other");
    expect_ok(&airlift(dir, &["keygen", "--out", s(&other)]));
    let out = airlift(
        dir,
        &[
            "inspect",
            "--json",
            s(&archive),
            "--trust",
            &format!("{}.pub", other.display()),
        ],
    );
    expect_code(&out, 1);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["signatures"][0]["status"], "untrusted");
    assert_eq!(v[0]["validSignatures"], 0);
}

#[test]
fn import_receipt_is_written_signed_and_verified() {
    let w = world();
    let dir = w.home.path();
    let archive = dir.join("outer.tar");
    export(&w, &archive, &[]);
    let inspected: Value = serde_json::from_str(&expect_ok(&airlift(
        dir,
        &["inspect", "--json", s(&archive)],
    )))
    .unwrap();
    let dest = Registry::start_plain();
    let to_repo = dest.reference("imported/app");
    let import_key = dir.join("import-side");
    let import_fp = expect_ok(&airlift(dir, &["keygen", "--out", s(&import_key)]))
        .trim()
        .to_owned();
    let import_pub = format!("{}.pub", import_key.display());
    let receipt = dir.join("receipt.json");
    let lock_out = dir.join("relocated.yml");
    expect_ok(&airlift(
        dir,
        &[
            "import",
            s(&archive),
            "--to-repo",
            &to_repo,
            "--trust",
            s(&w.public),
            "--receipt",
            s(&receipt),
            "--receipt-key",
            &format!("{}.key", import_key.display()),
            "--lock-output",
            s(&lock_out),
            "-q",
        ],
    ));
    let bytes = std::fs::read(&receipt).unwrap();
    let r: Value = serde_json::from_slice(&bytes).unwrap();
    crate::support::validate_json_schema("receipt.schema.json", &r);
    // Canonical JSON: re-serialising the parsed value gives the same bytes.
    assert_eq!(serde_json::to_vec(&r).unwrap(), bytes);
    assert_eq!(r["format"], "airlift-import-receipt");
    assert_eq!(r["created"], EPOCH_RFC3339);
    assert_eq!(r["signer"], import_fp);
    assert_eq!(
        r["archive"]["manifestDigest"],
        inspected[0]["manifestDigest"]
    );
    assert_eq!(r["archive"]["file"], "outer.tar");
    assert_eq!(r["archiveSigners"], serde_json::json!([w.fingerprint]));
    assert_eq!(r["destination"], format!("--to-repo {to_repo}"));
    assert_eq!(
        r["roots"],
        serde_json::json!([{
            "kind": "bundle", "source": w.outer_ref,
            "destination": format!("{to_repo}@{}", w.outer), "digest": w.outer.to_string(),
        }])
    );
    let locked: BTreeMap<String, (String, String)> = r["locked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["source"].as_str().unwrap().to_owned(),
                (
                    p["destination"].as_str().unwrap().to_owned(),
                    p["kind"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect();
    assert_eq!(
        locked,
        BTreeMap::from([
            (
                w.inner_lock_ref.clone(),
                (format!("{to_repo}@{}", w.inner), "bundle".to_owned())
            ),
            (
                w.multi_lock_ref.clone(),
                (
                    format!("{to_repo}@{}", w.multi.index_digest),
                    "image".to_owned()
                )
            ),
            (
                w.plain_lock_ref.clone(),
                (
                    format!("{to_repo}@{}", w.plain.manifest_digest),
                    "image".to_owned()
                )
            ),
        ])
    );
    // Every blob of the archive, each pushed into the empty registry.
    let listed: BTreeMap<Digest, u64> = r["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            assert_eq!(b["status"], "pushed", "{b}");
            (
                b["digest"].as_str().unwrap().parse().unwrap(),
                b["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed, w.blobs);
    assert_eq!(r["lock"], std::fs::read_to_string(&lock_out).unwrap());

    // The signature checks with plain openssl, and with verify-receipt.
    let sig = PathBuf::from(format!("{}.sig", receipt.display()));
    assert_eq!(std::fs::read(&sig).unwrap().len(), 64);
    crate::support::run_tool(
        Command::new("openssl")
            .args([
                "pkeyutl",
                "-verify",
                "-pubin",
                "-inkey",
                &import_pub,
                "-rawin",
                "-in",
            ])
            .arg(&receipt)
            .arg("-sigfile")
            .arg(&sig),
    );
    let out = expect_ok(&airlift(
        dir,
        &["verify-receipt", s(&receipt), "--trust", &import_pub],
    ));
    assert!(out.contains("OK: the receipt verifies"), "{out}");
    // The archive signer's key is not the receipt signer's.
    expect_code(
        &airlift(
            dir,
            &["verify-receipt", s(&receipt), "--trust", s(&w.public)],
        ),
        1,
    );
    // Neither --trust nor --allow-unsigned: usage error.
    expect_code(&airlift(dir, &["verify-receipt", s(&receipt)]), 2);

    // Tampered receipt: one destination changed.
    let tampered = dir.join("tampered.json");
    let text = String::from_utf8(bytes.clone()).unwrap();
    std::fs::write(
        &tampered,
        text.replacen("imported/app@", "imported/evil@", 1),
    )
    .unwrap();
    std::fs::copy(&sig, format!("{}.sig", tampered.display())).unwrap();
    let out = airlift(
        dir,
        &["verify-receipt", s(&tampered), "--trust", &import_pub],
    );
    expect_code(&out, 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not verify"));

    // A second import of the same archive, unsigned receipt at the same path: everything is
    // already present, and the stale signature is gone.
    expect_ok(&airlift(
        dir,
        &[
            "import",
            s(&archive),
            "--to-repo",
            &to_repo,
            "--trust",
            s(&w.public),
            "--receipt",
            s(&receipt),
            "-q",
        ],
    ));
    assert!(!sig.exists());
    let r2: Value = serde_json::from_slice(&std::fs::read(&receipt).unwrap()).unwrap();
    crate::support::validate_json_schema("receipt.schema.json", &r2);
    assert!(r2.get("signer").is_none());
    assert_eq!(r2["blobs"].as_array().unwrap().len(), w.blobs.len());
    for b in r2["blobs"].as_array().unwrap() {
        assert_eq!(b["status"], "present", "{b}");
    }
    let out = airlift(
        dir,
        &["verify-receipt", s(&receipt), "--trust", &import_pub],
    );
    expect_code(&out, 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsigned"));
    let out = expect_ok(&airlift(
        dir,
        &["verify-receipt", s(&receipt), "--allow-unsigned"],
    ));
    assert!(out.contains("unsigned"), "{out}");
}

#[test]
fn exports_are_reproducible_across_concurrency() {
    let w = world();
    let dir = w.home.path();
    for zstd in [false, true] {
        let mut outputs = Vec::new();
        for concurrency in ["1", "8"] {
            let out = dir.join(format!("c{concurrency}-{zstd}.tar"));
            let mut extra = vec!["--concurrency", concurrency];
            if zstd {
                extra.push("--zstd");
            }
            export(&w, &out, &extra);
            outputs.push(std::fs::read(&out).unwrap());
        }
        assert!(outputs[0].len() > 50_000);
        assert_eq!(
            crate::support::sha256_digest(&outputs[0]),
            crate::support::sha256_digest(&outputs[1]),
            "zstd={zstd}: exports differ"
        );
        assert_eq!(outputs[0].starts_with(&[0x28, 0xb5, 0x2f, 0xfd]), zstd);
    }
}
