"""svd_ms.training.checkpointing: a step folder holds what a continuation needs, written
atomically; resuming restores weights, optimizer moments, loss scale, step and data position, and
refuses a run whose settings differ. (A whole run resumed against an uninterrupted one:
tests/training/test_trainer.py.)"""
import json
import types

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn
from omegaconf import OmegaConf

from svd_ms.errors import CheckpointError
from svd_ms.training import checkpointing as ck
from svd_ms.training.optim import AdamW, BucketAllReduce


class Engine(nn.Cell):
    def __init__(self):
        super().__init__()
        self.proj = nn.Dense(3, 2)
        self.frozen = ms.Parameter(ms.Tensor(np.full(2, 7.0, np.float32)), requires_grad=False)


def fake_trainer(out_dir, seed=1, logs=None):
    """The attributes of a Trainer that checkpointing reads, around a two-parameter engine."""
    engine = Engine()
    params = list(engine.proj.get_parameters())
    trainer = types.SimpleNamespace(
        engine=engine, params=params, param_ids={id(p) for p in params},
        optimizer=AdamW(params, [1e-2] * 10), scaler=ms.amp.DynamicLossScaler(1024.0, 2, 100), ema=None,
        adapters={}, lora_settings=None, unet=None, cluster=types.SimpleNamespace(is_main=True),
        reducer=BucketAllReduce(1), world_size=1, rank=0, batch_size=2, accum=1, seed=seed, max_steps=10,
        stream=types.SimpleNamespace(epoch=1, offset=3, skipped=2), step=4, samples_seen=8, overflow_steps=1,
        out_dir=str(out_dir), ckpt_dir=str(out_dir / "checkpoints"),
        cfg=OmegaConf.create({"train": {"trainable": "all", "checkpoint": None}}))
    trainer.log = (logs if logs is not None else []).append
    return trainer


def test_save_writes_the_step_folder_atomically(tmp_path):
    trainer = fake_trainer(tmp_path)
    folder = ck.save_checkpoint(trainer)
    assert folder == str(tmp_path / "checkpoints" / "step_0000004")
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest.txt", "step_0000004"]
    assert (tmp_path / "checkpoints" / "latest.txt").read_text() == "step_0000004\n"
    meta = json.loads((tmp_path / "checkpoints" / "step_0000004" / "state.json").read_text())
    assert meta["step"] == 4 and meta["data_positions"] == [{"epoch": 1, "offset": 3, "skipped": 2}]
    assert meta["seed"] == 1 and meta["trainable"] == "all" and meta["skipped_videos"] == 2
    model = ms.load_checkpoint(str(tmp_path / "checkpoints" / "step_0000004" / "model.ckpt"))
    assert sorted(model) == ["frozen", "proj.bias", "proj.weight"]
    state = ms.load_checkpoint(str(tmp_path / "checkpoints" / "step_0000004" / "train_state.ckpt"))
    assert {"param.proj.weight", "optim.step", "scaler.scale_value"} <= set(state)
    assert any(k.startswith("optim.exp_avg") for k in state)


def test_resume_restores_the_state(tmp_path):
    saved = fake_trainer(tmp_path)
    saved.optimizer.step.set_data(ms.Tensor(4, ms.int32))
    weights = {p.name: p.asnumpy().copy() for p in saved.params}
    ck.save_checkpoint(saved)
    logs = []
    fresh = fake_trainer(tmp_path, logs=logs)
    fresh.stream, fresh.step, fresh.samples_seen = types.SimpleNamespace(epoch=0, offset=0, skipped=0), 0, 0
    assert not all(np.array_equal(p.asnumpy(), weights[p.name]) for p in fresh.params)  # other random init
    ck.resume_from(fresh, "auto")
    assert all(np.array_equal(p.asnumpy(), weights[p.name]) for p in fresh.params)
    assert int(fresh.optimizer.step.asnumpy()) == 4
    assert (fresh.step, fresh.samples_seen, fresh.overflow_steps) == (4, 8, 1)
    assert (fresh.stream.epoch, fresh.stream.offset, fresh.stream.skipped) == (1, 3, 2)
    assert any("resumed from" in line for line in logs)


def test_find_checkpoint(tmp_path):
    assert ck.find_checkpoint("auto", str(tmp_path)) is None
    assert ck.find_checkpoint("/some/step_0000001", str(tmp_path)) == "/some/step_0000001"
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "latest.txt").write_text("step_0000009\n")
    assert ck.find_checkpoint("latest", str(tmp_path)) == str(tmp_path / "checkpoints" / "step_0000009")


def test_a_different_run_or_folder_is_refused(tmp_path):
    ck.save_checkpoint(fake_trainer(tmp_path))
    with pytest.raises(CheckpointError, match="written with seed=1, this run has seed=2") as info:
        ck.resume_from(fake_trainer(tmp_path, seed=2), "auto")
    assert "\n" not in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="is not a training checkpoint"):
        ck.resume_from(fake_trainer(tmp_path), str(tmp_path / "empty"))
    logs = []
    ck.resume_from(fake_trainer(tmp_path / "new", logs=logs), "auto")  # nothing yet: start at 0
    assert any("starting from step 0" in line for line in logs)
