//! `airlift import`: a verified archive into the internal registry, with a rewritten lock.

use std::path::PathBuf;

use airlift::transfer::graph::Kind;
use airlift::transfer::import::{ImportOptions, Trust, import, open_archives};
use airlift::transfer::place::Destination;
use anyhow::Context;
use clap::Args;

use super::common::{RegistryArgs, RunArgs, parse_ref, print_hosted};
use super::lock_output::write_relocated_lock;
use super::referrers::CosignArgs;
use super::trust::TrustArgs;

/// Push a verified archive into a registry inside the air gap.
///
/// Signatures are checked before anything else is read. Every blob is checked against its
/// sha256 while it streams to the registry (blobs the registry already has are skipped, so a
/// re-run resumes an interrupted import). Manifests, indexes and tags are pushed only after
/// every blob verified: a tampered archive leaves no manifest and no tag behind.
///
/// --to-repo REPO reproduces imgpkg's relocation (everything in REPO, tagged
/// sha256-<hex>.imgpkg, the bundle's tag kept, a locations image per bundle), so both
/// `imgpkg pull -b REPO:TAG` and `airlift pull -b REPO:TAG` rewrite the bundle's lock to REPO.
/// --to-registry PREFIX keeps repository paths (src.example/library/redis -> PREFIX/library/redis)
/// and also makes each bundle's repository host every image its lock reaches, mounted from
/// where it landed (no bytes sent twice), tagged and with a locations image as imgpkg's own
/// relocation leaves it: `imgpkg pull -b PREFIX/<bundle path>:TAG` (and kapp-controller)
/// rewrite the lock to the bundle's repository, `airlift pull -b` to the path-keeping copies.
/// The archive is only read: nothing is written next to it.
///
/// Volumes of a set can be given all at once or a few per run (one stick at a time): each
/// run verifies and pushes the blobs of the volumes it is given; the run after which every
/// blob of the archive is at the destination pushes manifests and tags. A delta (`export
/// --since`) is refused before anything is pushed if a blob it relies on is missing.
///
/// Other tools' archives are read too, told from their content: an OCI image layout
/// (directory or tar, as skopeo, umoci, oras, crane or BuildKit write it), a `docker save`
/// tar, or an imgpkg `copy --to-tar` file. They carry no signature, so they need
/// --allow-unsigned; every digest is still checked while it streams.
///
/// Example: airlift import app-1.0.tar --to-repo registry.internal/apps/app --trust release.pub --lock-output app.lock.yml
#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("dest").required(true).args(["to_repo", "to_registry"]))]
pub struct ImportArgs {
    /// The archive (`.tar` or `.tar.zst`), or one or more volumes of a set, in any order; or
    /// another tool's archive (OCI layout directory or tar, docker save, imgpkg tar).
    #[arg(value_name = "ARCHIVE", required = true, num_args = 1..)]
    pub archive: Vec<PathBuf>,
    /// Destination repository for imgpkg's flat layout.
    #[arg(long = "to-repo", value_name = "REPO")]
    pub to_repo: Option<String>,
    /// Destination registry (and optional path prefix) keeping repository paths; each bundle's
    /// repository also hosts its locked images (by mount) for the stock imgpkg.
    #[arg(long = "to-registry", value_name = "PREFIX")]
    pub to_registry: Option<String>,
    /// Write the relocated lock: a BundleLock for a bundle, an ImagesLock for images.
    #[arg(long = "lock-output", value_name = "FILE")]
    pub lock_output: Option<PathBuf>,
    /// Check signatures and every blob, print the plan, push nothing.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    /// Do not trust blobs the destination already has: read each back and check its sha256
    /// (catches a registry whose storage was altered; costs a download of what was skipped).
    #[arg(long = "verify-existing")]
    pub verify_existing: bool,
    /// Move tags back to an older release on purpose. Without it, an archive older than the
    /// one that set a tag (by `sequence`, else `created`) is refused before anything is pushed;
    /// the record of which archive set each tag lives in the destination repository
    /// (tag `airlift-tag-provenance`), so every importing host sees it.
    #[arg(long = "allow-downgrade")]
    pub allow_downgrade: bool,
    /// Write an import receipt (JSON: archive identity, signers, what went where, every blob).
    #[arg(long = "receipt", value_name = "FILE", conflicts_with = "dry_run")]
    pub receipt: Option<PathBuf>,
    /// Sign the receipt with this ed25519 private key (PEM); the signature goes to FILE.sig.
    #[arg(long = "receipt-key", value_name = "KEY", requires = "receipt")]
    pub receipt_key: Option<PathBuf>,
    /// Accept a --receipt-key file that group or others can read (refused by default, as ssh does).
    #[arg(long = "allow-insecure-key-permissions")]
    pub allow_insecure_key_permissions: bool,
    /// Import an archive whose signed `expires` time has passed (with a warning).
    #[arg(long = "allow-expired")]
    pub allow_expired: bool,
    #[command(flatten)]
    pub trust: TrustArgs,
    #[command(flatten)]
    pub cosign: CosignArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

pub async fn run(args: ImportArgs) -> anyhow::Result<bool> {
    let trust = Trust {
        keys: args.trust.keys()?,
        required: args.trust.require_signatures,
        allow_unsigned: args.trust.allow_unsigned,
    };
    let dest = match (&args.to_repo, &args.to_registry) {
        (Some(r), _) => Destination::Repo(parse_ref(r, "--to-repo")?),
        (_, Some(p)) => Destination::Registry(p.trim_end_matches('/').to_owned()),
        _ => anyhow::bail!("one of --to-repo or --to-registry is required"),
    };
    // Another tool's archive (OCI layout, docker save, imgpkg tar): same engine, no signature.
    if let [one] = &args.archive[..]
        && let Some(store) = super::foreign::open(one)?
    {
        let registries = args.registry.registries()?;
        let request = super::foreign::ImportRequest {
            dest: &dest,
            allow_unsigned: trust.allow_unsigned,
            dry_run: args.dry_run,
            lock_output: args.lock_output.as_ref(),
            receipt: args.receipt.is_some(),
            options: ImportOptions {
                concurrency: usize::from(args.run.concurrency),
                progress: args.run.progress_mode(),
                verify_existing: args.verify_existing,
                allow_downgrade: args.allow_downgrade,
            },
        };
        return super::foreign::import(&registries, &store, request).await;
    }
    if args.dry_run {
        let opts = airlift::archive::verify::VerifyOptions {
            trusted: trust.keys.clone(),
            required: trust.required,
            allow_unsigned: trust.allow_unsigned,
        };
        let paths = args.archive.clone();
        let reports = tokio::task::spawn_blocking(move || {
            paths
                .iter()
                .map(|p| airlift::archive::verify::verify(p, &opts))
                .collect::<Vec<_>>()
        })
        .await?;
        let mut ok = true;
        for report in &reports {
            for f in &report.failures {
                eprintln!("{}: FAILED {:?}: {}", report.archive, f.kind, f.message);
                ok = false;
            }
        }
        if !ok {
            return Ok(false);
        }
        let opened = open_archives(&args.archive, &trust).await?;
        enforce_cosign(&args.cosign, &opened).await?;
        let placement = airlift::transfer::place::Placement::plan(&opened.graph, &dest)?;
        for (from, to) in &placement.mapping {
            println!("{from} -> {to}");
        }
        eprintln!(
            "dry run: archive verifies; would push {} blobs and {} manifests, set {} tags",
            opened.graph.blobs.len(),
            opened.graph.manifests.len(),
            placement.tags.len()
        );
        return Ok(true);
    }
    let receipt_key = args
        .receipt_key
        .as_ref()
        .map(|p| {
            airlift::keys::load_signing_key_with(p, args.allow_insecure_key_permissions)
                .with_context(|| format!("--receipt-key {}", p.display()))
        })
        .transpose()?;
    let opened = open_archives(&args.archive, &trust).await?;
    super::verify::check_expiry(&opened.header.manifest, args.allow_expired)?;
    enforce_cosign(&args.cosign, &opened).await?;
    let identity = airlift::transfer::receipt::ArchiveIdentity::of(&opened);
    if opened.signers.is_empty() {
        eprintln!("warning: importing an archive without trusted signatures (--allow-unsigned)");
    } else {
        eprintln!("signed by {}", opened.signers.join(", "));
    }
    let registries = args.registry.registries()?;
    let options = ImportOptions {
        concurrency: usize::from(args.run.concurrency),
        progress: args.run.progress_mode(),
        verify_existing: args.verify_existing,
        allow_downgrade: args.allow_downgrade,
    };
    let (summary, placement, graph) = import(&registries, opened, &dest, options)
        .await
        .with_context(|| {
            format!(
                "importing {}",
                args.archive
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        })?;
    for r in &summary.rollbacks {
        eprintln!("warning: rolling back (--allow-downgrade): {r}");
    }
    if !summary.complete {
        let r = &summary.report;
        eprintln!(
            "pushed {} blobs ({} bytes), {} already present; the archive is not complete at the destination yet: \
             no manifest or tag pushed. Volumes still needed: {}",
            r.blobs_pushed,
            r.bytes_pushed,
            r.blobs_present,
            summary
                .volumes_needed
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        if args.lock_output.is_some() || args.receipt.is_some() {
            eprintln!("--lock-output and --receipt are written by the run that completes the set");
        }
        return Ok(true);
    }
    for root in &graph.roots {
        if let Some(to) = placement.mapping.get(root.reference.original()) {
            println!("{} -> {to}", root.reference.original());
        }
    }
    print_hosted(&placement);
    if let Some(out) = &args.lock_output {
        write_relocated_lock(out, &graph, &placement)?;
        eprintln!("wrote {}", out.display());
    }
    if let Some(out) = &args.receipt {
        use airlift::transfer::receipt::{Receipt, write_receipt};
        let verifying = receipt_key.as_ref().map(|k| k.verifying_key());
        let receipt = Receipt::build(
            identity,
            &summary,
            &graph,
            &placement,
            &dest,
            verifying.as_ref(),
        )?;
        write_receipt(out, &receipt, receipt_key.as_ref())?;
        eprintln!("wrote receipt {}", out.display());
    }
    eprintln!("{}", import_summary(&graph, &summary.report, None));
    Ok(true)
}

/// The one-line summary of an import (from an airlift archive, or `from` another tool's file).
pub(super) fn import_summary(
    graph: &airlift::graph::Graph,
    r: &airlift::transfer::engine::CopyReport,
    from: Option<&str>,
) -> String {
    format!(
        "imported {} bundle(s) and {} image(s){}: uploaded {} blobs ({} bytes), mounted {} from \
         another repository ({} bytes, not sent again), {} already present ({} bytes); {} \
         manifests pushed, {} present; {} tags",
        graph
            .roots
            .iter()
            .filter(|r| r.kind == Kind::Bundle)
            .count(),
        graph.roots.iter().filter(|r| r.kind == Kind::Image).count() + graph.locked.len(),
        from.map(|f| format!(" from {f}")).unwrap_or_default(),
        r.blobs_pushed,
        r.bytes_pushed,
        r.blobs_mounted,
        r.bytes_mounted,
        r.blobs_present,
        r.bytes_present,
        r.manifests_pushed,
        r.manifests_present,
        r.tags.len()
    )
}

/// The cosign policy on an opened archive, before anything is pushed.
async fn enforce_cosign(
    cosign: &CosignArgs,
    opened: &airlift::transfer::import::OpenedArchive,
) -> anyhow::Result<()> {
    if cosign.cosign_key.is_empty() && cosign.trusted_root.is_none() {
        return Ok(());
    }
    if !opened.random_access() {
        anyhow::bail!(
            "--cosign-key needs to read signatures before pushing, which a .tar.zst archive              (read in one pass) does not allow: decompress it first (zstd -d {})",
            opened.path.display()
        );
    }
    cosign
        .enforce(&opened.graph, opened)
        .await
        .with_context(|| format!("{}: nothing was pushed", opened.path.display()))
}
