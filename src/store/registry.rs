//! Registries as a store: the graph's repositories as a source, a placement as a sink.
//!
//! The sink owns the placement policy (which repositories each blob, manifest and tag goes
//! to) and cross-repository mounting: a blob already uploaded to one repository of a
//! registry, or held by the source on the same registry, is mounted into the others instead
//! of being sent again.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::place::Placement;
use super::{ByteStream, Pushed, Sink, Source, StoreError};
use crate::digest::Digest;
use crate::graph::Graph;
use crate::oci::{Descriptor, RawManifest};
use crate::reference::Reference;
use crate::registry::{Probe, Registries, RegistryError};

/// Reads blobs from the repositories a graph was walked in.
pub struct RegistrySource<'a> {
    registries: &'a Registries,
    locations: HashMap<Digest, Reference>,
    hash: bool,
}

impl<'a> RegistrySource<'a> {
    /// A source for the blobs and manifests of `graph`, each at the repository it was found in.
    pub fn new(registries: &'a Registries, graph: &Graph) -> RegistrySource<'a> {
        let mut locations: HashMap<Digest, Reference> = graph
            .blobs
            .iter()
            .map(|(d, b)| (d.clone(), b.repo.clone()))
            .collect();
        for (d, m) in &graph.manifests {
            locations.entry(d.clone()).or_insert_with(|| m.repo.clone());
        }
        RegistrySource {
            registries,
            locations,
            hash: true,
        }
    }

    /// Checks only each blob's length: for a sink that hashes every byte itself and refuses a
    /// mismatch (the archive writer), one sha256 pass per byte instead of two.
    pub fn length_checked(mut self) -> Self {
        self.hash = false;
        self
    }
}

impl Source for RegistrySource<'_> {
    async fn fetch(&self, desc: &Descriptor) -> Result<ByteStream, StoreError> {
        let repo = self
            .locations
            .get(&desc.digest)
            .ok_or_else(|| StoreError::NotFound(desc.digest.clone()))?;
        let client = self.registries.client(repo.registry()).await?;
        let stream = if self.hash {
            client.get_blob(repo, desc)
        } else {
            client.get_blob_length_checked(repo, desc)
        };
        Ok(stream.into_io_stream().boxed())
    }

    fn location(&self, digest: &Digest) -> Option<Reference> {
        self.locations.get(digest).cloned()
    }
}

/// A small image made on the spot (imgpkg's locations image, airlift's relocations image),
/// pushed by the registry sink at commit, before the tags.
#[derive(Debug, Clone)]
pub struct ExtraImage {
    /// `registry/path` it goes to.
    pub repo: String,
    /// The tags it gets.
    pub tags: Vec<String>,
    /// Its manifest.
    pub manifest: RawManifest,
    /// Its config and layer bytes.
    pub blobs: Vec<(Descriptor, Bytes)>,
}

/// Pushes a small image's blobs and manifest by digest (not its tags), skipping what is there.
pub async fn push_image(registries: &Registries, image: &ExtraImage) -> Result<(), StoreError> {
    let dest = at(&image.repo, &image.manifest.digest)?;
    let client = registries.client(dest.registry()).await?;
    for (desc, bytes) in &image.blobs {
        if !client.blob_exists(&dest, &desc.digest).await? {
            let data = bytes.clone();
            client
                .put_blob(&dest, desc, || {
                    let data = data.clone();
                    async move { Ok(futures::stream::iter([Ok::<_, std::io::Error>(data)])) }
                })
                .await?;
        }
    }
    if !client.manifest_exists(&dest).await? {
        client.put_manifest(&dest, &image.manifest).await?;
    }
    Ok(())
}

/// Writes to registries where a [`Placement`] says, tags last.
pub struct RegistrySink<'a> {
    registries: &'a Registries,
    placement: &'a Placement,
    manifests: HashMap<Digest, RawManifest>,
    extras: Vec<ExtraImage>,
    /// The first destination repository that received each blob, to mount from.
    received: Mutex<HashMap<Digest, Vec<Reference>>>,
    /// Blobs a repository was just found to lack: the push that follows the engine's
    /// existence check does not ask the registry a second time, and uploads into the session
    /// the existence probe opened, if it opened one.
    lacking: Mutex<HashMap<(Digest, String), Option<reqwest::Url>>>,
    /// Registries that refused an existence probe (a mount from the repository itself):
    /// asked by HEAD from then on.
    no_probes: Mutex<HashSet<String>>,
    /// Blobs and manifests this run sent into a repository that lacked them: a manifest over
    /// one of them cannot be there yet, nor a tag on such a manifest, so neither is asked for.
    sent: Mutex<HashSet<(Digest, String)>>,
    /// (repository, manifest) pairs a tag will name, of manifests no other manifest lists:
    /// when new, the tag's PUT is their only push (one request, and nothing by digest early).
    tag_pushed: HashSet<(String, Digest)>,
    /// Re-read blobs the destination already has and check their digests.
    verify_existing: bool,
    /// OCI 1.1 referrers (not cosign tags) to list in the destination's tag-schema indexes.
    referrers: Vec<crate::referrers::Referrer>,
}

impl<'a> RegistrySink<'a> {
    /// A sink for `placement`; `extras` (imgpkg's locations image, airlift's relocations
    /// image) are pushed at commit, before the tags.
    pub fn new(
        registries: &'a Registries,
        placement: &'a Placement,
        graph: &Graph,
        extras: Vec<ExtraImage>,
    ) -> RegistrySink<'a> {
        RegistrySink {
            registries,
            placement,
            manifests: graph
                .manifests
                .iter()
                .map(|(d, n)| (d.clone(), n.manifest.clone()))
                .collect(),
            extras,
            received: Mutex::new(HashMap::new()),
            lacking: Mutex::new(HashMap::new()),
            no_probes: Mutex::new(HashSet::new()),
            sent: Mutex::new(HashSet::new()),
            tag_pushed: {
                let listed: HashSet<&Digest> = graph
                    .manifests
                    .values()
                    .flat_map(|n| n.manifest.child_manifests())
                    .map(|c| &c.digest)
                    .collect();
                placement
                    .tags
                    .iter()
                    .filter(|(_, _, d)| !listed.contains(d))
                    .map(|(repo, _, d)| (repo.clone(), d.clone()))
                    .collect()
            },
            verify_existing: false,
            referrers: graph
                .referrers
                .iter()
                .filter(|r| r.tag.is_none())
                .cloned()
                .collect(),
        }
    }

    /// Trusts no blob the destination already holds: each is read back and hashed, so a
    /// registry that serves other bytes under a digest (poisoned storage) is caught.
    pub fn verify_existing(mut self, on: bool) -> Self {
        self.verify_existing = on;
        self
    }

    /// Whether `dest` holds the blob (read back and verified with `verify_existing`). With
    /// `probe`, a lacking blob gets its upload session opened by the same request.
    async fn holds(
        &self,
        dest: &Reference,
        desc: &Descriptor,
        probe: bool,
    ) -> Result<bool, StoreError> {
        let key = (desc.digest.clone(), dest.repo_name());
        if self.lacking.lock().is_ok_and(|l| l.contains_key(&key)) {
            return Ok(false);
        }
        let client = self.registries.client(dest.registry()).await?;
        let mut session = None;
        let probed = if probe && self.probes(dest) {
            match client.probe_blob(dest, &desc.digest).await {
                Ok(Probe::Present) => Some(true),
                Ok(Probe::Absent(url)) => {
                    session = Some(url);
                    Some(false)
                }
                Err(_) => {
                    if let Ok(mut n) = self.no_probes.lock() {
                        n.insert(dest.registry().to_owned());
                    }
                    None
                }
            }
        } else {
            None
        };
        let exists = match probed {
            Some(known) => known,
            None => match client.blob_exists(dest, &desc.digest).await {
                // A registry killed mid-write can keep answering 500 for a blob it half
                // stored; uploading it again repairs that, and a registry that is truly
                // broken fails the upload.
                Err(RegistryError::Server {
                    status: Some(500..=599),
                    ..
                }) => false,
                other => other?,
            },
        };
        if !exists {
            if let Ok(mut l) = self.lacking.lock() {
                l.insert(key, session);
            }
            return Ok(false);
        }
        if self.verify_existing {
            let mut s = client.get_blob(dest, desc).into_io_stream().boxed();
            while let Some(chunk) = s.next().await {
                chunk.map_err(|e| {
                    StoreError::Verification(format!(
                        "{} already holds blob {}, but what it serves does not match it ({e}); \
                         airlift did not write it: remove it from the registry and investigate \
                         who did",
                        dest.repo_name(),
                        desc.digest
                    ))
                })?;
            }
        }
        Ok(true)
    }

    /// Whether to ask `dest`'s registry by probe: not once it refused one.
    fn probes(&self, dest: &Reference) -> bool {
        self.no_probes
            .lock()
            .is_ok_and(|n| !n.contains(dest.registry()))
    }

    /// Whether `dest` could get the blob by a cross-repository mount: then a HEAD asks, and
    /// no upload session is opened that the mount would leave behind.
    fn mountable(&self, d: &Digest, dest: &Reference, from: Option<&Reference>) -> bool {
        self.mount_candidates(d, from)
            .iter()
            .any(|src| src.registry() == dest.registry() && src.repository() != dest.repository())
    }

    /// The upload session a probe opened for `d` in `dest`, if any; forgets that it lacks `d`.
    fn take_session(&self, d: &Digest, dest: &Reference) -> Option<reqwest::Url> {
        self.lacking
            .lock()
            .ok()
            .and_then(|mut l| l.remove(&(d.clone(), dest.repo_name())))
            .flatten()
    }

    fn blob_targets(&self, d: &Digest) -> Result<Vec<Reference>, StoreError> {
        self.placement
            .blob_repos
            .get(d)
            .into_iter()
            .flatten()
            .map(|repo| at(repo, d))
            .collect()
    }

    fn mount_candidates(&self, d: &Digest, from: Option<&Reference>) -> Vec<Reference> {
        let mut out: Vec<Reference> = self
            .received
            .lock()
            .ok()
            .and_then(|r| r.get(d).cloned())
            .unwrap_or_default();
        out.extend(from.cloned());
        out
    }

    /// Mounts `d` into `dest` from a repository of the same registry that holds it: one
    /// that received it during this run, or `from` (the source's repository); true if it took.
    async fn mount(
        &self,
        dest: &Reference,
        d: &Digest,
        from: Option<&Reference>,
    ) -> Result<bool, StoreError> {
        let client = self.registries.client(dest.registry()).await?;
        for src in self.mount_candidates(d, from) {
            if src.registry() == dest.registry()
                && src.repository() != dest.repository()
                && client.mount_blob(dest, &src, d).await
                && client.blob_exists(dest, d).await?
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Makes `desc` present in every repository it belongs in without sending bytes (a delta
    /// relies on blobs its base delivered): mounted from a repository that has it; false when
    /// one repository still lacks it.
    pub async fn ensure_present(&self, desc: &Descriptor) -> Result<bool, StoreError> {
        let targets = self.blob_targets(&desc.digest)?;
        let mut lacking = Vec::new();
        for dest in targets {
            if self.holds(&dest, desc, false).await? {
                self.remember(&desc.digest, &dest);
            } else {
                lacking.push(dest);
            }
        }
        for dest in lacking {
            if !self.mount(&dest, &desc.digest, None).await? {
                return Ok(false);
            }
            self.remember(&desc.digest, &dest);
        }
        Ok(true)
    }

    /// The blobs among `descs` missing from at least one repository they belong in, sorted;
    /// asked by HEAD, since no upload follows.
    pub async fn absent(&self, descs: &[Descriptor]) -> Result<Vec<Digest>, StoreError> {
        let checks: Vec<Option<Digest>> = futures::stream::iter(descs.to_vec())
            .map(|desc| async move {
                let there = self.held_everywhere(&desc, None, false).await?;
                Ok::<_, StoreError>((!there).then_some(desc.digest))
            })
            .buffer_unordered(8)
            .try_collect()
            .await?;
        let mut out: Vec<Digest> = checks.into_iter().flatten().collect();
        out.sort();
        Ok(out)
    }

    /// Whether every repository `desc` belongs in holds it; `probe` as for [`Self::holds`],
    /// except where a cross-repository mount could supply it.
    async fn held_everywhere(
        &self,
        desc: &Descriptor,
        from: Option<&Reference>,
        probe: bool,
    ) -> Result<bool, StoreError> {
        for dest in self.blob_targets(&desc.digest)? {
            let probe = probe && !self.mountable(&desc.digest, &dest, from);
            if !self.holds(&dest, desc, probe).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn mark_sent(&self, d: &Digest, dest: &Reference) {
        if let Ok(mut s) = self.sent.lock() {
            s.insert((d.clone(), dest.repo_name()));
        }
    }

    fn was_sent(&self, d: &Digest, dest: &Reference) -> bool {
        self.sent
            .lock()
            .is_ok_and(|s| s.contains(&(d.clone(), dest.repo_name())))
    }

    fn remember(&self, d: &Digest, dest: &Reference) {
        self.take_session(d, dest);
        // Only a blob bound for several repositories is ever mounted from one of them.
        if self.placement.blob_repos.get(d).is_none_or(|r| r.len() < 2) {
            return;
        }
        if let Ok(mut r) = self.received.lock() {
            r.entry(d.clone()).or_default().push(dest.clone());
        }
    }
}

fn at(repo: &str, d: &Digest) -> Result<Reference, StoreError> {
    Reference::parse(&format!("{repo}@{d}"))
        .map_err(|e| StoreError::Refused(format!("destination {repo}: {e}")))
}

impl Sink for RegistrySink<'_> {
    async fn exists(
        &self,
        desc: &Descriptor,
        from: Option<&Reference>,
    ) -> Result<bool, StoreError> {
        self.held_everywhere(desc, from, true).await
    }

    async fn push_blob<F, Fut>(
        &self,
        desc: &Descriptor,
        from: Option<&Reference>,
        open: F,
    ) -> Result<Pushed, StoreError>
    where
        F: Fn() -> Fut + Send + Sync,
        Fut: Future<Output = Result<ByteStream, StoreError>> + Send,
    {
        let mut pushed = Pushed::default();
        for dest in self.blob_targets(&desc.digest)? {
            let client = self.registries.client(dest.registry()).await?;
            let probe = !self.mountable(&desc.digest, &dest, from);
            if self.holds(&dest, desc, probe).await? {
                pushed.present += 1;
                self.remember(&desc.digest, &dest);
                continue;
            }
            let session = self.take_session(&desc.digest, &dest);
            if session.is_none() && self.mount(&dest, &desc.digest, from).await? {
                pushed.mounts += 1;
            } else {
                client
                    .put_blob_in(&dest, desc, session, || async {
                        open().await.map_err(std::io::Error::other)
                    })
                    .await?;
                pushed.uploads += 1;
                pushed.uploaded += desc.size;
            }
            self.mark_sent(&desc.digest, &dest);
            self.remember(&desc.digest, &dest);
        }
        Ok(pushed)
    }

    async fn push_manifest(&self, m: &RawManifest) -> Result<bool, StoreError> {
        let mut pushed = false;
        let repos = self.placement.manifest_repos.get(&m.digest);
        for repo in repos.into_iter().flatten() {
            let dest = at(repo, &m.digest)?;
            let client = self.registries.client(dest.registry()).await?;
            let fresh = m
                .blobs()
                .into_iter()
                .chain(m.child_manifests())
                .any(|c| self.was_sent(&c.digest, &dest));
            if fresh && self.tag_pushed.contains(&(repo.clone(), m.digest.clone())) {
                // New, and a tag at commit will name it: that PUT pushes it.
                self.mark_sent(&m.digest, &dest);
                pushed = true;
            } else if fresh || !client.manifest_exists(&dest).await? {
                client.put_manifest(&dest, m).await?;
                self.mark_sent(&m.digest, &dest);
                pushed = true;
            }
        }
        Ok(pushed)
    }

    async fn commit(&self) -> Result<Vec<String>, StoreError> {
        for extra in &self.extras {
            push_image(self.registries, extra).await?;
        }
        let mut named = self.list_referrers().await?;
        let mut jobs: Vec<(String, String, RawManifest)> = Vec::new();
        for (repo, tag, d) in &self.placement.tags {
            let m = self
                .manifests
                .get(d)
                .ok_or_else(|| StoreError::NotFound(d.clone()))?;
            jobs.push((repo.clone(), tag.clone(), m.clone()));
        }
        for e in &self.extras {
            jobs.extend(
                e.tags
                    .iter()
                    .map(|t| (e.repo.clone(), t.clone(), e.manifest.clone())),
            );
        }
        let tags: Vec<String> = futures::stream::iter(jobs)
            .map(|(repo, tag, m)| async move { self.tag(&repo, &tag, &m).await })
            .buffer_unordered(8)
            .try_collect()
            .await?;
        named.extend(tags);
        Ok(named)
    }
}

impl RegistrySink<'_> {
    /// Makes every OCI 1.1 referrer findable by its subject: a registry serving the referrers
    /// API lists it already (its manifest was pushed); elsewhere the `sha256-<hex>` tag-schema
    /// index is written, merged with what it lists. Returns the tags written.
    async fn list_referrers(&self) -> Result<Vec<String>, StoreError> {
        use crate::referrers::{artifact_info, list_entry, merge_schema_index, schema_tag};
        let mut by_target: std::collections::BTreeMap<(String, Digest), Vec<serde_json::Value>> =
            std::collections::BTreeMap::new();
        for r in &self.referrers {
            let m = self
                .manifests
                .get(&r.digest)
                .ok_or_else(|| StoreError::NotFound(r.digest.clone()))?;
            let entry = list_entry(
                &m.media_type,
                &m.digest,
                m.bytes.len() as u64,
                &artifact_info(&m.bytes),
            );
            for repo in self
                .placement
                .manifest_repos
                .get(&r.subject)
                .into_iter()
                .flatten()
            {
                by_target
                    .entry((repo.clone(), r.subject.clone()))
                    .or_default()
                    .push(entry.clone());
            }
        }
        let mut api: HashMap<String, bool> = HashMap::new();
        let mut written = Vec::new();
        for ((repo, subject), entries) in by_target {
            let dest = at(&repo, &subject)?;
            let client = self.registries.client(dest.registry()).await?;
            let served = match api.get(dest.registry()) {
                Some(s) => *s,
                None => {
                    let s = client.referrers(&dest, &subject).await?.is_some();
                    api.insert(dest.registry().to_owned(), s);
                    s
                }
            };
            if served {
                continue;
            }
            let tag = schema_tag(&subject);
            let tagged = Reference::parse(&format!("{repo}:{tag}"))
                .map_err(|e| StoreError::Refused(format!("tag {repo}:{tag}: {e}")))?;
            let existing = match client.get_manifest(&tagged).await {
                Ok(m) => Some(m.bytes),
                Err(RegistryError::NotFound { .. }) => None,
                Err(e) => return Err(e.into()),
            };
            let merged = merge_schema_index(&tagged.to_string(), existing.as_deref(), &entries)
                .map_err(|e| StoreError::Refused(e.to_string()))?;
            if let Some(bytes) = merged {
                let index = RawManifest::from_bytes(
                    Bytes::from(bytes),
                    Some(crate::oci::media_type::OCI_INDEX),
                )
                .map_err(|e| StoreError::Refused(format!("{tagged}: {e}")))?;
                client.put_manifest(&tagged, &index).await?;
            }
            written.push(tagged.to_string());
        }
        Ok(written)
    }
}

impl RegistrySink<'_> {
    /// Sets one tag, unless it already points at the right manifest: registries with
    /// immutable tags refuse even an unchanged PUT, which would fail every resumed run.
    async fn tag(
        &self,
        repo: &str,
        tag: &str,
        manifest: &RawManifest,
    ) -> Result<String, StoreError> {
        let dest = Reference::parse(&format!("{repo}:{tag}"))
            .map_err(|e| StoreError::Refused(format!("tag {repo}:{tag}: {e}")))?;
        let client = self.registries.client(dest.registry()).await?;
        let current = |r: Result<Digest, RegistryError>| match r {
            Ok(current) => Ok(Some(current)),
            Err(RegistryError::NotFound { .. }) => Ok(None),
            Err(e) => Err(StoreError::from(e)),
        };
        // A manifest this run just pushed cannot be tagged yet: set the tag without asking,
        // and ask only to explain a refusal. Otherwise a tag already right is left untouched.
        let fresh = self.was_sent(&manifest.digest, &dest);
        let before = if fresh {
            None
        } else {
            match current(client.resolve_digest(&dest).await)? {
                Some(d) if d == manifest.digest => return Ok(dest.to_string()),
                other => other,
            }
        };
        let e = match client.put_manifest(&dest, manifest).await {
            Ok(()) => return Ok(dest.to_string()),
            Err(e) => e,
        };
        let before = match before {
            None if fresh => current(client.resolve_digest(&dest).await).unwrap_or(None),
            b => b,
        };
        match before {
            // Refused only because it was already set (by someone else meanwhile).
            Some(d) if d == manifest.digest => Ok(dest.to_string()),
            Some(d) => Err(StoreError::Refused(format!(
                "{dest} points at {d}; the registry refused to move it to {}: {e} \
                 (a registry with immutable tags never moves a tag: delete the tag there, \
                 or import into another repository)",
                manifest.digest
            ))),
            None => Err(e.into()),
        }
    }
}
