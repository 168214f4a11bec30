"""Peak anonymous memory of loading a full-size diffusers folder straight into the engine.

A diffusers folder of the full-size SVD is written with random values: its tensor names and
shapes are those of diffusers' UNetSpatioTemporalConditionModel, AutoencoderKLTemporalDecoder and
transformers' CLIPVisionModelWithProjection with the released models' settings (built on torch's
meta device, no memory), checked first against the upstream manifest
(../shared/reference/manifest/svd.keys.json) through the project's name map: every upstream
tensor the folder can hold must come out with the manifest's name and shape. The folder's own
JSON files are the models' configs, so the engine's config is derived from them
(svd_ms.diffusers_config) exactly as a run with `--SVD.checkpoint=FOLDER` derives it.

The load runs in a fresh process that samples its RssAnon every 20 ms (benchmarks.load_memory):
file pages in the page cache are not counted, as the kernel can drop them at any time. The
bound the project keeps: peak anonymous memory <= 1.3 x the weights in their loaded dtype.

    python -m benchmarks.diffusers_folder_memory                    # fp16 variant files, float16 load (~4.5 GB disk)
    python -m benchmarks.diffusers_folder_memory --load_dtype fp32  # fp32 files, float32 load (~9.5 GB disk, ~10 GB memory)

Needs torch, diffusers and transformers (the test extras) to lay out the folder; not a test:
it takes minutes.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

from benchmarks.load_memory import _gb, _measure, _ref_dir

CLIP = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16, image_size=224,
            patch_size=14, projection_dim=1024, hidden_act="gelu", layer_norm_eps=1e-5)
VAE = dict(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4, layers_per_block=2,
           latent_channels=4, scaling_factor=0.18215)
MODEL_INDEX = {"_class_name": "StableVideoDiffusionPipeline",
               "feature_extractor": ["transformers", "CLIPImageProcessor"],
               "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
               "scheduler": ["diffusers", "EulerDiscreteScheduler"],
               "unet": ["diffusers", "UNetSpatioTemporalConditionModel"],
               "vae": ["diffusers", "AutoencoderKLTemporalDecoder"]}


def diffusers_layout(folder: str, frames: int):
    """{component: {name: shape}} of the full-size models, their config.json files written to `folder`."""
    import torch
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    with torch.device("meta"):
        models = {"unet": UNetSpatioTemporalConditionModel(num_frames=frames),
                  "vae": AutoencoderKLTemporalDecoder(**VAE),
                  "image_encoder": CLIPVisionModelWithProjection(CLIPVisionConfig(**CLIP))}
    for component, model in models.items():
        os.makedirs(os.path.join(folder, component), exist_ok=True)
        if component == "image_encoder":
            model.config.architectures = ["CLIPVisionModelWithProjection"]
            model.config.to_json_file(os.path.join(folder, component, "config.json"))
        else:
            model.save_config(os.path.join(folder, component))
    with open(os.path.join(folder, "model_index.json"), "w") as f:
        json.dump(MODEL_INDEX, f)
    return {c: {k: tuple(t.shape) for k, t in m.state_dict().items()} for c, m in models.items()}


def check_against_manifest(layout, manifest_path):
    """Every upstream tensor the name map makes from `layout` has the manifest's name and shape,
    and the manifest holds nothing else but the tensors a diffusers folder cannot have."""
    from svd_ms import diffusers_map
    from svd_ms.checkpoint import ignored_reason

    with open(manifest_path) as f:
        manifest = {k: tuple(v) for k, v in json.load(f).items()}
    rules, _, unknown = diffusers_map.plan({c: list(s) for c, s in layout.items()}, 0, 3)
    if unknown:
        raise SystemExit(f"diffusers tensors the name map does not know: {unknown[:5]}")
    produced = {}
    for rule in rules:
        shape = diffusers_map.output_shape(rule.op, [layout[s.split("/")[0]][s.split("/", 1)[1]] for s in rule.sources])
        for name in rule.upstream:
            if name in manifest:
                produced[name] = shape
    wrong = [n for n in produced if produced[n] != manifest[n]]
    absent = [n for n in manifest if n not in produced and ignored_reason(n) is None
              and not n.startswith(("conditioner.embedders.3.encoder.decoder.",
                                    "conditioner.embedders.3.encoder.post_quant_conv."))]
    if wrong or absent:
        raise SystemExit(f"layout does not match the manifest: shapes {wrong[:3]}, absent {absent[:3]}")
    return len(produced), len(manifest)


def write_weights(folder: str, layout, fp16: bool):
    from svd_ms.checkpoint.diffusers_folder import WEIGHT_FILES
    from svd_tools.safetensors_stream import write_safetensors

    dtype = "float16" if fp16 else "float32"
    rng = np.random.default_rng(0)
    for component, shapes in layout.items():
        path = os.path.join(folder, component, WEIGHT_FILES[component] + (".fp16" if fp16 else "") + ".safetensors")

        def produce(name):
            values = rng.standard_normal(int(np.prod(shapes[name], dtype=np.int64)), dtype=np.float32)
            values *= 0.02
            return values.astype(dtype, copy=False).reshape(shapes[name])

        write_safetensors(path, [(k, dtype, s) for k, s in shapes.items()], produce)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--load_dtype", choices=["fp16", "fp32"], default="fp16",
                   help="fp16: the fp16 variant files, loaded as float16; fp32: full-precision files, float32")
    p.add_argument("--frames", type=int, default=25, help="the UNet config's num_frames (25: SVD-XT, 14: SVD)")
    p.add_argument("--work_dir", default=None, help="where the folder goes (default: a new folder in /tmp, removed)")
    args = p.parse_args()
    from omegaconf import OmegaConf

    from svd_ms.diffusers_config import describe_folder

    work = args.work_dir or tempfile.mkdtemp(prefix="svd_diffusers_folder_", dir="/tmp")
    folder = os.path.join(work, "svd-diffusers-random")
    try:
        layout = diffusers_layout(folder, args.frames)
        n_values = sum(int(np.prod(s, dtype=np.int64)) for shapes in layout.values() for s in shapes.values())
        need = n_values * (2 if args.load_dtype == "fp16" else 4)
        if shutil.disk_usage(work).free < 1.05 * need:
            raise SystemExit(f"need about {_gb(1.05 * need)} free in {work}")
        made, listed = check_against_manifest(layout, os.path.join(_ref_dir(), "manifest", "svd.keys.json"))
        print(f"diffusers layout: {sum(map(len, layout.values()))} tensors, {n_values:,} values -> {made} of the "
              f"manifest's {listed} upstream tensors (the rest: text-tower remnants and the conditioner VAE's unused "
              f"decoder)", flush=True)
        t0 = time.time()
        write_weights(folder, layout, fp16=args.load_dtype == "fp16")
        print(f"wrote random {args.load_dtype} weights in {time.time() - t0:.0f} s", flush=True)
        config, name = describe_folder(folder)
        config_path = os.path.join(work, "derived.yaml")
        OmegaConf.save(OmegaConf.create(config), config_path)
        m = _measure(config_path, folder, args.load_dtype)
        ratio = m["anon_peak"] / m["weights"]
        print(f"\nfolder matches: {name}; parameters loaded as {args.load_dtype}; RssAnon (page cache not counted)")
        print(f"{'build s':>8}{'load s':>8}{'weights':>10}{'peak anon':>11}{'peak/weights':>14}{'load delta/weights':>20}")
        print(f"{m['build_s']:>8.1f}{m['load_s']:>8.1f}{_gb(m['weights']):>10}{_gb(m['anon_peak']):>11}{ratio:>14.3f}"
              f"{(m['anon_peak'] - m['anon_before_load']) / m['weights']:>20.3f}")
        print(f"bound: peak <= 1.3 x weights: {'met' if ratio <= 1.3 else 'NOT met'}")
        return 0 if ratio <= 1.3 else 1
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
