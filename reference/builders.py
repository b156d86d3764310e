"""Build reference (PyTorch) models and read their weights as NumPy arrays."""

from importlib import metadata

import numpy as np

REFERENCE_VERSION = '2.3.4'
REFERENCE_DIST = 'denoising-diffusion-pytorch'


class ReferenceVersionError(RuntimeError):
    pass


def check_reference_version():
    """Raise ReferenceVersionError unless denoising-diffusion-pytorch 2.3.4 is installed."""
    try:
        installed = metadata.version(REFERENCE_DIST)
    except metadata.PackageNotFoundError:
        raise ReferenceVersionError(
            f'{REFERENCE_DIST} is not installed; the PyTorch side needs exactly {REFERENCE_VERSION}: '
            f"pip install '{REFERENCE_DIST}=={REFERENCE_VERSION}' (or: make setup)") from None
    if installed != REFERENCE_VERSION:
        raise ReferenceVersionError(
            f'{REFERENCE_DIST} {installed} is installed, but ms_ddpm mirrors and is verified against '
            f'{REFERENCE_VERSION} only; install it with: pip install "{REFERENCE_DIST}=={REFERENCE_VERSION}"')
    return installed


def torch_versions():
    """What records the PyTorch side: torch, the reference and NumPy versions."""
    import torch
    return {'torch': torch.__version__, 'reference': check_reference_version(), 'numpy': np.__version__}


def _ddp():
    check_reference_version()
    import denoising_diffusion_pytorch as ddp
    return ddp


def build_unet(config, seed=None):
    """``denoising_diffusion_pytorch.Unet(**config)``, initialised from ``torch.manual_seed(seed)``."""
    import torch
    ddp = _ddp()
    if seed is not None:
        torch.manual_seed(seed)
    return ddp.Unet(**config).eval()


def state_dict_numpy(module):
    """A module's state dict as ``{key: np.ndarray}`` (bf16 goes through float32: NumPy has no bf16)."""
    import torch
    out = {}
    for k, v in module.state_dict().items():
        v = v.detach().cpu()
        if v.dtype == torch.bfloat16:
            v = v.float()
        out[k] = v.numpy()
    return out
