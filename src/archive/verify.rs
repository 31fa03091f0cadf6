//! Offline verification of an archive, as specified in `format-spec/archive-v1.md` §6.
//!
//! The report lists every check and every failure (up to a bound), not just the first, so an
//! operator at the air gap sees everything wrong with a USB stick in one run.

use std::collections::BTreeSet;
use std::io::{self, Read};
use std::path::Path;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::check::Closure;
use super::hashers::{Checked, Hashers};
use super::manifest::{Manifest, Role};
use super::reader::ArchiveReader;
use super::{ArchiveError, INDEX_JSON, MANIFEST_ENTRY, MAX_INDEX, VOLUME_ENTRY};
use crate::digest::{Digest, DigestError};
use crate::keys::{self, KeyError, VerifyingKey};

/// Most failures listed in a report; the rest are only counted.
pub const MAX_FAILURES: usize = 1000;

/// What counts as a valid archive.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Public keys whose signatures count.
    pub trusted: Vec<VerifyingKey>,
    /// How many distinct trusted keys must have signed (normally 1).
    pub required: usize,
    /// Accept an archive without enough valid signatures (integrity is still checked).
    pub allow_unsigned: bool,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            trusted: Vec::new(),
            required: 1,
            allow_unsigned: false,
        }
    }
}

pub use super::check::{Failure, FailureKind};

/// The outcome of one step of the algorithm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Step name: container, leading-entries, manifest, signatures, index, blobs,
    /// completeness, closure.
    pub name: String,
    /// Whether the step found nothing wrong.
    pub ok: bool,
    /// What was checked.
    pub detail: String,
}

/// What became of one signature entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureState {
    /// By a trusted key, and valid.
    Valid,
    /// By a trusted key, and not valid.
    Invalid,
    /// By a key not in the trusted set (not checked).
    Untrusted,
}

/// One signature entry and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureStatus {
    /// The signer's fingerprint (from the entry name).
    pub fingerprint: String,
    /// Its state.
    pub status: SignatureState,
}

/// The verification report (schema: `format-spec/verify-report.schema.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Always `airlift-verify-report`.
    pub format: String,
    /// Report format version, 1.
    pub version: u64,
    /// The archive path as given.
    pub archive: String,
    /// True iff there are no failures.
    pub ok: bool,
    /// Whether the archive is zstd-compressed (absent if not determined).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compressed: Option<bool>,
    /// sha256 of the airlift manifest bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<Digest>,
    /// The manifest's creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Signature entries and their state.
    pub signatures: Vec<SignatureStatus>,
    /// Distinct trusted keys with a valid signature.
    pub valid_signatures: usize,
    /// How many were required.
    pub required_signatures: usize,
    /// Whether unsigned archives were allowed.
    pub allow_unsigned: bool,
    /// Blob entries read.
    pub blobs_checked: u64,
    /// Blob bytes hashed.
    pub bytes_checked: u64,
    /// Each step and its outcome.
    pub checks: Vec<Check>,
    /// Each failure, up to [`MAX_FAILURES`].
    pub failures: Vec<Failure>,
    /// Failures beyond the bound, counted only.
    pub failures_dropped: u64,
    /// Tolerated oddities (unknown manifest fields, untrusted signatures).
    pub warnings: Vec<String>,
    /// Volume sets: which volume this file is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<u32>,
    /// Volume sets: how many volumes the set has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_count: Option<u32>,
    /// Volume sets: the other volumes needed for the whole archive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes_needed: Vec<u32>,
    /// Deltas: the base archive relied on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<super::manifest::BaseRef>,
    /// Deltas: how many blobs are relied on from the base (not carried, not checked here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_blobs: Option<u64>,
}

impl Report {
    fn fail(&mut self, f: Failure) {
        if self.failures.len() < MAX_FAILURES {
            self.failures.push(f);
        } else {
            self.failures_dropped += 1;
        }
    }

    /// Counts blobs the hashing threads checked and records their mismatches.
    fn record_hashed(&mut self, checked: Vec<Checked<String>>) {
        for (entry, result) in checked {
            match result {
                Ok(n) => self.bytes_checked += n,
                Err(d) => self.fail(from_digest_error(&d, Some(entry))),
            }
        }
    }

    fn failure_count(&self) -> u64 {
        self.failures.len() as u64 + self.failures_dropped
    }

    fn check(&mut self, name: &str, before: u64, detail: String) {
        let ok = self.failure_count() == before;
        self.checks.push(Check {
            name: name.to_owned(),
            ok,
            detail,
        });
    }

    /// Whether any failure has the given kind (handy for callers and tests).
    pub fn has_failure(&self, kind: FailureKind) -> bool {
        self.failures.iter().any(|f| f.kind == kind)
    }
}

fn failure(kind: FailureKind, message: impl Into<String>) -> Failure {
    Failure::new(kind, message)
}

fn from_digest_error(e: &DigestError, entry: Option<String>) -> Failure {
    let mut f = failure(FailureKind::DigestMismatch, e.to_string());
    f.entry = entry;
    match e {
        DigestError::Mismatch { expected, found } => {
            f.digest = Some(expected.clone());
            f.expected = Some(expected.to_string());
            f.found = Some(found.to_string());
        }
        DigestError::Size {
            digest,
            expected,
            found,
        } => {
            f.kind = FailureKind::SizeMismatch;
            f.digest = Some(digest.clone());
            f.expected = Some(expected.to_string());
            f.found = Some(found.to_string());
        }
        DigestError::Invalid { .. } => f.kind = FailureKind::InvalidContent,
    }
    f
}

/// Maps a reader error to a report failure.
pub fn failure_from_error(e: &ArchiveError) -> Failure {
    use FailureKind as K;
    let msg = e.to_string();
    match e {
        ArchiveError::Io { .. }
        | ArchiveError::Truncated { .. }
        | ArchiveError::BadHeader { .. }
        | ArchiveError::NotSeekable(_)
        | ArchiveError::Usage(_) => failure(K::Container, msg),
        ArchiveError::BadEntryName { name, .. } => Failure {
            entry: Some(name.clone()),
            ..failure(K::EntryName, msg)
        },
        ArchiveError::BadEntryType { name, kind } => Failure {
            entry: Some(name.clone()),
            expected: Some("regular file".into()),
            found: Some(kind.clone()),
            ..failure(K::EntryType, msg)
        },
        ArchiveError::Duplicate { name } => Failure {
            entry: Some(name.clone()),
            ..failure(K::DuplicateEntry, msg)
        },
        ArchiveError::Order { name, expected } => Failure {
            entry: Some(name.clone()),
            expected: Some(expected.clone()),
            ..failure(K::EntryOrder, msg)
        },
        ArchiveError::TooLarge { name, size, limit } => Failure {
            entry: Some(name.clone()),
            expected: Some(format!("at most {limit} bytes")),
            found: Some(size.to_string()),
            ..failure(K::InvalidContent, msg)
        },
        ArchiveError::Missing { first, .. } => Failure {
            entry: first.first().cloned(),
            ..failure(K::MissingBlob, msg)
        },
        ArchiveError::Unlisted { name } => Failure {
            entry: Some(name.clone()),
            ..failure(K::UnlistedEntry, msg)
        },
        ArchiveError::SizeMismatch {
            digest,
            expected,
            found,
        } => Failure {
            entry: Some(super::EntryName::blob(digest)),
            digest: Some(digest.clone()),
            expected: Some(expected.to_string()),
            found: Some(found.to_string()),
            ..failure(K::SizeMismatch, msg)
        },
        ArchiveError::Digest(d) => from_digest_error(d, None),
        ArchiveError::Json { name, .. } | ArchiveError::Invalid { name, .. } => Failure {
            entry: Some(name.clone()),
            ..failure(K::InvalidContent, msg)
        },
        ArchiveError::Unsupported(_) | ArchiveError::Expired { .. } => failure(K::Unsupported, msg),
        ArchiveError::Key(KeyError::SignatureLength { path, found }) => Failure {
            entry: Some(path.display().to_string()),
            expected: Some("64 bytes".into()),
            found: Some(format!("{found} bytes")),
            ..failure(K::SignatureInvalid, msg)
        },
        ArchiveError::Key(_) => failure(K::SignatureInvalid, msg),
    }
}

fn leading_kind(e: &ArchiveError) -> &'static str {
    if e.is_fatal() {
        "container"
    } else {
        "leading-entries"
    }
}

/// Verifies the archive at `path` offline; never stops at the first blob failure.
pub fn verify(path: &Path, opts: &VerifyOptions) -> Report {
    let mut r = Report {
        format: "airlift-verify-report".into(),
        version: 1,
        archive: path.display().to_string(),
        ok: false,
        compressed: None,
        manifest_digest: None,
        created: None,
        signatures: Vec::new(),
        valid_signatures: 0,
        required_signatures: opts.required,
        allow_unsigned: opts.allow_unsigned,
        blobs_checked: 0,
        bytes_checked: 0,
        checks: Vec::new(),
        failures: Vec::new(),
        failures_dropped: 0,
        warnings: Vec::new(),
        volume: None,
        volume_count: None,
        volumes_needed: Vec::new(),
        base: None,
        base_blobs: None,
    };
    // Steps 1-3: container, leading entries, manifest rules.
    let mut reader = match ArchiveReader::open(path) {
        Ok(reader) => reader,
        Err(e) => {
            let name = leading_kind(&e);
            r.fail(failure_from_error(&e));
            r.check(
                name,
                0,
                format!("reading the archive's leading entries: {e}"),
            );
            return r;
        }
    };
    let header = reader.header();
    r.compressed = Some(header.compressed);
    r.check(
        "container",
        0,
        format!(
            "{} ustar stream",
            if header.compressed {
                "zstd-compressed"
            } else {
                "plain"
            }
        ),
    );
    r.check(
        "leading-entries",
        0,
        format!(
            "oci-layout, {MANIFEST_ENTRY}, {} signature(s), {INDEX_JSON} in order",
            header.signatures.len()
        ),
    );
    r.manifest_digest = Some(Digest::sha256_of(&header.manifest_bytes));
    r.created = Some(header.manifest.created.clone());
    for f in &header.unknown_fields {
        r.warnings
            .push(format!("{MANIFEST_ENTRY}: unknown field {f} (tolerated)"));
    }
    r.check(
        "manifest",
        0,
        format!(
            "format airlift-archive v1, {} root(s), {} blob(s)",
            header.manifest.roots.len(),
            header.manifest.blobs.len()
        ),
    );
    let manifest: Manifest = header.manifest.clone();
    if let Some(set) = &manifest.volume {
        r.volume = header.volume;
        r.volume_count = Some(set.count);
        r.volumes_needed = (1..=set.count)
            .filter(|n| Some(*n) != header.volume)
            .collect();
        r.check(
            "volume",
            0,
            format!(
                "{VOLUME_ENTRY}: volume {} of {}, matching the signed manifest",
                header.volume.unwrap_or(0),
                set.count
            ),
        );
    }
    if let Some(base) = &manifest.base {
        r.base = Some(base.clone());
        r.base_blobs = Some(manifest.base_blobs().count() as u64);
        r.warnings.push(format!(
            "delta archive: {} blob(s) are relied on from base {} (manifest {}) and must already be at the destination",
            manifest.base_blobs().count(),
            base.file,
            base.manifest_digest
        ));
    }

    // Step 4: signatures, before anything else is trusted.
    let before = r.failure_count();
    let mut valid: BTreeSet<String> = BTreeSet::new();
    let sigs = header.signatures.clone();
    let manifest_bytes = header.manifest_bytes.clone();
    for (fp, sig) in &sigs {
        let key = opts.trusted.iter().find(|k| keys::fingerprint(k) == *fp);
        let status = match key {
            None => {
                r.warnings
                    .push(format!("signature by untrusted key {fp} not checked"));
                SignatureState::Untrusted
            }
            Some(k) if keys::verify(k, &manifest_bytes, sig) => {
                valid.insert(fp.clone());
                SignatureState::Valid
            }
            Some(_) => {
                let entry = format!("{}{fp}.sig", super::SIGNATURES_DIR);
                r.fail(Failure {
                    entry: Some(entry.clone()),
                    ..failure(
                        FailureKind::SignatureInvalid,
                        format!("{entry}: signature by trusted key {fp} does not verify"),
                    )
                });
                SignatureState::Invalid
            }
        };
        r.signatures.push(SignatureStatus {
            fingerprint: fp.clone(),
            status,
        });
    }
    r.valid_signatures = valid.len();
    if valid.len() < opts.required && !opts.allow_unsigned {
        r.fail(Failure {
            expected: Some(format!("at least {}", opts.required)),
            found: Some(valid.len().to_string()),
            ..failure(
                FailureKind::NotEnoughSignatures,
                format!(
                    "{} valid signature(s) by trusted keys ({} trusted key(s) given), {} required",
                    valid.len(),
                    opts.trusted.len(),
                    opts.required
                ),
            )
        });
    }
    r.check(
        "signatures",
        before,
        format!(
            "{} valid of {} signature(s), {} required{}",
            valid.len(),
            sigs.len(),
            opts.required,
            if opts.allow_unsigned {
                " (unsigned allowed)"
            } else {
                ""
            }
        ),
    );

    // Step 5: index.json.
    let before = r.failure_count();
    let mut closure = Closure::new(&manifest, &header.index_json);
    for f in closure.take_failures() {
        r.fail(f);
    }
    r.check(
        "index",
        before,
        "index.json is an OCI index naming listed manifests and every root".into(),
    );

    // Step 6: every blob entry, without stopping at the first failure. Blobs are hashed on
    // worker threads; their results are recorded in entry order before any later failure.
    let before = r.failure_count();
    let mut closure_failures = 0u64;
    let mut hashers: Hashers<String> = Hashers::new();
    // Uncompressed: workers read their blobs' ranges themselves while this pass moves on.
    let by_position = if reader.header().compressed {
        None
    } else {
        std::fs::File::open(path).ok().map(std::sync::Arc::new)
    };
    loop {
        let ready = hashers.ready();
        r.record_hashed(ready);
        let mut blob = match reader.next_blob() {
            Ok(None) => break,
            Ok(Some(b)) => b,
            Err(e) => {
                r.record_hashed(hashers.settle());
                r.fail(failure_from_error(&e));
                if e.is_fatal() {
                    break;
                }
                continue;
            }
        };
        r.blobs_checked += 1;
        let entry = blob.name.clone();
        let is_manifest = matches!(blob.role, Role::Manifest | Role::Index);
        if !is_manifest {
            let size = blob.size;
            let handed = match by_position.as_ref().zip(blob.offset) {
                Some((file, offset)) => {
                    let (skipped, verifier) = blob.skip_data();
                    verifier.map(|v| {
                        hashers
                            .hash_range(entry.clone(), file, offset, size, v)
                            .and(skipped)
                    })
                }
                None => {
                    let (data, verifier) = blob.into_parts();
                    verifier.map(|v| hashers.hash(entry.clone(), data, v))
                }
            };
            match handed {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    r.record_hashed(hashers.settle());
                    r.fail(failure(FailureKind::Container, format!("{entry}: {e}")));
                    break;
                }
                // A fresh entry always carries its verifier; never let one pass unhashed.
                None => {
                    r.record_hashed(hashers.settle());
                    r.fail(failure(
                        FailureKind::Container,
                        format!("{entry}: no digest check available (internal error)"),
                    ));
                    break;
                }
            }
            continue;
        }
        // A manifest is hashed and parsed here; earlier blobs' results go first if it fails.
        let mut buf = Vec::new();
        let read = if is_manifest && blob.size <= MAX_INDEX {
            blob.read_to_end(&mut buf).map(|n| n as u64)
        } else {
            io::copy(&mut blob, &mut io::sink())
        };
        match read {
            Ok(n) => r.bytes_checked += n,
            Err(e) => {
                r.record_hashed(hashers.settle());
                let digest_error = e.get_ref().and_then(|i| i.downcast_ref::<DigestError>());
                match digest_error {
                    Some(d) => r.fail(from_digest_error(d, Some(entry))),
                    None => {
                        r.fail(failure(FailureKind::Container, format!("{entry}: {e}")));
                        break;
                    }
                }
                continue;
            }
        }
        if is_manifest {
            if blob.size > MAX_INDEX {
                r.record_hashed(hashers.settle());
                r.fail(Failure {
                    entry: Some(entry),
                    digest: Some(blob.digest.clone()),
                    ..failure(
                        FailureKind::InvalidContent,
                        format!("manifest larger than {MAX_INDEX} bytes"),
                    )
                });
                continue;
            }
            let (digest, mt) = (blob.digest.clone(), blob.media_type.clone());
            drop(blob);
            closure.manifest(&manifest, &entry, &digest, &mt, Bytes::from(buf));
            let failures = closure.take_failures();
            if !failures.is_empty() {
                r.record_hashed(hashers.settle());
            }
            let before_closure = r.failure_count();
            for f in failures {
                r.fail(f);
            }
            closure_failures += r.failure_count() - before_closure;
        }
    }
    r.record_hashed(hashers.settle());
    drop(hashers);
    r.check(
        "blobs",
        before + closure_failures,
        "every entry: allowed name, regular file, unique, listed, in order, size and sha256".into(),
    );

    // Step 7: completeness and closure.
    let before = r.failure_count();
    let missing: Vec<super::PlannedEntry> = reader.missing().into_iter().cloned().collect();
    for e in &missing {
        r.fail(Failure {
            entry: Some(e.name.clone()),
            digest: Some(e.blob.clone()),
            expected: Some(format!("{} bytes", e.size)),
            found: Some("absent".into()),
            ..failure(
                FailureKind::MissingBlob,
                format!("entry {} is listed but absent", e.name),
            )
        });
    }
    for f in Closure::locks(&manifest)
        .into_iter()
        .chain(Closure::referrers(&manifest))
    {
        r.fail(f);
    }
    r.check(
        "completeness",
        before,
        match manifest.volume {
            Some(_) => "every entry the signed manifest places in this volume present; every lock image listed".into(),
            None => "every listed blob present; every lock image carried".into(),
        },
    );
    let before = r.failure_count();
    if missing.is_empty() {
        for f in closure.unreachable(&manifest) {
            r.fail(f);
        }
    }
    r.check(
        "closure",
        before.saturating_sub(closure_failures),
        "every descriptor in index.json and manifests listed; every listed blob reachable".into(),
    );
    r.ok = r.failure_count() == 0;
    r
}

/// The outcome of verifying several volume files as one set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetReport {
    /// Always `airlift-verify-set-report`.
    pub format: String,
    /// Report format version, 1.
    pub version: u64,
    /// True iff every file verified and together they make the whole archive.
    pub ok: bool,
    /// sha256 of the (shared) airlift manifest, if the files agree on one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<Digest>,
    /// Volumes of the set not among the files given.
    pub volumes_missing: Vec<u32>,
    /// Problems of the set as a whole (other archives mixed in, a volume given twice).
    pub problems: Vec<String>,
    /// One report per file, in the order given.
    pub reports: Vec<Report>,
}

/// Verifies several files as one archive: each alone, then that they are the volumes of
/// one set (same signed manifest, each volume once) and that none is missing.
pub fn verify_set(paths: &[&Path], opts: &VerifyOptions) -> SetReport {
    let reports: Vec<Report> = paths.iter().map(|p| verify(p, opts)).collect();
    let mut problems = Vec::new();
    let digest = reports.iter().find_map(|r| r.manifest_digest.clone());
    for r in &reports {
        if r.manifest_digest.is_some() && r.manifest_digest != digest {
            problems.push(format!(
                "{} belongs to another archive (manifest {})",
                r.archive,
                r.manifest_digest
                    .as_ref()
                    .map(|d| d.to_string())
                    .unwrap_or_default()
            ));
        }
    }
    let count = reports.iter().find_map(|r| r.volume_count);
    let mut have: Vec<u32> = Vec::new();
    for r in &reports {
        match (count, r.volume) {
            (Some(_), Some(v)) if have.contains(&v) => {
                problems.push(format!("volume {v} given twice ({})", r.archive))
            }
            (Some(_), Some(v)) => have.push(v),
            (None, _) if reports.len() > 1 => problems.push(format!(
                "{} is a single-file archive, not a volume of a set",
                r.archive
            )),
            _ => {}
        }
    }
    let volumes_missing: Vec<u32> = match count {
        Some(c) => (1..=c).filter(|n| !have.contains(n)).collect(),
        None => Vec::new(),
    };
    SetReport {
        format: "airlift-verify-set-report".into(),
        version: 1,
        ok: problems.is_empty() && volumes_missing.is_empty() && reports.iter().all(|r| r.ok),
        manifest_digest: digest,
        volumes_missing,
        problems,
        reports,
    }
}
