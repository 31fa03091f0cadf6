//! Subcommands, one file each; this file parses the command line and maps errors to exit codes.

mod common;
mod copy;
mod export;
mod foreign;
mod import;
mod inspect;
mod keygen;
mod lock;
mod lock_output;
mod pull;
mod push;
mod referrers;
mod rewrite;
mod serve;
mod trust;
mod verify;
mod verify_receipt;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// airlift carries container images and their Kubernetes configuration across an air gap.
///
/// Connected side: `lock` pins image references, `push`/`pull` handle imgpkg bundles,
/// `export` writes a signed archive. Air-gapped side: `verify` checks it offline,
/// `import` pushes it to the internal registry (`--receipt` records what went where),
/// `inspect` shows what an archive holds, `verify-receipt` checks an import receipt, `serve`
/// serves archives as a read-only registry in place. `copy` relocates directly when one
/// host sees both registries.
#[derive(Parser)]
#[command(name = "airlift", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Lock(lock::LockArgs),
    Rewrite(rewrite::RewriteArgs),
    Push(push::PushArgs),
    Pull(pull::PullArgs),
    Keygen(keygen::KeygenArgs),
    Export(export::ExportArgs),
    Verify(verify::VerifyArgs),
    Import(import::ImportArgs),
    Copy(copy::CopyArgs),
    Inspect(inspect::InspectArgs),
    VerifyReceipt(verify_receipt::VerifyReceiptArgs),
    Serve(serve::ServeArgs),
}

/// Exit code for a failed check or operation (usage errors exit 2, from clap).
const EXIT_FAILURE: u8 = 1;

/// Parses the command line, runs the subcommand, and maps errors to exit codes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("airlift: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    // Ok(false): the command ran and found the input bad (verification failed).
    let result: anyhow::Result<bool> = runtime.block_on(async move {
        match cli.command {
            Command::Lock(a) => lock::run(a).await.map(|()| true),
            Command::Rewrite(a) => rewrite::run(a).await.map(|()| true),
            Command::Push(a) => push::run(a).await.map(|()| true),
            Command::Pull(a) => pull::run(a).await.map(|()| true),
            Command::Keygen(a) => keygen::run(a).map(|()| true),
            Command::Export(a) => export::run(a).await.map(|()| true),
            Command::Verify(a) => verify::run(a).await,
            Command::Import(a) => import::run(a).await,
            Command::Copy(a) => copy::run(a).await.map(|()| true),
            Command::Inspect(a) => inspect::run(a).await,
            Command::VerifyReceipt(a) => verify_receipt::run(a),
            Command::Serve(a) => serve::run(a).await,
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_FAILURE),
        Err(e) => {
            eprintln!("airlift: error: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
