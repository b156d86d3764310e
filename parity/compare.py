"""The metrics and the one gate of the parity suite.

Metrics follow msprobe's vocabulary: max absolute error, max relative error, cosine
similarity, the share of elements within 1/1000 relative error, plus the relative
Frobenius error that most tolerances gate on.  ``check`` is the one gate: it returns the
verdict (``Diff.ok``, the tolerance, the gated metric and a one-line ``why`` when not ok);
NaN/Inf always fail.  ``assert_parity`` is ``check`` that raises on a failed verdict.
"""

from dataclasses import dataclass, asdict

import numpy as np

from parity.tolerances import tolerance


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

    def as_dict(self):
        d = asdict(self)
        d['shape'] = list(self.shape)
        return d

    def __str__(self):
        verdict = '' if self.ok is None else ('ok' if self.ok else 'FAIL')
        return (f'{self.name}: shape={tuple(self.shape)} rel_fro={self.rel_fro:.3e} max_abs={self.max_abs:.3e} '
                f'max_rel={self.max_rel:.3e} cosine={self.cosine:.9f} within_1e-3={self.within_1e3:.4%} '
                f'nonfinite={self.nonfinite} tol={self.tol} {verdict}')


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


def check(name, expected, actual, kind, dtype='float32'):
    """The one gate: metrics of ``actual`` against ``expected`` and the verdict under the
    tolerance of ``kind`` (``parity.tolerances``), which bounds its own metric (``tol.metric``).
    NaN/Inf fail whatever the figures.  Returns the Diff with ``tol``, ``metric``, ``ok`` and,
    when not ok, ``why``.  A shape mismatch raises AssertionError."""
    return gate(diff(name, expected, actual), kind, dtype)


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


def assert_parity(name, expected, actual, kind, dtype='float32'):
    """``check`` that fails (with every metric in the message) unless within ``kind``'s tolerance."""
    r = check(name, expected, actual, kind, dtype)
    if not r.ok:
        raise AssertionError(f'{r}\n  -> {r.why}')
    return r
