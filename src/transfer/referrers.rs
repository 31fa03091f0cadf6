//! Finds the signatures, attestations, SBOMs and other referrers of every manifest of a graph.
//!
//! Per repository one tag list (cached) says which cosign tags (`sha256-<hex>.sig/.att/.sbom`)
//! and referrers tag-schema indexes (`sha256-<hex>`) exist, so an image without artifacts costs
//! no request of its own; per registry one probe says whether the referrers API is served, and
//! only then is it asked per manifest, concurrently. Artifacts of artifacts are followed up to
//! [`MAX_DEPTH`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use super::TransferError;
use super::graph::Graph;
use super::walk::Walker;
use crate::digest::Digest;
use crate::oci::RawManifest;
use crate::reference::Reference;
use crate::referrers::{MAX_DEPTH, Referrer, ReferrerKind, artifact_info, cosign_tag, schema_tag};
use crate::registry::{Registries, RegistryError};

/// Cosign's tag suffixes, in the order they are looked for.
const COSIGN_SUFFIXES: [&str; 3] = ["sig", "att", "sbom"];

/// Entries of one referrers list followed (a hostile registry could list millions).
const MAX_LIST_ENTRIES: usize = 1024;

/// What discovery keeps.
#[derive(Debug, Clone, Default)]
pub struct DiscoverOptions {
    /// `--referrers-type`: kind names or artifact types to keep (empty: all).
    pub types: Vec<String>,
    /// Requests in flight at once.
    pub concurrency: usize,
}

/// What discovery found and passed over.
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    /// Referrers added to the graph.
    pub added: usize,
    /// Artifacts seen but left out (`--referrers-type`), by digest.
    pub filtered: usize,
    /// Artifacts that could not be carried, and why (unsupported manifest type, …).
    pub skipped: Vec<String>,
    /// Requests spent: tag lists, API calls, artifact manifests.
    pub requests: usize,
}

/// One artifact found for a subject.
struct Found {
    manifest: RawManifest,
    at: Reference,
    referrer: Referrer,
}

/// Adds every referrer of every manifest in `graph` (recursively) to it.
pub async fn discover(
    registries: &Registries,
    graph: &mut Graph,
    opts: &DiscoverOptions,
) -> Result<Discovery, TransferError> {
    let walker = Walker::new(registries, opts.concurrency);
    let concurrency = opts.concurrency.max(1);
    let mut report = Discovery::default();
    let mut tags: HashMap<String, Arc<HashSet<String>>> = HashMap::new();
    let mut api: HashMap<String, bool> = HashMap::new();
    let mut known: BTreeSet<(Digest, Digest)> = graph
        .referrers
        .iter()
        .map(|r| (r.digest.clone(), r.subject.clone()))
        .collect();
    let mut frontier: Vec<(Digest, Reference)> = graph
        .manifests
        .iter()
        .map(|(d, n)| (d.clone(), n.repo.clone()))
        .collect();
    let mut looked_at: HashSet<Digest> = HashSet::new();
    for _depth in 0..MAX_DEPTH {
        frontier.retain(|(d, _)| looked_at.insert(d.clone()));
        if frontier.is_empty() {
            break;
        }
        // One tag list per repository, once per run.
        let missing: BTreeSet<String> = frontier
            .iter()
            .map(|(_, r)| r.repo_name())
            .filter(|n| !tags.contains_key(n))
            .collect();
        let repos: Vec<Reference> = missing
            .iter()
            .filter_map(|n| frontier.iter().find(|(_, r)| &r.repo_name() == n))
            .map(|(_, r)| r.clone())
            .collect();
        let lists: Vec<(String, HashSet<String>)> = futures::stream::iter(repos)
            .map(|r| async move {
                let client = registries.client(r.registry()).await?;
                let list = client.list_tags(&r).await?;
                Ok::<_, TransferError>((r.repo_name(), list.into_iter().collect()))
            })
            .buffer_unordered(concurrency)
            .try_collect()
            .await?;
        report.requests += lists.len();
        for (name, list) in lists {
            tags.insert(name, Arc::new(list));
        }
        // One probe per registry: does it serve the referrers API?
        for (d, r) in &frontier {
            if !api.contains_key(r.registry()) {
                let client = registries.client(r.registry()).await?;
                let served = client.referrers(r, d).await?.is_some();
                report.requests += 1;
                api.insert(r.registry().to_owned(), served);
            }
        }
        let jobs: Vec<(Digest, Reference, Arc<HashSet<String>>, bool)> = frontier
            .drain(..)
            .map(|(d, r)| {
                let t = tags.get(&r.repo_name()).cloned().unwrap_or_default();
                let a = api.get(r.registry()).copied().unwrap_or(false);
                (d, r, t, a)
            })
            .collect();
        let walker = &walker;
        let results: Vec<(Vec<Found>, usize, Vec<String>)> = futures::stream::iter(jobs)
            .map(|(d, r, t, a)| async move { find(registries, walker, &d, &r, &t, a).await })
            .buffer_unordered(concurrency)
            .try_collect()
            .await?;
        for (found, requests, skipped) in results {
            report.requests += requests;
            report.skipped.extend(skipped);
            for f in found {
                if !f.referrer.wanted(&opts.types) {
                    report.filtered += 1;
                    continue;
                }
                if !known.insert((f.referrer.digest.clone(), f.referrer.subject.clone())) {
                    continue;
                }
                let d = f.manifest.digest.clone();
                if !graph.manifests.contains_key(&d) {
                    walker.add_tree(graph, f.manifest, &f.at).await?;
                }
                frontier.push((d, f.at));
                graph.referrers.push(f.referrer);
                report.added += 1;
            }
        }
    }
    Ok(report)
}

/// The artifacts of one subject: its cosign tags, its tag-schema index's entries, and what the
/// referrers API lists (when `api`); returns them with the requests spent and what was skipped.
async fn find(
    registries: &Registries,
    walker: &Walker<'_>,
    subject: &Digest,
    repo: &Reference,
    tags: &HashSet<String>,
    api: bool,
) -> Result<(Vec<Found>, usize, Vec<String>), TransferError> {
    let mut found = Vec::new();
    let mut skipped = Vec::new();
    let mut requests = 0;
    for suffix in COSIGN_SUFFIXES {
        let tag = cosign_tag(subject, suffix);
        if !tags.contains(&tag) {
            continue;
        }
        let at = repo.with_tag(&tag);
        requests += 1;
        match walker.manifest(&at).await {
            Ok(m) => {
                let info = artifact_info(&m.bytes);
                let kind = ReferrerKind::of_cosign_suffix(suffix).unwrap_or(ReferrerKind::Artifact);
                found.push(Found {
                    at: repo.with_digest(&m.digest),
                    referrer: Referrer {
                        digest: m.digest.clone(),
                        subject: subject.clone(),
                        kind,
                        artifact_type: info.artifact_type,
                        tag: Some(tag),
                    },
                    manifest: m,
                });
            }
            Err(RegistryError::NotFound { .. }) => {}
            Err(RegistryError::Manifest { source, .. }) => skipped.push(format!("{at}: {source}")),
            Err(e) => return Err(e.into()),
        }
    }
    // OCI 1.1 referrers: the API where served, else the tag-schema index.
    let mut listed: Vec<Digest> = Vec::new();
    if api {
        let client = registries.client(repo.registry()).await?;
        requests += 1;
        if let Some(list) = client.referrers(repo, subject).await? {
            listed.extend(list.into_iter().take(MAX_LIST_ENTRIES).map(|d| d.digest));
        }
    }
    let schema = schema_tag(subject);
    if tags.contains(&schema) {
        requests += 1;
        let at = repo.with_tag(&schema);
        match walker.manifest(&at).await {
            Ok(index) => listed.extend(
                index
                    .child_manifests()
                    .iter()
                    .take(MAX_LIST_ENTRIES)
                    .map(|d| d.digest.clone()),
            ),
            Err(RegistryError::NotFound { .. }) => {}
            Err(RegistryError::Manifest { source, .. }) => skipped.push(format!("{at}: {source}")),
            Err(e) => return Err(e.into()),
        }
    }
    let mut seen = HashSet::new();
    for d in listed {
        if !seen.insert(d.clone()) {
            continue;
        }
        let at = repo.with_digest(&d);
        requests += 1;
        let m = match walker.manifest(&at).await {
            Ok(m) => m,
            Err(RegistryError::Manifest { source, .. }) => {
                skipped.push(format!("{at}: {source}"));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let info = artifact_info(&m.bytes);
        // A list may name anything; only a manifest that says it is about this subject counts.
        if info.subject.as_ref() != Some(subject) {
            skipped.push(format!(
                "{at}: listed as a referrer of {subject} but its subject is {}",
                info.subject
                    .as_ref()
                    .map_or_else(|| "absent".to_owned(), Digest::to_string)
            ));
            continue;
        }
        let kind = ReferrerKind::of_artifact_type(info.artifact_type.as_deref().unwrap_or(""));
        found.push(Found {
            at,
            referrer: Referrer {
                digest: m.digest.clone(),
                subject: subject.clone(),
                kind,
                artifact_type: info.artifact_type,
                tag: None,
            },
            manifest: m,
        });
    }
    Ok((found, requests, skipped))
}
