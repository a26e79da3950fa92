"""The operator's Prometheus metrics (``memoryguard_operator_*``), served on ``/metrics``."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("memoryguard.controller.metrics")

CYCLE_BUCKETS_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
API_BUCKETS_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


FORECAST_LABELS = ("guard", "namespace", "pod", "container", "limit")


@dataclass(frozen=True, slots=True)
class ContainerForecast:
    """The engine's forecast for one growing container, as of the operator's clock.

    The time left is counted down at scrape time from ``eta_seconds`` and ``as_of_seconds``:
    a container far from its limit is judged again only every so often, and between two
    judgements the forecast it was given still holds.
    """

    namespace: str
    pod: str
    container: str
    node: str
    limit_source: str  # the failure line: "memory.max", "memory.high", a runtime heap cap
    eta_seconds: float
    growth_bytes_per_second: float
    as_of_seconds: float  # operator clock at the newest sample the forecast was made from


class _ForecastCollector(Collector):
    """Renders the forecasts held by ``OperatorMetrics`` at scrape time; holding them in a
    plain dict keeps the cycle's update a dict assignment, and a label set goes the moment its
    forecast does."""

    def __init__(self, metrics: OperatorMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        eta = GaugeMetricFamily(
            "memoryguard_operator_forecast_seconds_to_limit",
            "Seconds until the container's pinned memory (anon + shmem + kernel + swapped anon) "
            "reaches its nearest failure line at the growth the engine measured; present only "
            "while that growth is sustained.",
            labels=FORECAST_LABELS,
        )
        growth = GaugeMetricFamily(
            "memoryguard_operator_pinned_growth_bytes_per_second",
            "Sustained growth of the container's pinned memory the forecast is made from; "
            "present only while the forecast has a time to the limit.",
            labels=FORECAST_LABELS,
        )
        now = self.metrics.clock()
        for guard, forecasts in list(self.metrics.forecasts.items()):
            for f in list(forecasts.values()):
                labels = [guard, f.namespace, f.pod, f.container, f.limit_source]
                eta.add_metric(labels, max(0.0, f.eta_seconds - (now - f.as_of_seconds)))
                growth.add_metric(labels, f.growth_bytes_per_second)
        yield eta
        yield growth


ACTION_LABELS = ("guard", "namespace", "pod", "container", "action", "result")
RECLAIM_LABELS = ("guard", "namespace", "pod", "container")


@dataclass(slots=True)
class ContainerActions:
    """The latest action of each kind and result taken on one container of a watched pod.

    Held per pod UID, never per pod name alone: a restart's new pod is a new entry, and the old
    pod's entry goes when it leaves, so the label sets stay those of the pods watched now.
    """

    namespace: str
    pod: str
    container: str
    # (action, result) -> unix time of the latest such outcome
    last_seconds: dict[tuple[str, str], float] = field(default_factory=dict)
    reclaim_freed_bytes: int | None = None  # what the latest completed memory.reclaim freed


class _PodActionCollector(Collector):
    """Renders the per-pod actions held by ``OperatorMetrics`` at scrape time (as the forecasts
    are): an action is a dict assignment in the cycle, and a label set goes with its pod."""

    def __init__(self, metrics: OperatorMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        last = GaugeMetricFamily(
            "memoryguard_operator_last_action_timestamp_seconds",
            "Unix time of the latest action of this kind and result on the container; present "
            "while its pod is watched by the guard. A restart is labelled with the pod and "
            "container whose memory called for it.",
            labels=ACTION_LABELS,
        )
        freed = GaugeMetricFamily(
            "memoryguard_operator_last_reclaim_freed_bytes",
            "Bytes the latest completed memory.reclaim on the container freed, as the node's "
            "agent measured them; present while its pod is watched by the guard.",
            labels=RECLAIM_LABELS,
        )
        for guard, containers in list(self.metrics.pod_actions.items()):
            for c in list(containers.values()):
                for (action, result), at_seconds in list(c.last_seconds.items()):
                    last.add_metric([guard, c.namespace, c.pod, c.container, action, result], at_seconds)
                if c.reclaim_freed_bytes is not None:
                    freed.add_metric([guard, c.namespace, c.pod, c.container], c.reclaim_freed_bytes)
        yield last
        yield freed


@dataclass
class OperatorMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    clock: Callable[[], float] = time.time
    # guard -> (pod uid, container name) -> forecast: only containers whose pinned memory grows
    forecasts: dict[str, dict[tuple[str, str], ContainerForecast]] = field(default_factory=dict)
    # guard -> (pod uid, container name) -> its latest actions: only containers acted on
    pod_actions: dict[str, dict[tuple[str, str], ContainerActions]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        r = self.registry
        r.register(_ForecastCollector(self))
        r.register(_PodActionCollector(self))
        self.cycles = Counter(
            "memoryguard_operator_cycles", "Guard cycles run, by outcome.", ["guard", "outcome"], registry=r
        )
        self.cycle_duration = Histogram(
            "memoryguard_operator_cycle_duration_seconds",
            "Wall time of one guard cycle: agents asked, engine run, actions executed, status written.",
            ["guard"],
            buckets=CYCLE_BUCKETS_SECONDS,
            registry=r,
        )
        self.agent_requests = Counter(
            "memoryguard_operator_agent_requests",
            "Requests to node agents, by kind and result.",
            ["kind", "result"],
            registry=r,
        )
        self.agent_errors = Counter(
            "memoryguard_operator_agent_errors",
            "Agent requests that failed after retries, by node.",
            ["node"],
            registry=r,
        )
        self.actions = Counter(
            "memoryguard_operator_actions",
            "Actions by kind (reclaim, drop_caches, restart, evict) and result "
            "(done, failed, blocked, dry_run).",
            ["guard", "action", "result"],
            registry=r,
        )
        self.pods_watched = Gauge(
            "memoryguard_operator_pods_watched", "Pods selected by the guard.", ["guard"], registry=r
        )
        self.pods_at_risk = Gauge(
            "memoryguard_operator_pods_at_risk",
            "Pods above warn or forecast within the horizon.",
            ["guard"],
            registry=r,
        )
        self.nodes_degraded = Gauge(
            "memoryguard_operator_nodes_degraded",
            "Nodes whose agent is unreachable or stale (no action for their pods).",
            ["guard"],
            registry=r,
        )
        self.restarts_in_flight = Gauge(
            "memoryguard_operator_restarts_in_flight",
            "Restarts and evictions by MemoryGuard still rolling out, across all guards, as last "
            "counted (when a restart was wanted): the number the --max-concurrent-restarts cap holds.",
            registry=r,
        )
        self.samples_ingested = Counter(
            "memoryguard_operator_samples_ingested", "Samples received from agents.", ["guard"], registry=r
        )
        self.api_request_duration = Histogram(
            "memoryguard_operator_api_request_duration_seconds",
            "The operator's own Kubernetes API calls: request sent to answer read, by verb and resource.",
            ["verb", "resource"],
            buckets=API_BUCKETS_SECONDS,
            registry=r,
        )
        self.api_queue_duration = Histogram(
            "memoryguard_operator_api_queue_duration_seconds",
            "Time an API call waited for a free client thread before it was sent.",
            buckets=API_BUCKETS_SECONDS,
            registry=r,
        )
        self.api_requests = Counter(
            "memoryguard_operator_api_requests",
            "The operator's own Kubernetes API calls, by verb, resource and HTTP status (0: no answer).",
            ["verb", "resource", "code"],
            registry=r,
        )
        self.pods_indexed = Gauge(
            "memoryguard_operator_pods_indexed",
            "Pods in the operator's informer (every pod of the watched namespaces).",
            registry=r,
        )
        self.pod_lists = Counter(
            "memoryguard_operator_pod_lists",
            "Full LISTs of pods: one at start, then only when a watch cannot resume.",
            registry=r,
        )
        self.pod_watch_events = Counter(
            "memoryguard_operator_pod_watch_events",
            "Pod watch events received, by type (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR).",
            ["type"],
            registry=r,
        )
        self.status_writes = Counter(
            "memoryguard_operator_status_writes",
            "MemoryGuard status patches, by result.",
            ["result"],
            registry=r,
        )

    def observe_api(
        self, verb: str, resource: str, code: int, *, queued_seconds: float, call_seconds: float
    ) -> None:
        self.api_queue_duration.observe(queued_seconds)
        self.api_request_duration.labels(verb, resource).observe(call_seconds)
        self.api_requests.labels(verb, resource, str(code)).inc()

    def set_forecast(self, guard: str, key: tuple[str, str], forecast: ContainerForecast) -> None:
        self.forecasts.setdefault(guard, {})[key] = forecast

    def clear_forecast(self, guard: str, key: tuple[str, str]) -> None:
        forecasts = self.forecasts.get(guard)
        if forecasts:
            forecasts.pop(key, None)

    def keep_forecasts(self, guard: str, keep: Callable[[tuple[str, str], ContainerForecast], bool]) -> None:
        """Drop the guard's forecasts ``keep`` rejects (pods gone, nodes degraded): it sees only
        the growing containers, so a cycle over many pods pays for the few that grow."""
        forecasts = self.forecasts.get(guard)
        if forecasts:
            self.forecasts[guard] = {k: f for k, f in forecasts.items() if keep(k, f)}

    def forget_forecasts(self, guard: str) -> None:
        self.forecasts.pop(guard, None)

    def record_action(
        self,
        guard: str,
        key: tuple[str, str],
        *,
        namespace: str,
        pod: str,
        container: str,
        action: str,
        result: str,
        at_seconds: float,
        freed_bytes: int | None = None,
    ) -> None:
        """``key``: (pod uid, container name), the key of the cycle's live set."""
        containers = self.pod_actions.setdefault(guard, {})
        held = containers.get(key)
        if held is None:
            held = containers[key] = ContainerActions(namespace, pod, container)
        held.last_seconds[(action, result)] = at_seconds
        if freed_bytes is not None:
            held.reclaim_freed_bytes = freed_bytes

    def keep_pod_actions(self, guard: str, live: Callable[[tuple[str, str]], bool]) -> None:
        """Drop the actions of containers no longer watched; it looks only at the containers
        acted on, so a cycle over many pods pays for the few that were."""
        containers = self.pod_actions.get(guard)
        if containers:
            for key in [k for k in containers if not live(k)]:
                del containers[key]

    def forget_pod_series(self, guard: str) -> None:
        """Drop every per-pod series of the guard (its spec became invalid: no cycle runs)."""
        self.forget_forecasts(guard)
        self.pod_actions.pop(guard, None)

    def forget(self, guard: str) -> None:
        """Drop a deleted guard's series, so /metrics does not keep reporting it."""
        for metric in (self.pods_watched, self.pods_at_risk, self.nodes_degraded):
            with contextlib.suppress(KeyError):
                metric.remove(guard)
        self.forget_pod_series(guard)

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def serve_metrics(metrics: OperatorMetrics, host: str, port: int) -> web.AppRunner:
    async def endpoint(_: web.Request) -> web.Response:
        response = web.Response(body=metrics.render())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/metrics", endpoint)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("serving /metrics on %s:%d", host, port)
    return runner
