"""Make tests/deepcache/reference.npz with DeepCache's own SVD pipeline, unchanged.

DeepCache (Ma et al., CVPR 2024; github.com/horseee/DeepCache) ships its SVD pipeline in the PyPI
package `deepcache==0.1.1` (module `DeepCache.svd`, files dated 2023-12-21). That code imports
names diffusers removed later, so it cannot run beside the test extras; this script runs it once,
in its own environment, and the arrays it writes are kept in the repository:

    python3 -m venv /tmp/dcvenv
    /tmp/dcvenv/bin/pip install torch==2.13.0 diffusers==0.24.0 transformers==4.36.2 \
        huggingface_hub==0.20.3 accelerate==0.25.0 "numpy<2" safetensors pillow
    /tmp/dcvenv/bin/pip install --no-deps deepcache==0.1.1
    /tmp/dcvenv/bin/python tests/deepcache/make_reference.py --shared ../shared/reference --out tests/deepcache

The model: the shared tiny diffusers SVD (`tiny_animatelcm_svd`: its VAE, image encoder, feature
extractor and ordinary SVD scheduler) with a new random UNet of the same layout but
`layers_per_block=2`, the value of the released SVD models. DeepCache's branch arithmetic
(`up_cache_module_idx = 1 - down_cache_module_idx`, and module 2 for a down block's downsampler)
holds only for two resnets per down block; on the shared UNet (one per block) it pairs a cached
feature with the wrong skip connection. The UNet's values are random, non-zero and fp16-exact,
written as `tiny_deepcache_unet/` (a diffusers `unet/` folder).

Guidance is 1 (the conditional batch alone). With two videos in one UNet batch (guided runs put the
unconditional and the conditional copy side by side), diffusers 0.24's TransformerSpatioTemporalModel,
which DeepCache's UNet uses, hands the temporal blocks the context of the wrong video for some pixels
(it broadcasts the per-video context in (pixel, video) order and reads it back in (video, pixel)
order); later diffusers and sgm do not, and this port follows sgm. Measured on this tiny UNet: stock
diffusers 0.24 and 0.39 differ by 24% relative on a batch of two; they agree on a batch of one.
DeepCache's caching is per UNet call and does not depend on the batch.

Nothing of DeepCache's code is modified: the script only records the noise the pipeline draws,
by wrapping the `randn_tensor` name its module imports.
"""
import argparse
import json
import os

import numpy as np
import torch
from PIL import Image

import DeepCache
import DeepCache.svd.pipeline_stable_video_diffusion as dc_svd
from DeepCache.svd.unet_spatio_temporal_condition import UNetSpatioTemporalConditionModel  # DeepCache's UNet
from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler
from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

SETTINGS = dict(height=64, width=96, num_frames=5, num_inference_steps=6, min_guidance_scale=1.0,
                max_guidance_scale=1.0, fps=7, motion_bucket_id=127, noise_aug_strength=0.02,
                decode_chunk_size=3)
GEN_SEED, LATENT_SEED, UNET_SEED = 42, 1234, 0
# (name, cache_interval, cache_branch); branch None is DeepCache's own uncached path.
RUNS = [("uncached", 1, None), ("interval2_branch0", 2, 0), ("interval3_branch2", 3, 2),
        ("interval2_branch3", 2, 3)]


def random_unet(config: dict) -> UNetSpatioTemporalConditionModel:
    torch.manual_seed(UNET_SEED)
    unet = UNetSpatioTemporalConditionModel(**config)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if p.ndim >= 2:
                fan_in = p[0].numel()
                value = torch.randn_like(p) / np.sqrt(fan_in)
            elif name.endswith("weight"):
                value = 1.0 + 0.1 * torch.randn_like(p)
            else:
                value = 0.05 * torch.randn_like(p)
            p.copy_(value.half().float())  # fp16-exact, so an fp16 file holds it without loss
    return unet.eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    folder = os.path.join(args.shared, "tiny_animatelcm_svd")
    with open(os.path.join(folder, "unet", "config.json")) as f:
        config = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
    config["layers_per_block"] = 2
    unet = random_unet(config)
    unet_dir = os.path.join(args.out, "tiny_deepcache_unet")
    unet.save_pretrained(unet_dir, safe_serialization=True)
    # fp16 on disk: every value is fp16-exact (see random_unet)
    from safetensors.torch import load_file, save_file
    weights = os.path.join(unet_dir, "diffusion_pytorch_model.safetensors")
    save_file({k: v.half() for k, v in load_file(weights).items()}, weights)

    pipe = dc_svd.StableVideoDiffusionPipeline(
        vae=AutoencoderKLTemporalDecoder.from_pretrained(os.path.join(folder, "vae")),
        image_encoder=CLIPVisionModelWithProjection.from_pretrained(os.path.join(folder, "image_encoder")),
        unet=unet, scheduler=EulerDiscreteScheduler.from_pretrained(os.path.join(folder, "scheduler")),
        feature_extractor=CLIPImageProcessor.from_pretrained(os.path.join(folder, "feature_extractor")))
    image = Image.open(os.path.join(args.shared, "tiny_animatelcm_svd.input.png")).convert("RGB")
    h8, w8 = SETTINGS["height"] // 8, SETTINGS["width"] // 8
    latents_unit = torch.randn((1, SETTINGS["num_frames"], 4, h8, w8),
                               generator=torch.Generator().manual_seed(LATENT_SEED))

    draws = []
    original = dc_svd.randn_tensor

    def recording_randn(*a, **k):
        x = original(*a, **k)
        draws.append(x.detach().clone())
        return x

    dc_svd.randn_tensor = recording_randn
    arrays = {"initial_latents_unit": latents_unit[0].numpy(),
              "sigmas": None, "init_noise_sigma": None}
    for name, interval, branch in RUNS:
        for output_type in ("latent", "np"):
            draws.clear()
            with torch.no_grad():
                out = pipe(image, generator=torch.Generator().manual_seed(GEN_SEED), latents=latents_unit.clone(),
                           output_type=output_type, cache_interval=interval, cache_branch=branch,
                           **SETTINGS).frames
            assert len(draws) == 1, f"expected one noise draw (noise augmentation), got {len(draws)}"
            if output_type == "latent":
                arrays[f"{name}.latents"] = out[0].numpy()
                arrays[f"{name}.cond_noise"] = draws[0][0].numpy()
            else:
                arrays[f"{name}.frames"] = np.asarray(out[0], np.float32)  # (F, H, W, 3) in [0, 1]
    arrays["sigmas"] = pipe.scheduler.sigmas.numpy()
    arrays["init_noise_sigma"] = np.float32(pipe.scheduler.init_noise_sigma)
    np.savez_compressed(os.path.join(args.out, "reference.npz"), **arrays)
    import diffusers, transformers
    meta = {"deepcache": "deepcache==0.1.1 (PyPI), module DeepCache.svd, unchanged",
            "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                         "transformers": transformers.__version__},
            "settings": SETTINGS, "gen_seed": GEN_SEED, "latent_seed": LATENT_SEED, "unet_seed": UNET_SEED,
            "unet_config": config, "runs": [{"name": n, "cache_interval": i, "cache_branch": b} for n, i, b in RUNS],
            "arrays": {k: list(np.shape(v)) for k, v in arrays.items()}}
    with open(os.path.join(args.out, "reference.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print("wrote", sorted(arrays))


if __name__ == "__main__":
    main()
