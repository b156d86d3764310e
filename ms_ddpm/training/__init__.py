"""Layer (b): the training machinery every Trainer twin shares.

- ``data``: the seeded, restartable data order (``DataOrder``), the mindspore.dataset
  pipeline (``Batches``), data-parallel sharding;
- ``draws``: the counter-based random draws of a training step (``draws_for``);
- ``step``: torch's ``Adam`` and ``clip_grad_norm_``, the compiled train step (``TrainStep``);
- ``checkpoint``: ms_ddpm Trainer checkpoints (``write_trainer_checkpoint``,
  ``read_trainer_checkpoint``);
- ``fid``: the FID scorer (local InceptionV3 weights only);
- ``core``: ``TrainerCore``, the base class of the Trainer twins.
"""

from ms_ddpm.training.checkpoint import (
    TRAINER_CKPT_FORMAT, TRAINER_CKPT_VERSION, read_trainer_checkpoint, write_trainer_checkpoint,
)
from ms_ddpm.training.core import TrainerCore
from ms_ddpm.training.data import Batches, DataOrder
from ms_ddpm.training.draws import draws_for
from ms_ddpm.training.step import Adam, TrainStep, clip_grad_norm_, grad_global_norm
