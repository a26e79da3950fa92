"""Heap caps that language runtimes impose below ``memory.max``.

A Node.js process started with ``--max-old-space-size=96`` dies with "JavaScript heap out of
memory" when its V8 old space reaches 96 MiB, however large ``memory.max`` is; a JVM with
``-Xmx`` throws ``OutOfMemoryError`` at its heap cap. For a heap leak, that cap — not the cgroup
limit — is the line to forecast. ``GOMEMLIMIT`` is different: the Go runtime collects harder as
it approaches it but never dies because of it, so it is reported, never treated as a kill line.

Pure string parsing: the operator passes the container's command, args and env from the pod
spec (a shell wrapper's script string included).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MIB = 1024 * 1024

_NODE_FLAG = re.compile(r"^--max[-_]old[-_]space[-_]size(?:=(.*))?$")
_JVM_XMX = re.compile(r"^-Xmx([0-9]+)([kKmMgGtT]?)$")
_JVM_MAX_HEAP = re.compile(r"^-XX:MaxHeapSize=([0-9]+)([kKmMgGtT]?)$")
_JVM_RAM_PERCENT = re.compile(r"^-XX:MaxRAMPercentage=([0-9]+(?:\.[0-9]*)?)$")
_GOMEMLIMIT = re.compile(r"^([0-9]+(?:\.[0-9]*)?)(B|KiB|MiB|GiB|TiB)?$")

_JVM_UNITS = {"": 1, "k": 1024, "m": MIB, "g": 1024 * MIB, "t": 1024 * 1024 * MIB}
_GO_UNITS = {None: 1, "B": 1, "KiB": 1024, "MiB": MIB, "GiB": 1024 * MIB, "TiB": 1024 * 1024 * MIB}


@dataclass(frozen=True, slots=True)
class RuntimeLimit:
    """What the runtime flags say about the heap.

    ``heap_limit_bytes`` is a hard cap (the process dies or fails allocations there);
    ``heap_fraction_of_max`` is a JVM ``MaxRAMPercentage`` that needs ``memory.max`` to become bytes;
    ``soft_limit_bytes`` is ``GOMEMLIMIT``, which is never a kill line.
    """

    heap_limit_bytes: int | None = None
    heap_fraction_of_max: float | None = None
    soft_limit_bytes: int | None = None
    source: str = ""

    def resolve(self, max_bytes: int | None) -> int | None:
        """The hard heap cap in bytes, given the container's ``memory.max`` (``None``: unlimited)."""
        if self.heap_limit_bytes is not None:
            return self.heap_limit_bytes
        if self.heap_fraction_of_max is not None and max_bytes is not None:
            return int(max_bytes * self.heap_fraction_of_max)
        return None


def _split_options(value: str) -> list[str]:
    try:
        return shlex.split(value)
    except ValueError:  # unbalanced quotes: the runtime would split on whitespace too
        return value.split()


def _node_heap_bytes(tokens: Sequence[str]) -> int | None:
    """Last ``--max-old-space-size`` wins, as in V8's own flag parsing."""
    found: int | None = None
    for i, token in enumerate(tokens):
        match = _NODE_FLAG.match(token)
        if not match:
            continue
        value = match.group(1)
        if value is None and i + 1 < len(tokens):
            value = tokens[i + 1]
        try:
            mib = float(value) if value is not None else -1.0
        except ValueError:
            continue
        if mib > 0:
            found = int(mib * MIB)
    return found


def _jvm_heap(tokens: Sequence[str]) -> tuple[int | None, float | None, str]:
    """``-Xmx``/``MaxHeapSize`` beat ``MaxRAMPercentage``, whatever the order (as in HotSpot)."""
    heap: int | None = None
    heap_source = ""
    fraction: float | None = None
    for token in tokens:
        match = _JVM_XMX.match(token) or _JVM_MAX_HEAP.match(token)
        if match:
            heap = int(match.group(1)) * _JVM_UNITS[match.group(2).lower()]
            heap_source = token
            continue
        match = _JVM_RAM_PERCENT.match(token)
        if match:
            percent = float(match.group(1))
            if 0 < percent <= 100:
                fraction = percent / 100.0
    if heap is not None:
        return heap, None, heap_source
    if fraction is not None:
        return None, fraction, f"-XX:MaxRAMPercentage={fraction * 100:g}"
    return None, None, ""


def _go_soft_limit(value: str) -> int | None:
    match = _GOMEMLIMIT.match(value.strip())
    if not match:
        return None  # "off" or malformed: the Go runtime then has no soft limit either
    return int(float(match.group(1)) * _GO_UNITS[match.group(2)])


_ENV_ASSIGNMENT = re.compile(
    r"^(NODE_OPTIONS|JAVA_TOOL_OPTIONS|JDK_JAVA_OPTIONS|GOMEMLIMIT)=(.*)$", re.DOTALL
)


def _command_tokens(args: Sequence[str], env: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """The command line as the runtime will see it, through a shell wrapper.

    Containers often start their runtime from a script string (``sh -c "node
    --max-old-space-size=96 app.js"``): an argument holding whitespace is also read as the words
    the shell splits it into, and a ``NODE_OPTIONS=…`` (or JVM/Go) assignment among those words
    sets that variable for the command, as the shell would.
    """
    tokens: list[str] = []
    merged = dict(env)
    for arg in args:
        words = _split_options(arg) if any(c.isspace() for c in arg) else [arg]
        for word in words:
            match = _ENV_ASSIGNMENT.match(word)
            if match and len(words) > 1:
                merged[match.group(1)] = match.group(2)
            else:
                tokens.append(word)
    return tokens, merged


def parse_runtime_heap_limit(args: Sequence[str], env: Mapping[str, str]) -> RuntimeLimit:
    """Read Node.js, JVM and Go memory flags from a container's command line and environment.

    Node reads ``NODE_OPTIONS`` before its command line, so command-line flags win; the JVM reads
    ``JAVA_TOOL_OPTIONS``, then ``JDK_JAVA_OPTIONS``, then its command line.
    """
    args, env = _command_tokens(args, env)
    node_tokens = _split_options(env.get("NODE_OPTIONS", "")) + args
    node_heap = _node_heap_bytes(node_tokens)
    soft = _go_soft_limit(env["GOMEMLIMIT"]) if "GOMEMLIMIT" in env else None
    if node_heap is not None:
        return RuntimeLimit(
            heap_limit_bytes=node_heap,
            soft_limit_bytes=soft,
            source=f"runtime heap (--max-old-space-size={node_heap // MIB})",
        )
    jvm_tokens = (
        _split_options(env.get("JAVA_TOOL_OPTIONS", ""))
        + _split_options(env.get("JDK_JAVA_OPTIONS", ""))
        + args
    )
    heap, fraction, flag = _jvm_heap(jvm_tokens)
    if heap is not None or fraction is not None:
        return RuntimeLimit(
            heap_limit_bytes=heap,
            heap_fraction_of_max=fraction,
            soft_limit_bytes=soft,
            source=f"runtime heap ({flag})",
        )
    if soft is not None:
        return RuntimeLimit(soft_limit_bytes=soft, source="GOMEMLIMIT (soft, not a kill line)")
    return RuntimeLimit()
