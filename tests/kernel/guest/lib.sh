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

GUEST_PYTHON="$MG_REPO/.venv/bin/python"
AGENT_URL=http://127.0.0.1:9732
STANDIN="$MG_REPO/tests/kernel/guest/standin.py"

# The real MemoryGuard agent, sampling every container of this node once a second. Without
# auth (loopback only) and with drop_caches allowed, so scenarios can exercise it.
# Started the way the Helm chart runs it (charts/memoryguard/values.yaml, agent
# securityContext): uid 0 with every capability dropped — empty bounding set, no inheritable
# or ambient capabilities, so none effective or permitted after the exec — and no new
# privileges (allowPrivilegeEscalation: false). The chart's claim is that owning the cgroup
# files (uid 0) and being the initial namespace's root is all memory.reclaim and drop_caches
# need; every reclaim and drop_caches in the tier goes through this process (agent_status).
start_agent() { # log_file (AGENT_LISTEN: address to serve on, default loopback)
  setpriv --bounding-set=-all --inh-caps=-all --ambient-caps=-all --no-new-privs \
    "$MG_REPO/.venv/bin/memoryguard" agent --insecure-no-auth --listen "${AGENT_LISTEN:-127.0.0.1:9732}" \
    --node-name mg-guest --enable-drop-caches --drop-caches-min-interval 1s >"$1" 2>&1 &
  echo $! >agent.pid
}

# The running agent's credentials as the kernel holds them (setpriv execs the agent: same PID):
# its command line, then the Uid/Gid, Cap* and NoNewPrivs lines of /proc/<pid>/status.
agent_status() { # out_file
  agent_pid=$(cat agent.pid)
  if [ ! -d "/proc/$agent_pid" ]; then echo "gone: the agent (pid $agent_pid) is not running" >"$1"; return; fi
  {
    printf 'cmdline:'
    tr '\0' ' ' <"/proc/$agent_pid/cmdline"
    echo
    grep -E '^(Uid|Gid|Cap[A-Za-z]+|NoNewPrivs):' "/proc/$agent_pid/status"
  } >"$1"
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
# memory.swap.max is 0 unless given, as kubelet sets it for containers without swap, and
# memory.oom.group is 1, as kubelet sets it on cgroup v2 since Kubernetes 1.28: an OOM kill
# takes the whole container (a cache reader beside the leaking process goes with it).
container_cgroup() { # pod_dir container_id max_mib [high_mib|max] [swap_max_mib]
  dir="$1/cri-containerd-$2.scope"
  mkdir -p "$dir"
  echo 1 >"$dir/memory.oom.group"
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

# Starts a command as the container's process, held at a gate (a FIFO) until open_gate: the
# shell that will exec the command is already in the cgroup, so a recorder started before it
# sees the container alive from its first row, and the workload's first second is recorded.
# The gate lives in the guest's /tmp: 9p cannot hold a FIFO.
start_held() { # cgroup_dir log gate cmd...
  dir="$1" out="$2" gate="$3"
  shift 3
  mkfifo "$gate"
  sh -c 'echo $$ > "$0"/cgroup.procs; read _ <"$1"; shift; exec "$@"' "$dir" "$gate" "$@" \
    >>"$out" 2>&1 </dev/null &
  echo $!
}

open_gate() { # gate held_pid
  # The write blocks until the held shell reads: make sure it is still there to read.
  if kill -0 "$2" 2>/dev/null; then echo go >"$1"; else log "the held workload (pid $2) is gone"; fi
}

# Waits until a trace file holds its header and `rows` data rows (0: give up after timeout_s).
wait_for_rows() { # trace_file rows timeout_s
  waited=0
  while :; do
    n=$(grep -vc '^#' "$1" 2>/dev/null)
    [ "${n:-0}" -gt "$2" ] && return 0
    [ "$waited" -ge "$(($3 * 2))" ] && return 1
    waited=$((waited + 1))
    sleep 0.5
  done
}

MEMORYGUARD="$MG_REPO/.venv/bin/memoryguard"

# Waits (shell tests only: no fork) until a file exists; 1 after timeout_s.
wait_for_file() { # file timeout_s
  waited=0
  while [ ! -e "$1" ]; do
    [ "$waited" -ge "$(($2 * 10))" ] && return 1
    waited=$((waited + 1))
    sleep 0.1
  done
}

# The job's side of the barrier: waits until every scenario (name:pid) is ready or has ended.
await_scenarios_ready() { # name:pid ...
  for entry in "$@"; do
    while [ ! -e "${entry%%:*}/ready" ] && kill -0 "${entry#*:}" 2>/dev/null; do
      sleep 0.2
    done
  done
}

# The batch's barrier: this scenario's observers are up (`ready` in its directory); wait for the
# job's go (MG_GO_FILE), given once every scenario of the batch is ready, so all workloads start
# together, under the same load, with their recorders and judges already watching.
scenario_ready() {
  touch ready
  if [ -n "${MG_GO_FILE:-}" ] && ! wait_for_file "$MG_GO_FILE" 900; then
    log "no go from the job in 900 s; starting anyway"
  fi
}

# Seconds to record after the last process of the container exited (memoryguard record --linger).
RECORD_LINGER_SECONDS=3

# The outcome line from a trace written by `memoryguard record` (columns found by name): a
# kernel OOM kill, a process that died by itself, or none.
trace_outcome() { # trace_file
  awk -F, '
    /^#/ { next }
    !header { for (i = 1; i <= NF; i++) col[$i] = i; header = 1; next }
    first_kills == "" { first_kills = $col["oom_kill"] }
    { last_kills = $col["oom_kill"]; if ($col["alive"] == 0 && died == "") died = $col["t"] }
    END {
      if (last_kills > first_kills)
        printf "# outcome: kernel OOM kill (oom_kill %d -> %d)\n", first_kills, last_kills
      else if (died != "")
        printf "# outcome: process died at t=%s without a kernel OOM kill (alive 1 -> 0, oom_kill %d)\n", died, last_kills
      else
        print "# outcome: safe, no kill (workload stopped after the recording)"
    }' "$1"
}

# `# failure_at: t` for a workload that fails by stalling rather than dying: the first row
# whose memory PSI some avg10 reaches `percent`.
failure_at_stall() { # trace_file percent
  awk -F, -v limit="$2" '
    /^#/ { next }
    !header { for (i = 1; i <= NF; i++) col[$i] = i; header = 1; next }
    $col["psi_some_avg10"] + 0 >= limit + 0 { printf "# failure_at: %s\n", $col["t"]; found = 1; exit }
    END { if (found) printf "# failure_rule: first sample with memory PSI some avg10 >= %s%% (stalled at memory.high, not killed)\n", limit }' "$1"
}

# Inserts metadata lines (a file of `# key: value` lines) after a trace's own, before its header.
add_metadata() { # trace_file metadata_file out_file
  awk 'FNR == NR { extra = extra $0 "\n"; next }
       !done && !/^#/ { printf "%s", extra; done = 1 }
       { print }' "$2" "$1" >"$3"
}

# Waits (without forking: shell reads only) until the container shows the kernel condition,
# holds it for `settle_s` more seconds (the agent reads swap files every 10 ticks, and the
# engine judges rates over its last minute), then asks the agent for the diagnosis:
#   throttle  memory.events high >= 500 and memory PSI some avg10 >= 10 %
#   swap      memory.swap.events fail > 0, or memory.swap.current at memory.swap.max (a full swap
#             does not always show as fail events: with no swap left, reclaim may stop trying)
explain_when() { # cgroup_dir pod_uid condition settle_s
  while [ -d "$1" ]; do
    high=0 fail=0 psi=0
    while read -r key value; do [ "$key" = high ] && high=$value; done <"$1/memory.events"
    while read -r key value; do [ "$key" = fail ] && fail=$value; done <"$1/memory.swap.events"
    read -r _ avg10 _ <"$1/memory.pressure"
    swap_now=0 swap_max=max
    [ -r "$1/memory.swap.current" ] && read -r swap_now <"$1/memory.swap.current"
    [ -r "$1/memory.swap.max" ] && read -r swap_max <"$1/memory.swap.max"
    psi=${avg10#avg10=}
    psi=${psi%%.*}
    case "$3" in
      throttle) [ "$high" -ge 500 ] && [ "$psi" -ge 10 ] && break ;;
      swap) { [ "$fail" -gt 0 ] || { [ "$swap_max" != max ] && [ "$swap_now" -ge "$swap_max" ]; }; } && break ;;
    esac
    sleep 1
  done
  [ -d "$1" ] || return 0
  echo "high=$high swap_fail=$fail psi_some_avg10=$psi" >explain.trigger
  log "explain: $3 seen (high=$high swap fail=$fail psi=$psi%), asking the agent in $4 s"
  sleep "$4"
  "$MEMORYGUARD" explain "$2" --agent "$AGENT_URL" --window 600 >explain.txt 2>explain.err
  log "explain: exit $? ($(grep -m1 -A1 '=== VERDICT ===' explain.txt | tail -1))"
}

kernel_oom_kills() { # cgroup_dir
  awk '$1 == "oom_kill" {print $2}' "$1/memory.events"
}

# Runs one recorded scenario in the current directory (the scenario's result directory):
# a fresh pod + container cgroup, the workload held in it (and, with the agent, a watching
# stand-in started and ready), the batch's barrier, `memoryguard record` started and its first
# row written, then the workload released; one row a second until the workload
# died (plus a short linger) or `seconds` passed, then the workload is stopped. Leaves
# trace.csv (record's trace plus the outcome), workload.log and result.env (final
# memory.events and swap events).
# Set before calling: WORKLOAD (one line for the trace's metadata), MAX_MIB, and optionally
# HIGH_MIB, SWAP_MAX_MIB, RUNTIME_HEAP_LIMIT_BYTES, SECONDS_LIMIT, BACKGROUND (a command
# run in the same container, e.g. a cache reader), MG_AGENT (set by the job when the agent
# runs: a watching stand-in logs the engine's decisions), FAILURE_PSI_PERCENT (the workload counts
# as failed from the first sample whose memory PSI some avg10 reaches it: throttled, not killed),
# EXPLAIN_WHEN (with the agent: run `memoryguard explain` once the kernel shows this
# condition, see explain_when).
run_recorded() { # cmd...
  pod_uid=$(new_pod_uid)
  container_id=$(new_container_id)
  pod=$(pod_cgroup "$pod_uid")
  ctr=$(container_cgroup "$pod" "$container_id" "$MAX_MIB" "${HIGH_MIB:-max}" "${SWAP_MAX_MIB:-0}")
  echo "pod_uid=$pod_uid" >result.env
  echo "container_id=$container_id" >>result.env
  echo "cgroup=$ctr" >>result.env
  gate="/tmp/gate-$container_id"
  pid=$(start_held "$ctr" workload.log "$gate" "$@")
  if [ -n "${MG_AGENT:-}" ]; then
    # The engine's live judgement of the same container, through the agent (never acting);
    # stopped below once the recording is over.
    "$GUEST_PYTHON" "$STANDIN" --watch "$ctr" --seconds 3600 --out . --ready-file standin.ready \
      --go-file "$MG_GO_FILE" \
      ${RUNTIME_HEAP_LIMIT_BYTES:+--heap-limit-bytes "$RUNTIME_HEAP_LIMIT_BYTES"} >standin.log 2>&1 &
    watch_pid=$!
    if ! wait_for_file standin.ready 600; then
      log "the watching stand-in was not ready in 600 s"
      cat standin.log
    fi
  fi
  scenario_ready
  set -- --meta "workload=$WORKLOAD" \
    --meta "kernel=Debian $(uname -r), cgroup v2, recorded in QEMU (TCG) by tests/kernel" \
    --meta "memory_max_bytes=$((MAX_MIB * MIB))"
  [ -n "${HIGH_MIB:-}" ] && set -- "$@" --meta "memory_high_bytes=$((HIGH_MIB * MIB))"
  [ -n "${SWAP_MAX_MIB:-}" ] && set -- "$@" --meta "swap_max_bytes=$((SWAP_MAX_MIB * MIB))"
  [ -n "${RUNTIME_HEAP_LIMIT_BYTES:-}" ] && set -- "$@" --meta "runtime_heap_limit_bytes=$RUNTIME_HEAP_LIMIT_BYTES"
  "$MEMORYGUARD" record "$ctr" -o record.csv --interval 1 --linger "$RECORD_LINGER_SECONDS" \
    --seconds "${SECONDS_LIMIT:-240}" "$@" >record.log 2>&1 &
  record_pid=$!
  # The workload waits for the recorder's first row: the trace starts with the container.
  if ! wait_for_rows record.csv 1 300; then
    log "memoryguard record wrote no row in 300 s"
    cat record.log
  fi
  open_gate "$gate" "$pid"
  if [ -n "${BACKGROUND:-}" ]; then
    bg_pid=$(start_in "$ctr" background.log sh -c "$BACKGROUND")
  fi
  log "released pid $pid in $ctr"
  if [ -n "${MG_AGENT:-}" ] && [ -n "${EXPLAIN_WHEN:-}" ]; then
    explain_when "$ctr" "$pod_uid" "$EXPLAIN_WHEN" 15 >explain.log 2>&1 &
    explain_pid=$!
  fi
  wait "$record_pid"
  # A diagnosis under way is waited for (it reads the agent's history, which outlives the
  # workload); one whose condition never came is stopped.
  if [ -n "${explain_pid:-}" ]; then
    if [ -f explain.trigger ]; then wait "$explain_pid"; else kill "$explain_pid"; fi
  fi
  if [ -n "${watch_pid:-}" ]; then kill "$watch_pid" 2>/dev/null; wait "$watch_pid"; fi
  # A workload still running at the end (a safe scenario) is stopped after the recording.
  echo 1 >"$ctr/cgroup.kill"
  awk '{print "events_" $1 "=" $2}' "$ctr/memory.events" >>result.env
  awk '{print "swap_events_" $1 "=" $2}' "$ctr/memory.swap.events" >>result.env
  {
    trace_outcome record.csv
    if [ -n "${FAILURE_PSI_PERCENT:-}" ]; then failure_at_stall record.csv "$FAILURE_PSI_PERCENT"; fi
  } >outcome
  add_metadata record.csv outcome trace.csv
  log "done: $(grep '^# outcome' outcome)"
}

# The trace of a scenario whose pod the stand-in started and recorded (standin.py
# --record-trace): record.csv with its outcome, as run_recorded leaves trace.csv. The outcome is
# the stand-in's own line when MemoryGuard restarted the pod (the recording then ends with the
# old pod stopped, alive 0, which is no failure of the workload), otherwise read from the trace.
finish_standin_trace() {
  if [ ! -s record.csv ]; then
    log "the stand-in left no record.csv"
    cat record.log 2>/dev/null
    return 1
  fi
  if [ -f standin.outcome ]; then cat standin.outcome; else trace_outcome record.csv; fi >outcome
  add_metadata record.csv outcome trace.csv
  log "trace: $(grep '^# outcome' outcome)"
}
