//! `airlift copy` against real registries (CNCF distribution), checked with skopeo.
//!
//! Every test drives the real binary as a child process, the way a user would, so flag
//! parsing, credential lookup, TLS set-up, error mapping and exit codes are all covered.
//! Registries are plain-HTTP loopback ones unless the test is about TLS or auth.

use crate::support;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::support::{ImageSpec, LayerSpec, Registry, WrittenImage, WrittenIndex};
use airlift::digest::Digest;
use sha2::{Digest as _, Sha256};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// An `airlift` command isolated from the host: no docker config, no airlift env vars.
struct Airlift {
    cmd: Command,
    // Kept alive for the command's lifetime: the empty docker config dir it points at.
    home: tempfile::TempDir,
}

impl Airlift {
    /// `airlift copy -q ARGS…` with HOME/DOCKER_CONFIG pointing at an empty temp dir.
    fn new(args: &[&str]) -> Airlift {
        let home = tempfile::tempdir().expect("temp HOME");
        let mut cmd = support::airlift_cmd(home.path());
        cmd.arg("copy").arg("-q").args(args).stdin(Stdio::null());
        Airlift { cmd, home }
    }

    /// Sets one environment variable for the child.
    fn env(mut self, k: &str, v: &str) -> Airlift {
        self.cmd.env(k, v);
        self
    }

    fn output(mut self) -> Output {
        self.cmd.output().expect("run airlift")
    }

    /// Runs and panics with airlift's stderr unless it succeeded.
    fn ok(self) -> Output {
        let desc = format!("{:?}", self.cmd);
        let out = self.output();
        assert!(
            out.status.success(),
            "{desc} failed with {}:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs, asserts a non-zero exit, returns stderr.
    fn fails(self) -> String {
        let desc = format!("{:?}", self.cmd);
        let out = self.output();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "{desc} should have failed; stdout:\n{}\nstderr:\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            out.status.code().is_some(),
            "{desc} died from a signal: {}",
            out.status
        );
        stderr
    }

    /// Appends the last argument and runs expecting success (keeps call sites one line).
    fn ok_with(mut self, last: &str) -> Output {
        self.cmd.arg(last);
        self.ok()
    }

    /// Appends the last argument and runs expecting failure; returns stderr.
    fn fails_with(mut self, last: &str) -> String {
        self.cmd.arg(last);
        self.fails()
    }

    /// Appends one more argument.
    fn arg(mut self, a: impl AsRef<std::ffi::OsStr>) -> Airlift {
        self.cmd.arg(a);
        self
    }

    /// Runs to completion measuring the child's peak RSS.
    fn measured(mut self) -> support::Measured {
        crate::support::run_measuring_rss(&mut self.cmd)
    }

    /// Starts the command in the background, stdout/stderr piped.
    fn spawn(mut self) -> (std::process::Child, tempfile::TempDir) {
        let child = self
            .cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn airlift");
        (child, self.home)
    }
}

/// Path of a blob's data file in a registry's filesystem storage.
fn blob_data_path(reg: &Registry, d: &Digest) -> PathBuf {
    let hex = d.to_string();
    let hex = hex.strip_prefix("sha256:").expect("sha256 digest");
    reg.storage_dir()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

/// sha256 of a file, streamed, computed with `sha2` (independent of airlift).
fn sha256_file(path: &Path) -> Digest {
    let mut f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = f.read(&mut buf).expect("read blob file");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    format!("sha256:{}", hex::encode(h.finalize()))
        .parse()
        .expect("sha256 digest")
}

/// Asserts that `repo` at `reg` serves blob `d` with exactly the right bytes (small blobs only).
fn assert_blob_served(reg: &Registry, repo: &str, d: &Digest) {
    let resp = support::http_get(reg, &format!("/v2/{repo}/blobs/{d}"));
    assert_eq!(resp.status, 200, "blob {d} in {repo} at {}", reg.host());
    assert_eq!(support::sha256_digest(&resp.body), *d, "content of {d}");
}

/// Asserts that `dest_repo` at `b` serves the image exactly as `a` serves it at `src_ref`
/// (`src_ref` and `dest_ref` are relative to their registries), with all its blobs.
fn assert_same_image(
    a: &Registry,
    src_ref: &str,
    b: &Registry,
    dest_repo: &str,
    dest_ref: &str,
    img: &WrittenImage,
) {
    let at_a = support::skopeo_inspect_raw(src_ref, a);
    let at_b = support::skopeo_inspect_raw(dest_ref, b);
    assert_eq!(
        at_b, at_a,
        "manifest bytes of {dest_ref} differ from {src_ref}"
    );
    assert_eq!(support::sha256_digest(&at_b), img.manifest_digest);
    for d in img.layer_digests.iter().chain([&img.config_digest]) {
        assert_blob_served(b, dest_repo, d);
    }
}

/// Asserts the index and every child manifest (by digest) are byte-identical at B.
fn assert_same_index(
    a: &Registry,
    src_repo: &str,
    src_tag: &str,
    b: &Registry,
    dest_repo: &str,
    dest_ref: &str,
    index: &WrittenIndex,
) {
    let at_a = support::skopeo_inspect_raw(&format!("{src_repo}:{src_tag}"), a);
    let at_b = support::skopeo_inspect_raw(dest_ref, b);
    assert_eq!(at_b, at_a, "index bytes of {dest_ref} differ");
    assert_eq!(support::sha256_digest(&at_b), index.index_digest);
    for child in &index.images {
        let d = &child.manifest_digest;
        assert_same_image(
            a,
            &format!("{src_repo}@{d}"),
            b,
            dest_repo,
            &format!("{dest_repo}@{d}"),
            child,
        );
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// imgpkg's tag for a digest: `sha256-<hex>.imgpkg`.
fn imgpkg_tag(d: &Digest) -> String {
    format!("{}.imgpkg", d.to_string().replace(':', "-"))
}

/// Small fixtures: a 2-layer image and a 2-platform index sharing a base layer.
fn small_fixtures(dir: &Path) -> (WrittenImage, WrittenIndex) {
    let base = LayerSpec::new(1, 200 * KIB);
    let image = support::write_oci_image(
        dir,
        "single",
        &ImageSpec::new(10, vec![base, LayerSpec::new(2, 100 * KIB)]),
    );
    let index = support::write_oci_index(
        dir,
        "multi",
        &[
            (
                "amd64",
                ImageSpec::new(11, vec![base, LayerSpec::new(3, 60 * KIB)]),
            ),
            (
                "arm64",
                ImageSpec::new(12, vec![base, LayerSpec::new(4, 80 * KIB)]),
            ),
        ],
    );
    (image, index)
}

/// A plain registry holding the small fixtures at `src/app:v1` and `src/multi:v2`.
fn source_with_fixtures() -> (Registry, tempfile::TempDir, WrittenImage, WrittenIndex) {
    let a = Registry::start_plain();
    let dir = tempfile::tempdir().expect("layout dir");
    let (image, index) = small_fixtures(dir.path());
    crate::support::skopeo_push(dir.path(), "single", "src/app:v1", &a);
    crate::support::skopeo_push(dir.path(), "multi", "src/multi:v2", &a);
    (a, dir, image, index)
}

#[test]
fn copy_image_and_index_to_registry_and_to_repo() {
    let (a, _dir, image, index) = source_with_fixtures();
    let b = Registry::start_plain();
    let app = a.reference("src/app:v1");
    let multi = a.reference("src/multi:v2");

    // --to-registry keeps repository paths and tags under the prefix.
    let out =
        Airlift::new(&["-i", &app, "-i", &multi, "--to-registry"]).ok_with(&b.reference("mirror"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "{app} -> {}",
            b.reference(&format!("mirror/src/app@{}", image.manifest_digest))
        )),
        "mapping line missing:\n{stdout}"
    );
    assert_same_image(
        &a,
        "src/app:v1",
        &b,
        "mirror/src/app",
        "mirror/src/app:v1",
        &image,
    );
    assert_same_index(
        &a,
        "src/multi",
        "v2",
        &b,
        "mirror/src/multi",
        "mirror/src/multi:v2",
        &index,
    );
    assert_eq!(support::skopeo_list_tags("mirror/src/app", &b), ["v1"]);
    assert_eq!(support::skopeo_list_tags("mirror/src/multi", &b), ["v2"]);

    // --to-repo: imgpkg's flat layout, original tag plus sha256-<hex>.imgpkg per root.
    Airlift::new(&["-i", &app, "-i", &multi, "--to-repo"]).ok_with(&b.reference("flat/all"));
    assert_same_image(
        &a,
        "src/app:v1",
        &b,
        "flat/all",
        &format!("flat/all:{}", imgpkg_tag(&image.manifest_digest)),
        &image,
    );
    assert_same_index(
        &a,
        "src/multi",
        "v2",
        &b,
        "flat/all",
        &format!("flat/all:{}", imgpkg_tag(&index.index_digest)),
        &index,
    );
    let want = sorted(vec![
        "v1".into(),
        "v2".into(),
        imgpkg_tag(&image.manifest_digest),
        imgpkg_tag(&index.index_digest),
    ]);
    assert_eq!(sorted(support::skopeo_list_tags("flat/all", &b)), want);
    assert_eq!(
        crate::support::sha256_digest(&support::skopeo_inspect_raw("flat/all:v1", &b)),
        image.manifest_digest
    );
    assert_eq!(
        crate::support::sha256_digest(&support::skopeo_inspect_raw("flat/all:v2", &b)),
        index.index_digest
    );
    assert_eq!(
        sorted(support::catalog(&b)),
        ["flat/all", "mirror/src/app", "mirror/src/multi"]
    );

    // A second run finds everything in place and changes nothing.
    let out = Airlift::new(&["-i", &app, "--to-repo"]).ok_with(&b.reference("flat/all"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("0 blobs ("),
        "second run re-uploaded: {stderr}"
    );
    assert_eq!(sorted(support::skopeo_list_tags("flat/all", &b)), want);
}

#[test]
fn copy_into_tls_registry_with_ca_and_credentials() {
    let (a, _dir, image, index) = source_with_fixtures();
    let b = Registry::start_tls_auth();
    let ca = b.ca_cert_path();
    let ca = ca.to_str().expect("utf-8 path");

    // Credentials as flags.
    Airlift::new(&[
        "-i",
        &a.reference("src/app:v1"),
        "--registry-ca-cert-path",
        ca,
        "--registry-username",
        b.username(),
        "--registry-password",
        b.password(),
        "--to-registry",
    ])
    .ok_with(&b.reference("flags"));
    assert_same_image(
        &a,
        "src/app:v1",
        &b,
        "flags/src/app",
        "flags/src/app:v1",
        &image,
    );

    // Credentials from the AIRLIFT_REGISTRY_* env group for B's host only.
    Airlift::new(&[
        "-i",
        &a.reference("src/multi:v2"),
        "--registry-ca-cert-path",
        ca,
        "--to-repo",
    ])
    .env("AIRLIFT_REGISTRY_HOSTNAME", &b.host())
    .env("AIRLIFT_REGISTRY_USERNAME", b.username())
    .env("AIRLIFT_REGISTRY_PASSWORD", b.password())
    .ok_with(&b.reference("env/flat"));
    assert_same_index(&a, "src/multi", "v2", &b, "env/flat", "env/flat:v2", &index);
    assert_eq!(
        sorted(support::skopeo_list_tags("env/flat", &b)),
        sorted(vec!["v2".into(), imgpkg_tag(&index.index_digest)])
    );
}

#[test]
fn copy_errors_name_the_problem() {
    let (a, _dir, _image, _index) = source_with_fixtures();
    let b = Registry::start_tls_auth();
    let ca = b.ca_cert_path();
    let ca = ca.to_str().expect("utf-8 path");
    let app = a.reference("src/app:v1");
    let auth_failed = format!("authentication failed for {}", b.host());

    // Wrong password: says which host refused and where the credential came from.
    let err = Airlift::new(&[
        "-i",
        &app,
        "--registry-ca-cert-path",
        ca,
        "--registry-username",
        b.username(),
        "--registry-password",
        "not-the-password",
        "--to-registry",
    ])
    .fails_with(&b.reference("x"));
    assert!(err.contains(&auth_failed), "{err}");
    assert!(
        err.contains("--registry-username/--registry-password"),
        "should say the credential came from the flags: {err}"
    );
    assert!(!err.contains("not-the-password"), "password leaked: {err}");

    // Wrong password from the env group: names the group.
    let err = Airlift::new(&["-i", &app, "--registry-ca-cert-path", ca, "--to-registry"])
        .env("AIRLIFT_REGISTRY_HOSTNAME", &b.host())
        .env("AIRLIFT_REGISTRY_USERNAME", b.username())
        .env("AIRLIFT_REGISTRY_PASSWORD", "also-wrong")
        .fails_with(&b.reference("x"));
    assert!(err.contains(&auth_failed), "{err}");
    assert!(err.contains("env AIRLIFT_REGISTRY_"), "{err}");
    assert!(!err.contains("also-wrong"), "password leaked: {err}");

    // No credentials at all: lists every place that was searched.
    let err = Airlift::new(&["-i", &app, "--registry-ca-cert-path", ca, "--to-registry"])
        .fails_with(&b.reference("x"));
    assert!(err.contains(&auth_failed), "{err}");
    assert!(err.contains("none found"), "{err}");
    assert!(err.contains("AIRLIFT_REGISTRY_HOSTNAME"), "{err}");
    assert!(err.contains("--registry-username"), "{err}");
    assert!(err.contains("docker config"), "{err}");

    // Unknown CA: points at --registry-ca-cert-path.
    let err = Airlift::new(&[
        "-i",
        &app,
        "--registry-username",
        b.username(),
        "--registry-password",
        b.password(),
        "--to-registry",
    ])
    .fails_with(&b.reference("x"));
    assert!(err.contains(&b.host()), "{err}");
    assert!(err.contains("--registry-ca-cert-path"), "{err}");

    // Nothing reached B in any of the failed runs.
    assert_eq!(support::catalog(&b), Vec::<String>::new());

    // Missing image: names the reference.
    let missing = a.reference("src/app:nope");
    let err = Airlift::new(&["-i", &missing, "--to-registry"]).fails_with(&a.reference("dst"));
    assert!(err.contains(&missing), "{err}");
    assert!(err.contains("not found"), "{err}");
    let missing_repo = a.reference("no/such/repo:v1");
    let err = Airlift::new(&["-i", &missing_repo, "--to-registry"]).fails_with(&a.reference("dst"));
    assert!(err.contains(&missing_repo), "{err}");
    assert!(err.contains("not found"), "{err}");
    assert_eq!(sorted(support::catalog(&a)), ["src/app", "src/multi"]);
}

#[test]
fn corrupted_blob_at_source_is_refused() {
    let a = Registry::start_plain();
    let b = Registry::start_plain();
    let dir = tempfile::tempdir().expect("layout dir");
    let image = support::write_oci_image(
        dir.path(),
        "v1",
        &ImageSpec::new(
            20,
            vec![LayerSpec::new(21, 300 * KIB), LayerSpec::new(22, 100 * KIB)],
        ),
    );
    crate::support::skopeo_push(dir.path(), "v1", "src/bad:v1", &a);

    // Same length, different bytes: only a digest check can notice.
    let victim = &image.layer_digests[1];
    let path = blob_data_path(&a, victim);
    let len = fs::metadata(&path).expect("blob data file").len();
    let mut garbage = fs::read(&path).expect("read blob");
    for b in garbage.iter_mut().skip(len as usize / 2) {
        *b ^= 0x5a;
    }
    fs::write(&path, &garbage).expect("overwrite blob");

    let err = Airlift::new(&["-i", &a.reference("src/bad:v1"), "--to-registry"])
        .fails_with(&b.reference("dst"));
    assert!(err.contains(&victim.to_string()), "{err}");
    assert!(err.contains(&a.host()), "should name the source: {err}");
    assert!(err.contains("does not match"), "{err}");
    assert!(
        !err.contains("cannot reach"),
        "bad content is not a network problem: {err}"
    );

    // Nothing addressable at B: no manifest by digest or tag, and not the bad blob.
    let repo = "dst/src/bad";
    let resp = support::http_get(
        &b,
        &format!("/v2/{repo}/manifests/{}", image.manifest_digest),
    );
    assert_eq!(resp.status, 404, "manifest must not exist at B");
    let resp = support::http_get(&b, &format!("/v2/{repo}/manifests/v1"));
    assert_eq!(resp.status, 404, "tag must not exist at B");
    let resp = support::http_get(&b, &format!("/v2/{repo}/blobs/{victim}"));
    assert_eq!(resp.status, 404, "corrupt blob must not exist at B");
    assert!(!blob_data_path(&b, victim).exists());
}

/// The only big test: one 1 GiB layer, pushed once, streams through copy and through export
/// in bounded memory.
#[test]
fn one_gib_layer_streams_through_copy_and_export_in_bounded_memory() {
    const RSS_LIMIT_KIB: u64 = 100 * 1024;
    let a = Registry::start_plain();
    let b = Registry::start_plain();
    let started = Instant::now();
    let img = {
        let dir = tempfile::tempdir().expect("layout dir");
        // Above the harness's gzip limit: a plain tar layer, cheap to generate.
        let img = support::write_oci_image(
            dir.path(),
            "big",
            &ImageSpec::new(30, vec![LayerSpec::new(31, GIB)]),
        );
        crate::support::skopeo_push(dir.path(), "big", "big/one:v1", &a);
        img
    };
    let layer = &img.layer_digests[0];
    assert!(img.layer_sizes[0] > GIB);
    let prepared = started.elapsed();

    let m = Airlift::new(&[
        "-i",
        &a.reference("big/one:v1"),
        "--to-registry",
        &b.reference("m"),
    ])
    .measured();
    let stderr = String::from_utf8_lossy(&m.stderr);
    assert!(m.status.success(), "copy failed: {}\n{stderr}", m.status);
    eprintln!(
        "1 GiB layer: written and pushed by skopeo in {prepared:?}; airlift copy took {:?}, peak RSS {} KiB (this process's own peak {} KiB)",
        started.elapsed() - prepared,
        m.peak_rss_kib,
        m.inherited_kib
    );
    assert!(
        m.peak_within(RSS_LIMIT_KIB),
        "peak RSS {} KiB for a {} byte layer (limit {RSS_LIMIT_KIB} KiB above {} KiB inherited)",
        m.peak_rss_kib,
        img.layer_sizes[0],
        m.inherited_kib
    );

    let raw = support::skopeo_inspect_raw("m/big/one:v1", &b);
    assert_eq!(support::sha256_digest(&raw), img.manifest_digest);
    let data = blob_data_path(&b, layer);
    assert_eq!(
        fs::metadata(&data).expect("layer at B").len(),
        img.layer_sizes[0]
    );
    assert_eq!(sha256_file(&data), *layer, "layer bytes at B");
    assert!(
        b.storage_dir()
            .join("docker/registry/v2/repositories/m/big/one/_layers/sha256")
            .join(layer.to_string().trim_start_matches("sha256:"))
            .exists(),
        "layer linked into m/big/one"
    );

    let home = tempfile::tempdir().expect("temp HOME");
    let out = home.path().join("big.tar");
    let measured = support::run_measuring_rss(
        support::airlift_cmd(home.path())
            .args(["export", "-q", "--unsigned", "-o"])
            .arg(&out)
            .arg("-i")
            .arg(a.reference("big/one:v1")),
    );
    assert!(
        measured.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&measured.stderr)
    );
    let peak_mib = measured.peak_rss_kib / 1024;
    eprintln!(
        "export of a 1 GiB layer: peak RSS {peak_mib} MiB (this process's own peak {} MiB)",
        measured.inherited_kib / 1024
    );
    assert!(
        measured.peak_within(64 * 1024),
        "peak RSS {peak_mib} MiB exporting a 1 GiB layer"
    );
    let len = fs::metadata(&out).expect("archive").len();
    assert!(
        len >= img.total_bytes && len <= img.total_bytes + 64 * 1024,
        "archive {len} B for {} B of blobs",
        img.total_bytes
    );
    let names = crate::export::gnu_tar_list(&out);
    assert!(names.contains(&format!("blobs/{}", layer.to_string().replace(':', "/"))));
}

/// Largest `_uploads/*/data` file under `storage`: how far an upload in progress has got.
fn largest_upload(storage: &Path) -> u64 {
    fn walk(dir: &Path, in_uploads: bool, best: &mut u64) -> io::Result<()> {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let ty = entry.file_type()?;
            if ty.is_dir() {
                let inside = in_uploads || name == "_uploads";
                // Repositories' _layers/_manifests hold links only: skip them.
                if name != "_layers" && name != "_manifests" && name != "blobs" {
                    let _ = walk(&entry.path(), inside, best);
                }
            } else if in_uploads && name == "data" {
                *best = (*best).max(entry.metadata()?.len());
            }
        }
        Ok(())
    }
    let mut best = 0;
    let _ = walk(storage, false, &mut best);
    best
}

#[test]
fn registry_killed_mid_copy_fails_clearly_and_a_rerun_completes() {
    let a = Registry::start_plain();
    let mut b = Registry::start_plain();
    let img = {
        let dir = tempfile::tempdir().expect("layout dir");
        let img = support::write_oci_image(
            dir.path(),
            "v1",
            &ImageSpec::new(
                40,
                vec![LayerSpec::new(41, 256 * MIB), LayerSpec::new(42, 64 * KIB)],
            ),
        );
        crate::support::skopeo_push(dir.path(), "v1", "src/crash:v1", &a);
        img
    };
    let src = a.reference("src/crash:v1");
    let dest = b.reference("m");
    let args = ["-i", src.as_str(), "--to-registry", dest.as_str()];

    let (mut child, _home) = Airlift::new(&args)
        .arg("--registry-retry-count")
        .arg("1")
        .spawn();
    // Wait until the big layer is visibly streaming into B, then pull the plug.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait airlift") {
            panic!("copy ended ({status}) before the upload could be interrupted");
        }
        if largest_upload(&b.storage_dir()) > 8 * MIB {
            break;
        }
        assert!(Instant::now() < deadline, "upload to B never started");
        sleep(Duration::from_millis(5));
    }
    b.kill();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait airlift") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("airlift did not give up within 60 s after the registry died");
        }
        sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr pipe")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    eprintln!("interrupted copy said: {stderr}");
    assert!(
        !status.success(),
        "copy succeeded although B died: {stderr}"
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot reach registry {}", b.host())),
        "{stderr}"
    );

    b.restart();
    // Tags come last: the interrupted run left nothing addressable.
    let resp = support::http_get(&b, "/v2/m/src/crash/manifests/v1");
    assert_eq!(resp.status, 404, "tag after an interrupted copy");

    let out = Airlift::new(&args).ok();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("copied 1 manifests"), "{stderr}");
    let raw = support::skopeo_inspect_raw("m/src/crash:v1", &b);
    assert_eq!(raw, img.manifest);
    for (d, size) in img.layer_digests.iter().zip(&img.layer_sizes) {
        let data = blob_data_path(&b, d);
        assert_eq!(fs::metadata(&data).expect("layer at B").len(), *size);
        assert_eq!(sha256_file(&data), *d);
    }
    assert_blob_served(&b, "m/src/crash", &img.config_digest);
}
