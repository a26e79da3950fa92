"""Run the MemoryGuard node agent: sample every container's memory cgroup, serve it over HTTP.

One agent runs on each node (a DaemonSet with the host's /sys/fs/cgroup and /proc mounted).
Once per --interval it discovers the pod and container cgroups under --root (cgroup v2, or v1
when that is what is mounted; systemd and cgroupfs drivers) and reads each one's memory
files: memory.current/max/high, memory.stat, memory.events, swap, PSI. It keeps the last
--retention of readings per container in memory and forgets containers that are gone.

It serves, on --listen:
  GET  /healthz          liveness (no auth): 503 when sampling has stalled
  GET  /metrics          Prometheus metrics (memoryguard_container_memory_*, memoryguard_node_memory_*,
                         memoryguard_agent_*)
  GET  /v1/pods          latest sample and recent window for the pod UIDs asked for
  GET  /v1/node          the node's meminfo, memory PSI and root cgroup memory.stat
  POST /v1/reclaim       write memory.reclaim of one container or pod cgroup
  POST /v1/drop-caches   write /proc/sys/vm/drop_caches (only with --enable-drop-caches,
                         at most once per --drop-caches-min-interval)

Every call except /healthz needs a bearer token that the Kubernetes API server authenticates
(TokenReview) and authorizes (SubjectAccessReview on memoryguard.io/agents, subresource
samples or actions, name = this node), as the kubelet does for its own API. In a cluster the
agent reaches the API server with its ServiceAccount; elsewhere pass --api-server and
--api-token-file. --insecure-no-auth turns authentication off, for local use only.
See docs/agent-api.md and docs/metrics.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import socket
import statistics
import sys
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from memoryguard import __version__
from memoryguard.agent import auth
from memoryguard.agent.metrics import AgentMetrics
from memoryguard.agent.server import ServerSettings, create_app

log = logging.getLogger("memoryguard.agent")

DEFAULT_PORT = 9732
SUMMARY_INTERVAL_SECONDS = 60.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def duration_seconds(text: str) -> float:
    """``500ms``, ``1s``, ``30m``, ``2h`` or a bare number of seconds."""
    match = _DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (examples: 500ms, 1s, 30m, 2h)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def listen_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` (all interfaces)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"--listen must be HOST:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sampling = parser.add_argument_group("sampling")
    sampling.add_argument(
        "--root", type=Path, default=Path("/sys/fs/cgroup"), help="cgroup mount (default %(default)s)"
    )
    sampling.add_argument(
        "--proc-root",
        type=Path,
        default=Path("/proc"),
        help="procfs for meminfo and memory PSI, node-wide in any procfs (default %(default)s)",
    )
    sampling.add_argument(
        "--interval", type=duration_seconds, default=1.0, help="time between ticks (default 1s)"
    )
    sampling.add_argument(
        "--retention", type=duration_seconds, default=1800.0, help="history kept per container (default 30m)"
    )
    sampling.add_argument(
        "--node-name",
        default=os.environ.get("NODE_NAME") or socket.gethostname(),
        help="this node's name: reported in answers and the object of access reviews "
        "(default $NODE_NAME, else the host name)",
    )

    serving = parser.add_argument_group("serving")
    serving.add_argument(
        "--listen",
        type=listen_address,
        default=("0.0.0.0", DEFAULT_PORT),
        metavar="HOST:PORT",
        help=f"address of the API and /metrics (default 0.0.0.0:{DEFAULT_PORT})",
    )
    serving.add_argument(
        "--enable-drop-caches",
        action="store_true",
        help="allow POST /v1/drop-caches (node-wide: it drops every pod's page cache)",
    )
    serving.add_argument(
        "--proc-sys-vm",
        type=Path,
        metavar="DIR",
        help="the host's /proc/sys/vm, where drop_caches is written (default <proc-root>/sys/vm; "
        "in a pod, the host directory mounted alone, e.g. /host/proc-sys-vm)",
    )
    serving.add_argument(
        "--drop-caches-min-interval",
        type=duration_seconds,
        default=600.0,
        help="at most one drop_caches per this interval (default 10m)",
    )

    access = parser.add_argument_group("authentication (TokenReview + SubjectAccessReview)")
    access.add_argument(
        "--insecure-no-auth", action="store_true", help="serve without authentication: local use only"
    )
    access.add_argument(
        "--api-server",
        metavar="URL",
        help="Kubernetes API server for reviews (default: in-cluster, KUBERNETES_SERVICE_HOST/PORT)",
    )
    access.add_argument(
        "--api-token-file",
        type=Path,
        default=auth.SERVICE_ACCOUNT_DIR / "token",
        help="the agent's own bearer token (default %(default)s)",
    )
    access.add_argument(
        "--api-ca-file", type=Path, help="CA bundle of the API server (default: the ServiceAccount's ca.crt)"
    )
    access.add_argument(
        "--api-insecure", action="store_true", help="do not verify the API server's certificate (tests only)"
    )

    logs = parser.add_argument_group("logging")
    logs.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    logs.add_argument("--log-format", default="text", choices=["text", "json"])


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log is one line per scrape and per operator pull: too loud at INFO.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class NodeActions:
    """Adapter from the server's ActionsPort to ``memoryguard.agent.actions``."""

    def __init__(self, proc_root: Path, sys_vm_dir: Path | None = None) -> None:
        from memoryguard.agent import actions

        self._actions = actions
        self.proc_root = proc_root
        self.sys_vm_dir = sys_vm_dir
        self.unsupported: tuple[type[Exception], ...] = (actions.ReclaimUnsupported,)

    def reclaim(self, cgroup_dir: Path, bytes_: int) -> Any:
        return self._actions.reclaim(cgroup_dir, bytes_)

    def drop_caches(self, level: int) -> Any:
        return self._actions.drop_caches(level, self.proc_root, sys_vm_dir=self.sys_vm_dir)


@dataclass
class TickLog:
    """Tick durations since the last summary line."""

    durations_seconds: deque[float]

    @classmethod
    def empty(cls) -> TickLog:
        return cls(deque(maxlen=4096))

    def summary(self) -> str:
        if not self.durations_seconds:
            return "ticks=0"
        values = sorted(self.durations_seconds)
        p50 = statistics.median(values)
        return f"ticks={len(values)} tick_p50={p50 * 1000:.1f}ms tick_max={values[-1] * 1000:.1f}ms"


def _errors_text(errors: Mapping[str, int]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(errors.items()) if v) or "none"


async def sample_forever(sampler: Any, metrics: AgentMetrics, ticks: TickLog, stop: asyncio.Event) -> None:
    """One tick per interval on the event loop, timed for the metrics and the summary line."""
    interval = float(sampler.interval_seconds)
    next_t = time.monotonic()
    while not stop.is_set():
        started = time.perf_counter()
        try:
            sampler.tick()
        except Exception:
            # A bug in one tick must not stop sampling: the next tick may well succeed.
            log.exception("sampling tick failed")
        elapsed = time.perf_counter() - started
        metrics.observe_tick(elapsed)
        ticks.durations_seconds.append(elapsed)
        next_t += interval
        now = time.monotonic()
        if next_t < now:  # fell behind (slow tick, suspended VM): skip, don't burst to catch up
            next_t = now + interval
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=next_t - now)


async def log_summaries(sampler: Any, ticks: TickLog, stop: asyncio.Event, every_seconds: float) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every_seconds)
        log.info(
            "containers=%d %s errors=%s",
            sampler.container_count,
            ticks.summary(),
            _errors_text(sampler.errors),
        )
        ticks.durations_seconds.clear()


def _authorizer(args: argparse.Namespace, metrics: AgentMetrics) -> auth.Authorizer | None:
    if args.insecure_no_auth:
        log.warning(
            "AUTHENTICATION DISABLED (--insecure-no-auth): anyone who can reach %s:%d can read samples "
            "and trigger reclaim%s. Use this only on a workstation.",
            *args.listen,
            " and drop_caches" if args.enable_drop_caches else "",
        )
        return None
    if args.api_server:
        ca_file = args.api_ca_file
        if ca_file is None and (auth.SERVICE_ACCOUNT_DIR / "ca.crt").exists():
            ca_file = auth.SERVICE_ACCOUNT_DIR / "ca.crt"
        api = auth.ApiServer(
            url=args.api_server, token_file=args.api_token_file, ca_file=ca_file, insecure=args.api_insecure
        )
    else:
        api = auth.ApiServer.in_cluster()
        if args.api_ca_file is not None or args.api_insecure:
            api = auth.ApiServer(
                url=api.url,
                token_file=args.api_token_file,
                ca_file=args.api_ca_file or api.ca_file,
                insecure=args.api_insecure,
            )
    return auth.Authorizer(auth.Reviewer(api), on_review=metrics.observe_review)


async def serve(args: argparse.Namespace, stop: asyncio.Event) -> int:
    from memoryguard.agent.cgroup import NoMemoryCgroup
    from memoryguard.agent.sampler import Sampler

    try:
        sampler = Sampler(
            args.root,
            interval_seconds=args.interval,
            retention_seconds=args.retention,
            proc_root=args.proc_root,
        )
    except (NoMemoryCgroup, ValueError) as exc:
        log.error("cannot sample: %s", exc)
        return 2
    metrics = AgentMetrics(sampler)
    try:
        authorizer = _authorizer(args, metrics)
    except auth.ConfigError as exc:
        log.error("%s", exc)
        return 2
    settings = ServerSettings(
        node_name=args.node_name,
        interval_seconds=args.interval,
        retention_seconds=args.retention,
        enable_drop_caches=args.enable_drop_caches,
        drop_caches_min_interval_seconds=args.drop_caches_min_interval,
    )
    actions = NodeActions(args.proc_root, args.proc_sys_vm)
    app = create_app(sampler, actions, settings, authorizer=authorizer, metrics=metrics)
    runner = web.AppRunner(app, handle_signals=False, access_log=logging.getLogger("aiohttp.access"))
    await runner.setup()
    host, port = args.listen
    site = web.TCPSite(runner, host, port, shutdown_timeout=5.0)
    try:
        await site.start()
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", host, port, exc)
        await runner.cleanup()
        return 1
    log.info(
        "memoryguard agent %s: node=%s root=%s cgroup_v%d listen=%s:%d interval=%gs retention=%gs "
        "auth=%s drop_caches=%s",
        __version__,
        args.node_name,
        args.root,
        sampler.cgroup_version,
        host,
        port,
        args.interval,
        args.retention,
        "off" if authorizer is None else f"reviews via {authorizer.reviewer.api.url}",
        f"enabled (min interval {args.drop_caches_min_interval:g}s, "
        f"{(args.proc_sys_vm or args.proc_root / 'sys' / 'vm') / 'drop_caches'})"
        if args.enable_drop_caches
        else "disabled",
    )
    ticks = TickLog.empty()
    tasks = [
        asyncio.create_task(sample_forever(sampler, metrics, ticks, stop), name="sampler"),
        asyncio.create_task(log_summaries(sampler, ticks, stop, SUMMARY_INTERVAL_SECONDS), name="summary"),
    ]
    await stop.wait()
    log.info("shutting down")
    await runner.cleanup()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return 0


async def _main(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return await serve(args, stop)


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, args.log_format)
    return asyncio.run(_main(args))
