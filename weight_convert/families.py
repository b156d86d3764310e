"""The families ``convert`` and ``verify`` know, as data: the one table.

One row per family: the reference module (= twin module), its diffusion class and network
class, the data dims, how a state dict of it is recognised (a marker key, the rank of that
key's weight, the prefix its network's keys carry inside the process, and ``match``: what else
the state dict must (not) hold), the constructor defaults of both classes, the inference
functions (names in ``weight_convert.infer``), what a state dict cannot tell (and why, in one
line), and which comparisons ``verify`` runs (``verify``: 'gaussian' = the GaussianDiffusion
engine, 'process' = the network, the process's own loss with injected draws, its sampler with
shared noise).  The converter's kinds (``DIFFUSION_KINDS``, ``KINDS_1D``, ``detect_kind``), its
config resolution and model building, and verify's ``FAMILIES`` are read off this table; a new
family is a new row (+ its infer / match functions), not a new if-branch.

How the processes of issue 13 are told apart (wrapper prefixes already stripped):

=====================================  =====================================================
``flow_model.`` on every key           XMWrapper around the process the rest describes
``net.init_conv.weight``               ElucidatedDiffusion
``model.`` + the 13 schedule buffers   GaussianDiffusion (final_conv gives ``channels``),
                                       LearnedGaussianDiffusion (``2 * channels``),
                                       WeightedObjectiveGaussianDiffusion (``2 * channels + 2``)
``model.``, no buffers, ``log_snr.*``  ContinuousTimeGaussianDiffusion(noise_schedule='learned')
``model.``, no buffers, no log_snr     ContinuousTime (linear / cosine) or VParamContinuousTime:
                                       the same keys -> not inferable, named; the config stored
                                       with the file or ``--model`` decides
``input_block.weight`` (rank 4)        a bare KarrasUnet (issue 15; kind = the network);
                                       rank 3 / 5: KarrasUnet1D / KarrasUnet3D
``net.input_block.weight``             ElucidatedDiffusion(KarrasUnet) (issue 15)
``ups.0.0.net.0.*`` + final_conv       a bare simple_diffusion UViT (issue 15: its Upsample convs)
``model.`` + the same, no buffers      simple_diffusion.GaussianDiffusion(UViT) (issue 15)
=====================================  =====================================================
"""

from collections import namedtuple

from weight_convert.rules import (
    CONTINUOUS_DEFAULTS, CONTINUOUS_NOT_INFERABLE, DIFFUSION1D_DEFAULTS, DIFFUSION1D_NOT_INFERABLE,
    DIFFUSION_DEFAULTS, DIFFUSION_MODEL_PREFIX, DIFFUSION_NOT_INFERABLE, ELUCIDATED_DEFAULTS,
    ELUCIDATED_NOT_INFERABLE, ELUCIDATED_PREFIX, LEARNED_DEFAULTS, LEARNED_NOT_INFERABLE,
    LEARNED_SCHEDULE_PREFIX, UNET1D_DEFAULTS, UNET1D_NOT_INFERABLE, UNET_DEFAULTS, UNET_NOT_INFERABLE,
    VPARAM_DEFAULTS, VPARAM_NOT_INFERABLE, WEIGHTED_DEFAULTS, WEIGHTED_NOT_INFERABLE, XM_DEFAULTS,
    XM_NOT_INFERABLE, XM_PREFIX, KARRAS_UNET_DEFAULTS, KARRAS_UNET_NOT_INFERABLE,
)
from weight_convert.rules import (  # noqa: E402  (issue 14: classifier-free guidance)
    CFG_DIFFUSION_DEFAULTS, CFG_DIFFUSION_KIND, CFG_DIFFUSION_NOT_INFERABLE, CFG_MARKER, CFG_MODULE, CFG_UNET_DEFAULTS,
    CFG_UNET_KIND, CFG_UNET_NOT_INFERABLE,
)
from weight_convert.rules import (  # noqa: E402  (issue 15: KarrasUnet1D / 3D)
    KARRAS_UNET1D_DEFAULTS, KARRAS_UNET1D_NOT_INFERABLE, KARRAS_UNET3D_DEFAULTS, KARRAS_UNET3D_NOT_INFERABLE,
)
from weight_convert.rules import (  # noqa: E402  (issue 15: simple_diffusion.UViT / GaussianDiffusion)
    SIMPLE_DIFFUSION_DEFAULTS, SIMPLE_DIFFUSION_KIND, SIMPLE_DIFFUSION_NOT_INFERABLE, SIMPLE_MODULE, UVIT_DEFAULTS,
    UVIT_KIND, UVIT_MARKER, UVIT_NOT_INFERABLE,
)

Family = namedtuple('Family', [
    'diffusion',        # diffusion class name (a checkpoint of it: network under `prefix` (+ buffers))
    'network',          # network class name (a bare network checkpoint)
    'module',           # reference module = twin module (ms_ddpm.<module>)
    'dims',             # data dims: 2 images, 1 sequences
    'marker',           # network key that is always present (recognition), and ...
    'marker_ndim',      # ... the rank of its weight (Conv2d 4, Conv1d 3)
    'prefix',           # the network's key prefix inside the diffusion process
    'buffers',          # whether the process stores schedule buffers (betas, alphas_cumprod, ...)
    'network_defaults', 'diffusion_defaults',
    'infer_network', 'infer_diffusion',     # names in weight_convert.infer
    'network_not_inferable', 'diffusion_not_inferable',
    'comparisons',      # what verify compares (verify.core KINDS prefixes)
    'supported',        # convert/verify build it (False: recognised and named only)
    'requires',         # a key prefix the state dict must also hold (None: the marker suffices)
    'note',             # what the checkpoint is, in words (messages)
    'match',            # entries -> bool: the rest of the recognition (None: marker + buffers suffice)
    'out_dim_is_channels',  # the process needs Unet out_dim == channels (the channels reading)
    'verify',           # 'gaussian' (the GaussianDiffusion engine) | 'process' (per-process loss/sampler)
                        # | 'network' (a bare network on its own: its forward; ms_ddpm_tools.verify.networks)
    'wraps',            # a wrapper of another process (XMWrapper): the rest of the keys under `prefix`
    'network_module',   # the network's module when it is not the diffusion's (None: as `module`; issue 15)
    'infer_needs',      # the config values the network's inference takes (image_size: attn_res is relative to it)
    'infer_takes',      # ... and those it takes when given, not required (KarrasUnet3D's downsample_types)
    'process_class',    # the process's class when the kind names more (None: `diffusion`; issue 15's
                        # 'ElucidatedDiffusion(KarrasUnet)' is an ElucidatedDiffusion)
], defaults=(None, '', None, True, 'gaussian', False, None, (), (), None))

VERIFY_ALL = ('layer/', 'unet/', 'loss/', 'sample/', 'buffer/', 'noising/')
VERIFY_PROCESS = ('layer/', 'unet/', 'loss/', 'sample/')
VERIFY_PROCESS_BUFFERS = VERIFY_PROCESS + ('buffer/',)
VERIFY_NETWORK = ('layer/', 'unet/')        # a bare network (verify='network'): its forward only

TIME_WEIGHTS = 'time_mlp.0.weights'         # RandomOrLearnedSinusoidalPosEmb: the continuous processes need it


def _conv_io(entries, prefix):
    """(init_conv inputs, final_conv outputs) of the Unet under ``prefix``."""
    return entries[prefix + 'init_conv.weight'].shape[1], entries[prefix + 'final_conv.weight'].shape[0]


def _gaussian(entries):
    if prefix_missing(entries, DIFFUSION_MODEL_PREFIX + 'final_conv.weight'):
        return True
    i, o = _conv_io(entries, DIFFUSION_MODEL_PREFIX)
    if o == 2 * i or o == 2 * i + 2:
        return False            # Learned / WeightedObjective
    # without its buffers a GaussianDiffusion is only taken for one when the continuous
    # processes cannot be it (they need learned/random sinusoidal times): then resolve_config
    # names the missing buffers
    return 'betas' in entries or DIFFUSION_MODEL_PREFIX + TIME_WEIGHTS not in entries


def _learned(entries):
    i, o = _conv_io(entries, DIFFUSION_MODEL_PREFIX)
    return 'betas' in entries and o == 2 * i


def _weighted(entries):
    i, o = _conv_io(entries, DIFFUSION_MODEL_PREFIX)
    return 'betas' in entries and o == 2 * i + 2


def _continuous(entries):
    return 'betas' not in entries and DIFFUSION_MODEL_PREFIX + TIME_WEIGHTS in entries


def _vparam(entries):
    return _continuous(entries) and not any(k.startswith(LEARNED_SCHEDULE_PREFIX) for k in entries)


def prefix_missing(entries, key):
    return key not in entries


FAMILIES = (
    Family('GaussianDiffusion', 'Unet', 'denoising_diffusion_pytorch', 2, 'init_conv.weight', 4,
           DIFFUSION_MODEL_PREFIX, True, UNET_DEFAULTS, DIFFUSION_DEFAULTS,
           'infer_unet_config', 'infer_diffusion_config', UNET_NOT_INFERABLE, DIFFUSION_NOT_INFERABLE,
           VERIFY_ALL, True, match=_gaussian, note='the Unet under model. and the 13 schedule buffers'),
    Family('GaussianDiffusion1D', 'Unet1D', 'denoising_diffusion_pytorch_1d', 1, 'init_conv.weight', 3,
           DIFFUSION_MODEL_PREFIX, True, UNET1D_DEFAULTS, DIFFUSION1D_DEFAULTS,
           'infer_unet1d_config', 'infer_diffusion1d_config', UNET1D_NOT_INFERABLE, DIFFUSION1D_NOT_INFERABLE,
           VERIFY_ALL, True),
    # issue 13's processes: they wrap the 2D Unet
    Family('LearnedGaussianDiffusion', 'Unet', 'learned_gaussian_diffusion', 2, 'init_conv.weight', 4,
           DIFFUSION_MODEL_PREFIX, True, UNET_DEFAULTS, LEARNED_DEFAULTS,
           'infer_unet_config', 'infer_learned_config', UNET_NOT_INFERABLE, LEARNED_NOT_INFERABLE,
           VERIFY_PROCESS_BUFFERS, True, note='the Unet under model. (out_dim = 2 * channels) and the schedule buffers',
           match=_learned, out_dim_is_channels=False, verify='process'),
    Family('WeightedObjectiveGaussianDiffusion', 'Unet', 'weighted_objective_gaussian_diffusion', 2,
           'init_conv.weight', 4, DIFFUSION_MODEL_PREFIX, True, UNET_DEFAULTS, WEIGHTED_DEFAULTS,
           'infer_unet_config', 'infer_weighted_config', UNET_NOT_INFERABLE, WEIGHTED_NOT_INFERABLE,
           VERIFY_PROCESS_BUFFERS, True,
           note='the Unet under model. (out_dim = 2 * channels + 2) and the schedule buffers',
           match=_weighted, out_dim_is_channels=False, verify='process'),
    Family('ContinuousTimeGaussianDiffusion', 'Unet', 'continuous_time_gaussian_diffusion', 2, 'init_conv.weight', 4,
           DIFFUSION_MODEL_PREFIX, False, UNET_DEFAULTS, CONTINUOUS_DEFAULTS,
           'infer_unet_config', 'infer_continuous_config', UNET_NOT_INFERABLE, CONTINUOUS_NOT_INFERABLE,
           VERIFY_PROCESS, True,
           note='the Unet under model., no schedule buffers (a learned noise schedule: log_snr.*)',
           match=_continuous, verify='process'),
    Family('VParamContinuousTimeGaussianDiffusion', 'Unet', 'v_param_continuous_time_gaussian_diffusion', 2,
           'init_conv.weight', 4, DIFFUSION_MODEL_PREFIX, False, UNET_DEFAULTS, VPARAM_DEFAULTS,
           'infer_unet_config', 'infer_vparam_config', UNET_NOT_INFERABLE, VPARAM_NOT_INFERABLE,
           VERIFY_PROCESS, True, note='the Unet under model., no schedule buffers',
           match=_vparam, verify='process'),
    Family('ElucidatedDiffusion', 'Unet', 'elucidated_diffusion', 2, 'init_conv.weight', 4,
           ELUCIDATED_PREFIX, False, UNET_DEFAULTS, ELUCIDATED_DEFAULTS,
           'infer_unet_config', 'infer_elucidated_config', UNET_NOT_INFERABLE, ELUCIDATED_NOT_INFERABLE,
           VERIFY_PROCESS, True, note='the Unet under net., no schedule buffers', verify='process'),
    Family('XMWrapper', None, 'xm', 2, None, None, XM_PREFIX, False, {}, XM_DEFAULTS,
           None, None, {}, XM_NOT_INFERABLE, VERIFY_PROCESS, True,
           note='the wrapped process under flow_model.', verify='process', wraps=True),
    # issue 15: bare Karras networks (no diffusion class: the row's diffusion is the network itself,
    # verify='network' = the network's forward at a few noise levels, eval mode).  ElucidatedDiffusion(KarrasUnet) is
    # not a row: both frameworks' ElucidatedDiffusion assert net.random_or_learned_sinusoidal_cond,
    # which KarrasUnet lacks (docs/convert.md)
    Family('KarrasUnet', 'KarrasUnet', 'karras_unet', 2, 'input_block.weight', 4, '', False,
           KARRAS_UNET_DEFAULTS, {}, 'infer_karras_unet_config', None, KARRAS_UNET_NOT_INFERABLE, {},
           VERIFY_NETWORK, True, note='a bare KarrasUnet (input_block.*, encoders downs.*, decoders ups.*)',
           verify='network', infer_needs=('image_size',)),
    # issue 14: classifier-free guidance (its own Unet and GaussianDiffusion, the same class names as the
    # main module's: kinds qualified by the module).  `requires` (classes_mlp.*, the class conditioning)
    # makes it more specific than GaussianDiffusion / Unet, whose keys it otherwise shares the shape of;
    # verify='cfg': the conditional path (ms_ddpm_tools.verify.cfg)
    Family(CFG_DIFFUSION_KIND, CFG_UNET_KIND, CFG_MODULE, 2, 'init_conv.weight', 4, DIFFUSION_MODEL_PREFIX, True,
           CFG_UNET_DEFAULTS, CFG_DIFFUSION_DEFAULTS, 'infer_cfg_unet_config', 'infer_cfg_diffusion_config',
           CFG_UNET_NOT_INFERABLE, CFG_DIFFUSION_NOT_INFERABLE, VERIFY_PROCESS_BUFFERS, True,
           requires=DIFFUSION_MODEL_PREFIX + CFG_MARKER,
           note='the class-conditional Unet under model. (classes_emb, null_classes_emb, classes_mlp) and the '
                'schedule buffers', verify='cfg', network_module=CFG_MODULE),
    Family('KarrasUnet1D', 'KarrasUnet1D', 'karras_unet_1d', 1, 'input_block.weight', 3, '', False,
           KARRAS_UNET1D_DEFAULTS, {}, 'infer_karras_unet1d_config', None, KARRAS_UNET1D_NOT_INFERABLE, {},
           VERIFY_NETWORK, True, note='a bare KarrasUnet1D (input_block.* Conv1d, encoders downs.*, decoders ups.*)',
           verify='network', infer_needs=('seq_len',)),
    Family('KarrasUnet3D', 'KarrasUnet3D', 'karras_unet_3d', 3, 'input_block.weight', 5, '', False,
           KARRAS_UNET3D_DEFAULTS, {}, 'infer_karras_unet3d_config', None, KARRAS_UNET3D_NOT_INFERABLE, {},
           VERIFY_NETWORK, True, note='a bare KarrasUnet3D (input_block.* Conv3d, encoders downs.*, decoders ups.*)',
           verify='network', infer_needs=('image_size', 'frames'), infer_takes=('downsample_types',)),
    # ElucidatedDiffusion around a KarrasUnet (the reference refuses it: its assert reads
    # net.random_or_learned_sinusoidal_cond, which KarrasUnet lacks; the twin accepts it and verify
    # patches the reference for the comparison: reference.upstream_fixes 'karras_continuous_noise')
    Family('ElucidatedDiffusion(KarrasUnet)', 'KarrasUnet', 'elucidated_diffusion', 2, 'input_block.weight', 4,
           ELUCIDATED_PREFIX, False, KARRAS_UNET_DEFAULTS, ELUCIDATED_DEFAULTS,
           'infer_karras_unet_config', 'infer_elucidated_config', KARRAS_UNET_NOT_INFERABLE, ELUCIDATED_NOT_INFERABLE,
           VERIFY_PROCESS, True, note='a KarrasUnet under net., no schedule buffers', verify='process',
           network_module='karras_unet', infer_needs=('image_size',), process_class='ElucidatedDiffusion'),
    # simple diffusion (simple_diffusion.py): a bare UViT (verify='network': its forward at a few log-SNRs, eval
    # mode) and its GaussianDiffusion (the UViT under model., no schedule buffers: the log-SNR schedule is a
    # function; verify='process': the network, its loss with the times / noise injected, its sampler with shared
    # noise).  `requires` (UViT's Upsample, ups.0.0.net.0.*) tells them from the Unet and the continuous-time
    # processes, whose recognition the same final_conv / time_mlp.0.weights would otherwise pass.  The process's
    # class is the main module's name: its kind is qualified by the module (as classifier-free guidance's)
    Family(UVIT_KIND, UVIT_KIND, SIMPLE_MODULE, 2, 'final_conv.weight', 4, '', False, UVIT_DEFAULTS, {},
           'infer_uvit_config', None, UVIT_NOT_INFERABLE, {}, VERIFY_NETWORK, True, requires=UVIT_MARKER,
           note='a bare simple_diffusion UViT (init_conv / unpatchify, downs.*, vit.layers.*, ups.* with '
                'ups.i.0.net.0 Upsample convs)', verify='network'),
    Family(SIMPLE_DIFFUSION_KIND, UVIT_KIND, SIMPLE_MODULE, 2, 'final_conv.weight', 4, DIFFUSION_MODEL_PREFIX, False,
           UVIT_DEFAULTS, SIMPLE_DIFFUSION_DEFAULTS, 'infer_uvit_config', 'infer_simple_diffusion_config',
           UVIT_NOT_INFERABLE, SIMPLE_DIFFUSION_NOT_INFERABLE, VERIFY_PROCESS, True,
           requires=DIFFUSION_MODEL_PREFIX + UVIT_MARKER,
           note='a simple_diffusion UViT under model., no schedule buffers', verify='process',
           network_module=SIMPLE_MODULE),
)

BY_DIFFUSION = {f.diffusion: f for f in FAMILIES}
SUPPORTED = tuple(f for f in FAMILIES if f.supported)
# kind (what read_weights reports) -> family: the diffusion class, or a bare network (whose
# family is the first row with that network: Unet -> GaussianDiffusion)
KIND_FAMILY = dict([(f.network, f) for f in reversed(SUPPORTED) if f.network] + [(f.diffusion, f) for f in SUPPORTED])
DIFFUSION_KINDS = tuple(f.diffusion for f in SUPPORTED)
# bare networks verified on their own (issue 15: the Karras networks): kind = the network class
NETWORK_KINDS = tuple(f.network for f in SUPPORTED if f.verify == 'network')
KINDS_1D = tuple(k for k, f in KIND_FAMILY.items() if f.dims == 1)
# the kinds of the GaussianDiffusion engine (the converter's and verify's original paths)
GAUSSIAN_KINDS = ('GaussianDiffusion', 'GaussianDiffusion1D', 'Unet', 'Unet1D')
PROCESS_KINDS = tuple(f.diffusion for f in SUPPORTED if f.verify == 'process' and f.diffusion not in GAUSSIAN_KINDS)
WRAPPER_KINDS = tuple(f.diffusion for f in SUPPORTED if f.wraps)
# issue 14: the class-conditional families (verify's conditional path): process kinds, bare network kinds
CFG_KINDS = tuple(f.diffusion for f in SUPPORTED if f.verify == 'cfg')
CFG_NETWORK_KINDS = tuple(f.network for f in SUPPORTED if f.verify == 'cfg')


def _bare_requires(f):
    """The key prefix a bare network of row ``f`` must hold (its ``requires`` without the process prefix)."""
    if f.requires is None:
        return None
    return f.requires[len(f.prefix):] if f.requires.startswith(f.prefix) else f.requires


def _specific_first(rows):
    """Rows with a ``requires`` prefix before those without (stable): a row whose extra keys are present
    is the more specific reading of the same layout (classifier-free guidance vs GaussianDiffusion)."""
    return sorted(rows, key=lambda f: f.requires is None)

Detected = namedtuple('Detected', ['kind', 'family', 'flow', 'candidates'], defaults=(None, ()))


def _processes(entries):
    """The non-wrapper process rows whose layout ``entries`` has."""
    out = []
    for f in FAMILIES:
        if f.wraps or f.marker is None or f.verify == 'network':
            continue
        key = f.prefix + f.marker
        if key not in entries or len(entries[key].shape) != f.marker_ndim:
            continue
        if f.requires is not None and not any(k.startswith(f.requires) for k in entries):
            continue
        if f.match is not None and f.dims == 2 and not f.match(entries):
            continue
        out.append(f)
    if any(f.requires is not None for f in out):        # the more specific rows only
        out = [f for f in out if f.requires is not None]
    return out


def detect_kind(entries, hint=None, flow_hint=None):
    """What a state dict (wrapper prefixes already stripped) is: ``Detected(kind, family,
    flow, candidates)``; ``kind`` None if it is none of the families (``candidates``: the
    families it could be when the keys cannot tell, ``hint`` (a kind: the stored config's,
    ``--model``; ``flow_hint``: the wrapped process's) not deciding).  ``flow``: the detection of the process an XMWrapper wraps."""
    wrappers = [f for f in FAMILIES if f.wraps]
    for w in wrappers:
        if entries and all(k.startswith(w.prefix) for k in entries):
            inner = {k[len(w.prefix):]: v for k, v in entries.items()}
            flow = detect_kind(inner, flow_hint or (hint if hint not in WRAPPER_KINDS else None))
            if flow.kind is None:
                return Detected(None, w, flow, flow.candidates)
            return Detected(w.diffusion, w, flow)
    found = _processes(entries)
    if hint is not None:
        picked = [f for f in found if f.diffusion == hint]
        if picked:
            found = picked
    if len(found) == 1:
        return Detected(found[0].diffusion, found[0])
    if len(found) > 1:
        return Detected(None, None, None, tuple(f.diffusion for f in found))
    for f in _specific_first(SUPPORTED):
        if f.network and f.marker in entries and len(entries[f.marker].shape) == f.marker_ndim and (
                _bare_requires(f) is None or any(k.startswith(_bare_requires(f)) for k in entries)):
            return Detected(f.network, KIND_FAMILY[f.network])
    return Detected(None, None)


def family_of(kind):
    return KIND_FAMILY[kind]
