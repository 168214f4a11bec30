"""A diffusers folder read directly as a checkpoint (svd_ms/checkpoint/diffusers_folder.py).

* The reader gives every tensor `svd_tools.convert` writes for the shared tiny folder, bit for
  bit, in the same dtype; its fp16-variant copy the same values in float16.
* Through the API with no config (SVDInferPipeline(checkpoint=FOLDER)) the folder, its fp16
  variant and a Hugging Face cache snapshot of it make the same video as the converted
  checkpoint, and that video is AnimateLCM's own (upstream) result for the folder.
* An incomplete or mismatched folder is refused in one line before any weight is loaded.
"""
import json
import os
import shutil

import numpy as np
import pytest
from omegaconf import OmegaConf
from safetensors.numpy import load_file, save_file

from conftest import REFERENCE, assert_close
from svd_ms.errors import CheckpointError, CheckpointMismatchError, ParamError

FOLDER = os.path.join(REFERENCE, "tiny_animatelcm_svd")
IMAGE = os.path.join(REFERENCE, "tiny_animatelcm_svd.input.png")
with open(os.path.join(REFERENCE, "tiny_animatelcm_svd.json")) as f:
    CASE = json.load(f)
RUN = "cfg_4step"  # AnimateLCM's 4-step run with guidance 1.0 to 1.2
FILES = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "image_encoder": "model"}
REVISION = "0123456789abcdef0123456789abcdef01234567"


def copy_folder(dest, variants=("",)):
    """The shared folder's JSON files and its weights once per variant: "" in float32 (as the
    full-precision release files are), ".fp16" in float16 (the tiny weights are float16 values)."""
    shutil.copytree(FOLDER, dest, ignore=shutil.ignore_patterns("*.safetensors"))
    for component, stem in FILES.items():
        for variant in variants:
            tensors = load_file(os.path.join(FOLDER, component, stem + ".safetensors"))
            dtype = np.float16 if variant == ".fp16" else np.float32
            tensors = {k: v.astype(dtype) for k, v in tensors.items()}
            save_file(tensors, os.path.join(dest, component, stem + variant + ".safetensors"))
    return str(dest)


def cache_snapshot(cache, model_id="acme/tiny-svd"):
    """The folder laid out as huggingface_hub leaves it: blobs, a snapshot of symlinks, refs/main."""
    repo = cache / ("models--" + model_id.replace("/", "--"))
    snapshot = repo / "snapshots" / REVISION
    for index, (root, _, names) in enumerate(os.walk(FOLDER)):
        for name in names:
            relative = os.path.relpath(os.path.join(root, name), FOLDER)
            blob = repo / "blobs" / f"{index:02d}{name}"
            blob.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(os.path.join(root, name), blob)
            (snapshot / relative).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(blob, (snapshot / relative).parent), snapshot / relative)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    return model_id


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(config path, .ckpt path): the folder's derived config and the converter's output."""
    from svd_ms.diffusers_config import describe_folder
    from svd_tools.convert import convert

    work = tmp_path_factory.mktemp("converted")
    config = str(work / "tiny_animatelcm_svd.yaml")
    OmegaConf.save(OmegaConf.create(describe_folder(FOLDER)[0]), config)
    return config, convert(FOLDER, config, str(work), log=lambda *a, **k: None)["output"]


def test_reader_gives_the_converted_checkpoint_bit_for_bit(converted, tmp_path):
    from svd_ms.checkpoint import MindSporeCkptReader
    from svd_ms.checkpoint.diffusers_folder import DiffusersFolderReader

    ckpt = MindSporeCkptReader(converted[1])
    folder = DiffusersFolderReader(FOLDER)
    assert sorted(folder.keys()) == sorted(ckpt.keys())
    differ = [k for k in ckpt.keys() if folder.info(k) != ckpt.info(k) or folder.read(k).dtype != ckpt.read(k).dtype
              or folder.read(k).tobytes() != ckpt.read(k).tobytes()]
    print(f"\n{len(ckpt.keys())} tensors compared with the converted checkpoint, {len(differ)} differ")
    assert differ == []
    assert folder.variant() is None
    # Zeros only where the converter zero-fills: the conditioner VAE's decoder and post_quant_conv.
    zeros = [k for k in folder.keys() if folder._entries[k][0] == "zeros"]
    assert zeros and all(k.startswith("conditioner.embedders.3.encoder.") and (".decoder." in k or "post_quant" in k)
                         for k in zeros)
    folder.close()

    both = copy_folder(tmp_path / "both", variants=("", ".fp16"))
    for prefer, dtype in ((False, "float32"), (True, "float16")):
        reader = DiffusersFolderReader(both, prefer_fp16=prefer)
        assert reader.variant() == (dtype == "float16" and "fp16" or None)
        key = "model.diffusion_model.input_blocks.0.0.weight"
        assert reader.info(key)[1] == dtype and reader.read(key).dtype == np.dtype(dtype)
        assert np.array_equal(reader.read(key).astype(np.float32), ckpt.read(key))
        reader.close()


def test_engine_loads_the_folder_as_it_loads_the_conversion(converted):
    from svd_ms.checkpoint import build_engine, load_checkpoint_into

    loaded = []
    for source in (FOLDER, converted[1]):
        engine = build_engine(converted[0])
        info = load_checkpoint_into(engine, source)
        loaded.append({n: p.asnumpy() for n, p in engine.parameters_and_names()})
        assert info["loaded"] == len(loaded[-1])
    differ = [n for n in loaded[0] if loaded[0][n].tobytes() != loaded[1][n].tobytes()]
    print(f"\n{len(loaded[0])} engine parameters, {len(differ)} differ between folder and conversion")
    assert differ == []


def _video(checkpoint, config=None, **extra):
    from svd_ms.pipeline import SVDInferPipeline
    from svd_ms.sampling_options import apply_sampling_options

    settings = CASE["common_settings"]
    pipe = SVDInferPipeline(config, checkpoint, num_frames=settings["num_frames"], fps=settings["fps"],
                            motion_bucket_id=settings["motion_bucket_id"],
                            noise_aug_strength=settings["noise_aug_strength"],
                            decode_chunk_size=settings["decode_chunk_size"], **extra)
    steps = CASE["runs"][RUN]["call_kwargs"]["num_inference_steps"]
    pipe.use_sampler(apply_sampling_options(pipe.sampler_config(), sampler="lcm", guider="linear",
                                            min_guidance_scale=1.0, max_guidance_scale=1.2), num_steps=steps)
    r = {k.split(".", 1)[1]: v for k, v in np.load(os.path.join(REFERENCE, "tiny_animatelcm_svd.reference.npz")).items()
         if k.startswith(RUN + ".")}
    noise = r["scheduler_step_noise"].reshape((-1,) + r["initial_latents_unit"].shape[1:])
    from PIL import Image
    pixels = np.asarray(Image.open(IMAGE).convert("RGB"))  # 96 x 64 as the reference run took it
    out = pipe.generate(pixels, latent_noise=r["initial_latents_unit"][0], cond_noise=r["cond_image_noise"],
                        sampler_noise=noise)
    return out, r


def _shown(capsys) -> str:
    """What the test printed so far (the log and the parity lines), shown again under -s."""
    out = capsys.readouterr().out
    with capsys.disabled():
        print(out, end="")
    return out


def test_folder_fp16_variant_and_cache_snapshot_run_without_a_config(converted, tmp_path, monkeypatch, capsys):
    base, reference = _video(converted[1], converted[0])
    folder, _ = _video(FOLDER)
    assert "matches no released SVD model" in _shown(capsys)
    # Upstream: AnimateLCM's own pipeline on the same folder (bounds of tests/test_animatelcm.py).
    assert_close(f"{RUN}.final_latents (folder)", folder["latents"], reference["final_latents"][0], rel=2e-4)
    assert_close(f"{RUN}.frames (folder)", folder["video"].transpose(0, 2, 3, 1), reference["frames"][0], max_abs=2e-3)
    # The weights are bit-identical (the tests above); two runs of one pipeline on this CPU
    # runtime differ by about 1e-6 (threaded reductions), hence a bound, not equality.
    assert_close("video: folder vs converted checkpoint", folder["video"], base["video"], max_abs=1e-5)

    fp16 = copy_folder(tmp_path / "fp16", variants=(".fp16",))
    assert_close("video: fp16 variant vs converted checkpoint", _video(fp16)[0]["video"], base["video"], max_abs=1e-5)

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    model_id = cache_snapshot(tmp_path / "hub")
    cached, _ = _video(model_id)
    assert_close("video: cache snapshot vs converted checkpoint", cached["video"], base["video"], max_abs=1e-5)
    assert REVISION in _shown(capsys)  # the log names the snapshot it used


def _refused(error, words, folder, **settings):
    from svd_ms.checkpoint import open_checkpoint

    with pytest.raises(error, match=words) as info:
        open_checkpoint(folder, **settings).close()
    assert "\n" not in str(info.value)
    return str(info.value)


def test_incomplete_or_mismatched_folders_are_refused_in_one_line(tmp_path):
    no_vae = copy_folder(tmp_path / "no_vae")
    os.remove(os.path.join(no_vae, "vae", "diffusion_pytorch_model.safetensors"))
    assert repr(no_vae) in _refused(CheckpointError, r"is incomplete: no vae weights", no_vae)
    from svd_ms.pipeline import SVDInferPipeline
    with pytest.raises(CheckpointError, match="no vae weights"):
        SVDInferPipeline(checkpoint=no_vae)
    with pytest.raises(ParamError, match=r"checkpoint .*missing.* does not exist"):
        SVDInferPipeline(checkpoint=str(tmp_path / "missing"))

    pickled = copy_folder(tmp_path / "pickled")
    os.rename(os.path.join(pickled, "unet", "diffusion_pytorch_model.safetensors"),
              os.path.join(pickled, "unet", "diffusion_pytorch_model.bin"))
    _refused(CheckpointError, r"unet weights as diffusion_pytorch_model.bin, which is read only by the converter: "
                              r"python -m svd_tools.convert", pickled)

    stray = copy_folder(tmp_path / "stray")
    path = os.path.join(stray, "unet", "diffusion_pytorch_model.safetensors")
    save_file(dict(load_file(path), **{"down_blocks.0.bogus.weight": np.zeros(2, np.float32)}), path)
    _refused(CheckpointMismatchError, r"1 tensors that have no place in an SVD model: unet/down_blocks.0.bogus.weight",
             stray)

    broken_qkv = copy_folder(tmp_path / "qkv")
    path = os.path.join(broken_qkv, "image_encoder", "model.safetensors")
    tensors = load_file(path)
    tensors["vision_model.encoder.layers.0.self_attn.k_proj.weight"] = np.zeros((32, 7), np.float32)
    save_file(tensors, path)
    _refused(CheckpointMismatchError, r"cannot be combined", broken_qkv)


def test_weights_that_do_not_fit_their_own_json_are_refused(tmp_path, converted):
    """The config says one size, the weights hold another: refused before a weight is loaded."""
    from svd_ms.checkpoint import build_engine, load_checkpoint_into

    small = copy_folder(tmp_path / "small")
    path = os.path.join(small, "unet", "diffusion_pytorch_model.safetensors")
    tensors = load_file(path)
    tensors["conv_in.weight"] = tensors["conv_in.weight"][:16]
    save_file(tensors, path)
    engine = build_engine(converted[0])
    before = engine.model.diffusion_model.out[2].weight.asnumpy().copy()
    with pytest.raises(CheckpointMismatchError, match=r"input_blocks\.0\.0\.weight \(16, 8, 3, 3\) vs \(32, 8, 3, 3\)") \
            as info:
        load_checkpoint_into(engine, small)
    assert "\n" not in str(info.value)
    assert np.array_equal(engine.model.diffusion_model.out[2].weight.asnumpy(), before)


def test_fp16_run_reads_the_fp16_files(tmp_path, converted):
    """With both variants present, a float16 load reads the .fp16 files and a float32 load the
    full-precision ones (told apart here by giving the fp16 files other values)."""
    import mindspore as ms

    from svd_ms.checkpoint import build_engine, load_checkpoint_into
    from svd_ms.checkpoint.diffusers_folder import wants_fp16

    both = copy_folder(tmp_path / "both", variants=("", ".fp16"))
    path = os.path.join(both, "unet", "diffusion_pytorch_model.fp16.safetensors")
    save_file({k: v * np.float16(0.5) for k, v in load_file(path).items()}, path)
    full = load_file(os.path.join(both, "unet", "diffusion_pytorch_model.safetensors"))["conv_in.weight"]
    for dtype, expected in ((None, full), (ms.float16, full * 0.5)):
        engine = build_engine(converted[0])
        assert wants_fp16(engine, dtype) == (dtype == ms.float16)
        load_checkpoint_into(engine, both, dtype=dtype)
        got = engine.model.diffusion_model.input_blocks[0][0].weight.asnumpy().astype(np.float32)
        assert np.array_equal(got, expected.astype(np.float32)), f"dtype {dtype}: wrong variant read"
    for _, param in engine.parameters_and_names():
        param.set_dtype(ms.float16)  # an O2 engine: most parameters float16 before loading
    assert wants_fp16(engine)
