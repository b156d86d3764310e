"""Twin of the reference's ``denoising_diffusion_pytorch/fid_evaluation.py``: ``num_to_groups``
and ``FIDEvaluation``, with pytorch-fid's ``InceptionV3`` and ``calculate_frechet_distance``
(which the reference imports from pytorch-fid) as MindSpore twins.

The code lives in ``ms_ddpm.training.fid``: the Trainer twins need it, and the layers contract
(docs/architecture.md) keeps twin modules from importing each other, so the machinery sits one
layer down and this module re-exports it under the reference's names.  ``InceptionV3`` and
``FIDEvaluation`` take ``weights=PATH``, a local ``.ckpt``/``.safetensors`` of the FID Inception
state dict (``ms-ddpm convert pt_inception-2015-12-05-6726825d.pth inception.ckpt``); nothing is
ever downloaded.  The reference's ``__init__`` does not export these, nor does ``ms_ddpm``'s.
"""

from ms_ddpm.training.fid import (
    num_to_groups,
    FIDEvaluation,
    InceptionV3,
    FIDInceptionA,
    FIDInceptionC,
    FIDInceptionE_1,
    FIDInceptionE_2,
    calculate_frechet_distance,
    inception_state_dict_from_torchvision,
    load_inception_weights,
)

__all__ = ['num_to_groups', 'FIDEvaluation', 'InceptionV3', 'FIDInceptionA', 'FIDInceptionC', 'FIDInceptionE_1',
           'FIDInceptionE_2', 'calculate_frechet_distance', 'inception_state_dict_from_torchvision',
           'load_inception_weights']
