//! The step's resource profile: sampled from its cgroup while it runs, kept in the
//! result, and shown by `runner show` as a chart against the limits (and as an SVG),
//! with the memory to give the step.

use serde_json::Value;

use crate::common::{Runner, needs_root};
use crate::launch::launch;

/// A step that grows to ~160 MiB in 8 steps of 20 MiB, 0.15 s apart, then holds it
/// while it burns CPU for half a second.
const GROW: &str = "import time\nb = []\nfor i in range(8):\n    b.append(bytearray(20 << 20)); time.sleep(0.15)\nt = time.time()\nwhile time.time() - t < 0.5: pass\n";

const MIB: f64 = 1048576.0;

fn run_dir(r: &Value) -> String {
    let stdout = r["logs"]["stdout"].as_str().expect("stdout log");
    std::path::Path::new(stdout)
        .parent()
        .expect("run folder")
        .display()
        .to_string()
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn the_profile_follows_the_step_and_show_charts_it_against_the_limit() {
    if !needs_root() {
        return;
    }
    let (out, r) = launch(&[
        "manifests/local.yaml",
        "--memory",
        "400MiB",
        "--",
        "python3",
        "-c",
        GROW,
    ]);
    out.expect_code(0);
    let p = &r["profile"];
    assert_eq!(p["interval_secs"], 0.1, "{p}");
    let memory: Vec<u64> = p["memory_bytes"]
        .as_array()
        .expect("memory points")
        .iter()
        .map(|v| v.as_u64().expect("bytes"))
        .collect();
    let cpu: Vec<f64> = p["cpu_secs"]
        .as_array()
        .expect("cpu points")
        .iter()
        .map(|v| v.as_f64().expect("seconds"))
        .collect();
    assert_eq!(memory.len(), cpu.len());
    // About 1.7 s of run in points of 0.1 s.
    assert!(memory.len() >= 10, "{memory:?}");
    // The profile grows with the step: its first points are far below its last.
    let (first, highest) = (
        memory[0] as f64 / MIB,
        *memory.iter().max().unwrap() as f64 / MIB,
    );
    assert!(
        first < 60.0 && highest > 150.0,
        "{first} … {highest} MiB: {memory:?}"
    );
    // The sampled peak is within 20 % of the kernel's.
    let kernel = r["peak_memory_bytes"].as_f64().expect("peak") / MIB;
    assert!(
        highest <= kernel * 1.001 && highest >= kernel * 0.8,
        "sampled {highest} MiB, kernel {kernel} MiB"
    );
    assert!(cpu.windows(2).all(|w| w[0] <= w[1]), "cumulative: {cpu:?}");
    // Half a second of busy loop at the end: its points run at about one core.
    let tail = cpu[cpu.len() - 1] - cpu[cpu.len() - 4];
    assert!(tail > 0.15, "cpu over the last 0.3 s: {tail}");

    let dir = run_dir(&r);
    let svg = tempfile::tempdir()
        .expect("temp folder")
        .keep()
        .join("p.svg");
    let shown = Runner::new()
        .env("COLUMNS", "80")
        .args(["show", &dir, "--svg", &svg.display().to_string()])
        .run();
    shown.expect_code(0);
    let text = &shown.stdout;
    assert!(text.contains("of a 400.0 MiB limit"), "{text}");
    assert!(text.contains("give it 256 MiB"), "{text}");
    for line in text.lines() {
        assert!(
            line.chars().count() <= 80,
            "wider than 80 columns: {line:?}"
        );
    }
    assert!(
        text.contains('█') && text.contains('┈'),
        "a chart with its limit:\n{text}"
    );
    let svg_text = std::fs::read_to_string(&svg).expect("the SVG was written");
    assert!(svg_text.starts_with("<svg ") && svg_text.ends_with("</svg>\n"));
    assert_eq!(svg_text.matches("<polyline").count(), 2, "memory and cpu");
    assert!(svg_text.contains("<title>limit</title>"));
    let _ = std::fs::remove_dir_all(svg.parent().expect("folder"));

    let json = Runner::new().args(["show", &dir, "--json"]).run();
    json.expect_code(0);
    let j = json.json();
    assert_eq!(j["memory_limit_bytes"], 400 * 1048576);
    assert_eq!(j["suggested_memory_bytes"], 256 * 1048576);
    assert_eq!(j["profile"], *p);
}

#[test]
fn show_refuses_what_it_cannot_show() {
    let out = Runner::new().args(["show", "no-such-run"]).run();
    out.expect_code(2);
    assert!(out.stderr.contains("runner ps --all"), "{}", out.stderr);
}
