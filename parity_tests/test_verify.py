"""``ms-ddpm diff`` / ``verify --baseline``: what counts as a regression (no frameworks needed),
and the verify report's shape."""

import copy
import json

from ms_ddpm_tools.verify.report import regress, summary_rows_from_json, terminal_table


def _report(**timings):
    res = [
        dict(name='layer/init_conv', shape=[1, 8, 8, 8], rel_fro=2e-7, max_abs=1e-7, max_rel=1e-4, cosine=1.0,
             within_1e3=1.0, nonfinite=False, tol=1.5e-6, ok=True, metric='rel_fro', gate='tolerance'),
        dict(name='unet/t=0', shape=[2, 1, 8, 8], rel_fro=4e-7, max_abs=1e-6, max_rel=1e-3, cosine=1.0,
             within_1e3=1.0, nonfinite=False, tol=1.5e-6, ok=True, metric='rel_fro', gate='tolerance'),
        dict(name='sample/final', shape=[4, 1, 8, 8], rel_fro=1e-7, max_abs=2e-7, max_rel=1e-5, cosine=1.0,
             within_1e3=1.0, nonfinite=False, tol=1e-4, ok=True, metric='max_abs', gate='tolerance'),
        dict(name='buffer/betas', shape=[100], rel_fro=0.0, max_abs=0.0, max_rel=0.0, cosine=1.0,
             within_1e3=1.0, nonfinite=False, tol=0.0, ok=True, metric='rel_fro', gate='tolerance'),
    ]
    return {'results': res, 'timings': {'torch': {'U-Net forward': 0.1},
                                        'mindspore': dict({'U-Net forward': 1.0, 'sampling': 10.0}, **timings)},
            'verdict': {'ok': True, 'first_divergent_layer': None},
            'versions': {'mindspore': '2.8.0', 'torch': '2.14.1', 'numpy': '1.26.4', 'python': '3.11'}}


def _names(bad):
    return sorted(r['name'] for r in bad)


def test_identical_runs_do_not_regress():
    old = _report()
    rows, bad = regress(old, copy.deepcopy(old))
    assert bad == [] and len(rows) == 4 + 3


def test_worse_within_tolerance_is_not_a_regression_beyond_is():
    old, new = _report(), _report()
    new['results'][1]['rel_fro'] = 9e-7                 # grew by 5e-7 < 1.5e-6: noted, not flagged
    assert regress(old, new)[1] == []
    new['results'][1]['rel_fro'] = 2.5e-6               # grew by 2.1e-6 > 1.5e-6
    assert _names(regress(old, new)[1]) == ['unet/t=0']
    new = _report()
    new['results'][3]['rel_fro'] = 1e-9                 # exact figure (tolerance 0): any growth regresses
    assert _names(regress(old, new)[1]) == ['buffer/betas']
    new = _report()
    new['results'][2]['max_abs'] = 5e-5                 # samples gate on max_abs: within 1e-4
    assert regress(old, new)[1] == []


def test_nan_missing_and_failures_regress():
    old = _report()
    new = _report()
    new['results'][0].update(nonfinite=True, ok=False)
    del new['results'][3]
    assert _names(regress(old, new)[1]) == ['buffer/betas', 'layer/init_conv']


def test_slower_timings_beyond_the_factor_regress():
    old = _report()
    new = _report(**{'U-Net forward': 1.4, 'sampling': 40.0})
    assert _names(regress(old, new, factor=1.5)[1]) == ['mindspore: sampling']
    assert regress(old, new, factor=5)[1] == []
    tiny = _report(**{'U-Net forward': 1.0})
    tiny['timings']['torch']['U-Net forward'] = 0.001
    new = _report(**{'U-Net forward': 1.0})
    new['timings']['torch']['U-Net forward'] = 0.01    # 10x, but 10 ms: below the noise floor
    assert regress(tiny, new)[1] == []


def test_diff_cli_exit_status(tmp_path):
    from ms_ddpm_tools.verify.command import main_diff
    old, new = tmp_path / 'old.json', tmp_path / 'new.json'
    old.write_text(json.dumps(_report()))
    new.write_text(json.dumps(_report(sampling=100.0)))
    assert main_diff([str(old), str(old)]) == 0
    assert main_diff([str(old), str(new), '--out', str(tmp_path / 'diff.md')]) == 3     # a regression: exit 3
    text = (tmp_path / 'diff.md').read_text()
    assert 'REGRESSION' in text and 'mindspore: sampling' in text


def test_diff_errors_are_one_line_and_exit_1(tmp_path, capsys):
    from ms_ddpm_tools.verify.command import main_diff
    good = tmp_path / 'old.json'
    good.write_text(json.dumps(_report()))
    (tmp_path / 'bad.json').write_text('{not json')
    for args in ([str(good), str(tmp_path / 'missing.json')], [str(good), str(tmp_path / 'bad.json')]):
        assert main_diff(args) == 1
        err = capsys.readouterr().err
        assert err.startswith('ms-ddpm diff: error: ') and len(err.strip().splitlines()) == 1 and 'Traceback' not in err


def test_diff_warns_when_the_runs_verified_different_models(tmp_path, capsys):
    from ms_ddpm_tools.verify.command import main_diff
    old, new = _report(), _report()
    old.update(config={'unet': {'dim': 16}, 'diffusion': {'image_size': 16}}, weights='the state dict')
    new.update(config={'unet': {'dim': 32}, 'diffusion': {'image_size': 16}}, weights='EMA weights (ema.ema_model)')
    (tmp_path / 'a.json').write_text(json.dumps(old))
    (tmp_path / 'b.json').write_text(json.dumps(new))
    main_diff([str(tmp_path / 'a.json'), str(tmp_path / 'b.json')])
    out = capsys.readouterr().out
    assert 'WARNING: the two runs verified different models (unet: dim differ)' in out
    assert 'different weights' in out


def test_ms_ddpm_without_a_command_is_a_usage_error_and_has_a_version(capsys):
    from ms_ddpm_tools.cli import main
    assert main([]) == 2 and 'a command is required' in capsys.readouterr().err
    assert main(['--version']) == 0 and 'denoising-diffusion-pytorch 2.3.4' in capsys.readouterr().out


def test_terminal_table_folds_layers_and_marks_failures():
    rep = _report()
    rep['results'][1].update(rel_fro=3e-6, ok=False)
    table = terminal_table(summary_rows_from_json(rep))
    assert 'layers: 1 outputs' in table and 'FAIL' in table and 'schedule buffers: 1' in table
