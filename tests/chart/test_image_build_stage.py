"""The image's build stage, run for real without a Docker engine (there is none here or in CI).

The Dockerfile's build stage is: a virtualenv, `pip install --no-compile .` from a context that
holds only what .dockerignore lets through, with docker/constraints.txt as PIP_CONSTRAINT, then
`memoryguard --version`. This test does exactly that in a temporary directory (with this
interpreter, the image's Python minor version), and then checks what the image would hold:
no broken requirements, every installed distribution pinned by the constraints at that exact
version (nothing the lock forgot), and both entry points importing everything they run
(a module the wheel left out, or a dependency missing from pyproject.toml, fails here while the
editable dev install would hide it). The base image and the final stage are NOT exercised.
Needs PyPI (or a pip cache holding the pinned versions), as `make install` does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.chart.image import CONSTRAINTS, constraint_pins, distribution_key
from tests.chart.kube import ROOT

# What the Dockerfile COPYs into the build stage (tests/chart/test_dockerfile.py checks that
# these are exactly the COPY sources and that .dockerignore lets them through).
CONTEXT = ("pyproject.toml", "README.md", "operator")
# Installed by venv itself, not by the project's requirements.
TOOLING = {"pip", "setuptools", "wheel"}
# Every module the two entry points and the CLI import at start-up.
ENTRY_MODULES = (
    "memoryguard.cli",
    "memoryguard.agent.main",
    "memoryguard.agent.server",
    "memoryguard.agent.metrics",
    "memoryguard.controller.main",
    "memoryguard.controller.handlers",
    "memoryguard.commands.kubectl_plugin",
)

pytestmark = pytest.mark.slow


def _run(argv: list[str], env: dict[str, str] | None = None) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, f"{argv}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("image")
    context = work / "src"
    context.mkdir()
    for name in CONTEXT:
        source = ROOT / name
        if source.is_dir():
            skip = shutil.ignore_patterns("__pycache__", "*.egg-info")  # as .dockerignore does
            shutil.copytree(source, context / name, ignore=skip)
        else:
            shutil.copy2(source, context / name)
    (context / "docker").mkdir()
    shutil.copy2(CONSTRAINTS, context / "docker" / "constraints.txt")
    venv = work / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    env = {
        **os.environ,
        "PIP_CONSTRAINT": str(context / "docker" / "constraints.txt"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    env.pop("PYTHONPATH", None)  # the image knows nothing of this checkout
    _run([str(venv / "bin" / "pip"), "install", "--no-compile", str(context)], env=env)
    return venv


def test_the_build_stage_installs_and_reports_its_version(image_venv: Path) -> None:
    out = _run([str(image_venv / "bin" / "memoryguard"), "--version"])
    assert "0.1.0" in out, out


def test_every_installed_distribution_is_pinned_at_its_constraint(image_venv: Path) -> None:
    _run([str(image_venv / "bin" / "pip"), "check"])
    frozen = _run([str(image_venv / "bin" / "pip"), "list", "--format=freeze", "--exclude-editable"])
    installed = {}
    for line in frozen.splitlines():
        name, _, version = line.partition("==")
        installed[distribution_key(name)] = version
    pins = constraint_pins()
    unpinned = sorted(set(installed) - set(pins) - TOOLING - {"memoryguard"})
    assert not unpinned, f"installed without a pin (run scripts/lock_image_deps.py): {unpinned}"
    wrong = {name: (v, pins[name]) for name, v in installed.items() if pins.get(name, v) != v}
    assert not wrong, wrong
    assert installed.get("memoryguard") == "0.1.0"


def test_entry_points_import_everything_they_run_from_the_installed_wheel(image_venv: Path) -> None:
    python = str(image_venv / "bin" / "python")
    code = (
        "import importlib, memoryguard\n"
        f"for name in {ENTRY_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "print(memoryguard.__file__)\n"
    )
    where = _run([python, "-I", "-c", code]).strip()
    assert where.startswith(str(image_venv)), f"imported from {where}, not from the installed wheel"
    for command in ("agent", "operator", "top", "explain"):
        out = _run([str(image_venv / "bin" / "memoryguard"), command, "--help"])
        assert "usage:" in out, (command, out)
