# Seed 000 TEST 3: memory.high 128 MiB, 64 MiB of zram swap allowed (memory.swap.max): past
# memory.high the kernel swaps anon out until swap.max, then swap `fail` events climb.
WORKLOAD="node leak.js --rate-mib 2 with memory.high 128 MiB and memory.swap.max 64 MiB on zram (swap exhaustion, seed 000 TEST 3)"
MAX_MIB=256
HIGH_MIB=128
SWAP_MAX_MIB=64
SECONDS_LIMIT=150
FAILURE_PSI_PERCENT=30
EXPLAIN_WHEN=swap
run_recorded node "$LEAK_JS" --store buffer --rate-mib 2
