//! What a registry holds, read through the distribution API and skopeo, so tests can compare a
//! registry before and after an operation (nothing left behind, same result on a rerun).

use std::collections::BTreeMap;

use serde_json::Value;

use super::http::{catalog, http_get};
use super::registry::Registry;
use super::skopeo::skopeo_inspect_raw;

/// Sorted tags of `repo` that name content, leaving out airlift's own tag provenance record
/// (bookkeeping for rollback protection, tested on its own in `rollback.rs`), so that results
/// compare equal however the same content arrived.
pub fn registry_tags(reg: &Registry, repo: &str) -> Vec<String> {
    let mut t = all_tags(reg, repo);
    t.retain(|t| t != airlift::transfer::provenance::PROVENANCE_TAG);
    t
}

/// Sorted tags of `repo`, empty when the repository does not exist (a failed import may leave
/// blobs but no tag); panics with the registry's answer on any other non-200 status.
pub fn all_tags(reg: &Registry, repo: &str) -> Vec<String> {
    let resp = http_get(reg, &format!("/v2/{repo}/tags/list?n=10000"));
    if resp.status == 404 {
        return Vec::new();
    }
    assert_eq!(
        resp.status,
        200,
        "tags of {repo}: {}",
        String::from_utf8_lossy(&resp.body)
    );
    let v: Value = serde_json::from_slice(&resp.body).expect("tags answer is JSON");
    let mut t: Vec<String> = v["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| t.as_str().expect("tag is a string").to_owned())
                .collect()
        })
        .unwrap_or_default();
    t.sort();
    t
}

/// Every repository → every tag → the exact manifest bytes it serves.
pub fn registry_state(reg: &Registry) -> BTreeMap<String, BTreeMap<String, Vec<u8>>> {
    let mut state = BTreeMap::new();
    for repo in catalog(reg) {
        let mut by_tag = BTreeMap::new();
        for t in registry_tags(reg, &repo) {
            let raw = skopeo_inspect_raw(&format!("{repo}:{t}"), reg);
            by_tag.insert(t, raw);
        }
        state.insert(repo, by_tag);
    }
    state
}
