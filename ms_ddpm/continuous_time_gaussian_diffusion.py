"""MindSpore twin of ``denoising_diffusion_pytorch/continuous_time_gaussian_diffusion.py`` (2.3.4).

Continuous time (Kingma et al., variational diffusion models): times uniform in [0, 1], a
log-SNR schedule (linear, cosine, or learned by a monotonic network), noise prediction,
optional min-SNR loss weight; sampling in ``num_sample_steps`` steps from t = 1 to t = 0.

Beyond the reference: every random draw can be supplied (``times=``, ``noise=`` for the loss;
``noise=`` of shape ``(num_sample_steps, *shape)`` for sampling: ``noise[0]`` the starting
image, ``noise[k]`` step k's noise, the last step drawing none), and the sampling step runs
compiled (``ms.jit``) unless ``jit_sampling = False``.
"""

import math

import numpy as np
import mindspore as ms
from mindspore import ops
from tqdm.auto import tqdm

from ms_ddpm.denoising_diffusion_pytorch import GaussianDiffusion
from ms_ddpm.ms_compat import (
    Module, Sequential, Linear, Sigmoid, UnsqueezeLast, SqueezeLast, linear, log as _log, expm1, cos,
    sigmoid, exp, pow_scalar, float32_linspace, float32_unary, compiled_step, name_parameters_by_path,
)

# helpers

def exists(val):
    return val is not None

def default(val, d):
    if exists(val):
        return val
    return d() if callable(d) else d

# normalization functions

def normalize_to_neg_one_to_one(img):
    return img * 2 - 1

def unnormalize_to_zero_to_one(t):
    return (t + 1) * 0.5

# diffusion helpers

def right_pad_dims_to(x, t):
    padding_dims = x.ndim - t.ndim
    if padding_dims <= 0:
        return t
    return t.reshape(tuple(t.shape) + (1,) * padding_dims)

# neural net helpers

class Residual(Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def construct(self, x):
        return x + self.fn(x)

class MonotonicLinear(Module):
    def __init__(self, *args, **kwargs):
        super().__init__()
        self.net = Linear(*args, **kwargs)

    def construct(self, x):
        return linear(x, ops.abs(self.net.weight), ops.abs(self.net.bias))

# continuous schedules

# equations are taken from https://openreview.net/attachment?id=2LdBqxc1Yv&name=supplementary_material
# @crowsonkb Katherine's repository also helped here https://github.com/crowsonkb/v-diffusion-jax/blob/master/diffusion/utils.py

# log(snr) that approximates the original linear schedule

def log(t, eps = 1e-20):
    return _log(ops.clamp(t, min = eps))

def beta_linear_log_snr(t):
    return -log(expm1(1e-4 + 10 * pow_scalar(t, 2)))

def alpha_cosine_log_snr(t, s = 0.008):
    return -log(pow_scalar(cos((t + s) / (1 + s) * math.pi * 0.5), -2) - 1, eps = 1e-5)

def float32_beta_linear_log_snr(time):
    """``beta_linear_log_snr(torch.tensor([time])).item()``, in float32 on the host (the
    learned schedule's end points)."""
    t = np.float32(time)
    x = np.float32(np.float32(1e-4) + np.float32(10) * (t * t))
    x = max(float32_unary(np.expm1, x), np.float32(1e-20))
    return float(-float32_unary(np.log, x))

class learned_noise_schedule(Module):
    """ described in section H and then I.2 of the supplementary material for variational ddpm paper """

    def __init__(
        self,
        *,
        log_snr_max,
        log_snr_min,
        hidden_dim = 1024,
        frac_gradient = 1.
    ):
        super().__init__()
        self.slope = log_snr_min - log_snr_max
        self.intercept = log_snr_max

        self.net = Sequential([
            UnsqueezeLast(),                # Rearrange('... -> ... 1')
            MonotonicLinear(1, 1),
            Residual(Sequential([
                MonotonicLinear(1, hidden_dim),
                Sigmoid(),
                MonotonicLinear(hidden_dim, 1)
            ])),
            SqueezeLast(),                  # Rearrange('... 1 -> ...')
        ])

        self.frac_gradient = frac_gradient

    def construct(self, x):
        frac_gradient = self.frac_gradient

        out_zero = self.net(ops.zeros_like(x))
        out_one = self.net(ops.ones_like(x))

        x = self.net(x)

        normed = self.slope * ((x - out_zero) / (out_one - out_zero)) + self.intercept
        return normed * frac_gradient + ops.stop_gradient(normed) * (1 - frac_gradient)

class ContinuousTimeGaussianDiffusion(Module):
    def __init__(
        self,
        model,
        *,
        image_size,
        channels = 3,
        noise_schedule = 'linear',
        num_sample_steps = 500,
        clip_sample_denoised = True,
        learned_schedule_net_hidden_dim = 1024,
        learned_noise_schedule_frac_gradient = 1.,   # between 0 and 1, determines what percentage of gradients go back, so one can update the learned noise schedule more slowly
        min_snr_loss_weight = False,
        min_snr_gamma = 5
    ):
        super().__init__()
        assert model.random_or_learned_sinusoidal_cond
        assert not model.self_condition, 'not supported yet'

        self.model = model

        # image dimensions

        self.channels = channels
        self.image_size = image_size

        # continuous noise schedule related stuff

        if noise_schedule == 'linear':
            self.log_snr = beta_linear_log_snr
        elif noise_schedule == 'cosine':
            self.log_snr = alpha_cosine_log_snr
        elif noise_schedule == 'learned':
            log_snr_max, log_snr_min = [float32_beta_linear_log_snr(time) for time in (0., 1.)]

            self.log_snr = learned_noise_schedule(
                log_snr_max = log_snr_max,
                log_snr_min = log_snr_min,
                hidden_dim = learned_schedule_net_hidden_dim,
                frac_gradient = learned_noise_schedule_frac_gradient
            )
        else:
            raise ValueError(f'unknown noise schedule {noise_schedule}')

        # sampling

        self.num_sample_steps = num_sample_steps
        self.clip_sample_denoised = clip_sample_denoised

        # proposed https://arxiv.org/abs/2303.09556

        self.min_snr_loss_weight = min_snr_loss_weight
        self.min_snr_gamma = min_snr_gamma

        # MindSpore: the sampling step runs as a compiled graph (ms.jit), built on first use

        self.jit_sampling = True
        self._jit_steps = {}

        name_parameters_by_path(self)

    def p_mean_variance(self, x, time, time_next):
        # reviewer found an error in the equation in the paper (missing sigma)
        # following - https://openreview.net/forum?id=2LdBqxc1Yv&noteId=rIQgH0zKsRt

        log_snr = self.log_snr(time)
        log_snr_next = self.log_snr(time_next)
        c = -expm1(log_snr - log_snr_next)

        squared_alpha, squared_alpha_next = sigmoid(log_snr), sigmoid(log_snr_next)
        squared_sigma, squared_sigma_next = sigmoid(-log_snr), sigmoid(-log_snr_next)

        alpha, sigma, alpha_next = ops.sqrt(squared_alpha), ops.sqrt(squared_sigma), ops.sqrt(squared_alpha_next)

        batch_log_snr = ops.broadcast_to(log_snr, (x.shape[0],))   # repeat(log_snr, ' -> b', b = x.shape[0])
        pred_noise = self.model(x, batch_log_snr)

        if self.clip_sample_denoised:
            x_start = (x - sigma * pred_noise) / alpha

            # in Imagen, this was changed to dynamic thresholding
            x_start = ops.clamp(x_start, -1., 1.)

            model_mean = alpha_next * (x * (1 - c) / alpha + c * x_start)
        else:
            model_mean = alpha_next / alpha * (x - c * sigma * pred_noise)

        posterior_variance = squared_sigma_next * c

        return model_mean, posterior_variance

    # sampling related functions

    def _p_sample_step(self, x, time, time_next, noises, i, noise_scale):
        # one step as a pure function of tensors (compiled once); noise_scale is 0 at the last
        # step (time_next == 0), where the reference returns model_mean and draws nothing
        model_mean, model_variance = self.p_mean_variance(x = x, time = time, time_next = time_next)
        noise = ops.gather(noises, i, 0) * noise_scale
        return model_mean + ops.sqrt(model_variance) * noise

    def _step(self, name):
        fn = getattr(self, name)
        if not self.jit_sampling:
            return fn
        if name not in self._jit_steps:
            def step(*args):
                return fn(*args)
            self._jit_steps[name] = compiled_step(step)
        return self._jit_steps[name]

    # the loop's randn draws as GaussianDiffusion makes them: ``(noises, i)`` per draw, supplied
    # ones checked, fresh ones in chunks of up to 32 MiB (one host op per chunk)
    DRAW_CHUNK_VALUES = GaussianDiffusion.DRAW_CHUNK_VALUES
    _draws = GaussianDiffusion._draws
    _take = staticmethod(GaussianDiffusion._take)

    def p_sample(self, x, time, time_next, noise = None):
        time, time_next = float(time), float(time_next)
        last = time_next == 0
        if last:
            noise = ops.zeros_like(x)   # no noise at the last step
        elif noise is None:
            noise = ops.randn(x.shape, dtype = x.dtype)
        return self._step('_p_sample_step')(x, ms.Tensor(np.float32(time)), ms.Tensor(np.float32(time_next)),
                                            ops.expand_dims(noise, 0), ms.Tensor(0, ms.int64),
                                            ms.Tensor(0. if last else 1., ms.float32))

    def p_sample_loop(self, shape, noise = None):
        shape = tuple(shape)
        draws = self._draws(noise, self.num_sample_steps, shape)

        first = next(draws)
        img = self._take(first)
        last = first
        steps = float32_linspace(1., 0., self.num_sample_steps + 1)
        step = self._step('_p_sample_step')

        for i in tqdm(range(self.num_sample_steps), desc = 'sampling loop time step', total = self.num_sample_steps):
            times = steps[i]
            times_next = steps[i + 1]
            is_last = times_next == 0
            last = next(draws) if not is_last else last     # the last step draws nothing (its noise is scaled by 0)
            img = step(img, ms.Tensor(times), ms.Tensor(times_next), *last, ms.Tensor(0. if is_last else 1., ms.float32))

        img = ops.clamp(img, -1., 1.)
        img = unnormalize_to_zero_to_one(img)
        return img

    def sample(self, batch_size = 16, noise = None):
        return self.p_sample_loop((batch_size, self.channels, self.image_size, self.image_size), noise = noise)

    # training related functions - noise prediction

    def q_sample(self, x_start, times, noise = None):
        if noise is None:
            noise = ops.randn(x_start.shape, dtype = x_start.dtype)

        log_snr = self.log_snr(times)

        log_snr_padded = right_pad_dims_to(x_start, log_snr)
        alpha, sigma = ops.sqrt(sigmoid(log_snr_padded)), ops.sqrt(sigmoid(-log_snr_padded))
        x_noised = x_start * alpha + noise * sigma

        return x_noised, log_snr

    def random_times(self, batch_size):
        # times are now uniform from 0 to 1
        return ops.rand((batch_size,), dtype = ms.float32)

    def p_losses(self, x_start, times, noise = None, loss_reduction = 'mean'):
        if noise is None:
            noise = ops.randn(x_start.shape, dtype = x_start.dtype)

        x, log_snr = self.q_sample(x_start = x_start, times = times, noise = noise)
        model_out = self.model(x, log_snr)

        losses = ops.square(model_out - noise)
        losses = losses.reshape(losses.shape[0], -1).mean(1)   # reduce(losses, 'b ... -> b', 'mean')

        if self.min_snr_loss_weight:
            snr = exp(log_snr)
            loss_weight = ops.clamp(snr, max = self.min_snr_gamma) / snr
            losses = losses * loss_weight

        if loss_reduction == 'none':
            return losses

        return losses.mean()

    def construct(self, img, times = None, loss_reduction = 'mean', noise = None):
        # the reference's forward(img, *args, times, loss_reduction, **kwargs) -> p_losses(img, times, ...)
        b, c, h, w = img.shape
        img_size = self.image_size
        if h != img_size or w != img_size:
            raise AssertionError(f'height and width of image must be {img_size}')

        if times is None:
            times = self.random_times(b)
        img = normalize_to_neg_one_to_one(img)
        return self.p_losses(img, times, noise = noise, loss_reduction = loss_reduction)
