"""Convert Stable Video Diffusion weights from PyTorch releases into a MindSpore .ckpt.

    python -m svd_tools.convert --pt_weights_file PATH --model_config CONFIG --out_dir DIR

(`python svd_tools/convert.py ...` works too once the project is installed: `pip install -e .`.)

PATH is one of
  * the upstream single file (svd.safetensors, svd_xt.safetensors, svd_image_decoder.safetensors,
    ...), or an older torch pickle .ckpt / .pt, possibly wrapped as {"state_dict": ...};
  * a diffusers-format folder holding unet/, vae/ and image_encoder/.
The result, DIR/<name>.ckpt, is read by mindspore.load_checkpoint; its parameter names are
the svd_ms engine's.

CONFIG is the model config (configs/svd_xt.yaml, ...); `--config` is still accepted as its old
name, with a note. Everything is checked against the model that CONFIG describes before a byte is written, and
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
import shutil
import time
from collections import Counter, OrderedDict
from typing import Dict, List, Optional, Tuple

import numpy as np

from svd_ms import checkpoint as ck
from svd_ms.checkpoint import CKPT_DTYPES, CheckpointWriter, ms_type_name
from svd_ms.checkpoint.safetensors import itemsize
from svd_ms.errors import ConvertError, SVDError, UsageError
from svd_ms.util import load_config
from svd_ms import diffusers_map
from svd_tools.plan import (Item, component_file, first_names, plan_diffusers, plan_single, with_unet_from,
                             zero_filled_items)
from svd_tools.sources import open_file_source

DTYPES = {"fp16": np.float16, "fp32": np.float32, "keep": None}

def expected_shapes(config) -> Dict[str, Tuple[int, ...]]:
    """Names and shapes of every engine parameter for ``config``, without allocating weights."""
    return {k: tuple(v) for k, v in ck.engine_param_shapes(config).items()}


def _human(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.2f} {unit}"
        nbytes /= 1000.0
    return f"{nbytes:.2f} GB"


# ----------------------------------------------------------------------------- conversion


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


def _output_nbytes(items: List[Item], target, keep_bf16: bool) -> int:
    return sum(int(np.prod(it.shape, dtype=np.int64)) * itemsize(CKPT_DTYPES[_out_type(it, target, keep_bf16)])
               for it in items)


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
        "--model_config",
        metavar="CONFIG",
        help="the model config the weights are for, e.g. configs/svd_xt.yaml; every tensor is checked "
        "against the model it describes (names and shapes) before anything is written (required)",
    )
    p.add_argument("--config", dest="old_config", metavar="CONFIG",
                   help="the old name of --model_config (deprecated; image_to_video.py's --config is a YAML "
                   "file of flags)")
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


def convert(pt_weights_file: str, model_config: str, out_dir: str, dtype: str = "keep", force: bool = False, log=print,
            unet_weights: Optional[str] = None):
    """Convert and return a summary dict.  Raises an SVDError (ConvertError, ConfigError,
    CheckpointError) with a one-line message for anything a user can get wrong."""
    started = time.time()
    target = DTYPES[dtype]
    src_path = os.path.abspath(pt_weights_file)
    if not os.path.exists(src_path):
        raise ConvertError(f"input not found: {ck.quote_path(pt_weights_file)}")
    # Before anything else: a model config names the classes to build, and is refused before any import.
    cfg = load_config(model_config, require_model=True)
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
                sources[comp] = open_file_source(component_file(src_path, comp, prefer_fp16=(dtype == "fp16")))
                opened.append(sources[comp])
        else:
            source = open_file_source(src_path)
            opened.append(source)

        try:
            expected = expected_shapes(cfg)
        except SVDError as exc:  # a model config whose parameters the model classes reject, among others
            raise ConvertError(f"{model_config}: {exc}") from None

        if is_folder:
            items, ignored, odd = plan_diffusers(pt_weights_file, sources, cfg, expected)
        else:
            items, ignored, odd = plan_single(source)

        if unet_weights is not None:
            items = with_unet_from(items, unet_file, expected, opened)

        seen = Counter(it.name for it in items)
        dups = [n for n, c in seen.items() if c > 1]
        if dups:
            raise ConvertError(f"{pt_weights_file}: several tensors map to the same parameter: {first_names(dups)}")

        zero_filled: List[str] = []
        if is_folder:
            zero_items = zero_filled_items(items, expected)
            zero_filled = [it.name for it in zero_items]
            items += zero_items

        found = {it.name: tuple(it.shape) for it in items}
        found.update(odd)
        try:
            ck.check_names(expected, found, source=f"{pt_weights_file}")
        except SVDError as exc:
            msg = str(exc)
            msg = msg.replace("does not fit the config", f"does not fit {model_config}")
            if model_config not in msg:
                msg = f"{pt_weights_file} does not fit {model_config}: {msg}"
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
        log(f"  warning: {len(s['overflow'])} tensors overflow float16 (inf): {first_names(s['overflow'])}")


def _model_config(args) -> str:
    """--model_config, or its old name --config (with a one-line note on stderr)."""
    if args.old_config is not None:
        if args.model_config is not None and args.model_config != args.old_config:
            raise UsageError("--config is the old name of --model_config; give only one of them")
        print("note: svd_tools.convert's --config is now --model_config; --config will be removed", file=sys.stderr)
        return args.old_config
    if args.model_config is None:
        raise UsageError("--model_config is required (the model config the weights are for, e.g. configs/svd_xt.yaml)")
    return args.model_config


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        model_config = _model_config(args)
        convert(args.pt_weights_file, model_config, args.out_dir, dtype=args.dtype, force=args.force,
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
