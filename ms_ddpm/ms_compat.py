"""Every difference between PyTorch and MindSpore that ms_ddpm has to paper over lives here.

The model files (``denoising_diffusion_pytorch.py``, ``attend.py``) then read like the
reference line for line.  Each helper names the PyTorch call it stands for.

Notes (MindSpore 2.8 CPU; see ../shared/notes/platform.md):
- ``mint`` and ``einsum`` are not available on CPU, so einsums are written as matmuls.
- ``nn.Conv2d`` defaults to ``pad_mode='same'`` without bias; ``nn.GELU`` to the tanh form.
- MindSpore initialisers differ from PyTorch's; ``Conv2d``/``Linear`` here initialise the
  way ``torch.nn.Conv2d``/``torch.nn.Linear`` do (kaiming-uniform(a=sqrt(5)) weights,
  uniform(+-1/sqrt(fan_in)) biases).
"""

import math
import os

import numpy as np
import mindspore as ms
from mindspore import nn, ops, Parameter, Tensor
from mindspore.common.initializer import initializer, HeUniform, Uniform, Normal, One
from . import fastconv as _fastconv

__all__ = [
    'Module', 'Sequential', 'ModuleList', 'Identity', 'Conv2d', 'Linear', 'GELU', 'SiLU', 'Sigmoid', 'Dropout', 'NearestUpsample2x', 'PixelUnshuffle2x',
    'PRECISE_TRANSCENDENTALS', 'exp', 'log', 'expm1', 'tanh', 'cos', 'sigmoid', 'softmax', 'pow_scalar', 'rdiv', 'float32_unary', 'linear',
    'normalize', 'chunk', 'split', 'cat', 'heads_split', 'heads_merge', 'matmul_nn', 'matmul_nt', 'matmul_tn', 'einsum_bjhw_bjchw',
    'ones_parameter', 'randn_parameter', 'buffer_parameter', 'name_parameters_by_path', 'float64_linspace', 'float32_linspace', 'float64_sigmoid',
    'compiled_step', 'in_graph', 'sampling_draws', 'take_draw', 'save_checkpoint', 'ParameterUpdater', 'torch_pow_scalar', 'call_positional', 'positional_parameters',
    'Conv1d', 'NearestUpsample1d', 'normalize1d', 'heads_split1d', 'heads_merge1d', 'SqueezeLast', 'UnsqueezeLast', 'is_tensor', 'tree_map', 'tree_flatten', 'repeat_batch',
    'TorchBatchNorm2d', 'TorchConv2d', 'MaxPool2d', 'max_pool2d', 'avg_pool2d', 'AdaptiveAvgPool2d1x1', 'interpolate_bilinear',
    'ConvSame', 'sin', 'pad_ones_channel', 'interpolate_half', 'interpolate_double',
    'dirac_', 'heads_split_nc', 'heads_merge_nd', 'interpolate_half_axes', 'interpolate_double_axes',
    'repaint_mask', 'log_softmax_select', 'input_gradient',
    'tan', 'LayerNorm', 'PatchConvTranspose2d', 'PixelShuffle', 'SpaceToDepth', 'PatchesChannelsLast', 'ChannelsFirst',
    'heads_split_tokens', 'heads_merge_tokens', 'kaiming_uniform_repeated',
]

Module = nn.Cell
Sequential = nn.SequentialCell
ModuleList = nn.CellList
Identity = nn.Identity

# MindSpore 2.8's CPU float32 exp (and so sigmoid, SiLU, softmax) is a fast approximation
# with up to ~4e-6 relative error (~30 ulp; torch's is < 1 ulp).  Through a deep U-Net that
# alone pushes the output's relative error past 1e-6.  ms_ddpm therefore evaluates these
# transcendental ops in float64 and rounds once to float32 (cost: a few percent of a U-Net
# forward).  Set MS_DDPM_FAST_MATH=1 to use MindSpore's float32 kernels instead.
PRECISE_TRANSCENDENTALS = os.environ.get('MS_DDPM_FAST_MATH', '0') in ('', '0', 'false', 'False')


def _up(x):
    """float32 -> float64 (float16/bfloat16 -> float32) for an accurately rounded result."""
    if not PRECISE_TRANSCENDENTALS:
        return x
    if x.dtype == ms.float32:
        return x.astype(ms.float64)
    if x.dtype in (ms.float16, ms.bfloat16):
        return x.astype(ms.float32)
    return x


def exp(x):
    """``torch.exp``, correctly rounded (see PRECISE_TRANSCENDENTALS)."""
    return ops.exp(_up(x)).astype(x.dtype)


def softmax(x, dim):
    """``x.softmax(dim=dim)``.  Along the last axis MindSpore's float32 kernel uses its fast exp
    (up to ~30 ulp off), so there it is evaluated in float64 and rounded once (see
    PRECISE_TRANSCENDENTALS).  Along any other axis (LinearAttention's ``q.softmax(dim=-2)``)
    MindSpore 2.8's float32 kernel already computes like torch's: measured within ~2e-8
    relative of torch's result, with the same worst case (~23 ulp) against the exact value,
    at half the cost of the float64 route; so it is used as is there.  On the fast CPU path
    (``fastconv.FUSED``) float32 inputs take one fused float32 kernel instead, with a 1-ulp exp,
    as torch's CPU kernel computes it."""
    fused = _fastconv.FUSED['softmax']
    if fused is not None and x.dtype == ms.float32:
        return fused(x, dim % x.ndim)
    if PRECISE_TRANSCENDENTALS and dim not in (-1, x.ndim - 1):
        return ops.softmax(x, axis=dim)
    return ops.softmax(_up(x), axis=dim).astype(x.dtype)


class SiLU(nn.Cell):
    """``torch.nn.SiLU()``: ``x * sigmoid(x)``, evaluated as one correctly rounded op."""

    def construct(self, x):
        fused = _fastconv.FUSED['silu']         # the fast CPU path's fused float32 kernel
        if fused is not None and x.dtype == ms.float32:
            return fused(x)
        y = _up(x)
        return (y * ops.sigmoid(y)).astype(x.dtype)


def _torch_like_bias(fan_in):
    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.
    return Uniform(scale=bound)


def Conv2d(in_channels, out_channels, kernel_size, padding=0, bias=True):
    """``torch.nn.Conv2d(in, out, k, padding=p, bias=...)`` (stride 1) with PyTorch's init."""
    fan_in = in_channels * kernel_size * kernel_size
    kwargs = dict(pad_mode='pad', padding=padding) if padding else dict(pad_mode='valid')
    return _conv2d_cell(
        _fast_conv(2, 1, padding), in_channels, out_channels, kernel_size, has_bias=bias,
        weight_init=HeUniform(negative_slope=math.sqrt(5)),
        bias_init=_torch_like_bias(fan_in) if bias else None,
        **kwargs)


# === fast CPU convolutions (ms_ddpm.fastconv, issue 18) ========================================
# With MS_DDPM_CPU_CONV=onednn (or fastconv.set_enabled(True), the commands' --fast-cpu) on a CPU
# target, the conv layers below (Conv2d, Conv1d, TorchConv2d, ConvSame) built from then on run
# their float32 forward and backward through ms_ddpm.fastconv's oneDNN direct convolutions (the
# kernels torch runs) instead of MindSpore's im2col + GEMM.  Same parameters, names and shapes;
# the bias goes into the kernels (added in the forward, reduced in the backward-weights), as
# torch's CPU convolution does.  Other dtypes, other targets, or the path not buildable:
# MindSpore's own kernels.


def _fast_conv(nsp, stride, padding):
    """A ``fastconv.FastConv`` cell for this configuration when the oneDNN path is active, else None."""
    return _fastconv.conv_op(nsp, stride, padding)


class _FastConv2d(nn.Conv2d):
    """``nn.Conv2d`` (the same parameters) whose float32 forward runs the oneDNN kernel."""

    def __init__(self, fast, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fast = fast

    def construct(self, x):
        if x.dtype == ms.float32:
            return self.fast(x, self.weight, self.bias if self.has_bias else None)
        return super().construct(x)


def _conv2d_cell(fast, *args, **kwargs):
    return _FastConv2d(fast, *args, **kwargs) if fast is not None else nn.Conv2d(*args, **kwargs)

# === end of fast CPU convolutions (issue 18) ====================================================


def Linear(in_features, out_features, bias=True):
    """``torch.nn.Linear`` with PyTorch's init (weight shape ``(out, in)`` as in torch)."""
    return nn.Dense(
        in_features, out_features, has_bias=bias,
        weight_init=HeUniform(negative_slope=math.sqrt(5)),
        bias_init=_torch_like_bias(in_features) if bias else None)


def GELU():
    """``torch.nn.GELU()``: the exact erf form (MindSpore defaults to the tanh approximation)."""
    return nn.GELU(approximate=False)


def Dropout(p=0.):
    """``torch.nn.Dropout(p)``."""
    return nn.Dropout(p=p)


def ones_parameter(shape, name):
    """``nn.Parameter(torch.ones(shape))``."""
    return Parameter(initializer(One(), shape, ms.float32), name=name)


def randn_parameter(shape, name, requires_grad=True):
    """``nn.Parameter(torch.randn(shape), requires_grad=...)``."""
    return Parameter(initializer(Normal(sigma=1.0), shape, ms.float32), name=name,
                     requires_grad=requires_grad)


class NearestUpsample2x(nn.Cell):
    """``torch.nn.Upsample(scale_factor=2, mode='nearest')``: every pixel repeated 2x2 (exact)."""

    def construct(self, x):
        b, c, h, w = x.shape
        x = ops.reshape(x, (b, c, h, 1, w, 1))
        x = ops.broadcast_to(x, (b, c, h, 2, w, 2))
        return ops.reshape(x, (b, c, h * 2, w * 2))


class PixelUnshuffle2x(nn.Cell):
    """``Rearrange('b c (h p1) (w p2) -> b (c p1 p2) h w', p1=2, p2=2)``."""

    def construct(self, x):
        b, c, h, w = x.shape
        x = ops.reshape(x, (b, c, h // 2, 2, w // 2, 2))
        x = ops.transpose(x, (0, 1, 3, 5, 2, 4))
        return ops.reshape(x, (b, c * 4, h // 2, w // 2))


def normalize(x, dim=1, eps=1e-12):
    """``torch.nn.functional.normalize(x, dim=dim)``: ``x / max(||x||_2, eps)``
    (``ops.L2Normalize`` would use eps 1e-4 and a different formula).

    Over the channels of a float32 NCHW tensor (RMSNorm) the sum of squares is a matmul with a
    row of ones: on MindSpore 2.8 CPU 2-3x faster than ``ops.sum`` over axis 1 (a strided
    reduction), and it adds in the order torch's norm does (bit-identical to
    ``F.normalize`` in nearly every shape measured, else within one rounding).  On the fast CPU
    path (``fastconv.FUSED``) float32 inputs take one fused kernel each way."""
    fused = _fastconv.FUSED['normalize']
    if fused is not None and x.dtype == ms.float32 and eps == 1e-12:
        return fused(x, dim % x.ndim)
    if dim == 1 and x.ndim == 4 and x.dtype == ms.float32:
        b, c, h, w = x.shape
        sum_sq = ops.matmul(ops.ones((1, c), x.dtype), ops.reshape(x * x, (b, c, h * w)))
        norm = ops.sqrt(ops.reshape(sum_sq, (b, 1, h, w)))
    else:
        norm = ops.sqrt(ops.sum(x * x, dim, keepdim=True))
    return x / ops.clamp(norm, min=eps)


def _per_channel(x, p):
    """Is ``p`` a float32 (B or 1, C, 1, ...) against ``x`` (B, C, ...), as the fused affine kernel takes it?"""
    if p.dtype != ms.float32 or p.ndim != x.ndim or x.ndim < 2 or p.shape[1] != x.shape[1]:
        return False
    if p.shape[0] != 1 and p.shape[0] != x.shape[0]:
        return False
    for n in p.shape[2:]:
        if n != 1:
            return False
    return True


def gain(x, g, scale=None):
    """``x * g * scale`` (RMSNorm's ``normalize(x) * self.g * self.scale``; ``scale`` a Python
    float or None): ``g`` of shape (1, C, 1, ...), a gain per channel.  On the fast CPU path
    (``fastconv.FUSED['affine']``) float32 inputs take one fused kernel each way, with the same
    roundings forward; its backward gives dx and g's gradient (the sum over every axis but the
    channels, a 2-4 ms ReduceSum per call on MindSpore 2.8's CPU for 1M elements) in one pass."""
    fused = _fastconv.FUSED['affine']
    if fused is not None and x.dtype == ms.float32 and _per_channel(x, g):
        return fused(x, g, None, 1.0 if scale is None else float(scale))
    x = x * g
    return x if scale is None else x * scale


def apply_scale_shift(x, scale, shift):
    """``x * (scale + 1) + shift``: the Blocks' time-conditioned modulation, ``scale`` and ``shift``
    of shape (B, C, 1, ...).  On the fast CPU path float32 inputs take one fused kernel each way
    (``fastconv.FUSED['affine']``, as ``gain``): the same roundings forward; the gradients of
    scale and shift (sums over the spatial axes) come out of the backward's one pass."""
    fused = _fastconv.FUSED['affine']
    if fused is not None and x.dtype == ms.float32 and _per_channel(x, scale) and _per_channel(x, shift):
        return fused(x, scale + 1, shift, 1.0)
    return x * (scale + 1) + shift


def chunk(x, chunks, dim=1):
    """``x.chunk(chunks, dim=dim)`` for a dimension that divides evenly."""
    # not ops.split: its axis check is a generator expression that GRAPH mode fails to
    # compile in some graphs (NameError: name 'axis' is not defined, MindSpore 2.8)
    n = x.shape[dim] // chunks
    out = ()
    for i in range(chunks):
        out = out + (ops.narrow(x, dim, i * n, n),)
    return out


def cat(tensors, dim):
    """``torch.cat(tensors, dim=dim)``."""
    return ops.cat(tensors, dim)


def heads_split(t, heads, channels_last):
    """``rearrange(t, 'b (h c) x y -> b h (x y) c')`` if channels_last
    else ``rearrange(t, 'b (h c) x y -> b h c (x y)')``."""
    b, hc, x, y = t.shape
    t = ops.reshape(t, (b, heads, hc // heads, x * y))
    return ops.transpose(t, (0, 1, 3, 2)) if channels_last else t


def heads_merge(t, x, y, channels_last):
    """``rearrange(t, 'b h (x y) d -> b (h d) x y')`` if channels_last
    else ``rearrange(t, 'b h c (x y) -> b (h c) x y')``."""
    if channels_last:
        t = ops.transpose(t, (0, 1, 3, 2))
    b, h, d, _ = t.shape
    return ops.reshape(t, (b, h * d, x, y))


def _fused_matmul(a, b):
    """The fast CPU path's batched matmul cell when it applies (float32, same leading dims), else None."""
    fused = _fastconv.FUSED['matmul']
    if fused is not None and a.dtype == ms.float32 and b.dtype == ms.float32 and a.ndim == b.ndim \
            and a.shape[:-2] == b.shape[:-2]:
        return fused
    return None


def fused_adam():
    """The fast CPU path's one-pass Adam update cell (``fastconv.FUSED['adam']``) while it is on,
    else None; ``training.Adam`` reads it when it traces (as softmax / SiLU do)."""
    return _fastconv.FUSED['adam']


def matmul_nn(a, b):
    """``a @ b`` (``torch.matmul``; on the fast CPU path oneDNN's sgemm, its gradients too)."""
    fused = _fused_matmul(a, b)
    if fused is not None:
        return fused(a, b, 'nn')
    return ops.matmul(a, b)


def matmul_nt(a, b):
    """``einsum('... i d, ... j d -> ... i j', a, b)``: ``a @ b^T``."""
    fused = _fused_matmul(a, b)
    if fused is not None:
        return fused(a, b, 'nt')
    return ops.matmul(a, ops.swapaxes(b, -1, -2))


def matmul_tn(a, b):
    """``einsum('... d i, ... d j -> ... i j', a, b)``: ``a^T @ b``."""
    fused = _fused_matmul(a, b)
    if fused is not None:
        return fused(a, b, 'tn')
    return ops.matmul(ops.swapaxes(a, -1, -2), b)


def name_parameters_by_path(cell):
    """Give every parameter its full attribute path as name (``downs.0.0.block1.proj.weight``),
    i.e. the PyTorch state-dict key.  MindSpore otherwise names a parameter after the
    nearest container, so ``downs.0.0...`` and ``ups.0.0...`` would both be ``0.0...``,
    which GRAPH mode and ``save_checkpoint`` reject or confuse."""
    for path, param in cell.parameters_and_names():
        param.name = path
    return cell


# --- schedules and buffers (GaussianDiffusion) -------------------------------------------

def float64_linspace(start, end, steps):
    """``torch.linspace(start, end, steps, dtype=torch.float64)`` with torch's CPU formula
    (first half from ``start``, second half from ``end``), in NumPy float64."""
    return _torch_linspace(start, end, steps, np.float64)


def float32_linspace(start, end, steps):
    """``torch.linspace(start, end, steps)`` (float32), same formula; used for DDIM times,
    which the reference truncates to int, so they must match to the last bit."""
    return _torch_linspace(start, end, steps, np.float32)


def _torch_linspace(start, end, steps, dtype):
    start, end = dtype(start), dtype(end)
    if steps == 1:
        return np.array([start], dtype=dtype)
    step = (end - start) / dtype(steps - 1)
    idx = np.arange(steps)
    halfway = steps // 2
    out = np.empty(steps, dtype=dtype)
    out[:halfway] = start + step * idx[:halfway].astype(dtype)
    out[halfway:] = end - step * (steps - idx[halfway:] - 1).astype(dtype)
    return out


def float64_sigmoid(x):
    """``torch.sigmoid`` on float64 values (``1 / (1 + exp(-x))``)."""
    return 1. / (1. + np.exp(-np.asarray(x, dtype=np.float64)))


def buffer_parameter(value, name):
    """A reference ``register_buffer(name, val.to(torch.float32))``: a float64 array rounded
    once to float32, held in a non-trainable Parameter so it belongs to the model's state."""
    return Parameter(Tensor(np.asarray(value, dtype=np.float64).astype(np.float32)), name=name, requires_grad=False)


# --- compiled steps in a host loop -----------------------------------------------------------

def compiled_step(fn):
    """``ms.jit(fn)`` for a step called from a host loop (the sampling loops), returning once
    the step's outputs are computed.

    MindSpore 2.8 (CPU) launches a compiled graph asynchronously.  When a PyNative op (the
    loop's ``randn`` draw of the next chunk of noise, or any other host op) is launched
    while that graph still runs, the two contend for the cores: measured on ``Unet(dim=64)``,
    batch 4, 10 DDIM steps, the process burned 8-12 CPU-s instead of 3.5 and ran 2-3x slower.
    ``ms.runtime.synchronize()`` and ``Tensor.data_sync`` did not help; reading the result
    (``asnumpy``) does, so the step's first output is read before returning.  Torch's eager
    loop is synchronous too, so nothing is lost against it."""
    compiled = ms.jit(fn)

    def run(*args):
        out = compiled(*args)
        (out[0] if isinstance(out, tuple) else out).asnumpy()
        return out
    return run


from mindspore.ops.primitive import constexpr as _constexpr   # noqa: E402


def _probe():
    return 0


@_constexpr(check=False)
def _is_none(fn):
    return fn is None


def in_graph():
    """True while MindSpore compiles the code (GRAPH mode / ``ms.jit``), False in PyNative
    (the trick of ``mindspore.common.api._run_in_jit``: a function reaches a constexpr as None
    only inside a graph)."""
    return _is_none(_probe)


# --- the randn draws of a sampling loop ------------------------------------------------------

def sampling_draws(noise, count, shape, chunk_values=1 << 23):
    """Iterator over a sampling loop's ``count`` randn draws of ``shape``, each as
    ``(noises, i)``: the draw is ``noises[i]``, taken inside the compiled step.  Supplied
    draws (``noise``, checked: ``(count, *shape)``) are one tensor of all of them; fresh ones
    are drawn in chunks of equal size (up to ``chunk_values`` float32 values), one host op per
    chunk: a PyNative op per step costs ~3 ms on MindSpore 2.8 CPU (a quarter of a small
    U-Net's DDPM step)."""
    if noise is None:
        per = max(1, min(count, chunk_values // max(1, int(np.prod(shape)))))
        for start in range(0, count, per):
            chunk = ops.randn((per, *shape), dtype = ms.float32)
            for j in range(min(per, count - start)):
                yield chunk, ms.Tensor(j, ms.int64)
        return
    if isinstance(noise, ms.Tensor):
        noise = noise.asnumpy()   # a fresh tensor: a view passed into a compiled step fails there
    noise = ms.Tensor(np.asarray(noise, dtype = np.float32))
    if tuple(noise.shape) != (count, *shape):
        raise ValueError(f'noise must have shape {(count, *shape)} (every draw of the loop, in order), got {tuple(noise.shape)}')
    for i in range(count):
        yield noise, ms.Tensor(i, ms.int64)


def take_draw(draw):
    """The draw ``noises[i]`` of ``(noises, i)`` itself (outside a compiled step)."""
    noises, i = draw
    return ops.gather(noises, i, 0)


# --- checkpoints ---------------------------------------------------------------------------

def save_checkpoint(items, path, append_dict=None):
    """``mindspore.save_checkpoint(items, path, append_dict=...)`` to exactly ``path``:
    MindSpore appends ``.ckpt`` to a name that does not end with it (an atomic writer's
    temporary does not) and makes the file read-only (0o400); here it is written beside
    ``path`` under a ``.ckpt`` name, made writable and renamed onto ``path``."""
    path = str(path)
    side = path if path.endswith('.ckpt') else path + '.ckpt'
    try:
        ms.save_checkpoint(items, side, append_dict=append_dict, crc_check=True)   # crc_num trailer: checked on read
        os.chmod(side, 0o600)
        if side != path:
            os.replace(side, path)
    except BaseException:
        if side != path and os.path.exists(side):
            os.remove(side)
        raise
    return path


# --- torch's in-place scalar arithmetic (ms_ddpm.ema) ------------------------------------------

_lerp = ops.MultitypeFuncGraph('ema_lerp')


@_lerp.register('Tensor', 'Tensor', 'Tensor', 'Tensor')
def _lerp_small(coeff, token, tgt, src):
    """``tgt.lerp_(src, w)`` for ``w < 0.5`` as torch's CPU kernel computes it,
    ``fma(w, end - start, start)``: ``coeff`` = w in float64, one rounding at the end."""
    diff = (src - tgt).astype(ms.float64)                 # end - start, in float32 like torch
    ops.assign(tgt, (ops.depend(tgt, token).astype(ms.float64) + coeff * diff).astype(tgt.dtype))
    return True


_lerp_big = ops.MultitypeFuncGraph('ema_lerp_big')


@_lerp_big.register('Tensor', 'Tensor', 'Tensor', 'Tensor')
def _lerp_large(coeff, token, tgt, src):
    """... and for ``w >= 0.5``: ``fma(w - 1, end - start, end)``; ``coeff`` = w - 1."""
    diff = (src - tgt).astype(ms.float64)
    ops.assign(tgt, (ops.depend(src, token).astype(ms.float64) + coeff * diff).astype(tgt.dtype))
    return True


_copy = ops.MultitypeFuncGraph('ema_copy')


@_copy.register('Tensor', 'Tensor', 'Tensor')
def _copy_one(token, tgt, src):
    ops.assign(tgt, ops.depend(src, token))
    return True


class ParameterUpdater(nn.Cell):
    """``tgt.lerp_(src, w)`` / ``tgt.copy_(src)`` on two tuples of parameters, in place, as
    torch's CPU kernels compute them (MindSpore has no FMA op: the product of two float32
    numbers is exact in float64, so the update is done in float64 and rounded once)."""

    def __init__(self, tgt, src):
        super().__init__()
        self.tgt, self.src = tuple(tgt), tuple(src)
        self.hyper_map = ops.HyperMap()

    TOKEN = Tensor(0, ms.int32)    # the dummy input of ``copy`` (see there)

    def lerp_small(self, coeff, token):
        return self.hyper_map(ops.partial(_lerp, coeff, token), self.tgt, self.src)

    def lerp_large(self, coeff, token):
        return self.hyper_map(ops.partial(_lerp_big, coeff, token), self.tgt, self.src)

    def copy(self, token):
        # ``token``: a graph without inputs is run once and then replayed from cache by
        # MindSpore 2.8, so the copy takes a (dummy) tensor input
        return self.hyper_map(ops.partial(_copy, token), self.tgt, self.src)

    def compiled(self, method):
        """``ms.jit`` of ``method`` (a name) through a plain function (a bound Cell method
        given to ``ms.jit`` directly compiles differently)."""
        fn = getattr(self, method)

        def run(*args):
            return fn(*args)
        return ms.jit(run)


def torch_pow_scalar(base, exp):
    """``float32 tensor ** python float`` as torch's CPU kernel computes it: special cases for
    exponents 2, 3, -2, 0.5, -0.5, -1 in float32, else ``std::pow`` in double, rounded to float32
    (checked against torch for thousands of steps)."""
    f32 = np.float32
    base = f32(base)
    special = {2.: lambda b: b * b, 3.: lambda b: b * b * b, -2.: lambda b: f32(1) / (b * b),
               .5: lambda b: np.sqrt(b), -.5: lambda b: f32(1) / np.sqrt(b), -1.: lambda b: f32(1) / b}
    if float(exp) in special:
        return f32(special[float(exp)](base))
    return f32(np.float64(base) ** np.float64(exp))


# === 1D (denoising_diffusion_pytorch_1d, issue 12) ===========================================
# torch.nn.Conv1d and the 1D shapes of Upsample / normalize / heads for ms_ddpm's
# denoising_diffusion_pytorch_1d twin.  MindSpore's own nn.Conv1d is a Conv2D inside and stores
# its weight as (out, in, 1, k); these keep torch's (out, in, k), so the parameters carry
# torch's names and shapes and a state dict loads without reshaping.

class Conv1d(nn.Cell):
    """``torch.nn.Conv1d(in, out, k, stride, padding, bias=...)`` (zero padding, no dilation or
    groups) with PyTorch's init: ``weight`` (out, in, k) kaiming-uniform(a=sqrt(5)) (fan_in =
    in * k), ``bias`` (out,) uniform(+-1/sqrt(fan_in)).  Runs as MindSpore's Conv2D on a
    height-1 image (what ``mindspore.nn.Conv1d`` does), the weight viewed as (out, in, 1, k),
    through the functional ``ops.conv2d`` with its bias (PyNative: ~4x faster per call than the
    ``ops.Conv2D`` primitive + ``BiasAdd`` on MindSpore 2.8 CPU, bit-identical results)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        fan_in = in_channels * kernel_size
        self.weight = Parameter(initializer(HeUniform(negative_slope=math.sqrt(5)),
                                            (out_channels, in_channels, kernel_size), ms.float32), name='weight')
        self.bias = Parameter(initializer(_torch_like_bias(fan_in), (out_channels,), ms.float32),
                              name='bias') if bias else None
        self.pad = dict(pad_mode='pad', padding=(0, padding)) if padding else dict(pad_mode='valid')
        self.fast = _fast_conv(1, stride, padding)   # issue 18: the oneDNN path when active

    def construct(self, x):
        if self.fast is not None and x.dtype == ms.float32:
            return self.fast(x, self.weight, self.bias)
        y = ops.conv2d(ops.expand_dims(x, 2), ops.expand_dims(self.weight, 2), self.bias, stride=(1, self.stride), **self.pad)
        return ops.squeeze(y, 2)


class NearestUpsample1d(nn.Cell):
    """``torch.nn.Upsample(scale_factor=2, mode='nearest')`` on (b, c, n): every element
    repeated twice (exact)."""

    def construct(self, x):
        b, c, n = x.shape
        x = ops.broadcast_to(ops.reshape(x, (b, c, n, 1)), (b, c, n, 2))
        return ops.reshape(x, (b, c, n * 2))


def normalize1d(x, eps=1e-12):
    """``torch.nn.functional.normalize(x, dim=1)`` on (b, c, n): the sum of squares over the
    channels as a matmul with a row of ones (as ``normalize`` does for NCHW: faster than a
    strided ``ops.sum`` over axis 1 on MindSpore 2.8 CPU, and summed in torch's order; the fast
    CPU path's fused kernel when on)."""
    fused = _fastconv.FUSED['normalize']
    if fused is not None and x.dtype == ms.float32 and eps == 1e-12:
        return fused(x, 1)
    b, c, n = x.shape
    norm = ops.sqrt(ops.matmul(ops.ones((1, c), x.dtype), x * x))     # (b, 1, n)
    return x / ops.clamp(norm, min=eps)


def heads_split1d(t, heads):
    """``rearrange(t, 'b (h c) n -> b h c n', h=heads)``."""
    b, hc, n = t.shape
    return ops.reshape(t, (b, heads, hc // heads, n))


def heads_merge1d(t):
    """``rearrange(t, 'b h c n -> b (h c) n')``."""
    b, h, c, n = t.shape
    return ops.reshape(t, (b, h * c, n))
# === end of 1D =================================================================================


# === other diffusion processes (issue 13) ===================================================
# learned_gaussian_diffusion, weighted_objective_gaussian_diffusion, continuous_time_gaussian_
# diffusion, v_param_continuous_time_gaussian_diffusion, elucidated_diffusion, xm.
# Measured on MindSpore 2.8 CPU against torch 2.14.1 (100k float32 values): ops.log is off by
# up to ~5 ulp and ops.tanh by up to ~1e-4 relative (torch: < 1 ulp); so these, and the
# transcendental ops the processes use on their schedules, are evaluated in float64 and
# rounded once to float32 (see PRECISE_TRANSCENDENTALS).

def _precise(op, x):
    return op(_up(x)).astype(x.dtype)


def log(x):
    """``torch.log``, correctly rounded."""
    return _precise(ops.log, x)


def expm1(x):
    """``torch.special.expm1``, correctly rounded."""
    return _precise(ops.expm1, x)


def tanh(x):
    """``torch.tanh``, correctly rounded (MindSpore's float32 tanh is off by up to ~1e-4)."""
    return _precise(ops.tanh, x)


def cos(x):
    """``torch.cos``, correctly rounded."""
    return _precise(ops.cos, x)


def sigmoid(x):
    """``torch.sigmoid``, correctly rounded."""
    return _precise(ops.sigmoid, x)


class Sigmoid(nn.Cell):
    """``torch.nn.Sigmoid()`` (correctly rounded)."""

    def construct(self, x):
        return sigmoid(x)


class UnsqueezeLast(nn.Cell):
    """``Rearrange('... -> ... 1')``."""

    def construct(self, x):
        return ops.expand_dims(x, -1)


class SqueezeLast(nn.Cell):
    """``Rearrange('... 1 -> ...')``."""

    def construct(self, x):
        return ops.squeeze(x, -1)


def linear(x, weight, bias):
    """``torch.nn.functional.linear(x, weight, bias)``: ``x @ weight.T + bias``."""
    return ops.matmul(x, ops.swapaxes(weight, 0, 1)) + bias


def split(x, sizes, dim):
    """``x.split(sizes, dim=dim)`` for a tuple of sizes (a tuple of narrowed views; not
    ops.split, see ``chunk``)."""
    out = ()
    start = 0
    for n in sizes:
        out = out + (ops.narrow(x, dim, start, n),)
        start = start + n
    return out


def einsum_bjhw_bjchw(weights, xs):
    """``einsum('b j h w, b j c h w -> b c h w', weights, xs)``: a weighted sum over j."""
    out = weights[:, 0:1] * xs[:, 0]
    for j in range(1, xs.shape[1]):
        out = out + weights[:, j:j + 1] * xs[:, j]
    return out


def rdiv(scalar, x):
    """``python_scalar / tensor``: torch computes it as ``x.reciprocal() * scalar`` (two
    roundings, ``Tensor.__rdiv__``), not as one division."""
    return (1. / x) * scalar


def pow_scalar(x, exponent):
    """``tensor ** python_number`` as torch's CPU kernel computes it: exponents 2, 3 as
    products, 0.5 / -0.5 as sqrt / 1 / sqrt, -1 / -2 as reciprocals (one or two float32
    roundings, as in torch); any other exponent through float64 ``pow``, rounded once
    (torch's ``std::pow``/Sleef ``powf`` is within 1 ulp of that)."""
    e = float(exponent)
    if e == 2.:
        return x * x
    if e == 3.:
        return x * x * x
    if e == .5:
        return ops.sqrt(x)
    if e == -.5:
        return 1. / ops.sqrt(x)
    if e == -1.:
        return 1. / x
    if e == -2.:
        return 1. / (x * x)
    return ops.pow(_up(x), e).astype(x.dtype)


def repeat_batch(x, k):
    """``repeat(x, 'b ... -> (b k) ...', k=k)``: every sample k times in a row."""
    return ops.repeat_interleave(x, k, 0)


def is_tensor(x):
    """``torch.is_tensor``."""
    return isinstance(x, (Tensor, ms.Tensor))


def tree_flatten(tree):
    """The leaves of nested tuples / lists / dicts, as a tuple (``torch.utils._pytree.
    tree_flatten``'s first result, for the containers ``XMWrapper`` sees).  Written with tuple
    concatenation and plain loops, so that it also compiles (GRAPH mode)."""
    if isinstance(tree, (tuple, list)):
        out = ()
        for t in tree:
            out = out + tree_flatten(t)
        return out
    if isinstance(tree, dict):
        out = ()
        for k in tree:
            out = out + tree_flatten(tree[k])
        return out
    return (tree,)


def tree_map(fn, tree, *extra):
    """``torch.utils._pytree.tree_map(lambda t: fn(t, *extra), tree)`` over nested tuples /
    lists / dicts (the extra arguments instead of a closure: GRAPH mode compiles that)."""
    if isinstance(tree, (tuple, list)):
        out = ()
        for t in tree:
            out = out + (tree_map(fn, t, *extra),)
        return out if isinstance(tree, tuple) else list(out)
    if isinstance(tree, dict):
        out = {}
        for k in tree:
            out[k] = tree_map(fn, tree[k], *extra)
        return out
    return fn(tree, *extra)


def positional_parameters(fn):
    """``(name, default)`` of ``fn``'s positional-or-keyword parameters, for ``call_positional``;
    None if ``fn`` takes ``*args`` or ``**kwargs`` (then call it with keywords)."""
    import inspect
    out = ()
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.KEYWORD_ONLY):
            return None
        out = out + ((p.name, p.default),)
    return out


def call_positional(cell, params, args, kwargs, overrides=()):
    """``cell(*args, **kwargs, **dict(overrides))`` with the keywords turned into positional
    arguments by ``params`` (``positional_parameters(cell.construct)``).  MindSpore 2.8 GRAPH
    mode cannot pass on a dict of keyword arguments built inside the graph as ``**kwargs``,
    nor store a string into such a dict (both fail at run time with "'tuple' object does not
    support item assignment"); ``overrides`` are (name, constant) pairs that win over
    ``kwargs`` (XMWrapper's ``loss_reduction = 'none'``)."""
    if params is None:
        kw = {}
        for k in kwargs:
            kw[k] = kwargs[k]
        for name, value in overrides:
            kw[name] = value
        return cell(*args, **kw)
    call = tuple(args)
    for i in range(len(args), len(params)):
        name, value = params[i]
        if name in kwargs:
            value = kwargs[name]
        for o_name, o_value in overrides:
            if o_name == name:
                value = o_value
        call = call + (value,)
    return cell(*call)


def float32_unary(fn, x):
    """A torch float32 scalar op (``log``, ``exp``, ``expm1`` on a 0-d tensor or a host
    schedule) reproduced on the host: evaluated in float64, rounded once to float32."""
    return np.asarray(fn(np.asarray(x, dtype=np.float32).astype(np.float64))).astype(np.float32)
# === end of other diffusion processes (issue 13) ============================================


# === magnitude-preserving U-Nets and simple diffusion (issue 15) ==============================
# karras_unet, karras_unet_1d, karras_unet_3d, simple_diffusion.  Their convs are functional
# (weights normalised on the fly), so what they need here is torch's F.conv*d(padding='same')
# on torch-shaped weights, F.interpolate(mode='bilinear' / 'trilinear', align_corners=False)
# for exact halving / doubling, and correctly rounded sin.

def sin(x):
    """``torch.sin``, correctly rounded (float64, rounded once)."""
    return _precise(ops.sin, x)


class ConvSame(nn.Cell):
    """``F.conv{1,2,3}d(x, weight, padding='same')`` (stride 1, no bias) for an odd kernel size
    ``k``, the weight torch-shaped ((out, in, k), (out, in, k, k), (out, in, k, k, k)) and given
    at call time (the magnitude-preserving convs normalise it on the fly).  The primitive is
    built here from constants: the functional ``ops.conv2d`` reads its channel count from the
    weight's shape, which GRAPH mode (2.8) fails to fold after the weight's reshapes.  1D runs
    as a Conv2D on a height-1 image (what ``mindspore.nn.Conv1d`` does)."""

    def __init__(self, dims, out_channels, k):
        super().__init__()
        self.dims = dims
        p = k // 2
        pad = dict(pad_mode='valid') if k == 1 else dict(pad_mode='pad', pad=p if dims != 1 else (0, 0, p, p))
        if dims == 3:
            self.conv = ops.Conv3D(out_channels, k, **pad)
        else:
            self.conv = ops.Conv2D(out_channels, k if dims == 2 else (1, k), **pad)
        self.fast = _fast_conv(dims, 1, p)   # issue 18: the oneDNN path when active

    def construct(self, x, weight):
        if self.fast is not None and x.dtype == ms.float32:
            return self.fast(x, weight)
        if self.dims == 1:
            return ops.squeeze(self.conv(ops.expand_dims(x, 2), ops.expand_dims(weight, 2)), 2)
        return self.conv(x, weight)


def pad_ones_channel(x):
    """``F.pad(x, (0, 0, ..., 1, 0), value=1.)``: a channel of ones in front of dim 1."""
    shape = (x.shape[0], 1) + tuple(x.shape[2:])
    return ops.cat((ops.ones(shape, x.dtype), x), 1)


def _halve(x, axis):
    """Linear interpolation to half the length along ``axis`` (align_corners=False): every
    output is ``0.5 * x[2i] + 0.5 * x[2i + 1]`` (torch's lambdas for an exact halving)."""
    n = x.shape[axis] // 2
    shape = tuple(x.shape[:axis]) + (n, 2) + tuple(x.shape[axis + 1:])
    x = ops.reshape(x, shape)
    a = ops.squeeze(ops.narrow(x, axis + 1, 0, 1), axis + 1)
    b = ops.squeeze(ops.narrow(x, axis + 1, 1, 1), axis + 1)
    return a * 0.5 + b * 0.5


def _double(x, axis):
    """Linear interpolation to twice the length along ``axis`` (align_corners=False, torch's
    source index ``(i + 0.5) / 2 - 0.5`` clamped at 0): even outputs
    ``0.25 * x[i-1] + 0.75 * x[i]`` (the first ``1 * x[0] + 0 * x[1]``), odd outputs
    ``0.75 * x[i] + 0.25 * x[i+1]`` (the last ``0.75 * x[-1] + 0.25 * x[-1]``)."""
    n = x.shape[axis]
    first = ops.narrow(x, axis, 0, 1)
    last = ops.narrow(x, axis, n - 1, 1)
    if n > 1:
        lo = ops.narrow(x, axis, 0, n - 1)
        hi = ops.narrow(x, axis, 1, n - 1)
        even = ops.cat((first * 1. + ops.narrow(x, axis, 1, 1) * 0., lo * 0.25 + hi * 0.75), axis)
        odd = ops.cat((lo * 0.75 + hi * 0.25, last * 0.75 + last * 0.25), axis)
    else:
        even = first * 1. + first * 0.
        odd = last * 0.75 + last * 0.25
    out = ops.stack((even, odd), axis + 1)
    shape = tuple(x.shape[:axis]) + (2 * n,) + tuple(x.shape[axis + 1:])
    return ops.reshape(out, shape)


def interpolate_half(x):
    """``F.interpolate(x, [s // 2 for s in spatial], mode='bilinear' | 'trilinear')`` for even
    spatial sizes.  Interpolates the last axis first, as torch's kernel nests its sums."""
    # unrolled by hand: GRAPH mode (2.8) makes a loop's axis a variable, which ops reject
    if x.ndim == 5:
        return _halve(_halve(_halve(x, 4), 3), 2)
    if x.ndim == 4:
        return _halve(_halve(x, 3), 2)
    return _halve(x, 2)


def interpolate_double(x):
    """``F.interpolate(x, [s * 2 for s in spatial], mode='bilinear' | 'trilinear')``."""
    if x.ndim == 5:
        return _double(_double(_double(x, 4), 3), 2)
    if x.ndim == 4:
        return _double(_double(x, 3), 2)
    return _double(x, 2)
# === end of magnitude-preserving U-Nets and simple diffusion (issue 15) =======================


# === KarrasUnet1D and KarrasUnet3D (issue 15: karras_unet_1d, karras_unet_3d) ==================
# What the 1D and 3D magnitude-preserving U-Nets need beyond the issue-15 section above (whose
# ConvSame(1 | 3, ...) and interpolate_half / interpolate_double they use): torch's
# nn.init.dirac_ on a torch-shaped weight, the head splits of rearrange 'b (h c) ... -> b h (...) c'
# for any number of trailing axes, and trilinear halving / doubling along a chosen subset of
# (t, h, w) (KarrasUnet3D's downsample_types: torch interpolates the other axes with weights 1 and
# 0, which is exact, so only the chosen axes are interpolated, the last axis first as before).

def dirac_(param):
    """``torch.nn.init.dirac_(weight)`` (groups 1) on a (out, in, *k) Parameter: zeros, and 1 at
    ``[d, d, k0 // 2, ...]`` for ``d < min(out, in)``."""
    shape = tuple(param.shape)
    w = np.zeros(shape, np.float32)
    centre = tuple(k // 2 for k in shape[2:])
    for d in range(min(shape[0], shape[1])):
        w[(d, d) + centre] = 1.
    param.set_data(Tensor(w, param.dtype))
    return param


def heads_split_nc(t, heads):
    """``rearrange(t, 'b (h c) ... -> b h (...) c', h=heads)``."""
    b, hc = t.shape[0], t.shape[1]
    n = math.prod(tuple(t.shape[2:]))
    t = ops.reshape(t, (b, heads, hc // heads, n))
    return ops.transpose(t, (0, 1, 3, 2))


def heads_merge_nd(t):
    """``rearrange(t, 'b h n d -> b (h d) n')``."""
    b, h, n, d = t.shape
    return ops.reshape(ops.transpose(t, (0, 1, 3, 2)), (b, h * d, n))


def interpolate_half_axes(x, config):
    """``F.interpolate(x, (t // ft, h // fh, w // fw), mode='trilinear')`` on (b, c, t, h, w),
    ``f = 2 if config[i] else 1`` for ``config = (frame, height, width)``."""
    if config[2]:
        x = _halve(x, 4)
    if config[1]:
        x = _halve(x, 3)
    if config[0]:
        x = _halve(x, 2)
    return x


def interpolate_double_axes(x, config):
    """``F.interpolate(x, (t * ft, h * fh, w * fw), mode='trilinear')``, as above."""
    if config[2]:
        x = _double(x, 4)
    if config[1]:
        x = _double(x, 3)
    if config[0]:
        x = _double(x, 2)
    return x
# === end of KarrasUnet1D and KarrasUnet3D (issue 15) =============================================


# === FID InceptionV3 (pytorch-fid, ms_ddpm.fid_evaluation, issue 16) ==========================
# pytorch-fid's network is torchvision's BasicConv2d (Conv2d without bias + BatchNorm2d(eps=1e-3)
# + ReLU) in the FIDInceptionA/C/E blocks; pooling with torch's padding semantics.

class TorchBatchNorm2d(nn.Cell):
    """``torch.nn.BatchNorm2d`` in eval mode, with torch's parameter names (``weight``,
    ``bias``, ``running_mean``, ``running_var``, ``num_batches_tracked``; MindSpore's own is
    gamma/beta/moving_*) and torch's CPU inference formula ``x * alpha + beta`` with
    ``alpha = weight / sqrt(running_var + eps)``, ``beta = bias - running_mean * alpha``."""

    def __init__(self, num_features, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = Parameter(Tensor(np.ones(num_features, np.float32)), name='weight')
        self.bias = Parameter(Tensor(np.zeros(num_features, np.float32)), name='bias')
        self.running_mean = Parameter(Tensor(np.zeros(num_features, np.float32)), name='running_mean', requires_grad=False)
        self.running_var = Parameter(Tensor(np.ones(num_features, np.float32)), name='running_var', requires_grad=False)
        self.num_batches_tracked = Parameter(Tensor(np.array(0, np.int64)), name='num_batches_tracked', requires_grad=False)

    def construct(self, x):
        alpha = self.weight / ops.sqrt(self.running_var + self.eps)
        beta = self.bias - self.running_mean * alpha
        return x * alpha.reshape(1, -1, 1, 1) + beta.reshape(1, -1, 1, 1)


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def TorchConv2d(in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
    """``torch.nn.Conv2d(in, out, k, stride=s, padding=p, bias=...)`` with rectangular kernels
    and paddings (``(1, 7)``, ``(0, 3)``), weight ``(out, in, kh, kw)`` as torch stores it."""
    kh, kw = _pair(kernel_size)
    ph, pw = _pair(padding)
    fan_in = in_channels * kh * kw
    kwargs = dict(pad_mode='pad', padding=(ph, ph, pw, pw)) if (ph or pw) else dict(pad_mode='valid')
    return _conv2d_cell(_fast_conv(2, _pair(stride), (ph, pw)), in_channels, out_channels, (kh, kw), stride=stride, has_bias=bias,
                     weight_init=HeUniform(negative_slope=math.sqrt(5)),
                     bias_init=_torch_like_bias(fan_in) if bias else None, **kwargs)


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """``F.max_pool2d`` (padding counts as -inf, floor mode): bit-identical."""
    return ops.max_pool2d(x, kernel_size, stride if stride is not None else kernel_size, padding)


class MaxPool2d(nn.Cell):
    """``torch.nn.MaxPool2d(kernel_size, stride)``."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def construct(self, x):
        return max_pool2d(x, self.kernel_size, self.stride, self.padding)


def avg_pool2d(x, kernel_size, stride=None, padding=0, count_include_pad=True):
    """``F.avg_pool2d`` incl. ``count_include_pad=False`` (TensorFlow's average pool, which
    pytorch-fid's FIDInception blocks use): bit-identical."""
    return ops.avg_pool2d(x, kernel_size, stride if stride is not None else kernel_size, padding,
                          count_include_pad=count_include_pad)


class AdaptiveAvgPool2d1x1(nn.Cell):
    """``torch.nn.AdaptiveAvgPool2d(output_size=(1, 1))``: the mean over height and width."""

    def construct(self, x):
        return ops.mean(x, (2, 3), keep_dims=True)


def _bilinear_matrix(n_in, n_out):
    """The (n_out, n_in) interpolation matrix of ``F.interpolate(mode='bilinear',
    align_corners=False)`` along one axis, with torch's float32 source index and weights:
    ``real = max(scale * (i + 0.5) - 0.5, 0)``, ``lambda1 = real - floor(real)``."""
    scale = np.float32(n_in / n_out)
    real = np.maximum(scale * (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5), np.float32(0))
    i0 = np.minimum(real.astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    l1 = (real - i0.astype(np.float32)).astype(np.float32)
    l0 = (np.float32(1) - l1).astype(np.float32)
    m = np.zeros((n_out, n_in), np.float32)
    rows = np.arange(n_out)
    m[rows, i0] += l0
    m[rows, i1] += l1
    return m


def interpolate_bilinear(x, size):
    """``F.interpolate(x, size=size, mode='bilinear', align_corners=False)`` on NCHW: two
    products with the per-axis interpolation matrices (width first, then height, as torch's
    ``h0 * (w0 * x00 + w1 * x01) + h1 * (...)``)."""
    h, w = x.shape[-2], x.shape[-1]
    mh = Tensor(_bilinear_matrix(h, size[0]))
    mw = Tensor(_bilinear_matrix(w, size[1]))
    x = ops.matmul(x, ops.transpose(mw, (1, 0)))
    return ops.matmul(mh, x)
# === end of FID InceptionV3 (issue 16) =========================================================


# === classifier-free guidance (classifier_free_guidance, issue 14) ==========================

class Embedding(nn.Cell):
    """``torch.nn.Embedding(num, dim)``: a ``weight`` of shape (num, dim) drawn N(0, 1) as torch
    does (MindSpore's ``nn.Embedding`` names it ``embedding_table``); a lookup is a gather."""

    def __init__(self, num_embeddings, embedding_dim):
        super().__init__()
        self.weight = Parameter(initializer(Normal(sigma=1.0), (num_embeddings, embedding_dim), ms.float32), name='weight')

    def construct(self, idx):
        return ops.gather(self.weight, idx, 0)


def std_unbiased(x):
    """``torch.std(x, dim=(1, ..., n-1), keepdim=True)`` (Bessel-corrected, as torch's default)."""
    b = x.shape[0]
    flat = x.reshape(b, -1)
    n = flat.shape[1]
    mean = flat.mean(1, keep_dims=True)
    var = ops.sum(ops.square(flat - mean), 1, keepdim=True) / (n - 1)
    return ops.sqrt(var).reshape((b,) + (1,) * (x.ndim - 1))


def project_float64(x, y):
    """The reference's ``project(x, y)``: per sample, the parts of ``x`` parallel and orthogonal
    to ``y``, computed in float64 (as the reference does) and cast back."""
    b = x.shape[0]
    dtype = x.dtype
    xf = x.reshape(b, -1).astype(ms.float64)
    yf = y.reshape(b, -1).astype(ms.float64)
    norm = ops.sqrt(ops.sum(yf * yf, 1, keepdim=True))
    unit = yf / ops.clamp(norm, min=1e-12)
    parallel = ops.sum(xf * unit, 1, keepdim=True) * unit
    orthogonal = xf - parallel
    return parallel.reshape(x.shape).astype(dtype), orthogonal.reshape(x.shape).astype(dtype)

# === end of classifier-free guidance (issue 14) ===============================================


# === classifier guidance and RePaint (guided_diffusion, repaint; issue 14) =====================

def repaint_mask(mask):
    """The reference's ``mask.to(x.device)``: a RePaint mask (1 = known pixel) as a float32
    Tensor (a NumPy array or a bool/int Tensor is accepted); None stays None."""
    if mask is None:
        return None
    if not isinstance(mask, ms.Tensor):
        mask = ms.Tensor(np.asarray(mask))
    return mask.astype(ms.float32)


def log_softmax_select(logits, y):
    """``F.log_softmax(logits, dim=-1)[range(len(logits)), y.view(-1)]``: each row's log
    probability of its label (a gather instead of torch's advanced indexing)."""
    log_probs = ops.log_softmax(logits, axis=-1)
    idx = y.reshape(-1, 1).astype(ms.int32)
    return ops.gather_elements(log_probs, 1, idx).reshape(-1)


def input_gradient(fn, x):
    """``torch.autograd.grad(fn(x_in), x_in)[0]`` with ``x_in = x.detach().requires_grad_()``
    under ``torch.enable_grad()``: MindSpore differentiates the function (``ms.grad``)."""
    return ms.grad(fn)(ops.stop_gradient(x))

# === end of classifier guidance and RePaint (issue 14) =========================================


# === simple diffusion (simple_diffusion: UViT and its GaussianDiffusion, issue 15) =============
# What UViT needs beyond the layers above: torch.nn.LayerNorm with torch's names and eps,
# nn.ConvTranspose2d for the unpatchify (kernel = stride = patch size, torch's (in, out, p, p)
# weight), nn.PixelShuffle and the 'b c (h p1) (w p2) -> b (c p1 p2) h w' rearrange for any
# factor, the token head split of 'b n (h d) -> b h n d', and a correctly rounded tan (the
# cosine log-SNR schedule; MindSpore's float32 tan is not correctly rounded, torch's Sleef
# tanf is within 1 ulp).

def tan(x):
    """``torch.tan``, correctly rounded (float64, rounded once)."""
    return _precise(ops.tan, x)


class LayerNorm(nn.Cell):
    """``torch.nn.LayerNorm(dim)`` over the last axis: ``weight`` (ones) and ``bias`` (zeros)
    named as torch names them (MindSpore's own: gamma / beta) and torch's eps 1e-5 (MindSpore's
    default 1e-7); the biased variance, as torch."""

    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = Parameter(Tensor(np.ones(dim, np.float32)), name='weight')
        self.bias = Parameter(Tensor(np.zeros(dim, np.float32)), name='bias')

    def construct(self, x):
        mean = ops.mean(x, -1, keep_dims=True)
        xc = x - mean
        var = ops.mean(xc * xc, -1, keep_dims=True)
        return xc / ops.sqrt(var + self.eps) * self.weight + self.bias


class PatchConvTranspose2d(nn.Cell):
    """``torch.nn.ConvTranspose2d(in, out, p, stride=p)`` (kernel = stride: the patches do not
    overlap, so every output pixel is one dot product over the input channels) as a matmul and
    a rearrange; ``weight`` (in, out, p, p) and ``bias`` (out,) as torch stores them, with
    torch's init (kaiming-uniform(a=sqrt(5)) with fan_in = out * p * p, bias uniform(+-1/sqrt(fan_in)))."""

    def __init__(self, in_channels, out_channels, patch_size):
        super().__init__()
        p = patch_size
        self.in_channels, self.out_channels, self.patch_size = in_channels, out_channels, p
        fan_in = out_channels * p * p
        self.weight = Parameter(initializer(HeUniform(negative_slope=math.sqrt(5)), (in_channels, out_channels, p, p),
                                            ms.float32), name='weight')
        self.bias = Parameter(initializer(_torch_like_bias(fan_in), (out_channels,), ms.float32), name='bias')

    def construct(self, x):
        b, c, h, w = x.shape
        o, p = self.out_channels, self.patch_size
        y = ops.matmul(ops.transpose(x, (0, 2, 3, 1)), ops.reshape(self.weight, (c, o * p * p)))   # (b, h, w, o p p)
        y = ops.transpose(ops.reshape(y, (b, h, w, o, p, p)), (0, 3, 1, 4, 2, 5))
        return ops.reshape(y, (b, o, h * p, w * p)) + ops.reshape(self.bias, (1, o, 1, 1))


class PixelShuffle(nn.Cell):
    """``torch.nn.PixelShuffle(factor)``: 'b (c r1 r2) h w -> b c (h r1) (w r2)' (exact)."""

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def construct(self, x):
        b, c, h, w = x.shape
        f = self.factor
        x = ops.reshape(x, (b, c // (f * f), f, f, h, w))
        x = ops.transpose(x, (0, 1, 4, 2, 5, 3))
        return ops.reshape(x, (b, c // (f * f), h * f, w * f))


class SpaceToDepth(nn.Cell):
    """``Rearrange('b c (h p1) (w p2) -> b (c p1 p2) h w', p1=factor, p2=factor)`` (exact)."""

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def construct(self, x):
        b, c, h, w = x.shape
        f = self.factor
        x = ops.reshape(x, (b, c, h // f, f, w // f, f))
        x = ops.transpose(x, (0, 1, 3, 5, 2, 4))
        return ops.reshape(x, (b, c * f * f, h // f, w // f))


class PatchesChannelsLast(nn.Cell):
    """``Rearrange('b c (h p1) (w p2) -> b h w (c p1 p2)', p1=p, p2=p)`` (exact)."""

    def __init__(self, patch_size):
        super().__init__()
        self.patch_size = patch_size

    def construct(self, x):
        b, c, h, w = x.shape
        p = self.patch_size
        x = ops.reshape(x, (b, c, h // p, p, w // p, p))
        x = ops.transpose(x, (0, 2, 4, 1, 3, 5))
        return ops.reshape(x, (b, h // p, w // p, c * p * p))


class TokenAxis(nn.Cell):
    """``Rearrange('b d -> b 1 d')`` (FeedForward's time conditioning, broadcast over the tokens)."""

    def construct(self, x):
        return ops.expand_dims(x, 1)


class ChannelsFirst(nn.Cell):
    """``Rearrange('b h w c -> b c h w')`` (exact)."""

    def construct(self, x):
        return ops.transpose(x, (0, 3, 1, 2))


def heads_split_tokens(t, heads):
    """``rearrange(t, 'b n (h d) -> b h n d', h=heads)``."""
    b, n, hd = t.shape
    return ops.transpose(ops.reshape(t, (b, n, heads, hd // heads)), (0, 2, 1, 3))


def heads_merge_tokens(t):
    """``rearrange(t, 'b h n d -> b n (h d)')``."""
    b, h, n, d = t.shape
    return ops.reshape(ops.transpose(t, (0, 2, 1, 3)), (b, n, h * d))


def kaiming_uniform_repeated(param, factor_squared):
    """The reference's ``Upsample.init_conv_``: ``kaiming_uniform_`` (a = 0, fan_in) on a
    (o // r, i, h, w) weight, each output filter repeated r = factor ** 2 times in a row
    (``repeat(w, 'o ... -> (o r) ...')``), written into the (o, i, h, w) ``param``."""
    o, i, h, w = param.shape
    base = initializer(HeUniform(negative_slope=0.), (o // factor_squared, i, h, w), ms.float32).init_data().asnumpy()
    param.set_data(Tensor(np.repeat(base, factor_squared, axis=0), param.dtype))
    return param
# === end of simple diffusion (issue 15) ==========================================================
