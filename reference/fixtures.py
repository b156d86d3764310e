"""``python -m reference.fixtures``: record golden fixtures (the PyTorch side of a comparison,
so that the MindSpore side can be checked on a machine with MindSpore and no PyTorch).

    python -m reference.fixtures parity -o parity_tests/fixtures/parity-cases.npz
    python -m reference.fixtures verify --recipe tiny -o parity_tests/fixtures/verify-tiny.npz
    python -m reference.fixtures verify CHECKPOINT [--ema] [--image-size N] -o mine.npz

This module is only the documented entry point: the layout (one ``.npz``: JSON meta + named
arrays) and the parity-case recording live in ``parity.fixtures``, the verify recording in
``ms_ddpm_tools.verify.fixtures`` (also ``ms-ddpm verify --record-fixture``); it dispatches to
them lazily, so importing ``reference`` pulls in neither.
``ms-ddpm verify --fixture FILE`` runs against a verify fixture; ``parity_tests/test_fixtures.py``
runs the parity cases against the parity fixture (and shows fixture and live verdicts agree).
"""

import argparse
import os
import sys


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
    # the entry point dispatches upward, lazily: the only imports of parity / ms_ddpm_tools from
    # reference (declared as such in pyproject's import-linter contract)
    from parity.fixtures import PARITY_FIXTURE, VERIFY_FIXTURE, record_parity
    if a.what == 'parity':
        path = record_parity(a.out or PARITY_FIXTURE)
    else:
        from ms_ddpm_tools.verify.fixtures import record_verify
        path = record_verify(a.out or VERIFY_FIXTURE, a.checkpoint, a.recipe, a.ema, a.image_size, a.config,
                             a.batch, a.sample_batch)
    print(f'{path}: {os.path.getsize(path) / 1e6:.2f} MB')
    return 0


if __name__ == '__main__':
    sys.exit(main())
