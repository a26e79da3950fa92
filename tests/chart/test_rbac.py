"""The chart's RBAC is exactly what the code uses: nothing missing, nothing extra.

The operator's roles, then (at the end) the plugin's roles and the metrics scraper's role.

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
- ``kubectl memoryguard``: the requests the real plugin, through the real kubectl, makes to
  KMock, and the SubjectAccessReviews the real agent posts for its calls (see below).
- The scraper: the SubjectAccessReview the real agent posts for the path the chart's monitors
  scrape with the scraper's token.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import pytest
from tests.chart.conftest import AGENT_NAMESPACE, NODE, USER, agent_pod
from tests.chart.kube import ROOT, render
from tests.support.review_stub import ACCESS_REVIEWS

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


# --------------------------------------------------------------- kubectl memoryguard (plugin)
#
# The plugin's API calls are observed, not listed: the real `kubectl memoryguard` runs through
# the real kubectl against KMock (every request recorded) and the real agent (every
# SubjectAccessReview it posts recorded by the review stub), once per way the plugin can go:
# pods by name or by selector, top and explain, the user's token or a minted one, --agent-url
# or its own port-forward (which kubectl really attempts, up to the tunnel KMock cannot open).

PluginRule = tuple[
    str, str, str, str
]  # (scope: cluster | agent namespace | pods' namespace, group, resource, verb)
STREAMING = {"pods/portforward", "pods/exec", "pods/attach"}
KUBECTL_FUNNELS = {"run", "get_raw", "Popen"}  # how the plugin reaches kubectl (and through it the API)


def plugin_call_sites() -> set[str]:
    """Functions of the plugin that run kubectl: each must be exercised by a run below."""
    import ast

    from memoryguard.commands import kubectl_plugin

    tree = ast.parse(Path(kubectl_plugin.__file__).read_text())
    functions = [(node.name, node) for node in tree.body if isinstance(node, ast.FunctionDef)]
    functions += [
        (f"{cls.name}.{node.name}", node)
        for cls in tree.body
        if isinstance(cls, ast.ClassDef)
        for node in cls.body
        if isinstance(node, ast.FunctionDef)
    ]
    return {
        name
        for name, function in functions
        for call in ast.walk(function)
        if isinstance(call, ast.Call)
        and isinstance(call.func, ast.Attribute)
        and call.func.attr in KUBECTL_FUNNELS
    }


def rules_of_kube_request(method: str, path: str, upgrade: str | None) -> set[Rule]:
    rule = rule_of_request(method, path)
    rules = {rule}
    if upgrade and upgrade.lower() == "websocket" and rule[1] in STREAMING:
        # Since Kubernetes 1.35 the API server also checks `create` on a WebSocket upgrade to a
        # streaming subresource (AuthorizePodWebsocketUpgradeCreatePermission); before, `get`.
        rules.add((rule[0], rule[1], "create"))
    return rules


def access_rule(attributes: dict[str, Any]) -> tuple[str, str, str]:
    """A SubjectAccessReview's attributes as an RBAC rule: (group, resource[/sub] or URL, verb)."""
    if "nonResourceAttributes" in attributes:
        url = attributes["nonResourceAttributes"]
        return ("", url["path"], url["verb"])
    res = attributes["resourceAttributes"]
    resource = res["resource"] + (f"/{res['subresource']}" if res.get("subresource") else "")
    return (res.get("group", ""), resource, res["verb"])


def plugin_runs(sa_name: str) -> dict[str, tuple[list[str], bool]]:
    """name -> (`kubectl memoryguard` arguments, through --agent-url)."""
    return {
        "top, pods by name": (["top", "web-1", "-n", "shop"], True),
        "top, pods by selector": (["top", "-n", "shop", "-l", "app=web"], True),
        "explain": (["explain", "web-1", "-n", "shop"], True),
        "minted ServiceAccount token": (
            ["top", "web-1", "-n", "shop", "--service-account", f"{AGENT_NAMESPACE}/{sa_name}"],
            True,
        ),
        "its own port-forward": (["top", "web-1", "-n", "shop"], False),
    }


def role_rules(role: dict[str, Any], scope: str) -> set[PluginRule]:
    return {
        (scope, group, resource, verb)
        for rule in role["rules"]
        for group in rule.get("apiGroups", [""])
        for resource in rule.get("resources", rule.get("nonResourceURLs", []))
        for verb in rule["verbs"]
    }


def _component(objects: list[dict[str, Any]], component: str, *kinds: str) -> list[dict[str, Any]]:
    return [
        o
        for o in objects
        if o["kind"] in kinds
        and o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
    ]


async def test_chart_grants_the_plugin_exactly_what_its_runs_call(env: Any) -> None:
    from memoryguard.agent import auth

    objects = render(namespace=AGENT_NAMESPACE, include_crds=False)
    (account,) = _component(objects, "plugin", "ServiceAccount")
    sa_name = account["metadata"]["name"]
    sa_user = f"system:serviceaccount:{AGENT_NAMESPACE}:{sa_name}"

    # A cluster in which every run gets as far as it can: pods in "shop" on NODE, the agent pod
    # on NODE, the users granted the agent's samples, a TokenRequest answered.
    env.guarded_pod("web-1")
    env.kmock.objects["v1/pods", AGENT_NAMESPACE, "mg-agent-1"] = agent_pod(NODE, name="mg-agent-1")
    env.stub.add_user("minted-token", sa_user)
    for user in (USER, sa_user):
        env.stub.grant(user, auth.samples_access(NODE).to_review())
    minted = env.kmock["post", env.kmock.resource("v1/serviceaccounts"), env.kmock.subresource("token")]
    minted << {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "status": {"token": "minted-token"},
    }
    await asyncio.sleep(0.6)  # the agent samples the pod

    for name, (args, through_agent_url) in plugin_runs(sa_name).items():
        code, _, err = await env.plugin(*args, through_agent_url=through_agent_url)
        if through_agent_url:
            assert code == 0, f"{name}: {err}"
        else:  # as far as KMock lets it: the port-forward is refused at the upgrade
            assert code == 1 and "port-forward" in err and "error upgrading connection" in err, (
                f"{name}: {err}"
            )

    derived: set[PluginRule] = set()
    token_names = set()
    for request in env.resource_requests():
        namespace = request.path.split("/namespaces/")[1].split("/")[0]
        scope = {AGENT_NAMESPACE: "agent namespace", "shop": "pods' namespace"}[namespace]
        for group, resource, verb in rules_of_kube_request(request.method, request.path, request.upgrade):
            derived.add((scope, group, resource, verb))
        if request.path.endswith("/token"):
            token_names.add(request.path.split("/")[-2])
    reviews = env.stub.reviews(ACCESS_REVIEWS)
    assert {r.spec["user"] for r in reviews} == {USER, sa_user}
    derived |= {("cluster", *access_rule(r.spec)) for r in reviews}

    # Every way to kubectl in the plugin was taken by some run above.
    assert plugin_call_sites() == {
        "Kubectl.run",  # every call below but port_forward's goes through it
        "Kubectl.get_raw",
        "find_pods",
        "find_agent",
        "mint_token",
        "_context_namespace",  # `kubectl config view`: no API call
        "port_forward",
    }, "a new kubectl call in the plugin: add a run above that takes it"

    roles = _component(objects, "plugin", "ClusterRole", "Role")
    granted: set[PluginRule] = set()
    for role in roles:
        scope = "cluster" if role["kind"] == "ClusterRole" else "agent namespace"
        assert role["kind"] == "ClusterRole" or role["metadata"]["namespace"] == AGENT_NAMESPACE
        granted |= role_rules(role, scope)
    # The pods' own namespace is the user's business (any `view` grant has it), not the chart's.
    users_own = {r for r in derived if r[0] == "pods' namespace"}
    assert users_own == {("pods' namespace", "", "pods", "get"), ("pods' namespace", "", "pods", "list")}
    derived -= users_own
    assert sorted(derived - granted) == [], (
        "the plugin calls these, the chart's plugin roles do not grant them"
    )
    assert sorted(granted - derived) == [], (
        "granted by the chart's plugin roles but never called by the plugin"
    )

    # Minting is allowed for the chart's ServiceAccount only, and that account may read samples.
    (token_rule,) = [
        rule
        for role in roles
        for rule in role["rules"]
        if "serviceaccounts/token" in rule.get("resources", [])
    ]
    assert token_names == {sa_name} and token_rule["resourceNames"] == [sa_name]
    sa_reviews = {access_rule(r.spec) for r in reviews if r.spec["user"] == sa_user}
    (binding,) = _component(objects, "plugin", "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa_name, "namespace": AGENT_NAMESPACE}]
    (bound,) = [r for r in roles if r["metadata"]["name"] == binding["roleRef"]["name"]]
    assert {rule[1:] for rule in role_rules(bound, "cluster")} == sa_reviews


@pytest.mark.parametrize("monitor", ["serviceMonitor", "podMonitor"])
async def test_chart_grants_the_scraper_exactly_what_the_agent_checks_on_the_scraped_paths(
    env: Any, monitor: str
) -> None:
    objects = render({f"metrics.{monitor}.enabled": True}, namespace=AGENT_NAMESPACE, include_crds=False)
    (secret,) = _component(objects, "metrics", "Secret")
    account = secret["metadata"]["annotations"]["kubernetes.io/service-account.name"]
    scraper = f"system:serviceaccount:{AGENT_NAMESPACE}:{account}"
    endpoints = [
        endpoint
        for o in objects
        if o["kind"] in ("ServiceMonitor", "PodMonitor")
        for endpoint in o["spec"].get("endpoints", []) + o["spec"].get("podMetricsEndpoints", [])
        if endpoint.get("authorization", {}).get("credentials", {}).get("name") == secret["metadata"]["name"]
    ]
    assert endpoints, "no monitor presents the scraper's token"
    env.stub.add_user("scraper-token", scraper)
    async with aiohttp.ClientSession() as session:
        for endpoint in endpoints:
            assert endpoint["port"] == "api"  # the agent's port: the operator's /metrics has no auth
            headers = {"Authorization": "Bearer scraper-token"}
            async with session.get(env.agent_url + endpoint["path"], headers=headers) as response:
                assert response.status == 403  # nothing granted yet: the review below is what it asks
    derived = {access_rule(r.spec) for r in env.stub.reviews(ACCESS_REVIEWS) if r.spec["user"] == scraper}
    assert derived, "the agent asked nothing about the scraper"

    (role,) = _component(objects, "metrics", "ClusterRole")
    granted = {rule[1:] for rule in role_rules(role, "cluster")}
    assert granted == derived
    (binding,) = _component(objects, "metrics", "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": AGENT_NAMESPACE}]
