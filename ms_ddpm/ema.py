"""MindSpore twin of ``ema_pytorch.EMA`` (0.8.3), as the reference Trainer uses it.

Same arguments, defaults and maths::

    step 0 (first update): ema <- online                       (``initted`` becomes True)
    every ``update_every`` steps, while step <= update_after_step: ema <- online
    every ``update_every`` steps after that:  ema <- lerp(ema, online, 1 - decay)
    decay = clamp(1 - (1 + epoch / inv_gamma) ** -power, min_value, beta),
    epoch = max(step - update_after_step - 1, 0)   (decay = 0 while epoch <= 0)

``state_dict()`` has the reference's keys (``initted``, ``step``, ``online_model.*``,
``ema_model.*``), so the EMA state converts one to one.

Bit-level fidelity.  The reference computes ``decay`` with float32 tensor ops (``powf``)
and ``.item()``s it; here it is the same float32 computation in NumPy (which calls the
same libm ``powf``).  ``torch.lerp_`` with a scalar weight runs, on the CPU, one fused
multiply-add per element: ``fma(w, end - start, start)`` if ``w < 0.5`` else
``fma(w - 1, end - start, end)``.  MindSpore has no FMA op; the product of two float32
numbers is exact in float64, so the update is done in float64 and rounded once to
float32, which gives the fused result (up to a double-rounding tie, ~2**-29 of cases).
"""

from collections import OrderedDict
from copy import deepcopy

import numpy as np
import mindspore as ms
from mindspore import nn

from ms_ddpm.ms_compat import ParameterUpdater, torch_pow_scalar
from ms_ddpm.io.state import load_state_dict as load_strict


def exists(val):
    return val is not None


def default(val, d):
    return val if exists(val) else (d() if callable(d) else d)


def divisible_by(num, den):
    return (num % den) == 0


def _is_float(p):
    return p.dtype in (ms.float16, ms.float32, ms.float64, ms.bfloat16)


class EMA:
    """Exponential moving average of a MindSpore cell's weights (``ema_pytorch.EMA``).

    ``online_model`` is the trained cell (shared, not copied); ``ema_model`` a deep copy
    whose parameters are never trained.  ``jit=True`` compiles the per-update lerp."""

    def __init__(
        self,
        model,
        ema_model = None,
        beta = 0.9999,
        update_after_step = 100,
        update_every = 10,
        inv_gamma = 1.0,
        power = 2 / 3,
        min_value = 0.0,
        param_or_buffer_names_no_ema = set(),
        ignore_names = set(),
        ignore_startswith_names = set(),
        include_online_model = True,
        *,
        jit = True,
    ):
        self.beta = beta
        self.is_frozen = beta == 1.
        self.include_online_model = include_online_model
        self.online_model = model

        if not isinstance(ema_model, nn.Cell) and callable(ema_model):
            ema_model = ema_model()
        self.ema_model = ema_model if exists(ema_model) else deepcopy(model)
        # unique names: MindSpore refuses two parameters of one name in a cell or graph, and
        # the EMA update holds both copies (state_dict() uses the paths, not these names)
        for name, p in self.ema_model.parameters_and_names():
            p.requires_grad = False
            p.name = 'ema_model.' + name
        self.ema_model.set_train(False)

        self.update_every = update_every
        self.update_after_step = update_after_step
        self.inv_gamma = inv_gamma
        self.power = power
        self.min_value = min_value

        assert isinstance(param_or_buffer_names_no_ema, (set, list))
        self.param_or_buffer_names_no_ema = set(param_or_buffer_names_no_ema)
        self.ignore_names = set(ignore_names)
        self.ignore_startswith_names = set(ignore_startswith_names)
        self.jit = jit

        # buffers are non-trainable Parameters here; the reference lerps float params and
        # float buffers alike, so one set of names covers both
        self.parameter_names = [n for n, p in self.ema_model.parameters_and_names() if _is_float(p)]

        self.initted = False
        self.step = 0
        self._updaters = {}

    @property
    def model(self):
        return self.online_model

    def __call__(self, *args, **kwargs):
        return self.ema_model(*args, **kwargs)

    def eval(self):
        self.ema_model.set_train(False)
        return self.ema_model

    # --- parameter selection -----------------------------------------------------------

    def _named(self, cell):
        params = dict(cell.parameters_and_names())
        return [(n, params[n]) for n in self.parameter_names]

    def _groups(self, ma_model, current_model):
        """(to_copy, to_lerp): lists of (target, source) parameters, as update_moving_average
        sorts them."""
        to_copy, to_lerp = [], []
        for (name, cur), (_, ma) in zip(self._named(current_model), self._named(ma_model)):
            if name in self.ignore_names or any(name.startswith(p) for p in self.ignore_startswith_names):
                continue
            (to_copy if name in self.param_or_buffer_names_no_ema else to_lerp).append((ma, cur))
        return to_copy, to_lerp

    def _updater(self, key, pairs):
        if key not in self._updaters:
            self._updaters[key] = ParameterUpdater([t for t, _ in pairs], [s for _, s in pairs])
        return self._updaters[key]

    def _run(self, key, pairs, method, *args):
        if not pairs:
            return
        up = self._updater(key, pairs)
        if not self.jit:
            return getattr(up, method)(*args)
        jkey = (key, method)
        if jkey not in self._updaters:
            self._updaters[jkey] = up.compiled(method)
        self._updaters[jkey](*args)

    # --- the reference's API -----------------------------------------------------------

    def copy_params_from_model_to_ema(self):
        pairs = [(ma, cur) for (_, ma), (_, cur) in zip(self._named(self.ema_model), self._named(self.model))]
        self._run('model->ema', pairs, 'copy', ParameterUpdater.TOKEN)

    def copy_params_from_ema_to_model(self):
        pairs = [(cur, ma) for (_, ma), (_, cur) in zip(self._named(self.ema_model), self._named(self.model))]
        self._run('ema->model', pairs, 'copy', ParameterUpdater.TOKEN)

    def get_current_decay(self):
        """float32 arithmetic as the reference's tensor ops, returned as a Python float."""
        f32 = np.float32
        epoch = f32(max(self.step - self.update_after_step - 1, 0))
        if epoch <= 0:
            return 0.
        value = f32(1) - torch_pow_scalar(f32(1) + epoch / f32(self.inv_gamma), -self.power)
        return float(np.clip(value, f32(self.min_value), f32(self.beta)))

    def update(self):
        step = self.step
        self.step += 1

        if not self.initted:
            self.copy_params_from_model_to_ema()
            self.initted = True
            return

        should_update = divisible_by(step, self.update_every)

        if should_update and step <= self.update_after_step:
            self.copy_params_from_model_to_ema()
            return

        if should_update:
            self.update_moving_average(self.ema_model, self.model)

    def update_moving_average(self, ma_model, current_model, current_decay = None):
        if self.is_frozen:
            return
        current_decay = default(current_decay, self.get_current_decay)
        to_copy, to_lerp = self._groups(ma_model, current_model)
        key = (id(ma_model), id(current_model))
        self._run(key + ('copy',), to_copy, 'copy', ParameterUpdater.TOKEN)
        w = np.float32(1. - current_decay)          # torch casts the scalar weight to float32
        small = bool(abs(w) < 0.5)
        coeff = np.float64(w) if small else np.float64(w - np.float32(1))
        self._run(key + ('lerp',), to_lerp, 'lerp_small' if small else 'lerp_large', ms.Tensor(coeff, ms.float64), ParameterUpdater.TOKEN)

    # --- state -------------------------------------------------------------------------

    def state_dict(self):
        """``{'initted', 'step', 'online_model.<name>', 'ema_model.<name>'}`` as NumPy arrays:
        the keys and dtypes of the reference ``EMA.state_dict()``."""
        sd = OrderedDict()
        sd['initted'] = np.array(self.initted)
        sd['step'] = np.array(self.step, dtype=np.int64)
        # the reference's module order: online_model is registered before ema_model
        if self.include_online_model:
            for name, p in self.online_model.parameters_and_names():
                sd['online_model.' + name] = p.asnumpy()
        for name, p in self.ema_model.parameters_and_names():
            sd['ema_model.' + name] = p.asnumpy()
        return sd

    def load_state_dict(self, sd, load_online = False):
        """Restore ``initted``, ``step`` and the EMA weights (strictly: every EMA parameter
        must be present with its shape).  ``load_online`` also loads ``online_model.*``
        (the Trainer loads the online model from its own ``model`` entry)."""
        self.initted = bool(np.asarray(sd['initted']))
        self.step = int(np.asarray(sd['step']))
        pick = lambda prefix: OrderedDict((k[len(prefix):], v) for k, v in sd.items() if k.startswith(prefix))
        load_strict(self.ema_model, pick('ema_model.'))
        if load_online:
            load_strict(self.online_model, pick('online_model.'))
        return self
