"""The chart lints, renders and validates for default and non-default values, with real helm.

Every rendered object goes through a real schema validator for its kind (tests/chart/kube.py):
Kubernetes 1.35 strict schemas, prometheus-operator's generated validators, or the CRD's own
schema. The scenario assertions pin what each value is for (peering, drop-caches, ...).
"""

from __future__ import annotations

from typing import Any

import pytest
from tests.chart.kube import CHART, helm, render, set_args, validation_errors

SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "two-operators-with-peering": {"operator.replicas": 2},
    "peering-in-watched-namespaces": {"operator.replicas": 2, "operator.watchNamespaces": ["shop", "web"]},
    "drop-caches": {"agent.dropCaches.enabled": True, "agent.dropCaches.minInterval": "30m"},
    "service-monitors": {
        "metrics.serviceMonitor.enabled": True,
        "metrics.serviceMonitor.labels": {"release": "kps"},
    },
    "pod-monitors": {"metrics.podMonitor.enabled": True},
    "network-policy": {"networkPolicy.enabled": True, "networkPolicy.prometheus.enabled": True},
    "dashboard": {"dashboard.enabled": True, "dashboard.namespace": "monitoring"},
    "everything": {
        "operator.replicas": 2,
        "agent.dropCaches.enabled": True,
        "metrics.serviceMonitor.enabled": True,
        "metrics.podMonitor.enabled": True,
        "networkPolicy.enabled": True,
        "dashboard.enabled": True,
        "image.digest": "sha256:" + "ab" * 32,
        "imagePullSecrets": [{"name": "regcred"}],
        "rbac.aggregatePluginRoleToView": True,
    },
}


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    (found,) = [o for o in by_kind(objects, kind) if o["metadata"]["name"].endswith(name_suffix)]
    return found


def container(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (c,) = one(objects, kind)["spec"]["template"]["spec"]["containers"]
    return c


@pytest.mark.parametrize("values", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_helm_lint_strict_passes(values: dict[str, Any]) -> None:
    result = helm("lint", "--strict", str(CHART), *set_args(values), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_every_rendered_object_is_valid_against_its_schema(values: dict[str, Any]) -> None:
    objects = render(values)
    assert validation_errors(objects) == []


def test_validation_catches_a_broken_object() -> None:
    """The validators are not vacuous: a misspelled field and a wrong type are reported."""
    objects = render(SCENARIOS["everything"])
    container(objects, "DaemonSet")["securityContex"] = {}
    one(objects, "ServiceMonitor", "-agent")["spec"]["endpoints"][0]["interval"] = "every 30s"
    one(objects, "ClusterKopfPeering")["spec"] = {"unknown": True}
    errors = validation_errors(objects)
    assert any("securityContex" in e for e in errors), errors
    assert any("ServiceMonitor" in e and "interval" in e for e in errors), errors
    assert any("ClusterKopfPeering" in e for e in errors), errors


def test_defaults_run_one_standalone_operator_and_no_optional_objects() -> None:
    objects = render()
    assert one(objects, "Deployment")["spec"]["replicas"] == 1
    args = container(objects, "Deployment")["args"]
    assert "--standalone" in args
    assert not [a for a in args if a.startswith("--namespace")]  # cluster-wide
    kinds = {o["kind"] for o in objects}
    for optional in ("ServiceMonitor", "PodMonitor", "NetworkPolicy", "ConfigMap", "ClusterKopfPeering"):
        assert optional not in kinds


def test_two_replicas_peer_through_a_cluster_peering_object() -> None:
    objects = render(SCENARIOS["two-operators-with-peering"])
    assert one(objects, "Deployment")["spec"]["replicas"] == 2
    args = container(objects, "Deployment")["args"]
    assert "--peering=memoryguard" in args and "--standalone" not in args
    assert one(objects, "ClusterKopfPeering")["metadata"]["name"] == "memoryguard"
    rules = one(objects, "ClusterRole", "-operator-cluster")["rules"]
    assert {
        "apiGroups": ["kopf.dev"],
        "resources": ["clusterkopfpeerings"],
        "verbs": ["list", "watch", "patch"],
    } in rules


def test_watched_namespaces_get_role_bindings_and_namespaced_peerings() -> None:
    objects = render(SCENARIOS["peering-in-watched-namespaces"])
    args = container(objects, "Deployment")["args"]
    assert "--namespace=shop" in args and "--namespace=web" in args
    # The release namespace too: the operator finds the agents by watching pods there.
    assert "--namespace=memoryguard" in args
    served = {"shop", "web", "memoryguard"}
    assert {o["metadata"]["namespace"] for o in by_kind(objects, "RoleBinding")} == served
    assert {o["metadata"]["namespace"] for o in by_kind(objects, "KopfPeering")} == served
    assert not by_kind(objects, "ClusterKopfPeering")
    # Namespaced rules must not be granted cluster-wide when namespaces are listed.
    bound = {o["roleRef"]["name"] for o in by_kind(objects, "ClusterRoleBinding")}
    assert "mg-memoryguard-operator" not in bound


def test_agent_runs_on_every_node_as_node_critical() -> None:
    spec = one(render(), "DaemonSet")["spec"]["template"]["spec"]
    assert spec["priorityClassName"] == "system-node-critical"
    assert {"operator": "Exists"} in spec["tolerations"]
    assert not spec.get("hostPID") and not spec.get("hostNetwork")


def test_agent_security_context_is_root_without_capabilities_or_privilege() -> None:
    objects = render()
    pod = one(objects, "DaemonSet")["spec"]["template"]["spec"]
    ctx = container(objects, "DaemonSet")["securityContext"]
    assert pod["securityContext"]["runAsUser"] == 0
    assert ctx["privileged"] is False
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "hostUsers" not in pod  # uid 0 must be the host's root to own cgroup files


def test_operator_runs_non_root_without_capabilities() -> None:
    objects = render()
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    ctx = container(objects, "Deployment")["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert ctx["capabilities"] == {"drop": ["ALL"]} and ctx["readOnlyRootFilesystem"] is True


def _host_paths(objects: list[dict[str, Any]]) -> dict[str, tuple[str, bool]]:
    """hostPath -> (mount path, read-only) in the agent container."""
    pod = one(objects, "DaemonSet")["spec"]["template"]["spec"]
    volumes = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    (agent,) = pod["containers"]
    return {
        volumes[m["name"]]: (m["mountPath"], bool(m.get("readOnly")))
        for m in agent["volumeMounts"]
        if m["name"] in volumes
    }


def test_agent_mounts_only_the_cgroup_tree_without_drop_caches() -> None:
    objects = render()
    assert _host_paths(objects) == {"/sys/fs/cgroup": ("/host/sys/fs/cgroup", False)}
    args = container(objects, "DaemonSet")["args"]
    assert "--enable-drop-caches" not in args and "--proc-root=/proc" in args
    assert not any(a.startswith("--proc-sys-vm") for a in args)


def test_drop_caches_mounts_only_the_hosts_proc_sys_vm_writable_and_names_it() -> None:
    objects = render(SCENARIOS["drop-caches"])
    # Least privilege: the host's /proc/sys/vm and nothing else of its procfs, outside /proc
    # (runtimes refuse mounts there); meminfo and PSI come from the container's own /proc.
    assert _host_paths(objects) == {
        "/sys/fs/cgroup": ("/host/sys/fs/cgroup", False),
        "/proc/sys/vm": ("/host/proc-sys-vm", False),
    }
    agent = container(objects, "DaemonSet")
    assert not any(m["mountPath"].startswith("/proc") for m in agent["volumeMounts"])
    args = agent["args"]
    assert "--enable-drop-caches" in args
    assert "--drop-caches-min-interval=30m" in args
    assert "--proc-sys-vm=/host/proc-sys-vm" in args
    assert "--proc-root=/proc" in args


def test_network_policy_admits_only_the_operator_and_prometheus_to_the_agents() -> None:
    objects = render(SCENARIOS["network-policy"])
    policy = one(objects, "NetworkPolicy")
    agent_labels = one(objects, "DaemonSet")["spec"]["selector"]["matchLabels"]
    operator_labels = one(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["podSelector"]["matchLabels"] == agent_labels
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"][0] == {"podSelector": {"matchLabels": operator_labels}}
    assert rule["from"][1]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }
    assert rule["ports"] == [{"port": "api", "protocol": "TCP"}]
    without_prometheus = one(render({"networkPolicy.enabled": True}), "NetworkPolicy")
    assert len(without_prometheus["spec"]["ingress"][0]["from"]) == 1


@pytest.mark.parametrize("monitor", ["ServiceMonitor", "PodMonitor"])
def test_monitors_scrape_agents_with_a_token_allowed_only_metrics(monitor: str) -> None:
    key = "serviceMonitor" if monitor == "ServiceMonitor" else "podMonitor"
    objects = render({f"metrics.{key}.enabled": True})
    agent_monitor = one(objects, monitor, "-agent")
    endpoints = agent_monitor["spec"]["endpoints" if monitor == "ServiceMonitor" else "podMetricsEndpoints"]
    secret_name = endpoints[0]["authorization"]["credentials"]["name"]
    secret = one(objects, "Secret")
    assert secret["metadata"]["name"] == secret_name
    assert secret["type"] == "kubernetes.io/service-account-token"
    (rule,) = one(objects, "ClusterRole", "-scraper")["rules"]
    assert rule == {"nonResourceURLs": ["/metrics"], "verbs": ["get"]}


@pytest.mark.parametrize("monitor", ["ServiceMonitor", "PodMonitor"])
def test_operator_monitor_keeps_the_forecasts_pod_labels(monitor: str) -> None:
    # Without honorLabels, Prometheus would rename the forecast's namespace/pod/container labels
    # to exported_* and give them the operator pod's own: the dashboard's per-pod filter breaks.
    key = "serviceMonitor" if monitor == "ServiceMonitor" else "podMonitor"
    operator_monitor = one(render({f"metrics.{key}.enabled": True}), monitor, "-operator")
    (endpoint,) = operator_monitor["spec"][
        "endpoints" if monitor == "ServiceMonitor" else "podMetricsEndpoints"
    ]
    assert endpoint["honorLabels"] is True


def test_image_digest_overrides_the_tag() -> None:
    objects = render({"image.digest": "sha256:" + "0" * 64, "image.tag": "ignored"})
    assert container(objects, "DaemonSet")["image"] == "memoryguard@sha256:" + "0" * 64
    assert container(render(), "DaemonSet")["image"] == "memoryguard:0.1.0"
