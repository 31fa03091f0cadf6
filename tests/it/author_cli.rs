//! `airlift lock|rewrite|push|pull` end to end: the real binary against real registries, checked
//! against the golden output of imgpkg 0.43.1 / kbld 0.42.0 (tests/fixtures/imgpkg-compat).

use crate::support;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::support::fixtures::{GOLDEN_HOST, fixtures, golden, guestbook_copy};
use crate::support::synth::RawTarEntry;
use crate::support::{ImageSpec, LayerSpec, Registry, airlift, expect_failed, expect_ok, s};
use airlift::oci::{Descriptor, RawManifest, media_type};
use airlift::reference::Reference;
use airlift::registry::{Registries, RegistryOptions};
use bytes::Bytes;

/// The golden bundle's manifest and layer digests (from imgpkg's push of guestbook-src).
const GOLDEN_BUNDLE: &str =
    "sha256:10eb9be00bf33b4580684efec3c42b14d8a942615eba1be554e5980265b4bc78";
const GOLDEN_LAYER: &str =
    "sha256:09ce40cee9f04c7c4a5c4a21754b9bab3bbe80244adb20f2d104d12ce147d6e7";

/// Golden text with the golden host and digests replaced by this test's.
fn subst(text: &str, host: &str, digests: &[(String, String)]) -> String {
    let mut t = text.replace(GOLDEN_HOST, host);
    for (from, to) in digests {
        t = t.replace(from.as_str(), to);
    }
    t
}

/// The three guestbook images, seeded with skopeo; returns (golden digest, our digest) pairs
/// in the golden lock's order.
fn seed_guestbook(reg: &Registry) -> Vec<(String, String)> {
    let layout = tempfile::tempdir().unwrap();
    let golden_lock = golden("kbld-imgpkg-lock-output.images.yml");
    let mut pairs = Vec::new();
    for (i, repo_tag) in [
        "google_samples/gb-frontend:v5",
        "google_samples/gb-redis-follower:v2",
        "library/redis:6.0.5",
    ]
    .iter()
    .enumerate()
    {
        let tag = format!("img{i}");
        let img = support::write_oci_image(
            layout.path(),
            &tag,
            &ImageSpec::new(100 + i as u64, vec![LayerSpec::new(200 + i as u64, 2048)]),
        );
        crate::support::skopeo_push(layout.path(), &tag, repo_tag, reg);
        let repo = repo_tag.split(':').next().unwrap();
        let line = golden_lock
            .lines()
            .find(|l| {
                l.trim_start()
                    .starts_with(&format!("image: {GOLDEN_HOST}/{repo}@"))
            })
            .unwrap();
        let golden_digest = line.rsplit('@').next().unwrap().to_owned();
        pairs.push((golden_digest, img.manifest_digest.to_string()));
    }
    pairs
}

#[test]
fn lock_and_rewrite_match_kbld_goldens() {
    let reg = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let digests = seed_guestbook(&reg);
    let host = reg.host();
    let src = guestbook_copy(Some(&host));
    let config = src.path().join("config");
    let lock_file = home.path().join("images.yml");

    let out = airlift(
        home.path(),
        &["lock", "-f", s(&config), "--lock-output", s(&lock_file)],
    );
    expect_ok(&out);
    let expected = subst(
        &golden("kbld-imgpkg-lock-output.images.yml"),
        &host,
        &digests,
    );
    assert_eq!(std::fs::read_to_string(&lock_file).unwrap(), expected);
    // Without --lock-output the lock goes to stdout, progress to stderr.
    let out = airlift(home.path(), &["lock", "-f", s(&config)]);
    assert_eq!(expect_ok(&out), expected);
    assert!(String::from_utf8_lossy(&out.stderr).contains("gb-frontend:v5"));

    // Offline rewrite with the lock, given as --lock or as an input document.
    let expected = subst(&golden("kbld-rewrite-with-lock.yaml"), &host, &digests);
    let out = airlift(
        home.path(),
        &["rewrite", "-f", s(&config), "--lock", s(&lock_file)],
    );
    assert_eq!(expect_ok(&out), expected);
    let out = airlift(
        home.path(),
        &["rewrite", "-f", s(&config), "-f", s(&lock_file)],
    );
    assert_eq!(expect_ok(&out), expected);

    // Unlocked references: every one listed, exit 1; --allow-unlocked passes them through.
    let extra = home.path().join("extra.yaml");
    std::fs::write(
        &extra,
        "kind: Pod\nspec:\n  containers:\n  - image: nginx:1.25\n  - image: example.com/a/b:v9\n",
    )
    .unwrap();
    let err = expect_failed(&airlift(
        home.path(),
        &[
            "rewrite",
            "-f",
            s(&config),
            "-f",
            s(&extra),
            "--lock",
            s(&lock_file),
        ],
    ));
    assert!(
        err.contains("nginx:1.25") && err.contains("example.com/a/b:v9"),
        "{err}"
    );
    let out = expect_ok(&airlift(
        home.path(),
        &[
            "rewrite",
            "-f",
            s(&extra),
            "--lock",
            s(&lock_file),
            "--allow-unlocked",
        ],
    ));
    assert!(out.contains("image: nginx:1.25"), "{out}");

    // A tag that does not exist fails the lock, naming the reference.
    std::fs::write(&extra, format!("image: {host}/library/redis:nope\n")).unwrap();
    let err = expect_failed(&airlift(home.path(), &["lock", "-f", s(&extra)]));
    assert!(err.contains("library/redis:nope"), "{err}");
}

/// Reads a blob straight from the registry API.
fn blob(reg: &Registry, repo: &str, digest: &str) -> Vec<u8> {
    let resp = support::http_get(reg, &format!("/v2/{repo}/blobs/{digest}"));
    assert_eq!(resp.status, 200, "blob {digest}");
    resp.body
}

#[test]
fn push_bundle_matches_imgpkg_bytes() {
    let reg = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let host = reg.host();
    let src = guestbook_copy(None);
    let lock_out = home.path().join("bundle.lock.yml");
    let target = reg.reference("guestbook-bundle:1.0");
    let stdout = expect_ok(&airlift(
        home.path(),
        &[
            "push",
            "-b",
            &target,
            "-f",
            s(src.path()),
            "--lock-output",
            s(&lock_out),
        ],
    ));

    let raw = support::skopeo_inspect_raw("guestbook-bundle:1.0", &reg);
    let digest = support::sha256_digest(&raw);
    assert!(
        stdout.contains(&format!("Pushed '{host}/guestbook-bundle@{digest}'")),
        "{stdout}"
    );
    assert!(stdout.ends_with("Succeeded\n"), "{stdout}");

    let m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(m["mediaType"], media_type::DOCKER_MANIFEST);
    assert_eq!(m["config"]["mediaType"], media_type::DOCKER_CONFIG);
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["mediaType"], media_type::DOCKER_LAYER_GZIP);

    let config = blob(
        &reg,
        "guestbook-bundle",
        m["config"]["digest"].as_str().unwrap(),
    );
    assert_eq!(
        config,
        std::fs::read(fixtures().join("bundle.config.json")).unwrap()
    );
    let gz = blob(
        &reg,
        "guestbook-bundle",
        layers[0]["digest"].as_str().unwrap(),
    );
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut tar)
        .unwrap();
    assert_eq!(
        tar,
        std::fs::read(fixtures().join("bundle.layer.tar")).unwrap()
    );

    let mut tags = support::skopeo_list_tags("guestbook-bundle", &reg);
    tags.sort();
    // "1.0" sorts before "sha256-…".
    assert_eq!(
        tags,
        vec!["1.0".to_owned(), format!("{}.imgpkg", digest.tag_form())]
    );

    let expected = subst(
        &golden("imgpkg-push.bundle-lock.yml"),
        &host,
        &[(GOLDEN_BUNDLE.to_owned(), digest.to_string())],
    );
    assert_eq!(std::fs::read_to_string(&lock_out).unwrap(), expected);

    // Bad inputs are refused: a plain image with .imgpkg, a bundle without it.
    let err = expect_failed(&airlift(
        home.path(),
        &["push", "-i", &reg.reference("img:1"), "-f", s(src.path())],
    ));
    assert!(err.contains(".imgpkg"), "{err}");
    let err = expect_failed(&airlift(
        home.path(),
        &[
            "push",
            "-b",
            &reg.reference("b:1"),
            "-f",
            s(&src.path().join("config")),
        ],
    ));
    assert!(err.contains(".imgpkg"), "{err}");
    // A plain image of the configuration is fine, with "config":{} and no bundle label.
    expect_ok(&airlift(
        home.path(),
        &[
            "push",
            "-i",
            &reg.reference("img:1"),
            "-f",
            s(&src.path().join("config")),
        ],
    ));
    let raw = support::skopeo_inspect_raw("img:1", &reg);
    let m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let config = blob(&reg, "img", m["config"]["digest"].as_str().unwrap());
    assert!(
        String::from_utf8(config)
            .unwrap()
            .ends_with("\"config\":{}}")
    );
}

/// Pushes an image from raw blob bytes and manifest bytes with the library API.
fn push_raw(reg: &Registry, repo_tag: &str, blobs: &[(Vec<u8>, &str)], manifest: &[u8]) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let registries = Registries::new(RegistryOptions::default()).unwrap();
        let target = Reference::parse(&reg.reference(repo_tag)).unwrap();
        let client = registries.client(target.registry()).await.unwrap();
        for (bytes, mt) in blobs {
            let desc = Descriptor {
                media_type: (*mt).to_owned(),
                digest: support::sha256_digest(bytes),
                size: bytes.len() as u64,
                platform: None,
                annotations: None,
            };
            let b = Bytes::from(bytes.clone());
            client
                .put_blob(&target, &desc, || {
                    let b = b.clone();
                    async move { Ok(futures::stream::once(async move { Ok(b) })) }
                })
                .await
                .unwrap();
        }
        let m = RawManifest::from_bytes(Bytes::from(manifest.to_vec()), None).unwrap();
        client.put_manifest(&target, &m).await.unwrap();
    });
}

/// Every file under `dir`, relative path → bytes.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            assert!(!m.file_type().is_symlink(), "symlink {}", p.display());
            if m.is_dir() {
                walk(root, &p, out);
            } else {
                out.push((
                    p.strip_prefix(root).unwrap().to_owned(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn pull_reads_a_bundle_imgpkg_pushed() {
    let reg = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let host = reg.host();
    // imgpkg's own blobs: the gzip layer from its copy tar, config and manifest as pushed.
    let mut archive = tar::Archive::new(
        std::fs::File::open(fixtures().join("guestbook.imgpkg-copy.tar")).unwrap(),
    );
    let layer_name = format!("{}.tar.gz", GOLDEN_LAYER.replace(':', "-"));
    let mut layer = Vec::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some(layer_name.as_str()) {
            e.read_to_end(&mut layer).unwrap();
        }
    }
    assert_eq!(support::sha256_digest(&layer).to_string(), GOLDEN_LAYER);
    let config = std::fs::read(fixtures().join("bundle.config.json")).unwrap();
    let manifest = std::fs::read(fixtures().join("bundle.manifest.json")).unwrap();
    push_raw(
        &reg,
        "guestbook-bundle:1.0",
        &[
            (config, media_type::DOCKER_CONFIG),
            (layer, media_type::DOCKER_LAYER_GZIP),
        ],
        &manifest,
    );

    let out_dir = home.path().join("out");
    let stdout = expect_ok(&airlift(
        home.path(),
        &[
            "pull",
            "-b",
            &reg.reference("guestbook-bundle:1.0"),
            "-o",
            s(&out_dir),
        ],
    ));
    assert_eq!(
        stdout,
        subst(&golden("imgpkg-pull-original.log"), &host, &[])
    );
    assert_eq!(tree(&out_dir), tree(&fixtures().join("guestbook-src")));

    // -i on a bundle and a non-empty output directory are refused.
    let err = expect_failed(&airlift(
        home.path(),
        &[
            "pull",
            "-i",
            &reg.reference("guestbook-bundle:1.0"),
            "-o",
            s(&home.path().join("other")),
        ],
    ));
    assert!(err.contains("Use -b instead of -i for bundles"), "{err}");
    let err = expect_failed(&airlift(
        home.path(),
        &[
            "pull",
            "-b",
            &reg.reference("guestbook-bundle:1.0"),
            "-o",
            s(&out_dir),
        ],
    ));
    assert!(err.contains("not empty"), "{err}");
}

#[test]
fn pull_of_relocated_bundle_rewrites_lock_like_imgpkg() {
    let reg = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let host = reg.host();
    let mut digests = seed_guestbook(&reg);
    let src = guestbook_copy(Some(&host));
    let lock_file = src.path().join(".imgpkg/images.yml");
    expect_ok(&airlift(
        home.path(),
        &[
            "lock",
            "-f",
            s(&src.path().join("config")),
            "--lock-output",
            s(&lock_file),
        ],
    ));
    let our_lock = std::fs::read_to_string(&lock_file).unwrap();
    let bundle = reg.reference("guestbook-bundle:1.0");
    expect_ok(&airlift(
        home.path(),
        &["push", "-b", &bundle, "-f", s(src.path())],
    ));
    let raw = support::skopeo_inspect_raw("guestbook-bundle:1.0", &reg);
    let bundle_digest = support::sha256_digest(&raw);
    let m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let layer_digest = m["layers"][0]["digest"].as_str().unwrap().to_owned();
    digests.push((GOLDEN_BUNDLE.to_owned(), bundle_digest.to_string()));
    digests.push((GOLDEN_LAYER.to_owned(), layer_digest));

    let relocated = reg.reference("airgap/guestbook-bundle");
    expect_ok(&airlift(
        home.path(),
        &["copy", "-b", &bundle, "--to-repo", &relocated, "-q"],
    ));

    let out_dir = home.path().join("relocated");
    let stdout = expect_ok(&airlift(
        home.path(),
        &["pull", "-b", &format!("{relocated}:1.0"), "-o", s(&out_dir)],
    ));
    assert_eq!(
        stdout,
        subst(&golden("imgpkg-pull-relocated.log"), &host, &digests)
    );
    assert_eq!(
        std::fs::read_to_string(out_dir.join(".imgpkg/images.yml")).unwrap(),
        subst(&golden("imgpkg-pull-relocated.images.yml"), &host, &digests)
    );
    assert_eq!(
        std::fs::read(out_dir.join("config/frontend-deployment.yaml")).unwrap(),
        std::fs::read(src.path().join("config/frontend-deployment.yaml")).unwrap()
    );

    // The original bundle's repository does not host the images: lock left unchanged.
    let out_dir = home.path().join("original");
    let stdout = expect_ok(&airlift(
        home.path(),
        &["pull", "-b", &bundle, "-o", s(&out_dir)],
    ));
    assert!(
        stdout.contains("One or more images not found in bundle repo; skipping lock file update"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read_to_string(out_dir.join(".imgpkg/images.yml")).unwrap(),
        our_lock
    );

    // -b on a plain image is refused; -i pulls its files.
    let frontend = reg.reference("google_samples/gb-frontend:v5");
    let err = expect_failed(&airlift(
        home.path(),
        &["pull", "-b", &frontend, "-o", s(&home.path().join("x"))],
    ));
    assert!(
        err.contains("Expected bundle image but found plain image"),
        "{err}"
    );
    let img_dir = home.path().join("img");
    expect_ok(&airlift(
        home.path(),
        &["pull", "-i", &frontend, "-o", s(&img_dir)],
    ));
    let files = tree(&img_dir);
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].1.len(), 2048);
}

/// A layer with a harmless `ok.txt` and then one hostile `entry` of type `kind` (written by
/// hand: the `tar` crate refuses to write hostile names).
fn hostile_layer(entry: &str, kind: u8, link: &str) -> Vec<u8> {
    let body = b"owned\n".to_vec();
    let hostile = if kind == b'0' {
        RawTarEntry::file(entry, body.clone())
    } else {
        RawTarEntry::special(entry, kind, link)
    };
    crate::support::synth::raw_tar(&[RawTarEntry::file("ok.txt", body), hostile], true)
}

#[test]
fn hostile_bundle_layers_are_refused_and_nothing_escapes() {
    use std::io::Write;
    let reg = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let base = tempfile::tempdir().unwrap();
    let marker = format!("airlift-evil-{}", std::process::id());
    let abs = std::env::temp_dir().join(&marker);
    let cases = [
        ("dotdot", format!("../{marker}"), b'0', String::new()),
        ("absolute", abs.display().to_string(), b'0', String::new()),
        ("symlink", "link".to_owned(), b'2', "/etc".to_owned()),
        (
            "hardlink",
            "hard".to_owned(),
            b'1',
            "/etc/passwd".to_owned(),
        ),
    ];
    for (name, entry, kind, link) in &cases {
        let tar = hostile_layer(entry, *kind, link);
        let diff_id = support::sha256_digest(&tar);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let config = airlift::author::bundle::config_bytes(&diff_id, true);
        let layer_info = airlift::author::bundle::LayerInfo {
            diff_id,
            digest: support::sha256_digest(&gz),
            size: gz.len() as u64,
        };
        let manifest = airlift::author::bundle::manifest_bytes(&config, &layer_info);
        push_raw(
            &reg,
            &format!("evil/{name}:1"),
            &[
                (config, media_type::DOCKER_CONFIG),
                (gz, media_type::DOCKER_LAYER_GZIP),
            ],
            &manifest,
        );
        let out_dir = base.path().join(name).join("out");
        let err = expect_failed(&airlift(
            home.path(),
            &[
                "pull",
                "-b",
                &reg.reference(&format!("evil/{name}:1")),
                "-o",
                s(&out_dir),
            ],
        ));
        assert!(err.contains("refusing layer entry"), "{name}: {err}");
        // Nothing outside the output directory; no link inside it.
        assert!(!base.path().join(name).join(&marker).exists(), "{name}");
        assert!(!abs.exists(), "{name}");
        let inside: Vec<PathBuf> = tree(&out_dir).into_iter().map(|(p, _)| p).collect();
        assert!(
            inside.iter().all(|p| p == Path::new("ok.txt")),
            "{name}: {inside:?}"
        );
        let siblings: Vec<_> = std::fs::read_dir(base.path().join(name))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(siblings, vec![std::ffi::OsString::from("out")], "{name}");
    }
}

#[test]
fn recursive_pull_places_nested_bundles_by_digest() {
    let reg = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let host = reg.host();
    seed_guestbook(&reg);
    // Inner bundle: the guestbook, locked against this registry.
    let inner = guestbook_copy(Some(&host));
    let inner_lock = inner.path().join(".imgpkg/images.yml");
    expect_ok(&airlift(
        home.path(),
        &[
            "lock",
            "-f",
            s(&inner.path().join("config")),
            "--lock-output",
            s(&inner_lock),
        ],
    ));
    expect_ok(&airlift(
        home.path(),
        &[
            "push",
            "-b",
            &reg.reference("inner:1"),
            "-f",
            s(inner.path()),
        ],
    ));
    let inner_digest = support::sha256_digest(&support::skopeo_inspect_raw("inner:1", &reg));
    // Outer bundle: names the inner bundle and one plain image.
    let outer = tempfile::tempdir().unwrap();
    std::fs::create_dir(outer.path().join(".imgpkg")).unwrap();
    std::fs::write(
        outer.path().join("app.yaml"),
        format!("bundle:\n  image: {host}/inner:1\nredis:\n  image: {host}/library/redis:6.0.5\n"),
    )
    .unwrap();
    let outer_lock = outer.path().join(".imgpkg/images.yml");
    expect_ok(&airlift(
        home.path(),
        &[
            "lock",
            "-f",
            s(&outer.path().join("app.yaml")),
            "--lock-output",
            s(&outer_lock),
        ],
    ));
    expect_ok(&airlift(
        home.path(),
        &[
            "push",
            "-b",
            &reg.reference("outer:1"),
            "-f",
            s(outer.path()),
        ],
    ));

    let out_dir = home.path().join("out");
    let stdout = expect_ok(&airlift(
        home.path(),
        &[
            "pull",
            "-r",
            "-b",
            &reg.reference("outer:1"),
            "-o",
            s(&out_dir),
        ],
    ));
    assert!(
        stdout.contains(&format!("{host}/inner@{inner_digest}")),
        "{stdout}"
    );
    let nested = out_dir
        .join(".imgpkg/bundles")
        .join(inner_digest.tag_form());
    assert_eq!(
        std::fs::read_to_string(nested.join(".imgpkg/images.yml")).unwrap(),
        std::fs::read_to_string(&inner_lock).unwrap()
    );
    assert_eq!(
        std::fs::read(nested.join("config/redis-leader-deployment.yaml")).unwrap(),
        std::fs::read(inner.path().join("config/redis-leader-deployment.yaml")).unwrap()
    );
    // Only the bundle is nested; the plain image is not pulled.
    assert_eq!(
        std::fs::read_dir(out_dir.join(".imgpkg/bundles"))
            .unwrap()
            .count(),
        1
    );
    // -r is for bundles only (usage error).
    let out = airlift(
        home.path(),
        &[
            "pull",
            "-r",
            "-i",
            &reg.reference("outer:1"),
            "-o",
            s(&home.path().join("y")),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
}
