#!/usr/bin/env python3
"""Timing harness for `just bench`: steprunner against baselines, in the same run.

Every benchmark runs its subject and its baselines *alternately* (the order shuffled
per round with a fixed seed), many rounds, so a load spike from whoever else uses the
machine hits all of them alike; it reports medians (and p10/p90) and ratios. Processes
are started with posix_spawn and reaped with wait4, so the harness adds the same small
cost to every case. Standard library only.
"""

import argparse
import json
import re
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GIB = 1 << 30
MIB = 1 << 20
CLK_TCK = os.sysconf("SC_CLK_TCK")


def which(name):
    path = shutil.which(name)
    if not path:
        sys.exit(f"bench: `{name}` not found")
    return path


def spawn(argv, env=None, stdout=os.devnull, stderr=os.devnull, cwd=ROOT):
    """Start argv with stdin and the given stdout/stderr files; return the pid."""
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
        (os.POSIX_SPAWN_OPEN, 2, stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
    ]
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return os.posix_spawn(argv[0], argv, env or os.environ, file_actions=actions)
    finally:
        os.chdir(old)


def run_once(argv, env=None, stdout=os.devnull):
    """Wall seconds, exit status and rusage of one run."""
    t0 = time.perf_counter()
    pid = spawn(argv, env, stdout)
    _, status, ru = os.wait4(pid, 0)
    return time.perf_counter() - t0, os.waitstatus_to_exitcode(status), ru


def quantile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))]


class Case:
    def __init__(self, name, fn):
        self.name = name
        self.fn = fn  # () -> seconds (raises on failure)
        self.times = []

    @property
    def median(self):
        return statistics.median(self.times)


def alternate(cases, rounds, warmup=2, between=None):
    """Run every case once per round, in a shuffled order; `between` after each run."""
    rng = random.Random(42)
    for r in range(warmup + rounds):
        order = list(cases)
        rng.shuffle(order)
        for c in order:
            t = c.fn()
            if r >= warmup:
                c.times.append(t)
            if between:
                between()
    return cases


def fmt_ms(s):
    return f"{s * 1e3:.2f} ms"


def fmt_s(s):
    return f"{s:.3f} s"


def table(cases, fmt, baseline=None, extra=None):
    """Markdown rows: median, p10, p90, n, ratio to the baseline (and an extra column)."""
    head = "| case | median | p10 | p90 | runs | ratio |"
    if extra:
        head += f" {extra[0]} |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for c in cases:
        ratio = f"{c.median / baseline.median:.2f}×" if baseline else ""
        row = (
            f"| {c.name} | {fmt(c.median)} | {fmt(quantile(c.times, 0.1))} | "
            f"{fmt(quantile(c.times, 0.9))} | {len(c.times)} | {ratio} |"
        )
        if extra:
            row += f" {extra[1](c)} |"
        lines.append(row)
    return "\n".join(lines)


def checked(argv, env=None, stdout=os.devnull, want=0):
    def fn():
        t, code, _ = run_once(argv, env, stdout)
        if code != want:
            raise SystemExit(f"bench: `{' '.join(argv)}` exited {code}, expected {want}")
        return t

    return fn


# ---------------------------------------------------------------- machine


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def machine():
    mem = next(
        (l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")), "?"
    )
    cpu = next(
        (l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
        platform.processor(),
    )
    mounts = [l.split() for l in open("/proc/self/mounts")]
    v2 = [m[1] for m in mounts if m[2] == "cgroup2"]
    v1 = sorted({o for m in mounts if m[2] == "cgroup" for o in m[3].split(",")} & {
        "memory", "cpu", "cpuacct", "pids", "freezer", "cpuset", "blkio", "devices"})
    if v1 and v2:
        layout = f"hybrid: v1 controllers {', '.join(v1)}; v2 tree at {', '.join(v2)}"
    elif v2:
        layout = f"unified v2 at {', '.join(v2)}"
    else:
        layout = f"v1: {', '.join(v1)}"
    own = next((l.strip() for l in open("/proc/self/cgroup") if ":memory:" in l or l.startswith("0::")), "")
    # The shape of the path matters (nested or not), not this machine's ids.
    own = re.sub(r"[0-9a-f]{16,}", "<id>", own)
    return [
        ("cpus (nproc)", str(os.cpu_count())),
        ("cpu", cpu),
        ("memory", f"{int(mem) // 1024} MiB"),
        ("kernel", platform.release()),
        ("os", sh(". /etc/os-release && echo $PRETTY_NAME")),
        ("cgroups", layout),
        ("runner's own memory cgroup", own),
        ("load average at start", " ".join(open("/proc/loadavg").read().split()[:3])),
        ("rustc", sh("rustc --version")),
        ("commit", sh(f"git -C {ROOT} rev-parse --short HEAD") + (" (dirty)" if sh(f"git -C {ROOT} status --porcelain --untracked-files=no") else "")),
    ]


# ---------------------------------------------------------------- benches


def prepare50_manifest(dir):
    text = (ROOT / "manifests/local.yaml").read_text()
    text = text.replace("name: local", "name: bench-prepare50", 1)
    cmds = "".join('    - ["true"]\n' for _ in range(50))
    text = text.replace("launch:\n", f"prepare:\n  key: [bench]\n  run:\n{cmds}launch:\n", 1)
    path = Path(dir) / "prepare50.yaml"
    path.write_text(text)
    return path


def bench_launch(a, tmp, out):
    home = Path(tmp) / "home-launch"
    env = dict(os.environ, RUNNER_HOME=str(home))
    limits = ["--memory", "256MiB", "--cpus", "1"]  # pids 4096 and open_files 4096: the flavor's defaults
    true = which("true")
    p50 = prepare50_manifest(tmp)
    checked([a.runner, "launch", "-q", str(p50), "--", "true"], env)()  # fill the cache
    local_text = (ROOT / "manifests/local.yaml").read_text()
    fresh_n = [0]

    def fresh_text():
        # A manifest text never seen before (a new comment line): validated in full.
        fresh_n[0] += 1
        path = Path(tmp) / "fresh.yaml"
        path.write_text(f"# edit {fresh_n[0]}\n{local_text}")
        return checked([a.runner, "launch", "-q", str(path), *limits, "--", "true"], env)()
    cases = [
        Case("`true`", checked([true])),
        Case("`timeout 60 prlimit --nofile=1024 true`",
             checked([which("timeout"), "60", which("prlimit"), "--nofile=1024", true])),
        Case("`runner launch manifests/local.yaml` (memory+cpus+pids) `-- true`",
             checked([a.runner, "launch", "-q", "manifests/local.yaml", *limits, "--", "true"], env)),
        Case("`runner launch` + 50-command prepare, cache hit",
             checked([a.runner, "launch", "-q", str(p50), *limits, "--", "true"], env)),
        Case("`runner launch` of a manifest text not seen before (validated in full)", fresh_text),
    ]
    skipped = []
    # The same launch with its runner home (run folder, logs, result) on a tmpfs: what
    # the runner itself costs, without the disk's inode allocation (the C launcher
    # below makes no files).
    shm = tmpfs_dir()
    shm_home = Path(tempfile.mkdtemp(prefix="steprunner-bench-home-", dir=shm)) if shm else None
    if shm_home:
        cases.append(Case("the same, its runner home on a tmpfs",
                          checked([a.runner, "launch", "-q", "manifests/local.yaml", *limits, "--", "true"],
                                  dict(env, RUNNER_HOME=str(shm_home)))))
    else:
        skipped.append("the launch with its home on a tmpfs: /dev/shm is not a writable tmpfs here")
    v1 = any(":memory:" in l for l in open("/proc/self/cgroup"))
    if a.cglaunch and v1:
        cases.append(Case("`cglaunch` (C: mkdir 5 v1 cgroups, 3 limits, fork, join, exec, wait, rmdir) `true`",
                          checked([a.cglaunch, str(256 << 20), "100000", "4096", "--", true])))
    elif a.cglaunch:
        skipped.append("the minimal C launcher: it makes cgroup v1 cgroups, and this host is not v1")
    if subprocess.run(["docker", "info"], capture_output=True).returncode == 0 if shutil.which("docker") else False:
        image = a.docker_image
        cases.append(Case(f"`docker run --rm {image} true`",
                          checked([which("docker"), "run", "--rm", "--network", "none", image, "true"])))
    else:
        skipped.append("`docker run --rm`: the docker client is installed but no daemon runs (`docker info` fails; "
                       "`BENCH_DOCKER=1 just bench` starts one)"
                       if shutil.which("docker") else "`docker run --rm`: docker is not installed")
    if shutil.which("systemd-run") and subprocess.run(["systemd-run", "--wait", "-q", "true"], capture_output=True).returncode == 0:
        cases.append(Case("`systemd-run --wait true`", checked([which("systemd-run"), "--wait", "-q", "true"])))
    else:
        skipped.append("`systemd-run --wait`: not usable here (systemd is not PID 1)")
    alternate(cases, a.launch_rounds)
    shutil.rmtree(home, ignore_errors=True)
    if shm_home:
        shutil.rmtree(shm_home, ignore_errors=True)
    tp = cases[1]
    over = cases[2].median - tp.median
    out.append("## 1. Launch overhead\n")
    out.append(
        "Wall time from spawn to reap of each command, its output to `/dev/null`. The runner "
        "validates the manifest, renders the plan, creates the run folder, creates a cgroup in "
        "every v1 controller with memory (256 MiB), cpus (1) and pids (4096) limits, sets "
        "rlimits, runs `true` in it, waits, reads the counters, removes the cgroup and writes "
        "`result.json`.\n")
    out.append(table(cases, fmt_ms, baseline=tp))
    out.append(f"\nRatios are to `timeout 60 prlimit --nofile=1024 true`. "
               f"**Runner overhead over `timeout+prlimit`: {fmt_ms(over)}** (target: within 5 ms → "
               f"{'met' if over <= 0.005 else 'missed'}). "
               f"A cache hit of a 50-command prepare adds {fmt_ms(cases[3].median - cases[2].median)} "
               f"to a launch. The runner remembers a manifest text that passed validation "
               f"(`$RUNNER_HOME/validated`); the first launch of a new or edited text validates it "
               f"in full, {fmt_ms(cases[4].median - cases[2].median)} more.\n")
    cg = next((c for c in cases if c.name.startswith("`cglaunch`")), None)
    on_shm = next((c for c in cases if c.name.endswith("on a tmpfs")), None)
    if cg:
        ratio = cases[2].median / cg.median
        out.append(f"**Runner against the minimal C launcher: {ratio:.2f}×** its time "
                   f"({fmt_ms(cases[2].median)} vs {fmt_ms(cg.median)}; target: within 2× → "
                   f"{'met' if ratio <= 2 else 'missed'}). The C program does the cgroup work "
                   "and nothing else: no manifest, plan, run folder, logs, containment, "
                   "records or result.\n")
        if on_shm:
            out.append(f"With the runner home on a tmpfs: {fmt_ms(on_shm.median)}, "
                       f"{on_shm.median / cg.median:.2f}× the C launcher; the run folder's "
                       f"files on this disk cost {fmt_ms(cases[2].median - on_shm.median)}.\n")
    for s in skipped:
        out.append(f"- not measured: {s}")
    out.append("")
    return over


def bench_prepare(a, tmp, out):
    """Cold prepare of the README's step on the venv flavor, with each installer, beside
    the installer's own command making the same environment."""
    uv = a.uv
    python = which("python3")
    n = [0]

    def fresh():
        n[0] += 1
        return Path(tmp) / f"cold-{n[0]}"

    def launch(installer, reqs):
        def fn():
            home = fresh()
            env = dict(os.environ, RUNNER_HOME=str(home),
                       PATH=f"{Path(uv).parent}:{os.environ.get('PATH', '')}")
            argv = [a.runner, "launch", "-q", "manifests/venv.yaml", "--info", "examples/hello/step.yaml",
                    "--set", f"installer={installer}", *sum((["-r", r] for r in reqs), [])]
            t = checked(argv, env)()
            shutil.rmtree(home, ignore_errors=True)
            return t
        return fn

    def own(installer, reqs):
        def fn():
            venv = fresh()
            vpy = str(venv / "bin/python")
            steps = ([[uv, "venv", "--quiet", "--python", python, str(venv)]]
                     + ([[uv, "pip", "install", "--quiet", "--python", vpy, *reqs]] if reqs else [])
                     if installer == "uv" else
                     [[python, "-m", "venv", str(venv)]]
                     + ([[vpy, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *reqs]]
                        if reqs else []))
            steps.append([vpy, "examples/hello/train.py"])
            t = sum(checked(argv)() for argv in steps)
            shutil.rmtree(venv, ignore_errors=True)
            return t
        return fn

    reqs = ["tabulate"]
    cases = [
        Case("`python3 -m venv` + `train.py` (pip's own)", own("pip", [])),
        Case("`runner launch manifests/venv.yaml`, `installer: pip`, cold", launch("pip", [])),
        Case("`uv venv` + `train.py` (uv's own)", own("uv", [])),
        Case("`runner launch manifests/venv.yaml`, `installer: uv`, cold", launch("uv", [])),
        Case("`venv` + `pip install tabulate` + `train.py`", own("pip", reqs)),
        Case("`runner launch … -r tabulate`, `installer: pip`, cold", launch("pip", reqs)),
        Case("`uv venv` + `uv pip install tabulate` + `train.py`", own("uv", reqs)),
        Case("`runner launch … -r tabulate`, `installer: uv`, cold", launch("uv", reqs)),
    ]
    alternate(cases, a.prepare_rounds, warmup=1)
    out.append("## 7. Cold prepare: uv against pip\n")
    out.append(
        "The README's step (`manifests/venv.yaml --info examples/hello/step.yaml`) with an empty "
        "cache (a fresh `RUNNER_HOME` each time), beside the installer's own commands making the "
        "same environment and running the same script. `installer: auto`, the default, is uv "
        "when it is on PATH. Package downloads come from PyPI through each tool's own download "
        "cache (warm after the first round).\n")
    out.append(table(cases, fmt_s))
    pip, uvl = cases[1].median, cases[3].median
    out.append(f"\n**Cold prepare of the README's step: uv {fmt_s(uvl)} against pip {fmt_s(pip)} "
               f"({pip / uvl:.1f}× faster)**; the runner adds {fmt_s(uvl - cases[2].median)} over "
               f"uv's own commands, {fmt_s(cases[7].median - cases[6].median)} with a requirement.\n")


def bench_guest(a, tmp, out):
    """The cgroup v2 case, measured inside the guest by tests/guest/bench_guest.py."""
    data = json.load(open(a.guest_bench))
    out.append("## 6. cgroup v2 with systemd (in the test guest)\n")
    out.append(
        f"Measured inside the Debian 12 guest (kernel {data['kernel']}, systemd as PID 1, "
        "booted under QEMU **without KVM**: software emulation makes every process start "
        "and every instruction tens of times slower than on the host, so compare the rows "
        f"with each other, not with the host's). {data['rounds']} rounds, alternating, "
        "shuffled, as root (system manager) and as the unprivileged user (user manager), "
        "from two places: **in a service** without `Delegate=` (the runner asks systemd "
        "for a delegated scope per launch, over D-Bus, as `systemd-run --scope` does), and "
        "**beside a leaf** of a `Delegate=yes` service (as systemd 254's "
        "`DelegateSubgroup=` places one): the run goes beside the leaf, no manager is "
        "asked.\n")
    places = {"service": "in a service without `Delegate=`",
              "beside": "in a leaf of a `Delegate=yes` service"}
    for who in ("root", "user"):
        for where, title in places.items():
            rows = [r for r in data["results"] if r["who"] == who and r.get("where", "service") == where]
            if not rows:
                continue
            out.append(f"**{who}, {title}**\n")
            out.append("| case | median | p10 | p90 | runs |\n|---|---|---|---|---|")
            for r in rows:
                out.append(f"| {r['case']} | {r['median_ms']:.0f} ms | {r['p10_ms']:.0f} ms | "
                           f"{r['p90_ms']:.0f} ms | {r['runs']} |")
            runner = next(r["median_ms"] for r in rows if r["case"].startswith("runner launch"))
            scope = next(r["median_ms"] for r in rows if r["case"].startswith("systemd-run --scope"))
            ratio = runner / scope
            out.append(f"\n`runner launch` / `systemd-run --scope`: **{ratio:.2f}×** (target: under "
                       f"0.5× → {'met' if ratio < 0.5 else 'missed'}).\n")
    out.append("")


def poll_process(pid, samples, stop):
    """Keep the last VmHWM (kB) and utime+stime (s) of `pid` while it lives."""
    while not stop.is_set():
        try:
            status = open(f"/proc/{pid}/status").read()
            stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            hwm = next(int(l.split()[1]) for l in status.splitlines() if l.startswith("VmHWM"))
            samples["hwm_kib"] = max(samples.get("hwm_kib", 0), hwm)
            samples["cpu_s"] = (int(stat[11]) + int(stat[12])) / CLK_TCK
        except (OSError, StopIteration, IndexError, ValueError):
            pass
        stop.wait(0.05)


def watched(argv, env=None, stdout=os.devnull, stdin_from=None):
    """Run argv to the end, sampling its own peak RSS and CPU time (not its children's)."""
    samples, stop = {}, threading.Event()
    t0 = time.perf_counter()
    if stdin_from is None:
        p = subprocess.Popen(argv, env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
                             stdout=open(stdout, "wb"), stderr=subprocess.DEVNULL)
    else:
        p = subprocess.Popen(argv, env=env, cwd=ROOT, stdin=stdin_from,
                             stdout=open(stdout, "wb"), stderr=subprocess.DEVNULL)
    t = threading.Thread(target=poll_process, args=(p.pid, samples, stop))
    t.start()
    code = p.wait()
    stop.set()
    t.join()
    return time.perf_counter() - t0, code, samples


def tmpfs_dir():
    """A tmpfs to write logs to (memory, not the disk), if the machine has one."""
    for line in open("/proc/self/mounts"):
        dev, mnt, fstype = line.split()[:3]
        if fstype == "tmpfs" and mnt == "/dev/shm" and os.access(mnt, os.W_OK):
            return Path(mnt)
    return None


def bench_logs(a, tmp, out):
    size = a.log_bytes
    producer = f"head -c {size} /dev/zero"
    places = [("disk", Path(tmp))]
    shm = tmpfs_dir()
    if shm is not None:
        places.append(("tmpfs", Path(tempfile.mkdtemp(prefix="steprunner-bench-", dir=shm))))
    cases, cleans = [], []
    for where, base in places:
        home = base / "home-logs"
        env = dict(os.environ, RUNNER_HOME=str(home))
        teefile = base / "tee.log"

        def clean(home=home, teefile=teefile):
            shutil.rmtree(home, ignore_errors=True)
            teefile.unlink(missing_ok=True)

        cleans.append(clean)
        if where == "disk":
            cases.append(Case(f"`{producer} > /dev/null` (producer alone)",
                              checked(["/bin/sh", "-c", f"{producer} > /dev/null"])))
        cases.append(Case(f"{where}: `{producer} | tee FILE > /dev/null`",
                          checked(["/bin/sh", "-c", f"{producer} | tee {teefile} > /dev/null"])))
        cases.append(Case(f"{where}: `runner launch manifests/local.yaml -- {producer}` "
                          "(log file + live copy to /dev/null)",
                          checked([a.runner, "launch", "manifests/local.yaml", "--", "head", "-c",
                                   str(size), "/dev/zero"], env)))

    def clean_all():
        for c in cleans:
            c()

    alternate(cases, a.log_rounds, warmup=1, between=clean_all)
    clean_all()
    for where, base in places[1:]:
        shutil.rmtree(base, ignore_errors=True)
    gib = size / GIB
    pairs = [(cases[i], cases[i + 1], where) for i, (where, _) in zip(range(1, len(cases), 2), places)]

    out.append("## 2. Log throughput\n")
    out.append(f"A step writing {gib:g} GiB to stdout: the runner copies it to `stdout.log` in the run "
               "folder and live to its own stdout (`/dev/null`), against `tee` doing the same, "
               "with the files on the disk and, where there is one, on a tmpfs (memory: no disk "
               "speed to hide the copying cost). Files removed between runs.\n")
    out.append(table(cases, fmt_s, extra=("GiB/s", lambda c: f"{gib / c.median:.2f}")))
    lines, ratios = [], {}
    for tee, run, where in pairs:
        ratios[where] = run.median / tee.median
        lines.append(f"{where}: runner {ratios[where]:.2f}× the time of `tee`")
    best = min(ratios.values())
    out.append(f"\n{'; '.join(lines)}. Target: at least as fast as `tee` → "
               f"{'met' if all(r <= 1.0 for r in ratios.values()) else 'missed'}.\n")
    return ratios


def bench_validate(a, tmp, out):
    d = Path(tmp) / "manifests-1000"
    d.mkdir()
    sources = sorted((ROOT / "manifests").glob("*.yaml"))
    for i in range(1000):
        src = sources[i % len(sources)]
        (d / f"{i:04d}-{src.name}").write_text(src.read_text())
    one = ROOT / "manifests/venv.yaml"
    cases = [
        Case("`runner validate manifests/venv.yaml` (1 file: start-up)", checked([a.runner, "validate", str(one)])),
        Case("`runner validate DIR` (1,000 files)", checked([a.runner, "validate", str(d)])),
    ]
    alternate(cases, a.validate_rounds)
    per = (cases[1].median - cases[0].median) / 999
    out.append("## 3. Validation\n")
    out.append(f"1,000 copies of the shipped manifests ({', '.join(s.name for s in sources)}) in one "
               "folder, validated by one `runner validate` process (all valid: YAML, schema, "
               "settings schema and defaults, templates, variables).\n")
    out.append(table(cases, fmt_ms, baseline=cases[0]))
    out.append(f"\n**1,000 manifests: {fmt_ms(cases[1].median)}**, about {per * 1e6:.0f} µs per "
               "manifest after start-up.\n")
    shutil.rmtree(d)


def bench_footprint(a, tmp, out):
    home = Path(tmp) / "home-footprint"
    env = dict(os.environ, RUNNER_HOME=str(home))
    secs = a.footprint_secs
    chunk = GIB // secs
    step = f"for i in $(seq {secs}); do head -c {chunk} /dev/zero; sleep 1; done"
    rows = []
    # The runner supervising the paced step; baseline: `tee` copying the same stream.
    wall, code, s = watched([a.runner, "launch", "manifests/local.yaml", "--", "sh", "-c", step], env)
    assert code == 0, f"runner exited {code}"
    rows.append((f"runner, {secs} s step writing 1 GiB (paced)", wall, s))
    teefile = Path(tmp) / "tee-footprint.log"
    prod = subprocess.Popen(["sh", "-c", step], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    wall, code, s = watched([which("tee"), str(teefile)], stdin_from=prod.stdout)
    prod.stdout.close()
    prod.wait()
    rows.append((f"`tee FILE`, same stream", wall, s))
    teefile.unlink(missing_ok=True)
    shutil.rmtree(home, ignore_errors=True)
    # The same 1 GiB as fast as it comes, and 2 GiB on stdout + stderr together.
    for label, argv in [
        ("runner, 1 GiB burst", ["head", "-c", str(GIB), "/dev/zero"]),
        ("runner, 1 GiB stdout + 1 GiB stderr burst",
         ["sh", "-c", f"head -c {GIB} /dev/zero & head -c {GIB} /dev/zero >&2; wait"]),
    ]:
        wall, code, s = watched([a.runner, "launch", "manifests/local.yaml", "--", *argv], env)
        assert code == 0, f"runner exited {code}"
        rows.append((label, wall, s))
        shutil.rmtree(home, ignore_errors=True)
    out.append("## 4. Footprint\n")
    out.append(f"Peak RSS (`VmHWM`) and CPU time (utime+stime) of the supervising process itself, "
               f"not of the step, sampled from `/proc` every 50 ms. The paced step runs {secs} s and "
               f"writes 1 GiB in {secs} chunks of {chunk // MIB} MiB, one per second "
               f"(`FOOTPRINT_SECS` changes it). Live copy to `/dev/null`.\n")
    out.append("| process | wall | peak RSS | CPU time |\n|---|---|---|---|")
    peak = 0
    for label, wall, s in rows:
        if label.startswith("runner"):
            peak = max(peak, s.get("hwm_kib", 0))
        out.append(f"| {label} | {wall:.1f} s | {s.get('hwm_kib', 0) / 1024:.1f} MiB | {s.get('cpu_s', 0):.2f} s |")
    out.append(f"\nTarget: runner RSS under 16 MiB whatever the log volume → "
               f"{'met' if peak < 16 * 1024 else 'missed'} (largest seen: {peak / 1024:.1f} MiB).\n")
    return peak


def bench_concurrency(a, tmp, out):
    home = Path(tmp) / "home-conc"
    env = dict(os.environ, RUNNER_HOME=str(home))
    n = 50
    true = which("true")

    def together(argv, env=None):
        def fn():
            t0 = time.perf_counter()
            pids = [spawn(argv, env) for _ in range(n)]
            codes = [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids]
            t = time.perf_counter() - t0
            bad = [c for c in codes if c != 0]
            if bad:
                raise SystemExit(f"bench: {len(bad)} of {n} concurrent runs failed: {bad[:5]}")
            return t
        return fn

    cases = [
        Case(f"{n} × `true` at once", together([true])),
        Case(f"{n} × `timeout 60 prlimit --nofile=1024 true` at once",
             together([which("timeout"), "60", which("prlimit"), "--nofile=1024", true])),
        Case(f"{n} × `runner launch manifests/local.yaml` (memory+cpus+pids) `-- true` at once",
             together([a.runner, "launch", "-q", "manifests/local.yaml", "--memory", "256MiB", "--cpus", "1", "--", "true"], env)),
    ]
    alternate(cases, a.conc_rounds, warmup=1)
    shutil.rmtree(home, ignore_errors=True)
    out.append("## 5. Concurrency\n")
    out.append(f"{n} processes started at once, wall time until the last is reaped; every run must "
               "exit 0 (the harness stops otherwise).\n")
    out.append(table(cases, fmt_ms, baseline=cases[1]))
    out.append(f"\nRatios are to {n} × `timeout+prlimit`. Per launch: "
               f"{fmt_ms(cases[2].median / n)} of wall time on {os.cpu_count()} cores.\n")


def busy_note():
    load = float(open("/proc/loadavg").read().split()[0])
    if load > 1.0:
        return (f"**The machine was busy** (load average {load:.2f} at the start, on "
                f"{os.cpu_count()} cores): absolute numbers are noisy; the alternation keeps "
                "the *ratios* fair, and p10 shows what a quieter machine gives.\n")
    return (f"The machine was otherwise quiet (load average {load:.2f} at the start, on "
            f"{os.cpu_count()} cores); the load average at the end is under the last table.\n")


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runner", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--docker-image", default="local/base")
    p.add_argument("--only", help="comma-separated: launch,logs,validate,footprint,concurrency,guest,prepare")
    p.add_argument("--cglaunch", help="the minimal C launcher (bench/cglaunch.c), built")
    p.add_argument("--guest-bench", help="bench.json written by the guest (tests/guest/bench_guest.py)")
    p.add_argument("--uv", help="a uv binary, for the cold-prepare section")
    a = p.parse_args()
    a.runner = str(Path(a.runner).resolve())
    q = a.quick
    a.launch_rounds = 20 if q else 300
    a.log_rounds = 2 if q else 9
    a.log_bytes = (256 * MIB) if q else 2 * GIB
    a.validate_rounds = 3 if q else 21
    a.footprint_secs = int(os.environ.get("FOOTPRINT_SECS", "4" if q else "60"))
    a.conc_rounds = 2 if q else 15
    a.prepare_rounds = 2 if q else 7
    only = set((a.only or "launch,logs,validate,footprint,concurrency,guest,prepare").split(","))

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    out = [
        "# Benchmarks\n",
        f"Written by `just bench` (`bench/run.sh` → `bench/harness.py`) on {started}. "
        "Each benchmark runs steprunner and its baselines **alternately in the same run** "
        "(shuffled order per round, warm-up rounds dropped) and reports the median, p10 and p90 "
        "of wall time and the ratio of medians.\n",
        busy_note() if not q else
        "**Quick smoke run** (few repetitions): not numbers to quote.\n",
        "Where the time goes, from profiling, and which targets of issue 6 are met: "
        "`bench/NOTES.md`.\n",
        "## Machine\n",
        "| | |\n|---|---|",
    ]
    out += [f"| {k} | {v} |" for k, v in machine()]
    out.append("")
    with tempfile.TemporaryDirectory(prefix="steprunner-bench-") as tmp:
        for name, fn in [("launch", bench_launch), ("logs", bench_logs), ("validate", bench_validate),
                         ("footprint", bench_footprint), ("concurrency", bench_concurrency),
                         ("guest", bench_guest), ("prepare", bench_prepare)]:
            if name == "guest" and not a.guest_bench:
                out.append("## 6. cgroup v2 with systemd\n\nNot measured: `BENCH_GUEST=0`.\n")
                continue
            if name == "prepare" and not a.uv:
                out.append("## 7. Cold prepare: uv against pip\n\nNot measured: no `--uv`.\n")
                continue
            if name in only:
                print(f"bench: {name}…", file=sys.stderr, flush=True)
                fn(a, tmp, out)
    out.append(f"Load average at the end: {' '.join(open('/proc/loadavg').read().split()[:3])}.\n")
    Path(a.out).write_text("\n".join(out))
    print("\n".join(out))


if __name__ == "__main__":
    main()
