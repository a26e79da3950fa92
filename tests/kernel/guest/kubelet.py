"""The node side of `make demo`: a kubelet and ReplicaSet controller in one stand-in (in the guest).

    kubelet.py --api URL --node NAME --workloads FILE --out DIR [--seconds N]

The API server is KMock on the host (reached through QEMU's user network, 10.0.2.2). For
each Deployment of --workloads it does what the Deployment and ReplicaSet controllers and the
kubelet do together, on this node's real cgroups:

- a pod: a ``kubepods-burstable-pod<uid>.slice`` with a ``cri-containerd-<id>.scope`` whose
  ``memory.max`` is the container's limit, the workload's process inside it, and the Pod
  object (uid, node, container ID) created in the API server;
- a rollout when the Deployment's pod template changes (``kubectl rollout restart``, or
  MemoryGuard's restart annotation): a new pod started first, then the old one stopped
  (SIGTERM, ``cgroup.kill``), its cgroups removed and its Pod object deleted;
- Events, as the kubelet posts them: ``Started``, ``Killing``, and ``OOMKilled`` when the
  kernel's OOM killer took a container (``memory.events`` oom_kill) — with the pod's age at
  that moment in the annotation ``demo.memoryguard.io/pod-age-seconds``, timed in this guest;
- the end: once a Deployment is deleted, its pod is stopped; once none is left, it exits.

A container the kernel killed is not started again (a kubelet would, with back-off): the
demo wants to show the kill, not a crash loop. Stdlib only, like everything in the guest
that is not the agent: a Python start costs seconds here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
POD_PARENT = Path("/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice")
AGE_ANNOTATION = "demo.memoryguard.io/pod-age-seconds"
API_TIMEOUT_SECONDS = 10.0
STOP_GRACE_SECONDS = 2.0


class Api:
    """Just enough of the Kubernetes API (JSON over HTTP, no auth: KMock)."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any] | None:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            kind = "application/merge-patch+json" if method == "PATCH" else "application/json"
            request.add_header("Content-Type", kind)
        try:
            with urllib.request.urlopen(request, timeout=API_TIMEOUT_SECONDS) as response:
                text = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        return json.loads(text) if text else {}


@dataclass
class Pod:
    name: str
    uid: str
    container_id: str
    pod_dir: Path
    container_dir: Path
    process: subprocess.Popen[bytes]
    started_monotonic: float
    template_key: str
    exited_monotonic: float | None = None
    stopping: bool = False
    reported: bool = False

    def age(self, at: float | None = None) -> float:
        return (time.monotonic() if at is None else at) - self.started_monotonic


@dataclass
class Workload:
    deployment: str
    replicaset: str
    replicaset_uid: str
    container: str
    limit_mib: int
    command: list[str]
    labels: dict[str, str]
    pod: Pod | None = None
    gone: bool = False
    generation: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


class Kubelet:
    def __init__(self, api: Api, namespace: str, node: str, out: Path) -> None:
        self.api = api
        self.namespace = namespace
        self.node = node
        self.out = out
        self.log = (out / "kubelet.jsonl").open("a", buffering=1)
        self._rv = 1000

    def note(self, kind: str, **fields: Any) -> None:
        self.log.write(json.dumps({"kind": kind, "mono": round(time.monotonic(), 3), **fields}) + "\n")

    def _resource_version(self) -> str:
        # KMock assigns none; Kopf's patches test it, so every object carries one.
        self._rv += 1
        return str(self._rv)

    def event(
        self, pod: Pod, reason: str, message: str, *, age_seconds: float, warning: bool = False
    ) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        name = f"{pod.name}.{time.time_ns():x}"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "resourceVersion": self._resource_version(),
                "annotations": {AGE_ANNOTATION: f"{age_seconds:.2f}"},
            },
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "namespace": self.namespace,
                "name": pod.name,
                "uid": pod.uid,
            },
            "reason": reason,
            "message": message,
            "type": "Warning" if warning else "Normal",
            "source": {"component": "kubelet", "host": self.node},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self.api.call("POST", f"/api/v1/namespaces/{self.namespace}/events", body)

    def start_pod(self, workload: Workload, template_key: str) -> Pod:
        uid = str(uuid.uuid4())
        container_id = os.urandom(32).hex()
        name = f"{workload.replicaset}-{os.urandom(3).hex()[:5]}"
        pod_dir = POD_PARENT / f"kubepods-burstable-pod{uid.replace('-', '_')}.slice"
        pod_dir.mkdir()
        (pod_dir / "cgroup.subtree_control").write_text("+memory")
        container_dir = pod_dir / f"cri-containerd-{container_id}.scope"
        container_dir.mkdir()
        (container_dir / "memory.max").write_text(str(workload.limit_mib * MIB))
        (container_dir / "memory.swap.max").write_text("0")
        (container_dir / "memory.oom.group").write_text("1")  # as kubelet sets it on cgroup v2
        procs = str(container_dir / "cgroup.procs")

        def enter_cgroup() -> None:  # in the child before exec: "0" moves the writer itself
            with open(procs, "w") as f:
                f.write("0")

        log = (self.out / f"{name}.log").open("ab")
        process = subprocess.Popen(
            workload.command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=enter_cgroup,
        )
        pod = Pod(name, uid, container_id, pod_dir, container_dir, process, time.monotonic(), template_key)

        def wait() -> None:
            process.wait()
            pod.exited_monotonic = time.monotonic()

        threading.Thread(target=wait, name=f"wait-{name}", daemon=True).start()
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "uid": uid,
                "resourceVersion": self._resource_version(),
                "labels": dict(workload.labels),
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "ReplicaSet",
                        "name": workload.replicaset,
                        "uid": workload.replicaset_uid,
                        "controller": True,
                    }
                ],
            },
            "spec": {
                "nodeName": self.node,
                "containers": [
                    {
                        "name": workload.container,
                        "image": "node:demo",
                        "command": workload.command,
                        "resources": {"limits": {"memory": f"{workload.limit_mib}Mi"}},
                    }
                ],
            },
            "status": {
                "phase": "Running",
                "podIP": "10.0.2.15",
                "containerStatuses": [
                    {
                        "name": workload.container,
                        "containerID": f"containerd://{container_id}",
                        "ready": True,
                        "restartCount": 0,
                        "image": "node:demo",
                        "imageID": "node:demo",
                        "state": {"running": {}},
                    }
                ],
            },
        }
        self.api.call("POST", f"/api/v1/namespaces/{self.namespace}/pods", body)
        workload.generation += 1
        self.note("started", deployment=workload.deployment, pod=name, uid=uid, container_id=container_id)
        self.event(
            pod, "Started", f"Started container {workload.container} in {container_dir}", age_seconds=0.0
        )
        return pod

    def stop_pod(self, workload: Workload, pod: Pod, why: str, age: float | None = None) -> dict[str, int]:
        """SIGTERM, a grace period, cgroup.kill; cgroups removed, Pod object deleted.

        ``age``: the pod's age when the reason to stop it was seen (default: now)."""
        pod.stopping = pod.exited_monotonic is None
        age = pod.age() if age is None else age
        self.event(
            pod,
            "Killing",
            f"Stopping container {workload.container}: {why} (pod age {age:.0f} s)",
            age_seconds=age,
        )
        if pod.process.poll() is None:
            pod.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):  # cgroup.kill below
                pod.process.wait(STOP_GRACE_SECONDS)
        (pod.container_dir / "cgroup.kill").write_text("1")
        pod.process.wait()
        events = memory_events(pod.container_dir)
        for _ in range(50):  # the kernel needs a moment to empty the cgroup after the kill
            try:
                pod.container_dir.rmdir()
                pod.pod_dir.rmdir()
                break
            except OSError:
                time.sleep(0.1)
        self.api.call("DELETE", f"/api/v1/namespaces/{self.namespace}/pods/{pod.name}")
        self.note(
            "stopped",
            deployment=workload.deployment,
            pod=pod.name,
            age_seconds=round(age, 2),
            why=why,
            events=events,
        )
        return events

    def check_exit(self, workload: Workload, pod: Pod) -> None:
        """A container that died by itself: an OOM kill (memory.events) or a crash."""
        if pod.exited_monotonic is None or pod.stopping or pod.reported:
            return
        pod.reported = True
        events = memory_events(pod.container_dir)
        age = pod.age(pod.exited_monotonic)
        oom = events.get("oom_kill", 0) > 0
        reason = "OOMKilled" if oom else "Error"
        kills = events.get("oom_kill", 0)
        message = (
            f"Container {workload.container} was OOM-killed by the kernel at memory.max "
            f"{workload.limit_mib} MiB (memory.events oom_kill {kills}), pod age {age:.1f} s"
            if oom
            else f"Container {workload.container} exited with code {pod.process.returncode}, age {age:.1f} s"
        )
        self.event(pod, reason, message, age_seconds=age, warning=True)
        status = {
            "status": {
                "phase": "Running",
                "containerStatuses": [
                    {
                        "name": workload.container,
                        "containerID": f"containerd://{pod.container_id}",
                        "ready": False,
                        "restartCount": 0,
                        "image": "node:demo",
                        "imageID": "node:demo",
                        "state": {"terminated": {"reason": reason, "exitCode": pod.process.returncode}},
                    }
                ],
            }
        }
        self.api.call("PATCH", f"/api/v1/namespaces/{self.namespace}/pods/{pod.name}", status)
        self.note(
            "exited", deployment=workload.deployment, pod=pod.name, age_seconds=round(age, 2), oom_kill=oom
        )

    def reconcile(self, workload: Workload) -> None:
        deployment = self.api.call(
            "GET", f"/apis/apps/v1/namespaces/{self.namespace}/deployments/{workload.deployment}"
        )
        if deployment is None:
            if workload.pod is not None:
                self.stop_pod(workload, workload.pod, "Deployment deleted")
                workload.pod = None
            workload.gone = True
            return
        template = (deployment.get("spec") or {}).get("template") or {}
        key = json.dumps((template.get("metadata") or {}).get("annotations") or {}, sort_keys=True)
        if workload.pod is None:
            workload.pod = self.start_pod(workload, key)
        elif workload.pod.template_key != key:
            # A rollout: the new pod first, then the old one goes (maxSurge 1, maxUnavailable 0).
            old = workload.pod
            seen_age = old.age()
            workload.pod = self.start_pod(workload, key)
            self.stop_pod(workload, old, "rollout of a new pod template", age=seen_age)
        self.check_exit(workload, workload.pod)


def memory_events(container_dir: Path) -> dict[str, int]:
    try:
        pairs = (line.split() for line in (container_dir / "memory.events").read_text().splitlines())
        return {key: int(value) for key, value in pairs}
    except OSError:
        return {}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--api", required=True, help="API server URL (KMock on the host)")
    parser.add_argument("--namespace", default="shop")
    parser.add_argument("--node", required=True)
    parser.add_argument("--workloads", type=Path, required=True, help="JSON list written by the demo")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=900.0, help="stop everything after this long")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    kubelet = Kubelet(Api(args.api), args.namespace, args.node, args.out)
    workloads = [Workload(**w) for w in json.loads(args.workloads.read_text())]
    started = time.monotonic()
    kubelet.note("ready", workloads=[w.deployment for w in workloads])
    while not all(w.gone for w in workloads):
        tick = time.monotonic()
        for workload in workloads:
            if not workload.gone:
                try:
                    kubelet.reconcile(workload)
                except (OSError, urllib.error.URLError) as exc:  # the API server may blink
                    kubelet.note("error", deployment=workload.deployment, error=str(exc))
        if time.monotonic() - started > args.seconds:
            for workload in workloads:
                if workload.pod is not None:
                    kubelet.stop_pod(workload, workload.pod, "demo over")
            break
        time.sleep(max(0.05, 1.0 - (time.monotonic() - tick)))
    kubelet.note("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
