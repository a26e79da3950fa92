"""Trace files: any file that follows the DESIGN.md contract parses; a broken row never sinks it."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memoryguard.engine import Sample
from memoryguard.traces import COLUMN_ALIASES, Failure, TraceError, find_failure, parse_trace

MIB = 1024 * 1024

FOREIGN = """\ufeff# workload: somebody else's recorder
# runtime_heap_limit_bytes: 96Mi
# an ordinary comment line, not metadata
# recorded-by: tool 2.0
t,anon,file,max,high,inactive_file,zswapped,events_high,swap_events_fail,swap_current,swap_max,psi_some_avg10,alive,note\r
0,1048576,2097152,max,max,1000,0,0,0,0,max,0.0,1,warm\r
1.5,2097152.0,2097152,268435456,268435456,1000,0,12,0,0,1.34e8,1.25,1,"a, quoted note"\r
# a comment between rows\r
2.5,3145728,2097152,268435456,268435456,1000,0,20,3,4096,134217728,2.5,true,\r
"""


def test_a_foreign_trace_with_unknown_columns_metadata_and_max_literals_parses():
    trace = parse_trace(FOREIGN, "foreign")
    assert trace.skipped_rows == 0
    assert len(trace.samples) == 3
    first, second, third = trace.samples
    assert first.max_bytes is None and first.high_bytes is None and first.swap_max_bytes is None
    assert second.t_seconds == 1.5 and second.anon_bytes == 2 * MIB and second.max_bytes == 256 * MIB
    assert second.swap_max_bytes == 134_000_000  # float notation, rounded to whole bytes
    assert third.high_events == 20 and third.swap_fail_events == 3 and third.swap_current_bytes == 4096
    assert third.psi_some_avg10 == 2.5 and third.alive is True
    assert trace.runtime_heap_limit_bytes == 96 * MIB
    assert trace.metadata["recorded-by"] == "tool 2.0"
    assert "an ordinary comment line" not in " ".join(trace.metadata.values())
    assert set(trace.ignored_columns) == {"zswapped", "note"}


def test_only_the_required_columns_are_enough():
    trace = parse_trace("t,anon,file,max\n0,1,2,3\n1,1,2,3\n")
    assert [s.anon_bytes for s in trace.samples] == [1, 1]
    assert trace.samples[0].oom_kill == 0 and trace.samples[0].alive is True
    assert trace.failure is None


def test_sample_field_names_are_accepted_as_columns():
    rows = [
        Sample(t_seconds=float(i), anon_bytes=i * MIB, file_bytes=MIB, max_bytes=64 * MIB) for i in range(3)
    ]
    names = ["t_seconds", "anon_bytes", "file_bytes", "max_bytes"]
    text = ",".join(names) + "\n" + "\n".join(",".join(str(getattr(r, n)) for n in names) for r in rows)
    assert list(parse_trace(text).samples) == rows


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no header row"),
        ("# only: metadata\n", "no header row"),
        ("t,anon,file\n0,1,2\n", "lacks required column(s) max"),
        ("time_s,anon,file,max\n0,1,2,3\n", "lacks required column(s) t"),
        ("# runtime_heap_limit_bytes: lots\nt,anon,file,max\n", "metadata runtime_heap_limit_bytes"),
        ("# failure_at: later\nt,anon,file,max\n", "metadata failure_at"),
    ],
    ids=["empty", "metadata only", "no max column", "no t column", "bad heap limit", "bad failure_at"],
)
def test_what_is_not_a_trace_is_refused_with_the_reason(text, message):
    with pytest.raises(TraceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_trace(text, "x")


def test_unreadable_rows_are_skipped_and_counted():
    rows = [
        "0,1,1,9,0",
        "1,,1,9,0",
        "2,abc,1,9,0",
        "3,-5,1,9,0",
        "3.5,1,1,9,0",
        "1,1,1,9,0",
        "4,1,1,9,zz",
        "5,1,1,9,nan",
    ]
    trace = parse_trace("t,anon,file,max,psi_some_avg10\n" + "\n".join(rows) + "\n", "x")
    assert [s.t_seconds for s in trace.samples] == [0.0, 3.5, 4.0, 5.0]
    assert trace.samples[2].psi_some_avg10 is None  # an unreadable optional cell is just unknown
    assert trace.skipped_rows == 4
    assert any("time goes backwards" in p for p in trace.problems)


FAILURES = [
    ("oom_kill increases", "t,anon,file,max,oom_kill\n0,1,1,9,0\n1,1,1,9,0\n2,0,1,9,1\n3,0,1,9,1\n", {}, 2.0),
    ("oom_kill already non-zero at the start", "t,anon,file,max,oom_kill\n0,1,1,9,3\n1,1,1,9,3\n", {}, None),
    ("alive drops to 0", "t,anon,file,max,alive\n0,1,1,9,1\n1,1,1,9,1\n2,0,1,9,0\n", {}, 2.0),
    (
        "alive 0 before the process starts is no failure",
        "t,anon,file,max,alive\n0,0,0,9,0\n1,1,1,9,1\n",
        {},
        None,
    ),
    ("failure_at metadata", "# failure_at: 1.5\nt,anon,file,max\n0,1,1,9\n1,1,1,9\n2,1,1,9\n", {}, 1.5),
    (
        "the earliest failure wins",
        "# failure_at: 9s\nt,anon,file,max,oom_kill\n0,1,1,9,0\n2,1,1,9,1\n",
        {},
        2.0,
    ),
    (
        "a blank oom_kill cell is the last known count, not a drop to 0",
        "t,anon,file,max,oom_kill\n0,1,1,9,2\n1,1,1,9,\n2,1,1,9,2\n3,1,1,9,?\n4,1,1,9,2\n",
        {},
        None,
    ),
    (
        "a leading blank oom_kill cell takes the first known count",
        "t,anon,file,max,oom_kill\n0,1,1,9,\n1,1,1,9,4\n2,1,1,9,4\n",
        {},
        None,
    ),
    (
        "a kill after a blank cell still counts",
        "t,anon,file,max,oom_kill\n0,1,1,9,0\n1,1,1,9,\n2,0,1,9,1\n",
        {},
        2.0,
    ),
    (
        "a blank alive cell is not a process exit",
        "t,anon,file,max,alive\n0,1,1,9,0\n1,1,1,9,\n2,1,1,9,0\n",
        {},
        None,
    ),
]


@pytest.mark.parametrize(("text", "_", "at"), [c[1:] for c in FAILURES], ids=[c[0] for c in FAILURES])
def test_failure_is_the_first_oom_kill_exit_or_failure_at(text, _, at):
    failure = parse_trace(text).failure
    assert (failure.t_seconds if failure else None) == at


@pytest.mark.parametrize("value", ["max", "", "none", "0"], ids=["max", "empty", "none", "zero"])
def test_a_heap_limit_metadata_that_says_no_limit_is_no_cap(value):
    trace = parse_trace(f"# runtime_heap_limit_bytes: {value}\nt,anon,file,max\n0,1,1,9\n", "x")
    assert trace.runtime_heap_limit_bytes is None


def test_find_failure_reports_why():
    samples = [
        Sample(t_seconds=0.0, anon_bytes=1, file_bytes=0, max_bytes=9, oom_kill=0),
        Sample(t_seconds=1.0, anon_bytes=0, file_bytes=0, max_bytes=9, oom_kill=1),
    ]
    assert find_failure(samples, {}) == Failure(1.0, "oom_kill 0 -> 1")


BYTES = st.integers(min_value=0, max_value=2**40)
OPTIONAL_BYTES = st.one_of(st.none(), BYTES)


@st.composite
def sample_rows(draw):
    count = draw(st.integers(min_value=1, max_value=12))
    times = sorted(draw(st.lists(st.floats(0, 1e9, allow_nan=False), min_size=count, max_size=count)))
    rows = []
    for t in times:
        rows.append(
            Sample(
                t_seconds=float(repr(t)) if math.isfinite(t) else 0.0,
                anon_bytes=draw(BYTES),
                file_bytes=draw(BYTES),
                max_bytes=draw(OPTIONAL_BYTES),
                high_bytes=draw(OPTIONAL_BYTES),
                shmem_bytes=draw(OPTIONAL_BYTES),
                swap_current_bytes=draw(OPTIONAL_BYTES),
                oom_kill=draw(st.integers(0, 5)),
                high_events=draw(st.integers(0, 10**9)),
                psi_some_avg10=draw(st.one_of(st.none(), st.floats(0, 100, allow_nan=False))),
                alive=draw(st.booleans()),
            )
        )
    return rows


COLUMNS = {
    "t": "t_seconds",
    "anon": "anon_bytes",
    "file": "file_bytes",
    "max": "max_bytes",
    "high": "high_bytes",
    "shmem": "shmem_bytes",
    "swap_current": "swap_current_bytes",
    "oom_kill": "oom_kill",
    "events_high": "high_events",
    "psi_some_avg10": "psi_some_avg10",
    "alive": "alive",
}


def _cell(field: str, value: object) -> str:
    if value is None:
        return "max" if field in ("max_bytes", "high_bytes") else ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return repr(value) if isinstance(value, float) else str(value)


@settings(max_examples=150, deadline=None)
@given(
    rows=sample_rows(),
    order=st.permutations(list(COLUMNS)),
    extra=st.lists(st.sampled_from(["pgfault", "zswap", "workingset_refault_anon", "x"]), unique=True),
    metadata=st.dictionaries(
        st.from_regex(r"[a-z][a-z_]{0,10}", fullmatch=True),
        st.from_regex(r"[a-z0-9 ]{0,12}", fullmatch=True),
        max_size=3,
    ),
)
def test_any_trace_written_by_the_contract_parses_back_to_the_same_samples(rows, order, extra, metadata):
    metadata.pop("runtime_heap_limit_bytes", None)
    metadata.pop("failure_at", None)
    header = list(order) + extra
    lines = [f"# {k}: {v}" for k, v in metadata.items()]
    lines.append(",".join(header))
    for row in rows:
        cells = [_cell(COLUMNS[c], getattr(row, COLUMNS[c])) if c in COLUMNS else "7" for c in header]
        lines.append(",".join(cells))
    trace = parse_trace("\n".join(lines) + "\n", "h")
    assert trace.skipped_rows == 0
    assert list(trace.samples) == rows
    assert dict(trace.metadata) == {k: v.strip() for k, v in metadata.items()}


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('tanofilemx,#:0123456789.-\n\r e"')), max_size=300))
def test_arbitrary_text_is_a_trace_or_a_trace_error_never_a_crash(text):
    try:
        trace = parse_trace(text, "fuzz")
    except TraceError:
        return
    assert all(isinstance(s, Sample) for s in trace.samples)


def test_every_alias_maps_to_a_sample_field():
    fields = set(Sample.__dataclass_fields__)
    assert set(COLUMN_ALIASES.values()) <= fields
