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
import signal
import sys
import time
from typing import Dict, List, Optional

import mindspore as ms
import numpy as np
from mindspore import Tensor
from omegaconf import DictConfig, OmegaConf

from .. import policy
from ..errors import CheckpointError, ConfigError
from ..precision import apply_training_precision
from ..runtime import Cluster
from ..lora import LoRASettings, adapter_parameters, attach_adapters, check_diffusers_names
from . import checkpointing
from .config import DEFAULTS, load_train_config
from .data import ShardStream, VideoCSVDataset, collate, sample_rng
from .optim import AdamW, BucketAllReduce, MindoneOptimizer, global_norm, lr_schedule, scale_grads

TEMPORAL_TAGS = ("time_stack", "time_mixer", "time_pos_embed")
UNET_PREFIX = "model.diffusion_model."
__all__ = ["Trainer", "TRAINING_MODE", "load_train_config", "DEFAULTS"]  # the config names: for older imports

# ---------------------------------------------------------------------------------- setup

def build_dataset(d, seed: int, fixed_start: bool) -> VideoCSVDataset:
    """The videos of the `data:` section."""
    return VideoCSVDataset(
        csv=str(d.csv), root=str(d.root or ""), num_frames=int(d.num_frames), frame_stride=int(d.frame_stride),
        height=int(d.height), width=int(d.width), path_column=str(d.path_column), fps_column=str(d.fps_column),
        motion_bucket_column=str(d.motion_bucket_column), default_motion_bucket_id=int(d.default_motion_bucket_id),
        cond_aug=OmegaConf.to_container(d.cond_aug) if isinstance(d.cond_aug, DictConfig) else d.cond_aug,
        seed=seed, fixed_start=fixed_start)


def build_training_engine(cfg, seed: int, log):
    """The engine with train.checkpoint's weights (random ones for a demo), only its UNet in train mode."""
    from ..checkpoint import build_engine, load_checkpoint_into

    engine = build_engine(cfg)
    ckpt = cfg.train.checkpoint
    if ckpt:
        if not os.path.isfile(str(ckpt)):
            raise CheckpointError(f"train.checkpoint '{ckpt}' does not exist")
        load_checkpoint_into(engine, str(ckpt))
    else:
        from ..weights import randomize
        randomize(engine, seed=seed)
        log("WARNING: train.checkpoint is not set: fine-tuning from random weights (a demo)")
    engine.set_train(False)
    engine.model.diffusion_model.set_train(True)
    return engine


def select_trainable(t, engine, seed: int):
    """(parameters to train, LoRA settings or None, adapters): the whole UNet, its temporal
    layers, or LoRA adapters attached to its frozen layers. Everything else is frozen."""
    unet = engine.model.diffusion_model
    mode = t.trainable
    lora_settings, adapters = None, {}
    if mode == "lora":
        lora_settings = LoRASettings.from_config(OmegaConf.to_container(t.lora))
        adapters = attach_adapters(unet, lora_settings, seed=seed, prefix=UNET_PREFIX)
        check_diffusers_names(adapters, unet)
    adapter_ids = {id(p) for p in adapter_parameters(adapters)}
    unet_ids = set()
    chosen = []
    for p in unet.get_parameters():
        unet_ids.add(id(p))
        if mode == "lora":
            train = id(p) in adapter_ids
        else:
            train = mode == "all" or any(tag in p.name for tag in TEMPORAL_TAGS)
        p.requires_grad = train
        if train:
            chosen.append(p)
    for _, p in engine.parameters_and_names():
        if id(p) not in unet_ids:
            p.requires_grad = False
    if not chosen:
        raise ConfigError("no trainable parameters (train.trainable=temporal but the UNet has no temporal layers)")
    return chosen, lora_settings, adapters


def build_optimizer(t, params, max_steps: int):
    o, s = t.optimizer, t.lr_schedule
    rates = lr_schedule(max_steps, float(o.lr), int(s.warmup_steps), float(s.warmup_factor), str(s.name),
                        float(s.min_lr))
    name = str(o.name)
    if name == "adamw":
        return AdamW(params, rates, tuple(o.betas), float(o.eps), float(o.weight_decay))
    if name.startswith("mindone:"):
        return MindoneOptimizer(name.split(":", 1)[1], params, rates, tuple(o.betas), float(o.eps),
                                float(o.weight_decay))
    raise ConfigError(f"train.optimizer.name must be 'adamw' or 'mindone:<name>', got '{name}'")


def build_loss_scaler(t):
    ls = t.loss_scale
    enabled = ls.enabled if ls.enabled is not None else policy.default_loss_scaling(str(t.precision))
    if not enabled:
        return None
    return ms.amp.DynamicLossScaler(float(ls.init), int(ls.factor), int(ls.window))


def build_ema(t, unet):
    if not t.ema.enabled:
        return None
    from mindone.trainers import EMA
    return EMA(unet, ema_decay=float(t.ema.decay), trainable_only=True, offloading=True)


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

        self.cache_dir = str(cfg.data.cache_latents) if cfg.data.cache_latents else None
        if self.cache_dir:
            os.makedirs(self.cache_dir, exist_ok=True)
        self.dataset = build_dataset(cfg.data, self.seed, fixed_start=bool(self.cache_dir))
        self.stream = ShardStream(self.dataset, self.rank, self.world_size, seed=self.seed,
                                  shuffle=bool(cfg.data.shuffle),
                                  log=lambda msg: print(f"WARNING rank {self.rank}: {msg}", file=sys.stderr, flush=True))
        self.stream.check_usable()  # before the (slow) model build: all-bad data fails fast

        self.engine = build_training_engine(cfg, self.seed, self.log)
        self.unet = self.engine.model.diffusion_model
        self.params, self.lora_settings, self.adapters = select_trainable(cfg.train, self.engine, self.seed)
        self.param_ids = {id(p) for p in self.params}
        self.precision_layers = apply_training_precision(self.engine, str(t.precision))
        if t.recompute:
            for block in list(self.unet.input_blocks) + [self.unet.middle_block] + list(self.unet.output_blocks):
                block.recompute()
        self.optimizer = build_optimizer(t, self.params, self.max_steps)
        self.scaler = build_loss_scaler(t)
        self.ema = build_ema(t, self.unet)
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

    # ---- checkpoints (svd_ms/training/checkpointing.py) -----------------------------------
    def save(self) -> Optional[str]:
        return checkpointing.save_checkpoint(self)

    def load(self, resume: str):
        checkpointing.resume_from(self, resume)


# Training runs in PyNative mode (no graph compilation of the backward pass); see README.
TRAINING_MODE = 1
