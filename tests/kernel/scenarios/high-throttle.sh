# Seed 000 TEST 2: memory.high (160 MiB) below the working set the leak is heading for, no
# swap: the kernel throttles the allocating process (memory.events high climbing, memory
# PSI rising) long before memory.max.
WORKLOAD="node leak.js --rate-mib 2 with memory.high 160 MiB, no swap (throttling at memory.high, seed 000 TEST 2)"
MAX_MIB=256
HIGH_MIB=160
SECONDS_LIMIT=130
FAILURE_PSI_PERCENT=30
EXPLAIN_WHEN=throttle
run_recorded node "$LEAK_JS" --store buffer --rate-mib 2
