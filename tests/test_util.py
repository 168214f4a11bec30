"""svd_ms.util: one config loader with one-line refusals, and config targets that cannot reach
anything outside the allow-list, through the converter, the pipeline and train.py."""
import sys

import pytest
from conftest import TINY_CONFIG, TINY_WEIGHTS
from omegaconf import OmegaConf

from svd_ms.errors import ConfigError
from svd_ms.util import (
    check_target,
    get_obj_from_str,
    instantiate_from_config,
    load_config,
)

# A target that exists but is not allowed, and the standard ways of running code.
EVIL = ["os.system", "subprocess.run", "builtins.exec", "svd_ms.checkpoint.load_checkpoint_into",
        "svd_ms.util.load_config", "svd_ms.modules.layers.np.save", "svd_ms.modules.layers.initializer",
        "sgm.util.instantiate_from_config", "tripwire_mod.Boom"]


@pytest.fixture
def tripwire(tmp_path, monkeypatch):
    """An importable module that leaves a file behind when it is imported or called: the
    refusals below must leave neither that file nor the module in sys.modules."""
    pkg = tmp_path / "site"
    pkg.mkdir()
    marker = tmp_path / "ran"
    (pkg / "tripwire_mod.py").write_text(
        f"open({str(marker)!r}, 'w').write('imported')\n"
        "class Boom:\n"
        f"    def __init__(self, **kw):\n        open({str(marker)!r}, 'w').write('called')\n")
    monkeypatch.syspath_prepend(str(pkg))
    yield marker
    sys.modules.pop("tripwire_mod", None)


def _one_line(exc_info, *words):
    msg = str(exc_info.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, (w, msg)
    print(f"\nrefused: {msg}")


def _evil_config(tmp_path, target, where="model", params=None):
    """The tiny config with one target replaced: the top-level model or a nested network."""
    cfg = OmegaConf.load(TINY_CONFIG)
    node = cfg.model if where == "model" else cfg.model.params.network_config
    node.target = target
    node.params = params or {"command": f"touch {tmp_path / 'ran'}"}
    path = tmp_path / f"evil_{where}.yaml"
    OmegaConf.save(cfg, path)
    return str(path)


# ------------------------------------------------------------------------------------ load_config


def test_load_config_refusals_name_the_file(tmp_path):
    binary = tmp_path / "model.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe" * 20)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model:\n  target: [unclosed\n")
    no_model = tmp_path / "no_model.yaml"
    no_model.write_text("sampler:\n  steps: 3\n")
    a_list = tmp_path / "list.yaml"
    a_list.write_text("- 1\n- 2\n")
    cases = [(tmp_path / "absent.yaml", "does not exist"), (tmp_path, "not a regular file"),
             (binary, "not a text file"), (bad_yaml, "not valid YAML"), (a_list, "not a mapping"),
             (no_model, "has no `model:` section")]
    for path, words in cases:
        with pytest.raises(ConfigError) as info:
            load_config(str(path), require_model=True)
        _one_line(info, repr(str(path)), words)
    assert load_config(str(no_model)).sampler.steps == 3  # without require_model it is a plain config


def test_load_config_takes_paths_dicts_and_dictconfigs():
    from_path = load_config(TINY_CONFIG, require_model=True)
    assert load_config(OmegaConf.to_container(from_path), require_model=True) == from_path
    assert load_config(from_path) is from_path


# ------------------------------------------------------------------------------------ allow-list


def test_allowed_targets_resolve():
    assert check_target("sgm.models.diffusion.DiffusionEngine") == "svd_ms.models.diffusion.DiffusionEngine"
    assert type(instantiate_from_config({"target": "torch.nn.Identity"})).__name__ == "Identity"
    assert get_obj_from_str("svd_ms.modules.GeneralConditioner").__name__ == "GeneralConditioner"


@pytest.mark.parametrize("target", EVIL)
def test_refused_targets_import_nothing(target, tripwire):
    before = set(sys.modules)
    with pytest.raises(ConfigError) as info:
        instantiate_from_config({"target": target, "params": {"command": "true"}})
    _one_line(info, repr(target))
    assert "not allowed" in str(info.value) or "cannot be resolved" in str(info.value)
    assert not tripwire.exists()
    new = {m for m in set(sys.modules) - before if not m.startswith("svd_ms.")}
    assert not new, new


@pytest.mark.parametrize("target", EVIL)
def test_load_config_refuses_any_nested_target(tmp_path, target, tripwire):
    path = _evil_config(tmp_path, target, where="network")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    _one_line(info, repr(target), repr(path))
    assert "not allowed" in str(info.value) or "cannot be resolved" in str(info.value)
    assert not tripwire.exists()


def test_network_wrapper_is_a_target_too(tmp_path):
    cfg = OmegaConf.load(TINY_CONFIG)
    cfg.model.params.network_wrapper = "os.system"
    with pytest.raises(ConfigError) as info:
        load_config(OmegaConf.to_container(cfg))
    _one_line(info, "'os.system'")


# ------------------------------------------------------------------------------------ the three tools


@pytest.mark.parametrize("target", ["os.system", "subprocess.run", "tripwire_mod.Boom"])
def test_converter_refuses_before_writing(tmp_path, target, tripwire, capsys):
    from svd_tools.convert import main

    out = tmp_path / "out"
    code = main(["--pt_weights_file", TINY_WEIGHTS, "--model_config", _evil_config(tmp_path, target), "--out_dir", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and target in err and "not allowed" in err, err
    assert not out.exists() and not tripwire.exists()
    print(f"\nconvert: {err}")


@pytest.mark.parametrize("target", ["builtins.exec", "tripwire_mod.Boom"])
def test_pipeline_refuses(tmp_path, target, tripwire):
    from svd_ms.pipeline import SVDInferPipeline

    with pytest.raises(ConfigError) as info:
        SVDInferPipeline(_evil_config(tmp_path, target, where="network"), checkpoint=None)
    _one_line(info, repr(target), "not allowed")
    assert not tripwire.exists()


@pytest.mark.parametrize("where", ["model", "base", "override"])
def test_train_refuses(tmp_path, where, tripwire, capsys):
    import train

    evil = "tripwire_mod.Boom"
    base = _evil_config(tmp_path, evil) if where == "base" else TINY_CONFIG
    train_cfg = {"base": base, "data": {"csv": str(tmp_path / "videos.csv")},
                 "train": {"output_dir": str(tmp_path / "run")}}
    if where == "model":
        train_cfg["model"] = {"target": evil}
    path = tmp_path / "train.yaml"
    OmegaConf.save(OmegaConf.create(train_cfg), path)
    overrides = [f"model.params.network_config.target={evil}"] if where == "override" else []
    code = train.main(["--config", str(path)] + overrides)
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and evil in err and "not allowed" in err, err
    assert not tripwire.exists() and not (tmp_path / "run").exists()
    print(f"\ntrain.py ({where}): {err}")


def _refused_params_config(tmp_path, change):
    """The tiny config with one UNet parameter the model class rejects: an unknown name, or a
    value it cannot use."""
    cfg = OmegaConf.load(TINY_CONFIG)
    name, value = change
    cfg.model.params.network_config.params[name] = value
    path = tmp_path / f"refused_{name}.yaml"
    OmegaConf.save(cfg, path)
    return str(path)


REFUSED_PARAMS = [("no_such_option", 3), ("num_head_channels", 0)]


@pytest.mark.parametrize("change", REFUSED_PARAMS, ids=[c[0] for c in REFUSED_PARAMS])
def test_pipeline_names_the_config_and_class_a_parameter_breaks(tmp_path, change):
    from svd_ms.pipeline import SVDInferPipeline

    path = _refused_params_config(tmp_path, change)
    with pytest.raises(ConfigError) as info:
        SVDInferPipeline(path, checkpoint=None)
    _one_line(info, path, "VideoUNet cannot be built from its params")


@pytest.mark.parametrize("change", REFUSED_PARAMS, ids=[c[0] for c in REFUSED_PARAMS])
def test_converter_names_the_config_and_class_a_parameter_breaks(tmp_path, change, capsys):
    from svd_tools.convert import main

    out = tmp_path / "out"
    path = _refused_params_config(tmp_path, change)
    code = main(["--pt_weights_file", TINY_WEIGHTS, "--model_config", path, "--out_dir", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and path in err and "VideoUNet cannot be built" in err, err
    assert not out.exists()
    print(f"\nconvert: {err}")


def test_a_class_s_own_refusal_passes_unchanged(tmp_path):
    """A ConfigError a layer raises itself (GroupNorm's channels) is not wrapped again."""
    cfg = OmegaConf.load(TINY_CONFIG)
    cfg.model.params.network_config.params.model_channels = 48
    with pytest.raises(ConfigError) as info:
        instantiate_from_config(cfg.model.params.network_config)
    _one_line(info, "GroupNorm over 48 channels in 32 groups")
    assert "cannot be built" not in str(info.value)


# ------------------------------------------------------------------------------------ small helpers

def test_upstream_targets_resolve_to_this_package():
    from svd_ms.util import resolve_target

    assert resolve_target("sgm.modules.diffusionmodules.video_model.VideoUNet") == \
        "svd_ms.modules.diffusionmodules.video_model.VideoUNet"
    assert resolve_target("torch.nn.Identity") == "svd_ms.modules.layers.Identity"
    assert resolve_target("svd_ms.models.diffusion.DiffusionEngine") == "svd_ms.models.diffusion.DiffusionEngine"


def test_default_and_append_dims():
    import numpy as np

    from svd_ms.util import append_dims, default

    assert default(None, 3) == 3 and default(0, 3) == 0
    assert append_dims(np.zeros((2, 3)), 5).shape == (2, 3, 1, 1, 1)
    assert append_dims(np.zeros((2,)), 1).shape == (2,)
    with pytest.raises(ValueError, match="target_ndim"):
        append_dims(np.zeros((2, 3)), 1)
