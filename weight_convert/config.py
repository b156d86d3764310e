"""The architecture config: what ``convert`` stores inside the weights (a ``.ckpt`` string
entry, the ``.safetensors`` metadata) and writes beside them (``<file name>.config.json``:
``unet.ckpt`` -> ``unet.ckpt.config.json``), what ``--config`` takes, and the keyword
arguments it gives ``Unet(...)`` and ``GaussianDiffusion(...)`` (of either framework).

    {"format": "ms_ddpm-config", "version": 1, "model": "GaussianDiffusion",
     "unet": {Unet keyword arguments}, "diffusion": {GaussianDiffusion keyword arguments},
     "weights": {"file", "format", "dtypes", "bytes", "index"}, ...}

A side file is read only for the file it was written for: ``weights.bytes`` (the file's
size) and ``weights.index`` (:func:`tensor_index_hash` of its tensors' names, dtypes and
shapes) must match.  A side file of the old naming (``<stem>.config.json``, shared by every
file with that stem) is read only if it names this file (``weights.file``), its tensor
counts match and it was written with the weights (:func:`legacy_config_belongs`).
"""

import hashlib
import json
import os
from collections.abc import Mapping

from ms_ddpm.io.errors import ConvertError
from weight_convert.rules import NETWORK_ARGUMENTS  # noqa: E402  (issue 15: any family's network)
from weight_convert.rules import (DIFFUSION_DEFAULTS, UNET_DEFAULTS, DIFFUSION1D_DEFAULTS, UNET1D_DEFAULTS,
                                  PROCESS_ARGUMENTS, XM_DEFAULTS)

CONFIG_FORMAT = 'ms_ddpm-config'
CONFIG_VERSION = 1


class ConfigError(ConvertError):
    """The architecture config is missing something, or names unknown arguments."""


# a legacy side file is trusted only if written within this many seconds of its weights
LEGACY_CONFIG_MAX_AGE_GAP_S = 120


def config_path(weights_path):
    """The config written beside ``weights_path``: ``unet.ckpt`` -> ``unet.ckpt.config.json``
    (named after the whole file name, so ``unet.ckpt`` and ``unet.safetensors`` each have their own)."""
    return str(weights_path) + '.config.json'


def legacy_config_path(weights_path):
    """Where converters before issue 17 wrote the config: ``unet.ckpt`` -> ``unet.config.json``."""
    return os.path.splitext(str(weights_path))[0] + '.config.json'


def tensor_index_hash(entries):
    """SHA-256 (hex) of the sorted (name, dtype, shape) of ``entries`` (name -> Entry): what a
    side file records so that it is never read for another file's weights."""
    rows = sorted((str(k), e.dtype, [int(d) for d in e.shape]) for k, e in entries.items())
    return hashlib.sha256(json.dumps(rows, separators=(',', ':')).encode()).hexdigest()


def config_belongs(cfg, weights_path, entries):
    """None if the side-file config ``cfg`` was written for ``weights_path`` holding
    ``entries``; else why not (one phrase)."""
    w = cfg.get('weights') if isinstance(cfg, Mapping) else None
    if not isinstance(w, Mapping) or 'bytes' not in w or 'index' not in w:
        return 'it does not record which weights it describes'
    size = os.path.getsize(weights_path)
    if w['bytes'] != size:
        return f'it was written for a file of {w["bytes"]} bytes; this one has {size}'
    if w['index'] != tensor_index_hash(entries):
        return 'it was written for other tensors (names, dtypes or shapes differ)'
    return None


def legacy_config_belongs(cfg, side_path, weights_path, entries, dtype_counts):
    """None if an old ``<stem>.config.json`` (``side_path``) says it belongs to
    ``weights_path``: it names the file, its tensor counts per dtype match, and it was written
    with the weights (the old converter committed the two within a moment of each other);
    else why not (one phrase)."""
    w = cfg.get('weights') if isinstance(cfg, Mapping) else None
    if not isinstance(w, Mapping) or w.get('file') != os.path.basename(str(weights_path)):
        named = w.get('file') if isinstance(w, Mapping) else None
        return f'it was written for {named}' if named else 'it does not name the weights file it describes'
    if 'bytes' in w or 'index' in w:
        return config_belongs(cfg, weights_path, entries)
    if dict(w.get('dtypes') or {}) != dict(dtype_counts):
        return f'its tensor counts {dict(w.get("dtypes") or {})} differ from the file\'s {dict(dtype_counts)}'
    gap = abs(os.path.getmtime(weights_path) - os.path.getmtime(side_path))
    if gap > LEGACY_CONFIG_MAX_AGE_GAP_S:
        return f'it was not written with the weights (their modification times are {gap:.0f} s apart)'
    return None


def read_config_file(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f'{path}: cannot read config JSON ({e})') from None


def parse_explicit_config(text_or_path):
    """``--config`` value: a JSON file, or inline JSON.  Returns ``{'unet': {...}, 'diffusion': {...}}``."""
    if text_or_path is None:
        return {'unet': {}, 'diffusion': {}}
    if isinstance(text_or_path, Mapping):
        raw = dict(text_or_path)
    elif str(text_or_path).lstrip().startswith('{'):
        try:
            raw = json.loads(text_or_path)
        except json.JSONDecodeError as e:
            raise ConfigError(f'--config: invalid JSON ({e})') from None
    else:
        raw = read_config_file(text_or_path)
    if not isinstance(raw, Mapping):
        raise ConfigError('--config: expected a JSON object')
    unet = dict(raw.get('unet') or {})
    diffusion = dict(raw.get('diffusion') or {})
    xm = dict(raw.get('xm') or {})
    unknown = []
    for k, v in raw.items():
        if k in ('unet', 'diffusion', 'xm', 'flow', 'format', 'version', 'model', 'source', 'notes', 'weights'):
            continue
        if k in UNET_DEFAULTS or k in UNET1D_DEFAULTS:          # (1D: Unet1D / GaussianDiffusion1D)
            unet[k] = v
        elif k in PROCESS_ARGUMENTS:      # any family's process (issue 13: weight_convert.families)
            diffusion[k] = v
        elif k in XM_DEFAULTS:
            xm[k] = v
        elif k in NETWORK_ARGUMENTS:      # a Karras network's own arguments (issue 15)
            unet[k] = v
        else:
            unknown.append(k)
    unknown += [f'unet.{k}' for k in unet if k not in NETWORK_ARGUMENTS]
    unknown += [f'diffusion.{k}' for k in diffusion if k not in PROCESS_ARGUMENTS]
    unknown += [f'xm.{k}' for k in xm if k not in XM_DEFAULTS]
    if unknown:
        raise ConfigError(f'--config: unknown argument(s) {", ".join(unknown)}; Unet takes '
                          f'{", ".join(UNET_DEFAULTS)}; GaussianDiffusion takes {", ".join(DIFFUSION_DEFAULTS)}')
    out = {'unet': unet, 'diffusion': diffusion}
    if xm:
        out['xm'] = xm
    for k in ('model', 'flow'):          # which family (where the weights cannot tell: weight_convert.families)
        if raw.get(k) is not None:
            if not isinstance(raw[k], str):
                raise ConfigError(f'--config: "{k}" must be a class name (a string), not {raw[k]!r}')
            out[k] = raw[k]
    return out


# --- keyword arguments of the models -----------------------------------------------------------

def as_tuple(v):
    """A JSON list back as the tuple the reference's constructors take (``dim_mults``, ...)."""
    return tuple(v) if isinstance(v, list) else v


def kwargs_of(args):
    """``{name: value}`` of constructor arguments read from JSON (lists as tuples)."""
    return {k: as_tuple(v) for k, v in args.items()}


def unet_kwargs(cfg):
    """``Unet(**unet_kwargs(cfg))``."""
    return kwargs_of(cfg['unet'])


def diffusion_kwargs(cfg, require_image_size=True, **override):
    """``GaussianDiffusion(unet, **diffusion_kwargs(cfg))``; ``override``: arguments replaced
    (e.g. ``objective=``).  Without ``image_size`` (a state dict cannot tell it) raises
    :class:`ConfigError` unless ``require_image_size=False``."""
    d = kwargs_of(cfg.get('diffusion') or {})
    if d.get('image_size') is None and require_image_size:
        raise ConfigError('GaussianDiffusion: image_size cannot be inferred from the weights; '
                          'pass --image-size N (or "image_size" in --config)')
    d['schedule_fn_kwargs'] = dict(d.get('schedule_fn_kwargs') or {})
    d.update(override)
    return d


def diffusion1d_kwargs(cfg, require_seq_length=True):
    """``GaussianDiffusion1D(unet1d, **diffusion1d_kwargs(cfg))``.  Without ``seq_length`` (a
    state dict cannot tell it) raises :class:`ConfigError` unless ``require_seq_length=False``."""
    d = kwargs_of(cfg.get('diffusion') or {})
    if d.get('seq_length') is None and require_seq_length:
        raise ConfigError('GaussianDiffusion1D: seq_length cannot be inferred from the weights; '
                          'pass it in --config (e.g. \'{"seq_length": 128}\')')
    return d


def process_kwargs(cfg, require_image_size=True):
    """``<Process>(unet, **process_kwargs(cfg))`` for the processes of issue 13 (Learned,
    WeightedObjective, ContinuousTime, VParamContinuousTime, Elucidated); without
    ``image_size`` raises :class:`ConfigError` unless ``require_image_size=False``."""
    d = kwargs_of(cfg.get('diffusion') or {})
    if d.get('image_size') is None and require_image_size:
        raise ConfigError(f'{cfg.get("flow") or cfg.get("model")}: image_size cannot be inferred from the weights; '
                          f'pass --image-size N (or "image_size" in --config)')
    if 'schedule_fn_kwargs' in d:
        d['schedule_fn_kwargs'] = dict(d.get('schedule_fn_kwargs') or {})
    return d


def xm_kwargs(cfg):
    """``XMWrapper(process, **xm_kwargs(cfg))``."""
    return dict(XM_DEFAULTS, **kwargs_of(cfg.get('xm') or {}))
