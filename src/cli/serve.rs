//! `airlift serve`: a read-only registry straight from verified archives.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use airlift::archive::verify::{VerifyOptions, verify};
use airlift::serve::auth::Htpasswd;
use airlift::serve::catalog::{Catalog, CatalogOptions};
use airlift::serve::http::{Server, Stats};
use airlift::serve::listener::{ListenOptions, bind, serve};
use airlift::store::archive::Trust;
use anyhow::Context;
use clap::Args;

use super::referrers::CosignArgs;
use super::trust::TrustArgs;

/// Serve archives as a read-only OCI registry, in place: no import, no copy, no temp files.
///
/// For sites with no registry yet (the cluster that will run one must pull its own images
/// first) and small edge sites: plug in the stick and point the cluster at it. Signatures
/// are checked first, under the same rules as `import`, and the archive must pass the same
/// checks; then blobs are read from the tar by byte offset. Every blob is checked against its
/// digest the first time it is served whole (a range is served only from a blob already
/// checked); a blob that fails is never completed to a client and refused from then on.
///
/// Names: each root and locked image is served under its source repository path
/// (`library/redis` for `docker.io/library/redis`) and also under `<host>/<path>` when the host
/// is a valid name component (`docker.io`, `quay.io`; not `host:port`). Content by digest is
/// served under every name (the archive is one signed unit), so `imgpkg pull -b
/// HOST/<bundle repo>:TAG` finds every locked image. Mirror requests (`?ns=docker.io`, as
/// containerd and CRI-O send) are understood. If two hosts share a path, serving is refused
/// unless --prefix-hosts serves only host-qualified names.
///
/// Several archives (or volumes of a set) share one namespace; two that give the same tag
/// different content are refused. A zstd archive is refused: decompress it once with
/// `zstd -d` (its signature covers the uncompressed archive).
///
/// Cosign tags (`sha256-<hex>.sig`, `.att`, `.sbom`) carried in the archive are served next
/// to every name; `--cosign-key` applies import's offline signature policy before listening.
///
/// Stops on SIGINT or SIGTERM after in-flight responses finish, printing a summary.
///
/// Example: airlift serve /media/usb/app-1.0.tar --trust release.pub --listen 0.0.0.0:5000 --tls-cert tls.crt --tls-key tls.key
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Archives (plain `.tar`), or volumes of a set.
    #[arg(value_name = "ARCHIVE", required = true, num_args = 1..)]
    pub archive: Vec<PathBuf>,
    /// Address to listen on (loopback unless you say otherwise).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:5000")]
    pub listen: SocketAddr,
    /// PEM certificate chain for HTTPS.
    #[arg(long = "tls-cert", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS.
    #[arg(long = "tls-key", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require basic auth against this htpasswd file (bcrypt entries: `htpasswd -B`).
    #[arg(long, value_name = "FILE")]
    pub htpasswd: Option<PathBuf>,
    /// Run the whole `airlift verify` pass (every blob hashed) before listening.
    #[arg(long = "verify-first")]
    pub verify_first: bool,
    /// Serve only `<host>/<path>` names (needed when two hosts share a repository path).
    #[arg(long = "prefix-hosts")]
    pub prefix_hosts: bool,
    /// Connections served at once (more wait their turn).
    #[arg(long = "max-connections", value_name = "N", default_value_t = 128,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=65536))]
    pub max_connections: usize,
    /// Serve an archive whose signed `expires` time has passed (with a warning).
    #[arg(long = "allow-expired")]
    pub allow_expired: bool,
    /// Do not print a line per request (the startup and summary lines stay).
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub trust: TrustArgs,
    #[command(flatten)]
    pub cosign: CosignArgs,
}

/// Runs `airlift serve` until SIGINT or SIGTERM.
pub async fn run(args: ServeArgs) -> anyhow::Result<bool> {
    let started = Instant::now();
    let trust = Trust {
        keys: args.trust.keys()?,
        required: args.trust.require_signatures,
        allow_unsigned: args.trust.allow_unsigned,
    };
    let auth = match &args.htpasswd {
        Some(p) => Some(Htpasswd::load(p)?),
        None => None,
    };
    if args.verify_first {
        let opts = VerifyOptions {
            trusted: trust.keys.clone(),
            required: trust.required,
            allow_unsigned: trust.allow_unsigned,
        };
        for p in &args.archive {
            let path = p.clone();
            let o = opts.clone();
            let report = tokio::task::spawn_blocking(move || verify(&path, &o))
                .await
                .context("verify pass")?;
            if !report.ok {
                let first = report
                    .failures
                    .first()
                    .map(|f| f.message.clone())
                    .unwrap_or_default();
                anyhow::bail!(
                    "--verify-first: {} failed verification ({} failure(s); first: {first}): \
                     run `airlift verify {}` for the full report",
                    p.display(),
                    report.failures.len(),
                    p.display()
                );
            }
            eprintln!("airlift serve: {} verified", p.display());
        }
    }
    let catalog = Catalog::open(
        &args.archive,
        &trust,
        &CatalogOptions {
            prefix_hosts: args.prefix_hosts,
        },
    )
    .await?;
    for a in &catalog.archives {
        super::verify::check_expiry(&a.header.manifest, args.allow_expired)
            .with_context(|| a.path.display().to_string())?;
        // The same offline cosign policy as import: nothing is served unless it holds.
        args.cosign
            .enforce(&a.graph, a.as_ref())
            .await
            .with_context(|| format!("{}: not serving it", a.path.display()))?;
    }
    let (repos, manifests, blobs, bytes) = catalog.counts();
    let opts = ListenOptions {
        addr: args.listen,
        tls: args.tls_cert.clone().zip(args.tls_key.clone()),
        max_connections: args.max_connections,
        header_timeout: Duration::from_secs(10),
        stall_timeout: Duration::from_secs(60),
        shutdown_grace: Duration::from_secs(30),
    };
    let bound = bind(&opts).await?;
    let signers = catalog
        .archives
        .iter()
        .flat_map(|a| a.signers.iter().cloned())
        .collect::<std::collections::BTreeSet<_>>();
    eprintln!(
        "airlift serve: listening on {}://{} ({repos} repositories, {manifests} manifests, \
         {blobs} blobs, {bytes} bytes; signed by {}; ready in {} ms)",
        bound.scheme(),
        bound.local,
        if signers.is_empty() {
            "nobody trusted (--allow-unsigned)".to_string()
        } else {
            signers.into_iter().collect::<Vec<_>>().join(", ")
        },
        started.elapsed().as_millis()
    );
    let server = Arc::new(Server {
        catalog: Arc::new(catalog),
        auth,
        stats: Stats::default(),
        log_requests: !args.quiet,
    });
    let serving = Instant::now();
    serve(bound, Arc::clone(&server), &opts, shutdown_signal()).await;
    let s = &server.stats;
    eprintln!(
        "airlift serve: stopped after {} s: {} requests, {} bytes sent, {} errors, {} incomplete \
         responses, {} blobs failed their digest",
        serving.elapsed().as_secs(),
        s.requests.load(Ordering::Relaxed),
        s.bytes.load(Ordering::Relaxed),
        s.errors.load(Ordering::Relaxed),
        s.aborted.load(Ordering::Relaxed),
        s.bad_blobs.load(Ordering::Relaxed),
    );
    Ok(true)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    eprintln!("airlift serve: shutting down: finishing responses in flight");
}
