"""The magnitude-preserving U-Net family (``karras_unet``) against the reference: every
building block and KarrasUnet over a grid of options (class labels, self-conditioning,
``attn_res``, ``fourier_dim``, the ``mp_*_t`` values, flash attention, dropout in eval),
PyNative and GRAPH; the training-time forced weight normalisation, the gradients of every
parameter and the parameters after Adam steps; InvSqrtDecayLRSched's learning rates against
the reference's LambdaLR.  The rows are ``parity.cases_karras.ROWS_KARRAS``."""

import inspect

import numpy as np
import pytest
import mindspore as ms
from mindspore import ops

from parity.cases import with_modes, ids
from parity.cases_karras import KU, rows_karras
from parity.compare import assert_gradients, assert_parity, check
from parity.harness import build, case_inputs, resolve
from parity.karras import assert_parameters_after_steps, double_copy, gains_of, record_gradients, torch_forward
from weight_convert import load_torch_state_dict


def _pair(case, train=False):
    """(torch, MindSpore) of a row with the same weights, every Gain set to ``call['gain']``."""
    import torch
    torch.manual_seed(case.seed)
    t = build('torch', case)
    with torch.no_grad():
        for name, p in t.named_parameters():
            if name.split('.')[-1] == 'gain':
                p.fill_(case.call['gain'])
    m = build('ms', case)
    from ms_ddpm.ms_compat import name_parameters_by_path
    name_parameters_by_path(m)
    load_torch_state_dict(m, t.state_dict())
    t.train(train)
    m.set_train(train)
    return t, m


def _named(case):
    names = case.call['names']
    return dict(zip(names, case_inputs(case)))


def _torch_forward(t, named):
    import torch
    return t(**{k: torch.from_numpy(v) for k, v in named.items() if k != 'target'})


def _ms_callable(m, names):
    """(fn of positional tensors calling ``m`` with them at their parameters' places and None
    elsewhere (compiles in GRAPH mode), the names it takes in order)."""
    params = list(inspect.signature(m.construct).parameters)
    used = [n for n in names if n != 'target']
    last = max(params.index(n) for n in used)
    slots = tuple(used.index(p) if p in used else -1 for p in params[:last + 1])

    def fwd(*xs):
        call = ()
        for s in slots:
            if s < 0:
                call = call + (None,)
            else:
                call = call + (xs[s],)
        return m(*call)
    return fwd, used


def _run_ms(m, named, mode):
    fwd, used = _ms_callable(m, list(named))
    args = [ms.Tensor(named[n]) for n in used]
    return (ms.jit(fwd)(*args) if mode == 'graph' else fwd(*args)).asnumpy()


@pytest.mark.parametrize('case,mode', with_modes(rows_karras('forward')))
def test_forward(case, mode, record):
    import torch
    t, m = _pair(case)
    named = _named(case)
    with torch.no_grad():
        expected = _torch_forward(t, named).numpy()
    record(assert_parity(f'{case.id} [{mode}]', expected, _run_ms(m, named, mode), case.kind))


@pytest.mark.parametrize('case', rows_karras('forward', kind='unet'), ids=ids(rows_karras('forward', kind='unet')))
def test_parameter_names_shapes_trainable(case):
    t, m = build('torch', case), build('ms', case)
    torch_shapes = {k: tuple(v.shape) for k, v in t.state_dict().items()}
    ms_shapes = {n: tuple(p.shape) for n, p in m.parameters_and_names()}
    assert ms_shapes == torch_shapes and list(ms_shapes) == list(torch_shapes)
    assert all(p.name == n for n, p in m.parameters_and_names())
    assert {k for k, p in t.named_parameters() if p.requires_grad} == {n for n, p in m.parameters_and_names() if p.requires_grad}
    for attr in ('channels', 'image_size', 'self_condition', 'needs_class_labels', 'num_classes', 'num_downsamples',
                 'downsample_factor', 'out_dim'):
        assert getattr(m, attr) == getattr(t, attr), attr
    assert [d.needs_skip for d in m.ups] == [d.needs_skip for d in t.ups]


def test_fresh_init_matches_pytorch_distribution():
    """Weights N(0, 1) (torch.randn), gains 0, Fourier weights N(0, 1) and frozen."""
    case = rows_karras('forward', kind='unet')[0]
    t = dict(build('torch', case).named_parameters())
    for name, p in build('ms', case).parameters_and_names():
        v = p.asnumpy()
        if name.endswith('gain'):
            assert (v == 0).all() and v.shape == (), name
        elif v.size >= 500:
            assert abs(v.mean()) < 0.15 and abs(v.std() - 1) < 0.1, name
        assert p.requires_grad == t[name].requires_grad, name


def test_exports_match_the_reference():
    import denoising_diffusion_pytorch as ddp
    import ms_ddpm
    for name in ('KarrasUnet', 'InvSqrtDecayLRSched'):
        assert getattr(ddp, name).__module__.endswith(KU)
        assert getattr(ms_ddpm, name).__module__ == f'ms_ddpm.{KU}'


def test_bad_configuration_same_errors():
    import torch
    case = rows_karras('forward', kind='unet')[0]
    for kw, exc in [({**case.kwargs, 'num_blocks_per_stage': 0}, AssertionError), ({**case.kwargs, 'fourier_dim': 7}, AssertionError)]:
        with pytest.raises(exc):
            resolve('torch', KU, 'KarrasUnet')(**kw)
        with pytest.raises(exc):
            resolve('ms', KU, 'KarrasUnet')(**kw)
    t, m = _pair(case)
    x = np.zeros((2, 3, 8, 8), np.float32)
    with pytest.raises(AssertionError):
        t(torch.from_numpy(x), torch.zeros(2))
    with pytest.raises(AssertionError):
        m(ms.Tensor(x), ms.Tensor(np.zeros(2, np.float32)))


# --- training: forced weight normalisation, gradients, Adam -----------------------------------

ADAM = dict(lr=1e-2, betas=(0.9, 0.99))


@pytest.mark.parametrize('case,mode', with_modes(rows_karras('train')))
def test_training_forced_weight_norm_gradients_adam(case, mode, record):
    """Training forwards overwrite every Conv2d / Linear weight with its normalised value
    (the parameters after ONE forward, no optimiser); then the gradients of every parameter
    at step 1 and the parameters after ``steps`` Adam steps (lr 1e-2 so the steps move the
    weights off the unit sphere and the next forward renormalises them).  Gradients and the
    parameters after the steps are on the accuracy gate: the reference trains a float64 copy
    alongside (the same forwards and Adam steps), whose results are the yardstick."""
    import torch
    from ms_ddpm.training import Adam
    t, m = _pair(case, train=True)
    t64 = double_copy(t)        # the float64 reference (before any forward normalises t's weights)
    named = _named(case)
    target_t = torch.from_numpy(named['target'])
    t_opt = torch.optim.Adam(t.parameters(), **ADAM)
    t64_opt = torch.optim.Adam(t64.parameters(), **ADAM)
    weights = m.trainable_params()
    names = [p.name for p in weights]
    m_opt = Adam(weights, **ADAM)
    fwd, used = _ms_callable(m, list(named))

    def loss_fn(*xs):
        out = fwd(*xs[:-1])
        return ops.mean((out - xs[-1]) ** 2)
    grad_fn = ms.value_and_grad(loss_fn, None, weights)

    def train_step(*xs):
        loss, grads = grad_fn(*xs)
        m_opt(grads)
        return loss, grads
    step = ms.jit(train_step) if mode == 'graph' else train_step
    args = [ms.Tensor(named[n]) for n in used] + [ms.Tensor(named['target'])]

    for i in range(case.call['steps']):
        t_opt.zero_grad()
        t_loss = torch.nn.functional.mse_loss(_torch_forward(t, named), target_t)
        t_loss.backward()
        if i == 0:   # the forward has normalised the weights (before any optimiser step)
            t_after_forward = {k: v.detach().numpy().copy() for k, v in t.named_parameters()}
        t_grads = {k: p.grad.numpy().copy() for k, p in t.named_parameters() if p.requires_grad}
        t_opt.step()
        m_loss, m_grads = step(*args)
        record(assert_parity(f'{case.id} loss step {i + 1} [{mode}]', t_loss.detach().numpy(), m_loss.asnumpy(), 'loss'))
        t64_opt.zero_grad()
        torch.nn.functional.mse_loss(torch_forward(t64, named, double=True), target_t.double()).backward()
        if i == 0:
            g64 = {k: p.grad.numpy().copy() for k, p in t64.named_parameters() if p.requires_grad}
            mg = {n: g.asnumpy() for n, g in zip(names, m_grads)}
            record_gradients(record, assert_gradients(f'{case.id} [{mode}]', t_grads, mg, g64, together=gains_of(mg)))
        t64_opt.step()
    # one more training forward in each, so the last Adam update is normalised too
    _torch_forward(t, named)
    with torch.no_grad():
        torch_forward(t64, named, double=True)
    fwd(*args[:-1])
    assert_parameters_after_steps(f'{case.id} after {case.call["steps"]} steps [{mode}]', t, t64, m, record)


def test_forced_weight_normalisation_after_one_forward(record):
    """After one training forward every Conv2d / Linear weight is replaced by its
    normalised value, row norms sqrt(fan): compared with the reference's (no optimiser)."""
    import torch
    case = rows_karras('train')[0]
    t, m = _pair(case, train=True)
    named = _named(case)
    with torch.no_grad():
        _torch_forward(t, named)
    fwd, used = _ms_callable(m, list(named))
    fwd(*[ms.Tensor(named[n]) for n in used])
    params = dict(m.parameters_and_names())
    worst = None
    for k, v in t.named_parameters():
        if k.endswith('weight'):
            w = v.detach().numpy().reshape(v.shape[0], -1)
            assert np.allclose(np.linalg.norm(w, axis=1), np.sqrt(w.shape[1]), rtol=1e-5), k
        r = assert_parity(f"weights after one training forward: {k}", v.detach().numpy(), params[k].asnumpy(), "elementwise")
        worst = r if worst is None or r.rel_fro > worst.rel_fro else worst
    record(worst)


def test_inv_sqrt_decay_lr_sched_matches_lambda_lr():
    import torch
    from denoising_diffusion_pytorch.karras_unet import InvSqrtDecayLRSched as TSched
    from ms_ddpm.karras_unet import InvSqrtDecayLRSched as MSched
    from ms_ddpm.training import Adam
    for lr, t_ref, sigma_ref in [(1e-3, 70000, 0.01), (0.5, 10, 0.2)]:
        tp = torch.nn.Parameter(torch.zeros(3))
        t_opt = torch.optim.Adam([tp], lr=lr)
        m_opt = Adam([ms.Parameter(ms.Tensor(np.zeros(3, np.float32)), name='p')], lr=lr)
        ts = TSched(t_opt, t_ref=t_ref, sigma_ref=sigma_ref)
        msched = MSched(m_opt, t_ref=t_ref, sigma_ref=sigma_ref)
        for step in range(60):
            assert msched.get_last_lr() == ts.get_last_lr(), step
            assert m_opt.lr == t_opt.param_groups[0]['lr'], step
            t_opt.step()
            ts.step()
            msched.step()
    assert TSched.__code__.co_varnames[:3] == MSched.__code__.co_varnames[:3]
    assert inspect.signature(TSched).parameters['t_ref'].default == inspect.signature(MSched).parameters['t_ref'].default
