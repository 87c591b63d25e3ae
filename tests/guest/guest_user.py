"""Who runs what in the test guest: root, or the unprivileged user `steprunner`
(uid 1001, lingering) with the session variables a login would give it. Shared by
`suite.py` and `bench_guest.py`, which sit beside it in the guest's /payload.

Standard library only.
"""

USER = "steprunner"
UID = 1001
# What the user's login would set: its manager and bus (for a delegated scope), its home.
SESSION = {
    "XDG_RUNTIME_DIR": f"/run/user/{UID}",
    "DBUS_SESSION_BUS_ADDRESS": f"unix:path=/run/user/{UID}/bus",
    "HOME": f"/home/{USER}",
    "PATH": "/usr/local/bin:/usr/bin:/bin",
}


def as_user(argv, user, env=None):
    """`argv` with the variables `env` set, as root or (`user`) as the user with its
    session's variables too, through `runuser`."""
    env = {**(SESSION if user else {}), **(env or {})}
    if env:
        argv = ["env", *[f"{k}={v}" for k, v in env.items()], *argv]
    return ["runuser", "-u", USER, "--", *argv] if user else argv
