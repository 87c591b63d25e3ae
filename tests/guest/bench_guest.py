#!/usr/bin/env python3
"""`just bench`'s cgroup v2 case, measured inside the test guest (systemd as PID 1):
a launch under a memory and cpu limit against systemd's own ways to run `true` under
the same limits, alternating in a shuffled order, as root and as the unprivileged
user, from two places:

- `service`: a system service without `Delegate=` (this script) and, for the user, a
  login-less `runuser`: the runner asks the manager for a delegated scope per launch;
- `beside`: a leaf of a `Delegate=yes` service (the root's, or the user manager's),
  as systemd 254's `DelegateSubgroup=` places a service: the run goes beside the leaf
  and no manager is asked.

Writes /payload/out/bench.json. Standard library only.
"""

import json
import os
import random
import statistics
import subprocess
import sys
import time

from guest_user import USER, as_user

PAYLOAD = "/payload"
RUNNER = f"{PAYLOAD}/runner"
ROUNDS = int(open(f"{PAYLOAD}/rounds").read()) if os.path.exists(f"{PAYLOAD}/rounds") else 30
LIMITS = ["-p", "MemoryMax=256M", "-p", "CPUQuota=100%"]


def home(user):
    return f"/home/{USER}/bench-home" if user else "/root/bench-home"


def with_home(argv, user):
    """`argv` as root or as the user, with the bench's runner home."""
    return as_user(argv, user, {"RUNNER_HOME": home(user)})


def launch():
    return [RUNNER, "launch", "-q", f"{PAYLOAD}/manifests/local.yaml", "--memory", "256MiB", "--cpus", "1",
            "--", "true"]


def service_cases(user):
    user_flag = ["--user"] if user else []
    return {
        "runner launch (memory 256 MiB, cpus 1) -- true": with_home(launch(), user),
        "systemd-run --scope (same limits) true": with_home(
            ["systemd-run", *user_flag, "--scope", "--quiet", *LIMITS, "true"], user),
        "systemd-run --wait (same limits) true": with_home(
            ["systemd-run", *user_flag, "--wait", "--quiet", *LIMITS, "true"], user),
        # What starting a process costs here, and what runuser adds for the user.
        "true": with_home(["true"], user),
    }


def beside_cases(user):
    user_flag = ["--user"] if user else []
    return {
        "runner launch (memory 256 MiB, cpus 1) -- true": launch(),
        "systemd-run --scope (same limits) true": [
            "systemd-run", *user_flag, "--scope", "--quiet", *LIMITS, "true"],
        "true": ["true"],
    }


def quantile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))]


def measure(cases, seed):
    """Each case ROUNDS times (after 2 warm-up rounds), in a shuffled order per round."""
    rng = random.Random(seed)
    times = {name: [] for name in cases}
    for r in range(ROUNDS + 2):
        order = list(cases)
        rng.shuffle(order)
        for name in order:
            t0 = time.perf_counter()
            p = subprocess.run(cases[name], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            t = time.perf_counter() - t0
            if p.returncode != 0:
                raise SystemExit(f"bench: {name} exited {p.returncode}: {p.stderr[-500:]!r}")
            if r >= 2:
                times[name].append(t)
    return [{"case": name, "median_ms": round(statistics.median(xs) * 1e3, 2),
             "p10_ms": round(quantile(xs, 0.1) * 1e3, 2), "p90_ms": round(quantile(xs, 0.9) * 1e3, 2),
             "runs": len(xs)} for name, xs in times.items()]


def beside(user):
    """In a `Delegate=yes` service of the root's or the user's manager, this script moves
    itself into a leaf and measures there; its rows come back on stdout."""
    inner = [sys.executable, os.path.abspath(__file__), "--in-leaf", "user" if user else "root"]
    argv = ["systemd-run", *(["--user"] if user else []), "--quiet", "--wait", "--pipe",
            "-p", "Delegate=yes", "-E", f"RUNNER_HOME={home(user)}", *inner]
    p = subprocess.run(as_user(argv, user), capture_output=True, text=True, cwd="/tmp")
    if p.returncode != 0:
        raise SystemExit(f"bench: the delegated service failed ({p.returncode}): {p.stderr[-800:]}")
    return json.loads(p.stdout)


def in_leaf(who):
    cg = "/sys/fs/cgroup" + open("/proc/self/cgroup").read().split("::", 1)[1].strip()
    os.mkdir(f"{cg}/main")
    with open(f"{cg}/main/cgroup.procs", "w") as f:
        f.write(str(os.getpid()))
    rows = measure(beside_cases(who == "user"), 43)
    json.dump(rows, sys.stdout)


def main():
    if sys.argv[1:2] == ["--in-leaf"]:
        return in_leaf(sys.argv[2])
    for _ in range(120):
        if subprocess.run(["systemctl", "is-active", "--quiet", "user@1001.service"]).returncode == 0:
            break
        time.sleep(0.5)
    out = {"kernel": os.uname().release, "rounds": ROUNDS, "results": []}
    for user in (False, True):
        who = "user" if user else "root"
        for where, rows in (("service", measure(service_cases(user), 42)), ("beside", beside(user))):
            for r in rows:
                out["results"].append({"who": who, "where": where, **r})
            print(json.dumps(rows, indent=1), flush=True)
    os.makedirs(f"{PAYLOAD}/out", exist_ok=True)
    with open(f"{PAYLOAD}/out/bench.json", "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
