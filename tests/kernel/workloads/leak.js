// A Node.js service that leaks, in the shapes seed 000 saw in production.
//
//   node leak.js [--store buffer|heap] [--rate-mib N] [--plateau-mib N]
//                [--saw-mib N --saw-every-s N] [--burst-mib N --burst-every-s N]
//
// --store buffer  keeps Buffers (memory outside the V8 heap: --max-old-space-size does not
//                 cap it; seed 000 TEST 4) -- the default;
// --store heap    keeps JS arrays on the V8 heap (seed 000 TEST 5: V8 aborts with "heap out
//                 of memory" once --max-old-space-size is reached, below memory.max).
// --rate-mib      MiB kept per second (fractions allowed), in 10 ticks a second, paced by the
//                 clock rather than by the ticks: a tick that fires late (a busy machine) keeps
//                 what the missed time owed, so the leak runs at its rate however slow the host;
// --plateau-mib   stop keeping once this much is kept (a service warming up, then steady);
// --saw-mib       garbage allocated and dropped every --saw-every-s seconds, then collected
//                 (a GC saw-tooth on top of the trend);
// --burst-mib     a request burst: this much held for two seconds every --burst-every-s.
// Every page is written, so the memory really is resident (calloc'd zero pages would not be).
"use strict";

function parseArgs(argv) {
  const options = {
    store: "buffer", rateMib: 2, plateauMib: Infinity,
    sawMib: 0, sawEveryS: 5, burstMib: 0, burstEveryS: 10,
  };
  const names = {
    "--store": "store", "--rate-mib": "rateMib", "--plateau-mib": "plateauMib",
    "--saw-mib": "sawMib", "--saw-every-s": "sawEveryS",
    "--burst-mib": "burstMib", "--burst-every-s": "burstEveryS",
  };
  for (let i = 0; i < argv.length; i += 2) {
    const key = names[argv[i]];
    if (key === undefined) throw new Error(`unknown option ${argv[i]}`);
    options[key] = key === "store" ? argv[i + 1] : Number(argv[i + 1]);
    if (key !== "store" && !Number.isFinite(options[key])) throw new Error(`${argv[i]} needs a number`);
  }
  if (!["buffer", "heap"].includes(options.store)) throw new Error("--store is buffer or heap");
  return options;
}

const MIB = 1024 * 1024;
const DOUBLES_PER_MIB = MIB / 8;

function allocate(store, mib, seed) {
  if (store === "buffer") {
    const buffer = Buffer.allocUnsafe(Math.round(mib * MIB));
    buffer.fill((seed % 255) + 1);
    return buffer;
  }
  // A holey-free double array lives in the V8 heap at 8 bytes an element.
  return new Array(Math.round(mib * DOUBLES_PER_MIB)).fill(seed + 0.5);
}

function main() {
  const options = parseArgs(process.argv.slice(2));
  const kept = [];
  let keptMib = 0;
  let tick = 0;
  const ticksPerSecond = 10;
  const startedMs = Date.now();
  setInterval(() => {
    tick += 1;
    const owedMib = Math.min((options.rateMib * (Date.now() - startedMs)) / 1000, options.plateauMib);
    if (owedMib - keptMib >= 0.01) {
      const mib = owedMib - keptMib;
      kept.push(allocate(options.store, mib, tick));
      keptMib += mib;
    }
    if (options.sawMib > 0 && tick % Math.round(options.sawEveryS * ticksPerSecond) === 0) {
      let garbage = [];
      for (let i = 0; i < options.sawMib; i += 1) garbage.push(allocate(options.store, 1, i));
      garbage = null;
      if (global.gc) setTimeout(() => global.gc(), 1000);
    }
    if (options.burstMib > 0 && tick % Math.round(options.burstEveryS * ticksPerSecond) === 0) {
      const burst = [];
      for (let i = 0; i < options.burstMib; i += 1) burst.push(allocate(options.store, 1, i));
      setTimeout(() => {
        burst.length = 0;
        if (global.gc) global.gc();
      }, 2000);
    }
    if (tick % ticksPerSecond === 0) {
      const seconds = ((Date.now() - startedMs) / 1000).toFixed(1);
      process.stdout.write(`leak.js t=${seconds}s kept=${keptMib.toFixed(1)}MiB\n`);
    }
  }, 1000 / ticksPerSecond);
}

main();
