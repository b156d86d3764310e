"""MindSpore twin of ``denoising_diffusion_pytorch/repaint.py`` (2.3.4): RePaint inpainting.

The reference file is a copy of ``denoising_diffusion_pytorch.py`` without dropout and
immiscible diffusion, whose ``p_sample`` / ``p_sample_loop`` / ``sample`` take a known image
``gt`` (in [0, 1]) and a ``mask`` (1 = known) and run the RePaint resampling schedule
(https://arxiv.org/abs/2201.09865).  What it copies is the 2D twin's code (imported from
``ms_ddpm.denoising_diffusion_pytorch``); its own classes are below, same names, arguments,
defaults and attribute names, so every parameter name equals the reference's state-dict key.

Randomness is injectable: ``sample`` / ``p_sample_loop`` take ``noise`` of shape
``(S, *shape)`` = every ``randn`` the reference draws, in its order (``repaint_draw_count``
says how many): the starting image; then per step t the known part's noise (with a mask)
and the step's noise (t > 0); after a resampling step, per iteration the jump's noise and
the draws of its ``resample_jump`` steps.  ``p_sample(..., gt_noise=, noise=)`` and
``forward(img, t=, noise=, offset_noise=, self_cond_coin=)`` (``t``: the reference's local).

The resampling schedule is the reference's as written (docs/guided_repaint.md): every
resampling iteration jumps with ``betas[resample_jump]`` and then denoises
``resample_jump`` times at that same t, without self-conditioning; ``sample`` always runs
the DDPM loop (also with ``sampling_timesteps < timesteps``).
"""

import mindspore as ms
from mindspore import ops
from tqdm.auto import tqdm

from ms_ddpm.ms_compat import repaint_mask
from ms_ddpm.denoising_diffusion_pytorch import (
    ModelPrediction, exists, default, cast_tuple, divisible_by, identity, cycle,
    has_int_squareroot, num_to_groups, convert_image_to_fn, normalize_to_neg_one_to_one,
    unnormalize_to_zero_to_one, Upsample, Downsample, RMSNorm, SinusoidalPosEmb,
    RandomOrLearnedSinusoidalPosEmb, LinearAttention, Attention, extract,
    linear_beta_schedule, cosine_beta_schedule, sigmoid_beta_schedule,
    Block as _Block, ResnetBlock as _ResnetBlock, Unet as _Unet,
    GaussianDiffusion as _GaussianDiffusion2D, Dataset, Trainer,
)

__all__ = [
    'Block', 'ResnetBlock', 'LinearAttention', 'Attention', 'Unet', 'GaussianDiffusion',
    'Dataset', 'Trainer', 'repaint_draw_count',
]

# building block modules: the 2D twin's without dropout (the reference's copy has none)

class Block(_Block):
    def __init__(self, dim, dim_out):
        super().__init__(dim, dim_out)

class ResnetBlock(_ResnetBlock):
    def __init__(self, dim, dim_out, *, time_emb_dim = None):
        super().__init__(dim, dim_out, time_emb_dim = time_emb_dim)

# model

class Unet(_Unet):
    def __init__(
        self,
        dim,
        init_dim = None,
        out_dim = None,
        dim_mults = (1, 2, 4, 8),
        channels = 3,
        self_condition = False,
        learned_variance = False,
        learned_sinusoidal_cond = False,
        random_fourier_features = False,
        learned_sinusoidal_dim = 16,
        sinusoidal_pos_emb_theta = 10000,
        attn_dim_head = 32,
        attn_heads = 4,
        full_attn = None,    # defaults to full attention only for inner most layer
        flash_attn = False
    ):
        super().__init__(
            dim, init_dim = init_dim, out_dim = out_dim, dim_mults = dim_mults, channels = channels,
            self_condition = self_condition, learned_variance = learned_variance,
            learned_sinusoidal_cond = learned_sinusoidal_cond, random_fourier_features = random_fourier_features,
            learned_sinusoidal_dim = learned_sinusoidal_dim, sinusoidal_pos_emb_theta = sinusoidal_pos_emb_theta,
            dropout = 0., attn_dim_head = attn_dim_head, attn_heads = attn_heads, full_attn = full_attn,
            flash_attn = flash_attn)


def repaint_draw_count(num_timesteps, masked = True, resample = True, resample_iter = 10,
                       resample_jump = 3, resample_every = 50):
    """How many ``randn`` draws the reference's RePaint ``p_sample_loop`` makes (the first
    axis of ``noise``)."""
    per_step = lambda t: int(masked) + int(t > 0)
    count = 1
    for t in reversed(range(0, num_timesteps)):
        count += per_step(t)
        if resample is True and t > 0 and (t % resample_every == 0 or t == 1) and masked:
            count += resample_iter * (1 + resample_jump * per_step(resample_jump))
    return count


class GaussianDiffusion(_GaussianDiffusion2D):
    """The reference's RePaint ``GaussianDiffusion``: the 2D twin's schedules, predictions,
    DDIM sampler and loss; its own ``p_sample`` / ``p_sample_loop`` / ``sample``
    (inpainting) and a ``forward`` that draws its own times."""

    def __init__(
        self,
        model,
        *,
        image_size,
        timesteps = 1000,
        sampling_timesteps = None,
        objective = 'pred_v',
        beta_schedule = 'sigmoid',
        schedule_fn_kwargs = dict(),
        ddim_sampling_eta = 0.,
        auto_normalize = True,
        offset_noise_strength = 0.,  # https://www.crosslabs.org/blog/diffusion-with-offset-noise
        min_snr_loss_weight = False, # https://arxiv.org/abs/2303.09556
        min_snr_gamma = 5
    ):
        super().__init__(
            model, image_size = image_size, timesteps = timesteps, sampling_timesteps = sampling_timesteps,
            objective = objective, beta_schedule = beta_schedule, schedule_fn_kwargs = schedule_fn_kwargs,
            ddim_sampling_eta = ddim_sampling_eta, auto_normalize = auto_normalize,
            offset_noise_strength = offset_noise_strength, min_snr_loss_weight = min_snr_loss_weight,
            min_snr_gamma = min_snr_gamma, immiscible = False)

    def _repaint_p_sample(self, x, t, x_self_cond, gt, mask, draws):
        # https://arxiv.org/abs/2201.09865
        # draws: an iterator of (noises, i); the known part's noise first, then the step's
        if mask is not None:
            gt = normalize_to_neg_one_to_one(gt)
            alpha_cumnprod_t = self.alphas_cumprod[t]
            gt_weight = ops.sqrt(alpha_cumnprod_t)
            gt_part = gt_weight * gt
            noise_weight = ops.sqrt(1 - alpha_cumnprod_t)
            noise_part = noise_weight * self._take(next(draws))
            weighed_gt = gt_part + noise_part
            x = (mask * weighed_gt) + ((1 - mask) * x)

        draw = next(draws) if t > 0 else (ops.expand_dims(ops.zeros_like(x), 0), ms.Tensor(0, ms.int64))
        pred_img, x_start = self._p_sample(x, t, x_self_cond, draw)

        if t == 0 and mask is not None:
            # if t == 0, we use the ground-truth image if in-painting
            pred_img = (mask * gt) + ((1 - mask) * pred_img)

        return pred_img, x_start

    def p_sample(self, x, t: int, x_self_cond = None, gt = None, mask = None, gt_noise = None, noise = None):
        mask = repaint_mask(mask)
        supplied = []
        if mask is not None:
            supplied.append(default(gt_noise, lambda: ops.randn(x.shape, dtype = x.dtype)))
        if t > 0:
            supplied.append(default(noise, lambda: ops.randn(x.shape, dtype = x.dtype)))
        draws = iter([(ops.expand_dims(n, 0), ms.Tensor(0, ms.int64)) for n in supplied])
        return self._repaint_p_sample(x, t, x_self_cond, gt, mask, draws)

    def p_sample_loop(
        self,
        shape,
        return_all_timesteps=False,
        gt=None,
        mask=None,
        resample=True,
        resample_iter=10,
        resample_jump=3,
        resample_every=50,
        noise=None,
    ):
        shape = tuple(shape)
        mask = repaint_mask(mask)
        count = repaint_draw_count(self.num_timesteps, mask is not None, resample, resample_iter, resample_jump, resample_every)
        if resample is True and mask is not None and self.num_timesteps > 1 and not 0 <= resample_jump < self.num_timesteps:
            # the reference fails here too, at its first resampling (betas[resample_jump]: IndexError)
            raise IndexError(f'resample_jump={resample_jump} must be in 0..{self.num_timesteps - 1} (it indexes betas)')
        draws = self._draws(noise, count, shape)

        img = self._take(next(draws))
        imgs = [img]

        x_start = None

        for t in tqdm(reversed(range(0, self.num_timesteps)), desc = 'sampling loop time step', total = self.num_timesteps):
            self_cond = x_start if self.self_condition else None
            img, x_start = self._repaint_p_sample(img, t, self_cond, gt, mask, draws)
            imgs.append(img)

            # Resampling loop: line 9 of Algorithm 1 in https://arxiv.org/pdf/2201.09865
            if resample is True and (t > 0) and (t % resample_every == 0 or t == 1) and mask is not None:
                # Jump back for resample_jump timesteps and resample_iter times
                for iter in tqdm(range(resample_iter), desc = 'resample loop', total = resample_iter):
                    t = resample_jump
                    beta = self.betas[t]
                    img = ops.sqrt(1 - beta) * img + ops.sqrt(beta) * self._take(next(draws))
                    for j in reversed(range(0, resample_jump)):
                        img, x_start = self._repaint_p_sample(img, t, None, gt, mask, draws)
                imgs.append(img)

        ret = img if not return_all_timesteps else ops.stack(imgs, axis = 1)
        ret = self.unnormalize(ret)
        return ret

    def sample(
        self,
        batch_size=16,
        return_all_timesteps=False,
        gt=None,
        mask=None,
        resample=True,
        resample_iter=10,
        resample_jump=10,
        resample_every=50,
        noise=None,
    ):
        (h, w), channels = self.image_size, self.channels
        batch_size = mask.shape[0] if mask is not None else batch_size
        return self.p_sample_loop(
            shape=(batch_size, channels, h, w),
            return_all_timesteps=return_all_timesteps,
            gt=gt,
            mask=mask,
            resample=resample,
            resample_iter=resample_iter,
            resample_jump=resample_jump,
            resample_every=resample_every,
            noise=noise,
        )

    def construct(self, img, loss_reduction = 'mean', noise = None, offset_noise_strength = None, offset_noise = None, self_cond_coin = None, t = None):
        # the reference's forward draws its own times (its local ``t``): injectable as ``t``
        return super().construct(img, t, loss_reduction, noise, offset_noise_strength, offset_noise, self_cond_coin)
