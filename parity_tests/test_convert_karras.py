"""Bare Karras networks (issue 15) through ``ms-ddpm convert`` and ``ms-ddpm verify``: a
KarrasUnet state dict (torch file or safetensors) is recognised from its keys
(``input_block.weight``, rank 4), its architecture inferred (dim, channels, self-conditioning,
fourier_dim, num_classes, num_blocks_per_stage, num_downsamples, dim_max, attn_res,
attn_dim_head), ``image_size`` named in one line when not given, converted, verified against the
reference (every tensor, every layer, the network at several noise levels, eval mode) and
converted back to PyTorch bit-exactly.

Real reference networks (dim 8, 8x8 images), converted and verified in-process, PyNative."""

import pytest

from weight_convert import ConvertError, convert
from weight_convert.converter import read_weights
from weight_convert.families import KIND_FAMILY, NETWORK_KINDS, PROCESS_KINDS, detect_kind
from ms_ddpm_tools.convert import main as cli_main

torch = pytest.importorskip('torch')
karras = pytest.importorskip('denoising_diffusion_pytorch.karras_unet')

# name -> (reference KarrasUnet arguments, what the inferred config must say)
NETS = {
    'classes-attn': (dict(image_size=8, dim=8, dim_max=16, num_downsamples=1, num_blocks_per_stage=1, attn_res=(4,),
                          channels=3, num_classes=5, attn_dim_head=4, fourier_dim=8),
                     dict(dim=8, dim_max=16, num_downsamples=1, num_blocks_per_stage=1, attn_res=[4], channels=3,
                          num_classes=5, attn_dim_head=4, fourier_dim=8, self_condition=False)),
    'selfcond-capped': (dict(image_size=8, dim=8, dim_max=8, num_downsamples=1, num_blocks_per_stage=2,
                             attn_res=(8, 4), channels=1, self_condition=True, attn_dim_head=4),
                        dict(dim=8, dim_max=8, num_downsamples=1, num_blocks_per_stage=2, attn_res=[8, 4], channels=1,
                             num_classes=None, self_condition=True, attn_dim_head=4)),
}
VERIFY = dict(image_size=8, batch=1, graph=False, progress=False, log=lambda *a: None)


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    from safetensors.torch import save_file
    d = tmp_path_factory.mktemp('karras')
    out = {}
    for name, (kw, _) in NETS.items():
        torch.manual_seed(0)
        sd = karras.KarrasUnet(**kw).state_dict()
        for k in sd:        # the Gains start at 0 (the output would be 0): trained-like values
            if k.endswith('.gain'):
                sd[k] = torch.tensor(0.5 + torch.rand(()).item())
        torch.save(sd, d / f'{name}.pt')
        save_file({k: v.contiguous() for k, v in sd.items()}, str(d / f'{name}.safetensors'))
        out[name] = d / f'{name}.pt'
    out['safetensors'] = d / 'classes-attn.safetensors'
    return out


@pytest.fixture(scope='module')
def converted(files, tmp_path_factory):
    """name -> (reference .pt, converted .ckpt, back to .pt, stored config), via the command."""
    d = tmp_path_factory.mktemp('karras-converted')
    out = {}
    for name in NETS:
        dst, back = d / f'{name}.ckpt', d / f'{name}-back.pt'
        assert cli_main([str(files[name]), str(dst), '--image-size', '8', '-q']) == 0
        assert cli_main([str(dst), str(back), '-q']) == 0
        out[name] = (files[name], dst, back, read_weights(dst).stored_config)
    return out


def test_rows():
    assert 'KarrasUnet' in NETWORK_KINDS and 'KarrasUnet' not in PROCESS_KINDS
    assert KIND_FAMILY['KarrasUnet'].verify == 'network'


@pytest.mark.parametrize('name', list(NETS) + ['safetensors'])
def test_recognised(files, name):
    src = read_weights(files[name])
    assert src.kind == 'KarrasUnet'
    assert detect_kind({k: e for k, e in src.entries.items()}).kind == 'KarrasUnet'


@pytest.mark.parametrize('name', list(NETS))
def test_config_inferred_and_round_trip_bit_exact(converted, name):
    src, dst, back, cfg = converted[name]
    assert cfg['model'] == 'KarrasUnet' and cfg['diffusion'] is None
    for k, v in NETS[name][1].items():
        assert cfg['unet'][k] == v, (k, cfg['unet'][k], v)
    a, b = torch.load(src, weights_only=True), torch.load(back, weights_only=True)
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def test_image_size_not_inferable_one_line(files, tmp_path, capsys):
    with pytest.raises(ConvertError) as e:
        convert(files['safetensors'], tmp_path / 'x.ckpt')
    msg = str(e.value)
    assert '\n' not in msg and 'image_size' in msg and '--image-size' in msg
    assert cli_main([str(files['safetensors']), str(tmp_path / 'x.ckpt'), '-q']) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'image_size' in err
    assert not (tmp_path / 'x.ckpt').exists()


@pytest.mark.parametrize('name', ['classes-attn'])      # selfcond-capped: the command test below
def test_verify_against_passes(converted, name):
    """``ms-ddpm verify REF --against CONVERTED``: every tensor, every layer, the network at
    several noise levels (eval mode in both frameworks)."""
    from ms_ddpm_tools.verify.engine import verify
    src, dst, _, _ = converted[name]
    rep = verify(str(src), against=str(dst), **VERIFY)
    names = [r['name'] for r in rep['results']]
    assert any(n.startswith('unet/') for n in names) and any(n.startswith('layer/') for n in names)
    assert any(n.startswith('weight/') for n in names)
    assert not any(n.startswith(('loss/', 'sample/')) for n in names)
    assert rep['verdict']['ok'], rep['verdict']['failed_names']


def test_verify_command_writes_its_report(converted, tmp_path):
    """The command, in-process, on the converted file (--against): exit 0, the report written
    (it names the network alone: there is no diffusion process)."""
    from ms_ddpm_tools.verify.command import main as verify_main
    src, dst, _, _ = converted['selfcond-capped']
    out = tmp_path / 'v'
    assert verify_main([str(src), '--against', str(dst), '--image-size', '8', '--quiet', '--no-graph', '--batch', '1',
                        '--out', str(out)]) == 0
    assert '(the network alone)' in (out / 'report.md').read_text()


# --- KarrasUnet1D / KarrasUnet3D (rank-3 / rank-5 convs) ---------------------------------------
# name -> (reference module, class, arguments, --config the command gets, what the inferred config must say)
NETS_ND = {
    '1d-classes-selfcond': ('karras_unet_1d', 'KarrasUnet1D',
                            dict(seq_len=16, dim=4, dim_max=8, channels=2, num_downsamples=1, num_blocks_per_stage=1,
                                 attn_res=(8,), attn_dim_head=4, num_classes=3, self_condition=True),
                            {'seq_len': 16},
                            dict(dim=4, dim_max=8, channels=2, num_downsamples=1, num_blocks_per_stage=1, attn_res=[8],
                                 attn_dim_head=4, num_classes=3, self_condition=True, seq_len=16)),
    '3d-factorized-types-blocks': ('karras_unet_3d', 'KarrasUnet3D',
                                   dict(image_size=8, frames=2, dim=8, dim_max=16, channels=1, num_downsamples=1,
                                        num_blocks_per_stage=(1, 2), downsample_types=('image',), attn_res=(4,),
                                        attn_dim_head=8, factorize_space_time_attn=True),
                                   {'image_size': 8, 'frames': 2, 'downsample_types': ['image']},
                                   dict(dim=8, dim_max=16, channels=1, num_downsamples=1, num_blocks_per_stage=[1, 2],
                                        attn_res=[4], attn_dim_head=8, factorize_space_time_attn=True, frames=2,
                                        image_size=8, downsample_types=['image'], self_condition=False)),
}


@pytest.fixture(scope='module')
def converted_nd(tmp_path_factory):
    """name -> (reference .pt, converted .ckpt, back to .pt, stored config), via the command."""
    import importlib
    import json
    d = tmp_path_factory.mktemp('karras-nd')
    out = {}
    for name, (module, cls, kw, given, _) in NETS_ND.items():
        torch.manual_seed(0)
        sd = getattr(importlib.import_module(f'denoising_diffusion_pytorch.{module}'), cls)(**kw).state_dict()
        for k in sd:        # trained-like gains (they start at 0)
            if k.endswith('.gain'):
                sd[k] = torch.tensor(0.5 + torch.rand(()).item())
        src, dst, back = d / f'{name}.pt', d / f'{name}.ckpt', d / f'{name}-back.pt'
        torch.save(sd, src)
        assert cli_main([str(src), str(dst), '--config', json.dumps(given), '-q']) == 0
        assert cli_main([str(dst), str(back), '-q']) == 0
        out[name] = (src, dst, back, read_weights(dst).stored_config)
    return out


@pytest.mark.parametrize('name', list(NETS_ND))
def test_nd_recognised_inferred_round_trip_bit_exact(converted_nd, name):
    src, dst, back, cfg = converted_nd[name]
    cls = NETS_ND[name][1]
    assert read_weights(src).kind == cls and cls in NETWORK_KINDS and cls not in PROCESS_KINDS
    assert cfg['model'] == cls and cfg['diffusion'] is None
    for k, v in NETS_ND[name][4].items():
        assert cfg['unet'][k] == v, (k, cfg['unet'][k], v)
    a, b = torch.load(src, weights_only=True), torch.load(back, weights_only=True)
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


@pytest.mark.parametrize('name, missing', [('1d-classes-selfcond', 'seq_len'), ('3d-factorized-types-blocks', 'frames')])
def test_nd_not_inferable_one_line(converted_nd, tmp_path, capsys, name, missing):
    src = converted_nd[name][0]
    given = {k: v for k, v in NETS_ND[name][3].items() if k != missing}
    import json
    assert cli_main([str(src), str(tmp_path / 'x.ckpt'), '--config', json.dumps(given), '-q']) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and missing in err, err
    assert not (tmp_path / 'x.ckpt').exists()


@pytest.mark.parametrize('name', list(NETS_ND))
def test_nd_verify_against_passes(converted_nd, name):
    """Every tensor, every layer, the network at several noise levels (eval mode); 1D through
    --seq-length, 3D through --config."""
    import json
    from ms_ddpm_tools.verify.engine import verify
    src, dst, _, _ = converted_nd[name]
    given = NETS_ND[name][3]
    kw = dict(seq_length=given['seq_len']) if 'seq_len' in given else dict(config=json.dumps(given))
    rep = verify(str(src), against=str(dst), batch=1, graph=False, progress=False, log=lambda *a: None, **kw)
    names = [r['name'] for r in rep['results']]
    assert any(n.startswith('unet/') for n in names) and any(n.startswith('layer/') for n in names)
    assert rep['verdict']['ok'], rep['verdict']['failed_names']


# --- ElucidatedDiffusion(KarrasUnet) ---------------------------------------------------------
# The reference asserts net.random_or_learned_sinusoidal_cond, which KarrasUnet lacks
# (AttributeError); the twin accepts a net that takes continuous noise levels.  The reference is
# patched here alone (reference.upstream_fixes 'karras_continuous_noise', through monkeypatch).
ELUCIDATED_KARRAS = dict(image_size=8, dim=8, dim_max=16, channels=1, num_downsamples=1, num_blocks_per_stage=1,
                         attn_res=(4,), attn_dim_head=8, self_condition=True)


def _patched(monkeypatch):
    from reference.upstream_fixes import fix_targets
    for obj, name, value in fix_targets('karras_continuous_noise'):
        monkeypatch.setattr(obj, name, value, raising=False)


@pytest.fixture(scope='module')
def elucidated_karras(tmp_path_factory):
    ed = pytest.importorskip('denoising_diffusion_pytorch.elucidated_diffusion')
    d = tmp_path_factory.mktemp('elucidated-karras')
    mp = pytest.MonkeyPatch()
    try:
        _patched(mp)
        torch.manual_seed(0)
        sd = ed.ElucidatedDiffusion(karras.KarrasUnet(**ELUCIDATED_KARRAS), image_size=8, channels=1).state_dict()
    finally:
        mp.undo()
    for k in sd:
        if k.endswith('.gain'):
            sd[k] = torch.tensor(0.5 + torch.rand(()).item())
    src, dst, back = d / 'ek.pt', d / 'ek.ckpt', d / 'ek-back.pt'
    torch.save(sd, src)
    assert cli_main([str(src), str(dst), '--image-size', '8', '-q']) == 0
    assert cli_main([str(dst), str(back), '-q']) == 0
    return src, dst, back, read_weights(dst).stored_config


def test_elucidated_karras_reference_refuses_twin_accepts():
    """The reference's assert fails on a KarrasUnet (AttributeError); the twin builds it, and keeps
    the assert for a Unet without learned / random sinusoidal times."""
    import ms_ddpm
    from denoising_diffusion_pytorch.elucidated_diffusion import ElucidatedDiffusion as TorchElucidated
    from ms_ddpm.elucidated_diffusion import ElucidatedDiffusion
    from ms_ddpm.karras_unet import KarrasUnet
    with pytest.raises(AttributeError, match='random_or_learned_sinusoidal_cond'):
        TorchElucidated(karras.KarrasUnet(**ELUCIDATED_KARRAS), image_size=8, channels=1)
    ElucidatedDiffusion(KarrasUnet(**ELUCIDATED_KARRAS), image_size=8, channels=1)
    with pytest.raises(AssertionError):
        ElucidatedDiffusion(ms_ddpm.Unet(dim=4, dim_mults=(1,), channels=1), image_size=8, channels=1)


def test_elucidated_karras_recognised_inferred_round_trip(elucidated_karras, tmp_path, capsys):
    src, dst, back, cfg = elucidated_karras
    assert read_weights(src).kind == 'ElucidatedDiffusion(KarrasUnet)' in PROCESS_KINDS
    assert cfg['unet']['attn_res'] == [4] and cfg['unet']['image_size'] == 8 and cfg['unet']['self_condition']
    assert cfg['diffusion']['image_size'] == 8 and cfg['diffusion']['channels'] == 1
    a, b = torch.load(src, weights_only=True), torch.load(back, weights_only=True)
    assert list(a) == list(b) and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)
    assert cli_main([str(src), str(tmp_path / 'x.ckpt'), '-q']) != 0       # image_size: one line
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'image_size' in err and not (tmp_path / 'x.ckpt').exists()


def test_elucidated_karras_verify_against_passes(elucidated_karras):
    """The network at 5 noise levels (its layers: the bare KarrasUnet tests above), the loss with
    injected sigma / noise / self-cond coin, the Heun sampler (2 steps) with shared noise; the
    reference patched for the run only."""
    from ms_ddpm_tools.verify.engine import verify
    src, dst, _, _ = elucidated_karras
    rep = verify(str(src), against=str(dst), image_size=8, batch=1, sample_batch=1, sampling_timesteps=2, graph=False,
                 parts=('weights', 'unet', 'loss', 'sample'), progress=False, log=lambda *a: None)
    names = [r['name'] for r in rep['results']]
    assert 'loss/ElucidatedDiffusion(KarrasUnet)' in names and 'sample/final' in names
    assert any('random_or_learned_sinusoidal_cond' in n for n in rep['reference_notes'])
    assert rep['verdict']['ok'], rep['verdict']['failed_names']
    assert not hasattr(karras.KarrasUnet, 'random_or_learned_sinusoidal_cond')      # restored
