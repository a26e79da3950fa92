"""The MemoryGuard CRD, checked as far as possible without a real API server.

What runs here:
- the CRD object against the strict apiextensions.k8s.io/v1 JSON schema of Kubernetes 1.35
  (kubernetes-validate: unknown or misspelled fields and wrong types fail);
- every ``default`` against the schema node it sits in (a default the API server would
  reject makes the CRD fail to install);
- example MemoryGuards against the CRD's openAPIV3Schema after structural defaulting
  (jsonschema; the ``x-kubernetes-*`` extensions are not JSON Schema and are ignored);
- every CEL rule compiled and evaluated (cel-python) on good and bad examples.

What cannot run here: the API server's own structural-schema checks and its CEL cost
budget (only kube-apiserver computes those), and Kubernetes' CEL libraries: ``replace``
(the strings extension) is provided to cel-python below with the same semantics.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import pytest
import yaml

CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / "memoryguard.yaml"
KUBERNETES_VERSION = "1.35.0"  # the kubectl/helm shipped in .tools/bin


def _crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())


def _schema() -> dict[str, Any]:
    (version,) = _crd()["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every schema node with its path (``.spec.forecast.window``; ``[]`` for array items)."""
    found = [(path, node)]
    for name, child in node.get("properties", {}).items():
        found += _walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        found += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        found += _walk(node["additionalProperties"], f"{path}{{}}")
    return found


def _json_schema(node: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI v3 (Kubernetes flavour) to JSON Schema: ``nullable`` becomes a null type."""
    node = copy.deepcopy(node)
    for _, sub in _walk(node):
        if sub.pop("nullable", False) and "type" in sub:
            sub["type"] = [sub["type"], "null"]
    return node


def _apply_defaults(node: dict[str, Any], value: Any) -> Any:
    """Structural defaulting as the API server does it: fill missing fields of present objects."""
    if isinstance(value, dict):
        for name, child in node.get("properties", {}).items():
            if name not in value and "default" in child:
                value[name] = copy.deepcopy(child["default"])
            if name in value:
                value[name] = _apply_defaults(child, value[name])
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        value[:] = [_apply_defaults(node["items"], item) for item in value]
    return value


def _cel_replace(text: celpy.celtypes.StringType, old: Any, new: Any) -> celpy.celtypes.StringType:
    return celpy.celtypes.StringType(str(text).replace(str(old), str(new)))


def _cel_errors(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Evaluate every x-kubernetes-validations rule on the value, as the API server would."""
    errors: list[str] = []
    env = celpy.Environment()
    for rule in schema.get("x-kubernetes-validations", []):
        program = env.program(env.compile(rule["rule"]), functions={"replace": _cel_replace})
        try:
            result = program.evaluate({"self": celpy.json_to_cel(value)})
        except celpy.CELEvalError as error:  # the API server rejects the object on these too
            errors.append(f"{path or '.'}: evaluation error in {rule['rule']!r}: {error.args[0]}")
            continue
        if not isinstance(result, celpy.celtypes.BoolType) or not result:
            errors.append(f"{path or '.'}: {rule['message'].strip()}")
    if isinstance(value, dict):
        for name, child in schema.get("properties", {}).items():
            if name in value:
                errors += _cel_errors(child, value[name], f"{path}.{name}")
        if isinstance(schema.get("additionalProperties"), dict):
            for name, item in value.items():
                errors += _cel_errors(schema["additionalProperties"], item, f"{path}.{name}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            errors += _cel_errors(schema["items"], item, f"{path}[{index}]")
    return errors


def _guard(**spec: Any) -> dict[str, Any]:
    body = {
        "apiVersion": "memoryguard.io/v1alpha1",
        "kind": "MemoryGuard",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, **spec},
    }
    return _apply_defaults(_schema(), body)


def _problems(body: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(_json_schema(_schema()))
    problems = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)]
    return problems + _cel_errors(_schema(), body)


def test_crd_is_a_valid_apiextensions_v1_object_for_kubernetes_1_35() -> None:
    kubernetes_validate.validate(_crd(), KUBERNETES_VERSION, strict=True)


def test_crd_names_group_version_and_short_name() -> None:
    crd = _crd()
    assert crd["metadata"]["name"] == "memoryguards.memoryguard.io"
    assert crd["spec"]["group"] == "memoryguard.io"
    assert crd["spec"]["names"]["kind"] == "MemoryGuard"
    assert crd["spec"]["names"]["plural"] == "memoryguards"
    assert crd["spec"]["names"]["shortNames"] == ["mg"]
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}


def test_printer_columns_point_at_fields_the_schema_declares() -> None:
    (version,) = _crd()["spec"]["versions"]
    declared = {path for path, _ in _walk(_schema())}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert {"Watched", "At Risk", "Last Action", "Age"} <= set(columns)
    for name, json_path in columns.items():
        field = json_path.split("[", 1)[0]
        assert field == ".metadata.creationTimestamp" or field in declared, name


@pytest.mark.parametrize(("path", "node"), [(p, n) for p, n in _walk(_schema()) if "default" in n])
def test_every_default_is_valid_against_its_own_schema(path: str, node: dict[str, Any]) -> None:
    default = _apply_defaults(node, copy.deepcopy(node["default"]))
    jsonschema.Draft202012Validator(_json_schema(node)).validate(default)
    assert _cel_errors(node, default) == [], path


def test_every_schema_node_has_a_type_as_structural_schemas_require() -> None:
    for path, node in _walk(_schema()):
        untyped_allowed = node.get("x-kubernetes-int-or-string") or node.get(
            "x-kubernetes-preserve-unknown-fields"
        )
        assert "type" in node or untyped_allowed, path


def test_minimal_guard_gets_the_documented_defaults() -> None:
    spec = _guard()["spec"]
    assert spec["forecast"] == {"window": "10m", "horizon": "15m", "minSamples": 20}
    assert spec["thresholds"] == {"warn": "80%", "act": "90%"}
    assert spec["actions"]["restart"] == {
        "enabled": True,
        "cooldown": "30m",
        "maxPerHour": 2,
        "rolloutSeconds": 120,
    }
    assert spec["actions"]["dropCaches"]["enabled"] is False
    assert spec["dryRun"] is False
    assert _problems(_guard()) == []


def test_full_example_from_the_resource_reference_is_valid() -> None:
    body = _guard(
        containers=["app"],
        forecast={"window": "1h30m", "horizon": "2h", "minSamples": 60},
        thresholds={"warn": "70%", "act": "95%"},
        actions={
            "reclaim": {"enabled": True, "cooldown": "2m", "minReclaimable": "64Mi"},
            "dropCaches": {"enabled": True, "level": 3, "cooldown": "1h"},
            "restart": {"enabled": True, "cooldown": "30m", "maxPerHour": 1, "rolloutSeconds": 300},
            "evict": {"enabled": False},
        },
        dryRun=True,
    )
    assert _problems(body) == []


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        pytest.param(
            {"thresholds": {"warn": "90%", "act": "90%"}}, "warn must be lower", id="warn-equals-act"
        ),
        pytest.param(
            {"thresholds": {"warn": "95%", "act": "90%"}}, "warn must be lower", id="warn-above-act"
        ),
        pytest.param({"thresholds": {"act": "101%"}}, "does not match", id="percent-above-100"),
        pytest.param({"thresholds": {"act": "0%"}}, "does not match", id="percent-zero"),
        pytest.param({"thresholds": {"act": "90"}}, "does not match", id="percent-without-sign"),
        pytest.param({"forecast": {"window": "10 minutes"}}, "does not match", id="duration-words"),
        pytest.param({"forecast": {"window": "5s"}}, "at least 10s", id="window-too-short"),
        pytest.param(
            {"forecast": {"window": "20s", "minSamples": 30}}, "hold at least minSamples", id="window-thin"
        ),
        pytest.param(
            {"forecast": {"horizon": "1m"}, "actions": {"restart": {"rolloutSeconds": 120}}},
            "horizon must be longer",
            id="horizon-shorter-than-rollout",
        ),
        pytest.param({"actions": {"dropCaches": {"level": 4}}}, "is not one of", id="drop-caches-level"),
        pytest.param(
            {"actions": {"restart": {"maxPerHour": -1}}}, "less than the minimum", id="negative-budget"
        ),
        pytest.param(
            {"actions": {"reclaim": {"minReclaimable": "16 MB"}}}, "does not match", id="quantity-syntax"
        ),
        pytest.param({"containers": ["App_1"]}, "does not match", id="container-name"),
        pytest.param({"selector": {}}, "selector must not be empty", id="empty-selector"),
        pytest.param(
            {"selector": {"matchExpressions": [{"key": "app", "operator": "In"}]}},
            "values must be non-empty",
            id="in-without-values",
        ),
        pytest.param(
            {"selector": {"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["x"]}]}},
            "values must be non-empty",
            id="exists-with-values",
        ),
        pytest.param({"dryRun": "yes"}, "is not of type", id="dry-run-type"),
    ],
)
def test_invalid_guard_is_rejected_naming_the_problem(spec: dict[str, Any], fragment: str) -> None:
    problems = _problems(_guard(**spec))
    assert any(fragment in problem for problem in problems), problems


def test_restart_disabled_lifts_the_horizon_versus_rollout_rule() -> None:
    body = _guard(forecast={"horizon": "1m"}, actions={"restart": {"enabled": False, "rolloutSeconds": 120}})
    assert _problems(body) == []


def test_selector_with_expressions_only_is_valid() -> None:
    body = _guard(selector={"matchExpressions": [{"key": "tier", "operator": "Exists"}]})
    assert _problems(body) == []


def test_status_written_by_the_operator_fits_the_schema() -> None:
    body = _guard()
    body["status"] = {
        "observedGeneration": 3,
        "podsWatched": 4,
        "podsAtRisk": 1,
        "lastAction": "restart deployment/web 2026-11-22T10:03:00Z",
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Watching",
                "message": "4 pods",
                "lastTransitionTime": "2026-11-22T10:00:00Z",
            },
        ],
        "atRisk": [
            {
                "pod": "web-1",
                "container": "app",
                "verdict": "anon_growth",
                "usedPercent": 91.5,
                "etaSeconds": None,
                "limitBytes": None,
                "anonGrowthBytesPerSecond": 1024.0,
            }
        ],
        "ledger": [
            {
                "id": "r-1",
                "time": "2026-11-22T10:03:00Z",
                "action": "restart",
                "target": "deployment/web",
                "state": "intent",
                "dryRun": False,
            }
        ],
        "rateLimit": {"anything": ["the", "engine", "keeps"]},
    }
    assert _problems(body) == []
