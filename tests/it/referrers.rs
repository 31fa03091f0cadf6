//! Signatures, attestations and SBOMs travel with their images (export → import, copy), and
//! `--cosign-key` checks cosign signatures offline before anything is pushed.
//!
//! The artifacts are made here in cosign's exact formats (no cosign binary on the test
//! machine): ECDSA P-256 keys and signatures come from `openssl`, and each signature is checked
//! with `openssl dgst -verify` before use, so the fixture is right independently of airlift.
//! Debian's docker-registry 2.8 has no referrers API, so OCI 1.1 artifacts are listed by the
//! referrers tag schema (`sha256-<hex>` index), as cosign and oras do there.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::support::{
    ImageSpec, LayerSpec, Registry, airlift, catalog, expect_code, expect_failed, expect_ok,
    push_images, run_tool, s, sha256_digest, skopeo_push, tar_entries, tar_entry, write_oci_index,
};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const EMPTY_JSON: &str = "application/vnd.oci.empty.v1+json";
const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

/// `sha256-<hex>` for a `sha256:<hex>` digest.
fn tag_form(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

fn curl(args: &[&str]) -> (u16, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    let mut body = out.stdout;
    let pos = body
        .iter()
        .rposition(|&b| b == b'\n')
        .expect("curl wrote a status");
    let status = String::from_utf8_lossy(&body[pos + 1..])
        .trim()
        .parse()
        .unwrap_or(0);
    body.truncate(pos);
    (status, body)
}

/// Pushes a blob (monolithic upload) and returns its descriptor fields.
fn put_blob(reg: &Registry, repo: &str, data: &[u8], dir: &Path) -> (String, usize) {
    let digest = sha256_digest(data).to_string();
    let file = dir.join(tag_form(&digest));
    std::fs::write(&file, data).unwrap();
    let out = Command::new("curl")
        .args(["-s", "-D", "-", "-o", "/dev/null", "-X", "POST"])
        .arg(format!("http://{}/v2/{repo}/blobs/uploads/", reg.host()))
        .output()
        .unwrap();
    let headers = String::from_utf8_lossy(&out.stdout).into_owned();
    let location = headers
        .lines()
        .find_map(|l| {
            l.strip_prefix("Location: ")
                .or_else(|| l.strip_prefix("location: "))
        })
        .unwrap_or_else(|| panic!("no upload location: {headers}"))
        .trim()
        .to_owned();
    let url = if location.starts_with("http") {
        location
    } else {
        format!("http://{}{location}", reg.host())
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let (status, body) = curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("{url}{sep}digest={digest}"),
    ]);
    assert_eq!(
        status,
        201,
        "blob upload: {}",
        String::from_utf8_lossy(&body)
    );
    (digest, data.len())
}

fn put_manifest(reg: &Registry, repo: &str, reference: &str, bytes: &[u8], mt: &str, dir: &Path) {
    let file = dir.join(format!("m-{}", tag_form(&sha256_digest(bytes).to_string())));
    std::fs::write(&file, bytes).unwrap();
    let (status, body) = curl(&[
        "-X",
        "PUT",
        "-H",
        &format!("Content-Type: {mt}"),
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("http://{}/v2/{repo}/manifests/{reference}", reg.host()),
    ]);
    assert_eq!(
        status,
        201,
        "manifest {repo}:{reference}: {}",
        String::from_utf8_lossy(&body)
    );
}

/// The manifest bytes `repo:reference` serves, `None` when it does not exist.
fn get_manifest(reg: &Registry, repo: &str, reference: &str) -> Option<Vec<u8>> {
    let (status, body) = curl(&[
        "-H",
        &format!("Accept: {OCI_MANIFEST}, {OCI_INDEX}"),
        &format!("http://{}/v2/{repo}/manifests/{reference}", reg.host()),
    ]);
    (status == 200).then_some(body)
}

fn get_blob(reg: &Registry, repo: &str, digest: &str) -> Vec<u8> {
    let (status, body) = curl(&[
        "-L",
        &format!("http://{}/v2/{repo}/blobs/{digest}", reg.host()),
    ]);
    assert_eq!(status, 200, "blob {repo}@{digest}");
    body
}

/// An ECDSA P-256 key pair made by openssl: (private PEM, public PEM).
fn keypair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    run_tool(Command::new("openssl").args([
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        s(&key),
    ]));
    run_tool(Command::new("openssl").args(["ec", "-in", s(&key), "-pubout", "-out", s(&public)]));
    (key, public)
}

/// The DER ECDSA-SHA256 signature of `data` by `key`, checked with `openssl dgst -verify`.
fn sign(dir: &Path, key: &Path, public: &Path, data: &[u8]) -> Vec<u8> {
    let n = sha256_digest(data).to_string();
    let msg = dir.join(format!("msg-{}", tag_form(&n)));
    let sig = dir.join(format!("sig-{}", tag_form(&n)));
    std::fs::write(&msg, data).unwrap();
    run_tool(Command::new("openssl").args([
        "dgst",
        "-sha256",
        "-sign",
        s(key),
        "-out",
        s(&sig),
        s(&msg),
    ]));
    let check = run_tool(Command::new("openssl").args([
        "dgst",
        "-sha256",
        "-verify",
        s(public),
        "-signature",
        s(&sig),
        s(&msg),
    ]));
    assert!(String::from_utf8_lossy(&check).contains("Verified OK"));
    std::fs::read(&sig).unwrap()
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// cosign's simple-signing payload for `digest`.
fn simple_signing_payload(docker_reference: &str, digest: &str) -> Vec<u8> {
    bytes(&json!({
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature"
        },
        "optional": null
    }))
}

/// A cosign `.sig` image manifest over `payload` with `signature` (may not match, for
/// tampering tests), pushed at `sha256-<subject>.sig`; returns its manifest bytes.
fn push_cosign_sig(
    reg: &Registry,
    repo: &str,
    subject: &str,
    payload: &[u8],
    signature: &[u8],
    dir: &Path,
) -> Vec<u8> {
    let (pd, ps) = put_blob(reg, repo, payload, dir);
    let config = bytes(&json!({
        "architecture": "", "os": "", "config": {},
        "created": "0001-01-01T00:00:00Z",
        "rootfs": {"type": "layers", "diff_ids": [pd]}
    }));
    let (cd, cs) = put_blob(reg, repo, &config, dir);
    let manifest = bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [{
            "mediaType": SIMPLE_SIGNING, "digest": pd, "size": ps,
            "annotations": {"dev.cosignproject.cosign/signature": b64(signature)}
        }]
    }));
    put_manifest(
        reg,
        repo,
        &format!("{}.sig", tag_form(subject)),
        &manifest,
        OCI_MANIFEST,
        dir,
    );
    manifest
}

/// A cosign `.att`: a DSSE envelope over an in-toto statement about `subject`.
fn push_cosign_att(
    reg: &Registry,
    repo: &str,
    subject: &str,
    key: &(PathBuf, PathBuf),
    dir: &Path,
) -> Vec<u8> {
    let statement = bytes(&json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://slsa.dev/provenance/v0.2",
        "subject": [{"name": repo, "digest": {"sha256": subject.trim_start_matches("sha256:")}}],
        "predicate": {"builder": {"id": "test"}}
    }));
    let pae = dsse_pae("application/vnd.in-toto+json", &statement);
    let sig = sign(dir, &key.0, &key.1, &pae);
    let envelope = bytes(&json!({
        "payloadType": "application/vnd.in-toto+json",
        "payload": b64(&statement),
        "signatures": [{"keyid": "", "sig": b64(&sig)}]
    }));
    let (ed, es) = put_blob(reg, repo, &envelope, dir);
    let (cd, cs) = put_blob(reg, repo, b"{}", dir);
    let manifest = bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [{
            "mediaType": "application/vnd.dsse.envelope.v1+json", "digest": ed, "size": es,
            "annotations": {"predicateType": "https://slsa.dev/provenance/v0.2"}
        }]
    }));
    put_manifest(
        reg,
        repo,
        &format!("{}.att", tag_form(subject)),
        &manifest,
        OCI_MANIFEST,
        dir,
    );
    manifest
}

fn dsse_pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// An OCI 1.1 artifact about `subject` (a manifest `subject`), listed in the referrers tag
/// schema index `sha256-<subject>` (merged with what it lists); returns its manifest bytes.
#[allow(clippy::too_many_arguments)]
fn push_oci_artifact(
    reg: &Registry,
    repo: &str,
    subject: (&str, usize, &str),
    artifact_type: &str,
    layer_type: &str,
    content: &[u8],
    dir: &Path,
) -> Vec<u8> {
    let (ld, ls) = put_blob(reg, repo, content, dir);
    let (cd, cs) = put_blob(reg, repo, b"{}", dir);
    let manifest = bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": EMPTY_JSON, "digest": cd, "size": cs},
        "layers": [{"mediaType": layer_type, "digest": ld, "size": ls}],
        "subject": {"mediaType": subject.2, "digest": subject.0, "size": subject.1}
    }));
    let digest = sha256_digest(&manifest).to_string();
    put_manifest(reg, repo, &digest, &manifest, OCI_MANIFEST, dir);
    let tag = tag_form(subject.0);
    let mut index = get_manifest(reg, repo, &tag)
        .map(|b| serde_json::from_slice::<Value>(&b).unwrap())
        .unwrap_or_else(|| json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}));
    index["manifests"].as_array_mut().unwrap().push(json!({
        "mediaType": OCI_MANIFEST, "digest": digest, "size": manifest.len(), "artifactType": artifact_type
    }));
    put_manifest(reg, repo, &tag, &bytes(&index), OCI_INDEX, dir);
    manifest
}

/// A cosign v3 sigstore bundle (DSSE over an in-toto statement naming `subject`) as an OCI
/// 1.1 referrer of it.
fn push_bundle_signature(
    reg: &Registry,
    repo: &str,
    subject: (&str, usize, &str),
    key: &(PathBuf, PathBuf),
    dir: &Path,
) -> Vec<u8> {
    let statement = bytes(&json!({
        "_type": "https://in-toto.io/Statement/v1",
        "predicateType": "https://sigstore.dev/cosign/sign/v1",
        "subject": [{"name": repo, "digest": {"sha256": subject.0.trim_start_matches("sha256:")}}],
        "predicate": {}
    }));
    let sig = sign(
        dir,
        &key.0,
        &key.1,
        &dsse_pae("application/vnd.in-toto+json", &statement),
    );
    let bundle = bytes(&json!({
        "mediaType": BUNDLE,
        "verificationMaterial": {"publicKey": {"hint": ""}},
        "dsseEnvelope": {
            "payload": b64(&statement),
            "payloadType": "application/vnd.in-toto+json",
            "signatures": [{"sig": b64(&sig)}]
        }
    }));
    push_oci_artifact(reg, repo, subject, BUNDLE, BUNDLE, &bundle, dir)
}

/// What a test image set holds: references and the artifacts made for them.
struct Signed {
    web: String,
    multi: String,
    /// (name, repo, manifest bytes, tag it is found at: cosign tag or `None` for OCI 1.1).
    artifacts: Vec<(&'static str, &'static str, Vec<u8>, Option<String>)>,
    /// (repo, subject digest, artifact digest) found through the tag schema.
    schema: Vec<(&'static str, String, String)>,
}

/// An image and an index in `src`, with: a signature of each, an attestation of the image, a
/// signature of that attestation, and an SPDX SBOM as an OCI 1.1 artifact of the image.
fn signed_images(src: &Registry, key: &(PathBuf, PathBuf), dir: &Path) -> Signed {
    let img = &push_images(
        src,
        &[(
            "app/web:1",
            ImageSpec::new(71, vec![LayerSpec::new(71, 4096)]),
        )],
    )[0];
    let layout = dir.join("layout");
    let idx = write_oci_index(
        &layout,
        "multi",
        &[
            ("amd64", ImageSpec::new(72, vec![LayerSpec::new(72, 2048)])),
            ("arm64", ImageSpec::new(73, vec![LayerSpec::new(73, 2048)])),
        ],
    );
    skopeo_push(&layout, "multi", "app/multi:2", src);
    let web_d = img.manifest_digest.to_string();
    let multi_d = idx.index_digest.to_string();
    let host = src.host();
    let mut artifacts = Vec::new();
    let payload = simple_signing_payload(&format!("{host}/app/web"), &web_d);
    let sig = push_cosign_sig(
        src,
        "app/web",
        &web_d,
        &payload,
        &sign(dir, &key.0, &key.1, &payload),
        dir,
    );
    artifacts.push((
        "image signature",
        "app/web",
        sig,
        Some(format!("{}.sig", tag_form(&web_d))),
    ));
    let payload = simple_signing_payload(&format!("{host}/app/multi"), &multi_d);
    let sig = push_cosign_sig(
        src,
        "app/multi",
        &multi_d,
        &payload,
        &sign(dir, &key.0, &key.1, &payload),
        dir,
    );
    artifacts.push((
        "index signature",
        "app/multi",
        sig,
        Some(format!("{}.sig", tag_form(&multi_d))),
    ));
    let att = push_cosign_att(src, "app/web", &web_d, key, dir);
    let att_d = sha256_digest(&att).to_string();
    artifacts.push((
        "attestation",
        "app/web",
        att,
        Some(format!("{}.att", tag_form(&web_d))),
    ));
    let payload = simple_signing_payload(&format!("{host}/app/web"), &att_d);
    let sig = push_cosign_sig(
        src,
        "app/web",
        &att_d,
        &payload,
        &sign(dir, &key.0, &key.1, &payload),
        dir,
    );
    artifacts.push((
        "attestation signature",
        "app/web",
        sig,
        Some(format!("{}.sig", tag_form(&att_d))),
    ));
    let spdx =
        bytes(&json!({"spdxVersion": "SPDX-2.3", "name": "web", "SPDXID": "SPDXRef-DOCUMENT"}));
    let sbom = push_oci_artifact(
        src,
        "app/web",
        (&web_d, img.manifest.len(), OCI_MANIFEST),
        "application/spdx+json",
        "application/spdx+json",
        &spdx,
        dir,
    );
    let sbom_d = sha256_digest(&sbom).to_string();
    artifacts.push(("sbom", "app/web", sbom, None));
    Signed {
        web: src.reference("app/web:1"),
        multi: src.reference("app/multi:2"),
        artifacts,
        schema: vec![("app/web", web_d, sbom_d)],
    }
}

/// Every artifact is at `dest` in `repo_of(source repo)`: by its cosign tag or through the
/// tag-schema index, and by digest, with the same bytes, and its blobs byte-identical.
fn assert_arrived(
    src: &Registry,
    dest: &Registry,
    signed: &Signed,
    repo_of: &dyn Fn(&str) -> String,
) {
    for (name, repo, manifest, tag) in &signed.artifacts {
        let to = repo_of(repo);
        let digest = sha256_digest(manifest).to_string();
        let by_digest = get_manifest(dest, &to, &digest)
            .unwrap_or_else(|| panic!("{name} {digest} is not in {to}"));
        assert_eq!(&by_digest, manifest, "{name} by digest in {to}");
        if let Some(tag) = tag {
            let by_tag =
                get_manifest(dest, &to, tag).unwrap_or_else(|| panic!("{name}: no tag {to}:{tag}"));
            assert_eq!(&by_tag, manifest, "{name} at {to}:{tag}");
        }
        let parsed: Value = serde_json::from_slice(manifest).unwrap();
        let mut blobs: Vec<&Value> = parsed["layers"].as_array().unwrap().iter().collect();
        blobs.push(&parsed["config"]);
        for b in blobs {
            let d = b["digest"].as_str().unwrap();
            assert_eq!(
                get_blob(dest, &to, d),
                get_blob(src, repo, d),
                "{name} blob {d} in {to}"
            );
        }
    }
    for (repo, subject, artifact) in &signed.schema {
        let to = repo_of(repo);
        let index = get_manifest(dest, &to, &tag_form(subject))
            .unwrap_or_else(|| panic!("no tag-schema index {to}:{}", tag_form(subject)));
        let v: Value = serde_json::from_slice(&index).unwrap();
        let listed: Vec<&str> = v["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["digest"].as_str().unwrap())
            .collect();
        assert!(
            listed.contains(&artifact.as_str()),
            "{to}:{} lists {listed:?}",
            tag_form(subject)
        );
    }
}

/// An unsigned archive of the signed image and index (and so of every artifact found for them).
fn export_signed(h: &Path, web: &str, multi: &str, archive: &Path) {
    expect_ok(&airlift(
        h,
        &[
            "export",
            "-i",
            web,
            "-i",
            multi,
            "-o",
            s(archive),
            "--unsigned",
            "-q",
        ],
    ));
}

fn archive_manifest(archive: &Path) -> Value {
    let data = std::fs::read(archive).unwrap();
    let entries = tar_entries(&data);
    serde_json::from_slice(tar_entry(&entries, "airlift/manifest.json").data(&data)).unwrap()
}

#[test]
fn signatures_attestations_and_sboms_travel_through_export_import_and_copy() {
    let (src, dest) = (Registry::start_plain(), Registry::start_plain());
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let key = keypair(h, "cosign");
    let signed = signed_images(&src, &key, h);
    let archive = h.join("app.tar");
    export_signed(h, &signed.web, &signed.multi, &archive);
    let m = archive_manifest(&archive);
    let recorded = m["referrers"]
        .as_array()
        .expect("the archive lists referrers");
    assert_eq!(recorded.len(), signed.artifacts.len(), "{recorded:?}");
    let verify = airlift(
        h,
        &[
            "verify",
            s(&archive),
            "--allow-unsigned",
            "--cosign-key",
            s(&key.1),
        ],
    );
    let text = expect_ok(&verify);
    assert!(text.contains("cosign policy met"), "{text}");

    // Inspect lists each artifact under its image, in text and JSON.
    let text = expect_ok(&airlift(
        h,
        &["inspect", s(&archive), "--cosign-key", s(&key.1)],
    ));
    for kind in ["cosign signature", "attestation", "SBOM"] {
        assert!(text.contains(kind), "inspect text lacks {kind}: {text}");
    }
    let json: Value = serde_json::from_slice(
        &airlift(
            h,
            &["inspect", s(&archive), "--json", "--cosign-key", s(&key.1)],
        )
        .stdout,
    )
    .unwrap();
    crate::support::validate_json_schema("inspect.schema.json", &json);
    let listed = json[0]["referrers"]
        .as_array()
        .expect("inspect --json has referrers");
    assert_eq!(listed.len(), signed.artifacts.len());
    let signers: Vec<&Value> = listed.iter().filter(|r| r["signer"].is_string()).collect();
    assert_eq!(
        signers.len(),
        3,
        "three cosign signatures verify with the key: {listed:?}"
    );

    expect_ok(&airlift(
        h,
        &[
            "import",
            s(&archive),
            "--to-repo",
            &dest.reference("flat/app"),
            "--allow-unsigned",
            "--cosign-key",
            s(&key.1),
        ],
    ));
    assert_arrived(&src, &dest, &signed, &|_| "flat/app".to_owned());
    expect_ok(&airlift(
        h,
        &[
            "import",
            s(&archive),
            "--to-registry",
            &dest.reference("mirror"),
            "--allow-unsigned",
        ],
    ));
    assert_arrived(&src, &dest, &signed, &|r| format!("mirror/{r}"));
    // A second import merges into the tag-schema index instead of replacing it: an artifact
    // the destination already lists stays listed.
    let web_d = &signed.schema[0].1;
    let (theirs, _) = {
        let d = tempfile::tempdir().unwrap();
        let img = get_manifest(&dest, "mirror/app/web", web_d).unwrap();
        let m = push_oci_artifact(
            &dest,
            "mirror/app/web",
            (web_d, img.len(), OCI_MANIFEST),
            "application/vnd.example.scan+json",
            "application/json",
            b"{\"scan\":\"clean\"}",
            d.path(),
        );
        (sha256_digest(&m).to_string(), d)
    };
    expect_ok(&airlift(
        h,
        &[
            "import",
            s(&archive),
            "--to-registry",
            &dest.reference("mirror"),
            "--allow-unsigned",
        ],
    ));
    let index: Value =
        serde_json::from_slice(&get_manifest(&dest, "mirror/app/web", &tag_form(web_d)).unwrap())
            .unwrap();
    let listed: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    assert!(
        listed.contains(&theirs.as_str()) && listed.contains(&signed.schema[0].2.as_str()),
        "{listed:?}"
    );

    expect_ok(&airlift(
        h,
        &[
            "copy",
            "-i",
            &signed.web,
            "-i",
            &signed.multi,
            "--to-registry",
            &dest.reference("copied"),
            "--cosign-key",
            s(&key.1),
        ],
    ));
    assert_arrived(&src, &dest, &signed, &|r| format!("copied/{r}"));
}

#[test]
fn no_referrers_and_referrers_type_choose_what_comes_along() {
    let src = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let key = keypair(h, "cosign");
    let signed = signed_images(&src, &key, h);
    let none = h.join("none.tar");
    expect_ok(&airlift(
        h,
        &[
            "export",
            "-i",
            &signed.web,
            "-o",
            s(&none),
            "--unsigned",
            "-q",
            "--no-referrers",
        ],
    ));
    assert!(archive_manifest(&none).get("referrers").is_none());
    let sbom = h.join("sbom.tar");
    expect_ok(&airlift(
        h,
        &[
            "export",
            "-i",
            &signed.web,
            "-o",
            s(&sbom),
            "--unsigned",
            "-q",
            "--referrers-type",
            "application/spdx+json",
        ],
    ));
    let m = archive_manifest(&sbom);
    let kinds: Vec<&str> = m["referrers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["sbom"]);
    let sigs = h.join("sigs.tar");
    expect_ok(&airlift(
        h,
        &[
            "export",
            "-i",
            &signed.web,
            "-o",
            s(&sigs),
            "--unsigned",
            "-q",
            "--referrers-type",
            "signature",
        ],
    ));
    let m = archive_manifest(&sigs);
    let refs = m["referrers"].as_array().unwrap();
    // The attestation is left out, so its signature (found through it) is too.
    assert_eq!(refs.len(), 1, "{refs:?}");
    assert_eq!(refs[0]["kind"], "signature");
}

/// Exports `repo:1` (an image whose signature is prepared by `prepare`) and checks that verify
/// and import with `--cosign-key pub` fail naming the image and `why`, and push nothing.
fn refused(h: &Path, src: &Registry, repo: &str, public: &Path, why: &str) {
    let archive = h.join(format!("{}.tar", repo.replace('/', "-")));
    let image = src.reference(&format!("{repo}:1"));
    expect_ok(&airlift(
        h,
        &[
            "export",
            "-i",
            &image,
            "-o",
            s(&archive),
            "--unsigned",
            "-q",
        ],
    ));
    // verify reports on stdout, like its other checks.
    let text = expect_code(
        &airlift(
            h,
            &[
                "verify",
                s(&archive),
                "--allow-unsigned",
                "--cosign-key",
                s(public),
            ],
        ),
        1,
    );
    assert!(
        text.contains(&image) && text.contains(why),
        "verify must name {image} and {why:?}: {text}"
    );
    let dest = Registry::start_plain();
    let text = expect_failed(&airlift(
        h,
        &[
            "import",
            s(&archive),
            "--to-registry",
            &dest.reference("in"),
            "--allow-unsigned",
            "--cosign-key",
            s(public),
        ],
    ));
    assert!(
        text.contains(&image) && text.contains(why),
        "import must name {image} and {why:?}: {text}"
    );
    assert!(text.contains("nothing was pushed"), "{text}");
    assert!(
        catalog(&dest).is_empty(),
        "a refused import pushed {:?}",
        catalog(&dest)
    );
    let blobs = dest.storage_dir().join("docker/registry/v2/blobs");
    assert!(!blobs.exists(), "a refused import stored blobs");
}

#[test]
fn cosign_key_refuses_wrong_keys_tampering_other_digests_and_missing_signatures() {
    let src = Registry::start_plain();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let key = keypair(h, "cosign");
    let wrong = keypair(h, "other");
    let images = push_images(
        &src,
        &[
            (
                "good/app:1",
                ImageSpec::new(81, vec![LayerSpec::new(81, 1024)]),
            ),
            (
                "tampered/app:1",
                ImageSpec::new(82, vec![LayerSpec::new(82, 1024)]),
            ),
            (
                "elsewhere/app:1",
                ImageSpec::new(83, vec![LayerSpec::new(83, 1024)]),
            ),
            (
                "unsigned/app:1",
                ImageSpec::new(84, vec![LayerSpec::new(84, 1024)]),
            ),
            (
                "bundle/app:1",
                ImageSpec::new(85, vec![LayerSpec::new(85, 1024)]),
            ),
        ],
    );
    let d = |i: usize| images[i].manifest_digest.to_string();
    let host = src.host();
    let payload = simple_signing_payload(&format!("{host}/good/app"), &d(0));
    push_cosign_sig(
        &src,
        "good/app",
        &d(0),
        &payload,
        &sign(h, &key.0, &key.1, &payload),
        h,
    );
    // Signed, then the payload altered after signing.
    let payload = simple_signing_payload(&format!("{host}/tampered/app"), &d(1));
    let sig = sign(h, &key.0, &key.1, &payload);
    let altered = simple_signing_payload(&format!("{host}/tampered/app-x"), &d(1));
    push_cosign_sig(&src, "tampered/app", &d(1), &altered, &sig, h);
    // A valid signature of another image, placed at this image's tag.
    let payload = simple_signing_payload(&format!("{host}/elsewhere/app"), &d(0));
    push_cosign_sig(
        &src,
        "elsewhere/app",
        &d(2),
        &payload,
        &sign(h, &key.0, &key.1, &payload),
        h,
    );
    // cosign v3: a sigstore bundle referrer only.
    push_bundle_signature(
        &src,
        "bundle/app",
        (&d(4), images[4].manifest.len(), OCI_MANIFEST),
        &key,
        h,
    );

    for repo in ["good/app", "bundle/app"] {
        let archive = h.join(format!("{}.tar", repo.replace('/', "-")));
        let image = src.reference(&format!("{repo}:1"));
        expect_ok(&airlift(
            h,
            &[
                "export",
                "-i",
                &image,
                "-o",
                s(&archive),
                "--unsigned",
                "-q",
            ],
        ));
        expect_ok(&airlift(
            h,
            &[
                "verify",
                s(&archive),
                "--allow-unsigned",
                "--cosign-key",
                s(&key.1),
            ],
        ));
        let dest = Registry::start_plain();
        expect_ok(&airlift(
            h,
            &[
                "import",
                s(&archive),
                "--to-registry",
                &dest.reference("in"),
                "--allow-unsigned",
                "--cosign-key",
                s(&wrong.1),
                "--cosign-key",
                s(&key.1),
            ],
        ));
        assert!(get_manifest(&dest, &format!("in/{repo}"), "1").is_some());
    }
    refused(h, &src, "good/app", &wrong.1, "does not verify");
    refused(h, &src, "bundle/app", &wrong.1, "does not verify");
    refused(h, &src, "tampered/app", &key.1, "does not verify");
    refused(
        h,
        &src,
        "elsewhere/app",
        &key.1,
        &format!("payload signs {}", d(0)),
    );
    refused(h, &src, "unsigned/app", &key.1, "no signature found");

    let text = expect_failed(&airlift(
        h,
        &[
            "verify",
            s(&h.join("good-app.tar")),
            "--allow-unsigned",
            "--trusted-root",
            s(&key.1),
        ],
    ));
    assert!(
        text.contains("keyless") && text.contains("not supported"),
        "{text}"
    );
}

#[test]
fn export_and_copy_from_serve_find_artifacts_through_its_referrers_api() {
    let (src, dest) = (Registry::start_plain(), Registry::start_plain());
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let key = keypair(h, "cosign");
    let signed = signed_images(&src, &key, h);
    let archive = h.join("app.tar");
    export_signed(h, &signed.web, &signed.multi, &archive);
    // The policy applies before serve listens: a wrong key refuses, naming the image.
    let wrong = keypair(h, "other");
    let err = crate::support::served::Served::try_start(
        h,
        &[s(&archive), "--allow-unsigned", "--cosign-key", s(&wrong.1)],
    )
    .err()
    .expect("a wrong cosign key is refused");
    assert!(err.contains("app/web"), "{err}");
    let served = crate::support::served::Served::start(
        h,
        &[s(&archive), "--allow-unsigned", "--cosign-key", s(&key.1)],
    );
    let at = |r: &str| r.replacen(&src.host(), &served.host(), 1);

    // copy from serve: the SBOM (no cosign tag) can only be found through the referrers API.
    expect_ok(&airlift(
        h,
        &[
            "copy",
            "-i",
            &at(&signed.web),
            "-i",
            &at(&signed.multi),
            "--to-registry",
            &dest.reference("fromserve"),
        ],
    ));
    assert_arrived(&src, &dest, &signed, &|repo| format!("fromserve/{repo}"));
    let log = served.log_text();
    assert!(
        log.lines()
            .any(|l| l.starts_with("GET /v2/app/web/referrers/sha256:") && l.contains(" 200 ")),
        "discovery used serve's referrers API:\n{log}"
    );

    // export from serve records every artifact again.
    let again = h.join("again.tar");
    export_signed(h, &at(&signed.web), &at(&signed.multi), &again);
    let recorded = archive_manifest(&again)["referrers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(recorded.len(), signed.artifacts.len(), "{recorded:?}");
}
