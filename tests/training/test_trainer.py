"""Fine-tuning (train.py, svd_ms.training) on the tiny reference model and synthetic mp4s.

Clips are 3 frames, stride 2, cropped to 64x64 from 96x80 videos written here with imageio, so a
train step takes seconds on a CPU. Runs that several assertions share are module fixtures.
- temporal-only training leaves every other weight bit-identical;
- fp16 overflow: non-finite gradients skip the update and lower the loss scale;
- a short run lowers the loss on its videos; an interrupted run resumed with --resume ends
  with the same weights, optimizer, EMA and data position as an uninterrupted one;
- missing, corrupt and too-short videos are skipped, warned about and counted; all-bad data
  stops with one line;
- msrun --worker_num=2 (one video per rank) after one step equals one process on the
  concatenated batch, and one process accumulating two micro-batches.
"""
import json
import os
import signal
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

from synthetic_videos import write_video
from conftest import TINY_CONFIG, TINY_WEIGHTS
from msrun_helpers import run_msrun

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = int(os.environ.get("SVD_TEST_MSRUN_TIMEOUT", "900"))
TEMPORAL_TAGS = ("time_stack", "time_mixer", "time_pos_embed")


# ------------------------------------------------------------------------------- fixtures



@pytest.fixture(scope="module", autouse=True)
def _mindspore():
    from svd_ms.runtime import setup_device
    setup_device("CPU", mode=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    assert Path(TINY_WEIGHTS).is_file(), f"tiny reference missing: {TINY_WEIGHTS}"
    root = tmp_path_factory.mktemp("videos")
    (root / "clips").mkdir()
    for i in range(4):
        write_video(root / "clips" / f"good{i}.mp4", num_frames=8, seed=i, fps=8 + 4 * (i % 2))
    write_video(root / "clips" / "short.mp4", num_frames=3, seed=9)   # a clip needs 5 frames
    good = (root / "clips" / "good0.mp4").read_bytes()
    (root / "clips" / "corrupt.mp4").write_bytes(good[:40] + bytes(range(256)) * 8)
    header = "path,fps,motion_bucket_id\n"
    (root / "good.csv").write_text(header + "clips/good0.mp4,,90\nclips/good1.mp4,12,\n"
                                   "clips/good2.mp4,,\nclips/good3.mp4,12,200\n")
    (root / "mixed.csv").write_text(header + "clips/corrupt.mp4,,\nclips/good0.mp4,,\nclips/missing.mp4,,\n"
                                    "clips/short.mp4,,\nclips/good1.mp4,,\n")
    (root / "bad.csv").write_text(header + "clips/corrupt.mp4,,\nclips/missing.mp4,,\nclips/short.mp4,,\n")
    return root


def make_config(data: Path, out: Path, csv: str = "good.csv", train=None, extra=None):
    from svd_ms.training.config import load_train_config

    train_cfg = {"checkpoint": TINY_WEIGHTS, "output_dir": str(out), "max_steps": 1, "batch_size": 2,
                 "log_every": 1, "save_every": 1000, "optimizer": {"lr": 1.0e-3}}
    for key, value in (train or {}).items():
        if isinstance(value, dict) and isinstance(train_cfg.get(key), dict):
            train_cfg[key] = {**train_cfg[key], **value}
        else:
            train_cfg[key] = value
    cfg = {"base": TINY_CONFIG, "train": train_cfg,
           "data": {"csv": str(data / csv), "root": str(data), "num_frames": 3, "frame_stride": 2,
                    "height": 64, "width": 64, "shuffle": True}}
    for section, values in (extra or {}).items():
        cfg[section].update(values)
    return load_train_config(cfg)


def snapshot(engine):
    return {name: p.asnumpy().copy() for name, p in engine.parameters_and_names()}


def load_state(step_dir: Path):
    return {k: v.asnumpy() for k, v in ms.load_checkpoint(str(step_dir / "train_state.ckpt")).items()}


class Recorder:
    """Collects the trainer's log lines and per-step records."""

    def __init__(self, stop_after=None):
        self.lines, self.records, self.stop_after = [], [], stop_after

    def log(self, msg):
        self.lines.append(msg)
        print(msg)

    def on_step(self, trainer, record):
        self.records.append(record)
        if self.stop_after is not None and record["step"] == self.stop_after:
            os.kill(os.getpid(), signal.SIGINT)  # a real interruption: the trainer's handler catches it


def train(cfg, resume=None, stop_after=None):
    from svd_ms.training.trainer import Trainer

    rec = Recorder(stop_after)
    trainer = Trainer(cfg, resume=resume, log=rec.log, on_step=rec.on_step)
    status = trainer.run()
    return trainer, rec, status


# ------------------------------------------------------------------------------- temporal only

def test_temporal_only_keeps_spatial_params_bit_identical(data, tmp_path):
    from svd_ms.checkpoint import build_engine, load_checkpoint_into

    cfg = make_config(data, tmp_path, train={"trainable": "temporal", "max_steps": 3, "batch_size": 1})
    reference = build_engine(TINY_CONFIG)
    load_checkpoint_into(reference, TINY_WEIGHTS)
    before = snapshot(reference)
    trainer, rec, status = train(cfg)
    assert status == "done" and [r["step"] for r in rec.records] == [1, 2, 3]
    assert all(p.name.startswith("model.diffusion_model.") and any(t in p.name for t in TEMPORAL_TAGS)
               for p in trainer.params)
    after = snapshot(trainer.engine)
    changed = {name for name in before if not np.array_equal(before[name], after[name])}
    temporal = {name for name in before if name.startswith("model.diffusion_model.")
                and any(t in name for t in TEMPORAL_TAGS)}
    moved = sorted(changed - temporal)
    print(f"[temporal-only] {len(changed & temporal)}/{len(temporal)} temporal tensors changed, "
          f"{len(moved)} of {len(before) - len(temporal)} others")
    assert not moved, f"non-temporal parameters changed: {moved[:5]}"
    assert len(changed & temporal) > 0.9 * len(temporal)


def test_fp16_overflow_steps_are_skipped(data, tmp_path):
    # A loss scale of 2^40 overflows the fp16 backward pass: every step must be skipped,
    # leaving the weights untouched, and halve the scale.
    cfg = make_config(data, tmp_path, train={"trainable": "temporal", "max_steps": 2, "batch_size": 1,
                                             "precision": "fp16", "loss_scale": {"init": 2.0 ** 40}})
    trainer, rec, status = train(cfg)
    assert [r["loss_scale"] for r in rec.records] == [2.0 ** 40, 2.0 ** 39]
    assert [r["finite"] for r in rec.records] == [False, False] and trainer.overflow_steps == 2
    assert all(np.isfinite(r["loss"]) for r in rec.records)
    assert int(trainer.optimizer.step.asnumpy()) == 0
    assert any("non-finite gradients" in line for line in rec.lines)
    from svd_ms.checkpoint import build_engine, load_checkpoint_into
    reference = build_engine(TINY_CONFIG)
    load_checkpoint_into(reference, TINY_WEIGHTS)
    before, after = snapshot(reference), snapshot(trainer.engine)
    assert all(np.array_equal(before[n], after[n]) for n in before)


# ------------------------------------------------------------------------------- loss, resume

RESUME_TRAIN = {"max_steps": 4, "save_every": 2, "ema": {"enabled": True, "decay": 0.99},
                "lr_schedule": {"warmup_steps": 1}}


def eval_loss(trainer) -> float:
    """Loss on all 4 videos at fixed noise levels and noise."""
    from svd_ms.training.data import collate

    batch = collate([trainer.dataset[(0, i)] for i in range(4)])
    batch["video"] = batch.pop("frames")
    batch["num_video_frames"] = 3
    noise = np.random.default_rng(5).standard_normal((12, 4, 8, 8)).astype(np.float32)
    sigmas = np.array([0.5, 1.0, 2.0, 4.0], np.float32)
    return float(trainer.engine.training_loss(batch, sigmas=sigmas, noise=noise).mean().asnumpy())


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    from svd_ms.training.trainer import Trainer

    out = tmp_path_factory.mktemp("uninterrupted")
    rec = Recorder()
    trainer = Trainer(make_config(data, out, train=RESUME_TRAIN), log=rec.log, on_step=rec.on_step)
    before = eval_loss(trainer)
    status = trainer.run()
    raw = [p.asnumpy().copy() for p in trainer.params]
    after = eval_loss(trainer)
    return {"out": out, "trainer": trainer, "rec": rec, "status": status, "eval": (before, after),
            "raw_weights": raw}


@pytest.fixture(scope="module")
def resumed(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("resumed")
    cfg = make_config(data, out, train=RESUME_TRAIN)
    first, rec1, status1 = train(cfg, stop_after=1)
    second, rec2, status2 = train(cfg, resume="auto")
    return {"out": out, "first": (first, rec1, status1), "second": (second, rec2, status2)}


def test_short_run_lowers_the_loss(uninterrupted):
    before, after = uninterrupted["eval"]
    print(f"[train] loss on the training videos: {before:.5f} before, {after:.5f} after 4 steps")
    assert uninterrupted["status"] == "done"
    assert after < 0.8 * before


def test_metrics_logged(uninterrupted):
    out = uninterrupted["out"]
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for r in records:
        assert np.isfinite(r["loss"]) and r["lr"] >= 0 and r["step_time_s"] > 0 and r["samples_per_s"] > 0
        assert "loss_scale" in r and r["skipped_videos"] == 0
    assert records[0]["lr"] == 0.0 and records[1]["lr"] == pytest.approx(1e-3)  # warm-up, then cosine
    assert records[3]["lr"] < records[2]["lr"] < records[1]["lr"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["latest.txt", "step_0000002", "step_0000004"]


def test_resume_ends_where_uninterrupted_run_ends(uninterrupted, resumed):
    first, rec1, status1 = resumed["first"]
    second, rec2, status2 = resumed["second"]
    assert status1 == "interrupted" and [r["step"] for r in rec1.records] == [1]
    assert status2 == "done" and [r["step"] for r in rec2.records] == [2, 3, 4]
    assert any("resumed from" in line for line in rec2.lines)
    ckpts = sorted(p.name for p in (resumed["out"] / "checkpoints").iterdir())
    assert ckpts == ["latest.txt", "step_0000001", "step_0000002", "step_0000004"]
    a = load_state(uninterrupted["out"] / "checkpoints" / "step_0000004")
    b = load_state(resumed["out"] / "checkpoints" / "step_0000004")
    assert sorted(a) == sorted(b)
    assert any(k.startswith("ema.") for k in a) and any(k.startswith("optim.exp_avg") for k in a)
    worst = max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a)
    print(f"[resume] {len(a)} state tensors, max |uninterrupted - resumed| = {worst:.3e} (bound 1e-6)")
    assert worst <= 1e-6
    sa = json.loads((uninterrupted["out"] / "checkpoints" / "step_0000004" / "state.json").read_text())
    sb = json.loads((resumed["out"] / "checkpoints" / "step_0000004" / "state.json").read_text())
    for key in ("step", "data_positions", "samples_seen", "overflow_steps", "skipped_videos"):
        assert sa[key] == sb[key], key
    rec = uninterrupted["rec"].records
    for r1, r2 in zip(rec[1:], rec2.records):
        assert r1["loss"] == pytest.approx(r2["loss"], rel=1e-5, abs=1e-7)


def test_checkpoint_loads_for_inference_with_ema_weights(uninterrupted):
    from svd_ms.checkpoint import build_engine, load_checkpoint_into

    step_dir = uninterrupted["out"] / "checkpoints" / "step_0000004"
    engine = build_engine(TINY_CONFIG)
    load_checkpoint_into(engine, str(step_dir / "model.ckpt"))
    trainer = uninterrupted["trainer"]
    loaded = dict(engine.parameters_and_names())
    ema = {id(p): e.asnumpy() for p, e in zip(trainer.ema.net_weight, trainer.ema.ema_weight)}
    for p, raw in zip(trainer.params, uninterrupted["raw_weights"]):
        assert np.array_equal(loaded[p.name].asnumpy(), ema[id(p)])
    assert not all(np.array_equal(ema[id(p)], raw) for p, raw in zip(trainer.params, uninterrupted["raw_weights"]))
    vae = "first_stage_model.encoder.conv_in.weight"
    assert np.array_equal(loaded[vae].asnumpy(), dict(trainer.engine.parameters_and_names())[vae].asnumpy())


def test_latent_cache_encodes_each_clip_once(data, tmp_path):
    from svd_ms.training.trainer import Trainer

    cfg = make_config(data, tmp_path / "out", extra={"data": {"cache_latents": str(tmp_path / "cache")}})
    trainer = Trainer(cfg, log=lambda msg: None)
    keys = [(0, 1), (0, 2)]
    first = trainer._latents([trainer.dataset[k] for k in keys], keys).asnumpy()
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2

    def no_vae(*args, **kwargs):
        raise AssertionError("the VAE ran although the latents are cached")
    trainer.engine.encode_video_latents = no_vae
    later = [(5, 1), (5, 2)]  # another epoch: same clips (the start frame is fixed when caching)
    again = trainer._latents([trainer.dataset[k] for k in later], later).asnumpy()
    np.testing.assert_array_equal(first, again)
    assert first.shape == (6, 4, 8, 8)


# ------------------------------------------------------------------------------- bad data

def test_bad_videos_are_skipped_warned_and_counted(data, tmp_path, capfd):
    cfg = make_config(data, tmp_path, csv="mixed.csv", extra={"data": {"shuffle": False}})
    trainer, rec, status = train(cfg)
    err = capfd.readouterr().err
    assert status == "done" and trainer.skipped_total == 3
    assert rec.records[0]["skipped_videos"] == 3
    assert "skipped_videos 3" in "\n".join(rec.lines)
    for name, reason in (("corrupt.mp4", "cannot be decoded"), ("missing.mp4", "file not found"),
                         ("short.mp4", "too short: 3 frames, a clip needs 5")):
        lines = [line for line in err.splitlines() if name in line]
        assert len(lines) == 1 and reason in lines[0], (name, lines)
    state = json.loads((tmp_path / "checkpoints" / "step_0000001" / "state.json").read_text())
    assert state["skipped_videos"] == 3


def test_all_bad_data_stops_with_one_line(data, tmp_path, capsys):
    import train as train_cli

    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"base: {TINY_CONFIG}\ntrain:\n  checkpoint: {TINY_WEIGHTS}\n  output_dir: {tmp_path}/out\n"
                   f"data:\n  csv: {data}/bad.csv\n  root: {data}\n  num_frames: 3\n  frame_stride: 2\n"
                   f"  height: 64\n  width: 64\n")
    code = train_cli.main(["--config", str(cfg)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("train.py")]
    assert code == 1 and len(err) == 1
    assert err[0].startswith("train.py: error: no usable video: all 3 videos of ")
    assert "missing, corrupt or shorter than 5 frames" in err[0]


# ------------------------------------------------------------------------------- msrun

# Adam's first update is lr * g / (|g| + eps): with the default eps (1e-8) it is lr * sign(g), so
# float rounding in near-zero gradients could flip whole steps. A larger eps makes the update a
# smooth function of the gradient, so "same weights" compares the gradients' agreement.
DP_TRAIN = {"max_steps": 1, "optimizer": {"lr": 1.0e-4, "eps": 1.0e-3}, "trainable": "all"}


@pytest.fixture(scope="module")
def data_parallel(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("msrun")
    cfg_file = out / "dp.yaml"
    cfg_file.write_text(
        f"base: {TINY_CONFIG}\n"
        f"train:\n  checkpoint: {TINY_WEIGHTS}\n  output_dir: {out}/run\n  max_steps: 1\n  batch_size: 1\n"
        f"  log_every: 1\n  optimizer: {{lr: 1.0e-4, eps: 1.0e-3}}\n"
        f"data:\n  csv: {data}/good.csv\n  root: {data}\n  num_frames: 3\n  frame_stride: 2\n  height: 64\n"
        f"  width: 64\n")
    log_dir = out / "logs"
    log_dir.mkdir()
    rc, launcher, logs = run_msrun([REPO / "train.py", "--config", cfg_file], log_dir, TIMEOUT)
    return {"out": out / "run", "rc": rc, "launcher": launcher, "logs": logs}


def test_msrun_one_step_equals_one_process_on_concatenated_batch(data, data_parallel, tmp_path):
    dp = data_parallel
    assert dp["rc"] == 0, (dp["launcher"][-3000:], {k: v[-3000:] for k, v in dp["logs"].items()})
    dist = load_state(dp["out"] / "checkpoints" / "step_0000001")
    single, _, _ = train(make_config(data, tmp_path / "single", train={**DP_TRAIN, "batch_size": 2}))
    accum, _, _ = train(make_config(data, tmp_path / "accum", train={**DP_TRAIN, "batch_size": 1,
                                                                       "grad_accum_steps": 2}))
    base = load_state(tmp_path / "single" / "checkpoints" / "step_0000001")
    from safetensors.numpy import load_file
    initial = load_file(TINY_WEIGHTS)
    for label, other in (("msrun 2 ranks x 1 video", dist),
                         ("1 process, 2 micro-batches of 1",
                          load_state(tmp_path / "accum" / "checkpoints" / "step_0000001"))):
        params = [k for k in base if k.startswith("param.")]
        assert sorted(params) == sorted(k for k in other if k.startswith("param."))
        worst = max(float(np.abs(base[k].astype(np.float64) - other[k]).max()) for k in params)
        step = max(float(np.abs(base[k] - initial[k[6:]].astype(np.float32)).max()) for k in params[:50])
        # 1e-6: about 1% of this step's largest update and a few float32 ulps of weights ~1-4
        # (two runs that round differently differ by one ulp of the weight at least).
        print(f"[data parallel] {label} vs 1 process x 2 videos: max |dW| = {worst:.3e} "
              f"(bound 1e-6; the step itself moved weights by up to {step:.1e})")
        assert worst <= 1e-6


def test_msrun_rank0_logs_and_checkpoints(data_parallel):
    logs = data_parallel["logs"]
    rank0, rank1 = logs.get("worker_0.log", ""), logs.get("worker_1.log", "")
    assert "on 2 rank(s), global batch 2 videos" in rank0
    line = [l for l in rank0.splitlines() if l.startswith("step 1/1 ")]
    assert len(line) == 1
    for field in ("loss ", "lr ", "step_time ", "samples/s ", "loss_scale ", "skipped_videos 0"):
        assert field in line[0]
    assert "step 1/1 " not in rank1 and "saved " not in rank1
    state = json.loads((data_parallel["out"] / "checkpoints" / "step_0000001" / "state.json").read_text())
    assert state["world_size"] == 2 and len(state["data_positions"]) == 2
    assert [p["offset"] for p in state["data_positions"]] == [1, 1]


@pytest.mark.parametrize("override,needle", [("train.max_steps=abc", "train.max_steps"),
                                             ("train.batch_size=0", "train.batch_size")])
def test_bad_setting_is_one_line(tmp_path, capsys, override, needle):
    import train as train_cli

    cfg = tmp_path / "t.yaml"
    cfg.write_text(f"base: {TINY_CONFIG}\ntrain:\n  checkpoint: {TINY_WEIGHTS}\n  output_dir: {tmp_path}/out\n"
                   f"data:\n  csv: {tmp_path}/none.csv\n")
    code = train_cli.main(["--config", str(cfg), override])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("train.py: error:") and needle in err[0], err
    assert not (tmp_path / "out").exists()
