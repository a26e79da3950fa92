"""Generated files match their sources: `make chart-sync` regenerates all three.

- charts/memoryguard/crds/memoryguard.yaml is a byte-for-byte copy of crds/memoryguard.yaml;
- deploy/memoryguard.yaml is the chart rendered with default values (scripts/render_manifests.py);
- docs/reference.md is generated from the CRD schema (scripts/gen_reference.py).
"""

from __future__ import annotations

import subprocess
import sys

import yaml
from tests.chart.kube import ROOT, load_all, tool, validation_errors

SYNC_HINT = "out of date: run `make chart-sync` and commit the result"


def test_chart_crd_is_identical_to_the_top_level_crd() -> None:
    top = (ROOT / "crds" / "memoryguard.yaml").read_bytes()
    copy = (ROOT / "charts" / "memoryguard" / "crds" / "memoryguard.yaml").read_bytes()
    assert copy == top, f"charts/memoryguard/crds/memoryguard.yaml {SYNC_HINT}"


def _run_script(*args: str) -> str:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, check=True, capture_output=True, text=True, timeout=120
    ).stdout


def test_deploy_manifest_is_the_chart_rendered_with_defaults() -> None:
    rendered = _run_script("scripts/render_manifests.py", "--helm", tool("helm"))
    committed = (ROOT / "deploy" / "memoryguard.yaml").read_text()
    assert committed == rendered, f"deploy/memoryguard.yaml {SYNC_HINT}"


def test_deploy_manifest_objects_are_valid_and_start_with_a_privileged_namespace() -> None:
    objects = load_all((ROOT / "deploy" / "memoryguard.yaml").read_text())
    assert validation_errors(objects) == []
    namespace = objects[0]
    assert namespace["kind"] == "Namespace"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert {o["metadata"].get("namespace", "memoryguard") for o in objects} == {"memoryguard"}
    crds = [o["metadata"]["name"] for o in objects if o["kind"] == "CustomResourceDefinition"]
    assert "memoryguards.memoryguard.io" in crds


def test_reference_doc_is_generated_from_the_crd() -> None:
    generated = _run_script("scripts/gen_reference.py")
    committed = (ROOT / "docs" / "reference.md").read_text()
    assert committed == generated, f"docs/reference.md {SYNC_HINT}"


def test_reference_doc_lists_every_spec_field_of_the_crd() -> None:
    crd = yaml.safe_load((ROOT / "crds" / "memoryguard.yaml").read_text())
    (version,) = crd["spec"]["versions"]
    doc = (ROOT / "docs" / "reference.md").read_text()

    def paths(node: dict, prefix: str) -> list[str]:
        found = [prefix]
        for name, child in node.get("properties", {}).items():
            found += paths(child, f"{prefix}.{name}")
        if isinstance(node.get("items"), dict) and "properties" in node["items"]:
            found += paths(node["items"], f"{prefix}[]")  # scalar items are described by the list
        return found

    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for path in paths(spec, ".spec")[1:]:
        assert f"`{path}`" in doc, f"{path} missing from docs/reference.md"
