//! Relocation inside one registry: the corpus's outer bundle copied from repository A to a new
//! repository B of the *same* TLS registry, where every blob can be mounted
//! (`POST /v2/B/blobs/uploads/?mount=DIGEST&from=A`) instead of uploaded.
//!
//! Why the registry's access log: a client's own byte counters (`/proc/PID/io`) are gone once
//! it is reaped, and they would count TLS and manifests too. The registry logs every request;
//! a blob that is uploaded ends with a `PUT …/blobs/uploads/…?digest=sha256:…` answered 201,
//! a mounted one with a `POST …?mount=…` answered 201. The bytes uploaded are the sizes (from
//! the registry's own storage) of the blobs completed by PUT, split into blobs the registry
//! already held before the relocations began and belong to the corpus (its layers, configs and
//! bundle layers: these could have been mounted, so the target is 0) and blobs a tool made up
//! on the way (imgpkg's image-locations image, airlift's provenance and relocations images).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;
use std::thread::sleep;
use std::time::Duration;

use crate::corpus::storage_blobs;
use crate::proc::{Registry, Sample, run, run_soft, sync_fs};
use crate::report::Third;
use crate::{Ctx, Root};

/// What one client run asked the registry to do with blobs and manifests.
#[derive(Clone, Copy, Debug, Default)]
pub struct Uploads {
    /// Requests to `/v2/` in all.
    pub requests: usize,
    /// `POST …?mount=` answered 201 Created: the blob was linked, no bytes moved.
    pub mounted: usize,
    /// `POST …?mount=` answered otherwise (202: an upload session instead).
    pub mount_missed: usize,
    /// Blob uploads completed (`PUT …/blobs/uploads/…` answered 201).
    pub blob_puts: usize,
    /// `PATCH` requests (chunks of blob uploads).
    pub patches: usize,
    /// Bytes of the blobs completed by PUT that the registry already held (could be mounted).
    pub bytes: u64,
    /// Blobs completed by PUT that the registry did not hold before (made by the tool).
    pub new_blobs: usize,
    /// Their bytes.
    pub new_bytes: u64,
    /// `PUT …/manifests/…` requests.
    pub manifest_puts: usize,
}

/// Counts the access-log lines in `text` (combined log format:
/// `IP - user [date] "METHOD TARGET HTTP/x" STATUS SIZE "referer" "agent"`). `sizes` are the
/// registry's blobs now, `held` those it had before any relocation. Also returns one line per
/// uploaded blob (digest, size, held before or new), for the run's log.
pub fn count_uploads(
    text: &str,
    sizes: &HashMap<String, u64>,
    held: &HashSet<String>,
) -> (Uploads, String) {
    let mut u = Uploads::default();
    let mut listing = String::new();
    for line in text.lines() {
        let Some((_, rest)) = line.split_once('"') else {
            continue;
        };
        let Some((req, after)) = rest.split_once('"') else {
            continue;
        };
        let mut parts = req.split_whitespace();
        let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
            continue;
        };
        if !target.starts_with("/v2/") {
            continue;
        }
        let status: u16 = after
            .split_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        u.requests += 1;
        let upload = target.contains("/blobs/uploads/");
        match method {
            "POST" if upload && target.contains("mount=") => {
                if status == 201 {
                    u.mounted += 1;
                } else {
                    u.mount_missed += 1;
                }
            }
            "PATCH" if upload => u.patches += 1,
            "PUT" if upload && status == 201 => {
                u.blob_puts += 1;
                let hex = query_digest(target).unwrap_or_default();
                let size = sizes.get(&hex).copied().unwrap_or(0);
                let old = held.contains(&hex);
                if old {
                    u.bytes += size;
                } else {
                    u.new_blobs += 1;
                    u.new_bytes += size;
                }
                listing.push_str(&format!(
                    "uploaded sha256:{hex} {size} bytes ({})\n",
                    if old {
                        "held before: could be mounted"
                    } else {
                        "new"
                    }
                ));
            }
            "PUT" if target.contains("/manifests/") => u.manifest_puts += 1,
            _ => {}
        }
    }
    (u, listing)
}

/// The hex of the `digest=sha256:…` query parameter (URL-encoded or not).
fn query_digest(target: &str) -> Option<String> {
    let query = target.split_once('?')?.1;
    let v = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("digest="))?
        .replace("%3A", ":")
        .replace("%3a", ":");
    v.strip_prefix("sha256:").map(str::to_string)
}

/// Each tool's runs: wall/CPU/RSS and what the registry saw.
pub struct Reloc {
    /// `airlift copy -b A@outer --to-repo B`.
    pub airlift: Vec<(Sample, Uploads)>,
    /// `skopeo copy --all --preserve-digests A@digest B:name` for every image and bundle.
    pub skopeo: Vec<(Sample, Uploads)>,
    /// `imgpkg copy -b A@outer --to-repo B`.
    pub imgpkg: Third<(Sample, Uploads)>,
}

/// Blob sizes by hex in the registry storage under `dir`.
fn sizes(dir: &Path) -> HashMap<String, u64> {
    storage_blobs(&dir.join("storage"))
        .into_iter()
        .map(|b| (b.hex, b.size))
        .collect()
}

/// Runs `f` and counts the registry-log lines it caused; the uploaded blobs are appended to
/// the tool's log `log`.
fn counted(
    ctx: &Ctx,
    dir: &Path,
    held: &HashSet<String>,
    log: &str,
    f: impl FnOnce() -> Option<Sample>,
) -> Option<(Sample, Uploads)> {
    let reg_log = dir.join("registry.log");
    let before = fs::metadata(&reg_log).map(|m| m.len()).unwrap_or(0) as usize;
    let s = f()?;
    // The registry writes a request's log line after the response; let the last ones land.
    sleep(Duration::from_millis(200));
    let text = fs::read(&reg_log).unwrap_or_default();
    let text = String::from_utf8_lossy(text.get(before..).unwrap_or_default());
    let (u, listing) = count_uploads(&text, &sizes(dir), held);
    if let Ok(mut f) = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(ctx.log(log))
    {
        use std::io::Write;
        let _ = write!(f, "--- registry saw: {u:?}\n{listing}");
    }
    Some((s, u))
}

/// Imports `archive` (untimed) into `reloc/a` of one TLS registry with its access log on, then
/// alternates the three tools copying `outer` (and, for skopeo, every root and bundle one by
/// one) from `reloc/a` to a new repository per run.
pub fn run_all(
    ctx: &Ctx,
    archive: &Path,
    roots: &[Root],
    outer: &Root,
    corpus_dir: &Path,
) -> Reloc {
    let dir = ctx.work.join("reloc-registry");
    let _ = fs::remove_dir_all(&dir);
    let reg = Registry::start_logged(&dir, Some(&ctx.tls));
    let host = reg.host();
    let mut cmd = ctx.airlift_cmd();
    cmd.arg("import")
        .arg(archive)
        .arg("--to-repo")
        .arg(format!("{host}/reloc/a"))
        .arg("--trust")
        .arg(&ctx.pubkey)
        .args(ctx.tls_args())
        .arg("-q");
    run(&mut cmd, &ctx.log("reloc-seed-import"));
    // Only the corpus's own blobs (layers, configs, bundle layers) count as movable by mount;
    // the small metadata images a tool writes for the destination are counted as new.
    let corpus: HashSet<String> = sizes(corpus_dir).into_keys().collect();
    let held: HashSet<String> = sizes(&dir)
        .into_keys()
        .filter(|h| corpus.contains(h))
        .collect();
    let digest = |r: &Root| {
        r.digest_ref
            .split_once('@')
            .map(|(_, d)| d.to_string())
            .unwrap_or_default()
    };
    let src_bundle = format!("{host}/reloc/a@{}", digest(outer));
    let mut rel = Reloc {
        airlift: Vec::new(),
        skopeo: Vec::new(),
        imgpkg: if ctx.imgpkg.is_some() {
            Third::Runs(Vec::new())
        } else {
            Third::Missing
        },
    };
    for r in 0..ctx.rounds {
        let a = counted(ctx, &dir, &held, "reloc-airlift", || {
            sync_fs(&ctx.work);
            let mut cmd = ctx.airlift_cmd();
            cmd.args(["copy", "-b", &src_bundle, "--to-repo"])
                .arg(format!("{host}/reloc/b-airlift-{r}"))
                .args(ctx.tls_args())
                .arg("-q");
            Some(run(&mut cmd, &ctx.log("reloc-airlift")))
        });
        let b = counted(ctx, &dir, &held, "reloc-skopeo", || {
            crate::delete_skopeo_cache();
            sync_fs(&ctx.work);
            let mut total = Sample::default();
            for root in roots {
                let mut cmd = ctx.skopeo_cmd();
                cmd.args(["copy", "--all", "--preserve-digests", "--quiet"])
                    .arg("--src-cert-dir")
                    .arg(&ctx.tls.ca_dir)
                    .arg("--src-creds")
                    .arg(ctx.creds())
                    .arg("--dest-cert-dir")
                    .arg(&ctx.tls.ca_dir)
                    .arg("--dest-creds")
                    .arg(ctx.creds())
                    .arg(format!("docker://{host}/reloc/a@{}", digest(root)))
                    .arg(format!("docker://{host}/reloc/b-skopeo-{r}:{}", root.name));
                total = total.then(run(&mut cmd, &ctx.log("reloc-skopeo")));
            }
            Some(total)
        });
        let (a, b) = (a.unwrap_or_default(), b.unwrap_or_default());
        eprintln!(
            "relocation round {r}: airlift {:.2}s, {} mounted, {} bytes uploaded; skopeo {:.2}s, {} mounted, {} bytes uploaded",
            a.0.wall, a.1.mounted, a.1.bytes, b.0.wall, b.1.mounted, b.1.bytes
        );
        rel.airlift.push(a);
        rel.skopeo.push(b);
        if let Third::Runs(v) = &mut rel.imgpkg {
            let c = counted(ctx, &dir, &held, "reloc-imgpkg", || {
                let mut cmd = ctx.imgpkg_cmd()?;
                sync_fs(&ctx.work);
                cmd.args(["copy", "-b", &src_bundle, "--to-repo"])
                    .arg(format!("{host}/reloc/b-imgpkg-{r}"))
                    .args(crate::imgpkg::tls_args(&ctx.tls));
                run_soft(&mut cmd, &ctx.log("reloc-imgpkg"))
            });
            match c {
                Some(c) => {
                    eprintln!(
                        "relocation round {r}: imgpkg {:.2}s, {} mounted, {} bytes uploaded",
                        c.0.wall, c.1.mounted, c.1.bytes
                    );
                    v.push(c);
                }
                None => rel.imgpkg = Third::Failed("failed (logs/reloc-imgpkg.log)".into()),
            }
        }
    }
    drop(reg);
    if std::env::var_os("BENCH_KEEP").is_none() {
        let _ = fs::remove_dir_all(&dir);
    }
    rel
}
