"""A node-side stand-in for the operator and the kubelet, for the kernel rig (runs in the guest).

    standin.py --pod-parent DIR --max-mib N [--high-mib N] [--swap-max-mib N]
               --seconds N --out DIR [--rollout-seconds N] [--dry-run]
               [--heap-limit-bytes N] [--drop-caches-at-end LEVEL] -- CMD...
    standin.py --watch CONTAINER_DIR --seconds N --out DIR [--heap-limit-bytes N]

It starts CMD as a "pod": a kubepods-burstable-pod<uid>.slice with a
cri-containerd-<id>.scope under DIR, limits set as kubelet sets them. Then, once a second, it
does what the operator does with the real agent and the real engine: it pulls the pod's samples
from the agent (GET /v1/pods?since_seconds=…), judges them (engine.assess + engine.plan with a
rate limiter) and carries the decision out:

- reclaim: POST /v1/reclaim to the agent, which writes memory.reclaim;
- drop_caches: POST /v1/drop-caches to the agent;
- restart: what a rollout does: a new pod with a fresh container starts, then the old one is
  stopped (SIGTERM, then cgroup.kill) and its cgroups removed, after its final memory.events
  are kept as evidence.

With --dry-run it decides and logs, and executes nothing (the unguarded twin of a scenario);
--watch judges a container someone else started, also without executing anything.
Everything goes to OUT/decisions.jsonl, one JSON object a line, and OUT/summary.json at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from memoryguard.engine.assessment import assess
from memoryguard.engine.decision import Action, Target
from memoryguard.engine.ladder import plan
from memoryguard.engine.limiter import LimiterState, RateLimits, record
from memoryguard.engine.model import Sample
from memoryguard.engine.policy import DropCachesPolicy, Policy

MIB = 1024 * 1024
AGENT_TIMEOUT_SECONDS = 30.0
STOP_GRACE_SECONDS = 2.0
AGENT_STARTUP_SECONDS = 180.0


@dataclasses.dataclass
class Pod:
    uid: str
    container_id: str
    pod_dir: Path
    container_dir: Path
    process: subprocess.Popen[bytes] | None  # None: a watched pod someone else started
    started_monotonic: float
    samples: list[Sample] = dataclasses.field(default_factory=list)


def _write(path: Path, value: str) -> None:
    path.write_text(value)


def start_pod(args: argparse.Namespace, generation: int) -> Pod:
    uid = str(uuid.uuid4())
    container_id = os.urandom(32).hex()
    pod_dir = args.pod_parent / f"kubepods-burstable-pod{uid.replace('-', '_')}.slice"
    pod_dir.mkdir()
    _write(pod_dir / "cgroup.subtree_control", "+memory")
    container_dir = pod_dir / f"cri-containerd-{container_id}.scope"
    container_dir.mkdir()
    _write(container_dir / "memory.max", str(args.max_mib * MIB))
    if args.high_mib is not None:
        _write(container_dir / "memory.high", str(args.high_mib * MIB))
    _write(container_dir / "memory.swap.max", str(args.swap_max_mib * MIB))
    log = (args.out / f"workload-{generation}.log").open("ab")
    procs = str(container_dir / "cgroup.procs")

    def enter_cgroup() -> None:  # runs in the child before exec: "0" moves the writer itself
        with open(procs, "w") as f:
            f.write("0")

    process = subprocess.Popen(
        args.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=enter_cgroup
    )
    return Pod(uid, container_id, pod_dir, container_dir, process, time.monotonic())


def watched_pod(container_dir: Path) -> Pod:
    """A pod started by someone else (run_recorded), judged but never touched."""
    pod_dir = container_dir.parent
    uid = pod_dir.name.removeprefix("kubepods-burstable-pod").removesuffix(".slice").replace("_", "-")
    container_id = container_dir.name.removeprefix("cri-containerd-").removesuffix(".scope")
    return Pod(uid, container_id, pod_dir, container_dir, None, time.monotonic())


def final_events(pod: Pod) -> dict[str, int]:
    pairs = (line.split() for line in (pod.container_dir / "memory.events").read_text().splitlines())
    return {key: int(value) for key, value in pairs}


def stop_pod(pod: Pod) -> dict[str, int]:
    """SIGTERM, a grace period, then cgroup.kill; returns the container's last memory.events."""
    if pod.process is None:
        return final_events(pod)
    if pod.process.poll() is None:
        pod.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):  # cgroup.kill below
            pod.process.wait(STOP_GRACE_SECONDS)
    _write(pod.container_dir / "cgroup.kill", "1")
    pod.process.wait()
    events = final_events(pod)
    for _ in range(50):  # the kernel needs a moment to empty the cgroup after the kill
        try:
            pod.container_dir.rmdir()
            pod.pod_dir.rmdir()
            break
        except OSError:
            time.sleep(0.1)
    return events


def agent_call(agent: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        agent + path, data=data, headers={"Content-Type": "application/json"} if data else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=AGENT_TIMEOUT_SECONDS) as response:
            answer: dict[str, Any] = json.load(response)
    except urllib.error.HTTPError as exc:
        return {"http_status": exc.code, "error": exc.read().decode(errors="replace")}
    answer["http_status"] = 200
    return answer


def wait_for_agent(agent: str, timeout_seconds: float) -> None:
    """The agent may still be importing (slow under TCG): wait for its first completed tick."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            with urllib.request.urlopen(agent + "/healthz", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(
                f"standin: the agent at {agent} did not answer /healthz in {timeout_seconds:.0f} s"
            )
        time.sleep(1)


def pull_samples(agent: str, pod: Pod) -> None:
    since = pod.samples[-1].t_seconds if pod.samples else 0
    answer = agent_call(agent, f"/v1/pods?uid={pod.uid}&since_seconds={since}")
    for pod_answer in answer.get("pods", []):
        for container in pod_answer["containers"]:
            if container["container_id"] != pod.container_id:
                continue
            columns = container["window"]["columns"]
            pod.samples.extend(
                Sample.from_dict(dict(zip(columns, row, strict=True))) for row in container["window"]["rows"]
            )


def build_policy(args: argparse.Namespace) -> Policy:
    policy = Policy(dry_run=args.dry_run).with_rollout_seconds(args.rollout_seconds)
    if args.drop_caches_level:
        policy = dataclasses.replace(
            policy, drop_caches=DropCachesPolicy(enabled=True, level=args.drop_caches_level)
        )
    return policy


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agent", default="http://127.0.0.1:9732")
    parser.add_argument("--pod-parent", type=Path)
    parser.add_argument("--max-mib", type=int)
    parser.add_argument("--high-mib", type=int)
    parser.add_argument("--swap-max-mib", type=int, default=0)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rollout-seconds", type=float, default=20.0)
    parser.add_argument("--heap-limit-bytes", type=int)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--drop-caches-level", type=int, default=0, help="enable drop_caches in the policy")
    parser.add_argument(
        "--drop-caches-at-end", type=int, default=0, help="ask the agent for drop_caches last"
    )
    parser.add_argument("--watch", type=Path, help="judge this container cgroup, started elsewhere (dry run)")
    parser.add_argument("command", nargs="*")
    args = parser.parse_args()
    if bool(args.watch) == bool(args.command):
        parser.error("give either --watch CONTAINER_DIR or a command to start")
    args.dry_run = args.dry_run or bool(args.watch)
    args.out.mkdir(parents=True, exist_ok=True)
    policy = build_policy(args)
    limits = RateLimits.from_policy(policy)
    limiter = LimiterState()
    target = Target(kind="workload", name="deployment/scenario", pod="scenario", container="app")
    decisions = (args.out / "decisions.jsonl").open("a", buffering=1)

    def emit(kind: str, **fields: Any) -> None:
        decisions.write(
            json.dumps({"kind": kind, "t": round(time.monotonic() - started, 2), **fields}) + "\n"
        )

    wait_for_agent(args.agent, AGENT_STARTUP_SECONDS)
    started = time.monotonic()
    generation = 0
    pod = watched_pod(args.watch) if args.watch else start_pod(args, generation)
    emit("start", generation=generation, pod_uid=pod.uid, container_id=pod.container_id, dry_run=args.dry_run)
    generations: list[dict[str, Any]] = []
    while time.monotonic() - started < args.seconds:
        if args.watch and not pod.container_dir.exists():
            break
        time.sleep(max(0.05, 1.0 - (time.monotonic() - started) % 1.0))
        pull_samples(args.agent, pod)
        if not pod.samples:
            continue
        now = pod.samples[-1].t_seconds
        assessment = assess(
            pod.samples, policy, now_seconds=now, runtime_heap_limit_bytes=args.heap_limit_bytes
        )
        decision = plan(assessment, policy, target=target, limiter=limiter, now_seconds=now)
        latest = pod.samples[-1]
        emit(
            "tick",
            generation=generation,
            pod_age_seconds=round(time.monotonic() - pod.started_monotonic, 2),
            verdict=assessment.verdict.value,
            action=decision.action.value,
            wanted=decision.wanted.value,
            blocked_by=decision.blocked_by,
            eta_seconds=assessment.forecast.eta_seconds if assessment.forecast else None,
            anon_bytes=latest.anon_bytes,
            file_bytes=latest.file_bytes,
            oom_kill=latest.oom_kill,
            high_events=latest.high_events,
            swap_fail_events=latest.swap_fail_events,
            psi_some_avg10=latest.psi_some_avg10,
            alive=latest.alive,
            reason=decision.reason,
        )
        if decision.action is Action.NONE or decision.dry_run:
            continue
        limiter = record(
            limiter,
            limits,
            action=decision.action.value,
            target_key=target.limiter_key(decision.action),
            now_seconds=now,
        )
        if decision.action is Action.RECLAIM:
            body = {"pod_uid": pod.uid, "container_id": pod.container_id, "bytes": decision.reclaim_bytes}
            emit("reclaim", generation=generation, answer=agent_call(args.agent, "/v1/reclaim", body))
        elif decision.action is Action.DROP_CACHES:
            emit(
                "drop_caches",
                answer=agent_call(args.agent, "/v1/drop-caches", {"level": decision.drop_caches_level}),
            )
        elif decision.action.disruptive:
            old = pod
            generation += 1
            pod = start_pod(args, generation)
            events = stop_pod(old)
            generations.append({"pod_uid": old.uid, "events": events})
            emit(
                "restart",
                generation=generation,
                old_pod_uid=old.uid,
                new_pod_uid=pod.uid,
                old_pod_age_seconds=round(time.monotonic() - old.started_monotonic, 2),
                eta_seconds=assessment.forecast.eta_seconds if assessment.forecast else None,
                old_events=events,
            )
    if args.drop_caches_at_end:
        emit(
            "drop_caches",
            answer=agent_call(args.agent, "/v1/drop-caches", {"level": args.drop_caches_at_end}),
        )
    if pod.container_dir.exists():
        generations.append({"pod_uid": pod.uid, "events": stop_pod(pod)})
    summary = {
        "generations": generations,
        "lead_seconds": policy.restart.lead_seconds,
        "dry_run": args.dry_run,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    emit("end", oom_kills=sum(g["events"].get("oom_kill", 0) for g in generations))
    return 0


if __name__ == "__main__":
    sys.exit(main())
