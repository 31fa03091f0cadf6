//! Rollback protection: a validly signed but older archive must not move a tag back, whichever
//! host imported the newer one; `--allow-downgrade` rolls back on purpose and says so.

use std::path::Path;
use std::time::Duration;

use crate::support::proxy::{Fault, FaultProxy};
use crate::support::{
    ImageSpec, LayerSpec, Registry, airlift, airlift_cmd, expect_failed, expect_ok, s, skopeo_push,
    write_oci_image,
};

/// Pushes an image with `seed` as `src/app:1.0` and exports it with `created` = `epoch`.
fn release(home: &Path, src: &Registry, seed: u64, epoch: u64, key: &Path) -> std::path::PathBuf {
    release_with(home, src, seed, epoch, key, &[])
}

/// As [`release`], with more `export` flags.
fn release_with(
    home: &Path,
    src: &Registry,
    seed: u64,
    epoch: u64,
    key: &Path,
    extra: &[&str],
) -> std::path::PathBuf {
    let layout = home.join(format!("layout-{seed}"));
    write_oci_image(
        &layout,
        "app",
        &ImageSpec::new(seed, vec![LayerSpec::new(seed, 4096)]),
    );
    skopeo_push(&layout, "app", "src/app:1.0", src);
    let out = home.join(format!("app-{seed}.tar"));
    let r = src.reference("src/app:1.0");
    let result = airlift_cmd(home)
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .args([
            "export",
            "-i",
            &r,
            "-o",
            s(&out),
            "--sign-key",
            s(key),
            "-q",
        ])
        .args(extra)
        .output()
        .expect("run airlift");
    expect_ok(&result);
    out
}

fn import(
    home: &Path,
    archive: &Path,
    dest: &Registry,
    pubkey: &Path,
    extra: &[&str],
) -> std::process::Output {
    let to = dest.reference("mirror");
    let mut args = vec![
        "import",
        s(archive),
        "--to-registry",
        &to,
        "--trust",
        s(pubkey),
        "-q",
    ];
    args.extend_from_slice(extra);
    airlift(home, &args)
}

fn tag_digest(reg: &Registry, repo_tag: &str) -> String {
    crate::support::sha256_digest(&crate::support::skopeo_inspect_raw(repo_tag, reg)).to_string()
}

#[test]
fn an_older_release_cannot_move_a_tag_back() {
    let (src, dest) = (Registry::start_plain(), Registry::start_plain());
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let base = h.join("release");
    expect_ok(&airlift(h, &["keygen", "--out", s(&base)]));
    let (key, pubkey) = (h.join("release.key"), h.join("release.pub"));
    let old = release(h, &src, 1, 1_700_000_000, &key);
    let new = release(h, &src, 2, 1_800_000_000, &key);

    expect_ok(&import(h, &new, &dest, &pubkey, &[]));
    let newer = tag_digest(&dest, "mirror/src/app:1.0");

    // Another importing host (its own HOME) sees the record at the destination.
    let other = tempfile::tempdir().unwrap();
    let err = expect_failed(&import(other.path(), &old, &dest, &pubkey, &[]));
    assert!(err.contains("refusing a rollback"), "{err}");
    assert!(
        err.contains("app-2.tar") && err.contains("app-1.tar"),
        "names both archives: {err}"
    );
    assert!(
        err.contains("2023-11-14") && err.contains("2027-01-15"),
        "names both dates: {err}"
    );
    assert!(err.contains("--allow-downgrade"), "{err}");
    assert_eq!(
        tag_digest(&dest, "mirror/src/app:1.0"),
        newer,
        "the tag did not move"
    );

    // Re-importing the newer release is no rollback; rolling back on purpose works and says so.
    expect_ok(&import(h, &new, &dest, &pubkey, &[]));
    let out = import(h, &old, &dest, &pubkey, &["--allow-downgrade"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    expect_ok(&out);
    assert!(stderr.contains("warning: rolling back"), "{stderr}");
    assert_ne!(
        tag_digest(&dest, "mirror/src/app:1.0"),
        newer,
        "the tag moved back"
    );
    // And now the newer one may move it forward again.
    expect_ok(&import(h, &new, &dest, &pubkey, &[]));
    assert_eq!(tag_digest(&dest, "mirror/src/app:1.0"), newer);
}

#[test]
fn sequence_decides_over_created() {
    let (src, dest) = (Registry::start_plain(), Registry::start_plain());
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    expect_ok(&airlift(h, &["keygen", "--out", s(&h.join("release"))]));
    let (key, pubkey) = (h.join("release.key"), h.join("release.pub"));
    // Release 6 was built before a rebuild of release 5 (a later `created`, a lower sequence).
    let six = release_with(h, &src, 6, 1_700_000_000, &key, &["--sequence", "6"]);
    let five = release_with(h, &src, 5, 1_800_000_000, &key, &["--sequence", "5"]);
    expect_ok(&import(h, &six, &dest, &pubkey, &[]));
    let err = expect_failed(&import(h, &five, &dest, &pubkey, &[]));
    assert!(
        err.contains("sequence 6") && err.contains("sequence 5"),
        "{err}"
    );
}

/// One image `src/NAME:1.0` exported alone; returns the archive.
fn one_image(home: &Path, src: &Registry, name: &str, seed: u64) -> std::path::PathBuf {
    let layout = home.join(format!("layout-{name}"));
    write_oci_image(
        &layout,
        "app",
        &ImageSpec::new(seed, vec![LayerSpec::new(seed, 8192)]),
    );
    skopeo_push(&layout, "app", &format!("src/{name}:1.0"), src);
    let out = home.join(format!("{name}.tar"));
    let r = src.reference(&format!("src/{name}:1.0"));
    expect_ok(&airlift(
        home,
        &["export", "-i", &r, "-o", s(&out), "--unsigned", "-q"],
    ));
    out
}

#[test]
fn verify_existing_catches_a_poisoned_destination() {
    let (src, dest) = (Registry::start_plain(), Registry::start_plain());
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let archive = one_image(h, &src, "app", 7);
    let to = dest.reference("mirror");
    let import = |extra: &[&str]| {
        let mut args = vec![
            "import",
            s(&archive),
            "--to-registry",
            &to,
            "--allow-unsigned",
            "-q",
        ];
        args.extend_from_slice(extra);
        airlift(h, &args)
    };
    expect_ok(&import(&[]));
    // Someone with access to the registry's storage swaps a layer's bytes (same length).
    let blobs = dest.storage_dir().join("docker/registry/v2/blobs/sha256");
    let mut poisoned = None;
    for prefix in std::fs::read_dir(&blobs).unwrap() {
        for dir in std::fs::read_dir(prefix.unwrap().path()).unwrap() {
            let dir = dir.unwrap().path();
            let data = dir.join("data");
            let len = std::fs::metadata(&data).unwrap().len();
            if len > 4096 {
                std::fs::write(&data, vec![0x5a; len as usize]).unwrap();
                poisoned = Some(dir.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let hex = poisoned.expect("a layer in the destination's storage");
    // Trusted by default: the destination says it has the blob.
    expect_ok(&import(&[]));
    let err = expect_failed(&import(&["--verify-existing"]));
    assert!(err.contains(&hex), "names the blob: {err}");
    assert!(err.contains("does not match"), "{err}");
}

#[test]
fn roots_sharing_a_tag_are_refused_before_any_push() {
    let (src, dest) = (Registry::start_plain(), Registry::start_plain());
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    for (name, seed) in [("a", 1), ("b", 2)] {
        let layout = h.join(format!("layout-{name}"));
        write_oci_image(
            &layout,
            "app",
            &ImageSpec::new(seed, vec![LayerSpec::new(seed, 1024)]),
        );
        skopeo_push(&layout, "app", &format!("src/{name}:1.0"), &src);
    }
    let archive = h.join("two.tar");
    let (a, b) = (src.reference("src/a:1.0"), src.reference("src/b:1.0"));
    expect_ok(&airlift(
        h,
        &[
            "export",
            "-i",
            &a,
            "-i",
            &b,
            "-o",
            s(&archive),
            "--unsigned",
            "-q",
        ],
    ));
    let to = dest.reference("flat/app");
    let err = expect_failed(&airlift(
        h,
        &[
            "import",
            s(&archive),
            "--to-repo",
            &to,
            "--allow-unsigned",
            "-q",
        ],
    ));
    assert!(
        err.contains(&a) && err.contains(&b),
        "names both roots: {err}"
    );
    assert!(err.contains(":1.0"), "{err}");
    assert!(
        crate::support::catalog(&dest).is_empty(),
        "nothing was pushed"
    );
}

#[test]
fn a_rerun_puts_no_tag_again() {
    let (src, dest) = (Registry::start_plain(), Registry::start_plain());
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let archive = one_image(h, &src, "app", 9);
    // Delay(0) rules change nothing; the proxy logs each request they match.
    let proxy = FaultProxy::start(dest.port());
    proxy.inject(Fault::Delay(Duration::ZERO), 10_000, "PUT ");
    let to = proxy.reference("mirror");
    let import = || {
        airlift(
            h,
            &[
                "import",
                s(&archive),
                "--to-registry",
                &to,
                "--allow-unsigned",
                "-q",
            ],
        )
    };
    let tag_puts = || {
        proxy
            .log()
            .iter()
            .filter(|l| l.contains("/manifests/1.0"))
            .count()
    };
    expect_ok(&import());
    let first = tag_puts();
    assert_eq!(
        first,
        1,
        "the first run set the tag once: {:#?}",
        proxy.log()
    );
    expect_ok(&import());
    assert_eq!(
        tag_puts(),
        first,
        "the re-run PUT a tag that was already right: {:#?}",
        proxy.log()
    );
}

#[test]
fn verify_not_older_than_compares_sequence_else_created() {
    let src = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    expect_ok(&airlift(h, &["keygen", "--out", s(&h.join("release"))]));
    let (key, pubkey) = (h.join("release.key"), h.join("release.pub"));
    let old = release(h, &src, 1, 1_700_000_000, &key);
    let new = release(h, &src, 2, 1_800_000_000, &key);
    let verify = |archive: &Path, than: &str| {
        airlift(
            h,
            &[
                "verify",
                s(archive),
                "--trust",
                s(&pubkey),
                "--not-older-than",
                than,
            ],
        )
    };
    expect_ok(&verify(&new, s(&old)));
    let out = verify(&old, s(&new));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    expect_failed(&out);
    assert!(
        text.contains("is older than") && text.contains("2027-01-15"),
        "{text}"
    );
    expect_ok(&verify(&old, "2020-01-01"));
    expect_failed(&verify(&old, "2025-01-01T00:00:00Z"));
    // A later rebuild of release 5 is still older than release 6.
    let six = release_with(h, &src, 6, 1_700_000_000, &key, &["--sequence", "6"]);
    let five = release_with(h, &src, 5, 1_800_000_000, &key, &["--sequence", "5"]);
    let text = String::from_utf8_lossy(&verify(&five, s(&six)).stdout).into_owned();
    assert!(
        text.contains("sequence 5") && text.contains("sequence 6"),
        "{text}"
    );
    expect_failed(&verify(&five, s(&six)));
    // Not a file and not a date: said so.
    let err = String::from_utf8_lossy(&verify(&new, "last tuesday").stderr).into_owned();
    assert!(err.contains("not a date"), "{err}");
}

#[test]
fn export_never_writes_through_planted_symlinks() {
    let src = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let layout = h.join("layout");
    write_oci_image(
        &layout,
        "app",
        &ImageSpec::new(3, vec![LayerSpec::new(3, 4096)]),
    );
    skopeo_push(&layout, "app", "src/app:1.0", &src);
    let r = src.reference("src/app:1.0");
    let out = h.join("out.tar");
    let export = || airlift(h, &["export", "-i", &r, "-o", s(&out), "--unsigned", "-q"]);
    let victim = h.join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    // The temp name of the archive, planted: refused, not followed.
    let partial = h.join("out.tar.partial");
    std::os::unix::fs::symlink(&victim, &partial).unwrap();
    let err = expect_failed(&export());
    assert!(
        err.contains("out.tar.partial") && err.contains("symlink"),
        "{err}"
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(!out.exists());
    std::fs::remove_file(&partial).unwrap();
    // The checksum files and the temp name they used to be written through, planted:
    // replaced by regular files, the victim untouched.
    let sums = h.join("out.SHA256SUMS");
    std::os::unix::fs::symlink(&victim, &sums).unwrap();
    std::os::unix::fs::symlink(&victim, h.join("out.B3SUMS.partial")).unwrap();
    expect_ok(&export());
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(
        std::fs::symlink_metadata(&sums)
            .unwrap()
            .file_type()
            .is_file()
    );
    assert!(std::fs::read_to_string(&sums).unwrap().contains("out.tar"));
}

#[test]
fn a_refused_tag_move_names_where_the_tag_points() {
    let (src, dest) = (Registry::start_plain(), Registry::start_plain());
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let first = h.join("first.tar");
    std::fs::rename(one_image(h, &src, "app", 21), &first).unwrap();
    let old = tag_digest(&src, "src/app:1.0");
    let second = one_image(h, &src, "app", 22);
    let proxy = FaultProxy::start(dest.port());
    let to = proxy.reference("mirror");
    let import = |archive: &Path| {
        airlift(
            h,
            &[
                "import",
                s(archive),
                "--to-registry",
                &to,
                "--allow-unsigned",
                "-q",
            ],
        )
    };
    expect_ok(&import(&first));
    // A registry with immutable tags: the new manifest goes in, the tag may not move.
    proxy.inject(
        Fault::Status(403),
        10,
        "PUT /v2/mirror/src/app/manifests/1.0",
    );
    let err = expect_failed(&import(&second));
    assert!(
        err.contains(&format!("points at {old}")) && err.contains("refused to move it"),
        "the refusal does not say where the tag points: {err}"
    );
}
