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
