"""A node-side stand-in for the operator and the kubelet, for the kernel rig (runs in the guest).

    standin.py --pod-parent DIR --max-mib N [--high-mib N] [--swap-max-mib N]
               --seconds N --out DIR [--rollout-seconds N] [--dry-run]
               [--after-restart-seconds N] [--after-reclaim-seconds N] [--heap-limit-bytes N]
               [--drop-caches-at-end LEVEL] [--ready-file F] [--go-file F]
               [--record-trace --workload TEXT] -- CMD...
    standin.py --watch CONTAINER_DIR --seconds N --out DIR [--heap-limit-bytes N] [--ready-file F]

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

It stops after --seconds at most; earlier once the process it started died and nothing will
restart it (a dry run: the twin was killed), or --after-restart-seconds after a restart (the
fresh pod has been seen running), or --after-reclaim-seconds after a reclaim (what followed it
has been seen). Every entry carries ``mono``, this guest's CLOCK_MONOTONIC:
the stand-ins of one batch run side by side, so their entries can be put in one order — the
restart of one pod against the OOM kill of its twin — without trusting any wall-clock pace.
The exit of a started process is timed by a thread waiting on it, not by the next tick.
Under TCG a Python start costs seconds of CPU, so a batch's stand-ins would otherwise start
their pods one by one, each under a different load: once its imports are done and the agent
answers, a stand-in writes --ready-file, then waits for --go-file (the job's barrier) before it
starts its pod. Its clock (``t``, ``--seconds``) starts at the go.
Everything goes to OUT/decisions.jsonl, one JSON object a line, and OUT/summary.json at the end.

With --record-trace the first pod is recorded as every other scenario is (lib.sh run_recorded):
its process is held at a gate inside its cgroup, ``memoryguard record`` is started on the
container and writes its first row, and only then (after the go) is the process released, so
the trace (OUT/record.csv) starts with the container. The recording stops with that pod: at a
restart (the rollout stops it: the trace's last row has ``alive`` 0, and OUT/standin.outcome
says it was MemoryGuard, not a failure), or at the end, before the pod is stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import signal
import subprocess
import sys
import threading
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
AGENT_STARTUP_SECONDS = 300.0
GO_TIMEOUT_SECONDS = 600.0
RECORD_LINGER_SECONDS = 3  # as lib.sh's run_recorded
RECORD_FIRST_ROW_SECONDS = 300.0  # `memoryguard record` imports for a while under TCG
RECORD_STOP_SECONDS = 30.0


@dataclasses.dataclass
class Pod:
    uid: str
    container_id: str
    pod_dir: Path
    container_dir: Path
    process: subprocess.Popen[bytes] | None  # None: a watched pod someone else started
    started_monotonic: float
    samples: list[Sample] = dataclasses.field(default_factory=list)
    exited_monotonic: float | None = None  # set by the waiter thread the moment the process died
    exit_reported: bool = False
    stopping: bool = False  # the stand-in is stopping it (a restart): its death is no failure
    gate: int | None = None  # write end of the pipe a held process waits on (start_pod held=True)

    def release(self) -> None:
        """Lets a held process exec its command; its age counts from now."""
        if self.gate is None:
            return
        with contextlib.suppress(BrokenPipeError):  # the held shell is gone: watch_exit sees it
            os.write(self.gate, b"go\n")
        os.close(self.gate)
        self.gate = None
        self.started_monotonic = time.monotonic()

    def watch_exit(self) -> None:
        process = self.process
        if process is None:
            return

        def wait() -> None:
            process.wait()
            self.exited_monotonic = time.monotonic()

        threading.Thread(target=wait, name=f"wait-{self.uid[:8]}", daemon=True).start()


def _write(path: Path, value: str) -> None:
    path.write_text(value)


def start_pod(args: argparse.Namespace, generation: int, held: bool = False) -> Pod:
    """A fresh pod running the command; ``held``: the process waits in its cgroup (a shell
    reading its stdin, a pipe) until ``Pod.release``, so a recorder sees it from the start."""
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
    _write(container_dir / "memory.oom.group", "1")  # as kubelet sets it on cgroup v2 (1.28+)
    log = (args.out / f"workload-{generation}.log").open("ab")
    procs = str(container_dir / "cgroup.procs")

    def enter_cgroup() -> None:  # runs in the child before exec: "0" moves the writer itself
        with open(procs, "w") as f:
            f.write("0")

    command: list[str] = args.command
    stdin: int = subprocess.DEVNULL
    gate_read = gate_write = None
    if held:
        # Blocking in preexec_fn would block Popen itself (it waits for the exec): a shell in
        # the cgroup waits instead, and execs the command with the workload's usual stdin.
        gate_read, gate_write = os.pipe()
        command = ["sh", "-c", 'read -r _; exec "$@" </dev/null', "sh", *command]
        stdin = gate_read
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, stdin=stdin, preexec_fn=enter_cgroup
    )
    if gate_read is not None:
        os.close(gate_read)
    pod = Pod(uid, container_id, pod_dir, container_dir, process, time.monotonic(), gate=gate_write)
    pod.watch_exit()
    return pod


def start_recorder(args: argparse.Namespace, pod: Pod) -> subprocess.Popen[bytes]:
    """``memoryguard record`` on the pod's container, with run_recorded's metadata."""
    memoryguard = Path(sys.executable).with_name("memoryguard")
    acting = (
        "none: dry run, the engine's decisions were logged and nothing was carried out"
        if args.dry_run
        else "carried out while recording (reclaim through the agent, restart as a rollout): "
        "the trace shows MemoryGuard's effect, it is no open-loop trace for bench"
    )
    meta = [
        f"workload={args.workload}",
        f"kernel=Debian {platform.release()}, cgroup v2, recorded in QEMU (TCG) by tests/kernel",
        f"memory_max_bytes={args.max_mib * MIB}",
        f"memoryguard_actions={acting}",
    ]
    if args.high_mib is not None:
        meta.append(f"memory_high_bytes={args.high_mib * MIB}")
    if args.heap_limit_bytes:
        meta.append(f"runtime_heap_limit_bytes={args.heap_limit_bytes}")
    command = [str(memoryguard), "record", str(pod.container_dir), "-o", str(args.out / "record.csv")]
    command += [
        "--interval",
        "1",
        "--linger",
        str(RECORD_LINGER_SECONDS),
        "--seconds",
        str(args.seconds + 60),
    ]
    for item in meta:
        command += ["--meta", item]
    log = (args.out / "record.log").open("ab")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def wait_for_first_row(trace: Path, recorder: subprocess.Popen[bytes]) -> None:
    """The header and one data row written: the recorder is watching."""
    deadline = time.monotonic() + RECORD_FIRST_ROW_SECONDS
    while True:
        with contextlib.suppress(FileNotFoundError):
            rows = [line for line in trace.read_text().splitlines() if line and not line.startswith("#")]
            if len(rows) >= 2:
                return
        if recorder.poll() is not None:
            raise SystemExit(f"standin: memoryguard record exited {recorder.returncode} (see record.log)")
        if time.monotonic() > deadline:
            raise SystemExit(f"standin: memoryguard record wrote no row in {RECORD_FIRST_ROW_SECONDS:.0f} s")
        time.sleep(0.2)


def stop_recorder(recorder: subprocess.Popen[bytes]) -> None:
    """Ctrl-C, as a person ends a recording (it keeps every row); it may have ended already."""
    if recorder.poll() is None:
        recorder.send_signal(signal.SIGINT)
    try:
        recorder.wait(RECORD_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        recorder.kill()
        recorder.wait()


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
    pod.stopping = True
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


def wait_for_file(path: Path, timeout_seconds: float) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"standin: {path} did not appear in {timeout_seconds:.0f} s")
        time.sleep(0.1)


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
    parser.add_argument(
        "--after-restart-seconds",
        type=float,
        help="stop this long after the first restart (the fresh pod seen running)",
    )
    parser.add_argument("--after-reclaim-seconds", type=float, help="stop this long after the first reclaim")
    parser.add_argument("--heap-limit-bytes", type=int)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--drop-caches-level", type=int, default=0, help="enable drop_caches in the policy")
    parser.add_argument(
        "--drop-caches-at-end", type=int, default=0, help="ask the agent for drop_caches last"
    )
    parser.add_argument("--watch", type=Path, help="judge this container cgroup, started elsewhere (dry run)")
    parser.add_argument("--ready-file", type=Path, help="written once imported and the agent answers")
    parser.add_argument("--go-file", type=Path, help="wait for this file before starting (a barrier)")
    parser.add_argument(
        "--record-trace", action="store_true", help="record the first pod with `memoryguard record`"
    )
    parser.add_argument("--workload", default="", help="the trace's workload line (with --record-trace)")
    parser.add_argument("command", nargs="*")
    args = parser.parse_args()
    if bool(args.watch) == bool(args.command):
        parser.error("give either --watch CONTAINER_DIR or a command to start")
    if args.record_trace and (args.watch or not args.workload):
        parser.error("--record-trace records a pod this stand-in starts, and needs --workload")
    args.dry_run = args.dry_run or bool(args.watch)
    args.out.mkdir(parents=True, exist_ok=True)
    policy = build_policy(args)
    limits = RateLimits.from_policy(policy)
    limiter = LimiterState()
    target = Target(kind="workload", name="deployment/scenario", pod="scenario", container="app")
    decisions = (args.out / "decisions.jsonl").open("a", buffering=1)

    def emit(kind: str, **fields: Any) -> None:
        mono = time.monotonic()
        entry = {"kind": kind, "t": round(mono - started, 2), "mono": round(mono, 3), **fields}
        decisions.write(json.dumps(entry) + "\n")

    def report_exit(pod: Pod) -> None:
        """The started process died on its own (not stopped by a restart): when, and how."""
        if pod.exited_monotonic is None or pod.exit_reported or pod.stopping:
            return
        pod.exit_reported = True
        events = final_events(pod)
        emit(
            "exit",
            generation=generation,
            pod_uid=pod.uid,
            exited_mono=round(pod.exited_monotonic, 3),
            pod_age_seconds=round(pod.exited_monotonic - pod.started_monotonic, 2),
            returncode=pod.process.returncode if pod.process else None,
            oom_kill=events.get("oom_kill", 0),
            oom_group_kill=events.get("oom_group_kill", 0),
        )

    wait_for_agent(args.agent, AGENT_STARTUP_SECONDS)
    generation = 0
    held: Pod | None = None
    recorder: subprocess.Popen[bytes] | None = None
    if args.record_trace:
        held = start_pod(args, generation, held=True)
        recorder = start_recorder(args, held)
        wait_for_first_row(args.out / "record.csv", recorder)
    if args.ready_file:
        args.ready_file.write_text("ready\n")
    if args.go_file:
        wait_for_file(args.go_file, GO_TIMEOUT_SECONDS)
    started = time.monotonic()
    if held is not None:
        held.release()
        pod = held
    else:
        pod = watched_pod(args.watch) if args.watch else start_pod(args, generation)
    emit(
        "start",
        generation=generation,
        pod_uid=pod.uid,
        container_id=pod.container_id,
        dry_run=args.dry_run,
        pod_started_mono=round(pod.started_monotonic, 3),
    )
    generations: list[dict[str, Any]] = []
    restarted_mono: float | None = None
    reclaimed_mono: float | None = None
    ticks_after_exit = 0
    while time.monotonic() - started < args.seconds:
        if args.watch and not pod.container_dir.exists():
            break
        since_restart = math.inf if restarted_mono is None else time.monotonic() - restarted_mono
        since_reclaim = math.inf if reclaimed_mono is None else time.monotonic() - reclaimed_mono
        if since_restart < math.inf and since_restart >= (args.after_restart_seconds or math.inf):
            break
        if since_reclaim < math.inf and since_reclaim >= (args.after_reclaim_seconds or math.inf):
            break
        report_exit(pod)
        if pod.exit_reported:
            # Nothing restarts a dead pod here: a few more ticks show the agent's view of it.
            ticks_after_exit += 1
            if ticks_after_exit > 3:
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
            reclaimed_mono = reclaimed_mono or time.monotonic()
        elif decision.action is Action.DROP_CACHES:
            emit(
                "drop_caches",
                answer=agent_call(args.agent, "/v1/drop-caches", {"level": decision.drop_caches_level}),
            )
        elif decision.action.disruptive:
            decided_mono = time.monotonic()
            old = pod
            generation += 1
            pod = start_pod(args, generation)
            events = stop_pod(old)
            generations.append({"pod_uid": old.uid, "events": events})
            if restarted_mono is None and recorder is not None:
                # The recorded pod was stopped by the rollout: its trace ends there, alive 0.
                age = decided_mono - old.started_monotonic
                (args.out / "standin.outcome").write_text(
                    f"# outcome: restarted by MemoryGuard at pod age {age:.1f} s "
                    f"(a rollout: fresh pod started, this one stopped), no kernel OOM kill "
                    f"(oom_kill {events.get('oom_kill', 0)}); the trace ends with the stopped pod\n"
                )
            restarted_mono = restarted_mono or decided_mono
            emit(
                "restart",
                generation=generation,
                old_pod_uid=old.uid,
                new_pod_uid=pod.uid,
                new_container_id=pod.container_id,
                decided_mono=round(decided_mono, 3),
                decided_pod_age_seconds=round(decided_mono - old.started_monotonic, 2),
                old_pod_age_seconds=round(time.monotonic() - old.started_monotonic, 2),
                eta_seconds=assessment.forecast.eta_seconds if assessment.forecast else None,
                old_events=events,
            )
    if args.drop_caches_at_end:
        emit(
            "drop_caches",
            answer=agent_call(args.agent, "/v1/drop-caches", {"level": args.drop_caches_at_end}),
        )
    report_exit(pod)
    if recorder is not None:
        stop_recorder(recorder)  # before the pod is stopped: stopping it is no outcome of the workload
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
