"""`kubectl memoryguard top|explain`, run by the real kubectl, against KMock and a real agent.

- real `kubectl` (.tools/bin) finds the `kubectl-memoryguard` executable on PATH and runs it;
- the plugin reads pods through kubectl from KMock (the API server), with a kubeconfig whose
  user has a bearer token;
- the real `memoryguard agent` process serves a fixture cgroup tree and authenticates the
  plugin's call with TokenReview + SubjectAccessReview against the review stub: the token the
  agent sees is the user's own, and the review asks exactly for agents/samples on the node.
- the plugin's own way to the agent: `find_agent` (the agent pod on the pod's node, filtered by
  the plugin itself, since KMock ignores label and field selectors) and `kubectl port-forward`
  run for real against KMock, up to the tunnel: kubectl looks the pod up, tries the WebSocket
  upgrade, falls back to SPDY, and KMock, which has no kubelet behind it, refuses the upgrade.

Not covered without a cluster: a port-forward tunnel that opens (the plugin reading kubectl's
live "Forwarding from" line, its request through the tunnel, and the teardown of an open
tunnel). The reading of that line is tested on kubectl's own format; the tests that reach
the agent pass --agent-url.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.chart.conftest import AGENT_LABELS, AGENT_NAMESPACE, NODE, USER, USER_TOKEN, PluginEnv, agent_pod
from tests.chart.kube import ROOT, load_all, render, tool
from tests.support.cgroup_tree import MiB
from tests.support.review_stub import ACCESS_REVIEWS, TOKEN_REVIEWS

from memoryguard.agent import auth
from memoryguard.annotations import AGENT_PORT_NAME
from memoryguard.commands import kubectl_plugin
from memoryguard.commands.explain import HEADLINES
from memoryguard.commands.kubectl_plugin import (
    AGENT_SELECTOR,
    Kubectl,
    PluginError,
    find_agent,
    forwarded_port,
    matches,
    port_forward,
    port_forward_command,
    selector_terms,
)
from memoryguard.engine import Verdict


async def _wait_sampled(env: PluginEnv) -> None:
    await asyncio.sleep(0.6)  # three agent ticks


async def test_top_shows_anon_file_and_limit_of_each_container_through_kubectl(env: PluginEnv) -> None:
    env.stub.grant(USER, auth.samples_access(NODE).to_review())
    env.guarded_pod("web-1", anon_bytes=150 * MiB, file_bytes=40 * MiB)
    await _wait_sampled(env)
    code, out, err = await env.plugin("top", "web-1", "-n", "shop")
    assert code == 0, err
    print(out)
    header, row = out.strip().splitlines()
    # The names kubectl knows, then the columns of `memoryguard top` (one table for both).
    assert header.split()[:8] == ["NAMESPACE", "POD", "CONTAINER", "ANON", "FILE", "WSET", "LIMIT", "%LIMIT"]
    cells = row.split()
    assert cells[:7] == ["shop", "web-1", "app", "150Mi", "40.0Mi", cells[5], "256Mi"]
    # The sandbox (pause) container is not in the pod's status, so it is not listed.
    assert len(out.strip().splitlines()) == 2


async def test_the_agent_authorizes_the_users_own_token_for_samples_on_that_node(env: PluginEnv) -> None:
    env.stub.grant(USER, auth.samples_access(NODE).to_review())
    env.guarded_pod("web-1", anon_bytes=100 * MiB, file_bytes=10 * MiB)
    await _wait_sampled(env)
    code, _, err = await env.plugin("top", "web-1", "-n", "shop")
    assert code == 0, err
    (token_review,) = env.stub.reviews(TOKEN_REVIEWS)
    assert token_review.spec["token"] == USER_TOKEN
    (access,) = env.stub.reviews(ACCESS_REVIEWS)
    assert access.spec["user"] == USER
    assert access.spec["resourceAttributes"] == auth.samples_access(NODE).to_review()["resourceAttributes"]


async def test_a_user_without_the_samples_grant_gets_a_clear_refusal(env: PluginEnv) -> None:
    env.guarded_pod("web-1", anon_bytes=100 * MiB, file_bytes=10 * MiB)
    code, _, err = await env.plugin("top", "web-1", "-n", "shop")
    assert code == 1
    assert "403" in err and "agents/samples" in err


async def test_explain_gives_the_seed_breakdown_and_a_verdict(env: PluginEnv) -> None:
    env.stub.grant(USER, auth.samples_access(NODE).to_review())
    env.guarded_pod("cache-1", anon_bytes=30 * MiB, file_bytes=200 * MiB)
    await _wait_sampled(env)
    code, out, err = await env.plugin("explain", "cache-1", "-n", "shop")
    assert code == 0, err
    for section in (
        "=== USAGE ===",
        "=== SWAP ===",
        "=== BREAKDOWN ===",
        "=== EVENTS ===",
        "=== MEMORY.HIGH ===",
    ):
        assert section in out
    assert "anon" in out and "200.00 MiB" in out  # memory.stat file, as seed 000's awk prints it
    print(out)
    # The engine's verdict in `memoryguard explain`'s words: page cache is never called a leak.
    headline = out.split("=== VERDICT ===")[1].strip().splitlines()[0]
    calm = (Verdict.INSUFFICIENT_DATA, Verdict.HEALTHY, Verdict.BOUNDED, Verdict.PAGE_CACHE_PRESSURE)
    assert headline in {HEADLINES[v] for v in calm}


async def test_a_pod_missing_from_the_cluster_is_reported_by_kubectl(env: PluginEnv) -> None:
    code, _, err = await env.plugin("top", "nope-" + uuid.uuid4().hex[:6], "-n", "shop")
    assert code == 1 and "error:" in err


async def test_kubectl_lists_the_plugin(env: PluginEnv) -> None:
    code, out, err = await env.kubectl("plugin", "list")
    assert code == 0, err
    assert "kubectl-memoryguard" in out


@pytest.mark.parametrize(
    "line,port",
    [
        ("Forwarding from 127.0.0.1:41235 -> 9732\n", 41235),
        ("Forwarding from [::1]:41235 -> 9732\n", None),
        ("Handling connection for 41235\n", None),
    ],
)
def test_port_forward_output_gives_the_local_port(line: str, port: int | None) -> None:
    assert forwarded_port(line) == port


async def test_service_account_token_is_minted_with_kubectl_and_presented_to_the_agent(
    env: PluginEnv,
) -> None:
    kmock = env.kmock
    requests = kmock["post", kmock.resource("v1/serviceaccounts"), kmock.subresource("token")]
    requests << {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"audiences": []},
        "status": {"token": "minted-plugin-token", "expirationTimestamp": "2030-01-01T00:00:00Z"},
    }
    plugin_user = "system:serviceaccount:memoryguard:memoryguard-plugin"
    env.stub.add_user("minted-plugin-token", plugin_user)
    env.stub.grant(plugin_user, auth.samples_access(NODE).to_review())
    env.guarded_pod("web-1", anon_bytes=100 * MiB, file_bytes=10 * MiB)
    await _wait_sampled(env)
    code, out, err = await env.plugin(
        "top", "web-1", "-n", "shop", "--service-account", "memoryguard/memoryguard-plugin"
    )
    assert code == 0, err
    assert "web-1" in out
    (token_review,) = env.stub.reviews(TOKEN_REVIEWS)
    assert token_review.spec["token"] == "minted-plugin-token"
    assert len(requests) == 1
    assert "/namespaces/memoryguard/serviceaccounts/memoryguard-plugin/token" in str(requests[0].url)


async def test_a_kubeconfig_without_a_token_is_told_to_use_a_service_account(env: PluginEnv) -> None:
    config = yaml.safe_load(env.kubeconfig.read_text())
    config["users"][0]["user"] = {}
    env.kubeconfig.write_text(yaml.safe_dump(config))
    env.guarded_pod("web-1", anon_bytes=100 * MiB, file_bytes=10 * MiB)
    code, _, err = await env.plugin("top", "web-1", "-n", "shop")
    assert code == 1 and "--service-account" in err


# ------------------------------------------------------------------------ finding the agent


def _put(env: PluginEnv, pod: dict[str, Any]) -> None:
    meta = pod["metadata"]
    env.kmock.objects["v1/pods", meta["namespace"], meta["name"]] = pod


def _agents_on_two_nodes_and_neighbours(env: PluginEnv) -> None:
    """What a list of the agent namespace returns when the server ignores the selectors."""
    _put(env, agent_pod("node-b"))
    # Sorts first and runs on node-a, but is being replaced (a DaemonSet rollout).
    _put(env, agent_pod(NODE, name="memoryguard-agent-aaaaa", deleting=True))
    _put(env, agent_pod(NODE))
    operator_labels = {**AGENT_LABELS, "app.kubernetes.io/component": "operator"}
    _put(env, agent_pod(NODE, name="memoryguard-operator-1", labels=operator_labels))
    _put(env, agent_pod(NODE, name="someone-else", labels={"app": "other"}))
    _put(env, agent_pod(NODE, name="agent-elsewhere", namespace="other-namespace"))


async def _find_agent(env: PluginEnv, node: str, namespace: str = AGENT_NAMESPACE) -> dict[str, Any]:
    # The plugin is synchronous and KMock serves on this event loop: run it in a thread.
    return await asyncio.to_thread(find_agent, env.kubectl_client(), namespace, AGENT_SELECTOR, node)


async def test_find_agent_picks_the_running_agent_on_the_pods_node_among_everything_listed(
    env: PluginEnv,
) -> None:
    _agents_on_two_nodes_and_neighbours(env)
    assert (await _find_agent(env, NODE))["metadata"]["name"] == f"memoryguard-agent-{NODE}"
    assert (await _find_agent(env, "node-b"))["metadata"]["name"] == "memoryguard-agent-node-b"
    # KMock ignored them, but an API server is asked to filter: by the labels and by the node.
    lists = [r for r in env.resource_requests() if r.path == f"/api/v1/namespaces/{AGENT_NAMESPACE}/pods"]
    assert [(r.method, r.query) for r in lists] == [
        ("GET", {"labelSelector": AGENT_SELECTOR, "fieldSelector": f"spec.nodeName={node}"})
        for node in (NODE, "node-b")
    ]


async def test_a_terminating_agent_is_used_when_it_is_the_only_one_running_on_the_node(
    env: PluginEnv,
) -> None:
    _put(env, agent_pod(NODE, deleting=True))
    _put(env, agent_pod(NODE, name="memoryguard-agent-new", phase="Pending"))
    assert (await _find_agent(env, NODE))["metadata"]["name"] == f"memoryguard-agent-{NODE}"


async def test_find_agent_says_clearly_when_no_agent_runs_on_the_node(env: PluginEnv) -> None:
    _put(env, agent_pod("node-b"))
    _put(
        env,
        agent_pod(
            NODE,
            name="memoryguard-operator-1",
            labels={**AGENT_LABELS, "app.kubernetes.io/component": "operator"},
        ),
    )
    with pytest.raises(PluginError) as raised:
        await _find_agent(env, NODE)
    message = str(raised.value)
    assert f"no MemoryGuard agent on node {NODE}" in message
    assert f"namespace {AGENT_NAMESPACE}" in message and AGENT_SELECTOR in message
    assert "--agent-namespace" in message
    # An agent namespace that holds none at all: the same answer, naming that namespace.
    with pytest.raises(PluginError, match=f"no MemoryGuard agent on node {NODE} in namespace elsewhere"):
        await _find_agent(env, NODE, namespace="elsewhere")


async def test_find_agent_names_an_agent_that_is_there_but_not_running(env: PluginEnv) -> None:
    _put(env, agent_pod(NODE, phase="Pending"))
    with pytest.raises(PluginError) as raised:
        await _find_agent(env, NODE)
    assert f"agent on node {NODE} is not running: memoryguard-agent-{NODE} is Pending" in str(raised.value)


@pytest.mark.parametrize(
    "selector,labels,wanted",
    [
        (AGENT_SELECTOR, AGENT_LABELS, True),
        (AGENT_SELECTOR, {**AGENT_LABELS, "app.kubernetes.io/component": "operator"}, False),
        (AGENT_SELECTOR, {"app.kubernetes.io/name": "memoryguard"}, False),
        ("tier==node,!canary", {"tier": "node"}, True),
        ("tier==node,!canary", {"tier": "node", "canary": "yes"}, False),
        ("tier!=web,zone", {"tier": "node", "zone": "a"}, True),
        ("tier!=web,zone", {"tier": "web", "zone": "a"}, False),
        ("tier!=web,zone", {"tier": "node"}, False),
    ],
)
def test_the_plugin_reads_equality_selectors_as_the_api_server_does(
    selector: str, labels: dict[str, str], wanted: bool
) -> None:
    assert matches(labels, selector_terms(selector)) is wanted


@pytest.mark.parametrize("selector", ["tier in (a,b)", "a=b,", "!a=b", "a=b c", "a>1"])
def test_a_selector_the_plugin_cannot_read_is_refused(selector: str) -> None:
    with pytest.raises(PluginError, match="is not an equality term"):
        selector_terms(selector)


async def test_an_unreadable_agent_selector_fails_before_any_api_call(env: PluginEnv) -> None:
    env.guarded_pod("web-1", anon_bytes=10 * MiB, file_bytes=10 * MiB)
    code, _, err = await env.plugin(
        "top", "web-1", "-n", "shop", "--agent-selector", "tier in (node)", through_agent_url=False
    )
    assert code == 1 and "--agent-selector" in err and "Traceback" not in err
    assert env.resource_requests() == []


def test_the_plugins_defaults_find_the_agents_the_chart_deploys() -> None:
    objects = render()
    terms = selector_terms(AGENT_SELECTOR)
    (daemonset,) = [o for o in objects if o["kind"] == "DaemonSet"]
    assert matches(daemonset["spec"]["template"]["metadata"]["labels"], terms)
    # The operator's pods carry the chart's name too: the selector must not pick them.
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    assert deployments and not any(
        matches(d["spec"]["template"]["metadata"]["labels"], terms) for d in deployments
    )
    (agent,) = daemonset["spec"]["template"]["spec"]["containers"]
    named = [p["containerPort"] for p in agent["ports"] if p["name"] == AGENT_PORT_NAME]
    assert named == [kubectl_plugin.AGENT_PORT]  # the port used when an agent pod names none
    deployed = load_all((ROOT / "deploy" / "memoryguard.yaml").read_text())
    (namespace,) = [o["metadata"]["name"] for o in deployed if o["kind"] == "Namespace"]
    parser = argparse.ArgumentParser()
    kubectl_plugin.add_arguments(parser)
    assert parser.parse_args(["top"]).agent_namespace == namespace == AGENT_NAMESPACE


# ------------------------------------------------------------------------------ port-forward


def _kubectl_children() -> list[str]:
    """Command lines of this test process's kubectl children, zombies included (not reaped)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        if parent == os.getpid() and "port-forward" in command:
            found.append(command)
    return found


async def _forward(kubectl: Kubectl, pod: str, **kwargs: Any) -> str:
    def open_and_close() -> str:
        with port_forward(kubectl, AGENT_NAMESPACE, pod, 9732, **kwargs) as url:
            return url

    return await asyncio.to_thread(open_and_close)


def test_port_forward_listens_on_loopback_only_and_names_the_agent_pod() -> None:
    kubectl = Kubectl(binary="/opt/kubectl", kubeconfig="/k/config", context="prod")
    assert port_forward_command(kubectl, "memoryguard", "memoryguard-agent-x1", 9732) == [
        "/opt/kubectl", "--kubeconfig", "/k/config", "--context", "prod", "port-forward",
        "--address", "127.0.0.1", "-n", "memoryguard", "pod/memoryguard-agent-x1", ":9732",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "ports,override,wanted",
    [
        ([{"name": "api", "containerPort": 19732}], None, 19732),
        ([], None, 9732),
        ([{"name": "api", "containerPort": 19732}], 7000, 7000),
    ],
)
def test_the_agent_port_is_the_pods_named_api_port(
    ports: list[dict[str, Any]], override: int | None, wanted: int
) -> None:
    pod = {"spec": {"containers": [{"name": "agent", "ports": ports}]}}
    assert kubectl_plugin.agent_port(pod, override) == wanted


async def test_a_refused_port_forward_reports_kubectls_error_and_leaves_no_process(env: PluginEnv) -> None:
    _put(env, agent_pod(NODE))
    with pytest.raises(PluginError) as raised:
        await _forward(env.kubectl_client(), f"memoryguard-agent-{NODE}")
    message = str(raised.value)
    # kubectl's own words: KMock answers the upgrade like a plain GET and the SPDY POST with 404.
    assert (
        f"kubectl port-forward to {AGENT_NAMESPACE}/memoryguard-agent-{NODE} failed (exit code 1)" in message
    )
    assert "error upgrading connection" in message
    assert _kubectl_children() == []
    # What the real kubectl asked for: the pod, then its portforward subresource, WebSocket
    # first (kubectl >= 1.31) and SPDY when the upgrade fails.
    pod_path = f"/api/v1/namespaces/{AGENT_NAMESPACE}/pods/memoryguard-agent-{NODE}"
    asked = [(r.method, r.path, r.upgrade) for r in env.resource_requests()]
    assert (("GET", pod_path, None)) in asked
    assert asked[-2:] == [
        ("GET", pod_path + "/portforward", "websocket"),
        ("POST", pod_path + "/portforward", "SPDY/3.1"),
    ]


async def test_port_forward_to_a_pod_that_is_not_running_gives_kubectls_reason(env: PluginEnv) -> None:
    _put(env, agent_pod(NODE, phase="Pending"))
    with pytest.raises(PluginError, match=r"pod is not running\. Current status=Pending"):
        await _forward(env.kubectl_client(), f"memoryguard-agent-{NODE}")
    assert not any(r.path.endswith("/portforward") for r in env.resource_requests())
    assert _kubectl_children() == []


async def test_a_port_forward_that_never_reports_a_port_is_given_up_and_stopped(tmp_path: Path) -> None:
    # An API server that accepts connections and never answers: kubectl waits (32 s, its own
    # discovery timeout); the plugin gives up on its deadline and stops kubectl.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {"name": "c", "cluster": {"server": f"http://127.0.0.1:{silent.getsockname()[1]}"}}
                    ],
                    "users": [{"name": "u", "user": {"token": "t"}}],
                    "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                    "current-context": "c",
                }
            )
        )
        kubectl = Kubectl(binary=tool("kubectl"), kubeconfig=str(kubeconfig))
        started = time.monotonic()
        with pytest.raises(PluginError, match="reported no local port within 1 s"):
            await _forward(kubectl, "memoryguard-agent-x", ready_seconds=1.0)
        assert time.monotonic() - started < 10
        assert _kubectl_children() == []


def test_a_missing_kubectl_is_named_not_a_traceback(tmp_path: Path) -> None:
    kubectl = Kubectl(binary=str(tmp_path / "no-kubectl"))
    with pytest.raises(PluginError, match=r"cannot run .*no-kubectl.*is kubectl on PATH"):
        kubectl.run("get", "--raw", "/api")
    with (
        pytest.raises(PluginError, match=r"cannot run .*no-kubectl"),
        port_forward(kubectl, "ns", "pod", 9732),
    ):
        pass


# ------------------------------------------------------- the whole way, without --agent-url


def _agents_and_a_guarded_pod(env: PluginEnv) -> None:
    _agents_on_two_nodes_and_neighbours(env)
    env.guarded_pod("web-1", anon_bytes=100 * MiB, file_bytes=10 * MiB)


async def test_top_port_forwards_to_the_agent_on_the_pods_node_and_reports_the_tunnels_failure(
    env: PluginEnv,
) -> None:
    _agents_and_a_guarded_pod(env)
    code, _, err = await env.plugin("top", "web-1", "-n", "shop", through_agent_url=False)
    assert code == 1 and "Traceback" not in err
    assert err.startswith(
        f"error: kubectl port-forward to {AGENT_NAMESPACE}/memoryguard-agent-{NODE} failed (exit code 1):"
    ), err
    forwarded = {r.path for r in env.resource_requests() if r.path.endswith("/portforward")}
    assert forwarded == {f"/api/v1/namespaces/{AGENT_NAMESPACE}/pods/memoryguard-agent-{NODE}/portforward"}
    assert _kubectl_children() == []


async def test_explain_without_an_agent_on_the_node_says_so(env: PluginEnv) -> None:
    _put(env, agent_pod("node-b"))
    env.guarded_pod("web-1", anon_bytes=100 * MiB, file_bytes=10 * MiB)
    code, _, err = await env.plugin("explain", "web-1", "-n", "shop", through_agent_url=False)
    assert code == 1 and "Traceback" not in err
    assert f"error: no MemoryGuard agent on node {NODE} in namespace {AGENT_NAMESPACE}" in err
    assert not any(r.path.endswith("/portforward") for r in env.resource_requests())
