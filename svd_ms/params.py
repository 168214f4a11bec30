"""The parameters of an image-to-video run: one object that validates itself, shared by the
Python API, the command line (`--SVD.*`), the web page and the sidecar of every video.

`SVDParams` is the one object users see (the CLI's `--SVD.*` are its fields). It is made of two
views: `ModelSettings` (what building a pipeline depends on: config, weights, precision; its
files are checked when made) and `SamplingSettings` (what may change from call to call). A copy
that changes sampling fields only (`replace`) keeps the model view as it is, so per-call changes
never re-read the checkpoint or the config.
"""
import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Union

from . import policy
from .errors import ParamError, SVDError

# What needs a new model (rebuilding the pipeline); everything else can change per call.
MODEL_FIELDS = ("config", "checkpoint", "amp_level", "attention", "ff_chunk_size", "lora", "unet_weights")
SAMPLING_FIELDS = ("num_frames", "fps", "motion_bucket_id", "noise_aug_strength", "decode_chunk_size", "num_steps",
                   "sampler", "sampler_params", "guider", "min_guidance_scale", "max_guidance_scale", "num_clips",
                   "strength", "cache", "cache_interval", "cache_branch")
SAMPLING_OPTION_FIELDS = ("sampler", "sampler_params", "guider", "min_guidance_scale", "max_guidance_scale")
NO_CHECKPOINT = ("", "random", "none", "null")
CACHE_MODES = ("none", "deepcache")  # feature caching between UNet evaluations (modules/diffusionmodules/deepcache.py)
# A plain EDM sampler with a per-frame guider: sampling options are validated against it.
_REFERENCE_SAMPLER = {
    "target": "sgm.modules.diffusionmodules.sampling.EulerEDMSampler",
    "params": {"discretization_config": {"target": "sgm.modules.diffusionmodules.discretizer.EDMDiscretization"},
               "guider_config": {"target": "sgm.modules.diffusionmodules.guiders.LinearPredictionGuider",
                                 "params": {"min_scale": 1.0, "max_scale": 2.5, "num_frames": 14}}},
}
# More steps than the 1000 noise levels the models were trained on gain nothing.
MAX_STEPS = 1000
# A chain is sampled clip after clip; a thousand clips is hours of video and days of compute.
MAX_CLIPS = 1000
# Video-to-video without --SVD.strength: keeps the input's layout, redoes most of the detail.
DEFAULT_STRENGTH = 0.7


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_int(obj, name: str, low: int, high: Optional[int], optional: bool = False):
    value = getattr(obj, name)
    if value is None and optional:
        return
    if not _is_int(value) or value < low or (high is not None and value > high):
        bounds = f"an integer between {low} and {high}" if high is not None else f"an integer >= {low}"
        raise ParamError(name, f"{name}={value!r} is out of range: it must be {bounds}")


def _check_choice(obj, name: str, choices):
    if getattr(obj, name) not in choices:
        raise ParamError(name, f"{name}={getattr(obj, name)!r} is not one of {', '.join(choices)}")


@dataclass(frozen=True)
class ModelSettings:
    """The model fields of SVDParams (see there): checked, files included, once when made."""

    config: Optional[Union[str, Dict]]
    checkpoint: Optional[str]
    amp_level: str
    attention: str
    ff_chunk_size: Optional[int]
    lora: Optional[List]
    unet_weights: Optional[str]

    def __post_init__(self):
        if isinstance(self.checkpoint, str) and self.checkpoint.strip().lower() in NO_CHECKPOINT:
            object.__setattr__(self, "checkpoint", None)
        _check_int(self, "ff_chunk_size", 1, None, optional=True)
        if isinstance(self.amp_level, str) and self.amp_level.lower() in ("bf16", "bfloat16"):
            raise ParamError("amp_level", f"amp_level={self.amp_level!r}: {policy.bf16_inference_refusal()}")
        _check_choice(self, "amp_level", policy.AMP_LEVELS)
        _check_choice(self, "attention", policy.ATTENTION_CHOICES)
        self._check_lora()
        self._check_files()

    def _check_lora(self):
        if self.lora is None:
            return
        if isinstance(self.lora, (str, os.PathLike, tuple)):
            object.__setattr__(self, "lora", [self.lora])
        from .lora import parse_lora_spec
        for spec in self.lora:
            path, scale = parse_lora_spec(spec) if isinstance(spec, (str, os.PathLike)) else spec
            if not os.path.isfile(path):
                raise ParamError("lora", f"lora {str(path)!r} does not exist")
            if not _is_number(scale) or scale != scale or abs(scale) == float("inf"):
                raise ParamError("lora", f"lora {str(path)!r}: scale must be a finite number, got {scale!r}")

    def _check_files(self):
        if self.config == "" or (self.config is None and self.checkpoint is None):
            raise ParamError("config", "config is required: a model config such as configs/svd.yaml "
                             "(or configs/demo/tiny_random.yaml for the untrained demo), or a diffusers folder "
                             "as checkpoint")
        if isinstance(self.config, str):
            if not os.path.isfile(self.config):
                raise ParamError("config", f"config {self.config!r} does not exist")
        if self.unet_weights is not None and not os.path.exists(self.unet_weights):
            raise ParamError("unet_weights", f"unet_weights {self.unet_weights!r} does not exist")
        if self.checkpoint is not None:
            from .checkpoint import engine_checkpoint_format
            from .hub import resolve_checkpoint
            try:
                engine_checkpoint_format(resolve_checkpoint(self.checkpoint))
            except SVDError as exc:
                raise ParamError("checkpoint", str(exc)) from None


@dataclass(frozen=True)
class SamplingSettings:
    """The per-call fields of SVDParams (see there): checked by value, no file is read."""

    num_frames: Optional[int]
    fps: int
    motion_bucket_id: int
    noise_aug_strength: Optional[float]
    decode_chunk_size: Optional[int]
    num_steps: Optional[int]
    sampler: Optional[str]
    sampler_params: Optional[Dict[str, float]]
    guider: Optional[str]
    min_guidance_scale: Optional[float]
    max_guidance_scale: Optional[float]
    num_clips: int
    strength: Optional[float]
    cache: str
    cache_interval: int
    cache_branch: int

    def __post_init__(self):
        for name in ("num_frames", "decode_chunk_size"):
            _check_int(self, name, 1, None, optional=True)
        _check_int(self, "num_steps", 1, MAX_STEPS, optional=True)
        _check_int(self, "fps", 1, 60)
        _check_int(self, "num_clips", 1, MAX_CLIPS)
        if self.strength is not None and (not _is_number(self.strength) or not 0 < self.strength <= 1):
            raise ParamError("strength", f"strength={self.strength!r} is out of range: it must be a number in (0, 1]")
        _check_int(self, "motion_bucket_id", 0, 255)
        _check_choice(self, "cache", CACHE_MODES)
        _check_int(self, "cache_interval", 1, MAX_STEPS)
        _check_int(self, "cache_branch", 0, None)  # its top depends on the UNet: checked when it runs
        if self.noise_aug_strength is not None and (not _is_number(self.noise_aug_strength)
                                                    or not self.noise_aug_strength >= 0):
            raise ParamError("noise_aug_strength", f"noise_aug_strength={self.noise_aug_strength!r} is out of "
                             f"range: it must be a number >= 0")
        self._check_sampling_options()

    def sampling_options(self) -> Dict[str, Any]:
        """The sampler and guidance options that were given (see svd_ms.sampling_options)."""
        return {f: getattr(self, f) for f in SAMPLING_OPTION_FIELDS if getattr(self, f) is not None}

    def _check_sampling_options(self):
        options = self.sampling_options()
        if not options:
            return
        from .errors import InputError
        from .sampling_options import apply_sampling_options
        try:  # names and values; what depends on the model's own sampler is checked when it is built
            apply_sampling_options(_REFERENCE_SAMPLER, **options)
        except InputError as exc:
            field = next((f for f in SAMPLING_OPTION_FIELDS if f in str(exc)), "sampler")
            message = str(exc) if str(exc).startswith(field) else f"{field}: {exc}"
            raise ParamError(field, message) from None


@dataclass
class SVDParams:
    """Model and sampling settings.

    Args:
        config: model config YAML: one of configs/*.yaml, an upstream sgm config, or
            configs/demo/tiny_random.yaml for the untrained demo. Unset with a diffusers folder
            (or Hugging Face model id) as checkpoint: derived from the folder's JSON files.
        checkpoint: weights: a MindSpore .ckpt, an upstream .safetensors, a diffusers folder
            (unet/, vae/, image_encoder/; its fp16 variant is read for float16 runs) or the id of
            a Hugging Face model in the local cache (e.g. stabilityai/stable-video-diffusion-img2vid-xt;
            never downloaded). Torch .pt/.bin/.ckpt files must first go through svd_tools/convert.py.
            Unset (or 'random'): random weights, an UNTRAINED model, only useful to try the pipeline.
        num_frames: frames to generate, at least 1 (unset: the config's, 14 for SVD, 25 for SVD-XT).
        fps: frames per second, 1 to 60: conditions the model (upstream fps_id = fps - 1) and is
            the playback rate of the written video.
        motion_bucket_id: amount of motion, 0 to 255; higher means more motion.
        noise_aug_strength: noise added to the conditioning image (upstream cond_aug), >= 0; raise
            it for images far from the training size (unset: 0.02, 1e-5 for SV3D).
        decode_chunk_size: frames the VAE decodes at once, at least 1; lower uses less memory
            (unset: all frames at once). The temporal decoder only mixes frames within a chunk.
        num_steps: sampling steps, 1 to 1000 (unset: the config's, 25 for the released models).
        amp_level: mixed precision: O0 float32 everywhere, O2 float16 with float32 islands, auto the
            device's default (O2 on Ascend, O0 elsewhere; svd_ms.policy.default_amp_level).
        attention: attention implementation: auto (flash on Ascend, math elsewhere), math or flash.
        ff_chunk_size: run feed-forward layers in chunks of this many tokens to save memory
            (unset: no chunking).
        sampler: the sampler by name: euler, euler_ancestral, heun, dpmpp_2s_ancestral, dpmpp_2m,
            lms, or lcm (AnimateLCM-SVD's consistency sampler: its sigma grid, 4 steps and guidance
            1.0 to 1.2 unless given; use with AnimateLCM weights, see unet_weights). Unset: the
            config's sampler.
        sampler_params: the sampler's own parameters, e.g. {s_churn: 1.0, s_noise: 1.003} (euler,
            heun), {eta: 1.0, s_noise: 1.0} (ancestral), {order: 4} (lms).
        guider: linear, triangle, trapezoid, vanilla or none (unset: the config's).
        min_guidance_scale: guidance on the first frame (linear) or at the edges (triangle,
            trapezoid); unset: the config's.
        max_guidance_scale: guidance on the last frame / the peak; the one scale of vanilla.
            With guidance 1 on every frame, or guider none, each step runs the UNet once.
        unet_weights: a UNet-only file or folder in the diffusers layout (e.g. AnimateLCM-SVD-xt's
            unet) loaded over the checkpoint's UNet.
        lora: LoRA adapter files merged into the UNet once at load, each 'PATH' or 'PATH:SCALE'
            (scale 1 by default, 0 = the base model exactly); several allowed. PEFT/diffusers and
            kohya namings are read.
        num_clips: clips chained into one longer video, at least 1: clip k+1 starts from the last
            frame of clip k, so the video has num_clips * (num_frames - 1) + 1 frames.
        strength: video-to-video only: how much of the sampling schedule is redone over the input
            video, in (0, 1]; small stays close to the input, 1 starts from pure noise (unset: 0.7).
        cache: none, or deepcache: reuse the UNet's deep features between evaluations (DeepCache,
            Ma et al. 2024); a faster, slightly different video.
        cache_interval: DeepCache: the whole UNet runs every cache_interval-th evaluation, the
            shallow branch in between (1 = every evaluation in full).
        cache_branch: DeepCache: the skip branch that stays live, 0 (shallowest, fastest) up to the
            UNet's input blocks minus 2 (10 for the released SVD UNets).
    """

    config: Optional[str] = None
    checkpoint: Optional[str] = None
    num_frames: Optional[int] = None
    fps: int = 7
    motion_bucket_id: int = 127
    noise_aug_strength: Optional[float] = None
    decode_chunk_size: Optional[int] = None
    num_steps: Optional[int] = None
    amp_level: str = "auto"
    attention: str = "auto"
    ff_chunk_size: Optional[int] = None
    sampler: Optional[str] = None
    sampler_params: Optional[Dict[str, float]] = None
    guider: Optional[str] = None
    min_guidance_scale: Optional[float] = None
    max_guidance_scale: Optional[float] = None
    unet_weights: Optional[str] = None
    lora: Optional[Union[str, List[str]]] = None
    num_clips: int = 1
    strength: Optional[float] = None
    cache: str = "none"
    cache_interval: int = 3
    cache_branch: int = 0

    def __post_init__(self):
        # Values first, then files: a typo in a number is reported without touching the disk.
        sampling = SamplingSettings(**{f: getattr(self, f) for f in SAMPLING_FIELDS})
        model = ModelSettings(**{f: getattr(self, f) for f in MODEL_FIELDS})
        self._adopt(model, sampling)

    def _adopt(self, model: ModelSettings, sampling: SamplingSettings) -> None:
        for view in (model, sampling):
            for f in dataclasses.fields(view):
                setattr(self, f.name, getattr(view, f.name))  # normalised values (checkpoint, lora)
        self._model_settings, self._sampling_settings = model, sampling

    @classmethod
    def from_settings(cls, model: ModelSettings, sampling: SamplingSettings) -> "SVDParams":
        """The SVDParams made of two already-checked views (nothing is checked again)."""
        params = cls.__new__(cls)
        params._adopt(model, sampling)
        return params

    @property
    def model_settings(self) -> ModelSettings:
        return self._model_settings

    @property
    def sampling_settings(self) -> SamplingSettings:
        return self._sampling_settings

    def sampling_options(self) -> Dict[str, Any]:
        """The sampler and guidance options that were given (see svd_ms.sampling_options)."""
        return self._sampling_settings.sampling_options()

    # ---- derived copies ---------------------------------------------------------------------
    def replace(self, **changes) -> "SVDParams":
        """A validated copy with `changes` applied. Changes to sampling fields only are checked by
        value and keep this object's model settings: no file is read again."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ParamError(sorted(unknown)[0], f"unknown parameter(s): {', '.join(sorted(unknown))}")
        if set(changes) & set(MODEL_FIELDS):
            return dataclasses.replace(self, **changes)
        return SVDParams.from_settings(self._model_settings, dataclasses.replace(self._sampling_settings, **changes))

    def same_model(self, other: "SVDParams") -> bool:
        return all(getattr(self, f) == getattr(other, f) for f in MODEL_FIELDS)

    def to_dict(self) -> Dict[str, Any]:
        """Every field as the value it has, JSON-able (dicts and lists included), such that
        `SVDParams(**p.to_dict()) == p`: records and resume checks compare these values."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(value):
    """`value` as plain JSON types: dicts with str keys, lists, paths as str, numpy as Python."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return value
