//! `airlift serve` against a `docker-registry` holding the same content, both read by skopeo:
//! one image at a time, and eight copies at once.
//!
//! Why the source registry is the comparison: the archive was exported from it, so both
//! servers hold exactly the same manifests and blobs under the same repository names.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::proc::{Sample, die, run, tail};
use crate::{Ctx, Root};

/// A running `airlift serve`.
pub struct Served {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// Spawn to "listening", seconds.
    pub startup: f64,
}

impl Served {
    /// Starts serve on a free port (it picks one) and waits for its listening line.
    pub fn start(ctx: &Ctx, archive: &Path) -> Served {
        let log = ctx.log("serve-airlift");
        let t = Instant::now();
        let child = ctx
            .airlift_cmd()
            .arg("serve")
            .arg(archive)
            .arg("--trust")
            .arg(&ctx.pubkey)
            .args(["--listen", "127.0.0.1:0", "--quiet"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap_or_else(|e| die(&format!("serve log: {e}"))))
            .spawn()
            .unwrap_or_else(|e| die(&format!("spawn airlift serve: {e}")));
        let deadline = Instant::now() + Duration::from_secs(120);
        let host = loop {
            let text = fs::read_to_string(&log).unwrap_or_default();
            if let Some(rest) = text.split("listening on http://").nth(1) {
                break rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
            }
            if Instant::now() > deadline {
                break String::new();
            }
            sleep(Duration::from_millis(5));
        };
        let startup = t.elapsed().as_secs_f64();
        let served = Served {
            child,
            host,
            startup,
        };
        if served.host.is_empty() {
            // Dropping `served` kills and reaps the child.
            drop(served);
            die(&format!(
                "airlift serve did not start:\n{}",
                tail(&log, 2000)
            ));
        }
        served
    }

    /// Peak resident set of the serve process so far, KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next().map(str::to_string))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// Copies every root from `host` into fresh `dir:` directories with `parallel` skopeo
/// processes at once; the sample's wall is the whole batch, its CPU that of the clients.
pub fn pull_all(ctx: &Ctx, host: &str, roots: &[Root], parallel: usize, log: &str) -> Sample {
    let out = ctx.work.join("serve-pull");
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out).unwrap_or_else(|e| die(&format!("mkdir: {e}")));
    // Eight copies at once: the roots list repeated so that every worker stays busy.
    let jobs: Vec<(usize, &Root)> = if parallel > 1 {
        (0..parallel.max(roots.len()))
            .map(|i| (i, &roots[i % roots.len()]))
            .collect()
    } else {
        roots.iter().enumerate().collect()
    };
    let queue = Mutex::new(jobs.into_iter());
    let total = Mutex::new(Sample::default());
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..parallel.max(1) {
            s.spawn(|| {
                loop {
                    let Some((i, r)) = queue.lock().ok().and_then(|mut q| q.next()) else {
                        return;
                    };
                    let path = r.digest_ref.split_once('/').map(|(_, p)| p).unwrap_or("");
                    let dir: PathBuf = out.join(format!("{i}"));
                    let mut cmd: Command = ctx.skopeo_cmd();
                    cmd.args(["copy", "--all", "--quiet", "--src-tls-verify=false"])
                        .arg(format!("docker://{host}/{path}"))
                        .arg(format!("dir:{}", dir.display()));
                    let one = run(&mut cmd, &ctx.log(log));
                    if let Ok(mut t) = total.lock() {
                        *t = Sample {
                            wall: 0.0,
                            cpu: t.cpu + one.cpu,
                            rss_kib: t.rss_kib.max(one.rss_kib),
                        };
                    }
                }
            });
        }
    });
    let mut sample = total.into_inner().unwrap_or_default();
    sample.wall = t.elapsed().as_secs_f64();
    sample
}

/// Bytes the last [`pull_all`] wrote (what the clients received).
pub fn pulled_bytes(ctx: &Ctx) -> u64 {
    let mut total = 0;
    for d in fs::read_dir(ctx.work.join("serve-pull"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for f in fs::read_dir(d.path()).into_iter().flatten().flatten() {
            total += f.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    total
}
