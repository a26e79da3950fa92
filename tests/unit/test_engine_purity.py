"""The engine must stay pure: decisions reproducible from samples alone (see STYLE, DESIGN)."""

import ast
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[2] / "operator" / "memoryguard" / "engine"
FORBIDDEN_ROOTS = {
    "kopf",
    "kubernetes",
    "aiohttp",
    "tenacity",
    "prometheus_client",
    "yaml",
    "requests",
    "os",
    "io",
    "pathlib",
    "shutil",
    "socket",
    "subprocess",
    "time",
    "datetime",
    "asyncio",
    "random",
    "threading",
    "urllib",
    "http",
}
FORBIDDEN_INTERNAL = (
    "memoryguard.agent",
    "memoryguard.controller",
    "memoryguard.commands",
    "memoryguard.cli",
)
FORBIDDEN_CALLS = {"open", "print", "input"}


def _engine_files() -> list[Path]:
    return sorted(ENGINE.rglob("*.py"))


@pytest.mark.parametrize("path", _engine_files(), ids=lambda p: p.name)
def test_engine_module_imports_no_io_clock_or_cluster_library(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            assert name.split(".")[0] not in FORBIDDEN_ROOTS, f"{path.name} imports {name}"
            assert not name.startswith(FORBIDDEN_INTERNAL), f"{path.name} imports {name}"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in FORBIDDEN_CALLS, f"{path.name} calls {node.func.id}()"


def test_purity_check_sees_the_engine() -> None:
    assert len(_engine_files()) >= 2
