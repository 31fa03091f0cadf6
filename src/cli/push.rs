//! `airlift push`: build an imgpkg bundle or plain image from directories and push it.

use std::path::PathBuf;

use airlift::author::lock::BundleLock;
use airlift::author::publish::{self, PushKind};
use anyhow::Context;
use clap::Args;

use super::common::{RegistryArgs, parse_ref};

/// Push directories as an imgpkg bundle (-b) or a plain image (-i).
///
/// Builds exactly what `imgpkg push` builds: a Docker v2 manifest, imgpkg's config bytes and
/// one gzip layer (`application/vnd.docker.image.rootfs.diff.tar.gzip`) whose uncompressed
/// tar is byte-identical to imgpkg's, so imgpkg and kbld can consume it. A bundle needs one
/// `.imgpkg/images.yml` (an ImagesLock, e.g. from `airlift lock`) directly under one -f
/// directory; an image must have no `.imgpkg`. Symlinks are refused, `.git` is skipped.
/// Besides REPO:TAG the manifest is also tagged `sha256-<hex>.imgpkg`. The layer is staged in
/// a temp file, never in memory.
///
/// Example:
/// `airlift push -b registry.example.com/apps/guestbook:1.0 -f bundle/ --lock-output bundle.lock.yml`
#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("target").required(true).args(["bundle", "image"]))]
pub struct PushArgs {
    /// Push a bundle to REPO:TAG.
    #[arg(short = 'b', long = "bundle", value_name = "REPO:TAG")]
    pub bundle: Option<String>,
    /// Push a plain image to REPO:TAG.
    #[arg(short = 'i', long = "image", value_name = "REPO:TAG")]
    pub image: Option<String>,
    /// Directory or file to include; repeatable.
    #[arg(short = 'f', long = "file", value_name = "PATH", required = true)]
    pub files: Vec<PathBuf>,
    /// Write a BundleLock (bundle digest reference and tag) to FILE.
    #[arg(long = "lock-output", value_name = "FILE", conflicts_with = "image")]
    pub lock_output: Option<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

pub async fn run(args: PushArgs) -> anyhow::Result<()> {
    let (text, flag, kind) = match (&args.bundle, &args.image) {
        (Some(b), _) => (b, "-b", PushKind::Bundle),
        (_, Some(i)) => (i, "-i", PushKind::Image),
        _ => anyhow::bail!("one of -b or -i is required"),
    };
    let target = parse_ref(text, flag)?;
    let registries = args.registry.registries()?;
    let pushed = publish::push(&registries, &target, &args.files, kind).await?;
    println!("Pushed '{}'", pushed.digest_ref);
    if let Some(path) = &args.lock_output {
        let lock = BundleLock::new(pushed.digest_ref.to_string(), pushed.tag.clone());
        airlift::fsutil::write_atomic(path, lock.to_yaml().as_bytes(), airlift::fsutil::PUBLIC)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!();
    println!("Succeeded");
    Ok(())
}
