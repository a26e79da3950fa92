# Seed 004: a reader cats a 320 MiB file on ext4 in a loop; its page cache fills the 256 MiB
# limit (working set near the limit) while anon stays flat. Reclaimable: no kill.
make_data_file page-cache.bin 320
WORKLOAD="while true; do cat 320MiB-file; done, plus an idle node leak.js --rate-mib 0 (page cache only, seed 004)"
MAX_MIB=256
SECONDS_LIMIT=120
BACKGROUND="while true; do cat $MG_DATA/page-cache.bin >/dev/null; sleep 2; done"
run_recorded node "$LEAK_JS" --rate-mib 0
