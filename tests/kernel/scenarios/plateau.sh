# A service warming up: it grows 4 MiB/s to 120 MiB, then holds. Safe.
WORKLOAD="node leak.js --rate-mib 4 --plateau-mib 120 (warm-up plateau)"
MAX_MIB=256
SECONDS_LIMIT=120
run_recorded node "$LEAK_JS" --store buffer --rate-mib 4 --plateau-mib 120
