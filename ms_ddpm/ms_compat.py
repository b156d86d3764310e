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

__all__ = [
    'Conv2d', 'Linear', 'GELU', 'SiLU', 'Identity', 'Dropout', 'Sequential', 'ModuleList',
    'Module', 'NearestUpsample2x', 'PixelUnshuffle2x', 'normalize', 'chunk', 'cat',
    'ones_parameter', 'randn_parameter', 'heads_split', 'heads_merge', 'softmax',
    'matmul_nt', 'matmul_tn', 'exp', 'sigmoid', 'set_mode', 'name_parameters_by_path',
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


def sigmoid(x):
    """``torch.sigmoid``, correctly rounded (see PRECISE_TRANSCENDENTALS)."""
    return ops.sigmoid(_up(x)).astype(x.dtype)


def softmax(x, dim):
    """``x.softmax(dim=dim)``.  Along the last axis MindSpore's float32 kernel uses its fast exp
    (up to ~30 ulp off), so there it is evaluated in float64 and rounded once (see
    PRECISE_TRANSCENDENTALS).  Along any other axis (LinearAttention's ``q.softmax(dim=-2)``)
    MindSpore 2.8's float32 kernel already computes like torch's: measured within ~2e-8
    relative of torch's result, with the same worst case (~23 ulp) against the exact value,
    at half the cost of the float64 route; so it is used as is there."""
    if PRECISE_TRANSCENDENTALS and dim not in (-1, x.ndim - 1):
        return ops.softmax(x, axis=dim)
    return ops.softmax(_up(x), axis=dim).astype(x.dtype)


class SiLU(nn.Cell):
    """``torch.nn.SiLU()``: ``x * sigmoid(x)``, evaluated as one correctly rounded op."""

    def construct(self, x):
        y = _up(x)
        return (y * ops.sigmoid(y)).astype(x.dtype)


def _torch_like_bias(fan_in):
    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.
    return Uniform(scale=bound)


def Conv2d(in_channels, out_channels, kernel_size, padding=0, bias=True):
    """``torch.nn.Conv2d(in, out, k, padding=p, bias=...)`` (stride 1) with PyTorch's init."""
    fan_in = in_channels * kernel_size * kernel_size
    kwargs = dict(pad_mode='pad', padding=padding) if padding else dict(pad_mode='valid')
    return nn.Conv2d(
        in_channels, out_channels, kernel_size, has_bias=bias,
        weight_init=HeUniform(negative_slope=math.sqrt(5)),
        bias_init=_torch_like_bias(fan_in) if bias else None,
        **kwargs)


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
    ``F.normalize`` in nearly every shape measured, else within one rounding)."""
    if dim == 1 and x.ndim == 4 and x.dtype == ms.float32:
        b, c, h, w = x.shape
        sum_sq = ops.matmul(ops.ones((1, c), x.dtype), ops.reshape(x * x, (b, c, h * w)))
        norm = ops.sqrt(ops.reshape(sum_sq, (b, 1, h, w)))
    else:
        norm = ops.sqrt(ops.sum(x * x, dim, keepdim=True))
    return x / ops.clamp(norm, min=eps)


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


def matmul_nt(a, b):
    """``einsum('... i d, ... j d -> ... i j', a, b)``: ``a @ b^T``."""
    return ops.matmul(a, ops.swapaxes(b, -1, -2))


def matmul_tn(a, b):
    """``einsum('... d i, ... d j -> ... i j', a, b)``: ``a^T @ b``."""
    return ops.matmul(ops.swapaxes(a, -1, -2), b)


def name_parameters_by_path(cell):
    """Give every parameter its full attribute path as name (``downs.0.0.block1.proj.weight``),
    i.e. the PyTorch state-dict key.  MindSpore otherwise names a parameter after the
    nearest container, so ``downs.0.0...`` and ``ups.0.0...`` would both be ``0.0...``,
    which GRAPH mode and ``save_checkpoint`` reject or confuse."""
    for path, param in cell.parameters_and_names():
        param.name = path
    return cell


def set_mode(mode):
    """'pynative' or 'graph' -> ``ms.set_context(mode=...)``."""
    modes = {'pynative': ms.PYNATIVE_MODE, 'graph': ms.GRAPH_MODE}
    if mode not in modes:
        raise ValueError(f'unknown MindSpore execution mode {mode!r}; use one of {sorted(modes)}')
    ms.set_context(mode=modes[mode])


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


# --- optimiser ----------------------------------------------------------------------------

class Adam(nn.Cell):
    """``torch.optim.Adam(params, lr, betas, eps)`` (no weight decay, no amsgrad) with
    PyTorch's update, step for step::

        m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g * g
        p -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    MindSpore's ``nn.Adam``/``experimental.optim.Adam`` use the ApplyAdam kernel, which adds
    eps to ``sqrt(v)`` *before* the bias correction (an effective eps of
    ``eps / sqrt(1 - beta2**t)``, 10x larger at step 1 with beta2 = 0.99): on small gradients
    that changes the update by percents.  The bias corrections are computed in float64 (as
    torch does in Python) and rounded to float32.  Call it with the gradients, in the order of
    ``params``; it compiles in GRAPH mode.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__()
        from mindspore import ParameterTuple
        self.parameters = ParameterTuple(list(params))
        self.exp_avg = self.parameters.clone(prefix='exp_avg', init='zeros')
        self.exp_avg_sq = self.parameters.clone(prefix='exp_avg_sq', init='zeros')
        self.state_step = Parameter(Tensor(0., ms.float64), name='state_step', requires_grad=False)
        self.lr = float(lr)
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.eps = float(eps)
        self.hyper_map = ops.HyperMap()

    @ms.jit   # one compiled update even when called from PyNative code (~150 tensors x 8 ops)
    def construct(self, gradients):
        step = self.state_step + 1.
        ops.assign(self.state_step, step)
        bias_correction1 = 1. - ops.pow(Tensor(self.beta1, ms.float64), step)
        bias_correction2 = 1. - ops.pow(Tensor(self.beta2, ms.float64), step)
        step_size = (self.lr / bias_correction1).astype(ms.float32)
        bias_correction2_sqrt = ops.sqrt(bias_correction2).astype(ms.float32)
        return self.hyper_map(
            ops.partial(_adam_update, Tensor(1. - self.beta1, ms.float32), Tensor(self.beta2, ms.float32),
                        Tensor(1. - self.beta2, ms.float32), Tensor(self.eps, ms.float32), step_size,
                        bias_correction2_sqrt),
            gradients, self.parameters, self.exp_avg, self.exp_avg_sq)


_adam_update = ops.MultitypeFuncGraph('adam_update')


@_adam_update.register('Tensor', 'Tensor', 'Tensor', 'Tensor', 'Tensor', 'Tensor', 'Tensor', 'Tensor', 'Tensor', 'Tensor')
def _adam_update_one(one_minus_beta1, beta2, one_minus_beta2, eps, step_size, bias_correction2_sqrt,
                     grad, param, exp_avg, exp_avg_sq):
    grad = grad.astype(param.dtype)
    m = exp_avg + one_minus_beta1 * (grad - exp_avg)                  # exp_avg.lerp_(grad, 1 - beta1)
    v = exp_avg_sq * beta2 + one_minus_beta2 * grad * grad            # exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2)
    denom = ops.sqrt(v) / bias_correction2_sqrt + eps
    ops.assign(exp_avg, m)
    ops.assign(exp_avg_sq, v)
    ops.assign(param, param - step_size * (m / denom))                # param.addcdiv_(exp_avg, denom, value=-step_size)
    return True


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


# === training helpers (Trainer, issue 6) =====================================================
# torch.nn.utils.clip_grad_norm_ and torchvision.utils.save_image, for ms_ddpm.Trainer.

def grad_global_norm(grads):
    """torch's total 2-norm: the 2-norm of the per-tensor 2-norms (``_foreach_norm``, then
    ``vector_norm(stack(norms))``), in float32.  Compiles in GRAPH mode."""
    norms = ()
    for g in grads:
        norms = norms + (ops.sqrt(ops.reduce_sum(ops.square(g.astype(ms.float32)))),)
    return ops.sqrt(ops.reduce_sum(ops.square(ops.stack(norms))))


def clip_grad_norm_(grads, max_norm):
    """``torch.nn.utils.clip_grad_norm_(params, max_norm)`` on a tuple of gradients:
    ``coef = clamp(max_norm / (total_norm + 1e-6), max=1)``; every gradient is multiplied
    by ``coef`` (also when it is 1, as torch does).  Returns ``(clipped grads, total_norm)``."""
    total_norm = grad_global_norm(grads)
    clip_coef = ops.clamp(max_norm / (total_norm + 1e-6), None, 1.0)
    clipped = ()
    for g in grads:
        clipped = clipped + ((g * clip_coef.astype(g.dtype)),)
    return clipped, total_norm


def make_grid(images, nrow=8, padding=2, pad_value=0.):
    """``torchvision.utils.make_grid`` on a NumPy (B, C, H, W) array (1-channel images are
    repeated to 3 channels, as torchvision does)."""
    images = np.asarray(images, dtype=np.float32)
    if images.shape[1] == 1:
        images = np.concatenate([images] * 3, axis=1)
    n, c, h, w = images.shape
    xmaps = min(nrow, n)
    ymaps = int(math.ceil(float(n) / xmaps))
    height, width = h + padding, w + padding
    grid = np.full((c, height * ymaps + padding, width * xmaps + padding), pad_value, dtype=np.float32)
    k = 0
    for y in range(ymaps):
        for x in range(xmaps):
            if k >= n:
                break
            grid[:, y * height + padding:y * height + padding + h, x * width + padding:x * width + padding + w] = images[k]
            k += 1
    return grid


def to_uint8_image(chw):
    """torchvision's float [0, 1] -> uint8 HWC: ``(x * 255 + 0.5).clamp(0, 255)`` truncated."""
    chw = np.asarray(chw, dtype=np.float32)
    return np.clip(chw * 255 + 0.5, 0, 255).astype(np.uint8).transpose(1, 2, 0)


def chmod_like_new_file(path):
    """The mode ``open(path, 'w')`` would give (0o666 less the umask): mkstemp makes 0o600
    files and ``mindspore.save_checkpoint`` 0o400 ones."""
    import os
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def _atomic_save_pil(image, path, **kw):
    import os
    import tempfile
    path = str(path)
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=d)
    os.close(fd)
    try:
        image.save(tmp, format=os.path.splitext(path)[1][1:].upper().replace('JPG', 'JPEG') or 'PNG', **kw)
        chmod_like_new_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_image(images, path, nrow=8, padding=2):
    """``torchvision.utils.save_image(images, path, nrow)`` for NumPy / MindSpore images in
    [0, 1], written atomically."""
    from PIL import Image
    if hasattr(images, 'asnumpy'):
        images = images.asnumpy()
    _atomic_save_pil(Image.fromarray(to_uint8_image(make_grid(images, nrow=nrow, padding=padding))), path)


def save_gif(frames, path, nrow=8, duration_ms=40, hold_last_ms=1500, scale=1):
    """An animated GIF: ``frames`` is (T, B, C, H, W) in [0, 1] (a denoising trajectory);
    each frame is the grid of the B images at that step, enlarged ``scale`` times (nearest)."""
    from PIL import Image
    if hasattr(frames, 'asnumpy'):
        frames = frames.asnumpy()
    pics = [Image.fromarray(to_uint8_image(make_grid(f, nrow=nrow))) for f in frames]
    if scale > 1:
        pics = [p.resize((p.width * scale, p.height * scale), Image.NEAREST) for p in pics]
    durations = [duration_ms] * (len(pics) - 1) + [hold_last_ms]
    first, rest = pics[0], pics[1:]
    _atomic_save_pil(first, path, save_all=True, append_images=rest, duration=durations, loop=0)
# === end of training helpers =================================================================


# === 1D (denoising_diffusion_pytorch_1d, issue 12) ===========================================
# torch.nn.Conv1d and the 1D shapes of Upsample / normalize / heads for ms_ddpm's
# denoising_diffusion_pytorch_1d twin.  MindSpore's own nn.Conv1d is a Conv2D inside and stores
# its weight as (out, in, 1, k); these keep torch's (out, in, k), so the parameters carry
# torch's names and shapes and a state dict loads without reshaping.

class Conv1d(nn.Cell):
    """``torch.nn.Conv1d(in, out, k, stride, padding, bias=...)`` (zero padding, no dilation or
    groups) with PyTorch's init: ``weight`` (out, in, k) kaiming-uniform(a=sqrt(5)) (fan_in =
    in * k), ``bias`` (out,) uniform(+-1/sqrt(fan_in)).  Runs as MindSpore's Conv2D on a
    height-1 image (what ``mindspore.nn.Conv1d`` does), the weight viewed as (out, in, 1, k)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        fan_in = in_channels * kernel_size
        self.weight = Parameter(initializer(HeUniform(negative_slope=math.sqrt(5)),
                                            (out_channels, in_channels, kernel_size), ms.float32), name='weight')
        self.bias = Parameter(initializer(_torch_like_bias(fan_in), (out_channels,), ms.float32),
                              name='bias') if bias else None
        pad = dict(pad_mode='pad', pad=(0, 0, padding, padding)) if padding else dict(pad_mode='valid')
        self.conv2d = ops.Conv2D(out_channel=out_channels, kernel_size=(1, kernel_size), stride=(1, stride), **pad)
        self.bias_add = ops.BiasAdd()

    def construct(self, x):
        y = self.conv2d(ops.expand_dims(x, 2), ops.expand_dims(self.weight, 2))
        if self.bias is not None:
            y = self.bias_add(y, self.bias)
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
    strided ``ops.sum`` over axis 1 on MindSpore 2.8 CPU, and summed in torch's order)."""
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
