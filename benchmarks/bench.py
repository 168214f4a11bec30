"""Inference benchmark: the full-size SVD UNet step in this port against its peers, on one machine.

Every system gets the same random weights (generated from each tensor's upstream name, so each
child process rebuilds them identically) and the same inputs: a classifier-free-guidance batch
of 2 videos of --frames latent frames at --size/8 latent pixels.

Systems (each in its own process, one after another, so peak memory is per system):
  ours-graph      svd_ms VideoUNet, MindSpore graph mode, convolutions as svd_ms.policy picks them
                  (MindSpore's native Conv2D/Conv3D kernels, on every backend)
  ours-pynative   the same in PyNative mode (synchronous launch, see README)
  ours-blockjit   PyNative with each UNet input/middle/output block compiled on its own
                  (mindspore.jit per block; an experiment on CPU graph memory, README)
  ours-matmul     graph mode with SVD_MS_CONV=matmul: every convolution as gather + matmul
  ours-native     graph mode with SVD_MS_CONV=native (equal to ours-graph while that is the policy;
                  not in the default set)
  torch           diffusers UNetSpatioTemporalConditionModel on PyTorch CPU, weights converted
                  with svd_ms.diffusers_map
  mindone         mindone.diffusers UNetSpatioTemporalConditionModel (PyNative, synchronous)
Also: the matmul peak of both frameworks, the temporal VAE decode per frame (ours, diffusers)
and the OpenCLIP ViT-H/14 image embedder (ours, transformers).

Each time is the median of --repeats runs after --warmup runs; the graph compile time is the
first call minus that median. Peak host memory is the process's ru_maxrss.

    python -m benchmarks.bench                 # everything, 8 frames of 128x128 (~20 min on 2 cores)
    python -m benchmarks.bench --quick         # UNet step, 4 frames: ours (graph) and diffusers only
    python -m benchmarks.bench --systems ours-graph,torch --frames 14 --size 256
"""
import argparse
import json
import math
import os
import platform
import time

import numpy as np

from benchmarks import common
from benchmarks.common import (
    REPO,
    meminfo_gb,
    output_tail,
    peak_rss_bytes,
    random_weight,
    results_of,
    time_calls,
)
from benchmarks.flops import unet_step_flops

CONFIG = os.path.join(REPO, "configs", "svd.yaml")
BATCH = 2  # classifier-free guidance: conditional and unconditional copies
ALL_SYSTEMS = ("peak", "ours-graph", "ours-pynative", "ours-blockjit", "ours-matmul", "torch", "mindone", "vae-ours",
               "vae-torch", "clip-ours", "clip-torch")
QUICK_SYSTEMS = ("ours-graph", "torch")


# ---------------------------------------------------------------------------------- shared

def unet_params():
    from omegaconf import OmegaConf
    return OmegaConf.to_container(OmegaConf.load(CONFIG).model.params.network_config.params)


def config_section(*path):
    from omegaconf import OmegaConf
    node = OmegaConf.load(CONFIG).model.params
    for p in path:
        node = node[p]
    return OmegaConf.to_container(node)


def timestep_embedding_np(t: np.ndarray, dim: int, max_period: float = 10000.0) -> np.ndarray:
    half = dim // 2
    freqs = np.exp(-math.log(max_period) * np.arange(half, dtype=np.float32) / half)
    args = t[:, None].astype(np.float32) * freqs[None]
    return np.concatenate([np.cos(args), np.sin(args)], axis=-1).astype(np.float32)


def unet_inputs(frames: int, h: int, w: int):
    """Inputs in the sgm layout (one row per frame) and in diffusers' layout (one per video)."""
    rng = np.random.default_rng(1234)
    n = BATCH * frames
    x = rng.standard_normal((n, 8, h, w), dtype=np.float32)
    c_noise = np.float32(0.25 * math.log(20.0))  # EDM c_noise at sigma = 20
    ehs = rng.standard_normal((BATCH, 1, 1024), dtype=np.float32)
    added = np.array([[6.0, 127.0, 0.02]] * BATCH, np.float32)  # fps_id, motion_bucket_id, cond_aug
    y_video = np.concatenate([timestep_embedding_np(added[:, j], 256) for j in range(3)], axis=-1)
    sgm = dict(x=x, t=np.full((n,), c_noise, np.float32), context=np.repeat(ehs, frames, axis=0),
               y=np.repeat(y_video, frames, axis=0), ioi=np.zeros((BATCH, frames), np.float32))
    diff = dict(sample=x.reshape(BATCH, frames, 8, h, w), timestep=c_noise, ehs=ehs, added=added)
    return sgm, diff


def emit(result: dict):
    result["peak_rss_gb"] = peak_rss_bytes() / 1e9
    common.emit(result)


DEVICE_TARGET = "CPU"  # set from --device_target in each worker


def setup_mindspore(mode: str):
    import mindspore as ms

    from svd_ms.runtime import setup_device
    setup_device(DEVICE_TARGET, mode=0 if mode == "graph" else 1)  # the same settings as the CLI and tests
    return ms


# ---------------------------------------------------------------------------------- workers

def worker_peak(args):
    """Matmul peak of both frameworks, measured in this run: fp32 (n x n) @ (n x n)."""
    ms = setup_mindspore("graph")  # the model's own settings (on x86 CPUs: oneDNN capped at AVX2)
    from mindspore import nn, ops

    class MM(nn.Cell):
        def construct(self, x, y):
            return ops.matmul(x, y)

    import torch
    torch.set_num_threads(os.cpu_count())
    mm = MM()
    best = {"mindspore": 0.0, "torch": 0.0}
    for n in (2048, 3072):
        flop = 2.0 * n ** 3
        a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
        xa, xb = ms.Tensor(a), ms.Tensor(a.T.copy())
        _, _, times = time_calls(lambda: mm(xa, xb).asnumpy(), 2, 5)
        best["mindspore"] = max(best["mindspore"], flop / min(times) / 1e9)
        ta, tb = torch.from_numpy(a), torch.from_numpy(a.T.copy())
        _, _, times = time_calls(lambda: ta @ tb, 2, 5)
        best["torch"] = max(best["torch"], flop / min(times) / 1e9)
    emit({"system": "peak", "mindspore_gflops": best["mindspore"], "torch_gflops": best["torch"],
          "note": "best of 5 runs, fp32 square matmuls of 2048 and 3072"})


def unet_ours(args, mode: str):
    """svd-ms's VideoUNet with the benchmark's random weights in `mode` ("graph", "pynative",
    "blockjit") and one step's call on the benchmark's inputs: (call, outputs dict, build seconds)."""
    ms = setup_mindspore(mode)
    from svd_ms.modules.diffusionmodules.video_model import VideoUNet
    params = unet_params()
    t0 = time.perf_counter()
    net = VideoUNet(**params)
    for name, p in net.parameters_and_names():
        p.set_data(ms.Tensor(random_weight(name, p.shape)))
    net.set_train(False)
    if mode == "blockjit":
        for block in list(net.input_blocks) + [net.middle_block] + list(net.output_blocks):
            block.construct = ms.jit(block.construct)
    build_s = time.perf_counter() - t0
    h = w = args.size // 8
    sgm, _ = unet_inputs(args.frames, h, w)
    inputs = (ms.Tensor(sgm["x"]), ms.Tensor(sgm["t"]), ms.Tensor(sgm["context"]), ms.Tensor(sgm["y"]), None,
              args.frames, ms.Tensor(sgm["ioi"]))
    out = {}

    def call():
        out["y"] = net(*inputs).asnumpy()
    return call, out, build_s


def worker_ours(args, mode: str, conv: str):
    if conv:
        os.environ["SVD_MS_CONV"] = conv
    call, out, build_s = unet_ours(args, mode)
    first, med, times = time_calls(call, args.warmup, args.repeats)
    np.save(os.path.join(args.out_dir, f"unet_{args.worker}.npy"), out["y"])
    emit({"system": args.worker, "mode": mode, "conv": os.environ.get("SVD_MS_CONV") or "policy", "step_s": med,
          "times": times, "first_s": first, "compile_s": max(first - med, 0.0) if mode in ("graph", "blockjit") else None,
          "build_s": build_s})


def _diffusers_unet_state(model_keys_shapes):
    from svd_ms.diffusers_map import unet_layout, unet_name
    keys = [k for k, _ in model_keys_shapes]
    per_level, up_attn = unet_layout(keys)
    state = {}
    for k, shape in model_keys_shapes:
        ours = unet_name(k, per_level, up_attn)
        if ours is None:
            raise SystemExit(f"no sgm name for diffusers tensor {k}")
        state[k] = random_weight(ours, shape)
    return state


def unet_torch(args):
    """diffusers' UNetSpatioTemporalConditionModel with the same random weights and one step's call on
    the same inputs: (call, outputs dict, build seconds)."""
    import torch
    from diffusers import UNetSpatioTemporalConditionModel
    torch.set_num_threads(os.cpu_count())
    t0 = time.perf_counter()
    with torch.device("meta"):
        model = UNetSpatioTemporalConditionModel()
    shapes = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    state = {k: torch.from_numpy(v) for k, v in _diffusers_unet_state(shapes).items()}
    model.load_state_dict(state, assign=True)
    model.eval()
    build_s = time.perf_counter() - t0
    h = w = args.size // 8
    _, d = unet_inputs(args.frames, h, w)
    sample, ehs, added = (torch.from_numpy(d[k]) for k in ("sample", "ehs", "added"))
    timestep = torch.tensor(float(d["timestep"]))
    out = {}

    def call():
        with torch.no_grad():
            out["y"] = model(sample, timestep, ehs, added).sample.numpy()
    return call, out, build_s


def worker_torch(args):
    import torch
    call, out, build_s = unet_torch(args)
    first, med, times = time_calls(call, args.warmup, args.repeats)
    y = out["y"].reshape((-1,) + out["y"].shape[2:])
    np.save(os.path.join(args.out_dir, "unet_torch.npy"), y)
    emit({"system": "torch", "mode": "eager", "step_s": med, "times": times, "first_s": first,
          "build_s": build_s, "threads": torch.get_num_threads()})


def worker_mindone(args):
    ms = setup_mindspore("pynative")
    try:
        from mindone.diffusers import UNetSpatioTemporalConditionModel
    except Exception as exc:  # noqa: BLE001 - report why, do not fail the whole benchmark
        emit({"system": "mindone", "error": f"import failed: {exc!r}"[:300]})
        return
    from svd_ms.diffusers_map import unet_layout, unet_name
    t0 = time.perf_counter()
    model = UNetSpatioTemporalConditionModel()
    named = list(model.parameters_and_names())
    per_level, up_attn = unet_layout([n for n, _ in named])
    missing = []
    for name, p in named:
        ours = unet_name(name, per_level, up_attn)
        if ours is None:
            missing.append(name)
            continue
        p.set_data(ms.Tensor(random_weight(ours, p.shape)))
    if missing:
        emit({"system": "mindone", "error": f"{len(missing)} parameters without an sgm name, e.g. {missing[:3]}"})
        return
    model.set_train(False)
    build_s = time.perf_counter() - t0
    h = w = args.size // 8
    _, d = unet_inputs(args.frames, h, w)
    sample, ehs, added = (ms.Tensor(d[k]) for k in ("sample", "ehs", "added"))
    timestep = ms.Tensor(float(d["timestep"]), ms.float32)
    out = {}

    def call():
        res = model(sample, timestep, ehs, added, return_dict=False)
        out["y"] = res[0].asnumpy()

    try:
        first, med, times = time_calls(call, args.warmup, args.repeats)
    except RuntimeError as exc:
        # mindone.diffusers builds on mindspore.mint, whose ops are Ascend-first: several have no
        # CPU kernel in MindSpore 2.10 (Arange, GeluExt, LayerNormExt, Conv2DExt, Mm, ...).
        first_line = next((ln for ln in str(exc).splitlines() if ln.strip()), repr(exc))
        emit({"system": "mindone", "error": f"cannot run on the CPU backend: {first_line}"[:300]})
        return
    y = out["y"].reshape((-1,) + out["y"].shape[2:])
    np.save(os.path.join(args.out_dir, "unet_mindone.npy"), y)
    emit({"system": "mindone", "mode": "pynative", "step_s": med, "times": times, "first_s": first,
          "build_s": build_s})


def vae_ours(args, mode: str):
    """svd-ms's temporal VAE decoder with the benchmark's random weights in `mode` and the call that
    decodes args.vae_frames latent frames as one clip."""
    ms = setup_mindspore(mode)
    from mindspore import nn

    from svd_ms.util import instantiate_from_config
    ae = instantiate_from_config(config_section("first_stage_config"))
    for name, p in ae.parameters_and_names():
        p.set_data(ms.Tensor(random_weight("first_stage_model." + name, p.shape)))
    frames = args.vae_frames

    class Decode(nn.Cell):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def construct(self, z):
            return self.model.decode(z, frames)

    dec = Decode(ae)
    dec.set_train(False)
    z = ms.Tensor(np.random.default_rng(5).standard_normal((frames, 4, args.size // 8, args.size // 8),
                                                           dtype=np.float32))
    return lambda: dec(z).asnumpy()


def worker_vae_ours(args):
    frames = args.vae_frames
    first, med, times = time_calls(vae_ours(args, args.vae_mode), args.warmup, args.repeats)
    emit({"system": "vae-ours", "mode": args.vae_mode, "decode_s": med, "per_frame_s": med / frames,
          "frames": frames, "first_s": first, "compile_s": max(first - med, 0.0) if args.vae_mode == "graph" else None})


def vae_torch(args):
    """diffusers' AutoencoderKLTemporalDecoder with the same random weights and the call that decodes
    the same latents."""
    import torch
    from diffusers import AutoencoderKLTemporalDecoder

    from svd_ms.diffusers_map import vae_decoder_name
    torch.set_num_threads(os.cpu_count())
    ddconfig = config_section("first_stage_config", "params", "decoder_config", "params")
    with torch.device("meta"):
        vae = AutoencoderKLTemporalDecoder(
            down_block_types=("DownEncoderBlock2D",) * len(ddconfig["ch_mult"]),
            block_out_channels=tuple(ddconfig["ch"] * m for m in ddconfig["ch_mult"]),
            layers_per_block=ddconfig["num_res_blocks"], latent_channels=ddconfig["z_channels"])
    sd = vae.state_dict()
    import re
    n_up = 1 + max(int(m.group(1)) for m in (re.match(r"decoder\.up_blocks\.(\d+)\.", k) for k in sd) if m)
    state = {}
    for k, v in sd.items():
        name = None
        if k.startswith("decoder."):
            inner, _ = vae_decoder_name(k[len("decoder."):], n_up)
            name = None if inner is None else "first_stage_model.decoder." + inner
        if name is None:
            state[k] = torch.from_numpy(random_weight("diffusers.vae." + k, v.shape))
        else:
            ours_shape = tuple(v.shape) + ((1, 1) if len(v.shape) == 2 and "attentions" in k else ())
            state[k] = torch.from_numpy(random_weight(name, ours_shape).reshape(tuple(v.shape)))
    vae.load_state_dict(state, assign=True)
    vae.eval()
    frames = args.vae_frames
    z = torch.from_numpy(np.random.default_rng(5).standard_normal((frames, 4, args.size // 8, args.size // 8),
                                                                  dtype=np.float32))

    def call():
        with torch.no_grad():
            vae.decode(z, num_frames=frames)

    return call


def worker_vae_torch(args):
    frames = args.vae_frames
    first, med, times = time_calls(vae_torch(args), args.warmup, args.repeats)
    emit({"system": "vae-torch", "mode": "eager", "decode_s": med, "per_frame_s": med / frames, "frames": frames,
          "first_s": first})


def worker_clip_ours(args):
    ms = setup_mindspore(args.vae_mode)
    from svd_ms.modules.encoders.modules import FrozenOpenCLIPImageEmbedder
    emb = FrozenOpenCLIPImageEmbedder(arch="ViT-H-14")
    for name, p in emb.parameters_and_names():
        p.set_data(ms.Tensor(random_weight("clip." + name, p.shape)))
    image = np.random.default_rng(7).uniform(-1, 1, (1, 3, args.size, args.size)).astype(np.float32)
    first, med, times = time_calls(lambda: emb.embed(image).asnumpy(), args.warmup, args.repeats)
    emit({"system": "clip-ours", "mode": args.vae_mode, "embed_s": med, "first_s": first,
          "compile_s": max(first - med, 0.0) if args.vae_mode == "graph" else None})


def worker_clip_torch(args):
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
    torch.set_num_threads(os.cpu_count())
    cfg = CLIPVisionConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                           image_size=224, patch_size=14, projection_dim=1024, hidden_act="gelu")
    with torch.device("meta"):
        model = CLIPVisionModelWithProjection(cfg)
    state = {k: torch.from_numpy(random_weight("clip." + k, v.shape)) for k, v in model.state_dict().items()}
    model.load_state_dict(state, assign=True, strict=False)
    model.eval()
    pixels = torch.from_numpy(np.random.default_rng(7).standard_normal((1, 3, 224, 224), dtype=np.float32))

    def call():
        with torch.no_grad():
            model(pixel_values=pixels).image_embeds

    first, med, times = time_calls(call, args.warmup, args.repeats)
    emit({"system": "clip-torch", "mode": "eager", "embed_s": med, "first_s": first,
          "note": "224x224 pixels already preprocessed"})


WORKERS = {
    "peak": worker_peak,
    "ours-graph": lambda a: worker_ours(a, "graph", ""),
    "ours-pynative": lambda a: worker_ours(a, "pynative", ""),
    "ours-native": lambda a: worker_ours(a, "graph", "native"),
    "ours-matmul": lambda a: worker_ours(a, "graph", "matmul"),
    "ours-blockjit": lambda a: worker_ours(a, "blockjit", ""),
    "torch": worker_torch,
    "mindone": worker_mindone,
    "vae-ours": worker_vae_ours,
    "vae-torch": worker_vae_torch,
    "clip-ours": worker_clip_ours,
    "clip-torch": worker_clip_torch,
}


# ---------------------------------------------------------------------------------- driver

def run_worker(name, args):
    t0 = time.perf_counter()
    print(f"[bench] {name} ...", flush=True)
    proc = common.run_child("bench", "--worker", name, "--frames", args.frames, "--size", args.size, "--repeats",
                            args.repeats, "--warmup", args.warmup, "--vae_frames", args.vae_frames, "--vae_mode",
                            args.vae_mode, "--out_dir", args.out_dir, "--device_target", args.device_target,
                            timeout=args.timeout)
    results = results_of(proc.stdout)
    if proc.returncode != 0 or not results:
        tail = output_tail(proc, 15)
        print(f"[bench] {name} failed (exit {proc.returncode}):\n{tail}", flush=True)
        return {"system": name, "error": f"exit {proc.returncode}: {tail.splitlines()[-1] if tail else ''}"[:300]}
    res = results[-1]
    res["wall_s"] = time.perf_counter() - t0
    print(f"[bench] {name}: " + json.dumps({k: v for k, v in res.items() if k != 'times'}), flush=True)
    return res


def fmt(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}"


def report(args, results):
    params = unet_params()
    h = w = args.size // 8
    flops = unet_step_flops(params, args.frames, h, w, BATCH)
    by = {r["system"]: r for r in results}
    peak = by.get("peak", {})
    torch_t = by.get("torch", {}).get("step_s")
    ref = None
    ref_path = os.path.join(args.out_dir, "unet_torch.npy")
    if os.path.exists(ref_path):
        ref = np.load(ref_path)
    lines = []
    lines.append(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
                 f"{meminfo_gb('MemTotal'):.0f} GB RAM, {platform.system()} {platform.release()}, Python "
                 f"{platform.python_version()}; {_versions()}; MindSpore backend {args.device_target}")
    lines.append(f"UNet step: batch {BATCH} x {args.frames} frames, {args.size}x{args.size} pixels "
                 f"({h}x{w} latents), {flops['total'] / 1e12:.2f} TFLOP per step (analytic: conv "
                 f"{flops['conv'] / 1e12:.2f}, linear {flops['linear'] / 1e12:.2f}, attention "
                 f"{(flops['spatial_attention'] + flops['other_attention']) / 1e12:.2f}); median of "
                 f"{args.repeats} after {args.warmup} warm-up")
    if peak.get("mindspore_gflops"):
        lines.append(f"Matmul peak measured in this run (fp32 2048^3 and 3072^3, best run): MindSpore {peak['mindspore_gflops']:.1f} "
                     f"GFLOP/s, PyTorch {peak['torch_gflops']:.1f} GFLOP/s")
    lines.append("")
    lines.append("| system | UNet step (s) | GFLOP/s | % of matmul peak | vs torch | compile (s) | peak RSS (GB) "
                 "| max rel. diff vs torch |")
    lines.append("|---|---|---|---|---|---|---|---|")
    names = {"ours-graph": "svd-ms, graph mode", "ours-pynative": "svd-ms, PyNative",
             "ours-blockjit": "svd-ms, PyNative, each UNet block compiled (mindspore.jit)",
             "ours-native": "svd-ms, graph mode, forced native Conv2D/Conv3D kernels",
             "ours-matmul": "svd-ms, graph mode, forced gather+matmul convolutions",
             "torch": "diffusers on PyTorch (eager)", "mindone": "mindone.diffusers, PyNative"}
    for key in ("ours-graph", "ours-pynative", "ours-blockjit", "ours-native", "ours-matmul", "torch", "mindone"):
        r = by.get(key)
        if r is None:
            continue
        label = names[key] + (" (policy: native conv kernels)" if key in ("ours-graph", "ours-pynative")
                              else "")
        if "error" in r:
            lines.append(f"| {label} | not measured: {r['error']} | | | | | | |")
            continue
        t = r["step_s"]
        gf = flops["total"] / t / 1e9
        pk = peak.get("torch_gflops" if key == "torch" else "mindspore_gflops")
        diff = "-"
        path = os.path.join(args.out_dir, f"unet_{key}.npy")
        if ref is not None and key != "torch" and os.path.exists(path):
            y = np.load(path)
            if y.shape == ref.shape:
                diff = f"{np.abs(y - ref).max() / np.abs(ref).max():.1e}"
        lines.append(f"| {label} | {t:.1f} | {gf:.1f} | {fmt(100 * gf / pk if pk else None, 0)} | "
                     f"{fmt(t / torch_t if torch_t else None)}x | {fmt(r.get('compile_s'), 0)} | "
                     f"{r['peak_rss_gb']:.1f} | {diff} |")
    extra = []
    for key, label, field in (("vae-ours", "svd-ms temporal VAE decode", "per_frame_s"),
                              ("vae-torch", "diffusers AutoencoderKLTemporalDecoder decode", "per_frame_s"),
                              ("clip-ours", "svd-ms OpenCLIP ViT-H/14 image embedder (incl. preprocessing)", "embed_s"),
                              ("clip-torch", "transformers CLIPVisionModelWithProjection ViT-H/14", "embed_s")):
        r = by.get(key)
        if r is None:
            continue
        if "error" in r:
            extra.append(f"| {label} | not measured: {r['error']} | | |")
            continue
        unit = f"{r[field]:.2f} s per frame ({r['frames']} frames, {args.size}x{args.size})" if field == "per_frame_s" \
            else f"{r[field]:.2f} s per image"
        extra.append(f"| {label} ({r.get('mode')}) | {unit} | {fmt(r.get('compile_s'), 0)} | {r['peak_rss_gb']:.1f} |")
    if extra:
        lines.append("")
        lines.append("| component | time | compile (s) | peak RSS (GB) |")
        lines.append("|---|---|---|---|")
        lines.extend(extra)
    ours = by.get("ours-graph", {})
    if ours.get("step_s"):
        lines.append("")
        lines.append("Projection (not measured): UNet step at 576x1024, from the measured time per FLOP of "
                     "svd-ms graph mode above and the analytic FLOPs")
        sec_per_flop = ours["step_s"] / flops["total"]
        torch_per_flop = torch_t / flops["total"] if torch_t else None
        for frames in (14, 25):
            f = unet_step_flops(params, frames, 72, 128, BATCH)
            scores_gb = BATCH * frames * 5 * (72 * 128) ** 2 * 4 / 1e9
            lines.append(f"- {frames} frames: {f['total'] / 1e12:.0f} TFLOP per step (spatial attention "
                         f"{100 * f['spatial_attention'] / f['total']:.0f}%), projected "
                         f"{sec_per_flop * f['total']:.0f} s per step for svd-ms"
                         + (f", {torch_per_flop * f['total']:.0f} s for diffusers" if torch_per_flop else "")
                         + f"; x25 steps = {25 * sec_per_flop * f['total'] / 60:.0f} min; the first level's "
                           f"attention scores are {scores_gb:.0f} GB in all, formed one frame at a time "
                           f"({scores_gb / (BATCH * frames):.1f} GB)")
    for key in ("ours-native", "ours-matmul"):
        forced = by.get(key, {})
        if forced.get("step_s") and ours.get("step_s"):
            lines.append("")
            lines.append(f"Graph-mode UNet step, {names[key].split(', ')[-1]} / policy: {forced['step_s']:.1f} s / "
                         f"{ours['step_s']:.1f} s = {forced['step_s'] / ours['step_s']:.2f}")
    if torch_t and ours.get("step_s"):
        lines.append("")
        lines.append(f"unet_step ratio_vs_torch={ours['step_s'] / torch_t:.3f}")
    text = "\n".join(lines)
    print("\n" + text)
    return text


def _versions():
    out = []
    for mod in ("mindspore", "torch", "diffusers", "mindone"):
        try:
            out.append(f"{mod} {__import__('importlib.metadata').metadata.version(mod)}")
        except Exception:  # noqa: BLE001
            pass
    return ", ".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="only the UNet step of svd-ms (graph) and diffusers")
    ap.add_argument("--systems", default=None, help=f"comma list out of {','.join(ALL_SYSTEMS)}")
    ap.add_argument("--frames", type=int, default=None, help="latent frames per video (default 8; --quick 4)")
    ap.add_argument("--size", type=int, default=128, help="square frame size in pixels (multiple of 64)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs (default 3; --quick 2)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--vae_frames", type=int, default=8, help="frames decoded as one clip")
    ap.add_argument("--vae_mode", default="graph", choices=("graph", "pynative"),
                    help="MindSpore mode of the VAE and image-embedder measurements")
    ap.add_argument("--out_dir", default=None, help="where workers leave outputs (default: a temp dir)")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per system")
    ap.add_argument("--json", default=None, help="also write all results here")
    ap.add_argument("--device_target", default="CPU", choices=("CPU", "GPU", "Ascend"),
                    help="MindSpore backend of the svd-ms and mindone systems (PyTorch runs on CPU)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.frames is None:
        args.frames = 4 if args.quick else 8
    if args.repeats is None:
        args.repeats = 2 if args.quick else 3
    if args.size % 64:
        ap.error("--size must be a multiple of 64")
    if args.out_dir is None:
        import tempfile
        args.out_dir = tempfile.mkdtemp(prefix="svd_bench_")
    os.makedirs(args.out_dir, exist_ok=True)
    if args.worker:
        global DEVICE_TARGET
        DEVICE_TARGET = args.device_target
        WORKERS[args.worker](args)
        return
    systems = QUICK_SYSTEMS if args.quick else ALL_SYSTEMS
    if args.systems:
        systems = tuple(s.strip() for s in args.systems.split(",") if s.strip())
        unknown = [s for s in systems if s not in WORKERS]
        if unknown:
            ap.error(f"unknown systems {unknown}")
    print(f"[bench] systems: {', '.join(systems)}; outputs in {args.out_dir}", flush=True)
    results = [run_worker(name, args) for name in systems]
    text = report(args, results)
    common.write_json_report(args.json, args, text, results=results)


if __name__ == "__main__":
    main()
