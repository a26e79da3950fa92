"""Real tools and real schemas for the chart tests: helm, and validators for every kind we render.

- Built-in kinds: ``kubernetes-validate`` (PyPI), the Kubernetes 1.35 OpenAPI schemas converted
  to JSON Schema, in strict mode (unknown fields fail, as ``kubectl apply`` with server-side
  field validation does).
- ServiceMonitor / PodMonitor: the validators generated from prometheus-operator's API types
  (npm ``@kubernetes-models/prometheus-operator``, run with node). They check types, enums and
  patterns but, unlike the API server, let unknown fields through.
- Custom resources of CRDs we ship (MemoryGuard, Kopf peerings): the CRD's own openAPIV3Schema
  with ``jsonschema``, made strict the way the API server is for structural schemas (unknown
  fields are errors unless ``x-kubernetes-preserve-unknown-fields``), and its CEL rules
  evaluated with ``cel-python``.

A tool that is missing makes the test FAIL in CI (``CI=true``) and skip with the reason locally.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "memoryguard"
TOOLS_BIN = ROOT / ".tools" / "bin"
NPM_MODULES = ROOT / ".tools" / "npm" / "node_modules"
KUBERNETES_VERSION = "1.35"
PROMETHEUS_OPERATOR_KINDS = {"ServiceMonitor", "PodMonitor"}


def missing(reason: str) -> None:
    """CI must have every tool (`make install` provides them); a workstation may lack some."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: a missing tool fails; run `make install`)")
    pytest.skip(reason)


def tool(name: str) -> str:
    local = TOOLS_BIN / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which(name)
    if found is None:
        missing(f"{name} not found in .tools/bin or PATH (bash scripts/install-kube-tools.sh)")
    assert found is not None
    return found


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([tool("helm"), *args], capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def set_args(values: dict[str, Any]) -> list[str]:
    """``--set-json`` per top-level path, so nested dicts and lists pass through unchanged."""
    args: list[str] = []
    for key, value in values.items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    return args


def render(
    values: dict[str, Any] | None = None, *, namespace: str = "memoryguard", include_crds: bool = True
) -> list[dict[str, Any]]:
    args = ["template", "mg", str(CHART), "--namespace", namespace, *set_args(values or {})]
    if include_crds:
        args.append("--include-crds")
    return load_all(helm(*args).stdout)


def load_all(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


# ---------------------------------------------------------------------------- built-in kinds


def validate_builtin(obj: dict[str, Any]) -> None:
    """Raises ``kubernetes_validate.ValidationError`` (or SchemaNotFoundError) on a bad object."""
    try:
        import kubernetes_validate
    except ImportError:
        missing("kubernetes-validate is not installed (pip install -e '.[dev]')")
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


# ------------------------------------------------------------------- prometheus-operator kinds

_NODE_VALIDATOR = """
import { readFileSync } from "node:fs";
const objects = JSON.parse(readFileSync(0, "utf8"));
const errors = [];
for (const obj of objects) {
  const mod = await import(
    `@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/${obj.kind}`);
  try { new mod[obj.kind](obj).validate(); }
  catch (e) { errors.push(`${obj.kind}/${obj.metadata?.name}: ${e.message}`); }
}
process.stdout.write(JSON.stringify(errors));
"""


def validate_prometheus_operator(objects: Sequence[dict[str, Any]]) -> list[str]:
    """Error messages, one per invalid object (empty when all are valid)."""
    if not objects:
        return []
    node = shutil.which("node")
    if node is None:
        missing("node is not installed (Debian nodejs)")
    if not (NPM_MODULES / "@kubernetes-models" / "prometheus-operator").is_dir():
        missing(
            "@kubernetes-models/prometheus-operator is not installed (bash scripts/install-kube-tools.sh)"
        )
    script = ROOT / ".tools" / "npm" / "validate-prometheus-operator.mjs"
    if not script.exists() or script.read_text() != _NODE_VALIDATOR:
        script.write_text(_NODE_VALIDATOR)
    result = subprocess.run(
        [str(node), str(script)],
        input=json.dumps(list(objects)),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=script.parent,
    )
    if result.returncode != 0:
        raise AssertionError(f"prometheus-operator validator crashed:\n{result.stderr}")
    errors: list[str] = json.loads(result.stdout)
    return errors


# ----------------------------------------------------------------- custom resources (our CRDs)


def _walk(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("properties", {}).values():
        yield from _walk(child)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from _walk(node[key])
    for key in ("anyOf", "allOf", "oneOf"):
        for child in node.get(key, []):
            yield from _walk(child)


def strict_json_schema(openapi: dict[str, Any]) -> dict[str, Any]:
    """A CRD's structural OpenAPI v3 schema as the JSON Schema the API server effectively applies.

    ``nullable`` allows null; ``x-kubernetes-int-or-string`` allows both; an object with
    ``properties`` and no ``x-kubernetes-preserve-unknown-fields`` refuses unknown fields
    (server-side strict field validation, the kubectl default since 1.27).
    """
    schema = copy.deepcopy(openapi)
    for node in _walk(schema):
        if node.pop("nullable", False) and "type" in node:
            node["type"] = [node["type"], "null"]
        if node.get("x-kubernetes-int-or-string"):
            node.pop("type", None)
        if (
            node.get("type") == "object"
            and "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
    # apiVersion, kind and metadata are always allowed at the root; metadata is checked by the
    # API server's ObjectMeta rules, not by the CRD schema.
    properties = schema.setdefault("properties", {})
    properties.setdefault("apiVersion", {"type": "string"})
    properties.setdefault("kind", {"type": "string"})
    properties["metadata"] = {"type": "object"}
    return schema


def apply_defaults(node: dict[str, Any], value: Any) -> Any:
    """Structural defaulting as the API server does it, before validation and CEL."""
    if isinstance(value, dict):
        for name, child in node.get("properties", {}).items():
            if name not in value and "default" in child:
                value[name] = copy.deepcopy(child["default"])
            if name in value:
                value[name] = apply_defaults(child, value[name])
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        value[:] = [apply_defaults(node["items"], item) for item in value]
    return value


def _cel_errors(node: dict[str, Any], value: Any, path: str) -> list[str]:
    import celpy

    def replace(text: Any, old: Any, new: Any) -> Any:
        # Kubernetes' CEL strings extension; cel-python lacks it.
        return celpy.celtypes.StringType(str(text).replace(str(old), str(new)))

    errors: list[str] = []
    env = celpy.Environment()
    for rule in node.get("x-kubernetes-validations", []):
        program = env.program(env.compile(rule["rule"]), functions={"replace": replace})
        result = program.evaluate({"self": celpy.json_to_cel(value)})
        if result is not True and not (isinstance(result, celpy.celtypes.BoolType) and bool(result)):
            errors.append(f"{path or '.'}: {rule.get('message', rule['rule'])}")
    if isinstance(value, dict):
        for name, child in node.get("properties", {}).items():
            if name in value:
                errors += _cel_errors(child, value[name], f"{path}.{name}")
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for i, item in enumerate(value):
            errors += _cel_errors(node["items"], item, f"{path}[{i}]")
    return errors


def crd_errors(obj: dict[str, Any], crds: Iterable[dict[str, Any]]) -> list[str]:
    """Validation errors of a custom resource against the matching CRD (schema, then CEL)."""
    import jsonschema

    group, _, version = obj["apiVersion"].rpartition("/")
    for crd in crds:
        if crd["spec"]["group"] != group or crd["spec"]["names"]["kind"] != obj["kind"]:
            continue
        for served in crd["spec"]["versions"]:
            if served["name"] != version:
                continue
            openapi = served["schema"]["openAPIV3Schema"]
            defaulted = apply_defaults(openapi, copy.deepcopy(obj))
            validator = jsonschema.Draft202012Validator(strict_json_schema(openapi))
            errors = [
                f"{'.'.join(str(p) for p in e.absolute_path) or '.'}: {e.message}"
                for e in validator.iter_errors(defaulted)
            ]
            return errors or _cel_errors(openapi, defaulted, "")
        return [f"{obj['apiVersion']} is not a served version of {crd['metadata']['name']}"]
    raise LookupError(f"no CRD for {obj['apiVersion']} {obj['kind']}")


def chart_crds() -> list[dict[str, Any]]:
    return [doc for path in sorted((CHART / "crds").glob("*.yaml")) for doc in load_all(path.read_text())]


# ------------------------------------------------------------------------------ everything


def validation_errors(objects: Sequence[dict[str, Any]]) -> list[str]:
    """Every rendered object through the validator for its kind; a kind without one is an error."""
    crds = chart_crds() + [o for o in objects if o.get("kind") == "CustomResourceDefinition"]
    crd_kinds = {(c["spec"]["group"], c["spec"]["names"]["kind"]) for c in crds}
    errors: list[str] = []
    monitors = [o for o in objects if o.get("kind") in PROMETHEUS_OPERATOR_KINDS]
    errors += validate_prometheus_operator(monitors)
    import kubernetes_validate

    for obj in objects:
        name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        if obj.get("kind") in PROMETHEUS_OPERATOR_KINDS:
            continue
        group = obj.get("apiVersion", "").rpartition("/")[0]
        if (group, obj.get("kind")) in crd_kinds:
            errors += [f"{name}: {e}" for e in crd_errors(obj, crds)]
            continue
        try:
            validate_builtin(obj)
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f"{name}: no schema to validate {obj.get('apiVersion')} {obj.get('kind')} against")
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            errors.append(f"{name}: {path}: {e.message}")
    return errors
