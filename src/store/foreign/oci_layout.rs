//! OCI image layouts (image-spec `image-layout.md`), as a directory or a plain tar: roots are
//! the entries of `index.json`, everything else is addressed by digest under `blobs/`.

use bytes::Bytes;

use super::{Files, ForeignError, Loc, Lookup, MAX_JSON, Parts, root_reference};
use crate::archive::manifest::REF_NAME;
use crate::digest::Digest;
use crate::oci::RawManifest;

/// The annotation containerd (and `docker save` since 25) names an image by.
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";

fn blob_name(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().name(), d.hex())
}

/// Finds manifests and blobs by digest, as the layout addresses them.
pub(super) struct ByDigest(pub(super) Files);

impl Lookup for ByDigest {
    fn manifest(&self, d: &Digest) -> Result<Option<Bytes>, ForeignError> {
        let name = blob_name(d);
        match self.0.loc(&name)? {
            None => Ok(None),
            Some(loc) => {
                super::read_loc(self.0.path(), &loc, MAX_JSON, &name).map(|b| Some(Bytes::from(b)))
            }
        }
    }

    fn blob(&self, d: &Digest) -> Result<Option<Loc>, ForeignError> {
        self.0.loc(&blob_name(d))
    }
}

/// Reads `oci-layout` and `index.json` and names the roots.
pub(super) fn parse(files: &Files) -> Result<Parts, ForeignError> {
    let path = files.path();
    let invalid = |what: &str, reason: String| ForeignError::Invalid {
        file: path.to_path_buf(),
        what: what.into(),
        reason,
    };
    let marker = files.read_small(crate::archive::OCI_LAYOUT, crate::archive::MAX_OCI_LAYOUT)?;
    let marker: serde_json::Value = serde_json::from_slice(&marker)
        .map_err(|e| invalid("oci-layout", format!("invalid JSON: {e}")))?;
    match marker.get("imageLayoutVersion").and_then(|v| v.as_str()) {
        Some(v) if v.starts_with("1.") => {}
        other => {
            return Err(invalid(
                "oci-layout",
                format!("imageLayoutVersion {other:?}: only 1.x layouts are read"),
            ));
        }
    }
    let index_bytes = files.read_small(crate::archive::INDEX_JSON, MAX_JSON)?;
    let index = RawManifest::from_bytes(
        Bytes::from(index_bytes.clone()),
        Some(crate::oci::media_type::OCI_INDEX),
    )
    .map_err(|e| invalid("index.json", e.to_string()))?;
    if !index.is_index() {
        return Err(invalid(
            "index.json",
            format!("is a {}, not an image index", index.media_type),
        ));
    }
    let mut roots = Vec::new();
    for d in index.child_manifests() {
        let a = d.annotations.as_ref();
        let names: Vec<&str> = [CONTAINERD_NAME, REF_NAME]
            .iter()
            .filter_map(|k| a.and_then(|a| a.get(*k)).map(String::as_str))
            .collect();
        roots.push((root_reference(path, &names, &d.digest)?, d.digest.clone()));
    }
    Ok(Parts {
        roots,
        manifests: Default::default(),
        blobs: Default::default(),
        identity: index_bytes,
    })
}
