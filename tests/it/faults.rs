//! Registry faults: a fault-injecting proxy between airlift and a real registry (5xx/429
//! answers, connections cut mid-body, delays), a target registry killed in the middle of an
//! import, a disk that fills up during export, and a 300-image import at concurrency 32.
//!
//! Each test compares against the same work done without faults: "it succeeded" is not
//! enough, the result must be the one an undisturbed run produces.

use crate::support;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::support::proxy::{Fault, FaultProxy};
use crate::support::s;
use crate::support::synth::{SynthArchive, synth_image};
use crate::support::{
    ImageSpec, LayerSpec, Registry, airlift, airlift_cmd, expect_ok, output_text, registry_state,
};
use serde_json::Value;

/// A source registry holding one image of three 2 MiB layers (big enough to be cut mid-body).
fn source_image() -> (Registry, String) {
    let reg = Registry::start_plain();
    let layout = tempfile::tempdir().unwrap();
    crate::support::write_oci_image(
        layout.path(),
        "v1",
        &ImageSpec::new(
            900,
            vec![
                LayerSpec::new(901, 2 << 20),
                LayerSpec::new(902, 2 << 20),
                LayerSpec::new(903, 2 << 20),
            ],
        ),
    );
    crate::support::skopeo_push(layout.path(), "v1", "faults/app:v1", &reg);
    (reg, "faults/app:v1".to_owned())
}

fn export(home: &Path, reference: &str, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["export", "-q", "-i", reference, "-o", s(out), "--unsigned"];
    args.extend_from_slice(extra);
    airlift_cmd(home)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(&args)
        .output()
        .unwrap()
}

#[test]
fn export_through_a_faulty_network_retries_resumes_and_matches() {
    let (reg, image) = source_image();
    let proxy = FaultProxy::start(reg.port());
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let reference = proxy.reference(&image);

    let clean = h.join("clean.tar");
    expect_ok(&export(h, &reference, &clean, &[]));
    let requests_clean = proxy.requests();

    proxy.inject(Fault::Status(503), 2, "/manifests/");
    proxy.inject(Fault::Status(429), 1, "/blobs/");
    proxy.inject(Fault::Status(500), 1, "GET /v2/faults/app/blobs/");
    proxy.inject(Fault::CutResponse(700_000), 3, "GET /v2/faults/app/blobs/");
    proxy.inject(Fault::Delay(Duration::from_millis(300)), 2, "");
    let faulty = h.join("faulty.tar");
    expect_ok(&export(h, &reference, &faulty, &[]));
    assert_eq!(proxy.pending(), 0, "faults not fired: {:?}", proxy.log());
    assert!(proxy.requests() > 2 * requests_clean, "no retries seen");
    assert!(
        std::fs::read(&faulty).unwrap() == std::fs::read(&clean).unwrap(),
        "export through faults differs from the clean export"
    );
    expect_ok(&airlift(h, &["verify", s(&faulty), "--allow-unsigned"]));

    // Retries exhausted: a clear error naming the status, no archive; a re-run completes.
    proxy.inject(Fault::Status(503), 100, "/blobs/");
    let failed = h.join("failed.tar");
    let out = export(h, &reference, &failed, &["--registry-retry-count", "1"]);
    assert!(!out.status.success(), "export succeeded through 100 503s");
    let t = output_text(&out);
    assert!(t.contains("503") && t.contains(&proxy.host()), "{t}");
    assert_no_output(&failed);
    proxy.clear();
    expect_ok(&export(
        h,
        &reference,
        &failed,
        &["--registry-retry-count", "1"],
    ));
    assert!(std::fs::read(&failed).unwrap() == std::fs::read(&clean).unwrap());
}

/// Neither FILE nor FILE.partial nor any other file next to it.
fn assert_no_output(out: &Path) {
    let dir = out.parent().unwrap();
    let name = out.file_name().unwrap().to_string_lossy().into_owned();
    let stray: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&name) || n.contains("partial") || n.starts_with('.'))
        .collect();
    assert!(stray.is_empty(), "left behind: {stray:?}");
}

/// Writes a synthetic archive of `n` images (config + one unique layer + one shared layer).
fn synth_archive(dir: &Path, n: u64, layer: usize) -> (PathBuf, SynthArchive) {
    let images: Vec<(String, support::synth::SynthImage)> = (0..n)
        .map(|i| {
            (
                format!("src.example/many/img{i}:v{i}"),
                synth_image(10_000 + i, &[layer]),
            )
        })
        .collect();
    let archive = SynthArchive::of_images(&images);
    let path = dir.join(format!("synth-{n}.tar"));
    archive.write(&path, false, &[]);
    (path, archive)
}

fn import(home: &Path, archive: &Path, to_repo: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "import",
        "-q",
        s(archive),
        "--to-repo",
        to_repo,
        "--allow-unsigned",
    ];
    args.extend_from_slice(extra);
    airlift(home, &args)
}

/// The registry state an undisturbed import of `archive` leaves, to compare others with.
fn state_of_direct_import(
    home: &Path,
    archive: &Path,
) -> BTreeMap<String, BTreeMap<String, Vec<u8>>> {
    let fresh = Registry::start_plain();
    expect_ok(&import(home, archive, &fresh.reference("inside/app"), &[]));
    registry_state(&fresh)
}

#[test]
fn import_through_a_faulty_network_retries_and_matches() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let (archive, _) = synth_archive(h, 4, 1 << 20);

    let expected = state_of_direct_import(h, &archive);
    assert_eq!(expected["inside/app"].len(), 8, "{:?}", expected.keys());

    let target = Registry::start_plain();
    let proxy = FaultProxy::start(target.port());
    let to_repo = proxy.reference("inside/app");
    proxy.inject(Fault::Status(503), 2, "POST ");
    proxy.inject(Fault::Status(500), 1, "PUT /v2/inside/app/blobs/");
    proxy.inject(Fault::Status(429), 2, "HEAD ");
    proxy.inject(Fault::Status(502), 2, "PUT /v2/inside/app/manifests/");
    proxy.inject(Fault::CutRequest(300_000), 2, "/blobs/uploads/");
    proxy.inject(Fault::Delay(Duration::from_millis(200)), 3, "");
    expect_ok(&import(h, &archive, &to_repo, &["--concurrency", "4"]));
    assert_eq!(proxy.pending(), 0, "faults not fired: {:?}", proxy.log());
    assert!(registry_state(&target) == expected, "state differs");

    // Retries exhausted at the manifest step: clear error, no tag; a re-run completes.
    let target2 = Registry::start_plain();
    let proxy2 = FaultProxy::start(target2.port());
    proxy2.inject(Fault::Status(503), 100, "PUT /v2/inside/app/manifests/");
    let out = import(
        h,
        &archive,
        &proxy2.reference("inside/app"),
        &["--registry-retry-count", "1"],
    );
    assert!(!out.status.success(), "import succeeded through 100 503s");
    let t = output_text(&out);
    assert!(t.contains("503") && t.contains(&proxy2.host()), "{t}");
    assert!(
        registry_state(&target2)
            .values()
            .all(|tags| tags.is_empty()),
        "tags pushed by a failed import"
    );
    proxy2.clear();
    expect_ok(&import(h, &archive, &proxy2.reference("inside/app"), &[]));
    assert!(registry_state(&target2) == expected, "re-run state differs");
}

/// Imports `archive` through a proxy that answers `fault` to the first `times` requests
/// matching `filter`, and checks the registry ends as an undisturbed import leaves it.
fn import_through_fault(
    home: &Path,
    archive: &Path,
    (fault, times, filter): (Fault, u32, &str),
    extra: &[&str],
) -> (Registry, FaultProxy) {
    let expected = state_of_direct_import(home, archive);
    let target = Registry::start_plain();
    let proxy = FaultProxy::start(target.port());
    proxy.inject(fault, times, filter);
    expect_ok(&import(
        home,
        archive,
        &proxy.reference("inside/app"),
        extra,
    ));
    assert!(registry_state(&target) == expected, "state differs");
    (target, proxy)
}

#[test]
fn a_registry_that_refuses_mount_probes_is_asked_by_head_instead() {
    // Registries without cross-repository mounts answer 202 (fine) or, off-spec, an error:
    // after one refusal every blob is asked by HEAD and the import ends the same.
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let (archive, _) = synth_archive(h, 4, 64 << 10);
    let refuse = (Fault::Status(405), 10_000, "?mount=");
    let (_target, proxy) = import_through_fault(h, &archive, refuse, &["--concurrency", "1"]);
    let lines = proxy.request_lines();
    let probes = lines.iter().filter(|l| l.contains("?mount=")).count();
    let heads = lines
        .iter()
        .filter(|l| l.starts_with("HEAD /v2/inside/app/blobs/"))
        .count();
    assert!(
        probes == 1 && heads >= 4,
        "{probes} probes, {heads} HEADs: {lines:#?}"
    );
}

#[test]
fn an_upload_session_the_registry_forgot_is_opened_again() {
    // The existence probe opens the session the PUT then uses; a registry may purge it in
    // between and answer 404: the upload opens a fresh session instead of failing.
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let (archive, _) = synth_archive(h, 2, 64 << 10);
    let forget = (Fault::Status(404), 1, "PUT /v2/inside/app/blobs/uploads/");
    let (_target, proxy) = import_through_fault(h, &archive, forget, &[]);
    assert_eq!(proxy.pending(), 0, "the 404 never fired: {:?}", proxy.log());
}

#[test]
fn import_and_export_ask_an_anonymous_registry_once_per_object_not_per_request() {
    // An anonymous registry sends no auth challenge; an answer that is never cached means a
    // `GET /v2/` probe before every request, doubling the round trips of an import.
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let (archive, synth) = synth_archive(h, 12, 64 << 10);
    let target = Registry::start_plain();
    let proxy = FaultProxy::start(target.port());
    expect_ok(&import(h, &archive, &proxy.reference("inside/app"), &[]));
    let lines = proxy.request_lines();
    let count = |prefix: &str| lines.iter().filter(|l| l.starts_with(prefix)).count();
    let probes = lines.iter().filter(|l| l.as_str() == "GET /v2/").count();
    let blobs = synth
        .blobs
        .keys()
        .filter(|d| !synth.manifest.roots.iter().any(|r| r.digest == **d))
        .count();
    let (heads, sessions, puts) = (
        count("HEAD /v2/inside/app/blobs/"),
        count("POST /v2/inside/app/blobs/uploads/"),
        count("PUT /v2/inside/app/blobs/uploads/"),
    );
    // The existence check is a mount from the repository itself: it opens the upload too.
    let probes_self = lines
        .iter()
        .filter(|l| {
            l.starts_with("POST /v2/inside/app/blobs/uploads/?mount=")
                && l.replace("%2F", "/").ends_with("&from=inside/app")
        })
        .count();
    // One plain-HTTP probe when the client is made, one anonymous challenge probe.
    assert!(
        probes <= 3,
        "{probes} auth probes in {} requests",
        lines.len()
    );
    // Per blob: one request that asks and opens the upload, one PUT (the provenance image,
    // pushed whole at commit, asks its own two blobs by HEAD).
    assert!(
        sessions >= blobs && sessions <= blobs + 2,
        "{sessions} uploads for {blobs} blobs"
    );
    assert_eq!(
        probes_self, blobs,
        "existence not asked by probe: {lines:#?}"
    );
    assert_eq!(puts, sessions, "an upload session left without its PUT");
    assert!(
        heads <= 2,
        "blob existence asked twice for some blob ({heads} HEADs): {lines:#?}"
    );
    // A manifest over blobs this run uploaded cannot be there yet, nor a tag on it: only the
    // provenance image (pushed whole at commit) is looked up first.
    let manifest_heads = count("HEAD /v2/inside/app/manifests/");
    let manifest_puts = count("PUT /v2/inside/app/manifests/");
    assert!(
        manifest_puts > 2 && manifest_heads <= 2,
        "{manifest_heads} manifest lookups for {manifest_puts} manifest and tag pushes: {lines:#?}"
    );
    // A new root a tag names is pushed once, by that tag: by digest only the provenance image.
    let by_digest = count("PUT /v2/inside/app/manifests/sha256:");
    assert!(
        by_digest <= 1,
        "{by_digest} manifests pushed by digest besides their tags: {lines:#?}"
    );
    // Exporting back out of it: one GET per blob and manifest, few probes.
    let before = lines.len();
    let out = h.join("again.tar");
    let first = synth.manifest.roots[0].digest.clone();
    expect_ok(&export(
        h,
        &format!("{}@{first}", proxy.reference("inside/app")),
        &out,
        &[],
    ));
    let lines = proxy.request_lines()[before..].to_vec();
    let probes = lines.iter().filter(|l| l.as_str() == "GET /v2/").count();
    assert!(
        probes <= 4,
        "{probes} auth probes exporting one image: {lines:?}"
    );
}

/// Committed blob `data` files in a registry's storage.
fn stored_blobs(reg: &Registry) -> usize {
    let root = reg.storage_dir().join("docker/registry/v2/blobs/sha256");
    let Ok(prefixes) = std::fs::read_dir(&root) else {
        return 0;
    };
    prefixes
        .flatten()
        .flat_map(|p| std::fs::read_dir(p.path()).into_iter().flatten().flatten())
        .filter(|b| b.path().join("data").exists())
        .count()
}

#[test]
fn target_registry_killed_mid_import_then_restarted_rerun_matches() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let (archive, synth) = synth_archive(h, 12, 256 * 1024);
    let total_blobs = synth.manifest.blobs.len();

    let fresh = Registry::start_plain();
    expect_ok(&import(h, &archive, &fresh.reference("inside/app"), &[]));
    let expected = registry_state(&fresh);

    let mut target = Registry::start_plain();
    let proxy = FaultProxy::start(target.port());
    // Slow every request down so the kill lands in the middle of the blob phase.
    proxy.inject(Fault::Delay(Duration::from_millis(40)), 10_000, "");
    let mut child = airlift_cmd(h)
        .args([
            "import",
            "-q",
            s(&archive),
            "--to-repo",
            &proxy.reference("inside/app"),
            "--allow-unsigned",
            "--concurrency",
            "2",
            "--registry-retry-count",
            "1",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while stored_blobs(&target) < 4 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "import ended too early"
        );
        assert!(Instant::now() < deadline, "no blob arrived in 60 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    target.kill();
    let out = child.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "import survived the registry's death"
    );
    let t = output_text(&out);
    assert!(
        t.contains(&proxy.host()),
        "error does not name the registry: {t}"
    );
    target.restart();
    let partial = stored_blobs(&target);
    assert!(
        partial < total_blobs,
        "every blob arrived before the kill ({partial})"
    );
    assert!(
        registry_state(&target).values().all(|tags| tags.is_empty()),
        "tags pushed before the kill"
    );
    proxy.clear();
    expect_ok(&import(h, &archive, &proxy.reference("inside/app"), &[]));
    assert!(registry_state(&target) == expected, "re-run state differs");
    assert_eq!(stored_blobs(&target), stored_blobs(&fresh));
}

/// `GET path` over plain HTTP/1.0 accepting OCI manifests (distribution answers 404 for an
/// OCI manifest to a client that does not accept the type); returns status and body.
fn get_oci(reg: &Registry, path: &str) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(reg.host()).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.0\r\nHost: {}\r\nAccept: application/vnd.oci.image.manifest.v1+json\r\n\r\n",
        reg.host()
    )
    .unwrap();
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, raw[split + 4..].to_vec())
}

#[test]
fn three_hundred_images_at_concurrency_32_all_arrive_intact() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let (archive, synth) = synth_archive(h, 300, 512);
    let target = Registry::start_plain();
    let start = Instant::now();
    expect_ok(&import(
        h,
        &archive,
        &target.reference("stress/all"),
        &["--concurrency", "32"],
    ));
    eprintln!("300 images imported in {:?}", start.elapsed());
    // Every manifest by digest, byte-identical; every blob, hashing to its digest.
    for b in &synth.manifest.blobs {
        let what = match b.role {
            airlift::archive::Role::Manifest | airlift::archive::Role::Index => "manifests",
            _ => "blobs",
        };
        let (status, body) = get_oci(&target, &format!("/v2/stress/all/{what}/{}", b.digest));
        assert_eq!(status, 200, "{what} {} missing", b.digest);
        assert!(
            body == synth.blobs[&b.digest],
            "{what} {} differs",
            b.digest
        );
    }
    // And the tags: one per root, each naming its image.
    let tags = support::http_get(&target, "/v2/stress/all/tags/list?n=10000");
    let v: Value = serde_json::from_slice(&tags.body).unwrap();
    let tags: Vec<&str> = v["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for i in 0..300 {
        assert!(tags.contains(&format!("v{i}").as_str()), "tag v{i} missing");
    }
}

/// A small tmpfs mounted for one test, unmounted on drop (also when the test panics).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` only when not root and not in CI: as root (here and in CI), or with `CI=true`,
    /// a failed mount fails the test, so the ENOSPC half never goes missing unnoticed.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        if !root && !ci {
            return None;
        }
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            Ok(o) => panic!(
                "mount -t tmpfs failed (root: {root}, CI: {ci}); the disk-full test needs it: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!("cannot run mount (root: {root}, CI: {ci}): {e}"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

fn assert_dir_empty(dir: &Path, what: &str) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{what}: left behind {left:?}");
}

/// The disk fills up while exporting: a clear error, no file at the output name, no stray
/// temporary file. Proven on a real 3 MiB tmpfs (ENOSPC) whenever running as root or in CI
/// (a failed mount fails the test), and always with RLIMIT_FSIZE on the child (EFBIG),
/// which fails the same write path.
#[test]
fn disk_full_while_exporting_leaves_nothing() {
    let (reg, image) = source_image();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let reference = reg.reference(&image);

    if let Some(fs) = Tmpfs::mount("3m") {
        for zstd in [false, true] {
            let out_path = fs.path().join("out.tar");
            let extra: &[&str] = if zstd { &["--zstd"] } else { &[] };
            let out = export(h, &reference, &out_path, extra);
            assert!(!out.status.success(), "export onto a full disk succeeded");
            let t = output_text(&out);
            assert!(
                t.contains("No space left on device") && t.contains("out.tar"),
                "{t}"
            );
            assert_dir_empty(fs.path(), "tmpfs");
        }
    } else {
        eprintln!("not root and not CI: no tmpfs, only the RLIMIT_FSIZE variant runs");
    }

    // RLIMIT_FSIZE: writes past 1 MiB fail with EFBIG (SIGXFSZ ignored, so the child sees
    // the error instead of being killed).
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out.tar");
    let mut cmd = airlift_cmd(h);
    cmd.env("SOURCE_DATE_EPOCH", "1700000000").args([
        "export",
        "-q",
        "-i",
        &reference,
        "-o",
        s(&out_path),
        "--unsigned",
    ]);
    // SAFETY: only async-signal-safe calls (signal, setrlimit) between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: 1 << 20,
                rlim_max: 1 << 20,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "export past RLIMIT_FSIZE succeeded");
    let t = output_text(&out);
    assert!(t.contains("File too large") && t.contains("out.tar"), "{t}");
    assert_dir_empty(dir.path(), "RLIMIT_FSIZE");

    // With room again, the same export completes.
    expect_ok(&export(h, &reference, &out_path, &[]));
    expect_ok(&airlift(h, &["verify", s(&out_path), "--allow-unsigned"]));
}
