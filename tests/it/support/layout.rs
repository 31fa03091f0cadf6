//! Deterministic test images written as OCI image layout directories (what `skopeo copy oci:`
//! reads). Layers are real tar archives holding one file of seeded ChaCha20 bytes: gzip'd for
//! small layers, plain tar above [`GZIP_LIMIT`] so that big test images stay cheap to make.
//! Everything is streamed to disk; no layer is ever held in memory.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use airlift::digest::Digest;
use airlift::oci::media_type;
use flate2::Compression;
use flate2::write::GzEncoder;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::parse_sha256_hex;

/// Layers larger than this are stored as uncompressed tar (gzip of random data only costs time).
pub const GZIP_LIMIT: u64 = 8 * 1024 * 1024;
/// Annotation naming a tag inside an OCI layout's `index.json`.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// One layer: a tar holding `size` bytes drawn from ChaCha20 seeded with `seed`.
/// Equal specs produce byte-identical layers (and digests), which is how images share layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerSpec {
    /// Seed of the layer's file content.
    pub seed: u64,
    /// Size in bytes of the file inside the tar (the blob is slightly larger, or compressed).
    pub size: u64,
}

impl LayerSpec {
    /// A layer of `size` random bytes from `seed`.
    pub fn new(seed: u64, size: u64) -> LayerSpec {
        LayerSpec { seed, size }
    }
}

/// One single-platform image: config label from `seed`, layers in order (base first).
#[derive(Clone, Debug)]
pub struct ImageSpec {
    /// Distinguishes configs (and so manifests) of images that share all layers.
    pub seed: u64,
    /// Layers, base first.
    pub layers: Vec<LayerSpec>,
}

impl ImageSpec {
    /// An image whose config carries `seed` and which has these layers.
    pub fn new(seed: u64, layers: Vec<LayerSpec>) -> ImageSpec {
        ImageSpec { seed, layers }
    }
}

/// What [`write_oci_image`] wrote: everything a test needs to check a copy.
#[derive(Clone, Debug)]
pub struct WrittenImage {
    /// Digest of the image manifest (what `skopeo inspect --raw` bytes must hash to).
    pub manifest_digest: Digest,
    /// Exact manifest bytes.
    pub manifest: Vec<u8>,
    /// Digest of the config blob.
    pub config_digest: Digest,
    /// Size of the config blob.
    pub config_size: u64,
    /// Layer blob digests, in manifest order.
    pub layer_digests: Vec<Digest>,
    /// Layer blob sizes, in manifest order.
    pub layer_sizes: Vec<u64>,
    /// Uncompressed tar digests (the config's rootfs.diff_ids), in order.
    pub diff_ids: Vec<Digest>,
    /// Sum of the sizes of all distinct blobs (manifest, config, layers) of this image.
    pub total_bytes: u64,
}

/// What [`write_oci_index`] wrote.
#[derive(Clone, Debug)]
pub struct WrittenIndex {
    /// Digest of the image index.
    pub index_digest: Digest,
    /// Exact index bytes.
    pub index: Vec<u8>,
    /// Child images, in the order of the platforms given.
    pub images: Vec<WrittenImage>,
    /// Sum of the sizes of all distinct blobs (index, child manifests, configs, layers).
    pub total_bytes: u64,
}

impl WrittenIndex {
    /// Every distinct blob digest (layers and configs) below the index.
    pub fn blob_digests(&self) -> Vec<Digest> {
        let mut seen = BTreeMap::new();
        for img in &self.images {
            for d in img.layer_digests.iter().chain([&img.config_digest]) {
                seen.insert(d.to_string(), d.clone());
            }
        }
        seen.into_values().collect()
    }
}

/// Writes one image into the OCI layout at `dir` (created if missing) and tags it `tag` in
/// `index.json` (replacing an older entry with that tag; other entries are kept).
pub fn write_oci_image(dir: &Path, tag: &str, spec: &ImageSpec) -> WrittenImage {
    init_layout(dir);
    let img = write_image_blobs(dir, spec, "amd64");
    add_to_index_json(
        dir,
        tag,
        media_type::OCI_MANIFEST,
        &img.manifest_digest,
        img.manifest.len() as u64,
    );
    img
}

/// Writes a multi-platform image: one child image per `(architecture, spec)` (os `linux`),
/// e.g. `[("amd64", a), ("arm64", b)]`, plus an OCI index over them tagged `tag`.
pub fn write_oci_index(dir: &Path, tag: &str, platforms: &[(&str, ImageSpec)]) -> WrittenIndex {
    init_layout(dir);
    let mut images = Vec::new();
    let mut manifests = Vec::new();
    for (arch, spec) in platforms {
        let img = write_image_blobs(dir, spec, arch);
        manifests.push(json!({
            "mediaType": media_type::OCI_MANIFEST,
            "digest": img.manifest_digest.to_string(),
            "size": img.manifest.len(),
            "platform": {"architecture": arch, "os": "linux"},
        }));
        images.push(img);
    }
    let index = to_json(&json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "manifests": manifests,
    }));
    let index_digest = write_small_blob(dir, &index);
    add_to_index_json(
        dir,
        tag,
        media_type::OCI_INDEX,
        &index_digest,
        index.len() as u64,
    );

    let mut sizes = BTreeMap::new();
    for img in &images {
        sizes.insert(img.manifest_digest.to_string(), img.manifest.len() as u64);
        sizes.insert(img.config_digest.to_string(), img.config_size);
        for (d, s) in img.layer_digests.iter().zip(&img.layer_sizes) {
            sizes.insert(d.to_string(), *s);
        }
    }
    sizes.insert(index_digest.to_string(), index.len() as u64);
    WrittenIndex {
        index_digest,
        index,
        images,
        total_bytes: sizes.values().sum(),
    }
}

fn init_layout(dir: &Path) {
    fs::create_dir_all(dir.join("blobs/sha256")).expect("create blobs/sha256");
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("write oci-layout");
    if !dir.join("index.json").exists() {
        let empty =
            json!({"schemaVersion": 2, "mediaType": media_type::OCI_INDEX, "manifests": []});
        fs::write(dir.join("index.json"), to_json(&empty)).expect("write index.json");
    }
}

fn to_json(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("serialize JSON")
}

/// Writes layers, config and manifest of one image as blobs.
fn write_image_blobs(dir: &Path, spec: &ImageSpec, arch: &str) -> WrittenImage {
    let mut layer_digests = Vec::new();
    let mut layer_sizes = Vec::new();
    let mut diff_ids = Vec::new();
    let mut layer_descs = Vec::new();
    for layer in &spec.layers {
        let (digest, size, diff_id, mt) = write_layer(dir, layer);
        layer_descs.push(json!({"mediaType": mt, "digest": digest.to_string(), "size": size}));
        layer_digests.push(digest);
        layer_sizes.push(size);
        diff_ids.push(diff_id);
    }
    let config = to_json(&json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Labels": {"dev.airlift.test.seed": spec.seed.to_string()}},
        "rootfs": {
            "type": "layers",
            "diff_ids": diff_ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        },
    }));
    let config_digest = write_small_blob(dir, &config);
    let manifest = to_json(&json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_MANIFEST,
        "config": {
            "mediaType": media_type::OCI_CONFIG,
            "digest": config_digest.to_string(),
            "size": config.len(),
        },
        "layers": layer_descs,
    }));
    let manifest_digest = write_small_blob(dir, &manifest);

    let mut sizes = BTreeMap::new();
    for (d, s) in layer_digests.iter().zip(&layer_sizes) {
        sizes.insert(d.to_string(), *s);
    }
    sizes.insert(config_digest.to_string(), config.len() as u64);
    sizes.insert(manifest_digest.to_string(), manifest.len() as u64);
    WrittenImage {
        manifest_digest,
        config_size: config.len() as u64,
        manifest,
        config_digest,
        layer_digests,
        layer_sizes,
        diff_ids,
        total_bytes: sizes.values().sum(),
    }
}

/// Writes `bytes` as a blob and returns its digest.
fn write_small_blob(dir: &Path, bytes: &[u8]) -> Digest {
    let hex = hex::encode(Sha256::digest(bytes));
    let path = dir.join("blobs/sha256").join(&hex);
    if !path.exists() {
        fs::write(&path, bytes).expect("write blob");
    }
    parse_sha256_hex(&hex)
}

/// Streams one layer to a temp file, then renames it to its digest.
/// Returns (blob digest, blob size, diff_id, media type).
fn write_layer(dir: &Path, spec: &LayerSpec) -> (Digest, u64, Digest, &'static str) {
    let tmp = dir.join(format!(
        "blobs/sha256/.tmp-{}-{}-{}",
        spec.seed,
        spec.size,
        std::process::id()
    ));
    let file = BufWriter::with_capacity(256 * 1024, File::create(&tmp).expect("create layer"));
    let blob = Hashing::new(file);
    let (blob, diff, mt) = if spec.size > GZIP_LIMIT {
        let tar = write_tar(blob, spec);
        let diff = tar.hash.clone();
        (tar, diff, media_type::OCI_LAYER_TAR)
    } else {
        let gz = GzEncoder::new(blob, Compression::fast());
        let tar = write_tar(Hashing::new(gz), spec);
        let diff = tar.hash.clone();
        let blob = tar.inner.finish().expect("finish gzip");
        (blob, diff, media_type::OCI_LAYER_GZIP)
    };
    let size = blob.count;
    let hex = hex::encode(blob.hash.finalize());
    blob.inner
        .into_inner()
        .map_err(|e| e.into_error())
        .expect("flush layer")
        .sync_all()
        .ok();
    let diff_hex = hex::encode(diff.finalize());
    let dest = dir.join("blobs/sha256").join(&hex);
    fs::rename(&tmp, &dest).expect("rename layer blob");
    (
        parse_sha256_hex(&hex),
        size,
        parse_sha256_hex(&diff_hex),
        mt,
    )
}

/// Writes a tar with one regular file of seeded random bytes; returns the finished writer.
fn write_tar<W: Write>(out: W, spec: &LayerSpec) -> W {
    let mut builder = tar::Builder::new(out);
    let mut header = tar::Header::new_ustar();
    header
        .set_path(format!("data/layer-{}-{}.bin", spec.seed, spec.size))
        .expect("tar path");
    header.set_size(spec.size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let data = RandomReader {
        rng: ChaCha20Rng::seed_from_u64(spec.seed),
        remaining: spec.size,
    };
    builder.append(&header, data).expect("append tar entry");
    builder.into_inner().expect("finish tar")
}

/// `remaining` bytes of seeded ChaCha20 output.
struct RandomReader {
    rng: ChaCha20Rng,
    remaining: u64,
}

impl Read for RandomReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        self.rng.fill_bytes(&mut buf[..n]);
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Writer that hashes (sha256) and counts what passes through.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    count: u64,
}

impl<W> Hashing<W> {
    fn new(inner: W) -> Self {
        Hashing {
            inner,
            hash: Sha256::new(),
            count: 0,
        }
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Adds (or replaces) the `index.json` entry tagged `tag`.
fn add_to_index_json(dir: &Path, tag: &str, mt: &str, digest: &Digest, size: u64) {
    let path = dir.join("index.json");
    let mut index: Value =
        serde_json::from_slice(&fs::read(&path).expect("read index.json")).expect("index.json");
    let manifests = index["manifests"]
        .as_array_mut()
        .expect("index.json has manifests");
    manifests.retain(|m| m["annotations"][REF_NAME].as_str() != Some(tag));
    manifests.push(json!({
        "mediaType": mt,
        "digest": digest.to_string(),
        "size": size,
        "annotations": {REF_NAME: tag},
    }));
    fs::write(&path, to_json(&index)).expect("write index.json");
}
