//! `airlift export`: a bundle or images, and everything they reference, into one signed archive.

use std::path::PathBuf;

use airlift::archive::manifest::creation_time;
use airlift::transfer::export::{ExportOptions, export};
use airlift::transfer::walk::{RootRequest, Walker};
use anyhow::Context;
use clap::Args;

use super::common::{RegistryArgs, RunArgs, parse_ref};
use super::referrers::ReferrerArgs;

/// Write a bundle (or images) and everything they reference into one signed archive file.
///
/// The archive is an OCI image layout in a tar (optionally zstd-compressed) with a signed
/// airlift manifest listing every blob. The walk covers the bundle, every image its
/// `.imgpkg/images.yml` locks, nested bundles, and every platform of multi-arch indexes; each
/// blob is stored once and checked against its digest while streaming. The file is written
/// as FILE.partial, flushed to disk and renamed only when complete, so a file at FILE is
/// always whole (volumes of a set are renamed together at the end). A failed run removes its
/// .partial files; a killed one leaves them for --resume. FILE's directory also gets
/// NAME.B3SUMS and NAME.SHA256SUMS for `b3sum -c` / `sha256sum -c`. Set SOURCE_DATE_EPOCH for
/// byte-identical repeat exports.
///
/// --from FILE converts another tool's archive instead of reading a registry: an OCI image
/// layout (directory or tar), a `docker save` tar, or an imgpkg `copy --to-tar` file (a bundle
/// in it stays a bundle, with its lock). Every digest is checked while it is written.
///
/// Example: airlift export -b registry.example/app-bundle:1.0 -o app-1.0.tar --sign-key release.key
/// Example: airlift export --from app.imgpkg.tar -o app-1.0.tar --sign-key release.key
#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("source").required(true).multiple(true).args(["bundle", "image", "lock", "from"]))]
#[command(group = clap::ArgGroup::new("signing").required(true).args(["sign_key", "unsigned"]))]
pub struct ExportArgs {
    /// Bundle to export, with every image its lock names (nested bundles too).
    #[arg(short = 'b', long = "bundle", value_name = "REF")]
    pub bundle: Option<String>,
    /// Image or index to export (all platforms); repeatable.
    #[arg(short = 'i', long = "image", value_name = "REF")]
    pub image: Vec<String>,
    /// Export every image of an ImagesLock file (e.g. .imgpkg/images.yml).
    #[arg(long = "lock", value_name = "IMAGES_LOCK")]
    pub lock: Option<PathBuf>,
    /// Read another tool's archive instead of a registry (OCI layout dir or tar, docker save,
    /// imgpkg copy --to-tar), and write it as a signed airlift archive.
    #[arg(long = "from", value_name = "FILE", conflicts_with_all = ["bundle", "image", "lock"])]
    pub from: Option<PathBuf>,
    /// The archive to write (`.tar`, or `.tar.zst` with --zstd).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    /// Sign the archive with this ed25519 private key (PEM); repeatable for several signers.
    #[arg(long = "sign-key", value_name = "KEY")]
    pub sign_key: Vec<PathBuf>,
    /// Accept a --sign-key file that group or others can read (refused by default, as ssh does).
    #[arg(long = "allow-insecure-key-permissions")]
    pub allow_insecure_key_permissions: bool,
    /// Signed release counter (raise it each release); `verify --not-older-than` compares it.
    #[arg(long, value_name = "N")]
    pub sequence: Option<u64>,
    /// Signed expiry: a duration after creation (90d, 12h) or an RFC 3339 time; verify and
    /// import refuse the archive afterwards unless --allow-expired.
    #[arg(long, value_name = "90d|RFC3339", value_parser = airlift::archive::manifest::Expires::parse)]
    pub expires: Option<airlift::archive::manifest::Expires>,
    /// Write an unsigned archive (importers must then pass --allow-unsigned).
    #[arg(long)]
    pub unsigned: bool,
    /// Compress the whole archive with zstd (layers are never re-compressed).
    #[arg(long)]
    pub zstd: bool,
    /// Split into volumes of at most SIZE bytes each (`4GiB`, `700MB`, `fat32`, or bytes):
    /// `-o NAME.tar` writes NAME.001.tar, NAME.002.tar, …, each verifiable and importable alone.
    #[arg(long = "volume-size", value_name = "SIZE", value_parser = parse_volume_size)]
    pub volume_size: Option<u64>,
    /// Delta: leave out the layers BASE already delivered (an earlier archive or any of its
    /// volumes, its airlift/manifest.json, or an import receipt).
    #[arg(long = "since", value_name = "BASE")]
    pub since: Option<PathBuf>,
    /// Continue an interrupted export: keep the entries of its .partial files that re-hash
    /// correctly, fetch only the rest. Refused if the source changed since.
    #[arg(long)]
    pub resume: bool,
    /// Keep only this platform of every multi-arch index (`os/arch[/variant]`, repeatable),
    /// with the attestation manifests of what is kept. Each filtered index gets a new digest,
    /// so every bundle whose lock names one is carried as a derived bundle (same files, lock
    /// rewritten, new manifest); the signed airlift manifest records original -> filtered.
    #[arg(long = "platform", value_name = "OS/ARCH[/VARIANT]", value_parser = parse_platform)]
    pub platform: Vec<airlift::transfer::platform::PlatformSpec>,
    #[command(flatten)]
    pub referrers: ReferrerArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

fn parse_platform(text: &str) -> Result<airlift::transfer::platform::PlatformSpec, String> {
    airlift::transfer::platform::PlatformSpec::parse(text)
}

fn parse_volume_size(text: &str) -> Result<u64, String> {
    airlift::archive::plan::parse_size(text)
}

pub async fn run(args: ExportArgs) -> anyhow::Result<()> {
    let signers = args
        .sign_key
        .iter()
        .map(|p| {
            airlift::keys::load_signing_key_with(p, args.allow_insecure_key_permissions)
                .with_context(|| format!("--sign-key {}", p.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let base = match &args.since {
        Some(p) => Some(airlift::transfer::export::Base::load(p)?),
        None => None,
    };
    let concurrency = usize::from(args.run.concurrency);
    let mut options = ExportOptions {
        output: args.output.clone(),
        volume_size: args.volume_size,
        base,
        resume: args.resume,
        zstd: args.zstd,
        signers,
        created: creation_time(),
        prefetch: concurrency,
        progress: args.run.progress_mode(),
        freeze: airlift::archive::manifest::Freeze {
            sequence: args.sequence,
            expires: args.expires.clone(),
        },
        platforms: Default::default(),
    };
    let mut filter_line = None;
    let summary = match &args.from {
        Some(from) => {
            if !args.platform.is_empty() {
                anyhow::bail!(
                    "--platform works on a registry source: import the file first, or export \
                     it whole with --from"
                );
            }
            let store = super::foreign::open(from)?.ok_or_else(|| {
                anyhow::anyhow!(
                    "--from {}: this is already an airlift archive; `airlift verify` and \
                     `airlift import` read it as it is",
                    from.display()
                )
            })?;
            eprintln!("reading {}", store.format.describe());
            airlift::transfer::export::export_from(&store, &store.graph, options).await
        }
        None => {
            let registries = args.registry.registries()?;
            let graph = Walker::new(&registries, concurrency)
                .walk(&requests(&args)?)
                .await?;
            let mut graph = if args.platform.is_empty() {
                graph
            } else {
                let (graph, platforms) =
                    airlift::transfer::platform::filter(&registries, graph, &args.platform)
                        .await?;
                filter_line = Some(format!(
                    "platform filter {}: {} index(es) filtered, {} bundle(s) derived, {} bytes left out",
                    args.platform
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    platforms.indexes,
                    platforms.bundles,
                    platforms.left_out_bytes
                ));
                options.platforms = platforms;
                graph
            };
            args.referrers
                .discover(&registries, &mut graph, concurrency)
                .await?;
            export(&registries, &graph, options).await
        }
    }
    .with_context(|| format!("exporting to {}", args.output.display()))?;
    report(&args, &summary, filter_line.as_deref());
    Ok(())
}

/// What `-b`, `-i` and `--lock` ask for.
fn requests(args: &ExportArgs) -> anyhow::Result<Vec<RootRequest>> {
    let mut requests = Vec::new();
    if let Some(b) = &args.bundle {
        requests.push(RootRequest::Bundle(parse_ref(b, "-b")?));
    }
    for i in &args.image {
        requests.push(RootRequest::Image(parse_ref(i, "-i")?));
    }
    if let Some(lock) = &args.lock {
        let l = airlift::author::lock::ImagesLock::read(lock, &airlift::yaml::Limits::default())?;
        for img in &l.images {
            requests.push(RootRequest::Image(parse_ref(&img.image, "--lock entry")?));
        }
    }
    Ok(requests)
}

/// Prints what an export wrote.
fn report(
    args: &ExportArgs,
    summary: &airlift::transfer::export::ExportSummary,
    filter_line: Option<&str>,
) {
    for f in &summary.files {
        println!("{}", f.display());
    }
    for f in &summary.checksum_files {
        eprintln!("wrote {}", f.display());
    }
    if summary.resumed_entries > 0 {
        eprintln!(
            "resumed: kept {} verified entries from the interrupted run",
            summary.resumed_entries
        );
    }
    if let Some(line) = filter_line {
        eprintln!("{line}");
    }
    if let Some(b) = &args.since {
        eprintln!(
            "delta over {}: {} layer(s) left out (already delivered)",
            b.display(),
            summary.base_blobs
        );
    }
    eprintln!(
        "exported {} images, {} blobs, {} bytes of content ({} bytes saved by dedup) into {} bytes; manifest {}; {}",
        summary.images,
        summary.blobs,
        summary.blob_bytes,
        summary.dedup_saved_bytes,
        summary.archive_bytes,
        summary.manifest_digest,
        if summary.signers.is_empty() {
            "UNSIGNED".to_owned()
        } else {
            format!("signed by {}", summary.signers.join(", "))
        }
    );
}
