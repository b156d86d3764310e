"""MindSpore twin of ``denoising_diffusion_pytorch/v_param_continuous_time_gaussian_diffusion.py`` (2.3.4).

The continuous-time process with the v-parameterisation (cosine log-SNR schedule).  Beyond
the reference: every random draw can be supplied (``times=``, ``noise=``; sampling
``noise=`` of shape ``(num_sample_steps, *shape)``), and the sampling step runs compiled, as
in ``ms_ddpm.continuous_time_gaussian_diffusion`` (whose sampling loop this class shares: the
reference's is the same code).
"""

import math

import mindspore as ms
from mindspore import ops

from ms_ddpm.ms_compat import Module, log as _log, expm1, cos, sigmoid, pow_scalar, name_parameters_by_path
from ms_ddpm import continuous_time_gaussian_diffusion as _ct

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

right_pad_dims_to = _ct.right_pad_dims_to

# continuous schedules

# log(snr) that approximates the original linear schedule

def log(t, eps = 1e-20):
    return _log(ops.clamp(t, min = eps))

def alpha_cosine_log_snr(t, s = 0.008):
    return -log(pow_scalar(cos((t + s) / (1 + s) * math.pi * 0.5), -2) - 1, eps = 1e-5)

class VParamContinuousTimeGaussianDiffusion(Module):
    """
    a new type of parameterization in v-space proposed in https://arxiv.org/abs/2202.00512 that
    (1) allows for improved distillation over noise prediction objective and
    (2) noted in imagen-video to improve upsampling unets by removing the color shifting artifacts
    """

    def __init__(
        self,
        model,
        *,
        image_size,
        channels = 3,
        num_sample_steps = 500,
        clip_sample_denoised = True,
    ):
        super().__init__()
        assert model.random_or_learned_sinusoidal_cond
        assert not model.self_condition, 'not supported yet'

        self.model = model

        # image dimensions

        self.channels = channels
        self.image_size = image_size

        # continuous noise schedule related stuff

        self.log_snr = alpha_cosine_log_snr

        # sampling

        self.num_sample_steps = num_sample_steps
        self.clip_sample_denoised = clip_sample_denoised

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

        pred_v = self.model(x, batch_log_snr)

        # shown in Appendix D in the paper
        x_start = alpha * x - sigma * pred_v

        if self.clip_sample_denoised:
            x_start = ops.clamp(x_start, -1., 1.)

        model_mean = alpha_next * (x * (1 - c) / alpha + c * x_start)

        posterior_variance = squared_sigma_next * c

        return model_mean, posterior_variance

    # sampling related functions (the reference's code is ContinuousTimeGaussianDiffusion's)

    _p_sample_step = _ct.ContinuousTimeGaussianDiffusion._p_sample_step
    _step = _ct.ContinuousTimeGaussianDiffusion._step
    DRAW_CHUNK_VALUES = _ct.ContinuousTimeGaussianDiffusion.DRAW_CHUNK_VALUES
    _draws = _ct.ContinuousTimeGaussianDiffusion._draws
    _take = staticmethod(_ct.ContinuousTimeGaussianDiffusion._take)
    p_sample = _ct.ContinuousTimeGaussianDiffusion.p_sample
    p_sample_loop = _ct.ContinuousTimeGaussianDiffusion.p_sample_loop
    sample = _ct.ContinuousTimeGaussianDiffusion.sample

    # training related functions - noise prediction

    def q_sample(self, x_start, times, noise = None):
        if noise is None:
            noise = ops.randn(x_start.shape, dtype = x_start.dtype)

        log_snr = self.log_snr(times)

        log_snr_padded = right_pad_dims_to(x_start, log_snr)
        alpha, sigma = ops.sqrt(sigmoid(log_snr_padded)), ops.sqrt(sigmoid(-log_snr_padded))
        x_noised = x_start * alpha + noise * sigma

        return x_noised, log_snr, alpha, sigma

    def random_times(self, batch_size):
        return ops.rand((batch_size,), dtype = ms.float32)

    def p_losses(self, x_start, times, noise = None, loss_reduction = 'mean'):
        if noise is None:
            noise = ops.randn(x_start.shape, dtype = x_start.dtype)

        x, log_snr, alpha, sigma = self.q_sample(x_start = x_start, times = times, noise = noise)

        # described in section 4 as the prediction objective, with derivation in Appendix D
        v = alpha * noise - sigma * x_start

        model_out = self.model(x, log_snr)

        losses = ops.square(model_out - v)
        losses = losses.reshape(losses.shape[0], -1).mean(1)   # reduce(losses, 'b ... -> b', 'mean')

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
