"""Conversion rules, as data.

ms_ddpm mirrors the reference attribute for attribute, so a MindSpore parameter name *is*
the PyTorch state-dict key and every tensor keeps its layout (Conv2d weights are
(out, in, kh, kw) and Dense weights (out, in) in both frameworks).  The rules below are
the only exceptions; each is (pattern, replacement) applied to a PyTorch key, in order.
What a checkpoint must contain is never listed here: it is read off the target network's
own parameter set (``weight_convert.converter.target_spec``); ``DIFFUSION_BUFFERS`` only
says which entries hold the schedule (for inferring it, and for a Trainer's optimizer).
"""

# PyTorch key regex -> MindSpore name (none needed for ms_ddpm's own layers)
RENAME_RULES = []

# Tensor layout changes by MindSpore name regex (none: layouts are identical)
TRANSPOSE_RULES = []

# Prefixes that wrappers put in front of every key (DistributedDataParallel, torch.compile).
# Stripped only when *every* key carries it.
WRAPPER_PREFIXES = ('module.', '_orig_mod.')

# --- what a source file can be -----------------------------------------------------------

# file extension -> format
EXTENSIONS = {
    '.pt': 'torch', '.pth': 'torch', '.bin': 'torch',
    '.safetensors': 'safetensors',
    '.ckpt': 'mindspore',
}

# reference Trainer.save(): {'step', 'model', 'opt', 'ema', 'scaler', 'version'}
TRAINER_KEYS = ('step', 'model', 'opt', 'ema', 'scaler', 'version')
# inside 'ema' (ema_pytorch.EMA.state_dict()): initted, step, online_model.*, ema_model.*
EMA_PREFIX, ONLINE_PREFIX = 'ema_model.', 'online_model.'

# GaussianDiffusion: the Unet lives under this prefix; the 13 float32 schedule buffers
# (reference register_buffer, MindSpore non-trainable Parameters) carry these names.
DIFFUSION_MODEL_PREFIX = 'model.'
from ms_ddpm.denoising_diffusion_pytorch import DIFFUSION_BUFFERS  # noqa: E402  (the model owns the names)

# --- architecture arguments ----------------------------------------------------------------

# Unet(...) keyword arguments and their reference defaults (2.3.4)
UNET_DEFAULTS = dict(
    dim=None, init_dim=None, out_dim=None, dim_mults=(1, 2, 4, 8), channels=3,
    self_condition=False, learned_variance=False, learned_sinusoidal_cond=False,
    random_fourier_features=False, learned_sinusoidal_dim=16, sinusoidal_pos_emb_theta=10000,
    dropout=0., attn_dim_head=32, attn_heads=4, full_attn=None, flash_attn=False,
)

# GaussianDiffusion(model, ...) keyword arguments and their reference defaults
DIFFUSION_DEFAULTS = dict(
    image_size=None, timesteps=1000, sampling_timesteps=None, objective='pred_v',
    beta_schedule='sigmoid', schedule_fn_kwargs={}, ddim_sampling_eta=0., auto_normalize=True,
    offset_noise_strength=0., min_snr_loss_weight=False, min_snr_gamma=5, immiscible=False,
)

# Arguments that leave no trace in a state dict, and why
UNET_NOT_INFERABLE = {
    'dropout': 'no parameters (nn.Dropout)',
    'sinusoidal_pos_emb_theta': 'no parameters (fixed sinusoidal embedding)',
    'flash_attn': 'no parameters (a choice of attention kernel)',
}
RANDOM_OR_LEARNED = ('learned_sinusoidal_cond / random_fourier_features: both store time_mlp.0.weights '
                     '(frozen vs trained); a state dict cannot tell them apart -> learned_sinusoidal_cond=True')
DIFFUSION_NOT_INFERABLE = {
    'image_size': 'no parameters depend on it: pass --image-size or --config',
    'sampling_timesteps': 'sampling-time choice, not stored',
    'ddim_sampling_eta': 'sampling-time choice, not stored',
    'auto_normalize': 'no parameters',
    'offset_noise_strength': 'training-time choice, not stored',
    'immiscible': 'training-time choice, not stored',
}

# Attention layers: LinearAttention's to_out is Sequential(Conv2d, RMSNorm), so only it has
# to_out.1.g.  mem_kv is (2, heads, num_mem_kv, dim_head) for Attention and
# (2, heads, dim_head, num_mem_kv) for LinearAttention; Unet always uses num_mem_kv = 4.
LINEAR_ATTENTION_MARKER = 'to_out.1.g'
NUM_MEM_KV = 4

# Image channel counts taken as the likelier reading when channels/self_condition/
# learned_variance are ambiguous (see infer.py)
COMMON_CHANNELS = (1, 3, 4)

# The Adam settings of the reference Trainer (used for a Trainer-style checkpoint's 'opt')
TRAINER_ADAM = dict(lr=1e-4, betas=(0.9, 0.99))
# ... and the whole parameter group that torch.optim.Adam(params, **TRAINER_ADAM).state_dict()
# holds (torch 2.x; 'params' added per checkpoint).  Optimizer.load_state_dict takes these
# values, and Adam fills in any key a torch version adds (group.setdefault).
TRAINER_ADAM_GROUP = dict(TRAINER_ADAM, eps=1e-8, weight_decay=0, amsgrad=False, maximize=False, foreach=None,
                          capturable=False, differentiable=False, fused=None, decoupled_weight_decay=False)


# --- 1D: Unet1D / GaussianDiffusion1D (issue 12) --------------------------------------------

# Unet1D(...) keyword arguments and their reference defaults (2.3.4)
UNET1D_DEFAULTS = dict(
    dim=None, init_dim=None, out_dim=None, dim_mults=(1, 2, 4, 8), channels=3, dropout=0.,
    self_condition=False, learned_variance=False, learned_sinusoidal_cond=False,
    random_fourier_features=False, learned_sinusoidal_dim=16, sinusoidal_pos_emb_theta=10000,
    attn_dim_head=32, attn_heads=4,
)

# GaussianDiffusion1D(model, ...) keyword arguments and their reference defaults
DIFFUSION1D_DEFAULTS = dict(
    seq_length=None, timesteps=1000, sampling_timesteps=None, objective='pred_noise',
    beta_schedule='cosine', ddim_sampling_eta=0., auto_normalize=True, channels=None,
    self_condition=None, channel_first=True,
)

UNET1D_NOT_INFERABLE = {
    'dropout': 'no parameters (nn.Dropout)',
    'sinusoidal_pos_emb_theta': 'no parameters (fixed sinusoidal embedding)',
}
DIFFUSION1D_NOT_INFERABLE = {
    'seq_length': 'no parameters depend on it: pass it with --config',
    'sampling_timesteps': 'sampling-time choice, not stored',
    'ddim_sampling_eta': 'sampling-time choice, not stored',
    'auto_normalize': 'no parameters',
    'channel_first': 'no parameters (the data layout)',
}

# the kinds of model a state dict can be (DIFFUSION_KINDS, KINDS_1D): weight_convert.families


# --- the other diffusion processes (issue 13) ----------------------------------------------
# Their constructor arguments and reference defaults (2.3.4).  Learned and WeightedObjective
# are GaussianDiffusion subclasses (the same 13 buffers, the Unet under model.); the
# continuous-time processes keep the Unet under model. and no buffers (the learned noise
# schedule's parameters under log_snr.); ElucidatedDiffusion keeps it under net.; XMWrapper
# keeps the process it wraps under flow_model.

LEARNED_DEFAULTS = dict(DIFFUSION_DEFAULTS, vb_loss_weight=0.001)
WEIGHTED_DEFAULTS = dict(DIFFUSION_DEFAULTS, pred_noise_loss_weight=0.1, pred_x_start_loss_weight=0.1)
CONTINUOUS_DEFAULTS = dict(
    image_size=None, channels=3, noise_schedule='linear', num_sample_steps=500, clip_sample_denoised=True,
    learned_schedule_net_hidden_dim=1024, learned_noise_schedule_frac_gradient=1., min_snr_loss_weight=False,
    min_snr_gamma=5,
)
VPARAM_DEFAULTS = dict(image_size=None, channels=3, num_sample_steps=500, clip_sample_denoised=True)
ELUCIDATED_DEFAULTS = dict(
    image_size=None, channels=3, num_sample_steps=32, sigma_min=0.002, sigma_max=80, sigma_data=0.5, rho=7,
    P_mean=-1.2, P_std=1.2, S_churn=80, S_tmin=0.05, S_tmax=50, S_noise=1.003,
)
XM_DEFAULTS = dict(candidates=1, max_batch_size=None, random_time_method='random_times', random_time_kwarg='times')

ELUCIDATED_PREFIX = 'net.'
XM_PREFIX = 'flow_model.'
LEARNED_SCHEDULE_PREFIX = 'log_snr.'
# learned_noise_schedule: net = Sequential(Rearrange, MonotonicLinear(1, 1), Residual(Sequential(
# MonotonicLinear(1, hidden_dim), Sigmoid, MonotonicLinear(hidden_dim, 1))), Rearrange)
LEARNED_SCHEDULE_HIDDEN_KEY = 'log_snr.net.2.fn.0.net.weight'

SAMPLING_NOT_INFERABLE = 'sampling-time choice, not stored'
TRAINING_NOT_INFERABLE = 'training-time choice (a loss weight or draw), not stored'
LEARNED_NOT_INFERABLE = dict(DIFFUSION_NOT_INFERABLE, vb_loss_weight=TRAINING_NOT_INFERABLE)
WEIGHTED_NOT_INFERABLE = dict(DIFFUSION_NOT_INFERABLE, pred_noise_loss_weight=TRAINING_NOT_INFERABLE,
                              pred_x_start_loss_weight=TRAINING_NOT_INFERABLE)
CONTINUOUS_NOT_INFERABLE = {
    'image_size': DIFFUSION_NOT_INFERABLE['image_size'],
    'noise_schedule': "'linear' and 'cosine' are functions, not parameters ('learned' stores log_snr.*)",
    'num_sample_steps': SAMPLING_NOT_INFERABLE, 'clip_sample_denoised': SAMPLING_NOT_INFERABLE,
    'learned_noise_schedule_frac_gradient': TRAINING_NOT_INFERABLE, 'min_snr_loss_weight': TRAINING_NOT_INFERABLE,
    'min_snr_gamma': TRAINING_NOT_INFERABLE,
}
VPARAM_NOT_INFERABLE = {k: CONTINUOUS_NOT_INFERABLE[k] for k in ('image_size', 'num_sample_steps', 'clip_sample_denoised')}
ELUCIDATED_NOT_INFERABLE = dict(
    {k: 'a constant of the preconditioning / sampler, not stored' for k in ELUCIDATED_DEFAULTS
     if k not in ('image_size', 'channels')},
    image_size=DIFFUSION_NOT_INFERABLE['image_size'])
XM_NOT_INFERABLE = {k: 'XMWrapper has no parameters of its own' for k in XM_DEFAULTS}

# every process argument --config may name (any family)
PROCESS_ARGUMENTS = frozenset(DIFFUSION_DEFAULTS) | frozenset(DIFFUSION1D_DEFAULTS) | frozenset(LEARNED_DEFAULTS) | \
    frozenset(WEIGHTED_DEFAULTS) | frozenset(CONTINUOUS_DEFAULTS) | frozenset(VPARAM_DEFAULTS) | \
    frozenset(ELUCIDATED_DEFAULTS)


# --- the Karras networks, bare (issue 15) ---------------------------------------------------
# KarrasUnet(...) keyword arguments and their reference defaults (2.3.4, karras_unet.py).  A
# bare KarrasUnet state dict: input_block.weight (dim, in + 1, 3, 3) (a ones channel is
# concatenated to the input), output_block.0.weight (channels, dim, 3, 3), to_time_emb.1.weight
# (4 dim, fourier_dim), to_class_emb.weight (4 dim, num_classes), encoders downs.i.*, decoders
# ups.i.*, mids.0/1.*; attention blocks carry attn.mem_kv (2, heads, 4, attn_dim_head).
KARRAS_UNET_DEFAULTS = dict(
    image_size=None, dim=192, dim_max=768, num_classes=None, channels=4, num_downsamples=3,
    num_blocks_per_stage=4, attn_res=(16, 8), fourier_dim=16, attn_dim_head=64, attn_flash=False,
    mp_cat_t=0.5, mp_add_emb_t=0.5, attn_res_mp_add_t=0.3, resnet_mp_add_t=0.3, dropout=0.1,
    self_condition=False,
)
KARRAS_IMAGE_SIZE = ('no parameter depends on it (attn_res is relative to it): pass --image-size N '
                     '(or "image_size" in --config)')
_NO_PARAMETERS = 'no parameters (a constant of the forward)'
KARRAS_UNET_NOT_INFERABLE = {
    'image_size': KARRAS_IMAGE_SIZE,
    'attn_flash': 'no parameters (a choice of attention kernel)',
    'dropout': 'no parameters (nn.Dropout; verify runs in eval mode)',
    'mp_cat_t': _NO_PARAMETERS, 'mp_add_emb_t': _NO_PARAMETERS, 'attn_res_mp_add_t': _NO_PARAMETERS,
    'resnet_mp_add_t': _NO_PARAMETERS,
}
# every network argument --config may name (any family)
NETWORK_ARGUMENTS = frozenset(UNET_DEFAULTS) | frozenset(UNET1D_DEFAULTS) | frozenset(KARRAS_UNET_DEFAULTS)


# --- classifier-free guidance (issue 14: classifier_free_guidance.Unet / GaussianDiffusion) -------
# Both classes share their names with the main module's, so their kinds are qualified by the
# module ('classifier_free_guidance.GaussianDiffusion', 'classifier_free_guidance.Unet';
# ``--model`` takes them).  The class-conditional Unet: classes_emb.weight (num_classes, dim),
# null_classes_emb (dim,), classes_mlp.* (always: the conditional marker), the old layout
# (attention as Residual(PreNorm(...)): downs.i.2.fn.fn.*, no mem_kv; Downsample a bare
# Conv2d(4, 2, 1): downs.i.3.weight at every stage); no self-conditioning, no full_attn.
CFG_MODULE = 'classifier_free_guidance'
CFG_DIFFUSION_KIND, CFG_UNET_KIND = CFG_MODULE + '.GaussianDiffusion', CFG_MODULE + '.Unet'
CFG_MARKER = 'classes_mlp.'          # under model. in the process
CFG_UNET_DEFAULTS = dict(
    dim=None, num_classes=None, cond_drop_prob=0.5, init_dim=None, out_dim=None, dim_mults=(1, 2, 4, 8), channels=3,
    learned_variance=False, learned_sinusoidal_cond=False, random_fourier_features=False, learned_sinusoidal_dim=16,
    attn_dim_head=32, attn_heads=4,
)
CFG_DIFFUSION_DEFAULTS = dict(
    image_size=None, timesteps=1000, sampling_timesteps=None, objective='pred_noise', beta_schedule='cosine',
    ddim_sampling_eta=1., offset_noise_strength=0., min_snr_loss_weight=False, min_snr_gamma=5,
    use_cfg_plus_plus=False,
)
CFG_UNET_NOT_INFERABLE = {
    'cond_drop_prob': 'training-time choice (the probability of dropping the class), not stored: default 0.5',
}
CFG_NUM_CLASSES = ('classes_emb.weight (num_classes, dim) is missing: num_classes cannot be inferred; '
                   'a class-conditional Unet needs it and its classes embedding')
CFG_DIFFUSION_NOT_INFERABLE = {
    'image_size': DIFFUSION_NOT_INFERABLE['image_size'],
    'sampling_timesteps': SAMPLING_NOT_INFERABLE, 'ddim_sampling_eta': SAMPLING_NOT_INFERABLE,
    'use_cfg_plus_plus': SAMPLING_NOT_INFERABLE, 'offset_noise_strength': TRAINING_NOT_INFERABLE,
}
NETWORK_ARGUMENTS = NETWORK_ARGUMENTS | frozenset(CFG_UNET_DEFAULTS)
PROCESS_ARGUMENTS = PROCESS_ARGUMENTS | frozenset(CFG_DIFFUSION_DEFAULTS)
# KarrasUnet1D / KarrasUnet3D (karras_unet_1d.py, karras_unet_3d.py): the same layout with Conv1d
# (out, in, k) / Conv3d (out, in, kt, kh, kw) weights.  1D: seq_len in place of image_size (attn_res
# relative to it).  3D: frames, per-stage block counts (inferable), downsample_types (not: the
# downsampling conv is 1x1x1 whatever it resizes), factorize_space_time_attn (inferable: the
# resizing blocks' attention is attn.0 / attn.1 (space, time) instead of attn).
KARRAS_UNET1D_DEFAULTS = dict(KARRAS_UNET_DEFAULTS, seq_len=None)
del KARRAS_UNET1D_DEFAULTS['image_size']
KARRAS_UNET3D_DEFAULTS = dict(KARRAS_UNET_DEFAULTS, frames=None, downsample_types=None,
                              factorize_space_time_attn=False)
_KARRAS_CONSTANTS = {k: v for k, v in KARRAS_UNET_NOT_INFERABLE.items() if k != 'image_size'}
KARRAS_UNET1D_NOT_INFERABLE = dict(
    _KARRAS_CONSTANTS, seq_len='no parameter depends on it (attn_res is relative to it): pass --seq-length N '
                               '(or "seq_len" in --config)')
KARRAS_UNET3D_NOT_INFERABLE = dict(
    KARRAS_UNET_NOT_INFERABLE,
    frames='no parameter depends on it: pass "frames" in --config',
    downsample_types="the downsampling convs are 1x1x1 whatever they resize: read as 'all' (the default); "
                     "pass \"downsample_types\" in --config otherwise (attn_res follows it)")
# a verify / convert option that names a network argument under another name
NETWORK_ALIASES = {'seq_length': 'seq_len'}
NETWORK_ARGUMENTS = NETWORK_ARGUMENTS | frozenset(KARRAS_UNET1D_DEFAULTS) | frozenset(KARRAS_UNET3D_DEFAULTS)


# --- simple diffusion (issue 15: simple_diffusion.UViT and its GaussianDiffusion) ----------------
# UViT(...) keyword arguments and their reference defaults (2.3.4, simple_diffusion.py).  A bare
# UViT state dict: init_conv.weight (init_dim, channels, 7, 7) (patch_size 1), or (init_dim,
# channels, p, p) with unpatchify.* (a ConvTranspose2d (c p p, c, p, p)) for patch_size p > 1, or
# with dual_patchnorm init_conv.1/2/3.* (LayerNorm, Linear (init_dim, c p p), LayerNorm);
# time_mlp.0.weights (learned_sinusoidal_dim / 2,), time_mlp.1.weight (4 dim, learned_sinusoidal_dim
# + 1); downs.i.3.1.weight (Downsample: (dim_out, dim_in * factor^2, 1, 1)); ups.i.0.net.0.* (its
# Upsample: conv + SiLU + PixelShuffle, the key no other family has); the middle ViT vit.layers.*
# (Attention: q_scale (dim_head,), to_qkv (3 heads dim_head, mid_dim); FeedForward proj_in.0
# (mid_dim ff_mult, mid_dim)); final_conv.weight (out_dim, init_dim, 1, 1).
SIMPLE_MODULE = 'simple_diffusion'
UVIT_KIND = 'UViT'
SIMPLE_DIFFUSION_KIND = SIMPLE_MODULE + '.GaussianDiffusion'   # the main module's class name: qualified
UVIT_MARKER = 'ups.0.0.net.0.'      # recognition (with final_conv.weight, rank 4): UViT's Upsample
UVIT_DEFAULTS = dict(
    dim=None, init_dim=None, out_dim=None, dim_mults=(1, 2, 4, 8), downsample_factor=2, channels=3, vit_depth=6,
    vit_dropout=0.2, attn_dim_head=32, attn_heads=4, ff_mult=4, learned_sinusoidal_dim=16, patch_size=1,
    dual_patchnorm=False,
)
# simple_diffusion.GaussianDiffusion(model, ...) keyword arguments and their reference defaults; its
# noise_schedule is a function (the module's only one, logsnr_schedule_cosine, is used: not a
# config value), the shifted / interpolated schedules are numbers (noise_d, noise_d_low/high)
SIMPLE_DIFFUSION_DEFAULTS = dict(
    image_size=None, channels=3, pred_objective='v', noise_d=None, noise_d_low=None, noise_d_high=None,
    num_sample_steps=500, clip_sample_denoised=True, min_snr_loss_weight=True, min_snr_gamma=5,
)
UVIT_NOT_INFERABLE = {
    'vit_dropout': 'no parameters (nn.Dropout; verify runs in eval mode)',
    'init_img_transform / final_img_itransform': 'functions, not parameters (and not config values): identity',
}
UVIT_NO_ATTENTION = 'vit_depth 0: no ViT layer, no trace (default used)'
SIMPLE_IMAGE_SIZE = ('no parameter depends on it (UViT is convolutional, its ViT has no position embedding): '
                     'pass --image-size N (or "image_size" in --config)')
SIMPLE_DIFFUSION_NOT_INFERABLE = {
    'image_size': SIMPLE_IMAGE_SIZE,
    'pred_objective': "'v' and 'eps' train the same parameters: not stored (default 'v'; "
                      "pass \"pred_objective\" in --config)",
    'noise_d': 'the log-SNR schedule is a function of t, not parameters: not stored (pass it in --config)',
    'noise_d_low': 'the log-SNR schedule is a function of t, not parameters: not stored (pass it in --config)',
    'noise_d_high': 'the log-SNR schedule is a function of t, not parameters: not stored (pass it in --config)',
    'num_sample_steps': SAMPLING_NOT_INFERABLE, 'clip_sample_denoised': SAMPLING_NOT_INFERABLE + ' (unused in both)',
    'min_snr_loss_weight': TRAINING_NOT_INFERABLE, 'min_snr_gamma': TRAINING_NOT_INFERABLE,
}
NETWORK_ARGUMENTS = NETWORK_ARGUMENTS | frozenset(UVIT_DEFAULTS)
PROCESS_ARGUMENTS = PROCESS_ARGUMENTS | frozenset(SIMPLE_DIFFUSION_DEFAULTS)
