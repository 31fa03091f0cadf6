//! `airlift verify`: check an archive offline, without any registry.

use std::path::PathBuf;

use airlift::archive::verify::{Report, VerifyOptions, verify};
use clap::Args;

use super::trust::TrustArgs;

/// Check an archive completely, offline: signatures, every blob's size and sha256, and the graph.
///
/// Checks, in order: the format version; the signatures against the --trust keys (at least
/// --require-signatures distinct signers); that every entry is a regular file with an allowed
/// name, listed in the signed manifest, not duplicated; that every listed blob is present with
/// the right size and sha256; that index.json and every manifest parse and reference only
/// listed blobs. Exit 0 when everything holds, 1 when anything fails (each failure is named),
/// 2 on usage errors. --json prints the report (schema: format-spec/verify-report.schema.json).
///
/// Example: airlift verify app-1.0.tar --trust release.pub
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The archive (`.tar` or `.tar.zst`).
    #[arg(value_name = "ARCHIVE")]
    pub archive: PathBuf,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs the check; `Ok(false)` means the archive failed verification.
pub fn run(args: VerifyArgs) -> anyhow::Result<bool> {
    let opts = VerifyOptions {
        trusted: args.trust.keys()?,
        required: args.trust.require_signatures,
        allow_unsigned: args.trust.allow_unsigned,
    };
    let report = verify(&args.archive, &opts);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_human(&report);
    }
    Ok(report.ok)
}

fn print_human(r: &Report) {
    println!("archive:    {}", r.archive);
    if let Some(d) = &r.manifest_digest {
        println!("manifest:   {d}");
    }
    if let Some(c) = &r.created {
        println!("created:    {c}");
    }
    for s in &r.signatures {
        println!("signature:  {} ({:?})", s.fingerprint, s.status);
    }
    println!(
        "signatures: {} valid trusted, {} required{}",
        r.valid_signatures,
        r.required_signatures,
        if r.allow_unsigned {
            " (unsigned allowed)"
        } else {
            ""
        }
    );
    println!(
        "blobs:      {} checked, {} bytes hashed",
        r.blobs_checked, r.bytes_checked
    );
    for c in &r.checks {
        println!(
            "  [{}] {:<16} {}",
            if c.ok { " ok " } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    for w in &r.warnings {
        println!("warning: {w}");
    }
    for f in &r.failures {
        let mut line = format!("FAILED {:?}: {}", f.kind, f.message);
        if let Some(e) = &f.entry {
            line.push_str(&format!(" [entry {e}]"));
        }
        if let (Some(e), Some(fo)) = (&f.expected, &f.found) {
            line.push_str(&format!(" [expected {e}, found {fo}]"));
        }
        println!("{line}");
    }
    if r.failures_dropped > 0 {
        println!("... and {} more failures", r.failures_dropped);
    }
    println!(
        "{}",
        if r.ok {
            "OK: the archive verifies"
        } else {
            "FAILED: the archive does not verify"
        }
    );
}
