//! Volumes, deltas and resumable exports, end to end with the real binary and real registries:
//! `export --volume-size` (each volume verified alone and imported one per run, in shuffled
//! order), `export --since` (a delta imported over its base equals a full import), and
//! `export --resume` after a SIGKILL (byte-identical to an uninterrupted export, without
//! fetching again what was already written; blob fetches counted by a TCP proxy).

use crate::support::{keygen, push_images};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::s;
use crate::support::{
    ImageSpec, LayerSpec, Registry, WrittenImage, airlift_cmd, expect_code, expect_ok, push_bundle,
    registry_state, registry_tags,
};
use serde_json::Value;

const EPOCH: &str = "1767225600";
const MIB: u64 = 1 << 20;

fn run(home: &Path, args: &[&str]) -> std::process::Output {
    airlift_cmd(home)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args(args)
        .output()
        .expect("run airlift")
}

/// The `airlift/manifest.json` of a plain archive file.
fn manifest_of(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap();
    let (_, off, size) = whole_entries(&bytes)
        .into_iter()
        .find(|(n, _, _)| n == "airlift/manifest.json")
        .unwrap();
    serde_json::from_slice(&bytes[off..off + size]).unwrap()
}

fn blob_present(reg: &Registry, repo: &str, digest: &str) -> bool {
    crate::support::http_get(reg, &format!("/v2/{repo}/blobs/{digest}")).status == 200
}

/// `(name, data offset, size)` of every whole entry of a (possibly cut) plain tar.
fn whole_entries(bytes: &[u8]) -> Vec<(String, usize, usize)> {
    crate::support::whole_tar_entries(bytes)
        .into_iter()
        .map(|e| (e.name, e.data_offset, e.size))
        .collect()
}

/// Checks the checksum files with the stock tools, from inside their directory.
fn stock_checksums_pass(dir: &Path, stem: &str) {
    for (tool, file) in [
        ("b3sum", format!("{stem}.B3SUMS")),
        ("sha256sum", format!("{stem}.SHA256SUMS")),
    ] {
        crate::support::run_tool(
            std::process::Command::new(tool)
                .arg("-c")
                .arg(&file)
                .current_dir(dir),
        );
    }
}

fn volume_files(dir: &Path, stem: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with(&format!("{stem}.")) && n.ends_with(".tar") && n.len() == stem.len() + 8
        })
        .collect();
    v.sort();
    v
}

/// A bundle of three images whose layers are several MiB, so 1 MiB volumes must split some.
fn big_bundle(reg: &Registry, home: &Path) -> (String, Vec<WrittenImage>) {
    let images = push_images(
        reg,
        &[
            (
                "vol/app-a:v1",
                ImageSpec::new(
                    40,
                    vec![LayerSpec::new(41, 3 * MIB), LayerSpec::new(42, 300 * 1024)],
                ),
            ),
            (
                "vol/app-b:v1",
                ImageSpec::new(
                    43,
                    vec![
                        LayerSpec::new(44, 700 * 1024),
                        LayerSpec::new(45, 900 * 1024),
                    ],
                ),
            ),
            (
                "vol/app-c:v1",
                ImageSpec::new(46, vec![LayerSpec::new(47, 5 * MIB / 2)]),
            ),
        ],
    );
    let a = reg.reference("vol/app-a:v1");
    let b = reg.reference("vol/app-b:v1");
    let c = reg.reference("vol/app-c:v1");
    let bundle = push_bundle(reg, home, "vol/bundle", &[("a", &a), ("b", &b), ("c", &c)]);
    (bundle.image.tag_ref, images)
}

#[test]
fn one_mib_volumes_verify_alone_and_import_one_per_run_in_any_order() {
    let src = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let (key, public) = keygen(home.path(), "release");
    let (bundle, images) = big_bundle(&src, home.path());
    let out = tempfile::tempdir().unwrap();
    let set = out.path().join("app.tar");
    expect_ok(&run(
        home.path(),
        &[
            "export",
            "-b",
            &bundle,
            "-o",
            s(&set),
            "--sign-key",
            s(&key),
            "--volume-size",
            "1MiB",
            "-q",
        ],
    ));
    let single = out.path().join("single.tar");
    expect_ok(&run(
        home.path(),
        &[
            "export",
            "-b",
            &bundle,
            "-o",
            s(&single),
            "--sign-key",
            s(&key),
            "-q",
        ],
    ));
    let volumes = volume_files(out.path(), "app");
    assert!(volumes.len() >= 8, "{volumes:?}");
    assert!(!set.exists(), "no single file when writing volumes");
    for v in &volumes {
        assert!(
            v.metadata().unwrap().len() <= MIB,
            "{} over 1 MiB",
            v.display()
        );
    }
    // Big layers are split into parts; small ones never are.
    let names: Vec<String> = volumes
        .iter()
        .flat_map(|v| whole_entries(&std::fs::read(v).unwrap()))
        .map(|(n, _, _)| n)
        .collect();
    let big = &images[0].layer_digests[0];
    assert!(
        names
            .iter()
            .any(|n| n.contains(big.hex()) && n.contains(".part-0001-of-"))
    );
    let small = &images[0].layer_digests[1];
    assert!(names.iter().any(|n| n.ends_with(small.hex())));
    stock_checksums_pass(out.path(), "app");
    stock_checksums_pass(out.path(), "single");

    // Each volume alone: signature and every entry, and which volumes are still needed.
    let count = volumes.len();
    for (i, v) in volumes.iter().enumerate() {
        let text = expect_ok(&run(
            home.path(),
            &["verify", s(v), "--trust", s(&public), "--json"],
        ));
        let report: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(report["volume"], i + 1);
        assert_eq!(report["volumeCount"], count);
        assert_eq!(report["volumesNeeded"].as_array().unwrap().len(), count - 1);
        assert!(report["blobsChecked"].as_u64().unwrap() >= 1);
        crate::support::validate_json_schema("verify-report.schema.json", &report);
    }
    let manifest = manifest_of(&volumes[0]);
    crate::support::validate_json_schema("manifest.schema.json", &manifest);
    assert_eq!(manifest["volume"]["count"], count);
    assert_eq!(manifest["volume"]["maxSize"], MIB);
    let text = expect_ok(&run(
        home.path(),
        &[
            "inspect",
            s(&volumes[count - 1]),
            "--json",
            "--trust",
            s(&public),
        ],
    ));
    let inspected: Value = serde_json::from_str(&text).unwrap();
    crate::support::validate_json_schema("inspect.schema.json", &inspected);
    assert_eq!(inspected[0]["thisVolume"], count);
    assert_eq!(inspected[0]["volume"]["count"], count);
    let mut all: Vec<&str> = vec!["verify"];
    all.extend(volumes.iter().map(|p| s(p)));
    all.extend(["--trust", s(&public)]);
    expect_ok(&run(home.path(), &all));
    // A set missing a volume fails and names it.
    let mut partial: Vec<&str> = vec!["verify"];
    partial.extend(volumes.iter().skip(1).map(|p| s(p)));
    partial.extend(["--trust", s(&public)]);
    let text = expect_code(&run(home.path(), &partial), 1);
    assert!(text.contains("volume(s) missing: 1"), "{text}");

    // Import one volume per run, in a shuffled order; tags only after the last one.
    let dst = Registry::start_plain();
    let repo = dst.reference("moved/app");
    let mut order: Vec<usize> = (0..count).collect();
    order.reverse();
    order.swap(0, count / 2);
    for (k, &i) in order.iter().enumerate() {
        let text = expect_ok(&run(
            home.path(),
            &[
                "import",
                s(&volumes[i]),
                "--to-repo",
                &repo,
                "--trust",
                s(&public),
                "-q",
            ],
        ));
        let _ = text;
        if k + 1 < count {
            assert!(
                registry_tags(&dst, "moved/app").is_empty(),
                "tags after {} run(s)",
                k + 1
            );
        }
    }
    assert!(!registry_tags(&dst, "moved/app").is_empty());
    let reference = Registry::start_plain();
    expect_ok(&run(
        home.path(),
        &[
            "import",
            s(&single),
            "--to-repo",
            &reference.reference("moved/app"),
            "--trust",
            s(&public),
            "-q",
        ],
    ));
    assert_eq!(registry_state(&dst), registry_state(&reference));
    // Nothing was written next to the volumes.
    let mut listing: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    listing.sort();
    assert_eq!(listing.len(), count + 5, "{listing:?}");

    // A corrupted volume: verify and import name it; a volume of another archive is refused.
    let damaged = out.path().join("damaged");
    std::fs::create_dir(&damaged).unwrap();
    let victim = volumes
        .iter()
        .find(|v| {
            whole_entries(&std::fs::read(v).unwrap())
                .iter()
                .any(|(n, _, _)| n.contains(".part-"))
        })
        .unwrap();
    let mut bytes = std::fs::read(victim).unwrap();
    let (_, off, size) = whole_entries(&bytes)
        .into_iter()
        .find(|(n, _, _)| n.contains(".part-"))
        .unwrap();
    bytes[off + size / 2] ^= 0xff;
    let copy = damaged.join(victim.file_name().unwrap());
    std::fs::write(&copy, &bytes).unwrap();
    let text = expect_code(
        &run(home.path(), &["verify", s(&copy), "--trust", s(&public)]),
        1,
    );
    assert!(text.contains(".part-"), "{text}");
    let fresh = Registry::start_plain();
    let mut args: Vec<&str> = vec!["import"];
    args.extend(volumes.iter().filter(|v| *v != victim).map(|p| s(p)));
    args.extend([s(&copy), "--to-repo"]);
    let fresh_repo = fresh.reference("moved/app");
    args.extend([fresh_repo.as_str(), "--trust", s(&public), "-q"]);
    let text = expect_code(&run(home.path(), &args), 1);
    assert!(
        text.contains(s(&copy)),
        "the damaged volume is named: {text}"
    );
    assert!(registry_tags(&fresh, "moved/app").is_empty());
    let text = expect_code(
        &run(
            home.path(),
            &[
                "import",
                s(&volumes[0]),
                s(&single),
                "--to-repo",
                &fresh_repo,
                "--trust",
                s(&public),
            ],
        ),
        1,
    );
    assert!(text.contains("single.tar"), "{text}");
    // All volumes at once (split blobs streamed part after part from several files).
    let mut args: Vec<&str> = vec!["import"];
    args.extend(volumes.iter().rev().map(|p| s(p)));
    args.extend([
        "--to-repo",
        fresh_repo.as_str(),
        "--trust",
        s(&public),
        "-q",
    ]);
    expect_ok(&run(home.path(), &args));
    assert_eq!(registry_state(&fresh), registry_state(&reference));
}

#[test]
fn delta_over_the_previous_release_carries_only_new_layers() {
    let src = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let (key, public) = keygen(home.path(), "release");
    let base_layer = LayerSpec::new(50, 600 * 1024);
    let old = push_images(
        &src,
        &[
            (
                "rel/api:1.0",
                ImageSpec::new(51, vec![base_layer, LayerSpec::new(52, 200 * 1024)]),
            ),
            (
                "rel/web:1.0",
                ImageSpec::new(53, vec![base_layer, LayerSpec::new(54, 100 * 1024)]),
            ),
        ],
    );
    let new = push_images(
        &src,
        &[
            (
                "rel/api:1.1",
                ImageSpec::new(51, vec![base_layer, LayerSpec::new(55, 210 * 1024)]),
            ),
            (
                "rel/jobs:1.1",
                ImageSpec::new(56, vec![base_layer, LayerSpec::new(57, 90 * 1024)]),
            ),
        ],
    );
    let r = |t: &str| src.reference(t);
    let b10 = push_bundle(
        &src,
        home.path(),
        "rel/bundle-1.0",
        &[("api", &r("rel/api:1.0")), ("web", &r("rel/web:1.0"))],
    );
    let b11 = push_bundle(
        &src,
        home.path(),
        "rel/bundle-1.1",
        &[
            ("api", &r("rel/api:1.1")),
            ("web", &r("rel/web:1.0")),
            ("jobs", &r("rel/jobs:1.1")),
        ],
    );
    let out = tempfile::tempdir().unwrap();
    let full10 = out.path().join("app-1.0.tar");
    let full11 = out.path().join("app-1.1-full.tar");
    let delta = out.path().join("app-1.1.tar");
    for (b, o, extra) in [
        (&b10, &full10, None),
        (&b11, &full11, None),
        (&b11, &delta, Some(&full10)),
    ] {
        let mut args = vec![
            "export",
            "-b",
            &b.image.tag_ref,
            "-o",
            s(o),
            "--sign-key",
            s(&key),
            "-q",
        ];
        if let Some(base) = extra {
            args.extend(["--since", s(base)]);
        }
        expect_ok(&run(home.path(), &args));
    }
    // The delta's layer entries are exactly the layers 1.0 does not have.
    let old_blobs: BTreeSet<String> = whole_entries(&std::fs::read(&full10).unwrap())
        .into_iter()
        .map(|(n, _, _)| n)
        .collect();
    let mut new_layers: BTreeSet<String> = BTreeSet::new();
    for img in &new {
        for d in &img.layer_digests {
            let name = format!("blobs/sha256/{}", d.hex());
            if !old_blobs.contains(&name) {
                new_layers.insert(name);
            }
        }
    }
    new_layers.insert(format!("blobs/sha256/{}", b11.layer.0.hex()));
    let delta_bytes = std::fs::read(&delta).unwrap();
    let entries = whole_entries(&delta_bytes);
    let manifest: Value = {
        let (_, off, size) = entries
            .iter()
            .find(|(n, _, _)| n == "airlift/manifest.json")
            .unwrap();
        serde_json::from_slice(&delta_bytes[*off..off + size]).unwrap()
    };
    let layer_entries: BTreeSet<String> = manifest["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["role"] == "layer")
        .map(|b| {
            format!(
                "blobs/sha256/{}",
                b["digest"].as_str().unwrap().trim_start_matches("sha256:")
            )
        })
        .filter(|n| entries.iter().any(|(e, _, _)| e == n))
        .collect();
    assert_eq!(layer_entries, new_layers);
    assert_eq!(manifest["base"]["file"], "app-1.0.tar");
    let base_listed = manifest["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["base"] == true)
        .count();
    assert!(base_listed >= 2, "{base_listed}");
    expect_ok(&run(
        home.path(),
        &["verify", s(&delta), "--trust", s(&public)],
    ));
    let _ = old;

    // Into an empty registry: refused before any manifest, naming the base.
    let empty = Registry::start_plain();
    let text = expect_code(
        &run(
            home.path(),
            &[
                "import",
                s(&delta),
                "--to-repo",
                &empty.reference("prod/app"),
                "--trust",
                s(&public),
                "-q",
            ],
        ),
        1,
    );
    assert!(text.contains("app-1.0.tar"), "{text}");
    assert!(registry_tags(&empty, "prod/app").is_empty());

    // 1.0 then the delta equals a full 1.1 import (for everything the full import holds).
    let dst = Registry::start_plain();
    let reference = Registry::start_plain();
    let receipt = out.path().join("import-1.0.json");
    for (archive, reg, extra) in [
        (&full10, &dst, Some(&receipt)),
        (&delta, &dst, None),
        (&full11, &reference, None),
    ] {
        let repo = reg.reference("prod/app");
        let mut args = vec![
            "import",
            s(archive),
            "--to-repo",
            &repo,
            "--trust",
            s(&public),
            "-q",
        ];
        if let Some(r) = extra {
            args.extend(["--receipt", s(r)]);
        }
        expect_ok(&run(home.path(), &args));
    }
    let got = registry_state(&dst);
    for (repo, by_tag) in registry_state(&reference) {
        for (tag, bytes) in by_tag {
            assert_eq!(
                got.get(&repo).and_then(|t| t.get(&tag)),
                Some(&bytes),
                "{repo}:{tag}"
            );
        }
    }
    for img in &new {
        for d in &img.layer_digests {
            assert!(blob_present(&dst, "prod/app", &d.to_string()));
        }
    }
    // A receipt of the 1.0 import works as the base too, with the same result.
    let delta2 = out.path().join("app-1.1-from-receipt.tar");
    expect_ok(&run(
        home.path(),
        &[
            "export",
            "-b",
            &b11.image.tag_ref,
            "-o",
            s(&delta2),
            "--sign-key",
            s(&key),
            "--since",
            s(&receipt),
            "-q",
        ],
    ));
    let e2: BTreeSet<String> = whole_entries(&std::fs::read(&delta2).unwrap())
        .into_iter()
        .map(|(n, _, _)| n)
        .filter(|n| n.starts_with("blobs/"))
        .collect();
    let e1: BTreeSet<String> = entries
        .iter()
        .map(|(n, _, _)| n.clone())
        .filter(|n| n.starts_with("blobs/"))
        .collect();
    assert_eq!(e1, e2);
    // So does the base archive's airlift/manifest.json alone.
    let base_bytes = std::fs::read(&full10).unwrap();
    let (_, off, size) = whole_entries(&base_bytes)
        .into_iter()
        .find(|(n, _, _)| n == "airlift/manifest.json")
        .unwrap();
    let base_manifest = out.path().join("manifest-1.0.json");
    std::fs::write(&base_manifest, &base_bytes[off..off + size]).unwrap();
    let delta3 = out.path().join("app-1.1-from-manifest.tar");
    expect_ok(&run(
        home.path(),
        &[
            "export",
            "-b",
            &b11.image.tag_ref,
            "-o",
            s(&delta3),
            "--sign-key",
            s(&key),
            "--since",
            s(&base_manifest),
            "-q",
        ],
    ));
    let e3: BTreeSet<String> = whole_entries(&std::fs::read(&delta3).unwrap())
        .into_iter()
        .map(|(n, _, _)| n)
        .filter(|n| n.starts_with("blobs/"))
        .collect();
    assert_eq!(e1, e3);
    assert_eq!(
        manifest_of(&delta3)["base"]["manifestDigest"],
        manifest["base"]["manifestDigest"]
    );
}

/// A TCP proxy in front of a registry that records request lines and can throttle responses.
struct Proxy {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    slow: Arc<AtomicBool>,
}

impl Proxy {
    fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let slow = Arc::new(AtomicBool::new(true));
        let (req, sl) = (Arc::clone(&requests), Arc::clone(&slow));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let req = Arc::clone(&req);
                std::thread::spawn(move || pipe_requests(client, server, &req));
                let sl = Arc::clone(&sl);
                std::thread::spawn(move || pipe_throttled(s2, c2, &sl));
            }
        });
        Proxy {
            port,
            requests,
            slow,
        }
    }

    fn blob_gets(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with("GET ") && l.contains("/blobs/"))
            .cloned()
            .collect()
    }
}

fn pipe_requests(mut from: TcpStream, mut to: TcpStream, log: &Mutex<Vec<String>>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Export only sends GET/HEAD requests: no bodies, so request lines start lines.
        for line in String::from_utf8_lossy(&buf[..n]).lines() {
            if line.starts_with("GET ") || line.starts_with("HEAD ") {
                log.lock().unwrap().push(line.to_owned());
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

fn pipe_throttled(mut from: TcpStream, mut to: TcpStream, slow: &AtomicBool) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        if slow.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(8));
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// Starts an export, SIGKILLs it once its files hold `kill_at` bytes, and returns.
fn export_and_kill(home: &Path, args: &[&str], files: impl Fn() -> u64, kill_at: u64) {
    let mut child = airlift_cmd(home)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("export finished ({status}) before it could be interrupted");
        }
        if files() >= kill_at {
            child.kill().unwrap();
            child.wait().unwrap();
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "export made no progress"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// File name → content of every file directly in `dir`, to compare two export outputs.
fn dir_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().metadata().unwrap().len()).sum())
        .unwrap_or(0)
}

/// Blob digests of whole, correctly hashed layer entries in a (cut) archive file.
fn kept_digests(path: &Path) -> BTreeSet<String> {
    let bytes = std::fs::read(path).unwrap_or_default();
    whole_entries(&bytes)
        .into_iter()
        .filter(|(n, _, _)| n.starts_with("blobs/sha256/") && !n.contains(".part-"))
        .filter(|(n, off, size)| {
            crate::support::sha256_digest(&bytes[*off..off + size]).hex()
                == &n["blobs/sha256/".len()..]
        })
        .map(|(n, _, _)| format!("sha256:{}", &n["blobs/sha256/".len()..]))
        .collect()
}

fn resume_case(volume_size: Option<&str>) {
    let reg = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let (key, _) = keygen(home.path(), "release");
    let proxy = Proxy::start(reg.port());
    proxy.slow.store(false, Ordering::Relaxed);
    let specs: Vec<(String, ImageSpec)> = (0..4)
        .map(|i| {
            (
                format!("res/img{i}:v1"),
                ImageSpec::new(
                    60 + i,
                    vec![
                        LayerSpec::new(70 + i, 1200 * 1024),
                        LayerSpec::new(80 + i, 900 * 1024),
                    ],
                ),
            )
        })
        .collect();
    let refs: Vec<(&str, ImageSpec)> = specs.iter().map(|(r, s)| (r.as_str(), s.clone())).collect();
    let images = push_images(&reg, &refs);
    let at = |repo: &str| format!("127.0.0.1:{}/{repo}", proxy.port);
    let lock: Vec<(String, String)> = (0..4)
        .map(|i| (format!("i{i}"), at(&format!("res/img{i}:v1"))))
        .collect();
    let lock_refs: Vec<(&str, &str)> = lock.iter().map(|(k, r)| (k.as_str(), r.as_str())).collect();
    let bundle = push_bundle(&reg, home.path(), "res/bundle", &lock_refs);
    let bundle_ref = at(&format!("res/bundle@{}", bundle.image.digest));

    let whole_dir = tempfile::tempdir().unwrap();
    let cut_dir = tempfile::tempdir().unwrap();
    let name = "rel.tar";
    let mut base_args = vec![
        "export",
        "-b",
        bundle_ref.as_str(),
        "--sign-key",
        s(&key),
        "-q",
    ];
    if let Some(size) = volume_size {
        base_args.extend(["--volume-size", size]);
    }
    let whole_out = whole_dir.path().join(name);
    let cut_out = cut_dir.path().join(name);
    let mut args = base_args.clone();
    args.extend(["-o", s(&whole_out)]);
    expect_ok(&run(home.path(), &args));

    // Interrupted at about half, at concurrency 2; only .partial files remain (finished volumes
    // of a set are renamed only when the whole set is complete).
    proxy.slow.store(true, Ordering::Relaxed);
    let mut args = base_args.clone();
    args.extend(["-o", s(&cut_out), "--concurrency", "2"]);
    let total = dir_bytes(whole_dir.path());
    let cd = cut_dir.path().to_path_buf();
    export_and_kill(home.path(), &args, || dir_bytes(&cd), total / 2);
    proxy.slow.store(false, Ordering::Relaxed);
    let left: Vec<String> = std::fs::read_dir(cut_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.iter().any(|n| n.ends_with(".partial")), "{left:?}");
    assert!(!left.iter().any(|n| n.ends_with("SUMS")), "{left:?}");
    assert!(
        !left.iter().any(|n| n.ends_with(".tar")),
        "an interrupted export leaves no complete-looking file: {left:?}"
    );
    let mut kept: BTreeSet<String> = BTreeSet::new();
    for f in std::fs::read_dir(cut_dir.path()).unwrap() {
        kept.extend(kept_digests(&f.unwrap().path()));
    }
    let layers: BTreeSet<String> = images
        .iter()
        .flat_map(|i| i.layer_digests.iter().map(|d| d.to_string()))
        .collect();
    let kept_layers: BTreeSet<&String> = kept.intersection(&layers).collect();
    assert!(
        !kept_layers.is_empty(),
        "some layers were written before the kill"
    );

    // Resume at another concurrency: identical bytes, kept layers not fetched again.
    let before = proxy.blob_gets().len();
    let mut args = base_args.clone();
    args.extend(["-o", s(&cut_out), "--resume", "--concurrency", "8"]);
    let text = String::from_utf8_lossy(&expect_ok_out(&run(home.path(), &args))).into_owned();
    let _ = text;
    let gets = proxy.blob_gets()[before..].to_vec();
    for d in &kept_layers {
        assert!(
            !gets.iter().any(|g| g.contains(d.as_str())),
            "{d} fetched again: {gets:?}"
        );
    }
    assert!(
        layers
            .iter()
            .any(|d| gets.iter().any(|g| g.contains(d.as_str())))
    );
    let (a, b) = (dir_files(whole_dir.path()), dir_files(cut_dir.path()));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    assert!(a == b, "resumed export differs from the uninterrupted one");
    stock_checksums_pass(cut_dir.path(), "rel");

    // A changed source is refused rather than mixed: cut again, retag an image, resume.
    proxy.slow.store(true, Ordering::Relaxed);
    for f in std::fs::read_dir(cut_dir.path()).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    let mut args = base_args.clone();
    args.extend(["-o", s(&cut_out), "--concurrency", "2"]);
    let cd = cut_dir.path().to_path_buf();
    export_and_kill(home.path(), &args, || dir_bytes(&cd), total / 3);
    proxy.slow.store(false, Ordering::Relaxed);
    let other = at("res/img0:v1");
    let mut args = vec![
        "export",
        "-i",
        other.as_str(),
        "--sign-key",
        s(&key),
        "-q",
        "-o",
        s(&cut_out),
        "--resume",
    ];
    if let Some(size) = volume_size {
        args.extend(["--volume-size", size]);
    }
    let text = expect_code(&run(home.path(), &args), 1);
    assert!(text.contains("cannot resume"), "{text}");
}

fn expect_ok_out(out: &std::process::Output) -> Vec<u8> {
    expect_ok(out);
    out.stderr.clone()
}

#[test]
fn killed_single_file_export_resumes_byte_identical_without_refetching() {
    resume_case(None);
}

#[test]
fn killed_volume_export_resumes_byte_identical_without_refetching() {
    resume_case(Some("2MiB"));
}

/// An interruption in the middle of a split blob's second part (made by cutting a finished
/// set): resume fetches that blob again, skips the part already in an earlier volume, and
/// the result is byte-identical; a finished volume that does not match is refused.
#[test]
fn resume_inside_a_split_blob_continues_at_the_right_part() {
    let reg = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let (key, _) = keygen(home.path(), "release");
    let (bundle, _) = big_bundle(&reg, home.path());
    let whole = tempfile::tempdir().unwrap();
    let args = |out: &Path, resume: bool| -> Vec<String> {
        let mut v: Vec<String> = [
            "export",
            "-b",
            &bundle,
            "-o",
            s(out),
            "--sign-key",
            s(&key),
            "--volume-size",
            "1MiB",
            "-q",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        if resume {
            v.push("--resume".into());
        }
        v
    };
    let a = args(&whole.path().join("app.tar"), false);
    expect_ok(&run(
        home.path(),
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let volumes = volume_files(whole.path(), "app");
    // The first volume holding a part 2 or later: cut it in that part's data.
    let (k, off, size) = volumes
        .iter()
        .enumerate()
        .find_map(|(k, v)| {
            whole_entries(&std::fs::read(v).unwrap())
                .into_iter()
                .find(|(n, _, _)| n.contains(".part-") && !n.contains(".part-0001-"))
                .map(|(_, off, size)| (k, off, size))
        })
        .expect("a split blob continues in a later volume");
    let cut = tempfile::tempdir().unwrap();
    for v in &volumes[..k] {
        std::fs::copy(v, cut.path().join(v.file_name().unwrap())).unwrap();
    }
    let bytes = std::fs::read(&volumes[k]).unwrap();
    let partial = cut.path().join(format!(
        "{}.partial",
        volumes[k].file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&partial, &bytes[..off + size / 2]).unwrap();
    let b = args(&cut.path().join("app.tar"), true);
    let b: Vec<&str> = b.iter().map(String::as_str).collect();
    let text = String::from_utf8_lossy(&expect_ok_out(&run(home.path(), &b))).into_owned();
    assert!(text.contains("resumed: kept"), "{text}");
    assert!(
        dir_files(whole.path()) == dir_files(cut.path()),
        "resumed set differs"
    );
    let first = cut.path().join("app.001.tar");
    let mut damaged = std::fs::read(&first).unwrap();
    let at = damaged.len() - 1030;
    damaged[at] ^= 1;
    std::fs::write(&first, &damaged).unwrap();
    let text = expect_code(&run(home.path(), &b), 1);
    assert!(text.contains("app.001.tar"), "{text}");
}
