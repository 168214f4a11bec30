"""LoRA fine-tuning (train.trainable: lora) on the tiny reference model and synthetic mp4s.

- a short run lowers the loss on its videos, leaves every base weight bit-identical, trains and
  stores only adapter tensors, and writes lora.safetensors (EMA adapter) with its settings;
- an interrupted run resumed with --resume ends with the same adapter, optimizer and EMA state;
- fp16 with loss scaling, recompute, gradient accumulation and LoRA dropout train (finite loss,
  base untouched);
- the written file applied in SVDInferPipeline(lora=...) at scale 0 reproduces the base video
  exactly and changes it at scale 1; a file that does not fit the model is refused in one line;
- msrun --worker_num=2 (one video per rank) after one step equals one process on both videos.
"""
import json
import os
import signal
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

from synthetic_videos import write_video
from conftest import TINY_CONFIG, TINY_WEIGHTS, assert_close
from msrun_helpers import run_msrun

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = int(os.environ.get("SVD_TEST_MSRUN_TIMEOUT", "900"))
LORA = {"rank": 4, "alpha": 8.0, "targets": ["attn", "ff"]}
# lora_B starts at zero, so lora_A's gradients are zero at the first step and tiny at the next:
# with Adam's default eps (1e-8) its update is then lr * sign(g), and float rounding in those
# gradients (~1e-8, the same inputs can round differently on a first call) flips whole steps.
# eps 1e-3 makes the update a smooth function of the gradient, so runs compare to 1e-6.
RUN = {"trainable": "lora", "lora": LORA, "max_steps": 3, "save_every": 2, "ema": {"enabled": True, "decay": 0.9},
       "optimizer": {"lr": 2.0e-2, "eps": 1.0e-3}, "lr_schedule": {"name": "constant"}}




@pytest.fixture(scope="module", autouse=True)
def _mindspore():
    from svd_ms.runtime import setup_device
    setup_device("CPU", mode=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora_videos")
    for i in range(2):
        write_video(root / f"clip{i}.mp4", num_frames=8, seed=i)
    (root / "clips.csv").write_text("path,fps,motion_bucket_id\nclip0.mp4,8,90\nclip1.mp4,12,\n")
    return root


def make_config(data: Path, out: Path, **train):
    from svd_ms.training.config import load_train_config

    cfg = {"checkpoint": TINY_WEIGHTS, "output_dir": str(out), "batch_size": 2, "log_every": 1, **RUN, **train}
    return load_train_config({"base": TINY_CONFIG, "train": cfg,
                              "data": {"csv": str(data / "clips.csv"), "root": str(data), "num_frames": 3,
                                       "frame_stride": 2, "height": 64, "width": 64}})


def train(cfg, resume=None, stop_after=None):
    from svd_ms.training.trainer import Trainer

    def on_step(trainer, record):
        if stop_after is not None and record["step"] == stop_after:
            os.kill(os.getpid(), signal.SIGINT)  # a real interruption: the trainer's handler catches it
    trainer = Trainer(cfg, resume=resume, log=print, on_step=on_step)
    return trainer, trainer.run()


def base_weights():
    from safetensors.numpy import load_file
    return load_file(TINY_WEIGHTS)


def eval_loss(trainer) -> float:
    """Loss on both videos at fixed noise levels and noise."""
    from svd_ms.training.data import collate

    batch = collate([trainer.dataset[(0, i)] for i in range(2)])
    batch["video"] = batch.pop("frames")
    batch["num_video_frames"] = 3
    noise = np.random.default_rng(5).standard_normal((6, 4, 8, 8)).astype(np.float32)
    return float(trainer.engine.training_loss(batch, sigmas=np.array([0.7, 2.0], np.float32),
                                              noise=noise).mean().asnumpy())


def load_state(step_dir: Path):
    return {k: v.asnumpy() for k, v in ms.load_checkpoint(str(step_dir / "train_state.ckpt")).items()}


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    from svd_ms.training.trainer import Trainer

    out = tmp_path_factory.mktemp("lora_run")
    trainer = Trainer(make_config(data, out), log=print)
    before = eval_loss(trainer)
    status = trainer.run()
    return {"out": out, "trainer": trainer, "status": status, "eval": (before, eval_loss(trainer))}


def test_lora_run_lowers_loss_and_keeps_base_weights(run):
    trainer = run["trainer"]
    before, after = run["eval"]
    print(f"[lora train] loss on the training videos: {before:.5f} before, {after:.5f} after 3 steps")
    assert run["status"] == "done" and after < 0.9 * before
    assert trainer.params and all(".lora." in p.name for p in trainer.params)
    assert len(trainer.params) == 2 * len(trainer.adapters) == 2 * 352
    base = base_weights()
    engine = dict(trainer.engine.parameters_and_names())
    frozen = [n for n in engine if ".lora." not in n]
    from svd_ms.checkpoint import ignored_reason
    assert set(frozen) == {k for k in base if ignored_reason(k) is None}
    changed = [n for n in frozen if not np.array_equal(engine[n].asnumpy(), base[n].astype(np.float32))]
    moved = sum(not np.array_equal(p.asnumpy(), v) for p, v in zip(trainer.ema.net_weight, trainer.ema.ema_weight))
    print(f"[lora train] {len(frozen)} base tensors, {len(changed)} changed; {len(trainer.params)} adapter tensors")
    assert not changed, changed[:3]
    assert moved > 0


def test_lora_checkpoints_hold_adapter_file_and_state(run):
    from svd_ms.lora import read_metadata

    ckpts = run["out"] / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest.txt", "step_0000002", "step_0000003"]
    step = ckpts / "step_0000003"
    assert sorted(p.name for p in step.iterdir()) == ["lora.safetensors", "state.json", "train_state.ckpt"]
    meta = read_metadata(str(step / "lora.safetensors"))
    assert (meta["rank"], meta["alpha"], json.loads(meta["targets"]), meta["base_model"]) == \
        ("4", "8.0", ["attn", "ff"], "tiny_svd.safetensors")
    from safetensors.numpy import load_file
    tensors = load_file(str(step / "lora.safetensors"))
    assert len(tensors) == 2 * 352 and all(k.startswith("unet.") and ".lora_" in k for k in tensors)
    size = os.path.getsize(step / "lora.safetensors")
    print(f"[lora train] lora.safetensors: {len(tensors)} tensors, {size / 1e6:.2f} MB")
    # the file holds the EMA adapter
    trainer = run["trainer"]
    ema = {p.name: e.asnumpy() for p, e in zip(trainer.ema.net_weight, trainer.ema.ema_weight)}
    module = trainer.unet.input_blocks[1][1].transformer_blocks[0].attn1.to_q
    key = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight"
    np.testing.assert_array_equal(tensors[key], ema[module.lora.up.name])
    state = load_state(step)
    params = [k for k in state if k.startswith("param.")]
    assert len(params) == 2 * 352 and all(".lora." in k for k in params)
    assert json.loads((step / "state.json").read_text())["lora"] == {"rank": 4, "alpha": 8.0, "dropout": 0.0,
                                                                      "targets": ["attn", "ff"]}


def test_lora_resume_is_exact(data, run, tmp_path):
    cfg = make_config(data, tmp_path)
    _, status1 = train(cfg, stop_after=1)
    _, status2 = train(cfg, resume="auto")
    assert (status1, status2) == ("interrupted", "done")
    a = load_state(run["out"] / "checkpoints" / "step_0000003")
    b = load_state(tmp_path / "checkpoints" / "step_0000003")
    assert sorted(a) == sorted(b) and any(k.startswith("ema.") for k in a)
    worst = max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a)
    print(f"[lora resume] {len(a)} state tensors, max |uninterrupted - resumed| = {worst:.3e} (bound 1e-6)")
    assert worst <= 1e-6
    with pytest.raises(Exception, match="lora="):
        train(make_config(data, tmp_path, lora={**LORA, "rank": 8}), resume="auto")


def test_lora_with_fp16_recompute_accumulation_and_dropout(data, tmp_path):
    cfg = make_config(data, tmp_path, max_steps=1, batch_size=1, grad_accum_steps=2, precision="fp16",
                      recompute=True, lora={**LORA, "dropout": 0.1}, save_every=1000)
    trainer, status = train(cfg)
    assert status == "done" and int(trainer.optimizer.step.asnumpy()) >= 1
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in log) and log[0]["loss_scale"] == 65536.0
    base = base_weights()
    engine = dict(trainer.engine.parameters_and_names())
    assert all(np.array_equal(engine[n].asnumpy(), base[n].astype(np.float32)) for n in engine if ".lora." not in n)
    assert all(p.dtype == ms.float32 for p in trainer.params)


def test_adapter_applies_in_pipeline_scale_zero_is_exact(run, tmp_path):
    from safetensors.numpy import load_file, save_file

    from svd_ms.errors import LoRAError
    from svd_ms.pipeline import SVDInferPipeline

    adapter = str(run["out"] / "checkpoints" / "step_0000003" / "lora.safetensors")
    rng = np.random.default_rng(0)
    noise = {"latent_noise": rng.standard_normal((3, 4, 8, 8)).astype(np.float32),
             "cond_noise": rng.standard_normal((1, 3, 64, 64)).astype(np.float32)}
    image = np.clip(rng.standard_normal((1, 3, 64, 64)) * 0.5, -1, 1).astype(np.float32)

    def video(lora):
        pipe = SVDInferPipeline(TINY_CONFIG, TINY_WEIGHTS, num_frames=3, num_steps=2, lora=lora)
        return pipe, pipe.generate(image, **noise)
    base_pipe, base = video(None)
    zero_pipe, zero = video([(adapter, 0.0)])
    _, full = video(f"{adapter}:1.0")
    weights = dict(base_pipe.engine.parameters_and_names())
    assert all(np.array_equal(p.asnumpy(), weights[n].asnumpy()) for n, p in zero_pipe.engine.parameters_and_names())
    # Same weights, same inputs: the videos differ only by the CPU kernels' run-to-run rounding
    # (two base runs on this busy 2-core machine differed by up to 4.8e-7).
    assert_close("video with the adapter at scale 0 vs the base video", zero["video"], base["video"], max_abs=1e-5)
    change = float(np.abs(full["latents"] - base["latents"]).max())
    print(f"[lora pipeline] scale 0: weights bit-identical to the base; scale 1 moves the latents by up to {change:.3g}")
    assert change > 1e-3

    tensors = load_file(adapter)
    key = next(k for k in tensors if k.endswith("lora_A.weight"))
    tensors[key] = tensors[key][:2]  # rank 2 where its lora_B has rank 4
    bad = str(tmp_path / "bad.safetensors")
    save_file(tensors, bad)
    with pytest.raises(LoRAError) as err:
        SVDInferPipeline(TINY_CONFIG, TINY_WEIGHTS, num_frames=3, num_steps=2, lora=[bad])
    assert key in str(err.value) and "\n" not in str(err.value)


def test_msrun_lora_step_equals_one_process(data, tmp_path):
    out = tmp_path / "msrun"
    out.mkdir()
    cfg_file = out / "lora.yaml"
    cfg_file.write_text(
        f"base: {TINY_CONFIG}\n"
        f"train:\n  checkpoint: {TINY_WEIGHTS}\n  output_dir: {out}/run\n  max_steps: 1\n  batch_size: 1\n"
        f"  log_every: 1\n  trainable: lora\n  lora: {{rank: 4, alpha: 8.0, targets: [attn, ff]}}\n"
        f"  optimizer: {{lr: 1.0e-3, eps: 1.0e-3}}\n"
        f"data:\n  csv: {data}/clips.csv\n  root: {data}\n  num_frames: 3\n  frame_stride: 2\n  height: 64\n"
        f"  width: 64\n")
    (out / "logs").mkdir()
    rc, launcher, logs = run_msrun([REPO / "train.py", "--config", cfg_file], out / "logs", TIMEOUT)
    assert rc == 0, (launcher[-3000:], {k: v[-3000:] for k, v in logs.items()})
    dist = load_state(out / "run" / "checkpoints" / "step_0000001")
    single = tmp_path / "single"
    train(make_config(data, single, max_steps=1, batch_size=2, ema={"enabled": False},
                      optimizer={"lr": 1.0e-3, "eps": 1.0e-3}, lr_schedule={"name": "cosine"}))
    one = load_state(single / "checkpoints" / "step_0000001")
    params = sorted(k for k in one if k.startswith("param."))
    assert params == sorted(k for k in dist if k.startswith("param.")) and len(params) == 2 * 352
    worst = max(float(np.abs(one[k].astype(np.float64) - dist[k]).max()) for k in params)
    ups = [k for k in params if k.endswith(".lora.up")]
    moved = max(float(np.abs(one[k]).max()) for k in ups)  # up starts at zero: this is the step itself
    print(f"[lora data parallel] msrun 2 ranks x 1 video vs 1 process x 2 videos: max |dW| = {worst:.3e} "
          f"(bound 1e-6; the step moved lora_B by up to {moved:.1e})")
    assert worst <= 1e-6 and moved > 1e-5


def test_adapter_file_applies_through_the_cli(run, tmp_path, capsys):
    """The file training wrote, given to image_to_video.py --SVD.lora=PATH:SCALE; a file that does not
    fit the model is refused in one line."""
    import importlib.util

    from PIL import Image
    from safetensors.numpy import load_file, save_file

    spec = importlib.util.spec_from_file_location("image_to_video", REPO / "image_to_video.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    adapter = str(run["out"] / "checkpoints" / "step_0000003" / "lora.safetensors")
    image = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(image)
    common = ["--SVD.config", TINY_CONFIG, "--SVD.checkpoint", TINY_WEIGHTS, "--SVD.num_frames=2",
              "--SVD.num_steps=1", "--device_target=CPU", "--mode=1", "--progress=false", "--seed=3",
              "--output_format=png", "--image", str(image)]
    rc = cli.main(common + ["--output_dir", str(tmp_path / "o"), f"--SVD.lora={adapter}:0.5"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    side = json.loads((tmp_path / "o" / "in_seed3.json").read_text())
    assert side["pipeline"]["lora"] == [f"{adapter}:0.5"] and f"--SVD.lora=" in side["reproduce"]
    tensors = load_file(adapter)
    key = next(k for k in tensors if k.endswith("lora_B.weight"))
    tensors[key] = tensors[key][:, :1]
    bad = str(tmp_path / "bad.safetensors")
    save_file(tensors, bad)
    rc = cli.main(common + ["--output_dir", str(tmp_path / "o2"), f"--SVD.lora={bad}"])
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert rc == 2 and lines and "bad.safetensors" in lines[0] and "Traceback" not in err, err
