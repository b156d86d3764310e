"""Shared code of the magnitude-preserving U-Net tests (``parity_tests/test_karras.py``,
``parity_tests/test_karras_1d_3d.py``): both twins of a ``parity.cases_karras`` row with the
same weights (every Gain set to ``call['gain']``), the row's named inputs, a MindSpore callable
of positional tensors that compiles in GRAPH mode, and the float64 copy of the reference
(``double_copy``) whose outputs and gradients are the accuracy gate's exact results
(``parity.compare.check(..., expected64=)``, ``assert_gradients``: the one float64 error model).
"""

import copy
import inspect

import numpy as np

from parity.harness import build, case_inputs


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


def gains_of(grads):
    """``assert_gradients``' ``together`` for a Karras net: its 0-d Gains, gated as one vector
    (each Gain's gradient is ONE sum of hundreds of products of both signs over a whole
    embedding or output, summed in a different order by the two frameworks: its error is a few
    ulps of the sum of |terms|, not of the cancelled result, measured up to 35x torch's own
    distance on one Gain while the set is as exact as torch's)."""
    return {'0-d Gains': [n for n, g in grads.items() if np.ndim(g) == 0]}


def assert_parameters_after_steps(label, t, t64, m, record):
    """The parameters of the torch module ``t`` (float32), its float64 copy ``t64`` trained
    alongside, and the MindSpore cell ``m``, after the same optimiser steps, through
    ``assert_gradients``'s accuracy gate (per tensor with the all-parameters yardstick, then all
    together): Adam moves an element whose gradient nearly cancels by ~lr x its relative rounding
    error, in both frameworks, so a fixed bound fitted on one machine fails on another (AVX2:
    ``ups.2.attn.mem_kv`` 3.8e-6 from torch against 'adam' 3e-6, torch itself 8.1e-6 from float64)."""
    from parity.compare import assert_gradients
    p32 = {k: v.detach().numpy() for k, v in t.named_parameters()}
    p64 = {k: v.detach().numpy() for k, v in t64.named_parameters()}
    pm = dict((k, v.asnumpy()) for k, v in m.parameters_and_names())
    record_gradients(record, assert_gradients(label, p32, {k: pm[k] for k in p32}, p64, kind='adam', what='parameter'))


def record_gradients(record, diffs):
    """Record what ``parity.compare.assert_gradients`` measured: the per-tensor Diff whose
    MindSpore distance from float64 is the largest share of its bound, the Gains group and the
    all-parameters one (the last)."""
    def share(r):
        return (r.mindspore_vs_float64 or 0.0) / max(r.torch_vs_float64 or 0.0, 1e-30)
    *tensors, together = diffs
    groups = [r for r in tensors if r.name.startswith('grad 0-d Gains')]
    tensors = [r for r in tensors if r not in groups]
    if tensors:
        record(max(tensors, key=share))
    for r in groups + [together]:
        record(r)
