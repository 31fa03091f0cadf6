//! `airlift verify-receipt`: check an import receipt's signature and shape.

use std::path::PathBuf;

use airlift::transfer::receipt::verify_receipt;
use clap::Args;

use super::trust::TrustArgs;

/// Check an import receipt (written by `airlift import --receipt`) against trusted keys.
///
/// The detached signature FILE.sig (raw 64-byte Ed25519 over the exact receipt bytes) must
/// verify against one of the --trust keys; then the receipt must parse as
/// format-spec/receipt.schema.json. An unsigned receipt (no FILE.sig) is refused unless
/// --allow-unsigned. The same check by hand:
/// `openssl pkeyutl -verify -pubin -inkey import.pub -rawin -in FILE -sigfile FILE.sig`.
/// Exit 0 when the receipt verifies, 1 when it does not, 2 on usage errors.
///
/// Example: airlift verify-receipt import-2026-01-02.json --trust import-side.pub
#[derive(Args, Debug)]
pub struct VerifyReceiptArgs {
    /// The receipt (JSON); its signature is read from FILE.sig.
    #[arg(value_name = "FILE")]
    pub receipt: PathBuf,
    #[command(flatten)]
    pub trust: TrustArgs,
}

/// Runs the check; `Ok(false)` when the receipt does not verify.
pub fn run(args: VerifyReceiptArgs) -> anyhow::Result<bool> {
    let keys = args.trust.keys()?;
    match verify_receipt(&args.receipt, &keys, args.trust.allow_unsigned) {
        Ok(c) => {
            let r = &c.receipt;
            println!("receipt:   {} ({})", args.receipt.display(), c.digest);
            match &c.signer {
                Some(fp) => println!("signed by: {fp} (valid)"),
                None => println!("signed by: nobody (unsigned, allowed by --allow-unsigned)"),
            }
            println!(
                "archive:   {} (created {})",
                r.archive.manifest_digest, r.archive.created
            );
            println!("imported:  {} to {}", r.created, r.destination);
            for p in &r.roots {
                println!("  {} -> {}", p.source, p.destination);
            }
            println!("blobs:     {}", r.blobs.len());
            println!("OK: the receipt verifies");
            Ok(true)
        }
        Err(e) => {
            eprintln!("airlift: {e}");
            println!("FAILED: the receipt does not verify");
            Ok(false)
        }
    }
}
