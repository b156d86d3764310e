"""MindSpore twin of ``denoising_diffusion_pytorch/guided_diffusion.py`` (2.3.4): classifier
guidance (``cond_fn``, ``guidance_kwargs``, ``condition_mean``).

The reference file is an older copy of ``denoising_diffusion_pytorch.py``: its Unet is the
pre-2.0 one (``Residual(PreNorm(..))`` attention without memory key/values, an RMSNorm that
scales by the input's *width* ``x.shape[-1] ** 0.5``, the final block on ``dim``), its
GaussianDiffusion takes an int ``image_size`` and has no offset noise, and it has an older
Trainer (``fp16``, no FID).  Same class names, arguments, defaults, attribute names and
submodule indices, so every parameter name equals the reference's state-dict key.  What it
shares with the 2D twin (helpers, schedules, posterior algebra, Dataset) is imported from
``ms_ddpm.denoising_diffusion_pytorch``; framework differences are in ``ms_ddpm.ms_compat``
(section "classifier guidance and RePaint").

The reference's example classifier and ``classifier_cond_fn`` live under its ``if __name__ ==
'__main__':``; here they are importable (``Classifier``, ``classifier_cond_fn``), the
gradient taken with ``ms.grad`` (``ms_compat.input_gradient``).

Randomness is injectable: the sampling loops' ``noise`` of shape ``(S, *shape)`` (as the 2D
twin's, docs/TEAM_NOTES.md), ``p_sample(..., noise=)``, ``forward(img, t=, noise=,
self_cond_coin=)`` (``t``: the reference's local).  Differences (docs/guided_repaint.md):
``condition_mean`` does not print the mean gradient; ``ddim_sample`` accepts ``cond_fn`` and
``guidance_kwargs`` and, as the reference, does not use them.
"""

import math

import mindspore as ms
from mindspore import ops
from tqdm.auto import tqdm

from ms_ddpm.ms_compat import (
    Module, ModuleList, Sequential, Identity, SiLU, Conv2d, Linear, GELU, normalize, gain, apply_scale_shift, chunk, cat,
    softmax, ones_parameter, name_parameters_by_path, heads_split, heads_merge, matmul_nt, matmul_tn,
    exp, log_softmax_select, input_gradient,
)
from ms_ddpm.denoising_diffusion_pytorch import (
    ModelPrediction, exists, default, identity, cycle, has_int_squareroot, num_to_groups,
    convert_image_to_fn, normalize_to_neg_one_to_one, unnormalize_to_zero_to_one, Upsample, Downsample,
    SinusoidalPosEmb as _SinusoidalPosEmb, RandomOrLearnedSinusoidalPosEmb, extract,
    linear_beta_schedule, cosine_beta_schedule, sigmoid_beta_schedule,
    GaussianDiffusion as _GaussianDiffusion2D, Dataset, Trainer as _Trainer,
)

__all__ = [
    'Residual', 'RMSNorm', 'PreNorm', 'SinusoidalPosEmb', 'RandomOrLearnedSinusoidalPosEmb', 'Block',
    'ResnetBlock', 'LinearAttention', 'Attention', 'Unet', 'GaussianDiffusion', 'Dataset', 'Trainer',
    'Classifier', 'classifier_cond_fn',
]

# small helper modules

class Residual(Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def construct(self, x):
        return self.fn(x) + x

class RMSNorm(Module):
    def __init__(self, dim):
        super().__init__()
        self.g = ones_parameter((1, dim, 1, 1), 'g')

    def construct(self, x):
        # the reference scales by the width (x.shape[-1]), not the channels
        return gain(normalize(x, dim = 1), self.g, x.shape[-1] ** 0.5)   # normalize(x, dim = 1) * self.g * (x.shape[-1] ** 0.5)

class PreNorm(Module):
    def __init__(self, dim, fn):
        super().__init__()
        self.fn = fn
        self.norm = RMSNorm(dim)

    def construct(self, x):
        x = self.norm(x)
        return self.fn(x)

# sinusoidal positional embeds

class SinusoidalPosEmb(_SinusoidalPosEmb):
    def __init__(self, dim):
        super().__init__(dim)   # theta 10000, as the reference hard-codes

# RandomOrLearnedSinusoidalPosEmb: the 2D twin's (imported above)

# building block modules

class Block(Module):
    def __init__(self, dim, dim_out):
        super().__init__()
        self.proj = Conv2d(dim, dim_out, 3, padding = 1)
        self.norm = RMSNorm(dim_out)
        self.act = SiLU()

    def construct(self, x, scale_shift = None):
        x = self.proj(x)
        x = self.norm(x)

        if exists(scale_shift):
            scale, shift = scale_shift
            x = apply_scale_shift(x, scale, shift)           # x * (scale + 1) + shift

        x = self.act(x)
        return x

class ResnetBlock(Module):
    def __init__(self, dim, dim_out, *, time_emb_dim = None):
        super().__init__()
        self.mlp = Sequential(
            SiLU(),
            Linear(time_emb_dim, dim_out * 2)
        ) if exists(time_emb_dim) else None

        self.block1 = Block(dim, dim_out)
        self.block2 = Block(dim_out, dim_out)
        self.res_conv = Conv2d(dim, dim_out, 1) if dim != dim_out else Identity()

    def construct(self, x, time_emb = None):

        scale_shift = None
        if exists(self.mlp) and exists(time_emb):
            time_emb = self.mlp(time_emb)
            time_emb = time_emb[:, :, None, None]
            scale_shift = chunk(time_emb, 2, dim = 1)

        h = self.block1(x, scale_shift)

        h = self.block2(h)

        return h + self.res_conv(x)

class LinearAttention(Module):
    def __init__(self, dim, heads = 4, dim_head = 32):
        super().__init__()
        self.scale = dim_head ** -0.5
        self.heads = heads
        hidden_dim = dim_head * heads
        self.to_qkv = Conv2d(dim, hidden_dim * 3, 1, bias = False)

        self.to_out = Sequential(
            Conv2d(hidden_dim, dim, 1),
            RMSNorm(dim)
        )

    def construct(self, x):
        b, c, h, w = x.shape
        q, k, v = chunk(self.to_qkv(x), 3, dim = 1)
        q = heads_split(q, self.heads, channels_last = False)
        k = heads_split(k, self.heads, channels_last = False)
        v = heads_split(v, self.heads, channels_last = False)

        q = softmax(q, dim = -2)
        k = softmax(k, dim = -1)

        q = q * self.scale

        context = matmul_nt(k, v)              # einsum('b h d n, b h e n -> b h d e', k, v)

        out = matmul_tn(context, q)            # einsum('b h d e, b h d n -> b h e n', context, q)
        out = heads_merge(out, h, w, channels_last = False)
        return self.to_out(out)

class Attention(Module):
    def __init__(self, dim, heads = 4, dim_head = 32):
        super().__init__()
        self.scale = dim_head ** -0.5
        self.heads = heads
        hidden_dim = dim_head * heads

        self.to_qkv = Conv2d(dim, hidden_dim * 3, 1, bias = False)
        self.to_out = Conv2d(hidden_dim, dim, 1)

    def construct(self, x):
        b, c, h, w = x.shape
        q, k, v = chunk(self.to_qkv(x), 3, dim = 1)
        q = heads_split(q, self.heads, channels_last = False)   # b h d (x y)
        k = heads_split(k, self.heads, channels_last = False)
        v = heads_split(v, self.heads, channels_last = False)

        q = q * self.scale

        sim = matmul_tn(q, k)                  # einsum('b h d i, b h d j -> b h i j', q, k)
        attn = softmax(sim, dim = -1)
        out = matmul_nt(attn, v)               # einsum('b h i j, b h d j -> b h i d', attn, v)

        out = heads_merge(out, h, w, channels_last = True)
        return self.to_out(out)

# model

class Unet(Module):
    def __init__(
        self,
        dim,
        init_dim = None,
        out_dim = None,
        dim_mults=(1, 2, 4, 8),
        channels = 3,
        self_condition = False,
        learned_variance = False,
        learned_sinusoidal_cond = False,
        random_fourier_features = False,
        learned_sinusoidal_dim = 16
    ):
        super().__init__()

        # determine dimensions

        self.channels = channels
        self.self_condition = self_condition
        input_channels = channels * (2 if self_condition else 1)

        init_dim = default(init_dim, dim)
        self.init_conv = Conv2d(input_channels, init_dim, 7, padding = 3)

        dims = [init_dim, *map(lambda m: dim * m, dim_mults)]
        in_out = list(zip(dims[:-1], dims[1:]))

        # time embeddings

        time_dim = dim * 4

        self.random_or_learned_sinusoidal_cond = learned_sinusoidal_cond or random_fourier_features

        if self.random_or_learned_sinusoidal_cond:
            sinu_pos_emb = RandomOrLearnedSinusoidalPosEmb(learned_sinusoidal_dim, random_fourier_features)
            fourier_dim = learned_sinusoidal_dim + 1
        else:
            sinu_pos_emb = SinusoidalPosEmb(dim)
            fourier_dim = dim

        self.time_mlp = Sequential(
            sinu_pos_emb,
            Linear(fourier_dim, time_dim),
            GELU(),
            Linear(time_dim, time_dim)
        )

        # layers

        self.downs = ModuleList([])
        self.ups = ModuleList([])
        num_resolutions = len(in_out)

        for ind, (dim_in, dim_out) in enumerate(in_out):
            is_last = ind >= (num_resolutions - 1)

            self.downs.append(ModuleList([
                ResnetBlock(dim_in, dim_in, time_emb_dim = time_dim),
                ResnetBlock(dim_in, dim_in, time_emb_dim = time_dim),
                Residual(PreNorm(dim_in, LinearAttention(dim_in))),
                Downsample(dim_in, dim_out) if not is_last else Conv2d(dim_in, dim_out, 3, padding = 1)
            ]))

        mid_dim = dims[-1]
        self.mid_block1 = ResnetBlock(mid_dim, mid_dim, time_emb_dim = time_dim)
        self.mid_attn = Residual(PreNorm(mid_dim, Attention(mid_dim)))
        self.mid_block2 = ResnetBlock(mid_dim, mid_dim, time_emb_dim = time_dim)

        for ind, (dim_in, dim_out) in enumerate(reversed(in_out)):
            is_last = ind == (len(in_out) - 1)

            self.ups.append(ModuleList([
                ResnetBlock(dim_out + dim_in, dim_out, time_emb_dim = time_dim),
                ResnetBlock(dim_out + dim_in, dim_out, time_emb_dim = time_dim),
                Residual(PreNorm(dim_out, LinearAttention(dim_out))),
                Upsample(dim_out, dim_in) if not is_last else  Conv2d(dim_out, dim_in, 3, padding = 1)
            ]))

        default_out_dim = channels * (1 if not learned_variance else 2)
        self.out_dim = default(out_dim, default_out_dim)

        # the reference's: on dim (so an init_dim other than dim fails in both, at the concatenation)
        self.final_res_block = ResnetBlock(dim * 2, dim, time_emb_dim = time_dim)
        self.final_conv = Conv2d(dim, self.out_dim, 1)

        name_parameters_by_path(self)

    def construct(self, x, time, x_self_cond = None):
        if self.self_condition:
            if x_self_cond is None:
                x_self_cond = ops.zeros_like(x)
            x = cat((x_self_cond, x), dim = 1)

        x = self.init_conv(x)
        r = x

        t = self.time_mlp(time)

        # GRAPH mode compiles a tuple grown by concatenation, not a list with append/pop
        h = ()

        for down in self.downs:
            block1, block2, attn, downsample = down[0], down[1], down[2], down[3]
            x = block1(x, t)
            h = h + (x,)

            x = block2(x, t)
            x = attn(x)
            h = h + (x,)

            x = downsample(x)

        x = self.mid_block1(x, t)
        x = self.mid_attn(x)
        x = self.mid_block2(x, t)

        i = len(h)
        for up in self.ups:
            block1, block2, attn, upsample = up[0], up[1], up[2], up[3]
            x = cat((x, h[i - 1]), dim = 1)
            x = block1(x, t)

            x = cat((x, h[i - 2]), dim = 1)
            x = block2(x, t)
            x = attn(x)
            i = i - 2

            x = upsample(x)

        x = cat((x, r), dim = 1)

        x = self.final_res_block(x, t)
        return self.final_conv(x)

# gaussian diffusion trainer class

class GaussianDiffusion(_GaussianDiffusion2D):
    """The reference's classifier-guided ``GaussianDiffusion``: the 2D twin's schedules,
    posterior algebra and loss; its own guided DDPM step (``condition_mean``), its DDIM loop
    (no re-derived noise, the pre-step image recorded) and an int ``image_size``."""

    def __init__(
        self,
        model,
        *,
        image_size,
        timesteps = 1000,
        sampling_timesteps = None,
        objective = 'pred_noise',
        beta_schedule = 'sigmoid',
        schedule_fn_kwargs = dict(),
        ddim_sampling_eta = 0.,
        auto_normalize = True,
        min_snr_loss_weight = False,
        min_snr_gamma = 5
    ):
        assert not (type(self) == GaussianDiffusion and model.channels != model.out_dim)
        assert not model.random_or_learned_sinusoidal_cond
        super().__init__(
            model, image_size = image_size, timesteps = timesteps, sampling_timesteps = sampling_timesteps,
            objective = objective, beta_schedule = beta_schedule, schedule_fn_kwargs = schedule_fn_kwargs,
            ddim_sampling_eta = ddim_sampling_eta, auto_normalize = auto_normalize,
            min_snr_loss_weight = min_snr_loss_weight, min_snr_gamma = min_snr_gamma)
        self.image_size = image_size

    def model_predictions(self, x, t, x_self_cond = None, clip_x_start = False):
        return ModelPrediction(*self._model_predictions(x, t, x_self_cond, clip_x_start))

    def condition_mean(self, cond_fn, mean, variance, x, t, guidance_kwargs=None):
        """
        Compute the mean for the previous step, given a function cond_fn that
        computes the gradient of a conditional log probability with respect to
        x. In particular, cond_fn computes grad(log(p(y|x))), and we want to
        condition on y.
        This uses the conditioning strategy from Sohl-Dickstein et al. (2015).
        """
        # use the predicted mean for the previous timestep to compute gradient
        # (the reference also prints the mean of variance * gradient here)
        gradient = cond_fn(mean, t, **guidance_kwargs)
        new_mean = (
            mean.astype(ms.float32) + variance * gradient.astype(ms.float32)
        )
        return new_mean

    # --- the guided DDPM step: the model part compiled, cond_fn (a Python function) outside

    def _guided_mean_step(self, x, t, x_self_cond):
        batched_times = ops.broadcast_to(t, (x.shape[0],))
        if not self.self_condition:
            x_self_cond = None
        model_mean, variance, model_log_variance, x_start = self.p_mean_variance(x = x, t = batched_times, x_self_cond = x_self_cond, clip_denoised = True)
        return model_mean, variance, model_log_variance, x_start

    def _guided_p_sample(self, x, t, x_self_cond, cond_fn, guidance_kwargs, draw):
        if not (exists(cond_fn) and exists(guidance_kwargs)):
            return self._p_sample(x, t, x_self_cond, draw)
        if x_self_cond is None:
            x_self_cond = ops.zeros_like(x) if self.self_condition else x
        batched_times = ops.full((x.shape[0],), t, dtype = ms.int64)
        model_mean, variance, model_log_variance, x_start = self._step('_guided_mean_step')(x, ms.Tensor(t, ms.int64), x_self_cond)
        model_mean = self.condition_mean(cond_fn, model_mean, variance, x, batched_times, guidance_kwargs)

        noise = self._take(draw) if t > 0 else 0. # no noise if t == 0
        pred_img = model_mean + exp(0.5 * model_log_variance) * noise
        return pred_img, x_start

    def p_sample(self, x, t: int, x_self_cond = None, cond_fn=None, guidance_kwargs=None, noise = None):
        if t > 0:
            noise = default(noise, lambda: ops.randn(x.shape, dtype = x.dtype))
        else:
            noise = ops.zeros_like(x) # no noise if t == 0
        return self._guided_p_sample(x, t, x_self_cond, cond_fn, guidance_kwargs, (ops.expand_dims(noise, 0), ms.Tensor(0, ms.int64)))

    def p_sample_loop(self, shape, return_all_timesteps = False, cond_fn=None, guidance_kwargs=None, noise = None):
        shape = tuple(shape)
        draws = self._draws(noise, self.num_timesteps, shape)

        first = next(draws)
        img = self._take(first)
        imgs = [img]

        x_start = None
        last = first

        for t in tqdm(reversed(range(0, self.num_timesteps)), desc = 'sampling loop time step', total = self.num_timesteps):
            self_cond = x_start if self.self_condition else None
            last = next(draws) if t > 0 else last      # t == 0 draws nothing
            img, x_start = self._guided_p_sample(img, t, self_cond, cond_fn, guidance_kwargs, last)
            imgs.append(img)

        ret = img if not return_all_timesteps else ops.stack(imgs, axis = 1)

        ret = self.unnormalize(ret)
        return ret

    def _guided_ddim_step(self, img, time, time_next, noises, i, x_self_cond):
        # the 2D twin's step without re-deriving the noise from the clipped x_start
        time_cond = ops.broadcast_to(time, (img.shape[0],))
        noise = ops.gather(noises, i, 0)
        if not self.self_condition:
            x_self_cond = None
        pred_noise, x_start = self._model_predictions(img, time_cond, x_self_cond, clip_x_start = True)

        alpha = self.alphas_cumprod[time]
        alpha_next = self.alphas_cumprod[time_next]

        sigma = self.ddim_sampling_eta * ops.sqrt((1 - alpha / alpha_next) * (1 - alpha_next) / (1 - alpha))
        c = ops.sqrt(1 - alpha_next - sigma ** 2)

        img = x_start * ops.sqrt(alpha_next) + \
              c * pred_noise + \
              sigma * noise
        return img, x_start

    def ddim_sample(self, shape, return_all_timesteps = False, cond_fn=None, guidance_kwargs=None, noise = None):
        # cond_fn and guidance_kwargs: accepted and not used, as in the reference
        shape = tuple(shape)
        time_pairs = self.ddim_time_pairs() # [(T-1, T-2), (T-2, T-3), ..., (1, 0), (0, -1)]
        draws = self._draws(noise, self.sampling_timesteps, shape)

        first = next(draws)
        img = self._take(first)
        imgs = [img]

        x_start = None
        step = self._step('_guided_ddim_step')
        last = first

        for time, time_next in tqdm(time_pairs, desc = 'sampling loop time step'):
            if self.self_condition:
                self_cond = x_start if x_start is not None else ops.zeros_like(img)
            else:
                self_cond = img   # ignored by the step
            last = next(draws) if time_next >= 0 else last
            new_img, x_start = step(img, ms.Tensor(time, ms.int64), ms.Tensor(max(time_next, 0), ms.int64), *last, self_cond)

            imgs.append(img)

            if time_next < 0:
                img = x_start
                continue

            img = new_img

        ret = img if not return_all_timesteps else ops.stack(imgs, axis = 1)

        ret = self.unnormalize(ret)
        return ret

    def sample(self, batch_size = 16, return_all_timesteps = False, cond_fn=None, guidance_kwargs=None, noise = None):
        image_size, channels = self.image_size, self.channels
        sample_fn = self.p_sample_loop if not self.is_ddim_sampling else self.ddim_sample
        return sample_fn((batch_size, channels, image_size, image_size), return_all_timesteps = return_all_timesteps, cond_fn=cond_fn, guidance_kwargs=guidance_kwargs, noise = noise)

    def p_losses(self, x_start, t, noise = None, loss_reduction = 'mean', self_cond_coin = None):
        return super().p_losses(x_start, t, noise = noise, loss_reduction = loss_reduction, self_cond_coin = self_cond_coin)

    def construct(self, img, loss_reduction = 'mean', noise = None, self_cond_coin = None, t = None):
        b, c, h, w = img.shape
        img_size = self.image_size
        if h != img_size or w != img_size:
            raise AssertionError(f'height and width of image must be {img_size}')
        if t is None:
            t = self.random_times(b)

        img = self.normalize(img)
        return self.p_losses(img, t, noise = noise, loss_reduction = loss_reduction, self_cond_coin = self_cond_coin)

# trainer class

class Trainer(_Trainer):
    """The reference's (older) guided-diffusion Trainer: its arguments (``fp16``, no FID, no
    ``mixed_precision_type`` / ``max_grad_norm`` (1.0)), on the 2D twin's Trainer machinery.
    MindSpore extras as the 2D twin's (keyword-only)."""

    def __init__(
        self,
        diffusion_model,
        folder,
        *,
        train_batch_size = 16,
        gradient_accumulate_every = 1,
        augment_horizontal_flip = True,
        train_lr = 1e-4,
        train_num_steps = 100000,
        ema_update_every = 10,
        ema_decay = 0.995,
        adam_betas = (0.9, 0.99),
        save_and_sample_every = 1000,
        num_samples = 25,
        results_folder = './results',
        amp = False,
        fp16 = False,
        split_batches = True,
        convert_image_to = None,
        **ms_extras
    ):
        super().__init__(
            diffusion_model, folder, train_batch_size = train_batch_size,
            gradient_accumulate_every = gradient_accumulate_every, augment_horizontal_flip = augment_horizontal_flip,
            train_lr = train_lr, train_num_steps = train_num_steps, ema_update_every = ema_update_every,
            ema_decay = ema_decay, adam_betas = adam_betas, save_and_sample_every = save_and_sample_every,
            num_samples = num_samples, results_folder = results_folder, amp = amp or fp16,
            mixed_precision_type = 'fp16', split_batches = split_batches, convert_image_to = convert_image_to,
            calculate_fid = False, max_grad_norm = 1., **ms_extras)

# the reference's example (under its ``if __name__ == '__main__':``)

class Classifier(Module):
    def __init__(self, image_size, num_classes, t_dim=1) -> None:
        super().__init__()
        self.linear_t = Linear(t_dim, num_classes)
        self.linear_img = Linear(image_size * image_size * 3, num_classes)
        name_parameters_by_path(self)

    def construct(self, x, t):
        """
        Args:
            x (_type_): [B, 3, N, N]
            t (_type_): [B,]

        Returns:
                logits [B, num_classes]
        """
        B = x.shape[0]
        t = t.view(B, 1)
        logits = self.linear_t(t.astype(ms.float32)) + self.linear_img(x.view(x.shape[0], -1))
        return logits

def classifier_cond_fn(x, t, classifier, y, classifier_scale=1):
    """
    return the graident of the classifier outputing y wrt x.
    formally expressed as d_log(classifier(x, t)) / dx
    """
    assert y is not None

    def selected_sum(x_in):
        logits = classifier(x_in, t)
        selected = log_softmax_select(logits, y)
        return selected.sum()

    grad = input_gradient(selected_sum, x) * classifier_scale
    return grad
