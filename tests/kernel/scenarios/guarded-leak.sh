# Seed 000 TEST 4 with MemoryGuard: the real agent samples the container, the engine decides,
# and the stand-in carries a restart out as a rollout would (fresh pod, old one stopped).
# Twin of leak-unguarded (same leak, same limit, same start, nothing executed).
"$GUEST_PYTHON" "$STANDIN" --pod-parent "$CGROUP_ROOT/kubepods.slice/kubepods-burstable.slice" \
  --max-mib 256 --seconds 115 --rollout-seconds 20 --out . \
  -- node "$LEAK_JS" --store buffer --rate-mib 3
echo "done=1" >result.env
