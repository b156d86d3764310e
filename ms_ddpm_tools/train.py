"""``ms-ddpm train`` and ``ms-ddpm sample``.

    ms-ddpm train FOLDER --image-size 32 [--dim 64 --dim-mults 1,2,4,8 ...] [--steps N] [--resume M]
    ms-ddpm sample CHECKPOINT --out grid.png [--ddim-steps N] [--ema/--online] [--seed S] [--gif traj.gif]

``train`` builds ``Unet`` + ``GaussianDiffusion`` from the options (or starts from converted
weights with ``--init``, e.g. a reference checkpoint: fine-tuning), and runs ``ms_ddpm.Trainer``
(progress bar with the loss; checkpoints ``model-M.ckpt`` and sample grids ``sample-M.png`` in
``--results`` every ``--save-every`` steps).  ``sample`` reads an ms_ddpm Trainer checkpoint
(the architecture is stored in it), or any weights file ``weight_convert.load_model`` reads
(a reference Trainer ``.pt``, a converted ``.ckpt``/``.safetensors`` with its config, a bare
``Unet``'s weights with ``--image-size``).
"""

import argparse
import math
import os
import sys


def _ints(text):
    return tuple(int(v) for v in str(text).split(',') if v.strip())


def _train_parser():
    from ms_ddpm_tools.exits import EPILOG
    p = argparse.ArgumentParser(prog='ms-ddpm train', epilog=EPILOG,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                description='Train a Unet + GaussianDiffusion on an image folder in MindSpore, with the '
                                            'reference Trainer\'s options and rules (at least 100 images; an effective '
                                            'batch, --batch-size x --grad-accum, of at least 16). Checkpoints '
                                            'model-M.ckpt and sample grids sample-M.png go to --results every '
                                            '--save-every steps, and the last state at the end of the run.')
    p.add_argument('folder', help='folder of images (jpg/jpeg/png/tiff, searched recursively; at least 100), or a '
                                  '.npy/.npz of sequences (N, channels, length) in [0, 1] (Unet1D + GaussianDiffusion1D '
                                  'with Trainer1D), or "sines": the built-in example sequences (noisy sines of random '
                                  'phase and frequency); 1D runs also write samples-vs-data.png')
    m = p.add_argument_group('model (ignored with --init or --resume of an existing run)')
    m.add_argument('--image-size', type=int, default=32, help='image size the model is trained at')
    m.add_argument('--channels', type=int, default=3, help='1 (L), 3 (RGB) or 4 (RGBA)')
    m.add_argument('--dim', type=int, default=64, help='Unet(dim): channels of the first stage')
    m.add_argument('--dim-mults', type=_ints, default=(1, 2, 4, 8), help='Unet(dim_mults), e.g. 1,2,4,8')
    m.add_argument('--attn-heads', type=int, default=4, help='Unet(attn_heads)')
    m.add_argument('--attn-dim-head', type=int, default=32, help='Unet(attn_dim_head)')
    m.add_argument('--flash-attn', action='store_true', help='Unet(flash_attn=True)')
    m.add_argument('--timesteps', type=int, default=1000, help='GaussianDiffusion(timesteps)')
    m.add_argument('--sampling-timesteps', type=int, default=None,
                   help='DDIM steps for the milestone samples (default: DDPM over all timesteps)')
    m.add_argument('--objective', default=None, choices=['pred_noise', 'pred_x0', 'pred_v'],
                   help='GaussianDiffusion(objective) (default: the reference\'s, pred_v; pred_noise for sequences)')
    m.add_argument('--beta-schedule', default=None, choices=['linear', 'cosine', 'sigmoid'],
                   help='GaussianDiffusion(beta_schedule) (default: the reference\'s, sigmoid; cosine for sequences, '
                        'which take linear or cosine)')
    m.add_argument('--class-cond', action='store_true',
                   help='class-conditional (classifier-free guidance: ms_ddpm.classifier_free_guidance Unet(num_classes) + '
                        'GaussianDiffusion): FOLDER holds one subfolder per class (the ImageFolder layout; classes = the '
                        'sorted subfolder names, stored with the run). The reference has no CFG Trainer: its 100-image '
                        'and batch-16 rules do not apply; objective default pred_noise, beta schedule cosine')
    m.add_argument('--cond-drop-prob', type=float, default=0.5, help='with --class-cond: Unet(cond_drop_prob)')
    m.add_argument('--init', default=None, help='start from these weights (any format ms-ddpm convert reads)')
    m.add_argument('--init-ema', action='store_true', help='with --init of a Trainer checkpoint: its EMA weights')
    t = p.add_argument_group('training (the reference Trainer\'s options)')
    t.add_argument('--batch-size', type=int, default=16, help='train_batch_size')
    t.add_argument('--grad-accum', type=int, default=1, help='gradient_accumulate_every')
    t.add_argument('--lr', type=float, default=1e-4, help='train_lr (Adam, betas 0.9/0.99)')
    t.add_argument('--steps', type=int, default=100000, help='train_num_steps')
    t.add_argument('--save-every', type=int, default=1000, help='save_and_sample_every')
    t.add_argument('--num-samples', type=int, default=25, help='num_samples in each milestone grid (a square)')
    t.add_argument('--results', default='./results', help='results_folder')
    t.add_argument('--ema-decay', type=float, default=0.995, help='ema_decay')
    t.add_argument('--ema-update-every', type=int, default=10, help='ema_update_every')
    t.add_argument('--max-grad-norm', type=float, default=1., help='max_grad_norm (gradient clipping)')
    t.add_argument('--no-flip', action='store_true', help='no random horizontal flips (augment_horizontal_flip=False)')
    t.add_argument('--amp', action='store_true', help='mixed precision + DynamicLossScaler')
    t.add_argument('--mixed-precision-type', default='fp16', choices=['fp16', 'bf16'], help='with --amp')
    t.add_argument('--convert-image-to', default=None, choices=['L', 'RGB', 'RGBA'],
                   help='convert_image_to (default: from --channels)')
    t.add_argument('--fid', dest='fid', action='store_true', default=False, help='compute FID at each milestone')
    t.add_argument('--fid-weights', default=None, help='local FID InceptionV3 weights, .ckpt/.safetensors (ms-ddpm convert pt_inception-2015-12-05-6726825d.pth inception.ckpt; never downloaded)')
    t.add_argument('--num-fid-samples', type=int, default=50000, help='num_fid_samples')
    t.add_argument('--save-best-and-latest-only', action='store_true', help='save_best_and_latest_only (needs --fid)')
    t.add_argument('--seed', type=int, default=0,
                   help='seed of the initial weights, the data order, flips and every training draw: '
                        'the same seed gives the same run')
    t.add_argument('--no-jit', action='store_true', help='PyNative train step (debugging)')
    t.add_argument('--resume', default=None, help='milestone (model-M.ckpt in --results) or a checkpoint path')
    t.add_argument('--log', default=None, help='append "step loss" lines to this file')
    t.add_argument('--no-progress', action='store_true', help='no progress bar (also TQDM_DISABLE=1)')
    return p


def model_config(args):
    from weight_convert.converter import CONFIG_FORMAT, CONFIG_VERSION
    unet = dict(dim=args.dim, dim_mults=list(args.dim_mults), channels=args.channels, attn_heads=args.attn_heads,
                attn_dim_head=args.attn_dim_head, flash_attn=args.flash_attn)
    diffusion = dict(image_size=args.image_size, timesteps=args.timesteps, sampling_timesteps=args.sampling_timesteps,
                     objective=args.objective or 'pred_v', beta_schedule=args.beta_schedule or 'sigmoid')
    return {'format': CONFIG_FORMAT, 'version': CONFIG_VERSION, 'model': 'GaussianDiffusion',
            'unet': unet, 'diffusion': diffusion}


def build_model(cfg):
    """The diffusion model of a config (GaussianDiffusion or GaussianDiffusion1D), freshly
    initialised, carrying its config (stored in its Trainer checkpoints)."""
    from weight_convert.converter import build_ms_model
    md = build_ms_model(dict(cfg, model=cfg.get('model') or 'GaussianDiffusion'), init=True)
    md.ms_ddpm_config = {k: v for k, v in cfg.items() if not k.startswith('_')}
    return md


CFG_KIND = 'classifier_free_guidance.GaussianDiffusion'     # weight_convert's kind name (rules.CFG_DIFFUSION_KIND)


def class_cond_config(args, class_names):
    """The class-conditional model of ``--class-cond``: the CFG twin's Unet(num_classes,
    cond_drop_prob) + GaussianDiffusion; ``class_names`` stored with it."""
    from weight_convert.converter import CONFIG_FORMAT, CONFIG_VERSION
    from ms_ddpm_tools.exits import InputError
    if (args.beta_schedule or 'cosine') not in ('linear', 'cosine'):
        raise InputError(f'--beta-schedule {args.beta_schedule}: the class-conditional GaussianDiffusion takes linear or cosine')
    if not 0. <= args.cond_drop_prob < 1.:
        raise InputError(f'--cond-drop-prob {args.cond_drop_prob}: must be in [0, 1)')
    unet = dict(dim=args.dim, num_classes=len(class_names), cond_drop_prob=args.cond_drop_prob, dim_mults=list(args.dim_mults),
                channels=args.channels, attn_heads=args.attn_heads, attn_dim_head=args.attn_dim_head)
    diffusion = dict(image_size=args.image_size, timesteps=args.timesteps, sampling_timesteps=args.sampling_timesteps,
                     objective=args.objective or 'pred_noise', beta_schedule=args.beta_schedule or 'cosine')
    return {'format': CONFIG_FORMAT, 'version': CONFIG_VERSION, 'model': CFG_KIND, 'unet': unet, 'diffusion': diffusion,
            'class_names': list(class_names)}


def _resumes_class_cond(args):
    """``--resume`` of a class-conditional run (its stored config says so): --class-cond implied."""
    from ms_ddpm.training import read_trainer_checkpoint
    try:
        path = _resume_path(args)
        return bool(path) and (read_trainer_checkpoint(path)[1].get('config') or {}).get('model') == CFG_KIND
    except Exception:           # a missing or unreadable checkpoint is reported where it is read
        return False


def check_class_folders(args):
    """``--class-cond``: FOLDER's class subfolders (sorted names), each holding images; each
    problem one line.  Returns the class names."""
    from ms_ddpm.classifier_free_guidance import image_folder_classes
    from ms_ddpm_tools.exits import InputError
    if not os.path.isdir(args.folder):
        raise InputError(f'{args.folder}: no such folder')
    classes, items = image_folder_classes(args.folder, EXTS)
    if not classes:
        raise InputError(f'{args.folder}: no class subfolders (--class-cond needs one subfolder of images per class)')
    counts = [sum(1 for _, label in items if label == i) for i in range(len(classes))]
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if empty:
        raise InputError(f'{args.folder}: class folder {", ".join(empty)} holds no images ({", ".join(EXTS)}, searched recursively)')
    if args.save_every < 1 or args.steps < 1:
        raise InputError('--steps and --save-every must be at least 1')
    r = math.isqrt(args.num_samples)
    if args.num_samples < 1 or r * r != args.num_samples:
        raise InputError(f'--num-samples {args.num_samples}: must be a square')
    from PIL import Image
    for p, _ in items:
        try:
            with Image.open(p) as im:
                im.verify()
        except Exception as e:
            raise InputError(f'{p}: not a readable image ({type(e).__name__}: {e})') from None
    print(f'ms-ddpm train: {len(classes)} classes found: {", ".join(classes)} '
          f'({", ".join(f"{c} {n}" for c, n in zip(classes, counts))} images)', file=sys.stderr)
    return classes


def sequence_config(args, data):
    """The 1D model (Unet1D + GaussianDiffusion1D) for sequences ``data`` (N, C, L)."""
    cfg = model_config(args)
    cfg['model'] = 'GaussianDiffusion1D'
    cfg['unet'] = {k: v for k, v in cfg['unet'].items() if k != 'flash_attn'}
    cfg['unet']['channels'] = int(data.shape[1])
    cfg['diffusion'] = {k: v for k, v in cfg['diffusion'].items() if k != 'image_size'}
    cfg['diffusion']['seq_length'] = int(data.shape[2])
    cfg['diffusion']['objective'] = args.objective or 'pred_noise'
    cfg['diffusion']['beta_schedule'] = args.beta_schedule or 'cosine'
    return cfg


SINES = 'sines'     # the built-in example: ms-ddpm train sines


def example_sines(n=1024, channels=2, length=64, seed=0):
    """The built-in 1D example: noisy sines of random phase and frequency in [0, 1]
    (N, channels, length), made by the code, so ``ms-ddpm train sines`` runs on a fresh machine."""
    import numpy as np
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, length)[None, None]
    f = rng.uniform(1, 4, (n, channels, 1))
    ph = rng.uniform(0, 2 * np.pi, (n, channels, 1))
    y = 0.5 + 0.4 * np.sin(2 * np.pi * f * x + ph) + 0.03 * rng.standard_normal((n, channels, length))
    return np.clip(y, 0, 1).astype(np.float32)


def is_sequences(folder):
    return folder == SINES or folder.endswith(('.npy', '.npz'))


def load_sequences(path):
    """Sequences (N, channels, length), values in [0, 1] (the reference's Dataset1D takes such a
    tensor): a ``.npy``, a ``.npz`` (its only array, or the one named ``data``), both read
    without pickles, or ``sines``, the built-in example."""
    import numpy as np
    from ms_ddpm_tools.exits import InputError
    if path == SINES:
        return example_sines()
    if not os.path.isfile(path):
        raise InputError(f'{path}: no such file')
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                names = data.files
                if 'data' not in names and len(names) != 1:
                    raise InputError(f'{path}: holds {", ".join(names)}; give one array, or name it "data"')
                data = data['data' if 'data' in names else names[0]]
    except (ValueError, OSError) as e:
        raise InputError(f'{path}: not a NumPy .npy/.npz array ({e})') from None
    if data.ndim != 3 or not np.issubdtype(data.dtype, np.floating):
        raise InputError(f'{path}: expected float sequences of shape (N, channels, length), got {data.dtype} {data.shape}')
    if not np.isfinite(data).all():
        raise InputError(f'{path}: holds NaN or Inf')
    return data.astype(np.float32)


def _resume_path(args):
    from ms_ddpm_tools.exits import InputError
    r = args.resume
    if r is None:
        return None
    path = r if r.endswith('.ckpt') else os.path.join(args.results, f'model-{r}.ckpt')
    if not os.path.isfile(path):
        raise InputError(f'--resume {r}: {path} does not exist')
    return path


EXTS = ('jpg', 'jpeg', 'png', 'tiff')


def progress_enabled(args=None):
    """tqdm bars: off with --no-progress / --quiet or TQDM_DISABLE set (tqdm's own switch)."""
    if args is not None and (getattr(args, 'no_progress', False) or getattr(args, 'quiet', False)):
        return False
    return os.environ.get('TQDM_DISABLE', '').strip().lower() in ('', '0', 'false', 'no')


def check_training_input(args):
    """The reference Trainer's rules and readable images, each as one clear line (before any
    model is built): a missing folder, fewer than 100 images, an effective batch under 16, an
    image that does not decode (named)."""
    from pathlib import Path
    from ms_ddpm_tools.exits import InputError
    if not os.path.isdir(args.folder):
        raise InputError(f'{args.folder}: no such folder')
    paths = [p for ext in EXTS for p in Path(args.folder).glob(f'**/*.{ext}')]
    if len(paths) < 100:
        raise InputError(f'{args.folder}: {len(paths)} images ({", ".join(EXTS)}, searched recursively); the reference '
                         f'Trainer needs at least 100 (at least 10k recommended)')
    if args.batch_size * args.grad_accum < 16:
        raise InputError(f'effective batch size --batch-size {args.batch_size} x --grad-accum {args.grad_accum} = '
                         f'{args.batch_size * args.grad_accum}; the reference Trainer needs at least 16')
    if args.save_every < 1 or args.steps < 1:
        raise InputError('--steps and --save-every must be at least 1')
    r = math.isqrt(args.num_samples)
    if args.num_samples < 1 or r * r != args.num_samples:
        raise InputError(f'--num-samples {args.num_samples}: must be a square (the reference grids them)')
    from PIL import Image
    from tqdm.auto import tqdm
    for p in tqdm(paths, desc='checking images', leave=False, disable=not progress_enabled(args) or len(paths) < 2000):
        try:
            with Image.open(p) as im:
                im.verify()
        except Exception as e:
            raise InputError(f'{p}: not a readable image ({type(e).__name__}: {e})') from None
    return paths


def main_train(argv=None):
    from ms_ddpm_tools.exits import error, input_errors
    args = _train_parser().parse_args(argv)
    try:
        return _train(args)
    except input_errors() as e:
        return error('ms-ddpm train', _one_line(e))


def _one_line(e):
    from ms_ddpm_tools.verify.command import _one_line as one
    return one(e)


def _train(args):
    import mindspore as ms
    import numpy as np
    import ms_ddpm
    from ms_ddpm.training import read_trainer_checkpoint
    from ms_ddpm_tools.exits import InputError
    sequences = is_sequences(args.folder)
    if sequences:
        data = load_sequences(args.folder)
        factor = 2 ** (len(args.dim_mults) - 1)
        if data.shape[2] % factor:
            raise InputError(f'{args.folder}: sequences of length {data.shape[2]}; --dim-mults '
                             f'{",".join(map(str, args.dim_mults))} downsamples {len(args.dim_mults) - 1} times, so the '
                             f'length must be a multiple of {factor}')
        r = math.isqrt(args.num_samples)
        if args.num_samples < 1 or r * r != args.num_samples:
            raise InputError(f'--num-samples {args.num_samples}: must be a square (the reference\'s rule)')
    elif args.class_cond or _resumes_class_cond(args):
        args.class_cond = True
        if args.init:
            raise InputError('--init with --class-cond: start a class-conditional run from scratch or --resume it')
        class_names = check_class_folders(args)
    else:
        check_training_input(args)
    os.makedirs(args.results, exist_ok=True)
    resume = _resume_path(args)
    ms.set_seed(args.seed)                  # before the model is built: its initial weights follow the seed
    np.random.seed(args.seed)
    if resume:
        _, meta = read_trainer_checkpoint(resume)
        if not meta.get('config'):
            raise InputError(f'{resume}: holds no model config; cannot rebuild the model')
        md = build_model(meta['config'])
        if args.class_cond and meta['config'].get('class_names') != class_names:
            raise InputError(f'{resume}: trained on the classes {", ".join(meta["config"].get("class_names") or [])}; '
                             f'{args.folder} holds {", ".join(class_names)}')
    elif args.class_cond:
        md = build_model(class_cond_config(args, class_names))
    elif args.init:
        from weight_convert import load_model
        md = load_model(args.init, ema=args.init_ema, config={'image_size': args.image_size}, train=True)
        md.ms_ddpm_config['diffusion'] = dict(md.ms_ddpm_config.get('diffusion') or {}, image_size=args.image_size)
    else:
        md = build_model(sequence_config(args, data) if sequences else model_config(args))
    log_file = open(args.log, 'a') if args.log else None
    if args.class_cond:
        from ms_ddpm.classifier_free_guidance import ClassConditionalTrainer
        trainer = ClassConditionalTrainer(
            md, args.folder, train_batch_size=args.batch_size, gradient_accumulate_every=args.grad_accum,
            augment_horizontal_flip=not args.no_flip, train_lr=args.lr, train_num_steps=args.steps,
            ema_update_every=args.ema_update_every, ema_decay=args.ema_decay, save_and_sample_every=args.save_every,
            num_samples=args.num_samples, results_folder=args.results, amp=args.amp,
            mixed_precision_type=args.mixed_precision_type, convert_image_to=args.convert_image_to,
            max_grad_norm=args.max_grad_norm, seed=args.seed, jit=not args.no_jit, progress=progress_enabled(args))
    elif sequences:
        trainer = ms_ddpm.Trainer1D(
            md, ms_ddpm.Dataset1D(data), train_batch_size=args.batch_size, gradient_accumulate_every=args.grad_accum,
            train_lr=args.lr, train_num_steps=args.steps, ema_update_every=args.ema_update_every,
            ema_decay=args.ema_decay, save_and_sample_every=args.save_every, num_samples=args.num_samples,
            results_folder=args.results, amp=args.amp, mixed_precision_type=args.mixed_precision_type,
            max_grad_norm=args.max_grad_norm, seed=args.seed, jit=not args.no_jit, progress=progress_enabled(args))
    else:
        trainer = ms_ddpm.Trainer(
        md, args.folder, train_batch_size=args.batch_size, gradient_accumulate_every=args.grad_accum,
        augment_horizontal_flip=not args.no_flip, train_lr=args.lr, train_num_steps=args.steps,
        ema_update_every=args.ema_update_every, ema_decay=args.ema_decay, save_and_sample_every=args.save_every,
        num_samples=args.num_samples, results_folder=args.results, amp=args.amp,
        mixed_precision_type=args.mixed_precision_type, convert_image_to=args.convert_image_to,
        calculate_fid=args.fid, max_grad_norm=args.max_grad_norm, num_fid_samples=args.num_fid_samples,
        save_best_and_latest_only=args.save_best_and_latest_only, seed=args.seed, jit=not args.no_jit,
        fid_weights=args.fid_weights, progress=progress_enabled(args))
    if resume:
        trainer.load(resume)
    if log_file:
        inner = trainer.train_step

        def logged():
            loss = inner()
            log_file.write(f'{trainer.step + 1} {loss:.6f}\n')
            log_file.flush()
            return loss
        trainer.train_step = logged
    try:
        trainer.train()
    finally:
        if log_file:
            log_file.close()
    if sequences and trainer.is_main_process:
        _samples_vs_data(trainer, data, os.path.join(args.results, 'samples-vs-data.png'))
    if trainer.step % args.save_every:          # the steps since the last milestone are not lost
        path = trainer.save('last')
        print(f'ms-ddpm train: saved the final state (step {trainer.step}) to {path}; '
              f'continue with --resume last', file=sys.stderr)
    return 0


def _samples_vs_data(trainer, data, path, n=4):
    """Sequences sampled from the EMA model beside training sequences (PNG)."""
    from ms_ddpm_tools.verify.report import sequences_png
    model = trainer.ema.ema_model
    model.set_train(False)
    n = min(n, len(data))
    samples = model.sample(batch_size=n).asnumpy()
    sequences_png(data[:n], samples, path, labels=('training data', 'samples (EMA model)'), difference=False)
    print(f'ms-ddpm train: wrote {path}', file=sys.stderr)


# --- sample --------------------------------------------------------------------------------

def _sample_parser():
    from ms_ddpm_tools.exits import EPILOG
    p = argparse.ArgumentParser(prog='ms-ddpm sample', epilog=EPILOG, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                description='Sample images from a checkpoint in MindSpore: an ms_ddpm Trainer .ckpt, a '
                                            'reference Trainer .pt, converted weights (.ckpt/.safetensors/.pt), or a bare '
                                            'Unet\'s weights (give --image-size; the reference\'s GaussianDiffusion '
                                            'defaults, or --config, complete the model).')
    p.add_argument('checkpoint', help='ms_ddpm Trainer .ckpt, or weights ms-ddpm convert reads (.pt/.ckpt/.safetensors)')
    p.add_argument('--out', required=True, help='PNG grid to write (its folder must exist)')
    p.add_argument('--num', type=int, default=16, help='number of images (grid of sqrt columns)')
    p.add_argument('--batch-size', type=int, default=16, help='images sampled at once')
    p.add_argument('--ddim-steps', type=int, default=None, help='DDIM with N steps (default: as the model was built; '
                                                                'DDPM over all timesteps if it has no sampling_timesteps)')
    w = p.add_mutually_exclusive_group()
    w.add_argument('--ema', dest='ema', action='store_true', default=None,
                   help='EMA weights (the default where the file holds them)')
    w.add_argument('--online', dest='ema', action='store_false', help='the online (trained) weights')
    p.add_argument('--seed', type=int, default=0, help='seed of the sampling noise')
    p.add_argument('--gif', default=None, help='also write the denoising trajectory as an animated GIF')
    p.add_argument('--gif-frames', type=int, default=60, help='frames in the GIF (steps are subsampled)')
    p.add_argument('--gif-scale', type=int, default=4, help='enlarge the GIF frames this many times')
    p.add_argument('--image-size', type=int, default=None, help='for weights without a stored config')
    p.add_argument('--config', default=None, help='architecture config (JSON text or file) for plain weights')
    p.add_argument('--quiet', action='store_true', help='no progress bar (also TQDM_DISABLE=1)')
    c = p.add_argument_group('class-conditional models (ms-ddpm train --class-cond): a row of --num images per class')
    c.add_argument('--classes', default=None, help='class labels or names, comma-separated, e.g. 0,1,2 or cat,dog '
                                                   '(default: every class)')
    c.add_argument('--cond-scale', type=float, default=6., help='classifier-free guidance scale (cond_scale)')
    c.add_argument('--rescaled-phi', type=float, default=0.7, help='rescaled_phi of the guided output')
    r = p.add_argument_group('RePaint inpainting (ms_ddpm.repaint; writes masked input | output, a row per sample)')
    r.add_argument('--inpaint', default=None, metavar='IMAGE', help='the known image, at the model\'s size')
    r.add_argument('--mask', default=None, metavar='MASK', help='greyscale, same height and width: white = known, black = paint')
    r.add_argument('--resample-iter', type=int, default=10, help='RePaint resample_iter')
    r.add_argument('--resample-jump', type=int, default=10, help='RePaint resample_jump')
    r.add_argument('--resample-every', type=int, default=50, help='RePaint resample_every')
    return p


def load_for_sampling(path, ema=None, image_size=None, config=None):
    """(GaussianDiffusion with the checkpoint's weights, trained steps or None, which weights).
    ``ema``: True EMA, False online, None the EMA weights where the file holds them.  A bare
    Unet is wrapped in a GaussianDiffusion (``image_size`` needed, the reference's defaults
    or ``config``'s diffusion arguments for the rest)."""
    import ms_ddpm
    from ms_ddpm.io.state import load_state_dict
    from ms_ddpm.training import read_trainer_checkpoint
    from weight_convert import ConvertError, load_model
    from weight_convert.config import diffusion_kwargs, parse_explicit_config
    from ms_ddpm_tools.exits import InputError
    if str(path).endswith('.ckpt'):
        try:
            entries, meta = read_trainer_checkpoint(path)
        except (ValueError, KeyError):
            meta = None
        if meta is not None:
            if not meta.get('config'):
                raise InputError(f'{path}: holds no model config')
            md = build_model(meta['config'])
            use_ema = ema is not False
            prefix = 'ema_model.' if use_ema else 'online_model.'
            load_state_dict(md, {k[len(prefix):]: v for k, v in entries.items() if k.startswith(prefix)})
            md.set_train(False)
            return md, meta.get('step'), 'EMA' if use_ema else 'online'
    explicit = parse_explicit_config(config)
    given_diffusion = dict(explicit['diffusion'])
    if image_size is not None:
        given_diffusion['image_size'] = image_size
    which = 'EMA' if ema else 'online' if ema is False else None
    try:
        net = load_model(path, config=explicit, ema=bool(ema))
        if ema is None:                             # auto: a Trainer checkpoint's EMA weights, else what is there
            try:
                net = load_model(path, config=explicit, ema=True)
                which = 'EMA'
            except ConvertError:
                which = 'the file\'s'
    except ConvertError as e:
        if 'image_size' in str(e) and image_size is None:
            raise InputError(f'{path}: {e}; give --image-size') from None
        raise
    if isinstance(net, ms_ddpm.GaussianDiffusion):
        if image_size is not None and tuple(net.image_size) != ((image_size,) * 2 if isinstance(image_size, int)
                                                               else tuple(image_size)):
            raise InputError(f'{path}: the model samples {tuple(net.image_size)} images; --image-size {image_size} '
                             f'does not apply')
        net.set_train(False)
        return net, None, which
    if 'image_size' not in given_diffusion:         # a bare Unet
        raise InputError(f'{path}: a bare Unet; give --image-size N to sample with GaussianDiffusion\'s defaults '
                         f'(or --config with its diffusion arguments)')
    md = ms_ddpm.GaussianDiffusion(net, **diffusion_kwargs({'diffusion': given_diffusion}))
    md.set_train(False)
    return md, None, which


def main_sample(argv=None):
    from ms_ddpm_tools.exits import error, input_errors
    args = _sample_parser().parse_args(argv)
    try:
        return _sample(args)
    except input_errors() as e:
        return error('ms-ddpm sample', _one_line(e))


def _sample(args):
    import numpy as np
    import mindspore as ms
    from ms_ddpm.io.images import save_gif, save_image
    from ms_ddpm_tools.exits import InputError
    if not progress_enabled(args):
        os.environ['TQDM_DISABLE'] = '1'           # tqdm's own switch: the sampling loops' bars
    if args.num < 1 or args.batch_size < 1:
        raise InputError(f'--num {args.num} / --batch-size {args.batch_size}: must be at least 1')
    for out in (args.out, args.gif):
        if out is not None and not os.path.isdir(os.path.dirname(os.path.abspath(out))):
            raise InputError(f'{out}: folder {os.path.dirname(os.path.abspath(out))} does not exist')
    if (args.inpaint is None) != (args.mask is None):
        raise InputError('--inpaint IMAGE and --mask MASK go together')
    md, step, which = load_for_sampling(args.checkpoint, ema=args.ema, image_size=args.image_size, config=args.config)
    conditional = hasattr(md.model, 'num_classes') and hasattr(md.model, 'null_classes_emb')
    if args.classes is not None and not conditional:
        raise InputError(f'--classes: {args.checkpoint} is not a class-conditional model (it takes no classes)')
    if conditional:
        if args.inpaint is not None or args.gif is not None:
            raise InputError(f'{args.checkpoint}: a class-conditional model; --inpaint / --gif take an unconditional one')
        return _sample_classes(md, args, step, which)
    if args.inpaint is not None:
        from ms_ddpm_tools.inpaint import inpaint
        ms.set_seed(args.seed)
        inpaint(md, args)
        print(f'wrote {args.out} (RePaint, {which} weights, seed {args.seed})', file=sys.stderr)
        return 0
    if args.ddim_steps is not None:
        if not 0 < args.ddim_steps <= md.num_timesteps:
            raise InputError(f'--ddim-steps must be in 1..{md.num_timesteps}')
        md.sampling_timesteps = args.ddim_steps
        md.is_ddim_sampling = args.ddim_steps < md.num_timesteps
    ms.set_seed(args.seed)
    kind = f'DDIM {md.sampling_timesteps} steps' if md.is_ddim_sampling else f'DDPM {md.num_timesteps} steps'
    print(f'sampling {args.num} images ({kind}, {which} weights'
          f'{f", trained {step} steps" if step is not None else ""}, seed {args.seed})', file=sys.stderr)
    want_traj = args.gif is not None
    out, traj = [], []
    left = args.num
    while left > 0:
        b = min(args.batch_size, left)
        x = md.sample(batch_size=b, return_all_timesteps=want_traj).asnumpy()
        if want_traj:
            traj.append(x)
            x = x[:, -1]
        out.append(x)
        left -= b
    images = np.concatenate(out)
    nrow = max(1, int(math.sqrt(args.num)))
    if images.ndim == 3:                         # sequences (N, C, L): the arrays and a plot of them
        from ms_ddpm.io import atomic_save
        from ms_ddpm_tools.verify.report import plot_sequences_png
        npy = os.path.splitext(args.out)[0] + '.npy'
        atomic_save(npy, lambda tmp: np.save(open(tmp, 'wb'), images))
        plot_sequences_png(images, args.out)
        print(f'wrote {args.out} and {npy}', file=sys.stderr)
        return 0
    save_image(images, args.out, nrow=nrow)
    print(f'wrote {args.out}', file=sys.stderr)
    if want_traj:
        frames = np.concatenate(traj).transpose(1, 0, 2, 3, 4)        # (steps + 1, N, C, H, W)
        keep = np.unique(np.linspace(0, len(frames) - 1, min(args.gif_frames, len(frames))).round().astype(int))
        save_gif(np.clip(frames[keep], 0, 1), args.gif, nrow=nrow, scale=args.gif_scale)
        print(f'wrote {args.gif} ({len(keep)} frames)', file=sys.stderr)
    return 0


def parse_classes(text, num_classes, names):
    """``--classes`` (labels or class names, comma-separated) -> labels; out-of-range labels and
    unknown names are one line naming them and what is valid."""
    from ms_ddpm_tools.exits import InputError
    names = list(names or [])
    valid = f'0..{num_classes - 1}' + (f' or {", ".join(names)}' if names else '')
    labels, bad = [], []
    for item in (v.strip() for v in str(text).split(',')):
        if not item:
            continue
        if item.lstrip('-').isdigit():
            label = int(item)
        elif item in names:
            label = names.index(item)
        else:
            bad.append(item)
            continue
        if not 0 <= label < num_classes:
            bad.append(item)
        labels.append(label)
    if bad or not labels:
        raise InputError(f'--classes {text}: {"unknown class " + ", ".join(bad) if bad else "no class given"}; '
                         f'the model has {num_classes} classes ({valid})')
    return labels


def _sample_classes(md, args, step, which):
    """A class-conditional grid: a row of ``--num`` images per class of ``--classes``."""
    import numpy as np
    import mindspore as ms
    from ms_ddpm.io.images import save_image
    from ms_ddpm_tools.exits import InputError
    num_classes = int(md.model.num_classes)
    names = (getattr(md, 'ms_ddpm_config', None) or {}).get('class_names')
    labels = parse_classes(args.classes, num_classes, names) if args.classes is not None else list(range(num_classes))
    if args.ddim_steps is not None:
        if not 0 < args.ddim_steps <= md.num_timesteps:
            raise InputError(f'--ddim-steps must be in 1..{md.num_timesteps}')
        md.sampling_timesteps = args.ddim_steps
        md.is_ddim_sampling = args.ddim_steps < md.num_timesteps
    ms.set_seed(args.seed)
    kind = f'DDIM {md.sampling_timesteps} steps' if md.is_ddim_sampling else f'DDPM {md.num_timesteps} steps'
    shown = ', '.join(names[i] if names else str(i) for i in labels)
    print(f'sampling {args.num} images per class ({shown}; {kind}, cond_scale {args.cond_scale}, rescaled_phi '
          f'{args.rescaled_phi}, {which} weights{f", trained {step} steps" if step is not None else ""}, seed {args.seed})',
          file=sys.stderr)
    classes = np.repeat(np.asarray(labels, np.int64), args.num)
    out = [md.sample(ms.Tensor(classes[i:i + args.batch_size]), cond_scale=args.cond_scale,
                     rescaled_phi=args.rescaled_phi).asnumpy() for i in range(0, len(classes), args.batch_size)]
    save_image(np.concatenate(out), args.out, nrow=args.num)
    print(f'wrote {args.out} (a row per class: {shown})', file=sys.stderr)
    return 0


main = main_train
