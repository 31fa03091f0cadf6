//! `airlift serve` run as a user runs it: a child process on a free loopback port, its stderr
//! in a file (a pipe nobody reads would stall it), stopped with SIGTERM like a service manager.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::cli::airlift_cmd;
use super::registry::free_port;

/// How long startup may take before the test gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `airlift serve`.
pub struct Served {
    child: Option<Child>,
    log: PathBuf,
    /// Port on 127.0.0.1.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Served {
    /// Starts `airlift serve ARGS --listen 127.0.0.1:PORT` and waits for its "listening" line.
    pub fn start(home: &Path, args: &[&str]) -> Served {
        Self::try_start(home, args)
            .unwrap_or_else(|log| panic!("airlift serve did not start:\n{log}"))
    }

    /// As [`Served::start`], but returns the output when serve exits instead of listening.
    pub fn try_start(home: &Path, args: &[&str]) -> Result<Served, String> {
        let dir = tempfile::tempdir().expect("serve log dir");
        let log = dir.path().join("serve.log");
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let child = airlift_cmd(home)
            .arg("serve")
            .args(args)
            .args(["--listen", &listen])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("create serve log"))
            .spawn()
            .expect("spawn airlift serve");
        let mut s = Served {
            child: Some(child),
            log,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if s.log_text().contains("listening on") {
                return Ok(s);
            }
            if let Some(status) = s.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                s.child = None;
                return Err(format!("exited with {status}:\n{}", s.log_text()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "not listening after {READY_TIMEOUT:?}:\n{}",
                    s.log_text()
                ));
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Everything serve printed on stderr so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit; returns the status and the whole log.
    pub fn stop(&mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().expect("serve is running");
        let pid = child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let status = child.wait().expect("wait for airlift serve");
        (status, self.log_text())
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One response as curl saw it.
#[derive(Debug)]
pub struct CurlResponse {
    /// HTTP status.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
    /// curl's exit code (18: the body ended before its Content-Length).
    pub exit: i32,
}

impl CurlResponse {
    /// First value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The first error code of a spec error envelope.
    pub fn error_code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// Runs curl with `args` (URL last) and parses status, headers and body.
pub fn curl(args: &[&str]) -> CurlResponse {
    let dir = tempfile::tempdir().expect("curl dir");
    let (head, body) = (dir.path().join("head"), dir.path().join("body"));
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-D"])
        .arg(&head)
        .arg("-o")
        .arg(&body)
        .args(args)
        .output()
        .expect("run curl (apt-get install curl)");
    let head_text = fs::read_to_string(&head).unwrap_or_default();
    // With redirects or 100-continue there may be several heads: the last one counts.
    let last = head_text
        .split("\r\n\r\n")
        .filter(|h| h.starts_with("HTTP/"))
        .last()
        .unwrap_or_default()
        .to_string();
    let mut lines = last.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    CurlResponse {
        status,
        headers,
        body: fs::read(&body).unwrap_or_default(),
        exit: out.status.code().unwrap_or(-1),
    }
}
