"""ms_ddpm: a MindSpore twin of denoising-diffusion-pytorch 2.3.4."""

from ms_ddpm.version import __version__, REFERENCE_VERSION

from ms_ddpm.denoising_diffusion_pytorch import (
    RMSNorm,
    SinusoidalPosEmb,
    RandomOrLearnedSinusoidalPosEmb,
    Block,
    ResnetBlock,
    LinearAttention,
    Attention,
    Upsample,
    Downsample,
    Unet,
)
from ms_ddpm.attend import Attend
