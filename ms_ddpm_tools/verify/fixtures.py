"""Golden fixtures of ``verify``: the PyTorch side of a run (weights, every input and draw,
every reference output) recorded once, so ``ms-ddpm verify --fixture FILE`` runs where
PyTorch is not installed.  The file layout is the project's one fixture layout
(``parity.fixtures``).

    ms-ddpm verify --recipe tiny --batch 1 --sample-batch 4 --record-fixture parity_tests/fixtures/verify-tiny.npz
    ms-ddpm verify CHECKPOINT [--ema] [--image-size N] --record-fixture mine.npz
"""

import os

FORMAT = 'ms_ddpm-verify-fixture'


def record_verify(path, checkpoint=None, recipe='tiny', ema=False, image_size=None, config=None,
                  batch=1, sample_batch=4, seed=0, sampling_timesteps=None, classes=None, cond_scale=None,
                  rescaled_phi=None):
    """The reference side of a ``verify`` run, written to ``path``."""
    import torch
    from reference.builders import torch_versions
    from ms_ddpm_tools.verify import core
    from ms_ddpm_tools.verify.default import RECIPES, config_of, ensure_checkpoint
    torch.set_num_threads(1)
    if checkpoint is None:
        r = RECIPES[recipe]
        checkpoint, _ = ensure_checkpoint(r)
        config = config or config_of(r)
        name = f'built-in "{r["name"]}"'
    else:
        name = os.path.basename(checkpoint)
    cfg, sd, info = core.load_checkpoint(checkpoint, ema=ema, config=config, image_size=image_size)
    if sampling_timesteps:
        cfg['diffusion']['sampling_timesteps'] = sampling_timesteps
    timer = core.Timer()
    from ms_ddpm_tools.verify import cfg as conditional
    opts = None
    if conditional.is_cfg(cfg):        # issue 14: the conditional path at the given classes / cond_scale
        opts = conditional.options(cfg, classes, cond_scale, rescaled_phi)
        inp, ts = conditional.make_inputs(cfg, core.alphas_cumprod_of(cfg, sd), opts, batch=batch,
                                          per_class=max(1, sample_batch // len(opts['classes'])), seed=seed)
        expected = conditional.torch_side(cfg, sd, inp, opts, timer, conditional.PARTS, [])
    else:
        inp, ts = core.make_inputs(cfg, core.alphas_cumprod_of(cfg, sd), batch=batch, sample_batch=sample_batch,
                                   seed=seed)
        expected = core.torch_side(cfg, sd, inp, progress=False, timer=timer)
    meta = {'format': FORMAT, 'version': 1, 'config': cfg, 'timesteps': ts, 'batch': batch,
            'checkpoint': name, 'source': info, 'weights': core.weights_label(info, ema),
            'versions': torch_versions(), 'torch_timings': dict(timer.times)}
    if opts is not None:
        meta['cfg_options'] = opts
    save_verify_fixture(path, meta, sd, inp, expected)
    return path


def save_verify_fixture(path, meta, state_dict, inputs, expected):
    from parity.fixtures import pack, save_fixture
    save_fixture(path, meta, pack({'w': state_dict, 'in': inputs, 'out': expected}))


def load_verify_fixture(path):
    """(meta, weights, inputs, reference outputs) of a verify fixture."""
    from ms_ddpm_tools.verify.core import VerifyError
    from parity.fixtures import load_fixture, subtree
    meta, arrays = load_fixture(path)
    if meta.get('format') != FORMAT:
        raise VerifyError(f'{path}: not a verify fixture (format {meta.get("format")!r}; expected {FORMAT!r})')
    return (meta,) + tuple(subtree(arrays, p) for p in ('w', 'in', 'out'))


# the shipped 1D fixture: a small GaussianDiffusion1D (torch.manual_seed(0) weights), 2 channels
TINY_1D = {'unet': {'dim': 8, 'dim_mults': [1, 2], 'channels': 2},
           'diffusion': {'seq_length': 16, 'timesteps': 20, 'sampling_timesteps': 4, 'objective': 'pred_v'}}


def record_1d(path):
    """Record the shipped 1D verify fixture (``python -m ms_ddpm_tools.verify.fixtures PATH``)."""
    import tempfile
    import torch
    import denoising_diffusion_pytorch as ddp
    from weight_convert.config import kwargs_of
    torch.manual_seed(0)
    gd = ddp.GaussianDiffusion1D(ddp.Unet1D(**kwargs_of(TINY_1D['unet'])), **TINY_1D['diffusion'])
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, 'tiny-1d.pt')
        torch.save(gd.state_dict(), src)
        return record_verify(path, src, config=TINY_1D, batch=1, sample_batch=2)


# the shipped classifier-free guidance fixture (issue 14): a tiny classifier_free_guidance.GaussianDiffusion
# (torch.manual_seed(0) weights), verified at classes 0 and 2, cond_scale 3, rescaled_phi 0.7, DDIM 2 of 4
TINY_CFG = {'unet': {'dim': 8, 'num_classes': 3, 'dim_mults': [1, 2], 'attn_dim_head': 8, 'attn_heads': 2},
            'diffusion': {'image_size': 8, 'timesteps': 4, 'objective': 'pred_v'}}
TINY_CFG_OPTIONS = dict(classes=[0, 2], cond_scale=3., rescaled_phi=0.7, sampling_timesteps=2, batch=1, sample_batch=2)


def tiny_cfg_state_dict():
    """The weights of the shipped CFG fixture (the reference's, built from seed 0)."""
    import torch
    from denoising_diffusion_pytorch import classifier_free_guidance as cfg_ref
    from weight_convert.config import kwargs_of
    torch.manual_seed(0)
    return cfg_ref.GaussianDiffusion(cfg_ref.Unet(**kwargs_of(TINY_CFG['unet'])), **TINY_CFG['diffusion']).state_dict()


def record_cfg(path):
    """Record the shipped CFG verify fixture (``python -m ms_ddpm_tools.verify.fixtures cfg [PATH]``)."""
    import tempfile
    import torch
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, 'tiny-cfg.pt')
        torch.save(tiny_cfg_state_dict(), src)
        return record_verify(path, src, config={'unet': TINY_CFG['unet']}, image_size=8, **TINY_CFG_OPTIONS)


if __name__ == '__main__':
    import sys
    from parity.fixtures import FIXTURE_DIR
    if sys.argv[1:2] == ['cfg']:
        out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(FIXTURE_DIR, 'verify-cfg.npz')
        print(f'{record_cfg(out)}: {os.path.getsize(out) / 1e6:.2f} MB')
        sys.exit(0)
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(FIXTURE_DIR, 'verify-1d.npz')
    print(f'{record_1d(out)}: {os.path.getsize(out) / 1e6:.2f} MB')
