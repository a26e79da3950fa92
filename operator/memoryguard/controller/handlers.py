"""Kopf handlers: small module-level functions, registered by ``register(registry, config)``.

- ``startup`` / ``cleanup``: every Kopf setting, and the shared services (API client, agent
  client, the pod informer, metrics server), in one place each;
- ``check_spec``: a broken spec is a PermanentError and a ``Ready=False`` condition naming the field;
- ``guard_cycle``: the per-guard timer (see ``cycle.run_cycle``);
- ``forget_guard``: a deleted guard's in-memory state and metrics go with it.

Pods are not a Kopf resource here: the operator's own informer (``controller/informer.py``)
lists and watches them, because Kopf's per-object machinery makes a start with thousands of
indexed pods cost time quadratic in their number.

Registration is a function rather than import-time decorators so the timer interval and the
login come from the command line, and a test can run several operators one after another.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from typing import Any

import kopf

from memoryguard import annotations as keys
from memoryguard.controller.agentclient import AgentClient, TokenSource
from memoryguard.controller.cycle import Runtime, run_cycle
from memoryguard.controller.events import EventPoster
from memoryguard.controller.executors import Actuator
from memoryguard.controller.inflight import RestartsInFlight
from memoryguard.controller.informer import PodInformer
from memoryguard.controller.judgement import SpecError, policy_from_spec
from memoryguard.controller.kubeapi import KubeApi, KubeApiError, client_configuration
from memoryguard.controller.ledger import rfc3339
from memoryguard.controller.metrics import OperatorMetrics, serve_metrics
from memoryguard.controller.pods import Selector
from memoryguard.controller.settings import OperatorConfig, configure_kopf

log = logging.getLogger("memoryguard.controller.handlers")

GUARDS = (keys.GROUP, keys.VERSION, keys.PLURAL)


async def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    config: OperatorConfig = memo.config
    configure_kopf(settings, config)
    # The Kubernetes client is synchronous: its calls run in the loop's default executor. Its
    # default size (cores + 4) would queue every guard's status write behind a few slow ones.
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=config.api_threads, thread_name_prefix="kubeapi")
    )
    metrics = memo.get("metrics") or OperatorMetrics()
    api = KubeApi(
        client_configuration(config),
        timeout_seconds=config.api_timeout_seconds,
        threads=config.api_threads,
        observer=metrics,
    )
    agents = AgentClient(
        tokens=TokenSource(config.token_file),
        timeout_seconds=config.agent_timeout_seconds,
        concurrency=config.agent_concurrency,
        retries=config.agent_retries,
    )
    runtime = Runtime(
        config=config,
        api=api,
        agents=agents,
        actuator=Actuator(api, agents, clock=memo.get("clock") or _wall_clock, retries=config.api_retries),
        events=EventPoster(api),
        metrics=metrics,
        in_flight=RestartsInFlight(max_seconds=config.restart_in_flight_max_seconds),
    )
    memo.runtime = runtime
    memo.informer = PodInformer(api, config, metrics=metrics)
    memo.informer_task = asyncio.create_task(memo.informer.run(), name="pod informer")
    memo.metrics_runner = (
        await serve_metrics(runtime.metrics, config.metrics_host, config.metrics_port)
        if config.metrics_port
        else None
    )


async def cleanup(memo: Any, **_: Any) -> None:
    runtime: Runtime | None = memo.get("runtime")
    task: asyncio.Task[None] | None = memo.get("informer_task")
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    if memo.get("metrics_runner") is not None:
        await memo.metrics_runner.cleanup()
    if runtime is not None:
        await runtime.drain_status()
        await runtime.events.drain()
        await runtime.agents.close()
        runtime.api.close()


def login(memo: Any, **_: Any) -> kopf.ConnectionInfo:
    """Only registered with --api-server (development, tests): an explicit API server URL."""
    config: OperatorConfig = memo.config
    assert config.api_server is not None
    return kopf.ConnectionInfo(server=config.api_server, insecure=config.api_insecure)


def check_spec(spec: kopf.Spec, meta: kopf.Meta, patch: kopf.Patch, **_: Any) -> None:
    try:
        policy_from_spec(spec)
        if Selector.from_spec(spec.get("selector") or {}).empty:
            raise SpecError(
                "selector", "must not be empty: an empty selector would guard every pod in the namespace"
            )
    except SpecError as exc:
        patch.status["conditions"] = [
            {
                "type": "Ready",
                "status": "False",
                "reason": "InvalidSpec",
                "message": str(exc),
                "lastTransitionTime": rfc3339(_wall_clock()),
                "observedGeneration": meta.get("generation"),
            }
        ]
        raise kopf.PermanentError(str(exc)) from exc
    except ValueError as exc:
        raise kopf.PermanentError(f"spec.selector: {exc}") from exc


async def guard_cycle(
    namespace: str | None,
    name: str,
    uid: str,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    memo: Any,
    **_: Any,
) -> None:
    runtime: Runtime = memo.runtime
    informer: PodInformer = memo.informer
    try:
        policy = policy_from_spec(spec)
        selector = Selector.from_spec(spec.get("selector") or {})
    except (SpecError, ValueError):
        # check_spec has said why, in the status condition and an Event; no cycle, no per-pod
        # series (forecasts, last actions) that no cycle would keep up to date.
        runtime.metrics.forget_pod_series(f"{namespace or ''}/{name}")
        return
    if not informer.synced.is_set():
        return  # no decision on a partial list of the pods: the first LIST is still running
    namespace = namespace or ""
    state = runtime.guard_state(namespace, name, uid or f"{namespace}/{name}")
    try:
        await run_cycle(
            runtime,
            state,
            policy=policy,
            spec=spec,
            generation=meta.get("generation"),
            status=status,
            pods=informer.selected(namespace, selector),
            agents=informer.agents(),
        )
    except KubeApiError as exc:
        if exc.transient:
            raise kopf.TemporaryError(
                f"API server: {exc}", delay=max(runtime.config.cycle_seconds, 1.0)
            ) from exc
        raise


def forget_guard(namespace: str | None, name: str, uid: str, memo: Any, **_: Any) -> None:
    runtime: Runtime | None = memo.get("runtime")
    if runtime is None:
        return
    state = runtime.guards.pop(uid or f"{namespace}/{name}", None)
    if state is not None and state.status_task is not None:
        state.status_task.cancel()
    runtime.metrics.forget(f"{namespace}/{name}")


def _wall_clock() -> float:
    return time.time()


def register(registry: kopf.OperatorRegistry, config: OperatorConfig) -> kopf.OperatorRegistry:
    kopf.on.startup(registry=registry)(startup)
    kopf.on.cleanup(registry=registry)(cleanup)
    # Kopf's own login handlers are fallbacks of its default registry only: name them here.
    if config.api_server:
        kopf.on.login(registry=registry)(login)
    else:
        kopf.on.login(registry=registry)(kopf.login_via_client)
    kopf.on.resume(*GUARDS, registry=registry)(check_spec)
    kopf.on.create(*GUARDS, registry=registry)(check_spec)
    kopf.on.update(*GUARDS, field="spec", registry=registry)(check_spec)
    kopf.timer(
        *GUARDS,
        id="cycle",
        interval=config.cycle_seconds,
        initial_delay=min(config.cycle_seconds, 1.0),
        backoff=max(config.cycle_seconds, 1.0),
        registry=registry,
    )(guard_cycle)
    kopf.on.delete(*GUARDS, optional=True, registry=registry)(forget_guard)
    return registry
