"""The fast CPU path's process settings (``--fast-cpu``): environment variables that the
runtimes read when they start, so they are set here, from the standard library alone, before
MindSpore is imported (importing MindSpore loads GNU OpenMP, which reads ``GOMP_SPINCOUNT`` then).

Measured on the project's 2-core machine, MindSpore 2.8, the GRAPH train step of
``GaussianDiffusion(Unet(dim=64))`` at batch 16, 32x32, on the fast kernels (docs/fastconv.md,
"Threads"): 1.8-2.4 s per step with the defaults (spikes to 7 s), 1.5-1.8 s with the host blocking
run, 1.0 s with both; torch alone 0.84 s.  GOMP_SPINCOUNT 1000 instead of 0 (session 11): DDIM
(10 steps, batch 4) 0.82-0.88 s -> 0.74-0.82 s median, the train step unchanged.
"""

import os

RUNTIME_SETTINGS = {
    # MindSpore's host pipeline: by default the Python thread hands the graph to a worker queue and
    # then busy-waits on it (AsyncRQueue::Wait, an empty `while` loop): on 2 cores one of them
    # spins for the whole step (28% of all CPU samples in perf).  1: the calling thread runs it.
    'MS_DEV_HOST_BLOCKING_RUN': '1',
    # GNU OpenMP, the fast kernels' thread pool: idle workers spin 300,000 iterations before
    # sleeping, between every two oneDNN / fused kernels, on the cores MindSpore's own ops need
    # next (26% of the CPU samples once the host no longer spins).  1000 (~20 us): they sleep
    # soon, but back-to-back regions (a conv's reorder, the conv, its reorder out) find them
    # awake; at 0 every region paid a futex wake-up of ~50 us (docs/fastconv.md, "Thread
    # wake-ups"): DDIM 6-9% faster than with 0, the train step the same.
    'GOMP_SPINCOUNT': '1000',
}


def tune_runtime():
    """Set the ``RUNTIME_SETTINGS`` that nobody set; returns ``{name: value}`` of what it set.
    ``GOMP_SPINCOUNT`` only while no OpenMP runtime is loaded (``import mindspore`` or ``import
    torch`` loads one; torch's libgomp.so.1 is the same library, so torch in the process would
    spin less too: its CPU ops measured 8-40% slower with 0) and where ``OMP_WAIT_POLICY`` is
    not set.  MindSpore reads ``MS_DEV_HOST_BLOCKING_RUN`` at its first graph or op run."""
    done = {}
    for name, value in RUNTIME_SETTINGS.items():
        if name in os.environ:
            continue
        if name == 'GOMP_SPINCOUNT' and ('OMP_WAIT_POLICY' in os.environ or openmp_loaded()):
            continue
        os.environ[name] = done[name] = value
    return done


def openmp_loaded():
    """Is an OpenMP runtime (libgomp / libiomp / libomp) mapped into this process?"""
    try:
        with open('/proc/self/maps') as f:
            maps = f.read()
    except OSError:
        return False
    return any(lib in maps for lib in ('libgomp', 'libiomp', 'libomp.so'))
