//! The metadata images written next to a relocated bundle, so that `pull` can find its images.
//!
//! - both layouts: imgpkg's locations image, tagged `sha256-<bundle hex>.image-locations.imgpkg`,
//!   listing each locked image's original reference (imgpkg then looks for it in the bundle's
//!   repository, which hosts every locked image).
//! - `--to-registry` also: airlift's relocations image, tagged
//!   `sha256-<bundle hex>.image-relocations.airlift`, mapping each locked image's original
//!   reference to where its path-keeping copy lives (documented in `format-spec/relocation.md`).

use bytes::Bytes;

use super::TransferError;
use super::place::{Destination, Placement, imgpkg_tag};
use crate::author::bundle::{SmallImage, locations_image, single_file_layer_tar, small_image};
use crate::graph::{Graph, Kind};
use crate::store::registry::ExtraImage;
use std::collections::BTreeMap;

use crate::author::lock::{BundleLock, ImageLocations, ImageRelocations, ImagesLock, LockedImage};
use crate::digest::Digest;
use crate::oci::{Descriptor, RawManifest, media_type};

pub use crate::author::lock::{RELOCATIONS_FILE, RELOCATIONS_TAG_SUFFIX};
/// Tag suffix of imgpkg's locations image.
pub const LOCATIONS_TAG_SUFFIX: &str = ".image-locations.imgpkg";

fn extra(repo: &str, tags: Vec<String>, img: SmallImage) -> Result<ExtraImage, TransferError> {
    let mut image = image_of(repo, img)?;
    image.tags = tags;
    image.tags.push(imgpkg_tag(&image.manifest.digest));
    Ok(image)
}

/// A small image (one config, one gzip layer) as something the registry sink can push.
pub(crate) fn image_of(repo: &str, img: SmallImage) -> Result<ExtraImage, TransferError> {
    let manifest =
        RawManifest::from_bytes(Bytes::from(img.manifest), Some(media_type::DOCKER_MANIFEST))?;
    let config = Descriptor {
        media_type: media_type::DOCKER_CONFIG.to_owned(),
        digest: Digest::sha256_of(&img.config),
        size: img.config.len() as u64,
        platform: None,
        annotations: None,
    };
    let layer = Descriptor {
        media_type: media_type::DOCKER_LAYER_GZIP.to_owned(),
        digest: img.layer_info.digest.clone(),
        size: img.layer.len() as u64,
        platform: None,
        annotations: None,
    };
    Ok(ExtraImage {
        repo: repo.to_owned(),
        tags: Vec::new(),
        manifest,
        blobs: vec![
            (config, Bytes::from(img.config)),
            (layer, Bytes::from(img.layer)),
        ],
    })
}

/// The metadata images every bundle in `graph` needs at the destination.
pub fn metadata_images(
    graph: &Graph,
    placement: &Placement,
    dest: &Destination,
) -> Result<Vec<ExtraImage>, TransferError> {
    let mut out = Vec::new();
    for lock in &graph.bundle_locks {
        let Some(bundle_repos) = placement.manifest_repos.get(&lock.bundle) else {
            continue;
        };
        let is_bundle = |image: &str| {
            graph
                .locked
                .iter()
                .any(|l| l.locked_by == lock.bundle && l.image == image && l.kind == Kind::Bundle)
        };
        for repo in bundle_repos {
            // imgpkg's locations image, in both layouts: with it the stock imgpkg rewrites the
            // lock to the bundle's repository, which hosts every locked image.
            let locs = ImageLocations::new(
                lock.entries
                    .iter()
                    .map(|(image, _)| (image.clone(), is_bundle(image))),
            );
            let img = locations_image(&locs)?;
            let tag = format!("{}{LOCATIONS_TAG_SUFFIX}", lock.bundle.tag_form());
            out.push(extra(repo, vec![tag], img)?);
            if let Destination::Registry(_) = dest {
                let doc = ImageRelocations::new(lock.entries.iter().filter_map(|(image, _)| {
                    placement
                        .mapping
                        .get(image)
                        .map(|to| (image.clone(), to.to_string()))
                }));
                let text = doc.to_yaml()?;
                let tar = single_file_layer_tar(RELOCATIONS_FILE, text.as_bytes())?;
                let img = small_image(&tar)?;
                let tag = format!("{}{RELOCATIONS_TAG_SUFFIX}", lock.bundle.tag_form());
                out.push(extra(repo, vec![tag], img)?);
            }
        }
    }
    Ok(out)
}

/// The relocated lock text for an imported graph (what `--lock-output` writes).
pub fn relocated_lock_yaml(graph: &Graph, placement: &Placement) -> Result<String, TransferError> {
    let to = |original: &str| -> Result<String, TransferError> {
        placement
            .mapping
            .get(original)
            .map(|r| r.to_string())
            .ok_or_else(|| TransferError::Graph(format!("no destination recorded for {original}")))
    };
    Ok(match graph.roots.as_slice() {
        [root] if root.kind == Kind::Bundle => BundleLock::new(
            to(root.reference.original())?,
            root.reference.tag().unwrap_or_default(),
        )
        .to_yaml(),
        roots => {
            let mut images = Vec::new();
            for r in roots {
                images.push(LockedImage {
                    image: to(r.reference.original())?,
                    annotations: BTreeMap::from([(
                        "kbld.carvel.dev/id".to_owned(),
                        r.reference.original().to_owned(),
                    )]),
                });
            }
            ImagesLock::new(images).to_yaml()
        }
    })
}
