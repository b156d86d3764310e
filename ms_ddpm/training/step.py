"""The train step every Trainer twin shares: ``value_and_grad`` of the diffusion loss over
``gradient_accumulate_every`` micro-batches (each loss a mean over its own batch, divided
by the accumulation, as the reference's ``accelerator.backward(loss / accum)``), the
data-parallel all-reduce, ``clip_grad_norm_``, ``Adam`` with torch's update and, with
mixed precision, ``mindspore.amp.DynamicLossScaler`` -- one ``ms.jit`` graph.

Micro-batches are passed as tuples, so they may differ in size: the short last batch of an
epoch next to a full one is trained on like any other (one compilation per size pattern).
"""

import numpy as np
import mindspore as ms
from mindspore import nn, ops, Parameter, Tensor

from ms_ddpm.ms_compat import fused_adam

__all__ = ['Adam', 'grad_global_norm', 'clip_grad_norm_', 'build_train_step', 'TrainStep']


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
        self.float32 = all(p.dtype == ms.float32 for p in self.parameters)   # the fused update's case

    @ms.jit   # one compiled update even when called from PyNative code (~150 tensors x 8 ops)
    def construct(self, gradients):
        step = self.state_step + 1.
        ops.assign(self.state_step, step)
        bias_correction1 = 1. - ops.pow(Tensor(self.beta1, ms.float64), step)
        bias_correction2 = 1. - ops.pow(Tensor(self.beta2, ms.float64), step)
        step_size = (self.lr / bias_correction1).astype(ms.float32)
        bias_correction2_sqrt = ops.sqrt(bias_correction2).astype(ms.float32)
        fused = fused_adam()
        if fused is not None and self.float32:    # the fast CPU path: one kernel per parameter, same roundings
            cfg = ops.stack([Tensor(1. - self.beta1, ms.float32), Tensor(self.beta2, ms.float32),
                             Tensor(1. - self.beta2, ms.float32), Tensor(self.eps, ms.float32), step_size,
                             bias_correction2_sqrt])
            for grad, param, exp_avg, exp_avg_sq in zip(gradients, self.parameters, self.exp_avg, self.exp_avg_sq):
                new_param, new_exp_avg, new_exp_avg_sq = fused(grad.astype(param.dtype), param, exp_avg, exp_avg_sq, cfg)
                ops.assign(exp_avg, new_exp_avg)
                ops.assign(exp_avg_sq, new_exp_avg_sq)
                ops.assign(param, new_param)
            return True
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


def build_train_step(net, opt, params, max_grad_norm, accum, offset = False, coin = False, scaler = None,
                     world = 1, jit = True, call = None, n_extra = 0):
    """``step(imgs, times, noises, offsets, coins, scale, shares) -> (loss, grad norm, finite)``.

    ``imgs``/``times``/``noises``/``offsets``: tuples of ``accum`` tensors (one per
    micro-batch, sizes may differ); ``coins``/``shares``: (accum,) tensors; ``scale``: the
    loss scale.  ``net(img, times, 'mean', noise, None, offset_noise, self_cond_coin)`` is the
    diffusion model's forward, or ``call(net, img, times, noise, offset_noise, coin)`` where
    given (the other processes' keyword forwards, ``ms_ddpm.training.draws.forward_kwargs``).  ``share`` = (its images / the batch's) * world, so the
    all-reduced mean over processes is the batch mean.  ``n_extra`` > 0: ``step(..., extras)``
    with ``extras`` a tuple (per micro-batch) of ``n_extra`` tensors passed on to ``call``
    (classifier-free guidance: the keep mask and the batch's classes)."""
    from mindspore import amp as ms_amp
    max_norm = float(max_grad_norm)
    add = ops.HyperMap()
    all_reduce = ops.AllReduce() if world > 1 else None

    def loss_fn(img, times, noise, offset_noise, self_cond_coin, scale, share):
        if call is not None:
            loss = call(net, img, times, noise, offset_noise, self_cond_coin)
        else:
            loss = net(img, times, 'mean', noise, None, offset_noise if offset else None, self_cond_coin if coin else None)
        if world > 1:
            loss = loss * share
        loss = loss / accum
        return loss * scale, loss

    def loss_fn_extra(img, times, noise, offset_noise, self_cond_coin, scale, share, extra):
        if n_extra == 2:
            loss = call(net, img, times, noise, offset_noise, self_cond_coin, extra[0], extra[1])
        else:
            loss = call(net, img, times, noise, offset_noise, self_cond_coin, extra[0])
        if world > 1:
            loss = loss * share
        loss = loss / accum
        return loss * scale, loss

    grad_fn = ms.value_and_grad(loss_fn, None, params, has_aux = True)
    grad_fn_extra = ms.value_and_grad(loss_fn_extra, None, params, has_aux = True) if n_extra else None

    def train_step(imgs, times, noises, offsets, coins, scale, shares, extras = ()):
        total = ops.zeros((), ms.float32)
        grads = None
        for a in range(accum):
            if n_extra > 0:
                (_, loss), g = grad_fn_extra(imgs[a], times[a], noises[a], offsets[a], coins[a], scale, shares[a],
                                             extras[a])
            else:
                (_, loss), g = grad_fn(imgs[a], times[a], noises[a], offsets[a], coins[a], scale, shares[a])
            grads = g if grads is None else add(ops.add, grads, g)
            total = total + loss
        if world > 1:
            reduced = ()
            for g in grads:
                reduced = reduced + (all_reduce(g) / world,)
            grads = reduced
            total = all_reduce(total) / world
        if scaler is not None:
            grads = scaler.unscale(grads)
            finite = ms_amp.all_finite(grads)
            grads, norm = clip_grad_norm_(grads, max_norm)
            if finite:
                opt(grads if jit else ms.mutable(grads))
            scaler.adjust(finite)
            return total, norm, finite
        grads, norm = clip_grad_norm_(grads, max_norm)
        # PyNative: Adam's own ms.jit sees a tuple of new constant tensors each step and recompiles
        # (measured ~7-20 s a step on a tiny Unet); mutable makes them graph inputs (one compile)
        opt(grads if jit else ms.mutable(grads))
        return total, norm, ops.ones((), ms.bool_)

    return ms.jit(train_step) if jit else train_step


def _times(t):
    """Integer timesteps as int64 (GaussianDiffusion's), continuous times and sigmas as float32."""
    t = np.asarray(t)
    return t.astype(np.float32) if np.issubdtype(t.dtype, np.floating) else t.astype(np.int64)


class TrainStep:
    """One optimiser step of a Trainer twin, from NumPy micro-batches and their draws.

    ``__call__(batches, draws, bounds, world)``: ``batches`` the ``accum`` NumPy micro-batches
    (this process's share), ``draws`` their draws (already this process's share: dicts of
    ``times``, ``noise``[, ``offset_noise``, ``coin``]), ``bounds`` ``(lo, hi, global size)``
    of each share.  Returns ``(loss, grad norm, finite)`` as Python values.  The compiled step
    is built once per (accum, offset, coin) and kept in ``steps``."""

    def __init__(self, net, opt, params, max_grad_norm, scaler = None, world = 1, jit = True, call_for = None,
                 extra_keys = ()):
        self.net, self.opt, self.params = net, opt, params
        self.extra_keys = tuple(extra_keys)     # draws-dict keys passed to the forward after the common ones
        self.max_grad_norm, self.scaler, self.world, self.jit = max_grad_norm, scaler, world, jit
        self.call_for = call_for        # (offset, coin) -> the forward call, or None: GaussianDiffusion's positional one
        self.steps = {}

    def fn(self, accum, offset, coin):
        key = (accum, offset, coin)
        if key not in self.steps:
            call = self.call_for(offset, coin) if self.call_for is not None else None
            self.steps[key] = build_train_step(self.net, self.opt, self.params, self.max_grad_norm, accum, offset, coin,
                                               self.scaler, self.world, self.jit, call, len(self.extra_keys))
        return self.steps[key]

    def __call__(self, batches, draws, bounds, offset = False, coin = False):
        accum = len(batches)
        imgs = tuple(ms.Tensor(np.ascontiguousarray(b, dtype = np.float32)) for b in batches)
        times = tuple(ms.Tensor(_times(d['times'])) for d in draws)
        noises = tuple(ms.Tensor(np.asarray(d['noise'], dtype = np.float32)) for d in draws)
        offsets = tuple(ms.Tensor(np.asarray(d['offset_noise'], dtype = np.float32) if offset
                                  else np.zeros(np.shape(d['noise'])[:2], np.float32)) for d in draws)
        coins = ms.Tensor(np.array([d['coin'] if coin else 1. for d in draws], dtype = np.float32))
        shares = ms.Tensor(np.array([(hi - lo) * self.world / g for lo, hi, g in bounds], dtype = np.float32))
        scale = self.scaler.scale_value.value() if self.scaler is not None else ms.Tensor(1., ms.float32)
        # tuples of tensors are constants of a graph unless marked mutable (then one compilation
        # per pattern of shapes, not one per step)
        imgs, times, noises, offsets = (ms.mutable(t) for t in (imgs, times, noises, offsets))
        step = self.fn(accum, offset, coin)
        if self.extra_keys:
            extras = ms.mutable(tuple(tuple(ms.Tensor(np.asarray(d[k])) for k in self.extra_keys) for d in draws))
            loss, norm, finite = step(imgs, times, noises, offsets, coins, scale, shares, extras)
        else:
            loss, norm, finite = step(imgs, times, noises, offsets, coins, scale, shares)
        return float(loss.asnumpy()), float(norm.asnumpy()), bool(finite.asnumpy())
