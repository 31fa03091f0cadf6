//! The by-hand recipe of `format-spec/verify-by-hand.md`, run exactly as documented (the
//! shell block between its marked fences) against an archive airlift exported from a real
//! registry: it must accept the archive and refuse tampered copies.

use crate::support;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{ImageSpec, LayerSpec, Registry, airlift_cmd, expect_ok};

fn airlift(home: &Path, args: &[&str]) -> Output {
    airlift_cmd(home)
        .env("SOURCE_DATE_EPOCH", "1767225600")
        .args(args)
        .output()
        .expect("run airlift")
}

/// The shell block fenced by "```sh id=verify-by-hand" … "```" in the markdown.
fn recipe() -> String {
    let md = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("format-spec/verify-by-hand.md"),
    )
    .unwrap();
    let start = md
        .find("```sh id=verify-by-hand\n")
        .expect("marked fence in verify-by-hand.md");
    let body = &md[start + "```sh id=verify-by-hand\n".len()..];
    let end = body.find("\n```").expect("closing fence");
    body[..end + 1].to_owned()
}

fn run_recipe(script: &Path, archive: &Path, public: &Path) -> Output {
    Command::new("bash")
        .arg(script)
        .env("ARCHIVE", archive)
        .env("SIGNER_PUB", public)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .output()
        .expect("run bash")
}

#[test]
fn recipe_accepts_a_signed_archive_and_refuses_tampered_copies() {
    let reg = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let dir = home.path();
    let layout = dir.join("layout");
    let img = support::write_oci_image(
        &layout,
        "v1",
        &ImageSpec::new(
            11,
            vec![LayerSpec::new(21, 3000), LayerSpec::new(22, 70_000)],
        ),
    );
    crate::support::skopeo_push(&layout, "v1", "team/app:v1", &reg);
    let key = dir.join("release");
    expect_ok(&airlift(dir, &["keygen", "--out", key.to_str().unwrap()]));
    let public = PathBuf::from(format!("{}.pub", key.display()));
    let private = PathBuf::from(format!("{}.key", key.display()));
    let archive = dir.join("app.tar");
    expect_ok(&airlift(
        dir,
        &[
            "export",
            "-i",
            &reg.reference("team/app:v1"),
            "-o",
            archive.to_str().unwrap(),
            "--sign-key",
            private.to_str().unwrap(),
            "-q",
        ],
    ));
    let script = dir.join("verify-by-hand.sh");
    std::fs::write(&script, recipe()).unwrap();

    let good = run_recipe(&script, &archive, &public);
    let stdout = String::from_utf8_lossy(&good.stdout);
    assert!(
        good.status.success(),
        "recipe refused a good archive:\n{stdout}\n{}",
        String::from_utf8_lossy(&good.stderr)
    );
    // 1 manifest + 1 config + 2 layers.
    assert!(stdout.contains("OK: 4 blobs match"), "{stdout}");

    let bytes = std::fs::read(&archive).unwrap();
    // (name, data offset, size) of every entry.
    let list: Vec<(String, usize, usize)> = support::tar_entries(&bytes)
        .into_iter()
        .map(|e| (e.name, e.data_offset, e.size))
        .collect();
    let must_fail = |name: &str, path: &Path, pubkey: &Path, expect: &str| {
        let out = run_recipe(&script, path, pubkey);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{name}: recipe accepted a bad archive:\n{}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(stderr.contains(expect), "{name}: {stderr}");
    };

    // A flipped byte in a layer.
    let layer = img.layer_digests[1].hex().to_owned();
    let (_, off, size) = list
        .iter()
        .find(|(n, _, _)| n.ends_with(&layer))
        .unwrap()
        .clone();
    let mut t = bytes.clone();
    t[off + size / 2] ^= 0x01;
    let flipped = dir.join("flipped.tar");
    std::fs::write(&flipped, &t).unwrap();
    must_fail("flipped layer byte", &flipped, &public, "blob content");

    // A tampered manifest (one character of the tool name changed).
    let (_, off, size) = list
        .iter()
        .find(|(n, _, _)| n == "airlift/manifest.json")
        .unwrap()
        .clone();
    let text = std::str::from_utf8(&bytes[off..off + size]).unwrap();
    let at = text.find("\"tool\":\"airlift").unwrap() + "\"tool\":\"".len();
    let mut t = bytes.clone();
    t[off + at] = b'A';
    let tampered = dir.join("manifest.tar");
    std::fs::write(&tampered, &t).unwrap();
    must_fail("tampered manifest", &tampered, &public, "signature");

    // An extra, self-consistent blob appended with GNU tar.
    let extra_dir = dir.join("extra");
    let content = b"not in the manifest";
    let hex = support::sha256_digest(content).hex().to_owned();
    std::fs::create_dir_all(extra_dir.join("blobs/sha256")).unwrap();
    std::fs::write(extra_dir.join("blobs/sha256").join(&hex), content).unwrap();
    let extra = dir.join("extra.tar");
    std::fs::copy(&archive, &extra).unwrap();
    let st = Command::new("tar")
        .arg("-rf")
        .arg(&extra)
        .arg("-C")
        .arg(&extra_dir)
        .arg(format!("blobs/sha256/{hex}"))
        .status()
        .unwrap();
    assert!(st.success());
    must_fail("extra file", &extra, &public, "differ from the manifest");

    // The right archive, the wrong key.
    let other = dir.join("other");
    expect_ok(&airlift(dir, &["keygen", "--out", other.to_str().unwrap()]));
    let other_pub = PathBuf::from(format!("{}.pub", other.display()));
    must_fail("other key", &archive, &other_pub, "no signature by key");
}
