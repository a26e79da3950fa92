# A leak under a GC saw-tooth: 1.5 MiB/s kept, 40 MiB of garbage made and collected every 5 s.
# glibc keeps freed chunks for reuse and moves its mmap threshold up as they are freed, which
# hides the saw-tooth from the cgroup; a fixed threshold makes every Buffer its own mapping,
# returned to the kernel when V8 collects it (as with allocators that give memory back).
WORKLOAD="MALLOC_MMAP_THRESHOLD_=131072 node --expose-gc leak.js --rate-mib 1.5 --saw-mib 40 --saw-every-s 5 (leak with GC saw-tooth)"
MAX_MIB=256
run_recorded env MALLOC_MMAP_THRESHOLD_=131072 node --expose-gc "$LEAK_JS" --store buffer --rate-mib 1.5 --saw-mib 40 --saw-every-s 5
