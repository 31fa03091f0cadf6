//! `airlift serve`: real clients (curl, skopeo, airlift itself) pulling straight from an
//! archive, over plain HTTP and over TLS with basic auth.

use std::fs;
use std::path::Path;

use crate::support::served::{Served, curl};
use crate::support::synth::{SynthArchive, SynthImage, synth_image};
use crate::support::{
    Corpus, ImageSpec, LayerSpec, Registry, airlift, expect_failed, expect_ok, keygen, push_images,
    s, sha256_digest, skopeo_inspect_raw, tar_entries, tar_entry,
};
use airlift::digest::Digest;

fn url(served: &Served, path: &str) -> String {
    format!("http://{}{path}", served.host())
}

/// Files in a directory and their sizes: what serve must leave untouched next to an archive.
fn listing(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn serve_answers_the_pull_api_from_the_archive_in_place() {
    let src = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let base = LayerSpec::new(7, 300 * 1024);
    let written = push_images(
        &src,
        &[
            ("team/api:1.0", ImageSpec::new(1, vec![base])),
            ("team/api:1.1", ImageSpec::new(2, vec![base])),
            (
                "team/api:2.0",
                ImageSpec::new(3, vec![base, LayerSpec::new(8, 4096)]),
            ),
            ("team/web:1.0", ImageSpec::new(4, vec![base])),
        ],
    );
    let (key, public) = keygen(h, "release");
    let media = h.join("usb");
    fs::create_dir(&media).unwrap();
    let archive = media.join("team.tar");
    let mut args = vec!["export", "-o", s(&archive), "--sign-key", s(&key), "-q"];
    let refs: Vec<String> = [
        "team/api:1.0",
        "team/api:1.1",
        "team/api:2.0",
        "team/web:1.0",
    ]
    .iter()
    .map(|r| src.reference(r))
    .collect();
    for r in &refs {
        args.extend(["-i", r.as_str()]);
    }
    expect_ok(&airlift(h, &args));
    let before = listing(&media);

    let mut served = Served::start(h, &[s(&archive), "--trust", s(&public)]);

    let r = curl(&[&url(&served, "/v2/")]);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );

    // Manifests by tag and digest: the exact bytes the source registry serves.
    let raw = skopeo_inspect_raw("team/api:2.0", &src);
    let digest = sha256_digest(&raw).to_string();
    let head = curl(&["-I", &url(&served, "/v2/team/api/manifests/2.0")]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(
        head.header("content-length"),
        Some(raw.len().to_string().as_str())
    );
    assert_eq!(
        head.header("content-type"),
        Some("application/vnd.oci.image.manifest.v1+json")
    );
    let by_digest = curl(&[&url(&served, &format!("/v2/team/api/manifests/{digest}"))]);
    assert_eq!(by_digest.status, 200);
    assert_eq!(by_digest.body, raw);
    // Content by digest is served under every name the archive knows.
    let elsewhere = curl(&[&url(&served, &format!("/v2/team/web/manifests/{digest}"))]);
    assert_eq!(elsewhere.body, raw);

    // Blobs, whole and by range, against the source registry's bytes.
    let layer = written[2].layer_digests[1].to_string();
    let whole = curl(&[&format!("http://{}/v2/team/api/blobs/{layer}", src.host())]).body;
    let got = curl(&[&url(&served, &format!("/v2/team/api/blobs/{layer}"))]);
    assert_eq!(got.status, 200);
    assert_eq!(got.body, whole, "whole blob");
    assert_eq!(got.header("docker-content-digest"), Some(layer.as_str()));
    let part = curl(&[
        "-H",
        "Range: bytes=10-109",
        &url(&served, &format!("/v2/team/api/blobs/{layer}")),
    ]);
    assert_eq!(part.status, 206);
    assert_eq!(part.body, whole[10..110]);
    assert_eq!(
        part.header("content-range"),
        Some(format!("bytes 10-109/{}", whole.len()).as_str())
    );
    let tail = curl(&[
        "-H",
        "Range: bytes=-5",
        &url(&served, &format!("/v2/team/web/blobs/{layer}")),
    ]);
    assert_eq!(tail.body, whole[whole.len() - 5..]);
    let beyond = curl(&[
        "-H",
        &format!("Range: bytes={}-", whole.len()),
        &url(&served, &format!("/v2/team/api/blobs/{layer}")),
    ]);
    assert_eq!(beyond.status, 416);
    assert_eq!(
        beyond.header("content-range"),
        Some(format!("bytes */{}", whole.len()).as_str())
    );

    // Tags and catalog, paginated in lexical order with a Link to the next page.
    let p1 = curl(&[&url(&served, "/v2/team/api/tags/list?n=2")]);
    assert_eq!(p1.json()["tags"], serde_json::json!(["1.0", "1.1"]));
    assert_eq!(
        p1.header("link"),
        Some("</v2/team/api/tags/list?n=2&last=1.1>; rel=\"next\"")
    );
    let p2 = curl(&[&url(&served, "/v2/team/api/tags/list?n=2&last=1.1")]);
    assert_eq!(p2.json()["tags"], serde_json::json!(["2.0"]));
    assert_eq!(p2.header("link"), None);
    let c1 = curl(&[&url(&served, "/v2/_catalog?n=1")]);
    assert_eq!(c1.json()["repositories"], serde_json::json!(["team/api"]));
    assert!(
        c1.header("link")
            .is_some_and(|l| l.contains("last=team/api"))
    );
    let c2 = curl(&[&url(&served, "/v2/_catalog?n=1&last=team/api")]);
    assert_eq!(c2.json()["repositories"], serde_json::json!(["team/web"]));

    // Referrers: nothing refers to these images, so an empty index.
    let refs_resp = curl(&[&url(&served, &format!("/v2/team/api/referrers/{digest}"))]);
    assert_eq!(refs_resp.status, 200);
    assert_eq!(refs_resp.json()["manifests"], serde_json::json!([]));

    // Every error in the spec's envelope, with the right status.
    let unknown = format!("sha256:{}", "0".repeat(64));
    for (path, status, code) in [
        (
            "/v2/team/api/manifests/9.9".to_string(),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            format!("/v2/team/api/manifests/{unknown}"),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (format!("/v2/team/api/blobs/{unknown}"), 404, "BLOB_UNKNOWN"),
        (
            "/v2/nobody/here/manifests/1.0".to_string(),
            404,
            "NAME_UNKNOWN",
        ),
        (
            "/v2/team/api/blobs/sha256:xyz".to_string(),
            400,
            "DIGEST_INVALID",
        ),
        ("/v2/Team/API/tags/list".to_string(), 400, "NAME_INVALID"),
        (
            "/v2/team/api/tags/list?n=many".to_string(),
            400,
            "PAGINATION_NUMBER_INVALID",
        ),
    ] {
        let r = curl(&[&url(&served, &path)]);
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (status, code),
            "{path}"
        );
    }
    for (method, path) in [
        ("PUT", "/v2/team/api/manifests/1.0"),
        (
            "DELETE",
            &format!("/v2/team/api/manifests/{digest}") as &str,
        ),
        ("POST", "/v2/team/api/blobs/uploads/"),
        ("PATCH", "/v2/team/api/blobs/uploads/x"),
    ] {
        let r = curl(&["-X", method, &url(&served, path)]);
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (405, "UNSUPPORTED"),
            "{method} {path}"
        );
    }
    let long = format!("/v2/team/api/tags/list?pad={}", "a".repeat(9000));
    assert_eq!(curl(&[&url(&served, &long)]).status, 414);
    // Paths are parsed, never joined onto the file system.
    let r = curl(&["--path-as-is", &url(&served, "/v2/../../etc/passwd")]);
    assert_eq!(r.status, 404);
    assert!(!String::from_utf8_lossy(&r.body).contains("root:"));

    let (status, log) = served.stop();
    assert!(status.success(), "serve exits 0 on SIGTERM:\n{log}");
    assert!(
        log.contains("GET /v2/team/api/manifests/2.0 200")
            || log.contains("HEAD /v2/team/api/manifests/2.0 200"),
        "{log}"
    );
    assert!(log.contains("stopped after"), "summary line:\n{log}");
    assert_eq!(
        listing(&media),
        before,
        "serve wrote nothing next to the archive"
    );
}

/// An SPDX SBOM as an OCI 1.1 artifact whose subject is `subject`.
fn sbom_for(subject: &SynthImage) -> SynthImage {
    let empty = b"{}".to_vec();
    let sbom = br#"{"spdxVersion":"SPDX-2.3","name":"redis"}"#.to_vec();
    let bytes = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/spdx+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                   "digest": Digest::sha256_of(&empty), "size": 2},
        "layers": [{"mediaType": "application/spdx+json",
                    "digest": Digest::sha256_of(&sbom), "size": sbom.len()}],
        "subject": subject.manifest.descriptor(),
    }))
    .unwrap();
    SynthImage {
        manifest: airlift::oci::RawManifest::from_bytes(bytes::Bytes::from(bytes), None).unwrap(),
        blobs: vec![
            (Digest::sha256_of(&empty), empty),
            (Digest::sha256_of(&sbom), sbom),
        ],
    }
}

#[test]
fn names_mirrors_referrers_and_conflicts() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let redis = synth_image(1, &[4096]);
    let sbom = sbom_for(&redis);
    let hub = h.join("hub.tar");
    SynthArchive::of_images(&[
        ("docker.io/library/redis:7".into(), redis.clone()),
        ("docker.io/library/redis:7-sbom".into(), sbom.clone()),
    ])
    .write(&hub, false, &[]);
    let redis_d = redis.manifest.digest.to_string();

    let mut served = Served::start(h, &[s(&hub), "--allow-unsigned"]);
    for path in [
        "/v2/library/redis/manifests/7",
        "/v2/docker.io/library/redis/manifests/7",
        // The mirror form containerd and CRI-O send for docker.io images.
        "/v2/library/redis/manifests/7?ns=docker.io",
    ] {
        let r = curl(&[&url(&served, path)]);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(
            r.header("docker-content-digest"),
            Some(redis_d.as_str()),
            "{path}"
        );
    }
    let r = curl(&[&url(
        &served,
        &format!("/v2/library/redis/referrers/{redis_d}"),
    )]);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.oci.image.index.v1+json")
    );
    let list = r.json()["manifests"].clone();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["digest"], sbom.manifest.digest.to_string());
    assert_eq!(list[0]["artifactType"], "application/spdx+json");
    assert_eq!(list[0]["size"], sbom.manifest.bytes.len());
    let filtered = curl(&[&url(
        &served,
        &format!("/v2/library/redis/referrers/{redis_d}?artifactType=application/vnd.other"),
    )]);
    assert_eq!(filtered.json()["manifests"], serde_json::json!([]));
    assert_eq!(filtered.header("oci-filters-applied"), Some("artifactType"));
    served.stop();

    // Two hosts sharing a path: refused, unless only host-qualified names are served.
    let quay_img = synth_image(2, &[2048]);
    let quay = h.join("quay.tar");
    SynthArchive::of_images(&[("quay.io/library/redis:7".into(), quay_img.clone())]).write(
        &quay,
        false,
        &[],
    );
    let err = Served::try_start(h, &[s(&hub), s(&quay), "--allow-unsigned"])
        .err()
        .expect("a shared short name is refused");
    assert!(
        err.contains("index.docker.io/library/redis") && err.contains("quay.io/library/redis"),
        "{err}"
    );
    assert!(err.contains("--prefix-hosts"), "{err}");
    let served = Served::start(
        h,
        &[s(&hub), s(&quay), "--allow-unsigned", "--prefix-hosts"],
    );
    let quay_d = quay_img.manifest.digest.to_string();
    assert_eq!(
        curl(&[&url(&served, "/v2/library/redis/manifests/7")]).error_code(),
        "NAME_UNKNOWN"
    );
    for (path, want) in [
        ("/v2/quay.io/library/redis/manifests/7", &quay_d),
        ("/v2/library/redis/manifests/7?ns=quay.io", &quay_d),
        ("/v2/library/redis/manifests/7?ns=docker.io", &redis_d),
    ] {
        let r = curl(&[&url(&served, path)]);
        assert_eq!(
            r.header("docker-content-digest"),
            Some(want.as_str()),
            "{path}"
        );
    }
    drop(served);

    // Two archives giving one tag different content: refused, naming both.
    let other = h.join("other.tar");
    SynthArchive::of_images(&[("docker.io/library/redis:7".into(), synth_image(3, &[1024]))])
        .write(&other, false, &[]);
    let err = Served::try_start(h, &[s(&hub), s(&other), "--allow-unsigned"])
        .err()
        .expect("a tag with two digests is refused");
    assert!(
        err.contains("library/redis:7") && err.contains(s(&hub)) && err.contains(s(&other)),
        "{err}"
    );

    // Trust: an unsigned archive is refused unless --allow-unsigned.
    let (_, public) = keygen(h, "release");
    let err = Served::try_start(h, &[s(&hub), "--trust", s(&public)])
        .err()
        .unwrap();
    assert!(err.contains("unsigned"), "{err}");

    // zstd: refused with the way out; the decompressed archive serves.
    let zst = h.join("hub.tar.zst");
    SynthArchive::of_images(&[("docker.io/library/redis:7".into(), redis.clone())]).write(
        &zst,
        true,
        &[],
    );
    let err = Served::try_start(h, &[s(&zst), "--allow-unsigned"])
        .err()
        .unwrap();
    assert!(err.contains("zstd -d"), "{err}");
    let plain = h.join("from-zst.tar");
    let out = std::process::Command::new("zstd")
        .args(["-q", "-d", s(&zst), "-o", s(&plain)])
        .output()
        .expect("run zstd (apt-get install zstd)");
    assert!(out.status.success(), "{out:?}");
    let served = Served::start(h, &[s(&plain), "--allow-unsigned"]);
    let r = curl(&[&url(&served, "/v2/library/redis/manifests/7")]);
    assert_eq!(r.header("docker-content-digest"), Some(redis_d.as_str()));
}

#[test]
fn a_blob_changed_after_startup_is_never_completed_and_then_refused() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let img = synth_image(5, &[3 << 20, 2 << 20]);
    let archive = h.join("a.tar");
    SynthArchive::of_images(&[("quay.io/team/app:1".into(), img.clone())]).write(
        &archive,
        false,
        &[],
    );
    let served = Served::start(h, &[s(&archive), "--allow-unsigned"]);

    // Flip a byte in each layer, in the file serve has open.
    let bytes = fs::read(&archive).unwrap();
    let entries = tar_entries(&bytes);
    let mut tampered = bytes.clone();
    let layers: Vec<Digest> = img.blobs[1..].iter().map(|(d, _)| d.clone()).collect();
    for d in &layers {
        let e = tar_entry(&entries, &format!("blobs/sha256/{}", d.hex()));
        tampered[e.data_offset + 1000] ^= 0xff;
    }
    fs::write(&archive, &tampered).unwrap();

    let whole = curl(&[&url(&served, &format!("/v2/team/app/blobs/{}", layers[0]))]);
    assert_eq!(
        whole.status, 200,
        "headers go out before the digest is known"
    );
    assert!(
        (whole.body.len() as u64) < 3 << 20 && whole.exit != 0,
        "the client must not receive a complete body: got {} bytes, curl exit {}",
        whole.body.len(),
        whole.exit
    );
    let again = curl(&[&url(&served, &format!("/v2/team/app/blobs/{}", layers[0]))]);
    assert_eq!(again.status, 500);
    assert!(String::from_utf8_lossy(&again.body).contains(&layers[0].to_string()));
    // A range of a blob not yet checked is only served once the whole blob is known good.
    let part = curl(&[
        "-H",
        "Range: bytes=0-99",
        &url(&served, &format!("/v2/team/app/blobs/{}", layers[1])),
    ]);
    assert_eq!(part.status, 500);
    let log = served.log_text();
    assert!(
        log.contains(&layers[0].to_string()) && log.contains(s(&archive)),
        "the log names the digest and the archive:\n{log}"
    );
}

/// An OCI layout holding one image whose only layer is a zstd-compressed tar.
fn write_zstd_image(dir: &Path, tag: &str) {
    let mut tar = tar::Builder::new(Vec::new());
    let data = vec![7u8; 64 * 1024];
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "hello.bin", &data[..])
        .unwrap();
    let tar = tar.into_inner().unwrap();
    let layer = zstd::encode_all(&tar[..], 3).unwrap();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [Digest::sha256_of(&tar)]},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": Digest::sha256_of(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd",
                    "digest": Digest::sha256_of(&layer), "size": layer.len()}],
    }))
    .unwrap();
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    for b in [&layer, &config, &manifest] {
        fs::write(blobs.join(Digest::sha256_of(b).hex()), b).unwrap();
    }
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": Digest::sha256_of(&manifest), "size": manifest.len(),
                       "annotations": {"org.opencontainers.image.ref.name": tag}}],
    });
    fs::write(dir.join("index.json"), index.to_string()).unwrap();
}

#[test]
fn skopeo_and_airlift_pull_every_root_over_tls_with_auth() {
    let src = Registry::start_plain();
    let dest = Registry::start_tls_auth();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let corpus = Corpus::build(&src, h);
    // A zstd-layer image, written as an OCI layout and pushed with skopeo (digests kept).
    let zimg = src.reference("corpus/zimg:v1");
    let zlayout = tempfile::tempdir().unwrap();
    write_zstd_image(zlayout.path(), "z");
    crate::support::skopeo_push(zlayout.path(), "z", "corpus/zimg:v1", &src);
    let zraw = skopeo_inspect_raw("corpus/zimg:v1", &src);
    assert!(
        String::from_utf8_lossy(&zraw).contains("zstd"),
        "layers are zstd"
    );

    let (key, public) = keygen(h, "release");
    let archive = h.join("corpus.tar");
    expect_ok(&airlift(
        h,
        &[
            "export",
            "-o",
            s(&archive),
            "--sign-key",
            s(&key),
            "-q",
            "-b",
            &corpus.outer.image.tag_ref,
            "-i",
            &corpus.index.tag_ref,
            "-i",
            &zimg,
        ],
    ));
    let (cert, tls_key, htpasswd) = dest.tls_files();
    let served = Served::start(
        h,
        &[
            s(&archive),
            "--trust",
            s(&public),
            "--tls-cert",
            s(&cert),
            "--tls-key",
            s(&tls_key),
            "--htpasswd",
            s(&htpasswd),
        ],
    );
    let host = served.host();
    let ca = dest.ca_cert_path();
    let anon = curl(&["--cacert", s(&ca), &format!("https://{host}/v2/")]);
    assert_eq!(anon.status, 401);
    assert_eq!(
        anon.header("www-authenticate"),
        Some("Basic realm=\"airlift\"")
    );
    let creds = format!("{}:{}", dest.username(), dest.password());
    let authed = curl(&[
        "--cacert",
        s(&ca),
        "-u",
        &creds,
        &format!("https://{host}/v2/"),
    ]);
    assert_eq!(authed.status, 200);
    let wrong = curl(&[
        "--cacert",
        s(&ca),
        "-u",
        "someone:else",
        &format!("https://{host}/v2/"),
    ]);
    assert_eq!(wrong.status, 401);

    let skopeo = |args: &[&str]| {
        let out = std::process::Command::new("skopeo")
            .args(args)
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let cert_dir = dest.ca_cert_dir();
    for (path, source_digest) in [
        ("corpus/outer:v1", corpus.outer.image.digest.to_string()),
        ("corpus/multi:v1", corpus.index.digest.to_string()),
        ("corpus/zimg:v1", sha256_digest(&zraw).to_string()),
    ] {
        let dir = tempfile::tempdir().unwrap();
        skopeo(&[
            "copy",
            "--all",
            "--preserve-digests",
            "--quiet",
            "--src-cert-dir",
            s(&cert_dir),
            "--src-creds",
            &creds,
            &format!("docker://{host}/{path}"),
            &format!("dir:{}", dir.path().display()),
        ]);
        let copied = fs::read(dir.path().join("manifest.json")).unwrap();
        assert_eq!(
            sha256_digest(&copied).to_string(),
            source_digest,
            "{path} to dir:"
        );
        let to = format!("mirror/{path}");
        skopeo(&[
            "copy",
            "--all",
            "--preserve-digests",
            "--quiet",
            "--src-cert-dir",
            s(&cert_dir),
            "--src-creds",
            &creds,
            "--dest-cert-dir",
            s(&cert_dir),
            "--dest-creds",
            &creds,
            &format!("docker://{host}/{path}"),
            &format!("docker://{}/{to}", dest.host()),
        ]);
        let raw = skopeo_inspect_raw(&to, &dest);
        assert_eq!(
            sha256_digest(&raw).to_string(),
            source_digest,
            "{path} to a registry"
        );
    }

    // The import-equivalent flow from serve: copy the bundle, then pull rewrites its lock.
    let flags = [
        "--registry-ca-cert-path",
        s(&ca),
        "--registry-username",
        dest.username(),
        "--registry-password",
        dest.password(),
    ];
    let to_repo = dest.reference("airgap/outer");
    let bundle_ref = format!("{host}/corpus/outer:v1");
    let mut args = vec![
        "copy",
        "-b",
        bundle_ref.as_str(),
        "--to-repo",
        to_repo.as_str(),
    ];
    args.extend(flags);
    expect_ok(&airlift(h, &args));
    let pulled = h.join("pulled");
    let relocated = format!("{to_repo}:v1");
    let mut args = vec!["pull", "-b", relocated.as_str(), "-o", s(&pulled)];
    args.extend(flags);
    expect_ok(&airlift(h, &args));
    let lock = fs::read_to_string(pulled.join(".imgpkg/images.yml")).unwrap();
    for image in &corpus.outer.lock_images {
        let d = image.rsplit_once('@').unwrap().1;
        assert!(
            lock.contains(&format!("{to_repo}@{d}")),
            "lock rewritten to {to_repo}:\n{lock}"
        );
    }
    assert!(
        lock.lines()
            .filter(|l| l.trim_start().starts_with("image:"))
            .all(|l| !l.contains(&src.host()) && !l.contains(&host)),
        "no image entry points at the source or at serve any more:\n{lock}"
    );

    // A wrong password is refused by serve, through airlift too.
    let out = airlift(
        h,
        &[
            "copy",
            "-b",
            &bundle_ref,
            "--to-repo",
            &dest.reference("airgap/other"),
            "--registry-ca-cert-path",
            s(&ca),
            "--registry-username",
            dest.username(),
            "--registry-password",
            "wrong",
        ],
    );
    let text = expect_failed(&out);
    assert!(
        text.contains(&host),
        "the refusal names serve's address: {text}"
    );
}

#[test]
fn volumes_serve_as_one_archive_and_a_missing_volume_is_named() {
    let src = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let written = push_images(
        &src,
        &[(
            "vol/app:1",
            ImageSpec::new(
                1,
                vec![LayerSpec::new(1, 700 * 1024), LayerSpec::new(2, 700 * 1024)],
            ),
        )],
    );
    let (key, public) = keygen(h, "release");
    let set = h.join("app.tar");
    let app = src.reference("vol/app:1");
    expect_ok(&airlift(
        h,
        &[
            "export",
            "-i",
            &app,
            "-o",
            s(&set),
            "--sign-key",
            s(&key),
            "--volume-size",
            "1MiB",
            "-q",
        ],
    ));
    let mut vols: Vec<_> = fs::read_dir(h)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with("app.") && n.ends_with(".tar")
        })
        .collect();
    vols.sort();
    assert!(vols.len() >= 2, "{vols:?}");
    let mut args: Vec<&str> = vols.iter().map(|p| s(p)).collect();
    args.extend(["--trust", s(&public)]);
    let served = Served::start(h, &args);
    for layer in &written[0].layer_digests {
        let whole = curl(&[&format!("http://{}/v2/vol/app/blobs/{layer}", src.host())]).body;
        let got = curl(&[&url(&served, &format!("/v2/vol/app/blobs/{layer}"))]);
        assert_eq!(got.status, 200);
        assert_eq!(sha256_digest(&got.body), sha256_digest(&whole), "{layer}");
    }
    drop(served);
    let err = Served::try_start(h, &[s(&vols[0]), "--trust", s(&public)])
        .err()
        .expect("a volume set with a volume missing is refused");
    assert!(err.contains("give every volume"), "{err}");
}

#[test]
fn shutdown_finishes_the_response_in_flight_and_slow_clients_time_out() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let img = synth_image(9, &[4 << 20]);
    let archive = h.join("a.tar");
    SynthArchive::of_images(&[("quay.io/team/app:1".into(), img.clone())]).write(
        &archive,
        false,
        &[],
    );
    let mut served = Served::start(h, &[s(&archive), "--allow-unsigned"]);
    let layer = img.blobs[1].0.clone();
    let u = url(&served, &format!("/v2/team/app/blobs/{layer}"));

    // A client that sends half a request head is dropped after the 10 s head timeout.
    let started = std::time::Instant::now();
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", served.port)).unwrap();
    slow.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    std::io::Write::write_all(&mut slow, b"GET /v2/ HTTP/1.1\r\nHost: x\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = std::io::Read::read_to_end(&mut slow, &mut buf);
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_secs(9) && waited < std::time::Duration::from_secs(25),
        "dropped after {waited:?}"
    );

    // A download at 1 MiB/s is in flight when SIGTERM arrives; it still completes.
    let download = std::thread::spawn(move || curl(&["--limit-rate", "1M", &u]));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (status, log) = served.stop();
    let got = download.join().unwrap();
    assert!(status.success(), "{log}");
    assert_eq!(got.exit, 0, "the download in flight completed");
    assert_eq!(sha256_digest(&got.body), layer);
    assert!(
        log.contains("shutting down") && log.contains("stopped after"),
        "{log}"
    );
}

#[test]
fn verify_first_refuses_a_damaged_archive_before_listening() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let img = synth_image(11, &[64 * 1024]);
    let archive = h.join("a.tar");
    SynthArchive::of_images(&[("quay.io/team/app:1".into(), img.clone())]).write(
        &archive,
        false,
        &[],
    );
    let bytes = fs::read(&archive).unwrap();
    let entries = tar_entries(&bytes);
    let e = tar_entry(&entries, &format!("blobs/sha256/{}", img.blobs[1].0.hex()));
    let mut tampered = bytes.clone();
    tampered[e.data_offset + 7] ^= 1;
    fs::write(&archive, &tampered).unwrap();
    // Without --verify-first the damage only shows when the blob is served (tested above).
    let err = Served::try_start(h, &[s(&archive), "--allow-unsigned", "--verify-first"])
        .err()
        .expect("--verify-first refuses a damaged archive");
    assert!(
        err.contains("--verify-first") && err.contains("airlift verify"),
        "{err}"
    );
    assert!(!err.contains("listening on"), "{err}");
}
