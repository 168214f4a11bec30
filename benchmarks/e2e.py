"""End-to-end benchmark: one whole image-to-video run of svd-ms against diffusers' StableVideoDiffusionPipeline.

Both systems get the same full-size weights, the same image and the same noise:
- weights: random, generated per diffusers tensor name (`benchmarks.common.random_weight`), given to diffusers
  as they are and to svd-ms through the project's own name map (`svd_ms.diffusers_map.plan`,
  the rules `svd_tools/convert.py` applies to a diffusers folder);
- image: one synthetic RGB picture of --size x --size;
- noise: the initial latents and the conditioning-frame noise, drawn here and handed to both
  (diffusers takes `latents=`; its conditioning-noise draw is replaced by the same array).
Sampler and guidance are the config's (configs/svd.yaml: Euler EDM, Karras sigmas 0.002..700,
guidance 1.0 to 2.5 over the frames), fps 7, motion bucket 127, noise augmentation 0.02.

Stages, each timed and with its own peak resident memory (VmHWM reset at the stage's start, so
it includes the weights already resident): model load, image embedding (CLIP), VAE encoding of
the conditioning frame, sampling, decoding, writing the mp4. "total" is the run without the
load. Systems run one after another, each in its own process:
  ours-graph     svd-ms, MindSpore graph mode
  ours-pynative  svd-ms, MindSpore PyNative mode
  diffusers      diffusers on PyTorch (CPU, eager)

With --steps below --report_steps, sampling runs --steps steps and the table extrapolates it:
the measured steps plus (report_steps - steps) x the median measured step (said in the table).

    python -m benchmarks.e2e --quick     # 4 frames of 128x128, 2 steps; ends with the ratio line
    python -m benchmarks.e2e             # 14 frames of 256x256, 25 steps (hours on 2 cores)
    python -m benchmarks.e2e --steps 3   # 14x256, 3 steps measured, extrapolated to 25
"""
import argparse
import contextlib
import os
import re
import tempfile
import time

import numpy as np

from benchmarks import common
from benchmarks.common import (
    REPO,
    emit,
    meminfo_gb,
    output_tail,
    proc_status_kb,
    random_weight,
    results_of,
)

CONFIG = os.path.join(REPO, "configs", "svd.yaml")
FPS, MOTION, NOISE_AUG = 7, 127, 0.02
SYSTEMS = ("ours-graph", "ours-pynative", "diffusers")
STAGES = ("image_embedding", "vae_encoding", "sampling", "decoding", "writing")
CLIP_CONFIG = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                   image_size=224, patch_size=14, projection_dim=1024, hidden_act="gelu")
# diffusers' scheduler config of the released SVD models (scheduler/scheduler_config.json)
SCHEDULER = dict(beta_end=0.012, beta_schedule="scaled_linear", beta_start=0.00085, interpolation_type="linear",
                 num_train_timesteps=1000, prediction_type="v_prediction", sigma_max=700.0, sigma_min=0.002,
                 steps_offset=1, timestep_spacing="leading", timestep_type="continuous", use_karras_sigmas=True)


# ---------------------------------------------------------------------------------- shared inputs

def make_image(size: int) -> np.ndarray:
    """A smooth synthetic picture with some edges, uint8 (size, size, 3)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    r = 0.5 + 0.5 * np.sin(6.0 * x + 2.0 * y)
    g = 0.5 + 0.5 * np.cos(5.0 * y - 3.0 * x * y)
    b = ((x - 0.5) ** 2 + (y - 0.5) ** 2 < 0.08).astype(np.float32) * 0.8 + 0.1
    return (np.stack([r, g, b], -1) * 255).round().astype(np.uint8)


def make_noise(frames: int, size: int):
    rng = np.random.default_rng(2024)
    cond = rng.standard_normal((1, 3, size, size), dtype=np.float32)
    latents = rng.standard_normal((frames, 4, size // 8, size // 8), dtype=np.float32)
    return latents, cond


def diffusers_models():
    """The three diffusers components on the meta device (shapes only), SVD-sized."""
    import torch
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from omegaconf import OmegaConf
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
    dd = OmegaConf.load(CONFIG).model.params.first_stage_config.params.decoder_config.params
    with torch.device("meta"):
        unet = UNetSpatioTemporalConditionModel()
        vae = AutoencoderKLTemporalDecoder(
            down_block_types=("DownEncoderBlock2D",) * len(dd.ch_mult),
            block_out_channels=tuple(dd.ch * m for m in dd.ch_mult), layers_per_block=dd.num_res_blocks,
            latent_channels=dd.z_channels)
        clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**CLIP_CONFIG))
    return {"unet": unet, "vae": vae, "image_encoder": clip}


def materialize_index_buffers(model):
    """Non-persistent buffers (CLIP's position_ids) are not in the state dict, so loading leaves
    them on the meta device, where they would read as garbage: give them their values."""
    import torch
    for name, buf in list(model.named_buffers()):
        if not buf.is_meta:
            continue
        if not name.endswith("position_ids"):
            raise SystemExit(f"buffer {name} has no value")
        owner = model.get_submodule(name.rsplit(".", 1)[0])
        owner.register_buffer("position_ids", torch.arange(buf.shape[-1]).expand(buf.shape).clone(), persistent=False)


def diffusers_weight(component: str, key: str, shape) -> np.ndarray:
    return random_weight(f"{component}/{key}", shape)


# ---------------------------------------------------------------------------------- memory and stages

class Meter:
    """Wall time and peak resident memory per stage (Linux: VmHWM, reset through clear_refs)."""

    def __init__(self):
        self.stages = {}
        self.process_peak_kb = 0

    def _reset_peak(self):
        self.process_peak_kb = max(self.process_peak_kb, proc_status_kb("VmHWM"))
        with contextlib.suppress(OSError):
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")

    @contextlib.contextmanager
    def stage(self, name):
        self._reset_peak()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            dt = time.perf_counter() - t0
            peak = proc_status_kb("VmHWM")
            self.process_peak_kb = max(self.process_peak_kb, peak)
            entry = self.stages.setdefault(name, {"s": 0.0, "peak_gb": 0.0, "calls": 0})
            entry["s"] += dt
            entry["peak_gb"] = max(entry["peak_gb"], peak * 1024 / 1e9)
            entry["calls"] += 1

    def wrap(self, obj, method, name):
        fn = getattr(obj, method)

        def timed(*a, **k):
            with self.stage(name):
                return fn(*a, **k)
        setattr(obj, method, timed)

    def result(self):
        self.process_peak_kb = max(self.process_peak_kb, proc_status_kb("VmHWM"))
        return {"stages": self.stages, "peak_gb": self.process_peak_kb * 1024 / 1e9}


# ---------------------------------------------------------------------------------- svd-ms

def load_ours(engine):
    """Fill the engine from the diffusers-named random weights through the project's name map."""
    import mindspore as ms

    from svd_ms.diffusers_map import apply, plan
    params = dict(engine.parameters_and_names())
    shapes, keys = {}, {}
    for comp, model in diffusers_models().items():
        sd = model.state_dict()
        keys[comp] = list(sd)
        shapes.update({f"{comp}/{k}": tuple(v.shape) for k, v in sd.items()})
    embedders = engine.conditioner.embedders
    kinds = [type(e).__name__ for e in embedders]
    rules, _, unknown = plan(keys, kinds.index("FrozenOpenCLIPImagePredictionEmbedder"),
                             kinds.index("VideoPredictionEmbedderWithEncoder"))
    if unknown:
        raise SystemExit(f"diffusers tensors the name map does not know: {unknown[:5]}")
    filled = set()
    for rule in rules:
        arrays = []
        for src in rule.sources:
            comp, key = src.split("/", 1)
            arrays.append(diffusers_weight(comp, key, shapes[src]))
        value = apply(rule.op, arrays)
        for name in rule.upstream:
            if name in params:
                params[name].set_data(ms.Tensor(np.ascontiguousarray(value, np.float32)))
                filled.add(name)
    # Only the decoding half of the conditioner's autoencoder, which encodes and never decodes
    # (diffusers has no copy of it), keeps its zeros.
    left = [n for n in params if n not in filled
            and not re.match(r"conditioner\.embedders\.\d+\.encoder\.(decoder\.|post_quant_conv\.)", n)]
    if left:
        raise SystemExit(f"engine parameters with no diffusers source: {left[:5]}")


def time_ours_stages(meter: Meter, pipe) -> None:
    """Time svd-ms's stages by wrapping what its clip run calls (tests/benchmarks/test_e2e.py runs
    this on the tiny model, so that a renamed stage fails there, not in a long benchmark)."""
    from svd_ms.modules.encoders.modules import (
        FrozenOpenCLIPImagePredictionEmbedder,
        VideoPredictionEmbedderWithEncoder,
    )
    from svd_ms.pipelines import clip as clip_module
    for emb in pipe.engine.conditioner.embedders:
        if isinstance(emb, FrozenOpenCLIPImagePredictionEmbedder):
            meter.wrap(emb, "embed", "image_embedding")
        elif isinstance(emb, VideoPredictionEmbedderWithEncoder):
            meter.wrap(emb, "embed", "vae_encoding")
    meter.wrap(clip_module, "sample_latents", "sampling")  # run_clip looks it up in its module
    meter.wrap(pipe.components, "decode_latents", "decoding")


def worker_ours(args, mode):
    from svd_ms.runtime import setup_device
    setup_device("CPU", mode=0 if mode == "graph" else 1)
    import svd_ms.weights
    from svd_ms import media
    from svd_ms.pipeline import SVDInferPipeline
    meter = Meter()
    with meter.stage("load"):
        svd_ms.weights.randomize = lambda engine, seed=0: load_ours(engine)  # the benchmark's weights instead
        pipe = SVDInferPipeline(CONFIG, None, num_frames=args.frames, num_steps=args.steps,
                                decode_chunk_size=args.decode_chunk, fps=FPS, motion_bucket_id=MOTION,
                                noise_aug_strength=NOISE_AUG)
    time_ours_stages(meter, pipe)
    latents, cond = make_noise(args.frames, args.size)
    image = make_image(args.size)
    t0 = time.perf_counter()
    result = pipe.generate(image, latent_noise=latents, cond_noise=cond)
    video = result.video
    with meter.stage("writing"):
        media.write_video(media.to_uint8(video), _video_path(args), "mp4", FPS, overwrite=True)
    total = time.perf_counter() - t0
    np.save(os.path.join(args.out_dir, f"video_{args.worker}.npy"), video.astype(np.float32))
    out = meter.result()
    out.update(system=args.worker, mode=mode, total_s=total, step_s=result.timings["step_s"])
    emit(out)


def _video_path(args):
    from pathlib import Path
    return Path(args.out_dir) / f"video_{args.worker}.mp4"


# ---------------------------------------------------------------------------------- diffusers

def worker_diffusers(args):
    import torch
    from diffusers import EulerDiscreteScheduler, StableVideoDiffusionPipeline
    from diffusers.pipelines.stable_video_diffusion import (
        pipeline_stable_video_diffusion as svd_module,
    )
    from diffusers.utils import export_to_video
    from omegaconf import OmegaConf
    from PIL import Image
    from transformers import CLIPImageProcessor
    torch.set_num_threads(os.cpu_count())
    meter = Meter()
    with meter.stage("load"):
        models = diffusers_models()
        for comp, model in models.items():
            state = {k: torch.from_numpy(diffusers_weight(comp, k, v.shape)) for k, v in model.state_dict().items()}
            model.load_state_dict(state, assign=True)
            materialize_index_buffers(model)
            model.eval()
        pipe = StableVideoDiffusionPipeline(vae=models["vae"], image_encoder=models["image_encoder"],
                                            unet=models["unet"], scheduler=EulerDiscreteScheduler(**SCHEDULER),
                                            feature_extractor=CLIPImageProcessor())
        pipe.set_progress_bar_config(disable=True)
    guider = OmegaConf.load(CONFIG).model.params.sampler_config.params.guider_config.params
    latents, cond = make_noise(args.frames, args.size)

    def conditioning_noise(shape, **kwargs):  # the pipeline's only other draw: the conditioning noise
        if tuple(shape) != cond.shape:
            raise SystemExit(f"unexpected noise draw of shape {tuple(shape)}")
        return torch.from_numpy(cond)
    svd_module.randn_tensor = conditioning_noise

    meter.wrap(pipe, "_encode_image", "image_embedding")
    meter.wrap(pipe, "_encode_vae_image", "vae_encoding")
    meter.wrap(pipe, "decode_latents", "decoding")
    stamps = []

    def on_step(pipeline, i, t, kwargs):
        stamps.append(time.perf_counter())
        return kwargs

    # Sampling runs inside __call__ between the VAE encoding and the decoding: time it from the
    # end of the one to the start of the other, resetting the peak at its start.
    encode_vae = pipe._encode_vae_image

    def encode_then_start_sampling(*a, **k):
        out = encode_vae(*a, **k)
        meter._reset_peak()
        stamps.append(time.perf_counter())
        return out
    pipe._encode_vae_image = encode_then_start_sampling
    decode = pipe.decode_latents

    def end_sampling_then_decode(*a, **k):
        t_end = time.perf_counter()
        meter.stages["sampling"] = {"s": t_end - stamps[0], "peak_gb": proc_status_kb("VmHWM") * 1024 / 1e9,
                                    "calls": 1}
        meter.process_peak_kb = max(meter.process_peak_kb, proc_status_kb("VmHWM"))
        return decode(*a, **k)
    pipe.decode_latents = end_sampling_then_decode

    image = Image.fromarray(make_image(args.size))
    t0 = time.perf_counter()
    with torch.no_grad():
        frames = pipe(image, height=args.size, width=args.size, num_frames=args.frames,
                      num_inference_steps=args.steps, min_guidance_scale=float(guider.min_scale),
                      max_guidance_scale=float(guider.max_scale), fps=FPS, motion_bucket_id=MOTION,
                      noise_aug_strength=NOISE_AUG, decode_chunk_size=args.decode_chunk or args.frames,
                      latents=torch.from_numpy(latents[None]), output_type="np",
                      callback_on_step_end=on_step).frames[0]
    with meter.stage("writing"):
        export_to_video(list(frames), str(_video_path(args)), fps=FPS)
    total = time.perf_counter() - t0
    video = np.asarray(frames, np.float32).transpose(0, 3, 1, 2)  # (T, 3, H, W) like ours
    np.save(os.path.join(args.out_dir, f"video_{args.worker}.npy"), video)
    out = meter.result()
    out.update(system="diffusers", mode="eager", total_s=total, step_s=list(np.diff(stamps)))
    emit(out)


WORKERS = {"ours-graph": lambda a: worker_ours(a, "graph"), "ours-pynative": lambda a: worker_ours(a, "pynative"),
           "diffusers": worker_diffusers}


# ---------------------------------------------------------------------------------- driver

def available_gb():
    return meminfo_gb("MemAvailable")


def run_worker(name, args):
    need = args.min_free_gb
    waited = 0
    while available_gb() < need and waited < args.wait_memory:
        print(f"[e2e] waiting for {need:.0f} GB of free memory (available {available_gb():.1f} GB)", flush=True)
        time.sleep(30)
        waited += 30
    if available_gb() < need:
        return {"system": name, "error": f"not run: only {available_gb():.1f} GB available, {need:.0f} GB needed"}
    print(f"[e2e] {name} ...", flush=True)
    t0 = time.perf_counter()
    proc = common.run_child("e2e", "--worker", name, "--frames", args.frames, "--size", args.size, "--steps",
                            args.steps, "--decode_chunk", args.decode_chunk or 0, "--out_dir", args.out_dir,
                            timeout=args.timeout)
    results = results_of(proc.stdout)
    if proc.returncode != 0 or not results:
        tail = output_tail(proc, 12)
        killed = " (killed: out of memory?)" if proc.returncode in (-9, 137) else ""
        print(f"[e2e] {name} failed (exit {proc.returncode}){killed}:\n{tail}", flush=True)
        last = tail.splitlines()[-1] if tail else ""
        return {"system": name, "error": f"exit {proc.returncode}{killed}: {last}"[:300]}
    res = results[-1]
    res["wall_s"] = time.perf_counter() - t0
    print(f"[e2e] {name}: total {res['total_s']:.1f} s, peak {res['peak_gb']:.1f} GB", flush=True)
    return res


def extrapolated_sampling(res, steps, report_steps):
    """(sampling seconds at report_steps, compile seconds): the measured run plus the missing
    steps at the median measured step; compile = first step minus the median of the others."""
    s = res["stages"]["sampling"]["s"]
    times = res.get("step_s") or []
    median = float(np.median(times[1:])) if len(times) > 1 else (times[0] if times else 0.0)
    compile_s = max(times[0] - median, 0.0) if times else 0.0
    return s + max(report_steps - steps, 0) * median, compile_s


def report(args, results):
    extrap = args.report_steps > args.steps
    by = {r["system"]: r for r in results}
    ref = by.get("diffusers")
    ref_video = None
    path = os.path.join(args.out_dir, "video_diffusers.npy")
    if ref and "error" not in ref and os.path.exists(path):
        ref_video = np.load(path)
    lines = [f"{args.frames} frames of {args.size}x{args.size}, "
             + (f"{args.steps} sampling steps measured, sampling extrapolated to {args.report_steps} steps "
                f"(+{args.report_steps - args.steps} x the median measured step)" if extrap
                else f"{args.steps} sampling steps")
             + f", decode chunk {args.decode_chunk or args.frames}; full-size svd weights (random), fp32, CPU; "
             f"load {time.strftime('%Y-%m-%d %H:%M')}, uptime load average {os.getloadavg()[0]:.1f}"]
    head = "| system | " + " | ".join(STAGES) + " | total | vs diffusers | model load | peak RSS (GB) " \
           "| vs diffusers | max abs diff of the video vs diffusers |"
    lines += ["", head, "|" + "---|" * (len(STAGES) + 7)]
    names = {"ours-graph": "svd-ms, graph mode", "ours-pynative": "svd-ms, PyNative", "diffusers": "diffusers (PyTorch)"}
    totals = {}
    for r in results:
        name = r["system"]
        if "error" in r:
            lines.append(f"| {names[name]} | not measured: {r['error']} |" + " |" * (len(STAGES) + 6))
            continue
        st = r["stages"]
        cells, total = [], 0.0
        for stage in STAGES:
            if stage == "sampling":
                s, compile_s = extrapolated_sampling(r, args.steps, args.report_steps)
                cell = f"{s:.1f} s" + (f" (compile {compile_s:.0f})" if name == "ours-graph" else "")
            else:
                s = st.get(stage, {}).get("s", 0.0)
                cell = f"{s:.1f} s"
            total += s
            cells.append(f"{cell}, {st.get(stage, {}).get('peak_gb', 0):.1f} GB")
        totals[name] = (total, r["peak_gb"])
        diff = "-"
        vpath = os.path.join(args.out_dir, f"video_{name}.npy")
        if ref_video is not None and name != "diffusers" and os.path.exists(vpath):
            v = np.load(vpath)
            diff = f"{np.abs(v - ref_video).max():.1e}" if v.shape == ref_video.shape else f"shape {v.shape}"
        rt = totals.get("diffusers")
        lines.append(f"| {names[name]} | " + " | ".join(cells) + f" | {total:.1f} s | TOTAL_RATIO_{name} | "
                     f"{st['load']['s']:.0f} s | {r['peak_gb']:.1f} | MEM_RATIO_{name} | {diff} |")
    text = "\n".join(lines)
    ref_t = totals.get("diffusers")
    for name in SYSTEMS:
        t = totals.get(name)
        text = text.replace(f"TOTAL_RATIO_{name}", f"{t[0] / ref_t[0]:.2f}x" if t and ref_t else "-")
        text = text.replace(f"MEM_RATIO_{name}", f"{t[1] / ref_t[1]:.2f}x" if t and ref_t else "-")
    lines = [text, "", "Stage cells: time, peak resident memory during the stage (weights included)."]
    from svd_ms import policy
    ours = "ours-graph" if policy.default_execution_mode("CPU") == policy.GRAPH_MODE else "ours-pynative"
    if ours in totals and ref_t:
        lines.append(f"(ratio line: {names[ours]}, the CLI's default mode on CPU)")
        lines.append(f"e2e ratio_vs_diffusers={totals[ours][0] / ref_t[0]:.3f} mem_ratio={totals[ours][1] / ref_t[1]:.3f}")
    text = "\n".join(lines)
    print("\n" + text, flush=True)
    return text


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="4 frames of 128x128, 2 steps, no extrapolation")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma list out of {','.join(SYSTEMS)}")
    ap.add_argument("--frames", type=int, default=None, help="video frames (default 14; --quick 4)")
    ap.add_argument("--size", type=int, default=None, help="square frame size, multiple of 64 (default 256; --quick 128)")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps run (default 25; --quick 2)")
    ap.add_argument("--report_steps", type=int, default=None,
                    help="steps the table reports, extrapolated from --steps (default 25; --quick: --steps)")
    ap.add_argument("--decode_chunk", type=int, default=0, help="frames decoded at once (0: all, as both default)")
    ap.add_argument("--out_dir", default=None, help="videos and arrays (default: a temp dir)")
    ap.add_argument("--min_free_gb", type=float, default=14.0,
                    help="wait until this much memory is available before each system (full-size weights)")
    ap.add_argument("--wait_memory", type=int, default=1800, help="seconds to wait for that memory")
    ap.add_argument("--timeout", type=int, default=6 * 3600, help="seconds per system")
    ap.add_argument("--json", default=None, help="also write all results here")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.frames = args.frames or (4 if args.quick else 14)
    args.size = args.size or (128 if args.quick else 256)
    args.steps = args.steps or (2 if args.quick else 25)
    args.report_steps = args.report_steps or (args.steps if args.quick else 25)
    if args.size % 64:
        ap.error("--size must be a multiple of 64")
    if args.steps < 2 or args.report_steps < args.steps:
        ap.error("--steps must be >= 2 (the first step includes compilation) and <= --report_steps")
    args.out_dir = args.out_dir or tempfile.mkdtemp(prefix="svd_e2e_")
    os.makedirs(args.out_dir, exist_ok=True)
    if args.worker:
        args.decode_chunk = args.decode_chunk or None
        WORKERS[args.worker](args)
        return
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    bad = [s for s in systems if s not in WORKERS]
    if bad:
        ap.error(f"unknown systems {bad}")
    # diffusers first: its video is the reference the others are compared with
    systems = sorted(systems, key=lambda s: s != "diffusers")
    print(f"[e2e] systems: {', '.join(systems)}; outputs in {args.out_dir}", flush=True)
    results = [run_worker(name, args) for name in systems]
    text = report(args, results)
    common.write_json_report(args.json, args, text, results=results)


if __name__ == "__main__":
    main()
