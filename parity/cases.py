"""Parity cases as data: every row is one :class:`Case`, keyed by (reference module, class).

A row names the class in the reference (``denoising_diffusion_pytorch.<module>.<cls>``) and
its twin (``ms_ddpm.<module>.<cls>``), how to build it (``args``, ``kwargs``; for a diffusion
process also the wrapped network ``net_module``/``net_cls``/``net_kwargs``), what to feed it
(``inputs``: specs for ``parity.harness.make_inputs``; ``draws``: the random draws to inject)
and what is compared (``check``) under which tolerance (``kind``, in ``parity.tolerances``).
``parity.harness`` builds both twins from a row with the same weights; each test file has ONE
generic test function per ``check`` and parametrizes it over ``rows(check)``.

Adding a reference module: add ONE section below for it (``# --- <module> ---``) that appends
its rows to ``ROWS`` with ``module='<module>'`` (e.g. ``'denoising_diffusion_pytorch_1d'``,
``'karras_unet'``), reusing the ``check`` kinds that already exist; a new test function is only
needed for a genuinely new ``check``.  Ids must be unique within a ``check`` (prefix them, e.g.
``'1d/RMSNorm'``, where a class name repeats across modules); ``rows()`` checks this.

checks and what they compare (the test that runs them):
  forward          outputs of ``module(*inputs)`` (kind 'unet': test_unet, otherwise test_layers)
  self_cond_default  forward with x_self_cond omitted (zeros in both)           test_unet
  default_unet     the reference's default network, sizes and output            test_unet
  init             fresh initialisation distributions                          test_unet
  forward_error    both frameworks raise ``raises`` on ``inputs``               test_bad_input
  schedule         every buffer, each framework computing its own              test_diffusion
  names            state-dict names, shapes and trainable flags                test_diffusion
  bad_args         both constructors raise ``raises``                          test_diffusion
  loss             ``forward(img, times, noise=...)`` with injected draws      test_diffusion
  q_sample, p_sample, ddim_step, ddim_loop, ddpm_loop, interpolate           test_diffusion
  grad, adam       gradients of every parameter; parameters after Adam steps   test_training

The 1D family keeps its rows in ``parity.cases_1d`` (same Case, ids ``1d/...``), run by test_1d.
"""

from dataclasses import dataclass, field

MODES = ('pynative', 'graph')
B = 2

DDP = 'denoising_diffusion_pytorch'
ATTEND = 'attend'


@dataclass(frozen=True)
class Case:
    id: str
    module: str                  # the reference module (and its ms_ddpm twin), e.g. 'denoising_diffusion_pytorch'
    cls: str                     # the class (or factory function) in that module
    check: str                   # what is compared (see the module docstring)
    kind: str = None             # tolerance kind (parity.tolerances)
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    inputs: tuple = ()           # input specs for harness.make_inputs
    input_seed: int = 0          # seed of the inputs / draws
    seed: int = 0                # torch.manual_seed before building the reference (the shared weights)
    net_module: str = None       # a diffusion process: the network it wraps
    net_cls: str = None
    net_kwargs: dict = None
    draws: dict = field(default_factory=dict)   # draw options: 'offset' (offset noise), 'coin' (self-cond coin)
    call: dict = field(default_factory=dict)    # call options: 'reduction', 't', 'lam', ...
    modes: tuple = MODES         # MindSpore modes it runs in ('' for none: no MindSpore program is run)
    raises: tuple = None         # (exception, message both raise[, the message MindSpore raises])

    @property
    def key(self):
        return (self.module, self.cls)


class Table(list):
    """A table of rows: ``add`` appends, ``rows`` filters them (in table order) after checking
    that ids are unique within a check, ``case`` finds one.  The shared table is ``ROWS``; a
    family whose rows need their own generic tests keeps its own ``Table`` (``parity.cases_1d``)."""

    def add(self, *cases):
        self.extend(cases)

    def check_unique(self):
        seen = set()
        for c in self:
            if (c.check, c.id) in seen:
                raise ValueError(f'two rows with check={c.check!r} id={c.id!r}: ids must be unique within a check')
            seen.add((c.check, c.id))

    def rows(self, check=None, module=None, cls=None, kind=None, ids=None, not_kind=None):
        """The rows of ``check`` (and module / class / tolerance kind / ids), in table order."""
        self.check_unique()
        return [c for c in self if (check is None or c.check == check) and (module is None or c.module == module)
                and (cls is None or c.cls == cls) and (kind is None or c.kind == kind)
                and (not_kind is None or c.kind != not_kind) and (ids is None or c.id in ids)]

    def case(self, check, id):
        """The one row of ``check`` with this id."""
        found = [c for c in self if c.check == check and c.id == id]
        if len(found) != 1:
            raise KeyError(f'{len(found)} rows with check={check!r} id={id!r}')
        return found[0]


ROWS = Table()
add = ROWS.add
rows = ROWS.rows
case = ROWS.case


def ids(cases):
    return [c.id for c in cases]


def with_modes(cases):
    """pytest parameters ``(case, mode)`` over each row's modes, id ``<case id>-<mode>``;
    GRAPH-mode ones carry the ``graph`` marker."""
    import pytest
    return [pytest.param(c, m, id=f'{c.id}-{m}', marks=[pytest.mark.graph] if m == 'graph' else [])
            for c in cases for m in c.modes]


def unet_inputs(cfg, shape):
    """A U-Net's input specs: image, integer times and, with self-conditioning, x_self_cond."""
    specs = (('randn', shape), ('time', (shape[0],), 1000))
    if cfg.get('self_condition'):
        specs += (('randn', shape),)
    return specs


def image_shape(kwargs, b=B, channels=3):
    """(b, channels, h, w) of a diffusion process built with ``kwargs``."""
    size = kwargs['image_size']
    h, w = (size, size) if isinstance(size, int) else size
    return (b, channels, h, w)


# --- denoising_diffusion_pytorch: building blocks ------------------------------------------

def _layer(id, cls, args, kwargs, inputs, kind, module=DDP):
    return Case(id, module, cls, 'forward', kind, args, kwargs, tuple(inputs))


add(
    _layer('RMSNorm',                  'RMSNorm', (16,), {}, [('randn', (B, 16, 8, 8))], 'elementwise'),
    _layer('SinusoidalPosEmb',         'SinusoidalPosEmb', (32,), {}, [('time', (B,), 1000)], 'elementwise'),
    _layer('SinusoidalPosEmb-theta',   'SinusoidalPosEmb', (16,), {'theta': 100}, [('time', (B,), 1000)], 'elementwise'),
    _layer('RandomOrLearnedSinusoidalPosEmb', 'RandomOrLearnedSinusoidalPosEmb', (16,), {}, [('float_time', (B,), 1.0)], 'elementwise'),
    _layer('RandomFourierFeatures',    'RandomOrLearnedSinusoidalPosEmb', (16, True), {}, [('float_time', (B,), 1.0)], 'elementwise'),
    _layer('Block',                    'Block', (8, 16), {}, [('randn', (B, 8, 8, 8))], 'layer'),
    _layer('ResnetBlock-time',         'ResnetBlock', (8, 16), {'time_emb_dim': 32}, [('randn', (B, 8, 8, 8)), ('randn', (B, 32))], 'layer'),
    _layer('ResnetBlock-notime',       'ResnetBlock', (16, 16), {}, [('randn', (B, 16, 8, 8))], 'layer'),
    _layer('LinearAttention',          'LinearAttention', (16,), {'heads': 2, 'dim_head': 8}, [('randn', (B, 16, 8, 6))], 'layer'),
    _layer('LinearAttention-default',  'LinearAttention', (32,), {}, [('randn', (B, 32, 4, 4))], 'layer'),
    _layer('Attention',                'Attention', (16,), {'heads': 2, 'dim_head': 8}, [('randn', (B, 16, 8, 6))], 'layer'),
    _layer('Attention-flash',          'Attention', (16,), {'heads': 2, 'dim_head': 8, 'flash': True}, [('randn', (B, 16, 4, 4))], 'layer'),
)

# --- attend ---------------------------------------------------------------------------------

add(
    _layer('Attend',                   'Attend', (), {}, [('randn', (B, 2, 10, 8))] * 3, 'layer', module=ATTEND),
    _layer('Attend-flash',             'Attend', (), {'flash': True}, [('randn', (B, 2, 10, 8))] * 3, 'layer', module=ATTEND),
)

# --- denoising_diffusion_pytorch: Upsample / Downsample (factory functions) ------------------

add(
    _layer('Upsample',                 'Upsample', (8, 16), {}, [('randn', (B, 8, 4, 6))], 'layer'),
    _layer('Downsample',               'Downsample', (8, 16), {}, [('randn', (B, 8, 4, 6))], 'layer'),
)

# --- denoising_diffusion_pytorch: Unet ------------------------------------------------------

SMALL = dict(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8)


def _unet(id, cfg, shape=(B, 3, 16, 16), check='forward', **kw):
    return Case(id, DDP, 'Unet', check, 'unet', kwargs=cfg, inputs=unet_inputs(cfg, shape), input_seed=1, **kw)


add(
    _unet('defaults-dim16',       dict(dim=16)),
    _unet('small',                dict(SMALL)),
    _unet('self_condition',       dict(SMALL, self_condition=True)),
    _unet('learned_variance',     dict(SMALL, learned_variance=True)),
    _unet('learned_sinusoidal',   dict(SMALL, learned_sinusoidal_cond=True)),
    _unet('random_fourier',       dict(SMALL, random_fourier_features=True)),
    _unet('full_attn-all',        dict(SMALL, dim_mults=(1, 2, 2), full_attn=True)),
    _unet('full_attn-tuple',      dict(SMALL, dim_mults=(1, 2, 2), full_attn=(True, False, True))),
    _unet('per-stage-heads',      dict(dim=8, dim_mults=(1, 2, 4), attn_heads=(1, 2, 4), attn_dim_head=(4, 8, 16))),
    _unet('init_dim-out_dim',     dict(SMALL, init_dim=12, out_dim=5)),
    _unet('channels-1',           dict(SMALL, channels=1), (B, 1, 16, 16)),
    _unet('non-square',           dict(SMALL, dim_mults=(1, 2, 2)), (B, 3, 8, 20)),
    _unet('3-stages',             dict(dim=8, dim_mults=(1, 2, 4))),
    _unet('4-stages',             dict(dim=8, dim_mults=(1, 2, 4, 8))),
    _unet('theta-dropout-flash',  dict(SMALL, sinusoidal_pos_emb_theta=1000, dropout=0.1, flash_attn=True)),
    # x_self_cond omitted: zeros in both frameworks
    Case('self_condition', DDP, 'Unet', 'self_cond_default', 'unet', kwargs=dict(SMALL, self_condition=True),
         inputs=(('randn', (B, 3, 16, 16)), ('time', (B,), 1000)), input_seed=2, modes=('pynative',)),
    # the reference's default configuration: 245 tensors, 35,711,491 parameters
    Case('dim64', DDP, 'Unet', 'default_unet', 'unet', kwargs=dict(dim=64),
         inputs=(('randn', (1, 3, 32, 32)), ('time', (1,), 1000)), input_seed=3, modes=('pynative',),
         call=dict(n_tensors=245, n_params=35_711_491)),
    Case('dim16-learned_sinusoidal', DDP, 'Unet', 'init', kwargs=dict(dim=16, dim_mults=(1, 2), learned_sinusoidal_cond=True),
         modes=()),
    Case('indivisible-12x10', DDP, 'Unet', 'forward_error', kwargs=dict(dim=8, dim_mults=(1, 2, 4), attn_heads=2, attn_dim_head=8),
         inputs=(('randn', (1, 3, 12, 10)), ('time', (1,), 1000)),
         raises=(AssertionError, 'need to be divisible by 4, given the unet',
                 'your input dimensions (12, 10) need to be divisible by 4, given the unet')),
)

# --- denoising_diffusion_pytorch: GaussianDiffusion -----------------------------------------

DIFF_UNET = dict(SMALL)
DIFF_UNET_SC = dict(SMALL, self_condition=True)
LOOP_UNET = dict(dim=4, dim_mults=(1,), attn_heads=1, attn_dim_head=4)


def _gd(id, check, kind, kwargs, net_kwargs=DIFF_UNET, **kw):
    return Case(id, DDP, 'GaussianDiffusion', check, kind, kwargs=kwargs,
                net_module=DDP, net_cls='Unet', net_kwargs=net_kwargs, **kw)


# schedule buffers: each framework's own GaussianDiffusion computes them (nothing copied)
add(*[
    _gd(f'{sched}-T{T}-{obj}{"-minsnr" if snr else ""}', 'schedule', 'schedule',
        dict(image_size=16, timesteps=T, beta_schedule=sched, objective=obj, min_snr_loss_weight=snr), SMALL, modes=())
    for sched in ('linear', 'cosine', 'sigmoid') for T in (1000, 37)
    for obj, snr in (('pred_noise', False), ('pred_x0', True), ('pred_v', False), ('pred_v', True))
])
add(
    _gd('cosine-s0.02', 'schedule', 'schedule', dict(image_size=16, timesteps=200, beta_schedule='cosine',
                                                      schedule_fn_kwargs=dict(s=0.02)), SMALL, modes=()),
    _gd('sigmoid-kwargs', 'schedule', 'schedule', dict(image_size=16, timesteps=200, beta_schedule='sigmoid',
                                                        schedule_fn_kwargs=dict(start=-2, end=4, tau=0.7)), SMALL, modes=()),
    _gd('min_snr_gamma-2', 'schedule', 'schedule', dict(image_size=16, timesteps=100, min_snr_loss_weight=True,
                                                         min_snr_gamma=2), SMALL, modes=()),
    _gd('self_cond-T50', 'names', None, dict(image_size=16, timesteps=50), DIFF_UNET_SC, modes=()),
)

# losses: forward(img, times, noise=..., loss_reduction=...) with every draw injected
add(*[
    _gd(f'{obj}-{sched}', 'loss', 'loss', dict(image_size=16, timesteps=100, objective=obj, beta_schedule=sched))
    for obj in ('pred_noise', 'pred_x0', 'pred_v') for sched in ('linear', 'cosine', 'sigmoid')
])
add(
    _gd('min_snr-pred_v', 'loss', 'loss', dict(image_size=16, timesteps=100, min_snr_loss_weight=True)),
    _gd('min_snr-pred_noise', 'loss', 'loss', dict(image_size=16, timesteps=100, objective='pred_noise', min_snr_loss_weight=True)),
    _gd('min_snr-pred_x0', 'loss', 'loss', dict(image_size=16, timesteps=100, objective='pred_x0', min_snr_loss_weight=True)),
    _gd('offset_noise', 'loss', 'loss', dict(image_size=16, timesteps=100, offset_noise_strength=0.1), draws={'offset': True}),
    _gd('reduction-none', 'loss', 'loss', dict(image_size=16, timesteps=100), call={'reduction': 'none'}),
    _gd('self_cond-coin-used', 'loss', 'loss', dict(image_size=16, timesteps=100), DIFF_UNET_SC, draws={'coin': 0.3}),
    _gd('self_cond-coin-unused', 'loss', 'loss', dict(image_size=16, timesteps=100), DIFF_UNET_SC, draws={'coin': 0.7},
        call={'reduction': 'none'}),
    _gd('no-auto_normalize', 'loss', 'loss', dict(image_size=16, timesteps=100, auto_normalize=False)),
    # the assignment is a host computation (scipy), as in the reference: in GRAPH mode a clear
    # error, then the documented way around it gives the reference's loss
    _gd('immiscible', 'loss', 'loss', dict(image_size=16, timesteps=100, immiscible=True), call={'reduction': 'none'}),
    _gd('non-square', 'loss', 'loss', dict(image_size=(8, 12), timesteps=100), dict(SMALL), call={'reduction': 'none'}),
)

# single steps, loops and interpolation, with every randn the reference draws injected
add(
    _gd('T100', 'q_sample', 'diffusion', dict(image_size=16, timesteps=100)),
    *[_gd(obj, 'p_sample', 'layer', dict(image_size=16, timesteps=100, objective=obj), input_seed=5,
          call={'t': (57, 0)}) for obj in ('pred_noise', 'pred_x0', 'pred_v')],
    # the first DDIM step (a real step with noise) of a 2-step DDIM loop
    *[_gd(f'eta{eta}', 'ddim_step', 'layer', dict(image_size=16, timesteps=100, sampling_timesteps=2, ddim_sampling_eta=eta),
          input_seed=6) for eta in (0.0, 0.7)],
    _gd('pred_v-eta0', 'ddim_loop', 'sample', dict(image_size=8, timesteps=1000, sampling_timesteps=10, objective='pred_v',
                                                   ddim_sampling_eta=0.0), input_seed=7),
    _gd('self_cond-pred_noise-eta0.5', 'ddim_loop', 'sample', dict(image_size=8, timesteps=1000, sampling_timesteps=10,
                                                                   objective='pred_noise', ddim_sampling_eta=0.5),
        DIFF_UNET_SC, input_seed=7),
    # the full 1000-step DDPM loop, compiled steps (the default), on a one-stage U-Net (half the
    # small one's ops: the loop's 1000 steps, not the network, are what this row checks)
    _gd('T1000-8x8', 'ddpm_loop', 'sample', dict(image_size=8, timesteps=1000), LOOP_UNET, input_seed=8,
        modes=('graph',)),
    _gd('t6-lam0.3', 'interpolate', 'layer', dict(image_size=16, timesteps=100), input_seed=9, call={'t': 6, 'lam': 0.3}),
)

# bad arguments: the same errors as the reference
add(*[
    _gd(id, 'bad_args', None, kw, net, modes=(), raises=(exc, match)) for id, net, kw, exc, match in [
        ('objective', SMALL, dict(image_size=16, objective='pred_eps'), AssertionError, 'objective must be either'),
        ('beta_schedule', SMALL, dict(image_size=16, beta_schedule='quadratic'), ValueError, 'unknown beta schedule quadratic'),
        ('sampling_timesteps', SMALL, dict(image_size=16, timesteps=10, sampling_timesteps=20), AssertionError, ''),
        ('image_size', SMALL, dict(image_size=(16, 16, 3)), AssertionError,
         'image size must be a integer or a tuple/list of two integers'),
        ('learned_variance', dict(SMALL, learned_variance=True), dict(image_size=16), AssertionError, ''),
        ('learned_sinusoidal', dict(SMALL, learned_sinusoidal_cond=True), dict(image_size=16), AssertionError, ''),
    ]
])

# gradients and optimiser steps (test_training.py): draws of the loss, input_seed 11 (grad)
# and 100 + step (adam)
_TRAIN = [
    ('pred_v-sigmoid', DIFF_UNET, dict(image_size=16, timesteps=100), {}),
    ('pred_noise-self_cond-offset', DIFF_UNET_SC, dict(image_size=16, timesteps=100, objective='pred_noise',
                                                       offset_noise_strength=0.1), {'offset': True, 'coin': 0.2}),
    ('pred_x0-min_snr-linear', DIFF_UNET, dict(image_size=16, timesteps=100, objective='pred_x0',
                                              beta_schedule='linear', min_snr_loss_weight=True), {}),
]
add(*[_gd(id, 'grad', 'grad', kw, net, draws=d, input_seed=11) for id, net, kw, d in _TRAIN])
add(_gd(_TRAIN[0][0], 'adam', 'adam', _TRAIN[0][2], _TRAIN[0][1], draws=_TRAIN[0][3], input_seed=100),
    _gd(_TRAIN[1][0], 'adam', 'adam', _TRAIN[1][2], _TRAIN[1][1], draws=_TRAIN[1][3], input_seed=100, modes=('graph',)))

# the reference Trainer's optimiser settings
ADAM = dict(lr=1e-4, betas=(0.9, 0.99))

# (id, unet cfg, GaussianDiffusion kwargs, draws) of the grad rows, the shape test_training.py
# unpacks until it parametrizes over rows('grad') / rows('adam')
TRAIN_CASES = [(c.id, c.net_kwargs, c.kwargs, dict(c.draws)) for c in rows('grad')]
