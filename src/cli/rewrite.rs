//! `airlift rewrite`: pin image references in YAML from a lock, offline (kbld with a lock).

use std::path::PathBuf;

use airlift::author::lock::ImagesLock;
use airlift::author::rewrite::{RewriteOptions, rewrite_paths};
use airlift::yaml::Limits;
use clap::Args;

/// Print YAML with every image reference replaced by its digest from an ImagesLock.
///
/// The offline half of kbld: no registry is contacted. Locks come from --lock files and from
/// any input document of kind ImagesLock (so `-f config -f .imgpkg/images.yml` works as with
/// kbld). Each changed resource gets kbld's `kbld.k14s.io/images` annotation and documents
/// are printed with sorted keys, byte-compatible with kbld. A reference missing from the lock
/// is an error (all of them are listed) unless --allow-unlocked leaves them unchanged.
///
/// Example: `airlift rewrite -f bundle/config -f bundle/.imgpkg/images.yml | kubectl apply -f -`
#[derive(Args, Debug)]
pub struct RewriteArgs {
    /// YAML/JSON file or directory (ImagesLock documents among them are used as locks); repeatable.
    #[arg(short = 'f', long = "file", value_name = "PATH", required = true)]
    pub files: Vec<PathBuf>,
    /// An ImagesLock file to take digests from; repeatable.
    #[arg(long = "lock", value_name = "FILE")]
    pub locks: Vec<PathBuf>,
    /// Leave references that are not in any lock unchanged instead of failing.
    #[arg(long = "allow-unlocked")]
    pub allow_unlocked: bool,
    /// Also treat string values under this key as image references; repeatable.
    #[arg(long = "image-key", value_name = "KEY")]
    pub image_keys: Vec<String>,
}

pub async fn run(args: RewriteArgs) -> anyhow::Result<()> {
    let limits = Limits::default();
    let mut locks = Vec::new();
    for path in &args.locks {
        locks.push(ImagesLock::read(path, &limits)?);
    }
    let opts = RewriteOptions {
        extra_keys: args.image_keys,
        allow_unlocked: args.allow_unlocked,
        limits,
    };
    let out = rewrite_paths(&args.files, &locks, &opts)?;
    print!("{out}");
    Ok(())
}
