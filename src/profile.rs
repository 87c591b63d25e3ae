//! A step's resource profile: its memory and CPU use over the run, sampled from its
//! cgroup by the supervise loop and kept compact in the result, for sizing a step
//! (`runner show RUN` charts it against the limit and suggests a memory request).
//!
//! The profile holds at most [`MAX_POINTS`] points of equal width. Sampling starts
//! every [`FIRST_INTERVAL`]; when the points are full, each pair is merged into one
//! (the larger memory, the later CPU time) and the interval doubles — so a run of any
//! length costs the same few kilobytes and a sample every `interval`, never more.
//! A point's memory is the highest *sampled* use in its width: a lower bound of the
//! true peak, which the kernel's `memory.peak` (where it exists) gives exactly.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::units::Bytes;

/// The most points a profile holds.
pub const MAX_POINTS: usize = 120;
/// The first sampling interval.
pub const FIRST_INTERVAL: Duration = Duration::from_millis(100);

/// What the result keeps: point `i` covers `[i, i+1) × interval_secs` from the step's
/// start; `memory_bytes[i]` is the highest use sampled in it, `cpu_secs[i]` the CPU
/// time used by its end (cumulative). The arrays have the same length.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub interval_secs: f64,
    pub memory_bytes: Vec<u64>,
    pub cpu_secs: Vec<f64>,
}

impl Profile {
    /// The highest sampled memory use.
    pub fn peak(&self) -> Option<u64> {
        self.memory_bytes.iter().copied().max()
    }

    /// CPU cores in use over point `i` (its CPU time over its width).
    pub fn cores(&self, i: usize) -> f64 {
        let before = if i == 0 { 0.0 } else { self.cpu_secs[i - 1] };
        ((self.cpu_secs[i] - before) / self.interval_secs).max(0.0)
    }
}

/// Takes the samples: the supervise loop asks [`Sampler::due`] when to wake and hands
/// it each reading.
#[derive(Debug)]
pub struct Sampler {
    start: Instant,
    interval: Duration,
    /// Readings of the point being filled (its width is `interval`).
    pending: Option<(u64, f64)>,
    /// The last point pushed.
    last: Option<(u64, f64)>,
    next: Instant,
    profile: Profile,
    samples: u64,
}

impl Sampler {
    pub fn new(start: Instant) -> Sampler {
        Sampler {
            start,
            interval: FIRST_INTERVAL,
            pending: None,
            last: None,
            next: start + FIRST_INTERVAL,
            profile: Profile {
                interval_secs: FIRST_INTERVAL.as_secs_f64(),
                ..Profile::default()
            },
            samples: 0,
        }
    }

    /// When the next sample is due.
    pub fn due(&self) -> Instant {
        self.next
    }

    /// One reading at `now`: memory in use and CPU time so far (either may be
    /// unknown, e.g. no memory controller).
    pub fn sample(&mut self, now: Instant, memory: Option<u64>, cpu_ns: Option<u64>) {
        self.samples += 1;
        let point = (memory.unwrap_or(0), cpu_ns.map_or(0.0, secs));
        // Which point `now` falls in (a reading at the end of a point's width is its
        // last); a late wake-up carries the last reading over the points it skipped.
        // (A push may halve the points: the index is taken again with the new width.)
        let elapsed = now.saturating_duration_since(self.start);
        while self.profile.memory_bytes.len() < self.index_at(elapsed) {
            let (m, c) = self.pending.take().or(self.last).unwrap_or(point);
            self.push(m, c);
        }
        let index = self.index_at(elapsed);
        let p = &mut self.profile;
        if index < p.memory_bytes.len() {
            // The points were just halved: this reading is in the last one pushed.
            let last = p.memory_bytes.len() - 1;
            p.memory_bytes[last] = p.memory_bytes[last].max(point.0);
            p.cpu_secs[last] = point.1;
            self.next = (self.start + self.interval * (last as u32 + 1)).max(now + FIRST_INTERVAL);
            return;
        }
        self.pending = Some(match self.pending {
            Some((m, _)) => (m.max(point.0), point.1),
            None => point,
        });
        self.next = self.start + self.interval * (self.profile.memory_bytes.len() as u32 + 1);
        if self.next <= now {
            self.next = now + self.interval;
        }
    }

    /// The point a reading `elapsed` after the start falls in, at the current width (a
    /// reading at the end of a point's width is its last).
    fn index_at(&self, elapsed: Duration) -> usize {
        (elapsed.as_nanos().saturating_sub(1) / self.interval.as_nanos().max(1)) as usize
    }

    fn push(&mut self, memory: u64, cpu: f64) {
        if self.profile.memory_bytes.len() == MAX_POINTS {
            self.halve();
        }
        self.profile.memory_bytes.push(memory);
        self.profile.cpu_secs.push(cpu);
        self.last = Some((memory, cpu));
    }

    /// Merge each pair of points into one of twice the width.
    fn halve(&mut self) {
        let p = &mut self.profile;
        let merged = p.memory_bytes.len() / 2;
        for i in 0..merged {
            p.memory_bytes[i] = p.memory_bytes[2 * i].max(p.memory_bytes[2 * i + 1]);
            p.cpu_secs[i] = p.cpu_secs[2 * i + 1];
        }
        p.memory_bytes.truncate(merged);
        p.cpu_secs.truncate(merged);
        self.interval *= 2;
        p.interval_secs = self.interval.as_secs_f64();
        // A pending reading is now in the first half of a point twice as wide.
    }

    /// How many readings were taken.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// The profile, with the last, partly filled point.
    pub fn finish(mut self) -> Profile {
        if let Some((m, c)) = self.pending.take() {
            self.push(m, c);
        }
        self.profile
    }
}

/// Nanoseconds as seconds, to the millisecond (what a profile point keeps).
fn secs(ns: u64) -> f64 {
    (ns / 1_000_000) as f64 / 1e3
}

/// A memory request to suggest for a step that peaked at `peak` (bytes), with room for
/// a run that uses a bit more: the peak plus a quarter, rounded up to a "round" size
/// (a power of two, or 1.5 times one), at least 64 MiB.
pub fn suggest_memory(peak: u64) -> u64 {
    const MIB: u64 = 1 << 20;
    let want = peak.saturating_add(peak / 4).max(64 * MIB);
    let mut size = 64 * MIB;
    while size < want {
        let half_step = size + size / 2;
        if half_step >= want {
            return half_step;
        }
        size = size.saturating_mul(2);
    }
    size
}

/// What to ask for, in words: `peak 381.0 MiB of a 400.0 MiB limit (95%): give it 512 MiB`.
pub fn suggestion(peak: u64, limit: Option<u64>) -> String {
    let give = crate::units::exact_bytes(suggest_memory(peak));
    match limit {
        Some(l) if l > 0 => format!(
            "peak {} of a {} limit ({}%): give it {give}",
            Bytes(peak),
            Bytes(l),
            (peak as f64 * 100.0 / l as f64).round()
        ),
        _ => format!("peak {}, no memory limit: give it {give}", Bytes(peak)),
    }
}

/// What the chart and the SVG draw: memory and its top (the limit, or the peak above
/// it), cores per point and their top.
struct Scales {
    memory: Vec<f64>,
    memory_top: f64,
    cores: Vec<f64>,
    cores_top: f64,
}

impl Scales {
    fn of(p: &Profile, memory_limit: Option<u64>, cpus_limit: Option<f64>) -> Scales {
        let peak = p.peak().unwrap_or(0);
        let cores: Vec<f64> = (0..p.cpu_secs.len()).map(|i| p.cores(i)).collect();
        let busiest = cores.iter().copied().fold(0.0, f64::max);
        Scales {
            memory: p.memory_bytes.iter().map(|&m| m as f64).collect(),
            memory_top: memory_limit.map_or(peak, |l| l.max(peak)).max(1) as f64,
            cores,
            cores_top: cpus_limit.map_or(busiest, |l| l.max(busiest)).max(0.01),
        }
    }
}

/// Eight heights of a block, for charts in a terminal.
const BLOCKS: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// The values resampled to `width` columns (each column the largest value it covers).
fn columns(values: &[f64], width: usize) -> Vec<f64> {
    if values.is_empty() || width == 0 {
        return Vec::new();
    }
    let width = width.min(values.len());
    (0..width)
        .map(|c| {
            let from = c * values.len() / width;
            let to = ((c + 1) * values.len() / width).max(from + 1);
            values[from..to].iter().copied().fold(0.0, f64::max)
        })
        .collect()
}

/// A bar chart of `values` (0 ≤ v ≤ `top`) `height` rows high, top row first; a
/// row holding `mark` (e.g. the limit) is drawn with `┈` where no bar reaches.
fn bars(values: &[f64], top: f64, height: usize, mark: Option<f64>) -> Vec<String> {
    let eighths = |v: f64| ((v / top).clamp(0.0, 1.0) * (height * 8) as f64).round() as usize;
    let mark_row = mark.map(|m| height - 1 - (eighths(m).saturating_sub(1) / 8).min(height - 1));
    (0..height)
        .map(|row| {
            let floor = (height - 1 - row) * 8;
            values
                .iter()
                .map(|&v| {
                    let e = eighths(v).saturating_sub(floor).min(8);
                    if e == 0 && mark_row == Some(row) {
                        '┈'
                    } else {
                        BLOCKS[e]
                    }
                })
                .collect()
        })
        .collect()
}

/// The profile as lines for a terminal at most `width` columns wide: memory against
/// its limit, then CPU cores against theirs.
pub fn chart(
    p: &Profile,
    memory_limit: Option<u64>,
    cpus_limit: Option<f64>,
    width: usize,
) -> Vec<String> {
    const AXIS: usize = 12;
    let cols = width.saturating_sub(AXIS + 1).max(8);
    let mut lines = Vec::new();
    let Scales {
        memory,
        memory_top: top,
        cores,
        cores_top: ctop,
    } = Scales::of(p, memory_limit, cpus_limit);
    let mem_cols = columns(&memory, cols);
    let rows = bars(&mem_cols, top, 6, memory_limit.map(|l| l as f64));
    for (i, row) in rows.iter().enumerate() {
        let label = match i {
            0 => format!("{}", Bytes(top as u64)),
            5 => "0".to_string(),
            _ => String::new(),
        };
        lines.push(format!("{label:>w$} ┤{row}", w = AXIS - 1));
    }
    let end = p.interval_secs * p.memory_bytes.len() as f64;
    let span = mem_cols.len();
    let right = format!("{end:.1}s");
    lines.push(format!("{:>w$} └{}", "", "─".repeat(span), w = AXIS - 1));
    lines.push(format!(
        "{:>w$}  0s{right:>r$}",
        "",
        w = AXIS - 1,
        r = span.saturating_sub(2).max(right.len())
    ));
    let cpu_cols = columns(&cores, cols);
    let rows = bars(&cpu_cols, ctop, 2, cpus_limit);
    for (i, row) in rows.iter().enumerate() {
        let label = if i == 0 {
            format!("{ctop:.2} cores")
        } else {
            "cpu".to_string()
        };
        lines.push(format!("{label:>w$} ┤{row}", w = AXIS - 1));
    }
    lines
}

/// One chart of the SVG: name, values, top of the scale, limit, top label, colour.
type Panel<'a> = (&'a str, Vec<f64>, f64, Option<f64>, String, &'a str);

/// The profile as a standalone SVG: memory (and its limit) above, CPU cores below.
pub fn svg(p: &Profile, memory_limit: Option<u64>, cpus_limit: Option<f64>, title: &str) -> String {
    use std::fmt::Write;
    const W: f64 = 640.0;
    const PANEL: f64 = 160.0;
    const LEFT: f64 = 70.0;
    let n = p.memory_bytes.len().max(1) as f64;
    let x = |i: usize| LEFT + (W - LEFT - 10.0) * i as f64 / n;
    let Scales {
        memory,
        memory_top: mtop,
        cores,
        cores_top: ctop,
    } = Scales::of(p, memory_limit, cpus_limit);
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let mut out = String::new();
    let h = 40.0 + 2.0 * (PANEL + 30.0);
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<title>{}</title>"#, escape(title));
    let _ = writeln!(out, r#"<text x="{LEFT}" y="20">{}</text>"#, escape(title));
    let panels: [Panel; 2] = [
        (
            "memory",
            memory,
            mtop,
            memory_limit.map(|l| l as f64),
            Bytes(mtop as u64).to_string(),
            "#3b6ea5",
        ),
        (
            "cpu",
            cores,
            ctop,
            cpus_limit,
            format!("{ctop:.2} cores"),
            "#c0504d",
        ),
    ];
    for (k, (name, values, top, limit, label, color)) in panels.into_iter().enumerate() {
        let y0 = 40.0 + k as f64 * (PANEL + 30.0);
        let y = |v: f64| y0 + PANEL - PANEL * (v / top).clamp(0.0, 1.0);
        let _ = writeln!(
            out,
            r##"<rect x="{LEFT}" y="{y0}" width="{}" height="{PANEL}" fill="none" stroke="#999"/>"##,
            W - LEFT - 10.0
        );
        let _ = writeln!(
            out,
            r#"<text x="4" y="{}">{}</text>"#,
            y0 + 12.0,
            escape(&label)
        );
        let _ = writeln!(out, r#"<text x="4" y="{}">{name}</text>"#, y0 + PANEL);
        let mut points = String::new();
        for (i, v) in values.iter().enumerate() {
            let _ = write!(
                points,
                "{:.1},{:.1} {:.1},{:.1} ",
                x(i),
                y(*v),
                x(i + 1),
                y(*v)
            );
        }
        let _ = writeln!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            points.trim_end()
        );
        if let Some(l) = limit {
            let _ = writeln!(
                out,
                r##"<line x1="{LEFT}" y1="{ly:.1}" x2="{}" y2="{ly:.1}" stroke="#000" stroke-dasharray="4 3"><title>limit</title></line>"##,
                W - 10.0,
                ly = y(l)
            );
        }
    }
    let end = p.interval_secs * p.memory_bytes.len() as f64;
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="{}">0s</text><text x="{}" y="{}" text-anchor="end">{end:.1}s</text>"#,
        h - 6.0,
        W - 10.0,
        h - 6.0
    );
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn points_hold_the_highest_memory_and_the_cpu_at_their_end() {
        let t0 = Instant::now();
        let mut s = Sampler::new(t0);
        assert_eq!(s.due(), at(t0, 100));
        s.sample(at(t0, 100), Some(10), Some(50_000_000));
        s.sample(at(t0, 200), Some(30), Some(150_000_000));
        s.sample(at(t0, 300), Some(20), Some(250_000_000));
        // A last reading within the same point: the larger memory, the later CPU time.
        s.sample(at(t0, 300), Some(5), Some(260_000_000));
        let p = s.finish();
        assert_eq!(p.interval_secs, 0.1);
        // A reading at the end of [0, 100) lands in the point it starts: [100, 200).
        assert_eq!(p.memory_bytes, vec![10, 30, 20]);
        assert_eq!(p.cpu_secs, vec![0.05, 0.15, 0.26]);
        assert_eq!(p.peak(), Some(30));
        assert!((p.cores(1) - 1.0).abs() < 1e-9, "{}", p.cores(1));
    }

    #[test]
    fn a_long_run_stays_within_the_points_and_keeps_its_peak() {
        let t0 = Instant::now();
        let mut s = Sampler::new(t0);
        let mut now = t0;
        let mut n = 0u64;
        // An hour: the interval doubles as the points fill.
        while now < t0 + Duration::from_secs(3600) {
            now = s.due();
            n += 1;
            let memory = if n == 400 { 9_000 } else { n % 100 };
            s.sample(now, Some(memory), Some(n * 1_000_000));
        }
        let taken = s.samples();
        let p = s.finish();
        assert!(
            p.memory_bytes.len() <= MAX_POINTS,
            "{}",
            p.memory_bytes.len()
        );
        assert_eq!(p.memory_bytes.len(), p.cpu_secs.len());
        assert_eq!(p.peak(), Some(9_000), "the spike survives every merge");
        // Few samples for an hour: the interval grew to a minute and more.
        assert!(p.interval_secs >= 30.0, "{}", p.interval_secs);
        assert!((400..1000).contains(&taken), "{taken} samples");
        assert!(
            p.cpu_secs.windows(2).all(|w| w[0] <= w[1]),
            "cpu is cumulative"
        );
    }

    #[test]
    fn a_late_wake_up_fills_the_points_it_missed() {
        let t0 = Instant::now();
        let mut s = Sampler::new(t0);
        s.sample(at(t0, 100), Some(1), Some(0));
        s.sample(at(t0, 550), Some(7), Some(0));
        let p = s.finish();
        assert_eq!(p.memory_bytes, vec![1, 1, 1, 1, 1, 7]);
    }

    #[test]
    fn suggestions_leave_room_and_are_round() {
        const MIB: u64 = 1 << 20;
        assert_eq!(suggest_memory(0), 64 * MIB);
        assert_eq!(suggest_memory(381 * MIB), 512 * MIB);
        assert_eq!(suggest_memory(100 * MIB), 128 * MIB);
        assert_eq!(suggest_memory(700 * MIB), 1024 * MIB);
        assert_eq!(suggest_memory(900 * MIB), 1536 * MIB);
        assert!(suggest_memory(u64::MAX) >= u64::MAX / 2);
    }
}
