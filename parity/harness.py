"""Both frameworks' twins from one row of ``parity.cases`` with the same weights, their
inputs and draws, and the MindSpore side run in PyNative or GRAPH mode.

A row's (``module``, ``cls``) resolves to ``denoising_diffusion_pytorch.<module>.<cls>`` and
``ms_ddpm.<module>.<cls>``; a diffusion row also names the network it wraps (``net_module``,
``net_cls``, ``net_kwargs``).  The MindSpore twin carries the reference's weights, loaded
strictly by name (``weight_convert.load_torch_state_dict``)."""

import copy
import importlib
from contextlib import contextmanager, nullcontext

import numpy as np
import mindspore as ms

from parity.cases import B, DDP, MODES, Case, image_shape
from reference import check_reference_version
from reference.draws import injected_draws
from weight_convert import load_torch_state_dict


def resolve(framework, module, cls):
    """The class ``cls`` of reference module ``module``: the reference's (``'torch'``) or its
    ms_ddpm twin (``'ms'``)."""
    if framework == 'torch':
        check_reference_version()
        return getattr(importlib.import_module(f'denoising_diffusion_pytorch.{module}'), cls)
    if framework == 'ms':
        return getattr(importlib.import_module(f'ms_ddpm.{module}'), cls)
    raise ValueError(f'unknown framework {framework!r}; use torch or ms')


def build(framework, case):
    """One framework's model of ``case`` (fresh initialisation; a diffusion row wraps its network)."""
    cls = resolve(framework, case.module, case.cls)
    if case.net_cls:
        net = resolve(framework, case.net_module, case.net_cls)(**(case.net_kwargs or {}))
        return cls(net, *case.args, **case.kwargs)
    return cls(*case.args, **case.kwargs)


def build_pair(case, seed=None, load=True):
    """(torch module, MindSpore cell) of ``case``, both in eval mode; with ``load`` the
    MindSpore one carries the PyTorch one's weights (the whole state dict, schedule buffers
    included), loaded strictly by name.  The reference is built after
    ``torch.manual_seed(seed)`` (default: the row's ``seed``)."""
    import torch
    torch.manual_seed(case.seed if seed is None else seed)
    t = build('torch', case).eval()
    m = build('ms', case)
    m.set_train(False)
    if load:
        load_torch_state_dict(m, t.state_dict())
    return t, m


def build_diffusion_pair(unet_cfg, diffusion_kwargs, seed=0):
    """(torch GaussianDiffusion, MindSpore GaussianDiffusion) on twin U-Nets with the same
    weights; the whole state dict (U-Net + 13 schedule buffers) is loaded strictly."""
    return build_pair(Case('adhoc', DDP, 'GaussianDiffusion', 'adhoc', kwargs=diffusion_kwargs,
                           net_module=DDP, net_cls='Unet', net_kwargs=unet_cfg), seed=seed)


def make_inputs(specs, seed=0):
    """NumPy inputs from specs: ('randn', shape) | ('time', shape, high) | ('float_time', shape, high)."""
    rng = np.random.default_rng(seed)
    out = []
    for spec in specs:
        kind, shape = spec[0], tuple(spec[1])
        if kind == 'randn':
            out.append(rng.standard_normal(shape).astype(np.float32))
        elif kind == 'time':
            out.append(rng.integers(0, spec[2], size=shape).astype(np.int64))
        elif kind == 'float_time':
            out.append((rng.random(shape) * spec[2]).astype(np.float32))
        else:
            raise ValueError(f'unknown input kind {kind!r}')
    return out


def case_inputs(case):
    """The inputs of a ``forward``-like row."""
    return make_inputs(case.inputs, seed=case.input_seed)


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


def call_ms(fn, args, mode):
    """``fn(*args)`` in PyNative, or compiled with ``ms.jit`` (GRAPH mode).  ``args`` are
    NumPy arrays or MindSpore tensors; the result is returned as is."""
    args = [ms.Tensor(a) if isinstance(a, np.ndarray) else a for a in args]
    if mode == 'pynative':
        return fn(*args)
    if mode == 'graph':
        return ms.jit(fn)(*args)
    raise ValueError(f'unknown mode {mode!r}; use one of {MODES}')


# --- the loss of a diffusion process, with every draw injected ------------------------------

def loss_inputs(kwargs, draws, seed=0, b=B):
    """Image in [0, 1], times, noise and the draws a row asks for (``draws``: 'offset' -> the
    offset noise, 'coin' -> the self-conditioning coin's value)."""
    rng = np.random.default_rng(seed)
    shape = image_shape(kwargs, b)
    d = dict(img=rng.random(shape).astype(np.float32),
             times=rng.integers(0, kwargs['timesteps'], size=(shape[0],)).astype(np.int64),
             noise=rng.standard_normal(shape).astype(np.float32))
    if draws.get('offset'):
        d['offset_noise'] = rng.standard_normal(shape[:2]).astype(np.float32)
    if draws.get('coin') is not None:
        d['coin'] = draws['coin']
    return d


def torch_loss(td, d, reduction):
    """The reference's loss on ``loss_inputs``, its offset-noise randn and coin injected."""
    import torch
    randn = [d['offset_noise']] if 'offset_noise' in d else []
    coins = [d['coin']] if 'coin' in d else []
    with injected_draws(randn=randn, coins=coins):
        return td(torch.from_numpy(d['img']), times=torch.from_numpy(d['times']),
                  noise=torch.from_numpy(d['noise'].copy()), loss_reduction=reduction)


def ms_loss_fn(md, d, reduction):
    """(loss function of tensors only (so it compiles), closing over the non-tensor options;
    its NumPy arguments)."""
    offset = 'offset_noise' in d
    coin = d.get('coin')

    def loss(img, times, noise, *rest):
        return md(img, times, reduction, noise, None, rest[0] if offset else None, coin)
    args = [d['img'], d['times'], d['noise']] + ([d['offset_noise']] if offset else [])
    return loss, args


def draws_of(case, count, b=B):
    """``count`` standard-normal draws of a diffusion row's image shape, from its input seed."""
    return np.random.default_rng(case.input_seed).standard_normal((count,) + image_shape(case.kwargs, b)).astype(np.float32)


# --- the reference's gradients, in float32 and in float64 (the accuracy gate's yardstick) -------

def as_float64(x):
    """``x`` with every floating NumPy array (in dicts, lists, tuples) cast to float64."""
    if isinstance(x, np.ndarray):
        return x.astype(np.float64) if np.issubdtype(x.dtype, np.floating) else x
    if isinstance(x, dict):
        return {k: as_float64(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(as_float64(v) for v in x)
    return x


@contextmanager
def torch_float64():
    """torch's default dtype float64 for the block (tensors the reference creates inside its
    methods, e.g. torch.tensor / linspace / zeros, follow the float64 model)."""
    import torch
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(saved)


def float64_copy(module):
    """A float64 copy of a torch module: the same weights and buffers, upcast exactly."""
    return copy.deepcopy(module).double()


def reference_grads(module, loss_of, float64=False):
    """(loss, {parameter name: gradient}) of the torch ``module``: ``loss_of(module, cast)``
    returns the scalar loss, ``cast`` applied to its NumPy inputs.  With ``float64`` on a
    float64 copy of the module (taken now: call it before any in-place training forward),
    inputs cast to float64, torch's default dtype float64; otherwise on the module itself,
    inputs as they are.  A trainable parameter without a gradient gets zeros."""
    m = float64_copy(module) if float64 else module
    m.zero_grad()
    with torch_float64() if float64 else nullcontext():
        loss = loss_of(m, as_float64 if float64 else (lambda x: x))
        loss.backward()
    grads = {n: (p.grad.detach().numpy().copy() if p.grad is not None else np.zeros(tuple(p.shape), np.float64 if float64 else np.float32))
             for n, p in m.named_parameters() if p.requires_grad}
    return loss.detach().numpy(), grads
