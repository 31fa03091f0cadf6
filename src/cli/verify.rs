//! `airlift verify`: check an archive offline, without any registry.

use std::path::PathBuf;

use airlift::archive::verify::{Report, VerifyOptions, verify, verify_set};
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
    /// The archive (`.tar` or `.tar.zst`); or one volume of a set (checked alone, with the
    /// volumes still needed listed); or several volumes (`NAME.*.tar`), checked as a set.
    #[arg(value_name = "ARCHIVE", required = true, num_args = 1..)]
    pub archive: Vec<PathBuf>,
    #[command(flatten)]
    pub trust: TrustArgs,
    #[command(flatten)]
    pub cosign: super::referrers::CosignArgs,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Accept an archive whose signed `expires` time has passed (with a warning).
    #[arg(long = "allow-expired")]
    pub allow_expired: bool,
    /// Fail if the archive is older than this: an earlier archive (or one of its volumes),
    /// its `airlift/manifest.json`, an import receipt, or a date (RFC 3339 or YYYY-MM-DD).
    /// Compared by `sequence` when both carry one, else by `created`.
    #[arg(long = "not-older-than", value_name = "ARCHIVE|MANIFEST|RECEIPT|DATE")]
    pub not_older_than: Option<String>,
}

/// A release to compare against: its `sequence` (if known), `created`, and a name for messages.
struct Point {
    sequence: Option<u64>,
    created: String,
    what: String,
}

/// Reads `--not-older-than`: a file airlift wrote, or a date.
fn reference_point(text: &str) -> anyhow::Result<Point> {
    let path = std::path::Path::new(text);
    if path.exists() {
        let base = airlift::transfer::delta::Base::read(path, "--not-older-than")?;
        return Ok(Point {
            sequence: base.sequence,
            created: base.reference.created,
            what: text.to_owned(),
        });
    }
    let created = if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        t.with_timezone(&chrono::Utc)
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    } else if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        format!("{d}T00:00:00Z")
    } else {
        anyhow::bail!(
            "--not-older-than {text}: no such file, and not a date (RFC 3339 or YYYY-MM-DD)"
        );
    };
    Ok(Point {
        sequence: None,
        what: format!("date {created}"),
        created,
    })
}

/// The `--not-older-than` check for the first archive given (all volumes share a manifest).
fn freshness_ok(args: &VerifyArgs) -> anyhow::Result<bool> {
    let (Some(text), Some(first)) = (&args.not_older_than, args.archive.first()) else {
        return Ok(true);
    };
    let point = reference_point(text)?;
    let Ok(reader) = airlift::archive::reader::ArchiveReader::open(first) else {
        return Ok(true);
    };
    let m = &reader.header().manifest;
    let older = airlift::archive::manifest::is_older(
        (m.sequence, &m.created),
        (point.sequence, &point.created),
    );
    if older {
        let seq = |s: Option<u64>| s.map(|s| format!(", sequence {s}")).unwrap_or_default();
        // On stderr with --json, so that stdout stays one JSON document.
        let line = format!(
            "FAILED: {} (created {}{}) is older than {} (created {}{})",
            first.display(),
            m.created,
            seq(m.sequence),
            point.what,
            point.created,
            seq(point.sequence)
        );
        if args.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
    Ok(!older)
}

/// Refuses an expired manifest unless `allow`, then only warns: expiry is the publisher's
/// word that an old archive replayed later must not be taken as current.
pub fn check_expiry(m: &airlift::archive::Manifest, allow: bool) -> anyhow::Result<()> {
    match m.check_expiry(chrono::Utc::now()) {
        Ok(()) => Ok(()),
        Err(e @ airlift::archive::ArchiveError::Expired { .. }) if allow => {
            eprintln!("warning: {e} (accepted: --allow-expired)");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// The expiry check for the first archive given (all volumes carry the same manifest).
fn expiry_ok(args: &VerifyArgs) -> bool {
    let Some(first) = args.archive.first() else {
        return true;
    };
    // An archive that cannot be opened fails verification anyway, with its own message.
    let Ok(reader) = airlift::archive::reader::ArchiveReader::open(first) else {
        return true;
    };
    match check_expiry(&reader.header().manifest, args.allow_expired) {
        Ok(()) => true,
        Err(e) => {
            println!("FAILED: {e:#}");
            false
        }
    }
}

/// Runs the check; `Ok(false)` means the archive failed verification.
pub async fn run(args: VerifyArgs) -> anyhow::Result<bool> {
    let opts = VerifyOptions {
        trusted: args.trust.keys()?,
        required: args.trust.require_signatures,
        allow_unsigned: args.trust.allow_unsigned,
    };
    // A bad key or --trusted-root is a usage error before any work.
    args.cosign.policy()?;
    if let [one] = &args.archive[..] {
        // Another tool's archive: every digest, and no signature exists to check.
        match super::foreign::open(one) {
            Ok(Some(store)) => {
                return super::foreign::verify(&store, opts.allow_unsigned, args.json);
            }
            Ok(None) => {}
            Err(e) => {
                println!("FAILED: {e:#}");
                return Ok(false);
            }
        }
        let report = verify(one, &opts);
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print_human(&report);
        }
        let cosign_ok = report.ok && cosign_ok(&args, &opts).await;
        return Ok(report.ok & cosign_ok & expiry_ok(&args) & freshness_ok(&args)?);
    }
    let paths: Vec<&std::path::Path> = args.archive.iter().map(PathBuf::as_path).collect();
    let set = verify_set(&paths, &opts);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&set)?);
        return Ok(set.ok & expiry_ok(&args) & freshness_ok(&args)?);
    }
    for r in &set.reports {
        print_human(r);
        println!();
    }
    for p in &set.problems {
        println!("FAILED set: {p}");
    }
    if !set.volumes_missing.is_empty() {
        println!(
            "FAILED set: volume(s) missing: {}",
            join(&set.volumes_missing)
        );
    }
    println!(
        "{}",
        if set.ok {
            "OK: the volumes make the whole archive and every one verifies"
        } else {
            "FAILED: the volumes do not make a whole, verified archive"
        }
    );
    let cosign_ok = set.ok && cosign_ok(&args, &opts).await;
    Ok(set.ok & cosign_ok & expiry_ok(&args) & freshness_ok(&args)?)
}

/// The cosign policy (`--cosign-key`) on an archive that verified; false (with the reason
/// printed) when it is not met.
async fn cosign_ok(args: &VerifyArgs, opts: &VerifyOptions) -> bool {
    if args.cosign.cosign_key.is_empty() {
        return true;
    }
    let trust = airlift::transfer::import::Trust {
        keys: opts.trusted.clone(),
        required: opts.required,
        allow_unsigned: opts.allow_unsigned,
    };
    let checked = async {
        let opened = airlift::transfer::import::open_archives(&args.archive, &trust).await?;
        if !opened.random_access() {
            anyhow::bail!(
                "--cosign-key cannot read signatures out of order from a .tar.zst archive: \
                 decompress it first (zstd -d)"
            );
        }
        args.cosign.enforce(&opened.graph, &opened).await
    };
    match checked.await {
        // With --json, stdout is the report alone.
        Ok(()) if args.json => true,
        Ok(()) => {
            println!("OK: cosign policy met");
            true
        }
        Err(e) if args.json => {
            eprintln!("FAILED cosign: {e:#}");
            false
        }
        Err(e) => {
            println!("FAILED cosign: {e:#}");
            false
        }
    }
}

fn join(v: &[u32]) -> String {
    v.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
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
    if let (Some(v), Some(c)) = (r.volume, r.volume_count) {
        println!("volume:     {v} of {c}");
        if !r.volumes_needed.is_empty() {
            println!(
                "needed:     volume(s) {} for the whole archive",
                join(&r.volumes_needed)
            );
        }
    }
    if let Some(b) = &r.base {
        println!(
            "base:       delta over {} (manifest {}), relies on {} blob(s) there",
            b.file,
            b.manifest_digest,
            r.base_blobs.unwrap_or(0)
        );
    }
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
