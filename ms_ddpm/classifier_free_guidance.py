"""MindSpore twin of ``denoising_diffusion_pytorch/classifier_free_guidance.py`` (2.3.4).

Same class names, constructor arguments, defaults, attribute names and submodule indices as
the reference, so every MindSpore parameter name equals the PyTorch state-dict key.
Framework differences are in ``ms_ddpm.ms_compat`` (section "classifier-free guidance").

Randomness is injectable: ``Unet.construct(..., cond_keep_mask=)`` (the reference's own
argument; its local ``keep_mask`` is drawn only when it is None), ``p_losses(...,
noise=, cond_keep_mask=, offset_noise=)``, ``forward(img, times=, ...)`` and the sampling
loops' ``noise`` of shape ``(S, *shape)`` (every ``randn`` the reference draws, in order; see
docs/TEAM_NOTES.md).  Where the reference is broken the twin does the evident right thing
(listed in docs/conditional.md): ``model_predictions`` with ``cond_scale == 1`` (the reference
unpacks a single tensor along the batch) uses the conditional output as the null output.
"""

import math
from functools import partial
from collections import namedtuple

import numpy as np
import mindspore as ms
from mindspore import ops
from tqdm.auto import tqdm

from ms_ddpm.ms_compat import (
    Module, ModuleList, Sequential, Identity, SiLU, Conv2d, TorchConv2d, Linear, GELU,
    NearestUpsample2x, chunk, cat, softmax, randn_parameter, name_parameters_by_path, apply_scale_shift,
    heads_split, heads_merge, matmul_nt, matmul_tn, exp, compiled_step, float32_linspace,
    Embedding, std_unbiased, project_float64,
)
from ms_ddpm.denoising_diffusion_pytorch import (
    RMSNorm, SinusoidalPosEmb as _SinusoidalPosEmb, RandomOrLearnedSinusoidalPosEmb,
    GaussianDiffusion as _GaussianDiffusion2D, linear_beta_schedule, cosine_beta_schedule,
    extract, exists, default, identity, cycle, has_int_squareroot, num_to_groups,
    convert_image_to_fn, normalize_to_neg_one_to_one, unnormalize_to_zero_to_one,
)

# constants

ModelPrediction =  namedtuple('ModelPrediction', ['pred_noise', 'pred_x_start'])

# classifier free guidance functions

def uniform(shape):
    return ops.rand(shape, dtype = ms.float32)

def prob_mask_like(shape, prob):
    if prob == 1:
        return ops.ones(shape, ms.bool_)
    elif prob == 0:
        return ops.zeros(shape, ms.bool_)
    else:
        return uniform(shape) < prob

def project(x, y):
    return project_float64(x, y)

# small helper modules

class Residual(Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def construct(self, x):
        return self.fn(x) + x

def Upsample(dim, dim_out = None):
    return Sequential(
        NearestUpsample2x(),
        Conv2d(dim, default(dim_out, dim), 3, padding = 1)
    )

def Downsample(dim, dim_out = None):
    return TorchConv2d(dim, default(dim_out, dim), 4, 2, 1)

# RMSNorm: the same module as the 2D twin's (imported above)

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

# RandomOrLearnedSinusoidalPosEmb: the same module as the 2D twin's (imported above)

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
    def __init__(self, dim, dim_out, *, time_emb_dim = None, classes_emb_dim = None):
        super().__init__()
        self.mlp = Sequential(
            SiLU(),
            Linear(int(time_emb_dim) + int(classes_emb_dim), dim_out * 2)
        ) if exists(time_emb_dim) or exists(classes_emb_dim) else None

        self.block1 = Block(dim, dim_out)
        self.block2 = Block(dim_out, dim_out)
        self.res_conv = Conv2d(dim, dim_out, 1) if dim != dim_out else Identity()

    def construct(self, x, time_emb = None, class_emb = None):

        scale_shift = None
        if exists(self.mlp) and (exists(time_emb) or exists(class_emb)):
            if exists(time_emb) and exists(class_emb):
                cond_emb = cat((time_emb, class_emb), dim = -1)
            else:
                cond_emb = time_emb if exists(time_emb) else class_emb
            cond_emb = self.mlp(cond_emb)
            cond_emb = cond_emb[:, :, None, None]
            scale_shift = chunk(cond_emb, 2, dim = 1)

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
        num_classes,
        cond_drop_prob = 0.5,
        init_dim = None,
        out_dim = None,
        dim_mults=(1, 2, 4, 8),
        channels = 3,
        learned_variance = False,
        learned_sinusoidal_cond = False,
        random_fourier_features = False,
        learned_sinusoidal_dim = 16,
        attn_dim_head = 32,
        attn_heads = 4
    ):
        super().__init__()

        # classifier free guidance stuff

        self.cond_drop_prob = cond_drop_prob

        # determine dimensions

        self.channels = channels
        input_channels = channels

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

        # class embeddings

        self.num_classes = num_classes   # MindSpore: kept for the commands' label check
        self.classes_emb = Embedding(num_classes, dim)
        self.null_classes_emb = randn_parameter((dim,), 'null_classes_emb')

        classes_dim = dim * 4

        self.classes_mlp = Sequential(
            Linear(dim, classes_dim),
            GELU(),
            Linear(classes_dim, classes_dim)
        )

        # layers

        self.downs = ModuleList([])
        self.ups = ModuleList([])
        num_resolutions = len(in_out)

        for ind, (dim_in, dim_out) in enumerate(in_out):
            is_last = ind >= (num_resolutions - 1)

            self.downs.append(ModuleList([
                ResnetBlock(dim_in, dim_in, time_emb_dim = time_dim, classes_emb_dim = classes_dim),
                ResnetBlock(dim_in, dim_in, time_emb_dim = time_dim, classes_emb_dim = classes_dim),
                Residual(PreNorm(dim_in, LinearAttention(dim_in))),
                Downsample(dim_in, dim_out) if not is_last else Conv2d(dim_in, dim_out, 3, padding = 1)
            ]))

        mid_dim = dims[-1]
        self.mid_block1 = ResnetBlock(mid_dim, mid_dim, time_emb_dim = time_dim, classes_emb_dim = classes_dim)
        self.mid_attn = Residual(PreNorm(mid_dim, Attention(mid_dim, dim_head = attn_dim_head, heads = attn_heads)))
        self.mid_block2 = ResnetBlock(mid_dim, mid_dim, time_emb_dim = time_dim, classes_emb_dim = classes_dim)

        for ind, (dim_in, dim_out) in enumerate(reversed(in_out)):
            is_last = ind == (len(in_out) - 1)

            self.ups.append(ModuleList([
                ResnetBlock(dim_out + dim_in, dim_out, time_emb_dim = time_dim, classes_emb_dim = classes_dim),
                ResnetBlock(dim_out + dim_in, dim_out, time_emb_dim = time_dim, classes_emb_dim = classes_dim),
                Residual(PreNorm(dim_out, LinearAttention(dim_out))),
                Upsample(dim_out, dim_in) if not is_last else  Conv2d(dim_out, dim_in, 3, padding = 1)
            ]))

        default_out_dim = channels * (1 if not learned_variance else 2)
        self.out_dim = default(out_dim, default_out_dim)

        self.final_res_block = ResnetBlock(init_dim * 2, init_dim, time_emb_dim = time_dim, classes_emb_dim = classes_dim)
        self.final_conv = Conv2d(init_dim, self.out_dim, 1)

        name_parameters_by_path(self)

    def forward_with_cond_scale(
        self,
        x,
        time,
        classes,
        cond_scale = 1.,
        rescaled_phi = 0.,
        remove_parallel_component = True,
        keep_parallel_frac = 0.,
        cond_keep_mask = None
    ):
        logits = self.construct(x, time, classes, cond_drop_prob = 0., cond_keep_mask = cond_keep_mask)

        if cond_scale == 1:
            return logits

        null_logits = self.construct(x, time, classes, cond_drop_prob = 1., cond_keep_mask = cond_keep_mask)
        update = logits - null_logits

        if remove_parallel_component:
            parallel, orthog = project(update, logits)
            update = orthog + parallel * keep_parallel_frac

        scaled_logits = logits + update * (cond_scale - 1.)

        if rescaled_phi == 0.:
            return scaled_logits, null_logits

        rescaled_logits = scaled_logits * (std_unbiased(logits) / std_unbiased(scaled_logits))
        interpolated_rescaled_logits = rescaled_logits * rescaled_phi + scaled_logits * (1. - rescaled_phi)

        return interpolated_rescaled_logits, null_logits

    def construct(
        self,
        x,
        time,
        classes,
        cond_drop_prob = None,
        cond_keep_mask = None
    ):
        batch = x.shape[0]

        cond_drop_prob = default(cond_drop_prob, self.cond_drop_prob)

        # derive condition, with condition dropout for classifier free guidance

        classes_emb = self.classes_emb(classes)

        if cond_drop_prob > 0 or exists(cond_keep_mask):
            if exists(cond_keep_mask):
                keep_mask = cond_keep_mask
            else:
                keep_mask = prob_mask_like((batch,), 1 - cond_drop_prob)
            keep_mask = keep_mask.astype(ms.bool_)
            null_classes_emb = ops.broadcast_to(self.null_classes_emb[None, :], classes_emb.shape)

            classes_emb = ops.where(
                keep_mask[:, None],
                classes_emb,
                null_classes_emb
            )

        c = self.classes_mlp(classes_emb)

        # unet

        x = self.init_conv(x)
        r = x

        t = self.time_mlp(time)

        # GRAPH mode compiles a tuple grown by concatenation, not a list with append/pop
        h = ()

        for down in self.downs:
            block1, block2, attn, downsample = down[0], down[1], down[2], down[3]
            x = block1(x, t, c)
            h = h + (x,)

            x = block2(x, t, c)
            x = attn(x)
            h = h + (x,)

            x = downsample(x)

        x = self.mid_block1(x, t, c)
        x = self.mid_attn(x)
        x = self.mid_block2(x, t, c)

        i = len(h)
        for up in self.ups:
            block1, block2, attn, upsample = up[0], up[1], up[2], up[3]
            x = cat((x, h[i - 1]), dim = 1)
            x = block1(x, t, c)

            x = cat((x, h[i - 2]), dim = 1)
            x = block2(x, t, c)
            x = attn(x)
            i = i - 2

            x = upsample(x)

        x = cat((x, r), dim = 1)

        x = self.final_res_block(x, t, c)
        return self.final_conv(x)

# gaussian diffusion trainer class

class GaussianDiffusion(_GaussianDiffusion2D):
    """MindSpore twin of the reference's class-conditional ``GaussianDiffusion``.

    It shares the 2D twin's schedule buffers and posterior algebra (same formulas as this
    reference module); its own are the class-conditional predictions, the guided sampling
    loops and the loss.  ``image_size`` stays an int as in the reference."""

    def __init__(
        self,
        model,
        *,
        image_size,
        timesteps = 1000,
        sampling_timesteps = None,
        objective = 'pred_noise',
        beta_schedule = 'cosine',
        ddim_sampling_eta = 1.,
        offset_noise_strength = 0.,
        min_snr_loss_weight = False,
        min_snr_gamma = 5,
        use_cfg_plus_plus = False # https://arxiv.org/pdf/2406.08070
    ):
        assert not (type(self) == GaussianDiffusion and model.channels != model.out_dim)
        assert not model.random_or_learned_sinusoidal_cond
        if beta_schedule not in ('linear', 'cosine'):
            raise ValueError(f'unknown beta schedule {beta_schedule}')
        model.self_condition = False   # what the 2D constructor reads; the conditional Unet has none
        super().__init__(
            model, image_size = image_size, timesteps = timesteps, sampling_timesteps = sampling_timesteps,
            objective = objective, beta_schedule = beta_schedule, ddim_sampling_eta = ddim_sampling_eta,
            offset_noise_strength = offset_noise_strength, min_snr_loss_weight = min_snr_loss_weight,
            min_snr_gamma = min_snr_gamma)
        del self.self_condition
        self.image_size = image_size
        self.use_cfg_plus_plus = use_cfg_plus_plus

    def random_times(self, batch_size):
        return ops.randint(0, self.num_timesteps, (batch_size,), dtype = ms.int64)

    def random_cond_keep_mask(self, batch_size):
        keep_prob = 1. - self.model.cond_drop_prob
        return prob_mask_like((batch_size,), keep_prob)

    def xm_shared_random_kwargs(self, batch_size):
        # condition dropping is shared across Forward XM candidates

        return dict(
            cond_keep_mask = self.random_cond_keep_mask(batch_size)
        )

    def _model_predictions(self, x, t, classes, cond_scale = 6., rescaled_phi = 0.7, clip_x_start = False):
        out = self.model.forward_with_cond_scale(x, t, classes, cond_scale = cond_scale, rescaled_phi = rescaled_phi)
        if cond_scale == 1:
            # the reference unpacks the single tensor along its batch here (a bug): the null
            # output of an unguided model is its conditional output
            model_output, model_output_null = out, out
        else:
            model_output, model_output_null = out
        maybe_clip = partial(ops.clamp, min = -1., max = 1.) if clip_x_start else identity

        if self.objective == 'pred_noise':
            pred_noise = model_output if not self.use_cfg_plus_plus else model_output_null

            x_start = self.predict_start_from_noise(x, t, model_output)
            x_start = maybe_clip(x_start)

        elif self.objective == 'pred_x0':
            x_start = model_output
            x_start = maybe_clip(x_start)
            x_start_for_pred_noise = x_start if not self.use_cfg_plus_plus else maybe_clip(model_output_null)

            pred_noise = self.predict_noise_from_start(x, t, x_start_for_pred_noise)

        else: # self.objective == 'pred_v'
            v = model_output
            x_start = self.predict_start_from_v(x, t, v)
            x_start = maybe_clip(x_start)

            x_start_for_pred_noise = x_start
            if self.use_cfg_plus_plus:
                x_start_for_pred_noise = self.predict_start_from_v(x, t, model_output_null)
                x_start_for_pred_noise = maybe_clip(x_start_for_pred_noise)

            pred_noise = self.predict_noise_from_start(x, t, x_start_for_pred_noise)

        return pred_noise, x_start

    def model_predictions(self, x, t, classes, cond_scale = 6., rescaled_phi = 0.7, clip_x_start = False):
        return ModelPrediction(*self._model_predictions(x, t, classes, cond_scale, rescaled_phi, clip_x_start))

    def p_mean_variance(self, x, t, classes, cond_scale, rescaled_phi, clip_denoised = True):
        _, x_start = self._model_predictions(x, t, classes, cond_scale, rescaled_phi)

        if clip_denoised:
            x_start = ops.clamp(x_start, -1., 1.)

        model_mean, posterior_variance, posterior_log_variance = self.q_posterior(x_start = x_start, x_t = x, t = t)
        return model_mean, posterior_variance, posterior_log_variance, x_start

    # --- one sampling step each, pure functions of tensors (compiled once per cond_scale/rescaled_phi)

    def _cfg_step(self, name, cond_scale, rescaled_phi):
        key = (name, float(cond_scale), float(rescaled_phi))
        fn = getattr(self, name)
        bound = lambda *args: fn(*args, cond_scale, rescaled_phi)
        if not self.jit_sampling:
            return bound
        if key not in self._jit_steps:
            def step(*args):
                return fn(*args, cond_scale, rescaled_phi)
            self._jit_steps[key] = compiled_step(step)
        return self._jit_steps[key]

    def _cfg_p_sample_step(self, x, t, noises, i, noise_scale, classes, cond_scale, rescaled_phi):
        batched_times = ops.broadcast_to(t, (x.shape[0],))
        model_mean, _, model_log_variance, x_start = self.p_mean_variance(x = x, t = batched_times, classes = classes, cond_scale = cond_scale, rescaled_phi = rescaled_phi, clip_denoised = True)
        noise = ops.gather(noises, i, 0) * noise_scale          # noise_scale: 1, or 0 at t == 0 (the reference adds 0.)
        pred_img = model_mean + exp(0.5 * model_log_variance) * noise
        return pred_img, x_start

    def _cfg_ddim_step(self, img, time, time_next, noises, i, classes, cond_scale, rescaled_phi):
        time_cond = ops.broadcast_to(time, (img.shape[0],))
        noise = ops.gather(noises, i, 0)
        pred_noise, x_start = self._model_predictions(img, time_cond, classes, cond_scale, rescaled_phi, True)

        alpha = self.alphas_cumprod[time]
        alpha_next = self.alphas_cumprod[time_next]

        sigma = self.ddim_sampling_eta * ops.sqrt((1 - alpha / alpha_next) * (1 - alpha_next) / (1 - alpha))
        c = ops.sqrt(1 - alpha_next - sigma ** 2)

        img = x_start * ops.sqrt(alpha_next) + \
              c * pred_noise + \
              sigma * noise
        return img, x_start

    def _p_sample_cfg(self, x, t, classes, cond_scale, rescaled_phi, draw):
        noises, i = draw
        return self._cfg_step('_cfg_p_sample_step', cond_scale, rescaled_phi)(
            x, ms.Tensor(t, ms.int64), noises, i, ms.Tensor(1. if t > 0 else 0., ms.float32), classes)

    def p_sample(self, x, t: int, classes, cond_scale = 6., rescaled_phi = 0.7, clip_denoised = True, noise = None):
        if t > 0:
            noise = default(noise, lambda: ops.randn(x.shape, dtype = x.dtype))
        else:
            noise = ops.zeros_like(x) # no noise if t == 0
        return self._p_sample_cfg(x, t, classes, cond_scale, rescaled_phi, (ops.expand_dims(noise, 0), ms.Tensor(0, ms.int64)))

    def p_sample_loop(self, classes, shape, cond_scale = 6., rescaled_phi = 0.7, noise = None):
        shape = tuple(shape)
        draws = self._draws(noise, self.num_timesteps, shape)

        first = next(draws)
        img = self._take(first)
        last = first

        for t in tqdm(reversed(range(0, self.num_timesteps)), desc = 'sampling loop time step', total = self.num_timesteps):
            last = next(draws) if t > 0 else last      # t == 0 draws nothing (its noise is scaled by 0)
            img, x_start = self._p_sample_cfg(img, t, classes, cond_scale, rescaled_phi, last)

        img = unnormalize_to_zero_to_one(img)
        return img

    def ddim_sample(self, classes, shape, cond_scale = 6., rescaled_phi = 0.7, clip_denoised = True, noise = None):
        shape = tuple(shape)
        time_pairs = self.ddim_time_pairs() # [(T-1, T-2), (T-2, T-3), ..., (1, 0), (0, -1)]
        draws = self._draws(noise, self.sampling_timesteps, shape)

        first = next(draws)
        img = self._take(first)
        step = self._cfg_step('_cfg_ddim_step', cond_scale, rescaled_phi)
        last = first

        for time, time_next in tqdm(time_pairs, desc = 'sampling loop time step'):
            # the last step draws nothing: its image is x_start
            last = next(draws) if time_next >= 0 else last
            new_img, x_start = step(img, ms.Tensor(time, ms.int64), ms.Tensor(max(time_next, 0), ms.int64), *last, classes)

            if time_next < 0:
                img = x_start
                continue

            img = new_img

        img = unnormalize_to_zero_to_one(img)
        return img

    def sample(self, classes, cond_scale = 6., rescaled_phi = 0.7, noise = None):
        batch_size, image_size, channels = classes.shape[0], self.image_size, self.channels
        sample_fn = self.p_sample_loop if not self.is_ddim_sampling else self.ddim_sample
        return sample_fn(classes, (batch_size, channels, image_size, image_size), cond_scale, rescaled_phi, noise = noise)

    def interpolate(self, x1, x2, classes, t = None, lam = 0.5, noise = None):
        b = x1.shape[0]
        t = default(t, self.num_timesteps - 1)

        assert x1.shape == x2.shape

        draws = self._draws(noise, 2 + max(t - 1, 0), tuple(x1.shape))

        t_batched = ops.full((b,), t, dtype = ms.int64)
        d1, d2 = next(draws), next(draws)
        xt1, xt2 = self.q_sample(x1, t = t_batched, noise = self._take(d1)), self.q_sample(x2, t = t_batched, noise = self._take(d2))

        img = (1 - lam) * xt1 + lam * xt2
        last = d2

        for i in tqdm(reversed(range(0, t)), desc = 'interpolation sample time step', total = t):
            last = next(draws) if i > 0 else last      # i == 0 draws nothing
            img, _ = self._p_sample_cfg(img, i, classes, 6., 0.7, last)

        return img

    def p_losses(self, x_start, t, *, classes, noise = None, cond_keep_mask = None, loss_reduction = 'mean', offset_noise = None):
        b, c, h, w = x_start.shape
        if noise is None:
            noise = ops.randn(x_start.shape, dtype = x_start.dtype)

        # the reference's q_sample adds the offset noise to `noise` in place, so the target has it too
        if self.offset_noise_strength > 0.:
            if offset_noise is None:
                offset_noise = ops.randn((b, c), dtype = x_start.dtype)
            noise = noise + self.offset_noise_strength * offset_noise[:, :, None, None]

        # noise sample

        x = (
            extract(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start +
            extract(self.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * noise
        )

        # predict and take gradient step

        model_out = self.model(x, t, classes, None, cond_keep_mask)

        if self.objective == 'pred_noise':
            target = noise
        elif self.objective == 'pred_x0':
            target = x_start
        else: # self.objective == 'pred_v'
            v = self.predict_v(x_start, t, noise)
            target = v

        loss = ops.square(model_out - target)
        loss = loss.reshape(b, -1).mean(1) # reduce(loss, 'b ... -> b', 'mean')

        loss = loss * extract(self.loss_weight, t, loss.shape)

        if loss_reduction == 'none':
            return loss

        return loss.mean()

    def construct(self, img, times = None, cond_keep_mask = None, loss_reduction = 'mean', *, classes, noise = None, offset_noise = None):
        b, c, h, w = img.shape
        img_size = self.image_size
        if h != img_size or w != img_size:
            raise AssertionError(f'height and width of image must be {img_size}')
        if times is None:
            times = self.random_times(b)

        img = normalize_to_neg_one_to_one(img)
        return self.p_losses(img, times, classes = classes, noise = noise, cond_keep_mask = cond_keep_mask, loss_reduction = loss_reduction, offset_noise = offset_noise)

# --- MindSpore extras (issue 14; the reference module has no Dataset or Trainer) ------------

from ms_ddpm.denoising_diffusion_pytorch import Dataset as _Dataset, Trainer as _Trainer   # noqa: E402
from ms_ddpm.ema import EMA   # noqa: E402


def image_folder_classes(folder, exts = ('jpg', 'jpeg', 'png', 'tiff')):
    """torchvision's ``ImageFolder`` layout: ``(class names, [(path, label)])``: one subfolder
    per class, classes = the sorted subfolder names, label = the index of its folder; each
    class's images (``exts``, searched recursively in it) sorted by path."""
    from pathlib import Path
    root = Path(folder)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    items = []
    for label, name in enumerate(classes):
        paths = sorted({p for ext in exts for p in (root / name).glob(f'**/*.{ext}')})
        items += [(p, label) for p in paths]
    return classes, items


class ImageFolderDataset(_Dataset):
    """The 2D ``Dataset``'s transform over an image-folder layout (:func:`image_folder_classes`):
    items ``(image CHW float32 in [0, 1], label int64)``; ``classes`` the class names;
    ``columns`` tells ``ms_ddpm.training.data`` that an item has two columns."""

    columns = ('image', 'label')

    def __init__(self, folder, image_size, exts = ('jpg', 'jpeg', 'png', 'tiff'), augment_horizontal_flip = False,
                 convert_image_to = None):
        super().__init__(folder, image_size, exts = list(exts), augment_horizontal_flip = augment_horizontal_flip,
                         convert_image_to = convert_image_to)
        self.classes, items = image_folder_classes(folder, exts)
        self.paths = [p for p, _ in items]
        self.labels = [label for _, label in items]

    def __getitem__(self, index):
        i = index[0] if isinstance(index, tuple) else index
        return super().__getitem__(index), np.array(self.labels[int(i)], dtype = np.int64)


class ClassConditionalTrainer(_Trainer):
    """The 2D ``Trainer`` (its loop, milestones, checkpoints, resume) for this module's
    ``GaussianDiffusion``, trained on an :class:`ImageFolderDataset`: the batch's labels are
    the forward's ``classes``; its draws (``times``, ``noise``, the Unet's keep mask
    ``cond_keep_mask``) are ``ms_ddpm.training.draws.PROCESS_DRAWS``'s CFG row.  Milestone grids
    have a row per class (cycled), sampled at ``cond_scale`` / ``rescaled_phi``.

    The reference has no CFG Trainer: the arguments are the 2D Trainer's (no FID), without its
    rules for at least 100 images and an effective batch of 16; ``dataset`` may replace
    ``folder`` (any dataset with ``columns = ('image', 'label')`` and ``classes``)."""

    def __init__(
        self,
        diffusion_model,
        folder = None,
        *,
        dataset = None,
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
        mixed_precision_type = 'fp16',
        convert_image_to = None,
        max_grad_norm = 1.,
        cond_scale = 6.,
        rescaled_phi = 0.7,
        seed = 0,
        jit = True,
        draws = None,
        batches = None,
        loss_scale = 2. ** 16,
        loss_scale_factor = 2,
        loss_scale_window = 2000,
        sample_every_milestone = True,
        progress = True,
        num_workers = 1,
        log = print,
    ):
        from pathlib import Path
        self.log, self.seed, self.jit, self.draws = log, int(seed), jit, draws
        self.progress, self.sample_every_milestone, self.split_batches = progress, sample_every_milestone, True
        self.model = diffusion_model
        self.channels = diffusion_model.channels
        if not exists(convert_image_to):
            convert_image_to = {1: 'L', 3: 'RGB', 4: 'RGBA'}.get(self.channels)
        assert has_int_squareroot(num_samples), 'number of samples must have an integer square root'
        self.num_samples, self.save_and_sample_every = num_samples, save_and_sample_every
        self.batch_size, self.gradient_accumulate_every = train_batch_size, gradient_accumulate_every
        self.train_num_steps, self.image_size, self.max_grad_norm = train_num_steps, diffusion_model.image_size, max_grad_norm
        self.cond_scale, self.rescaled_phi = cond_scale, rescaled_phi
        ds = dataset if exists(dataset) else ImageFolderDataset(
            folder, self.image_size, augment_horizontal_flip = augment_horizontal_flip, convert_image_to = convert_image_to)
        assert len(ds) > 0, 'the image folder holds no images'
        num_classes = diffusion_model.model.num_classes if hasattr(diffusion_model.model, 'num_classes') else None
        self.classes = list(getattr(ds, 'classes', []))
        assert num_classes is None or not self.classes or len(self.classes) == num_classes, \
            f'the dataset has {len(self.classes)} classes, the Unet num_classes={num_classes}'
        self._init_data(ds, train_batch_size, seed, augment_horizontal_flip, num_workers, batches)
        self._init_optimizer(diffusion_model, train_lr, adam_betas)
        self.ema = EMA(diffusion_model, beta = ema_decay, update_every = ema_update_every)
        self.results_folder = Path(results_folder)
        self.results_folder.mkdir(exist_ok = True)
        self.step = 0
        self._init_amp(amp, mixed_precision_type, loss_scale, loss_scale_factor, loss_scale_window)
        self._init_train_step()
        self.calculate_fid, self.fid_scorer, self.save_best_and_latest_only = False, None, False

    def sample_classes(self, n):
        """The classes of an ``n``-image milestone grid: row r (of sqrt(n)) is class r mod num_classes."""
        nrow = int(math.sqrt(n))
        return (np.arange(n) // max(nrow, 1)) % int(self.model.model.num_classes)

    def sample_images(self, n, seed = None, ema = True, return_all_timesteps = False):
        model = self.ema.ema_model if ema else self.model
        model.set_train(False)
        if exists(seed):
            ms.set_seed(int(seed) % (2 ** 31))
        classes = self.sample_classes(n)
        out = [model.sample(ms.Tensor(classes[i:i + self.batch_size]), cond_scale = self.cond_scale,
                            rescaled_phi = self.rescaled_phi).asnumpy() for i in range(0, n, self.batch_size)]
        self.model.set_train(True)
        return np.concatenate(out, axis = 0)
