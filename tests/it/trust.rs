//! Trust, round 2: hostile registries (oversized manifests, stalls), the files airlift writes
//! (planted symlinks, unrelated `.partial` files), private key permissions, freeze fields.
//!
//! Registries are real `docker-registry` instances; the two faults a real registry cannot
//! produce (a 300 MiB manifest, a response that stops mid-body) come from [`Hostile`], a tiny
//! HTTP/1.1 server of this file's own on 127.0.0.1.

use crate::support;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::synth::{SynthArchive, synth_image};
use crate::support::{airlift, airlift_cmd, expect_code, s};

/// Size of the manifest the hostile registry offers: far above the 4 MiB limit.
const HUGE: u64 = 300 << 20;

/// What the hostile registry does with every request other than `GET /v2/`.
#[derive(Clone, Copy, Debug)]
enum Behaviour {
    /// A 300 MiB manifest with an honest `Content-Length`.
    HugeWithLength,
    /// A 300 MiB manifest, chunked: no length to refuse on, the limit must apply while reading.
    HugeChunked,
    /// Half a response (head with `Content-Length: 1000` and 10 bytes; HEAD: half a head),
    /// then silence with the socket kept open.
    Stall,
}

/// A misbehaving registry on 127.0.0.1; dropping it releases every held connection.
struct Hostile {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Hostile {
    fn start(behaviour: Behaviour) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind hostile registry");
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let st = Arc::clone(&stop);
        thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let st = Arc::clone(&st);
                thread::spawn(move || {
                    let _ = serve_hostile(conn, behaviour, &st);
                });
            }
        });
        Hostile { port, stop }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// One connection, one request: answers `GET /v2/` properly and misbehaves on the rest.
fn serve_hostile(conn: TcpStream, behaviour: Behaviour, stop: &AtomicBool) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut r = BufReader::new(conn.try_clone()?);
    let mut first = String::new();
    r.read_line(&mut first)?;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let mut w = conn;
    if first.starts_with("GET /v2/ ") {
        w.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        )?;
        return Ok(());
    }
    let head = first.starts_with("HEAD ");
    let mt = "application/vnd.oci.image.manifest.v1+json";
    match behaviour {
        Behaviour::HugeWithLength | Behaviour::HugeChunked => {
            let chunked = matches!(behaviour, Behaviour::HugeChunked);
            let framing = if chunked {
                "Transfer-Encoding: chunked".to_owned()
            } else {
                format!("Content-Length: {HUGE}")
            };
            write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Type: {mt}\r\n{framing}\r\nConnection: close\r\n\r\n"
            )?;
            if head {
                return Ok(());
            }
            let block = vec![b' '; 64 << 10];
            let mut sent = 0u64;
            while sent < HUGE && !stop.load(Ordering::SeqCst) {
                if chunked {
                    write!(w, "{:x}\r\n", block.len())?;
                    w.write_all(&block)?;
                    w.write_all(b"\r\n")?;
                } else {
                    w.write_all(&block)?;
                }
                sent += block.len() as u64;
            }
            if chunked {
                w.write_all(b"0\r\n\r\n")?;
            }
        }
        Behaviour::Stall => {
            if head {
                w.write_all(b"HTTP/1.1 200 OK\r\n")?;
            } else {
                write!(
                    w,
                    "HTTP/1.1 200 OK\r\nContent-Type: {mt}\r\nContent-Length: 1000\r\n\r\n{{\"schemaVe"
                )?;
            }
            w.flush()?;
            let held = Instant::now();
            while !stop.load(Ordering::SeqCst) && held.elapsed() < Duration::from_secs(300) {
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
    Ok(())
}

/// Runs `cmd`, killing it (by its PID) if it has not exited within `limit`; `None` then.
fn run_within(cmd: &mut Command, limit: Duration) -> Option<(Output, Duration)> {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn airlift");
    while started.elapsed() < limit {
        if child.try_wait().expect("wait for airlift").is_some() {
            let out = child.wait_with_output().expect("collect output");
            return Some((out, started.elapsed()));
        }
        thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn oversized_manifest_is_refused_without_buffering_it() {
    for behaviour in [Behaviour::HugeWithLength, Behaviour::HugeChunked] {
        let hostile = Hostile::start(behaviour);
        let home = tempfile::tempdir().unwrap();
        let out = home.path().join("out.tar");
        let reference = format!("{}/huge/app:v1", hostile.host());
        let m = support::run_measuring_rss(airlift_cmd(home.path()).args([
            "export",
            "-q",
            "-i",
            &reference,
            "-o",
            s(&out),
            "--unsigned",
            "--registry-retry-count",
            "0",
        ]));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&m.stdout),
            String::from_utf8_lossy(&m.stderr)
        );
        // Above what a child spawned from this test process inherits (see support::rss).
        assert!(
            m.peak_within(120 * 1024),
            "{behaviour:?}: peak RSS {} KiB ({} inherited): the manifest was buffered before \
             the limit applied",
            m.peak_rss_kib,
            m.inherited_kib
        );
        assert_eq!(m.status.code(), Some(1), "{behaviour:?}: {text}");
        assert!(
            text.contains(&hostile.host()) && text.contains("limit"),
            "{behaviour:?}: the error names the registry and the limit: {text}"
        );
        assert!(!out.exists(), "{behaviour:?}: an archive was written");
    }
}

#[test]
fn stalled_registry_fails_export_and_import_in_bounded_time() {
    let hostile = Hostile::start(Behaviour::Stall);
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let bounded = ["--registry-timeout", "1", "--registry-retry-count", "1"];

    let out = h.join("out.tar");
    let reference = format!("{}/stall/app:v1", hostile.host());
    let mut export = airlift_cmd(h);
    export
        .args([
            "export",
            "-q",
            "-i",
            &reference,
            "-o",
            s(&out),
            "--unsigned",
        ])
        .args(bounded);
    let (o, took) = run_within(&mut export, Duration::from_secs(60))
        .expect("export against a stalled registry still running after 60 s");
    let t = expect_code(&o, 1);
    assert!(
        t.contains(&hostile.host()) && t.contains("--registry-timeout"),
        "export's error names the registry and what to do: {t}"
    );
    assert!(took < Duration::from_secs(30), "export took {took:?}");
    assert!(!out.exists());

    let archive = h.join("synth.tar");
    SynthArchive::of_images(&[("src.example/a/b:v1".to_owned(), synth_image(7, &[4096]))]).write(
        &archive,
        false,
        &[],
    );
    let to_repo = format!("{}/stall/dest", hostile.host());
    let mut import = airlift_cmd(h);
    import
        .args(["import", "-q", s(&archive), "--to-repo", &to_repo])
        .arg("--allow-unsigned")
        .args(bounded);
    let (o, took) = run_within(&mut import, Duration::from_secs(60))
        .expect("import into a stalled registry still running after 60 s");
    let t = expect_code(&o, 1);
    assert!(
        t.contains(&hostile.host()) && t.contains("--registry-timeout"),
        "import's error names the registry and what to do: {t}"
    );
    assert!(took < Duration::from_secs(30), "import took {took:?}");
    eprintln!("import against a stalled registry: {t}");
}

#[test]
fn registry_timeout_must_be_positive() {
    let home = tempfile::tempdir().unwrap();
    let out = airlift(
        home.path(),
        &[
            "export",
            "-i",
            "127.0.0.1:1/a:b",
            "-o",
            "x.tar",
            "--unsigned",
            "--registry-timeout",
            "0",
        ],
    );
    let t = expect_code(&out, 2);
    assert!(t.contains("--registry-timeout"), "{t}");
}

/// A symlink at `link` pointing to `victim`, which holds `VICTIM`.
fn plant(link: &Path, victim: &Path) {
    std::fs::write(victim, VICTIM).unwrap();
    std::os::unix::fs::symlink(victim, link).unwrap();
}

const VICTIM: &str = "victim: must stay untouched\n";

fn assert_untouched(victim: &Path) {
    assert_eq!(
        std::fs::read_to_string(victim).unwrap(),
        VICTIM,
        "{} was written through a planted symlink",
        victim.display()
    );
}

fn assert_regular(path: &Path) {
    let m = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        m.file_type().is_file(),
        "{} is not a regular file",
        path.display()
    );
}

#[test]
fn outputs_never_follow_planted_symlinks_nor_clobber_neighbours() {
    let reg = support::Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let out = h.join("out");
    let victims = h.join("victims");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&victims).unwrap();

    // What the old temp-name scheme (`with_extension("partial")`, `FILE.partial`) would use.
    let lock = out.join("release-1.0");
    plant(&out.join("release-1.0.partial"), &victims.join("a"));
    std::fs::write(out.join("release-1.partial"), "unrelated\n").unwrap();
    let receipt = out.join("receipt.json");
    plant(&out.join("receipt.json.partial"), &victims.join("b"));
    plant(&out.join("receipt.json.sig.partial"), &victims.join("c"));
    // And a symlink at the output name itself: replaced, not written through.
    plant(&out.join("receipt.json.sig"), &victims.join("d"));

    let key = h.join("signer");
    support::expect_ok(&airlift(h, &["keygen", "--out", s(&key)]));
    let archive = h.join("synth.tar");
    SynthArchive::of_images(&[("src.example/a/b:v1".to_owned(), synth_image(8, &[4096]))]).write(
        &archive,
        false,
        &[],
    );
    let to_repo = reg.reference("trust/dest");
    support::expect_ok(&airlift(
        h,
        &[
            "import",
            "-q",
            s(&archive),
            "--to-repo",
            &to_repo,
            "--allow-unsigned",
            "--lock-output",
            s(&lock),
            "--receipt",
            s(&receipt),
            "--receipt-key",
            s(&key.with_extension("key")),
        ],
    ));
    for v in ["a", "b", "c", "d"] {
        assert_untouched(&victims.join(v));
    }
    for f in [&lock, &receipt, &out.join("receipt.json.sig")] {
        assert_regular(f);
    }
    assert!(
        std::fs::read_to_string(&lock)
            .unwrap()
            .contains("kind: ImagesLock"),
        "--lock-output release-1.0 wrote release-1.0"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("release-1.partial")).unwrap(),
        "unrelated\n",
        "an unrelated release-1.partial was destroyed"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&receipt).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "receipt mode {mode:o}");

    // `lock --lock-output` onto a planted symlink.
    let config = h.join("config.yml");
    let image = std::fs::read_to_string(&lock)
        .unwrap()
        .lines()
        .find_map(|l| {
            let (_, v) = l.split_once("image: ")?;
            Some(v.trim().trim_matches('"').to_owned())
        })
        .expect("an image in the relocated lock");
    std::fs::write(&config, format!("image: {image}\n")).unwrap();
    let images_yml = out.join("images.yml");
    plant(&images_yml, &victims.join("e"));
    support::expect_ok(&airlift(
        h,
        &[
            "lock",
            "-q",
            "-f",
            s(&config),
            "--lock-output",
            s(&images_yml),
        ],
    ));
    assert_untouched(&victims.join("e"));
    assert_regular(&images_yml);

    // keygen onto a planted symlink: refused, victim untouched.
    plant(&out.join("k.key"), &victims.join("f"));
    let o = airlift(h, &["keygen", "--out", s(&out.join("k"))]);
    assert!(!o.status.success(), "keygen wrote through a symlink");
    assert_untouched(&victims.join("f"));
}

#[test]
fn private_keys_readable_by_others_are_refused_unless_allowed() {
    use std::os::unix::fs::PermissionsExt;
    let reg = support::Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let base = h.join("signer");
    support::expect_ok(&airlift(h, &["keygen", "--out", s(&base)]));
    let key = h.join("signer.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "keygen wrote the key with mode {mode:o}");

    for loose in [0o640, 0o604] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(loose)).unwrap();
        // export: refused before any registry is contacted.
        let out = h.join("x.tar");
        let export = [
            "export",
            "-q",
            "-i",
            "127.0.0.1:1/none/app:v1",
            "-o",
            s(&out),
            "--sign-key",
            s(&key),
            "--registry-retry-count",
            "0",
        ];
        let t = support::expect_failed(&airlift(h, &export));
        assert!(
            t.contains(&format!("chmod 600 {}", key.display())),
            "mode {loose:o}: {t}"
        );
        // With the override the key is accepted: what fails now is the (absent) registry.
        let mut allowed = export.to_vec();
        allowed.push("--allow-insecure-key-permissions");
        let t = support::expect_failed(&airlift(h, &allowed));
        assert!(!t.contains("chmod 600") && t.contains("127.0.0.1:1"), "{t}");
    }

    // import --receipt-key: refused, then accepted with the override.
    let archive = h.join("synth.tar");
    SynthArchive::of_images(&[("src.example/a/b:v1".to_owned(), synth_image(9, &[4096]))]).write(
        &archive,
        false,
        &[],
    );
    let receipt = h.join("receipt.json");
    let to_repo = reg.reference("trust/keys");
    let import = [
        "import",
        "-q",
        s(&archive),
        "--to-repo",
        &to_repo,
        "--allow-unsigned",
        "--receipt",
        s(&receipt),
        "--receipt-key",
        s(&key),
    ];
    let t = support::expect_failed(&airlift(h, &import));
    assert!(t.contains("chmod 600"), "{t}");
    assert!(!receipt.exists());
    let mut allowed = import.to_vec();
    allowed.push("--allow-insecure-key-permissions");
    support::expect_ok(&airlift(h, &allowed));
    assert!(receipt.exists() && h.join("receipt.json.sig").exists());
}

#[test]
fn require_signatures_zero_is_a_usage_error() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    support::expect_ok(&airlift(h, &["keygen", "--out", s(&h.join("k"))]));
    let archive = h.join("synth.tar");
    SynthArchive::of_images(&[("src.example/a/b:v1".to_owned(), synth_image(10, &[64]))]).write(
        &archive,
        false,
        &[],
    );
    let pubkey = h.join("k.pub");
    let t = expect_code(
        &airlift(
            h,
            &[
                "verify",
                s(&archive),
                "--trust",
                s(&pubkey),
                "--require-signatures",
                "0",
            ],
        ),
        2,
    );
    assert!(t.contains("--require-signatures"), "{t}");
}

#[test]
fn a_volume_record_in_a_plain_archive_is_named_as_such() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let archive = h.join("synth.tar");
    SynthArchive::of_images(&[("src.example/a/b:v1".to_owned(), synth_image(11, &[64]))]).write(
        &archive,
        false,
        &[],
    );
    let bytes = std::fs::read(&archive).unwrap();
    let index = support::tar_entries(&bytes)
        .into_iter()
        .find(|e| e.name == "index.json")
        .expect("index.json entry");
    let at = (index.data_offset + index.size).div_ceil(512) * 512;
    let record = br#"{"volume":1}"#;
    let mut forged = bytes[..at].to_vec();
    forged.extend_from_slice(&support::ustar_header(
        "airlift/volume.json",
        record.len() as u64,
    ));
    forged.extend_from_slice(record);
    forged.resize(forged.len().div_ceil(512) * 512, 0);
    forged.extend_from_slice(&bytes[at..]);
    let bad = h.join("bad.tar");
    std::fs::write(&bad, forged).unwrap();
    let t = expect_code(&airlift(h, &["verify", s(&bad), "--allow-unsigned"]), 1);
    assert!(
        t.contains("airlift/volume.json") && t.contains("declares no volume set"),
        "{t}"
    );
    assert!(!t.contains("appears twice"), "{t}");
}

#[test]
fn expired_archives_are_refused_unless_allowed() {
    let src = support::Registry::start_plain();
    let dst = support::Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let layout = h.join("layout");
    support::write_oci_image(
        &layout,
        "v1",
        &support::ImageSpec::new(40, vec![support::LayerSpec::new(41, 4096)]),
    );
    support::skopeo_push(&layout, "v1", "trust/app:v1", &src);
    let export = |out: &Path, expires: &str| {
        support::expect_ok(
            &airlift_cmd(h)
                .env("SOURCE_DATE_EPOCH", "1700000000")
                .args([
                    "export",
                    "-q",
                    "-i",
                    &src.reference("trust/app:v1"),
                    "-o",
                    s(out),
                ])
                .args(["--unsigned", "--sequence", "7", "--expires", expires])
                .output()
                .unwrap(),
        );
    };
    // Created 2023-11-14T22:13:20Z: one day later is long past.
    let old = h.join("old.tar");
    export(&old, "1d");
    let fresh = h.join("fresh.tar");
    export(&fresh, "2999-01-01T00:00:00Z");
    let manifest =
        support::run_tool(Command::new("tar").args(["-xOf", s(&old), "airlift/manifest.json"]));
    let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(m["sequence"], 7);
    assert_eq!(m["expires"], "2023-11-15T22:13:20Z");
    support::validate_json_schema("manifest.schema.json", &m);

    let t = expect_code(&airlift(h, &["verify", s(&old), "--allow-unsigned"]), 1);
    assert!(
        t.contains("expired at 2023-11-15T22:13:20Z") && t.contains("--allow-expired"),
        "{t}"
    );
    let t = expect_code(
        &airlift(
            h,
            &["verify", s(&old), "--allow-unsigned", "--allow-expired"],
        ),
        0,
    );
    assert!(t.contains("warning") && t.contains("expired"), "{t}");
    expect_code(&airlift(h, &["verify", s(&fresh), "--allow-unsigned"]), 0);

    let to_repo = dst.reference("trust/dest");
    let import = [
        "import",
        "-q",
        s(&old),
        "--to-repo",
        &to_repo,
        "--allow-unsigned",
    ];
    let t = expect_code(&airlift(h, &import), 1);
    assert!(
        t.contains("expired") && t.contains("--allow-expired"),
        "{t}"
    );
    assert!(
        support::catalog(&dst).is_empty(),
        "an expired archive pushed something"
    );
    let mut allowed = import.to_vec();
    allowed.push("--allow-expired");
    let t = expect_code(&airlift(h, &allowed), 0);
    assert!(t.contains("warning") && t.contains("expired"), "{t}");
}
