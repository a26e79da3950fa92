"""The operator's configuration (from the command line) and how it maps onto Kopf's settings.

``OperatorConfig`` is built once by ``memoryguard operator`` (or by a test) and travels in
Kopf's memo; ``configure_kopf`` is called from the single ``@kopf.on.startup`` handler.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import kopf

from memoryguard import annotations as keys

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    # Scope: empty namespaces means cluster-wide.
    namespaces: tuple[str, ...] = ()
    # Peering: one active replica among several (Kopf peering), or none at all.
    standalone: bool = False
    peering_name: str = "memoryguard"
    priority: int = 0
    # The guard cycle. 1 s matches the agents' default sampling: a sample is seen at most
    # one cycle after the agent took it, which keeps the decision latency under 3 s.
    cycle_seconds: float = 1.0
    # Status is written when something that matters changed, and at most this often otherwise.
    status_refresh_seconds: float = 10.0
    # Agents: which pods they are, and how to reach one from its pod.
    agent_namespace: str | None = None  # None: any namespace
    agent_labels: dict[str, str] = field(default_factory=lambda: dict(keys.DEFAULT_AGENT_LABELS))
    agent_url_template: str = "http://{pod_ip}:{port}"
    agent_port: int = 9732
    agent_timeout_seconds: float = 2.0
    agent_concurrency: int = 64
    agent_retries: int = 2
    # A node whose agent's latest sample is older than this is stale: no action for its pods.
    agent_stale_seconds: float = 10.0
    token_file: Path | None = SERVICE_ACCOUNT_TOKEN
    # History kept per container: every sample of the last dense_seconds, one per
    # history_step_seconds before that, up to the guard's forecast window.
    history_dense_seconds: float = 60.0
    history_step_seconds: float = 10.0
    # A container far from its limit and not growing is judged at least this often, and at once
    # when its usage moves by assess_jump_fraction of its limit: at 15 s and 2 %, nothing can go
    # from "healthy" to "killed" unseen (that would take 20 % of the limit within 15 s, a jump
    # the per-cycle check sees). Containers at risk are judged every cycle.
    assess_max_interval_seconds: float = 15.0
    assess_jump_fraction: float = 0.02
    # Pods first seen (operator start, new pods) have their whole window fetched; at most this
    # many per guard cycle, so an operator restart on a large cluster does not stall a cycle.
    warmup_pods_per_cycle: int = 100
    # Kubernetes API access: in-cluster or kubeconfig when None.
    api_server: str | None = None
    api_insecure: bool = False
    api_timeout_seconds: float = 10.0
    api_retries: int = 4
    api_threads: int = 32  # the synchronous client's calls in flight at once
    # Cluster-wide: MemoryGuard restarts (and evictions) rolling out at once, across every
    # guard; None: no cap. One stays in flight until its rollout completes, at most
    # restart_in_flight_max_seconds.
    max_concurrent_restarts: int | None = 3
    restart_in_flight_max_seconds: float = 1800.0
    # A PodDisruptionBudget that has refused an eviction for this long is not about to allow
    # it: the intent is given up (with an Event), and the engine decides afresh on fresh numbers.
    eviction_give_up_seconds: float = 3600.0
    # Bounded status tables.
    ledger_size: int = 50
    at_risk_size: int = 20
    # Operator /metrics and Kopf's liveness endpoint.
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9733  # 0 disables
    liveness_endpoint: str | None = None
    log_level: int = logging.INFO

    def replace(self, **changes: object) -> OperatorConfig:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces


def configure_kopf(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    """Every Kopf setting MemoryGuard changes, in one place (called from the startup handler)."""
    # Kopf's own events are for handler failures; MemoryGuard posts its evidence Events itself.
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = keys.EVENT_COMPONENT
    settings.posting.event_name_prefix = "memoryguard-"

    settings.peering.standalone = config.standalone
    settings.peering.name = config.peering_name
    settings.peering.priority = config.priority
    settings.peering.clusterwide = config.clusterwide
    settings.peering.mandatory = not config.standalone
    settings.peering.stealth = True  # keep-alives every few seconds would drown the log

    # The CRD is installed with the chart before the operator starts, and namespaces are given
    # explicitly: no need to watch CRDs and namespaces (and no RBAC for them).
    settings.scanning.disabled = True

    # Watch streams: reconnect fast; the server closes them at this timeout anyway.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.watching.reconnect_backoff = 1.0

    settings.networking.request_timeout = config.api_timeout_seconds * 3
    settings.networking.connect_timeout = config.api_timeout_seconds
    settings.networking.error_backoffs = [0.5, 1, 2, 5, 10]

    settings.execution.default_backoff = max(config.cycle_seconds, 1.0)
    settings.queueing.exit_timeout = 5.0
    settings.background.cancellation_polling = 5

    # Kopf's bookkeeping on MemoryGuard objects under our own prefix, in annotations only
    # (status belongs to MemoryGuard's own fields).
    settings.persistence.finalizer = keys.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=keys.KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=keys.KOPF_PREFIX, key="last-handled-configuration"
    )
