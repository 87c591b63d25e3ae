//! Exit codes, the summary line, the JSON against its schema, and atomic writes.

use std::time::SystemTime;

use serde_json::{Value, json};

use super::*;

pub(crate) fn success() -> Outcome {
    Outcome {
        version: VERSION,
        run_id: "r-20260101-abc".into(),
        run_dir: "/runs/r1".into(),
        flavor: "venv".into(),
        step: "trainer".into(),
        status: Status::Succeeded,
        exit_code: 0,
        signal: None,
        message: None,
        started_at: rfc3339(SystemTime::UNIX_EPOCH + Duration::from_millis(1_767_225_600_123)),
        duration_secs: 1.234,
        stages: Stages {
            prepare: Some(StageTiming {
                duration_secs: 0.0,
                exit_code: None,
                status: StageStatus::Cached,
                commands: 0,
            }),
            launch: Some(StageTiming {
                duration_secs: 1.2,
                exit_code: Some(0),
                status: StageStatus::Ok,
                commands: 1,
            }),
            cleanup: Some(StageTiming {
                duration_secs: 0.01,
                exit_code: None,
                status: StageStatus::Skipped,
                commands: 0,
            }),
        },
        cache: Some(CacheInfo {
            hit: true,
            key: "3f2a".into(),
            path: "/cache/3f2a".into(),
        }),
        peak_memory_bytes: Some(12_897_485),
        cpu_user_secs: Some(0.451),
        cpu_system_secs: Some(0.02),
        oom_kills: 0,
        measured_by: crate::plan::MeasuredBy::Runner,
        client: None,
        profile: None,
        leftover_processes_killed: 0,
        containment: Some(crate::contain::Report {
            mode: "root".into(),
            contained: true,
            reason: None,
        }),
        limits: vec![
            LimitRecord {
                name: LimitKind::Memory,
                value: json!(64 << 20),
                enforced_by: Enforcement::CgroupV2,
                contained: true,
            },
            LimitRecord {
                name: LimitKind::Cpus,
                value: json!(1.5),
                enforced_by: Enforcement::CgroupV2,
                contained: true,
            },
            LimitRecord {
                name: LimitKind::Gpus,
                value: json!(["0", "1"]),
                enforced_by: Enforcement::Env,
                contained: true,
            },
            LimitRecord {
                name: LimitKind::OpenFiles,
                value: json!(4096),
                enforced_by: Enforcement::Rlimit,
                contained: true,
            },
            LimitRecord {
                name: LimitKind::Timeout,
                value: json!(3600),
                enforced_by: Enforcement::Supervisor,
                contained: true,
            },
        ],
        logs: Logs {
            stdout: "/runs/r1/stdout.log".into(),
            stderr: "/runs/r1/stderr.log".into(),
            stdout_bytes: 10,
            stderr_bytes: 0,
            truncated: false,
        },
        cleanup_error: None,
        warnings: vec![],
    }
}

fn oom() -> Outcome {
    let mut o = success();
    o.set_ending(Ending::OomKilled { signal: Some(9) });
    o.duration_secs = 3.0;
    o.cache = Some(CacheInfo {
        hit: false,
        key: "3f2a".into(),
        path: "/cache/3f2a".into(),
    });
    o.peak_memory_bytes = Some(64 << 20);
    o.oom_kills = 1;
    o.stages.launch = Some(StageTiming {
        duration_secs: 2.9,
        exit_code: None,
        status: StageStatus::OomKilled,
        commands: 1,
    });
    o
}

fn launch_error() -> Outcome {
    let mut o = success();
    o.set_ending(Ending::LaunchError(LaunchFailure::NotFound));
    o.message = Some("command `trainr` not found".into());
    o.duration_secs = 0.004;
    o.stages = Stages {
        prepare: None,
        launch: None,
        cleanup: None,
    };
    o.cache = None;
    o.peak_memory_bytes = None;
    o.cpu_user_secs = None;
    o.cpu_system_secs = None;
    o.limits = vec![LimitRecord {
        name: LimitKind::Memory,
        value: json!(1 << 30),
        enforced_by: Enforcement::None,
        contained: true,
    }];
    o.logs = Logs::default();
    o.warnings = vec!["memory limit not enforced: no cgroup v2 memory controller".into()];
    o
}

#[test]
fn exit_codes_follow_the_design_table() {
    use Ending::*;
    let cases = [
        (Exited(0), Status::Succeeded, 0, None),
        (Exited(1), Status::Failed, 1, None),
        (Exited(255), Status::Failed, 255, None),
        (Exited(300), Status::Failed, 1, None),
        (Signaled(11), Status::Failed, 139, Some(11)),
        (Signaled(9), Status::Failed, 137, Some(9)),
        (
            TimedOut { signal: Some(15) },
            Status::TimedOut,
            124,
            Some(15),
        ),
        (TimedOut { signal: None }, Status::TimedOut, 124, None),
        (
            OomKilled { signal: Some(9) },
            Status::OomKilled,
            137,
            Some(9),
        ),
        (Cancelled { received: 2 }, Status::Cancelled, 130, Some(2)),
        (Cancelled { received: 15 }, Status::Cancelled, 143, Some(15)),
        (Cancelled { received: 1 }, Status::Cancelled, 129, Some(1)),
        (PrepareFailed, Status::PrepareFailed, 125, None),
        (
            LaunchError(LaunchFailure::Other),
            Status::LaunchError,
            125,
            None,
        ),
        (
            LaunchError(LaunchFailure::NotExecutable),
            Status::LaunchError,
            126,
            None,
        ),
        (
            LaunchError(LaunchFailure::NotFound),
            Status::LaunchError,
            127,
            None,
        ),
    ];
    for (ending, status, code, signal) in cases {
        assert_eq!(
            (ending.status(), ending.exit_code(), ending.signal()),
            (status, code, signal),
            "{ending:?}"
        );
    }
}

#[test]
fn status_strings_match_serde() {
    for s in [
        Status::Succeeded,
        Status::Failed,
        Status::TimedOut,
        Status::OomKilled,
        Status::Cancelled,
        Status::PrepareFailed,
        Status::LaunchError,
    ] {
        assert_eq!(serde_json::to_value(s).unwrap(), json!(s.as_str()));
    }
}

#[test]
fn summary_lines() {
    assert_eq!(
        summary(&success()),
        "runner: succeeded in 1.23s · exit 0 · prepare cached · peak memory 12.3 MiB\n        \
         cpu 0.45s user 0.02s system\n        \
         run r-20260101-abc in /runs/r1 (result.json)"
    );
    assert_eq!(
        summary(&oom()),
        "runner: oom_killed in 3.00s · exit 137 · killed by SIGKILL (9)\n        \
         memory limit 64 MiB reached · peak memory 64.0 MiB\n        \
         cpu 0.45s user 0.02s system\n        \
         run r-20260101-abc in /runs/r1 (result.json)"
    );
    assert_eq!(
        summary(&launch_error()),
        "runner: launch_error in 0.00s · exit 127 · command `trainr` not found\n        \
         1 warning\n        \
         run r-20260101-abc in /runs/r1 (result.json)"
    );
    let mut timed_out = success();
    timed_out.set_ending(Ending::TimedOut { signal: Some(15) });
    timed_out.duration_secs = 3605.4;
    timed_out.cache = None;
    timed_out.peak_memory_bytes = None;
    timed_out.cpu_user_secs = None;
    timed_out.cpu_system_secs = None;
    timed_out.leftover_processes_killed = 2;
    timed_out.logs.truncated = true;
    assert_eq!(
        summary(&timed_out),
        "runner: timed_out in 1h 00m 05s · exit 124 · killed by SIGTERM (15)\n        \
         timeout 1h reached · 2 leftover processes killed\n        \
         run r-20260101-abc in /runs/r1 (logs truncated, result.json)"
    );
    let mut cancelled = launch_error();
    cancelled.set_ending(Ending::Cancelled { received: 2 });
    cancelled.message = None;
    cancelled.duration_secs = 75.0;
    cancelled.cleanup_error = Some("cannot remove cgroup".into());
    cancelled.warnings.push("second".into());
    assert_eq!(
        summary(&cancelled),
        "runner: cancelled in 1m 15s · exit 130 · received SIGINT (2) · cleanup failed\n        \
         2 warnings\n        \
         run r-20260101-abc in /runs/r1 (result.json)"
    );
}

/// The step's own exit code is said to be the step's; a signal is named once.
#[test]
fn summary_tells_the_steps_exit_from_the_runners_and_repeats_nothing() {
    let mut failed = success();
    failed.set_ending(Ending::Exited(2));
    failed.cache = None;
    let line = summary(&failed);
    assert!(
        line.starts_with("runner: failed in 1.23s · the step exited 2 · "),
        "{line}"
    );
    let mut segv = success();
    segv.set_ending(Ending::Signaled(11));
    segv.message = Some("killed by SIGSEGV".into());
    let line = summary(&segv);
    assert_eq!(line.matches("killed by").count(), 1, "{line}");
    assert!(line.contains("exit 139 · killed by SIGSEGV (11)"), "{line}");
}

/// Every line fits 80 columns (the last, with its folder, as far as the path allows),
/// and the logs that exist are named.
#[test]
fn summary_fits_80_columns_and_names_the_logs_that_exist() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = oom();
    o.run_dir = dir.path().display().to_string();
    o.logs.stdout = dir.path().join("stdout.log").display().to_string();
    o.logs.stderr = dir.path().join("stderr.log").display().to_string();
    std::fs::write(&o.logs.stdout, "x").unwrap();
    o.warnings = vec!["a".into(), "b".into()];
    o.leftover_processes_killed = 12;
    let text = summary(&o);
    let lines: Vec<&str> = text.lines().collect();
    for l in &lines[..lines.len() - 1] {
        assert!(
            l.chars().count() <= 80,
            "{} columns: {l}",
            l.chars().count()
        );
    }
    assert!(
        lines.last().unwrap().ends_with("(stdout.log, result.json)"),
        "{text}"
    );
}

/// `--best-effort-limits`: the line itself names what was not enforced, and what the
/// step could undo, instead of only counting warnings.
#[test]
fn summary_names_limits_not_enforced_or_not_contained() {
    let mut o = success();
    o.limits[0].enforced_by = Enforcement::None;
    o.limits[0].contained = false;
    o.limits[1].contained = false;
    o.warnings = vec!["memory/cpus/pids limits not enforced: no cgroup".into()];
    let line = summary(&o).replace("\n        ", " · ");
    assert!(line.contains(" · NOT enforced: memory · "), "{line}");
    assert!(line.contains(" · the step could undo: cpus · "), "{line}");
    assert!(line.contains(" · 1 warning · "), "{line}");
    // All enforced and contained: neither part.
    let line = summary(&success());
    assert!(
        !line.contains("NOT enforced") && !line.contains("undo"),
        "{line}"
    );
}

#[test]
fn bytes_in_binary_units() {
    let cases = [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (1_048_575, "1.0 MiB"),
        (12_897_485, "12.3 MiB"),
        (5 << 30, "5.0 GiB"),
        (u64::MAX, "16.0 EiB"),
    ];
    for (n, want) in cases {
        assert_eq!(Bytes(n).to_string(), want, "{n}");
    }
    assert_eq!(crate::units::exact_bytes(64 << 20), "64 MiB");
    assert_eq!(crate::units::exact_bytes((64 << 20) + 1), "64.0 MiB");
}

fn schema() -> Value {
    serde_json::from_str(crate::schemas::RESULT_SCHEMA).expect("schema is JSON")
}

#[test]
fn outcomes_validate_against_the_schema() {
    let schema = schema();
    jsonschema::meta::validate(&schema).expect("schema is a valid draft 2020-12 schema");
    let validator = jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap();
    for outcome in [success(), oom(), launch_error()] {
        let value = serde_json::to_value(&outcome).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{:?}: {errors:#?}", outcome.status);
        let back: Outcome = serde_json::from_value(value).unwrap();
        assert_eq!(back, outcome);
    }
}

#[test]
fn schema_rejects_what_the_types_reject() {
    let validator = jsonschema::draft202012::new(&schema()).unwrap();
    let good = serde_json::to_value(success()).unwrap();
    let bad = [
        ("/extra", json!(1)),
        ("/status", json!("exploded")),
        ("/logs/extra", json!(1)),
        ("/limits/0/enforced_by", json!("cgroup")),
        ("/stages/launch/extra", json!(1)),
        ("/cache/extra", json!(1)),
    ];
    for (pointer, value) in bad {
        let mut instance = good.clone();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        instance.pointer_mut(parent).unwrap()[key] = value;
        assert!(
            !validator.is_valid(&instance),
            "{pointer} accepted by the schema"
        );
        assert!(
            serde_json::from_value::<Outcome>(instance).is_err(),
            "{pointer} accepted by serde"
        );
    }
    let mut missing = good;
    missing.as_object_mut().unwrap().remove("signal");
    assert!(!validator.is_valid(&missing));
}

/// Every property documented, every object closed.
#[test]
fn schema_describes_every_property() {
    fn walk(node: &Value, at: &str, problems: &mut Vec<String>) {
        let Some(map) = node.as_object() else { return };
        if !at.is_empty() && !map.contains_key("description") {
            problems.push(format!("{at}: no description"));
        }
        if let Some(props) = map.get("properties").and_then(Value::as_object) {
            if map.get("additionalProperties") != Some(&Value::Bool(false)) {
                problems.push(format!("{at}: additionalProperties is not false"));
            }
            for (name, prop) in props {
                walk(prop, &format!("{at}/{name}"), problems);
            }
        }
        if let Some(items) = map.get("items") {
            walk(items, &format!("{at}[]"), problems);
        }
        if let Some(defs) = map.get("$defs").and_then(Value::as_object) {
            for (name, def) in defs {
                walk(def, &format!("$defs/{name}"), problems);
            }
        }
    }
    let mut problems = Vec::new();
    walk(&schema(), "", &mut problems);
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn json_is_pretty_with_a_trailing_newline_and_no_tmp_left() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("result.json");
    write_atomic(&path, &success()).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.starts_with("{\n  \"version\": 1,\n  \"run_id\": \"r-20260101-abc\","),
        "{text}"
    );
    assert!(text.ends_with("}\n"));
    assert!(text.contains("\"started_at\": \"2026-01-01T00:00:00.123Z\""));
    assert!(text.contains("\"enforced_by\": \"cgroup-v2\""));
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["result.json"]);
}

#[test]
fn write_error_names_the_path_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir/result.json");
    let err = write_atomic(&missing, &success()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("cannot write result file `{}`", missing.display())
    );
    // The target is a directory: the rename fails, the temporary is removed.
    let target = dir.path().join("result.json");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep"), "x").unwrap();
    let err = write_atomic(&target, &success()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("cannot write result file `{}`", target.display())
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["result.json"]);
}

/// A reader polling the file sees it absent or complete, never a prefix.
#[test]
fn readers_never_see_a_half_written_result() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("result.json");
    let mut big = success();
    // Large enough to take several write calls.
    big.warnings = (0..20_000).map(|i| format!("warning number {i}")).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (path, stop) = (path.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut absent, mut complete) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match std::fs::read(&path) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => absent += 1,
                    Err(e) => panic!("read: {e}"),
                    Ok(bytes) => {
                        let outcome: Outcome =
                            serde_json::from_slice(&bytes).expect("complete json");
                        assert!(outcome.warnings.len() == 20_000 || outcome.warnings.is_empty());
                        complete += 1;
                    }
                }
            }
            (absent, complete)
        })
    };
    let small = success();
    for i in 0..20 {
        write_atomic(&path, if i % 2 == 0 { &big } else { &small }).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (_absent, complete) = reader.join().unwrap();
    assert!(complete > 0, "reader never saw the file");
}

/// A file planted where the temporary goes (a symlink to somewhere else) is never
/// written through; a disk with no room left takes the result into the space set aside
/// when the run started.
#[test]
fn planted_temporaries_and_a_full_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("result.json");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    for n in 0..3 {
        let planted = format!("{}.tmp.{}.{n}", path.display(), std::process::id());
        std::os::unix::fs::symlink(&victim, planted).unwrap();
    }
    write_atomic(&path, &success()).unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    let back: Outcome = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(back, success());

    // The reserve, written first (a full disk is tested end to end in `tests/it`): the
    // result lands in it and it becomes `result.json`; no temporary is made.
    let reserve = dir.path().join(".result.reserve");
    reserve_file(&reserve);
    use std::os::unix::fs::MetadataExt;
    let reserved = std::fs::metadata(&reserve).unwrap().ino();
    let before = names(dir.path());
    write_atomic(&path, &success()).unwrap();
    let back: Outcome = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(back, success());
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), reserved);
    let after = names(dir.path());
    assert_eq!(
        after,
        before
            .into_iter()
            .filter(|n| n != ".result.reserve")
            .collect::<Vec<_>>()
    );
    reserve_file(&reserve);
    write_into_reserve(&reserve, b"{}\n").unwrap();
    assert_eq!(std::fs::read(&reserve).unwrap(), b"{}\n");
    // A file of the reserve's length with no blocks behind it (a step's sparse stand-in,
    // which a full disk would not take) is not used.
    let sparse = dir.path().join(".sparse.reserve");
    std::fs::File::create(&sparse)
        .unwrap()
        .set_len(RESERVE_BYTES)
        .unwrap();
    assert!(write_into_reserve(&sparse, b"x").is_err());
    // A reserve replaced by a link to another file is not written.
    let linked = dir.path().join(".linked.reserve");
    std::fs::hard_link(&victim, &linked).unwrap();
    assert!(write_into_reserve(&linked, b"x").is_err());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
}

/// A step that leaves a FIFO where the reserve was does not hang the runner at the
/// end of the run (opening a FIFO to write waits for a reader): the result is written
/// the other way.
#[test]
fn a_fifo_in_place_of_the_reserve_does_not_block_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("result.json");
    let fifo = dir.path().join(".result.reserve");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let p = path.clone();
    std::thread::spawn(move || tx.send(write_atomic(&p, &success()).is_ok()));
    let written = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("write_atomic returned (it did not block on the FIFO)");
    assert!(written);
    let back: Outcome = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(back, success());
    // With the result in place, the name the reserve had is cleared.
    assert!(std::fs::symlink_metadata(&fifo).is_err());
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn reserve_file(p: &Path) {
    reserve(p).unwrap();
    assert_eq!(std::fs::metadata(p).unwrap().len(), RESERVE_BYTES);
}
