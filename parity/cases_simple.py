"""Parity cases of simple diffusion (``simple_diffusion``: UViT and its GaussianDiffusion,
issue 15), as rows of :class:`parity.cases.Case` with ids prefixed ``simple/``, run by
``parity_tests/test_simple_diffusion.py``.  Their own table (``ROWS_SIMPLE``): UViT takes a
continuous time (the log-SNR), the process continuous times drawn with ``uniform_``.

checks:
  forward    ``UViT(x, time)`` (time: log-SNR values) over patch_size 1 / 2, dual_patchnorm,
             downsample factors, init_dim / out_dim, channels; ``vit_dropout`` 0.2 in eval.
             UViT has no self-conditioning (neither in the reference).
  schedule   ``log_snr(t)`` of the process (plain cosine, shifted by ``noise_d``, interpolated
             between ``noise_d_low`` / ``noise_d_high``) on a grid of t in [0, 1], ends included
  loss       ``forward(img)`` with ``times`` (the reference's ``uniform_``) and ``noise``
             injected: 'v' / 'eps', min-SNR on / off, the schedules, reduction 'none'
  grad       the loss and the gradient of every parameter (one compiled value_and_grad in GRAPH)
GRAPH runs on one row per check (the losses' GRAPH run is the grad row's compiled
value_and_grad); the suite's time budget allows no more.
  sample     ``sample(batch_size)`` with every randn shared (``num_sample_steps`` 3 draws:
             the start and the 2 steps before the last)

The zero-initialised weights (FeedForward's to_scale_shift Linear, the Upsample conv bias) and
the RMSNorm gains / q, k scales (ones) are perturbed in the reference before the weights are
copied (``call['perturb']``), so every path is live.  Tiny configs: dim 8, dim_mults (1, 2),
vit_depth 1, 8x8 images, batch 2.
"""

from parity.cases import B, Case, Table

SD = 'simple_diffusion'
PY = ('pynative',)
BOTH = ('pynative', 'graph')
SIZE = 8
IMG = (B, 3, SIZE, SIZE)

ROWS_SIMPLE = Table()
add = ROWS_SIMPLE.add


def rows_simple(check=None):
    return ROWS_SIMPLE.rows(check, module=SD)


UVIT = dict(dim=8, dim_mults=(1, 2), vit_depth=1, attn_dim_head=8, attn_heads=2, ff_mult=2, learned_sinusoidal_dim=8)


def _uvit(id, kwargs, shape=IMG, modes=PY):
    return Case('simple/UViT-' + id, SD, 'UViT', 'forward', 'unet', kwargs={**UVIT, **kwargs},
                inputs=(('randn', shape), ('log_snr', (shape[0],))), input_seed=1, modes=modes, call={'perturb': 0.3})


add(
    _uvit('base', {}, modes=BOTH),
    _uvit('patch2', {'patch_size': 2}),
    _uvit('patch2-dual_patchnorm', {'patch_size': 2, 'dual_patchnorm': True}),
    _uvit('factors-init_dim-out_dim-channels1-depth2', {'downsample_factor': (1, 2), 'init_dim': 12, 'out_dim': 5,
                                                        'channels': 1, 'vit_depth': 2, 'vit_dropout': 0.}, (B, 1, SIZE, SIZE)),
)

# --- GaussianDiffusion -------------------------------------------------------------------------

NET = dict(UVIT)
GD = dict(image_size=SIZE, num_sample_steps=3)
SHIFTED = dict(GD, noise_d=4)
INTERP = dict(GD, noise_d_low=4, noise_d_high=32)
TIMES = (0.13, 0.91)


def _gd(id, check, kind, kwargs, modes=PY, **kw):
    return Case('simple/' + id, SD, 'GaussianDiffusion', check, kind, kwargs=kwargs, net_module=SD, net_cls='UViT',
                net_kwargs=NET, modes=modes, input_seed=3, call={'perturb': 0.3, **kw.pop('call', {})}, **kw)


# schedules: each framework's own log_snr on a grid of t (kind 'elementwise': tan, log, a shift)
add(
    _gd('cosine', 'schedule', 'elementwise', GD),
    _gd('shifted-noise_d4', 'schedule', 'elementwise', SHIFTED),
    _gd('interpolated-4-32', 'schedule', 'elementwise', INTERP),
)

add(
    _gd('v-min_snr', 'loss', 'loss', GD, draws={'times': TIMES}),
    _gd('eps-min_snr', 'loss', 'loss', dict(GD, pred_objective='eps'), draws={'times': TIMES}),
    _gd('eps-no_min_snr-none', 'loss', 'loss', dict(GD, pred_objective='eps', min_snr_loss_weight=False),
        draws={'times': (0.02, 0.55)}, call={'reduction': 'none'}),
    _gd('shifted-gamma2', 'loss', 'loss', dict(SHIFTED, min_snr_gamma=2), draws={'times': TIMES}),
    _gd('v-no_min_snr-interpolated-none', 'loss', 'loss', dict(INTERP, min_snr_loss_weight=False), draws={'times': (0.03, 0.97)},
        call={'reduction': 'none'}),
)

add(
    # GRAPH: one compiled value_and_grad (the loss compiled with it)
    _gd('v-min_snr', 'grad', 'grad', GD, draws={'times': TIMES}, modes=('graph',)),
    _gd('eps-interpolated', 'grad', 'grad', dict(INTERP, pred_objective='eps', min_snr_loss_weight=False), draws={'times': TIMES}),
)

add(
    _gd('v-N3', 'sample', 'sample', GD, modes=('graph',)),
    _gd('eps-shifted-N3', 'sample', 'sample', dict(SHIFTED, pred_objective='eps')),
)
