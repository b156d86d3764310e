"""What ``verify`` compares, and how.

Both sides run the same computations on the same weights and the same NumPy inputs:

1. every layer's output on one image: forward hooks on every torch module and every
   MindSpore cell (PyNative), matched by qualified name (equal by construction), kept in
   execution order (the order the hooks fire: a module's output is recorded when it returns);
2. the U-Net's output at several timesteps (PyNative, and compiled with ``ms.jit``);
3. the training loss of each objective (pred_noise, pred_x0, pred_v) on real images with
   shared draws (noise, times, offset noise, self-conditioning coin);
4. one sampling trajectory (DDPM or DDIM, as the config says) with shared noise;
5. the 13 schedule buffers.

The PyTorch side is a dict ``{key: array}``; it is computed live (``torch_side``) or read
from a golden fixture (``ms-ddpm verify --record-fixture`` records them), so the MindSpore side can be
verified on a machine without PyTorch.
"""

import time
from collections import OrderedDict

import numpy as np

from ms_ddpm.denoising_diffusion_pytorch import DIFFUSION_BUFFERS as BUFFERS
from weight_convert.families import SUPPORTED as _SUPPORTED
from ms_ddpm_tools.verify import processes

OBJECTIVES = ('pred_noise', 'pred_x0', 'pred_v')

# the families verify knows (read off weight_convert.families, the one table): diffusion class ->
# (reference module = twin module, network class, data dims); a bare network's checkpoint is
# verified inside its family's diffusion process
FAMILIES = {f.diffusion: (f.module, f.network, f.dims) for f in _SUPPORTED}
# a bare network is verified inside the first family of its network (Unet: GaussianDiffusion)
NETWORK_OF = {f.diffusion: f.network for f in _SUPPORTED if f.verify == 'gaussian'}
DIFFUSION_OF = {net: diffusion for diffusion, net in NETWORK_OF.items()}


def family(cfg):
    """(diffusion class name, module, network class name, data dims) of a config."""
    model = cfg.get('model') or 'GaussianDiffusion'
    diffusion = DIFFUSION_OF.get(model, model)
    if diffusion not in FAMILIES:
        raise VerifyError(f'verify does not know the {model} family yet; it knows '
                          f'{", ".join(sorted(FAMILIES))} (and their networks {", ".join(sorted(DIFFUSION_OF))})')
    module, net, dims = FAMILIES[diffusion]
    return diffusion, module, net, dims


def classes(cfg, framework):
    """(network class, diffusion class) of a config's family in ``framework`` ('torch' or 'ms')."""
    import importlib
    diffusion, module, net, _ = family(cfg)
    root = 'denoising_diffusion_pytorch' if framework == 'torch' else 'ms_ddpm'
    mod = importlib.import_module(f'{root}.{module}')
    return getattr(mod, net), getattr(mod, diffusion)


from ms_ddpm_tools.exits import InputError


class VerifyError(InputError):
    """A verify run cannot be made as asked (one line: what is missing or inconsistent)."""


def weights_label(info, ema):
    """Which weights of the file were compared (recorded in the report)."""
    w = info.get('weights')
    if w == 'ema' or ema:
        return 'EMA weights (ema.ema_model)'
    if w:
        return 'online weights (the Trainer\'s model)'
    return 'the state dict'

# key prefix -> (tolerance kind, component shown in the summary)
KINDS = OrderedDict([
    ('layer/', ('unet', 'layers')),
    ('unet/', ('unet', 'U-Net output')),
    ('guided/', ('guided', 'guided output (forward_with_cond_scale)')),       # issue 14 (verify.cfg)
    ('loss/', ('loss', 'loss')),
    ('sample/', ('sample', 'sampling')),
    ('buffer/', ('schedule', 'schedule buffers')),
    ('noising/', ('diffusion', 'forward process (q_sample)')),
    ('weight/', ('exact', 'weights (converted file vs its source)')),
])
ROOT = '<unet>'


def kind_of(key):
    for prefix, (kind, _) in KINDS.items():
        if key.startswith(prefix):
            return kind
    raise KeyError(key)


def unet_kwargs(cfg):
    from weight_convert.config import unet_kwargs as kw
    return kw(cfg)


def diffusion_kwargs(cfg, **override):
    from weight_convert.config import diffusion_kwargs as kw
    d = kw(cfg, require_image_size=False, **override)
    if family(cfg)[3] == 1 and not (cfg.get('diffusion') or {}).get('schedule_fn_kwargs'):
        d.pop('schedule_fn_kwargs', None)          # the 1D process takes no schedule_fn_kwargs
    return d


def public_config(cfg):
    """The architecture part of a config (what ``--config`` takes)."""
    out = {'unet': dict(cfg['unet']), 'diffusion': dict(cfg['diffusion'] or {})}     # (a bare Karras net: None)
    for k in ('model', 'flow', 'xm'):        # the processes of issue 13: which one (ms_ddpm_tools.verify.processes)
        if cfg.get(k) is not None and (processes.is_process(cfg) or _is_cfg(cfg)):
            out[k] = cfg[k]
    return out


def _is_cfg(cfg):
    from weight_convert.families import CFG_KINDS
    return cfg.get('model') in CFG_KINDS


def image_hw(cfg):
    size = cfg['diffusion']['image_size']
    return (size, size) if isinstance(size, int) else tuple(size)


def data_shape(cfg):
    """The spatial shape of one sample: (h, w) for images, (seq_length,) for sequences."""
    if family(cfg)[3] == 1:
        return (int(cfg['diffusion']['seq_length']),)
    return image_hw(cfg)


def sequences(count, channels, n, offset=0):
    """Smooth sequences in [0, 1] (sums of two sines, seeded by position): the 1D family's
    'real data'."""
    rng = np.random.default_rng([1, offset])
    x = np.linspace(0, 1, n)[None, None]
    f = rng.uniform(1, 4, (count, channels, 2, 1))
    ph = rng.uniform(0, 2 * np.pi, (count, channels, 2, 1))
    y = 0.5 + 0.25 * np.sin(2 * np.pi * f[:, :, 0] * x + ph[:, :, 0]) + 0.15 * np.sin(2 * np.pi * f[:, :, 1] * x + ph[:, :, 1])
    return y.astype(np.float32)


def sampling_steps(cfg):
    d = cfg['diffusion']
    return d.get('sampling_timesteps') or d.get('timesteps', 1000)


def make_inputs(cfg, alphas_cumprod, batch=4, sample_batch=8, seed=0):
    """Every input and random draw of a verify run, as NumPy arrays (float32 / int64)."""
    from ms_ddpm_tools.verify.default import digits_array
    u, d = cfg['unet'], cfg['diffusion']
    c = u.get('channels', 3)
    shape = data_shape(cfg)
    T = int(d.get('timesteps', 1000))
    rng = np.random.default_rng(seed)
    if len(shape) == 1:   # sequences
        x0 = sequences(max(batch, 1), c, shape[0], offset=1000)
    elif shape[0] == shape[1]:   # real images: the digits, as the Trainer's Dataset sees them
        x0 = digits_array(shape[0], count=max(batch, 1), offset=1000)
        x0 = np.repeat(x0, c, axis=1)
    else:
        x0 = rng.random((batch, c) + shape).astype(np.float32)
    inp = OrderedDict()
    ts = sorted(set([0, T // 4, T // 2, (3 * T) // 4, T - 1]))
    noise = rng.standard_normal((len(ts) * batch, c) + shape).astype(np.float32)
    x_start = np.tile(x0 * 2 - 1, (len(ts), 1) + (1,) * len(shape)).astype(np.float64)
    t_all = np.repeat(np.array(ts, np.int64), batch)
    ac = np.asarray(alphas_cumprod, np.float64)[t_all].reshape((-1,) + (1,) * (1 + len(shape)))
    inp['unet_x'] = (np.sqrt(ac) * x_start + np.sqrt(1 - ac) * noise).astype(np.float32)   # q_sample, in float64
    inp['unet_t'] = t_all
    if u.get('self_condition'):
        inp['unet_self_cond'] = rng.standard_normal(inp['unet_x'].shape).astype(np.float32)
    inp['loss_img'] = x0
    inp['loss_times'] = rng.integers(0, T, size=(batch,)).astype(np.int64)
    inp['loss_noise'] = rng.standard_normal(x0.shape).astype(np.float32)
    if d.get('offset_noise_strength'):
        inp['loss_offset_noise'] = rng.standard_normal(x0.shape[:2]).astype(np.float32)
    if u.get('self_condition'):
        inp['loss_coin'] = np.array(0.3)
    inp['sample_noise'] = rng.standard_normal((sampling_steps(cfg), sample_batch, c) + shape).astype(np.float32)
    # the forward process of one image at the compared timesteps, one noise draw (drawn last:
    # the inputs above stay what earlier versions drew)
    inp['noising_x'] = np.repeat(x0[:1] * 2 - 1, len(ts), axis=0).astype(np.float32)
    inp['noising_t'] = np.array(ts, np.int64)
    inp['noising_noise'] = np.repeat(rng.standard_normal((1, c) + shape).astype(np.float32), len(ts), axis=0)
    return inp, ts


def _unet_args(inp, prefix):
    args = [inp[f'{prefix}_x'], inp[f'{prefix}_t']]
    if f'{prefix}_self_cond' in inp:
        args.append(inp[f'{prefix}_self_cond'])
    return args


class Timer:
    def __init__(self):
        self.times = OrderedDict()

    def median(self, name, fn, repeat=3):
        """The median of ``repeat`` timed calls (the machine may be busy: one call is noise)."""
        ts = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        self.times[name] = float(np.median(ts))

    def __call__(self, name):
        timer = self

        class _T:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                timer.times[name] = timer.times.get(name, 0.0) + time.perf_counter() - self.t0
        return _T()


def _flatten(name, out, put):
    if isinstance(out, (tuple, list)):
        for i, o in enumerate(out):
            _flatten(f'{name}[{i}]', o, put)
    elif out is not None and hasattr(out, 'shape'):
        put(name, out)


class _Recorder:
    """Outputs by qualified name, in the order the hooks fire; a module called twice
    gets ``name#1``, ``name#2`` ..."""

    def __init__(self, to_numpy):
        self.out = OrderedDict()
        self.calls = {}
        self.to_numpy = to_numpy

    def hook(self, name):
        name = name or ROOT

        def fn(module, inputs, output):
            k = self.calls.get(name, 0)
            self.calls[name] = k + 1
            _flatten(name if k == 0 else f'{name}#{k}', output,
                     lambda n, t: self.out.__setitem__(n, self.to_numpy(t)))
        return fn


def _progress(total, desc, enabled):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)


# --- PyTorch (the reference) ------------------------------------------------------------------

def build_torch(cfg, state_dict):
    import torch
    from reference import check_reference_version
    check_reference_version()
    Net, Diffusion = classes(cfg, 'torch')
    tu = Net(**unet_kwargs(cfg))
    td = Diffusion(tu, **diffusion_kwargs(cfg))
    sd = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in state_dict.items()}   # writable: memory-mapped reads are not
    if any(k.startswith('model.') for k in sd):
        td.load_state_dict(sd, strict=True)
    else:
        tu.load_state_dict(sd, strict=True)
    return tu.eval(), td.eval()


def torch_side(cfg, state_dict, inp, progress=True, timer=None, parts=None):
    """The reference's outputs for every comparison (of ``parts``, default all),
    ``{key: np.ndarray}``."""
    parts = parts or ('layers', 'unet', 'loss', 'noising', 'sample', 'buffers')
    import torch
    from reference.draws import injected_draws
    timer = timer or Timer()
    process = processes.is_process(cfg)
    if not process:
        _, Diffusion = classes(cfg, 'torch')
    one_d = family(cfg)[3] == 1
    torch.manual_seed(0)
    tu, td = processes.build(cfg, state_dict, 'torch') if process else build_torch(cfg, state_dict)
    out = OrderedDict()
    bar = _progress(4, 'PyTorch', progress)
    t = torch.from_numpy
    with torch.no_grad():
        rec = _Recorder(lambda x: x.detach().cpu().numpy())
        handles = [m.register_forward_hook(rec.hook(n)) for n, m in tu.named_modules()]
        with timer('layers (hooked forward)'):
            tu(*map(t, _unet_args(inp, 'unet')))
        for h in handles:
            h.remove()
        out.update(('layer/' + k, v) for k, v in rec.out.items())
        # the same pass in float64: how far each framework's float32 is from the exact result
        import copy
        tu64 = copy.deepcopy(tu).double()
        rec64 = _Recorder(lambda x: x.detach().cpu().numpy())
        handles = [m.register_forward_hook(rec64.hook(n)) for n, m in tu64.named_modules()]
        args64 = [t(a.astype(np.float64)) if a.dtype == np.float32 else t(a) for a in _unet_args(inp, 'unet')]
        default_dtype = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)     # tensors made inside forward (time embedding) too
        try:
            y64 = tu64(*args64).numpy()
        finally:
            torch.set_default_dtype(default_dtype)
            for h in handles:
                h.remove()
        out.update(('f64layer/' + k, v) for k, v in rec64.out.items())
        out['f64unet/all'] = y64
        bar.update()
        with timer('U-Net forward (first call)'):
            tu(*map(t, _unet_args(inp, 'unet')))
        y = tu(*map(t, _unet_args(inp, 'unet'))).numpy()
        timer.median('U-Net forward', lambda: tu(*map(t, _unet_args(inp, 'unet'))))
        out['unet/all'] = y
        bar.update()
        if process:       # issue 13's processes: their own loss and sampler
            notes = []
            processes.torch_rest(cfg, td, inp, timer, parts, out, notes)
            if notes:
                out['notes'] = notes
            bar.close()
            return out
        if 'buffers' in parts:
            for b in BUFFERS:
                if hasattr(td, b):
                    out['buffer/' + b] = getattr(td, b).numpy()
    for obj in (OBJECTIVES if 'loss' in parts else ()):
        tdo = td if obj == td.objective else Diffusion(tu, **diffusion_kwargs(cfg, objective=obj)).eval()
        randn = [inp['loss_offset_noise']] if 'loss_offset_noise' in inp else []
        coins = [float(inp['loss_coin'])] if 'loss_coin' in inp else []
        with timer('loss (3 objectives)'), torch.no_grad(), injected_draws(randn=randn, coins=coins):
            loss = tdo(t(inp['loss_img']), times=t(inp['loss_times']), noise=t(inp['loss_noise'].copy()))
        out[f'loss/{obj}'] = loss.numpy()
    bar.update()
    if 'noising' in parts and 'noising_x' in inp:
        with torch.no_grad():
            out['noising/all'] = td.q_sample(t(inp['noising_x']), t(inp['noising_t']), noise=t(inp['noising_noise'])).numpy()
    if 'sample' in parts:
        with timer('sampling'), torch.no_grad(), injected_draws(randn=list(inp['sample_noise'])):
            if one_d:      # the reference's 1D sample() returns the final samples only
                out['sample/final'] = td.sample(batch_size=inp['sample_noise'].shape[1]).numpy()
            else:
                traj = td.sample(batch_size=inp['sample_noise'].shape[1], return_all_timesteps=True).numpy()
                out['sample/final'] = traj[:, -1]
                out['sample/trajectory'] = traj
    bar.update()
    bar.close()
    return out


# --- MindSpore (the port) ---------------------------------------------------------------------

def build_ms(cfg, state_dict):
    from weight_convert import load_torch_state_dict
    Net, Diffusion = classes(cfg, 'ms')
    mu = Net(**unet_kwargs(cfg))
    md = Diffusion(mu, **diffusion_kwargs(cfg))
    if any(k.startswith('model.') for k in state_dict):
        load_torch_state_dict(md, state_dict)
    else:
        load_torch_state_dict(mu, state_dict)
    mu.set_train(False)
    md.set_train(False)
    return mu, md


def ms_side(cfg, state_dict, inp, progress=True, timer=None, graph=True, parts=None):
    """The port's outputs, keyed like ``torch_side``'s (plus ``unet/all[graph]``)."""
    parts = parts or ('layers', 'unet', 'loss', 'noising', 'sample', 'buffers')
    import mindspore as ms
    timer = timer or Timer()
    ms.set_context(mode=ms.PYNATIVE_MODE)
    process = processes.is_process(cfg)
    if not process:
        _, Diffusion = classes(cfg, 'ms')
    mu, md = processes.build(cfg, state_dict, 'ms') if process else build_ms(cfg, state_dict)
    out = OrderedDict()
    bar = _progress(4 + graph, 'MindSpore', progress)
    T = ms.Tensor
    rec = _Recorder(lambda x: x.asnumpy())
    handles = [c.register_forward_hook(rec.hook(n)) for n, c in mu.cells_and_names()]
    with timer('layers (hooked forward)'):
        mu(*map(T, _unet_args(inp, 'unet')))
    for h in handles:
        h.remove()
    out.update(('layer/' + k, v) for k, v in rec.out.items())
    bar.update()
    args = [T(a) for a in _unet_args(inp, 'unet')]
    with timer('U-Net forward (first call)'):
        mu(*args).asnumpy()
    out['unet/all'] = mu(*args).asnumpy()
    timer.median('U-Net forward', lambda: mu(*args).asnumpy())
    bar.update()
    if graph:
        def forward(*xs):
            return mu(*xs)
        compiled = ms.jit(forward)
        with timer('U-Net forward [graph] incl. compile'):
            compiled(*args).asnumpy()
        out['unet/all[graph]'] = compiled(*args).asnumpy()
        timer.median('U-Net forward [graph]', lambda: compiled(*args).asnumpy())
        bar.update()
    if process:           # issue 13's processes: their own loss and sampler
        processes.ms_rest(cfg, md, inp, timer, parts, out, graph)
        bar.close()
        return out
    params = dict(md.parameters_and_names())
    for b in (BUFFERS if 'buffers' in parts else ()):
        if b in params:
            out['buffer/' + b] = params[b].asnumpy()
    offset = T(inp['loss_offset_noise']) if 'loss_offset_noise' in inp else None
    coin = float(inp['loss_coin']) if 'loss_coin' in inp else None
    for obj in (OBJECTIVES if 'loss' in parts else ()):
        mdo = md if obj == md.objective else Diffusion(mu, **diffusion_kwargs(cfg, objective=obj))
        mdo.set_train(False)
        extra = {} if offset is None else {'offset_noise': offset}
        with timer('loss (3 objectives)'):
            loss = mdo(T(inp['loss_img']), times=T(inp['loss_times']), loss_reduction='mean', noise=T(inp['loss_noise']),
                       self_cond_coin=coin, **extra)
        out[f'loss/{obj}'] = loss.asnumpy()
    bar.update()
    if 'noising' in parts and 'noising_x' in inp:
        out['noising/all'] = md.q_sample(T(inp['noising_x']), T(inp['noising_t']), noise=T(inp['noising_noise'])).asnumpy()
    if 'sample' in parts:
        md.jit_sampling = bool(graph)           # the compiled sampling steps in GRAPH runs only (--no-graph: none)
        with timer('sampling'):
            traj = md.sample(batch_size=inp['sample_noise'].shape[1], return_all_timesteps=True,
                             noise=inp['sample_noise']).asnumpy()
        out['sample/final'] = traj[:, -1]
        if family(cfg)[3] == 2:
            out['sample/trajectory'] = traj
    bar.update()
    bar.close()
    return out


# --- comparing -------------------------------------------------------------------------------

def split_unet(out, ts, batch):
    """``unet/all`` (all timesteps in one batch) -> ``unet/t=N`` per timestep."""
    res = OrderedDict()
    for k, v in out.items():
        if k.startswith(('unet/all', 'f64unet/all')):
            head, mode = k.split('/all', 1)
            for i, t in enumerate(ts):
                res[f'{head}/t={t}{mode}'] = v[i * batch:(i + 1) * batch]
        else:
            res[k] = v
    return res


def _layer_diff(key, e, a, ts):
    """A layer output holds every compared timestep (the hooked pass runs the U-Net on all of
    them in one batch): the figure is the worst timestep's, named ``layer/NAME @t=T``."""
    from parity.compare import diff
    n = len(ts)
    if n > 1 and e.ndim and a.shape == e.shape and e.shape[0] % n == 0:
        b = e.shape[0] // n
        parts = [diff(key, e[i * b:(i + 1) * b], a[i * b:(i + 1) * b]) for i in range(n)]
        i = max(range(n), key=lambda j: (parts[j].nonfinite, parts[j].rel_fro))
        worst = parts[i]
        worst.at_t = ts[i]
        worst.shape = e.shape
        return worst
    return diff(key, e, a)


def _accuracy_gate(r, expected, key, ref_key, a, ts):
    """Second opinion for a figure beyond its tolerance: the suite's error model
    (``parity.compare.accuracy_gate``, ``parity.tolerances.ACCURACY``): both frameworks' float32
    results against the reference evaluated in float64; the port is as exact as the reference
    when MindSpore's distance from the float64 result is at most the gate's factor x PyTorch's
    own (floored at a few ulps).  Typical where the output is much smaller than the activations
    feeding it (the U-Net's last 1x1 conv at t=0), or where a layer amplifies the drift it is
    fed (a PixelNorm of 4-element attention heads): there the distance at one layer is a single
    draw from the computation's rounding errors, not a fixed bound."""
    from parity.compare import accuracy_gate
    e64 = np.asarray(expected['f64' + ref_key])
    e32 = np.asarray(expected[ref_key])
    a = np.asarray(a)
    at = getattr(r, 'at_t', None)
    if at is not None and len(ts) > 1 and e64.shape[0] % len(ts) == 0:
        b = e64.shape[0] // len(ts)
        i = list(ts).index(at)
        e64, e32, a = e64[i * b:(i + 1) * b], e32[i * b:(i + 1) * b], a[i * b:(i + 1) * b]
    metric, tol = r.metric, r.tol
    accuracy_gate(r, e32, a, e64)
    r.f64 = {'torch_vs_float64': r.torch_vs_float64, 'mindspore_vs_float64': r.mindspore_vs_float64}
    if not r.ok:                # still a failure of its tolerance (the report's figure), the f64 view in ``why``
        r.metric, r.tol = metric, tol
    if r.ok:
        r.gate = (f'accuracy: beyond tolerance, but MindSpore is {r.mindspore_vs_float64:.2e} from the float64 '
                  f'result, PyTorch {r.torch_vs_float64:.2e} (<= {r.tol:g}x, parity.tolerances.ACCURACY)')


def compare(expected, actual, ts=()):
    """Every key of ``actual`` against ``expected`` (a ``[graph]`` key against its PyNative
    reference).  Returns (list of Diff with tol/ok set, keys only on one side)."""
    from parity.compare import check, diff, gate
    results = []
    for key, a in actual.items():
        ref_key = key.replace('[graph]', '')
        if ref_key not in expected:
            continue
        try:
            if key.startswith('layer/'):
                r = gate(_layer_diff(key, np.asarray(expected[ref_key]), np.asarray(a), ts), kind_of(key))
            else:
                r = check(key, expected[ref_key], a, kind_of(key))
        except AssertionError as e:     # shape mismatch: a failure, reported as such
            r = check(key, np.zeros(1), np.full(1, np.nan), kind_of(key))
            r.name = f'{key} ({e})'
        r.gate = 'tolerance'
        if not r.ok and not r.nonfinite and 'f64' + ref_key in expected:
            _accuracy_gate(r, expected, key, ref_key, a, ts)
        results.append(r)
    only_torch = [k for k in expected if k not in actual and k.startswith('layer/')]
    only_torch = [k for k in only_torch if k not in actual]
    only_ms = [k for k in actual if k.replace('[graph]', '') not in expected]
    return results, only_torch, only_ms


def compare_weights(source, converted):
    """Every tensor of a converted file against its source tensor (tolerance ``exact``:
    conversions are bit-exact).  Returns (list of Diff, {'only_source': [...], 'only_against': [...]})."""
    from parity.compare import check
    results = []
    for k, v in source.items():
        if k not in converted:
            continue
        a, b = np.asarray(v), np.asarray(converted[k])
        if a.shape != b.shape:
            r = check(f'weight/{k}', np.zeros(1), np.full(1, np.nan), 'exact')
            r.name = f'weight/{k} (shape {tuple(a.shape)} in the source, {tuple(b.shape)} in the converted file)'
        else:
            r = check(f'weight/{k}', a.astype(np.float64), b.astype(np.float64), 'exact')
        r.gate = 'tolerance'
        results.append(r)
    missing = {'only_source': [k for k in source if k not in converted],
               'only_against': [k for k in converted if k not in source]}
    return results, missing


def first_divergence(results, kind='layer'):
    """The first layer (execution order) beyond the gate (tolerance ``unet``: a layer's
    output carries every rounding difference upstream of it), and the first beyond the
    single-block tolerance ``layer`` (informative: where drift starts)."""
    from parity.tolerances import tolerance
    layer_tol = tolerance('layer').rel
    first_fail = next((r for r in results if r.name.startswith('layer/') and not r.ok), None)
    first_over = next((r for r in results if r.name.startswith('layer/') and (r.nonfinite or r.gate != 'tolerance'
                                                                             or getattr(r, r.metric) > r.tol)), None)
    first_drift = next((r for r in results if r.name.startswith('layer/') and (r.nonfinite or r.rel_fro > layer_tol)), None)
    return first_fail, first_over, first_drift


# --- the checkpoint ----------------------------------------------------------------------------

def load_checkpoint(path, ema=False, config=None, image_size=None, seq_length=None):
    """(config, state dict of NumPy arrays, source info) for any checkpoint ``weight_convert``
    reads (reference Trainer .pt, state dicts, safetensors, .ckpt).  A bare network (Unet,
    Unet1D) is wrapped in its family's diffusion process with the reference's defaults
    (``image_size`` / ``seq_length`` needed)."""
    from weight_convert.converter import parse_explicit_config, read_weights, resolve_config
    from weight_convert.rules import DIFFUSION1D_DEFAULTS, DIFFUSION_DEFAULTS
    explicit = parse_explicit_config(config)
    source = read_weights(path, ema=ema, model=explicit.get('model'), flow=explicit.get('flow'))
    one_d = source.kind.endswith('1D')
    if seq_length is not None and not one_d:
        raise VerifyError(f'{path}: a 2D checkpoint ({source.kind}, image weights); --seq-length applies to 1D models '
                          f'(Unet1D / GaussianDiffusion1D) only')
    if image_size is not None and one_d:
        raise VerifyError(f'{path}: a 1D checkpoint ({source.kind}, sequence weights); give --seq-length, not --image-size')
    if image_size is not None and not one_d:
        explicit['diffusion']['image_size'] = image_size
    if seq_length is not None and one_d:
        explicit['diffusion']['seq_length'] = seq_length
    from weight_convert.families import NETWORK_KINDS
    if source.kind in NETWORK_KINDS:        # issue 15: a bare network verified on its own (verify.networks)
        from weight_convert.families import KIND_FAMILY as _KF
        side = None
        if 'image_size' not in _KF[source.kind].network_defaults:     # UViT: only the compared images' side
            side = explicit['diffusion'].pop('image_size', None)
        cfg = resolve_config(source, explicit)
        sd = OrderedDict((k, np.asarray(e.value())) for k, e in source.entries.items())
        public = {'unet': cfg['unet'], 'diffusion': None, 'model': source.kind}
        if 'image_size' not in _KF[source.kind].network_defaults and _KF[source.kind].dims == 2:
            public['image_size'] = side         # None: networks.input_side picks it (networks.make_inputs)
        return public, sd, dict(source.info, format=source.format, kind=source.kind)
    given_diffusion = explicit['diffusion']
    from weight_convert.families import CFG_NETWORK_KINDS, KIND_FAMILY
    cfg_bare = source.kind in CFG_NETWORK_KINDS     # issue 14: a bare class-conditional Unet, in its GaussianDiffusion
    bare = source.kind in DIFFUSION_OF or cfg_bare
    if bare:
        explicit = dict(explicit, diffusion={})
    cfg = resolve_config(source, explicit)
    if cfg_bare:
        cfg['diffusion'] = dict(KIND_FAMILY[source.kind].diffusion_defaults, **given_diffusion)
    elif bare:
        cfg['diffusion'] = dict(DIFFUSION1D_DEFAULTS if one_d else DIFFUSION_DEFAULTS, **given_diffusion)
    if one_d and cfg['diffusion'].get('seq_length') is None:
        raise VerifyError(f'{path}: the sequence length cannot be read from the weights; pass --seq-length N')
    if not one_d and cfg['diffusion'].get('image_size') is None:
        raise VerifyError(f'{path}: the image size cannot be read from the weights; pass --image-size N')
    sd = OrderedDict((k, np.asarray(e.value())) for k, e in source.entries.items())
    public = {'unet': cfg['unet'], 'diffusion': cfg['diffusion'],
              'model': KIND_FAMILY[source.kind].diffusion if cfg_bare else source.kind}
    for k in ('flow', 'xm'):                 # an XMWrapper: the process it wraps, its own arguments
        if cfg.get(k) is not None:
            public[k] = cfg[k]
    return public, sd, dict(source.info, format=source.format, kind=source.kind)


def alphas_cumprod_of(cfg, sd):
    if 'alphas_cumprod' in sd:
        return sd['alphas_cumprod']
    from ms_ddpm.denoising_diffusion_pytorch import cosine_beta_schedule, linear_beta_schedule, sigmoid_beta_schedule
    fn = {'linear': linear_beta_schedule, 'cosine': cosine_beta_schedule, 'sigmoid': sigmoid_beta_schedule}
    d = diffusion_kwargs(cfg)
    betas = np.asarray(fn[d.get('beta_schedule', 'sigmoid')](d.get('timesteps', 1000), **d['schedule_fn_kwargs']))
    return np.cumprod(1 - betas.astype(np.float64))
