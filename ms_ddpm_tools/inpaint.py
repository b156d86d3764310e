"""``ms-ddpm sample CHECKPOINT --inpaint IMAGE --mask MASK``: RePaint inpainting (issue 14).

The loaded GaussianDiffusion's network and schedule buffers run under ``ms_ddpm.repaint``'s
GaussianDiffusion (the reference's RePaint sampler: ``sample(gt=, mask=, resample_iter,
resample_jump, resample_every)``).  IMAGE is the known image at the model's size; MASK a
greyscale picture of the same height and width, white (>= 128) = known pixel, black = to be
painted.  The PNG shows, a row per sample, the masked input | the inpainted output."""

import numpy as np

from ms_ddpm_tools.exits import InputError

_MODES = {1: 'L', 3: 'RGB', 4: 'RGBA'}


def read_inpaint_inputs(image_path, mask_path, channels, image_size):
    """(gt (1, C, H, W) float32 in [0, 1], mask (1, C, H, W) float32 0/1) from the two files,
    each problem named in one line (InputError)."""
    from PIL import Image, UnidentifiedImageError
    h, w = image_size
    try:
        with Image.open(image_path) as im:
            img = np.asarray(im.convert(_MODES.get(channels, 'RGB')), dtype=np.float32) / 255.
        with Image.open(mask_path) as im:
            mask = np.asarray(im.convert('L'), dtype=np.float32)
    except UnidentifiedImageError as e:
        raise InputError(f'not an image: {e}') from None
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[:2] != (h, w):
        raise InputError(f'{image_path}: the image is {img.shape[0]}x{img.shape[1]} (HxW), the model samples {h}x{w}')
    if mask.shape != img.shape[:2]:
        raise InputError(f'{mask_path}: the mask is {mask.shape[0]}x{mask.shape[1]} (HxW), the image '
                         f'{image_path} is {img.shape[0]}x{img.shape[1]}: they must match')
    known = (mask >= 128).astype(np.float32)
    gt = img.transpose(2, 0, 1)[None]
    return gt, np.broadcast_to(known[None, None], gt.shape).copy()


def repaint_diffusion(md):
    """``ms_ddpm.repaint.GaussianDiffusion`` over ``md``'s network, with ``md``'s schedule
    buffers and settings."""
    from ms_ddpm.repaint import GaussianDiffusion
    rp = GaussianDiffusion(md.model, image_size=tuple(md.image_size), timesteps=md.num_timesteps,
                           objective=md.objective, auto_normalize=md.auto_normalize)
    for name in ('betas', 'alphas_cumprod', 'alphas_cumprod_prev', 'sqrt_alphas_cumprod',
                 'sqrt_one_minus_alphas_cumprod', 'log_one_minus_alphas_cumprod', 'sqrt_recip_alphas_cumprod',
                 'sqrt_recipm1_alphas_cumprod', 'posterior_variance', 'posterior_log_variance_clipped',
                 'posterior_mean_coef1', 'posterior_mean_coef2', 'loss_weight'):
        getattr(rp, name).set_data(getattr(md, name).value().copy())
    rp.set_train(False)
    return rp


def inpaint(md, args):
    """Run RePaint for ``args`` (``--inpaint``, ``--mask``, ``--num``, ``--resample-*``) and write
    ``args.out``; returns the inpainted images."""
    import mindspore as ms
    from ms_ddpm.io.images import save_image
    if getattr(md, 'channels', None) is None or not hasattr(md, 'posterior_mean_coef1') or md.model.__class__.__name__ != 'Unet':
        raise InputError(f'{args.checkpoint}: --inpaint needs a 2D GaussianDiffusion checkpoint')
    image_size = tuple(md.image_size) if not isinstance(md.image_size, int) else (md.image_size,) * 2
    gt, mask = read_inpaint_inputs(args.inpaint, args.mask, md.channels, image_size)
    n = args.num
    gt, mask = np.repeat(gt, n, 0), np.repeat(mask, n, 0)
    rp = repaint_diffusion(md)
    out = rp.sample(gt=ms.Tensor(gt), mask=ms.Tensor(mask), resample_iter=args.resample_iter,
                    resample_jump=args.resample_jump, resample_every=args.resample_every).asnumpy()
    pictures = np.stack([gt * mask, np.clip(out, 0, 1)], 1).reshape((2 * n,) + gt.shape[1:])
    save_image(pictures, args.out, nrow=2)
    return out
