"""svd_ms.runtime.Cluster: one rule for "distributed", used by inference, training and benchmarks."""
import inspect

import pytest

from svd_ms.runtime import Cluster

MSRUN_ONE = {"MS_ROLE": "MS_WORKER", "MS_WORKER_NUM": "1", "RANK_ID": "0"}
MSRUN_TWO = {"MS_ROLE": "MS_WORKER", "MS_WORKER_NUM": "2", "RANK_ID": "1", "DEVICE_ID": "1"}


@pytest.mark.parametrize("env,distributed,rank,world", [
    ({}, False, 0, 1),
    ({"MS_ROLE": "MS_SCHED", "MS_WORKER_NUM": "2"}, False, 0, 1),
    (MSRUN_ONE, True, 0, 1),   # one msrun worker must still join the rendezvous, or the scheduler waits
    (MSRUN_TWO, True, 1, 2),
])
def test_distributed_rule(env, distributed, rank, world):
    cluster = Cluster(env)
    assert (cluster.distributed, cluster.rank, cluster.world_size) == (distributed, rank, world)


def test_inference_training_and_benchmarks_share_the_cluster():
    """No second Cluster anywhere: the job runner, the trainer and train.py use this one."""
    import svd_ms.jobs as jobs
    import svd_ms.training.trainer as trainer

    assert jobs.Cluster is Cluster and trainer.Cluster is Cluster
    for module in (jobs, trainer):
        assert not [name for name, obj in inspect.getmembers(module, inspect.isclass)
                    if name == "Cluster" and obj is not Cluster]


def test_single_process_gather_is_local():
    assert Cluster({}).all_gather_ints([1, 2, 3]).tolist() == [[1, 2, 3]]
