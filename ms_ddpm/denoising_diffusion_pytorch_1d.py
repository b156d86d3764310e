"""MindSpore twin of ``denoising_diffusion_pytorch/denoising_diffusion_pytorch_1d.py`` (2.3.4).

Same class names, constructor arguments, defaults, attribute names and submodule indices as
the reference, so every MindSpore parameter name equals the PyTorch state-dict key and every
shape is torch's (``ms_compat.Conv1d`` keeps the (out, in, k) conv weights that MindSpore's own
``nn.Conv1d`` would store as (out, in, 1, k)).  Framework differences are in
``ms_ddpm.ms_compat``; the machinery of the 2D twin (chunked draws, compiled sampling steps)
and of ``ms_ddpm.training`` is reused, not copied.

MindSpore extras, all keyword arguments with defaults: every random draw can be given
(``noise=``, ``times=``, ``self_cond_coin=``: the value the reference's ``random()`` returns),
``jit_sampling`` (compiled sampling steps) and ``return_all_timesteps`` on the samplers (the
denoising trajectory; the 1D reference has only ``return_noise``).
"""

import math
from pathlib import Path
from functools import partial
from collections import namedtuple

import numpy as np
import mindspore as ms
from mindspore import ops
from tqdm.auto import tqdm

from ms_ddpm.ms_compat import (
    Module, ModuleList, Sequential, Identity, SiLU, Linear, GELU, Dropout, cat, chunk, softmax, exp,
    ones_parameter, randn_parameter, name_parameters_by_path, matmul_nt, matmul_tn,
    buffer_parameter, float64_linspace, float32_linspace, compiled_step,
    Conv1d, NearestUpsample1d, normalize1d, gain, apply_scale_shift, heads_split1d, heads_merge1d,
)
from ms_ddpm.denoising_diffusion_pytorch import GaussianDiffusion as _GaussianDiffusion2D
from ms_ddpm.ema import EMA
from ms_ddpm.io.atomic import atomic_write
from ms_ddpm.training import TrainerCore

# constants

ModelPrediction =  namedtuple('ModelPrediction', ['pred_noise', 'pred_x_start'])

# helpers functions

def exists(x):
    return x is not None

def default(val, d):
    if exists(val):
        return val
    return d() if callable(d) else d

def identity(t, *args, **kwargs):
    return t

def cycle(dl):
    while True:
        for data in dl:
            yield data

def has_int_squareroot(num):
    return (math.sqrt(num) ** 2) == num

def num_to_groups(num, divisor):
    groups = num // divisor
    remainder = num % divisor
    arr = [divisor] * groups
    if remainder > 0:
        arr.append(remainder)
    return arr

def convert_image_to_fn(img_type, image):
    if image.mode != img_type:
        return image.convert(img_type)
    return image

# normalization functions

def normalize_to_neg_one_to_one(img):
    return img * 2 - 1

def unnormalize_to_zero_to_one(t):
    return (t + 1) * 0.5

# data

class Dataset1D:
    """The reference ``Dataset1D(tensor)``: a copy of ``tensor`` (a NumPy array, a MindSpore or
    a torch tensor), item ``idx`` a fresh float32 MindSpore tensor (the reference clones it)."""

    def __init__(self, tensor):
        super().__init__()
        self.tensor = _as_numpy(tensor).copy()

    def __len__(self):
        return len(self.tensor)

    def __getitem__(self, idx):
        return ms.Tensor(self.tensor[int(idx)].copy())

def _as_numpy(x):
    if hasattr(x, 'asnumpy'):
        return x.asnumpy()
    if hasattr(x, 'detach'):
        return x.detach().cpu().numpy()
    return np.asarray(x)

# small helper modules

class Residual(Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def construct(self, x, *args):
        return self.fn(x, *args) + x

def Upsample(dim, dim_out = None):
    return Sequential(
        NearestUpsample1d(),
        Conv1d(dim, default(dim_out, dim), 3, padding = 1)
    )

def Downsample(dim, dim_out = None):
    return Conv1d(dim, default(dim_out, dim), 4, 2, 1)

class RMSNorm(Module):
    def __init__(self, dim):
        super().__init__()
        self.scale = dim ** 0.5                            # the reference's x.shape[1] ** 0.5 (x has dim channels)
        self.g = ones_parameter((1, dim, 1), 'g')

    def construct(self, x):
        return gain(normalize1d(x), self.g, self.scale)   # F.normalize(x, dim = 1) * self.g * self.scale

class PreNorm(Module):
    def __init__(self, dim, fn):
        super().__init__()
        self.fn = fn
        self.norm = RMSNorm(dim)

    def construct(self, x):
        x = self.norm(x)
        return self.fn(x)

# sinusoidal positional embeds

class SinusoidalPosEmb(Module):
    def __init__(self, dim, theta = 10000):
        super().__init__()
        self.dim = dim
        self.theta = theta

    def construct(self, x):
        half_dim = self.dim // 2
        emb = math.log(self.theta) / (half_dim - 1)
        emb = exp(ops.arange(half_dim, dtype = ms.float32) * -emb)
        emb = x.astype(ms.float32)[:, None] * emb[None, :]
        emb = cat((ops.sin(emb), ops.cos(emb)), dim = -1)
        return emb

class RandomOrLearnedSinusoidalPosEmb(Module):
    """ following @crowsonkb 's lead with random (learned optional) sinusoidal pos emb """
    """ https://github.com/crowsonkb/v-diffusion-jax/blob/master/diffusion/models/danbooru_128.py#L8 """

    def __init__(self, dim, is_random = False):
        super().__init__()
        assert (dim % 2) == 0
        half_dim = dim // 2
        self.weights = randn_parameter((half_dim,), 'weights', requires_grad = not is_random)

    def construct(self, x):
        x = x.astype(ms.float32)[:, None]                  # rearrange(x, 'b -> b 1')
        freqs = x * self.weights[None, :] * 2 * math.pi
        fouriered = cat((ops.sin(freqs), ops.cos(freqs)), dim = -1)
        fouriered = cat((x, fouriered), dim = -1)
        return fouriered

# building block modules

class Block(Module):
    def __init__(self, dim, dim_out, dropout = 0.):
        super().__init__()
        self.proj = Conv1d(dim, dim_out, 3, padding = 1)
        self.norm = RMSNorm(dim_out)
        self.act = SiLU()
        self.dropout = Dropout(dropout)

    def construct(self, x, scale_shift = None):
        x = self.proj(x)
        x = self.norm(x)

        if exists(scale_shift):
            scale, shift = scale_shift
            x = apply_scale_shift(x, scale, shift)           # x * (scale + 1) + shift

        x = self.act(x)
        return self.dropout(x)

class ResnetBlock(Module):
    def __init__(self, dim, dim_out, *, time_emb_dim = None, dropout = 0.):
        super().__init__()
        self.mlp = Sequential(
            SiLU(),
            Linear(time_emb_dim, dim_out * 2)
        ) if exists(time_emb_dim) else None

        self.block1 = Block(dim, dim_out, dropout = dropout)
        self.block2 = Block(dim_out, dim_out)
        self.res_conv = Conv1d(dim, dim_out, 1) if dim != dim_out else Identity()

    def construct(self, x, time_emb = None):

        scale_shift = None
        if exists(self.mlp) and exists(time_emb):
            time_emb = self.mlp(time_emb)
            time_emb = time_emb[:, :, None]               # rearrange(time_emb, 'b c -> b c 1')
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
        self.to_qkv = Conv1d(dim, hidden_dim * 3, 1, bias = False)

        self.to_out = Sequential(
            Conv1d(hidden_dim, dim, 1),
            RMSNorm(dim)
        )

    def construct(self, x):
        q, k, v = chunk(self.to_qkv(x), 3, dim = 1)
        q = heads_split1d(q, self.heads)                   # 'b (h c) n -> b h c n'
        k = heads_split1d(k, self.heads)
        v = heads_split1d(v, self.heads)

        q = softmax(q, dim = -2)
        k = softmax(k, dim = -1)

        q = q * self.scale

        context = matmul_nt(k, v)                          # einsum('b h d n, b h e n -> b h d e', k, v)

        out = matmul_tn(context, q)                        # einsum('b h d e, b h d n -> b h e n', context, q)
        out = heads_merge1d(out)                           # 'b h c n -> b (h c) n'
        return self.to_out(out)

class Attention(Module):
    def __init__(self, dim, heads = 4, dim_head = 32):
        super().__init__()
        self.scale = dim_head ** -0.5
        self.heads = heads
        hidden_dim = dim_head * heads

        self.to_qkv = Conv1d(dim, hidden_dim * 3, 1, bias = False)
        self.to_out = Conv1d(hidden_dim, dim, 1)

    def construct(self, x):
        q, k, v = chunk(self.to_qkv(x), 3, dim = 1)
        q = heads_split1d(q, self.heads)                   # 'b (h c) n -> b h c n'
        k = heads_split1d(k, self.heads)
        v = heads_split1d(v, self.heads)

        q = q * self.scale

        sim = matmul_tn(q, k)                              # einsum('b h d i, b h d j -> b h i j', q, k)
        attn = softmax(sim, dim = -1)
        out = matmul_nt(attn, v)                           # einsum('b h i j, b h d j -> b h i d', attn, v)

        out = heads_merge1d(ops.swapaxes(out, -1, -2))     # rearrange(out, 'b h n d -> b (h d) n')
        return self.to_out(out)

# model

class Unet1D(Module):
    def __init__(
        self,
        dim,
        init_dim = None,
        out_dim = None,
        dim_mults=(1, 2, 4, 8),
        channels = 3,
        dropout = 0.,
        self_condition = False,
        learned_variance = False,
        learned_sinusoidal_cond = False,
        random_fourier_features = False,
        learned_sinusoidal_dim = 16,
        sinusoidal_pos_emb_theta = 10000,
        attn_dim_head = 32,
        attn_heads = 4
    ):
        super().__init__()

        # determine dimensions

        self.channels = channels
        self.self_condition = self_condition
        input_channels = channels * (2 if self_condition else 1)

        init_dim = default(init_dim, dim)
        self.init_conv = Conv1d(input_channels, init_dim, 7, padding = 3)

        dims = [init_dim, *map(lambda m: dim * m, dim_mults)]
        in_out = list(zip(dims[:-1], dims[1:]))

        # time embeddings

        time_dim = dim * 4

        self.random_or_learned_sinusoidal_cond = learned_sinusoidal_cond or random_fourier_features

        if self.random_or_learned_sinusoidal_cond:
            sinu_pos_emb = RandomOrLearnedSinusoidalPosEmb(learned_sinusoidal_dim, random_fourier_features)
            fourier_dim = learned_sinusoidal_dim + 1
        else:
            sinu_pos_emb = SinusoidalPosEmb(dim, theta = sinusoidal_pos_emb_theta)
            fourier_dim = dim

        self.time_mlp = Sequential(
            sinu_pos_emb,
            Linear(fourier_dim, time_dim),
            GELU(),
            Linear(time_dim, time_dim)
        )

        resnet_block = partial(ResnetBlock, time_emb_dim = time_dim, dropout = dropout)

        # layers

        self.downs = ModuleList([])
        self.ups = ModuleList([])
        num_resolutions = len(in_out)

        for ind, (dim_in, dim_out) in enumerate(in_out):
            is_last = ind >= (num_resolutions - 1)

            self.downs.append(ModuleList([
                resnet_block(dim_in, dim_in),
                resnet_block(dim_in, dim_in),
                Residual(PreNorm(dim_in, LinearAttention(dim_in))),
                Downsample(dim_in, dim_out) if not is_last else Conv1d(dim_in, dim_out, 3, padding = 1)
            ]))

        mid_dim = dims[-1]
        self.mid_block1 = resnet_block(mid_dim, mid_dim)
        self.mid_attn = Residual(PreNorm(mid_dim, Attention(mid_dim, dim_head = attn_dim_head, heads = attn_heads)))
        self.mid_block2 = resnet_block(mid_dim, mid_dim)

        for ind, (dim_in, dim_out) in enumerate(reversed(in_out)):
            is_last = ind == (len(in_out) - 1)

            self.ups.append(ModuleList([
                resnet_block(dim_out + dim_in, dim_out),
                resnet_block(dim_out + dim_in, dim_out),
                Residual(PreNorm(dim_out, LinearAttention(dim_out))),
                Upsample(dim_out, dim_in) if not is_last else  Conv1d(dim_out, dim_in, 3, padding = 1)
            ]))

        default_out_dim = channels * (1 if not learned_variance else 2)
        self.out_dim = default(out_dim, default_out_dim)

        self.final_res_block = resnet_block(init_dim * 2, init_dim)
        self.final_conv = Conv1d(init_dim, self.out_dim, 1)

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

def extract(a, t, x_shape):
    b = t.shape[0]
    out = ops.gather(a, t, 0)
    return out.reshape((b,) + (1,) * (len(x_shape) - 1))

def linear_beta_schedule(timesteps):
    scale = 1000 / timesteps
    beta_start = scale * 0.0001
    beta_end = scale * 0.02
    return float64_linspace(beta_start, beta_end, timesteps)

def cosine_beta_schedule(timesteps, s = 0.008):
    """
    cosine schedule
    as proposed in https://openreview.net/forum?id=-NEXDKk8gZ
    """
    steps = timesteps + 1
    x = float64_linspace(0, timesteps, steps)
    alphas_cumprod = np.cos(((x / timesteps) + s) / (1 + s) * math.pi * 0.5) ** 2
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    betas = 1 - (alphas_cumprod[1:] / alphas_cumprod[:-1])
    return np.clip(betas, 0, 0.999)

# the 13 schedule buffers GaussianDiffusion1D registers (part of its state dict), in order
DIFFUSION_BUFFERS = (
    'betas', 'alphas_cumprod', 'alphas_cumprod_prev',
    'sqrt_alphas_cumprod', 'sqrt_one_minus_alphas_cumprod', 'log_one_minus_alphas_cumprod',
    'sqrt_recip_alphas_cumprod', 'sqrt_recipm1_alphas_cumprod',
    'posterior_variance', 'posterior_log_variance_clipped',
    'posterior_mean_coef1', 'posterior_mean_coef2', 'loss_weight',
)

class GaussianDiffusion1D(Module):
    """MindSpore twin of the reference ``GaussianDiffusion1D``.

    Beyond the reference, every random draw can be supplied: ``forward``/``p_losses`` take
    ``times=``, ``noise=`` and ``self_cond_coin=`` (the reference's ``random()``); the samplers
    take ``noise`` of shape ``(S, *shape)``, every ``randn`` the reference draws in its order
    (``noise[0]`` the start, then one per step that adds noise: S = num_timesteps for DDPM,
    sampling_timesteps for DDIM); ``interpolate`` ``(2 + t - 1, *x1.shape)``.  By default draws
    come from MindSpore's RNG (``ms.set_seed``).  The 13 schedule buffers are non-trainable
    Parameters named like the reference's buffers.  Sampling steps are compiled (``ms.jit``)
    unless ``jit_sampling = False`` or ``model_forward_kwargs`` are given: a dict of tensors
    does not pass into a MindSpore 2.8 graph (its keys arrive instead of its values), so with
    ``model_forward_kwargs`` the steps run op by op, and a compiled loss needs them empty.
    ``forward`` takes the reference's ``*args``/``**kwargs`` (p_losses's ``noise``,
    ``model_forward_kwargs``, ``return_reduced_loss``) as keywords.
    """

    def __init__(
        self,
        model,
        *,
        seq_length,
        timesteps = 1000,
        sampling_timesteps = None,
        objective = 'pred_noise',
        beta_schedule = 'cosine',
        ddim_sampling_eta = 0.,
        auto_normalize = True,
        channels = None,
        self_condition = None,
        channel_first = True
    ):
        super().__init__()
        self.model = model
        self.channels = default(channels, lambda: self.model.channels)
        self.self_condition = default(self_condition, lambda: self.model.self_condition)

        self.channel_first = channel_first
        self.seq_index = -2 if not channel_first else -1

        self.seq_length = seq_length

        self.objective = objective

        assert objective in {'pred_noise', 'pred_x0', 'pred_v'}, 'objective must be either pred_noise (predict noise) or pred_x0 (predict image start) or pred_v (predict v [v-parameterization as defined in appendix D of progressive distillation paper, used in imagen-video successfully])'

        if beta_schedule == 'linear':
            betas = linear_beta_schedule(timesteps)
        elif beta_schedule == 'cosine':
            betas = cosine_beta_schedule(timesteps)
        else:
            raise ValueError(f'unknown beta schedule {beta_schedule}')

        alphas = 1. - betas
        alphas_cumprod = np.cumprod(alphas, axis=0)
        alphas_cumprod_prev = np.pad(alphas_cumprod[:-1], (1, 0), constant_values = 1.)

        timesteps, = betas.shape
        self.num_timesteps = int(timesteps)

        # sampling related parameters

        self.sampling_timesteps = default(sampling_timesteps, timesteps) # default num sampling timesteps to number of timesteps at training

        assert self.sampling_timesteps <= timesteps
        self.is_ddim_sampling = self.sampling_timesteps < timesteps
        self.ddim_sampling_eta = ddim_sampling_eta

        # helper function to register buffer from float64 to float32

        register_buffer = lambda name, val: self.register_buffer(name, val)

        register_buffer('betas', betas)
        register_buffer('alphas_cumprod', alphas_cumprod)
        register_buffer('alphas_cumprod_prev', alphas_cumprod_prev)

        # calculations for diffusion q(x_t | x_{t-1}) and others

        register_buffer('sqrt_alphas_cumprod', np.sqrt(alphas_cumprod))
        register_buffer('sqrt_one_minus_alphas_cumprod', np.sqrt(1. - alphas_cumprod))
        register_buffer('log_one_minus_alphas_cumprod', np.log(1. - alphas_cumprod))
        register_buffer('sqrt_recip_alphas_cumprod', np.sqrt(1. / alphas_cumprod))
        register_buffer('sqrt_recipm1_alphas_cumprod', np.sqrt(1. / alphas_cumprod - 1))

        # calculations for posterior q(x_{t-1} | x_t, x_0)

        posterior_variance = betas * (1. - alphas_cumprod_prev) / (1. - alphas_cumprod)

        # above: equal to 1. / (1. / (1. - alpha_cumprod_tm1) + alpha_t / beta_t)

        register_buffer('posterior_variance', posterior_variance)

        # below: log calculation clipped because the posterior variance is 0 at the beginning of the diffusion chain

        register_buffer('posterior_log_variance_clipped', np.log(np.clip(posterior_variance, 1e-20, None)))
        register_buffer('posterior_mean_coef1', betas * np.sqrt(alphas_cumprod_prev) / (1. - alphas_cumprod))
        register_buffer('posterior_mean_coef2', (1. - alphas_cumprod_prev) * np.sqrt(alphas) / (1. - alphas_cumprod))

        # calculate loss weight

        snr = alphas_cumprod / (1 - alphas_cumprod)

        if objective == 'pred_noise':
            loss_weight = np.ones_like(snr)
        elif objective == 'pred_x0':
            loss_weight = snr
        elif objective == 'pred_v':
            loss_weight = snr / (snr + 1)

        register_buffer('loss_weight', loss_weight)

        # whether to autonormalize

        self.auto_normalize = auto_normalize
        self.normalize = normalize_to_neg_one_to_one if auto_normalize else identity
        self.unnormalize = unnormalize_to_zero_to_one if auto_normalize else identity

        # MindSpore: sampling steps run as compiled graphs (ms.jit), built on first use

        self.jit_sampling = True
        self._jit_steps = {}

        name_parameters_by_path(self)

    def register_buffer(self, name, val):
        """``torch.nn.Module.register_buffer`` of a float64 array, stored as float32: a
        non-trainable Parameter, so it is part of the state like the reference's buffer."""
        setattr(self, name, buffer_parameter(val, name))

    def predict_start_from_noise(self, x_t, t, noise):
        return (
            extract(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t -
            extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape) * noise
        )

    def predict_noise_from_start(self, x_t, t, x0):
        return (
            (extract(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t - x0) / \
            extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape)
        )

    def predict_v(self, x_start, t, noise):
        return (
            extract(self.sqrt_alphas_cumprod, t, x_start.shape) * noise -
            extract(self.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * x_start
        )

    def predict_start_from_v(self, x_t, t, v):
        return (
            extract(self.sqrt_alphas_cumprod, t, x_t.shape) * x_t -
            extract(self.sqrt_one_minus_alphas_cumprod, t, x_t.shape) * v
        )

    def q_posterior(self, x_start, x_t, t):
        posterior_mean = (
            extract(self.posterior_mean_coef1, t, x_t.shape) * x_start +
            extract(self.posterior_mean_coef2, t, x_t.shape) * x_t
        )
        posterior_variance = extract(self.posterior_variance, t, x_t.shape)
        posterior_log_variance_clipped = extract(self.posterior_log_variance_clipped, t, x_t.shape)
        return posterior_mean, posterior_variance, posterior_log_variance_clipped

    @property
    def device(self):
        return ms.get_context('device_target')

    def _model_predictions(self, x, t, x_self_cond = None, clip_x_start = False, rederive_pred_noise = False, model_forward_kwargs: dict = dict()):
        # a plain tuple: GRAPH mode builds namedtuples through a Python fallback whose outputs
        # lose their static shapes (see the 2D twin)
        if exists(x_self_cond):
            model_output = self.model(x, t, x_self_cond = x_self_cond, **model_forward_kwargs)
        else:
            model_output = self.model(x, t, **model_forward_kwargs)

        if self.objective == 'pred_noise':
            pred_noise = model_output
            x_start = self.predict_start_from_noise(x, t, pred_noise)
            if clip_x_start:
                x_start = ops.clamp(x_start, -1., 1.)

            if clip_x_start and rederive_pred_noise:
                pred_noise = self.predict_noise_from_start(x, t, x_start)

        elif self.objective == 'pred_x0':
            x_start = model_output
            if clip_x_start:
                x_start = ops.clamp(x_start, -1., 1.)
            pred_noise = self.predict_noise_from_start(x, t, x_start)

        else: # self.objective == 'pred_v'
            v = model_output
            x_start = self.predict_start_from_v(x, t, v)
            if clip_x_start:
                x_start = ops.clamp(x_start, -1., 1.)
            pred_noise = self.predict_noise_from_start(x, t, x_start)

        return pred_noise, x_start

    def model_predictions(self, x, t, x_self_cond = None, clip_x_start = False, rederive_pred_noise = False, model_forward_kwargs: dict = dict()):
        return ModelPrediction(*self._model_predictions(x, t, x_self_cond, clip_x_start, rederive_pred_noise, model_forward_kwargs))

    def p_mean_variance(self, x, t, x_self_cond = None, clip_denoised = True, model_forward_kwargs: dict = dict()):
        _, x_start = self._model_predictions(x, t, x_self_cond, model_forward_kwargs = model_forward_kwargs) # preds.pred_x_start

        if clip_denoised:
            x_start = ops.clamp(x_start, -1., 1.)

        model_mean, posterior_variance, posterior_log_variance = self.q_posterior(x_start = x_start, x_t = x, t = t)
        return model_mean, posterior_variance, posterior_log_variance, x_start

    # --- one sampling step each, as pure functions of tensors, so they compile (ms.jit) once
    # per (step, clip_denoised).  The draw is ``noises[i]`` (a chunk of draws and a 0-d index,
    # see the 2D twin's ``_draws``), so the loops launch no PyNative op per step.

    def _p_sample_step(self, x, t, noises, i, noise_scale, x_self_cond, clip_denoised = True, model_forward_kwargs = dict()):
        batched_times = ops.broadcast_to(t, (x.shape[0],))   # t: a 0-d int64 tensor (no host op per step)
        if not self.self_condition:
            x_self_cond = None
        model_mean, _, model_log_variance, x_start = self.p_mean_variance(x = x, t = batched_times, x_self_cond = x_self_cond, clip_denoised = clip_denoised, model_forward_kwargs = model_forward_kwargs)
        noise = ops.gather(noises, i, 0) * noise_scale          # noise_scale: 1, or 0 at t == 0 (the reference adds 0.)
        pred_img = model_mean + exp(0.5 * model_log_variance) * noise
        return pred_img, x_start

    def _ddim_step(self, img, time, time_next, noises, i, x_self_cond, clip_denoised = True, model_forward_kwargs = dict()):
        time_cond = ops.broadcast_to(time, (img.shape[0],))
        noise = ops.gather(noises, i, 0)
        if not self.self_condition:
            x_self_cond = None
        pred_noise, x_start = self._model_predictions(img, time_cond, x_self_cond, clip_x_start = clip_denoised, model_forward_kwargs = model_forward_kwargs)

        alpha = self.alphas_cumprod[time]
        alpha_next = self.alphas_cumprod[time_next]

        sigma = self.ddim_sampling_eta * ops.sqrt((1 - alpha / alpha_next) * (1 - alpha_next) / (1 - alpha))
        c = ops.sqrt(1 - alpha_next - sigma ** 2)

        img = x_start * ops.sqrt(alpha_next) + \
              c * pred_noise + \
              sigma * noise
        return img, x_start

    def _step(self, name, clip_denoised, model_forward_kwargs):
        fn = getattr(self, name)
        if not self.jit_sampling or model_forward_kwargs:
            # model_forward_kwargs (a dict of tensors) do not pass into a graph: run op by op
            return partial(fn, clip_denoised = clip_denoised, model_forward_kwargs = model_forward_kwargs)
        key = (name, bool(clip_denoised))
        if key not in self._jit_steps:
            def step(*args):
                return fn(*args, clip_denoised = bool(clip_denoised))
            self._jit_steps[key] = compiled_step(step)
        return self._jit_steps[key]

    # fresh draws are made this many float32 values at a time (32 MiB), as in the 2D twin
    DRAW_CHUNK_VALUES = _GaussianDiffusion2D.DRAW_CHUNK_VALUES
    _draws = _GaussianDiffusion2D._draws
    _take = staticmethod(_GaussianDiffusion2D._take)

    def _p_sample(self, x, t, x_self_cond, draw, clip_denoised = True, model_forward_kwargs = dict()):
        """One DDPM step with its draw as ``(noises, i)`` (unused, and no noise added, at t == 0)."""
        if x_self_cond is None:
            # what the Unet substitutes for None; without self-conditioning the step ignores
            # it, so any tensor of the right shape will do (no zeros allocated per step)
            x_self_cond = ops.zeros_like(x) if self.self_condition else x
        noises, i = draw
        return self._step('_p_sample_step', clip_denoised, model_forward_kwargs)(
            x, ms.Tensor(t, ms.int64), noises, i, ms.Tensor(1. if t > 0 else 0., ms.float32), x_self_cond)

    def p_sample(self, x, t: int, x_self_cond = None, clip_denoised = True, model_forward_kwargs: dict = dict(), noise = None):
        if t > 0:
            noise = default(noise, lambda: ops.randn(x.shape, dtype = x.dtype))
        else:
            noise = ops.zeros_like(x) # no noise if t == 0
        return self._p_sample(x, t, x_self_cond, (ops.expand_dims(noise, 0), ms.Tensor(0, ms.int64)), clip_denoised, model_forward_kwargs)

    def p_sample_loop(self, shape, return_noise = False, model_forward_kwargs: dict = dict(), noise = None, return_all_timesteps = False):
        shape = tuple(shape)
        draws = self._draws(noise, self.num_timesteps, shape)

        first = next(draws)
        noise = self._take(first)
        img = noise
        imgs = [img]

        x_start = None
        last = first

        for t in tqdm(reversed(range(0, self.num_timesteps)), desc = 'sampling loop time step', total = self.num_timesteps):
            self_cond = x_start if self.self_condition else None
            last = next(draws) if t > 0 else last      # t == 0 draws nothing (its noise is scaled by 0)
            img, x_start = self._p_sample(img, t, self_cond, last, model_forward_kwargs = model_forward_kwargs)
            imgs.append(img)

        img = img if not return_all_timesteps else ops.stack(imgs, axis = 1)

        img = self.unnormalize(img)

        if not return_noise:
            return img

        return img, noise

    def ddim_time_pairs(self):
        """The reference's (time, time_next) pairs: ``torch.linspace(-1, T - 1, S + 1).int()``
        reproduced in float32 with torch's CPU linspace formula, so the times are identical."""
        times = float32_linspace(-1, self.num_timesteps - 1, self.sampling_timesteps + 1)
        times = list(reversed(times.astype(np.int32).tolist()))
        return list(zip(times[:-1], times[1:]))

    def ddim_sample(self, shape, clip_denoised = True, model_forward_kwargs: dict = dict(), return_noise = False, noise = None, return_all_timesteps = False):
        shape = tuple(shape)
        time_pairs = self.ddim_time_pairs() # [(T-1, T-2), (T-2, T-3), ..., (1, 0), (0, -1)]
        draws = self._draws(noise, self.sampling_timesteps, shape)

        first = next(draws)
        img = self._take(first)
        imgs = [img]

        x_start = None
        step = self._step('_ddim_step', clip_denoised, model_forward_kwargs)
        last = first

        for time, time_next in tqdm(time_pairs, desc = 'sampling loop time step'):
            if self.self_condition:
                self_cond = x_start if x_start is not None else ops.zeros_like(img)
            else:
                self_cond = img   # ignored by the step (no zeros allocated per step)
            # the last step draws nothing: its image is x_start, any draw will do for the unused rest
            last = next(draws) if time_next >= 0 else last
            new_img, x_start = step(img, ms.Tensor(time, ms.int64), ms.Tensor(max(time_next, 0), ms.int64), *last, self_cond)

            if time_next < 0:
                img = x_start
                imgs.append(img)
                continue

            img = new_img
            imgs.append(img)

        img = img if not return_all_timesteps else ops.stack(imgs, axis = 1)

        img = self.unnormalize(img)

        if not return_noise:
            return img

        # the reference returns its variable ``noise``: the last draw of the loop (the start
        # noise when the loop drew none)
        return img, self._take(last)

    def sample(self, batch_size = 16, return_noise = False, model_forward_kwargs: dict = dict(), noise = None, return_all_timesteps = False):
        seq_length, channels = self.seq_length, self.channels
        sample_fn = self.p_sample_loop if not self.is_ddim_sampling else self.ddim_sample

        shape = (batch_size, channels, seq_length) if self.channel_first else (batch_size, seq_length, channels)
        return sample_fn(shape, return_noise = return_noise, model_forward_kwargs = model_forward_kwargs, noise = noise, return_all_timesteps = return_all_timesteps)

    def interpolate(self, x1, x2, t = None, lam = 0.5, noise = None):
        b = x1.shape[0]
        t = default(t, self.num_timesteps - 1)

        assert x1.shape == x2.shape

        draws = self._draws(noise, 2 + max(t - 1, 0), tuple(x1.shape))

        t_batched = ops.full((b,), t, dtype = ms.int64)
        d1, d2 = next(draws), next(draws)
        xt1, xt2 = self.q_sample(x1, t = t_batched, noise = self._take(d1)), self.q_sample(x2, t = t_batched, noise = self._take(d2))

        img = (1 - lam) * xt1 + lam * xt2

        x_start = None
        last = d2

        for i in tqdm(reversed(range(0, t)), desc = 'interpolation sample time step', total = t):
            self_cond = x_start if self.self_condition else None
            last = next(draws) if i > 0 else last      # i == 0 draws nothing (its noise is scaled by 0)
            img, x_start = self._p_sample(img, i, self_cond, last)

        return img

    def q_sample(self, x_start, t, noise = None):
        if noise is None:
            noise = ops.randn(x_start.shape, dtype = x_start.dtype)

        return (
            extract(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start +
            extract(self.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * noise
        )

    def p_losses(self, x_start, t, noise = None, model_forward_kwargs: dict = dict(), return_reduced_loss = True, loss_reduction = 'mean', self_cond_coin = None):
        b = x_start.shape[0]
        n = x_start.shape[self.seq_index]

        if noise is None:
            noise = ops.randn(x_start.shape, dtype = x_start.dtype)

        # noise sample

        x = self.q_sample(x_start = x_start, t = t, noise = noise)

        # if doing self-conditioning, 50% of the time, predict x_start from current set of times
        # and condition with unet with that
        # this technique will slow down training by 25%, but seems to lower FID significantly

        x_self_cond = None
        if self.self_condition:
            if self_cond_coin is None:
                self_cond_coin = ops.rand(()) # the reference's random()
            if self_cond_coin < 0.5:
                _, x_self_cond = self._model_predictions(x, t, model_forward_kwargs = model_forward_kwargs) # .pred_x_start
                x_self_cond = ops.stop_gradient(x_self_cond)
            else:
                x_self_cond = ops.zeros_like(x) # what the Unet substitutes for None

        # predict and take gradient step

        if exists(x_self_cond):
            model_out = self.model(x, t, x_self_cond = x_self_cond, **model_forward_kwargs)
        else:
            model_out = self.model(x, t, **model_forward_kwargs)

        if self.objective == 'pred_noise':
            target = noise
        elif self.objective == 'pred_x0':
            target = x_start
        else: # self.objective == 'pred_v'
            v = self.predict_v(x_start, t, noise)
            target = v

        loss = ops.square(model_out - target)    # F.mse_loss(model_out, target, reduction = 'none')

        if not return_reduced_loss:
            return loss * extract(self.loss_weight, t, loss.shape)

        loss = loss.reshape(b, -1).mean(1)       # reduce(loss, 'b ... -> b', 'mean')

        loss = loss * extract(self.loss_weight, t, loss.shape)

        if loss_reduction == 'none':
            return loss

        return loss.mean()

    def random_times(self, batch_size):
        return ops.randint(0, self.num_timesteps, (batch_size,), dtype = ms.int64)

    def construct(self, img, times = None, loss_reduction = 'mean', noise = None, model_forward_kwargs: dict = dict(), return_reduced_loss = True, self_cond_coin = None):
        # the reference's forward(img, *args, times = None, loss_reduction = 'mean', **kwargs),
        # its *args/**kwargs (p_losses's noise, model_forward_kwargs, return_reduced_loss) as
        # keywords: GRAPH mode binds keywords after *args wrongly
        b, n, seq_length = img.shape[0], img.shape[self.seq_index], self.seq_length

        if n != seq_length:
            raise AssertionError(f'seq length must be {seq_length}')

        if times is None:
            times = self.random_times(b)

        img = normalize_to_neg_one_to_one(img) if self.auto_normalize else img
        return self.p_losses(img, times, noise, model_forward_kwargs, return_reduced_loss, loss_reduction = loss_reduction, self_cond_coin = self_cond_coin)

# trainer class

class Trainer1D(TrainerCore):
    """MindSpore twin of the reference ``Trainer1D``: same arguments and defaults; the shared
    machinery (data order and pipeline, draws, compiled step with accumulation, clipping and
    Adam, loss scaling, checkpoints) is ``ms_ddpm.training.TrainerCore``, as for ``Trainer``.
    ``dataset`` is a ``Dataset1D`` (or any sequence of (channels, seq_length) arrays).

    MindSpore extras, keyword-only with defaults: ``seed`` (data order and the counter-based
    training draws, see ``ms_ddpm.training.draws_for``; the sampling seed of each milestone),
    ``jit`` (compiled train step), ``draws``/``batches`` (injected draws / NumPy batches, for
    parity tests), ``loss_scale``/``loss_scale_factor``/``loss_scale_window`` (amp),
    ``sample_every_milestone``, ``progress``, ``num_workers``, ``log``.

    At each milestone the reference ``torch.save``s the sample tensor under the name
    ``sample-{milestone}.png``; the twin writes it as a NumPy ``sample-{milestone}.npy``
    (atomically), and the training state as ``model-{milestone}.ckpt`` (see ``save``).
    """

    def __init__(
        self,
        diffusion_model,
        dataset,
        *,
        train_batch_size = 16,
        gradient_accumulate_every = 1,
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
        split_batches = True,
        max_grad_norm = 1.,
        # MindSpore extras
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
        super().__init__()

        self.log = log
        self.seed = int(seed)
        self.jit = jit
        self.draws = draws
        self.progress = progress
        self.sample_every_milestone = sample_every_milestone
        self.split_batches = split_batches   # single process: nothing to split (see docs/training.md)

        # model

        self.model = diffusion_model
        self.channels = diffusion_model.channels

        # sampling and training hyperparameters

        assert has_int_squareroot(num_samples), 'number of samples must have an integer square root'
        self.num_samples = num_samples
        self.save_and_sample_every = save_and_sample_every

        self.batch_size = train_batch_size
        self.gradient_accumulate_every = gradient_accumulate_every
        self.max_grad_norm = max_grad_norm

        self.train_num_steps = train_num_steps

        # dataset and its mindspore.dataset pipeline (the reference's shuffled DataLoader, seeded)

        self._init_data(dataset, train_batch_size, seed, False, num_workers, batches, flip_aware = False)

        # optimizer (torch.optim.Adam's update)

        self._init_optimizer(diffusion_model, train_lr, adam_betas)

        # for logging results in a folder periodically

        self.ema = EMA(diffusion_model, beta = ema_decay, update_every = ema_update_every)

        self.results_folder = Path(results_folder)
        self.results_folder.mkdir(exist_ok = True)

        # step counter state

        self.step = 0

        # mixed precision and the compiled train step; the shared step calls the model with the
        # 2D forward's positional layout, GaussianDiffusion1D takes these by keyword

        self._init_amp(amp, mixed_precision_type, loss_scale, loss_scale_factor, loss_scale_window)
        self.train_model = _keyword_forward(self.train_model)
        self._init_train_step()

    def save(self, milestone):
        """``results_folder/model-{milestone}.ckpt``: the whole training state (see
        ``TrainerCore.write_checkpoint``); returns its path."""
        return self.write_checkpoint(milestone)

    def load(self, milestone):
        meta = self.read_checkpoint(milestone)

        if 'version' in meta:
            self.log(f"loading from version {meta['version']}")

    def train(self):
        with tqdm(initial = self.step, total = self.train_num_steps, disable = not (self.progress and self.is_main_process)) as pbar:

            while self.step < self.train_num_steps:
                self.model.set_train(True)

                total_loss = self.train_step()     # accumulation, clipping and Adam (TrainerCore)
                self.last_loss = total_loss

                pbar.set_description(f'loss: {total_loss:.4f}')

                self.step += 1
                if self.is_main_process:
                    self.ema.update()

                    if self.step != 0 and self.step % self.save_and_sample_every == 0:
                        milestone = self.step // self.save_and_sample_every

                        if self.sample_every_milestone:
                            all_samples = self.sample_images(self.num_samples, seed = self.seed * 1000003 + milestone)
                            atomic_write(self.results_folder / f'sample-{milestone}.npy', writer = lambda f: np.save(f, all_samples))
                        self.save(milestone)

                pbar.update(1)

        if self.is_main_process:
            self.log('training complete')


def _keyword_forward(diffusion):
    """``diffusion(img, times, loss_reduction, noise, offset_noise_strength, offset_noise,
    self_cond_coin)`` (the call of ``ms_ddpm.training.step``) -> GaussianDiffusion1D's
    keywords (it has no offset noise).  A plain function, inlined when the step compiles."""
    def forward(img, times = None, loss_reduction = 'mean', noise = None, offset_noise_strength = None, offset_noise = None, self_cond_coin = None):
        return diffusion(img, times = times, loss_reduction = loss_reduction, noise = noise, self_cond_coin = self_cond_coin)
    return forward
