#!/usr/bin/env bash
# A real cgroup v2 host for the tests: a Debian 12 guest (systemd as PID 1, the unified
# hierarchy, an unprivileged user with a lingering user manager) booted under QEMU.
#
#   eval "$(bash .ci/engines/guest.sh start)"   # prints STEPRUNNER_GUEST=DIR
#   bash .ci/engines/guest.sh boot PAYLOAD_DIR WORK_DIR
#   bash .ci/engines/guest.sh stop
#
# `start` installs qemu-system-x86, debootstrap and e2fsprogs if missing, bootstraps
# the guest's root filesystem from Debian's packages once (about 4 minutes; cached
# under $STEPRUNNER_ENGINES_DIR/guest), and makes `DIR/base.img` (ext4), `DIR/vmlinuz`
# and `DIR/initrd.img`. Nothing runs in the background: `boot` starts a guest with
# `base.img` as a read-only snapshot and PAYLOAD_DIR as its second disk, waits until it
# powers off (`GUEST_TIMEOUT` seconds at most, default 1500), and leaves its console in
# WORK_DIR/console.log and what it wrote to `/payload/out` in WORK_DIR/out — for the
# tests (`tests/it/guest.rs`, `tests/guest/`) and `just bench`. `stop` kills a QEMU of
# ours that something left behind (by the PID `boot` recorded).
#
# The image runs one thing at boot, as a system service without `Delegate=`:
# `/payload/run` from the second disk (`/dev/vdb`, mounted at `/payload`), with its
# output on the serial console; then it powers off. User `steprunner` (uid 1001)
# lingers, so its user manager (`user@1001.service`) runs from boot.
#
# Only `export` lines go to stdout; everything else goes to stderr.
set -euo pipefail
ENGINE=guest
ENGINE_COMMANDS=boot
. "$(dirname "$0")/lib.sh"

dir=$ENGINES_DIR/guest
mirror=${STEPRUNNER_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Bumped whenever what goes into the image changes: an older image is rebuilt.
image_version=5
packages=systemd-sysv,linux-image-amd64,udev,kmod,python3,procps,iproute2,dbus,dbus-user-session,libpam-systemd,util-linux,attr,python3-venv

install() {
    local opts=(-y -q -o DPkg::Lock::Timeout=120)
    for attempt in 1 2; do
        if apt-get "${opts[@]}" update >&2 &&
            DEBIAN_FRONTEND=noninteractive apt-get "${opts[@]}" install --no-install-recommends "$@" >&2; then
            return 0
        fi
        say "apt-get failed (attempt $attempt)"
        sleep 5
    done
    return 1
}

install() {
    local pkgs=()
    command -v qemu-system-x86_64 >/dev/null || pkgs+=(qemu-system-x86)
    command -v debootstrap >/dev/null || pkgs+=(debootstrap)
    command -v mkfs.ext4 >/dev/null && command -v debugfs >/dev/null || pkgs+=(e2fsprogs)
    [ ${#pkgs[@]} -eq 0 ] || { say "installing ${pkgs[*]}"; apt_install "${pkgs[@]}"; }
}

# Configure the bootstrapped tree: fstab, console, the boot-time runner unit, the user.
configure() {
    local r=$1
    echo "/dev/vda / ext4 rw 0 1" >"$r/etc/fstab"
    echo steprunner-guest >"$r/etc/hostname"
    # The serial getty would take the console over from the test's output.
    ln -sf /dev/null "$r/etc/systemd/system/serial-getty@ttyS0.service"
    # Nothing of the network is wanted (the guest has no NIC).
    ln -sf /dev/null "$r/etc/systemd/system/systemd-networkd-wait-online.service"
    cat >"$r/usr/local/sbin/steprunner-guest-run" <<'EOF'
#!/bin/sh
# Boot hook of the steprunner test guest: run /payload/run, then power off.
exec >/dev/ttyS0 2>&1
mkdir -p /payload
if mount /dev/vdb /payload; then
    echo "guest: payload mounted"
    if [ -x /payload/run ]; then
        /payload/run
        echo "guest: payload exited $?"
    else
        echo "guest: /payload/run is missing"
    fi
    sync
    umount /payload || true
else
    echo "guest: no payload disk"
fi
EOF
    chmod 0755 "$r/usr/local/sbin/steprunner-guest-run"
    [ -x "$r/usr/local/sbin/steprunner-guest-run" ]
    # Powers off when the payload ends, whatever it did.
    cat >"$r/etc/systemd/system/guest-payload.service" <<'EOF'
[Unit]
Description=steprunner test payload
After=multi-user.target systemd-logind.service
Wants=systemd-logind.service
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/steprunner-guest-run
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
EOF
    ln -sf /etc/systemd/system/guest-payload.service \
        "$r/etc/systemd/system/multi-user.target.wants/guest-payload.service"
    chroot "$r" useradd -m -u 1001 -s /bin/sh steprunner
    mkdir -p "$r/var/lib/systemd/linger"
    touch "$r/var/lib/systemd/linger/steprunner"
    # Quiet, fast boots.
    rm -f "$r/etc/systemd/system/timers.target.wants/"* 2>/dev/null || true
}

# The bootstrapped tree, kept (keyed by the package list) so that a change to the
# configuration only redoes the quick part.
bootstrap() {
    local tree=$dir/bootstrap
    if [ "$(cat "$dir/bootstrap.ok" 2>/dev/null)" = "$packages" ] && [ -d "$tree" ]; then
        return 0
    fi
    rm -rf "$tree" "$dir/bootstrap.ok"
    mkdir -p "$dir"
    say "debootstrap bookworm with systemd and a kernel (a few minutes) from $mirror"
    local t0=$SECONDS
    if ! debootstrap --variant=minbase --include="$packages" bookworm "$tree" "$mirror" \
        >"$dir/debootstrap.log" 2>&1; then
        say "debootstrap failed; the end of its log:"
        tail -n 20 "$dir/debootstrap.log" >&2
        rm -rf "$tree"
        return 1
    fi
    rm -rf "$tree/var/cache/apt/archives/"*.deb "$tree/var/lib/apt/lists/"*
    echo "$packages" >"$dir/bootstrap.ok"
    say "bootstrapped in $((SECONDS - t0)) s"
}

build() {
    bootstrap
    local t0=$SECONDS rootfs=$dir/rootfs
    rm -rf "$rootfs" "$dir"/base.img* "$dir/ready"
    cp -a "$dir/bootstrap" "$rootfs"
    configure "$rootfs"
    local kernel initrd
    kernel=$(ls "$rootfs"/boot/vmlinuz-* | sort -V | tail -n 1)
    initrd=$(ls "$rootfs"/boot/initrd.img-* | sort -V | tail -n 1)
    cp "$kernel" "$dir/vmlinuz"
    cp "$initrd" "$dir/initrd.img"
    truncate -s 3G "$dir/base.img.tmp"
    mkfs.ext4 -q -F -L steprunner -d "$rootfs" "$dir/base.img.tmp"
    mv "$dir/base.img.tmp" "$dir/base.img"
    rm -rf "$rootfs"
    echo "$image_version $packages" >"$dir/ready"
    say "image ready in $((SECONDS - t0)) s"
}

start() {
    install
    if [ "$(cat "$dir/ready" 2>/dev/null)" = "$image_version $packages" ] && [ -s "$dir/base.img" ]; then
        say "reusing $dir/base.img"
    else
        build
    fi
    echo "export STEPRUNNER_GUEST=$dir"
}

boot() {
    local payload=${1:?payload folder} work=${2:?work folder}
    [ -s "$dir/base.img" ] || { say "no image: run \`$0 start\` first"; return 1; }
    mkdir -p "$work" "$payload/out"
    local img=$work/payload.img size
    size=$(($(du -sb "$payload" | cut -f1) * 2 + (64 << 20)))
    rm -f "$img"
    truncate -s "$size" "$img"
    mkfs.ext4 -q -F -d "$payload" "$img"
    qemu-system-x86_64 -accel tcg,thread=multi -m 2048 -smp 2 \
        -kernel "$dir/vmlinuz" -initrd "$dir/initrd.img" \
        -append "root=/dev/vda rw console=ttyS0 quiet" \
        -drive "file=$dir/base.img,format=raw,if=virtio,snapshot=on" \
        -drive "file=$img,format=raw,if=virtio" \
        -nographic -no-reboot -nic none </dev/null >"$work/console.log" 2>&1 &
    local pid=$! t0=$SECONDS
    echo "$pid" >"$dir/qemu.$pid.pid"
    local limit=${GUEST_TIMEOUT:-1500} rc=0
    while kill -0 "$pid" 2>/dev/null; do
        if [ $((SECONDS - t0)) -ge "$limit" ]; then
            say "the guest did not power off within $limit s: killing it"
            kill -KILL "$pid" 2>/dev/null || true
            rc=1
            break
        fi
        sleep 0.5
    done
    wait "$pid" 2>/dev/null || true
    rm -f "$dir/qemu.$pid.pid"
    rm -rf "$work/out"
    debugfs -R "rdump /out $work" "$img" >/dev/null 2>&1 || true
    say "guest ran $((SECONDS - t0)) s"
    return "$rc"
}

stop() {
    # `boot` records the QEMU it starts in `DIR/qemu.*.pid` and removes it when done; one
    # left behind (a boot that was killed) is ours to stop.
    local f pid
    for f in "$dir"/qemu.*.pid; do
        [ -e "$f" ] || continue
        pid=$(cat "$f" 2>/dev/null || true)
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null &&
            tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q qemu-system; then
            say "stopping QEMU (pid $pid) left behind"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$f"
    done
    say "stopped"
}

engine_main "$@"
