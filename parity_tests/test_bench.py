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
