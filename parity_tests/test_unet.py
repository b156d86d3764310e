"""Whole networks over a grid of configurations, PyNative and GRAPH, fp32: the ``forward``
rows of kind 'unet' of ``parity.cases``, and the networks' own checks (names, x_self_cond
default, the default configuration, fresh initialisation)."""

import numpy as np
import pytest

from parity.cases import ids, rows, with_modes
from parity.compare import assert_parity
from parity.harness import build, build_pair, case_inputs, run_torch, run_ms

NETS = rows('forward', kind='unet')


@pytest.mark.parametrize('case,mode', with_modes(NETS))
def test_unet_output(case, mode, record):
    t, m = build_pair(case)
    inputs = case_inputs(case)
    record(assert_parity(f'unet {case.id} [{mode}]', run_torch(t, inputs), run_ms(m, inputs, mode), 'unet'))


@pytest.mark.parametrize('case', NETS, ids=ids(NETS))
def test_unet_parameter_names_and_shapes(case):
    """Names and shapes equal by construction, checked directly (not through the converter)."""
    t = build('torch', case)
    m = build('ms', case)
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


@pytest.mark.parametrize('case,mode', with_modes(rows('self_cond_default')))
def test_self_condition_default_is_zeros(case, mode, record):
    """x_self_cond=None means zeros in both frameworks."""
    t, m = build_pair(case)
    inputs = case_inputs(case)
    record(assert_parity(f'unet {case.id} x_self_cond=None [{mode}]',
                         run_torch(t, inputs), run_ms(m, inputs, mode), case.kind))


@pytest.mark.parametrize('case,mode', with_modes(rows('default_unet')))
def test_default_unet_dim64(case, mode, record):
    """The reference's default configuration, Unet(dim=64): 245 tensors, 35.7M parameters."""
    t, m = build_pair(case)
    assert len(t.state_dict()) == case.call['n_tensors']
    n_params = sum(int(np.prod(p.shape)) for _, p in m.parameters_and_names())
    assert n_params == sum(p.numel() for p in t.parameters()) == case.call['n_params']
    inputs = case_inputs(case)
    record(assert_parity(f'unet default dim=64 [{mode}]', run_torch(t, inputs), run_ms(m, inputs, mode), case.kind))


@pytest.mark.parametrize('case', rows('init'), ids=ids(rows('init')))
def test_fresh_init_matches_pytorch_distribution(case):
    """A fresh MindSpore Unet initialises like PyTorch: conv/linear weights and biases
    uniform in +-1/sqrt(fan_in), RMSNorm gains 1, mem_kv and Fourier weights N(0, 1)."""
    t = {k: v.numpy() for k, v in build('torch', case).state_dict().items()}
    m = {n: p.asnumpy() for n, p in build('ms', case).parameters_and_names()}
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
