"""Golden fixtures: the parity cases and ``verify`` run against recorded PyTorch outputs give
the same verdicts as against live PyTorch, and fixture mode needs no PyTorch at all."""

import json
import os
import subprocess
import sys

import numpy as np

from parity.compare import check
from parity.fixtures import PARITY_FIXTURE, VERIFY_FIXTURE, load_fixture, load_parity, subtree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _verdict(name, expected, actual, kind):
    r = check(name, expected, actual, kind)
    return r.ok, r


def test_shipped_fixtures_are_small():
    """Every clone carries them: the two main ones under 6.5 MB, all together under 10 MB."""
    from parity.fixtures import FIXTURE_DIR
    total = sum(os.path.getsize(p) for p in (PARITY_FIXTURE, VERIFY_FIXTURE))
    assert total < 6.5e6, f'shipped fixtures take {total / 1e6:.1f} MB'
    every = sum(os.path.getsize(os.path.join(FIXTURE_DIR, f)) for f in os.listdir(FIXTURE_DIR))
    assert every < 10e6, f'all shipped fixtures take {every / 1e6:.1f} MB'


# issue 14's golden fixtures (python -m ms_ddpm_tools.verify.fixtures cfg|repaint|guided): the run's kind
# (report key), what it compares, what the report says of the sampler
ISSUE14_FIXTURES = {
    'verify-cfg.npz': ('conditional', {'unet', 'guided', 'loss', 'sample', 'buffer'}, 'at classes [0, 2], cond_scale 3'),
    'verify-repaint.npz': ('sampler', {'sample'}, 'RePaint (DDPM, 10 steps, resample_iter 2, resample_jump 2'),
    'verify-guided.npz': ('sampler', {'sample'}, 'DDPM with classifier guidance'),
}


def test_issue14_golden_fixtures_run_without_pytorch(tmp_path):
    """``ms-ddpm verify --fixture`` of the shipped classifier-free guidance, RePaint and
    classifier-guidance fixtures, in one process where ``import torch`` fails: each PASSes with
    the recorded run's options (classes / cond_scale, the RePaint schedule, the example
    classifier, whose weights travel with the inputs) and its pictures."""
    from parity.fixtures import FIXTURE_DIR
    runs = [(os.path.join(FIXTURE_DIR, f), str(tmp_path / f.split('.')[0])) for f in ISSUE14_FIXTURES]
    code = ('import sys; sys.modules["torch"] = None\n'
            'from ms_ddpm_tools.verify.command import main\n'
            f'codes = [main(["--fixture", fx, "--out", out, "--no-graph", "--quiet"]) for fx, out in {runs!r}]\n'
            'print("codes", codes); sys.exit(max(codes))')
    p = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0 and p.stdout.count('verdict: PASS') == 3, p.stdout[-3000:] + p.stderr[-3000:]
    for (fx, out), (key, kinds, sampler) in zip(runs, ISSUE14_FIXTURES.values()):
        rep = json.loads(open(os.path.join(out, 'verify.json')).read())
        assert rep['versions']['torch_source'] == 'fixture' and rep[key], fx
        assert {r['name'].split('/')[0] for r in rep['results']} == kinds, fx
        assert sampler in rep['sampling']['sampler'], (fx, rep['sampling'])
        assert os.path.getsize(os.path.join(out, 'samples.png')) > 0


def test_parity_cases_fixture_and_live_give_the_same_verdicts(record):
    """Every recorded case: MindSpore twin loaded with the fixture's weights, run on its
    inputs, compared with its recorded output -- and the same case built and run live."""
    import torch
    from parity.harness import build, build_pair, case_inputs, run_ms, run_torch
    from weight_convert import load_torch_state_dict
    meta, cases = load_parity()
    same_torch = meta['versions']['torch'] == torch.__version__
    assert len(meta['cases']) >= 20
    for cid, fx in cases.items():
        case = fx['case']
        # fixture mode: no PyTorch involved (the row is the fixture's own, not the case table's)
        m = build('ms', case)
        m.set_train(False)
        load_torch_state_dict(m, fx['weights'])
        ok_fx, r_fx = _verdict(f'{cid} [fixture]', fx['output'], run_ms(m, fx['inputs'], 'pynative'), case.kind)
        # live mode: as the parity tests build it
        t, m2 = build_pair(case, seed=meta['seed'])
        inputs = case_inputs(case)
        for a, b in zip(inputs, fx['inputs']):
            assert np.array_equal(a, b), cid
        live = run_torch(t, inputs)
        ok_live, r_live = _verdict(f'{cid} [live]', live, run_ms(m2, inputs, 'pynative'), case.kind)
        assert ok_fx == ok_live, (r_fx, r_live)
        # the recorded reference output is the live one: bit for bit with the same PyTorch on this
        # machine's CPU (another CPU may pick other SIMD kernels), within the case's tolerance anyway
        assert _verdict(cid, live, fx['output'], case.kind)[0], cid
        if same_torch and np.array_equal(live, fx['output']):
            assert r_fx.rel_fro == r_live.rel_fro
        record(r_fx)


def test_parity_fixture_rows_are_the_case_table():
    """The recorded rows are the current rows of ``parity.cases`` (re-record when a row changes:
    ``python -m parity.fixtures``)."""
    from parity.fixtures import case_of, recorded_cases
    meta, _ = load_parity()
    recorded = {r['id']: case_of(r) for r in meta['cases']}
    for fid, case in recorded_cases():
        assert fid in recorded, f'{fid}: not in the fixture; re-record it'
        r = recorded[fid]
        assert (r.module, r.cls, r.args, r.kwargs, r.inputs, r.input_seed, r.kind) == \
            (case.module, case.cls, case.args, case.kwargs, case.inputs, case.input_seed, case.kind), fid


def _fixture_checkpoint(tmp_path):
    """The verify fixture's weights as a plain .pt state dict plus its config: the same model
    that ``verify --fixture`` checks, for a live run."""
    import torch
    meta, arrays = load_fixture(VERIFY_FIXTURE)
    sd = subtree(arrays, 'w')
    path = tmp_path / 'tiny.pt'
    torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}, path)
    return str(path), json.dumps({'unet': meta['config']['unet'], 'diffusion': meta['config']['diffusion']}), meta


def test_verify_fixture_mode_without_pytorch_matches_live(tmp_path):
    """``ms-ddpm verify --fixture`` in a process where ``import torch`` fails, and a live
    ``ms-ddpm verify`` of the same weights: same verdicts, same figures."""
    ckpt, config, meta = _fixture_checkpoint(tmp_path)
    common = ['--batch', str(meta['batch']), '--sample-batch', '4', '--no-graph', '--quiet']
    code = ('import sys; sys.modules["torch"] = None\n'
            'from ms_ddpm_tools.verify.command import main\n'
            f'sys.exit(main({["--fixture", VERIFY_FIXTURE, "--out", str(tmp_path / "fx")] + common!r}))')
    p = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert 'verdict: PASS' in p.stdout
    from ms_ddpm_tools.verify.command import main
    assert main([ckpt, '--config', config, '--out', str(tmp_path / 'live')] + common) == 0
    fx = json.loads((tmp_path / 'fx' / 'verify.json').read_text())
    live = json.loads((tmp_path / 'live' / 'verify.json').read_text())
    assert fx['versions']['torch_source'] == 'fixture' and live['versions']['torch_source'] == 'live'
    for k in ('ok', 'compared', 'failed', 'failed_names', 'first_divergent_layer', 'first_beyond_tolerance'):
        assert fx['verdict'][k] == live['verdict'][k], k
    rf = {r['name']: r for r in fx['results']}
    assert [r['name'] for r in live['results']] == list(rf)
    for r in live['results']:
        assert r['ok'] == rf[r['name']]['ok'], r['name']
        assert abs(r['rel_fro'] - rf[r['name']]['rel_fro']) <= max(r['tol'], 1e-12), r['name']
    assert (tmp_path / 'fx' / 'samples.png').stat().st_size > 0 and (tmp_path / 'fx' / 'report.md').exists()
    # and a regression check of the two runs: identical figures, so no figure regresses
    from ms_ddpm_tools.verify.command import main_diff
    assert main_diff([str(tmp_path / 'fx' / 'verify.json'), str(tmp_path / 'live' / 'verify.json'),
                      '--timing-factor', '1000']) == 0
