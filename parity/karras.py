"""Shared code of the magnitude-preserving U-Net tests (``parity_tests/test_karras_1d_3d.py``):
both twins of a ``parity.cases_karras`` row with the same weights (every Gain set to
``call['gain']``), the row's named inputs, a MindSpore callable of positional tensors that
compiles in GRAPH mode, and the float64 error-model gate.

The float64 gate (kind ``karras_f64``): the reference is run again in float64 (``.double()``
of the same module and inputs) as the exact result; its own float32 output's distance from it,
``d_t``, is the yardstick of that very computation.  Two float32 runs each ``d`` from exact
differ by at most ``d_t + d_m``, so MindSpore passes when it is no farther from float64 than
``factor * d_t`` AND within ``factor * d_t`` of torch (``factor`` = the kind's bound, in
``parity.tolerances``).  A floor of a few ulps keeps exactly computed things from failing
on a zero yardstick.
"""

import copy
import inspect

import numpy as np

from parity.compare import diff
from parity.harness import build, case_inputs
from parity.tolerances import tolerance

F32_ULP = 2.0 ** -24


def pair(case, train=False):
    """(torch, MindSpore) of a row with the same weights, every Gain set to ``call['gain']``."""
    import torch
    from ms_ddpm.ms_compat import name_parameters_by_path
    from weight_convert import load_torch_state_dict
    torch.manual_seed(case.seed)
    t = build('torch', case)
    with torch.no_grad():
        for name, p in t.named_parameters():
            if name.split('.')[-1] == 'gain':
                p.fill_(case.call['gain'])
    m = build('ms', case)
    name_parameters_by_path(m)
    load_torch_state_dict(m, t.state_dict())
    t.train(train)
    m.set_train(train)
    return t, m


def named_inputs(case):
    return dict(zip(case.call['names'], case_inputs(case)))


def torch_forward(t, named, double=False):
    import torch

    def conv(v):
        v = torch.from_numpy(v)
        return v.double() if double and v.is_floating_point() else v
    return t(**{k: conv(v) for k, v in named.items() if k != 'target'})


def ms_callable(m, names):
    """(fn of positional tensors calling ``m`` with them at their parameters' places and None
    elsewhere (compiles in GRAPH mode), the names it takes in order)."""
    params = list(inspect.signature(m.construct).parameters)
    used = [n for n in names if n != 'target']
    last = max(params.index(n) for n in used)
    slots = tuple(used.index(p) if p in used else -1 for p in params[:last + 1])

    def fwd(*xs):
        call = ()
        for s in slots:
            if s < 0:
                call = call + (None,)
            else:
                call = call + (xs[s],)
        return m(*call)
    return fwd, used


def double_copy(t):
    """A float64 copy of a torch module (the exact-result run of the same weights).  The
    reference casts its class labels with ``.float()`` (float32 whatever the model's dtype):
    the copy's class embedding gets them back as float64 (exact: one-hot x sqrt(n) or the
    float32 labels given)."""
    t64 = copy.deepcopy(t).double()
    if getattr(t64, 'needs_class_labels', False):
        t64.to_class_emb.register_forward_pre_hook(lambda mod, inputs: tuple(i.double() for i in inputs))
    return t64


def gate_f64(name, torch32, ms32, exact, kind='karras_f64', exactness=True):
    """The float64 error-model gate (module docstring).  ``exactness=False`` gates only
    MindSpore vs torch (one tensor among many: its own distance from float64 is one random
    draw, and MindSpore's and torch's draws differ by more than 2x on some of ~100 tensors;
    the exactness is then gated on all the tensors together).  Returns (ms vs torch Diff with
    the verdict, torch vs float64 Diff, ms vs float64 Diff)."""
    tol = tolerance(kind)
    d_t = diff(f'{name} torch vs float64', exact, torch32)
    d_m = diff(f'{name} ms vs float64', exact, ms32)
    r = diff(name, torch32, ms32)
    bound = tol.rel * max(d_t.rel_fro, 4 * F32_ULP)
    r.tol, r.metric = bound, 'rel_fro'
    r.ok = (not r.nonfinite and not d_m.nonfinite) and r.rel_fro <= bound and (d_m.rel_fro <= bound or not exactness)
    r.why = None if r.ok else (f'ms vs torch {r.rel_fro:.3e}, ms vs float64 {d_m.rel_fro:.3e}, bound {bound:.3e} = '
                               f'{tol.rel} x torch vs float64 {d_t.rel_fro:.3e} ({tol.reason})')
    return r, d_t, d_m


def assert_f64(name, torch32, ms32, exact, kind='karras_f64', exactness=True):
    r, d_t, d_m = gate_f64(name, torch32, ms32, exact, kind, exactness)
    if not r.ok:
        raise AssertionError(f'{r}\n  -> {r.why}')
    return r, d_t, d_m


def assert_f64_scalars(name, torch32, ms32, exact, kind='karras_f64'):
    """The float64 gate for a set of scalar gradients of one kind (the 0-d Gains: each ONE
    sum of both-signed terms, whose own float64 distance is a single draw): the yardstick is
    torch's worst absolute distance from float64 over the set, ``d_t = max |t - e|``; each
    MindSpore value must be within ``factor * d_t`` of torch and of float64.  Returns the
    (ms vs torch) Diff of the set as a vector, gated on ``max_abs``."""
    torch32, ms32, exact = (np.asarray(v, np.float64).ravel() for v in (torch32, ms32, exact))
    tol = tolerance(kind)
    d_t = float(np.abs(torch32 - exact).max())
    d_m = float(np.abs(ms32 - exact).max())
    r = diff(name, torch32, ms32)
    bound = tol.rel * max(d_t, 4 * F32_ULP * float(np.abs(exact).max()))
    r.tol, r.metric = bound, 'max_abs'
    r.ok = not r.nonfinite and r.max_abs <= bound and d_m <= bound
    if not r.ok:
        raise AssertionError(f'{r}\n  -> ms vs torch max_abs {r.max_abs:.3e}, ms vs float64 {d_m:.3e}, bound {bound:.3e} = '
                             f'{tol.rel} x torch vs float64 {d_t:.3e}')
    return r, d_t, d_m
