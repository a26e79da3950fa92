# The twin of guarded-leak without MemoryGuard acting: the same engine decides (dry run),
# nothing is executed, and the kernel OOM-kills the process.
"$GUEST_PYTHON" "$STANDIN" --pod-parent "$CGROUP_ROOT/kubepods.slice/kubepods-burstable.slice" \
  --max-mib 256 --seconds 115 --rollout-seconds 20 --out . --dry-run \
  -- node "$LEAK_JS" --store buffer --rate-mib 3
echo "done=1" >result.env
