//! `airlift-bench`: airlift against skopeo on one deterministic corpus, on this machine, now.
//!
//! Why a separate binary: timing belongs in a benchmark, not in tests, and a compiled driver
//! shares nothing fragile with shell (quoting, `time` formats, process reaping). It generates
//! the corpus straight into a local registry's storage, measures the machine's own limits in
//! the same run, then runs each comparison in alternating rounds (A B A B …) with fresh state,
//! and writes `bench/results.md` (or `bench/results-scale.md`).
//!
//! Configuration (environment): `AIRLIFT` (binary, default `target/release/airlift`),
//! `BENCH_MODE` (`corpus` or `scale`), `BENCH_SCALE` (corpus size factor, default 1 ≈ 1.2 GB),
//! `BENCH_ROUNDS` (default 3), `BENCH_WORKDIR` (default a temp dir), `BENCH_OUT`,
//! `BENCH_KEEP=1` (keep the work dir), `BENCH_SCALE_IMAGES` (scale mode, default 1000),
//! `BENCH_SCALE_SYNC_MAX` (largest size `skopeo sync` runs at, default 1000),
//! `BENCH_SERVE=1` (generate the corpus, print its references and keep serving it: profiling).

mod ceiling;
mod corpus;
mod imgpkg;
mod proc;
mod reloc;
mod report;
mod serve;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use corpus::{Blob, Store, storage_blob_bytes, storage_blobs};
use proc::{Registry, Sample, Tls, die, run, sync_fs};
use report::{Comparison, Limits, ScaleRow, Third};

/// Everything the measured runs share.
pub struct Ctx {
    airlift: PathBuf,
    /// imgpkg, when installed (`IMGPKG` or `PATH`).
    imgpkg: Option<PathBuf>,
    work: PathBuf,
    home: PathBuf,
    logs: PathBuf,
    key: PathBuf,
    pubkey: PathBuf,
    tls: Tls,
    rounds: usize,
    /// `BENCH_ONLY`: the sections to measure (None: all).
    only: Option<Vec<String>>,
    /// `/proc/loadavg` when the run began.
    load_at_start: String,
}

/// An image of the corpus as the tools name it.
#[derive(Clone)]
pub(crate) struct Root {
    /// Name inside the shared OCI layout, and tag in the import repository.
    pub(crate) name: String,
    /// `HOST/repo@sha256:…` in the source registry.
    pub(crate) digest_ref: String,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v
            .parse()
            .unwrap_or_else(|_| die(&format!("{name}={v} is not valid"))),
        _ => default,
    }
}

fn main() {
    let mode: String = env_or("BENCH_MODE", "corpus".to_string());
    let scale: f64 = env_or("BENCH_SCALE", 1.0);
    let rounds: usize = env_or("BENCH_ROUNDS", 3usize).max(1);
    let airlift = PathBuf::from(env_or("AIRLIFT", "target/release/airlift".to_string()));
    let airlift = fs::canonicalize(&airlift)
        .unwrap_or_else(|e| die(&format!("{}: {e} (run make setup)", airlift.display())));
    let work = match std::env::var("BENCH_WORKDIR") {
        Ok(w) if !w.is_empty() => PathBuf::from(w),
        _ => std::env::temp_dir().join(format!("airlift-bench-{}", std::process::id())),
    };
    let _ = fs::remove_dir_all(&work);
    mkdir(&work);
    let home = work.join("home");
    let logs = work.join("logs");
    mkdir(&home);
    mkdir(&logs);
    let tls = Tls::create(&work.join("tls"));
    let ctx = Ctx {
        key: work.join("release.key"),
        pubkey: work.join("release.pub"),
        airlift,
        imgpkg: imgpkg::find(),
        home,
        logs,
        tls,
        rounds,
        only: std::env::var("BENCH_ONLY")
            .ok()
            .filter(|v| !v.is_empty())
            .map(|v| v.split(',').map(|x| x.trim().to_string()).collect()),
        work: work.clone(),
        load_at_start: report::loadavg(),
    };
    run(
        ctx.airlift_cmd()
            .args(["keygen", "--out"])
            .arg(work.join("release")),
        &ctx.log("keygen"),
    );
    eprintln!("work dir {} (logs in logs/)", work.display());
    let limits = report::measure_limits(&work);
    eprintln!(
        "limits: disk write+fdatasync {:.0} MB/s, sha256 1 core {:.0} MB/s, 2 threads {:.0} MB/s",
        limits.disk_write / 1e6,
        limits.sha256_one / 1e6,
        limits.sha256_two / 1e6
    );
    if let Some(bad) = ctx
        .only
        .iter()
        .flatten()
        .find(|x| !SECTIONS.contains(&x.as_str()))
    {
        die(&format!(
            "BENCH_ONLY names {bad:?}; the sections are {}",
            SECTIONS.join(",")
        ));
    }
    let out = if mode == "scale" {
        let n: usize = env_or("BENCH_SCALE_IMAGES", 1000usize);
        let rows = run_scale(&ctx, n);
        let text = report::scale_markdown(&ctx, &limits, &rows, n);
        (text, "bench/results-scale.md")
    } else {
        let rep = run_corpus(&ctx, scale, &limits);
        (report::markdown(&ctx, &rep), "bench/results.md")
    };
    let path: String = env_or("BENCH_OUT", out.1.to_string());
    fs::write(&path, &out.0).unwrap_or_else(|e| die(&format!("write {path}: {e}")));
    println!("{}", out.0);
    eprintln!("wrote {path}");
    if std::env::var_os("BENCH_KEEP").is_none() {
        let _ = fs::remove_dir_all(&work);
    }
}

/// The corpus sections `BENCH_ONLY` may name.
const SECTIONS: [&str; 7] = [
    "export", "import", "verify", "copy", "reloc", "serve", "big",
];

impl Ctx {
    /// Whether `BENCH_ONLY` (unset: everything) asks for `section`.
    fn wants(&self, section: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|v| v.iter().any(|x| x == section))
    }

    /// airlift with a private HOME (no docker config of the host leaks in), quiet.
    pub(crate) fn airlift_cmd(&self) -> Command {
        let mut cmd = Command::new(&self.airlift);
        cmd.env("HOME", &self.home)
            .env("DOCKER_CONFIG", self.home.join(".docker"))
            .env_remove("AIRLIFT_REGISTRY_HOSTNAME")
            .env_remove("AIRLIFT_REGISTRY_USERNAME")
            .env_remove("AIRLIFT_REGISTRY_PASSWORD");
        cmd
    }

    /// skopeo with no host policy and a private HOME.
    pub(crate) fn skopeo_cmd(&self) -> Command {
        let mut cmd = Command::new("skopeo");
        cmd.env("HOME", &self.home).arg("--insecure-policy");
        cmd
    }

    pub(crate) fn log(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    /// `USER:PASSWORD` of the TLS registries (skopeo's `--dest-creds`).
    pub(crate) fn creds(&self) -> String {
        format!("{}:{}", self.tls.user, self.tls.password)
    }

    /// A fresh TLS + basic-auth registry in a new directory under the work dir.
    pub(crate) fn fresh_tls_registry(&self, name: &str) -> Registry {
        let dir = self.work.join(name);
        let _ = fs::remove_dir_all(&dir);
        Registry::start(&dir, Some(&self.tls))
    }

    /// airlift's registry flags for the TLS target.
    pub(crate) fn tls_args(&self) -> Vec<String> {
        vec![
            "--registry-ca-cert-path".into(),
            self.tls.ca_crt().to_string_lossy().into_owned(),
            "--registry-username".into(),
            self.tls.user.clone(),
            "--registry-password".into(),
            self.tls.password.clone(),
        ]
    }

    fn airlift_export(&self, what: &[&str], archive: &Path, log: &str) -> Sample {
        let _ = fs::remove_file(archive);
        sync_fs(&self.work);
        let mut cmd = self.airlift_cmd();
        cmd.arg("export").args(what).arg("-o").arg(archive);
        cmd.arg("--sign-key").arg(&self.key).arg("-q");
        run(&mut cmd, &self.log(log))
    }

    /// `skopeo copy --all --preserve-digests docker://… oci:LAYOUT:name` for every root into
    /// one shared layout. Returns the copy itself and, separately, the flush that follows
    /// (skopeo does not fsync; airlift's export does, so both are reported).
    fn skopeo_export(&self, roots: &[Root], layout: &Path, log: &str) -> (Sample, f64) {
        let _ = fs::remove_dir_all(layout);
        sync_fs(&self.work);
        let mut total = Sample::default();
        for r in roots {
            let mut cmd = self.skopeo_cmd();
            cmd.args(["copy", "--all", "--preserve-digests", "--quiet"])
                .arg("--src-tls-verify=false")
                .arg(format!("docker://{}", r.digest_ref))
                .arg(format!("oci:{}:{}", layout.display(), r.name));
            total = total.then(run(&mut cmd, &self.log(log)));
        }
        let t = Instant::now();
        sync_fs(layout);
        (total, t.elapsed().as_secs_f64())
    }

    /// Import into a fresh TLS registry; returns airlift's sample and the registry's CPU.
    fn airlift_import(&self, archive: &Path, log: &str) -> (Sample, f64) {
        let reg = self.fresh_tls_registry("import-target");
        sync_fs(&self.work);
        let mut cmd = self.airlift_cmd();
        cmd.arg("import")
            .arg(archive)
            .arg("--to-repo")
            .arg(format!("{}/mirror/all", reg.host()))
            .arg("--trust")
            .arg(&self.pubkey)
            .args(self.tls_args())
            .arg("-q");
        let s = run(&mut cmd, &self.log(log));
        let reg_cpu = reg.stop();
        let _ = fs::remove_dir_all(self.work.join("import-target"));
        (s, reg_cpu)
    }

    /// `skopeo copy --all oci:LAYOUT:name docker://…` for every root into a fresh TLS registry,
    /// with skopeo's blob-info cache deleted first so it does the full work.
    fn skopeo_import(&self, roots: &[Root], layout: &Path, log: &str) -> (Sample, f64) {
        delete_skopeo_cache();
        let reg = self.fresh_tls_registry("import-target");
        sync_fs(&self.work);
        let mut total = Sample::default();
        for r in roots {
            let mut cmd = self.skopeo_cmd();
            cmd.args(["copy", "--all", "--quiet", "--dest-cert-dir"])
                .arg(&self.tls.ca_dir)
                .arg("--dest-creds")
                .arg(format!("{}:{}", self.tls.user, self.tls.password))
                .arg(format!("oci:{}:{}", layout.display(), r.name))
                .arg(format!("docker://{}/mirror/all:{}", reg.host(), r.name));
            total = total.then(run(&mut cmd, &self.log(log)));
        }
        let reg_cpu = reg.stop();
        let _ = fs::remove_dir_all(self.work.join("import-target"));
        (total, reg_cpu)
    }
}

impl Ctx {
    /// `airlift copy -b BUNDLE --to-repo REG/copy/all` from the plain-HTTP corpus registry
    /// into a fresh TLS registry; returns airlift's sample and the registry's CPU.
    fn airlift_copy(&self, bundle: &str, log: &str) -> (Sample, f64) {
        let reg = self.fresh_tls_registry("copy-target");
        sync_fs(&self.work);
        let mut cmd = self.airlift_cmd();
        cmd.args(["copy", "-b", bundle, "--to-repo"])
            .arg(format!("{}/copy/all", reg.host()))
            .args(self.tls_args())
            .arg("-q");
        let s = run(&mut cmd, &self.log(log));
        let cpu = reg.stop();
        let _ = fs::remove_dir_all(self.work.join("copy-target"));
        (s, cpu)
    }

    /// `skopeo copy --all --preserve-digests docker://SRC@digest docker://REG/copy/all:name`
    /// for every root and bundle (docker to docker keeps the bundles' Docker media types),
    /// summed, into a fresh TLS registry, blob-info cache deleted first.
    fn skopeo_copy(&self, roots: &[Root], log: &str) -> (Sample, f64) {
        delete_skopeo_cache();
        let reg = self.fresh_tls_registry("copy-target");
        sync_fs(&self.work);
        let mut total = Sample::default();
        for r in roots {
            let mut cmd = self.skopeo_cmd();
            cmd.args(["copy", "--all", "--preserve-digests", "--quiet"])
                .arg("--src-tls-verify=false")
                .arg("--dest-cert-dir")
                .arg(&self.tls.ca_dir)
                .arg("--dest-creds")
                .arg(self.creds())
                .arg(format!("docker://{}", r.digest_ref))
                .arg(format!("docker://{}/copy/all:{}", reg.host(), r.name));
            total = total.then(run(&mut cmd, &self.log(log)));
        }
        let cpu = reg.stop();
        let _ = fs::remove_dir_all(self.work.join("copy-target"));
        (total, cpu)
    }

    /// `imgpkg copy -b BUNDLE --to-repo REG/copy/imgpkg` (plain-HTTP source allowed) into a
    /// fresh TLS registry. `None` when imgpkg is missing or failed.
    fn imgpkg_copy(&self, bundle: &str, log: &str) -> Option<(Sample, f64)> {
        let mut cmd = self.imgpkg_cmd()?;
        let reg = self.fresh_tls_registry("copy-target");
        sync_fs(&self.work);
        cmd.args(["copy", "-b", bundle, "--to-repo"])
            .arg(format!("{}/copy/imgpkg", reg.host()))
            .arg("--registry-insecure")
            .args(imgpkg::tls_args(&self.tls));
        let s = proc::run_soft(&mut cmd, &self.log(log));
        let cpu = reg.stop();
        let _ = fs::remove_dir_all(self.work.join("copy-target"));
        Some((s?, cpu))
    }
}

/// Deletes skopeo's blob-info cache (root and rootless locations), so a repeated push does not
/// skip blobs it remembers.
pub(crate) fn delete_skopeo_cache() {
    let mut paths = vec![PathBuf::from(
        "/var/lib/containers/cache/blob-info-cache-v1.boltdb",
    )];
    if let Some(h) = std::env::var_os("HOME") {
        paths.push(Path::new(&h).join(".local/share/containers/cache/blob-info-cache-v1.boltdb"));
    }
    for p in paths {
        let _ = fs::remove_file(p);
    }
}

pub(crate) fn mkdir(p: &Path) {
    fs::create_dir_all(p).unwrap_or_else(|e| die(&format!("mkdir {}: {e}", p.display())));
}

/// Sizes in MiB scaled by `s`, never below 4 KiB.
fn mib(x: f64, s: f64) -> u64 {
    ((x * s * 1048576.0) as u64).max(4096)
}

/// Digest the registry storage records for `repo:tag`.
fn tag_digest(storage: &Path, repo: &str, tag: &str) -> String {
    let link = storage
        .join("docker/registry/v2/repositories")
        .join(repo)
        .join("_manifests/tags")
        .join(tag)
        .join("current/link");
    fs::read_to_string(&link).unwrap_or_else(|e| die(&format!("{}: {e}", link.display())))
}

/// `airlift push -b HOST/repo:v1` of a bundle whose `.imgpkg/images.yml` locks `images`
/// (digest references); returns its digest reference.
fn push_bundle(ctx: &Ctx, src: &Registry, repo: &str, images: &[String]) -> String {
    let dir = ctx.work.join("bundles").join(repo.replace('/', "_"));
    mkdir(&dir.join(".imgpkg"));
    mkdir(&dir.join("config"));
    let mut lock =
        String::from("apiVersion: imgpkg.carvel.dev/v1alpha1\nkind: ImagesLock\nimages:\n");
    let mut config = String::new();
    for (i, img) in images.iter().enumerate() {
        lock.push_str(&format!("- image: {img}\n"));
        config.push_str(&format!("img{i}:\n  image: {img}\n"));
    }
    fs::write(dir.join(".imgpkg/images.yml"), lock).unwrap_or_else(|e| die(&e.to_string()));
    fs::write(dir.join("config/app.yml"), config).unwrap_or_else(|e| die(&e.to_string()));
    let r = format!("{}/{repo}:v1", src.host());
    run(
        ctx.airlift_cmd().args(["push", "-b", &r, "-f"]).arg(&dir),
        &ctx.log("push-bundle"),
    );
    let d = tag_digest(&src.dir.join("storage"), repo, "v1");
    format!("{}/{repo}@{d}", src.host())
}

/// What [`run_corpus`] hands the report.
pub struct CorpusRun {
    scale: f64,
    unique_bytes: u64,
    unique_blobs: usize,
    big_bytes: u64,
    archive_bytes: u64,
    layout_bytes: u64,
    gen_secs: f64,
    limits: Limits,
    /// Registry ingest ceiling (curl uploads of the unique blobs), bytes/s, one per round.
    ingest: Vec<f64>,
    comparisons: Vec<Comparison>,
    relocation: Option<reloc::Reloc>,
}

/// The main corpus (≈1.2 GB × scale): 12 images sharing three base layers, a two-platform
/// index, one image with 25 small layers, one with a 1 GiB layer, a nested and an outer bundle.
fn generate_corpus(ctx: &Ctx, s: f64) -> (Registry, Vec<Root>, Root, [Root; 2]) {
    let t = Instant::now();
    let src_dir = ctx.work.join("source");
    let mut store = Store::new(&src_dir.join("storage"));
    let bases = [
        (1001, mib(32.0, s)),
        (1002, mib(16.0, s)),
        (1003, mib(8.0, s)),
    ];
    let mut made: Vec<(String, Blob)> = Vec::new();
    for i in 0..12u64 {
        let mut layers = vec![bases[0]];
        if i % 2 == 0 {
            layers.push(bases[1]);
        }
        if i % 3 == 0 {
            layers.push(bases[2]);
        }
        layers.push((2000 + i, mib(1.0 + i as f64, s)));
        let repo = format!("bench/app-{i:02}");
        let m = store.image(&repo, "amd64", &format!("app-{i}"), &layers);
        store.tag_image(&repo, "v1", &m);
        made.push((repo, m));
    }
    let amd = store.image(
        "bench/multi",
        "amd64",
        "multi-amd64",
        &[bases[0], (3001, mib(4.0, s))],
    );
    let arm = store.image(
        "bench/multi",
        "arm64",
        "multi-arm64",
        &[(3002, mib(8.0, s)), (3003, mib(4.0, s))],
    );
    let idx = store.index("bench/multi", "v1", &[("amd64", amd), ("arm64", arm)]);
    made.push(("bench/multi".into(), idx));
    let small: Vec<(u64, u64)> = (0..25).map(|k| (4000 + k, mib(0.25, s))).collect();
    let m = store.image("bench/small25", "amd64", "small25", &small);
    store.tag_image("bench/small25", "v1", &m);
    made.push(("bench/small25".into(), m));
    let big = store.image("bench/big", "amd64", "big", &[(5000, mib(1024.0, s))]);
    store.tag_image("bench/big", "v1", &big);
    let src = Registry::start(&src_dir, None);
    let host = src.host();
    let mut roots: Vec<Root> = made
        .iter()
        .map(|(repo, m)| Root {
            name: repo.trim_start_matches("bench/").to_string(),
            digest_ref: format!("{host}/{repo}@{}", m.digest()),
        })
        .collect();
    let big_root = Root {
        name: "big".into(),
        digest_ref: format!("{host}/bench/big@{}", big.digest()),
    };
    roots.push(big_root.clone());
    let nested_imgs: Vec<String> = [0, 1, 2, 3, 13]
        .iter()
        .map(|&i: &usize| roots[i].digest_ref.clone())
        .collect();
    let nested = push_bundle(ctx, &src, "bench/nested", &nested_imgs);
    let mut outer_imgs: Vec<String> = roots.iter().map(|r| r.digest_ref.clone()).collect();
    outer_imgs.push(nested.clone());
    let outer = push_bundle(ctx, &src, "bench/outer", &outer_imgs);
    eprintln!("corpus generated in {:.1}s", t.elapsed().as_secs_f64());
    let bundles = [
        Root {
            name: "nested".into(),
            digest_ref: nested,
        },
        Root {
            name: "outer".into(),
            digest_ref: outer,
        },
    ];
    (src, roots, big_root, bundles)
}

/// `airlift verify ARCHIVE` against `sha256sum FILES`, alternating, with the one-core sha256
/// rate measured before each round; fills `row`'s samples and limit.
fn verify_rows(
    ctx: &Ctx,
    label: &str,
    archive: &Path,
    files: &[PathBuf],
    mut row: Comparison,
) -> Comparison {
    let mut sha = Vec::new();
    let (a, b) = alternate(
        ctx.rounds,
        label,
        |_| {
            sha.push(report::sha_probe(1));
            let mut cmd = ctx.airlift_cmd();
            cmd.arg("verify")
                .arg(archive)
                .arg("--trust")
                .arg(&ctx.pubkey);
            run(&mut cmd, &ctx.log(&format!("{label}-airlift")))
        },
        |_| {
            run(
                Command::new("sha256sum").args(files),
                &ctx.log(&format!("{label}-sha256sum")),
            )
        },
    );
    row.a = a;
    row.b = b;
    row.with_limit(sha)
}

/// An image of eight equal layers in a registry of its own (the corpus's figures and its
/// ingest ceiling stay as they were), exported once into `wide.tar` for the many-blob verify
/// row; returns the archive and the layer files `sha256sum` reads.
fn wide_archive(ctx: &Ctx, s: f64) -> (PathBuf, Vec<PathBuf>) {
    let dir = ctx.work.join("wide-source");
    let _ = fs::remove_dir_all(&dir);
    let mut store = Store::new(&dir.join("storage"));
    let layers: Vec<(u64, u64)> = (0..8).map(|k| (6000 + k, mib(128.0, s))).collect();
    let mut files = Vec::new();
    for &(seed, size) in &layers {
        let hex = store.layer(seed, size).hex;
        files.push(store.blob_path(&hex));
    }
    let m = store.image("bench/wide", "amd64", "wide", &layers);
    let reg = Registry::start(&dir, None);
    let archive = ctx.work.join("wide.tar");
    let r = format!("{}/bench/wide@{}", reg.host(), m.digest());
    ctx.airlift_export(&["-i", &r], &archive, "export-wide");
    drop(reg);
    (archive, files)
}

/// Alternates airlift (A) and skopeo (B) for `rounds` rounds.
fn alternate(
    rounds: usize,
    label: &str,
    a: impl FnMut(usize) -> Sample,
    b: impl FnMut(usize) -> Sample,
) -> (Vec<Sample>, Vec<Sample>) {
    let (va, vb, _) = alternate3(rounds, label, a, b, None);
    (va, vb)
}

/// A third tool's run in [`alternate3`]: `None` when it failed.
type ThirdRun<'a> = &'a mut dyn FnMut(usize) -> Option<Sample>;

/// Alternates airlift (A), skopeo (B) and imgpkg (C) for `rounds` rounds (A B C A B C …).
/// `c` is `None` when imgpkg is not installed; once a C run fails, C is not run again.
fn alternate3(
    rounds: usize,
    label: &str,
    mut a: impl FnMut(usize) -> Sample,
    mut b: impl FnMut(usize) -> Sample,
    mut c: Option<ThirdRun>,
) -> (Vec<Sample>, Vec<Sample>, Third) {
    let (mut va, mut vb) = (Vec::new(), Vec::new());
    let mut vc = match c {
        Some(_) => Third::Runs(Vec::new()),
        None => Third::Missing,
    };
    let say = |r: usize, tool: &str, s: &Sample| {
        eprintln!(
            "{label} round {r}: {tool:7} {:.2}s cpu {:.2}s rss {} KiB",
            s.wall, s.cpu, s.rss_kib
        )
    };
    for r in 0..rounds {
        let sa = a(r);
        say(r, "airlift", &sa);
        let sb = b(r);
        say(r, "other", &sb);
        va.push(sa);
        vb.push(sb);
        if let (Some(run_c), Third::Runs(v)) = (c.as_mut(), &mut vc) {
            match run_c(r) {
                Some(sc) => {
                    say(r, "imgpkg", &sc);
                    v.push(sc);
                }
                None => vc = Third::Failed(format!("failed in round {r} (see logs/)")),
            }
        }
    }
    (va, vb, vc)
}

fn run_corpus(ctx: &Ctx, s: f64, limits: &Limits) -> CorpusRun {
    let t = Instant::now();
    let (src, roots, big, bundles) = generate_corpus(ctx, s);
    let bundle = bundles[1].digest_ref.clone();
    let gen_secs = t.elapsed().as_secs_f64();
    if std::env::var_os("BENCH_SERVE").is_some() {
        // For profiling by hand: keep the corpus registry up and say how to reach it.
        println!(
            "bundle {bundle}\nbig {}\nkey {}\nwork {}",
            big.digest_ref,
            ctx.key.display(),
            ctx.work.display()
        );
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    let (unique_bytes, unique_blobs) = storage_blob_bytes(&src.dir.join("storage"));
    let archive = ctx.work.join("corpus.tar");
    let layout = ctx.work.join("layout");
    let imgpkg_tar = ctx.work.join("corpus-imgpkg.tar");
    let n = ctx.rounds;
    let have_imgpkg = ctx.imgpkg.is_some();
    let mut comparisons = Vec::new();

    // Export of the whole bundle.
    let mut flushes = Vec::new();
    let mut flushes_c = Vec::new();
    let mut disk = Vec::new();
    let mut imgpkg_export = |_: usize| {
        let (s, f) = ctx.imgpkg_export(&["-b", &bundle], &imgpkg_tar, "export-imgpkg")?;
        flushes_c.push(f);
        Some(s)
    };
    // The other sections read the three exports: make them once even when not measured.
    let export_rounds = if ctx.wants("export") { n } else { 1 };
    let (a, b, c) = alternate3(
        export_rounds,
        "export",
        |_| {
            disk.push(report::disk_probe(&ctx.work, 1 << 30));
            ctx.airlift_export(&["-b", &bundle], &archive, "export-airlift")
        },
        |_| {
            let (s, f) = ctx.skopeo_export(&roots, &layout, "export-skopeo");
            flushes.push(f);
            s
        },
        have_imgpkg.then_some(&mut imgpkg_export as ThirdRun),
    );
    let archive_bytes = fs::metadata(&archive).map(|m| m.len()).unwrap_or(0);
    let (layout_bytes, _) = dir_bytes(&layout.join("blobs/sha256"));
    let imgpkg_tar_bytes = fs::metadata(&imgpkg_tar).map(|m| m.len()).unwrap_or(0);
    let mut note = format!(
        "skopeo does not fsync; flushing its layout afterwards took a median {:.2}s more",
        report::median(&flushes)
    );
    if !flushes_c.is_empty() {
        note.push_str(&format!(
            "; imgpkg does not fsync either: flushing its tar ({:.1} MB) took a median {:.2}s more",
            imgpkg_tar_bytes as f64 / 1e6,
            report::median(&flushes_c)
        ));
    }
    let export_row = ctx.wants("export").then(|| {
        Comparison::new(
            "export (whole corpus)",
            "skopeo copy ×each image → one OCI layout",
            unique_bytes,
            a,
            b,
            note,
        )
        .with_limit(disk)
        .with_third("imgpkg copy -b outer --to-tar", c)
    });
    comparisons.extend(export_row);

    // Import into a TLS + basic-auth registry, the registry's ingest ceiling measured with
    // curl just before each round (kept outside: the report reads it).
    let mut ingest = Vec::new();
    if ctx.wants("import") {
        let blobs = storage_blobs(&src.dir.join("storage"));
        let mut reg_a = Vec::new();
        let mut reg_b = Vec::new();
        let mut reg_c = Vec::new();
        let mut imgpkg_import = |_: usize| {
            let (s, c) = ctx.imgpkg_import(&imgpkg_tar, "import-imgpkg")?;
            reg_c.push(c);
            Some(s)
        };
        let (a, b, c) = alternate3(
            n,
            "import",
            |r| {
                let rate = ceiling::ingest(ctx, &blobs);
                eprintln!("import round {r}: ingest ceiling {:.0} MB/s", rate / 1e6);
                ingest.push(rate);
                let (s, c) = ctx.airlift_import(&archive, "import-airlift");
                reg_a.push(c);
                s
            },
            |_| {
                let (s, c) = ctx.skopeo_import(&roots, &layout, "import-skopeo");
                reg_b.push(c);
                s
            },
            have_imgpkg.then_some(&mut imgpkg_import as ThirdRun),
        );
        let note = registry_cpu_note("registry CPU (user+sys) median:", &reg_a, &reg_b, &reg_c);
        comparisons.push(
            Comparison::new(
                "import (whole corpus)",
                "skopeo copy ×each image from the layout",
                unique_bytes,
                a,
                b,
                note,
            )
            .with_limit(ingest.clone())
            .with_third("imgpkg copy --tar → --to-repo", c),
        );
    }
    // Verify.
    if ctx.wants("verify") {
        let layout_blobs: Vec<PathBuf> = fs::read_dir(layout.join("blobs/sha256"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        comparisons.push(verify_rows(
            ctx,
            "verify",
            &archive,
            &layout_blobs,
            Comparison::new(
                "verify (whole corpus)",
                "sha256sum over the layout's blobs",
                unique_bytes,
                Vec::new(),
                Vec::new(),
                "imgpkg has no verify of a tar".into(),
            ),
        ));
        let (wide_archive, files) = wide_archive(ctx, s);
        let wide_bytes: u64 = files
            .iter()
            .map(|f| fs::metadata(f).map(|m| m.len()).unwrap_or(0))
            .sum();
        comparisons.push(verify_rows(
            ctx,
            "verify-wide",
            &wide_archive,
            &files,
            Comparison::new(
                report::VERIFY_WIDE,
                "sha256sum over the same layers",
                wide_bytes,
                Vec::new(),
                Vec::new(),
                "an image outside the bundles, exported on its own".into(),
            ),
        ));
    }

    let mut copy_roots = roots.clone();
    copy_roots.extend(bundles.iter().cloned());
    // Copy registry → registry: plain-HTTP corpus registry into a fresh TLS registry.
    if ctx.wants("copy") {
        let (mut reg_a, mut reg_b, mut reg_c) = (Vec::new(), Vec::new(), Vec::new());
        let mut imgpkg_copy = |_: usize| {
            let (s, c) = ctx.imgpkg_copy(&bundle, "copy-imgpkg")?;
            reg_c.push(c);
            Some(s)
        };
        let (a, b, c) = alternate3(
            n,
            "copy",
            |_| {
                let (s, c) = ctx.airlift_copy(&bundle, "copy-airlift");
                reg_a.push(c);
                s
            },
            |_| {
                let (s, c) = ctx.skopeo_copy(&copy_roots, "copy-skopeo");
                reg_b.push(c);
                s
            },
            have_imgpkg.then_some(&mut imgpkg_copy as ThirdRun),
        );
        let note = registry_cpu_note(
            "HTTP source → fresh TLS + basic-auth registry; skopeo copies the two bundle images too \
         (docker to docker keeps their media types); registry CPU median",
            &reg_a,
            &reg_b,
            &reg_c,
        );
        comparisons.push(
            Comparison::new(
                "copy registry → registry (whole corpus)",
                "skopeo copy ×each image and bundle",
                unique_bytes,
                a,
                b,
                note,
            )
            .with_third("imgpkg copy -b outer --to-repo", c),
        );
    }
    // Relocation inside one registry: mounts, not uploads.
    let relocation = ctx
        .wants("reloc")
        .then(|| reloc::run_all(ctx, &archive, &copy_roots, &bundles[1], &src.dir));

    // Serve: the archive in place vs the docker-registry it was exported from, to skopeo.
    if ctx.wants("serve") {
        let served = serve::Served::start(ctx, &archive);
        eprintln!("serve: listening after {:.3}s", served.startup);
        for (parallel, label) in [(1usize, "one image at a time"), (8, "8 copies at once")] {
            let (a, b) = alternate(
                n,
                &format!("serve-{parallel}"),
                |_| serve::pull_all(ctx, &served.host, &roots, parallel, "serve-pull-airlift"),
                |_| serve::pull_all(ctx, &src.host(), &roots, parallel, "serve-pull-registry"),
            );
            let bytes = serve::pulled_bytes(ctx);
            let peak = served.peak_rss_kib();
            // The clients' RSS says nothing about the server: report serve's own peak instead.
            let a = a
                .into_iter()
                .map(|s| Sample { rss_kib: peak, ..s })
                .collect();
            comparisons.push(Comparison::new(
            &format!("serve → skopeo ({label})"),
            "the same content from docker-registry",
            bytes,
            a,
            b,
            format!(
                "peak RSS is airlift serve's own ({} MiB, whole run); CPU is the skopeo clients'; \
                 serve was listening {:.3}s after it was started on the {:.0} MB archive",
                peak / 1024,
                served.startup,
                archive_bytes as f64 / 1e6
            ),
        ));
        }
        drop(served);
    }

    // The 1 GiB image alone, both ways.
    let mut big_bytes = 0;
    if ctx.wants("big") {
        let big_archive = ctx.work.join("big.tar");
        let big_layout = ctx.work.join("big-layout");
        let big_tar_c = ctx.work.join("big-imgpkg.tar");
        let big_roots = [big.clone()];
        let mut imgpkg_export_big = |_: usize| {
            ctx.imgpkg_export(&["-i", &big.digest_ref], &big_tar_c, "export-big-imgpkg")
                .map(|x| x.0)
        };
        let (a, b, c) = alternate3(
            n,
            "export-big",
            |_| ctx.airlift_export(&["-i", &big.digest_ref], &big_archive, "export-big-airlift"),
            |_| {
                ctx.skopeo_export(&big_roots, &big_layout, "export-big-skopeo")
                    .0
            },
            have_imgpkg.then_some(&mut imgpkg_export_big as ThirdRun),
        );
        big_bytes = dir_bytes(&big_layout.join("blobs/sha256")).0;
        comparisons.push(
            Comparison::new(
                "export (1 GiB image)",
                "skopeo copy → OCI layout",
                big_bytes,
                a,
                b,
                String::new(),
            )
            .with_third("imgpkg copy -i --to-tar", c),
        );
        let mut imgpkg_import_big = |_: usize| {
            ctx.imgpkg_import(&big_tar_c, "import-big-imgpkg")
                .map(|x| x.0)
        };
        let (a, b, c) = alternate3(
            n,
            "import-big",
            |_| ctx.airlift_import(&big_archive, "import-big-airlift").0,
            |_| {
                ctx.skopeo_import(&big_roots, &big_layout, "import-big-skopeo")
                    .0
            },
            have_imgpkg.then_some(&mut imgpkg_import_big as ThirdRun),
        );
        comparisons.push(
            Comparison::new(
                "import (1 GiB image)",
                "skopeo copy from the layout",
                big_bytes,
                a,
                b,
                String::new(),
            )
            .with_third("imgpkg copy --tar → --to-repo", c),
        );
    }
    drop(src);
    CorpusRun {
        scale: s,
        unique_bytes,
        unique_blobs,
        big_bytes,
        archive_bytes,
        layout_bytes,
        gen_secs,
        limits: limits.clone(),
        ingest,
        comparisons,
        relocation,
    }
}

/// "`prefix` Xs during airlift, Ys during skopeo[, Zs during imgpkg]": the target registry's
/// CPU per tool, which shows when the registry, not the client, was the bottleneck.
fn registry_cpu_note(prefix: &str, a: &[f64], b: &[f64], c: &[f64]) -> String {
    let mut note = format!(
        "{prefix} {:.1}s during airlift, {:.1}s during skopeo",
        report::median(a),
        report::median(b)
    );
    if !c.is_empty() {
        note.push_str(&format!(", {:.1}s during imgpkg", report::median(c)));
    }
    note
}

/// Total size and count of the files directly in `dir`.
fn dir_bytes(dir: &Path) -> (u64, usize) {
    let mut total = 0;
    let mut n = 0;
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        if let Ok(m) = e.metadata() {
            total += m.len();
            n += 1;
        }
    }
    (total, n)
}

/// Scale mode: `n` small images (manifest, config, three layers: five blobs each) in their
/// own repositories, bundles over the first `n/10` and over all `n`; export, verify and import
/// of both, so time per image at the two sizes shows whether anything grows faster than linear.
fn run_scale(ctx: &Ctx, n: usize) -> Vec<ScaleRow> {
    let t = Instant::now();
    let src_dir = ctx.work.join("source");
    let mut store = Store::new(&src_dir.join("storage"));
    let mut refs = Vec::new();
    let mut repos = Vec::new();
    for i in 0..n as u64 {
        let repo = format!("scale/img-{i:04}");
        let seed = 100_000 + 3 * i;
        let m = store.image(
            &repo,
            "amd64",
            &format!("s{i}"),
            &[(seed, 1024), (seed + 1, 4096), (seed + 2, 16384)],
        );
        store.tag_image(&repo, "v1", &m);
        repos.push((repo, m));
    }
    let src = Registry::start(&src_dir, None);
    for (repo, m) in &repos {
        refs.push(format!("{}/{repo}@{}", src.host(), m.digest()));
    }
    let small = (n / 10).max(1);
    let sizes = [small, n];
    let bundles: Vec<String> = sizes
        .iter()
        .map(|&k| push_bundle(ctx, &src, &format!("scale/bundle-{k}"), &refs[..k]))
        .collect();
    eprintln!(
        "scale corpus ({n} images) generated in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    if std::env::var_os("BENCH_SERVE").is_some() {
        println!(
            "bundles {}\nkey {}\nwork {}",
            bundles.join(" "),
            ctx.key.display(),
            ctx.work.display()
        );
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    // skopeo's target is set at 1,000 images; at 10,000 it alone would take most of an hour.
    let sync_max: usize = env_or("BENCH_SCALE_SYNC_MAX", 1000usize);
    let mut rows = Vec::new();
    for (k, bundle) in sizes.iter().zip(&bundles) {
        let archive = ctx.work.join(format!("scale-{k}.tar"));
        let sync_list = sync_yaml(ctx, &src.host(), &repos[..*k]);
        let (mut ex, mut ve, mut ins, mut im, mut sy) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for r in 0..ctx.rounds {
            ex.push(ctx.airlift_export(&["-b", bundle], &archive, "scale-export"));
            let mut cmd = ctx.airlift_cmd();
            cmd.arg("verify")
                .arg(&archive)
                .arg("--trust")
                .arg(&ctx.pubkey);
            ve.push(run(&mut cmd, &ctx.log("scale-verify")));
            let mut cmd = ctx.airlift_cmd();
            cmd.args(["inspect", "--json"]).arg(&archive);
            ins.push(run(&mut cmd, &ctx.log("scale-inspect")));
            im.push(ctx.airlift_import(&archive, "scale-import").0);
            if *k <= sync_max {
                sy.push(ctx.skopeo_sync(&sync_list, "scale-skopeo-sync"));
            }
            eprintln!(
                "scale {k} round {r}: export {:.2}s verify {:.2}s inspect {:.2}s import {:.2}s skopeo sync {}",
                ex[r].wall,
                ve[r].wall,
                ins[r].wall,
                im[r].wall,
                sy.get(r)
                    .map_or("not run".into(), |x| format!("{:.2}s", x.wall))
            );
        }
        let archive_bytes = fs::metadata(&archive).map(|m| m.len()).unwrap_or(0);
        rows.push(ScaleRow {
            images: *k,
            blobs: k * 5 + 3,
            archive_bytes,
            export: ex,
            verify: ve,
            inspect: ins,
            import: im,
            sync: sy,
        });
    }
    drop(src);
    rows
}

/// The `skopeo sync --src yaml` list of `repos` (tag `v1` each) in the plain-HTTP registry
/// `host`: one skopeo process addresses every image, although each is in its own repository
/// (with `--src docker` a source is one repository, so it would take one process per image).
fn sync_yaml(ctx: &Ctx, host: &str, repos: &[(String, Blob)]) -> PathBuf {
    let mut y = format!("{host}:\n  tls-verify: false\n  images:\n");
    for (repo, _) in repos {
        y.push_str(&format!("    {repo}:\n    - v1\n"));
    }
    let path = ctx.work.join(format!("sync-{}.yaml", repos.len()));
    fs::write(&path, y).unwrap_or_else(|e| die(&format!("write {}: {e}", path.display())));
    path
}

impl Ctx {
    /// `skopeo sync --src yaml LIST --dest docker REG/sync` into a fresh TLS + basic-auth
    /// registry, blob-info cache deleted first.
    fn skopeo_sync(&self, list: &Path, log: &str) -> Sample {
        delete_skopeo_cache();
        let reg = self.fresh_tls_registry("import-target");
        sync_fs(&self.work);
        let mut cmd = self.skopeo_cmd();
        cmd.args([
            "sync",
            "--src",
            "yaml",
            "--dest",
            "docker",
            "--preserve-digests",
        ])
        .arg("--dest-cert-dir")
        .arg(&self.tls.ca_dir)
        .arg("--dest-creds")
        .arg(self.creds())
        .arg(list)
        .arg(format!("{}/sync", reg.host()));
        let s = run(&mut cmd, &self.log(log));
        drop(reg);
        let _ = fs::remove_dir_all(self.work.join("import-target"));
        s
    }
}
