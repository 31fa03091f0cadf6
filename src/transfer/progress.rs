//! Progress for long transfers: a bar on a terminal, plain lines otherwise, nothing with `--quiet`.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A live bar (stderr is a terminal).
    Bar,
    /// A log line every few seconds and per finished phase.
    Lines,
    /// Nothing.
    Quiet,
}

impl ProgressMode {
    /// Bar on a terminal, lines otherwise; quiet when asked.
    pub fn detect(quiet: bool) -> ProgressMode {
        if quiet {
            ProgressMode::Quiet
        } else if std::io::stderr().is_terminal() {
            ProgressMode::Bar
        } else {
            ProgressMode::Lines
        }
    }
}

/// Counts bytes and blobs of one phase and shows them.
pub struct Progress {
    mode: ProgressMode,
    bar: Option<ProgressBar>,
    label: String,
    total_bytes: u64,
    total_blobs: u64,
    bytes: AtomicU64,
    blobs: AtomicU64,
    started: Instant,
    last_line: Mutex<Instant>,
}

impl Progress {
    /// Starts a phase of `total_blobs` blobs and `total_bytes` bytes.
    pub fn new(mode: ProgressMode, label: &str, total_blobs: u64, total_bytes: u64) -> Progress {
        let bar = (mode == ProgressMode::Bar).then(|| {
            let b = ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.set_message(format!("{label} 0/{total_blobs} blobs"));
            b
        });
        Progress {
            mode,
            bar,
            label: label.to_owned(),
            total_bytes,
            total_blobs,
            bytes: AtomicU64::new(0),
            blobs: AtomicU64::new(0),
            started: Instant::now(),
            last_line: Mutex::new(Instant::now()),
        }
    }

    /// Records `n` more bytes moved.
    pub fn add_bytes(&self, n: u64) {
        let done = self.bytes.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(b) = &self.bar {
            b.set_position(done);
        } else if self.mode == ProgressMode::Lines {
            let mut last = self.last_line.lock().unwrap_or_else(|p| p.into_inner());
            if last.elapsed() >= Duration::from_secs(5) {
                *last = Instant::now();
                eprintln!(
                    "{}: {}/{} blobs, {} of {} bytes",
                    self.label,
                    self.blobs.load(Ordering::Relaxed),
                    self.total_blobs,
                    done,
                    self.total_bytes
                );
            }
        }
    }

    /// Records one more blob finished.
    pub fn blob_done(&self) {
        let n = self.blobs.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(b) = &self.bar {
            b.set_message(format!("{} {n}/{} blobs", self.label, self.total_blobs));
        }
    }

    /// Prints a line (above the bar if there is one).
    pub fn println(&self, line: &str) {
        match (&self.bar, self.mode) {
            (_, ProgressMode::Quiet) => {}
            (Some(b), _) => b.println(line),
            (None, _) => eprintln!("{line}"),
        }
    }

    /// Ends the phase.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        if self.mode != ProgressMode::Quiet {
            let secs = self.started.elapsed().as_secs_f64();
            let bytes = self.bytes.load(Ordering::Relaxed);
            eprintln!(
                "{}: {} blobs, {} bytes in {:.1}s ({:.1} MB/s)",
                self.label,
                self.blobs.load(Ordering::Relaxed),
                bytes,
                secs,
                bytes as f64 / secs.max(1e-9) / 1e6
            );
        }
    }
}

impl super::engine::Reporter for Progress {
    fn bytes(&self, n: u64) {
        self.add_bytes(n);
    }

    fn blob_done(&self) {
        Progress::blob_done(self);
    }
}
