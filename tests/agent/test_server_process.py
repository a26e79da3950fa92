"""End to end: the real ``memoryguard agent`` process, over HTTP on a real port."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from tests.support.agent_process import AgentNotReady, AgentProcess
from tests.support.cgroup_tree import CgroupTree, MiB, write_proc
from tests.support.review_stub import ReviewStub

from memoryguard.engine.model import Sample

pytestmark = pytest.mark.slow


@pytest.fixture
def node(tmp_path):
    proc = write_proc(tmp_path / "proc")
    tree = CgroupTree(tmp_path / "cgroup", version=2, driver="systemd")
    pod = tree.add_pod(
        qos="burstable", containers=1, max_bytes=256 * MiB, anon_bytes=100 * MiB, file_bytes=20 * MiB
    )
    return tree, proc, pod


def _rows(body, container_id):
    [pod] = body["pods"]
    container = next(c for c in pod["containers"] if c["container_id"] == container_id)
    columns = container["window"]["columns"]
    return [Sample.from_dict(dict(zip(columns, row, strict=True))) for row in container["window"]["rows"]]


def test_agent_process_serves_samples_follows_growth_and_stops_gracefully(node, tmp_path):
    tree, proc, pod = node
    app_id = pod.containers[-1]
    with AgentProcess(root=tree.root, proc_root=proc, log_dir=tmp_path) as agent:
        health = agent.wait_ready()
        status, first = agent.get(f"/v1/pods?uid={pod.uid}")
        assert status == 200
        assert health["containers"] == 2
        assert first["node"] == "node-a" and first["cgroup_version"] == 2
        # The pod's own cgroup sums its containers: the app's 100 MiB plus the sandbox's.
        assert Sample.from_dict(first["pods"][0]["latest"]).anon_bytes > 100 * MiB
        assert _rows(first, app_id)[-1].anon_bytes == 100 * MiB
        last_t = _rows(first, app_id)[-1].t_seconds

        tree.set(pod.uid, app_id, anon_bytes=180 * MiB)
        newer: list[Sample] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(s.anon_bytes == 180 * MiB for s in newer):
            time.sleep(0.2)
            status, later = agent.get(f"/v1/pods?uid={pod.uid}&since_seconds={last_t}")
            newer = _rows(later, app_id)
        assert newer and all(s.t_seconds > last_t for s in newer)
        assert newer[-1].anon_bytes == 180 * MiB

        status, metrics = agent.get("/metrics")
        assert status == 200
        assert "memoryguard_agent_tick_duration_seconds_count" in metrics
        tick_count = next(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("memoryguard_agent_tick_duration_seconds_count")
        )
        assert tick_count >= 2

        assert agent.stop() == 0
        log = agent.log_text()
    assert "AUTHENTICATION DISABLED" in log and "WARNING" in log
    start = next(line for line in log.splitlines() if "memoryguard agent 0." in line)
    for fragment in (
        "node=node-a",
        f"root={tree.root}",
        "cgroup_v2",
        "interval=0.2s",
        "auth=off",
        "drop_caches=disabled",
    ):
        assert fragment in start
    assert "shutting down" in log
    assert "Traceback" not in log


def test_agent_logs_json_lines_when_asked(node, tmp_path):
    tree, proc, _ = node
    with AgentProcess(
        root=tree.root, proc_root=proc, args=["--insecure-no-auth", "--log-format=json"]
    ) as agent:
        agent.wait_ready()
        agent.stop()
        lines = [json.loads(line) for line in agent.log_text().splitlines() if line.strip()]
    assert any(
        entry["level"] == "WARNING" and "AUTHENTICATION DISABLED" in entry["message"] for entry in lines
    )
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in lines)


def test_agent_without_auth_config_outside_a_cluster_refuses_to_start(node, tmp_path):
    tree, proc, _ = node
    env = {"KUBERNETES_SERVICE_HOST": "", "KUBERNETES_SERVICE_PORT": ""}
    with AgentProcess(root=tree.root, proc_root=proc, args=[], env=env) as agent:
        with pytest.raises(AgentNotReady, match="exited with code 2"):
            agent.wait_ready(timeout=30)
        assert "--api-server" in agent.log_text()


async def test_agent_process_authenticates_callers_with_the_api_server(node, tmp_path):
    tree, proc, pod = node
    stub = ReviewStub()
    stub.add_user("operator-token", "system:serviceaccount:memoryguard:operator")
    stub.grant(
        "system:serviceaccount:memoryguard:operator",
        {
            "resourceAttributes": {
                "group": "memoryguard.io",
                "resource": "agents",
                "subresource": "samples",
                "verb": "get",
                "name": "node-a",
            }
        },
    )
    await stub.start()
    token_file = tmp_path / "agent-token"
    token_file.write_text(stub.agent_token)
    args = ["--api-server", stub.url, "--api-token-file", str(token_file)]
    try:
        async with AgentProcess(root=tree.root, proc_root=proc, args=args) as agent:
            await agent.wait_ready_async()
            async with aiohttp.ClientSession() as http:
                anonymous = await http.get(f"{agent.url}/v1/pods")
                allowed = await http.get(
                    f"{agent.url}/v1/pods",
                    params={"uid": pod.uid},
                    headers={"Authorization": "Bearer operator-token"},
                )
                body = await allowed.json()
            exit_code = await agent.stop_async()
            log = agent.log_text()
    finally:
        await stub.close()
    assert anonymous.status == 401, log
    assert allowed.status == 200, (body, log)
    assert exit_code == 0, log
    assert [p["pod_uid"] for p in body["pods"]] == [pod.uid]
    assert all(r.bearer == stub.agent_token for r in stub.requests)


def test_agent_rejects_bad_flags_with_a_message(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "memoryguard.cli", "agent", "--interval", "soon", "--insecure-no-auth"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "not a duration: 'soon'" in result.stderr


def test_agent_help_explains_what_it_does():
    result = subprocess.run(
        [sys.executable, "-m", "memoryguard.cli", "agent", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    for fragment in (
        "TokenReview",
        "/v1/reclaim",
        "--enable-drop-caches",
        "--insecure-no-auth",
        "--retention",
    ):
        assert fragment in result.stdout


def _memory_cgroup_v1() -> Path | None:
    root = Path("/sys/fs/cgroup")
    return root if (root / "memory" / "memory.usage_in_bytes").exists() else None


@pytest.mark.skipif(_memory_cgroup_v1() is None, reason="no cgroup v1 memory controller mounted here")
def test_agent_process_starts_on_this_machines_real_cgroup_v1(tmp_path):
    with AgentProcess(root=Path("/sys/fs/cgroup"), proc_root=Path("/proc"), log_dir=tmp_path) as agent:
        health = agent.wait_ready()
        status, body = agent.get("/v1/pods")
        agent.stop()
    assert status == 200
    assert body["cgroup_version"] == 1
    assert health["status"] == "ok"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--root={empty}"], "no cgroup memory hierarchy"),
        (["--root={root}", "--interval=10s", "--retention=5s"], "retention_seconds"),
    ],
    ids=["no-cgroup", "retention-below-interval"],
)
def test_agent_with_an_unusable_configuration_exits_2_saying_why(node, tmp_path, args, message):
    tree = node[0]
    (tmp_path / "empty").mkdir()
    args = [a.format(empty=tmp_path / "empty", root=tree.root) for a in args]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "memoryguard.cli",
            "agent",
            "--insecure-no-auth",
            "--listen=127.0.0.1:0",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_drop_caches_writes_the_directory_named_by_proc_sys_vm(node, tmp_path):
    # As the chart runs it: meminfo from the container's own /proc (here a fixture), and only
    # the host's /proc/sys/vm mounted, outside /proc.
    tree, proc, _ = node
    sys_vm = tmp_path / "host-proc-sys-vm"
    sys_vm.mkdir()
    (sys_vm / "drop_caches").write_text("0\n")
    args = ["--insecure-no-auth", "--enable-drop-caches", f"--proc-sys-vm={sys_vm}"]
    with AgentProcess(root=tree.root, proc_root=proc, args=args, log_dir=tmp_path) as agent:
        agent.wait_ready()
        status, body = agent.request("POST", "/v1/drop-caches", {"level": 1})
        log = agent.log_text()
    assert status == 200, body
    assert (sys_vm / "drop_caches").read_text() == "1\n"
    assert (proc / "sys" / "vm" / "drop_caches").read_text() == "0\n"  # not the procfs one
    assert body["level"] == 1 and body["before_meminfo"]["MemTotal"] == 16 * 1024 * MiB
    assert f"{sys_vm}/drop_caches" in log  # the start line says where it writes
