"""GET /metrics of the real server over real fixture trees: promtool-clean, right types, right values."""

from __future__ import annotations

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families
from tests.support.agent_app import agent_app
from tests.support.cgroup_tree import CgroupTree, MiB, add_eventful_node, write_proc
from tests.support.promtool import promtool_check

from memoryguard.agent.metrics import AgentMetrics, ContainerNames


def families(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


def series(text: str, name: str) -> list[dict[str, str]]:
    return [s.labels for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


@pytest.fixture
def node(tmp_path):
    """A v2 node with pods of every QoS class and some kernel events and pressure."""
    write_proc(tmp_path / "proc")
    tree = CgroupTree(tmp_path / "cgroup", version=2, driver="systemd")
    leaky, _, unlimited = add_eventful_node(tree)
    return tree, leaky, unlimited


async def test_metrics_pass_promtool_check(node):
    tree, _, _ = node
    async with agent_app(tree.root) as agent:
        agent.tick()
        await agent.client.get("/v1/pods")  # some request and auth counters with values
        resp = await agent.client.get("/metrics")
        text = await resp.text()
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    result = promtool_check(text)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr
    )


async def test_promtool_check_would_catch_a_badly_named_metric():
    # The check above is only worth something if promtool really lints what it is given.
    bad = (
        "# HELP memoryguard_reclaimed Freed.\n# TYPE memoryguard_reclaimed counter\nmemoryguard_reclaimed 1\n"
    )
    assert promtool_check(bad).returncode != 0


async def test_metrics_on_cgroup_v1_pass_promtool_and_expose_only_real_counters(tmp_path):
    tree = CgroupTree(tmp_path / "cgroup", version=1, driver="cgroupfs")
    pod = tree.add_pod(qos="burstable", containers=1, max_bytes=128 * MiB, max_events=9, oom_kill=1)
    app_id = pod.containers[-1]
    async with agent_app(tree.root) as agent:
        agent.tick()
        text = await (await agent.client.get("/metrics")).text()
    result = promtool_check(text)
    assert result.returncode == 0, result.stdout + result.stderr
    events = {
        labels["event"]: value(text, "memoryguard_container_memory_events_total", **labels)
        for labels in series(text, "memoryguard_container_memory_events_total")
        if labels["container_id"] == app_id
    }
    # oom_control's flags (oom_kill_disable, under_oom) are not counters; failcnt is v2's "max".
    assert events == {"oom_kill": 1.0, "max": 9.0}
    assert value(text, "memoryguard_agent_info", cgroup_version="1") == 1.0


async def test_container_gauges_carry_the_cgroup_values(node):
    tree, leaky, unlimited = node
    app_id = leaky.containers[-1]
    async with agent_app(tree.root) as agent:
        agent.tick()
        text = await (await agent.client.get("/metrics")).text()
    labels = {"pod_uid": leaky.uid, "container_id": app_id, "qos": "burstable"}
    v = tree.values(leaky.uid, app_id)
    inactive, active = v.file_lists()
    assert value(text, "memoryguard_container_memory_anon_bytes", **labels) == 200 * MiB
    assert value(text, "memoryguard_container_memory_file_bytes", **labels) == 30 * MiB
    assert value(text, "memoryguard_container_memory_inactive_file_bytes", **labels) == inactive
    assert value(text, "memoryguard_container_memory_active_file_bytes", **labels) == active
    assert value(text, "memoryguard_container_memory_usage_bytes", **labels) == v.current()
    assert value(text, "memoryguard_container_memory_working_set_bytes", **labels) == v.current() - inactive
    assert value(text, "memoryguard_container_memory_limit_bytes", **labels) == 256 * MiB
    assert value(text, "memoryguard_container_memory_swap_bytes", **labels) == 0
    # memory.high and swap max are "max" here: no series rather than a made-up number.
    assert value(text, "memoryguard_container_memory_high_bytes", **labels) is None
    assert value(text, "memoryguard_container_memory_swap_limit_bytes", **labels) is None
    unlimited_app = {"pod_uid": unlimited.uid, "container_id": unlimited.containers[-1]}
    assert value(text, "memoryguard_container_memory_limit_bytes", **unlimited_app) is None
    assert value(text, "memoryguard_container_memory_anon_bytes", **unlimited_app) == 8 * MiB
    assert value(text, "memoryguard_agent_containers") == len(tree.containers)


async def test_node_memory_and_pressure_are_read_at_scrape_time(node, tmp_path):
    tree, _, _ = node
    async with agent_app(tree.root) as agent:
        agent.tick()
        before = await (await agent.client.get("/metrics")).text()
        write_proc(tmp_path / "proc", mem_total_bytes=8 * 1024 * MiB, mem_free_bytes=1024 * MiB)
        (tmp_path / "proc/pressure/memory").write_text(
            "some avg10=25.00 avg60=3.00 avg300=1.00 total=7250000\n"
            "full avg10=5.50 avg60=0.50 avg300=0.10 total=500000\n"
        )
        after = await (await agent.client.get("/metrics")).text()  # no tick in between
    assert value(before, "memoryguard_node_memory_total_bytes") == 16 * 1024 * MiB
    assert value(after, "memoryguard_node_memory_total_bytes") == 8 * 1024 * MiB
    assert value(after, "memoryguard_node_memory_free_bytes") == 1024 * MiB
    assert value(after, "memoryguard_node_memory_available_bytes") == 5 * 1024 * MiB
    assert value(after, "memoryguard_node_memory_cached_bytes") == 4 * 1024 * MiB
    assert value(after, "memoryguard_node_memory_swap_total_bytes") == 0
    assert value(after, "memoryguard_node_memory_pressure_avg10_ratio", kind="some") == 0.25
    assert value(after, "memoryguard_node_memory_pressure_avg10_ratio", kind="full") == 0.055
    assert value(after, "memoryguard_node_memory_pressure_stalled_seconds_total", kind="some") == 7.25
    assert value(after, "memoryguard_node_memory_pressure_stalled_seconds_total", kind="full") == 0.5
    fams = families(after)
    assert fams["memoryguard_node_memory_pressure_stalled_seconds"].type == "counter"
    assert fams["memoryguard_node_memory_total_bytes"].type == "gauge"
    result = promtool_check(after)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout


async def test_a_node_without_psi_has_no_node_pressure_series_and_counts_it_once(node, tmp_path):
    tree, _, _ = node
    (tmp_path / "proc/pressure/memory").unlink()  # a kernel built or booted without PSI
    async with agent_app(tree.root) as agent:
        agent.tick()
        texts = [await (await agent.client.get("/metrics")).text() for _ in range(3)]
    assert series(texts[-1], "memoryguard_node_memory_pressure_avg10_ratio") == []
    assert value(texts[-1], "memoryguard_node_memory_total_bytes") == 16 * 1024 * MiB
    assert [value(t, "memoryguard_agent_tick_errors_total", kind="missing_file") for t in texts] == [1, 1, 1]


async def test_kernel_counters_are_counters_and_pressure_is_converted(node):
    tree, leaky, _ = node
    app_id = leaky.containers[-1]
    async with agent_app(tree.root) as agent:
        agent.tick()
        text = await (await agent.client.get("/metrics")).text()
    fams = families(text)
    for name in (
        "memoryguard_container_memory_events",
        "memoryguard_container_memory_swap_events",
        "memoryguard_container_memory_major_page_faults",
        "memoryguard_container_memory_pressure_stalled_seconds",
        "memoryguard_agent_tick_errors",
    ):
        assert fams[name].type == "counter", name
    assert fams["memoryguard_container_memory_anon_bytes"].type == "gauge"
    c = {"pod_uid": leaky.uid, "container_id": app_id}
    assert value(text, "memoryguard_container_memory_events_total", event="oom_kill", **c) == 2
    assert value(text, "memoryguard_container_memory_events_total", event="high", **c) == 7
    assert value(text, "memoryguard_container_memory_events_total", event="oom_group_kill", **c) == 0
    assert value(text, "memoryguard_container_memory_swap_events_total", event="fail", **c) == 1
    assert value(text, "memoryguard_container_memory_major_page_faults_total", **c) == 1234
    assert value(text, "memoryguard_container_memory_pressure_stalled_seconds_total", kind="some", **c) == 3.5
    assert value(text, "memoryguard_container_memory_pressure_stalled_seconds_total", kind="full", **c) == 1.0
    assert value(text, "memoryguard_container_memory_pressure_avg10_ratio", kind="some", **c) == 0.125


async def test_series_of_a_container_that_went_away_disappear(node):
    tree, leaky, _ = node
    app_id = leaky.containers[-1]
    async with agent_app(tree.root) as agent:
        agent.tick()
        before = await (await agent.client.get("/metrics")).text()
        tree.remove_container(leaky.uid, app_id)
        agent.tick()
        after = await (await agent.client.get("/metrics")).text()
    assert value(before, "memoryguard_container_memory_anon_bytes", container_id=app_id) is not None
    assert value(after, "memoryguard_container_memory_anon_bytes", container_id=app_id) is None
    assert value(after, "memoryguard_agent_containers") == len(tree.containers)


async def test_unreadable_files_are_counted_by_kind(node):
    tree, leaky, _ = node
    app_id = leaky.containers[-1]
    tree.write_file(leaky.uid, app_id, "memory.current", b"not a number\n")
    tree.remove_file(leaky.uid, app_id, "memory.swap.current")
    async with agent_app(tree.root) as agent:
        agent.tick()
        text = await (await agent.client.get("/metrics")).text()
    assert value(text, "memoryguard_agent_tick_errors_total", kind="malformed") >= 1
    assert value(text, "memoryguard_agent_tick_errors_total", kind="missing_file") >= 1
    # The rest of the container is still reported.
    assert value(text, "memoryguard_container_memory_anon_bytes", container_id=app_id) == 200 * MiB


async def test_requests_and_actions_are_counted(node, tmp_path):
    tree, leaky, _ = node
    async with agent_app(tree.root, proc_root=tmp_path / "proc") as agent:
        agent.tick()
        await agent.client.get("/v1/pods")
        await agent.client.get("/v1/pods", params={"uid": "bad"})
        await agent.client.post(
            "/v1/reclaim", json={"pod_uid": leaky.uid, "container_id": None, "bytes": 8 * MiB}
        )
        await agent.client.post("/v1/drop-caches", json={"level": 1})
        text = await (await agent.client.get("/metrics")).text()
    assert value(text, "memoryguard_agent_http_requests_total", route="/v1/pods", code="200") == 1
    assert value(text, "memoryguard_agent_http_requests_total", route="/v1/pods", code="400") == 1
    assert value(text, "memoryguard_agent_reclaim_requests_total", outcome="complete") == 1
    assert value(text, "memoryguard_agent_reclaim_requested_bytes_total") == 8 * MiB
    assert value(text, "memoryguard_agent_reclaim_freed_bytes_total") == 0
    assert value(text, "memoryguard_agent_drop_caches_requests_total", level="1", outcome="disabled") == 1


async def test_openmetrics_is_served_to_scrapers_that_ask_for_it(node):
    tree, _, _ = node
    async with agent_app(tree.root) as agent:
        agent.tick()
        resp = await agent.client.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        text = await resp.text()
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    assert text.endswith("# EOF\n") and text.count("# EOF") == 1
    parsed = {f.name: f for f in openmetrics_families(text)}  # raises on anything not OpenMetrics
    assert parsed["memoryguard_container_memory_events"].type == "counter"
    assert parsed["memoryguard_agent_tick_errors"].type == "counter"


@pytest.mark.parametrize("accept", [None, "application/openmetrics-text; version=1.0.0"])
def test_family_by_family_is_the_encoders_whole_text(node, accept):
    # The server writes one family at a time: the same bytes prometheus-client gives for all.
    tree, _, _ = node
    from prometheus_client.exposition import choose_encoder

    from memoryguard.agent.sampler import Sampler

    sampler = Sampler(tree.root, proc_root=tree.root.parent / "proc")  # not the live /proc: it changes
    sampler.tick()
    metrics = AgentMetrics(sampler)
    metrics.observe_tick(0.01)
    chunks, content_type = metrics.render_chunks(accept)
    pieces = list(chunks)
    encoder, whole_type = choose_encoder(accept or "")
    assert content_type == whole_type
    assert b"".join(pieces) == encoder(metrics.registry)
    assert len(pieces) > 20  # one per family, not the whole text at once
    assert b"memoryguard_node_memory_total_bytes 1.7179869184e+10" in b"".join(pieces)  # the fixture's


def test_names_are_labels_only_when_a_lookup_provides_them(node):
    tree, leaky, _ = node
    from memoryguard.agent.sampler import Sampler

    sampler = Sampler(tree.root, proc_root=tree.root.parent / "proc")  # not the live /proc: it changes
    sampler.tick()
    app_id = leaky.containers[-1]

    def lookup(pod_uid, container_id):
        return ContainerNames("shop", "web-1", "app") if container_id == app_id else None

    from prometheus_client import generate_latest

    plain = generate_latest(AgentMetrics(sampler).registry).decode()
    named = generate_latest(AgentMetrics(sampler, names=lookup).registry).decode()
    assert all("namespace" not in s for s in series(plain, "memoryguard_container_memory_anon_bytes"))
    assert value(
        named, "memoryguard_container_memory_anon_bytes", namespace="shop", pod="web-1", container="app"
    ) == (200 * MiB)
    # Unknown names stay empty (the same as absent to Prometheus), never guessed.
    sandbox = leaky.containers[0]
    assert value(named, "memoryguard_container_memory_anon_bytes", container_id=sandbox, pod="") is not None
    assert promtool_check(named).returncode == 0
