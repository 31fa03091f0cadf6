//! The one namespace `serve` answers from, built once at startup from opened archives.
//!
//! Every conflict (two hosts sharing a short name, two archives giving one tag different
//! digests, a delta whose base is not given) is found here and refused before the first
//! request, so the handlers never have to choose between two answers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use bytes::Bytes;
use serde::Deserialize;

use super::ServeError;
use super::route::is_component;
use crate::archive::reader::ArchiveReader;
use crate::digest::Digest;
use crate::reference::Reference;
use crate::store::archive::{ArchiveStore, Extent, Trust, open_archives};

/// Docker Hub as references name it, and as mirror requests (`?ns=`) and users write it.
const DOCKER_HUB_INTERNAL: &str = "index.docker.io";
const DOCKER_HUB: &str = "docker.io";

/// A manifest served from memory: the exact bytes the archive carries.
#[derive(Debug, Clone)]
pub struct ServedManifest {
    /// Exact bytes.
    pub bytes: Bytes,
    /// Its media type (the `Content-Type` served).
    pub media_type: String,
}

/// Where a blob is read from, and what serving it has shown so far.
#[derive(Debug)]
pub struct ServedBlob {
    /// Index into [`Catalog::archives`].
    pub archive: usize,
    /// Its size.
    pub size: u64,
    /// Its byte runs in the archive files.
    pub extents: Vec<Extent>,
    state: AtomicU8,
}

/// What is known of a blob's bytes on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobState {
    /// Not yet read whole since startup.
    Unchecked,
    /// Read whole and matched its digest.
    Verified,
    /// Failed its digest: refused from now on.
    Bad,
}

impl ServedBlob {
    /// What serving has shown of this blob.
    pub fn state(&self) -> BlobState {
        match self.state.load(Ordering::Acquire) {
            1 => BlobState::Verified,
            2 => BlobState::Bad,
            _ => BlobState::Unchecked,
        }
    }

    /// Records a whole read's outcome; a bad blob stays bad.
    pub fn mark(&self, ok: bool) {
        if ok {
            let _ = self
                .state
                .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire);
        } else {
            self.state.store(2, Ordering::Release);
        }
    }
}

/// One entry of a referrers response.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferrerDescriptor {
    /// The referrer manifest's media type.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// `artifactType`, or the config's media type when the manifest has none (the spec's rule).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The manifest's annotations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Everything `serve` can answer, keyed the way requests ask.
pub struct Catalog {
    /// The archives (or volume sets) served, in the order given.
    pub archives: Vec<Arc<ArchiveStore>>,
    manifests: HashMap<Digest, ServedManifest>,
    blobs: HashMap<Digest, ServedBlob>,
    /// Repository name → tag → manifest digest.
    repos: BTreeMap<String, BTreeMap<String, Digest>>,
    referrers: HashMap<Digest, Vec<ReferrerDescriptor>>,
    prefix_hosts: bool,
}

/// Options that shape the namespace.
#[derive(Debug, Clone, Default)]
pub struct CatalogOptions {
    /// Serve only `<host>/<path>` names (sources from different hosts share short paths).
    pub prefix_hosts: bool,
}

impl Catalog {
    /// Opens every archive (signatures first, under the archive rules) and builds the namespace.
    pub async fn open(
        paths: &[PathBuf],
        trust: &Trust,
        opts: &CatalogOptions,
    ) -> Result<Catalog, ServeError> {
        let mut archives = Vec::new();
        for group in group_volumes(paths).await? {
            let store = open_archives(&group, trust)
                .await
                .map_err(|e| ServeError::Archive(e.to_string()))?;
            if !store.is_random_access() {
                return Err(ServeError::Usage(format!(
                    "{} is zstd-compressed and cannot be served in place (blobs are read by byte \
                     offset): decompress it once with `zstd -d {} -o app.tar` and serve app.tar \
                     (the signatures cover the uncompressed archive, so it still verifies)",
                    store.path.display(),
                    store.path.display()
                )));
            }
            archives.push(Arc::new(store));
        }
        Catalog::build(archives, opts)
    }

    /// Builds the namespace from archives already opened.
    pub fn build(
        archives: Vec<Arc<ArchiveStore>>,
        opts: &CatalogOptions,
    ) -> Result<Catalog, ServeError> {
        let mut c = Catalog {
            archives: Vec::new(),
            manifests: HashMap::new(),
            blobs: HashMap::new(),
            repos: BTreeMap::new(),
            referrers: HashMap::new(),
            prefix_hosts: opts.prefix_hosts,
        };
        // Short names first: two hosts sharing a path is the conflict users must resolve first.
        if !opts.prefix_hosts {
            let mut short_sources: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for store in &archives {
                for r in named_references(store) {
                    short_sources
                        .entry(r.0.repository().to_owned())
                        .or_default()
                        .insert(r.0.repo_name());
                }
            }
            if let Some((short, sources)) = short_sources.iter().find(|(_, s)| s.len() > 1) {
                return Err(ServeError::Conflict(format!(
                    "{} would all be served as {short}: pass --prefix-hosts to serve each only \
                     under its host-qualified name",
                    sources.iter().cloned().collect::<Vec<_>>().join(" and ")
                )));
            }
        }
        // Which archive first set each name:tag, to name both sides of a conflict.
        let mut tag_origin: HashMap<(String, String), (Digest, PathBuf)> = HashMap::new();
        for (i, store) in archives.iter().enumerate() {
            for node in store.graph.manifests.values() {
                let m = &node.manifest;
                c.manifests
                    .entry(m.digest.clone())
                    .or_insert_with(|| ServedManifest {
                        bytes: m.bytes.clone(),
                        media_type: m.media_type.clone(),
                    });
            }
            for d in store.graph.blobs.keys() {
                if c.blobs.contains_key(d) || !store.carries(d) {
                    continue;
                }
                let Some(extents) = store.extents(d) else {
                    continue;
                };
                let size = extents.iter().map(|e| e.size).sum();
                c.blobs.insert(
                    d.clone(),
                    ServedBlob {
                        archive: i,
                        size,
                        extents,
                        state: AtomicU8::new(0),
                    },
                );
            }
            // Cosign tags name their artifact by its subject's digest: one per subject, so
            // serving them under every name of the archive cannot conflict.
            let cosign_tags: Vec<(String, Digest)> = store
                .header
                .manifest
                .referrers
                .iter()
                .filter_map(|r| r.tag.clone().map(|t| (t, r.digest.clone())))
                .collect();
            let named = named_references(store);
            for (reference, root_digest) in named {
                for name in served_names(&reference, opts.prefix_hosts)? {
                    let tags = c.repos.entry(name.clone()).or_default();
                    for (t, d) in &cosign_tags {
                        tags.entry(t.clone()).or_insert_with(|| d.clone());
                    }
                    let (Some(tag), Some(d)) = (reference.tag(), root_digest.as_ref()) else {
                        continue;
                    };
                    let key = (name.clone(), tag.to_owned());
                    if let Some((other, first)) = tag_origin.get(&key) {
                        if other != d {
                            return Err(ServeError::Conflict(format!(
                                "{name}:{tag} is {other} in {} but {d} in {}: serve them separately",
                                first.display(),
                                store.path.display()
                            )));
                        }
                        continue;
                    }
                    tag_origin.insert(key, (d.clone(), store.path.clone()));
                    tags.insert(tag.to_owned(), d.clone());
                }
            }
        }
        // Every blob the graphs name must be readable from some archive given (a delta's
        // base blobs come from its base archive, if that was given too).
        for store in &archives {
            for (d, node) in &store.graph.blobs {
                if !c.blobs.contains_key(d) {
                    let why = match &store.header.manifest.base {
                        Some(base) if store.header.manifest.blob(d).is_some_and(|b| b.base) => {
                            format!(
                                "it is a delta whose base is {} (created {}): give that archive too",
                                base.manifest_digest, base.created
                            )
                        }
                        _ if !store.volumes.is_empty() => {
                            "its volumes are not all given: give every volume of the set".into()
                        }
                        _ => "the archive does not carry it".into(),
                    };
                    return Err(ServeError::Archive(format!(
                        "{}: blob {d} (for {}) cannot be served: {why}",
                        store.path.display(),
                        node.repo
                    )));
                }
            }
        }
        for m in c.manifests.values() {
            if let Some((subject, desc)) = referrer_of(m) {
                c.referrers.entry(subject).or_default().push(desc);
            }
        }
        for list in c.referrers.values_mut() {
            list.sort_by(|a, b| a.digest.cmp(&b.digest));
        }
        c.archives = archives;
        Ok(c)
    }

    /// The repository a request names, after the mirror form (`?ns=docker.io`) is applied.
    pub fn repository(&self, name: &str, ns: Option<&str>) -> Option<&str> {
        if let Some(host) = ns.and_then(host_name) {
            let qualified = format!("{host}/{name}");
            if let Some((k, _)) = self.repos.get_key_value(&qualified) {
                return Some(k);
            }
            if self.prefix_hosts {
                return None;
            }
        }
        self.repos.get_key_value(name).map(|(k, _)| k.as_str())
    }

    /// Tags of a repository, in lexical order.
    pub fn tags(&self, repo: &str) -> Option<&BTreeMap<String, Digest>> {
        self.repos.get(repo)
    }

    /// Every repository name, in lexical order.
    pub fn repositories(&self) -> impl Iterator<Item = &str> {
        self.repos.keys().map(String::as_str)
    }

    /// A manifest by digest (content by digest is served under every name: one signed unit).
    pub fn manifest(&self, d: &Digest) -> Option<&ServedManifest> {
        self.manifests.get(d)
    }

    /// A config or layer by digest.
    pub fn blob(&self, d: &Digest) -> Option<&ServedBlob> {
        self.blobs.get(d)
    }

    /// Manifests whose `subject` is `d`, ordered by digest.
    pub fn referrers(&self, d: &Digest) -> &[ReferrerDescriptor] {
        self.referrers.get(d).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Counts for the startup line: (repositories, manifests, blobs, blob bytes).
    pub fn counts(&self) -> (usize, usize, usize, u64) {
        (
            self.repos.len(),
            self.manifests.len(),
            self.blobs.len(),
            self.blobs.values().map(|b| b.size).sum(),
        )
    }

    /// The archive file a blob is read from, for log lines.
    pub fn archive_of(&self, blob: &ServedBlob) -> &Path {
        self.archives
            .get(blob.archive)
            .map(|a| a.path.as_path())
            .unwrap_or(Path::new("?"))
    }
}

/// The references an archive is known by: roots (with their digests, for tags) and locked images.
fn named_references(store: &ArchiveStore) -> Vec<(Reference, Option<Digest>)> {
    let mut named: Vec<(Reference, Option<Digest>)> = store
        .graph
        .roots
        .iter()
        .map(|r| (r.reference.clone(), Some(r.digest.clone())))
        .collect();
    for l in &store.graph.locked {
        if let Ok(r) = Reference::parse(&l.image) {
            named.push((r, None));
        }
    }
    named
}

/// The names a source reference is served under: its path, and `<host>/<path>` when the host
/// is a valid name component (`docker.io`, `quay.io`; not `host:port`).
fn served_names(r: &Reference, prefix_hosts: bool) -> Result<Vec<String>, ServeError> {
    let path = r.repository().to_owned();
    let qualified = host_name(r.registry()).map(|h| format!("{h}/{path}"));
    match (prefix_hosts, qualified) {
        (false, Some(q)) => Ok(vec![path, q]),
        (false, None) => Ok(vec![path]),
        (true, Some(q)) => Ok(vec![q]),
        (true, None) => Err(ServeError::Usage(format!(
            "{} cannot be served under a host-qualified name ({} is not a valid repository \
             name component): drop --prefix-hosts, or serve its archive separately",
            r.original(),
            r.registry()
        ))),
    }
}

/// The host as a repository name component, Docker Hub as `docker.io`.
fn host_name(registry: &str) -> Option<String> {
    let h = if registry == DOCKER_HUB_INTERNAL || registry == "registry-1.docker.io" {
        DOCKER_HUB
    } else {
        registry
    };
    let h = h.to_ascii_lowercase();
    is_component(&h).then_some(h)
}

/// The fields of a manifest that make it a referrer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReferrerFields {
    subject: Option<SubjectField>,
    artifact_type: Option<String>,
    config: Option<ConfigField>,
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct SubjectField {
    digest: Digest,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigField {
    media_type: Option<String>,
}

fn referrer_of(m: &ServedManifest) -> Option<(Digest, ReferrerDescriptor)> {
    let f: ReferrerFields = serde_json::from_slice(&m.bytes).ok()?;
    let subject = f.subject?.digest;
    let artifact_type = f
        .artifact_type
        .or_else(|| f.config.and_then(|c| c.media_type));
    Some((
        subject,
        ReferrerDescriptor {
            media_type: m.media_type.clone(),
            digest: Digest::sha256_of(&m.bytes),
            size: m.bytes.len() as u64,
            artifact_type,
            annotations: f.annotations,
        },
    ))
}

/// Groups the paths given into single archives and volume sets (by the manifest they carry).
async fn group_volumes(paths: &[PathBuf]) -> Result<Vec<Vec<PathBuf>>, ServeError> {
    let owned = paths.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut groups: Vec<(Option<Digest>, Vec<PathBuf>)> = Vec::new();
        for p in owned {
            let reader = ArchiveReader::open(&p)
                .map_err(|e| ServeError::Archive(format!("{}: {e}", p.display())))?;
            let h = reader.header();
            if h.manifest.volume.is_none() {
                groups.push((None, vec![p]));
                continue;
            }
            let d = Digest::sha256_of(&h.manifest_bytes);
            match groups.iter_mut().find(|(g, _)| g.as_ref() == Some(&d)) {
                Some((_, v)) => v.push(p),
                None => groups.push((Some(d), vec![p])),
            }
        }
        Ok(groups.into_iter().map(|(_, v)| v).collect())
    })
    .await
    .map_err(|e| ServeError::Archive(format!("opening archives: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_paths_and_qualify_valid_hosts() {
        let r = Reference::parse("redis:7").unwrap();
        assert_eq!(
            served_names(&r, false).unwrap(),
            vec![
                "library/redis".to_string(),
                "docker.io/library/redis".into()
            ]
        );
        let r = Reference::parse("127.0.0.1:5000/app/web:1").unwrap();
        assert_eq!(
            served_names(&r, false).unwrap(),
            vec!["app/web".to_string()]
        );
        assert!(served_names(&r, true).is_err());
        let r = Reference::parse("quay.io/org/x:1").unwrap();
        assert_eq!(
            served_names(&r, true).unwrap(),
            vec!["quay.io/org/x".to_string()]
        );
    }

    #[test]
    fn referrer_fields() {
        let m = ServedManifest {
            bytes: Bytes::from_static(
                br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/spdx+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[],"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","size":10}}"#,
            ),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        };
        let (subject, d) = referrer_of(&m).unwrap();
        assert_eq!(subject.hex().len(), 64);
        assert_eq!(d.artifact_type.as_deref(), Some("application/spdx+json"));
        assert_eq!(d.size, m.bytes.len() as u64);
    }
}
