"""``ms-ddpm bench`` runs end to end and writes its JSON (a smoke test: timings are never
asserted, they depend on the machine and its load)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_quick_writes_json(tmp_path):
    out = tmp_path / 'bench.json'
    proc = subprocess.run(
        [sys.executable, '-m', 'ms_ddpm_tools.cli', 'bench', '--quick', '--only', 'unet_small', '--no-pynative',
         '--repeats', '1', '--threads', '1', '--out', str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data['versions']['mindspore'] and data['versions']['torch']
    assert len(data['load_start']) == 3
    (r,) = data['results']
    assert r['item'] == 'unet_small'
    for name in ('torch', 'ms_graph'):
        assert r['figures'][name]['median_s'] > 0
    assert r['ratios']['ms_graph'] > 0 and r['compile_s']['ms_graph'] >= 0
    assert 'graph/torch' in proc.stdout


def test_isolated_sides_merge_into_one_result():
    """``--fast-cpu`` times torch, the stock kernels and the fast path in a process each
    (bench.run.ISOLATED, SIDE_ORDER); their figures merge into one result: torch's from all its
    workers' repeats, the ratios against it."""
    from bench.run import merge_sides

    def part(side, figures, kernels=False):
        r = {'figures': {k: {'median_s': v[0], 'times_s': v} for k, v in figures.items()},
             'first_call_s': {k: 3 * v[0] for k, v in figures.items() if k != 'torch'}}
        head = {'item': 'x', 'what': 'w', 'side': {'side': side}}
        return head | ({'kernels': {'3x3': r}} if kernels else r)
    sides = (('torch', {'torch': [1.0]}), ('fast', {'ms_graph_fast': [0.5]}), ('torch', {'torch': [0.8, 1.2]}),
             ('stock', {'ms_graph': [2.0]}), ('torch', {'torch': [1.1]}))
    r = merge_sides([part(*a) for a in sides])
    assert r['figures']['torch']['median_s'] == 1.05 and r['figures']['torch']['times_s'] == [1.0, 0.8, 1.2, 1.1]
    assert r['ratios'] == {'ms_graph_fast': 0.5 / 1.05, 'ms_graph': 2.0 / 1.05}
    assert r['first_call_s'] == {'ms_graph_fast': 1.5, 'ms_graph': 6.0}
    assert [p['side'] for p in r['sides']] == ['torch', 'fast', 'torch', 'stock', 'torch'] and r['what'] == 'w'
    k = merge_sides([part(*a, kernels=True) for a in sides])['kernels']['3x3']
    assert k['ratios'] == r['ratios'] and k['figures']['torch']['median_s'] == 1.05


def test_workers_get_the_environment_the_bench_started_with():
    """``import mindspore`` in the bench's parent (versions()) writes PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION
    =python, LD_LIBRARY_PATH, ... into os.environ; the workers must not inherit them (they slowed
    MindSpore's timed steps by up to 60%)."""
    code = ('import os, bench.run as r; import mindspore; '
            'print(os.environ.get("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"), r.START_ENV.get("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"))')
    env = {k: v for k, v in os.environ.items() if k != 'PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION'}
    proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.stdout.split()[-2:] == ['python', 'None'], proc.stdout + proc.stderr[-1500:]


def test_cpu_model_names_family_model_and_vector_isa():
    """Two machines a hypervisor names alike ('AMD EPYC': Zen 3 with AVX2, a Zen 4 with AVX-512)
    run different oneDNN kernels at ~3x different speeds: bench results and verify reports say which."""
    from ms_ddpm.io.records import cpu_model
    info = ('processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n'
            'model name\t: AMD EPYC\nflags\t\t: fpu sse4_2 avx fma avx2 bmi2\n\nprocessor\t: 1\nmodel name\t: other\n')
    assert cpu_model(info) == 'AMD EPYC (family 25 model 1, avx2)'
    assert cpu_model(info.replace('avx2', 'avx2 avx512f avx512bw')) == 'AMD EPYC (family 25 model 1, avx512f)'
    assert cpu_model('model name\t: Some CPU\n') == 'Some CPU'
