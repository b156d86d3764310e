"""Shared code of the Trainer parity checks: both Trainers on the same data and draws.

The MindSpore Trainer runs with its own mindspore.dataset pipeline and its counter-based
draws; :class:`Recorder` keeps every batch and draw it used, and :class:`RefRun` feeds the
reference Trainer exactly those (its ``dl`` replaced by the recorded batches, its ``randn``/
``randint``/``random`` by ``reference.draws.injected_draws``)."""

from pathlib import Path

import numpy as np

__all__ = ['write_digits', 'RefRun', 'reference_draws', 'ms_trainer', 'Recorder', 'train_ms', 'continue_both', 'flat_params']


def write_digits(folder, n):
    """scikit-learn's first ``n`` 8x8 digits as grey PNGs ``0000.png`` ... in ``folder``."""
    from PIL import Image
    from sklearn.datasets import load_digits
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(load_digits().images[:n]):
        Image.fromarray((im / 16 * 255).round().astype(np.uint8), 'L').save(folder / f'{i:04d}.png')
    return folder


class RefRun:
    """The reference Trainer, fed a given batch sequence and given draws; ``losses`` holds
    every micro-batch loss (a forward hook on the diffusion model)."""

    def __init__(self, td, folder, results, batch, accum, max_grad_norm, module=None, **kw):
        import importlib
        ref = importlib.import_module('denoising_diffusion_pytorch' + (f'.{module}' if module else ''))
        self.trainer = ref.Trainer(td, str(folder), train_batch_size=batch, gradient_accumulate_every=accum,
                                   augment_horizontal_flip=False, save_and_sample_every=10 ** 9,
                                   results_folder=str(results), **_trainer_options(module, max_grad_norm), **kw)
        self.losses = []
        td.register_forward_hook(lambda m, i, o: self.losses.append(float(o.detach())))

    def train_to(self, steps, batches, draws):
        """Train until ``steps``; ``batches``/``draws``: per micro-batch, in order (the noise,
        then the offset noise where drawn, are ``randn``; the self-conditioning coin ``random``)."""
        import torch
        from reference.draws import injected_draws
        t = self.trainer
        t.dl = iter([torch.from_numpy(b) for b in batches])
        t.train_num_steps = steps
        with injected_draws(**reference_draws(draws)):
            t.train()


def reference_draws(draws):
    """``injected_draws`` keywords for the reference of the MindSpore Trainer's ``draws`` (per
    micro-batch, in order; ``ms_ddpm.training.draws``): ElucidatedDiffusion's sigma ``randn``
    before the noise; integer times are ``randint``, continuous ones ``uniform_``; the noise,
    then the offset noise, ``randn``; the self-conditioning coin ``random``.  (XMWrapper: its
    flow model's draws, the noise of all candidates in one chunk.)"""
    randn = [x for d in draws for x in ([d['sigma_randn']] if 'sigma_randn' in d else []) + [d['noise']]
             + ([d['offset_noise']] if 'offset_noise' in d else [])]
    times = [d['times'] for d in draws if 'sigma_randn' not in d]
    return dict(randn=randn, coins=[float(d['coin']) for d in draws if 'coin' in d],
                randint=[x for x in times if np.issubdtype(np.asarray(x).dtype, np.integer)],
                uniform=[x for x in times if np.issubdtype(np.asarray(x).dtype, np.floating)])


def _trainer_options(module, max_grad_norm):
    """guided_diffusion's (older) Trainer has no ``max_grad_norm`` (it clips at 1.0) and no FID."""
    if module == 'guided_diffusion':
        assert max_grad_norm == 1., 'the guided_diffusion Trainer clips at 1.0'
        return {}
    return dict(max_grad_norm=max_grad_norm, calculate_fid=False)


def ms_trainer(folder, results, model, batch, accum, max_grad_norm, seed, module=None, **kw):
    """The ms_ddpm Trainer (``module``'s: ``ms_ddpm.<module>.Trainer``) configured as
    :class:`RefRun`'s reference Trainer."""
    import importlib
    twin = importlib.import_module('ms_ddpm' + (f'.{module}' if module else ''))
    return twin.Trainer(model, str(folder), train_batch_size=batch, gradient_accumulate_every=accum,
                        augment_horizontal_flip=False, save_and_sample_every=10 ** 9, results_folder=str(results),
                        seed=seed, progress=False, log=lambda *a: None, **_trainer_options(module, max_grad_norm), **kw)


class Recorder:
    """Wraps the MindSpore Trainer's batch iterator and draws to hand the same ones to the reference."""

    def __init__(self, trainer):
        self.trainer, self.batches, self.draws = trainer, [], []
        self.wrap_dl()
        draws = trainer._draws

        def rec(step, micro, shape):
            d = draws(step, micro, shape)
            self.draws.append(d)
            return d
        trainer._draws = rec

    def wrap_dl(self):
        """(Again after ``Trainer.load``, which reopens the pipeline.)"""
        inner = self.trainer.dl

        def gen():
            for b in inner:
                self.batches.append(np.array(b))
                yield b
        self.trainer.dl = gen()


def train_ms(mt, steps):
    """``Trainer.train()``'s loop, one step at a time: the step losses."""
    losses = []
    for _ in range(steps):
        losses.append(mt.train_step())
        mt.step += 1
        mt.ema.update()
    return losses


def continue_both(ref, mt, steps, rec):
    """Train both ``steps`` more steps on the MindSpore Trainer's batches and draws."""
    n0b, n0d = len(rec.batches), len(rec.draws)
    train_ms(mt, steps)
    ref.train_to(ref.trainer.step + steps, rec.batches[n0b:], rec.draws[n0d:])


def reference_to_ms_and_on(ref, mt, td, md, rec, folder, more, seed, accum):
    """Checkpoint interop, reference -> MindSpore: ``ref`` (a :class:`RefRun`) saves, the MindSpore
    Trainer ``mt`` (its weights scrambled first: the load must restore everything) loads the
    conversion (``weight_convert.from_reference_trainer_checkpoint``), then both train ``more``
    steps.  Returns ((reference, MindSpore) parameters flattened, (reference, MindSpore) EMA
    weights flattened), the step counts checked."""
    from weight_convert import from_reference_trainer_checkpoint
    ref.trainer.save('back')
    step_before = mt.step
    for p in md.trainable_params():
        p.set_data(p * 0 + 1)
    from_reference_trainer_checkpoint(Path(folder) / 'model-back.pt', Path(folder) / 'back.ckpt', seed=seed,
                                      gradient_accumulate_every=accum)
    mt.load(str(Path(folder) / 'back.ckpt'))
    rec.wrap_dl()                               # load() reopened the pipeline at the saved position
    assert mt.step == step_before
    continue_both(ref, mt, more, rec)
    t_sd, m_sd = ref.trainer.ema.state_dict(), mt.ema.state_dict()
    assert int(t_sd['step']) == int(m_sd['step']) == step_before + more
    keys = [k for k in t_sd if k.startswith('ema_model.')]
    ema = (np.concatenate([t_sd[k].numpy().ravel() for k in keys]),
           np.concatenate([np.asarray(m_sd[k]).ravel() for k in keys]))
    return flat_params(td, md), ema


def flat_params(td, md):
    """(reference, MindSpore) parameters, flattened in the reference's order."""
    t_params = {n: p.detach().numpy() for n, p in td.named_parameters()}
    m_params = dict(md.parameters_and_names())
    return (np.concatenate([v.ravel() for v in t_params.values()]),
            np.concatenate([m_params[n].asnumpy().ravel() for n in t_params]))
