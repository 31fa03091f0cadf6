//! Other tools' archives at the CLI edge: `inspect`, `verify`, `import` and `export --from`
//! route here when the content is an OCI layout, a `docker save` tar or an imgpkg tar.

use std::path::{Path, PathBuf};

use airlift::store::foreign::{self, ForeignStore};
use airlift::transfer::graph::Kind;
use airlift::transfer::import::ImportOptions;
use airlift::transfer::place::Destination;
use anyhow::Context;

/// Opens `path` if it is another tool's archive (`None` for an airlift archive).
pub fn open(path: &Path) -> anyhow::Result<Option<ForeignStore>> {
    Ok(foreign::open(path)?)
}

/// What `path` is, for a one-line note, or the reason it cannot be read.
fn what(store: &ForeignStore) -> String {
    format!(
        "{} (not an airlift archive: no airlift manifest, no signature)",
        store.format.describe()
    )
}

fn kind(k: Kind) -> &'static str {
    match k {
        Kind::Bundle => "bundle",
        Kind::Image => "image",
    }
}

/// `inspect` of another tool's archive, as JSON.
pub fn inspect_json(store: &ForeignStore) -> serde_json::Value {
    let g = &store.graph;
    serde_json::json!({
        "archive": store.path.display().to_string(),
        "format": store.format,
        "signed": false,
        "identity": store.identity.to_string(),
        "roots": g.roots.iter().map(|r| serde_json::json!({
            "reference": r.reference.to_string(),
            "digest": r.digest.to_string(),
            "media_type": r.media_type,
            "kind": kind(r.kind),
        })).collect::<Vec<_>>(),
        "bundles": g.bundle_locks.iter().map(|b| serde_json::json!({
            "digest": b.bundle.to_string(),
            "images": b.entries.iter().map(|(i, _)| i.clone()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "manifests": g.manifests.len(),
        "blobs": { "count": g.blobs.len(), "bytes": g.blobs.values().map(|b| b.desc.size).sum::<u64>() },
    })
}

/// `inspect` of another tool's archive, for people.
pub fn inspect_human(store: &ForeignStore) {
    let g = &store.graph;
    println!("archive:   {}", store.path.display());
    println!("format:    {}", what(store));
    println!("identity:  {} (sha256 of its index)", store.identity);
    println!("\nROOTS");
    println!("  {:<6}  {:<71}  REFERENCE", "KIND", "DIGEST");
    for r in &g.roots {
        println!(
            "  {:<6}  {:<71}  {}",
            kind(r.kind),
            r.digest.to_string(),
            r.reference
        );
    }
    for b in &g.bundle_locks {
        println!("\nBUNDLE {}", b.bundle);
        for (image, _) in &b.entries {
            println!("  {image}");
        }
    }
    println!(
        "\nMANIFESTS {} (each checked against its digest)",
        g.manifests.len()
    );
    println!(
        "BLOBS     {} blobs, {} bytes (not read: use `airlift verify --allow-unsigned`)",
        g.blobs.len(),
        g.blobs.values().map(|b| b.desc.size).sum::<u64>()
    );
}

/// `verify` of another tool's archive: every digest; there is no signature to check.
pub fn verify(store: &ForeignStore, allow_unsigned: bool, json: bool) -> anyhow::Result<bool> {
    if !allow_unsigned {
        println!(
            "FAILED: {} is {}; there is no signature to check. Pass --allow-unsigned to check \
             every digest it holds.",
            store.path.display(),
            what(store)
        );
        return Ok(false);
    }
    let report = store.verify_all();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(report.ok);
    }
    println!("archive:    {}", report.archive);
    println!("format:     {}", what(store));
    println!("signatures: none exists to check (accepted: --allow-unsigned)");
    println!(
        "manifests:  {} checked against their digests",
        report.manifests_checked
    );
    println!(
        "blobs:      {} checked, {} bytes hashed",
        report.blobs_checked, report.bytes_checked
    );
    for f in &report.failures {
        println!("FAILED: {f}");
    }
    println!(
        "{}",
        if report.ok {
            "OK: every digest verifies (no signature exists to check)"
        } else {
            "FAILED: the archive does not verify"
        }
    );
    Ok(report.ok)
}

/// What `import` needs of its arguments for another tool's archive.
pub struct ImportRequest<'a> {
    pub dest: &'a Destination,
    pub allow_unsigned: bool,
    pub dry_run: bool,
    pub lock_output: Option<&'a PathBuf>,
    pub receipt: bool,
    pub options: ImportOptions,
}

/// `import` of another tool's archive.
pub async fn import(
    registries: &airlift::registry::Registries,
    store: &ForeignStore,
    req: ImportRequest<'_>,
) -> anyhow::Result<bool> {
    if !req.allow_unsigned {
        anyhow::bail!(
            "{} is {}; pass --allow-unsigned to import it (every digest is still checked)",
            store.path.display(),
            what(store)
        );
    }
    if req.receipt {
        anyhow::bail!(
            "--receipt records an airlift archive's signed identity; {} is {}: convert it first \
             with `airlift export --from {} -o app.tar --sign-key KEY`",
            store.path.display(),
            store.format.describe(),
            store.path.display()
        );
    }
    eprintln!("warning: importing {} (no signature)", what(store));
    if req.dry_run {
        let report = tokio::task::block_in_place(|| store.verify_all());
        for f in &report.failures {
            eprintln!("FAILED: {f}");
        }
        if !report.ok {
            return Ok(false);
        }
        let placement = airlift::transfer::place::Placement::plan(&store.graph, req.dest)?;
        for (from, to) in &placement.mapping {
            println!("{from} -> {to}");
        }
        eprintln!(
            "dry run: every digest verifies; would push {} blobs and {} manifests, set {} tags",
            store.graph.blobs.len(),
            store.graph.manifests.len(),
            placement.tags.len()
        );
        return Ok(true);
    }
    let (r, placement) =
        airlift::transfer::foreign::import_foreign(registries, store, req.dest, req.options)
            .await
            .with_context(|| format!("importing {}", store.path.display()))?;
    let graph = &store.graph;
    for root in &graph.roots {
        if let Some(to) = placement.mapping.get(root.reference.original()) {
            println!("{} -> {to}", root.reference.original());
        }
    }
    if let Some(out) = req.lock_output {
        super::lock_output::write_relocated_lock(out, graph, &placement)?;
        eprintln!("wrote {}", out.display());
    }
    eprintln!(
        "{}",
        super::import::import_summary(graph, &r, Some(store.format.describe()))
    );
    Ok(true)
}
