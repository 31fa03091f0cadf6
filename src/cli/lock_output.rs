//! `--lock-output` of import and copy: the lock that makes the relocated content deployable.

use std::collections::BTreeMap;
use std::path::Path;

use airlift::author::lock::{BundleLock, ImagesLock, LockedImage};
use airlift::transfer::graph::{Graph, Kind};
use airlift::transfer::place::Placement;
use anyhow::Context;

/// Writes a BundleLock (one bundle root) or an ImagesLock (image roots), atomically.
pub fn write_relocated_lock(
    out: &Path,
    graph: &Graph,
    placement: &Placement,
) -> anyhow::Result<()> {
    let to = |original: &str| -> anyhow::Result<String> {
        placement
            .mapping
            .get(original)
            .map(|r| r.to_string())
            .with_context(|| format!("no destination recorded for {original}"))
    };
    let text = match graph.roots.as_slice() {
        [root] if root.kind == Kind::Bundle => BundleLock::new(
            to(root.reference.original())?,
            root.reference.tag().unwrap_or_default(),
        )
        .to_yaml(),
        roots => {
            let mut images = Vec::new();
            for r in roots {
                images.push(LockedImage {
                    image: to(r.reference.original())?,
                    annotations: BTreeMap::from([(
                        "kbld.carvel.dev/id".to_owned(),
                        r.reference.original().to_owned(),
                    )]),
                });
            }
            ImagesLock::new(images).to_yaml()
        }
    };
    let tmp = out.with_extension("partial");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}
