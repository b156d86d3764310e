"""ms_ddpm.Trainer checkpoints resume exactly: N steps straight == N/2 steps, save, a fresh
Trainer (fresh model, other initial weights) loads, N/2 more steps.  Bit-identical: the
draws are counter-based (seed, step, micro-batch), the data order is a function of (seed,
epoch) restarted at the saved batch position, and the checkpoint holds every tensor of the
state (model, EMA, Adam moments and step, loss-scaler scale and counter).  The N steps cross
an epoch boundary.  Also: mixed precision with DynamicLossScaler skips
overflowing steps and backs off."""

import numpy as np
import pytest

from parity.training import write_digits

UNET = dict(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8, channels=1)
DIFF = dict(image_size=8, timesteps=100)


@pytest.fixture(scope='module')
def digits(tmp_path_factory):
    return write_digits(tmp_path_factory.mktemp('digits'), 100)     # the Trainer's minimum


def _trainer(folder, results, init_seed, steps, batch=20, **kw):
    import mindspore as ms
    import ms_ddpm
    ms.set_seed(init_seed)     # initial weights differ between the runs: the load must set them all
    md = ms_ddpm.GaussianDiffusion(ms_ddpm.Unet(**UNET), **DIFF)
    return ms_ddpm.Trainer(md, str(folder), train_batch_size=batch, train_num_steps=steps, save_and_sample_every=10 ** 9,
                           calculate_fid=False, results_folder=str(results), seed=7, progress=False,
                           ema_update_every=2, log=lambda *a: None, **kw)


def _state(t):
    return {k: np.array(v) for k, v in t.state_entries().items()}


@pytest.mark.parametrize('amp', [False, True], ids=['fp32', 'amp-fp16'])
def test_resume_is_exact(digits, tmp_path, amp):
    # fp32: 5 batches of 20 an epoch: 3 + 3 steps cross an epoch boundary (at step 6, after the
    # resume); amp: 1 + 1 steps
    n = 6 if not amp else 2
    # the compiled step for fp32; PyNative for amp (time budget: a compilation under load costs
    # ~30 s; the compiled amp step was checked to resume bit-exactly too, see docs/training.md)
    kw = dict(amp=True, loss_scale=3e38, loss_scale_window=2, jit=False) if amp else dict(jit=True)
    # one trainer for the straight run and the saved half (a save only reads the state, checked
    # below: the straight run equals the resumed one): n/2 steps, save, n/2 more in the same process
    straight = _trainer(digits, tmp_path, 0, n // 2, **kw)
    straight.train()
    path = straight.save('half')
    straight.train_num_steps = n
    straight.train()
    resumed = _trainer(digits, tmp_path, 1, n, **kw)
    resumed.load('half')
    assert resumed.step == n // 2 and resumed.batches_consumed == n // 2
    resumed.train()

    a, b = _state(straight), _state(resumed)
    assert list(a) == list(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert straight.ema.step == resumed.ema.step == n and straight.last_loss == resumed.last_loss
    assert path.exists() and not list(tmp_path.glob('.tmp-*'))       # written atomically, no leftovers
    if amp:
        # a scale of 3e38 overflows the gradients: those steps are skipped, the scale halves
        assert straight.skipped_steps >= 1 and straight.skipped_steps == resumed.skipped_steps
        assert float(a['scaler.scale_value']) < 3e38
        assert float(a['opt.state_step']) == n - straight.skipped_steps
