"""svd_ms.jobs.resume: the verdict on what earlier runs left (new, done, redo, conflict), the
cleanup of killed runs' temporaries, and finished clips reused only with the same settings."""
import json
import os

import numpy as np
import pytest

from conftest import TINY_CONFIG
from svd_ms import record
from svd_ms.jobs.records import JobRecords
from svd_ms.jobs.resume import ClipStore, clean_temporaries, previous_outputs, read_record
from svd_ms.jobs.settings import JobSettings
from svd_ms.params import SVDParams


def _settings(**params):
    return JobRecords(SVDParams(config=TINY_CONFIG, **params), JobSettings(images=["a.png"]), False,
                      "CPU").video_settings()


def _finished(tmp_path, settings):
    video, sidecar = tmp_path / "a_seed1.mp4", tmp_path / "a_seed1.json"
    video.write_bytes(b"frames")
    sidecar.write_text(json.dumps({"status": "done", "video": video.name, "video_sha256": record.file_digest(video),
                                   "settings": settings}))
    return video, sidecar


def test_nothing_there_is_new(tmp_path):
    assert previous_outputs(tmp_path / "a.mp4", tmp_path / "a.json", {}, False, "mp4") == ("new", "")
    assert read_record(tmp_path / "a.json") is None


def test_a_video_without_its_sidecar_is_not_ours(tmp_path):
    video = tmp_path / "a.mp4"
    video.write_bytes(b"mine")
    verdict, reason = previous_outputs(video, tmp_path / "a.json", {}, False, "mp4")
    assert verdict == "conflict" and "--overwrite" in reason
    assert previous_outputs(video, tmp_path / "a.json", {}, True, "mp4") == ("redo", "")
    folder = tmp_path / "b.mp4"
    folder.mkdir()
    assert previous_outputs(folder, tmp_path / "b.json", {}, True, "mp4")[0] == "conflict"


def test_complete_record_with_the_same_settings_is_done(tmp_path):
    settings = _settings(sampler="euler", sampler_params={"s_churn": 0.5})
    video, sidecar = _finished(tmp_path, settings)
    assert previous_outputs(video, sidecar, settings, False, "mp4") == ("done", "")
    assert previous_outputs(video, sidecar, settings, True, "mp4") == ("redo", "")


def test_other_sampler_params_are_refused_by_name(tmp_path):
    video, sidecar = _finished(tmp_path, _settings(sampler="euler", sampler_params={"s_churn": 0.5}))
    verdict, reason = previous_outputs(video, sidecar, _settings(sampler="euler", sampler_params={"s_churn": 1.0}),
                                       False, "mp4")
    assert verdict == "conflict" and "(sampler_params differ)" in reason and "--overwrite" in reason


@pytest.mark.parametrize("damage", ["writing", "changed video", "empty", "not json"])
def test_an_incomplete_record_is_redone(tmp_path, damage):
    settings = _settings()
    video, sidecar = _finished(tmp_path, settings)
    if damage == "writing":
        sidecar.write_text(json.dumps(dict(json.loads(sidecar.read_text()), status="writing")))
    elif damage == "changed video":
        video.write_bytes(b"cut")
    elif damage == "empty":
        sidecar.write_text("{}")
    else:
        sidecar.write_text("{not json")
    assert previous_outputs(video, sidecar, settings, False, "mp4")[0] == "redo"


def test_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = tmp_path / ".a_seed1.tmp999999999.mp4"
    mine = tmp_path / f".b_seed1.tmp{os.getpid()}.mp4"
    for p in (dead, mine):
        p.write_bytes(b"x")
    (tmp_path / "c_seed1.mp4").write_bytes(b"x")
    assert clean_temporaries(tmp_path) == [dead.name]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, "c_seed1.mp4"])


def _clip(index):
    from svd_ms.pipeline import ClipResult
    rng = np.random.default_rng(index)
    return ClipResult(index=index, seed=100 + index, condition=rng.random((1, 3, 8, 8), dtype=np.float32),
                      frames=rng.random((2, 3, 8, 8), dtype=np.float32),
                      latents=rng.random((2, 4, 1, 1), dtype=np.float32))


def test_clips_are_kept_for_the_same_settings_only(tmp_path, capsys):
    video = tmp_path / "a_seed1.mp4"
    old = {"settings": _settings(sampler="euler", sampler_params={"s_churn": 0.5}), "seed": 1}
    store = ClipStore(video, old)
    for i in range(2):
        store.save(_clip(i))
    again = ClipStore(video, old).load()
    assert [c.index for c in again] == [0, 1] and np.array_equal(again[1].frames, _clip(1).frames)
    new = {"settings": _settings(sampler="euler", sampler_params={"s_churn": 1.0}), "seed": 1}
    assert ClipStore(video, new).load() == []
    assert "discarding the finished clips" in capsys.readouterr().out
    assert not store.folder.exists()  # the old clips are gone, never reused


def test_a_cut_clip_ends_the_finished_ones(tmp_path):
    video = tmp_path / "a_seed1.mp4"
    store = ClipStore(video, {"seed": 1})
    for i in range(3):
        store.save(_clip(i))
    (store.folder / "clip0001.npz").write_bytes(b"cut short")
    assert [c.index for c in ClipStore(video, {"seed": 1}).load()] == [0]
    assert sorted(p.name for p in store.folder.iterdir()) == ["clip0000.npz", "key.json"]
