//! Hostile inputs through the real binary: each must fail with an error naming the fault,
//! exit non-zero, stay within bounded memory and time, write nothing outside its target and
//! push nothing (no blob, no manifest, no tag) to the destination registry.
//!
//! Cases already proven elsewhere are not repeated here (see `format-spec/threat-model.md`):
//! tampered bytes, removed/unlisted blobs, `../x`/`/etc/x`/symlink/duplicate at library level
//! (`archive.rs`), tampering at the CLI (`import.rs`), hostile bundle layers
//! (`author.rs`, `author_cli.rs`), YAML alias bombs and strict locks
//! (`author.rs`), key file errors (`archive.rs`).

use crate::support;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::s;
use crate::support::synth::{RawTarEntry, SynthArchive, raw_tar, synth_image};
use crate::support::{Registry, airlift_cmd, run_measuring_rss};
use airlift::archive::Manifest;
use airlift::digest::Digest;
use airlift::keys;
use airlift::oci::{Descriptor, Parsed, RawManifest};

/// Peak RSS any refusal may use: far below every size the hostile inputs claim.
const RSS_LIMIT_KIB: u64 = 96 * 1024;
/// Wall time any refusal may take.
const TIME_LIMIT: Duration = Duration::from_secs(10);

struct Outcome {
    success: bool,
    text: String,
    rss_kib: u64,
    /// [`RSS_LIMIT_KIB`] above what the child inherited from this process at exec
    /// ([`crate::support::Measured::inherited_kib`]).
    rss_limit_kib: u64,
    elapsed: Duration,
}

/// Runs airlift in `cwd` (an empty directory) and measures it.
fn run(home: &Path, cwd: &Path, args: &[&str]) -> Outcome {
    let start = Instant::now();
    let m = run_measuring_rss(airlift_cmd(home).current_dir(cwd).args(args));
    Outcome {
        success: m.status.success(),
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&m.stdout),
            String::from_utf8_lossy(&m.stderr)
        ),
        rss_kib: m.peak_rss_kib,
        rss_limit_kib: RSS_LIMIT_KIB + m.inherited_kib,
        elapsed: start.elapsed(),
    }
}

struct Bench {
    home: tempfile::TempDir,
    cwd: tempfile::TempDir,
    key: keys::SigningKey,
    pubkey: PathBuf,
    archive: SynthArchive,
    target: Registry,
}

impl Bench {
    fn new() -> Bench {
        let home = tempfile::tempdir().unwrap();
        let (key, _, pubkey) = keys::write_keypair(&home.path().join("trusted")).unwrap();
        let images = vec![
            (
                "src.example/hostile/a:1".to_owned(),
                synth_image(11, &[3000, 1500]),
            ),
            (
                "src.example/hostile/b:1".to_owned(),
                synth_image(12, &[2000]),
            ),
        ];
        Bench {
            home,
            cwd: tempfile::tempdir().unwrap(),
            key,
            pubkey,
            archive: SynthArchive::of_images(&images),
            target: Registry::start_plain(),
        }
    }

    fn h(&self) -> &Path {
        self.home.path()
    }

    /// The signed archive's entries, in order.
    fn entries(&self) -> Vec<RawTarEntry> {
        self.archive.entries(std::slice::from_ref(&self.key))
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.h().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn import(&self, archive: &Path) -> Outcome {
        self.import_to(archive, "inside/app")
    }

    /// Imports keeping paths under `prefix`: the bench's two roots share the tag `1`, which one
    /// `--to-repo` repository refuses (one tag cannot name two images).
    fn import_to(&self, archive: &Path, prefix: &str) -> Outcome {
        let to = self.target.reference(prefix);
        run(
            self.h(),
            self.cwd.path(),
            &[
                "import",
                "-q",
                s(archive),
                "--to-registry",
                &to,
                "--trust",
                s(&self.pubkey),
            ],
        )
    }

    fn verify(&self, archive: &Path) -> Outcome {
        run(
            self.h(),
            self.cwd.path(),
            &["verify", s(archive), "--trust", s(&self.pubkey)],
        )
    }

    /// Import and verify both refuse `bytes`, naming `needle`, and nothing is pushed or
    /// written (`pushes_allowed`: blob uploads before the fault are tolerated, manifests and
    /// tags never are).
    fn refused(&self, what: &str, bytes: &[u8], needle: &str, pushes_allowed: bool) {
        self.refused_naming(what, bytes, [needle, needle], pushes_allowed);
    }

    /// [`Bench::refused`] where import and verify name the fault differently
    /// (`[import, verify]`).
    fn refused_naming(&self, what: &str, bytes: &[u8], needles: [&str; 2], pushes_allowed: bool) {
        let slug = what
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect::<String>()
            .trim_matches('-')
            .to_owned();
        let path = self.write(&format!("{slug}.tar"), bytes);
        let repo = format!("case/{slug}");
        for ((cmd, out), needle) in [
            ("import", self.import_to(&path, &repo)),
            ("verify", self.verify(&path)),
        ]
        .into_iter()
        .zip(needles)
        {
            assert!(
                !needle.is_empty(),
                "{what}: an empty needle matches any error"
            );
            assert!(!out.success, "{what}: {cmd} succeeded:\n{}", out.text);
            assert!(
                out.text.to_lowercase().contains(&needle.to_lowercase()),
                "{what}: {cmd} output does not name the fault ({needle:?}):\n{}",
                out.text
            );
            assert!(
                out.rss_kib < out.rss_limit_kib,
                "{what}: {cmd} peaked at {} KiB",
                out.rss_kib
            );
            assert!(
                out.elapsed < TIME_LIMIT,
                "{what}: {cmd} took {:?}",
                out.elapsed
            );
        }
        if !pushes_allowed {
            assert!(
                !support::catalog(&self.target).contains(&repo),
                "{what}: blobs were pushed"
            );
        }
        for repo in support::catalog(&self.target) {
            let tags = support::http_get(&self.target, &format!("/v2/{repo}/tags/list"));
            assert!(
                tags.status == 404 || !String::from_utf8_lossy(&tags.body).contains("\"tags\":[\""),
                "{what}: tags pushed to {repo}"
            );
        }
        let written: Vec<_> = std::fs::read_dir(self.cwd.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(written.is_empty(), "{what}: wrote {written:?}");
    }

    fn index_pos(entries: &[RawTarEntry]) -> usize {
        entries.iter().position(|e| e.name == "index.json").unwrap()
    }
}

/// A digest that no entry of the bench archive has.
fn stranger() -> Digest {
    Digest::sha256_of(b"not in the archive")
}

#[test]
fn good_archive_is_accepted_by_the_same_bench() {
    // Every refusal below is the hostile change's doing: the unchanged archive, written by
    // the same raw tar code, imports.
    let b = Bench::new();
    let path = b.write("good.tar", &raw_tar(&b.entries(), true));
    let out = b.import(&path);
    assert!(out.success, "{}", out.text);
    assert!(out.rss_kib < out.rss_limit_kib, "{} KiB", out.rss_kib);
    assert_eq!(
        support::catalog(&b.target),
        vec![
            "inside/app/hostile/a".to_owned(),
            "inside/app/hostile/b".to_owned()
        ]
    );
}

#[test]
fn unsafe_entry_names_and_types_are_refused_before_anything_is_pushed() {
    let b = Bench::new();
    let base = b.entries();
    let at = Bench::index_pos(&base) + 1;
    let insert = |e: RawTarEntry| {
        let mut v = base.clone();
        v.insert(at, e);
        raw_tar(&v, true)
    };
    // Names (`../x`, `/etc/x` and `blobs/sha256/../../x` at the CLI; the library test only
    // covers them through `verify`), and blob names that are not digests.
    let hex = stranger().hex().to_owned();
    for (name, needle) in [
        ("../x", "'..' component"),
        ("/etc/x", "absolute path"),
        ("blobs/sha256/../../x", "'..' component"),
        ("blobs/sha256/xyz", "not a valid digest"),
        (
            &format!("blobs/sha256/{}", &hex[..63]),
            "not a valid digest",
        ),
        (
            &format!("blobs/sha256/{}", hex.to_uppercase()),
            "not a valid digest",
        ),
        (&format!("blobs/md5/{}", &hex[..32]), "not a valid digest"),
        ("blobs/sha256", "blobs/<algorithm>/<hex>"),
    ] {
        b.refused(
            &format!("name {name}"),
            &insert(RawTarEntry::file(name, b"x".to_vec())),
            needle,
            false,
        );
    }
    // Entry types: every non-regular ustar type, named like a blob.
    let blob = format!("blobs/sha256/{hex}");
    for (flag, needle) in [
        (b'1', "hard link"),
        (b'2', "symbolic link"),
        (b'3', "character device"),
        (b'4', "block device"),
        (b'5', "directory"),
        (b'6', "FIFO"),
        (b'x', "pax extended header"),
        (b'L', "GNU long name"),
    ] {
        let what = format!("type {}", flag as char);
        let bytes = insert(RawTarEntry::special(&blob, flag, "/etc/passwd"));
        b.refused(&what, &bytes, needle, false);
        // The same in a zstd archive (sequential reading path).
        b.refused(
            &format!("{what} zstd"),
            &zstd::encode_all(&bytes[..], 3).unwrap(),
            needle,
            false,
        );
    }
}

#[test]
fn the_same_name_twice_with_different_content_is_refused() {
    let b = Bench::new();
    let base = b.entries();
    let first_layer = base
        .iter()
        .rev()
        .find(|e| e.name.starts_with("blobs/"))
        .unwrap()
        .clone();
    let mut other = first_layer.data.clone();
    other[0] ^= 0xff;
    for (what, extra) in [
        (
            "second index.json",
            RawTarEntry::file(
                "index.json",
                br#"{"schemaVersion":2,"manifests":[]}"#.to_vec(),
            ),
        ),
        (
            "second manifest",
            RawTarEntry::file("airlift/manifest.json", b"{}".to_vec()),
        ),
        (
            "second oci-layout",
            RawTarEntry::file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
        ),
        (
            "second copy of a layer",
            RawTarEntry::file(&first_layer.name, other.clone()),
        ),
    ] {
        let mut v = base.clone();
        v.push(extra);
        let bytes = raw_tar(&v, true);
        b.refused(what, &bytes, "appears twice", false);
        // zstd: read in one pass, so layers before the duplicate may already be uploaded.
        b.refused(
            &format!("{what} zstd"),
            &zstd::encode_all(&bytes[..], 3).unwrap(),
            "appears twice",
            true,
        );
    }
}

#[test]
fn lying_sizes_and_truncation_are_refused_fast() {
    let b = Bench::new();
    let base = b.entries();
    let good = raw_tar(&base, true);
    let entries = support::tar_entries(&good);
    let last = entries.last().unwrap().clone();

    // The last blob's header claims 1 TiB; the file ends after its real data.
    let mut v = base.clone();
    v.last_mut().unwrap().claimed_size = Some(1 << 40);
    let bytes = raw_tar(&v, false);
    b.refused("size claim 1 TiB on a listed blob", &bytes, "size", false);

    // An extra entry claims 1 TiB (base-256 size field) with no data at all.
    let mut v = base.clone();
    let mut bomb = RawTarEntry::file(&format!("blobs/sha256/{}", stranger().hex()), Vec::new());
    bomb.claimed_size = Some(1 << 40);
    v.push(bomb);
    // Import reads entries in order and meets the end of the file inside the claim; verify
    // refuses the claim itself, which reaches far past the content the manifest declares.
    b.refused_naming(
        "size claim 1 TiB unlisted",
        &raw_tar(&v, false),
        [
            "archive truncated at byte offset",
            "more than 64 MiB past the content the airlift manifest declares",
        ],
        false,
    );

    // Cut inside a header, and inside a blob's data.
    b.refused(
        "cut inside a header",
        &good[..last.header_offset + 100],
        "truncated",
        false,
    );
    b.refused(
        "cut inside a blob",
        &good[..last.data_offset + last.size / 2],
        "truncated",
        false,
    );
    let z = zstd::encode_all(&good[..last.data_offset + last.size / 2], 3).unwrap();
    b.refused("cut inside a blob zstd", &z, "truncated", true);
    // Cut inside the compressed stream itself.
    let z = zstd::encode_all(&good[..], 3).unwrap();
    b.refused(
        "cut zstd frame",
        &z[..z.len() / 2],
        "incomplete frame",
        true,
    );
}

/// A zstd archive whose tar stream decompresses to 64 GiB of zeros after its header, in
/// an entry that claims them: refused at the entry's header, before any of it is inflated.
#[test]
fn zstd_decompression_bomb_is_refused_at_its_header() {
    let b = Bench::new();
    let mut v = b.entries();
    let at = Bench::index_pos(&v) + 1;
    v.truncate(at);
    const BOMB: u64 = 64 << 30;
    let mut bomb = RawTarEntry::file(&format!("blobs/sha256/{}", stranger().hex()), Vec::new());
    bomb.claimed_size = Some(BOMB);
    v.push(bomb);
    let head = raw_tar(&v, false);
    // 128 MiB of zeros compress to a few KiB; repeated frames concatenate. Compressed in
    // 1 MiB steps: a large buffer here would count in the children's RSS (fork copies it).
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..128 {
        enc.write_all(&zeros).unwrap();
    }
    let chunk = enc.finish().unwrap();
    let mut file = std::fs::File::create(b.h().join("bomb.tar.zst")).unwrap();
    file.write_all(&zstd::encode_all(&head[..], 3).unwrap())
        .unwrap();
    for _ in 0..BOMB / (128 << 20) {
        file.write_all(&chunk).unwrap();
    }
    drop(file);
    let bytes = std::fs::read(b.h().join("bomb.tar.zst")).unwrap();
    assert!(bytes.len() < 8 << 20, "bomb file is {} bytes", bytes.len());
    // Import stops at the unlisted entry; verify, which reports every fault and so would
    // skip over it, refuses to read past the content the manifest declares.
    b.refused("zstd bomb", &bytes, stranger().hex(), false);
    let out = b.verify(&b.write("bomb2.tar.zst", &bytes));
    assert!(out.text.contains("decompression bomb"), "{}", out.text);
}

#[test]
fn oversized_and_deeply_nested_json_is_refused_without_reading_it() {
    let b = Bench::new();
    let layout = RawTarEntry::file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec());
    // A manifest of hundreds of MB, and one listing 10 million blobs (~160 bytes each): only
    // the header's size claim is written, the reader must refuse by size before reading.
    for (what, size) in [
        ("manifest of 300 MiB", 300u64 << 20),
        ("manifest of 10 million blobs", 10_000_000 * 160),
    ] {
        let mut m = RawTarEntry::file("airlift/manifest.json", Vec::new());
        m.claimed_size = Some(size);
        b.refused(what, &raw_tar(&[layout.clone(), m], false), "limit", false);
    }
    // An index.json of 200 MiB after a valid signed manifest.
    let mut v = b.entries();
    let at = Bench::index_pos(&v);
    v.truncate(at);
    let mut idx = RawTarEntry::file("index.json", Vec::new());
    idx.claimed_size = Some(200 << 20);
    v.push(idx);
    b.refused("index.json of 200 MiB", &raw_tar(&v, false), "limit", false);

    // 100 000 nested arrays as the airlift manifest: serde_json's recursion limit, no stack
    // overflow.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let m = RawTarEntry::file("airlift/manifest.json", deep.clone().into_bytes());
    b.refused(
        "deeply nested manifest",
        &raw_tar(&[layout.clone(), m], true),
        "recursion limit",
        false,
    );

    // The same nesting inside a correctly signed archive, as a manifest blob.
    let mut archive = b.archive.clone();
    let deep_blob = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":{}0{}}}"#,
        "[".repeat(50_000),
        "]".repeat(50_000)
    )
    .into_bytes();
    let d = Digest::sha256_of(&deep_blob);
    archive.blobs.insert(d.clone(), deep_blob.clone());
    add_root_blob(
        &mut archive.manifest,
        &d,
        deep_blob.len() as u64,
        "deep/index:1",
    );
    let bytes = raw_tar(&archive.entries(std::slice::from_ref(&b.key)), true);
    b.refused(
        "deeply nested manifest blob",
        &bytes,
        "recursion limit",
        false,
    );
}

/// Adds an `index`-role root blob to a manifest, keeping the table sorted.
fn add_root_blob(m: &mut Manifest, d: &Digest, size: u64, reference: &str) {
    m.blobs.push(airlift::archive::BlobEntry {
        digest: d.clone(),
        size,
        media_type: "application/vnd.oci.image.index.v1+json".into(),
        role: airlift::archive::Role::Index,
        referenced_by: Vec::new(),
        volume: None,
        parts: Vec::new(),
        base: false,
    });
    m.blobs.sort_by_key(|b| b.digest.to_string());
    m.roots.push(airlift::archive::Root {
        kind: airlift::archive::RootKind::Image,
        reference: format!("src.example/{reference}"),
        tag: Some("1".into()),
        digest: d.clone(),
        media_type: "application/vnd.oci.image.index.v1+json".into(),
    });
}

/// An index that names itself would need a sha256 fixed point; claiming one is a digest
/// mismatch, caught while the blob is read, before any graph is built.
#[test]
fn self_referential_index_claim_is_a_digest_mismatch() {
    let b = Bench::new();
    let mut archive = b.archive.clone();
    let claimed = Digest::sha256_of(b"an index that names itself");
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"{claimed}","size":0}}]}}"#
    );
    // Its size is its own length (the "size" field above is never consistent, like the digest).
    archive
        .blobs
        .insert(claimed.clone(), body.clone().into_bytes());
    add_root_blob(
        &mut archive.manifest,
        &claimed,
        body.len() as u64,
        "self/index:1",
    );
    let bytes = raw_tar(&archive.entries(std::slice::from_ref(&b.key)), true);
    b.refused("self-referential index", &bytes, claimed.hex(), false);
}

/// Even if a cycle were handed to the graph builder (content addressing makes one impossible
/// to store), it terminates: a manifest already placed is never expanded again.
#[test]
fn graph_builder_terminates_on_a_forged_cycle() {
    let b = Bench::new();
    let a = Digest::sha256_of(b"a");
    let c = Digest::sha256_of(b"c");
    let desc = |d: &Digest| Descriptor {
        media_type: "application/vnd.oci.image.index.v1+json".into(),
        digest: d.clone(),
        size: 2,
        platform: None,
        annotations: None,
    };
    let forged = move |me: &Digest, child: &Digest| RawManifest {
        bytes: bytes::Bytes::from_static(b"{}"),
        media_type: "application/vnd.oci.image.index.v1+json".into(),
        digest: me.clone(),
        parsed: Parsed::Index {
            manifests: vec![desc(child)],
        },
    };
    let mut m = b.archive.manifest.clone();
    add_root_blob(&mut m, &a, 2, "cycle/a:1");
    add_root_blob(&mut m, &c, 2, "cycle/c:1");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let g =
            airlift::transfer::import::graph_from_archive(&m, vec![forged(&a, &c), forged(&c, &a)]);
        let _ = tx.send(g.map(|g| g.manifests.len()));
    });
    let got = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("graph builder loops on a cycle");
    // Whatever it decides about the forged pair, it decided in bounded time; the pair is
    // expanded at most once each.
    if let Ok(n) = got {
        assert!(n <= 2, "{n} manifests from a two-node cycle");
    }
}

#[test]
fn bad_signatures_and_keys_are_refused_at_the_cli() {
    let b = Bench::new();
    // A signature entry of 63 bytes.
    let mut v = b.entries();
    let sig = v
        .iter_mut()
        .find(|e| e.name.starts_with("airlift/signatures/"))
        .unwrap();
    sig.data.pop();
    b.refused("short signature", &raw_tar(&v, true), "64", false);

    // Key files: malformed PEM, a non-ed25519 public key, a private key given as public.
    let good = b.write("good.tar", &raw_tar(&b.entries(), true));
    let junk = b.write(
        "junk.pem",
        b"-----BEGIN PUBLIC KEY-----\nnot base64!\n-----END PUBLIC KEY-----\n",
    );
    let ec = b.h().join("ec.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .output()
        .unwrap();
    assert!(made.status.success());
    let ec_key = b.write("ec.key", &made.stdout);
    let pubout = std::process::Command::new("openssl")
        .args(["pkey", "-in", s(&ec_key), "-pubout", "-out", s(&ec)])
        .status()
        .unwrap();
    assert!(pubout.success());
    let (_, private, _) = keys::write_keypair(&b.h().join("other")).unwrap();
    for (what, key, needle) in [
        ("malformed PEM", &junk, "junk.pem"),
        ("EC public key", &ec, "ec.pem"),
        ("private key as trust", &private, "other"),
    ] {
        for cmd in ["import", "verify"] {
            let to_repo = b.target.reference("inside/app");
            let mut args = vec![cmd, s(&good), "--trust", s(key)];
            if cmd == "import" {
                args.extend(["--to-repo", &to_repo]);
            }
            let out = run(b.h(), b.cwd.path(), &args);
            assert!(!out.success, "{what}: {cmd} succeeded");
            assert!(out.text.contains(needle), "{what}: {cmd}:\n{}", out.text);
        }
    }
    assert_eq!(support::catalog(&b.target), Vec::<String>::new());
}

/// A 1 GB YAML document (sparse, so it costs no disk) is refused by size before a byte of it
/// is parsed, in bounded memory.
#[test]
fn one_gigabyte_yaml_is_refused_by_size() {
    let home = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let dir = home.path().join("config");
    std::fs::create_dir(&dir).unwrap();
    let big = dir.join("huge.yaml");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(1 << 30).unwrap();
    drop(f);
    let out = run(home.path(), cwd.path(), &["lock", "-f", s(&dir)]);
    assert!(!out.success, "{}", out.text);
    assert!(
        out.text.contains("huge.yaml") && out.text.contains("limit"),
        "{}",
        out.text
    );
    assert!(out.rss_kib < out.rss_limit_kib, "{} KiB", out.rss_kib);
    assert!(out.elapsed < TIME_LIMIT, "{:?}", out.elapsed);
}

/// The extra entry of [`an_entry_after_the_blobs_is_refused`]: a second signature (another
/// key's fingerprint, a well-formed 64-byte signature) or a volume record.
fn late_entry(b: &Bench, volume: bool) -> RawTarEntry {
    if volume {
        let record = airlift::archive::reader::VolumeRecord {
            manifest: Digest::sha256_of(&b.archive.manifest_bytes()),
            volume: 1,
            count: 1,
        };
        RawTarEntry::file("airlift/volume.json", serde_json::to_vec(&record).unwrap())
    } else {
        let other = keys::generate().unwrap();
        let sig = airlift::archive::sign_manifest(&b.archive.manifest_bytes(), &[other]);
        let (fp, sig) = sig.into_iter().next().expect("one signature");
        RawTarEntry::file(&format!("airlift/signatures/{fp}.sig"), sig.to_vec())
    }
}

/// Leading-only entries (a signature, the volume record) appended after the blobs: the
/// format places them before `index.json`, so verify and import must both refuse, and
/// import must leave no manifest and no tag behind.
fn an_entry_after_the_blobs_is_refused(volume: bool, zstd: bool) {
    let b = Bench::new();
    let mut v = b.entries();
    let extra = late_entry(&b, volume);
    let name = extra.name.clone();
    v.push(extra);
    let mut bytes = raw_tar(&v, true);
    if zstd {
        bytes = zstd::encode_all(&bytes[..], 3).unwrap();
    }
    let what = format!("{name} after the blobs{}", if zstd { " zstd" } else { "" });
    b.refused(&what, &bytes, &name, true);
    for repo in support::catalog(&b.target) {
        for root in &b.archive.manifest.roots {
            let got =
                support::http_get(&b.target, &format!("/v2/{repo}/manifests/{}", root.digest));
            assert_eq!(
                got.status, 404,
                "{what}: manifest {} pushed to {repo}",
                root.digest
            );
        }
    }
}

#[test]
fn a_signature_after_the_blobs_is_refused() {
    an_entry_after_the_blobs_is_refused(false, false);
}

#[test]
fn a_signature_after_the_blobs_is_refused_zstd() {
    an_entry_after_the_blobs_is_refused(false, true);
}

#[test]
fn a_volume_record_after_the_blobs_is_refused() {
    an_entry_after_the_blobs_is_refused(true, false);
}

#[test]
fn a_volume_record_after_the_blobs_is_refused_zstd() {
    an_entry_after_the_blobs_is_refused(true, true);
}

/// `archive` with its `index.json` replaced (the signed manifest re-pointed at the new bytes).
fn with_index(archive: &SynthArchive, edit: impl FnOnce(&mut serde_json::Value)) -> SynthArchive {
    let mut a = archive.clone();
    let mut index: serde_json::Value = serde_json::from_slice(&a.index_json).unwrap();
    edit(&mut index);
    a.index_json = serde_json::to_vec(&index).unwrap();
    a.manifest.index = airlift::archive::IndexRef::of(&a.index_json);
    a
}

/// The failure kinds `verify --json` reports for `archive`.
fn failure_kinds(b: &Bench, archive: &Path) -> Vec<String> {
    let out = run(
        b.h(),
        b.cwd.path(),
        &["verify", "--json", s(archive), "--trust", s(&b.pubkey)],
    );
    assert!(!out.success, "verify --json succeeded:\n{}", out.text);
    let start = out.text.find('{').expect("a JSON report");
    let report: serde_json::Value = serde_json::Deserializer::from_str(&out.text[start..])
        .into_iter::<serde_json::Value>()
        .next()
        .expect("one report")
        .expect("report JSON");
    assert_eq!(report["ok"], false, "{report}");
    report["failures"]
        .as_array()
        .expect("failures")
        .iter()
        .map(|f| f["kind"].as_str().expect("kind").to_owned())
        .collect()
}

/// The three closure breaks, each signed correctly so that only the closure check can catch
/// it: `(what, archive, digest the failure names, verify --json kind)`.
fn closure_breaks(b: &Bench) -> Vec<(&'static str, SynthArchive, String, &'static str)> {
    let root = b.archive.manifest.roots[0].digest.clone();
    let unlisted = stranger();
    // A descriptor in index.json naming a blob the blob table does not list.
    let extra_descriptor = with_index(&b.archive, |i| {
        i["manifests"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": unlisted, "size": 10,
                "annotations": {"org.opencontainers.image.ref.name": "src.example/hostile/c:1"},
            }));
    });
    // A descriptor in index.json giving a listed blob another size.
    let wrong_size = with_index(&b.archive, |i| {
        for m in i["manifests"].as_array_mut().unwrap() {
            if m["digest"] == root.to_string() {
                m["size"] = serde_json::json!(m["size"].as_u64().unwrap() + 1);
            }
        }
    });
    // A listed blob that nothing references.
    let mut orphan = b.archive.clone();
    let data = b"an orphan layer".to_vec();
    let orphan_digest = Digest::sha256_of(&data);
    orphan.blobs.insert(orphan_digest.clone(), data.clone());
    orphan.manifest.blobs.push(airlift::archive::BlobEntry {
        digest: orphan_digest.clone(),
        size: data.len() as u64,
        media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        role: airlift::archive::Role::Layer,
        referenced_by: vec![root.clone()],
        volume: None,
        parts: Vec::new(),
        base: false,
    });
    orphan.manifest.blobs.sort_by_key(|e| e.digest.to_string());
    vec![
        (
            "unlisted descriptor",
            extra_descriptor,
            unlisted.to_string(),
            "unlisted-descriptor",
        ),
        (
            "descriptor of another size",
            wrong_size,
            root.to_string(),
            "unlisted-descriptor",
        ),
        (
            "unreachable blob",
            orphan,
            orphan_digest.to_string(),
            "unreachable-blob",
        ),
    ]
}

/// Verify (text and `--json`) names each closure break by digest and kind.
#[test]
fn closure_breaks_fail_verify_with_their_kind() {
    let b = Bench::new();
    for (what, archive, digest, kind) in closure_breaks(&b) {
        let path = b.write(
            "closure.tar",
            &raw_tar(&archive.entries(std::slice::from_ref(&b.key)), true),
        );
        let out = b.verify(&path);
        assert!(!out.success, "{what}: verify succeeded:\n{}", out.text);
        assert!(
            out.text.contains(&digest),
            "{what}: does not name {digest}:\n{}",
            out.text
        );
        let kinds = failure_kinds(&b, &path);
        assert!(kinds.iter().any(|k| k == kind), "{what}: kinds {kinds:?}");
    }
}

/// Import refuses closure break `n` of [`closure_breaks`], naming it, and leaves no
/// manifest and no tag.
fn closure_break_fails_import(n: usize) {
    let b = Bench::new();
    let (what, archive, digest, _) = closure_breaks(&b).swap_remove(n);
    let bytes = raw_tar(&archive.entries(std::slice::from_ref(&b.key)), true);
    b.refused(what, &bytes, &digest, true);
    for repo in support::catalog(&b.target) {
        for r in &archive.manifest.roots {
            let got = support::http_get(&b.target, &format!("/v2/{repo}/manifests/{}", r.digest));
            assert_eq!(
                got.status, 404,
                "{what}: manifest {} pushed to {repo}",
                r.digest
            );
        }
    }
}

#[test]
fn an_unlisted_descriptor_fails_import() {
    closure_break_fails_import(0);
}

#[test]
fn a_descriptor_of_another_size_fails_import() {
    closure_break_fails_import(1);
}

#[test]
fn an_unreachable_blob_fails_import() {
    closure_break_fails_import(2);
}

/// Rules of the leading entries and of the signed blob table, each broken alone: both
/// commands name the rule.
#[test]
fn leading_entry_and_blob_table_rules_name_the_fault() {
    let b = Bench::new();
    let second = keys::generate().unwrap();
    let two = b.archive.entries(&[b.key.clone(), second]);
    let sig_at: Vec<usize> = two
        .iter()
        .enumerate()
        .filter(|(_, e)| e.name.starts_with("airlift/signatures/"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(sig_at.len(), 2);

    // The same signature entry twice.
    let mut v = b.entries();
    let at = v
        .iter()
        .position(|e| e.name.starts_with("airlift/signatures/"))
        .unwrap();
    v.insert(at + 1, v[at].clone());
    b.refused(
        "signature twice",
        &raw_tar(&v, true),
        "appears twice",
        false,
    );

    // Two signatures, out of fingerprint order.
    let mut v = two.clone();
    v.swap(sig_at[0], sig_at[1]);
    b.refused(
        "signatures out of order",
        &raw_tar(&v, true),
        "signatures sorted by fingerprint",
        false,
    );

    // oci-layout one byte over its limit.
    let mut v = b.entries();
    let mut layout = br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec();
    layout.resize(4097, b' ');
    v[0] = RawTarEntry::file("oci-layout", layout);
    b.refused(
        "oci-layout of 4097 bytes",
        &raw_tar(&v, true),
        "limit 4096",
        false,
    );

    // The signed blob table out of order, and with an entry twice.
    for (what, edit) in [
        (
            "blob table unsorted",
            (|m: &mut Manifest| m.blobs.reverse()) as fn(&mut Manifest),
        ),
        ("blob table with a duplicate", |m: &mut Manifest| {
            let first = m.blobs[0].clone();
            m.blobs.insert(1, first);
        }),
    ] {
        let mut archive = b.archive.clone();
        edit(&mut archive.manifest);
        b.refused(
            what,
            &raw_tar(&archive.entries(std::slice::from_ref(&b.key)), true),
            "blob table not sorted by digest or has duplicates",
            false,
        );
    }
}
