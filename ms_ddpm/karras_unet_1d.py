"""MindSpore twin of ``denoising_diffusion_pytorch/karras_unet_1d.py`` (2.3.4): the
magnitude-preserving U-Net of Karras et al. (EDM2, https://arxiv.org/abs/2312.02696), the
reference's improvised 1D version (sequences ``(b, c, n)``).

Same class names, constructor arguments, defaults and attribute names as the reference, so
every parameter name and shape equals its state-dict key.  The forced weight normalisation
(algorithm 1) overwrites each ``Conv1d`` / ``Linear`` weight with its normalised value on
every training forward, as the reference does under ``torch.no_grad``; the gradient then
flows through the normalisation of that overwritten value, as in the reference.  Every
``Conv1d`` weight is torch's ``(out, in, k)``.

Where the reference is broken: its ``MPFeedForward`` builds ``Conv2d``, a name this module
never defines (``NameError``); the twin builds the evident ``Conv1d`` (docs/parity.md).
Framework differences are in ``ms_ddpm.ms_compat``.
"""

import math
from math import ceil

import mindspore as ms
from mindspore import ops, Parameter, Tensor

from ms_ddpm.ms_compat import (
    Module, ModuleList, Sequential, Identity, SiLU, Dropout, normalize, cat, randn_parameter,
    name_parameters_by_path, heads_split_nc, heads_merge_nd, chunk, sin, cos, ConvSame, pad_ones_channel,
    interpolate_half, interpolate_double, dirac_,
)
from ms_ddpm.attend import Attend

# helpers functions

def exists(x):
    return x is not None

def default(val, d):
    if exists(val):
        return val
    return d() if callable(d) else d

def xnor(x, y):
    return x == y     # not (x ^ y) for bools; GRAPH mode compiles no bool ^

def append(arr, el):
    arr.append(el)

def prepend(arr, el):
    arr.insert(0, el)

def cast_tuple(t, length = 1):
    if isinstance(t, tuple):
        return t
    return ((t,) * length)

def divisible_by(numer, denom):
    return (numer % denom) == 0

def sqrt(x):
    # math.sqrt of a Python number: ``** 0.5`` folds to a constant in GRAPH mode, where
    # math.sqrt goes through the interpreter fallback and makes everything after it a
    # runtime-typed value (MindSpore 2.8); both are the correctly rounded square root
    return x ** 0.5

# in paper, they use eps 1e-4 for pixelnorm

def l2norm(t, dim = -1, eps = 1e-12):
    return normalize(t, dim = dim, eps = eps)

def interpolate_1d(x, length, mode = 'bilinear'):
    # rearrange 'b c t -> b c t 1', F.interpolate(x, (length, 1), mode = 'bilinear'), back: the
    # width of 1 is kept exactly (weight 1), so this is the linear halving / doubling along t
    assert mode == 'bilinear'
    n = x.shape[-1]
    if length * 2 == n:
        return interpolate_half(x)
    assert length == n * 2, 'interpolate_1d: only halving and doubling are used'
    return interpolate_double(x)

# mp activations
# section 2.5

class MPSiLU(Module):
    def __init__(self):
        super().__init__()
        self.silu = SiLU()

    def construct(self, x):
        return self.silu(x) / 0.596

# gain - layer scaling

class Gain(Module):
    def __init__(self):
        super().__init__()
        self.gain = Parameter(Tensor(0., ms.float32), name = 'gain')

    def construct(self, x):
        return x * self.gain

# magnitude preserving concat
# equation (103) - default to 0.5, which they recommended

class MPCat(Module):
    def __init__(self, t = 0.5, dim = -1):
        super().__init__()
        self.t = t
        self.dim = dim

    def construct(self, a, b):
        dim, t = self.dim, self.t
        Na, Nb = a.shape[dim], b.shape[dim]

        C = sqrt((Na + Nb) / ((1. - t) ** 2 + t ** 2))

        a = a * (1. - t) / sqrt(Na)
        b = b * t / sqrt(Nb)

        return C * cat((a, b), dim = dim)

# magnitude preserving sum
# equation (88)
# empirically, they found t=0.3 for encoder / decoder / attention residuals
# and for embedding, t=0.5

class MPAdd(Module):
    def __init__(self, t):
        super().__init__()
        self.t = t

    def construct(self, x, res):
        a, b, t = x, res, self.t
        num = a * (1. - t) + b * t
        den = sqrt((1 - t) ** 2 + t ** 2)
        return num / den

# pixelnorm
# equation (30)

class PixelNorm(Module):
    def __init__(self, dim, eps = 1e-4):
        super().__init__()
        # high epsilon for the pixel norm in the paper
        self.dim = dim
        self.eps = eps

    def construct(self, x):
        dim = self.dim
        return l2norm(x, dim = dim, eps = self.eps) * sqrt(x.shape[dim])

# forced weight normed conv1d and linear
# algorithm 1 in paper

def normalize_weight(weight, eps = 1e-4, shape = None):
    # ``shape``: the weight's shape as a constant of the module (GRAPH mode, MindSpore 2.8,
    # turns a shape read here into a runtime value, which Conv2D then rejects)
    shape = default(shape, weight.shape)
    numel_per_row = math.prod(shape[1:])
    weight = ops.reshape(weight, (shape[0], numel_per_row))          # pack_one(weight, 'o *')
    normed_weight = l2norm(weight, eps = eps)
    normed_weight = normed_weight * sqrt(numel_per_row)             # sqrt(weight.numel() / weight.shape[0])
    return ops.reshape(normed_weight, shape)

def forced_weight(module):
    """The weight a training forward of the reference sees: ``self.weight.copy_(normalize_weight(
    self.weight))`` under ``no_grad``, then the overwritten parameter.  Here the parameter is
    overwritten by ``assign`` and the value returned is the normalised one exactly, with the
    gradient passed straight to the parameter (``w - stop_gradient(w)`` adds an exact zero)."""
    weight = module.weight
    normed_weight = ops.stop_gradient(normalize_weight(weight, eps = module.eps, shape = module.weight_shape))
    ops.assign(module.weight, normed_weight)
    return normed_weight + (weight - ops.stop_gradient(weight))

class Conv1d(Module):
    def __init__(
        self,
        dim_in,
        dim_out,
        kernel_size,
        eps = 1e-4,
        init_dirac = False,
        concat_ones_to_input = False   # they use this in the input block to protect against loss of expressivity due to removal of all biases, even though they claim they observed none
    ):
        super().__init__()
        self.weight_shape = (dim_out, dim_in + int(concat_ones_to_input), kernel_size)
        self.weight = randn_parameter(self.weight_shape, 'weight')

        if init_dirac:
            dirac_(self.weight)

        self.eps = eps
        self.fan_in = dim_in * kernel_size
        self.conv = ConvSame(1, dim_out, kernel_size)
        self.concat_ones_to_input = concat_ones_to_input

    def construct(self, x):

        weight = self.weight
        if self.training:
            weight = forced_weight(self)

        weight = normalize_weight(weight, eps = self.eps, shape = self.weight_shape) / sqrt(self.fan_in)

        if self.concat_ones_to_input:
            x = pad_ones_channel(x)

        return self.conv(x, weight)       # F.conv1d(x, weight, padding = 'same')

class Linear(Module):
    def __init__(self, dim_in, dim_out, eps = 1e-4):
        super().__init__()
        self.weight_shape = (dim_out, dim_in)
        self.weight = randn_parameter(self.weight_shape, 'weight')
        self.eps = eps
        self.fan_in = dim_in

    def construct(self, x):
        weight = self.weight
        if self.training:
            weight = forced_weight(self)

        weight = normalize_weight(weight, eps = self.eps, shape = self.weight_shape) / sqrt(self.fan_in)
        return ops.matmul(x, ops.transpose(weight, (1, 0)))          # F.linear(x, weight)

# mp fourier embeds

class MPFourierEmbedding(Module):
    def __init__(self, dim):
        super().__init__()
        assert divisible_by(dim, 2)
        half_dim = dim // 2
        self.weights = randn_parameter((half_dim,), 'weights', requires_grad = False)

    def construct(self, x):
        x = ops.expand_dims(x, 1)                                       # 'b -> b 1'
        freqs = x * ops.expand_dims(self.weights, 0) * 2 * math.pi
        return cat((sin(freqs), cos(freqs)), dim = -1) * sqrt(2)

# building block modules

def _scale_image(x, scale):
    """``x * rearrange(scale, 'b c -> b c 1')``."""
    return x * ops.reshape(scale, tuple(scale.shape) + (1,) * (x.ndim - 2))

class Encoder(Module):
    def __init__(
        self,
        dim,
        dim_out = None,
        *,
        emb_dim = None,
        dropout = 0.1,
        mp_add_t = 0.3,
        has_attn = False,
        attn_dim_head = 64,
        attn_res_mp_add_t = 0.3,
        attn_flash = False,
        downsample = False
    ):
        super().__init__()
        dim_out = default(dim_out, dim)

        self.downsample = downsample
        self.downsample_conv = None

        curr_dim = dim
        if downsample:
            self.downsample_conv = Conv1d(curr_dim, dim_out, 1)
            curr_dim = dim_out

        self.pixel_norm = PixelNorm(dim = 1)

        self.to_emb = None
        if exists(emb_dim):
            self.to_emb = Sequential(
                Linear(emb_dim, dim_out),
                Gain()
            )

        self.block1 = Sequential(
            MPSiLU(),
            Conv1d(curr_dim, dim_out, 3)
        )

        self.block2 = Sequential(
            MPSiLU(),
            Dropout(dropout),
            Conv1d(dim_out, dim_out, 3)
        )

        self.res_mp_add = MPAdd(t = mp_add_t)

        self.attn = None
        if has_attn:
            self.attn = Attention(
                dim = dim_out,
                heads = max(ceil(dim_out / attn_dim_head), 2),
                dim_head = attn_dim_head,
                mp_add_t = attn_res_mp_add_t,
                flash = attn_flash
            )

    def construct(
        self,
        x,
        emb = None
    ):
        if self.downsample:
            x = interpolate_1d(x, x.shape[-1] // 2, mode = 'bilinear')
            x = self.downsample_conv(x)

        x = self.pixel_norm(x)

        res = x

        x = self.block1(x)

        if exists(emb):
            scale = self.to_emb(emb) + 1
            x = _scale_image(x, scale)

        x = self.block2(x)

        x = self.res_mp_add(x, res)

        if exists(self.attn):
            x = self.attn(x)

        return x

class Decoder(Module):
    def __init__(
        self,
        dim,
        dim_out = None,
        *,
        emb_dim = None,
        dropout = 0.1,
        mp_add_t = 0.3,
        has_attn = False,
        attn_dim_head = 64,
        attn_res_mp_add_t = 0.3,
        attn_flash = False,
        upsample = False
    ):
        super().__init__()
        dim_out = default(dim_out, dim)

        self.upsample = upsample
        self.needs_skip = not upsample

        self.to_emb = None
        if exists(emb_dim):
            self.to_emb = Sequential(
                Linear(emb_dim, dim_out),
                Gain()
            )

        self.block1 = Sequential(
            MPSiLU(),
            Conv1d(dim, dim_out, 3)
        )

        self.block2 = Sequential(
            MPSiLU(),
            Dropout(dropout),
            Conv1d(dim_out, dim_out, 3)
        )

        self.res_conv = Conv1d(dim, dim_out, 1) if dim != dim_out else Identity()

        self.res_mp_add = MPAdd(t = mp_add_t)

        self.attn = None
        if has_attn:
            self.attn = Attention(
                dim = dim_out,
                heads = max(ceil(dim_out / attn_dim_head), 2),
                dim_head = attn_dim_head,
                mp_add_t = attn_res_mp_add_t,
                flash = attn_flash
            )

    def construct(
        self,
        x,
        emb = None
    ):
        if self.upsample:
            x = interpolate_1d(x, x.shape[-1] * 2, mode = 'bilinear')

        res = self.res_conv(x)

        x = self.block1(x)

        if exists(emb):
            scale = self.to_emb(emb) + 1
            x = _scale_image(x, scale)

        x = self.block2(x)

        x = self.res_mp_add(x, res)

        if exists(self.attn):
            x = self.attn(x)

        return x

# attention

class Attention(Module):
    def __init__(
        self,
        dim,
        heads = 4,
        dim_head = 64,
        num_mem_kv = 4,
        flash = False,
        mp_add_t = 0.3
    ):
        super().__init__()
        self.heads = heads
        hidden_dim = dim_head * heads

        self.pixel_norm = PixelNorm(dim = -1)

        self.attend = Attend(flash = flash)

        self.mem_kv = randn_parameter((2, heads, num_mem_kv, dim_head), 'mem_kv')
        self.to_qkv = Conv1d(dim, hidden_dim * 3, 1)
        self.to_out = Conv1d(hidden_dim, dim, 1)

        self.mp_add = MPAdd(t = mp_add_t)

    def construct(self, x):
        res = x
        b, c, n = x.shape

        q, k, v = chunk(self.to_qkv(x), 3, dim = 1)
        q = heads_split_nc(q, self.heads)           # 'b (h c) n -> b h n c'
        k = heads_split_nc(k, self.heads)
        v = heads_split_nc(v, self.heads)

        mk = ops.broadcast_to(ops.expand_dims(self.mem_kv[0], 0), (b,) + tuple(self.mem_kv.shape[1:]))
        mv = ops.broadcast_to(ops.expand_dims(self.mem_kv[1], 0), (b,) + tuple(self.mem_kv.shape[1:]))
        k = cat((mk, k), dim = -2)
        v = cat((mv, v), dim = -2)

        q, k, v = self.pixel_norm(q), self.pixel_norm(k), self.pixel_norm(v)

        out = self.attend(q, k, v)

        out = heads_merge_nd(out)                   # 'b h n d -> b (h d) n'
        out = self.to_out(out)

        return self.mp_add(out, res)

# unet proposed by karras
# improvised 1d version
# bias-less, no group-norms, with magnitude preserving operations

class KarrasUnet1D(Module):
    """
    going by figure 21. config G
    """

    def __init__(
        self,
        *,
        seq_len,
        dim = 192,
        dim_max = 768,            # channels will double every downsample and cap out to this value
        num_classes = None,       # in paper, they do 1000 classes for a popular benchmark
        channels = 4,             # 4 channels in paper for some reason, must be alpha channel?
        num_downsamples = 3,
        num_blocks_per_stage = 4,
        attn_res = (16, 8),
        fourier_dim = 16,
        attn_dim_head = 64,
        attn_flash = False,
        mp_cat_t = 0.5,
        mp_add_emb_t = 0.5,
        attn_res_mp_add_t = 0.3,
        resnet_mp_add_t = 0.3,
        dropout = 0.1,
        self_condition = False
    ):
        super().__init__()

        self.self_condition = self_condition

        # determine dimensions

        self.channels = channels
        self.seq_len = seq_len
        input_channels = channels * (2 if self_condition else 1)

        # input and output blocks

        self.input_block = Conv1d(input_channels, dim, 3, concat_ones_to_input = True)

        self.output_block = Sequential(
            Conv1d(dim, channels, 3),
            Gain()
        )

        # time embedding

        emb_dim = dim * 4

        self.to_time_emb = Sequential(
            MPFourierEmbedding(fourier_dim),
            Linear(fourier_dim, emb_dim)
        )

        # class embedding

        self.needs_class_labels = exists(num_classes)
        self.num_classes = num_classes

        if self.needs_class_labels:
            self.to_class_emb = Linear(num_classes, 4 * dim)
            self.add_class_emb = MPAdd(t = mp_add_emb_t)

        # final embedding activations

        self.emb_activation = MPSiLU()

        # number of downsamples

        self.num_downsamples = num_downsamples

        # attention

        attn_res = set(cast_tuple(attn_res))

        # resnet block

        block_kwargs = dict(
            dropout = dropout,
            emb_dim = emb_dim,
            attn_dim_head = attn_dim_head,
            attn_res_mp_add_t = attn_res_mp_add_t,
            attn_flash = attn_flash
        )

        # unet encoder and decoders

        downs = []
        ups = []

        curr_dim = dim
        curr_res = seq_len

        self.skip_mp_cat = MPCat(t = mp_cat_t, dim = 1)

        # take care of skip connection for initial input block and first three encoder blocks

        prepend(ups, Decoder(dim * 2, dim, **block_kwargs))

        assert num_blocks_per_stage >= 1

        for _ in range(num_blocks_per_stage):
            enc = Encoder(curr_dim, curr_dim, **block_kwargs)
            dec = Decoder(curr_dim * 2, curr_dim, **block_kwargs)

            append(downs, enc)
            prepend(ups, dec)

        # stages

        for _ in range(self.num_downsamples):
            dim_out = min(dim_max, curr_dim * 2)
            upsample = Decoder(dim_out, curr_dim, has_attn = curr_res in attn_res, upsample = True, **block_kwargs)

            curr_res //= 2
            has_attn = curr_res in attn_res

            downsample = Encoder(curr_dim, dim_out, downsample = True, has_attn = has_attn, **block_kwargs)

            append(downs, downsample)
            prepend(ups, upsample)
            prepend(ups, Decoder(dim_out * 2, dim_out, has_attn = has_attn, **block_kwargs))

            for _ in range(num_blocks_per_stage):
                enc = Encoder(dim_out, dim_out, has_attn = has_attn, **block_kwargs)
                dec = Decoder(dim_out * 2, dim_out, has_attn = has_attn, **block_kwargs)

                append(downs, enc)
                prepend(ups, dec)

            curr_dim = dim_out

        self.downs = ModuleList(downs)
        self.ups = ModuleList(ups)

        # take care of the two middle decoders

        mid_has_attn = curr_res in attn_res

        self.mids = ModuleList([
            Decoder(curr_dim, curr_dim, has_attn = mid_has_attn, **block_kwargs),
            Decoder(curr_dim, curr_dim, has_attn = mid_has_attn, **block_kwargs),
        ])

        self.out_dim = channels

        name_parameters_by_path(self)

    @property
    def downsample_factor(self):
        return 2 ** self.num_downsamples

    def construct(
        self,
        x,
        time,
        self_cond = None,
        class_labels = None
    ):
        # validate sequence shape

        assert tuple(x.shape[1:]) == (self.channels, self.seq_len)

        # self conditioning

        if self.self_condition:
            if self_cond is None:
                self_cond = ops.zeros_like(x)
            x = cat((self_cond, x), dim = 1)
        else:
            assert not exists(self_cond)

        # time condition

        time_emb = self.to_time_emb(time)

        # class condition

        assert xnor(exists(class_labels), self.needs_class_labels)

        if self.needs_class_labels:
            if class_labels.dtype in (ms.int32, ms.int64):
                class_labels = ops.one_hot(class_labels, self.num_classes, Tensor(1., ms.float32), Tensor(0., ms.float32))

            assert class_labels.shape[-1] == self.num_classes
            class_labels = class_labels.astype(ms.float32) * sqrt(self.num_classes)

            class_emb = self.to_class_emb(class_labels)

            time_emb = self.add_class_emb(time_emb, class_emb)

        # final mp-silu for embedding

        emb = self.emb_activation(time_emb)

        # skip connections (a tuple read from the end: GRAPH mode compiles no list pop)

        # input block

        x = self.input_block(x)

        skips = (x,)

        # down

        for encoder in self.downs:
            x = encoder(x, emb = emb)
            skips = skips + (x,)

        # mid

        for decoder in self.mids:
            x = decoder(x, emb = emb)

        # up

        num_skips = len(skips)
        for decoder in self.ups:
            if decoder.needs_skip:
                num_skips = num_skips - 1
                skip = skips[num_skips]
                x = self.skip_mp_cat(x, skip)

            x = decoder(x, emb = emb)

        # output block

        return self.output_block(x)

# improvised MP Transformer

class MPFeedForward(Module):
    def __init__(
        self,
        *,
        dim,
        mult = 4,
        mp_add_t = 0.3
    ):
        super().__init__()
        dim_inner = int(dim * mult)
        self.net = Sequential(
            PixelNorm(dim = 1),
            Conv1d(dim, dim_inner, 1),       # the reference writes Conv2d here, undefined in its module (NameError)
            MPSiLU(),
            Conv1d(dim_inner, dim, 1)
        )

        self.mp_add = MPAdd(t = mp_add_t)

    def construct(self, x):
        res = x
        out = self.net(x)
        return self.mp_add(out, res)

class MPImageTransformer(Module):
    def __init__(
        self,
        *,
        dim,
        depth,
        dim_head = 64,
        heads = 8,
        num_mem_kv = 4,
        ff_mult = 4,
        attn_flash = False,
        residual_mp_add_t = 0.3
    ):
        super().__init__()
        layers = []

        for _ in range(depth):
            layers.append(ModuleList([
                Attention(dim = dim, heads = heads, dim_head = dim_head, num_mem_kv = num_mem_kv, flash = attn_flash, mp_add_t = residual_mp_add_t),
                MPFeedForward(dim = dim, mult = ff_mult, mp_add_t = residual_mp_add_t)
            ]))

        self.layers = ModuleList(layers)
        name_parameters_by_path(self)

    def construct(self, x):

        for layer in self.layers:
            x = layer[0](x)
            x = layer[1](x)

        return x
