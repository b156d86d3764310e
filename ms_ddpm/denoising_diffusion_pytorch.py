"""MindSpore twin of ``denoising_diffusion_pytorch/denoising_diffusion_pytorch.py`` (2.3.4).

Same class names, constructor arguments, defaults, attribute names and submodule indices as
the reference, so every MindSpore parameter name equals the PyTorch state-dict key.
Framework differences are in ``ms_ddpm.ms_compat``.
"""

import math
from functools import partial
from collections import namedtuple

import mindspore as ms
from mindspore import ops

from ms_ddpm.ms_compat import (
    Module, ModuleList, Sequential, Identity, SiLU, Conv2d, Linear, GELU, Dropout,
    NearestUpsample2x, PixelUnshuffle2x, normalize, chunk, cat, softmax,
    ones_parameter, randn_parameter, name_parameters_by_path, heads_split, heads_merge, matmul_nt, matmul_tn, exp,
)
from ms_ddpm.attend import Attend

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
        return normalize(x, dim = 1) * self.g * self.scale

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
            x = x * (scale + 1) + shift

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
