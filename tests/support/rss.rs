//! Peak memory of a child process, for "streams, never buffers a whole layer" tests.
//!
//! Why `wait4`: the kernel records the peak resident set of a process in its rusage, and
//! `wait4(pid, …, &mut rusage)` hands it over atomically as the child is reaped. Polling
//! `VmHWM` in `/proc/<pid>/status` races with exit (the file vanishes, or the last sample
//! misses the peak), and `/usr/bin/time -v` is an extra Debian package and adds a process
//! in between. `ru_maxrss` is in KiB on Linux.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;

/// Result of [`run_measuring_rss`].
#[derive(Debug)]
pub struct Measured {
    /// Exit status of the child.
    pub status: ExitStatus,
    /// Peak resident set size of the child in KiB (rusage `ru_maxrss`).
    pub peak_rss_kib: u64,
    /// Everything the child wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything the child wrote to stderr.
    pub stderr: Vec<u8>,
}

/// Runs `cmd` to completion (stdout and stderr captured, stdin null) and returns its status and
/// peak RSS. The peak covers the child itself, plus any of its own children it waited for.
pub fn run_measuring_rss(cmd: &mut Command) -> Measured {
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
        stdout: out_thread.join().expect("stdout reader"),
        stderr: err_thread.join().expect("stderr reader"),
    }
}
