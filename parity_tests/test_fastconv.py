"""The optional oneDNN convolution path (``ms_ddpm.fastconv``, ``MS_DDPM_CPU_CONV=onednn``)
against the reference, at the stock path's tolerances: conv building blocks (2D and 1D), a small
Unet forward, and the loss + gradients of every parameter of a GaussianDiffusion train step
(gradients on the accuracy gate, as test_training's), PyNative and (on representative rows)
GRAPH; and the fused float32 softmax / SiLU kernels alone (forward and backward, against torch
and its float64 run).  The rows are the existing parity rows; only the
conv path of the MindSpore side differs.  The oneDNN packages are part of the test install
(``make setup`` installs ``ms_ddpm[fast]``): if the library cannot be built this file FAILS."""

import os
import subprocess
import sys

import numpy as np
import pytest
import mindspore as ms

from ms_ddpm import fastconv
from parity.cases import rows, TRAIN_CASES
from parity.cases_1d import rows_1d
from parity.compare import assert_gradients, assert_parity, check
from parity.harness import (build_pair, build_diffusion_pair, case_inputs, run_torch, run_ms, loss_inputs, ms_loss_fn,
                            torch_loss, reference_grads)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# conv-bearing building blocks: (row, modes).  GRAPH on one 3x3 block and one strided conv.
_LAYERS_2D = {'Block': ('pynative', 'graph'), 'ResnetBlock-time': ('pynative',), 'ResnetBlock-notime': ('pynative',),
              'LinearAttention': ('pynative',), 'Attention': ('pynative',), 'Upsample': ('pynative',),
              'Downsample': ('pynative',)}
_LAYERS_1D = {'1d/Block': ('pynative',), '1d/ResnetBlock-time': ('pynative',), '1d/Downsample': ('pynative', 'graph'),
              '1d/Upsample': ('pynative',)}

LAYER_RUNS = ([(c, m) for c in rows('forward', not_kind='unet') if c.id in _LAYERS_2D for m in _LAYERS_2D[c.id]]
              + [(c, m) for c in rows_1d('forward') if c.id in _LAYERS_1D for m in _LAYERS_1D[c.id]])
# PyNative only: the GRAPH gradient test below compiles the same Unet's forward inside it
UNET_RUNS = [(c, m) for c in rows('forward', kind='unet') if c.id == 'small' for m in ('pynative',)]
GRAD_CASE = TRAIN_CASES[0]


@pytest.fixture(scope='module', autouse=True)
def fast_path():
    """The oneDNN path on for every cell this file builds; built strictly (fails, never skips)."""
    fastconv.library(strict=True)
    fastconv.set_enabled(True)
    assert fastconv.active(), fastconv.status()
    yield
    fastconv.set_enabled(None)


def _assert_on_fast_path(cell):
    n = sum(isinstance(c, fastconv.FastConv) for _, c in cell.cells_and_names())
    assert n > 0, 'the MindSpore cell was built without the oneDNN convolutions'
    assert all(fastconv.FUSED.values()), f'the fused kernels are not on: {fastconv.FUSED}'


def _ids(runs):
    return [f'{c.id}-{m}' for c, m in runs]


@pytest.mark.parametrize('case,mode', LAYER_RUNS, ids=_ids(LAYER_RUNS))
def test_fast_layer(case, mode, record):
    t, m = build_pair(case)
    _assert_on_fast_path(m)
    inputs = case_inputs(case)
    record(assert_parity(f'fastconv layer {case.id} [{mode}]', run_torch(t, inputs), run_ms(m, inputs, mode), case.kind))


@pytest.mark.parametrize('case,mode', UNET_RUNS, ids=_ids(UNET_RUNS))
def test_fast_unet(case, mode, record):
    t, m = build_pair(case)
    _assert_on_fast_path(m)
    inputs = case_inputs(case)
    record(assert_parity(f'fastconv unet {case.id} [{mode}]', run_torch(t, inputs), run_ms(m, inputs, mode), case.kind))


@pytest.mark.parametrize('mode', ('pynative', 'graph'))
def test_fast_gradients_every_parameter(mode, record):
    case_id, unet_cfg, kw, extra = GRAD_CASE
    td, md = build_diffusion_pair(unet_cfg, kw)
    _assert_on_fast_path(md)
    d = loss_inputs(kw, extra, seed=11)
    loss_of = lambda t, cast: torch_loss(t, cast(d), 'mean')
    _, t64 = reference_grads(td, loss_of, float64=True)   # the accuracy gate's yardstick
    t_loss, t_grads = reference_grads(td, loss_of)

    fn, args = ms_loss_fn(md, d, 'mean')
    weights = md.trainable_params()
    grad_fn = ms.value_and_grad(fn, None, weights)
    if mode == 'graph':
        grad_fn = ms.jit(grad_fn)
    m_loss, m_grads = grad_fn(*[ms.Tensor(a) for a in args])
    names = [p.name for p in weights]
    record(assert_parity(f'fastconv train loss {case_id} [{mode}]', t_loss, m_loss.asnumpy(), 'loss'))
    assert_gradients(f'fastconv {case_id} [{mode}]', t_grads, dict(zip(names, (g.asnumpy() for g in m_grads))), t64,
                     record=record)


# --- the kernels alone: F.conv{1,2,3}d and its two gradients --------------------------------

# (spatial dims, stride, padding, kernel, mode, bias): the bias goes into the kernels
# (ms_ddpm_conv_fwd_bias / _bwd_weights_bias); without one, the plain kernels (3D: ConvSame has none)
CONV_OPS = [(1, 2, 1, 4, 'pynative', True), (2, 1, 1, 3, 'pynative', True), (2, 1, 0, 1, 'pynative', False),
            (2, 1, 0, 1, 'pynative', True), (2, 2, 1, 4, 'graph', True), (2, 1, 1, 3, 'graph', False),
            (3, 1, 1, 3, 'pynative', False)]


@pytest.mark.parametrize('nsp,stride,pad,k,mode,bias', CONV_OPS,
                         ids=[f"{n}d-s{s}-p{p}-k{k}-{m}{'-bias' if b else ''}" for n, s, p, k, m, b in CONV_OPS])
def test_fast_conv_op(nsp, stride, pad, k, mode, bias, record):
    """``F.conv{nsp}d(x, w, b, stride, padding)``, dx, dw (and db) of ``sum(y * g)`` (3D: the
    ConvSame path of karras_unet_3d) against torch."""
    import torch
    rng = np.random.default_rng(nsp * 10 + k)
    x = rng.standard_normal((2, 5) + (8,) * nsp).astype(np.float32)
    w = rng.standard_normal((6, 5) + (k,) * nsp).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    f = getattr(torch.nn.functional, f'conv{nsp}d')
    xt, wt, bt = (torch.tensor(v, requires_grad=True) for v in (x, w, b))
    yt = f(xt, wt, bt if bias else None, stride=stride, padding=pad)
    g = rng.standard_normal(tuple(yt.shape)).astype(np.float32)
    yt.backward(torch.from_numpy(g))
    conv, gm = fastconv.conv_op(nsp, stride, pad), ms.Tensor(g)

    if bias:
        def fwd(a, w_, b_):
            return conv(a, w_, b_)
    else:
        def fwd(a, w_, b_):
            return conv(a, w_)

    def loss(a, w_, b_):
        return (fwd(a, w_, b_) * gm).sum()
    grad = ms.grad(loss, grad_position=(0, 1, 2) if bias else (0, 1))
    if mode == 'graph':
        fwd, grad = ms.jit(fwd), ms.jit(grad)
    args = tuple(ms.Tensor(v) for v in (x, w, b))
    y = fwd(*args)
    grads = grad(*args)
    name = f"fastconv conv{nsp}d s{stride} p{pad} k{k}{' bias' if bias else ''} [{mode}]"
    record(assert_parity(name, yt.detach().numpy(), y.asnumpy(), 'layer'))
    record(assert_parity(name + ' dx', xt.grad.numpy(), grads[0].asnumpy(), 'grad'))
    record(assert_parity(name + ' dw', wt.grad.numpy(), grads[1].asnumpy(), 'grad'))
    if bias:
        record(assert_parity(name + ' db', bt.grad.numpy(), grads[2].asnumpy(), 'grad'))


def test_verify_report_names_the_fast_path():
    """verify's report says which kernels the MindSpore side ran (issue 18)."""
    from ms_ddpm_tools.verify import report
    assert report.kernels() == 'onednn'
    fastconv.set_enabled(False)
    try:
        assert report.kernels() == 'mindspore'
    finally:
        fastconv.set_enabled(True)


def test_a_fast_model_deep_copies():
    """EMA and the Trainer deep-copy the model (``ms-ddpm train --fast-cpu``): a fast conv cell
    copies onto the same cached kernels and the copy computes what the original does."""
    import copy
    from ms_ddpm.ms_compat import Conv2d
    conv = Conv2d(3, 4, 3, padding=1)
    assert conv.fast is not None
    twin = copy.deepcopy(conv)
    assert twin.fast is not conv.fast and twin.fast.fwd is conv.fast.fwd
    x = ms.Tensor(np.random.default_rng(0).standard_normal((2, 3, 5, 5)).astype(np.float32))
    np.testing.assert_array_equal(twin(x).asnumpy(), conv(x).asnumpy())


def test_cli_fast_cpu_flag_switches_it_on(monkeypatch):
    """``ms-ddpm sample --fast-cpu`` turns the path on before the command builds its model."""
    from ms_ddpm_tools.cli import main
    from ms_ddpm_tools.runtime import RUNTIME_SETTINGS
    for name, value in RUNTIME_SETTINGS.items():    # --fast-cpu's settings leave a user's alone
        monkeypatch.setenv(name, os.environ.get(name, value))
    fastconv.set_enabled(None)
    try:
        assert main(['sample', '--fast-cpu', '--help']) == 0
        assert fastconv.requested()
    finally:
        fastconv.set_enabled(True)


def test_runtime_settings_only_where_nobody_set_them(monkeypatch):
    """``tune_runtime`` (the commands' --fast-cpu) sets each process setting only where the user
    did not, and GOMP_SPINCOUNT only before an OpenMP runtime is loaded (GNU OpenMP reads it
    once, when it loads: importing MindSpore loads it) and where OMP_WAIT_POLICY is not set."""
    from ms_ddpm_tools import runtime
    for name in (*runtime.RUNTIME_SETTINGS, 'OMP_WAIT_POLICY'):
        monkeypatch.delenv(name, raising=False)
    assert runtime.openmp_loaded()                       # this process has imported MindSpore
    assert runtime.tune_runtime() == {'MS_DEV_HOST_BLOCKING_RUN': '1'} and 'GOMP_SPINCOUNT' not in os.environ
    monkeypatch.setenv('MS_DEV_HOST_BLOCKING_RUN', '0')
    monkeypatch.setattr(runtime, 'openmp_loaded', lambda: False)
    monkeypatch.setenv('OMP_WAIT_POLICY', 'active')
    assert runtime.tune_runtime() == {} and os.environ['MS_DEV_HOST_BLOCKING_RUN'] == '0'
    monkeypatch.delenv('OMP_WAIT_POLICY')
    assert runtime.tune_runtime() == {'GOMP_SPINCOUNT': '1000'} and os.environ['GOMP_SPINCOUNT'] == '1000'


def test_runtime_settings_reach_a_fresh_process(tmp_path):
    """In a fresh interpreter, ``tune_runtime`` before ``import mindspore`` sets both (what
    ``ms-ddpm ... --fast-cpu`` and the bench's fast worker do)."""
    code = ('import os; from ms_ddpm_tools.runtime import tune_runtime as t; d = t(); import mindspore; '
            'print(sorted(d))')
    env = {k: v for k, v in os.environ.items() if k not in ('GOMP_SPINCOUNT', 'MS_DEV_HOST_BLOCKING_RUN', 'OMP_WAIT_POLICY')}
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "['GOMP_SPINCOUNT', 'MS_DEV_HOST_BLOCKING_RUN']", out.stderr[-1500:]


# --- building and falling back ---------------------------------------------------------------

def test_builds_into_the_cache_folder_atomically(monkeypatch, tmp_path):
    """A fresh cache folder: the library is compiled there (under a temporary name, then
    renamed: no temporary is left) and loads."""
    monkeypatch.setenv('MS_DDPM_CACHE', str(tmp_path))
    monkeypatch.setattr(fastconv, '_state', {})
    path = fastconv.library(strict=True)
    assert path.startswith(str(tmp_path)) and os.path.isfile(path)
    assert [f for f in os.listdir(os.path.dirname(path))] == [os.path.basename(path)]
    import ctypes
    assert ctypes.CDLL(path).ms_ddpm_onednn_version() // 10000 == 3


def test_unbuildable_is_one_warning_and_the_stock_path(monkeypatch, tmp_path, capsys):
    """No compiler: one warning line naming the problem, and the conv layers stay MindSpore's own."""
    from mindspore import nn
    from ms_ddpm.ms_compat import Conv2d, Conv1d
    monkeypatch.setenv('MS_DDPM_CACHE', str(tmp_path))
    monkeypatch.setenv('CXX', str(tmp_path / 'no-such-g++'))
    monkeypatch.setattr(fastconv, '_state', {})
    monkeypatch.setattr(fastconv, '_warned', set())
    assert fastconv.library() is None
    assert type(Conv2d(2, 2, 3, padding=1)) is nn.Conv2d and Conv1d(2, 2, 3).fast is None
    lines = [line for line in capsys.readouterr().err.splitlines() if 'fast CPU convolutions unavailable' in line]
    assert len(lines) == 1 and 'no-such-g++' in lines[0], lines
    with pytest.raises(fastconv.FastConvError):
        fastconv.library(strict=True)


@pytest.mark.parametrize('shape,kernel,stride,pad', [((4, 16, 20, 20), (32, 16, 3, 3), 1, 1),
                                                      ((4, 8, 16, 16), (8, 8, 3, 3), 1, 1),
                                                      ((4, 16, 64), (16, 16, 3), 1, 1)],
                         ids=['reorders-14.7MFLOP', 'small-3x3-1.2MFLOP', 'small-1d'])
def test_small_work_on_one_thread_changes_no_bit(shape, kernel, stride, pad, record):
    """onednn_conv.cc runs the reorders of tensors under 2 MB, and forward / backward-data convs
    under 8 MFLOP, on the calling thread (an OpenMP region's wake-up costs more than such work):
    a conv's output and both gradients are bit-identical with every reorder and conv threaded
    (thresholds 0) and with every one on one thread, and on the small convs bit-identical to
    torch (backward-weights stays threaded: its batch reduction is split across the threads)."""
    import ctypes
    import torch
    lib = ctypes.CDLL(fastconv.library())          # the handle MindSpore's Custom ops opened
    lib.ms_ddpm_set_seq_bytes.restype = ctypes.c_long
    lib.ms_ddpm_set_seq_bytes.argtypes = [ctypes.c_long]
    lib.ms_ddpm_set_seq_flops.restype = ctypes.c_double
    lib.ms_ddpm_set_seq_flops.argtypes = [ctypes.c_double]
    rng = np.random.default_rng(5)
    xa, wa = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(kernel).astype(np.float32)
    x, w = ms.Tensor(xa), ms.Tensor(wa)
    conv = fastconv.conv_op(len(shape) - 2, stride, pad)
    grad = ms.grad(lambda a, b: (conv(a, b) ** 2).sum(), grad_position=(0, 1))
    runs = {}
    old_bytes, old_flops = lib.ms_ddpm_set_seq_bytes(0), lib.ms_ddpm_set_seq_flops(0)
    try:
        for bytes_, flops in ((0, 0.0), (1 << 40, 1e30)):
            lib.ms_ddpm_set_seq_bytes(bytes_)
            lib.ms_ddpm_set_seq_flops(flops)
            runs[bytes_] = [conv(x, w).asnumpy(), *(g.asnumpy() for g in grad(x, w))]
    finally:
        lib.ms_ddpm_set_seq_bytes(old_bytes)
        lib.ms_ddpm_set_seq_flops(old_flops)
    assert (old_bytes, old_flops) == (2 << 20, 8e6), (old_bytes, old_flops)
    for a, b in zip(*runs.values()):
        assert np.array_equal(a, b)
    xt, wt = torch.tensor(xa, requires_grad=True), torch.tensor(wa, requires_grad=True)
    f = torch.nn.functional.conv2d if len(shape) == 4 else torch.nn.functional.conv1d
    y = f(xt, wt, stride=stride, padding=pad)
    (y ** 2).sum().backward()
    for name, t, m in zip(('out', 'dx', 'dw'), (y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy()), runs[1 << 40]):
        r = check(f'fast conv {shape} one thread {name}', t, m, 'layer')
        record(r)
        assert r.ok, r.why
        assert np.array_equal(t, m), f'{name}: not the same bits as torch'


# --- the fused float32 kernels alone (fused_ops.cc): softmax along the last and a strided axis, SiLU, F.normalize, the affine gain / scale-shift ---

FUSED_OPS = [('softmax', (3, 2, 37, 41), 3, 'pynative'), ('softmax', (2, 4, 33, 50), 2, 'graph'),
             ('softmax', (5, 7), 0, 'pynative'), ('silu', (4, 9, 17), None, 'pynative'), ('silu', (3, 1000), None, 'graph'),
             ('normalize', (3, 24, 9, 11), 1, 'pynative'), ('normalize', (2, 16, 40), 1, 'graph'), ('normalize', (4, 33), 1, 'pynative'),
             # at or above fused_ops.cc's PAR_MIN (32768 elements): the OpenMP branches
             ('softmax', (2, 4, 64, 80), 3, 'pynative'), ('softmax', (2, 64, 16, 32), 1, 'pynative'),
             ('normalize', (2, 64, 16, 16), 1, 'pynative')]


@pytest.mark.parametrize('op,shape,axis,mode', FUSED_OPS, ids=[f'{o}-{len(s)}d-ax{a}-{m}' + ('-threaded' if np.prod(s) >= 32768 else '') for o, s, a, m in FUSED_OPS])
def test_fused_op(op, shape, axis, mode, record):
    """The fused kernel's forward and its gradient (of ``sum(y * g)``) against torch's float32 op,
    on the accuracy gate (torch's own float64 run the yardstick); inputs spread over [-30, 30] so
    that exp meets large and tiny arguments."""
    import torch
    rng = np.random.default_rng(len(shape) * 7 + (axis or 0))
    x = (rng.standard_normal(shape) * 10).clip(-30, 30).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    f = {'softmax': lambda v: v.softmax(axis), 'silu': torch.nn.functional.silu,
         'normalize': lambda v: torch.nn.functional.normalize(v, dim=axis)}[op]
    out = {}
    for dt in (torch.float32, torch.float64):
        xt = torch.tensor(x, dtype=dt, requires_grad=True)
        yt = f(xt)
        yt.backward(torch.tensor(g, dtype=dt))
        out[dt] = (yt.detach().numpy(), xt.grad.numpy())
    cell = fastconv.FUSED[op]
    gm = ms.Tensor(g)

    def fwd(a):
        return cell(a, axis) if axis is not None else cell(a)

    def loss(a):
        return (fwd(a) * gm).sum()
    grad = ms.grad(loss)
    if mode == 'graph':
        fwd, grad = ms.jit(fwd), ms.jit(grad)
    y, dx = fwd(ms.Tensor(x)).asnumpy(), grad(ms.Tensor(x)).asnumpy()
    name = f'fused {op} {shape} axis {axis} [{mode}]'
    (t32, tdx), (t64, tdx64) = out[torch.float32], out[torch.float64]
    for label, expected, actual, e64 in ((name, t32, y, t64), (name + ' dx', tdx, dx, tdx64)):
        r = check(label, expected, actual, 'elementwise', expected64=e64)
        record(r)
        assert r.ok, r.why


# (m, k, n): 6 matrices of 19x37 @ 37x23 run on one thread, of 64x64 @ 64x64 on the OpenMP pool
FUSED_MATMULS = [('nn', 'pynative', (19, 37, 23)), ('nt', 'graph', (19, 37, 23)), ('tn', 'pynative', (19, 37, 23)),
                 ('nt', 'pynative', (64, 64, 64))]


@pytest.mark.parametrize('form,mode,mkn', FUSED_MATMULS, ids=[f'{f}-{m}-{"x".join(map(str, s))}' for f, m, s in FUSED_MATMULS])
def test_fused_matmul(form, mode, mkn, record):
    """The batched matmul through oneDNN's sgemm (``ms_compat.matmul_nn / _nt / _tn`` on the fast
    path), forward and both gradients of ``sum(c * g)``, on the accuracy gate."""
    import torch
    from ms_ddpm.ms_compat import matmul_nn, matmul_nt, matmul_tn
    rng = np.random.default_rng({'nn': 1, 'nt': 2, 'tn': 3}[form])
    m, k, n = mkn
    sa = (2, 3) + ((k, m) if form == 'tn' else (m, k))
    sb = (2, 3) + ((n, k) if form == 'nt' else (k, n))
    a, b = (rng.standard_normal(s).astype(np.float32) for s in (sa, sb))
    g = rng.standard_normal((2, 3, m, n)).astype(np.float32)
    out = {}
    for dt in (torch.float32, torch.float64):
        at, bt = (torch.tensor(v, dtype=dt, requires_grad=True) for v in (a, b))
        ct = (at.transpose(-1, -2) if form == 'tn' else at) @ (bt.transpose(-1, -2) if form == 'nt' else bt)
        ct.backward(torch.tensor(g, dtype=dt))
        out[dt] = (ct.detach().numpy(), at.grad.numpy(), bt.grad.numpy())
    f = {'nn': matmul_nn, 'nt': matmul_nt, 'tn': matmul_tn}[form]
    gm = ms.Tensor(g)

    def fwd(x, y):
        return f(x, y)

    def loss(x, y):
        return (f(x, y) * gm).sum()
    grad = ms.grad(loss, grad_position=(0, 1))
    if mode == 'graph':
        fwd, grad = ms.jit(fwd), ms.jit(grad)
    c = fwd(ms.Tensor(a), ms.Tensor(b)).asnumpy()
    da, db = (v.asnumpy() for v in grad(ms.Tensor(a), ms.Tensor(b)))
    name = f'fused matmul {form} {m}x{k}x{n} [{mode}]'
    for label, i, actual in ((name, 0, c), (name + ' da', 1, da), (name + ' db', 2, db)):
        r = check(label, out[torch.float32][i], actual, 'layer', expected64=out[torch.float64][i])
        record(r)
        assert r.ok, r.why


# (helper, x shape, scale of gain or None, mode): RMSNorm's gain (g (1, C, 1, ...)) and the Blocks'
# scale / shift ((B, C, 1, ...)), 2D and 1D; the last two at or above PAR_MIN (the OpenMP branches)
FUSED_AFFINE = [('gain', (3, 24, 9, 11), 24 ** 0.5, 'pynative'), ('gain', (2, 16, 40), None, 'graph'),
                ('scale_shift', (3, 24, 9, 11), None, 'graph'), ('scale_shift', (2, 16, 40), None, 'pynative'),
                ('gain', (2, 64, 16, 16), 8.0, 'pynative'), ('scale_shift', (2, 64, 16, 16), None, 'pynative')]


@pytest.mark.parametrize('helper,shape,scale,mode', FUSED_AFFINE,
                         ids=[f'{h}-{len(s)}d-{m}' + ('-threaded' if np.prod(s) >= 32768 else '') for h, s, _, m in FUSED_AFFINE])
def test_fused_affine(helper, shape, scale, mode, record):
    """``ms_compat.gain`` / ``apply_scale_shift`` on the fast path (``fastconv.FUSED['affine']``):
    the output and dx bit-identical to the stock helpers (the same float32 multiplies and adds),
    against torch on the accuracy gate; the gradients of the gain / scale / shift (sums over the
    broadcast axes, float64-accumulated in the kernel) against torch, torch's float64 run the
    yardstick."""
    import torch
    from ms_ddpm import ms_compat
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape).astype(np.float32)
    pshape = ((1,) if helper == 'gain' else (shape[0],)) + (shape[1],) + (1,) * (len(shape) - 2)
    params = [rng.standard_normal(pshape).astype(np.float32) for _ in range(1 if helper == 'gain' else 2)]
    g = rng.standard_normal(shape).astype(np.float32)

    def torch_f(v, *p):
        if helper == 'gain':
            y = v * p[0]
            return y if scale is None else y * scale
        return v * (p[0] + 1) + p[1]
    out = {}
    for dt in (torch.float32, torch.float64):
        vs = [torch.tensor(a, dtype=dt, requires_grad=True) for a in [x] + params]
        y = torch_f(*vs)
        y.backward(torch.tensor(g, dtype=dt))
        out[dt] = [y.detach().numpy()] + [v.grad.numpy() for v in vs]
    gm = ms.Tensor(g)

    def fwd(v, *p):
        return ms_compat.gain(v, p[0], scale) if helper == 'gain' else ms_compat.apply_scale_shift(v, *p)

    def loss(v, *p):
        return (fwd(v, *p) * gm).sum()

    def run(on):
        with fastconv.enabled(on):
            f, gr = fwd, ms.grad(loss, grad_position=tuple(range(1 + len(params))))
            if mode == 'graph':
                f, gr = ms.jit(f), ms.jit(gr)
            args = [ms.Tensor(a) for a in [x] + params]
            return [f(*args).asnumpy()] + [t.asnumpy() for t in gr(*args)]
    fast, stock = run(True), run(False)
    assert np.array_equal(fast[0], stock[0]) and np.array_equal(fast[1], stock[1]), 'forward / dx differ from the stock helper'
    name = f'fused {helper} {shape} [{mode}]'
    labels = ['', ' dx'] + ([' dg'] if helper == 'gain' else [' dscale', ' dshift'])
    for label, t32, actual, t64 in zip(labels, out[torch.float32], fast, out[torch.float64]):
        r = check(name + label, t32, actual, 'layer', expected64=t64)
        record(r)
        assert r.ok, r.why


def test_fused_adam_matches_torch(record):
    """The fast path's one-pass Adam (``fastconv.FUSED['adam']``, read by ``training.Adam`` when it
    traces) against torch.optim.Adam: same parameters and gradients (spanning 1e-9..1) for 10
    steps, on the optimiser gates; a 256x260 tensor takes the kernel's OpenMP loop.  It also
    rounds as the stock update does: bit-identical to it."""
    import torch
    from mindspore import Parameter, Tensor
    from ms_ddpm.training import Adam
    from parity.cases import ADAM
    assert fastconv.FUSED['adam'] is not None
    rng = np.random.default_rng(0)
    p0 = [(rng.standard_normal(s) * 0.1).astype(np.float32) for s in [(64, 32), (128,), (16, 24, 3, 3), (256, 260)]]
    tp = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in p0]
    fast = [Parameter(Tensor(a.copy()), name=f'p{i}') for i, a in enumerate(p0)]
    stock = [Parameter(Tensor(a.copy()), name=f's{i}') for i, a in enumerate(p0)]
    t_opt, f_opt = torch.optim.Adam(tp, **ADAM), Adam(fast, **ADAM)
    with fastconv.enabled(False):
        s_opt = Adam(stock, **ADAM)
    for _ in range(10):
        grads = [(rng.standard_normal(a.shape) * 10.0 ** rng.uniform(-9, 0, a.shape)).astype(np.float32) for a in p0]
        for p, g in zip(tp, grads):
            p.grad = torch.from_numpy(g)
        t_opt.step()
        f_opt(tuple(Tensor(g) for g in grads))
        with fastconv.enabled(False):
            s_opt(tuple(Tensor(g) for g in grads))
    for i, (p, q) in enumerate(zip(tp, fast)):
        record(assert_parity(f'fused adam param {i}', p.detach().numpy(), q.asnumpy(), 'optimizer'))
    state = t_opt.state[tp[3]]
    record(assert_parity('fused adam exp_avg', state['exp_avg'].numpy(), f_opt.exp_avg[3].asnumpy(), 'optimizer_state'))
    record(assert_parity('fused adam exp_avg_sq', state['exp_avg_sq'].numpy(), f_opt.exp_avg_sq[3].asnumpy(), 'optimizer_state'))
    for q, s in zip((*fast, *f_opt.exp_avg, *f_opt.exp_avg_sq), (*stock, *s_opt.exp_avg, *s_opt.exp_avg_sq)):
        np.testing.assert_array_equal(q.asnumpy(), s.asnumpy())
