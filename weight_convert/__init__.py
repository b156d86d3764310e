"""PyTorch <-> MindSpore weight conversion for ms_ddpm.

- ``core``: strict, all-or-nothing loading of a state dict into a network.
- ``formats``: reading/writing .safetensors and MindSpore .ckpt, safely, memory-mapped,
  atomically; ``torchfile``: ``torch.save`` files read (restricted unpickler) and written
  without torch.
- ``infer``: Unet / GaussianDiffusion arguments from a state dict's keys and shapes.
- ``convert``: ``convert(src, dst, ...)`` and ``load_model(path)``; ``cli``: ``ms-ddpm convert``.
"""

from weight_convert.core import (
    StateDictMismatchError,
    check_state_dict,
    load_torch_state_dict,
    ms_state_dict,
    torch_to_ms_name,
    to_numpy,
)
from weight_convert.formats import (
    ConvertError,
    CorruptCheckpointError,
    Entry,
    UnsafeCheckpointError,
    UnsupportedFormatError,
)
from weight_convert.converter import (
    CheckpointMismatchError,
    ConfigError,
    config_path,
    convert,
    load_model,
    read_weights,
    resolve_config,
    trainer_checkpoint,
)
from weight_convert.infer import infer_diffusion_config, infer_unet_config
