"""Fixtures of the kernel tier: one rig per session, one boot per scenario batch.

Without QEMU or the fetched kernel the tier is skipped with the reason; in CI (CI=true) a
missing piece fails instead, so the tier can never pass by not running.
Set MEMORYGUARD_RECORD_TRACES=1 to copy each scenario's trace (written by `memoryguard record` in
the guest) to tests/traces/kernel-<name>.csv, or to a directory's path to copy them there. A
batch may name a subdirectory for its traces: the guarded batch's go to guarded/, outside the
corpus `memoryguard bench tests/traces` scores (it reads a directory's own *.csv only), since
MemoryGuard acted on two of them while they were recorded and the third is its dry-run twin.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.kernel.rig import REPO_ROOT, Kernel, Rig, RigError, ScenarioResult, missing_pieces, run_scenarios

TRACES_DIR = REPO_ROOT / "tests" / "traces"
GUEST_MEMORY_MIB = 3072


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="session")
def rig() -> Rig:
    missing = missing_pieces()
    if missing:
        reason = "kernel rig unavailable, missing: " + "; ".join(missing)
        if _in_ci():
            pytest.fail(f"{reason} (CI=true: the kernel tier must run in CI; `make install` installs it)")
        pytest.skip(reason)
    kernel = Kernel.unpacked()
    assert kernel is not None
    rig = Rig(kernel, memory_mib=GUEST_MEMORY_MIB)
    rig.prepare()
    return rig


ScenarioBatch = Callable[..., dict[str, ScenarioResult]]


@pytest.fixture(scope="session")
def scenario_batch(rig: Rig) -> ScenarioBatch:
    """Runs a batch of scenarios in one boot (once per session per batch name)."""
    done: dict[str, dict[str, ScenarioResult]] = {}

    def run(
        batch: str,
        names: list[str],
        timeout_seconds: float,
        swap_mib: int = 0,
        agent: bool = False,
        trace_subdir: str = "",
    ):
        if batch not in done:
            try:
                done[batch] = run_scenarios(rig, batch, names, timeout_seconds, swap_mib, agent)
            except RigError as exc:
                pytest.fail(str(exc), pytrace=False)
            target = os.environ.get("MEMORYGUARD_RECORD_TRACES", "")
            if target:
                directory = (TRACES_DIR if target == "1" else Path(target)) / trace_subdir
                directory.mkdir(parents=True, exist_ok=True)
                for name, result in done[batch].items():
                    if result.trace_path.is_file():
                        shutil.copyfile(result.trace_path, directory / f"kernel-{name}.csv")
        return done[batch]

    return run
