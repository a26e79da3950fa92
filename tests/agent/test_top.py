"""`memoryguard top`: local pods, plain cgroups (this machine's v1), and a real agent over HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.agent_process import AgentProcess, free_port
from tests.support.cgroup_tree import CgroupTree, GiB, MiB, write_proc

from memoryguard import cli
from memoryguard.commands import top
from memoryguard.commands.sources import PathSource, PodSource, growth_bytes_per_second, human_bytes
from memoryguard.engine.model import Sample


def table_rows(out: str) -> list[list[str]]:
    lines = out.strip().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(("POD-UID", "CGROUP")))
    return [line.split() for line in lines[start + 1 :]]


def test_pods_on_a_fixture_node_sorted_by_share_of_limit(tmp_path, capsys):
    tree = CgroupTree(tmp_path / "cg")
    calm = tree.add_pod(qos="burstable", max_bytes=GiB, anon_bytes=100 * MiB, file_bytes=50 * MiB)
    tight = tree.add_pod(qos="guaranteed", max_bytes=256 * MiB, anon_bytes=200 * MiB, file_bytes=20 * MiB)
    tree.set(tight.uid, tight.containers[-1], oom_kill=2, max_events=9)

    proc = write_proc(tmp_path / "proc", mem_total_bytes=16 * GiB, mem_free_bytes=6 * GiB)
    (proc / "pressure" / "memory").write_text(
        "some avg10=1.25 avg60=0.00 avg300=0.00 total=10\nfull avg10=0.50 avg60=0.00 avg300=0.00 total=5\n"
    )
    argv = ["top", "--root", str(tree.root), "--proc-root", str(proc), "--once", "--interval", "0"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    rows = table_rows(out)
    # The node line: MemTotal, MemAvailable (free + 4 GiB in the fixture) and MemFree, then PSI.
    assert out.splitlines()[1] == (
        "node memory 16.00Gi total, 10.00Gi available (62%), 6.00Gi free; PSI avg10 some 1.25% full 0.50%"
    )

    first = rows[0]
    assert first[0] == tight.uid and first[1] == tight.containers[-1][:13] and first[2] == "guaranteed"
    assert first[3:8] == ["200Mi", "20.0Mi", "210Mi", "256Mi", "82%"]
    assert "oom_kill=2" in first and "max=9" in first
    assert rows[1][0] == calm.uid and rows[1][3] == "100Mi"
    assert len(rows) == 4  # two app containers and two sandboxes (no limit: sorted last)


def test_growth_column_reports_anon_growth_between_refreshes(tmp_path):
    tree = CgroupTree(tmp_path / "cg")
    pod = tree.add_pod(max_bytes=GiB, anon_bytes=100 * MiB)
    cid = pod.containers[-1]
    source = PodSource(tree.root, history_seconds=30)
    source.read()
    time.sleep(0.2)
    tree.set(pod.uid, cid, anon_bytes=110 * MiB)
    readings = {r.key: r for r in source.read()}
    reading = readings[f"{pod.uid}/{cid}"]
    growth = growth_bytes_per_second(reading.history)
    assert growth is not None and growth > 10 * MiB  # 10 MiB in about 0.2 s
    assert f"{growth / MIB_F:+.2f}" in top.render(list(readings.values()))


MIB_F = float(MiB)


def test_named_cgroups_and_all_cgroups_without_kubernetes(tmp_path, capsys):
    tree = CgroupTree(tmp_path / "cg", version=1)
    (tree.memory_root / "system.slice").mkdir(exist_ok=True)
    pod = tree.add_pod(max_bytes=512 * MiB, anon_bytes=64 * MiB)
    rel = str(tree.path(pod.uid, pod.containers[-1]).relative_to(tree.memory_root))

    assert cli.main(["top", "--root", str(tree.root), "--cgroup", rel, "--once", "--interval", "0"]) == 0
    [row] = table_rows(capsys.readouterr().out)
    assert row[0] == rel and row[1] == "64.0Mi" and row[4] == "512Mi"

    source = PathSource(tree.root, every=True, history_seconds=10)
    names = {r.labels["CGROUP"] for r in source.read()}
    assert rel in names and "kubepods.slice" in names


def test_falls_back_to_every_cgroup_when_there_are_no_pods(tmp_path, capsys):
    tree = CgroupTree(tmp_path / "cg", version=1)
    (tree.memory_root / "user.slice").mkdir()
    tree._write_values(tree.memory_root / "user.slice", tree.root_values)
    assert cli.main(["top", "--root", str(tree.root), "--once", "--interval", "0"]) == 0
    out = capsys.readouterr().out
    assert "no Kubernetes pods" in out
    assert "user.slice" in {row[0] for row in table_rows(out)}


def test_this_machines_cgroups(capsys):
    if (
        not Path("/sys/fs/cgroup/memory/memory.usage_in_bytes").exists()
        and not Path("/sys/fs/cgroup/cgroup.controllers").exists()
    ):
        pytest.skip("no cgroup hierarchy mounted at /sys/fs/cgroup")
    assert cli.main(["top", "--once", "--interval", "0", "--limit", "5"]) == 0
    out = capsys.readouterr().out
    assert "ANON" in out and len(table_rows(out)) >= 1


def test_human_bytes():
    assert [human_bytes(v) for v in (None, 812 * 1024, 95.3 * MiB, 300 * MiB, 1.25 * GiB)] == [
        "-",
        "812Ki",
        "95.3Mi",
        "300Mi",
        "1.25Gi",
    ]


def test_growth_is_a_least_squares_slope():
    samples = [
        Sample(t_seconds=t, anon_bytes=1000 + 50 * t + (7 if t % 2 else -7), file_bytes=0, max_bytes=None)
        for t in range(10)
    ]
    assert growth_bytes_per_second(samples) == pytest.approx(50, rel=0.05)
    assert growth_bytes_per_second(samples[:1]) is None


# --- through a real agent process ---------------------------------------------------------


@pytest.fixture
def agent(tmp_path) -> Iterator[tuple[str, CgroupTree]]:
    tree = CgroupTree(tmp_path / "cg")
    with AgentProcess(root=tree.root, proc_root=write_proc(tmp_path / "proc")) as process:
        process.wait_ready()
        yield process.url, tree


def test_top_through_a_real_agent(agent, capsys):
    url, tree = agent
    pod = tree.add_pod(max_bytes=GiB, anon_bytes=300 * MiB, file_bytes=10 * MiB)
    cid = pod.containers[-1]
    deadline = time.monotonic() + 10
    while True:  # the agent discovers new pods every few ticks
        assert cli.main(["top", "--agent", url, "--once", "--interval", "0"]) == 0
        rows = table_rows(capsys.readouterr().out)
        if any(row[1] == cid[:13] for row in rows) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    [row] = [row for row in rows if row[1] == cid[:13]]
    assert row[0] == pod.uid
    assert row[3:7] == ["300Mi", "10.0Mi", "306Mi", "1.00Gi"]  # usage 310.5 − inactive file 5


def test_the_node_line_through_a_real_agent_comes_from_its_v1_node(agent, tmp_path, capsys):
    url, _ = agent
    write_proc(tmp_path / "proc", mem_total_bytes=8 * GiB, mem_free_bytes=GiB)  # the agent's --proc-root
    assert cli.main(["top", "--agent", url, "--once", "--interval", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert (
        lines[1]
        == "node memory 8.00Gi total, 5.00Gi available (62%), 1.00Gi free; PSI avg10 some 0.00% full 0.00%"
    )


def test_the_node_line_says_what_it_does_not_know():
    assert top.node_line({}) == "node memory unknown (/proc/meminfo unreadable); no PSI on this node"
    line = top.node_line({"meminfo": {"MemTotal": 4 * GiB, "MemFree": GiB}})
    assert line == "node memory 4.00Gi total, 1.00Gi free; no PSI on this node"


def test_a_local_node_without_psi_has_no_psi_in_its_node_line(tmp_path):
    tree = CgroupTree(tmp_path / "cg")
    tree.add_pod()
    proc = write_proc(tmp_path / "proc")
    (proc / "pressure" / "memory").unlink()
    source = PodSource(tree.root, history_seconds=30, proc_root=proc)
    text = top.render(source.read(), node=source.node())
    assert text.splitlines()[0].startswith("node memory 16.00Gi total") and "no PSI" in text.splitlines()[0]


def test_an_unreachable_agent_is_a_plain_error(capsys):
    port = free_port()
    assert cli.main(["top", "--agent", f"http://127.0.0.1:{port}", "--once", "--interval", "0"]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_an_agent_without_v1_node_gets_no_node_line(capsys):
    # An agent older than /v1/node (404 there) still shows its table.
    import http.server
    import json
    import threading

    class OldAgent(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = self.path.startswith("/v1/pods")
            body = json.dumps(
                {"cgroup_version": 2, "pods": [], "missing": []} if found else {"error": "not found"}
            ).encode()
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), OldAgent)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert cli.main(["top", "--agent", url, "--once", "--interval", "0"]) == 0
    finally:
        server.shutdown()
        server.server_close()
    lines = capsys.readouterr().out.splitlines()
    assert not any(line.startswith("node memory") for line in lines)
    assert "(no cgroups)" in lines
