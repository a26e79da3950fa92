"""Decision latency: from a leaking container crossing the forecast line to the restart patch
arriving at the API server.

Real parts: KMock as the API server, ``memoryguard agent`` processes (1 s sampling) serving
fixture cgroup trees that this script rewrites every 0.25 s, ``memoryguard operator`` as its own
process (1 s cycle). Each workload leaks anonymous memory at a steady rate; its forecast line
is the moment the true time-to-limit drops to the restart lead (rolloutSeconds × 1.5), which
for a steady leak is known exactly: ``t_oom - lead``. The latency is the arrival time of the
Deployment PATCH at KMock minus that moment (sampling delay, cycle delay and the operator's
own work all included).

Where the time goes, per workload: the engine's own verdict on the very samples the agent
served (replayed after the run through the operator's history and ``judge``: the first
sample on which it asks for a restart), and the operator's delay from that sample to the
PATCH at KMock (waiting for the next cycle, asking the agent, the API calls). The API side
is counted too: every request KMock handled (by verb and resource, per second) with its
handling time, KMock's event-loop lag, and the operator's own view of its API calls (time
waiting for a client thread, time on the wire) from its /metrics.

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
from tests.operator.benchkit import (
    REPO,
    Histogram,
    free_port,
    operator_command,
    operator_env,
    scrape,
    wait_http,
)
from tests.support.cgroup_tree import CgroupTree, MiB, write_proc

from memoryguard.controller.agentclient import parse_pods_answer
from memoryguard.controller.cycle import history_step_seconds
from memoryguard.controller.history import ContainerHistory
from memoryguard.controller.judgement import judge, policy_from_spec
from memoryguard.controller.kubeapi import resource_of
from memoryguard.controller.pods import ContainerInfo
from memoryguard.controller.settings import OperatorConfig
from memoryguard.engine.decision import Action, Target
from memoryguard.engine.limiter import LimiterState

NAMESPACE = "bench"
AGENT_NAMESPACE = "memoryguard-system"
LIMIT_BYTES = 256 * MiB
KERNEL_BYTES = 512 * 1024
START_BYTES = 60 * MiB
ROLLOUT_SECONDS = 10
VERBOSE = ("--verbose",) if os.environ.get("BENCH_VERBOSE") else ()
EXTRA_ARGS = tuple(os.environ.get("BENCH_OPERATOR_ARGS", "").split())
LEAD_SECONDS = ROLLOUT_SECONDS * 1.5  # the engine's default margin: 50 % of the rollout
KMOCK_LOG_KEPT = 50


def _write_leaks(leaks: list[dict[str, Any]], rate: float, now: float) -> None:
    for leak in leaks:
        if leak["start"] <= now:
            anon = min(LIMIT_BYTES, START_BYTES + int(rate * (now - leak["start"])))
            leak["tree"].set(leak["uid"], leak["cid"], anon_bytes=anon, file_bytes=10 * MiB)


class _TimedEmulator(kmock.KubernetesEmulator):
    """KMock noting each request's arrival and handling time (watch streams excluded: they last)."""

    handled: list[tuple[float, str, str, float]]

    async def __call__(self, raw_request: Any) -> Any:
        arrived, began = time.time(), time.perf_counter()
        try:
            return await super().__call__(raw_request)
        finally:
            if raw_request.query.get("watch") not in ("true", "1"):
                self.handled.append(
                    (arrived, raw_request.method, raw_request.path, time.perf_counter() - began)
                )


def _forget_old_requests(api: Any) -> None:
    """KMock 0.8 matches each request against every request it ever served, once per reaction
    (``dsl.View.__contains__``), so its answers slow down linearly with the requests behind it:
    12 ms per status PATCH after 50 requests, 61 ms after 250, 140 ms after 650 on this machine.
    The benchmark measures the operator, so KMock keeps only its latest requests (this script
    notes every request itself, in ``_TimedEmulator``); ``--keep-kmock-log`` shows the other case."""
    log = getattr(api, "_requests", None)
    if isinstance(log, list) and len(log) > KMOCK_LOG_KEPT:
        del log[:-KMOCK_LOG_KEPT]


async def _loop_lag(lags: list[float]) -> None:
    """How late this event loop (KMock's) wakes a 50 ms sleeper: its congestion."""
    while True:
        began = time.perf_counter()
        await asyncio.sleep(0.05)
        lags.append(time.perf_counter() - began - 0.05)


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] if ordered else float("nan")


def _api_traffic(handled: list[tuple[float, str, str, float]], since: float, until: float) -> dict[str, Any]:
    """Requests KMock handled between ``since`` and ``until``: per verb and resource, how many
    a second (mean, busiest second) and how long KMock took to answer them."""
    kinds: dict[str, list[tuple[float, float]]] = {}
    for arrived, method, path, seconds in handled:
        if since <= arrived <= until:
            kinds.setdefault(f"{method} {resource_of(path)}", []).append((arrived, seconds))
    span = max(until - since, 1e-9)
    table = {}
    for kind, rows in sorted(kinds.items(), key=lambda kv: -len(kv[1])):
        per_second: dict[int, int] = {}
        for arrived, _ in rows:
            per_second[int(arrived)] = per_second.get(int(arrived), 0) + 1
        handling = [seconds * 1000 for _, seconds in rows]
        table[kind] = {
            "count": len(rows),
            "per_second_mean": round(len(rows) / span, 2),
            "per_second_max": max(per_second.values()),
            "handling_ms_p50": round(_pct(handling, 50), 2),
            "handling_ms_p99": round(_pct(handling, 99), 2),
            "handling_ms_max": round(max(handling), 2),
        }
    every = [seconds * 1000 for arrived, _, _, seconds in handled if since <= arrived <= until]
    per_second_all: dict[int, int] = {}
    for arrived, *_ in handled:
        if since <= arrived <= until:
            per_second_all[int(arrived)] = per_second_all.get(int(arrived), 0) + 1
    return {
        "seconds": round(span, 1),
        "requests": len(every),
        "per_second_mean": round(len(every) / span, 2),
        "per_second_max": max(per_second_all.values(), default=0),
        "handling_ms_p50": round(_pct(every, 50), 2),
        "handling_ms_p99": round(_pct(every, 99), 2),
        "handling_ms_max": round(max(every, default=float("nan")), 2),
        "by_kind": table,
    }


def _histogram_summary(text: str, name: str) -> dict[str, float | int | None]:
    """Count, mean and the bucket bound holding the p99 of one histogram, all label sets summed."""
    histogram = Histogram.parse(text, name)
    mean, p99 = histogram.mean(), histogram.quantile_bound(0.99)
    return {
        "count": int(histogram.count),
        "mean_ms": None if mean is None else round(1000 * mean, 2),
        "p99_at_most_ms": None if p99 is None else round(1000 * p99, 1),
    }


def _operator_api_view(text: str) -> dict[str, Any]:
    return {
        "waiting_for_a_client_thread": _histogram_summary(
            text, "memoryguard_operator_api_queue_duration_seconds"
        ),
        "request_to_answer": _histogram_summary(text, "memoryguard_operator_api_request_duration_seconds"),
    }


def _cycle_stats(text: str) -> dict[str, float]:
    """Guard cycles the operator ran and their mean duration."""
    cycles = Histogram.parse(text, "memoryguard_operator_cycle_duration_seconds")
    mean = cycles.mean()
    return {"cycles": cycles.count, "mean_seconds": float("nan") if mean is None else round(mean, 3)}


async def _engine_verdicts(leaks: list[dict[str, Any]], spec: dict[str, Any]) -> dict[str, float | None]:
    """For each workload, the time of the first agent sample on which the engine asks for a
    restart: the agent's rows fed one by one through the operator's history and ``judge``."""
    policy = policy_from_spec(spec)
    config = OperatorConfig()
    verdicts: dict[str, float | None] = {}
    async with aiohttp.ClientSession() as session:
        for leak in leaks:
            params = {"uid": leak["uid"], "window_seconds": "3600"}
            async with session.get(f"http://127.0.0.1:{leak['port']}/v1/pods", params=params) as response:
                reading = parse_pods_answer(await response.json())
            rows = sorted(reading.pods[leak["uid"]].containers[leak["cid"]].rows, key=lambda r: r.t_seconds)
            step = history_step_seconds(config, policy, reading.interval_seconds)
            history = ContainerHistory(
                dense_seconds=config.history_dense_seconds, step_seconds=config.history_step_seconds
            )
            container = ContainerInfo("app", leak["cid"], LIMIT_BYTES, None, None, "")
            target = Target(
                kind="workload", name=f"deployment/{leak['name']}", pod=leak["name"], container="app"
            )
            verdicts[leak["name"]] = None
            for row in rows:
                history.extend([row], keep_seconds=policy.window_seconds, step_seconds=step)
                judgement = judge(
                    history.window(policy.window_seconds),
                    policy,
                    container,
                    target,
                    LimiterState(),
                    agent_now_seconds=row.t_seconds,
                    now_seconds=row.t_seconds,
                )
                if judgement.decision.action is Action.RESTART:
                    verdicts[leak["name"]] = row.t_seconds
                    break
    return verdicts


def _meta(name: str, namespace: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "uid": str(uuid.uuid4()), "resourceVersion": "1", **extra}


async def run(
    workloads: int,
    rate_mib: float,
    stagger_seconds: float,
    nodes: int,
    one_guard: bool = False,
    keep_kmock_log: bool = False,
) -> dict[str, Any]:
    workdir = Path(
        tempfile.mkdtemp(prefix="mg-bench-latency-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None)
    )
    write_proc(workdir / "proc")
    processes: list[asyncio.subprocess.Process] = []
    arrivals: dict[str, float] = {}
    metrics_port = free_port()
    cycle_stats: dict[str, float] = {}
    decisions: dict[str, str] = {}
    event_times: dict[str, list[tuple[str, float]]] = {}
    intents: dict[str, float] = {}
    engine: dict[str, float | None] = {}
    traffic: dict[str, Any] = {}
    operator_api: dict[str, Any] = {}
    lags: list[float] = []

    def record(request: Any) -> None:
        if request.name and "memoryguard.io/restart-id" in request.text and request.name not in arrivals:
            arrivals[request.name] = time.time()
        if request.subresource == "status" and isinstance(request.data, dict):
            for entry in (request.data.get("status") or {}).get("ledger") or ():
                name = str(entry.get("target", "")).removeprefix("deployment/")
                if (
                    entry.get("action") == "restart"
                    and entry.get("state") == "intent"
                    and name not in intents
                ):
                    intents[name] = time.time()
        if request.method == "POST" and isinstance(request.data, dict) and request.data.get("reason"):
            obj = request.data.get("involvedObject", {})
            if obj.get("kind") == "Pod":
                event_times.setdefault(obj.get("name", "")[:6].rstrip("-"), []).append(
                    (request.data["reason"], time.time())
                )
        # "Matched, nothing to answer": KMock goes on to its emulated PATCH, and keeps this
        # reaction active for the next request (a sink-only reaction would be used up).
        raise NotImplementedError

    async with _TimedEmulator() as api, kmock.Server(api) as server:
        api.handled = []
        lag_task = asyncio.create_task(_loop_lag(lags))
        api.resources.load_bundled()
        api.resources["memoryguard.io/v1alpha1/memoryguards"] = {
            "kind": "MemoryGuard",
            "singular": "memoryguard",
            "namespaced": True,
            "verbs": {"get", "list", "watch", "create", "patch", "update", "delete"},
            "subresources": {"status"},
        }
        api["patch", kmock.resource("apps/v1/deployments")] << record
        api["patch", kmock.resource("memoryguard.io/v1alpha1/memoryguards")] << record
        api["post", kmock.resource("v1/events")] << record
        trees: list[tuple[str, int, CgroupTree]] = []
        try:
            for n in range(nodes):
                node, port = f"node-{n}", free_port()
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
                node, agent_port, tree = trees[i % nodes]
                name = f"app-{i}"
                # Pod UIDs are unique cluster-wide; each fixture tree alone would repeat its seeded ones.
                pod = tree.add_pod(
                    qos="burstable", containers=1, max_bytes=LIMIT_BYTES, uid=str(uuid.uuid4())
                )
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
                guard_spec = api.objects["memoryguard.io/v1alpha1/memoryguards", NAMESPACE, guard].raw["spec"]
                leaks.append(
                    {
                        "name": name,
                        "tree": tree,
                        "uid": pod.uid,
                        "cid": cid,
                        "start": None,
                        "port": agent_port,
                    }
                )

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
                        env=operator_env(),
                        cwd=REPO,
                    )
                )
                await wait_http(f"http://127.0.0.1:{port}/healthz")

            operator_log = (workdir / "operator.log").open("ab")
            processes.append(
                await asyncio.create_subprocess_exec(
                    *operator_command(
                        str(server.url), metrics_port, [NAMESPACE, AGENT_NAMESPACE], *EXTRA_ARGS
                    ),
                    stdout=operator_log,
                    stderr=operator_log,
                    env=operator_env(),
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
                if not keep_kmock_log:
                    _forget_old_requests(api)
                await asyncio.sleep(0.5)
            finished = time.time()
            metrics_text = await scrape(metrics_port)
            cycle_stats = _cycle_stats(metrics_text)
            operator_api = _operator_api_view(metrics_text)
            traffic = _api_traffic(api.handled, started, finished)
            engine = await _engine_verdicts(leaks, dict(guard_spec))
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
        finally:
            lag_task.cancel()
            for process in processes:
                if process.returncode is None:
                    process.terminate()
            for process in processes:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(process.wait(), 15)

    latencies = []
    missed = []
    per_workload: dict[str, dict[str, float | None]] = {}
    for leak in leaks:
        crossing = leak["start"] + headroom / rate - LEAD_SECONDS
        arrival, verdict, intent = (
            arrivals.get(leak["name"]),
            engine.get(leak["name"]),
            intents.get(leak["name"]),
        )
        per_workload[leak["name"]] = {
            "end_to_end": None if arrival is None else round(arrival - crossing, 2),
            "engine_verdict": None if verdict is None else round(verdict - crossing, 2),
            "operator_after_verdict": None
            if arrival is None or verdict is None
            else round(arrival - verdict, 2),
            "intent_to_patch": None if arrival is None or intent is None else round(arrival - intent, 3),
        }
        if arrival is not None:
            latencies.append(arrival - crossing)
        else:
            missed.append(leak["name"])
    ordered = sorted(latencies)

    def summary(key: str) -> dict[str, float | None]:
        values = [v[key] for v in per_workload.values() if v[key] is not None]
        return {
            "n": len(values),
            "p50": round(_pct(values, 50), 2) if values else None,
            "p99": round(_pct(values, 99), 2) if values else None,
            "max": round(max(values), 2) if values else None,
        }

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
        "breakdown_seconds": {
            key: summary(key) for key in ("engine_verdict", "operator_after_verdict", "intent_to_patch")
        },
        "per_workload_seconds": per_workload,
        "kmock": {
            **traffic,
            "loop_lag_ms_p99": round(1000 * _pct(lags, 99), 1) if lags else None,
            "loop_lag_ms_max": round(1000 * max(lags), 1) if lags else None,
        },
        "operator_api_calls": operator_api,
        "operator_cycles": cycle_stats,
        "decisions": decisions,
        "pod_events": {
            leak["name"]: [(r, round(t - leak["start"], 1)) for r, t in event_times.get(leak["name"], [])]
            for leak in leaks
        },
        "kmock_request_log": "kept whole (KMock's default)" if keep_kmock_log else f"last {KMOCK_LOG_KEPT}",
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
    parser.add_argument(
        "--keep-kmock-log",
        action="store_true",
        help="let KMock keep every request (its answers then slow down as the run goes on)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(
        run(
            args.workloads,
            args.leak_mib_per_second,
            args.stagger_seconds,
            args.nodes,
            args.one_guard,
            args.keep_kmock_log,
        )
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
        engine, after = (
            result["breakdown_seconds"]["engine_verdict"],
            result["breakdown_seconds"]["operator_after_verdict"],
        )
        intent = result["breakdown_seconds"]["intent_to_patch"]
        print(
            f"  engine's own verdict on the agents' samples, after the line: p50 {engine['p50']} s, "
            f"p99 {engine['p99']} s (found for {engine['n']}/{result['workloads']})"
        )
        print(
            f"  operator, from that sample to the PATCH at KMock: p50 {after['p50']} s, "
            f"p99 {after['p99']} s; status intent to PATCH p99 {intent['p99']} s"
        )
        kmock_view = result["kmock"]
        print(
            f"  KMock: {kmock_view['requests']} requests in {kmock_view['seconds']} s "
            f"(mean {kmock_view['per_second_mean']}/s, busiest second {kmock_view['per_second_max']}), "
            f"handling p50 {kmock_view['handling_ms_p50']} ms p99 {kmock_view['handling_ms_p99']} ms, "
            f"loop lag p99 {kmock_view['loop_lag_ms_p99']} ms"
        )
    return 0 if not result["missed"] else 1


if __name__ == "__main__":
    sys.exit(main())
