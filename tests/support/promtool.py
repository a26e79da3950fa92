"""``promtool check metrics`` for the tests that lint a /metrics exposition."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def promtool() -> str:
    """promtool's path; in CI (CI=true) its absence fails the test instead of skipping it."""
    path = shutil.which("promtool")
    if path is None:
        message = "promtool not found (Debian package `prometheus`; `make install` installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def promtool_check(text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60, check=False
    )
