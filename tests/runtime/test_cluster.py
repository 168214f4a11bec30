"""svd_ms.runtime.cluster: one rule for "distributed" (rank and world size from msrun's environment),
used by inference, training and the benchmarks alike."""
import ast
import os

import numpy as np
import pytest

from svd_ms.errors import UsageError
from svd_ms.runtime import cluster as cluster_module
from svd_ms.runtime.cluster import Cluster, is_scheduler, run_scheduler

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MSRUN_ONE = {"MS_ROLE": "MS_WORKER", "MS_WORKER_NUM": "1", "RANK_ID": "0"}
MSRUN_TWO = {"MS_ROLE": "MS_WORKER", "MS_WORKER_NUM": "2", "RANK_ID": "1", "DEVICE_ID": "1"}
MSRUN_ENV = ("MS_ROLE", "MS_WORKER_NUM", "RANK_ID", "MS_NODE_ID", "DEVICE_ID")


@pytest.mark.parametrize("env, distributed, rank, world, device", [
    ({}, False, 0, 1, None),                                            # a plain process
    ({"MS_ROLE": "MS_SCHED", "MS_WORKER_NUM": "2"}, False, 0, 1, None),  # the scheduler is no worker
    ({"MS_ROLE": "MS_WORKER"}, False, 0, 1, None),                      # no worker count: not msrun's
    ({"RANK_ID": "3", "MS_WORKER_NUM": "4"}, False, 0, 1, None),        # rank variables alone are not msrun
    (MSRUN_ONE, True, 0, 1, None),   # one msrun worker must still join the rendezvous, or the scheduler waits
    (MSRUN_TWO, True, 1, 2, 1),
    ({"MS_ROLE": "MS_WORKER", "MS_WORKER_NUM": "4", "MS_NODE_ID": "2"}, True, 2, 4, None),  # MS_NODE_ID fallback
    ({"MS_ROLE": "MS_WORKER", "MS_WORKER_NUM": "4", "RANK_ID": "3", "MS_NODE_ID": "2"}, True, 3, 4, None),
])
def test_distributed_rule(env, distributed, rank, world, device):
    cluster = Cluster(env)
    assert (cluster.distributed, cluster.rank, cluster.world_size, cluster.local_device) == (
        distributed, rank, world, device)
    assert cluster.is_main == (rank == 0)
    assert cluster.tag == (f"[rank {rank}/{world}] " if distributed else "")


def test_reads_the_process_environment_by_default(monkeypatch):
    for name in MSRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    assert not Cluster().distributed and not is_scheduler()
    for name, value in MSRUN_TWO.items():
        monkeypatch.setenv(name, value)
    assert (Cluster().rank, Cluster().world_size) == (1, 2)
    monkeypatch.setenv("MS_ROLE", "MS_SCHED")
    assert is_scheduler() and not Cluster().distributed


def _fake_communication(monkeypatch, init, rank=0, size=1):
    import mindspore.communication as comm
    monkeypatch.setattr(comm, "init", init)
    monkeypatch.setattr(comm, "get_rank", lambda: rank)
    monkeypatch.setattr(comm, "get_group_size", lambda: size)


def test_single_process_never_touches_communication(monkeypatch):
    def refuse():
        raise AssertionError("a single process must not join a rendezvous")
    _fake_communication(monkeypatch, refuse)
    cluster = Cluster({})
    assert cluster.init() is cluster
    cluster.enable_data_parallel()  # world size 1: nothing to average
    assert Cluster({}).all_gather_ints([1, 2, 3]).tolist() == [[1, 2, 3]]


def test_lone_msrun_worker_joins_and_takes_rank_from_the_rendezvous(monkeypatch):
    calls = []
    _fake_communication(monkeypatch, lambda: calls.append("init"), rank=0, size=1)
    cluster = Cluster(MSRUN_ONE)
    assert cluster.init() is cluster and calls == ["init"]
    assert cluster.init() is cluster and calls == ["init"]  # once per process
    assert (cluster.rank, cluster.world_size) == (0, 1)
    assert cluster.all_gather_ints([7]).tolist() == [[7]]  # one rank: no collective needed


def test_rendezvous_rank_wins_over_the_environment(monkeypatch):
    _fake_communication(monkeypatch, lambda: None, rank=3, size=4)
    cluster = Cluster(MSRUN_TWO).init()
    assert (cluster.rank, cluster.world_size, cluster.is_main) == (3, 4, False)


def test_failed_rendezvous_is_one_usage_error(monkeypatch):
    def broken():
        raise RuntimeError("connect to scheduler timed out\n----- C++ Call Stack -----\n frame 1")
    _fake_communication(monkeypatch, broken)
    with pytest.raises(UsageError) as err:
        Cluster(MSRUN_ONE).init()
    assert str(err.value).startswith("msrun worker: communication init failed")
    assert "timed out" in str(err.value) and "\n" not in str(err.value) and "C++" not in str(err.value)


def test_scheduler_exit_codes(monkeypatch, capsys):
    _fake_communication(monkeypatch, lambda: None)
    assert run_scheduler() == 0

    def broken():
        raise RuntimeError("no workers")
    _fake_communication(monkeypatch, broken)
    assert run_scheduler() == 2
    assert capsys.readouterr().err.strip() == "error: msrun scheduler: RuntimeError: no workers"


def test_gather_shape_for_several_ranks(monkeypatch):
    """With more than one rank the rows of every rank come back in rank order."""
    import mindspore as ms

    class FakeGather:  # what AllGather returns on two ranks: rank 1's row is rank 0's + 10
        def __call__(self, x):
            row = x.asnumpy()
            return ms.Tensor(np.concatenate([row, row + 10]))

    class PlainCell:  # runs construct eagerly, without a device graph
        def __call__(self, *args):
            return self.construct(*args)

    cluster = Cluster(MSRUN_TWO)
    monkeypatch.setattr(ms.nn, "Cell", PlainCell)
    monkeypatch.setattr(ms.ops, "AllGather", FakeGather)
    monkeypatch.setattr(ms, "jit", lambda fn: fn)
    assert cluster.all_gather_ints([1, 2]).tolist() == [[1, 2], [11, 12]]


def test_no_other_module_reads_msrun_variables_or_defines_a_cluster():
    """One rule: only the cluster module reads the worker count, and no second Cluster class exists."""
    offenders = []
    own = os.path.abspath(cluster_module.__file__)
    for folder in ("svd_ms", "svd_tools"):
        for here, _, files in os.walk(os.path.join(ROOT, folder)):
            for name in files:
                path = os.path.join(here, name)
                if not name.endswith(".py") or os.path.abspath(path) == own:
                    continue
                with open(path, encoding="utf-8") as f:
                    text = f.read()
                if "MS_WORKER_NUM" in text:
                    offenders.append(f"{path}: reads MS_WORKER_NUM")
                if any(isinstance(n, ast.ClassDef) and n.name == "Cluster" for n in ast.walk(ast.parse(text))):
                    offenders.append(f"{path}: defines Cluster")
    for script in ("image_to_video.py", "train.py"):
        with open(os.path.join(ROOT, script), encoding="utf-8") as f:
            if "MS_WORKER_NUM" in f.read():
                offenders.append(f"{script}: reads MS_WORKER_NUM")
    assert not offenders, offenders
