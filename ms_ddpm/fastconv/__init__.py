"""An optional fast CPU convolution path: oneDNN 3.x direct convolutions as MindSpore Custom ops.

MindSpore 2.8 runs CPU convolutions as im2col + GEMM on plain NCHW memory (2.9 / 2.10 fall back
to oneDNN's reference convolution, ~200x slower); torch runs oneDNN's blocked direct kernels.
This package ships ``onednn_conv.cc`` (forward, backward-data and backward-weights for 1D / 2D /
3D convolutions, primitives cached per shape, ``format_tag::any`` + reorders) and ``fused_ops.cc``
(softmax and SiLU with their backward in float32 with a 1-ulp exp, as torch's CPU kernels compute
them, where the stock twins go through float64; F.normalize, RMSNorm's core, in one pass each way;
batched matmuls through oneDNN's sgemm; RMSNorm's gain and the Blocks' scale / shift, their
broadcast gradients summed in the backward's one pass), compiles them with g++ on first use into the cache folder
(``$MS_DDPM_CACHE`` or ``~/.cache/ms_ddpm``; built under a temporary name and renamed into place) against the oneDNN of the pip extra ``ms_ddpm[fast]``
(``onednn-cpu-gomp`` + ``onednn-devel-cpu-gomp``), and wraps the kernels as
``ops.Custom(func_type='aot')`` with a bprop, so they run in PyNative and inside ``ms.jit``.

Switched on with ``MS_DDPM_CPU_CONV=onednn`` (or ``set_enabled(True)``, which the commands'
``--fast-cpu`` calls) when the device target is CPU; ``ms_ddpm.ms_compat``'s conv layers built
while it is on dispatch here, and ``ms_compat.softmax`` / ``SiLU`` / ``normalize`` / ``matmul_*`` /
``gain`` / ``apply_scale_shift`` use the fused kernels in graphs traced (and PyNative calls made) while ``FUSED`` holds them.
MindSpore's own kernels stay the default.  Asked for but not usable (no compiler, no oneDNN
package, a failed build): one warning line and the stock path.  The commands' ``--fast-cpu`` also
set the path's process settings before MindSpore loads (``ms_ddpm_tools.runtime``: no busy-waiting
host thread, no spinning OpenMP workers).  See docs/fastconv.md.
"""

import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import mindspore as ms
from mindspore import nn, ops, Tensor

__all__ = ['requested', 'set_enabled', 'enabled', 'active', 'library', 'status', 'conv_op', 'FUSED',
           'FastConvError', 'ENV']

ENV = 'MS_DDPM_CPU_CONV'
_HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = (os.path.join(_HERE, 'onednn_conv.cc'), os.path.join(_HERE, 'fused_ops.cc'))
HEADERS = (os.path.join(_HERE, 'one_thread.h'),)      # included by the sources: part of the build's hash
_PACKAGES = ('onednn-cpu-gomp', 'onednn-devel-cpu-gomp')

_override = None      # set_enabled(): True / False beats the environment variable; None reads it
_state = {}           # 'lib': path of the built library, 'error': why it is unusable
_ops = {}             # (nsp, stride, padding) -> _ConvOps
# The fused cells that ms_compat.softmax / SiLU / normalize / matmul_* / gain / apply_scale_shift call, or None: filled (from
# _fused_cells, built once per process) when a conv layer is built on the active path (conv_op)
# or by set_enabled(True), emptied by set_enabled(False / None).  A plain dict of module state, so that code compiled by ms.jit reads
# it as a constant when it traces (a graph compiled before keeps what it saw).
FUSED = {'softmax': None, 'silu': None, 'normalize': None, 'matmul': None, 'adam': None, 'affine': None}
_fused_cells = {}


class FastConvError(RuntimeError):
    """The fast path was asked for strictly (``library(strict=True)``) and cannot be built."""


def requested():
    """Is the oneDNN path asked for (``set_enabled`` or ``MS_DDPM_CPU_CONV=onednn``)?"""
    if _override is not None:
        return _override
    value = os.environ.get(ENV, '').strip().lower()
    if value in ('', 'stock', 'mindspore', '0'):
        return False
    if value != 'onednn':
        _warn_once('env', f"{ENV}={os.environ.get(ENV)!r} is not 'onednn' or 'stock': using MindSpore's own convolutions")
        return False
    return True


def set_enabled(flag):
    """Switch the path on (True), off (False) or back to the environment variable (None) for the
    conv layers built from now on."""
    global _override
    _override = flag
    FUSED.update(dict.fromkeys(FUSED))
    if flag:
        _fill_fused()


class enabled:
    """``with fastconv.enabled(True):`` the path on (or off) for what is built, traced and run
    inside; the previous setting (and fused kernels) back afterwards.  Conv layers keep the path
    they were built with; softmax / SiLU follow the setting in force when a graph is traced or
    a PyNative call runs, so compile a fast model's graphs inside the block."""

    def __init__(self, flag=True):
        self.flag = flag

    def __enter__(self):
        self.saved = (_override, dict(FUSED))
        set_enabled(self.flag)
        return self

    def __exit__(self, *exc):
        global _override
        _override, fused = self.saved
        FUSED.update(fused)
        return False


def _cache_dir():
    return os.environ.get('MS_DDPM_CACHE') or os.path.join(os.path.expanduser('~'), '.cache', 'ms_ddpm')


def _find_onednn():
    """(include dir, lib dir, version) of the pip-installed oneDNN; raises FastConvError."""
    found = {}
    for name in _PACKAGES:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise FastConvError(f"package {name} is not installed (pip install 'ms_ddpm[fast]')") from None
        for f in dist.files or ():
            base = os.path.basename(str(f))
            if base == 'dnnl.hpp' and 'oneapi' in str(f):
                found['include'] = os.path.dirname(os.path.dirname(os.path.dirname(str(dist.locate_file(f)))))
            elif base.startswith('libdnnl.so'):
                found['lib'] = os.path.dirname(str(dist.locate_file(f)))
        found.setdefault('version', dist.version)
    if 'include' not in found or 'lib' not in found:
        raise FastConvError(f"oneDNN headers or libdnnl.so not found in the packages {', '.join(_PACKAGES)}")
    return os.path.realpath(found['include']), os.path.realpath(found['lib']), found['version']


def _build():
    include, lib, version = _find_onednn()
    cxx = os.environ.get('CXX') or 'g++'
    if not shutil.which(cxx):
        raise FastConvError(f'no C++ compiler {cxx!r} (g++ on PATH, or $CXX)')
    cxx = shutil.which(cxx)
    src = b''
    for source in SOURCES + HEADERS:
        with open(source, 'rb') as f:
            src += f.read()
    tag = hashlib.sha256(src + f'|{version}|{include}|{lib}|{cxx}|{_cpu_flags()}'.encode()).hexdigest()[:16]
    folder = os.path.join(_cache_dir(), 'fastconv')
    target = os.path.join(folder, f'ms_ddpm_onednn_conv_{tag}.so')
    if os.path.exists(target):
        return target
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.build-', suffix='.so', dir=folder)
    os.close(fd)
    # -march=native: built on (and cached for) the CPU it runs on, so the fused loops vectorise
    cmd = [cxx, '-O3', '-march=native', '-fopenmp', '-std=c++17', '-shared', '-fPIC', '-I' + include,
           *SOURCES, '-o', tmp, '-L' + lib, '-ldnnl', '-Wl,-rpath,' + lib]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            first = (done.stderr.strip().splitlines() or ['?'])[0]
            raise FastConvError(f"compiling {' + '.join(map(os.path.basename, SOURCES))} failed: {first}")
        os.replace(tmp, target)          # atomic: a reader sees no library or the whole one
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _cpu_flags():
    """The CPU's model and flags (the library is compiled with -march=native; a cache folder
    shared by machines with other CPUs gets one build per CPU)."""
    try:
        with open('/proc/cpuinfo') as f:
            lines = [ln for ln in f.read().splitlines() if ln.startswith(('model name', 'flags'))][:2]
    except OSError:
        import platform
        lines = [platform.machine(), platform.processor()]
    return hashlib.sha256('\n'.join(lines).encode()).hexdigest()[:12]


def library(strict=False):
    """Path of the compiled kernel library (built on first call), or None with one warning line
    saying why not (``strict=True``: raise FastConvError instead)."""
    if 'lib' not in _state and 'error' not in _state:
        try:
            _state['lib'] = _build()
        except (FastConvError, OSError) as e:
            _state['error'] = str(e)
    if 'error' in _state:
        if strict:
            raise FastConvError(_state['error'])
        _warn_once('build', f"ms_ddpm fast CPU convolutions unavailable ({_state['error']}): using MindSpore's own")
        return None
    return _state['lib']


def active():
    """Will conv layers built now use the oneDNN path?  (asked for, CPU target, library built)"""
    if not requested():
        return False
    if ms.get_context('device_target') != 'CPU':
        return False
    return library() is not None


def status():
    """One line for reports: which convolution path conv layers built now take."""
    if not requested():
        return 'mindspore'
    if ms.get_context('device_target') != 'CPU':
        return 'mindspore (oneDNN path is CPU only)'
    return 'onednn' if library() is not None else f"mindspore (oneDNN path unavailable: {_state.get('error')})"


_warned = set()


def _warn_once(key, line):
    if key not in _warned:
        _warned.add(key)
        print('warning: ' + line, file=sys.stderr, flush=True)   # one line, on stderr


def _out_shape(stride, padding):
    def shape(x, w, cfg):
        return [x[0], w[0]] + [(x[2 + i] + 2 * padding[i] - w[2 + i]) // stride[i] + 1 for i in range(len(stride))]
    return shape


class _ConvOps:
    """The Custom ops of one (spatial dims, stride, padding) configuration: the convolution
    without and with a bias (``fwd``, ``fwd_bias``), each with its bprop."""

    def __init__(self, lib, nsp, stride, padding):
        self.cfg = Tensor(np.array((nsp,) + tuple(stride) + tuple(padding), np.int64))
        first = lambda *types: types[0]
        bwd_data = ops.Custom(lib + ':ms_ddpm_conv_bwd_data', out_shape=lambda dy, w, x, c: x,
                              out_dtype=lambda dy, w, x, c: x, func_type='aot')
        bwd_weights = ops.Custom(lib + ':ms_ddpm_conv_bwd_weights', out_shape=lambda dy, x, w, c: w,
                                 out_dtype=lambda dy, x, w, c: w, func_type='aot')

        def bprop(x, w, cfg, out, dout):
            return bwd_data(dout, w, x, cfg), bwd_weights(dout, x, w, cfg), ops.zeros_like(cfg)

        self.fwd = ops.Custom(lib + ':ms_ddpm_conv_fwd', out_shape=_out_shape(stride, padding),
                              out_dtype=first, func_type='aot', bprop=bprop)
        # with a bias: added inside the kernel and its gradient reduced inside the backward-weights
        # kernel, as torch's CPU convolution does (one memory pass each fewer than bias_add and its grad)
        bwd_weights_bias = ops.Custom(lib + ':ms_ddpm_conv_bwd_weights_bias',
                                      out_shape=lambda dy, x, w, c: (w, [w[0]]),
                                      out_dtype=lambda dy, x, w, c: (w, w), func_type='aot')

        def bprop_bias(x, w, b, cfg, out, dout):
            dw, db = bwd_weights_bias(dout, x, w, cfg)
            return bwd_data(dout, w, x, cfg), dw, db, ops.zeros_like(cfg)

        shape = _out_shape(stride, padding)
        self.fwd_bias = ops.Custom(lib + ':ms_ddpm_conv_fwd_bias', out_shape=lambda x, w, b, cfg: shape(x, w, cfg),
                                   out_dtype=first, func_type='aot', bprop=bprop_bias)
        self.bwd_data, self.bwd_weights = bwd_data, bwd_weights


def _tuple(v, n):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


class FastConv(nn.Cell):
    """``F.conv{1,2,3}d(x, weight, bias, stride=s, padding=p)`` (float32, zero padding,
    torch-shaped weight, ``bias`` (out,) or None) through the oneDNN kernels."""

    def __init__(self, ops_):
        super().__init__()
        self.ops_ = ops_
        self.fwd = ops_.fwd
        self.fwd_bias = ops_.fwd_bias
        self.cfg = ops_.cfg

    def __deepcopy__(self, memo):
        """A new cell on the same cached kernels (``ops.Custom`` primitives cannot be deep-copied;
        EMA and the Trainer deep-copy the model: ``ms-ddpm train --fast-cpu``)."""
        return FastConv(self.ops_)

    def construct(self, x, weight, bias=None):
        if bias is None:
            return self.fwd(x, weight, self.cfg)
        return self.fwd_bias(x, weight, bias, self.cfg)


def conv_op(nsp, stride=1, padding=0):
    """A FastConv cell for ``nsp`` spatial dims, or None when the path is not active."""
    if not active():
        return None
    _fill_fused()
    stride, padding = _tuple(stride, nsp), _tuple(padding, nsp)
    key = (nsp, stride, padding)
    if key not in _ops:
        _ops[key] = _ConvOps(_state['lib'], nsp, stride, padding)
    return FastConv(_ops[key])


class _AlongAxis(nn.Cell):
    """A fused op along one axis: ``construct(x, axis)`` (float32, ``axis`` a non-negative Python
    int), forward ``FWD(x, cfg)``, backward ``BWD(out, dout, cfg)`` or ``BWD(x, out, dout, cfg)``
    (``BACKWARD_INPUTS``), differentiable."""
    FWD = BWD = None
    BACKWARD_INPUTS = ('x', 'out')

    def __init__(self, lib):
        super().__init__()
        bwd = ops.Custom(lib + ':' + self.BWD, out_shape=lambda *shapes: shapes[0],
                         out_dtype=lambda *types: types[0], func_type='aot')
        if self.BACKWARD_INPUTS == ('out',):
            def bprop(x, cfg, out, dout):
                return bwd(out, dout, cfg), ops.zeros_like(cfg)
        else:
            def bprop(x, cfg, out, dout):
                return bwd(x, out, dout, cfg), ops.zeros_like(cfg)

        self.fwd = ops.Custom(lib + ':' + self.FWD, out_shape=lambda x, c: x,
                              out_dtype=lambda x, c: x, func_type='aot', bprop=bprop)
        self.bwd = bwd
        self.cfgs = tuple(Tensor([axis], ms.int64) for axis in range(8))    # the kernels' cfg, per axis

    def construct(self, x, axis):
        return self.fwd(x, self.cfgs[axis])


class FusedSoftmax(_AlongAxis):
    """``x.softmax(dim=axis)`` through ``fused_ops.cc``; its backward from the output alone."""
    FWD, BWD, BACKWARD_INPUTS = 'ms_ddpm_softmax_fwd', 'ms_ddpm_softmax_bwd', ('out',)


class FusedNormalize(_AlongAxis):
    """``F.normalize(x, dim=axis)`` (eps 1e-12) through ``fused_ops.cc``: RMSNorm's normalisation
    in one kernel each way instead of square, ones-row matmul, sqrt, clamp and divide (and their
    backwards)."""
    FWD, BWD, BACKWARD_INPUTS = 'ms_ddpm_l2norm_fwd', 'ms_ddpm_l2norm_bwd', ('x', 'out')


class FusedMatmul(nn.Cell):
    """Batched ``a @ b`` / ``a @ b^T`` / ``a^T @ b`` (float32, equal leading dims) through oneDNN's
    sgemm, each gradient one more of the three (no transposes materialised).  ``construct(a, b,
    mode)`` with ``mode`` 'nn', 'nt' or 'tn' (a Python constant)."""

    def __init__(self, lib):
        super().__init__()

        def shape(ta, tb):
            def f(a, b):
                m = a[-1] if ta else a[-2]
                n = b[-2] if tb else b[-1]
                return list(a[:-2]) + [m, n]
            return f

        def op(name, **bprop):
            return ops.Custom(lib + ':ms_ddpm_bmm_' + name, out_shape=shape(name[0] == 't', name[1] == 't'),
                              out_dtype=lambda a, b: a, func_type='aot', **bprop)
        nn_, nt_, tn_ = op('nn'), op('nt'), op('tn')

        def bprop_nn(a, b, out, dout):       # c = a b
            return nt_(dout, b), tn_(a, dout)

        def bprop_nt(a, b, out, dout):       # c = a b^T
            return nn_(dout, b), tn_(dout, a)

        def bprop_tn(a, b, out, dout):       # c = a^T b
            return nt_(b, dout), nn_(a, dout)
        self.nn, self.nt, self.tn = op('nn', bprop=bprop_nn), op('nt', bprop=bprop_nt), op('tn', bprop=bprop_tn)

    def construct(self, a, b, mode):
        if mode == 'nt':
            return self.nt(a, b)
        if mode == 'tn':
            return self.tn(a, b)
        return self.nn(a, b)


class FusedSiLU(nn.Cell):
    """``F.silu(x)`` (float32) through ``fused_ops.cc``, differentiable."""

    def __init__(self, lib):
        super().__init__()
        bwd = ops.Custom(lib + ':ms_ddpm_silu_bwd', out_shape=lambda x, dy: x, out_dtype=lambda x, dy: x,
                         func_type='aot')

        def bprop(x, out, dout):
            return (bwd(x, dout),)

        self.fwd = ops.Custom(lib + ':ms_ddpm_silu_fwd', out_shape=lambda x: x, out_dtype=lambda x: x,
                              func_type='aot', bprop=bprop)
        self.bwd = bwd

    def construct(self, x):
        return self.fwd(x)


class FusedAdam(nn.Cell):
    """torch's Adam step on one float32 parameter through ``fused_ops.cc``, in one pass:
    ``construct(grad, param, exp_avg, exp_avg_sq, cfg) -> (param', exp_avg', exp_avg_sq')``,
    ``cfg`` = float32 (1 - beta1, beta2, 1 - beta2, eps, step_size, sqrt(bias_correction2)); the
    same float32 operations as ``ms_ddpm.training.Adam``'s stock update, in its order."""

    def __init__(self, lib):
        super().__init__()
        self.op = ops.Custom(lib + ':ms_ddpm_adam', out_shape=lambda g, p, m, v, c: (p, p, p),
                             out_dtype=lambda g, p, m, v, c: (p, p, p), func_type='aot')

    def construct(self, grad, param, exp_avg, exp_avg_sq, cfg):
        return self.op(grad, param, exp_avg, exp_avg_sq, cfg)


class FusedAffine(nn.Cell):
    """``(x * a [+ b]) * post`` (float32) through ``fused_ops.cc``, differentiable in x, a and b:
    ``x`` (B, C, ...), ``a`` and ``b`` (B or 1, C, 1, ...), ``post`` a Python float (1.0: none;
    a multiply by 1 is exact).  RMSNorm's gain ``normalize(x) * g * sqrt(C)`` and the Blocks'
    ``x * (scale + 1) + shift`` (``ms_compat.gain`` / ``apply_scale_shift``): their gradients in a and b
    are sums over the broadcast axes, which MindSpore 2.8's ReduceSum took 2-4 ms each for on 1M
    elements (a fifth of a ``Unet(dim=64)`` train step); here they come out of the backward
    kernel's one pass, with dx."""

    def __init__(self, lib):
        super().__init__()
        bwd = ops.Custom(lib + ':ms_ddpm_affine_bwd', out_shape=lambda dy, x, a, c: (x, a),
                         out_dtype=lambda dy, x, a, c: (x, a), func_type='aot')
        bwd_b = ops.Custom(lib + ':ms_ddpm_affine_bwd_b', out_shape=lambda dy, x, a, b, c: (x, a, b),
                           out_dtype=lambda dy, x, a, b, c: (x, a, b), func_type='aot')

        def bprop(x, a, cfg, out, dout):
            dx, da = bwd(dout, x, a, cfg)
            return dx, da, ops.zeros_like(cfg)

        def bprop_b(x, a, b, cfg, out, dout):
            dx, da, db = bwd_b(dout, x, a, b, cfg)
            return dx, da, db, ops.zeros_like(cfg)

        self.fwd = ops.Custom(lib + ':ms_ddpm_affine_fwd', out_shape=lambda x, a, c: x,
                              out_dtype=lambda x, a, c: x, func_type='aot', bprop=bprop)
        self.fwd_b = ops.Custom(lib + ':ms_ddpm_affine_fwd_b', out_shape=lambda x, a, b, c: x,
                                out_dtype=lambda x, a, b, c: x, func_type='aot', bprop=bprop_b)

    def construct(self, x, a, b, post):
        cfg = Tensor([post], ms.float32)
        if b is None:
            return self.fwd(x, a, cfg)
        return self.fwd_b(x, a, b, cfg)


def _fill_fused():
    if FUSED['softmax'] is None and active():
        if not _fused_cells:
            lib = _state['lib']
            _fused_cells.update(softmax=FusedSoftmax(lib), silu=FusedSiLU(lib), normalize=FusedNormalize(lib),
                                matmul=FusedMatmul(lib), adam=FusedAdam(lib), affine=FusedAffine(lib))
        FUSED.update(_fused_cells)
