"""Run timed sampling ticks over a cgroup tree and report their cost (for benchmarks).

Each measured tick is paired with a *floor*: a bare Python loop that opens and reads exactly
the files that tick reads, the way it opens them (``os.open`` relative to the cgroup's
directory descriptor, ``os.read``, ``os.close``; nothing parsed or stored) — the least any
Python sampler could spend. The ratio of the two medians says how much the
agent adds on top of the kernel and the file system, and holds up on a busy machine better
than absolute times do. CPU time per tick divided by the interval is the share of one core
the agent needs at that rate.

With ``--fill-rings`` the sampler first runs enough ticks on a fake clock to fill every ring
(30 minutes of samples by default) so the resident memory reported is the agent's steady state.
The agent's HTTP and metrics modules are imported first, so RSS counts what a real agent loads.

    memoryguard sample --root /dev/shm/node --repeat 200 --fill-rings --json

With ``--serve`` it then serves that same sampler with the agent's real HTTP app (no auth) on a
localhost port and measures what answering costs, from a client in another process (so its
memory and CPU are not counted): resident memory idle, then RSS and peak RSS (``VmHWM``,
reset before each kind of request) after ``/metrics`` scrapes and ``GET /v1/pods`` answers —
the operator's incremental one (the newest row of every container), the same with
``detail=full``, and full windows of 600 s and 1800 s — with the CPU time of each request
(the process's, median over ``--serve-repeat``); and finally ``--serve-seconds`` of real time
the way a node runs: a tick every second, one incremental ``/v1/pods`` per second and one
``/metrics`` scrape every 15 s, as a share of one core. Last, one ``/metrics`` scrape and one
600 s window are answered with tracemalloc on: the peak of what the answer allocates and holds
at once (Python objects only; it slows those two requests, so it runs after the timings).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import math
import os
import resource
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

# What `memoryguard agent` loads besides the sampler (aiohttp, prometheus-client, ...).
AGENT_MODULES = ("memoryguard.agent.main", "memoryguard.agent.server", "memoryguard.agent.metrics")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root", type=Path, default=Path("/sys/fs/cgroup"), help="cgroup root (default %(default)s)"
    )
    parser.add_argument("--repeat", type=int, default=100, help="measured ticks (default %(default)s)")
    parser.add_argument(
        "--interval",
        type=float,
        default=0.0,
        help="seconds to wait between measured ticks; 0 runs them back to back (default %(default)s)",
    )
    parser.add_argument(
        "--retention", type=float, default=1800.0, help="ring retention in seconds (default 1800)"
    )
    parser.add_argument(
        "--fill-rings", action="store_true", help="fill every ring first (fake clock), then measure"
    )
    parser.add_argument(
        "--no-agent-imports", action="store_true", help="do not import the agent's server modules"
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="then serve the sampler over HTTP and measure requests (memory and CPU)",
    )
    parser.add_argument(
        "--serve-repeat", type=int, default=5, help="requests of each kind with --serve (default %(default)s)"
    )
    parser.add_argument(
        "--serve-seconds",
        type=int,
        default=60,
        help="real seconds of 1 Hz ticks + requests with --serve (default %(default)s)",
    )
    parser.add_argument(
        "--no-skip-unchanged",
        action="store_true",
        help="parse every file at every tick, even when its bytes did not change (to measure the skip)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    if args.repeat < 1:
        raise SystemExit("--repeat must be ≥ 1")
    if args.serve and (args.serve_repeat < 1 or args.serve_seconds < 1):
        raise SystemExit("--serve-repeat and --serve-seconds must be ≥ 1")
    loaded = [] if args.no_agent_imports else _import_agent_modules()

    from memoryguard.agent.sampler import Sampler

    clock = _FakeClock(time.time(), step_seconds=1.0)
    sampler = Sampler(
        args.root,
        clock=clock,
        retention_seconds=args.retention,
        skip_unchanged=not args.no_skip_unchanged,
    )
    sampler.tick()  # discovery, and the first full read of every cgroup
    clock.advance()
    fill_ticks = 0
    if args.fill_rings:
        fill_ticks = math.ceil(args.retention)  # one tick per fake second fills fine and coarse tiers
        for _ in range(fill_ticks):
            sampler.tick()
            clock.advance()

    tick_wall: list[float] = []
    tick_cpu: list[float] = []
    floor_wall: list[float] = []
    floor_cpu: list[float] = []
    files = 0
    for i in range(args.repeat):
        opens = sampler.planned_opens(sampler.tick_no)
        files += len(opens)
        # Alternate which goes first, so neither always reads the files the other just warmed.
        if i % 2:
            _time_floor(opens, floor_wall, floor_cpu)
            _time_tick(sampler, tick_wall, tick_cpu)
        else:
            _time_tick(sampler, tick_wall, tick_cpu)
            _time_floor(opens, floor_wall, floor_cpu)
        clock.advance()
        if args.interval > 0:
            time.sleep(args.interval)

    status = _proc_status()
    report: dict[str, Any] = {
        "root": str(args.root),
        "cgroup_version": sampler.cgroup_version,
        "containers": sampler.container_count,
        "pods": sampler.pod_count,
        "ticks": args.repeat,
        "files_per_tick": files / args.repeat,
        "tick_seconds": _stats(tick_wall),
        "floor_tick_seconds": _stats(floor_wall),
        "ratio_median_to_floor": _ratio(tick_wall, floor_wall),
        "tick_cpu_seconds": _stats(tick_cpu),
        "floor_cpu_seconds": _stats(floor_cpu),
        "ratio_median_cpu_to_floor_cpu": _ratio(tick_cpu, floor_cpu),
        "cpu_seconds_per_tick": statistics.fmean(tick_cpu),
        "cpu_share_of_one_core_at_1hz": statistics.fmean(tick_cpu) / 1.0,
        "rss_bytes": status.get("VmRSS"),
        "rss_peak_bytes": status.get("VmHWM"),
        "ring_bytes": sampler.ring_bytes(),
        "rings_filled": args.fill_rings,
        "skip_unchanged": sampler.skip_unchanged,
        "fill_ticks": fill_ticks,
        "agent_modules_loaded": loaded,
        "errors": dict(sampler.errors),
    }
    if args.serve:
        report["serving"] = asyncio.run(
            _serve(sampler, clock, repeat=args.serve_repeat, seconds=args.serve_seconds)
        )
        report["errors"] = dict(sampler.errors)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(_text(report))
    return 0


class _FakeClock:
    def __init__(self, start: float, *, step_seconds: float) -> None:
        self.t = start
        self.step_seconds = step_seconds

    def __call__(self) -> float:
        return self.t

    def advance(self) -> None:
        self.t += self.step_seconds


def _import_agent_modules() -> list[str]:
    loaded = []
    for name in AGENT_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # a module being rewritten elsewhere must not stop the benchmark
            continue
        loaded.append(name)
    return loaded


def _time_tick(sampler: Any, wall: list[float], cpu: list[float]) -> None:
    c0 = time.thread_time()
    w0 = time.perf_counter()
    sampler.tick()
    wall.append(time.perf_counter() - w0)
    cpu.append(time.thread_time() - c0)


def _time_floor(opens: list[tuple[int | None, str]], wall: list[float], cpu: list[float]) -> None:
    flags = os.O_RDONLY | os.O_CLOEXEC
    c0 = time.thread_time()
    w0 = time.perf_counter()
    for dir_fd, name in opens:
        try:
            fd = os.open(name, flags, dir_fd=dir_fd)
        except OSError:
            continue
        os.read(fd, 8192)  # the sampler's read size
        os.close(fd)
    wall.append(time.perf_counter() - w0)
    cpu.append(time.thread_time() - c0)


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median": statistics.median(ordered),
        "p90": ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)],
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }


def _ratio(values: list[float], floor: list[float]) -> float | None:
    base = statistics.median(floor)
    return statistics.median(values) / base if base > 0 else None


def _proc_status() -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if key in ("VmRSS", "VmHWM") and len(parts) == 2 and parts[1] == "kB":
                    out[key] = int(parts[0]) * 1024
    except OSError:
        pass
    return out


# --- serving ------------------------------------------------------------------------------------

# (name, request path; {since} is the previous tick's time) in the order they are measured.
_REQUESTS = (
    ("metrics", "/metrics"),
    ("pods_incremental", "/v1/pods?since_seconds={since}"),
    ("pods_incremental_full_detail", "/v1/pods?since_seconds={since}&detail=full"),
    ("pods_window_600s", "/v1/pods?window_seconds=600"),
    ("pods_window_1800s", "/v1/pods?window_seconds=1800"),
)
SCRAPE_EVERY_SECONDS = 15
# Requests whose Python allocations are traced (tracemalloc peak), once each, after the rest.
_TRACED = (("metrics", "/metrics"), ("pods_window_600s", "/v1/pods?window_seconds=600"))


async def _serve(sampler: Any, clock: _FakeClock, *, repeat: int, seconds: int) -> dict[str, Any]:
    from aiohttp import web

    from memoryguard.agent.main import NodeActions
    from memoryguard.agent.metrics import AgentMetrics
    from memoryguard.agent.server import ServerSettings, create_app

    settings = ServerSettings(
        node_name="bench",
        interval_seconds=sampler.interval_seconds,
        retention_seconds=sampler.retention_seconds,
    )
    app = create_app(
        sampler,
        NodeActions(sampler.proc_root),
        settings,
        authorizer=None,
        metrics=AgentMetrics(sampler),
        clock=clock,
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    client = await _Client.start(f"127.0.0.1:{port}")
    try:
        gc.collect()
        idle = _proc_status()
        requests: dict[str, Any] = {}
        for name, template in _REQUESTS:
            hwm_reset = _reset_peak_rss()
            cpu: list[float] = []
            wall: list[float] = []
            sizes: list[int] = []
            for _ in range(repeat):
                since = clock()
                sampler.tick()  # one new row per container, as the operator finds at every poll
                clock.advance()
                c0, w0 = _process_cpu_seconds(), time.perf_counter()
                sizes.append(await client.get(template.format(since=repr(since))))
                wall.append(time.perf_counter() - w0)
                cpu.append(_process_cpu_seconds() - c0)
            status = _proc_status()
            requests[name] = {
                "path": template,
                "answer_bytes": statistics.median(sizes),
                "cpu_seconds": _stats(cpu),
                "wall_seconds": _stats(wall),
                "rss_bytes_after": status.get("VmRSS"),
                "rss_peak_bytes": status.get("VmHWM"),
                "peak_reset": hwm_reset,
            }
        steady = await _steady(sampler, clock, client, seconds)
        # Last, because tracing slows every allocation: what one answer holds at once.
        traced: dict[str, int] = {}
        for name, path in _TRACED:
            tracemalloc.start()
            try:
                await client.get(path)
                traced[name] = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
    finally:
        await client.close()
        await runner.cleanup()
    return {
        "rss_bytes_idle": idle.get("VmRSS"),
        "requests": requests,
        "steady": steady,
        "traced_peak_bytes": traced,
    }


async def _steady(sampler: Any, clock: _FakeClock, client: _Client, seconds: int) -> dict[str, Any]:
    """A node's second, ``seconds`` times in real time: tick, the operator's poll, a scrape every 15 s."""
    loop = asyncio.get_running_loop()
    hwm_reset = _reset_peak_rss()
    start = loop.time()
    cpu0 = _process_cpu_seconds()
    scrapes = 0
    tick_cpu = 0.0
    for k in range(seconds):
        since = clock()
        c0 = time.thread_time()
        sampler.tick()
        tick_cpu += time.thread_time() - c0
        clock.advance()
        await client.get(f"/v1/pods?since_seconds={since!r}")
        if k % SCRAPE_EVERY_SECONDS == 0:
            await client.get("/metrics")
            scrapes += 1
        await asyncio.sleep(max(0.0, start + k + 1 - loop.time()))
    elapsed = loop.time() - start
    cpu = _process_cpu_seconds() - cpu0
    status = _proc_status()
    return {
        "seconds": elapsed,
        "ticks": seconds,
        "pods_requests": seconds,
        "metrics_scrapes": scrapes,
        "cpu_seconds": cpu,
        "cpu_share_of_one_core": cpu / elapsed,
        "tick_cpu_share_of_one_core": tick_cpu / elapsed,
        "rss_bytes": status.get("VmRSS"),
        "rss_peak_bytes": status.get("VmHWM"),
        "peak_reset": hwm_reset,
    }


class _Client:
    """An HTTP client in a child process: its buffers and CPU are not the agent's. It reads each
    answer in 64 KiB pieces and throws them away, over one kept-alive connection (as the
    operator's session does)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, address: str) -> _Client:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from memoryguard.commands.sample import client_main; client_main()",
            address,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def get(self, path: str) -> int:
        """The answer's size in bytes; raises unless it was a 200."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(path.encode() + b"\n")
        await self.process.stdin.drain()
        line = (await self.process.stdout.readline()).decode().strip()
        status, _, rest = line.partition(" ")
        if status != "200":
            raise RuntimeError(f"GET {path}: {line or 'the client process died'}")
        return int(rest)

    async def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        await self.process.wait()


def client_main() -> None:
    """The child process of :class:`_Client`: one GET per line of stdin, ``status bytes`` per line out."""
    import http.client

    connection = http.client.HTTPConnection(sys.argv[1], timeout=120)
    for line in sys.stdin:
        try:
            connection.request("GET", line.strip())
            response = connection.getresponse()
            size = 0
            while piece := response.read(65536):
                size += len(piece)
            print(response.status, size, flush=True)
        except (OSError, http.client.HTTPException) as exc:
            print(0, f"{type(exc).__name__}: {exc}", flush=True)
            connection.close()


def _process_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _text(r: dict[str, Any]) -> str:
    ms = 1000.0
    tick, floor = r["tick_seconds"], r["floor_tick_seconds"]
    rss = r["rss_bytes"]
    lines = [
        f"{r['containers']} containers in {r['pods']} pods (cgroup v{r['cgroup_version']}), "
        f"{r['ticks']} ticks, {r['files_per_tick']:.0f} files per tick",
        f"tick   median {tick['median'] * ms:.2f} ms  p90 {tick['p90'] * ms:.2f} ms  "
        f"max {tick['max'] * ms:.2f} ms",
        f"floor  median {floor['median'] * ms:.2f} ms  ratio {r['ratio_median_to_floor']:.2f} "
        f"(CPU ratio {r['ratio_median_cpu_to_floor_cpu']:.2f})",
        f"CPU {r['cpu_seconds_per_tick'] * ms:.2f} ms per tick = "
        f"{r['cpu_share_of_one_core_at_1hz'] * 100:.2f} % of one core at 1 Hz",
        f"RSS {rss / 2**20:.1f} MiB" if rss else "RSS unknown",
        f"rings {r['ring_bytes'] / 2**20:.1f} MiB ({'filled' if r['rings_filled'] else 'not filled'})",
        f"errors {r['errors']}",
    ]
    serving = r.get("serving")
    if serving:
        mib = 2**20
        lines.append(f"serving: RSS idle {serving['rss_bytes_idle'] / mib:.1f} MiB")
        for name, q in serving["requests"].items():
            lines.append(
                f"  {name:<30} {q['answer_bytes'] / mib:7.2f} MiB"
                f"  CPU {q['cpu_seconds']['median'] * ms:7.1f} ms"
                f"  RSS after {q['rss_bytes_after'] / mib:.1f} MiB  peak {q['rss_peak_bytes'] / mib:.1f} MiB"
            )
        st = serving["steady"]
        lines.append(
            f"  1 Hz ticks + 1 incremental /v1/pods per s + /metrics every {SCRAPE_EVERY_SECONDS} s, "
            f"{st['seconds']:.0f} s: {st['cpu_share_of_one_core'] * 100:.2f} % of one core "
            f"(ticks alone {st['tick_cpu_share_of_one_core'] * 100:.2f} %), "
            f"RSS {st['rss_bytes'] / mib:.1f} MiB, peak {st['rss_peak_bytes'] / mib:.1f} MiB"
        )
        traced = ", ".join(f"{n} {b / mib:.1f} MiB" for n, b in serving["traced_peak_bytes"].items())
        lines.append(f"  held at once by one answer (tracemalloc peak): {traced}")
    return "\n".join(lines)
