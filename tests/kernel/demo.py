"""Watch MemoryGuard prevent an OOM kill in a real kernel, no cluster needed: ``make demo``.

Boots the kernel rig (QEMU, cgroup v2) with the real MemoryGuard agent on the guest "node" and
three pods: a Node.js service leaking Buffers with MemoryGuard acting, its identical twin that
MemoryGuard only watches, and a service whose file reads fill its limit with page cache. The
engine judges each pod once a second from what the agent serves; a node-side stand-in carries
its decisions out (memory.reclaim through the agent; a restart as a rollout does it: a fresh
pod, then the old one stopped). One line per pod per tick, then a summary.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.kernel.rig import WORK_DIR, Kernel, Rig, RigError, missing_pieces, scenario_job

MIB = 1024 * 1024
PODS = {"guarded-leak": "leak", "leak-unguarded": "twin", "guarded-page-cache": "cache"}
BATCH = "demo"


def _mib(value: float | None) -> str:
    return "     -" if value is None else f"{value / MIB:6.1f}"


def tick_line(pod: str, entry: dict[str, Any]) -> str:
    eta = entry.get("eta_seconds")
    eta_text = f"{eta:5.0f}s" if eta is not None else "     -"
    action = entry["action"] if entry["action"] != "none" else "-"
    if entry["action"] == "none" and entry["wanted"] != "none":
        action = f"({entry['wanted']} held: {entry['blocked_by'] or 'dry run'})"
    return (
        f"t={entry['t']:6.1f}s {pod:<5} gen{entry['generation']} anon {_mib(entry['anon_bytes'])}M "
        f"file {_mib(entry['file_bytes'])}M eta {eta_text} oom_kill {entry['oom_kill']} "
        f"{entry['verdict']:<19} {action}"
    )


def event_line(pod: str, entry: dict[str, Any]) -> str | None:
    kind = entry["kind"]
    if kind == "reclaim":
        answer = entry["answer"]
        if answer.get("http_status") != 200:
            return f"t={entry['t']:6.1f}s {pod:<5} reclaim refused: {answer}"
        freed = answer["before"]["file_bytes"] - answer["after"]["file_bytes"]
        return (
            f"t={entry['t']:6.1f}s {pod:<5} >>> memory.reclaim {answer['requested_bytes'] / MIB:.1f} MiB "
            f"through the agent: file {answer['before']['file_bytes'] / MIB:.1f} -> "
            f"{answer['after']['file_bytes'] / MIB:.1f} MiB (freed {freed / MIB:.1f} MiB)"
        )
    if kind == "restart":
        return (
            f"t={entry['t']:6.1f}s {pod:<5} >>> RESTART (limit in {entry['eta_seconds']:.0f} s): "
            f"new pod {entry['new_pod_uid'][:8]} started, old pod {entry['old_pod_uid'][:8]} stopped "
            f"at age {entry['old_pod_age_seconds']:.0f} s with oom_kill {entry['old_events']['oom_kill']}"
        )
    if kind == "drop_caches":
        answer = entry["answer"]
        freed = answer.get("freed_bytes", 0) / MIB
        return (
            f"t={entry['t']:6.1f}s node  >>> drop_caches level {answer.get('level')}: freed {freed:.1f} MiB"
        )
    return None


class Tail:
    """Follows one pod's decisions.jsonl while the guest writes it (through the 9p share)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.entries: list[dict[str, Any]] = []

    def new_entries(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        with self.path.open() as f:
            f.seek(self.offset)
            chunk = f.read()
        complete = chunk[: chunk.rfind("\n") + 1]
        self.offset += len(complete.encode())
        fresh = [json.loads(line) for line in complete.splitlines() if line.strip()]
        self.entries.extend(fresh)
        return fresh


def summary(tails: dict[str, Tail]) -> list[str]:
    lines = ["", "=== summary ==="]
    cache = tails["guarded-page-cache"].entries
    reclaims = [
        e["answer"] for e in cache if e["kind"] == "reclaim" and e["answer"].get("http_status") == 200
    ]
    freed = sum(a["before"]["file_bytes"] - a["after"]["file_bytes"] for a in reclaims)
    restarts_cache = [e for e in cache if e["kind"] == "restart"]
    lines.append(
        f"page cache pod: {len(reclaims)} memory.reclaim write(s) freed {freed / MIB:.1f} MiB of file cache; "
        f"{len(restarts_cache)} restart(s)"
    )
    for e in cache:
        if e["kind"] == "drop_caches" and e["answer"].get("http_status") == 200:
            lines.append(f"drop_caches (node-wide) freed {e['answer']['freed_bytes'] / MIB:.1f} MiB")
    leak = tails["guarded-leak"].entries
    restarts = [e for e in leak if e["kind"] == "restart"]
    twin_kill = next(
        (e for e in tails["leak-unguarded"].entries if e["kind"] == "tick" and e["oom_kill"]), None
    )
    for r in restarts:
        lines.append(
            f"leaking pod: restarted at age {r['old_pod_age_seconds']:.0f} s, {r['eta_seconds']:.0f} s before"
            f" memory.max by the forecast; old pod stopped with oom_kill {r['old_events']['oom_kill']}"
        )
    ends = {name: next((e for e in t.entries if e["kind"] == "end"), None) for name, t in tails.items()}
    if twin_kill is not None:
        lines.append(f"unguarded twin: OOM-killed by the kernel at age {twin_kill['pod_age_seconds']:.0f} s")
        if restarts:
            lead = twin_kill["pod_age_seconds"] - restarts[0]["old_pod_age_seconds"]
            lines.append(f"=> MemoryGuard's restart came {lead:.0f} s before the OOM kill would have")
    for name, end in ends.items():
        if end is not None:
            lines.append(f"{PODS[name]:<5}: OOM kills over the whole run: {end['oom_kills']}")
    return lines


def main() -> int:
    missing = missing_pieces()
    if missing:
        print("make demo needs: " + "; ".join(missing) + " (run `make install` as root)", file=sys.stderr)
        return 2
    kernel = Kernel.unpacked()
    assert kernel is not None
    rig = Rig(kernel, memory_mib=3072)
    print(f"booting Debian {kernel.release} under QEMU (TCG) with cgroup v2; the agent starts inside ...")
    outcome: dict[str, Any] = {}

    def boot() -> None:
        try:
            outcome["run"] = rig.boot(BATCH, scenario_job(list(PODS), swap_mib=0, agent=True), 900)
        except RigError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=boot, daemon=True)
    thread.start()
    run_dir = WORK_DIR / "runs" / BATCH
    tails = {name: Tail(run_dir / name / "decisions.jsonl") for name in PODS}
    print(
        "pods: leak = Buffer leak 3 MiB/s, memory.max 256 MiB, MemoryGuard acting; "
        "twin = the same, only watched;"
    )
    print("      cache = cat loop over a 320 MiB file, memory.max 256 MiB, MemoryGuard acting")
    while thread.is_alive():
        time.sleep(1)
        for name, tail in tails.items():
            for entry in tail.new_entries():
                line = (
                    tick_line(PODS[name], entry) if entry["kind"] == "tick" else event_line(PODS[name], entry)
                )
                if line:
                    print(line, flush=True)
    for tail in tails.values():
        tail.new_entries()
    if "error" in outcome:
        print(f"the guest failed: {outcome['error']}", file=sys.stderr)
        return 1
    print("\n".join(summary(tails)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
