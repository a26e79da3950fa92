# Seed 000 TEST 4: Buffers kept outside the V8 heap, 3 MiB/s; nothing intervenes: the
# kernel OOM-kills the process at memory.max.
WORKLOAD="node leak.js --store buffer --rate-mib 3 (Buffers outside the V8 heap, seed 000 TEST 4)"
MAX_MIB=256
run_recorded node "$LEAK_JS" --store buffer --rate-mib 3
