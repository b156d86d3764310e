"""ms_ddpm Trainer checkpoints: every tensor of the training state by name, plus a JSON
``trainer_meta`` string, in one MindSpore ``.ckpt`` written atomically.

Names: ``online_model.*`` (the model), ``ema_model.*``, ``opt.exp_avg.*``/``opt.exp_avg_sq.*``
(Adam moments by parameter name), ``opt.state_step``, ``scaler.scale_value``/``scaler.counter``
(mixed precision).  The reference-Trainer ``.pt`` interop is ``weight_convert.trainer``."""

import json
from collections import OrderedDict

import numpy as np
import mindspore as ms

from ms_ddpm.io.atomic import atomic_save
from ms_ddpm.ms_compat import save_checkpoint

__all__ = ['TRAINER_CKPT_FORMAT', 'TRAINER_CKPT_VERSION', 'write_trainer_checkpoint', 'read_trainer_checkpoint',
           'state_entries', 'load_state_entries', 'pick']

TRAINER_CKPT_FORMAT = 'ms_ddpm-trainer'
TRAINER_CKPT_VERSION = 1


def write_trainer_checkpoint(path, entries, meta):
    """Atomic MindSpore ``.ckpt``: tensors + ``trainer_meta`` (JSON string)."""
    items = [{'name': k, 'data': ms.Tensor(np.ascontiguousarray(v))} for k, v in entries.items()]
    atomic_save(path, lambda tmp: save_checkpoint(items, tmp, append_dict = {'trainer_meta': json.dumps(meta)}))
    return path


def read_trainer_checkpoint(path):
    """-> (OrderedDict name -> NumPy array, meta dict) of a checkpoint written by ``Trainer.save``."""
    from ms_ddpm.io.checkpoint import read_ckpt
    entries, strings = read_ckpt(str(path))
    if 'trainer_meta' not in strings:
        raise ValueError(f'{path}: not an ms_ddpm Trainer checkpoint (no trainer_meta); for plain weights use '
                         f'weight_convert.load_model')
    meta = json.loads(str(strings['trainer_meta']))
    return OrderedDict((k, np.array(e.value())) for k, e in entries.items()), meta


def pick(entries, prefix):
    """The entries under ``prefix``, the prefix removed."""
    return OrderedDict((k[len(prefix):], v) for k, v in entries.items() if k.startswith(prefix))


def state_entries(model, ema, opt, params, scaler = None):
    """Every tensor of the training state, by name (see the module docstring)."""
    out = OrderedDict()
    for name, p in model.parameters_and_names():
        out['online_model.' + name] = p.asnumpy()
    for k, v in ema.state_dict().items():
        if k.startswith('ema_model.'):
            out[k] = v
    names = {id(p): n for n, p in model.parameters_and_names()}
    for p, m, v in zip(params, opt.exp_avg, opt.exp_avg_sq):
        out['opt.exp_avg.' + names[id(p)]] = m.asnumpy()
        out['opt.exp_avg_sq.' + names[id(p)]] = v.asnumpy()
    out['opt.state_step'] = opt.state_step.asnumpy()
    if scaler is not None:
        out['scaler.scale_value'] = scaler.scale_value.asnumpy()
        out['scaler.counter'] = scaler.counter.asnumpy()
    return out


def load_state_entries(entries, meta, model, ema, opt, params, scaler = None):
    """Load what :func:`state_entries` wrote (strictly: every parameter, every moment)."""
    from ms_ddpm.io.state import load_state_dict
    load_state_dict(model, pick(entries, 'online_model.'))
    load_state_dict(ema.ema_model, pick(entries, 'ema_model.'))
    ema.initted, ema.step = bool(meta['ema_initted']), int(meta['ema_step'])
    names = {id(p): n for n, p in model.parameters_and_names()}
    m_sd, v_sd = pick(entries, 'opt.exp_avg.'), pick(entries, 'opt.exp_avg_sq.')
    missing = [names[id(p)] for p in params if names[id(p)] not in m_sd or names[id(p)] not in v_sd]
    if missing:
        raise ValueError(f'checkpoint has no Adam moments for {missing[:5]}{"..." if len(missing) > 5 else ""}')
    for p, m, v in zip(params, opt.exp_avg, opt.exp_avg_sq):
        m.set_data(ms.Tensor(np.asarray(m_sd[names[id(p)]], dtype = np.float32)))
        v.set_data(ms.Tensor(np.asarray(v_sd[names[id(p)]], dtype = np.float32)))
    _set(opt.state_step, entries['opt.state_step'], np.float64)
    if scaler is not None and 'scaler.scale_value' in entries:
        _set(scaler.scale_value, entries['scaler.scale_value'], np.float32)
        _set(scaler.counter, entries['scaler.counter'], np.int32)


def _set(param, value, dtype):
    """``param`` <- ``value`` in the parameter's own shape: a ``.ckpt`` stores a 0-d tensor as
    shape (1,), and a compiled step that read a () parameter must not see it change shape."""
    param.set_data(ms.Tensor(np.asarray(value, dtype = dtype).reshape(tuple(param.shape))))
