"""Reading what a scenario left behind: its trace (through the project's own trace parser)
and the stand-in's decision log.

Containers have ``memory.oom.group`` 1, as kubelet sets it on cgroup v2: one OOM kill of a
container counts ``oom_group_kill`` 1 in ``memory.events`` and ``oom_kill`` once per process
killed — twice for a lone process (the chosen victim, then the group with it still in it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memoryguard.traces import Trace, parse_trace

MIB = 1024 * 1024


def load_trace(path: Path) -> Trace:
    return parse_trace(path.read_text(), name=path.stem)


@dataclass(frozen=True)
class DecisionLog:
    """``decisions.jsonl`` of one stand-in: ticks, and what was carried out."""

    entries: tuple[dict[str, Any], ...]

    @classmethod
    def read(cls, directory: Path) -> DecisionLog:
        path = directory / "decisions.jsonl"
        lines = path.read_text().splitlines() if path.is_file() else []
        return cls(tuple(json.loads(line) for line in lines if line.strip()))

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.entries if e["kind"] == kind]

    @property
    def ticks(self) -> list[dict[str, Any]]:
        return self.of_kind("tick")

    def verdicts(self) -> set[str]:
        return {t["verdict"] for t in self.ticks}

    def wanted(self) -> set[str]:
        return {t["wanted"] for t in self.ticks}

    def first_tick(self, **match: Any) -> dict[str, Any] | None:
        return next((t for t in self.ticks if all(t.get(k) == v for k, v in match.items())), None)

    def end(self) -> dict[str, Any]:
        ends = self.of_kind("end")
        assert ends, "the stand-in did not finish (no 'end' entry)"
        return ends[-1]


# What the kernel shows for a process holding no capability at all (/proc/<pid>/status, hex).
NO_CAPABILITIES = "0000000000000000"
CAPABILITY_SETS = ("CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb")


def agent_credentials(run_dir: Path) -> dict[str, list[str]]:
    """``agent.status`` of a boot (lib.sh agent_status): ``cmdline`` and the Uid, Gid, Cap* and
    NoNewPrivs fields of the agent's /proc/<pid>/status, each split into its words."""
    text = (run_dir / "agent.status").read_text()
    assert not text.startswith("gone"), text
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key: value.split() for key, value in pairs}


def assert_runs_as_the_chart_runs_the_agent(credentials: dict[str, list[str]]) -> None:
    """uid 0, every capability set empty, no new privileges: charts/memoryguard/values.yaml."""
    shown = "\n".join(f"{k}: {' '.join(v)}" for k, v in credentials.items())
    assert "memoryguard agent" in " ".join(credentials.get("cmdline", [])), shown
    assert credentials["Uid"] == ["0"] * 4, shown
    for name in CAPABILITY_SETS:
        assert credentials[name] == [NO_CAPABILITIES], f"{name} is not empty:\n{shown}"
    assert credentials["NoNewPrivs"] == ["1"], shown
