# Shell library for jobs running inside the test guest (sourced by job.sh and scenarios).
# The guest is the node: these functions lay out the cgroup tree a kubelet with the systemd
# driver and containerd would create, start workloads inside it, and record traces.
# shellcheck shell=sh

CGROUP_ROOT=/sys/fs/cgroup
MG_REPO="${MG_REPO:?MG_REPO must name the repository root}"
MG_DATA=/mnt/mgdata
MIB=1048576
LEAK_JS="$MG_REPO/tests/kernel/workloads/leak.js"

log() { echo "[$(cut -d' ' -f1 /proc/uptime)] $*"; }

enable_memory_controller() { # dir
  echo "+memory" >"$1/cgroup.subtree_control"
}

# Mounts the run's ext4 disk (page cache on a real block-device filesystem, reclaimable like a
# node's container filesystem; tmpfs would be shmem) and turns on zram swap when asked.
node_setup() { # swap_mib (0: no swap)
  enable_memory_controller "$CGROUP_ROOT"
  mkdir -p "$CGROUP_ROOT/kubepods.slice/kubepods-burstable.slice"
  enable_memory_controller "$CGROUP_ROOT/kubepods.slice"
  enable_memory_controller "$CGROUP_ROOT/kubepods.slice/kubepods-burstable.slice"
  mkdir -p "$MG_DATA"
  mount -t ext4 /dev/vda "$MG_DATA"
  if [ "${1:-0}" -gt 0 ]; then
    echo "${1}M" >/sys/block/zram0/disksize
    mkswap /dev/zram0 >/dev/null
    swapon /dev/zram0
  fi
}

# A file of `mib` MiB on the data disk, written with O_DIRECT so that creating it leaves no
# page cache behind: the first reader pays for (and is charged) all of it.
make_data_file() { # name mib
  dd if=/dev/zero of="$MG_DATA/$1" bs=1M count="$2" oflag=direct status=none
}

# Random identifiers shaped like a pod UID and a containerd container ID.
new_pod_uid() {
  cat /proc/sys/kernel/random/uuid
}
new_container_id() {
  hex=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
  echo "$hex"
}

AGENT_URL=http://127.0.0.1:9732
STANDIN="$MG_REPO/tests/kernel/guest/standin.py"

# The real MemoryGuard agent, sampling every container of this node once a second. Without
# auth (loopback only) and with drop_caches allowed, so scenarios can exercise it.
start_agent() { # log_file
  "$MG_REPO/.venv/bin/memoryguard" agent --insecure-no-auth --listen 127.0.0.1:9732 \
    --node-name mg-guest --enable-drop-caches --drop-caches-min-interval 1s >"$1" 2>&1 &
  echo $! >agent.pid
}

# Blocks until the agent answers /healthz (its imports take a minute or two under TCG), so
# every scenario is watched from its first second.
wait_for_agent() {
  "$GUEST_PYTHON" -c 'import sys, time, urllib.request
for _ in range(300):
    try:
        urllib.request.urlopen("'"$AGENT_URL"'/healthz", timeout=5)
        sys.exit(0)
    except OSError:
        time.sleep(1)
sys.exit("agent did not come up")'
}

# Creates kubepods-burstable-pod<uid>.slice and prints its path.
pod_cgroup() { # pod_uid
  dir="$CGROUP_ROOT/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod$(echo "$1" | tr - _).slice"
  mkdir -p "$dir"
  enable_memory_controller "$dir"
  echo "$dir"
}

# Creates cri-containerd-<id>.scope under a pod with the given limits and prints its path.
# memory.swap.max is 0 unless given, as kubelet sets it for containers without swap.
container_cgroup() { # pod_dir container_id max_mib [high_mib|max] [swap_max_mib]
  dir="$1/cri-containerd-$2.scope"
  mkdir -p "$dir"
  echo "$(($3 * MIB))" >"$dir/memory.max"
  if [ "${4:-max}" != max ]; then echo "$(($4 * MIB))" >"$dir/memory.high"; fi
  echo "$(( ${5:-0} * MIB ))" >"$dir/memory.swap.max"
  echo "$dir"
}

# Starts a command as the container's process, output appended to `log`, and prints its
# PID. The inner shell moves itself into the cgroup before exec (in a ( ) subshell $$ would
# be the parent's PID). The output must not go to our stdout: callers use $(start_in ...),
# which would wait for the workload to close it.
start_in() { # cgroup_dir log cmd...
  dir="$1" out="$2"
  shift 2
  sh -c 'echo $$ > "$0"/cgroup.procs; exec "$@"' "$dir" "$@" >>"$out" 2>&1 </dev/null &
  echo $!
}

GUEST_PYTHON="$MG_REPO/.venv/bin/python"

# The header and one trace row a second (recorder.py) until the cgroup has been empty for
# tail_s seconds or max_s seconds have passed; finish_trace puts the metadata on top.
record_rows() { # cgroup_dir rows_file max_s [tail_s]
  "$GUEST_PYTHON" "$MG_REPO/tests/kernel/guest/recorder.py" "$1" "$2" --max-seconds "$3" --tail-seconds "${4:-3}"
}

# Metadata lines (`# key: value`, from the file named by $3), then header and rows.
finish_trace() { # rows_file trace_file metadata_file
  cat "$3" "$1" >"$2"
}

kernel_oom_kills() { # cgroup_dir
  awk '$1 == "oom_kill" {print $2}' "$1/memory.events"
}

# Runs one recorded scenario in the current directory (the scenario's result directory):
# a fresh pod + container cgroup, the workload started inside it, one trace row a second
# until the workload died (plus a short tail) or `seconds` passed, then the workload is
# stopped. Leaves trace.csv, workload.log and result.env (final memory.events and outcome).
# Set before calling: WORKLOAD (one line for the trace's metadata), MAX_MIB, and optionally
# HIGH_MIB, SWAP_MAX_MIB, RUNTIME_HEAP_LIMIT_BYTES, SECONDS_LIMIT, BACKGROUND (a command
# run in the same container, e.g. a cache reader), MG_AGENT (set by the job when the agent
# runs: a watching stand-in logs the engine's decisions), FAILURE_PSI_PERCENT (the workload counts
# as failed from the first sample whose memory PSI some avg10 reaches it: throttled, not killed).
run_recorded() { # cmd...
  pod_uid=$(new_pod_uid)
  container_id=$(new_container_id)
  pod=$(pod_cgroup "$pod_uid")
  ctr=$(container_cgroup "$pod" "$container_id" "$MAX_MIB" "${HIGH_MIB:-max}" "${SWAP_MAX_MIB:-0}")
  echo "pod_uid=$pod_uid" >result.env
  echo "container_id=$container_id" >>result.env
  echo "cgroup=$ctr" >>result.env
  if [ -n "${BACKGROUND:-}" ]; then
    bg_pid=$(start_in "$ctr" background.log sh -c "$BACKGROUND")
  fi
  pid=$(start_in "$ctr" workload.log "$@")
  log "started pid $pid in $ctr: $*"
  if [ -n "${MG_AGENT:-}" ]; then
    # The engine's live judgement of the same container, through the agent (never acting).
    "$GUEST_PYTHON" "$STANDIN" --watch "$ctr" --seconds "${SECONDS_LIMIT:-240}" --out . \
      ${RUNTIME_HEAP_LIMIT_BYTES:+--heap-limit-bytes "$RUNTIME_HEAP_LIMIT_BYTES"} >standin.log 2>&1 &
    watch_pid=$!
  fi
  record_rows "$ctr" rows.csv "${SECONDS_LIMIT:-240}" 3
  if [ -n "${watch_pid:-}" ]; then kill "$watch_pid" 2>/dev/null; wait "$watch_pid"; fi
  # A workload still running at the end (a safe scenario) is stopped after the recording.
  echo 1 >"$ctr/cgroup.kill"
  awk '{print "events_" $1 "=" $2}' "$ctr/memory.events" >>result.env
  awk '{print "swap_events_" $1 "=" $2}' "$ctr/memory.swap.events" >>result.env
  {
    echo "# workload: $WORKLOAD"
    echo "# kernel: Debian $(uname -r), cgroup v2, recorded in QEMU (TCG) by tests/kernel"
    echo "# memory_max_bytes: $((MAX_MIB * MIB))"
    [ -n "${HIGH_MIB:-}" ] && echo "# memory_high_bytes: $((HIGH_MIB * MIB))"
    [ -n "${SWAP_MAX_MIB:-}" ] && echo "# swap_max_bytes: $((SWAP_MAX_MIB * MIB))"
    [ -n "${RUNTIME_HEAP_LIMIT_BYTES:-}" ] && echo "# runtime_heap_limit_bytes: $RUNTIME_HEAP_LIMIT_BYTES"
    echo "# sample_interval_seconds: 1"
    trace_outcome rows.csv
    if [ -n "${FAILURE_PSI_PERCENT:-}" ]; then failure_at_stall rows.csv "$FAILURE_PSI_PERCENT"; fi
  } >metadata
  finish_trace rows.csv trace.csv metadata
  log "done: $(grep '^# outcome' metadata)"
}

# The outcome line from the rows: a kernel OOM kill, a process that died by itself, or none.
# Column positions follow recorder.COLUMNS (oom_kill is 16th, alive 24th).
trace_outcome() { # rows_file
  awk -F, '
    NR == 1 { next }
    NR == 2 { first_kills = $16 }
    { last_kills = $16; if ($24 == 0 && died == "") died = $1 }
    END {
      if (last_kills > first_kills)
        printf "# outcome: kernel OOM kill (oom_kill %d -> %d)\n", first_kills, last_kills
      else if (died != "")
        printf "# outcome: process died at t=%s without a kernel OOM kill (alive 1 -> 0, oom_kill %d)\n", died, last_kills
      else
        print "# outcome: safe, no kill (workload stopped after the recording)"
    }' "$1"
}

# `# failure_at: t` for a workload that fails by stalling rather than dying: the first sample
# whose memory PSI some avg10 (column 22) reaches `percent`.
failure_at_stall() { # rows_file percent
  awk -F, -v limit="$2" '
    NR > 1 && $22 + 0 >= limit + 0 { printf "# failure_at: %s\n", $1; found = 1; exit }
    END { if (found) printf "# failure_rule: first sample with memory PSI some avg10 >= %s%% (stalled at memory.high, not killed)\n", limit }' "$1"
}
