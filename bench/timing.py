"""Timing helpers: interleaved repeats, medians, host load and versions.

Both frameworks are timed in one process on the same threads.  Repeats of the contestants
are interleaved (torch, MindSpore, torch, MindSpore, ...) so that the load other processes
put on a shared machine falls on both alike; the figure reported is the median.
"""

import os
import platform
import statistics
import subprocess
import time


def load():
    """1-, 5- and 15-minute load averages of the machine (other processes count too)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_s(fn, repeats=5, warmup=2):
    """Median wall time of ``repeats`` back-to-back calls of ``fn`` after ``warmup`` calls (for
    short calls: interleaving frameworks call by call adds each one's thread wake-up to every
    call; on bench.conv_shapes MindSpore's convs measured 1.9-2.2x torch's back to back, 2.8x
    interleaved)."""
    for _ in range(warmup):
        fn()
    return statistics.median(timed(fn) for _ in range(repeats))


def interleaved(fns, repeats, warmup=1):
    """``{name: callable}`` -> ``{name: {'median_s', 'min_s', 'times_s'}}``; each callable must
    block until its result exists (MindSpore: ``.asnumpy()`` the output).  ``warmup`` calls of
    each are made first and not counted."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn))
    return {name: summary(ts) for name, ts in times.items()}


def summary(ts):
    return {'median_s': statistics.median(ts), 'min_s': min(ts), 'times_s': [round(t, 5) for t in ts]}


def ratio(a, b):
    return None if not a or not b else a / b


def versions():
    """What a benchmark ran on: ``ms_ddpm.io.records`` (software, machine) plus where MindSpore
    lives and the git commit."""
    from ms_ddpm.io.records import cpu_model, distribution_version, versions as software
    out = dict(software(), machine=platform.machine(), cpu=cpu_model(), cpu_count=os.cpu_count())
    out['denoising_diffusion_pytorch'] = distribution_version('denoising-diffusion-pytorch')
    try:
        import mindspore
        out['mindspore_path'] = os.path.dirname(mindspore.__file__)
    except Exception:
        pass
    out['git_commit'] = _git_commit()
    return out


def _git_commit():
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        return subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=here, capture_output=True,
                              text=True, timeout=10).stdout.strip() or None
    except Exception:
        return None
