"""Runtime heap caps from a container's args and env (Node, JVM, Go)."""

from __future__ import annotations

import pytest

from memoryguard.engine import parse_runtime_heap_limit

MIB = 1024 * 1024
GIB = 1024 * MIB

CASES = [
    # id, args, env, hard cap (bytes) given memory.max 1 GiB, soft limit, source contains
    ("no flags", ["node", "server.js"], {}, None, None, ""),
    (
        "node flag in args",
        ["node", "--max-old-space-size=96", "leak.js"],
        {},
        96 * MIB,
        None,
        "--max-old-space-size=96",
    ),
    ("node flag with a space", ["node", "--max-old-space-size", "512", "app.js"], {}, 512 * MIB, None, "512"),
    (
        "node flag with underscores",
        ["node", "--max_old_space_size=256", "app.js"],
        {},
        256 * MIB,
        None,
        "256",
    ),
    (
        "node flag in NODE_OPTIONS (seed 000)",
        ["node", "app.js"],
        {"NODE_OPTIONS": "--max-old-space-size=3500"},
        3500 * MIB,
        None,
        "3500",
    ),
    (
        "command line beats NODE_OPTIONS",
        ["node", "--max-old-space-size=200", "app.js"],
        {"NODE_OPTIONS": "--max-old-space-size=3500 --enable-source-maps"},
        200 * MIB,
        None,
        "200",
    ),
    (
        "last node flag wins",
        ["node", "--max-old-space-size=100", "--max-old-space-size=300"],
        {},
        300 * MIB,
        None,
        "300",
    ),
    ("malformed node value ignored", ["node", "--max-old-space-size=lots"], {}, None, None, ""),
    ("jvm -Xmx in megabytes", ["java", "-Xmx512m", "-jar", "app.jar"], {}, 512 * MIB, None, "-Xmx512m"),
    ("jvm -Xmx in gigabytes", ["java", "-Xmx2G", "-jar", "app.jar"], {}, 2 * GIB, None, "-Xmx2G"),
    ("jvm -Xmx in kilobytes", ["java", "-Xmx65536k"], {}, 64 * MIB, None, "-Xmx65536k"),
    ("jvm -Xmx in bytes", ["java", "-Xmx1048576"], {}, MIB, None, "-Xmx1048576"),
    ("jvm MaxHeapSize", ["java", "-XX:MaxHeapSize=768m"], {}, 768 * MIB, None, "MaxHeapSize"),
    (
        "jvm MaxRAMPercentage needs memory.max",
        ["java", "-XX:MaxRAMPercentage=75.0", "-jar", "a.jar"],
        {},
        768 * MIB,
        None,
        "MaxRAMPercentage=75",
    ),
    (
        "jvm -Xmx beats MaxRAMPercentage",
        ["java", "-Xmx256m", "-XX:MaxRAMPercentage=75"],
        {},
        256 * MIB,
        None,
        "-Xmx256m",
    ),
    (
        "jvm options in JAVA_TOOL_OPTIONS",
        ["java", "-jar", "a.jar"],
        {"JAVA_TOOL_OPTIONS": "-Xmx300m"},
        300 * MIB,
        None,
        "-Xmx300m",
    ),
    (
        "command line beats JDK_JAVA_OPTIONS beats JAVA_TOOL_OPTIONS",
        ["java", "-Xmx100m"],
        {"JAVA_TOOL_OPTIONS": "-Xmx300m", "JDK_JAVA_OPTIONS": "-Xmx200m"},
        100 * MIB,
        None,
        "-Xmx100m",
    ),
    ("GOMEMLIMIT is soft, never a kill line", ["/app"], {"GOMEMLIMIT": "900MiB"}, None, 900 * MIB, "soft"),
    ("GOMEMLIMIT in bytes", ["/app"], {"GOMEMLIMIT": "1073741824"}, None, GIB, "soft"),
    ("GOMEMLIMIT off", ["/app"], {"GOMEMLIMIT": "off"}, None, None, ""),
    (
        "node started from a shell script string",
        ["sh", "-c", "exec node --max-old-space-size=96 server.js"],
        {},
        96 * MIB,
        None,
        "96",
    ),
    (
        "NODE_OPTIONS assigned in the shell script string",
        ["/bin/sh", "-c", "NODE_OPTIONS='--max-old-space-size=64 --trace-gc' node server.js"],
        {"NODE_OPTIONS": "--max-old-space-size=512"},
        64 * MIB,
        None,
        "64",
    ),
    (
        "java started from bash -lc",
        ["/bin/bash", "-lc", "java -Xmx512m -jar app.jar"],
        {},
        512 * MIB,
        None,
        "-Xmx512m",
    ),
    (
        "an assignment that is the whole argument is not a shell assignment",
        ["node", "NODE_OPTIONS=--max-old-space-size=64"],
        {},
        None,
        None,
        "",
    ),
    (
        "unbalanced quotes in NODE_OPTIONS",
        ["node"],
        {"NODE_OPTIONS": "--title='x --max-old-space-size=64"},
        64 * MIB,
        None,
        "64",
    ),
]


@pytest.mark.parametrize(
    ("args", "env", "hard", "soft", "source"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_parse_runtime_heap_limit(args, env, hard, soft, source):
    limit = parse_runtime_heap_limit(args, env)
    assert limit.resolve(GIB) == hard
    assert limit.soft_limit_bytes == soft
    assert source in limit.source


def test_max_ram_percentage_without_a_memory_limit_is_no_cap():
    assert parse_runtime_heap_limit(["java", "-XX:MaxRAMPercentage=50"], {}).resolve(None) is None
