"""MindSpore twin of ``denoising_diffusion_pytorch/weighted_objective_gaussian_diffusion.py`` (2.3.4).

The U-Net predicts the noise, x_start and two weights; the sample's x_start is the
softmax-weighted sum of the x_start derived from the predicted noise and the predicted one.

Difference from the reference (docs/parity.md, "Other diffusion processes"): the reference's
``p_mean_variance`` takes no ``x_self_cond`` and returns three values, so its ``sample()``
(``GaussianDiffusion.p_sample``) raises ``TypeError``; here it accepts (and ignores) the
base class's ``x_self_cond`` and returns the weighted x_start as a fourth value, so sampling
works.  Every random draw can be supplied (``noise=``); sampling steps are compiled
(inherited from ``ms_ddpm.GaussianDiffusion``).
"""

from mindspore import ops

from ms_ddpm.ms_compat import split, softmax, einsum_bjhw_bjchw
from ms_ddpm.denoising_diffusion_pytorch import GaussianDiffusion, normalize_to_neg_one_to_one


# helper functions

def exists(x):
    return x is not None

def default(val, d):
    if exists(val):
        return val
    return d() if callable(d) else d

def _mean_b(x):
    return x.reshape(x.shape[0], -1).mean(1)   # reduce(x, 'b ... -> b', 'mean')

# some improvisation on my end
# where i have the model learn to both predict noise and x0
# and learn the weighted sum for each depending on time step

class WeightedObjectiveGaussianDiffusion(GaussianDiffusion):
    def __init__(
        self,
        model,
        *args,
        pred_noise_loss_weight = 0.1,
        pred_x_start_loss_weight = 0.1,
        **kwargs
    ):
        super().__init__(model, *args, **kwargs)
        channels = model.channels
        assert model.out_dim == (channels * 2 + 2), 'dimension out (out_dim) of unet must be twice the number of channels + 2 (for the softmax weighted sum) - for channels of 3, this should be (3 * 2) + 2 = 8'
        assert not model.self_condition, 'not supported yet'
        assert not self.is_ddim_sampling, 'ddim sampling cannot be used'

        self.split_dims = (channels, channels, 2)
        self.pred_noise_loss_weight = pred_noise_loss_weight
        self.pred_x_start_loss_weight = pred_x_start_loss_weight

    def p_mean_variance(self, *, x, t, clip_denoised, model_output = None, **kwargs):
        # **kwargs: GaussianDiffusion.p_sample passes x_self_cond (the reference raises TypeError)
        model_output = self.model(x, t)

        pred_noise, pred_x_start, weights = split(model_output, self.split_dims, dim = 1)
        normalized_weights = softmax(weights, dim = 1)

        x_start_from_noise = self.predict_start_from_noise(x, t = t, noise = pred_noise)

        x_starts = ops.stack((x_start_from_noise, pred_x_start), axis = 1)
        weighted_x_start = einsum_bjhw_bjchw(normalized_weights, x_starts)

        if clip_denoised:
            weighted_x_start = ops.clamp(weighted_x_start, -1., 1.)

        model_mean, model_variance, model_log_variance = self.q_posterior(weighted_x_start, x, t)

        # the fourth value: p_sample returns it as x_start (the reference returns three values)
        return model_mean, model_variance, model_log_variance, weighted_x_start

    def p_losses(self, x_start, t, noise = None, clip_denoised = False, loss_reduction = 'mean'):
        if noise is None:
            noise = ops.randn(x_start.shape, dtype = x_start.dtype)
        x_t = self.q_sample(x_start = x_start, t = t, noise = noise)

        model_output = self.model(x_t, t)
        pred_noise, pred_x_start, weights = split(model_output, self.split_dims, dim = 1)

        # get loss for predicted noise and x_start
        # with the loss weight given at initialization

        noise_loss = ops.square(noise - pred_noise)
        noise_loss = _mean_b(noise_loss) * self.pred_noise_loss_weight

        x_start_loss = ops.square(x_start - pred_x_start)
        x_start_loss = _mean_b(x_start_loss) * self.pred_x_start_loss_weight

        # calculate x_start from predicted noise
        # then do a weighted sum of the x_start prediction, weights also predicted by the model (softmax normalized)

        x_start_from_pred_noise = self.predict_start_from_noise(x_t, t, pred_noise)
        x_start_from_pred_noise = ops.clamp(x_start_from_pred_noise, -2., 2.)
        weighted_x_start = einsum_bjhw_bjchw(softmax(weights, dim = 1), ops.stack((x_start_from_pred_noise, pred_x_start), axis = 1))

        # main loss to x_start with the weighted one

        weighted_x_start_loss = ops.square(x_start - weighted_x_start)
        weighted_x_start_loss = _mean_b(weighted_x_start_loss)

        total_loss = weighted_x_start_loss + x_start_loss + noise_loss

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
