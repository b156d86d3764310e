"""MindSpore twin of ``denoising_diffusion_pytorch/elucidated_diffusion.py`` (2.3.4).

Karras et al., "Elucidating the Design Space of Diffusion-Based Generative Models"
(https://arxiv.org/abs/2206.00364): preconditioned network (Table 1), log-normal training
sigmas, the stochastic sampler (S_churn / S_tmin / S_tmax / S_noise) with its second-order
(Heun) correction, and the DPM++ sampler.

Beyond the reference: every random draw can be supplied -- ``forward(images, sigma=, noise=,
self_cond_coin=)`` (``self_cond_coin`` is the value the reference's ``random()`` returns);
``sample(..., noise=)`` of shape ``(num_sample_steps + 1, *shape)``: ``noise[0]`` the starting
image (before ``* sigmas[0]``), ``noise[k]`` step k's churn noise (before ``* S_noise``);
``sample_using_dpmpp(..., noise=)`` of shape ``(1, *shape)``.  Each sampling step runs compiled
(``ms.jit``) unless ``jit_sampling = False``; the per-step scalars (sigma_hat, the churn
coefficient, the step sizes) are computed on the host in float64 from the float32 schedule,
as the reference computes them in Python, and enter the step as float32 tensors, as torch
casts a Python scalar to the tensor's dtype.
"""

from math import sqrt

import numpy as np
import mindspore as ms
from mindspore import ops
from tqdm.auto import tqdm

from ms_ddpm.denoising_diffusion_pytorch import GaussianDiffusion
from ms_ddpm.ms_compat import (
    Module, log as _log, exp, pow_scalar, rdiv, float32_unary, compiled_step, name_parameters_by_path,
)

# helpers

def exists(val):
    return val is not None

def default(val, d):
    if exists(val):
        return val
    return d() if callable(d) else d

# tensor helpers

def log(t, eps = 1e-20):
    return _log(ops.clamp(t, min = eps))

# normalization functions

def normalize_to_neg_one_to_one(img):
    return img * 2 - 1

def unnormalize_to_zero_to_one(t):
    return (t + 1) * 0.5

def _f32(x):
    return ms.Tensor(np.float32(x))

# networks whose time input is a continuous noise level by construction (no
# random_or_learned_sinusoidal_cond attribute): the Karras U-Net (MPFourierEmbedding)
CONTINUOUS_NOISE_NETS = ('KarrasUnet',)


def takes_continuous_noise_levels(net):
    flag = getattr(net, 'random_or_learned_sinusoidal_cond', None)
    if flag is not None:
        return bool(flag)
    return type(net).__name__ in CONTINUOUS_NOISE_NETS

# main class

class ElucidatedDiffusion(Module):
    def __init__(
        self,
        net,
        *,
        image_size,
        channels = 3,
        num_sample_steps = 32, # number of sampling steps
        sigma_min = 0.002,     # min noise level
        sigma_max = 80,        # max noise level
        sigma_data = 0.5,      # standard deviation of data distribution
        rho = 7,               # controls the sampling schedule
        P_mean = -1.2,         # mean of log-normal distribution from which noise is drawn for training
        P_std = 1.2,           # standard deviation of log-normal distribution from which noise is drawn for training
        S_churn = 80,          # parameters for stochastic sampling - depends on dataset, Table 5 in apper
        S_tmin = 0.05,
        S_tmax = 50,
        S_noise = 1.003,
    ):
        super().__init__()
        # the reference asserts net.random_or_learned_sinusoidal_cond (a Unet must embed continuous
        # times); KarrasUnet embeds continuous noise levels (MPFourierEmbedding) and has no such
        # attribute, so the reference raises AttributeError for it.  The twin keeps the assert for a
        # net that has the attribute and accepts the nets of CONTINUOUS_NOISE_NETS (docs/karras.md)
        assert takes_continuous_noise_levels(net)
        self.self_condition = net.self_condition

        self.net = net

        # image dimensions

        self.channels = channels
        self.image_size = image_size

        # parameters

        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.sigma_data = sigma_data

        self.rho = rho

        self.P_mean = P_mean
        self.P_std = P_std

        self.num_sample_steps = num_sample_steps  # otherwise known as N in the paper

        self.S_churn = S_churn
        self.S_tmin = S_tmin
        self.S_tmax = S_tmax
        self.S_noise = S_noise

        # MindSpore: sampling steps run as compiled graphs (ms.jit), built on first use

        self.jit_sampling = True
        self._jit_steps = {}

        name_parameters_by_path(self)

    # derived preconditioning params - Table 1

    def c_skip(self, sigma):
        return rdiv(self.sigma_data ** 2, pow_scalar(sigma, 2) + self.sigma_data ** 2)

    def c_out(self, sigma):
        return sigma * self.sigma_data * pow_scalar(pow_scalar(sigma, 2) + self.sigma_data ** 2, -0.5)

    def c_in(self, sigma):
        return 1 * pow_scalar(pow_scalar(sigma, 2) + self.sigma_data ** 2, -0.5)

    def c_noise(self, sigma):
        return log(sigma) * 0.25

    # preconditioned network output
    # equation (7) in the paper

    def preconditioned_network_forward(self, noised_images, sigma, self_cond = None, clamp = False):
        batch = noised_images.shape[0]

        if isinstance(sigma, float):
            sigma = ops.full((batch,), sigma, dtype = ms.float32)
        elif sigma.ndim == 0:
            sigma = ops.broadcast_to(sigma, (batch,))   # a 0-d float32 tensor: torch.full((batch,), sigma)

        padded_sigma = sigma.reshape(batch, 1, 1, 1)   # rearrange(sigma, 'b -> b 1 1 1')

        net_out = self.net(
            self.c_in(padded_sigma) * noised_images,
            self.c_noise(sigma),
            self_cond
        )

        out = self.c_skip(padded_sigma) * noised_images +  self.c_out(padded_sigma) * net_out

        if clamp:
            out = ops.clamp(out, -1., 1.)

        return out

    # sampling

    # sample schedule
    # equation (5) in the paper

    def _sample_schedule(self, num_sample_steps = None):
        """The schedule as a float32 NumPy array, computed like torch: float32 arithmetic, the
        Python scalars rounded to float32, ``** rho`` as ``std::pow`` rounded to float32."""
        num_sample_steps = default(num_sample_steps, self.num_sample_steps)

        N = num_sample_steps
        inv_rho = 1 / self.rho

        f32 = np.float32
        steps = np.arange(num_sample_steps, dtype = f32)
        base = f32(self.sigma_max ** inv_rho) + (steps / f32(N - 1)) * f32(self.sigma_min ** inv_rho - self.sigma_max ** inv_rho)
        sigmas = (base.astype(np.float64) ** float(self.rho)).astype(f32)

        return np.pad(sigmas, (0, 1), constant_values = 0.) # last step is sigma value of 0.

    def sample_schedule(self, num_sample_steps = None):
        return ms.Tensor(self._sample_schedule(num_sample_steps))

    def _gammas(self, sigmas, num_sample_steps):
        return np.where(
            (sigmas >= self.S_tmin) & (sigmas <= self.S_tmax),
            np.float32(min(self.S_churn / num_sample_steps, sqrt(2) - 1)),
            np.float32(0.)
        ).astype(np.float32)

    # the loop's randn draws as GaussianDiffusion makes them: ``(noises, i)`` per draw, supplied
    # ones checked, fresh ones in chunks of up to 32 MiB (one host op per chunk)
    DRAW_CHUNK_VALUES = GaussianDiffusion.DRAW_CHUNK_VALUES
    _draws = GaussianDiffusion._draws
    _take = staticmethod(GaussianDiffusion._take)

    def _step(self, name):
        fn = getattr(self, name)
        if not self.jit_sampling:
            return fn
        if name not in self._jit_steps:
            def step(*args):
                return fn(*args)
            self._jit_steps[name] = compiled_step(step)
        return self._jit_steps[name]

    def _churn_step(self, images, noises, i, sigma_hat, churn, sigma_next, step, self_cond, clamp):
        """One step of ``sample``: churn noise, the Euler step; the second-order correction is
        ``_heun_step``.  Scalars: float32 0-d tensors (see the module docstring)."""
        eps = self.S_noise * ops.gather(noises, i, 0) # stochastic sampling

        images_hat = images + churn * eps

        self_cond = self_cond if self.self_condition else None

        model_output = self.preconditioned_network_forward(images_hat, sigma_hat, self_cond, clamp = clamp)
        denoised_over_sigma = (images_hat - model_output) / sigma_hat

        images_next = images_hat + step * denoised_over_sigma
        return images_hat, images_next, model_output, denoised_over_sigma

    def _last_step(self, images, noises, i, sigma_hat, churn, sigma_next, step, self_cond, clamp):
        _, images_next, model_output, _ = self._churn_step(images, noises, i, sigma_hat, churn, sigma_next, step, self_cond, clamp)
        return images_next, model_output

    def _heun_step(self, images, noises, i, sigma_hat, churn, sigma_next, step, half_step, self_cond, clamp):
        images_hat, images_next, model_output, denoised_over_sigma = self._churn_step(images, noises, i, sigma_hat, churn, sigma_next, step, self_cond, clamp)

        # second order correction, if not the last timestep

        self_cond = model_output if self.self_condition else None

        model_output_next = self.preconditioned_network_forward(images_next, sigma_next, self_cond, clamp = clamp)
        denoised_prime_over_sigma = (images_next - model_output_next) / sigma_next
        images_next = images_hat + half_step * (denoised_over_sigma + denoised_prime_over_sigma)
        return images_next, model_output_next

    def sample(self, batch_size = 16, num_sample_steps = None, clamp = True, noise = None):
        num_sample_steps = default(num_sample_steps, self.num_sample_steps)

        shape = (batch_size, self.channels, self.image_size, self.image_size)

        # get the schedule, which is returned as (sigma, gamma) tuple, and pair up with the next sigma and gamma

        sigmas = self._sample_schedule(num_sample_steps)

        gammas = self._gammas(sigmas, num_sample_steps)

        sigmas_and_gammas = list(zip(sigmas[:-1], sigmas[1:], gammas[:-1]))

        draws = self._draws(noise, num_sample_steps + 1, shape)

        # images is noise at the beginning

        init_sigma = sigmas[0]

        images = _f32(init_sigma) * self._take(next(draws))

        # for self conditioning

        x_start = ops.zeros_like(images) if self.self_condition else images   # None: what the Unet substitutes / ignored

        # gradually denoise

        for k, (sigma, sigma_next, gamma) in enumerate(tqdm(sigmas_and_gammas, desc = 'sampling time step')):
            sigma, sigma_next, gamma = map(float, (sigma, sigma_next, gamma))   # .item()

            sigma_hat = sigma + gamma * sigma
            churn = sqrt(sigma_hat ** 2 - sigma ** 2)
            args = (images, *next(draws), _f32(sigma_hat), _f32(churn), _f32(sigma_next),
                    _f32(sigma_next - sigma_hat))

            if sigma_next != 0:
                images, x_start = self._step('_heun_step')(*args, _f32(0.5 * (sigma_next - sigma_hat)), x_start, clamp)
            else:
                images, x_start = self._step('_last_step')(*args, x_start, clamp)

        images = ops.clamp(images, -1., 1.)
        return unnormalize_to_zero_to_one(images)

    def _dpmpp_step(self, images, sigma, ratio, coef, gamma, one_minus_gamma, old_denoised):
        denoised = self.preconditioned_network_forward(images, sigma)
        # gamma = 0 (first and last step): (1 - 0) * denoised + 0 * old = denoised exactly
        denoised_d = one_minus_gamma * denoised + gamma * old_denoised
        images = ratio * images - coef * denoised_d
        return images, denoised

    def sample_using_dpmpp(self, batch_size = 16, num_sample_steps = None, noise = None):
        """
        thanks to Katherine Crowson (https://github.com/crowsonkb) for figuring it all out!
        https://arxiv.org/abs/2211.01095
        """

        num_sample_steps = default(num_sample_steps, self.num_sample_steps)

        sigmas = self._sample_schedule(num_sample_steps)

        shape = (batch_size, self.channels, self.image_size, self.image_size)
        images = _f32(sigmas[0]) * self._take(next(self._draws(noise, 1, shape)))

        # the reference's 0-d float32 tensor arithmetic, on the host
        f32 = np.float32
        with np.errstate(divide = 'ignore'):
            sigma_fn = lambda t: float32_unary(np.exp, -t)
            t_fn = lambda sigma: -float32_unary(np.log, sigma)

        step = self._step('_dpmpp_step')
        old_denoised = None
        for i in tqdm(range(len(sigmas) - 1)):
            with np.errstate(divide = 'ignore', invalid = 'ignore', over = 'ignore'):
                t, t_next = t_fn(sigmas[i]), t_fn(sigmas[i + 1])
                h = f32(t_next - t)

                if not exists(old_denoised) or sigmas[i + 1] == 0:
                    gamma = f32(0.)
                    one_minus_gamma = f32(1.)
                else:
                    h_last = f32(t - t_fn(sigmas[i - 1]))
                    r = f32(h_last / h)
                    gamma = f32(f32(1.) / f32(2 * r)) * f32(-1)   # - 1 / (2 * r): reciprocal, then * -1
                    one_minus_gamma = f32(1 - gamma)

                ratio = f32(sigma_fn(t_next) / sigma_fn(t))
                coef = float32_unary(np.expm1, -h)

            images, old_denoised = step(images, _f32(sigmas[i]), _f32(ratio), _f32(coef), _f32(gamma), _f32(one_minus_gamma),
                                        old_denoised if exists(old_denoised) else ops.zeros_like(images))

        images = ops.clamp(images, -1., 1.)
        return unnormalize_to_zero_to_one(images)

    # training

    def loss_weight(self, sigma):
        return (pow_scalar(sigma, 2) + self.sigma_data ** 2) * pow_scalar(sigma * self.sigma_data, -2)

    def noise_distribution(self, batch_size):
        return exp(self.P_mean + self.P_std * ops.randn((batch_size,), dtype = ms.float32))

    def construct(self, images, sigma = None, loss_reduction = 'mean', noise = None, self_cond_coin = None):
        # the reference's forward(images, *args, sigma = None, loss_reduction = 'mean', **kwargs)
        batch_size, c, h, w = images.shape
        image_size, channels = self.image_size, self.channels

        if h != image_size or w != image_size:
            raise AssertionError(f'height and width of image must be {image_size}')
        if c != channels:
            raise AssertionError('mismatch of image channels')

        images = normalize_to_neg_one_to_one(images)

        sigmas = sigma if sigma is not None else self.noise_distribution(batch_size)
        padded_sigmas = sigmas.reshape(batch_size, 1, 1, 1)   # rearrange(sigmas, 'b -> b 1 1 1')

        if noise is None:
            noise = ops.randn(images.shape, dtype = images.dtype)

        noised_images = images + padded_sigmas * noise  # alphas are 1. in the paper

        self_cond = None

        if self.self_condition:
            if self_cond_coin is None:
                self_cond_coin = ops.rand(()) # the reference's random()
            if self_cond_coin < 0.5:
                # from hinton's group's bit diffusion paper
                self_cond = ops.stop_gradient(self.preconditioned_network_forward(noised_images, sigmas))
            else:
                self_cond = ops.zeros_like(noised_images) # what the Unet substitutes for None

        denoised = self.preconditioned_network_forward(noised_images, sigmas, self_cond)

        losses = ops.square(denoised - images)
        losses = losses.reshape(batch_size, -1).mean(1)   # reduce(losses, 'b ... -> b', 'mean')

        losses = losses * self.loss_weight(sigmas)

        if loss_reduction == 'none':
            return losses

        return losses.mean()
