"""Which workload a restart acts on, and whether that workload is still rolling out.

Pod → ReplicaSet → Deployment; Pod → StatefulSet; Pod → DaemonSet. A pod with no controlling
owner is bare: it can only be evicted. Other owners (Jobs, operators' own kinds) cannot be
rolled by a pod-template annotation, so MemoryGuard leaves them alone and says so.

``rollout_in_progress`` follows what ``kubectl rollout status`` checks, so MemoryGuard never
restarts a workload that is still replacing its pods (a restart then would only stack a
second rollout on the first, and take more replicas down at once).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from memoryguard.controller.kubeapi import KubeApi
from memoryguard.controller.pods import PodInfo

ROLLABLE = ("Deployment", "StatefulSet", "DaemonSet")


@dataclass(frozen=True, slots=True)
class Workload:
    kind: str  # Deployment, StatefulSet, DaemonSet; "Pod" for a bare pod
    namespace: str
    name: str

    @property
    def ref(self) -> str:
        """``deployment/web``: how kubectl names it, and the restart cooldown key."""
        return f"{self.kind.lower()}/{self.name}"

    @property
    def bare_pod(self) -> bool:
        return self.kind == "Pod"


class UnsupportedOwner(Exception):
    """The pod's controller is not something a restart annotation can roll."""


async def resolve_workload(api: KubeApi, pod: PodInfo, cache: dict[tuple[str, str], str | None]) -> Workload:
    """The workload to restart for ``pod``; ReplicaSet owners are read (and cached) once."""
    owner = pod.owner
    if owner is None:
        return Workload("Pod", pod.namespace, pod.name)
    if owner.kind in ROLLABLE:
        return Workload(owner.kind, pod.namespace, owner.name)
    if owner.kind == "ReplicaSet":
        key = (pod.namespace, owner.name)
        if key not in cache:
            replicaset = await api.get_workload("ReplicaSet", pod.namespace, owner.name)
            cache[key] = _controller_name(replicaset, "Deployment") if replicaset else None
        deployment = cache[key]
        if deployment is None:
            raise UnsupportedOwner(
                f"ReplicaSet {owner.name} has no Deployment owner: rolling it needs a new pod template hash"
            )
        return Workload("Deployment", pod.namespace, deployment)
    raise UnsupportedOwner(f"{owner.kind} {owner.name} cannot be rolled by a pod-template annotation")


def _controller_name(body: Mapping[str, Any], kind: str) -> str | None:
    for ref in (body.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller") and ref.get("kind") == kind:
            return str(ref.get("name"))
    return None


def rollout_in_progress(workload: Mapping[str, Any]) -> str | None:
    """Why the workload is still rolling out, or None when its last rollout is complete."""
    kind = workload.get("kind")
    meta = workload.get("metadata") or {}
    spec = workload.get("spec") or {}
    status = workload.get("status") or {}
    generation = meta.get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and (observed is None or observed < generation):
        return f"the controller has not yet observed generation {generation} (at {observed})"
    desired = (
        int(spec.get("replicas", 1)) if kind != "DaemonSet" else int(status.get("desiredNumberScheduled", 0))
    )
    if kind == "Deployment":
        updated = int(status.get("updatedReplicas", 0))
        total = int(status.get("replicas", 0))
        available = int(status.get("availableReplicas", 0))
        if updated < desired:
            return f"{updated} of {desired} replicas updated"
        if total > updated:
            return f"{total - updated} old replicas pending termination"
        if available < updated:
            return f"{available} of {updated} updated replicas available"
        return None
    if kind == "StatefulSet":
        strategy = (spec.get("updateStrategy") or {}).get("type", "RollingUpdate")
        if strategy == "OnDelete":
            return None
        partition = int(((spec.get("updateStrategy") or {}).get("rollingUpdate") or {}).get("partition", 0))
        updated = int(status.get("updatedReplicas", 0))
        ready = int(status.get("readyReplicas", 0))
        if updated < desired - partition:
            return f"{updated} of {desired - partition} replicas updated"
        if ready < desired:
            return f"{ready} of {desired} replicas ready"
        if (
            partition == 0
            and status.get("updateRevision")
            and status.get("currentRevision") != status.get("updateRevision")
        ):
            return "the update revision is not yet the current revision"
        return None
    if kind == "DaemonSet":
        updated = int(status.get("updatedNumberScheduled", 0))
        available = int(status.get("numberAvailable", 0))
        if updated < desired:
            return f"{updated} of {desired} pods updated"
        if available < desired:
            return f"{available} of {desired} pods available"
        return None
    return None


def cannot_roll(workload: Mapping[str, Any]) -> str | None:
    """Why a pod-template annotation would not restart anything on this workload."""
    if workload.get("kind") == "StatefulSet":
        strategy = ((workload.get("spec") or {}).get("updateStrategy") or {}).get("type", "RollingUpdate")
        if strategy == "OnDelete":
            return "StatefulSet uses the OnDelete update strategy: a template change restarts nothing"
    if workload.get("kind") == "DaemonSet":
        strategy = ((workload.get("spec") or {}).get("updateStrategy") or {}).get("type", "RollingUpdate")
        if strategy == "OnDelete":
            return "DaemonSet uses the OnDelete update strategy: a template change restarts nothing"
    if (workload.get("spec") or {}).get("paused"):
        return "the Deployment is paused: a template change rolls nothing until it is resumed"
    return None
