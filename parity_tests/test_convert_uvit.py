"""simple_diffusion's UViT (bare) and GaussianDiffusion(UViT) (issue 15) through ``ms-ddpm convert``
and ``ms-ddpm verify``: a state dict of either (torch file or safetensors) is recognised from its
keys (UViT's Upsample convs ``ups.0.0.net.0.*``; the process: the same under ``model.``, no
schedule buffers), the UViT's architecture inferred (dim, init_dim, channels, patch_size /
dual_patchnorm, dim_mults, downsample_factor, vit_depth, attn heads / dim_head, ff_mult,
learned_sinusoidal_dim, out_dim), converted to MindSpore and back bit-exactly, and verified
against the reference: the bare network's forward at 5 log-SNRs (every layer, eval mode), the
process's network, loss (its ``uniform_`` times and noise injected) and sampler (shared noise).
Bad input: missing keys, wrong shapes, a shape the inference cannot read, image_size not given,
an image side the network cannot take: one line each, exit 1, nothing written.

Real reference networks (dim 8, 8x8 images), weights perturbed by 0.3 x N(0, 1) (the zero-initialised
FeedForward scale/shift and Upsample biases carry values), converted and verified in-process,
PyNative."""

import json

import pytest

from weight_convert import CheckpointMismatchError, ConvertError, convert
from weight_convert.converter import read_weights
from weight_convert.families import KIND_FAMILY, NETWORK_KINDS, PROCESS_KINDS, detect_kind
from ms_ddpm_tools.convert import main as cli_main
from ms_ddpm_tools.exits import EXIT_ERROR, EXIT_OK

torch = pytest.importorskip('torch')
sd_mod = pytest.importorskip('denoising_diffusion_pytorch.simple_diffusion')

SIMPLE = 'simple_diffusion.GaussianDiffusion'
BASE = dict(dim=8, dim_mults=(1, 2), vit_depth=1, attn_dim_head=8, attn_heads=2, ff_mult=2, learned_sinusoidal_dim=8)
# name -> (UViT arguments, inside GaussianDiffusion(image_size=8)?, what the inferred config must say)
NETS = {
    'uvit': (BASE, False,
             dict(dim=8, init_dim=None, out_dim=None, dim_mults=[1, 2], downsample_factor=2, channels=3, vit_depth=1,
                  attn_dim_head=8, attn_heads=2, ff_mult=2, learned_sinusoidal_dim=8, patch_size=1,
                  dual_patchnorm=False)),
    'gd-patch2-dual-factors-init12-ch1': (
        dict(BASE, patch_size=2, dual_patchnorm=True, downsample_factor=(1, 2), channels=1, init_dim=12), True,
        dict(dim=8, init_dim=12, out_dim=None, dim_mults=[1, 2], downsample_factor=[1, 2], channels=1, patch_size=2,
             dual_patchnorm=True, vit_depth=1, attn_dim_head=8, attn_heads=2)),
    # inference only (no verify run): the patch conv, out_dim, a deeper ViT with other heads / ff_mult, no ViT
    'uvit-patch2-out5-ch1-depth2': (
        dict(BASE, patch_size=2, out_dim=5, channels=1, vit_depth=2, attn_heads=4, attn_dim_head=4, ff_mult=3,
             learned_sinusoidal_dim=12, dim_mults=(1, 2, 2)), False,
        dict(patch_size=2, dual_patchnorm=False, out_dim=5, channels=1, vit_depth=2, attn_heads=4, attn_dim_head=4,
             ff_mult=3, learned_sinusoidal_dim=12, dim_mults=[1, 2, 2])),
    'uvit-depth0': (dict(BASE, vit_depth=0), False, dict(vit_depth=0, attn_heads=4, attn_dim_head=32, ff_mult=4)),
}
VERIFIED = ('uvit', 'gd-patch2-dual-factors-init12-ch1')


def _reference(kw, process):
    torch.manual_seed(0)
    net = sd_mod.UViT(**kw)
    m = sd_mod.GaussianDiffusion(net, image_size=8, channels=kw.get('channels', 3)) if process else net
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return m.state_dict()


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
    """name -> (reference .pt, converted .ckpt, back to .pt, stored config, reference .safetensors,
    .safetensors -> .ckpt -> .safetensors); the verified ones via the command."""
    from safetensors.torch import save_file
    d = tmp_path_factory.mktemp('uvit')
    out = {}
    for name, (kw, process, _) in NETS.items():
        sd = _reference(kw, process)
        src, dst, back = d / f'{name}.pt', d / f'{name}.ckpt', d / f'{name}-back.pt'
        st, st_ckpt, st_back = d / f'{name}.safetensors', d / f'{name}-st.ckpt', d / f'{name}-back.safetensors'
        torch.save(sd, src)
        save_file({k: v.contiguous() for k, v in sd.items()}, str(st))
        size = ['--image-size', '8'] if process else []
        if name in VERIFIED:
            assert cli_main([str(src), str(dst), *size, '-q']) == EXIT_OK
            assert cli_main([str(dst), str(back), '-q']) == EXIT_OK
        else:
            convert(src, dst, config={'image_size': 8} if process else None)
            convert(dst, back)
        convert(st, st_ckpt, config={'image_size': 8} if process else None)
        convert(st_ckpt, st_back)
        out[name] = (src, dst, back, read_weights(dst).stored_config, st, st_back)
    return out


def test_rows():
    assert 'UViT' in NETWORK_KINDS and 'UViT' not in PROCESS_KINDS and KIND_FAMILY['UViT'].verify == 'network'
    assert SIMPLE in PROCESS_KINDS and KIND_FAMILY[SIMPLE].verify == 'process'
    assert KIND_FAMILY[SIMPLE].network == 'UViT' and KIND_FAMILY[SIMPLE].prefix == 'model.'


@pytest.mark.parametrize('name', list(NETS))
def test_recognised_not_taken_for_a_unet_or_continuous_time(converted, name):
    """A UViT is no Unet (it has init_conv / final_conv too), its process no ContinuousTime
    process (no buffers, time_mlp.0.weights too): the Upsample convs decide."""
    want = SIMPLE if NETS[name][1] else 'UViT'
    for f in (converted[name][0], converted[name][4]):
        src = read_weights(f)
        assert src.kind == want
        assert detect_kind(dict(src.entries)).kind == want


@pytest.mark.parametrize('name', list(NETS))
def test_config_inferred_and_round_trips_bit_exact(converted, name):
    from safetensors.torch import load_file
    src, dst, back, cfg, st, st_back = converted[name]
    process = NETS[name][1]
    assert cfg['model'] == (SIMPLE if process else 'UViT')
    for k, v in NETS[name][2].items():
        assert cfg['unet'][k] == v, (k, cfg['unet'][k], v)
    if process:
        assert cfg['diffusion']['image_size'] == 8 and cfg['diffusion']['channels'] == cfg['unet']['channels']
        assert {'pred_objective', 'noise_d', 'num_sample_steps'} <= set(cfg['notes']['not_inferred'])
    else:
        assert cfg['diffusion'] is None
    if cfg['unet']['vit_depth'] == 0:
        assert {'attn_heads', 'attn_dim_head', 'ff_mult'} <= set(cfg['notes']['not_inferred'])
    for a, b in ((torch.load(src, weights_only=True), torch.load(back, weights_only=True)),
                 (load_file(str(st)), load_file(str(st_back)))):
        assert sorted(a) == sorted(b)
        for k in a:
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    assert list(torch.load(src, weights_only=True)) == list(torch.load(back, weights_only=True))    # key order


# --- bad input: one line each, exit 1, nothing written --------------------------------------------

def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    lines = [x for x in err.splitlines() if 'error' in x]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def test_process_image_size_not_inferable_one_line(converted, tmp_path, capsys):
    src = converted['gd-patch2-dual-factors-init12-ch1'][0]
    assert cli_main([str(src), str(tmp_path / 'x.ckpt'), '-q']) == EXIT_ERROR
    _one_line_error(capsys, 'image_size', '--image-size', SIMPLE)
    assert not list(tmp_path.iterdir())


def test_missing_and_misshaped_keys_named(converted, tmp_path, capsys):
    """Keys the inference does not read: the strict check names every missing and mis-shaped one."""
    sd = torch.load(converted['uvit'][0], weights_only=True)
    del sd['ups.1.2.block2.norm.g'], sd['vit.layers.0.1.proj_out.1.weight']
    sd['vit.layers.0.0.to_out.weight'] = torch.zeros(16, 12)
    bad = tmp_path / 'bad.pt'
    torch.save(sd, bad)
    with pytest.raises(CheckpointMismatchError) as e:
        convert(bad, tmp_path / 'x.ckpt')
    msg = str(e.value)
    assert sorted(e.value.missing) == ['ups.1.2.block2.norm.g', 'vit.layers.0.1.proj_out.1.weight']
    assert 'vit.layers.0.0.to_out.weight: (16, 12) vs (16, 16)' in msg
    assert cli_main([str(bad), str(tmp_path / 'x.ckpt'), '-q']) == EXIT_ERROR
    capsys.readouterr()
    assert not (tmp_path / 'x.ckpt').exists()


def test_shape_the_inference_cannot_read_one_line(converted, tmp_path, capsys):
    """A Downsample conv whose inputs are no dim_in x factor^2: named, with how to go on (--config)."""
    sd = torch.load(converted['uvit'][0], weights_only=True)
    sd['downs.0.3.1.weight'] = torch.zeros(8, 12, 1, 1)
    bad = tmp_path / 'bad.pt'
    torch.save(sd, bad)
    assert cli_main([str(bad), str(tmp_path / 'x.ckpt'), '-q']) == EXIT_ERROR
    _one_line_error(capsys, 'downs.0.3.1.weight', '(8, 12, 1, 1)', 'factor', '--config')
    assert not (tmp_path / 'x.ckpt').exists()


def test_verify_image_side_the_network_cannot_take_one_line(converted, tmp_path, capsys):
    from ms_ddpm_tools.verify.command import main as verify_main
    assert verify_main([str(converted['uvit'][0]), '--image-size', '6', '--quiet', '--out', str(tmp_path / 'v')]) \
        == EXIT_ERROR
    _one_line_error(capsys, '--image-size 6', 'divisible by 4')
    assert not (tmp_path / 'v').exists()


# --- verify -------------------------------------------------------------------------------------

def _verify_command(converted, name, tmp_path, *extra):
    from ms_ddpm_tools.verify.command import main as verify_main
    src, dst = converted[name][:2]
    out = tmp_path / 'v'
    assert verify_main([str(src), '--against', str(dst), '--quiet', '--no-graph', '--batch', '1', '--out', str(out),
                        *extra]) == EXIT_OK
    rep = json.loads((out / 'verify.json').read_text())
    assert rep['verdict']['ok'] and rep['verdict']['differing_tensor_count'] == 0
    return rep, (out / 'report.md').read_text()


def test_verify_uvit_command_writes_its_report(converted, tmp_path):
    """The bare network: every tensor of the converted file, every layer, its forward at 5 log-SNRs
    (eval mode): exit 0, the report names the network alone."""
    rep, md = _verify_command(converted, 'uvit', tmp_path)
    names = [r['name'] for r in rep['results']]
    assert [n for n in names if n.startswith('unet/')] == [f'unet/t={t}' for t in (-8.0, -3.0, 0.0, 3.0, 8.0)]
    assert any(n.startswith('layer/vit.layers.0.1.to_scale_shift') for n in names)
    assert any(n.startswith('weight/') for n in names)
    assert not any(n.startswith(('loss/', 'sample/')) for n in names)
    assert rep['config']['image_size'] == 8                  # the smallest side >= 8 it takes
    assert '(the network alone)' in md


def test_verify_process_command_writes_its_report(converted, tmp_path):
    """GaussianDiffusion(UViT): the network (every layer, 5 log-SNRs), the loss with its uniform_
    times and noise injected, the sampler (2 steps) with every randn shared: exit 0, report written."""
    rep, md = _verify_command(converted, 'gd-patch2-dual-factors-init12-ch1', tmp_path, '--image-size', '8',
                              '--sampling-timesteps', '2', '--sample-batch', '2')
    names = [r['name'] for r in rep['results']]
    assert f'loss/{SIMPLE}' in names and 'sample/final' in names and 'layer/init_conv.1' in names
    assert rep['sampling']['steps'] == 2
    assert f'`{SIMPLE}(' in md and (tmp_path / 'v' / 'samples.png').exists()


def test_convert_verify_uvit(converted, tmp_path, capsys):
    """``ms-ddpm convert --verify`` on a bare UViT (verify picks the images' side: no probe size)."""
    assert cli_main([str(converted['uvit'][0]), str(tmp_path / 'u.ckpt'), '--verify', '-q']) == EXIT_OK
    assert 'verify: PASS' in capsys.readouterr().out


def test_building_the_twin_runs_no_kernel():
    """convert builds the twin (its parameter names and shapes) before ``convert --verify`` sets the
    device; a kernel run then (Upsample / FeedForward zeros were ops.zeros) makes ms.set_device
    raise.  In a fresh process (this one's device is set by conftest)."""
    import os
    import subprocess
    import sys
    code = ("from weight_convert.converter import target_spec\n"
            "target_spec({'model': 'simple_diffusion.GaussianDiffusion', 'unet': dict(dim=8, dim_mults=[1, 2], "
            "vit_depth=1), 'diffusion': {'image_size': 8}})\n"
            "import mindspore as ms\nms.set_device('CPU')\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get('PYTHONPATH', ''))
    r = subprocess.run([sys.executable, '-c', code], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
