"""Parity of classifier-free guidance (``classifier_free_guidance``): the class-conditional Unet
(plain, with dropped / masked conditions, guided over the option grid), the diffusion loss with
injected draws, DDPM and DDIM sampling with shared noise and interpolation.  (The gradient row,
``cfg/grad-pred-noise``, waits for the float64 accuracy gate: see docs/cfg.md.)  Rows: ``parity.cases_cfg``; one generic test per check."""

import numpy as np
import pytest
import mindspore as ms

from parity.cases import B, with_modes
from parity.cases_cfg import rows_cfg
from parity.compare import assert_gradients, assert_parity
from parity.harness import case_inputs, reference_grads
from reference.draws import injected_draws

CLASSES = np.array([0, 2], dtype=np.int64)


def _t(a):
    import torch
    return None if a is None else torch.from_numpy(np.asarray(a))


def _mask(call):
    m = call.get('cond_keep_mask')
    return None if m is None else np.asarray(m, dtype=np.bool_)


@pytest.mark.parametrize('case,mode', with_modes(rows_cfg('forward')))
def test_unet_forward(case, mode, pairs, record):
    import torch
    tm, mm = pairs(case)
    x, time = case_inputs(case)
    drop, mask = case.call['cond_drop_prob'], _mask(case.call)
    with torch.no_grad():
        expected = tm(_t(x), _t(time), _t(CLASSES), cond_drop_prob=drop, cond_keep_mask=_t(mask)).numpy()

    def fwd(x, time, classes, *m):
        return mm(x, time, classes, drop, m[0] if m else None)
    args = [ms.Tensor(x), ms.Tensor(time), ms.Tensor(CLASSES)] + ([ms.Tensor(mask)] if mask is not None else [])
    actual = (ms.jit(fwd) if mode == 'graph' else fwd)(*args).asnumpy()
    record(assert_parity(f'{case.id} [{mode}]', expected, actual, case.kind))


@pytest.mark.parametrize('case,mode', with_modes(rows_cfg('guided')))
def test_forward_with_cond_scale(case, mode, pairs, record):
    import torch
    tm, mm = pairs(case)
    x, time = case_inputs(case)
    kw = dict(case.call)
    with torch.no_grad():
        out = tm.forward_with_cond_scale(_t(x), _t(time), _t(CLASSES), **kw)

    def fwd(x, time, classes):
        return mm.forward_with_cond_scale(x, time, classes, **kw)
    got = (ms.jit(fwd) if mode == 'graph' else fwd)(ms.Tensor(x), ms.Tensor(time), ms.Tensor(CLASSES))
    if kw['cond_scale'] == 1:
        record(assert_parity(f'{case.id} logits [{mode}]', out.numpy(), got.asnumpy(), 'unet'))
        return
    record(assert_parity(f'{case.id} null logits [{mode}]', out[1].numpy(), got[1].asnumpy(), 'unet'))
    record(assert_parity(f'{case.id} guided [{mode}]', out[0].numpy(), got[0].asnumpy(), case.kind))


def _loss_data(case):
    rng = np.random.default_rng(case.input_seed + 5)
    shape = (B, 3, 8, 8)
    return dict(img=rng.random(shape).astype(np.float32),
                times=rng.integers(0, case.kwargs['timesteps'], size=(B,)).astype(np.int64),
                noise=rng.standard_normal(shape).astype(np.float32))


def _torch_loss(td, d, case):
    mask = _mask(case.call)
    if 'cond_drop' in case.call:
        td.model.cond_drop_prob = case.call['cond_drop']   # no keep mask drawn at all
    return td(_t(d['img']), times=_t(d['times']), classes=_t(CLASSES), noise=_t(d['noise'].copy()),
              cond_keep_mask=_t(mask), loss_reduction=case.call.get('reduction', 'mean'))


def _ms_loss_fn(md, case):
    mask = _mask(case.call)
    reduction = case.call.get('reduction', 'mean')
    if 'cond_drop' in case.call:
        md.model.cond_drop_prob = case.call['cond_drop']

    def loss(img, times, classes, noise, *m):
        return md(img, times, m[0] if m else None, reduction, classes = classes, noise = noise)
    extra = [ms.Tensor(mask)] if mask is not None else []
    return loss, extra


@pytest.mark.parametrize('case,mode', with_modes(rows_cfg('loss')))
def test_loss(case, mode, pairs, record):
    import torch
    td, md = pairs(case)
    d = _loss_data(case)
    with torch.no_grad():
        expected = _torch_loss(td, d, case).numpy()
    fn, extra = _ms_loss_fn(md, case)
    args = [ms.Tensor(d['img']), ms.Tensor(d['times']), ms.Tensor(CLASSES), ms.Tensor(d['noise'])] + extra
    actual = (ms.jit(fn) if mode == 'graph' else fn)(*args).asnumpy()
    record(assert_parity(f'{case.id} [{mode}]', expected, actual, case.kind))


@pytest.mark.parametrize('case,mode', with_modes(rows_cfg('grad')))
def test_gradients_every_parameter(case, mode, pairs, record):
    """The loss's gradient for every parameter (classes_emb and null_classes_emb too), through the
    accuracy gate: MindSpore no farther from the reference's float64 gradient than its own float32
    one, up to ACCURACY's factor (parity.compare.assert_gradients)."""
    td, md = pairs(case)
    d = _loss_data(case)
    loss_of = lambda t, cast: _torch_loss(t, cast(d), case)
    _, t64 = reference_grads(td, loss_of, float64=True)
    t_loss, t_grads = reference_grads(td, loss_of)
    fn, extra = _ms_loss_fn(md, case)
    weights = md.trainable_params()
    names = [p.name for p in weights]
    grad_fn = ms.value_and_grad(fn, None, weights)
    if mode == 'graph':
        grad_fn = ms.jit(grad_fn)
    m_loss, m_grads = grad_fn(ms.Tensor(d['img']), ms.Tensor(d['times']), ms.Tensor(CLASSES), ms.Tensor(d['noise']), *extra)
    assert {'model.classes_emb.weight', 'model.null_classes_emb'} <= set(names)
    record(assert_parity(f'{case.id} loss [{mode}]', t_loss, m_loss.asnumpy(), 'loss'))
    assert_gradients(f'{case.id} [{mode}]', t_grads, dict(zip(names, (g.asnumpy() for g in m_grads))), t64,
                     record=record)


def _draws(case, count, shape=(B, 3, 8, 8)):
    return np.random.default_rng(case.input_seed + 9).standard_normal((count,) + shape).astype(np.float32)


@pytest.mark.parametrize('case,mode', with_modes(rows_cfg('ddpm_loop') + rows_cfg('ddim_loop')))
def test_sampling_loop(case, mode, pairs, record):
    import torch
    td, md = pairs(case)
    md.jit_sampling = mode == 'graph'
    kw = case.kwargs
    steps = kw.get('sampling_timesteps') or kw['timesteps']
    draws = _draws(case, steps)
    with torch.no_grad(), injected_draws(randn=list(draws)):
        expected = td.sample(_t(CLASSES), **case.call).numpy()
    actual = md.sample(ms.Tensor(CLASSES), noise=draws, **case.call).asnumpy()
    record(assert_parity(f'{case.id} {steps}-step sample [{mode}]', expected, actual, case.kind))


@pytest.mark.parametrize('case,mode', with_modes(rows_cfg('interpolate')))
def test_interpolate(case, mode, pairs, record):
    import torch
    td, md = pairs(case)
    md.jit_sampling = mode == 'graph'
    t, lam = case.call['t'], case.call['lam']
    rng = np.random.default_rng(case.input_seed + 3)
    x1, x2 = (rng.random((1, 3, 8, 8)).astype(np.float32) * 2 - 1 for _ in range(2))
    draws = _draws(case, 2 + t - 1, (1, 3, 8, 8))
    with torch.no_grad(), injected_draws(randn=list(draws)):
        expected = td.interpolate(_t(x1), _t(x2), _t(CLASSES[:1]), t=t, lam=lam).numpy()
    actual = md.interpolate(ms.Tensor(x1), ms.Tensor(x2), ms.Tensor(CLASSES[:1]), t=t, lam=lam, noise=draws).asnumpy()
    record(assert_parity(f'{case.id} [{mode}]', expected, actual, case.kind))
