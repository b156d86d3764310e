"""Parity cases of the 1D family (``denoising_diffusion_pytorch_1d``: Unet1D,
GaussianDiffusion1D and their building blocks), as rows of :class:`parity.cases.Case` with
``module='denoising_diffusion_pytorch_1d'`` and ids prefixed ``1d/``.

The rows live in their own table, ``ROWS_1D`` (``rows_1d(check)``), run by
``parity_tests/test_1d.py``: the 2D suite's generic tests assume images (``image_size``,
``(b, c, h, w)`` draws), so these rows are not appended to ``parity.cases.ROWS``.

checks (as in ``parity.cases``, plus ``return_noise``):
  forward      ``module(*inputs)``; kind 'unet' for Unet1D, its names/shapes/trainable flags too
  init         fresh initialisation distributions (no MindSpore program)
  schedule     every buffer, each framework computing its own
  names        state-dict names, shapes and trainable flags of a GaussianDiffusion1D
  bad_args     both constructors raise ``raises``
  loss         ``forward(img, times=..., noise=..., ...)`` with the self-conditioning coin injected
  grad         gradients of every parameter
  q_sample, p_sample, ddim_loop, ddpm_loop, interpolate   with every randn injected
Keep it small: dim 8, seq_length 16-32, batch 2, few GRAPH compilations (each Unet1D graph
costs ~5-10 s to compile on 2 cores).
"""

from parity.cases import B, Case, Table

D1 = 'denoising_diffusion_pytorch_1d'
PY = ('pynative',)
BOTH = ('pynative', 'graph')

ROWS_1D = Table()
add = ROWS_1D.add


def rows_1d(check=None, kind=None):
    return ROWS_1D.rows(check, kind=kind)


def seq_shape(kwargs, channels=3, b=B):
    """The sample shape of a GaussianDiffusion1D built with ``kwargs``: (b, c, n), or (b, n, c)
    with ``channel_first=False``."""
    c = kwargs.get('channels', channels)
    n = kwargs['seq_length']
    return (b, c, n) if kwargs.get('channel_first', True) else (b, n, c)


# --- building blocks --------------------------------------------------------------------------

def _layer(id, cls, args, kwargs, inputs, kind, modes=BOTH, fn=None):
    """A building block; ``fn`` = (class, args, kwargs) of the module a wrapper (PreNorm,
    Residual) wraps, built in each framework and passed as the last positional argument."""
    return Case('1d/' + id, D1, cls, 'forward', kind, args, kwargs, tuple(inputs), modes=modes,
                call={'fn': fn} if fn else {})


X = ('randn', (B, 8, 16))

# GRAPH mode for the blocks that the Unet1D GRAPH row does not already compile inside it
# (RMSNorm, PreNorm, the embeddings, LinearAttention) -- Block, ResnetBlock, Attention, Up- and
# Downsample run in GRAPH mode inside that row

add(
    _layer('RMSNorm',                 'RMSNorm', (8,), {}, [X], 'elementwise'),
    _layer('PreNorm-LinearAttention', 'PreNorm', (8,), {}, [X], 'layer', fn=('LinearAttention', (8,), {'heads': 2, 'dim_head': 8})),
    _layer('Residual-Attention',      'Residual', (), {}, [X], 'layer', modes=PY, fn=('Attention', (8,), {'heads': 2, 'dim_head': 8})),
    _layer('SinusoidalPosEmb',        'SinusoidalPosEmb', (32,), {}, [('time', (B,), 1000)], 'elementwise'),
    _layer('SinusoidalPosEmb-theta',  'SinusoidalPosEmb', (16,), {'theta': 100}, [('time', (B,), 1000)], 'elementwise'),
    _layer('RandomOrLearnedSinusoidalPosEmb', 'RandomOrLearnedSinusoidalPosEmb', (16,), {}, [('float_time', (B,), 1.0)], 'elementwise'),
    _layer('RandomFourierFeatures',   'RandomOrLearnedSinusoidalPosEmb', (16, True), {}, [('float_time', (B,), 1.0)], 'elementwise'),
    _layer('Block',                   'Block', (8, 16), {}, [X], 'layer', modes=PY),
    _layer('Block-dropout-eval',      'Block', (8, 16), {'dropout': 0.3}, [X], 'layer', modes=PY),
    _layer('ResnetBlock-time',        'ResnetBlock', (8, 16), {'time_emb_dim': 32}, [X, ('randn', (B, 32))], 'layer', modes=PY),
    _layer('ResnetBlock-notime',      'ResnetBlock', (8, 8), {}, [X], 'layer', modes=PY),
    _layer('LinearAttention',         'LinearAttention', (8,), {'heads': 2, 'dim_head': 8}, [X], 'layer'),
    _layer('LinearAttention-default', 'LinearAttention', (16,), {}, [('randn', (B, 16, 12))], 'layer', modes=PY),
    _layer('Attention',               'Attention', (8,), {'heads': 2, 'dim_head': 8}, [X], 'layer', modes=PY),
    _layer('Attention-default',       'Attention', (16,), {}, [('randn', (B, 16, 12))], 'layer', modes=PY),
    _layer('Upsample',                'Upsample', (8, 16), {}, [X], 'layer', modes=PY),
    _layer('Upsample-same-dim',       'Upsample', (8,), {}, [('randn', (B, 8, 7))], 'layer', modes=PY),
    _layer('Downsample',              'Downsample', (8, 16), {}, [X], 'layer', modes=PY),
    _layer('Downsample-odd-length',   'Downsample', (8,), {}, [('randn', (B, 8, 15))], 'layer', modes=PY),
)

# --- Unet1D -----------------------------------------------------------------------------------

SMALL = dict(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8)
N = 16


def unet_inputs(cfg, shape):
    specs = (('randn', shape), ('time', (shape[0],), 1000))
    if cfg.get('self_condition'):
        specs += (('randn', shape),)
    return specs


def _unet(id, cfg, shape=(B, 3, N), modes=PY, **kw):
    return Case('1d/' + id, D1, 'Unet1D', 'forward', 'unet', kwargs=cfg, inputs=unet_inputs(cfg, shape), input_seed=1,
                modes=modes, **kw)


add(
    _unet('defaults-dim8',        dict(dim=8)),                                     # dim_mults (1, 2, 4, 8), heads 4 x 32
    _unet('small',                dict(SMALL)),
    # one GRAPH compilation covering most options at once
    _unet('self_cond-learned_variance-fourier-theta-dropout', dict(SMALL, self_condition=True, learned_variance=True,
          random_fourier_features=True, sinusoidal_pos_emb_theta=1000, dropout=0.1), modes=BOTH),
    _unet('learned_sinusoidal-init_dim-out_dim-heads-1x4', dict(dim=8, dim_mults=(1, 2), learned_sinusoidal_cond=True,
          learned_sinusoidal_dim=8, init_dim=12, out_dim=5, attn_heads=1, attn_dim_head=4)),
    _unet('channels-1-heads-4x16-dropout', dict(dim=8, dim_mults=(1, 2), channels=1, attn_heads=4, attn_dim_head=16,
          dropout=0.2), (B, 1, N)),
    _unet('3-stages-channels-5-len-24', dict(dim=8, dim_mults=(1, 2, 4), attn_heads=2, attn_dim_head=8, channels=5), (B, 5, 24)),
    _unet('1-stage-self_condition', dict(SMALL, dim_mults=(1,), self_condition=True)),
    Case('1d/dim16-learned_sinusoidal', D1, 'Unet1D', 'init', kwargs=dict(dim=16, dim_mults=(1, 2), learned_sinusoidal_cond=True),
         modes=()),
)

# --- GaussianDiffusion1D ----------------------------------------------------------------------

def _gd(id, check, kind, kwargs, net_kwargs=SMALL, modes=PY, **kw):
    return Case('1d/' + id, D1, 'GaussianDiffusion1D', check, kind, kwargs=kwargs,
                net_module=D1, net_cls='Unet1D', net_kwargs=net_kwargs, modes=modes, **kw)


SC = dict(SMALL, self_condition=True)

# schedule buffers, each framework's own computation
add(*[
    _gd(f'{sched}-T{T}-{obj}', 'schedule', 'schedule', dict(seq_length=N, timesteps=T, beta_schedule=sched, objective=obj), modes=())
    for sched in ('linear', 'cosine') for T in (1000, 37) for obj in ('pred_noise', 'pred_x0', 'pred_v')
])
add(_gd('self_cond-T50', 'names', None, dict(seq_length=N, timesteps=50), SC, modes=()))

# losses: every objective x schedule, each with one more option
add(
    _gd('pred_noise-linear', 'loss', 'loss', dict(seq_length=N, timesteps=100, beta_schedule='linear')),
    _gd('pred_noise-cosine-reduction-none', 'loss', 'loss', dict(seq_length=N, timesteps=100), call={'reduction': 'none'}),
    _gd('pred_x0-linear-unreduced', 'loss', 'loss_unreduced', dict(seq_length=N, timesteps=100, objective='pred_x0', beta_schedule='linear'),
        call={'reduced': False}),
    _gd('pred_x0-cosine-no-auto_normalize', 'loss', 'loss', dict(seq_length=N, timesteps=100, objective='pred_x0',
                                                               auto_normalize=False)),
    # (in GRAPH mode through the grad row pred_v-linear-self_cond-coin-used, which compares the loss too)
    _gd('pred_v-linear-self_cond-coin-used', 'loss', 'loss', dict(seq_length=N, timesteps=100, objective='pred_v',
                                                                beta_schedule='linear'), SC, draws={'coin': 0.3}),
    _gd('pred_v-cosine-seq_length-32-channels-2', 'loss', 'loss', dict(seq_length=32, timesteps=100, objective='pred_v'),
        dict(SMALL, channels=2)),
    _gd('self_cond-coin-unused', 'loss', 'loss', dict(seq_length=N, timesteps=100), SC, draws={'coin': 0.7},
        call={'reduction': 'none'}),
    _gd('self_condition-override-False', 'loss', 'loss', dict(seq_length=N, timesteps=100, self_condition=False), SC),
    # channel_first=False: the data are (b, n, c); the network is fed them as is (here a Unet1D
    # whose "channels" are the 16 sequence positions)
    _gd('channel_first-False', 'loss', 'loss', dict(seq_length=N, timesteps=100, channels=8, channel_first=False),
        dict(SMALL, channels=N)),
)

# gradients of every parameter (and the loss); GRAPH: the self-conditioning coin is a tensor
# branch inside the graph
add(
    _gd('pred_v-linear-self_cond-coin-used', 'grad', 'grad', dict(seq_length=N, timesteps=100, objective='pred_v',
                                                                beta_schedule='linear'), SC, draws={'coin': 0.3},
        input_seed=11, modes=BOTH),
    _gd('pred_x0-cosine-fourier', 'grad', 'grad', dict(seq_length=N, timesteps=100, objective='pred_x0'),
        dict(SMALL, random_fourier_features=True), input_seed=11),
)

# single steps, loops and interpolation, every randn injected
add(
    _gd('T100', 'q_sample', 'diffusion', dict(seq_length=N, timesteps=100), modes=BOTH),
    # (the compiled step, GRAPH, runs in ddpm_loop's T25-self_cond, step by step against the reference's p_sample)
    *[_gd(obj, 'p_sample', 'layer', dict(seq_length=N, timesteps=100, objective=obj), input_seed=5, call={'t': t})
      for obj, t in (('pred_noise', (57, 0)), ('pred_x0', (57,)), ('pred_v', (57,)))],
    _gd('pred_noise-no-clip', 'p_sample', 'layer', dict(seq_length=N, timesteps=100), input_seed=5,
        call={'t': (99,), 'clip_denoised': False}),
    # DDIM (clip_denoised, eta, self-conditioning, return_noise = the last draw)
    _gd('self_cond-pred_noise-eta0.5', 'ddim_loop', 'sample', dict(seq_length=N, timesteps=1000, sampling_timesteps=6,
                                                                   ddim_sampling_eta=0.5), SC, input_seed=7,
        call={'return_noise': True}, modes=('graph',)),
    # unclipped pred_v from t = 99 of 100 is ill-conditioned (pred_noise from x_start divides by
    # sqrt(1/a - 1) of a tiny a): against float64, torch 1.9e-5 and MindSpore 1.4e-5 rel_fro,
    # 7.7e-5 max_abs apart (tolerance 1e-4)
    _gd('pred_v-no-clip-eta1', 'ddim_loop', 'sample', dict(seq_length=N, timesteps=100, sampling_timesteps=3,
                                                           objective='pred_v', ddim_sampling_eta=1.0),
        input_seed=7, call={'clip_denoised': False, 'return_noise': True}, modes=PY),
    # the full DDPM loop (compiled steps), with return_noise and the trajectory (MindSpore extra
    # return_all_timesteps, against the reference's own p_sample steps)
    _gd('T25-self_cond', 'ddpm_loop', 'sample', dict(seq_length=N, timesteps=25), SC, input_seed=8,
        modes=('graph',)),
    _gd('T4-pred_x0-channel_first-False', 'ddpm_loop', 'sample', dict(seq_length=N, timesteps=4, objective='pred_x0',
                                                                      channels=8, channel_first=False),
        dict(SMALL, channels=N), input_seed=8, modes=PY),
    _gd('t3-lam0.3', 'interpolate', 'layer', dict(seq_length=N, timesteps=100), input_seed=9, call={'t': 3, 'lam': 0.3}),
)

# bad arguments: the same errors as the reference
add(*[
    _gd(id, 'bad_args', None, kw, modes=(), raises=(exc, match)) for id, kw, exc, match in [
        ('objective', dict(seq_length=N, objective='pred_eps'), AssertionError, 'objective must be either'),
        ('beta_schedule-sigmoid', dict(seq_length=N, beta_schedule='sigmoid'), ValueError, 'unknown beta schedule sigmoid'),
        ('sampling_timesteps', dict(seq_length=N, timesteps=10, sampling_timesteps=20), AssertionError, ''),
    ]
])


ROWS_1D.check_unique()
