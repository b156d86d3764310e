"""Strict, all-or-nothing loading of PyTorch weights into an ms_ddpm network."""

import re

import numpy as np
import mindspore as ms

from weight_convert.rules import RENAME_RULES


class StateDictMismatchError(ValueError):
    """Raised when a state dict does not match the target network exactly.

    Attributes ``missing``, ``unexpected`` and ``mismatched`` (list of (key, source shape,
    target shape)) name every difference, so a user sees them all at once.
    """

    def __init__(self, missing, unexpected, mismatched, target='the MindSpore network'):
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
        lines = [f'state dict does not match {target}; nothing was loaded:']
        if missing:
            lines.append(f'  {len(missing)} missing key(s) (in the network, not in the state dict):')
            lines += [f'    {k}' for k in missing]
        if unexpected:
            lines.append(f'  {len(unexpected)} unexpected key(s) (in the state dict, not in the network):')
            lines += [f'    {k}' for k in unexpected]
        if mismatched:
            lines.append(f'  {len(mismatched)} shape mismatch(es) (key: state dict shape vs network shape):')
            lines += [f'    {k}: {tuple(a)} vs {tuple(b)}' for k, a, b in mismatched]
        super().__init__('\n'.join(lines))


def torch_to_ms_name(key):
    for pattern, repl in RENAME_RULES:
        key = re.sub(pattern, repl, key)
    return key


def to_numpy(value):
    """A torch tensor / NumPy array / MindSpore tensor / ``formats.Entry`` as a NumPy array
    (bf16 -> float32, exactly)."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, 'file_range') and hasattr(value, 'value'):     # weight_convert.formats.Entry
        return value.value()
    if hasattr(value, 'asnumpy'):
        if value.dtype == ms.bfloat16:
            value = value.astype(ms.float32)
        return value.asnumpy()
    try:
        import torch
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            if value.dtype == torch.bfloat16:
                value = value.float()
            return value.numpy()
    except ImportError:
        pass
    return np.asarray(value)


def check_state_dict(net, state_dict):
    """Map ``{torch key: tensor}`` onto ``net``'s parameters; raise StateDictMismatchError
    listing every missing, unexpected and mis-shaped key.  Returns ``{ms name: np.ndarray}``."""
    params = dict(net.parameters_and_names())
    converted = {torch_to_ms_name(k): to_numpy(v) for k, v in state_dict.items()}
    missing = sorted(set(params) - set(converted))
    unexpected = sorted(set(converted) - set(params))
    mismatched = [(k, converted[k].shape, tuple(params[k].shape))
                  for k in params if k in converted and tuple(converted[k].shape) != tuple(params[k].shape)]
    if missing or unexpected or mismatched:
        raise StateDictMismatchError(missing, unexpected, mismatched, target=type(net).__name__)
    return converted


def load_torch_state_dict(net, state_dict):
    """Load a PyTorch state dict into ``net`` strictly: checked in full first, so either every
    parameter is set or none is.  Values are cast to each parameter's dtype."""
    converted = check_state_dict(net, state_dict)
    params = dict(net.parameters_and_names())
    for name, param in params.items():
        param.set_data(ms.Tensor(np.ascontiguousarray(converted[name]), dtype=param.dtype))
    return net


def ms_state_dict(net):
    """``{name: np.ndarray}`` of a MindSpore network: the PyTorch state dict of its twin."""
    return {name: to_numpy(p.value()) for name, p in net.parameters_and_names()}
