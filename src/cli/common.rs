//! Options shared by every command that talks to registries or moves content.

use std::path::PathBuf;

use airlift::reference::Reference;
use airlift::registry::auth::{AuthOptions, Env};
use airlift::registry::{Registries, RegistryOptions, RetryPolicy};
use airlift::transfer::progress::ProgressMode;
use anyhow::Context;
use clap::{ArgAction, Args};

/// `--registry-*` options (names as imgpkg's, so muscle memory works).
#[derive(Args, Debug, Clone)]
pub struct RegistryArgs {
    /// Trust this CA certificate (PEM) in addition to the system roots; repeatable.
    #[arg(long = "registry-ca-cert-path", value_name = "FILE")]
    pub ca_cert_path: Vec<PathBuf>,
    /// Verify registry TLS certificates (set to false only for testing).
    #[arg(long = "registry-verify-certs", value_name = "BOOL", default_value_t = true, action = ArgAction::Set)]
    pub verify_certs: bool,
    /// Allow plain HTTP to registries (loopback hosts may always fall back to HTTP, as with docker).
    #[arg(long = "registry-insecure")]
    pub insecure: bool,
    /// Username for every registry contacted (env AIRLIFT_REGISTRY_* groups take precedence per host).
    #[arg(long = "registry-username", value_name = "USER")]
    pub username: Option<String>,
    /// Password for --registry-username (prefer AIRLIFT_REGISTRY_PASSWORD: flags show in `ps`).
    #[arg(long = "registry-password", value_name = "PASSWORD")]
    pub password: Option<String>,
    /// Bearer token for every registry contacted.
    #[arg(long = "registry-token", value_name = "TOKEN")]
    pub token: Option<String>,
    /// Use no credentials at all.
    #[arg(long = "registry-anon")]
    pub anon: bool,
    /// Retries after connection errors, 5xx and 429 (exponential backoff).
    #[arg(long = "registry-retry-count", value_name = "N", default_value_t = 5)]
    pub retry_count: u32,
    /// Give up on a request after SECONDS without a byte from the registry (then retry);
    /// connecting waits at most 10 s.
    #[arg(long = "registry-timeout", value_name = "SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout_secs: u64,
}

impl RegistryArgs {
    /// The registry pool these options describe.
    pub fn registries(&self) -> anyhow::Result<Registries> {
        let opts = RegistryOptions {
            ca_cert_paths: self.ca_cert_path.clone(),
            verify_certs: self.verify_certs,
            insecure: self.insecure,
            retry: RetryPolicy {
                retries: self.retry_count,
                ..RetryPolicy::default()
            },
            timeout: std::time::Duration::from_secs(self.timeout_secs),
            auth: AuthOptions {
                username: self.username.clone(),
                password: self.password.clone(),
                token: self.token.clone(),
                anonymous: self.anon,
            },
            env: Env::from_process(),
        };
        Ok(Registries::new(opts)?)
    }
}

/// Concurrency and progress options of long-running commands.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Requests in flight at once.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// No progress output (errors and the final summary still print).
    #[arg(long, short)]
    pub quiet: bool,
}

impl RunArgs {
    /// Bar, lines or nothing.
    pub fn progress_mode(&self) -> ProgressMode {
        ProgressMode::detect(self.quiet)
    }
}

/// Parses a reference given on the command line, naming the flag in errors.
pub fn parse_ref(text: &str, flag: &str) -> anyhow::Result<Reference> {
    Reference::parse(text).with_context(|| format!("{flag} {text}"))
}

/// Tells a `--to-registry` user which bundle repositories imgpkg can pull from as relocated.
pub fn print_hosted(placement: &airlift::transfer::place::Placement) {
    for (repo, digests) in &placement.hosted {
        eprintln!(
            "{repo} also hosts the {} manifest(s) its bundle lock reaches (cross-repository \
             mounts, no bytes sent again) and imgpkg's locations image: `imgpkg pull -b \
             {repo}:TAG` rewrites the lock to {repo}",
            digests.len().saturating_sub(1)
        );
    }
}
