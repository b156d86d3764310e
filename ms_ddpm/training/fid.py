"""FID as the reference computes it (pytorch-fid's InceptionV3, the reference's
``FIDEvaluation``), fed with MindSpore samples.  Needs torch + pytorch-fid and a local
weights file: the reference downloads it, ms_ddpm never does."""

import os

import numpy as np

__all__ = ['FID_WEIGHTS_ENV', 'fid_weights_path', 'FIDScorer']

FID_WEIGHTS_ENV = 'MS_DDPM_FID_WEIGHTS'


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


class FIDScorer:
    """The reference's ``FIDEvaluation`` with the weights read from ``weights``; samples from
    ``trainer.ema.ema_model``, real images from ``trainer._fid_batches()``."""

    def __init__(self, weights, trainer, inception_block_idx, num_fid_samples, stats_dir):
        import torch
        import pytorch_fid.inception as pfi
        from denoising_diffusion_pytorch.fid_evaluation import FIDEvaluation
        local = torch.load(weights, map_location = 'cpu', weights_only = True)
        saved = pfi.load_state_dict_from_url
        pfi.load_state_dict_from_url = lambda *a, **k: local
        try:
            class _Sampler:
                def sample(self, batch_size):
                    return torch.from_numpy(trainer.ema.ema_model.sample(batch_size = batch_size).asnumpy())

            def _dl():
                while True:
                    yield torch.from_numpy(np.asarray(trainer._fid_batches()))

            self.evaluation = FIDEvaluation(batch_size = trainer.batch_size, dl = _dl(), sampler = _Sampler(),
                                            channels = trainer.channels, accelerator = None, stats_dir = str(stats_dir),
                                            device = 'cpu', num_fid_samples = num_fid_samples,
                                            inception_block_idx = inception_block_idx)
        finally:
            pfi.load_state_dict_from_url = saved

    def fid_score(self):
        return self.evaluation.fid_score()
