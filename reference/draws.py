"""Give the reference identical random draws at test time, without editing the package.

The reference draws its randomness deep inside its methods (``torch.randn``,
``torch.randn_like``, ``torch.randint`` and the module-level ``random()`` coin of
self-conditioning).  ``injected_draws`` patches exactly those names for the duration of a
``with`` block and hands out the given arrays in order, checking each shape; a draw that was
not supplied, or one left unused, is an error, so a test can never silently compare
against a fresh random number.
"""

from contextlib import contextmanager

import numpy as np


class DrawError(AssertionError):
    pass


class _Queue:
    def __init__(self, kind, items):
        self.kind, self.items, self.used = kind, list(items), 0

    def take(self, shape=None):
        if self.used >= len(self.items):
            raise DrawError(f'the reference drew {self.kind} #{self.used + 1} (shape {shape}) but only '
                            f'{len(self.items)} were supplied')
        item = self.items[self.used]
        self.used += 1
        if shape is not None and tuple(np.shape(item)) != tuple(shape):
            raise DrawError(f'{self.kind} draw #{self.used}: the reference asked for shape {tuple(shape)}, '
                            f'the supplied array has shape {tuple(np.shape(item))}')
        return item


def _shape_of(size):
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    return tuple(int(s) for s in size)


COIN_MODULES = ('denoising_diffusion_pytorch', 'denoising_diffusion_pytorch_1d', 'elucidated_diffusion',
                'classifier_free_guidance', 'guided_diffusion', 'repaint')


@contextmanager
def injected_draws(randn=(), coins=(), randint=(), strict=True, uniform=()):
    """Within the block the reference's ``torch.randn``/``torch.randn_like`` return the arrays
    of ``randn`` in order, ``random()`` the floats of ``coins``, ``torch.randint`` the arrays
    of ``randint``, ``Tensor.uniform_`` (the continuous-time processes' ``random_times``) fills
    its tensor with the arrays of ``uniform``.  With ``strict`` every supplied draw must be used."""
    import importlib
    import torch
    # each of these modules has its own `from random import random` (the self-conditioning coin)
    coin_mods = [importlib.import_module(f'denoising_diffusion_pytorch.{m}') for m in COIN_MODULES]

    qn, qc, qi = _Queue('randn', randn), _Queue('coin', coins), _Queue('randint', randint)
    qu = _Queue('uniform', uniform)
    saved = (torch.randn, torch.randn_like, torch.randint)
    saved_coins = [m.random for m in coin_mods]

    def randn_(*size, dtype=None, device=None, **kw):
        shape = _shape_of(size)
        # torch.randn's dtype: the default dtype (float64 inside parity.harness.torch_float64)
        return torch.as_tensor(np.asarray(qn.take(shape)), dtype=dtype or torch.get_default_dtype()).to(device or 'cpu')

    def randn_like_(x, dtype=None, device=None, **kw):
        return torch.as_tensor(np.asarray(qn.take(tuple(x.shape))), dtype=dtype or x.dtype).to(device or x.device)

    def randint_(low, high=None, size=None, dtype=None, device=None, **kw):
        shape = _shape_of(size) if size is not None else None
        v = np.asarray(qi.take(shape))
        return torch.as_tensor(v, dtype=dtype or torch.long).to(device or 'cpu')

    def random_():
        return float(qc.take())

    def uniform_(self, *a, **kw):
        with torch.no_grad():
            self.copy_(torch.as_tensor(np.asarray(qu.take(tuple(self.shape))), dtype=self.dtype))
        return self

    torch.randn, torch.randn_like, torch.randint = randn_, randn_like_, randint_
    for m in coin_mods:
        m.random = random_
    saved_uniform = torch.Tensor.__dict__.get('uniform_')
    torch.Tensor.uniform_ = uniform_
    try:
        yield
    finally:
        torch.randn, torch.randn_like, torch.randint = saved
        for m, r in zip(coin_mods, saved_coins):
            m.random = r
        if saved_uniform is None:
            del torch.Tensor.uniform_
        else:
            torch.Tensor.uniform_ = saved_uniform
    if strict:
        for q in (qn, qc, qi, qu):
            if q.used != len(q.items):
                raise DrawError(f'{len(q.items) - q.used} of {len(q.items)} supplied {q.kind} draws were not used '
                                f'by the reference: the test and the reference disagree on the draws')
