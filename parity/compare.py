"""The metrics and the one gate of the parity suite.

Metrics follow msprobe's vocabulary: max absolute error, max relative error, cosine
similarity, the share of elements within 1/1000 relative error, plus the relative
Frobenius error that most tolerances gate on.  ``check`` is the one gate: it returns the
verdict (``Diff.ok``, the tolerance, the gated metric and a one-line ``why`` when not ok);
NaN/Inf always fail.  ``assert_parity`` is ``check`` that raises on a failed verdict.
"""

from dataclasses import dataclass, asdict

import numpy as np

from parity.tolerances import accuracy, tolerance


@dataclass
class Diff:
    name: str
    shape: tuple
    rel_fro: float       # ||a - b|| / ||a||, a = reference
    max_abs: float
    max_rel: float       # max |a - b| / |a| over elements with |a| > 0
    cosine: float
    within_1e3: float    # share of elements with |a - b| <= 1e-3 * |a|  (+tiny floor)
    nonfinite: bool      # NaN or Inf in either side
    tol: float = None
    ok: bool = None
    metric: str = None   # the gated metric ('rel_fro' or 'max_abs'), set by check()
    why: str = None      # one line, set by check() when not ok
    torch_vs_float64: float = None       # with a float64 reference (check(..., expected64=)): rel_fro of
    mindspore_vs_float64: float = None   # each float32 result from it, the figures the accuracy gate compares

    def as_dict(self):
        d = asdict(self)
        d['shape'] = list(self.shape)
        return d

    def __str__(self):
        verdict = '' if self.ok is None else ('ok' if self.ok else 'FAIL')
        return (f'{self.name}: shape={tuple(self.shape)} rel_fro={self.rel_fro:.3e} max_abs={self.max_abs:.3e} '
                f'max_rel={self.max_rel:.3e} cosine={self.cosine:.9f} within_1e-3={self.within_1e3:.4%} '
                f'nonfinite={self.nonfinite} tol={self.tol}{self._f64()} {verdict}')

    def _f64(self):
        if self.torch_vs_float64 is None:
            return ''
        return (f' | vs float64: mindspore={self.mindspore_vs_float64:.3e} torch={self.torch_vs_float64:.3e}'
                f' (ratio {_ratio(self.mindspore_vs_float64, self.torch_vs_float64):.2f})')


def _ratio(a, b):
    return a / b if b > 0 else (0.0 if a == 0 else np.inf)


def _np(x):
    if hasattr(x, 'asnumpy'):
        x = x.asnumpy()
    elif hasattr(x, 'detach'):
        x = x.detach().cpu().float().numpy() if str(x.dtype) == 'torch.bfloat16' else x.detach().cpu().numpy()
    return np.asarray(x)


def diff(name, expected, actual):
    """Metrics of ``actual`` (MindSpore) against ``expected`` (PyTorch reference)."""
    a = _np(expected).astype(np.float64)
    b = _np(actual).astype(np.float64)
    if a.shape != b.shape:
        raise AssertionError(f'{name}: shape mismatch: reference {a.shape} vs MindSpore {b.shape}')
    nonfinite = bool(not np.isfinite(a).all() or not np.isfinite(b).all())
    if a.size == 0:
        return Diff(name, a.shape, 0.0, 0.0, 0.0, 1.0, 1.0, nonfinite)
    with np.errstate(all='ignore'):
        d = np.abs(a - b)
        na = np.linalg.norm(a)
        rel_fro = float(np.linalg.norm(a - b) / na) if na > 0 else float(np.linalg.norm(b) > 0) * np.inf
        nz = np.abs(a) > 0
        max_rel = float((d[nz] / np.abs(a[nz])).max()) if nz.any() else 0.0
        nb = np.linalg.norm(b)
        cosine = float((a.ravel() @ b.ravel()) / (na * nb)) if na > 0 and nb > 0 else float(na == nb)
        within = float(np.mean(d <= 1e-3 * np.abs(a) + 1e-12))
    if na == 0 and np.linalg.norm(b) == 0:
        rel_fro = 0.0
    return Diff(name, a.shape, rel_fro, float(d.max()), max_rel, cosine, within, nonfinite)


def check(name, expected, actual, kind, dtype='float32', expected64=None, yardstick=None):
    """The one gate: metrics of ``actual`` against ``expected`` and the verdict under the
    tolerance of ``kind`` (``parity.tolerances``), which bounds its own metric (``tol.metric``).
    NaN/Inf fail whatever the figures.  Returns the Diff with ``tol``, ``metric``, ``ok`` and,
    when not ok, ``why``.  A shape mismatch raises AssertionError.

    With ``expected64`` (the reference run in float64 on the same weights and inputs) the
    verdict is the ACCURACY gate instead (``accuracy_gate``): the float32 figures of ``actual``
    against ``expected`` are still measured and reported, ``kind`` only names what is compared.
    ``yardstick``: the reference's own float32 distance from float64 over the whole computation
    this tensor is part of (all gradients together), a floor under the tensor's own distance."""
    r = diff(name, expected, actual)
    if expected64 is not None:
        return accuracy_gate(r, expected, actual, expected64, dtype, yardstick)
    return gate(r, kind, dtype)


def accuracy_gate(r, expected, actual, expected64, dtype='float32', yardstick=None):
    """The error-model verdict on ``r`` (the float32 Diff of ``actual`` against ``expected``):
    both float32 results against the reference's float64 result ``expected64``.  PASS when
    MindSpore's distance from it is at most FACTOR x the reference's own float32 distance
    (rel_fro; a distance under REL_FLOOR, a few ulps, counts as REL_FLOOR: closer is luck), or,
    for tensors that are zero or tiny in exact arithmetic, when its largest absolute distance
    is under the FLOOR (``parity.tolerances.ACCURACY``).  ``yardstick`` (the reference's distance
    over the whole computation, e.g. all gradients of one loss) also floors the reference's
    distance: one tensor's distance is a single draw from the computation's rounding errors (the
    reference can be lucky on it), the computation's distance is their level; and a part of a
    computation (a yardstick given) is judged at PART_FACTOR, the whole at FACTOR (the per-tensor
    ratio's tail, ``parity.tolerances.ACCURACY``).  Sets
    ``torch_vs_float64``, ``mindspore_vs_float64``, ``tol`` (the factor), ``metric``
    ('vs_float64'), ``ok`` and ``why``; returns ``r``."""
    acc = accuracy(dtype)
    factor = acc.factor if yardstick is None else acc.part_factor
    t = diff(r.name, expected64, expected)
    m = diff(r.name, expected64, actual)
    r.torch_vs_float64, r.mindspore_vs_float64 = t.rel_fro, m.rel_fro
    r.tol, r.metric = factor, 'vs_float64'
    nonfinite = r.nonfinite or t.nonfinite or m.nonfinite
    level = max(t.rel_fro, acc.rel_floor, yardstick or 0.0)
    within = m.rel_fro <= factor * level or m.max_abs <= acc.floor
    r.ok = (not nonfinite) and bool(within)
    r.why = None if r.ok else ('NaN/Inf present' if nonfinite else
                               f'MindSpore is {m.rel_fro:.3e} from the float64 result (max_abs {m.max_abs:.1e}), '
                               f'the reference {t.rel_fro:.3e}: more than {factor:g}x max(that, {acc.rel_floor:.1e}, '
                               f'the computation\'s {yardstick or 0.0:.1e}) and above the floor '
                               f'{acc.floor:.0e} ({acc.reason})')
    return r


def gate(r, kind, dtype='float32'):
    """The verdict of ``check`` on metrics already measured (a ``Diff``): sets ``tol``,
    ``metric``, ``ok`` and ``why``; returns ``r``."""
    tol = tolerance(kind, dtype)
    r.tol = tol.rel
    r.metric = tol.metric
    value = getattr(r, tol.metric)
    r.ok = (not r.nonfinite) and value <= tol.rel
    r.why = None if r.ok else ('NaN/Inf present' if r.nonfinite
                               else f'{tol.metric} {value:.3e} > {tol.rel:.1e} ({tol.reason})')
    return r


def assert_parity(name, expected, actual, kind, dtype='float32', expected64=None, yardstick=None):
    """``check`` that fails (with every metric in the message) unless within ``kind``'s tolerance
    (with ``expected64``: unless it passes the accuracy gate)."""
    r = check(name, expected, actual, kind, dtype, expected64, yardstick)
    if not r.ok:
        raise AssertionError(f'{r}\n  -> {r.why}')
    return r


def assert_gradients(label, t_grads, m_grads, t64, kind='grad', kinds=None, record=None, together=None, what='grad'):
    """Every parameter's gradient through the accuracy gate, then all of them together.
    ``t_grads`` / ``t64``: name -> the reference's float32 / float64 gradient; ``m_grads``: name ->
    MindSpore's.  Each tensor's yardstick is floored by the reference's distance over all
    gradients together (the computation's error level, see ``accuracy_gate``).  ``kinds``: name
    prefix -> a float32 kind gated instead (no float64 gate) for that prefix.  ``together``: group
    name -> tensor names gated as ONE vector through the same gate instead of one by one (0-d
    parameters such as the Karras Gains: each gradient is a single cancelled sum, whose own
    float64 distance is one draw; the group's is their level).  ``what`` starts each name
    ('parameter': the same gate on parameters after optimiser steps).  Returns the Diffs, the
    all-parameters one last; ``record`` is called on each."""
    names = list(m_grads)
    assert set(names) == set(t_grads), f'gradient sets differ: {sorted(set(names) ^ set(t_grads))}'
    flat = lambda g: np.concatenate([np.asarray(_np(g[n]), np.float64).ravel() for n in names])
    flat_t, flat_m, flat_64 = flat(t_grads), flat(m_grads), flat(t64)
    level = diff(label, flat_64, flat_t).rel_fro
    out = []
    grouped = {n for members in (together or {}).values() for n in members}
    for name in names:
        if name in grouped:
            continue
        prefixes = sorted((p for p in (kinds or {}) if name.startswith(p)), key=len)
        if prefixes:
            r = assert_parity(f'{what} {name} {label}', t_grads[name], m_grads[name], kinds[prefixes[-1]])
        else:
            r = assert_parity(f'{what} {name} {label}', t_grads[name], m_grads[name], kind,
                              expected64=t64[name], yardstick=level)
        out.append(record(r) if record else r)
    for group, members in (together or {}).items():
        members = [n for n in names if n in set(members)]
        if members:
            vec = lambda g: np.concatenate([np.asarray(_np(g[n]), np.float64).ravel() for n in members])
            r = assert_parity(f'{what} {group} ({len(members)} tensors) {label}', vec(t_grads), vec(m_grads), kind,
                              expected64=vec(t64), yardstick=level)
            out.append(record(r) if record else r)
    r = assert_parity(f'{what} all parameters {label}', flat_t, flat_m, kind, expected64=flat_64)
    out.append(record(r) if record else r)
    return out
