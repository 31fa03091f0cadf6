//! The one transfer engine: a graph from a [`Source`] into a [`Sink`].
//!
//! Export, import and copy are policies over this function; they differ in the stores they
//! pass and the hooks they set. The rules hold for all of them: blobs the sink already has
//! are skipped, blobs go before the manifests that name them, manifests children-first,
//! and only [`Sink::commit`] (tags, rename into place) makes anything addressable, after the
//! source confirmed it held exactly what it promised.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use super::TransferError;
use crate::digest::Digest;
use crate::graph::{Graph, ManifestNode};
use crate::oci::Descriptor;
use crate::store::{ByteStream, Pushed, Sink, Source, StoreError};
pub use crate::store::{Reporter, Silent};

/// Which side of a copy failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Reading from the source.
    Source,
    /// Writing to the destination.
    Destination,
}

/// What the engine was doing when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Checking whether the destination has a blob.
    Exists,
    /// Reading a blob.
    Fetch,
    /// Storing a blob.
    PushBlob,
    /// Storing a manifest.
    PushManifest,
    /// Confirming the source was read whole.
    Finish,
    /// Tagging or renaming into place.
    Commit,
}

/// A failed store operation: which one, on which side, for which content.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {source}", describe(*side, *op), digest.as_ref().map(|d| format!(" {d}")).unwrap_or_default())]
pub struct CopyError {
    /// Source or destination.
    pub side: Side,
    /// The operation.
    pub op: Op,
    /// The blob or manifest concerned.
    pub digest: Option<Digest>,
    /// What went wrong.
    #[source]
    pub source: StoreError,
}

fn describe(side: Side, op: Op) -> String {
    let what = match op {
        Op::Exists => "checking for blob",
        Op::Fetch => "reading blob",
        Op::PushBlob => "pushing blob",
        Op::PushManifest => "pushing manifest",
        Op::Finish => "reading to the end",
        Op::Commit => "making the content addressable",
    };
    let side = match side {
        Side::Source => "source",
        Side::Destination => "destination",
    };
    format!("{side}: {what}")
}

fn at(side: Side, op: Op, digest: Option<&Digest>) -> impl FnOnce(StoreError) -> CopyError {
    let digest = digest.cloned();
    move |source| CopyError {
        side,
        op,
        digest,
        source,
    }
}

/// Policy decisions the engine asks for between its phases.
pub trait Hooks: Send + Sync {
    /// After every blob is in and the source confirmed whole, before the first manifest:
    /// `false` stops there (the destination does not hold everything yet, e.g. a volume set
    /// imported one stick at a time).
    fn before_manifests(
        &self,
        _report: &mut CopyReport,
    ) -> impl Future<Output = Result<bool, TransferError>> + Send {
        async { Ok(true) }
    }

    /// A blob is safely at the destination (receipts, delta bookkeeping).
    fn on_copied(&self, _desc: &Descriptor, _pushed: Pushed) {}
}

/// No policy beyond the engine's own rules.
pub struct NoHooks;

impl Hooks for NoHooks {}

/// How the engine runs.
#[derive(Debug, Clone, Copy)]
pub struct CopyOptions {
    /// Blobs in flight at once (an ordered sink or a sequential source forces one).
    pub concurrency: usize,
    /// Read and verify from the source even the blobs the sink already has, so that a
    /// tampered archive fails whatever the destination holds.
    pub verify_skipped: bool,
}

/// What a copy did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CopyReport {
    /// Blob uploads (one per destination repository).
    pub blobs_pushed: u64,
    /// Blobs a destination repository already had.
    pub blobs_present: u64,
    /// Blobs mounted from another repository of the same registry.
    pub blobs_mounted: u64,
    /// Bytes uploaded.
    pub bytes_pushed: u64,
    /// Bytes a destination repository received by cross-repository mount (nothing sent).
    pub bytes_mounted: u64,
    /// Bytes a destination repository already had.
    pub bytes_present: u64,
    /// Manifests and indexes pushed.
    pub manifests_pushed: u64,
    /// Manifests already present.
    pub manifests_present: u64,
    /// What became addressable (tags).
    pub tags: Vec<String>,
    /// Whether manifests and tags were pushed (false when a hook stopped before them).
    #[serde(skip)]
    pub complete: bool,
    /// Blobs and manifests uploaded to at least one repository.
    #[serde(skip)]
    pub pushed_digests: BTreeSet<Digest>,
    /// Blobs mounted and not uploaded anywhere.
    #[serde(skip)]
    pub mounted_digests: BTreeSet<Digest>,
}

impl CopyReport {
    fn add(&mut self, digest: &Digest, size: u64, p: Pushed) {
        self.bytes_mounted += size * u64::from(p.mounts);
        self.bytes_present += size * u64::from(p.present);
        self.blobs_pushed += u64::from(p.uploads);
        self.blobs_mounted += u64::from(p.mounts);
        self.blobs_present += u64::from(p.present);
        self.bytes_pushed += p.uploaded;
        if p.uploads > 0 {
            self.pushed_digests.insert(digest.clone());
        } else if p.mounts > 0 {
            self.mounted_digests.insert(digest.clone());
        }
    }
}

/// Copies `blobs` (configs and layers of `graph`), then every manifest of `graph`, from
/// `source` into `sink`, and commits.
pub async fn copy<S: Source, K: Sink, H: Hooks>(
    source: &S,
    sink: &K,
    graph: &Graph,
    blobs: Vec<Descriptor>,
    opts: CopyOptions,
    reporter: &Arc<dyn Reporter>,
    hooks: &H,
) -> Result<CopyReport, TransferError> {
    let mut report = CopyReport::default();
    let (ordered, concurrency) = plan_blobs(source, sink, blobs, opts.concurrency);
    let results: Vec<(Digest, u64, Pushed)> = futures::stream::iter(ordered)
        .map(|desc| async move {
            let p = copy_blob(source, sink, &desc, opts.verify_skipped, reporter).await?;
            hooks.on_copied(&desc, p);
            reporter.blob_done();
            Ok::<_, CopyError>((desc.digest, desc.size, p))
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await?;
    for (d, size, p) in &results {
        report.add(d, *size, *p);
    }
    source
        .finish()
        .await
        .map_err(at(Side::Source, Op::Finish, None))?;
    if !hooks.before_manifests(&mut report).await? {
        return Ok(report);
    }
    for level in manifest_levels(graph) {
        let pushed: Vec<(&Digest, bool)> = futures::stream::iter(level)
            .map(|node| async move {
                let m = &node.manifest;
                let d = Some(&m.digest);
                sink.push_manifest(m)
                    .await
                    .map(|p| (&m.digest, p))
                    .map_err(at(Side::Destination, Op::PushManifest, d))
            })
            .buffer_unordered(opts.concurrency.max(1))
            .try_collect()
            .await?;
        for (d, p) in pushed {
            if p {
                report.manifests_pushed += 1;
                report.pushed_digests.insert(d.clone());
            } else {
                report.manifests_present += 1;
            }
        }
    }
    report.tags = sink
        .commit()
        .await
        .map_err(at(Side::Destination, Op::Commit, None))?;
    report.complete = true;
    Ok(report)
}

/// The order blobs go in, and how many at once: the sink's order if it dictates one, else
/// the source's, else largest first (the long uploads start while small ones fill gaps).
fn plan_blobs<S: Source, K: Sink>(
    source: &S,
    sink: &K,
    mut blobs: Vec<Descriptor>,
    concurrency: usize,
) -> (Vec<Descriptor>, usize) {
    let fixed = sink
        .order()
        .map(|o| (o, true))
        .or_else(|| source.fixed_order().map(|o| (o, false)));
    match fixed {
        Some((order, only_listed)) => {
            let pos: HashMap<Digest, usize> =
                order.into_iter().enumerate().map(|(i, d)| (d, i)).collect();
            if only_listed {
                blobs.retain(|b| pos.contains_key(&b.digest));
            }
            blobs.sort_by_key(|b| pos.get(&b.digest).copied().unwrap_or(usize::MAX));
            (blobs, 1)
        }
        None => {
            blobs.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.digest.cmp(&b.digest)));
            (blobs, concurrency.max(1))
        }
    }
}

async fn copy_blob<S: Source, K: Sink>(
    source: &S,
    sink: &K,
    desc: &Descriptor,
    verify_skipped: bool,
    reporter: &Arc<dyn Reporter>,
) -> Result<Pushed, CopyError> {
    let d = Some(&desc.digest);
    let from = source.location(&desc.digest);
    if sink
        .exists(desc, from.as_ref())
        .await
        .map_err(at(Side::Destination, Op::Exists, d))?
    {
        if verify_skipped {
            drain(source, desc, reporter).await?;
        } else {
            reporter.bytes(desc.size);
        }
        return Ok(Pushed {
            present: 1,
            ..Pushed::default()
        });
    }
    let pushed = sink
        .push_blob(desc, from.as_ref(), || async {
            let s = source.fetch(desc).await?;
            Ok(counted(s, reporter))
        })
        .await
        .map_err(|e| match e {
            // The sink read the stream: a verification failure is the source's.
            StoreError::Io { .. } | StoreError::Archive(_) => at(Side::Source, Op::Fetch, d)(e),
            other => at(Side::Destination, Op::PushBlob, d)(other),
        })?;
    if pushed.uploads == 0 && verify_skipped {
        drain(source, desc, reporter).await?;
    }
    Ok(pushed)
}

/// Reads a blob from the source to its end, verifying it, without storing it.
async fn drain<S: Source>(
    source: &S,
    desc: &Descriptor,
    reporter: &Arc<dyn Reporter>,
) -> Result<(), CopyError> {
    let d = Some(&desc.digest);
    let mut s = source
        .fetch(desc)
        .await
        .map_err(at(Side::Source, Op::Fetch, d))?;
    while let Some(chunk) = s.next().await {
        let chunk =
            chunk.map_err(|e| at(Side::Source, Op::Fetch, d)(StoreError::io("reading")(e)))?;
        reporter.bytes(chunk.len() as u64);
    }
    Ok(())
}

/// Counts bytes into the reporter as the sink reads them.
fn counted(s: ByteStream, reporter: &Arc<dyn Reporter>) -> ByteStream {
    let r = Arc::clone(reporter);
    s.inspect_ok(move |chunk| r.bytes(chunk.len() as u64))
        .boxed()
}

/// Manifests grouped by dependency level: every manifest of a level has its children in
/// earlier levels, so a level can be pushed concurrently.
fn manifest_levels(graph: &Graph) -> Vec<Vec<&ManifestNode>> {
    let mut levels = Vec::new();
    let mut done: HashSet<&Digest> = HashSet::new();
    let mut remaining: Vec<&ManifestNode> = graph.manifests.values().collect();
    // A referrer waits for its subject as an index waits for its children.
    let subjects = graph.subjects();
    while !remaining.is_empty() {
        let (ready, rest): (Vec<&ManifestNode>, Vec<&ManifestNode>) =
            remaining.into_iter().partition(|n| {
                let pushed = |d: &Digest| done.contains(d) || !graph.manifests.contains_key(d);
                n.manifest
                    .child_manifests()
                    .iter()
                    .all(|c| pushed(&c.digest))
                    && subjects.get(&n.manifest.digest).is_none_or(|s| pushed(s))
            });
        if ready.is_empty() {
            // A cycle cannot be pushed in any order: hand it over so the sink refuses it.
            levels.push(rest);
            break;
        }
        done.extend(ready.iter().map(|n| &n.manifest.digest));
        levels.push(ready);
        remaining = rest;
    }
    levels
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::oci::RawManifest;
    use crate::reference::Reference;
    use crate::store::memory::{Event, MemoryStore};

    fn desc_json(mt: &str, d: &Digest, size: usize) -> String {
        format!(r#"{{"mediaType":"{mt}","digest":"{d}","size":{size}}}"#)
    }

    /// A graph of one index over two images sharing a layer; the blobs live in `source`.
    fn graph(source: &MemoryStore) -> (Graph, Vec<Digest>) {
        let config = b"{\"architecture\":\"amd64\",\"os\":\"linux\"}".to_vec();
        let shared = vec![1u8; 1000];
        let own = vec![2u8; 3000];
        let (c, l1, l2) = (
            source.insert_blob(config.clone()),
            source.insert_blob(shared.clone()),
            source.insert_blob(own.clone()),
        );
        let image = |layers: &[(&Digest, usize)]| {
            let layers: Vec<String> = layers
                .iter()
                .map(|(d, n)| desc_json("application/vnd.oci.image.layer.v1.tar", d, *n))
                .collect();
            let json = format!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[{}]}}"#,
                desc_json("application/vnd.oci.image.config.v1+json", &c, config.len()),
                layers.join(",")
            );
            RawManifest::from_bytes(Bytes::from(json), None).unwrap()
        };
        let a = image(&[(&l1, shared.len())]);
        let b = image(&[(&l1, shared.len()), (&l2, own.len())]);
        let index_json = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{},{}]}}"#,
            desc_json(&a.media_type, &a.digest, a.bytes.len()),
            desc_json(&b.media_type, &b.digest, b.bytes.len())
        );
        let index = RawManifest::from_bytes(Bytes::from(index_json), None).unwrap();
        let repo = Reference::parse("example.test/app:1").unwrap();
        let mut g = Graph::default();
        for m in [a, b, index.clone()] {
            let node = ManifestNode {
                manifest: m,
                repo: repo.clone(),
            };
            g.add_blobs_of(&node);
            g.manifests.insert(node.manifest.digest.clone(), node);
        }
        (g, vec![index.digest, c, l1, l2])
    }

    fn blobs(g: &Graph) -> Vec<Descriptor> {
        g.blobs.values().map(|b| b.desc.clone()).collect()
    }

    fn opts() -> CopyOptions {
        CopyOptions {
            concurrency: 4,
            verify_skipped: false,
        }
    }

    fn silent() -> Arc<dyn Reporter> {
        Arc::new(Silent)
    }

    #[tokio::test]
    async fn children_before_parents_and_tags_last() {
        let (source, sink) = (MemoryStore::new(), MemoryStore::new());
        let (g, d) = graph(&source);
        sink.stage_tag("app:1", &d[0]);
        let report = copy(&source, &sink, &g, blobs(&g), opts(), &silent(), &NoHooks)
            .await
            .unwrap();
        assert!(report.complete);
        assert_eq!((report.blobs_pushed, report.manifests_pushed), (3, 3));
        let events = sink.events();
        let pos = |e: &Event| events.iter().position(|x| x == e).unwrap();
        let index = pos(&Event::Manifest(d[0].clone()));
        for node in g.manifests.values().filter(|n| !n.manifest.is_index()) {
            assert!(pos(&Event::Manifest(node.manifest.digest.clone())) < index);
            for b in node.manifest.blobs() {
                assert!(
                    pos(&Event::Blob(b.digest.clone()))
                        < pos(&Event::Manifest(node.manifest.digest.clone()))
                );
            }
        }
        assert_eq!(events.last(), Some(&Event::Tag("app:1".into())));
        assert_eq!(sink.tags().get("app:1"), Some(&d[0]));
    }

    #[tokio::test]
    async fn a_referrer_is_pushed_after_its_subject() {
        let (source, sink) = (MemoryStore::new(), MemoryStore::new());
        let (mut g, d) = graph(&source);
        let subject = g
            .manifests
            .values()
            .find(|n| !n.manifest.is_index())
            .map(|n| n.manifest.clone())
            .unwrap();
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/spdx+json","config":{},"layers":[],"subject":{}}}"#,
            desc_json("application/vnd.oci.image.config.v1+json", &d[1], 1000),
            desc_json(&subject.media_type, &subject.digest, subject.bytes.len())
        );
        let sbom = RawManifest::from_bytes(Bytes::from(json), None).unwrap();
        let node = ManifestNode {
            manifest: sbom.clone(),
            repo: Reference::parse("example.test/app:1").unwrap(),
        };
        g.add_blobs_of(&node);
        g.manifests.insert(sbom.digest.clone(), node);
        g.referrers.push(crate::referrers::Referrer {
            digest: sbom.digest.clone(),
            subject: subject.digest.clone(),
            kind: crate::referrers::ReferrerKind::Sbom,
            artifact_type: Some("application/spdx+json".into()),
            tag: None,
        });
        copy(&source, &sink, &g, blobs(&g), opts(), &silent(), &NoHooks)
            .await
            .unwrap();
        let events = sink.events();
        let pos = |d: &Digest| {
            events
                .iter()
                .position(|e| e == &Event::Manifest(d.clone()))
                .unwrap()
        };
        assert!(pos(&subject.digest) < pos(&sbom.digest), "{events:?}");
    }

    #[tokio::test]
    async fn skips_what_the_sink_has() {
        let (source, sink) = (MemoryStore::new(), MemoryStore::new());
        let (g, d) = graph(&source);
        // The sink already holds the shared layer: it is neither fetched nor stored again.
        sink.insert_blob(vec![1u8; 1000]);
        source.fail_fetch(&d[2]);
        let report = copy(&source, &sink, &g, blobs(&g), opts(), &silent(), &NoHooks)
            .await
            .unwrap();
        assert_eq!((report.blobs_pushed, report.blobs_present), (2, 1));
        assert!(!sink.events().contains(&Event::Blob(d[2].clone())));
    }

    #[tokio::test]
    async fn verify_skipped_reads_what_the_sink_has() {
        let (source, sink) = (MemoryStore::new(), MemoryStore::new());
        let (g, d) = graph(&source);
        sink.insert_blob(vec![1u8; 1000]);
        source.fail_fetch(&d[2]);
        let opts = CopyOptions {
            verify_skipped: true,
            ..opts()
        };
        let err = copy(&source, &sink, &g, blobs(&g), opts, &silent(), &NoHooks)
            .await
            .unwrap_err();
        assert!(err.to_string().contains(&d[2].to_string()), "{err}");
        assert!(sink.tags().is_empty());
    }

    #[tokio::test]
    async fn a_failing_blob_leaves_no_manifest_and_no_tag() {
        let (source, sink) = (MemoryStore::new(), MemoryStore::new());
        let (g, d) = graph(&source);
        sink.stage_tag("app:1", &d[0]);
        source.fail_fetch(&d[3]);
        let err = copy(&source, &sink, &g, blobs(&g), opts(), &silent(), &NoHooks)
            .await
            .unwrap_err();
        match err {
            TransferError::Copy(e) => {
                assert_eq!((e.side, e.digest.as_ref()), (Side::Source, Some(&d[3])));
            }
            other => panic!("expected a copy error, got {other}"),
        }
        assert!(
            sink.events().iter().all(|e| matches!(e, Event::Blob(_))),
            "{:?}",
            sink.events()
        );
        assert!(sink.tags().is_empty());
    }

    /// Stops before the manifests, as a volume set does while sticks are missing.
    struct Gate;

    impl Hooks for Gate {
        async fn before_manifests(&self, _: &mut CopyReport) -> Result<bool, TransferError> {
            Ok(false)
        }
    }

    #[tokio::test]
    async fn a_hook_can_hold_back_manifests_and_tags() {
        let (source, sink) = (MemoryStore::new(), MemoryStore::new());
        let (g, d) = graph(&source);
        sink.stage_tag("app:1", &d[0]);
        let report = copy(&source, &sink, &g, blobs(&g), opts(), &silent(), &Gate)
            .await
            .unwrap();
        assert!(!report.complete);
        assert_eq!(report.blobs_pushed, 3);
        assert!(!sink.has_manifest(&d[0]) && sink.tags().is_empty());
    }

    #[tokio::test]
    async fn cancelled_copy_names_nothing() {
        let (source, sink) = (MemoryStore::new(), MemoryStore::new());
        let (g, d) = graph(&source);
        sink.stage_tag("app:1", &d[0]);
        let reporter = silent();
        {
            let fut = copy(&source, &sink, &g, blobs(&g), opts(), &reporter, &NoHooks);
            futures::pin_mut!(fut);
            // Poll once, then drop the copy mid-way: as a Ctrl-C would.
            let _ = futures::poll!(fut.as_mut());
        }
        assert!(sink.tags().is_empty());
        assert!(!sink.has_manifest(&d[0]));
    }
}
