"""The trainer's checkpoints: what a step folder holds, how it is written and how a run resumes
from it (weights, optimizer, loss scale, EMA, step and every rank's data position), so that a
resumed run ends where an uninterrupted one would.

checkpoints/step_XXXXXXX/ (written by rank 0, under a temporary name, then renamed):
  model.ckpt         every engine parameter under its engine name, EMA weights in place of the
                     trained ones when EMA is on: what image_to_video.py loads; or, for LoRA,
  lora.safetensors   only the adapters (EMA weights when EMA is on) in diffusers/PEFT naming:
                     what image_to_video.py applies over the base checkpoint;
  train_state.ckpt   trained weights, optimizer moments, loss scale, EMA copies;
  state.json         step, data positions of every rank, counters, config.
checkpoints/latest.txt names the newest folder.
"""
import json
import os
import shutil
from typing import Dict, List, Optional

import mindspore as ms
import numpy as np
from mindspore import Tensor
from omegaconf import OmegaConf

from ..errors import CheckpointError
from ..lora import save_adapters
from .optim import optimizer_state

STATE_JSON = "state.json"
MODEL_CKPT = "model.ckpt"
LORA_FILE = "lora.safetensors"
TRAIN_STATE_CKPT = "train_state.ckpt"
LATEST = "latest.txt"
# Settings a continuation must share with the run it continues, or it is not the same run.
_MUST_MATCH = ("world_size", "batch_size", "grad_accum_steps", "seed", "trainable", "ema", "lora")


def ema_state(ema) -> List:
    """(name, parameter) of the EMA's own state (its copies and counter), without the net's weights."""
    if ema is None:
        return []
    net_ids = {id(p) for p in ema.net_weight}
    return [(n, p) for n, p in ema.parameters_and_names() if id(p) not in net_ids and not n.startswith("swap")]


def train_state(trainer) -> Dict:
    """{name in train_state.ckpt: parameter} of everything a continuation needs besides the data
    positions: trained weights, optimizer moments, loss scale, EMA state."""
    state = {"param." + p.name: p for p in trainer.params}
    state.update({"optim." + n: p for n, p in optimizer_state(trainer.optimizer, trainer.param_ids)})
    if trainer.scaler is not None:
        state.update({"scaler.scale_value": trainer.scaler.scale_value, "scaler.counter": trainer.scaler.counter})
    state.update({"ema." + n: p for n, p in ema_state(trainer.ema)})
    return state


def run_identity(trainer) -> Dict:
    """The settings of _MUST_MATCH as this run has them."""
    return {"world_size": trainer.world_size, "batch_size": trainer.batch_size, "grad_accum_steps": trainer.accum,
            "seed": trainer.seed, "trainable": str(trainer.cfg.train.trainable), "ema": trainer.ema is not None,
            "lora": trainer.lora_settings.as_dict() if trainer.lora_settings else None}


def data_positions(trainer) -> List[Dict]:
    """Every rank's (epoch, offset, skipped) in its data stream; a collective: all ranks call it."""
    row = np.zeros((trainer.world_size, 3), np.float32)
    row[trainer.rank] = [trainer.stream.epoch, trainer.stream.offset, trainer.stream.skipped]
    table = trainer.reducer.reduce_vector(row.reshape(-1)).reshape(trainer.world_size, 3)
    return [{"epoch": int(round(e)), "offset": int(round(o)), "skipped": int(round(s))} for e, o, s in table]


def _write_weights(trainer, folder: str):
    ema_values = {}
    if trainer.ema is not None:
        ema_values = {id(p): e for p, e in zip(trainer.ema.net_weight, trainer.ema.ema_weight)}
    if trainer.adapters:
        base = os.path.basename(str(trainer.cfg.train.checkpoint)) if trainer.cfg.train.checkpoint else "random"
        save_adapters(os.path.join(folder, LORA_FILE), trainer.adapters, trainer.unet, trainer.lora_settings, base,
                      ema_values)
    else:
        entries = [{"name": n, "data": ema_values.get(id(p), p)} for n, p in trainer.engine.parameters_and_names()]
        ms.save_checkpoint(entries, os.path.join(folder, MODEL_CKPT))


def save_checkpoint(trainer) -> Optional[str]:
    """Write checkpoints/step_XXXXXXX/ (see the module's docstring); the folder on rank 0, None
    on the other ranks (which take part in gathering the data positions)."""
    positions = data_positions(trainer)
    if not trainer.cluster.is_main:
        return None
    name = f"step_{trainer.step:07d}"
    final = os.path.join(trainer.ckpt_dir, name)
    tmp = final + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    _write_weights(trainer, tmp)
    ms.save_checkpoint([{"name": n, "data": p} for n, p in train_state(trainer).items()],
                       os.path.join(tmp, TRAIN_STATE_CKPT))
    meta = dict(run_identity(trainer), step=trainer.step, max_steps=trainer.max_steps,
                samples_seen=trainer.samples_seen, overflow_steps=trainer.overflow_steps,
                skipped_videos=sum(p["skipped"] for p in positions), data_positions=positions,
                config=OmegaConf.to_container(trainer.cfg, resolve=True))
    with open(os.path.join(tmp, STATE_JSON), "w") as f:
        json.dump(meta, f, indent=1)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    latest_tmp = os.path.join(trainer.ckpt_dir, LATEST + ".tmp")
    with open(latest_tmp, "w") as f:
        f.write(name + "\n")
    os.replace(latest_tmp, os.path.join(trainer.ckpt_dir, LATEST))
    trainer.log(f"saved {final}")
    return final


def find_checkpoint(resume: str, out_dir: str) -> Optional[str]:
    """`resume`: a step folder, or 'auto'/'latest' for the newest one under out_dir (None if none)."""
    if resume in ("auto", "latest"):
        latest = os.path.join(out_dir, "checkpoints", LATEST)
        if not os.path.isfile(latest):
            return None
        with open(latest) as f:
            return os.path.join(out_dir, "checkpoints", f.read().strip())
    return resume


def _read_meta(folder: str, mine: Dict) -> Dict:
    meta_path, state_path = os.path.join(folder, STATE_JSON), os.path.join(folder, TRAIN_STATE_CKPT)
    if not (os.path.isfile(meta_path) and os.path.isfile(state_path)):
        raise CheckpointError(f"--resume: '{folder}' is not a training checkpoint (needs {STATE_JSON} and "
                              f"{TRAIN_STATE_CKPT})")
    with open(meta_path) as f:
        meta = json.load(f)
    for key in _MUST_MATCH:
        if meta.get(key) != mine[key]:
            raise CheckpointError(f"--resume: the checkpoint was written with {key}={meta.get(key)}, this run "
                                  f"has {key}={mine[key]}; an exact continuation needs the same")
    return meta


def resume_from(trainer, resume: str):
    """Continue `trainer` from a step folder ('auto'/'latest': the newest under its output_dir;
    none there: start from step 0). Every setting of _MUST_MATCH is checked first."""
    folder = find_checkpoint(resume, trainer.out_dir)
    if folder is None:
        trainer.log(f"--resume: no checkpoint under {trainer.ckpt_dir}; starting from step 0")
        return
    meta = _read_meta(folder, run_identity(trainer))
    if meta["max_steps"] != trainer.max_steps:
        trainer.log(f"WARNING: max_steps changed from {meta['max_steps']} to {trainer.max_steps}: "
                    f"the learning-rate schedule changes with it")
    state_path = os.path.join(folder, TRAIN_STATE_CKPT)
    values = ms.load_checkpoint(state_path)
    targets = train_state(trainer)
    missing = sorted(set(targets) - set(values))
    if missing:
        raise CheckpointError(f"--resume: {state_path} lacks {len(missing)} entries, e.g. {missing[:3]}")
    for name, param in targets.items():
        value = values[name]
        if tuple(value.shape) != tuple(param.shape):
            raise CheckpointError(f"--resume: {name} has shape {tuple(value.shape)}, expected {tuple(param.shape)}")
        param.set_data(Tensor(value.asnumpy(), param.dtype))
    position = meta["data_positions"][trainer.rank]
    trainer.stream.epoch, trainer.stream.offset = position["epoch"], position["offset"]
    trainer.stream.skipped = position["skipped"]
    trainer.step = int(meta["step"])
    trainer.samples_seen = int(meta["samples_seen"])
    trainer.overflow_steps = int(meta["overflow_steps"])
    trainer.log(f"resumed from {folder} at step {trainer.step}")
