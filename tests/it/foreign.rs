//! Other tools' archives as sources, through the real binary: imgpkg `copy --to-tar` files,
//! OCI image layouts written by the real skopeo (directory, `oci-archive:` tar, and the same
//! layout re-packed by GNU tar in GNU and pax formats), and `docker save` tars written by
//! skopeo's `docker-archive:`. Each is inspected, verified, imported into a real registry and
//! converted into a signed airlift archive; hostile ones are refused naming the fault.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::fixtures::{GOLDEN_HOST, fixtures};
use crate::support::synth::{RawTarEntry, raw_tar};
use crate::support::{
    ImageSpec, LayerSpec, Registry, airlift, airlift_cmd, catalog, expect_ok, keygen, output_text,
    registry_tags, run_measuring_rss, run_tool, s, skopeo_inspect_raw, skopeo_push,
    write_oci_image, write_oci_index,
};

/// `skopeo copy` from the plain-HTTP test registry to a local transport (`oci:`,
/// `oci-archive:`, `docker-archive:`).
fn skopeo_out(reg: &Registry, src: &str, dest: &str, all: bool) {
    let mut cmd = Command::new("/usr/bin/skopeo");
    cmd.args([
        "--insecure-policy",
        "copy",
        "--quiet",
        "--src-tls-verify=false",
    ]);
    if all {
        cmd.arg("--all");
    }
    cmd.arg(format!("docker://{}/{src}", reg.host())).arg(dest);
    run_tool(&mut cmd);
}

fn verify_unsigned(home: &Path, archive: &Path) -> String {
    expect_ok(&airlift(home, &["verify", s(archive), "--allow-unsigned"]))
}

#[test]
fn an_imgpkg_copy_tar_is_read_as_a_bundle_imported_and_converted_with_its_lock() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let tar = fixtures().join("guestbook.imgpkg-copy.tar");
    let bundle = "sha256:10eb9be00bf33b4580684efec3c42b14d8a942615eba1be554e5980265b4bc78";

    let shown = expect_ok(&airlift(h, &["inspect", s(&tar)]));
    assert!(shown.contains("an imgpkg copy --to-tar archive"), "{shown}");
    assert!(
        shown.contains(&format!(
            "bundle  {bundle}  {GOLDEN_HOST}/guestbook-bundle:1.0"
        )),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("{GOLDEN_HOST}/library/redis@sha256:b857")),
        "{shown}"
    );

    let (key, public) = keygen(h, "release");
    // Trusting a key is asking for a signature, which an imgpkg tar cannot have.
    let refused = output_text(&airlift(h, &["verify", s(&tar), "--trust", s(&public)]));
    assert!(
        refused.contains("there is no signature to check"),
        "{refused}"
    );
    let ok = verify_unsigned(h, &tar);
    assert!(
        ok.contains("blobs:      8 checked, 2692 bytes hashed"),
        "{ok}"
    );
    assert!(ok.contains("no signature exists to check"), "{ok}");

    let reg = Registry::start_plain();
    let repo = reg.reference("airgap/guestbook");
    let lock = h.join("relocated.yml");
    let without = output_text(&airlift(
        h,
        &["import", s(&tar), "--to-repo", &repo, "--trust", s(&public)],
    ));
    assert!(without.contains("pass --allow-unsigned"), "{without}");
    expect_ok(&airlift(
        h,
        &[
            "import",
            s(&tar),
            "--to-repo",
            &repo,
            "--allow-unsigned",
            "--lock-output",
            s(&lock),
        ],
    ));
    let tags = registry_tags(&reg, "airgap/guestbook");
    assert!(tags.contains(&"1.0".to_owned()), "{tags:?}");
    assert!(
        tags.contains(&format!("sha256-{}.imgpkg", &bundle[7..])),
        "{tags:?}"
    );
    let lock_text = std::fs::read_to_string(&lock).unwrap();
    assert!(
        lock_text.contains(&format!("{repo}@{bundle}")),
        "{lock_text}"
    );

    // The stock consumer side works on what was imported: the lock is rewritten to the repo.
    let pulled = h.join("pulled");
    expect_ok(&airlift(
        h,
        &["pull", "-b", &format!("{repo}:1.0"), "-o", s(&pulled)],
    ));
    let images = std::fs::read_to_string(pulled.join(".imgpkg/images.yml")).unwrap();
    assert_eq!(
        images.matches(&format!("image: {repo}@sha256:")).count(),
        3,
        "{images}"
    );

    // Converted into a signed airlift archive, the bundle stays a bundle with its lock.
    let converted = h.join("guestbook.tar");
    expect_ok(&airlift(
        h,
        &[
            "export",
            "--from",
            s(&tar),
            "-o",
            s(&converted),
            "--sign-key",
            s(&key),
        ],
    ));
    expect_ok(&airlift(
        h,
        &["verify", s(&converted), "--trust", s(&public)],
    ));
    let shown = expect_ok(&airlift(
        h,
        &["inspect", s(&converted), "--trust", s(&public)],
    ));
    assert!(
        shown.contains(&format!("BUNDLE {bundle} (root)")),
        "{shown}"
    );
    assert!(
        shown.contains(&format!(
            "{GOLDEN_HOST}/google_samples/gb-frontend@sha256:1bfa"
        )),
        "{shown}"
    );
}

/// Pushes one image and a two-platform index to `reg`; returns them.
fn push_sources(reg: &Registry) -> (crate::support::WrittenImage, crate::support::WrittenIndex) {
    let layout = tempfile::tempdir().unwrap();
    let base = LayerSpec::new(9, 300_000);
    let img = write_oci_image(
        layout.path(),
        "app",
        &ImageSpec::new(1, vec![base, LayerSpec::new(2, 5000)]),
    );
    let idx = write_oci_index(
        layout.path(),
        "multi",
        &[
            (
                "amd64",
                ImageSpec::new(3, vec![base, LayerSpec::new(4, 7000)]),
            ),
            ("arm64", ImageSpec::new(5, vec![LayerSpec::new(6, 9000)])),
        ],
    );
    skopeo_push(layout.path(), "app", "team/app:1.0", reg);
    skopeo_push(layout.path(), "multi", "team/multi:2.0", reg);
    (img, idx)
}

#[test]
fn oci_layouts_from_skopeo_are_read_as_a_directory_and_as_gnu_pax_and_oci_archive_tars() {
    let (src, dest) = (Registry::start_plain(), Registry::start_plain());
    let (img, idx) = push_sources(&src);
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let dir = h.join("layout");
    skopeo_out(
        &src,
        "team/app:1.0",
        &format!("oci:{}:team/app:1.0", s(&dir)),
        true,
    );
    skopeo_out(
        &src,
        "team/multi:2.0",
        &format!("oci:{}:team/multi:2.0", s(&dir)),
        true,
    );
    let oci_archive = h.join("app.oci.tar");
    skopeo_out(
        &src,
        "team/app:1.0",
        &format!("oci-archive:{}:1.0", s(&oci_archive)),
        true,
    );
    // The same layout as GNU tar writes it: `./` names, directory entries, GNU or pax headers.
    let (gnu, pax) = (h.join("gnu.tar"), h.join("pax.tar"));
    for (format, file) in [("gnu", &gnu), ("pax", &pax)] {
        run_tool(Command::new("tar").args([
            &format!("--format={format}"),
            "-cf",
            s(file),
            "-C",
            s(&dir),
            ".",
        ]));
    }

    for (archive, format, blobs) in [
        (&dir, "an OCI image layout directory", 7),
        (&gnu, "an OCI image layout tar", 7),
        (&pax, "an OCI image layout tar", 7),
        (&oci_archive, "an OCI image layout tar", 3),
    ] {
        let shown = expect_ok(&airlift(h, &["inspect", s(archive)]));
        assert!(shown.contains(format), "{}: {shown}", archive.display());
        let ok = verify_unsigned(h, archive);
        assert!(ok.contains(&format!("blobs:      {blobs} checked")), "{ok}");
    }
    // A bare tag (`oci-archive:FILE:1.0`) is known under the file's name.
    let shown = expect_ok(&airlift(h, &["inspect", s(&oci_archive)]));
    assert!(shown.contains("index.docker.io/library/app:1.0"), "{shown}");

    // Imported, every manifest keeps its bytes (and so its digest) at the destination.
    let prefix = dest.reference("mirror");
    expect_ok(&airlift(
        h,
        &[
            "import",
            s(&dir),
            "--to-registry",
            &prefix,
            "--allow-unsigned",
        ],
    ));
    assert_eq!(
        skopeo_inspect_raw("mirror/team/app:1.0", &dest),
        img.manifest
    );
    assert_eq!(
        skopeo_inspect_raw("mirror/team/multi:2.0", &dest),
        idx.index
    );
    let arm = &idx.images[1];
    assert_eq!(
        skopeo_inspect_raw(&format!("mirror/team/multi@{}", arm.manifest_digest), &dest),
        arm.manifest
    );

    // Converted into a signed airlift archive and imported from it: the same bytes again.
    let (key, public) = keygen(h, "release");
    let converted = h.join("converted.tar");
    expect_ok(&airlift(
        h,
        &[
            "export",
            "--from",
            s(&pax),
            "-o",
            s(&converted),
            "--sign-key",
            s(&key),
        ],
    ));
    expect_ok(&airlift(
        h,
        &["verify", s(&converted), "--trust", s(&public)],
    ));
    expect_ok(&airlift(
        h,
        &[
            "import",
            s(&converted),
            "--to-registry",
            &dest.reference("again"),
            "--trust",
            s(&public),
        ],
    ));
    assert_eq!(skopeo_inspect_raw("again/team/multi:2.0", &dest), idx.index);
}

#[test]
fn a_docker_save_archive_is_read_with_every_layer_checked_against_its_diff_id() {
    let (src, dest) = (Registry::start_plain(), Registry::start_plain());
    let (img, _) = push_sources(&src);
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let saved = h.join("app.docker.tar");
    skopeo_out(
        &src,
        "team/app:1.0",
        &format!("docker-archive:{}:team/app:1.0", s(&saved)),
        false,
    );

    let shown = expect_ok(&airlift(h, &["inspect", s(&saved)]));
    assert!(shown.contains("a docker save archive"), "{shown}");
    assert!(shown.contains("index.docker.io/team/app:1.0"), "{shown}");
    let ok = verify_unsigned(h, &saved);
    assert!(ok.contains("blobs:      3 checked"), "{ok}");

    let repo = dest.reference("saved/app");
    expect_ok(&airlift(
        h,
        &["import", s(&saved), "--to-repo", &repo, "--allow-unsigned"],
    ));
    // The config keeps its bytes; the layers are the uncompressed tars whose digests the
    // config lists, so an independent client pulls and checks the whole image.
    let raw = skopeo_inspect_raw("saved/app:1.0", &dest);
    let manifest: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(manifest["config"]["digest"], img.config_digest.to_string());
    let layers: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect();
    let diff_ids: Vec<String> = img.diff_ids.iter().map(|d| d.to_string()).collect();
    assert_eq!(layers, diff_ids);
    let pulled = h.join("pulled");
    run_tool(Command::new("/usr/bin/skopeo").args([
        "--insecure-policy",
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{repo}:1.0"),
        &format!("oci:{}:x", s(&pulled)),
    ]));
}

#[test]
fn what_is_not_an_archive_is_named_for_what_it_is() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let random = h.join("random.bin");
    std::fs::write(&random, vec![7u8; 4096]).unwrap();
    let out = output_text(&airlift(h, &["inspect", s(&random)]));
    assert!(out.contains("not a tar file"), "{out}");
    let gz = h.join("layout.tar.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(
        &mut enc,
        &raw_tar(&[RawTarEntry::file("oci-layout", b"{}".to_vec())], true),
    )
    .unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    let out = output_text(&airlift(h, &["verify", s(&gz), "--allow-unsigned"]));
    assert!(
        out.contains("gzip-compressed") && out.contains("gunzip"),
        "{out}"
    );
    let empty = h.join("empty-dir");
    std::fs::create_dir(&empty).unwrap();
    let out = output_text(&airlift(h, &["inspect", s(&empty)]));
    assert!(out.contains("not an OCI image layout"), "{out}");
}

/// The files of a small valid OCI layout (one image), as tar entries in layout order.
fn layout_entries() -> (Vec<RawTarEntry>, crate::support::WrittenImage) {
    let dir = tempfile::tempdir().unwrap();
    let img = write_oci_image(
        dir.path(),
        "app:1.0",
        &ImageSpec::new(11, vec![LayerSpec::new(12, 20_000)]),
    );
    let mut entries = Vec::new();
    for name in ["oci-layout", "index.json"] {
        entries.push(RawTarEntry::file(
            name,
            std::fs::read(dir.path().join(name)).unwrap(),
        ));
    }
    let blobs = dir.path().join("blobs/sha256");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names {
        let name = format!("blobs/sha256/{}", p.file_name().unwrap().to_string_lossy());
        entries.push(RawTarEntry::file(&name, std::fs::read(&p).unwrap()));
    }
    (entries, img)
}

fn layer_entry(img: &crate::support::WrittenImage) -> String {
    format!("blobs/sha256/{}", img.layer_digests[0].hex())
}

#[test]
fn hostile_foreign_archives_are_refused_in_bounded_time_and_memory_pushing_nothing() {
    let reg = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let (good, img) = layout_entries();
    let layer = layer_entry(&img);
    let with = |f: &dyn Fn(&mut Vec<RawTarEntry>)| {
        let mut e: Vec<RawTarEntry> = good
            .iter()
            .map(|x| RawTarEntry::file(&x.name, x.data.clone()))
            .collect();
        f(&mut e);
        e
    };
    let replace = |name: &str, by: RawTarEntry| {
        let name = name.to_owned();
        with(&move |e: &mut Vec<RawTarEntry>| {
            let i = e.iter().position(|x| x.name == name).unwrap();
            e[i] = RawTarEntry {
                name: by.name.clone(),
                typeflag: by.typeflag,
                data: by.data.clone(),
                claimed_size: by.claimed_size,
                link: by.link.clone(),
            };
        })
    };
    let mut bomb = RawTarEntry::file("blobs/sha256/zz", Vec::new());
    bomb.claimed_size = Some(1 << 40);
    let huge_index = {
        let mut v = b"{\"schemaVersion\":2,\"manifests\":[]".to_vec();
        v.resize(17 << 20, b' ');
        v.push(b'}');
        v
    };
    let docker_escape = vec![
        RawTarEntry::file(
            "manifest.json",
            br#"[{"Config":"c.json","RepoTags":["x:1"],"Layers":["../../etc/passwd"]}]"#.to_vec(),
        ),
        RawTarEntry::file("c.json", br#"{"rootfs":{"type":"layers","diff_ids":["sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]}}"#.to_vec()),
    ];
    let cases: Vec<(&str, Vec<RawTarEntry>, &str)> = vec![
        (
            "dotdot",
            with(&|e| e.push(RawTarEntry::file("../evil", b"x".to_vec()))),
            "'..'",
        ),
        (
            "absolute",
            with(&|e| e.push(RawTarEntry::file("/etc/evil", b"x".to_vec()))),
            "absolute path",
        ),
        (
            "symlink",
            replace(&layer, RawTarEntry::special(&layer, b'2', "/etc/shadow")),
            "absolute target",
        ),
        (
            "hardlink",
            replace(
                &layer,
                RawTarEntry::special(&layer, b'1', "../../etc/passwd"),
            ),
            "points outside the archive",
        ),
        (
            "device",
            with(&|e| e.push(RawTarEntry::special("blobs/dev", b'3', ""))),
            "character device",
        ),
        (
            "fifo",
            with(&|e| e.push(RawTarEntry::special("blobs/fifo", b'6', ""))),
            "FIFO",
        ),
        (
            "duplicate",
            with(&|e| e.push(RawTarEntry::file("index.json", b"{}".to_vec()))),
            "appears twice",
        ),
        (
            "bomb",
            with(&|e| {
                e.push(RawTarEntry {
                    name: bomb.name.clone(),
                    typeflag: b'0',
                    data: Vec::new(),
                    claimed_size: bomb.claimed_size,
                    link: String::new(),
                })
            }),
            "past the end",
        ),
        (
            "huge-json",
            replace(
                "index.json",
                RawTarEntry::file("index.json", huge_index.clone()),
            ),
            "over the 16777216-byte limit",
        ),
        (
            "missing-blob",
            with(&|e| e.retain(|x| x.name != layer)),
            "is not in the archive",
        ),
        ("docker-escape", docker_escape, "'..'"),
    ];
    for (name, entries, expected) in cases {
        let file = h.join(format!("{name}.tar"));
        std::fs::write(&file, raw_tar(&entries, true)).unwrap();
        let cwd = tempfile::tempdir().unwrap();
        for args in [
            vec!["verify", s(&file), "--allow-unsigned"],
            vec![
                "import",
                s(&file),
                "--to-registry",
                &reg.reference(name),
                "--allow-unsigned",
            ],
        ] {
            let start = Instant::now();
            let m = run_measuring_rss(airlift_cmd(h).current_dir(cwd.path()).args(&args));
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&m.stdout),
                String::from_utf8_lossy(&m.stderr)
            );
            assert!(!m.status.success(), "{name} {args:?} succeeded: {text}");
            assert!(
                text.contains(expected),
                "{name} {args:?}: expected {expected:?} in: {text}"
            );
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{name}: took {:?}",
                start.elapsed()
            );
            assert!(
                m.peak_within(96 * 1024),
                "{name}: peak RSS {} KiB",
                m.peak_rss_kib
            );
        }
        assert_eq!(
            std::fs::read_dir(cwd.path()).unwrap().count(),
            0,
            "{name} wrote into cwd"
        );
    }
    assert!(catalog(&reg).is_empty(), "pushed: {:?}", catalog(&reg));

    // A layer whose bytes do not match its digest: verify names it, import pushes no tag.
    let mut tampered = with(&|_| {});
    let i = tampered.iter().position(|x| x.name == layer).unwrap();
    tampered[i].data[100] ^= 0xff;
    let file = h.join("tampered.tar");
    std::fs::write(&file, raw_tar(&tampered, true)).unwrap();
    let out = output_text(&airlift(h, &["verify", s(&file), "--allow-unsigned"]));
    assert!(
        out.contains(&format!("FAILED: blob {}", img.layer_digests[0])),
        "{out}"
    );
    let out = output_text(&airlift(
        h,
        &[
            "import",
            s(&file),
            "--to-repo",
            &reg.reference("tampered/app"),
            "--allow-unsigned",
        ],
    ));
    assert!(out.contains(&img.layer_digests[0].to_string()), "{out}");
    assert!(registry_tags(&reg, "tampered/app").is_empty());
}
