//! Golden comparisons of the authoring core against real imgpkg 0.43.1 / kbld 0.42.0 output.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::fixtures::{fixtures, golden, guestbook_copy};
use airlift::author::AuthorError;
use airlift::author::bundle;
use airlift::author::extract;
use airlift::author::kbld::{self, ResolvedImage};
use airlift::author::lock::{BundleLock, ImageLocations, ImagesLock};
use airlift::author::rewrite::{self, RewriteOptions};
use airlift::author::scan;
use airlift::digest::Digest;
use airlift::reference::Reference;
use airlift::yaml::{self, Limits, YamlError};

fn golden_lock() -> ImagesLock {
    ImagesLock::read(
        &fixtures().join("kbld-imgpkg-lock-output.images.yml"),
        &Limits::default(),
    )
    .unwrap()
}

#[test]
fn scan_finds_exact_reference_texts_in_lexical_file_order() {
    let found = scan::scan_paths(
        &[fixtures().join("guestbook-src/config")],
        &[],
        &Limits::default(),
    )
    .unwrap();
    let texts: Vec<&str> = found.iter().map(|f| f.text.as_str()).collect();
    let lock = golden_lock();
    let mut ids: Vec<&str> = lock
        .images
        .iter()
        .map(|i| i.annotations["kbld.carvel.dev/id"].as_str())
        .collect();
    assert_eq!(texts.len(), 3);
    let mut sorted = texts.clone();
    sorted.sort();
    ids.sort();
    assert_eq!(sorted, ids);
    assert!(found[0].file.ends_with("frontend-deployment.yaml"));
}

#[test]
fn images_lock_matches_kbld_output() {
    let lock = golden_lock();
    let found = scan::scan_paths(
        &[fixtures().join("guestbook-src/config")],
        &[],
        &Limits::default(),
    )
    .unwrap();
    // Digests come from the golden lock (no registry here), looked up by repository.
    let mut resolved = BTreeMap::new();
    for f in &found {
        let orig = Reference::parse(&f.text).unwrap();
        let pinned = lock
            .images
            .iter()
            .map(|i| Reference::parse(&i.image).unwrap())
            .find(|r| r.repo_name() == orig.repo_name())
            .unwrap();
        let digest = pinned.digest().unwrap().clone();
        resolved.insert(
            f.text.clone(),
            ResolvedImage::from_original(&f.text, orig.with_digest(&digest)).unwrap(),
        );
    }
    let built = kbld::images_lock(&resolved).unwrap();
    assert_eq!(
        built.to_yaml(),
        golden("kbld-imgpkg-lock-output.images.yml")
    );
    assert_eq!(built, lock);
}

#[test]
fn digest_original_gets_only_an_id() {
    let d = Digest::sha256_of(b"x");
    let text = format!("nginx@{d}");
    let mut resolved = BTreeMap::new();
    let r = Reference::parse(&text).unwrap();
    resolved.insert(
        text.clone(),
        ResolvedImage::from_original(&text, r).unwrap(),
    );
    let lock = kbld::images_lock(&resolved).unwrap();
    assert_eq!(
        lock.to_yaml(),
        format!(
            "---\napiVersion: imgpkg.carvel.dev/v1alpha1\nimages:\n- annotations:\n    \
             kbld.carvel.dev/id: {text}\n  image: index.docker.io/library/nginx@{d}\nkind: ImagesLock\n"
        )
    );
}

#[test]
fn lock_files_round_trip_byte_for_byte() {
    let l = Limits::default();
    for name in [
        "kbld-imgpkg-lock-output.images.yml",
        "imgpkg-pull-relocated.images.yml",
    ] {
        let text = golden(name);
        let lock = ImagesLock::parse(&text, Path::new(name), &l).unwrap();
        assert_eq!(lock.to_yaml(), text, "{name}");
    }
    for name in ["imgpkg-push.bundle-lock.yml", "imgpkg-copy.bundle-lock.yml"] {
        let text = golden(name);
        let lock = BundleLock::parse(&text, Path::new(name), &l).unwrap();
        assert_eq!(lock.bundle.tag, "1.0");
        assert_eq!(lock.to_yaml(), text, "{name}");
    }
}

#[test]
fn rewrite_with_unrelocated_lock_matches_kbld() {
    let out = rewrite::rewrite_paths(
        &[
            fixtures().join("guestbook-src/config"),
            fixtures().join("kbld-imgpkg-lock-output.images.yml"),
        ],
        &[],
        &RewriteOptions::default(),
    )
    .unwrap();
    assert_eq!(out, golden("kbld-rewrite-with-lock.yaml"));
}

#[test]
fn rewrite_with_relocated_lock_matches_kbld() {
    let lock = ImagesLock::read(
        &fixtures().join("imgpkg-pull-relocated.images.yml"),
        &Limits::default(),
    )
    .unwrap();
    let out = rewrite::rewrite_paths(
        &[fixtures().join("guestbook-src/config")],
        &[lock],
        &RewriteOptions::default(),
    )
    .unwrap();
    assert_eq!(out, golden("kbld-rewrite-relocated.yaml"));
}

#[test]
fn rewrite_lists_every_unlocked_reference() {
    let err = rewrite::rewrite_paths(
        &[fixtures().join("guestbook-src/config")],
        &[],
        &RewriteOptions::default(),
    )
    .unwrap_err();
    match err {
        AuthorError::Unlocked(missing) => assert_eq!(missing.len(), 3),
        other => panic!("unexpected {other}"),
    }
    let opts = RewriteOptions {
        allow_unlocked: true,
        ..Default::default()
    };
    let out =
        rewrite::rewrite_paths(&[fixtures().join("guestbook-src/config")], &[], &opts).unwrap();
    assert!(out.contains("image: 127.0.0.1:5070/library/redis:6.0.5\n"));
    assert!(!out.contains("kbld.k14s.io/images"));
}

#[test]
fn bundle_layer_tar_config_and_diffid_match_imgpkg() {
    let src = guestbook_copy(None);
    let inputs = vec![src.path().to_path_buf()];
    let lock_path = bundle::validate_bundle_inputs(&inputs).unwrap();
    assert!(lock_path.ends_with(".imgpkg/images.yml"));
    let tar = bundle::write_layer_tar(&inputs, Vec::new()).unwrap();
    let want = std::fs::read(fixtures().join("bundle.layer.tar")).unwrap();
    assert_eq!(tar.len(), want.len());
    assert!(tar == want, "layer tar differs from imgpkg's");

    let (info, gz) = bundle::write_layer_gzip(&inputs, Vec::new()).unwrap();
    assert_eq!(
        info.diff_id.to_string(),
        golden("bundle.layer.diffid").trim()
    );
    assert_eq!(info.digest, Digest::sha256_of(&gz));
    assert_eq!(info.size, gz.len() as u64);
    let config = bundle::config_bytes(&info.diff_id, true);
    assert_eq!(
        config,
        std::fs::read(fixtures().join("bundle.config.json")).unwrap()
    );

    // The manifest has imgpkg's shape; only the gzip digest/size may differ.
    let manifest = String::from_utf8(bundle::manifest_bytes(&config, &info)).unwrap();
    let mut want_manifest = golden("bundle.manifest.json");
    want_manifest = want_manifest
        .replace(
            "sha256:09ce40cee9f04c7c4a5c4a21754b9bab3bbe80244adb20f2d104d12ce147d6e7",
            &info.digest.to_string(),
        )
        .replace("\"size\":1048", &format!("\"size\":{}", info.size));
    assert_eq!(manifest, want_manifest);

    // The gzip layer extracts back to the same files.
    let out = tempfile::tempdir().unwrap();
    let written = extract::extract_gzip_layer(&gz[..], out.path(), &Default::default()).unwrap();
    assert_eq!(written.len(), 7);
    assert_eq!(
        std::fs::read(out.path().join(".imgpkg/images.yml")).unwrap(),
        std::fs::read(src.path().join(".imgpkg/images.yml")).unwrap()
    );
}

#[test]
fn bundle_input_validation_is_imgpkgs() {
    let src = guestbook_copy(None);
    // push -i with a .imgpkg dir is refused.
    let err = bundle::validate_image_inputs(&[src.path().to_path_buf()]).unwrap_err();
    assert!(err.to_string().contains(".imgpkg"), "{err}");
    // .imgpkg not directly under an input dir.
    let outer = tempfile::tempdir().unwrap();
    let nested = outer.path().join("nested");
    std::fs::create_dir_all(nested.join(".imgpkg")).unwrap();
    std::fs::write(nested.join(".imgpkg/images.yml"), "x").unwrap();
    let err = bundle::validate_bundle_inputs(&[outer.path().to_path_buf()]).unwrap_err();
    assert!(err.to_string().contains("directly under"), "{err}");
    // No images.yml.
    std::fs::remove_file(nested.join(".imgpkg/images.yml")).unwrap();
    let err = bundle::validate_bundle_inputs(std::slice::from_ref(&nested)).unwrap_err();
    assert!(err.to_string().contains("images.yml"), "{err}");
    // Two .imgpkg dirs.
    std::fs::create_dir_all(outer.path().join(".imgpkg")).unwrap();
    let err = bundle::validate_bundle_inputs(&[outer.path().to_path_buf()]).unwrap_err();
    assert!(err.to_string().contains("exactly one"), "{err}");
    // Symlinks are refused, naming the path.
    std::os::unix::fs::symlink("/etc/passwd", src.path().join("config/link.yaml")).unwrap();
    let err = bundle::write_layer_tar(&[src.path().to_path_buf()], Vec::new()).unwrap_err();
    assert!(err.to_string().contains("link.yaml"), "{err}");
    // .git is excluded.
    std::fs::remove_file(src.path().join("config/link.yaml")).unwrap();
    std::fs::create_dir(src.path().join(".git")).unwrap();
    std::fs::write(src.path().join(".git/HEAD"), "ref").unwrap();
    let tar = bundle::write_layer_tar(&[src.path().to_path_buf()], Vec::new()).unwrap();
    assert_eq!(
        tar,
        std::fs::read(fixtures().join("bundle.layer.tar")).unwrap()
    );
}

#[test]
fn locations_image_matches_imgpkg() {
    let lock = golden_lock();
    let locs = ImageLocations::new(lock.images.iter().map(|i| (i.image.clone(), false)));
    let tar = bundle::locations_layer_tar(&locs).unwrap();
    assert!(tar == std::fs::read(fixtures().join("locations.layer.tar")).unwrap());
    let img = bundle::locations_image(&locs).unwrap();
    assert_eq!(img.config.len(), 273);
    let want: serde_json::Value = serde_json::from_str(&golden("locations.manifest.json")).unwrap();
    assert_eq!(
        want["config"]["digest"].as_str().unwrap(),
        Digest::sha256_of(&img.config).to_string()
    );
    // Parsing the golden locations file back.
    let text = String::from_utf8(tar[1024..1024 + 488].to_vec()).unwrap();
    let parsed = ImageLocations::parse(&text, Path::new("loc"), &Limits::default()).unwrap();
    assert_eq!(parsed, locs);
}

#[test]
fn relocated_pull_rewrites_lock_like_imgpkg() {
    let lock = golden_lock();
    let repo = "127.0.0.1:5070/airgap/guestbook-bundle";
    let present: Vec<Digest> = lock
        .images
        .iter()
        .map(|i| {
            Reference::parse(&i.image)
                .unwrap()
                .digest()
                .unwrap()
                .clone()
        })
        .collect();
    let relocated = extract::relocate_lock(&lock, repo, |d| present.contains(d))
        .unwrap()
        .unwrap();
    assert_eq!(
        relocated.to_yaml(),
        golden("imgpkg-pull-relocated.images.yml")
    );
    let log = golden("imgpkg-pull-relocated.log");
    assert!(log.contains(&format!("{}\n", extract::hosting_message(repo))));
    // One missing image: no rewrite, imgpkg's message.
    let none = extract::relocate_lock(&lock, repo, |d| *d != present[1]).unwrap();
    assert!(none.is_none());
    assert!(golden("imgpkg-pull-original.log").contains(extract::SKIP_MESSAGE));
}

fn hostile_tar(name: &str, kind: tar::EntryType, link: Option<&str>) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    // Write the raw name so `..`/absolute paths survive (the builder would refuse them).
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_entry_type(kind);
    h.set_mode(0o644);
    let body = b"evil";
    h.set_size(if kind == tar::EntryType::Regular {
        body.len() as u64
    } else {
        0
    });
    if let Some(l) = link {
        h.set_link_name(l).unwrap();
    }
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    if kind == tar::EntryType::Regular {
        b.append(&h, &body[..]).unwrap();
    } else {
        b.append(&h, std::io::empty()).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn hostile_layers_are_refused_and_nothing_escapes() {
    let outer = tempfile::tempdir().unwrap();
    let dir = outer.path().join("dest");
    let cases = [
        ("../evil", tar::EntryType::Regular, None),
        ("a/../../evil", tar::EntryType::Regular, None),
        ("/abs-evil", tar::EntryType::Regular, None),
        ("link", tar::EntryType::Symlink, Some("/etc")),
        ("hard", tar::EntryType::Link, Some("/etc/passwd")),
        ("fifo", tar::EntryType::Fifo, None),
        ("dev", tar::EntryType::Char, None),
    ];
    for (name, kind, link) in cases {
        let tar = hostile_tar(name, kind, link);
        let err = extract::extract_tar(&tar[..], &dir, &Default::default()).unwrap_err();
        assert!(
            matches!(&err, AuthorError::UnsafeEntry { entry, .. } if entry == name),
            "{name}: {err}"
        );
    }
    assert!(!outer.path().join("evil").exists());
    assert!(!Path::new("/abs-evil").exists());
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "nothing may be written: {left:?}");

    // An existing symlink in DIR is not followed.
    let target = outer.path().join("outside");
    std::fs::create_dir(&target).unwrap();
    std::os::unix::fs::symlink(&target, dir.join("sub")).unwrap();
    let tar = hostile_tar("sub/file", tar::EntryType::Regular, None);
    let err = extract::extract_tar(&tar[..], &dir, &Default::default()).unwrap_err();
    assert!(err.to_string().contains("symlink"), "{err}");
    assert!(!target.join("file").exists());
}

#[test]
fn alias_bomb_is_refused_fast() {
    let mut text = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let names = ["b", "c", "d", "e", "f", "g", "h", "i"];
    let mut prev = "a";
    for n in names {
        text.push_str(&format!(
            "{n}: &{n} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
        prev = n;
    }
    // 9^9 (387 million) nodes if expanded: minutes and gigabytes unbounded. Refused in about
    // 70 ms on a loaded 2-core machine; the bound is 10x generous (the cores are shared with
    // other builds) and still far below an expansion.
    let start = Instant::now();
    let err = yaml::parse_documents(&text, Path::new("bomb.yaml"), &Limits::default()).unwrap_err();
    eprintln!("nested alias bomb refused in {:?}", start.elapsed());
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert!(err.to_string().contains("bomb.yaml"), "{err}");

    // A wide, single-level bomb (under serde_norway's own repetition limit) hits our node budget.
    let mut wide = String::from("a: &a [");
    wide.push_str(&vec!["x"; 5000].join(","));
    wide.push_str("]\nb: [");
    wide.push_str(&vec!["*a"; 2000].join(","));
    wide.push_str("]\n");
    let start = Instant::now();
    let err = yaml::parse_documents(&wide, Path::new("wide.yaml"), &Limits::default()).unwrap_err();
    eprintln!("wide alias bomb refused in {:?}", start.elapsed());
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(err.to_string().contains("alias bomb"), "{err}");
}

#[test]
fn oversize_yaml_is_refused_before_parsing() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("big.yaml");
    std::fs::write(&p, "a: b\n".repeat(1000)).unwrap();
    let limits = Limits {
        max_bytes: 1024,
        ..Default::default()
    };
    let err = yaml::load_file(&p, &limits).unwrap_err();
    assert!(matches!(err, YamlError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("big.yaml"), "{err}");
}

#[test]
fn parse_errors_name_file_and_document() {
    let err = yaml::parse_documents("a: 1\n---\nb: [\n", Path::new("f.yaml"), &Limits::default())
        .unwrap_err();
    match err {
        YamlError::Parse { doc, ref path, .. } => {
            assert_eq!(doc, 1);
            assert_eq!(path, Path::new("f.yaml"));
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn lock_parsing_is_strict() {
    let l = Limits::default();
    let good = golden("kbld-imgpkg-lock-output.images.yml");
    let unknown = good.replace("kind: ImagesLock", "kind: ImagesLock\nextra: 1");
    assert!(ImagesLock::parse(&unknown, Path::new("u"), &l).is_err());
    let unknown_in_entry = good.replacen("  image:", "  bogus: x\n  image:", 1);
    assert!(ImagesLock::parse(&unknown_in_entry, Path::new("u"), &l).is_err());
    let tag_ref = good.replacen(
        "google_samples/gb-frontend@sha256:1bfaef37bd202d43dec11f1e3271f9c948b10f6d0f8a553d73d28773f1ec6be8",
        "google_samples/gb-frontend:v5",
        1,
    );
    let err = ImagesLock::parse(&tag_ref, Path::new("t.yml"), &l).unwrap_err();
    assert!(err.to_string().contains("digest reference"), "{err}");
    let wrong_kind = good.replace("kind: ImagesLock", "kind: BundleLock");
    assert!(ImagesLock::parse(&wrong_kind, Path::new("k"), &l).is_err());
    // The same strictness applies to locks given inline to rewrite.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("lock.yml"), &unknown_in_entry).unwrap();
    let err =
        rewrite::rewrite_paths(&[tmp.path().to_path_buf()], &[], &Default::default()).unwrap_err();
    assert!(err.to_string().contains("bogus"), "{err}");
}
