"""Discovery of pod and container cgroups on fixture trees shaped like real nodes."""

from __future__ import annotations

import contextlib
import os
import shutil

import pytest
from tests.support.cgroup_tree import QOS_CLASSES, CgroupTree

from memoryguard.agent import discovery
from memoryguard.agent.discovery import discover

RUNTIMES = ("containerd", "crio", "docker")


def expected_runtime(driver: str, runtime: str) -> str:
    # With the cgroupfs driver containerd and Docker name the directory by the bare ID.
    if driver == "cgroupfs" and runtime != "crio":
        return discovery.UNKNOWN_RUNTIME
    return runtime


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("driver", ["systemd", "cgroupfs"])
@pytest.mark.parametrize("version", [2, 1])
def test_finds_every_pod_and_container_with_exact_ids(tmp_path, version, driver, runtime):
    tree = CgroupTree(tmp_path / "cg", version=version, driver=driver, seed=7)
    pods = {qos: tree.add_pod(qos=qos, runtime=runtime, containers=2) for qos in QOS_CLASSES}

    found = discover(tree.memory_root)

    assert {uid: p.qos for uid, p in found.pods.items()} == {p.uid: qos for qos, p in pods.items()}
    assert set(found.containers) == set(tree.containers)
    for (uid, cid), container in found.containers.items():
        assert container.pod_uid == uid and container.container_id == cid
        assert container.runtime == expected_runtime(driver, runtime)
        assert container.qos == tree.pods[uid].qos
        assert container.path == str(tree.path(uid, cid))
        assert container.cgroup_path == str(tree.path(uid, cid).relative_to(tree.memory_root))
    for uid, pod in found.pods.items():
        assert pod.path == str(tree.path(uid))
        assert pod.cgroup_path == str(tree.path(uid).relative_to(tree.memory_root))
    assert found.errors == {}


def test_systemd_pod_uid_comes_back_dashed(tmp_path):
    tree = CgroupTree(tmp_path / "cg")
    pod = tree.add_pod(qos="burstable", uid="94eb36cd-29e1-478b-b365-4cb5dfc7d6fb")
    assert pod.path.name == "kubepods-burstable-pod94eb36cd_29e1_478b_b365_4cb5dfc7d6fb.slice"
    assert list(discover(tree.memory_root).pods) == ["94eb36cd-29e1-478b-b365-4cb5dfc7d6fb"]


def test_guaranteed_pods_sit_directly_under_kubepods(tmp_path):
    tree = CgroupTree(tmp_path / "cg")
    pod = tree.add_pod(qos="guaranteed")
    assert pod.path.parent == tree.kubepods
    assert discover(tree.memory_root).pods[pod.uid].qos == "guaranteed"


def test_ignores_what_is_not_a_pod_or_container(tmp_path):
    tree = CgroupTree(tmp_path / "cg")
    pod = tree.add_pod(qos="burstable", runtime="crio", containers=1)
    cid = pod.containers[-1]
    (pod.path / f"crio-conmon-{cid}.scope").mkdir()  # CRI-O's monitor process
    (tree.path(pod.uid, cid) / "init.scope").mkdir()  # systemd running inside the container
    (pod.path / f"crio-{cid[:-1]}.scope").mkdir()  # 63 hex digits: not a container ID
    (pod.path / f"crio-{cid.upper()}.scope").mkdir()  # runtimes print lowercase
    qos_dir = tree.qos_dir("burstable")
    (qos_dir / "kubepods-burstable-pod1234.slice").mkdir()  # not a UID
    (qos_dir / "kubepods-burstable-pod94EB36CD_29E1_478B_B365_4CB5DFC7D6FB.slice").mkdir()
    (qos_dir / "kubepods-burstable-pod94eb36cd_29e1_478b_b365_4cb5dfc7d6fc.slice.bak").mkdir()
    (qos_dir / "kubepods-burstable-pod11111111_2222_3333_4444_555555555555.slice").write_text("a file")
    (tree.memory_root / "system.slice" / f"docker-{'a' * 64}.scope").mkdir()  # Docker outside Kubernetes

    found = discover(tree.memory_root)

    assert list(found.pods) == [pod.uid]
    assert set(found.containers) == {(pod.uid, c) for c in pod.containers}


def test_finds_kubepods_under_a_kubelet_cgroup_root(tmp_path):
    # kind nodes: --cgroup-root=/kubelet with the systemd driver.
    tree = CgroupTree(tmp_path / "cg")
    pod = tree.add_pod(qos="besteffort")
    nested = tree.memory_root / "kubelet.slice" / "kubelet-kubepods.slice"
    nested.parent.mkdir()
    shutil.move(tree.kubepods, nested)

    found = discover(tree.memory_root)

    assert list(found.pods) == [pod.uid]
    assert found.pods[pod.uid].cgroup_path.startswith("kubelet.slice/kubelet-kubepods.slice/")
    assert len(found.containers) == len(pod.containers)


def test_a_pod_that_vanishes_while_being_listed_is_skipped_and_counted(tmp_path, monkeypatch):
    tree = CgroupTree(tmp_path / "cg")
    keep = tree.add_pod(qos="burstable")
    gone = tree.add_pod(qos="burstable")
    real_scandir = os.scandir
    qos_dir = str(tree.qos_dir("burstable"))

    def racing_scandir(path):
        # The QoS directory is listed with both pods in it; one is deleted before it is entered.
        if path != qos_dir:
            return real_scandir(path)
        with real_scandir(path) as it:
            entries = list(it)
        monkeypatch.undo()  # rmtree uses os.scandir too
        shutil.rmtree(gone.path)
        return contextlib.nullcontext(entries)

    monkeypatch.setattr(discovery.os, "scandir", racing_scandir)
    found = discover(tree.memory_root)

    assert keep.uid in found.pods
    assert {uid for uid, _ in found.containers} == {keep.uid}
    assert found.errors == {"vanished": 1}


def test_missing_kubepods_is_an_empty_node_not_an_error(tmp_path):
    tree = CgroupTree(tmp_path / "cg")
    shutil.rmtree(tree.kubepods)
    found = discover(tree.memory_root)
    assert (found.pods, found.containers, found.errors) == ({}, {}, {})


def test_synthetic_node_has_all_qos_classes_and_the_requested_size(tmp_path):
    from tests.support.cgroup_tree import build_node

    tree = build_node(tmp_path / "node", containers=60, runtime="mixed")
    found = discover(tree.memory_root)
    assert len(found.containers) == 60
    assert {p.qos for p in found.pods.values()} == set(QOS_CLASSES)
    assert {c.runtime for c in found.containers.values()} == set(RUNTIMES)
