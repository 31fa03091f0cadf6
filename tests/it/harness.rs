//! Proves the shared test harness (tests/it/support) works against the real tools it wraps:
//! docker-registry, skopeo, tar, and the kernel's rusage.

use crate::support;
use std::path::Path;
use std::process::Command;

use crate::support::{ImageSpec, LayerSpec, Registry, WrittenImage, WrittenIndex, run_tool};

const KIB: u64 = 1024;

/// A 2-layer image and a 2-platform index; all three images share one base layer.
fn write_fixtures(dir: &Path) -> (WrittenImage, WrittenIndex) {
    let base = LayerSpec::new(1, 300 * KIB);
    let image = support::write_oci_image(
        dir,
        "single",
        &ImageSpec::new(10, vec![base, LayerSpec::new(2, 200 * KIB)]),
    );
    let index = support::write_oci_index(
        dir,
        "multi",
        &[
            (
                "amd64",
                ImageSpec::new(11, vec![base, LayerSpec::new(3, 100 * KIB)]),
            ),
            (
                "arm64",
                ImageSpec::new(12, vec![base, LayerSpec::new(4, 150 * KIB)]),
            ),
        ],
    );
    (image, index)
}

/// Pushes both fixtures with skopeo and checks what the registry serves byte for byte.
fn push_and_check(reg: &Registry, dir: &Path, image: &WrittenImage, index: &WrittenIndex) {
    crate::support::skopeo_push(dir, "single", "harness/app:v1", reg);
    crate::support::skopeo_push(dir, "multi", "harness/multi:v1", reg);

    let raw = support::skopeo_inspect_raw("harness/app:v1", reg);
    assert_eq!(raw, image.manifest);
    assert_eq!(support::sha256_digest(&raw), image.manifest_digest);

    let raw = support::skopeo_inspect_raw("harness/multi:v1", reg);
    assert_eq!(support::sha256_digest(&raw), index.index_digest);
    for child in &index.images {
        let by_digest = format!("harness/multi@{}", child.manifest_digest);
        let raw = support::skopeo_inspect_raw(&by_digest, reg);
        assert_eq!(support::sha256_digest(&raw), child.manifest_digest);
    }

    assert_eq!(support::skopeo_list_tags("harness/app", reg), vec!["v1"]);
    let mut repos = support::catalog(reg);
    repos.sort();
    assert_eq!(repos, vec!["harness/app", "harness/multi"]);

    // The blobs really are in the registry's storage, under their digests.
    for d in index.blob_digests().iter().chain(&image.layer_digests) {
        let path = reg
            .storage_dir()
            .join("docker/registry/v2/blobs/sha256")
            .join(&d.hex()[..2])
            .join(d.hex())
            .join("data");
        assert!(path.is_file(), "blob {d} missing at {}", path.display());
    }
}

#[test]
fn plain_and_tls_registries_serve_what_skopeo_pushed() {
    let plain = Registry::start_plain();
    let tls = Registry::start_tls_auth();
    let dir = tempfile::tempdir().unwrap();
    let (image, index) = write_fixtures(dir.path());
    push_and_check(&plain, dir.path(), &image, &index);
    push_and_check(&tls, dir.path(), &image, &index);

    // The TLS flavour answers 401 without credentials and 200 with them.
    let ok = support::http_get(&tls, "/v2/");
    assert_eq!(ok.status, 200);

    // An independent reader gets the same index back from the TLS registry.
    let back = tempfile::tempdir().unwrap();
    crate::support::skopeo_pull("harness/multi:v1", &tls, back.path(), "copy");
    for d in index.blob_digests() {
        assert!(back.path().join("blobs/sha256").join(d.hex()).is_file());
    }
}

#[test]
fn tls_registry_refuses_a_wrong_password() {
    let tls = Registry::start_tls_auth();
    let dir = tempfile::tempdir().unwrap();
    let (_, _) = write_fixtures(dir.path());
    let user = tls.username().to_string();
    let out = support::skopeo_push_with_creds(
        dir.path(),
        "single",
        "harness/app:v1",
        &tls,
        &user,
        "not-the-password",
    );
    assert!(
        !out.status.success(),
        "push with a wrong password succeeded"
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        stderr.contains("unauthorized") || stderr.contains("authentication"),
        "unexpected skopeo error: {stderr}"
    );
    assert!(support::catalog(&tls).is_empty());
}

fn pid_is_gone(pid: u32) -> bool {
    // Reaped children vanish from /proc; a recycled PID would not be docker-registry.
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Err(_) => true,
        Ok(cmdline) => !String::from_utf8_lossy(&cmdline).contains("docker-registry"),
    }
}

#[test]
fn restart_keeps_content_and_drop_kills_the_child() {
    let mut reg = Registry::start_plain();
    let dir = tempfile::tempdir().unwrap();
    let (image, _) = write_fixtures(dir.path());
    crate::support::skopeo_push(dir.path(), "single", "harness/app:v1", &reg);

    let first = reg.pid().expect("running");
    reg.kill();
    assert!(pid_is_gone(first));
    assert!(!reg.is_running());
    let host = reg.host();
    reg.restart();
    assert_eq!(reg.host(), host, "restart keeps the port");
    let raw = support::skopeo_inspect_raw("harness/app:v1", &reg);
    assert_eq!(support::sha256_digest(&raw), image.manifest_digest);

    // Port briefly held by someone else: restart retries until it is free again.
    reg.stop();
    let squatter = std::net::TcpListener::bind(("127.0.0.1", reg.port())).unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(600));
        drop(squatter);
    });
    reg.restart();
    release.join().unwrap();
    assert!(
        reg.log().contains("address already in use"),
        "{}",
        reg.log()
    );
    assert_eq!(support::skopeo_list_tags("harness/app", &reg), vec!["v1"]);
    assert_eq!(
        crate::support::skopeo_inspect_raw(&format!("harness/app@{}", image.manifest_digest), &reg),
        image.manifest
    );

    let pid = reg.pid().expect("running");
    let storage = reg.storage_dir();
    drop(reg);
    assert!(pid_is_gone(pid), "registry {pid} still alive after drop");
    assert!(!storage.exists(), "temp dir removed on drop");
}

#[test]
fn layouts_are_deterministic_real_tars_and_share_layers() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let (img_a, idx_a) = write_fixtures(a.path());
    let (img_b, idx_b) = write_fixtures(b.path());
    assert_eq!(img_a.manifest_digest, img_b.manifest_digest);
    assert_eq!(idx_a.index_digest, idx_b.index_digest);
    // Same LayerSpec, same bytes: the base layer is shared by the image and the amd64 child.
    assert_eq!(img_a.layer_digests[0], idx_a.images[0].layer_digests[0]);
    assert_ne!(img_a.layer_digests[1], idx_a.images[0].layer_digests[1]);
    // total_bytes counts the base layer shared by both children once.
    let base = img_a.layer_sizes[0];
    let sum_children: u64 = idx_a.images.iter().map(|i| i.total_bytes).sum();
    assert_eq!(
        idx_a.total_bytes,
        sum_children - base + idx_a.index.len() as u64
    );

    // Small layers are real tar.gz files that GNU tar lists.
    let layer = a
        .path()
        .join("blobs/sha256")
        .join(img_a.layer_digests[1].hex());
    let listing = run_tool(Command::new("tar").arg("-tzvf").arg(&layer));
    let listing = String::from_utf8_lossy(&listing);
    assert!(listing.contains("data/layer-2-204800.bin"), "{listing}");
    assert!(listing.contains("204800"), "{listing}");

    // Layers above the gzip limit are plain tar, so their diff_id is their digest.
    let big = support::write_oci_image(
        a.path(),
        "big",
        &ImageSpec::new(20, vec![LayerSpec::new(5, 9 * 1024 * KIB)]),
    );
    assert_eq!(big.layer_digests[0], big.diff_ids[0]);
    assert!(big.layer_sizes[0] > 9 * 1024 * KIB);
    let manifest: serde_json::Value = serde_json::from_slice(&big.manifest).unwrap();
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        airlift::oci::media_type::OCI_LAYER_TAR
    );
    let blob = a
        .path()
        .join("blobs/sha256")
        .join(big.layer_digests[0].hex());
    let bytes = std::fs::read(&blob).unwrap();
    assert_eq!(support::sha256_digest(&bytes), big.layer_digests[0]);
}

#[test]
fn peak_rss_is_measured_from_rusage() {
    // dd allocates and fills one buffer of `bs` bytes: its peak RSS follows bs.
    let mut big = Command::new("dd");
    big.args(["if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]);
    let big = support::run_measuring_rss(&mut big);
    assert!(
        big.status.success(),
        "{}",
        String::from_utf8_lossy(&big.stderr)
    );

    let mut small = Command::new("dd");
    small.args(["if=/dev/zero", "of=/dev/null", "bs=1M", "count=1"]);
    let small = support::run_measuring_rss(&mut small);
    assert!(small.status.success());

    assert!(
        big.peak_rss_kib >= 64 * 1024,
        "64 MiB buffer, peak {} KiB",
        big.peak_rss_kib
    );
    assert!(
        small.peak_within(32 * 1024),
        "1 MiB buffer, peak {} KiB ({} KiB inherited)",
        small.peak_rss_kib,
        small.inherited_kib
    );
    assert!(String::from_utf8_lossy(&big.stderr).contains("1+0 records in"));

    let mut failing = Command::new("sh");
    failing.args(["-c", "exit 3"]);
    assert_eq!(
        crate::support::run_measuring_rss(&mut failing)
            .status
            .code(),
        Some(3)
    );
}

#[test]
fn free_port_is_bindable_on_loopback() {
    let port = support::free_port();
    assert_ne!(port, 0);
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    assert_eq!(listener.local_addr().unwrap().port(), port);
}
