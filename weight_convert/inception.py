"""pytorch-fid's FID InceptionV3 weights (``pt_inception-2015-12-05-6726825d.pth``) -> a
``.ckpt``/``.safetensors`` that ``ms_ddpm.fid_evaluation.InceptionV3(weights=...)`` reads.

A plain state-dict conversion: the kind is inferred from the keys (torchvision ``Inception3``
names, ``Conv2d_1a_3x3.conv.weight`` ..., as the .pth holds them, or pytorch-fid's own
``blocks.*``), the keys are renamed to pytorch-fid ``InceptionV3``'s (the 1008-class ``fc``
head, which no FID block uses, is dropped), every key and shape is checked against the
MindSpore network before anything is committed, and nothing is asked of the network."""

import json
import os
import time
from collections import OrderedDict

from ms_ddpm.io.atomic import AtomicFile, os_error_line
from ms_ddpm.io.errors import ConvertError, DestinationError
from ms_ddpm.io.state import StateDictMismatchError, differences

KIND = 'InceptionV3'
MARKERS = ('Conv2d_1a_3x3.conv.weight', 'blocks.0.0.conv.weight')


def is_inception(entries):
    return any(m in entries for m in MARKERS) and any(k.endswith('bn.running_var') for k in entries)


def convert_inception(source, dst, out_fmt, writers, config_path, log, force=False):
    """Write ``source`` (a read weights file of kind InceptionV3) to ``dst`` in ``out_fmt``.
    Returns the converter's summary dict."""
    from ms_ddpm.training.fid import InceptionV3, inception_state_dict_from_torchvision, FID_WEIGHTS_FILE
    t0 = time.perf_counter()
    if out_fmt not in ('mindspore', 'safetensors'):
        raise ConvertError(f'{dst}: InceptionV3 FID weights convert to .ckpt or .safetensors (what '
                           f'ms_ddpm.fid_evaluation.InceptionV3(weights=...) reads)')
    try:
        entries = OrderedDict(inception_state_dict_from_torchvision(source.entries))
    except KeyError as e:
        raise ConvertError(f'{source.path}: {e.args[0]}') from None
    net = InceptionV3([3], resize_input=False)
    expected = OrderedDict((n, tuple(p.shape)) for n, p in net.parameters_and_names())
    given = {k: tuple(v.data.shape) for k, v in entries.items()}
    for k, shape in expected.items():          # 0-d tensors may have been stored as (1,)
        if shape == () and given.get(k) == (1,):
            given[k] = ()
    missing, unexpected, mismatched = differences(expected, given)
    if missing or unexpected or mismatched:
        raise StateDictMismatchError(missing, unexpected, mismatched, target='pytorch-fid InceptionV3')
    entries = OrderedDict((k, entries[k]) for k in expected)
    cfg = {'model': KIND, 'source': {'file': os.path.basename(source.path), 'format': source.format},
           'notes': {'inferred': [f'model kind {KIND} (pytorch-fid FID weights, {FID_WEIGHTS_FILE})']},
           'use': 'ms_ddpm.fid_evaluation.InceptionV3(weights=PATH) / Trainer(fid_weights=PATH)'}
    total = sum(e.nbytes for e in entries.values())
    out = side = None
    try:
        out = AtomicFile(dst, overwrite=force)
        source.start_check()
        kw = {'safetensors': {'metadata': {'format': 'pt'}}}.get(out_fmt, {})
        writers[out_fmt](entries, out.file, **kw)
        out.close()
        source.check_integrity()
        side = AtomicFile(config_path(dst))
        side.file.write((json.dumps(cfg, indent=2) + '\n').encode())
        side.close()
        out.commit()
        side.commit()
    except BaseException as err:
        for f in (side, out):
            if f is not None:
                f.abort()
        if isinstance(err, OSError):
            raise DestinationError(os_error_line(err, dst)) from None
        raise
    log(f'{KIND}: {len(entries)} tensors (renamed to pytorch-fid InceptionV3 keys; fc head dropped)')
    return {'src': source.path, 'dst': dst, 'config_file': config_path(dst), 'config': cfg, 'kind': KIND,
            'tensors': len(entries), 'bytes': total, 'seconds': time.perf_counter() - t0, 'phases': {}}
