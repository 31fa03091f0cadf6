//! `airlift lock`: pin every image reference in Kubernetes YAML to a digest (kbld's lock).

use std::path::PathBuf;

use airlift::author::publish;
use airlift::yaml::Limits;
use anyhow::Context;
use clap::Args;

use super::common::{RegistryArgs, RunArgs};

/// Resolve the image references in YAML to digests and write an imgpkg ImagesLock.
///
/// Reads YAML/JSON files and directories (recursively: .yaml, .yml, .json; every document),
/// finds each string under a key named `image` at any depth (plus --image-key keys), asks
/// the registry for the digest each tag points to now (an index stays an index), and writes
/// the lock byte-for-byte as `kbld --imgpkg-lock-output` does, ready to be
/// `.imgpkg/images.yml` of a bundle. Digest references are kept as they are. The lock goes to
/// stdout unless --lock-output is given; progress goes to stderr.
///
/// Example: `airlift lock -f config/ --lock-output bundle/.imgpkg/images.yml`
#[derive(Args, Debug)]
pub struct LockArgs {
    /// YAML/JSON file or directory to scan; repeatable.
    #[arg(short = 'f', long = "file", value_name = "PATH", required = true)]
    pub files: Vec<PathBuf>,
    /// Write the ImagesLock to FILE instead of stdout.
    #[arg(long = "lock-output", value_name = "FILE")]
    pub lock_output: Option<PathBuf>,
    /// Also treat string values under this key as image references; repeatable.
    #[arg(long = "image-key", value_name = "KEY")]
    pub image_keys: Vec<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

pub async fn run(args: LockArgs) -> anyhow::Result<()> {
    let registries = args.registry.registries()?;
    let quiet = args.run.quiet;
    let lock = publish::lock_paths(
        &registries,
        &args.files,
        &args.image_keys,
        &Limits::default(),
        usize::from(args.run.concurrency),
        |text, to| {
            if !quiet {
                eprintln!("resolve | {text} -> {to}");
            }
        },
    )
    .await?;
    let text = lock.to_yaml();
    match &args.lock_output {
        Some(path) => {
            airlift::fsutil::write_atomic(path, text.as_bytes(), airlift::fsutil::PUBLIC)
                .with_context(|| format!("writing {}", path.display()))?;
            if !quiet {
                eprintln!(
                    "Wrote {} with {} image(s)",
                    path.display(),
                    lock.images.len()
                );
            }
        }
        None => print!("{text}"),
    }
    Ok(())
}
