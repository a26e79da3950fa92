# Request bursts: 40 MiB steady, then 100 MiB held for 2 s every 10 s. Safe.
WORKLOAD="node --expose-gc leak.js --rate-mib 10 --plateau-mib 40 --burst-mib 100 --burst-every-s 10 (bursts)"
MAX_MIB=256
SECONDS_LIMIT=120
run_recorded node --expose-gc "$LEAK_JS" --store buffer --rate-mib 10 --plateau-mib 40 --burst-mib 100 --burst-every-s 10
