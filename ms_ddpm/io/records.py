"""JSON output and the record of what produced a result (versions, machine), one of each
for every report the project writes (verify, fixtures, bench, the parity summary)."""

import json
import os
import platform
from collections import OrderedDict

import numpy as np

from ms_ddpm.io.atomic import atomic_write


def jsonable(x):
    """Plain JSON types from NumPy scalars/arrays, tuples, sets and nested containers."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (set, frozenset)):
        return sorted(jsonable(v) for v in x)
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return x


def dumps(obj, indent=1):
    return json.dumps(jsonable(obj), indent=indent) + '\n'


def write_json(path, obj, indent=1):
    """``obj`` as JSON, written atomically."""
    return atomic_write(path, dumps(obj, indent))


def distribution_version(dist):
    from importlib import metadata
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def versions(torch_info=None, live_torch=True):
    """The software a result was produced with.  ``torch_info`` (from a golden fixture)
    names what recorded the PyTorch side; otherwise torch and the reference are read live
    (``live_torch=False`` leaves them out)."""
    import mindspore
    from ms_ddpm.version import __version__
    v = OrderedDict(python=platform.python_version(), mindspore=mindspore.__version__,
                    numpy=np.__version__, ms_ddpm=__version__)
    if torch_info:
        v.update(torch=torch_info.get('torch'), reference=torch_info.get('reference'), torch_source='fixture')
    elif live_torch:
        try:
            import torch
            v.update(torch=torch.__version__, reference=distribution_version('denoising-diffusion-pytorch'),
                     torch_source='live')
        except ImportError:
            v.update(torch=None, reference=None, torch_source='unavailable')
    return v


def cpu_model(cpuinfo=None):
    """The CPU's model name, with family / model and its widest vector instruction set where
    /proc/cpuinfo has them: a hypervisor may name two CPU generations alike ('AMD EPYC' here is
    Zen 3 with AVX2 on one machine and an AVX-512 part on another; oneDNN picks different
    kernels and a benchmark figure differs ~3x).  ``cpuinfo``: that file's text (tests)."""
    fields = {}
    if cpuinfo is None:
        try:
            with open('/proc/cpuinfo') as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ''
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(':')
        key = key.strip()
        if key in ('model name', 'cpu family', 'model', 'flags') and key not in fields:
            fields[key] = value.strip()
    name = fields.get('model name') or platform.processor() or None
    if name is None:
        return None
    flags = set(fields.get('flags', '').split())
    isa = next((f for f in ('avx512f', 'avx2', 'avx', 'sse4_2') if f in flags), None)
    extra = [f"family {fields['cpu family']} model {fields['model']}"] if 'cpu family' in fields and 'model' in fields else []
    extra += [isa] if isa else []
    return f"{name} ({', '.join(extra)})" if extra else name


def machine():
    """The machine a result was measured on."""
    m = OrderedDict(platform=platform.platform(), machine=platform.machine(),
                    processor=platform.processor() or None, cpu_count=os.cpu_count(), cpu_model=cpu_model())
    try:
        with open('/proc/meminfo') as f:
            m['mem_total_gib'] = round(int(f.readline().split()[1]) / 2 ** 20, 1)
        m['load_average'] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return m
