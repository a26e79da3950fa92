"""Decision latency: from a leaking container crossing the forecast line to the restart patch
arriving at the API server.

Real parts: KMock as the API server, ``memoryguard agent`` processes (1 s sampling) serving
fixture cgroup trees that this script rewrites every 0.25 s, ``memoryguard operator`` as its own
process (1 s cycle). Each workload leaks anonymous memory at a steady rate; its forecast line
is the moment the true time-to-limit drops to the restart lead (rolloutSeconds × 1.5), which
for a steady leak is known exactly: ``t_oom - lead``. The latency is the arrival time of the
Deployment PATCH at KMock minus that moment (sampling delay, cycle delay and the operator's
own work all included).

    python -m tests.operator.bench_latency --workloads 24 [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import kmock
from tests.support.cgroup_tree import CgroupTree, MiB, write_proc

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "bench"
AGENT_NAMESPACE = "memoryguard-system"
LIMIT_BYTES = 256 * MiB
KERNEL_BYTES = 512 * 1024
START_BYTES = 60 * MiB
ROLLOUT_SECONDS = 10
VERBOSE = ("--verbose",) if os.environ.get("BENCH_VERBOSE") else ()
EXTRA_ARGS = tuple(os.environ.get("BENCH_OPERATOR_ARGS", "").split())
LEAD_SECONDS = ROLLOUT_SECONDS * 1.5  # the engine's default margin: 50 % of the rollout


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(REPO / "operator"), str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


async def _wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status < 500 or response.status == 503:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {timeout}s")


def _write_leaks(leaks: list[dict[str, Any]], rate: float, now: float) -> None:
    for leak in leaks:
        if leak["start"] <= now:
            anon = min(LIMIT_BYTES, START_BYTES + int(rate * (now - leak["start"])))
            leak["tree"].set(leak["uid"], leak["cid"], anon_bytes=anon, file_bytes=10 * MiB)


async def _scrape_cycles(port: int) -> dict[str, float]:
    """Guard cycles the operator ran and their mean duration, from its /metrics."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith("memoryguard_operator_cycle_duration_seconds_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("memoryguard_operator_cycle_duration_seconds_count"):
            count += float(line.rsplit(" ", 1)[1])
    return {"cycles": count, "mean_seconds": round(total / count, 3) if count else float("nan")}


def _meta(name: str, namespace: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "uid": str(uuid.uuid4()), "resourceVersion": "1", **extra}


async def run(
    workloads: int, rate_mib: float, stagger_seconds: float, nodes: int, one_guard: bool = False
) -> dict[str, Any]:
    workdir = Path(
        tempfile.mkdtemp(prefix="mg-bench-latency-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None)
    )
    write_proc(workdir / "proc")
    processes: list[asyncio.subprocess.Process] = []
    arrivals: dict[str, float] = {}
    metrics_port = _free_port()
    cycle_stats: dict[str, float] = {}
    api_requests: dict[str, int] = {}
    decisions: dict[str, str] = {}
    event_times: dict[str, list[tuple[str, float]]] = {}

    def record(request: Any) -> None:
        if request.name and "memoryguard.io/restart-id" in request.text and request.name not in arrivals:
            arrivals[request.name] = time.time()
        if request.method == "POST" and isinstance(request.data, dict) and request.data.get("reason"):
            obj = request.data.get("involvedObject", {})
            if obj.get("kind") == "Pod":
                event_times.setdefault(obj.get("name", "")[:6].rstrip("-"), []).append(
                    (request.data["reason"], time.time())
                )
        # "Matched, nothing to answer": KMock goes on to its emulated PATCH, and keeps this
        # reaction active for the next request (a sink-only reaction would be used up).
        raise NotImplementedError

    async with kmock.KubernetesEmulator() as api, kmock.Server(api) as server:
        api.resources.load_bundled()
        api.resources["memoryguard.io/v1alpha1/memoryguards"] = {
            "kind": "MemoryGuard",
            "singular": "memoryguard",
            "namespaced": True,
            "verbs": {"get", "list", "watch", "create", "patch", "update", "delete"},
            "subresources": {"status"},
        }
        api["patch", kmock.resource("apps/v1/deployments")] << record
        api["post", kmock.resource("v1/events")] << record
        trees: list[tuple[str, int, CgroupTree]] = []
        try:
            for n in range(nodes):
                node, port = f"node-{n}", _free_port()
                tree = CgroupTree(workdir / node, version=2, driver="systemd")
                api.objects["v1/pods", AGENT_NAMESPACE, f"agent-{node}"] = {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": _meta(
                        f"agent-{node}",
                        AGENT_NAMESPACE,
                        labels={
                            "app.kubernetes.io/name": "memoryguard",
                            "app.kubernetes.io/component": "agent",
                        },
                    ),
                    "spec": {
                        "nodeName": node,
                        "containers": [
                            {"name": "agent", "image": "x", "ports": [{"name": "api", "containerPort": port}]}
                        ],
                    },
                    "status": {"phase": "Running", "podIP": "127.0.0.1"},
                }
                trees.append((node, port, tree))

            leaks: list[dict[str, Any]] = []
            for i in range(workloads):
                node, _, tree = trees[i % nodes]
                name = f"app-{i}"
                pod = tree.add_pod(qos="burstable", containers=1, max_bytes=LIMIT_BYTES)
                cid = pod.containers[-1]
                tree.set(pod.uid, cid, anon_bytes=START_BYTES, file_bytes=10 * MiB, max_bytes=LIMIT_BYTES)
                labels = {"app": name}
                deployment = {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": _meta(name, NAMESPACE, generation=1),
                    "spec": {
                        "replicas": 1,
                        "selector": {"matchLabels": labels},
                        "template": {
                            "metadata": {"labels": labels},
                            "spec": {"containers": [{"name": "app", "image": "x"}]},
                        },
                    },
                    "status": {
                        "observedGeneration": 1,
                        "replicas": 1,
                        "updatedReplicas": 1,
                        "availableReplicas": 1,
                    },
                }
                rs_name = f"{name}-5c9d"
                api.objects["apps/v1/deployments", NAMESPACE, name] = deployment
                api.objects["apps/v1/replicasets", NAMESPACE, rs_name] = {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "metadata": _meta(
                        rs_name,
                        NAMESPACE,
                        ownerReferences=[
                            {
                                "apiVersion": "apps/v1",
                                "kind": "Deployment",
                                "name": name,
                                "uid": deployment["metadata"]["uid"],
                                "controller": True,
                            }
                        ],
                    ),
                    "spec": {"selector": {"matchLabels": labels}, "template": deployment["spec"]["template"]},
                }
                pod_meta = _meta(
                    f"{name}-5c9d-abcde",
                    NAMESPACE,
                    labels={**labels, "tier": "bench"},
                    ownerReferences=[
                        {
                            "apiVersion": "apps/v1",
                            "kind": "ReplicaSet",
                            "name": rs_name,
                            "uid": "rs",
                            "controller": True,
                        }
                    ],
                )
                pod_meta["uid"] = pod.uid
                api.objects["v1/pods", NAMESPACE, pod_meta["name"]] = {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": pod_meta,
                    "spec": {
                        "nodeName": node,
                        "containers": [
                            {"name": "app", "image": "x", "resources": {"limits": {"memory": "256Mi"}}}
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
                guard = "apps" if one_guard else name
                api.objects["memoryguard.io/v1alpha1/memoryguards", NAMESPACE, guard] = {
                    "apiVersion": "memoryguard.io/v1alpha1",
                    "kind": "MemoryGuard",
                    "metadata": _meta(guard, NAMESPACE, generation=1),
                    "spec": {
                        "selector": {"matchLabels": {"tier": "bench"} if one_guard else labels},
                        "forecast": {"window": "2m", "horizon": "5m", "minSamples": 10},
                        "actions": {
                            "restart": {
                                "rolloutSeconds": ROLLOUT_SECONDS,
                                "maxPerHour": 60 if one_guard else 1,
                            }
                        },
                    },
                }
                leaks.append({"name": name, "tree": tree, "uid": pod.uid, "cid": cid, "start": None})

            # Agents start after their pods exist, as on a node that has been up a while (an agent
            # rediscovers new pod cgroups only every few ticks).
            for node, port, tree in trees:
                log = (workdir / f"{node}.log").open("ab")
                processes.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        "memoryguard.cli",
                        "agent",
                        "--root",
                        str(tree.root),
                        "--proc-root",
                        str(workdir / "proc"),
                        "--listen",
                        f"127.0.0.1:{port}",
                        "--node-name",
                        node,
                        "--interval",
                        "1s",
                        "--insecure-no-auth",
                        stdout=log,
                        stderr=log,
                        env=_env(),
                        cwd=REPO,
                    )
                )
                await _wait_http(f"http://127.0.0.1:{port}/healthz")

            operator_log = (workdir / "operator.log").open("ab")
            processes.append(
                await asyncio.create_subprocess_exec(
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
                    "--metrics-port",
                    str(metrics_port),
                    "--metrics-host",
                    "127.0.0.1",
                    "--liveness",
                    "",
                    "--cycle-seconds",
                    "1",
                    *EXTRA_ARGS,
                    stdout=operator_log,
                    stderr=operator_log,
                    env=_env(),
                    cwd=REPO,
                )
            )
            await asyncio.sleep(3)  # watches established, first cycles run

            rate = rate_mib * MiB
            headroom = LIMIT_BYTES - KERNEL_BYTES - START_BYTES
            started = time.time()
            for i, leak in enumerate(leaks):
                leak["start"] = started + i * stagger_seconds
            deadline = started + (workloads - 1) * stagger_seconds + headroom / rate + 5
            while time.time() < deadline and len(arrivals) < workloads:
                # Off the event loop KMock serves on: a fixture write costs milliseconds.
                await asyncio.to_thread(_write_leaks, leaks, rate, time.time())
                await asyncio.sleep(0.5)
            cycle_stats = await _scrape_cycles(metrics_port)
            for leak in leaks:
                guard = "apps" if one_guard else leak["name"]
                status = api.objects["memoryguard.io/v1alpha1/memoryguards", NAMESPACE, guard].raw.get(
                    "status"
                )
                entries = [
                    e
                    for e in (status or {}).get("ledger") or ()
                    if e.get("action") == "restart" and e.get("target") == f"deployment/{leak['name']}"
                ]
                decisions[leak["name"]] = entries[0]["reason"][:160] if entries else "no restart"
            for request in list(api):
                kind = f"{request.method} {request.resource.plural if request.resource else request.url.path}"
                if request.subresource:
                    kind += f"/{request.subresource}"
                api_requests[kind] = api_requests.get(kind, 0) + 1
                if kind.endswith("POST events") and isinstance(request.data, dict):
                    reason = f"event {request.data.get('reason')}"
                    api_requests[reason] = api_requests.get(reason, 0) + 1
        finally:
            for process in processes:
                if process.returncode is None:
                    process.terminate()
            for process in processes:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(process.wait(), 15)

    latencies = []
    missed = []
    for leak in leaks:
        crossing = leak["start"] + headroom / rate - LEAD_SECONDS
        if leak["name"] in arrivals:
            latencies.append(arrivals[leak["name"]] - crossing)
        else:
            missed.append(leak["name"])
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return (
            ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] if ordered else float("nan")
        )

    return {
        "workloads": workloads,
        "nodes": nodes,
        "leak_mib_per_second": rate_mib,
        "lead_seconds": LEAD_SECONDS,
        "restarted": len(latencies),
        "missed": missed,
        "latency_seconds": {
            "min": round(ordered[0], 3) if ordered else None,
            "p50": round(pct(50), 3),
            "p90": round(pct(90), 3),
            "p99": round(pct(99), 3),
            "max": round(ordered[-1], 3) if ordered else None,
            "mean": round(statistics.fmean(ordered), 3) if ordered else None,
        },
        "all_seconds": [round(x, 3) for x in latencies],
        "operator_cycles": cycle_stats,
        "decisions": decisions,
        "pod_events": {
            leak["name"]: [(r, round(t - leak["start"], 1)) for r, t in event_times.get(leak["name"], [])]
            for leak in leaks
        },
        "api_requests": dict(sorted(api_requests.items(), key=lambda kv: -kv[1])[:20]),
        "load_average": Path("/proc/loadavg").read_text().split()[:3],
        "workdir": str(workdir),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workloads", type=int, default=24)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--leak-mib-per-second", type=float, default=6.0)
    parser.add_argument("--stagger-seconds", type=float, default=1.3)
    parser.add_argument("--one-guard", action="store_true", help="one MemoryGuard selecting every workload")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(
        run(args.workloads, args.leak_mib_per_second, args.stagger_seconds, args.nodes, args.one_guard)
    )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        lat = result["latency_seconds"]
        print(
            f"decision latency over {result['restarted']}/{result['workloads']} leaking workloads on "
            f"{result['nodes']} agents: p50 {lat['p50']} s, p90 {lat['p90']} s, p99 {lat['p99']} s, "
            f"max {lat['max']} s (goal p99 < 3 s); missed: {result['missed'] or 'none'}"
        )
    return 0 if not result["missed"] else 1


if __name__ == "__main__":
    sys.exit(main())
