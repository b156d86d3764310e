"""Strict, all-or-nothing loading of a state dict (``{name: tensor}``) into a MindSpore
network: every key and shape is checked first, and every difference is reported at once.

Names are taken as they are (ms_ddpm's parameter names *are* the reference's state-dict
keys); ``rename`` (a function of a key) maps other names first.  The converter's rename
rules (``weight_convert.rules.RENAME_RULES``) are applied by ``weight_convert``, which wraps
these as ``load_torch_state_dict`` / ``check_state_dict``.
"""

import numpy as np

from ms_ddpm.io.checkpoint import Entry


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


def to_numpy(value):
    """A torch tensor / NumPy array / MindSpore tensor / :class:`Entry` as a NumPy array
    (bf16 -> float32, exactly)."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, Entry):
        return value.value()
    if hasattr(value, 'asnumpy'):
        import mindspore as ms
        if value.dtype == ms.bfloat16:
            value = value.astype(ms.float32)
        return value.asnumpy()
    torch = _loaded_torch()
    if torch is not None and isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def _loaded_torch():
    """torch if this process has imported it (a torch tensor cannot exist otherwise)."""
    import sys
    return sys.modules.get('torch')


def differences(expected, given):
    """``(missing, unexpected, mismatched)`` of ``given`` against ``expected`` (both ``{name:
    shape}``): names only in ``expected``, names only in ``given``, and ``(name, given shape,
    expected shape)`` where the shapes differ; in ``expected``'s order (unexpected: ``given``'s)."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    mismatched = [(k, tuple(given[k]), tuple(expected[k]))
                  for k in expected if k in given and tuple(given[k]) != tuple(expected[k])]
    return missing, unexpected, mismatched


def check_state_dict(net, state_dict, rename=None):
    """Map ``{key: tensor}`` (keys through ``rename`` if given) onto ``net``'s parameters;
    raise :class:`StateDictMismatchError` listing every missing, unexpected and mis-shaped
    key.  Returns ``{name: np.ndarray}``."""
    rename = rename or (lambda k: k)
    converted = {rename(k): to_numpy(v) for k, v in state_dict.items()}
    missing, unexpected, mismatched = differences(
        {name: tuple(p.shape) for name, p in net.parameters_and_names()}, {k: v.shape for k, v in converted.items()})
    if missing or unexpected or mismatched:
        raise StateDictMismatchError(sorted(missing), sorted(unexpected), mismatched, target=type(net).__name__)
    return converted


def load_state_dict(net, state_dict, rename=None):
    """Load ``state_dict`` into ``net`` strictly: checked in full first
    (:func:`check_state_dict`), so either every parameter is set or none is.  Values are
    cast to each parameter's dtype.  Returns ``net``."""
    import mindspore as ms
    converted = check_state_dict(net, state_dict, rename)
    for name, param in net.parameters_and_names():
        value = converted[name]   # np.ascontiguousarray makes a 0-d array 1-d: keep the shape
        param.set_data(ms.Tensor(np.ascontiguousarray(value).reshape(value.shape), dtype=param.dtype))
    return net


def ms_state_dict(net):
    """``{name: np.ndarray}`` of a MindSpore network: the PyTorch state dict of its twin."""
    return {name: to_numpy(p.value()) for name, p in net.parameters_and_names()}
