# A leak under a GC saw-tooth: 1.5 MiB/s kept, 40 MiB of garbage made and collected every 5 s.
WORKLOAD="node --expose-gc leak.js --rate-mib 1.5 --saw-mib 40 --saw-every-s 5 (leak with GC saw-tooth)"
MAX_MIB=256
run_recorded node --expose-gc "$LEAK_JS" --store buffer --rate-mib 1.5 --saw-mib 40 --saw-every-s 5
