"""``ms-ddpm verify SRC --against DST``: the reference built from SRC, ms_ddpm from the
converted file DST.  A faithful conversion passes; one edited tensor fails, and the report
names that tensor and the first layer that diverges (issue 17, item 1)."""

import json
import os

import numpy as np
import pytest

CFG = {'unet': dict(dim=8, dim_mults=[1, 2], attn_heads=2, attn_dim_head=8, channels=1),
       'diffusion': dict(image_size=8, timesteps=20, sampling_timesteps=4)}
EDITED = 'model.mid_block1.block1.proj.weight'


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    import torch
    import denoising_diffusion_pytorch as ddp
    from weight_convert import convert
    d = tmp_path_factory.mktemp('against')
    torch.manual_seed(0)
    gd = ddp.GaussianDiffusion(ddp.Unet(**{k: tuple(v) if isinstance(v, list) else v for k, v in CFG['unet'].items()}),
                               **CFG['diffusion'])
    torch.save(gd.state_dict(), d / 'src.pt')
    (d / 'count').write_text(str(len(gd.state_dict())))
    convert(str(d / 'src.pt'), str(d / 'dst.safetensors'), config=CFG)
    # the same file with one element of one tensor changed, metadata (config) kept
    from safetensors import safe_open
    from safetensors.numpy import save_file
    with safe_open(str(d / 'dst.safetensors'), framework='np') as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    w = tensors[EDITED].copy()
    w.flat[3] += 0.05
    tensors[EDITED] = w
    save_file(tensors, str(d / 'edited.safetensors'), metadata=meta)
    return d


def _run(files, dst, out, capsys):
    import warnings
    from ms_ddpm_tools.verify.command import main
    with warnings.catch_warnings():
        warnings.simplefilter('error', UserWarning)          # verify prints no framework warnings
        rc = main([str(files / 'src.pt'), '--against', str(files / dst), '--config', json.dumps(CFG), '--batch', '2',
                   '--sample-batch', '2', '--no-graph', '--quiet', '--out', str(files / out)])
    return rc, capsys.readouterr().out, json.loads((files / out / 'verify.json').read_text())


def test_a_faithful_conversion_passes(files, capsys):
    rc, out, rep = _run(files, 'dst.safetensors', 'ok', capsys)
    assert rc == 0, out[-2000:]
    v = rep['verdict']
    assert v['ok'] and v['differing_tensor_count'] == 0
    weights = [r for r in rep['results'] if r['name'].startswith('weight/')]
    assert len(weights) == int((files / 'count').read_text())      # every tensor of the state dict ...
    assert all(r['max_abs'] == 0 for r in weights)                  # ... bit-exact
    assert rep['against'].endswith('dst.safetensors') and 'verdict: PASS' in out
    assert rep['mindspore_kernels'] == 'mindspore'                    # issue 18: the report names the kernels
    assert 'MindSpore CPU kernels: mindspore' in (files / 'ok' / 'report.md').read_text()


def test_an_edited_tensor_is_named_and_fails(files, capsys):
    rc, out, rep = _run(files, 'edited.safetensors', 'edited', capsys)
    assert rc == 3, out[-2000:]                                   # a failed verdict, not an error
    v = rep['verdict']
    assert not v['ok'] and v['differing_tensors'] == [EDITED]
    assert v['first_divergent_layer'].startswith('mid_block1')   # the layer that uses it, in execution order
    assert f'1 tensors differ from the source: {EDITED}' in out and 'verdict: FAIL' in out
    md = (files / 'edited' / 'report.md').read_text()
    assert EDITED in md and 'ms-ddpm verify: FAIL' in md


def test_a_missing_against_file_is_one_line_and_exit_1(files, capsys):
    from ms_ddpm_tools.verify.command import main
    rc = main([str(files / 'src.pt'), '--against', str(files / 'nope.ckpt'), '--config', json.dumps(CFG), '--quiet',
               '--out', str(files / 'nope')])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith('ms-ddpm verify: error: ') and 'nope.ckpt' in err
    assert len(err.strip().splitlines()) == 1


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f'touch {self.marker}',))


def test_corrupt_or_malicious_checkpoints_are_one_line_and_exit_1(tmp_path, capsys):
    """verify on a corrupt, missing or malicious file: one line naming it, exit 1 (an error),
    not a traceback with the exit code of a FAIL verdict; the malicious pickle never runs."""
    import torch
    from ms_ddpm_tools.verify.command import main
    (tmp_path / 'corrupt.pt').write_bytes(b'PK\x03\x04 this is not a zip')
    marker = tmp_path / 'pwned'
    torch.save({'w': _Evil(str(marker))}, tmp_path / 'evil.pt')
    for name in ('corrupt.pt', 'evil.pt', 'missing.pt'):
        rc = main([str(tmp_path / name), '--image-size', '8', '--quiet', '--out', str(tmp_path / 'o')])
        err = capsys.readouterr().err
        assert rc == 1, (name, err)
        assert err.startswith('ms-ddpm verify: error: ') and name in err and 'Traceback' not in err, err
        assert len(err.strip().splitlines()) == 1, err
    assert not marker.exists()


def test_the_1d_family_verifies_and_its_conversion_too(tmp_path, capsys):
    """A GaussianDiffusion1D checkpoint: ``verify`` (every layer, the U-Net at five timesteps, the
    losses, the forward process, a DDIM trajectory, the buffers; sequences plotted), ``--against``
    its converted .ckpt, and ``convert --verify`` (issue 12)."""
    import torch
    import denoising_diffusion_pytorch as ddp
    from ms_ddpm_tools.convert import main as convert_main
    from ms_ddpm_tools.verify.command import main
    torch.manual_seed(0)
    gd = ddp.GaussianDiffusion1D(ddp.Unet1D(dim=8, dim_mults=(1, 2), channels=2), seq_length=16, timesteps=20,
                                 sampling_timesteps=4, objective='pred_v')
    torch.save(gd.state_dict(), tmp_path / 'seq.pt')
    cfg = json.dumps({'seq_length': 16, 'sampling_timesteps': 4})
    assert convert_main([str(tmp_path / 'seq.pt'), str(tmp_path / 'seq.ckpt'), '--config', cfg, '--verify', '-q']) == 0
    assert 'verify: PASS' in capsys.readouterr().out
    rc = main([str(tmp_path / 'seq.pt'), '--against', str(tmp_path / 'seq.ckpt'), '--config', cfg, '--batch', '2',
               '--sample-batch', '2', '--quiet', '--no-graph', '--out', str(tmp_path / 'out')])
    out = capsys.readouterr().out
    assert rc == 0, out[-3000:]
    rep = json.loads((tmp_path / 'out' / 'verify.json').read_text())
    names = {r['name'].split('/')[0] for r in rep['results']}
    assert {'weight', 'layer', 'unet', 'loss', 'noising', 'sample', 'buffer'} <= names
    assert rep['config']['model'] == 'GaussianDiffusion1D' and rep['verdict']['differing_tensor_count'] == 0
    assert (tmp_path / 'out' / 'samples.png').stat().st_size > 0 and (tmp_path / 'out' / 'noising.png').exists()
    assert 'GaussianDiffusion1D(' in (tmp_path / 'out' / 'report.md').read_text()
    # a bare Unet1D needs its sequence length, said in one line
    torch.save(gd.model.state_dict(), tmp_path / 'unet1d.pt')
    assert main([str(tmp_path / 'unet1d.pt'), '--quiet', '--out', str(tmp_path / 'o2')]) == 1
    assert '--seq-length' in capsys.readouterr().err
    # a 1D checkpoint given as 2D, and a 2D one given as 1D: named
    assert main([str(tmp_path / 'unet1d.pt'), '--image-size', '16', '--quiet', '--out', str(tmp_path / 'o3')]) == 1
    assert 'a 1D checkpoint' in capsys.readouterr().err
    torch.save(ddp.Unet(dim=8, dim_mults=(1, 2)).state_dict(), tmp_path / 'unet2d.pt')
    assert main([str(tmp_path / 'unet2d.pt'), '--seq-length', '16', '--quiet', '--out', str(tmp_path / 'o4')]) == 1
    assert 'a 2D checkpoint' in capsys.readouterr().err


def test_the_1d_golden_fixture_runs_without_pytorch(tmp_path):
    """``ms-ddpm verify --fixture verify-1d.npz`` where ``import torch`` fails: PASS, and the
    figures of every component are there (the shipped 1D fixture, ``python -m
    ms_ddpm_tools.verify.fixtures`` records it)."""
    import subprocess
    import sys
    from parity.fixtures import FIXTURE_DIR, ROOT
    fixture = os.path.join(FIXTURE_DIR, 'verify-1d.npz')
    code = ('import sys; sys.modules["torch"] = None\n'
            'from ms_ddpm_tools.verify.command import main\n'
            f'sys.exit(main({["--fixture", fixture, "--out", str(tmp_path), "--no-graph", "--quiet"]!r}))')
    p = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0 and 'verdict: PASS' in p.stdout, p.stdout[-3000:] + p.stderr[-3000:]
    rep = json.loads((tmp_path / 'verify.json').read_text())
    assert rep['versions']['torch_source'] == 'fixture' and rep['config']['model'] == 'GaussianDiffusion1D'
    assert {'layer', 'unet', 'loss', 'noising', 'sample', 'buffer'} <= {r['name'].split('/')[0] for r in rep['results']}
