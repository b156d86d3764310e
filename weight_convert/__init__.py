"""PyTorch <-> MindSpore weight conversion for ms_ddpm."""

from weight_convert.core import (
    StateDictMismatchError,
    check_state_dict,
    load_torch_state_dict,
    ms_state_dict,
    torch_to_ms_name,
    to_numpy,
)
