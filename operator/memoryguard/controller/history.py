"""Per-container sample history kept by the operator between cycles.

The agents keep 30 minutes of samples each; the operator asks them only for rows newer than
what it has (``since_seconds``), so a cycle over thousands of pods moves a few rows per pod.
To keep memory proportional to the guards' windows and not to their sampling rate, samples
older than ``dense_seconds`` are thinned to one per ``step_seconds``: the engine fits a trend
over the window and reads the recent minutes at full resolution.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields
from typing import Any

from memoryguard.engine.model import Sample

_FIELDS = tuple(f.name for f in fields(Sample))


def _shared(sample: Sample, previous: Sample) -> Sample:
    """The same sample, reusing the previous one's value objects where they are equal.

    Each JSON number decodes to a new int object; most fields (limits, counters, kernel
    memory) repeat from one second to the next, so sharing them roughly halves what a
    stored sample costs.
    """
    values = []
    reused = False
    for name in _FIELDS:
        value = getattr(sample, name)
        before = getattr(previous, name)
        if value is not before and value == before:
            value = before
            reused = True
        values.append(value)
    return Sample(*values) if reused else sample


class ContainerHistory:
    __slots__ = ("_dense", "_sparse", "dense_seconds", "step_seconds")

    def __init__(self, *, dense_seconds: float, step_seconds: float) -> None:
        self.dense_seconds = dense_seconds
        self.step_seconds = step_seconds
        self._dense: deque[Sample] = deque()
        self._sparse: deque[Sample] = deque()

    @property
    def last_t_seconds(self) -> float | None:
        if self._dense:
            return self._dense[-1].t_seconds
        if self._sparse:
            return self._sparse[-1].t_seconds
        return None

    def __len__(self) -> int:
        return len(self._dense) + len(self._sparse)

    def extend(
        self, samples: Iterable[Sample], *, keep_seconds: float, step_seconds: float | None = None
    ) -> None:
        """Append samples newer than the last one (older or repeated rows are ignored)."""
        last = self.last_t_seconds
        for sample in samples:
            if last is not None and sample.t_seconds <= last:
                continue
            previous = self.latest()
            if previous is not None and sample.oom_kill < previous.oom_kill:
                # A counter going backwards is a new cgroup under the same ID: start over.
                self._dense.clear()
                self._sparse.clear()
                previous = None
            self._dense.append(_shared(sample, previous) if previous is not None else sample)
            last = sample.t_seconds
        if last is None:
            return
        if step_seconds is not None:
            self.step_seconds = step_seconds
        self._thin(newest=last)
        horizon = last - keep_seconds
        while self._sparse and self._sparse[0].t_seconds < horizon:
            self._sparse.popleft()
        while self._dense and self._dense[0].t_seconds < horizon:
            self._dense.popleft()

    def extend_rows(
        self,
        rows: Sequence[Sequence[Any]],
        *,
        t_index: int,
        build: Callable[[Sequence[Any]], Sample],
        keep_seconds: float,
        step_seconds: float,
    ) -> None:
        """Like ``extend`` for raw agent rows (oldest first), building only the rows kept.

        A first window is hundreds of rows; most of them would be thinned away at once, so they
        are skipped before a Sample is ever made of them.
        """
        if len(self) or step_seconds <= 0 or len(rows) < 2:
            self.extend(map(build, rows), keep_seconds=keep_seconds, step_seconds=step_seconds)
            return
        newest = float(rows[-1][t_index])
        dense_from = newest - self.dense_seconds
        horizon = newest - keep_seconds
        kept_t: float | None = None
        kept: list[Sample] = []
        for row in rows:
            t = float(row[t_index])
            if t < horizon:
                continue
            if t < dense_from:
                if kept_t is not None and t - kept_t < step_seconds:
                    continue
                kept_t = t
            kept.append(build(row))
        self.extend(kept, keep_seconds=keep_seconds, step_seconds=step_seconds)

    def _thin(self, *, newest: float) -> None:
        dense_from = newest - self.dense_seconds
        while self._dense and self._dense[0].t_seconds < dense_from:
            sample = self._dense.popleft()
            if (
                self.step_seconds <= 0
                or not self._sparse
                or sample.t_seconds - self._sparse[-1].t_seconds >= self.step_seconds
            ):
                self._sparse.append(sample)

    def window(self, seconds: float) -> list[Sample]:
        """Samples of the last ``seconds`` (measured back from the newest), oldest first."""
        newest = self.last_t_seconds
        if newest is None:
            return []
        start = newest - seconds
        return [s for s in self._sparse if s.t_seconds >= start] + [
            s for s in self._dense if s.t_seconds >= start
        ]

    def latest(self) -> Sample | None:
        if self._dense:
            return self._dense[-1]
        return self._sparse[-1] if self._sparse else None


class HistoryStore:
    """Histories by (pod uid, container id); forgets containers no guard asked about lately."""

    def __init__(self, *, dense_seconds: float, step_seconds: float) -> None:
        self.dense_seconds = dense_seconds
        self.step_seconds = step_seconds
        self._items: dict[tuple[str, str], ContainerHistory] = {}
        self._touched: set[tuple[str, str]] = set()

    def get(self, pod_uid: str, container_id: str) -> ContainerHistory:
        key = (pod_uid, container_id)
        self._touched.add(key)
        history = self._items.get(key)
        if history is None:
            history = self._items[key] = ContainerHistory(
                dense_seconds=self.dense_seconds, step_seconds=self.step_seconds
            )
        return history

    def peek(self, pod_uid: str, container_id: str) -> ContainerHistory | None:
        return self._items.get((pod_uid, container_id))

    def sweep(self) -> int:
        """Drop histories not used since the previous sweep; returns how many were dropped."""
        gone = [key for key in self._items if key not in self._touched]
        for key in gone:
            del self._items[key]
        self._touched = set()
        return len(gone)

    def __len__(self) -> int:
        return len(self._items)
