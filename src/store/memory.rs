//! A store in memory: a source and a sink that record what was asked of them, so the engine's
//! rules (skip what is there, children first, tags last, nothing named after a failure) can
//! be tested without a registry.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use bytes::Bytes;
use futures::StreamExt;

use super::{ByteStream, Pushed, Sink, Source, StoreError};
use crate::digest::Digest;
use crate::oci::{Descriptor, RawManifest};
use crate::reference::Reference;

/// One thing a sink was asked to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A blob was stored.
    Blob(Digest),
    /// A manifest was stored.
    Manifest(Digest),
    /// A tag was set.
    Tag(String),
}

/// Blobs, manifests and tags held in memory.
#[derive(Default)]
pub struct MemoryStore {
    blobs: Mutex<BTreeMap<Digest, Bytes>>,
    manifests: Mutex<BTreeMap<Digest, RawManifest>>,
    /// Tags to set at commit (sink side): name → manifest digest.
    staged_tags: Mutex<BTreeMap<String, Digest>>,
    tags: Mutex<BTreeMap<String, Digest>>,
    events: Mutex<Vec<Event>>,
    /// Blobs whose fetch fails (source side), to test failure handling.
    failing: Mutex<BTreeSet<Digest>>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Adds a blob (source side).
    pub fn insert_blob(&self, bytes: impl Into<Bytes>) -> Digest {
        let bytes = bytes.into();
        let d = Digest::sha256_of(&bytes);
        locked(&self.blobs).insert(d.clone(), bytes);
        d
    }

    /// Makes fetching `d` fail.
    pub fn fail_fetch(&self, d: &Digest) {
        locked(&self.failing).insert(d.clone());
    }

    /// A tag the sink sets at commit.
    pub fn stage_tag(&self, name: &str, d: &Digest) {
        locked(&self.staged_tags).insert(name.to_owned(), d.clone());
    }

    /// Whether the store holds a blob.
    pub fn has_blob(&self, d: &Digest) -> bool {
        locked(&self.blobs).contains_key(d)
    }

    /// Whether the store holds a manifest.
    pub fn has_manifest(&self, d: &Digest) -> bool {
        locked(&self.manifests).contains_key(d)
    }

    /// The tags set so far.
    pub fn tags(&self) -> BTreeMap<String, Digest> {
        locked(&self.tags).clone()
    }

    /// What the sink was asked to do, in order.
    pub fn events(&self) -> Vec<Event> {
        locked(&self.events).clone()
    }
}

impl Source for MemoryStore {
    async fn fetch(&self, desc: &Descriptor) -> Result<ByteStream, StoreError> {
        // Yield as real I/O would, so a copy can be caught (and cancelled) mid-way.
        tokio::task::yield_now().await;
        if locked(&self.failing).contains(&desc.digest) {
            let err = std::io::Error::other(format!("injected failure reading {}", desc.digest));
            return Ok(futures::stream::iter([Err(err)]).boxed());
        }
        let bytes = locked(&self.blobs)
            .get(&desc.digest)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(desc.digest.clone()))?;
        let item = if Digest::sha256_of(&bytes) == desc.digest && bytes.len() as u64 == desc.size {
            Ok(bytes)
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} does not match its content", desc.digest),
            ))
        };
        Ok(futures::stream::iter([item]).boxed())
    }

    fn location(&self, _digest: &Digest) -> Option<Reference> {
        None
    }
}

impl Sink for MemoryStore {
    async fn exists(
        &self,
        desc: &Descriptor,
        _from: Option<&Reference>,
    ) -> Result<bool, StoreError> {
        Ok(self.has_blob(&desc.digest))
    }

    async fn push_blob<F, Fut>(
        &self,
        desc: &Descriptor,
        _from: Option<&Reference>,
        open: F,
    ) -> Result<Pushed, StoreError>
    where
        F: Fn() -> Fut + Send + Sync,
        Fut: Future<Output = Result<ByteStream, StoreError>> + Send,
    {
        let mut s = open().await?;
        let mut data = Vec::new();
        while let Some(chunk) = s.next().await {
            data.extend_from_slice(
                &chunk.map_err(StoreError::io(format!("blob {}", desc.digest)))?,
            );
        }
        if Digest::sha256_of(&data) != desc.digest {
            return Err(StoreError::Refused(format!(
                "blob {} does not match its content",
                desc.digest
            )));
        }
        locked(&self.blobs).insert(desc.digest.clone(), Bytes::from(data));
        locked(&self.events).push(Event::Blob(desc.digest.clone()));
        Ok(Pushed {
            uploaded: desc.size,
            uploads: 1,
            ..Pushed::default()
        })
    }

    async fn push_manifest(&self, m: &RawManifest) -> Result<bool, StoreError> {
        // As a registry does: a manifest whose children are missing is refused.
        for child in m.child_manifests() {
            if !self.has_manifest(&child.digest) {
                return Err(StoreError::Refused(format!(
                    "manifest {} names {}, which is not here",
                    m.digest, child.digest
                )));
            }
        }
        for blob in m.blobs() {
            if !self.has_blob(&blob.digest) {
                return Err(StoreError::Refused(format!(
                    "manifest {} names blob {}, which is not here",
                    m.digest, blob.digest
                )));
            }
        }
        let new = locked(&self.manifests)
            .insert(m.digest.clone(), m.clone())
            .is_none();
        locked(&self.events).push(Event::Manifest(m.digest.clone()));
        Ok(new)
    }

    async fn commit(&self) -> Result<Vec<String>, StoreError> {
        let staged = std::mem::take(&mut *locked(&self.staged_tags));
        let mut out = Vec::new();
        for (name, d) in staged {
            if !self.has_manifest(&d) {
                return Err(StoreError::NotFound(d));
            }
            locked(&self.tags).insert(name.clone(), d);
            locked(&self.events).push(Event::Tag(name.clone()));
            out.push(name);
        }
        Ok(out)
    }
}
