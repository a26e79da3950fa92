"""memoryguard operator — run the Kopf operator that watches MemoryGuard resources.

Every --cycle-seconds, for each MemoryGuard: find the pods its selector matches (from a watch
index, not list calls), ask the agents on their nodes for the samples taken since the last
cycle, judge each container (forecast, verdict, plan), and act within the guard's budgets:
memory.reclaim or drop_caches through the agent, a rollout restart of the owning workload
(never while it is still rolling out), or an Eviction for a bare pod. Every action is
written to the guard's status as an intent before it runs, so a restarted operator neither
forgets a budget nor repeats an action. Pods on a node whose agent is unreachable or stale
get no action at all (condition Degraded).

Run two replicas with peering (one is active; --priority auto gives each its own priority),
or one with --standalone.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
from pathlib import Path

import kopf

from memoryguard.controller.handlers import register
from memoryguard.controller.settings import SERVICE_ACCOUNT_TOKEN, OperatorConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_argument_group("scope and peering")
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        dest="namespaces",
        help="watch this namespace (repeatable; glob patterns allowed); default: cluster-wide",
    )
    scope.add_argument("--standalone", action="store_true", help="no peering: this replica is always active")
    scope.add_argument(
        "--peering",
        default=os.environ.get("MEMORYGUARD_PEERING", "memoryguard"),
        help="Kopf peering object name (default: %(default)s)",
    )
    scope.add_argument(
        "--priority",
        default=os.environ.get("MEMORYGUARD_PRIORITY", "auto"),
        help="peering priority; 'auto' picks a random one, so two replicas never tie",
    )

    cycle = parser.add_argument_group("guard cycle")
    cycle.add_argument(
        "--cycle-seconds",
        type=float,
        default=1.0,
        help="how often each guard asks the agents and decides (default: %(default)s)",
    )
    cycle.add_argument(
        "--status-refresh-seconds",
        type=float,
        default=10.0,
        help="write unchanged status at most this often (default: %(default)s)",
    )
    cycle.add_argument(
        "--history-step-seconds",
        type=float,
        default=10.0,
        help="keep one sample per this many seconds beyond the last minute (0: all; "
        "never so coarse that a guard's window holds fewer than 2 x minSamples)",
    )

    cycle.add_argument(
        "--judge-interval-seconds",
        type=float,
        default=15.0,
        help="judge a healthy container at least this often, and at once when its usage moves "
        "by 2%% of its limit; containers at risk are judged every cycle (default: %(default)s)",
    )

    cycle.add_argument(
        "--max-concurrent-restarts",
        type=int,
        default=3,
        help="cluster-wide: at most this many MemoryGuard restarts and evictions rolling out at once, "
        "across all guards; 0: no cap (default: %(default)s)",
    )
    cycle.add_argument(
        "--restart-in-flight-max-seconds",
        type=float,
        default=1800.0,
        help="a restart counts as rolling out until its rollout completes, or this long at most "
        "(default: %(default)s)",
    )

    agents = parser.add_argument_group("agents")
    agents.add_argument(
        "--agent-namespace",
        default=os.environ.get("MEMORYGUARD_AGENT_NAMESPACE"),
        help="namespace of the agent pods (default: any)",
    )
    agents.add_argument(
        "--agent-selector",
        default="app.kubernetes.io/name=memoryguard,app.kubernetes.io/component=agent",
        help="labels of the agent pods, k=v[,k=v] (default: %(default)s)",
    )
    agents.add_argument(
        "--agent-url-template",
        default="http://{pod_ip}:{port}",
        help="how to reach an agent: {pod_ip} {node} {pod} {port} (default: %(default)s)",
    )
    agents.add_argument(
        "--agent-port",
        type=int,
        default=9732,
        help="agent port when its pod names no 'api' port (default: %(default)s)",
    )
    agents.add_argument("--agent-timeout-seconds", type=float, default=2.0)
    agents.add_argument("--agent-concurrency", type=int, default=64, help="agent requests in flight at most")
    agents.add_argument("--agent-retries", type=int, default=2)
    agents.add_argument(
        "--agent-stale-seconds",
        type=float,
        default=10.0,
        help="a newest sample older than this makes the node Degraded (default: %(default)s)",
    )
    agents.add_argument(
        "--token-file",
        type=Path,
        default=SERVICE_ACCOUNT_TOKEN,
        help="bearer token sent to the agents (default: the ServiceAccount token)",
    )
    agents.add_argument(
        "--no-agent-auth", action="store_true", help="send no token (agents with --insecure-no-auth)"
    )

    api = parser.add_argument_group("Kubernetes API")
    api.add_argument("--api-server", help="API server URL (default: in-cluster, else kubeconfig)")
    api.add_argument("--api-insecure", action="store_true", help="do not verify the API server's certificate")

    serving = parser.add_argument_group("serving")
    serving.add_argument("--metrics-port", type=int, default=9733, help="/metrics port, 0 to disable")
    serving.add_argument("--metrics-host", default="0.0.0.0")
    serving.add_argument(
        "--liveness", default="http://0.0.0.0:8080/healthz", help="Kopf liveness endpoint ('' off)"
    )
    serving.add_argument("-v", "--verbose", action="store_true")


def config_from_args(args: argparse.Namespace) -> OperatorConfig:
    labels: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in args.agent_selector.split(","))):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--agent-selector: expected key=value pairs, got {pair!r}")
        labels[key] = value
    if args.priority == "auto":
        priority = random.randint(1, 2**31 - 1)  # distinct per replica with overwhelming odds
    else:
        try:
            priority = int(args.priority)
        except ValueError:
            raise SystemExit(f"--priority: expected an integer or 'auto', got {args.priority!r}") from None
    namespaces = list(args.namespaces)
    if namespaces and args.agent_namespace and args.agent_namespace not in namespaces:
        # The agent pods are found through a watch: a namespaced operator must watch theirs too.
        namespaces.append(args.agent_namespace)
    return OperatorConfig(
        namespaces=tuple(namespaces),
        standalone=args.standalone,
        peering_name=args.peering,
        priority=priority,
        cycle_seconds=args.cycle_seconds,
        status_refresh_seconds=args.status_refresh_seconds,
        history_step_seconds=args.history_step_seconds,
        assess_max_interval_seconds=args.judge_interval_seconds,
        max_concurrent_restarts=args.max_concurrent_restarts or None,
        restart_in_flight_max_seconds=args.restart_in_flight_max_seconds,
        agent_namespace=args.agent_namespace or None,
        agent_labels=labels,
        agent_url_template=args.agent_url_template,
        agent_port=args.agent_port,
        agent_timeout_seconds=args.agent_timeout_seconds,
        agent_concurrency=args.agent_concurrency,
        agent_retries=args.agent_retries,
        agent_stale_seconds=args.agent_stale_seconds,
        token_file=None if args.no_agent_auth else args.token_file,
        api_server=args.api_server,
        api_insecure=args.api_insecure,
        metrics_host=args.metrics_host,
        metrics_port=args.metrics_port,
        liveness_endpoint=args.liveness or None,
        log_level=logging.DEBUG if args.verbose else logging.INFO,
    )


async def run_operator(
    config: OperatorConfig,
    *,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
    memo: kopf.Memo | None = None,
) -> None:
    registry = register(kopf.OperatorRegistry(), config)
    memo = memo if memo is not None else kopf.Memo()
    memo.config = config
    await kopf.operator(
        registry=registry,
        memo=memo,
        clusterwide=config.clusterwide,
        namespaces=list(config.namespaces),
        liveness_endpoint=config.liveness_endpoint,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger("kopf.objects").setLevel(logging.WARNING if not args.verbose else logging.DEBUG)
    asyncio.run(run_operator(config))
    return 0
