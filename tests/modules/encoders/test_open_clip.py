"""OpenCLIP image embedder: preprocessing and projected embedding vs upstream."""
import pytest

from conftest import assert_close
from engine_fixtures import REL, tiny_pipeline
from svd_ms.modules.encoders.open_clip import VISION_ARCHS, resolve_arch


@pytest.fixture(scope="module")
def embedder():
    return tiny_pipeline().engine.conditioner.embedders[0].open_clip


def test_preprocess_matches_kornia_antialiased_bicubic(embedder, reference):
    assert_close("clip_preprocessed", embedder.preprocess(reference["clip_image"]), reference["clip_preprocessed"],
                 rel=REL)


def test_embedding(embedder, reference):
    assert_close("clip_embedding", embedder.embed(reference["clip_image"]).asnumpy(), reference["clip_embedding"],
                 rel=REL)


def test_arch_by_name_and_inline_dict():
    assert resolve_arch("ViT-H-14") == VISION_ARCHS["ViT-H-14"]
    inline = {"embed_dim": 32, "image_size": 224, "patch_size": 14, "width": 64, "layers": 2, "head_width": 32}
    assert resolve_arch(inline) == inline
    with pytest.raises(ValueError, match="lacks"):
        resolve_arch({"embed_dim": 32})
    with pytest.raises(ValueError, match="unknown OpenCLIP arch"):
        resolve_arch("ViT-Z-99")
