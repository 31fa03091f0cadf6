//! The registry-facing half of authoring: resolve tags for a lock, push bundles and images,
//! pull them back with safe extraction and imgpkg's relocation rule.
//!
//! Everything format-related lives in the registry-free modules ([`super::bundle`],
//! [`super::kbld`], [`super::extract`]); this module only moves bytes and asks registries
//! questions. Layers are streamed (to a temp file on push, into extraction on pull).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::StreamExt;

use super::bundle::{self, IMAGES_LOCK_FILE, IMGPKG_DIR, LayerInfo};
use super::extract::{self, ExtractLimits};
use super::kbld::{self, ResolvedImage};
use super::lock::{
    ImageRelocations, ImagesLock, RELOCATIONS_FILE, RELOCATIONS_TAG_SUFFIX, digest_reference,
};
use super::scan::{refs_in, yaml_files};
use super::{AuthorError, io_err};
use crate::digest::Digest;
use crate::oci::{Descriptor, Parsed, RawManifest, media_type};
use crate::reference::Reference;
use crate::registry::{Registries, RegistryError};
use crate::yaml::{self, Limits, Node};

/// Largest image config read into memory when checking the bundle label.
const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;
/// Nested bundles pulled at most (cycles and hostile locks end here).
const MAX_NESTED_BUNDLES: usize = 10_000;
/// Read size for streaming a layer file to the registry.
const UPLOAD_CHUNK: usize = 256 * 1024;

/// imgpkg's error for `pull -b` on a plain image.
pub const NOT_A_BUNDLE: &str =
    "Expected bundle image but found plain image (hint: Did you use -i instead of -b?)";
/// imgpkg's error for `pull -i` on a bundle.
pub const IS_A_BUNDLE: &str =
    "Expected bundle flag when pulling a bundle (hint: Use -b instead of -i for bundles)";

/// Why a registry-facing authoring step failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// A format or input problem (see [`AuthorError`]).
    #[error(transparent)]
    Author(#[from] AuthorError),
    /// The registry could not be reached or refused.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Some references could not be resolved; every failure is listed.
    #[error("cannot resolve {} image reference(s):\n- {}", .0.len(), .0.join("\n- "))]
    Resolve(Vec<String>),
    /// The request makes no sense for what the registry holds (wrong kind, bad layer, …).
    #[error("{0}")]
    Refused(String),
}

fn refused(msg: impl Into<String>) -> PublishError {
    PublishError::Refused(msg.into())
}

// ---------------------------------------------------------------------------------------------
// lock

/// The image reference texts in the YAML files under `paths`, first occurrence order, without
/// duplicates; documents of kind ImagesLock are skipped (they are locks, not configuration).
pub fn scan_for_lock(
    paths: &[PathBuf],
    extra_keys: &[String],
    limits: &Limits,
) -> Result<Vec<String>, AuthorError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for file in yaml_files(paths)? {
        for node in yaml::load_file(&file, limits)? {
            if node.get("kind").and_then(Node::as_str) == Some("ImagesLock") {
                continue;
            }
            for text in refs_in(&node, extra_keys) {
                if seen.insert(text.clone()) {
                    out.push(text);
                }
            }
        }
    }
    Ok(out)
}

/// Resolves every reference text to a digest reference, `concurrency` at a time.
///
/// A digest reference is kept without asking the registry (as kbld does); a tag is resolved
/// with a HEAD request, so an index stays an index. `on_resolved` sees each success; all
/// failures are collected and reported together.
pub async fn resolve_references(
    registries: &Registries,
    texts: &[String],
    concurrency: usize,
    mut on_resolved: impl FnMut(&str, &Reference),
) -> Result<BTreeMap<String, ResolvedImage>, PublishError> {
    let mut results = futures::stream::iter(texts.iter().cloned())
        .map(|text| async move {
            let r = resolve_one(registries, &text).await;
            (text, r)
        })
        .buffer_unordered(concurrency.max(1));
    let mut resolved = BTreeMap::new();
    let mut failures = Vec::new();
    while let Some((text, r)) = results.next().await {
        match r {
            Ok(img) => {
                on_resolved(&text, &img.digest_ref);
                resolved.insert(text, img);
            }
            Err(e) => failures.push(format!("{text}: {e}")),
        }
    }
    if !failures.is_empty() {
        failures.sort();
        return Err(PublishError::Resolve(failures));
    }
    Ok(resolved)
}

async fn resolve_one(registries: &Registries, text: &str) -> Result<ResolvedImage, PublishError> {
    let r = Reference::parse(text).map_err(AuthorError::from)?;
    if r.digest().is_some() {
        return Ok(ResolvedImage::from_original(text, r.clone())?);
    }
    let digest = registries
        .client(r.registry())
        .await?
        .resolve_digest(&r)
        .await?;
    Ok(ResolvedImage::from_original(text, r.with_digest(&digest))?)
}

/// Scans `paths` and resolves what it finds into the ImagesLock kbld would write.
pub async fn lock_paths(
    registries: &Registries,
    paths: &[PathBuf],
    extra_keys: &[String],
    limits: &Limits,
    concurrency: usize,
    on_resolved: impl FnMut(&str, &Reference),
) -> Result<ImagesLock, PublishError> {
    let texts = scan_for_lock(paths, extra_keys, limits)?;
    let resolved = resolve_references(registries, &texts, concurrency, on_resolved).await?;
    Ok(kbld::images_lock(&resolved)?)
}

// ---------------------------------------------------------------------------------------------
// push

/// What `push` builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushKind {
    /// An imgpkg bundle (`.imgpkg/images.yml` required, config labelled).
    Bundle,
    /// A plain image of files (no `.imgpkg` allowed).
    Image,
}

/// The result of a push.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// `REPO@sha256:…` of the pushed manifest.
    pub digest_ref: Reference,
    /// The tag pushed (from the target reference).
    pub tag: String,
    /// The layer's digests and size.
    pub layer: LayerInfo,
    /// Digest of the config blob.
    pub config_digest: Digest,
}

/// A temp file removed on drop, so a failed push leaves nothing behind.
struct TempFile {
    path: PathBuf,
}

impl TempFile {
    fn create() -> Result<(TempFile, std::fs::File), AuthorError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir();
        for _ in 0..100 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!(
                "airlift-layer-{}-{n}-{nanos}.tar.gz",
                std::process::id()
            ));
            let mut opts = std::fs::OpenOptions::new();
            opts.read(true).write(true).create_new(true);
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            match opts.open(&path) {
                Ok(f) => return Ok((TempFile { path }, f)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err(path)(e)),
            }
        }
        Err(io_err(dir)(io::Error::other(
            "cannot create a unique temp file for the layer",
        )))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Builds the layer of `inputs` and pushes it as a bundle or image at `target` (a tag
/// reference), then tags it `sha256-<hex>.imgpkg` as imgpkg does.
///
/// Inputs are validated first (see [`bundle::validate_bundle_inputs`]); a bundle's
/// `images.yml` must be a valid ImagesLock. The gzip layer is written to a temp file and
/// streamed from there, so memory stays flat whatever the input size.
pub async fn push(
    registries: &Registries,
    target: &Reference,
    inputs: &[PathBuf],
    kind: PushKind,
) -> Result<Pushed, PublishError> {
    if target.digest().is_some() {
        return Err(refused(format!(
            "cannot push to {target}: give a tag, not a digest"
        )));
    }
    let tag = target.tag().unwrap_or("latest").to_owned();
    if inputs.is_empty() {
        return Err(refused("nothing to push: give at least one -f"));
    }
    let inputs = inputs.to_vec();
    let (temp, layer) = tokio::task::spawn_blocking(move || -> Result<_, AuthorError> {
        match kind {
            PushKind::Bundle => {
                let lock = bundle::validate_bundle_inputs(&inputs)?;
                ImagesLock::read(&lock, &Limits::default())?;
            }
            PushKind::Image => bundle::validate_image_inputs(&inputs)?,
        }
        let (temp, file) = TempFile::create()?;
        let (info, w) = bundle::write_layer_gzip(&inputs, io::BufWriter::new(file))?;
        let mut file = w
            .into_inner()
            .map_err(|e| io_err(&temp.path)(e.into_error()))?;
        file.flush().map_err(io_err(&temp.path))?;
        Ok((temp, info))
    })
    .await
    .map_err(|e| refused(format!("layer builder stopped: {e}")))??;

    let config = bundle::config_bytes(&layer.diff_id, kind == PushKind::Bundle);
    let manifest_bytes = bundle::manifest_bytes(&config, &layer);
    let manifest = RawManifest::from_bytes(
        Bytes::from(manifest_bytes),
        Some(media_type::DOCKER_MANIFEST),
    )
    .map_err(|e| refused(format!("built an unreadable manifest: {e}")))?;
    let client = registries.client(target.registry()).await?;

    let layer_desc = Descriptor {
        media_type: media_type::DOCKER_LAYER_GZIP.to_owned(),
        digest: layer.digest.clone(),
        size: layer.size,
        platform: None,
        annotations: None,
    };
    if !client.blob_exists(target, &layer.digest).await? {
        let path = temp.path.clone();
        client
            .put_blob(target, &layer_desc, || {
                let path = path.clone();
                async move {
                    let f = tokio::fs::File::open(&path).await?;
                    Ok(tokio_util::io::ReaderStream::with_capacity(f, UPLOAD_CHUNK))
                }
            })
            .await?;
    }
    drop(temp);

    let config_digest = Digest::sha256_of(&config);
    let config_desc = Descriptor {
        media_type: media_type::DOCKER_CONFIG.to_owned(),
        digest: config_digest.clone(),
        size: config.len() as u64,
        platform: None,
        annotations: None,
    };
    if !client.blob_exists(target, &config_digest).await? {
        let config = Bytes::from(config);
        client
            .put_blob(target, &config_desc, || {
                let config = config.clone();
                async move { Ok(futures::stream::once(async move { Ok(config) })) }
            })
            .await?;
    }

    client.put_manifest(target, &manifest).await?;
    let imgpkg_tag = format!("{}.imgpkg", manifest.digest.tag_form());
    client
        .put_manifest(&target.with_tag(&imgpkg_tag), &manifest)
        .await?;
    Ok(Pushed {
        digest_ref: target.with_digest(&manifest.digest),
        tag,
        layer,
        config_digest,
    })
}

// ---------------------------------------------------------------------------------------------
// pull

/// What `pull` expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullKind {
    /// `-b`: must be a bundle.
    Bundle,
    /// `-i`: must not be a bundle.
    Image,
}

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Bundle or image.
    pub kind: PullKind,
    /// Also pull nested bundles into `DIR/.imgpkg/bundles/sha256-<hex>/`.
    pub recursive: bool,
    /// Bounds on each extracted layer.
    pub extract: ExtractLimits,
    /// Bounds on the lock file read back.
    pub yaml: Limits,
    /// Registry requests in flight when checking where locked images live.
    pub concurrency: usize,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            kind: PullKind::Bundle,
            recursive: false,
            extract: ExtractLimits::default(),
            yaml: Limits::default(),
            concurrency: 8,
        }
    }
}

/// What a pull did.
#[derive(Debug, Clone, Default)]
pub struct Pulled {
    /// `REPO@sha256:…` of what was pulled first (the root).
    pub digest_ref: Option<Reference>,
    /// Whether the root's lock was rewritten to its repository.
    pub relocated: bool,
    /// Nested bundles pulled (`-r`), as digest references with their directories.
    pub nested: Vec<(Reference, PathBuf)>,
}

/// Whether `dir` is missing or an empty directory.
fn check_empty_target(dir: &Path) -> Result<(), PublishError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(refused(format!(
                    "{} is not empty: pull into a new or empty directory (imgpkg would delete \
                     its contents; airlift never deletes)",
                    dir.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(AuthorError::Io {
            path: dir.to_owned(),
            source: e,
        }
        .into()),
    }
}

/// The manifest at `r` (must be an image, not an index) and whether its config is a bundle's.
async fn inspect(
    registries: &Registries,
    r: &Reference,
) -> Result<(RawManifest, Vec<Descriptor>, bool), PublishError> {
    let client = registries.client(r.registry()).await?;
    let m = client.get_manifest(r).await?;
    let Parsed::Image { config, layers } = &m.parsed else {
        return Err(refused(format!(
            "{r} is an image index: unable to pull non-images, such as image indexes (hint: \
             provide a specific digest to the image instead)"
        )));
    };
    let (config, layers) = (config.clone(), layers.clone());
    let repo = r.with_digest(&m.digest);
    let cfg = client
        .read_small_blob(&repo, &config, MAX_CONFIG_BYTES)
        .await?;
    Ok((m, layers, bundle::config_is_bundle(&cfg)))
}

/// Streams one layer from the registry into safe extraction under `dir`, then reads the rest
/// of the blob so its digest is checked to the last byte.
async fn extract_layer(
    registries: &Registries,
    repo: &Reference,
    desc: &Descriptor,
    dir: &Path,
    limits: ExtractLimits,
) -> Result<(), PublishError> {
    let gzip = match desc.media_type.as_str() {
        media_type::DOCKER_LAYER_GZIP | media_type::OCI_LAYER_GZIP => true,
        media_type::OCI_LAYER_TAR => false,
        other => {
            return Err(refused(format!(
                "layer {} has media type {other:?}: only tar and tar+gzip layers can be extracted",
                desc.digest
            )));
        }
    };
    let client = registries.client(repo.registry()).await?;
    let mut reader = client.get_blob(repo, desc).into_blocking_reader();
    let dir = dir.to_owned();
    let digest = desc.digest.clone();
    tokio::task::spawn_blocking(move || -> Result<(), PublishError> {
        if gzip {
            extract::extract_gzip_layer(&mut reader, &dir, &limits)?;
        } else {
            extract::extract_tar(&mut reader, &dir, &limits)?;
        }
        // Trailing bytes (gzip trailer, tar padding) still count towards the digest.
        let mut sink = [0u8; 8192];
        loop {
            match reader.read(&mut sink) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(refused(format!("layer {digest}: {e}"))),
            }
        }
    })
    .await
    .map_err(|e| refused(format!("extraction stopped: {e}")))?
}

/// Whether the bundle repository hosts every locked image, by imgpkg's rule: its locations
/// image `sha256-<bundle hex>.image-locations.imgpkg` exists, or every locked digest exists
/// at `REPO@digest`.
async fn repo_hosts_all(
    registries: &Registries,
    bundle: &Reference,
    bundle_digest: &Digest,
    lock: &ImagesLock,
    concurrency: usize,
) -> Result<BTreeSet<Digest>, PublishError> {
    let client = registries.client(bundle.registry()).await?;
    let mut digests = BTreeSet::new();
    for img in &lock.images {
        let r = digest_reference(&img.image, Path::new(IMAGES_LOCK_FILE))?;
        if let Some(d) = r.digest() {
            digests.insert(d.clone());
        }
    }
    let locations = bundle.with_tag(&format!(
        "{}.image-locations.imgpkg",
        bundle_digest.tag_form()
    ));
    if client.manifest_exists(&locations).await? {
        return Ok(digests);
    }
    let client = &client;
    let mut checks = futures::stream::iter(digests)
        .map(|d| async move {
            let at = bundle.with_digest(&d);
            client.manifest_exists(&at).await.map(|ok| (d, ok))
        })
        .buffer_unordered(concurrency.max(1));
    let mut present = BTreeSet::new();
    while let Some(r) = checks.next().await {
        let (d, ok) = r?;
        if ok {
            present.insert(d);
        }
    }
    Ok(present)
}

/// airlift's relocations document next to a bundle imported with `--to-registry`, if there is one.
async fn relocations_for(
    registries: &Registries,
    bundle: &Reference,
    bundle_digest: &Digest,
    opts: &PullOptions,
) -> Result<Option<ImageRelocations>, PublishError> {
    let client = registries.client(bundle.registry()).await?;
    let at = bundle.with_tag(&format!(
        "{}{}",
        bundle_digest.tag_form(),
        RELOCATIONS_TAG_SUFFIX
    ));
    if !client.manifest_exists(&at).await? {
        return Ok(None);
    }
    let m = client.get_manifest(&at).await?;
    let Parsed::Image { layers, .. } = &m.parsed else {
        return Err(refused(format!("{at} is not an image")));
    };
    let [layer] = layers.as_slice() else {
        return Err(refused(format!("{at} must have exactly one layer")));
    };
    let gz = client
        .read_small_blob(&at.with_digest(&m.digest), layer, MAX_CONFIG_BYTES)
        .await?;
    let name = RELOCATIONS_FILE;
    let bytes = extract::file_from_gzip_layer(&gz, name, MAX_CONFIG_BYTES)
        .map_err(|e| refused(format!("{at}: {e}")))?;
    let text =
        String::from_utf8(bytes).map_err(|_| refused(format!("{at}: {name} is not UTF-8")))?;
    Ok(Some(ImageRelocations::parse(
        &text,
        Path::new(name),
        &opts.yaml,
    )?))
}

/// Pulls one image or bundle into the empty directory `dir`; returns its digest reference and,
/// for a bundle, its (possibly rewritten) lock and whether it was rewritten.
async fn pull_one(
    registries: &Registries,
    r: &Reference,
    dir: &Path,
    kind: PullKind,
    opts: &PullOptions,
    log: &(dyn Fn(&str) + Send + Sync),
) -> Result<(Reference, Option<(ImagesLock, bool)>), PublishError> {
    check_empty_target(dir)?;
    let (manifest, layers, is_bundle) = inspect(registries, r).await?;
    match (kind, is_bundle) {
        (PullKind::Bundle, false) => return Err(refused(NOT_A_BUNDLE)),
        (PullKind::Image, true) => return Err(refused(IS_A_BUNDLE)),
        _ => {}
    }
    let at = r.with_digest(&manifest.digest);
    let what = if is_bundle { "bundle" } else { "image" };
    log(&format!("Pulling {what} '{at}'"));
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let n = layers.len();
    for (i, layer) in layers.iter().enumerate() {
        log(&format!(
            "  Extracting layer '{}' ({}/{n})",
            layer.digest,
            i + 1
        ));
        extract_layer(registries, &at, layer, dir, opts.extract).await?;
    }
    if !is_bundle {
        return Ok((at, None));
    }
    let lock = extract::read_bundle_lock(dir, &opts.yaml)?;
    log("");
    log("Locating image lock file images...");
    let bundle_repo = r.repo_name();
    if let Some(relocations) = relocations_for(registries, r, &manifest.digest, opts).await? {
        if let Some(new) = extract::apply_relocations(&lock, &relocations) {
            let path = dir.join(IMGPKG_DIR).join(IMAGES_LOCK_FILE);
            std::fs::write(&path, new.to_yaml()).map_err(io_err(&path))?;
            log(&format!(
                "The bundle repo ({bundle_repo}) records where every image of the bundle's Images Lock \
                 file (.imgpkg/images.yml) was relocated (airlift --to-registry)"
            ));
            return Ok((at, Some((new, true))));
        }
    }
    let present = repo_hosts_all(registries, r, &manifest.digest, &lock, opts.concurrency).await?;
    let rewritten = extract::relocate_lock(&lock, &bundle_repo, |d| present.contains(d))?;
    Ok(match rewritten {
        Some(new) => {
            let path = dir.join(IMGPKG_DIR).join(IMAGES_LOCK_FILE);
            std::fs::write(&path, new.to_yaml()).map_err(io_err(&path))?;
            log(&extract::hosting_message(&bundle_repo));
            (at, Some((new, true)))
        }
        None => {
            log(extract::SKIP_MESSAGE);
            (at, Some((lock, false)))
        }
    })
}

/// Pulls a bundle (`-b`) or image (`-i`) into `dir`, which must be missing or empty.
///
/// Extraction refuses `..`, absolute paths, links and special files. For a bundle, the lock
/// is rewritten to the bundle's repository when imgpkg would do so, and `log` receives
/// imgpkg's lines. With `recursive`, every bundle the lock names (transitively) is pulled into
/// `dir/.imgpkg/bundles/sha256-<hex>/`.
pub async fn pull(
    registries: &Registries,
    r: &Reference,
    dir: &Path,
    opts: &PullOptions,
    log: &(dyn Fn(&str) + Send + Sync),
) -> Result<Pulled, PublishError> {
    if opts.recursive && opts.kind == PullKind::Image {
        return Err(refused("--recursive (-r) applies to bundles only"));
    }
    let (at, lock) = pull_one(registries, r, dir, opts.kind, opts, log).await?;
    let mut out = Pulled {
        digest_ref: Some(at.clone()),
        relocated: lock.as_ref().is_some_and(|l| l.1),
        nested: Vec::new(),
    };
    if !opts.recursive {
        return Ok(out);
    }
    let mut seen: BTreeSet<Digest> = at.digest().into_iter().cloned().collect();
    let mut queue: Vec<ImagesLock> = lock.map(|l| l.0).into_iter().collect();
    let bundles_dir = dir.join(IMGPKG_DIR).join("bundles");
    while let Some(lock) = queue.pop() {
        for img in &lock.images {
            let child = digest_reference(&img.image, Path::new(IMAGES_LOCK_FILE))?;
            let Some(d) = child.digest().cloned() else {
                continue;
            };
            if seen.contains(&d) {
                continue;
            }
            let client = registries.client(child.registry()).await?;
            let m = client.get_manifest(&child).await?;
            if m.is_index() {
                seen.insert(d);
                continue;
            }
            let (_, _, is_bundle) = inspect(registries, &child).await?;
            seen.insert(d.clone());
            if !is_bundle {
                continue;
            }
            if out.nested.len() >= MAX_NESTED_BUNDLES {
                return Err(refused(format!(
                    "more than {MAX_NESTED_BUNDLES} nested bundles: refusing"
                )));
            }
            let sub = bundles_dir.join(d.tag_form());
            log("");
            log(&format!("Nested bundle '{child}'"));
            let (nested_at, nested_lock) =
                pull_one(registries, &child, &sub, PullKind::Bundle, opts, log).await?;
            out.nested.push((nested_at, sub));
            if let Some((l, _)) = nested_lock {
                queue.push(l);
            }
        }
    }
    Ok(out)
}
