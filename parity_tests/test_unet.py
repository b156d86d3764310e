"""The whole Unet over a grid of configurations, PyNative and GRAPH, fp32."""

import numpy as np
import pytest

from parity_tests.cases import UNET_CASES
from parity.compare import assert_parity
from parity_tests.harness import MODES, build_pair, make_inputs, run_torch, run_ms

IDS = [c[0] for c in UNET_CASES]


def _inputs(cfg, shape):
    b, c, h, w = shape
    specs = [('randn', shape), ('time', (b,), 1000)]
    if cfg.get('self_condition'):
        specs.append(('randn', shape))
    return make_inputs(specs, seed=1)


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('case', UNET_CASES, ids=IDS)
def test_unet_output(case, mode, record):
    case_id, cfg, shape = case
    t, m = build_pair('Unet', kwargs=cfg)
    inputs = _inputs(cfg, shape)
    record(assert_parity(f'unet {case_id} [{mode}]', run_torch(t, inputs), run_ms(m, inputs, mode), 'unet'))


@pytest.mark.parametrize('case', UNET_CASES, ids=IDS)
def test_unet_parameter_names_and_shapes(case):
    """Names and shapes equal by construction, checked directly (not through the converter)."""
    import torch
    import denoising_diffusion_pytorch as ddp
    import ms_ddpm
    _, cfg, _ = case
    t = ddp.Unet(**cfg)
    m = ms_ddpm.Unet(**cfg)
    torch_shapes = {k: tuple(v.shape) for k, v in t.state_dict().items()}
    ms_shapes = {n: tuple(p.shape) for n, p in m.parameters_and_names()}
    assert set(ms_shapes) == set(torch_shapes), (
        f'only in torch: {sorted(set(torch_shapes) - set(ms_shapes))}; only in MindSpore: {sorted(set(ms_shapes) - set(torch_shapes))}')
    assert ms_shapes == torch_shapes
    # the Parameter objects carry the same full names (what save_checkpoint writes)
    assert all(p.name == n for n, p in m.parameters_and_names())
    # trainable flags match requires_grad (random Fourier features are frozen in both)
    t_trainable = {k for k, p in t.named_parameters() if p.requires_grad}
    m_trainable = {n for n, p in m.parameters_and_names() if p.requires_grad}
    assert t_trainable == m_trainable


def test_self_condition_default_is_zeros(record):
    """x_self_cond=None means zeros in both frameworks."""
    import mindspore as ms
    case_id, cfg, shape = next(c for c in UNET_CASES if c[0] == 'self_condition')
    t, m = build_pair('Unet', kwargs=cfg)
    x, time = make_inputs([('randn', shape), ('time', (shape[0],), 1000)], seed=2)
    record(assert_parity('unet self_condition x_self_cond=None [pynative]',
                         run_torch(t, [x, time]), run_ms(m, [x, time], 'pynative'), 'unet'))


def test_default_unet_dim64(record):
    """The reference's default configuration, Unet(dim=64): 245 tensors, 35.7M parameters."""
    t, m = build_pair('Unet', kwargs=dict(dim=64))
    assert len(t.state_dict()) == 245
    n_params = sum(int(np.prod(p.shape)) for _, p in m.parameters_and_names())
    assert n_params == sum(p.numel() for p in t.parameters()) == 35_711_491
    inputs = make_inputs([('randn', (1, 3, 32, 32)), ('time', (1,), 1000)], seed=3)
    record(assert_parity('unet default dim=64 [pynative]', run_torch(t, inputs), run_ms(m, inputs, 'pynative'), 'unet'))


def test_fresh_init_matches_pytorch_distribution():
    """A fresh MindSpore Unet initialises like PyTorch: conv/linear weights and biases
    uniform in +-1/sqrt(fan_in), RMSNorm gains 1, mem_kv and Fourier weights N(0, 1)."""
    import denoising_diffusion_pytorch as ddp
    import ms_ddpm
    cfg = dict(dim=16, dim_mults=(1, 2), learned_sinusoidal_cond=True)
    t = {k: v.numpy() for k, v in ddp.Unet(**cfg).state_dict().items()}
    m = {n: p.asnumpy() for n, p in ms_ddpm.Unet(**cfg).parameters_and_names()}
    normal = []
    for k, tv in t.items():
        mv = m[k]
        if k.endswith('.g'):
            assert (mv == 1).all(), k
        elif k.endswith('mem_kv') or k.endswith('time_mlp.0.weights'):
            normal.append(mv.ravel())   # torch.randn: pooled below (single tensors can be tiny)
        else:
            w = t[k[:-len('bias')] + 'weight'] if k.endswith('bias') else tv
            bound = 1 / np.sqrt(np.prod(w.shape[1:]))
            assert np.abs(mv).max() <= bound * (1 + 1e-6), f'{k}: exceeds +-1/sqrt(fan_in) = {bound:.4f}'
            if mv.size >= 2000:   # uniform(-b, b): std b/sqrt(3) (10% = 5 sigma at n = 2000)
                assert abs(mv.std() / (bound / np.sqrt(3)) - 1) < 0.1, f'{k}: std {mv.std():.4f}'
                assert abs(tv.std() / (bound / np.sqrt(3)) - 1) < 0.1, f'{k}: torch std {tv.std():.4f}'
    pooled = np.concatenate(normal)
    assert pooled.size > 1000
    assert abs(pooled.std() - 1) < 0.1 and abs(pooled.mean()) < 0.1, 'mem_kv / Fourier weights: N(0, 1) expected'
