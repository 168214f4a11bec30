"""Names of LoRA tensors as people publish them, translated to this UNet's modules.

A LoRA tensor name is `<prefix><module><suffix>`. Known suffixes: PEFT / diffusers
`.lora_A[.<adapter>].weight` / `.lora_B...` (down / up), diffusers' older
`.lora.down.weight` / `.lora.up.weight` and `.processor.<proj>_lora.down.weight`, kohya's
`.lora_down.weight` / `.lora_up.weight` / `.alpha`. Known prefixes: `unet.`,
`base_model.model.` (PEFT), `model.diffusion_model.` / `diffusion_model.` (sgm), and kohya's
`lora_unet_`, whose module path has its dots replaced by underscores.

A module in diffusers' layout (down_blocks / mid_block / up_blocks ...) reaches this UNet's
layout through `svd_ms.diffusers_map.unet_name`, the map the checkpoint converter uses; a
module already in the sgm layout (input_blocks / middle_block / output_blocks ...) is taken as
is. The other direction, for writing files PEFT loads onto diffusers' UNet, tries the diffusers
names a module can have and keeps the one the same map sends back to it.
"""
import re
from typing import Dict, Iterable, Optional, Tuple

from .. import diffusers_map as dm

PREFIXES = ("unet.", "base_model.model.", "model.diffusion_model.", "diffusion_model.")
KOHYA_PREFIX = "lora_unet_"
SGM_ROOTS = ("input_blocks.", "middle_block.", "output_blocks.", "time_embed.", "label_emb.", "out.")

# Suffix -> the tensor's role: down (A), up (B) or alpha.
_SUFFIXES = (
    (re.compile(r"\.lora_A(?:\.[\w-]+)?\.weight$"), "down"),
    (re.compile(r"\.lora_B(?:\.[\w-]+)?\.weight$"), "up"),
    (re.compile(r"\.lora\.down\.weight$"), "down"),
    (re.compile(r"\.lora\.up\.weight$"), "up"),
    (re.compile(r"\.lora_down\.weight$"), "down"),
    (re.compile(r"\.lora_up\.weight$"), "up"),
    (re.compile(r"\.alpha$"), "alpha"),
)
_PROCESSOR = re.compile(r"^(?P<attn>.+)\.processor\.(?P<proj>to_q|to_k|to_v|to_out)_lora\.(?P<role>down|up)\.weight$")

# Module-name words that contain underscores (kohya flattens every dot to an underscore).
_KOHYA_WORDS = sorted((
    "temporal_transformer_blocks", "transformer_blocks", "down_blocks", "up_blocks", "mid_block",
    "time_pos_embed", "time_embedding", "add_embedding", "time_emb_proj", "conv_shortcut", "conv_norm_out",
    "conv_in", "conv_out", "proj_in", "proj_out", "to_q", "to_k", "to_v", "to_out", "ff_in", "linear_1",
    "linear_2", "spatial_res_block", "temporal_res_block", "time_mixer", "input_blocks", "middle_block",
    "output_blocks", "time_stack", "time_embed", "label_emb", "in_layers", "out_layers", "emb_layers",
    "skip_connection"), key=len, reverse=True)


def kohya_module(flat: str) -> str:
    """`down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q` -> the dotted module name."""
    dotted = flat.replace("_", ".")
    for word in _KOHYA_WORDS:
        dotted = dotted.replace(word.replace("_", "."), word)
    return dotted


def split_key(key: str) -> Optional[Tuple[str, str]]:
    """(module name without prefix, role) of a LoRA tensor name; None when it is not one."""
    m = _PROCESSOR.match(key)
    if m:
        proj = "to_out.0" if m.group("proj") == "to_out" else m.group("proj")
        module, role = f"{m.group('attn')}.{proj}", m.group("role")
    else:
        for pattern, role in _SUFFIXES:
            found = pattern.search(key)
            if found:
                module = key[:found.start()]
                break
        else:
            return None
    if module.startswith(KOHYA_PREFIX):
        return kohya_module(module[len(KOHYA_PREFIX):]), role
    for prefix in PREFIXES:
        if module.startswith(prefix):
            return module[len(prefix):], role
    return module, role


class UNetNames:
    """The module names of one UNet (sgm layout) and their diffusers equivalents."""

    def __init__(self, param_names: Iterable[str]):
        self.params = set(param_names)
        indices = {int(m.group(1)) for m in (re.match(r"input_blocks\.(\d+)\.", n) for n in self.params) if m}
        downsamplers = sorted(int(m.group(1)) for m in (re.match(r"input_blocks\.(\d+)\.0\.op\.", n)
                                                          for n in self.params) if m)
        # resnets per level: the first downsampler sits at input_blocks[per_level + 1]
        self.per_level = downsamplers[0] - 1 if downsamplers else max(indices, default=0)
        stride = self.per_level + 1
        levels = len(downsamplers) + 1
        self.up_attn = {i: any(n.startswith(f"output_blocks.{i * stride}.1.transformer_blocks.") for n in self.params)
                        for i in range(levels)}
        self._containers: Optional[Dict[str, str]] = None

    def is_module(self, name: str) -> bool:
        return f"{name}.weight" in self.params

    def to_ours(self, module: str) -> Optional[str]:
        """This UNet's name of a module given in the sgm or the diffusers layout; None if absent."""
        if module.startswith(SGM_ROOTS):
            return module if self.is_module(module) else None
        mapped = dm.unet_name(f"{module}.weight", self.per_level, self.up_attn)
        if mapped is None:
            return None
        ours = mapped[:-len(".weight")]
        return ours if self.is_module(ours) else None

    def _transformer_containers(self) -> Dict[str, str]:
        """{sgm transformer container (input_blocks.4.1): diffusers one (down_blocks.1.attentions.0)}."""
        if self._containers is None:
            levels = len(self.up_attn)
            candidates = [f"down_blocks.{i}.attentions.{j}" for i in range(levels) for j in range(self.per_level)]
            candidates += [f"up_blocks.{i}.attentions.{j}" for i in range(levels) for j in range(self.per_level + 1)]
            candidates += ["mid_block.attentions.0"]
            self._containers = {}
            for cand in candidates:
                mapped = dm.unet_name(f"{cand}.norm.weight", self.per_level, self.up_attn)
                if mapped is not None:
                    self._containers.setdefault(mapped[:-len(".norm.weight")], cand)
        return self._containers

    def to_diffusers(self, module: str) -> Optional[str]:
        """diffusers' name of one of this UNet's transformer modules; None if it has none."""
        m = re.match(r"((?:input_blocks|output_blocks)\.\d+\.\d+|middle_block\.\d+)\.(.+)$", module)
        if not m or m.group(1) not in self._transformer_containers():
            return None
        container, rest = self._transformer_containers()[m.group(1)], m.group(2)
        inner = [rest]
        if rest.startswith("time_stack."):
            inner.append("temporal_transformer_blocks." + rest[len("time_stack."):])
        for cand in inner:
            if self.to_ours(f"{container}.{cand}") == module:
                return f"{container}.{cand}"
        return None
