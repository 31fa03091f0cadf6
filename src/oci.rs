//! OCI and Docker manifest types, kept next to their exact bytes.
//!
//! Manifests are never re-serialised: their digest is the digest of the bytes the
//! registry served, so parsing only looks inside to find children.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// Media types airlift reads and writes.
pub mod media_type {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// Docker schema 2 manifest (imgpkg bundles use it).
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Docker gzip layer: the only layer type imgpkg accepts in a bundle.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// OCI gzip layer.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// OCI uncompressed layer.
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

    /// Every manifest type, in the order sent in `Accept` (the distribution registry answers 404 without them).
    pub const ALL_MANIFESTS: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

    /// Whether `mt` names an index or manifest list.
    pub fn is_index(mt: &str) -> bool {
        mt == OCI_INDEX || mt == DOCKER_LIST
    }

    /// Whether `mt` names any manifest or index.
    pub fn is_manifest(mt: &str) -> bool {
        ALL_MANIFESTS.contains(&mt)
    }
}

/// The platform an index entry is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
pub struct Platform {
    /// CPU architecture (`amd64`, `arm64`, …).
    pub architecture: String,
    /// Operating system (`linux`, …).
    pub os: String,
    /// CPU variant (`v8`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// OS version, if any.
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A content descriptor: what a parent says about a child.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// Media type of the child.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// Digest of the child's bytes.
    pub digest: Digest,
    /// Length of the child's bytes.
    pub size: u64,
    /// Platform (index entries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Why manifest bytes could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON, or JSON of the wrong shape.
    #[error("manifest {digest} is not a valid image manifest or index: {source}")]
    Json {
        /// The manifest concerned.
        digest: Digest,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A media type airlift does not handle.
    #[error("manifest {digest} has unsupported media type {media_type:?}")]
    MediaType {
        /// The manifest concerned.
        digest: Digest,
        /// The media type found.
        media_type: String,
    },
}

#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
    config: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ImageManifestJson {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct IndexJson {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

/// What a parsed manifest points at.
#[derive(Debug, Clone)]
pub enum Parsed {
    /// An image manifest: config and layers.
    Image {
        /// The config blob.
        config: Descriptor,
        /// The layer blobs, in order.
        layers: Vec<Descriptor>,
    },
    /// An index: child manifests (all platforms).
    Index {
        /// The child manifests.
        manifests: Vec<Descriptor>,
    },
}

/// A manifest or index with its exact bytes, media type and digest.
#[derive(Debug, Clone)]
pub struct RawManifest {
    /// The exact bytes as served/stored.
    pub bytes: Bytes,
    /// Its media type.
    pub media_type: String,
    /// sha256 of `bytes`.
    pub digest: Digest,
    /// What it points at.
    pub parsed: Parsed,
}

impl RawManifest {
    /// Parses manifest bytes; `declared` is the media type the registry or parent gave, if any.
    pub fn from_bytes(bytes: Bytes, declared: Option<&str>) -> Result<RawManifest, ManifestError> {
        let digest = Digest::sha256_of(&bytes);
        let json_err = |source| ManifestError::Json {
            digest: digest.clone(),
            source,
        };
        let probe: Probe = serde_json::from_slice(&bytes).map_err(json_err)?;
        // The body's own mediaType wins; then the declared one; then the shape.
        let media_type = match (probe.media_type, declared) {
            (Some(mt), _) => mt,
            (None, Some(d)) if media_type::is_manifest(d) => d.to_owned(),
            (None, _) if probe.manifests.is_some() => media_type::OCI_INDEX.to_owned(),
            (None, _) if probe.config.is_some() => media_type::OCI_MANIFEST.to_owned(),
            (None, _) => String::new(),
        };
        let parsed = if media_type::is_index(&media_type) {
            let idx: IndexJson = serde_json::from_slice(&bytes).map_err(json_err)?;
            Parsed::Index {
                manifests: idx.manifests,
            }
        } else if media_type == media_type::OCI_MANIFEST
            || media_type == media_type::DOCKER_MANIFEST
        {
            let m: ImageManifestJson = serde_json::from_slice(&bytes).map_err(json_err)?;
            Parsed::Image {
                config: m.config,
                layers: m.layers,
            }
        } else {
            return Err(ManifestError::MediaType { digest, media_type });
        };
        Ok(RawManifest {
            bytes,
            media_type,
            digest,
            parsed,
        })
    }

    /// A descriptor for this manifest, as a parent would name it.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.bytes.len() as u64,
            platform: None,
            annotations: None,
        }
    }

    /// Whether this is an index or manifest list.
    pub fn is_index(&self) -> bool {
        matches!(self.parsed, Parsed::Index { .. })
    }

    /// Child manifests (index) — empty for an image manifest.
    pub fn child_manifests(&self) -> &[Descriptor] {
        match &self.parsed {
            Parsed::Index { manifests } => manifests,
            Parsed::Image { .. } => &[],
        }
    }

    /// Config then layers (image manifest) — empty for an index.
    pub fn blobs(&self) -> Vec<&Descriptor> {
        match &self.parsed {
            Parsed::Image { config, layers } => std::iter::once(config).chain(layers).collect(),
            Parsed::Index { .. } => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_manifest_children() {
        let bytes = Bytes::from_static(br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":317,"digest":"sha256:7186f2a73c413e28303e9529e1a975bab7d57a9ce40cef6e3fddc305105b4bfa"},"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":1048,"digest":"sha256:09ce40cee9f04c7c4a5c4a21754b9bab3bbe80244adb20f2d104d12ce147d6e7"}]}"#);
        let m = RawManifest::from_bytes(bytes.clone(), None).unwrap();
        assert_eq!(m.media_type, media_type::DOCKER_MANIFEST);
        assert_eq!(m.blobs().len(), 2);
        assert_eq!(m.blobs()[1].size, 1048);
        assert_eq!(m.digest, Digest::sha256_of(&bytes));
        assert!(!m.is_index());
    }

    #[test]
    fn oci_index_without_media_type_is_recognised() {
        let bytes = Bytes::from_static(br#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":7,"digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","platform":{"architecture":"arm64","os":"linux","variant":"v8"}}]}"#);
        let m = RawManifest::from_bytes(bytes, None).unwrap();
        assert!(m.is_index());
        let p = m.child_manifests()[0].platform.as_ref().unwrap();
        assert_eq!(p.to_string(), "linux/arm64/v8");
    }

    #[test]
    fn garbage_is_refused() {
        assert!(RawManifest::from_bytes(Bytes::from_static(b"{"), None).is_err());
        assert!(
            RawManifest::from_bytes(Bytes::from_static(br#"{"mediaType":"text/plain"}"#), None)
                .is_err()
        );
    }
}
