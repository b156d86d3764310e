"""Issue 17, the converter's files: the config belongs to one file, every .ckpt carries a CRC,
exact shape products, SIGTERM cleans up, an existing destination is refused without --force,
the damaged key an architecture was inferred from is named, OS errors are one line."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ms_ddpm.io.checkpoint import CKPT_CRC_TRAILER, ckpt_slice_prefix, read_ckpt, write_ckpt
from ms_ddpm.io.errors import CorruptCheckpointError
from ms_ddpm_tools.convert import main as cli_main
from weight_convert import CheckpointMismatchError, config_path, convert, load_model, read_weights

torch = pytest.importorskip('torch')
ddp = pytest.importorskip('denoising_diffusion_pytorch')

CFG = dict(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def srcs(tmp_path_factory):
    d = tmp_path_factory.mktemp('src17')
    torch.manual_seed(0)
    unet = ddp.Unet(**CFG)
    torch.save(unet.state_dict(), d / 'unet.pt')
    torch.save(ddp.GaussianDiffusion(unet, image_size=16, timesteps=10).state_dict(), d / 'diff.pt')
    return d


def _run(argv, capsys):
    rc = cli_main([str(a) for a in argv] + ['-q'])
    return rc, capsys.readouterr().err


def _names(d):
    return sorted(p.name for p in d.iterdir())


# --- 2. the config beside a checkpoint belongs to that file only --------------------------------

def test_config_is_inside_the_ckpt_and_named_after_the_whole_file(tmp_path, srcs, capsys):
    """convert diff.pt m.ckpt --image-size 16; convert unet.pt m.safetensors; convert m.ckpt m2.pt
    used to fail (the second overwrote m.config.json)."""
    assert _run([srcs / 'diff.pt', tmp_path / 'm.ckpt', '--image-size', '16'], capsys)[0] == 0
    assert _run([srcs / 'unet.pt', tmp_path / 'm.safetensors'], capsys)[0] == 0
    assert _run([tmp_path / 'm.ckpt', tmp_path / 'm2.pt'], capsys)[0] == 0
    assert read_ckpt(str(tmp_path / 'm.ckpt'))[1]['ms_ddpm_config']          # inside the .ckpt
    (tmp_path / 'm.ckpt.config.json').unlink()                               # ... so no side file needed
    assert _run([tmp_path / 'm.ckpt', tmp_path / 'm3.pt'], capsys)[0] == 0
    assert json.loads((tmp_path / 'm3.pt.config.json').read_text())['diffusion']['image_size'] == 16
    assert load_model(tmp_path / 'm2.pt').image_size == (16, 16)            # a .pt: its own side file
    assert config_path(tmp_path / 'm2.pt') == str(tmp_path / 'm2.pt.config.json')


def test_a_side_file_written_for_another_file_is_never_read(tmp_path, srcs, capsys):
    assert _run([srcs / 'diff.pt', tmp_path / 'big.pt', '--image-size', '16'], capsys)[0] == 0
    side = json.loads((tmp_path / 'big.pt.config.json').read_text())
    # an old-style big.config.json naming big.pt, left from long ago, beside a new big.pt
    old = json.loads(json.dumps(side))
    old['diffusion']['image_size'] = 64
    for k in ('bytes', 'index'):
        old['weights'].pop(k)
    (tmp_path / 'big.config.json').write_text(json.dumps(old))
    (tmp_path / 'big.pt.config.json').unlink()
    week_ago = time.time() - 7 * 86400
    os.utime(tmp_path / 'big.config.json', (week_ago, week_ago))
    src = read_weights(tmp_path / 'big.pt')
    assert src.stored_config is None and 'not written with the weights' in ' '.join(src.ignored_configs)
    rc, err = _run([tmp_path / 'big.pt', tmp_path / 'out.ckpt'], capsys)
    assert rc == 1 and 'image_size cannot be inferred' in err
    # written with the weights (an old converter's output): still read, so load_model keeps working
    now = os.path.getmtime(tmp_path / 'big.pt')
    os.utime(tmp_path / 'big.config.json', (now, now))
    assert load_model(tmp_path / 'big.pt').image_size == (64, 64)
    # a new-style side file whose recorded size/tensor index are another file's
    (tmp_path / 'big.config.json').unlink()
    side['weights']['bytes'] += 1
    (tmp_path / 'big.pt.config.json').write_text(json.dumps(side))
    src = read_weights(tmp_path / 'big.pt')
    assert src.stored_config is None and 'bytes' in ' '.join(src.ignored_configs)


# --- 6. every .ckpt the project writes carries a CRC, checked on read ---------------------------

def test_converted_ckpt_has_a_crc_and_a_bit_flip_is_refused(tmp_path, srcs, capsys):
    assert _run([srcs / 'unet.pt', tmp_path / 'ok.ckpt'], capsys)[0] == 0
    data = bytearray((tmp_path / 'ok.ckpt').read_bytes())
    assert data[-17:-10] == CKPT_CRC_TRAILER
    data[len(data) // 2] ^= 0x04
    (tmp_path / 'bad.ckpt').write_bytes(bytes(data))
    rc, err = _run([tmp_path / 'bad.ckpt', tmp_path / 'out.pt'], capsys)
    assert rc == 1 and 'CRC-32' in err and 'Traceback' not in err
    assert not (tmp_path / 'out.pt').exists()
    # a .ckpt written before (no trailer) still reads, the check skipped
    entries, _ = read_ckpt(str(tmp_path / 'ok.ckpt'))
    with open(tmp_path / 'old.ckpt', 'wb') as f:
        write_ckpt(entries, f, crc_check=False)
    assert (tmp_path / 'old.ckpt').read_bytes()[-17:-10] != CKPT_CRC_TRAILER
    assert _run([tmp_path / 'old.ckpt', tmp_path / 'old.pt'], capsys)[0] == 0


def test_trainer_checkpoints_carry_the_crc(tmp_path):
    import mindspore as ms
    import numpy as np
    from ms_ddpm.ms_compat import save_checkpoint
    path = tmp_path / 'model-1.ckpt'
    save_checkpoint([{'name': 'w', 'data': ms.Tensor(np.arange(64, dtype=np.float32))}], path,
                    append_dict={'trainer_meta': '{}'})
    data = bytearray(path.read_bytes())
    assert data[-17:-10] == CKPT_CRC_TRAILER
    data[40] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match='CRC-32'):
        read_ckpt(str(path))


# --- 7. shape products are exact -------------------------------------------------------------------

def test_shape_product_that_wraps_int64_is_one_line(tmp_path, capsys):
    shape = [4, 2 ** 62 + 2]              # 4 * (2**62 + 2) = 2**64 + 8: 8 in int64, 32 bytes of float32
    header = json.dumps({'w': {'dtype': 'F32', 'shape': shape, 'data_offsets': [0, 32]}}).encode()
    (tmp_path / 'wrap.safetensors').write_bytes(len(header).to_bytes(8, 'little') + header + bytes(32))
    (tmp_path / 'wrap.ckpt').write_bytes(ckpt_slice_prefix('w', shape, 'Float32', 32) + bytes(32))
    for name in ('wrap.safetensors', 'wrap.ckpt'):
        rc, err = _run([tmp_path / name, tmp_path / 'out.pt'], capsys)
        assert rc == 1 and 'corrupt' in err and 'Traceback' not in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(CorruptCheckpointError):
        read_ckpt(str(tmp_path / 'wrap.ckpt'))


# --- 8. SIGTERM cleans up; a later run clears what a killed one left --------------------------------

SLOW_CONVERT = r'''
import sys, time
import weight_convert.formats as wf
from ms_ddpm.io.checkpoint import check_stop
def slow(entries, f, progress=None, stop=None, **kw):
    f.write(b'x' * 4096); f.flush()
    print('WRITING', flush=True)
    while True:
        check_stop(stop)
        time.sleep(0.05)
wf.WRITERS['mindspore'] = slow
from ms_ddpm_tools.convert import main
sys.exit(main(sys.argv[1:]))
'''


def test_sigterm_leaves_nothing_behind(tmp_path, srcs):
    out = tmp_path / 'out'
    out.mkdir()
    p = subprocess.Popen([sys.executable, '-c', SLOW_CONVERT, str(srcs / 'unet.pt'), str(out / 'm.ckpt'), '-q'],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == 'WRITING'
        assert any(n.endswith('.tmp') for n in os.listdir(out))          # mid-write: a temporary exists
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 1 and 'terminated (SIGTERM)' in err and 'Traceback' not in err, err
    assert _names(out) == []


def test_a_later_run_clears_stale_temporaries(tmp_path, srcs, capsys):
    stale = [tmp_path / '.m.ckpt.abc123.tmp', tmp_path / '.m.ckpt.config.json.def456.tmp']   # what SIGKILL leaves
    for f in stale:
        f.write_bytes(b'half')
    (tmp_path / '.other.ckpt.zzz.tmp').write_bytes(b'not ours')
    assert _run([srcs / 'unet.pt', tmp_path / 'm.ckpt'], capsys)[0] == 0
    assert _names(tmp_path) == ['.other.ckpt.zzz.tmp', 'm.ckpt', 'm.ckpt.config.json']


# --- 9. an existing destination needs --force -------------------------------------------------------

def test_existing_destination_is_refused_without_force(tmp_path, srcs, capsys):
    dst = tmp_path / 'm.safetensors'
    dst.write_bytes(b'precious')
    rc, err = _run([srcs / 'unet.pt', dst], capsys)
    assert rc == 1 and 'exists; give --force' in err and str(dst) in err
    assert dst.read_bytes() == b'precious' and _names(tmp_path) == ['m.safetensors']
    assert _run([srcs / 'unet.pt', dst, '--force'], capsys)[0] == 0
    assert dst.read_bytes() != b'precious' and (tmp_path / 'm.safetensors.config.json').exists()


# --- 11. the damaged key the architecture is inferred from is named first ---------------------------

def test_damaged_inference_key_is_named(tmp_path):
    sd = ddp.Unet(**CFG).state_dict()
    sd['downs.1.3.weight'] = sd['downs.1.3.weight'][:8].clone()        # (16, 8, 3, 3) shrunk to (8, 8, 3, 3)
    torch.save(sd, tmp_path / 'bad.pt')
    with pytest.raises(CheckpointMismatchError) as e:
        convert(tmp_path / 'bad.pt', tmp_path / 'out.ckpt')
    first = str(e.value).splitlines()[0]
    assert ('downs.1.3.weight has shape (8, 8, 3, 3); the architecture inferred from the other keys expects '
            '(16, 8, 3, 3)') in first
    assert e.value.mismatched == [('downs.1.3.weight', (8, 8, 3, 3), (16, 8, 3, 3))]


# --- 4. OS errors of the destination: one line, exit 1, nothing left --------------------------------

@pytest.mark.parametrize('dst', ['/proc/version/x.ckpt', '/proc/x.ckpt', '/proc/sys/x.safetensors'])
def test_unwritable_destination_is_one_line(srcs, capsys, dst):
    rc, err = _run([srcs / 'unet.pt', dst], capsys)
    assert rc == 1 and err.startswith('ms-ddpm convert: error:') and 'Traceback' not in err
    assert len(err.strip().splitlines()) == 1 and dst in err


def test_full_file_system_is_one_line_and_leaves_nothing(tmp_path, srcs, capsys, monkeypatch):
    import weight_convert.formats as wf

    def full(entries, f, *a, **k):
        f.write(b'partial' * 1000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setitem(wf.WRITERS, 'mindspore', full)
    rc, err = _run([srcs / 'unet.pt', tmp_path / 'm.ckpt'], capsys)
    assert rc == 1 and 'm.ckpt: cannot write: no space left on device' in err and 'Traceback' not in err, err
    assert _names(tmp_path) == []
