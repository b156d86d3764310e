"""Golden fixtures: the PyTorch side of parity cases, recorded once, so that the MindSpore
side can be checked on a machine with MindSpore and no PyTorch.

A fixture is one ``.npz``: ``__meta__`` (JSON: versions, configuration, per-case data),
``w/...`` weights, ``in/...`` inputs, ``out/...`` the reference's outputs.

    python -m reference.fixtures parity -o parity_tests/fixtures/parity-cases.npz
    python -m reference.fixtures verify --recipe tiny -o parity_tests/fixtures/verify-tiny.npz
    python -m reference.fixtures verify CHECKPOINT [--ema] [--image-size N] -o mine.npz

``ms-ddpm verify --fixture FILE`` runs against a verify fixture; ``parity_tests/test_fixtures.py``
runs the parity cases against the parity fixture (and shows fixture and live verdicts agree).
"""

import argparse
import json
import os
import sys
from collections import OrderedDict

import numpy as np

FIXTURE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'parity_tests', 'fixtures')
PARITY_FIXTURE = os.path.join(FIXTURE_DIR, 'parity-cases.npz')
VERIFY_FIXTURE = os.path.join(FIXTURE_DIR, 'verify-tiny.npz')

# the parity cases recorded: every layer case and the U-Net cases below (the grid's smallest
# models, to keep the shipped file small)
KEEP_UNET = ('small', 'self_condition', 'learned_variance', 'channels-1', 'non-square')


def torch_versions():
    import torch
    from reference.builders import check_reference_version
    return {'torch': torch.__version__, 'reference': check_reference_version(), 'numpy': np.__version__}


def parity_cases():
    """(case id, class name, args, kwargs, input specs, tolerance kind) for every recorded case."""
    from parity_tests.cases import LAYER_CASES, UNET_CASES
    rows = [('layer/' + c[0], c[1], c[2], c[3], c[4], c[5]) for c in LAYER_CASES]
    for case_id, cfg, shape in UNET_CASES:
        if case_id not in KEEP_UNET:
            continue
        specs = [('randn', shape), ('time', (shape[0],), 1000)]
        if cfg.get('self_condition'):
            specs.append(('randn', shape))
        rows.append(('unet/' + case_id, 'Unet', (), cfg, specs, 'unet'))
    return rows


def _jsonable(x):
    if isinstance(x, tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, list):
        return [_jsonable(v) for v in x]
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    return x


def record_parity(path=PARITY_FIXTURE, seed=0):
    """Weights (``build_pair``'s seed), inputs (``make_inputs``) and the reference's output of
    every parity case, as the live tests build them."""
    import torch
    from parity_tests.harness import build_pair, make_inputs, run_torch
    from reference.builders import state_dict_numpy
    torch.set_num_threads(1)        # as the parity suite runs (conv summation order depends on threads)
    meta = {'format': 'ms_ddpm-parity-fixture', 'version': 1, 'versions': torch_versions(), 'seed': seed, 'cases': []}
    arrays = OrderedDict(__meta__=None)
    for case_id, name, args, kwargs, specs, kind in parity_cases():
        t, _ = build_pair(name, args, kwargs, seed=seed)
        inputs = make_inputs(specs, seed=1 if name == 'Unet' else 0)
        out = run_torch(t, inputs)
        for k, v in state_dict_numpy(t).items():
            arrays[f'w/{case_id}/{k}'] = v
        for i, x in enumerate(inputs):
            arrays[f'in/{case_id}/{i}'] = x
        arrays[f'out/{case_id}'] = out
        meta['cases'].append({'id': case_id, 'class': name, 'args': _jsonable(args), 'kwargs': _jsonable(kwargs),
                              'specs': _jsonable(specs), 'kind': kind, 'n_inputs': len(inputs)})
    arrays['__meta__'] = np.array(json.dumps(meta))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f'{path}.tmp{os.getpid()}.npz'
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
    return path


def load_parity(path=PARITY_FIXTURE):
    """(meta, {case id: {'weights': {...}, 'inputs': [...], 'output': array}})."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z['__meta__']))
        cases = OrderedDict((c['id'], {'weights': OrderedDict(), 'inputs': [None] * c['n_inputs'], 'output': None})
                            for c in meta['cases'])
        for k in z.files:
            if k == '__meta__':
                continue
            head, rest = k.split('/', 1)
            if head == 'out':
                cases[rest]['output'] = z[k]
                continue
            cid, _, leaf = rest.rpartition('/') if head == 'in' else _split_weight(rest, cases)
            if head == 'in':
                cases[cid]['inputs'][int(leaf)] = z[k]
            else:
                cases[cid]['weights'][leaf] = z[k]
    return meta, cases


def _split_weight(rest, cases):
    for cid in cases:
        if rest.startswith(cid + '/'):
            return cid, '/', rest[len(cid) + 1:]
    raise KeyError(rest)


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


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m reference.fixtures', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='what', required=True)
    pp = sub.add_parser('parity', help='record the parity cases (layers, U-Net grid)')
    pp.add_argument('-o', '--out', default=PARITY_FIXTURE)
    pv = sub.add_parser('verify', help='record the reference side of a verify run')
    pv.add_argument('checkpoint', nargs='?')
    pv.add_argument('--recipe', default='tiny', choices=('default', 'tiny'))
    pv.add_argument('--ema', action='store_true')
    pv.add_argument('--image-size', type=int)
    pv.add_argument('--config')
    pv.add_argument('--batch', type=int, default=1)
    pv.add_argument('--sample-batch', type=int, default=4)
    pv.add_argument('-o', '--out', default=VERIFY_FIXTURE)
    a = p.parse_args(argv)
    if a.what == 'parity':
        path = record_parity(a.out)
    else:
        path = record_verify(a.out, a.checkpoint, a.recipe, a.ema, a.image_size, a.config, a.batch, a.sample_batch)
    print(f'{path}: {os.path.getsize(path) / 1e6:.2f} MB')
    return 0


if __name__ == '__main__':
    sys.exit(main())
