"""Golden fixtures: the PyTorch side of a comparison, recorded once, so that the MindSpore side
can be checked on a machine with MindSpore and no PyTorch.

ONE layout for every fixture (the parity cases here, ``verify`` runs in ``ms_ddpm_tools``):
a single ``.npz`` holding ``__meta__`` (a JSON string: ``format``, ``version``, ``versions``
and whatever the writer records) and named arrays; names are paths: ``w/...`` weights,
``in/...`` inputs, ``out/...`` the reference's outputs (``pack`` / ``subtree`` build and
take apart such names).  Written through ``ms_ddpm.io.atomic`` with the JSON of
``ms_ddpm.io.records``; read with ``allow_pickle=False``.

The parity-case fixture: every ``forward`` row of the 2D modules (``denoising_diffusion_pytorch``,
``attend``) other than whole networks, and the smallest U-Net rows, each under ``w/<case>/``,
``in/<case>/<i>``, ``out/<case>`` with ``<case>`` = ``layer/<id>`` or ``unet/<id>``;
``meta['cases']`` holds the rows.

    python -m parity.fixtures -o parity_tests/fixtures/parity-cases.npz
"""

import json
import os
import sys
from collections import OrderedDict

import numpy as np

from ms_ddpm.io.atomic import AtomicFile
from ms_ddpm.io.records import dumps, jsonable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE_DIR = os.path.join(ROOT, 'parity_tests', 'fixtures')
PARITY_FIXTURE = os.path.join(FIXTURE_DIR, 'parity-cases.npz')
VERIFY_FIXTURE = os.path.join(FIXTURE_DIR, 'verify-tiny.npz')

META = '__meta__'
PARITY_FORMAT = 'ms_ddpm-parity-fixture'
PARITY_VERSION = 2

# the U-Net rows recorded (the grid's smallest models, to keep the shipped file small)
KEEP_UNET = ('small', 'self_condition', 'learned_variance', 'channels-1', 'non-square')


# --- the one layout -------------------------------------------------------------------------

def save_fixture(path, meta, arrays):
    """``meta`` (JSON-able dict) and ``arrays`` ({name: array}) as one compressed ``.npz``,
    written atomically."""
    path = os.fspath(path)
    if META in arrays:
        raise ValueError(f'{META!r} is the meta entry; not an array name')
    entries = OrderedDict([(META, np.array(dumps(meta)))])
    entries.update((k, np.asarray(v)) for k, v in arrays.items())
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with AtomicFile(path) as f:
        np.savez_compressed(f.file, **entries)
    return path


def load_fixture(path):
    """(meta, OrderedDict {name: array}) of a fixture written by ``save_fixture``."""
    with np.load(os.fspath(path), allow_pickle=False) as z:
        meta = json.loads(str(z[META]))
        arrays = OrderedDict((k, z[k]) for k in z.files if k != META)
    return meta, arrays


def pack(parts):
    """{prefix: {name: array}} -> {'prefix/name': array} (e.g. ``{'w': sd, 'in': ..., 'out': ...}``)."""
    out = OrderedDict()
    for prefix, d in parts.items():
        out.update((f'{prefix}/{k}', v) for k, v in d.items())
    return out


def subtree(arrays, prefix):
    """The arrays named ``prefix/...``, with ``prefix/`` taken off, in order."""
    p = prefix.rstrip('/') + '/'
    return OrderedDict((k[len(p):], v) for k, v in arrays.items() if k.startswith(p))


# --- the parity-case fixture ----------------------------------------------------------------

def recorded_cases():
    """[(fixture case id, Case)]: every layer ``forward`` row, and the U-Net rows of KEEP_UNET."""
    from parity.cases import ATTEND, DDP, rows
    out = [('layer/' + c.id, c) for c in rows('forward', not_kind='unet') if c.module in (DDP, ATTEND)]
    out += [('unet/' + c.id, c) for c in rows('forward', kind='unet', module=DDP, cls='Unet', ids=KEEP_UNET)]
    return out


def _row_meta(fid, case, n_inputs):
    return {'id': fid, 'module': case.module, 'cls': case.cls, 'args': jsonable(case.args),
            'kwargs': jsonable(case.kwargs), 'inputs': jsonable(case.inputs), 'input_seed': case.input_seed,
            'kind': case.kind, 'n_inputs': n_inputs}


def _tuples(x):
    """JSON lists back to the tuples the rows were written with."""
    if isinstance(x, list):
        return tuple(_tuples(v) for v in x)
    if isinstance(x, dict):
        return {k: _tuples(v) for k, v in x.items()}
    return x


def case_of(row):
    """The ``parity.cases.Case`` a fixture's ``meta['cases']`` entry was recorded from."""
    from parity.cases import Case
    return Case(row['id'], row['module'], row['cls'], 'forward', row['kind'], _tuples(row['args']),
                _tuples(row['kwargs']), _tuples(row['inputs']), row['input_seed'])


def record_parity(path=PARITY_FIXTURE, seed=0):
    """Weights (``build_pair``'s seed), inputs (``case_inputs``) and the reference's output of
    every recorded parity case, as the live tests build them."""
    import torch
    from parity.harness import build_pair, case_inputs, run_torch
    from reference.builders import state_dict_numpy, torch_versions
    torch.set_num_threads(1)        # as the parity suite runs (conv summation order depends on threads)
    meta = {'format': PARITY_FORMAT, 'version': PARITY_VERSION, 'versions': torch_versions(), 'seed': seed,
            'cases': []}
    arrays = OrderedDict()
    for fid, case in recorded_cases():
        t, _ = build_pair(case, seed=seed)
        inputs = case_inputs(case)
        arrays.update(pack({f'w/{fid}': state_dict_numpy(t), f'in/{fid}': {str(i): x for i, x in enumerate(inputs)}}))
        arrays[f'out/{fid}'] = run_torch(t, inputs)
        meta['cases'].append(_row_meta(fid, case, len(inputs)))
    return save_fixture(path, meta, arrays)


def load_parity(path=PARITY_FIXTURE):
    """(meta, {case id: {'case': Case, 'weights': {...}, 'inputs': [...], 'output': array}})."""
    meta, arrays = load_fixture(path)
    if meta.get('format') != PARITY_FORMAT or meta.get('version') != PARITY_VERSION:
        raise ValueError(f'{path}: not a {PARITY_FORMAT} version {PARITY_VERSION} '
                         f'(format {meta.get("format")!r} version {meta.get("version")!r}); re-record it: '
                         f'python -m parity.fixtures -o {path}')
    cases = OrderedDict()
    for row in meta['cases']:
        fid = row['id']
        inputs = subtree(arrays, f'in/{fid}')
        cases[fid] = {'case': case_of(row), 'weights': subtree(arrays, f'w/{fid}'),
                      'inputs': [inputs[str(i)] for i in range(row['n_inputs'])], 'output': arrays[f'out/{fid}']}
    return meta, cases


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(prog='python -m parity.fixtures', description='record the parity-case fixture')
    p.add_argument('-o', '--out', default=PARITY_FIXTURE)
    a = p.parse_args(argv)
    path = record_parity(a.out)
    print(f'{path}: {os.path.getsize(path) / 1e6:.2f} MB')
    return 0


if __name__ == '__main__':
    sys.exit(main())
