//! Child processes measured the way the issue asks (wall clock, user+sys CPU and peak RSS from
//! the kernel's rusage of the reaped child), and real `docker-registry` instances on 127.0.0.1.
//!
//! Why `wait4`: the kernel hands over the child's peak resident set and CPU times atomically as
//! it is reaped; polling `/proc` races with exit and `/usr/bin/time` adds a process in between.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// One measured run (or the sum of several sequential runs that form one tool invocation).
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// Wall-clock seconds.
    pub wall: f64,
    /// User + system CPU seconds of the child(ren).
    pub cpu: f64,
    /// Peak resident set size in KiB (maximum over the children).
    pub rss_kib: u64,
}

impl Sample {
    /// Adds a later sequential run: times add up, the peak is the larger one.
    pub fn then(self, other: Sample) -> Sample {
        Sample {
            wall: self.wall + other.wall,
            cpu: self.cpu + other.cpu,
            rss_kib: self.rss_kib.max(other.rss_kib),
        }
    }
}

/// Runs `cmd` to completion with stdout+stderr appended to `log`; exits the benchmark with the
/// log's tail when the child fails, since a failed run has no meaningful timing.
pub fn run(cmd: &mut Command, log: &Path) -> Sample {
    let (status, sample) = run_status(cmd, log);
    if !status.success() {
        eprintln!(
            "FAILED ({status}): {cmd:?}\n--- log tail ---\n{}",
            tail(log, 4000)
        );
        std::process::exit(1);
    }
    sample
}

/// Like [`run`] for a tool whose failure should not end the benchmark (imgpkg): `None`, with
/// the log's tail on stderr, when the child fails.
pub fn run_soft(cmd: &mut Command, log: &Path) -> Option<Sample> {
    let (status, sample) = run_status(cmd, log);
    if status.success() {
        return Some(sample);
    }
    eprintln!(
        "failed ({status}), going on without it: {cmd:?}\n--- log tail ---\n{}",
        tail(log, 2000)
    );
    None
}

/// Like [`run`] but hands back the exit status instead of giving up.
pub fn run_status(cmd: &mut Command, log: &Path) -> (ExitStatus, Sample) {
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| die(&format!("open {}: {e}", log.display())));
    let err = out
        .try_clone()
        .unwrap_or_else(|e| die(&format!("dup log: {e}")));
    force_fork(cmd);
    let start = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| die(&format!("spawn {cmd:?}: {e}")));
    let (status, usage) = wait_rusage(child);
    let wall = start.elapsed().as_secs_f64();
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let sample = Sample {
        wall,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
    };
    (status, sample)
}

/// Makes std spawn `cmd` with fork+exec instead of vfork/posix_spawn.
///
/// Why: with vfork the child execs from the *parent's* address space, and Linux keeps that
/// space's high-water RSS as the child's `ru_maxrss`, so every child would report at least the
/// driver's own peak. After a real fork the child starts from the driver's current (small)
/// resident set instead; the driver keeps its buffers small for the same reason.
fn force_fork(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook runs in the forked child before exec and does nothing at all, so it
    // cannot touch state another thread left locked.
    unsafe {
        cmd.pre_exec(|| Ok(()));
    }
}

/// Reaps `child` with `wait4` and returns its status and rusage.
fn wait_rusage(child: Child) -> (ExitStatus, libc::rusage) {
    let pid = libc::pid_t::try_from(child.id()).unwrap_or_else(|_| die("pid out of range"));
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data; all-zero is valid and wait4 overwrites it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our own unreaped child and both pointers are valid for the call;
        // the `Child` handle is dropped without waiting, so it is not reaped twice.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            die(&format!("wait4({pid}): {e}"));
        }
    }
    drop(child);
    (ExitStatus::from_raw(status), usage)
}

/// Last `n` bytes of a log file, for failure messages.
pub fn tail(path: &Path, n: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(n)));
    let mut s = Vec::new();
    let _ = f.read_to_end(&mut s);
    String::from_utf8_lossy(&s).into_owned()
}

/// Prints `msg` and ends the benchmark (registries are killed by their guards' absence: the
/// caller's process group ends; see [`Registry`] for the normal path).
pub fn die(msg: &str) -> ! {
    eprintln!("airlift-bench: {msg}");
    std::process::exit(1)
}

/// Flushes every dirty page of the filesystem holding `dir`, so that one tool's unwritten data
/// never slows the next tool's measured run.
pub fn sync_fs(dir: &Path) {
    if let Ok(f) = File::open(dir) {
        use std::os::fd::AsRawFd;
        // SAFETY: syncfs on an fd we own for the duration of the call.
        unsafe {
            libc::syncfs(f.as_raw_fd());
        }
    }
}

/// Runs a quick command and returns its trimmed stdout ("" when it is missing or fails).
pub fn output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// TLS material and credentials shared by every TLS registry of a benchmark run.
pub struct Tls {
    /// Directory holding only `ca.crt` (skopeo's `--dest-cert-dir` trusts every `.crt` there).
    pub ca_dir: PathBuf,
    /// Server certificate and key for 127.0.0.1.
    pub cert: PathBuf,
    /// Server private key.
    pub key: PathBuf,
    /// htpasswd file (bcrypt) with [`Tls::user`].
    pub htpasswd: PathBuf,
    /// Basic-auth user.
    pub user: String,
    /// Basic-auth password.
    pub password: String,
}

impl Tls {
    /// Makes a CA, a server certificate for 127.0.0.1 and an htpasswd file with openssl and
    /// htpasswd (the same tools `make demo` uses).
    pub fn create(dir: &Path) -> Tls {
        let ca_dir = dir.join("ca");
        fs::create_dir_all(&ca_dir).unwrap_or_else(|e| die(&format!("mkdir: {e}")));
        let p = |n: &str| dir.join(n).to_string_lossy().into_owned();
        let ca_crt = ca_dir.join("ca.crt").to_string_lossy().into_owned();
        let log = dir.join("openssl.log");
        let mut steps: Vec<Vec<String>> = vec![
            vec![
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=airlift bench CA",
                "-keyout",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
        ];
        steps[0].extend([p("ca.key"), "-out".into(), ca_crt.clone()]);
        steps.push(
            [
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
            ]
            .into_iter()
            .map(String::from)
            .chain([p("server.key"), "-out".into(), p("server.csr")])
            .collect(),
        );
        fs::write(
            dir.join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap_or_else(|e| die(&format!("write san.ext: {e}")));
        steps.push(
            ["x509", "-req", "-in"]
                .into_iter()
                .map(String::from)
                .chain([
                    p("server.csr"),
                    "-CA".into(),
                    ca_crt.clone(),
                    "-CAkey".into(),
                    p("ca.key"),
                    "-CAcreateserial".into(),
                    "-days".into(),
                    "2".into(),
                    "-extfile".into(),
                    p("san.ext"),
                    "-out".into(),
                    p("server.crt"),
                ])
                .collect(),
        );
        for args in &steps {
            run(Command::new("openssl").args(args), &log);
        }
        let user = "bench".to_string();
        let password = format!("bench-{}", std::process::id());
        let out = Command::new("htpasswd")
            .args(["-Bbn", &user, &password])
            .output()
            .unwrap_or_else(|e| die(&format!("htpasswd (apache2-utils): {e}")));
        let htpasswd = dir.join("htpasswd");
        fs::write(&htpasswd, &out.stdout).unwrap_or_else(|e| die(&format!("htpasswd: {e}")));
        Tls {
            ca_dir,
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
            htpasswd,
            user,
            password,
        }
    }

    /// The CA certificate file (for `--registry-ca-cert-path`).
    pub fn ca_crt(&self) -> PathBuf {
        self.ca_dir.join("ca.crt")
    }
}

/// A running `docker-registry serve` child; dropping it kills the child by PID and reaps it.
pub struct Registry {
    child: Option<Child>,
    port: u16,
    /// Root of the registry's directory (config, log, `storage/`).
    pub dir: PathBuf,
}

impl Registry {
    /// Starts a registry whose storage is `dir/storage` (kept if already populated); TLS with
    /// basic auth when `tls` is given, plain HTTP otherwise. Access logs are off and the log
    /// level is `error`, so logging does not cost the registry CPU during measurements.
    pub fn start(dir: &Path, tls: Option<&Tls>) -> Registry {
        Registry::start_opts(dir, tls, false)
    }

    /// Like [`Registry::start`] with the access log (one line per request, in `registry.log`)
    /// on: for counting which requests a client made, where CPU is not what is measured.
    pub fn start_logged(dir: &Path, tls: Option<&Tls>) -> Registry {
        Registry::start_opts(dir, tls, true)
    }

    fn start_opts(dir: &Path, tls: Option<&Tls>, access_log: bool) -> Registry {
        fs::create_dir_all(dir.join("storage")).unwrap_or_else(|e| die(&format!("mkdir: {e}")));
        for _attempt in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .unwrap_or_else(|e| die(&format!("free port: {e}")));
            let mut yaml = format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: {}\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: airlift-bench\n",
                !access_log,
                dir.join("storage").display()
            );
            if let Some(t) = tls {
                yaml.push_str(&format!(
                    "  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: bench\n    path: {}\n",
                    t.cert.display(),
                    t.key.display(),
                    t.htpasswd.display()
                ));
            }
            let config = dir.join("config.yml");
            fs::write(&config, yaml).unwrap_or_else(|e| die(&format!("write config: {e}")));
            let log = File::create(dir.join("registry.log"))
                .unwrap_or_else(|e| die(&format!("registry log: {e}")));
            let log2 = log
                .try_clone()
                .unwrap_or_else(|e| die(&format!("dup: {e}")));
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2)
                .spawn()
                .unwrap_or_else(|e| {
                    die(&format!(
                        "docker-registry (apt-get install docker-registry): {e}"
                    ))
                });
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // port taken or bad config: try another port
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Registry {
                        child: Some(child),
                        port,
                        dir: dir.to_path_buf(),
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                sleep(Duration::from_millis(25));
            }
        }
        die(&format!(
            "registry in {} did not start:\n{}",
            dir.display(),
            tail(&dir.join("registry.log"), 2000)
        ))
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Registry {
    /// Kills the registry and returns the CPU seconds (user+sys) it used over its life: for
    /// imports this shows whether the registry, not the client, was the bottleneck.
    pub fn stop(mut self) -> f64 {
        let Some(mut child) = self.child.take() else {
            return 0.0;
        };
        let _ = child.kill();
        let (_, usage) = wait_rusage(child);
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(usage.ru_utime) + tv(usage.ru_stime)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
