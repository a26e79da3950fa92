"""kubectl memoryguard — what the MemoryGuard agent sees of a pod in the cluster.

  kubectl memoryguard top [POD ...] [-n NAMESPACE] [-l SELECTOR]
  kubectl memoryguard explain POD [-n NAMESPACE]

`top` prints one line per container: anonymous memory (what only a restart gives back), page
cache (what reclaim can free), working set, limit, share of the limit, anon growth and OOM
kills. `explain` is seed 000's `watch kubectl exec … cat memory.stat` script on one screen,
with MemoryGuard's verdict: page cache that reclaim can free, or anon growth that only a
restart fixes, and the forecast time to the limit.

How it reaches the agent: it finds the pod's node, the MemoryGuard agent pod on that node
(namespace --agent-namespace, default memoryguard), and opens `kubectl port-forward` to it.
The agent authenticates every call itself (TokenReview + SubjectAccessReview, as the kubelet
does), and the API server's service proxy would not carry your token to it (the API server
consumes the Authorization header), so the plugin sends a bearer token directly:

  * by default, the token your kubeconfig authenticates with (static token, token file, exec
    plugin such as `aws eks get-token`, OIDC): the agent then checks YOUR permissions;
  * --service-account NS/NAME: a 10-minute token for that ServiceAccount, minted with
    a TokenRequest (what `kubectl create token` does) — for kubeconfigs that use client certificates,
    which cannot be forwarded. The chart creates `memoryguard-plugin` for this.

You need: get pods in the pod's namespace; get/list pods and create pods/portforward in the
agent namespace; and get on memoryguard.io agents/samples (the chart's ClusterRole
`<release>-samples-reader`). --agent-url skips the port-forward (an agent you can reach).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memoryguard.engine.assessment import Assessment, assess
from memoryguard.engine.model import Sample
from memoryguard.engine.policy import Policy

AGENT_SELECTOR = "app.kubernetes.io/name=memoryguard,app.kubernetes.io/component=agent"
AGENT_PORT = 9732
TOKEN_SECONDS = 600  # minted ServiceAccount tokens live this long
MIB = 1024 * 1024
# `kubectl port-forward` prints this once the tunnel listens.
_FORWARDING = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+) ->")


class PluginError(Exception):
    """A failure the user can act on; printed without a traceback."""


@dataclass
class Kubectl:
    """Runs kubectl with the user's kubeconfig and context, so every auth method just works."""

    binary: str = "kubectl"
    kubeconfig: str | None = None
    context: str | None = None

    def base(self) -> list[str]:
        argv = [self.binary]
        if self.kubeconfig:
            argv += ["--kubeconfig", self.kubeconfig]
        if self.context:
            argv += ["--context", self.context]
        return argv

    def run(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            [*self.base(), *args], input=stdin, capture_output=True, text=True, timeout=60
        )
        if result.returncode != 0:
            raise PluginError(f"kubectl {' '.join(args)}: {result.stderr.strip() or result.stdout.strip()}")
        return result.stdout

    def get_raw(self, path: str, **query: str) -> dict[str, Any]:
        """GET an API path through kubectl: the user's auth, no discovery round trips."""
        if query:
            path += "?" + urllib.parse.urlencode(query)
        data: dict[str, Any] = json.loads(self.run("get", "--raw", path))
        return data


# ------------------------------------------------------------------------------ finding things


def _q(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def find_pods(
    kubectl: Kubectl, namespace: str, names: Sequence[str], selector: str | None
) -> list[dict[str, Any]]:
    base = f"/api/v1/namespaces/{_q(namespace)}/pods"
    if names:
        return [kubectl.get_raw(f"{base}/{_q(name)}") for name in names]
    pods: list[dict[str, Any]] = kubectl.get_raw(base, **({"labelSelector": selector} if selector else {}))[
        "items"
    ]
    return pods


def find_agent(kubectl: Kubectl, namespace: str, selector: str, node: str) -> dict[str, Any]:
    """The running agent pod on ``node``. Filtered here too: selectors are a server nicety."""
    listed = kubectl.get_raw(
        f"/api/v1/namespaces/{_q(namespace)}/pods",
        labelSelector=selector,
        fieldSelector=f"spec.nodeName={node}",
    )
    wanted = dict(pair.split("=", 1) for pair in selector.split(",") if "=" in pair)
    for pod in listed.get("items", []):
        labels = pod.get("metadata", {}).get("labels", {})
        if pod.get("spec", {}).get("nodeName") != node or not wanted.items() <= labels.items():
            continue
        if pod.get("status", {}).get("phase") == "Running":
            return pod
    raise PluginError(
        f"no running MemoryGuard agent on node {node} in namespace {namespace} "
        f"(selector {selector}); is the DaemonSet installed there? (--agent-namespace)"
    )


def container_names(pod: dict[str, Any]) -> dict[str, str]:
    """Runtime container ID (64 hex, no scheme) -> container name, from the pod's status."""
    status = pod.get("status", {})
    names = {}
    for key in ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"):
        for entry in status.get(key) or []:
            container_id = (entry.get("containerID") or "").rpartition("://")[2]
            if container_id:
                names[container_id] = entry["name"]
    return names


# ------------------------------------------------------------------------------ credentials


def user_token(kubeconfig: str | None, context: str | None) -> str | None:
    """The bearer token the user's kubeconfig authenticates with, if it uses one."""
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
    except config.ConfigException as exc:
        raise PluginError(f"cannot load kubeconfig: {exc}") from exc
    if configuration.refresh_api_key_hook is not None:
        configuration.refresh_api_key_hook(configuration)  # exec plugins: a fresh token
    # The client has stored it as "authorization" and, since v35, as "BearerToken".
    for value in (configuration.api_key or {}).values():
        scheme, _, token = str(value).partition(" ")
        if scheme.lower() == "bearer" and token:
            return token
    return None


def mint_token(kubectl: Kubectl, namespace: str, name: str) -> str:
    """A short-lived token for a ServiceAccount (TokenRequest), as `kubectl create token` makes,
    posted as JSON through `kubectl create --raw` so it works with any API server."""
    request = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": TOKEN_SECONDS},
    }
    path = f"/api/v1/namespaces/{_q(namespace)}/serviceaccounts/{_q(name)}/token"
    answer = json.loads(kubectl.run("create", "--raw", path, "-f", "-", stdin=json.dumps(request)))
    token = answer.get("status", {}).get("token")
    if not token:
        raise PluginError(f"the API server returned no token for {namespace}/{name}")
    return str(token)


def resolve_token(args: argparse.Namespace, kubectl: Kubectl) -> str:
    if args.token:
        return str(args.token)
    if args.token_file:
        return Path(args.token_file).read_text().strip()
    if args.service_account:
        namespace, sep, name = args.service_account.partition("/")
        if not sep or not namespace or not name:
            raise PluginError("--service-account must be NAMESPACE/NAME, e.g. memoryguard/memoryguard-plugin")
        return mint_token(kubectl, namespace, name)
    token = user_token(kubectl.kubeconfig, kubectl.context)
    if token is None:
        raise PluginError(
            "your kubeconfig does not authenticate with a bearer token (client certificates cannot be "
            "forwarded to the agent): use --service-account memoryguard/memoryguard-plugin (docs/install.md)"
        )
    return token


# ------------------------------------------------------------------------------ the agent


def forwarded_port(line: str) -> int | None:
    match = _FORWARDING.search(line)
    return int(match.group(1)) if match else None


@contextlib.contextmanager
def agent_url(args: argparse.Namespace, kubectl: Kubectl, agent: dict[str, Any] | None) -> Iterator[str]:
    """An HTTP base URL for the agent: --agent-url, or a port-forward kept open meanwhile."""
    if args.agent_url:
        yield str(args.agent_url).rstrip("/")
        return
    assert agent is not None
    meta = agent["metadata"]
    process = subprocess.Popen(
        [
            *kubectl.base(),
            "port-forward",
            "-n",
            meta["namespace"],
            f"pod/{meta['name']}",
            f":{args.agent_port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = None
        deadline = time.monotonic() + 20
        while port is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            port = forwarded_port(line)
        if port is None:
            process.kill()
            error = process.stderr.read() if process.stderr else ""
            raise PluginError(
                f"kubectl port-forward to {meta['namespace']}/{meta['name']} failed: {error.strip()}"
            )
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


def fetch_pods(url: str, token: str, uids: Sequence[str], window_seconds: int) -> dict[str, Any]:
    query = urllib.parse.urlencode([("uid", uid) for uid in uids] + [("window_seconds", str(window_seconds))])
    request = urllib.request.Request(f"{url}/v1/pods?{query}", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            data: dict[str, Any] = json.loads(response.read())
            return data
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise PluginError(
                "the agent did not accept the token (401): it is not valid for this cluster"
            ) from exc
        if exc.code == 403:
            raise PluginError(
                "the agent refused (403): you need `get` on memoryguard.io agents/samples "
                "(bind the chart's ClusterRole <release>-samples-reader)"
            ) from exc
        raise PluginError(f"agent answered {exc.code}: {exc.read().decode(errors='replace')[:300]}") from exc
    except urllib.error.URLError as exc:
        raise PluginError(f"cannot reach the agent at {url}: {exc.reason}") from exc


# ------------------------------------------------------------------------------ rendering


@dataclass
class ContainerView:
    namespace: str
    pod: str
    container: str
    latest: Sample
    samples: list[Sample]
    entry: dict[str, Any]

    def assessment(self, now_seconds: float) -> Assessment:
        return assess(self.samples or [self.latest], Policy(), now_seconds=now_seconds)


def _samples(entry: dict[str, Any]) -> list[Sample]:
    window = entry.get("window") or {}
    columns = window.get("columns") or []
    return [Sample.from_dict(dict(zip(columns, row, strict=False))) for row in window.get("rows") or []]


def views(pods: Sequence[dict[str, Any]], answers: Sequence[dict[str, Any]]) -> list[ContainerView]:
    by_uid = {p["metadata"]["uid"]: p for p in pods}
    found = []
    for answer in answers:
        for agent_pod in answer.get("pods", []):
            pod = by_uid.get(agent_pod["pod_uid"])
            if pod is None:
                continue
            names = container_names(pod)
            for entry in agent_pod.get("containers", []):
                name = names.get(entry["container_id"])
                if name is None:
                    continue  # the pod sandbox (pause), or a container already gone from the status
                found.append(
                    ContainerView(
                        namespace=pod["metadata"]["namespace"],
                        pod=pod["metadata"]["name"],
                        container=name,
                        latest=Sample.from_dict(entry["latest"]),
                        samples=_samples(entry),
                        entry=entry,
                    )
                )
    return sorted(found, key=lambda v: (v.namespace, v.pod, v.container))


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value / MIB:.0f}Mi"


def render_top(rows: Sequence[ContainerView], now_seconds: float) -> str:
    header = (
        "NAMESPACE",
        "POD",
        "CONTAINER",
        "ANON",
        "FILE",
        "WORKING-SET",
        "LIMIT",
        "%LIMIT",
        "ANON/MIN",
        "OOM-KILLS",
    )
    table = [header]
    for view in rows:
        s = view.latest
        share = f"{100 * s.working_set_bytes / s.max_bytes:.0f}%" if s.max_bytes else "-"
        forecast = view.assessment(now_seconds).forecast
        growth = "-" if forecast is None else f"{forecast.growth_bytes_per_second * 60 / MIB:+.1f}Mi"
        table.append(
            (
                view.namespace,
                view.pod,
                view.container,
                _mib(s.anon_bytes),
                _mib(s.file_bytes),
                _mib(s.working_set_bytes),
                _mib(s.max_bytes),
                share,
                growth,
                str(s.oom_kill),
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join(
        "   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table
    )


def render_explain(view: ContainerView, now_seconds: float) -> str:
    s = view.latest
    e = view.entry
    limit = s.max_bytes
    lines = [f"{view.namespace}/{view.pod} container {view.container}", ""]
    usage = f"{_mib(s.usage_bytes)} of {_mib(limit)}" if limit else f"{_mib(s.usage_bytes)} (no limit)"
    if limit:
        usage += f" ({100 * s.usage_bytes / limit:.1f}%)"
    lines += [
        "=== USAGE ===",
        f"  memory.current      {usage}",
        f"  working set         {_mib(s.working_set_bytes)}",
    ]
    lines += [
        "",
        "=== SWAP ===",
        f"  swap used           {_mib(s.swap_current_bytes)}",
        f"  swap max            {'max' if s.swap_max_bytes is None else _mib(s.swap_max_bytes)}",
    ]
    lines += ["", "=== BREAKDOWN ==="]
    stat = e.get("stat") or {}
    for key in (
        "anon",
        "file",
        "shmem",
        "inactive_anon",
        "active_anon",
        "inactive_file",
        "active_file",
        "slab_reclaimable",
        "swapcached",
        "zswap",
        "zswapped",
    ):
        if key in stat:
            lines.append(f"  {key:<20}{stat[key] / MIB:>10.2f} MiB")
    lines += ["", "=== EVENTS ==="]
    lines += [f"  {k:<20}{v}" for k, v in (e.get("events") or {}).items()]
    lines += ["", "=== SWAP EVENTS ==="]
    lines += [f"  {k:<20}{v}" for k, v in (e.get("swap_events") or {}).items()] or ["  no swap events file"]
    lines += ["", "=== MEMORY.HIGH ===", f"  {'max' if s.high_bytes is None else _mib(s.high_bytes)}"]
    verdict = view.assessment(now_seconds)
    lines += ["", "=== VERDICT ===", f"  {verdict.verdict.value}: {verdict.evidence}"]
    if verdict.forecast is not None and verdict.forecast.eta_seconds is not None:
        lines.append(
            f"  forecast: {verdict.forecast.limit_label} in about {verdict.forecast.eta_seconds / 60:.0f} min"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------ command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="{top,explain}")
    top = sub.add_parser("top", help="one line per container: anon, page cache, limit, growth, OOM kills")
    top.add_argument("pods", nargs="*", metavar="POD", help="pod names (default: every pod of the namespace)")
    top.add_argument("-l", "--selector", help="label selector, as in kubectl get -l")
    explain = sub.add_parser("explain", help="one-screen diagnosis of a pod's containers, with a verdict")
    explain.add_argument("pods", nargs=1, metavar="POD")
    for each in (top, explain):
        each.add_argument(
            "-n", "--namespace", default=None, help="the pods' namespace (default: the context's)"
        )
        each.add_argument("--context", help="kubeconfig context")
        each.add_argument("--kubeconfig", help="kubeconfig file")
        each.add_argument(
            "--agent-namespace", default="memoryguard", help="where the agents run (%(default)s)"
        )
        each.add_argument("--agent-selector", default=AGENT_SELECTOR, help="agent pod labels (%(default)s)")
        each.add_argument("--agent-port", type=int, default=AGENT_PORT)
        each.add_argument("--agent-url", help="reach the agent here instead of through a port-forward")
        each.add_argument(
            "--window", type=int, default=600, metavar="SECONDS", help="history to fetch (%(default)s)"
        )
        who = each.add_mutually_exclusive_group()
        who.add_argument("--token", help="bearer token to present to the agent")
        who.add_argument("--token-file", help="file holding that token")
        who.add_argument(
            "--service-account", metavar="NS/NAME", help="mint a short-lived token for this account"
        )
        each.add_argument("--kubectl", default=shutil.which("kubectl") or "kubectl", help=argparse.SUPPRESS)


def _context_namespace(kubectl: Kubectl) -> str:
    namespace = kubectl.run("config", "view", "--minify", "-o", "jsonpath={..namespace}").strip()
    return namespace or "default"


def run(args: argparse.Namespace) -> int:
    kubectl = Kubectl(binary=args.kubectl, kubeconfig=args.kubeconfig, context=args.context)
    namespace = args.namespace or _context_namespace(kubectl)
    pods = find_pods(kubectl, namespace, args.pods, getattr(args, "selector", None))
    if not pods:
        print(f"No pods in namespace {namespace}.")
        return 0
    token = resolve_token(args, kubectl)
    by_node: dict[str, list[dict[str, Any]]] = {}
    for pod in pods:
        node = pod.get("spec", {}).get("nodeName")
        if not node:
            print(f"{pod['metadata']['name']}: not scheduled yet", file=sys.stderr)
            continue
        by_node.setdefault(node, []).append(pod)
    answers = []
    for node, node_pods in sorted(by_node.items()):
        agent = (
            None if args.agent_url else find_agent(kubectl, args.agent_namespace, args.agent_selector, node)
        )
        with agent_url(args, kubectl, agent) as url:
            uids = [p["metadata"]["uid"] for p in node_pods]
            answers.append(fetch_pods(url, token, uids, args.window))
    rows = views(pods, answers)
    now = time.time()
    if args.action == "top":
        print(render_top(rows, now))
    else:
        if not rows:
            raise PluginError(f"the agent has no containers of {args.pods[0]} (not running yet?)")
        print("\n\n".join(render_explain(view, now) for view in rows))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `kubectl-memoryguard` executable that kubectl finds on PATH."""
    parser = argparse.ArgumentParser(
        prog="kubectl memoryguard",
        description=(__doc__ or "").strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except PluginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
