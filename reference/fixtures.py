"""``python -m reference.fixtures``: record golden fixtures (the PyTorch side of a comparison,
so that the MindSpore side can be checked on a machine with MindSpore and no PyTorch).

    python -m reference.fixtures parity -o parity_tests/fixtures/parity-cases.npz
    python -m reference.fixtures verify --recipe tiny -o parity_tests/fixtures/verify-tiny.npz
    python -m reference.fixtures verify CHECKPOINT [--ema] [--image-size N] -o mine.npz

The layout (one ``.npz``: JSON meta + named arrays) and the parity-case recording live in
``parity.fixtures``; this module is the documented entry point and dispatches (lazily, so
importing it pulls in neither the parity library nor the tools).
``ms-ddpm verify --fixture FILE`` runs against a verify fixture; ``parity_tests/test_fixtures.py``
runs the parity cases against the parity fixture (and shows fixture and live verdicts agree).
"""

import argparse
import os
import sys


from reference.builders import torch_versions


def record_verify(path, checkpoint=None, recipe='tiny', ema=False, image_size=None, config=None,
                  batch=1, sample_batch=4, seed=0, sampling_timesteps=None):
    """The reference side of a ``verify`` run (weights, every input and draw, every output)."""
    import torch
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
    inp, ts = core.make_inputs(cfg, core.alphas_cumprod_of(cfg, sd), batch=batch, sample_batch=sample_batch, seed=seed)
    timer = core.Timer()
    expected = core.torch_side(cfg, sd, inp, progress=False, timer=timer)
    meta = {'format': 'ms_ddpm-verify-fixture', 'version': 1, 'config': cfg, 'timesteps': ts, 'batch': batch,
            'checkpoint': name, 'source': info, 'versions': torch_versions(), 'torch_timings': dict(timer.times)}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    core.save_fixture(path, meta, sd, inp, expected)
    return path


def _fixture(name):
    import parity.fixtures
    return getattr(parity.fixtures, name)


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m reference.fixtures', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='what', required=True)
    pp = sub.add_parser('parity', help='record the parity cases (layers, U-Net grid)')
    pp.add_argument('-o', '--out', help='default: parity_tests/fixtures/parity-cases.npz')
    pv = sub.add_parser('verify', help='record the reference side of a verify run')
    pv.add_argument('checkpoint', nargs='?')
    pv.add_argument('--recipe', default='tiny', choices=('default', 'tiny'))
    pv.add_argument('--ema', action='store_true')
    pv.add_argument('--image-size', type=int)
    pv.add_argument('--config')
    pv.add_argument('--batch', type=int, default=1)
    pv.add_argument('--sample-batch', type=int, default=4)
    pv.add_argument('-o', '--out', help='default: parity_tests/fixtures/verify-tiny.npz')
    a = p.parse_args(argv)
    if a.what == 'parity':
        from parity.fixtures import record_parity
        path = record_parity(a.out or _fixture('PARITY_FIXTURE'))
    else:
        path = record_verify(a.out or _fixture('VERIFY_FIXTURE'), a.checkpoint, a.recipe, a.ema, a.image_size, a.config, a.batch, a.sample_batch)
    print(f'{path}: {os.path.getsize(path) / 1e6:.2f} MB')
    return 0


if __name__ == '__main__':
    sys.exit(main())
