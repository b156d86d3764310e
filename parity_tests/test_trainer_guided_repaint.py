"""The Trainers of guided_diffusion (the reference's older one: clips at 1.0, no FID, ``fp16``)
and repaint (the main module's) against the reference's, each around its own module's
GaussianDiffusion / Unet (issue 14).

One short run each (STEPS optimiser steps of ACCUM micro-batches), same initial weights, same
batches (the MindSpore Trainer's pipeline, fed to the reference's ``dl``) and draws (the
MindSpore Trainer's, ``ms_ddpm.training.draws.PROCESS_DRAWS`` rows
``guided_diffusion.GaussianDiffusion`` / ``repaint.GaussianDiffusion``: their forwards draw
their own ``t``; self-conditioning coins, repaint's offset noise), fed to the reference through
``reference.draws.injected_draws``: per-step losses, the parameters and the EMA weights.  Then
checkpoint interop both ways, each checked by training on in both frameworks: a MindSpore
checkpoint converted (``weight_convert.to_reference_trainer_checkpoint``) and ``load``ed by
the reference's Trainer of that module, and the reference's ``save`` converted back
(``from_reference_trainer_checkpoint``) and ``load``ed by the twin's.  guided: the compiled
(GRAPH) train step; repaint: PyNative.
"""

import numpy as np
import pytest

from parity.cases import Case
from parity.compare import assert_parity
from parity.harness import build_pair
from parity.training import (RefRun, Recorder, continue_both, flat_params, ms_trainer, reference_to_ms_and_on,
                             train_ms, write_digits)

BATCH, ACCUM, STEPS, MORE, SEED = 8, 2, 2, 1, 7     # repaint's reference Trainer wants batch x accum >= 16
MAX_GRAD_NORM = 1.                                   # guided's Trainer clips at 1.0 (no option)
DIFF = dict(image_size=8, timesteps=10)
# id -> (module, Unet kwargs, GaussianDiffusion kwargs, compiled train step)
RUNS = {
    'guided': ('guided_diffusion', dict(dim=8, dim_mults=(1, 2), channels=1, self_condition=True), DIFF, True),
    'repaint': ('repaint', dict(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8, channels=1,
                                self_condition=True), dict(DIFF, offset_noise_strength=0.1), False),
}


@pytest.fixture(scope='module')
def digits(tmp_path_factory):
    return write_digits(tmp_path_factory.mktemp('digits'), 100)     # repaint's reference Trainer wants >= 100


def _pair(rid):
    module, net, kw, _ = RUNS[rid]
    return build_pair(Case(f'trainer/{rid}', module, 'GaussianDiffusion', 'adhoc', kwargs=kw, net_module=module,
                           net_cls='Unet', net_kwargs=net))


@pytest.fixture(scope='module', params=list(RUNS))
def run(request, digits, tmp_path_factory):
    rid = request.param
    module, jit = RUNS[rid][0], RUNS[rid][3]
    td, md = _pair(rid)
    res = tmp_path_factory.mktemp(f'results-{rid}')
    (res / 'ms').mkdir()
    (res / 'ref').mkdir()
    mt = ms_trainer(digits, res / 'ms', md, BATCH, ACCUM, MAX_GRAD_NORM, SEED, module=module, jit=jit)
    rec = Recorder(mt)
    ms_losses = train_ms(mt, STEPS)
    ref = RefRun(td, digits, res / 'ref', BATCH, ACCUM, MAX_GRAD_NORM, module=module)
    ref.train_to(STEPS, rec.batches, rec.draws)
    return dict(rid=rid, module=module, td=td, md=md, mt=mt, ref=ref, rec=rec, ms_losses=np.array(ms_losses), res=res)


def test_the_trainer_is_the_modules(run):
    import importlib
    twin = importlib.import_module(f"ms_ddpm.{run['module']}")
    assert type(run['mt']) is twin.Trainer and type(run['mt'].model).__module__ == twin.__name__
    draws = run['rec'].draws
    assert len(draws) == STEPS * ACCUM and all('coin' in d for d in draws)
    assert all(('offset_noise' in d) == (run['rid'] == 'repaint') for d in draws)


def test_losses_parameters_and_ema(run, record):
    rid, ref, mt = run['rid'], run['ref'], run['mt']
    assert ref.trainer.step == STEPS and len(ref.losses) == STEPS * ACCUM
    ref_losses = np.array(ref.losses).reshape(STEPS, ACCUM).sum(1) / ACCUM
    for i in range(STEPS):
        r = assert_parity(f'trainer[{rid}] loss step {i + 1}', ref_losses[i], run['ms_losses'][i], 'trainer_loss')
    record(r)
    assert not np.allclose(ref_losses[0], ref_losses[1:])
    flat_t, flat_m = flat_params(run['td'], run['md'])
    record(assert_parity(f'trainer[{rid}] all params after {STEPS} steps', flat_t, flat_m, 'trainer'))
    t_sd, m_sd = ref.trainer.ema.state_dict(), mt.ema.state_dict()
    keys = [k for k in t_sd if k.startswith('ema_model.')]
    assert set(keys) <= set(m_sd), sorted(set(keys) - set(m_sd))
    assert int(t_sd['step']) == int(m_sd['step']) == STEPS
    flat_t = np.concatenate([t_sd[k].numpy().ravel() for k in keys])
    flat_m = np.concatenate([np.asarray(m_sd[k]).ravel() for k in keys])
    record(assert_parity(f'trainer[{rid}] EMA weights after {STEPS} steps', flat_t, flat_m, 'trainer'))


def test_checkpoint_interop_both_ways(run, digits, tmp_path, record, monkeypatch):
    import torch
    from reference.upstream_fixes import fix_targets
    from weight_convert import to_reference_trainer_checkpoint
    rid, module, mt, rec = run['rid'], run['module'], run['mt'], run['rec']
    if module == 'guided_diffusion':    # the reference's save() raises NameError (__version__ never imported)
        for obj, attr, value in fix_targets('guided_trainer_version'):
            monkeypatch.setattr(obj, attr, value, raising=False)

    # 1. MindSpore -> the reference Trainer of the module (a fresh one, other initial weights)
    ms_ckpt = mt.save('interop')
    (tmp_path / 'ref2').mkdir()
    to_reference_trainer_checkpoint(ms_ckpt, tmp_path / 'ref2' / 'model-from-ms.pt')
    torch.manual_seed(123)
    td2, _ = _pair(rid)
    ref2 = RefRun(td2, digits, tmp_path / 'ref2', BATCH, ACCUM, MAX_GRAD_NORM, module=module)
    ref2.trainer.load('from-ms')
    assert ref2.trainer.step == STEPS and int(ref2.trainer.ema.step) == STEPS
    continue_both(ref2, mt, MORE, rec)
    flat_t, flat_m = flat_params(td2, run['md'])
    record(assert_parity(f'trainer[{rid}] ms ckpt -> reference Trainer.load, {MORE} more', flat_t, flat_m, 'trainer'))

    # 2. the reference saves; the twin's Trainer loads the conversion (its own weights scrambled)
    (flat_t, flat_m), (ema_t, ema_m) = reference_to_ms_and_on(ref2, mt, td2, run['md'], rec, tmp_path / 'ref2', MORE,
                                                              SEED, ACCUM)
    record(assert_parity(f'trainer[{rid}] reference ckpt -> ms Trainer.load, {MORE} more', flat_t, flat_m, 'trainer'))
    record(assert_parity(f'trainer[{rid}] EMA after both conversions', ema_t, ema_m, 'trainer'))
