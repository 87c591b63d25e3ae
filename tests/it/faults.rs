//! The fault suite: what a user sees when things go wrong around a step — a runner
//! killed while preparing, a run folder on a full or read-only filesystem, a step
//! with unusual output, a step that leaves 1,000 processes behind, 200 launches at
//! once, hostile step names and requirements. Needs root (cgroups, mounts); with
//! `CI=true` these tests fail instead of skipping.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Runner, root};
use crate::launch::{
    assert_nothing_left, cgroups_of, launch, launch_with, needs_root, processes_with, run_id,
    spawn_runner, wait_for,
};

/// A mount that is undone when the guard drops, also when an assertion failed.
struct Mount {
    path: PathBuf,
}

impl Mount {
    /// `mount -t tmpfs -o OPTIONS none PATH` (PATH is created).
    fn tmpfs(path: &Path, options: &str) -> Mount {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "none"])
            .arg(path)
            .status()
            .expect("mount runs");
        assert!(status.success(), "mount tmpfs -o {options} on {path:?}");
        Mount {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Something still uses it: detach it now, the kernel frees it when unused.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// The run folder of a result.
fn run_dir(r: &Value) -> PathBuf {
    PathBuf::from(r["logs"]["stdout"].as_str().expect("logs.stdout"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(path: impl AsRef<Path>) -> Vec<u8> {
    let path = path.as_ref();
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn prepare_killed_halfway_is_redone_and_never_reused() {
    if !needs_root() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let set_out = format!("out={}", out.path().display());
    let log = out.path().join("prepare-log");
    // The first launch prepares slowly; SIGKILL the runner while it does.
    let mut first = spawn_runner(
        home.path(),
        &[
            "tests/fixtures/launch/slow-prepare.yaml",
            "--set",
            &set_out,
            "--set",
            "prepare_sleep=1000.7171",
            "--",
            "true",
        ],
    );
    wait_for(&log, Duration::from_secs(30));
    let first_run = std::fs::read_dir(home.path().join("runs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .expect("the first run's folder");
    assert!(
        cgroups_of(&first_run)
            .iter()
            .any(|d| d.join("prepare").is_dir()),
        "the prepare command runs in its own cgroup"
    );
    first.kill().unwrap();
    first.wait().unwrap();

    // The next launch finds the half-built entry and builds it again.
    let step = ["sh", "-c", r#"cat "$ENTRY/built-by" "$ENTRY/complete""#];
    let args: Vec<&str> = [
        "tests/fixtures/launch/slow-prepare.yaml",
        "--set",
        &set_out,
        "--",
    ]
    .into_iter()
    .chain(step)
    .collect();
    let (o, r) = launch_with(Runner::new().env("RUNNER_HOME", home.path()), &args);
    o.expect_code(0);
    assert_eq!(r["cache"]["hit"], false, "a half-built entry is not a hit");
    assert_eq!(r["stages"]["prepare"]["status"], "ok");
    let second = run_id(&r).to_string();
    assert_eq!(
        String::from_utf8(read(run_dir(&r).join("stdout.log"))).unwrap(),
        format!("{second}\ncomplete\n"),
        "the step sees the entry the second launch built"
    );
    // What the killed prepare left running (its `sleep`, a grandchild that PDEATHSIG
    // does not reach) was killed before the entry was rebuilt, and its cgroup removed.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !processes_with("sleep 1000.7171").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the killed prepare's processes survive the next launch: {:?}",
            processes_with("sleep 1000.7171")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(cgroups_of(&first_run), Vec::<PathBuf>::new());
    let attempts = String::from_utf8(read(&log)).unwrap();
    assert_eq!(attempts.lines().count(), 2, "prepare ran twice: {attempts}");

    // And the entry it completed is reused from then on.
    let (o, r) = launch_with(Runner::new().env("RUNNER_HOME", home.path()), &args);
    o.expect_code(0);
    assert_eq!(r["cache"]["hit"], true);
    assert_eq!(
        String::from_utf8(read(run_dir(&r).join("stdout.log"))).unwrap(),
        format!("{second}\ncomplete\n")
    );
    assert_eq!(String::from_utf8(read(&log)).unwrap(), attempts);
}

/// Launch a step that would create `marker`, with its run folder placed by `place`
/// on a filesystem that cannot take it; the runner must refuse before the step starts.
fn refuses_unusable_run_folder(place: impl FnOnce(Runner, &Path) -> Runner, fs: &Path) {
    let markers = tempfile::tempdir().unwrap();
    let marker = markers.path().join("step-ran");
    let touch = format!("touch {}", marker.display());
    let before = entries_under(fs);
    let r = Runner::new().args(["launch", "--json", "-q"]);
    let o = place(r, fs)
        .args(["manifests/local.yaml", "--", "sh", "-c", &touch])
        .run();
    o.expect_code(125);
    assert!(
        o.stderr.contains("error: cannot create the run folder"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.contains("the step was not started"),
        "{}",
        o.stderr
    );
    assert!(o.stdout.is_empty(), "no result: {}", o.stdout);
    assert!(!marker.exists(), "the step ran");
    // Nothing at all: no run folder, no `runs/` of a fresh `RUNNER_HOME`, no file.
    let left: Vec<_> = entries_under(fs)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert!(left.is_empty(), "left on the filesystem: {left:?}");
}

/// Every file and folder under `dir`.
fn entries_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(entries_under(&p));
        }
        out.push(p);
    }
    out
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn run_folder_on_a_full_filesystem_refuses_before_the_step() {
    if !needs_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let full = Mount::tmpfs(&tmp.path().join("full"), "size=1m");
    // Fill it to the last byte.
    let mut filler = std::fs::File::create(full.path.join("filler")).unwrap();
    let block = vec![0u8; 4096];
    while filler.write_all(&block).is_ok() {}
    let _ = filler.flush();
    drop(filler);
    refuses_unusable_run_folder(|r, fs| r.arg("--run-dir").arg(fs.join("run")), &full.path);
    refuses_unusable_run_folder(|r, fs| r.env("RUNNER_HOME", fs.join("home")), &full.path);
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn run_folder_on_a_read_only_filesystem_refuses_before_the_step() {
    if !needs_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ro = Mount::tmpfs(&tmp.path().join("ro"), "ro,size=1m");
    refuses_unusable_run_folder(|r, fs| r.arg("--run-dir").arg(fs.join("run")), &ro.path);
    refuses_unusable_run_folder(|r, fs| r.env("RUNNER_HOME", fs), &ro.path);
}

/// `runner launch manifests/local.yaml -- sh -c SCRIPT` with the live copy on: the
/// runner's own stdout and stderr as raw bytes, and the result.
fn launch_raw(script: &str) -> (Vec<u8>, Vec<u8>, Value, tempfile::TempDir) {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(assert_cmd::cargo::cargo_bin("runner"))
        .current_dir(root())
        .env("RUNNER_HOME", home.path())
        .args(["launch", "manifests/local.yaml", "--", "sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs: Vec<_> = std::fs::read_dir(home.path().join("runs"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(runs.len(), 1);
    let r: Value = serde_json::from_slice(&read(runs[0].path().join("result.json"))).unwrap();
    (out.stdout, out.stderr, r, home)
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn a_step_closing_stdout_early_keeps_running_and_logging() {
    if !needs_root() {
        return;
    }
    let (stdout, _, r, _home) =
        launch_raw("printf partial; exec 1>&-; sleep 0.3; echo after-close >&2");
    assert_eq!(r["status"], "succeeded");
    assert_eq!(read(run_dir(&r).join("stdout.log")), b"partial");
    assert_eq!(read(run_dir(&r).join("stderr.log")), b"after-close\n");
    assert_eq!(r["logs"]["stdout_bytes"], 7);
    assert_eq!(stdout, b"partial", "the live copy is exact too");
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn invalid_utf8_output_is_logged_and_copied_byte_for_byte() {
    if !needs_root() {
        return;
    }
    let (stdout, stderr, r, _home) =
        launch_raw(r"printf '\377\376 bad \200\300\n'; printf '\355\240\200' >&2");
    let want_out: &[u8] = b"\xff\xfe bad \x80\xc0\n";
    let want_err: &[u8] = b"\xed\xa0\x80";
    assert_eq!(read(run_dir(&r).join("stdout.log")), want_out);
    assert_eq!(read(run_dir(&r).join("stderr.log")), want_err);
    assert_eq!(stdout, want_out);
    assert!(
        stderr.windows(3).any(|w| w == want_err),
        "the live stderr copy has the bytes: {stderr:?}"
    );
    assert_eq!(r["status"], "succeeded");
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn a_100_mib_line_is_logged_exactly() {
    if !needs_root() {
        return;
    }
    let (out, r) = launch(&[
        "manifests/local.yaml",
        "--",
        "sh",
        "-c",
        "head -c 104857600 /dev/zero | tr '\\0' x; echo",
    ]);
    out.expect_code(0);
    assert_eq!(r["logs"]["stdout_bytes"], 104857601u64);
    let log = read(run_dir(&r).join("stdout.log"));
    assert_eq!(log.len(), 104857601);
    assert!(log[..log.len() - 1].iter().all(|&b| b == b'x'), "all x");
    assert_eq!(log.last(), Some(&b'\n'));
    assert_eq!(r["logs"]["truncated"], false);
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn a_step_that_exits_leaving_1000_forked_children_gets_them_all_killed() {
    if !needs_root() {
        return;
    }
    // Each child would live 60 s; the step exits as soon as all are started.
    let step = "i=0; while [ $i -lt 1000 ]; do sleep 60.8181 & i=$((i+1)); done; exit 0";
    let (out, r) = launch(&["manifests/local.yaml", "--", "sh", "-c", step]);
    out.expect_code(0);
    assert_eq!(r["status"], "succeeded");
    assert_eq!(
        r["leftover_processes_killed"], 1000,
        "every leftover child is killed and counted"
    );
    assert_nothing_left(&r, "sleep 60.8181");
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn concurrent_200_launches_all_succeed_without_collisions() {
    if !needs_root() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let children: Vec<_> = (0..200)
        .map(|_| {
            spawn_runner(
                home.path(),
                &[
                    "manifests/local.yaml",
                    "--memory",
                    "64MiB",
                    "--",
                    "sh",
                    "-c",
                    "echo $RUNNER_RUN_ID",
                ],
            )
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    for c in children {
        let o = c.wait_with_output().unwrap();
        if o.status.code() != Some(0) {
            failures.push(String::from_utf8_lossy(&o.stderr).into_owned());
            continue;
        }
        let r: Value = serde_json::from_slice(&o.stdout).unwrap();
        let id = run_id(&r).to_string();
        assert_eq!(
            String::from_utf8(read(run_dir(&r).join("stdout.log"))).unwrap(),
            format!("{id}\n"),
            "each run logs into its own folder"
        );
        ids.insert(id);
    }
    assert!(
        failures.is_empty(),
        "{} of 200 launches failed; first: {}",
        failures.len(),
        failures[0]
    );
    assert_eq!(ids.len(), 200, "run ids are unique");
    let folders = std::fs::read_dir(home.path().join("runs")).unwrap().count();
    assert_eq!(folders, 200, "one run folder each");
    let leaked: Vec<PathBuf> = ids.iter().flat_map(|id| cgroups_of(id)).collect();
    assert!(leaked.is_empty(), "cgroups left: {leaked:?}");
}

/// Values that would run as shell code if pasted into a script unquoted.
fn hostile_values(marker: &Path) -> Vec<String> {
    let m = marker.display();
    vec![
        format!("x'; touch {m}; '"),
        format!("$(touch {m})"),
        format!("`touch {m}`"),
        format!("a\ntouch {m}\n"),
        format!("\"; touch {m}; \""),
        format!("a && touch {m}"),
        format!("; touch {m}"),
        format!("requests; touch {m} && echo"),
        format!("${{IFS}}touch${{IFS}}{m}"),
        "*".to_string(),
        "-n".to_string(),
        String::new(),
    ]
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn hostile_step_names_and_requirements_are_data_never_code() {
    if !needs_root() {
        return;
    }
    let markers = tempfile::tempdir().unwrap();
    let marker = markers.path().join("pwned");
    let values = hostile_values(&marker);
    for name in values.iter().filter(|v| !v.is_empty()) {
        // `--flag=VALUE`: a value may start with `-`.
        let mut args = vec![
            "tests/fixtures/launch/hostile.yaml".to_string(),
            format!("--step={name}"),
        ];
        args.extend(values.iter().map(|v| format!("--requirement={v}")));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (out, r) = launch(&args);
        out.expect_code(0);
        let work = run_dir(&r).join("work");
        assert_eq!(
            String::from_utf8(read(work.join("name"))).unwrap(),
            format!("{name}\n"),
            "the step name arrives as one word"
        );
        assert_eq!(
            String::from_utf8(read(work.join("requirements"))).unwrap(),
            values.iter().map(|v| format!("{v}\n")).collect::<String>(),
            "each requirement arrives as one word"
        );
        assert!(!marker.exists(), "a hostile value ran as code: {name:?}");
    }
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn a_step_name_with_nul_is_rejected_before_anything_runs() {
    if !needs_root() {
        return;
    }
    let o = launch_with_info(HOSTILE, "step:\n  name: \"train\\0; touch /tmp/x\"\n");
    o.expect_code(2);
    assert!(o.stderr.contains("NUL"), "{}", o.stderr);
    assert!(
        !o.home.path().join("runs").exists(),
        "no run folder was made"
    );
}

const HOSTILE: &str = "tests/fixtures/launch/hostile.yaml";

/// `runner launch -q MANIFEST --info FILE`, FILE holding `info` (YAML, or JSON).
fn launch_with_info(manifest: &str, info: &str) -> crate::common::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("step.yaml");
    std::fs::write(&path, info).unwrap();
    Runner::new()
        .args(["launch", "-q", manifest, "--info"])
        .arg(&path)
        .run()
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn a_1_mib_step_name_is_rendered_safely_or_refused_clearly() {
    if !needs_root() {
        return;
    }
    let name = "$(touch /tmp/pwned-1mib)'\"".repeat((1 << 20) / 24);
    let o = launch_with_info(HOSTILE, &json!({"step": {"name": name}}).to_string());
    o.expect_code(2);
    assert!(o.stderr.contains("too long"), "{}", o.stderr);
    assert!(!Path::new("/tmp/pwned-1mib").exists());
}

/// A 1 MiB requirement (with `;` and `&&` in it) would make the script one argument
/// over the kernel's per-argument limit: refused at render, located at the command,
/// exit 2, before any run folder exists — not a launch error after preparing.
#[test]
fn a_1_mib_requirement_is_refused_at_render_with_the_kernel_limit() {
    // In a step-info file: as a flag it would be over the limit for the runner itself.
    let requirement = "x; touch /tmp/pwned-req && echo ".repeat((1 << 20) / 32);
    let o = launch_with_info(
        HOSTILE,
        &json!({"requirements": {"pip": [requirement]}}).to_string(),
    );
    o.expect_code(2);
    assert!(
        o.stderr.contains("hostile.yaml:7:")
            && o.stderr.contains("the script is 1")
            && o.stderr.contains("bytes or more"),
        "{}",
        &o.stderr[..o.stderr.len().min(2000)]
    );
    assert!(
        !o.home.path().join("runs").exists(),
        "no run folder was made"
    );
    assert!(!Path::new("/tmp/pwned-req").exists());
}

/// The same limit for a variable: a 1 MiB requirement list rendered into the launch
/// stage's `env` is refused at render, located at that `env`, exit 2, no run folder.
#[test]
fn a_1_mib_variable_is_refused_at_render_with_the_kernel_limit() {
    let requirement = "x".repeat(1 << 20);
    let o = launch_with_info(
        "tests/fixtures/launch/long-env.yaml",
        &json!({"requirements": {"pip": [requirement]}}).to_string(),
    );
    o.expect_code(2);
    assert!(
        o.stderr.contains("long-env.yaml:7:5")
            && o.stderr
                .contains("variable `REQUIREMENTS` is 1048589 bytes")
            && o.stderr.contains("bytes or more"),
        "{}",
        &o.stderr[..o.stderr.len().min(2000)]
    );
    assert!(
        !o.home.path().join("runs").exists(),
        "no run folder was made"
    );
}
