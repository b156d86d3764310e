"""FID in MindSpore, as the reference computes it (its ``fid_evaluation.FIDEvaluation``:
pytorch-fid's FID InceptionV3 at a block of 64/192/768/2048 features, dataset statistics
cached in ``stats_dir/dataset_stats.npz``, pytorch-fid's ``calculate_frechet_distance``).

- :class:`InceptionV3`: a twin of ``pytorch_fid.inception.InceptionV3`` (same constructor
  arguments, ``BLOCK_INDEX_BY_DIM``, the FIDInceptionA/C/E_1/E_2 blocks); its parameter names
  and shapes are pytorch-fid's state-dict keys (BatchNorm running statistics included).
  Building it touches neither the network nor the disk; ``weights=PATH`` loads a local
  ``.ckpt``/``.safetensors`` holding that state dict (``ms-ddpm convert
  pt_inception-2015-12-05-6726825d.pth inception.ckpt`` writes one; never downloaded).
- :class:`FIDEvaluation`: the reference's class, on MindSpore features.

This is the training machinery layer (the Trainer twins use it); ``ms_ddpm.fid_evaluation``
is the twin of the reference module and re-exports these names.
"""

import math
import os

import numpy as np
import mindspore as ms
from mindspore import nn, ops
from tqdm.auto import tqdm

from ms_ddpm.ms_compat import (TorchBatchNorm2d, TorchConv2d, MaxPool2d, AdaptiveAvgPool2d1x1, avg_pool2d,
                               max_pool2d, interpolate_bilinear, name_parameters_by_path)

__all__ = ['FID_WEIGHTS_ENV', 'FID_WEIGHTS_FILE', 'fid_weights_path', 'InceptionV3', 'FIDInceptionA', 'FIDInceptionC',
           'FIDInceptionE_1', 'FIDInceptionE_2', 'inception_state_dict_from_torchvision', 'load_inception_weights',
           'calculate_frechet_distance', 'num_to_groups', 'FIDEvaluation', 'FIDScorer']

FID_WEIGHTS_ENV = 'MS_DDPM_FID_WEIGHTS'
FID_WEIGHTS_FILE = 'pt_inception-2015-12-05-6726825d.pth'


def fid_weights_path(fid_weights):
    """-> (path, None), or (None, the line to log) when no usable weights file is given
    (``fid_weights`` or ``$MS_DDPM_FID_WEIGHTS``)."""
    path = fid_weights or os.environ.get(FID_WEIGHTS_ENV)
    if not path:
        return None, ('FID: calculate_fid=True, but the InceptionV3 FID weights (pt_inception-2015-12-05-6726825d.pth, '
                      'which the reference downloads) are not available offline. Give a local copy with '
                      f'fid_weights=PATH / --fid-weights PATH / {FID_WEIGHTS_ENV}=PATH; continuing WITHOUT FID.')
    if not os.path.isfile(path):
        return None, f'FID: weights file {path} does not exist; continuing WITHOUT FID.'
    return path, None


# --- the network: torchvision's Inception3 pieces, patched as pytorch-fid patches them ------

class BasicConv2d(nn.Cell):
    """torchvision's ``BasicConv2d``: Conv2d (no bias) + BatchNorm2d(eps=0.001) + ReLU."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = TorchConv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = TorchBatchNorm2d(out_channels, eps=0.001)

    def construct(self, x):
        return ops.relu(self.bn(self.conv(x)))


class FIDInceptionA(nn.Cell):
    """InceptionA with TensorFlow's average pool (``count_include_pad=False``)."""

    def __init__(self, in_channels, pool_features):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)

    def construct(self, x):
        branch1x1 = self.branch1x1(x)
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = self.branch_pool(avg_pool2d(x, 3, 1, 1, count_include_pad=False))
        return ops.cat((branch1x1, branch5x5, branch3x3dbl, branch_pool), 1)


class InceptionB(nn.Cell):
    """torchvision's InceptionB (Mixed_6a), unpatched."""

    def __init__(self, in_channels):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def construct(self, x):
        branch3x3 = self.branch3x3(x)
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = max_pool2d(x, 3, 2)
        return ops.cat((branch3x3, branch3x3dbl, branch_pool), 1)


class FIDInceptionC(nn.Cell):
    """InceptionC with TensorFlow's average pool (``count_include_pad=False``)."""

    def __init__(self, in_channels, channels_7x7):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def construct(self, x):
        branch1x1 = self.branch1x1(x)
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = self.branch7x7dbl_1(x)
        branch7x7dbl = self.branch7x7dbl_3(self.branch7x7dbl_2(branch7x7dbl))
        branch7x7dbl = self.branch7x7dbl_5(self.branch7x7dbl_4(branch7x7dbl))
        branch_pool = self.branch_pool(avg_pool2d(x, 3, 1, 1, count_include_pad=False))
        return ops.cat((branch1x1, branch7x7, branch7x7dbl, branch_pool), 1)


class InceptionD(nn.Cell):
    """torchvision's InceptionD (Mixed_7a), unpatched."""

    def __init__(self, in_channels):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def construct(self, x):
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = self.branch7x7x3_2(self.branch7x7x3_1(x))
        branch7x7x3 = self.branch7x7x3_4(self.branch7x7x3_3(branch7x7x3))
        branch_pool = max_pool2d(x, 3, 2)
        return ops.cat((branch3x3, branch7x7x3, branch_pool), 1)


class _InceptionE(nn.Cell):
    """torchvision's InceptionE parameters; the pool differs between the two FID blocks."""

    def __init__(self, in_channels):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def _branches(self, x, pooled):
        branch1x1 = self.branch1x1(x)
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = ops.cat((self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)), 1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = ops.cat((self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)), 1)
        branch_pool = self.branch_pool(pooled)
        return ops.cat((branch1x1, branch3x3, branch3x3dbl, branch_pool), 1)


class FIDInceptionE_1(_InceptionE):
    """First InceptionE block: TensorFlow's average pool (``count_include_pad=False``)."""

    def construct(self, x):
        return self._branches(x, avg_pool2d(x, 3, 1, 1, count_include_pad=False))


class FIDInceptionE_2(_InceptionE):
    """Second InceptionE block: max pooling (as the FID Inception model has it)."""

    def construct(self, x):
        return self._branches(x, max_pool2d(x, 3, 1, 1))


# torchvision Inception3 attribute (the .pth file's key prefix) -> pytorch-fid InceptionV3 path
TORCHVISION_TO_BLOCKS = (
    ('Conv2d_1a_3x3', 'blocks.0.0'), ('Conv2d_2a_3x3', 'blocks.0.1'), ('Conv2d_2b_3x3', 'blocks.0.2'),
    ('Conv2d_3b_1x1', 'blocks.1.0'), ('Conv2d_4a_3x3', 'blocks.1.1'),
    ('Mixed_5b', 'blocks.2.0'), ('Mixed_5c', 'blocks.2.1'), ('Mixed_5d', 'blocks.2.2'), ('Mixed_6a', 'blocks.2.3'),
    ('Mixed_6b', 'blocks.2.4'), ('Mixed_6c', 'blocks.2.5'), ('Mixed_6d', 'blocks.2.6'), ('Mixed_6e', 'blocks.2.7'),
    ('Mixed_7a', 'blocks.3.0'), ('Mixed_7b', 'blocks.3.1'), ('Mixed_7c', 'blocks.3.2'),
)
TORCHVISION_UNUSED = ('fc.',)     # the 1008-class head: not part of InceptionV3's blocks


def inception_state_dict_from_torchvision(state_dict):
    """The ``pt_inception-2015-12-05-6726825d.pth`` state dict (torchvision ``Inception3``
    keys, which ``fid_inception_v3`` loads) -> pytorch-fid ``InceptionV3`` keys (``blocks.*``):
    the fc head dropped, every other key renamed; a key that fits neither raises."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith('blocks.'):
            out[key] = value
            continue
        if key.startswith(TORCHVISION_UNUSED):
            continue
        for old, new in TORCHVISION_TO_BLOCKS:
            if key.startswith(old + '.'):
                out[new + key[len(old):]] = value
                break
        else:
            raise KeyError(f'{key}: not a key of the FID InceptionV3 weights')
    return out


def load_inception_weights(net, path):
    """Load a local ``.ckpt``/``.safetensors`` (InceptionV3 or torchvision Inception3 keys)
    into ``net`` strictly: the keys of the blocks ``net`` has must all be there."""
    from ms_ddpm.io.checkpoint import read_ckpt, read_safetensors
    from ms_ddpm.io.state import load_state_dict, to_numpy
    from ms_ddpm.io.errors import UnsupportedFormatError
    lower = str(path).lower()
    if lower.endswith('.safetensors'):
        entries, _ = read_safetensors(path)
    elif lower.endswith('.ckpt'):
        entries, _ = read_ckpt(path)
    else:
        raise UnsupportedFormatError(
            f'{path}: InceptionV3 weights must be a .ckpt or .safetensors file; convert the PyTorch file with '
            f'`ms-ddpm convert {os.path.basename(path)} inception.ckpt`')
    state = inception_state_dict_from_torchvision(entries)
    own = {name for name, _ in net.parameters_and_names()}
    state = {k: v for k, v in state.items() if k in own or not k.startswith('blocks.')
             or int(k.split('.')[1]) < len(net.blocks)}
    shapes = {name: tuple(p.shape) for name, p in net.parameters_and_names()}
    for k, v in list(state.items()):      # a .ckpt stores 0-d tensors (num_batches_tracked) as (1,)
        if shapes.get(k) == () and tuple(v.shape) == (1,):
            state[k] = to_numpy(v).reshape(())
    load_state_dict(net, state)
    return net


class InceptionV3(nn.Cell):
    """Twin of ``pytorch_fid.inception.InceptionV3`` (the FID Inception): a list of feature maps,
    one per block in ``output_blocks``.  ``weights``: a local ``.ckpt``/``.safetensors`` of its
    state dict (pytorch-fid downloads its file; this never touches the network)."""

    DEFAULT_BLOCK_INDEX = 3

    BLOCK_INDEX_BY_DIM = {
        64: 0,   # First max pooling features
        192: 1,  # Second max pooling features
        768: 2,  # Pre-aux classifier features
        2048: 3  # Final average pooling features
    }

    def __init__(self, output_blocks=(DEFAULT_BLOCK_INDEX,), resize_input=True, normalize_input=True,
                 requires_grad=False, use_fid_inception=True, weights=None):
        super().__init__()
        if not use_fid_inception:
            raise ValueError('use_fid_inception=False (torchvision\'s ImageNet Inception) is not supported: '
                             'FID uses the FID Inception weights')
        self.resize_input = resize_input
        self.normalize_input = normalize_input
        self.output_blocks = tuple(sorted(output_blocks))
        self.last_needed_block = max(output_blocks)
        assert self.last_needed_block <= 3, 'Last possible output block index is 3'

        blocks = [nn.SequentialCell([BasicConv2d(3, 32, 3, stride=2), BasicConv2d(32, 32, 3),
                                     BasicConv2d(32, 64, 3, padding=1), MaxPool2d(3, stride=2)])]
        if self.last_needed_block >= 1:
            blocks.append(nn.SequentialCell([BasicConv2d(64, 80, 1), BasicConv2d(80, 192, 3), MaxPool2d(3, stride=2)]))
        if self.last_needed_block >= 2:
            blocks.append(nn.SequentialCell([
                FIDInceptionA(192, pool_features=32), FIDInceptionA(256, pool_features=64),
                FIDInceptionA(288, pool_features=64), InceptionB(288),
                FIDInceptionC(768, channels_7x7=128), FIDInceptionC(768, channels_7x7=160),
                FIDInceptionC(768, channels_7x7=160), FIDInceptionC(768, channels_7x7=192)]))
        if self.last_needed_block >= 3:
            blocks.append(nn.SequentialCell([InceptionD(768), FIDInceptionE_1(1280), FIDInceptionE_2(2048),
                                             AdaptiveAvgPool2d1x1()]))
        self.blocks = nn.CellList(blocks)
        name_parameters_by_path(self)
        for p in self.get_parameters():
            if p.dtype == ms.float32:
                p.requires_grad = requires_grad
        self.set_train(False)
        if weights is not None:
            load_inception_weights(self, weights)

    def construct(self, inp):
        outp = ()
        x = inp
        if self.resize_input:
            x = interpolate_bilinear(x, (299, 299))
        if self.normalize_input:
            x = 2 * x - 1  # Scale from range (0, 1) to range (-1, 1)
        idx = 0
        for block in self.blocks:
            x = block(x)
            if idx in self.output_blocks:
                outp = outp + (x,)
            idx = idx + 1
        return outp


# --- the Fréchet distance (pytorch_fid.fid_score.calculate_frechet_distance) ---------------

def calculate_frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """pytorch-fid's ``calculate_frechet_distance`` (NumPy/SciPy, the same steps):
    ``||mu1 - mu2||^2 + Tr(C1 + C2 - 2 sqrt(C1 C2))``."""
    from scipy import linalg
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    assert mu1.shape == mu2.shape, 'Training and test mean vectors have different lengths'
    assert sigma1.shape == sigma2.shape, 'Training and test covariances have different dimensions'
    diff = mu1 - mu2
    covmean, _ = linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    if not np.isfinite(covmean).all():
        print(f'fid calculation produces singular product; adding {eps} to diagonal of cov estimates')
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f'Imaginary component {np.max(np.abs(covmean.imag))}')
        covmean = covmean.real
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


# --- FIDEvaluation (the reference's fid_evaluation.FIDEvaluation) ----------------------------

def num_to_groups(num, divisor):
    groups = num // divisor
    remainder = num % divisor
    arr = [divisor] * groups
    if remainder > 0:
        arr.append(remainder)
    return arr


def _as_tensor(x):
    if isinstance(x, ms.Tensor):
        return x
    if hasattr(x, 'detach'):          # a torch tensor handed over by a caller
        x = x.detach().cpu().numpy()
    return ms.Tensor(np.ascontiguousarray(np.asarray(x, dtype=np.float32)))


class FIDEvaluation:
    """The reference's ``FIDEvaluation`` on MindSpore features: the same arguments
    (``device`` is accepted and unused: MindSpore's context decides), plus ``weights``, the
    local InceptionV3 weights file (``.ckpt``/``.safetensors``), and ``jit`` (compile the
    feature extractor with ``ms.jit``).  ``dl`` yields image batches in [0, 1] (MindSpore,
    NumPy or torch); ``sampler.sample(batch_size=b)`` returns one."""

    def __init__(self, batch_size, dl, sampler, channels=3, accelerator=None, stats_dir='./results', device='cuda',
                 num_fid_samples=50000, inception_block_idx=2048, weights=None, jit=False, inception_v3=None):
        self.batch_size = batch_size
        self.n_samples = num_fid_samples
        self.device = device
        self.channels = channels
        self.dl = dl
        self.sampler = sampler
        self.stats_dir = stats_dir
        self.print_fn = print if accelerator is None else accelerator.print
        assert inception_block_idx in InceptionV3.BLOCK_INDEX_BY_DIM
        block_idx = InceptionV3.BLOCK_INDEX_BY_DIM[inception_block_idx]
        self.inception_v3 = inception_v3 if inception_v3 is not None else InceptionV3([block_idx], weights=weights)
        self._forward = ms.jit(self._features) if jit else self._features
        self.dataset_stats_loaded = False

    def _features(self, samples):
        features = self.inception_v3(samples)[0]
        if features.shape[2] != 1 or features.shape[3] != 1:
            features = ops.mean(features, (2, 3), keep_dims=True)   # adaptive_avg_pool2d(features, (1, 1))
        return features.reshape(features.shape[0], -1)

    def calculate_inception_features(self, samples):
        samples = _as_tensor(samples)
        if self.channels == 1:
            samples = ops.tile(samples, (1, 3, 1, 1))               # repeat 'b 1 ... -> b c ...', c=3
        self.inception_v3.set_train(False)
        return self._forward(samples)

    def load_or_precalc_dataset_stats(self):
        from ms_ddpm.io.atomic import AtomicFile
        path = os.path.join(self.stats_dir, 'dataset_stats')
        try:
            ckpt = np.load(path + '.npz')
            self.m2, self.s2 = ckpt['m2'], ckpt['s2']
            self.print_fn('Dataset stats loaded from disk.')
            ckpt.close()
        except OSError:
            num_batches = int(math.ceil(self.n_samples / self.batch_size))
            stacked_real_features = []
            self.print_fn(f'Stacking Inception features for {self.n_samples} samples from the real dataset.')
            for _ in tqdm(range(num_batches)):
                try:
                    real_samples = next(self.dl)
                except StopIteration:
                    break
                stacked_real_features.append(self.calculate_inception_features(real_samples).asnumpy())
            stacked_real_features = np.concatenate(stacked_real_features, axis=0)
            m2 = np.mean(stacked_real_features, axis=0)
            s2 = np.cov(stacked_real_features, rowvar=False)
            with AtomicFile(path + '.npz') as f:
                np.savez_compressed(f.file, m2=m2, s2=s2)
            self.print_fn(f'Dataset stats cached to {path}.npz for future use.')
            self.m2, self.s2 = m2, s2
        self.dataset_stats_loaded = True

    def fid_score(self):
        if not self.dataset_stats_loaded:
            self.load_or_precalc_dataset_stats()
        if hasattr(self.sampler, 'eval'):
            self.sampler.eval()
        elif hasattr(self.sampler, 'set_train'):
            self.sampler.set_train(False)
        batches = num_to_groups(self.n_samples, self.batch_size)
        stacked_fake_features = []
        self.print_fn(f'Stacking Inception features for {self.n_samples} generated samples.')
        for batch in tqdm(batches):
            fake_samples = self.sampler.sample(batch_size=batch)
            stacked_fake_features.append(self.calculate_inception_features(fake_samples).asnumpy())
        stacked_fake_features = np.concatenate(stacked_fake_features, axis=0)
        m1 = np.mean(stacked_fake_features, axis=0)
        s1 = np.cov(stacked_fake_features, rowvar=False)
        return calculate_frechet_distance(m1, s1, self.m2, self.s2)


class FIDScorer:
    """The Trainer's FID: :class:`FIDEvaluation` with the MindSpore InceptionV3 read from
    ``weights``; samples from ``trainer.ema.ema_model``, real images from ``trainer._fid_batches()``."""

    def __init__(self, weights, trainer, inception_block_idx, num_fid_samples, stats_dir):
        class _Sampler:
            def sample(self, batch_size):
                return trainer.ema.ema_model.sample(batch_size=batch_size)

        def _dl():
            while True:
                yield trainer._fid_batches()

        self.evaluation = FIDEvaluation(batch_size=trainer.batch_size, dl=_dl(), sampler=_Sampler(),
                                        channels=trainer.channels, accelerator=None, stats_dir=str(stats_dir),
                                        device='cpu', num_fid_samples=num_fid_samples,
                                        inception_block_idx=inception_block_idx, weights=weights)

    def fid_score(self):
        return self.evaluation.fid_score()
