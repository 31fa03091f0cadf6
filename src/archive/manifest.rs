//! The airlift manifest (`airlift/manifest.json`): what the archive holds, signed.
//!
//! Its canonical bytes are what signatures cover, so serialisation is fixed: keys sorted,
//! no whitespace. The blob table lets a reader know every entry's size and digest before
//! reading it, which is what makes one-pass, verify-as-you-go import possible.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::ArchiveError;
use crate::digest::Digest;
use crate::oci::{Descriptor, RawManifest, media_type};

/// The `format` value of every airlift archive manifest.
pub const FORMAT_NAME: &str = "airlift-archive";
/// The format major version this code reads and writes.
pub const FORMAT_VERSION: u64 = 1;
/// Annotation carrying an image's reference in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The annotation `ctr images import` names an image by (it ignores a full `ref.name`).
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// What a root is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RootKind {
    /// An imgpkg bundle (its lock's images come along).
    Bundle,
    /// A plain image or index.
    Image,
}

/// One thing the user asked to carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Root {
    /// Bundle or image.
    pub kind: RootKind,
    /// The reference text exactly as the user gave it.
    pub reference: String,
    /// The tag it was resolved from, if it was given by tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The manifest or index digest.
    pub digest: Digest,
    /// That manifest's media type.
    pub media_type: String,
}

/// One image in a bundle's `.imgpkg/images.yml` lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedImage {
    /// The reference written in the lock (`repo@sha256:…`).
    pub image: String,
    /// The lock entry's annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Whether this image is itself a bundle.
    pub bundle: bool,
}

/// A bundle carried in the archive, with the lock that says which images it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleLock {
    /// The bundle's manifest digest.
    pub digest: Digest,
    /// The lock entries, in lock order.
    pub images: Vec<LockedImage>,
}

/// What a blob is to the manifests that name it; the order is the tar group order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An image manifest.
    Manifest,
    /// An image index or manifest list.
    Index,
    /// An image config.
    Config,
    /// A layer (or any other blob named by a manifest's `layers`).
    Layer,
}

impl Role {
    /// The tar entry group: manifests and indexes, then configs, then layers.
    pub fn group(self) -> u8 {
        match self {
            Role::Manifest | Role::Index => 0,
            Role::Config => 1,
            Role::Layer => 2,
        }
    }

    /// The role a manifest of media type `mt` has.
    pub fn of_manifest(mt: &str) -> Role {
        if media_type::is_index(mt) {
            Role::Index
        } else {
            Role::Manifest
        }
    }
}

/// One row of the blob table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlobEntry {
    /// The blob's digest (its entry name is derived from it).
    pub digest: Digest,
    /// Its length in bytes.
    pub size: u64,
    /// The media type the first naming descriptor gave.
    pub media_type: String,
    /// What it is.
    pub role: Role,
    /// Digests of manifests/indexes in the archive naming it, sorted.
    #[serde(default)]
    pub referenced_by: Vec<Digest>,
    /// Volume set only: the volume holding this (whole) config or layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<u32>,
    /// Volume set only: a blob larger than a volume, stored as these parts in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<BlobPart>,
    /// Delta only: not carried; the destination already holds it from the base.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub base: bool,
}

/// One part of a blob split across volumes: an entry of its own with its own digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobPart {
    /// sha256 of this part's bytes.
    pub digest: Digest,
    /// Its length.
    pub size: u64,
    /// The volume holding it.
    pub volume: u32,
}

/// The `volume` field: this archive is a set of volumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSet {
    /// How many volume files make up the archive.
    pub count: u32,
    /// The size limit every volume file respects (bytes).
    pub max_size: u64,
}

/// The `base` field: this archive is a delta relying on content of an earlier archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BaseRef {
    /// sha256 of the base archive's airlift manifest (its identity).
    pub manifest_digest: Digest,
    /// The base archive's `created`.
    pub created: String,
    /// The file the base was read from (archive, manifest or receipt), informational.
    pub file: String,
}

/// One tar entry carrying blob content, as planned by the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEntry {
    /// The tar entry name.
    pub name: String,
    /// Digest of the entry's bytes (the part's digest for a part).
    pub digest: Digest,
    /// Entry size.
    pub size: u64,
    /// Role of the blob.
    pub role: Role,
    /// The blob this entry belongs to.
    pub blob: Digest,
    /// `(number, count)` for a part of a split blob, 1-based.
    pub part: Option<(u32, u32)>,
}

/// The airlift manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    /// Always [`FORMAT_VERSION`] for this code.
    pub version: u64,
    /// Creation time, RFC 3339 UTC (`2026-01-02T03:04:05Z`).
    pub created: String,
    /// The writing tool and its version.
    pub tool: String,
    /// Digest and size of the archive's `index.json`, which is thereby covered by the signature.
    pub index: IndexRef,
    /// What the user asked for, in order.
    pub roots: Vec<Root>,
    /// Every bundle's lock, sorted by digest.
    #[serde(default)]
    pub bundles: Vec<BundleLock>,
    /// Every blob, sorted by digest.
    pub blobs: Vec<BlobEntry>,
    /// Present when the archive is a set of volume files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeSet>,
    /// Present when the archive is a delta over an earlier archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseRef>,
    /// The publisher's release counter (`export --sequence`), raised each release, so that
    /// a receiver can refuse an older archive replayed as new (`verify --not-older-than`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    /// RFC 3339 UTC time after which the archive is refused unless `--allow-expired`
    /// (`export --expires`), so a captured old archive stops being accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// Signatures, attestations, SBOMs and other artifacts carried with their subjects, sorted
    /// by (digest, subject); each is also a manifest of the blob table and of `index.json`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub referrers: Vec<crate::referrers::Referrer>,
    /// Present when the export kept only some platforms (`export --platform`): which, and
    /// each index or bundle the archive carries in place of the original it was derived from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platforms: Option<PlatformFilter>,
}

/// The `platforms` field: what a platform-filtered export kept and replaced, signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformFilter {
    /// The platforms kept, as given (`os/arch[/variant]`).
    pub kept: Vec<String>,
    /// Each replaced manifest, sorted by `original`.
    pub replaced: Vec<Replacement>,
}

/// One filtered index (or derived bundle) and the original digest it stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replacement {
    /// The digest at the source (not carried).
    pub original: Digest,
    /// The digest carried instead.
    pub filtered: Digest,
}

/// Identifies the exact `index.json` bytes, so that the signature covers them too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexRef {
    /// sha256 of `index.json`.
    pub digest: Digest,
    /// Its length.
    pub size: u64,
}

impl IndexRef {
    /// The reference to these `index.json` bytes.
    pub fn of(index_json: &[u8]) -> IndexRef {
        IndexRef {
            digest: Digest::sha256_of(index_json),
            size: index_json.len() as u64,
        }
    }

    /// Fails unless `index_json` is exactly the bytes referenced.
    pub fn check(&self, index_json: &[u8]) -> Result<(), ArchiveError> {
        let found = IndexRef::of(index_json);
        if found.size != self.size {
            return Err(crate::digest::DigestError::Size {
                digest: self.digest.clone(),
                expected: self.size,
                found: found.size,
            }
            .into());
        }
        Ok(self.digest.expect(&found.digest)?)
    }
}

/// A parsed manifest plus the fields this version did not recognise.
#[derive(Debug, Clone)]
pub struct ParsedManifest {
    /// The manifest.
    pub manifest: Manifest,
    /// JSON paths of fields not known to this version (tolerated, to be reported).
    pub unknown_fields: Vec<String>,
}

/// RFC 3339 UTC text (whole seconds, `Z`) for a Unix time: the manifest's `created`.
pub fn rfc3339(unix_seconds: u64) -> String {
    let secs = i64::try_from(unix_seconds).unwrap_or(i64::MAX);
    match chrono::DateTime::from_timestamp(secs, 0) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => "9999-12-31T23:59:59Z".to_owned(),
    }
}

/// Whether release `a` is older than release `b`: by `sequence` when both carry one (the
/// publisher's word), else by `created`.
pub fn is_older(a: (Option<u64>, &str), b: (Option<u64>, &str)) -> bool {
    match (a.0, b.0) {
        (Some(x), Some(y)) => x < y,
        _ => {
            let t = |s: &str| chrono::DateTime::parse_from_rfc3339(s).ok();
            match (t(a.1), t(b.1)) {
                (Some(x), Some(y)) => x < y,
                _ => a.1 < b.1,
            }
        }
    }
}

/// What `export --sequence/--expires` asks for; `expires` relative to the creation time, so
/// `SOURCE_DATE_EPOCH` and `--resume` give the same manifest.
#[derive(Debug, Clone, Default)]
pub struct Freeze {
    /// The `sequence` to write.
    pub sequence: Option<u64>,
    /// The `expires` to write.
    pub expires: Option<Expires>,
}

/// An expiry: a fixed time, or a duration after creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expires {
    /// RFC 3339 time, as given.
    At(chrono::DateTime<chrono::Utc>),
    /// Seconds after `created`.
    After(u64),
}

impl Expires {
    /// Parses `90d`, `12h`, `30m` or an RFC 3339 time (`--expires`).
    pub fn parse(text: &str) -> Result<Expires, String> {
        let units = [("d", 86_400u64), ("h", 3_600), ("m", 60), ("s", 1)];
        for (suffix, secs) in units {
            if let Some(n) = text.strip_suffix(suffix)
                && !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
            {
                let n: u64 = n.parse().map_err(|e| format!("{text:?}: {e}"))?;
                return n
                    .checked_mul(secs)
                    .filter(|&s| s > 0)
                    .map(Expires::After)
                    .ok_or_else(|| format!("{text:?}: must be a positive duration"));
            }
        }
        chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| Expires::At(t.with_timezone(&chrono::Utc)))
            .map_err(|_| {
                format!("{text:?} is neither a duration (90d, 12h, 30m) nor an RFC 3339 time")
            })
    }
}

impl Freeze {
    /// Writes the fields into `manifest`, whose creation time is `created` (Unix seconds).
    pub fn apply(&self, manifest: &mut Manifest, created: u64) {
        manifest.sequence = self.sequence;
        manifest.expires = self.expires.as_ref().map(|e| match e {
            Expires::At(t) => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            Expires::After(secs) => rfc3339(created.saturating_add(*secs)),
        });
    }
}

/// Parses an RFC 3339 time (as in `expires`), naming the field when it is not one.
pub fn parse_rfc3339(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("`expires` {text:?} is not an RFC 3339 time: {e}"))
}

/// The archive time: `SOURCE_DATE_EPOCH` when set and valid, else now.
pub fn creation_time() -> u64 {
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH")
        && let Ok(t) = v.trim().parse::<u64>()
    {
        return t;
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Canonical JSON of any serialisable value: sorted keys, no whitespace, no newline.
pub fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    // serde_json's Map is a BTreeMap (the `preserve_order` feature is off; a unit test
    // guards this), so going through Value sorts every object's keys.
    let v = serde_json::to_value(value)?;
    serde_json::to_vec(&v)
}

fn unknown_paths(
    original: &serde_json::Value,
    known: &serde_json::Value,
    path: &str,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    match (original, known) {
        (Value::Object(o), Value::Object(k)) => {
            for (key, v) in o {
                let p = format!("{path}/{key}");
                match k.get(key) {
                    Some(kv) => unknown_paths(v, kv, &p, out),
                    None if v.is_null() => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(o), Value::Array(k)) => {
            for (i, (ov, kv)) in o.iter().zip(k).enumerate() {
                unknown_paths(ov, kv, &format!("{path}/{i}"), out);
            }
        }
        _ => {}
    }
}

impl Manifest {
    /// A v1 manifest skeleton with the given creation time, tool and `index.json` bytes.
    pub fn new(created_unix: u64, tool: impl Into<String>, index_json: &[u8]) -> Manifest {
        Manifest {
            format: FORMAT_NAME.to_owned(),
            version: FORMAT_VERSION,
            created: rfc3339(created_unix),
            tool: tool.into(),
            index: IndexRef::of(index_json),
            roots: Vec::new(),
            bundles: Vec::new(),
            blobs: Vec::new(),
            volume: None,
            base: None,
            sequence: None,
            expires: None,
            platforms: None,
            referrers: Vec::new(),
        }
    }

    /// Fails with [`ArchiveError::Expired`] when `expires` is at or before `now`.
    pub fn check_expiry(&self, now: chrono::DateTime<chrono::Utc>) -> Result<(), ArchiveError> {
        let Some(text) = &self.expires else {
            return Ok(());
        };
        let at = parse_rfc3339(text).map_err(|reason| ArchiveError::Invalid {
            name: super::MANIFEST_ENTRY.to_owned(),
            reason,
        })?;
        if at <= now {
            return Err(ArchiveError::Expired {
                expires: text.clone(),
            });
        }
        Ok(())
    }

    /// The exact bytes to store and sign.
    pub fn to_canonical_bytes(&self) -> Result<Vec<u8>, ArchiveError> {
        canonical_json(self).map_err(|source| ArchiveError::Json {
            name: super::MANIFEST_ENTRY.to_owned(),
            source,
        })
    }

    /// Parses manifest bytes and checks the format rules (name, version, reserved fields,
    /// blob table sorted and unique); unknown fields are returned, not refused.
    pub fn parse(bytes: &[u8]) -> Result<ParsedManifest, ArchiveError> {
        let name = super::MANIFEST_ENTRY;
        let json = |source| ArchiveError::Json {
            name: name.to_owned(),
            source,
        };
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(json)?;
        // Check format and version before the shape, so a v2 archive says "unsupported".
        let format = value.get("format").and_then(|v| v.as_str());
        if format != Some(FORMAT_NAME) {
            return Err(ArchiveError::Unsupported(format!(
                "format {:?}, expected {FORMAT_NAME:?}",
                format.unwrap_or("(missing)")
            )));
        }
        let version = value.get("version").and_then(|v| v.as_u64());
        if version != Some(FORMAT_VERSION) {
            return Err(ArchiveError::Unsupported(format!(
                "format version {}, this airlift reads version {FORMAT_VERSION}",
                value
                    .get("version")
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "(missing)".to_owned())
            )));
        }
        let manifest: Manifest = serde_json::from_value(value.clone()).map_err(json)?;
        manifest.check_placement()?;
        if let Some(e) = &manifest.expires {
            parse_rfc3339(e).map_err(|reason| ArchiveError::Invalid {
                name: name.to_owned(),
                reason,
            })?;
        }
        for pair in manifest.blobs.windows(2) {
            if pair[0].digest >= pair[1].digest {
                return Err(ArchiveError::Invalid {
                    name: name.to_owned(),
                    reason: format!(
                        "blob table not sorted by digest or has duplicates at {}",
                        pair[1].digest
                    ),
                });
            }
        }
        let known = serde_json::to_value(&manifest).map_err(json)?;
        let mut unknown_fields = Vec::new();
        unknown_paths(&value, &known, "", &mut unknown_fields);
        Ok(ParsedManifest {
            manifest,
            unknown_fields,
        })
    }

    /// Checks the volume and base fields agree with each other and with the blob table.
    fn check_placement(&self) -> Result<(), ArchiveError> {
        let bad = |reason: String| ArchiveError::Invalid {
            name: super::MANIFEST_ENTRY.to_owned(),
            reason,
        };
        if let Some(v) = &self.volume
            && v.count == 0
        {
            return Err(bad("volume.count must be at least 1".into()));
        }
        for b in &self.blobs {
            let d = &b.digest;
            let metadata = matches!(b.role, Role::Manifest | Role::Index);
            if b.base {
                if self.base.is_none() {
                    return Err(bad(format!(
                        "blob {d} is marked base but there is no `base`"
                    )));
                }
                if b.role != Role::Layer {
                    return Err(bad(format!(
                        "blob {d}: only layers may be left to the base"
                    )));
                }
                if b.volume.is_some() || !b.parts.is_empty() {
                    return Err(bad(format!("blob {d}: a base blob has no volume or parts")));
                }
                continue;
            }
            match &self.volume {
                None => {
                    if b.volume.is_some() || !b.parts.is_empty() {
                        return Err(bad(format!(
                            "blob {d}: volume placement in an archive that is not a volume set"
                        )));
                    }
                }
                Some(set) => {
                    let in_range = |n: u32| n >= 1 && n <= set.count;
                    match (metadata, b.volume, b.parts.is_empty()) {
                        (true, None, true) => {}
                        (true, _, _) => {
                            return Err(bad(format!(
                                "blob {d}: manifests and indexes are in every volume, no placement"
                            )));
                        }
                        (false, Some(n), true) if in_range(n) => {}
                        (false, None, false) => {
                            let total: u64 = b.parts.iter().map(|p| p.size).sum();
                            let ordered = b.parts.windows(2).all(|w| w[0].volume <= w[1].volume);
                            if b.parts.len() < 2
                                || b.parts.len() > 9999
                                || total != b.size
                                || !ordered
                                || b.parts.iter().any(|p| !in_range(p.volume) || p.size == 0)
                            {
                                return Err(bad(format!(
                                    "blob {d}: parts must be 2..9999, non-empty, in volume order, within 1..{} and add up to its size",
                                    set.count
                                )));
                            }
                        }
                        _ => {
                            return Err(bad(format!(
                                "blob {d}: needs exactly one of `volume` (1..{}) or `parts`",
                                set.count
                            )));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The blob content entries of one file, in tar order: `None` for a single-file archive,
    /// `Some(n)` for volume `n` of a set (manifests and indexes are in every volume).
    pub fn entries_for(&self, volume: Option<u32>) -> Vec<PlannedEntry> {
        let mut out = Vec::new();
        for b in self.blob_order() {
            if b.base {
                continue;
            }
            let whole = PlannedEntry {
                name: super::EntryName::blob(&b.digest),
                digest: b.digest.clone(),
                size: b.size,
                role: b.role,
                blob: b.digest.clone(),
                part: None,
            };
            if volume.is_none() || matches!(b.role, Role::Manifest | Role::Index) {
                out.push(whole);
            } else if b.parts.is_empty() {
                if b.volume == volume {
                    out.push(whole);
                }
            } else {
                let count = b.parts.len() as u32;
                for (i, p) in b.parts.iter().enumerate() {
                    if Some(p.volume) == volume {
                        let n = i as u32 + 1;
                        out.push(PlannedEntry {
                            name: super::EntryName::part(&b.digest, n, count),
                            digest: p.digest.clone(),
                            size: p.size,
                            role: b.role,
                            blob: b.digest.clone(),
                            part: Some((n, count)),
                        });
                    }
                }
            }
        }
        out
    }

    /// The volumes holding some of a blob's bytes (empty for base blobs, all for metadata).
    pub fn volumes_of(&self, b: &BlobEntry) -> Vec<u32> {
        let count = self.volume.as_ref().map(|v| v.count).unwrap_or(1);
        if b.base {
            return Vec::new();
        }
        if self.volume.is_none() || matches!(b.role, Role::Manifest | Role::Index) {
            return (1..=count).collect();
        }
        let mut v: Vec<u32> = b.volume.into_iter().collect();
        v.extend(b.parts.iter().map(|p| p.volume));
        v.dedup();
        v
    }

    /// Blobs the archive relies on but does not carry (delta archives).
    pub fn base_blobs(&self) -> impl Iterator<Item = &BlobEntry> {
        self.blobs.iter().filter(|b| b.base)
    }

    /// Looks a blob up in the (sorted) table.
    pub fn blob(&self, digest: &Digest) -> Option<&BlobEntry> {
        self.blobs
            .binary_search_by(|b| b.digest.cmp(digest))
            .ok()
            .map(|i| &self.blobs[i])
    }

    /// The blobs in tar entry order: manifests and indexes, configs, layers; each by digest.
    pub fn blob_order(&self) -> Vec<&BlobEntry> {
        let mut v: Vec<&BlobEntry> = self.blobs.iter().collect();
        v.sort_by(|a, b| (a.role.group(), &a.digest).cmp(&(b.role.group(), &b.digest)));
        v
    }
}

/// Builds the blob table from the manifests a walk found, merging repeats.
#[derive(Debug, Default)]
pub struct BlobTableBuilder {
    blobs: BTreeMap<Digest, (BlobEntry, BTreeSet<Digest>)>,
}

impl BlobTableBuilder {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one blob; `parent` is the manifest naming it (`None` for roots named by index.json).
    pub fn add(
        &mut self,
        desc: &Descriptor,
        role: Role,
        parent: Option<&Digest>,
    ) -> Result<(), ArchiveError> {
        let entry = self.blobs.entry(desc.digest.clone()).or_insert_with(|| {
            (
                BlobEntry {
                    digest: desc.digest.clone(),
                    size: desc.size,
                    media_type: desc.media_type.clone(),
                    role,
                    referenced_by: Vec::new(),
                    volume: None,
                    parts: Vec::new(),
                    base: false,
                },
                BTreeSet::new(),
            )
        });
        if entry.0.size != desc.size {
            return Err(ArchiveError::Invalid {
                name: desc.digest.to_string(),
                reason: format!("named with two sizes: {} and {}", entry.0.size, desc.size),
            });
        }
        entry.0.role = entry.0.role.min(role);
        if let Some(p) = parent {
            entry.1.insert(p.clone());
        }
        Ok(())
    }

    /// Adds a manifest or index itself and every descriptor it contains.
    pub fn add_manifest(&mut self, m: &RawManifest) -> Result<(), ArchiveError> {
        self.add(&m.descriptor(), Role::of_manifest(&m.media_type), None)?;
        for child in m.child_manifests() {
            self.add(child, Role::of_manifest(&child.media_type), Some(&m.digest))?;
        }
        if let crate::oci::Parsed::Image { config, layers } = &m.parsed {
            self.add(config, Role::Config, Some(&m.digest))?;
            for l in layers {
                self.add(l, Role::Layer, Some(&m.digest))?;
            }
        }
        Ok(())
    }

    /// The table, sorted by digest, with `referencedBy` filled in.
    pub fn finish(self) -> Vec<BlobEntry> {
        self.blobs
            .into_values()
            .map(|(mut e, parents)| {
                e.referenced_by = parents.into_iter().collect();
                e
            })
            .collect()
    }
}

/// One `index.json` entry: a manifest and the reference it is known by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// The manifest or index (its `platform` is kept, its annotations replaced).
    pub descriptor: Descriptor,
    /// The value of `org.opencontainers.image.ref.name`.
    pub ref_name: String,
}

/// Canonical `index.json` bytes: entries sorted by (ref.name, digest), exact repeats once.
pub fn oci_index_json(entries: &[IndexEntry]) -> Result<Vec<u8>, ArchiveError> {
    let mut sorted: Vec<&IndexEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| {
        (&a.ref_name, &a.descriptor.digest).cmp(&(&b.ref_name, &b.descriptor.digest))
    });
    sorted.dedup_by(|a, b| a.ref_name == b.ref_name && a.descriptor.digest == b.descriptor.digest);
    let manifests: Vec<Descriptor> = sorted
        .into_iter()
        .map(|e| {
            let mut d = e.descriptor.clone();
            d.annotations = Some(BTreeMap::from([
                (CONTAINERD_NAME.to_owned(), e.ref_name.clone()),
                (REF_NAME.to_owned(), e.ref_name.clone()),
            ]));
            d
        })
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "manifests": manifests,
    });
    canonical_json(&index).map_err(|source| ArchiveError::Json {
        name: super::INDEX_JSON.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_without_whitespace() {
        // Guards against serde_json's `preserve_order` feature being switched on.
        let v = serde_json::json!({"b": 1, "a": {"d": [1, 2], "c": "x\n"}});
        let bytes = canonical_json(&v).unwrap();
        assert_eq!(bytes, br#"{"a":{"c":"x\n","d":[1,2]},"b":1}"#);
    }

    fn sample() -> Manifest {
        let mut m = Manifest::new(1_700_000_000, "airlift test", b"{}");
        let d = Digest::sha256_of(b"x");
        m.blobs.push(BlobEntry {
            digest: d.clone(),
            size: 1,
            media_type: media_type::OCI_LAYER_TAR.into(),
            role: Role::Layer,
            referenced_by: vec![],
            volume: None,
            parts: vec![],
            base: false,
        });
        m
    }

    #[test]
    fn parse_round_trips_and_reports_unknown_fields() {
        let m = sample();
        let bytes = m.to_canonical_bytes().unwrap();
        let p = Manifest::parse(&bytes).unwrap();
        assert_eq!(p.manifest, m);
        assert!(p.unknown_fields.is_empty());
        assert_eq!(m.created, "2023-11-14T22:13:20Z");

        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["future"] = serde_json::json!(true);
        v["blobs"][0]["extra"] = serde_json::json!("y");
        let p = Manifest::parse(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(p.unknown_fields, vec!["/blobs/0/extra", "/future"]);
    }

    #[test]
    fn refuses_other_versions_and_reserved_fields() {
        let bytes = sample().to_canonical_bytes().unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["version"] = serde_json::json!(2);
        let e = Manifest::parse(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(matches!(e, ArchiveError::Unsupported(_)), "{e}");
        // A volume set whose layer has no placement is refused; placed, it parses.
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["volume"] = serde_json::json!({"count": 2, "maxSize": 1048576});
        let e = Manifest::parse(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.to_string().contains("volume"), "{e}");
        v["blobs"][0]["volume"] = serde_json::json!(3);
        assert!(Manifest::parse(&serde_json::to_vec(&v).unwrap()).is_err());
        v["blobs"][0]["volume"] = serde_json::json!(2);
        let p = Manifest::parse(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(p.manifest.entries_for(Some(2)).len(), 1);
        assert!(p.manifest.entries_for(Some(1)).is_empty());
        // A base blob without `base` is refused.
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["blobs"][0]["base"] = serde_json::json!(true);
        assert!(Manifest::parse(&serde_json::to_vec(&v).unwrap()).is_err());
    }
}
