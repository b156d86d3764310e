"""The one verify engine: ``ms-ddpm verify``, ``verify --against`` and ``convert --verify``
all run :func:`verify`.

The reference (PyTorch) model is built from ``checkpoint`` (or read from a golden fixture);
the ms_ddpm model from ``against`` when given (the file a user converted), else from the same
weights.  Both run the same computations on the same inputs and draws (``core``); every
figure goes through the one gate, ``parity.compare.check``, with the tolerance of its kind;
a figure beyond it gets the float64 second opinion (``core.accuracy_gate``).  With
``against``, every tensor of the converted file is compared with its source tensor too
(conversions are bit-exact: tolerance ``exact``), so an edited or damaged tensor is named.
"""

import os
import time
from collections import OrderedDict

import numpy as np

from ms_ddpm_tools.verify import core
from ms_ddpm_tools.verify import networks  # noqa: E402  (issue 15: bare Karras networks)
from ms_ddpm_tools.verify import cfg as conditional  # noqa: E402  (issue 14: classifier-free guidance)
from ms_ddpm_tools.verify import samplers  # noqa: E402  (issue 14: --sampler repaint / guided)

# what can be compared; convert --verify skips the loss and the sampling trajectory
PARTS = ('weights', 'layers', 'unet', 'loss', 'noising', 'sample', 'buffers')
CONVERT_PARTS = ('weights', 'layers', 'unet', 'buffers')


VerifyError = core.VerifyError


def _source_line(info):
    return f'{info["format"]} {info["kind"]}' + (f', trainer step {info["trainer_step"]}'
                                                 if info.get('trainer_step') is not None else '')


def verify(checkpoint=None, *, against=None, ema=False, against_ema=None, config=None, image_size=None, seq_length=None,
           sampling_timesteps=None, batch=4, sample_batch=8, seed=0, graph=True, fixture=None,
           recipe='default', threads=1, parts=PARTS, out=None, progress=True, log=print, classes=None, cond_scale=None,
           rescaled_phi=None, sampler='default', resample=None, record=None):
    """Run the comparisons; returns the report dict (written to ``out`` when given:
    verify.json, report.md, samples.png).  Errors in the inputs raise ``VerifyError`` or the
    converter's ``ConvertError`` (missing, corrupt or unsafe files).  ``record``: write the
    PyTorch side of this run (weights, inputs, draws, reference outputs, the run's options and
    parts) as a golden fixture at that path and return the path, MindSpore not run; a fixture
    run (``fixture``) replays it: every kind verify runs (networks, processes, classifier-free
    guidance, ``--sampler repaint|guided``) records the same way."""
    import mindspore as ms
    ms.set_device('CPU')
    from ms_ddpm_tools.verify import report
    from ms_ddpm_tools.verify.default import RECIPES, config_of, ensure_checkpoint
    parts = tuple(p for p in PARTS if p in parts)
    if 'weights' in parts and against is None:
        parts = tuple(p for p in parts if p != 'weights')
    t_start = time.perf_counter()
    t_torch, t_ms = core.Timer(), core.Timer()
    weights_label = None
    sampler_opts = None
    builtin = None
    if fixture and record:
        raise VerifyError('--fixture and --record-fixture: a fixture is recorded from a checkpoint, not from a fixture')
    if fixture:
        from ms_ddpm_tools.verify.fixture_io import load_verify_fixture
        meta, sd, inp, expected = load_verify_fixture(fixture)
        cfg, ts, batch = meta['config'], meta['timesteps'], meta['batch']
        cfg_opts = meta.get('cfg_options')            # issue 14: a conditional run's classes / cond_scale
        if cfg_opts is not None:
            parts = tuple(p for p in parts if p in conditional.PARTS)
        sampler_opts = meta.get('sampler_options')     # --sampler repaint|guided, recorded
        if meta.get('parts') is not None:              # the parts recorded (a lean fixture: no layers)
            parts = tuple(p for p in parts if p in meta['parts'])
        checkpoint, source = meta['checkpoint'], f'golden fixture {fixture}'
        weights_label = meta.get('weights') or core.weights_label(meta.get('source') or {}, False)
        t_torch.times.update(meta.get('torch_timings', {}))
        torch_info = meta['versions']
        log(f'fixture {fixture}: {len(expected)} recorded reference outputs '
            f'(PyTorch {torch_info.get("torch")}, reference {torch_info.get("reference")})')
    else:
        torch_info = None
        if checkpoint is None:
            r = RECIPES[recipe]
            checkpoint, built = ensure_checkpoint(r, log=log)
            builtin = f'built-in "{r["name"]}"'
            config = config or config_of(r)
            source = f'built-in default "{r["name"]}"' + (' (built now)' if built else ' (cached)')
        else:
            source = None
        with t_ms('convert (read + config)'):
            cfg, sd, info = core.load_checkpoint(checkpoint, ema=ema, config=config, image_size=image_size,
                                                 seq_length=seq_length)
        source = source or _source_line(info)
        weights_label = core.weights_label(info, ema)
        cfg_opts = None
        samplers.check(cfg, sampler, checkpoint)
        if not conditional.is_cfg(cfg) and sampler != 'guided' and (
                classes is not None or cond_scale is not None or rescaled_phi is not None):
            raise VerifyError(f'{checkpoint}: --classes / --cond-scale / --rescaled-phi apply to class-conditional '
                              f'(classifier_free_guidance) checkpoints and --sampler guided; this one is a '
                              f'{info["kind"]}')
        if networks.is_network(cfg):         # issue 15: a bare network (its forward only)
            parts = tuple(p for p in parts if p in networks.PARTS)
            inp, ts = networks.make_inputs(cfg, batch=batch, seed=seed)
        elif conditional.is_cfg(cfg):              # issue 14: the conditional path (ms_ddpm_tools.verify.cfg)
            if sampling_timesteps:
                cfg['diffusion']['sampling_timesteps'] = sampling_timesteps
            parts = tuple(p for p in parts if p in conditional.PARTS)
            cfg_opts = conditional.options(cfg, classes, cond_scale, rescaled_phi)
            inp, ts = conditional.make_inputs(cfg, core.alphas_cumprod_of(cfg, sd), cfg_opts, batch=batch,
                                              per_class=max(1, sample_batch // len(cfg_opts['classes'])), seed=seed)
        elif core.processes.is_process(cfg):        # issue 13's processes (ms_ddpm_tools.verify.processes)
            if sampling_timesteps:
                core.processes.set_steps(cfg, sampling_timesteps)
            inp, ts = core.processes.make_inputs(cfg, sd, batch=batch, sample_batch=sample_batch, seed=seed)
        else:
            if sampling_timesteps:
                cfg['diffusion']['sampling_timesteps'] = sampling_timesteps
            inp, ts = core.make_inputs(cfg, core.alphas_cumprod_of(cfg, sd), batch=batch,
                                       sample_batch=sample_batch, seed=seed)
    if sampler != 'default' and not fixture:        # issue 14: RePaint / classifier guidance in place of the sampler
        sampler_opts = samplers.options(cfg, sampler, classes, cond_scale, resample)
        inp.update(samplers.make_inputs(cfg, sampler_opts, sample_batch=sample_batch, seed=seed))
    # --sampler repaint|guided: the sampler in place of the default one; with parts=('sample',) the sampler only
    own_parts = tuple(p for p in parts if p != 'sample') if sampler_opts else parts
    ms_sd, against_info = sd, None
    if against is not None:                 # read (and check) the converted file before any long work
        with t_ms('read --against'):
            _, ms_sd, against_info = core.load_checkpoint(
                against, ema=ema if against_ema is None else against_ema, config=core.public_config(cfg))
        log(f'{against}: {_source_line(against_info)}; the MindSpore side is built from it')
    if not fixture:
        import torch
        torch.set_num_threads(threads)
        log(f'{checkpoint}: {source}; comparing ...')
        if networks.is_network(cfg):
            net_notes = []
            expected = networks.torch_side(cfg, sd, inp, t_torch, net_notes)
            if net_notes:
                expected['notes'] = net_notes
        elif cfg_opts is not None:
            expected = conditional.torch_side(cfg, sd, inp, cfg_opts, t_torch, parts, [])
        else:
            expected = (core.torch_side(cfg, sd, inp, progress=progress, timer=t_torch, parts=own_parts)
                        if own_parts else OrderedDict())
        if sampler_opts and 'sample' in parts:
            sampler_notes = []
            expected['sample/final'] = samplers.torch_sample(cfg, sd, inp, sampler_opts, t_torch, sampler_notes)
            if sampler_notes:
                expected['notes'] = list(expected.get('notes', [])) + sampler_notes
    reference_notes = expected.pop('notes', []) if isinstance(expected, dict) else []
    if fixture:
        reference_notes = list(meta.get('reference_notes', []))
    if record:
        return _record(record, cfg, ts, batch, builtin or os.path.basename(checkpoint), info, weights_label, t_torch,
                       parts, cfg_opts, sampler_opts, reference_notes, sd, inp, expected)
    if networks.is_network(cfg):
        actual = networks.ms_side(cfg, ms_sd, inp, t_ms, graph=graph and 'unet' in parts)
    elif cfg_opts is not None:
        actual = conditional.ms_side(cfg, ms_sd, inp, cfg_opts, t_ms, parts, graph=graph and 'unet' in parts)
    else:
        actual = (core.ms_side(cfg, ms_sd, inp, progress=progress, timer=t_ms, graph=graph and 'unet' in parts,
                               parts=own_parts) if own_parts else OrderedDict())
        if sampler_opts and 'sample' in parts:
            actual['sample/final'] = samplers.ms_sample(cfg, ms_sd, inp, sampler_opts, t_ms, graph=graph)
    expected_s = core.split_unet(expected, ts, batch)
    actual_s = core.split_unet(actual, ts, batch)
    results, only_torch, only_ms = core.compare(expected_s, actual_s, ts)
    weight_results, missing = [], {}
    if 'weights' in parts:
        weight_results, missing = core.compare_weights(sd, ms_sd)
        results = weight_results + results
    first_fail, first_over, first_drift = core.first_divergence(results)
    failed = [r for r in results if not r.ok]
    differing = [r.name[len('weight/'):] for r in weight_results if not r.ok]
    verdict = {'ok': not failed and not missing.get('only_source') and not missing.get('only_against'),
               'compared': len(results), 'failed': len(failed),
               'failed_names': [r.name for r in failed][:50],
               'first_divergent_layer': _where(first_fail),
               'first_beyond_tolerance': _where(first_over),
               'accuracy_gated': [f'{r.name}: {r.gate}' for r in results if r.gate != 'tolerance'],
               'first_drift_layer': _where(first_drift)}
    if against is not None:
        verdict.update(differing_tensors=differing[:50], differing_tensor_count=len(differing),
                       tensors_only_in_source=missing.get('only_source', [])[:50],
                       tensors_only_in_against=missing.get('only_against', [])[:50])
    process = core.processes.is_process(cfg)
    network = networks.is_network(cfg)
    steps = None if network else core.processes.sampling_steps(cfg) if process else core.sampling_steps(cfg)
    sampler = None if network else core.processes.sampler_name(cfg) if process else (
        'DDIM' if steps < cfg['diffusion'].get('timesteps', 1000) else 'DDPM')
    if sampler_opts is not None:
        sampler = samplers.describe(cfg, sampler_opts)
    if cfg_opts is not None:
        sampler += f' at classes {cfg_opts["classes"]}, cond_scale {cfg_opts["cond_scale"]:g}, ' \
                   f'rescaled_phi {cfg_opts["rescaled_phi"]:g}'
    rep = OrderedDict(
        format='ms_ddpm-verify', version=1,
        checkpoint=os.path.abspath(checkpoint) if os.path.exists(checkpoint) else checkpoint,
        source=source, weights=weights_label,
        against=(os.path.abspath(against) if against is not None else None),
        against_source=_source_line(against_info) if against_info else None,
        parts=list(parts), config=cfg, timesteps_compared=ts, batch=batch, seed=seed,
        reference_notes=reference_notes,
        sampling={'steps': steps, 'sampler': sampler,
                  'batch': int(inp['sample_noise'].shape[1])} if 'sample' in parts else None,
        verdict=verdict,
        results=[dict(r.as_dict(), at_t=getattr(r, 'at_t', None), gate=r.gate, float64=getattr(r, 'f64', None))
                 for r in results],
        unmatched={'only_torch': [k[6:] for k in only_torch], 'only_mindspore': only_ms},
        versions=report.versions(torch_info), machine=report.machine(),
        mindspore_kernels=report.kernels(),
        timings={'torch': dict(t_torch.times), 'mindspore': dict(t_ms.times),
                 'total_wall': time.perf_counter() - t_start},
        image=None)
    if cfg_opts is not None:
        rep['conditional'] = dict(cfg_opts)
    if sampler_opts is not None:
        rep['sampler'] = dict(sampler_opts)
    if out:
        os.makedirs(out, exist_ok=True)
        if 'sample' in parts and cfg_opts is not None:        # issue 14: a row per class
            image = os.path.join(out, 'samples.png')
            dmax = conditional.class_grid_png(expected['sample/final'], actual['sample/final'], cfg_opts['classes'], image)
            rep['image'] = image
            rep['image_caption'] = (f'Final samples by class (a row per class: PyTorch | MindSpore | |difference|; '
                                    f'{steps} {sampler} steps, shared noise). Largest |difference| {dmax:.2e} '
                                    f'(pixels in [0, 1]); the difference panels are stretched so that it shows as white.')
        elif 'sample' in parts and sampler_opts is not None and sampler_opts['sampler'] == 'repaint':
            image = os.path.join(out, 'samples.png')
            dmax = samplers.repaint_png(inp, expected['sample/final'], actual['sample/final'], image)
            rep['image'] = image
            rep['image_caption'] = (f'RePaint ({sampler}): masked input (unknown pixels grey) | PyTorch | MindSpore, '
                                    f'a row per sample, every draw shared. Largest |difference| {dmax:.2e} (pixels in [0, 1]).')
        elif 'sample' in parts:
            image = os.path.join(out, 'samples.png')
            picture = report.sequences_png if np.ndim(expected['sample/final']) == 3 else report.side_by_side_png
            dmax = picture(expected['sample/final'], actual['sample/final'], image)
            rep['image'] = image
            rep['image_caption'] = (f'Final samples ({steps} steps, shared noise). Largest |difference| {dmax:.2e} '
                                    f'(pixels in [0, 1]); the right panel is stretched so that it shows as white.')
        if 'noising/all' in expected and 'noising/all' in actual:
            strip = os.path.join(out, 'noising.png')
            e, a = (np.clip((np.asarray(x, np.float64) + 1) / 2, 0, 1) for x in (expected['noising/all'], actual['noising/all']))
            if e.ndim == 3:        # sequences: a row per timestep
                dmax = report.sequences_png(e, a, strip)
            else:
                d = np.abs(e - a)
                dmax = float(d.max())
                report.image_rows_png([e, a, d / dmax if dmax > 0 else d], strip, labels=[f't={t}' for t in ts],
                                      row_labels=['PyTorch', 'MindSpore', '|diff|'])
            rep['noising_image'] = strip
            rep['noising_caption'] = (f'The forward process q_sample(x_0, t, noise) of one image, one noise draw: '
                                      f'largest |difference| {dmax:.2e} (pixels in [0, 1]; the last row is stretched).')
        report.write_report(out, rep)
    return rep


def _record(path, cfg, ts, batch, name, info, weights_label, t_torch, parts, cfg_opts, sampler_opts, notes,
            sd, inp, expected):
    from reference.builders import torch_versions
    from ms_ddpm_tools.verify.fixture_io import FORMAT, save_verify_fixture
    meta = {'format': FORMAT, 'version': 1, 'config': cfg, 'timesteps': ts, 'batch': batch, 'checkpoint': name,
            'source': info, 'weights': weights_label, 'versions': torch_versions(),
            'torch_timings': dict(t_torch.times), 'parts': list(parts), 'reference_notes': list(notes)}
    if cfg_opts is not None:
        meta['cfg_options'] = cfg_opts
    if sampler_opts is not None:
        meta['sampler_options'] = sampler_opts
    save_verify_fixture(path, meta, sd, inp, expected)
    return path


def _where(r):
    if r is None:
        return None
    name = r.name.split('/', 1)[1] if r.name.startswith('layer/') else r.name
    return (f'{name} (t={getattr(r, "at_t", None)}, rel_fro {r.rel_fro:.2e}, max_abs {r.max_abs:.2e}, '
            f'cosine {r.cosine:.9f}{", NaN/Inf" if r.nonfinite else ""})')
