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
OUT/samples.png (PyTorch | MindSpore | |difference|).

``--against FILE`` verifies a migration: the reference is built from CHECKPOINT and ms_ddpm
from FILE (the .ckpt/.safetensors a user converted), every tensor of FILE is compared with
its source, every layer's output too; the report names the tensors and the first layer that
differ.
"""

import argparse
import json
import os
import sys

TIMING_FACTOR = 1.5


def _parser():
    from ms_ddpm_tools.exits import EPILOG
    p = argparse.ArgumentParser(prog='ms-ddpm verify', description=__doc__.replace('``', ''), epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('checkpoint', nargs='?', help='PyTorch checkpoint (default: the built-in digits model)')
    p.add_argument('--against', metavar='FILE',
                   help='build the MindSpore side from FILE (a converted .ckpt/.safetensors/.pt) instead of from '
                        'CHECKPOINT: verifies that FILE is a faithful conversion of CHECKPOINT')
    p.add_argument('--ema', action='store_true', help="a Trainer checkpoint's EMA weights (default: its online model)")
    p.add_argument('--config', help='architecture as JSON text or file (as for ms-ddpm convert); default: stored or inferred')
    p.add_argument('--image-size', type=int, help='image size (when it cannot be read from the weights)')
    p.add_argument('--model', metavar='CLASS',
                   help='the process the weights are of, where the keys cannot tell (e.g. '
                        'VParamContinuousTimeGaussianDiffusion vs ContinuousTimeGaussianDiffusion); default: '
                        'the config stored with the file, else inferred')
    p.add_argument('--seq-length', type=int, help='sequence length of a 1D model (GaussianDiffusion1D(seq_length); '
                                                  'it cannot be read from the weights)')
    p.add_argument('--sampling-timesteps', type=int,
                   help='sampling steps for the trajectory (DDIM when < timesteps); default: the config\'s')
    p.add_argument('--classes', metavar='0,1,..',
                   help='class labels to verify a class-conditional (classifier_free_guidance) checkpoint at: the '
                        'network, forward_with_cond_scale, the loss and the sampler (default: the first 4 classes)')
    p.add_argument('--cond-scale', type=float,
                   help='classifier-free guidance scale of forward_with_cond_scale and the sampler (default 6, the '
                        "reference's)")
    p.add_argument('--rescaled-phi', type=float,
                   help="forward_with_cond_scale's rescaled_phi (default 0.7, the reference's sampling default)")
    p.add_argument('--sampler', choices=('default', 'repaint', 'guided'), default='default',
                   help='the sampler compared for a GaussianDiffusion checkpoint: its own (default), RePaint on a '
                        'made-up masked image (repaint.GaussianDiffusion), or classifier guidance with the '
                        "reference's example classifier (guided_diffusion; --classes: its labels y, --cond-scale: "
                        'its classifier_scale, default 1)')
    p.add_argument('--resample-iter', type=int, help='--sampler repaint: resample_iter (default 10)')
    p.add_argument('--resample-jump', type=int, help='--sampler repaint: resample_jump (default 10)')
    p.add_argument('--resample-every', type=int, help='--sampler repaint: resample_every (default 50)')
    p.add_argument('--batch', type=int, default=4, help='images per timestep / loss batch (default 4)')
    p.add_argument('--sample-batch', type=int, default=8, help='images sampled (default 8)')
    p.add_argument('--seed', type=int, default=0, help='seed of every input and shared draw (default 0)')
    p.add_argument('--out', default='out/verify', help='report folder (default out/verify)')
    p.add_argument('--fixture', help='golden fixture (.npz, recorded by --record-fixture): the PyTorch side is read '
                                     'from it, so PyTorch need not be installed')
    p.add_argument('--record-fixture', metavar='FILE',
                   help='record the PyTorch side of this run (weights, inputs, draws, outputs) as a golden fixture '
                        'FILE and exit (needs PyTorch)')
    p.add_argument('--baseline', help='an earlier verify.json: fail on any figure worse beyond its tolerance or timing '
                                      f'slower beyond --timing-factor')
    p.add_argument('--timing-factor', type=float, default=TIMING_FACTOR, help=f'default {TIMING_FACTOR}')
    p.add_argument('--no-graph', action='store_true', help='skip the U-Net compiled with ms.jit (GRAPH mode)')
    p.add_argument('--recipe', default='default', choices=('default', 'tiny'), help='built-in default to use (default: default)')
    p.add_argument('--threads', type=int, default=1, help='PyTorch threads (default 1, like the parity suite)')
    p.add_argument('--quiet', action='store_true', help='no progress bars')
    return p


def run(args, log=print):
    """Everything ``verify`` does; returns the report dict (also written to args.out)."""
    from ms_ddpm_tools.verify.engine import verify
    config = args.config
    if getattr(args, 'model', None):
        from weight_convert.config import parse_explicit_config
        config = dict(parse_explicit_config(config), model=args.model)
    return verify(args.checkpoint, against=args.against, ema=args.ema, config=config,
                  image_size=args.image_size, seq_length=args.seq_length, sampling_timesteps=args.sampling_timesteps, batch=args.batch,
                  sample_batch=args.sample_batch, seed=args.seed, graph=not args.no_graph, fixture=args.fixture,
                  recipe=args.recipe, threads=args.threads, out=args.out, progress=not args.quiet, log=log,
                  classes=args.classes, cond_scale=args.cond_scale, rescaled_phi=args.rescaled_phi,
                  sampler=args.sampler, resample=_resample(args))


def _resample(args):
    return dict(resample_iter=args.resample_iter, resample_jump=args.resample_jump, resample_every=args.resample_every)


def _where(r):
    if r is None:
        return None
    return (f'{r.name[6:]} (t={getattr(r, "at_t", None)}, rel_fro {r.rel_fro:.2e}, max_abs {r.max_abs:.2e}, '
            f'cosine {r.cosine:.9f}{", NaN/Inf" if r.nonfinite else ""})')


def main(argv=None):
    args = _parser().parse_args(argv)
    from ms_ddpm_tools.exits import EXIT_FAILED, EXIT_OK, error, input_errors
    saved = os.environ.get('TQDM_DISABLE')
    if args.quiet:
        os.environ['TQDM_DISABLE'] = '1'         # the reference's own sampling bars too
    try:
        return _main(args)
    finally:
        if saved is None:
            os.environ.pop('TQDM_DISABLE', None)
        else:
            os.environ['TQDM_DISABLE'] = saved


def _main(args):
    from ms_ddpm_tools.exits import EXIT_FAILED, EXIT_OK, error, input_errors
    from ms_ddpm_tools.verify import report
    try:
        if args.record_fixture:
            from ms_ddpm_tools.verify.fixtures import record_verify
            path = record_verify(args.record_fixture, args.checkpoint, args.recipe, args.ema, args.image_size,
                                 args.config, args.batch, args.sample_batch, args.seed, args.sampling_timesteps,
                                 classes=args.classes, cond_scale=args.cond_scale, rescaled_phi=args.rescaled_phi,
                                 sampler=args.sampler, resample=_resample(args))
            print(f'{path}: {os.path.getsize(path) / 1e6:.2f} MB')
            return EXIT_OK
        baseline = _read_report(args.baseline) if args.baseline else None
        rep = run(args)
    except input_errors() as e:
        return error('ms-ddpm verify', _one_line(e))
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
    if rep.get('against'):
        print(f'--against {rep["against"]}: {v["differing_tensor_count"]} tensors differ from the source'
              + (': ' + ', '.join(v['differing_tensors'][:20]) if v['differing_tensors'] else '')
              + (f'; only in the source: {", ".join(v["tensors_only_in_source"][:20])}' if v['tensors_only_in_source'] else '')
              + (f'; only in {os.path.basename(rep["against"])}: {", ".join(v["tensors_only_in_against"][:20])}'
                 if v['tensors_only_in_against'] else ''))
    print(f'weights compared: {rep.get("weights")}')
    print(f'verdict: {"PASS" if v["ok"] else "FAIL"} ({v["compared"]} tensors compared, {v["failed"]} failed)')
    code = EXIT_OK if v['ok'] else EXIT_FAILED
    if baseline is not None:
        code = max(code, _diff(baseline, rep, args.baseline, os.path.join(args.out, 'verify.json'),
                               args.timing_factor, os.path.join(args.out, 'diff.md')))
    return code


def _diff(old, new, old_path, new_path, factor, md_path=None):
    from ms_ddpm_tools.verify import report
    rows, bad = report.regress(old, new, factor=factor)
    text = report.regress_markdown(old, new, rows, bad, factor, old_path, new_path)
    if md_path:
        from ms_ddpm.io import atomic_write
        atomic_write(md_path, text)
    print()
    for line in report.different_models(old, new):
        print(f'WARNING: {line}')
    for r in bad:
        print(f'REGRESSION {r["name"]}: {r["note"]}')
    timings = [r for r in rows if r['kind'] == 'timing']
    for r in timings:
        print(f'  timing {r["name"]:55s} {r["old"]:9.3f} -> {r["new"]:9.3f} s  {r["note"]}')
    print(f'diff: {"REGRESSION (" + str(len(bad)) + ")" if bad else "no regression"}'
          + (f'; report {md_path}' if md_path else ''))
    from ms_ddpm_tools.exits import EXIT_FAILED, EXIT_OK
    return EXIT_FAILED if bad else EXIT_OK


def _one_line(e):
    text = str(e).strip() or type(e).__name__
    if isinstance(e, OSError) and getattr(e, 'filename', None):
        text = f'{e.filename}: {e.strerror or text}'
    return text.splitlines()[0] if len(text.splitlines()) == 1 else ' '.join(x.strip() for x in text.splitlines())


def _read_report(path):
    from ms_ddpm_tools.verify.core import VerifyError
    try:
        with open(path) as f:
            rep = json.load(f)
    except json.JSONDecodeError as e:
        raise VerifyError(f'{path}: not a verify.json report (invalid JSON: {e})') from None
    if not isinstance(rep, dict) or not isinstance(rep.get('results'), list) or 'verdict' not in rep:
        raise VerifyError(f'{path}: not a verify.json report (written by ms-ddpm verify)')
    return rep


def _diff_parser():
    from ms_ddpm_tools.exits import EPILOG
    p = argparse.ArgumentParser(prog='ms-ddpm diff', epilog=EPILOG,
                                description='Compare two verify.json runs (ms-ddpm verify --out DIR writes DIR/verify.json): '
                                'flag any figure that got worse beyond its tolerance and any timing slower beyond '
                                '--timing-factor; warn when the two runs verified different models or weights.')
    p.add_argument('old', help='the earlier run\'s verify.json (e.g. on the old MindSpore version)')
    p.add_argument('new', help='the later run\'s verify.json')
    p.add_argument('--timing-factor', type=float, default=TIMING_FACTOR,
                   help=f'a timing regresses when new/old exceeds this (default {TIMING_FACTOR})')
    p.add_argument('--out', help='write the Markdown report here')
    return p


def main_diff(argv=None):
    from ms_ddpm_tools.exits import error, input_errors
    args = _diff_parser().parse_args(argv)
    try:
        old, new = _read_report(args.old), _read_report(args.new)
        return _diff(old, new, args.old, args.new, args.timing_factor, args.out)
    except input_errors() as e:
        return error('ms-ddpm diff', _one_line(e))


if __name__ == '__main__':
    sys.exit(main())
