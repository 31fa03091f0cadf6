//! `airlift inspect`: what archives hold, without a registry and without reading layer data.

use std::path::PathBuf;

use airlift::archive::inspect::{INSPECT_SCHEMA, Inspection, SignatureStatus, inspect};
use anyhow::Context;
use clap::Args;

/// Show what archives hold: signers, roots, images, bundles and sizes; no registry needed.
///
/// Reads only the leading entries and the manifest/index blobs (they come first in the
/// archive), never layer data, so it is fast even on large archives. It does NOT check blob
/// contents: use `airlift verify` for that. With --trust, each signature is shown as valid,
/// invalid or untrusted; without it, signatures are listed unchecked.
///
/// --json prints one JSON array with one element per ARCHIVE, in argument order (schema:
/// format-spec/inspect.schema.json); an archive that cannot be read becomes
/// {"schema","archive","error"}. Exit 0 when every archive was read (and, with --trust, has at
/// least one valid trusted signature and no invalid one), 1 otherwise, 2 on usage errors.
///
/// Example: airlift inspect app-1.0.tar --trust release.pub
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Archives to inspect (`.tar` or `.tar.zst`).
    #[arg(value_name = "ARCHIVE", required = true)]
    pub archives: Vec<PathBuf>,
    /// Print a JSON array (one report per archive) on stdout.
    #[arg(long)]
    pub json: bool,
    /// Check signatures against this ed25519 public key (PEM); repeatable.
    #[arg(long, value_name = "PUB")]
    pub trust: Vec<PathBuf>,
    /// Show which of these cosign public keys (cosign.pub) signed each cosign signature
    /// carried (reads the small signature payloads); repeatable.
    #[arg(long = "cosign-key", value_name = "KEY.pub")]
    pub cosign_key: Vec<PathBuf>,
}

/// Runs the inspection; `Ok(false)` when an archive was unreadable or failed the trust check.
pub async fn run(args: InspectArgs) -> anyhow::Result<bool> {
    let cosign_keys = args
        .cosign_key
        .iter()
        .map(|p| {
            airlift::cosign::CosignKey::load(p)
                .with_context(|| format!("--cosign-key {}", p.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let trusted = args
        .trust
        .iter()
        .map(|p| {
            airlift::keys::load_public_key(p).with_context(|| format!("--trust {}", p.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut ok = true;
    let mut json = Vec::new();
    for (i, path) in args.archives.iter().enumerate() {
        // Another tool's archive (OCI layout, docker save, imgpkg tar) has no signature to show.
        match super::foreign::open(path) {
            Ok(Some(store)) => {
                if !trusted.is_empty() {
                    eprintln!(
                        "airlift: {}: {} carries no signature (--trust cannot be met)",
                        path.display(),
                        store.format.describe()
                    );
                    ok = false;
                }
                if args.json {
                    json.push(super::foreign::inspect_json(&store));
                } else {
                    if i > 0 {
                        println!();
                    }
                    super::foreign::inspect_human(&store);
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                ok = false;
                if args.json {
                    json.push(serde_json::json!({
                        "schema": INSPECT_SCHEMA,
                        "archive": path.display().to_string(),
                        "error": format!("{e:#}"),
                    }));
                } else {
                    eprintln!("airlift: {e:#}");
                }
                continue;
            }
        }
        match inspect(path, &trusted) {
            Ok(mut r) => {
                if !cosign_keys.is_empty() {
                    add_signers(&mut r, path, &cosign_keys).await?;
                }
                if r.trust_checked
                    && (r.valid_signatures == 0
                        || r.signatures
                            .iter()
                            .any(|s| s.status == SignatureStatus::Invalid))
                {
                    ok = false;
                }
                if args.json {
                    json.push(serde_json::to_value(&r)?);
                } else {
                    if i > 0 {
                        println!();
                    }
                    print_human(&r);
                }
            }
            Err(e) => {
                ok = false;
                if args.json {
                    json.push(serde_json::json!({
                        "schema": INSPECT_SCHEMA,
                        "archive": path.display().to_string(),
                        "error": e.to_string(),
                    }));
                } else {
                    eprintln!("airlift: {}: {e}", path.display());
                }
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    }
    Ok(ok)
}

fn print_human(r: &Inspection) {
    println!("archive:   {}", r.archive);
    println!(
        "format:    {} v{} ({}, {} bytes)",
        r.format,
        r.version,
        if r.compressed { "zstd" } else { "tar" },
        r.file_size
    );
    println!("created:   {}", r.created);
    println!("tool:      {}", r.tool);
    println!("manifest:  {}", r.manifest_digest);
    if r.signatures.is_empty() {
        println!("signers:   (none: unsigned)");
    }
    for s in &r.signatures {
        let status = match s.status {
            SignatureStatus::Valid => "valid",
            SignatureStatus::Invalid => "INVALID",
            SignatureStatus::Untrusted => "untrusted",
            SignatureStatus::Unchecked => "not checked (no --trust)",
        };
        println!("signer:    {} {status}", s.fingerprint);
    }
    if let Some(v) = &r.volume {
        println!(
            "volume:    {} of {} (each file at most {} bytes)",
            r.this_volume
                .map(|n| n.to_string())
                .unwrap_or_else(|| "?".into()),
            v.count,
            v.max_size
        );
    }
    if let Some(b) = &r.base {
        println!(
            "base:      delta over {} (manifest {}, created {})",
            b.file, b.manifest_digest, b.created
        );
        if let Some(t) = &r.base_blobs {
            println!(
                "           relies on {} blob(s), {} bytes, already at the destination",
                t.count, t.bytes
            );
        }
    }
    println!("\nROOTS");
    println!(
        "  {:<6}  {:<71}  {:<16}  REFERENCE",
        "KIND", "DIGEST", "TAG"
    );
    for root in &r.roots {
        let kind = serde_json::to_value(root.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        println!(
            "  {:<6}  {:<71}  {:<16}  {}",
            kind,
            root.digest.to_string(),
            root.tag.as_deref().unwrap_or("-"),
            root.reference
        );
    }
    if !r.images.is_empty() {
        println!("\nIMAGES");
        println!(
            "  {:<71}  {:>6}  {:>12}  PLATFORMS / REFERENCES",
            "DIGEST", "LAYERS", "BYTES"
        );
        for img in &r.images {
            let platforms: Vec<String> = img
                .platforms
                .iter()
                .filter_map(|p| p.platform.as_ref().map(|p| p.to_string()))
                .collect();
            println!(
                "  {:<71}  {:>6}  {:>12}  {}",
                img.digest.to_string(),
                img.layers,
                img.size,
                if platforms.is_empty() {
                    "(single manifest)".to_owned()
                } else {
                    platforms.join(", ")
                }
            );
            for name in &img.references {
                println!("  {:<71}  {:>6}  {:>12}  {name}", "", "", "");
            }
        }
    }
    for b in &r.bundles {
        println!(
            "\nBUNDLE {}{}",
            b.digest,
            if b.root { " (root)" } else { " (nested)" }
        );
        for name in &b.references {
            println!("  known as {name}");
        }
        for e in &b.images {
            println!(
                "  {}{} -> {}",
                if e.bundle { "[bundle] " } else { "" },
                e.image,
                e.digest
            );
        }
    }
    println!(
        "\nBLOBS     {} blobs, {} bytes, {} bytes saved by dedup",
        r.blobs.count, r.blobs.bytes, r.blobs.dedup_saved_bytes
    );
    for (role, t) in &r.blobs.by_role {
        println!("  {role:<9} {:>6} blobs  {:>14} bytes", t.count, t.bytes);
    }
    print_referrers(r);
    for f in &r.unknown_fields {
        println!("warning: unknown manifest field {f}");
    }
}

/// Marks each carried signature with the `--cosign-key` that verifies it.
async fn add_signers(
    r: &mut Inspection,
    path: &std::path::Path,
    keys: &[airlift::cosign::CosignKey],
) -> anyhow::Result<()> {
    use airlift::referrers::ReferrerKind;
    let trust = airlift::transfer::import::Trust {
        keys: Vec::new(),
        required: 1,
        allow_unsigned: true,
    };
    let opened = airlift::transfer::import::open_archive(path, &trust).await?;
    if !opened.random_access() {
        anyhow::bail!(
            "--cosign-key: the signatures of a .tar.zst archive cannot be read out of order; decompress it first (zstd -d)"
        );
    }
    for info in r
        .referrers
        .iter_mut()
        .filter(|i| i.kind == ReferrerKind::Signature)
    {
        info.signer =
            airlift::cosign::signer_of(&opened.graph, keys, &opened, &info.digest, &info.subject)
                .await?;
    }
    Ok(())
}

fn print_referrers(r: &Inspection) {
    if r.referrers.is_empty() {
        return;
    }
    let mut names: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for root in &r.roots {
        names
            .entry(root.digest.to_string())
            .or_default()
            .push(root.reference.clone());
    }
    for img in &r.images {
        names
            .entry(img.digest.to_string())
            .or_default()
            .extend(img.references.iter().cloned());
    }
    println!("\nREFERRERS (signatures, attestations, SBOMs, other artifacts)");
    let mut subject = None;
    for info in &r.referrers {
        if subject != Some(&info.subject) {
            subject = Some(&info.subject);
            let mut known = names
                .get(&info.subject.to_string())
                .cloned()
                .unwrap_or_default();
            known.sort();
            known.dedup();
            println!(
                "  {}{}",
                info.subject,
                if known.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", known.join(", "))
                }
            );
        }
        let signer = info
            .signer
            .as_ref()
            .map(|fp| format!("  signed by key {fp}"))
            .unwrap_or_default();
        println!(
            "    {:<34}  {}  {:>8} bytes{}",
            info.description, info.digest, info.size, signer
        );
    }
}
