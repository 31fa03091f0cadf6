//! Machine limits measured in the same run, medians, pairwise ratios, targets, markdown.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use sha2::{Digest as _, Sha256};

use crate::corpus::Rng;
use crate::proc::{Sample, die, output};
use crate::{CorpusRun, Ctx};

const MB: f64 = 1e6;
const MIB: f64 = 1048576.0;

/// What this machine can do at best, measured in this run (bytes/s).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Sequential write of random data followed by fdatasync.
    pub disk_write: f64,
    /// sha256 (Rust `sha2`, SHA-NI where the CPU has it) on one core.
    pub sha256_one: f64,
    /// The same on two threads together.
    pub sha256_two: f64,
}

/// Median of a non-empty list (0 for an empty one).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Sequential write of `size` bytes of random data to a new file in `work`, then fdatasync:
/// bytes per second for the whole (write + flush), which is what an export must also pay.
pub fn disk_probe(work: &Path, size: u64) -> f64 {
    let mut buf = vec![0u8; 4 << 20];
    Rng::new(42).fill(&mut buf);
    let path = work.join("disk-probe");
    crate::proc::sync_fs(work);
    let t = Instant::now();
    let mut f = File::create(&path).unwrap_or_else(|e| die(&format!("disk probe: {e}")));
    let mut left = size;
    let mut round = 0u64;
    while left > 0 {
        // A different first word per piece, so no layer below can deduplicate the pieces.
        buf[..8].copy_from_slice(&round.to_le_bytes());
        round += 1;
        let n = (buf.len() as u64).min(left) as usize;
        f.write_all(&buf[..n])
            .unwrap_or_else(|e| die(&format!("disk probe: {e}")));
        left -= n as u64;
    }
    f.sync_data()
        .unwrap_or_else(|e| die(&format!("fdatasync: {e}")));
    let rate = size as f64 / t.elapsed().as_secs_f64();
    drop(f);
    let _ = fs::remove_file(&path);
    rate
}

/// sha256 (Rust `sha2`) of 512 MiB per thread on `threads` threads: bytes per second in total.
pub fn sha_probe(threads: usize) -> f64 {
    let mut buf = vec![0u8; 4 << 20];
    Rng::new(7).fill(&mut buf);
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut h = Sha256::new();
                for _ in 0..128 {
                    h.update(&buf);
                }
                std::hint::black_box(h.finalize());
            });
        }
    });
    (threads * 128 * buf.len()) as f64 / t.elapsed().as_secs_f64()
}

/// The verify row over equal blobs: what hashing two blobs at once gives where no one blob
/// dominates (the whole corpus is 83% one blob, which one core must hash alone).
pub const VERIFY_WIDE: &str = "verify (8 × 128 MiB layers)";

/// The short name of a row's second tool, for the speed-up column.
fn baseline(other: &str) -> &'static str {
    if other.starts_with("sha256sum") {
        "sha256sum"
    } else if other.contains("docker-registry") {
        "docker-registry"
    } else {
        "skopeo"
    }
}

/// Measures the disk (1 GiB of random data + fdatasync, median of 3) and sha256 rates.
pub fn measure_limits(work: &Path) -> Limits {
    let disk: Vec<f64> = (0..3).map(|_| disk_probe(work, 1 << 30)).collect();
    let one: Vec<f64> = (0..3).map(|_| sha_probe(1)).collect();
    let two: Vec<f64> = (0..3).map(|_| sha_probe(2)).collect();
    Limits {
        disk_write: median(&disk),
        sha256_one: median(&one),
        sha256_two: median(&two),
    }
}

/// The third tool's (imgpkg's) column of a comparison.
#[derive(Clone, Debug)]
pub enum Third<T = Sample> {
    /// No imgpkg equivalent of this step: no row.
    Skip,
    /// imgpkg is not installed: the row says so.
    Missing,
    /// A run failed (the text says which): the row says so.
    Failed(String),
    /// One sample per round.
    Runs(Vec<T>),
}

impl<T> Third<T> {
    /// Why there are no numbers, for a table cell.
    pub fn absent(&self) -> &str {
        match self {
            Third::Skip => "no equivalent",
            Third::Missing => "not installed",
            Third::Failed(why) => why,
            Third::Runs(_) => "",
        }
    }
}

/// airlift (A) against another tool (B), and imgpkg (C) where it has an equivalent, on the
/// same bytes, round by round.
pub struct Comparison {
    /// What was measured.
    pub name: String,
    /// The other tool's command, in words.
    pub other: String,
    /// Unique bytes moved (throughput = bytes / wall).
    pub bytes: u64,
    /// airlift's samples, one per round.
    pub a: Vec<Sample>,
    /// The other tool's samples.
    pub b: Vec<Sample>,
    /// Anything the numbers need to be read correctly.
    pub note: String,
    /// A machine limit (bytes/s) measured just before each round, for fractions of it that do
    /// not drift with the machine's load.
    pub limit: Vec<f64>,
    /// imgpkg's command, in words.
    pub c_name: String,
    /// imgpkg's samples (or why there are none).
    pub c: Third,
}

impl Comparison {
    /// Bundles one comparison's samples.
    pub fn new(
        name: &str,
        other: &str,
        bytes: u64,
        a: Vec<Sample>,
        b: Vec<Sample>,
        note: String,
    ) -> Comparison {
        Comparison {
            name: name.into(),
            other: other.into(),
            bytes,
            a,
            b,
            note,
            limit: Vec::new(),
            c_name: "imgpkg".into(),
            c: Third::Skip,
        }
    }

    /// Attaches imgpkg's column.
    pub fn with_third(mut self, name: &str, c: Third) -> Comparison {
        self.c_name = name.into();
        self.c = c;
        self
    }

    /// Like [`Comparison::speedup`] against imgpkg; `None` without imgpkg samples.
    pub fn speedup_c(&self) -> Option<f64> {
        let Third::Runs(c) = &self.c else {
            return None;
        };
        if c.len() != self.a.len() {
            return None;
        }
        Some(pairwise(&self.a, c))
    }

    /// Attaches the per-round limit measurements.
    pub fn with_limit(mut self, limit: Vec<f64>) -> Comparison {
        self.limit = limit;
        self
    }

    /// Median over rounds of airlift's throughput / the limit measured just before that round.
    pub fn fraction_of_limit(&self) -> f64 {
        let r: Vec<f64> = self
            .a
            .iter()
            .zip(&self.limit)
            .map(|(a, l)| self.bytes as f64 / a.wall / l)
            .collect();
        median(&r)
    }

    /// Median of `other wall / airlift wall`, computed pair by pair (round by round), so that
    /// machine noise that hits both runs of a round cancels out.
    pub fn speedup(&self) -> f64 {
        pairwise(&self.a, &self.b)
    }

    /// airlift's median throughput in bytes/s.
    pub fn rate_a(&self) -> f64 {
        self.bytes as f64 / med(&self.a, |s| s.wall)
    }

    /// airlift's peak RSS over all rounds, MiB.
    pub fn rss_a(&self) -> f64 {
        self.a.iter().map(|s| s.rss_kib).max().unwrap_or(0) as f64 / 1024.0
    }
}

/// Median over rounds of `b wall / a wall`.
fn pairwise(a: &[Sample], b: &[Sample]) -> f64 {
    let r: Vec<f64> = a.iter().zip(b).map(|(a, b)| b.wall / a.wall).collect();
    median(&r)
}

fn med(v: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    median(&v.iter().map(f).collect::<Vec<_>>())
}

fn row(out: &mut String, step: &str, tool: &str, bytes: u64, v: &[Sample], ratio: &str) {
    let wall = med(v, |s| s.wall);
    let walls: Vec<String> = v.iter().map(|s| format!("{:.2}", s.wall)).collect();
    let cpu = med(v, |s| s.cpu);
    out.push_str(&format!(
        "| {step} | {tool} | {wall:.2} ({}) | {:.0} | {cpu:.2} | {:.0} | {:.1} | {ratio} |\n",
        walls.join(", "),
        bytes as f64 / wall / MB,
        bytes as f64 / cpu / MB,
        v.iter().map(|s| s.rss_kib).max().unwrap_or(0) as f64 / 1024.0,
    ));
}

/// `/proc/loadavg`'s three averages: other work on the machine shows in wall times.
pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Describes the machine and the tool versions.
fn machine(ctx: &Ctx) -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or("");
    let sha_ni = if flags.split_whitespace().any(|f| f == "sha_ni") {
        "with SHA-NI"
    } else {
        "without SHA-NI"
    };
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .map(|k| format!("{:.1} GiB", k / MIB))
        .unwrap_or_default();
    let work = ctx.work.to_string_lossy().into_owned();
    let disk = output("findmnt", &["-no", "SOURCE,FSTYPE", "-T", &work]);
    let airlift = ctx.airlift.to_string_lossy().into_owned();
    let rev = output("git", &["rev-parse", "--short", "HEAD"]);
    let dirty = if output("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        ""
    } else {
        " (with uncommitted changes)"
    };
    format!(
        "- CPU: {model}, {cores} cores {sha_ni}; memory {mem}\n\
         - Kernel: {}; work dir on {disk}\n\
         - airlift {} (commit {rev}{dirty}); {}; docker-registry {}\n\
         - Date: {}; load average (1/5/15 min) at start {}, at end {}\n",
        output("uname", &["-sr"]),
        output(&airlift, &["--version"]),
        output("skopeo", &["--version"]),
        output("dpkg-query", &["-W", "-f=${Version}", "docker-registry"]),
        output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        ctx.load_at_start,
        loadavg(),
    )
}

fn limits_md(l: &Limits, ingest: &[f64]) -> String {
    let mut s = format!(
        "| limit | MB/s |\n|---|---|\n\
         | disk: sequential write of random data + fdatasync (1 GiB, median of 3) | {:.0} |\n\
         | sha256, one core (Rust `sha2`) | {:.0} |\n\
         | sha256, two threads | {:.0} |\n",
        l.disk_write / MB,
        l.sha256_one / MB,
        l.sha256_two / MB
    );
    if !ingest.is_empty() {
        let each: Vec<String> = ingest.iter().map(|r| format!("{:.0}", r / MB)).collect();
        s.push_str(&format!(
            "| registry ingest: the unique blobs uploaded by curl, {} at a time, into a fresh TLS + \
             basic-auth docker-registry (median of the import rounds: {}) | {:.0} |\n",
            crate::ceiling::WORKERS,
            each.join(", "),
            median(ingest) / MB
        ));
    }
    s
}

/// A target row: `ok` is `None` when it cannot be judged (imgpkg missing).
fn target(s: &mut String, name: &str, measured: String, ok: Option<bool>) {
    let verdict = match ok {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "n/a",
    };
    s.push_str(&format!("| {name} | {measured} | {verdict} |\n"));
}

/// Targets "≥ `goal`× the other tool" against skopeo and imgpkg.
fn speedup_targets(s: &mut String, c: &Comparison, step: &str, goal: f64) {
    let sp = c.speedup();
    target(
        s,
        &format!("{step} ≥ {goal}× skopeo"),
        format!("{sp:.2}×"),
        Some(sp >= goal),
    );
    match c.speedup_c() {
        Some(sp) => target(
            s,
            &format!("{step} ≥ {goal}× imgpkg"),
            format!("{sp:.2}×"),
            Some(sp >= goal),
        ),
        None => target(
            s,
            &format!("{step} ≥ {goal}× imgpkg"),
            format!("imgpkg {}", c.c.absent()),
            None,
        ),
    }
}

/// MB/s = bytes / median wall, the walls of each round and the median per-round ratio.
fn reloc_row(s: &mut String, tool: &str, runs: &[(Sample, crate::reloc::Uploads)], a: &[Sample]) {
    let v: Vec<Sample> = runs.iter().map(|r| r.0).collect();
    let walls: Vec<String> = v.iter().map(|x| format!("{:.2}", x.wall)).collect();
    let max =
        |f: fn(&crate::reloc::Uploads) -> u64| runs.iter().map(|r| f(&r.1)).max().unwrap_or(0);
    let ratio = if tool == "airlift" || v.len() != a.len() {
        String::new()
    } else {
        format!("{:.2}×", pairwise(a, &v))
    };
    s.push_str(&format!(
        "| {tool} | {:.2} ({}) | {} | {} | {} | {} | {} | {} / {} | {} | {ratio} |\n",
        med(&v, |x| x.wall),
        walls.join(", "),
        max(|u| u.mounted as u64),
        max(|u| u.mount_missed as u64),
        max(|u| u.blob_puts as u64),
        max(|u| u.patches as u64),
        max(|u| u.bytes),
        max(|u| u.new_blobs as u64),
        max(|u| u.new_bytes),
        max(|u| u.manifest_puts as u64),
    ));
}

/// The results document of the corpus mode.
pub fn markdown(ctx: &Ctx, r: &CorpusRun) -> String {
    let mut s = String::from("# airlift benchmark results\n\n");
    s.push_str(
        "Written by `make bench` (`bench/src/main.rs`); see `bench/README.md` for method and analysis.\n\n## Machine\n\n",
    );
    s.push_str(&machine(ctx));
    s.push_str(&format!(
        "\n## Corpus\n\nBENCH_SCALE={}: {} unique blobs, {:.1} MB unique bytes ({:.1} MB in the 1 GiB-class image), \
         generated in {:.1}s. Rounds: {} (tools alternating, fresh state each round).\n\n\
         Archive: {} bytes = unique bytes + {:.3}% (skopeo's layout blobs: {} bytes; it does not copy the two bundle images, which it cannot store in `oci:`).\n\n",
        r.scale,
        r.unique_blobs,
        r.unique_bytes as f64 / MB,
        r.big_bytes as f64 / MB,
        r.gen_secs,
        ctx.rounds,
        r.archive_bytes,
        (r.archive_bytes as f64 / r.unique_bytes as f64 - 1.0) * 100.0,
        r.layout_bytes,
    ));
    s.push_str("## Ceilings, measured in this run\n\nDisk and sha256 at the start of the run; the targets below use the disk rate measured again just before each export round, sha256 before each verify round and the registry ingest ceiling before each import round, pair by pair.\n\n");
    s.push_str(&limits_md(&r.limits, &r.ingest));
    s.push_str(
        "\n## Results\n\nMedian wall time (each round's in brackets), throughput = unique bytes / median wall, \
         median user+sys CPU, peak RSS over all rounds, and the other tools' wall / airlift's wall computed \
         round by round (median; > 1 means airlift is faster). MB per CPU-s (unique bytes / the tool's own \
         user+sys CPU) does not depend on what else runs on the machine; wall-clock numbers do.\n\n\
         | step | tool | wall s | MB/s | CPU s | MB per CPU-s | peak RSS MiB | airlift's speed-up |\n|---|---|---|---|---|---|---|---|\n",
    );
    for c in &r.comparisons {
        let mut ratio = format!("**{:.2}×** vs {}", c.speedup(), baseline(&c.other));
        if let Some(sp) = c.speedup_c() {
            ratio.push_str(&format!(", **{sp:.2}×** vs imgpkg"));
        }
        row(&mut s, &c.name, "airlift", c.bytes, &c.a, &ratio);
        row(&mut s, &c.name, &c.other, c.bytes, &c.b, "");
        match &c.c {
            Third::Runs(v) if !v.is_empty() => row(&mut s, &c.name, &c.c_name, c.bytes, v, ""),
            Third::Skip => {}
            other => s.push_str(&format!(
                "| {} | {} | {} | | | | | |\n",
                c.name,
                c.c_name,
                other.absent()
            )),
        }
    }
    let notes: Vec<String> = r
        .comparisons
        .iter()
        .filter(|c| !c.note.is_empty())
        .map(|c| format!("- {}: {}\n", c.name, c.note))
        .collect();
    if !notes.is_empty() {
        s.push('\n');
        s.push_str(&notes.concat());
    }

    if let Some(rel) = &r.relocation {
        let ra: Vec<Sample> = rel.airlift.iter().map(|x| x.0).collect();
        s.push_str(
            "\n## Relocation inside one registry (cross-repository mount)\n\n\
             The corpus is imported (untimed) into `reloc/a` of one TLS + basic-auth registry with its access \
             log on; then each tool copies the outer bundle (skopeo: every image and both bundles, one by one) \
             to a new repository of the same registry. Counted from the registry's access log, per run (maximum \
             over the rounds): blob mounts answered 201, mount requests not honoured, blob uploads completed by \
             PUT, PATCH requests, bytes uploaded of blobs the registry already held (the corpus's layers and \
             configs, which a mount would have linked: the target is 0), blobs and bytes the tool made up on \
             the way (no mount can provide those; `logs/reloc-TOOL.log` lists every uploaded digest), \
             manifest PUTs.\n\n\
             | tool | wall s | mounted | mounts refused | blobs uploaded | PATCHes | held bytes uploaded | new blobs / bytes | manifests PUT | other's wall / airlift's |\n\
             |---|---|---|---|---|---|---|---|---|---|\n",
        );
        reloc_row(&mut s, "airlift", &rel.airlift, &ra);
        reloc_row(&mut s, "skopeo", &rel.skopeo, &ra);
        match &rel.imgpkg {
            Third::Runs(v) if !v.is_empty() => reloc_row(&mut s, "imgpkg", v, &ra),
            other => s.push_str(&format!(
                "| imgpkg | {} | | | | | | | | |\n",
                other.absent()
            )),
        }
    }

    s.push_str(
        "\n## Targets (reported, not enforced)\n\n| target | measured | met? |\n|---|---|---|\n",
    );
    let find = |n: &str| r.comparisons.iter().find(|c| c.name == n);
    if let Some(c) = find("export (whole corpus)") {
        let frac = c.fraction_of_limit();
        target(
            &mut s,
            "export ≥ 85% of disk write + fdatasync (archive fsynced)",
            format!(
                "{:.0} MB/s = {:.0}% of the limit measured before each round (median {:.0} MB/s)",
                c.rate_a() / MB,
                frac * 100.0,
                median(&c.limit) / MB
            ),
            Some(frac >= 0.85),
        );
        speedup_targets(&mut s, c, "export", 1.5);
    }
    for name in ["verify (whole corpus)", VERIFY_WIDE] {
        let Some(c) = find(name) else { continue };
        let frac = c.fraction_of_limit();
        let per_cpu = c.bytes as f64 / med(&c.a, |x| x.cpu);
        target(
            &mut s,
            &format!("{name}: ≥ 1.7× one-core sha256"),
            format!(
                "{:.0} MB/s = {frac:.2}× the one-core rate measured before each round (median {:.0} MB/s); \
                 {:.0} MB per CPU-s",
                c.rate_a() / MB,
                median(&c.limit) / MB,
                per_cpu / MB
            ),
            Some(frac >= 1.7),
        );
    }
    if let Some(c) = find("import (whole corpus)") {
        let frac = c.fraction_of_limit();
        target(
            &mut s,
            "import ≥ 80% of the registry ingest ceiling",
            format!(
                "{:.0} MB/s = {:.0}% of the ceiling measured before each round (median {:.0} MB/s)",
                c.rate_a() / MB,
                frac * 100.0,
                median(&c.limit) / MB
            ),
            Some(frac >= 0.8),
        );
        speedup_targets(&mut s, c, "import", 1.5);
    }
    if let Some(c) = find("copy registry → registry (whole corpus)") {
        speedup_targets(&mut s, c, "copy", 1.5);
    }
    if let Some(rel) = &r.relocation {
        let moved = rel.airlift.iter().map(|x| x.1.bytes).max().unwrap_or(0);
        let others = |runs: &[(Sample, crate::reloc::Uploads)]| {
            format!(
                "{} bytes",
                runs.iter().map(|x| x.1.bytes).max().unwrap_or(0)
            )
        };
        let c_moved = match &rel.imgpkg {
            Third::Runs(v) if !v.is_empty() => others(v),
            other => other.absent().to_string(),
        };
        target(
            &mut s,
            "relocation in one registry moves 0 layer bytes",
            format!(
                "airlift uploaded {moved} bytes of blobs the registry held, mounted {} blobs, \
                 uploaded {} new blobs ({} bytes); skopeo uploaded {} held bytes, imgpkg {c_moved}",
                rel.airlift.iter().map(|x| x.1.mounted).max().unwrap_or(0),
                rel.airlift.iter().map(|x| x.1.new_blobs).max().unwrap_or(0),
                rel.airlift.iter().map(|x| x.1.new_bytes).max().unwrap_or(0),
                others(&rel.skopeo),
            ),
            Some(moved == 0 && !rel.airlift.is_empty()),
        );
    }
    for n in [
        "export (whole corpus)",
        "import (whole corpus)",
        "verify (whole corpus)",
        VERIFY_WIDE,
        "export (1 GiB image)",
        "import (1 GiB image)",
    ] {
        if let Some(c) = find(n) {
            target(
                &mut s,
                &format!("{n} peak RSS ≤ 48 MiB"),
                format!("{:.1} MiB", c.rss_a()),
                Some(c.rss_a() <= 48.0),
            );
        }
    }
    let over = r.archive_bytes as f64 / r.unique_bytes as f64 - 1.0;
    target(
        &mut s,
        "archive ≤ unique bytes + 0.5%",
        format!("+{:.3}%", over * 100.0),
        Some(over <= 0.005),
    );
    s.push_str(&format!(
        "\nLoad average (1/5/15 min) before the run {}, after it {}.\n",
        ctx.load_at_start,
        loadavg()
    ));
    s
}

/// One size of the scale mode.
pub struct ScaleRow {
    /// Images in the bundle.
    pub images: usize,
    /// Blobs in the archive (five per image plus the bundle's three).
    pub blobs: usize,
    /// Archive size.
    pub archive_bytes: u64,
    /// airlift export samples.
    pub export: Vec<Sample>,
    /// airlift verify samples.
    pub verify: Vec<Sample>,
    /// `airlift inspect --json` samples.
    pub inspect: Vec<Sample>,
    /// airlift import samples.
    pub import: Vec<Sample>,
    /// `skopeo sync` of the same images, registry to registry (none above
    /// `BENCH_SCALE_SYNC_MAX` images: its target is set at 1,000).
    pub sync: Vec<Sample>,
}

impl ScaleRow {
    /// The measured steps, airlift's four first (skopeo's only where it ran).
    fn steps(&self) -> Vec<(&'static str, &[Sample])> {
        let mut v: Vec<(&'static str, &[Sample])> = vec![
            ("export", &self.export),
            ("verify", &self.verify),
            ("inspect --json", &self.inspect),
            ("import", &self.import),
        ];
        if !self.sync.is_empty() {
            v.push(("skopeo sync (same images)", &self.sync));
        }
        v
    }
}

/// The results document of the scale mode.
pub fn scale_markdown(ctx: &Ctx, limits: &Limits, rows: &[ScaleRow], n: usize) -> String {
    let mut s = String::from("# airlift scale benchmark results\n\n");
    s.push_str(&format!(
        "Written by `make bench-scale` (`bench/src/main.rs`, BENCH_MODE=scale): {n} small images in their own \
         repositories (manifest, config and three layers of 1, 4 and 16 KiB each), one bundle over the first \
         {} and one over all; export, verify, `inspect --json` and import of each (import into a fresh TLS + \
         basic-auth registry), and `skopeo sync` of the same images from the corpus registry into a fresh \
         TLS + basic-auth registry, alternating with the import, {} rounds. Linear growth means equal time \
         per image at both sizes.\n\n## Machine\n\n",
        rows.first().map(|r| r.images).unwrap_or(0),
        ctx.rounds
    ));
    s.push_str(&machine(ctx));
    s.push('\n');
    s.push_str(&limits_md(limits, &[]));
    s.push_str("\n## Results (median wall, each round's in brackets; ms per image; peak RSS over the rounds)\n\n");
    for r in rows {
        s.push_str(&format!(
            "{} images, {} blobs, archive {:.1} MB:\n\n\
             | step | wall s | ms/image | peak RSS MiB |\n|---|---|---|---|\n",
            r.images,
            r.blobs,
            r.archive_bytes as f64 / MB
        ));
        for (step, v) in r.steps() {
            let walls: Vec<String> = v.iter().map(|x| format!("{:.3}", x.wall)).collect();
            s.push_str(&format!(
                "| {step} | {:.3} ({}) | {:.2} | {:.1} |\n",
                med(v, |x| x.wall),
                walls.join(", "),
                per_image(v, r.images),
                rss_mib(v)
            ));
        }
        if r.sync.is_empty() {
            s.push_str("\nskopeo sync not run at this size (`BENCH_SCALE_SYNC_MAX`).\n\n");
        } else {
            s.push_str(&format!(
                "\nskopeo sync wall / airlift import wall, round by round (median): **{:.2}×**\n\n",
                pairwise(&r.import, &r.sync)
            ));
        }
    }
    let (Some(a), Some(b)) = (rows.first(), rows.last()) else {
        return s;
    };
    if rows.len() == 2 {
        s.push_str(&format!(
            "Growth of time per image from {} to {} images (1.0 = linear; a quadratic step would show ≈ {:.0}):\n\n\
             | step | ms/image at {} | ms/image at {} | ratio |\n|---|---|---|---|\n",
            a.images,
            b.images,
            b.images as f64 / a.images as f64,
            a.images,
            b.images
        ));
        for ((step, va), (_, vb)) in a.steps().into_iter().zip(b.steps()) {
            let (pa, pb) = (per_image(va, a.images), per_image(vb, b.images));
            s.push_str(&format!(
                "| {step} | {pa:.2} | {pb:.2} | {:.2} |\n",
                pb / pa
            ));
        }
    }
    s.push_str(&format!(
        "\n## Targets at {} images (reported, not enforced; the RSS and inspect targets are set for 10,000)\n\n\
         | target | measured | met? |\n|---|---|---|\n",
        b.images
    ));
    if rows.len() == 2 {
        for ((step, va), (_, vb)) in a.steps().into_iter().zip(b.steps()).take(4) {
            let g = per_image(vb, b.images) / per_image(va, a.images);
            target(
                &mut s,
                &format!(
                    "{step}: time per image at {} / at {} ≤ 1.2",
                    b.images, a.images
                ),
                format!("{g:.2}"),
                Some(g <= 1.2),
            );
        }
    }
    for (step, v) in b.steps().into_iter().take(4) {
        let m = rss_mib(v);
        target(
            &mut s,
            &format!("{step} peak RSS ≤ 128 MiB"),
            format!("{m:.1} MiB"),
            Some(m <= 128.0),
        );
    }
    let w = med(&b.inspect, |x| x.wall);
    target(
        &mut s,
        "`airlift inspect --json ARCHIVE` < 5 s",
        format!("{w:.2} s"),
        Some(w < 5.0),
    );
    // The import targets are set for the 1,000-image archive.
    let k = rows.iter().find(|r| r.images == 1000).unwrap_or(b);
    if !k.sync.is_empty() {
        let sp = pairwise(&k.import, &k.sync);
        target(
            &mut s,
            &format!("import of {} images ≥ 2× faster than skopeo sync", k.images),
            format!("{sp:.2}×"),
            Some(sp >= 2.0),
        );
    }
    let per = per_image(&k.import, k.images);
    target(
        &mut s,
        &format!(
            "import of {} images ≤ 98/3 = 32.7 ms per image (3× the earlier 98 ms)",
            k.images
        ),
        format!("{per:.1} ms per image"),
        Some(per <= 98.0 / 3.0),
    );
    s.push_str(&format!(
        "\nLoad average (1/5/15 min) before the run {}, after it {}.\n",
        ctx.load_at_start,
        loadavg()
    ));
    s
}

/// Median wall in ms per image.
fn per_image(v: &[Sample], images: usize) -> f64 {
    med(v, |x| x.wall) * 1000.0 / images.max(1) as f64
}

/// Peak RSS over the samples, MiB.
fn rss_mib(v: &[Sample]) -> f64 {
    v.iter().map(|x| x.rss_kib).max().unwrap_or(0) as f64 / 1024.0
}
