//! `--lock-output` of import and copy: the lock that makes the relocated content deployable.

use std::path::Path;

use airlift::fsutil;
use airlift::transfer::graph::Graph;
use airlift::transfer::place::Placement;
use airlift::transfer::relocate::relocated_lock_yaml;
use anyhow::Context;

/// Writes a BundleLock (one bundle root) or an ImagesLock (image roots), atomically.
pub fn write_relocated_lock(
    out: &Path,
    graph: &Graph,
    placement: &Placement,
) -> anyhow::Result<()> {
    let text = relocated_lock_yaml(graph, placement)?;
    fsutil::write_atomic(out, text.as_bytes(), fsutil::PUBLIC)
        .with_context(|| format!("writing {}", out.display()))
}
