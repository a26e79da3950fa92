"""The arguments the chart passes are ones the real commands accept, and they agree.

The agent's and the operator's own argparse parsers (``add_arguments`` of their modules) parse
the rendered container args, so a renamed or removed flag fails here, not in a CrashLoop.
The operator's agent selector, namespace and port must find the DaemonSet's pods.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

import pytest
from tests.chart.kube import render

SCENARIOS = {
    "defaults": {},
    "peering-and-namespaces": {"operator.replicas": 2, "operator.watchNamespaces": ["shop"]},
    "drop-caches-verbose": {
        "agent.dropCaches.enabled": True,
        "operator.verbose": True,
        "agent.logLevel": "DEBUG",
    },
}


def _container(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (obj,) = [o for o in objects if o["kind"] == kind]
    (container,) = obj["spec"]["template"]["spec"]["containers"]
    return container


def _parse(module_name: str, args: list[str]) -> argparse.Namespace:
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(exit_on_error=False)
    module.add_arguments(parser)
    # Kubernetes expands $(VAR) from the container's env before the process sees it.
    return parser.parse_args([a.replace("$(NODE_NAME)", "node-a") for a in args])


@pytest.mark.parametrize("values", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_agent_accepts_the_chart_args(values: dict[str, Any]) -> None:
    objects = render(values)
    command, *args = _container(objects, "DaemonSet")["args"]
    assert command == "agent"
    parsed = _parse("memoryguard.agent.main", args)
    assert parsed.node_name == "node-a"
    assert parsed.enable_drop_caches == bool(values.get("agent.dropCaches.enabled"))
    port = next(p["containerPort"] for p in _container(objects, "DaemonSet")["ports"] if p["name"] == "api")
    assert parsed.listen[1] == port


@pytest.mark.parametrize("values", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_operator_accepts_the_chart_args_and_finds_the_agents(values: dict[str, Any]) -> None:
    objects = render(values)
    command, *args = _container(objects, "Deployment")["args"]
    assert command == "operator"
    main = importlib.import_module("memoryguard.controller.main")
    config = main.config_from_args(_parse("memoryguard.controller.main", args))
    (daemonset,) = [o for o in objects if o["kind"] == "DaemonSet"]
    pod_labels = daemonset["spec"]["template"]["metadata"]["labels"]
    assert config.agent_labels and config.agent_labels.items() <= pod_labels.items()
    assert config.agent_namespace == daemonset["metadata"]["namespace"]
    assert config.agent_port == _container(objects, "DaemonSet")["ports"][0]["containerPort"]
    assert config.standalone == (values.get("operator.replicas", 1) == 1)
    listed = values.get("operator.watchNamespaces", [])
    assert list(config.namespaces) == ([*listed, daemonset["metadata"]["namespace"]] if listed else [])
    metrics_port = next(p for p in _container(objects, "Deployment")["ports"] if p["name"] == "metrics")
    assert config.metrics_port == metrics_port["containerPort"]


def test_a_flag_the_agent_does_not_know_is_caught() -> None:
    with pytest.raises((argparse.ArgumentError, SystemExit)):
        _parse("memoryguard.agent.main", ["--no-such-flag"])
