//! Artifacts about an image (signatures, attestations, SBOMs) and how they are found and named.
//!
//! Two conventions coexist: cosign's tag scheme (`sha256-<hex>.sig`, `.att`, `.sbom` next to
//! the image) and OCI 1.1 referrers (a manifest whose `subject` names the image), listed by the
//! referrers API or, where a registry has none, by an image index tagged `sha256-<hex>` (the
//! referrers tag schema). Both are graph nodes with an edge to their subject; this module holds
//! the pure decisions (what an artifact is, which tag it lives at, how an index is merged), the
//! registry work lives in [`crate::transfer::referrers`] and [`crate::store::registry`].

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::oci::{Descriptor, media_type};

/// Nesting of referrers followed (a signature of an attestation of an image is depth 2).
pub const MAX_DEPTH: usize = 4;

/// Artifact type of cosign v3's sigstore bundle referrers.
pub const SIGSTORE_BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

/// Layer media type of cosign's legacy simple-signing signatures.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

/// Annotation of a simple-signing layer holding the base64 DER signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// What an artifact is to its subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReferrerKind {
    /// A signature (cosign `.sig`, a sigstore bundle).
    Signature,
    /// An attestation (cosign `.att`, in-toto).
    Attestation,
    /// A software bill of materials (cosign `.sbom`, SPDX, CycloneDX).
    Sbom,
    /// Any other artifact type.
    Artifact,
}

impl ReferrerKind {
    /// The name used by `--referrers-type` and `inspect`.
    pub fn name(self) -> &'static str {
        match self {
            ReferrerKind::Signature => "signature",
            ReferrerKind::Attestation => "attestation",
            ReferrerKind::Sbom => "sbom",
            ReferrerKind::Artifact => "artifact",
        }
    }

    /// The kind a cosign tag suffix (`sig`, `att`, `sbom`) names.
    pub fn of_cosign_suffix(suffix: &str) -> Option<ReferrerKind> {
        match suffix {
            "sig" => Some(ReferrerKind::Signature),
            "att" => Some(ReferrerKind::Attestation),
            "sbom" => Some(ReferrerKind::Sbom),
            _ => None,
        }
    }

    /// The kind an OCI 1.1 artifact type suggests.
    pub fn of_artifact_type(t: &str) -> ReferrerKind {
        let t = t.to_ascii_lowercase();
        if t.contains("sigstore.bundle") || t.contains("signature") || t == SIMPLE_SIGNING {
            ReferrerKind::Signature
        } else if t.contains("in-toto") || t.contains("intoto") || t.contains("attestation") {
            ReferrerKind::Attestation
        } else if t.contains("spdx") || t.contains("cyclonedx") || t.contains("sbom") {
            ReferrerKind::Sbom
        } else {
            ReferrerKind::Artifact
        }
    }
}

/// One artifact and the manifest it is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Referrer {
    /// The artifact's manifest (or index) digest.
    pub digest: Digest,
    /// The manifest or index it is about.
    pub subject: Digest,
    /// Signature, attestation, SBOM or other.
    pub kind: ReferrerKind,
    /// The OCI artifact type (`artifactType`, else the config media type), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The cosign tag it is found at (`sha256-<hex>.sig`), absent for an OCI 1.1 referrer
    /// (found through `subject`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

impl Referrer {
    /// Whether `--referrers-type` values keep this artifact (none given: all are kept); a
    /// value matches the kind name or the artifact type.
    pub fn wanted(&self, types: &[String]) -> bool {
        types.is_empty()
            || types
                .iter()
                .any(|t| t == self.kind.name() || self.artifact_type.as_deref() == Some(t.as_str()))
    }
}

/// The cosign tag for an artifact of `subject` (`sha256-<hex>.sig`).
pub fn cosign_tag(subject: &Digest, suffix: &str) -> String {
    format!("{}.{suffix}", subject.tag_form())
}

/// The referrers tag schema's tag for `subject` (`sha256-<hex>`).
pub fn schema_tag(subject: &Digest) -> String {
    subject.tag_form()
}

/// What an artifact manifest says about itself beyond its children.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArtifactInfo {
    /// `artifactType`, else the config's media type (as the referrers API reports it).
    pub artifact_type: Option<String>,
    /// The `subject` descriptor's digest.
    pub subject: Option<Digest>,
    /// The manifest's own annotations.
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize)]
struct InfoJson {
    #[serde(rename = "artifactType")]
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    subject: Option<Descriptor>,
    annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Reads `artifactType`, `subject` and annotations from manifest bytes (none when unparsable).
pub fn artifact_info(bytes: &[u8]) -> ArtifactInfo {
    match serde_json::from_slice::<InfoJson>(bytes) {
        Ok(j) => ArtifactInfo {
            artifact_type: j
                .artifact_type
                .or_else(|| j.config.map(|c| c.media_type))
                .filter(|t| t != media_type::OCI_CONFIG && t != media_type::DOCKER_CONFIG),
            subject: j.subject.map(|s| s.digest),
            annotations: j.annotations,
        },
        Err(_) => ArtifactInfo::default(),
    }
}

/// Whether an answer to `GET /v2/<name>/referrers/<digest>` shows a registry serving the
/// referrers API: a 200 with an image index. Anything else (Debian's docker-registry 2.8 sends
/// a 404 page; proxies send HTML) means the tag schema must be used.
pub fn api_supported(status: u16, body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Idx {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<Vec<serde_json::Value>>,
    }
    status == 200
        && serde_json::from_slice::<Idx>(body).is_ok_and(|i| {
            i.manifests.is_some()
                && i.media_type
                    .as_deref()
                    .is_none_or(|m| m == media_type::OCI_INDEX)
        })
}

/// The descriptor a referrers list (API answer or tag-schema index) gives an artifact.
pub fn list_entry(
    manifest_media_type: &str,
    digest: &Digest,
    size: u64,
    info: &ArtifactInfo,
) -> serde_json::Value {
    let mut d = serde_json::json!({
        "mediaType": manifest_media_type,
        "digest": digest.to_string(),
        "size": size,
    });
    if let Some(t) = &info.artifact_type {
        d["artifactType"] = serde_json::Value::String(t.clone());
    }
    if let Some(a) = &info.annotations {
        d["annotations"] = serde_json::Value::Object(a.clone());
    }
    d
}

/// Why a tag-schema index could not be merged.
#[derive(Debug, thiserror::Error)]
#[error(
    "the referrers index at tag {tag} is not an OCI image index ({detail}); remove the tag or fix it by hand"
)]
pub struct MergeError {
    /// The tag.
    pub tag: String,
    /// What is wrong.
    pub detail: String,
}

/// The tag-schema index with `add` merged into what `existing` lists: every existing entry is
/// kept as it is, new digests appended. `None` when nothing is new (no push needed).
pub fn merge_schema_index(
    tag: &str,
    existing: Option<&[u8]>,
    add: &[serde_json::Value],
) -> Result<Option<Vec<u8>>, MergeError> {
    let err = |detail: String| MergeError {
        tag: tag.to_owned(),
        detail,
    };
    let mut index = match existing {
        Some(bytes) => {
            serde_json::from_slice::<serde_json::Value>(bytes).map_err(|e| err(e.to_string()))?
        }
        None => serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_INDEX,
            "manifests": [],
        }),
    };
    let list = index
        .get_mut("manifests")
        .and_then(|m| m.as_array_mut())
        .ok_or_else(|| err("no manifests list".into()))?;
    let mut changed = false;
    for entry in add {
        let digest = entry.get("digest");
        if !list.iter().any(|e| e.get("digest") == digest) {
            list.push(entry.clone());
            changed = true;
        }
    }
    if !changed {
        return Ok(None);
    }
    serde_json::to_vec(&index)
        .map(Some)
        .map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        Digest::sha256_of(&[n])
    }

    #[test]
    fn only_an_index_answer_means_the_api_is_there() {
        let empty = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        assert!(api_supported(200, empty));
        assert!(api_supported(200, br#"{"schemaVersion":2,"manifests":[]}"#));
        // docker-registry 2.8: no such route.
        assert!(!api_supported(404, b"404 page not found\n"));
        assert!(!api_supported(200, b"<html>proxy login</html>"));
        assert!(!api_supported(200, br#"{"repositories":[]}"#));
        assert!(!api_supported(401, empty));
        assert!(!api_supported(
            200,
            br#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","manifests":[]}"#
        ));
    }

    #[test]
    fn merging_never_drops_an_existing_referrer() {
        let info = ArtifactInfo {
            artifact_type: Some("application/spdx+json".into()),
            ..Default::default()
        };
        let a = list_entry(media_type::OCI_MANIFEST, &d(1), 10, &info);
        let b = list_entry(media_type::OCI_MANIFEST, &d(2), 20, &info);
        let first = merge_schema_index("t", None, std::slice::from_ref(&a))
            .unwrap()
            .unwrap();
        // Someone else's entry, with a field airlift does not know, stays byte-for-byte.
        let mut other: serde_json::Value = serde_json::from_slice(&first).unwrap();
        other["manifests"].as_array_mut().unwrap().push(
            serde_json::json!({"mediaType":"x","digest":d(3).to_string(),"size":1,"future":true}),
        );
        let other = serde_json::to_vec(&other).unwrap();
        let merged = merge_schema_index("t", Some(&other), &[a.clone(), b.clone()])
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&merged).unwrap();
        let digests: Vec<&str> = v["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["digest"].as_str().unwrap())
            .collect();
        let want = [d(1).to_string(), d(3).to_string(), d(2).to_string()];
        assert_eq!(digests, want.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(v["manifests"][1]["future"], true);
        // Already listed: nothing to push.
        assert!(
            merge_schema_index("t", Some(&merged), &[a, b])
                .unwrap()
                .is_none()
        );
        assert!(merge_schema_index("t", Some(b"[]"), &[]).is_err());
    }

    #[test]
    fn kinds_and_filters() {
        assert_eq!(
            ReferrerKind::of_artifact_type(SIGSTORE_BUNDLE),
            ReferrerKind::Signature
        );
        assert_eq!(
            ReferrerKind::of_artifact_type("application/spdx+json"),
            ReferrerKind::Sbom
        );
        assert_eq!(
            ReferrerKind::of_artifact_type("application/vnd.in-toto+json"),
            ReferrerKind::Attestation
        );
        assert_eq!(
            ReferrerKind::of_artifact_type("application/x-thing"),
            ReferrerKind::Artifact
        );
        let r = Referrer {
            digest: d(1),
            subject: d(2),
            kind: ReferrerKind::Sbom,
            artifact_type: Some("application/spdx+json".into()),
            tag: None,
        };
        assert!(r.wanted(&[]));
        assert!(r.wanted(&["sbom".into()]));
        assert!(r.wanted(&["application/spdx+json".into()]));
        assert!(!r.wanted(&["signature".into()]));
        assert_eq!(cosign_tag(&d(2), "sig"), format!("{}.sig", d(2).tag_form()));
    }

    #[test]
    fn artifact_info_reads_type_and_subject() {
        let s = d(9);
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/spdx+json","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{s}","size":2}},"layers":[],"subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{s}","size":3}}}}"#
        );
        let i = artifact_info(json.as_bytes());
        assert_eq!(i.artifact_type.as_deref(), Some("application/spdx+json"));
        assert_eq!(i.subject, Some(s));
        // A cosign .sig manifest: plain image config, no artifact type.
        let sig = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[]}}"#,
            d(1)
        );
        assert_eq!(artifact_info(sig.as_bytes()).artifact_type, None);
    }
}
