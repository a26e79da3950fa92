"""values.schema.json refuses bad values at `helm template` time, naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from tests.chart.kube import CHART, helm, set_args

BAD_VALUES: dict[str, tuple[dict[str, Any], str]] = {
    "misspelled key": ({"operator.replica": 2}, "replica"),
    "zero operators": ({"operator.replicas": 0}, "/operator/replicas"),
    "duration the agent cannot parse": ({"agent.interval": "1 second"}, "/agent/interval"),
    "two-unit duration": ({"agent.retention": "1h30m"}, "/agent/retention"),
    "log level in lower case": ({"agent.logLevel": "info"}, "/agent/logLevel"),
    "port out of range": ({"agent.port": 70000}, "/agent/port"),
    "drop caches as a string": ({"agent.dropCaches.enabled": "yes"}, "/agent/dropCaches/enabled"),
    "digest that is not sha256": ({"image.digest": "latest"}, "/image/digest"),
    "namespace with capitals": ({"operator.watchNamespaces": ["Shop"]}, "/operator/watchNamespaces"),
    "prometheus interval in words": (
        {"metrics.serviceMonitor.interval": "thirty"},
        "serviceMonitor/interval",
    ),
}


@pytest.mark.parametrize("values,field", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_bad_value_is_rejected_naming_the_field(values: dict[str, Any], field: str) -> None:
    result = helm("template", "mg", str(CHART), *set_args(values), check=False)
    assert result.returncode != 0, f"accepted {values}"
    assert field in result.stderr, result.stderr


def test_good_non_default_values_are_accepted() -> None:
    values = {"agent.interval": "500ms", "agent.retention": "2h", "operator.watchNamespaces": ["shop"]}
    assert helm("template", "mg", str(CHART), *set_args(values), check=False).returncode == 0
