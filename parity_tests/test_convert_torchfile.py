"""PyTorch files without PyTorch (weight_convert.torchfile): the restricted reader gives what
torch.load(weights_only=True) gives, bit for bit; the writer gives files torch reads (and, for a
state dict, the very bytes torch.save writes); malicious pickles never run; damaged files are
reported; the ms-ddpm convert command runs with torch unimportable and never imports it."""

import io
import os
import subprocess
import sys
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

from weight_convert import ConvertError, CorruptCheckpointError, Entry, UnsafeCheckpointError, convert, read_weights
from weight_convert import torchfile
from weight_convert.torchfile import TorchTensor, load, read_torch_file, write_torch

torch = pytest.importorskip('torch')
ddp = pytest.importorskip('denoising_diffusion_pytorch')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = dict(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8)
TORCH_DTYPES = {'float32': torch.float32, 'float16': torch.float16, 'bfloat16': torch.bfloat16,
                'float64': torch.float64, 'int64': torch.int64, 'int32': torch.int32, 'int16': torch.int16,
                'int8': torch.int8, 'uint8': torch.uint8, 'bool': torch.bool}


def _bits(t):
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.numpy()


def assert_same(ours, theirs, where='obj'):
    """``ours`` (torchfile.load) equals ``theirs`` (torch.load): structure, types, key order,
    dtypes, shapes, bit patterns."""
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, TorchTensor), f'{where}: {type(ours).__name__} for a tensor'
        assert TORCH_DTYPES[ours.dtype] == theirs.dtype, f'{where}: dtype {ours.dtype} vs {theirs.dtype}'
        assert ours.shape == tuple(theirs.shape), f'{where}: shape {ours.shape} vs {tuple(theirs.shape)}'
        assert np.array_equal(np.asarray(ours.data), _bits(theirs)), f'{where}: values differ'
        assert ours.data.dtype == _bits(theirs).dtype
    elif isinstance(theirs, torch.dtype):
        assert repr(ours) == str(theirs), where
    elif isinstance(theirs, dict):
        assert type(ours) is type(theirs), f'{where}: {type(ours).__name__} vs {type(theirs).__name__}'
        assert list(ours) == list(theirs), f'{where}: keys differ'
        for k in theirs:
            assert_same(ours[k], theirs[k], f'{where}[{k!r}]')
    elif isinstance(theirs, (list, tuple)):
        assert type(ours) is (tuple if isinstance(theirs, tuple) else list) and len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_same(a, b, f'{where}[{i}]')
    else:
        assert type(ours) is type(theirs) and ours == theirs, f'{where}: {ours!r} vs {theirs!r}'


def check_equivalent(path):
    ours = load(path)
    assert_same(ours, torch.load(path, weights_only=True))
    return ours


def _unet(seed=0):
    torch.manual_seed(seed)
    return ddp.Unet(**CFG)


# --- the reader gives what torch.load(weights_only=True) gives -----------------------------------

@pytest.mark.parametrize('dtype', ['float32', 'float16', 'bfloat16'])
def test_unet_and_diffusion_state_dicts(tmp_path, dtype):
    gd = ddp.GaussianDiffusion(_unet(), image_size=8, timesteps=10)
    for name, sd in (('unet', gd.model.state_dict()), ('gd', gd.state_dict())):
        sd = OrderedDict((k, v.to(TORCH_DTYPES[dtype])) for k, v in sd.items())
        sd[next(k for k in sd if k.endswith('final_conv.bias'))][0] = -0.0
        torch.save(sd, tmp_path / f'{name}.pt')
        ours = check_equivalent(tmp_path / f'{name}.pt')
        assert all(e.file_range is not None for e in ours.values()), 'contiguous tensors are located in the file'


def test_every_dtype_views_shared_storages_0d_empty_parameters(tmp_path):
    base = torch.arange(48, dtype=torch.float32).reshape(6, 8)
    obj = OrderedDict()
    for name, dt in TORCH_DTYPES.items():
        obj[name] = (torch.arange(12) % 3 == 0).reshape(3, 4) if dt == torch.bool else \
            (torch.arange(12) - 5).reshape(3, 4).to(dt)
    obj.update({
        'row': base[2], 'rows': base[1:4], 'column': base[:, 3], 'transposed': base.t(), 'strided': base[::2, 1::3],
        'expanded': torch.ones(3, 1).expand(3, 4), 'whole': base, 'scalar': torch.tensor(7), 'scalar_f': torch.tensor(-0.0),
        'empty': torch.zeros(0), 'empty2': torch.zeros(2, 0, 3, dtype=torch.float16), 'parameter': torch.nn.Parameter(base[0]),
        'nested': {'list': [base[5], 1, 2.5, 'x', None, True, 2 ** 40, -3], 'tuple': (base[4:, 2:], (1,)), 0: []},
        'dtype': torch.bfloat16, 'size': torch.Size([2, 3]),
    })
    torch.save(obj, tmp_path / 'mixed.pt')
    ours = check_equivalent(tmp_path / 'mixed.pt')
    assert ours['rows'].file_range[1] == ours['whole'].file_range[1] + 8 * 4, 'a view sits at its offset in the storage'
    assert ours['column'].file_range is None and ours['transposed'].file_range is None, 'non-contiguous: not located'
    assert np.shares_memory(ours['rows'].data, ours['column'].data), 'views of one storage share it'
    assert ours['empty2'].shape == (2, 0, 3) and ours['scalar'].shape == ()


def test_reference_trainer_checkpoint(tmp_path):
    """What the reference Trainer.save writes after a training step (Adam moments, EMA state),
    and a GradScaler state as an amp run would add."""
    from PIL import Image
    images = tmp_path / 'images'
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(100):            # the reference Trainer wants at least 100 images
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(images / f'{i}.png')
    torch.manual_seed(0)
    gd = ddp.GaussianDiffusion(ddp.Unet(**CFG), image_size=8, timesteps=10)
    tr = ddp.Trainer(gd, str(images), train_batch_size=16, train_num_steps=2, calculate_fid=False,
                     results_folder=str(tmp_path / 'results'), save_and_sample_every=10 ** 9)
    tr.train()
    tr.save(1)
    path = tmp_path / 'results' / 'model-1.pt'
    ours = check_equivalent(path)
    assert set(ours) == {'step', 'model', 'opt', 'ema', 'scaler', 'version'} and ours['opt']['state'], 'Adam moments'
    data = torch.load(path, weights_only=True)
    data['scaler'] = torch.amp.GradScaler('cpu').state_dict()
    torch.save(data, tmp_path / 'amp.pt')
    check_equivalent(tmp_path / 'amp.pt')


def test_big_endian_file_is_byteswapped(tmp_path):
    """A file written on a big-endian machine (byteorder 'big', storages big-endian): the
    values come out right (copies, as torch byte-swaps too)."""
    sd = OrderedDict(w=torch.randn(3, 4), h=torch.randn(5).half(), b=torch.randn(2).bfloat16(), i=torch.arange(3),
                     u=torch.arange(4, dtype=torch.uint8), t=torch.randn(4, 3).t())
    torch.save(sd, tmp_path / 'le.pt')
    le = load(tmp_path / 'le.pt')
    storage_dtype = {}          # key -> NumPy dtype of that storage
    for key, e in enumerate(le.values()):       # one storage per tensor here, keys in sd's order
        storage_dtype[str(key)] = e.data.dtype
    with zipfile.ZipFile(tmp_path / 'le.pt') as src, zipfile.ZipFile(tmp_path / 'be.pt', 'w') as dst:
        for info in src.infolist():
            raw = src.read(info.filename)
            if info.filename == 'le/byteorder':
                raw = b'big'
            elif '/data/' in info.filename:
                raw = np.frombuffer(raw, storage_dtype[info.filename.rsplit('/', 1)[1]]).byteswap().tobytes()
            dst.writestr(info, raw)
    assert_same(load(tmp_path / 'be.pt'), torch.load(tmp_path / 'be.pt', weights_only=True))
    assert_same(load(tmp_path / 'be.pt'), sd)


def test_compressed_members_and_legacy_format(tmp_path):
    sd = _unet().state_dict()
    torch.save(sd, tmp_path / 'unet.pt')
    with zipfile.ZipFile(tmp_path / 'unet.pt') as src, \
            zipfile.ZipFile(tmp_path / 'deflated.pt', 'w', compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    assert_same(load(tmp_path / 'deflated.pt'), sd)
    torch.save(sd, tmp_path / 'legacy.pt', _use_new_zipfile_serialization=False)
    obj, check = read_torch_file(tmp_path / 'legacy.pt')        # falls back to torch.load(weights_only=True)
    assert check is None
    assert all(isinstance(e, Entry) for e in obj.values())
    for k in sd:
        assert np.array_equal(obj[k].data, sd[k].numpy())


def test_reader_choice_gives_the_same_entries(tmp_path, monkeypatch):
    """MS_DDPM_TORCH_READER=torch reads with torch.load(weights_only=True): same entries and
    the same places in the file."""
    torch.save(_unet().state_dict(), tmp_path / 'unet.pt')
    native = read_weights(tmp_path / 'unet.pt').entries
    monkeypatch.setenv(torchfile.READER_ENV, 'torch')
    via_torch = read_weights(tmp_path / 'unet.pt').entries
    assert list(native) == list(via_torch)
    for k in native:
        a, b = native[k], via_torch[k]
        assert (a.dtype, a.shape, a.file_range) == (b.dtype, b.shape, b.file_range) and np.array_equal(a.data, b.data)
    monkeypatch.setenv(torchfile.READER_ENV, 'pickle')
    with pytest.raises(ConvertError, match='expected native or torch'):
        read_weights(tmp_path / 'unet.pt')


# --- the writer ---------------------------------------------------------------------------------

def test_writer_gives_the_bytes_torch_save_writes(tmp_path):
    """A state dict written here is byte for byte what torch.save writes (given its archive
    name and serialization id, which torch makes up per file).  (A module's state_dict() also
    carries a _metadata attribute, which torch pickles too; the converter does not write it.)"""
    sd = OrderedDict(_unet().state_dict())
    sd['extra.half'] = torch.randn(3).half()
    sd['extra.empty'] = torch.zeros(0, 2)
    sd['extra.scalar'] = torch.tensor(3)
    torch.save(sd, tmp_path / 'unet.pt')
    want = (tmp_path / 'unet.pt').read_bytes()
    sid = zipfile.ZipFile(tmp_path / 'unet.pt').read('unet/.data/serialization_id').decode()
    buf = io.BytesIO()
    write_torch(load(tmp_path / 'unet.pt'), buf, archive='unet', serialization_id=sid)
    assert buf.getvalue() == want


def test_writer_output_torch_reads_exactly(tmp_path, monkeypatch):
    """torch.load reads it (also memory-mapped, also with torch's own offset arithmetic checked);
    the reference model loads it strictly; shared entries are stored once; zip64 fields work."""
    sd = _unet().state_dict()
    entries = OrderedDict((k, Entry(v.numpy(), 'float32')) for k, v in sd.items())
    entries['bf16'] = Entry(np.array([0x3f80, 0x8000], np.uint16), 'bfloat16')
    entries['non_contiguous'] = Entry(np.arange(12, dtype=np.int16).reshape(3, 4).T, 'int16')
    obj = {'model': entries, 'again': entries['init_conv.weight'], 'meta': [1, 'two', (3.0, None)]}
    with open(tmp_path / 'out.pt', 'wb') as f:
        write_torch(obj, f)
    with zipfile.ZipFile(tmp_path / 'out.pt') as z:
        assert z.testzip() is None
        assert len([n for n in z.namelist() if '/data/' in n]) == len(entries), 'a shared entry is stored once'
    from torch.utils.serialization import config
    monkeypatch.setenv('TORCH_SERIALIZATION_DEBUG', '1')          # torch checks its layout assumptions
    for mmap in (False, True):
        with config.patch({'load.calculate_storage_offsets': True}):
            back = torch.load(tmp_path / 'out.pt', weights_only=True, mmap=mmap)
        assert_same(load(tmp_path / 'out.pt'), back)
        want_sd = dict(sd, bf16=torch.tensor([1.0, -0.0], dtype=torch.bfloat16),
                       non_contiguous=torch.arange(12, dtype=torch.int16).reshape(3, 4).T)
        for k, v in want_sd.items():
            assert back['model'][k].dtype == v.dtype and np.array_equal(_bits(back['model'][k]), _bits(v)), k
        assert back['meta'] == [1, 'two', (3.0, None)] and torch.equal(back['again'], sd['init_conv.weight'])
        net = _unet(seed=1)
        net.load_state_dict({k: v for k, v in back['model'].items() if k in sd}, strict=True)


def test_zip64_fields(tmp_path, monkeypatch):
    """Members and offsets past 4 GiB get zip64 fields; tried here with the limit lowered."""
    sd = _unet().state_dict()
    monkeypatch.setattr(torchfile, 'ZIP64_LIMIT', 100)
    with open(tmp_path / 'zip64.pt', 'wb') as f:
        write_torch(OrderedDict((k, Entry(v.numpy(), 'float32')) for k, v in sd.items()), f)
    with zipfile.ZipFile(tmp_path / 'zip64.pt') as z:
        assert z.testzip() is None and any(len(i.extra) for i in z.infolist())
    assert_same(load(tmp_path / 'zip64.pt'), torch.load(tmp_path / 'zip64.pt', weights_only=True))
    assert_same(load(tmp_path / 'zip64.pt'), torch.load(tmp_path / 'zip64.pt', weights_only=True, mmap=True))


@pytest.mark.parametrize('via', ['.ckpt', '.safetensors'])
def test_round_trip_through_the_torch_free_writer(tmp_path, via):
    sd = OrderedDict((k, v.to(torch.bfloat16) if v.ndim > 1 else v) for k, v in _unet().state_dict().items())
    torch.save(sd, tmp_path / 'unet.pt')
    convert(tmp_path / 'unet.pt', tmp_path / f'mid{via}')
    convert(tmp_path / f'mid{via}', tmp_path / 'back.pt')
    for mmap in (False, True):
        back = torch.load(tmp_path / 'back.pt', weights_only=True, mmap=mmap)
        assert_same(load(tmp_path / 'back.pt'), back)
        assert list(back) == list(sd)
        for k in sd:
            assert back[k].dtype == sd[k].dtype and np.array_equal(_bits(back[k]), _bits(sd[k])), k
    _unet(seed=2).load_state_dict(back, strict=True)


def test_torch_output_follows_the_network_order(tmp_path):
    """A torch output is written while the keys are checked, in the source's order; a source
    in another order (the safetensors package sorts its tensors) is rewritten in the
    network's, the reference state dict's, order."""
    from safetensors.numpy import save_file
    sd = _unet().state_dict()
    save_file({k: v.numpy() for k, v in sd.items()}, str(tmp_path / 'theirs.safetensors'))
    assert list(read_weights(tmp_path / 'theirs.safetensors').entries) != list(sd)
    convert(tmp_path / 'theirs.safetensors', tmp_path / 'back.pt')
    back = torch.load(tmp_path / 'back.pt', weights_only=True)
    assert list(back) == list(sd) and all(torch.equal(back[k], sd[k]) for k in sd)


# --- malicious pickles never run ------------------------------------------------------------------

class RunsShell:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


class RunsEval:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (eval, (f'open({self.marker!r}, "w")',))


@pytest.mark.parametrize('payload, global_name', [(RunsShell, f'{os.system.__module__}.system'),
                                                  (RunsEval, 'builtins.eval')])
def test_malicious_pickle_refused_naming_the_global(tmp_path, payload, global_name):
    marker = tmp_path / 'PAYLOAD_RAN'
    sd = _unet().state_dict()
    sd['init_conv.bias'] = payload(marker)
    torch.save(sd, tmp_path / 'evil.pt')
    import pickle
    pickle.loads(pickle.dumps(payload(marker)))          # positive control: plain pickle runs it
    assert marker.exists()
    marker.unlink()
    for attempt in (lambda: load(tmp_path / 'evil.pt'), lambda: convert(tmp_path / 'evil.pt', tmp_path / 'out.ckpt')):
        with pytest.raises(UnsafeCheckpointError) as e:
            attempt()
        assert global_name in str(e.value) and 'nothing in the file was run' in str(e.value)
        assert str(tmp_path / 'evil.pt') in str(e.value)
    assert not marker.exists(), 'the pickled payload ran'
    assert not (tmp_path / 'out.ckpt').exists()


def _zip_with_pickle(path, pkl, data=b'\0' * 16):
    with open(path, 'wb') as f:
        z = torchfile._ZipWriter(f)
        z.add('archive/data.pkl', pkl)
        z.add('archive/data/0', data)
        z.close()


def _tensor_opcodes(dtype='float32', shape=(4,), offset=0, stride=None):
    p = torchfile._Pickle()
    p.save(Entry(np.zeros(shape, np.float32), dtype))
    ops = bytes(p.out[2:])
    if stride is not None or offset:
        # rebuild with a custom layout: same opcodes as torch writes for any view
        p = torchfile._Pickle()
        p.save(p.ref('torch._utils', '_rebuild_tensor_v2'))
        p.out += b'('
        p.save(('storage', p.ref('torch', 'FloatStorage'), '0', 'cpu', 4))
        p.out += b'Q'
        for v in (offset, tuple(shape), tuple(stride), False):
            p.save(v)
        p.save(OrderedDict())
        p.out += b'tR'
        ops = bytes(p.out[2:])
    return ops


def test_build_on_a_tensor_is_refused(tmp_path):
    """BUILD could set a tensor's attributes (e.g. where its bytes lie: any file): refused."""
    state = b'N}X\n\x00\x00\x00file_rangeX\x0b\x00\x00\x00/etc/passwdK\x00\x86s\x86'    # (None, {file_range: (...)})
    pkl = b'\x80\x02}X\x01\x00\x00\x00w' + _tensor_opcodes() + state + b'bs.'
    _zip_with_pickle(tmp_path / 'build.pt', pkl)
    with pytest.raises(UnsafeCheckpointError, match='BUILD'):
        load(tmp_path / 'build.pt')
    pkl = b'\x80\x02ctorch._utils\n_rebuild_tensor_v2\n}b.'                 # BUILD on a stand-in
    _zip_with_pickle(tmp_path / 'build2.pt', pkl)
    with pytest.raises(UnsafeCheckpointError, match='BUILD'):
        load(tmp_path / 'build2.pt')


# --- damaged files ---------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def good_file(tmp_path_factory):
    d = tmp_path_factory.mktemp('torchfile')
    torch.save(_unet().state_dict(), d / 'unet.pt')
    return d / 'unet.pt'


@pytest.mark.parametrize('frac', [0.01, 0.3, 0.9, 0.999])
def test_truncated(tmp_path, good_file, frac):
    data = good_file.read_bytes()
    bad = tmp_path / 'cut.pt'
    bad.write_bytes(data[:int(len(data) * frac)])
    with pytest.raises(CorruptCheckpointError, match='truncated|corrupt'):
        read_torch_file(bad)
    with pytest.raises(CorruptCheckpointError, match='truncated|corrupt'):
        load(bad)


@pytest.mark.parametrize('member', ['data.pkl', 'data/0', 'data/5', 'byteorder'])
def test_damaged_member_fails_its_crc(tmp_path, good_file, member):
    data = bytearray(good_file.read_bytes())
    with zipfile.ZipFile(good_file) as z:
        info = z.getinfo('unet/' + member)
    local = data[info.header_offset:info.header_offset + 30]
    start = info.header_offset + 30 + int.from_bytes(local[26:28], 'little') + int.from_bytes(local[28:30], 'little')
    data[start] ^= 0x01
    bad = tmp_path / 'damaged.pt'
    bad.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError) as e:
        obj, check = read_torch_file(bad, check_crc='background')
        check.wait()
    assert 'CRC-32' in str(e.value) and member in str(e.value) and str(bad) in str(e.value)


@pytest.mark.parametrize('case, pkl, match', [
    ('tensor past its storage', b'\x80\x02}X\x01\x00\x00\x00w' + _tensor_opcodes(shape=(5,), stride=(1,)) + b's.',
     'reaches past its storage'),
    ('offset past its storage', b'\x80\x02}X\x01\x00\x00\x00w' + _tensor_opcodes(shape=(2,), offset=3, stride=(1,)) + b's.',
     'reaches past its storage'),
    ('storage size differs from its record', b'\x80\x02}X\x01\x00\x00\x00w' + _tensor_opcodes(shape=(8,)) + b's.',
     'holds 16 bytes'),
    ('unknown persistent id', b'\x80\x02X\x01\x00\x00\x00xQ.', 'unknown persistent id'),
    ('not a pickle', b'\x00\x01\x02', 'corrupt'),
])
def test_crafted_pickles(tmp_path, case, pkl, match):
    _zip_with_pickle(tmp_path / 'crafted.pt', pkl)
    with pytest.raises(CorruptCheckpointError, match=match):
        load(tmp_path / 'crafted.pt')


def test_unsupported_dtype(tmp_path):
    torch.save({'w': torch.zeros(2, dtype=torch.complex64)}, tmp_path / 'complex.pt')
    with pytest.raises(ConvertError, match='unsupported tensor dtype: tensors stored as torch.ComplexFloatStorage'):
        load(tmp_path / 'complex.pt')


def test_zip_that_is_not_a_torch_file(tmp_path):
    with zipfile.ZipFile(tmp_path / 'other.pt', 'w') as z:
        z.writestr('readme.txt', 'hello')
    with pytest.raises(CorruptCheckpointError, match='not a torch.save file'):
        load(tmp_path / 'other.pt')


# --- the command, with torch unimportable, never importing it --------------------------------------

GUARD = '''
import sys
if {block}:
    sys.modules['torch'] = None          # import torch now raises ImportError
from ms_ddpm_tools.cli import main            # the ms-ddpm entry point
for args in {runs!r}:
    rc = main(['convert'] + args + ['-q'])
    print('rc', rc, flush=True)
print('torch imported:', sorted(m for m in sys.modules if (m == 'torch' or m.startswith('torch.')) and sys.modules[m]))
'''


@pytest.mark.parametrize('block', [True, False])
def test_cli_converts_without_torch(tmp_path, good_file, block):
    legacy = tmp_path / 'legacy.pt'
    torch.save(torch.load(good_file, weights_only=True), legacy, _use_new_zipfile_serialization=False)
    runs = [[str(good_file), str(tmp_path / 'a.ckpt')], [str(tmp_path / 'a.ckpt'), str(tmp_path / 'b.pt')],
            [str(tmp_path / 'b.pt'), str(tmp_path / 'c.safetensors')],
            [str(tmp_path / 'a.ckpt'), str(tmp_path / 'model-1.pt'), '--trainer', '--config', '{"image_size": 8}']]
    if block:
        runs.append([str(legacy), str(tmp_path / 'd.ckpt')])
    r = subprocess.run([sys.executable, '-c', GUARD.format(block=block, runs=runs)], capture_output=True, text=True,
                       cwd=ROOT, env=dict(os.environ, GLOG_v='3'), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert lines[:4] == ['rc 0'] * 4, r.stdout + r.stderr[-3000:]
    assert lines[-1] == 'torch imported: []', 'the conversion imported torch'
    if block:
        assert lines[4] == 'rc 1' and 'legacy (pre-1.6, non-zip) torch.save format needs PyTorch' in r.stderr
    sd = torch.load(good_file, weights_only=True)
    back = torch.load(tmp_path / 'b.pt', weights_only=True)
    assert list(back) == list(sd) and all(torch.equal(back[k], sd[k]) for k in sd)
    trainer = torch.load(tmp_path / 'model-1.pt', weights_only=True, mmap=True)
    assert list(trainer) == ['step', 'model', 'opt', 'ema', 'scaler', 'version']
    assert all(torch.equal(trainer['ema']['ema_model.model.' + k], sd[k]) for k in sd)
