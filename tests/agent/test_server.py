"""The agent API over a real fixture cgroup tree, served on a localhost port (auth off here;
tests/agent/test_server_auth.py covers auth)."""

from __future__ import annotations

import json

import pytest
from tests.support.agent_app import START_SECONDS, agent_app
from tests.support.cgroup_tree import CgroupTree, MiB, write_proc

from memoryguard.engine.model import SAMPLE_FIELD_NAMES, Sample

UNKNOWN_UID = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def tree(tmp_path):
    tree = CgroupTree(tmp_path / "cgroup", version=2, driver="systemd")
    write_proc(tmp_path / "proc")
    return tree


@pytest.fixture
def web_pod(tree):
    return tree.add_pod(
        qos="burstable", containers=1, max_bytes=256 * MiB, anon_bytes=100 * MiB, file_bytes=20 * MiB
    )


async def test_healthz_reports_the_last_tick_and_container_count(tree, web_pod):
    async with agent_app(tree.root) as agent:
        agent.tick()
        agent.clock.advance(0.5)
        resp = await agent.client.get("/healthz")
        body = await resp.json()
    assert resp.status == 200
    assert body == {"status": "ok", "last_tick_age_seconds": 0.5, "containers": 2}  # sandbox + app


async def test_healthz_is_503_before_the_first_tick_and_when_sampling_stalls(tree, web_pod):
    async with agent_app(tree.root) as agent:
        before = await agent.client.get("/healthz")
        agent.tick()
        agent.clock.advance(10.5)  # more than 10 intervals of 1 s
        stalled = await agent.client.get("/healthz")
        body = await stalled.json()
    assert before.status == 503
    assert stalled.status == 503
    assert body["status"] == "stale" and body["last_tick_age_seconds"] == 10.5


async def test_pods_returns_the_documented_shape_with_samples_that_rebuild(tree, web_pod):
    app_id = web_pod.containers[-1]
    async with agent_app(tree.root) as agent:
        agent.tick(count=3)
        resp = await agent.client.get("/v1/pods", params={"uid": web_pod.uid})
        body = await resp.json()
    assert resp.status == 200
    assert body["node"] == "node-a"
    assert body["cgroup_version"] == 2
    assert body["interval_seconds"] == 1.0
    assert body["now_seconds"] == START_SECONDS + 3
    assert body["missing"] == []
    [pod] = body["pods"]
    assert pod["pod_uid"] == web_pod.uid and pod["qos"] == "burstable"
    assert pod["cgroup_path"].endswith(f"kubepods-burstable-pod{web_pod.uid.replace('-', '_')}.slice")
    container = next(c for c in pod["containers"] if c["container_id"] == app_id)
    # Without detail=full: the samples only (what the operator polls for every second).
    assert set(container) == {"container_id", "runtime", "cgroup_path", "latest", "window"}
    latest = Sample.from_dict(container["latest"])
    assert latest.anon_bytes == 100 * MiB and latest.file_bytes == 20 * MiB and latest.max_bytes == 256 * MiB
    assert container["latest"] == latest.to_dict()
    assert container["runtime"] == "containerd"
    window = container["window"]
    assert set(window["columns"]) <= SAMPLE_FIELD_NAMES and window["columns"][0] == "t_seconds"
    rows = [Sample.from_dict(dict(zip(window["columns"], row, strict=True))) for row in window["rows"]]
    assert [r.t_seconds for r in rows] == [START_SECONDS + 1, START_SECONDS + 2, START_SECONDS + 3]
    assert all(r.anon_bytes == 100 * MiB for r in rows)


async def test_pods_detail_full_adds_the_cgroup_files(tree, web_pod):
    app_id = web_pod.containers[-1]
    tree.write_file(web_pod.uid, app_id, "memory.low", f"{16 * MiB}\n")
    async with agent_app(tree.root) as agent:
        agent.tick(count=2)
        resp = await agent.client.get("/v1/pods", params={"uid": web_pod.uid, "detail": "full"})
        body = await resp.json()
        tree.set(web_pod.uid, app_id, anon_bytes=120 * MiB)  # the stat is read when asked
        again = await (
            await agent.client.get("/v1/pods", params={"uid": web_pod.uid, "detail": "full"})
        ).json()
    assert resp.status == 200
    container = next(c for c in body["pods"][0]["containers"] if c["container_id"] == app_id)
    assert set(container) == {
        "container_id",
        "runtime",
        "cgroup_path",
        "latest",
        "stat",
        "events",
        "swap_events",
        "pressure",
        "limits",
        "window",
    }
    assert container["stat"]["anon"] == 100 * MiB and container["stat"]["file"] == 20 * MiB
    assert container["events"]["oom_kill"] == 0
    assert set(container["pressure"]) == {"some", "full"}
    assert container["limits"]["max_bytes"] == 256 * MiB and container["limits"]["low_bytes"] == 16 * MiB
    assert len(container["window"]["rows"]) == 2
    renewed = next(c for c in again["pods"][0]["containers"] if c["container_id"] == app_id)
    assert renewed["stat"]["anon"] == 120 * MiB
    assert Sample.from_dict(renewed["latest"]).anon_bytes == 100 * MiB  # the sample waits for a tick


async def test_node_answers_meminfo_psi_and_the_root_cgroup_read_when_asked(tree, tmp_path):
    async with agent_app(tree.root) as agent:
        first = await (await agent.client.get("/v1/node")).json()
        write_proc(tmp_path / "proc", mem_total_bytes=32 * 1024 * MiB, mem_free_bytes=3 * 1024 * MiB)
        (tmp_path / "proc/pressure/memory").write_text(
            "some avg10=12.50 avg60=3.00 avg300=1.00 total=4500000\n"
            "full avg10=2.00 avg60=0.50 avg300=0.10 total=900000\n"
        )
        agent.clock.advance(5)
        resp = await agent.client.get("/v1/node")
        second = await resp.json()
        bad = await agent.client.get("/v1/node", params={"window_seconds": "1"})
        bad_body = await bad.json()
    assert resp.status == 200
    assert first["meminfo"]["MemTotal"] == 16 * 1024 * MiB  # bytes, from kB
    assert second["node"] == "node-a" and second["cgroup_version"] == 2
    assert second["now_seconds"] == START_SECONDS + 5
    assert second["meminfo"]["MemTotal"] == 32 * 1024 * MiB  # read at the request, no tick needed
    assert second["meminfo"]["MemAvailable"] == 7 * 1024 * MiB
    assert second["pressure"]["some"] == {"avg10": 12.5, "avg60": 3.0, "avg300": 1.0, "total": 4500000}
    assert second["pressure"]["full"]["avg10"] == 2.0
    assert "anon" in second["root_stat"]
    assert "root_usage_bytes" not in second  # v1 only
    assert bad.status == 400 and bad_body["field"] == "window_seconds"


async def test_pods_sees_growth_between_ticks(tree, web_pod):
    app_id = web_pod.containers[-1]
    async with agent_app(tree.root) as agent:
        agent.tick()
        tree.set(web_pod.uid, app_id, anon_bytes=150 * MiB)
        agent.tick()
        body = await (await agent.client.get("/v1/pods", params={"uid": web_pod.uid})).json()
    container = next(c for c in body["pods"][0]["containers"] if c["container_id"] == app_id)
    anon = container["window"]["columns"].index("anon_bytes")
    assert [row[anon] for row in container["window"]["rows"]] == [100 * MiB, 150 * MiB]


async def test_pods_without_uid_lists_every_pod_and_unknown_uids_are_missing(tree, web_pod):
    other = tree.add_pod(qos="besteffort", containers=2)
    async with agent_app(tree.root) as agent:
        agent.tick()
        everything = await (await agent.client.get("/v1/pods")).json()
        asked = await (
            await agent.client.get("/v1/pods", params=[("uid", other.uid), ("uid", UNKNOWN_UID)])
        ).json()
    assert sorted(p["pod_uid"] for p in everything["pods"]) == sorted([web_pod.uid, other.uid])
    assert [p["pod_uid"] for p in asked["pods"]] == [other.uid]
    assert asked["missing"] == [UNKNOWN_UID]


async def test_window_and_since_limit_the_rows(tree, web_pod):
    async with agent_app(tree.root) as agent:
        agent.tick(count=10)
        get = agent.client.get

        def rows(body):
            return body["pods"][0]["containers"][0]["window"]["rows"]

        window3 = rows(
            await (await get("/v1/pods", params={"uid": web_pod.uid, "window_seconds": "3"})).json()
        )
        none = rows(await (await get("/v1/pods", params={"uid": web_pod.uid, "window_seconds": "0"})).json())
        since = rows(
            await (
                await get("/v1/pods", params={"uid": web_pod.uid, "since_seconds": str(START_SECONDS + 8)})
            ).json()
        )
    assert [r[0] for r in window3] == [START_SECONDS + 8, START_SECONDS + 9, START_SECONDS + 10]
    assert none == []
    assert [r[0] for r in since] == [START_SECONDS + 9, START_SECONDS + 10]


async def test_window_longer_than_retention_returns_what_the_ring_holds(tree, web_pod):
    async with agent_app(tree.root, retention_seconds=60) as agent:
        agent.tick(count=5)
        resp = await agent.client.get("/v1/pods", params={"uid": web_pod.uid, "window_seconds": "86400"})
        body = await resp.json()
    assert resp.status == 200
    assert len(body["pods"][0]["containers"][0]["window"]["rows"]) == 5


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"uid": "../../etc"}, "uid"),
        ({"uid": "94EB36CD-29E1-478B-B365-4CB5DFC7D6FB"}, "uid"),  # not canonical: upper case
        ({"uid": "94eb36cd_29e1_478b_b365_4cb5dfc7d6fb"}, "uid"),  # systemd form
        ({"window_seconds": "ten"}, "window_seconds"),
        ({"window_seconds": "-1"}, "window_seconds"),
        ({"window_seconds": "nan"}, "window_seconds"),
        ({"since_seconds": "inf"}, "since_seconds"),
        ({"limit": "5"}, "limit"),
        ({"detail": "everything"}, "detail"),
    ],
    ids=lambda v: str(v),
)
async def test_pods_rejects_bad_query_naming_the_field(tree, web_pod, params, field):
    async with agent_app(tree.root) as agent:
        agent.tick()
        resp = await agent.client.get("/v1/pods", params=params)
        body = await resp.json()
    assert resp.status == 400
    assert body["field"] == field
    assert body["error"]


def _reclaim_body(pod_uid, container_id=None, nbytes=64 * MiB):
    return {"pod_uid": pod_uid, "container_id": container_id, "bytes": nbytes}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"pod_uid": "not-a-uid", "container_id": None, "bytes": 1}, "pod_uid"),
        ({"container_id": None, "bytes": 1}, "pod_uid"),
        ({"pod_uid": UNKNOWN_UID, "container_id": "containerd://" + "a" * 64, "bytes": 1}, "container_id"),
        ({"pod_uid": UNKNOWN_UID, "container_id": "A" * 64, "bytes": 1}, "container_id"),
        ({"pod_uid": UNKNOWN_UID, "container_id": "../" + "a" * 61, "bytes": 1}, "container_id"),
        ({"pod_uid": UNKNOWN_UID, "container_id": None, "bytes": 0}, "bytes"),
        ({"pod_uid": UNKNOWN_UID, "container_id": None, "bytes": -5}, "bytes"),
        ({"pod_uid": UNKNOWN_UID, "container_id": None, "bytes": "64Mi"}, "bytes"),
        ({"pod_uid": UNKNOWN_UID, "container_id": None, "bytes": True}, "bytes"),
        ({"pod_uid": UNKNOWN_UID, "container_id": None, "bytes": 1.5}, "bytes"),
        ({"pod_uid": UNKNOWN_UID, "container_id": None, "bytes": 1, "path": "/sys"}, "path"),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else v,
)
async def test_reclaim_rejects_bad_bodies_naming_the_field(tree, web_pod, body, field):
    async with agent_app(tree.root) as agent:
        agent.tick()
        resp = await agent.client.post("/v1/reclaim", json=body)
        answer = await resp.json()
    assert resp.status == 400
    assert answer["field"] == field


@pytest.mark.parametrize(
    "raw", [b"{not json", b"[1, 2]", b"\xff\xfe", b""], ids=["syntax", "array", "binary", "empty"]
)
async def test_malformed_json_body_is_400_naming_the_body(tree, raw):
    async with agent_app(tree.root) as agent:
        resp = await agent.client.post("/v1/reclaim", data=raw, headers={"Content-Type": "application/json"})
        answer = await resp.json()
    assert resp.status == 400
    assert answer["field"] == "body"


async def test_oversized_body_is_413_even_without_content_length(tree, web_pod):
    big = json.dumps(_reclaim_body(web_pod.uid) | {"padding": "x" * 20000}).encode()

    async def chunks():
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]

    async with agent_app(tree.root) as agent:
        agent.tick()
        declared = await agent.client.post(
            "/v1/reclaim", data=big, headers={"Content-Type": "application/json"}
        )
        streamed = await agent.client.post(
            "/v1/reclaim", data=chunks(), headers={"Content-Type": "application/json"}
        )
        declared_body = await declared.json()
        streamed_body = await streamed.json()
    assert declared.status == 413 and declared_body["field"] == "body"
    assert streamed.status == 413 and streamed_body["field"] == "body"


async def test_reclaim_of_a_pod_not_on_this_node_is_404(tree, web_pod):
    async with agent_app(tree.root) as agent:
        agent.tick()
        pod = await agent.client.post("/v1/reclaim", json=_reclaim_body(UNKNOWN_UID))
        container = await agent.client.post("/v1/reclaim", json=_reclaim_body(web_pod.uid, "f" * 64))
        pod_body, container_body = await pod.json(), await container.json()
    assert pod.status == 404 and pod_body["field"] == "pod_uid"
    assert container.status == 404 and container_body["field"] == "container_id"


@pytest.mark.parametrize("level", [0, 4, "1", None, True, 1.0], ids=repr)
async def test_drop_caches_rejects_bad_levels(tree, tmp_path, level):
    async with agent_app(tree.root, proc_root=tmp_path / "proc", enable_drop_caches=True) as agent:
        resp = await agent.client.post("/v1/drop-caches", json={"level": level})
        body = await resp.json()
    assert resp.status == 400 and body["field"] == "level"
    assert (tmp_path / "proc/sys/vm/drop_caches").read_text() == "0\n"


async def test_drop_caches_is_refused_unless_enabled(tree, tmp_path):
    async with agent_app(tree.root, proc_root=tmp_path / "proc") as agent:
        resp = await agent.client.post("/v1/drop-caches", json={"level": 1})
        body = await resp.json()
    assert resp.status == 403
    assert "--enable-drop-caches" in body["error"]
    assert (tmp_path / "proc/sys/vm/drop_caches").read_text() == "0\n"


async def test_unknown_path_and_wrong_method_answer_json(tree):
    async with agent_app(tree.root) as agent:
        missing = await agent.client.get("/v1/nodes")
        wrong = await agent.client.get("/v1/reclaim")
        missing_body, wrong_body = await missing.json(), await wrong.json()
    assert missing.status == 404 and "error" in missing_body
    assert wrong.status == 405 and "error" in wrong_body
    assert wrong.headers["Allow"] == "POST"


async def test_many_pods_are_all_answered_across_batches(tree):
    pods = [tree.add_pod(qos="besteffort", containers=1) for _ in range(40)]
    uids = [p.uid for p in pods]
    async with agent_app(tree.root) as agent:
        agent.tick(count=2)
        everything = await (await agent.client.get("/v1/pods")).json()
        asked = await (
            await agent.client.get("/v1/pods", params=[("uid", u) for u in [*uids[::-1], UNKNOWN_UID]])
        ).json()
    assert [p["pod_uid"] for p in everything["pods"]] == sorted(uids)
    assert everything["missing"] == []
    assert [p["pod_uid"] for p in asked["pods"]] == uids[::-1]
    assert asked["missing"] == [UNKNOWN_UID]
    assert all(len(c["window"]["rows"]) == 2 for p in asked["pods"] for c in p["containers"])
