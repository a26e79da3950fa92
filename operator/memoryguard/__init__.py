"""MemoryGuard: a node agent and a Kubernetes operator that act before the OOM killer does."""

__version__ = "0.1.0"
