"""ms_ddpm.Trainer / Dataset / EMA have the reference's arguments and defaults; FID without
local weights is reported and skipped (cheap tests: no training step is run)."""

import inspect

import pytest


def _params(fn):
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize('name', ['Trainer', 'Dataset'])
def test_same_arguments_and_defaults(name):
    import denoising_diffusion_pytorch.denoising_diffusion_pytorch as ref
    import ms_ddpm
    theirs = _params(getattr(ref, name).__init__)
    ours = _params(getattr(ms_ddpm, name).__init__)
    assert ours[:len(theirs)] == theirs                       # same names, kinds, defaults, order
    assert all(kind == inspect.Parameter.KEYWORD_ONLY for _, kind, _ in ours[len(theirs):])   # extras


def test_ema_same_arguments_and_defaults():
    from ema_pytorch import EMA
    import ms_ddpm
    theirs = dict((n, d) for n, _, d in _params(EMA.__init__))
    ours = dict((n, d) for n, _, d in _params(ms_ddpm.EMA.__init__))
    for n in ('model', 'ema_model', 'beta', 'update_after_step', 'update_every', 'inv_gamma', 'power', 'min_value',
              'param_or_buffer_names_no_ema', 'ignore_names', 'ignore_startswith_names', 'include_online_model'):
        assert ours[n] == theirs[n], n


def test_fid_without_weights_says_so_and_goes_on(tmp_path, monkeypatch):
    import ms_ddpm
    from parity.training import write_digits
    monkeypatch.delenv('MS_DDPM_FID_WEIGHTS', raising=False)
    folder = write_digits(tmp_path / 'digits', 100)
    md = ms_ddpm.GaussianDiffusion(ms_ddpm.Unet(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8, channels=1),
                                   image_size=8, timesteps=10, sampling_timesteps=5)
    said = []
    t = ms_ddpm.Trainer(md, str(folder), results_folder=str(tmp_path / 'r'), log=said.append)   # calculate_fid=True
    assert t.calculate_fid is False and t.fid_scorer is None
    assert any('FID' in s and 'not available offline' in s and '--fid-weights' in s for s in said), said
    said.clear()
    t = ms_ddpm.Trainer(md, str(folder), results_folder=str(tmp_path / 'r'), log=said.append,
                        fid_weights=str(tmp_path / 'missing.pth'))
    assert t.calculate_fid is False and any('does not exist' in s for s in said)
