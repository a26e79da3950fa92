"""One guard cycle: ask the agents, judge every container, act, write status.

    pods (index) ─► by node ─► agents (concurrent, bounded) ─► history ─► engine ─► plan
                                   │ unreachable / stale                          │
                                   ▼                                              ▼
                         Degraded: no action there                intent ─► act ─► done|failed
                                                                  (status first)   Events, status

A node whose agent cannot be asked, or whose samples are stale, is Degraded: nothing is
decided for its pods until it answers again — acting on old numbers is how an operator
restarts a workload that already recovered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from memoryguard.controller import events as ev
from memoryguard.controller.agentclient import AgentClient, AgentError, NodeReading
from memoryguard.controller.aio import gather_or_cancel
from memoryguard.controller.events import EventPoster
from memoryguard.controller.executors import BLOCKED, DONE, ActionRequest, Actuator, Outcome, intent_landed
from memoryguard.controller.history import HistoryStore
from memoryguard.controller.inflight import RestartsInFlight, workload_from_target
from memoryguard.controller.judgement import Judgement, judge, recorded
from memoryguard.controller.kubeapi import KubeApi, KubeApiError
from memoryguard.controller.ledger import DONE as LEDGER_DONE
from memoryguard.controller.ledger import FAILED, INTENT, Entry, Ledger, action_id, parse_rfc3339, rfc3339
from memoryguard.controller.metrics import ContainerForecast, OperatorMetrics
from memoryguard.controller.owners import (
    UnsupportedOwner,
    Workload,
    cannot_roll,
    resolve_workload,
    rollout_in_progress,
)
from memoryguard.controller.pods import ContainerInfo, PodInfo, Selector, guarded_containers
from memoryguard.controller.settings import OperatorConfig
from memoryguard.controller.status import (
    DEGRADED,
    FALSE,
    READY,
    TRUE,
    AtRiskRow,
    Condition,
    Conditions,
    StatusWriter,
    at_risk_table,
)
from memoryguard.engine.assessment import Assessment, Verdict
from memoryguard.engine.decision import Action, Target
from memoryguard.engine.limiter import LimiterState
from memoryguard.engine.policy import Policy

log = logging.getLogger("memoryguard.controller.cycle")

EVICTION_RETRY_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class AgentEndpoint:
    node: str
    url: str
    pod: str


@dataclass
class PendingEviction:
    request: ActionRequest
    not_before_seconds: float
    first_seconds: float  # when the eviction was first asked for


@dataclass
class GuardState:
    """What the operator remembers about one MemoryGuard between cycles."""

    namespace: str
    name: str
    uid: str
    history: HistoryStore
    writer: StatusWriter
    ledger: Ledger
    limiter: LimiterState = field(default_factory=LimiterState)
    # Budgets spent by dry-run decisions: kept apart, so a week in dry run does not hold back
    # the first real restart once dryRun is turned off.
    dry_run_limiter: LimiterState = field(default_factory=LimiterState)
    conditions: Conditions = field(default_factory=Conditions)
    loaded: bool = False
    last_action: str = ""
    at_risk_since: dict[tuple[str, str], float] = field(default_factory=dict)
    pending_evictions: dict[str, PendingEviction] = field(default_factory=dict)
    owners: dict[tuple[str, str], str | None] = field(default_factory=dict)  # ReplicaSet -> Deployment
    # (pod uid, container) -> (next judgement due, usage bytes when last judged)
    schedule: dict[tuple[str, str], tuple[float, int]] = field(default_factory=dict)
    no_reclaim_nodes: set[str] = field(default_factory=set)
    # Status writes of one guard go out one at a time, in order: a routine write in flight is
    # never overtaken by an older one, and an intent waits for it rather than race it.
    status_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    status_pending: tuple[dict[str, Any], float] | None = None
    status_task: asyncio.Task[None] | None = None
    # The objects in status as last read or written (rateLimit): a merge patch keeps keys it
    # does not mention, so the ones dropped since must be sent as null.
    status_on_server: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def limiter_for(self, policy: Policy) -> LimiterState:
        return self.dry_run_limiter if policy.dry_run else self.limiter

    def set_limiter(self, policy: Policy, limiter: LimiterState) -> None:
        if policy.dry_run:
            self.dry_run_limiter = limiter
        else:
            self.limiter = limiter

    def rate_limit_status(self) -> dict[str, Any]:
        body = self.limiter.to_dict()
        if self.dry_run_limiter.last_seconds or self.dry_run_limiter.restart_times_seconds:
            body["dryRun"] = self.dry_run_limiter.to_dict()
        return body


@dataclass
class Runtime:
    """The operator's shared services, created at startup and kept in Kopf's memo."""

    config: OperatorConfig
    api: KubeApi
    agents: AgentClient
    actuator: Actuator
    events: EventPoster
    metrics: OperatorMetrics
    clock: Callable[[], float] = time.time
    guards: dict[str, GuardState] = field(default_factory=dict)
    in_flight: RestartsInFlight = field(default_factory=RestartsInFlight)

    async def drain_status(self, timeout_seconds: float = 5.0) -> None:
        """Wait for the status writes still in flight (at shutdown)."""
        tasks = [g.status_task for g in self.guards.values() if g.status_task and not g.status_task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_seconds)

    def guard_state(self, namespace: str, name: str, uid: str) -> GuardState:
        state = self.guards.get(uid)
        if state is None:
            state = self.guards[uid] = GuardState(
                namespace=namespace,
                name=name,
                uid=uid,
                history=HistoryStore(
                    dense_seconds=self.config.history_dense_seconds,
                    step_seconds=self.config.history_step_seconds,
                ),
                writer=StatusWriter(refresh_seconds=self.config.status_refresh_seconds),
                ledger=Ledger(size=self.config.ledger_size),
            )
        return state


def agent_endpoint(
    config: OperatorConfig, pod_ip: str, node: str, name: str, port: int | None
) -> AgentEndpoint:
    url = config.agent_url_template.format(pod_ip=pod_ip, node=node, pod=name, port=port or config.agent_port)
    return AgentEndpoint(node=node, url=url, pod=name)


@dataclass
class _NodeResult:
    node: str
    reading: NodeReading | None = None
    problem: str | None = None
    warming: int = 0  # pods whose first window waits for a later cycle (warm-up budget)


async def run_cycle(
    runtime: Runtime,
    state: GuardState,
    *,
    policy: Policy,
    spec: Mapping[str, Any],
    generation: int | None,
    status: Mapping[str, Any],
    pods: Iterable[PodInfo],
    agents: Mapping[str, AgentEndpoint],
) -> None:
    started = time.perf_counter()
    now = runtime.clock()
    metrics = runtime.metrics
    if not state.loaded:
        await _load(runtime, state, status, now)

    selector = Selector.from_spec(spec.get("selector") or {})
    names = [str(n) for n in spec.get("containers") or ()]
    watched = [p for p in pods if p.running and not p.excluded and selector.matches(p.labels)]
    by_node: dict[str, list[PodInfo]] = {}
    for pod in watched:
        by_node.setdefault(pod.node or "", []).append(pod)

    budget = [runtime.config.warmup_pods_per_cycle]
    results = await gather_or_cancel(
        *(
            _ask_node(runtime, state, node, node_pods, agents.get(node), policy, budget)
            for node, node_pods in by_node.items()
        )
    )
    warming = sum(r.warming for r in results)
    degraded = {r.node: r.problem for r in results if r.problem}
    readings = {r.node: r.reading for r in results if r.reading is not None}
    for node in degraded:
        metrics.agent_errors.labels(node).inc()

    rows: list[AtRiskRow] = []
    at_risk_keys: set[tuple[str, str]] = set()
    restarts_decided: set[str] = set()
    for node, reading in readings.items():
        for pod in by_node[node]:
            for container in guarded_containers(pod, names):
                row = await _judge_container(
                    runtime, state, policy, pod, container, reading, agents.get(node), now, restarts_decided
                )
                if row is not None:
                    rows.append(row)
                    at_risk_keys.add((pod.uid, container.name))
    state.history.sweep()
    state.at_risk_since = {k: v for k, v in state.at_risk_since.items() if k in at_risk_keys}
    live = {(p.uid, c.name) for p in watched for c in p.containers}
    state.schedule = {k: v for k, v in state.schedule.items() if k in live}
    # A forecast goes with its pod, and with its node's agent: no forecast on old numbers.
    metrics.keep_forecasts(state.key, lambda k, f: k in live and f.node not in degraded)
    # An action's series goes with its pod: the restarted pod's too, once it has left.
    metrics.keep_pod_actions(state.key, live.__contains__)
    await _retry_evictions(runtime, state, now, degraded)

    watched_count = len(watched)
    at_risk_pods = len({row.pod for row in rows})
    metrics.pods_watched.labels(state.key).set(watched_count)
    metrics.pods_at_risk.labels(state.key).set(at_risk_pods)
    metrics.nodes_degraded.labels(state.key).set(len(degraded))

    if degraded:
        listed = "; ".join(f"{node}: {problem}" for node, problem in sorted(degraded.items())[:10])
        more = f" (and {len(degraded) - 10} more)" if len(degraded) > 10 else ""
        message = f"no action for pods on {len(degraded)} node(s) until their agents answer: {listed}{more}"
        state.conditions.set(
            Condition(DEGRADED, TRUE, "AgentsUnavailable", message), now_seconds=now, generation=generation
        )
        await runtime.events.post(
            _guard(state), ev.WARNING, ev.AGENTS_DEGRADED, message, dedupe_key=",".join(sorted(degraded))
        )
    else:
        state.conditions.set(
            Condition(DEGRADED, FALSE, "AgentsHealthy", f"agents on {len(readings)} node(s) answered"),
            now_seconds=now,
            generation=generation,
        )
    state.conditions.set(
        Condition(
            READY,
            TRUE,
            "Watching",
            f"{watched_count} pod(s) on {len(by_node)} node(s); {at_risk_pods} at risk"
            + (f"; {warming} still loading their history" if warming else "")
            + ("; dry run: nothing is changed" if policy.dry_run else ""),
        ),
        now_seconds=now,
        generation=generation,
    )
    body = {
        "observedGeneration": generation,
        "podsWatched": watched_count,
        "podsAtRisk": at_risk_pods,
        "lastAction": state.last_action,
        "conditions": state.conditions.to_status(),
        "atRisk": at_risk_table(rows, runtime.config.at_risk_size),
        "ledger": state.ledger.to_status(),
        "rateLimit": state.rate_limit_status(),
    }
    if generation is None:
        del body["observedGeneration"]
    if state.writer.due(body, now_seconds=now, live=status):
        _write_status_soon(runtime, state, body, now)
    elapsed = time.perf_counter() - started
    metrics.cycle_duration.labels(state.key).observe(elapsed)
    metrics.cycles.labels(state.key, "degraded" if degraded else "ok").inc()
    log.debug(
        "cycle %s: %d pods, %d nodes (%d degraded), %d at risk, %.3fs",
        state.key,
        watched_count,
        len(by_node),
        len(degraded),
        at_risk_pods,
        elapsed,
    )


def _guard(state: GuardState) -> ev.ObjectRef:
    return ev.guard_ref(state.namespace, state.name, state.uid)


async def _write_status(runtime: Runtime, state: GuardState, body: Mapping[str, Any], now: float) -> bool:
    """Write now and wait for the answer: for what must be on record before anything else
    happens (an action's intent and budget). A routine write still queued is dropped: it is
    older than this one, and the next cycle computes a fresh one."""
    state.status_pending = None
    async with state.status_lock:
        if not await _send_status(runtime, state, body):
            return False
    state.writer.written(body, now_seconds=now)
    return True


def _write_status_soon(runtime: Runtime, state: GuardState, body: dict[str, Any], now: float) -> None:
    """Routine status (conditions, counts, at-risk table) goes out in the background: the next
    cycle's decisions do not wait for the API server to answer it. Only the newest waits."""
    state.writer.written(body, now_seconds=now)
    state.status_pending = (body, now)
    if state.status_task is None or state.status_task.done():
        state.status_task = asyncio.create_task(_drain_status(runtime, state))


async def _drain_status(runtime: Runtime, state: GuardState) -> None:
    while state.status_pending is not None:
        async with state.status_lock:
            if state.status_pending is None:
                return
            body, _ = state.status_pending
            state.status_pending = None
            if not await _send_status(runtime, state, body):
                state.writer.lost()


async def _send_status(runtime: Runtime, state: GuardState, body: Mapping[str, Any]) -> bool:
    patch = merge_patch(state.status_on_server, body)
    try:
        await runtime.api.patch_guard_status(state.namespace, state.name, patch)
    except KubeApiError as exc:
        runtime.metrics.status_writes.labels("failed").inc()
        log.warning("status of %s not written: %s", state.key, exc)
        return False
    runtime.metrics.status_writes.labels("ok").inc()
    state.status_on_server.update({k: v for k, v in body.items() if isinstance(v, Mapping)})
    return True


def merge_patch(on_server: Mapping[str, Any], body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` as a JSON merge patch that leaves the server holding exactly ``body``'s objects.

    A merge patch adds and replaces keys but keeps the ones it does not mention: the rate
    limiter's expired entries would stay in status for good (and the live status would never
    match what was meant, so it would be rewritten forever). Keys of an object the server holds
    that ``body``'s version of it lacks are sent as ``null``. Top-level fields ``body`` does not
    carry are left alone (an intent's patch carries only the ledger and the budgets)."""

    def replace(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {key: None for key in old if key not in new}
        for key, value in new.items():
            previous = old.get(key)
            if isinstance(value, Mapping) and isinstance(previous, Mapping):
                value = replace(previous, value)
            out[key] = value
        return out

    patch = dict(body)
    for key, value in body.items():
        previous = on_server.get(key)
        if isinstance(value, Mapping) and isinstance(previous, Mapping):
            patch[key] = replace(previous, value)
    return patch


async def _ask_node(
    runtime: Runtime,
    state: GuardState,
    node: str,
    pods: list[PodInfo],
    agent: AgentEndpoint | None,
    policy: Policy,
    budget: list[int],
) -> _NodeResult:
    if agent is None:
        return _NodeResult(node, problem="no agent pod on this node")
    known: list[str] = []
    fresh: list[str] = []
    since: float | None = None
    for pod in pods:
        lasts = [
            h.last_t_seconds
            for c in pod.containers
            if c.container_id and (h := state.history.peek(pod.uid, c.container_id)) is not None and len(h)
        ]
        if lasts and all(t is not None for t in lasts):
            known.append(pod.uid)
            oldest = min(t for t in lasts if t is not None)
            since = oldest if since is None else min(since, oldest)
        else:
            fresh.append(pod.uid)
    # Runs before this task's first await, so the tasks of one cycle share the budget in turn.
    take = max(0, min(len(fresh), budget[0]))
    budget[0] -= take
    warming = len(fresh) - take
    fresh = fresh[:take]
    try:
        asks = []
        if known:
            asks.append(
                runtime.agents.fetch_pods(
                    agent.url, known, window_seconds=policy.window_seconds, since_seconds=since
                )
            )
        if fresh:
            asks.append(runtime.agents.fetch_pods(agent.url, fresh, window_seconds=policy.window_seconds))
        answers = await gather_or_cancel(*asks)
    except AgentError as exc:
        runtime.metrics.agent_requests.labels("pods", "error").inc()
        return _NodeResult(
            node, problem=f"agent {agent.pod} unreachable: {exc.status or ''} {exc.message}".strip()
        )
    runtime.metrics.agent_requests.labels("pods", "ok").inc(len(answers))
    if not answers:
        return _NodeResult(node, warming=warming)
    reading = answers[0]
    if len(answers) == 2:
        reading = NodeReading(
            reading.node,
            reading.now_seconds,
            reading.interval_seconds,
            {**answers[0].pods, **answers[1].pods},
            answers[0].missing | answers[1].missing,
            reading.cgroup_version,
        )
    latest = [
        c.latest_t_seconds
        for p in reading.pods.values()
        for c in p.containers.values()
        if c.latest_t_seconds is not None
    ]
    if latest and reading.now_seconds - max(latest) > runtime.config.agent_stale_seconds:
        age = reading.now_seconds - max(latest)
        return _NodeResult(node, problem=f"agent {agent.pod} is stale: newest sample {age:.0f}s old")
    ingested = 0
    step = history_step_seconds(runtime.config, policy, reading.interval_seconds)
    for pod_reading in reading.pods.values():
        for container_reading in pod_reading.containers.values():
            history = state.history.get(pod_reading.pod_uid, container_reading.container_id)
            before = len(history)
            if container_reading.raw_rows:
                history.extend_rows(
                    container_reading.raw_rows,
                    t_index=container_reading.t_index,
                    build=container_reading.sample,
                    keep_seconds=policy.window_seconds,
                    step_seconds=step,
                )
            elif container_reading.latest is not None:
                history.extend(
                    [container_reading.latest], keep_seconds=policy.window_seconds, step_seconds=step
                )
            ingested += max(0, len(history) - before)
    runtime.metrics.samples_ingested.labels(state.key).inc(ingested)
    if reading.cgroup_version == 1:
        state.no_reclaim_nodes.add(node)
    return _NodeResult(node, reading=reading, warming=warming)


async def _judge_container(
    runtime: Runtime,
    state: GuardState,
    policy: Policy,
    pod: PodInfo,
    container: ContainerInfo,
    reading: NodeReading,
    agent: AgentEndpoint | None,
    now: float,
    restarts_decided: set[str],
) -> AtRiskRow | None:
    if not container.container_id:
        return None
    history = state.history.peek(pod.uid, container.container_id)
    if history is None or not len(history):
        return None
    state.history.get(pod.uid, container.container_id)  # keep it through the sweep
    latest = history.latest()
    key = (pod.uid, container.name)
    if latest is None or reading.now_seconds - latest.t_seconds > runtime.config.agent_stale_seconds:
        runtime.metrics.clear_forecast(state.key, key)
        return None  # this container stopped reporting: no decision on old numbers
    due = state.schedule.get(key)
    limit = latest.max_bytes or container.limit_bytes
    if (
        due is not None
        and now < due[0]
        and limit is not None
        and abs(latest.usage_bytes - due[1]) < runtime.config.assess_jump_fraction * limit
    ):
        return None  # far from its limit, not growing, and nothing moved since it was judged
    workload: Workload | None = None
    target = Target(
        kind="pod" if pod.owner is None else "workload",
        name=f"pod/{pod.name}",
        pod=pod.name,
        container=container.name,
        reclaim_supported=pod.node not in state.no_reclaim_nodes,
    )
    samples = history.window(policy.window_seconds)

    def judge_for(target: Target, restarts_in_flight: int = 0) -> Judgement:
        return judge(
            samples,
            policy,
            container,
            target,
            state.limiter_for(policy),
            agent_now_seconds=reading.now_seconds,
            now_seconds=now,
            restarts_in_flight=restarts_in_flight,
            max_concurrent_restarts=cap,
        )

    # The first judgement counts no rollouts in flight: counting them reads workloads, which is
    # only worth it when a restart is wanted.
    cap = runtime.config.max_concurrent_restarts
    first = judgement = judge_for(target)
    wanted = (first.decision.action, first.decision.wanted)
    wants_restart = Action.RESTART in wanted or Action.EVICT in wanted
    in_flight = 0
    if wants_restart and cap is not None:
        in_flight = await runtime.in_flight.count(runtime.api, now)
        runtime.metrics.restarts_in_flight.set(in_flight)
    if pod.owner is None:
        workload = Workload("Pod", pod.namespace, pod.name)
        if wants_restart and cap is not None:
            judgement = judge_for(target, in_flight)
    elif wants_restart:
        # The restart cooldown is kept per workload: resolve it (ReplicaSets once) and plan again.
        try:
            workload = await resolve_workload(runtime.api, pod, state.owners)
        except (UnsupportedOwner, KubeApiError) as exc:
            await runtime.events.post(
                ev.pod_ref(pod.namespace, pod.name, pod.uid),
                ev.WARNING,
                ev.RESTART_FAILED,
                f"cannot restart: {exc}; {first.decision.reason}",
                dedupe_key=str(exc),
            )
            workload = None
        if workload is not None:
            target = Target(
                kind="workload",
                name=workload.ref,
                pod=pod.name,
                container=container.name,
                reclaim_supported=target.reclaim_supported,
            )
            judgement = judge_for(target, in_flight)
    assessment, decision = judgement.assessment, judgement.decision
    export_forecast(
        runtime.metrics, state.key, pod, container, assessment, now - (reading.now_seconds - latest.t_seconds)
    )
    # Spread the healthy containers' next judgements over the interval, so they do not all
    # come due in the same cycle.
    spread = 0.5 + 0.5 * ((hash(key) & 0xFFFF) / 0xFFFF)
    state.schedule[key] = (
        now + spread * _judge_again_in(runtime.config, policy, judgement),
        latest.usage_bytes,
    )

    action_note = decision.action.value
    if decision.action is not Action.NONE:
        if decision.action is Action.RESTART and workload is not None and workload.ref in restarts_decided:
            action_note = f"restart of {workload.ref} already triggered this cycle"
        else:
            outcome = await _act(
                runtime, state, policy, pod, container, workload, target, decision, agent, now
            )
            if decision.action is Action.RESTART and workload is not None and outcome is not None:
                restarts_decided.add(workload.ref)
            action_note = (
                decision.action.value if outcome is None else f"{decision.action.value}: {outcome.state}"
            )
    elif decision.blocked_by and decision.wanted in (Action.RESTART, Action.EVICT):
        await runtime.events.post(
            ev.pod_ref(pod.namespace, pod.name, pod.uid),
            ev.WARNING,
            ev.RESTART_BLOCKED,
            f"{decision.reason}; held back: {decision.blocked_by}",
            dedupe_key=decision.blocked_by.split(":", 1)[0],
        )
        action_note = f"{decision.wanted.value} held back"

    if not assessment.at_risk and assessment.verdict not in (Verdict.PAGE_CACHE_PRESSURE,):
        return None
    if key not in state.at_risk_since:
        state.at_risk_since[key] = now
        message = f"container {container.name}: {assessment.evidence}"
        if assessment.notes:
            message += " Note: " + "; ".join(assessment.notes) + "."
        await runtime.events.post(
            ev.pod_ref(pod.namespace, pod.name, pod.uid),
            ev.WARNING,
            ev.AT_RISK,
            message,
            dedupe_key=container.name,
        )
        await runtime.events.post(
            _guard(state),
            ev.WARNING,
            ev.AT_RISK,
            f"pod {pod.name} {message}",
            dedupe_key=f"{pod.uid}/{container.name}",
        )
    return AtRiskRow(
        pod=pod.name,
        container=container.name,
        node=pod.node or "",
        assessment=assessment,
        action=action_note,
        reason=decision.reason,
        since_seconds=state.at_risk_since[key],
    )


def export_forecast(
    metrics: OperatorMetrics,
    guard: str,
    pod: PodInfo,
    container: ContainerInfo,
    assessment: Assessment,
    as_of_seconds: float,
) -> None:
    """The engine's time to the limit on /metrics while pinned memory grows, gone when it stops.

    ``as_of_seconds``: the operator's clock at the newest sample the assessment was made from.
    """
    key = (pod.uid, container.name)
    fc = assessment.forecast
    if fc is None or fc.eta_seconds is None:
        metrics.clear_forecast(guard, key)
        return
    metrics.set_forecast(
        guard,
        key,
        ContainerForecast(
            namespace=pod.namespace,
            pod=pod.name,
            container=container.name,
            node=pod.node or "",
            limit_source=fc.limit_source,
            eta_seconds=fc.eta_seconds,
            growth_bytes_per_second=fc.growth_bytes_per_second,
            as_of_seconds=as_of_seconds,
        ),
    )


def history_step_seconds(config: OperatorConfig, policy: Policy, interval_seconds: float) -> float:
    """The thinning step beyond the dense span, never so coarse that the window holds fewer
    than twice the guard's minSamples (or the engine would never forecast)."""
    dense_samples = config.history_dense_seconds / max(interval_seconds, 1e-3)
    sparse_span = policy.window_seconds - config.history_dense_seconds
    if config.history_step_seconds <= 0 or sparse_span <= 0:
        return config.history_step_seconds
    needed = 2 * policy.min_samples - dense_samples
    if needed <= 0:
        return config.history_step_seconds
    return max(interval_seconds, min(config.history_step_seconds, sparse_span / needed))


def _judge_again_in(config: OperatorConfig, policy: Policy, judgement: Judgement) -> float:
    """Seconds until this container needs judging again (0: every cycle)."""
    a, d = judgement.assessment, judgement.decision
    watching = (
        a.verdict not in (Verdict.HEALTHY, Verdict.BOUNDED)
        or a.at_risk
        or d.action is not Action.NONE
        or d.wanted is not Action.NONE
        or (a.usage_fraction or 0.0) >= policy.warn_fraction
    )
    if watching:
        return 0.0
    eta = a.forecast.eta_seconds if a.forecast is not None else None
    if eta is not None:
        return min(config.assess_max_interval_seconds, eta / 20.0)
    return config.assess_max_interval_seconds


async def _act(
    runtime: Runtime,
    state: GuardState,
    policy: Policy,
    pod: PodInfo,
    container: ContainerInfo,
    workload: Workload | None,
    target: Target,
    decision: Any,
    agent: AgentEndpoint | None,
    now: float,
) -> Outcome | None:
    action: Action = decision.action
    pod_event = ev.pod_ref(pod.namespace, pod.name, pod.uid)
    # Reads before the intent: a restart that cannot or must not happen now consumes no budget.
    if action is Action.RESTART:
        if workload is None:
            return None
        try:
            body = await runtime.api.get_workload(workload.kind, workload.namespace, workload.name)
        except KubeApiError as exc:
            log.warning("cannot read %s before restarting it: %s", workload.ref, exc)
            return None
        if body is None:
            await runtime.events.post(
                pod_event, ev.WARNING, ev.RESTART_FAILED, f"{workload.ref} not found", dedupe_key=workload.ref
            )
            return None
        why_not = cannot_roll(body)
        if why_not:
            await runtime.events.post(
                pod_event, ev.WARNING, ev.RESTART_FAILED, f"{why_not}; {decision.reason}", dedupe_key=why_not
            )
            return None
        rolling = rollout_in_progress(body)
        if rolling:
            await runtime.events.post(
                pod_event,
                ev.NORMAL,
                ev.RESTART_DEFERRED,
                f"not restarting {workload.ref} while its rollout is in progress ({rolling}); "
                f"{decision.reason}",
                dedupe_key=rolling,
            )
            return None

    request = ActionRequest(
        id=action_id(state.uid, action.value, target.limiter_key(action), now),
        action=action,
        guard=state.key,
        namespace=pod.namespace,
        pod=pod.name,
        pod_uid=pod.uid,
        container=container.name,
        container_id=container.container_id,
        node=pod.node or "",
        workload=workload,
        agent_url=agent.url if agent else None,
        reason=decision.reason,
        reclaim_bytes=decision.reclaim_bytes,
        drop_caches_level=decision.drop_caches_level,
        dry_run=policy.dry_run,
    )
    entry = Entry(
        id=request.id,
        time=rfc3339(now),
        action=action.value,
        target=request.target,
        state=INTENT,
        pod=pod.name,
        container=container.name,
        node=pod.node or "",
        reason=decision.reason[:1024],
        dryRun=policy.dry_run,
    )
    # The intent and the budget it consumes reach the API server before the action does.
    previous_limiter = state.limiter_for(policy)
    state.ledger.add(entry)
    await _give_up_overflowing_evictions(runtime, state, now)
    state.set_limiter(policy, recorded(previous_limiter, policy, action, target, now))
    intent_status = {"ledger": state.ledger.to_status(), "rateLimit": state.rate_limit_status()}
    if not await _write_status(runtime, state, intent_status, now):
        # No recorded intent, no action: the next cycle decides again.
        state.ledger.entries = [e for e in state.ledger.entries if e.id != entry.id]
        state.set_limiter(policy, previous_limiter)
        return None

    outcome = await runtime.actuator.perform(request)
    await _finish(runtime, state, request, outcome, now)
    return outcome


async def _finish(
    runtime: Runtime, state: GuardState, request: ActionRequest, outcome: Outcome, now: float
) -> None:
    metrics = runtime.metrics
    prefix = "DRY-RUN: would " if request.dry_run else ""
    pod_event = ev.pod_ref(request.namespace, request.pod, request.pod_uid)
    finished = runtime.clock()
    if outcome.state == BLOCKED:
        delay = max(outcome.retry_after_seconds or EVICTION_RETRY_SECONDS, 1.0)
        first = state.pending_evictions.get(request.id)
        state.pending_evictions[request.id] = PendingEviction(
            request, now + delay, first.first_seconds if first else now
        )
        state.ledger.update_message(request.id, f"{outcome.message}; retrying in {delay:.0f}s")
        metrics.actions.labels(state.key, request.action.value, "blocked").inc()
        export_action(metrics, request, outcome, "blocked", finished)
        message = f"{outcome.message}; will retry in {delay:.0f}s. {request.reason}"
        await runtime.events.post(pod_event, ev.WARNING, ev.EVICTION_BLOCKED, message)
        await runtime.events.post(
            _guard(state), ev.WARNING, ev.EVICTION_BLOCKED, f"pod {request.pod}: {message}"
        )
    else:
        done = outcome.state == DONE
        state.ledger.resolve(
            request.id,
            LEDGER_DONE if done else FAILED,
            message=outcome.message,
            finished_seconds=finished,
        )
        state.pending_evictions.pop(request.id, None)
        result = "dry_run" if request.dry_run else ("done" if done else "failed")
        metrics.actions.labels(state.key, request.action.value, result).inc()
        export_action(metrics, request, outcome, result, finished)
        reason, type_ = _event_reason(request.action, done)
        text = (
            f"{prefix}{request.describe()}: {request.reason}"
            if done
            else f"{request.describe()} failed: {outcome.message}"
        )
        if done:
            mode = "dry-run " if request.dry_run else ""
            state.last_action = f"{mode}{request.action.value} {request.target} {rfc3339(now)}"
            if request.action.disruptive and request.workload is not None and not request.dry_run:
                runtime.in_flight.add(request.workload, now)
        await runtime.events.post(pod_event, type_, reason, text)
        await runtime.events.post(_guard(state), type_, reason, f"pod {request.pod}: {text}")
    # The outcome goes out in the background, in order after the intent: the action is done,
    # and a lost outcome is settled from the world at the next start, never by acting again.
    _write_status_soon(
        runtime,
        state,
        {
            "ledger": state.ledger.to_status(),
            "rateLimit": state.rate_limit_status(),
            "lastAction": state.last_action,
        },
        runtime.clock(),
    )


def export_action(
    metrics: OperatorMetrics, request: ActionRequest, outcome: Outcome, result: str, at_seconds: float
) -> None:
    """The action's outcome on /metrics, labelled with the pod and container whose memory
    called for it (a restart's too: it targets the workload, the evidence is this pod's)."""
    if not request.pod_uid:
        # An eviction re-tried after an operator restart: the ledger does not keep the pod's
        # UID, and a series that the next cycle cannot match to a live pod would just flicker.
        return
    freed: int | None = None
    if request.action is Action.RECLAIM and result == "done" and outcome.details:
        value = outcome.details.get("freed_bytes")
        freed = int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    metrics.record_action(
        request.guard,
        (request.pod_uid, request.container),
        namespace=request.namespace,
        pod=request.pod,
        container=request.container,
        action=request.action.value,
        result=result,
        at_seconds=at_seconds,
        freed_bytes=freed,
    )


def _event_reason(action: Action, done: bool) -> tuple[str, str]:
    table = {
        Action.RESTART: (ev.RESTARTED, ev.RESTART_FAILED),
        Action.EVICT: (ev.EVICTED, ev.EVICTION_FAILED),
        Action.RECLAIM: (ev.RECLAIMED, ev.RECLAIM_FAILED),
        Action.DROP_CACHES: (ev.DROPPED_CACHES, ev.DROP_CACHES_FAILED),
    }
    ok, failed = table[action]
    return (ok, ev.NORMAL) if done else (failed, ev.WARNING)


async def _retry_evictions(
    runtime: Runtime, state: GuardState, now: float, degraded: Mapping[str, str | None]
) -> None:
    for pending in list(state.pending_evictions.values()):
        if now - pending.first_seconds >= runtime.config.eviction_give_up_seconds:
            await _give_up_eviction(
                runtime,
                state,
                pending,
                now,
                f"a PodDisruptionBudget refused it for {(now - pending.first_seconds) / 60:.0f} min",
            )
            continue
        if now < pending.not_before_seconds or pending.request.node in degraded:
            # Not while the pod's node is Degraded: the numbers that asked for it may be stale.
            continue
        outcome = await runtime.actuator.perform(pending.request)
        await _finish(runtime, state, pending.request, outcome, now)


async def _give_up_eviction(
    runtime: Runtime, state: GuardState, pending: PendingEviction, now: float, why: str
) -> None:
    request = pending.request
    state.pending_evictions.pop(request.id, None)
    message = f"eviction of pod {request.pod} given up: {why}; the next decision starts afresh"
    state.ledger.resolve(request.id, FAILED, message=message, finished_seconds=now)
    runtime.metrics.actions.labels(state.key, request.action.value, "failed").inc()
    pod_event = ev.pod_ref(request.namespace, request.pod, request.pod_uid)
    await runtime.events.post(pod_event, ev.WARNING, ev.EVICTION_FAILED, f"{message}. {request.reason}")
    await runtime.events.post(_guard(state), ev.WARNING, ev.EVICTION_FAILED, message)


async def _give_up_overflowing_evictions(runtime: Runtime, state: GuardState, now: float) -> None:
    """The ledger never drops an unresolved intent to make room, but status holds at most
    ``ledger_size`` entries (the CRD's maxItems: a longer ledger would make every status write
    fail, intents included). The only intents that live long are evictions a
    PodDisruptionBudget keeps refusing: the oldest of those are given up."""
    for entry in state.ledger.overflowing_intents():
        pending = state.pending_evictions.get(entry.id)
        if pending is not None:
            await _give_up_eviction(
                runtime, state, pending, now, f"the ledger holds at most {state.ledger.size} entries"
            )
    state.ledger.trim()


async def _load(runtime: Runtime, state: GuardState, status: Mapping[str, Any], now: float) -> None:
    """First cycle after (re)start: take budgets, ledger and conditions back from status, and
    settle every intent left without an outcome by looking at the world, never by acting again."""
    state.ledger = Ledger.from_status(status.get("ledger"), size=runtime.config.ledger_size)
    rate_limit = status.get("rateLimit")
    if isinstance(rate_limit, Mapping):
        state.status_on_server["rateLimit"] = json.loads(json.dumps(rate_limit))
    try:
        state.limiter = LimiterState.from_dict(rate_limit)
        dry_run = rate_limit.get("dryRun") if isinstance(rate_limit, Mapping) else None
        state.dry_run_limiter = LimiterState.from_dict(dry_run)
    except ValueError as exc:
        log.warning("%s: ignoring unreadable status.rateLimit: %s", state.key, exc)
        state.limiter = LimiterState()
        state.dry_run_limiter = LimiterState()
    state.conditions = Conditions.from_status(status.get("conditions"))
    state.last_action = str(status.get("lastAction") or "")
    for entry in state.ledger.entries:
        # Rollouts this guard started before the operator restarted may still be under way.
        started = parse_rfc3339(entry.time)
        workload = workload_from_target(state.namespace, entry.target)
        disruptive = entry.action in (Action.RESTART.value, Action.EVICT.value)
        if disruptive and entry.state == LEDGER_DONE and not entry.dryRun and workload and started:
            runtime.in_flight.add(workload, started)
    for entry in state.ledger.pending():
        if entry.dryRun:
            state.ledger.resolve(
                entry.id,
                LEDGER_DONE,
                message="dry run (settled after operator restart)",
                finished_seconds=now,
            )
            continue
        try:
            landed = await intent_landed(
                runtime.api, entry.action, entry.target, state.namespace, entry.id, None
            )
        except KubeApiError as exc:
            log.warning("%s: cannot check intent %s yet: %s", state.key, entry.id, exc)
            raise
        if landed:
            state.ledger.resolve(
                entry.id, LEDGER_DONE, message="confirmed after operator restart", finished_seconds=now
            )
        elif landed is None:
            state.ledger.resolve(
                entry.id,
                FAILED,
                message="outcome unknown: the operator restarted during the call; not repeated",
                finished_seconds=now,
            )
        elif entry.action == Action.EVICT.value:
            # Not evicted yet (a PodDisruptionBudget held it, or the operator died first): evicting
            # the same pod again is what the intent asked for, and the budget is already counted.
            state.ledger.update_message(entry.id, "re-trying after operator restart")
            asked = parse_rfc3339(entry.time)
            state.pending_evictions[entry.id] = PendingEviction(
                ActionRequest(
                    id=entry.id,
                    action=Action.EVICT,
                    guard=state.key,
                    namespace=state.namespace,
                    pod=entry.pod,
                    pod_uid="",
                    container=entry.container,
                    container_id=None,
                    node=entry.node,
                    workload=Workload("Pod", state.namespace, entry.pod),
                    agent_url=None,
                    reason=entry.reason,
                ),
                now,
                asked if asked is not None else now,
            )
        else:
            state.ledger.resolve(
                entry.id,
                FAILED,
                message="not applied before the operator restarted; not repeated (budget kept)",
                finished_seconds=now,
            )
    state.loaded = True
