"""LoRA for the video UNet: adapters for fine-tuning (layers), LoRA files in the names people
publish them in (names, files), and merging files into the weights at load (merge)."""
from .files import FORMAT, ModuleDelta, read_lora, read_metadata, write_lora
from .layers import TARGET_GROUPS, LoRAAdapter, LoRASettings, adapter_parameters, attach_adapters, target_layers
from .merge import (check_diffusers_names, load_into_adapters, merge_lora, parse_lora_spec, save_adapters,
                    unet_of)
from .names import UNetNames, split_key

__all__ = ["FORMAT", "ModuleDelta", "read_lora", "read_metadata", "write_lora", "TARGET_GROUPS", "LoRAAdapter",
           "LoRASettings", "adapter_parameters", "attach_adapters", "target_layers", "check_diffusers_names",
           "load_into_adapters", "merge_lora", "parse_lora_spec", "save_adapters", "unet_of", "UNetNames",
           "split_key"]
