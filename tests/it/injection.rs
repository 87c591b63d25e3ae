//! The differential injection test: "data, never code" for scripts, tried rather than
//! argued. A corpus of script shapes (the shapes the shipped manifests use, and the
//! ones that leaked before scripts were checked by their shell structure) × a corpus
//! of hostile values. Every shape `runner validate` accepts is rendered with every
//! value and **executed** under `sh`, `bash` and `dash`; a value that ran as code
//! touches a marker file, and none may. The shapes expected to be refused must be.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::Runner;

/// Script shapes: `V` is a scalar value, `L` a list. Allowed by `validate`.
const ALLOWED: &[&str] = &[
    "echo V",
    "echo \"V\"",
    "echo \"a V b\" x",
    "echo xVy --opt=V",
    "x=V; echo \"$x\"",
    "x=\"V\"; echo \"$x\"",
    "a=1 b=V env | grep -c '^b=' >/dev/null; true",
    "echo $(echo V)",
    "echo \"$(echo \"V\")\"",
    "echo \"$( (echo V) )\"",
    "name=$(printf '%s' V | tr -c 'A-Za-z0-9._-' _ | cut -c 1-64); echo \"$name\"",
    "printf '%s\\n' L",
    "printf '%s\\n' V > \"$SCRATCH/out\"",
    "printf -- '%s\\n' V",
    "for i in L; do echo \"$i\"; done",
    "case V in *) echo hit ;; esac",
    "case x in x) echo V ;; esac",
    "if [ V = x ]; then :; fi",
    "[ -n V ] && echo y",
    "[ V -gt 0 ] 2>/dev/null; true",
    "test V -eq 1 2>/dev/null; true",
    "echo V | cat",
    "f() { echo \"$1\"; }; f V",
    "k() { echo V \"$@\"; }; k a",
    "function g { echo V; }; g",
    "export X=V; echo \"$X\"",
    "f() { local y=V; echo \"$y\"; }; f",
    "env X=V sh -c 'echo \"$X\"'",
    "sh -c 'echo \"$1\"' sh V",
    "echo V# not a comment",
    "echo \"${HOME}\" V",
    "echo V > \"$SCRATCH/f\"; cat \"$SCRATCH/f\"",
    "cat < /dev/null > \"$SCRATCH\"/V 2>/dev/null; true",
    "{% if true %}echo V{% endif %}",
    "{% for x in settings.LIST %}echo {{ x }}\n{% endfor %}",
    "echo {{ settings.VAR | upper }}",
    "echo \"{{ settings.VAR ~ 'x' }}\"",
    "echo {{ settings.VAR | q }}",
    "echo \"{{ settings.VAR | q }}\"",
    "echo {{ settings.LIST | join(' ') }}",
    "awk -v m=V 'BEGIN { print m }'",
    "sleep 0 V 2>/dev/null; true",
    "(exit V) 2>/dev/null; true",
    "f() { shift V 2>/dev/null; return 0; }; f",
    "cd V 2>/dev/null; true",
    "set -- L; echo \"$#\"",
    "echo V \\\n  --next V",
    "kill -0 V 2>/dev/null; true",
    "x=$(case a in a) echo V ;; esac); echo \"$x\"",
    "true && echo V || echo V",
    "cat <<EOF\nliteral\nEOF\necho V",
    "echo V 2>&1 >/dev/null",
    "timeout 5 echo V",
    "nohup echo V >/dev/null 2>&1",
    "exec echo V",
];

/// Shapes that must be refused: each ran a hostile value as shell code before.
const REFUSED: &[&str] = &[
    "echo \"$(echo \"V\")\" && eval V",
    "echo \"${X:-\"V\"}\"",
    "echo $(( V ))",
    "n=$(( V ))",
    "true;# V",
    "true &&# V",
    "(true)# V",
    "{% if true %}# V{% endif %}",
    "[[ V -eq 0 ]]",
    "(( V ))",
    "let n=V",
    "declare -i n=V",
    "declare -i n; n=V",
    "echo ${x:V}",
    "eval V",
    "eval \"echo V\"",
    "sh -c V",
    "sh -c \"echo V\"",
    "bash -o pipefail -c \"echo V\"",
    "env sh -c \"echo V\"",
    "find . -maxdepth 0 -exec sh -c \"echo V\" \\;",
    "trap \"echo V\" EXIT",
    "echo 'V'",
    "echo `echo V`",
    "echo \"`echo V`\"",
    "echo $'V'",
    "cat <<EOF\nV\nEOF",
    "echo \\V",
    "echo \"\\V\"",
    "a[V]=1",
    "printf -v V x",
    "printf V",
    "[ -v V ]",
    "[ V V ]",
    "read V <<< x",
    "source V",
    "unset V",
    "\"$cmd\" V",
    "$cmd V",
    "for V in a; do :; done",
    "case x in V) ;; esac",
    "{% macro m(x) %}{{ x }}{% endmacro %}echo {{ m(settings.VAR) | trim }}",
    "{% autoescape false %}echo V{% endautoescape %}",
];

/// Scalar values; `$MARK` is the marker file a value that runs as code touches.
fn values() -> Vec<String> {
    let mut v: Vec<String> = [
        "$(touch \"$MARK\")",
        "`touch \"$MARK\"`",
        "; touch \"$MARK\"",
        "a\ntouch \"$MARK\"",
        "a\n# b\ntouch \"$MARK\"",
        "'; touch \"$MARK\"; '",
        "\"; touch \"$MARK\"; \"",
        "\\\"; touch \"$MARK\"; \\\"",
        "a[$(touch \"$MARK\")]",
        "x[$(touch \"$MARK\")]",
        "$((1))$(touch \"$MARK\")",
        "'\"'\"'$(touch \"$MARK\")",
        "x\nEOF\ntouch \"$MARK\"",
        ") touch \"$MARK\" ;; esac; touch \"$MARK\"; case x in (x",
        "}; touch \"$MARK\"; {",
        "]] || touch \"$MARK\" || [[",
        "-v",
        "-c",
        "--",
        "*",
        "$HOME ${PATH} ~",
        "%n%s%%",
        "",
        "a\\",
        "é\u{202e}\u{1b}[31m",
        "1",
    ]
    .map(String::from)
    .to_vec();
    v.push(format!("{}$(touch \"$MARK\")", "A".repeat(50_000)));
    v
}

/// List values.
fn lists() -> Vec<Value> {
    vec![
        json!(["-v", "a[$(touch \"$MARK\")]"]),
        json!(["$(touch \"$MARK\")", "; touch \"$MARK\""]),
        json!(["-c", "touch \"$MARK\""]),
        json!([]),
        json!(["a b", "c"]),
    ]
}

/// A manifest with one prepare command per value: `shape` with `V`/`L` (or
/// `settings.VAR`/`settings.LIST`) pointing at that value's settings.
fn manifest(shape: &str, n: usize) -> String {
    let mut props = String::new();
    for i in 0..n {
        props.push_str(&format!(
            "    v{i}: {{type: string}}\n    l{i}: {{type: array, items: {{type: string}}}}\n"
        ));
    }
    let mut run = String::new();
    for i in 0..n {
        let s = shape
            .replace("settings.VAR", &format!("settings.v{i}"))
            .replace("settings.LIST", &format!("settings.l{i}"))
            .replace('V', &format!("{{{{ settings.v{i} }}}}"))
            .replace('L', &format!("{{{{ settings.l{i} }}}}"));
        run.push_str("    - script: ");
        run.push_str(&serde_json::to_string(&s).unwrap());
        run.push('\n');
    }
    format!(
        "version: 1\nname: inj\nsettings:\n  type: object\n  properties:\n{props}\
         prepare:\n  run:\n{run}launch:\n  run: [\"{{{{ entrypoint }}}}\"]\n{}",
        crate::common::IGNORES_ALL
    )
}

/// The shells to run every script under; under `CI=true` all must be there.
fn shells() -> Vec<&'static str> {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    ["sh", "bash", "dash"]
        .into_iter()
        .filter(|s| {
            let there = Command::new(s)
                .args(["-c", "true"])
                .status()
                .is_ok_and(|st| st.success());
            assert!(
                there || !ci,
                "`{s}` is missing and CI=true forbids skipping it"
            );
            if !there {
                eprintln!("skipped: no `{s}` here");
            }
            there
        })
        .collect()
}

/// Run `script` under `shell` in `scratch`; whether the marker appeared.
fn leaks(shell: &str, script: &str, scratch: &Path) -> bool {
    let mark = scratch.join("M4RK");
    let mut child = Command::new(shell)
        .arg("-c")
        .arg(script)
        .current_dir(scratch)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", scratch)
        .env("MARK", &mark)
        .env("SCRATCH", scratch)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the shell starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let leaked = mark.exists();
    let _ = std::fs::remove_file(&mark);
    leaked
}

#[test]
fn no_value_runs_as_code_in_any_shape_validate_accepts() {
    let shells = shells();
    let values = values();
    let lists = lists();
    let n = values.len();
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let mut settings = serde_json::Map::new();
    for (i, v) in values.iter().enumerate() {
        settings.insert(format!("v{i}"), json!(v));
        settings.insert(format!("l{i}"), lists[i % lists.len()].clone());
    }
    let info = dir.path().join("info.json");
    std::fs::write(&info, json!({"settings": settings}).to_string()).unwrap();

    let mut problems = Vec::new();
    let mut ran = 0;
    for (k, shape) in ALLOWED.iter().chain(REFUSED).enumerate() {
        let expect_ok = k < ALLOWED.len();
        let path = dir.path().join(format!("shape-{k}.yaml"));
        std::fs::write(&path, manifest(shape, n)).unwrap();
        let valid = Runner::new()
            .args(["validate".as_ref(), path.as_os_str()])
            .run();
        match (expect_ok, valid.code) {
            (true, 0) | (false, 2) => {}
            (true, _) => problems.push(format!(
                "refused, expected allowed: {shape:?}\n{}",
                valid.stderr
            )),
            (false, _) => problems.push(format!("allowed, expected refused: {shape:?}")),
        }
        if valid.code != 0 {
            continue;
        }
        // Accepted: render with every value and run what would run.
        let out = Runner::new()
            .args([
                "render".as_ref(),
                path.as_os_str(),
                "--info".as_ref(),
                info.as_os_str(),
            ])
            .args(["--format", "json", "--", "true"])
            .run();
        if out.code != 0 {
            // Refused once the values are known (a list where one word goes): nothing runs.
            assert!(out.stderr.contains("error:"), "{shape:?}: {}", out.stderr);
            continue;
        }
        let plan = out.json();
        let commands = plan["prepare"]["commands"].as_array().unwrap();
        assert_eq!(commands.len(), n, "{shape:?}");
        for (i, c) in commands.iter().enumerate() {
            let script = c["script"].as_str().expect("a script");
            for shell in &shells {
                ran += 1;
                if leaks(shell, script, &scratch) {
                    problems.push(format!(
                        "LEAK under {shell}: shape {shape:?} with value {:?} ran as\n{script}",
                        values[i].chars().take(80).collect::<String>()
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    // The test ran what it says it ran.
    assert!(ran >= ALLOWED.len() * n, "only {ran} runs");
    eprintln!(
        "{} shapes ({} refused) × {n} values × {} shells: {ran} runs, no leak",
        ALLOWED.len() + REFUSED.len(),
        REFUSED.len(),
        shells.len()
    );
}

/// The refused shapes would have run the value as code, had they been let through:
/// the same shapes rendered with naive quoting (each value single-quoted, as before)
/// and run show that the test can see a leak.
#[test]
fn the_refused_shapes_leak_with_naive_quoting() {
    let shells = shells();
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let naive = |v: &str| steprunner::template::shell_quote(v);
    let cases: &[(&str, &str)] = &[
        ("echo \"$(echo \"V\")\"", "$(touch \"$MARK\")"),
        ("echo \"${X:-\"V\"}\"", "$(touch \"$MARK\")"),
        ("echo $(( V ))", "a[$(touch \"$MARK\")]"),
        ("true;# V", "a\ntouch \"$MARK\" #"),
        ("eval V", "touch \"$MARK\""),
        ("sh -c V", "touch \"$MARK\""),
        ("echo \\V", "$(touch \"$MARK\")'"),
    ];
    for (shape, value) in cases {
        let script = shape.replace('V', &naive(value));
        let leaked = shells.iter().any(|s| leaks(s, &script, &scratch));
        assert!(
            leaked,
            "{shape:?} with {value:?} did not leak even naively: {script}"
        );
    }
}

/// A NUL byte cannot be passed to a shell: refused at render, nothing runs.
#[test]
fn a_nul_in_a_value_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.yaml");
    std::fs::write(&path, manifest("echo V", 1)).unwrap();
    let info = dir.path().join("info.json");
    std::fs::write(
        &info,
        json!({"settings": {"v0": "a\u{0}b", "l0": []}}).to_string(),
    )
    .unwrap();
    let out = Runner::new()
        .args([
            "render".as_ref(),
            path.as_os_str(),
            "--info".as_ref(),
            info.as_os_str(),
        ])
        .args(["--", "true"])
        .run();
    out.expect_code(2);
    assert!(out.stderr.contains("NUL"), "{}", out.stderr);
}
