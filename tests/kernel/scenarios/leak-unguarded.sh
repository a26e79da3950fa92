# The twin of guarded-leak without MemoryGuard acting: the same engine decides (dry run),
# nothing is executed, and the kernel OOM-kills the process; the stand-in ends a few ticks
# after that (300 s at most).
# Its first pod is recorded by `memoryguard record` like every scenario's (trace.csv).
"$GUEST_PYTHON" "$STANDIN" --pod-parent "$CGROUP_ROOT/kubepods.slice/kubepods-burstable.slice" \
  --ready-file ready --go-file "$MG_GO_FILE" --out . \
  --record-trace --workload "node leak.js --store buffer --rate-mib 3 (Buffer leak, twin of guarded-leak, MemoryGuard dry run)" \
  --max-mib 256 --seconds 300 --rollout-seconds 20 --dry-run \
  -- node "$LEAK_JS" --store buffer --rate-mib 3
echo "done=1" >result.env
finish_standin_trace
