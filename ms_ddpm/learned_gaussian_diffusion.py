"""MindSpore twin of ``denoising_diffusion_pytorch/learned_gaussian_diffusion.py`` (2.3.4).

Learned variance (Nichol & Dhariwal, https://arxiv.org/abs/2102.09672): the U-Net predicts
the noise and an interpolation fraction between the posterior's clipped log variance and
``log(beta)``; the loss is the simple loss plus ``vb_loss_weight`` times the variational bound
(``normal_kl``, or at t = 0 the discretized Gaussian decoder NLL).

Differences from the reference (docs/parity.md, "Other diffusion processes"):
- the reference's ``model_predictions`` uses ``partial`` and ``identity`` without importing
  them (``NameError: partial`` on the DDIM path); here the clip is a plain ``if``, so DDIM
  sampling works (with the objectives it supports, pred_noise and pred_x0);
- every random draw can be supplied (``noise=``, as in ``GaussianDiffusion``), sampling steps
  are compiled (inherited from ``ms_ddpm.GaussianDiffusion``).
"""

from collections import namedtuple
from math import pi, sqrt, log as ln

import mindspore as ms
from mindspore import ops

from ms_ddpm.ms_compat import chunk, exp, log as _log, tanh, pow_scalar
from ms_ddpm.denoising_diffusion_pytorch import GaussianDiffusion, extract, normalize_to_neg_one_to_one, unnormalize_to_zero_to_one

# constants

NAT = 1. / ln(2)

ModelPrediction = namedtuple('ModelPrediction', ['pred_noise', 'pred_x_start', 'pred_variance'])

# helper functions

def exists(x):
    return x is not None

def default(val, d):
    if exists(val):
        return val
    return d() if callable(d) else d

# tensor helpers

def log(t, eps = 1e-15):
    return _log(ops.clamp(t, min = eps))

def meanflat(x):
    return x.reshape(x.shape[0], -1).mean(1)

def normal_kl(mean1, logvar1, mean2, logvar2):
    """
    KL divergence between normal distributions parameterized by mean and log-variance.
    """
    return 0.5 * (-1.0 + logvar2 - logvar1 + exp(logvar1 - logvar2) + pow_scalar(mean1 - mean2, 2) * exp(-logvar2))

def approx_standard_normal_cdf(x):
    return 0.5 * (1.0 + tanh(sqrt(2.0 / pi) * (x + 0.044715 * pow_scalar(x, 3))))

def discretized_gaussian_log_likelihood(x, *, means, log_scales, thres = 0.999):
    assert x.shape == means.shape == log_scales.shape

    centered_x = x - means
    inv_stdv = exp(-log_scales)
    plus_in = inv_stdv * (centered_x + 1. / 255.)
    cdf_plus = approx_standard_normal_cdf(plus_in)
    min_in = inv_stdv * (centered_x - 1. / 255.)
    cdf_min = approx_standard_normal_cdf(min_in)
    log_cdf_plus = log(cdf_plus)
    log_one_minus_cdf_min = log(1. - cdf_min)
    cdf_delta = cdf_plus - cdf_min

    log_probs = ops.where(x < -thres,
        log_cdf_plus,
        ops.where(x > thres,
            log_one_minus_cdf_min,
            log(cdf_delta)))

    return log_probs

# https://arxiv.org/abs/2102.09672

# i thought the results were questionable, if one were to focus only on FID
# but may as well get this in here for others to try, as GLIDE is using it (and DALL-E2 first stage of cascade)
# gaussian diffusion for learned variance + hybrid eps simple + vb loss

class LearnedGaussianDiffusion(GaussianDiffusion):
    def __init__(
        self,
        model,
        vb_loss_weight = 0.001,  # lambda was 0.001 in the paper
        *args,
        **kwargs
    ):
        super().__init__(model, *args, **kwargs)
        assert model.out_dim == (model.channels * 2), 'dimension out of unet must be twice the number of channels for learned variance - you can also set the `learned_variance` keyword argument on the Unet to be `True`'
        assert not model.self_condition, 'not supported yet'

        self.vb_loss_weight = vb_loss_weight

    def _predictions(self, x, t, x_self_cond = None, clip_x_start = False, rederive_pred_noise = False):
        # the reference's model_predictions as a plain tuple (GRAPH mode; see
        # GaussianDiffusion._model_predictions); model_predictions wraps it in ModelPrediction
        model_output = self.model(x, t)
        model_output, pred_variance = chunk(model_output, 2, dim = 1)

        if self.objective == 'pred_noise':
            pred_noise = model_output
            x_start = self.predict_start_from_noise(x, t, model_output)

        elif self.objective == 'pred_x0':
            pred_noise = self.predict_noise_from_start(x, t, model_output)
            x_start = model_output

        else:
            # the reference leaves x_start unbound here (UnboundLocalError)
            raise ValueError(f'LearnedGaussianDiffusion.model_predictions supports the objectives pred_noise and pred_x0, not {self.objective}')

        if clip_x_start:   # maybe_clip (the reference's partial(torch.clamp, min = -1., max = 1.))
            x_start = ops.clamp(x_start, -1., 1.)

        return pred_noise, x_start, pred_variance

    def _model_predictions(self, x, t, x_self_cond = None, clip_x_start = False, rederive_pred_noise = False):
        # GaussianDiffusion's hook (its DDIM step takes (pred_noise, x_start), as the reference's
        # `pred_noise, x_start, *_ = self.model_predictions(...)` does)
        return self._predictions(x, t, x_self_cond, clip_x_start, rederive_pred_noise)[:2]

    def model_predictions(self, x, t, x_self_cond = None, clip_x_start = False, rederive_pred_noise = False):
        return ModelPrediction(*self._predictions(x, t, x_self_cond, clip_x_start, rederive_pred_noise))

    def p_mean_variance(self, *, x, t, clip_denoised, model_output = None, **kwargs):
        if model_output is None:
            model_output = self.model(x, t)
        pred_noise, var_interp_frac_unnormalized = chunk(model_output, 2, dim = 1)

        min_log = extract(self.posterior_log_variance_clipped, t, x.shape)
        max_log = extract(_log(self.betas), t, x.shape)
        var_interp_frac = unnormalize_to_zero_to_one(var_interp_frac_unnormalized)

        model_log_variance = var_interp_frac * max_log + (1 - var_interp_frac) * min_log
        model_variance = exp(model_log_variance)

        x_start = self.predict_start_from_noise(x, t, pred_noise)

        if clip_denoised:
            x_start = ops.clamp(x_start, -1., 1.)

        model_mean, _, _ = self.q_posterior(x_start, x, t)

        return model_mean, model_variance, model_log_variance, x_start

    def p_losses(self, x_start, t, noise = None, clip_denoised = False, loss_reduction = 'mean'):
        if noise is None:
            noise = ops.randn(x_start.shape, dtype = x_start.dtype)
        x_t = self.q_sample(x_start = x_start, t = t, noise = noise)

        # model output

        model_output = self.model(x_t, t)

        # calculating kl loss for learned variance (interpolation)

        true_mean, _, true_log_variance_clipped = self.q_posterior(x_start = x_start, x_t = x_t, t = t)
        model_mean, _, model_log_variance, _ = self.p_mean_variance(x = x_t, t = t, clip_denoised = clip_denoised, model_output = model_output)

        # kl loss with detached model predicted mean, for stability reasons as in paper

        detached_model_mean = ops.stop_gradient(model_mean)

        kl = normal_kl(true_mean, true_log_variance_clipped, detached_model_mean, model_log_variance)
        kl = meanflat(kl) * NAT

        decoder_nll = -discretized_gaussian_log_likelihood(x_start, means = detached_model_mean, log_scales = 0.5 * model_log_variance)
        decoder_nll = meanflat(decoder_nll) * NAT

        # at the first timestep return the decoder NLL, otherwise return KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t))

        vb_losses = ops.where(t == 0, decoder_nll, kl)

        # simple loss - predicting noise, x0, or x_prev

        pred_noise, _ = chunk(model_output, 2, dim = 1)

        simple_losses = ops.square(pred_noise - noise)
        simple_losses = simple_losses.reshape(simple_losses.shape[0], -1).mean(1) # reduce(..., 'b ... -> b', 'mean')

        total_loss = simple_losses + vb_losses * self.vb_loss_weight

        if loss_reduction == 'none':
            return total_loss

        return total_loss.mean()

    def construct(self, img, times = None, loss_reduction = 'mean', noise = None, clip_denoised = False):
        # the reference's forward(img, *args, times, loss_reduction, **kwargs) -> p_losses(img, times, ...)
        b, c, h, w = img.shape
        img_size = self.image_size
        if h != img_size[0] or w != img_size[1]:
            raise AssertionError(f'height and width of image must be {img_size}')

        if times is None:
            times = self.random_times(b)

        if self.auto_normalize:
            img = normalize_to_neg_one_to_one(img)
        return self.p_losses(img, times, noise = noise, clip_denoised = clip_denoised, loss_reduction = loss_reduction)
