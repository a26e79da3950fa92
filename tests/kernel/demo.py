"""Watch MemoryGuard prevent an OOM kill in a real kernel, no cluster needed: ``make demo``.

The kernel rig boots Debian's kernel under QEMU with cgroup v2; that guest is the node. In it
run the real MemoryGuard agent and a kubelet stand-in (``guest/kubelet.py``) that starts three
Deployments' pods in real cgroups, each with ``memory.max`` 256 MiB:

- ``shop-api``: a Node.js service leaking Buffers (3 MiB/s), guarded by MemoryGuard;
- ``shop-api-twin``: the very same service, started at the same moment, not guarded;
- ``catalog``: a service whose file reads fill its limit with page cache, guarded.

Here on the host run KMock (the API server: Deployments, Pods, the MemoryGuard, Events) and
the real operator process (``memoryguard operator``), which reaches the agent through a port
QEMU forwards into the guest. The operator reclaims ``catalog``'s cache through the agent and
rolls ``shop-api`` out by annotating its Deployment's pod template; the kubelet stand-in sees
the new template, starts a fresh pod and stops the old one, as a rollout does. The twin runs
into ``memory.max`` and the kernel kills it.

One line a second with the numbers (from the agent) and the operator's verdicts (from the
MemoryGuard's status); the operator's and the kubelet's Events as they come; then a summary:
what was reclaimed, what was restarted, how long before the twin's OOM kill it came.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import kmock
from tests.kernel.rig import REPO_ROOT, WORK_DIR, GuestRun, Kernel, Rig, RigError, missing_pieces

from memoryguard import annotations as keys

MIB = 1024 * 1024
NAMESPACE = "shop"
AGENT_NAMESPACE = "memoryguard-system"
NODE = "mg-guest"
GUARDS = "memoryguard.io/v1alpha1/memoryguards"
GUARD = "shop-memory"
GUARDED_LABEL = "memoryguard-demo"
AGE_ANNOTATION = "demo.memoryguard.io/pod-age-seconds"  # written by guest/kubelet.py
BATCH = "demo"
LIMIT_MIB = 256
LEAK_MIB_PER_SECOND = 3
ROLLOUT_SECONDS = 20
AGENT_STARTUP_SECONDS = 600.0  # the agent's imports take a minute or more under TCG
DEMO_SECONDS = 600.0  # the whole show, at most; it normally ends well before
AFTER_TWIN_KILL_SECONDS = 10.0  # keep watching the restarted pod for a while after the kill
GUEST_TIMEOUT_SECONDS = 1200.0
LEAK_JS = REPO_ROOT / "tests" / "kernel" / "workloads" / "leak.js"
CACHE_FILE = "/mnt/mgdata/catalog.bin"


@dataclass(frozen=True)
class Workload:
    deployment: str
    role: str  # the column title in the live log
    guarded: bool
    command: list[str]

    @property
    def replicaset(self) -> str:
        return f"{self.deployment}-6b8d9c7f5"


WORKLOADS = (
    Workload(
        "shop-api",
        "leak",
        True,
        ["node", str(LEAK_JS), "--store", "buffer", "--rate-mib", str(LEAK_MIB_PER_SECOND)],
    ),
    Workload(
        "shop-api-twin",
        "twin",
        False,
        ["node", str(LEAK_JS), "--store", "buffer", "--rate-mib", str(LEAK_MIB_PER_SECOND)],
    ),
    Workload(
        "catalog",
        "cache",
        True,
        [
            "sh",
            "-c",
            f"while true; do cat {CACHE_FILE} >/dev/null; sleep 2; done & exec node {LEAK_JS} --rate-mib 0",
        ],
    ),
)

GUARD_SPEC = {
    "selector": {"matchLabels": {GUARDED_LABEL: "guarded"}},
    "forecast": {"window": "5m", "horizon": "10m", "minSamples": 20},
    "thresholds": {"warn": "80%", "act": "90%"},
    "actions": {
        "reclaim": {"enabled": True, "cooldown": "30s", "minReclaimable": "16Mi"},
        "dropCaches": {"enabled": False},
        "restart": {"enabled": True, "cooldown": "10m", "maxPerHour": 2, "rolloutSeconds": ROLLOUT_SECONDS},
        "evict": {"enabled": True},
    },
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the API server --------------------------------------------------------------------------


class Cluster:
    """The demo's objects in KMock, and what became of them."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self._rv = 100

    def _meta(self, name: str, namespace: str, **extra: Any) -> dict[str, Any]:
        # KMock assigns no resourceVersion or uid: Kopf's finalizer patch needs the first.
        self._rv += 1
        return {
            "name": name,
            "namespace": namespace,
            "uid": str(uuid.uuid4()),
            "resourceVersion": str(self._rv),
            **extra,
        }

    def populate(self, agent_port: int) -> list[dict[str, Any]]:
        """Deployments and ReplicaSets, the MemoryGuard and the agent's pod; returns what the
        kubelet stand-in needs to start each Deployment's pods."""
        self.api.resources.load_bundled()
        self.api.resources[GUARDS] = {
            "kind": "MemoryGuard",
            "singular": "memoryguard",
            "namespaced": True,
            "shortnames": {"mg"},
            "verbs": {"get", "list", "watch", "create", "patch", "update", "delete"},
            "subresources": {"status"},
        }
        kubelet_workloads = []
        for w in WORKLOADS:
            labels = {"app": w.deployment, GUARDED_LABEL: "guarded" if w.guarded else "off"}
            template = {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "node:demo", "command": w.command}]},
            }
            deployment: dict[str, Any] = {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": self._meta(w.deployment, NAMESPACE, generation=1, labels=labels),
                "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": template},
                "status": {
                    "observedGeneration": 1,
                    "replicas": 1,
                    "updatedReplicas": 1,
                    "readyReplicas": 1,
                    "availableReplicas": 1,
                },
            }
            owner = {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": w.deployment,
                "uid": deployment["metadata"]["uid"],
                "controller": True,
            }
            replicaset: dict[str, Any] = {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": self._meta(w.replicaset, NAMESPACE, labels=labels, ownerReferences=[owner]),
                "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": template},
            }
            self.api.objects["apps/v1/deployments", NAMESPACE, w.deployment] = deployment
            self.api.objects["apps/v1/replicasets", NAMESPACE, w.replicaset] = replicaset
            kubelet_workloads.append(
                {
                    "deployment": w.deployment,
                    "replicaset": w.replicaset,
                    "replicaset_uid": replicaset["metadata"]["uid"],
                    "container": "app",
                    "limit_mib": LIMIT_MIB,
                    "command": w.command,
                    "labels": labels,
                }
            )
        self.api.objects[GUARDS, NAMESPACE, GUARD] = {
            "apiVersion": "memoryguard.io/v1alpha1",
            "kind": "MemoryGuard",
            "metadata": self._meta(GUARD, NAMESPACE, generation=1),
            "spec": GUARD_SPEC,
        }
        agent_pod = f"memoryguard-agent-{NODE}"
        self.api.objects["v1/pods", AGENT_NAMESPACE, agent_pod] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": self._meta(agent_pod, AGENT_NAMESPACE, labels=dict(keys.DEFAULT_AGENT_LABELS)),
            "spec": {
                "nodeName": NODE,
                "containers": [
                    {
                        "name": "agent",
                        "image": "memoryguard",
                        "ports": [{"name": keys.AGENT_PORT_NAME, "containerPort": agent_port}],
                    }
                ],
            },
            # The operator reaches the agent at podIP:port: QEMU forwards that port into the guest.
            "status": {"phase": "Running", "podIP": "127.0.0.1"},
        }
        return kubelet_workloads

    def pods(self) -> dict[str, dict[str, Any]]:
        """Pod name -> Pod object, for the demo's namespace (deleted pods left out)."""
        pods = {}
        for key, obj in list(self.api.objects.items()):
            if key[0] != kmock.resource("v1/pods") or key[1] != NAMESPACE:
                continue
            with contextlib.suppress(ValueError):  # soft-deleted: KMock keeps only its history
                pods[key[2]] = dict(obj.raw)
        return pods

    def guard_status(self) -> dict[str, Any]:
        return dict(self.api.objects[GUARDS, NAMESPACE, GUARD].raw.get("status") or {})

    def events(self) -> list[dict[str, Any]]:
        """Every Event posted so far (the operator's and the kubelet's), oldest first."""
        return [
            r.data
            for r in list(self.api)
            if r.method == "POST" and r.resource == kmock.resource("v1/events") and isinstance(r.data, dict)
        ]

    async def delete_deployments(self) -> None:
        """As `kubectl delete deployment`: the kubelet stand-in stops their pods and exits."""
        async with aiohttp.ClientSession() as session:
            for w in WORKLOADS:
                url = f"{self.api.url}/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{w.deployment}"
                async with session.delete(url) as response:
                    await response.read()


# --- the guest -------------------------------------------------------------------------------


def guest_job(kmock_port: int, workloads: list[dict[str, Any]]) -> str:
    """The node: data disk, the agent on all interfaces (the operator comes in through QEMU's
    port forward), then the kubelet stand-in talking to KMock on the host (10.0.2.2)."""
    return f"""set -u
export MG_REPO={REPO_ROOT}
. "$MG_REPO/tests/kernel/guest/lib.sh"
node_setup 0
AGENT_LISTEN=0.0.0.0:9732 start_agent agent.log
make_data_file catalog.bin 320
cat >workloads.json <<'EOF'
{json.dumps(workloads, indent=1)}
EOF
wait_for_agent
log "agent ready"
"$GUEST_PYTHON" "$MG_REPO/tests/kernel/guest/kubelet.py" --api http://10.0.2.2:{kmock_port} \\
  --namespace {NAMESPACE} --node {NODE} --workloads workloads.json --out kubelet \\
  --seconds {DEMO_SECONDS:.0f} >kubelet.log 2>&1
log "kubelet stand-in done"
agent_status agent.status
kill "$(cat agent.pid)"
dmesg >dmesg.log
"""


# --- the live log ----------------------------------------------------------------------------


CELL_CHARS = 48


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / MIB:.0f}M"


@dataclass
class Show:
    """What the demo saw, for the live log and the summary."""

    started: float = field(default_factory=time.monotonic)
    events_seen: int = 0
    ledger_seen: set[str] = field(default_factory=set)
    restart_seen_age: float | None = None  # the guarded pod's age when its rollout began
    twin_kill_age: float | None = None  # the twin's age when the kernel killed it
    twin_killed_at: float | None = None
    guarded_oom_kills: int = 0

    def clock(self) -> str:
        return f"[{time.monotonic() - self.started:5.0f}s]"


def workload_of(pod_name: str) -> Workload | None:
    # Longest name first: "shop-api-twin-…" must not be taken for "shop-api-…".
    for w in sorted(WORKLOADS, key=lambda w: -len(w.deployment)):
        if pod_name.startswith(w.replicaset + "-"):
            return w
    return None


def tick_line(show: Show, agent_pods: dict[str, dict[str, Any]], cluster: Cluster) -> str:
    """One line: each workload's anon and file memory (the agent's latest sample) and the
    operator's verdict with its forecast (the MemoryGuard's status lists the pods at risk)."""
    at_risk = {row.get("pod"): row for row in cluster.guard_status().get("atRisk") or ()}
    by_workload: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, pod in cluster.pods().items():
        w = workload_of(name)
        if w is not None and pod["metadata"]["uid"] in agent_pods:
            by_workload[w.deployment] = (name, agent_pods[pod["metadata"]["uid"]])
    cells = []
    for w in sorted(WORKLOADS, key=lambda w: not w.guarded):  # the twin last: its cell is short
        if w.role == "twin" and show.twin_kill_age is not None:
            cells.append(f"twin  OOM-KILLED at age {show.twin_kill_age:.0f}s")
            continue
        if w.deployment not in by_workload:
            cells.append(f"{w.role:<5} (no pod)".ljust(CELL_CHARS))
            continue
        name, container = by_workload[w.deployment]
        latest = container.get("latest") or {}
        anon, file = _mib(latest.get("anon_bytes")), _mib(latest.get("file_bytes"))
        numbers = f"{w.role:<5} anon={anon:>5} file={file:>5}"
        row = at_risk.get(name)
        if not w.guarded:
            judged = ""
        elif row is None:
            judged = "ok"
        else:
            eta = row.get("etaSeconds")
            judged = f"{row.get('verdict')}" + (f" eta={eta}s" if eta is not None else "")
        cells.append(f"{numbers} {judged}".ljust(CELL_CHARS))
    return f"{show.clock()} " + " | ".join(cells).rstrip()


def event_lines(show: Show, cluster: Cluster) -> list[str]:
    events = cluster.events()
    fresh, show.events_seen = events[show.events_seen :], len(events)
    lines = []
    for e in fresh:
        reason = e.get("reason", "")
        involved = e.get("involvedObject") or {}
        source = (e.get("source") or {}).get("component") or e.get("reportingComponent") or "?"
        message = e.get("message", "")
        if involved.get("kind") == "MemoryGuard" and message.startswith("pod "):
            continue  # the guard's copy of an Event also posted on the pod
        age = float(((e.get("metadata") or {}).get("annotations") or {}).get(AGE_ANNOTATION, "nan"))
        w = workload_of(str(involved.get("name", "")))
        if reason == "Killing" and w is not None and w.role == "leak" and show.restart_seen_age is None:
            show.restart_seen_age = age
        elif reason == "OOMKilled" and w is not None:
            if w.role == "twin":
                show.twin_kill_age = age
                show.twin_killed_at = time.monotonic()
            else:
                show.guarded_oom_kills += 1
        if reason in ("Started",):
            continue
        lines.append(f"{show.clock()} >>> {source}: {reason} {involved.get('name', '')}: {message}")
    return lines


def ledger_lines(show: Show, cluster: Cluster) -> list[str]:
    """What the agent answered to each finished reclaim, from the MemoryGuard's ledger (its
    Events say what was asked; the ledger keeps what the kernel freed)."""
    lines = []
    for entry in cluster.guard_status().get("ledger") or ():
        if (
            entry.get("action") != "reclaim"
            or entry.get("state") != "done"
            or entry["id"] in show.ledger_seen
        ):
            continue
        show.ledger_seen.add(entry["id"])
        freed = re.search(r"reclaimed (\d+) of (\d+) bytes", entry.get("message", ""))
        if freed:
            got, asked = int(freed.group(1)) / MIB, int(freed.group(2)) / MIB
            lines.append(
                f"{show.clock()} >>> memory.reclaim in {entry.get('pod')}: the kernel freed "
                f"{got:.1f} MiB of page cache (asked {asked:.1f} MiB)"
            )
    return lines


async def agent_pods(session: aiohttp.ClientSession, url: str) -> dict[str, dict[str, Any]]:
    """Pod UID -> its (first) container as the agent serves it, latest sample only."""
    async with session.get(f"{url}/v1/pods?window_seconds=0", timeout=aiohttp.ClientTimeout(total=10)) as r:
        answer = await r.json()
    return {p["pod_uid"]: p["containers"][0] for p in answer.get("pods", []) if p.get("containers")}


def summary(show: Show, ledger: list[dict[str, Any]]) -> list[str]:
    """From the MemoryGuard's own ledger (status) and what the kubelet stand-in reported."""
    lines = ["", "=== summary ==="]
    done = [e for e in ledger if e.get("state") == "done"]
    reclaims = [e for e in done if e.get("action") == "reclaim"]
    freed = [re.search(r"reclaimed (\d+) of (\d+) bytes", e.get("message", "")) for e in reclaims]
    freed_bytes = sum(int(m.group(1)) for m in freed if m)
    asked_bytes = sum(int(m.group(2)) for m in freed if m)
    targets = sorted({e.get("pod", "?") for e in reclaims})
    lines.append(
        f"reclaimed: {freed_bytes / MIB:.1f} MiB of page cache (asked {asked_bytes / MIB:.1f} MiB) in "
        f"{len(reclaims)} memory.reclaim write(s) through the agent, from {', '.join(targets)}"
        if reclaims
        else "reclaimed: nothing"
    )
    restarts = [e for e in done if e.get("action") == "restart"]
    for e in restarts:
        lines.append(f"restarted: {e.get('target')} (pod {e.get('pod')}): {e.get('reason')}")
    if not restarts:
        lines.append("restarted: nothing")
    failed = [e for e in ledger if e.get("state") == "failed"]
    for e in failed:
        lines.append(f"FAILED: {e.get('action')} {e.get('target')}: {e.get('message')}")
    if show.twin_kill_age is not None:
        lines.append(f"the unguarded twin was OOM-killed by the kernel at age {show.twin_kill_age:.0f} s")
    if show.restart_seen_age is not None and show.twin_kill_age is not None:
        lead = show.twin_kill_age - show.restart_seen_age
        lines.append(
            f"=> shop-api was rolled out at age {show.restart_seen_age:.0f} s, {lead:.0f} s before the "
            f"OOM kill would have come (rollout budget {ROLLOUT_SECONDS} s); "
            f"guarded pods OOM-killed: {show.guarded_oom_kills}"
        )
    return lines


# --- the show --------------------------------------------------------------------------------


async def wait_for_agent(session: aiohttp.ClientSession, url: str, guest: threading.Thread) -> bool:
    deadline = time.monotonic() + AGENT_STARTUP_SECONDS
    while time.monotonic() < deadline and guest.is_alive():
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with session.get(f"{url}/healthz", timeout=aiohttp.ClientTimeout(total=5)) as r:
                if r.status == 200:
                    return True
        await asyncio.sleep(2)
    return False


def start_operator(kmock_url: str, log_path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            str(REPO_ROOT / ".venv" / "bin" / "memoryguard"), "operator", "--standalone",
            "-n", NAMESPACE, "-n", AGENT_NAMESPACE, "--agent-namespace", AGENT_NAMESPACE,
            "--api-server", kmock_url, "--no-agent-auth", "--metrics-port", "0", "--liveness", "",
            "--agent-timeout-seconds", "5", "--status-refresh-seconds", "2",
        ],
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=REPO_ROOT,
    )  # fmt: skip


async def show_time(rig: Rig) -> int:
    agent_port = free_port()
    run_dir = WORK_DIR / "runs" / BATCH
    async with kmock.KubernetesEmulator() as api, kmock.Server(api):
        cluster = Cluster(api)
        workloads = cluster.populate(agent_port)
        kmock_port = api.url.port
        assert kmock_port is not None
        outcome: dict[str, Any] = {}

        def boot() -> None:
            try:
                outcome["run"] = rig.boot(
                    BATCH,
                    guest_job(kmock_port, workloads),
                    GUEST_TIMEOUT_SECONDS,
                    forwards={agent_port: 9732},
                )
            except RigError as exc:
                outcome["error"] = exc

        guest = threading.Thread(target=boot, name="guest", daemon=True)
        guest.start()
        agent_url = f"http://127.0.0.1:{agent_port}"
        show = Show()
        operator: subprocess.Popen[bytes] | None = None
        async with aiohttp.ClientSession() as session:
            print(f"{show.clock()} guest booting; waiting for the agent (a minute or two under TCG) ...")
            if not await wait_for_agent(session, agent_url, guest):
                print("the agent never answered; see " + str(run_dir / "agent.log"), file=sys.stderr)
                return 1
            print(f"{show.clock()} agent up in the guest at {agent_url}; starting the operator against KMock")
            operator = start_operator(str(api.url), run_dir / "operator.log")
            try:
                while guest.is_alive():
                    await asyncio.sleep(1)
                    for line in event_lines(show, cluster) + ledger_lines(show, cluster):
                        print(line, flush=True)
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError, KeyError):
                        print(tick_line(show, await agent_pods(session, agent_url), cluster), flush=True)
                    over = show.twin_killed_at is not None and (
                        time.monotonic() - show.twin_killed_at >= AFTER_TWIN_KILL_SECONDS
                    )
                    if over or time.monotonic() - show.started > DEMO_SECONDS:
                        print(f"{show.clock()} deleting the Deployments: the kubelet stand-in stops the pods")
                        await cluster.delete_deployments()
                        break
                while guest.is_alive():  # the guest powers off once its kubelet is done
                    await asyncio.sleep(1)
            finally:
                if operator is not None:
                    operator.terminate()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        operator.wait(15)
                    if operator.poll() is None:
                        operator.kill()
        for line in event_lines(show, cluster):
            print(line)
        ledger = list(cluster.guard_status().get("ledger") or ())
    if "error" in outcome:
        print(f"the guest failed: {outcome['error']}", file=sys.stderr)
        return 1
    run: GuestRun = outcome["run"]
    print("\n".join(summary(show, ledger)))
    print(f"\n(guest {run.wall_seconds:.0f} s; logs in {run.run_dir})")
    restarted = any(e.get("action") == "restart" and e.get("state") == "done" for e in ledger)
    return 0 if restarted and show.twin_kill_age is not None and not show.guarded_oom_kills else 1


def main() -> int:
    missing = missing_pieces()
    if missing:
        print("make demo needs: " + "; ".join(missing) + " (run `make install` as root)", file=sys.stderr)
        return 2
    kernel = Kernel.unpacked()
    assert kernel is not None
    rig = Rig(kernel, memory_mib=3072)
    rig.prepare()
    print(
        f"MemoryGuard demo: Debian {kernel.release} under QEMU (TCG), cgroup v2; KMock + the operator on "
        "this host, the agent and three pods in the guest (memory.max 256 MiB each):\n"
        f"  leak  = shop-api, Node.js leaking Buffers at {LEAK_MIB_PER_SECOND} MiB/s, guarded\n"
        "  twin  = shop-api-twin, the same service started at the same moment, NOT guarded\n"
        "  cache = catalog, reads a 320 MiB file in a loop (page cache), guarded\n"
        "a line a second: anon and file memory (the agent's latest sample), the operator's verdict and\n"
        "forecast (eta = seconds until memory.max); >>> lines: Events of the operator and the kubelet"
    )
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return asyncio.run(show_time(rig))


if __name__ == "__main__":
    sys.exit(main())
