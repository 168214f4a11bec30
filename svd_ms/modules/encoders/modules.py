"""Conditioning embedders and the conditioner that combines them (sgm.modules.encoders.modules).

Embedders run once per video, on the host side of the sampling loop: each has an `embed(value)`
method that prepares its input and calls its MindSpore cells (which graph mode compiles).
"""
from typing import Dict, List, Optional

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from ...util import instantiate_from_config
from ..diffusionmodules.util import timestep_embedding
from .open_clip import OpenCLIPVisionModel, clip_preprocess


def _as_numpy(x) -> np.ndarray:
    return x.asnumpy() if isinstance(x, Tensor) else np.asarray(x)


def _as_tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(np.asarray(x, np.float32))


class AbstractEmbModel(nn.Cell):
    def __init__(self):
        super().__init__()
        self.is_trainable = False
        self.ucg_rate = 0.0
        self.input_key = None

    def embed(self, value):
        raise NotImplementedError


class FrozenOpenCLIPImageEmbedder(AbstractEmbModel):
    """Projected CLS embedding of the OpenCLIP vision tower. `arch` is an open_clip name or a
    dict {embed_dim, image_size, patch_size, width, layers, head_width}. Weights come from the
    checkpoint; `version` (a pretrained tag) is only recorded."""

    def __init__(self, arch="ViT-H-14", version="laion2b_s32b_b79k", device="cuda", max_length=77, freeze=True,
                 antialias=True, ucg_rate=0.0, unsqueeze_dim=False, repeat_to_max_len=False, num_image_crops=0,
                 output_tokens=False, init_device=None, attention: str = "auto"):
        super().__init__()
        if num_image_crops or output_tokens or repeat_to_max_len:
            raise ValueError("FrozenOpenCLIPImageEmbedder: image crops, token outputs and repeat_to_max_len "
                             "are not supported")
        if not antialias:
            raise ValueError("FrozenOpenCLIPImageEmbedder: only antialias=True is supported")
        self.model = OpenCLIPVisionModel(arch, attention=attention)
        self.version = version
        self.ucg_rate = ucg_rate
        self.unsqueeze_dim = unsqueeze_dim

    def preprocess(self, image) -> np.ndarray:
        return clip_preprocess(_as_numpy(image), self.model.arch["image_size"])

    def embed(self, image):
        pixels = Tensor(self.preprocess(image))
        z = ops.cast(self.model.visual(pixels), ms.float32)
        if self.unsqueeze_dim:
            z = z[:, None, :]
        return z


class FrozenOpenCLIPImagePredictionEmbedder(AbstractEmbModel):
    def __init__(self, open_clip_embedding_config: Dict, n_cond_frames: int, n_copies: int):
        super().__init__()
        self.n_cond_frames = n_cond_frames
        self.n_copies = n_copies
        self.open_clip = instantiate_from_config(open_clip_embedding_config)

    def embed(self, video):
        z = self.open_clip.embed(video)
        bt, d = z.shape
        z = z.reshape(bt // self.n_cond_frames, self.n_cond_frames, d)
        return ops.repeat_interleave(z, self.n_copies, 0)


class ConcatTimestepEmbedderND(AbstractEmbModel):
    """Sinusoidal embedding of each scalar conditioning value, concatenated over values."""

    def __init__(self, outdim: int):
        super().__init__()
        self.outdim = outdim

    def embed(self, x):
        x = _as_tensor(x).astype(ms.float32)
        if x.ndim == 1:
            x = x[:, None]
        b, dims = x.shape
        emb = timestep_embedding(x.reshape(-1), self.outdim)
        return emb.reshape(b, dims * self.outdim)


class VideoPredictionEmbedderWithEncoder(AbstractEmbModel):
    """Encodes conditioning frames with the VAE into latents (concatenated to the UNet input, or
    SV4D 2.0's view and motion conditioning).

    With a `sigma_sampler_config` (SV4D 2.0) the frames get noise times the sampled sigma first
    (ZeroSampler: 1e-5, so a small draw is made even though it barely matters), and with a
    `sigma_cond_config` the embedding of that sigma is returned too, one row per frame."""

    def __init__(self, n_cond_frames: int, n_copies: int, encoder_config: Dict, sigma_sampler_config=None,
                 sigma_cond_config=None, is_ae: bool = False, scale_factor: float = 1.0,
                 disable_encoder_autocast: bool = False, en_and_decode_n_samples_a_time: Optional[int] = None):
        super().__init__()
        self.n_cond_frames = n_cond_frames
        self.n_copies = n_copies
        self.encoder = instantiate_from_config(encoder_config)
        self.sigma_sampler = instantiate_from_config(sigma_sampler_config) if sigma_sampler_config else None
        self.sigma_cond = instantiate_from_config(sigma_cond_config) if sigma_cond_config else None
        self.is_ae = is_ae
        self.scale_factor = scale_factor
        self.en_and_decode_n_samples_a_time = en_and_decode_n_samples_a_time

    @property
    def draws_noise(self) -> bool:
        return self.sigma_sampler is not None

    def embed(self, video, noise=None):
        """`noise`: with a sigma sampler, the frame noise (an array shaped like `video`) or a
        numpy Generator to draw it from (None: fresh entropy)."""
        video = ops.cast(_as_tensor(video), ms.float32)
        n = video.shape[0]
        sigma_cond = None
        if self.sigma_sampler is not None:
            b = n // self.n_cond_frames
            sigmas = self.sigma_sampler(b)
            if self.sigma_cond is not None:
                repeats = self.n_copies if self.n_cond_frames == 1 else self.n_cond_frames
                sigma_cond = ops.repeat_interleave(self.sigma_cond.embed(sigmas), repeats, 0)
            if noise is None or isinstance(noise, np.random.Generator):
                rng = noise if noise is not None else np.random.default_rng()
                noise = rng.standard_normal(tuple(video.shape)).astype(np.float32)
            noise = _as_tensor(noise).astype(ms.float32)
            if tuple(noise.shape) != tuple(video.shape):
                raise ValueError(f"frame noise of shape {tuple(noise.shape)} for frames {tuple(video.shape)}")
            sigmas = ops.repeat_interleave(sigmas, self.n_cond_frames, 0).reshape(-1, 1, 1, 1)
            video = video + noise * sigmas
        per_round = self.en_and_decode_n_samples_a_time or n
        outs = []
        for start in range(0, n, per_round):
            chunk = video[start:start + per_round]
            outs.append(self.encoder.encode(chunk) if self.is_ae else self.encoder(chunk))
        z = ops.cat(outs, axis=0) * self.scale_factor
        if self.n_cond_frames == 1:
            _, c, h, w = z.shape
            z = z.reshape(-1, self.n_cond_frames * c, h, w)
            z = ops.repeat_interleave(z, self.n_copies, 0)
        return z if sigma_cond is None else (z, sigma_cond)


class GeneralConditioner(nn.Cell):
    OUTPUT_DIM2KEYS = {2: "vector", 3: "crossattn", 4: "concat"}
    KEY2CATDIM = {"vector": 1, "crossattn": 2, "concat": 1}

    def __init__(self, emb_models: List[Dict]):
        super().__init__()
        embedders = []
        for config in emb_models:
            embedder = instantiate_from_config(config)
            embedder.is_trainable = bool(config.get("is_trainable", False))
            embedder.ucg_rate = float(config.get("ucg_rate", 0.0))
            if "input_key" not in config:
                raise ValueError(f"embedder {config['target']} needs an input_key")
            embedder.input_key = config["input_key"]
            if not embedder.is_trainable:
                for p in embedder.get_parameters():
                    p.requires_grad = False
            embedders.append(embedder)
        self.embedders = nn.CellList(embedders)

    @property
    def input_keys(self) -> List[str]:
        return [e.input_key for e in self.embedders]

    # SV4D 2.0's view and motion latents keep their own keys instead of joining `concat`.
    OWN_KEYS = ("cond_view", "cond_motion")

    def _collect(self, out: Dict, embedder, emb, zero: bool) -> None:
        for part in emb if isinstance(emb, tuple) else (emb,):
            kind = embedder.input_key if embedder.input_key in self.OWN_KEYS else self.OUTPUT_DIM2KEYS[part.ndim]
            if zero:
                part = ops.zeros_like(part)
            out[kind] = ops.cat((out[kind], part), self.KEY2CATDIM.get(kind, 0)) if kind in out else part

    @staticmethod
    def _embed(embedder, value, noise):
        if noise is not None and getattr(embedder, "draws_noise", False):
            return embedder.embed(value, noise.get(embedder.input_key))
        return embedder.embed(value)

    def embed_batch(self, batch: Dict, force_zero_embeddings: Optional[List[str]] = None,
                    noise: Optional[Dict] = None) -> Dict[str, Tensor]:
        force_zero_embeddings = force_zero_embeddings or []
        output: Dict[str, Tensor] = {}
        for embedder in self.embedders:
            emb = self._embed(embedder, batch[embedder.input_key], noise)
            self._collect(output, embedder, emb, embedder.input_key in force_zero_embeddings)
        return output

    def get_unconditional_conditioning(self, batch_c: Dict, batch_uc: Optional[Dict] = None,
                                       force_uc_zero_embeddings: Optional[List[str]] = None,
                                       force_cond_zero_embeddings: Optional[List[str]] = None,
                                       noise: Optional[Dict] = None):
        """`noise`: {input_key: frame noise or Generator} for embedders that draw noise (the
        conditional pass; a zeroed unconditional embedding does not depend on its draw)."""
        batch_uc = batch_c if batch_uc is None else batch_uc
        zero_c = set(force_cond_zero_embeddings or [])
        zero_uc = set(force_uc_zero_embeddings or [])
        c, uc = {}, {}
        for embedder in self.embedders:
            key = embedder.input_key
            emb_c = self._embed(embedder, batch_c[key], noise)
            # Upstream embeds the unconditional batch a second time; when it holds the very same
            # input (or the result is zeroed anyway), the first pass serves it.
            same = batch_uc[key] is batch_c[key] or key in zero_uc
            emb_uc = emb_c if same else self._embed(embedder, batch_uc[key], None)
            self._collect(c, embedder, emb_c, key in zero_c)
            self._collect(uc, embedder, emb_uc, key in zero_uc)
        return c, uc
