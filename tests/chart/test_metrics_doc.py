"""docs/metrics.md documents every metric family the agent and the operator expose, with its
labels (and type, where the table has a type column), and names nothing they do not expose.

The families are collected from the real registries, populated as the programs populate them:

- the agent: ``AgentMetrics`` over a real ``Sampler`` that has ticked over a fixture cgroup v2
  tree (pods of every QoS class, memory events, swap events, PSI) and a fixture /proc, behind
  the agent's real HTTP app (tests.support.agent_app, as tests/agent/test_metrics.py builds it);
- the operator: ``OperatorMetrics()``, as its handlers make it, with a forecast and an action
  recorded so its scrape-time families have series.

Nothing here lists metric names: a family added to the code without a row in the doc fails,
and so does a row (or any ``memoryguard_*`` name in the text) the code does not expose.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase
from tests.chart.kube import ROOT
from tests.support.agent_app import agent_app
from tests.support.cgroup_tree import CgroupTree, MiB, add_eventful_node, write_proc

from memoryguard.controller.metrics import ContainerForecast, OperatorMetrics

DOC = ROOT / "docs" / "metrics.md"
SERIES_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created")}


# ------------------------------------------------------------------------------ the code


@dataclass
class Family:
    name: str  # as written in the doc and in PromQL: counters with their _total
    type: str
    labels: frozenset[str]
    series: frozenset[str]  # every sample name it can expose (name_bucket, name_created, …)


def families(registry: CollectorRegistry, *owners: object) -> dict[str, Family]:
    """Every family the registry exposes, with the label names it declares.

    A family with samples shows its labels on them; one with none yet (a labelled counter
    nothing has counted) is declared by its prometheus-client wrapper on ``owners`` or by its
    MetricFamily, which keep them as ``_labelnames`` (prometheus-client has no public getter).
    """
    wrappers = {
        m._name: frozenset(m._labelnames)
        for owner in owners
        for m in vars(owner).values()
        if isinstance(m, MetricWrapperBase)
    }
    found = {}
    for metric in registry.collect():
        sampled = {k for s in metric.samples for k in s.labels} - {"le", "quantile"}
        declared = getattr(metric, "_labelnames", None)
        if declared is None:
            declared = wrappers.get(metric.name)
        if not metric.samples:
            assert declared is not None, f"{metric.name}: no samples and no declared labels to check"
            sampled = set(declared)
        name = metric.name + ("_total" if metric.type == "counter" else "")
        suffixes = SERIES_SUFFIXES.get(metric.type, ())
        found[name] = Family(
            name=name,
            type=metric.type,
            labels=frozenset(sampled),
            series=frozenset({name, *(metric.name + s for s in suffixes)}),
        )
    return found


@pytest.fixture
async def agent_families(tmp_path: Path) -> dict[str, Family]:
    proc = write_proc(tmp_path / "proc")
    tree = CgroupTree(tmp_path / "cgroup", version=2, driver="systemd")
    add_eventful_node(tree)
    async with agent_app(tree.root, proc_root=proc) as agent:
        agent.tick(count=3)
        assert (await agent.client.get("/v1/pods")).status == 200
        assert (await agent.client.get("/metrics")).status == 200
        return families(agent.metrics.registry, agent.metrics)


def operator_families() -> dict[str, Family]:
    metrics = OperatorMetrics(clock=lambda: 1000.0)
    key = ("uid-1", "app")
    forecast = ContainerForecast(
        namespace="shop",
        pod="web-1",
        container="app",
        node="node-a",
        limit_source="memory.max",
        eta_seconds=300.0,
        growth_bytes_per_second=1024.0,
        as_of_seconds=990.0,
    )
    metrics.set_forecast("shop/web", key, forecast)
    metrics.record_action(
        "shop/web", key, namespace="shop", pod="web-1", container="app", action="reclaim",
        result="done", at_seconds=995.0, freed_bytes=4 * MiB,
    )  # fmt: skip
    return families(metrics.registry, metrics)


# ------------------------------------------------------------------------------- the doc


@dataclass
class Row:
    name: str
    labels: frozenset[str]
    type: str | None  # the table's `type` cell, when it has that column
    line: int


@dataclass
class Section:
    title: str
    rows: list[Row] = field(default_factory=list)
    names: set[str] = field(default_factory=set)  # every memoryguard_* name written anywhere in it
    unreadable: list[str] = field(default_factory=list)  # metric-table rows naming no metric in full


_METRIC_CELL = re.compile(r"`(memoryguard_\w+)(?:\{([^`]*)\})?`")
_METRIC_CELLS = re.compile(rf"{_METRIC_CELL.pattern}(?:\s*,\s*{_METRIC_CELL.pattern})*")
_NAME = re.compile(r"\bmemoryguard_\w*[a-z0-9]\b")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def _label_names(spec: str | None) -> frozenset[str]:
    """``guard, outcome`` or ``kind="some"\\|"full"`` -> the label names."""
    if not spec:
        return frozenset()
    return frozenset(
        part.split("=")[0].strip() for part in re.split(r",", spec.replace("\\|", "|")) if part.strip()
    )


def doc_sections(text: str) -> dict[str, Section]:
    """The doc's level-2 sections (## Agent, ## Operator) with the metric rows of their tables.

    A metric row's labels are those in its braces plus the rows of a `| label | value |` table
    in the same level-3 section (the per-container labels every row there carries).
    """
    sections: dict[str, Section] = {}
    section: Section | None = None
    pending: list[Row] = []
    common: set[str] = set()
    header: list[str] = []

    def close_subsection() -> None:
        for row in pending:
            row.labels = row.labels | common
        pending.clear()
        common.clear()

    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("## ") or line.startswith("### "):
            close_subsection()
            if line.startswith("## "):
                section = sections.setdefault(line[3:].split("(")[0].strip(), Section(line[3:].strip()))
            continue
        if section is None:
            continue
        section.names |= set(_NAME.findall(line))
        if not line.startswith("|"):
            header = []
            continue
        cells = _cells(line)
        if not header:
            header = [c.lower() for c in cells]
            continue
        if set(line) <= set("|-: "):
            continue
        if header[0] == "label":
            common.add(cells[0].strip("`"))
            continue
        if header[0] != "metric":
            continue
        if not _METRIC_CELLS.fullmatch(cells[0]):
            section.unreadable.append(
                f"docs/metrics.md:{number}: {cells[0]} is not a list of full metric names"
            )
            continue
        kind = cells[header.index("type")].split()[0] if "type" in header else None
        for match in _METRIC_CELL.finditer(cells[0]):
            row = Row(match[1], _label_names(match[2]), kind, number)
            section.rows.append(row)
            pending.append(row)
    close_subsection()
    return sections


# ------------------------------------------------------------------------------ the checks


def _mismatches(section: Section, code: dict[str, Family], where: str) -> list[str]:
    problems = list(section.unreadable)
    documented = {row.name: row for row in section.rows}
    for name in sorted(set(code) - set(documented)):
        family = code[name]
        problems.append(f"{where}: {name}{{{', '.join(sorted(family.labels))}}} ({family.type}) has no row")
    for row in section.rows:
        family = code.get(row.name)
        if family is None:
            problems.append(f"docs/metrics.md:{row.line}: {row.name} is not exposed by the {where}")
            continue
        if row.labels != family.labels:
            problems.append(
                f"docs/metrics.md:{row.line}: {row.name} labels {sorted(row.labels)}, "
                f"the {where} has {sorted(family.labels)}"
            )
        if row.type is not None and row.type != family.type:
            problems.append(f"docs/metrics.md:{row.line}: {row.name} is a {family.type}, not a {row.type}")
    return problems


def _unknown_names(names: Iterable[str], code: dict[str, Family]) -> list[str]:
    exposed = {series for family in code.values() for series in family.series}
    return sorted(n for n in names if n not in exposed)


async def test_every_agent_metric_is_documented_with_its_labels_and_nothing_else(
    agent_families: dict[str, Family],
) -> None:
    sections = doc_sections(DOC.read_text())
    assert _mismatches(sections["Agent"], agent_families, "agent") == []
    assert _unknown_names(sections["Agent"].names, agent_families) == []


def test_every_operator_metric_is_documented_with_its_labels_and_nothing_else() -> None:
    code = operator_families()
    sections = doc_sections(DOC.read_text())
    assert _mismatches(sections["Operator"], code, "operator") == []
    assert _unknown_names(sections["Operator"].names, code) == []


async def test_the_check_catches_a_missing_row_a_stale_row_and_wrong_labels(
    agent_families: dict[str, Family],
) -> None:
    text = DOC.read_text()
    (row,) = [
        line for line in text.splitlines() if line.startswith("| `memoryguard_agent_auth_reviews_total{")
    ]
    broken = text.replace(row + "\n", "")
    broken = broken.replace(
        "`memoryguard_agent_http_requests_total{route, code}`",
        "`memoryguard_agent_http_requests_total{route}`",
    )
    broken = broken.replace(
        "### The agent itself\n", "### The agent itself\n\n`memoryguard_agent_gone_bytes`\n"
    )
    agent = doc_sections(broken)["Agent"]
    problems = "\n".join(_mismatches(agent, agent_families, "agent"))
    assert "memoryguard_agent_auth_reviews_total{kind, outcome} (counter) has no row" in problems
    assert (
        "memoryguard_agent_http_requests_total labels ['route'], the agent has ['code', 'route']" in problems
    )
    assert _unknown_names(agent.names, agent_families) == ["memoryguard_agent_gone_bytes"]


def test_the_per_container_label_table_applies_to_its_rows_only() -> None:
    sections = doc_sections(DOC.read_text())
    rows = {row.name: row for row in sections["Agent"].rows}
    assert {"pod_uid", "container_id", "qos", "event"} <= rows[
        "memoryguard_container_memory_events_total"
    ].labels
    assert "pod_uid" not in rows["memoryguard_agent_http_requests_total"].labels


def test_a_row_must_name_each_metric_in_full() -> None:
    text = "## Agent\n\n| metric | type | meaning |\n|---|---|---|\n"
    text += "| `memoryguard_a_bytes`, `memoryguard_b_bytes{kind}` | gauge | two in one row |\n"
    text += "| `memoryguard_c_bytes`, `…_d_bytes` | gauge | abbreviated |\n"
    agent = doc_sections(text)["Agent"]
    assert [(row.name, set(row.labels)) for row in agent.rows] == [
        ("memoryguard_a_bytes", set()),
        ("memoryguard_b_bytes", {"kind"}),
    ]
    assert agent.unreadable == [
        "docs/metrics.md:6: `memoryguard_c_bytes`, `…_d_bytes` is not a list of full metric names"
    ]
