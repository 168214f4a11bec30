"""One process's place in an msrun job, the same for inference, training and the benchmarks.

msrun starts a scheduler process (MS_ROLE=MS_SCHED) and workers (MS_ROLE=MS_WORKER with
MS_WORKER_NUM). A worker must join the rendezvous even when it is the only one, or the scheduler
waits for it: "distributed" therefore means "started by msrun as a worker", whatever the count.
"""
import os
from typing import Mapping, Optional, Sequence

import numpy as np

from ..errors import UsageError, one_line


class Cluster:
    def __init__(self, env: Optional[Mapping[str, str]] = None):
        env = os.environ if env is None else env
        self.distributed = env.get("MS_ROLE") == "MS_WORKER" and "MS_WORKER_NUM" in env
        self.rank, self.world_size = 0, 1
        self.local_device: Optional[int] = None
        if self.distributed:
            self.rank = int(env.get("RANK_ID", env.get("MS_NODE_ID", "0")))
            self.world_size = int(env["MS_WORKER_NUM"])
            if "DEVICE_ID" in env:
                self.local_device = int(env["DEVICE_ID"])
        self._initialised = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def tag(self) -> str:
        """Log prefix of this rank ('' for a single process)."""
        return f"[rank {self.rank}/{self.world_size}] " if self.distributed else ""

    def init(self) -> "Cluster":
        """Join the msrun rendezvous (a no-op for a single process). Call after the device is set."""
        if not self.distributed or self._initialised:
            return self
        from mindspore.communication import get_group_size, get_rank, init
        try:
            init()
        except Exception as exc:
            raise UsageError(f"msrun worker: communication init failed ({one_line(exc)})") from None
        self.rank, self.world_size = int(get_rank()), int(get_group_size())
        self._initialised = True
        return self

    def enable_data_parallel(self) -> None:
        """Average gradients over the ranks (training)."""
        if self.world_size > 1:
            import mindspore as ms
            ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                         device_num=self.world_size)

    def all_gather_ints(self, values: Sequence[int]) -> np.ndarray:
        """A few non-negative 31-bit ints from every rank: (world_size, len(values))."""
        row = np.asarray([values], dtype=np.int32)
        if self.world_size == 1:
            return row
        import mindspore as ms
        from mindspore import nn, ops

        class _Gather(nn.Cell):
            def __init__(self):
                super().__init__()
                self.op = ops.AllGather()

            @ms.jit
            def construct(self, x):
                return self.op(x)

        return _Gather()(ms.Tensor(row)).asnumpy().reshape(self.world_size, -1)


def is_scheduler() -> bool:
    return os.environ.get("MS_ROLE") == "MS_SCHED"


def run_scheduler() -> int:
    """The msrun scheduler process only serves the workers' rendezvous: init() returns (or exits)
    once they are gone. Returns a process exit code."""
    import sys
    try:
        from mindspore.communication import init
        init()
    except Exception as exc:
        print(f"error: msrun scheduler: {one_line(exc)}", file=sys.stderr, flush=True)
        return 2
    return 0
