# Seed 000 TEST 4 with MemoryGuard: the real agent samples the container, the engine decides,
# and the stand-in carries a restart out as a rollout would (fresh pod, old one stopped).
# Twin of leak-unguarded (same leak, same limit, started at the same go, nothing executed).
# It ends 20 s after the restart (the fresh pod seen running), or after 300 s at most.
# Its first pod is recorded by `memoryguard record` like every scenario's (trace.csv).
"$GUEST_PYTHON" "$STANDIN" --pod-parent "$CGROUP_ROOT/kubepods.slice/kubepods-burstable.slice" \
  --ready-file ready --go-file "$MG_GO_FILE" --out . \
  --record-trace --workload "node leak.js --store buffer --rate-mib 3 (Buffer leak, MemoryGuard acting)" \
  --max-mib 256 --seconds 300 --rollout-seconds 20 --after-restart-seconds 20 \
  -- node "$LEAK_JS" --store buffer --rate-mib 3
echo "done=1" >result.env
finish_standin_trace
