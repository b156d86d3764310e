"""Strict, all-or-nothing loading of PyTorch weights into an ms_ddpm network: the loader of
:mod:`ms_ddpm.io.state`, with PyTorch keys renamed by the converter's rules first
(``weight_convert.rules.RENAME_RULES``)."""

import re

from ms_ddpm.io.state import StateDictMismatchError, load_state_dict, ms_state_dict, to_numpy  # noqa: F401
from ms_ddpm.io.state import check_state_dict as _check_state_dict
from weight_convert.rules import RENAME_RULES


def torch_to_ms_name(key):
    for pattern, repl in RENAME_RULES:
        key = re.sub(pattern, repl, key)
    return key


def check_state_dict(net, state_dict):
    """Map ``{torch key: tensor}`` onto ``net``'s parameters; raise StateDictMismatchError
    listing every missing, unexpected and mis-shaped key.  Returns ``{ms name: np.ndarray}``."""
    return _check_state_dict(net, state_dict, rename=torch_to_ms_name)


def load_torch_state_dict(net, state_dict):
    """Load a PyTorch state dict into ``net`` strictly: checked in full first, so either every
    parameter is set or none is.  Values are cast to each parameter's dtype."""
    return load_state_dict(net, state_dict, rename=torch_to_ms_name)
