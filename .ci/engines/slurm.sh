#!/usr/bin/env bash
# A real two-node Slurm cluster for the `slurm` flavor's tests, on this one machine.
#
#   eval "$(bash .ci/engines/slurm.sh start)"   # prints SLURM_CONF and STEPRUNNER_SLURM
#   bash .ci/engines/slurm.sh stop
#
# Installs Debian's slurm-wlm and munge if missing, writes slurm.conf and
# cgroup.conf under $STEPRUNNER_ENGINES_DIR/slurm, starts munged, slurmctld and
# one slurmd per node (`n1`, `n2`: their own ports, spool folders, logs and job
# cgroups `slurm_n1`, `slurm_n2`) in the foreground (as background jobs of this
# script, PIDs recorded), and waits until both nodes are idle. `stop` cancels the cluster's jobs, stops the
# daemons by PID, then removes the job cgroups Slurm left behind.
#
# Only `export` lines go to stdout; everything else goes to stderr.
set -euo pipefail
ENGINE=slurm
. "$(dirname "$0")/lib.sh"

dir=$ENGINES_DIR/slurm
conf=$dir/slurm.conf
# The nodes' names in slurm.conf; each slurmd runs with `-N NAME`, so the host name
# does not matter. Both are this machine (`NodeHostname=localhost`).
nodes="n1 n2"
daemons="munged slurmctld slurmd-n1 slurmd-n2"

pid_of() { cat "$dir/$1.pid" 2>/dev/null || true; }

tails() {
    local f
    for f in "$dir/munged.log" "$dir/munge/munged.log" "$dir/slurmctld.log" "$dir"/slurmd.n*.log; do
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
    # Leave room for the machine itself: the nodes offer 80% of its memory, each half.
    mem_mib=$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.4 }' /proc/meminfo)
    mkdir -p "$dir/spool/n1" "$dir/spool/n2" "$dir/state" "$dir/munge"
    chown munge:munge "$dir/munge"
    chmod 0755 "$dir/munge"
    cat >"$conf" <<EOF
# Written by .ci/engines/slurm.sh: a two-node cluster for tests, on one machine.
ClusterName=steprunner
SlurmctldHost=localhost
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
SlurmdPidFile=$dir/slurmd.%n.pidfile
SlurmdSpoolDir=$dir/spool/%n
StateSaveLocation=$dir/state
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.%n.log
SlurmctldPort=6817
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
KillWait=5
NodeName=n1 NodeHostname=localhost Port=6918 CPUs=$cpus RealMemory=$mem_mib State=UNKNOWN
NodeName=n2 NodeHostname=localhost Port=6919 CPUs=$cpus RealMemory=$mem_mib State=UNKNOWN
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

# The nodes' states, one word per node in `nodes` order (`idle idle` when ready).
node_states() {
    local n out=()
    for n in $nodes; do
        out+=("$(sinfo -h -n "$n" -o %T 2>/dev/null || true)")
    done
    echo "${out[*]}"
}

all_alive() {
    local d
    for d in $daemons; do
        alive "$(pid_of "$d")" || return 1
    done
}

start() {
    # Already running (a previous `start` without `stop`): reuse it.
    if all_alive && [[ "$(SLURM_CONF=$conf node_states)" =~ ^((idle|mixed|allocated|completing) ?)+$ ]]; then
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
    local n
    for n in $nodes; do
        spawn "slurmd-$n" slurmd -D -f "$conf" -N "$n"
    done

    # Bounded wait for both nodes to be idle (≈ 1.3 s when all is well).
    local state= ready
    ready=$(for n in $nodes; do printf 'idle '; done)
    for i in $(seq 300); do
        state=$(node_states)
        [ "$state " = "$ready" ] && break
        for d in $daemons; do
            if ! alive "$(pid_of "$d")"; then
                say "$d exited during start"
                tails
                stop_daemons
                exit 1
            fi
        done
        sleep 0.1
    done
    if [ "$state " != "$ready" ]; then
        say "the nodes are not idle after 30 s (states: ${state:-no answer})"
        tails
        stop_daemons
        exit 1
    fi
    say "ready in $((SECONDS - t0)) s (slurmctld $(pid_of slurmctld), slurmd n1 $(pid_of slurmd-n1), n2 $(pid_of slurmd-n2), munged $(pid_of munged))"
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
    for group in "slurmd-n1 slurmd-n2 slurmctld" munged; do
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
    local top cg pid node
    for node in $nodes; do
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
