"""The operator's RBAC in the chart is exactly what the code uses: nothing missing, nothing extra.

The API calls are derived from the code, not listed here:
- Kopf's own calls, from the handlers the operator really registers (``register()`` into a
  Kopf registry, then introspected): every resource with a handler or an index is listed and
  watched; one with change handlers or a timer (which needs a finalizer) is patched; Kopf posts
  Events; the peering resource is listed, watched and patched when the operator is peered.
- MemoryGuard's own calls, by running every public method of ``KubeApi`` (the only module that
  talks to the API server) with its HTTP funnel recording method and path: the paths and verbs
  are the ones the real methods build. A Kubernetes client used anywhere else fails the test.
- The agent API: the routes ``AgentClient`` calls, mapped to the SubjectAccessReview attributes
  the agent's server checks for each route (both read from their source).
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kopf
import pytest
from tests.chart.kube import ROOT, render

CONTROLLER = ROOT / "operator" / "memoryguard" / "controller"
Rule = tuple[str, str, str]  # (API group, resource[/subresource], verb)

VERB_OF_METHOD = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete", "WATCH": "watch"}
_PATH = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[^/]+)/[^/]+)/namespaces/[^/]+/(?P<resource>[^/]+)"
    r"(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?$"
)


def rule_of_request(method: str, path: str) -> Rule:
    match = _PATH.match(path.split("?")[0])
    assert match, f"unrecognised API path {path}"
    resource = match["resource"] + (f"/{match['sub']}" if match["sub"] else "")
    verb = VERB_OF_METHOD.get(method) or ("get" if match["name"] else "list")
    return (match["group"] or "", resource, verb)


# --------------------------------------------------------------------------- Kopf's own calls


def kopf_rules(*, standalone: bool, clusterwide: bool) -> set[Rule]:
    from memoryguard.controller.handlers import register
    from memoryguard.controller.settings import OperatorConfig, configure_kopf

    config = OperatorConfig(standalone=standalone, namespaces=() if clusterwide else ("shop",))
    registry = register(kopf.OperatorRegistry(), config)
    settings = kopf.OperatorSettings()
    configure_kopf(settings, config)
    rules: set[Rule] = set()
    for attr in ("_indexing", "_watching", "_spawning", "_changing"):
        for handler in getattr(registry, attr).get_all_handlers():
            selector = handler.selector
            resource = selector.plural or selector.any_name
            group = selector.group or ""
            rules |= {(group, resource, "list"), (group, resource, "watch")}
            patches = attr == "_changing" or (attr == "_spawning" and handler.requires_finalizer)
            if patches:
                rules.add((group, resource, "patch"))
    if settings.posting.enabled:
        rules.add(("", "events", "create"))
    if not settings.peering.standalone:
        plural = "clusterkopfpeerings" if settings.peering.clusterwide else "kopfpeerings"
        rules |= {("kopf.dev", plural, verb) for verb in ("list", "watch", "patch")}
    if not settings.scanning.disabled:
        rules |= {("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")}
        rules |= {("", "namespaces", v) for v in ("list", "watch")}
    return rules


# ------------------------------------------------------------------- MemoryGuard's own calls


def _arguments(name: str, signature: inspect.Signature, kind: str) -> dict[str, Any]:
    values = {"namespace": "shop", "name": "web", "uid": "0000", "kind": kind, "values": {"a": "b"},
              "body": {"metadata": {"name": "e"}}, "status": {"podsWatched": 1},
              "resource_version": "1"}  # fmt: skip
    arguments = {}
    for parameter in list(signature.parameters.values())[1:]:
        if parameter.name not in values:
            pytest.fail(f"KubeApi.{name}: no sample value for parameter {parameter.name!r}; add one here")
        arguments[parameter.name] = values[parameter.name]
    return arguments


def kubeapi_rules() -> set[Rule]:
    from memoryguard.controller import kubeapi, owners

    recorded: list[tuple[str, str]] = []

    class Recording(kubeapi.KubeApi):
        def __init__(self) -> None:  # no client: every call stops at the funnel below
            pass

        async def request(self, method: str, path: str, body: Any = None, **_: Any) -> dict[str, Any]:
            recorded.append((method, path))
            return {}

        async def stream(self, path: str, *_: Any, **__: Any) -> AsyncIterator[dict[str, Any]]:
            recorded.append(("WATCH", path))
            return
            yield {}

    api = Recording()
    methods = [
        (name, fn)
        for name, fn in inspect.getmembers(kubeapi.KubeApi, _is_async)
        if not name.startswith("_") and name not in ("request", "stream")
    ]
    assert methods, "KubeApi has no API methods?"
    for name, fn in methods:
        # Workloads are read through the owner chain (ReplicaSets included) but only rollable
        # kinds are patched: exactly what owners.py and the executors do.
        kinds = list(kubeapi.WORKLOADS) if name.startswith("get_") else list(owners.ROLLABLE)
        for kind in kinds if "kind" in inspect.signature(fn).parameters else [""]:
            arguments = _arguments(name, inspect.signature(fn), kind)
            call = getattr(api, name)(**arguments)
            asyncio.run(_drained(call) if inspect.isasyncgen(call) else call)
    return {rule_of_request(method, path) for method, path in recorded}


def _is_async(fn: Any) -> bool:
    """A request (coroutine) or a list or watch that yields as it goes (async generator)."""
    return inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)


async def _drained(stream: AsyncIterator[Any]) -> None:
    async for _ in stream:
        pass


def test_no_kubernetes_client_outside_the_kubeapi_adapter() -> None:
    offenders = []
    for path in sorted((ROOT / "operator" / "memoryguard").rglob("*.py")):
        if path.name == "kubeapi.py":
            continue
        text = path.read_text()
        if re.search(r"\b(CoreV1Api|AppsV1Api|CustomObjectsApi|PolicyV1Api|ApiClient\(|call_api\()", text):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == [], f"API calls outside controller/kubeapi.py escape this RBAC check: {offenders}"


# ------------------------------------------------------------------------------ the agent API


def agent_rules() -> set[Rule]:
    from memoryguard.agent import auth

    client = (CONTROLLER / "agentclient.py").read_text()
    server = (ROOT / "operator" / "memoryguard" / "agent" / "server.py").read_text()
    access = dict(re.findall(r'"(/[\w/-]+)": auth\.(\w+)\(', server))
    routes = set(re.findall(r"(/v1/[\w/-]+)[\"']", client))  # URL literals, f-strings included
    assert routes, "agentclient.py names no agent route?"
    rules = set()
    for route in routes:
        assert route in access, f"the agent's server has no access rule for {route}"
        review = getattr(auth, access[route])("node-a").to_review()["resourceAttributes"]
        rules.add((review["group"], f"{review['resource']}/{review['subresource']}", review["verb"]))
    return rules


# ------------------------------------------------------------------------------- the chart


def chart_rules(values: dict[str, Any]) -> set[Rule]:
    objects = render(values)
    operator_roles = [
        o
        for o in objects
        if o["kind"] in ("ClusterRole", "Role")
        and o["metadata"]["labels"].get("app.kubernetes.io/component") == "operator"
    ]
    rules = set()
    for role in operator_roles:
        for rule in role["rules"]:
            for group in rule.get("apiGroups", []):
                for resource in rule.get("resources", []):
                    for verb in rule["verbs"]:
                        rules.add((group, resource, verb))
    return rules


SCENARIOS = {
    "standalone, cluster-wide": ({}, True, True),
    "peered, cluster-wide": ({"operator.replicas": 2}, False, True),
    "peered, listed namespaces": (
        {"operator.replicas": 2, "operator.watchNamespaces": ["shop"]},
        False,
        False,
    ),
}


@pytest.mark.parametrize("values,standalone,clusterwide", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_chart_grants_the_operator_exactly_what_its_code_calls(
    values: dict[str, Any], standalone: bool, clusterwide: bool
) -> None:
    derived = kopf_rules(standalone=standalone, clusterwide=clusterwide) | kubeapi_rules() | agent_rules()
    granted = chart_rules(values)
    assert sorted(derived - granted) == [], "missing from the chart's operator RBAC"
    assert sorted(granted - derived) == [], "granted by the chart but never used by the code"


def test_derivation_sees_restarts_evictions_and_status_writes() -> None:
    rules = kubeapi_rules()
    assert ("apps", "deployments", "patch") in rules
    assert ("apps", "replicasets", "patch") not in rules  # read for the owner chain, never patched
    assert ("", "pods/eviction", "create") in rules
    assert ("memoryguard.io", "memoryguards/status", "patch") in rules
    assert {("", "pods", "list"), ("", "pods", "watch")} <= rules  # the operator's pod informer


def test_agent_access_matches_the_agent_api_contract() -> None:
    assert agent_rules() == {
        ("memoryguard.io", "agents/samples", "get"),
        ("memoryguard.io", "agents/actions", "create"),
    }


def test_agent_rbac_is_token_and_access_reviews_only() -> None:
    (role,) = [
        o
        for o in render()
        if o["kind"] == "ClusterRole"
        and o["metadata"]["labels"].get("app.kubernetes.io/component") == "agent"
    ]
    source = Path(ROOT / "operator" / "memoryguard" / "agent" / "auth.py").read_text()
    assert "/apis/authentication.k8s.io/v1/tokenreviews" in source
    assert "/apis/authorization.k8s.io/v1/subjectaccessreviews" in source
    assert role["rules"] == [
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
        {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
    ]
