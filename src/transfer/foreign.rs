//! Import from another tool's archive: the same engine and registry sink as an airlift
//! import, without the parts that need an airlift manifest (signatures, release provenance,
//! volumes, deltas). Every blob is verified as it streams, also those the destination has.

use std::sync::Arc;

use super::TransferError;
use super::engine::{self, CopyOptions, CopyReport, NoHooks, Reporter};
use super::import::ImportOptions;
use super::place::{Destination, Placement};
use super::progress::Progress;
use super::relocate::metadata_images;
use crate::oci::Descriptor;
use crate::registry::Registries;
use crate::store::foreign::ForeignStore;
use crate::store::registry::RegistrySink;

pub use crate::store::foreign::{ForeignReport, Format, open as open_foreign};

/// Pushes another tool's archive to `dest`; manifests and tags only after every blob verified.
pub async fn import_foreign(
    registries: &Registries,
    store: &ForeignStore,
    dest: &Destination,
    options: ImportOptions,
) -> Result<(CopyReport, Placement), TransferError> {
    let graph = &store.graph;
    let placement = Placement::plan(graph, dest)?;
    let sink = RegistrySink::new(
        registries,
        &placement,
        graph,
        metadata_images(graph, &placement, dest)?,
    )
    .verify_existing(options.verify_existing);
    let blobs: Vec<Descriptor> = graph.blobs.values().map(|b| b.desc.clone()).collect();
    let total: u64 = blobs.iter().map(|b| b.size).sum();
    let progress = Arc::new(Progress::new(
        options.progress,
        "import",
        blobs.len() as u64,
        total,
    ));
    let reporter: Arc<dyn Reporter> = progress.clone();
    let opts = CopyOptions {
        concurrency: options.concurrency,
        verify_skipped: true,
    };
    let report = engine::copy(store, &sink, graph, blobs, opts, &reporter, &NoHooks).await?;
    progress.finish();
    Ok((report, placement))
}
