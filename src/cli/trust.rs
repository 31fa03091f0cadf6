//! `--trust`/`--require-signatures`/`--allow-unsigned`, shared by verify and import.

use std::path::PathBuf;

use airlift::keys::VerifyingKey;
use anyhow::Context;
use clap::Args;

/// Which signers an archive must carry.
#[derive(Args, Debug, Clone)]
#[command(group = clap::ArgGroup::new("trust_source").required(true).args(["trust", "allow_unsigned"]))]
pub struct TrustArgs {
    /// Trust signatures by this ed25519 public key (PEM, from `airlift keygen` or openssl); repeatable.
    #[arg(long, value_name = "PUB")]
    pub trust: Vec<PathBuf>,
    /// How many distinct trusted keys must have signed.
    #[arg(
        long = "require-signatures",
        value_name = "N",
        default_value_t = 1,
        requires = "trust",
        conflicts_with = "allow_unsigned",
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    pub require_signatures: usize,
    /// Accept an archive without trusted signatures (content digests are still checked).
    #[arg(long = "allow-unsigned")]
    pub allow_unsigned: bool,
}

impl TrustArgs {
    /// Loads the public keys, naming the file at fault.
    pub fn keys(&self) -> anyhow::Result<Vec<VerifyingKey>> {
        self.trust
            .iter()
            .map(|p| {
                airlift::keys::load_public_key(p)
                    .with_context(|| format!("--trust {}", p.display()))
            })
            .collect()
    }
}
