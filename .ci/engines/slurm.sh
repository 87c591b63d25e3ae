#!/usr/bin/env bash
# A real single-node Slurm cluster for the `slurm` flavor's tests.
#
#   eval "$(bash .ci/engines/slurm.sh start)"   # prints SLURM_CONF and STEPRUNNER_SLURM
#   bash .ci/engines/slurm.sh stop
#
# Installs Debian's slurm-wlm and munge if missing, writes slurm.conf and
# cgroup.conf under $STEPRUNNER_ENGINES_DIR/slurm, starts munged, slurmctld and
# slurmd in the foreground (as background jobs of this script, PIDs recorded),
# and waits until the node is idle. `stop` cancels the cluster's jobs, stops the
# daemons by PID, then removes the job cgroups Slurm left behind.
#
# Only `export` lines go to stdout; everything else goes to stderr.
set -euo pipefail
ENGINE=slurm
. "$(dirname "$0")/lib.sh"

dir=$ENGINES_DIR/slurm
conf=$dir/slurm.conf
# The node's name in slurm.conf; slurmd runs with `-N` so the host name does not matter.
node=localhost

pid_of() { cat "$dir/$1.pid" 2>/dev/null || true; }

tails() {
    local f
    for f in "$dir/munged.log" "$dir/munge/munged.log" "$dir/slurmctld.log" "$dir/slurmd.log"; do
        [ -s "$f" ] || continue
        echo "--- last lines of $f" >&2
        tail -n 15 "$f" >&2
    done
}

install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null &&
        command -v sbatch >/dev/null && command -v munged >/dev/null; then
        return 0
    fi
    say "installing slurm-wlm and munge"
    apt_install slurm-wlm munge
}

write_config() {
    local cpus mem_mib
    cpus=$(nproc)
    # Leave room for the machine itself: the node offers 80% of its memory.
    mem_mib=$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.8 }' /proc/meminfo)
    mkdir -p "$dir/spool" "$dir/state" "$dir/munge"
    chown munge:munge "$dir/munge"
    chmod 0755 "$dir/munge"
    cat >"$conf" <<EOF
# Written by .ci/engines/slurm.sh: a one-node cluster for tests.
ClusterName=steprunner
SlurmctldHost=$node
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup,task/affinity
JobAcctGatherType=jobacct_gather/cgroup
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
# Schedule a batch job as soon as it is submitted (Slurm's default waits up to 3 s
# to batch submissions together).
SchedulerParameters=batch_sched_delay=0
ReturnToService=2
SlurmctldPidFile=$dir/slurmctld.pidfile
SlurmdPidFile=$dir/slurmd.pidfile
SlurmdSpoolDir=$dir/spool
StateSaveLocation=$dir/state
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
KillWait=5
NodeName=$node CPUs=$cpus RealMemory=$mem_mib State=UNKNOWN
# Jobs may share cores (up to 4 a core): a test's long job does not hold up the others.
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
    cat >"$dir/cgroup.conf" <<EOF
CgroupPlugin=cgroup/v1
ConstrainCores=yes
ConstrainRAMSpace=yes
ConstrainSwapSpace=yes
AllowedSwapSpace=0
EOF
}

# Start DAEMON ARGS… in the background, detached from our stdout (the caller
# reads it through a pipe), and record its PID.
spawn() {
    local name=$1
    shift
    setsid "$@" </dev/null >>"$dir/$name.log" 2>&1 &
    echo $! >"$dir/$name.pid"
}

start() {
    # Already running (a previous `start` without `stop`): reuse it.
    if alive "$(pid_of slurmctld)" && alive "$(pid_of slurmd)" && alive "$(pid_of munged)" &&
        [[ "$(SLURM_CONF=$conf sinfo -h -o %T 2>/dev/null)" =~ ^(idle|mixed|allocated|completing)$ ]]; then
        say "already running"
        exports
        return 0
    fi
    stop_daemons
    install
    mkdir -p "$dir"
    rm -rf "$dir/state" "$dir/spool" "$dir"/*.log
    write_config

    local t0=$SECONDS
    # munged as the munge user (it refuses root), its socket in our folder.
    spawn munged setpriv --reuid=munge --regid=munge --init-groups \
        munged --foreground --socket="$dir/munge/munge.socket" \
        --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
        --seed-file="$dir/munge/munged.seed"
    local i
    for i in $(seq 100); do
        [ -S "$dir/munge/munge.socket" ] && break
        alive "$(pid_of munged)" || break
        sleep 0.1
    done
    if [ ! -S "$dir/munge/munge.socket" ]; then
        say "munged did not start"
        tails
        stop_daemons
        exit 1
    fi
    export SLURM_CONF=$conf
    spawn slurmctld slurmctld -D -f "$conf"
    spawn slurmd slurmd -D -f "$conf" -N "$node"

    # Bounded wait for the node to be idle (≈ 1 s when all is well).
    local state=
    for i in $(seq 300); do
        state=$(sinfo -h -o %T 2>/dev/null || true)
        [ "$state" = idle ] && break
        for d in munged slurmctld slurmd; do
            if ! alive "$(pid_of "$d")"; then
                say "$d exited during start"
                tails
                stop_daemons
                exit 1
            fi
        done
        sleep 0.1
    done
    if [ "$state" != idle ]; then
        say "the node is not idle after 30 s (state: ${state:-no answer})"
        tails
        stop_daemons
        exit 1
    fi
    say "ready in $((SECONDS - t0)) s (slurmctld $(pid_of slurmctld), slurmd $(pid_of slurmd), munged $(pid_of munged))"
    exports
}

exports() {
    echo "export SLURM_CONF=$conf"
    echo "export STEPRUNNER_SLURM=1"
}

# SIGTERM to the Slurm daemons together (each takes 1-2 s to exit), then to munged,
# which they authenticate through until they are gone.
stop_daemons() {
    local group d pid pids
    for group in "slurmd slurmctld" munged; do
        pids=()
        for d in $group; do
            pid=$(pid_of "$d")
            if alive "$pid"; then
                kill -TERM "$pid" 2>/dev/null || true
                pids+=("$pid")
            fi
        done
        for pid in "${pids[@]}"; do
            reap "$pid"
        done
        for d in $group; do
            rm -f "$dir/$d.pid"
        done
    done
}

# Job cgroups Slurm made (`slurm_<node>` under each v1 controller), deepest
# first; processes still in them are jobs of this cluster and are killed first.
remove_cgroups() {
    local top cg pid
    for top in /sys/fs/cgroup/*/slurm_"$node" /sys/fs/cgroup/slurm_"$node"; do
        [ -d "$top" ] || continue
        while IFS= read -r cg; do
            if [ -f "$cg/cgroup.procs" ]; then
                while read -r pid; do
                    kill -KILL "$pid" 2>/dev/null || true
                done <"$cg/cgroup.procs"
            fi
        done < <(find "$top" -depth -type d)
        while IFS= read -r cg; do
            for i in 1 2 3 4 5 6 7 8 9 10; do
                rmdir "$cg" 2>/dev/null && break
                [ -d "$cg" ] || break
                sleep 0.1
            done
            [ -d "$cg" ] && say "could not remove $cg"
        done < <(find "$top" -depth -type d)
    done
    return 0
}

stop() {
    if [ -f "$conf" ] && alive "$(pid_of slurmctld)"; then
        # Jobs still in the cluster: cancel them so their steps do not outlive slurmd.
        export SLURM_CONF=$conf
        squeue -h -o %i 2>/dev/null | xargs -r scancel 2>/dev/null || true
        local i
        for i in $(seq 100); do
            [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
            sleep 0.1
        done
    fi
    stop_daemons
    remove_cgroups
    say "stopped"
}

engine_main "$@"
