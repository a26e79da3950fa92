"""The kernel test rig: boot Debian's generic kernel under QEMU with cgroup v2 and run a job.

The guest sees the host's root over 9p and chroots into it (see ``guest/init``), so a job is
a shell script using the host's own binaries — node, python, this repository's venv — while
every cgroup file it touches belongs to the guest's kernel. A job writes its results into
its run directory, a host path reached through the share.

QEMU runs with TCG: KVM is present on the development machines but hangs at boot there.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

KERNEL_DIR = Path(__file__).resolve().parent
REPO_ROOT = KERNEL_DIR.parents[1]
WORK_DIR = KERNEL_DIR / ".work"
GUEST_DIR = KERNEL_DIR / "guest"

# Loaded in this order (each after the modules it depends on); dependencies are added by
# reading every module's own `depends=` field, so only the leaves need naming here.
GUEST_MODULES = (
    "virtio_pci",
    "9pnet_virtio",
    "9p",
    "virtio_blk",
    "crc32c_generic",
    "ext4",
    "zram",
    "virtio_net",  # only `make demo` gives the guest a NIC (QEMU user networking)
)
QEMU_BINARY = "qemu-system-x86_64"
BUSYBOX_CANDIDATES = (Path("/bin/busybox"), Path("/usr/bin/busybox"))
CONSOLE_TAIL_LINES = 60


class RigError(RuntimeError):
    """The guest did not boot, or did not finish its job."""


@dataclass(frozen=True)
class Kernel:
    """A kernel package unpacked by ``fetch-kernel.sh`` (never installed on the host)."""

    root: Path
    release: str

    @property
    def image(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.release}"

    @property
    def modules_dir(self) -> Path:
        return self.root / "lib" / "modules" / self.release / "kernel"

    @classmethod
    def unpacked(cls, root: Path = WORK_DIR / "kernel") -> Kernel | None:
        release_file = root / "release"
        if not release_file.is_file():
            return None
        kernel = cls(root=root, release=release_file.read_text().strip())
        return kernel if kernel.image.is_file() and kernel.modules_dir.is_dir() else None

    def module_paths(self) -> dict[str, Path]:
        # Module names use underscores; file names sometimes use dashes.
        return {p.name[:-3].replace("-", "_"): p for p in self.modules_dir.rglob("*.ko")}

    def load_order(self, wanted: tuple[str, ...]) -> list[Path]:
        """The wanted modules and everything they depend on, dependencies first."""
        paths = self.module_paths()
        ordered: list[Path] = []
        seen: set[str] = set()

        def visit(name: str) -> None:
            if name in seen:
                return
            seen.add(name)
            if name not in paths:
                raise RigError(f"kernel {self.release} has no module {name!r}")
            for dependency in module_dependencies(paths[name]):
                visit(dependency)
            ordered.append(paths[name])

        for name in wanted:
            visit(name)
        return ordered


def module_dependencies(module: Path) -> list[str]:
    """The ``depends=`` field of a module's .modinfo section (no depmod/kmod needed)."""
    data = module.read_bytes()
    start = data.find(b"\0depends=")
    if start < 0:
        return []
    value = data[start + len(b"\0depends=") : data.index(b"\0", start + 1)].decode()
    return [name.replace("-", "_") for name in value.split(",") if name]


def precompile() -> None:
    """Byte-compiles the project's Python for the guest's processes (agent, record, stand-ins).

    Under TCG the guest runs Python some 40 times slower than the host, and most of a process's
    start is spent importing (measured: 21 s to import the agent in the guest against 0.5 s
    here; see BENCHMARKS.md). With no bytecode on disk (a fresh clone; PYTHONDONTWRITEBYTECODE
    on the host) every guest process would also compile its modules first, all of them at
    once when a batch starts. The venv's packages were compiled by pip at install.
    """
    python = REPO_ROOT / ".venv" / "bin" / "python"
    subprocess.run(
        [str(python if python.exists() else sys.executable), "-m", "compileall", "-q",
         str(REPO_ROOT / "operator" / "memoryguard"), str(GUEST_DIR)],
        check=True,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip


def missing_pieces() -> list[str]:
    """What this machine lacks to run the rig, in words (empty when it can run)."""
    missing = []
    if shutil.which(QEMU_BINARY) is None:
        missing.append(f"{QEMU_BINARY} (Debian package qemu-system-x86)")
    if not any(p.is_file() for p in BUSYBOX_CANDIDATES):
        missing.append("busybox (Debian package busybox-static)")
    if shutil.which("setpriv") is None:
        missing.append("setpriv (Debian package util-linux; the agent runs without capabilities)")
    if shutil.which("cpio") is None:
        missing.append("cpio (Debian package cpio)")
    if shutil.which("mkfs.ext4") is None:
        missing.append("mkfs.ext4 (Debian package e2fsprogs)")
    if shutil.which("node") is None:
        missing.append("node (Node.js, the scenarios' workload runtime)")
    if Kernel.unpacked() is None:
        missing.append("the guest kernel (run tests/kernel/fetch-kernel.sh)")
    if os.geteuid() != 0:
        missing.append("root (the share must pass file ownership through to the guest)")
    return missing


@dataclass(frozen=True)
class GuestRun:
    """What one boot left behind, all in ``run_dir`` on the host."""

    run_dir: Path
    exit_code: int
    wall_seconds: float

    @property
    def console_log(self) -> Path:
        return self.run_dir / "console.log"

    @property
    def guest_log(self) -> Path:
        return self.run_dir / "guest.log"

    def read(self, name: str) -> str:
        return (self.run_dir / name).read_text()


class Rig:
    """Builds the initramfs once, then boots the kernel once per job.

    ``boot(name, script)`` writes ``script`` as ``job.sh`` into a fresh run directory, boots,
    waits for the guest to power off (or kills QEMU after ``timeout_seconds``) and returns
    the run. ``job.sh`` runs as root in the chroot with ``MG_RUN_DIR`` set and that directory
    as its working directory; its output goes to ``guest.log``, the serial console (kernel
    messages, such as OOM kills) to ``console.log``.
    """

    def __init__(
        self,
        kernel: Kernel,
        work_dir: Path = WORK_DIR,
        memory_mib: int = 2048,
        cpus: int = 2,
        disk_mib: int = 1024,
    ) -> None:
        self.kernel = kernel
        self.work_dir = work_dir
        self.memory_mib = memory_mib
        self.cpus = cpus
        self.disk_mib = disk_mib
        self._initramfs: Path | None = None

    def initramfs(self) -> Path:
        if self._initramfs is None:
            self._initramfs = self._build_initramfs()
        return self._initramfs

    def prepare(self) -> None:
        """Everything a boot needs that is built on the host: the initramfs, and bytecode."""
        self.initramfs()
        precompile()

    def _build_initramfs(self) -> Path:
        modules = self.kernel.load_order(GUEST_MODULES)
        init_script = (GUEST_DIR / "init").read_bytes()
        digest = hashlib.sha256(init_script + self.kernel.release.encode())
        for module in modules:
            digest.update(module.name.encode())
        target = self.work_dir / f"initramfs-{digest.hexdigest()[:12]}.cpio"
        if target.is_file():
            return target
        tree = self.work_dir / "initramfs-tree"
        shutil.rmtree(tree, ignore_errors=True)
        for sub in ("bin", "dev", "proc", "sys", "modules", "host"):
            (tree / sub).mkdir(parents=True)
        busybox = next(p for p in BUSYBOX_CANDIDATES if p.is_file())
        shutil.copy2(busybox, tree / "bin" / "busybox")
        (tree / "bin" / "sh").symlink_to("busybox")
        shutil.copy2(GUEST_DIR / "init", tree / "init")
        (tree / "init").chmod(0o755)
        for module in modules:
            shutil.copy2(module, tree / "modules" / module.name.replace("-", "_"))
        (tree / "modules.order").write_text("\n".join(m.name[:-3].replace("-", "_") for m in modules) + "\n")
        names = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
        partial = target.with_suffix(".partial")
        with partial.open("wb") as out:
            subprocess.run(
                ["cpio", "--quiet", "-o", "-H", "newc"],
                cwd=tree,
                input="\n".join(names).encode(),
                stdout=out,
                check=True,
            )
        partial.rename(target)
        shutil.rmtree(tree)
        return target

    def data_disk(self, run_dir: Path) -> Path:
        """A fresh ext4 image for this run: file page cache the way a node's disk gives it."""
        image = run_dir / "data.ext4"
        with image.open("wb") as f:
            f.truncate(self.disk_mib * 1024 * 1024)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "mgdata", str(image)], check=True)
        return image

    def boot(
        self, name: str, script: str, timeout_seconds: float, forwards: dict[int, int] | None = None
    ) -> GuestRun:
        """Boots, runs ``script``, waits for the power-off.

        ``forwards`` ({host port: guest port}) gives the guest a NIC on QEMU's user network
        (10.0.2.15; the host's loopback is 10.0.2.2 from inside) with those TCP ports
        forwarded from the host's 127.0.0.1; without it the guest has loopback only.
        """
        run_dir = self.work_dir / "runs" / name
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        (run_dir / "job.sh").write_text(script)
        disk = self.data_disk(run_dir)
        console = run_dir / "console.log"
        command = [
            QEMU_BINARY,
            "-accel", "tcg,thread=multi",
            "-m", str(self.memory_mib),
            "-smp", str(self.cpus),
            "-nodefaults", "-no-user-config", "-no-reboot",
            "-display", "none",
            "-serial", f"file:{console}",
            "-kernel", str(self.kernel.image),
            "-initrd", str(self.initramfs()),
            "-append", f"console=ttyS0 loglevel=4 panic=-1 mg.job={run_dir}{' mg.net=1' if forwards else ''}",
            "-virtfs", "local,path=/,mount_tag=host0,security_model=passthrough,multidevs=remap",
            "-drive", f"file={disk},if=virtio,format=raw,cache=unsafe",
        ]  # fmt: skip
        if forwards:
            rules = ",".join(f"hostfwd=tcp:127.0.0.1:{h}-:{g}" for h, g in forwards.items())
            command += ["-netdev", f"user,id=n0,{rules}", "-device", "virtio-net-pci,netdev=n0"]
        started = time.monotonic()
        with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as qemu:
            try:
                _, stderr = qemu.communicate(timeout=timeout_seconds)
            except subprocess.TimeoutExpired:
                qemu.kill()
                qemu.communicate()
                raise RigError(
                    f"guest job {name!r} did not finish within {timeout_seconds:.0f} s\n"
                    + console_tail(console)
                ) from None
        wall_seconds = time.monotonic() - started
        disk.unlink(missing_ok=True)
        exit_file = run_dir / "exit_code"
        if qemu.returncode != 0 or not exit_file.is_file():
            raise RigError(
                f"guest job {name!r}: qemu exited {qemu.returncode}, no exit code from the guest\n"
                f"{stderr.decode(errors='replace')}\n{console_tail(console)}"
            )
        return GuestRun(run_dir=run_dir, exit_code=int(exit_file.read_text()), wall_seconds=wall_seconds)


def console_tail(console: Path, lines: int = CONSOLE_TAIL_LINES) -> str:
    if not console.is_file():
        return "(no console log)"
    text = console.read_text(errors="replace").splitlines()
    return f"--- last {lines} lines of {console} ---\n" + "\n".join(text[-lines:])


SCENARIO_DIR = KERNEL_DIR / "scenarios"


@dataclass(frozen=True)
class ScenarioResult:
    """One scenario's directory in a run: trace.csv, result.env, workload.log, scenario.log."""

    name: str
    directory: Path

    @property
    def trace_path(self) -> Path:
        return self.directory / "trace.csv"

    def result(self) -> dict[str, str]:
        pairs = (line.split("=", 1) for line in (self.directory / "result.env").read_text().splitlines())
        return {key: value for key, value in pairs}

    def events(self) -> dict[str, int]:
        """memory.events at the end (``events_*``) and memory.swap.events (``swap_events_*``)."""
        return {k: int(v) for k, v in self.result().items() if k.startswith(("events_", "swap_events_"))}

    def dmesg(self) -> str:
        """The kernel log of the whole batch (the guest is one node for all its scenarios)."""
        path = self.directory.parent / "dmesg.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    def workload_log(self) -> str:
        path = self.directory / "workload.log"
        return path.read_text(errors="replace") if path.is_file() else ""


def scenario_job(names: list[str], swap_mib: int = 0, agent: bool = False) -> str:
    """A job that sets the node up once and runs the named scenarios side by side.

    With ``agent`` the real MemoryGuard agent runs on the node for the whole job, as the chart
    runs it (uid 0, no capabilities; its credentials at the end in ``agent.status``), and every
    recorded scenario also logs the engine's live decisions (``decisions.jsonl``).
    """
    unknown = [n for n in names if not (SCENARIO_DIR / f"{n}.sh").is_file()]
    if unknown:
        raise RigError(f"no such scenario: {', '.join(unknown)}")
    return f"""set -u
export MG_REPO={REPO_ROOT}
export MG_GO_FILE="$MG_RUN_DIR/go"
. "$MG_REPO/tests/kernel/guest/lib.sh"
node_setup {swap_mib}
{"start_agent agent.log; wait_for_agent; export MG_AGENT=1" if agent else ""}
log "node ready"
scenario_pids=""
scenarios=""
for name in {" ".join(names)}; do
  mkdir -p "$name"
  (cd "$name" && . "$MG_REPO/tests/kernel/scenarios/$name.sh") >"$name/scenario.log" 2>&1 &
  scenario_pids="$scenario_pids $!"
  scenarios="$scenarios $name:$!"
done
await_scenarios_ready $scenarios
log "every scenario is watched: go"
touch "$MG_GO_FILE"
# Not a bare `wait`: the agent is a background job of this shell too.
wait $scenario_pids
log "all scenarios done"
# The agent's credentials at the end: the process that served every call of the batch.
if [ -f agent.pid ]; then agent_status agent.status; kill "$(cat agent.pid)"; fi
dmesg >dmesg.log
"""


def run_scenarios(
    rig: Rig, batch: str, names: list[str], timeout_seconds: float, swap_mib: int = 0, agent: bool = False
) -> dict[str, ScenarioResult]:
    """Boots once, runs the scenarios in parallel, returns {name: ScenarioResult}."""
    run = rig.boot(batch, scenario_job(names, swap_mib, agent), timeout_seconds)
    if run.exit_code != 0:
        raise RigError(f"batch {batch!r}: job exited {run.exit_code}\n{run.read('guest.log')}")
    results = {}
    for name in names:
        result = ScenarioResult(name, run.run_dir / name)
        if not (result.directory / "result.env").is_file():
            log = (result.directory / "scenario.log").read_text(errors="replace")
            raise RigError(f"scenario {name!r} left no result\n{log}\n{console_tail(run.console_log)}")
        results[name] = result
    return results
