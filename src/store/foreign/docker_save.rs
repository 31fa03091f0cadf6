//! `docker save` tars: a `manifest.json` list of `{Config, RepoTags, Layers}` naming files of
//! the tar. There is no registry manifest inside, so one OCI manifest is written per image:
//! the config keeps its bytes (and digest), each layer is the uncompressed tar docker saved,
//! addressed by the config's `rootfs.diff_ids` and verified against it as it streams.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::tarfile::normalize;
use super::{Files, ForeignError, MAX_JSON, Parts, root_reference};
use crate::digest::Digest;
use crate::oci::media_type;
use crate::reference::Reference;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

#[derive(Deserialize)]
struct Config {
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    media_type: &'static str,
    config: Desc,
    layers: Vec<Desc>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Desc {
    media_type: &'static str,
    digest: String,
    size: u64,
}

pub(super) fn parse(files: &Files) -> Result<Parts, ForeignError> {
    let path = files.path();
    let invalid = |what: String, reason: String| ForeignError::Invalid {
        file: path.to_path_buf(),
        what,
        reason,
    };
    let bytes = files.read_small("manifest.json", MAX_JSON)?;
    let entries: Vec<Entry> = serde_json::from_slice(&bytes).map_err(|e| {
        invalid(
            "manifest.json".into(),
            format!("neither docker save's (Config, RepoTags, Layers) nor imgpkg's manifest: {e}"),
        )
    })?;
    let mut parts = Parts {
        roots: Vec::new(),
        manifests: Default::default(),
        blobs: Default::default(),
        identity: bytes.clone(),
    };
    let entry_name = |name: &str| {
        normalize(name).map_err(|r| ForeignError::Hostile {
            file: path.to_path_buf(),
            reason: format!("manifest.json names {name:?}: {r}"),
        })
    };
    for e in &entries {
        let config_name = entry_name(&e.config)?;
        let config_bytes = files.read_small(&config_name, MAX_JSON)?;
        let config_digest = Digest::sha256_of(&config_bytes);
        let config: Config = serde_json::from_slice(&config_bytes)
            .map_err(|err| invalid(config_name.clone(), format!("not an image config: {err}")))?;
        if config.rootfs.diff_ids.len() != e.layers.len() {
            return Err(invalid(
                config_name,
                format!(
                    "lists {} diff_ids for {} layers in manifest.json",
                    config.rootfs.diff_ids.len(),
                    e.layers.len()
                ),
            ));
        }
        let mut layers = Vec::new();
        for (layer, diff_id) in e.layers.iter().zip(&config.rootfs.diff_ids) {
            let name = entry_name(layer)?;
            let d: Digest = diff_id.parse().map_err(|err| {
                invalid(config_name.clone(), format!("diff_id {diff_id:?}: {err}"))
            })?;
            let loc = files.loc(&name)?.ok_or_else(|| ForeignError::Missing {
                file: path.to_path_buf(),
                what: format!("layer {name} (named by manifest.json)"),
            })?;
            layers.push(Desc {
                media_type: media_type::OCI_LAYER_TAR,
                digest: d.to_string(),
                size: loc.size(),
            });
            parts.blobs.insert(d, loc);
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: media_type::OCI_MANIFEST,
            config: Desc {
                media_type: media_type::OCI_CONFIG,
                digest: config_digest.to_string(),
                size: config_bytes.len() as u64,
            },
            layers,
        };
        let manifest_bytes = serde_json::to_vec(&manifest)
            .map_err(|err| invalid("manifest".into(), err.to_string()))?;
        let md = Digest::sha256_of(&manifest_bytes);
        parts
            .blobs
            .insert(config_digest, super::Loc::Memory(Bytes::from(config_bytes)));
        parts
            .manifests
            .insert(md.clone(), Bytes::from(manifest_bytes));
        let tags = e.repo_tags.clone().unwrap_or_default();
        let mut any = false;
        for t in &tags {
            if let Ok(r) = Reference::parse(t) {
                parts.roots.push((r, md.clone()));
                any = true;
            }
        }
        if !any {
            parts.roots.push((root_reference(path, &[], &md)?, md));
        }
    }
    Ok(parts)
}
