//! `kbld -f config -f images.yml`, offline: pin every image reference using a lock.
//!
//! The lock's entries are overrides keyed by `kbld.carvel.dev/id`; each changed resource gets
//! kbld's `kbld.k14s.io/images` annotation (with a `preresolved` origin appended) and every
//! document is re-serialised with sorted keys, byte-compatible with kbld's output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::AuthorError;
use super::lock::{ID_ANNOTATION, ImagesLock, LockedImage, ORIGINS_ANNOTATION, digest_reference};
use super::scan::{visit_refs_mut, yaml_files};
use crate::reference::Reference;
use crate::yaml::{self, Limits, Node};

/// Annotation kbld puts on every resource whose images it changed.
pub const IMAGES_ANNOTATION: &str = "kbld.k14s.io/images";

/// How to rewrite.
#[derive(Debug, Clone, Default)]
pub struct RewriteOptions {
    /// Keys searched in addition to `image`.
    pub extra_keys: Vec<String>,
    /// Leave references missing from the lock unchanged instead of failing.
    pub allow_unlocked: bool,
    /// Bounds on every YAML file read.
    pub limits: Limits,
}

struct Override {
    image: String,
    origins: Vec<Node>,
}

/// Rewrites the YAML files under `paths` (documents of kind ImagesLock among them are used as
/// locks and dropped from the output), plus `locks`; returns the multi-document output.
pub fn rewrite_paths(
    paths: &[PathBuf],
    locks: &[ImagesLock],
    opts: &RewriteOptions,
) -> Result<String, AuthorError> {
    let mut docs = Vec::new();
    for file in yaml_files(paths)? {
        for (i, node) in yaml::load_file(&file, &opts.limits)?
            .into_iter()
            .enumerate()
        {
            docs.push((file.clone(), i, node));
        }
    }
    rewrite_documents(docs, locks, opts)
}

/// Rewrites parsed documents `(file, index, node)`; see [`rewrite_paths`].
pub fn rewrite_documents(
    docs: Vec<(PathBuf, usize, Node)>,
    locks: &[ImagesLock],
    opts: &RewriteOptions,
) -> Result<String, AuthorError> {
    let mut all_locks: Vec<ImagesLock> = locks.to_vec();
    let mut resources = Vec::new();
    for (file, i, node) in docs {
        if node == Node::Null {
            continue;
        }
        if node.get("kind").and_then(Node::as_str) == Some("ImagesLock") {
            all_locks.push(lock_from_node(&node, &file, i)?);
        } else {
            resources.push(node);
        }
    }
    let mut overrides: BTreeMap<String, Override> = BTreeMap::new();
    for lock in &all_locks {
        for img in &lock.images {
            let Some(id) = img.annotations.get(ID_ANNOTATION) else {
                continue;
            };
            let origins = match img.annotations.get(ORIGINS_ANNOTATION) {
                Some(text) => parse_origins(text, &opts.limits)?,
                None => Vec::new(),
            };
            overrides.insert(
                id.clone(),
                Override {
                    image: img.image.clone(),
                    origins,
                },
            );
        }
    }

    let mut missing: Vec<String> = Vec::new();
    for res in &mut resources {
        let mut images: Vec<(String, Vec<Node>)> = Vec::new();
        visit_refs_mut(res, &opts.extra_keys, &mut |text| {
            if let Some(o) = overrides.get(text) {
                let mut origins = o.origins.clone();
                origins.push(Node::map([(
                    "preresolved",
                    Node::map([("url", Node::str(&o.image))]),
                )]));
                images.push((o.image.clone(), origins));
                return Some(o.image.clone());
            }
            if let Ok(r) = Reference::parse(text)
                && r.digest().is_some()
            {
                // kbld keeps a digest reference, naming it by its full form.
                let full = r.to_string();
                images.push((full.clone(), Vec::new()));
                return Some(full);
            }
            if !opts.allow_unlocked && !missing.iter().any(|m| m == text) {
                missing.push(text.to_owned());
            }
            None
        });
        if !images.is_empty() {
            images.sort_by(|a, b| a.0.cmp(&b.0));
            annotate(res, &images);
        }
    }
    if !missing.is_empty() {
        return Err(AuthorError::Unlocked(missing));
    }
    Ok(yaml::to_yaml_stream(resources.iter()))
}

fn parse_origins(text: &str, limits: &Limits) -> Result<Vec<Node>, AuthorError> {
    let docs = yaml::parse_documents(text, Path::new(ORIGINS_ANNOTATION), limits)?;
    Ok(match docs.into_iter().next() {
        Some(Node::Seq(items)) => items,
        _ => Vec::new(),
    })
}

fn annotate(res: &mut Node, images: &[(String, Vec<Node>)]) {
    let list = Node::Seq(
        images
            .iter()
            .map(|(url, origins)| {
                let mut m = Vec::new();
                if !origins.is_empty() {
                    m.push(("origins".to_owned(), Node::Seq(origins.clone())));
                }
                m.push(("url".to_owned(), Node::str(url)));
                Node::Map(m)
            })
            .collect(),
    );
    let text = yaml::to_yaml_string(&list);
    if !matches!(res, Node::Map(_)) {
        return;
    }
    if !matches!(res.get("metadata"), Some(Node::Map(_))) {
        res.insert("metadata", Node::Map(Vec::new()));
    }
    let Some(meta) = res.get_mut("metadata") else {
        return;
    };
    if !matches!(meta.get("annotations"), Some(Node::Map(_))) {
        meta.insert("annotations", Node::Map(Vec::new()));
    }
    if let Some(anns) = meta.get_mut("annotations") {
        anns.insert(IMAGES_ANNOTATION, Node::Str(text));
    }
}

/// Reads an ImagesLock out of an already-parsed document, as strictly as [`ImagesLock::parse`].
pub fn lock_from_node(node: &Node, file: &Path, doc: usize) -> Result<ImagesLock, AuthorError> {
    let name = PathBuf::from(format!("{} (document {doc})", file.display()));
    let bad = |message: String| AuthorError::InvalidLock {
        path: name.clone(),
        message,
    };
    let Node::Map(entries) = node else {
        return Err(bad("expected a mapping".to_owned()));
    };
    let text_of = |n: &Node, what: &str| {
        n.as_str()
            .map(str::to_owned)
            .ok_or_else(|| bad(format!("{what} must be a string")))
    };
    let (mut api, mut kind, mut images) = (None, None, Vec::new());
    for (k, v) in entries {
        match k.as_str() {
            "apiVersion" => api = Some(text_of(v, "apiVersion")?),
            "kind" => kind = Some(text_of(v, "kind")?),
            "images" => {
                let items = match v {
                    Node::Seq(items) => items.as_slice(),
                    Node::Null => &[],
                    _ => return Err(bad("images must be a list".to_owned())),
                };
                for item in items {
                    let Node::Map(fields) = item else {
                        return Err(bad("each image must be a mapping".to_owned()));
                    };
                    let mut image = None;
                    let mut annotations = BTreeMap::new();
                    for (fk, fv) in fields {
                        match fk.as_str() {
                            "image" => image = Some(text_of(fv, "image")?),
                            "annotations" => {
                                let Node::Map(anns) = fv else {
                                    return Err(bad("annotations must be a mapping".to_owned()));
                                };
                                for (ak, av) in anns {
                                    annotations.insert(ak.clone(), text_of(av, ak)?);
                                }
                            }
                            other => return Err(bad(format!("unknown field {other:?} in image"))),
                        }
                    }
                    let image = image.ok_or_else(|| bad("image entry without image".to_owned()))?;
                    digest_reference(&image, &name)?;
                    images.push(LockedImage { image, annotations });
                }
            }
            other => return Err(bad(format!("unknown field {other:?}"))),
        }
    }
    let lock = ImagesLock {
        api_version: api.unwrap_or_default(),
        kind: kind.unwrap_or_default(),
        images,
    };
    lock.validate(&name)?;
    Ok(lock)
}
