"""Simple diffusion (``simple_diffusion``: UViT and its GaussianDiffusion, issue 15) against the
reference on the same weights and the same draws, PyNative and GRAPH: UViT over its option grid,
the log-SNR schedules as functions of t, the losses with injected times and noise, the gradient
of every parameter, the sampling loop with shared noise.  The rows are
``parity.cases_simple.ROWS_SIMPLE``."""

import numpy as np
import pytest
import mindspore as ms

from parity.cases import with_modes, ids
from parity.cases_simple import B, IMG, SD, rows_simple
from parity.compare import assert_gradients, assert_parity
from parity.harness import build, reference_grads, resolve
from reference.draws import injected_draws
from weight_convert import load_torch_state_dict

_PAIRS = {}


def _pair(case):
    """(torch, MindSpore) of a row, both in eval mode, the reference's weights perturbed by
    ``call['perturb']`` x N(0, 1) (a seeded generator) and copied; built once per configuration."""
    import torch
    key = (case.cls, repr(case.kwargs), repr(case.net_kwargs), case.call.get('perturb'), case.seed)
    if key not in _PAIRS:
        torch.manual_seed(case.seed)
        t = build('torch', case).eval()
        g = torch.Generator().manual_seed(1234)
        with torch.no_grad():
            for _, p in t.named_parameters():
                p.add_(case.call['perturb'] * torch.randn(p.shape, generator=g))
        m = build('ms', case)
        m.set_train(False)
        load_torch_state_dict(m, t.state_dict())
        _PAIRS[key] = (t, m)
    return _PAIRS[key]


# --- UViT ---------------------------------------------------------------------------------------

def _uvit_inputs(case):
    rng = np.random.default_rng(case.input_seed)
    x = rng.standard_normal(case.inputs[0][1]).astype(np.float32)
    log_snr = rng.uniform(-15., 15., case.inputs[1][1]).astype(np.float32)
    return x, log_snr


@pytest.mark.parametrize('case,mode', with_modes(rows_simple('forward')))
def test_uvit_forward(case, mode, record):
    import torch
    t, m = _pair(case)
    x, time = _uvit_inputs(case)
    with torch.no_grad():
        expected = t(torch.from_numpy(x), torch.from_numpy(time)).numpy()

    def fwd(a, b):
        return m(a, b)
    if mode == 'graph':
        fwd = ms.jit(fwd)
    actual = fwd(ms.Tensor(x), ms.Tensor(time)).asnumpy()
    record(assert_parity(f'{case.id} [{mode}]', expected, actual, case.kind))


@pytest.mark.parametrize('case', rows_simple('forward'), ids=ids(rows_simple('forward')))
def test_uvit_names_shapes_order_trainable(case):
    t, m = build('torch', case), build('ms', case)
    ts = {k: tuple(v.shape) for k, v in t.state_dict().items()}
    mss = {n: tuple(p.shape) for n, p in m.parameters_and_names()}
    assert mss == ts and list(mss) == list(ts)
    assert all(p.name == n for n, p in m.parameters_and_names())
    assert {k for k, p in t.named_parameters() if p.requires_grad} == {n for n, p in m.parameters_and_names() if p.requires_grad}
    assert m.out_dim == t.out_dim


def test_fresh_init_like_pytorch():
    """Zero-initialised FeedForward scale/shift and Upsample bias, Upsample filters repeated
    factor**2 times (the reference's init_conv_), ones for the gains and q/k scales."""
    case = rows_simple('forward')[0]
    m = dict(build('ms', case).parameters_and_names())
    t = dict(build('torch', case).named_parameters())
    for name, p in m.items():
        v, tv = p.asnumpy(), t[name].detach().numpy()
        if (tv == 0).all() or (tv == 1).all():
            assert (v == tv).all(), name
    w = m['ups.0.0.net.0.weight'].asnumpy()
    assert np.array_equal(w[0::4], w[3::4]) and not np.array_equal(w[0], w[4])


# --- GaussianDiffusion: schedules, losses, gradients, sampling -------------------------------------

@pytest.mark.parametrize('case', rows_simple('schedule'), ids=ids(rows_simple('schedule')))
def test_log_snr_schedule(case, record):
    """Each framework's own log_snr(t) on 101 points of [0, 1] (both ends included)."""
    import torch
    t, m = _pair(case)
    grid = np.linspace(0., 1., 101).astype(np.float32)
    expected = t.log_snr(torch.from_numpy(grid)).numpy()
    actual = m.log_snr(ms.Tensor(grid)).asnumpy()
    record(assert_parity(f'log_snr {case.id}', expected, actual, case.kind))


def _loss_inputs(case):
    rng = np.random.default_rng(case.input_seed)
    img = rng.random(IMG).astype(np.float32)
    noise = rng.standard_normal(IMG).astype(np.float32)
    return img, np.array(case.draws['times'], np.float32), noise


def _torch_loss(case, t, img, times, noise):
    import torch
    with injected_draws(uniform=[times]):
        return t(torch.from_numpy(img), noise=torch.from_numpy(noise), loss_reduction=case.call.get('reduction', 'mean'))


def _ms_loss_fn(case, m):
    red = case.call.get('reduction', 'mean')
    return lambda img, times, noise: m(img, times, red, noise)


@pytest.mark.parametrize('case,mode', with_modes(rows_simple('loss')))
def test_loss(case, mode, record):
    t, m = _pair(case)
    img, times, noise = _loss_inputs(case)
    expected = _torch_loss(case, t, img, times, noise).detach().numpy()
    fn = _ms_loss_fn(case, m)
    if mode == 'graph':
        fn = ms.jit(fn)
    actual = fn(ms.Tensor(img), ms.Tensor(times), ms.Tensor(noise)).asnumpy()
    record(assert_parity(f'loss {case.id} [{mode}]', expected, actual, case.kind))


@pytest.mark.parametrize('case,mode', with_modes(rows_simple('grad')))
def test_gradients_every_parameter(case, mode, record):
    t, m = _pair(case)
    img, times, noise = _loss_inputs(case)
    loss_of = lambda tm, cast: _torch_loss(case, tm, *cast((img, times, noise)))
    _, t64 = reference_grads(t, loss_of, float64=True)   # the accuracy gate's yardstick
    t_loss, t_grads = reference_grads(t, loss_of)
    weights = m.trainable_params()
    names = [p.name for p in weights]
    grad_fn = ms.value_and_grad(_ms_loss_fn(case, m), None, weights)
    if mode == 'graph':
        grad_fn = ms.jit(grad_fn)
    m_loss, m_grads = grad_fn(ms.Tensor(img), ms.Tensor(times), ms.Tensor(noise))
    record(assert_parity(f'grad-loss {case.id} [{mode}]', t_loss, m_loss.asnumpy(), 'loss'))
    assert_gradients(f'{case.id} [{mode}]', t_grads, dict(zip(names, (g.asnumpy() for g in m_grads))), t64,
                     kind=case.kind, record=record)


@pytest.mark.parametrize('case,mode', with_modes(rows_simple('sample')))
def test_sampling_loop(case, mode, record):
    """The whole loop with every randn shared: the start and one per step but the last."""
    t, m = _pair(case)
    m.jit_sampling = mode == 'graph'
    draws = np.random.default_rng(case.input_seed + 11).standard_normal((m.num_sample_steps,) + IMG).astype(np.float32)
    with injected_draws(randn=list(draws)):
        expected = t.sample(batch_size=B).numpy()
    actual = m.sample(batch_size=B, noise=draws).asnumpy()
    assert actual.shape == expected.shape == IMG
    assert actual.min() >= 0 and actual.max() <= 1
    record(assert_parity(f'sample {case.id} [{mode}]', expected, actual, case.kind))


# --- errors, exports ------------------------------------------------------------------------------

def test_bad_arguments_same_errors():
    for kw in (dict(image_size=8, pred_objective='x0'), dict(image_size=8, noise_d=4, noise_d_low=2, noise_d_high=8),
               dict(image_size=8, noise_d_low=2)):
        for fw in ('torch', 'ms'):
            with pytest.raises(AssertionError):
                resolve(fw, SD, 'GaussianDiffusion')(resolve(fw, SD, 'UViT')(dim=8, dim_mults=(1, 2), vit_depth=1), **kw)


def test_wrong_image_size_is_named():
    """The reference's message names an undefined ``image_size`` (NameError); the twin's
    AssertionError names the expected size (docs/parity.md)."""
    import torch
    case = rows_simple('loss')[0]
    t, m = _pair(case)
    with pytest.raises(NameError, match='image_size'):
        t(torch.zeros(1, 3, 4, 4))
    with pytest.raises(AssertionError, match='height and width of image must be 8'):
        m(ms.Tensor(np.zeros((1, 3, 4, 4), np.float32)))


def test_not_exported_like_the_reference():
    import denoising_diffusion_pytorch as ddp
    import ms_ddpm
    assert not hasattr(ddp, 'UViT') and not hasattr(ms_ddpm, 'UViT')
