# Seed 000 TEST 5: JS arrays kept on the V8 heap under --max-old-space-size=96: V8 aborts
# with "heap out of memory" far below memory.max; the kernel never kills anything.
WORKLOAD="node --max-old-space-size=96 leak.js --store heap --rate-mib 2 (V8 heap leak, seed 000 TEST 5)"
MAX_MIB=256
RUNTIME_HEAP_LIMIT_BYTES=$((96 * MIB))
run_recorded node --max-old-space-size=96 "$LEAK_JS" --store heap --rate-mib 2
