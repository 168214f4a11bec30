"""Background removal for SV3D inputs: an RGB picture -> an RGBA cut-out of its object, with
rembg as upstream's sampling script uses it, but offline only: nothing is ever downloaded."""
import os

from .errors import InputError

# rembg runs on an image no larger than this, as upstream does before removing the background.
REMBG_MAX_SIDE = 768


def rembg_model_path() -> str:
    """Where rembg keeps its u2net model (its own rule: $U2NET_HOME, else $XDG_DATA_HOME/.u2net,
    else ~/.u2net)."""
    home = os.getenv("U2NET_HOME", os.path.join(os.getenv("XDG_DATA_HOME", "~"), ".u2net"))
    return os.path.join(os.path.expanduser(home), "u2net.onnx")


def remove_background(im, source: str = "image"):
    """RGBA cut-out of an RGB picture with rembg (as upstream: at most 768 px, alpha matting),
    only when rembg is installed and its model is already on disk: nothing is downloaded."""
    from PIL import Image
    refusal = (f"{source} has no alpha channel: pass an RGBA cut-out of the object, or keep_background=True "
               f"(--keep_background) to use the picture as it is, centre-cropped to a square")
    try:
        import rembg
        from rembg.sessions.u2net import U2netSession
    except ImportError:
        raise InputError(f"{refusal} (background removal needs rembg, which is not installed)") from None
    model = rembg_model_path()
    if not os.path.isfile(model):
        raise InputError(f"{refusal} (rembg's model {model} is not on disk and is never downloaded)")

    class OnDiskU2net(U2netSession):
        @classmethod
        def download_models(cls, *args, **kwargs):
            return model

    try:
        import onnxruntime
        session = OnDiskU2net("u2net", onnxruntime.SessionOptions())
        im = im.convert("RGB")
        im.thumbnail((REMBG_MAX_SIDE, REMBG_MAX_SIDE), Image.Resampling.LANCZOS)
        return rembg.remove(im.convert("RGBA"), alpha_matting=True, session=session)
    except Exception as exc:
        raise InputError(f"{source}: background removal with rembg failed ({str(exc).splitlines()[0]})") from None
