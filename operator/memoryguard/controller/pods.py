"""What the operator keeps about a pod in its index, and label-selector matching.

A pod body is several kilobytes; the index keeps only what a guard cycle needs (node, uid,
containers with their IDs, limits and runtime heap caps, the controlling owner), so ten
thousand pods cost a few megabytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes.utils import parse_quantity

from memoryguard import annotations as keys
from memoryguard.engine.runtime import parse_runtime_heap_limit

CONTAINER_ID_PREFIXES = ("containerd://", "cri-o://", "docker://")


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    name: str
    container_id: str | None  # 64 hex digits, runtime prefix removed; None until it started
    limit_bytes: int | None  # resources.limits.memory
    heap_limit_bytes: int | None  # a runtime's own hard heap cap (Node.js, JVM -Xmx)
    heap_fraction_of_max: float | None  # JVM MaxRAMPercentage: needs memory.max to become bytes
    heap_limit_source: str
    soft_limit_bytes: int | None = None  # GOMEMLIMIT: reported, never a kill line


@dataclass(frozen=True, slots=True)
class OwnerRef:
    kind: str
    name: str
    uid: str


@dataclass(frozen=True, slots=True)
class PodInfo:
    namespace: str
    name: str
    uid: str
    node: str | None
    phase: str
    labels: Mapping[str, str]
    owner: OwnerRef | None  # the controlling owner (ReplicaSet, StatefulSet, DaemonSet, Job…)
    containers: tuple[ContainerInfo, ...]
    excluded: bool  # memoryguard.io/exclude: "true"
    deleting: bool

    @property
    def running(self) -> bool:
        return self.phase == "Running" and self.node is not None and not self.deleting

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def container(self, name: str) -> ContainerInfo | None:
        return next((c for c in self.containers if c.name == name), None)


def pod_info(
    namespace: str,
    name: str,
    uid: str,
    meta: Mapping[str, Any],
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
) -> PodInfo:
    ids = {
        s.get("name"): _container_id(s.get("containerID"))
        for s in status.get("containerStatuses") or ()
        if isinstance(s, Mapping)
    }
    containers = tuple(_container_info(c, ids.get(c.get("name"))) for c in spec.get("containers") or ())
    owner = next(
        (
            OwnerRef(str(ref.get("kind")), str(ref.get("name")), str(ref.get("uid", "")))
            for ref in meta.get("ownerReferences") or ()
            if ref.get("controller")
        ),
        None,
    )
    pod_annotations = meta.get("annotations") or {}
    return PodInfo(
        namespace=namespace,
        name=name,
        uid=uid,
        node=spec.get("nodeName") or None,
        phase=str(status.get("phase") or "Unknown"),
        labels=dict(meta.get("labels") or {}),
        owner=owner,
        containers=containers,
        excluded=str(pod_annotations.get(keys.EXCLUDE, "")).lower() == "true",
        deleting=bool(meta.get("deletionTimestamp")),
    )


def _container_id(raw: Any) -> str | None:
    if not isinstance(raw, str) or not raw:
        return None
    for prefix in CONTAINER_ID_PREFIXES:
        if raw.startswith(prefix):
            return raw[len(prefix) :]
    return raw.split("://", 1)[-1]


def _container_info(container: Mapping[str, Any], container_id: str | None) -> ContainerInfo:
    limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    try:
        limit_bytes = int(parse_quantity(limit)) if limit is not None else None
    except ValueError:
        limit_bytes = None  # the API server validates quantities; an odd one is not worth a crash
    args = [str(a) for a in (container.get("command") or [])] + [
        str(a) for a in (container.get("args") or [])
    ]
    # Only literal values: a valueFrom (ConfigMap, Secret) is not readable from the pod spec.
    env = {
        str(e["name"]): str(e["value"]) for e in container.get("env") or () if "name" in e and "value" in e
    }
    runtime = parse_runtime_heap_limit(args, env)
    return ContainerInfo(
        name=str(container.get("name")),
        container_id=container_id,
        limit_bytes=limit_bytes,
        heap_limit_bytes=runtime.heap_limit_bytes,
        heap_fraction_of_max=runtime.heap_fraction_of_max,
        heap_limit_source=runtime.source,
        soft_limit_bytes=runtime.soft_limit_bytes,
    )


@dataclass(frozen=True, slots=True)
class Selector:
    """A Kubernetes LabelSelector (matchLabels and matchExpressions, ANDed)."""

    match_labels: Mapping[str, str]
    expressions: tuple[tuple[str, str, frozenset[str]], ...]

    @classmethod
    def from_spec(cls, selector: Mapping[str, Any]) -> Selector:
        expressions = tuple(
            (str(e["key"]), str(e["operator"]), frozenset(str(v) for v in e.get("values") or ()))
            for e in selector.get("matchExpressions") or ()
        )
        for key, operator, _ in expressions:
            if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
                raise ValueError(
                    f"spec.selector.matchExpressions[{key}].operator: unknown operator {operator!r}"
                )
        return cls(dict(selector.get("matchLabels") or {}), expressions)

    @property
    def empty(self) -> bool:
        return not self.match_labels and not self.expressions

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.empty:  # an empty selector must not mean "every pod in the namespace" here
            return False
        for key, value in self.match_labels.items():
            if labels.get(key) != value:
                return False
        for key, operator, values in self.expressions:
            present = key in labels
            if operator == "In" and (not present or labels[key] not in values):
                return False
            if operator == "NotIn" and present and labels[key] in values:
                return False
            if operator == "Exists" and not present:
                return False
            if operator == "DoesNotExist" and present:
                return False
        return True


def guarded_containers(pod: PodInfo, names: Sequence[str]) -> list[ContainerInfo]:
    """The pod's containers a guard watches: those named in spec.containers, or all."""
    wanted = set(names)
    return [c for c in pod.containers if not wanted or c.name in wanted]
