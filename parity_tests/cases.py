"""Parity cases, as data.  One row = one thing compared in both frameworks.

LAYER_CASES: (id, class name, args, kwargs, input specs, tolerance kind)
UNET_CASES:  (id, Unet kwargs, image (batch, channels, h, w))
"""

B = 2

LAYER_CASES = [
    ('RMSNorm',                  'RMSNorm', (16,), {}, [('randn', (B, 16, 8, 8))], 'elementwise'),
    ('SinusoidalPosEmb',         'SinusoidalPosEmb', (32,), {}, [('time', (B,), 1000)], 'elementwise'),
    ('SinusoidalPosEmb-theta',   'SinusoidalPosEmb', (16,), {'theta': 100}, [('time', (B,), 1000)], 'elementwise'),
    ('RandomOrLearnedSinusoidalPosEmb', 'RandomOrLearnedSinusoidalPosEmb', (16,), {}, [('float_time', (B,), 1.0)], 'elementwise'),
    ('RandomFourierFeatures',    'RandomOrLearnedSinusoidalPosEmb', (16, True), {}, [('float_time', (B,), 1.0)], 'elementwise'),
    ('Block',                    'Block', (8, 16), {}, [('randn', (B, 8, 8, 8))], 'layer'),
    ('ResnetBlock-time',         'ResnetBlock', (8, 16), {'time_emb_dim': 32}, [('randn', (B, 8, 8, 8)), ('randn', (B, 32))], 'layer'),
    ('ResnetBlock-notime',       'ResnetBlock', (16, 16), {}, [('randn', (B, 16, 8, 8))], 'layer'),
    ('LinearAttention',          'LinearAttention', (16,), {'heads': 2, 'dim_head': 8}, [('randn', (B, 16, 8, 6))], 'layer'),
    ('LinearAttention-default',  'LinearAttention', (32,), {}, [('randn', (B, 32, 4, 4))], 'layer'),
    ('Attention',                'Attention', (16,), {'heads': 2, 'dim_head': 8}, [('randn', (B, 16, 8, 6))], 'layer'),
    ('Attention-flash',          'Attention', (16,), {'heads': 2, 'dim_head': 8, 'flash': True}, [('randn', (B, 16, 4, 4))], 'layer'),
    ('Attend',                   'Attend', (), {}, [('randn', (B, 2, 10, 8))] * 3, 'layer'),
    ('Attend-flash',             'Attend', (), {'flash': True}, [('randn', (B, 2, 10, 8))] * 3, 'layer'),
    ('Upsample',                 'Upsample', (8, 16), {}, [('randn', (B, 8, 4, 6))], 'layer'),
    ('Downsample',               'Downsample', (8, 16), {}, [('randn', (B, 8, 4, 6))], 'layer'),
]

SMALL = dict(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8)

UNET_CASES = [
    ('defaults-dim16',       dict(dim=16), (B, 3, 16, 16)),
    ('small',                dict(SMALL), (B, 3, 16, 16)),
    ('self_condition',       dict(SMALL, self_condition=True), (B, 3, 16, 16)),
    ('learned_variance',     dict(SMALL, learned_variance=True), (B, 3, 16, 16)),
    ('learned_sinusoidal',   dict(SMALL, learned_sinusoidal_cond=True), (B, 3, 16, 16)),
    ('random_fourier',       dict(SMALL, random_fourier_features=True), (B, 3, 16, 16)),
    ('full_attn-all',        dict(SMALL, dim_mults=(1, 2, 2), full_attn=True), (B, 3, 16, 16)),
    ('full_attn-tuple',      dict(SMALL, dim_mults=(1, 2, 2), full_attn=(True, False, True)), (B, 3, 16, 16)),
    ('per-stage-heads',      dict(dim=8, dim_mults=(1, 2, 4), attn_heads=(1, 2, 4), attn_dim_head=(4, 8, 16)), (B, 3, 16, 16)),
    ('init_dim-out_dim',     dict(SMALL, init_dim=12, out_dim=5), (B, 3, 16, 16)),
    ('channels-1',           dict(SMALL, channels=1), (B, 1, 16, 16)),
    ('non-square',           dict(SMALL, dim_mults=(1, 2, 2)), (B, 3, 8, 20)),
    ('3-stages',             dict(dim=8, dim_mults=(1, 2, 4)), (B, 3, 16, 16)),
    ('4-stages',             dict(dim=8, dim_mults=(1, 2, 4, 8)), (B, 3, 16, 16)),
    ('theta-dropout-flash',  dict(SMALL, sinusoidal_pos_emb_theta=1000, dropout=0.1, flash_attn=True), (B, 3, 16, 16)),
]

# --- GaussianDiffusion -------------------------------------------------------------------

DIFF_UNET = dict(SMALL)
DIFF_UNET_SC = dict(SMALL, self_condition=True)
IMG = (B, 3, 16, 16)

# schedule buffers: (id, GaussianDiffusion kwargs)
SCHEDULE_CASES = [
    (f'{sched}-T{T}-{obj}{"-minsnr" if snr else ""}',
     dict(image_size=16, timesteps=T, beta_schedule=sched, objective=obj, min_snr_loss_weight=snr))
    for sched in ('linear', 'cosine', 'sigmoid') for T in (1000, 37)
    for obj, snr in (('pred_noise', False), ('pred_x0', True), ('pred_v', False), ('pred_v', True))
] + [
    ('cosine-s0.02', dict(image_size=16, timesteps=200, beta_schedule='cosine', schedule_fn_kwargs=dict(s=0.02))),
    ('sigmoid-kwargs', dict(image_size=16, timesteps=200, beta_schedule='sigmoid',
                            schedule_fn_kwargs=dict(start=-2, end=4, tau=0.7))),
    ('min_snr_gamma-2', dict(image_size=16, timesteps=100, min_snr_loss_weight=True, min_snr_gamma=2)),
]

# losses: (id, unet cfg, GaussianDiffusion kwargs, extra draws: {'offset': bool, 'coin': float or None}, reduction)
LOSS_CASES = [
    (f'{obj}-{sched}', DIFF_UNET, dict(image_size=16, timesteps=100, objective=obj, beta_schedule=sched), {}, 'mean')
    for obj in ('pred_noise', 'pred_x0', 'pred_v') for sched in ('linear', 'cosine', 'sigmoid')
] + [
    ('min_snr-pred_v', DIFF_UNET, dict(image_size=16, timesteps=100, min_snr_loss_weight=True), {}, 'mean'),
    ('min_snr-pred_noise', DIFF_UNET, dict(image_size=16, timesteps=100, objective='pred_noise', min_snr_loss_weight=True), {}, 'mean'),
    ('min_snr-pred_x0', DIFF_UNET, dict(image_size=16, timesteps=100, objective='pred_x0', min_snr_loss_weight=True), {}, 'mean'),
    ('offset_noise', DIFF_UNET, dict(image_size=16, timesteps=100, offset_noise_strength=0.1), {'offset': True}, 'mean'),
    ('reduction-none', DIFF_UNET, dict(image_size=16, timesteps=100), {}, 'none'),
    ('self_cond-coin-used', DIFF_UNET_SC, dict(image_size=16, timesteps=100), {'coin': 0.3}, 'mean'),
    ('self_cond-coin-unused', DIFF_UNET_SC, dict(image_size=16, timesteps=100), {'coin': 0.7}, 'none'),
    ('no-auto_normalize', DIFF_UNET, dict(image_size=16, timesteps=100, auto_normalize=False), {}, 'mean'),
    ('immiscible', DIFF_UNET, dict(image_size=16, timesteps=100, immiscible=True), {}, 'none'),
    ('non-square', dict(SMALL), dict(image_size=(8, 12), timesteps=100), {}, 'none'),
]

# gradients / optimiser steps: (id, unet cfg, GaussianDiffusion kwargs, extra draws)
TRAIN_CASES = [
    ('pred_v-sigmoid', DIFF_UNET, dict(image_size=16, timesteps=100), {}),
    ('pred_noise-self_cond-offset', DIFF_UNET_SC, dict(image_size=16, timesteps=100, objective='pred_noise',
                                                       offset_noise_strength=0.1), {'offset': True, 'coin': 0.2}),
    ('pred_x0-min_snr-linear', DIFF_UNET, dict(image_size=16, timesteps=100, objective='pred_x0',
                                              beta_schedule='linear', min_snr_loss_weight=True), {}),
]

# the reference Trainer's optimiser settings
ADAM = dict(lr=1e-4, betas=(0.9, 0.99))
