"""PyTorch <-> MindSpore weight conversion for ms_ddpm.

- ``core``: strict, all-or-nothing loading of a PyTorch state dict into a network
  (``ms_ddpm.io.state``'s loader, keys through the rename rules of ``rules``).
- ``formats``: the format a path names and the one dispatcher over the self-contained
  readers: ``torchfile`` (``torch.save`` files read by an allow-list unpickler and written,
  without torch; the legacy format by ``torch.load(weights_only=True)``), and
  ``ms_ddpm.io.checkpoint`` (``.safetensors`` and MindSpore ``.ckpt``).
- ``config``: the architecture config (file, ``--config``, the models' keyword arguments);
  ``infer``: Unet / GaussianDiffusion arguments from a state dict's keys and shapes.
- ``converter``: ``convert(src, dst, ...)`` and ``load_model(path)`` (the command is
  ``ms_ddpm_tools.convert``); ``trainer``: the reference Trainer's checkpoint.
"""

from weight_convert.core import (
    StateDictMismatchError,
    check_state_dict,
    load_torch_state_dict,
    ms_state_dict,
    torch_to_ms_name,
    to_numpy,
)
from ms_ddpm.io.checkpoint import Entry
from ms_ddpm.io.errors import (
    ConvertError,
    CorruptCheckpointError,
    DestinationError,
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
from weight_convert.trainer import from_reference_trainer_checkpoint, to_reference_trainer_checkpoint
from weight_convert.infer import infer_diffusion_config, infer_unet_config
