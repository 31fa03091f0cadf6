//! `--no-referrers`/`--referrers-type` (export, copy) and `--cosign-key` (verify, import, copy).

use std::path::PathBuf;

use airlift::cosign::{CosignKey, Policy, Require};
use airlift::graph::Graph;
use airlift::registry::Registries;
use airlift::store::Source;
use airlift::transfer::referrers::{DiscoverOptions, discover};
use anyhow::Context;
use clap::{Args, ValueEnum};

/// Which artifacts about the images come along.
#[derive(Args, Debug, Clone)]
pub struct ReferrerArgs {
    /// Leave signatures, attestations, SBOMs and other referrers behind. By default they are
    /// found (cosign `sha256-<hex>.sig/.att/.sbom` tags, OCI 1.1 referrers through the
    /// referrers API or the `sha256-<hex>` tag schema) and carried with their images.
    #[arg(long = "no-referrers")]
    pub no_referrers: bool,
    /// Keep only referrers of this kind (signature, attestation, sbom, artifact) or OCI
    /// artifact type (e.g. application/spdx+json); repeatable.
    #[arg(
        long = "referrers-type",
        value_name = "TYPE",
        conflicts_with = "no_referrers"
    )]
    pub referrers_type: Vec<String>,
}

impl ReferrerArgs {
    /// Adds the referrers of every manifest of `graph` unless `--no-referrers`.
    pub async fn discover(
        &self,
        registries: &Registries,
        graph: &mut Graph,
        concurrency: usize,
    ) -> anyhow::Result<()> {
        if self.no_referrers {
            return Ok(());
        }
        let opts = DiscoverOptions {
            types: self.referrers_type.clone(),
            concurrency,
        };
        let found = discover(registries, graph, &opts).await.context(
            "looking for signatures, attestations and other referrers (--no-referrers skips them)",
        )?;
        for s in &found.skipped {
            eprintln!("warning: referrer not carried: {s}");
        }
        if found.added > 0 || found.filtered > 0 {
            eprintln!(
                "referrers: {} carried, {} left out by --referrers-type",
                found.added, found.filtered
            );
        }
        Ok(())
    }
}

/// `--require-cosign`: which images must carry a signature.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RequireCosign {
    /// Every root and every image a bundle locks.
    All,
    /// Only the images and bundles named (roots).
    Roots,
}

/// The offline cosign signature policy.
#[derive(Args, Debug, Clone)]
pub struct CosignArgs {
    /// Require a valid cosign signature by this ECDSA P-256 public key (cosign.pub) on every
    /// image; repeatable (any one key suffices). Checked offline before anything is pushed;
    /// both cosign's `sha256-<hex>.sig` tag form and cosign v3's sigstore-bundle referrers.
    #[arg(long = "cosign-key", value_name = "KEY.pub")]
    pub cosign_key: Vec<PathBuf>,
    /// Which images must be signed: all (roots and locked images) or roots.
    #[arg(long = "require-cosign", value_name = "SCOPE", value_enum, default_value_t = RequireCosign::All, requires = "cosign_key")]
    pub require_cosign: RequireCosign,
    /// Keyless (Fulcio/Rekor) verification against a sigstore trusted root: not supported
    /// offline by this build; refused with a message.
    #[arg(long = "trusted-root", value_name = "trusted_root.json")]
    pub trusted_root: Option<PathBuf>,
}

impl CosignArgs {
    /// The policy asked for, if any.
    pub fn policy(&self) -> anyhow::Result<Option<Policy>> {
        if let Some(p) = &self.trusted_root {
            anyhow::bail!(
                "--trusted-root {}: keyless cosign verification (Fulcio certificates, Rekor \
                 proofs) is not supported offline by this build of airlift; sign with a key \
                 (`cosign sign --key`) and pass --cosign-key KEY.pub",
                p.display()
            );
        }
        if self.cosign_key.is_empty() {
            return Ok(None);
        }
        let keys = self
            .cosign_key
            .iter()
            .map(|p| CosignKey::load(p).with_context(|| format!("--cosign-key {}", p.display())))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Some(Policy {
            keys,
            require: match self.require_cosign {
                RequireCosign::All => Require::All,
                RequireCosign::Roots => Require::Roots,
            },
        }))
    }

    /// Applies the policy (if any) to `graph`, reading signatures from `source`; prints what
    /// verified. An error means nothing may be pushed.
    pub async fn enforce<S: Source>(&self, graph: &Graph, source: &S) -> anyhow::Result<()> {
        let Some(policy) = self.policy()? else {
            return Ok(());
        };
        let verified = airlift::cosign::check(graph, &policy, source).await?;
        for v in &verified {
            eprintln!(
                "cosign: {} ({}) signed by key {} (signature {})",
                v.image, v.digest, v.key, v.signature
            );
        }
        Ok(())
    }
}
