"""``ms-ddpm train`` and ``ms-ddpm sample``.

    ms-ddpm train FOLDER --image-size 32 [--dim 64 --dim-mults 1,2,4,8 ...] [--steps N] [--resume M]
    ms-ddpm sample CHECKPOINT --out grid.png [--ddim-steps N] [--ema/--online] [--seed S] [--gif traj.gif]

``train`` builds ``Unet`` + ``GaussianDiffusion`` from the options (or starts from converted
weights with ``--init``, e.g. a reference checkpoint: fine-tuning), and runs ``ms_ddpm.Trainer``
(progress bar with the loss; checkpoints ``model-M.ckpt`` and sample grids ``sample-M.png`` in
``--results`` every ``--save-every`` steps).  ``sample`` reads an ms_ddpm Trainer checkpoint
(the architecture is stored in it), or any weights file ``weight_convert.load_model`` reads
(a reference Trainer ``.pt``, a converted ``.ckpt``/``.safetensors`` with its config).
"""

import argparse
import math
import os
import sys


def _ints(text):
    return tuple(int(v) for v in str(text).split(',') if v.strip())


def _train_parser():
    p = argparse.ArgumentParser(prog='ms-ddpm train', description='train a GaussianDiffusion on an image folder (MindSpore)')
    p.add_argument('folder', help='folder of images (jpg/jpeg/png/tiff, searched recursively; at least 100)')
    m = p.add_argument_group('model (ignored with --init or --resume of an existing run)')
    m.add_argument('--image-size', type=int, default=32)
    m.add_argument('--channels', type=int, default=3, help='1 (L), 3 (RGB) or 4 (RGBA)')
    m.add_argument('--dim', type=int, default=64)
    m.add_argument('--dim-mults', type=_ints, default=(1, 2, 4, 8), help='e.g. 1,2,4,8')
    m.add_argument('--attn-heads', type=int, default=4)
    m.add_argument('--attn-dim-head', type=int, default=32)
    m.add_argument('--flash-attn', action='store_true')
    m.add_argument('--timesteps', type=int, default=1000)
    m.add_argument('--sampling-timesteps', type=int, default=None, help='DDIM steps for the milestone samples')
    m.add_argument('--objective', default='pred_v', choices=['pred_noise', 'pred_x0', 'pred_v'])
    m.add_argument('--beta-schedule', default='sigmoid', choices=['linear', 'cosine', 'sigmoid'])
    m.add_argument('--init', default=None, help='start from these weights (any format weight_convert reads)')
    m.add_argument('--init-ema', action='store_true', help='with --init of a Trainer checkpoint: its EMA weights')
    t = p.add_argument_group('training (the reference Trainer\'s options)')
    t.add_argument('--batch-size', type=int, default=16)
    t.add_argument('--grad-accum', type=int, default=1)
    t.add_argument('--lr', type=float, default=1e-4)
    t.add_argument('--steps', type=int, default=100000)
    t.add_argument('--save-every', type=int, default=1000)
    t.add_argument('--num-samples', type=int, default=25)
    t.add_argument('--results', default='./results')
    t.add_argument('--ema-decay', type=float, default=0.995)
    t.add_argument('--ema-update-every', type=int, default=10)
    t.add_argument('--max-grad-norm', type=float, default=1.)
    t.add_argument('--no-flip', action='store_true', help='no random horizontal flips')
    t.add_argument('--amp', action='store_true', help='mixed precision + DynamicLossScaler')
    t.add_argument('--mixed-precision-type', default='fp16', choices=['fp16', 'bf16'])
    t.add_argument('--convert-image-to', default=None, choices=['L', 'RGB', 'RGBA'])
    t.add_argument('--fid', dest='fid', action='store_true', default=False, help='compute FID at each milestone')
    t.add_argument('--fid-weights', default=None, help='local pytorch-fid InceptionV3 weights (never downloaded)')
    t.add_argument('--num-fid-samples', type=int, default=50000)
    t.add_argument('--save-best-and-latest-only', action='store_true')
    t.add_argument('--seed', type=int, default=0)
    t.add_argument('--no-jit', action='store_true', help='PyNative train step (debugging)')
    t.add_argument('--resume', default=None, help='milestone (model-M.ckpt in --results) or a checkpoint path')
    t.add_argument('--log', default=None, help='append "step loss" lines to this file')
    return p


def model_config(args):
    from weight_convert.converter import CONFIG_FORMAT, CONFIG_VERSION
    unet = dict(dim=args.dim, dim_mults=list(args.dim_mults), channels=args.channels, attn_heads=args.attn_heads,
                attn_dim_head=args.attn_dim_head, flash_attn=args.flash_attn)
    diffusion = dict(image_size=args.image_size, timesteps=args.timesteps, sampling_timesteps=args.sampling_timesteps,
                     objective=args.objective, beta_schedule=args.beta_schedule)
    return {'format': CONFIG_FORMAT, 'version': CONFIG_VERSION, 'model': 'GaussianDiffusion',
            'unet': unet, 'diffusion': diffusion}


def build_model(cfg):
    import ms_ddpm
    from weight_convert.converter import diffusion_kwargs, unet_kwargs
    md = ms_ddpm.GaussianDiffusion(ms_ddpm.Unet(**unet_kwargs(cfg)), **diffusion_kwargs(cfg))
    md.ms_ddpm_config = {k: v for k, v in cfg.items() if not k.startswith('_')}
    return md


def _resume_path(args):
    r = args.resume
    if r is None:
        return None
    path = r if r.endswith('.ckpt') else os.path.join(args.results, f'model-{r}.ckpt')
    if not os.path.isfile(path):
        raise SystemExit(f'ms-ddpm train: --resume {r}: {path} does not exist')
    return path


def main_train(argv=None):
    args = _train_parser().parse_args(argv)
    import ms_ddpm
    from ms_ddpm.training import read_trainer_checkpoint
    os.makedirs(args.results, exist_ok=True)
    resume = _resume_path(args)
    if resume:
        _, meta = read_trainer_checkpoint(resume)
        if not meta.get('config'):
            raise SystemExit(f'{resume}: holds no model config; cannot rebuild the model')
        md = build_model(meta['config'])
    elif args.init:
        from weight_convert import load_model
        md = load_model(args.init, ema=args.init_ema, config={'image_size': args.image_size}, train=True)
        md.ms_ddpm_config['diffusion'] = dict(md.ms_ddpm_config.get('diffusion') or {}, image_size=args.image_size)
    else:
        md = build_model(model_config(args))
    log_file = open(args.log, 'a') if args.log else None
    trainer = ms_ddpm.Trainer(
        md, args.folder, train_batch_size=args.batch_size, gradient_accumulate_every=args.grad_accum,
        augment_horizontal_flip=not args.no_flip, train_lr=args.lr, train_num_steps=args.steps,
        ema_update_every=args.ema_update_every, ema_decay=args.ema_decay, save_and_sample_every=args.save_every,
        num_samples=args.num_samples, results_folder=args.results, amp=args.amp,
        mixed_precision_type=args.mixed_precision_type, convert_image_to=args.convert_image_to,
        calculate_fid=args.fid, max_grad_norm=args.max_grad_norm, num_fid_samples=args.num_fid_samples,
        save_best_and_latest_only=args.save_best_and_latest_only, seed=args.seed, jit=not args.no_jit,
        fid_weights=args.fid_weights)
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
    return 0


# --- sample --------------------------------------------------------------------------------

def _sample_parser():
    p = argparse.ArgumentParser(prog='ms-ddpm sample', description='sample images from a checkpoint (MindSpore)')
    p.add_argument('checkpoint', help='ms_ddpm Trainer .ckpt, or weights weight_convert reads (.pt/.ckpt/.safetensors)')
    p.add_argument('--out', required=True, help='PNG grid to write')
    p.add_argument('--num', type=int, default=16, help='number of images (grid of sqrt columns)')
    p.add_argument('--batch-size', type=int, default=16)
    p.add_argument('--ddim-steps', type=int, default=None, help='DDIM with N steps (default: as the model was built; '
                                                                'DDPM over all timesteps if it has no sampling_timesteps)')
    w = p.add_mutually_exclusive_group()
    w.add_argument('--ema', dest='ema', action='store_true', default=True, help='EMA weights (default)')
    w.add_argument('--online', dest='ema', action='store_false', help='the online (trained) weights')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--gif', default=None, help='also write the denoising trajectory as an animated GIF')
    p.add_argument('--gif-frames', type=int, default=60, help='frames in the GIF (steps are subsampled)')
    p.add_argument('--gif-scale', type=int, default=4, help='enlarge the GIF frames this many times')
    p.add_argument('--image-size', type=int, default=None, help='for weights without a stored config')
    p.add_argument('--config', default=None, help='architecture config (JSON text or file) for plain weights')
    return p


def load_for_sampling(path, ema=True, image_size=None, config=None):
    """GaussianDiffusion with the checkpoint's weights (EMA or online)."""
    from weight_convert import load_torch_state_dict, load_model
    from ms_ddpm.training import read_trainer_checkpoint
    if str(path).endswith('.ckpt'):
        try:
            entries, meta = read_trainer_checkpoint(path)
        except ValueError:
            meta = None
        if meta is not None:
            if not meta.get('config'):
                raise SystemExit(f'{path}: holds no model config')
            md = build_model(meta['config'])
            prefix = 'ema_model.' if ema else 'online_model.'
            load_torch_state_dict(md, {k[len(prefix):]: v for k, v in entries.items() if k.startswith(prefix)})
            md.set_train(False)
            return md, meta.get('step')
    explicit = config
    if image_size is not None and explicit is None:
        explicit = {'image_size': image_size}
    try:
        md = load_model(path, config=explicit, ema=ema)
    except Exception as e:
        if ema and 'ema' in str(e).lower():
            raise SystemExit(f'{path}: {e}\n(use --online for a file without EMA weights)')
        raise
    return md, None


def main_sample(argv=None):
    args = _sample_parser().parse_args(argv)
    import numpy as np
    import mindspore as ms
    from ms_ddpm.io.images import save_gif, save_image
    md, step = load_for_sampling(args.checkpoint, ema=args.ema, image_size=args.image_size, config=args.config)
    if args.ddim_steps is not None:
        if not 0 < args.ddim_steps <= md.num_timesteps:
            raise SystemExit(f'--ddim-steps must be in 1..{md.num_timesteps}')
        md.sampling_timesteps = args.ddim_steps
        md.is_ddim_sampling = args.ddim_steps < md.num_timesteps
    ms.set_seed(args.seed)
    kind = f'DDIM {md.sampling_timesteps} steps' if md.is_ddim_sampling else f'DDPM {md.num_timesteps} steps'
    print(f'sampling {args.num} images ({kind}, {"EMA" if args.ema else "online"} weights'
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
    save_image(images, args.out, nrow=nrow)
    print(f'wrote {args.out}', file=sys.stderr)
    if want_traj:
        frames = np.concatenate(traj).transpose(1, 0, 2, 3, 4)        # (steps + 1, N, C, H, W)
        keep = np.unique(np.linspace(0, len(frames) - 1, min(args.gif_frames, len(frames))).round().astype(int))
        save_gif(np.clip(frames[keep], 0, 1), args.gif, nrow=nrow, scale=args.gif_scale)
        print(f'wrote {args.gif} ({len(keep)} frames)', file=sys.stderr)
    return 0


main = main_train
