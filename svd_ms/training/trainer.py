"""The fine-tuning loop behind train.py.

One optimizer step = `grad_accum_steps` micro-batches of `batch_size` videos on each of the
`world_size` ranks. Per micro-batch: decode clips (or read cached latents), encode them with the
frozen VAE, embed the conditioning with the frozen conditioner, then differentiate the UNet's
loss. Gradients are averaged over micro-batches and ranks, unscaled, checked for inf/NaN (a bad
step is skipped and the loss scale lowered), clipped by global norm, and applied by AdamW; the
EMA follows. Rank 0 logs and writes checkpoints.

Everything random is drawn from generators seeded by (seed, epoch, video index, stream), so a
run is reproducible, independent of how the global batch is split over ranks, and resumable
from (step, per-rank data position) alone.
"""
import json
import os
import shutil
import signal
import sys
import time
from typing import Dict, List, Optional, Sequence

import mindspore as ms
import numpy as np
from mindspore import Tensor
from omegaconf import DictConfig, OmegaConf

from .. import policy
from ..errors import CheckpointError, ConfigError
from ..precision import apply_training_precision
from ..runtime import Cluster
from ..util import check_targets, load_config
from ..lora import LoRASettings, adapter_parameters, attach_adapters, check_diffusers_names, save_adapters
from .data import ShardStream, VideoCSVDataset, collate, sample_rng
from .optim import AdamW, BucketAllReduce, MindoneOptimizer, global_norm, lr_schedule, optimizer_state, \
    scale_grads

TEMPORAL_TAGS = ("time_stack", "time_mixer", "time_pos_embed")
UNET_PREFIX = "model.diffusion_model."
STATE_JSON = "state.json"
MODEL_CKPT = "model.ckpt"
LORA_FILE = "lora.safetensors"
TRAIN_STATE_CKPT = "train_state.ckpt"

DEFAULTS = {
    "train": {
        "checkpoint": None,            # initial weights (.safetensors or .ckpt); null: random (demo)
        "output_dir": "outputs/train",
        "seed": 42,
        "max_steps": 1000,              # optimizer steps
        "batch_size": 1,                # videos per rank per micro-batch
        "grad_accum_steps": 1,
        "trainable": "all",             # all | temporal | lora
        "lora": {"rank": 16, "alpha": None, "dropout": 0.0, "targets": ["attn"]},  # alpha null: = rank
        "optimizer": {"name": "adamw", "lr": 1.0e-5, "betas": [0.9, 0.999], "eps": 1.0e-8,
                      "weight_decay": 0.01},
        "lr_schedule": {"name": "cosine", "warmup_steps": 0, "warmup_factor": 0.0, "min_lr": 0.0},
        "clip_grad_norm": 1.0,          # null: no clipping
        "precision": "fp32",            # fp32 | fp16 | bf16 (UNet compute; weights stay float32)
        "loss_scale": {"enabled": None, "init": 65536.0, "factor": 2, "window": 1000},
        "recompute": False,             # recompute UNet blocks in the backward pass
        "ema": {"enabled": False, "decay": 0.9999},
        "save_every": 500,
        "log_every": 10,
        "sample_posterior": False,      # VAE posterior sample instead of its mode
        "cond_drop_prob": 0.0,          # drop a video's image conditioning (for guidance)
        "grad_bucket_mb": 64,
    },
    "data": {
        "csv": None,
        "root": "",
        "path_column": "path",
        "fps_column": "fps",
        "motion_bucket_column": "motion_bucket_id",
        "default_motion_bucket_id": 127,
        "num_frames": 14,
        "frame_stride": 1,
        "height": 576,
        "width": 1024,
        "cond_aug": {"p_mean": -3.0, "p_std": 0.5},
        "shuffle": True,
        "cache_latents": None,          # a folder: encode each clip once, reuse its latents
    },
}


# ---------------------------------------------------------------------------------- config

def load_train_config(config, overrides: Sequence[str] = ()) -> DictConfig:
    """A training config: `base:` names an inference config (relative to this file) whose
    `model:` is the starting point; this file's `model:` is merged over it; `train:` and
    `data:` are filled from DEFAULTS. `overrides` are OmegaConf dotlist items (train.lr=...)."""
    cfg = load_config(config, what="training config")
    here = os.path.dirname(os.path.abspath(config)) if isinstance(config, (str, os.PathLike)) else os.getcwd()
    base = cfg.get("base")
    if base:
        base_path = base if os.path.isabs(base) else os.path.join(here, base)
        base_cfg = load_config(base_path, what="base config", require_model=True)
        cfg = OmegaConf.merge({"model": base_cfg.model}, cfg)
    if "model" not in cfg:
        raise ConfigError("training config has no model: set `base:` to an inference config or give `model:`")
    cfg = OmegaConf.merge(DEFAULTS, cfg)
    if overrides:
        cfg.merge_with_dotlist(list(overrides))
        check_targets(cfg, "the command-line overrides")
    t, d = cfg.train, cfg.data
    if t.trainable not in ("all", "temporal", "lora"):
        raise ConfigError(f"train.trainable must be 'all', 'temporal' or 'lora', got '{t.trainable}'")
    LoRASettings.from_config(OmegaConf.to_container(t.lora) if isinstance(t.lora, DictConfig) else t.lora)
    if t.precision not in policy.TRAIN_PRECISIONS:
        raise ConfigError(f"train.precision must be one of {policy.TRAIN_PRECISIONS}, got '{t.precision}'")
    for key in ("max_steps", "batch_size", "grad_accum_steps", "save_every", "log_every"):
        value = t[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"train.{key} must be an integer >= 1, got {value!r}")
    if not d.csv:
        raise ConfigError("data.csv is not set")
    if d.cache_latents and t.sample_posterior:
        raise ConfigError("data.cache_latents stores the posterior mode; it cannot be combined with "
                          "train.sample_posterior")
    return cfg


# ---------------------------------------------------------------------------------- trainer

class Trainer:
    def __init__(self, cfg: DictConfig, cluster: Optional[Cluster] = None, resume: Optional[str] = None,
                 log=None, on_step=None):
        self.cfg = cfg
        self.cluster = cluster or Cluster().init()
        self.cluster.enable_data_parallel()
        self.rank, self.world_size = self.cluster.rank, self.cluster.world_size
        self._print = log or (lambda msg: print(msg, flush=True))
        self.on_step = on_step
        t = cfg.train
        self.seed = int(t.seed)
        self.max_steps = int(t.max_steps)
        self.batch_size = int(t.batch_size)
        self.accum = int(t.grad_accum_steps)
        self.out_dir = str(t.output_dir)
        self.ckpt_dir = os.path.join(self.out_dir, "checkpoints")

        d = cfg.data
        self.cache_dir = str(d.cache_latents) if d.cache_latents else None
        if self.cache_dir:
            os.makedirs(self.cache_dir, exist_ok=True)
        self.dataset = VideoCSVDataset(
            csv=str(d.csv), root=str(d.root or ""), num_frames=int(d.num_frames), frame_stride=int(d.frame_stride),
            height=int(d.height), width=int(d.width), path_column=str(d.path_column), fps_column=str(d.fps_column),
            motion_bucket_column=str(d.motion_bucket_column), default_motion_bucket_id=int(d.default_motion_bucket_id),
            cond_aug=OmegaConf.to_container(d.cond_aug) if isinstance(d.cond_aug, DictConfig) else d.cond_aug,
            seed=self.seed, fixed_start=bool(self.cache_dir))
        self.stream = ShardStream(self.dataset, self.rank, self.world_size, seed=self.seed, shuffle=bool(d.shuffle),
                                  log=lambda msg: print(f"WARNING rank {self.rank}: {msg}", file=sys.stderr, flush=True))
        self.stream.check_usable()  # before the (slow) model build: all-bad data fails fast

        self.engine = self._build_engine()
        self.unet = self.engine.model.diffusion_model
        self.params = self._select_trainable()
        self.precision_layers = apply_training_precision(self.engine, str(t.precision))
        if t.recompute:
            for block in list(self.unet.input_blocks) + [self.unet.middle_block] + list(self.unet.output_blocks):
                block.recompute()
        self.optimizer = self._build_optimizer()
        self.scaler = self._build_loss_scaler()
        self.ema = self._build_ema()
        self.reducer = BucketAllReduce(self.world_size, float(t.grad_bucket_mb))
        self.loss_fn = self.engine.training_loss_fn()
        self.latent_channels = int(cfg.model.params.network_config.params.get("out_channels", 4))
        self.step = 0
        self.samples_seen = 0
        self.overflow_steps = 0
        self.skipped_total = 0
        self._stop = False
        self._grad_fn = ms.value_and_grad(self._scaled_loss, None, self.params)
        if resume:
            self.load(resume)

    # ---- setup ---------------------------------------------------------------------------
    def _build_engine(self):
        from ..checkpoint import build_engine, load_checkpoint_into

        engine = build_engine(self.cfg)
        ckpt = self.cfg.train.checkpoint
        if ckpt:
            if not os.path.isfile(str(ckpt)):
                raise CheckpointError(f"train.checkpoint '{ckpt}' does not exist")
            load_checkpoint_into(engine, str(ckpt))
        else:
            from ..weights import randomize
            randomize(engine, seed=self.seed)
            self.log("WARNING: train.checkpoint is not set: fine-tuning from random weights (a demo)")
        engine.set_train(False)
        engine.model.diffusion_model.set_train(True)
        return engine

    def _select_trainable(self) -> List:
        """The parameters to train: the whole UNet, its temporal layers, or LoRA adapters
        attached to its frozen layers. Everything else is frozen."""
        mode = self.cfg.train.trainable
        self.lora_settings, self.adapters = None, {}
        if mode == "lora":
            self.lora_settings = LoRASettings.from_config(OmegaConf.to_container(self.cfg.train.lora))
            self.adapters = attach_adapters(self.unet, self.lora_settings, seed=self.seed, prefix=UNET_PREFIX)
            check_diffusers_names(self.adapters, self.unet)
        adapter_ids = {id(p) for p in adapter_parameters(self.adapters)}
        unet_ids = set()
        chosen = []
        for p in self.unet.get_parameters():
            unet_ids.add(id(p))
            if mode == "lora":
                train = id(p) in adapter_ids
            else:
                train = mode == "all" or any(tag in p.name for tag in TEMPORAL_TAGS)
            p.requires_grad = train
            if train:
                chosen.append(p)
        for _, p in self.engine.parameters_and_names():
            if id(p) not in unet_ids:
                p.requires_grad = False
        if not chosen:
            raise ConfigError("no trainable parameters (train.trainable=temporal but the UNet has no temporal layers)")
        self.param_ids = {id(p) for p in chosen}
        return chosen

    def _build_optimizer(self):
        o, s = self.cfg.train.optimizer, self.cfg.train.lr_schedule
        rates = lr_schedule(self.max_steps, float(o.lr), int(s.warmup_steps), float(s.warmup_factor), str(s.name),
                            float(s.min_lr))
        name = str(o.name)
        if name == "adamw":
            return AdamW(self.params, rates, tuple(o.betas), float(o.eps), float(o.weight_decay))
        if name.startswith("mindone:"):
            return MindoneOptimizer(name.split(":", 1)[1], self.params, rates, tuple(o.betas), float(o.eps),
                                    float(o.weight_decay))
        raise ConfigError(f"train.optimizer.name must be 'adamw' or 'mindone:<name>', got '{name}'")

    def _build_loss_scaler(self):
        ls = self.cfg.train.loss_scale
        enabled = ls.enabled if ls.enabled is not None else policy.default_loss_scaling(str(self.cfg.train.precision))
        if not enabled:
            return None
        return ms.amp.DynamicLossScaler(float(ls.init), int(ls.factor), int(ls.window))

    def _build_ema(self):
        e = self.cfg.train.ema
        if not e.enabled:
            return None
        from mindone.trainers import EMA
        return EMA(self.unet, ema_decay=float(e.decay), trainable_only=True, offloading=True)

    # ---- logging -------------------------------------------------------------------------
    def log(self, msg: str):
        if self.cluster.is_main:
            self._print(msg)

    def _log_metrics(self, record: Dict):
        if not self.cluster.is_main:
            return
        os.makedirs(self.out_dir, exist_ok=True)
        with open(os.path.join(self.out_dir, "train_log.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")
        self._print("step {step}/{max_steps} loss {loss:.5f} lr {lr:.3e} step_time {step_time_s:.2f}s "
                    "samples/s {samples_per_s:.2f} loss_scale {loss_scale} grad_norm {grad_norm:.4g} "
                    "skipped_videos {skipped_videos} overflow_steps {overflow_steps}".format(**record))

    # ---- one step ------------------------------------------------------------------------
    def _scaled_loss(self, latents, noise, sigmas, concat, crossattn, vector, image_only_indicator):
        inputs = {"latents": latents, "noise": noise, "sigmas": sigmas, "concat": concat, "crossattn": crossattn,
                  "vector": vector, "image_only_indicator": image_only_indicator,
                  "num_video_frames": self._num_frames}
        loss = self.engine.loss_from_inputs(inputs).mean()
        if self.scaler is not None:
            loss = loss * self.scaler.scale_value
        return loss

    def _cache_path(self, index: int) -> str:
        return os.path.join(self.cache_dir, f"{index:08d}_{self.dataset.cache_key(index)}.npy")

    def _latents(self, samples, keys) -> Tensor:
        """Scaled latents (B*T, c, h, w) of the samples: from the cache, or encoded now."""
        t = self.dataset.num_frames
        h, w = self.dataset.height // 8, self.dataset.width // 8
        out: List[Optional[np.ndarray]] = [None] * len(samples)
        todo = []
        for i, (epoch, index) in enumerate(keys):
            if self.cache_dir and os.path.isfile(self._cache_path(index)):
                out[i] = np.load(self._cache_path(index))
            else:
                todo.append(i)
        if todo:
            frames = np.concatenate([samples[i]["frames"] for i in todo])
            noise = None
            if self.cfg.train.sample_posterior:
                noise = Tensor(np.concatenate([
                    sample_rng(self.seed, *keys[i], stream=3).standard_normal((t, self.latent_channels, h, w))
                    for i in todo]).astype(np.float32))
            z = self.engine.encode_video_latents(Tensor(frames), bool(self.cfg.train.sample_posterior), noise)
            z = z.asnumpy().reshape(len(todo), t, *z.shape[1:])
            for j, i in enumerate(todo):
                out[i] = z[j]
                if self.cache_dir:
                    path = self._cache_path(keys[i][1])
                    tmp = f"{path}.{os.getpid()}.tmp.npy"
                    np.save(tmp, z[j])
                    os.replace(tmp, path)
        return Tensor(np.concatenate(out).astype(np.float32))

    def _inputs(self, samples, keys) -> Dict:
        t = self.dataset.num_frames
        shape = (t, self.latent_channels, self.dataset.height // 8, self.dataset.width // 8)
        sigma_z, noise, keep = [], [], []
        for epoch, index in keys:
            rng = sample_rng(self.seed, epoch, index, stream=2)  # draws in a fixed order
            sigma_z.append(rng.standard_normal())
            keep.append(float(rng.random() >= float(self.cfg.train.cond_drop_prob)))
            noise.append(self.loss_fn.draw_noise(shape, rng).asnumpy())
        batch = collate([{k: v for k, v in s.items() if k != "frames"} for s in samples])
        batch["latents"] = self._latents(samples, keys)
        batch["num_video_frames"] = t
        if float(self.cfg.train.cond_drop_prob) > 0:
            batch["image_cond_keep"] = np.asarray(keep, np.float32)
        sigmas = self.loss_fn.sample_sigmas(len(keys), rand=np.asarray(sigma_z, np.float32))
        return self.engine.training_inputs(batch, sigmas=sigmas, noise=np.concatenate(noise))

    def next_batch(self):
        pairs = [self.stream.next() for _ in range(self.batch_size)]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def train_step(self) -> Dict:
        start = time.perf_counter()
        lr = self.optimizer.current_lr()
        grads = None
        loss_sum = 0.0
        for micro_index in range(self.accum):
            samples, keys = self.next_batch()
            inputs = self._inputs(samples, keys)
            self._num_frames = inputs["num_video_frames"]
            if self.lora_settings is not None and self.lora_settings.dropout > 0:
                # LoRA dropout masks: a function of (seed, step, rank, micro-batch), so a resumed
                # run draws the masks the uninterrupted one drew.
                ms.manual_seed(int(np.random.default_rng([self.seed, self.step, self.rank, micro_index])
                                   .integers(2 ** 31)))
            loss, micro = self._grad_fn(inputs["latents"], inputs["noise"], inputs["sigmas"], inputs["concat"],
                                        inputs["crossattn"], inputs["vector"], inputs["image_only_indicator"])
            loss_sum += float(loss.asnumpy())
            grads = list(micro) if grads is None else [a + b for a, b in zip(grads, micro)]
        scale = float(self.scaler.scale_value.asnumpy()) if self.scaler is not None else 1.0
        grads = self.reducer(grads)
        grads = scale_grads(grads, 1.0 / (scale * self.accum))
        grad_norm = global_norm(grads)  # identical on every rank: computed from reduced gradients
        finite = bool(np.isfinite(grad_norm))
        if self.scaler is not None:
            self.scaler.adjust(Tensor(finite))
        if finite:
            clip = self.cfg.train.clip_grad_norm
            if clip is not None and grad_norm > float(clip):
                grads = scale_grads(grads, float(clip) / (grad_norm + 1e-6))
            self.optimizer(grads)
            if self.ema is not None:
                self.ema.ema_update()
        else:
            self.overflow_steps += 1
            self.log(f"step {self.step + 1}: non-finite gradients (loss scale {scale:g}); update skipped")
        self.samples_seen += self.batch_size * self.accum * self.world_size
        # One small all-reduce for what every rank must agree on or rank 0 logs.
        summed = self.reducer.reduce_vector([loss_sum / (scale * self.accum), float(self.stream.skipped)])
        self.skipped_total = int(round(float(summed[1])))
        elapsed = time.perf_counter() - start
        return {"loss": float(summed[0]) / self.world_size, "lr": lr, "step_time_s": elapsed,
                "samples_per_s": self.batch_size * self.accum * self.world_size / max(elapsed, 1e-9),
                "loss_scale": scale if self.scaler is not None else None, "grad_norm": grad_norm,
                "skipped_videos": self.skipped_total, "overflow_steps": self.overflow_steps, "finite": finite}

    # ---- the loop ------------------------------------------------------------------------
    def request_stop(self, *_):
        self._stop = True

    def _stop_agreed(self) -> bool:
        """Whether any rank was asked to stop (SIGINT/SIGTERM); every rank gets the same answer,
        so all of them save and stop after the same step."""
        if self.world_size == 1:
            return self._stop
        self._stop = bool(self.reducer.reduce_vector([float(self._stop)])[0] > 0)
        return self._stop

    def run(self) -> str:
        """Train until max_steps, or until SIGINT/SIGTERM (then save and return 'interrupted')."""
        handlers = {}
        import threading
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                handlers[sig] = signal.signal(sig, self.request_stop)
        try:
            self.log(f"training {len(self.params)} parameter tensors "
                     f"({sum(p.size for p in self.params):,} values, trainable={self.cfg.train.trainable}) "
                     f"on {self.world_size} rank(s), global batch "
                     f"{self.batch_size * self.accum * self.world_size} videos, from step {self.step}")
            while self.step < self.max_steps:
                metrics = self.train_step()
                self.step += 1
                record = {"step": self.step, "max_steps": self.max_steps, **metrics}
                last = self.step == self.max_steps
                if self.step % int(self.cfg.train.log_every) == 0 or last or self._stop:
                    self._log_metrics(record)
                if self.on_step is not None:
                    self.on_step(self, record)
                stop = self._stop_agreed()
                if self.step % int(self.cfg.train.save_every) == 0 or last or stop:
                    self.save()
                if stop and not last:
                    self.log(f"interrupted after step {self.step}; continue with --resume")
                    return "interrupted"
            return "done"
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

    # ---- checkpoints ---------------------------------------------------------------------
    def _positions(self) -> List[Dict]:
        row = np.zeros((self.world_size, 3), np.float32)
        row[self.rank] = [self.stream.epoch, self.stream.offset, self.stream.skipped]
        table = self.reducer.reduce_vector(row.reshape(-1)).reshape(self.world_size, 3)
        return [{"epoch": int(round(e)), "offset": int(round(o)), "skipped": int(round(s))} for e, o, s in table]

    def _ema_state(self):
        if self.ema is None:
            return []
        net_ids = {id(p) for p in self.ema.net_weight}
        return [(n, p) for n, p in self.ema.parameters_and_names()
                if id(p) not in net_ids and not n.startswith("swap")]

    def save(self) -> Optional[str]:
        """Write checkpoints/step_XXXXXXX/ (rank 0): model.ckpt (every engine parameter under its
        engine name, EMA weights in place of the trained ones when EMA is on: what
        image_to_video.py loads) or, for LoRA, lora.safetensors (only the adapters, EMA weights
        when EMA is on, in diffusers/PEFT naming: what image_to_video.py applies on top of the
        base checkpoint), train_state.ckpt (trained weights, optimizer, loss scale, EMA) and
        state.json (step, data positions of every rank, counters, config)."""
        positions = self._positions()  # collective: every rank takes part
        if not self.cluster.is_main:
            return None
        name = f"step_{self.step:07d}"
        final = os.path.join(self.ckpt_dir, name)
        tmp = final + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        ema_values = {}
        if self.ema is not None:
            ema_values = {id(p): e for p, e in zip(self.ema.net_weight, self.ema.ema_weight)}
        if self.adapters:
            base = os.path.basename(str(self.cfg.train.checkpoint)) if self.cfg.train.checkpoint else "random"
            save_adapters(os.path.join(tmp, LORA_FILE), self.adapters, self.unet, self.lora_settings, base, ema_values)
        else:
            model_entries = [{"name": n, "data": ema_values.get(id(p), p)}
                             for n, p in self.engine.parameters_and_names()]
            ms.save_checkpoint(model_entries, os.path.join(tmp, MODEL_CKPT))
        state = [{"name": "param." + p.name, "data": p} for p in self.params]
        state += [{"name": "optim." + n, "data": p} for n, p in optimizer_state(self.optimizer, self.param_ids)]
        if self.scaler is not None:
            state += [{"name": "scaler.scale_value", "data": self.scaler.scale_value},
                      {"name": "scaler.counter", "data": self.scaler.counter}]
        state += [{"name": "ema." + n, "data": p} for n, p in self._ema_state()]
        ms.save_checkpoint(state, os.path.join(tmp, TRAIN_STATE_CKPT))
        meta = {"step": self.step, "max_steps": self.max_steps, "world_size": self.world_size,
                "batch_size": self.batch_size, "grad_accum_steps": self.accum, "seed": self.seed,
                "samples_seen": self.samples_seen, "overflow_steps": self.overflow_steps,
                "skipped_videos": sum(p["skipped"] for p in positions), "data_positions": positions,
                "trainable": str(self.cfg.train.trainable), "ema": self.ema is not None,
                "lora": self.lora_settings.as_dict() if self.lora_settings else None,
                "config": OmegaConf.to_container(self.cfg, resolve=True)}
        with open(os.path.join(tmp, STATE_JSON), "w") as f:
            json.dump(meta, f, indent=1)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        latest_tmp = os.path.join(self.ckpt_dir, "latest.txt.tmp")
        with open(latest_tmp, "w") as f:
            f.write(name + "\n")
        os.replace(latest_tmp, os.path.join(self.ckpt_dir, "latest.txt"))
        self.log(f"saved {final}")
        return final

    @staticmethod
    def find_checkpoint(resume: str, out_dir: str) -> Optional[str]:
        """`resume`: a step folder, or 'auto'/'latest' for the newest one under out_dir."""
        if resume in ("auto", "latest"):
            latest = os.path.join(out_dir, "checkpoints", "latest.txt")
            if not os.path.isfile(latest):
                return None
            with open(latest) as f:
                return os.path.join(out_dir, "checkpoints", f.read().strip())
        return resume

    def load(self, resume: str):
        folder = self.find_checkpoint(resume, self.out_dir)
        if folder is None:
            self.log(f"--resume: no checkpoint under {self.ckpt_dir}; starting from step 0")
            return
        meta_path, state_path = os.path.join(folder, STATE_JSON), os.path.join(folder, TRAIN_STATE_CKPT)
        if not (os.path.isfile(meta_path) and os.path.isfile(state_path)):
            raise CheckpointError(f"--resume: '{folder}' is not a training checkpoint (needs {STATE_JSON} and "
                                  f"{TRAIN_STATE_CKPT})")
        with open(meta_path) as f:
            meta = json.load(f)
        for key, mine in (("world_size", self.world_size), ("batch_size", self.batch_size),
                          ("grad_accum_steps", self.accum), ("seed", self.seed),
                          ("trainable", str(self.cfg.train.trainable)), ("ema", self.ema is not None),
                          ("lora", self.lora_settings.as_dict() if self.lora_settings else None)):
            if meta.get(key) != mine:
                raise CheckpointError(f"--resume: the checkpoint was written with {key}={meta.get(key)}, this run "
                                      f"has {key}={mine}; an exact continuation needs the same")
        if meta["max_steps"] != self.max_steps:
            self.log(f"WARNING: max_steps changed from {meta['max_steps']} to {self.max_steps}: "
                     f"the learning-rate schedule changes with it")
        values = ms.load_checkpoint(state_path)
        targets = {"param." + p.name: p for p in self.params}
        targets.update({"optim." + n: p for n, p in optimizer_state(self.optimizer, self.param_ids)})
        if self.scaler is not None:
            targets.update({"scaler.scale_value": self.scaler.scale_value, "scaler.counter": self.scaler.counter})
        targets.update({"ema." + n: p for n, p in self._ema_state()})
        missing = sorted(set(targets) - set(values))
        if missing:
            raise CheckpointError(f"--resume: {state_path} lacks {len(missing)} entries, e.g. {missing[:3]}")
        for name, param in targets.items():
            value = values[name]
            if tuple(value.shape) != tuple(param.shape):
                raise CheckpointError(f"--resume: {name} has shape {tuple(value.shape)}, expected {tuple(param.shape)}")
            param.set_data(Tensor(value.asnumpy(), param.dtype))
        position = meta["data_positions"][self.rank]
        self.stream.epoch, self.stream.offset = position["epoch"], position["offset"]
        self.stream.skipped = position["skipped"]
        self.step = int(meta["step"])
        self.samples_seen = int(meta["samples_seen"])
        self.overflow_steps = int(meta["overflow_steps"])
        self.log(f"resumed from {folder} at step {self.step}")


# Training runs in PyNative mode (no graph compilation of the backward pass); see README.
TRAINING_MODE = 1
