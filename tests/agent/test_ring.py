"""Compact sample rings: exact round trip (to the KiB), bounded, decimated past the fine tier."""

from __future__ import annotations

import itertools
from array import array

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memoryguard.agent import reading
from memoryguard.agent.reading import READING_FIELDS, new_row, new_values
from memoryguard.agent.ring import COLUMNS, SampleRing
from memoryguard.engine.model import Sample


def values_with(**fields):
    values = new_values()
    for name, value in fields.items():
        values[READING_FIELDS.index(name)] = value
    return values


def test_columns_are_sample_fields_in_order():
    assert tuple(f for f in Sample.__dataclass_fields__) == COLUMNS


def test_a_row_round_trips_to_a_sample():
    values = values_with(
        anon_bytes=123 * 1024 * 1024,
        file_bytes=4096,
        max_bytes=None,
        inactive_file_bytes=2048,
        current_bytes=200 * 1024 * 1024 + 1023,  # not page-aligned: truncated to the KiB
        oom_kill=3,
        psi_some_avg10=1234,  # hundredths: 12.34 %
        psi_full_avg10=None,
        alive=0,
    )
    ring = SampleRing(4, 0, 10.0)
    ring.append(100.5, new_row(values))
    [row] = ring.rows()
    sample = Sample.from_dict(dict(zip(COLUMNS, row, strict=True)))
    assert sample.t_seconds == 100.5
    assert sample.anon_bytes == 123 * 1024 * 1024
    assert sample.file_bytes == 4096
    assert sample.max_bytes is None
    assert sample.current_bytes == 200 * 1024 * 1024
    assert sample.oom_kill == 3
    assert sample.psi_some_avg10 == pytest.approx(12.34)
    assert sample.psi_full_avg10 is None
    assert sample.alive is False
    assert sample.kernel_bytes is None  # never read: unknown, not zero


@pytest.mark.parametrize("alive", [0, 1])
def test_the_latest_reading_as_a_dict_is_what_the_sample_gives(alive):
    values = values_with(
        anon_bytes=123 * 1024 * 1024,
        file_bytes=4097,
        max_bytes=None,
        high_bytes=2**30,
        oom_kill=3,
        psi_some_avg10=1234,
        psi_full_avg10=None,
        alive=alive,
    )
    as_dict = reading.values_as_dict(7.25, values)
    expected = reading.sample_from_values(7.25, values).to_dict()
    assert as_dict == expected and list(as_dict) == list(expected)
    assert as_dict["psi_some_avg10"] == 12.34 and as_dict["alive"] is bool(alive)


@given(st.lists(st.sampled_from([0, 1, 99, 1234, reading.CEILING, reading.NONE]), min_size=20, max_size=20))
def test_decode_gives_every_field_in_sample_order_and_units(stored):
    # What decode must do, written field by field (decode itself does it in bulk, for speed).
    row = array("I", stored)
    expected: list = [5.5] + [None] * reading.WIDTH
    for value, slot in zip(row, reading.ROW_SLOTS, strict=True):
        if value == reading.NONE:
            continue
        if slot in (reading.PSI_SOME, reading.PSI_FULL):
            expected[slot + 1] = value / 100
        elif slot == reading.ALIVE:
            expected[slot + 1] = bool(value)
        else:
            expected[slot + 1] = value << reading.SHIFTS[slot]
    decoded = reading.decode(5.5, row)
    assert decoded == expected
    assert [type(v) for v in decoded] == [type(v) for v in expected]


def test_values_beyond_the_encoding_saturate_instead_of_wrapping():
    values = values_with(anon_bytes=2**50, file_bytes=0, pgmajfault=2**40)
    row = new_row(values)
    assert row[reading.ROW_POS[reading.ANON]] == reading.CEILING
    assert row[reading.ROW_POS[reading.PGMAJFAULT]] == reading.CEILING


def test_default_capacity_is_five_fine_minutes_plus_coarse_rows_for_thirty():
    ring = SampleRing.for_retention(retention_seconds=1800, interval_seconds=1.0)
    assert ring.capacity == 300 + 150
    assert ring.nbytes() == 450 * (8 + 4 * reading.DENSE_WIDTH)  # nothing logged yet


def test_full_ring_keeps_every_second_recently_and_every_tenth_before():
    ring = SampleRing.for_retention(retention_seconds=1800, interval_seconds=1.0)
    for t in range(4000):
        ring.append(float(t), new_row(values_with(anon_bytes=t * 1024, file_bytes=0)))
    rows = ring.rows()
    times = [r[0] for r in rows]
    assert len(rows) == ring.capacity
    assert times == sorted(times)
    assert times[-300:] == [float(t) for t in range(3700, 4000)]
    coarse = times[:-300]
    assert {b - a for a, b in itertools.pairwise(coarse)} == {10.0}
    assert 3999 - times[0] <= 1800 + 10
    assert all(r[1] == r[0] * 1024 for r in rows)  # each row's values belong to its time


def test_rows_after_a_time_are_strictly_newer():
    ring = SampleRing(10, 0, 10.0)
    for t in range(10):
        ring.append(float(t), new_row(values_with(anon_bytes=0, file_bytes=0)))
    assert [r[0] for r in ring.rows(6.0)] == [7.0, 8.0, 9.0]
    assert ring.rows(9.0) == []


def test_a_short_retention_needs_no_coarse_tier():
    ring = SampleRing.for_retention(retention_seconds=60, interval_seconds=1.0)
    assert ring.capacity == 60
    for t in range(100):
        ring.append(float(t), new_row(values_with(anon_bytes=0, file_bytes=0)))
    assert [r[0] for r in ring.rows()] == [float(t) for t in range(40, 100)]


def test_rarely_changing_fields_are_logged_once_and_rows_see_them_as_they_were():
    ring = SampleRing.for_retention(retention_seconds=1800, interval_seconds=1.0)
    for t in range(600):
        limit = 256 * 1024 * 1024 if t < 400 else 512 * 1024 * 1024
        kills = 1 if t >= 500 else 0
        ring.append(
            float(t), new_row(values_with(anon_bytes=t * 4096, file_bytes=0, max_bytes=limit, oom_kill=kills))
        )
    assert len(ring._changes) == 3  # the first reading, the resize, the kill
    by_t = {row[0]: Sample.from_dict(dict(zip(COLUMNS, row, strict=True))) for row in ring.rows()}
    assert by_t[399.0].max_bytes == 256 * 1024 * 1024 and by_t[400.0].max_bytes == 512 * 1024 * 1024
    assert by_t[499.0].oom_kill == 0 and by_t[500.0].oom_kill == 1
    assert by_t[390.0].max_bytes == 256 * 1024 * 1024  # a coarse row keeps the values of its time


def test_the_change_log_forgets_what_no_retained_row_needs():
    ring = SampleRing(10, 0, 10.0)
    for t in range(100):
        ring.append(float(t), new_row(values_with(anon_bytes=0, file_bytes=0, oom_kill=t)))
    assert len(ring._changes) == 10  # one per retained row, not one per append ever made
    assert [row[READING_FIELDS.index("oom_kill") + 1] for row in ring.rows()] == list(range(90, 100))
