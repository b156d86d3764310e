"""FID in MindSpore (``ms_ddpm.fid_evaluation``) against pytorch-fid and the reference's
``FIDEvaluation``: InceptionV3's state-dict names, the features of every block (PyNative and
GRAPH, with and without resizing, odd input sizes), 1-channel inputs, the Fréchet distance and
the ``dataset_stats.npz`` cache.  Same random weights in both, BatchNorm statistics perturbed.
The rows are ``parity.cases_fid.ROWS_FID``."""

import os

import numpy as np
import pytest
import mindspore as ms

from parity.cases import with_modes, ids
from parity.cases_fid import rows_fid, make_inputs, inception_pair, torch_inception, evaluation_pair
from parity.compare import assert_parity, check


@pytest.mark.parametrize('case', rows_fid('names'), ids=ids(rows_fid('names')))
def test_names_shapes(case):
    """The twin's parameters are pytorch-fid's state dict (BatchNorm statistics included), and
    building it reads nothing."""
    from ms_ddpm.fid_evaluation import InceptionV3
    t = torch_inception(case.kwargs)
    m = InceptionV3(**case.kwargs)
    expected = {k: tuple(v.shape) for k, v in t.state_dict().items()}
    assert {n: tuple(p.shape) for n, p in m.parameters_and_names()} == expected
    trainable = {n for n, p in m.parameters_and_names() if p.requires_grad}
    assert not trainable                         # requires_grad=False, as pytorch-fid
    assert any(k.endswith('bn.running_var') for k in expected)


def test_weights_file_round_trip(tmp_path):
    """A ``.ckpt`` of the torchvision-keyed state dict (what ``ms-ddpm convert`` writes from
    the .pth) loads into every block subset; a wrong key fails loudly, loading nothing."""
    from ms_ddpm.fid_evaluation import InceptionV3
    from ms_ddpm.io.atomic import AtomicFile
    from ms_ddpm.io.checkpoint import write_ckpt
    from ms_ddpm.io.state import StateDictMismatchError
    t = torch_inception(dict(output_blocks=(0, 1)))
    sd = t.state_dict()
    rev = {'blocks.0.0': 'Conv2d_1a_3x3', 'blocks.0.1': 'Conv2d_2a_3x3', 'blocks.0.2': 'Conv2d_2b_3x3',
           'blocks.1.0': 'Conv2d_3b_1x1', 'blocks.1.1': 'Conv2d_4a_3x3'}
    tv = {}
    for k, v in sd.items():
        p = '.'.join(k.split('.')[:3])
        tv[rev[p] + k[len(p):]] = v.numpy()
    tv['fc.weight'] = np.zeros((1008, 2048), np.float32)
    path = tmp_path / 'inception.ckpt'
    with AtomicFile(path) as f:
        write_ckpt(_entries(tv), f.file)
    m = InceptionV3([1], weights=str(path))
    got = {n: p.asnumpy() for n, p in m.parameters_and_names()}
    assert all(np.array_equal(got[k], v.numpy()) for k, v in sd.items())
    m0 = InceptionV3([0], weights=str(path))
    assert len(list(m0.parameters_and_names())) == sum(k.startswith('blocks.0.') for k in sd)
    bad = dict(tv)
    bad['Conv2d_1a_3x3.conv.weight'] = np.zeros((1, 1, 1, 1), np.float32)
    with AtomicFile(tmp_path / 'bad.ckpt') as f:
        write_ckpt(_entries(bad), f.file)
    with pytest.raises(StateDictMismatchError):
        InceptionV3([1], weights=str(tmp_path / 'bad.ckpt'))


def _entries(arrays):
    from ms_ddpm.io.checkpoint import Entry
    return {k: Entry(np.ascontiguousarray(v), str(v.dtype)) for k, v in arrays.items()}


@pytest.mark.parametrize('case,mode', with_modes(rows_fid('features')))
def test_features(case, mode, record):
    import torch
    t, m = inception_pair(case.kwargs, case.seed)
    (x,) = make_inputs(case.inputs, case.input_seed)
    with torch.no_grad():
        expected = [o.numpy() for o in t(torch.from_numpy(x))]
    if mode == 'graph':
        def forward(v):
            return m(v)
        got = ms.jit(forward)(ms.Tensor(x))
    else:
        got = m(ms.Tensor(x))
    assert len(got) == len(expected) == len(case.kwargs['output_blocks'])
    for block, e, g in zip(sorted(case.kwargs['output_blocks']), expected, got):
        assert np.mean(e > 0) > 0.05, 'degenerate features: the comparison would be vacuous'
        record(assert_parity(f'{case.id} block {block} [{mode}]', e, g.asnumpy(), case.kind))


@pytest.mark.parametrize('case', rows_fid('evaluation'), ids=ids(rows_fid('evaluation')))
def test_calculate_inception_features(case, record):
    import torch
    te, me = evaluation_pair(case)
    (x,) = make_inputs(case.inputs, case.input_seed)
    with torch.no_grad():
        expected = te.calculate_inception_features(torch.from_numpy(x)).numpy()
    got = me.calculate_inception_features(x).asnumpy()
    assert expected.shape == (x.shape[0], case.kwargs['inception_block_idx'])
    record(assert_parity(f'{case.id} [pynative]', expected, got, case.kind))


@pytest.mark.parametrize('case', rows_fid('frechet'), ids=ids(rows_fid('frechet')))
def test_frechet_distance(case, record):
    from pytorch_fid.fid_score import calculate_frechet_distance as torch_fd
    from ms_ddpm.fid_evaluation import calculate_frechet_distance
    rng = np.random.default_rng(case.input_seed)
    n, dims = case.kwargs['n'], case.kwargs['dims']
    f1, f2 = rng.standard_normal((n, dims)), rng.standard_normal((n, dims)) * 1.3 + 0.2
    stats = (f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False))
    record(assert_parity(case.id, np.float64(torch_fd(*stats)), np.float64(calculate_frechet_distance(*stats)),
                         case.kind))


class _Sampler:
    def __init__(self, images, to):
        self.images, self.to, self.at = images, to, 0

    def eval(self):
        return self

    def sample(self, batch_size):
        out = self.images[self.at:self.at + batch_size]
        self.at += batch_size
        return self.to(out)


def _loader(images, batch_size, to):
    for i in range(0, len(images), batch_size):
        yield to(images[i:i + batch_size])


@pytest.mark.parametrize('case', rows_fid('stats'), ids=ids(rows_fid('stats')))
def test_fid_score_and_stats_cache(case, tmp_path, record, capsys):
    """``fid_score`` of both classes on the same real and generated images: the cached
    ``dataset_stats.npz`` of each (compared), the score, and the cache read back on a second
    evaluation (no real image drawn then) giving the same score."""
    import torch
    (images,) = make_inputs(case.inputs, case.input_seed)
    n, b = case.kwargs['num_fid_samples'], case.kwargs['batch_size']
    real, fake = images[:n], images[n:]
    dirs = (tmp_path / 'torch', tmp_path / 'ms')
    for d in dirs:
        d.mkdir()
    te, me = evaluation_pair(case, dirs, dl=(_loader(real, b, torch.from_numpy), _loader(real, b, ms.Tensor)),
                             sampler=(_Sampler(fake, torch.from_numpy), _Sampler(fake, ms.Tensor)))
    expected = te.fid_score()
    got = me.fid_score()
    ts, ms_ = np.load(dirs[0] / 'dataset_stats.npz'), np.load(dirs[1] / 'dataset_stats.npz')
    assert set(ms_.files) == {'m2', 's2'} and ms_['s2'].shape == (64, 64)
    record(assert_parity(f'{case.id} m2', ts['m2'], ms_['m2'], case.kind))
    record(assert_parity(f'{case.id} s2', ts['s2'], ms_['s2'], 'fid_stats'))
    record(assert_parity(f'{case.id} fid', np.float64(expected), np.float64(got), 'fid_stats'))
    # the cache read back: a fresh evaluation without a real-image loader
    again = evaluation_pair(case, dirs, dl=(None, iter(())), sampler=(None, _Sampler(fake, ms.Tensor)))[1]
    capsys.readouterr()
    assert again.fid_score() == got
    assert 'Dataset stats loaded from disk.' in capsys.readouterr().out
    assert not any(f.endswith('.tmp') or 'tmp' in f for f in os.listdir(dirs[1]) if f != 'dataset_stats.npz')


def test_convert_pth_to_ckpt_then_features(tmp_path, record):
    """``ms-ddpm convert`` of a torch.save'd torchvision-keyed FID Inception state dict (the
    layout of pt_inception-2015-12-05-6726825d.pth, fc head included) writes a .ckpt whose
    InceptionV3 gives pytorch-fid's features; the kind is inferred, nothing is asked for."""
    import torch
    from parity.cases_fid import offline_pytorch_fid, perturb_batchnorm
    from ms_ddpm.fid_evaluation import InceptionV3
    from ms_ddpm_tools.convert import main as convert_main
    with offline_pytorch_fid() as pfi:
        torch.manual_seed(3)
        inception = perturb_batchnorm(pfi.fid_inception_v3(), 4).eval()
        src = tmp_path / 'pt_inception-2015-12-05-6726825d.pth'
        torch.save(inception.state_dict(), src)
        saved, pfi.fid_inception_v3 = pfi.fid_inception_v3, lambda: inception   # pytorch-fid's own blocks of it
        try:
            t = pfi.InceptionV3([1], resize_input=False).eval()
        finally:
            pfi.fid_inception_v3 = saved
    dst = tmp_path / 'inception.ckpt'
    assert convert_main([str(src), str(dst), '--quiet']) == 0
    m = InceptionV3([1], resize_input=False, weights=str(dst))
    (x,) = make_inputs((('uniform', (1, 3, 75, 75)),), 8)
    with torch.no_grad():
        expected = t(torch.from_numpy(x))[0].numpy()
    record(assert_parity('fid/convert .pth -> .ckpt block 1 [pynative]', expected, m(ms.Tensor(x))[0].asnumpy(),
                         'fid_features'))
    assert len(list(InceptionV3([3], weights=str(dst)).parameters_and_names())) == 564


TORCH_FREE_SCRIPT = r'''
import sys, numpy as np, mindspore as ms
from ms_ddpm.training.fid import FIDScorer, InceptionV3
from ms_ddpm.io.atomic import AtomicFile
from ms_ddpm.io.checkpoint import Entry, write_ckpt
net = InceptionV3([0])
with AtomicFile(sys.argv[1] + '/inception.ckpt') as f:
    write_ckpt({n: Entry(p.asnumpy(), str(p.asnumpy().dtype)) for n, p in net.parameters_and_names()}, f.file)
rng = np.random.default_rng(0)

class Model:
    def sample(self, batch_size):
        return ms.Tensor(rng.random((batch_size, 1, 16, 16)).astype(np.float32))

class Trainer:
    batch_size, channels = 2, 1
    class ema:
        ema_model = Model()
    def _fid_batches(self):
        return rng.random((2, 1, 16, 16)).astype(np.float32)

score = FIDScorer(sys.argv[1] + '/inception.ckpt', Trainer(), 64, 4, sys.argv[1]).fid_score()
assert np.isfinite(score) and score > 0, score
assert 'torch' not in sys.modules, 'the MindSpore FID imported torch'
print('FID', score)
'''


def test_trainer_fid_scorer_without_torch(tmp_path):
    """The Trainer's FID (``ms_ddpm.training.fid.FIDScorer``) on MindSpore's InceptionV3 from a
    local .ckpt: a score, the stats cache written, and torch never imported."""
    import subprocess
    import sys
    r = subprocess.run([sys.executable, '-c', TORCH_FREE_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'FID' in r.stdout and (tmp_path / 'dataset_stats.npz').is_file()


def test_trainer_fid_with_local_weights(tmp_path):
    """``Trainer(fid_weights=a .ckpt)``: the MindSpore FID is set up (block 64, 1-channel
    images repeated to 3), ``fid_score`` samples the EMA model, caches the dataset statistics in
    the results folder and returns a finite score; a ``.pth`` is refused with the convert command."""
    import ms_ddpm
    from ms_ddpm.fid_evaluation import InceptionV3
    from ms_ddpm.io.atomic import AtomicFile
    from ms_ddpm.io.checkpoint import write_ckpt
    from parity.training import write_digits
    net = InceptionV3([0])
    weights = tmp_path / 'inception64.ckpt'
    with AtomicFile(weights) as f:
        write_ckpt(_entries({n: p.asnumpy() for n, p in net.parameters_and_names()}), f.file)
    folder = write_digits(tmp_path / 'digits', 100)
    md = ms_ddpm.GaussianDiffusion(ms_ddpm.Unet(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8, channels=1),
                                   image_size=8, timesteps=10, sampling_timesteps=2)
    said = []
    results = tmp_path / 'r'
    t = ms_ddpm.Trainer(md, str(folder), train_batch_size=2, gradient_accumulate_every=8, results_folder=str(results),
                        log=said.append,
                        fid_weights=str(weights), inception_block_idx=64, num_fid_samples=4)
    assert t.calculate_fid and t.fid_scorer is not None, said
    score = t.fid_scorer.fid_score()
    assert np.isfinite(score) and score >= 0
    assert (results / 'dataset_stats.npz').is_file()
    assert np.load(results / 'dataset_stats.npz')['s2'].shape == (64, 64)
    from ms_ddpm.io.errors import UnsupportedFormatError
    pth = tmp_path / 'pt_inception-2015-12-05-6726825d.pth'
    pth.write_bytes(b'not read')
    with pytest.raises(UnsupportedFormatError, match='ms-ddpm convert'):
        ms_ddpm.Trainer(md, str(folder), results_folder=str(tmp_path / 'r2'), fid_weights=str(pth))
