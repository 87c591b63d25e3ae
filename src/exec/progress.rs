//! Progress of the prepare and cleanup stages. On a terminal: one spinner line
//! with the stage, the command and the elapsed time, redrawn in place and cut to
//! the terminal's width so it never wraps (the command's output goes to its log
//! only, and its tail is shown if it fails). Elsewhere, under `TERM=dumb` or with
//! `RUNNER_PROGRESS=plain`: one plain line per command, and the output streamed as
//! it comes.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// The variable that turns the spinner off: `RUNNER_PROGRESS=plain`.
pub const PROGRESS_VAR: &str = "RUNNER_PROGRESS";

/// Whether progress is drawn in place: stderr is a terminal that can move its cursor
/// (not `TERM=dumb`) and the user did not ask for plain lines.
pub fn interactive() -> bool {
    let plain = std::env::var(PROGRESS_VAR).is_ok_and(|v| v == "plain" || v == "0");
    let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
    !plain && !dumb && std::io::IsTerminal::is_terminal(&std::io::stderr())
}

/// The terminal's width in columns (80 when it does not say).
fn width() -> usize {
    // SAFETY: TIOCGWINSZ fills a winsize; a failure leaves it zeroed.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(2, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 {
        usize::from(ws.ws_col)
    } else {
        80
    }
}

/// `mark label · 1.2s` in at most `width - 1` columns (the last column would make
/// some terminals wrap): the label is cut with `…`, the time always shown.
pub fn fit(mark: char, label: &str, secs: f64, width: usize) -> String {
    let tail = format!(" · {secs:.1}s");
    let room = width
        .saturating_sub(1)
        .saturating_sub(2 + tail.chars().count());
    let label: String = if label.chars().count() > room {
        let mut cut: String = label.chars().take(room.saturating_sub(1)).collect();
        cut.push('…');
        cut
    } else {
        label.to_string()
    };
    format!("{mark} {label}{tail}")
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
                    // Read each frame: the terminal may be resized while a command runs.
                    let line = fit(FRAMES[i % FRAMES.len()], &text, secs, width());
                    let mut err = std::io::stderr().lock();
                    let _ = write!(err, "\r\x1b[2K{line}");
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
        let mark = if ok { '✓' } else { '✗' };
        let secs = self.start.elapsed().as_secs_f64();
        eprintln!("\r\x1b[2K{}", fit(mark, &self.label, secs, width()));
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
/// Only the log's last 64 KiB are read (a log can be larger than memory); a line cut
/// there is dropped.
pub fn tail(path: &Path, lines: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    const KEEP: u64 = 64 << 10;
    let Ok((mut f, meta)) = crate::util::open_run_file(path) else {
        return String::new();
    };
    let cut = meta.len() > KEEP;
    let mut bytes = Vec::new();
    let read = f
        .seek(SeekFrom::Start(meta.len().saturating_sub(KEEP)))
        .and_then(|_| f.take(KEEP).read_to_end(&mut bytes));
    if read.is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().skip(usize::from(cut)).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed command's last lines come from the end of its log alone, however large
    /// the log (no line cut by the 64 KiB window is shown).
    #[test]
    fn a_tail_reads_the_end_of_a_log_only() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("prepare-1.log");
        let text: String = (0..100_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, &text).unwrap();
        assert_eq!(tail(&log, 2), "line 99998\nline 99999");
        let shown = tail(&log, 1_000_000);
        assert!(shown.len() <= 64 << 10, "{} bytes", shown.len());
        assert!(
            shown.lines().all(|l| l.starts_with("line ")),
            "a cut line is dropped"
        );
        assert!(shown.ends_with("line 99999"));
        std::fs::write(&log, "a\nb\n").unwrap();
        assert_eq!(tail(&log, 5), "a\nb");
    }

    #[test]
    fn a_line_fits_the_width_and_keeps_its_time() {
        let label = format!("prepare 2/2 `docker build {}`", "x".repeat(200));
        for width in [20, 40, 80, 132] {
            let line = fit('⠋', &label, 12.34, width);
            assert_eq!(line.chars().count(), width - 1, "{line}");
            assert!(line.ends_with("… · 12.3s"), "{line}");
        }
        assert_eq!(
            fit('✓', "prepare 1/1 `true`", 0.0, 80),
            "✓ prepare 1/1 `true` · 0.0s"
        );
        // Narrower than the time itself: never panics, never more than asked.
        assert!(fit('⠋', &label, 1.0, 3).chars().count() <= 10);
    }
}
