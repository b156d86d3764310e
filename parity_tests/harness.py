"""Builds both frameworks' twins from one configuration with the same weights, and runs the
MindSpore side in PyNative or GRAPH mode."""

import importlib

import numpy as np
import mindspore as ms

from reference import check_reference_version
from weight_convert import load_torch_state_dict

MODES = ('pynative', 'graph')

# where each class lives, relative to the package root, in both frameworks
MODULE_OF = {'Attend': 'attend'}


def _cls(framework, name):
    mod = MODULE_OF.get(name, 'denoising_diffusion_pytorch')
    if framework == 'torch':
        check_reference_version()
        return getattr(importlib.import_module(f'denoising_diffusion_pytorch.{mod}'), name)
    return getattr(importlib.import_module(f'ms_ddpm.{mod}'), name)


def build_pair(name, args=(), kwargs=None, seed=0):
    """(torch module, MindSpore cell) of class ``name``; the MindSpore one carries the
    PyTorch one's weights, loaded strictly by name."""
    import torch
    kwargs = kwargs or {}
    torch.manual_seed(seed)
    t = _cls('torch', name)(*args, **kwargs).eval()
    m = _cls('ms', name)(*args, **kwargs)
    m.set_train(False)
    load_torch_state_dict(m, t.state_dict())
    return t, m


def make_inputs(specs, seed=0):
    """NumPy inputs from specs: ('randn', shape) | ('time', shape, high) | ('float_time', shape, high)."""
    rng = np.random.default_rng(seed)
    out = []
    for spec in specs:
        kind, shape = spec[0], spec[1]
        if kind == 'randn':
            out.append(rng.standard_normal(shape).astype(np.float32))
        elif kind == 'time':
            out.append(rng.integers(0, spec[2], size=shape).astype(np.int64))
        elif kind == 'float_time':
            out.append((rng.random(shape) * spec[2]).astype(np.float32))
        else:
            raise ValueError(f'unknown input kind {kind!r}')
    return out


def run_torch(module, inputs):
    import torch
    with torch.no_grad():
        return module(*[torch.from_numpy(x) for x in inputs]).numpy()


def run_ms(cell, inputs, mode):
    """Run ``cell(*inputs)`` in PyNative, or compiled to a graph with ``ms.jit`` (GRAPH mode)."""
    args = [ms.Tensor(x) for x in inputs]
    if mode == 'pynative':
        return cell(*args).asnumpy()
    if mode == 'graph':
        def forward(*xs):
            return cell(*xs)
        return ms.jit(forward)(*args).asnumpy()
    raise ValueError(f'unknown mode {mode!r}; use one of {MODES}')


def build_diffusion_pair(unet_cfg, diffusion_kwargs, seed=0):
    """(torch GaussianDiffusion, MindSpore GaussianDiffusion) on twin U-Nets with the same
    weights; the whole state dict (U-Net + 13 schedule buffers) is loaded strictly."""
    import torch
    import denoising_diffusion_pytorch as ddp
    import ms_ddpm
    check_reference_version()
    torch.manual_seed(seed)
    t = ddp.GaussianDiffusion(ddp.Unet(**unet_cfg), **diffusion_kwargs).eval()
    m = ms_ddpm.GaussianDiffusion(ms_ddpm.Unet(**unet_cfg), **diffusion_kwargs)
    m.set_train(False)
    load_torch_state_dict(m, t.state_dict())
    return t, m


def call_ms(fn, args, mode):
    """``fn(*args)`` in PyNative, or compiled with ``ms.jit`` (GRAPH mode).  ``args`` are
    NumPy arrays or MindSpore tensors; the result is returned as is."""
    args = [ms.Tensor(a) if isinstance(a, np.ndarray) else a for a in args]
    if mode == 'pynative':
        return fn(*args)
    if mode == 'graph':
        return ms.jit(fn)(*args)
    raise ValueError(f'unknown mode {mode!r}; use one of {MODES}')
