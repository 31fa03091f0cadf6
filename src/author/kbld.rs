//! Building an ImagesLock exactly as `kbld --imgpkg-lock-output` writes it.

use std::collections::BTreeMap;

use super::AuthorError;
use super::lock::{ID_ANNOTATION, ImagesLock, LockedImage, ORIGINS_ANNOTATION};
use crate::reference::Reference;
use crate::yaml::{self, Node};

/// What resolving one original reference produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// The digest reference the original resolved to.
    pub digest_ref: Reference,
    /// The tag that was resolved (`None` when the original was already a digest reference).
    pub tag: Option<String>,
    /// The URL that was resolved (kbld records the original text).
    pub url: String,
}

impl ResolvedImage {
    /// The usual case: `original` resolved to `digest_ref` (which must carry a digest).
    pub fn from_original(original: &str, digest_ref: Reference) -> Result<Self, AuthorError> {
        let parsed = Reference::parse(original)?;
        let tag = if parsed.digest().is_some() {
            None
        } else {
            parsed.tag().map(str::to_owned)
        };
        Ok(ResolvedImage {
            digest_ref,
            tag,
            url: original.to_owned(),
        })
    }
}

/// kbld's origins YAML for a resolved tag: `- resolved:\n    tag: …\n    url: …\n`.
pub fn resolved_origins_yaml(tag: &str, url: &str) -> String {
    yaml::to_yaml_string(&Node::Seq(vec![Node::map([(
        "resolved",
        Node::map([("tag", Node::str(tag)), ("url", Node::str(url))]),
    )])]))
}

/// The ImagesLock kbld writes for `resolved` (keyed by the exact original text).
///
/// Entries are sorted by original reference. An original that already is a digest reference
/// gets only `kbld.carvel.dev/id`: kbld records no origins for it (its `DigestedImage` has
/// none) and names it by its full form (`index.docker.io/library/x@sha256:…`).
pub fn images_lock(resolved: &BTreeMap<String, ResolvedImage>) -> Result<ImagesLock, AuthorError> {
    let mut images = Vec::new();
    for (original, r) in resolved {
        let Some(digest) = r.digest_ref.digest() else {
            return Err(AuthorError::InvalidLock {
                path: "<resolved images>".into(),
                message: format!(
                    "{original:?} resolved to {}, not a digest reference",
                    r.digest_ref
                ),
            });
        };
        let image = format!("{}@{}", r.digest_ref.repo_name(), digest);
        let mut annotations = BTreeMap::new();
        annotations.insert(ID_ANNOTATION.to_owned(), original.clone());
        if let Some(tag) = &r.tag {
            annotations.insert(
                ORIGINS_ANNOTATION.to_owned(),
                resolved_origins_yaml(tag, &r.url),
            );
        }
        images.push(LockedImage { image, annotations });
    }
    Ok(ImagesLock::new(images))
}
