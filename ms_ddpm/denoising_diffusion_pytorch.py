"""MindSpore twin of ``denoising_diffusion_pytorch/denoising_diffusion_pytorch.py`` (2.3.4).

Same class names, constructor arguments, defaults, attribute names and submodule indices as
the reference, so every MindSpore parameter name equals the PyTorch state-dict key.
Framework differences are in ``ms_ddpm.ms_compat``.
"""

import math
from functools import partial
from collections import namedtuple
from pathlib import Path

import numpy as np
import mindspore as ms
from mindspore import ops
from tqdm.auto import tqdm

from ms_ddpm.ms_compat import (
    Module, ModuleList, Sequential, Identity, SiLU, Conv2d, Linear, GELU, Dropout,
    NearestUpsample2x, PixelUnshuffle2x, normalize, gain, apply_scale_shift, chunk, cat, softmax,
    ones_parameter, randn_parameter, name_parameters_by_path, heads_split, heads_merge, matmul_nt, matmul_tn, exp,
    in_graph, buffer_parameter, float64_linspace, float32_linspace, float64_sigmoid, compiled_step,
    sampling_draws, take_draw,
)
from ms_ddpm.attend import Attend
from ms_ddpm.ema import EMA
from ms_ddpm.io.images import save_image
from ms_ddpm.training import TrainerCore
from ms_ddpm.training.draws import process_attr

# constants

ModelPrediction =  namedtuple('ModelPrediction', ['pred_noise', 'pred_x_start'])

# helpers functions

def exists(x):
    return x is not None

def default(val, d):
    if exists(val):
        return val
    return d() if callable(d) else d

def cast_tuple(t, length = 1):
    if isinstance(t, tuple):
        return t
    return ((t,) * length)

def divisible_by(numer, denom):
    return (numer % denom) == 0

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

# small helper modules

def Upsample(dim, dim_out = None):
    return Sequential(
        NearestUpsample2x(),
        Conv2d(dim, default(dim_out, dim), 3, padding = 1)
    )

def Downsample(dim, dim_out = None):
    return Sequential(
        PixelUnshuffle2x(),
        Conv2d(dim * 4, default(dim_out, dim), 1)
    )

class RMSNorm(Module):
    def __init__(self, dim):
        super().__init__()
        self.scale = dim ** 0.5
        self.g = ones_parameter((1, dim, 1, 1), 'g')

    def construct(self, x):
        return gain(normalize(x, dim = 1), self.g, self.scale)   # normalize(x, dim = 1) * self.g * self.scale

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
        assert divisible_by(dim, 2)
        half_dim = dim // 2
        self.weights = randn_parameter((half_dim,), 'weights', requires_grad = not is_random)

    def construct(self, x):
        x = x.astype(ms.float32)[:, None]
        freqs = x * self.weights[None, :] * 2 * math.pi
        fouriered = cat((ops.sin(freqs), ops.cos(freqs)), dim = -1)
        fouriered = cat((x, fouriered), dim = -1)
        return fouriered

# building block modules

class Block(Module):
    def __init__(self, dim, dim_out, dropout = 0.):
        super().__init__()
        self.proj = Conv2d(dim, dim_out, 3, padding = 1)
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
    def __init__(
        self,
        dim,
        heads = 4,
        dim_head = 32,
        num_mem_kv = 4
    ):
        super().__init__()
        self.scale = dim_head ** -0.5
        self.heads = heads
        hidden_dim = dim_head * heads

        self.norm = RMSNorm(dim)

        self.mem_kv = randn_parameter((2, heads, dim_head, num_mem_kv), 'mem_kv')
        self.to_qkv = Conv2d(dim, hidden_dim * 3, 1, bias = False)

        self.to_out = Sequential(
            Conv2d(hidden_dim, dim, 1),
            RMSNorm(dim)
        )

    def construct(self, x):
        b, c, h, w = x.shape

        x = self.norm(x)

        q, k, v = chunk(self.to_qkv(x), 3, dim = 1)
        q = heads_split(q, self.heads, channels_last = False)
        k = heads_split(k, self.heads, channels_last = False)
        v = heads_split(v, self.heads, channels_last = False)

        mk = ops.broadcast_to(self.mem_kv[0][None], (b,) + self.mem_kv.shape[1:])
        mv = ops.broadcast_to(self.mem_kv[1][None], (b,) + self.mem_kv.shape[1:])
        k = cat((mk, k), dim = -1)
        v = cat((mv, v), dim = -1)

        q = softmax(q, dim = -2)
        k = softmax(k, dim = -1)

        q = q * self.scale

        context = matmul_nt(k, v)              # einsum('b h d n, b h e n -> b h d e', k, v)

        out = matmul_tn(context, q)            # einsum('b h d e, b h d n -> b h e n', context, q)
        out = heads_merge(out, h, w, channels_last = False)
        return self.to_out(out)

class Attention(Module):
    def __init__(
        self,
        dim,
        heads = 4,
        dim_head = 32,
        num_mem_kv = 4,
        flash = False
    ):
        super().__init__()
        self.heads = heads
        hidden_dim = dim_head * heads

        self.norm = RMSNorm(dim)
        self.attend = Attend(flash = flash)

        self.mem_kv = randn_parameter((2, heads, num_mem_kv, dim_head), 'mem_kv')
        self.to_qkv = Conv2d(dim, hidden_dim * 3, 1, bias = False)
        self.to_out = Conv2d(hidden_dim, dim, 1)

    def construct(self, x):
        b, c, h, w = x.shape

        x = self.norm(x)

        q, k, v = chunk(self.to_qkv(x), 3, dim = 1)
        q = heads_split(q, self.heads, channels_last = True)
        k = heads_split(k, self.heads, channels_last = True)
        v = heads_split(v, self.heads, channels_last = True)

        mk = ops.broadcast_to(self.mem_kv[0][None], (b,) + self.mem_kv.shape[1:])
        mv = ops.broadcast_to(self.mem_kv[1][None], (b,) + self.mem_kv.shape[1:])
        k = cat((mk, k), dim = -2)
        v = cat((mv, v), dim = -2)

        out = self.attend(q, k, v)

        out = heads_merge(out, h, w, channels_last = True)
        return self.to_out(out)

# model

class Unet(Module):
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
        dropout = 0.,
        attn_dim_head = 32,
        attn_heads = 4,
        full_attn = None,    # defaults to full attention only for inner most layer
        flash_attn = False
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
            sinu_pos_emb = SinusoidalPosEmb(dim, theta = sinusoidal_pos_emb_theta)
            fourier_dim = dim

        self.time_mlp = Sequential(
            sinu_pos_emb,
            Linear(fourier_dim, time_dim),
            GELU(),
            Linear(time_dim, time_dim)
        )

        # attention

        if not full_attn:
            full_attn = (*((False,) * (len(dim_mults) - 1)), True)

        num_stages = len(dim_mults)
        full_attn  = cast_tuple(full_attn, num_stages)
        attn_heads = cast_tuple(attn_heads, num_stages)
        attn_dim_head = cast_tuple(attn_dim_head, num_stages)

        assert len(full_attn) == len(dim_mults)

        # prepare blocks

        FullAttention = partial(Attention, flash = flash_attn)
        resnet_block = partial(ResnetBlock, time_emb_dim = time_dim, dropout = dropout)

        # layers

        self.downs = ModuleList([])
        self.ups = ModuleList([])
        num_resolutions = len(in_out)

        for ind, ((dim_in, dim_out), layer_full_attn, layer_attn_heads, layer_attn_dim_head) in enumerate(zip(in_out, full_attn, attn_heads, attn_dim_head)):
            is_last = ind >= (num_resolutions - 1)

            attn_klass = FullAttention if layer_full_attn else LinearAttention

            self.downs.append(ModuleList([
                resnet_block(dim_in, dim_in),
                resnet_block(dim_in, dim_in),
                attn_klass(dim_in, dim_head = layer_attn_dim_head, heads = layer_attn_heads),
                Downsample(dim_in, dim_out) if not is_last else Conv2d(dim_in, dim_out, 3, padding = 1)
            ]))

        mid_dim = dims[-1]
        self.mid_block1 = resnet_block(mid_dim, mid_dim)
        self.mid_attn = FullAttention(mid_dim, heads = attn_heads[-1], dim_head = attn_dim_head[-1])
        self.mid_block2 = resnet_block(mid_dim, mid_dim)

        for ind, ((dim_in, dim_out), layer_full_attn, layer_attn_heads, layer_attn_dim_head) in enumerate(zip(*map(reversed, (in_out, full_attn, attn_heads, attn_dim_head)))):
            is_last = ind == (len(in_out) - 1)

            attn_klass = FullAttention if layer_full_attn else LinearAttention

            self.ups.append(ModuleList([
                resnet_block(dim_out + dim_in, dim_out),
                resnet_block(dim_out + dim_in, dim_out),
                attn_klass(dim_out, dim_head = layer_attn_dim_head, heads = layer_attn_heads),
                Upsample(dim_out, dim_in) if not is_last else  Conv2d(dim_out, dim_in, 3, padding = 1)
            ]))

        default_out_dim = channels * (1 if not learned_variance else 2)
        self.out_dim = default(out_dim, default_out_dim)

        self.final_res_block = resnet_block(init_dim * 2, init_dim)
        self.final_conv = Conv2d(init_dim, self.out_dim, 1)

        name_parameters_by_path(self)

    @property
    def downsample_factor(self):
        return 2 ** (len(self.downs) - 1)

    def check_input_size(self, shape):
        """The reference's assertion, as a plain Python check (also before GRAPH compilation)."""
        factor = 2 ** (len(self.downs) - 1)
        h, w = shape[-2], shape[-1]
        if h % factor != 0 or w % factor != 0:
            raise AssertionError(f'your input dimensions {(h, w)} need to be divisible by {factor}, given the unet')

    def construct(self, x, time, x_self_cond = None):
        self.check_input_size(x.shape)

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
            x = attn(x) + x
            h = h + (x,)

            x = downsample(x)

        x = self.mid_block1(x, t)
        x = self.mid_attn(x) + x
        x = self.mid_block2(x, t)

        i = len(h)
        for up in self.ups:
            block1, block2, attn, upsample = up[0], up[1], up[2], up[3]
            x = cat((x, h[i - 1]), dim = 1)
            x = block1(x, t)

            x = cat((x, h[i - 2]), dim = 1)
            x = block2(x, t)
            x = attn(x) + x
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
    """
    linear schedule, proposed in original ddpm paper
    """
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
    t = float64_linspace(0, timesteps, steps) / timesteps
    alphas_cumprod = np.cos((t + s) / (1 + s) * math.pi * 0.5) ** 2
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    betas = 1 - (alphas_cumprod[1:] / alphas_cumprod[:-1])
    return np.clip(betas, 0, 0.999)

def sigmoid_beta_schedule(timesteps, start = -3, end = 3, tau = 1, clamp_min = 1e-5):
    """
    sigmoid schedule
    proposed in https://arxiv.org/abs/2212.11972 - Figure 8
    better for images > 64x64, when used during training
    """
    steps = timesteps + 1
    t = float64_linspace(0, timesteps, steps) / timesteps
    # the reference's torch.tensor(start / tau) is a float32 scalar: v_start/v_end are float32
    # values, promoted to float64 in the expression below (worth ~6e-6 in betas)
    v_start = float64_sigmoid(np.float32(start / tau)).astype(np.float32).astype(np.float64)
    v_end = float64_sigmoid(np.float32(end / tau)).astype(np.float32).astype(np.float64)
    alphas_cumprod = (-float64_sigmoid((t * (end - start) + start) / tau) + v_end) / (v_end - v_start)
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    betas = 1 - (alphas_cumprod[1:] / alphas_cumprod[:-1])
    return np.clip(betas, 0, 0.999)

# the 13 schedule buffers GaussianDiffusion registers (part of its state dict), in order
DIFFUSION_BUFFERS = (
    'betas', 'alphas_cumprod', 'alphas_cumprod_prev',
    'sqrt_alphas_cumprod', 'sqrt_one_minus_alphas_cumprod', 'log_one_minus_alphas_cumprod',
    'sqrt_recip_alphas_cumprod', 'sqrt_recipm1_alphas_cumprod',
    'posterior_variance', 'posterior_log_variance_clipped',
    'posterior_mean_coef1', 'posterior_mean_coef2', 'loss_weight',
)

class GaussianDiffusion(Module):
    """MindSpore twin of the reference ``GaussianDiffusion``.

    Beyond the reference, every random draw can be supplied (``noise=``, ``offset_noise=``,
    ``self_cond_coin=``, ``times=``), so that a test gives both frameworks identical draws;
    by default draws come from MindSpore's RNG (``ms.set_seed``).  The 13 schedule buffers
    are non-trainable Parameters named like the reference's buffers, so a whole
    ``GaussianDiffusion`` state dict converts in one piece.  Sampling steps are compiled
    (``ms.jit``) unless ``jit_sampling = False``.
    """

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
        min_snr_gamma = 5,
        immiscible = False
    ):
        super().__init__()
        assert not (type(self) == GaussianDiffusion and model.channels != model.out_dim)
        assert not hasattr(model, 'random_or_learned_sinusoidal_cond') or not model.random_or_learned_sinusoidal_cond

        self.model = model

        self.channels = self.model.channels
        self.self_condition = self.model.self_condition

        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        assert isinstance(image_size, (tuple, list)) and len(image_size) == 2, 'image size must be a integer or a tuple/list of two integers'
        self.image_size = image_size

        self.objective = objective

        assert objective in {'pred_noise', 'pred_x0', 'pred_v'}, 'objective must be either pred_noise (predict noise) or pred_x0 (predict image start) or pred_v (predict v [v-parameterization as defined in appendix D of progressive distillation paper, used in imagen-video successfully])'

        if beta_schedule == 'linear':
            beta_schedule_fn = linear_beta_schedule
        elif beta_schedule == 'cosine':
            beta_schedule_fn = cosine_beta_schedule
        elif beta_schedule == 'sigmoid':
            beta_schedule_fn = sigmoid_beta_schedule
        else:
            raise ValueError(f'unknown beta schedule {beta_schedule}')

        betas = beta_schedule_fn(timesteps, **schedule_fn_kwargs)

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

        # immiscible diffusion

        self.immiscible = immiscible

        # offset noise strength - in blogpost, they claimed 0.1 was ideal

        self.offset_noise_strength = offset_noise_strength

        # derive loss weight
        # snr - signal noise ratio

        snr = alphas_cumprod / (1 - alphas_cumprod)

        # https://arxiv.org/abs/2303.09556

        maybe_clipped_snr = snr.copy()
        if min_snr_loss_weight:
            maybe_clipped_snr = np.clip(maybe_clipped_snr, None, min_snr_gamma)

        if objective == 'pred_noise':
            register_buffer('loss_weight', maybe_clipped_snr / snr)
        elif objective == 'pred_x0':
            register_buffer('loss_weight', maybe_clipped_snr)
        elif objective == 'pred_v':
            register_buffer('loss_weight', maybe_clipped_snr / (snr + 1))

        # auto-normalization of data [0, 1] -> [-1, 1] - can turn off by setting it to be False

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

    def _model_predictions(self, x, t, x_self_cond = None, clip_x_start = False, rederive_pred_noise = False):
        # a plain tuple: GRAPH mode builds namedtuples through a Python fallback whose outputs
        # lose their static shapes, which then fails inside the Unet
        model_output = self.model(x, t, x_self_cond)

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

    def model_predictions(self, x, t, x_self_cond = None, clip_x_start = False, rederive_pred_noise = False):
        return ModelPrediction(*self._model_predictions(x, t, x_self_cond, clip_x_start, rederive_pred_noise))

    def p_mean_variance(self, x, t, x_self_cond = None, clip_denoised = True):
        _, x_start = self._model_predictions(x, t, x_self_cond) # preds.pred_x_start

        if clip_denoised:
            x_start = ops.clamp(x_start, -1., 1.)

        model_mean, posterior_variance, posterior_log_variance = self.q_posterior(x_start = x_start, x_t = x, t = t)
        return model_mean, posterior_variance, posterior_log_variance, x_start

    # --- one sampling step each, as pure functions of tensors, so they compile (ms.jit) once

    # The steps take their randn draw as ``noises[i]`` (a chunk of draws and a 0-d index), so the
    # loops launch no PyNative op per step (see ``_draws``).

    def _p_sample_step(self, x, t, noises, i, noise_scale, x_self_cond):
        batched_times = ops.broadcast_to(t, (x.shape[0],))   # t: a 0-d int64 tensor (no host op per step)
        if not self.self_condition:
            x_self_cond = None
        model_mean, _, model_log_variance, x_start = self.p_mean_variance(x = x, t = batched_times, x_self_cond = x_self_cond, clip_denoised = True)
        noise = ops.gather(noises, i, 0) * noise_scale          # noise_scale: 1, or 0 at t == 0 (the reference adds 0.)
        pred_img = model_mean + exp(0.5 * model_log_variance) * noise
        return pred_img, x_start

    def _ddim_step(self, img, time, time_next, noises, i, x_self_cond):
        time_cond = ops.broadcast_to(time, (img.shape[0],))
        noise = ops.gather(noises, i, 0)
        if not self.self_condition:
            x_self_cond = None
        pred_noise, x_start = self._model_predictions(img, time_cond, x_self_cond, clip_x_start = True, rederive_pred_noise = True)

        alpha = self.alphas_cumprod[time]
        alpha_next = self.alphas_cumprod[time_next]

        sigma = self.ddim_sampling_eta * ops.sqrt((1 - alpha / alpha_next) * (1 - alpha_next) / (1 - alpha))
        c = ops.sqrt(1 - alpha_next - sigma ** 2)

        img = x_start * ops.sqrt(alpha_next) + \
              c * pred_noise + \
              sigma * noise
        return img, x_start

    def _step(self, name):
        fn = getattr(self, name)
        if not self.jit_sampling:
            return fn
        if name not in self._jit_steps:
            def step(*args):
                return fn(*args)
            self._jit_steps[name] = compiled_step(step)
        return self._jit_steps[name]

    # fresh draws are made this many float32 values at a time (32 MiB)
    DRAW_CHUNK_VALUES = 1 << 23

    def _draws(self, noise, count, shape):
        """Iterator over the sampling loop's randn draws, each as ``(noises, i)``: the draw is
        ``noises[i]``, taken inside the compiled step (``ms_compat.sampling_draws``: fresh ones
        in chunks of up to ``DRAW_CHUNK_VALUES``, supplied ones checked).  ``_take(draw)``
        gives a draw itself (outside a step)."""
        return sampling_draws(noise, count, shape, self.DRAW_CHUNK_VALUES)

    _take = staticmethod(take_draw)

    def _p_sample(self, x, t, x_self_cond, draw):
        """One DDPM step with its draw as ``(noises, i)`` (unused, and no noise added, at t == 0)."""
        if x_self_cond is None:
            # what the Unet substitutes for None; without self-conditioning the step ignores
            # it, so any tensor of the right shape will do (no zeros allocated per step)
            x_self_cond = ops.zeros_like(x) if self.self_condition else x
        noises, i = draw
        return self._step('_p_sample_step')(x, ms.Tensor(t, ms.int64), noises, i,
                                            ms.Tensor(1. if t > 0 else 0., ms.float32), x_self_cond)

    def p_sample(self, x, t: int, x_self_cond = None, noise = None):
        if t > 0:
            noise = default(noise, lambda: ops.randn(x.shape, dtype = x.dtype))
        else:
            noise = ops.zeros_like(x) # no noise if t == 0
        return self._p_sample(x, t, x_self_cond, (ops.expand_dims(noise, 0), ms.Tensor(0, ms.int64)))

    def p_sample_loop(self, shape, return_all_timesteps = False, noise = None):
        shape = tuple(shape)
        draws = self._draws(noise, self.num_timesteps, shape)

        first = next(draws)
        img = self._take(first)
        imgs = [img]

        x_start = None
        last = first

        for t in tqdm(reversed(range(0, self.num_timesteps)), desc = 'sampling loop time step', total = self.num_timesteps):
            self_cond = x_start if self.self_condition else None
            last = next(draws) if t > 0 else last      # t == 0 draws nothing (its noise is scaled by 0)
            img, x_start = self._p_sample(img, t, self_cond, last)
            imgs.append(img)

        ret = img if not return_all_timesteps else ops.stack(imgs, axis = 1)

        ret = self.unnormalize(ret)
        return ret

    def ddim_time_pairs(self):
        """The reference's (time, time_next) pairs: ``torch.linspace(-1, T - 1, S + 1).int()``
        reproduced in float32 with torch's CPU linspace formula, so the times are identical."""
        times = float32_linspace(-1, self.num_timesteps - 1, self.sampling_timesteps + 1)
        times = list(reversed(times.astype(np.int32).tolist()))
        return list(zip(times[:-1], times[1:]))

    def ddim_sample(self, shape, return_all_timesteps = False, noise = None):
        shape = tuple(shape)
        batch = shape[0]
        time_pairs = self.ddim_time_pairs() # [(T-1, T-2), (T-2, T-3), ..., (1, 0), (0, -1)]
        draws = self._draws(noise, self.sampling_timesteps, shape)

        first = next(draws)
        img = self._take(first)
        imgs = [img]

        x_start = None
        step = self._step('_ddim_step')
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

        ret = img if not return_all_timesteps else ops.stack(imgs, axis = 1)

        ret = self.unnormalize(ret)
        return ret

    def sample(self, batch_size = 16, return_all_timesteps = False, noise = None):
        (h, w), channels = self.image_size, self.channels
        sample_fn = self.p_sample_loop if not self.is_ddim_sampling else self.ddim_sample
        return sample_fn((batch_size, channels, h, w), return_all_timesteps = return_all_timesteps, noise = noise)

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

    def noise_assignment(self, x_start, noise):
        """Immiscible diffusion: assign noise to images by a linear sum assignment of their
        distances (a host computation, as in the reference: scipy on the CPU)."""
        from scipy.optimize import linear_sum_assignment
        b = x_start.shape[0]
        a = x_start.reshape(b, -1).asnumpy().astype(np.float64)
        n = noise.reshape(b, -1).asnumpy().astype(np.float64)
        dist = np.sqrt(np.maximum((a * a).sum(1)[:, None] + (n * n).sum(1)[None, :] - 2 * a @ n.T, 0)).astype(np.float32)
        _, assign = linear_sum_assignment(dist)
        return ms.Tensor(assign.astype(np.int64))

    def q_sample(self, x_start, t, noise = None):
        if noise is None:
            noise = ops.randn(x_start.shape, dtype = x_start.dtype)

        if self.immiscible:
            if in_graph():
                raise RuntimeError('immiscible=True needs a host-side linear sum assignment (scipy, as in the reference), '
                                   'which cannot run inside a compiled graph: compute the loss in PyNative mode, or pass '
                                   'noise=noise[diffusion.noise_assignment(x_start, noise)] and set diffusion.immiscible = False')
            assign = self.noise_assignment(x_start, noise)
            noise = noise[assign]

        return (
            extract(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start +
            extract(self.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * noise
        )

    def p_losses(self, x_start, t, noise = None, offset_noise_strength = None, loss_reduction = 'mean', offset_noise = None, self_cond_coin = None):
        b, c, h, w = x_start.shape

        if noise is None:
            noise = ops.randn(x_start.shape, dtype = x_start.dtype)

        # offset noise - https://www.crosslabs.org/blog/diffusion-with-offset-noise

        offset_noise_strength = default(offset_noise_strength, self.offset_noise_strength)

        if offset_noise_strength > 0.:
            if offset_noise is None:
                offset_noise = ops.randn((b, c), dtype = x_start.dtype)
            noise = noise + offset_noise_strength * offset_noise[:, :, None, None]

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
                _, x_self_cond = self._model_predictions(x, t) # .pred_x_start
                x_self_cond = ops.stop_gradient(x_self_cond)
            else:
                x_self_cond = ops.zeros_like(x) # what the Unet substitutes for None

        # predict and take gradient step

        model_out = self.model(x, t, x_self_cond)

        if self.objective == 'pred_noise':
            target = noise
        elif self.objective == 'pred_x0':
            target = x_start
        else: # self.objective == 'pred_v'
            v = self.predict_v(x_start, t, noise)
            target = v

        loss = ops.square(model_out - target)
        loss = loss.reshape(b, -1).mean(1) # reduce(loss, "b ... -> b", "mean")

        loss = loss * extract(self.loss_weight, t, loss.shape)

        if loss_reduction == 'none':
            return loss

        return loss.mean()

    def random_times(self, batch_size):
        return ops.randint(0, self.num_timesteps, (batch_size,), dtype = ms.int64)

    def construct(self, img, times = None, loss_reduction = 'mean', noise = None, offset_noise_strength = None, offset_noise = None, self_cond_coin = None):
        b, c, h, w = img.shape
        img_size = self.image_size
        if h != img_size[0] or w != img_size[1]:
            raise AssertionError(f'height and width of image must be {img_size}')

        if times is None:
            times = self.random_times(b)

        if self.auto_normalize:
            img = normalize_to_neg_one_to_one(img)
        return self.p_losses(img, times, noise = noise, offset_noise_strength = offset_noise_strength, loss_reduction = loss_reduction, offset_noise = offset_noise, self_cond_coin = self_cond_coin)

# dataset classes

class Dataset:
    """The reference ``Dataset``: every ``exts`` image under ``folder`` (same glob, same order),
    transformed like ``T.Compose([convert, Resize(image_size), RandomHorizontalFlip,
    CenterCrop(image_size), ToTensor])`` with ``mindspore.dataset.vision`` ops on PIL images
    -> float32 CHW in [0, 1].

    ``__getitem__`` accepts an index or ``(index, flip)``: the Trainer decides the flips with
    its own seeded generator, so a run (and a resumed run) sees the same data."""

    def __init__(
        self,
        folder,
        image_size,
        exts = ['jpg', 'jpeg', 'png', 'tiff'],
        augment_horizontal_flip = False,
        convert_image_to = None
    ):
        import mindspore.dataset.vision as vision
        super().__init__()
        self.folder = folder
        self.image_size = image_size
        self.paths = [p for ext in exts for p in Path(f'{folder}').glob(f'**/*.{ext}')]
        self.augment_horizontal_flip = augment_horizontal_flip
        self.convert_image_to = convert_image_to
        size = tuple(image_size) if isinstance(image_size, (tuple, list)) else image_size
        self._resize = vision.Resize(size, vision.Inter.BILINEAR)
        self._flip = vision.HorizontalFlip()
        self._crop = vision.CenterCrop(size)
        self._to_tensor = vision.ToTensor()

    def __len__(self):
        return len(self.paths)

    def transform(self, img, flip = False):
        if exists(self.convert_image_to):
            img = convert_image_to_fn(self.convert_image_to, img)
        img = self._resize(img)
        if self.augment_horizontal_flip and flip:
            # back to PIL: ToTensor divides an ndarray by 255 differently (1 ulp) from a PIL image,
            # and torchvision's ToTensor sees a PIL image here
            from PIL import Image
            img = Image.fromarray(np.asarray(self._flip(img)))
        img = self._crop(img)
        return self._to_tensor(img)

    def __getitem__(self, index):
        from PIL import Image
        if isinstance(index, tuple):
            index, flip = index
        else:
            import random as _random
            flip = _random.random() < 0.5
        with Image.open(self.paths[int(index)]) as img:
            img.load()
            return self.transform(img, flip)

# trainer class

class Trainer(TrainerCore):
    """MindSpore twin of the reference ``Trainer``: same arguments and defaults; the shared
    machinery (data pipeline, draws, compiled step, checkpoints, FID) is
    ``ms_ddpm.training.TrainerCore``.  MindSpore extras are keyword-only with defaults:

    - ``seed``: data order, flips and training draws (counter-based, see ``draws_for``) and
      the sampling seed of each milestone;
    - ``jit``: compile the train step (value_and_grad + clip + Adam [+ loss scaling]) with
      ``ms.jit`` (GRAPH mode); ``False`` runs it op by op (PyNative);
    - ``draws``: ``callable(step, micro, shape) -> dict(times, noise[, offset_noise, coin])``
      to inject the random draws (parity tests); ``batches``: an iterator of NumPy batches
      replacing the dataset pipeline (parity tests);
    - ``fid_weights``: a local FID InceptionV3 weights file, ``.ckpt``/``.safetensors`` (``ms-ddpm convert
      pt_inception-2015-12-05-6726825d.pth inception.ckpt``; never downloaded), run in MindSpore;
    - ``loss_scale``/``loss_scale_factor``/``loss_scale_window``: ``DynamicLossScaler``
      (defaults = torch's GradScaler: 2**16, 2, 2000);
    - ``sample_every_milestone``: write the sample grid at each milestone (default True);
    - ``progress``: show the tqdm bar; ``num_workers``: dataset workers; ``log``: print.
    """

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
        mixed_precision_type = 'fp16',
        split_batches = True,
        convert_image_to = None,
        calculate_fid = True,
        inception_block_idx = 2048,
        max_grad_norm = 1.,
        num_fid_samples = 50000,
        save_best_and_latest_only = False,
        # MindSpore extras
        seed = 0,
        jit = True,
        draws = None,
        batches = None,
        fid_weights = None,
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
        # the reference reads these off the model: the continuous-time, Elucidated and XM
        # processes have no is_ddim_sampling (AttributeError there), XMWrapper no channels or
        # image_size (read off its flow model here; docs/parity.md)
        self.channels = process_attr(diffusion_model, 'channels')
        is_ddim_sampling = process_attr(diffusion_model, 'is_ddim_sampling', False)

        # default convert_image_to depending on channels

        if not exists(convert_image_to):
            convert_image_to = {1: 'L', 3: 'RGB', 4: 'RGBA'}.get(self.channels)

        # sampling and training hyperparameters

        assert has_int_squareroot(num_samples), 'number of samples must have an integer square root'
        self.num_samples = num_samples
        self.save_and_sample_every = save_and_sample_every

        self.batch_size = train_batch_size
        self.gradient_accumulate_every = gradient_accumulate_every
        assert (train_batch_size * gradient_accumulate_every) >= 16, f'your effective batch size (train_batch_size x gradient_accumulate_every) should be at least 16 or above'

        self.train_num_steps = train_num_steps
        self.image_size = process_attr(diffusion_model, 'image_size')

        self.max_grad_norm = max_grad_norm

        # dataset and its mindspore.dataset pipeline (seeded order; data parallel under msrun)

        ds = Dataset(folder, self.image_size, augment_horizontal_flip = augment_horizontal_flip, convert_image_to = convert_image_to)

        assert len(ds) >= 100, 'you should have at least 100 images in your folder. at least 10k images recommended'

        self._init_data(ds, train_batch_size, seed, augment_horizontal_flip, num_workers, batches)

        # optimizer (torch.optim.Adam's update)

        self._init_optimizer(diffusion_model, train_lr, adam_betas)

        # EMA (the reference keeps it on the main process only; every process has one here)

        self.ema = EMA(diffusion_model, beta = ema_decay, update_every = ema_update_every)

        self.results_folder = Path(results_folder)
        self.results_folder.mkdir(exist_ok = True)

        # step counter state

        self.step = 0

        # mixed precision (auto mixed precision + DynamicLossScaler) and the compiled train step

        self._init_amp(amp, mixed_precision_type, loss_scale, loss_scale_factor, loss_scale_window)
        self._init_train_step()

        # FID-score computation: needs local InceptionV3 weights (the reference downloads them)

        self._init_fid(calculate_fid, fid_weights, is_ddim_sampling, inception_block_idx, num_fid_samples, results_folder)

        if save_best_and_latest_only:
            assert calculate_fid, "`calculate_fid` must be True to provide a means for model evaluation for `save_best_and_latest_only`."
            self.best_fid = 1e10 # infinite

        self.save_best_and_latest_only = save_best_and_latest_only

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
                if not self.is_main_process:        # EMA, samples, FID, checkpoints: process 0 only
                    pbar.update(1)
                    continue
                self.ema.update()

                if self.step != 0 and divisible_by(self.step, self.save_and_sample_every):
                    milestone = self.step // self.save_and_sample_every

                    if self.sample_every_milestone:
                        all_images = self.sample_images(self.num_samples, seed = self.seed * 1000003 + milestone)
                        save_image(all_images, str(self.results_folder / f'sample-{milestone}.png'), nrow = int(math.sqrt(self.num_samples)))

                    # whether to calculate fid

                    fid_score = None
                    if self.calculate_fid:
                        fid_score = self.fid_scorer.fid_score()
                        self.log(f'fid_score: {fid_score}')

                    if self.save_best_and_latest_only:
                        if exists(fid_score) and self.best_fid > fid_score:
                            self.best_fid = fid_score
                            self.save("best")
                        self.save("latest")
                    else:
                        self.save(milestone)

                pbar.update(1)

        if self.is_main_process:
            self.log('training complete')
