"""The benchmark items.  Each builds the PyTorch reference and its MindSpore twin with the
same weights, times both on the same inputs, and returns a dict of figures (seconds).

MindSpore runs asynchronously: every timed MindSpore call ends in ``.asnumpy()`` on its
result, so the time covers the work.  GRAPH mode is ``ms.jit`` of a function calling the
cell (as in ``parity.harness.run_ms``); its first call (tracing + compiling + one run)
is timed on its own and ``compile_s`` = first call - steady-state median.
"""

import time

import numpy as np

from bench.timing import interleaved, load, ratio, timed

# The reference's default U-Net, and the small U-Net of the parity tests (parity/cases.py).
DEFAULT_UNET = dict(dim=64)
SMALL_UNET = dict(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8)
UNET1D = dict(dim=64, dim_mults=(1, 2, 4, 8), channels=2)


def _torch():
    import torch
    return torch


def build_unets(cfg, seed=0, dims=2):
    """(torch Unet, MindSpore Unet) with the same weights (loaded strictly by name); ``dims=1``:
    the Unet1D pair."""
    torch = _torch()
    from weight_convert import load_torch_state_dict
    import ms_ddpm
    if dims == 1:
        import denoising_diffusion_pytorch as ddp
        torch.manual_seed(seed)
        t, m = ddp.Unet1D(**cfg), ms_ddpm.Unet1D(**cfg)
    else:
        from reference.builders import build_unet
        t, m = build_unet(cfg, seed=seed), ms_ddpm.Unet(**cfg)
    load_torch_state_dict(m, t.state_dict())
    return t, m


def build_diffusions(cfg, seed=0, dims=2, **diffusion_kwargs):
    """(torch GaussianDiffusion, MindSpore GaussianDiffusion) around U-Nets with the same
    weights; ``dims=1``: GaussianDiffusion1D around Unet1D."""
    import denoising_diffusion_pytorch as ddp
    import ms_ddpm
    t_unet, m_unet = build_unets(cfg, seed=seed, dims=dims)
    name = 'GaussianDiffusion1D' if dims == 1 else 'GaussianDiffusion'
    return getattr(ddp, name)(t_unet, **diffusion_kwargs), getattr(ms_ddpm, name)(m_unet, **diffusion_kwargs)


def fast_built(build):
    """``build()`` with ms_ddpm.fastconv's oneDNN convolutions on (``--fast-cpu``): the cells it
    makes run their convs through the oneDNN kernels.  Fails (FastConvError) if the path cannot
    be built: a benchmark asked for it must not quietly time the stock path."""
    from ms_ddpm import fastconv
    fastconv.library(strict=True)
    with fastconv.enabled(True):
        return build()


def fast_first_call(fn):
    """The first (compiling) call of a fast model's function, with the path on: softmax / SiLU
    take the fused kernels in graphs traced while it is on (``fastconv.enabled``)."""
    from ms_ddpm import fastconv
    with fastconv.enabled(True):
        return timed(fn)


def sides(s):
    """The contestants this worker times: all of them (one process; 'fast' with --fast-cpu), or
    the one of an isolated run (``s.side``, bench.run.ISOLATED)."""
    if s.side:
        return {s.side}
    return {'torch', 'stock'} | ({'fast'} if s.fast_cpu else set())


def _finish(result, figures):
    """Add ratios MindSpore / PyTorch for every MindSpore figure, and the compile times."""
    result['figures'] = figures
    if 'torch' not in figures:       # one side of an isolated run: bench.run.merge_sides adds them
        return result
    torch_s = figures['torch']['median_s']
    result['figures'] = figures
    result['ratios'] = {name: ratio(f['median_s'], torch_s) for name, f in figures.items() if name != 'torch'}
    return result


def unet_forward(s, name, cfg, shape, dims=2):
    """One U-Net forward (no gradients) at ``shape``: torch eager, MindSpore PyNative and GRAPH."""
    torch = _torch()
    import mindspore as ms
    net = 'Unet1D' if dims == 1 else 'Unet'
    result = {'item': name, 'what': f'{net}({_cfg_str(cfg)}) forward, input {shape}', 'load_before': load()}
    t, m = build_unets(cfg, dims=dims)
    t.eval()
    m.set_train(False)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    tm = rng.integers(0, 1000, size=(shape[0],)).astype(np.int64)
    xt, tt = torch.from_numpy(x), torch.from_numpy(tm)
    xm, tmm = ms.Tensor(x), ms.Tensor(tm)

    def run_torch():
        with torch.no_grad():
            return t(xt, tt)

    def forward(a, b):
        return m(a, b)
    graph = ms.jit(forward)

    fns = {'torch': run_torch, 'ms_graph': lambda: graph(xm, tmm).asnumpy()}
    if 'pynative' in s.modes:
        fns['ms_pynative'] = lambda: m(xm, tmm).asnumpy()
    first = timed(fns['ms_graph'])
    figures = interleaved(fns, s.repeats, warmup=1)
    result['compile_s'] = {'ms_graph': max(first - figures['ms_graph']['median_s'], 0.0)}
    result['first_call_s'] = {'ms_graph': first}
    result['load_after'] = load()
    return _finish(result, figures)


def train_step(s, name, cfg, batch, image_size, dims=2):
    """One GaussianDiffusion training step (loss + backward + Adam(lr 1e-4, betas (0.9, 0.99)))
    on the same batch, times and noise in both frameworks.  MindSpore: ``ms.value_and_grad`` +
    ``ms_ddpm.training.Adam`` (torch's update; GRAPH: the whole step in one ``ms.jit``), and in GRAPH
    mode also MindSpore's own ``nn.Adam`` (ApplyAdam kernel; a different eps placement)."""
    torch = _torch()
    import mindspore as ms
    from mindspore import nn
    from ms_ddpm.training import Adam
    size = dict(seq_length=image_size) if dims == 1 else dict(image_size=image_size)
    what = (f'GaussianDiffusion1D(Unet1D({_cfg_str(cfg)}), seq_length={image_size})' if dims == 1 else
            f'GaussianDiffusion(Unet({_cfg_str(cfg)}), image_size={image_size})')
    result = {'item': name, 'what': f'{what} train step, batch {batch}', 'load_before': load()}
    t, m = build_diffusions(cfg, dims=dims, **size)
    t.train()
    m.set_train(True)
    rng = np.random.default_rng(0)
    channels = cfg.get('channels', 3)
    img = rng.random((batch, channels) + (image_size,) * dims).astype(np.float32)
    times = rng.integers(0, 1000, size=(batch,)).astype(np.int64)
    noise = rng.standard_normal(img.shape).astype(np.float32)
    it, tt, nt = (torch.from_numpy(a) for a in (img, times, noise))
    im, tm, nm = (ms.Tensor(a) for a in (img, times, noise))

    t_opt = torch.optim.Adam(t.parameters(), lr=1e-4, betas=(0.9, 0.99))

    def run_torch():
        loss = t(it, times=tt, noise=nt)
        loss.backward()
        t_opt.step()
        t_opt.zero_grad()
        return loss.item()

    params = m.trainable_params()

    def loss_fn(img_, times_, noise_):
        return m(img_, times = times_, noise = noise_)

    def make_step(opt):
        grad_fn = ms.value_and_grad(loss_fn, None, opt.parameters)

        def step(img_, times_, noise_):
            loss, grads = grad_fn(img_, times_, noise_)
            opt(grads)
            return loss
        return step

    opt_py = Adam(params, lr=1e-4, betas=(0.9, 0.99))
    opt_graph = Adam(params, lr=1e-4, betas=(0.9, 0.99))
    py_step = make_step(opt_py)
    graph_step = ms.jit(make_step(opt_graph))
    who = sides(s)
    fns, first = {'torch': run_torch} if 'torch' in who else {}, {}
    if 'stock' in who:
        fns['ms_graph'] = lambda: graph_step(im, tm, nm).asnumpy()
        first['ms_graph'] = timed(fns['ms_graph'])
    if 'stock' in who and s.full and 'nn_adam' in s.extras:
        nn_opt = nn.Adam(params, learning_rate=1e-4, beta1=0.9, beta2=0.99)
        graph_nn = ms.jit(make_step(nn_opt))
        fns['ms_graph_nn_adam'] = lambda: graph_nn(im, tm, nm).asnumpy()
        first['ms_graph_nn_adam'] = timed(fns['ms_graph_nn_adam'])
    if 'stock' in who and 'pynative' in s.modes:
        fns['ms_pynative'] = lambda: py_step(im, tm, nm).asnumpy()
    if 'fast' in who:        # the same weights, the convs through ms_ddpm.fastconv
        _, m_fast = fast_built(lambda: build_diffusions(cfg, dims=dims, **size))
        m_fast.set_train(True)

        def loss_fast(img_, times_, noise_):
            return m_fast(img_, times = times_, noise = noise_)
        opt_fast = Adam(m_fast.trainable_params(), lr=1e-4, betas=(0.9, 0.99))
        grad_fast = ms.value_and_grad(loss_fast, None, opt_fast.parameters)

        def fast_step(img_, times_, noise_):
            loss, grads = grad_fast(img_, times_, noise_)
            opt_fast(grads)
            return loss
        graph_fast = ms.jit(fast_step)
        fns['ms_graph_fast'] = lambda: graph_fast(im, tm, nm).asnumpy()
        first['ms_graph_fast'] = fast_first_call(fns['ms_graph_fast'])
    figures = interleaved(fns, s.train_repeats, warmup=1)
    result['compile_s'] = {k: max(v - figures[k]['median_s'], 0.0) for k, v in first.items()}
    result['first_call_s'] = first
    result['load_after'] = load()
    return _finish(result, figures)


def sampling(s, name, cfg, image_size, batch, timesteps, sampling_timesteps, dims=2):
    """``GaussianDiffusion.sample(batch)``: DDIM when ``sampling_timesteps < timesteps``, else
    DDPM (one U-Net call per step).  MindSpore compiles its sampling step with ``ms.jit``
    (``GaussianDiffusion.jit_sampling``); the first call's extra time is the compile time."""
    torch = _torch()
    import mindspore as ms
    steps = sampling_timesteps or timesteps
    kind = 'DDIM' if steps < timesteps else 'DDPM'
    shape = f'Unet1D({_cfg_str(cfg)}) length {image_size}' if dims == 1 else f'Unet({_cfg_str(cfg)}) {image_size}x{image_size}'
    result = {'item': name, 'what': f'{kind} sampling, {steps} steps, batch {batch}, {shape}',
              'steps': steps, 'load_before': load()}
    size = dict(seq_length=image_size) if dims == 1 else dict(image_size=image_size)
    t, m = build_diffusions(cfg, dims=dims, timesteps=timesteps, sampling_timesteps=sampling_timesteps, **size)
    t.eval()
    m.set_train(False)

    def run_torch():
        return t.sample(batch_size=batch)

    who = sides(s)
    fns, first = {'torch': run_torch} if 'torch' in who else {}, {}
    torch.manual_seed(0)
    ms.set_seed(0)
    if 'stock' in who:
        fns['ms_graph'] = lambda: m.sample(batch_size=batch).asnumpy()
        first['ms_graph'] = timed(fns['ms_graph'])
    if 'fast' in who:        # the same weights, ms_ddpm.fastconv's kernels (compiled with the path on)
        _, m_fast = fast_built(lambda: build_diffusions(cfg, dims=dims, timesteps=timesteps,
                                                        sampling_timesteps=sampling_timesteps, **size))
        m_fast.set_train(False)
        fns['ms_graph_fast'] = lambda: m_fast.sample(batch_size=batch).asnumpy()
        first['ms_graph_fast'] = fast_first_call(fns['ms_graph_fast'])
    figures = interleaved(fns, s.sample_repeats, warmup=0)
    for f in figures.values():
        f['per_step_s'] = f['median_s'] / steps
    result['compile_s'] = {k: max(v - figures[k]['median_s'], 0.0) for k, v in first.items()}
    result['first_call_s'] = first
    result['load_after'] = load()
    return _finish(result, figures)


def convert(s, root):
    """Checkpoint conversion against ``cp``, and peak memory: ``bench.convert_bench`` (owned by
    the converter's maintainers) if present.  It runs in a fresh interpreter: its children's
    peak RSS (``ru_maxrss``) would otherwise include the pages they share, between fork and
    exec, with this process, which by then holds GiBs of models and compiled graphs."""
    import json
    import subprocess
    import sys
    result = {'item': 'convert', 'what': 'checkpoint conversion of a large U-Net vs cp, peak memory', 'load_before': load()}
    try:
        import bench.convert_bench  # noqa: F401  (only: is it there?)
    except ImportError as err:
        result['skipped'] = f'bench.convert_bench is not available yet ({err})'
        return result
    code = ('import inspect, json\n'
            'from bench.convert_bench import run_convert_bench as f\n'
            'p = inspect.signature(f).parameters\n'
            f'kw = {{k: v for k, v in dict(quick={not s.full}, verbose=False).items() if k in p}}\n'
            "print('@@JSON@@' + json.dumps(f(**kw)))\n")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, '-c', code], cwd=root, capture_output=True, text=True)
    result['wall_s'] = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if line.startswith('@@JSON@@')]
    if proc.returncode or not lines:
        raise RuntimeError(f'bench.convert_bench failed ({proc.returncode}): {proc.stderr[-1500:]}')
    result['convert_bench'] = json.loads(lines[-1][len('@@JSON@@'):])
    result['load_after'] = load()
    return result


def suite(s, root):
    """Wall time of ``python -m pytest parity_tests -q`` in a subprocess."""
    import subprocess
    import sys
    result = {'item': 'suite', 'what': 'wall time of the parity test suite (pytest parity_tests -q)', 'load_before': load()}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, '-m', 'pytest', 'parity_tests', '-q', '-p', 'no:cacheprovider'],
                          cwd=root, capture_output=True, text=True)
    result['wall_s'] = time.perf_counter() - start
    result['returncode'] = proc.returncode
    result['summary'] = (proc.stdout.strip().splitlines() or [''])[-1]
    result['load_after'] = load()
    return result


def _cfg_str(cfg):
    return ', '.join(f'{k}={v}' for k, v in cfg.items())


def convs(s):
    """Single convolutions at Unet(dim=64)'s first stage, 16x64x32x32 float32 (the op whose
    CPU speed differs most between MindSpore versions, see docs/benchmarks.md): 3x3 (pad 1)
    and 1x1, forward, torch eager vs MindSpore PyNative and GRAPH."""
    torch = _torch()
    import mindspore as ms
    from ms_ddpm.ms_compat import Conv2d
    result = {'item': 'convs', 'what': 'one Conv2d forward, 16x64x32x32 -> 64 channels', 'load_before': load(), 'kernels': {}}
    x = np.random.default_rng(0).standard_normal((16, 64, 32, 32)).astype(np.float32)
    xt, xm = torch.from_numpy(x), ms.Tensor(x)
    for k in (3, 1):
        m = Conv2d(64, 64, k, padding=k // 2)
        t = torch.nn.Conv2d(64, 64, k, padding=k // 2)
        mf = fast_built(lambda: Conv2d(64, 64, k, padding=k // 2)) if 'fast' in sides(s) else None

        def run_torch(t=t):
            with torch.no_grad():
                return t(xt)

        def forward(a, m=m):
            return m(a)
        graph = ms.jit(forward)
        who = sides(s)
        fns, first = {'torch': run_torch} if 'torch' in who else {}, {}
        if 'stock' in who:
            fns['ms_graph'] = lambda g=graph: g(xm).asnumpy()
            if 'pynative' in s.modes:
                fns['ms_pynative'] = lambda m=m: m(xm).asnumpy()
            first['ms_graph'] = timed(fns['ms_graph'])
        if mf is not None:
            def forward_fast(a, mf=mf):
                return mf(a)
            graph_fast = ms.jit(forward_fast)
            fns['ms_graph_fast'] = lambda g=graph_fast: g(xm).asnumpy()
            if 'pynative' in s.modes:
                fns['ms_pynative_fast'] = lambda mf=mf: mf(xm).asnumpy()
            first['ms_graph_fast'] = timed(fns['ms_graph_fast'])
        figures = interleaved(fns, max(2, min(s.repeats, 5)), warmup=1)
        r = _finish({'first_call_s': first}, figures)
        r['compile_s'] = {k: max(v - figures[k]['median_s'], 0.0) for k, v in first.items()}
        result['kernels'][f'{k}x{k}'] = r
    result['load_after'] = load()
    return result


def fid_features(s, name='fid_features', batch=8, size=299):
    """FID feature extraction as the reference's FIDEvaluation runs it (InceptionV3 to the
    2048-d pool block, ``resize_input=True``): pytorch-fid eager vs
    ``ms_ddpm.fid_evaluation.InceptionV3`` PyNative and GRAPH, same random weights; adds
    ``images_per_s`` per side."""
    torch = _torch()
    import mindspore as ms
    from parity.cases_fid import inception_pair
    result = {'item': name, 'what': f'FID InceptionV3 features (2048-d), batch {batch}, input {size}x{size}',
              'load_before': load()}
    t, m = inception_pair(dict(output_blocks=(3,)))
    x = np.random.default_rng(0).random((batch, 3, size, size)).astype(np.float32)
    xt, xm = torch.from_numpy(x), ms.Tensor(x)

    def run_torch():
        with torch.no_grad():
            return t(xt)[0]

    def forward(a):
        return m(a)[0]
    graph = ms.jit(forward)
    fns = {'torch': run_torch, 'ms_graph': lambda: graph(xm).asnumpy()}
    if 'pynative' in s.modes:
        fns['ms_pynative'] = lambda: m(xm)[0].asnumpy()
    first = timed(fns['ms_graph'])
    figures = interleaved(fns, s.repeats, warmup=1)
    result['compile_s'] = {'ms_graph': max(first - figures['ms_graph']['median_s'], 0.0)}
    result['first_call_s'] = {'ms_graph': first}
    result['images_per_s'] = {k: batch / f['median_s'] for k, f in figures.items()}
    result['load_after'] = load()
    return _finish(result, figures)


# --- issue 15: KarrasUnet and UViT (simple_diffusion) ------------------------------------------
# Small but not tiny configurations at 32x32, batch 8: the forward (eval, no gradients) and a
# training step (KarrasUnet: MSE to a target, its training forward normalising the weights;
# UViT: simple diffusion's GaussianDiffusion loss) + Adam(lr 1e-4, betas (0.9, 0.99)).

KARRAS_UNET = dict(image_size=32, dim=32, dim_max=128, channels=3, num_downsamples=2, num_blocks_per_stage=1,
                   attn_res=(8,), attn_dim_head=32)
UVIT = dict(dim=32, dim_mults=(1, 2, 4), vit_depth=2, attn_dim_head=32, attn_heads=4)


def _net_pair(family, seed=0):
    """(torch, MindSpore) KarrasUnet or UViT with the same weights (loaded strictly by name)."""
    torch = _torch()
    from weight_convert import load_torch_state_dict
    from reference import check_reference_version
    check_reference_version()
    if family == 'karras':
        from denoising_diffusion_pytorch.karras_unet import KarrasUnet as T
        from ms_ddpm.karras_unet import KarrasUnet as M
        cfg = KARRAS_UNET
    else:
        from denoising_diffusion_pytorch.simple_diffusion import UViT as T
        from ms_ddpm.simple_diffusion import UViT as M
        cfg = UVIT
    torch.manual_seed(seed)
    t, m = T(**cfg), M(**cfg)
    if family == 'karras':
        from ms_ddpm.ms_compat import name_parameters_by_path
        name_parameters_by_path(m)
    load_torch_state_dict(m, t.state_dict())
    return t, m, cfg


def family_forward(s, name, family, batch=8):
    """One KarrasUnet / UViT forward (no gradients), 32x32, batch 8: torch eager, MindSpore PyNative and GRAPH."""
    torch = _torch()
    import mindspore as ms
    t, m, cfg = _net_pair(family)
    what = ('KarrasUnet' if family == 'karras' else 'UViT') + f'({_cfg_str(cfg)}) forward, batch {batch}, 32x32'
    result = {'item': name, 'what': what, 'load_before': load()}
    t.eval()
    m.set_train(False)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    tm = (rng.random(batch) if family == 'karras' else rng.uniform(-15, 15, batch)).astype(np.float32)
    xt, tt, xm, tmm = torch.from_numpy(x), torch.from_numpy(tm), ms.Tensor(x), ms.Tensor(tm)

    def run_torch():
        with torch.no_grad():
            return t(xt, tt)

    def forward(a, b):
        return m(a, b)
    graph = ms.jit(forward)
    fns = {'torch': run_torch, 'ms_graph': lambda: graph(xm, tmm).asnumpy()}
    if 'pynative' in s.modes:
        fns['ms_pynative'] = lambda: m(xm, tmm).asnumpy()
    first = timed(fns['ms_graph'])
    figures = interleaved(fns, s.repeats, warmup=1)
    result['compile_s'] = {'ms_graph': max(first - figures['ms_graph']['median_s'], 0.0)}
    result['first_call_s'] = {'ms_graph': first}
    result['load_after'] = load()
    return _finish(result, figures)


def family_train(s, name, family, batch=8):
    """One training step (loss + backward + Adam) of KarrasUnet (MSE to a target) or of simple
    diffusion's GaussianDiffusion around UViT (times and noise given), 32x32, batch 8."""
    torch = _torch()
    import mindspore as ms
    from mindspore import ops
    from ms_ddpm.training import Adam
    t, m, cfg = _net_pair(family)
    rng = np.random.default_rng(0)
    img = rng.random((batch, 3, 32, 32)).astype(np.float32)
    times = rng.random(batch).astype(np.float32)
    other = rng.standard_normal(img.shape).astype(np.float32)     # KarrasUnet: the target; UViT: the noise
    if family == 'karras':
        what = f'KarrasUnet({_cfg_str(cfg)}) train step (MSE), batch {batch}'
        t_loss = lambda a, b, c: torch.nn.functional.mse_loss(t(a, b), c)
        m_loss = lambda a, b, c: ops.mean((m(a, b) - c) ** 2)
    else:
        from denoising_diffusion_pytorch.simple_diffusion import GaussianDiffusion as TG
        from ms_ddpm.simple_diffusion import GaussianDiffusion as MG
        t, m = TG(t, image_size=32), MG(m, image_size=32)
        what = f'simple_diffusion.GaussianDiffusion(UViT({_cfg_str(cfg)}), image_size=32) train step, batch {batch}'

        def t_loss(a, b, c):     # the reference's forward with its uniform_ times given: p_losses on the normalised image
            return t.p_losses(a * 2 - 1, b, noise=c)
        m_loss = lambda a, b, c: m(a, b, 'mean', c)
    result = {'item': name, 'what': what, 'load_before': load()}
    t.train()
    m.set_train(True)
    args_t = [torch.from_numpy(a) for a in (img, times, other)]
    args_m = [ms.Tensor(a) for a in (img, times, other)]
    t_opt = torch.optim.Adam(t.parameters(), lr=1e-4, betas=(0.9, 0.99))

    def run_torch():
        loss = t_loss(*args_t)
        loss.backward()
        t_opt.step()
        t_opt.zero_grad()
        return loss.item()

    def make_step(opt):
        grad_fn = ms.value_and_grad(m_loss, None, opt.parameters)

        def step(a, b, c):
            loss, grads = grad_fn(a, b, c)
            opt(grads)
            return loss
        return step
    params = m.trainable_params()
    py_step = make_step(Adam(params, lr=1e-4, betas=(0.9, 0.99)))
    graph_step = ms.jit(make_step(Adam(params, lr=1e-4, betas=(0.9, 0.99))))

    def synced(step):
        # MindSpore launches asynchronously: reading the loss alone returns while the backward
        # and the Adam updates still run (and then contend with the next torch call: measured a
        # torch step at 11 s instead of 0.22 s); every updated parameter is read back too
        def run():
            loss = step(*args_m).asnumpy()
            for p in params:
                p.asnumpy()
            return loss
        return run
    fns = {'torch': run_torch, 'ms_graph': synced(graph_step)}
    first = {'ms_graph': timed(fns['ms_graph'])}
    if 'pynative' in s.modes:
        fns['ms_pynative'] = synced(py_step)
    figures = interleaved(fns, s.train_repeats, warmup=1)
    result['compile_s'] = {k: max(v - figures[k]['median_s'], 0.0) for k, v in first.items()}
    result['first_call_s'] = first
    result['load_after'] = load()
    return _finish(result, figures)
