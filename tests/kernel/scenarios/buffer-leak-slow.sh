# A slow Buffer leak (1 MiB/s) toward a smaller limit: the trend is gentle, the end the same.
WORKLOAD="node leak.js --store buffer --rate-mib 1 (slow Buffer leak)"
MAX_MIB=160
SECONDS_LIMIT=240
run_recorded node "$LEAK_JS" --store buffer --rate-mib 1
