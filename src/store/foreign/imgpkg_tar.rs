//! imgpkg `copy --to-tar` files: a `manifest.json` list of images and indexes carrying their
//! manifests and configs inline (`Raw`), and one `sha256-<hex>.tar.gz` entry per layer.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Deserialize;

use super::{Files, ForeignError, Loc, MAX_JSON, Parts, root_reference};
use crate::digest::Digest;
use crate::reference::Reference;

/// Label imgpkg puts on what was asked for (`root-bundle`, `root-image`).
const ROOT_LABEL_PREFIX: &str = "dev.carvel.imgpkg.copy.root-";
/// Nesting of indexes inside `manifest.json` beyond which it is refused.
const MAX_NESTING: usize = 16;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    image: Option<Image>,
    image_index: Option<Index>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Image {
    #[serde(default)]
    refs: Vec<String>,
    #[serde(default)]
    layers: Vec<Layer>,
    config: Raw,
    manifest: Raw,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    orig_ref: String,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Index {
    #[serde(default)]
    refs: Vec<String>,
    #[serde(default)]
    images: Vec<Image>,
    #[serde(default)]
    indexes: Vec<Index>,
    digest: String,
    raw: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    orig_ref: String,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Layer {
    digest: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Raw {
    digest: String,
    raw: String,
}

/// Whether a `manifest.json` is imgpkg's (a list of `{"Image"|"ImageIndex": …}`) rather
/// than `docker save`'s (a list of `{"Config","RepoTags","Layers"}`).
pub fn looks_like(bytes: &[u8]) -> bool {
    serde_json::from_slice::<Vec<serde_json::Map<String, serde_json::Value>>>(bytes)
        .ok()
        .and_then(|v| v.into_iter().next())
        .is_some_and(|m| m.contains_key("Image") || m.contains_key("ImageIndex"))
}

pub(super) fn parse(files: &Files) -> Result<Parts, ForeignError> {
    let path = files.path();
    let bytes = files.read_small("manifest.json", MAX_JSON)?;
    let entries: Vec<Entry> =
        serde_json::from_slice(&bytes).map_err(|e| ForeignError::Invalid {
            file: path.to_path_buf(),
            what: "manifest.json".into(),
            reason: format!("not imgpkg's tar manifest: {e}"),
        })?;
    let mut parts = Parts {
        roots: Vec::new(),
        manifests: Default::default(),
        blobs: Default::default(),
        identity: bytes.clone(),
    };
    let mut named: Vec<(Reference, Digest, bool)> = Vec::new();
    for e in &entries {
        if let Some(img) = &e.image {
            add_image(files, &mut parts, &mut named, img)?;
        }
        if let Some(idx) = &e.image_index {
            add_index(files, &mut parts, &mut named, idx, 0)?;
        }
    }
    // What was asked for carries imgpkg's root label; an older tar without labels: everything.
    let any_root = named.iter().any(|(_, _, root)| *root);
    parts.roots = named
        .into_iter()
        .filter(|(_, _, root)| *root || !any_root)
        .map(|(r, d, _)| (r, d))
        .collect();
    Ok(parts)
}

fn digest(files: &Files, text: &str, what: &str) -> Result<Digest, ForeignError> {
    text.parse().map_err(|e| ForeignError::Invalid {
        file: files.path().to_path_buf(),
        what: what.into(),
        reason: format!("digest {text:?}: {e}"),
    })
}

fn is_root(labels: &Option<BTreeMap<String, String>>) -> bool {
    labels
        .as_ref()
        .is_some_and(|l| l.keys().any(|k| k.starts_with(ROOT_LABEL_PREFIX)))
}

/// The reference an entry is known by: its original repository at its tag, else by digest.
fn name(
    files: &Files,
    orig_ref: &str,
    refs: &[String],
    tag: &str,
    d: &Digest,
) -> Result<Reference, ForeignError> {
    let orig = [orig_ref]
        .into_iter()
        .chain(refs.iter().map(String::as_str))
        .find_map(|t| Reference::parse(t).ok());
    match orig {
        Some(r) if !tag.is_empty() => {
            Reference::parse(&format!("{}:{tag}", r.repo_name())).or_else(|_| Ok(r.with_digest(d)))
        }
        Some(r) => Ok(r.with_digest(d)),
        None => root_reference(files.path(), &[], d),
    }
}

fn add_image(
    files: &Files,
    parts: &mut Parts,
    named: &mut Vec<(Reference, Digest, bool)>,
    img: &Image,
) -> Result<(), ForeignError> {
    let md = digest(files, &img.manifest.digest, "manifest.json Manifest")?;
    parts.manifests.insert(
        md.clone(),
        Bytes::from(img.manifest.raw.clone().into_bytes()),
    );
    let cd = digest(files, &img.config.digest, "manifest.json Config")?;
    parts.blobs.insert(
        cd,
        Loc::Memory(Bytes::from(img.config.raw.clone().into_bytes())),
    );
    for layer in &img.layers {
        let ld = digest(files, &layer.digest, "manifest.json Layers")?;
        let entry = format!("{}-{}.tar.gz", ld.algorithm().name(), ld.hex());
        if let Some(loc) = files.loc(&entry)? {
            parts.blobs.insert(ld, loc);
        }
    }
    let r = name(files, &img.orig_ref, &img.refs, &img.tag, &md)?;
    named.push((r, md, is_root(&img.labels)));
    Ok(())
}

fn add_index(
    files: &Files,
    parts: &mut Parts,
    named: &mut Vec<(Reference, Digest, bool)>,
    idx: &Index,
    depth: usize,
) -> Result<(), ForeignError> {
    if depth > MAX_NESTING {
        return Err(ForeignError::Hostile {
            file: files.path().to_path_buf(),
            reason: format!("manifest.json nests indexes deeper than {MAX_NESTING}"),
        });
    }
    let d = digest(files, &idx.digest, "manifest.json ImageIndex")?;
    parts
        .manifests
        .insert(d.clone(), Bytes::from(idx.raw.clone().into_bytes()));
    // Children are found through the index itself; only the top is a candidate root.
    let mut children = Vec::new();
    for img in &idx.images {
        add_image(files, parts, &mut children, img)?;
    }
    for sub in &idx.indexes {
        add_index(files, parts, &mut children, sub, depth + 1)?;
    }
    let r = name(files, &idx.orig_ref, &idx.refs, &idx.tag, &d)?;
    named.push((r, d, is_root(&idx.labels)));
    Ok(())
}
