"""Parsers for cgroup and /proc memory files: pure functions over bytes.

The kernel formats these files, but the agent must survive anything: a file read while a
cgroup is being removed, an unexpected kernel, a test fixture written by hand. So:

- files made of lines (``memory.stat``, ``memory.events``, ``memory.pressure``, ``/proc/meminfo``)
  never fail as a whole: a malformed line is skipped and counted, and the parser returns the
  good lines together with that count (the sampler adds it to its ``malformed`` error counter);
- single-value files (``memory.current``, ``memory.max``) have nothing to skip, so a malformed
  one raises :class:`ParseError` — the only exception any function here raises.

Values are kept as the kernel writes them (bytes, counters, microseconds for PSI ``total``),
except ``/proc/meminfo`` whose ``kB`` values are converted to bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

# The largest value a u64 counter can print has 20 digits; longer runs of digits are garbage
# (and int() of thousands of digits is slow or refused by Python's digit limit).
_MAX_DIGITS = 20

# cgroup v1 prints "unlimited" as PAGE_COUNTER_MAX pages in bytes (9223372036854771712 on
# x86-64); anything from 2**62 up is that sentinel, not a real limit.
V1_UNLIMITED_THRESHOLD_BYTES = 2**62

PSI_KINDS = ("some", "full")
PSI_FIELDS = ("avg10", "avg60", "avg300", "total")


class ParseError(ValueError):
    """A single-value cgroup file whose content is not a number (or ``max`` where allowed)."""


def uint(raw: bytes) -> int | None:
    """A non-negative decimal integer, or None when ``raw`` is anything else."""
    if not raw.isdigit() or len(raw) > _MAX_DIGITS:  # isdigit() on bytes is ASCII-only
        return None
    return int(raw)


def parse_count(data: bytes) -> int:
    """A file holding one non-negative integer (``memory.current``, ``memory.swap.current``)."""
    value = uint(data.strip())
    if value is None:
        raise ParseError(f"expected a non-negative integer, got {data[:40]!r}")
    return value


def parse_limit(data: bytes) -> int | None:
    """A limit file (``memory.max``, ``memory.high``, ``memory.swap.max``): None means ``max``."""
    raw = data.strip()
    if raw == b"max":
        return None
    value = uint(raw)
    if value is None:
        raise ParseError(f"expected a byte count or 'max', got {data[:40]!r}")
    return value


def parse_v1_limit(data: bytes) -> int | None:
    """A cgroup v1 ``*limit_in_bytes`` file: None when it holds the 'unlimited' sentinel."""
    value = parse_count(data)
    return None if value >= V1_UNLIMITED_THRESHOLD_BYTES else value


def parse_flat_keyed(data: bytes) -> tuple[dict[str, int], int]:
    """``key value`` lines (``memory.stat``, ``memory.events``, v1 ``memory.oom_control``).

    Returns the parsed keys and the number of malformed lines skipped. Blank lines are not
    malformed; a key that appears twice keeps its last value.
    """
    result: dict[str, int] = {}
    malformed = 0
    for line in data.split(b"\n"):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[0].isascii():
            malformed += 1
            continue
        value = uint(parts[1])
        if value is None:
            malformed += 1
            continue
        result[parts[0].decode("ascii")] = value
    return result, malformed


Needles = tuple[tuple[bytes, int], ...]


def key_needles(keys: Sequence[str]) -> Needles:
    """Search strings for :func:`pick_keys` (with their lengths), built once per key list."""
    return tuple((b"\n" + key.encode("ascii") + b" ", len(key) + 2) for key in keys)


def pick_keys(data: bytes, needles: Needles) -> tuple[list[int | None], int]:
    """The values of a few keys of a flat-keyed file, without parsing every line.

    The sampling tick needs 3 of ``memory.stat``'s ~55 keys; finding them directly is several
    times cheaper than splitting the whole file. ``needles`` come from :func:`key_needles`.
    A key that is absent gives None; a key whose value is malformed gives None and counts as
    one malformed line. For well-formed files with unique keys this agrees with
    :func:`parse_flat_keyed` (a property test pins that).
    """
    buf = b"\n" + data
    values: list[int | None] = []
    malformed = 0
    for needle, size in needles:
        start = buf.find(needle)
        if start < 0:
            values.append(None)
            continue
        start += size
        end = buf.find(b"\n", start)
        raw = buf[start:end] if end >= 0 else buf[start:]
        if raw.isdigit() and len(raw) <= _MAX_DIGITS:  # the kernel's own format: one fast check
            values.append(int(raw))
            continue
        value = uint(raw.strip())
        if value is None:
            malformed += 1
        values.append(value)
    return values, malformed


def parse_pressure(data: bytes) -> tuple[dict[str, dict[str, float | int]], int]:
    """PSI lines: ``some avg10=0.12 avg60=0.05 avg300=0.01 total=12345`` (and ``full ...``).

    Returns ``{"some": {"avg10": 0.12, "avg60": ..., "avg300": ..., "total": 12345}, "full": ...}``
    (averages in percent, ``total`` in microseconds stalled) and the count of malformed lines.
    A line missing any of the four fields is malformed as a whole.
    """
    result: dict[str, dict[str, float | int]] = {}
    malformed = 0
    for line in data.split(b"\n"):
        parts = line.split()
        if not parts:
            continue
        row = _pressure_line(parts)
        if row is None:
            malformed += 1
            continue
        result[parts[0].decode("ascii")] = row
    return result, malformed


def _pressure_line(parts: list[bytes]) -> dict[str, float | int] | None:
    if len(parts) != 5 or parts[0] not in (b"some", b"full"):
        return None
    row: dict[str, float | int] = {}
    for part, name in zip(parts[1:], PSI_FIELDS, strict=True):
        key, sep, raw = part.partition(b"=")
        if not sep or key.decode("ascii", "replace") != name:
            return None
        if name == "total":
            total = uint(raw)
            if total is None:
                return None
            row[name] = total
        else:
            avg = _percent(raw)
            if avg is None:
                return None
            row[name] = avg
    return row


def _percent(raw: bytes) -> float | None:
    """A PSI average as the kernel prints it (``%lu.%02lu``): 0.00 to 100.00."""
    whole, dot, frac = raw.partition(b".")
    if not dot or not whole.isdigit() or not frac.isdigit() or len(whole) > 3 or len(frac) > 6:
        return None
    value = float(raw)
    return value if value <= 100.0 else None


def psi_hundredths(data: bytes, kind: bytes) -> int | None:
    """``avg10`` of the ``some`` or ``full`` line in hundredths of a percent, for the tick.

    The kernel prints two decimals, so hundredths are exact and fit a compact integer column.
    Agrees with :func:`parse_pressure` on what the kernel writes (a property test pins that).
    """
    needle = kind + b" avg10="
    start = data.find(needle)
    if start < 0 or (start > 0 and data[start - 1] != 0x0A):
        return None
    start += len(needle)
    end = data.find(b" ", start)
    if end < 0:
        return None
    whole, dot, frac = data[start:end].partition(b".")
    if not dot or not whole.isdigit() or not frac.isdigit() or len(whole) > 3 or len(frac) > 6:
        return None
    if len(frac) <= 2:
        value = int(whole) * 100 + int(frac.ljust(2, b"0"))
    else:  # more decimals than the kernel prints: round as parse_pressure's float would
        value = round(float(whole + dot + frac) * 100)
    return value if value <= 10000 else None


def parse_meminfo(data: bytes) -> tuple[dict[str, int], int]:
    """``/proc/meminfo``: ``MemTotal:  24683548 kB`` → ``{"MemTotal": 25275953152}`` (bytes).

    Lines without a unit (``HugePages_Total:  0``) are counts and kept as they are.
    """
    result: dict[str, int] = {}
    malformed = 0
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        key, sep, rest = line.partition(b":")
        parts = rest.split()
        value = uint(parts[0]) if parts else None
        well_formed = sep and key.isascii() and key.strip() == key and b" " not in key
        unit_ok = len(parts) == 1 or (len(parts) == 2 and parts[1] == b"kB")
        if value is None or not key or not well_formed or not unit_ok:
            malformed += 1
            continue
        result[key.decode("ascii")] = value * 1024 if len(parts) == 2 else value
    return result, malformed
