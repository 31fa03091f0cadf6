//! Packing a blob table into volumes of at most a given size, before anything is written.
//!
//! The signed manifest says which blob (or blob part) lives in which volume, so the plan is
//! made from sizes alone: next-fit in entry order, counting every tar header, padding, the
//! leading entries repeated in each volume, the manifest and index blobs (also in each volume)
//! and the end-of-archive trailer. Only a config or layer larger than a whole volume is split.

use super::ArchiveError;
use super::manifest::{BlobPart, Manifest, Role, VolumeSet};
use super::tar::padding;
use crate::digest::Digest;

/// `fat32`: the largest file a FAT32 file system holds.
pub const FAT32_MAX: u64 = 4_294_967_295;

/// Parses a volume size: bytes, or a number with a unit (`KB`, `MB`, `GB`, `KiB`, `MiB`,
/// `GiB`, `TB`, `TiB`, `B`), or `fat32`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("fat32") {
        return Ok(FAT32_MAX);
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?}: expected a number of bytes, e.g. 4GiB, 700MB or fat32"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        "ti" | "tib" => 1 << 40,
        other => return Err(format!("{text:?}: unknown unit {other:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{text:?}: too large"))
}

fn entry_cost(size: u64) -> u64 {
    512 + size + padding(size)
}

/// A placeholder part digest, replaced once the parts are hashed (same text length).
fn placeholder() -> Digest {
    Digest::sha256_of(b"airlift part placeholder")
}

/// Places every carried config and layer of `manifest` into volumes of at most `max_size`
/// bytes, with `signatures` signature entries and `index_len` bytes of `index.json`.
/// Split blobs get parts with placeholder digests: fill them in with [`set_part_digests`].
pub fn plan_volumes(
    manifest: &mut Manifest,
    max_size: u64,
    signatures: usize,
    index_len: u64,
) -> Result<(), ArchiveError> {
    let mut reserve = 0u64;
    for _ in 0..16 {
        place(manifest, max_size, signatures, index_len, reserve)?;
        let len = manifest.to_canonical_bytes()?.len() as u64;
        let needed = entry_cost(len);
        if needed <= reserve {
            return Ok(());
        }
        reserve = needed;
    }
    Err(ArchiveError::Usage(
        "volume plan did not settle; choose another --volume-size".into(),
    ))
}

fn place(
    manifest: &mut Manifest,
    max_size: u64,
    signatures: usize,
    index_len: u64,
    manifest_cost: u64,
) -> Result<(), ArchiveError> {
    let metadata: u64 = manifest
        .blobs
        .iter()
        .filter(|b| matches!(b.role, Role::Manifest | Role::Index))
        .map(|b| entry_cost(b.size))
        .sum();
    // oci-layout, manifest, signatures, index.json, volume.json, metadata blobs, trailer.
    let fixed = 1024
        + manifest_cost
        + 1024 * signatures as u64
        + entry_cost(index_len)
        + 1024
        + metadata
        + 1024;
    let cap = max_size.saturating_sub(fixed);
    if cap < 2048 {
        return Err(ArchiveError::Usage(format!(
            "--volume-size {max_size} is too small: every volume repeats {fixed} bytes of header, \
             manifests and indexes; use at least {}",
            fixed + 2048
        )));
    }
    let mut order: Vec<usize> = (0..manifest.blobs.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (&manifest.blobs[a], &manifest.blobs[b]);
        (x.role.group(), &x.digest).cmp(&(y.role.group(), &y.digest))
    });
    let (mut vol, mut used) = (1u32, 0u64);
    for i in order {
        let b = &mut manifest.blobs[i];
        b.volume = None;
        b.parts.clear();
        if b.base || matches!(b.role, Role::Manifest | Role::Index) {
            continue;
        }
        let cost = entry_cost(b.size);
        if cost <= cap - used {
            b.volume = Some(vol);
            used += cost;
            continue;
        }
        if cost <= cap {
            vol += 1;
            b.volume = Some(vol);
            used = cost;
            continue;
        }
        let mut remaining = b.size;
        loop {
            let room = cap - used;
            if entry_cost(remaining) <= room {
                b.parts.push(BlobPart {
                    digest: placeholder(),
                    size: remaining,
                    volume: vol,
                });
                used += entry_cost(remaining);
                break;
            }
            if room >= 1024 {
                let size = (room - 512) / 512 * 512;
                b.parts.push(BlobPart {
                    digest: placeholder(),
                    size,
                    volume: vol,
                });
                remaining -= size;
            }
            vol += 1;
            used = 0;
        }
        if b.parts.len() > 9999 {
            return Err(ArchiveError::Usage(format!(
                "blob {} would need more than 9999 parts; use a larger --volume-size",
                b.digest
            )));
        }
    }
    manifest.volume = Some(VolumeSet {
        count: vol,
        max_size,
    });
    Ok(())
}

/// Sets the digests of a split blob's parts (in part order).
pub fn set_part_digests(
    manifest: &mut Manifest,
    blob: &Digest,
    digests: Vec<Digest>,
) -> Result<(), ArchiveError> {
    let Some(b) = manifest.blobs.iter_mut().find(|b| &b.digest == blob) else {
        return Err(ArchiveError::Usage(format!("blob {blob} is not planned")));
    };
    if b.parts.len() != digests.len() {
        return Err(ArchiveError::Usage(format!(
            "blob {blob}: {} parts planned, {} digests given",
            b.parts.len(),
            digests.len()
        )));
    }
    for (p, d) in b.parts.iter_mut().zip(digests) {
        p.digest = d;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::manifest::BlobEntry;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("fat32"), Ok(4_294_967_295));
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("700MB"), Ok(700_000_000));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert!(parse_size("12 parsecs").is_err());
    }

    #[test]
    fn every_volume_fits_and_big_blobs_split() {
        let mut m = Manifest::new(0, "t", b"{}");
        for (i, size) in [3u64 << 20, 100_000, 700_000, 5].iter().enumerate() {
            m.blobs.push(BlobEntry {
                digest: Digest::sha256_of(&[i as u8]),
                size: *size,
                media_type: "x".into(),
                role: Role::Layer,
                referenced_by: vec![],
                volume: None,
                parts: vec![],
                base: false,
            });
        }
        m.blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
        plan_volumes(&mut m, 1 << 20, 1, 2).unwrap();
        let count = m.volume.as_ref().unwrap().count;
        let lead = 1024
            + entry_cost(m.to_canonical_bytes().unwrap().len() as u64)
            + 1024
            + entry_cost(2)
            + 1024
            + 1024;
        for v in 1..=count {
            let used: u64 = m
                .entries_for(Some(v))
                .iter()
                .map(|e| entry_cost(e.size))
                .sum();
            assert!(lead + used <= 1 << 20, "volume {v}: {}", lead + used);
        }
        let big = m.blobs.iter().find(|b| b.size == 3 << 20).unwrap();
        assert!(big.parts.len() >= 3);
        assert!(
            m.blobs
                .iter()
                .filter(|b| b.size < 1 << 20)
                .all(|b| b.volume.is_some())
        );
    }
}
