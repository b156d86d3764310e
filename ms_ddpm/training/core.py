"""``TrainerCore``: what every Trainer twin (``Trainer``, ``Trainer1D``, the guided and
RePaint Trainers) does the same way, so that a twin's own class keeps only what its
reference class spells out (its arguments, its dataset, its ``train`` loop, ``save``/``load``).

A twin calls, in its ``__init__``: :meth:`_init_data` (data order, pipeline, data parallel),
:meth:`_init_optimizer` (Adam), :meth:`_init_amp` (mixed precision + loss scaler),
:meth:`_init_train_step` (the compiled step), optionally :meth:`_init_fid`; then
:meth:`train_step` is one optimiser step, :meth:`state_entries`/:meth:`state_meta`/
:meth:`load_state` the checkpoint state.

Attributes the twin sets itself: ``model``, ``ema``, ``batch_size``,
``gradient_accumulate_every``, ``max_grad_norm``, ``results_folder``, ``step``, ``seed``,
``jit``, ``log``, ``draws`` (the injected draws or None).
"""

from pathlib import Path

import numpy as np
import mindspore as ms

from ms_ddpm.training.checkpoint import (
    TRAINER_CKPT_FORMAT, TRAINER_CKPT_VERSION, load_state_entries, read_trainer_checkpoint, state_entries,
    write_trainer_checkpoint,
)
from ms_ddpm.training.data import Batches, DataOrder, distributed
from ms_ddpm.training.draws import (
    GAUSSIAN, draws_for, extra_keys, forward_kwargs, process_draws, share_of, spec_for, uses_offset_coin,
)
from ms_ddpm.training.fid import FIDScorer, fid_weights_path
from ms_ddpm.training.step import Adam, TrainStep

__all__ = ['TrainerCore']


def _exists(x):
    return x is not None


class TrainerCore:

    # --- set-up (called from the twin's __init__) ---------------------------------------

    def _init_data(self, ds, batch_size, seed, flip, num_workers = 1, batches = None, flip_aware = True):
        """``ds``'s seeded order and its mindspore.dataset pipeline (``batches``: an iterator
        of NumPy batches replacing it).  Data parallel (msrun + ``mindspore.communication.init()``):
        each process takes its share of every batch and of its draws; gradients are
        all-reduced in the train step."""
        self.ds = ds
        self.data_order = DataOrder(len(ds), batch_size, int(seed), flip)
        self.num_workers = num_workers
        self._external_batches = batches
        self._flip_aware = flip_aware
        self.batches_consumed = 0
        self.rank, self.world_size = distributed()
        self.is_main_process = self.rank == 0
        self.dl = batches if _exists(batches) else self._open_batches()

    def _open_batches(self):
        return Batches(self.ds, self.data_order, self.batches_consumed, self.num_workers, self.rank, self.world_size,
                       self._flip_aware)

    def _init_optimizer(self, model, train_lr, adam_betas):
        """torch.optim.Adam's update over the model's trainable parameters."""
        self.params = tuple(model.trainable_params())
        self.train_lr, self.adam_betas = train_lr, tuple(adam_betas)
        self.opt = Adam(self.params, lr = train_lr, betas = adam_betas)

    def _init_amp(self, amp, mixed_precision_type, loss_scale, loss_scale_factor, loss_scale_window):
        """MindSpore's auto mixed precision + ``DynamicLossScaler`` (torch's GradScaler)."""
        self.amp = amp
        self.mixed_precision_type = mixed_precision_type
        self.train_model = self.model
        self.scaler = None
        if amp:
            from mindspore.amp import DynamicLossScaler, auto_mixed_precision
            dtypes = {'fp16': ms.float16, 'bf16': ms.bfloat16}
            assert mixed_precision_type in dtypes, f'mixed_precision_type must be one of {sorted(dtypes)}'
            self.train_model = auto_mixed_precision(self.model, amp_level = 'auto', dtype = dtypes[mixed_precision_type])
            self.scaler = DynamicLossScaler(scale_value = loss_scale, scale_factor = loss_scale_factor, scale_window = loss_scale_window)
            self.scaler.scale_value.name = 'scaler.scale_value'
            self.scaler.counter.name = 'scaler.counter'

    def _init_train_step(self):
        # GaussianDiffusion (and the twins built on TrainerCore for it) keep its positional
        # forward; the other processes (issue 13) are called with their draws by keyword
        spec, self._candidates = self._process_spec()
        call_for = None if spec is GAUSSIAN and self._candidates == 1 else (lambda o, c: forward_kwargs(spec, o, c))
        self._batch_kwargs = tuple(spec.batch_kwargs)      # e.g. ('classes',): the batch's labels
        self._train_steps = TrainStep(self.train_model, self.opt, self.params, self.max_grad_norm, self.scaler,
                                      self.world_size, self.jit, call_for, extra_keys(spec))
        self._steps = self._train_steps.steps
        self.skipped_steps = 0
        self.last_grad_norm = None

    def _init_fid(self, calculate_fid, fid_weights, is_ddim_sampling, inception_block_idx, num_fid_samples, stats_dir):
        """FID needs local InceptionV3 weights (the reference downloads them): without them
        it is reported and switched off."""
        self.calculate_fid = calculate_fid
        self.fid_scorer = None
        if calculate_fid:
            if not is_ddim_sampling:
                self.log("WARNING: Robust FID computation requires a lot of generated samples and can therefore be very time consuming."
                         "Consider using DDIM sampling to save time.")
            weights, why = fid_weights_path(fid_weights)
            if weights is None:
                self.log(why)
                self.calculate_fid = False
            else:
                self.fid_scorer = FIDScorer(weights, self, inception_block_idx, num_fid_samples, stats_dir)

    @property
    def device(self):
        return ms.get_context('device_target')

    # --- one optimiser step -------------------------------------------------------------

    def _process_spec(self):
        """(how the model draws, candidates): ``ms_ddpm.training.draws.PROCESS_DRAWS``; a model
        of no listed process (the 1D, guided, RePaint twins' GaussianDiffusion-likes) draws as
        GaussianDiffusion."""
        try:
            return spec_for(self.model)
        except TypeError:
            return GAUSSIAN, 1

    def _uses_offset_coin(self):
        return uses_offset_coin(self.model, self._process_spec()[0])

    def _draws(self, step, micro, shape):
        md = self.model
        if _exists(self.draws):
            return self.draws(step, micro, shape)
        spec, k = self._process_spec()
        if spec is GAUSSIAN and k == 1:
            return draws_for(self.seed, step, micro, shape, md.num_timesteps,
                             offset = getattr(md, 'offset_noise_strength', 0.) > 0., coin = md.self_condition)
        return process_draws(md, self.seed, step, micro, shape)

    def _train_step_fn(self, accum, offset, coin):
        return self._train_steps.fn(accum, offset, coin)

    def train_step(self):
        """One optimiser step over ``gradient_accumulate_every`` batches (the short last batch of
        an epoch included: each micro-batch's loss is the mean over its own batch, divided by
        the accumulation, as the reference); returns the loss (the sum of the micro-batch
        losses / accumulation, as the reference's ``total_loss``)."""
        md = self.model
        batches, bounds, labels = [], [], []
        batch_kwargs = getattr(self, '_batch_kwargs', ())
        for _ in range(self.gradient_accumulate_every):
            item = next(self.dl)
            if batch_kwargs:            # (images, labels...): the labels go to the forward by keyword
                item, rest = item[0], item[1:]
                labels.append(dict(zip(batch_kwargs, (np.asarray(v).astype(np.int64) for v in rest))))
            batches.append(np.asarray(item, dtype = np.float32))
            last = getattr(self.dl, 'last', None)
            bounds.append(last if _exists(last) else (0, len(batches[-1]), len(batches[-1])))
        self.batches_consumed += len(batches)
        offset, coin = self._uses_offset_coin()
        draws = []
        for a, (batch, (lo, hi, g)) in enumerate(zip(batches, bounds)):
            d = self._draws(self.step, a, (g,) + batch.shape[1:])      # the whole batch's draws ...
            draws.append(share_of(d, lo, hi, self._candidates))        # ... my share
            if batch_kwargs:
                draws[-1].update(labels[a])                              # already my share
        loss, self.last_grad_norm, finite = self._train_steps(batches, draws, bounds, offset, coin)
        if not finite:
            self.skipped_steps += 1
        return loss

    # --- sampling -----------------------------------------------------------------------

    def sample_images(self, n, seed = None, ema = True, return_all_timesteps = False):
        """``n`` samples (NumPy, [0, 1]) from the EMA (or online) model in batches of
        ``train_batch_size``, as the reference's milestone sampling."""
        model = self.ema.ema_model if ema else self.model
        model.set_train(False)
        if _exists(seed):
            ms.set_seed(int(seed) % (2 ** 31))
        groups = [self.batch_size] * (n // self.batch_size) + ([n % self.batch_size] if n % self.batch_size else [])
        # the continuous-time and Elucidated processes' sample() takes no return_all_timesteps
        kw = dict(return_all_timesteps = True) if return_all_timesteps else {}
        out = [model.sample(batch_size = b, **kw).asnumpy() for b in groups]
        self.model.set_train(True)
        return np.concatenate(out, axis = 0)

    def _fid_batches(self):
        return next(self.dl)

    # --- checkpoints --------------------------------------------------------------------

    def state_entries(self):
        """Every tensor of the training state, by name (see ``ms_ddpm.training.checkpoint``)."""
        return state_entries(self.model, self.ema, self.opt, self.params, self.scaler)

    def state_meta(self):
        from ms_ddpm.version import __version__, REFERENCE_VERSION
        return dict(format = TRAINER_CKPT_FORMAT, format_version = TRAINER_CKPT_VERSION,
                    step = self.step, batches_consumed = self.batches_consumed, seed = self.seed,
                    ema_initted = bool(self.ema.initted), ema_step = int(self.ema.step),
                    skipped_steps = self.skipped_steps, version = __version__, reference_version = REFERENCE_VERSION,
                    train_lr = self.train_lr, adam_betas = list(self.adam_betas), amp = bool(self.amp),
                    best_fid = getattr(self, 'best_fid', None),
                    config = getattr(self.model, 'ms_ddpm_config', None))

    def checkpoint_path(self, milestone):
        return Path(self.results_folder) / f'model-{milestone}.ckpt'

    def write_checkpoint(self, milestone):
        """``results_folder/model-{milestone}.ckpt`` (MindSpore checkpoint, written atomically):
        ``online_model.*`` (the model), ``ema_model.*``, ``opt.exp_avg.*``/``opt.exp_avg_sq.*``/
        ``opt.state_step``, ``scaler.*`` (amp), and a JSON ``trainer_meta`` string (step, data
        position, seed, EMA initted/step, versions).  The draws are counter-based, so step,
        seed and data position are the whole RNG state."""
        path = self.checkpoint_path(milestone)
        write_trainer_checkpoint(path, self.state_entries(), self.state_meta())
        return path

    def read_checkpoint(self, milestone):
        """Load ``model-{milestone}.ckpt`` (or a ``.ckpt`` path); returns its meta."""
        path = milestone if str(milestone).endswith('.ckpt') else self.checkpoint_path(milestone)
        entries, meta = read_trainer_checkpoint(path)
        self.load_state(entries, meta)
        return meta

    def load_state(self, entries, meta):
        # a graph compiled before the load keeps its own copy of every parameter's data on
        # MindSpore 2.8 (after set_data and ops.assign alike; measured: 1e-3 off after 2 steps),
        # so the train step and EMA updates recompile, and the Adam update (compiled on its own,
        # ms.jit on the Cell, also under PyNative) is a fresh instance: a PyNative Trainer that
        # trained, then loaded, otherwise stepped on its pre-load weights (4.9e-4 off after 1 step)
        self.opt = self._train_steps.opt = Adam(self.params, lr = self.opt.lr, betas = (self.opt.beta1, self.opt.beta2),
                                                eps = self.opt.eps)
        load_state_entries(entries, meta, self.model, self.ema, self.opt, self.params, self.scaler)
        self._train_steps.steps.clear()
        self.ema._updaters.clear()
        self.step = int(meta['step'])
        self.skipped_steps = int(meta.get('skipped_steps', 0))
        if meta.get('best_fid') is not None:
            self.best_fid = meta['best_fid']
        self.batches_consumed = int(meta.get('batches_consumed', self.step * self.gradient_accumulate_every))
        if int(meta.get('seed', self.seed)) != self.seed:
            self.log(f"note: the checkpoint was trained with seed {meta['seed']}; continuing with its seed")
            self.seed = int(meta['seed'])
            self.data_order = DataOrder(len(self.ds), self.batch_size, self.seed, self.data_order.flip)
        if not _exists(self._external_batches):
            self.dl = self._open_batches()
        return self
