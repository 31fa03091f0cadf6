//! What the stock container tools do with an airlift archive, run for real: containerd's
//! `ctr images import` and `ctr content fetch` through a `hosts.toml` mirror pointing at
//! `airlift serve`, and `podman load`. These are the commands the README shows.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::support::served::Served;
use crate::support::synth::{SynthArchive, synth_image};
use crate::support::{ImageSpec, LayerSpec, Registry, airlift, expect_ok, keygen, push_images, s};

/// containerd on a private socket, root and state directory, stopped by PID.
struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Containerd {
    fn start() -> Containerd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let config = format!(
            "version = 2\nroot = \"{r}\"\nstate = \"{st}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n\
             [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n",
            r = d.join("root").display(),
            st = d.join("state").display(),
            sock = d.join("c.sock").display(),
        );
        fs::write(d.join("config.toml"), config).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(fs::File::create(d.join("log")).unwrap())
            .stderr(fs::File::create(d.join("err")).unwrap())
            .spawn()
            .expect("spawn containerd (apt-get install containerd)");
        let c = Containerd { child, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !c.ctr(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "containerd did not start:\n{}",
                fs::read_to_string(c.dir.path().join("err")).unwrap_or_default()
            );
            sleep(Duration::from_millis(100));
        }
        c
    }

    fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("-a")
            .arg(self.dir.path().join("c.sock"))
            .args(["-n", "airlift-test"])
            .args(args)
            .output()
            .expect("run ctr")
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An archive of two OCI images exported from a real registry; returns (archive, refs, digests).
fn two_image_archive(h: &Path, zstd: bool) -> (Registry, PathBuf, Vec<String>, Vec<String>) {
    let src = Registry::start_plain();
    let written = push_images(
        &src,
        &[
            (
                "stock/api:1.0",
                ImageSpec::new(1, vec![LayerSpec::new(1, 64 * 1024)]),
            ),
            (
                "stock/web:1.0",
                ImageSpec::new(2, vec![LayerSpec::new(2, 64 * 1024)]),
            ),
        ],
    );
    let (key, _) = keygen(h, if zstd { "release-z" } else { "release" });
    let archive = h.join(if zstd { "stock.tar.zst" } else { "stock.tar" });
    let refs: Vec<String> = ["stock/api:1.0", "stock/web:1.0"]
        .iter()
        .map(|r| src.reference(r))
        .collect();
    let mut args = vec!["export", "-o", s(&archive), "--sign-key", s(&key), "-q"];
    if zstd {
        args.push("--zstd");
    }
    for r in &refs {
        args.extend(["-i", r.as_str()]);
    }
    expect_ok(&airlift(h, &args));
    let digests = written
        .iter()
        .map(|w| w.manifest_digest.to_string())
        .collect();
    (src, archive, refs, digests)
}

#[test]
fn ctr_images_import_reads_the_plain_archive_by_its_containerd_names() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let (_src, archive, refs, digests) = two_image_archive(h, false);
    let c = Containerd::start();
    let out = c.ctr(&[
        "images",
        "import",
        "--all-platforms",
        "--no-unpack",
        s(&archive),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let listed = text(&c.ctr(&["images", "ls"]));
    for (r, d) in refs.iter().zip(&digests) {
        let line = listed
            .lines()
            .find(|l| l.split_whitespace().next() == Some(r.as_str()))
            .unwrap_or_else(|| panic!("{r} not listed by ctr:\n{listed}"));
        assert!(line.contains(d.as_str()), "{r} has digest {d}:\n{line}");
    }
    // The zstd archive is not a tar: ctr refuses it (the README says to import the plain one).
    let (_src2, zst, _, _) = two_image_archive(h, true);
    let out = c.ctr(&[
        "images",
        "import",
        "--all-platforms",
        "--no-unpack",
        s(&zst),
    ]);
    assert!(
        !out.status.success(),
        "ctr cannot read zstd: {}",
        text(&out)
    );
}

#[test]
fn ctr_fetches_through_a_hosts_toml_mirror_served_by_airlift() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let redis = synth_image(21, &[32 * 1024]);
    let archive = h.join("hub.tar");
    SynthArchive::of_images(&[("docker.io/library/redis:7".into(), redis.clone())]).write(
        &archive,
        false,
        &[],
    );
    let served = Served::start(h, &[s(&archive), "--allow-unsigned"]);
    // Both the mirror and the fallback server are the loopback serve: nothing leaves the host.
    let hosts = h.join("certs.d");
    fs::create_dir_all(hosts.join("docker.io")).unwrap();
    fs::write(
        hosts.join("docker.io/hosts.toml"),
        format!(
            "server = \"http://{0}\"\n\n[host.\"http://{0}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            served.host()
        ),
    )
    .unwrap();
    let c = Containerd::start();
    let out = c.ctr(&[
        "content",
        "fetch",
        "--hosts-dir",
        s(&hosts),
        "docker.io/library/redis:7",
    ]);
    assert!(
        out.status.success(),
        "{}\nserve log:\n{}",
        text(&out),
        served.log_text()
    );
    let listed = text(&c.ctr(&["content", "ls", "-q"]));
    for d in std::iter::once(redis.manifest.digest.clone())
        .chain(redis.blobs.iter().map(|b| b.0.clone()))
    {
        assert!(listed.contains(&d.to_string()), "{d} fetched:\n{listed}");
    }
    let log = served.log_text();
    assert!(
        log.contains("/v2/library/redis/manifests/7?ns=docker.io"),
        "containerd asked the mirror in its ?ns= form:\n{log}"
    );
}

#[test]
fn podman_loads_a_single_root_archive() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let src = Registry::start_plain();
    let written = push_images(
        &src,
        &[(
            "stock/one:1.0",
            ImageSpec::new(3, vec![LayerSpec::new(3, 64 * 1024)]),
        )],
    );
    let (key, _) = keygen(h, "release");
    let archive = h.join("one.tar");
    let reference = src.reference("stock/one:1.0");
    expect_ok(&airlift(
        h,
        &[
            "export",
            "-o",
            s(&archive),
            "--sign-key",
            s(&key),
            "-q",
            "-i",
            &reference,
        ],
    ));
    let store = tempfile::tempdir().unwrap();
    let podman = |args: &[&str]| {
        Command::new("podman")
            .arg("--root")
            .arg(store.path().join("root"))
            .arg("--runroot")
            .arg(store.path().join("run"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "none",
            ])
            .args(args)
            .env("HOME", h)
            .output()
            .expect("run podman (apt-get install podman)")
    };
    let out = podman(&["load", "-i", s(&archive)]);
    assert!(out.status.success(), "{}", text(&out));
    let out = podman(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.Digest}}"]);
    let listed = text(&out);
    assert!(
        listed.contains(&written[0].manifest_digest.to_string()),
        "podman lists the image by its digest:\n{listed}"
    );
}
