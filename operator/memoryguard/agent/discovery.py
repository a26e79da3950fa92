"""Finding pod and container cgroups on a node (adapter: reads directory listings only).

kubelet lays pods out under a ``kubepods`` cgroup, by QoS class; the container runtime puts
each container (the pod's sandbox included) in its own cgroup inside the pod's:

- systemd driver: ``kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid>.slice/<runtime>-<id>.scope``
  with ``<uid>``'s dashes written as underscores (``-`` separates slice levels in systemd)
  and ``<runtime>`` one of ``cri-containerd``, ``crio``, ``docker``;
- cgroupfs driver: ``kubepods/<qos>/pod<uid>/<id>`` (CRI-O names it ``crio-<id>``);
- Guaranteed pods have no QoS level: ``kubepods.slice/kubepods-pod<uid>.slice``, ``kubepods/pod<uid>``.

``kubepods`` itself sits at the top of the memory hierarchy, or one level down under a kubelet
cgroup root (``kubelet.slice/kubelet-kubepods.slice``, as kind nodes have it). CRI-O's
``crio-conmon-<id>`` monitors and anything nested inside a container's cgroup are not
containers and are ignored.

The pod UID comes back in canonical dashed form and the container ID as the runtime's 64 hex
digits — exactly what the Kubernetes API reports (minus ``containerd://``), so the operator can
match them. A directory that vanishes while being listed is skipped and counted as ``vanished``.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

POD_UID_PATTERN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
CONTAINER_ID_PATTERN = re.compile(r"^[0-9a-f]{64}$")

_UID_SYSTEMD = r"[0-9a-f]{8}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{12}"
_UID_DASHED = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_POD_DIR = re.compile(rf"^(?:[a-z0-9_]+-)*pod(?:({_UID_SYSTEMD})\.slice|({_UID_DASHED}))$")
_QOS_DIR = re.compile(r"^(?:(?:[a-z0-9_]+-)*kubepods-(burstable|besteffort)\.slice|(burstable|besteffort))$")
_CONTAINER_DIR = re.compile(r"^(?:(cri-containerd|crio|docker)-)?([0-9a-f]{64})(?:\.scope)?$")
_KUBEPODS_DIR = re.compile(r"^(?:[a-z0-9_]+-)*kubepods(?:\.slice)?$")
_KUBELET_DIR = re.compile(r"^kubelet(?:\.slice)?$")

RUNTIMES = {"cri-containerd": "containerd", "crio": "crio", "docker": "docker"}
UNKNOWN_RUNTIME = "unknown"  # cgroupfs driver, bare ID: containerd or Docker, the path does not say


@dataclass(frozen=True, slots=True)
class PodCgroup:
    pod_uid: str
    qos: str  # guaranteed | burstable | besteffort
    path: str  # absolute directory (a str: discovery builds hundreds of these every few seconds)
    cgroup_path: str  # relative to the memory hierarchy's root, as the agent API shows it


@dataclass(frozen=True, slots=True)
class ContainerCgroup:
    pod_uid: str
    container_id: str
    runtime: str  # containerd | crio | docker | unknown
    qos: str
    path: str
    cgroup_path: str


@dataclass
class Discovery:
    pods: dict[str, PodCgroup] = field(default_factory=dict)
    containers: dict[tuple[str, str], ContainerCgroup] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)


def systemd_pod_uid(uid: str) -> str:
    """The form a pod UID takes in a systemd slice name (dashes become underscores)."""
    return uid.replace("-", "_")


def discover(memory_root: Path) -> Discovery:
    """Every pod and container cgroup under ``memory_root`` (the memory hierarchy's root)."""
    found = Discovery()
    for kubepods, rel in _kubepods_dirs(str(memory_root), found.errors):
        for name, path in _subdirs(kubepods, found.errors):
            pod = _POD_DIR.match(name)
            if pod:
                _add_pod(found, pod, "guaranteed", path, f"{rel}/{name}")
                continue
            qos = _QOS_DIR.match(name)
            if qos:
                qos_class = qos.group(1) or qos.group(2)
                for pod_name, pod_path in _subdirs(path, found.errors):
                    pod = _POD_DIR.match(pod_name)
                    if pod:
                        _add_pod(found, pod, qos_class, pod_path, f"{rel}/{name}/{pod_name}")
    return found


def _add_pod(found: Discovery, match: re.Match[str], qos: str, path: str, rel: str) -> None:
    uid = (match.group(1) or match.group(2)).replace("_", "-")
    found.pods[uid] = PodCgroup(uid, qos, path, rel)
    for name, container_path in _subdirs(path, found.errors):
        container = _CONTAINER_DIR.match(name)
        if container is None:
            continue
        runtime = RUNTIMES.get(container.group(1) or "", UNKNOWN_RUNTIME)
        container_id = container.group(2)
        found.containers[(uid, container_id)] = ContainerCgroup(
            uid, container_id, runtime, qos, container_path, f"{rel}/{name}"
        )


def _kubepods_dirs(memory_root: str, errors: dict[str, int]) -> Iterator[tuple[str, str]]:
    for name, path in _subdirs(memory_root, errors):
        if _KUBEPODS_DIR.match(name):
            yield path, name
        elif _KUBELET_DIR.match(name):
            for sub, sub_path in _subdirs(path, errors):
                if _KUBEPODS_DIR.match(sub):
                    yield sub_path, f"{name}/{sub}"


def _subdirs(path: str, errors: dict[str, int]) -> list[tuple[str, str]]:
    """(name, path) of the directories in ``path``; empty (and counted) when it cannot be listed."""
    try:
        with os.scandir(path) as entries:
            return [(e.name, e.path) for e in entries if e.is_dir(follow_symlinks=False)]
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENODEV):
            kind = "vanished"
        elif exc.errno in (errno.EACCES, errno.EPERM):
            kind = "permission"
        else:
            kind = "io"
        errors[kind] = errors.get(kind, 0) + 1
        return []
