//! Progress of the prepare and cleanup stages. On a terminal: one spinner line
//! with the stage, the command and the elapsed time, redrawn in place (the
//! command's output goes to its log only, and its tail is shown if it fails).
//! Elsewhere: one plain line per command, and the output streamed as it comes.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// Is the runner's stderr a terminal?
pub fn interactive() -> bool {
    // SAFETY: isatty on a standard descriptor.
    unsafe { libc::isatty(2) == 1 }
}

pub struct Spinner {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    label: String,
    start: Instant,
}

impl Spinner {
    pub fn start(label: String) -> Spinner {
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let (flag, text) = (stop.clone(), label.clone());
        let thread = std::thread::Builder::new()
            .name("spinner".into())
            .spawn(move || {
                let mut i = 0;
                while !flag.load(Ordering::Relaxed) {
                    let secs = start.elapsed().as_secs_f64();
                    let mut err = std::io::stderr().lock();
                    let _ = write!(
                        err,
                        "\r\x1b[2K{} {text} · {secs:.1}s",
                        FRAMES[i % FRAMES.len()]
                    );
                    let _ = err.flush();
                    drop(err);
                    i += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
            .ok();
        Spinner {
            stop,
            thread,
            label,
            start,
        }
    }

    /// Replace the spinner with a final line.
    pub fn finish(mut self, ok: bool) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mark = if ok { "✓" } else { "✗" };
        eprintln!(
            "\r\x1b[2K{mark} {} · {:.1}s",
            self.label,
            self.start.elapsed().as_secs_f64()
        );
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The last `lines` lines of a log, for a failure shown on a terminal.
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
