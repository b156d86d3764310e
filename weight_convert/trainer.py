"""The reference Trainer's checkpoints (``Trainer.save``: ``{'step', 'model', 'opt', 'ema',
'scaler', 'version'}``, a ``torch.save`` file), built here and nowhere else.

- :func:`trainer_checkpoint`: the one builder of that dict (``Entry`` tensors, for
  :func:`weight_convert.torchfile.write_torch`): model weights, EMA state, Adam state,
  loss-scaler state;
- :func:`to_reference_trainer_checkpoint`: an ms_ddpm ``Trainer.save`` ``.ckpt`` -> a ``.pt``
  the reference ``Trainer.load`` resumes from;
- :func:`from_reference_trainer_checkpoint`: the other way.

The mapping: ``model`` is the GaussianDiffusion state dict; ``opt`` a ``torch.optim.Adam``
state dict whose parameters are numbered by index in ``model.parameters()`` order -- torch
numbers *every* parameter (frozen ones too, e.g. random Fourier features), in state-dict
order without the buffers; ``ema``: ``{initted, step, online_model.*, ema_model.*}``;
``scaler``: accelerate's GradScaler state (amp) or None.  MindSpore parameter names are the
torch keys, so only the optimiser's index <-> name mapping needs care.
"""

import os
from collections import OrderedDict

import numpy as np

from ms_ddpm.io.atomic import AtomicFile
from ms_ddpm.io.checkpoint import Entry
from ms_ddpm.training.checkpoint import (
    TRAINER_CKPT_FORMAT, TRAINER_CKPT_VERSION, read_trainer_checkpoint, write_trainer_checkpoint,
)
from weight_convert.rules import DIFFUSION_BUFFERS, EMA_PREFIX, ONLINE_PREFIX, TRAINER_ADAM_GROUP, XM_PREFIX

__all__ = ['trainer_checkpoint', 'to_reference_trainer_checkpoint', 'from_reference_trainer_checkpoint',
           'torch_param_names']


def torch_param_names(model_keys):
    """The names of ``GaussianDiffusion.parameters()`` in order (Adam's parameter indices)."""
    return [k for k in model_keys if k not in DIFFUSION_BUFFERS
            and not (k.startswith(XM_PREFIX) and k[len(XM_PREFIX):] in DIFFUSION_BUFFERS)]   # XMWrapper's process


_torch_param_names = torch_param_names     # the old name


def _entry(a):
    return a if isinstance(a, Entry) else Entry.from_numpy(np.ascontiguousarray(a))


def trainer_checkpoint(entries, cfg = None, step = 0, lr = None, betas = None, version = None, *,
                       ema_entries = None, ema_step = None, ema_initted = True, adam = None, scaler = None):
    """A reference ``Trainer.save`` dict.  ``entries``: GaussianDiffusion weights (name ->
    Entry or array); ``ema_entries``: the EMA weights (default: ``entries``, stored once);
    ``ema_step`` (default ``step``), ``ema_initted``; ``adam``: ``(state_step, {name:
    (exp_avg, exp_avg_sq)})`` (default: a fresh Adam, no moments); ``lr``/``betas``: the
    parameter group's (default the reference Trainer's); ``scaler``: a GradScaler state dict
    or None; ``version``: default the reference version.  ``cfg`` is accepted and unused
    (the converter's call)."""
    from ms_ddpm.version import REFERENCE_VERSION
    model = OrderedDict((k, _entry(v)) for k, v in entries.items())
    params = torch_param_names(model)
    group = dict(TRAINER_ADAM_GROUP, params = list(range(len(params))))
    if lr is not None:
        group['lr'] = lr
    if betas is not None:
        group['betas'] = tuple(betas)
    state = {}
    if adam is not None and float(adam[0]) > 0:
        state_step, moments = adam
        for i, name in enumerate(params):
            if name in moments:
                m, v = moments[name]
                state[i] = {'step': Entry(np.array(float(state_step), np.float32), 'float32'),
                            'exp_avg': _entry(m), 'exp_avg_sq': _entry(v)}
    ema_model = model if ema_entries is None else OrderedDict((k, _entry(v)) for k, v in ema_entries.items())
    ema = OrderedDict([('initted', Entry(np.array(bool(ema_initted)), 'bool')),
                       ('step', Entry(np.array(int(step if ema_step is None else ema_step), np.int64), 'int64'))])
    ema.update((ONLINE_PREFIX + k, v) for k, v in model.items())
    ema.update((EMA_PREFIX + k, v) for k, v in ema_model.items())
    return {'step': int(step), 'model': model, 'opt': {'state': state, 'param_groups': [group]}, 'ema': ema,
            'scaler': scaler, 'version': version or REFERENCE_VERSION}


def _pick(entries, prefix):
    return OrderedDict((k[len(prefix):], v) for k, v in entries.items() if k.startswith(prefix))


def to_reference_trainer_checkpoint(src, dst, scale_window = 2000, scale_factor = 2):
    """ms_ddpm ``Trainer.save`` .ckpt -> a reference ``Trainer.save`` .pt (written atomically,
    without torch) that the reference ``Trainer.load`` resumes from: model, EMA (initted, step,
    online and EMA weights), Adam moments and step, loss-scaler state (amp), step, version."""
    from weight_convert.torchfile import write_torch
    entries, meta = read_trainer_checkpoint(src)
    model = _pick(entries, 'online_model.')
    m_sd, v_sd = _pick(entries, 'opt.exp_avg.'), _pick(entries, 'opt.exp_avg_sq.')
    moments = {k: (m_sd[k], v_sd[k]) for k in m_sd if k in v_sd}
    scaler = None
    if 'scaler.scale_value' in entries:
        scaler = {'scale': float(np.asarray(entries['scaler.scale_value'])), 'growth_factor': float(scale_factor),
                  'backoff_factor': 1. / scale_factor, 'growth_interval': int(scale_window),
                  '_growth_tracker': int(np.asarray(entries['scaler.counter']))}
    data = trainer_checkpoint(model, step = int(meta['step']), lr = meta.get('train_lr', 1e-4),
                              betas = meta.get('adam_betas', (0.9, 0.99)), version = meta.get('reference_version'),
                              ema_entries = _pick(entries, 'ema_model.'), ema_step = int(meta['ema_step']),
                              ema_initted = bool(meta['ema_initted']),
                              adam = (float(np.asarray(entries['opt.state_step'])), moments), scaler = scaler)
    with AtomicFile(dst) as out:
        write_torch(data, out.file)
    return dst


def from_reference_trainer_checkpoint(src, dst, seed = 0, gradient_accumulate_every = 1):
    """A reference ``Trainer.save`` .pt -> an ms_ddpm Trainer .ckpt (atomic) that
    ``Trainer.load`` resumes from.  Read with ``torch.load(weights_only=True)``.  The
    reference's data order and draws come from torch's global RNG, which its checkpoint does
    not hold: the MindSpore run continues with ``seed``'s order from the same position."""
    from weight_convert.formats import load_torch_file
    from ms_ddpm.version import __version__, REFERENCE_VERSION
    data = load_torch_file(str(src))
    n = lambda v: v.detach().cpu().numpy() if hasattr(v, 'detach') else np.asarray(v)
    entries = OrderedDict(('online_model.' + k, n(v)) for k, v in data['model'].items())
    entries.update((k, n(v)) for k, v in data['ema'].items() if k.startswith('ema_model.'))
    names = torch_param_names(data['model'])
    state = data['opt']['state']
    steps = {float(n(s['step'])) for s in state.values()}
    if len(steps) > 1:
        raise ValueError(f'{src}: Adam steps differ between parameters ({sorted(steps)}); the ms_ddpm Adam keeps one step')
    for i, name in enumerate(names):
        if i in state:
            entries['opt.exp_avg.' + name] = n(state[i]['exp_avg'])
            entries['opt.exp_avg_sq.' + name] = n(state[i]['exp_avg_sq'])
        elif data['model'][name].dtype.is_floating_point:
            entries['opt.exp_avg.' + name] = np.zeros(tuple(data['model'][name].shape), np.float32)
            entries['opt.exp_avg_sq.' + name] = np.zeros(tuple(data['model'][name].shape), np.float32)
    entries['opt.state_step'] = np.array(steps.pop() if steps else 0., np.float64)
    if data.get('scaler'):
        entries['scaler.scale_value'] = np.array(data['scaler']['scale'], np.float32)
        entries['scaler.counter'] = np.array(data['scaler'].get('_growth_tracker', 0), np.int32)
    group = data['opt']['param_groups'][0]
    meta = dict(format = TRAINER_CKPT_FORMAT, format_version = TRAINER_CKPT_VERSION, step = int(data['step']),
                batches_consumed = int(data['step']) * gradient_accumulate_every, seed = int(seed),
                ema_initted = bool(n(data['ema']['initted'])), ema_step = int(n(data['ema']['step'])),
                skipped_steps = 0, version = __version__, reference_version = data.get('version') or REFERENCE_VERSION,
                train_lr = float(group['lr']), adam_betas = [float(b) for b in group['betas']],
                amp = bool(data.get('scaler')), converted_from = os.path.abspath(str(src)))
    write_trainer_checkpoint(dst, entries, meta)
    return dst
