"""The random draws of training, counter-based so that a resumed run draws what the
straight run drew.

``draws_for`` draws what ``GaussianDiffusion.forward`` draws.  The other processes (issue 13)
draw other things; :data:`PROCESS_DRAWS` says, per process class (by name, walking the
model's class hierarchy), how its draws are made from the same counter-based generator and
under which keywords its forward takes them (:func:`process_draws`, :func:`spec_for`,
:func:`forward_kwargs`).  The keywords are the reference's local variable names, the ones
the twins' forwards take (``times``, ``sigma``, ``noise``, ``offset_noise``,
``self_cond_coin``).

A draws dict always has ``times`` (the time-like value the forward gets under
``spec.time_kwarg``: int64 timesteps, float32 times in [0, 1) or float32 sigmas) and
``noise``; optionally ``offset_noise``, ``coin`` (the value the reference's ``random()``
returns) and, for ElucidatedDiffusion, ``sigma_randn`` (the ``randn((b,))`` the reference's
``noise_distribution`` draws; ``times = exp(P_mean + P_std * sigma_randn)``).
"""

from dataclasses import dataclass

import numpy as np

__all__ = ['draws_for', 'ProcessDraws', 'PROCESS_DRAWS', 'spec_for', 'process_draws', 'forward_kwargs', 'share_of',
           'uses_offset_coin', 'GAUSSIAN', 'process_attr', 'keep_mask_draw', 'extra_keys']


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


# --- the processes (issue 13): how each draws, which keywords its forward takes -------------

@dataclass(frozen = True)
class ProcessDraws:
    """How a diffusion process draws the randomness of its training forward.

    ``times``: 'randint' (``torch.randint(0, num_timesteps, (b,))``), 'uniform'
    (``torch.zeros(b).uniform_(0, 1)``) or 'sigma' (``exp(P_mean + P_std * randn(b))``);
    ``time_kwarg``: the forward's keyword for it; ``offset``/``coin``: whether the process
    can draw offset noise / a self-conditioning coin (then only when the model asks for it:
    ``offset_noise_strength > 0``, ``self_condition``); ``extra``: fixed keywords of the
    forward (``loss_reduction``)."""
    times: str
    time_kwarg: str = 'times'
    offset: bool = False
    coin: bool = False
    coin_kwarg: str = 'self_cond_coin'
    keep_mask: bool = False         # classifier-free guidance: the Unet's keep mask (``cond_keep_mask``)
    batch_kwargs: tuple = ()        # forward keywords that come with the batch (``classes``: its labels)


GAUSSIAN = ProcessDraws('randint', offset = True, coin = True)

PROCESS_DRAWS = {
    'GaussianDiffusion': GAUSSIAN,
    'LearnedGaussianDiffusion': ProcessDraws('randint'),                 # p_losses(x_start, t, noise, clip_denoised)
    'WeightedObjectiveGaussianDiffusion': ProcessDraws('randint'),
    'ContinuousTimeGaussianDiffusion': ProcessDraws('uniform'),          # random_times: uniform_(0, 1)
    'VParamContinuousTimeGaussianDiffusion': ProcessDraws('uniform'),
    'ElucidatedDiffusion': ProcessDraws('sigma', time_kwarg = 'sigma', coin = True),
    # issue 14: forward(img, times, cond_keep_mask, *, classes, noise, offset_noise); the Unet draws
    # keep_mask = uniform_(0, 1) < 1 - cond_drop_prob; the classes are the batch's labels.  Module-qualified:
    # its class is named GaussianDiffusion too
    'classifier_free_guidance.GaussianDiffusion': ProcessDraws('randint', offset = True, keep_mask = True,
                                                               batch_kwargs = ('classes',)),
    # issue 14: forward(img, ..., t) (the reference's forward draws its local ``t``); guided: no offset noise
    'guided_diffusion.GaussianDiffusion': ProcessDraws('randint', time_kwarg = 't', coin = True),
    'repaint.GaussianDiffusion': ProcessDraws('randint', time_kwarg = 't', offset = True, coin = True),
}


def _qualified(cls):
    return f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}"


def _flow(model):
    """XMWrapper's wrapped process (``flow_model``), or None."""
    return getattr(model, 'flow_model', None) if type(model).__name__ == 'XMWrapper' else None


def process_attr(model, name, default = None):
    """``model.<name>``, for XMWrapper its flow model's (the reference's XMWrapper has no
    ``channels``/``image_size``/``is_ddim_sampling``: its Trainer raises AttributeError)."""
    m = _flow(model) or model
    return getattr(model, name, getattr(m, name, default))


def spec_for(model):
    """``(ProcessDraws, candidates)`` of ``model`` (XMWrapper: its flow model's draws, the
    time keyword its ``random_time_kwarg``, ``candidates`` noises per sample)."""
    flow = _flow(model)
    if flow is not None:
        spec, _ = spec_for(flow)
        from dataclasses import replace
        return replace(spec, time_kwarg = model.random_time_kwarg), int(model.candidates)
    for cls in type(model).__mro__:
        for name in (_qualified(cls), cls.__name__):
            if name in PROCESS_DRAWS:
                return PROCESS_DRAWS[name], 1
    raise TypeError(f'ms_ddpm.Trainer cannot train a {type(model).__name__}: its random draws are not in '
                    f'ms_ddpm.training.draws.PROCESS_DRAWS')


def uses_offset_coin(model, spec):
    """(offset noise drawn, coin drawn) for this model."""
    m = _flow(model) or model
    offset = spec.offset and getattr(m, 'offset_noise_strength', 0.) > 0.
    coin = spec.coin and bool(getattr(m, 'self_condition', False))
    return offset, coin


def process_draws(model, seed, step, micro, shape):
    """The draws of one micro-batch for ``model`` (any process of :data:`PROCESS_DRAWS` or an
    XMWrapper of one).  GaussianDiffusion's are exactly :func:`draws_for`'s."""
    spec, k = spec_for(model)
    m = _flow(model) or model
    offset, coin = uses_offset_coin(model, spec)
    if spec is GAUSSIAN and k == 1:
        return draws_for(seed, step, micro, shape, m.num_timesteps, offset = offset, coin = coin)
    rng = np.random.default_rng([seed, 1, step, micro])
    b, c = shape[0], shape[1]
    d = {}
    # in the reference's order: the times first (XMWrapper draws them before repeating), then
    # the noise of all b * k candidate rows ('(b k)': sample i's candidates are rows i*k ... i*k+k-1)
    if spec.times == 'randint':
        d['times'] = rng.integers(0, m.num_timesteps, size = (b,)).astype(np.int64)
    elif spec.times == 'uniform':
        d['times'] = rng.random((b,), dtype = np.float32)
    elif spec.times == 'sigma':
        z = rng.standard_normal((b,), dtype = np.float32)
        d['sigma_randn'] = z
        a = np.float32(m.P_mean) + np.float32(m.P_std) * z                  # float32, as torch computes it
        d['times'] = np.exp(a.astype(np.float64)).astype(np.float32)       # exp correctly rounded
    else:
        raise ValueError(f'unknown time draw {spec.times!r}')
    d['noise'] = rng.standard_normal((b * k,) + tuple(shape[1:]), dtype = np.float32)
    if offset:
        d['offset_noise'] = rng.standard_normal((b * k, c), dtype = np.float32)
    if coin:
        d['coin'] = np.float32(rng.random())
    if spec.keep_mask:
        d['cond_keep_mask'] = keep_mask_draw(rng, b, m.model.cond_drop_prob)
    return d


def keep_mask_draw(rng, b, cond_drop_prob):
    """The reference's ``prob_mask_like((b,), 1 - cond_drop_prob)``: all True at probability 1,
    all False at 0 (nothing drawn), else ``uniform_(0, 1) < prob`` (bool, shape (b,))."""
    prob = 1. - float(cond_drop_prob)
    if prob == 1:
        return np.ones((b,), bool)
    if prob == 0:
        return np.zeros((b,), bool)
    return rng.random((b,), dtype = np.float32) < np.float32(prob)


def share_of(d, lo, hi, k = 1):
    """This process's share (samples ``lo:hi``) of a micro-batch's draws (data parallel)."""
    rows = dict(times = 1, sigma_randn = 1, noise = k, offset_noise = k, cond_keep_mask = 1, classes = 1)
    return {key: (v[lo * rows[key]:hi * rows[key]] if key in rows else v) for key, v in d.items()}


def forward_kwargs(spec, offset, coin):
    """``call(net, img, times, noise, offset_noise, coin, *extra) -> loss``: the process's forward
    with its draws by keyword (``extra``: :func:`extra_keys`'s tensors, in that order)."""
    if spec.keep_mask:
        def call_cfg(net, img, times, noise, offset_noise, self_cond_coin, cond_keep_mask, classes):
            if offset:
                return net(img, times = times, cond_keep_mask = cond_keep_mask, classes = classes, noise = noise,
                           offset_noise = offset_noise)
            return net(img, times = times, cond_keep_mask = cond_keep_mask, classes = classes, noise = noise)
        return call_cfg
    if spec.time_kwarg not in ('times', 'sigma', 't') or spec.coin_kwarg != 'self_cond_coin':
        raise ValueError(f'no forward call for the keywords {spec.time_kwarg!r}, {spec.coin_kwarg!r}')
    sigma = spec.time_kwarg == 'sigma'      # explicit keywords: GRAPH mode compiles these calls
    t_kw = spec.time_kwarg == 't'

    def call(net, img, times, noise, offset_noise, self_cond_coin):
        if t_kw:
            if offset and coin:
                return net(img, t = times, noise = noise, offset_noise = offset_noise, self_cond_coin = self_cond_coin)
            if offset:
                return net(img, t = times, noise = noise, offset_noise = offset_noise)
            if coin:
                return net(img, t = times, noise = noise, self_cond_coin = self_cond_coin)
            return net(img, t = times, noise = noise)
        if sigma:
            if coin:
                return net(img, sigma = times, noise = noise, self_cond_coin = self_cond_coin)
            return net(img, sigma = times, noise = noise)
        if offset and coin:
            return net(img, times = times, noise = noise, offset_noise = offset_noise, self_cond_coin = self_cond_coin)
        if offset:
            return net(img, times = times, noise = noise, offset_noise = offset_noise)
        if coin:
            return net(img, times = times, noise = noise, self_cond_coin = self_cond_coin)
        return net(img, times = times, noise = noise)
    return call


def extra_keys(spec):
    """The draws-dict keys passed after the common ones (keep mask, then the batch's keywords)."""
    return (('cond_keep_mask',) if spec.keep_mask else ()) + tuple(spec.batch_kwargs)
