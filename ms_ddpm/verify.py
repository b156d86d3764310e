"""``ms-ddpm verify`` (first cut): build a reference Unet, convert its weights, compare outputs."""

import argparse
import sys


def main(argv=None):
    p = argparse.ArgumentParser(prog='ms-ddpm verify', description=__doc__)
    p.add_argument('--dim', type=int, default=16)
    args = p.parse_args(argv)

    import numpy as np
    from parity_tests.harness import build_pair, make_inputs, run_torch, run_ms
    from parity_tests.compare import assert_parity

    cfg = dict(dim=args.dim, dim_mults=(1, 2, 4, 8))
    print(f'building reference Unet({cfg}) and its MindSpore twin ...', flush=True)
    t, m = build_pair('Unet', kwargs=cfg, seed=0)
    failed = False
    for mode in ('pynative', 'graph'):
        inputs = make_inputs([('randn', (2, 3, 32, 32)), ('time', (2,), 1000)], seed=0)
        try:
            r = assert_parity(f'Unet output [{mode}]', run_torch(t, inputs), run_ms(m, inputs, mode), 'unet')
        except AssertionError as e:
            print(e)
            failed = True
        else:
            print(r)
    print('verdict:', 'FAIL' if failed else 'PASS')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
