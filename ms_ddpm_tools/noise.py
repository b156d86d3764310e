"""``ms-ddpm noise IMAGE``: the forward (noising) process of one image at several timesteps,
as a PNG strip (the first picture of the DDPM tutorial): ``q_sample(x_0, t, noise)`` of the
ms_ddpm GaussianDiffusion, one shared noise draw for every t.

    ms-ddpm noise cat.png --steps 0,50,100,150,199 --timesteps 200 --beta-schedule linear --out noise.png
"""

import argparse
import os
import sys


def _ints(text):
    return tuple(int(v) for v in str(text).split(',') if v.strip())


def _parser():
    from ms_ddpm_tools.exits import EPILOG
    p = argparse.ArgumentParser(prog='ms-ddpm noise', description=__doc__.replace('``', ''), epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('image', help='an image file (any format PIL reads)')
    p.add_argument('--steps', type=_ints, default=(0, 50, 100, 150, 199),
                   help='timesteps to show, comma-separated (default 0,50,100,150,199)')
    p.add_argument('--timesteps', type=int, default=200, help='GaussianDiffusion(timesteps) (default 200, the tutorial\'s)')
    p.add_argument('--beta-schedule', default='linear', choices=['linear', 'cosine', 'sigmoid'],
                   help='GaussianDiffusion(beta_schedule) (default linear, the tutorial\'s)')
    p.add_argument('--image-size', type=int, default=128, help='resize + centre-crop to this size (default 128)')
    p.add_argument('--channels', type=int, default=3, choices=(1, 3), help='1 (grey) or 3 (RGB) (default 3)')
    p.add_argument('--seed', type=int, default=0, help='seed of the noise (default 0)')
    p.add_argument('--out', default='noise.png', help='PNG to write (default noise.png)')
    return p


def load_image(path, size, channels):
    """The reference Dataset's transform (Resize, CenterCrop, ToTensor) -> float32 CHW in [0, 1]."""
    import numpy as np
    from PIL import Image
    from ms_ddpm_tools.exits import InputError
    try:
        with Image.open(path) as im:
            im = im.convert('L' if channels == 1 else 'RGB')
    except (OSError, ValueError) as e:
        raise InputError(f'{path}: not a readable image ({e})') from None
    w, h = im.size
    s = size / min(w, h)
    im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BILINEAR)
    left, top = (im.width - size) // 2, (im.height - size) // 2
    im = im.crop((left, top, left + size, top + size))
    x = np.asarray(im, dtype=np.float32) / 255
    return x[None] if channels == 1 else x.transpose(2, 0, 1)


def noising(x0, steps, timesteps=200, beta_schedule='linear', seed=0):
    """``q_sample`` of ``x0`` (CHW in [0, 1]) at each of ``steps``, one noise draw: (S, C, H, W) in [0, 1]."""
    import numpy as np
    import mindspore as ms
    import ms_ddpm
    from ms_ddpm_tools.exits import InputError
    bad = [t for t in steps if not 0 <= t < timesteps]
    if bad or not steps:
        raise InputError(f'--steps {",".join(map(str, steps))}: each must be in 0..{timesteps - 1}')
    c, h, w = x0.shape
    md = ms_ddpm.GaussianDiffusion(ms_ddpm.Unet(dim=8, dim_mults=(1,), channels=c), image_size=(h, w),
                                   timesteps=timesteps, beta_schedule=beta_schedule)
    noise = np.random.default_rng(seed).standard_normal((1, c, h, w)).astype(np.float32)
    x = np.repeat(x0[None] * 2 - 1, len(steps), axis=0)
    xt = md.q_sample(ms.Tensor(x), ms.Tensor(np.array(steps, np.int64)),
                     noise=ms.Tensor(np.repeat(noise, len(steps), axis=0))).asnumpy()
    return np.clip((xt + 1) / 2, 0, 1)


def main(argv=None):
    from ms_ddpm_tools.exits import EXIT_OK, error, input_errors
    from ms_ddpm_tools.verify.report import image_rows_png
    args = _parser().parse_args(argv)
    try:
        if not os.path.isfile(args.image):
            raise FileNotFoundError(2, 'no such file', args.image)
        x0 = load_image(args.image, args.image_size, args.channels)
        strip = noising(x0, args.steps, args.timesteps, args.beta_schedule, args.seed)
        image_rows_png([strip], args.out, labels=[f't={t}' for t in args.steps])
    except input_errors() as e:
        from ms_ddpm_tools.verify.command import _one_line
        return error('ms-ddpm noise', _one_line(e))
    print(f'wrote {args.out} (t = {", ".join(map(str, args.steps))} of {args.timesteps}, {args.beta_schedule} schedule)',
          file=sys.stderr)
    return EXIT_OK


if __name__ == '__main__':
    sys.exit(main())
