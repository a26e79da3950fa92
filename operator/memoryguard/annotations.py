"""Every annotation and label key MemoryGuard reads or writes, in one place.

The operator writes the restart annotations on a workload's pod template (the same place
``kubectl rollout restart`` writes ``kubectl.kubernetes.io/restartedAt``), so whoever looks at
a Deployment can see when MemoryGuard restarted it, why, and which guard did.
"""

from __future__ import annotations

GROUP = "memoryguard.io"
VERSION = "v1alpha1"
PLURAL = "memoryguards"
KIND = "MemoryGuard"

# Written on the pod template of the restarted workload (Deployment, StatefulSet, DaemonSet).
KUBECTL_RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
RESTARTED_AT = f"{GROUP}/restarted-at"
RESTART_REASON = f"{GROUP}/restart-reason"
RESTART_ID = f"{GROUP}/restart-id"  # the ledger entry id: how a restart is recognised after a crash
RESTARTED_BY = f"{GROUP}/restarted-by"  # "<namespace>/<MemoryGuard name>"

# Set on a pod by its owner to keep MemoryGuard away from it, whatever the guard's selector says.
EXCLUDE = f"{GROUP}/exclude"

# Kopf's own bookkeeping on MemoryGuard objects, under our prefix rather than kopf.zalando.org.
KOPF_PREFIX = GROUP
FINALIZER = f"{GROUP}/finalizer"

# The agent DaemonSet's pods, found by these labels (overridable with --agent-selector).
DEFAULT_AGENT_LABELS = {"app.kubernetes.io/name": "memoryguard", "app.kubernetes.io/component": "agent"}
AGENT_PORT_NAME = "api"  # the agent container's named port; --agent-port when absent

FIELD_MANAGER = "memoryguard-operator"
EVENT_COMPONENT = "memoryguard-operator"
