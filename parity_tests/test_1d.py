"""The 1D family (``denoising_diffusion_pytorch_1d``) against the reference: every building
block and Unet1D over a grid of options, GaussianDiffusion1D's schedules, losses, gradients,
single steps and sampling loops with identical weights and identical random draws, PyNative
and GRAPH.  The rows are ``parity.cases_1d.ROWS_1D``."""

import numpy as np
import pytest
import mindspore as ms

from parity.cases import with_modes, ids
from parity.cases_1d import B, D1, N as N_SEQ, rows_1d, seq_shape
from parity.compare import assert_gradients, assert_parity
from parity.harness import build, build_pair, make_inputs, case_inputs, run_torch, run_ms, call_ms, reference_grads, resolve
from reference.draws import injected_draws


def _pair(case):
    """(torch, MindSpore) of a row; a wrapper row (PreNorm, Residual) wraps its ``fn`` built
    in each framework.  The MindSpore twin carries the reference's weights."""
    fn = case.call.get('fn')
    if not fn:
        return build_pair(case)
    import torch
    from weight_convert import load_torch_state_dict
    from ms_ddpm.ms_compat import name_parameters_by_path
    cls, args, kwargs = fn
    torch.manual_seed(case.seed)
    t = resolve('torch', D1, case.cls)(*case.args, resolve('torch', D1, cls)(*args, **kwargs)).eval()
    m = name_parameters_by_path(resolve('ms', D1, case.cls)(*case.args, resolve('ms', D1, cls)(*args, **kwargs)))
    m.set_train(False)
    load_torch_state_dict(m, t.state_dict())
    return t, m


def _net_channels(case):
    return (case.net_kwargs or {}).get('channels', 3)


# --- building blocks and Unet1D -------------------------------------------------------------

@pytest.mark.parametrize('case,mode', with_modes(rows_1d('forward')))
def test_forward(case, mode, record):
    t, m = _pair(case)
    inputs = case_inputs(case)
    record(assert_parity(f'{case.id} [{mode}]', run_torch(t, inputs), run_ms(m, inputs, mode), case.kind))


@pytest.mark.parametrize('case', rows_1d('forward', kind='unet'), ids=ids(rows_1d('forward', kind='unet')))
def test_unet1d_parameter_names_shapes_trainable(case):
    """Names, shapes (torch's (out, in, k) conv weights) and trainable flags equal."""
    t, m = build('torch', case), build('ms', case)
    torch_shapes = {k: tuple(v.shape) for k, v in t.state_dict().items()}
    ms_shapes = {n: tuple(p.shape) for n, p in m.parameters_and_names()}
    assert set(ms_shapes) == set(torch_shapes), (
        f'only in torch: {sorted(set(torch_shapes) - set(ms_shapes))}; only in MindSpore: {sorted(set(ms_shapes) - set(torch_shapes))}')
    assert ms_shapes == torch_shapes
    assert list(ms_shapes) == list(torch_shapes)          # same order as the state dict
    assert all(p.name == n for n, p in m.parameters_and_names())
    assert {k for k, p in t.named_parameters() if p.requires_grad} == {n for n, p in m.parameters_and_names() if p.requires_grad}


@pytest.mark.parametrize('case', rows_1d('init'), ids=ids(rows_1d('init')))
def test_fresh_init_matches_pytorch_distribution(case):
    """A fresh Unet1D initialises like PyTorch: conv/linear weights and biases uniform in
    +-1/sqrt(fan_in) (fan_in = in * k for Conv1d), RMSNorm gains 1, Fourier weights N(0, 1)."""
    t = {k: v.numpy() for k, v in build('torch', case).state_dict().items()}
    m = {n: p.asnumpy() for n, p in build('ms', case).parameters_and_names()}
    normal = []
    for k, tv in t.items():
        mv = m[k]
        assert mv.shape == tv.shape, k
        if k.endswith('.g'):
            assert (mv == 1).all(), k
        elif k.endswith('time_mlp.0.weights'):
            normal.append(mv.ravel())
        else:
            w = t[k[:-len('bias')] + 'weight'] if k.endswith('bias') else tv
            bound = 1 / np.sqrt(np.prod(w.shape[1:]))
            assert np.abs(mv).max() <= bound * (1 + 1e-6), f'{k}: exceeds +-1/sqrt(fan_in) = {bound:.4f}'
            if mv.size >= 2000:   # uniform(-b, b): std b/sqrt(3)
                assert abs(mv.std() / (bound / np.sqrt(3)) - 1) < 0.1, f'{k}: std {mv.std():.4f}'
                assert abs(tv.std() / (bound / np.sqrt(3)) - 1) < 0.1, f'{k}: torch std {tv.std():.4f}'
            if mv.size >= 200:    # not a constant: spread over most of the range
                assert np.abs(mv).max() > 0.8 * bound, k
    assert len(normal) == 1 and normal[0].size == 8


def test_exports_match_the_reference():
    import denoising_diffusion_pytorch as ddp
    import ms_ddpm
    for name in ('Unet1D', 'GaussianDiffusion1D', 'Dataset1D'):
        assert getattr(ddp, name).__module__.endswith(D1)
        assert getattr(ms_ddpm, name).__module__ == f'ms_ddpm.{D1}'


def test_conv1d_weights_are_torch_shaped():
    """ms_compat.Conv1d: (out, in, k) weight and (out,) bias like torch.nn.Conv1d (MindSpore's
    nn.Conv1d would be (out, in, 1, k)); stride and padding as torch."""
    import torch
    from ms_ddpm.ms_compat import Conv1d
    from weight_convert import load_torch_state_dict
    x = make_inputs([('randn', (2, 5, 13))])[0]
    for args, kw in [((5, 7, 3), dict(padding=1)), ((5, 4, 4, 2, 1), {}), ((5, 6, 1), dict(bias=False)), ((5, 3, 7), dict(padding=3))]:
        torch.manual_seed(0)
        t = torch.nn.Conv1d(*args, **kw)
        m = Conv1d(*args, **kw)
        assert {n: tuple(p.shape) for n, p in m.parameters_and_names()} == {k: tuple(v.shape) for k, v in t.state_dict().items()}
        load_torch_state_dict(m, t.state_dict())
        assert_parity(f'Conv1d{args}{kw}', run_torch(t, [x]), run_ms(m, [x], 'pynative'), 'layer')


# --- GaussianDiffusion1D: buffers, names, errors --------------------------------------------

BUFFERS = ('betas', 'alphas_cumprod', 'alphas_cumprod_prev', 'sqrt_alphas_cumprod', 'sqrt_one_minus_alphas_cumprod',
           'log_one_minus_alphas_cumprod', 'sqrt_recip_alphas_cumprod', 'sqrt_recipm1_alphas_cumprod', 'posterior_variance',
           'posterior_log_variance_clipped', 'posterior_mean_coef1', 'posterior_mean_coef2', 'loss_weight')


@pytest.mark.parametrize('case', rows_1d('schedule'), ids=ids(rows_1d('schedule')))
def test_schedule_buffers(case, record):
    """All 13 buffers, computed by each framework's own GaussianDiffusion1D (not copied)."""
    from ms_ddpm.denoising_diffusion_pytorch_1d import DIFFUSION_BUFFERS
    t, m = build('torch', case), build('ms', case)
    tb = dict(t.named_buffers())
    assert tuple(tb) == BUFFERS == DIFFUSION_BUFFERS
    params = dict(m.parameters_and_names())
    for name in BUFFERS:
        assert params[name].dtype == ms.float32 and not params[name].requires_grad
        record(assert_parity(f'{case.id} buffer {name}', tb[name], params[name], 'schedule'))
    assert (m.num_timesteps, m.sampling_timesteps, m.is_ddim_sampling) == (t.num_timesteps, t.sampling_timesteps, t.is_ddim_sampling)


@pytest.mark.parametrize('case', rows_1d('names'), ids=ids(rows_1d('names')))
def test_state_dict_names_and_shapes(case):
    t, m = build('torch', case), build('ms', case)
    assert {k: tuple(v.shape) for k, v in t.state_dict().items()} == {n: tuple(p.shape) for n, p in m.parameters_and_names()}
    assert all(p.name == n for n, p in m.parameters_and_names())
    assert {n for n, p in m.parameters_and_names() if p.requires_grad} == {k for k, _ in t.named_parameters()}
    for attr in ('channels', 'self_condition', 'seq_length', 'seq_index', 'channel_first', 'objective', 'num_timesteps'):
        assert getattr(m, attr) == getattr(t, attr), attr


@pytest.mark.parametrize('case', rows_1d('bad_args'), ids=ids(rows_1d('bad_args')))
def test_bad_arguments_same_errors(case):
    exc, match = case.raises
    with pytest.raises(exc, match=match):
        build('torch', case)
    with pytest.raises(exc, match=match):
        build('ms', case)


def test_wrong_seq_length_in_forward():
    import torch
    case = rows_1d('loss')[0]
    t, m = build_pair(case)
    x = np.zeros((1, 3, 8), np.float32)
    with pytest.raises(AssertionError, match='seq length must be 16'):
        t(torch.from_numpy(x))
    with pytest.raises(AssertionError, match='seq length must be 16'):
        m(ms.Tensor(x))


# --- losses and gradients -------------------------------------------------------------------

def _loss_inputs(case, seed=None):
    rng = np.random.default_rng(case.input_seed if seed is None else seed)
    shape = seq_shape(case.kwargs, _net_channels(case))
    d = dict(img=rng.random(shape).astype(np.float32),
             times=rng.integers(0, case.kwargs['timesteps'], size=(shape[0],)).astype(np.int64),
             noise=rng.standard_normal(shape).astype(np.float32))
    if case.draws.get('coin') is not None:
        d['coin'] = case.draws['coin']
    return d


def _torch_loss(td, case, d):
    import torch
    with injected_draws(coins=[d['coin']] if 'coin' in d else []):
        return td(torch.from_numpy(d['img']), times=torch.from_numpy(d['times']), noise=torch.from_numpy(d['noise'].copy()),
                  loss_reduction=case.call.get('reduction', 'mean'), return_reduced_loss=case.call.get('reduced', True))


def _ms_loss_fn(md, case, d):
    reduction, reduced, coin = case.call.get('reduction', 'mean'), case.call.get('reduced', True), d.get('coin')

    def loss(img, times, noise):
        return md(img, times = times, loss_reduction = reduction, noise = noise, return_reduced_loss = reduced,
                  self_cond_coin = coin)
    return loss, [d['img'], d['times'], d['noise']]


@pytest.mark.parametrize('case,mode', with_modes(rows_1d('loss')))
def test_loss(case, mode, record):
    td, md = build_pair(case)
    d = _loss_inputs(case)
    expected = _torch_loss(td, case, d).detach().numpy()
    fn, args = _ms_loss_fn(md, case, d)
    record(assert_parity(f'loss {case.id} [{mode}]', expected, call_ms(fn, args, mode).asnumpy(), case.kind))


@pytest.mark.parametrize('case,mode', with_modes(rows_1d('grad')))
def test_gradients_every_parameter(case, mode, record):
    """Each parameter's gradient (kind grad_1d: small tensors of the 1D U-Net have
    ill-conditioned gradients, see parity.tolerances) and all of them together (kind grad)."""
    td, md = build_pair(case)
    d = _loss_inputs(case)
    loss_of = lambda t, cast: _torch_loss(t, case, cast(d))
    _, t64 = reference_grads(td, loss_of, float64=True)   # the accuracy gate's yardstick
    t_loss, t_grads = reference_grads(td, loss_of)

    fn, args = _ms_loss_fn(md, case, d)
    weights = md.trainable_params()
    names = [p.name for p in weights]
    grad_fn = ms.value_and_grad(fn, None, weights)
    if mode == 'graph':
        grad_fn = ms.jit(grad_fn)
    m_loss, m_grads = grad_fn(*[ms.Tensor(a) for a in args])
    assert set(names) == set(t_grads), 'gradient sets differ'
    record(assert_parity(f'grad loss {case.id} [{mode}]', t_loss, m_loss.asnumpy(), 'loss'))
    assert_gradients(f'{case.id} [{mode}]', t_grads, dict(zip(names, (g.asnumpy() for g in m_grads))), t64,
                     record=record)


# --- q_sample, p_sample, loops, interpolate -------------------------------------------------

def _draws(case, count, seed_offset=0):
    shape = seq_shape(case.kwargs, _net_channels(case))
    return np.random.default_rng(case.input_seed + seed_offset).standard_normal((count,) + shape).astype(np.float32)


@pytest.mark.parametrize('case,mode', with_modes(rows_1d('q_sample')))
def test_q_sample(case, mode, record):
    import torch
    td, md = build_pair(case)
    d = _loss_inputs(case)
    expected = td.q_sample(torch.from_numpy(d['img']), torch.from_numpy(d['times']), torch.from_numpy(d['noise'])).numpy()

    def q_sample(x, t, n):
        return md.q_sample(x, t, n)
    record(assert_parity(f'q_sample {case.id} [{mode}]', expected, call_ms(q_sample, [d['img'], d['times'], d['noise']], mode).asnumpy(),
                         'diffusion'))


@pytest.mark.parametrize('case,mode', with_modes(rows_1d('p_sample')))
def test_p_sample_one_step(case, mode, record):
    import torch
    td, md = build_pair(case)
    md.jit_sampling = mode == 'graph'
    x, noise = _draws(case, 2)
    clip = case.call.get('clip_denoised', True)
    for t in case.call['t']:   # t = 0 draws no noise
        with injected_draws(randn=[noise] if t > 0 else []):
            ti, ts = td.p_sample(torch.from_numpy(x), t, None, clip)
        mi, ms_ = md.p_sample(ms.Tensor(x), t, None, clip, noise=ms.Tensor(noise) if t > 0 else None)
        record(assert_parity(f'p_sample img t={t} {case.id} [{mode}]', ti.numpy(), mi.asnumpy(), 'layer'))
        record(assert_parity(f'p_sample x_start t={t} {case.id} [{mode}]', ts.numpy(), ms_.asnumpy(), 'layer'))


@pytest.mark.parametrize('case,mode', with_modes(rows_1d('ddim_loop')))
def test_ddim_loop(case, mode, record):
    kw = case.kwargs
    td, md = build_pair(case)
    md.jit_sampling = mode == 'graph'
    shape = seq_shape(kw, _net_channels(case))
    draws = _draws(case, kw['sampling_timesteps'])
    clip, ret_noise = case.call.get('clip_denoised', True), case.call.get('return_noise', False)
    with injected_draws(randn=list(draws)):
        expected = td.ddim_sample(shape, clip_denoised=clip, return_noise=ret_noise)
    actual = md.ddim_sample(shape, clip_denoised=clip, return_noise=ret_noise, noise=draws)
    if ret_noise:
        (expected, t_noise), (actual, m_noise) = expected, actual
        record(assert_parity(f'ddim return_noise {case.id} [{mode}]', t_noise.numpy(), m_noise.asnumpy(), 'exact'))
    record(assert_parity(f'ddim {kw["sampling_timesteps"]}-step sample {case.id} [{mode}]', expected.numpy(), actual.asnumpy(), 'sample'))


def test_ddim_time_pairs_match_reference():
    """DDIM times come from a float32 linspace truncated to int: must match exactly."""
    import torch
    from ms_ddpm.denoising_diffusion_pytorch_1d import GaussianDiffusion1D, Unet1D
    net = Unet1D(dim=8, dim_mults=(1,))
    for T, S in [(1000, 50), (1000, 999), (100, 20), (37, 7), (1000, 333)]:
        expected = list(reversed(torch.linspace(-1, T - 1, steps=S + 1).int().tolist()))
        pairs = GaussianDiffusion1D(net, seq_length=8, timesteps=T, sampling_timesteps=S).ddim_time_pairs()
        assert [p[0] for p in pairs] + [pairs[-1][1]] == expected, (T, S)


@pytest.mark.parametrize('case,mode', with_modes(rows_1d('ddpm_loop')))
def test_ddpm_loop(case, mode, record):
    """The whole DDPM loop with return_noise, and the trajectory (return_all_timesteps, a
    MindSpore extra) against the reference's own p_sample steps on the same draws."""
    import torch
    kw = case.kwargs
    T = kw['timesteps']
    td, md = build_pair(case)
    md.jit_sampling = mode == 'graph'
    draws = _draws(case, T)
    with injected_draws(randn=list(draws)):
        expected, t_noise = td.sample(batch_size=B, return_noise=True)
    traj, m_noise = md.sample(batch_size=B, return_noise=True, noise=draws, return_all_timesteps=True)
    traj = traj.asnumpy()
    assert traj.shape == (B, T + 1) + draws.shape[2:]
    record(assert_parity(f'ddpm return_noise {case.id} [{mode}]', t_noise.numpy(), m_noise.asnumpy(), 'exact'))
    record(assert_parity(f'ddpm {T}-step sample {case.id} [{mode}]', expected.numpy(), traj[:, -1], 'sample'))
    # the reference's trajectory, step by step with its own p_sample (what its loop does)
    img, x_start, frames = torch.from_numpy(draws[0]), None, [draws[0]]
    for k, t in enumerate(reversed(range(T))):
        with injected_draws(randn=[draws[k + 1]] if t > 0 else []):
            img, x_start = td.p_sample(img, t, x_start if td.self_condition else None)
        frames.append(img.numpy())
    expected_traj = (np.stack(frames, axis=1) + 1) * 0.5
    record(assert_parity(f'ddpm {T}-step trajectory {case.id} [{mode}]', expected_traj, traj, 'sample'))


@pytest.mark.parametrize('case,mode', with_modes(rows_1d('interpolate')))
def test_interpolate(case, mode, record):
    import torch
    td, md = build_pair(case)
    md.jit_sampling = mode == 'graph'
    t, lam = case.call['t'], case.call['lam']
    x1, x2 = _draws(case, 2, seed_offset=1)
    draws = _draws(case, 2 + t - 1)
    with injected_draws(randn=list(draws)):
        expected = td.interpolate(torch.from_numpy(x1), torch.from_numpy(x2), t=t, lam=lam).numpy()
    actual = md.interpolate(ms.Tensor(x1), ms.Tensor(x2), t=t, lam=lam, noise=draws).asnumpy()
    record(assert_parity(f'interpolate {case.id} [{mode}]', expected, actual, 'layer'))


def test_default_draws_come_from_mindspore_rng():
    """Without injected draws the MindSpore side samples its own randomness (seeded)."""
    from ms_ddpm.denoising_diffusion_pytorch_1d import GaussianDiffusion1D, Unet1D
    md = GaussianDiffusion1D(Unet1D(dim=8, dim_mults=(1,), channels=2), seq_length=8, timesteps=4, sampling_timesteps=2)
    md.jit_sampling = False
    ms.set_seed(3)
    a = md.sample(batch_size=1).asnumpy()
    ms.set_seed(3)
    b = md.sample(batch_size=1).asnumpy()
    c = md.sample(batch_size=1).asnumpy()
    assert a.shape == (1, 2, 8) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    assert np.isfinite(md(ms.Tensor(np.random.default_rng(0).random((2, 2, 8)).astype(np.float32))).asnumpy())


# --- Dataset1D and Trainer1D against the reference Trainer1D ---------------------------------

T_UNET = dict(dim=8, dim_mults=(1,), attn_heads=2, attn_dim_head=8, channels=2)   # one stage: the compiled step is half as big
T_DIFF = dict(seq_length=16, timesteps=100, objective='pred_v', beta_schedule='linear')
T_BATCH, T_ACCUM, T_STEPS, T_SEED = 4, 2, 4, 3      # 4 steps of 2 take 8 batches: across an epoch of 6
T_MAX_GRAD_NORM = 0.05     # below the gradient norms measured here (~0.5-3): clipping acts every step


def test_dataset1d_is_the_reference_dataset1d():
    import torch
    import denoising_diffusion_pytorch as ddp
    from ms_ddpm import Dataset1D
    data = np.random.default_rng(0).random((5, 2, 16)).astype(np.float32)
    t, m = ddp.Dataset1D(torch.from_numpy(data)), Dataset1D(data)
    data[:] = 0                          # both copied it
    assert len(t) == len(m) == 5
    for i in range(5):
        np.testing.assert_array_equal(t[i].numpy(), m[i].asnumpy())
    m[1].asnumpy()[:] = 7                # items are copies
    np.testing.assert_array_equal(m[1].asnumpy(), t[1].numpy())
    np.testing.assert_array_equal(Dataset1D(ms.Tensor(t.tensor.numpy()))[4].asnumpy(), t[4].numpy())


@pytest.fixture(scope='module')
def trainer1d_runs(tmp_path_factory):
    """Both Trainer1Ds after T_STEPS steps (accumulation 2, clipping every step) from the same
    weights, on the same batches (the MindSpore Trainer1D's pipeline order) and draws."""
    import torch
    import denoising_diffusion_pytorch as ddp
    from ms_ddpm import Dataset1D, Trainer1D
    from parity.cases import Case
    from parity.training import Recorder, train_ms
    td, md = build_pair(Case('1d/trainer', D1, 'GaussianDiffusion1D', 'adhoc', kwargs=T_DIFF, net_module=D1,
                             net_cls='Unet1D', net_kwargs=T_UNET))
    data = np.random.default_rng(1).random((24, 2, 16)).astype(np.float32)      # 6 batches of 4
    res = tmp_path_factory.mktemp('results1d')
    (res / 'ms').mkdir(), (res / 'ref').mkdir()
    common = dict(train_batch_size=T_BATCH, gradient_accumulate_every=T_ACCUM, max_grad_norm=T_MAX_GRAD_NORM,
                  save_and_sample_every=10 ** 9)
    mt = Trainer1D(md, Dataset1D(data), results_folder=str(res / 'ms'), seed=T_SEED, progress=False, log=lambda *a: None,
                   **common)
    rec = Recorder(mt)
    ms_losses = train_ms(mt, T_STEPS)           # Trainer1D.train()'s loop, one step at a time

    rt = ddp.Trainer1D(td, ddp.Dataset1D(torch.from_numpy(data)), results_folder=str(res / 'ref'), **common)
    ref_losses = []
    td.register_forward_hook(lambda mod, i, o: ref_losses.append(float(o.detach())))
    rt.dl = iter([torch.from_numpy(b) for b in rec.batches])
    rt.train_num_steps = T_STEPS
    with injected_draws(randn=[d['noise'] for d in rec.draws], randint=[d['times'] for d in rec.draws]):
        rt.train()
    return dict(td=td, md=md, mt=mt, rt=rt, rec=rec, ms_losses=ms_losses, ref_losses=ref_losses)


def test_trainer1d_losses_parameters_and_ema(trainer1d_runs, record):
    r = trainer1d_runs
    td, md, mt, rt = r['td'], r['md'], r['mt'], r['rt']
    assert rt.step == mt.step == T_STEPS and len(r['ref_losses']) == T_STEPS * T_ACCUM
    assert len(r['rec'].batches) == T_STEPS * T_ACCUM
    ref_step = np.array(r['ref_losses']).reshape(T_STEPS, T_ACCUM).sum(1) / T_ACCUM
    for i in range(T_STEPS):
        d = assert_parity(f'trainer1d loss step {i + 1}', ref_step[i], r['ms_losses'][i], 'trainer_loss')
    record(d)
    assert not np.allclose(ref_step[0], ref_step[1:])
    assert mt.last_grad_norm > T_MAX_GRAD_NORM              # clipping was active
    t_params = {n: p.detach().numpy() for n, p in td.named_parameters()}
    m_params = dict(md.parameters_and_names())
    worst = None
    for name, tv in t_params.items():
        d = assert_parity(f'trainer1d param after {T_STEPS} steps {name}', tv, m_params[name].asnumpy(), 'trainer')
        worst = d if worst is None or d.rel_fro > worst.rel_fro else worst
    record(worst)
    t_sd, m_sd = rt.ema.state_dict(), mt.ema.state_dict()
    assert list(t_sd) == list(m_sd)
    assert bool(t_sd['initted']) == bool(m_sd['initted']) and int(t_sd['step']) == int(m_sd['step']) == T_STEPS
    flat_t = np.concatenate([t_sd[k].numpy().ravel() for k in t_sd if k.startswith('ema_model.')])
    flat_m = np.concatenate([m_sd[k].ravel() for k in t_sd if k.startswith('ema_model.')])
    record(assert_parity(f'trainer1d EMA weights after {T_STEPS} steps', flat_t, flat_m, 'trainer'))


def test_trainer1d_milestone_save_load(trainer1d_runs, tmp_path):
    """A milestone writes the samples (.npy) and the state (.ckpt); a new Trainer1D resumes
    from it with the same parameters, optimiser step and EMA state."""
    from ms_ddpm import Dataset1D, Trainer1D
    mt = trainer1d_runs['mt']
    path = mt.save('x')
    m2 = Trainer1D(trainer1d_runs['md'], Dataset1D(np.zeros((4, 2, 16), np.float32)), train_batch_size=T_BATCH,
                   results_folder=str(mt.results_folder), progress=False, log=lambda *a: None)
    m2.load('x')
    assert path.exists() and m2.step == T_STEPS and int(m2.ema.step) == T_STEPS
    assert float(m2.opt.state_step.asnumpy()) == T_STEPS



def test_trainer1d_checkpoint_interop_with_the_reference(trainer1d_runs, tmp_path):
    """A Trainer1D checkpoint -> a reference Trainer1D .pt (weight_convert.trainer) that the
    reference Trainer1D.load()s: model, EMA and Adam moments by name; and back again."""
    import torch
    import denoising_diffusion_pytorch as ddp
    from ms_ddpm import Dataset1D, GaussianDiffusion1D, Trainer1D, Unet1D
    from weight_convert import from_reference_trainer_checkpoint, to_reference_trainer_checkpoint
    mt = trainer1d_runs['mt']
    to_reference_trainer_checkpoint(mt.save('interop'), tmp_path / 'model-from-ms.pt')
    torch.manual_seed(123)
    td2 = ddp.GaussianDiffusion1D(ddp.Unet1D(**T_UNET), **T_DIFF)
    data = torch.zeros(4, 2, 16)
    rt = ddp.Trainer1D(td2, ddp.Dataset1D(data), train_batch_size=T_BATCH, results_folder=str(tmp_path))
    rt.load('from-ms')
    assert rt.step == T_STEPS and int(rt.ema.step) == T_STEPS
    entries = mt.state_entries()
    for k, v in td2.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), entries['online_model.' + k])
    t_state = rt.opt.state_dict()['state']
    for i, (n, _) in enumerate(td2.named_parameters()):
        np.testing.assert_array_equal(t_state[i]['exp_avg'].numpy(), entries['opt.exp_avg.' + n])
    rt.save('back')
    from_reference_trainer_checkpoint(tmp_path / 'model-back.pt', tmp_path / 'model-back.ckpt', seed=T_SEED)
    m2 = Trainer1D(GaussianDiffusion1D(Unet1D(**T_UNET), **T_DIFF), Dataset1D(data.numpy()), train_batch_size=T_BATCH,
                   results_folder=str(tmp_path), progress=False, log=lambda *a: None)
    m2.load('back')
    back = m2.state_entries()
    assert m2.step == T_STEPS and int(m2.ema.step) == T_STEPS
    for k in entries:
        np.testing.assert_array_equal(back[k], entries[k], err_msg=k)


# --- the converter: Unet1D / GaussianDiffusion1D inferred from a state dict ------------------

@pytest.mark.parametrize('case', rows_1d('forward', kind='unet'), ids=ids(rows_1d('forward', kind='unet')))
def test_infer_unet1d_config(case):
    """Every argument a Unet1D state dict determines, read off the reference's keys and shapes;
    the twin built from it has exactly the reference's parameters."""
    from ms_ddpm import Unet1D
    from weight_convert.infer import infer_unet1d_config, is_1d
    from weight_convert.rules import UNET1D_DEFAULTS
    t = build('torch', case)
    shapes = {k: tuple(v.shape) for k, v in t.state_dict().items()}
    assert is_1d(shapes)
    cfg, rep = infer_unet1d_config(shapes)
    truth = dict(UNET1D_DEFAULTS, **case.kwargs)
    assert cfg['dim'] == truth['dim'] and tuple(cfg['dim_mults']) == tuple(truth['dim_mults'])
    assert cfg['attn_heads'] * cfg['attn_dim_head'] == truth['attn_heads'] * truth['attn_dim_head']
    assert ('attn_heads/attn_dim_head' in rep['ambiguous']) == (truth['attn_heads'] * truth['attn_dim_head'] != 128)
    assert cfg['learned_sinusoidal_cond'] == (truth['learned_sinusoidal_cond'] or truth['random_fourier_features'])
    if cfg['learned_sinusoidal_cond']:
        assert cfg['learned_sinusoidal_dim'] == truth['learned_sinusoidal_dim']
    if not {'channels/self_condition', 'learned_variance'} & set(rep['ambiguous']):
        for k in ('channels', 'self_condition', 'learned_variance', 'init_dim', 'out_dim'):
            assert cfg[k] == truth[k], k
    m = Unet1D(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})
    assert {n: tuple(p.shape) for n, p in m.parameters_and_names()} == shapes


@pytest.mark.parametrize('case', rows_1d('schedule'), ids=ids(rows_1d('schedule')))
def test_infer_diffusion1d_config(case):
    from weight_convert.infer import infer_diffusion1d_config
    t = build('torch', case)
    cfg, rep = infer_diffusion1d_config({k: v.numpy() for k, v in t.named_buffers()})
    for k in ('timesteps', 'beta_schedule', 'objective'):
        assert cfg[k] == case.kwargs[k] and k in rep['inferred'], k
    assert 'seq_length' in rep['not_inferred']


def test_convert_and_load_gaussiandiffusion1d(tmp_path, record):
    """A reference GaussianDiffusion1D state dict (.pt) -> .ckpt with its config inside
    (seq_length and the attention split given, the rest inferred) -> load_model: the same loss."""
    import torch
    from ms_ddpm import GaussianDiffusion1D
    from weight_convert import ConfigError, convert, load_model
    case = next(c for c in rows_1d('loss') if c.id == '1d/pred_v-linear-self_cond-coin-used')
    td = build('torch', case).eval()
    src = tmp_path / 'gd1d.pt'
    torch.save(td.state_dict(), src)
    with pytest.raises(ConfigError, match='seq_length'):
        load_model(src)
    info = convert(src, tmp_path / 'gd1d.ckpt', config={'seq_length': N_SEQ, 'attn_heads': 2, 'attn_dim_head': 8})
    assert info['kind'] == 'GaussianDiffusion1D'
    md = load_model(tmp_path / 'gd1d.ckpt')
    assert isinstance(md, GaussianDiffusion1D)
    assert (md.objective, md.num_timesteps, md.self_condition, md.seq_length) == ('pred_v', 100, True, N_SEQ)
    d = _loss_inputs(case)
    fn, args = _ms_loss_fn(md, case, d)
    record(assert_parity(f'loss after convert {case.id}', _torch_loss(td, case, d).detach().numpy(),
                         call_ms(fn, args, 'pynative').asnumpy(), 'loss'))


def test_load_bare_unet1d(tmp_path, record):
    import torch
    import denoising_diffusion_pytorch as ddp
    from ms_ddpm import Unet1D
    from weight_convert import load_model
    torch.manual_seed(0)
    t = ddp.Unet1D(dim=8, dim_mults=(1, 2), channels=2).eval()      # default attention 4 x 32: nothing ambiguous
    torch.save(t.state_dict(), tmp_path / 'unet1d.pt')
    m = load_model(tmp_path / 'unet1d.pt')
    assert isinstance(m, Unet1D) and m.channels == 2
    inputs = make_inputs([('randn', (2, 2, N_SEQ)), ('time', (2,), 1000)], seed=4)
    record(assert_parity('Unet1D after load_model', run_torch(t, inputs), run_ms(m, inputs, 'pynative'), 'unet'))


def test_trainer1d_resume_is_exact(tmp_path):
    """Trainer1D resumes bit-exactly, like the 2D Trainer (the same machinery,
    ``ms_ddpm.training``): 4 steps straight == 2 steps, save, a fresh Trainer1D with other
    initial weights loads, 2 more. 3 batches of 4 an epoch: the 4 steps cross an epoch boundary."""
    from ms_ddpm import Dataset1D, GaussianDiffusion1D, Trainer1D, Unet1D
    data = np.random.default_rng(2).random((12, 2, 16)).astype(np.float32)

    def trainer(init_seed, steps):
        ms.set_seed(init_seed)
        md = GaussianDiffusion1D(Unet1D(**T_UNET), **T_DIFF)
        return Trainer1D(md, Dataset1D(data), train_batch_size=4, train_num_steps=steps,
                         save_and_sample_every=10 ** 9, results_folder=str(tmp_path), seed=5, progress=False,
                         ema_update_every=2, jit=False, log=lambda *a: None)

    # one trainer for the straight run and the saved half (a save only reads the state): 2 steps,
    # save, 2 more in the same process; a fresh trainer loads the save and trains the last 2
    straight = trainer(0, 2)
    straight.train()
    straight.save('half')
    straight.train_num_steps = 4
    straight.train()
    resumed = trainer(1, 4)
    resumed.load('half')
    assert resumed.step == 2
    resumed.train()
    a = {k: np.array(v) for k, v in straight.state_entries().items()}
    b = {k: np.array(v) for k, v in resumed.state_entries().items()}
    assert list(a) == list(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert straight.last_loss == resumed.last_loss


def test_trainer1d_amp_skips_overflowing_steps(tmp_path):
    """Trainer1D with amp (fp16 + DynamicLossScaler, the 2D Trainer's machinery): a scale that
    overflows the gradients skips the step and halves the scale; the parameters stay finite."""
    from ms_ddpm import Dataset1D, GaussianDiffusion1D, Trainer1D, Unet1D
    ms.set_seed(0)
    md = GaussianDiffusion1D(Unet1D(**T_UNET), **T_DIFF)
    t = Trainer1D(md, Dataset1D(np.random.default_rng(3).random((16, 2, 16)).astype(np.float32)),
                  train_batch_size=8, train_num_steps=2, save_and_sample_every=10 ** 9, results_folder=str(tmp_path),
                  amp=True, loss_scale=3e38, loss_scale_window=2, jit=False, progress=False, log=lambda *a: None)
    t.train()
    state = {k: np.array(v) for k, v in t.state_entries().items()}
    assert t.skipped_steps >= 1 and float(state['scaler.scale_value']) < 3e38
    assert all(np.isfinite(v).all() for k, v in state.items() if k.startswith('online_model.'))
