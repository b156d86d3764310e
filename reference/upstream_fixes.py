"""The reference's upstream bugs of 2.3.4, fixed the evident way for a block only (the installed
package is never edited); used by the parity tests (through ``monkeypatch``) and by ``verify``'s
torch side (set and restored around its sampling call).  docs/parity.md lists each difference.

- ``learned_partial``: learned_gaussian_diffusion.py uses ``partial`` and ``identity`` without
  importing them (``NameError`` on the DDIM path);
- ``weighted_p_mean_variance``: WeightedObjectiveGaussianDiffusion.p_mean_variance takes no
  ``x_self_cond`` and returns no x_start, so its ``sample()`` raises ``TypeError``;
- ``karras_continuous_noise``: ElucidatedDiffusion asserts ``net.random_or_learned_sinusoidal_cond``,
  which KarrasUnet lacks (``AttributeError``), though KarrasUnet takes continuous noise levels
  (MPFourierEmbedding): the attribute set on the reference's KarrasUnet class (True);
- ``guided_trainer_version``: guided_diffusion.Trainer.save writes ``__version__``, which that module
  never imports (``NameError`` on every save): the package's version set on the module.
"""

import functools


def fixed_weighted_p_mean_variance(self, *, x, t, clip_denoised, model_output = None, **kwargs):
    """The reference's WeightedObjectiveGaussianDiffusion.p_mean_variance, line for line, with the
    two fixes its sample() needs: accept (ignore) x_self_cond; return the weighted x_start too."""
    import torch
    model_output = self.model(x, t)
    pred_noise, pred_x_start, weights = model_output.split(self.split_dims, dim = 1)
    normalized_weights = weights.softmax(dim = 1)
    x_start_from_noise = self.predict_start_from_noise(x, t = t, noise = pred_noise)
    x_starts = torch.stack((x_start_from_noise, pred_x_start), dim = 1)
    weighted_x_start = torch.einsum('b j h w, b j c h w -> b c h w', normalized_weights, x_starts)
    if clip_denoised:
        weighted_x_start.clamp_(-1., 1.)
    model_mean, model_variance, model_log_variance = self.q_posterior(weighted_x_start, x, t)
    return model_mean, model_variance, model_log_variance, weighted_x_start


def fix_targets(name):
    """[(object, attribute, fixed value), ...] of the upstream fix ``name``."""
    if name == 'learned_partial':
        import denoising_diffusion_pytorch.learned_gaussian_diffusion as lgd
        import denoising_diffusion_pytorch.denoising_diffusion_pytorch as ddp_mod
        return [(lgd, 'partial', functools.partial), (lgd, 'identity', ddp_mod.identity)]
    if name == 'weighted_p_mean_variance':
        import denoising_diffusion_pytorch.weighted_objective_gaussian_diffusion as wog
        return [(wog.WeightedObjectiveGaussianDiffusion, 'p_mean_variance', fixed_weighted_p_mean_variance)]
    if name == 'karras_continuous_noise':
        import denoising_diffusion_pytorch.karras_unet as ku
        return [(ku.KarrasUnet, 'random_or_learned_sinusoidal_cond', True)]
    if name == 'guided_trainer_version':
        import denoising_diffusion_pytorch.guided_diffusion as gd
        from denoising_diffusion_pytorch.version import __version__
        return [(gd, '__version__', __version__)]
    raise ValueError(f'unknown upstream fix {name!r}')
