"""The built-in default checkpoint: a small U-Net + GaussianDiffusion trained for a short
while by the reference's own ``Trainer`` on scikit-learn's digits (1797 8x8 images that
install with the package), written out as PNG files.  Built once, cached under
``$MS_DDPM_CACHE`` (default ``~/.cache/ms_ddpm``) in a folder named by the recipe's hash."""

import hashlib
import json
import os
import shutil
import tempfile
import time

RECIPE = {
    'name': 'digits-unet16',
    'unet': {'dim': 16, 'dim_mults': [1, 2, 4], 'channels': 1},
    'diffusion': {'image_size': 16, 'timesteps': 1000, 'sampling_timesteps': 50,
                  'objective': 'pred_v', 'beta_schedule': 'sigmoid'},
    'trainer': {'train_batch_size': 16, 'train_lr': 1e-3, 'train_num_steps': 300,
                'augment_horizontal_flip': False, 'calculate_fid': False, 'amp': False,
                'save_and_sample_every': 10 ** 9, 'num_samples': 16},
    'data': {'source': 'sklearn.datasets.load_digits', 'png_size': 8, 'count': None},
    'seed': 0,
}

# a much smaller recipe for tests and the shipped fixture (seconds, not minutes)
TINY_RECIPE = {
    'name': 'digits-unet8-tiny',
    'unet': {'dim': 8, 'dim_mults': [1, 2], 'channels': 1, 'attn_heads': 2, 'attn_dim_head': 8},
    'diffusion': {'image_size': 8, 'timesteps': 100, 'sampling_timesteps': 10,
                  'objective': 'pred_v', 'beta_schedule': 'sigmoid'},
    'trainer': {'train_batch_size': 16, 'train_lr': 1e-3, 'train_num_steps': 20,
                'augment_horizontal_flip': False, 'calculate_fid': False, 'amp': False,
                'save_and_sample_every': 10 ** 9, 'num_samples': 16},
    'data': {'source': 'sklearn.datasets.load_digits', 'png_size': 8, 'count': 200},
    'seed': 0,
}

RECIPES = {'default': RECIPE, 'tiny': TINY_RECIPE}


def cache_dir():
    return os.path.expanduser(os.environ.get('MS_DDPM_CACHE') or '~/.cache/ms_ddpm')


def recipe_hash(recipe):
    from ms_ddpm.version import REFERENCE_VERSION
    blob = json.dumps({'recipe': recipe, 'reference': REFERENCE_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def config_of(recipe):
    """The ``weight_convert`` config (``--config``) describing the recipe's model."""
    return {'unet': dict(recipe['unet']), 'diffusion': dict(recipe['diffusion'])}


def checkpoint_path(recipe=RECIPE):
    return os.path.join(cache_dir(), f'{recipe["name"]}-{recipe_hash(recipe)}', 'model.pt')


def write_digits(folder, size=8, count=None):
    """scikit-learn's digits as grey PNG files (0..16 -> 0..255)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits
    os.makedirs(folder, exist_ok=True)
    images = load_digits().images
    if count:
        images = images[:count]
    for i, im in enumerate(images):
        img = Image.fromarray(np.round(im / 16 * 255).astype(np.uint8), 'L')
        if size != im.shape[0]:
            img = img.resize((size, size), Image.BILINEAR)
        img.save(os.path.join(folder, f'{i:04d}.png'))
    return len(images)


def digits_array(size, count=16, offset=0):
    """``count`` digits as float32 (count, 1, size, size) in [0, 1], resized like the
    Trainer's Dataset sees them (PNG -> PIL bilinear resize)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits
    images = load_digits().images[offset:offset + count]
    out = []
    for im in images:
        img = Image.fromarray(np.round(im / 16 * 255).astype(np.uint8), 'L')
        if size != im.shape[0]:
            img = img.resize((size, size), Image.BILINEAR)
        out.append(np.asarray(img, np.float32) / 255)
    return np.stack(out)[:, None]


def ensure_checkpoint(recipe=RECIPE, log=print):
    """Path of the recipe's reference Trainer checkpoint; trains it first if not cached."""
    path = checkpoint_path(recipe)
    if os.path.isfile(path):
        return path, False
    os.makedirs(os.path.dirname(os.path.dirname(path)), exist_ok=True)
    log(f'building the default checkpoint (once; cached at {path}): reference Trainer, '
        f'{recipe["trainer"]["train_num_steps"]} steps on scikit-learn digits ...')
    t0 = time.perf_counter()
    work = tempfile.mkdtemp(prefix='.build-', dir=os.path.dirname(os.path.dirname(path)))
    try:
        import torch
        from reference import check_reference_version
        check_reference_version()
        import denoising_diffusion_pytorch as ddp
        from weight_convert.config import kwargs_of
        images = os.path.join(work, 'images')
        write_digits(images, recipe['data']['png_size'], recipe['data']['count'])
        threads = torch.get_num_threads()
        torch.set_num_threads(1)     # on a busy 2-core machine 2 threads are ~5x slower (spin-waits)
        torch.manual_seed(recipe['seed'])
        unet = ddp.Unet(**kwargs_of(recipe['unet']))
        diffusion = ddp.GaussianDiffusion(unet, **kwargs_of(recipe['diffusion']))
        trainer = ddp.Trainer(diffusion, images, results_folder=os.path.join(work, 'results'), **recipe['trainer'])
        trainer.train()
        trainer.save('final')
        torch.set_num_threads(threads)
        final = os.path.dirname(path)
        tmp_final = os.path.join(work, 'final')
        os.makedirs(tmp_final)
        shutil.move(os.path.join(work, 'results', 'model-final.pt'), os.path.join(tmp_final, 'model.pt'))
        with open(os.path.join(tmp_final, 'recipe.json'), 'w') as f:
            json.dump(dict(recipe, hash=recipe_hash(recipe), build_seconds=round(time.perf_counter() - t0, 1)), f, indent=1)
        if os.path.isdir(final):        # a concurrent build won
            return path, False
        os.replace(tmp_final, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f'default checkpoint built in {time.perf_counter() - t0:.0f} s')
    return path, True
