"""Parity cases of classifier guidance (``guided_diffusion``) and RePaint (``repaint``), rows of
:class:`parity.cases.Case` keyed by (reference module, class), ids ``gd/...`` and ``rp/...``,
run by ``parity_tests/test_guided_repaint.py`` (one generic test per check).  Kept in their own
table (``ROWS_GUIDED``): the loss draws its own times (``t``), sampling takes ``cond_fn`` /
``gt`` and ``mask``.

checks:
  forward     ``Unet(x, time[, x_self_cond])`` over a small option grid
  loss        ``GaussianDiffusion(img, t=, noise=[, offset_noise=, self_cond_coin=])`` (the
              reference's randint, randn and random() injected)
  grad        the same loss's gradient for every parameter
  classifier  ``classifier_cond_fn``: the example classifier's input gradient, ``ms.grad`` vs
              torch autograd (``call``: classifier_scale)
  guided_loop ``sample(batch_size, cond_fn=classifier_cond_fn, guidance_kwargs=...)``, DDPM and
              DDIM (``call``: classifier_scale; DDIM: the reference does not use cond_fn)
  repaint     ``sample(gt=, mask=, resample_*)``: the whole RePaint schedule on a masked image,
              every draw shared (``call``: the resample options and the mask kind)
Tiny configs: dim 8, 8x8 images, dim_mults (1, 2), batch 2, 3-6 timesteps.
"""

import numpy as np

from parity.cases import B, Case, Table, unet_inputs

GD, RP = 'guided_diffusion', 'repaint'
PY = ('pynative',)
BOTH = ('pynative', 'graph')
SHAPE = (B, 3, 8, 8)

GD_NET = dict(dim=8, dim_mults=(1, 2))
RP_NET = dict(dim=8, dim_mults=(1, 2), attn_dim_head=8, attn_heads=2)

ROWS_GUIDED = Table()
add = ROWS_GUIDED.add


def rows_guided(check=None, module=None):
    return ROWS_GUIDED.rows(check, module=module)


def _unet(id, module, net, modes=PY):
    return Case(id, module, 'Unet', 'forward', 'unet', (), net, unet_inputs(net, SHAPE), modes=modes)


add(
    _unet('gd/Unet',                    GD, GD_NET, modes=BOTH),
    _unet('gd/Unet-selfcond-learnedvar-sinu', GD, dict(GD_NET, self_condition=True, learned_variance=True, dim_mults=(1, 2, 2), learned_sinusoidal_cond=True)),
    _unet('rp/Unet',                    RP, RP_NET),
    _unet('rp/Unet-fullattn-selfcond',  RP, dict(RP_NET, full_attn=(True, True), self_condition=True)),
)


def _diff(id, module, check, kwargs, kind, modes=PY, call=None, draws=None, net=None, seed=0):
    kw = dict(image_size=8, timesteps=10)
    kw.update(kwargs)
    base = GD_NET if module == GD else RP_NET
    return Case(id, module, 'GaussianDiffusion', check, kind, (), kw, modes=modes, call=call or {},
                draws=draws or {}, net_module=module, net_cls='Unet', net_kwargs=dict(base, **(net or {})),
                input_seed=seed)


add(
    _diff('gd/loss-pred-noise',          GD, 'loss', {}, 'loss'),
    _diff('gd/loss-pred-v-selfcond-none', GD, 'loss', dict(objective='pred_v', beta_schedule='cosine'), 'loss_unreduced',
          call=dict(reduction='none'), draws=dict(coin=0.3), net=dict(self_condition=True)),
    _diff('rp/loss-pred-v-offset',       RP, 'loss', dict(offset_noise_strength=0.1), 'loss', modes=BOTH, draws=dict(offset=True)),
    _diff('rp/loss-pred-x0-minsnr',      RP, 'loss', dict(objective='pred_x0', min_snr_loss_weight=True), 'loss'),
    _diff('gd/grad-pred-noise',          GD, 'grad', {}, 'grad'),
    _diff('rp/grad-pred-v',              RP, 'grad', {}, 'grad'),
    _diff('gd/ddpm-guided',              GD, 'guided_loop', dict(timesteps=4), 'sample', modes=BOTH, call=dict(classifier_scale=2.)),
    _diff('gd/ddpm-guided-selfcond-x0',  GD, 'guided_loop', dict(timesteps=2, objective='pred_x0'), 'sample',
          call=dict(classifier_scale=5.), net=dict(self_condition=True)),
    _diff('gd/ddim-guided-ignored',      GD, 'guided_loop', dict(timesteps=6, sampling_timesteps=3, ddim_sampling_eta=1.), 'sample',
          call=dict(classifier_scale=2.)),
    _diff('rp/repaint-T3-jump1',         RP, 'repaint', dict(timesteps=3), 'sample', modes=BOTH,
          call=dict(resample_iter=1, resample_jump=1, resample_every=2, mask='half')),
    _diff('rp/repaint-T3-jump2-iter2',   RP, 'repaint', dict(timesteps=3, objective='pred_noise'), 'sample',
          call=dict(resample_iter=2, resample_jump=2, resample_every=5, mask='random')),
    _diff('rp/repaint-nomask',           RP, 'repaint', dict(timesteps=3), 'sample', call=dict(mask=None)),
)

# the example classifier's gradient (no diffusion process: the classifier alone)
add(
    Case('gd/classifier-grad', GD, 'Classifier', 'classifier', 'grad', (8, 5), {}, modes=BOTH, call=dict(classifier_scale=1)),
    Case('gd/classifier-grad-scale3', GD, 'Classifier', 'classifier', 'grad', (8, 5), {}, call=dict(classifier_scale=3.)),
)


# --- shared by parity_tests/test_guided_repaint.py and verify (ms_ddpm_tools.verify.samplers) ------

def example_classifiers(image_size=8, num_classes=5, seed=7):
    """(torch classifier_cond_fn, its Classifier, MindSpore classifier_cond_fn, its Classifier) on
    the same weights: the reference's own example code (``reference.guided_example``), built from
    ``torch.manual_seed(seed)``, the twin loaded with its state dict."""
    import torch
    from ms_ddpm import guided_diffusion as mg
    from reference.guided_example import example
    from weight_convert import load_torch_state_dict
    TClassifier, t_cond_fn = example()
    torch.manual_seed(seed)
    tc = TClassifier(image_size, num_classes)
    mc = mg.Classifier(image_size, num_classes)
    load_torch_state_dict(mc, tc.state_dict())
    return t_cond_fn, tc, mg.classifier_cond_fn, mc


def example_mask(kind, seed, shape=SHAPE):
    """A RePaint mask (1 = known pixel) of ``shape``: 'half' (the left half known), 'random' (each
    pixel known with probability 1/2, the same for every channel), None (no mask)."""
    if kind is None:
        return None
    mask = np.zeros(shape, dtype=np.float32)
    if kind == 'half':
        mask[..., :, :shape[-1] // 2] = 1.
    else:
        mask[...] = np.random.default_rng(seed).random(shape[:1] + (1,) + shape[2:]) < 0.5
    return mask
