"""The architecture config: what ``convert`` writes beside the weights
(``<stem>.config.json``), what ``--config`` takes, and the keyword arguments it gives
``Unet(...)`` and ``GaussianDiffusion(...)`` (of either framework).

    {"format": "ms_ddpm-config", "version": 1, "model": "GaussianDiffusion",
     "unet": {Unet keyword arguments}, "diffusion": {GaussianDiffusion keyword arguments}, ...}
"""

import json
import os
from collections.abc import Mapping

from ms_ddpm.io.errors import ConvertError
from weight_convert.rules import DIFFUSION_DEFAULTS, UNET_DEFAULTS

CONFIG_FORMAT = 'ms_ddpm-config'
CONFIG_VERSION = 1


class ConfigError(ConvertError):
    """The architecture config is missing something, or names unknown arguments."""


def config_path(weights_path):
    """The config written beside ``weights_path``: ``unet.ckpt`` -> ``unet.config.json``."""
    return os.path.splitext(str(weights_path))[0] + '.config.json'


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
    unknown = []
    for k, v in raw.items():
        if k in ('unet', 'diffusion', 'format', 'version', 'model', 'source', 'notes', 'weights'):
            continue
        if k in UNET_DEFAULTS:
            unet[k] = v
        elif k in DIFFUSION_DEFAULTS:
            diffusion[k] = v
        else:
            unknown.append(k)
    unknown += [f'unet.{k}' for k in unet if k not in UNET_DEFAULTS]
    unknown += [f'diffusion.{k}' for k in diffusion if k not in DIFFUSION_DEFAULTS]
    if unknown:
        raise ConfigError(f'--config: unknown argument(s) {", ".join(unknown)}; Unet takes '
                          f'{", ".join(UNET_DEFAULTS)}; GaussianDiffusion takes {", ".join(DIFFUSION_DEFAULTS)}')
    return {'unet': unet, 'diffusion': diffusion}


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
