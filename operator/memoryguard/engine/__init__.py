"""The pure decision core: samples in, forecasts, verdicts and plans out.

Nothing in this package reads files, the network or the clock: time is passed in, so every
decision can be reproduced by replaying samples (``memoryguard replay``).
"""

from memoryguard.engine.assessment import Assessment, Verdict, assess
from memoryguard.engine.decision import Action, Decision, Target
from memoryguard.engine.forecast import Forecast, pinned_bytes
from memoryguard.engine.ladder import plan
from memoryguard.engine.limiter import LimitCheck, LimiterState, RateLimits, check, record
from memoryguard.engine.model import Sample
from memoryguard.engine.policy import DropCachesPolicy, EvictPolicy, Policy, ReclaimPolicy, RestartPolicy
from memoryguard.engine.runtime import RuntimeLimit, parse_runtime_heap_limit

__all__ = [
    "Action",
    "Assessment",
    "Decision",
    "DropCachesPolicy",
    "EvictPolicy",
    "Forecast",
    "LimitCheck",
    "LimiterState",
    "Policy",
    "RateLimits",
    "ReclaimPolicy",
    "RestartPolicy",
    "RuntimeLimit",
    "Sample",
    "Target",
    "Verdict",
    "assess",
    "check",
    "parse_runtime_heap_limit",
    "pinned_bytes",
    "plan",
    "record",
]
