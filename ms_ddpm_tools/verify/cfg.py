"""verify for classifier-free guidance (issue 14: rows of ``weight_convert.families`` with
``verify='cfg'``: ``classifier_free_guidance.GaussianDiffusion`` around its class-conditional
Unet; a bare ``classifier_free_guidance.Unet`` is verified inside that GaussianDiffusion with
the reference's defaults, ``--image-size`` given).

What is compared (keys as ``core``'s, so the report and the gate need nothing new but the
``guided/`` kind):

- ``layer/*``, ``unet/t=N``: the network at the given classes (``cond_drop_prob=0``), every
  layer hooked, at the compared timesteps; ``unet/null``: the null-class path
  (``cond_drop_prob=1``); ``unet/keep-mask``: an injected keep mask (half the batch kept);
  PyNative (and ``graph``: the conditional forward compiled);
- ``guided/rescaled`` (``guided/scaled`` when ``rescaled_phi`` is 0), ``guided/null``:
  ``forward_with_cond_scale(cond_scale, rescaled_phi)``'s two outputs;
- ``loss/<objective>``: the loss with every draw injected (noise, t, the keep mask);
- ``sample/final``: the sampler (DDPM, or DDIM when ``--sampling-timesteps`` < timesteps) at the
  given classes and ``cond_scale`` / ``rescaled_phi``, every ``randn`` shared;
- ``buffer/*``: the 13 schedule buffers.
The reference's float64 run of the network (every key above but the loss and the sampler) is
the accuracy gate's yardstick, as for every verify run.  Timings: one call each (the first
PyNative call included), not the median of three: each forward of the conditional path is one
of the compared computations.
"""

import copy
from collections import OrderedDict

import numpy as np

PARTS = ('weights', 'layers', 'unet', 'loss', 'sample', 'buffers')
COND_SCALE, RESCALED_PHI = 6., 0.7          # the reference's sample() defaults
MAX_DEFAULT_CLASSES = 4


def is_cfg(cfg):
    from weight_convert.families import CFG_KINDS, CFG_NETWORK_KINDS
    return cfg.get('model') in CFG_KINDS or cfg.get('model') in CFG_NETWORK_KINDS


def num_classes(cfg):
    return int(cfg['unet']['num_classes'])


def resolve_classes(cfg, classes=None):
    """The class labels to verify at: ``classes`` (a list, or text '0,2') checked against
    num_classes (one line naming the label), default the first few classes."""
    n = num_classes(cfg)
    if classes is None:
        return list(range(min(n, MAX_DEFAULT_CLASSES)))
    return check_labels(classes, n, 'the checkpoint has')


def check_labels(classes, n, whose):
    """``classes`` as ints, each in 0..n-1; else one line naming the label and ``n``."""
    from ms_ddpm_tools.verify.core import VerifyError
    if isinstance(classes, str):
        try:
            classes = [int(c) for c in classes.split(',') if c.strip()]
        except ValueError:
            raise VerifyError(f'--classes {classes!r}: expected integer class labels separated by commas') from None
    classes = [int(c) for c in classes]
    if not classes:
        raise VerifyError('--classes: no class label given')
    for c in classes:
        if not 0 <= c < n:
            raise VerifyError(f'class label {c} is out of range: {whose} num_classes={n} (labels 0..{n - 1})')
    return classes


def options(cfg, classes=None, cond_scale=None, rescaled_phi=None):
    return {'classes': resolve_classes(cfg, classes), 'cond_scale': float(COND_SCALE if cond_scale is None else cond_scale),
            'rescaled_phi': float(RESCALED_PHI if rescaled_phi is None else rescaled_phi)}


def sampling_steps(cfg):
    d = cfg['diffusion']
    return d.get('sampling_timesteps') or d.get('timesteps', 1000)


def sampler_name(cfg):
    return 'DDIM' if sampling_steps(cfg) < cfg['diffusion'].get('timesteps', 1000) else 'DDPM'


def make_inputs(cfg, alphas_cumprod, opts, batch=4, per_class=2, seed=0):
    """Every input and draw of a conditional verify run, as NumPy arrays; (inputs, timesteps)."""
    from ms_ddpm_tools.verify.default import digits_array
    u, d = cfg['unet'], cfg['diffusion']
    c, size = int(u.get('channels', 3)), int(d['image_size'])
    T = int(d.get('timesteps', 1000))
    rng = np.random.default_rng(seed)
    labels = np.array(opts['classes'], np.int64)
    x0 = np.repeat(digits_array(size, count=max(batch, 1), offset=1000), c, axis=1)
    ts = sorted(set([0, T // 4, T // 2, (3 * T) // 4, T - 1]))
    noise = rng.standard_normal((len(ts) * batch, c, size, size)).astype(np.float32)
    t_all = np.repeat(np.array(ts, np.int64), batch)
    ac = np.asarray(alphas_cumprod, np.float64)[t_all].reshape(-1, 1, 1, 1)
    xs = np.tile(x0 * 2 - 1, (len(ts), 1, 1, 1)).astype(np.float64)
    inp = OrderedDict()
    inp['unet_x'] = (np.sqrt(ac) * xs + np.sqrt(1 - ac) * noise).astype(np.float32)
    inp['unet_t'] = t_all
    inp['unet_classes'] = np.resize(labels, t_all.shape[0]).astype(np.int64)
    inp['unet_keep'] = (np.arange(t_all.shape[0]) % 2 == 0)          # half kept, half the null class
    inp['loss_img'] = x0.astype(np.float32)
    inp['loss_times'] = rng.integers(0, T, size=(batch,)).astype(np.int64)
    inp['loss_noise'] = rng.standard_normal(x0.shape).astype(np.float32)
    inp['loss_classes'] = np.resize(labels, batch).astype(np.int64)
    inp['loss_keep'] = rng.random(batch) < 0.5
    inp['loss_keep'][0], inp['loss_keep'][-1] = True, False if batch > 1 else True
    inp['sample_classes'] = np.repeat(labels, per_class).astype(np.int64)
    inp['sample_noise'] = rng.standard_normal(
        (sampling_steps(cfg), inp['sample_classes'].shape[0], c, size, size)).astype(np.float32)
    return inp, ts


def build(cfg, state_dict, framework):
    """(network, process) of ``framework`` ('torch' | 'ms'), ``state_dict`` loaded strictly (into
    the process, or, for a bare Unet's weights, into the network)."""
    from weight_convert.converter import build_process
    from ms_ddpm_tools.verify.core import VerifyError
    cfg = dict(cfg, model=_diffusion_kind())
    try:
        p = build_process(cfg, framework)
    except (TypeError, ValueError, AssertionError) as e:
        raise VerifyError(f'cannot build {cfg["model"]} from the config: {type(e).__name__}: {e}') from None
    into_process = any(k.startswith('model.') for k in state_dict)
    if framework == 'torch':
        import torch
        from reference import check_reference_version
        check_reference_version()
        sd = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in state_dict.items()}
        (p if into_process else p.model).load_state_dict(sd, strict=True)
        p.eval()
        return p.model.eval(), p
    from weight_convert import load_torch_state_dict
    load_torch_state_dict(p if into_process else p.model, state_dict)
    p.set_train(False)
    return p.model, p


def _diffusion_kind():
    from weight_convert.rules import CFG_DIFFUSION_KIND
    return CFG_DIFFUSION_KIND


def _guided(net, x, t, y, opts, phi):
    out = net.forward_with_cond_scale(x, t, y, cond_scale=opts['cond_scale'], rescaled_phi=phi)
    return out if isinstance(out, tuple) else (out, None)


def _network_outputs(net, inp, opts, conv, to_np, out, prefix='', timer=None):
    """The network's outputs at the given classes: cond (timed: 'U-Net forward'), null, keep mask,
    forward_with_cond_scale (with ``rescaled_phi`` when it is not 0: the scaled logits are a step of
    that computation, so a difference in them shows there too)."""
    x, t, y = conv(inp['unet_x']), conv(inp['unet_t']), conv(inp['unet_classes'])
    if timer is not None:
        with timer('U-Net forward'):
            out[prefix + 'unet/all'] = to_np(net(x, t, y, cond_drop_prob=0.))
    else:
        out[prefix + 'unet/all'] = to_np(net(x, t, y, cond_drop_prob=0.))
    out[prefix + 'unet/null'] = to_np(net(x, t, y, cond_drop_prob=1.))
    out[prefix + 'unet/keep-mask'] = to_np(net(x, t, y, cond_keep_mask=conv(inp['unet_keep'])))
    phi = opts['rescaled_phi']
    guided, null = _guided(net, x, t, y, opts, phi)
    out[prefix + ('guided/rescaled' if phi else 'guided/scaled')] = to_np(guided)
    if null is not None:
        out[prefix + 'guided/null'] = to_np(null)


def torch_side(cfg, state_dict, inp, opts, timer, parts, notes):
    """The reference's outputs of a conditional verify run, ``{key: array}``."""
    import torch
    from reference.draws import injected_draws
    from ms_ddpm.denoising_diffusion_pytorch import DIFFUSION_BUFFERS
    from ms_ddpm_tools.verify.core import _Recorder
    t = torch.from_numpy
    torch.manual_seed(0)
    tu, td = build(cfg, state_dict, 'torch')
    out = OrderedDict()
    to_np = lambda a: a.detach().cpu().numpy()
    with torch.no_grad():
        args = (t(inp['unet_x']), t(inp['unet_t']), t(inp['unet_classes']))
        layers = 'layers' in parts
        if layers:
            rec = _Recorder(to_np)
            handles = [m.register_forward_hook(rec.hook(n)) for n, m in tu.named_modules()]
            with timer('layers (hooked forward)'):
                tu(*args, cond_drop_prob=0.)
            for h in handles:
                h.remove()
            out.update(('layer/' + k, v) for k, v in rec.out.items())
        tu64 = copy.deepcopy(tu).double()
        rec64 = _Recorder(to_np)
        handles = [m.register_forward_hook(rec64.hook(n)) for n, m in tu64.named_modules()] if layers else []
        f64 = {k: (v.astype(np.float64) if v.dtype == np.float32 else v) for k, v in inp.items()}
        default_dtype = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)      # tensors made inside forward (time embedding) too
        try:
            if layers:
                tu64(t(f64['unet_x']), t(f64['unet_t']), t(f64['unet_classes']), cond_drop_prob=0.)
            for h in handles:
                h.remove()
            handles = []
            out.update(('f64layer/' + k, v) for k, v in rec64.out.items())
            _network_outputs(tu64, f64, opts, t, to_np, out, prefix='f64')
        finally:
            torch.set_default_dtype(default_dtype)
            for h in handles:
                h.remove()
        with timer('network at the classes (cond, null, keep mask, guided)'):
            _network_outputs(tu, inp, opts, t, to_np, out, timer=timer)
        if 'buffers' in parts:
            for b in DIFFUSION_BUFFERS:
                if torch.is_tensor(getattr(td, b, None)):
                    out['buffer/' + b] = getattr(td, b).numpy()
        if 'loss' in parts:
            with timer('loss'):
                out[f'loss/{td.objective}'] = td(t(inp['loss_img']), times=t(inp['loss_times']),
                                                 classes=t(inp['loss_classes']), noise=t(inp['loss_noise'].copy()),
                                                 cond_keep_mask=t(inp['loss_keep'])).numpy()
        if 'sample' in parts:
            with timer('sampling'), injected_draws(randn=list(inp['sample_noise'])):
                out['sample/final'] = td.sample(classes=t(inp['sample_classes']), cond_scale=opts['cond_scale'],
                                                rescaled_phi=opts['rescaled_phi']).numpy()
    return out


def ms_side(cfg, state_dict, inp, opts, timer, parts, graph):
    """The twin's outputs, keyed like :func:`torch_side` (plus ``unet/all[graph]``)."""
    import mindspore as ms
    from ms_ddpm.denoising_diffusion_pytorch import DIFFUSION_BUFFERS
    from ms_ddpm_tools.verify.core import _Recorder
    ms.set_context(mode=ms.PYNATIVE_MODE)
    T = ms.Tensor
    mu, md = build(cfg, state_dict, 'ms')
    out = OrderedDict()
    args = (T(inp['unet_x']), T(inp['unet_t']), T(inp['unet_classes']))
    if 'layers' in parts:
        rec = _Recorder(lambda a: a.asnumpy())
        handles = [c.register_forward_hook(rec.hook(n)) for n, c in mu.cells_and_names()]
        with timer('layers (hooked forward)'):
            mu(*args, cond_drop_prob=0.)
        for h in handles:
            h.remove()
        out.update(('layer/' + k, v) for k, v in rec.out.items())
    with timer('network at the classes (cond, null, keep mask, guided)'):
        _network_outputs(mu, inp, opts, T, lambda a: a.asnumpy(), out, timer=timer)
    if graph:
        def forward(x, tt, y):
            return mu(x, tt, y, cond_drop_prob=0.)
        compiled = ms.jit(forward)
        with timer('U-Net forward [graph] incl. compile'):
            compiled(*args).asnumpy()
        with timer('U-Net forward [graph]'):
            out['unet/all[graph]'] = compiled(*args).asnumpy()
    if 'buffers' in parts:
        params = dict(md.parameters_and_names())
        for b in DIFFUSION_BUFFERS:
            if b in params:
                out['buffer/' + b] = params[b].asnumpy()
    if 'loss' in parts:
        with timer('loss'):
            out[f'loss/{md.objective}'] = md(T(inp['loss_img']), times=T(inp['loss_times']),
                                             cond_keep_mask=T(inp['loss_keep']), classes=T(inp['loss_classes']),
                                             noise=T(inp['loss_noise'])).asnumpy()
    if 'sample' in parts:
        md.jit_sampling = bool(graph)          # the compiled sampling steps in GRAPH runs only
        with timer('sampling'):
            out['sample/final'] = md.sample(T(inp['sample_classes']), cond_scale=opts['cond_scale'],
                                            rescaled_phi=opts['rescaled_phi'], noise=inp['sample_noise']).asnumpy()
    return out


def class_grid_png(expected, actual, classes, path):
    """The class-conditional picture: a row per class, PyTorch | MindSpore | |difference|
    (stretched to the largest difference) of that class's samples.  Returns the largest |difference|."""
    from ms_ddpm_tools.verify.report import image_rows_png
    e, a = (np.clip(np.asarray(x, np.float64), 0, 1) for x in (expected, actual))
    d = np.abs(e - a)
    dmax = float(d.max())
    ds = d / dmax if dmax > 0 else d
    k = e.shape[0] // len(classes)
    rows = [np.concatenate([x[i * k:(i + 1) * k] for x in (e, a, ds)]) for i in range(len(classes))]
    labels = [(name if j == 0 else '') for name in ('PyTorch', 'MindSpore', '|diff|') for j in range(k)]
    image_rows_png(rows, path, labels=labels, row_labels=[f'class {c}' for c in classes])
    return dmax
