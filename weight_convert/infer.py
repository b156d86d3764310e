"""Infer ``Unet`` / ``GaussianDiffusion`` arguments from a state dict's keys and shapes.

What a state dict determines (reference 2.3.4 layout):

- ``dim``: ``time_mlp.3.weight`` is ``(4*dim, 4*dim)``; ``init_dim``: rows of ``init_conv.weight``;
  ``dim_mults``: each stage's output width ``downs.i.3[.1].weight.shape[0] / dim``.
- ``channels``, ``self_condition``, ``learned_variance``, ``out_dim``: ``init_conv`` takes
  ``channels * (2 if self_condition else 1)`` inputs and ``final_conv`` gives ``out_dim``
  (default ``channels * (2 if learned_variance else 1)``) outputs.  With an even number of
  inputs both readings (c, no self-condition) and (c/2, self-condition) are possible; the
  output width usually decides (out == in/2: self-condition), otherwise the reading whose
  ``channels`` is a usual image channel count (1, 3, 4) is taken and the ambiguity reported.
  A ``GaussianDiffusion`` needs ``out_dim == channels``, which removes the ambiguity.
  ``learned_variance=True`` and ``out_dim=2*channels`` build the same Unet; the former is reported.
- ``learned_sinusoidal_cond`` / ``random_fourier_features`` (``time_mlp.0.weights`` present,
  ``learned_sinusoidal_dim = 2 * len(weights)``): which of the two cannot be told.
- per stage: full vs linear attention (only LinearAttention has ``to_out.1.g``), heads and
  dim_head from ``mem_kv`` ((2, heads, 4, dim_head) for Attention, (2, heads, dim_head, 4)
  for LinearAttention).
- ``GaussianDiffusion``: ``timesteps`` = length of ``betas``; ``beta_schedule`` by recomputing
  each candidate schedule and comparing with ``betas``; ``objective`` (and
  ``min_snr_loss_weight``/``min_snr_gamma``) by recomputing ``loss_weight`` for each candidate.
- never: ``dropout``, ``sinusoidal_pos_emb_theta``, ``flash_attn``, ``image_size`` and the
  sampling/training-time options (see ``rules.UNET_NOT_INFERABLE``, ``DIFFUSION_NOT_INFERABLE``).
"""

import re

import numpy as np

from weight_convert.rules import (
    COMMON_CHANNELS, DIFFUSION_DEFAULTS, DIFFUSION_NOT_INFERABLE, LINEAR_ATTENTION_MARKER, NUM_MEM_KV,
    RANDOM_OR_LEARNED, UNET_DEFAULTS, UNET_NOT_INFERABLE,
    UNET1D_DEFAULTS, UNET1D_NOT_INFERABLE, DIFFUSION1D_DEFAULTS, DIFFUSION1D_NOT_INFERABLE,
)


class InferenceError(ValueError):
    """The keys/shapes are not those of a reference Unet."""


def _shape(shapes, key):
    if key not in shapes:
        raise InferenceError(f'missing {key}: not a reference Unet state dict')
    return tuple(shapes[key])


def _stage_attention(shapes, prefix, where):
    """(full_attn, heads, dim_head) of the attention layer at ``prefix`` (e.g. 'downs.0.2.')."""
    mem = _shape(shapes, prefix + 'mem_kv')
    if len(mem) != 4 or mem[0] != 2:
        raise InferenceError(f'{prefix}mem_kv has shape {mem}, expected (2, heads, ., .) ({where})')
    linear = (prefix + LINEAR_ATTENTION_MARKER) in shapes
    heads, a, b = mem[1], mem[2], mem[3]
    dim_head, n_mem = (a, b) if linear else (b, a)
    if n_mem != NUM_MEM_KV:
        raise InferenceError(f'{prefix}mem_kv has shape {mem}: num_mem_kv {n_mem} != {NUM_MEM_KV} ({where})')
    return (not linear), heads, dim_head


def _collapse(values):
    """A per-stage tuple as the reference would be given it: one value if all equal."""
    values = tuple(values)
    return values[0] if len(set(values)) == 1 else list(values)


def _corroborated_width(shapes, key, width, i, n, report):
    """Stage ``i``'s output width read from ``key`` (its down-sampling conv), checked against two
    other keys that carry it (the first resnet block of the next stage, or of the middle, and the
    first up-stage block at this level).  If both witnesses agree on another width, ``key`` is
    the damaged one: the witnesses' width is used and ``report['contradictions']`` names
    ``key`` (the strict key check then reports it first, with the shape it should have)."""
    nxt = 'mid_block1.block1.proj.weight' if i == n - 1 else f'downs.{i + 1}.0.block1.proj.weight'
    witnesses = [tuple(shapes[k])[0] for k in (nxt, f'ups.{n - 1 - i}.0.block1.proj.weight')
                 if k in shapes and len(shapes[k]) >= 1]
    if len(witnesses) == 2 and witnesses[0] == witnesses[1] != width:
        report.setdefault('contradictions', {})[key] = (
            f'{key} has shape {tuple(shapes[key])}: width {width}, but {nxt} and ups.{n - 1 - i}.0.block1.proj.weight '
            f'give stage {i} a width of {witnesses[0]}')
        return witnesses[0]
    return width


def infer_unet_config(shapes, diffusion=False):
    """``shapes``: {Unet key: shape}.  Returns ``(config, report)``: ``config`` holds every Unet
    argument (inferred or default); ``report`` has 'inferred' (list), 'not_inferred' and
    'ambiguous' ({name: reason})."""
    report = {'inferred': [], 'not_inferred': dict(UNET_NOT_INFERABLE), 'ambiguous': {}}
    cfg = dict(UNET_DEFAULTS)

    in_ch, dim, stages = _stem(shapes, cfg, report, 'Unet')
    mults, full, heads, dim_heads = [], [], [], []
    for i in stages:
        last = i == len(stages) - 1
        key = f'downs.{i}.3.weight' if last else f'downs.{i}.3.1.weight'
        out_w = _shape(shapes, key)[0]
        out_w = _corroborated_width(shapes, key, out_w, i, len(stages), report)
        if out_w % dim:
            raise InferenceError(f'{key}: width {out_w} is not a multiple of dim={dim}')
        mults.append(out_w // dim)
        f, h, d = _stage_attention(shapes, f'downs.{i}.2.', f'stage {i}')
        full.append(f)
        heads.append(h)
        dim_heads.append(d)
    mid_full, mid_h, mid_d = (_stage_attention(shapes, 'mid_attn.', 'middle') if 'mid_attn.mem_kv' in shapes
                              else (True, heads[-1], dim_heads[-1]))   # missing: the strict check reports it
    if not mid_full or (mid_h, mid_d) != (heads[-1], dim_heads[-1]):
        raise InferenceError(f'mid_attn (full={mid_full}, heads={mid_h}, dim_head={mid_d}) disagrees with the '
                             f'last stage (heads={heads[-1]}, dim_head={dim_heads[-1]})')
    cfg['dim_mults'] = list(mults)
    default_full = [False] * (len(stages) - 1) + [True]
    cfg['full_attn'] = None if full == default_full else (True if all(full) else list(full))
    cfg['attn_heads'] = _collapse(heads)
    cfg['attn_dim_head'] = _collapse(dim_heads)

    # channels / self_condition / learned_variance / out_dim
    out_dim = _shape(shapes, 'final_conv.weight')[0]
    cfg.update(_channels_reading(in_ch, out_dim, diffusion, report, common=COMMON_CHANNELS, net='Unet',
                                 process='GaussianDiffusion'))
    report['inferred'] += ['dim', 'init_dim', 'dim_mults', 'channels', 'self_condition', 'learned_variance',
                           'out_dim', 'learned_sinusoidal_cond', 'attn_heads', 'attn_dim_head', 'full_attn']
    return cfg, report


# --- GaussianDiffusion --------------------------------------------------------------------------

def _schedules():
    from ms_ddpm.denoising_diffusion_pytorch import (cosine_beta_schedule, linear_beta_schedule,
                                                     sigmoid_beta_schedule)
    return {'linear': linear_beta_schedule, 'cosine': cosine_beta_schedule, 'sigmoid': sigmoid_beta_schedule}


def _close(a, b, rtol):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and np.allclose(a, b, rtol=rtol, atol=0)


def _loss_weight(objective, snr, min_snr, gamma):
    clipped = np.minimum(snr, gamma) if min_snr else snr
    return {'pred_noise': clipped / snr, 'pred_x0': clipped, 'pred_v': clipped / (snr + 1)}[objective]


def infer_diffusion_config(buffers):
    """``buffers``: {buffer name: float array}.  Returns ``(config, report)`` like
    :func:`infer_unet_config` for the GaussianDiffusion arguments."""
    cfg = dict(DIFFUSION_DEFAULTS)
    report = {'inferred': [], 'not_inferred': dict(DIFFUSION_NOT_INFERABLE), 'ambiguous': {}}
    betas = np.asarray(buffers['betas'], np.float64)
    if betas.ndim != 1 or betas.size < 1:
        raise InferenceError(f'betas has shape {betas.shape}; expected (timesteps,)')
    T = int(betas.shape[0])
    cfg['timesteps'] = T
    report['inferred'].append('timesteps')

    alphas_cumprod = _match_schedule(betas, buffers, _schedules(), cfg, report,
                                     'none of linear/cosine/sigmoid with default schedule_fn_kwargs')

    snr = alphas_cumprod / (1 - alphas_cumprod)
    lw = buffers.get('loss_weight')
    found = None
    if lw is not None:
        for min_snr in (False, True):
            for objective in ('pred_v', 'pred_noise', 'pred_x0'):
                gammas = [DIFFUSION_DEFAULTS['min_snr_gamma']] if min_snr else [None]
                if min_snr and objective == 'pred_x0':
                    gammas.append(float(np.max(lw)))      # pred_x0 clamped: max(loss_weight) = gamma
                for gamma in gammas:
                    ref = _loss_weight(objective, snr, min_snr, gamma if min_snr else np.inf)
                    if _close(ref.astype(np.float32), lw, 1e-5):
                        found = (objective, min_snr, gamma)
                        break
                if found:
                    break
            if found:
                break
    if found:
        cfg['objective'], cfg['min_snr_loss_weight'] = found[0], found[1]
        if found[1]:
            cfg['min_snr_gamma'] = found[2]
        report['inferred'] += ['objective', 'min_snr_loss_weight'] + (['min_snr_gamma'] if found[1] else [])
    else:
        report['not_inferred']['objective'] = ('loss_weight matches no objective (pred_v, pred_noise, pred_x0, with '
                                               'or without min_snr_loss_weight): pass it with --config')
    return cfg, report


# === 1D: Unet1D / GaussianDiffusion1D (issue 12) =============================================
#
# What a Unet1D state dict determines (reference 2.3.4, denoising_diffusion_pytorch_1d):
# - 1D at all: conv weights are (out, in, k) (``init_conv.weight`` has 3 dimensions);
# - ``dim``: ``time_mlp.3.weight`` is (4*dim, 4*dim); ``init_dim``: rows of ``init_conv.weight``;
#   ``dim_mults``: each stage's output width ``downs.i.3.weight.shape[0] / dim`` (Downsample is
#   a bare Conv1d(k=4, stride 2); the last stage's a Conv1d(k=3));
# - ``channels``/``self_condition``/``learned_variance``/``out_dim``: as for Unet (init_conv's
#   inputs, final_conv's outputs);
# - ``learned_sinusoidal_cond``/``random_fourier_features``/``learned_sinusoidal_dim``: as for Unet;
# - ``attn_heads`` x ``attn_dim_head``: only their product (the middle Attention's hidden width,
#   ``mid_attn.fn.fn.to_qkv.weight`` has 3 * heads * dim_head rows); the split changes the
#   attention's result, so a product other than the default 4 x 32 is reported ambiguous.
#   The LinearAttention layers always have the defaults (Unet1D does not pass its arguments on);
# - never: ``dropout``, ``sinusoidal_pos_emb_theta``.
# GaussianDiffusion1D: ``timesteps``, ``beta_schedule`` (linear / cosine), ``objective`` from
# ``loss_weight``; never ``seq_length``, ``channel_first`` and the sampling-time options.

def is_1d(shapes):
    """True when ``shapes`` (a Unet's keys -> shapes) are a Unet1D's: 3-dimensional conv weights."""
    return len(shapes.get('init_conv.weight', ())) == 3


def infer_unet1d_config(shapes, diffusion=False):
    """``shapes``: {Unet1D key: shape}.  Returns ``(config, report)`` like :func:`infer_unet_config`
    for the ``Unet1D`` arguments."""
    report = {'inferred': [], 'not_inferred': dict(UNET1D_NOT_INFERABLE), 'ambiguous': {}}
    cfg = dict(UNET1D_DEFAULTS)

    init_w = _shape(shapes, 'init_conv.weight')
    if len(init_w) != 3:
        raise InferenceError(f'init_conv.weight has shape {init_w}: not a Unet1D (Conv1d weights are (out, in, k))')
    in_ch, dim, stages = _stem(shapes, cfg, report, 'Unet1D')
    mults = []
    for i in stages:
        key = f'downs.{i}.3.weight'
        out_w = _shape(shapes, key)[0]
        if out_w % dim:
            raise InferenceError(f'{key}: width {out_w} is not a multiple of dim={dim}')
        mults.append(out_w // dim)
    cfg['dim_mults'] = list(mults)

    qkv = _shape(shapes, 'mid_attn.fn.fn.to_qkv.weight')
    if qkv[0] % 3:
        raise InferenceError(f'mid_attn.fn.fn.to_qkv.weight has shape {qkv}: rows not 3 * heads * dim_head')
    hidden = qkv[0] // 3
    d_heads, d_dim_head = UNET1D_DEFAULTS['attn_heads'], UNET1D_DEFAULTS['attn_dim_head']
    if hidden == d_heads * d_dim_head:
        cfg['attn_heads'], cfg['attn_dim_head'] = d_heads, d_dim_head
        report['not_inferred']['attn_heads/attn_dim_head'] = (
            f'only their product is stored ({hidden}); read as the defaults {d_heads} x {d_dim_head}')
    else:
        heads = d_heads if hidden % d_heads == 0 else 1
        cfg['attn_heads'], cfg['attn_dim_head'] = heads, hidden // heads
        report['ambiguous']['attn_heads/attn_dim_head'] = (
            f'the middle attention is {hidden} wide = attn_heads x attn_dim_head; read as {heads} x {hidden // heads} '
            f'(pass --config to choose: the split changes its result)')

    out_dim = _shape(shapes, 'final_conv.weight')[0]
    cfg.update(_channels_reading(in_ch, out_dim, diffusion, report, net='Unet1D', process='GaussianDiffusion1D'))
    report['inferred'] += ['dim', 'init_dim', 'dim_mults', 'channels', 'self_condition', 'learned_variance',
                           'out_dim', 'learned_sinusoidal_cond']
    return cfg, report


def _match_schedule(betas, buffers, schedules, cfg, report, none_of):
    """``beta_schedule``: the schedule of ``schedules`` ({name: fn(T)}) whose float32 betas are
    the checkpoint's; else 'linear', reported (the checkpoint's buffers replace the schedule, so
    the model computes the same).  Returns alphas_cumprod in float64."""
    for name, fn in schedules.items():
        b = fn(int(betas.shape[0]))
        if _close(b.astype(np.float32), betas, 1e-6):
            cfg['beta_schedule'] = name
            report['inferred'].append('beta_schedule')
            return np.cumprod(1. - b)
    cfg['beta_schedule'] = 'linear'
    report['not_inferred']['beta_schedule'] = (
        f'betas match {none_of}; the model is built with beta_schedule=linear and the '
        'checkpoint\'s buffers replace its schedule, so it computes the same')
    return np.asarray(buffers['alphas_cumprod'], np.float64)


def _stem(shapes, cfg, report, net):
    """What Unet and Unet1D share: ``dim`` and ``init_dim`` (``time_mlp.3`` is 4*dim wide,
    ``init_conv`` has init_dim outputs), the learned/random sinusoidal time embedding, and the
    down stages 0..n-1.  Fills ``cfg``/``report``; returns (input channels, dim, stages)."""
    init_w = _shape(shapes, 'init_conv.weight')
    init_dim, in_ch = init_w[0], init_w[1]
    time_w = _shape(shapes, 'time_mlp.3.weight')
    if time_w[0] % 4:
        raise InferenceError(f'time_mlp.3.weight has shape {time_w}: its width is not 4 * dim')
    dim = time_w[0] // 4
    cfg['dim'] = dim
    cfg['init_dim'] = None if init_dim == dim else init_dim
    if 'time_mlp.0.weights' in shapes:
        cfg['learned_sinusoidal_cond'] = True
        cfg['learned_sinusoidal_dim'] = 2 * _shape(shapes, 'time_mlp.0.weights')[0]
        report['ambiguous']['random_fourier_features'] = RANDOM_OR_LEARNED
        report['inferred'] += ['learned_sinusoidal_dim']
    stages = sorted({int(m.group(1)) for k in shapes for m in [re.match(r'downs\.(\d+)\.', k)] if m})
    if not stages or stages != list(range(len(stages))):
        raise InferenceError(f'down stages {stages} are not 0..n-1: not a reference {net} state dict')
    return in_ch, dim, stages


def _channels_reading(in_ch, out_dim, diffusion, report, common=(), net='network', process='diffusion model'):
    """channels / self_condition / learned_variance / out_dim from init_conv's inputs and
    final_conv's outputs, for Unet and Unet1D alike.  Where two readings fit, the one with
    ``common`` channels (images: 1, 3, 4) and no self-conditioning wins, the other is reported
    as ambiguous."""
    candidates = [(in_ch, False)] + ([(in_ch // 2, True)] if in_ch % 2 == 0 else [])

    def reading(c, sc):
        if out_dim == c:
            return dict(channels=c, self_condition=sc, learned_variance=False, out_dim=None)
        if out_dim == 2 * c and not diffusion:
            return dict(channels=c, self_condition=sc, learned_variance=True, out_dim=None)
        return dict(channels=c, self_condition=sc, learned_variance=False, out_dim=out_dim)

    if diffusion:
        fits = [(c, sc) for c, sc in candidates if c == out_dim]
        if not fits:
            raise InferenceError(f'init_conv takes {in_ch} channels and final_conv gives {out_dim}: '
                                 f'no {process} has channels == out_dim with these')
        choice = fits[0]
    elif len(candidates) == 1 or out_dim * 2 == in_ch:
        choice = candidates[-1]
    else:
        def likely(cand):
            return (cand[0] in common, out_dim in (cand[0], 2 * cand[0]), not cand[1])
        ranked = sorted(candidates, key=likely, reverse=True)
        choice = ranked[0]
        alt = reading(*ranked[1])
        report['ambiguous']['channels/self_condition'] = (
            f'init_conv takes {in_ch} channels, final_conv gives {out_dim}: read as '
            f'channels={choice[0]}, self_condition={choice[1]}; also possible: '
            + ', '.join(f'{k}={v}' for k, v in alt.items() if v is not None) + ' (pass --config to choose)')
    r = reading(*choice)
    if r['learned_variance']:
        report['ambiguous']['learned_variance'] = (
            f'out_dim = 2*channels: learned_variance=True and out_dim={out_dim} build the same {net}')
    return r


def infer_diffusion1d_config(buffers):
    """``buffers``: {buffer name: float array} of a GaussianDiffusion1D.  Returns
    ``(config, report)`` for its arguments."""
    from ms_ddpm.denoising_diffusion_pytorch_1d import cosine_beta_schedule, linear_beta_schedule
    cfg = dict(DIFFUSION1D_DEFAULTS)
    report = {'inferred': [], 'not_inferred': dict(DIFFUSION1D_NOT_INFERABLE), 'ambiguous': {}}
    betas = np.asarray(buffers['betas'], np.float64)
    if betas.ndim != 1 or betas.size < 1:
        raise InferenceError(f'betas has shape {betas.shape}; expected (timesteps,)')
    T = int(betas.shape[0])
    cfg['timesteps'] = T
    report['inferred'].append('timesteps')
    alphas_cumprod = _match_schedule(betas, buffers, {'linear': linear_beta_schedule, 'cosine': cosine_beta_schedule},
                                     cfg, report, 'neither linear nor cosine')
    snr = alphas_cumprod / (1 - alphas_cumprod)
    lw = buffers.get('loss_weight')
    weights = {'pred_noise': np.ones_like(snr), 'pred_x0': snr, 'pred_v': snr / (snr + 1)}
    found = [o for o, w in weights.items() if lw is not None and _close(w.astype(np.float32), lw, 1e-5)]
    if found:
        cfg['objective'] = found[0]
        report['inferred'].append('objective')
    else:
        report['not_inferred']['objective'] = 'loss_weight matches no objective (pred_noise, pred_x0, pred_v): pass it with --config'
    return cfg, report


# === the other processes (issue 13) ==========================================================
#
# ``infer_<process>_config(entries_shapes, buffers, unet)`` -> (config, report) of the process's
# own arguments; ``unet`` is the network's inferred config (its ``channels`` is the process's).
# - Learned / WeightedObjective: the GaussianDiffusion buffers, read as for GaussianDiffusion;
#   their loss weights (vb_loss_weight, pred_*_loss_weight) are not stored.
# - ContinuousTime: ``log_snr.*`` present -> noise_schedule='learned', its hidden width from
#   ``log_snr.net.2.fn.0.net.weight`` (hidden_dim, 1); else 'linear' or 'cosine' (functions, not
#   parameters): not inferable, the default ('linear') used.
# - VParamContinuousTime, Elucidated: only ``channels``; the rest are constants of the process.

def _process_report(defaults, not_inferable, unet, extra_inferred=()):
    cfg = dict(defaults)
    report = {'inferred': list(extra_inferred), 'not_inferred': dict(not_inferable), 'ambiguous': {}}
    if 'channels' in cfg:
        cfg['channels'] = unet.get('channels', cfg['channels'])
        report['inferred'].append('channels')
    return cfg, report


def infer_learned_config(shapes, buffers, unet):
    from weight_convert.rules import LEARNED_DEFAULTS, LEARNED_NOT_INFERABLE
    cfg, report = infer_diffusion_config(buffers)
    report['not_inferred'].update({k: v for k, v in LEARNED_NOT_INFERABLE.items() if k not in report['inferred']})
    return dict(LEARNED_DEFAULTS, **cfg), report


def infer_weighted_config(shapes, buffers, unet):
    from weight_convert.rules import WEIGHTED_DEFAULTS, WEIGHTED_NOT_INFERABLE
    cfg, report = infer_diffusion_config(buffers)
    report['not_inferred'].update({k: v for k, v in WEIGHTED_NOT_INFERABLE.items() if k not in report['inferred']})
    return dict(WEIGHTED_DEFAULTS, **cfg), report


def infer_continuous_config(shapes, buffers, unet):
    from weight_convert.rules import (CONTINUOUS_DEFAULTS, CONTINUOUS_NOT_INFERABLE, LEARNED_SCHEDULE_HIDDEN_KEY,
                                      LEARNED_SCHEDULE_PREFIX)
    cfg, report = _process_report(CONTINUOUS_DEFAULTS, CONTINUOUS_NOT_INFERABLE, unet)
    if any(k.startswith(LEARNED_SCHEDULE_PREFIX) for k in shapes):
        if LEARNED_SCHEDULE_HIDDEN_KEY not in shapes:
            raise InferenceError(f'a learned noise schedule (log_snr.*) without {LEARNED_SCHEDULE_HIDDEN_KEY}')
        cfg['noise_schedule'] = 'learned'
        cfg['learned_schedule_net_hidden_dim'] = int(shapes[LEARNED_SCHEDULE_HIDDEN_KEY][0])
        report['not_inferred'].pop('noise_schedule', None)
        report['inferred'] += ['noise_schedule', 'learned_schedule_net_hidden_dim']
    return cfg, report


def infer_vparam_config(shapes, buffers, unet):
    from weight_convert.rules import VPARAM_DEFAULTS, VPARAM_NOT_INFERABLE
    return _process_report(VPARAM_DEFAULTS, VPARAM_NOT_INFERABLE, unet)


def infer_elucidated_config(shapes, buffers, unet):
    from weight_convert.rules import ELUCIDATED_DEFAULTS, ELUCIDATED_NOT_INFERABLE
    return _process_report(ELUCIDATED_DEFAULTS, ELUCIDATED_NOT_INFERABLE, unet)


# === the Karras networks, bare (issue 15) ====================================================
#
# What a KarrasUnet state dict determines (reference 2.3.4, karras_unet.py):
# - ``dim``: rows of ``input_block.weight``; ``channels``: rows of ``output_block.0.weight``;
#   ``self_condition``: input_block takes ``channels * (2 if self_condition else 1) + 1`` inputs
#   (a ones channel is concatenated); ``fourier_dim``: columns of ``to_time_emb.1.weight``;
#   ``num_classes``: columns of ``to_class_emb.weight`` (absent: None);
# - ``num_blocks_per_stage``: the encoders before the first ``downs.i.downsample_conv``;
#   ``num_downsamples``: the number of ``downsample_conv`` encoders;
# - ``dim_max``: the widths double per downsample up to it: the last stage's width (when no stage
#   is capped, any larger dim_max builds the same network: reported);
# - ``attn_res``: which stages hold attention (``attn.mem_kv``), as resolutions of
#   ``image_size`` (the full resolution's only attention: the first upsampling decoder);
#   ``attn_dim_head``: the last axis of any ``mem_kv`` (no attention: the default, no trace);
# - never: ``image_size`` (no parameter depends on it), ``dropout``, ``attn_flash``, the
#   ``mp_*_t`` constants (``rules.KARRAS_UNET_NOT_INFERABLE``).

def infer_karras_unet_config(shapes, diffusion=False, image_size=None):
    """``shapes``: {KarrasUnet key: shape}; ``image_size`` (not in the weights) turns the
    attention stages into ``attn_res``.  Returns ``(config, report)`` like :func:`infer_unet_config`."""
    from weight_convert.rules import KARRAS_UNET_DEFAULTS, KARRAS_UNET_NOT_INFERABLE
    report = {'inferred': [], 'not_inferred': dict(KARRAS_UNET_NOT_INFERABLE), 'ambiguous': {}}
    cfg = dict(KARRAS_UNET_DEFAULTS)
    w_in = _shape(shapes, 'input_block.weight')
    if len(w_in) != 4:
        raise InferenceError(f'input_block.weight has shape {w_in}: not a KarrasUnet (Conv2d weights are (out, in, kh, kw))')
    dim, n_in = w_in[0], w_in[1] - 1
    channels = _shape(shapes, 'output_block.0.weight')[0]
    if n_in not in (channels, 2 * channels):
        raise InferenceError(f'input_block.weight takes {w_in[1]} channels; output_block.0 gives {channels}: '
                             f'expected {channels} + 1 or {2 * channels} + 1')
    cfg.update(dim=dim, channels=channels, self_condition=n_in == 2 * channels,
               fourier_dim=_shape(shapes, 'to_time_emb.1.weight')[1])
    cfg['num_classes'] = tuple(shapes['to_class_emb.weight'])[1] if 'to_class_emb.weight' in shapes else None
    n_downs = len({k.split('.')[1] for k in shapes if k.startswith('downs.')})
    down_at = sorted(int(k.split('.')[1]) for k in shapes if k.startswith('downs.') and k.endswith('.downsample_conv.weight'))
    nb = down_at[0] if down_at else n_downs
    nd = len(down_at)
    if nb < 1 or n_downs != nb + nd * (1 + nb):
        raise InferenceError(f'{n_downs} encoders (downs.*), downsampling at {down_at}: not a KarrasUnet layout '
                             f'(num_blocks_per_stage + num_downsamples * (1 + num_blocks_per_stage))')
    cfg.update(num_blocks_per_stage=nb, num_downsamples=nd)
    widths = [dim] + [_shape(shapes, f'downs.{i}.downsample_conv.weight')[0] for i in down_at]
    cfg['dim_max'] = widths[-1]
    if nd and widths[-1] == dim * 2 ** nd:
        report['ambiguous']['dim_max'] = (f'no stage is capped: any dim_max >= {widths[-1]} builds the same network; '
                                          f'read as {widths[-1]}')
    # attention: stage k (k = 1..nd: its encoders, downs.(nb + (k-1)(1+nb))...) at image_size / 2**k;
    # the full resolution's: the upsampling decoder of the first downsample
    staged = [k for k in range(1, nd + 1) if f'downs.{nb + (k - 1) * (1 + nb)}.attn.mem_kv' in shapes]
    n_ups = 1 + nb + nd * (2 + nb)
    full_res = nd > 0 and f'ups.{n_ups - 1 - (1 + nb)}.attn.mem_kv' in shapes
    mems = [tuple(v) for k, v in shapes.items() if k.endswith('attn.mem_kv')]
    if mems:
        cfg['attn_dim_head'] = mems[0][3]
        report['inferred'].append('attn_dim_head')
    else:
        report['not_inferred']['attn_dim_head'] = 'no attention block: leaves no trace'
    cfg['image_size'] = image_size
    if image_size is not None:
        res = sorted({image_size // 2 ** k for k in staged} | ({image_size} if full_res else set()), reverse=True)
        cfg['attn_res'] = list(res)
        report['not_inferred'].pop('image_size', None)
        report['inferred'].append('attn_res')
    report['inferred'] += ['dim', 'channels', 'self_condition', 'fourier_dim', 'num_classes', 'num_blocks_per_stage',
                           'num_downsamples', 'dim_max']
    return cfg, report


# === classifier-free guidance (issue 14) =====================================================
#
# What a classifier_free_guidance.Unet state dict determines (reference 2.3.4):
# - ``num_classes``: rows of ``classes_emb.weight`` (num_classes, dim) (missing: named, not guessed);
# - ``dim``, ``init_dim``, the learned/random sinusoidal time embedding, the stages: as for Unet
#   (``_stem``); ``dim_mults``: each stage's ``downs.i.3.weight`` rows / dim (Downsample is a bare
#   Conv2d(4, 2, 1) here, the last stage's a Conv2d(3));
# - ``attn_heads`` x ``attn_dim_head``: only their product (``mid_attn.fn.fn.to_qkv.weight`` has
#   3 * heads * dim_head rows; the LinearAttention layers always take the defaults), as for Unet1D;
# - ``channels``/``learned_variance``/``out_dim``: init_conv's inputs (no self-conditioning), final_conv's outputs;
# - never: ``cond_drop_prob`` (training-time; default 0.5).
# Its GaussianDiffusion: ``timesteps``, ``beta_schedule`` (linear / cosine only), ``objective``
# and ``min_snr_*`` from the buffers, read as for GaussianDiffusion; never ``image_size`` and the
# sampling-time options.

def infer_cfg_unet_config(shapes, diffusion=False):
    """``shapes``: {classifier_free_guidance.Unet key: shape}.  Returns ``(config, report)``."""
    from weight_convert.rules import CFG_NUM_CLASSES, CFG_UNET_DEFAULTS, CFG_UNET_NOT_INFERABLE
    report = {'inferred': [], 'not_inferred': dict(CFG_UNET_NOT_INFERABLE), 'ambiguous': {}}
    cfg = dict(CFG_UNET_DEFAULTS)
    if 'classes_emb.weight' not in shapes:
        raise InferenceError(CFG_NUM_CLASSES)
    in_ch, dim, stages = _stem(shapes, cfg, report, 'classifier_free_guidance.Unet')
    emb = tuple(shapes['classes_emb.weight'])
    if len(emb) != 2 or emb[1] != dim:
        raise InferenceError(f'classes_emb.weight has shape {emb}; expected (num_classes, dim={dim})')
    cfg['num_classes'] = int(emb[0])
    mults = []
    for i in stages:
        key = f'downs.{i}.3.weight'
        out_w = _shape(shapes, key)[0]
        if out_w % dim:
            raise InferenceError(f'{key}: width {out_w} is not a multiple of dim={dim}')
        mults.append(out_w // dim)
    cfg['dim_mults'] = list(mults)
    qkv = _shape(shapes, 'mid_attn.fn.fn.to_qkv.weight')
    if qkv[0] % 3:
        raise InferenceError(f'mid_attn.fn.fn.to_qkv.weight has shape {qkv}: rows not 3 * heads * dim_head')
    hidden = qkv[0] // 3
    d_heads, d_dim_head = CFG_UNET_DEFAULTS['attn_heads'], CFG_UNET_DEFAULTS['attn_dim_head']
    if hidden == d_heads * d_dim_head:
        cfg['attn_heads'], cfg['attn_dim_head'] = d_heads, d_dim_head
        report['not_inferred']['attn_heads/attn_dim_head'] = (
            f'only their product is stored ({hidden}); read as the defaults {d_heads} x {d_dim_head}')
    else:
        heads = d_heads if hidden % d_heads == 0 and hidden // d_heads > 1 else (2 if hidden % 2 == 0 else 1)
        cfg['attn_heads'], cfg['attn_dim_head'] = heads, hidden // heads
        report['ambiguous']['attn_heads/attn_dim_head'] = (
            f'the middle attention is {hidden} wide = attn_heads x attn_dim_head; read as {heads} x {hidden // heads} '
            f'(pass --config to choose: the split changes its result)')
    out_dim = _shape(shapes, 'final_conv.weight')[0]
    if diffusion and out_dim != in_ch:
        raise InferenceError(f'init_conv takes {in_ch} channels and final_conv gives {out_dim}: '
                             f'no classifier_free_guidance.GaussianDiffusion has channels != out_dim')
    cfg['channels'] = in_ch           # no self-conditioning: init_conv takes the channels
    if out_dim == 2 * in_ch:
        cfg['learned_variance'] = True
        report['ambiguous']['learned_variance'] = (f'out_dim = 2*channels: learned_variance=True and '
                                                   f'out_dim={out_dim} build the same Unet')
    elif out_dim != in_ch:
        cfg['out_dim'] = out_dim
    report['inferred'] += ['num_classes', 'dim', 'init_dim', 'dim_mults', 'channels', 'learned_variance', 'out_dim',
                           'learned_sinusoidal_cond']
    return cfg, report


def infer_cfg_diffusion_config(shapes, buffers, unet):
    """The classifier_free_guidance.GaussianDiffusion arguments from its buffers."""
    from weight_convert.rules import CFG_DIFFUSION_DEFAULTS, CFG_DIFFUSION_NOT_INFERABLE
    found, rep = infer_diffusion_config(buffers)
    if found['beta_schedule'] not in ('linear', 'cosine') or 'beta_schedule' not in rep['inferred']:
        raise InferenceError('betas match neither the linear nor the cosine schedule (the two this '
                             'GaussianDiffusion builds)')
    cfg = dict(CFG_DIFFUSION_DEFAULTS)
    cfg.update({k: found[k] for k in rep['inferred'] if k in cfg})
    report = {'inferred': [k for k in rep['inferred'] if k in cfg], 'ambiguous': dict(rep['ambiguous']),
              'not_inferred': dict(CFG_DIFFUSION_NOT_INFERABLE,
                                   **{k: v for k, v in rep['not_inferred'].items() if k in cfg})}
    return cfg, report


# KarrasUnet1D / KarrasUnet3D: the 2D reading above with Conv1d / Conv3d weights (rank 3 / 5).
# 3D: ``num_blocks_per_stage`` per stage (an int when all equal), ``factorize_space_time_attn``
# from the resizing blocks' ``attn.0`` / ``attn.1``; ``attn_res`` is relative to the image side
# and follows ``downsample_types`` (not inferable: read as 'all' unless given).

def _karras_layout(shapes, cls, rank):
    """(cfg part, report part, encoder indices where a stage starts (its downsampling encoder),
    block counts per stage) of a KarrasUnet1D/3D state dict."""
    w_in = _shape(shapes, 'input_block.weight')
    if len(w_in) != rank:
        raise InferenceError(f'input_block.weight has shape {w_in}: not a {cls} (its convs have rank-{rank} weights)')
    dim, n_in = w_in[0], w_in[1] - 1
    channels = _shape(shapes, 'output_block.0.weight')[0]
    if n_in not in (channels, 2 * channels):
        raise InferenceError(f'input_block.weight takes {w_in[1]} channels; output_block.0 gives {channels}: '
                             f'expected {channels} + 1 or {2 * channels} + 1')
    cfg = dict(dim=dim, channels=channels, self_condition=n_in == 2 * channels,
               fourier_dim=_shape(shapes, 'to_time_emb.1.weight')[1],
               num_classes=tuple(shapes['to_class_emb.weight'])[1] if 'to_class_emb.weight' in shapes else None)
    n_downs = len({k.split('.')[1] for k in shapes if k.startswith('downs.')})
    down_at = sorted(int(k.split('.')[1]) for k in shapes if k.startswith('downs.') and k.endswith('.downsample_conv.weight'))
    bounds = down_at + [n_downs]
    blocks = [bounds[0]] + [bounds[i + 1] - bounds[i] - 1 for i in range(len(down_at))]
    if min(blocks) < 1:
        raise InferenceError(f'{n_downs} encoders (downs.*), downsampling at {down_at}: not a {cls} layout '
                             f'(every stage holds at least one block)')
    widths = [dim] + [_shape(shapes, f'downs.{i}.downsample_conv.weight')[0] for i in down_at]
    cfg.update(num_downsamples=len(down_at), dim_max=widths[-1])
    report = {'ambiguous': {}}
    if down_at and widths[-1] == dim * 2 ** len(down_at):
        report['ambiguous']['dim_max'] = (f'no stage is capped: any dim_max >= {widths[-1]} builds the same network; '
                                          f'read as {widths[-1]}')
    mems = [tuple(v) for k, v in shapes.items() if k.endswith('mem_kv')]
    if mems:
        cfg['attn_dim_head'] = mems[0][3]
    return cfg, report, down_at, blocks, bool(mems)


def _karras_attn_stages(shapes, down_at, blocks):
    """Which stages (1..num_downsamples) hold attention, and whether the full resolution does
    (the upsampling decoder of the first stage)."""
    def has(prefix):
        return any(prefix + s in shapes for s in ('attn.mem_kv', 'attn.0.mem_kv'))
    staged = [k + 1 for k, i in enumerate(down_at) if has(f'downs.{i}.')]
    n_ups = 1 + blocks[0] + sum(2 + b for b in blocks[1:])
    full_res = bool(down_at) and has(f'ups.{n_ups - 2 - blocks[0]}.')
    return staged, full_res


def _karras_report(rules_not_inferable, cfg, has_attn, inferred):
    report = {'inferred': list(inferred), 'not_inferred': dict(rules_not_inferable), 'ambiguous': {}}
    if has_attn:
        report['inferred'].append('attn_dim_head')
    else:
        report['not_inferred']['attn_dim_head'] = 'no attention block: leaves no trace'
    return report


_KARRAS_INFERRED = ['dim', 'channels', 'self_condition', 'fourier_dim', 'num_classes', 'num_blocks_per_stage',
                    'num_downsamples', 'dim_max']


def infer_karras_unet1d_config(shapes, diffusion=False, seq_len=None):
    """A bare KarrasUnet1D: like :func:`infer_karras_unet_config`, ``seq_len`` (not in the weights)
    turning the attention stages into ``attn_res``."""
    from weight_convert.rules import KARRAS_UNET1D_DEFAULTS, KARRAS_UNET1D_NOT_INFERABLE
    part, amb, down_at, blocks, has_attn = _karras_layout(shapes, 'KarrasUnet1D', 3)
    if len(set(blocks)) != 1:
        raise InferenceError(f'stages of {blocks} blocks: a KarrasUnet1D has num_blocks_per_stage in every stage')
    cfg = dict(KARRAS_UNET1D_DEFAULTS, **part, num_blocks_per_stage=blocks[0], seq_len=seq_len)
    report = _karras_report(KARRAS_UNET1D_NOT_INFERABLE, cfg, has_attn, _KARRAS_INFERRED)
    report['ambiguous'].update(amb['ambiguous'])
    if seq_len is not None:
        staged, full_res = _karras_attn_stages(shapes, down_at, blocks)
        cfg['attn_res'] = sorted({seq_len // 2 ** k for k in staged} | ({seq_len} if full_res else set()), reverse=True)
        report['not_inferred'].pop('seq_len', None)
        report['inferred'].append('attn_res')
    return cfg, report


def infer_karras_unet3d_config(shapes, diffusion=False, image_size=None, frames=None, downsample_types=None):
    """A bare KarrasUnet3D: ``image_size`` and ``frames`` not in the weights; ``attn_res`` (image
    side) from the attention stages given ``image_size`` and ``downsample_types`` (default 'all')."""
    from weight_convert.rules import KARRAS_UNET3D_DEFAULTS, KARRAS_UNET3D_NOT_INFERABLE
    part, amb, down_at, blocks, has_attn = _karras_layout(shapes, 'KarrasUnet3D', 5)
    cfg = dict(KARRAS_UNET3D_DEFAULTS, **part, image_size=image_size, frames=frames,
               num_blocks_per_stage=blocks[0] if len(set(blocks)) == 1 else list(blocks),
               factorize_space_time_attn=any(k.endswith('attn.0.mem_kv') for k in shapes))
    report = _karras_report(KARRAS_UNET3D_NOT_INFERABLE, cfg, has_attn,
                            _KARRAS_INFERRED + ['factorize_space_time_attn'])
    report['ambiguous'].update(amb['ambiguous'])
    if downsample_types is not None:
        cfg['downsample_types'] = downsample_types
        report['not_inferred'].pop('downsample_types', None)
    if image_size is not None:
        types = downsample_types if downsample_types is not None else 'all'
        types = [types] * len(down_at) if isinstance(types, str) else list(types)
        res, sizes = image_size, []
        for t in types:          # the image side of stage k = after k resizes of the image
            res = res // 2 if t in ('all', 'image') else res
            sizes.append(res)
        staged, full_res = _karras_attn_stages(shapes, down_at, blocks)
        # (a stage whose upsampling decoder has attention holds the previous stage's side)
        cfg['attn_res'] = sorted({sizes[k - 1] for k in staged} | ({image_size} if full_res else set()), reverse=True)
        report['not_inferred'].pop('image_size', None)
        report['inferred'].append('attn_res')
    return cfg, report


# === simple diffusion (issue 15: simple_diffusion.UViT and its GaussianDiffusion) =============
#
# What a UViT state dict determines (reference 2.3.4, simple_diffusion.py):
# - ``dim``: ``time_mlp.1.weight`` is (4 dim, learned_sinusoidal_dim + 1); ``learned_sinusoidal_dim``:
#   2 x the length of ``time_mlp.0.weights``;
# - ``patch_size``, ``channels``, ``dual_patchnorm``, ``init_dim``: ``unpatchify.weight`` (a
#   ConvTranspose2d (c p p, c, p, p)) exists iff patch_size p > 1; then ``init_conv.weight`` is the
#   (init_dim, c, p, p) patch conv, or with dual_patchnorm ``init_conv.2.weight`` the (init_dim, c p p)
#   Linear between two LayerNorms.  patch_size 1: ``init_conv.weight`` (init_dim, c, 7, 7), and
#   dual_patchnorm has no effect (no trace: read as False);
# - ``dim_mults``, ``downsample_factor``: stage i's Downsample conv ``downs.i.3.1.weight`` is
#   (dim_out, dim_in factor^2, 1, 1) (dim_in: the previous stage's width, init_dim at stage 0);
#   the factors collapse to an int when all equal;
# - ``vit_depth``: the ``vit.layers.*``; ``attn_dim_head``: ``q_scale`` (dim_head,);
#   ``attn_heads``: ``to_qkv.weight`` rows / (3 dim_head); ``ff_mult``: ``proj_in.0.weight`` rows /
#   the middle width (vit_depth 0: none of the three leaves a trace);
# - ``out_dim``: rows of ``final_conv.weight`` (default channels x patch_size^2);
# - never: ``vit_dropout`` and the init/final image transforms (functions) (``rules.UVIT_NOT_INFERABLE``).
# Its GaussianDiffusion stores no parameters of its own: ``channels`` is the UViT's; image_size,
# pred_objective, the schedule shift (noise_d*) and the sampling/training options are not stored
# (``rules.SIMPLE_DIFFUSION_NOT_INFERABLE``).

def _ushape(shapes, key):
    if key not in shapes:
        raise InferenceError(f'missing {key}: not a reference UViT state dict')
    return tuple(shapes[key])


def _uvit_stem(shapes):
    """(channels, patch_size, dual_patchnorm, init_dim) from UViT's first layers."""
    if 'unpatchify.weight' not in shapes:
        if 'init_conv.2.weight' in shapes:
            raise InferenceError('init_conv.2.weight (a dual_patchnorm stem) without unpatchify.weight: '
                                 'not a reference UViT state dict')
        ic = _ushape(shapes, 'init_conv.weight')
        if len(ic) != 4 or ic[2:] != (7, 7):
            raise InferenceError(f'init_conv.weight has shape {ic}: without unpatchify.weight (patch_size 1) it is '
                                 f'the (init_dim, channels, 7, 7) conv')
        return ic[1], 1, False, ic[0]
    up = _ushape(shapes, 'unpatchify.weight')
    if len(up) != 4 or up[2] != up[3] or up[0] != up[1] * up[2] * up[3]:
        raise InferenceError(f'unpatchify.weight has shape {up}: expected (channels p p, channels, p, p)')
    channels, p = up[1], up[2]
    if 'init_conv.weight' in shapes:
        ic = _ushape(shapes, 'init_conv.weight')
        if len(ic) != 4 or ic[1:] != (channels, p, p):
            raise InferenceError(f'init_conv.weight has shape {ic}; unpatchify.weight {up} gives patch_size {p}, '
                                 f'channels {channels}: expected (init_dim, {channels}, {p}, {p})')
        return channels, p, False, ic[0]
    lin = _ushape(shapes, 'init_conv.2.weight')
    if len(lin) != 2 or lin[1] != channels * p * p:
        raise InferenceError(f'init_conv.2.weight has shape {lin}; unpatchify.weight {up} gives patch_size {p}, '
                             f'channels {channels}: expected (init_dim, {channels * p * p})')
    return channels, p, True, lin[0]


def infer_uvit_config(shapes, diffusion=False):
    """``shapes``: {UViT key: shape}.  Returns ``(config, report)`` like :func:`infer_unet_config`
    for the ``simple_diffusion.UViT`` arguments; ``diffusion``: inside its GaussianDiffusion (the
    output must have the image's channels)."""
    from weight_convert.rules import UVIT_DEFAULTS, UVIT_NO_ATTENTION, UVIT_NOT_INFERABLE
    report = {'inferred': [], 'not_inferred': dict(UVIT_NOT_INFERABLE), 'ambiguous': {}}
    cfg = dict(UVIT_DEFAULTS)
    half = _ushape(shapes, 'time_mlp.0.weights')
    t1 = _ushape(shapes, 'time_mlp.1.weight')
    if len(half) != 1 or len(t1) != 2 or t1[0] % 4 or t1[1] != 2 * half[0] + 1:
        raise InferenceError(f'time_mlp.0.weights {half} / time_mlp.1.weight {t1}: expected (n,) and '
                             f'(4 dim, 2 n + 1) (the learned sinusoidal time embedding)')
    dim = t1[0] // 4
    channels, patch, dual, init_dim = _uvit_stem(shapes)
    cfg.update(dim=dim, init_dim=None if init_dim == dim else init_dim, channels=channels, patch_size=patch,
               dual_patchnorm=dual, learned_sinusoidal_dim=2 * half[0])
    if patch == 1:
        report['not_inferred']['dual_patchnorm'] = 'patch_size 1: no patching, dual_patchnorm has no effect (read as False)'
    stages = sorted({int(m.group(1)) for k in shapes for m in [re.match(r'downs\.(\d+)\.', k)] if m})
    if not stages or stages != list(range(len(stages))):
        raise InferenceError(f'down stages {stages} are not 0..n-1: not a reference UViT state dict')
    widths, mults, factors = [init_dim], [], []
    for i in stages:
        key = f'downs.{i}.3.1.weight'
        w = _ushape(shapes, key)
        dim_in = widths[-1]
        f2 = w[1] // dim_in if len(w) == 4 and w[1] % dim_in == 0 else 0
        f = int(round(f2 ** 0.5))
        if len(w) != 4 or f < 1 or f * f != f2 or w[2:] != (1, 1):
            raise InferenceError(f'{key} has shape {w}: the Downsample conv of stage {i} is (dim_out, {dim_in} x '
                                 f'factor^2, 1, 1)')
        if w[0] % dim:
            raise InferenceError(f'{key}: width {w[0]} is not a multiple of dim={dim}')
        widths.append(w[0])
        mults.append(w[0] // dim)
        factors.append(f)
    cfg['dim_mults'] = list(mults)
    cfg['downsample_factor'] = _collapse(factors)
    mid = widths[-1]
    layers = sorted({int(m.group(1)) for k in shapes for m in [re.match(r'vit\.layers\.(\d+)\.', k)] if m})
    if layers != list(range(len(layers))):
        raise InferenceError(f'ViT layers {layers} are not 0..n-1: not a reference UViT state dict')
    cfg['vit_depth'] = len(layers)
    if layers:
        dh = _ushape(shapes, 'vit.layers.0.0.q_scale')
        qkv = _ushape(shapes, 'vit.layers.0.0.to_qkv.weight')
        if len(dh) != 1 or len(qkv) != 2 or qkv[1] != mid or qkv[0] % (3 * dh[0]):
            raise InferenceError(f'vit.layers.0.0.q_scale {dh} / to_qkv.weight {qkv}: expected (dim_head,) and '
                                 f'(3 heads dim_head, {mid})')
        ff = _ushape(shapes, 'vit.layers.0.1.proj_in.0.weight')
        if len(ff) != 2 or ff[1] != mid or ff[0] % mid:
            raise InferenceError(f'vit.layers.0.1.proj_in.0.weight has shape {ff}: expected ({mid} ff_mult, {mid})')
        cfg.update(attn_dim_head=dh[0], attn_heads=qkv[0] // (3 * dh[0]), ff_mult=ff[0] // mid)
        report['inferred'] += ['attn_dim_head', 'attn_heads', 'ff_mult']
    else:
        for k in ('attn_dim_head', 'attn_heads', 'ff_mult'):
            report['not_inferred'][k] = UVIT_NO_ATTENTION
    out = _ushape(shapes, 'final_conv.weight')[0]
    default_out = channels * patch * patch
    if diffusion and out != default_out:
        raise InferenceError(f'final_conv gives {out} channels, the images have {channels} (x patch_size^2 = '
                             f'{default_out}): no simple_diffusion.GaussianDiffusion has out_dim != its input')
    cfg['out_dim'] = None if out == default_out else out
    report['inferred'] += ['dim', 'init_dim', 'channels', 'patch_size', 'learned_sinusoidal_dim', 'dim_mults',
                           'downsample_factor', 'vit_depth', 'out_dim'] + (['dual_patchnorm'] if patch > 1 else [])
    return cfg, report


def infer_simple_diffusion_config(shapes, buffers, unet):
    """simple_diffusion.GaussianDiffusion: no parameters of its own; ``channels`` is the UViT's."""
    from weight_convert.rules import SIMPLE_DIFFUSION_DEFAULTS, SIMPLE_DIFFUSION_NOT_INFERABLE
    return _process_report(SIMPLE_DIFFUSION_DEFAULTS, SIMPLE_DIFFUSION_NOT_INFERABLE, unet)
