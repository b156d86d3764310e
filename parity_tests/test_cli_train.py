"""``ms-ddpm train`` / ``ms-ddpm sample`` as a new user meets them (issue 17): the same seed
gives the same run, the end of a run is saved, the reference Trainer's rules and bad input
are one line each with exit 1, and a bare Unet samples."""

import os

import numpy as np
import pytest

from ms_ddpm_tools.train import main_sample, main_train
from ms_ddpm_tools.verify.default import write_digits

TINY = ['--image-size', '8', '--channels', '1', '--dim', '8', '--dim-mults', '1,2', '--attn-heads', '2',
        '--attn-dim-head', '8', '--timesteps', '20', '--sampling-timesteps', '2', '--num-samples', '4',
        '--no-jit', '--no-progress', '--no-flip']


@pytest.fixture(scope='module')
def digits(tmp_path_factory):
    d = tmp_path_factory.mktemp('digits')
    write_digits(str(d / 'img'), size=8, count=100)
    return d


def _one_line_error(capsys, prog, *words):
    err = capsys.readouterr().err
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert lines and lines[-1].startswith(f'ms-ddpm {prog}: error: '), err[-2000:]
    assert 'Traceback' not in err
    for w in words:
        assert w in lines[-1], (w, lines[-1])
    return lines[-1]


def test_same_seed_same_run_and_the_end_of_a_run_is_saved(digits, capsys):
    logs = []
    for run in ('a', 'b'):
        res = digits / f'res-{run}'
        assert main_train([str(digits / 'img'), *TINY, '--steps', '2', '--save-every', '3', '--results', str(res),
                           '--seed', '7', '--log', str(digits / f'{run}.log')]) == 0
        logs.append((digits / f'{run}.log').read_text().split())
        assert (res / 'model-last.ckpt').exists()               # no milestone yet: the 2 steps are not lost
    assert logs[0] == logs[1] and len(logs[0]) == 4             # 2 'step loss' lines, bit-identical
    assert 'saved the final state (step 2)' in capsys.readouterr().err
    # the saved end state resumes, up to the first milestone (model-1.ckpt at step 3)
    res = digits / 'res-a'
    assert main_train([str(digits / 'img'), *TINY, '--steps', '3', '--save-every', '3', '--results', str(res),
                       '--resume', 'last', '--log', str(digits / 'a.log')]) == 0
    assert (res / 'model-1.ckpt').exists() and (res / 'sample-1.png').exists()
    assert (digits / 'a.log').read_text().split()[4] == '3'


def test_train_rules_and_bad_input_are_one_line(digits, tmp_path, capsys):
    img = str(digits / 'img')
    assert main_train([str(tmp_path / 'nowhere'), *TINY]) == 1
    _one_line_error(capsys, 'train', 'no such folder')
    few = tmp_path / 'few'
    write_digits(str(few), size=8, count=20)
    assert main_train([str(few), *TINY]) == 1
    _one_line_error(capsys, 'train', '20 images', 'at least 100')
    assert main_train([img, *TINY, '--batch-size', '4']) == 1
    _one_line_error(capsys, 'train', 'effective batch size', '= 4', 'at least 16')
    broken = tmp_path / 'broken'
    write_digits(str(broken), size=8, count=100)
    with open(broken / '0042.png', 'r+b') as f:                 # a damaged PNG chunk
        f.seek(40)
        f.write(b'\xff' * 8)
    assert main_train([str(broken), *TINY]) == 1
    _one_line_error(capsys, 'train', '0042.png', 'not a readable image')
    (tmp_path / 'bad.ckpt').write_bytes(b'not a checkpoint')
    assert main_train([img, *TINY, '--results', str(tmp_path / 'r'), '--resume', str(tmp_path / 'bad.ckpt')]) == 1
    _one_line_error(capsys, 'train', 'bad.ckpt')


def test_sample_a_bare_unet_and_bad_input(tmp_path, capsys):
    import torch
    import denoising_diffusion_pytorch as ddp
    torch.manual_seed(0)
    torch.save(ddp.Unet(dim=8, dim_mults=(1, 2), channels=1).state_dict(), tmp_path / 'unet.pt')
    unet = str(tmp_path / 'unet.pt')
    out = tmp_path / 'grid.png'
    assert main_sample([unet, '--out', str(out), '--num', '4', '--image-size', '8', '--ddim-steps', '2',
                        '--quiet']) == 0
    from PIL import Image
    with Image.open(out) as im:
        assert im.size == (2 * 8 + 3 * 2, 2 * 8 + 3 * 2)       # a 2x2 grid, torchvision's padding
    capsys.readouterr()
    assert main_sample([unet, '--out', str(out), '--num', '4']) == 1
    _one_line_error(capsys, 'sample', 'bare Unet', '--image-size')
    assert main_sample([unet, '--out', str(out), '--num', '0', '--image-size', '8']) == 1
    _one_line_error(capsys, 'sample', '--num 0')
    assert main_sample([unet, '--out', str(tmp_path / 'no' / 'grid.png'), '--image-size', '8']) == 1
    _one_line_error(capsys, 'sample', 'does not exist')
    assert main_sample([str(tmp_path / 'missing.pt'), '--out', str(out)]) == 1
    _one_line_error(capsys, 'sample', 'missing.pt')


def test_noise_strip_is_the_forward_process(tmp_path, capsys):
    """``ms-ddpm noise IMAGE``: q_sample at each step with one noise draw; t=0 is (nearly) the image
    and the noise grows with t (the tutorial's first picture)."""
    from PIL import Image
    from sklearn.datasets import load_sample_image
    from ms_ddpm_tools.noise import load_image, main, noising
    Image.fromarray(load_sample_image('china.jpg')).save(tmp_path / 'china.png')
    assert main([str(tmp_path / 'china.png'), '--image-size', '32', '--out', str(tmp_path / 'n.png')]) == 0
    with Image.open(tmp_path / 'n.png') as im:
        assert im.width > 5 * 32
    x0 = load_image(str(tmp_path / 'china.png'), 32, 3)
    strip = noising(x0, (0, 50, 199))
    err = [float(np.abs(s - x0).mean()) for s in strip]
    assert err[0] < 0.02 and err[0] < err[1] < err[2]
    assert main([str(tmp_path / 'china.png'), '--steps', '0,200']) == 1
    _one_line_error(capsys, 'noise', 'must be in 0..199')


def test_every_option_of_train_and_sample_says_what_it_does():
    """``ms-ddpm train/sample/diff --help``: every option and argument has a text (issue 17)."""
    from ms_ddpm_tools.train import _sample_parser, _train_parser
    from ms_ddpm_tools.verify.command import _diff_parser, _parser as _verify_parser
    for parser in (_train_parser(), _sample_parser(), _diff_parser(), _verify_parser()):
        missing = [a.dest for a in parser._actions if not a.help and a.dest != 'help']
        assert not missing, f'{parser.prog}: options without help: {missing}'


def test_trainer_checkpoints_are_fsynced(tmp_path, monkeypatch):
    """A Trainer checkpoint is on disk when save returns: written through the one atomic
    writer, which fsyncs the file before the rename (issue 17, item 10)."""
    import os
    from ms_ddpm.training.checkpoint import write_trainer_checkpoint
    synced = []
    real = getattr(os, 'fdatasync', os.fsync)
    monkeypatch.setattr(os, 'fdatasync', lambda fd: (synced.append(os.readlink(f'/proc/self/fd/{fd}')), real(fd))[1])
    path = str(tmp_path / 'model-1.ckpt')
    write_trainer_checkpoint(path, {'w': np.zeros(3, np.float32)}, {'step': 1})
    assert os.path.exists(path)
    assert any(os.path.basename(p).startswith('.model-1.ckpt.') for p in synced), synced


def test_train_and_sample_sequences(tmp_path, capsys):
    """``ms-ddpm train SEQS.npy``: Unet1D + GaussianDiffusion1D under Trainer1D; ``ms-ddpm
    sample`` of its checkpoint writes the sequences (.npy) and their plot (.png)."""
    import ms_ddpm_tools.verify.core as core
    seqs = core.sequences(32, 2, 16)
    np.save(tmp_path / 'seqs.npy', seqs)
    res = tmp_path / 'res'
    args = [str(tmp_path / 'seqs.npy'), '--dim', '8', '--dim-mults', '1,2', '--attn-heads', '2', '--attn-dim-head', '8',
            '--timesteps', '20', '--sampling-timesteps', '2', '--num-samples', '4', '--batch-size', '8', '--steps', '2',
            '--save-every', '5', '--results', str(res), '--no-jit', '--no-progress']
    assert main_train(args) == 0
    ckpt = res / 'model-last.ckpt'
    assert ckpt.exists()
    assert main_sample([str(ckpt), '--out', str(tmp_path / 's.png'), '--num', '3', '--quiet']) == 0
    x = np.load(tmp_path / 's.npy')
    assert x.shape == (3, 2, 16) and np.isfinite(x).all() and (tmp_path / 's.png').stat().st_size > 0
    assert (res / 'samples-vs-data.png').stat().st_size > 0          # samples beside training data
    np.save(tmp_path / 'bad.npy', np.zeros((4, 16), np.float32))
    capsys.readouterr()
    assert main_train([str(tmp_path / 'bad.npy'), '--results', str(res)]) == 1
    _one_line_error(capsys, 'train', 'expected float sequences of shape (N, channels, length)')
    np.savez(tmp_path / 'odd.npz', data=core.sequences(8, 1, 18))     # 18 is not a multiple of 2**3
    assert main_train([str(tmp_path / 'odd.npz'), '--results', str(res)]) == 1
    _one_line_error(capsys, 'train', 'length 18', 'multiple of 8')


def test_train_the_built_in_sines(tmp_path, capsys):
    """``ms-ddpm train sines``: the built-in 1D example runs on a fresh machine."""
    from ms_ddpm_tools.train import example_sines
    x = example_sines(8, 2, 64)
    assert x.shape == (8, 2, 64) and 0 <= x.min() and x.max() <= 1
    assert main_train(['sines', '--dim', '8', '--dim-mults', '1,2', '--attn-heads', '2', '--attn-dim-head', '8',
                       '--timesteps', '10', '--sampling-timesteps', '2', '--num-samples', '4', '--steps', '1',
                       '--results', str(tmp_path / 'r'), '--no-jit', '--no-progress']) == 0
    assert (tmp_path / 'r' / 'model-last.ckpt').exists() and (tmp_path / 'r' / 'samples-vs-data.png').exists()
