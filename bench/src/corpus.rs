//! The deterministic corpus, written straight into a `docker-registry` filesystem storage.
//!
//! Why straight into storage: pushing 1.2 GB (or 1,000 images) through any client would take
//! longer than the measurements themselves and would make the corpus depend on that client.
//! The distribution 2.8 storage layout is simple and stable: content-addressed blobs under
//! `blobs/sha256/<2 hex>/<hex>/data`, and per repository link files naming which layers and
//! manifests belong to it and which manifest a tag points at. Layers are uncompressed tars of
//! one file of seeded xoshiro256** output (incompressible, ~GB/s to make); equal `(seed, size)`
//! give byte-identical layers, which is how images share base layers.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::proc::die;

/// Media types written (OCI; skopeo's `oci:` transport reads them back without conversion).
const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MT_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// Seeded xoshiro256** (seed expanded with splitmix64): fast, deterministic, incompressible.
pub struct Rng([u64; 4]);

impl Rng {
    /// A generator whose whole output is fixed by `seed`.
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Fills `buf` (any length) with the next output bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&last[..n]);
    }
}

/// A blob as a descriptor needs it.
#[derive(Clone, Debug)]
pub struct Blob {
    /// Lowercase sha256 hex.
    pub hex: String,
    /// Size in bytes.
    pub size: u64,
}

impl Blob {
    /// `sha256:<hex>`.
    pub fn digest(&self) -> String {
        format!("sha256:{}", self.hex)
    }
}

/// Writer of a distribution registry's filesystem storage (`<root>/docker/registry/v2`).
pub struct Store {
    root: PathBuf,
    /// Layers already written, by `(seed, size)`: shared layers are written once.
    layers: HashMap<(u64, u64), Blob>,
}

impl Store {
    /// A store rooted at a registry's `storage` directory (created if missing).
    pub fn new(storage: &Path) -> Store {
        let root = storage.join("docker/registry/v2");
        mkdir(&root.join("blobs/sha256"));
        Store {
            root,
            layers: HashMap::new(),
        }
    }

    /// Where the registry keeps blob `hex`.
    pub fn blob_path(&self, hex: &str) -> PathBuf {
        self.root
            .join("blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Moves a finished temp file into place as the blob `hex` (kept if it already exists).
    fn place(&self, tmp: &Path, hex: &str) {
        let dest = self.blob_path(hex);
        if dest.exists() {
            let _ = fs::remove_file(tmp);
            return;
        }
        if let Some(parent) = dest.parent() {
            mkdir(parent);
        }
        fs::rename(tmp, &dest).unwrap_or_else(|e| die(&format!("rename blob: {e}")));
    }

    /// Stores small bytes (manifest, config, index) as a blob.
    pub fn put_bytes(&self, bytes: &[u8]) -> Blob {
        let hex = hex(&Sha256::digest(bytes));
        let dest = self.blob_path(&hex);
        if !dest.exists() {
            if let Some(parent) = dest.parent() {
                mkdir(parent);
            }
            fs::write(&dest, bytes).unwrap_or_else(|e| die(&format!("write blob: {e}")));
        }
        Blob {
            hex,
            size: bytes.len() as u64,
        }
    }

    /// Writes (once) a layer: an uncompressed tar holding one file of `size` seeded random
    /// bytes, streamed through sha256 to disk in 1 MiB pieces.
    pub fn layer(&mut self, seed: u64, size: u64) -> Blob {
        if let Some(b) = self.layers.get(&(seed, size)) {
            return b.clone();
        }
        let tmp = self.root.join(format!("tmp-layer-{seed}-{size}"));
        let file = File::create(&tmp).unwrap_or_else(|e| die(&format!("create layer: {e}")));
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut hash = Sha256::new();
        let mut put = |bytes: &[u8]| {
            hash.update(bytes);
            out.write_all(bytes)
                .unwrap_or_else(|e| die(&format!("write layer: {e}")));
        };
        put(&ustar_header(&format!("data/layer-{seed}.bin"), size));
        let mut rng = Rng::new(seed);
        let mut buf = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            rng.fill(&mut buf[..n]);
            put(&buf[..n]);
            left -= n as u64;
        }
        let pad = (512 - size % 512) % 512;
        put(&vec![0u8; pad as usize + 1024]);
        out.flush()
            .unwrap_or_else(|e| die(&format!("flush layer: {e}")));
        drop(out);
        let blob = Blob {
            hex: hex(&hash.finalize()),
            size: 512 + size + pad + 1024,
        };
        self.place(&tmp, &blob.hex);
        self.layers.insert((seed, size), blob.clone());
        blob
    }

    fn link(&self, path: PathBuf, blob: &Blob) {
        if let Some(parent) = path.parent() {
            mkdir(parent);
        }
        fs::write(&path, blob.digest()).unwrap_or_else(|e| die(&format!("write link: {e}")));
    }

    fn repo(&self, repo: &str) -> PathBuf {
        self.root.join("repositories").join(repo)
    }

    /// Makes `blob` a layer/config of `repo` (what a finished blob upload records).
    fn link_layer(&self, repo: &str, blob: &Blob) {
        self.link(
            self.repo(repo)
                .join("_layers/sha256")
                .join(&blob.hex)
                .join("link"),
            blob,
        );
    }

    /// Makes `blob` a manifest revision of `repo` (what a manifest PUT by digest records).
    fn link_manifest(&self, repo: &str, blob: &Blob) {
        self.link(
            self.repo(repo)
                .join("_manifests/revisions/sha256")
                .join(&blob.hex)
                .join("link"),
            blob,
        );
    }

    /// Points `repo:tag` at the manifest `blob`.
    fn tag(&self, repo: &str, tag: &str, blob: &Blob) {
        let t = self.repo(repo).join("_manifests/tags").join(tag);
        self.link(t.join("current/link"), blob);
        self.link(t.join("index/sha256").join(&blob.hex).join("link"), blob);
    }

    /// Writes a single-platform OCI image (`layers` are `(seed, size)`, base first) into
    /// `repo`; returns its manifest blob. `label` makes configs of equal-layer images differ.
    pub fn image(&mut self, repo: &str, arch: &str, label: &str, layers: &[(u64, u64)]) -> Blob {
        let blobs: Vec<Blob> = layers.iter().map(|&(s, n)| self.layer(s, n)).collect();
        let diff_ids: Vec<String> = blobs
            .iter()
            .map(|b| format!("\"{}\"", b.digest()))
            .collect();
        let config = format!(
            "{{\"architecture\":\"{arch}\",\"os\":\"linux\",\"config\":{{\"Labels\":{{\"dev.airlift.bench\":\"{label}\"}}}},\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[{}]}}}}",
            diff_ids.join(",")
        );
        let config = self.put_bytes(config.as_bytes());
        let descs: Vec<String> = blobs.iter().map(|b| desc(MT_LAYER, b, "")).collect();
        let manifest = format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"{MT_MANIFEST}\",\"config\":{},\"layers\":[{}]}}",
            desc(MT_CONFIG, &config, ""),
            descs.join(",")
        );
        let manifest = self.put_bytes(manifest.as_bytes());
        for b in blobs.iter().chain([&config]) {
            self.link_layer(repo, b);
        }
        self.link_manifest(repo, &manifest);
        manifest
    }

    /// Tags an image written with [`Store::image`].
    pub fn tag_image(&self, repo: &str, tag: &str, manifest: &Blob) {
        self.tag(repo, tag, manifest);
    }

    /// Writes an OCI index over `children` (`(arch, manifest)`, already in `repo`) and tags it.
    pub fn index(&self, repo: &str, tag: &str, children: &[(&str, Blob)]) -> Blob {
        let descs: Vec<String> = children
            .iter()
            .map(|(arch, m)| {
                desc(
                    MT_MANIFEST,
                    m,
                    &format!(",\"platform\":{{\"architecture\":\"{arch}\",\"os\":\"linux\"}}"),
                )
            })
            .collect();
        let index = format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"{MT_INDEX}\",\"manifests\":[{}]}}",
            descs.join(",")
        );
        let index = self.put_bytes(index.as_bytes());
        self.link_manifest(repo, &index);
        self.tag(repo, tag, &index);
        index
    }
}

/// A JSON descriptor; `extra` is appended inside the object (starting with a comma).
fn desc(mt: &str, b: &Blob, extra: &str) -> String {
    format!(
        "{{\"mediaType\":\"{mt}\",\"digest\":\"{}\",\"size\":{}{extra}}}",
        b.digest(),
        b.size
    )
}

/// A ustar header for a regular file `name` of `size` bytes (mode 0644, uid/gid/mtime 0).
fn ustar_header(name: &str, size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    let mut put = |off: usize, s: &[u8]| h[off..off + s.len()].copy_from_slice(s);
    put(0, name.as_bytes());
    put(100, b"0000644\0");
    put(108, b"0000000\0");
    put(116, b"0000000\0");
    put(124, format!("{size:011o}\0").as_bytes());
    put(136, b"00000000000\0");
    put(148, b"        ");
    put(156, b"0");
    put(257, b"ustar\0");
    put(263, b"00");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn mkdir(p: &Path) {
    fs::create_dir_all(p).unwrap_or_else(|e| die(&format!("mkdir {}: {e}", p.display())));
}

/// One blob file of a registry storage.
pub struct StoredBlob {
    /// Lowercase sha256 hex.
    pub hex: String,
    /// The `data` file.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
}

/// Every blob in a registry storage (sorted by digest, so runs see the same order).
pub fn storage_blobs(storage: &Path) -> Vec<StoredBlob> {
    let mut out = Vec::new();
    let blobs = storage.join("docker/registry/v2/blobs/sha256");
    for prefix in fs::read_dir(&blobs).into_iter().flatten().flatten() {
        for b in fs::read_dir(prefix.path()).into_iter().flatten().flatten() {
            let path = b.path().join("data");
            if let Ok(m) = fs::metadata(&path) {
                out.push(StoredBlob {
                    hex: b.file_name().to_string_lossy().into_owned(),
                    path,
                    size: m.len(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.hex.cmp(&b.hex));
    out
}

/// Sum of all blob sizes in a registry storage: the corpus's unique bytes.
pub fn storage_blob_bytes(storage: &Path) -> (u64, usize) {
    let blobs = storage_blobs(storage);
    (blobs.iter().map(|b| b.size).sum(), blobs.len())
}
