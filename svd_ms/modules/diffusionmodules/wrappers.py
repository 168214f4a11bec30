"""Network wrapper: joins the concat conditioning to the input channels (sgm...wrappers.OpenAIWrapper)."""
from mindspore import nn, ops


class OpenAIWrapper(nn.Cell):
    def __init__(self, diffusion_model, compile_model: bool = False):
        super().__init__()
        self.diffusion_model = diffusion_model

    def construct(self, x, t, concat, crossattn, vector, image_only_indicator=None, num_video_frames=None):
        if concat is not None:
            x = ops.cat((x, ops.cast(concat, x.dtype)), axis=1)
        return self.diffusion_model(x, t, crossattn, vector, None, num_video_frames, image_only_indicator)
