#!/usr/bin/env python3
"""`just bench`'s cgroup v2 case, measured inside the test guest (systemd as PID 1):
a launch under a memory and cpu limit against systemd's own ways to run `true` under
the same limits, alternating in a shuffled order, as root in a system service and as
the unprivileged user. Writes /payload/out/bench.json. Standard library only.
"""

import json
import os
import random
import statistics
import subprocess
import time

PAYLOAD = "/payload"
RUNNER = f"{PAYLOAD}/runner"
USER_ENV = ["XDG_RUNTIME_DIR=/run/user/1001", "DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/1001/bus",
            "HOME=/home/steprunner", "PATH=/usr/local/bin:/usr/bin:/bin"]
ROUNDS = int(open(f"{PAYLOAD}/rounds").read()) if os.path.exists(f"{PAYLOAD}/rounds") else 30


def as_user(argv, user, home):
    env = [f"RUNNER_HOME={home}"] + (USER_ENV if user else [])
    argv = ["env", *env, *argv]
    return ["runuser", "-u", "steprunner", "--", *argv] if user else argv


def cases(user):
    home = f"/home/steprunner/bench-home" if user else "/root/bench-home"
    user_flag = ["--user"] if user else []
    limits = ["-p", "MemoryMax=256M", "-p", "CPUQuota=100%"]
    return {
        "runner launch (memory 256 MiB, cpus 1) -- true": as_user(
            [RUNNER, "launch", "-q", f"{PAYLOAD}/manifests/local.yaml", "--memory", "256MiB", "--cpus", "1", "--", "true"],
            user, home),
        "systemd-run --scope (same limits) true": as_user(
            ["systemd-run", *user_flag, "--scope", "--quiet", *limits, "true"], user, home),
        "systemd-run --wait (same limits) true": as_user(
            ["systemd-run", *user_flag, "--wait", "--quiet", *limits, "true"], user, home),
        # What starting a process costs here, and what runuser adds for the user.
        "true": as_user(["true"], user, home),
    }


def quantile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))]


def main():
    for _ in range(120):
        if subprocess.run(["systemctl", "is-active", "--quiet", "user@1001.service"]).returncode == 0:
            break
        time.sleep(0.5)
    out = {"kernel": os.uname().release, "rounds": ROUNDS, "results": []}
    rng = random.Random(42)
    for user in (False, True):
        cs = cases(user)
        times = {name: [] for name in cs}
        for r in range(ROUNDS + 2):
            order = list(cs)
            rng.shuffle(order)
            for name in order:
                t0 = time.perf_counter()
                p = subprocess.run(cs[name], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                t = time.perf_counter() - t0
                if p.returncode != 0:
                    raise SystemExit(f"bench: {name} exited {p.returncode}: {p.stderr[-500:]!r}")
                if r >= 2:
                    times[name].append(t)
        for name, xs in times.items():
            out["results"].append({
                "who": "user" if user else "root",
                "case": name,
                "median_ms": round(statistics.median(xs) * 1e3, 2),
                "p10_ms": round(quantile(xs, 0.1) * 1e3, 2),
                "p90_ms": round(quantile(xs, 0.9) * 1e3, 2),
                "runs": len(xs),
            })
        print(json.dumps(out["results"][-4:], indent=1), flush=True)
    os.makedirs(f"{PAYLOAD}/out", exist_ok=True)
    with open(f"{PAYLOAD}/out/bench.json", "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
