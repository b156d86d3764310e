"""``ms-ddpm convert SRC DST``: convert denoising-diffusion-pytorch checkpoints to MindSpore and back.

Formats come from the extensions: .pt/.pth/.bin (PyTorch), .safetensors, .ckpt (MindSpore).
SRC may be a plain Unet or GaussianDiffusion state dict, or a reference Trainer checkpoint
(results/model-N.pt; --ema picks the EMA weights).  The architecture is inferred from the
weights where it can be (and reported); give the rest with --config / --image-size.  The
config is stored inside DST (.ckpt, .safetensors) and beside it as DST.config.json (recording
which file it describes); weight_convert.load_model(DST) builds the model.  An existing DST is
refused unless --force.  SIGINT and SIGTERM stop the conversion and leave nothing behind.

exit status: 0 converted (and verified, with --verify); 1 the conversion failed (message on
stderr, nothing written); 2 bad command line; 3 --verify found outputs that differ.
"""

import argparse
import json
import signal
import sys
import threading

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_VERIFY = 0, 1, 2, 3
PROGRESS_MIN_BYTES = 32 << 20


class Progress:
    """tqdm bar over the bytes written, shown for outputs of PROGRESS_MIN_BYTES and more."""

    def __init__(self, enabled=True):
        self.enabled, self.bar = enabled, None

    def start(self, total):
        if self.enabled and total >= PROGRESS_MIN_BYTES:
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit='B', unit_scale=True, unit_divisor=1024, desc='writing',
                            file=sys.stderr, leave=False)

    def __call__(self, n):
        if self.bar is not None:
            self.bar.update(n)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _parser():
    p = argparse.ArgumentParser(
        prog='ms-ddpm convert', description=__doc__.replace('``', ''), formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='examples:\n'
               '  ms-ddpm convert results/model-10.pt unet.ckpt --ema --image-size 32 --verify\n'
               '  ms-ddpm convert unet.ckpt unet.safetensors\n'
               '  ms-ddpm convert unet.ckpt model-11.pt --trainer        (for the reference Trainer.load(11))\n'
               '  ms-ddpm convert model.pt model.ckpt --config \'{"dim": 64, "flash_attn": true}\'')
    p.add_argument('src', help='source weights (.pt/.pth/.bin/.safetensors/.ckpt)')
    p.add_argument('dst', help='destination (.ckpt/.safetensors for MindSpore, .pt/.pth/.bin for PyTorch)')
    p.add_argument('--ema', action='store_true', help='from a Trainer checkpoint, take the EMA weights (ema.ema_model.*)')
    p.add_argument('--config', metavar='JSON|FILE',
                   help='architecture arguments: inline JSON or a JSON file; Unet and GaussianDiffusion keyword '
                        'arguments, flat or under "unet"/"diffusion"; they override inferred values')
    p.add_argument('--image-size', type=int, metavar='N', help='GaussianDiffusion image_size (cannot be inferred)')
    p.add_argument('--model', metavar='CLASS',
                   help='the process the weights are of, where the keys cannot tell (e.g. '
                        'VParamContinuousTimeGaussianDiffusion vs ContinuousTimeGaussianDiffusion); default: '
                        'the config stored with the file, else inferred (weight_convert.families)')
    p.add_argument('--trainer', action='store_true',
                   help='write a reference Trainer-style checkpoint (step, model, opt, ema, scaler, version) '
                        'that Trainer.load accepts (DST must be .pt)')
    p.add_argument('--step', type=int, help='step to record in a --trainer checkpoint (default: the source\'s, else 0)')
    p.add_argument('--verify', action='store_true',
                   help='build the reference and the MindSpore model from SRC and DST, run both on a probe input '
                        'and print the difference (needs PyTorch)')
    p.add_argument('--force', action='store_true', help='overwrite DST (and its config file) if it exists')
    p.add_argument('--print-config', action='store_true', help='print the resolved config JSON')
    p.add_argument('-q', '--quiet', action='store_true', help='no progress bar, only errors')
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM (what ``timeout`` and container stops send): unwinds like Ctrl-C, so the
    atomic writers delete their temporaries."""


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv=None):
    """The command; SIGTERM is handled like SIGINT while it runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return _main(argv)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv=None):
    args = _parser().parse_args(argv)
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))

    from weight_convert.formats import ConvertError
    from weight_convert.converter import convert, parse_explicit_config

    try:
        explicit = parse_explicit_config(args.config)
        if args.image_size is not None:
            explicit['diffusion']['image_size'] = args.image_size
        if args.model is not None:
            explicit['model'] = args.model
        progress = Progress(enabled=not args.quiet)
        try:
            summary = convert(args.src, args.dst, ema=args.ema, config=explicit, trainer=args.trainer,
                              step=args.step, progress=progress, log=log, force=args.force)
        finally:
            progress.close()
    except ConvertError as e:
        print(f'ms-ddpm convert: error: {e}', file=sys.stderr)
        return EXIT_FAILED
    except OSError as e:          # e.g. the source cannot be read (a destination's is a ConvertError)
        where = e.filename if e.filename is not None else args.src
        print(f'ms-ddpm convert: error: {where}: {e.strerror or e}', file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt as e:
        why = 'terminated (SIGTERM)' if isinstance(e, Terminated) else 'interrupted'
        print(f'ms-ddpm convert: {why}; nothing was written', file=sys.stderr)
        return EXIT_FAILED

    cfg = summary['config']
    notes = cfg.get('notes', {})
    log(f'wrote {summary["dst"]} ({summary["tensors"]} tensors, {summary["bytes"] / 2**20:.1f} MiB) '
        f'and {summary["config_file"]} in {summary["seconds"]:.2f} s')
    if notes.get('from_file'):
        log(f'config: {notes["from_file"]}')
    if notes.get('inferred'):
        log('config: inferred from the weights: ' + ', '.join(notes['inferred']))
    if notes.get('given'):
        log('config: given: ' + ', '.join(notes['given']))
    if notes.get('not_inferred'):
        log('config: not inferable, defaults used (see the config file): ' + ', '.join(notes['not_inferred']))
    for k, why in notes.get('ambiguous', {}).items():
        log(f'config: ambiguous: {k}: {why}')
    if args.print_config:
        print(json.dumps(cfg, indent=2))
    if args.verify:
        code = _verify(args, cfg)
        if code:
            return code
    return EXIT_OK


def _sized_by_verify(cfg):
    """A bare network without an image_size argument (issue 15: UViT): its compared images' side is verify's."""
    from weight_convert.families import KIND_FAMILY, NETWORK_KINDS
    model = cfg.get('model')
    return model in NETWORK_KINDS and 'image_size' not in KIND_FAMILY[model].network_defaults


def _verify(args, cfg):
    """``--verify``: the one verify engine on SRC and DST (the reference built from the PyTorch
    file, ms_ddpm from the MindSpore one): every tensor, every layer, the U-Net output and the
    schedule buffers (not the loss and the sampling trajectory: ``ms-ddpm verify SRC --against DST``
    runs those too)."""
    from weight_convert.formats import format_of
    from ms_ddpm_tools.exits import input_errors
    from ms_ddpm_tools.verify import report
    from ms_ddpm_tools.verify.engine import CONVERT_PARTS, verify
    if format_of(args.dst, role='destination') == 'torch':     # MindSpore -> PyTorch
        torch_path, ms_path, ema, against_ema = args.dst, args.src, False, args.ema
    else:
        torch_path, ms_path, ema, against_ema = args.src, args.dst, args.ema, False
    image_size = seq_length = None
    factor = 2 ** (len(cfg['unet'].get('dim_mults') or (1, 2, 4, 8)) - 1)
    probe = factor * max(1, 16 // factor)                         # a probe size where the weights do not tell
    if str(cfg.get('model', '')).endswith('1D'):
        if cfg.get('model') == 'Unet1D' or not (cfg.get('diffusion') or {}).get('seq_length'):
            seq_length = 2 * probe
    elif _sized_by_verify(cfg):
        pass                        # a bare UViT: verify takes the smallest side it fits (verify.networks.input_side)
    elif cfg.get('model') == 'Unet' or not (cfg.get('diffusion') or {}).get('image_size'):
        image_size = probe
    try:
        rep = verify(torch_path, against=ms_path, ema=ema, against_ema=against_ema, config=cfg,
                     image_size=image_size, seq_length=seq_length, batch=2, graph=False, parts=CONVERT_PARTS, progress=False,
                     log=lambda s: None)
    except input_errors() as e:
        print(f'ms-ddpm convert: verify error: {e}', file=sys.stderr)
        return EXIT_FAILED
    for row in report.summary_rows_from_json(rep):
        print(f'{row["name"]}: rel_fro={row["rel_fro"]:.3e} max_abs={row["max_abs"]:.3e} cosine={row["cosine"]:.9f} '
              f'gate {row["metric"]}<={row["tol"]:.1e} {"ok" if row["ok"] else "FAIL"}', flush=True)
    v = rep['verdict']
    if v['first_divergent_layer']:
        print(f'first layer that diverges: {v["first_divergent_layer"]}')
    if v.get('differing_tensors'):
        print(f'tensors that differ from the source: {", ".join(v["differing_tensors"][:20])}')
    print('verify: ' + ('PASS' if v['ok'] else 'FAIL') + f' ({v["compared"]} tensors compared, {v["failed"]} failed; '
          f'reference built from {torch_path}, ms_ddpm from {ms_path}; tolerances: parity/tolerances.py)', flush=True)
    return 0 if v['ok'] else EXIT_VERIFY


if __name__ == '__main__':
    sys.exit(main())
