"""Convert Stable Video Diffusion weights from PyTorch releases into a MindSpore .ckpt.

    python -m svd_tools.convert --pt_weights_file PATH --config CONFIG --out_dir DIR

(`python svd_tools/convert.py ...` works too once the project is installed: `pip install -e .`.)

PATH is one of
  * the upstream single file (svd.safetensors, svd_xt.safetensors, svd_image_decoder.safetensors,
    ...), or an older torch pickle .ckpt / .pt, possibly wrapped as {"state_dict": ...};
  * a diffusers-format folder holding unet/, vae/ and image_encoder/.
The result, DIR/<name>.ckpt, is read by mindspore.load_checkpoint; its parameter names are
the svd_ms engine's.

Everything is checked against the model that CONFIG describes before a byte is written, and
tensors are streamed from the input to the output one at a time.
"""
import sys

if __name__ == "__main__" and not __package__:
    # Run as a file: the packages come from the installed project, never from a path edit.
    import importlib.util

    if importlib.util.find_spec("svd_tools") is None or importlib.util.find_spec("svd_ms") is None:
        sys.stderr.write("error: svd_ms is not installed: run `pip install -e .` in the repository, "
                         "or `python -m svd_tools.convert ...` from the repository root\n")
        sys.exit(2)
    from svd_tools.convert import main

    sys.exit(main())

import argparse
import os
import re
import shutil
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from svd_ms import checkpoint as ck
from svd_ms.errors import ConvertError, SVDError
from svd_ms.util import load_config
from svd_ms import diffusers_map
from svd_tools.ms_ckpt import CheckpointWriter, ms_type_name
from svd_tools.sources import open_file_source

DTYPES = {"fp16": np.float16, "fp32": np.float32, "keep": None}

# Parameters the engine may expect that a diffusers folder cannot provide: the conditioner's
# image-latent embedder is an AutoencoderKLModeOnly that carries a (2D) decoder and a
# post_quant_conv, but only ever encodes, so they do not take part in inference.  The
# diffusers release keeps only what inference uses.
_DIFFUSERS_ABSENT_UNUSED = re.compile(r"^conditioner\.embedders\.\d+\.encoder\.(decoder\.|post_quant_conv\.)")


@dataclass
class Item:
    """One engine parameter of the output."""

    name: str
    shape: Tuple[int, ...]
    src_dtype: str  # numpy dtype name of the (first) source tensor, "bfloat16" included
    sources: Tuple[Tuple[object, str], ...]  # (reader, key) pairs; empty for zero-filled
    op: str = "copy"


def expected_shapes(config) -> Dict[str, Tuple[int, ...]]:
    """Names and shapes of every engine parameter for ``config``, without allocating weights."""
    return {k: tuple(v) for k, v in ck.engine_param_shapes(config).items()}


def _human(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.2f} {unit}"
        nbytes /= 1000.0
    return f"{nbytes:.2f} GB"


def _first(names, n=5) -> str:
    names = list(names)
    more = f" (+{len(names) - n} more)" if len(names) > n else ""
    return ", ".join(names[:n]) + more


# ----------------------------------------------------------------------------- inputs


_WEIGHT_FILES = {
    "unet": "diffusion_pytorch_model",
    "vae": "diffusion_pytorch_model",
    "image_encoder": "model",
}


def _component_file(folder: str, component: str, prefer_fp16: bool) -> str:
    base = os.path.join(folder, component, _WEIGHT_FILES[component])
    variants = [".fp16", ""] if prefer_fp16 else ["", ".fp16"]
    candidates = []
    for ext in (".safetensors", ".safetensors.index.json", ".bin"):
        candidates += [f"{base}{variant}{ext}" for variant in variants]
    for path in candidates:
        if os.path.isfile(path):
            return path
    names = ", ".join(os.path.basename(c) for c in candidates[:2])
    raise ConvertError(f"diffusers folder {folder} has no {component} weights (looked for {component}/{{{names}, ...}})")


def _conditioner_indices(cfg) -> Tuple[int, Optional[int]]:
    """Positions of the CLIP image embedder and the VAE-latent embedder in the config."""
    clip_index, vae_index = 0, None
    try:
        models = cfg.model.params.conditioner_config.params.emb_models
        for i, entry in enumerate(models):
            target = str(entry.get("target", ""))
            if target.endswith("FrozenOpenCLIPImagePredictionEmbedder"):
                clip_index = i
            elif target.endswith("VideoPredictionEmbedderWithEncoder"):
                vae_index = i
    except Exception:  # the engine reports unusable configs on its own
        return 0, 3
    return clip_index, vae_index


def _plan_single(source) -> Tuple[List[Item], Dict[str, str], Dict[str, Tuple[int, ...]]]:
    """Plan for an upstream-layout file: names are kept, the engine's ignore list applies."""
    items: List[Item] = []
    ignored: Dict[str, str] = {}
    for key in source.keys():
        shape, dtype = source.info(key)
        name = ck.map_upstream_key(key)
        if name is None:
            ignored[key] = ck.ignored_reason(key) or "not used by the engine"
            continue
        items.append(Item(name, tuple(shape), dtype, ((source, key),)))
    return items, ignored, {}


def _plan_diffusers(folder, sources, cfg, expected):
    keys = {comp: src.keys() for comp, src in sources.items()}
    clip_index, vae_index = _conditioner_indices(cfg)
    rules, ignored, unknown = diffusers_map.plan(keys, clip_index, vae_index)

    def locate(prefixed):
        comp, key = prefixed.split("/", 1)
        return sources[comp], key

    items: List[Item] = []
    odd: Dict[str, Tuple[int, ...]] = {}
    for rule in rules:
        srcs = tuple(locate(s) for s in rule.sources)
        infos = [src.info(key) for src, key in srcs]
        shape = diffusers_map.output_shape(rule.op, [tuple(i[0]) for i in infos])
        if shape is None:
            raise ConvertError(
                f"{folder}: tensors {_first(rule.sources)} cannot be combined (shapes {[i[0] for i in infos]})"
            )
        names = [(u, ck.map_upstream_key(u)) for u in rule.upstream]
        wanted = [(u, n) for u, n in names if n is not None and n in expected]
        if not wanted:  # keep one so that the mismatch report names it
            wanted = [(u, n) for u, n in names if n is not None][:1]
            if not wanted:
                ignored[rule.sources[0]] = ck.ignored_reason(rule.upstream[0]) or "not used by the engine"
                continue
        for _, name in wanted:
            items.append(Item(name, shape, infos[0][1], srcs, rule.op))
    for prefixed in unknown:
        src, key = locate(prefixed)
        odd[prefixed] = tuple(src.info(key)[0])
    return items, ignored, odd


# ----------------------------------------------------------------------------- conversion


def _with_unet_from(items: List[Item], unet_file: str, expected, opened: list) -> List[Item]:
    """`items` with every UNet parameter taken from a diffusers-layout UNet-only file instead,
    checked name by name and shape by shape first (one line naming the first misfit)."""
    from svd_ms.unet_weights import UNET_PREFIX, plan_unet_weights
    unet = open_file_source(unet_file)
    opened.append(unet)
    infos = {key: unet.info(key) for key in unet.keys()}
    places = plan_unet_weights({key: tuple(shape) for key, (shape, _) in infos.items()}, expected, unet_file)
    kept = [it for it in items if not it.name.startswith(UNET_PREFIX)]
    return kept + [Item(target, tuple(infos[key][0]), infos[key][1], ((unet, key),)) for key, target in places.items()]


def _convert_array(array: np.ndarray, target) -> np.ndarray:
    if target is None or not np.issubdtype(array.dtype, np.floating) or array.dtype == target:
        return array
    return array.astype(target)


def _materialize(item: Item, target, keep_bf16: bool):
    """(array, type_name) of one output tensor."""
    if not item.sources:  # zero-filled
        if item.src_dtype == "bfloat16" and keep_bf16:
            return np.zeros(item.shape, dtype=np.uint16), "BFloat16"
        dtype = target or (np.float32 if item.src_dtype == "bfloat16" else np.dtype(item.src_dtype))
        return np.zeros(item.shape, dtype=dtype), None
    raw = keep_bf16 and item.src_dtype == "bfloat16" and item.op in ("copy", "conv1x1", "transpose", "qkv")
    arrays = [src.read(key, raw_bf16=raw) for src, key in item.sources]
    array = diffusers_map.apply(item.op, arrays)
    if raw:
        return array, "BFloat16"
    return _convert_array(array, target), None


def _out_type(item: Item, target, keep_bf16: bool) -> str:
    """MindSpore type name an item is saved as."""
    if item.src_dtype == "bfloat16":
        return "BFloat16" if keep_bf16 else ms_type_name(target or np.float32)
    src = np.dtype(item.src_dtype)
    if target is not None and np.issubdtype(src, np.floating):
        return ms_type_name(target)
    return ms_type_name(src)


_ITEMSIZE = {"BFloat16": 2, "Float16": 2, "Float32": 4, "Float64": 8, "Int8": 1, "UInt8": 1, "Bool": 1,
             "Int16": 2, "UInt16": 2, "Int32": 4, "UInt32": 4, "Int64": 8, "UInt64": 8}


def _output_nbytes(items: List[Item], target, keep_bf16: bool) -> int:
    return sum(int(np.prod(it.shape, dtype=np.int64)) * _ITEMSIZE[_out_type(it, target, keep_bf16)] for it in items)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m svd_tools.convert",
        description="Convert Stable Video Diffusion PyTorch weights (upstream .safetensors / .ckpt, or a "
        "diffusers-format folder) into a MindSpore .ckpt for the svd_ms engine.",
    )
    p.add_argument(
        "--pt_weights_file",
        required=True,
        metavar="PATH",
        help="the weights to convert: an upstream single-file checkpoint (.safetensors, or a torch pickle "
        ".ckpt/.pt, possibly {'state_dict': ...}), or a diffusers-format folder with unet/, vae/ and "
        "image_encoder/ (fp16 variants accepted)",
    )
    p.add_argument(
        "--config",
        required=True,
        metavar="CONFIG",
        help="the model config the weights are for, e.g. configs/svd_xt.yaml; every tensor is checked "
        "against the model it describes (names and shapes) before anything is written",
    )
    p.add_argument(
        "--out_dir",
        required=True,
        metavar="DIR",
        help="where to write <name>.ckpt, <name> being the input file's stem or the folder's name "
        "(created if missing)",
    )
    p.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default="keep",
        help="floating-point type of the saved tensors: fp16, fp32, or keep each tensor's own type "
        "(default: keep)",
    )
    p.add_argument(
        "--unet_weights",
        metavar="PATH",
        default=None,
        help="a UNet-only .safetensors in the diffusers layout (a file, a unet/ folder or a pipeline folder; "
        "e.g. AnimateLCM-SVD-xt's) that replaces the UNet of --pt_weights_file: one merged checkpoint, "
        "<name>_<unet name>.ckpt",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing output file; without it an existing output is never touched",
    )
    return p


def convert(pt_weights_file: str, config: str, out_dir: str, dtype: str = "keep", force: bool = False, log=print,
            unet_weights: Optional[str] = None):
    """Convert and return a summary dict.  Raises an SVDError (ConvertError, ConfigError,
    CheckpointError) with a one-line message for anything a user can get wrong."""
    started = time.time()
    target = DTYPES[dtype]
    src_path = os.path.abspath(pt_weights_file)
    if not os.path.exists(src_path):
        raise ConvertError(f"input not found: {ck.quote_path(pt_weights_file)}")
    # Before anything else: a config names the classes to build, and is refused before any import.
    cfg = load_config(config, require_model=True)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ConvertError(f"--out_dir {out_dir} exists and is not a directory")
    is_folder = os.path.isdir(src_path)
    stem = os.path.basename(src_path.rstrip(os.sep)) if is_folder else os.path.splitext(os.path.basename(src_path))[0]
    if unet_weights is not None:
        from svd_ms.unet_weights import resolve_unet_file
        unet_file = resolve_unet_file(unet_weights)
        unet_path = os.path.abspath(unet_weights).rstrip(os.sep)
        stem += "_" + (os.path.basename(unet_path) if os.path.isdir(unet_path)
                       else os.path.splitext(os.path.basename(unet_path))[0])
    out_path = os.path.join(out_dir, stem + ".ckpt")
    if os.path.exists(out_path) and not force:
        raise ConvertError(f"{out_path} already exists; pass --force to replace it")

    opened = []
    try:
        # Inputs first: a file that is no checkpoint is refused before the engine is loaded.
        if is_folder:
            sources = OrderedDict()
            for comp in diffusers_map.COMPONENTS:
                sources[comp] = open_file_source(_component_file(src_path, comp, prefer_fp16=(dtype == "fp16")))
                opened.append(sources[comp])
        else:
            source = open_file_source(src_path)
            opened.append(source)

        try:
            expected = expected_shapes(cfg)
        except SVDError as exc:
            raise ConvertError(f"{config}: {exc}") from None
        except Exception as exc:  # a config whose parameters the model classes reject
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise ConvertError(f"cannot build the model described by {config} ({type(exc).__name__}: {first})") from None

        if is_folder:
            items, ignored, odd = _plan_diffusers(pt_weights_file, sources, cfg, expected)
        else:
            items, ignored, odd = _plan_single(source)

        if unet_weights is not None:
            items = _with_unet_from(items, unet_file, expected, opened)

        seen = Counter(it.name for it in items)
        dups = [n for n, c in seen.items() if c > 1]
        if dups:
            raise ConvertError(f"{pt_weights_file}: several tensors map to the same parameter: {_first(dups)}")

        zero_filled: List[str] = []
        if is_folder:
            floats = Counter(it.src_dtype for it in items if it.src_dtype in ("float16", "float32", "bfloat16"))
            fill_dtype = floats.most_common(1)[0][0] if floats else "float32"
            for name in expected:
                if name not in seen and _DIFFUSERS_ABSENT_UNUSED.match(name):
                    zero_filled.append(name)
                    items.append(Item(name, tuple(expected[name]), fill_dtype, ()))

        found = {it.name: tuple(it.shape) for it in items}
        found.update(odd)
        try:
            ck.check_names(expected, found, source=f"{pt_weights_file}")
        except SVDError as exc:
            msg = str(exc)
            msg = msg.replace("does not fit the config", f"does not fit {config}")
            if config not in msg:
                msg = f"{pt_weights_file} does not fit {config}: {msg}"
            raise ConvertError(msg) from None

        keep_bf16 = target is None
        nbytes = _output_nbytes(items, target, keep_bf16)
        created_dir = not os.path.isdir(out_dir)
        os.makedirs(out_dir, exist_ok=True)
        free = shutil.disk_usage(out_dir).free
        if free < nbytes * 1.02 + (1 << 20):
            if created_dir:
                os.rmdir(out_dir)
            raise ConvertError(f"not enough disk space in {out_dir}: need {_human(nbytes)}, {_human(free)} free")

        tmp_path = os.path.join(out_dir, f".{stem}.ckpt.part-{os.getpid()}")
        overflow: List[str] = []
        done = False
        try:
            with open(tmp_path, "wb") as f:
                writer = CheckpointWriter(f)
                for it in items:
                    array, type_name = _materialize(it, target, keep_bf16)
                    if tuple(array.shape) != tuple(it.shape):  # the file disagrees with its own header
                        raise ConvertError(f"{pt_weights_file}: tensor for {it.name} has shape {array.shape}, expected {it.shape}")
                    if target is np.float16 and it.sources and array.dtype == np.float16 and not np.isfinite(array).all():
                        overflow.append(it.name)
                    writer.write(it.name, array, type_name)
                    del array
                    for src, key in it.sources:
                        if hasattr(src, "release"):
                            src.release(key)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_path, out_path)
            done = True
        finally:
            if os.path.exists(tmp_path):
                os.remove(tmp_path)
            if not done and created_dir and not os.listdir(out_dir):
                os.rmdir(out_dir)
    finally:
        for src in opened:
            src.close()

    out_types = Counter(_out_type(it, target, keep_bf16) for it in items)
    summary = {
        "output": out_path,
        "converted": len(items) - len(zero_filled),
        "zero_filled": zero_filled,
        "ignored": ignored,
        "dtypes": dict(out_types),
        "bytes": os.path.getsize(out_path),
        "overflow": overflow,
        "seconds": time.time() - started,
    }
    _print_summary(summary, log)
    return summary


def _print_summary(s, log):
    log(f"wrote {s['output']} ({_human(s['bytes'])}) in {s['seconds']:.1f} s")
    log(f"  converted:   {s['converted']} tensors")
    if s["zero_filled"]:
        log(
            f"  zero-filled: {len(s['zero_filled'])} tensors of the conditioner's VAE decoder and post_quant_conv "
            "(absent from the diffusers format, unused at inference)"
        )
    if s["ignored"]:
        by_reason = Counter(s["ignored"].values())
        log(f"  ignored:     {len(s['ignored'])} tensors: " + "; ".join(f"{n} {r}" for r, n in by_reason.items()))
    else:
        log("  ignored:     none")
    log("  dtype:       " + ", ".join(f"{t} ({n})" for t, n in sorted(s["dtypes"].items())))
    if s["overflow"]:
        log(f"  warning: {len(s['overflow'])} tensors overflow float16 (inf): {_first(s['overflow'])}")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        convert(args.pt_weights_file, args.config, args.out_dir, dtype=args.dtype, force=args.force,
                unet_weights=args.unet_weights)
    except SVDError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
