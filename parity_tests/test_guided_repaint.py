"""Parity of classifier guidance (``guided_diffusion``) and RePaint (``repaint``): the Unets over
a small option grid, the losses with injected draws, the gradient of every parameter, the
example classifier's input gradient (``ms.grad`` vs torch autograd), guided DDPM / DDIM
sampling with the classifier and the whole RePaint schedule on a masked image with every
draw shared.  Rows: ``parity.cases_guided``; one generic test per check."""

import numpy as np
import pytest
import mindspore as ms

from parity.cases import B, with_modes
from parity.cases_guided import example_classifiers, example_mask, rows_guided, SHAPE
from parity.compare import assert_gradients, assert_parity
from parity.harness import case_inputs, reference_grads, run_ms, run_torch
from reference.draws import injected_draws

Y = np.array([1, 3], dtype=np.int64)


def _t(a):
    import torch
    return None if a is None else torch.from_numpy(np.asarray(a))


@pytest.fixture(scope='module')
def classifiers():
    """(torch classifier_cond_fn, its Classifier, MindSpore classifier_cond_fn, its Classifier)
    on the same weights: the reference's example code, 8x8 images, 5 classes."""
    return example_classifiers(8, 5, seed=7)


@pytest.mark.parametrize('case,mode', with_modes(rows_guided('forward')))
def test_unet_forward(case, mode, pairs, record):
    tm, mm = pairs(case)
    inputs = case_inputs(case)
    record(assert_parity(f'{case.id} [{mode}]', run_torch(tm, inputs), run_ms(mm, inputs, mode), case.kind))


def _loss_data(case):
    rng = np.random.default_rng(case.input_seed + 5)
    d = dict(img=rng.random(SHAPE).astype(np.float32),
             t=rng.integers(0, case.kwargs['timesteps'], size=(B,)).astype(np.int64),
             noise=rng.standard_normal(SHAPE).astype(np.float32))
    if case.draws.get('offset'):
        d['offset_noise'] = rng.standard_normal(SHAPE[:2]).astype(np.float32)
    return d


def _torch_loss(td, d, case, monkeypatch):
    coin = case.draws.get('coin')
    coins = [coin] if coin is not None and td.self_condition else []
    randn = [d['offset_noise']] if 'offset_noise' in d else []
    with injected_draws(randn=randn, randint=[d['t']], coins=coins):
        return td(_t(d['img']), noise=_t(d['noise'].copy()), loss_reduction=case.call.get('reduction', 'mean'))


def _ms_loss_fn(md, d, case):
    reduction = case.call.get('reduction', 'mean')
    coin = case.draws.get('coin')
    if case.module == 'guided_diffusion':
        def loss(img, t, noise):
            return md(img, reduction, noise, coin, t)
        return loss, [d['img'], d['t'], d['noise']]

    offset = 'offset_noise' in d

    def loss(img, t, noise, *rest):
        return md(img, reduction, noise, None, rest[0] if offset else None, coin, t)
    return loss, [d['img'], d['t'], d['noise']] + ([d['offset_noise']] if offset else [])


@pytest.mark.parametrize('case,mode', with_modes(rows_guided('loss')))
def test_loss(case, mode, pairs, record, monkeypatch):
    import torch
    td, md = pairs(case)
    d = _loss_data(case)
    with torch.no_grad():
        expected = _torch_loss(td, d, case, monkeypatch).numpy()
    fn, args = _ms_loss_fn(md, d, case)
    args = [ms.Tensor(a) for a in args]
    actual = (ms.jit(fn) if mode == 'graph' else fn)(*args).asnumpy()
    record(assert_parity(f'{case.id} [{mode}]', expected, actual, case.kind))


@pytest.mark.parametrize('case,mode', with_modes(rows_guided('grad')))
def test_gradients_every_parameter(case, mode, pairs, record, monkeypatch):
    td, md = pairs(case)
    d = _loss_data(case)
    loss_of = lambda t, cast: _torch_loss(t, cast(d), case, monkeypatch)
    _, t64 = reference_grads(td, loss_of, float64=True)   # the accuracy gate's yardstick
    t_loss, t_grads = reference_grads(td, loss_of)
    fn, args = _ms_loss_fn(md, d, case)
    weights = md.trainable_params()
    names = [p.name for p in weights]
    grad_fn = ms.value_and_grad(fn, None, weights)
    if mode == 'graph':
        grad_fn = ms.jit(grad_fn)
    m_loss, m_grads = grad_fn(*[ms.Tensor(a) for a in args])
    record(assert_parity(f'{case.id} loss [{mode}]', t_loss, m_loss.asnumpy(), 'loss'))
    # every tensor through the accuracy gate (an RMSNorm gain's gradient, one sum over a whole
    # (b, h, w) map, measured 6.3e-6 from torch: judged against the float64 gradient)
    assert_gradients(f'{case.id} [{mode}]', t_grads, dict(zip(names, (g.asnumpy() for g in m_grads))), t64,
                     kind=case.kind, record=record)


@pytest.mark.parametrize('case,mode', with_modes(rows_guided('classifier')))
def test_classifier_cond_fn(case, mode, classifiers, record):
    t_cond_fn, tc, m_cond_fn, mc = classifiers
    scale = case.call['classifier_scale']
    rng = np.random.default_rng(case.input_seed + 11)
    x = rng.standard_normal(SHAPE).astype(np.float32)
    t = rng.integers(0, 10, size=(B,)).astype(np.int64)
    expected = t_cond_fn(_t(x), _t(t), tc, _t(Y), classifier_scale=scale).numpy()

    def grad(x, t, y):
        return m_cond_fn(x, t, mc, y, classifier_scale=scale)
    actual = (ms.jit(grad) if mode == 'graph' else grad)(ms.Tensor(x), ms.Tensor(t), ms.Tensor(Y)).asnumpy()
    assert np.abs(expected).max() > 0
    record(assert_parity(f'{case.id} d log p(y|x) / dx [{mode}]', expected, actual, case.kind))


def _draws(case, count, shape=SHAPE):
    return np.random.default_rng(case.input_seed + 9).standard_normal((count,) + shape).astype(np.float32)


@pytest.mark.parametrize('case,mode', with_modes(rows_guided('guided_loop')))
def test_guided_sampling_loop(case, mode, pairs, classifiers, record):
    import torch
    t_cond_fn, tc, m_cond_fn, mc = classifiers
    td, md = pairs(case)
    md.jit_sampling = mode == 'graph'
    kw = case.kwargs
    steps = kw.get('sampling_timesteps') or kw['timesteps']
    draws = _draws(case, steps)
    scale = case.call['classifier_scale']
    with torch.no_grad(), injected_draws(randn=list(draws)):
        expected = td.sample(batch_size=B, cond_fn=t_cond_fn,
                             guidance_kwargs=dict(classifier=tc, y=_t(Y), classifier_scale=scale)).numpy()
    actual = md.sample(batch_size=B, cond_fn=m_cond_fn, noise=draws,
                       guidance_kwargs=dict(classifier=mc, y=ms.Tensor(Y), classifier_scale=scale)).asnumpy()
    record(assert_parity(f'{case.id} {steps}-step guided sample [{mode}]', expected, actual, case.kind))


@pytest.mark.parametrize('case,mode', with_modes(rows_guided('repaint')))
def test_repaint_schedule(case, mode, pairs, record):
    import torch
    from ms_ddpm.repaint import repaint_draw_count
    td, md = pairs(case)
    md.jit_sampling = mode == 'graph'
    call = dict(case.call)
    mask = example_mask(call.pop('mask'), case.input_seed + 2)
    gt = np.random.default_rng(case.input_seed + 4).random(SHAPE).astype(np.float32)
    count = repaint_draw_count(case.kwargs['timesteps'], mask is not None, True, **call)
    draws = _draws(case, count)
    kw = dict(call, batch_size=B) if mask is None else dict(call, gt=gt, mask=mask)
    with torch.no_grad(), injected_draws(randn=list(draws)):
        expected = td.sample(**{k: (_t(v) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}).numpy()
    actual = md.sample(noise=draws, **{k: (ms.Tensor(v) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}).asnumpy()
    record(assert_parity(f'{case.id} {count} draws [{mode}]', expected, actual, case.kind))


def test_sample_inpaint_command(tmp_path, capsys):
    """``ms-ddpm sample CHECKPOINT --inpaint IMAGE --mask MASK``: RePaint on a reference
    GaussianDiffusion's weights (3 timesteps), the picture masked input | output (a row per sample); a mask whose shape
    does not match is named in one line with exit 1."""
    import torch
    import denoising_diffusion_pytorch as ddp
    from PIL import Image
    from ms_ddpm_tools.train import main_sample
    torch.manual_seed(0)
    unet = ddp.Unet(dim=8, dim_mults=(1, 2), attn_dim_head=8, attn_heads=2)
    torch.save(ddp.GaussianDiffusion(unet, image_size=8, timesteps=3).state_dict(), tmp_path / 'unet.pt')
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8)).save(tmp_path / 'img.png')
    mask = np.zeros((8, 8), np.uint8)
    mask[:, :4] = 255
    Image.fromarray(mask).save(tmp_path / 'mask.png')
    Image.fromarray(np.zeros((8, 6), np.uint8)).save(tmp_path / 'bad_mask.png')
    out = tmp_path / 'inpaint.png'
    base = [str(tmp_path / 'unet.pt'), '--out', str(out), '--config', '{"image_size": 8}',
            '--inpaint', str(tmp_path / 'img.png'), '--quiet', '--num', '2']
    assert main_sample(base + ['--mask', str(tmp_path / 'mask.png'), '--resample-iter', '1', '--resample-jump', '1',
                               '--resample-every', '2']) == 0
    with Image.open(out) as im:
        assert im.size == (2 * 8 + 3 * 2, 2 * 8 + 3 * 2)       # 2 rows of masked input | output
        grid = np.asarray(im.convert('RGB'))
    known = np.asarray(Image.open(tmp_path / 'img.png'))[:, :4]
    np.testing.assert_array_equal(grid[2:10, 12:16], known)        # the output keeps the known pixels
    capsys.readouterr()
    assert main_sample(base + ['--mask', str(tmp_path / 'bad_mask.png')]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'bad_mask.png' in err[0] and 'must match' in err[0], err
    assert main_sample(base) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and '--mask' in err[0], err
