//! Offline cosign policy: every named image must carry a valid cosign signature by a given key.
//!
//! Sites that enforce signatures inside the air gap refuse images whose signatures did not come
//! along; this check refuses them before anything is pushed, and names the image, the
//! signature looked for and why it failed. Two forms are understood, both key-based
//! (ECDSA P-256 with SHA-256, PEM `PUBLIC KEY`):
//!
//! - cosign's tag form: `sha256-<hex>.sig`, an image manifest whose layers are simple-signing
//!   payloads (`critical.image.docker-manifest-digest` must be the image) with the base64 DER
//!   signature in the `dev.cosignproject.cosign/signature` annotation;
//! - cosign v3's sigstore bundle referrer (`application/vnd.dev.sigstore.bundle.v0.3+json`)
//!   holding a DSSE envelope over an in-toto statement whose subject is the image.
//!
//! Keyless signatures (Fulcio certificates, Rekor proofs) are not verified by this build.
//! The graph says which artifacts belong to which image; blobs are read through any
//! [`Source`], so `verify`, `import` and a registry server share this code.

use std::path::Path;

use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{DerSignature, VerifyingKey};
use p256::pkcs8::{DecodePublicKey as _, EncodePublicKey as _};
use serde::Deserialize;

use crate::digest::Digest;
use crate::graph::Graph;
use crate::oci::{Descriptor, RawManifest};
use crate::referrers::{
    ReferrerKind, SIGNATURE_ANNOTATION, SIGSTORE_BUNDLE, SIMPLE_SIGNING, cosign_tag,
};
use crate::store::{Source, StoreError};

/// Largest signature payload or bundle read into memory.
const MAX_PAYLOAD: u64 = 1024 * 1024;

/// Signature layers examined per image (a hostile `.sig` could carry thousands).
const MAX_LAYERS: usize = 64;

/// Why the policy could not be applied or was not met.
#[derive(Debug, thiserror::Error)]
pub enum CosignError {
    /// A key file could not be read or is not an ECDSA P-256 public key.
    #[error("cosign key {path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// One or more named images carry no valid signature: nothing may be pushed.
    #[error("cosign policy not met: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Unsigned(Vec<ImageFailure>),
    /// A signature blob could not be read from the source.
    #[error("reading cosign signature blob {digest}: {source}")]
    Read {
        /// The blob.
        digest: Digest,
        /// The store error.
        #[source]
        source: Box<StoreError>,
    },
}

/// A named image the policy refused, with every signature looked at and why it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFailure {
    /// The image as named (root reference or lock entry).
    pub image: String,
    /// Its digest.
    pub digest: Digest,
    /// What was looked for (the cosign tag, the bundle referrers).
    pub looked_for: String,
    /// Why each candidate failed (empty: no signature at all).
    pub reasons: Vec<String>,
}

impl std::fmt::Display for ImageFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "image {} ({}): looked for {}: ",
            self.image, self.digest, self.looked_for
        )?;
        if self.reasons.is_empty() {
            write!(
                f,
                "no signature found (sign it with `cosign sign --key` and export again)"
            )
        } else {
            write!(f, "{}", self.reasons.join(", "))
        }
    }
}

/// A public key signatures are checked against.
#[derive(Debug, Clone)]
pub struct CosignKey {
    /// Where it was read from, for messages.
    pub path: String,
    /// sha256 of its SubjectPublicKeyInfo DER, hex: how `inspect` names the signer.
    pub fingerprint: String,
    key: VerifyingKey,
}

impl CosignKey {
    /// Reads a PEM `PUBLIC KEY` (as `cosign generate-key-pair` writes `cosign.pub`).
    pub fn load(path: &Path) -> Result<CosignKey, CosignError> {
        let err = |reason: String| CosignError::Key {
            path: path.display().to_string(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
        if meta.len() > 64 * 1024 {
            return Err(err("larger than 64 KiB: not a public key".into()));
        }
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        CosignKey::from_pem(&text, &path.display().to_string())
    }

    /// Parses a PEM `PUBLIC KEY`; `name` says where it came from.
    pub fn from_pem(text: &str, name: &str) -> Result<CosignKey, CosignError> {
        let key = VerifyingKey::from_public_key_pem(text.trim()).map_err(|e| CosignError::Key {
            path: name.to_owned(),
            reason: format!("not a PEM ECDSA P-256 public key ({e}); cosign.pub is what is needed"),
        })?;
        let der = key.to_public_key_der().map_err(|e| CosignError::Key {
            path: name.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(CosignKey {
            path: name.to_owned(),
            fingerprint: Digest::sha256_of(der.as_bytes()).hex().to_owned(),
            key,
        })
    }

    fn verifies(&self, message: &[u8], der_signature: &[u8]) -> bool {
        DerSignature::try_from(der_signature).is_ok_and(|s| self.key.verify(message, &s).is_ok())
    }
}

/// Which images must be signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Require {
    /// Roots and every image a bundle locks.
    #[default]
    All,
    /// Only what the user named (roots).
    Roots,
}

/// The keys and the scope of the policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Any one of them suffices.
    pub keys: Vec<CosignKey>,
    /// Which images must be signed.
    pub require: Require,
}

/// One image whose signature verified.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verified {
    /// The image as named.
    pub image: String,
    /// Its digest.
    pub digest: Digest,
    /// The signature artifact that verified.
    pub signature: Digest,
    /// The fingerprint of the key that verified it.
    pub key: String,
}

/// Applies `policy` to `graph`, reading signature payloads from `source`: every image it
/// requires must carry a signature one of the keys verifies, else nothing may be pushed.
pub async fn check<S: Source>(
    graph: &Graph,
    policy: &Policy,
    source: &S,
) -> Result<Vec<Verified>, CosignError> {
    let mut named: Vec<(String, Digest)> = graph
        .roots
        .iter()
        .map(|r| (r.reference.original().to_owned(), r.digest.clone()))
        .collect();
    if policy.require == Require::All {
        named.extend(
            graph
                .locked
                .iter()
                .map(|l| (l.image.clone(), l.digest.clone())),
        );
    }
    let mut seen = std::collections::HashSet::new();
    named.retain(|(_, d)| seen.insert(d.clone()));
    let mut verified = Vec::new();
    let mut failures = Vec::new();
    for (image, digest) in named {
        match check_image(graph, policy, source, &digest).await? {
            Ok((signature, key)) => verified.push(Verified {
                image,
                digest,
                signature,
                key,
            }),
            Err(reasons) => failures.push(ImageFailure {
                looked_for: format!(
                    "cosign signature tag {} and sigstore bundle referrers",
                    cosign_tag(&digest, "sig")
                ),
                image,
                digest,
                reasons,
            }),
        }
    }
    if failures.is_empty() {
        Ok(verified)
    } else {
        Err(CosignError::Unsigned(failures))
    }
}

/// The fingerprint of the key in `keys` that verifies the cosign signature artifact `sig`
/// of `subject`, if any (for `inspect`).
pub async fn signer_of<S: Source>(
    graph: &Graph,
    keys: &[CosignKey],
    source: &S,
    sig: &Digest,
    subject: &Digest,
) -> Result<Option<String>, CosignError> {
    let Some(node) = graph.manifests.get(sig) else {
        return Ok(None);
    };
    let policy = Policy {
        keys: keys.to_vec(),
        require: Require::Roots,
    };
    Ok(verify_artifact(&policy, source, &node.manifest, subject)
        .await?
        .ok())
}

/// `Ok(Ok((signature, key)))` when a signature of `digest` verifies, `Ok(Err(reasons))` when
/// none does.
async fn check_image<S: Source>(
    graph: &Graph,
    policy: &Policy,
    source: &S,
    digest: &Digest,
) -> Result<Result<(Digest, String), Vec<String>>, CosignError> {
    let mut reasons = Vec::new();
    for r in graph
        .referrers
        .iter()
        .filter(|r| &r.subject == digest && r.kind == ReferrerKind::Signature)
    {
        let Some(node) = graph.manifests.get(&r.digest) else {
            continue;
        };
        let name = r
            .tag
            .clone()
            .unwrap_or_else(|| format!("referrer {}", r.digest));
        match verify_artifact(policy, source, &node.manifest, digest).await? {
            Ok(fp) => return Ok(Ok((r.digest.clone(), fp))),
            Err(why) => reasons.push(format!("{name}: {why}")),
        }
    }
    Ok(Err(reasons))
}

/// Checks every signature layer of one artifact manifest; `Ok(key fingerprint)` at the first
/// that verifies, else why none did.
async fn verify_artifact<S: Source>(
    policy: &Policy,
    source: &S,
    artifact: &RawManifest,
    subject: &Digest,
) -> Result<Result<String, String>, CosignError> {
    let blobs = artifact.blobs();
    let layers: Vec<&Descriptor> = blobs.into_iter().skip(1).take(MAX_LAYERS).collect();
    let mut why = Vec::new();
    for layer in layers {
        let outcome = if layer.media_type == SIMPLE_SIGNING {
            let payload = read_small(source, layer).await?;
            simple_signing(policy, layer, &payload, subject)
        } else if layer.media_type == SIGSTORE_BUNDLE {
            let bundle = read_small(source, layer).await?;
            sigstore_bundle(policy, &bundle, subject)
        } else {
            Err(format!(
                "layer of type {} is not a signature",
                layer.media_type
            ))
        };
        match outcome {
            Ok(fp) => return Ok(Ok(fp)),
            Err(e) => why.push(e),
        }
    }
    if why.is_empty() {
        why.push("no signature layer".into());
    }
    Ok(Err(why.join("; ")))
}

/// The fingerprint of the key verifying `signature` over `message`, else a reason.
fn by_any_key(policy: &Policy, message: &[u8], signature: &[u8]) -> Result<String, String> {
    policy
        .keys
        .iter()
        .find(|k| k.verifies(message, signature))
        .map(|k| k.fingerprint.clone())
        .ok_or_else(|| {
            let fps: Vec<&str> = policy.keys.iter().map(|k| k.path.as_str()).collect();
            format!(
                "signature does not verify with {} (wrong key, or the payload was altered)",
                fps.join(", ")
            )
        })
}

#[derive(Deserialize)]
struct SimpleSigning {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    image: CriticalImage,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct CriticalImage {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

fn simple_signing(
    policy: &Policy,
    layer: &Descriptor,
    payload: &[u8],
    subject: &Digest,
) -> Result<String, String> {
    let sig_b64 = layer
        .annotations
        .as_ref()
        .and_then(|a| a.get(SIGNATURE_ANNOTATION))
        .ok_or_else(|| {
            format!(
                "layer {} has no {SIGNATURE_ANNOTATION} annotation",
                layer.digest
            )
        })?;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(sig_b64.trim())
        .map_err(|e| format!("signature annotation is not base64: {e}"))?;
    // The signature covers the exact payload bytes: check it before trusting what they say.
    let fp = by_any_key(policy, payload, &sig)?;
    let parsed: SimpleSigning = serde_json::from_slice(payload)
        .map_err(|e| format!("payload is not a simple-signing document: {e}"))?;
    if parsed.critical.kind != "cosign container image signature" {
        return Err(format!(
            "payload type is {:?}, not a cosign container image signature",
            parsed.critical.kind
        ));
    }
    if parsed.critical.image.docker_manifest_digest != subject.to_string() {
        return Err(format!(
            "payload signs {}, not this image",
            parsed.critical.image.docker_manifest_digest
        ));
    }
    Ok(fp)
}

#[derive(Deserialize)]
struct Bundle {
    #[serde(rename = "dsseEnvelope")]
    dsse_envelope: Option<Envelope>,
    #[serde(rename = "messageSignature")]
    message_signature: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Envelope {
    payload: String,
    #[serde(rename = "payloadType")]
    payload_type: String,
    signatures: Vec<EnvelopeSignature>,
}

#[derive(Deserialize)]
struct EnvelopeSignature {
    sig: String,
}

#[derive(Deserialize)]
struct Statement {
    #[serde(default)]
    subject: Vec<StatementSubject>,
}

#[derive(Deserialize)]
struct StatementSubject {
    #[serde(default)]
    digest: std::collections::BTreeMap<String, String>,
}

/// DSSE's pre-authentication encoding: what the envelope's signatures cover.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

fn sigstore_bundle(policy: &Policy, bundle: &[u8], subject: &Digest) -> Result<String, String> {
    let b: Bundle =
        serde_json::from_slice(bundle).map_err(|e| format!("bundle does not parse: {e}"))?;
    let Some(env) = b.dsse_envelope else {
        return Err(if b.message_signature.is_some() {
            "bundle holds a messageSignature, which names no image: not accepted".into()
        } else {
            "bundle holds no dsseEnvelope".into()
        });
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = b64
        .decode(env.payload.trim())
        .map_err(|e| format!("envelope payload is not base64: {e}"))?;
    let message = pae(&env.payload_type, &payload);
    let mut last = "envelope has no signature".to_owned();
    let mut fp = None;
    for s in env.signatures.iter().take(MAX_LAYERS) {
        let Ok(sig) = b64.decode(s.sig.trim()) else {
            last = "envelope signature is not base64".into();
            continue;
        };
        match by_any_key(policy, &message, &sig) {
            Ok(f) => {
                fp = Some(f);
                break;
            }
            Err(e) => last = e,
        }
    }
    let fp = fp.ok_or(last)?;
    if env.payload_type != "application/vnd.in-toto+json" {
        return Err(format!(
            "envelope payload type {} is not in-toto",
            env.payload_type
        ));
    }
    let statement: Statement = serde_json::from_slice(&payload)
        .map_err(|e| format!("envelope payload is not an in-toto statement: {e}"))?;
    let names_it = statement.subject.iter().any(|s| {
        s.digest.get(subject.algorithm().name()).map(String::as_str) == Some(subject.hex())
    });
    if !names_it {
        return Err("the signed statement does not name this image's digest".into());
    }
    Ok(fp)
}

/// Reads a signature payload or bundle (verified by the source) into memory, bounded.
async fn read_small<S: Source>(source: &S, desc: &Descriptor) -> Result<Bytes, CosignError> {
    let err = |source| CosignError::Read {
        digest: desc.digest.clone(),
        source: Box::new(source),
    };
    if desc.size > MAX_PAYLOAD {
        return Err(err(StoreError::Refused(format!(
            "{} bytes, over the {MAX_PAYLOAD}-byte limit for a signature payload",
            desc.size
        ))));
    }
    let mut stream = source.fetch(desc).await.map_err(err)?;
    let mut buf = Vec::with_capacity(usize::try_from(desc.size).unwrap_or(0));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| err(StoreError::io("reading")(e)))?;
        if (buf.len() + chunk.len()) as u64 > MAX_PAYLOAD {
            return Err(err(StoreError::Refused(
                "signature payload too large".into(),
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_is_dsse_v1() {
        assert_eq!(
            pae("application/x", b"hello"),
            b"DSSEv1 13 application/x 5 hello".to_vec()
        );
    }

    #[test]
    fn a_non_key_is_refused_with_a_hint() {
        let e = CosignKey::from_pem(
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            "k.pub",
        )
        .unwrap_err();
        assert!(e.to_string().contains("k.pub"), "{e}");
        assert!(e.to_string().contains("P-256"), "{e}");
    }
}
