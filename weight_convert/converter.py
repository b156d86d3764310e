"""Conversion: read any supported file, pick the weights, resolve the architecture config,
check every key and shape against the target network, write any supported file.

    from weight_convert import convert, load_model
    convert('results/model-10.pt', 'unet.ckpt', ema=True, config={'image_size': 32})
    model = load_model('unet.ckpt')        # ms_ddpm.GaussianDiffusion (or Unet), weights loaded
"""

import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping

from ms_ddpm.io.atomic import AtomicFile, clear_stale_temporaries, os_error_line
from ms_ddpm.io.checkpoint import Entry
from ms_ddpm.io.errors import ConvertError, DestinationError
from ms_ddpm.io.records import jsonable
from ms_ddpm.io.state import differences
from weight_convert.background import Background
from weight_convert.config import (  # noqa: F401  (re-exported: weight_convert.converter.* as before)
    CONFIG_FORMAT, CONFIG_VERSION, ConfigError, as_tuple, config_belongs, config_path, diffusion_kwargs,
    legacy_config_belongs, legacy_config_path, parse_explicit_config, read_config_file, tensor_index_hash, unet_kwargs,
    diffusion1d_kwargs, process_kwargs, xm_kwargs,
)
from weight_convert.core import StateDictMismatchError, load_torch_state_dict, torch_to_ms_name
from weight_convert.formats import WRITERS, format_of, read_file
from weight_convert.trainer import trainer_checkpoint  # noqa: F401  (the one builder of the reference Trainer's dict)
from weight_convert.infer import InferenceError, infer_diffusion_config, infer_unet_config, infer_diffusion1d_config, infer_unet1d_config
from weight_convert.inception import KIND as INCEPTION_KIND, convert_inception, is_inception
from weight_convert.rules import (
    DIFFUSION_BUFFERS, DIFFUSION_DEFAULTS, DIFFUSION_MODEL_PREFIX, EMA_PREFIX, ONLINE_PREFIX,
    TRAINER_KEYS, UNET_DEFAULTS, WRAPPER_PREFIXES, DIFFUSION1D_DEFAULTS, UNET1D_DEFAULTS,
)
from weight_convert import infer as _infer
from weight_convert.families import (
    BY_DIFFUSION, DIFFUSION_KINDS, KINDS_1D, PROCESS_KINDS, WRAPPER_KINDS, detect_kind,
)
from weight_convert.families import KIND_FAMILY, NETWORK_KINDS  # noqa: E402  (issue 15: bare Karras networks)
from weight_convert.families import CFG_KINDS, CFG_NETWORK_KINDS  # noqa: E402  (issue 14: classifier-free guidance)
from weight_convert.rules import NETWORK_ALIASES  # noqa: E402  (issue 15: --seq-length names KarrasUnet1D's seq_len)

SAFETENSORS_CONFIG_KEY = 'ms_ddpm_config'     # the config inside a file: safetensors metadata key, .ckpt string entry
CONFIG_KEY = SAFETENSORS_CONFIG_KEY
EMBEDDED_ORIGIN = {'safetensors': 'the safetensors metadata', 'mindspore': 'the .ckpt string entry ms_ddpm_config'}


class CheckpointMismatchError(ConvertError):
    """The weights do not fit the network the config describes; every difference is listed."""

    def __init__(self, path, mismatch, hint=''):
        self.missing, self.unexpected, self.mismatched = mismatch.missing, mismatch.unexpected, mismatch.mismatched
        super().__init__(f'{path}: ' + (f'{hint}\n' if hint else '') + str(mismatch))


class Source:
    """What was read: ``entries`` (name -> Entry, wrapper prefixes stripped), ``kind``
    ('Unet' | 'GaussianDiffusion'), ``info`` (trainer step, reference version, which
    weights), ``stored_config`` (a config found in/beside the file, or None)."""

    def __init__(self, path, fmt, entries, kind, info, stored_config=None, pending_check=None, ignored_configs=(),
                 flow=None):
        self.path, self.format, self.entries, self.kind = path, fmt, entries, kind
        self.flow = flow            # XMWrapper: the kind of the process it wraps
        self.info, self.stored_config = info, stored_config
        self.pending_check = pending_check
        self.ignored_configs = list(ignored_configs)    # 'file: why' of side files not read (not for this file)

    def start_check(self):
        """Start the background integrity check now (if it was deferred)."""
        if self.pending_check is not None:
            self.pending_check.start()

    def check_integrity(self):
        """Wait for a background integrity check (zip CRC-32) of the file; raise if it failed."""
        if self.pending_check is not None:
            self.pending_check.wait()

    @property
    def nbytes(self):
        return sum(e.nbytes for e in self.entries.values())

    def dtype_counts(self):
        counts = {}
        for e in self.entries.values():
            counts[e.dtype] = counts.get(e.dtype, 0) + 1
        return counts


# --- reading ---------------------------------------------------------------------------------

def _is_trainer(obj):
    return isinstance(obj, Mapping) and 'model' in obj and 'ema' in obj and set(obj) <= set(TRAINER_KEYS) | {'ema'}


def _select_weights(flat, path, ema, info):
    """An EMA state dict (ema_model.*/online_model.*) -> the chosen half; else as is."""
    keys = list(flat)
    if any(k.startswith(EMA_PREFIX) for k in keys):
        prefix = EMA_PREFIX if ema else ONLINE_PREFIX
        picked = OrderedDict((k[len(prefix):], v) for k, v in flat.items() if k.startswith(prefix))
        if not picked:
            raise ConvertError(f'{path}: an EMA state dict without {prefix}* weights'
                               + ('' if ema else '; use --ema for the EMA weights'))
        info['weights'] = 'ema' if ema else 'online'
        for k in ('initted', 'step'):
            if k in flat and k not in info:
                info['ema_' + k] = _scalar(flat[k])
        return picked
    if ema:
        raise ConvertError(f'{path}: --ema needs a reference Trainer checkpoint (or an EMA state dict with '
                           f'{EMA_PREFIX}* keys); this file holds a plain state dict')
    return flat


def _scalar(v):
    if isinstance(v, Entry):
        return v.data.item() if v.data.size == 1 else None
    try:
        return v.item()
    except Exception:
        return v


def _strip_wrappers(flat):
    for prefix in WRAPPER_PREFIXES:
        if flat and all(k.startswith(prefix) for k in flat):
            flat = OrderedDict((k[len(prefix):], v) for k, v in flat.items())
    return flat


MODEL_OPTION = '--model CLASS (or "model" in --config)'


def _detect_kind(entries, path, hint=None, flow_hint=None):
    """(kind, flow kind or None) of ``entries``; one line naming what the keys cannot tell."""
    found = detect_kind(entries, hint, flow_hint)
    fam = found.family
    if fam is not None and not fam.supported:
        raise ConvertError(f'{path}: a {fam.diffusion} checkpoint ({fam.note}); '
                           f'convert and verify do not support this family yet')
    if found.candidates:
        where = 'the process inside an XMWrapper (flow_model.*): ' if fam is not None and fam.wraps else ''
        notes = '; '.join(f'{c}: {BY_DIFFUSION[c].note}' for c in found.candidates)
        raise ConvertError(f'{path}: {where}{" or ".join(found.candidates)}: not inferable from the weights '
                           f'(the same keys and shapes: {notes}); pass {MODEL_OPTION}')
    if found.kind is not None:
        if hint is not None and hint != found.kind and hint in BY_DIFFUSION and found.kind in BY_DIFFUSION \
                and not (found.flow is not None and hint == found.flow.kind) \
                and not (found.kind in ('Unet', 'Unet1D') and BY_DIFFUSION[hint].network == found.kind):
            raise ConvertError(f'{path}: holds a {found.kind} state dict ({BY_DIFFUSION[found.kind].note}), '
                               f'not a {hint} one (as the model option or the stored config says)')
        return found.kind, (found.flow.kind if found.flow is not None else None)
    if is_inception(entries):
        return INCEPTION_KIND, None
    first = ', '.join(list(entries)[:5])
    raise ConvertError(f'{path}: neither a Unet nor a GaussianDiffusion state dict (no init_conv.weight or '
                       f'model.init_conv.weight); first keys: {first}')


def _stored_config(path, fmt, meta, entries, dtype_counts):
    """The config stored with ``path``: inside it (the safetensors metadata or a .ckpt string
    entry), else the side file written for it (``<file>.config.json``, checked to describe
    this very file), else an old ``<stem>.config.json`` that says it belongs to this file.
    -> (config or None, ['side file: why it was not read', ...])."""
    ignored = []
    if meta and CONFIG_KEY in meta:
        try:
            cfg = json.loads(meta[CONFIG_KEY])
            if isinstance(cfg, Mapping):
                return dict(cfg, _origin=EMBEDDED_ORIGIN.get(fmt, 'the weights file')), ignored
        except (json.JSONDecodeError, TypeError, ValueError):
            pass
        ignored.append(f'{EMBEDDED_ORIGIN.get(fmt, "the embedded config")}: not a JSON object')
    candidates = ((config_path(path), lambda c, side: config_belongs(c, path, entries)),
                  (legacy_config_path(path), lambda c, side: legacy_config_belongs(c, side, path, entries, dtype_counts)))
    for side, belongs in candidates:
        if not os.path.isfile(side):
            continue
        try:
            cfg = read_config_file(side)
        except ConfigError as e:
            ignored.append(f'{side}: {e}')
            continue
        why = belongs(cfg, side) if isinstance(cfg, Mapping) else 'not a JSON object'
        if why is None:
            return dict(cfg, _origin=side), ignored
        ignored.append(f'{side}: not read: {why}')
    return None, ignored


def read_weights(path, ema=False, background_check=False, model=None, flow=None):
    """Read a weights file of any supported format into a :class:`Source`.  ``model``: the
    class the weights are of, where the keys cannot tell (``--model``; else the config stored
    with the file says it; ``weight_convert.families``).  With
    ``background_check`` a torch file's CRC-32 check runs alongside (from
    ``source.start_check()`` if it is 'deferred'); call ``source.check_integrity()`` before
    trusting (committing) anything made from it."""
    check_crc = 'deferred' if background_check == 'deferred' else 'background' if background_check else True
    fmt, obj, pending, meta = read_file(path, check_crc=check_crc)
    path = str(path)
    info = {}
    if fmt == 'torch':
        obj = _torch_state_dict(obj, path, ema, info)
    entries = _select_weights(obj, path, ema, info)
    entries = _strip_wrappers(entries)
    entries = OrderedDict((torch_to_ms_name(k), v) for k, v in entries.items())
    counts = {}
    for e in entries.values():
        counts[e.dtype] = counts.get(e.dtype, 0) + 1
    stored, ignored = _stored_config(path, fmt, meta, entries, counts)
    hint, flow_hint = model, flow
    if isinstance(stored, Mapping) and stored.get('format') == CONFIG_FORMAT:
        hint = hint or (stored.get('model') if isinstance(stored.get('model'), str) else None)
        flow_hint = flow_hint or (stored.get('flow') if isinstance(stored.get('flow'), str) else None)
    kind, flow = _detect_kind(entries, path, hint, flow_hint)
    if isinstance(stored, Mapping) and isinstance(stored.get('source'), Mapping):
        for k in ('trainer_step', 'reference_version'):    # provenance travels with the weights
            if stored['source'].get(k) is not None:
                info.setdefault(k, stored['source'][k])
    return Source(path, fmt, entries, kind, info, stored, pending, ignored, flow=flow)


def _torch_state_dict(obj, path, ema, info):
    """What a ``torch.save`` file holds -> its state dict (a reference Trainer checkpoint's
    ``model``, or with ``ema`` its ``ema``), every value checked to be a tensor."""
    if _is_trainer(obj):
        info.update(trainer_step=_scalar(obj.get('step')), reference_version=obj.get('version'))
        if ema:
            if not isinstance(obj['ema'], Mapping):
                raise ConvertError(f'{path}: --ema: the Trainer checkpoint holds no EMA state')
            obj = obj['ema']
        else:
            obj = obj['model']
            info['weights'] = 'online (Trainer model)'
    if not isinstance(obj, Mapping):
        raise ConvertError(f'{path}: holds a {type(obj).__name__}, not a state dict (a mapping of names to tensors)')
    bad = [f'{k} ({type(v).__name__})' for k, v in obj.items() if not isinstance(v, Entry)]
    if bad:
        raise ConvertError(f'{path}: not a state dict: non-tensor entries: {", ".join(bad[:10])}')
    return OrderedDict((str(k), v) for k, v in obj.items())


# --- config ----------------------------------------------------------------------------------

def _unet_shapes(source):
    if source.kind in DIFFUSION_KINDS:
        n = len(DIFFUSION_MODEL_PREFIX)
        return {k[n:]: e.shape for k, e in source.entries.items() if k.startswith(DIFFUSION_MODEL_PREFIX)}
    return {k: e.shape for k, e in source.entries.items()}


def resolve_config(source, explicit=None):
    """The full config for ``source``: a config stored with the file (if it is for this kind
    of model), else one inferred from its keys and shapes; then ``explicit``
    (``parse_explicit_config`` output) on top."""
    explicit = explicit or {'unet': {}, 'diffusion': {}}
    if source.kind in PROCESS_KINDS or source.kind in CFG_KINDS:
        return _resolve_process(source, explicit)
    if source.kind in NETWORK_KINDS or source.kind in CFG_NETWORK_KINDS:
        return _resolve_network(source, explicit)
    diffusion = source.kind in DIFFUSION_KINDS
    one_d = source.kind in KINDS_1D
    unet_defaults, diffusion_defaults = (UNET1D_DEFAULTS, DIFFUSION1D_DEFAULTS) if one_d else (UNET_DEFAULTS, DIFFUSION_DEFAULTS)
    infer_unet, infer_diffusion = ((infer_unet1d_config, infer_diffusion1d_config) if one_d
                                   else (infer_unet_config, infer_diffusion_config))
    notes = {'inferred': [], 'not_inferred': {}, 'ambiguous': {}, 'given': []}
    if source.ignored_configs:
        notes['ignored_configs'] = list(source.ignored_configs)
    stored = source.stored_config
    if stored and stored.get('format') == CONFIG_FORMAT and stored.get('model') == source.kind:
        unet = dict(unet_defaults, **stored.get('unet', {}))
        diff = dict(diffusion_defaults, **(stored.get('diffusion') or {})) if diffusion else None
        notes['from_file'] = f'read from {stored.get("_origin", "the weights file")}'
    else:
        try:
            unet, rep = infer_unet(_unet_shapes(source), diffusion=diffusion)
        except InferenceError as e:
            if 'dim' not in explicit['unet']:
                raise ConvertError(f'{source.path}: cannot infer the Unet config: {e}; pass it with --config') from None
            unet, rep = dict(unet_defaults), {'not_inferred': {'*': f'inference failed ({e}); --config used'}}
        for k in ('inferred', 'not_inferred', 'ambiguous', 'given', 'contradictions'):
            if k in rep:
                notes[k] = rep[k] if k != 'not_inferred' else dict(rep[k])
        diff = None
        if diffusion:
            missing = [b for b in ('betas', 'alphas_cumprod') if b not in source.entries]
            if missing:
                raise ConvertError(f'{source.path}: GaussianDiffusion state dict without {", ".join(missing)}')
            buffers = {b: source.entries[b].value() for b in DIFFUSION_BUFFERS if b in source.entries}
            diff, drep = infer_diffusion(buffers)
            notes['inferred'] += drep['inferred']
            notes['not_inferred'].update(drep['not_inferred'])
            notes['ambiguous'].update(drep['ambiguous'])
    base_unet = dict(unet)
    for k, v in explicit['unet'].items():
        unet[k] = v
        notes['given'].append(k)
    if explicit['diffusion']:
        if not diffusion:
            raise ConfigError(f'{source.path}: holds a bare Unet; GaussianDiffusion arguments '
                              f'({", ".join(explicit["diffusion"])}) do not apply')
        for k, v in explicit['diffusion'].items():
            diff[k] = v
            notes['given'].append(k)
    for k in notes['given']:
        notes['not_inferred'].pop(k, None)
        notes['ambiguous'].pop(k, None)
    cfg = {'format': CONFIG_FORMAT, 'version': CONFIG_VERSION, 'model': source.kind,
           'unet': jsonable(unet), 'diffusion': jsonable(diff) if diffusion else None,
           'notes': notes}
    implied = 'the stored config says' if notes.get('from_file') else 'the weights imply'
    cfg['_conflicts'] = [f'{k}: given {explicit["unet"][k]!r}, {implied} {base_unet.get(k)!r}'
                         for k in explicit['unet'] if jsonable(explicit['unet'][k]) != jsonable(base_unet.get(k))
                         and k not in ('dropout', 'sinusoidal_pos_emb_theta', 'flash_attn')]
    if notes.get('from_file'):
        cfg['_conflicts'].append(f'(config {notes["from_file"]}; pass --config to override it)')
    return cfg


def _resolve_process(source, explicit):
    """``resolve_config`` for the processes of issue 13 (a row of ``weight_convert.families``
    each): the network inferred under the row's prefix, the process's arguments by the row's
    ``infer_diffusion`` function; an XMWrapper's own arguments (candidates, ...) leave no trace
    in the weights.  The config: ``{'model', 'unet', 'diffusion', ['flow', 'xm'], 'notes'}``."""
    wrapper = BY_DIFFUSION[source.kind] if source.kind in WRAPPER_KINDS else None
    inner_kind = source.flow if wrapper else source.kind
    fam = BY_DIFFUSION[inner_kind]
    outer = wrapper.prefix if wrapper else ''
    inner = OrderedDict((k[len(outer):], e) for k, e in source.entries.items())
    notes = {'inferred': [], 'not_inferred': {}, 'ambiguous': {}, 'given': []}
    if source.ignored_configs:
        notes['ignored_configs'] = list(source.ignored_configs)
    stored = source.stored_config
    xm = None
    if stored and stored.get('format') == CONFIG_FORMAT and stored.get('model') == source.kind and (
            wrapper is None or stored.get('flow') == inner_kind):
        unet = dict(fam.network_defaults, **stored.get('unet', {}))
        diff = dict(fam.diffusion_defaults, **(stored.get('diffusion') or {}))
        if wrapper is not None:
            xm = dict(wrapper.diffusion_defaults, **(stored.get('xm') or {}))
        notes['from_file'] = f'read from {stored.get("_origin", "the weights file")}'
    else:
        n = len(fam.prefix)
        shapes = {k[n:]: e.shape for k, e in inner.items() if k.startswith(fam.prefix)}
        try:
            needs = {k: explicit['unet'].get(k, explicit['diffusion'].get(k)) for k in fam.infer_needs}
            unet, rep = getattr(_infer, fam.infer_network)(shapes, diffusion=fam.out_dim_is_channels, **needs)
        except InferenceError as e:
            if 'dim' not in explicit['unet']:
                raise ConvertError(f'{source.path}: cannot infer the Unet config of the {inner_kind}: {e}; '
                                   f'pass it with --config') from None
            unet, rep = dict(fam.network_defaults), {'not_inferred': {'*': f'inference failed ({e}); --config used'}}
        for k in ('inferred', 'not_inferred', 'ambiguous', 'given', 'contradictions'):
            if k in rep:
                notes[k] = rep[k] if k != 'not_inferred' else dict(rep[k])
        buffers = {}
        if fam.buffers:
            missing = [b for b in ('betas', 'alphas_cumprod') if b not in inner]
            if missing:
                raise ConvertError(f'{source.path}: {inner_kind} state dict without {", ".join(missing)}')
            buffers = {b: inner[b].value() for b in DIFFUSION_BUFFERS if b in inner}
        try:
            infer = getattr(_infer, fam.infer_diffusion)
            if fam.verify == 'gaussian':       # an XMWrapper around GaussianDiffusion(1D): its buffers tell
                diff, drep = infer(buffers)
            else:
                diff, drep = infer({k: e.shape for k, e in inner.items()}, buffers, unet)
        except InferenceError as e:
            raise ConvertError(f'{source.path}: cannot infer the {inner_kind} config: {e}; pass it with --config') from None
        notes['inferred'] += drep['inferred']
        notes['not_inferred'].update(drep['not_inferred'])
        notes['ambiguous'].update(drep['ambiguous'])
        if wrapper is not None:
            xm = dict(wrapper.diffusion_defaults)
            notes['not_inferred'].update(wrapper.diffusion_not_inferable)
    base_unet = dict(unet)
    for k, v in explicit['unet'].items():
        unet[k] = v
        notes['given'].append(k)
    for k, v in explicit['diffusion'].items():
        if k not in fam.diffusion_defaults:
            raise ConfigError(f'{source.path}: holds a {inner_kind}; {k} is not one of its arguments '
                              f'({", ".join(fam.diffusion_defaults)})')
        diff[k] = v
        notes['given'].append(k)
    if 'channels' in diff and 'channels' not in explicit['diffusion']:
        diff['channels'] = unet.get('channels', diff['channels'])      # the process's channels are the Unet's
    for k in fam.infer_needs:        # a network argument the process holds too (KarrasUnet's image_size)
        if unet.get(k) is None:
            unet[k] = diff.get(k)
        if unet.get(k) is None:
            raise ConfigError(f'{source.path}: {inner_kind}: {k} cannot be inferred from the weights: '
                              f'{fam.network_not_inferable.get(k, "pass it with --config")}')
    for k, v in (explicit.get('xm') or {}).items():
        if wrapper is None:
            raise ConfigError(f'{source.path}: holds a {inner_kind}, not an XMWrapper; "xm" arguments do not apply')
        xm[k] = v
        notes['given'].append(k)
    for k in notes['given']:
        notes['not_inferred'].pop(k, None)
        notes['ambiguous'].pop(k, None)
    _check_num_classes(source, inner_kind, unet)
    cfg = {'format': CONFIG_FORMAT, 'version': CONFIG_VERSION, 'model': source.kind,
           'unet': jsonable(unet), 'diffusion': jsonable(diff), 'notes': notes}
    if wrapper is not None:
        cfg.update(flow=inner_kind, xm=jsonable(xm))
    implied = 'the stored config says' if notes.get('from_file') else 'the weights imply'
    cfg['_conflicts'] = [f'{k}: given {explicit["unet"][k]!r}, {implied} {base_unet.get(k)!r}'
                         for k in explicit['unet'] if jsonable(explicit['unet'][k]) != jsonable(base_unet.get(k))
                         and k not in ('dropout', 'sinusoidal_pos_emb_theta', 'flash_attn')]
    if notes.get('from_file'):
        cfg['_conflicts'].append(f'(config {notes["from_file"]}; pass --config to override it)')
    return cfg


def _resolve_network(source, explicit):
    """``resolve_config`` for a bare network verified on its own (issue 15: the Karras networks,
    rows of ``weight_convert.families`` with ``verify='network'``): every argument inferred by
    the row's ``infer_network`` function, the ones it needs but the weights do not hold
    (``infer_needs``: ``image_size``) given (``--image-size``, ``--config``) or named in one line.
    The config: ``{'model': <network>, 'unet': {...}, 'diffusion': None, 'notes'}``."""
    fam = KIND_FAMILY[source.kind]
    given = dict(explicit['unet'])
    for k, v in explicit['diffusion'].items():      # --image-size and top-level keys land there
        k = NETWORK_ALIASES.get(k, k) if NETWORK_ALIASES.get(k) in fam.network_defaults else k      # --seq-length
        if k not in fam.network_defaults:
            raise ConfigError(f'{source.path}: holds a bare {source.kind}; {k} is not one of its arguments '
                              f'({", ".join(fam.network_defaults)})')
        given.setdefault(k, v)
    notes = {'inferred': [], 'not_inferred': {}, 'ambiguous': {}, 'given': []}
    if source.ignored_configs:
        notes['ignored_configs'] = list(source.ignored_configs)
    stored = source.stored_config
    if stored and stored.get('format') == CONFIG_FORMAT and stored.get('model') == source.kind:
        net = dict(fam.network_defaults, **stored.get('unet', {}))
        notes['from_file'] = f'read from {stored.get("_origin", "the weights file")}'
    else:
        needs = {k: given.get(k) for k in fam.infer_needs + fam.infer_takes}
        try:
            net, rep = getattr(_infer, fam.infer_network)({k: e.shape for k, e in source.entries.items()}, **needs)
        except InferenceError as e:
            raise ConvertError(f'{source.path}: cannot infer the {source.kind} config: {e}; pass it with --config') from None
        for k in ('inferred', 'not_inferred', 'ambiguous'):
            notes[k] = rep[k] if k != 'not_inferred' else dict(rep[k])
    base = dict(net)
    for k, v in given.items():
        net[k] = v
        notes['given'].append(k)
    for k in notes['given']:
        notes['not_inferred'].pop(k, None)
        notes['ambiguous'].pop(k, None)
    for k in fam.infer_needs:
        if net.get(k) is None:
            raise ConfigError(f'{source.path}: {source.kind}: {k} cannot be inferred from the weights: '
                              f'{fam.network_not_inferable.get(k, "pass it with --config")}')
    _check_num_classes(source, source.kind, net)
    cfg = {'format': CONFIG_FORMAT, 'version': CONFIG_VERSION, 'model': source.kind,
           'unet': jsonable(net), 'diffusion': None, 'notes': notes}
    implied = 'the stored config says' if notes.get('from_file') else 'the weights imply'
    cfg['_conflicts'] = [f'{k}: given {given[k]!r}, {implied} {base.get(k)!r}' for k in given
                         if k not in fam.network_not_inferable and jsonable(given[k]) != jsonable(base.get(k))]
    if notes.get('from_file'):
        cfg['_conflicts'].append(f'(config {notes["from_file"]}; pass --config to override it)')
    return cfg


def _check_num_classes(source, kind, unet):
    """Issue 14: a class-conditional checkpoint's config must say num_classes (one line naming it)."""
    if (kind in CFG_KINDS or kind in CFG_NETWORK_KINDS) and unet.get('num_classes') is None:
        from weight_convert.rules import CFG_NUM_CLASSES
        raise ConfigError(f'{source.path}: {kind}: num_classes is not given and cannot be inferred '
                          f'({CFG_NUM_CLASSES}); pass it with --config \'{{"num_classes": N}}\'')


def build_network(cfg, framework='ms'):
    """A bare network of a ``verify='network'`` row (issue 15) in ``framework`` ('ms' | 'torch')."""
    import importlib
    fam = KIND_FAMILY[cfg['model']]
    root = 'ms_ddpm' if framework == 'ms' else 'denoising_diffusion_pytorch'
    return getattr(importlib.import_module(f'{root}.{fam.network_module or fam.module}'),
                   class_name(fam.network))(**unet_kwargs(cfg))


def class_name(kind):
    """The class a kind names: 'classifier_free_guidance.Unet' -> 'Unet' (issue 14: kinds qualified by
    their module where two families' classes share a name)."""
    return kind.rsplit('.', 1)[-1]


def process_of(cfg):
    """(the family row of the process, the XMWrapper row or None) of a process config."""
    if cfg['model'] in WRAPPER_KINDS:
        return BY_DIFFUSION[cfg['flow']], BY_DIFFUSION[cfg['model']]
    return BY_DIFFUSION[cfg['model']], None


def build_process(cfg, framework='ms', unet=None):
    """The process of a config (issue 13's families) in ``framework`` ('ms' = ms_ddpm, 'torch' =
    the reference), around ``unet`` (default: a new one)."""
    import importlib
    root = 'ms_ddpm' if framework == 'ms' else 'denoising_diffusion_pytorch'
    fam, wrapper = process_of(cfg)
    net_module = fam.network_module or (fam.module if fam.dims == 1 else 'denoising_diffusion_pytorch')
    net_cls = getattr(importlib.import_module(f'{root}.{net_module}'), class_name(fam.network))
    unet = net_cls(**unet_kwargs(cfg)) if unet is None else unet
    proc = getattr(importlib.import_module(f'{root}.{fam.module}'), class_name(fam.process_class or fam.diffusion))(
        unet, **process_kwargs(cfg, require_image_size=False))
    if wrapper is not None:
        proc = getattr(importlib.import_module(f'{root}.{wrapper.module}'), wrapper.diffusion)(proc, **xm_kwargs(cfg))
    return proc


# --- the target network ------------------------------------------------------------------------

def build_ms_model(cfg, init=True):
    """``ms_ddpm.Unet`` / ``GaussianDiffusion`` from a config; with ``init=False`` the
    parameters are declared but not initialised (cheap: for their names and shapes)."""
    import ms_ddpm
    from mindspore.nn.utils import no_init_parameters

    def build():
        if cfg['model'] in PROCESS_KINDS or cfg['model'] in CFG_KINDS:
            return build_process(cfg)
        if cfg['model'] in NETWORK_KINDS or cfg['model'] in CFG_NETWORK_KINDS:
            return build_network(cfg)
        if cfg['model'] in KINDS_1D:
            unet = ms_ddpm.Unet1D(**unet_kwargs(cfg))
            if cfg['model'] == 'GaussianDiffusion1D':
                return ms_ddpm.GaussianDiffusion1D(unet, **diffusion1d_kwargs(cfg))
            return unet
        unet = ms_ddpm.Unet(**unet_kwargs(cfg))
        if cfg['model'] == 'GaussianDiffusion':
            return ms_ddpm.GaussianDiffusion(unet, **diffusion_kwargs(cfg))
        return unet
    try:
        if init:
            return build()
        with no_init_parameters():
            return build()
    except (TypeError, ValueError, AssertionError) as e:
        raise ConfigError(f'cannot build {cfg["model"]} from the config: {type(e).__name__}: {e}') from None


def target_spec(cfg):
    """OrderedDict name -> shape of the target network's parameters (its own parameter set)."""
    net = build_ms_model(cfg, init=False)
    return OrderedDict((name, tuple(p.shape)) for name, p in net.parameters_and_names())


def check_against(source, spec, cfg):
    """Strict: every missing, unexpected and mis-shaped key in one error.  Returns the entries
    in the target network's order."""
    entries = source.entries
    missing, unexpected, mismatched = differences(spec, {k: e.shape for k, e in entries.items()})
    if missing or unexpected or mismatched:
        hint = ''
        contradictions = (cfg.get('notes') or {}).get('contradictions') or {}
        named = [f'{k} has shape {tuple(got)}; the architecture inferred from the other keys expects {tuple(want)}'
                 for k, got, want in mismatched if k in contradictions]
        if named:
            hint = '\n'.join(named) + '\n(' + '; '.join(contradictions.values()) + ')\nand so:'
        elif cfg.get('_conflicts'):
            hint = 'the config used differs from the weights:\n' + '\n'.join(
                f'    {c}' for c in cfg['_conflicts']) + '\nand so:'
        raise CheckpointMismatchError(source.path, StateDictMismatchError(
            missing, unexpected, mismatched, target=f'{cfg["model"]}({_brief(cfg)})'), hint)
    return OrderedDict((k, entries[k]) for k in spec)


def _brief(cfg):
    u = cfg['unet']
    return ', '.join(f'{k}={v}' for k, v in u.items() if v != UNET_DEFAULTS.get(k) or k == 'dim')


# --- writing ------------------------------------------------------------------------------------

def _public_config(cfg, source, dst, fmt):
    out = {k: v for k, v in cfg.items() if not k.startswith('_')}
    out['weights'] = {'file': os.path.basename(str(dst)), 'format': fmt, 'dtypes': source.dtype_counts()}
    out['source'] = dict(file=os.path.abspath(source.path), format=source.format, **source.info)
    return out


def diffusion_entries_for_unet(entries, cfg):
    """Wrap bare Unet weights into GaussianDiffusion weights: the schedule buffers computed by
    ``ms_ddpm.GaussianDiffusion`` from the diffusion config."""
    gd_cfg = dict(cfg, model='GaussianDiffusion')
    net = build_ms_model(gd_cfg, init=False)
    out = OrderedDict()
    for name, p in net.parameters_and_names():
        if name in DIFFUSION_BUFFERS:
            out[name] = Entry.from_numpy(p.asnumpy())
        else:
            out[name] = entries[name[len(DIFFUSION_MODEL_PREFIX):]]
    return out


def convert(src, dst, ema=False, config=None, trainer=False, step=None, progress=None, log=None, force=False):
    """Convert ``src`` to ``dst`` (formats from the extensions).  ``config``: explicit
    arguments (dict, JSON text or JSON file).  ``trainer``: write a reference Trainer-style
    checkpoint (``.pt`` only).  An existing ``dst`` is refused (:class:`DestinationError`)
    unless ``force``.  The config goes inside ``dst`` (``.ckpt``, ``.safetensors``) and
    beside it (``config_path(dst)``).  Returns a summary dict.  Raises ConvertError
    subclasses (an OSError of the destination as one-line :class:`DestinationError`)."""
    log = log or (lambda *a: None)
    t0 = time.perf_counter()
    phases = OrderedDict()

    def phase(name):
        now = time.perf_counter()
        phases[name] = now - phase.last
        phase.last = now
    phase.last = t0
    src, dst = str(src), str(dst)
    out_fmt = format_of(dst, role='destination')
    format_of(src)
    if os.path.exists(dst) and os.path.exists(src) and os.path.samefile(src, dst):
        raise ConvertError(f'{dst}: is the source file; choose another destination')
    if trainer and out_fmt != 'torch':
        raise ConvertError(f'{dst}: a Trainer-style checkpoint is a PyTorch file; use a .pt destination')
    if not os.path.isdir(os.path.dirname(os.path.abspath(dst))):
        raise ConvertError(f'{dst}: destination directory {os.path.dirname(os.path.abspath(dst))} does not exist')
    if os.path.isdir(dst):
        raise DestinationError(f'{dst}: is a directory; give a file name')
    if not force and os.path.lexists(dst):
        raise DestinationError(f'{dst}: exists; give --force to overwrite it')
    explicit = parse_explicit_config(config)
    for stale in clear_stale_temporaries(dst) + clear_stale_temporaries(config_path(dst)):
        log(f'removed {stale}: a temporary file left by an earlier, killed conversion')
    try:
        return _convert(src, dst, out_fmt, explicit, ema, trainer, step, progress, log, t0, phases, phase, force)
    except ConfigError as e:
        if str(e).startswith(src):
            raise
        raise ConfigError(f'{src}: {e}') from None


def _convert(src, dst, out_fmt, explicit, ema, trainer, step, progress, log, t0, phases, phase, force=False):
    # The source's CRC-32 check is deferred until its bytes are copied: it then runs while the
    # output is fsynced (I/O), instead of competing with the copy and the key check for the CPU.
    source = read_weights(src, ema=ema, background_check='deferred', model=explicit.get('model'),
                          flow=explicit.get('flow'))
    phase('read')
    log(f'read {src}: {source.format}, {source.kind}, {len(source.entries)} tensors, '
        f'{source.nbytes / 2**20:.1f} MiB, dtypes {source.dtype_counts()}'
        + ''.join(f', {k}={v}' for k, v in source.info.items()))
    if source.kind == INCEPTION_KIND:          # pytorch-fid's FID weights: a plain state dict
        return convert_inception(source, dst, out_fmt, WRITERS, config_path, log, force=force)
    from ms_ddpm.version import REFERENCE_VERSION
    written_by = source.info.get('reference_version')
    if written_by is not None and str(written_by) != REFERENCE_VERSION:
        log(f'note: {src} was written by denoising-diffusion-pytorch {written_by}; ms_ddpm mirrors '
            f'{REFERENCE_VERSION} (the keys and shapes are checked all the same)')
    wrap_unet = trainer and source.kind == 'Unet'
    if trainer and (source.kind in NETWORK_KINDS or source.kind in CFG_NETWORK_KINDS):
        raise ConfigError(f'{dst}: a Trainer checkpoint holds a diffusion process; {src} is a bare {source.kind} '
                          f'(wrapping it is not supported)')
    if trainer and source.kind == 'Unet1D':
        raise ConfigError(f'{dst}: a Trainer1D checkpoint holds a GaussianDiffusion1D; {src} is a bare Unet1D '
                          f'(wrapping it is not supported: convert a GaussianDiffusion1D state dict)')
    cfg = resolve_config(source, dict(explicit, diffusion={}) if wrap_unet else explicit)
    for why in cfg['notes'].get('ignored_configs', ()):
        log(f'note: config {why}')
    phase('config')
    # Outputs are written speculatively, in the source's order, while the target network is
    # built and every key checked; a failed check stops the writer and deletes its temporary
    # file.  A torch output is rewritten in the network's (the reference state dict's) key
    # order if the source's differs.  Trainer-style checkpoints are written after the check.
    speculative = not trainer
    if speculative:
        if cfg['model'] == 'GaussianDiffusion':
            diffusion_kwargs(cfg)   # the config beside the weights must be enough to build the model
        elif cfg['model'] == 'GaussianDiffusion1D':
            diffusion1d_kwargs(cfg)
        elif cfg['model'] in PROCESS_KINDS or cfg['model'] in CFG_KINDS:
            process_kwargs(cfg)
        entries = source.entries
    else:
        entries = check_against(source, target_spec(cfg), cfg)
        phase('check')
        if trainer:
            if source.kind == 'Unet':
                if not explicit['diffusion']:
                    raise ConfigError(f'{dst}: a Trainer checkpoint holds a GaussianDiffusion; {src} is a bare Unet: '
                                      f'pass its diffusion arguments (at least --image-size)')
                cfg['diffusion'] = jsonable(dict(DIFFUSION_DEFAULTS, **explicit['diffusion']))
                cfg['model'] = 'GaussianDiffusion'
                entries = diffusion_entries_for_unet(entries, cfg)
            elif cfg['model'] in PROCESS_KINDS or cfg['model'] in CFG_KINDS:
                process_kwargs(cfg)     # image_size is needed to use the Trainer
            else:
                diffusion_kwargs(cfg)   # image_size is needed to use the Trainer
        elif cfg['model'] == 'GaussianDiffusion':
            diffusion_kwargs(cfg)

    public = _public_config(cfg, source, dst, out_fmt)
    total = sum(e.nbytes for e in entries.values())
    if progress is not None and hasattr(progress, 'start'):
        progress.start(total)
    side_path = config_path(dst)
    side = out = writer = None
    stop = threading.Event()
    archive = os.path.splitext(os.path.basename(dst))[0]     # what torch.save(obj, dst) names it
    try:
        out = AtomicFile(dst, overwrite=force)

        def write_and_sync(write, **kw):     # in the writer thread: the fsync overlaps the key check
            write(entries, out.file, progress=progress, stop=stop, **kw)
            source.start_check()
            out.sync()
        write = WRITERS[out_fmt]
        embedded = json.dumps(public)
        options = {'safetensors': {'metadata': {'format': 'pt', SAFETENSORS_CONFIG_KEY: embedded}},
                   'mindspore': {'strings': {CONFIG_KEY: embedded}},
                   'torch': {'archive': archive}}.get(out_fmt, {})
        if trainer:
            ckpt_step = step if step is not None else (source.info.get('trainer_step') or 0)
            source.start_check()
            write(trainer_checkpoint(entries, cfg, step=ckpt_step), out.file, progress=progress, **options)
        else:
            writer = Background(lambda: write_and_sync(write, **options))
        if speculative:
            try:
                checked = check_against(source, target_spec(cfg), cfg)
            except BaseException:
                stop.set()
                writer.thread.join()
                raise
            phase('check')
            writer.wait()
            if out_fmt == 'torch' and list(checked) != list(entries):
                out.file.seek(0)
                out.file.truncate()
                write(checked, out.file, **options)
        phase('write')
        out.close()
        phase('fsync')
        source.check_integrity()
        phase('crc_wait')
        # the side file records which file it describes (its size and tensor index): it is
        # never read for another file (one with the same stem, or a later file at this path)
        public['weights'].update(bytes=os.path.getsize(out.tmp), index=tensor_index_hash(entries))
        side = AtomicFile(side_path)
        side.file.write((json.dumps(public, indent=2) + '\n').encode())
        side.close()
        out.commit()
        side.commit()
        phase('commit')
    except BaseException as err:
        stop.set()
        if writer is not None:
            writer.thread.join()
        for f in (side, out):
            if f is not None:
                f.abort()
        if isinstance(err, OSError):
            raise DestinationError(os_error_line(err, dst)) from None
        raise
    return {'src': src, 'dst': dst, 'config_file': config_path(dst), 'config': public, 'kind': cfg['model'],
            'tensors': len(entries), 'bytes': total, 'seconds': time.perf_counter() - t0, 'phases': dict(phases)}


# --- one-call loader ----------------------------------------------------------------------------

def load_model(path, config=None, ema=False, train=False):
    """Build the ms_ddpm model that ``path``'s weights belong to and load them strictly.

    The architecture comes from the config ``convert`` stored inside the file (``.ckpt``,
    ``.safetensors``), else the one beside it written for this very file
    (``<file>.config.json``; an older ``<stem>.config.json`` only if it says it belongs to
    this file), else it is inferred from the keys (a GaussianDiffusion then needs
    ``config={'image_size': N}``).
    ``config`` (dict / JSON / file) overrides.  Values are cast exactly to the network's
    float32 parameters (fp16 and bf16 widen without rounding)."""
    explicit = parse_explicit_config(config)
    source = read_weights(path, ema=ema, model=explicit.get('model'), flow=explicit.get('flow'))
    cfg = resolve_config(source, explicit)
    try:
        net = build_ms_model(cfg, init=False)
    except ConfigError as e:
        raise ConfigError(f'{path}: {e}') from None
    spec = OrderedDict((name, tuple(p.shape)) for name, p in net.parameters_and_names())
    entries = check_against(source, spec, cfg)
    load_torch_state_dict(net, OrderedDict((k, e.value()) for k, e in entries.items()))
    net.set_train(train)
    net.ms_ddpm_config = {k: v for k, v in cfg.items() if not k.startswith('_')}
    return net
