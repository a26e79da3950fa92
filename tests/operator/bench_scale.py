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
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import kmock
from aiohttp import web
from tests.operator.benchkit import (
    REPO,
    Histogram,
    counter_total,
    free_port,
    operator_command,
    operator_env,
    proc_stats,
    scrape,
)

from memoryguard.agent.ring import COLUMNS as AGENT_WINDOW_COLUMNS

NAMESPACE = "bench"
AGENT_NAMESPACE = "memoryguard-system"
MiB = 1024 * 1024
LIMIT_BYTES = 512 * MiB
COLUMNS = list(AGENT_WINDOW_COLUMNS)  # the agent API's window layout
HISTORY_SECONDS = 1800


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
        values = {
            "t_seconds": t,
            "anon_bytes": anon,
            "file_bytes": file_bytes,
            "max_bytes": LIMIT_BYTES,
            "inactive_file_bytes": file_bytes // 2,
            "active_file_bytes": file_bytes // 2,
            "kernel_bytes": kernel,
            "current_bytes": anon + file_bytes + kernel,
            "high_bytes": None,
            "swap_max_bytes": None,
            "psi_some_avg10": 0.0,
            "psi_full_avg10": 0.0,
            "alive": True,
        }
        # Every other column (shmem, swap in use, event counters, major faults) stays 0.
        return [values.get(column, 0) for column in COLUMNS]

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


async def run(
    pods: int, nodes: int, seconds: float, guards: int, profile: Path | None = None
) -> dict[str, Any]:
    rng = random.Random(7)
    fleet_pods: dict[str, tuple[str, bool]] = {}
    fleet_port, metrics_port = free_port(), free_port()
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

        log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"mg-bench-scale-{os.getpid()}.log"
        log = log_path.open("wb")
        process = await asyncio.create_subprocess_exec(
            *operator_command(
                str(server.url),
                metrics_port,
                [NAMESPACE, AGENT_NAMESPACE],
                "--agent-url-template",
                f"http://127.0.0.1:{fleet_port}/{{node}}",
                # One process plays all 500 agents here, so it answers slower than 500 real ones.
                "--agent-timeout-seconds",
                "10",
            ),
            stdout=log,
            stderr=log,
            env=operator_env(),
            cwd=REPO,
        )
        try:
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
                ready = [c for st in statuses for c in st.get("conditions") or () if c.get("type") == "Ready"]
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
            before_text = await scrape(metrics_port)
            before = proc_stats(process.pid)
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
            after_text = await scrape(metrics_port)
            after = proc_stats(process.pid)
            own_cpu = time.process_time() - own_cpu_before
            wall = time.monotonic() - wall_start
            if profile is not None:
                await spy.wait()
        finally:
            process.terminate()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(process.wait(), 20)
            await runner.cleanup()

    window = Histogram.parse(after_text, "memoryguard_operator_cycle_duration_seconds").minus(
        Histogram.parse(before_text, "memoryguard_operator_cycle_duration_seconds")
    )
    cycles = window.count
    operator_cpu = after["cpu_seconds"] - before["cpu_seconds"]
    api_calls = counter_total(after_text, "memoryguard_operator_api_requests_total") - counter_total(
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
        "cycle_seconds_mean": round(window.sum / cycles, 3) if cycles else None,
        "cycle_seconds_p50_bucket": window.quantile_bound(0.5),
        "cycle_seconds_p99_bucket": window.quantile_bound(0.99),
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
