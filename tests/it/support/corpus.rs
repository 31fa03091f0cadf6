//! A deterministic test corpus in a real registry: what export/import tests carry across.
//!
//! Why one builder: every export/import test needs the same shapes (images sharing base
//! layers, a two-platform index, a nested bundle inside an outer bundle) and must check the
//! archive field by field, so the builder returns every reference, digest and the exact set of
//! unique blobs (digest → size) that an archive of the outer bundle must contain.
//!
//! Layout in the registry (paths relative to the registry host):
//! - `corpus/app-a:v1`, `corpus/app-b:v1`, `corpus/app-c:v1`: single-platform images that all
//!   share the base layer; `app-a` and `app-c` also share a second layer.
//! - `corpus/multi:v1`: an OCI index over `linux/amd64` and `linux/arm64` images (base shared).
//! - `corpus/nested:v1`: a bundle whose lock names `app-c`.
//! - `corpus/outer:v1`: a bundle whose lock names `app-a`, `app-b`, `multi` and `nested`.
//!
//! Bundles are made the way users make them: `airlift lock` over a config YAML that names the
//! images by tag, then `airlift push -b`.

use std::collections::BTreeMap;
use std::path::Path;

use airlift::digest::Digest;
use serde_json::Value;

use super::cli::{airlift, expect_ok, s};
use super::layout::{ImageSpec, LayerSpec, WrittenImage, WrittenIndex};
use super::registry::Registry;
use super::{sha256_digest, skopeo_inspect_raw, skopeo_push, write_oci_image, write_oci_index};

/// Size of the shared base layer's file (gzip'd; random data does not shrink).
const BASE_SIZE: u64 = 1024 * 1024;

/// One image or index of the corpus.
#[derive(Clone, Debug)]
pub struct CorpusImage {
    /// Repository path relative to the registry, e.g. `corpus/app-a`.
    pub repo: String,
    /// Full tag reference, e.g. `127.0.0.1:PORT/corpus/app-a:v1`.
    pub tag_ref: String,
    /// Manifest (or index) digest.
    pub digest: Digest,
}

/// One bundle of the corpus, as pushed.
#[derive(Clone, Debug)]
pub struct CorpusBundle {
    /// Where it lives, as [`CorpusImage`].
    pub image: CorpusImage,
    /// Exact manifest bytes served by the registry.
    pub manifest: Vec<u8>,
    /// Config blob digest and size.
    pub config: (Digest, u64),
    /// Layer blob digest and size (the bundle's files, gzip'd tar).
    pub layer: (Digest, u64),
    /// Text of its `.imgpkg/images.yml` as written by `airlift lock`.
    pub lock_text: String,
    /// The `image:` entries of that lock, in lock order (digest references).
    pub lock_images: Vec<String>,
}

/// Everything [`Corpus::build`] pushed.
#[derive(Debug)]
pub struct Corpus {
    /// `app-a`, `app-b`, `app-c` in that order.
    pub images: Vec<CorpusImage>,
    /// What was written for `app-a`, `app-b`, `app-c` (same order).
    pub written: Vec<WrittenImage>,
    /// The two-platform index `corpus/multi:v1`.
    pub index: CorpusImage,
    /// What was written for the index.
    pub index_written: WrittenIndex,
    /// `corpus/nested:v1` (locks `app-c`).
    pub nested: CorpusBundle,
    /// `corpus/outer:v1` (locks `app-a`, `app-b`, `multi`, `nested`).
    pub outer: CorpusBundle,
    /// Every distinct blob (manifests, indexes, configs, layers) reachable from the outer
    /// bundle: digest string → size. Exactly what an export of the outer bundle must hold.
    pub blobs: BTreeMap<String, u64>,
}

impl Corpus {
    /// Builds the corpus in `reg` (plain flavour), using `home` as airlift's HOME and scratch.
    pub fn build(reg: &Registry, home: &Path) -> Corpus {
        let host = reg.host();
        let layout = tempfile::tempdir().expect("layout dir");
        let base = LayerSpec::new(1, BASE_SIZE);
        let shared = LayerSpec::new(2, 300 * 1024);
        let specs = [
            ("corpus/app-a", ImageSpec::new(10, vec![base, shared])),
            (
                "corpus/app-b",
                ImageSpec::new(11, vec![base, LayerSpec::new(3, 200 * 1024)]),
            ),
            (
                "corpus/app-c",
                ImageSpec::new(12, vec![base, shared, LayerSpec::new(4, 100 * 1024)]),
            ),
        ];
        let mut blobs = BTreeMap::new();
        let mut images = Vec::new();
        let mut written = Vec::new();
        for (i, (repo, spec)) in specs.iter().enumerate() {
            let tag = format!("img{i}");
            let img = write_oci_image(layout.path(), &tag, spec);
            skopeo_push(layout.path(), &tag, &format!("{repo}:v1"), reg);
            add_image_blobs(&mut blobs, &img);
            images.push(corpus_image(&host, repo, &img.manifest_digest));
            written.push(img);
        }
        let index_written = write_oci_index(
            layout.path(),
            "multi",
            &[
                (
                    "amd64",
                    ImageSpec::new(20, vec![base, LayerSpec::new(5, 150 * 1024)]),
                ),
                (
                    "arm64",
                    ImageSpec::new(21, vec![base, LayerSpec::new(6, 150 * 1024)]),
                ),
            ],
        );
        skopeo_push(layout.path(), "multi", "corpus/multi:v1", reg);
        for img in &index_written.images {
            add_image_blobs(&mut blobs, img);
        }
        blobs.insert(
            index_written.index_digest.to_string(),
            index_written.index.len() as u64,
        );
        let index = corpus_image(&host, "corpus/multi", &index_written.index_digest);

        let nested = push_bundle(reg, home, "corpus/nested", &[("app-c", &images[2].tag_ref)]);
        let outer = push_bundle(
            reg,
            home,
            "corpus/outer",
            &[
                ("app-a", &images[0].tag_ref),
                ("app-b", &images[1].tag_ref),
                ("multi", &index.tag_ref),
                ("nested", &nested.image.tag_ref),
            ],
        );
        for b in [&nested, &outer] {
            blobs.insert(b.image.digest.to_string(), b.manifest.len() as u64);
            blobs.insert(b.config.0.to_string(), b.config.1);
            blobs.insert(b.layer.0.to_string(), b.layer.1);
        }
        Corpus {
            images,
            written,
            index,
            index_written,
            nested,
            outer,
            blobs,
        }
    }

    /// Sum of the sizes of all distinct blobs of the outer bundle's closure.
    pub fn unique_bytes(&self) -> u64 {
        self.blobs.values().sum()
    }

    /// Every lock image text of every bundle (outer first, then nested), as airlift's
    /// archive `index.json` must name them.
    pub fn all_lock_images(&self) -> Vec<String> {
        let mut v = self.outer.lock_images.clone();
        v.extend(self.nested.lock_images.iter().cloned());
        v
    }
}

fn add_image_blobs(blobs: &mut BTreeMap<String, u64>, img: &WrittenImage) {
    blobs.insert(img.manifest_digest.to_string(), img.manifest.len() as u64);
    blobs.insert(img.config_digest.to_string(), img.config_size);
    for (d, s) in img.layer_digests.iter().zip(&img.layer_sizes) {
        blobs.insert(d.to_string(), *s);
    }
}

fn corpus_image(host: &str, repo: &str, digest: &Digest) -> CorpusImage {
    CorpusImage {
        repo: repo.to_owned(),
        tag_ref: format!("{host}/{repo}:v1"),
        digest: digest.clone(),
    }
}

/// Makes a bundle the way a user does: a config YAML naming `images` (`(key, tag reference)`),
/// `airlift lock` into `.imgpkg/images.yml`, `airlift push -b REG/repo:v1`. Returns what was
/// pushed, read back from the registry with skopeo.
pub fn push_bundle(
    reg: &Registry,
    home: &Path,
    repo: &str,
    images: &[(&str, &str)],
) -> CorpusBundle {
    let dir = tempfile::tempdir().expect("bundle dir");
    std::fs::create_dir(dir.path().join(".imgpkg")).expect("mkdir .imgpkg");
    std::fs::create_dir(dir.path().join("config")).expect("mkdir config");
    let mut yaml = String::new();
    for (key, reference) in images {
        yaml.push_str(&format!("{key}:\n  image: {reference}\n"));
    }
    let config = dir.path().join("config/app.yaml");
    std::fs::write(&config, yaml).expect("write config");
    let lock = dir.path().join(".imgpkg/images.yml");
    expect_ok(&airlift(
        home,
        &["lock", "-f", s(&config), "--lock-output", s(&lock)],
    ));
    let tag_ref = reg.reference(&format!("{repo}:v1"));
    expect_ok(&airlift(
        home,
        &["push", "-b", &tag_ref, "-f", s(dir.path())],
    ));
    let manifest = skopeo_inspect_raw(&format!("{repo}:v1"), reg);
    let digest = sha256_digest(&manifest);
    let m: Value = serde_json::from_slice(&manifest).expect("bundle manifest JSON");
    let desc = |v: &Value| -> (Digest, u64) {
        (
            v["digest"]
                .as_str()
                .expect("descriptor digest")
                .parse()
                .expect("valid digest"),
            v["size"].as_u64().expect("descriptor size"),
        )
    };
    let layers = m["layers"].as_array().expect("bundle layers");
    assert_eq!(layers.len(), 1, "airlift push writes one layer");
    let lock_text = std::fs::read_to_string(&lock).expect("read lock");
    let lock_yaml: Value = serde_norway::from_str(&lock_text).expect("lock is YAML");
    let lock_images = lock_yaml["images"]
        .as_array()
        .expect("lock has images")
        .iter()
        .map(|i| i["image"].as_str().expect("image text").to_owned())
        .collect::<Vec<_>>();
    assert_eq!(lock_images.len(), images.len(), "{lock_text}");
    CorpusBundle {
        image: corpus_image(&reg.host(), repo, &digest),
        config: desc(&m["config"]),
        layer: desc(&layers[0]),
        manifest,
        lock_text,
        lock_images,
    }
}

/// One entry of a plain (uncompressed) tar file, found by walking its 512-byte headers.
#[derive(Clone, Debug)]
pub struct TarEntry {
    /// Entry name (ustar name field; airlift archives use no prefix).
    pub name: String,
    /// Offset of the 512-byte header.
    pub header_offset: usize,
    /// Offset of the first data byte.
    pub data_offset: usize,
    /// Data size in bytes.
    pub size: usize,
}

impl TarEntry {
    /// Offset just past the entry's data padding (where the next header starts).
    pub fn end_offset(&self) -> usize {
        self.data_offset + self.size.div_ceil(512) * 512
    }

    /// The entry's data within `bytes`, the tar it was listed from.
    pub fn data<'a>(&self, bytes: &'a [u8]) -> &'a [u8] {
        &bytes[self.data_offset..self.data_offset + self.size]
    }
}

/// Lists the entries of a plain tar held in memory by parsing headers directly (independent of
/// airlift's reader and of the `tar` crate), stopping at the first zero block.
pub fn tar_entries(bytes: &[u8]) -> Vec<TarEntry> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 512 <= bytes.len() {
        let h = &bytes[off..off + 512];
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let name_end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let name = String::from_utf8_lossy(&h[..name_end]).into_owned();
        let size_field = String::from_utf8_lossy(&h[124..136]);
        let size = usize::from_str_radix(size_field.trim_matches(|c| c == '\0' || c == ' '), 8)
            .unwrap_or_else(|e| panic!("tar size field {size_field:?} of {name}: {e}"));
        let entry = TarEntry {
            name,
            header_offset: off,
            data_offset: off + 512,
            size,
        };
        off = entry.end_offset();
        out.push(entry);
    }
    out
}

/// Like [`tar_entries`] for a tar that may be cut short (an interrupted export): the entries
/// before the first one whose data does not fully fit in `bytes`.
pub fn whole_tar_entries(bytes: &[u8]) -> Vec<TarEntry> {
    tar_entries(bytes)
        .into_iter()
        .take_while(|e| e.data_offset + e.size <= bytes.len())
        .collect()
}

/// A ustar header for a regular file `name` of `size` bytes, with a valid checksum.
pub fn ustar_header(name: &str, size: u64) -> [u8; 512] {
    super::synth::raw_header(name, b'0', size, "")
}

/// The entry called `name` in a parsed tar listing.
pub fn tar_entry<'a>(entries: &'a [TarEntry], name: &str) -> &'a TarEntry {
    entries
        .iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no entry {name}"))
}

/// The archive entry name of a blob (`blobs/sha256/<hex>`).
pub fn blob_entry_name(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

/// A copy of the archive `bytes` with one byte in the middle of `name`'s data flipped (sizes
/// stay right, so only a digest check can tell).
pub fn flip_entry(bytes: &[u8], name: &str) -> Vec<u8> {
    let entries = tar_entries(bytes);
    let e = tar_entry(&entries, name);
    let mut out = bytes.to_vec();
    out[e.data_offset + e.size / 2] ^= 0x20;
    out
}
