"""Golden fixtures of ``verify``: the PyTorch side of a run (weights, every input and draw,
every reference output) recorded once, so ``ms-ddpm verify --fixture FILE`` runs where
PyTorch is not installed.  The file layout is the project's one fixture layout
(``parity.fixtures``).

    ms-ddpm verify --recipe tiny --batch 1 --sample-batch 4 --record-fixture parity_tests/fixtures/verify-tiny.npz
    ms-ddpm verify CHECKPOINT [--ema] [--image-size N] --record-fixture mine.npz
"""

import os

from ms_ddpm_tools.verify.fixture_io import FORMAT, load_verify_fixture, save_verify_fixture  # noqa: F401


def record_verify(path, checkpoint=None, recipe='tiny', ema=False, image_size=None, config=None,
                  batch=1, sample_batch=4, seed=0, sampling_timesteps=None, classes=None, cond_scale=None,
                  rescaled_phi=None, sampler='default', resample=None, parts=None):
    """The reference side of a ``verify`` run, written to ``path`` (``engine.verify(record=path)``:
    the run's own code path, whatever the kind).  ``parts``: the comparisons recorded (default
    all; a fixture without ``layers`` is a fraction of the size, its replay compares the rest)."""
    from ms_ddpm_tools.verify.engine import PARTS, verify
    return verify(checkpoint, ema=ema, config=config, image_size=image_size, sampling_timesteps=sampling_timesteps,
                  batch=batch, sample_batch=sample_batch, seed=seed, recipe=recipe, parts=parts or PARTS,
                  classes=classes, cond_scale=cond_scale, rescaled_phi=rescaled_phi, sampler=sampler,
                  resample=resample, record=path, progress=False, log=lambda *a: None)


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


# the comparisons the shipped CFG fixture records: all but the per-layer activations (which, with
# their float64 twins, were 5.6 of its 5.8 MB; the live CFG run compares them, test_convert_cfg)
CFG_FIXTURE_PARTS = ('unet', 'loss', 'sample', 'buffers')


def record_cfg(path, parts=CFG_FIXTURE_PARTS):
    """Record the shipped CFG verify fixture (``python -m ms_ddpm_tools.verify.fixtures cfg [PATH]``)."""
    import tempfile
    import torch
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, 'tiny-cfg.pt')
        torch.save(tiny_cfg_state_dict(), src)
        return record_verify(path, src, config={'unet': TINY_CFG['unet']}, image_size=8, parts=parts,
                             **TINY_CFG_OPTIONS)


# the shipped sampler fixtures (issue 14: verify --sampler repaint | guided): a tiny plain
# GaussianDiffusion (torch.manual_seed(0) weights, 3 channels: the example classifier's), its
# final samples only; RePaint's whole schedule at resample_iter 2, resample_jump 2, every 5
TINY_SAMPLER = {'unet': {'dim': 8, 'dim_mults': [1, 2], 'channels': 3, 'attn_heads': 2, 'attn_dim_head': 8},
                'diffusion': {'image_size': 8, 'timesteps': 10, 'objective': 'pred_noise'}}
SAMPLER_OPTIONS = {'repaint': dict(resample={'resample_iter': 2, 'resample_jump': 2, 'resample_every': 5}),
                   'guided': dict(classes=[1, 3], cond_scale=2.)}


def record_sampler(path, sampler):
    """Record the shipped ``--sampler`` fixture of ``sampler`` (``python -m
    ms_ddpm_tools.verify.fixtures repaint|guided [PATH]``)."""
    import tempfile
    import torch
    import denoising_diffusion_pytorch as ddp
    from weight_convert.config import kwargs_of
    torch.manual_seed(0)
    gd = ddp.GaussianDiffusion(ddp.Unet(**kwargs_of(TINY_SAMPLER['unet'])), **TINY_SAMPLER['diffusion'])
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, 'tiny-plain.pt')
        torch.save(gd.state_dict(), src)
        return record_verify(path, src, config={'unet': TINY_SAMPLER['unet']}, image_size=8, batch=1, sample_batch=2,
                             parts=('sample',), sampler=sampler, **SAMPLER_OPTIONS[sampler])


RECORDERS = {'1d': ('verify-1d.npz', record_1d), 'cfg': ('verify-cfg.npz', record_cfg),
             'repaint': ('verify-repaint.npz', lambda p: record_sampler(p, 'repaint')),
             'guided': ('verify-guided.npz', lambda p: record_sampler(p, 'guided'))}


if __name__ == '__main__':
    import sys
    from parity.fixtures import FIXTURE_DIR
    args = sys.argv[1:]
    which = args.pop(0) if args and args[0] in RECORDERS else '1d'
    name, fn = RECORDERS[which]
    out = args[0] if args else os.path.join(FIXTURE_DIR, name)
    print(f'{fn(out)}: {os.path.getsize(out) / 1e6:.2f} MB')
