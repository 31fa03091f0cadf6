//! Synthetic airlift archives built with the library's own writer, no source registry needed.
//!
//! Why: hostile-input and stress tests need archives of exact shapes (300 images, a manifest
//! blob of deeply nested JSON, an entry with a forged type) in milliseconds. Images here are
//! real OCI image manifests over random config/layer bytes, which a `docker-registry` accepts;
//! [`raw_tar`] writes arbitrary ustar entries (any name, type flag or size claim) for what the
//! writer rightly refuses to produce.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use airlift::archive::{
    ArchiveWriter, BlobTableBuilder, IndexEntry, Manifest, Root, RootKind, WriteOptions,
    oci_index_json, sign_manifest,
};
use airlift::digest::Digest;
use airlift::keys::SigningKey;
use airlift::oci::RawManifest;
use rand::{RngExt, SeedableRng};

/// Creation time of every synthetic archive (determinism).
pub const SYNTH_MTIME: u64 = 1_700_000_000;

/// One image: manifest bytes plus the blobs it names.
#[derive(Clone, Debug)]
pub struct SynthImage {
    /// The parsed manifest (digest, media type, descriptors).
    pub manifest: RawManifest,
    /// Config and layers, by digest.
    pub blobs: Vec<(Digest, Vec<u8>)>,
}

/// An OCI image manifest over a small JSON config (unique per seed) and random layers.
pub fn synth_image(seed: u64, layer_sizes: &[usize]) -> SynthImage {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"seed":{seed}}}"#
    )
    .into_bytes();
    let mut blobs = vec![(Digest::sha256_of(&config), config.clone())];
    let mut layers = Vec::new();
    for &size in layer_sizes {
        let mut data = vec![0u8; size];
        rng.fill(&mut data[..]);
        let d = Digest::sha256_of(&data);
        layers.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": d, "size": size,
        }));
        blobs.push((d, data));
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": Digest::sha256_of(&config), "size": config.len()},
        "layers": layers,
    }))
    .expect("manifest JSON");
    let manifest =
        RawManifest::from_bytes(bytes::Bytes::from(manifest), None).expect("valid manifest");
    SynthImage { manifest, blobs }
}

/// Everything needed to write (or tamper with) an archive of images.
#[derive(Clone, Debug)]
pub struct SynthArchive {
    /// The airlift manifest.
    pub manifest: Manifest,
    /// The exact `index.json`.
    pub index_json: Vec<u8>,
    /// Every blob (manifests included), by digest.
    pub blobs: HashMap<Digest, Vec<u8>>,
}

impl SynthArchive {
    /// An archive whose roots are `images`, each known by its reference text (`host/repo:tag`).
    pub fn of_images(images: &[(String, SynthImage)]) -> SynthArchive {
        let mut table = BlobTableBuilder::new();
        let mut blobs = HashMap::new();
        let mut roots = Vec::new();
        let mut entries = Vec::new();
        for (reference, img) in images {
            table.add_manifest(&img.manifest).expect("blob table");
            blobs.insert(img.manifest.digest.clone(), img.manifest.bytes.to_vec());
            for (d, b) in &img.blobs {
                blobs.insert(d.clone(), b.clone());
            }
            roots.push(Root {
                kind: RootKind::Image,
                reference: reference.clone(),
                tag: reference.rsplit_once(':').map(|(_, t)| t.to_owned()),
                digest: img.manifest.digest.clone(),
                media_type: img.manifest.media_type.clone(),
            });
            entries.push(IndexEntry {
                descriptor: img.manifest.descriptor(),
                ref_name: reference.clone(),
            });
        }
        let index_json = oci_index_json(&entries).expect("index.json");
        let mut manifest = Manifest::new(SYNTH_MTIME, "airlift synth", &index_json);
        manifest.roots = roots;
        manifest.blobs = table.finish();
        SynthArchive {
            manifest,
            index_json,
            blobs,
        }
    }

    /// The canonical manifest bytes (what signatures cover).
    pub fn manifest_bytes(&self) -> Vec<u8> {
        self.manifest
            .to_canonical_bytes()
            .expect("canonical manifest")
    }

    /// Writes the archive with the library's writer.
    pub fn write(&self, path: &Path, zstd: bool, signers: &[SigningKey]) {
        let bytes = self.manifest_bytes();
        let sigs = sign_manifest(&bytes, signers);
        let mut w = ArchiveWriter::create(
            path,
            WriteOptions {
                zstd,
                mtime: SYNTH_MTIME,
            },
        )
        .expect("create archive");
        w.write_header(&bytes, &sigs, &self.index_json)
            .expect("archive header");
        for b in self.manifest.blob_order() {
            w.write_blob(&b.digest, b.size, &self.blobs[&b.digest][..])
                .expect("archive blob");
        }
        w.finish().expect("finish archive");
    }

    /// The leading entries and blob entries in archive order, as `(name, data)`, for
    /// [`raw_tar`]-based tampering that the writer would refuse.
    pub fn entries(&self, signers: &[SigningKey]) -> Vec<RawTarEntry> {
        let bytes = self.manifest_bytes();
        let mut out = vec![
            RawTarEntry::file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
            RawTarEntry::file("airlift/manifest.json", bytes.clone()),
        ];
        let mut sigs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (fp, sig) in sign_manifest(&bytes, signers) {
            sigs.insert(fp, sig.to_vec());
        }
        for (fp, sig) in sigs {
            out.push(RawTarEntry::file(
                &format!("airlift/signatures/{fp}.sig"),
                sig,
            ));
        }
        out.push(RawTarEntry::file("index.json", self.index_json.clone()));
        for b in self.manifest.blob_order() {
            out.push(RawTarEntry::file(
                &format!("blobs/sha256/{}", b.digest.hex()),
                self.blobs[&b.digest].clone(),
            ));
        }
        out
    }
}

/// One ustar entry with any name, type flag, data, and optionally a lying size field.
#[derive(Clone, Debug)]
pub struct RawTarEntry {
    /// Entry name (at most 100 bytes).
    pub name: String,
    /// ustar type flag (`b'0'` regular, `b'1'` hard link, `b'2'` symlink, …).
    pub typeflag: u8,
    /// The data written after the header.
    pub data: Vec<u8>,
    /// Size written in the header instead of `data.len()` (a header that lies).
    pub claimed_size: Option<u64>,
    /// Link target for link entries.
    pub link: String,
}

impl RawTarEntry {
    /// A regular file.
    pub fn file(name: &str, data: Vec<u8>) -> RawTarEntry {
        RawTarEntry {
            name: name.to_owned(),
            typeflag: b'0',
            data,
            claimed_size: None,
            link: String::new(),
        }
    }

    /// An entry of type `typeflag` without data.
    pub fn special(name: &str, typeflag: u8, link: &str) -> RawTarEntry {
        RawTarEntry {
            name: name.to_owned(),
            typeflag,
            data: Vec::new(),
            claimed_size: None,
            link: link.to_owned(),
        }
    }
}

fn octal_field(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let text = format!("{value:0width$o}");
    assert!(text.len() <= width, "{value} does not fit the field");
    field[..width].copy_from_slice(text.as_bytes());
    field[width] = 0;
}

/// A ustar header; sizes of 8 GiB and more use the base-256 encoding.
pub fn raw_header(name: &str, typeflag: u8, size: u64, link: &str) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal_field(&mut h[100..108], 0o644);
    octal_field(&mut h[108..116], 0);
    octal_field(&mut h[116..124], 0);
    if size < 0o77777777777 {
        octal_field(&mut h[124..136], size);
    } else {
        h[124] = 0x80;
        h[128..136].copy_from_slice(&size.to_be_bytes());
    }
    octal_field(&mut h[136..148], SYNTH_MTIME);
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    octal_field(&mut h[148..155], sum);
    h[155] = b' ';
    h
}

/// A plain tar of `entries` (each padded to 512 bytes); `trailer` adds the two zero blocks.
pub fn raw_tar(entries: &[RawTarEntry], trailer: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let size = e.claimed_size.unwrap_or(e.data.len() as u64);
        out.extend_from_slice(&raw_header(&e.name, e.typeflag, size, &e.link));
        out.extend_from_slice(&e.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    if trailer {
        out.extend_from_slice(&[0u8; 1024]);
    }
    out
}
