"""Parity cases of classifier-free guidance (``classifier_free_guidance``: its class-conditional
Unet and GaussianDiffusion), as rows of :class:`parity.cases.Case` with ids ``cfg/...``, run by
``parity_tests/test_cfg.py``.  Kept in their own table (``ROWS_CFG``): the Unet takes
``(x, time, classes)`` and the diffusion's loss and sampling take ``classes``.

checks:
  forward     ``Unet(x, time, classes, cond_drop_prob, cond_keep_mask)`` (``call``: the drop
              probability and the injected keep mask, the reference's own ``cond_keep_mask``)
  guided      ``Unet.forward_with_cond_scale`` over an option grid (``call``: its keywords)
  loss        ``GaussianDiffusion(img, times=, classes=, noise=, cond_keep_mask=)``
  grad        the same loss's gradient for every parameter (classes_emb, null_classes_emb too)
  ddpm_loop   ``sample(classes, cond_scale, rescaled_phi)`` (DDPM) with shared noise (S, *shape)
  ddim_loop   the same with DDIM (sampling_timesteps < timesteps)
  interpolate ``interpolate(x1, x2, classes, t)`` with shared noise
Tiny configs: dim 8, 8x8 images, dim_mults (1, 2), 2 heads of 8, batch 2, 3 classes.
"""

from parity.cases import B, Case, Table

CFG = 'classifier_free_guidance'
PY = ('pynative',)
BOTH = ('pynative', 'graph')

NET = dict(dim=8, num_classes=3, dim_mults=(1, 2), attn_dim_head=8, attn_heads=2)
X = ('randn', (B, 3, 8, 8))
T = ('time', (B,), 10)

ROWS_CFG = Table()
add = ROWS_CFG.add


def rows_cfg(check=None):
    return ROWS_CFG.rows(check)


def _unet(id, check, call, kind='unet', modes=PY, net=None):
    return Case('cfg/' + id, CFG, 'Unet', check, kind, (), dict(NET, **(net or {})), (X, T), modes=modes, call=call)


add(
    _unet('Unet-cond',           'forward', dict(cond_drop_prob=0.), modes=BOTH),
    _unet('Unet-null',           'forward', dict(cond_drop_prob=1.)),
    _unet('Unet-keep-mask',      'forward', dict(cond_drop_prob=0.5, cond_keep_mask=(True, False))),
    _unet('Unet-keep-mask-drop0', 'forward', dict(cond_drop_prob=0., cond_keep_mask=(False, True))),
    _unet('Unet-learned-sinu',   'forward', dict(cond_drop_prob=0.), net=dict(learned_sinusoidal_cond=True)),
    _unet('Unet-init-out-dim',   'forward', dict(cond_drop_prob=0.), net=dict(init_dim=12, learned_variance=True)),
    _unet('scale1',              'guided', dict(cond_scale=1.)),
    _unet('scale3',              'guided', dict(cond_scale=3.), kind='guided', modes=BOTH),
    _unet('scale3-phi0.7',       'guided', dict(cond_scale=3., rescaled_phi=0.7), kind='guided'),
    _unet('scale6-keep-par0.3',  'guided', dict(cond_scale=6., keep_parallel_frac=0.3), kind='guided'),
    _unet('scale3-no-remove',    'guided', dict(cond_scale=3., remove_parallel_component=False, rescaled_phi=0.5), kind='guided'),
)


def _diff(id, check, kwargs, kind, modes=PY, call=None, seed=0):
    kw = dict(image_size=8, timesteps=10)
    kw.update(kwargs)
    return Case('cfg/' + id, CFG, 'GaussianDiffusion', check, kind, (), kw, modes=modes, call=call or {},
                net_module=CFG, net_cls='Unet', net_kwargs=NET, input_seed=seed)


add(
    _diff('loss-pred-noise-mask', 'loss', {}, 'loss', modes=BOTH, call=dict(cond_keep_mask=(True, False))),
    _diff('loss-pred-v-nomask',   'loss', dict(objective='pred_v'), 'loss', call=dict(cond_keep_mask=None, cond_drop=0.)),
    # timesteps=100: the reference's linear schedule scales its betas by 1000 / timesteps, so with 10 steps they reach 2
    # (alphas < 0: NaN images and negative loss weights beyond t = 4, in both frameworks)
    _diff('loss-pred-x0-linear-none', 'loss', dict(objective='pred_x0', beta_schedule='linear', min_snr_loss_weight=True,
                                                   timesteps=100),
          'loss_unreduced', call=dict(cond_keep_mask=(False, True), reduction='none')),
    _diff('grad-pred-noise',      'grad', {}, 'grad', call=dict(cond_keep_mask=(True, False))),
    _diff('ddpm-scale3-phi0.7',   'ddpm_loop', dict(timesteps=3), 'sample', modes=BOTH, call=dict(cond_scale=3., rescaled_phi=0.7)),
    _diff('ddim-scale6-eta1',     'ddim_loop', dict(timesteps=6, sampling_timesteps=3), 'sample', call=dict(cond_scale=6., rescaled_phi=0.7)),
    _diff('ddim-cfgpp-pred-v',    'ddim_loop', dict(timesteps=6, sampling_timesteps=3, objective='pred_v', use_cfg_plus_plus=True,
                                               ddim_sampling_eta=0.), 'sample', call=dict(cond_scale=3., rescaled_phi=0.)),
    _diff('interpolate-t2',       'interpolate', dict(timesteps=4), 'sample', call=dict(t=2, lam=0.3)),
)
