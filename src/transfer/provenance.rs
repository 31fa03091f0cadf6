//! Which archive set each tag, recorded at the destination next to the tags it describes, so
//! that no importing host in the air gap moves a tag back to an older release.
//!
//! The record is a small image tagged [`PROVENANCE_TAG`] in each repository that receives
//! tags, holding one JSON file (`format-spec/provenance.md`). Before anything is pushed,
//! import reads it and refuses to move a tag to the content of an archive older than the one
//! that set it (by `sequence` when both archives have one, else by `created`); after the tags
//! are set it writes the record anew.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::TransferError;
use super::relocate::image_of;
use crate::author::bundle::{single_file_layer_tar, small_image};
use crate::author::extract::file_from_gzip_layer;
use crate::digest::Digest;
use crate::reference::Reference;
use crate::registry::{Registries, RegistryError};
use crate::store::place::Placement;
use crate::store::registry::push_image;

/// Tag of the record in each repository.
pub const PROVENANCE_TAG: &str = "airlift-tag-provenance";
/// The file inside the record's one layer.
pub const PROVENANCE_FILE: &str = "tag-provenance.json";
/// `format` of the record.
pub const PROVENANCE_FORMAT: &str = "airlift-tag-provenance";
/// Largest record read back.
const MAX_RECORD: u64 = 4 << 20;

/// The archive that set one tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagOrigin {
    /// The manifest the tag was set to.
    pub digest: Digest,
    /// sha256 of the archive's airlift manifest.
    pub archive: Digest,
    /// The archive's `created`.
    pub created: String,
    /// The archive's `sequence`, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    /// The archive's file name (informational).
    pub file: String,
}

/// One repository's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Always [`PROVENANCE_FORMAT`].
    pub format: String,
    /// 1.
    pub version: u64,
    /// Tag → the archive that set it.
    pub tags: BTreeMap<String, TagOrigin>,
}

impl Default for Record {
    fn default() -> Self {
        Record {
            format: PROVENANCE_FORMAT.into(),
            version: 1,
            tags: BTreeMap::new(),
        }
    }
}

/// The archive being imported, as the record will name it.
#[derive(Debug, Clone)]
pub struct Release {
    /// sha256 of its airlift manifest.
    pub archive: Digest,
    /// Its `created`.
    pub created: String,
    /// Its `sequence`.
    pub sequence: Option<u64>,
    /// Its file name.
    pub file: String,
}

impl Release {
    /// Whether this release is older than the one that set a tag.
    fn older_than(&self, o: &TagOrigin) -> bool {
        crate::archive::manifest::is_older((self.sequence, &self.created), (o.sequence, &o.created))
    }

    fn describe(&self) -> String {
        describe(&self.file, &self.archive, &self.created, self.sequence)
    }

    fn origin(&self, digest: &Digest) -> TagOrigin {
        TagOrigin {
            digest: digest.clone(),
            archive: self.archive.clone(),
            created: self.created.clone(),
            sequence: self.sequence,
            file: self.file.clone(),
        }
    }
}

fn describe(file: &str, archive: &Digest, created: &str, sequence: Option<u64>) -> String {
    let seq = sequence
        .map(|s| format!(", sequence {s}"))
        .unwrap_or_default();
    format!("{file} (manifest {archive}, created {created}{seq})")
}

/// Tags a release moves, by repository: content-addressed tags (`sha256-…`) never move and
/// are left out.
fn moving_tags(placement: &Placement) -> BTreeMap<&str, Vec<(&str, &Digest)>> {
    let mut out: BTreeMap<&str, Vec<(&str, &Digest)>> = BTreeMap::new();
    for (repo, tag, d) in &placement.tags {
        if !tag.starts_with("sha256-") {
            out.entry(repo.as_str())
                .or_default()
                .push((tag.as_str(), d));
        }
    }
    out
}

/// Reads each repository's record and refuses a rollback (unless `allow_downgrade`, when
/// the rollbacks are returned as warnings); returns the records to update after the import.
pub async fn check(
    registries: &Registries,
    placement: &Placement,
    release: &Release,
    allow_downgrade: bool,
) -> Result<(BTreeMap<String, Record>, Vec<String>), TransferError> {
    let mut records = BTreeMap::new();
    let mut rollbacks = Vec::new();
    for (repo, tags) in moving_tags(placement) {
        let record = read(registries, repo).await?.unwrap_or_default();
        for (tag, digest) in tags {
            if let Some(o) = record.tags.get(tag)
                && &o.digest != digest
                && release.older_than(o)
            {
                rollbacks.push(format!(
                    "{repo}:{tag} was set to {} by {}; this archive, {}, is older and would move it back to {digest}",
                    o.digest,
                    describe(&o.file, &o.archive, &o.created, o.sequence),
                    release.describe()
                ));
            }
        }
        records.insert(repo.to_owned(), record);
    }
    if !rollbacks.is_empty() && !allow_downgrade {
        return Err(TransferError::Verification(format!(
            "refusing a rollback: {}; nothing was pushed (pass --allow-downgrade to roll back on purpose)",
            rollbacks.join("; ")
        )));
    }
    Ok((records, rollbacks))
}

/// Writes each repository's record with the tags this release set.
pub async fn record(
    registries: &Registries,
    placement: &Placement,
    release: &Release,
    mut records: BTreeMap<String, Record>,
) -> Result<(), TransferError> {
    for (repo, tags) in moving_tags(placement) {
        let record = records.entry(repo.to_owned()).or_default();
        for (tag, digest) in tags {
            record.tags.insert(tag.to_owned(), release.origin(digest));
        }
        write(registries, repo, record).await?;
    }
    Ok(())
}

fn at(repo: &str, suffix: &str) -> Result<Reference, TransferError> {
    Reference::parse(&format!("{repo}{suffix}"))
        .map_err(|e| TransferError::Usage(format!("destination {repo}: {e}")))
}

async fn read(registries: &Registries, repo: &str) -> Result<Option<Record>, TransferError> {
    let tagged = at(repo, &format!(":{PROVENANCE_TAG}"))?;
    let client = registries.client(tagged.registry()).await?;
    let manifest = match client.get_manifest(&tagged).await {
        Ok(m) => m,
        Err(RegistryError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let bad = |why: String| {
        TransferError::Verification(format!(
            "{tagged}: the tag provenance record is unreadable ({why}); refusing to guess which \
             release set the tags: inspect it, or delete the tag {PROVENANCE_TAG} to start a new \
             record"
        ))
    };
    let blobs = manifest.blobs();
    let [_, layer] = blobs.as_slice() else {
        return Err(bad("not a one-layer image".into()));
    };
    let gz = client.read_small_blob(&tagged, layer, MAX_RECORD).await?;
    let bytes =
        file_from_gzip_layer(&gz, PROVENANCE_FILE, MAX_RECORD).map_err(|e| bad(e.to_string()))?;
    let record: Record = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    if record.format != PROVENANCE_FORMAT || record.version != 1 {
        return Err(bad(format!(
            "format {} version {}",
            record.format, record.version
        )));
    }
    Ok(Some(record))
}

async fn write(registries: &Registries, repo: &str, record: &Record) -> Result<(), TransferError> {
    let json = serde_json::to_vec_pretty(record)
        .map_err(|e| TransferError::Usage(format!("tag provenance record: {e}")))?;
    let image = image_of(
        repo,
        small_image(&single_file_layer_tar(PROVENANCE_FILE, &json)?)?,
    )?;
    push_image(registries, &image).await?;
    let tagged = at(repo, &format!(":{PROVENANCE_TAG}"))?;
    let client = registries.client(tagged.registry()).await?;
    client.put_manifest(&tagged, &image.manifest).await?;
    Ok(())
}
