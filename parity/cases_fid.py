"""Parity cases of FID (``fid_evaluation``: pytorch-fid's FID ``InceptionV3`` and the
reference's ``FIDEvaluation``), as rows of :class:`parity.cases.Case` with
``module='fid_evaluation'`` and ids prefixed ``fid/``; run by ``parity_tests/test_fid.py``.

Both networks carry the same random weights (no weights file is read or downloaded: pytorch-fid's
``fid_inception_v3`` is built without its ``load_state_dict_from_url``), with every BatchNorm's
weight, bias, running mean and running variance set to seeded random values so that they matter.

checks:
  names      state-dict keys and shapes of pytorch-fid's InceptionV3 == the twin's parameters
  features   every requested block's feature map of ``InceptionV3(**kwargs)(x)``
  evaluation ``FIDEvaluation.calculate_inception_features`` (1-channel inputs repeated to 3,
             adaptive average pool to 1x1) of the two ``FIDEvaluation`` classes
  frechet    ``calculate_frechet_distance`` on the same statistics
  stats      ``fid_score`` end to end with a cached ``dataset_stats.npz``: the cache written by
             each, read back, and the score of each framework's features
Keep it small: InceptionV3 is ~94 convs deep; 75x75 (the smallest input it accepts) without
resizing for most rows, one 299 row, batch 1-2, at most 2 GRAPH compilations.
"""

import contextlib

import numpy as np

from parity.cases import Case, Table

FID = 'fid_evaluation'
PY = ('pynative',)
BOTH = ('pynative', 'graph')

ROWS_FID = Table()
add = ROWS_FID.add


def rows_fid(check=None):
    return ROWS_FID.rows(check)


add(
    Case('fid/InceptionV3/names', FID, 'InceptionV3', 'names', kwargs=dict(output_blocks=(0, 1, 2, 3)), modes=('',)),
    Case('fid/InceptionV3/blocks0123-75', FID, 'InceptionV3', 'features', 'fid_features',
         kwargs=dict(output_blocks=(0, 1, 2, 3), resize_input=False), inputs=(('uniform', (2, 3, 75, 75)),), modes=BOTH),
    Case('fid/InceptionV3/block0-resize-37x41', FID, 'InceptionV3', 'features', 'fid_features',
         kwargs=dict(output_blocks=(0,)), inputs=(('uniform', (2, 3, 37, 41)),), input_seed=1, modes=BOTH),
    Case('fid/InceptionV3/block1-resize-301x333-no-normalize', FID, 'InceptionV3', 'features', 'fid_features',
         kwargs=dict(output_blocks=(1,), normalize_input=False), inputs=(('uniform', (1, 3, 301, 333)),),
         input_seed=2, modes=PY),
    Case('fid/InceptionV3/block3-resize-64x48', FID, 'InceptionV3', 'features', 'fid_features',
         kwargs=dict(output_blocks=(3,)), inputs=(('uniform', (1, 3, 64, 48)),), input_seed=3, modes=PY),
    Case('fid/FIDEvaluation/1-channel-block64', FID, 'FIDEvaluation', 'evaluation', 'fid_features',
         kwargs=dict(channels=1, inception_block_idx=64), inputs=(('uniform', (2, 1, 32, 32)),), input_seed=4, modes=PY),
    Case('fid/FIDEvaluation/3-channel-block192', FID, 'FIDEvaluation', 'evaluation', 'fid_features',
         kwargs=dict(channels=3, inception_block_idx=192), inputs=(('uniform', (1, 3, 32, 32)),), input_seed=5, modes=PY),
    Case('fid/calculate_frechet_distance', FID, 'calculate_frechet_distance', 'frechet', 'exact',
         kwargs=dict(n=40, dims=16), input_seed=6, modes=('',)),
    Case('fid/FIDEvaluation/fid_score-stats-cache', FID, 'FIDEvaluation', 'stats', 'fid_features',
         kwargs=dict(channels=3, inception_block_idx=64, num_fid_samples=6, batch_size=2),
         inputs=(('uniform', (12, 3, 16, 16)),), input_seed=7, modes=PY),
)


# --- building both networks with the same weights --------------------------------------------

def make_inputs(specs, seed=0):
    """Images in [0, 1): ('uniform', shape)."""
    rng = np.random.default_rng(seed)
    out = []
    for kind, shape in specs:
        if kind != 'uniform':
            raise ValueError(f'unknown input kind {kind!r}')
        out.append(rng.random(shape).astype(np.float32))
    return out


@contextlib.contextmanager
def offline_pytorch_fid():
    """pytorch-fid's ``fid_inception_v3`` without its download: the network with torch's
    default initialisation, nothing read from the network or the disk."""
    import pytorch_fid.inception as pfi
    saved = pfi.fid_inception_v3

    def fid_inception_v3():
        inception = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
        inception.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
        inception.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
        inception.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
        inception.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
        inception.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
        inception.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
        inception.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
        inception.Mixed_7b = pfi.FIDInceptionE_1(1280)
        inception.Mixed_7c = pfi.FIDInceptionE_2(2048)
        return inception

    pfi.fid_inception_v3 = fid_inception_v3
    try:
        yield pfi
    finally:
        pfi.fid_inception_v3 = saved


def perturb_batchnorm(module, seed=1):
    """Seeded random BatchNorm weight, bias, running mean and variance (all in place)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, b in list(module.named_parameters()) + list(module.named_buffers()):
            if '.bn.' not in name:
                continue
            if name.endswith('running_mean'):
                b.copy_(torch.randn(b.shape, generator=g) * 0.2)
            elif name.endswith('running_var'):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
            elif name.endswith('weight'):
                b.copy_(torch.rand(b.shape, generator=g) * 0.5 + 0.75)
            elif name.endswith('bias'):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
    return module


def torch_inception(kwargs, seed=0):
    """pytorch-fid's InceptionV3(**kwargs), seeded, BatchNorm perturbed, in eval mode."""
    import torch
    with offline_pytorch_fid() as pfi:
        torch.manual_seed(seed)
        return perturb_batchnorm(pfi.InceptionV3(**kwargs), seed + 1).eval()


def inception_pair(kwargs, seed=0):
    """(pytorch-fid InceptionV3, ms_ddpm InceptionV3) with the same weights."""
    from ms_ddpm.fid_evaluation import InceptionV3
    from weight_convert import load_torch_state_dict
    t = torch_inception(kwargs, seed)
    m = InceptionV3(**kwargs)
    load_torch_state_dict(m, t.state_dict())
    return t, m


def evaluation_pair(case, stats_dirs=('.', '.'), dl=(None, None), sampler=(None, None)):
    """(reference FIDEvaluation, ms_ddpm FIDEvaluation) on networks with the same weights."""
    import torch
    from denoising_diffusion_pytorch.fid_evaluation import FIDEvaluation as TorchFID
    from ms_ddpm.fid_evaluation import FIDEvaluation, InceptionV3
    from weight_convert import load_torch_state_dict
    kw = dict(case.kwargs)
    batch_size = kw.pop('batch_size', 2)
    with offline_pytorch_fid():
        torch.manual_seed(case.seed)
        te = TorchFID(batch_size=batch_size, dl=dl[0], sampler=sampler[0], stats_dir=str(stats_dirs[0]),
                      device='cpu', **kw)
    perturb_batchnorm(te.inception_v3, case.seed + 1)
    block = InceptionV3.BLOCK_INDEX_BY_DIM[kw.get('inception_block_idx', 2048)]
    net = InceptionV3([block])
    load_torch_state_dict(net, te.inception_v3.state_dict())
    me = FIDEvaluation(batch_size=batch_size, dl=dl[1], sampler=sampler[1], stats_dir=str(stats_dirs[1]),
                       inception_v3=net, **kw)
    return te, me
