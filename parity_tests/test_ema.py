"""ms_ddpm.EMA against ema_pytorch.EMA (0.8.3): the online weights of both twins are set to the
same values before every update; the EMA weights, decay, ``initted`` and ``step`` must agree
bit for bit (the lerp is torch's fused multiply-add, reproduced in float64; see ms_ddpm.ema)."""

import numpy as np
import pytest

from parity.compare import assert_parity

UNET = dict(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8, channels=1)
DIFF = dict(image_size=8, timesteps=10)


@pytest.mark.parametrize('kw', [
    dict(beta=0.9, update_after_step=3, update_every=2, power=3 / 4),          # warm-up, both lerp branches
    dict(beta=0.99, update_after_step=0, update_every=1, inv_gamma=2., min_value=0.3,
         param_or_buffer_names_no_ema={'model.final_conv.bias'}, ignore_startswith_names={'model.mid_attn.'}),
], ids=['warmup', 'options'])
def test_ema_matches_ema_pytorch(kw, record):
    import torch
    from ema_pytorch import EMA as TorchEMA
    from ms_ddpm import EMA
    from parity.harness import build_diffusion_pair
    from weight_convert import load_torch_state_dict
    td, md = build_diffusion_pair(UNET, DIFF)
    te, me = TorchEMA(td, **kw), EMA(md, **kw)
    rng = np.random.default_rng(0)
    base = {k: v.numpy().copy() for k, v in td.state_dict().items()}
    decays = []
    for step in range(14):
        sd = {k: v + np.float32(0.05 * (step + 1)) * rng.standard_normal(v.shape).astype(np.float32) for k, v in base.items()}
        td.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
        load_torch_state_dict(md, sd)
        te.update()
        me.update()
        decays.append((te.get_current_decay(), me.get_current_decay()))
    assert all(a == b for a, b in decays), [(i, a, b) for i, (a, b) in enumerate(decays) if a != b]
    assert any(0 < d < 0.5 for d, _ in decays) and any(d >= 0.5 for d, _ in decays) or kw['update_after_step'] == 0
    t_sd, m_sd = te.state_dict(), me.state_dict()
    assert list(t_sd) == list(m_sd)
    assert bool(t_sd['initted']) == m_sd['initted'] and int(t_sd['step']) == int(m_sd['step']) == 14
    for k in t_sd:
        if k.startswith('ema_model.'):
            assert_parity(f'ema {k}', t_sd[k].numpy(), m_sd[k], 'exact')
    flat = lambda sd, f: np.concatenate([f(sd[k]).ravel() for k in t_sd if k.startswith('ema_model.')])
    record(assert_parity('EMA weights after 14 updates vs ema_pytorch', flat(t_sd, lambda v: v.numpy()), flat(m_sd, np.asarray), 'exact'))
    # not vacuous: the EMA differs from the online model
    assert not np.array_equal(flat(t_sd, lambda v: v.numpy()), np.concatenate([np.asarray(m_sd['online_model.' + k[10:]]).ravel() for k in t_sd if k.startswith('ema_model.')]))


def test_ema_state_dict_round_trip():
    import ms_ddpm
    md = ms_ddpm.GaussianDiffusion(ms_ddpm.Unet(**UNET), **DIFF)
    e = ms_ddpm.EMA(md, update_after_step=0, update_every=1)
    e.update(); e.update()
    sd = e.state_dict()
    e2 = ms_ddpm.EMA(ms_ddpm.GaussianDiffusion(ms_ddpm.Unet(**UNET), **DIFF)).load_state_dict(sd)
    assert e2.initted and e2.step == 2
    for k, v in e2.state_dict().items():
        if k.startswith('ema_model.'):
            np.testing.assert_array_equal(v, sd[k])
