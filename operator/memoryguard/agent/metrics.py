"""The agent's Prometheus metrics.

Per-container series come from a collector that reads the sampler's latest readings at scrape
time, so sampling costs nothing extra per tick and series of containers that went away
disappear with them. Kernel counters (``memory.events``, PSI ``total``, ``pgmajfault``) are
exposed as counters, sizes as gauges in bytes. The agent knows a container by ``pod_uid``,
``container_id`` and ``qos`` (what the cgroup path says); it does not know namespace, pod or
container names. A ``NameLookup`` (for example one backed by the kubelet) can add them as
``namespace``/``pod``/``container`` labels; without one they are left out, never guessed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from memoryguard import __version__

PREFIX = "memoryguard"

TICK_BUCKETS_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(frozen=True, slots=True)
class ContainerNames:
    namespace: str
    pod: str
    container: str


NameLookup = Callable[[str, str], ContainerNames | None]  # (pod_uid, container_id) -> names


class SamplerView(Protocol):
    """What the collector reads from the sampler at scrape time; the server's ``SamplerPort`` adds to it."""

    @property
    def cgroup_version(self) -> int: ...

    @property
    def container_count(self) -> int: ...

    @property
    def last_tick_t_seconds(self) -> float | None: ...

    @property
    def errors(self) -> Mapping[str, int]: ...

    def latest(self) -> Iterable[Any]: ...  # readings: .pod_uid, .container_id, .qos, .latest, …

    def node(self) -> Mapping[str, Any]: ...  # meminfo, pressure, … read now (Sampler.node)


# (metric suffix, help, Sample attribute or property). Unknown (None) values are skipped, so a
# container without a limit has no limit series instead of a fake one.
_GAUGES: tuple[tuple[str, str, str], ...] = (
    (
        "anon_bytes",
        "Anonymous memory (memory.stat anon): what only freeing or a restart gives back.",
        "anon_bytes",
    ),
    (
        "file_bytes",
        "Page cache (memory.stat file): reclaimable unless dirty, shared or mapped.",
        "file_bytes",
    ),
    ("active_file_bytes", "Page cache on the active list (memory.stat active_file).", "active_file_bytes"),
    (
        "inactive_file_bytes",
        "Page cache on the inactive list (memory.stat inactive_file): reclaimed first.",
        "inactive_file_bytes",
    ),
    (
        "shmem_bytes",
        "Shared memory and tmpfs (memory.stat shmem): counted as file, not reclaimable.",
        "shmem_bytes",
    ),
    ("kernel_bytes", "Kernel memory charged to the cgroup (memory.stat kernel).", "kernel_bytes"),
    (
        "usage_bytes",
        "Memory charged to the cgroup (memory.current; v1 memory.usage_in_bytes).",
        "usage_bytes",
    ),
    (
        "working_set_bytes",
        "Usage minus inactive page cache, as kubelet and cAdvisor compute it (and evict on).",
        "working_set_bytes",
    ),
    ("limit_bytes", "memory.max (v1 memory.limit_in_bytes); absent when unlimited.", "max_bytes"),
    ("high_bytes", "memory.high throttling threshold; absent when unset.", "high_bytes"),
    ("swap_bytes", "Swap used by the cgroup (memory.swap.current).", "swap_current_bytes"),
    ("swap_limit_bytes", "memory.swap.max; absent when unlimited.", "swap_max_bytes"),
)

# (metric suffix, help, /proc/meminfo key) of the node gauges; a key the kernel does not
# report (or an unreadable meminfo) leaves its family without a sample.
_NODE_MEMINFO: tuple[tuple[str, str, str], ...] = (
    ("total_bytes", "Memory of the node (/proc/meminfo MemTotal).", "MemTotal"),
    (
        "available_bytes",
        "Memory available for new work without swapping, page cache that can be dropped included "
        "(/proc/meminfo MemAvailable).",
        "MemAvailable",
    ),
    ("free_bytes", "Memory not used at all (/proc/meminfo MemFree).", "MemFree"),
    ("cached_bytes", "Page cache, shmem and tmpfs included (/proc/meminfo Cached).", "Cached"),
    ("swap_total_bytes", "Swap space of the node (/proc/meminfo SwapTotal).", "SwapTotal"),
    ("swap_free_bytes", "Swap space not used (/proc/meminfo SwapFree).", "SwapFree"),
)

# The counters of memory.events and memory.swap.events. Other keys a reading's dict may hold
# (v1's oom_control has the flags oom_kill_disable and under_oom) are not counters.
MEMORY_EVENTS = ("low", "high", "max", "oom", "oom_kill", "oom_group_kill")
SWAP_EVENTS = ("high", "max", "fail")


class SamplerCollector:
    """Builds the per-container and sampler-state families from the sampler, at scrape time."""

    def __init__(self, sampler: SamplerView, *, names: NameLookup | None = None) -> None:
        self.sampler = sampler
        self.names = names

    def describe(self) -> list[Metric]:
        # Nothing to declare up front: families depend on what the sampler holds at scrape time.
        return []

    def collect(self) -> Iterator[Metric]:
        yield from self._node_families()  # first: its read errors are counted in this scrape's
        yield from self._agent_families()
        yield from self._container_families()

    def _node_families(self) -> Iterator[Metric]:
        # Read at scrape time (three small files), not at every tick: nothing decides on them.
        node = self.sampler.node()
        meminfo = node.get("meminfo") or {}
        name = f"{PREFIX}_node_memory"
        for suffix, help_text, key in _NODE_MEMINFO:
            gauge = GaugeMetricFamily(f"{name}_{suffix}", help_text)
            if isinstance(meminfo.get(key), int):
                gauge.add_metric([], float(meminfo[key]))
            yield gauge
        stalled = CounterMetricFamily(
            f"{name}_pressure_stalled_seconds",
            "/proc/pressure/memory total: time some or all (full) non-idle tasks of the node were "
            "stalled waiting for memory.",
            labels=["kind"],
        )
        avg10 = GaugeMetricFamily(
            f"{name}_pressure_avg10_ratio",
            "/proc/pressure/memory avg10 as a ratio (0..1): share of the last 10 s the node's tasks "
            "were stalled on memory.",
            labels=["kind"],
        )
        _add_pressure(stalled, avg10, [], node.get("pressure") or {})
        yield stalled
        del stalled
        yield avg10

    def _agent_families(self) -> Iterator[Metric]:
        # No node label: the scrape adds the target's node (relabeling), and a second one would clash.
        info = GaugeMetricFamily(
            f"{PREFIX}_agent_info",
            "Agent build and host facts; the value is always 1.",
            labels=["version", "cgroup_version"],
        )
        info.add_metric([__version__, str(self.sampler.cgroup_version)], 1.0)
        yield info
        yield GaugeMetricFamily(
            f"{PREFIX}_agent_containers",
            "Containers found by discovery at the last sampling tick.",
            value=float(self.sampler.container_count),
        )
        last = self.sampler.last_tick_t_seconds
        if last is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_agent_last_tick_timestamp_seconds",
                "Wall-clock time of the last completed sampling tick (Unix seconds).",
                value=last,
            )
        errors = CounterMetricFamily(
            f"{PREFIX}_agent_tick_errors",
            "cgroup reads skipped during sampling (and node files at scrape time), by kind "
            "(vanished, missing_file, malformed, permission, io).",
            labels=["kind"],
        )
        for kind, count in sorted(self.sampler.errors.items()):
            errors.add_metric([kind], float(count))
        yield errors

    def _container_families(self) -> Iterator[Metric]:
        # One family at a time, each built in one pass over the readings and handed to the
        # encoder before the next is built: 500 containers make ~12 000 samples, which held
        # all at once (and then their text) would be several MiB for the length of a scrape.
        # Each is let go once yielded (del): a local would keep it until the next one is built.
        labelled = [(self._labels(reading), reading) for reading in self.sampler.latest()]
        base = ["pod_uid", "container_id", "qos"]
        label_names = base + (["namespace", "pod", "container"] if self.names is not None else [])
        name = f"{PREFIX}_container_memory"
        for suffix, help_text, attr in _GAUGES:
            gauge = GaugeMetricFamily(f"{name}_{suffix}", help_text, labels=label_names)
            for labels, reading in labelled:
                value = getattr(reading.latest, attr)
                if value is not None:
                    gauge.add_metric(labels, float(value))
            yield gauge
            del gauge
        events = CounterMetricFamily(
            f"{name}_events",
            "memory.events counters (low, high, max, oom, oom_kill, oom_group_kill) since cgroup creation.",
            labels=[*label_names, "event"],
        )
        for labels, reading in labelled:
            for key, count in _memory_events(reading.events):
                events.add_metric([*labels, key], count)
        yield events
        del events
        swap_events = CounterMetricFamily(
            f"{name}_swap_events",
            "memory.swap.events counters (high, max, fail) since the cgroup was created.",
            labels=[*label_names, "event"],
        )
        for labels, reading in labelled:
            for key, count in _counts(reading.swap_events, SWAP_EVENTS):
                swap_events.add_metric([*labels, key], count)
        yield swap_events
        del swap_events
        faults = CounterMetricFamily(
            f"{name}_major_page_faults",
            "Major page faults (memory.stat pgmajfault): page cache or swap read back from disk.",
            labels=label_names,
        )
        for labels, reading in labelled:
            faults.add_metric(labels, float(reading.latest.pgmajfault))
        yield faults
        del faults
        stalled = CounterMetricFamily(
            f"{name}_pressure_stalled_seconds",
            "memory.pressure total: time some or all (full) tasks were stalled waiting for memory.",
            labels=[*label_names, "kind"],
        )
        avg10 = GaugeMetricFamily(
            f"{name}_pressure_avg10_ratio",
            "memory.pressure avg10 as a ratio (0..1): share of the last 10 s tasks were stalled on memory.",
            labels=[*label_names, "kind"],
        )
        for labels, reading in labelled:
            _add_pressure(stalled, avg10, labels, reading.pressure)
        yield stalled
        del stalled
        yield avg10

    def _labels(self, reading: Any) -> list[str]:
        labels = [str(reading.pod_uid), str(reading.container_id), str(reading.qos)]
        if self.names is not None:
            found = self.names(reading.pod_uid, reading.container_id)
            # Empty label values are the same as absent ones to Prometheus: unknown stays unknown.
            labels += [found.namespace, found.pod, found.container] if found else ["", "", ""]
        return labels


def _add_pressure(
    stalled: CounterMetricFamily,
    avg10: GaugeMetricFamily,
    labels: list[str],
    pressure: Mapping[str, Mapping[str, float | int]],
) -> None:
    """One PSI reading (``parsers.parse_pressure``) as stalled seconds and avg10 ratio samples."""
    for kind in ("some", "full"):
        row = pressure.get(kind)
        if not row:
            continue
        if row.get("total") is not None:
            stalled.add_metric([*labels, kind], float(row["total"]) / 1e6)  # kernel: microseconds
        if row.get("avg10") is not None:
            avg10.add_metric([*labels, kind], float(row["avg10"]) / 100.0)  # kernel: percent


def _counts(values: Mapping[str, Any], keys: tuple[str, ...]) -> Iterator[tuple[str, float]]:
    """The known counters a file reported; a counter the kernel does not report stays absent."""
    for key in keys:
        count = values.get(key)
        if isinstance(count, int) and not isinstance(count, bool):
            yield key, float(count)


def _memory_events(values: Mapping[str, Any]) -> Iterator[tuple[str, float]]:
    yield from _counts(values, MEMORY_EVENTS)
    if "max" not in values and isinstance(values.get("failcnt"), int):
        # cgroup v1: memory.failcnt counts hits of the limit, what v2 calls the max event.
        yield "max", float(values["failcnt"])


class AgentMetrics:
    """The agent's registry: the scrape-time collector plus counters the server and loop update."""

    def __init__(self, sampler: SamplerView, *, names: NameLookup | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SamplerCollector(sampler, names=names))
        agent = f"{PREFIX}_agent"
        self.tick_duration = Histogram(
            f"{agent}_tick_duration_seconds",
            "Wall time of one sampling tick over every discovered container.",
            buckets=TICK_BUCKETS_SECONDS,
            registry=self.registry,
        )
        self.http_requests = Counter(
            f"{agent}_http_requests",
            "API requests answered, by route and HTTP status code.",
            ["route", "code"],
            registry=self.registry,
        )
        self.auth_decisions = Counter(
            f"{agent}_auth_decisions",
            "Authentication and authorization outcomes of API requests "
            "(allowed, unauthenticated, denied, unavailable, disabled).",
            ["result"],
            registry=self.registry,
        )
        self.auth_reviews = Counter(
            f"{agent}_auth_reviews",
            "TokenReviews and SubjectAccessReviews posted to the API server (cache misses), by outcome.",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.reclaims = Counter(
            f"{agent}_reclaim_requests",
            "memory.reclaim requests, by outcome (complete, partial, unsupported, busy, not_found, error).",
            ["outcome"],
            registry=self.registry,
        )
        self.reclaim_requested_bytes = Counter(
            f"{agent}_reclaim_requested_bytes",
            "Bytes asked of memory.reclaim.",
            registry=self.registry,
        )
        self.reclaim_freed_bytes = Counter(
            f"{agent}_reclaim_freed_bytes",
            "Bytes memory.reclaim actually freed (memory.current before minus after).",
            registry=self.registry,
        )
        self.drop_caches = Counter(
            f"{agent}_drop_caches_requests",
            "drop_caches requests, by level and outcome (done, disabled, rate_limited, error).",
            ["level", "outcome"],
            registry=self.registry,
        )
        for outcome in ("complete", "partial", "unsupported", "busy", "not_found", "error"):
            self.reclaims.labels(outcome)
        for result in ("allowed", "unauthenticated", "denied", "unavailable"):
            self.auth_decisions.labels(result)

    def observe_tick(self, duration_seconds: float) -> None:
        self.tick_duration.observe(duration_seconds)

    def observe_review(self, kind: str, outcome: str) -> None:
        self.auth_reviews.labels(kind, outcome).inc()

    def render(self, accept_header: str | None) -> tuple[bytes, str]:
        """The exposition body and its content type, text or OpenMetrics as the scraper asks."""
        chunks, content_type = self.render_chunks(accept_header)
        return b"".join(chunks), content_type

    def render_chunks(self, accept_header: str | None) -> tuple[Iterator[bytes], str]:
        """The exposition body one metric family at a time (each collected only when its turn
        comes), and its content type.

        prometheus-client's encoders take a whole registry and return the whole text. Handed
        one family at a time they give the same text piece by piece: both formats are the
        families' texts one after the other, and OpenMetrics ends with ``# EOF`` once, which is
        taken off each piece and written at the end.
        """
        encoder, content_type = choose_encoder(accept_header or "")
        openmetrics = content_type.startswith("application/openmetrics-text")

        def chunks() -> Iterator[bytes]:
            for family in self.registry.collect():
                text = encoder(_OneFamily(family))
                del family  # not kept while the next family is collected
                if openmetrics:
                    text = text.removesuffix(_OPENMETRICS_EOF)
                yield text
                del text
            if openmetrics:
                yield _OPENMETRICS_EOF

        return chunks(), content_type


_OPENMETRICS_EOF = b"# EOF\n"


class _OneFamily:
    """A registry of one family, for prometheus-client's encoders (they only call ``collect``)."""

    __slots__ = ("family",)

    def __init__(self, family: Metric) -> None:
        self.family = family

    def collect(self) -> Iterator[Metric]:
        yield self.family
