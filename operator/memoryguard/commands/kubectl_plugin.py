"""kubectl memoryguard — what the MemoryGuard agent sees of a pod in the cluster.

  kubectl memoryguard top [POD ...] [-n NAMESPACE] [-l SELECTOR]
  kubectl memoryguard explain POD [-n NAMESPACE]

`top` prints one line per container, the table of `memoryguard top`: anonymous memory (what
only a restart gives back), page cache (what reclaim can free), working set, limit, share of
the limit, anon growth over --window and the kernel's memory events (OOM kills, limit hits).
`explain` is the screen of `memoryguard explain`: seed 000's `watch kubectl exec … cat
memory.stat` script on one screen, with MemoryGuard's verdict: page cache that reclaim can
free, or anon growth that only a restart fixes, and the forecast time to the limit.

How it reaches the agent: it finds the pod's node, the MemoryGuard agent pod on that node
(namespace --agent-namespace, default memoryguard), and opens `kubectl port-forward` to its
port named `api` (on 127.0.0.1 only).
The agent authenticates every call itself (TokenReview + SubjectAccessReview, as the kubelet
does), and the API server's service proxy would not carry your token to it (the API server
consumes the Authorization header), so the plugin sends a bearer token directly:

  * by default, the token your kubeconfig authenticates with (static token, token file, exec
    plugin such as `aws eks get-token`, OIDC): the agent then checks YOUR permissions;
  * --service-account NS/NAME: a 10-minute token for that ServiceAccount, minted with
    a TokenRequest (what `kubectl create token` does) — for kubeconfigs that use client certificates,
    which cannot be forwarded. The chart creates `memoryguard-plugin` for this.

You need: get (and, without pod names, list) pods in the pods' namespace; in the agent
namespace, get/list pods and get/create pods/portforward (the chart's Role
`<release>-agent-port-forward`), plus create serviceaccounts/token on the plugin's account for
--service-account (Role `<release>-plugin-token`); and get on memoryguard.io agents/samples
(ClusterRole `<release>-samples-reader`). --agent-url skips the port-forward (an agent you can
reach).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from memoryguard.agent.metrics import ContainerNames, NameLookup
from memoryguard.annotations import AGENT_PORT_NAME
from memoryguard.commands import explain, top
from memoryguard.commands.sources import AgentSource, Reading, SourceError

AGENT_SELECTOR = "app.kubernetes.io/name=memoryguard,app.kubernetes.io/component=agent"
AGENT_PORT = 9732  # when the agent pod declares no port named AGENT_PORT_NAME
TOKEN_SECONDS = 600  # minted ServiceAccount tokens live this long
PORT_FORWARD_READY_SECONDS = 20.0  # kubectl port-forward must report its local port within this
# `kubectl port-forward` prints this once the tunnel listens.
_FORWARDING = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+) ->")


class PluginError(SourceError):
    """kubectl or the cluster refused something the user can fix; printed without a traceback."""


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
        try:
            result = subprocess.run(
                [*self.base(), *args], input=stdin, capture_output=True, text=True, timeout=60
            )
        except FileNotFoundError as exc:
            raise PluginError(f"cannot run {self.binary}: {exc.strerror} (is kubectl on PATH?)") from exc
        except subprocess.TimeoutExpired as exc:
            raise PluginError(f"kubectl {' '.join(args)}: no answer within {exc.timeout:g} s") from exc
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


def selector_terms(selector: str) -> list[tuple[str, str, str]]:
    """(key, operator, value) of an equality-based label selector: ``k=v``, ``k==v``, ``k!=v``,
    ``k`` (has the label), ``!k`` (lacks it). Set-based terms (``k in (a,b)``) are refused: the
    plugin filters the agent pods itself and would otherwise misread them."""
    terms = []
    for term in (t.strip() for t in selector.split(",")):
        match = re.fullmatch(r"(!?)([\w./-]+)(?:\s*(==|=|!=)\s*([\w.-]*))?", term)
        if not match or (match[1] and match[3]):
            raise PluginError(
                f"--agent-selector {selector!r}: {term!r} is not an equality term "
                "(key=value, key!=value, key or !key, separated by commas)"
            )
        negated, key, operator, value = match.groups()
        if operator:
            terms.append((key, "!=" if operator == "!=" else "=", value))
        else:
            terms.append((key, "!" if negated else "exists", ""))
    return terms


def matches(labels: dict[str, str], terms: Sequence[tuple[str, str, str]]) -> bool:
    for key, operator, value in terms:
        held = labels.get(key)
        if operator == "=" and held != value:
            return False
        if operator == "!=" and held == value:
            return False
        if operator == "exists" and held is None:
            return False
        if operator == "!" and held is not None:
            return False
    return True


def find_agent(kubectl: Kubectl, namespace: str, selector: str, node: str) -> dict[str, Any]:
    """The running agent pod on ``node``.

    The API server filters by the selectors, but they are filtered here too: an API server (or
    proxy) that ignores them must not make the plugin read another node's agent, whose answer
    would be "no such pod" rather than an error.
    """
    terms = selector_terms(selector)
    listed = kubectl.get_raw(
        f"/api/v1/namespaces/{_q(namespace)}/pods",
        labelSelector=selector,
        fieldSelector=f"spec.nodeName={node}",
    )
    agents = [
        p for p in listed.get("items") or [] if matches(p.get("metadata", {}).get("labels") or {}, terms)
    ]
    here = sorted(
        (p for p in agents if p.get("spec", {}).get("nodeName") == node),
        key=lambda p: str(p.get("metadata", {}).get("name")),
    )
    running = [p for p in here if p.get("status", {}).get("phase") == "Running"]
    # During a DaemonSet rollout the old pod may still be terminating next to its successor.
    staying = [p for p in running if not p.get("metadata", {}).get("deletionTimestamp")]
    if staying or running:
        return (staying or running)[0]
    where = f"in namespace {namespace} (selector {selector})"
    if here:
        states = ", ".join(
            f"{p['metadata']['name']} is {p.get('status', {}).get('phase') or 'unknown'}" for p in here
        )
        raise PluginError(f"the MemoryGuard agent on node {node} is not running: {states} {where}")
    raise PluginError(
        f"no MemoryGuard agent on node {node} {where}; is the DaemonSet installed in that namespace "
        "(--agent-namespace) and does it run on that node (tolerations, nodeSelector)?"
    )


def container_names(pods: Sequence[dict[str, Any]]) -> NameLookup:
    """(pod UID, runtime container ID) -> the pod's namespace, name and container name, from the
    pods' statuses: the agent knows containers by ID only."""
    known = {}
    for pod in pods:
        meta = pod["metadata"]
        status = pod.get("status", {})
        for key in ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"):
            for entry in status.get(key) or []:
                container_id = (entry.get("containerID") or "").rpartition("://")[2]
                if container_id:
                    known[meta["uid"], container_id] = ContainerNames(
                        meta["namespace"], meta["name"], entry["name"]
                    )

    def lookup(pod_uid: str, container_id: str) -> ContainerNames | None:
        return known.get((pod_uid, container_id))

    return lookup


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


def port_forward_command(kubectl: Kubectl, namespace: str, pod: str, port: int) -> list[str]:
    """``kubectl port-forward`` to ``pod``'s ``port`` from a free local port on 127.0.0.1 only:
    the tunnel carries a bearer token, and the agent's answers are for this user alone."""
    return [
        *kubectl.base(),
        "port-forward",
        "--address",
        "127.0.0.1",
        "-n",
        namespace,
        f"pod/{pod}",
        f":{port}",
    ]


def _report_port(stdout: IO[str], found: queue.Queue[int | None]) -> None:
    """Puts the local port once kubectl prints it (None if it never does), then keeps reading:
    kubectl logs every connection to stdout, and a full pipe would stall the tunnel."""
    reported = False
    for line in stdout:
        if not reported and (port := forwarded_port(line)) is not None:
            found.put(port)
            reported = True
    if not reported:
        found.put(None)


@contextlib.contextmanager
def port_forward(
    kubectl: Kubectl,
    namespace: str,
    pod: str,
    port: int,
    *,
    ready_seconds: float = PORT_FORWARD_READY_SECONDS,
) -> Iterator[str]:
    """An HTTP base URL through ``kubectl port-forward``, open while the block runs."""
    target = f"{namespace}/{pod}"
    # stderr to a file: read only when kubectl has failed, and it can never fill up and block.
    with tempfile.TemporaryFile(mode="w+") as errors:
        try:
            process = subprocess.Popen(
                port_forward_command(kubectl, namespace, pod, port),
                stdout=subprocess.PIPE,
                stderr=errors,
                stdin=subprocess.DEVNULL,
                text=True,
            )
        except FileNotFoundError as exc:
            raise PluginError(f"cannot run {kubectl.binary}: {exc.strerror} (is kubectl on PATH?)") from exc
        try:
            assert process.stdout is not None
            found: queue.Queue[int | None] = queue.Queue()
            threading.Thread(target=_report_port, args=(process.stdout, found), daemon=True).start()
            try:
                local = found.get(timeout=ready_seconds)
            except queue.Empty:
                raise PluginError(
                    f"kubectl port-forward to {target} reported no local port within {ready_seconds:g} s"
                ) from None
            if local is None:
                code = process.wait(timeout=5)
                errors.seek(0)
                message = errors.read().strip() or "no error message"
                raise PluginError(f"kubectl port-forward to {target} failed (exit code {code}): {message}")
            yield f"http://127.0.0.1:{local}"
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def agent_url(args: argparse.Namespace, kubectl: Kubectl, agent: dict[str, Any] | None) -> Iterator[str]:
    """An HTTP base URL for the agent: --agent-url, or a port-forward kept open meanwhile."""
    if args.agent_url:
        yield str(args.agent_url).rstrip("/")
        return
    assert agent is not None
    meta = agent["metadata"]
    with port_forward(kubectl, meta["namespace"], meta["name"], agent_port(agent, args.agent_port)) as url:
        yield url


def agent_port(agent: dict[str, Any], override: int | None) -> int:
    """--agent-port, else the port the agent pod names ``api`` (as the operator finds it), else 9732."""
    if override is not None:
        return override
    for container in agent.get("spec", {}).get("containers") or ():
        for port in container.get("ports") or ():
            if port.get("name") == AGENT_PORT_NAME and isinstance(port.get("containerPort"), int):
                return int(port["containerPort"])
    return AGENT_PORT


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
        each.add_argument(
            "--agent-port",
            type=int,
            default=None,
            help=f"the agent's port (default: its pod's port named {AGENT_PORT_NAME}, else {AGENT_PORT})",
        )
        each.add_argument("--agent-url", help="reach the agent here instead of through a port-forward")
        each.add_argument(
            "--window",
            type=int,
            default=600,
            metavar="SECONDS",
            help="history to fetch: growth and verdict are computed over it (%(default)s)",
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
    if not args.agent_url:
        selector_terms(args.agent_selector)  # a selector it cannot read fails before any API call
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
    names = container_names(pods)
    readings: list[Reading] = []
    for node, node_pods in sorted(by_node.items()):
        agent = (
            None if args.agent_url else find_agent(kubectl, args.agent_namespace, args.agent_selector, node)
        )
        with agent_url(args, kubectl, agent) as url:
            source = AgentSource(url, token=token, names=names, history_seconds=args.window)
            readings += source.read([p["metadata"]["uid"] for p in node_pods])
    if args.action == "top":
        print(top.render(readings, sort="name"))
        return 0
    if not readings:
        raise PluginError(f"the agent has no containers of {args.pods[0]} (not running yet?)")
    observed = [
        explain.Observed.from_reading(r, "{NAMESPACE}/{POD} container {CONTAINER}".format_map(r.labels))
        for r in sorted(readings, key=lambda r: tuple(r.labels.values()))
    ]
    print(explain.render_all(observed, now_seconds=time.time()))
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
    except SourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
