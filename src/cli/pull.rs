//! `airlift pull`: fetch a bundle or image and extract it safely into a directory.

use std::path::PathBuf;

use airlift::author::publish::{self, PullKind, PullOptions};
use clap::Args;

use super::common::{RegistryArgs, RunArgs, parse_ref};

/// Pull a bundle (-b) or image (-i) and extract its files into DIR.
///
/// Like `imgpkg pull`, but extraction is guarded: entries with `..`, absolute paths,
/// symlinks, hard links or device files are refused, so nothing is written outside DIR.
/// DIR must be new or empty (imgpkg deletes an existing DIR's contents; airlift refuses
/// instead). For a bundle, `.imgpkg/images.yml` is rewritten to point at the bundle's own
/// repository when that repository hosts every locked image (its
/// `sha256-<hex>.image-locations.imgpkg` image exists, or every digest is there), keeping
/// annotations and order, exactly as imgpkg does after `copy --to-repo`; both of imgpkg's
/// messages are printed. -r also pulls nested bundles into `DIR/.imgpkg/bundles/sha256-<hex>/`.
///
/// Example: `airlift pull -b registry.internal/apps/guestbook:1.0 -o ./guestbook`
#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["bundle", "image"]))]
pub struct PullArgs {
    /// Bundle to pull (refused if it is a plain image).
    #[arg(short = 'b', long = "bundle", value_name = "REF")]
    pub bundle: Option<String>,
    /// Image to pull (refused if it is a bundle).
    #[arg(short = 'i', long = "image", value_name = "REF")]
    pub image: Option<String>,
    /// Directory to extract into (created; must be empty if it exists).
    #[arg(short = 'o', long = "output", value_name = "DIR", required = true)]
    pub output: PathBuf,
    /// Also pull every nested bundle into DIR/.imgpkg/bundles/sha256-<hex>/.
    #[arg(short = 'r', long = "recursive", conflicts_with = "image")]
    pub recursive: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

pub async fn run(args: PullArgs) -> anyhow::Result<()> {
    let (text, flag, kind) = match (&args.bundle, &args.image) {
        (Some(b), _) => (b, "-b", PullKind::Bundle),
        (_, Some(i)) => (i, "-i", PullKind::Image),
        _ => anyhow::bail!("one of -b or -i is required"),
    };
    let r = parse_ref(text, flag)?;
    let registries = args.registry.registries()?;
    let opts = PullOptions {
        kind,
        recursive: args.recursive,
        concurrency: usize::from(args.run.concurrency),
        ..PullOptions::default()
    };
    let quiet = args.run.quiet;
    let log = move |line: &str| {
        if !quiet {
            println!("{line}");
        }
    };
    publish::pull(&registries, &r, &args.output, &opts, &log).await?;
    println!();
    println!("Succeeded");
    Ok(())
}
