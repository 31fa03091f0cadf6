//! imgpkg lock files: `ImagesLock` (`.imgpkg/images.yml`), `BundleLock` and `ImageLocations`.
//!
//! Parsing is as strict as imgpkg's (unknown keys are errors, every image is a digest
//! reference) and writing is byte-identical to imgpkg/kbld's Go yaml.v2 output.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::AuthorError;
use crate::reference::Reference;
use crate::yaml::{self, Limits, Node};

/// The `apiVersion` of every imgpkg lock.
pub const API_VERSION: &str = "imgpkg.carvel.dev/v1alpha1";
/// Annotation holding the exact reference text as written in the configuration.
pub const ID_ANNOTATION: &str = "kbld.carvel.dev/id";
/// Annotation holding the YAML list of origins kbld recorded.
pub const ORIGINS_ANNOTATION: &str = "kbld.carvel.dev/origins";

/// `.imgpkg/images.yml`: the images a bundle needs, pinned by digest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagesLock {
    /// Must be [`API_VERSION`].
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// Must be `ImagesLock`.
    pub kind: String,
    /// The pinned images, in file order.
    #[serde(default)]
    pub images: Vec<LockedImage>,
}

/// One pinned image of an [`ImagesLock`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedImage {
    /// A digest reference.
    pub image: String,
    /// kbld's annotations (`kbld.carvel.dev/id`, `kbld.carvel.dev/origins`, …).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// `imgpkg push --lock-output`: which bundle was pushed, by digest and tag.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleLock {
    /// Must be [`API_VERSION`].
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// Must be `BundleLock`.
    pub kind: String,
    /// The bundle.
    pub bundle: BundleRef,
}

/// The bundle named by a [`BundleLock`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleRef {
    /// A digest reference.
    pub image: String,
    /// The tag it was pushed with.
    #[serde(default)]
    pub tag: String,
}

/// `image-locations.yml` in the locations image written by relocation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageLocations {
    /// Must be [`API_VERSION`].
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// Must be `ImageLocations`.
    pub kind: String,
    /// The original locations of every image the bundle carries.
    #[serde(default)]
    pub images: Vec<ImageLocation>,
}

/// One entry of [`ImageLocations`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageLocation {
    /// The original digest reference.
    pub image: String,
    /// Whether the image is itself a bundle.
    #[serde(rename = "isBundle")]
    pub is_bundle: bool,
}

fn check_header(api: &str, kind: &str, want: &str, name: &Path) -> Result<(), AuthorError> {
    if api != API_VERSION {
        return Err(AuthorError::InvalidLock {
            path: name.to_owned(),
            message: format!("expected apiVersion {API_VERSION:?}, found {api:?}"),
        });
    }
    if kind != want {
        return Err(AuthorError::InvalidLock {
            path: name.to_owned(),
            message: format!("expected kind {want:?}, found {kind:?}"),
        });
    }
    Ok(())
}

/// Parses `text` as a digest reference, or explains that a lock needs one.
pub fn digest_reference(text: &str, name: &Path) -> Result<Reference, AuthorError> {
    let r = Reference::parse(text).map_err(|e| AuthorError::InvalidLock {
        path: name.to_owned(),
        message: e.to_string(),
    })?;
    if r.digest().is_none() {
        return Err(AuthorError::InvalidLock {
            path: name.to_owned(),
            message: format!("expected image {text:?} to be a digest reference (…@sha256:…)"),
        });
    }
    Ok(r)
}

impl ImagesLock {
    /// An empty lock with the right header.
    pub fn new(images: Vec<LockedImage>) -> Self {
        ImagesLock {
            api_version: API_VERSION.to_owned(),
            kind: "ImagesLock".to_owned(),
            images,
        }
    }

    /// Parses and validates lock text; `name` is used in errors.
    pub fn parse(text: &str, name: &Path, limits: &Limits) -> Result<Self, AuthorError> {
        let lock: ImagesLock = yaml::parse_typed(text, name, limits)?;
        lock.validate(name)?;
        Ok(lock)
    }

    /// Reads and validates a lock file.
    pub fn read(path: &Path, limits: &Limits) -> Result<Self, AuthorError> {
        let text = yaml::read_text(path, limits)?;
        Self::parse(&text, path, limits)
    }

    /// Checks header and that every image is a digest reference.
    pub fn validate(&self, name: &Path) -> Result<(), AuthorError> {
        check_header(&self.api_version, &self.kind, "ImagesLock", name)?;
        for img in &self.images {
            digest_reference(&img.image, name)?;
        }
        Ok(())
    }

    /// The lock as a YAML tree (omitting empty fields like Go's `omitempty`).
    pub fn to_node(&self) -> Node {
        let mut top = vec![("apiVersion".to_owned(), Node::str(&self.api_version))];
        if !self.images.is_empty() {
            let images = self
                .images
                .iter()
                .map(|i| {
                    let mut e = Vec::new();
                    if !i.annotations.is_empty() {
                        let anns = i
                            .annotations
                            .iter()
                            .map(|(k, v)| (k.clone(), Node::str(v)))
                            .collect();
                        e.push(("annotations".to_owned(), Node::Map(anns)));
                    }
                    e.push(("image".to_owned(), Node::str(&i.image)));
                    Node::Map(e)
                })
                .collect();
            top.push(("images".to_owned(), Node::Seq(images)));
        }
        top.push(("kind".to_owned(), Node::str(&self.kind)));
        Node::Map(top)
    }

    /// The file bytes exactly as kbld/imgpkg write them (`---` header, sorted keys).
    pub fn to_yaml(&self) -> String {
        yaml::to_yaml_stream([&self.to_node()])
    }
}

impl BundleLock {
    /// A lock for `image` (a digest reference) pushed as `tag`.
    pub fn new(image: impl Into<String>, tag: impl Into<String>) -> Self {
        BundleLock {
            api_version: API_VERSION.to_owned(),
            kind: "BundleLock".to_owned(),
            bundle: BundleRef {
                image: image.into(),
                tag: tag.into(),
            },
        }
    }

    /// Parses and validates lock text.
    pub fn parse(text: &str, name: &Path, limits: &Limits) -> Result<Self, AuthorError> {
        let lock: BundleLock = yaml::parse_typed(text, name, limits)?;
        check_header(&lock.api_version, &lock.kind, "BundleLock", name)?;
        digest_reference(&lock.bundle.image, name)?;
        Ok(lock)
    }

    /// The file bytes exactly as imgpkg writes them.
    pub fn to_yaml(&self) -> String {
        let mut bundle = vec![("image".to_owned(), Node::str(&self.bundle.image))];
        if !self.bundle.tag.is_empty() {
            bundle.push(("tag".to_owned(), Node::str(&self.bundle.tag)));
        }
        yaml::to_yaml_stream([&Node::map([
            ("apiVersion", Node::str(&self.api_version)),
            ("bundle", Node::Map(bundle)),
            ("kind", Node::str(&self.kind)),
        ])])
    }
}

impl ImageLocations {
    /// Locations for `images` (original digest reference, is-bundle), sorted like imgpkg.
    pub fn new(images: impl IntoIterator<Item = (String, bool)>) -> Self {
        let images = sorted_unique(
            images
                .into_iter()
                .map(|(image, is_bundle)| ImageLocation { image, is_bundle }),
            |l| &l.image,
        );
        ImageLocations {
            api_version: API_VERSION.to_owned(),
            kind: "ImageLocations".to_owned(),
            images,
        }
    }

    /// Parses and validates `image-locations.yml` text.
    pub fn parse(text: &str, name: &Path, limits: &Limits) -> Result<Self, AuthorError> {
        let locs: ImageLocations = yaml::parse_typed(text, name, limits)?;
        check_header(&locs.api_version, &locs.kind, "ImageLocations", name)?;
        for i in &locs.images {
            digest_reference(&i.image, name)?;
        }
        Ok(locs)
    }

    /// The file bytes exactly as imgpkg writes them.
    pub fn to_yaml(&self) -> String {
        let mut top = vec![("apiVersion".to_owned(), Node::str(&self.api_version))];
        if !self.images.is_empty() {
            let images = self
                .images
                .iter()
                .map(|i| {
                    Node::map([
                        ("image", Node::str(&i.image)),
                        ("isBundle", Node::Bool(i.is_bundle)),
                    ])
                })
                .collect();
            top.push(("images".to_owned(), Node::Seq(images)));
        }
        top.push(("kind".to_owned(), Node::str(&self.kind)));
        yaml::to_yaml_stream([&Node::Map(top)])
    }
}

/// `image-relocations.yml`: where a bundle's locked images went under `import --to-registry`
/// (format-spec/relocation.md); airlift's counterpart of imgpkg's locations file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRelocations {
    /// `airlift.dev/v1alpha1`.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// `ImageRelocations`.
    pub kind: String,
    /// Sorted by `image`.
    #[serde(default)]
    pub images: Vec<Relocation>,
}

/// One entry of [`ImageRelocations`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Relocation {
    /// The reference as written in the bundle's lock.
    pub image: String,
    /// Where the image now lives (digest reference).
    pub relocated: String,
}

/// apiVersion of airlift's own lock-like documents.
pub const AIRLIFT_API_VERSION: &str = "airlift.dev/v1alpha1";

/// The file inside airlift's relocations image (the one layer holding an [`ImageRelocations`]).
pub const RELOCATIONS_FILE: &str = "image-relocations.yml";
/// Tag suffix of airlift's relocations image, after the bundle's `sha256-<hex>` tag form.
pub const RELOCATIONS_TAG_SUFFIX: &str = ".image-relocations.airlift";

impl ImageRelocations {
    /// A document for `images` (lock reference, new digest reference), sorted and deduplicated.
    pub fn new(images: impl IntoIterator<Item = (String, String)>) -> Self {
        let images = sorted_unique(
            images
                .into_iter()
                .map(|(image, relocated)| Relocation { image, relocated }),
            |r| &r.image,
        );
        ImageRelocations {
            api_version: AIRLIFT_API_VERSION.to_owned(),
            kind: "ImageRelocations".to_owned(),
            images,
        }
    }

    /// Parses strictly (unknown keys, wrong kind, non-digest references are errors).
    pub fn parse(text: &str, name: &Path, limits: &Limits) -> Result<Self, AuthorError> {
        let doc: ImageRelocations = yaml::parse_typed(text, name, limits)?;
        if doc.api_version != AIRLIFT_API_VERSION || doc.kind != "ImageRelocations" {
            return Err(AuthorError::InvalidLock {
                path: name.to_owned(),
                message: format!(
                    "expected apiVersion {AIRLIFT_API_VERSION:?} and kind \"ImageRelocations\", found {:?} and {:?}",
                    doc.api_version, doc.kind
                ),
            });
        }
        for r in &doc.images {
            digest_reference(&r.image, name)?;
            digest_reference(&r.relocated, name)?;
        }
        Ok(doc)
    }

    /// The file bytes.
    pub fn to_yaml(&self) -> Result<String, AuthorError> {
        serde_norway::to_string(self).map_err(|e| AuthorError::InvalidInput {
            path: "image-relocations.yml".into(),
            message: e.to_string(),
        })
    }
}

/// Entries sorted by their image reference, exact repeats once: how imgpkg orders such files.
fn sorted_unique<T: PartialEq>(
    items: impl Iterator<Item = T>,
    key: impl Fn(&T) -> &String,
) -> Vec<T> {
    let mut v: Vec<T> = items.collect();
    v.sort_by(|a, b| key(a).cmp(key(b)));
    v.dedup();
    v
}
