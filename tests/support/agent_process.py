"""Run the real ``memoryguard agent`` process for a test, on a free localhost port.

    with AgentProcess(root=tree.root, proc_root=proc, args=["--insecure-no-auth"]) as agent:
        agent.wait_ready()                      # or: await agent.wait_ready_async()
        urllib.request.urlopen(agent.url + "/v1/pods")

The agent is started with this interpreter (``python -m memoryguard.cli agent``), so it runs
the code of this checkout. Its log goes to a file (``agent.log_text()``) rather than a pipe, so
a chatty agent can never block on a full pipe. ``stop()`` sends SIGTERM and waits, as the
kubelet does; a test can assert on the exit code and the log of a graceful shutdown.

In async tests (KMock runs on the test's event loop) use ``await wait_ready_async()`` and
``await stop_async()``: the blocking variants would freeze the loop the API mock runs on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any


def free_port() -> int:
    """A port nobody listens on right now (the agent binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class AgentNotReady(RuntimeError):
    pass


class AgentProcess:
    def __init__(
        self,
        *,
        root: Path,
        proc_root: Path | None = None,
        args: Sequence[str] = ("--insecure-no-auth",),
        node_name: str = "node-a",
        interval: str = "200ms",
        port: int | None = None,
        env: dict[str, str] | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [
            sys.executable,
            "-m",
            "memoryguard.cli",
            "agent",
            f"--root={root}",
            f"--listen=127.0.0.1:{self.port}",
            f"--interval={interval}",
            f"--node-name={node_name}",
            *([f"--proc-root={proc_root}"] if proc_root is not None else []),
            *args,
        ]
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self._log_dir = log_dir
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.log_path: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> AgentProcess:
        if self._log_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="memoryguard-agent-")
            self._log_dir = Path(self._tmp.name)
        self.log_path = self._log_dir / f"agent-{self.port}.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env
            )
        return self

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait for a graceful exit (SIGKILL after ``timeout``); the exit code."""
        process = self._require_process()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return int(process.returncode)

    async def stop_async(self, timeout: float = 10.0) -> int:
        return await asyncio.to_thread(self.stop, timeout)

    def __enter__(self) -> AgentProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> AgentProcess:
        return self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        if self.process is not None:
            self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # --- readiness and access -----------------------------------------------------------------

    def wait_ready(self, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until ``/healthz`` answers 200 (a first tick happened); its body."""
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                status, body = self.get("/healthz", timeout=2.0)
                if status == 200:
                    return body
                last_error = f"/healthz answered {status}: {body}"
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                last_error = str(exc)
            time.sleep(0.05)
        raise AgentNotReady(f"agent not ready after {timeout}s ({last_error}); log:\n{self.log_text()}")

    async def wait_ready_async(self, timeout: float = 30.0) -> dict[str, Any]:
        return await asyncio.to_thread(self.wait_ready, timeout)

    def get(self, path: str, *, token: str | None = None, timeout: float = 10.0) -> tuple[int, Any]:
        """GET ``path``: (status, JSON body or text). Error statuses are returned, not raised."""
        return self.request("GET", path, token=token, timeout=timeout)

    def request(
        self, method: str, path: str, body: Any = None, *, token: str | None = None, timeout: float = 10.0
    ) -> tuple[int, Any]:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, _decode(resp.read(), resp.headers.get_content_type())
        except urllib.error.HTTPError as exc:
            with contextlib.closing(exc):
                return exc.code, _decode(exc.read(), exc.headers.get_content_type())

    def log_text(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def _require_process(self) -> subprocess.Popen[bytes]:
        if self.process is None:
            raise RuntimeError("the agent process was not started")
        return self.process

    def _check_alive(self) -> None:
        code = self._require_process().poll()
        if code is not None:
            raise AgentNotReady(f"agent exited with code {code}; log:\n{self.log_text()}")


def _decode(raw: bytes, content_type: str) -> Any:
    if content_type == "application/json":
        return json.loads(raw)
    return raw.decode(errors="replace")
