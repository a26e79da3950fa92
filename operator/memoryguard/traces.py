"""Trace files: one container's samples as CSV (contract in DESIGN.md, "Trace files").

Format::

    # workload: node leak.js                  <- "# key: value" lines before the header: metadata
    # runtime_heap_limit_bytes: 100663296     <- the runtime's heap cap, when below memory.max
    # failure_at: 95                          <- the workload failed its users at t=95 s
    t,anon,file,max,inactive_file,...         <- header: t, anon, file, max required
    0,0,0,268435456,...                       <- bytes (int or float), "max" for no limit

Unknown columns are ignored, optional ones may be absent, other ``#`` lines are ignored. A row
that cannot be read (a missing required value, a number that is not one, time going backwards)
is skipped and counted, never fatal: a trace recorded on a busy node is still worth scoring.
An empty or unreadable cell of a cumulative counter (``oom_kill``, ``*_events``) or of ``alive``
holds the column's last known value (before the first known one, the first known one): a
counter the recorder failed to read once has not dropped to 0, and its next reading is not a
new OOM kill.

Parsing is a pure function of the text; reading the file is the caller's job.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from memoryguard.engine.model import SAMPLE_FIELD_NAMES, Sample

REQUIRED_COLUMNS = ("t", "anon", "file", "max")

# Trace column (normalised: lower case, "." and "-" as "_") -> Sample field. Sample field names
# themselves are accepted too, so a dump of Sample.to_dict() rows is a valid trace.
COLUMN_ALIASES: dict[str, str] = {
    "t": "t_seconds",
    "time": "t_seconds",
    "anon": "anon_bytes",
    "file": "file_bytes",
    "max": "max_bytes",
    "memory_max": "max_bytes",
    "inactive_file": "inactive_file_bytes",
    "active_file": "active_file_bytes",
    "shmem": "shmem_bytes",
    "kernel": "kernel_bytes",
    "current": "current_bytes",
    "memory_current": "current_bytes",
    "high": "high_bytes",
    "memory_high": "high_bytes",
    "swap_current": "swap_current_bytes",
    "memory_swap_current": "swap_current_bytes",
    "swap_max": "swap_max_bytes",
    "memory_swap_max": "swap_max_bytes",
    "oom_kill": "oom_kill",
    "events_oom_kill": "oom_kill",
    "oom": "oom_events",
    "events_oom": "oom_events",
    "high_events": "high_events",
    "events_high": "high_events",
    "max_events": "max_events",
    "events_max": "max_events",
    "swap_events_fail": "swap_fail_events",
    "swap_fail": "swap_fail_events",
    "swap_fail_events": "swap_fail_events",
    "pgmajfault": "pgmajfault",
    "psi_some_avg10": "psi_some_avg10",
    "psi_full_avg10": "psi_full_avg10",
    "alive": "alive",
}
for _name in SAMPLE_FIELD_NAMES:
    COLUMN_ALIASES.setdefault(_name, _name)

_LIMIT_FIELDS = frozenset({"max_bytes", "high_bytes", "swap_max_bytes"})  # "max" means no limit
_COUNTER_FIELDS = frozenset(
    {"oom_kill", "oom_events", "high_events", "max_events", "swap_fail_events", "pgmajfault"}
)
# Fields whose unknown cells hold the column's last known value (see the module docstring).
_CARRIED_FIELDS = _COUNTER_FIELDS | {"alive"}
_FLOAT_FIELDS = frozenset({"t_seconds", "psi_some_avg10", "psi_full_avg10"})
_REQUIRED_FIELDS = frozenset({"t_seconds", "anon_bytes", "file_bytes", "max_bytes"})
_TRUE = frozenset({"1", "true", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "no", "n", "off"})
_METADATA = re.compile(r"^#\s*([A-Za-z0-9_.\-]+)\s*:\s*(.*?)\s*$")
MAX_PROBLEMS_KEPT = 5
# runtime_heap_limit_bytes values that mean "no heap cap", as memory.max writes "max".
_NO_LIMIT = frozenset({"", "max", "none", "0"})


class TraceError(ValueError):
    """The file is not a trace at all (no header, a required column missing, bad metadata)."""


@dataclass(frozen=True)
class Failure:
    t_seconds: float
    reason: str


@dataclass(frozen=True)
class Trace:
    name: str
    samples: tuple[Sample, ...]
    metadata: Mapping[str, str] = field(default_factory=dict)
    columns: tuple[str, ...] = ()
    ignored_columns: tuple[str, ...] = ()
    skipped_rows: int = 0
    problems: tuple[str, ...] = ()  # the first few reasons rows were skipped

    @property
    def runtime_heap_limit_bytes(self) -> int | None:
        raw = self.metadata.get("runtime_heap_limit_bytes")
        if raw is None or raw.strip().lower() in _NO_LIMIT:
            return None
        return _metadata_bytes(raw, "runtime_heap_limit_bytes")

    @property
    def failure(self) -> Failure | None:
        return find_failure(self.samples, self.metadata)


def _normalise(column: str) -> str:
    return column.strip().lstrip("\ufeff").lower().replace(".", "_").replace("-", "_")


def _metadata_bytes(raw: str, key: str) -> int:
    try:
        value = float(raw)
    except ValueError:
        # Quantities such as "96Mi" are welcome; the Kubernetes client parses them as the API does.
        from kubernetes.utils import parse_quantity

        try:
            value = float(parse_quantity(raw))
        except ValueError as exc:
            raise TraceError(f"metadata {key}: expected bytes like 100663296 or 96Mi, got {raw!r}") from exc
    if not math.isfinite(value) or value <= 0:
        raise TraceError(f"metadata {key}: expected a positive number of bytes, got {raw!r}")
    return int(value)


def _metadata_seconds(raw: str, key: str) -> float:
    text = raw.strip()
    if text.endswith("s"):
        text = text[:-1]
    try:
        value = float(text)
    except ValueError as exc:
        raise TraceError(f"metadata {key}: expected seconds like 95 or 95.5, got {raw!r}") from exc
    if not math.isfinite(value):
        raise TraceError(f"metadata {key}: expected a finite number of seconds, got {raw!r}")
    return value


def _cell(field_name: str, raw: str) -> Any:
    """One cell as the Sample field wants it; ``None`` for an empty cell. Raises ValueError."""
    text = raw.strip()
    if not text:
        return None
    if field_name == "alive":
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        return float(text) > 0
    if field_name in _LIMIT_FIELDS and text.lower() == "max":
        return None
    try:
        number: float = int(text)
    except ValueError:
        number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text!r} is not a finite number")
    if field_name in _FLOAT_FIELDS:
        return float(number)
    if number < 0:
        raise ValueError(f"{text!r} is negative")
    return round(number)


def parse_trace(text: str, name: str = "trace") -> Trace:
    """Parse a trace file's text. Raises TraceError when it has no usable header."""
    lines = text.splitlines()
    metadata: dict[str, str] = {}
    header_at = None
    for i, line in enumerate(lines):
        stripped = line.strip().lstrip("\ufeff")
        if not stripped:
            continue
        if stripped.startswith("#"):
            match = _METADATA.match(stripped)
            if match:
                metadata[match.group(1).lower()] = match.group(2)
            continue
        header_at = i
        break
    if header_at is None:
        raise TraceError(f"{name}: no header row (expected columns {', '.join(REQUIRED_COLUMNS)})")

    header = next(csv.reader([lines[header_at]]))
    columns = tuple(c.strip().lstrip("\ufeff") for c in header)
    mapping: list[tuple[int, str]] = []
    seen: set[str] = set()
    ignored: list[str] = []
    for index, column in enumerate(columns):
        field_name = COLUMN_ALIASES.get(_normalise(column))
        if field_name is None or field_name in seen:
            ignored.append(column)
            continue
        seen.add(field_name)
        mapping.append((index, field_name))
    missing = [
        c
        for c, f in zip(REQUIRED_COLUMNS, ("t_seconds", "anon_bytes", "file_bytes", "max_bytes"), strict=True)
        if f not in seen
    ]
    if missing:
        raise TraceError(
            f"{name}: header lacks required column(s) {', '.join(missing)} (header: {','.join(columns)})"
        )

    # Validate metadata the engine will use now, so a bad value is reported against the file.
    heap_limit = metadata.get("runtime_heap_limit_bytes")
    if heap_limit is not None and heap_limit.strip().lower() not in _NO_LIMIT:
        _metadata_bytes(heap_limit, "runtime_heap_limit_bytes")
    if "failure_at" in metadata:
        _metadata_seconds(metadata["failure_at"], "failure_at")

    rows: list[dict[str, Any]] = []
    skipped = 0
    problems: list[str] = []

    def skip(line_number: int, why: str) -> None:
        nonlocal skipped
        skipped += 1
        if len(problems) < MAX_PROBLEMS_KEPT:
            problems.append(f"line {line_number}: {why}")

    body = (
        (header_at + 2 + offset, line)
        for offset, line in enumerate(lines[header_at + 1 :])
        if line.strip() and not line.lstrip().startswith("#")
    )
    last_t = -math.inf
    for line_number, row in _rows(body):
        values: dict[str, Any] = {}
        bad = None
        for index, field_name in mapping:
            if index >= len(row):
                value = None
            else:
                try:
                    value = _cell(field_name, row[index])
                except ValueError as exc:
                    if field_name in _REQUIRED_FIELDS:
                        bad = f"column {columns[index]}: {exc}"
                        break
                    value = None  # an unreadable optional cell is just unknown
            if value is None:
                if field_name in _REQUIRED_FIELDS and field_name != "max_bytes":
                    bad = f"column {columns[index]} is empty"
                    break
                continue
            values[field_name] = value
        if bad is not None:
            skip(line_number, bad)
            continue
        values.setdefault("max_bytes", None)
        t = values["t_seconds"]
        if t < last_t:
            skip(line_number, f"time goes backwards ({t} after {last_t})")
            continue
        last_t = t
        rows.append(values)

    return Trace(
        name=name,
        samples=tuple(Sample(**values) for values in _carry_known_values(rows)),
        metadata=metadata,
        columns=columns,
        ignored_columns=tuple(ignored),
        skipped_rows=skipped,
        problems=tuple(problems),
    )


def _carry_known_values(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fill the unknown cells of counter and ``alive`` columns with the last known value (the
    first known one before it), in place."""
    for field_name in _CARRIED_FIELDS:
        first = next((row[field_name] for row in rows if field_name in row), None)
        if first is None:
            continue  # the column is absent or never readable: the Sample default stands
        known = first
        for row in rows:
            known = row.setdefault(field_name, known)
    return rows


def _rows(body: Iterable[tuple[int, str]]) -> Iterable[tuple[int, list[str]]]:
    for line_number, line in body:
        yield line_number, next(csv.reader([line]))


def find_failure(samples: Iterable[Sample], metadata: Mapping[str, str]) -> Failure | None:
    """When the workload failed: the first row where ``oom_kill`` increases or ``alive`` drops
    to 0, or the metadata's ``failure_at`` — whichever comes first."""
    found: Failure | None = None
    previous: Sample | None = None
    for sample in samples:
        if previous is not None:
            if sample.oom_kill > previous.oom_kill:
                found = Failure(sample.t_seconds, f"oom_kill {previous.oom_kill} -> {sample.oom_kill}")
                break
            if previous.alive and not sample.alive:
                found = Failure(sample.t_seconds, "process exited (alive 1 -> 0)")
                break
        previous = sample
    if "failure_at" in metadata:
        at = _metadata_seconds(metadata["failure_at"], "failure_at")
        if found is None or at < found.t_seconds:
            found = Failure(at, f"failure_at {at:g} (metadata)")
    return found
