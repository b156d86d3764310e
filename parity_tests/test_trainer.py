"""ms_ddpm.Trainer against the reference Trainer (denoising-diffusion-pytorch 2.3.4).

One run of each, 13 steps, on scikit-learn's digits written as PNGs, with the same data order
(the MindSpore Trainer's own mindspore.dataset pipeline; the reference gets the same images
through its own Dataset, in that order, by replacing its ``dl``) and the same random draws
(times and noise: the MindSpore Trainer's counter-based draws, fed to the reference through
``reference.draws.injected_draws``).  Gradient accumulation (2 micro-batches) and gradient
clipping (max_grad_norm small enough to clip every step) are both active.

Then: checkpoint interop both ways (a MindSpore checkpoint converted to a reference one that
the reference Trainer.load()s and keeps training from, and back), each checked by training
on from the converted checkpoint in both frameworks with the same batches and draws.
"""

import numpy as np
import pytest

from parity import training
from parity.compare import assert_parity
from parity.training import Recorder, continue_both, flat_params, train_ms, write_digits

UNET = dict(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8, channels=1)
DIFF = dict(image_size=8, timesteps=100)
BATCH, ACCUM, STEPS, SEED = 8, 2, 13, 3
MAX_GRAD_NORM = 0.05      # below the measured gradient norms (~0.3-1): clipping acts every step
MORE = 2                  # steps trained on after each checkpoint conversion


N_IMAGES = 100          # 12 batches of 8 + a short one of 4: 13 an epoch.  13 steps of 2 micro-batches take
                        # 26 batches: the short one is micro-batch 0 of step 7 and 1 of step 13 (both positions)


@pytest.fixture(scope='module')
def digits(tmp_path_factory):
    return write_digits(tmp_path_factory.mktemp('digits'), N_IMAGES)


def RefRun(td, folder, results, **kw):
    return training.RefRun(td, folder, results, BATCH, ACCUM, MAX_GRAD_NORM, **kw)


def ms_trainer(folder, results, model, **kw):
    return training.ms_trainer(folder, results, model, BATCH, ACCUM, MAX_GRAD_NORM, SEED, **kw)


@pytest.fixture(scope='module')
def runs(digits, tmp_path_factory):
    """Both trainers after STEPS steps, from the same initial weights."""
    from parity.harness import build_diffusion_pair
    td, md = build_diffusion_pair(UNET, DIFF)
    res = tmp_path_factory.mktemp('results')
    (res / 'ms').mkdir()
    mt = ms_trainer(digits, res / 'ms', md)
    rec = Recorder(mt)
    ms_losses = train_ms(mt, STEPS)             # Trainer.train()'s loop, one step at a time
    (res / 'ref').mkdir()
    ref = RefRun(td, digits, res / 'ref')
    ref.train_to(STEPS, rec.batches, rec.draws)
    return dict(td=td, md=md, mt=mt, ref=ref, rec=rec, ms_losses=ms_losses, res=res)


def test_data_order_and_transforms(digits, runs):
    """The batches the MindSpore pipeline produced are the reference Dataset's images."""
    import torch
    t_ds = runs['ref'].trainer.ds
    order = runs['mt'].data_order
    first = order.epoch(0)[:BATCH]
    expected = torch.stack([t_ds[int(i)] for i in first]).numpy()
    np.testing.assert_array_equal(runs['rec'].batches[0], expected)
    # horizontal flip: the MindSpore Dataset's flip is the reference transform's flip
    import ms_ddpm
    m_ds = ms_ddpm.Dataset(digits, (8, 8), augment_horizontal_flip=True, convert_image_to='L')
    np.testing.assert_array_equal(m_ds[(5, True)], t_ds[5].numpy()[:, :, ::-1])
    np.testing.assert_array_equal(m_ds[(5, False)], t_ds[5].numpy())


def test_steps_losses_and_parameters(runs, record):
    ref, mt = runs['ref'], runs['mt']
    assert len(ref.losses) == STEPS * ACCUM and ref.trainer.step == mt.step == STEPS
    ref_step_losses = np.array(ref.losses).reshape(STEPS, ACCUM).sum(1) / ACCUM
    ms_losses = np.array(runs['ms_losses'])
    rel = np.abs(ms_losses - ref_step_losses) / np.abs(ref_step_losses)
    print(f'\nper-step loss, reference vs MindSpore, max relative difference over {STEPS} steps: {rel.max():.2e}'
          f' (first {ref_step_losses[0]:.6f}, last {ref_step_losses[-1]:.6f})')
    for i in range(STEPS):
        r = assert_parity(f'trainer loss step {i + 1}', ref_step_losses[i], ms_losses[i], 'trainer_loss')
    record(r)
    assert not np.allclose(ref_step_losses[0], ref_step_losses[1:])      # it trains

    t_params = {n: p.detach().numpy() for n, p in runs['td'].named_parameters()}
    m_params = dict(runs['md'].parameters_and_names())
    worst = None
    for name, tv in t_params.items():
        r = assert_parity(f'trainer param after {STEPS} steps {name}', tv, m_params[name].asnumpy(), 'trainer')
        worst = r if worst is None or r.rel_fro > worst.rel_fro else worst
    record(worst)
    flat_t, flat_m = flat_params(runs['td'], runs['md'])
    record(assert_parity(f'trainer all params after {STEPS} steps', flat_t, flat_m, 'trainer'))
    # the Adam moments agree too
    t_opt = ref.trainer.opt.state_dict()['state']
    names = [n for n, _ in runs['td'].named_parameters()]
    sd = mt.state_entries()
    m1 = np.concatenate([sd['opt.exp_avg.' + n].ravel() for n in names])
    t1 = np.concatenate([t_opt[i]['exp_avg'].numpy().ravel() for i in range(len(names))])
    record(assert_parity(f'trainer Adam exp_avg after {STEPS} steps (an average of gradients)', t1, m1, 'grad'))


def test_ema_state_matches_reference(runs, record):
    """The Trainer's EMA (ema_decay 0.995, update_every 10, update_after_step 100 as the
    reference): initted, step and weights, against ema_pytorch's state dict."""
    t_sd = runs['ref'].trainer.ema.state_dict()
    m_sd = runs['mt'].ema.state_dict()
    assert list(t_sd) == list(m_sd)
    assert bool(t_sd['initted']) == bool(m_sd['initted']) and int(t_sd['step']) == int(m_sd['step']) == STEPS
    flat_t = np.concatenate([t_sd[k].numpy().ravel() for k in t_sd if k.startswith('ema_model.')])
    flat_m = np.concatenate([m_sd[k].ravel() for k in t_sd if k.startswith('ema_model.')])
    record(assert_parity(f'trainer EMA weights after {STEPS} steps', flat_t, flat_m, 'trainer'))


def test_checkpoint_interop_both_ways(runs, digits, tmp_path, record):
    """MindSpore ckpt -> reference .pt -> reference Trainer.load() and on; and back:
    reference Trainer.save() -> MindSpore ckpt -> ms_ddpm Trainer.load() and on."""
    import torch
    import denoising_diffusion_pytorch as ddp
    import ms_ddpm
    from weight_convert import to_reference_trainer_checkpoint
    mt, rec = runs['mt'], runs['rec']

    # 1. MindSpore -> reference: a fresh reference Trainer (other initial weights) loads it
    ms_ckpt = mt.save('interop')
    (tmp_path / 'ref2').mkdir()
    to_reference_trainer_checkpoint(ms_ckpt, tmp_path / 'ref2' / 'model-from-ms.pt')
    torch.manual_seed(123)
    td2 = ddp.GaussianDiffusion(ddp.Unet(**UNET), **DIFF)
    ref2 = RefRun(td2, digits, tmp_path / 'ref2')
    ref2.trainer.load('from-ms')
    assert ref2.trainer.step == STEPS and int(ref2.trainer.ema.step) == STEPS
    t_state = ref2.trainer.opt.state_dict()['state']
    names = [n for n, _ in td2.named_parameters()]
    entries = mt.state_entries()
    for i, n in enumerate(names):          # moments by name: the index mapping is right
        np.testing.assert_array_equal(t_state[i]['exp_avg'].numpy(), entries['opt.exp_avg.' + n])
    continue_both(ref2, mt, MORE, rec)
    flat_t, flat_m = flat_params(td2, runs['md'])
    record(assert_parity(f'ms ckpt -> reference Trainer.load, {MORE} more steps', flat_t, flat_m, 'trainer'))

    # 2. reference -> MindSpore: the reference saves, the MindSpore Trainer loads the conversion
    (flat_t, flat_m), (ema_t, ema_m) = training.reference_to_ms_and_on(ref2, mt, td2, runs['md'], rec, tmp_path / 'ref2',
                                                                       MORE, SEED, ACCUM)
    record(assert_parity(f'reference ckpt -> ms Trainer.load, {MORE} more steps', flat_t, flat_m, 'trainer'))
    record(assert_parity('EMA after both conversions', ema_t, ema_m, 'trainer'))


# --- the short last batch of an epoch under gradient accumulation -----------------------------

def test_short_last_batch_under_accumulation(runs):
    """The reference trains on an epoch's short last batch like on any other (its loss, a mean
    over its own 4 images, divided by gradient_accumulate_every, then backward): so does
    ms_ddpm's Trainer, next to a full batch in either micro-batch position.  The 13-step run
    above crosses it twice (steps 7 and 13); its per-step losses, parameters and EMA
    weights are gated there (test_steps_losses_and_parameters, test_ema_state_matches_reference):
    here, that the run did meet the short batch in both positions, and the loss of those steps."""
    sizes = [len(b) for b in runs['rec'].batches[:STEPS * ACCUM]]
    assert len(sizes) == STEPS * ACCUM and sizes.count(4) == 2, sizes
    assert sizes[12] == sizes[25] == 4, sizes
    assert (12 % ACCUM, 25 % ACCUM) == (0, 1)           # micro-batch 0 of step 7, 1 of step 13
    ref_losses = np.array(runs['ref'].losses[:STEPS * ACCUM]).reshape(STEPS, ACCUM).sum(1) / ACCUM
    ms_losses = np.array(runs['ms_losses'])
    for step in (7, 13):
        assert_parity(f'trainer loss step {step} (a short batch in it)', ref_losses[step - 1], ms_losses[step - 1],
                      'trainer_loss')
