"""The forecast series of the operator's /metrics, from the real engine's assessments: present
while pinned memory grows, counting down between judgements, gone when the growth, the pod or
the guard goes, and promtool-clean."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.support.promtool import promtool_check

from memoryguard.controller.cycle import export_forecast
from memoryguard.controller.metrics import OperatorMetrics
from memoryguard.controller.pods import ContainerInfo, PodInfo
from memoryguard.engine.assessment import Assessment, assess
from memoryguard.engine.model import Sample
from memoryguard.engine.policy import Policy

MiB = 1024 * 1024
LIMIT_BYTES = 256 * MiB
SECONDS_TO_LIMIT = "memoryguard_operator_forecast_seconds_to_limit"
GROWTH = "memoryguard_operator_pinned_growth_bytes_per_second"
GUARD = "shop/web"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _pod(name: str, uid: str, node: str = "node-a") -> PodInfo:
    return PodInfo(
        namespace="shop",
        name=name,
        uid=uid,
        node=node,
        phase="Running",
        labels={"app": "web"},
        owner=None,
        containers=(ContainerInfo("app", "c" * 64, LIMIT_BYTES, None, None, ""),),
        excluded=False,
        deleting=False,
    )


def _assessment(anon_bytes_per_second: float, *, seconds: int = 120) -> Assessment:
    samples = [
        Sample(
            t_seconds=float(t),
            anon_bytes=int(60 * MiB + anon_bytes_per_second * t),
            file_bytes=10 * MiB,
            max_bytes=LIMIT_BYTES,
            kernel_bytes=512 * 1024,
        )
        for t in range(seconds + 1)
    ]
    return assess(samples, Policy(window_seconds=120.0, min_samples=10), now_seconds=float(seconds))


def _series(metrics: OperatorMetrics, name: str) -> dict[str, float]:
    """pod -> value of one family's samples."""
    return {
        s.labels["pod"]: s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
        if s.name == name
    }


def test_a_growing_container_gets_the_engines_eta_which_counts_down_until_it_is_judged_again() -> None:
    clock = Clock(1000.0)
    metrics = OperatorMetrics(clock=clock)
    growing = _assessment(1 * MiB)
    assert growing.forecast is not None and growing.forecast.eta_seconds is not None
    export_forecast(metrics, GUARD, _pod("web-1", "u1"), _pod("web-1", "u1").containers[0], growing, 999.0)

    (family,) = [
        f for f in text_string_to_metric_families(metrics.render().decode()) if f.name == SECONDS_TO_LIMIT
    ]
    (sample,) = family.samples
    assert sample.labels == {
        "guard": GUARD,
        "namespace": "shop",
        "pod": "web-1",
        "container": "app",
        "limit": "memory.max",
    }
    # As of one second after the sample: the engine's ETA less that second.
    assert sample.value == pytest.approx(growing.forecast.eta_seconds - 1.0)
    # (256 − 4 file floor − 0.5 kernel − 180 anon) MiB at 1 MiB/s
    assert sample.value == pytest.approx(71.5 - 1.0, abs=1.0)
    assert _series(metrics, GROWTH)["web-1"] == pytest.approx(1 * MiB, rel=0.01)

    clock.now += 30.0
    assert _series(metrics, SECONDS_TO_LIMIT)["web-1"] == pytest.approx(growing.forecast.eta_seconds - 31.0)
    clock.now += 1000.0
    assert _series(metrics, SECONDS_TO_LIMIT)["web-1"] == 0.0, "a deadline passed is 0 s, never negative"


def test_the_series_go_when_the_growth_stops() -> None:
    metrics = OperatorMetrics(clock=Clock(0.0))
    pod = _pod("web-1", "u1")
    export_forecast(metrics, GUARD, pod, pod.containers[0], _assessment(1 * MiB), 0.0)
    assert set(_series(metrics, SECONDS_TO_LIMIT)) == {"web-1"}

    flat = _assessment(0.0)
    assert flat.forecast is not None and flat.forecast.eta_seconds is None
    export_forecast(metrics, GUARD, pod, pod.containers[0], flat, 0.0)
    assert _series(metrics, SECONDS_TO_LIMIT) == {}
    assert _series(metrics, GROWTH) == {}
    text = metrics.render().decode()
    assert f"# TYPE {SECONDS_TO_LIMIT} gauge" in text, "the family stays declared, without samples"


def test_pods_that_left_or_sit_on_a_degraded_node_and_deleted_guards_lose_their_series() -> None:
    metrics = OperatorMetrics(clock=Clock(0.0))
    growing = _assessment(1 * MiB)
    pods = [_pod("web-1", "u1"), _pod("web-2", "u2"), _pod("web-3", "u3", node="node-b")]
    for pod in pods:
        export_forecast(metrics, GUARD, pod, pod.containers[0], growing, 0.0)
    other = _pod("db-1", "u9")
    export_forecast(metrics, "shop/db", other, other.containers[0], growing, 0.0)
    assert set(_series(metrics, SECONDS_TO_LIMIT)) == {"web-1", "web-2", "web-3", "db-1"}

    live = {("u1", "app"), ("u3", "app")}
    metrics.keep_forecasts(GUARD, lambda key, f: key in live and f.node != "node-b")
    assert set(_series(metrics, SECONDS_TO_LIMIT)) == {"web-1", "db-1"}

    metrics.forget(GUARD)
    assert set(_series(metrics, SECONDS_TO_LIMIT)) == {"db-1"}
    assert set(_series(metrics, GROWTH)) == {"db-1"}


def test_operator_metrics_with_forecasts_pass_promtool_check() -> None:
    metrics = OperatorMetrics(clock=Clock(0.0))
    for name, uid in (("web-1", "u1"), ("web-2", "u2")):
        pod = _pod(name, uid)
        export_forecast(metrics, GUARD, pod, pod.containers[0], _assessment(1 * MiB), 0.0)
    metrics.pods_watched.labels(GUARD).set(2)
    text = metrics.render().decode()
    assert SECONDS_TO_LIMIT in text
    result = promtool_check(text)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stdout + result.stderr
