"""verify for the processes of issue 13 (rows of ``weight_convert.families`` with
``verify='process'``): LearnedGaussianDiffusion, WeightedObjectiveGaussianDiffusion,
ContinuousTimeGaussianDiffusion, VParamContinuousTimeGaussianDiffusion, ElucidatedDiffusion and
XMWrapper around any of them (or GaussianDiffusion); ElucidatedDiffusion(KarrasUnet) and
simple_diffusion.GaussianDiffusion(UViT) (issue 15).

What is compared (keys as ``core``'s, so the report and the gate need nothing new):

- ``layer/*``, ``unet/*``: the network, every layer hooked, at a few conditioning values of the
  kind the process feeds it (integer timesteps; the continuous processes' and simple diffusion's
  log-SNR; Elucidated's c_noise(sigma) with its c_in-scaled input), PyNative and (``graph``) compiled;
- ``loss/<process>``: the process's ``forward`` with every draw injected (the reference's
  ``noise`` / ``times`` / ``sigma`` / self-conditioning coin through ``reference.draws``; an
  XMWrapper's per-chunk noise in its chunks; simple diffusion's forward takes no times: its
  ``uniform_`` draw is injected);
- ``sample/final``: the sampler with every ``randn`` shared (few steps: ``--sampling-timesteps``
  sets ``num_sample_steps`` of the continuous processes and Elucidated);
- ``buffer/*``: Learned / WeightedObjective's 13 schedule buffers.

Two upstream bugs of 2.3.4 stop the reference's sampler (LearnedGaussianDiffusion's DDIM path:
``NameError: partial``; WeightedObjectiveGaussianDiffusion.sample(): ``TypeError``); the torch
side runs them with the evident fix applied for the call only (:func:`upstream_fixes`; docs/parity.md
lists both) and the report says so (``notes``).
"""

import contextlib
import inspect
from collections import OrderedDict

import numpy as np

from reference.upstream_fixes import fix_targets

CONTINUOUS = ('ContinuousTimeGaussianDiffusion', 'VParamContinuousTimeGaussianDiffusion')
SIMPLE = ('simple_diffusion.GaussianDiffusion',)     # issue 15: UViT's process (times drawn by uniform_, none taken)
LOG_SNR_TIMES = CONTINUOUS + SIMPLE         # the network is fed the log-SNR; loss times t in (0, 1)
GAUSSIAN_LIKE = ('GaussianDiffusion', 'LearnedGaussianDiffusion', 'WeightedObjectiveGaussianDiffusion')
LOG_SNRS = (-8.0, -3.0, 0.0, 3.0, 8.0)          # the continuous processes' network conditioning
SIGMAS = (0.002, 0.1, 1.0, 10.0, 80.0)          # Elucidated's noise levels
KARRAS_PATCHED = ('ElucidatedDiffusion(KarrasUnet)',)   # the reference builds it only patched (upstream_fixes)


def is_process(cfg):
    from weight_convert.families import PROCESS_KINDS
    return cfg.get('model') in PROCESS_KINDS


def process_kind(cfg):
    """The process that draws (an XMWrapper's flow model): its class."""
    from weight_convert.families import BY_DIFFUSION, WRAPPER_KINDS
    kind = cfg['flow'] if cfg.get('model') in WRAPPER_KINDS else cfg['model']
    fam = BY_DIFFUSION.get(kind)
    return (fam.process_class or kind) if fam is not None else kind


def set_steps(cfg, steps):
    """``--sampling-timesteps``: the sampler's steps of the config's process."""
    if process_kind(cfg) == 'WeightedObjectiveGaussianDiffusion':
        return                      # DDPM only (its constructor refuses DDIM): every timestep is sampled
    if process_kind(cfg) in GAUSSIAN_LIKE:
        cfg['diffusion']['sampling_timesteps'] = steps
    else:
        cfg['diffusion']['num_sample_steps'] = steps


def sampling_steps(cfg):
    d = cfg['diffusion']
    if process_kind(cfg) in GAUSSIAN_LIKE:
        return d.get('sampling_timesteps') or d.get('timesteps', 1000)
    return int(d.get('num_sample_steps') or 1)


def sampler_name(cfg):
    kind = process_kind(cfg)
    if kind in GAUSSIAN_LIKE:
        return 'DDIM' if sampling_steps(cfg) < cfg['diffusion'].get('timesteps', 1000) else 'DDPM'
    return {'ElucidatedDiffusion': 'Heun (Karras et al., stochastic)'}.get(kind, 'ancestral (continuous time)')


def draw_count(cfg):
    """How many ``randn`` the reference's sampler draws (the first: the starting noise)."""
    kind = process_kind(cfg)
    if kind == 'ElucidatedDiffusion':
        return sampling_steps(cfg) + 1
    return sampling_steps(cfg)


def _ts_int(cfg, batch):
    T = int(cfg['diffusion'].get('timesteps', 1000))
    return sorted(set([0, T // 4, T // 2, (3 * T) // 4, T - 1]))


def make_inputs(cfg, state_dict, batch=4, sample_batch=8, seed=0):
    """Every input and draw of a process verify run, as NumPy arrays; (inputs, conditioning values)."""
    from ms_ddpm_tools.verify.default import digits_array
    kind = process_kind(cfg)
    u, d = cfg['unet'], cfg['diffusion']
    c = u.get('channels', 3)
    size = int(d['image_size']) if not isinstance(d['image_size'], (list, tuple)) else int(d['image_size'][0])
    rng = np.random.default_rng(seed)
    x0 = np.repeat(digits_array(size, count=max(batch, 1), offset=1000), c, axis=1)
    inp = OrderedDict()
    x_start = x0.astype(np.float64) * 2 - 1
    if kind in GAUSSIAN_LIKE:
        ts = _ts_int(cfg, batch)
        ac = np.asarray(state_dict.get('alphas_cumprod', state_dict.get('flow_model.alphas_cumprod')), np.float64)
        a = ac[np.array(ts)]
        cond = np.array(ts, np.int64)
    elif kind in LOG_SNR_TIMES:
        ts = list(LOG_SNRS)
        a = 1 / (1 + np.exp(-np.array(ts)))              # alpha^2 = sigmoid(log_snr)
        cond = np.array(ts, np.float32)
    else:
        ts = list(SIGMAS)
        cond = (np.log(np.array(ts)) * 0.25).astype(np.float32)          # c_noise(sigma)
    noise = rng.standard_normal((len(ts) * batch, c, size, size)).astype(np.float32)
    xs = np.tile(x_start, (len(ts), 1, 1, 1))
    if kind == 'ElucidatedDiffusion':
        sd = float(d.get('sigma_data', 0.5))
        sig = np.repeat(np.array(ts, np.float64), batch).reshape(-1, 1, 1, 1)
        x = (xs + sig * noise) / np.sqrt(sig ** 2 + sd ** 2)               # c_in(sigma) * noised image
    else:
        ar = np.repeat(a, batch).reshape(-1, 1, 1, 1)
        x = np.sqrt(ar) * xs + np.sqrt(1 - ar) * noise
    inp['unet_x'] = x.astype(np.float32)
    inp['unet_t'] = np.repeat(cond, batch)
    inp['loss_img'] = x0.astype(np.float32)
    if kind in GAUSSIAN_LIKE:
        T = int(d.get('timesteps', 1000))
        times = rng.integers(0, T, size=(batch,)).astype(np.int64)
        times[0] = 0                     # Learned: the decoder NLL branch (t = 0)
    elif kind in LOG_SNR_TIMES:
        times = rng.uniform(0.02, 0.98, size=(batch,)).astype(np.float32)
    else:
        times = np.exp(-1.2 + 1.2 * rng.standard_normal(batch)).astype(np.float32)      # P_mean, P_std
    inp['loss_times'] = times
    k = candidates(cfg)
    inp['loss_noise'] = rng.standard_normal((batch * k,) + x0.shape[1:]).astype(np.float32)
    if u.get('self_condition'):
        inp['loss_coin'] = np.array(0.3)
    inp['sample_noise'] = rng.standard_normal((draw_count(cfg), sample_batch, c, size, size)).astype(np.float32)
    return inp, ts


def candidates(cfg):
    from weight_convert.families import WRAPPER_KINDS
    if cfg.get('model') not in WRAPPER_KINDS:
        return 1
    return int((cfg.get('xm') or {}).get('candidates') or 1)


def _xm_chunks(cfg, noise):
    total = noise.shape[0]
    size = (cfg.get('xm') or {}).get('max_batch_size') or total
    return [noise[s:s + size] for s in range(0, total, size)]


def _time_kwarg(cfg):
    from weight_convert.families import WRAPPER_KINDS
    if cfg.get('model') in WRAPPER_KINDS:
        return (cfg.get('xm') or {}).get('random_time_kwarg') or 'times'
    return 'sigma' if process_kind(cfg) == 'ElucidatedDiffusion' else 'times'


def network_of(process):
    """The Unet inside a process (an XMWrapper's flow model's)."""
    inner = getattr(process, 'flow_model', process)
    return getattr(inner, 'net', None) or inner.model


def build(cfg, state_dict, framework):
    """(network, process) of ``framework`` ('torch' | 'ms') with ``state_dict`` loaded strictly."""
    from weight_convert.converter import build_process
    if framework == 'torch':
        import torch
        from reference import check_reference_version
        check_reference_version()
        with upstream_fixes(cfg, []):       # ElucidatedDiffusion(KarrasUnet): its constructor's assert
            p = build_process(cfg, 'torch')
        p.load_state_dict({k: torch.from_numpy(np.array(v, copy=True)) for k, v in state_dict.items()}, strict=True)
        p.eval()
        return network_of(p).eval(), p
    from weight_convert import load_torch_state_dict
    p = build_process(cfg, 'ms')
    load_torch_state_dict(p, state_dict)
    p.set_train(False)
    return network_of(p), p


@contextlib.contextmanager
def upstream_fixes(cfg, notes):
    """The reference's two sampler bugs of 2.3.4 fixed for the block only (the evident fix; the
    installed package is not edited): Learned's DDIM path (``partial``, ``identity`` not imported),
    WeightedObjective's ``p_mean_variance`` (takes no ``x_self_cond``; returns no x_start)."""
    kind = process_kind(cfg)
    undo = []
    try:
        fixes = []
        if kind == 'LearnedGaussianDiffusion' and sampling_steps(cfg) < cfg['diffusion'].get('timesteps', 1000):
            fixes.append(('learned_partial', 'reference patched for the sampler: learned_gaussian_diffusion imports '
                          'partial, identity (upstream NameError on the DDIM path; docs/parity.md)'))
        if cfg.get('model') in KARRAS_PATCHED or cfg.get('flow') in KARRAS_PATCHED:
            fixes.append(('karras_continuous_noise', 'reference patched: KarrasUnet.random_or_learned_sinusoidal_cond '
                          '= True (ElucidatedDiffusion asserts it; KarrasUnet lacks it: AttributeError upstream; '
                          'docs/karras.md)'))
        if kind == 'WeightedObjectiveGaussianDiffusion':
            fixes.append(('weighted_p_mean_variance', 'reference patched for the sampler: '
                          'WeightedObjectiveGaussianDiffusion.p_mean_variance accepts x_self_cond and returns the '
                          'weighted x_start (upstream TypeError; docs/parity.md)'))
        for fix, note in fixes:
            for obj, name, value in fix_targets(fix):
                undo.append((obj, name, obj.__dict__.get(name, _MISSING)))
                setattr(obj, name, value)
            notes.append(note)
        yield
    finally:
        for obj, name, old in reversed(undo):
            if old is _MISSING:
                delattr(obj, name)
            else:
                setattr(obj, name, old)


_MISSING = object()


def no_sampler(cfg):
    """Neither framework samples a LearnedGaussianDiffusion trained with pred_v."""
    return process_kind(cfg) == 'LearnedGaussianDiffusion' and cfg['diffusion'].get('objective') == 'pred_v'


def torch_rest(cfg, tp, inp, timer, parts, out, notes):
    """The reference process's loss and sampler (and buffers) into ``out``."""
    import torch
    from reference.draws import injected_draws
    from ms_ddpm.denoising_diffusion_pytorch import DIFFUSION_BUFFERS
    t = torch.from_numpy
    kind = process_kind(cfg)
    wrapped = candidates(cfg) > 1 or hasattr(tp, 'flow_model')
    if 'buffers' in parts and not hasattr(tp, 'flow_model'):
        for b in DIFFUSION_BUFFERS:
            if hasattr(tp, b) and torch.is_tensor(getattr(tp, b)):
                out['buffer/' + b] = getattr(tp, b).numpy()
    if 'loss' in parts:
        kw = {_time_kwarg(cfg): t(inp['loss_times'])}
        randn, coins = [], [float(inp['loss_coin'])] if 'loss_coin' in inp else []
        if wrapped or kind == 'ElucidatedDiffusion':      # drawn inside forward (an XMWrapper: per chunk)
            randn = _xm_chunks(cfg, inp['loss_noise']) if wrapped else [inp['loss_noise']]
        else:
            kw['noise'] = t(inp['loss_noise'].copy())
        extra = {}
        if kind in CONTINUOUS and 'uniform' in inspect.signature(injected_draws).parameters and not wrapped:
            extra['uniform'] = [inp['loss_times']]     # their forward draws random_times even when times are given
        if kind in SIMPLE and not wrapped:       # its forward takes no times: the uniform_(0, 1) draw is injected
            del kw[_time_kwarg(cfg)]
            extra['uniform'] = [inp['loss_times']]
        with timer('loss'), torch.no_grad(), injected_draws(randn=randn, coins=coins, **extra):
            out[f'loss/{cfg["model"]}'] = tp(t(inp['loss_img']), **kw).numpy()
    if 'sample' in parts and no_sampler(cfg):
        notes.append('sampler not compared: LearnedGaussianDiffusion.model_predictions has no pred_v branch '
                     '(the reference: UnboundLocalError x_start in 2.3.4; the twin: ValueError)')
    elif 'sample' in parts:
        with timer('sampling'), torch.no_grad(), upstream_fixes(cfg, notes), \
                injected_draws(randn=list(inp['sample_noise'])):
            out['sample/final'] = tp.sample(batch_size=inp['sample_noise'].shape[1]).numpy()
        # the same loop in float64: the accuracy gate's second opinion on a sample beyond the pixel
        # tolerance (a stochastic sampler, Elucidated's churn, amplifies each step's rounding: AVX2 CPUs
        # put it past 'sample' where MindSpore was closer to the float64 result than the reference)
        from parity.harness import float64_copy, torch_float64
        tp64 = float64_copy(tp)
        with timer('sampling (float64)'), torch.no_grad(), upstream_fixes(cfg, []), torch_float64(), \
                injected_draws(randn=list(inp['sample_noise'])):
            out['f64sample/final'] = tp64.sample(batch_size=inp['sample_noise'].shape[1]).numpy()


def ms_rest(cfg, mp, inp, timer, parts, out, graph):
    """The twin's loss and sampler (and buffers) into ``out``, keyed like :func:`torch_rest`."""
    import mindspore as ms
    from ms_ddpm.denoising_diffusion_pytorch import DIFFUSION_BUFFERS
    T = ms.Tensor
    kind = process_kind(cfg)
    if 'buffers' in parts and not hasattr(mp, 'flow_model'):
        params = dict(mp.parameters_and_names())
        for b in DIFFUSION_BUFFERS:
            if b in params:
                out['buffer/' + b] = params[b].asnumpy()
    if 'loss' in parts:
        kw = {_time_kwarg(cfg): T(inp['loss_times']), 'noise': T(inp['loss_noise'])}
        if kind == 'ElucidatedDiffusion' and 'loss_coin' in inp and not hasattr(mp, 'flow_model'):
            kw['self_cond_coin'] = float(inp['loss_coin'])
        with timer('loss'):
            out[f'loss/{cfg["model"]}'] = mp(T(inp['loss_img']), **kw).asnumpy()
    if 'sample' in parts and not no_sampler(cfg):
        flow = getattr(mp, 'flow_model', mp)
        if hasattr(flow, 'jit_sampling'):
            flow.jit_sampling = bool(graph)        # the compiled sampling steps in GRAPH runs
        with timer('sampling'):
            out['sample/final'] = mp.sample(batch_size=inp['sample_noise'].shape[1],
                                            noise=inp['sample_noise']).asnumpy()
