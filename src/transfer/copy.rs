//! Copy: a walked graph from registries straight into a registry placement.
//!
//! A policy over the engine: the source is the graph's own repositories, the sink the
//! placement (`--to-repo`, `--to-registry`); on one registry the sink mounts blobs from the
//! source repository instead of copying them.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::TransferError;
use super::engine::{self, CopyOptions, CopyReport, NoHooks, Reporter};
use super::graph::Graph;
use super::place::{Destination, Placement};
use super::relocate::metadata_images;
use crate::digest::Digest;
use crate::registry::Registries;
use crate::store::registry::{RegistrySink, RegistrySource};

/// Copies `graph` to `dest`; returns what was done and where everything went. `derived` holds
/// the blobs made in memory by a platform filter (derived bundles), empty otherwise.
pub async fn copy(
    registries: &Registries,
    graph: &Graph,
    dest: &Destination,
    concurrency: usize,
    reporter: &Arc<dyn Reporter>,
    derived: &HashMap<Digest, Bytes>,
) -> Result<(CopyReport, Placement), TransferError> {
    let placement = Placement::plan(graph, dest)?;
    let source = super::platform::WithDerived {
        inner: RegistrySource::new(registries, graph),
        derived,
    };
    let sink = RegistrySink::new(
        registries,
        &placement,
        graph,
        metadata_images(graph, &placement, dest)?,
    );
    let blobs = graph.blobs.values().map(|b| b.desc.clone()).collect();
    let opts = CopyOptions {
        concurrency,
        verify_skipped: false,
    };
    let report = engine::copy(&source, &sink, graph, blobs, opts, reporter, &NoHooks).await?;
    Ok((report, placement))
}
