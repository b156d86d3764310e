"""ms_ddpm: a MindSpore twin of denoising-diffusion-pytorch 2.3.4."""

import os as _os
_os.environ.setdefault('GLOG_v', '3')   # MindSpore: errors only (its CPU backend warns on every start)

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
    GaussianDiffusion,
    linear_beta_schedule,
    cosine_beta_schedule,
    sigmoid_beta_schedule,
    Dataset,
    Trainer,
)
from ms_ddpm.denoising_diffusion_pytorch_1d import GaussianDiffusion1D, Unet1D, Trainer1D, Dataset1D
from ms_ddpm.ema import EMA
from ms_ddpm.attend import Attend

# the other diffusion processes (issue 13), as the reference's __init__ exports them
from ms_ddpm.learned_gaussian_diffusion import LearnedGaussianDiffusion
from ms_ddpm.continuous_time_gaussian_diffusion import ContinuousTimeGaussianDiffusion
from ms_ddpm.weighted_objective_gaussian_diffusion import WeightedObjectiveGaussianDiffusion
from ms_ddpm.elucidated_diffusion import ElucidatedDiffusion
from ms_ddpm.v_param_continuous_time_gaussian_diffusion import VParamContinuousTimeGaussianDiffusion
from ms_ddpm.xm import XMWrapper

# the magnitude-preserving U-Nets (issue 15), as the reference's __init__ exports them
from ms_ddpm.karras_unet import (
    KarrasUnet,
    InvSqrtDecayLRSched
)

from ms_ddpm.karras_unet_1d import KarrasUnet1D
from ms_ddpm.karras_unet_3d import KarrasUnet3D
