"""Where ``top`` and ``explain`` get their readings: local cgroups, or an agent over HTTP.

- :class:`PodSource` — the pods and containers discovery finds under a cgroup root (a node's
  ``/sys/fs/cgroup``, or a fixture tree), read by the agent's own sampler;
- :class:`PathSource` — any cgroup directories, named or all of them under the memory
  hierarchy (for machines without Kubernetes, like a developer's laptop);
- :class:`AgentSource` — a running agent's ``GET /v1/pods`` (docs/agent-api.md).

Each ``read()`` returns :class:`Reading` rows: who the cgroup is, its latest Sample, its
recent history (for growth rates and verdicts) and the kernel's raw dicts when known; each
``node()`` the node's memory (``meminfo`` in bytes, ``pressure``: the agent API's ``/v1/node``),
or None when the source cannot tell.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memoryguard.agent.cgroup import ALL_TIERS, CgroupProbe, NodeProbe, detect_hierarchy, layout_for
from memoryguard.agent.metrics import NameLookup
from memoryguard.engine.model import Sample

MIB = 1024 * 1024


class SourceError(Exception):
    """A failure the user can act on (unreachable agent, refused token); printed plainly."""


@dataclass
class Reading:
    key: str  # stable identity across reads
    labels: dict[str, str]  # columns that name the cgroup (POD, CONTAINER, QOS or CGROUP)
    latest: Sample
    history: list[Sample] = field(default_factory=list)  # oldest first, ends with latest
    entry: dict[str, Any] = field(default_factory=dict)  # stat/events/swap_events/pressure/limits
    cgroup_version: int | None = None


class _History:
    """Each cgroup's recent samples, kept by the local sources between reads."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._by_key: dict[str, deque[Sample]] = {}

    def add(self, key: str, sample: Sample) -> list[Sample]:
        samples = self._by_key.setdefault(key, deque())
        samples.append(sample)
        while samples and samples[0].t_seconds < sample.t_seconds - self.seconds:
            samples.popleft()
        return list(samples)

    def keep_only(self, keys: set[str]) -> None:
        for key in self._by_key.keys() - keys:
            del self._by_key[key]


class PodSource:
    """Kubernetes pods' containers under ``root``, through the agent's sampler (every file every read)."""

    def __init__(self, root: Path, *, history_seconds: float, proc_root: Path = Path("/proc")) -> None:
        from memoryguard.agent.sampler import Sampler

        # A display wants every file fresh at every refresh, not the agent's staggered tiers.
        self.sampler = Sampler(
            root,
            medium_every_ticks=1,
            slow_every_ticks=1,
            pod_every_ticks=1,
            discover_every_ticks=1,
            proc_root=proc_root,
        )
        self.history = _History(history_seconds)
        self.description = (
            f"pods under {self.sampler.hierarchy.memory_root} (cgroup v{self.sampler.cgroup_version})"
        )

    def read(self) -> list[Reading]:
        self.sampler.tick()
        out = []
        for r in self.sampler.latest():
            key = f"{r.pod_uid}/{r.container_id}"
            out.append(
                Reading(
                    key=key,
                    labels={"POD-UID": r.pod_uid, "CONTAINER": r.container_id[:13], "QOS": r.qos},
                    latest=r.latest,
                    history=self.history.add(key, r.latest),
                    entry={"events": dict(r.events), "swap_events": dict(r.swap_events)},
                    cgroup_version=self.sampler.cgroup_version,
                )
            )
        self.history.keep_only({r.key for r in out})
        return out

    def node(self) -> dict[str, Any] | None:
        return self.sampler.node()


class PathSource:
    """Named cgroup directories, or (``every=True``) every cgroup under the memory hierarchy."""

    def __init__(
        self,
        root: Path,
        paths: Sequence[str] = (),
        *,
        every: bool = False,
        history_seconds: float,
        proc_root: Path = Path("/proc"),
    ) -> None:
        self.hierarchy = detect_hierarchy(root)
        self._node = NodeProbe(self.hierarchy, proc_root)
        self.layout = layout_for(self.hierarchy.version)
        self.every = every
        self.paths = [self._resolve(p) for p in paths]
        self.history = _History(history_seconds)
        self._probes: dict[str, CgroupProbe] = {}
        where = "every cgroup" if every else f"{len(self.paths)} cgroup(s)"
        self.description = f"{where} under {self.hierarchy.memory_root} (cgroup v{self.hierarchy.version})"

    def _resolve(self, name: str) -> Path:
        path = Path(name)
        if not path.is_absolute():
            path = self.hierarchy.memory_root / path
        if not path.is_dir():
            raise SourceError(f"no such cgroup directory: {path}")
        return path

    def _targets(self) -> list[Path]:
        if not self.every:
            return self.paths
        found = []
        for dirpath, dirnames, _ in os.walk(self.hierarchy.memory_root):
            dirnames.sort()
            if dirpath != str(self.hierarchy.memory_root):
                found.append(Path(dirpath))
        return found

    def read(self) -> list[Reading]:
        t = time.time()
        out = []
        errors: dict[str, int] = {}
        for path in self._targets():
            key = str(path)
            probe = self._probes.get(key) or CgroupProbe(path, self.layout)
            self._probes[key] = probe
            if not probe.read(ALL_TIERS, errors) or not probe.complete:
                continue  # vanished, or not a memory cgroup we can read
            sample = probe.sample(t)
            rel = os.path.relpath(path, self.hierarchy.memory_root)
            out.append(
                Reading(
                    key=key,
                    labels={"CGROUP": rel},
                    latest=sample,
                    history=self.history.add(key, sample),
                    entry={
                        "events": probe.events(),
                        "swap_events": probe.swap_events(),
                        "pressure": probe.pressure(),
                        "limits": probe.limits(),
                    },
                    cgroup_version=self.hierarchy.version,
                )
            )
        keys = {r.key for r in out}
        self.history.keep_only(keys)
        for key in self._probes.keys() - keys:
            del self._probes[key]
        return out

    def probe(self, path: Path) -> CgroupProbe:
        return CgroupProbe(path, self.layout)

    def node(self) -> dict[str, Any] | None:
        return self._node.read({})


class AgentSource:
    """A running agent's read API.

    The bearer token is ``token`` as given, or else read from ``token_file`` at every request (a
    projected token rotates). The agent knows containers by pod UID and container ID only: with
    ``names`` (who they are, e.g. from the pods' statuses) the rows are labelled NAMESPACE, POD
    and CONTAINER instead, and containers it does not name (the pod sandbox) are left out.
    ``detail`` is the API's: ``full`` (each container's memory.stat, events, PSI and limits
    too, read by the agent when asked: what ``explain`` shows) or ``samples`` (enough for ``top``,
    and much cheaper for the agent to answer for every pod of a node).
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        token_file: Path | None = None,
        names: NameLookup | None = None,
        history_seconds: float,
        detail: str = "full",
    ) -> None:
        self.url = url.rstrip("/")
        self.detail = detail
        self.token = token
        self.token_file = token_file
        self.names = names
        self.history_seconds = history_seconds
        self.description = f"agent {self.url}"

    def _bearer(self) -> str | None:
        if self.token is not None or self.token_file is None:
            return self.token
        try:
            return self.token_file.read_text().strip()
        except OSError as exc:
            raise SourceError(f"cannot read the token file: {exc}") from exc

    def fetch(self, uids: Sequence[str] = ()) -> dict[str, Any]:
        query = [("uid", uid) for uid in uids] + [
            ("window_seconds", f"{self.history_seconds:g}"),
            ("detail", self.detail),
        ]
        return self._get("/v1/pods", query)

    def node(self) -> dict[str, Any] | None:
        """The agent's ``GET /v1/node``; None from an agent too old to have it."""
        try:
            return self._get("/v1/node", [])
        except _NotFound:
            return None

    def _get(self, path: str, query: list[tuple[str, str]]) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        token = self._bearer()
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        url = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        request = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                answer: dict[str, Any] = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            message = f"the agent answered {exc.code}{_HTTP_HINTS.get(exc.code, '')}: {detail}"
            raise (_NotFound if exc.code == 404 else SourceError)(message) from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise SourceError(f"cannot read {self.url}{path}: {exc}") from exc
        return answer

    def read(self, uids: Sequence[str] = ()) -> list[Reading]:
        answer = self.fetch(uids)
        version = answer.get("cgroup_version")
        out = []
        for pod in answer.get("pods", []):
            for entry in pod.get("containers", []):
                labels = self._labels(pod, entry)
                if not entry.get("latest") or labels is None:
                    continue
                history = window_samples(entry)
                latest = Sample.from_dict(entry["latest"])
                out.append(
                    Reading(
                        key=f"{pod['pod_uid']}/{entry['container_id']}",
                        labels=labels,
                        latest=latest,
                        history=history or [latest],
                        entry=entry,
                        cgroup_version=version,
                    )
                )
        return out

    def _labels(self, pod: dict[str, Any], entry: dict[str, Any]) -> dict[str, str] | None:
        if self.names is None:
            return {
                "POD-UID": pod["pod_uid"],
                "CONTAINER": entry["container_id"][:13],
                "QOS": pod.get("qos", ""),
            }
        known = self.names(pod["pod_uid"], entry["container_id"])
        if known is None:
            return None
        return {"NAMESPACE": known.namespace, "POD": known.pod, "CONTAINER": known.container}


class _NotFound(SourceError):
    """404: no such route on this agent (an older one), or not an agent at all."""


_HTTP_HINTS = {
    401: " (no token, or one this cluster does not accept)",
    403: (
        " (the token may not `get` memoryguard.io agents/samples on this node: "
        "bind the chart's ClusterRole <release>-samples-reader)"
    ),
}


def window_samples(entry: dict[str, Any]) -> list[Sample]:
    """The Samples of an agent API container entry's ``window``."""
    window = entry.get("window") or {}
    columns = window.get("columns") or []
    return [Sample.from_dict(dict(zip(columns, row, strict=False))) for row in window.get("rows") or []]


def growth_bytes_per_second(samples: Sequence[Sample], attribute: str = "anon_bytes") -> float | None:
    """Least-squares slope of one field over the samples; None with fewer than 2 or no time span."""
    points = [(s.t_seconds, getattr(s, attribute)) for s in samples if getattr(s, attribute) is not None]
    if len(points) < 2:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread <= 0:
        return None
    return float(sum((t - mean_t) * (v - mean_v) for t, v in points) / spread)


def human_bytes(value: float | None) -> str:
    """Sizes as kubectl prints them, with one decimal where it matters: 812Ki, 95.3Mi, 1.25Gi."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if abs(value) < MIB:
        return f"{value / 1024:.0f}Ki"
    if abs(value) < 1024 * MIB:
        mib = value / MIB
        return f"{mib:.1f}Mi" if abs(mib) < 100 else f"{mib:.0f}Mi"
    return f"{value / MIB / 1024:.2f}Gi"
