"""``ms-ddpm verify [CHECKPOINT]``: does my MindSpore model agree with PyTorch, and if not,
where does it first go wrong?  ``ms-ddpm diff OLD.json NEW.json``: did a framework upgrade
make anything worse or slower?

verify converts the checkpoint (any file ``ms-ddpm convert`` reads; a reference Trainer
checkpoint by default its online weights, ``--ema`` for the EMA ones), builds the reference
model and the ms_ddpm model from it, and compares every layer's output (name-matched forward
hooks, execution order), the U-Net output at several timesteps, the loss of each objective,
one sampling trajectory with shared noise, and the schedule buffers.  Without CHECKPOINT it
uses a built-in default (a small U-Net trained briefly by the reference's Trainer on
scikit-learn's digits; built once, cached under $MS_DDPM_CACHE or ~/.cache/ms_ddpm).

Writes OUT/verify.json (every figure, versions, machine, timings), OUT/report.md and
OUT/samples.png (PyTorch | MindSpore | |difference|).  Exit status: 0 verdict PASS,
1 FAIL (or a regression against --baseline), 2 usage errors.
"""

import argparse
import json
import os
import sys
import time

TIMING_FACTOR = 1.5


def _parser():
    p = argparse.ArgumentParser(prog='ms-ddpm verify', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('checkpoint', nargs='?', help='PyTorch checkpoint (default: the built-in digits model)')
    p.add_argument('--ema', action='store_true', help="a Trainer checkpoint's EMA weights (default: its online model)")
    p.add_argument('--config', help='architecture as JSON text or file (as for ms-ddpm convert); default: stored or inferred')
    p.add_argument('--image-size', type=int, help='image size (when it cannot be read from the weights)')
    p.add_argument('--sampling-timesteps', type=int,
                   help='sampling steps for the trajectory (DDIM when < timesteps); default: the config\'s')
    p.add_argument('--batch', type=int, default=4, help='images per timestep / loss batch (default 4)')
    p.add_argument('--sample-batch', type=int, default=8, help='images sampled (default 8)')
    p.add_argument('--seed', type=int, default=0, help='seed of every input and shared draw')
    p.add_argument('--out', default='out/verify', help='report folder (default out/verify)')
    p.add_argument('--fixture', help='golden fixture (.npz, recorded by reference/fixtures.py): the PyTorch side is read '
                                     'from it, so PyTorch need not be installed')
    p.add_argument('--baseline', help='an earlier verify.json: fail on any figure worse beyond its tolerance or timing '
                                      f'slower beyond --timing-factor')
    p.add_argument('--timing-factor', type=float, default=TIMING_FACTOR, help=f'default {TIMING_FACTOR}')
    p.add_argument('--no-graph', action='store_true', help='skip the U-Net compiled with ms.jit (GRAPH mode)')
    p.add_argument('--recipe', default='default', choices=('default', 'tiny'), help='built-in default to use')
    p.add_argument('--threads', type=int, default=1, help='PyTorch threads (default 1, like the parity suite)')
    p.add_argument('--quiet', action='store_true', help='no progress bars')
    return p


def run(args, log=print):
    """Everything ``verify`` does; returns the report dict (also written to args.out)."""
    from ms_ddpm_tools.verify import core, report
    from ms_ddpm_tools.verify.default import RECIPES, config_of, ensure_checkpoint
    import mindspore as ms
    ms.set_device('CPU')
    progress = not args.quiet
    t_start = time.perf_counter()
    t_torch, t_ms = core.Timer(), core.Timer()
    if args.fixture:
        meta, sd, inp, expected = core.load_fixture(args.fixture)
        cfg, ts, batch = meta['config'], meta['timesteps'], meta['batch']
        checkpoint, source = meta['checkpoint'], f'golden fixture {args.fixture}'
        t_torch.times.update(meta.get('torch_timings', {}))
        torch_info = meta['versions']
        log(f'fixture {args.fixture}: {len(expected)} recorded reference outputs '
            f'(PyTorch {torch_info.get("torch")}, reference {torch_info.get("reference")})')
    else:
        torch_info = None
        built = False
        config = args.config
        if args.checkpoint is None:
            recipe = RECIPES[args.recipe]
            checkpoint, built = ensure_checkpoint(recipe, log=log)
            config = config or config_of(recipe)
            source = f'built-in default "{recipe["name"]}"' + (' (built now)' if built else ' (cached)')
        else:
            checkpoint, source = args.checkpoint, None
        with t_ms('convert (read + config)'):
            cfg, sd, info = core.load_checkpoint(checkpoint, ema=args.ema, config=config, image_size=args.image_size)
        source = source or f'{info["format"]} {info["kind"]}' + (f', trainer step {info["trainer_step"]}'
                                                                  if info.get('trainer_step') is not None else '')
        if args.sampling_timesteps:
            cfg['diffusion']['sampling_timesteps'] = args.sampling_timesteps
        batch = args.batch
        inp, ts = core.make_inputs(cfg, core.alphas_cumprod_of(cfg, sd), batch=batch,
                                   sample_batch=args.sample_batch, seed=args.seed)
        import torch
        torch.set_num_threads(args.threads)
        log(f'{checkpoint}: {source}; comparing ...')
        expected = core.torch_side(cfg, sd, inp, progress=progress, timer=t_torch)
    actual = core.ms_side(cfg, sd, inp, progress=progress, timer=t_ms, graph=not args.no_graph)
    expected_s = core.split_unet(expected, ts, batch)
    actual_s = core.split_unet(actual, ts, batch)
    results, only_torch, only_ms = core.compare(expected_s, actual_s, ts)
    first_fail, first_over, first_drift = core.first_divergence(results)
    failed = [r for r in results if not r.ok]
    verdict = {'ok': not failed, 'compared': len(results), 'failed': len(failed),
               'failed_names': [r.name for r in failed][:50],
               'first_divergent_layer': _where(first_fail),
               'first_beyond_tolerance': _where(first_over),
               'accuracy_gated': [f'{r.name}: {r.gate}' for r in results if r.gate != 'tolerance'],
               'first_drift_layer': _where(first_drift)}
    os.makedirs(args.out, exist_ok=True)
    image = os.path.join(args.out, 'samples.png')
    dmax = report.side_by_side_png(expected['sample/final'], actual['sample/final'], image)
    steps = cfg['diffusion'].get('sampling_timesteps') or cfg['diffusion'].get('timesteps')
    rep = {
        'format': 'ms_ddpm-verify', 'version': 1,
        'checkpoint': os.path.abspath(checkpoint) if os.path.exists(checkpoint) else checkpoint,
        'source': source, 'config': cfg, 'timesteps_compared': ts, 'batch': batch, 'seed': args.seed,
        'sampling': {'steps': steps, 'sampler': 'DDIM' if steps < cfg['diffusion'].get('timesteps', 1000) else 'DDPM',
                     'batch': int(expected['sample/final'].shape[0])},
        'verdict': verdict,
        'results': [dict(r.as_dict(), metric=r.metric, at_t=getattr(r, 'at_t', None), gate=r.gate,
                         float64=getattr(r, 'f64', None)) for r in results],
        'unmatched': {'only_torch': [k[6:] for k in only_torch], 'only_mindspore': only_ms},
        'versions': report.versions(torch_info), 'machine': report.machine(),
        'timings': {'torch': dict(t_torch.times), 'mindspore': dict(t_ms.times),
                    'total_wall': time.perf_counter() - t_start},
        'image': image,
        'image_caption': f'Final samples ({steps} steps, shared noise). Largest |difference| {dmax:.2e} '
                         f'(pixels in [0, 1]); the right panel is stretched so that it shows as white.',
    }
    report.dump_json(os.path.join(args.out, 'verify.json'), rep)
    report._atomic_write(os.path.join(args.out, 'report.md'), report.markdown(rep))
    return rep


def _where(r):
    if r is None:
        return None
    return (f'{r.name[6:]} (t={getattr(r, "at_t", None)}, rel_fro {r.rel_fro:.2e}, max_abs {r.max_abs:.2e}, '
            f'cosine {r.cosine:.9f}{", NaN/Inf" if r.nonfinite else ""})')


def main(argv=None):
    args = _parser().parse_args(argv)
    from ms_ddpm_tools.verify import report
    baseline = None
    if args.baseline:
        with open(args.baseline) as f:
            baseline = json.load(f)
    rep = run(args)
    rows = report.summary_rows_from_json(rep)
    print()
    print(report.terminal_table(rows))
    v = rep['verdict']
    print(f'\nfirst layer that diverges (execution order): {v["first_divergent_layer"] or "none"}')
    print(f'first layer beyond its tolerance: {v["first_beyond_tolerance"] or "none"}')
    print(f'first layer beyond the single-block tolerance (where drift starts): {v["first_drift_layer"] or "none"}')
    for line in v['accuracy_gated']:
        print(f'  passed on accuracy vs float64: {line}')
    t = rep['timings']
    print('timings (s): ' + ', '.join(f'{k}: torch {t["torch"].get(k, float("nan")):.3f} / ms {x:.3f}'
                                      for k, x in t['mindspore'].items() if k in t['torch']))
    print(f'reports: {args.out}/report.md, {args.out}/verify.json, {args.out}/samples.png')
    print(f'verdict: {"PASS" if v["ok"] else "FAIL"} ({v["compared"]} tensors compared, {v["failed"]} failed)')
    code = 0 if v['ok'] else 1
    if baseline is not None:
        code = max(code, _diff(baseline, rep, args.baseline, os.path.join(args.out, 'verify.json'),
                               args.timing_factor, os.path.join(args.out, 'diff.md')))
    return code


def _diff(old, new, old_path, new_path, factor, md_path=None):
    from ms_ddpm_tools.verify import report
    rows, bad = report.regress(old, new, factor=factor)
    text = report.regress_markdown(old, new, rows, bad, factor, old_path, new_path)
    if md_path:
        report._atomic_write(md_path, text)
    print()
    for r in bad:
        print(f'REGRESSION {r["name"]}: {r["note"]}')
    timings = [r for r in rows if r['kind'] == 'timing']
    for r in timings:
        print(f'  timing {r["name"]:55s} {r["old"]:9.3f} -> {r["new"]:9.3f} s  {r["note"]}')
    print(f'diff: {"REGRESSION (" + str(len(bad)) + ")" if bad else "no regression"}'
          + (f'; report {md_path}' if md_path else ''))
    return 1 if bad else 0


def main_diff(argv=None):
    p = argparse.ArgumentParser(prog='ms-ddpm diff', description='Compare two verify.json runs: flag any figure that '
                                'got worse beyond its tolerance and any timing slower beyond --timing-factor. '
                                'Exit 1 on regression.')
    p.add_argument('old')
    p.add_argument('new')
    p.add_argument('--timing-factor', type=float, default=TIMING_FACTOR, help=f'default {TIMING_FACTOR}')
    p.add_argument('--out', help='write the Markdown report here')
    args = p.parse_args(argv)
    with open(args.old) as f:
        old = json.load(f)
    with open(args.new) as f:
        new = json.load(f)
    return _diff(old, new, args.old, args.new, args.timing_factor, args.out)


if __name__ == '__main__':
    sys.exit(main())
