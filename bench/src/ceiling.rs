//! The registry ingest ceiling: how fast the TLS + basic-auth `docker-registry` accepts the
//! corpus's blobs when the client does nothing but upload them.
//!
//! Why curl: an import can never be faster than the registry takes bytes in; curl is the
//! thinnest client there is (no manifests, no hashing, no archive), so what it reaches with
//! the same parallelism as airlift's import (8 requests in flight) is the bound an import is
//! compared with. Each blob is one monolithic upload: `POST /v2/ceiling/blobs/uploads/`, then
//! `PUT <Location>&digest=sha256:…` with the file as the body.

use std::fs;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::Ctx;
use crate::corpus::StoredBlob;
use crate::proc::{die, sync_fs};

/// Upload workers, as many as airlift's import keeps requests in flight by default.
pub const WORKERS: usize = 8;

/// Uploads every blob with curl into a fresh TLS registry, [`WORKERS`] at a time; returns
/// bytes per second (blob bytes / wall from the first POST to the last PUT's answer).
pub fn ingest(ctx: &Ctx, blobs: &[StoredBlob]) -> f64 {
    let reg = ctx.fresh_tls_registry("ceiling-target");
    let host = reg.host();
    let ca = ctx.tls.ca_crt();
    let creds = format!("{}:{}", ctx.tls.user, ctx.tls.password);
    let curl = |args: &[&str]| -> String {
        let out = Command::new("curl")
            .args(["-sS", "--cacert"])
            .arg(&ca)
            .args(["-u", &creds])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| die(&format!("curl (apt-get install curl): {e}")));
        if !out.status.success() {
            die(&format!(
                "ingest ceiling: curl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let queue = Mutex::new(blobs.iter());
    let failed = AtomicBool::new(false);
    sync_fs(&ctx.work);
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| {
                while let Some(b) = queue.lock().ok().and_then(|mut q| q.next()) {
                    let start = format!("https://{host}/v2/ceiling/blobs/uploads/");
                    let headers = curl(&["-X", "POST", "-o", "/dev/null", "-D", "-", &start]);
                    let Some(location) = headers.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("location")
                            .then(|| v.trim().to_string())
                    }) else {
                        eprintln!("ingest ceiling: no Location in\n{headers}");
                        failed.store(true, Ordering::Relaxed);
                        return;
                    };
                    let location = if location.starts_with('/') {
                        format!("https://{host}{location}")
                    } else {
                        location
                    };
                    let sep = if location.contains('?') { '&' } else { '?' };
                    let url = format!("{location}{sep}digest=sha256:{}", b.hex);
                    let path = b.path.to_string_lossy();
                    let code = curl(&[
                        "-X",
                        "PUT",
                        "-H",
                        "Expect:",
                        "-H",
                        "Content-Type: application/octet-stream",
                        "-T",
                        &path,
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code}",
                        &url,
                    ]);
                    if code.trim() != "201" {
                        eprintln!("ingest ceiling: PUT {} answered {code}", b.hex);
                        failed.store(true, Ordering::Relaxed);
                        return;
                    }
                }
            });
        }
    });
    let wall = t.elapsed().as_secs_f64();
    drop(reg);
    let _ = fs::remove_dir_all(ctx.work.join("ceiling-target"));
    if failed.load(Ordering::Relaxed) {
        die("ingest ceiling: uploads failed (see above)");
    }
    blobs.iter().map(|b| b.size).sum::<u64>() as f64 / wall
}
