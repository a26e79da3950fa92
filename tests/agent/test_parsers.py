"""Parsers of cgroup and /proc memory files: exact on kernel output, never crash on garbage."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memoryguard.agent import cgroup, parsers
from memoryguard.agent.parsers import ParseError
from memoryguard.agent.reading import NONE, ROW_POS, new_row, new_values

KEY = st.from_regex(r"[a-z][a-z0-9_]{0,24}", fullmatch=True)
U64 = st.integers(min_value=0, max_value=2**64 - 1)
ANY_BYTES = st.binary(max_size=2048)
# Garbage that looks like cgroup files: digits, keys, separators, junk.
LINEISH = st.lists(
    st.one_of(
        st.sampled_from(
            [b"anon", b"file", b"some", b"full", b"avg10=", b"total=", b"kB", b"max", b":", b"=", b"."]
        ),
        st.binary(max_size=6),
        st.integers(min_value=-5, max_value=10**25).map(lambda n: str(n).encode()),
        st.sampled_from([b" ", b"\n", b"\t", b"  ", b"\r\n"]),
    ),
    max_size=60,
).map(b"".join)
GARBAGE = st.one_of(ANY_BYTES, LINEISH)


def flat_file(items: dict[str, int]) -> bytes:
    return "".join(f"{k} {v}\n" for k, v in items.items()).encode()


# --- flat-keyed files ---------------------------------------------------------------------


def test_flat_keyed_reads_memory_events_exactly():
    data = b"low 0\nhigh 12\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n"
    assert parsers.parse_flat_keyed(data) == (
        {"low": 0, "high": 12, "max": 3, "oom": 1, "oom_kill": 1, "oom_group_kill": 0},
        0,
    )


def test_flat_keyed_skips_and_counts_malformed_lines_keeping_the_good_ones():
    data = b"anon 4096\nfile -1\nshmem\nkernel 12 13\n\nslab 8192\nbogus x\n"
    values, malformed = parsers.parse_flat_keyed(data)
    assert values == {"anon": 4096, "slab": 8192}
    assert malformed == 4


def test_flat_keyed_refuses_absurdly_long_numbers_instead_of_hanging():
    values, malformed = parsers.parse_flat_keyed(b"anon " + b"9" * 5000 + b"\nfile 1\n")
    assert values == {"file": 1}
    assert malformed == 1


@settings(deadline=None)  # timing varies on a shared machine; correctness does not
@given(st.dictionaries(KEY, U64, max_size=60))
def test_flat_keyed_round_trips_well_formed_files(items):
    assert parsers.parse_flat_keyed(flat_file(items)) == (items, 0)


@settings(deadline=None)  # timing varies on a shared machine; correctness does not
@given(GARBAGE)
def test_flat_keyed_never_raises_on_arbitrary_bytes(data):
    values, malformed = parsers.parse_flat_keyed(data)
    assert malformed >= 0
    assert all(isinstance(v, int) and v >= 0 for v in values.values())


@settings(deadline=None)  # timing varies on a shared machine; correctness does not
@given(st.dictionaries(KEY, U64, min_size=1, max_size=40), st.data())
def test_pick_keys_agrees_with_the_full_parser_on_well_formed_files(items, data):
    wanted = data.draw(st.lists(st.one_of(st.sampled_from(sorted(items)), KEY), min_size=1, max_size=8))
    picked, malformed = parsers.pick_keys(flat_file(items), parsers.key_needles(wanted))
    assert picked == [items.get(k) for k in wanted]
    assert malformed == 0


@settings(deadline=None)  # timing varies on a shared machine; correctness does not
@given(GARBAGE, st.lists(KEY, min_size=1, max_size=6))
def test_pick_keys_never_raises_and_returns_only_clean_values(data, wanted):
    picked, malformed = parsers.pick_keys(data, parsers.key_needles(wanted))
    assert len(picked) == len(wanted)
    assert 0 <= malformed <= len(wanted)
    assert all(v is None or (isinstance(v, int) and v >= 0) for v in picked)


def test_pick_keys_does_not_confuse_a_key_with_a_longer_one():
    data = b"file_mapped 10\nfile 20\nkernel_stack 30\nkernel 40\n"
    assert parsers.pick_keys(data, parsers.key_needles(["file", "kernel"])) == ([20, 40], 0)


@settings(deadline=None)  # timing varies on a shared machine; correctness does not
@given(GARBAGE)
def test_the_probes_fused_picker_matches_pick_keys_on_any_bytes(data):
    # cgroup._picker inlines pick_keys for speed; it must behave exactly like it.
    keys = ("anon", "file", "inactive_file", "pgmajfault")
    slots = (cgroup.ANON, cgroup.FILE, cgroup.INACTIVE_FILE, cgroup.PGMAJFAULT)
    apply = cgroup._picker(keys, slots, None)
    probe = cgroup.CgroupProbe(Path("/nonexistent"), cgroup.V2_LAYOUT)
    malformed = apply(probe, data)
    expected, expected_malformed = parsers.pick_keys(data, parsers.key_needles(keys))
    assert malformed == expected_malformed
    for slot, value in zip(slots, expected, strict=True):
        unknown = 0 if slot == cgroup.PGMAJFAULT else None
        assert probe.values[slot] == (unknown if value is None else value)
    assert list(probe.row) == list(new_row(probe.values))


# --- single values ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [(b"268435456\n", 268435456), (b"max\n", None), (b"0\n", 0), (b" 4096 \n", 4096)],
    ids=["bytes", "max-is-unlimited", "zero", "whitespace"],
)
def test_parse_limit(data, expected):
    assert parsers.parse_limit(data) == expected


@pytest.mark.parametrize("data", [b"", b"-1\n", b"12k\n", b"maximum\n", b"1.5\n", b"\xff"])
def test_single_values_raise_parse_error_when_not_a_number(data):
    with pytest.raises(ParseError):
        parsers.parse_limit(data)
    with pytest.raises(ParseError):
        parsers.parse_count(data)


def test_v1_unlimited_sentinel_means_no_limit():
    assert parsers.parse_v1_limit(b"9223372036854771712\n") is None
    assert parsers.parse_v1_limit(b"268435456\n") == 268435456


@settings(deadline=None)  # timing varies on a shared machine; correctness does not
@given(U64)
def test_parse_count_round_trips(value):
    assert parsers.parse_count(f"{value}\n".encode()) == value


@settings(deadline=None)  # timing varies on a shared machine; correctness does not
@given(GARBAGE)
def test_single_value_parsers_raise_only_parse_error(data):
    for parse in (parsers.parse_count, parsers.parse_limit, parsers.parse_v1_limit):
        try:
            value = parse(data)
        except ParseError:
            continue
        assert value is None or value >= 0


# --- PSI ----------------------------------------------------------------------------------


def test_pressure_reads_both_lines():
    data = (
        b"some avg10=1.25 avg60=0.50 avg300=0.10 total=123456\n"
        b"full avg10=0.75 avg60=0.00 avg300=0.00 total=99\n"
    )
    values, malformed = parsers.parse_pressure(data)
    assert malformed == 0
    assert values == {
        "some": {"avg10": 1.25, "avg60": 0.5, "avg300": 0.1, "total": 123456},
        "full": {"avg10": 0.75, "avg60": 0.0, "avg300": 0.0, "total": 99},
    }
    assert parsers.psi_hundredths(data, b"some") == 125
    assert parsers.psi_hundredths(data, b"full") == 75


def test_pressure_skips_a_broken_line_and_keeps_the_other():
    data = (
        b"some avg10=1.25 avg60=oops avg300=0.10 total=1\nfull avg10=0.75 avg60=0.00 avg300=0.00 total=99\n"
    )
    values, malformed = parsers.parse_pressure(data)
    assert set(values) == {"full"}
    assert malformed == 1
    assert parsers.psi_hundredths(data, b"full") == 75


PERCENT = st.integers(min_value=0, max_value=10000)


@settings(deadline=None)  # timing varies on a shared machine; correctness does not
@given(PERCENT, PERCENT, PERCENT, U64, PERCENT, U64)
def test_pressure_round_trips(a10, a60, a300, total, f10, ftotal):
    def pct(hundredths: int) -> str:
        return f"{hundredths // 100}.{hundredths % 100:02d}"

    data = (
        f"some avg10={pct(a10)} avg60={pct(a60)} avg300={pct(a300)} total={total}\n"
        f"full avg10={pct(f10)} avg60=0.00 avg300=0.00 total={ftotal}\n"
    ).encode()
    values, malformed = parsers.parse_pressure(data)
    assert malformed == 0
    assert values["some"] == {"avg10": a10 / 100, "avg60": a60 / 100, "avg300": a300 / 100, "total": total}
    assert values["full"]["total"] == ftotal
    assert parsers.psi_hundredths(data, b"some") == a10
    assert parsers.psi_hundredths(data, b"full") == f10


@settings(deadline=None)  # timing varies on a shared machine; correctness does not
@given(GARBAGE)
def test_pressure_parsers_never_raise(data):
    values, malformed = parsers.parse_pressure(data)
    assert malformed >= 0
    for row in values.values():
        assert set(row) == set(parsers.PSI_FIELDS)
    for kind in (b"some", b"full"):
        value = parsers.psi_hundredths(data, kind)
        assert value is None or 0 <= value <= 10000


# --- /proc/meminfo ------------------------------------------------------------------------


def test_meminfo_converts_kb_to_bytes_and_keeps_counts():
    data = (
        b"MemTotal:       24683548 kB\nMemFree:        20000000 kB\n"
        b"Active(anon):      40568 kB\nHugePages_Total:       0\n"
    )
    values, malformed = parsers.parse_meminfo(data)
    assert malformed == 0
    assert values == {
        "MemTotal": 24683548 * 1024,
        "MemFree": 20000000 * 1024,
        "Active(anon)": 40568 * 1024,
        "HugePages_Total": 0,
    }


def test_meminfo_counts_malformed_lines():
    values, malformed = parsers.parse_meminfo(
        b"MemTotal: 10 kB\nMemFree 12 kB\nCached: x kB\nBuffers: 1 MB\n"
    )
    assert values == {"MemTotal": 10240}
    assert malformed == 3


def test_meminfo_of_this_machine_parses_cleanly():
    with open("/proc/meminfo", "rb") as f:
        values, malformed = parsers.parse_meminfo(f.read())
    assert malformed == 0
    assert values["MemTotal"] > values["MemFree"] > 0


@settings(deadline=None)  # timing varies on a shared machine; correctness does not
@given(st.dictionaries(st.from_regex(r"[A-Za-z][A-Za-z0-9_()]{0,20}", fullmatch=True), U64, max_size=40))
def test_meminfo_round_trips(items):
    data = "".join(f"{k}: {v} kB\n" for k, v in items.items()).encode()
    assert parsers.parse_meminfo(data) == ({k: v * 1024 for k, v in items.items()}, 0)


@settings(deadline=None)  # timing varies on a shared machine; correctness does not
@given(GARBAGE)
def test_meminfo_never_raises(data):
    values, malformed = parsers.parse_meminfo(data)
    assert malformed >= 0
    assert all(v >= 0 for v in values.values())


def test_reading_row_encodes_unknown_as_sentinel():
    row = new_row(new_values())
    assert row[ROW_POS[cgroup.ANON]] == NONE
    assert row[ROW_POS[cgroup.OOM_KILL]] == 0


STAT_KEYS = {
    2: ["anon", "file", "inactive_file", "kernel", "anon_thp", "file_mapped"],
    1: ["rss", "cache", "inactive_file", "total_rss", "total_cache", "total_inactive_file", "total_rss_huge"],
}


@given(
    st.sampled_from([2, 1]),
    st.one_of(st.integers(min_value=0, max_value=2**64 - 1).map(lambda n: f"{n}\n".encode()), GARBAGE),
    st.data(),
)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_written_out_fast_read_matches_the_general_read(tmp_path, version, current, data):
    # CgroupProbe.read_fast inlines the general read for the hot path: same values, same row,
    # same error counts, whatever the files say.
    stat = data.draw(
        st.one_of(st.dictionaries(st.sampled_from(STAT_KEYS[version]), U64).map(flat_file), GARBAGE)
    )
    layout = cgroup.layout_for(version)
    ((usage_file, _),) = layout.tiers[cgroup.FAST]
    (tmp_path / usage_file).write_bytes(current)
    (tmp_path / "memory.stat").write_bytes(stat)
    fast, general = cgroup.CgroupProbe(tmp_path, layout), cgroup.CgroupProbe(tmp_path, layout)
    fast_errors: dict[str, int] = {}
    general_errors: dict[str, int] = {}
    assert fast.read_fast(fast_errors) is True
    assert general._attach() and general._read(cgroup.FAST, general_errors) is True
    assert fast.values == general.values
    assert list(fast.row) == list(general.row)
    assert fast_errors == general_errors
    fast.close()
    general.close()
