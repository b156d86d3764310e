"""Bad input to the converter: each gets a clear error naming the file and the problem (no
traceback from deep inside a library), a malicious pickle never runs, and a failed
conversion leaves nothing at the destination (nor clobbers what was there)."""

import os
import pickle
import zipfile

import numpy as np
import pytest

from weight_convert import (CheckpointMismatchError, ConfigError, ConvertError, CorruptCheckpointError,
                            DestinationError, UnsafeCheckpointError, UnsupportedFormatError, convert)
from ms_ddpm_tools.convert import main as cli_main

torch = pytest.importorskip('torch')
ddp = pytest.importorskip('denoising_diffusion_pytorch')

CFG = dict(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8)


class Payload:
    """Unpickling this creates ``marker``: proof that code from the file ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, 'w'))


@pytest.fixture(scope='module')
def good(tmp_path_factory):
    d = tmp_path_factory.mktemp('good')
    torch.manual_seed(0)
    sd = ddp.Unet(**CFG).state_dict()
    torch.save(sd, d / 'unet.pt')          # no config beside it: everything is inferred
    (d / 'ms').mkdir()
    convert(d / 'unet.pt', d / 'ms' / 'unet.safetensors')
    convert(d / 'unet.pt', d / 'ms' / 'unet.ckpt')
    return d, sd


def _good(good, ext):
    return good[0] / 'unet.pt' if ext == '.pt' else good[0] / 'ms' / f'unet{ext}'


def _files(d):
    return sorted(p.name for p in d.iterdir())


@pytest.mark.parametrize('container', ['torch.save zip', 'plain pickle'])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, good, container):
    marker = tmp_path / 'PAYLOAD_RAN'
    evil = tmp_path / 'evil.pt'
    obj = dict(good[1], **{'init_conv.weight': Payload(marker)})
    if container == 'plain pickle':
        with open(evil, 'wb') as f:
            pickle.dump(obj, f, protocol=2)
    else:
        torch.save(obj, evil)
    # positive control: an ordinary unpickler would run the payload
    raw = pickle.dumps(Payload(marker))
    pickle.loads(raw)
    assert marker.exists()
    marker.unlink()

    with pytest.raises(UnsafeCheckpointError) as e:
        convert(evil, tmp_path / 'out.ckpt')
    msg = str(e.value)
    assert str(evil) in msg and 'io.open' in msg and 'nothing in the file was run' in msg
    assert not marker.exists(), 'the pickled payload ran'
    assert not (tmp_path / 'out.ckpt').exists()


def _truncate(src, dst, frac=0.6):
    data = src.read_bytes()
    dst.write_bytes(data[:int(len(data) * frac)])
    return dst


@pytest.mark.parametrize('ext', ['.pt', '.safetensors', '.ckpt'])
def test_truncated_file(tmp_path, good, ext):
    bad = _truncate(_good(good, ext), tmp_path / f'cut{ext}')
    with pytest.raises(CorruptCheckpointError) as e:
        convert(bad, tmp_path / 'out.safetensors')
    assert str(bad) in str(e.value) and ('truncated' in str(e.value) or 'corrupt' in str(e.value))


@pytest.mark.parametrize('ext', ['.pt', '.safetensors', '.ckpt'])
def test_random_bytes(tmp_path, ext):
    bad = tmp_path / f'noise{ext}'
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CorruptCheckpointError, match=str(bad)):
        convert(bad, tmp_path / 'out.pt')


@pytest.mark.parametrize('member', ['data.pkl', 'data/0'])
def test_corrupt_zip_member(tmp_path, good, member):
    """A torch.save zip whose pickle or tensor bytes were damaged in place (same length):
    caught by the members' CRC-32 (tensor data are memory-mapped, torch would not notice)."""
    src = good[0] / 'unet.pt'
    bad = tmp_path / 'damaged.pt'
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(member))
    local = data[info.header_offset:info.header_offset + 30]
    start = info.header_offset + 30 + int.from_bytes(local[26:28], 'little') + int.from_bytes(local[28:30], 'little')
    data[start + 2:start + 22] = bytes(b ^ 0xff for b in data[start + 2:start + 22])
    bad.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError) as e:
        convert(bad, tmp_path / 'out.ckpt')
    assert str(bad) in str(e.value) and 'CRC-32' in str(e.value) and member in str(e.value)
    assert _files(tmp_path) == ['damaged.pt'], 'nothing may be written from a damaged file'


@pytest.mark.parametrize('header', [
    b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": ["0", "8"]}}',
    b'{"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}',
    b'{"w": {"dtype": "Q8", "shape": [2], "data_offsets": [0, 8]}}',
    b'{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}',
    b'[1, 2, 3]',
    b'{"w": ',
])
def test_crafted_safetensors_headers(tmp_path, header):
    bad = tmp_path / 'crafted.safetensors'
    bad.write_bytes(len(header).to_bytes(8, 'little') + header + bytes(8))
    with pytest.raises(CorruptCheckpointError, match=str(bad)):
        convert(bad, tmp_path / 'out.pt')
    huge = tmp_path / 'huge_header.safetensors'
    huge.write_bytes((1 << 60).to_bytes(8, 'little') + b'{}')
    with pytest.raises(CorruptCheckpointError, match='header length'):
        convert(huge, tmp_path / 'out.pt')


def test_mindspore_crc_trailer_is_checked(tmp_path, good):
    """mindspore.save_checkpoint(crc_check=True) appends a CRC-32 of its messages; a damaged
    byte is reported (and an intact file converts)."""
    import mindspore as ms
    params = ms.load_checkpoint(str(_good(good, '.ckpt')))
    ms.save_checkpoint([{'name': k, 'data': v} for k, v in params.items() if not isinstance(v, str)],
                       str(tmp_path / 'crc.ckpt'), crc_check=True)
    convert(tmp_path / 'crc.ckpt', tmp_path / 'ok.safetensors')
    data = bytearray((tmp_path / 'crc.ckpt').read_bytes())
    data[len(data) // 2] ^= 0x01
    (tmp_path / 'bad.ckpt').write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match='CRC-32'):
        convert(tmp_path / 'bad.ckpt', tmp_path / 'out.safetensors')


def test_empty_file_directory_wrong_extension_missing_file(tmp_path):
    empty = tmp_path / 'empty.pt'
    empty.write_bytes(b'')
    with pytest.raises(CorruptCheckpointError, match=r'empty\.pt: is empty'):
        convert(empty, tmp_path / 'out.ckpt')
    d = tmp_path / 'dir.pt'
    d.mkdir()
    with pytest.raises(UnsupportedFormatError, match='is a directory'):
        convert(d, tmp_path / 'out.ckpt')
    txt = tmp_path / 'weights.npz'
    txt.write_bytes(b'PK')
    with pytest.raises(UnsupportedFormatError, match=r"weights\.npz: unsupported extension '\.npz'.*\.safetensors"):
        convert(txt, tmp_path / 'out.ckpt')
    with pytest.raises(UnsupportedFormatError, match=r"out\.h5: unsupported extension '\.h5' for a destination"):
        convert(tmp_path / 'x.pt', tmp_path / 'out.h5')
    with pytest.raises(ConvertError, match='no such file'):
        convert(tmp_path / 'nope.pt', tmp_path / 'out.ckpt')
    assert not (tmp_path / 'out.ckpt').exists()


def test_not_a_state_dict(tmp_path):
    f = tmp_path / 'list.pt'
    torch.save([torch.zeros(2)], f)
    with pytest.raises(ConvertError, match='not a state dict'):
        convert(f, tmp_path / 'out.ckpt')
    f = tmp_path / 'other.pt'
    torch.save({'encoder.weight': torch.zeros(2)}, f)
    with pytest.raises(ConvertError, match='neither a Unet nor a GaussianDiffusion'):
        convert(f, tmp_path / 'out.ckpt')
    with pytest.raises(ConvertError, match='--ema needs a reference Trainer checkpoint'):
        convert(f, tmp_path / 'out.ckpt', ema=True)


def test_missing_unexpected_and_misshaped_keys_all_in_one_error(tmp_path, good):
    sd = dict(good[1])
    dropped = ['final_conv.bias', 'mid_attn.mem_kv']
    for k in dropped:
        del sd[k]
    sd['extra.weight'] = torch.zeros(3)
    sd['downs.0.0.block1.proj.bias'] = torch.zeros(9)
    src = tmp_path / 'broken.pt'
    torch.save(sd, src)
    # dim etc. inferred from the remaining keys; then everything that does not fit is listed
    with pytest.raises(CheckpointMismatchError) as e:
        convert(src, tmp_path / 'out.ckpt', config=CFG)
    msg = str(e.value)
    assert str(src) in msg
    for k in dropped + ['extra.weight']:
        assert k in msg
    assert 'downs.0.0.block1.proj.bias: (9,) vs (8,)' in msg
    assert sorted(e.value.missing) == sorted(dropped) and e.value.unexpected == ['extra.weight']


def test_explicit_config_that_contradicts_the_weights(tmp_path, good):
    with pytest.raises(CheckpointMismatchError) as e:
        convert(good[0] / 'unet.pt', tmp_path / 'out.ckpt', config={'dim': 16})
    assert 'dim: given 16, the weights imply 8' in str(e.value)
    with pytest.raises(ConfigError, match='unknown argument.*dimm'):
        convert(good[0] / 'unet.pt', tmp_path / 'out.ckpt', config={'dimm': 16})
    assert not (tmp_path / 'out.ckpt').exists()


def test_diffusion_needs_image_size(tmp_path):
    gd = ddp.GaussianDiffusion(ddp.Unet(**CFG), image_size=8, timesteps=10)
    torch.save(gd.state_dict(), tmp_path / 'gd.pt')
    with pytest.raises(ConfigError, match='image_size cannot be inferred'):
        convert(tmp_path / 'gd.pt', tmp_path / 'gd.ckpt')
    assert _files(tmp_path) == ['gd.pt']


@pytest.mark.parametrize('ext', ['.ckpt', '.safetensors', '.pt'])
def test_failed_write_leaves_no_file_and_keeps_existing(tmp_path, good, ext, monkeypatch):
    import weight_convert.formats as wf
    dst = tmp_path / f'out{ext}'

    def boom(*a, **k):
        raise OSError('disk full (simulated)')

    def half_then_boom(entries, f, *a, **k):
        f.write(b'partial data' * 100)
        boom()
    monkeypatch.setitem(wf.WRITERS, wf.format_of(dst, role='destination'), half_then_boom)
    with pytest.raises(DestinationError, match='simulated'):     # an OSError of the destination: one line
        convert(good[0] / 'unet.pt', dst)
    assert _files(tmp_path) == [], 'a failed conversion left a file behind'
    dst.write_bytes(b'previous contents')
    with pytest.raises(DestinationError, match='simulated'):
        convert(good[0] / 'unet.pt', dst, force=True)
    assert dst.read_bytes() == b'previous contents'
    assert _files(tmp_path) == [dst.name]


def test_cli_exit_status_and_message(tmp_path, good, capsys):
    empty = tmp_path / 'empty.safetensors'
    empty.write_bytes(b'')
    rc = cli_main([str(empty), str(tmp_path / 'out.ckpt')])
    err = capsys.readouterr().err
    assert rc == 1 and 'ms-ddpm convert: error:' in err and 'is empty' in err and 'Traceback' not in err
    assert cli_main([str(_good(good, '.ckpt')), str(tmp_path / 'ok.pt'), '-q']) == 0
    assert (tmp_path / 'ok.pt').exists() and (tmp_path / 'ok.pt.config.json').exists()
    with pytest.raises(SystemExit) as e:
        cli_main([str(_good(good, '.ckpt'))])
    assert e.value.code == 2


def test_same_source_and_destination_refused(tmp_path, good):
    with pytest.raises(ConvertError, match='is the source file'):
        convert(_good(good, '.safetensors'), _good(good, '.safetensors'))
