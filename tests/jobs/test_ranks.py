"""svd_ms.jobs.ranks: one verdict and one base seed for all ranks, the per-rank results files, a
lost rank reported, the summary and its exit codes."""
import json
import time

import numpy as np
import pytest

from svd_ms.errors import UsageError
from svd_ms.jobs import ranks
from svd_ms.jobs.settings import EXIT_FAILED, EXIT_OK, EXIT_SETUP
from svd_ms.runtime import Cluster
from svd_ms.seeds import SEED_MOD


class TwoRanks:
    """Rank 1 of a cluster of two, whose rank 0 answers `other(values)` to every gather."""
    distributed, world_size = True, 2

    def __init__(self, other):
        self.other = other

    def all_gather_ints(self, values):
        return np.asarray([self.other(values), values], np.int64)


def test_single_process_takes_the_users_seed_or_draws_one():
    job_id, seed = ranks.agree(Cluster({}), None, 42, ["a.png"], "image")
    assert seed == 42 and 0 <= job_id < 2**31
    drawn = {ranks.agree(Cluster({}), None, None, ["a.png"], "image")[1] for _ in range(5)}
    assert all(0 <= s < SEED_MOD for s in drawn) and len(drawn) > 1
    with pytest.raises(UsageError, match="--seed bad"):
        ranks.agree(Cluster({}), "--seed bad", 42, [], "image")


def test_ranks_take_rank_0s_seed_and_stop_together():
    seed = 2**32 - 3  # needs all 32 bits
    rank0 = lambda v: [1, 77, seed >> 16, seed & 0xFFFF, v[4]]  # noqa: E731
    job_id, base = ranks.agree(TwoRanks(rank0), None, None, ["a"], "image")
    assert base == seed  # this rank's drawn seed is replaced by the first row's
    with pytest.raises(UsageError, match=r"setup failed on rank\(s\) \[0\]"):
        ranks.agree(TwoRanks(lambda v: [0] + list(v[1:])), None, 1, ["a"], "image")
    with pytest.raises(UsageError, match="workers see different --image lists"):
        ranks.agree(TwoRanks(lambda v: list(v[:4]) + [v[4] ^ 1]), None, 1, ["a"], "image")


def test_rank_state_of_a_single_process_writes_no_file(tmp_path, capsys):
    state = ranks.RankState(tmp_path, Cluster({}), 5)
    state.add("done", {"image": "a"})
    state.fail({"image": "b"}, "'b': broken")
    state.finish()
    assert list(tmp_path.iterdir()) == [] and state.data["failed"][0]["reason"] == "'b': broken"
    assert capsys.readouterr().err == "error: 'b': broken\n"


def _rank_file(out, rank, job_id, finished=True, **lists):
    data = {"job_id": job_id, "rank": rank, "finished": finished, "done": [], "skipped": [], "failed": []}
    data.update(lists)
    (out / ranks.RANK_FILE.format(rank=rank)).write_text(json.dumps(data))


def test_gather_reports_a_silent_rank_as_lost(tmp_path):
    _rank_file(tmp_path, 0, 3, done=[{"image": "a", "index": 0}])
    _rank_file(tmp_path, 1, 2)  # an earlier job's file: not this job's results
    t0 = time.monotonic()
    got = ranks.gather_rank_files(tmp_path, 3, 2, timeout=0.5)
    assert time.monotonic() - t0 < 30
    assert got[0]["done"] == [{"image": "a", "index": 0}] and got[1]["lost"] is True
    assert "rank 1 sent no results" in got[1]["failed"][0]["reason"]
    ranks.remove_rank_files(tmp_path, 2)
    assert list(tmp_path.iterdir()) == []


def test_wait_for_summary(tmp_path, capsys):
    (tmp_path / ranks.SUMMARY_NAME).write_text(json.dumps({"job_id": 4}))
    ranks.wait_for_summary(tmp_path, 4, timeout=60)  # returns at once
    ranks.wait_for_summary(tmp_path, 5, timeout=0.5)  # another job's summary, rank 0 silent: gives up
    assert "rank 0 silent" in capsys.readouterr().err


def test_summary_counts_and_exit_codes(tmp_path, capsys):
    done = [{"image": "a", "index": 0, "timings": {"mean_step_s": 2.0}}]
    failed = [{"image": "b", "index": 1, "reason": "'b': broken", "rank": 1, "seed": 8}]
    args = dict(job_id=1, base_seed=7, inputs=["a", "b"], output_format="mp4", world_size=2)
    code = ranks.write_summary(tmp_path, [{"rank": 0, "done": done}, {"rank": 1, "failed": failed}], code=EXIT_OK,
                               **args)
    summary = json.loads((tmp_path / ranks.SUMMARY_NAME).read_text())
    assert code == EXIT_FAILED and summary["counts"] == {"done": 1, "skipped": 0, "failed": 1}
    assert summary["ranks"][0]["mean_step_s"] == 2.0 and summary["failed"][0]["seed"] == 8
    assert "FAILED 'b': broken" in capsys.readouterr().err
    assert ranks.write_summary(tmp_path, [{"rank": 0, "done": done}], code=EXIT_OK, **args) == EXIT_OK
    assert ranks.write_summary(tmp_path, [{"rank": 0, "failed": failed}], code=EXIT_SETUP, **args) == EXIT_SETUP
