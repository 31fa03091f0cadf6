//! Where content lands at a destination registry.
//!
//! Two layouts: imgpkg's flat one (`--to-repo`: everything in one repository,
//! tagged `sha256-<hex>.imgpkg`) and a path-keeping one (`--to-registry`: each
//! repository moved under a prefix, original tags kept).

use std::collections::{BTreeMap, BTreeSet};

use super::StoreError;
use crate::digest::Digest;
use crate::graph::Graph;
use crate::reference::Reference;

/// Where the walk's content goes at the destination.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// Repositories (`registry/path`) each manifest must exist in, by digest.
    pub manifest_repos: BTreeMap<Digest, BTreeSet<String>>,
    /// Repositories each config/layer blob must exist in.
    pub blob_repos: BTreeMap<Digest, BTreeSet<String>>,
    /// Tags to set last: (`registry/path`, tag, manifest digest).
    pub tags: Vec<(String, String, Digest)>,
    /// Where each root and locked image ends up: original text → destination digest reference.
    pub mapping: BTreeMap<String, Reference>,
    /// `--to-registry`: the manifests each bundle repository also hosts (by mount) so that the
    /// stock imgpkg finds them there, by repository.
    pub hosted: BTreeMap<String, BTreeSet<Digest>>,
}

/// The destination layout asked for.
#[derive(Debug, Clone)]
pub enum Destination {
    /// `--to-repo REPO`: imgpkg's flat relocation layout.
    Repo(Reference),
    /// `--to-registry PREFIX`: `PREFIX/<original repository path>`.
    Registry(String),
}

/// imgpkg's tag for content kept alive in a flat repository.
pub fn imgpkg_tag(d: &Digest) -> String {
    format!("{}.imgpkg", d.tag_form())
}

fn repo_ref(repo: &str, d: &Digest) -> Result<Reference, StoreError> {
    Reference::parse(&format!("{repo}@{d}"))
        .map_err(|e| StoreError::Usage(format!("destination {repo}: {e}")))
}

impl Placement {
    /// Computes where everything in `graph` goes for `dest`.
    pub fn plan(graph: &Graph, dest: &Destination) -> Result<Placement, StoreError> {
        let mut p = Placement::default();
        let repo_for = |source_repo: &Reference| -> String {
            match dest {
                Destination::Repo(r) => r.repo_name(),
                Destination::Registry(prefix) => {
                    format!(
                        "{}/{}",
                        prefix.trim_end_matches('/'),
                        source_repo.repository()
                    )
                }
            }
        };
        if let Destination::Registry(prefix) = dest {
            // Validate the prefix once, with a clear message.
            repo_ref(
                &format!("{}/x", prefix.trim_end_matches('/')),
                &Digest::sha256_of(b""),
            )?;
        }
        // The repository path a manifest is known by: the lock's text for locked images, else where it was found.
        let mut known_as: BTreeMap<&Digest, Reference> = BTreeMap::new();
        for img in &graph.locked {
            if let Ok(r) = Reference::parse(&img.image) {
                known_as.entry(&img.digest).or_insert(r);
            }
        }
        for root in &graph.roots {
            known_as.insert(&root.digest, root.reference.clone());
        }
        for (d, node) in &graph.manifests {
            let source = known_as.get(d).unwrap_or(&node.repo);
            p.manifest_repos
                .entry(d.clone())
                .or_default()
                .insert(repo_for(source));
        }
        if let Destination::Registry(_) = dest {
            p.host_locked_images(graph);
        }
        // Artifacts go where what they are about goes (cosign and policy controllers look there).
        follow_subjects(&mut p, graph);
        // Index children follow their parent's repository, so `--to-registry` keeps each image whole.
        for node in graph.manifests.values() {
            let parent_repos = p
                .manifest_repos
                .get(&node.manifest.digest)
                .cloned()
                .unwrap_or_default();
            for child in node.manifest.child_manifests() {
                p.manifest_repos
                    .entry(child.digest.clone())
                    .or_default()
                    .extend(parent_repos.iter().cloned());
            }
        }
        follow_subjects(&mut p, graph);
        for (d, blob) in &graph.blobs {
            let repos = p.blob_repos.entry(d.clone()).or_default();
            for parent in &blob.referenced_by {
                if let Some(r) = p.manifest_repos.get(parent) {
                    repos.extend(r.iter().cloned());
                }
            }
        }
        // A tag can name one manifest: roots that would share one (eight images all tagged
        // `1.0` into one `--to-repo`) are refused before anything is pushed, naming them.
        let mut tagged: BTreeMap<(String, String), &crate::graph::Root> = BTreeMap::new();
        for root in &graph.roots {
            let repo = repo_for(&root.reference);
            if let Some(t) = root.reference.tag() {
                match tagged.get(&(repo.clone(), t.to_owned())) {
                    Some(other) if other.digest != root.digest => {
                        return Err(StoreError::Usage(format!(
                            "{} and {} would both be tagged {repo}:{t} with different content \
                             ({} and {}); import them into different repositories \
                             (--to-registry keeps their paths apart)",
                            other.reference.original(),
                            root.reference.original(),
                            other.digest,
                            root.digest
                        )));
                    }
                    _ => {
                        tagged.insert((repo.clone(), t.to_owned()), root);
                    }
                }
            }
        }
        for root in &graph.roots {
            let repo = repo_for(&root.reference);
            if let Some(t) = root.reference.tag() {
                p.tags
                    .push((repo.clone(), t.to_owned(), root.digest.clone()));
            }
            if let Destination::Repo(_) = dest {
                p.tags
                    .push((repo.clone(), imgpkg_tag(&root.digest), root.digest.clone()));
            }
            p.mapping.insert(
                root.reference.original().to_owned(),
                repo_ref(&repo, &root.digest)?,
            );
        }
        for img in &graph.locked {
            let source = known_as
                .get(&img.digest)
                .ok_or_else(|| StoreError::Usage(format!("{} missing", img.image)))?;
            let repo = repo_for(source);
            p.tags
                .push((repo.clone(), imgpkg_tag(&img.digest), img.digest.clone()));
            p.mapping
                .insert(img.image.clone(), repo_ref(&repo, &img.digest)?);
        }
        for (repo, digests) in &p.hosted {
            for d in digests {
                p.tags.push((repo.clone(), imgpkg_tag(d), d.clone()));
            }
        }
        // Cosign's tags are recreated next to every copy of their image.
        for r in &graph.referrers {
            if let Some(tag) = &r.tag {
                for repo in p.manifest_repos.get(&r.subject).into_iter().flatten() {
                    p.tags.push((repo.clone(), tag.clone(), r.digest.clone()));
                }
            }
        }
        p.tags.sort();
        p.tags.dedup();
        Ok(p)
    }

    /// imgpkg looks for a relocated bundle's images only in the bundle's own repository (its
    /// locations image, then each digest there, recursively for nested bundles pulled from
    /// it): so every bundle repository also receives, by cross-repository mount, every
    /// manifest its lock reaches, and is tagged as `imgpkg copy --to-repo` tags it.
    fn host_locked_images(&mut self, graph: &Graph) {
        let own: Vec<(Digest, BTreeSet<String>)> = graph
            .bundle_locks
            .iter()
            .filter_map(|l| {
                let repos = self.manifest_repos.get(&l.bundle)?.clone();
                Some((l.bundle.clone(), repos))
            })
            .collect();
        for (bundle, repos) in own {
            let reached = locked_closure(graph, &bundle);
            for repo in repos {
                let hosted = self.hosted.entry(repo.clone()).or_default();
                hosted.insert(bundle.clone());
                for d in &reached {
                    self.manifest_repos
                        .entry(d.clone())
                        .or_default()
                        .insert(repo.clone());
                    hosted.insert(d.clone());
                }
            }
        }
    }

    /// A digest reference for `d` in `repo`.
    pub fn at(repo: &str, d: &Digest) -> Result<Reference, StoreError> {
        repo_ref(repo, d)
    }
}

/// Every manifest a bundle's lock names, and what the locks of bundles among them name, in turn
/// (bounded by the graph: each bundle is visited once).
fn locked_closure(graph: &Graph, bundle: &Digest) -> BTreeSet<Digest> {
    let mut out = BTreeSet::new();
    let mut visited = BTreeSet::from([bundle.clone()]);
    let mut queue = vec![bundle.clone()];
    while let Some(b) = queue.pop() {
        for img in graph.locked.iter().filter(|l| l.locked_by == b) {
            out.insert(img.digest.clone());
            if img.kind == crate::graph::Kind::Bundle && visited.insert(img.digest.clone()) {
                queue.push(img.digest.clone());
            }
        }
    }
    out
}

/// Adds each referrer (subjects first, as discovered) to its subject's repositories.
fn follow_subjects(p: &mut Placement, graph: &Graph) {
    for r in &graph.referrers {
        let repos = p
            .manifest_repos
            .get(&r.subject)
            .cloned()
            .unwrap_or_default();
        p.manifest_repos
            .entry(r.digest.clone())
            .or_default()
            .extend(repos);
    }
}
