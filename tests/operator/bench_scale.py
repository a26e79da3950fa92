"""The operator at scale: cycle time, CPU and memory with 10 000 pods on 500 simulated nodes.

KMock holds the pods (and one agent pod per node); one aiohttp server plays the whole agent
fleet, answering ``GET /<node>/v1/pods`` with the agent API's JSON (the operator reaches it
through ``--agent-url-template http://127.0.0.1:PORT/{node}``). Every container has 30
minutes of 1 s samples behind it, as a long-running agent would; 1 % of them grow slowly
(at risk, no action due). ``memoryguard operator`` runs as its own process; this script
scrapes its /metrics for the cycle durations and reads its CPU time and RSS from /proc.

    python -m tests.operator.bench_scale --pods 10000 --nodes 500 --seconds 90 [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import kmock
from aiohttp import web

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "bench"
AGENT_NAMESPACE = "memoryguard-system"
MiB = 1024 * 1024
LIMIT_BYTES = 512 * MiB
COLUMNS = [
    "t_seconds",
    "anon_bytes",
    "file_bytes",
    "max_bytes",
    "inactive_file_bytes",
    "active_file_bytes",
    "shmem_bytes",
    "kernel_bytes",
    "current_bytes",
    "high_bytes",
    "swap_current_bytes",
    "swap_max_bytes",
    "oom_kill",
    "oom_events",
    "high_events",
    "max_events",
    "swap_fail_events",
    "pgmajfault",
    "psi_some_avg10",
    "psi_full_avg10",
    "alive",
]
HISTORY_SECONDS = 1800


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Fleet:
    """Answers for every simulated node like a long-running agent sampling once a second.

    One process plays 500 agents, so it must be cheap: a container's rows are the same for
    every pod of its kind (stable or slowly growing), and each second's full-window JSON is
    built once per kind and pasted into every answer that needs it.
    """

    def __init__(self, pods: dict[str, tuple[str, bool]]) -> None:
        self.pods = pods  # uid -> (container id, growing)
        self.started = time.time()
        self.requests = 0
        self._windows: dict[tuple[bool, float, float], str] = {}

    def _row(self, growing: bool, t: float) -> list[Any]:
        age = t - (self.started - HISTORY_SECONDS)
        anon = (96 * MiB + int(age * 40 * 1024)) if growing else (160 * MiB + (int(t) * 7919) % (2 * MiB))
        file_bytes, kernel = 64 * MiB, 2 * MiB
        return [
            t,
            anon,
            file_bytes,
            LIMIT_BYTES,
            file_bytes // 2,
            file_bytes // 2,
            0,
            kernel,
            anon + file_bytes + kernel,
            None,
            0,
            None,
            0,
            0,
            0,
            0,
            0,
            0,
            0.0,
            0.0,
            True,
        ]

    def _rows_json(self, growing: bool, start: float, newest: float) -> str:
        key = (growing, start, newest)
        cached = self._windows.get(key)
        if cached is None:
            first = int(start) if start == int(start) else int(start) + 1
            rows = [self._row(growing, float(t)) for t in range(first, int(newest) + 1)]
            cached = json.dumps(rows)
            if len(self._windows) > 64:
                self._windows.clear()
            self._windows[key] = cached
        return cached

    async def pods_handler(self, request: web.Request) -> web.Response:
        self.requests += 1
        node = request.match_info["node"]
        now = time.time()
        newest = float(int(now))
        since = request.query.get("since_seconds")
        window = float(request.query.get("window_seconds", "600"))
        start = max(newest - window, float(int(self.started - HISTORY_SECONDS)))
        if since is not None:
            start = max(start, float(since) + 1e-9)
        columns = json.dumps(COLUMNS)
        parts = []
        missing = []
        for uid in request.query.getall("uid", []):
            if uid not in self.pods:
                missing.append(uid)
                continue
            cid, growing = self.pods[uid]
            latest = json.dumps(dict(zip(COLUMNS, self._row(growing, newest), strict=True)))
            rows = self._rows_json(growing, start, newest)
            parts.append(
                f'{{"pod_uid":"{uid}","qos":"burstable","cgroup_path":"pod{uid}","latest":{latest},'
                f'"containers":[{{"container_id":"{cid}","runtime":"containerd","cgroup_path":"{cid}",'
                f'"latest":{latest},"stat":{{}},"events":{{}},"swap_events":{{}},"pressure":{{}},'
                f'"window":{{"columns":{columns},"rows":{rows}}}}}]}}'
            )
        body = (
            f'{{"node":"{node}","agent_version":"bench","cgroup_version":2,"now_seconds":{now!r},'
            f'"interval_seconds":1.0,"pods":[{",".join(parts)}],"missing":{json.dumps(missing)}}}'
        )
        return web.Response(text=body, content_type="application/json")


def _proc_stats(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]
    hwm = int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    return {"rss_mib": round(rss, 1), "peak_rss_mib": round(hwm, 1), "cpu_seconds": cpu}


def _histogram(text: str, name: str) -> tuple[list[tuple[float, float]], float, float]:
    buckets = []
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket"):
            le = re.search(r'le="([^"]+)"', line).group(1)  # type: ignore[union-attr]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
        elif line.startswith(f"{name}_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith(f"{name}_count"):
            count += float(line.rsplit(" ", 1)[1])
    return buckets, total, count


def _quantile(buckets: list[tuple[float, float]], count: float, q: float) -> float:
    for le, cumulative in sorted(buckets):
        if cumulative >= q * count:
            return le
    return float("inf")


def _counter_total(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(f"{name}{{"))


async def run(
    pods: int, nodes: int, seconds: float, guards: int, profile: Path | None = None
) -> dict[str, Any]:
    rng = random.Random(7)
    fleet_pods: dict[str, tuple[str, bool]] = {}
    fleet_port, metrics_port = _free_port(), _free_port()
    async with kmock.KubernetesEmulator() as api, kmock.Server(api) as server:
        api.resources.load_bundled()
        api.resources["memoryguard.io/v1alpha1/memoryguards"] = {
            "kind": "MemoryGuard",
            "singular": "memoryguard",
            "namespaced": True,
            "verbs": {"get", "list", "watch", "create", "patch", "update", "delete"},
            "subresources": {"status"},
        }
        for n in range(nodes):
            node = f"node-{n}"
            api.objects["v1/pods", AGENT_NAMESPACE, f"agent-{node}"] = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"agent-{node}",
                    "namespace": AGENT_NAMESPACE,
                    "uid": str(uuid.uuid4()),
                    "resourceVersion": "1",
                    "labels": {
                        "app.kubernetes.io/name": "memoryguard",
                        "app.kubernetes.io/component": "agent",
                    },
                },
                "spec": {"nodeName": node, "containers": [{"name": "agent", "image": "x"}]},
                "status": {"phase": "Running", "podIP": "127.0.0.1"},
            }
        for i in range(pods):
            uid = str(uuid.UUID(int=rng.getrandbits(128)))
            cid = hashlib.sha256(uid.encode()).hexdigest()
            growing = i % 100 == 0
            fleet_pods[uid] = (cid, growing)
            app = f"app-{i % guards}"
            api.objects["v1/pods", NAMESPACE, f"pod-{i}"] = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"pod-{i}",
                    "namespace": NAMESPACE,
                    "uid": uid,
                    "resourceVersion": "1",
                    "labels": {"app": app},
                },
                "spec": {
                    "nodeName": f"node-{i % nodes}",
                    "containers": [
                        {"name": "app", "image": "x", "resources": {"limits": {"memory": "512Mi"}}}
                    ],
                },
                "status": {
                    "phase": "Running",
                    "containerStatuses": [
                        {
                            "name": "app",
                            "containerID": f"containerd://{cid}",
                            "ready": True,
                            "restartCount": 0,
                            "image": "x",
                            "imageID": "x",
                        }
                    ],
                },
            }
        for g in range(guards):
            api.objects["memoryguard.io/v1alpha1/memoryguards", NAMESPACE, f"app-{g}"] = {
                "apiVersion": "memoryguard.io/v1alpha1",
                "kind": "MemoryGuard",
                "metadata": {
                    "name": f"app-{g}",
                    "namespace": NAMESPACE,
                    "uid": str(uuid.uuid4()),
                    "resourceVersion": "1",
                    "generation": 1,
                },
                "spec": {"selector": {"matchLabels": {"app": f"app-{g}"}}, "forecast": {"minSamples": 30}},
            }

        fleet = Fleet(fleet_pods)
        app = web.Application()
        app.router.add_get("/{node}/v1/pods", fleet.pods_handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", fleet_port).start()

        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(REPO / "operator"), os.environ.get("PYTHONPATH")])
            ),
        }
        log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"mg-bench-scale-{os.getpid()}.log"
        log = log_path.open("wb")
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "memoryguard.cli",
            "operator",
            "--api-server",
            str(server.url),
            "--standalone",
            "-n",
            NAMESPACE,
            "-n",
            AGENT_NAMESPACE,
            "--no-agent-auth",
            "--liveness",
            "",
            "--metrics-port",
            str(metrics_port),
            "--metrics-host",
            "127.0.0.1",
            "--cycle-seconds",
            "1",
            "--agent-url-template",
            f"http://127.0.0.1:{fleet_port}/{{node}}",
            # One process plays all 500 agents here, so it answers slower than 500 real ones.
            "--agent-timeout-seconds",
            "10",
            stdout=log,
            stderr=log,
            env=env,
            cwd=REPO,
        )
        try:
            async with aiohttp.ClientSession() as session:

                async def scrape() -> str:
                    async with session.get(f"http://127.0.0.1:{metrics_port}/metrics") as response:
                        return await response.text()

                # Start-up: the first status a guard cycle writes (pods listed, first cycle run).
                warm_started = time.monotonic()
                first_status_seconds = None
                while first_status_seconds is None:
                    await asyncio.sleep(0.2)
                    if any(
                        api.objects["memoryguard.io/v1alpha1/memoryguards", NAMESPACE, f"app-{g}"].raw.get(
                            "status"
                        )
                        for g in range(guards)
                    ):
                        first_status_seconds = time.monotonic() - warm_started
                    if time.monotonic() - warm_started > 1800:
                        raise RuntimeError(f"no guard cycle after 1800 s; see {log_path}")
                # Warm-up: every pod's window loaded (100 pods per guard cycle), then measure.
                while True:
                    await asyncio.sleep(2)
                    statuses = [
                        api.objects["memoryguard.io/v1alpha1/memoryguards", NAMESPACE, f"app-{g}"].raw.get(
                            "status"
                        )
                        or {}
                        for g in range(guards)
                    ]
                    ready = [
                        c for st in statuses for c in st.get("conditions") or () if c.get("type") == "Ready"
                    ]
                    watched = sum(st.get("podsWatched") or 0 for st in statuses)
                    if (
                        watched >= pods
                        and len(ready) == guards
                        and not any("still loading" in c.get("message", "") for c in ready)
                    ):
                        break
                    if time.monotonic() - warm_started > 1800:
                        raise RuntimeError(f"no steady state after 1800 s; see {log_path}")
                warmup_seconds = time.monotonic() - warm_started
                await asyncio.sleep(10)
                before_text = await scrape()
                before = _proc_stats(process.pid)
                own_cpu_before = time.process_time()
                wall_start = time.monotonic()
                if profile is not None:
                    spy = await asyncio.create_subprocess_exec(
                        str(Path(sys.executable).parent / "py-spy"),
                        "record",
                        "--pid",
                        str(process.pid),
                        "--duration",
                        str(int(seconds)),
                        "--format",
                        "raw",
                        "--output",
                        str(profile),
                        "--nonblocking",
                        stdout=asyncio.subprocess.DEVNULL,
                        stderr=asyncio.subprocess.DEVNULL,
                    )
                await asyncio.sleep(seconds)
                after_text = await scrape()
                after = _proc_stats(process.pid)
                own_cpu = time.process_time() - own_cpu_before
                wall = time.monotonic() - wall_start
                if profile is not None:
                    await spy.wait()
        finally:
            process.terminate()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(process.wait(), 20)
            await runner.cleanup()

    name = "memoryguard_operator_cycle_duration_seconds"
    b0, s0, c0 = _histogram(before_text, name)
    b1, s1, c1 = _histogram(after_text, name)
    window_buckets: dict[float, float] = {}
    for le, value in b1:
        window_buckets[le] = window_buckets.get(le, 0.0) + value
    for le, value in b0:
        window_buckets[le] = window_buckets.get(le, 0.0) - value
    cycles = c1 - c0
    buckets = sorted(window_buckets.items())
    operator_cpu = after["cpu_seconds"] - before["cpu_seconds"]
    api_calls = _counter_total(after_text, "memoryguard_operator_api_requests_total") - _counter_total(
        before_text, "memoryguard_operator_api_requests_total"
    )
    return {
        "pods": pods,
        "nodes": nodes,
        "guards": guards,
        "first_status_seconds": round(first_status_seconds, 1),
        "warmup_seconds": round(warmup_seconds, 1),
        "measured_seconds": round(wall, 1),
        "guard_cycles": int(cycles),
        "cycle_seconds_mean": round((s1 - s0) / cycles, 3) if cycles else None,
        "cycle_seconds_p50_bucket": _quantile(buckets, cycles, 0.5),
        "cycle_seconds_p99_bucket": _quantile(buckets, cycles, 0.99),
        # Every guard cycled once: with one guard, one cycle plus the timer's 1 s pause.
        "full_pass_seconds": round(wall / (cycles / guards), 2) if cycles else None,
        "operator_cpu_percent_of_one_core": round(100 * operator_cpu / wall, 1),
        "operator_cpu_seconds_per_guard_cycle": round(operator_cpu / cycles, 3) if cycles else None,
        # This process plays the 500 agents (and KMock): it shares the machine's two cores.
        "fleet_and_kmock_cpu_percent_of_one_core": round(100 * own_cpu / wall, 1),
        "operator_api_calls_per_second": round(api_calls / wall, 2),
        "operator_rss_mib": after["rss_mib"],
        "operator_peak_rss_mib": after["peak_rss_mib"],
        "fleet_requests": fleet.requests,
        "load_average": Path("/proc/loadavg").read_text().split()[:3],
        "log": str(log_path),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--guards", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--profile", type=Path, help="py-spy raw profile of the operator while measuring")
    args = parser.parse_args()
    result = asyncio.run(run(args.pods, args.nodes, args.seconds, args.guards, args.profile))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{result['pods']} pods on {result['nodes']} nodes, {result['guards']} guard(s): "
            f"{result['guard_cycles']} guard cycles in {result['measured_seconds']} s, mean "
            f"{result['cycle_seconds_mean']} s (p50 ≤ {result['cycle_seconds_p50_bucket']} s, "
            f"p99 ≤ {result['cycle_seconds_p99_bucket']} s), a full pass every "
            f"{result['full_pass_seconds']} s; operator CPU "
            f"{result['operator_cpu_percent_of_one_core']} % of one core "
            f"({result['operator_cpu_seconds_per_guard_cycle']} s per guard cycle), "
            f"RSS {result['operator_rss_mib']} MiB (peak {result['operator_peak_rss_mib']} MiB); "
            f"first status after {result['first_status_seconds']} s, warm-up {result['warmup_seconds']} s; "
            f"fleet and KMock CPU {result['fleet_and_kmock_cpu_percent_of_one_core']} %"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
