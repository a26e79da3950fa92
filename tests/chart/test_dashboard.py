"""The Grafana dashboard: plots what it promises, from metrics the code really exports.

- every ``memoryguard_*`` metric a panel queries is defined by the agent's or the operator's
  Prometheus registry (enumerated from the real metric objects, not from a list kept here);
- every query parses as PromQL (``promtool check rules``, Grafana variables substituted);
- there are panels for anon, file (page cache), the limit, a forecast and actions, per pod
  (actions: a table and annotations on the graphs, from the operator's per-pod gauge);
- the chart ships it as a ConfigMap with the Grafana sidecar's label, byte-for-byte.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.chart.kube import CHART, missing, render

DASHBOARD = CHART / "dashboards" / "memoryguard.json"
METRIC = re.compile(r"\bmemoryguard_[a-z0-9_]+")
# Series suffixes Prometheus adds to a family's name in the exposition.
SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created", "_info")


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _exprs() -> list[str]:
    """Every PromQL query of the dashboard: the panels' and the annotations'."""

    def walk(panels: list[dict[str, Any]]) -> Iterator[str]:
        for panel in panels:
            for target in panel.get("targets", []):
                yield target["expr"]
            yield from walk(panel.get("panels", []))

    return list(walk(_dashboard()["panels"])) + [a["expr"] for a in _prometheus_annotations()]


def _prometheus_annotations() -> list[dict[str, Any]]:
    return [a for a in _dashboard()["annotations"]["list"] if "expr" in a]


def _panels() -> list[dict[str, Any]]:
    def walk(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in panels:
            yield panel
            yield from walk(panel.get("panels", []))

    return list(walk(_dashboard()["panels"]))


class _NoReadings:
    """The smallest sampler view: metric families do not depend on what is sampled."""

    cgroup_version = 2
    container_count = 0
    last_tick_t_seconds = 1.0
    errors: dict[str, int] = {"vanished": 0}  # noqa: RUF012

    def latest(self) -> list[Any]:
        return []

    def node(self) -> dict[str, Any]:
        return {}


def code_metric_families() -> set[str]:
    """Family names registered by the agent's and the operator's real metric classes."""
    from memoryguard.agent.metrics import AgentMetrics
    from memoryguard.controller.metrics import OperatorMetrics

    names: set[str] = set()
    for registry in (AgentMetrics(_NoReadings()).registry, OperatorMetrics().registry):
        names |= {family.name for family in registry.collect()}
    return names


def _family(series: str, families: set[str]) -> str | None:
    if series in families:
        return series
    for suffix in SUFFIXES:
        if series.endswith(suffix) and series.removesuffix(suffix) in families:
            return series.removesuffix(suffix)
    return None


def test_every_metric_in_the_dashboard_is_exported_by_the_code() -> None:
    families = code_metric_families()
    used = {m for expr in _exprs() for m in METRIC.findall(expr)}
    assert used, "the dashboard queries no MemoryGuard metric"
    unknown = sorted(m for m in used if _family(m, families) is None)
    assert unknown == [], f"not defined in the agent's or operator's metrics: {unknown}"


def test_the_metric_check_rejects_a_misspelled_name() -> None:
    families = code_metric_families()
    assert _family("memoryguard_container_memory_anon_bytes", families)
    assert _family("memoryguard_operator_actions_total", families)
    assert _family("memoryguard_container_memory_anon", families) is None


def _substituted(expr: str) -> str:
    # Grafana variables as Grafana would expand them for one pod, a 10m window, 15m horizon.
    return (
        expr.replace("$__rate_interval", "1m")
        .replace("$window", "10m")
        .replace("$horizon", "900")
        .replace("$namespace", "shop")
        .replace("$pod", "web-1")
    )


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        missing("promtool not found (Debian package prometheus; make install)")
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query{i}", "expr": _substituted(e)} for i, e in enumerate(_exprs())
                ],
            }
        ]
    }
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([str(promtool), "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promql_check_catches_a_syntax_error(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        missing("promtool not found (Debian package prometheus; make install)")
    path = tmp_path / "rules.yaml"
    path.write_text(
        yaml.safe_dump({"groups": [{"name": "g", "rules": [{"record": "a:b", "expr": "sum by (x"}]}]})
    )
    assert subprocess.run([str(promtool), "check", "rules", str(path)], capture_output=True).returncode != 0


@pytest.mark.parametrize(
    "metric",
    [
        "memoryguard_container_memory_anon_bytes",
        "memoryguard_container_memory_file_bytes",
        "memoryguard_container_memory_limit_bytes",
        "memoryguard_operator_actions_total",
        "memoryguard_operator_forecast_seconds_to_limit",
        "memoryguard_operator_last_action_timestamp_seconds",
    ],
)
def test_dashboard_plots_each_promised_signal(metric: str) -> None:
    assert any(metric in e for e in _exprs())


def test_dashboard_has_a_forecast_and_per_pod_variables() -> None:
    assert any("predict_linear" in e for e in _exprs())
    # MemoryGuard's own forecast, per pod: the operator labels it with the pod's namespace and name.
    forecast = [e for e in _exprs() if "memoryguard_operator_forecast_seconds_to_limit" in e]
    assert forecast and all('pod=~"$pod"' in e and 'namespace=~"$namespace"' in e for e in forecast)
    variables = {v["name"] for v in _dashboard()["templating"]["list"]}
    assert {"namespace", "pod", "datasource"} <= variables
    per_pod = [e for e in _exprs() if 'pod=~"$pod"' in e]
    assert len(per_pod) >= 4


def test_dashboard_shows_actions_per_pod_filtered_by_namespace_and_pod() -> None:
    metric = "memoryguard_operator_last_action_timestamp_seconds"
    per_pod = [e for e in _exprs() if metric in e]
    assert per_pod and all('pod=~"$pod"' in e and 'namespace=~"$namespace"' in e for e in per_pod)
    # Markers on the graphs, at the action's own time: the gauge is in seconds, Grafana wants ms.
    (marks,) = [a for a in _prometheus_annotations() if metric in a["expr"]]
    assert marks["enable"] and marks["useValueForTime"] is True
    assert marks["expr"].rstrip().endswith("* 1000")
    assert "{{pod}}" in marks["textFormat"] and "{{action}}" in marks["titleFormat"]
    # And a table of the latest action of each kind, result and container, per pod.
    (table,) = [
        p for p in _panels() if p["type"] == "table" and any(metric in t["expr"] for t in p["targets"])
    ]
    (target,) = table["targets"]
    assert target["instant"] is True and target["format"] == "table"
    kept = re.search(r"max by \(([^)]*)\)", target["expr"])
    assert kept is not None
    assert {"namespace", "pod", "container", "action", "result"} <= {
        x.strip() for x in kept.group(1).split(",")
    }


def test_chart_ships_the_dashboard_as_a_sidecar_configmap() -> None:
    (configmap,) = [o for o in render({"dashboard.enabled": True}) if o["kind"] == "ConfigMap"]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["memoryguard.json"]) == _dashboard()
