"""Diffusers-format folders -> MindSpore .ckpt (svd_tools/convert.py, svd_ms/diffusers_map.py).

* The full-size diffusers models (built on torch's "meta" device, no memory) map onto the
  full-size upstream manifest completely.
* The mapping is right in meaning, not only in names: the shared tiny upstream checkpoint,
  poured into diffusers/transformers models through the inverse of the mapping, reproduces
  the upstream reference outputs (UNet, VAE decoder, VAE encoder, CLIP image embedding).
* A tiny diffusers folder with random weights converts through the CLI; every tensor lands
  where the mapping says, fp16 variants included.
* With the engine present: the engine loaded from that .ckpt matches diffusers'/transformers'
  outputs on the same inputs.
"""
import json
import os
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import convert_helpers as H  # noqa: E402  (tests/ is on sys.path under pytest)
from svd_ms import diffusers_map as dm  # noqa: E402

NPZ = os.path.join(H.REF, "tiny_svd.reference.npz")
TEXT_TOWER = re.compile(r"^conditioner\.embedders\.\d+\.open_clip\.model\.(?!visual\.)")
ABSENT_IN_DIFFUSERS = re.compile(r"^conditioner\.embedders\.\d+\.encoder\.(decoder\.|post_quant_conv\.)")


# ------------------------------------------------------------------------------------ model builders


def build_models(size: str, device=None):
    """diffusers UNet, VAE and transformers CLIP tower in the structure of tiny_svd.sgm.yaml
    ("tiny") or of configs/svd.yaml ("full")."""
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    if size == "tiny":
        # model_channels 32, channel_mult 1,2,4,4, num_head_channels 16, context_dim 32,
        # adm_in_channels 48 = 3 x 16; VAE ch 32; ViT width 64, 2 layers, head_width 32, embed 32.
        unet_kw = dict(block_out_channels=(32, 64, 128, 128), addition_time_embed_dim=16,
                       projection_class_embeddings_input_dim=48, cross_attention_dim=32,
                       num_attention_heads=(2, 4, 8, 8), num_frames=5)
        vae_ch = (32, 64, 128, 128)
        clip_kw = dict(hidden_size=64, intermediate_size=256, projection_dim=32, num_hidden_layers=2,
                       num_attention_heads=2)
    else:
        unet_kw = dict(block_out_channels=(320, 640, 1280, 1280), addition_time_embed_dim=256,
                       projection_class_embeddings_input_dim=768, cross_attention_dim=1024,
                       num_attention_heads=(5, 10, 20, 20), num_frames=25)
        vae_ch = (128, 256, 512, 512)
        clip_kw = dict(hidden_size=1280, intermediate_size=5120, projection_dim=1024, num_hidden_layers=32,
                       num_attention_heads=16)
    with torch.device(device or "cpu"):
        unet = UNetSpatioTemporalConditionModel(in_channels=8, out_channels=4, layers_per_block=2,
                                                transformer_layers_per_block=1, **unet_kw)
        vae = AutoencoderKLTemporalDecoder(in_channels=3, out_channels=3, block_out_channels=vae_ch,
                                           down_block_types=("DownEncoderBlock2D",) * 4, layers_per_block=2,
                                           latent_channels=4, scaling_factor=0.18215)
        clip = CLIPVisionModelWithProjection(CLIPVisionConfig(image_size=224, patch_size=14, hidden_act="gelu",
                                                              layer_norm_eps=1e-5, **clip_kw))
    return {"unet": unet, "vae": vae, "image_encoder": clip}


def diffusers_shapes(models):
    return {f"{comp}/{k}": tuple(t.shape) for comp, m in models.items() for k, t in m.state_dict().items()}


def plan_names(shapes, clip_index=0, vae_index=3, wanted=None):
    """{upstream name: (rule, shape)} the mapping produces from diffusers names/shapes."""
    keys = {comp: [k.split("/", 1)[1] for k in shapes if k.startswith(comp + "/")] for comp in dm.COMPONENTS}
    rules, ignored, unknown = dm.plan(keys, clip_index, vae_index)
    out = {}
    for rule in rules:
        shape = dm.output_shape(rule.op, [shapes[s] for s in rule.sources])
        targets = [t for t in rule.upstream if wanted is None or t in wanted] or list(rule.upstream[:1])
        for t in targets:
            assert t not in out, f"{t} produced twice"
            out[t] = (rule, shape)
    return out, rules, ignored, unknown


# ------------------------------------------------------------------------------------ full size


def test_full_size_diffusers_map_covers_manifest():
    manifest = {k: tuple(v) for k, v in json.load(open(os.path.join(H.MANIFEST, "svd.keys.json"))).items()}
    models = build_models("full", device="meta")
    shapes = diffusers_shapes(models)
    produced, rules, ignored, unknown = plan_names(shapes, wanted=set(manifest))

    assert unknown == [], f"diffusers tensors with no upstream name: {unknown[:5]}"
    used = {s for r in rules for s in r.sources} | set(ignored)
    assert used == set(shapes), f"diffusers tensors left over: {sorted(set(shapes) - used)[:5]}"
    extra = sorted(set(produced) - set(manifest))
    assert extra == [], f"names not in the manifest: {extra[:5]}"
    bad = [(k, produced[k][1], manifest[k]) for k in produced if produced[k][1] != manifest[k]]
    assert bad == [], f"shape mismatches: {bad[:5]}"
    missing = [k for k in manifest if k not in produced]
    not_explained = [k for k in missing if not (TEXT_TOWER.match(k) or ABSENT_IN_DIFFUSERS.match(k))]
    assert not_explained == [], f"manifest names the diffusers format does not fill: {not_explained[:5]}"
    n_values = sum(int(np.prod(s)) for s in shapes.values())
    print(f"\nfull size: {len(shapes)} diffusers tensors ({n_values:,} values) -> {len(produced)} of "
          f"{len(manifest)} upstream names; not in diffusers: "
          f"{sum(bool(TEXT_TOWER.match(k)) for k in missing)} text-tower remnants, "
          f"{sum(bool(ABSENT_IN_DIFFUSERS.match(k)) for k in missing)} conditioner-VAE decoder/post_quant_conv")


def test_full_size_diffusers_map_covers_engine():
    """The same against the engine's own parameter list for configs/svd.yaml (identical to the
    manifest minus ignored names with the stub; the real check once svd_ms.checkpoint exists)."""
    from svd_ms import checkpoint as ck

    expected = H.expected_shapes(os.path.join(H.REPO, "configs", "svd.yaml"))
    models = build_models("full", device="meta")
    produced, _, _, _ = plan_names(diffusers_shapes(models), wanted=set(expected))
    engine_names = {}
    for up, (_, shape) in produced.items():
        name = ck.map_upstream_key(up)
        if name is not None:
            engine_names[name] = shape
    for name in expected:
        if name not in engine_names and ABSENT_IN_DIFFUSERS.match(ck.map_upstream_key(name) or name):
            engine_names[name] = tuple(expected[name])  # what the converter zero-fills
    ck.check_names({k: tuple(v) for k, v in expected.items()}, engine_names)


# ------------------------------------------------------------------------------------ semantic check


def _inverse_fill(models, upstream):
    """Load upstream-layout weights into the diffusers models through the inverse mapping."""
    shapes = diffusers_shapes(models)
    keys = {comp: [k.split("/", 1)[1] for k in shapes if k.startswith(comp + "/")] for comp in dm.COMPONENTS}
    rules, ignored, unknown = dm.plan(keys, 0, 3)
    assert not unknown
    values = {}
    for rule in rules:
        # diffusers' single VAE encoder is the one SVD encodes the conditioning image with:
        # upstream, the encoder inside the conditioner (with quant_conv).
        cands = [t for t in rule.upstream if t in upstream]
        cond = [t for t in cands if t.startswith("conditioner.")]
        src = upstream[(cond or cands)[0]]
        if rule.op == "copy":
            parts = [src]
        elif rule.op == "conv1x1":
            parts = [src.reshape(src.shape[:2])]
        elif rule.op == "transpose":
            parts = [src.T]
        elif rule.op == "qkv":
            parts = np.split(src, 3, axis=0)
        for name, part in zip(rule.sources, parts):
            values[name] = part
    for comp, model in models.items():
        sd = model.state_dict()
        new = {}
        for k, t in sd.items():
            v = values.get(f"{comp}/{k}")
            if v is None:
                assert f"{comp}/{k}" in ignored, k
                new[k] = t
            else:
                new[k] = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)).reshape(t.shape)
        model.load_state_dict(new, strict=True)


def _report(name, got, want, bound_max, bound_mean):
    err = np.abs(got - want)
    scale = float(np.abs(want).max())
    print(f"\n{name}: max abs err {err.max():.3e} (bound {bound_max:.0e}), mean {err.mean():.3e} "
          f"(bound {bound_mean:.0e}), reference max |x| {scale:.3g}")
    assert err.max() <= bound_max and err.mean() <= bound_mean


@pytest.fixture(scope="module")
def tiny_upstream():
    from safetensors import safe_open

    with safe_open(H.TINY, framework="np") as f:
        return {k: f.get_tensor(k).astype(np.float32) for k in f.keys()}


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(NPZ))


@pytest.fixture(scope="module")
def tiny_diffusers_from_upstream(tiny_upstream):
    torch.manual_seed(0)
    models = build_models("tiny")
    _inverse_fill(models, tiny_upstream)
    for m in models.values():
        m.eval()
    return models


def test_mapping_reproduces_upstream_unet(tiny_diffusers_from_upstream, reference):
    unet = tiny_diffusers_from_upstream["unet"]
    r = reference
    T = 5
    x = torch.from_numpy(r["unet_x"]).reshape(2, T, *r["unet_x"].shape[1:])
    t = torch.from_numpy(r["unet_t"][::T].copy())
    ctx = torch.from_numpy(r["unet_context"][::T].copy())
    y = torch.from_numpy(r["unet_y"][::T].copy())
    # the vector condition arrives already embedded: bypass diffusers' own embedding of
    # (fps, motion, cond_aug) and hand it the reference's y
    assert np.array_equal(r["unet_t"].reshape(2, T), np.repeat(r["unet_t"][::T, None], T, 1))

    class GivenY(torch.nn.Module):
        def forward(self, ids):
            return y.reshape(ids.shape[0], -1)

    unet.add_time_proj = GivenY()
    with torch.no_grad():
        out = unet(x, t, encoder_hidden_states=ctx, added_time_ids=torch.zeros(2, 3)).sample
    _report("UNet (upstream weights through the inverse map) vs upstream unet_out",
            out.reshape(r["unet_out"].shape).numpy(), r["unet_out"], 1e-3, 1e-4)


def test_mapping_reproduces_upstream_vae(tiny_diffusers_from_upstream, reference):
    vae = tiny_diffusers_from_upstream["vae"]
    r = reference
    with torch.no_grad():
        x = vae.decode(torch.from_numpy(r["samples_z"]) / 0.18215, num_frames=5).sample
        _report("VAE decoder vs upstream samples_x_unchunked", x.numpy(), r["samples_x_unchunked"], 1e-3, 1e-4)
        frames = torch.from_numpy(r["image"] + 0.02 * r["cond_noise"])
        z = vae.encode(frames).latent_dist.mode()
        _report("VAE encoder (+quant_conv, mode) vs upstream c_concat", z.numpy(), r["c_concat"][:1], 1e-3, 1e-4)


def test_mapping_reproduces_upstream_clip(tiny_diffusers_from_upstream, reference):
    clip = tiny_diffusers_from_upstream["image_encoder"]
    with torch.no_grad():
        emb = clip(pixel_values=torch.from_numpy(reference["clip_preprocessed"])).image_embeds
    _report("CLIP image embedding vs upstream clip_embedding", emb.numpy(), reference["clip_embedding"], 1e-4, 1e-5)


# ------------------------------------------------------------------------------------ the CLI on a folder


def randomize(models, seed=0):
    """Give every tensor distinct, non-trivial values, exactly representable in float16."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in models.values():
            for p in m.parameters():
                scale = float(p.std()) if p.numel() > 1 and float(p.std()) > 0 else 1.0
                p.add_(torch.randn(p.shape, generator=g) * 0.1 * scale)
                p.copy_(p.half().float())


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A diffusers-format folder (fp32 files and fp16 variants) of tiny random models."""
    torch.manual_seed(0)
    models = build_models("tiny")
    randomize(models)
    root = tmp_path_factory.mktemp("diffusers") / "tiny-svd-diffusers"
    for comp, m in models.items():
        m.save_pretrained(root / comp, safe_serialization=True)
        m.half().save_pretrained(root / comp, safe_serialization=True, variant="fp16")
        m.float()
    for m in models.values():
        m.eval()
    return root, models


def _load_ckpt(path):
    import mindspore as ms

    return {k: v.asnumpy() for k, v in ms.load_checkpoint(str(path)).items()}


def _expected_values(models):
    """{upstream name: array} the converter must produce, written out by hand from the
    diffusers tensors (independently of diffusers_map's rules)."""
    sd = {c: {k: t.detach().numpy() for k, t in m.state_dict().items()} for c, m in models.items()}
    u, v, c = sd["unet"], sd["vae"], sd["image_encoder"]
    vis = "conditioner.embedders.0.open_clip.model.visual."
    q, k, w = (c[f"vision_model.encoder.layers.1.self_attn.{n}_proj.weight"] for n in "qkv")
    return {
        "model.diffusion_model.input_blocks.0.0.weight": u["conv_in.weight"],
        "model.diffusion_model.input_blocks.4.0.skip_connection.weight": u["down_blocks.1.resnets.0.spatial_res_block.conv_shortcut.weight"],
        "model.diffusion_model.input_blocks.6.0.op.weight": u["down_blocks.1.downsamplers.0.conv.weight"],
        "model.diffusion_model.input_blocks.8.1.time_stack.0.attn2.to_k.weight": u["down_blocks.2.attentions.1.temporal_transformer_blocks.0.attn2.to_k.weight"],
        "model.diffusion_model.input_blocks.11.0.time_stack.emb_layers.1.bias": u["down_blocks.3.resnets.1.temporal_res_block.time_emb_proj.bias"],
        "model.diffusion_model.middle_block.2.time_mixer.mix_factor": u["mid_block.resnets.1.time_mixer.mix_factor"],
        "model.diffusion_model.middle_block.1.time_pos_embed.2.weight": u["mid_block.attentions.0.time_pos_embed.linear_2.weight"],
        "model.diffusion_model.output_blocks.2.1.conv.weight": u["up_blocks.0.upsamplers.0.conv.weight"],
        "model.diffusion_model.output_blocks.5.2.conv.bias": u["up_blocks.1.upsamplers.0.conv.bias"],
        "model.diffusion_model.output_blocks.9.1.proj_out.weight": u["up_blocks.3.attentions.0.proj_out.weight"],
        "model.diffusion_model.out.2.weight": u["conv_out.weight"],
        "model.diffusion_model.label_emb.0.2.weight": u["add_embedding.linear_2.weight"],
        "first_stage_model.encoder.down.2.block.0.nin_shortcut.weight": v["encoder.down_blocks.2.resnets.0.conv_shortcut.weight"],
        "conditioner.embedders.3.encoder.encoder.down.2.block.0.nin_shortcut.weight": v["encoder.down_blocks.2.resnets.0.conv_shortcut.weight"],
        "conditioner.embedders.3.encoder.encoder.mid.attn_1.q.weight": v["encoder.mid_block.attentions.0.to_q.weight"][:, :, None, None],
        "conditioner.embedders.3.encoder.quant_conv.weight": v["quant_conv.weight"],
        "first_stage_model.decoder.up.3.block.0.time_stack.in_layers.2.weight": v["decoder.up_blocks.0.resnets.0.temporal_res_block.conv1.weight"],
        "first_stage_model.decoder.up.0.block.2.mix_factor": v["decoder.up_blocks.3.resnets.2.time_mixer.mix_factor"],
        "first_stage_model.decoder.up.1.upsample.conv.weight": v["decoder.up_blocks.2.upsamplers.0.conv.weight"],
        "first_stage_model.decoder.mid.attn_1.proj_out.weight": v["decoder.mid_block.attentions.0.to_out.0.weight"][:, :, None, None],
        "first_stage_model.decoder.conv_out.time_mix_conv.weight": v["decoder.time_conv_out.weight"],
        vis + "transformer.resblocks.1.attn.in_proj_weight": np.concatenate([q, k, w]),
        vis + "proj": c["visual_projection.weight"].T,
        vis + "positional_embedding": c["vision_model.embeddings.position_embedding.weight"],
        vis + "transformer.resblocks.0.mlp.c_proj.bias": c["vision_model.encoder.layers.0.mlp.fc2.bias"],
    }


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_cli_converts_tiny_diffusers_folder(tiny_folder, tmp_path, dtype):
    root, models = tiny_folder
    r = H.run_cli("--pt_weights_file", root, "--model_config", H.TINY_CONFIG, "--out_dir", tmp_path, "--dtype", dtype)
    print(r.stdout)
    assert r.returncode == 0, r.stderr
    assert "zero-filled" in r.stdout or "conditioner.embedders.3.encoder.decoder.conv_in.weight" not in _engine_names()
    out = _load_ckpt(tmp_path / "tiny-svd-diffusers.ckpt")
    expected = _engine_names()
    assert set(out) == set(expected)
    np_type = np.float16 if dtype == "fp16" else np.float32
    for name, shape in expected.items():
        assert out[name].shape == tuple(shape), name
        assert out[name].dtype == np_type, name
    for name, want in _expected_values(models).items():
        np.testing.assert_array_equal(out[name], want.astype(np_type), err_msg=name)
    absent = [n for n in expected if ABSENT_IN_DIFFUSERS.match(n)]
    assert all(not out[n].any() for n in absent)


def test_cli_diffusers_fp16_variant_only(tiny_folder, tmp_path):
    """A folder that has only the fp16 files converts, and --dtype keep keeps float16."""
    import shutil

    root, models = tiny_folder
    only16 = tmp_path / "svd-fp16"
    for comp in dm.COMPONENTS:
        (only16 / comp).mkdir(parents=True)
        for f in (root / comp).iterdir():
            if ".fp16." in f.name or f.name == "config.json":
                shutil.copy(f, only16 / comp / f.name)
    r = H.run_cli("--pt_weights_file", only16, "--model_config", H.TINY_CONFIG, "--out_dir", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    out = _load_ckpt(tmp_path / "out" / "svd-fp16.ckpt")
    vis = "conditioner.embedders.0.open_clip.model.visual."
    assert {a.dtype for a in out.values()} == {np.dtype(np.float16)}  # zero-filled ones included
    np.testing.assert_array_equal(out[vis + "proj"], models["image_encoder"].visual_projection.weight.detach().numpy().T.astype(np.float16))


def test_cli_refuses_incomplete_diffusers_folder(tiny_folder, tmp_path):
    import shutil

    root, _ = tiny_folder
    broken = tmp_path / "broken"
    shutil.copytree(root, broken)
    shutil.rmtree(broken / "image_encoder")
    out = tmp_path / "out"
    r = H.run_cli("--pt_weights_file", broken, "--model_config", H.TINY_CONFIG, "--out_dir", out)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "image_encoder" in r.stderr
    assert not out.exists()


def _engine_names():
    return H.expected_shapes(H.TINY_CONFIG)


# ------------------------------------------------------------------------------------ the engine


def _engine_available():
    try:
        import svd_ms.pipeline  # noqa: F401
        import svd_ms.modules.diffusionmodules.video_model  # noqa: F401

        return True
    except ImportError:
        return False


def _compare(name, got, want, rel):
    """Max abs error against a bound relative to the reference's magnitude."""
    err = np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))
    bound = rel * max(1.0, float(np.abs(want).max()))
    print(f"\n{name}: max abs err {err.max():.3e} (bound {bound:.1e}), mean {err.mean():.3e}, "
          f"reference max |x| {np.abs(want).max():.3g}")
    assert err.max() <= bound


@pytest.fixture(scope="module")
def engine_from_tiny_folder(tiny_folder, tmp_path_factory):
    from svd_ms.pipeline import SVDInferPipeline

    root, models = tiny_folder
    out = tmp_path_factory.mktemp("converted")
    r = H.run_cli("--pt_weights_file", root, "--model_config", H.TINY_CONFIG, "--out_dir", out, "--dtype", "fp32")
    assert r.returncode == 0, r.stderr
    pipe = SVDInferPipeline(H.TINY_CONFIG, checkpoint=str(out / "tiny-svd-diffusers.ckpt"), num_frames=5)
    return pipe.engine, models


@pytest.mark.skipif(not _engine_available(), reason="the svd_ms engine is not importable")
def test_engine_unet_matches_diffusers(engine_from_tiny_folder):
    import mindspore as ms

    engine, models = engine_from_tiny_folder
    unet = models["unet"]
    rng = np.random.default_rng(0)
    b, t, h, w = 2, 5, 16, 24
    x = rng.standard_normal((b, t, 8, h, w)).astype(np.float32)
    sigma = np.array([0.7, 3.0], np.float32)
    c_noise = (0.25 * np.log(sigma)).astype(np.float32)
    ctx = rng.standard_normal((b, 1, 32)).astype(np.float32)
    ids = torch.tensor([[6.0, 127.0, 0.02], [3.0, 40.0, 0.1]])
    with torch.no_grad():
        want = unet(torch.from_numpy(x), torch.from_numpy(c_noise), encoder_hidden_states=torch.from_numpy(ctx),
                    added_time_ids=ids).sample.numpy()
        y = unet.add_time_proj(ids.flatten()).reshape(b, -1).numpy()  # (fps, motion, cond_aug) embedded
    got = engine.model.diffusion_model(
        ms.Tensor(x.reshape(b * t, 8, h, w)), ms.Tensor(np.repeat(c_noise, t)), ms.Tensor(np.repeat(ctx, t, 0)),
        ms.Tensor(np.repeat(y, t, 0)), None, t, ms.Tensor(np.zeros((b, t), np.float32))).asnumpy()
    _compare("engine UNet (from the converted diffusers folder) vs diffusers UNetSpatioTemporalConditionModel",
             got, want.reshape(b * t, 4, h, w), 3e-4)


@pytest.mark.skipif(not _engine_available(), reason="the svd_ms engine is not importable")
def test_engine_vae_matches_diffusers(engine_from_tiny_folder):
    import mindspore as ms

    engine, models = engine_from_tiny_folder
    vae = models["vae"]
    rng = np.random.default_rng(1)
    z = rng.standard_normal((5, 4, 16, 24)).astype(np.float32)
    with torch.no_grad():
        want = vae.decode(torch.from_numpy(z), num_frames=5).sample.numpy()
    got = engine.first_stage_model.decode(ms.Tensor(z), 5).asnumpy()
    _compare("engine VAE decoder vs diffusers AutoencoderKLTemporalDecoder.decode", got, want, 1e-4)

    frames = rng.uniform(-1, 1, (1, 3, 64, 96)).astype(np.float32)
    with torch.no_grad():
        want = vae.encode(torch.from_numpy(frames)).latent_dist.mode().numpy()
    got = engine.conditioner.embedders[3].encoder.encode(ms.Tensor(frames)).asnumpy()
    _compare("engine conditioner VAE encoder (+quant_conv, mode) vs diffusers encode().latent_dist.mode()",
             got, want, 1e-4)


@pytest.mark.skipif(not _engine_available(), reason="the svd_ms engine is not importable")
def test_engine_image_embedder_matches_transformers(engine_from_tiny_folder):
    import mindspore as ms

    engine, models = engine_from_tiny_folder
    clip = models["image_encoder"]
    pixels = np.random.default_rng(2).standard_normal((2, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        want = clip(pixel_values=torch.from_numpy(pixels)).image_embeds.numpy()
    got = engine.conditioner.embedders[0].open_clip.model.visual(ms.Tensor(pixels)).asnumpy()
    _compare("engine OpenCLIP image tower vs transformers CLIPVisionModelWithProjection.image_embeds", got, want, 1e-4)
