"""Config inference over the Unet grid of cases.py, and GaussianDiffusion schedule/objective
inference over every (objective, beta_schedule, min_snr) combination of the reference."""

import numpy as np
import pytest

from parity.cases import DDP, rows
from weight_convert import infer_diffusion_config, infer_unet_config
from weight_convert.converter import target_spec
from weight_convert.rules import UNET_DEFAULTS, UNET_NOT_INFERABLE

torch = pytest.importorskip('torch')
ddp = pytest.importorskip('denoising_diffusion_pytorch')


def canonical(kwargs):
    """The Unet arguments as inference reports them (equivalent spellings made one)."""
    c = dict(UNET_DEFAULTS, **kwargs)
    n = len(c['dim_mults'])
    if c['init_dim'] == c['dim']:
        c['init_dim'] = None
    full = c['full_attn']
    full = list(full) if isinstance(full, (tuple, list)) else ([full] * n if full else [False] * (n - 1) + [True])
    c['full_attn'] = None if full == [False] * (n - 1) + [True] else (True if all(full) else full)
    for k in ('attn_heads', 'attn_dim_head'):
        v = list(c[k]) if isinstance(c[k], (tuple, list)) else [c[k]] * n
        c[k] = v[0] if len(set(v)) == 1 else v
    c['dim_mults'] = list(c['dim_mults'])
    if c['random_fourier_features']:          # indistinguishable from learned: reported as learned
        c['random_fourier_features'], c['learned_sinusoidal_cond'] = False, True
    for k in UNET_NOT_INFERABLE:
        c[k] = UNET_DEFAULTS[k]
    return c


UNET_CASES = [(c.id, c.kwargs) for c in rows('forward', module=DDP, cls='Unet')]


@pytest.mark.parametrize('case_id,kwargs', UNET_CASES, ids=[c[0] for c in UNET_CASES])
def test_unet_config_inferred_from_shapes(case_id, kwargs):
    sd = ddp.Unet(**kwargs).state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    cfg, report = infer_unet_config(shapes)
    assert cfg == canonical(kwargs), case_id
    # the inferred config builds a MindSpore network with exactly this state dict's keys and shapes
    spec = target_spec({'model': 'Unet', 'unet': cfg})
    assert dict(spec) == shapes
    assert set(UNET_NOT_INFERABLE) <= set(report['not_inferred'])
    if kwargs.get('random_fourier_features') or kwargs.get('learned_sinusoidal_cond'):
        assert 'random_fourier_features' in report['ambiguous']


def test_self_condition_with_learned_variance_is_reported_ambiguous():
    # init_conv takes 6 channels, final_conv gives 6: (channels=3, self_condition, learned_variance)
    # and (channels=6) both fit; the usual image channel count wins, the other is reported
    kw = dict(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8, self_condition=True, learned_variance=True)
    shapes = {k: tuple(v.shape) for k, v in ddp.Unet(**kw).state_dict().items()}
    cfg, report = infer_unet_config(shapes)
    assert (cfg['channels'], cfg['self_condition'], cfg['learned_variance']) == (3, True, True)
    assert 'channels=6' in report['ambiguous']['channels/self_condition']
    # inside a GaussianDiffusion (channels == out_dim) there is no ambiguity
    kw = dict(kw, learned_variance=False, channels=2)
    shapes = {k: tuple(v.shape) for k, v in ddp.Unet(**kw).state_dict().items()}
    cfg, report = infer_unet_config(shapes, diffusion=True)
    assert (cfg['channels'], cfg['self_condition']) == (2, True) and not report['ambiguous']


def test_not_a_unet_is_a_clear_error():
    from weight_convert.infer import InferenceError
    with pytest.raises(InferenceError, match='time_mlp.3.weight'):
        infer_unet_config({'init_conv.weight': (8, 3, 7, 7)})


DIFFUSION_GRID = [(obj, sched, min_snr) for obj in ('pred_noise', 'pred_x0', 'pred_v')
                  for sched in ('linear', 'cosine', 'sigmoid') for min_snr in (False, True)]


@pytest.mark.parametrize('objective,schedule,min_snr', DIFFUSION_GRID)
def test_diffusion_objective_and_schedule_recovered_from_buffers(objective, schedule, min_snr):
    unet = ddp.Unet(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8)
    gd = ddp.GaussianDiffusion(unet, image_size=8, timesteps=50, objective=objective, beta_schedule=schedule,
                               min_snr_loss_weight=min_snr, min_snr_gamma=5)
    buffers = {k: v.numpy() for k, v in gd.state_dict().items() if not k.startswith('model.')}
    cfg, report = infer_diffusion_config(buffers)
    assert (cfg['timesteps'], cfg['beta_schedule'], cfg['objective'], cfg['min_snr_loss_weight']) == \
        (50, schedule, objective, min_snr)
    assert 'image_size' in report['not_inferred']


def test_unknown_schedule_is_reported_not_guessed():
    unet = ddp.Unet(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8)
    gd = ddp.GaussianDiffusion(unet, image_size=8, timesteps=20, beta_schedule='sigmoid',
                               schedule_fn_kwargs=dict(start=-2, end=2, tau=0.7))
    buffers = {k: v.numpy() for k, v in gd.state_dict().items() if not k.startswith('model.')}
    cfg, report = infer_diffusion_config(buffers)
    assert 'beta_schedule' in report['not_inferred']
    assert cfg['objective'] == 'pred_v'      # still recovered, from the checkpoint's own alphas_cumprod
