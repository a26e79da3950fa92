"""The ``memoryguard`` command: one entry point, one subcommand per role.

Subcommand modules are imported only when chosen, so ``memoryguard agent`` never loads Kopf
or the Kubernetes client (the agent runs on every node and must stay small).
Each module provides ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> (module, one-line help). Kept static so `memoryguard --help` imports nothing heavy.
COMMANDS: dict[str, tuple[str, str]] = {
    "agent": ("memoryguard.agent.main", "run the node agent (sampler, /metrics, read and action API)"),
    "operator": ("memoryguard.controller.main", "run the Kopf operator that watches MemoryGuard resources"),
    "top": ("memoryguard.commands.top", "live table of containers: anon, file, limit, growth, events"),
    "explain": ("memoryguard.commands.explain", "one-screen diagnosis of a pod or cgroup, with a verdict"),
    "record": ("memoryguard.commands.record", "write a cgroup's samples to a trace file (CSV)"),
    "sample": ("memoryguard.commands.sample", "run timed sampling ticks over a cgroup tree (benchmark)"),
    "replay": ("memoryguard.commands.replay", "feed a trace to the engine and print each decision"),
    "bench": ("memoryguard.commands.bench", "score the policy and baselines on a directory of traces"),
}


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memoryguard",
        description=(
            "Prevent OOM kills: reclaim page cache, restart leaking workloads before the kernel kills them."
        ),
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or args_list[0] not in COMMANDS:
        parser = _top_parser()
        ns = parser.parse_args(args_list)
        if ns.version:
            from memoryguard import __version__

            print(__version__)
            return 0
        parser.print_help()
        return 2
    name, rest = args_list[0], args_list[1:]
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(
        prog=f"memoryguard {name}",
        description=(module.__doc__ or help_text).strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
