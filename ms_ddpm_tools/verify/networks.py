"""verify for bare networks verified on their own (issue 15: rows of ``weight_convert.families``
with ``verify='network'``: KarrasUnet, KarrasUnet1D, KarrasUnet3D, simple_diffusion's UViT).

What is compared (keys as ``core``'s, so the report and the gate need nothing new):

- ``layer/*``: every layer hooked (PyNative), the network at each noise level;
- ``unet/*``: the network's output at a few noise levels (Elucidated's c_noise(sigma) =
  log(sigma) / 4 with its c_in-scaled input, sigma in ``processes.SIGMAS``), class labels and a
  self-conditioning input where the network takes them, PyNative and (``graph``) compiled;
  the reference's float64 run of the same weights and inputs is the accuracy gate's yardstick.
  UViT takes the log-SNR its GaussianDiffusion feeds it: the images noised to the log-SNRs of
  ``processes.LOG_SNRS`` (alpha^2 = sigmoid(log-SNR)); it has no image_size argument (convolutions
  and a ViT without position embedding): the compared images' side is ``--image-size`` or the
  smallest side >= 8 its patching and downsampling take (:func:`input_side`).

Both networks run in eval mode: the Karras convolutions overwrite their own weights with the
normalised ones on every *training* forward, which would change the weights being compared.
There is no loss and no sampler: the network alone has none (ElucidatedDiffusion(KarrasUnet) is
refused by both frameworks: docs/convert.md).
"""

import copy
from collections import OrderedDict

import numpy as np

PARTS = ('weights', 'layers', 'unet')


def is_network(cfg):
    from weight_convert.families import NETWORK_KINDS
    return cfg.get('model') in NETWORK_KINDS


LOG_SNR_NETWORKS = ('UViT',)       # conditioned on the log-SNR (simple_diffusion.GaussianDiffusion feeds it)


def input_side(cfg, image_size=None):
    """The side of the images a bare network without an ``image_size`` argument (UViT) is compared
    on: ``image_size`` (checked to fit), else the smallest side >= 8 that its patch_size and
    downsample factors divide.  Raises VerifyError (one line) for a side that does not fit."""
    from ms_ddpm_tools.verify.core import VerifyError
    u = cfg['unet']
    stages = len(u.get('dim_mults') or ())
    factors = u.get('downsample_factor', 2)
    factors = list(factors) if isinstance(factors, (list, tuple)) else [factors] * stages
    step = int(u.get('patch_size') or 1) * int(np.prod(factors))
    if image_size is None:
        return step * -(-8 // step)
    if image_size % step:
        raise VerifyError(f'--image-size {image_size}: the {cfg["model"]} takes sides divisible by {step} '
                          f'(patch_size {u.get("patch_size")} x downsample factors {factors})')
    return int(image_size)


def make_inputs(cfg, batch=4, seed=0):
    """(inputs, conditioning values) of a network verify run, as NumPy arrays."""
    from ms_ddpm_tools.verify.default import digits_array
    from ms_ddpm_tools.verify.processes import LOG_SNRS, SIGMAS
    from weight_convert.families import KIND_FAMILY
    u = cfg['unet']
    c, dims = int(u.get('channels', 3)), KIND_FAMILY[cfg['model']].dims
    rng = np.random.default_rng(seed)
    if cfg['model'] in LOG_SNR_NETWORKS:     # UViT: images noised to each log-SNR, the log-SNR its time input
        cfg['image_size'] = input_side(cfg, cfg.get('image_size'))        # (recorded in the report's config)
        x0 = digits_array(cfg['image_size'], count=max(batch, 1), offset=1000)
        x0 = np.repeat(x0, c, axis=1).astype(np.float64) * 2 - 1
        ts = list(LOG_SNRS)
        a = np.repeat(1 / (1 + np.exp(-np.array(ts, np.float64))), batch).reshape(-1, 1, 1, 1)
        noise = rng.standard_normal((len(ts) * batch,) + x0.shape[1:])
        x = np.sqrt(a) * np.tile(x0, (len(ts), 1, 1, 1)) + np.sqrt(1 - a) * noise
        return OrderedDict(unet_x=x.astype(np.float32),
                           unet_t=np.repeat(np.array(ts, np.float32), batch)), ts
    if dims == 1:       # KarrasUnet1D: a row of the digit pictures per channel, (b, c, seq_len)
        n = int(u['seq_len'])
        x0 = digits_array(n, count=max(batch, 1), offset=1000)[:, :, n // 2, :]
    else:               # (b, c, h, w); KarrasUnet3D: the frames shifted by a pixel each, (b, c, f, h, w)
        x0 = digits_array(int(u['image_size']), count=max(batch, 1), offset=1000)
        if dims == 3:
            x0 = np.stack([np.roll(x0, f, axis=-1) for f in range(int(u['frames']))], axis=2)
    x0 = np.repeat(x0, c, axis=1).astype(np.float64) * 2 - 1
    ts = list(SIGMAS)
    sig = np.repeat(np.array(ts, np.float64), batch).reshape((-1,) + (1,) * (x0.ndim - 1))
    noise = rng.standard_normal((len(ts) * batch,) + x0.shape[1:])
    x = (np.tile(x0, (len(ts),) + (1,) * (x0.ndim - 1)) + sig * noise) / np.sqrt(sig ** 2 + 0.25)   # c_in(sigma), sigma_data 0.5
    inp = OrderedDict(unet_x=x.astype(np.float32),
                      unet_t=np.repeat(np.log(np.array(ts)) * 0.25, batch).astype(np.float32))
    if u.get('self_condition'):
        inp['unet_self_cond'] = rng.standard_normal(x.shape).astype(np.float32)
    if u.get('num_classes'):
        inp['unet_class'] = rng.integers(0, int(u['num_classes']), size=(x.shape[0],)).astype(np.int64)
    return inp, ts


def _kwargs(inp, convert):
    kw = {}
    if 'unet_self_cond' in inp:
        kw['self_cond'] = convert(inp['unet_self_cond'])
    if 'unet_class' in inp:
        kw['class_labels'] = convert(inp['unet_class'])
    return kw


def build(cfg, state_dict, framework):
    """The network of ``framework`` ('torch' | 'ms'), ``state_dict`` loaded strictly, eval mode."""
    from weight_convert.converter import build_network
    if framework == 'torch':
        import torch
        from reference import check_reference_version
        check_reference_version()
        net = build_network(cfg, 'torch')
        net.load_state_dict({k: torch.from_numpy(np.array(v, copy=True)) for k, v in state_dict.items()}, strict=True)
        return net.eval()
    from weight_convert import load_torch_state_dict
    net = build_network(cfg, 'ms')
    load_torch_state_dict(net, state_dict)
    net.set_train(False)
    return net


def torch_side(cfg, state_dict, inp, timer, notes):
    """The reference network's outputs: ``layer/*``, ``unet/all`` and their float64 run."""
    import torch
    from ms_ddpm_tools.verify.core import _Recorder
    t = torch.from_numpy
    torch.manual_seed(0)
    net = build(cfg, state_dict, 'torch')
    out = OrderedDict()
    with torch.no_grad():
        rec = _Recorder(lambda x: x.detach().cpu().numpy())
        handles = [m.register_forward_hook(rec.hook(n)) for n, m in net.named_modules()]
        with timer('layers (hooked forward)'):
            net(t(inp['unet_x']), t(inp['unet_t']), **_kwargs(inp, t))
        for h in handles:
            h.remove()
        out.update(('layer/' + k, v) for k, v in rec.out.items())
        net64 = copy.deepcopy(net).double()
        rec64 = _Recorder(lambda x: x.detach().cpu().numpy())
        handles = [m.register_forward_hook(rec64.hook(n)) for n, m in net64.named_modules()]
        # the reference casts the one-hot class labels with .float() (float32, exact: 0/1 times
        # sqrt(num_classes) rounded once); in the float64 copy they meet float64 weights: cast
        # them to float64 at the class embedding's input (the values unchanged)
        if getattr(net64, 'to_class_emb', None) is not None:
            handles.append(net64.to_class_emb.register_forward_pre_hook(
                lambda m, args: tuple(a.double() if torch.is_tensor(a) else a for a in args)))
        f64 = {k: (v.astype(np.float64) if v.dtype == np.float32 else v) for k, v in inp.items()}
        default_dtype = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            y64 = net64(t(f64['unet_x']), t(f64['unet_t']), **_kwargs(f64, t)).numpy()
            out.update(('f64layer/' + k, v) for k, v in rec64.out.items())
            out['f64unet/all'] = y64
        except RuntimeError as e:        # a float32 tensor made inside meets float64 weights
            notes.append(f'no float64 reference run ({str(e).splitlines()[0][:120]}): the tolerance alone gates')
        finally:
            torch.set_default_dtype(default_dtype)
            for h in handles:
                h.remove()
        args = (t(inp['unet_x']), t(inp['unet_t']))
        with timer('U-Net forward (first call)'):
            net(*args, **_kwargs(inp, t))
        out['unet/all'] = net(*args, **_kwargs(inp, t)).numpy()
        timer.median('U-Net forward', lambda: net(*args, **_kwargs(inp, t)))
    return out


def ms_side(cfg, state_dict, inp, timer, graph):
    """The twin's outputs, keyed like :func:`torch_side` (plus ``unet/all[graph]``)."""
    import mindspore as ms
    from ms_ddpm_tools.verify.core import _Recorder
    ms.set_context(mode=ms.PYNATIVE_MODE)
    net = build(cfg, state_dict, 'ms')
    T = ms.Tensor
    out = OrderedDict()
    rec = _Recorder(lambda x: x.asnumpy())
    handles = [c.register_forward_hook(rec.hook(n)) for n, c in net.cells_and_names()]
    kw = _kwargs(inp, T)
    x, tt = T(inp['unet_x']), T(inp['unet_t'])
    with timer('layers (hooked forward)'):
        net(x, tt, **kw)
    for h in handles:
        h.remove()
    out.update(('layer/' + k, v) for k, v in rec.out.items())
    with timer('U-Net forward (first call)'):
        net(x, tt, **kw).asnumpy()
    out['unet/all'] = net(x, tt, **kw).asnumpy()
    timer.median('U-Net forward', lambda: net(x, tt, **kw).asnumpy())
    if graph:
        sc, cl = kw.get('self_cond'), kw.get('class_labels')

        if kw:
            def forward(x, tt):
                return net(x, tt, self_cond=sc, class_labels=cl)
        else:                   # UViT: (x, time) only
            def forward(x, tt):
                return net(x, tt)
        compiled = ms.jit(forward)
        with timer('U-Net forward [graph] incl. compile'):
            compiled(x, tt).asnumpy()
        out['unet/all[graph]'] = compiled(x, tt).asnumpy()
        timer.median('U-Net forward [graph]', lambda: compiled(x, tt).asnumpy())
    return out
