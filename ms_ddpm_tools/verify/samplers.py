"""verify's other samplers of a plain GaussianDiffusion checkpoint (issue 14): ``--sampler repaint``
and ``--sampler guided``.  The checkpoint's weights (the keys of a plain GaussianDiffusion / Unet)
are loaded strictly into the process of the sampler's reference module, in both frameworks:

- ``repaint``: ``repaint.GaussianDiffusion`` around ``repaint.Unet`` (the main Unet's keys): the
  whole RePaint resampling schedule (``--resample-iter/-jump/-every``) on a made-up masked image
  (the digits, the left half known), every ``randn`` shared (``ms_ddpm.repaint.repaint_draw_count``);
- ``guided``: ``guided_diffusion.GaussianDiffusion`` around the main ``Unet`` (guided_diffusion's
  own Unet has the old layout, other keys) with ``cond_fn`` = the reference's example
  ``classifier_cond_fn`` and its ``Classifier`` built from a fixed seed with the same weights in
  both frameworks (``parity.cases_guided.example_classifiers``: the parity tests' builder), the
  classifier's input gradient by ``ms.grad`` against torch autograd; DDPM (the reference's DDIM
  ignores ``cond_fn``: said in the report).

The comparison is ``sample/final`` (tolerance ``sample``), in place of the default sampler's.
"""

import inspect

import numpy as np

SAMPLERS = ('default', 'repaint', 'guided')
MODULES = {'repaint': 'repaint', 'guided': 'guided_diffusion'}
GUIDED_NUM_CLASSES, GUIDED_SEED, GUIDED_SCALE = 10, 7, 1.
CLASSIFIER = 'sampler_classifier.'        # input keys of the example classifier's weights
REPAINT_DEFAULTS = dict(resample_iter=10, resample_jump=10, resample_every=50)     # the reference's sample()


def check(cfg, sampler, checkpoint):
    from ms_ddpm_tools.verify.core import VerifyError
    if sampler not in SAMPLERS:
        raise VerifyError(f'--sampler {sampler!r}: one of {", ".join(SAMPLERS)}')
    if sampler != 'default' and cfg.get('model') not in ('GaussianDiffusion', 'Unet'):
        raise VerifyError(f'{checkpoint}: --sampler {sampler} runs on a GaussianDiffusion (or Unet) checkpoint; '
                          f'this one is a {cfg.get("model")}')
    if sampler == 'guided' and int(cfg['unet'].get('channels', 3)) != 3:
        raise VerifyError(f'{checkpoint}: --sampler guided: the example classifier takes 3-channel images; '
                          f'this model has channels={cfg["unet"].get("channels")}')


def _accepted(cls, kwargs, what, sampler):
    """``kwargs`` the class takes; a non-default value it does not take is named."""
    from ms_ddpm_tools.verify.core import VerifyError
    params = inspect.signature(cls.__init__).parameters
    out, dropped = {}, []
    for k, v in kwargs.items():
        if k in params:
            out[k] = v
        elif v not in (None, False, 0, 0., {}, ()):
            dropped.append(f'{k}={v!r}')
    if dropped:
        raise VerifyError(f'--sampler {sampler}: the reference\'s {MODULES[sampler]}.{what} does not take '
                          f'{", ".join(dropped)}')
    return out


def build(cfg, state_dict, sampler, framework):
    """The sampler's process of ``framework`` ('torch' | 'ms') with the checkpoint's weights."""
    import importlib
    from weight_convert.config import diffusion_kwargs, unet_kwargs
    root = 'denoising_diffusion_pytorch' if framework == 'torch' else 'ms_ddpm'
    mod = importlib.import_module(f'{root}.{MODULES[sampler]}')
    net_mod = mod if sampler == 'repaint' else importlib.import_module(f'{root}.denoising_diffusion_pytorch')
    unet = net_mod.Unet(**_accepted(net_mod.Unet, unet_kwargs(cfg), 'Unet', sampler))
    d = diffusion_kwargs(cfg, require_image_size=False)
    if not d.get('schedule_fn_kwargs'):
        d.pop('schedule_fn_kwargs', None)
    proc = mod.GaussianDiffusion(unet, **_accepted(mod.GaussianDiffusion, d, 'GaussianDiffusion', sampler))
    into_process = any(k.startswith('model.') for k in state_dict)
    if framework == 'torch':
        import torch
        sd = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in state_dict.items()}
        (proc if into_process else unet).load_state_dict(sd, strict=True)
        return proc.eval()
    from weight_convert import load_torch_state_dict
    load_torch_state_dict(proc if into_process else unet, state_dict)
    proc.set_train(False)
    return proc


def options(cfg, sampler, classes=None, cond_scale=None, resample=None):
    opts = {'sampler': sampler}
    if sampler == 'repaint':
        opts.update(REPAINT_DEFAULTS, **{k: int(v) for k, v in (resample or {}).items() if v is not None})
    elif sampler == 'guided':
        from ms_ddpm_tools.verify.cfg import check_labels
        labels = list(range(4)) if classes is None else classes
        opts.update(classes=check_labels(labels, GUIDED_NUM_CLASSES, 'the example classifier has'),
                    classifier_scale=float(GUIDED_SCALE if cond_scale is None else cond_scale),
                    num_classes=GUIDED_NUM_CLASSES, seed=GUIDED_SEED)
    return opts


def make_inputs(cfg, opts, sample_batch=8, seed=0):
    """The sampler's inputs and draws (NumPy), keys ``sampler_*``."""
    from ms_ddpm.repaint import repaint_draw_count
    from ms_ddpm_tools.verify.default import digits_array
    from parity.cases_guided import example_mask
    d = cfg['diffusion']
    c, size, T = int(cfg['unet'].get('channels', 3)), int(d['image_size']), int(d.get('timesteps', 1000))
    rng = np.random.default_rng([seed, 14])
    shape = (sample_batch, c, size, size)
    inp = {}
    if opts['sampler'] == 'repaint':
        inp['sampler_gt'] = np.repeat(digits_array(size, count=sample_batch, offset=1500), c, axis=1).astype(np.float32)
        inp['sampler_mask'] = example_mask('half', seed, shape)
        count = repaint_draw_count(T, True, True, opts['resample_iter'], opts['resample_jump'], opts['resample_every'])
    else:
        inp['sampler_y'] = np.resize(np.array(opts['classes'], np.int64), sample_batch)
        steps = d.get('sampling_timesteps') or T
        count = steps
        # the example classifier's weights (built by the reference's code from the seed) travel with
        # the inputs: the MindSpore side loads them, so a golden fixture replays without PyTorch
        from parity.cases_guided import example_classifiers
        _, tc, _, _ = example_classifiers(size, opts['num_classes'], opts['seed'])
        inp.update((CLASSIFIER + k, v.detach().numpy()) for k, v in tc.state_dict().items())
    inp['sampler_noise'] = rng.standard_normal((count,) + shape).astype(np.float32)
    return inp


def describe(cfg, opts):
    """The sampler, in words (the report's ``sampling.sampler``)."""
    if opts['sampler'] == 'repaint':
        return (f'RePaint (DDPM, {cfg["diffusion"].get("timesteps", 1000)} steps, resample_iter {opts["resample_iter"]}, '
                f'resample_jump {opts["resample_jump"]}, resample_every {opts["resample_every"]})')
    d = cfg['diffusion']
    name = 'DDIM' if (d.get('sampling_timesteps') or d.get('timesteps', 1000)) < d.get('timesteps', 1000) else 'DDPM'
    return (f'{name} with classifier guidance (the reference\'s example classifier, seed {opts["seed"]}, '
            f'{opts["num_classes"]} classes; y = {opts["classes"]}, classifier_scale {opts["classifier_scale"]:g})')


def _repaint_kw(opts):
    return {k: opts[k] for k in REPAINT_DEFAULTS}


def torch_sample(cfg, state_dict, inp, opts, timer, notes):
    import torch
    from reference.draws import injected_draws
    t = torch.from_numpy
    proc = build(cfg, state_dict, opts['sampler'], 'torch')
    if opts['sampler'] == 'repaint':
        with timer('sampling (repaint)'), torch.no_grad(), injected_draws(randn=list(inp['sampler_noise'])):
            return proc.sample(gt=t(inp['sampler_gt']), mask=t(inp['sampler_mask']), **_repaint_kw(opts)).numpy()
    if proc.is_ddim_sampling:
        notes.append('guided: DDIM sampling (sampling_timesteps < timesteps): the reference\'s ddim_sample does '
                     'not use cond_fn; compared all the same')
    from reference.guided_example import example
    TClassifier, t_cond_fn = example()
    tc = TClassifier(int(cfg['diffusion']['image_size']), opts['num_classes'])
    tc.load_state_dict({k[len(CLASSIFIER):]: torch.from_numpy(np.array(v)) for k, v in inp.items()
                        if k.startswith(CLASSIFIER)}, strict=True)      # the weights both sides load (make_inputs)
    with timer('sampling (guided)'), torch.no_grad(), injected_draws(randn=list(inp['sampler_noise'])):
        return proc.sample(batch_size=inp['sampler_noise'].shape[1], cond_fn=t_cond_fn, guidance_kwargs=dict(
            classifier=tc, y=t(inp['sampler_y']), classifier_scale=opts['classifier_scale'])).numpy()


def ms_sample(cfg, state_dict, inp, opts, timer, graph=False):
    """MindSpore's samples (no PyTorch needed: the classifier's weights are inputs)."""
    import mindspore as ms
    T = ms.Tensor
    proc = build(cfg, state_dict, opts['sampler'], 'ms')
    proc.jit_sampling = bool(graph)           # the compiled sampling steps in GRAPH runs only
    if opts['sampler'] == 'repaint':
        with timer('sampling (repaint)'):
            return proc.sample(gt=T(inp['sampler_gt']), mask=T(inp['sampler_mask']), noise=inp['sampler_noise'],
                               **_repaint_kw(opts)).asnumpy()
    from ms_ddpm import guided_diffusion as mg
    from weight_convert import load_torch_state_dict
    mc = mg.Classifier(int(cfg['diffusion']['image_size']), opts['num_classes'])
    load_torch_state_dict(mc, {k[len(CLASSIFIER):]: v for k, v in inp.items() if k.startswith(CLASSIFIER)})
    m_cond_fn = mg.classifier_cond_fn
    with timer('sampling (guided)'):
        return proc.sample(batch_size=inp['sampler_noise'].shape[1], cond_fn=m_cond_fn, noise=inp['sampler_noise'],
                           guidance_kwargs=dict(classifier=mc, y=T(inp['sampler_y']),
                                                classifier_scale=opts['classifier_scale'])).asnumpy()


def repaint_png(inp, expected, actual, path):
    """masked input | PyTorch | MindSpore, a row per sample (the unknown pixels of the input grey)."""
    from ms_ddpm_tools.verify.report import image_rows_png
    gt, mask = inp['sampler_gt'], inp['sampler_mask']
    masked = gt * mask + 0.5 * (1 - mask)
    rows = [np.stack([masked[i], expected[i], actual[i]]) for i in range(gt.shape[0])]
    image_rows_png(rows, path, labels=['masked input', 'PyTorch', 'MindSpore'])
    return float(np.abs(np.asarray(expected, np.float64) - np.asarray(actual, np.float64)).max())
