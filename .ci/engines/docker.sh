#!/usr/bin/env bash
# Docker engine for the tests (see README.md beside this file).
#
#   start  install Debian's docker.io and debootstrap if missing, start a private
#          dockerd that changes nothing in the machine's network (no iptables, no
#          bridge, no forwarding), build the local base image `steprunner/base:bookworm`
#          without a registry, print `export STEPRUNNER_DOCKER_HOST=…` and
#          `export DOCKER_HOST=…`
#   stop   SIGTERM the dockerd it started (by its PID), wait for it, unmount what it
#          left, remove its cgroups
#
# State: `$STEPRUNNER_ENGINES_DIR/docker` (data root, exec root, socket, pid, log).
# The base image's root filesystem is cached as a tarball in
# `$STEPRUNNER_ENGINES_DIR/cache`, so a second start never runs debootstrap again.
set -euo pipefail
ENGINE=docker
. "$(dirname "$0")/lib.sh"

D="$ENGINES_DIR/docker"
DATA="$D/data"
EXEC="$D/exec"
SOCK="$D/docker.sock"
PIDFILE="$D/dockerd.pid"
LOG="$D/dockerd.log"
CGROUP_PARENT=steprunner-docker
BASE_IMAGE=steprunner/base:bookworm
ROOTFS_TAR="$ENGINES_DIR/cache/docker-rootfs-bookworm.tar"
MIRROR="${STEPRUNNER_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

docker_() { docker -H "unix://$SOCK" "$@"; }

recorded_pid() { cat "$PIDFILE" 2>/dev/null || true; }

install_missing() {
    local pkgs=()
    command -v dockerd >/dev/null 2>&1 || pkgs+=(docker.io)
    command -v debootstrap >/dev/null 2>&1 || pkgs+=(debootstrap)
    [ ${#pkgs[@]} -gt 0 ] || return 0
    say "installing ${pkgs[*]}"
    # The packages must not start a system dockerd (it would set up iptables and a
    # bridge): a policy-rc.d that refuses every service start, only for the install.
    local policy=/usr/sbin/policy-rc.d made_policy=
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        made_policy=1
    fi
    local rc=0
    apt_install "${pkgs[@]}" || rc=$?
    [ -z "$made_policy" ] || rm -f "$policy"
    return "$rc"
}

start_dockerd() {
    mkdir -p "$DATA" "$EXEC"
    local pid
    pid=$(recorded_pid)
    if alive "$pid" && docker_ info >/dev/null 2>&1; then
        say "dockerd already running (pid $pid)"
        return 0
    fi
    rm -f "$SOCK" "$PIDFILE"
    # Its own session, so a Ctrl-C meant for the tests does not reach it; its output
    # goes to the log, so `$(docker.sh start)` does not wait for it.
    setsid dockerd \
        --iptables=false --ip6tables=false --ip-masq=false --ip-forward=false \
        --bridge=none --storage-driver=overlay2 \
        --cgroup-parent="$CGROUP_PARENT" \
        --data-root "$DATA" --exec-root "$EXEC" --pidfile "$PIDFILE" \
        -H "unix://$SOCK" </dev/null >"$LOG" 2>&1 &
    pid=$!
    local i
    for i in $(seq 1 300); do
        if docker_ info >/dev/null 2>&1; then
            say "dockerd ready (pid $pid)"
            return 0
        fi
        if ! alive "$pid"; then
            say "dockerd exited; its log:"
            tail -n 30 "$LOG" >&2
            return 1
        fi
        sleep 0.1
    done
    say "dockerd did not answer within 30s; its log:"
    tail -n 30 "$LOG" >&2
    return 1
}

build_base_image() {
    if docker_ image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        return 0
    fi
    if [ ! -s "$ROOTFS_TAR" ]; then
        say "debootstrap bookworm (minbase + python3) from $MIRROR"
        mkdir -p "$(dirname "$ROOTFS_TAR")"
        local rootfs
        rootfs=$(mktemp -d "$ENGINES_DIR/rootfs.XXXXXX")
        if ! debootstrap --variant=minbase --include=python3 bookworm "$rootfs" "$MIRROR" >&2; then
            rm -rf "$rootfs"
            say "debootstrap failed"
            return 1
        fi
        if ! chroot "$rootfs" python3 -c 'import sys; assert sys.version_info >= (3, 11)'; then
            rm -rf "$rootfs"
            say "the bootstrapped root filesystem has no working python3"
            return 1
        fi
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        tar -C "$rootfs" -cf "$ROOTFS_TAR.tmp" .
        mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
        rm -rf "$rootfs"
    fi
    say "importing $BASE_IMAGE"
    docker_ import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/sh"]' \
        "$ROOTFS_TAR" "$BASE_IMAGE" >/dev/null
    docker_ run --rm --network none "$BASE_IMAGE" python3 -c 'print("base image ok")' >&2
}

start() {
    install_missing
    start_dockerd
    build_base_image
    echo "export STEPRUNNER_DOCKER_HOST=unix://$SOCK"
    echo "export DOCKER_HOST=unix://$SOCK"
}

# Mount points under our folder, deepest first.
our_mounts() {
    awk -v d="$D/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r
}

stop() {
    local pid
    pid=$(recorded_pid)
    if alive "$pid"; then
        say "stopping dockerd (pid $pid)"
        # dockerd stops its containers (up to 15 s each by default) before exiting.
        stop_pid "$pid" 60 || say "dockerd (pid $pid) is still there"
    fi
    # A containerd or shim dockerd started and did not take along: ours by their
    # command line, which names our exec root.
    local p
    for p in $(pgrep -f -- "$EXEC/" || true); do
        say "killing leftover process $p: $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)"
        kill -KILL "$p" 2>/dev/null || true
    done
    local m
    for m in $(our_mounts); do
        umount "$m" 2>/dev/null || umount -l "$m" || say "cannot unmount $m"
    done
    # The cgroup parent sits under dockerd's own cgroup in each hierarchy, which may be
    # nested (a memory cgroup per session on some hosts): look a few levels down.
    local cg
    while IFS= read -r cg; do
        find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
        [ ! -d "$cg" ] || say "cannot remove cgroup $cg"
    done < <(find /sys/fs/cgroup -maxdepth 5 -type d -name "$CGROUP_PARENT" 2>/dev/null)
    # dockerd always makes this folder for plugin sockets; remove it when empty.
    rmdir /run/docker/plugins /run/docker 2>/dev/null || true
    rm -f "$SOCK" "$PIDFILE"
}

engine_main "$@"
