#!/usr/bin/env python3
"""The cgroup v2 suite, run inside the Debian 12 test guest (systemd as PID 1, the
unified hierarchy with `nsdelegate`) by `tests/it/guest.rs`.

Every case runs twice: as root in a system service (this script is one, without
`Delegate=`), and as the unprivileged user `steprunner` (uid 1001, lingering, so
`user@1001.service` runs). Each case checks what a user would: exit codes, the result
JSON, processes and cgroups that must be gone afterwards. Results go to
`/payload/out/results.json` as a list of {case, user, passed, detail, secs}; a case
that could not run is a failure, never a pass.

Standard library only: the guest has Debian's python3 and nothing else.
"""

import json
import os
import signal
import subprocess
import sys
import time
import traceback

from guest_user import UID, USER, as_user

PAYLOAD = "/payload"
RUNNER = f"{PAYLOAD}/runner"
MANIFESTS = f"{PAYLOAD}/manifests"
CGROUP = "/sys/fs/cgroup"

results = []


def log(*a):
    print("suite:", *a, flush=True)


def home(user, name):
    base = f"/home/{USER}" if user else "/root"
    return f"{base}/runner-home-{name}"


def command(user, args, name):
    """`runner ARGS` as root or as the user (with the user's session variables), with a
    RUNNER_HOME of its own called `name`."""
    return as_user([RUNNER, *args], user, {"RUNNER_HOME": home(user, name)})


def runner(user, args, name, timeout=600, cwd=PAYLOAD):
    """Run `runner ARGS` to its end: (code, stdout, stderr)."""
    p = subprocess.run(command(user, args, name), capture_output=True, text=True, timeout=timeout, cwd=cwd)
    return p.returncode, p.stdout, p.stderr


def launch(user, args, name, **kw):
    code, out, err = runner(user, ["launch", "--json", "-q", *args], name, **kw)
    try:
        result = json.loads(out)
    except ValueError:
        result = None
    return code, result, err


def limit(result, name):
    for l in result["limits"]:
        if l["name"] == name:
            return l
    raise AssertionError(f"no limit {name} in {result['limits']}")


def pgrep(marker):
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def leftover_cgroups():
    """Every steprunner cgroup left in the hierarchy."""
    found = []
    for dirpath, dirnames, _ in os.walk(CGROUP):
        for d in dirnames:
            if d.startswith("steprunner"):
                found.append(os.path.join(dirpath, d))
    return found


def settle(check, secs=15):
    """Wait for `check()` to be falsy (processes or cgroups that are going away)."""
    deadline = time.monotonic() + secs
    while True:
        left = check()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def nothing_left(marker=None):
    procs = settle(lambda: pgrep(marker)) if marker else []
    cgs = settle(leftover_cgroups)
    assert not procs, f"processes left: {procs}"
    assert not cgs, f"cgroups left: {cgs}"


CASES = []


def case(fn=None, root_only=False):
    """A case of the suite; `root_only` cases are not run as the user (not applicable)."""
    def register(fn):
        CASES.append((fn, root_only))
        return fn
    return register(fn) if fn else register


@case
def every_limit_is_enforced_by_cgroup_v2(user):
    code, r, err = launch(user, [f"{MANIFESTS}/local.yaml", "--memory", "64MiB", "--cpus", "1", "--", "true"], "limits")
    assert code == 0, (code, err)
    for name in ("memory", "cpus", "pids"):
        l = limit(r, name)
        assert l["enforced_by"] == "cgroup-v2", l
        assert l["contained"] is True, l
    assert r["containment"]["contained"] is True, r["containment"]
    assert r["containment"]["mode"] == ("user-namespace" if user else "root"), r["containment"]
    # The venv flavor too, with its prepare stage.
    code, r, err = launch(
        user, [f"{MANIFESTS}/venv.yaml", "--memory", "256MiB", "--cpus", "1", "--", "python3", "-c", "print(6 * 7)"], "venv"
    )
    assert code == 0, (code, err, r)
    assert r["stages"]["prepare"]["status"] == "ok", r["stages"]
    for name in ("memory", "cpus", "pids"):
        assert limit(r, name)["enforced_by"] == "cgroup-v2", r["limits"]
    nothing_left()
    return f"local and venv: memory, cpus, pids by cgroup-v2, containment {r['containment']['mode']}"


@case
def memory_limit_oom_kills_from_memory_events(user):
    code, r, err = launch(
        user, [f"{MANIFESTS}/local.yaml", "--memory", "64MiB", "--", "python3", "-c", "b = bytearray(256 << 20)"], "oom"
    )
    assert code == 137, (code, err, r)
    assert r["status"] == "oom_killed", r["status"]
    assert r["oom_kills"] >= 1, r["oom_kills"]
    assert r["peak_memory_bytes"] <= 64 << 20, r["peak_memory_bytes"]
    nothing_left()
    return f"exit 137, oom_kills {r['oom_kills']}, peak {r['peak_memory_bytes']}"


@case
def half_a_cpu_gets_half_the_cpu_time(user):
    spin = "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 3: pass\n"
    code, r, err = launch(user, [f"{MANIFESTS}/local.yaml", "--cpus", "0.5", "--", "python3", "-c", spin], "cpu")
    assert code == 0, (code, err)
    cpu = r["cpu_user_secs"] + r["cpu_system_secs"]
    wall = r["stages"]["launch"]["duration_secs"]
    ratio = cpu / wall
    assert ratio <= 0.65, f"cpu {cpu:.2f}s in {wall:.2f}s: {ratio:.2f}"
    assert limit(r, "cpus")["enforced_by"] == "cgroup-v2"
    # The profile, sampled from cpu.stat and memory.current: about 3 s of points, whose
    # CPU time by the end is the step's.
    p = r["profile"]
    assert p is not None and len(p["cpu_secs"]) >= 10, p
    assert len(p["memory_bytes"]) == len(p["cpu_secs"]), p
    assert max(p["memory_bytes"]) > 0, p
    sampled = p["cpu_secs"][-1]
    assert 0.7 * cpu <= sampled <= cpu * 1.01, f"sampled cpu {sampled:.2f}s of {cpu:.2f}s"
    return f"cpu/wall {ratio:.2f} (cpu {cpu:.2f}s, wall {wall:.2f}s), profile {len(p['cpu_secs'])} points, sampled cpu {sampled:.2f}s"


@case
def a_fork_bomb_is_contained_by_pids(user):
    bomb = (
        "import os, sys\nok = fail = 0\n"
        "for _ in range(300):\n"
        "    try:\n"
        "        if os.fork() == 0:\n"
        "            import time; time.sleep(60); os._exit(0)\n"
        "        ok += 1\n"
        "    except OSError:\n"
        "        fail += 1\n"
        "print(ok, fail)\n"
    )
    code, r, err = launch(user, [f"{MANIFESTS}/local.yaml", "--set", "pids=32", "--", "python3", "-c", bomb], "bomb")
    assert code == 0, (code, err)
    out = open(r["logs"]["stdout"]).read().split()
    ok, fail = int(out[0]), int(out[1])
    assert ok < 32 and fail > 0, (ok, fail)
    assert r["leftover_processes_killed"] >= ok, r["leftover_processes_killed"]
    nothing_left("time.sleep(60)")
    return f"{ok} forks, {fail} refused, {r['leftover_processes_killed']} leftovers killed"


@case
def a_setsid_escapee_ignoring_term_is_killed_at_the_timeout(user):
    marker = f"escapee-{int(user)}-{os.getpid()}"
    script = f"setsid bash -c 'trap \"\" TERM; exec -a {marker} sleep 1000' & sleep 1000"
    code, r, err = launch(
        user, [f"{MANIFESTS}/local.yaml", "--set", "timeout=3s", "--set", "kill_grace=1s", "--", "bash", "-c", script], "timeout"
    )
    assert code == 124, (code, err)
    assert r["status"] == "timed_out", r["status"]
    nothing_left(marker)
    return f"exit 124, {r['leftover_processes_killed']} leftovers killed"


ATTACK = r"""
import os, sys
run = os.environ["RUNNER_RUN_ID"]
def attempt(what, path, value):
    try:
        with open(path, "w") as f:
            f.write(value)
        print("BROKE", what, path, flush=True)
    except OSError as e:
        print("refused", what, e.errno, flush=True)
# The step's own view, and the host's paths to its cgroup and scope.
scope = None
for dirpath, dirnames, _ in os.walk("/sys/fs/cgroup"):
    if dirpath.endswith(f"steprunner-{run}.scope"):
        scope = dirpath
        break
attempt("own memory.max", "/sys/fs/cgroup/memory.max", "max")
attempt("own pids.max", "/sys/fs/cgroup/pids.max", "max")
for base in ([scope] if scope else []) + [f"/proc/1/root{scope}" if scope else "/proc/1/root/sys/fs/cgroup"]:
    attempt("launch memory.max", f"{base}/launch/memory.max", "max")
    attempt("leave to the scope", f"{base}/cgroup.procs", str(os.getpid()))
attempt("leave to the root", "/sys/fs/cgroup/cgroup.procs", str(os.getpid()))
attempt("leave via pid 1's view", "/proc/1/root/sys/fs/cgroup/cgroup.procs", str(os.getpid()))
try:
    os.mkdir("/sys/fs/cgroup/sub")
    attempt("move into a sub-cgroup", "/sys/fs/cgroup/sub/cgroup.procs", str(os.getpid()))
    attempt("sub memory.max", "/sys/fs/cgroup/sub/memory.max", "max")
except OSError as e:
    print("refused mkdir", e.errno, flush=True)
b = bytearray(256 << 20)
print("ALLOCATED past the limit", flush=True)
"""


@case
def a_step_cannot_raise_its_limits_or_leave_its_cgroup(user):
    code, r, err = launch(
        user, [f"{MANIFESTS}/local.yaml", "--memory", "64MiB", "--", "python3", "-c", ATTACK], "attack"
    )
    out = open(r["logs"]["stdout"]).read() if r else ""
    assert "BROKE" not in out and "ALLOCATED" not in out, out
    assert out.count("refused") >= 5, out
    assert code == 137 and r["status"] == "oom_killed", (code, err, out)
    nothing_left()
    return f"{out.count('refused')} attempts refused, then OOM-killed at 64 MiB"


@case
def a_step_that_hides_is_still_killed_at_the_timeout(user):
    # It tries to leave its cgroup, then waits to outlive the run: the timeout ends it.
    script = (
        "for f in /sys/fs/cgroup/cgroup.procs /proc/1/root/sys/fs/cgroup/cgroup.procs; do "
        "echo $$ > $f 2>/dev/null && echo BROKE $f; done; exec -a hider-$RUNNER_RUN_ID sleep 1000"
    )
    code, r, err = launch(user, [f"{MANIFESTS}/local.yaml", "--set", "timeout=2s", "--", "bash", "-c", script], "hide")
    out = open(r["logs"]["stdout"]).read()
    assert "BROKE" not in out, out
    assert code == 124, (code, err)
    nothing_left("hider-")
    return "exit 124, nothing left"


@case
def a_killed_runner_is_cleaned_up_by_the_next_one_from_another_cgroup(user):
    marker = f"orphan-{int(user)}-{os.getpid()}"
    ready = f"/tmp/{marker}.ready"
    if os.path.exists(ready):
        os.unlink(ready)
    # A grandchild: the step's own process dies with its runner (parent-death signal),
    # what it started does not.
    script = f"(exec -a {marker} sleep 1000) & touch {ready}; wait"
    argv = command(user, ["launch", "-q", f"{MANIFESTS}/local.yaml", "--memory", "64MiB", "--", "bash", "-c", script], "killed")
    first = subprocess.Popen(argv, cwd=PAYLOAD, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not os.path.exists(ready):
        assert time.monotonic() < deadline and first.poll() is None, "the step never started"
        time.sleep(0.1)
    # The runner process itself (runuser's child for the user).
    pid = int(subprocess.run(["pgrep", "-n", "-f", f"{RUNNER} launch -q"], capture_output=True, text=True).stdout)
    os.kill(pid, signal.SIGKILL)
    first.wait()
    assert pgrep(marker), "the orphan should outlive its runner until someone cleans up"
    # The next runner, started from another cgroup (a scope of its own).
    code, r, err = launch(user, [f"{MANIFESTS}/local.yaml", "--", "true"], "next")
    assert code == 0, (code, err)
    nothing_left(marker)
    return "orphan killed and cgroups removed by the next runner"


@case(root_only=True)
def a_live_run_is_never_touched_from_another_pid_namespace(user):
    marker = f"live-{os.getpid()}"
    # The live step runs until the test lets it end: no race with a clock.
    go = f"/tmp/{marker}.go"
    wait = f"while [ ! -e {go} ]; do sleep 0.1; done"
    argv = [RUNNER, "launch", "--json", "-q", f"{MANIFESTS}/local.yaml", "--", "bash", "-c", f"exec -a {marker} sh -c '{wait}'"]
    env = dict(os.environ, RUNNER_HOME=home(user, "live"))
    live = subprocess.Popen(argv, env=env, cwd=PAYLOAD, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not pgrep(marker):
        assert time.monotonic() < deadline, "the live step never started"
        time.sleep(0.1)
    t0 = time.monotonic()
    # Had it waited on (or killed) the live run, it would never end (or the live run
    # would be gone): the timeout only catches that hang.
    p = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", RUNNER, "launch", "-q", f"{MANIFESTS}/local.yaml", "--", "true"],
        env=dict(os.environ, RUNNER_HOME=home(user, "other")), cwd=PAYLOAD, capture_output=True, text=True,
        timeout=600,
    )
    other = time.monotonic() - t0
    assert p.returncode == 0, (p.returncode, p.stderr)
    assert live.poll() is None and pgrep(marker), "the other launch ended the live run"
    open(go, "w").close()
    out, err = live.communicate(timeout=120)
    os.unlink(go)
    assert live.returncode == 0, (live.returncode, err)
    nothing_left(marker)
    return f"the other launch ended ({other:.2f}s) while the live run went on; it then ended normally"


@case
def concurrent_launches_all_succeed_and_leave_nothing(user):
    procs = []
    for i in range(4):
        argv = command(user, ["launch", "--json", "-q", f"{MANIFESTS}/local.yaml", "--memory", "64MiB", "--", "true"], f"par{i}")
        procs.append(subprocess.Popen(argv, cwd=PAYLOAD, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    codes = [p.wait(timeout=300) for p in procs]
    assert codes == [0, 0, 0, 0], [(c, p.stderr.read()) for c, p in zip(codes, procs)]
    nothing_left()
    return "4 at once: all exit 0"


@case(root_only=True)
def in_a_container_like_namespace_the_runner_uses_its_own_cgroup(user):
    # A cgroup namespace and a fresh cgroup2 mount, as a container with a private cgroup
    # namespace gives its first process; `unshare` execs, so the runner is alone in it.
    inner = (
        f"umount -l /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup && exec env RUNNER_HOME={home(user, 'ctr')} "
        f"{RUNNER} launch --json -q {MANIFESTS}/local.yaml --memory 64MiB -- python3 -c 'b = bytearray(256 << 20)'"
    )
    p = subprocess.run(
        ["systemd-run", "--scope", "--quiet", "-p", "Delegate=yes", "unshare", "--cgroup", "--mount", "sh", "-c", inner],
        capture_output=True, text=True, cwd=PAYLOAD, timeout=300,
    )
    try:
        r = json.loads(p.stdout)
    except ValueError:
        raise AssertionError((p.returncode, p.stdout, p.stderr))
    assert p.returncode == 137 and r["status"] == "oom_killed", (p.returncode, p.stderr, r)
    assert limit(r, "memory")["enforced_by"] == "cgroup-v2"
    nothing_left()
    return "exit 137 from a cgroup namespace root"


@case
def beside_its_leaf_in_a_delegated_service_no_manager_is_asked(user):
    # A `Delegate=yes` service whose main process moved itself into a leaf (what
    # systemd 254's `DelegateSubgroup=` does): the run goes beside the leaf, under the
    # service's own cgroup, with no D-Bus call; limits hold and nothing is left.
    env = f"RUNNER_HOME={home(user, 'beside')}"
    script = (
        'cg=/sys/fs/cgroup$(sed -n "s/^0:://p" /proc/self/cgroup)\n'
        'mkdir "$cg/main" && echo $$ > "$cg/main/cgroup.procs" || exit 3\n'
        f"env {env} {RUNNER} doctor --json && echo '-- launch'\n"
        f"env {env} {RUNNER} launch --json -q {MANIFESTS}/local.yaml --memory 64MiB -- "
        "python3 -c 'b = bytearray(256 << 20)'\necho \"-- exit $?\"\n"
    )
    # A file, not `sh -c`: systemd-run expands `$` in a command line (`$$` is `$`).
    path = f"/tmp/beside-{'user' if user else 'root'}.sh"
    with open(path, "w") as f:
        f.write(script)
    os.chmod(path, 0o644)
    argv = ["systemd-run", *(["--user"] if user else []), "--quiet", "--wait", "--pipe",
            "-p", "Delegate=yes", "sh", path]
    p = subprocess.run(as_user(argv, user), capture_output=True, text=True, cwd="/tmp", timeout=300)
    doctor, _, rest = p.stdout.partition("-- launch\n")
    launched, _, code = rest.rpartition("-- exit ")
    try:
        d, r = json.loads(doctor), json.loads(launched)
    except ValueError:
        raise AssertionError((p.returncode, p.stdout, p.stderr))
    placement = d["cgroup"]["placement"]
    assert "beside the runner" in placement, (placement, d["cgroup"])
    assert code.strip() == "137" and r["status"] == "oom_killed", (code, r, p.stderr)
    assert limit(r, "memory")["enforced_by"] == "cgroup-v2"
    nothing_left()
    return f"{placement}; exit 137"


@case
def doctor_says_what_can_be_enforced(user):
    code, out, err = runner(user, ["doctor", "--json"], "doctor")
    assert code == 0, (code, err, out)
    d = json.loads(out)
    assert d["cgroup"]["version"] == 2, d["cgroup"]
    assert d["cgroup"]["placement"], d["cgroup"]
    for c in ("memory", "cpu", "pids"):
        assert c in d["cgroup"]["controllers"], d["cgroup"]
    assert d["containment"]["contained"], d["containment"]
    code, human, err = runner(user, ["doctor"], "doctor")
    assert code == 0, (code, err)
    return human.strip().splitlines()[0] if human.strip() else err.strip().splitlines()[0]


def main():
    # The user's manager starts at boot (lingering); wait for it.
    for _ in range(120):
        if subprocess.run(["systemctl", "is-active", "--quiet", f"user@{UID}.service"]).returncode == 0:
            break
        time.sleep(0.5)
    only = os.environ.get("SUITE_ONLY")
    for user in (False, True):
        for fn, root_only in CASES:
            if (only and fn.__name__ != only) or (root_only and user):
                continue
            who = "user" if user else "root"
            t0 = time.monotonic()
            try:
                detail = fn(user)
                passed = True
            except Exception as e:
                passed = False
                detail = "".join(traceback.format_exception_only(type(e), e)).strip()[:2000]
                log(traceback.format_exc())
            secs = time.monotonic() - t0
            results.append({"case": fn.__name__, "user": who, "passed": passed,
                            "detail": detail, "secs": round(secs, 2)})
            log(f"{'PASS' if passed else 'FAIL'} {who} {fn.__name__} ({secs:.1f}s): {detail}")
    os.makedirs(f"{PAYLOAD}/out", exist_ok=True)
    with open(f"{PAYLOAD}/out/results.json", "w") as f:
        json.dump(results, f, indent=1)
    log("done")


if __name__ == "__main__":
    main()
