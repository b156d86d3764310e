"""The converter, format by format and direction by direction: bit-identical round trips
(fp32, fp16, bf16), files other tools read, Trainer checkpoints in and out, one-call loading."""

import json
import os

import numpy as np
import pytest

import mindspore as ms

from weight_convert import convert, load_model, read_weights
from ms_ddpm_tools.convert import main as cli_main

torch = pytest.importorskip('torch')
ddp = pytest.importorskip('denoising_diffusion_pytorch')

CFG = dict(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8)
DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}


def _unet(seed=0, **kw):
    torch.manual_seed(seed)
    return ddp.Unet(**dict(CFG, **kw)).eval()


def _bits(t):
    """A tensor's exact bit pattern (so -0.0 vs 0.0 and NaN payloads count)."""
    view = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}.get(t.dtype)
    return (t.view(view) if view else t).contiguous().numpy()


def assert_bit_identical(a, b):
    assert list(a) == list(b) or sorted(a) == sorted(b), f'key sets differ: {set(a) ^ set(b)}'
    for k in a:
        assert a[k].dtype == b[k].dtype, f'{k}: dtype {a[k].dtype} -> {b[k].dtype}'
        assert tuple(a[k].shape) == tuple(b[k].shape), k
        assert np.array_equal(_bits(a[k]), _bits(b[k])), f'{k}: values changed'


@pytest.fixture(scope='module')
def unet_sd():
    sd = _unet().state_dict()
    # make the bits interesting: negative zero and values that are not representable in fp16/bf16
    sd['final_conv.bias'][0] = -0.0
    return sd


@pytest.mark.parametrize('dtype', list(DTYPES))
@pytest.mark.parametrize('via', ['.ckpt', '.safetensors'])
def test_round_trip_torch_ms_torch_is_bit_identical(tmp_path, unet_sd, dtype, via):
    sd = {k: v.to(DTYPES[dtype]) for k, v in unet_sd.items()}
    src = tmp_path / 'unet.pt'
    torch.save(sd, src)
    mid, back = tmp_path / f'unet{via}', tmp_path / 'back.pth'
    convert(src, mid)
    convert(mid, back)
    sd2 = torch.load(back, weights_only=True)
    assert_bit_identical(sd, sd2)
    assert list(sd2) == list(sd), 'key order should follow the network (= the reference state dict order)'
    _unet(seed=1).load_state_dict(sd2, strict=True)     # the reference takes it strictly


@pytest.mark.parametrize('ext', ['.ckpt', '.safetensors'])
def test_kernel_copy_and_plain_writes_give_the_same_file(tmp_path, unet_sd, ext, monkeypatch):
    """Tensor bytes go from the source file to the output with os.copy_file_range where the
    tensors are located in the file; without it (or when it fails half-way) plain writes
    produce the identical file."""
    import ms_ddpm.io.checkpoint as wf
    from weight_convert.converter import read_weights
    src = tmp_path / 'unet.pt'
    torch.save(unet_sd, src)
    assert all(e.file_range is not None for e in read_weights(src).entries.values())
    for d in ('kernel', 'fallback', 'plain'):
        (tmp_path / d).mkdir()
    convert(src, tmp_path / 'kernel' / f'out{ext}')
    calls = []

    def failing(*a):
        calls.append(a)
        if len(calls) > 3:
            raise OSError(18, 'Invalid cross-device link (simulated)')
        return real(*a)
    real = os.copy_file_range
    monkeypatch.setattr(wf.os, 'copy_file_range', failing)
    convert(src, tmp_path / 'fallback' / f'out{ext}')
    assert len(calls) == 4
    monkeypatch.delattr(wf.os, 'copy_file_range')
    convert(src, tmp_path / 'plain' / f'out{ext}')
    want = (tmp_path / 'kernel' / f'out{ext}').read_bytes()
    assert (tmp_path / 'fallback' / f'out{ext}').read_bytes() == want
    assert (tmp_path / 'plain' / f'out{ext}').read_bytes() == want


def test_ms_formats_copy_from_each_other_exactly(tmp_path, unet_sd):
    """safetensors and .ckpt sources are located in their files too (kernel copies);
    .ckpt -> .safetensors -> .ckpt reproduces the first .ckpt's tensors byte for byte (the
    config entry after them names each file's own source)."""
    from weight_convert.converter import read_weights
    sd = {k: v.to(torch.bfloat16) if k.endswith('weight') else v for k, v in unet_sd.items()}
    torch.save(sd, tmp_path / 'unet.pt')
    convert(tmp_path / 'unet.pt', tmp_path / 'a.ckpt')
    convert(tmp_path / 'a.ckpt', tmp_path / 'b.safetensors')
    convert(tmp_path / 'b.safetensors', tmp_path / 'c.ckpt')
    for f in ('a.ckpt', 'b.safetensors'):
        assert all(e.file_range is not None for e in read_weights(tmp_path / f).entries.values())
    a, c = ((tmp_path / f).read_bytes() for f in ('a.ckpt', 'c.ckpt'))
    tensors_end = a.rfind(b'ms_ddpm_config') - 8        # the string entry's message starts before its tag
    assert tensors_end > 0 and c.rfind(b'ms_ddpm_config') - 8 == tensors_end
    assert c[:tensors_end] == a[:tensors_end]


def test_legacy_torch_format(tmp_path, unet_sd):
    """torch.save(..., _use_new_zipfile_serialization=False): not memory-mappable, read all the same."""
    torch.save(unet_sd, tmp_path / 'legacy.pt', _use_new_zipfile_serialization=False)
    convert(tmp_path / 'legacy.pt', tmp_path / 'unet.safetensors')
    convert(tmp_path / 'unet.safetensors', tmp_path / 'back.pt')
    assert_bit_identical(unet_sd, torch.load(tmp_path / 'back.pt', weights_only=True))


def test_ms_checkpoint_is_native_mindspore(tmp_path, unet_sd):
    """MindSpore's own loader reads the .ckpt: names, shapes, bf16 kept as ms.bfloat16."""
    src = tmp_path / 'unet.pt'
    sd = {k: v.to(torch.bfloat16) for k, v in unet_sd.items()}
    torch.save(sd, src)
    convert(src, tmp_path / 'unet.ckpt')
    params = ms.load_checkpoint(str(tmp_path / 'unet.ckpt'), crc_check=True)
    assert json.loads(params.pop('ms_ddpm_config'))['model'] == 'Unet'   # the config, as a string entry
    assert sorted(params) == sorted(sd)
    p = params['init_conv.weight']
    assert p.dtype == ms.bfloat16 and tuple(p.shape) == tuple(sd['init_conv.weight'].shape)
    assert np.array_equal(p.astype(ms.float32).asnumpy(), sd['init_conv.weight'].float().numpy())


@pytest.mark.parametrize('crc_check', [False, True])
def test_reads_checkpoints_written_by_mindspore(tmp_path, unet_sd, crc_check):
    """A .ckpt from mindspore.save_checkpoint (of an ms_ddpm network, bf16 values included)
    converts to the same bits."""
    import ms_ddpm
    from weight_convert import load_torch_state_dict
    net = ms_ddpm.Unet(**CFG)
    load_torch_state_dict(net, unet_sd)
    params = [{'name': n, 'data': p.value().astype(ms.bfloat16) if 'weight' in n else p.value()}
              for n, p in net.parameters_and_names()]
    ms.save_checkpoint(params, str(tmp_path / 'ms.ckpt'), crc_check=crc_check)
    convert(tmp_path / 'ms.ckpt', tmp_path / 'back.pt')
    want = {k: v.to(torch.bfloat16) if 'weight' in k else v for k, v in unet_sd.items()}
    assert_bit_identical(want, torch.load(tmp_path / 'back.pt', weights_only=True))


def test_ckpt_framing_is_protobuf_serialization():
    """write_ckpt frames messages by hand; the bytes equal Checkpoint.SerializeToString()."""
    from ms_ddpm.io.checkpoint import _checkpoint_pb2, ckpt_slice_prefix
    Checkpoint = _checkpoint_pb2()
    for name, dims, n in [('a', [3, 2], 24), ('downs.0.0.block1.proj.weight', [64, 64, 3, 3], 64 * 64 * 9 * 4),
                          ('scalar', [], 4), ('empty', [0], 0), ('big', [1 << 22], 1 << 24)]:
        data = bytes(range(256)) * (n // 256) + bytes(n % 256)
        msg = Checkpoint()
        v = msg.value.add()
        v.tag, v.tensor.tensor_type, v.tensor.tensor_content = name, 'Float32', data
        v.tensor.dims.extend(dims)
        assert ckpt_slice_prefix(name, dims, 'Float32', n) + data == msg.SerializeToString(), name


def test_safetensors_output_is_standard(tmp_path, unet_sd):
    """The safetensors package reads ours (bf16 natively, as BF16), and we read its files."""
    from safetensors.torch import load_file, save_file
    sd = {k: v.to(torch.bfloat16) if 'weight' in k else v for k, v in unet_sd.items()}
    torch.save(sd, tmp_path / 'unet.pt')
    convert(tmp_path / 'unet.pt', tmp_path / 'unet.safetensors')
    assert_bit_identical(sd, load_file(str(tmp_path / 'unet.safetensors')))
    ms_params = ms.load_checkpoint(str(tmp_path / 'unet.safetensors'), format='safetensors')   # MindSpore too
    assert ms_params['init_conv.weight'].dtype == ms.bfloat16 and ms_params['init_conv.bias'].dtype == ms.float32
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / 'theirs.safetensors'))
    convert(tmp_path / 'theirs.safetensors', tmp_path / 'back.pt')
    assert_bit_identical(sd, torch.load(tmp_path / 'back.pt', weights_only=True))


def test_load_model_one_call_matches_reference(tmp_path, unet_sd):
    torch.save(unet_sd, tmp_path / 'unet.pt')
    convert(tmp_path / 'unet.pt', tmp_path / 'unet.ckpt')
    cfg = json.loads((tmp_path / 'unet.ckpt.config.json').read_text())
    assert cfg['model'] == 'Unet' and cfg['unet']['dim'] == 8 and cfg['unet']['dim_mults'] == [1, 2]
    net = load_model(tmp_path / 'unet.ckpt')
    t = _unet(seed=1)
    t.load_state_dict(unet_sd)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    time = np.array([3, 500])
    with torch.no_grad():
        expected = t(torch.from_numpy(x), torch.from_numpy(time)).numpy()
    actual = net(ms.Tensor(x), ms.Tensor(time)).asnumpy()
    from parity.compare import assert_parity
    assert_parity('load_model(unet.ckpt)', expected, actual, 'unet')


@pytest.fixture(scope='module')
def trainer_setup(tmp_path_factory):
    """A reference Trainer (tiny GaussianDiffusion, 100 generated PNGs) and a real model-1.pt."""
    from PIL import Image
    root = tmp_path_factory.mktemp('trainer')
    images = root / 'images'
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(100):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(images / f'{i}.png')

    def make_trainer(seed):
        torch.manual_seed(seed)
        gd = ddp.GaussianDiffusion(ddp.Unet(**CFG), image_size=8, timesteps=10, objective='pred_noise',
                                   beta_schedule='cosine')
        return ddp.Trainer(gd, str(images), train_batch_size=16, calculate_fid=False,
                           results_folder=str(root / 'results'), save_and_sample_every=10**9)
    tr = make_trainer(0)
    tr.step = 7
    with torch.no_grad():      # make the EMA weights differ from the online ones
        for p in tr.ema.ema_model.parameters():
            p.mul_(0.5)
    tr.ema.initted.fill_(True)
    tr.save(1)
    return root, make_trainer, tr


def test_trainer_checkpoint_online_and_ema(tmp_path, trainer_setup):
    root, _, tr = trainer_setup
    ckpt = root / 'results' / 'model-1.pt'
    online = read_weights(ckpt)
    ema = read_weights(ckpt, ema=True)
    assert online.kind == ema.kind == 'GaussianDiffusion'
    assert online.info['trainer_step'] == 7 and online.info['reference_version'] == '2.3.4'
    assert ema.info['weights'] == 'ema'
    w = 'model.init_conv.weight'
    assert np.array_equal(online.entries[w].data, tr.model.state_dict()[w].numpy())
    assert np.array_equal(ema.entries[w].data, tr.ema.ema_model.state_dict()[w].numpy())
    convert(ckpt, tmp_path / 'ema.ckpt', ema=True, config={'image_size': 8})
    cfg = json.loads((tmp_path / 'ema.ckpt.config.json').read_text())
    d = cfg['diffusion']
    assert (d['timesteps'], d['objective'], d['beta_schedule'], d['image_size']) == (10, 'pred_noise', 'cosine', 8)
    assert cfg['source']['trainer_step'] == 7 and cfg['source']['weights'] == 'ema'
    net = load_model(tmp_path / 'ema.ckpt')
    import ms_ddpm
    assert isinstance(net, ms_ddpm.GaussianDiffusion) and net.objective == 'pred_noise'
    assert np.array_equal(dict(net.parameters_and_names())[w].asnumpy(), ema.entries[w].data)


def test_safetensors_carries_its_config(tmp_path, trainer_setup):
    """Without the .config.json beside it, a .safetensors written by convert still loads in one
    call (config in its metadata); a bare GaussianDiffusion without either needs image_size."""
    root, _, tr = trainer_setup
    convert(root / 'results' / 'model-1.pt', tmp_path / 'gd.safetensors', config={'image_size': 8})
    (tmp_path / 'gd.safetensors.config.json').unlink()
    net = load_model(tmp_path / 'gd.safetensors')
    assert net.image_size == (8, 8) and net.num_timesteps == 10
    from safetensors.torch import load_file, save_file
    save_file(load_file(str(tmp_path / 'gd.safetensors')), str(tmp_path / 'plain.safetensors'))
    from weight_convert import ConfigError
    with pytest.raises(ConfigError, match='image_size cannot be inferred'):
        load_model(tmp_path / 'plain.safetensors')
    assert load_model(tmp_path / 'plain.safetensors', config={'image_size': 8}).objective == 'pred_noise'


def test_ms_weights_to_trainer_checkpoint_that_trainer_load_accepts(tmp_path, trainer_setup):
    root, make_trainer, tr = trainer_setup
    ckpt = root / 'results' / 'model-1.pt'
    convert(ckpt, tmp_path / 'gd.ckpt', ema=True, config={'image_size': 8})
    out = root / 'results' / 'model-2.pt'
    assert cli_main([str(tmp_path / 'gd.ckpt'), str(out), '--trainer', '-q']) == 0
    fresh = make_trainer(seed=123)
    fresh.load(2)                       # the reference's own loader, unchanged
    want = tr.ema.ema_model.state_dict()
    for sd in (fresh.model.state_dict(), fresh.ema.ema_model.state_dict(), fresh.ema.online_model.state_dict()):
        assert_bit_identical(want, sd)
    assert fresh.step == 7 and bool(fresh.ema.initted) and int(fresh.ema.step) == 7


def test_bare_unet_to_trainer_checkpoint_computes_schedule_buffers(tmp_path, trainer_setup, unet_sd):
    root, make_trainer, _ = trainer_setup
    torch.save(unet_sd, tmp_path / 'unet.pt')
    out = root / 'results' / 'model-3.pt'
    assert cli_main([str(tmp_path / 'unet.pt'), str(out), '--trainer', '-q', '--step', '5', '--config',
                     '{"image_size": 8, "timesteps": 10, "objective": "pred_noise", "beta_schedule": "cosine"}']) == 0
    fresh = make_trainer(seed=5)
    fresh.load(3)
    ref = ddp.GaussianDiffusion(_unet(), image_size=8, timesteps=10, objective='pred_noise', beta_schedule='cosine')
    ref.model.load_state_dict(unet_sd)
    assert_bit_identical(ref.state_dict(), fresh.model.state_dict())
    assert fresh.step == 5


def test_cli_verify_prints_difference_and_passes(tmp_path, unet_sd, capsys):
    torch.save(unet_sd, tmp_path / 'unet.pt')
    rc = cli_main([str(tmp_path / 'unet.pt'), str(tmp_path / 'unet.safetensors'), '--verify'])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert 'rel_fro=' in out.out and 'verify: PASS' in out.out


def test_cli_verify_reverse_direction(tmp_path, unet_sd, capsys):
    """MindSpore -> PyTorch: the reference model is built from DST, the MindSpore one from SRC."""
    torch.save(unet_sd, tmp_path / 'unet.pt')
    convert(tmp_path / 'unet.pt', tmp_path / 'unet.ckpt')
    rc = cli_main([str(tmp_path / 'unet.ckpt'), str(tmp_path / 'torch_out.pt'), '--verify'])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert 'verify: PASS' in out.out


def test_cli_help_and_usage_errors(capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(['--help'])
    assert e.value.code == 0 and '--ema' in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        cli_main([])
    assert e.value.code == 2
    from ms_ddpm_tools.cli import main as ms_ddpm_main          # the `ms-ddpm convert` entry point
    assert ms_ddpm_main(['convert', '--help']) == 0               # the dispatcher returns argparse's exit code
    assert 'ms-ddpm convert' in capsys.readouterr().out
    assert ms_ddpm_main(['convert']) == 2
