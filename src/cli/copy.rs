//! `airlift copy`: registry-to-registry relocation for a host that sees both sides.

use std::sync::Arc;

use airlift::transfer::engine::Reporter;
use airlift::transfer::place::Destination;
use airlift::transfer::progress::Progress;
use airlift::transfer::walk::{RootRequest, Walker};
use anyhow::Context;
use clap::Args;

use super::common::{RegistryArgs, RunArgs, parse_ref, print_hosted};
use super::referrers::{CosignArgs, ReferrerArgs};

/// Copy a bundle or images, with everything they reference, straight to another registry.
///
/// Uses the same layouts as `airlift import`: `--to-repo` reproduces imgpkg's flat
/// relocation (everything in one repository, tagged `sha256-<hex>.imgpkg`), `--to-registry`
/// keeps repository paths under a prefix (and each bundle's repository also hosts its locked
/// images by mount, tagged as imgpkg's relocation tags them, so the stock `imgpkg pull -b`
/// rewrites the lock to it). Blobs the destination already has are skipped;
/// on the same registry, blobs are mounted instead of copied.
#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["bundle", "image"]))]
#[command(group = clap::ArgGroup::new("dest").required(true).args(["to_repo", "to_registry"]))]
pub struct CopyArgs {
    /// Bundle to copy, with every image its lock names (nested bundles too).
    #[arg(short = 'b', long = "bundle", value_name = "REF")]
    pub bundle: Option<String>,
    /// Image or index to copy (all platforms); repeatable.
    #[arg(short = 'i', long = "image", value_name = "REF")]
    pub image: Vec<String>,
    /// Destination repository for imgpkg's flat layout.
    #[arg(long = "to-repo", value_name = "REPO")]
    pub to_repo: Option<String>,
    /// Destination registry (and optional path prefix) keeping repository paths; each bundle's
    /// repository also hosts its locked images (by mount) for the stock imgpkg.
    #[arg(long = "to-registry", value_name = "PREFIX")]
    pub to_registry: Option<String>,
    /// Keep only this platform of every multi-arch index (`os/arch[/variant]`, repeatable),
    /// as `export --platform` does: filtered indexes, derived bundles with rewritten locks.
    #[arg(long = "platform", value_name = "OS/ARCH[/VARIANT]", value_parser = airlift::transfer::platform::PlatformSpec::parse)]
    pub platform: Vec<airlift::transfer::platform::PlatformSpec>,
    #[command(flatten)]
    pub referrers: ReferrerArgs,
    #[command(flatten)]
    pub cosign: CosignArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

pub async fn run(args: CopyArgs) -> anyhow::Result<()> {
    let registries = args.registry.registries()?;
    let mut requests = Vec::new();
    if let Some(b) = &args.bundle {
        requests.push(RootRequest::Bundle(parse_ref(b, "-b")?));
    }
    for i in &args.image {
        requests.push(RootRequest::Image(parse_ref(i, "-i")?));
    }
    let dest = match (&args.to_repo, &args.to_registry) {
        (Some(r), _) => Destination::Repo(parse_ref(r, "--to-repo")?),
        (_, Some(p)) => Destination::Registry(p.clone()),
        _ => anyhow::bail!("one of --to-repo or --to-registry is required"),
    };
    let concurrency = usize::from(args.run.concurrency);
    let graph = Walker::new(&registries, concurrency)
        .walk(&requests)
        .await?;
    let (mut graph, filtered) = if args.platform.is_empty() {
        (graph, airlift::transfer::platform::Filtered::default())
    } else {
        airlift::transfer::platform::filter(&registries, graph, &args.platform).await?
    };
    args.referrers
        .discover(&registries, &mut graph, concurrency)
        .await?;
    args.cosign
        .enforce(
            &graph,
            &airlift::store::registry::RegistrySource::new(&registries, &graph),
        )
        .await
        .context("nothing was copied")?;
    let progress = Arc::new(Progress::new(
        args.run.progress_mode(),
        "copy",
        graph.blobs.len() as u64,
        graph.blobs.values().map(|b| b.desc.size).sum(),
    ));
    let reporter: Arc<dyn Reporter> = progress.clone();
    let (report, placement) = airlift::transfer::copy::copy(
        &registries,
        &graph,
        &dest,
        concurrency,
        &reporter,
        &filtered.derived_blobs,
    )
    .await?;
    progress.finish();
    for root in &graph.roots {
        if let Some(to) = placement.mapping.get(root.reference.original()) {
            println!("{} -> {to}", root.reference.original());
        }
    }
    print_hosted(&placement);
    if !args.platform.is_empty() {
        eprintln!(
            "platform filter: {} index(es) filtered, {} bundle(s) derived, {} bytes left out",
            filtered.indexes, filtered.bundles, filtered.left_out_bytes
        );
    }
    eprintln!(
        "copied {} manifests, {} blobs ({} bytes); {} blobs already present, {} mounted",
        report.manifests_pushed,
        report.blobs_pushed,
        report.bytes_pushed,
        report.blobs_present,
        report.blobs_mounted
    );
    Ok(())
}
