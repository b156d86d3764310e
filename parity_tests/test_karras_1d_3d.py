"""KarrasUnet1D and KarrasUnet3D against the reference (issue 15): forwards over a small
option grid (class labels int / one-hot, self-conditioning given / default, ``attn_res``,
``fourier_dim``, the ``mp_*_t`` values, flash attention, dropout in eval; 3D: per-stage block
counts, ``downsample_types``, factorised space / time attention), PyNative and GRAPH; the
training-time forced weight normalisation, the gradients of every parameter (each against a
float64 gradient) and the parameters after Adam steps; names, shapes, exports; the
reference's broken 1D MPFeedForward (patched in the test).  Rows:
``parity.cases_karras.ROWS_KARRAS_1D_3D``; forwards and gradients on the accuracy gate
(``parity.compare``: the reference's float64 run of the same module, ``parity.karras.double_copy``)."""

import numpy as np
import pytest
import mindspore as ms
from mindspore import ops

from parity.cases import with_modes, ids
from parity.cases_karras import K1, K3, rows_karras_1d_3d
from parity.compare import assert_gradients, assert_parity
from parity.harness import build, resolve
from parity.karras import (pair, named_inputs, torch_forward, ms_callable, double_copy, gains_of, record_gradients,
                           assert_parameters_after_steps)

ADAM = dict(lr=1e-2, betas=(0.9, 0.99))


def _run_ms(m, named, mode):
    fwd, used = ms_callable(m, list(named))
    args = [ms.Tensor(named[n]) for n in used]
    return (ms.jit(fwd)(*args) if mode == 'graph' else fwd(*args)).asnumpy()


@pytest.mark.parametrize('case,mode', with_modes(rows_karras_1d_3d('forward')))
def test_forward(case, mode, record):
    import torch
    t, m = pair(case)
    named = named_inputs(case)
    with torch.no_grad():
        expected = torch_forward(t, named).numpy()
        exact = torch_forward(double_copy(t), named, double=True).numpy()
    record(assert_parity(f'{case.id} [{mode}]', expected, _run_ms(m, named, mode), case.kind, expected64=exact))


@pytest.mark.parametrize('case', rows_karras_1d_3d('forward'), ids=ids(rows_karras_1d_3d('forward')))
def test_parameter_names_shapes_trainable(case):
    t, m = build('torch', case), build('ms', case)
    torch_shapes = {k: tuple(v.shape) for k, v in t.state_dict().items()}
    ms_shapes = {n: tuple(p.shape) for n, p in m.parameters_and_names()}
    assert ms_shapes == torch_shapes and list(ms_shapes) == list(torch_shapes)
    assert all(p.name == n for n, p in m.parameters_and_names())
    assert {k for k, p in t.named_parameters() if p.requires_grad} == {n for n, p in m.parameters_and_names() if p.requires_grad}
    attrs = ('seq_len',) if case.module == K1 else ('image_size', 'frames')
    for attr in attrs + ('channels', 'self_condition', 'needs_class_labels', 'num_classes', 'num_downsamples',
                         'downsample_factor', 'out_dim'):
        assert getattr(m, attr) == getattr(t, attr), attr
    assert [d.needs_skip for d in m.ups] == [d.needs_skip for d in t.ups]
    if case.module == K3:
        assert [e.downsample_config for e in m.downs if e.downsample] == [tuple(e.downsample_config) for e in t.downs if e.downsample]
        assert [d.factorized_attn for d in m.ups] == [d.factorized_attn for d in t.ups]


def test_exports_and_bad_configuration():
    import denoising_diffusion_pytorch as ddp
    import ms_ddpm
    for name, module in (('KarrasUnet1D', K1), ('KarrasUnet3D', K3)):
        assert getattr(ddp, name).__module__.endswith(module)
        assert getattr(ms_ddpm, name).__module__ == f'ms_ddpm.{module}'
    base3 = rows_karras_1d_3d('forward', module=K3)[0].kwargs
    for kw in ({**base3, 'downsample_types': ('all',)}, {**base3, 'downsample_types': ('all', 'video')},
               {**base3, 'num_blocks_per_stage': (1, 0)}, {**base3, 'frames': 2, 'downsample_types': 'frame'}):
        for fw in ('torch', 'ms'):
            with pytest.raises(AssertionError):
                resolve(fw, K3, 'KarrasUnet3D')(**kw)
    base1 = rows_karras_1d_3d('forward', module=K1)[0].kwargs
    for fw in ('torch', 'ms'):
        with pytest.raises(AssertionError):
            resolve(fw, K1, 'KarrasUnet1D')(**{**base1, 'num_blocks_per_stage': 0})


def test_conv1d_dirac_init():
    """``Conv1d(init_dirac=True)``: torch's nn.init.dirac_ (no row of the nets uses it)."""
    t_cls, m_cls = resolve('torch', K1, 'Conv1d'), resolve('ms', K1, 'Conv1d')
    for args in ((4, 6, 3), (6, 4, 1)):
        t, m = t_cls(*args, init_dirac=True), m_cls(*args, init_dirac=True)
        assert (t.weight.detach().numpy() == m.weight.asnumpy()).all()


def test_mp_image_transformer_1d_reference_bug_patched(monkeypatch, record):
    """The reference's 1D MPFeedForward builds ``Conv2d``, undefined in karras_unet_1d
    (NameError); patched to its Conv1d here, the twin builds Conv1d (docs/parity.md)."""
    import torch
    import denoising_diffusion_pytorch.karras_unet_1d as ref
    with pytest.raises(NameError):
        ref.MPFeedForward(dim=8)
    monkeypatch.setattr(ref, 'Conv2d', ref.Conv1d, raising=False)
    torch.manual_seed(0)
    t = ref.MPImageTransformer(dim=8, depth=1, dim_head=8, heads=2, ff_mult=2).eval()
    m = resolve('ms', K1, 'MPImageTransformer')(dim=8, depth=1, dim_head=8, heads=2, ff_mult=2)
    from weight_convert import load_torch_state_dict
    load_torch_state_dict(m, t.state_dict())
    m.set_train(False)
    x = np.random.default_rng(0).standard_normal((2, 8, 16)).astype(np.float32)
    with torch.no_grad():
        expected = t(torch.from_numpy(x)).numpy()
    record(assert_parity('karras1d/MPImageTransformer (reference patched)', expected, m(ms.Tensor(x)).asnumpy(), 'layer'))


@pytest.mark.parametrize('case,mode', with_modes(rows_karras_1d_3d('train')))
def test_training_forced_weight_norm_gradients_adam(case, mode, record):
    """Training forwards overwrite every conv / Linear weight with its normalised value (the
    parameters after ONE forward, no optimiser: bit-identical); then the loss and the
    gradient of every parameter at step 1, each gated against a float64 gradient (the same
    module, ``.double()``); the parameters after ``steps`` Adam steps and a final forward."""
    import torch
    from ms_ddpm.training import Adam
    t, m = pair(case, train=True)
    t64 = double_copy(t)
    named = named_inputs(case)
    target_t = torch.from_numpy(named['target'])
    t_opt = torch.optim.Adam(t.parameters(), **ADAM)
    t64_opt = torch.optim.Adam(t64.parameters(), **ADAM)    # the float64 copy trains alongside: the yardstick
    weights = m.trainable_params()
    names = [p.name for p in weights]
    m_opt = Adam(weights, **ADAM)
    fwd, used = ms_callable(m, list(named))

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

    # one training forward in each (no optimiser): the weights it leaves, bit-identical
    with torch.no_grad():
        torch_forward(t, named)
        torch_forward(t64, named, double=True)
    fwd(*args[:-1])
    params = dict(m.parameters_and_names())
    worst = None
    for k, v in t.named_parameters():
        r = assert_parity(f'{case.id} {k} after one training forward', v.detach().numpy(), params[k].asnumpy(), 'elementwise')
        worst = r if worst is None or r.rel_fro > worst.rel_fro else worst
    record(worst)

    for i in range(case.call['steps']):
        t64_opt.zero_grad()
        torch.nn.functional.mse_loss(torch_forward(t64, named, double=True), target_t.double()).backward()
        if i == 0:
            g64 = {k: p.grad.numpy().copy() for k, p in t64.named_parameters() if p.requires_grad}
        t64_opt.step()
        t_opt.zero_grad()
        t_loss = torch.nn.functional.mse_loss(torch_forward(t, named), target_t)
        t_loss.backward()
        t_grads = {k: p.grad.numpy().copy() for k, p in t.named_parameters() if p.requires_grad}
        t_opt.step()
        m_loss, m_grads = step(*args)
        record(assert_parity(f'{case.id} loss step {i + 1} [{mode}]', t_loss.detach().numpy(), m_loss.asnumpy(), 'loss'))
        if i == 0:
            mg = {n: g.asnumpy() for n, g in zip(names, m_grads)}
            record_gradients(record, assert_gradients(f'{case.id} [{mode}]', t_grads, mg, g64, together=gains_of(mg)))
    torch_forward(t, named)
    with torch.no_grad():
        torch_forward(t64, named, double=True)
    fwd(*args[:-1])
    assert_parameters_after_steps(f'{case.id} after {case.call["steps"]} steps [{mode}]', t, t64, m, record)
