//! The real `skopeo` (containers/image) as an independent client of the test registries.
//! References passed in are relative to the registry: `"team/app:v1"` or `"team/app@sha256:…"`.

use std::path::Path;
use std::process::{Command, Output};

use super::registry::Registry;

const SKOPEO: &str = "/usr/bin/skopeo";

/// `skopeo` with flags that keep it away from host configuration.
fn skopeo() -> Command {
    let mut cmd = Command::new(SKOPEO);
    // No system policy.json needed, and no retries that would slow down negative tests.
    cmd.arg("--insecure-policy");
    cmd
}

/// Transport flags for talking to `registry`; `prefix` is "" (inspect, list-tags), "src-" or
/// "dest-" (copy). `creds` overrides the registry's own credentials.
fn registry_flags(
    cmd: &mut Command,
    registry: &Registry,
    prefix: &str,
    creds: Option<(&str, &str)>,
) {
    if registry.is_tls() {
        cmd.arg(format!("--{prefix}cert-dir"))
            .arg(registry.ca_cert_dir());
        let (user, pass) = creds.unwrap_or((registry.username(), registry.password()));
        cmd.arg(format!("--{prefix}creds"))
            .arg(format!("{user}:{pass}"));
    } else {
        cmd.arg(format!("--{prefix}tls-verify=false"));
        // The token flavour is plain HTTP with credentials (for its token server).
        if let Some((user, pass)) = creds.or(registry.credentials()) {
            cmd.arg(format!("--{prefix}creds"))
                .arg(format!("{user}:{pass}"));
        }
    }
}

/// Runs and panics with skopeo's stderr unless it succeeded.
fn run_ok(mut cmd: Command) -> Output {
    let out = cmd.output().expect("run skopeo (apt-get install skopeo)");
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn push_command(
    layout_dir: &Path,
    tag_in_layout: &str,
    dest_ref: &str,
    registry: &Registry,
    creds: Option<(&str, &str)>,
) -> Command {
    let mut cmd = skopeo();
    cmd.args(["copy", "--all", "--preserve-digests", "--quiet"]);
    registry_flags(&mut cmd, registry, "dest-", creds);
    cmd.arg(format!("oci:{}:{tag_in_layout}", layout_dir.display()))
        .arg(format!("docker://{}/{dest_ref}", registry.host()));
    cmd
}

/// `skopeo copy --all --preserve-digests oci:DIR:TAG docker://HOST/DEST_REF`; panics on failure.
pub fn skopeo_push(layout_dir: &Path, tag_in_layout: &str, dest_ref: &str, registry: &Registry) {
    run_ok(push_command(
        layout_dir,
        tag_in_layout,
        dest_ref,
        registry,
        None,
    ));
}

/// Like [`skopeo_push`] with explicit credentials, returning skopeo's output instead of
/// asserting success: for negative tests (wrong password must be refused).
pub fn skopeo_push_with_creds(
    layout_dir: &Path,
    tag_in_layout: &str,
    dest_ref: &str,
    registry: &Registry,
    user: &str,
    password: &str,
) -> Output {
    push_command(
        layout_dir,
        tag_in_layout,
        dest_ref,
        registry,
        Some((user, password)),
    )
    .output()
    .expect("run skopeo")
}

/// `skopeo copy --all --preserve-digests docker://HOST/SRC_REF oci:DIR:TAG`: pull into a
/// layout, e.g. to compare what airlift pushed with an independent reader.
pub fn skopeo_pull(src_ref: &str, registry: &Registry, layout_dir: &Path, tag_in_layout: &str) {
    let mut cmd = skopeo();
    cmd.args(["copy", "--all", "--preserve-digests", "--quiet"]);
    registry_flags(&mut cmd, registry, "src-", None);
    cmd.arg(format!("docker://{}/{src_ref}", registry.host()))
        .arg(format!("oci:{}:{tag_in_layout}", layout_dir.display()));
    run_ok(cmd);
}

/// `skopeo inspect --raw`: the exact manifest (or index) bytes the registry serves.
pub fn skopeo_inspect_raw(reference: &str, registry: &Registry) -> Vec<u8> {
    let mut cmd = skopeo();
    cmd.args(["inspect", "--raw"]);
    registry_flags(&mut cmd, registry, "", None);
    cmd.arg(format!("docker://{}/{reference}", registry.host()));
    run_ok(cmd).stdout
}

/// `skopeo list-tags`: the tags of `repo` (no tag or digest in `repo`).
pub fn skopeo_list_tags(repo: &str, registry: &Registry) -> Vec<String> {
    let mut cmd = skopeo();
    cmd.arg("list-tags");
    registry_flags(&mut cmd, registry, "", None);
    cmd.arg(format!("docker://{}/{repo}", registry.host()));
    let out = run_ok(cmd);
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("list-tags prints JSON");
    json["Tags"]
        .as_array()
        .expect("list-tags has Tags")
        .iter()
        .map(|t| t.as_str().expect("tag is a string").to_string())
        .collect()
}

/// Pushes images `(repo:tag, spec)` with skopeo and returns what was written, in order.
pub fn push_images(
    reg: &Registry,
    images: &[(&str, super::layout::ImageSpec)],
) -> Vec<super::layout::WrittenImage> {
    let layout = tempfile::tempdir().unwrap();
    images
        .iter()
        .enumerate()
        .map(|(i, (reference, spec))| {
            let tag = format!("t{i}");
            let img = super::layout::write_oci_image(layout.path(), &tag, spec);
            skopeo_push(layout.path(), &tag, reference, reg);
            img
        })
        .collect()
}
