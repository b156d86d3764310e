"""``--verify``: build the reference (PyTorch) model and the MindSpore model, each from its
own file, run both on one probe input and report the difference (parity.compare.diff).
Needs PyTorch and the reference package."""

from collections import OrderedDict

import numpy as np

from weight_convert.converter import diffusion_kwargs, load_model, read_weights, unet_kwargs
from weight_convert.formats import torch_from_entry
from weight_convert.rules import DIFFUSION_BUFFERS


def _probe(cfg, seed=0):
    u = cfg['unet']
    factor = 2 ** (len(u['dim_mults']) - 1)
    if cfg['model'] == 'GaussianDiffusion':
        size = cfg['diffusion']['image_size']
        h, w = (size, size) if isinstance(size, int) else tuple(size)
    else:
        h = w = factor * max(1, 16 // factor)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, u['channels'], h, w)).astype(np.float32)
    if u.get('learned_sinusoidal_cond') or u.get('random_fourier_features'):
        t = rng.random(2).astype(np.float32)
    else:
        high = cfg['diffusion']['timesteps'] if cfg['model'] == 'GaussianDiffusion' else 1000
        t = rng.integers(0, high, size=2).astype(np.int64)
    cond = rng.standard_normal(x.shape).astype(np.float32) if u.get('self_condition') else None
    return x, t, cond


def verify(torch_path, ms_path, torch_ema=False, ms_ema=False, config=None, log=print):
    """Build the reference model from ``torch_path``'s weights and the ms_ddpm model from
    ``ms_path``'s (any supported format each; ``*_ema`` picks a Trainer checkpoint's EMA
    weights), run both on one probe input and compare.  ``config``: the architecture (as
    written beside converted weights); default: the one stored with ``ms_path`` or inferred.
    Returns (ok, list of Diff)."""
    import torch
    import mindspore as ms
    from parity.compare import diff
    from parity.tolerances import tolerance
    from reference.builders import check_reference_version
    check_reference_version()
    import denoising_diffusion_pytorch as ddp

    net = load_model(ms_path, config=config, ema=ms_ema)
    cfg = net.ms_ddpm_config
    source = read_weights(torch_path, ema=torch_ema)
    sd = OrderedDict((k, torch_from_entry(e)) for k, e in source.entries.items())
    tu = ddp.Unet(**unet_kwargs(cfg))
    if cfg['model'] == 'GaussianDiffusion':
        tm = ddp.GaussianDiffusion(tu, **diffusion_kwargs(cfg))
    else:
        tm = tu
    tm.load_state_dict(sd, strict=True)
    tm.eval()
    net.set_train(False)
    t_unet = tu
    m_unet = net.model if cfg['model'] == 'GaussianDiffusion' else net
    x, t, cond = _probe(cfg)
    args_t = [torch.from_numpy(x), torch.from_numpy(t)] + ([torch.from_numpy(cond)] if cond is not None else [])
    args_m = [ms.Tensor(x), ms.Tensor(t)] + ([ms.Tensor(cond)] if cond is not None else [])
    with torch.no_grad():
        expected = t_unet(*args_t).numpy()
    actual = m_unet(*args_m).asnumpy()
    tol = tolerance('unet', 'float32')
    results = []
    what = 'Unet' if cfg['model'] == 'Unet' else 'GaussianDiffusion.model (Unet)'
    r = diff(f'{what} output on probe {tuple(x.shape)}', expected, actual)
    r.tol, r.ok = tol.rel, (not r.nonfinite) and r.rel_fro <= tol.rel
    results.append(r)
    if cfg['model'] == 'GaussianDiffusion':
        params = dict(net.parameters_and_names())
        for b in DIFFUSION_BUFFERS:
            rb = diff(f'buffer {b}', getattr(tm, b).numpy(), params[b].asnumpy())
            rb.tol = tolerance('schedule', 'float32').rel
            rb.ok = (not rb.nonfinite) and rb.max_abs <= rb.tol
            results.append(rb)
    for r in results:
        log(str(r))
    ok = all(r.ok for r in results)
    log('verify: ' + ('PASS' if ok else 'FAIL') + f' (Unet output tolerance rel_fro <= {tol.rel:.1e}: {tol.reason}; '
        'buffers must match exactly)')
    return ok, results
