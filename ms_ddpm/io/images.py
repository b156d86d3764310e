"""PNG / GIF writing (layer a): ``torchvision.utils.make_grid`` / ``save_image`` on NumPy
or MindSpore images in [0, 1], and an animated GIF of a denoising trajectory.  Every file
is written atomically through :func:`ms_ddpm.io.atomic.atomic_save`."""

import math
import os

import numpy as np

from ms_ddpm.io.atomic import atomic_save

__all__ = ['make_grid', 'to_uint8_image', 'save_image', 'save_gif']


def make_grid(images, nrow=8, padding=2, pad_value=0.):
    """``torchvision.utils.make_grid`` on a NumPy (B, C, H, W) array (1-channel images are
    repeated to 3 channels, as torchvision does)."""
    images = np.asarray(images, dtype=np.float32)
    if images.shape[1] == 1:
        images = np.concatenate([images] * 3, axis=1)
    n, c, h, w = images.shape
    xmaps = min(nrow, n)
    ymaps = int(math.ceil(float(n) / xmaps))
    height, width = h + padding, w + padding
    grid = np.full((c, height * ymaps + padding, width * xmaps + padding), pad_value, dtype=np.float32)
    k = 0
    for y in range(ymaps):
        for x in range(xmaps):
            if k >= n:
                break
            grid[:, y * height + padding:y * height + padding + h, x * width + padding:x * width + padding + w] = images[k]
            k += 1
    return grid


def to_uint8_image(chw):
    """torchvision's float [0, 1] -> uint8 HWC: ``(x * 255 + 0.5).clamp(0, 255)`` truncated."""
    chw = np.asarray(chw, dtype=np.float32)
    return np.clip(chw * 255 + 0.5, 0, 255).astype(np.uint8).transpose(1, 2, 0)


def _save_pil(image, path, **kw):
    fmt = os.path.splitext(str(path))[1][1:].upper().replace('JPG', 'JPEG') or 'PNG'
    return atomic_save(path, lambda tmp: image.save(tmp, format=fmt, **kw))


def _numpy(images):
    return images.asnumpy() if hasattr(images, 'asnumpy') else images


def save_image(images, path, nrow=8, padding=2):
    """``torchvision.utils.save_image(images, path, nrow)`` for NumPy / MindSpore images in
    [0, 1], written atomically."""
    from PIL import Image
    return _save_pil(Image.fromarray(to_uint8_image(make_grid(_numpy(images), nrow=nrow, padding=padding))), path)


def save_gif(frames, path, nrow=8, duration_ms=40, hold_last_ms=1500, scale=1):
    """An animated GIF: ``frames`` is (T, B, C, H, W) in [0, 1] (a denoising trajectory);
    each frame is the grid of the B images at that step, enlarged ``scale`` times (nearest)."""
    from PIL import Image
    pics = [Image.fromarray(to_uint8_image(make_grid(f, nrow=nrow))) for f in _numpy(frames)]
    if scale > 1:
        pics = [p.resize((p.width * scale, p.height * scale), Image.NEAREST) for p in pics]
    durations = [duration_ms] * (len(pics) - 1) + [hold_last_ms]
    first, rest = pics[0], pics[1:]
    return _save_pil(first, path, save_all=True, append_images=rest, duration=durations, loop=0)
