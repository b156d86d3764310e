"""GaussianDiffusion: schedules, q_sample, losses, sampling steps and loops, interpolate,
against the reference with identical weights and identical random draws.  One generic test
per ``check`` of ``parity.cases``; the behaviours at the end are not parity rows."""

import numpy as np
import pytest
import mindspore as ms

from parity.cases import B, DIFF_UNET, DIFF_UNET_SC, SMALL, ids, image_shape, rows, with_modes
from parity.compare import assert_parity
from parity.harness import (build, build_diffusion_pair, build_pair, call_ms, draws_of, loss_inputs, ms_loss_fn,
                            torch_loss)
from reference.draws import injected_draws

from ms_ddpm.denoising_diffusion_pytorch import DIFFUSION_BUFFERS as BUFFERS   # checked against torch's named_buffers below


@pytest.mark.parametrize('case', rows('schedule'), ids=ids(rows('schedule')))
def test_schedule_buffers(case, record):
    """All 13 buffers, computed by each framework's own GaussianDiffusion (not copied)."""
    t, m = build_pair(case, load=False)
    tb = dict(t.named_buffers())
    assert set(tb) == set(BUFFERS)
    ms_params = dict(m.parameters_and_names())
    for name in BUFFERS:
        assert ms_params[name].dtype == ms.float32 and not ms_params[name].requires_grad
        record(assert_parity(f'buffer {name} {case.id}', tb[name], ms_params[name], case.kind))
    assert m.num_timesteps == t.num_timesteps and m.is_ddim_sampling == t.is_ddim_sampling


@pytest.mark.parametrize('case', rows('names'), ids=ids(rows('names')))
def test_state_dict_names_and_shapes(case):
    t, m = build('torch', case), build('ms', case)
    ts = {k: tuple(v.shape) for k, v in t.state_dict().items()}
    ms_ = {n: tuple(p.shape) for n, p in m.parameters_and_names()}
    assert ts == ms_
    assert all(p.name == n for n, p in m.parameters_and_names())
    trainable = {n for n, p in m.parameters_and_names() if p.requires_grad}
    assert trainable == {k for k, _ in t.named_parameters()}


@pytest.mark.parametrize('case,mode', with_modes(rows('loss')))
def test_loss(case, mode, record):
    reduction = case.call.get('reduction', 'mean')
    td, md = build_pair(case)
    d = loss_inputs(case.kwargs, case.draws, seed=case.input_seed)
    expected = torch_loss(td, d, reduction).detach().numpy()
    fn, args = ms_loss_fn(md, d, reduction)
    if case.kwargs.get('immiscible') and mode == 'graph':
        # the assignment is a host computation (scipy), as in the reference: a clear error in
        # GRAPH mode, and the documented way around it gives the reference's loss
        with pytest.raises(RuntimeError, match='immiscible=True needs a host-side linear sum assignment'):
            call_ms(fn, args, mode)
        assign = md.noise_assignment(ms.Tensor(d['img'] * 2 - 1), ms.Tensor(d['noise']))
        d = dict(d, noise=d['noise'][assign.asnumpy()])
        md.immiscible = False
        fn, args = ms_loss_fn(md, d, reduction)
    record(assert_parity(f'loss {case.id} [{mode}]', expected, call_ms(fn, args, mode).asnumpy(), case.kind))


@pytest.mark.parametrize('case,mode', with_modes(rows('q_sample')))
def test_q_sample(case, mode, record):
    import torch
    td, md = build_pair(case)
    d = loss_inputs(case.kwargs, case.draws, seed=case.input_seed)
    expected = td.q_sample(torch.from_numpy(d['img']), torch.from_numpy(d['times']), torch.from_numpy(d['noise'])).numpy()

    def q_sample(x, t, n):
        return md.q_sample(x, t, n)
    actual = call_ms(q_sample, [d['img'], d['times'], d['noise']], mode).asnumpy()
    record(assert_parity(f'q_sample [{mode}]', expected, actual, case.kind))


@pytest.mark.parametrize('case,mode', with_modes(rows('p_sample')))
def test_p_sample_one_step(case, mode, record):
    import torch
    objective = case.kwargs['objective']
    td, md = build_pair(case)
    md.jit_sampling = mode == 'graph'
    x, noise = draws_of(case, 2)
    for t in case.call['t']:   # t = 0 draws no noise
        with injected_draws(randn=[noise] if t > 0 else []):
            ti, ts = td.p_sample(torch.from_numpy(x), t)
        mi, ms_ = md.p_sample(ms.Tensor(x), t, noise=ms.Tensor(noise) if t > 0 else None)
        record(assert_parity(f'p_sample img t={t} {objective} [{mode}]', ti.numpy(), mi.asnumpy(), case.kind))
        record(assert_parity(f'p_sample x_start t={t} {objective} [{mode}]', ts.numpy(), ms_.asnumpy(), case.kind))


@pytest.mark.parametrize('case,mode', with_modes(rows('ddim_step')))
def test_ddim_one_step(case, mode, record):
    """The first DDIM step (a real step with noise) of a 2-step DDIM loop."""
    kw = case.kwargs
    td, md = build_pair(case)
    md.jit_sampling = mode == 'graph'
    steps = kw['sampling_timesteps']
    draws = draws_of(case, steps)
    with injected_draws(randn=list(draws)):
        t_all = td.sample(batch_size=B, return_all_timesteps=True).numpy()
    m_all = md.sample(batch_size=B, return_all_timesteps=True, noise=draws).asnumpy()
    assert t_all.shape == m_all.shape == (B, steps + 1) + image_shape(kw)[1:]
    record(assert_parity(f'ddim step eta={kw["ddim_sampling_eta"]} [{mode}]', t_all[:, 1], m_all[:, 1], case.kind))


def test_ddim_time_pairs_match_reference():
    """DDIM times come from a float32 linspace truncated to int: must match exactly."""
    import torch
    import ms_ddpm
    for T, S in [(1000, 50), (1000, 250), (1000, 999), (100, 20), (37, 7), (1000, 333), (4000, 1234)]:
        expected = list(reversed(torch.linspace(-1, T - 1, steps=S + 1).int().tolist()))
        m = ms_ddpm.GaussianDiffusion(ms_ddpm.Unet(**SMALL), image_size=16, timesteps=T, sampling_timesteps=S)
        got = [p[0] for p in m.ddim_time_pairs()] + [m.ddim_time_pairs()[-1][1]]
        assert got == expected, (T, S)


@pytest.mark.parametrize('case,mode', with_modes(rows('ddim_loop')))
def test_ddim_loop_10_steps(case, mode, record):
    kw = case.kwargs
    td, md = build_pair(case)
    md.jit_sampling = mode == 'graph'
    steps = kw['sampling_timesteps']
    draws = draws_of(case, steps)
    with injected_draws(randn=list(draws)):
        expected = td.sample(batch_size=B).numpy()
    actual = md.sample(batch_size=B, noise=draws).asnumpy()
    record(assert_parity(f'ddim {steps}-step sample {kw["objective"]} eta={kw["ddim_sampling_eta"]} [{mode}]',
                         expected, actual, case.kind))


@pytest.mark.parametrize('case,mode', with_modes(rows('ddpm_loop')))
def test_ddpm_full_loop_1000_steps(case, mode, record):
    """The full 1000-step DDPM loop on a one-stage U-Net (parity.cases LOOP_UNET), compiled steps, shared noise."""
    kw = case.kwargs
    td, md = build_pair(case)
    md.jit_sampling = mode == 'graph'
    steps = kw['timesteps']
    draws = draws_of(case, steps)
    with injected_draws(randn=list(draws)):
        expected = td.sample(batch_size=B, return_all_timesteps=True).numpy()
    actual = md.sample(batch_size=B, return_all_timesteps=True, noise=draws).asnumpy()
    assert actual.shape == expected.shape == (B, steps + 1) + image_shape(kw)[1:]
    record(assert_parity(f'ddpm {steps}-step sample [{mode}]', expected[:, -1], actual[:, -1], case.kind))
    record(assert_parity(f'ddpm {steps}-step trajectory [{mode}]', expected, actual, case.kind))


@pytest.mark.parametrize('case,mode', with_modes(rows('interpolate')))
def test_interpolate(case, mode, record):
    import torch
    td, md = build_pair(case)
    md.jit_sampling = mode == 'graph'
    t, lam = case.call['t'], case.call['lam']
    rng = np.random.default_rng(case.input_seed)
    x1, x2 = (rng.standard_normal(image_shape(case.kwargs)).astype(np.float32) for _ in range(2))
    draws = rng.standard_normal((2 + t - 1,) + x1.shape).astype(np.float32)
    with injected_draws(randn=list(draws)):
        expected = td.interpolate(torch.from_numpy(x1), torch.from_numpy(x2), t=t, lam=lam).numpy()
    actual = md.interpolate(ms.Tensor(x1), ms.Tensor(x2), t=t, lam=lam, noise=draws).asnumpy()
    record(assert_parity(f'interpolate t={t} [{mode}]', expected, actual, case.kind))


# --- bad arguments: the same errors as the reference ----------------------------------------

@pytest.mark.parametrize('case', rows('bad_args'), ids=ids(rows('bad_args')))
def test_bad_arguments_same_errors(case):
    exc, match = case.raises[:2]
    with pytest.raises(exc, match=match):
        build('torch', case)
    with pytest.raises(exc, match=match):
        build('ms', case)


def test_wrong_image_size_in_forward():
    import torch
    td, md = build_diffusion_pair(SMALL, dict(image_size=16, timesteps=10))
    x = np.zeros((1, 3, 8, 16), np.float32)
    with pytest.raises(AssertionError, match=r'height and width of image must be \(16, 16\)'):
        td(torch.from_numpy(x))
    with pytest.raises(AssertionError, match=r'height and width of image must be \(16, 16\)'):
        md(ms.Tensor(x))


def test_noise_of_wrong_shape_is_named():
    _, md = build_diffusion_pair(SMALL, dict(image_size=16, timesteps=10))
    with pytest.raises(ValueError, match=r'noise must have shape \(10, 1, 3, 16, 16\)'):
        md.sample(batch_size=1, noise=np.zeros((9, 1, 3, 16, 16), np.float32))


def test_default_draws_come_from_mindspore_rng():
    """Without injected draws the MindSpore side samples its own randomness (seeded)."""
    _, md = build_diffusion_pair(SMALL, dict(image_size=16, timesteps=20, sampling_timesteps=4))
    ms.set_seed(3)
    a = md.sample(batch_size=1).asnumpy()
    ms.set_seed(3)
    b = md.sample(batch_size=1).asnumpy()
    c = md.sample(batch_size=1).asnumpy()
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    loss = md(ms.Tensor(np.random.default_rng(0).random((2, 3, 16, 16)).astype(np.float32)))
    assert np.isfinite(loss.asnumpy())


@pytest.mark.parametrize('sampler', ['ddpm', 'ddim'])
def test_fresh_draws_in_chunks_are_the_draws_in_order(sampler, monkeypatch):
    """Fresh draws are made in chunks (one host op per chunk, not per step; see
    ``GaussianDiffusion._draws``).  With chunks of 3 draws over a loop of several chunks, the
    sample equals the one made from the same draws passed explicitly, in order: no draw is
    skipped, reused or reordered at a chunk boundary, and the unused tail of the last chunk
    is never taken."""
    kw = dict(image_size=8, timesteps=10) if sampler == 'ddpm' else dict(image_size=8, timesteps=20, sampling_timesteps=7)
    count = 10 if sampler == 'ddpm' else 7
    _, md = build_diffusion_pair(SMALL, kw)
    shape = (1, 3, 8, 8)
    monkeypatch.setattr(type(md), 'DRAW_CHUNK_VALUES', 3 * int(np.prod(shape)))
    ms.set_seed(5)
    fresh = md.sample(batch_size=1).asnumpy()
    ms.set_seed(5)
    chunks = [ms.ops.randn((3, *shape), dtype=ms.float32).asnumpy() for _ in range(-(-count // 3))]
    given = md.sample(batch_size=1, noise=np.concatenate(chunks)[:count]).asnumpy()
    assert np.array_equal(fresh, given)


def test_global_graph_mode_loss_and_sampling(record):
    """With ``ms.set_context(mode=GRAPH_MODE)`` (not only ms.jit): the loss (coin drawn inside
    the graph when not given) and a DDPM loop compile and match the reference."""
    kw = dict(image_size=8, timesteps=10)
    td, md = build_diffusion_pair(DIFF_UNET_SC, kw)
    d = loss_inputs(kw, {'coin': 0.1}, seed=21)
    draws = np.random.default_rng(22).standard_normal((10, 1, 3, 8, 8)).astype(np.float32)
    expected_loss = torch_loss(td, d, 'mean').detach().numpy()
    with injected_draws(randn=list(draws)):
        expected_img = td.sample(batch_size=1).numpy()
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        loss = md(ms.Tensor(d['img']), ms.Tensor(d['times']), 'mean', ms.Tensor(d['noise']), None, None, 0.1)
        img = md.sample(batch_size=1, noise=draws)
        free = md(ms.Tensor(d['img']))   # times, noise and coin drawn by MindSpore inside the graph
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    record(assert_parity('loss [global GRAPH_MODE]', expected_loss, loss.asnumpy(), 'loss'))
    record(assert_parity('ddpm 10-step sample [global GRAPH_MODE]', expected_img, img.asnumpy(), 'sample'))
    assert np.isfinite(free.asnumpy())
