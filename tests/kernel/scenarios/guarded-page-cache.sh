# Seed 004 with MemoryGuard: a reader's page cache fills the limit; the engine calls it page
# cache, the agent's memory.reclaim frees file memory, nothing is restarted (watched for 30 s
# after the reclaim; 240 s at most). At the end the agent drops the node's caches
# (drop_caches is node-wide: the guest is the node).
make_data_file guarded-page-cache.bin 320
# Its first pod is recorded by `memoryguard record` like every scenario's (trace.csv).
"$GUEST_PYTHON" "$STANDIN" --pod-parent "$CGROUP_ROOT/kubepods.slice/kubepods-burstable.slice" \
  --ready-file ready --go-file "$MG_GO_FILE" --out . \
  --record-trace --workload "while true; do cat 320MiB-file; done, plus an idle node leak.js --rate-mib 0 (page cache, MemoryGuard acting)" \
  --max-mib 256 --seconds 240 --after-reclaim-seconds 30 --drop-caches-at-end 1 \
  -- sh -c "while true; do cat $MG_DATA/guarded-page-cache.bin >/dev/null; sleep 2; done & exec node $LEAK_JS --rate-mib 0"
echo "done=1" >result.env
finish_standin_trace
