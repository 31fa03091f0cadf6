//! Pushes a graph into a registry: every blob (verified while streaming), then
//! manifests children-first, then tags. Nothing becomes addressable by tag
//! until all content is in place, and an interrupted run resumes by skipping
//! what the registry already has.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use super::TransferError;
use super::graph::Graph;
use super::place::Placement;
use super::progress::Progress;
use crate::digest::Digest;
use crate::oci::{Descriptor, RawManifest};
use crate::reference::Reference;
use crate::registry::Registries;

/// A stream of blob bytes; the last item is an error if the content did not verify.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// A place blobs can be read from: a registry (copy) or an archive (import).
pub trait BlobSource: Send + Sync {
    /// Opens `desc` (found at `repo` for registry sources) as a verified stream.
    fn open(
        &self,
        repo: &Reference,
        desc: &Descriptor,
    ) -> impl Future<Output = Result<ByteStream, TransferError>> + Send;

    /// Whether blobs come from registries (then a blob on the destination registry can be mounted).
    fn is_registry(&self) -> bool {
        false
    }
}

/// Reads blobs from the registries the graph was walked in.
pub struct RegistrySource<'a> {
    registries: &'a Registries,
}

impl<'a> RegistrySource<'a> {
    /// A source reading through `registries`.
    pub fn new(registries: &'a Registries) -> RegistrySource<'a> {
        RegistrySource { registries }
    }
}

impl BlobSource for RegistrySource<'_> {
    async fn open(&self, repo: &Reference, desc: &Descriptor) -> Result<ByteStream, TransferError> {
        let client = self.registries.client(repo.registry()).await?;
        Ok(client.get_blob(repo, desc).into_io_stream().boxed())
    }

    fn is_registry(&self) -> bool {
        true
    }
}

/// A small image made on the spot (imgpkg's locations image), pushed after the graph.
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

/// What a publish did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PublishReport {
    /// Blobs uploaded.
    pub blobs_pushed: u64,
    /// Blobs the registry already had.
    pub blobs_present: u64,
    /// Blobs mounted from another repository of the same registry.
    pub blobs_mounted: u64,
    /// Bytes uploaded.
    pub bytes_pushed: u64,
    /// Manifests and indexes pushed by digest.
    pub manifests_pushed: u64,
    /// Manifests already present.
    pub manifests_present: u64,
    /// Tags set.
    pub tags: Vec<String>,
    /// Digests of the blobs and manifests pushed to at least one repository.
    #[serde(skip)]
    pub pushed_digests: BTreeSet<Digest>,
    /// Digests of the blobs mounted from another repository (and not pushed anywhere).
    #[serde(skip)]
    pub mounted_digests: BTreeSet<Digest>,
}

#[derive(Default)]
struct BlobOutcome {
    pushed: bool,
    mounted: bool,
    bytes: u64,
}

/// Pushes the blobs of `graph` to where `placement` says, reading from `source`.
///
/// `on_blob` is called once per blob after it is safely in every destination.
pub async fn push_blobs<S: BlobSource>(
    registries: &Registries,
    graph: &Graph,
    placement: &Placement,
    source: &S,
    concurrency: usize,
    progress: &Arc<Progress>,
) -> Result<PublishReport, TransferError> {
    let mut report = PublishReport::default();
    // Configs then layers, each by digest: the order blobs sit in an archive, so a
    // sequential source (a compressed archive) can serve them in one pass.
    let mut ordered: Vec<&super::graph::BlobNode> = graph.blobs.values().collect();
    ordered.sort_by(|a, b| (a.role, &a.desc.digest).cmp(&(b.role, &b.desc.digest)));
    let jobs: Vec<(Descriptor, Reference, Vec<String>)> = ordered
        .into_iter()
        .map(|b| {
            let repos = placement
                .blob_repos
                .get(&b.desc.digest)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            (b.desc.clone(), b.repo.clone(), repos)
        })
        .collect();
    let outcomes: Vec<(Digest, Vec<BlobOutcome>)> = futures::stream::iter(jobs)
        .map(|(desc, source_repo, repos)| async move {
            let mut outs = Vec::new();
            for repo in repos {
                outs.push(
                    push_one_blob(registries, source, &source_repo, &desc, &repo, progress).await?,
                );
            }
            progress.blob_done();
            Ok::<_, TransferError>((desc.digest.clone(), outs))
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    for (digest, outs) in outcomes {
        for o in outs {
            if o.pushed {
                report.blobs_pushed += 1;
                report.bytes_pushed += o.bytes;
                report.pushed_digests.insert(digest.clone());
            } else if o.mounted {
                report.blobs_mounted += 1;
                report.mounted_digests.insert(digest.clone());
            } else {
                report.blobs_present += 1;
            }
        }
    }
    Ok(report)
}

async fn push_one_blob<S: BlobSource>(
    registries: &Registries,
    source: &S,
    source_repo: &Reference,
    desc: &Descriptor,
    repo: &str,
    progress: &Arc<Progress>,
) -> Result<BlobOutcome, TransferError> {
    let dest = Placement::at(repo, &desc.digest)?;
    let client = registries.client(dest.registry()).await?;
    if client.blob_exists(&dest, &desc.digest).await? {
        progress.add_bytes(desc.size);
        return Ok(BlobOutcome::default());
    }
    if source.is_registry()
        && source_repo.registry() == dest.registry()
        && source_repo.repository() != dest.repository()
        && client.mount_blob(&dest, source_repo, &desc.digest).await
        && client.blob_exists(&dest, &desc.digest).await?
    {
        progress.add_bytes(desc.size);
        return Ok(BlobOutcome {
            mounted: true,
            ..Default::default()
        });
    }
    client
        .put_blob(&dest, desc, || async {
            let s = source
                .open(source_repo, desc)
                .await
                .map_err(std::io::Error::other)?;
            let progress = Arc::clone(progress);
            Ok(s.inspect_ok(move |chunk| progress.add_bytes(chunk.len() as u64)))
        })
        .await?;
    Ok(BlobOutcome {
        pushed: true,
        bytes: desc.size,
        ..Default::default()
    })
}

/// Pushes manifests children-first to every repository they belong in, then extra images, then tags.
pub async fn push_manifests_and_tags(
    registries: &Registries,
    graph: &Graph,
    placement: &Placement,
    extras: &[ExtraImage],
    report: &mut PublishReport,
) -> Result<(), TransferError> {
    for node in graph.manifests_children_first() {
        let m = &node.manifest;
        let repos = placement
            .manifest_repos
            .get(&m.digest)
            .cloned()
            .unwrap_or_default();
        for repo in repos {
            let at = Placement::at(&repo, &m.digest)?;
            let client = registries.client(at.registry()).await?;
            if client.manifest_exists(&at).await? {
                report.manifests_present += 1;
            } else {
                client.put_manifest(&at, m).await?;
                report.manifests_pushed += 1;
                report.pushed_digests.insert(m.digest.clone());
            }
        }
    }
    for extra in extras {
        let at = Placement::at(&extra.repo, &extra.manifest.digest)?;
        let client = registries.client(at.registry()).await?;
        for (desc, bytes) in &extra.blobs {
            if !client.blob_exists(&at, &desc.digest).await? {
                let data = bytes.clone();
                client
                    .put_blob(&at, desc, || {
                        let data = data.clone();
                        async move { Ok(futures::stream::iter([Ok::<_, std::io::Error>(data)])) }
                    })
                    .await?;
            }
        }
        client.put_manifest(&at, &extra.manifest).await?;
        report.manifests_pushed += 1;
    }
    let extra_tags = extras.iter().flat_map(|e| {
        e.tags
            .iter()
            .map(|t| (e.repo.clone(), t.clone(), e.manifest.clone()))
    });
    let graph_tags = placement.tags.iter().filter_map(|(repo, tag, d)| {
        graph
            .manifests
            .get(d)
            .map(|n| (repo.clone(), tag.clone(), n.manifest.clone()))
    });
    for (repo, tag, manifest) in graph_tags.chain(extra_tags) {
        let at = Reference::parse(&format!("{repo}:{tag}"))
            .map_err(|e| TransferError::Usage(format!("tag {repo}:{tag}: {e}")))?;
        let client = registries.client(at.registry()).await?;
        client.put_manifest(&at, &manifest).await?;
        report.tags.push(at.to_string());
    }
    Ok(())
}
