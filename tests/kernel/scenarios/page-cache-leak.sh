# Seed 000 TEST 1 shape: page cache from a file reader plus a slow Buffer leak in the same
# container. The kernel gives the cache back as anon grows, then kills.
make_data_file page-cache-leak.bin 150
WORKLOAD="node leak.js --rate-mib 1.5 with a cat loop over a 150 MiB file (page cache + leak, seed 000 TEST 1)"
MAX_MIB=256
BACKGROUND="while true; do cat $MG_DATA/page-cache-leak.bin >/dev/null; sleep 1; done"
run_recorded node "$LEAK_JS" --store buffer --rate-mib 1.5
