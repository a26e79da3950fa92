"""What the operator benchmarks (``bench_latency``, ``bench_scale``) share: the operator
process's command line and environment, reading its ``/metrics`` (with prometheus-client's own
text parser) and its ``/proc`` figures."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from tests.support.agent_process import free_port

REPO = Path(__file__).resolve().parents[2]

__all__ = [
    "REPO",
    "Histogram",
    "counter_total",
    "free_port",
    "operator_command",
    "operator_env",
    "proc_stats",
    "scrape",
    "wait_http",
]


def operator_env() -> dict[str, str]:
    """This checkout's code for the child processes, whatever the caller's PYTHONPATH."""
    path = os.pathsep.join(filter(None, [str(REPO / "operator"), str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def operator_command(api_url: str, metrics_port: int, namespaces: list[str], *extra: str) -> list[str]:
    """``memoryguard operator`` as the benchmarks run it: standalone, no agent auth, no
    liveness endpoint, a 1 s cycle, its /metrics on ``metrics_port``."""
    return [
        sys.executable,
        "-m",
        "memoryguard.cli",
        "operator",
        "--api-server",
        api_url,
        "--standalone",
        *(arg for namespace in namespaces for arg in ("-n", namespace)),
        "--no-agent-auth",
        "--liveness",
        "",
        "--metrics-port",
        str(metrics_port),
        "--metrics-host",
        "127.0.0.1",
        "--cycle-seconds",
        "1",
        *extra,
    ]


async def wait_http(url: str, timeout_seconds: float = 30) -> None:
    deadline = time.monotonic() + timeout_seconds
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status < 500 or response.status == 503:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {timeout_seconds}s")


async def scrape(port: int) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        return await response.text()


def _samples(text: str) -> Iterator[Sample]:
    for family in text_string_to_metric_families(text):
        yield from family.samples


@dataclass
class Histogram:
    """One histogram of a scrape, every label set summed; ``minus`` gives a window's share."""

    buckets: dict[float, float] = field(default_factory=dict)
    sum: float = 0.0
    count: float = 0.0

    @classmethod
    def parse(cls, text: str, name: str) -> Histogram:
        histogram = cls()
        for sample in _samples(text):
            if sample.name == f"{name}_bucket":
                bound = float(sample.labels["le"])
                histogram.buckets[bound] = histogram.buckets.get(bound, 0.0) + sample.value
            elif sample.name == f"{name}_sum":
                histogram.sum += sample.value
            elif sample.name == f"{name}_count":
                histogram.count += sample.value
        return histogram

    def minus(self, earlier: Histogram) -> Histogram:
        return Histogram(
            {le: value - earlier.buckets.get(le, 0.0) for le, value in self.buckets.items()},
            self.sum - earlier.sum,
            self.count - earlier.count,
        )

    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None

    def quantile_bound(self, q: float) -> float | None:
        """The upper bound of the bucket holding quantile ``q`` (what a histogram can tell)."""
        if not self.count:
            return None
        return next(
            (le for le, cumulative in sorted(self.buckets.items()) if cumulative >= q * self.count),
            float("inf"),
        )


def counter_total(text: str, name: str) -> float:
    """A counter (``name`` with its ``_total``), every label set summed."""
    return sum(sample.value for sample in _samples(text) if sample.name == name)


def proc_stats(pid: int) -> dict[str, float]:
    """RSS, peak RSS (MiB) and CPU seconds (user + system) of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kib = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    hwm_kib = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu_seconds = (int(fields[11]) + int(fields[12])) / ticks
    return {
        "rss_mib": round(rss_kib / 1024, 1),
        "peak_rss_mib": round(hwm_kib / 1024, 1),
        "cpu_seconds": cpu_seconds,
    }
