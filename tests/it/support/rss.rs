//! Peak memory of a child process, for "streams, never buffers a whole layer" tests.
//!
//! Why `wait4`: the kernel records the peak resident set of a process in its rusage, and
//! `wait4(pid, …, &mut rusage)` hands it over atomically as the child is reaped. Polling
//! `VmHWM` in `/proc/<pid>/status` races with exit (the file vanishes, or the last sample
//! misses the peak), and `/usr/bin/time -v` is an extra Debian package and adds a process
//! in between. `ru_maxrss` is in KiB on Linux.
//!
//! What a child inherits: at exec the kernel folds the old address space's high-water mark
//! into the child's `ru_maxrss`, and a vfork/CLONE_VM child's old address space is this test
//! process's (all tests share it in the one test binary). So each measured run resets this
//! process's own high-water mark first (`/proc/self/clear_refs`), runs under one lock so that
//! no other measured run resets it meanwhile, and reports the mark afterwards as
//! [`Measured::inherited_kib`]: a bound on what the child may have inherited.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::thread;

/// Serialises measured runs: a reset of the high-water mark must not fall inside another run.
static MEASURING: Mutex<()> = Mutex::new(());

/// Result of [`run_measuring_rss`].
#[derive(Debug)]
pub struct Measured {
    /// Exit status of the child.
    pub status: ExitStatus,
    /// Peak resident set size of the child in KiB (rusage `ru_maxrss`).
    pub peak_rss_kib: u64,
    /// This test process's own peak RSS in KiB over the run (reset just before it): an upper
    /// bound on what the child inherited into [`Measured::peak_rss_kib`] at exec.
    pub inherited_kib: u64,
    /// Everything the child wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything the child wrote to stderr.
    pub stderr: Vec<u8>,
}

/// Runs `cmd` to completion (stdout and stderr captured, stdin null) and returns its status and
/// peak RSS. The peak covers the child itself, plus any of its own children it waited for.
pub fn run_measuring_rss(cmd: &mut Command) -> Measured {
    let _one_at_a_time = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    reset_own_peak();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut out_pipe = child.stdout.take().expect("stdout pipe");
    let mut err_pipe = child.stderr.take().expect("stderr pipe");
    let out_thread = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err_thread = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data; all-zero is a valid value that wait4 overwrites.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: pid is our unreaped child; both out-pointers are valid for the call. The
        // `Child` handle is never waited on afterwards, so std does not reap it a second time.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::Interrupted,
            "wait4({pid}) failed: {err}"
        );
    }
    drop(child);
    Measured {
        status: ExitStatus::from_raw(status),
        peak_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
        inherited_kib: own_peak_kib(),
        stdout: out_thread.join().expect("stdout reader"),
        stderr: err_thread.join().expect("stderr reader"),
    }
}

impl Measured {
    /// Whether the child stayed under `limit_kib` of its own, allowing for what it inherited
    /// (the kernel reports the larger of the two, so a child under the limit always passes).
    pub fn peak_within(&self, limit_kib: u64) -> bool {
        self.peak_rss_kib < limit_kib + self.inherited_kib
    }
}

/// Lowers this process's high-water mark to its current RSS ("5" in `proc(5)` clear_refs).
fn reset_own_peak() {
    std::fs::write("/proc/self/clear_refs", "5")
        .unwrap_or_else(|e| panic!("reset peak RSS via /proc/self/clear_refs: {e}"));
}

/// This process's peak RSS in KiB (`VmHWM`).
fn own_peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM in /proc/self/status")
}
