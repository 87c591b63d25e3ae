//! Which tests cannot run here, decided when they are built: a test that needs an
//! engine that is not started, or root when not root, is compiled `#[ignore]`d, so
//! the test runner reports it as skipped instead of counting it as passed. Under
//! `CI=true` nothing is ignored: such a test runs, and fails.

fn main() {
    let engines = [
        ("STEPRUNNER_DOCKER_HOST", "docker"),
        ("STEPRUNNER_SLURM", "slurm"),
        ("STEPRUNNER_ZENML_PYTHON", "zenml"),
        ("STEPRUNNER_GUEST", "guest"),
        ("STEPRUNNER_RAY_ADDRESS", "ray"),
        ("STEPRUNNER_SCHEMAS_PYTHON", "schemas"),
    ];
    let mut names: Vec<String> = engines
        .iter()
        .map(|(_, n)| format!("skip_engine_{n}"))
        .collect();
    names.push("skip_root".into());
    println!("cargo::rustc-check-cfg=cfg({})", names.join(", "));
    println!("cargo::rerun-if-env-changed=CI");
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    for (var, name) in engines {
        println!("cargo::rerun-if-env-changed={var}");
        let set = std::env::var_os(var).is_some_and(|v| !v.is_empty());
        if !ci && !set {
            println!("cargo::rustc-cfg=skip_engine_{name}");
        }
    }
    // The effective uid, from the kernel (no dependency for a build script).
    let euid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|u| u.split_whitespace().nth(1).map(str::to_owned))
        });
    if !ci && euid.as_deref() != Some("0") {
        println!("cargo::rustc-cfg=skip_root");
    }
}
