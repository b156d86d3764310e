"""The random draws of training, counter-based so that a resumed run draws what the
straight run drew."""

import numpy as np

__all__ = ['draws_for']


def draws_for(seed, step, micro, shape, num_timesteps, offset = False, coin = False):
    """The random draws of one micro-batch of training step ``step`` (0-based), as the
    reference draws them in ``GaussianDiffusion.forward``/``p_losses``: times
    (``torch.randint``), noise (``torch.randn_like``), offset noise, the self-conditioning
    coin (``random()``).  Counter-based (``default_rng([seed, 1, step, micro])``): no RNG
    state to carry, a resumed run draws exactly what the straight run drew."""
    rng = np.random.default_rng([seed, 1, step, micro])
    b, c = shape[0], shape[1]
    d = dict(times = rng.integers(0, num_timesteps, size = (b,)).astype(np.int64),
             noise = rng.standard_normal(shape, dtype = np.float32))
    if offset:
        d['offset_noise'] = rng.standard_normal((b, c), dtype = np.float32)
    if coin:
        d['coin'] = np.float32(rng.random())
    return d
