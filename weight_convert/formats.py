"""Reading and writing weight files, safely and without extra copies.

Every tensor travels as an :class:`Entry`: a NumPy array of its raw values plus its dtype
name.  bfloat16 (which NumPy lacks) is carried as its raw 16-bit pattern (``uint16``), so a
bf16 tensor is never rounded on its way between files; where a NumPy *value* is needed
(loading into a network, ``--verify``) it is widened to float32, which holds every bf16
value exactly (:meth:`Entry.value`).

Formats:
- PyTorch ``.pt/.pth/.bin`` (``torch.save``'s zip format): read and written without torch by
  :mod:`weight_convert.torchfile`.  The reader's unpickler builds tensors and plain data only,
  from an allow-list of globals mapped to its own stand-ins (anything else is refused, naming
  the global; nothing in the file runs, torch is not imported); tensors are views of a memory
  map of the file.  The writer streams tensor by tensor into the layout ``torch.save`` writes.
  The legacy (pre-1.6, non-zip) format, or any file with ``MS_DDPM_TORCH_READER=torch``, is
  read with ``torch.load(weights_only=True)`` (:func:`load_torch_file`, which ms_ddpm's
  Trainer interop also uses, as it does :func:`save_torch`).
- ``.safetensors``: read and written here (the format is an 8-byte header length, a JSON
  header, raw little-endian data), memory-mapped on read and streamed tensor by tensor on
  write; bf16 is stored natively as ``BF16``.  Files are readable by the ``safetensors``
  package and by MindSpore.
- MindSpore ``.ckpt``: MindSpore's checkpoint protobuf (``checkpoint_pb2.Checkpoint``),
  one message per tensor (slice) as ``mindspore.save_checkpoint`` writes it, framed here
  byte for byte (no protobuf objects, no copies of the data); read by a bounds-checked walk
  of the protobuf over a memory map.  bf16 is stored as MindSpore ``BFloat16``
  (``ms.load_checkpoint`` returns ``ms.bfloat16``).

Tensor bytes that lie contiguously in a source file (any format) are copied to the output by
the kernel (``os.copy_file_range``, like ``cp``); others are written from memory.  The CRC-32
of every ``torch.save`` zip member is checked (memory-mapped data are not checked otherwise).

Every output is written to a temporary file in the destination's directory and renamed
into place (:class:`AtomicFile`), so a failed conversion never leaves a half-written file.
"""

import os
import pickle
import sys
import warnings
import zipfile

import numpy as np

from ms_ddpm.io.atomic import AtomicFile  # noqa: F401  (the one atomic writer)
from ms_ddpm.io.checkpoint import (  # noqa: F401  (re-exported: weight_convert.formats.* as before)
    CKPT_CRC_TRAILER, CKPT_DTYPES, CKPT_SLICE_BYTES, DTYPES, MAX_SAFETENSORS_HEADER, SAFETENSORS_DTYPES,
    ByteCopier, Entry, Stopped, _check_stop, _checkpoint_pb2, _fields, _read_varint, _varint, check_readable,
    check_stop, ckpt_slice_prefix, read_ckpt, read_safetensors, write_ckpt, write_safetensors,
)
from ms_ddpm.io.errors import (  # noqa: F401  (re-exported: weight_convert.ConvertError ...)
    ConvertError, CorruptCheckpointError, DestinationError, UnsafeCheckpointError, UnsupportedFormatError,
)
from weight_convert.rules import EXTENSIONS


# --- checks shared by every reader ----------------------------------------------------------

def format_of(path, role='source'):
    """The format a path's extension names; a clear error for a directory or other extension."""
    ext = os.path.splitext(str(path))[1].lower()
    if role == 'source' and os.path.isdir(path):
        raise UnsupportedFormatError(f'{path}: is a directory, not a checkpoint file')
    if ext not in EXTENSIONS:
        known = ', '.join(sorted(EXTENSIONS))
        raise UnsupportedFormatError(
            f"{path}: unsupported extension {ext or '(none)'!r} for a {role}; supported: {known}")
    return EXTENSIONS[ext]


# --- PyTorch --------------------------------------------------------------------------------

def _torch():
    try:
        import torch
    except ImportError:
        raise ConvertError('reading or writing PyTorch .pt/.pth/.bin files needs PyTorch '
                           '(pip install torch); .safetensors and .ckpt do not') from None
    return torch


TORCH_DTYPE_NAMES = {'torch.float32': 'float32', 'torch.float16': 'float16', 'torch.bfloat16': 'bfloat16',
                     'torch.float64': 'float64', 'torch.int64': 'int64', 'torch.int32': 'int32',
                     'torch.int16': 'int16', 'torch.int8': 'int8', 'torch.uint8': 'uint8', 'torch.bool': 'bool'}


def entry_from_torch(t, key='?'):
    torch = _torch()
    name = TORCH_DTYPE_NAMES.get(str(t.dtype))
    if name is None:
        raise ConvertError(f'{key}: unsupported tensor dtype {t.dtype}')
    t = t.detach()
    if name == 'bfloat16':
        return Entry(t.view(torch.int16).numpy().view(np.uint16), name)
    return Entry(t.numpy(), name)


def torch_from_entry(e):
    torch = _torch()
    data = e.data      # read-only (memory-mapped) arrays are shared, not copied: only saved, never written
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        if e.dtype == 'bfloat16':
            return torch.from_numpy(np.ascontiguousarray(data).view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(np.ascontiguousarray(data))


ZIP_MAGIC = b'PK\x03\x04'
CRC_CHUNK = 8 << 20


def verify_zip_crc(path):
    """Check every member of a (torch.save) zip against its CRC-32, reading in chunks (no
    extra memory).  torch.load with mmap=True maps tensor data without checking it."""
    import zlib
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise CorruptCheckpointError(f'{path}: corrupt zip archive ({e})') from None
    buf = bytearray(CRC_CHUNK)
    view = memoryview(buf)
    with open(path, 'rb') as f:
        for info in infos:
            if info.compress_type != zipfile.ZIP_STORED:
                continue      # torch.save stores; a compressed member is checked by zipfile on read
            f.seek(info.header_offset)
            local = f.read(30)
            if len(local) < 30 or local[:4] != ZIP_MAGIC:
                raise CorruptCheckpointError(f'{path}: corrupt zip archive (bad local header for {info.filename})')
            f.seek(info.header_offset + 30 + int.from_bytes(local[26:28], 'little')
                   + int.from_bytes(local[28:30], 'little'))
            left, crc = info.file_size, 0
            while left:
                n = f.readinto(view[:min(left, CRC_CHUNK)])
                if not n:
                    raise CorruptCheckpointError(f'{path}: truncated: {info.filename} ends early')
                crc = zlib.crc32(view[:n], crc)
                left -= n
            if crc != info.CRC:
                raise CorruptCheckpointError(
                    f'{path}: corrupt: {info.filename} fails its CRC-32 check (stored {info.CRC:08x}, '
                    f'computed {crc:08x}); the file was damaged after it was written')


class Background:
    """Runs ``fn`` in a thread (zlib, file reads and writes release the GIL, so it overlaps
    the rest of the conversion), from now or from :meth:`start`; :meth:`wait` (which starts it
    if need be) re-raises its error."""

    def __init__(self, fn, start=True):
        import threading
        self.error, self.started = None, False

        def run():
            try:
                fn()
            except BaseException as e:      # re-raised in wait()
                self.error = e
        self.thread = threading.Thread(target=run, daemon=True, name='weight_convert-background')
        if start:
            self.start()

    def start(self):
        if not self.started:
            self.started = True
            self.thread.start()

    def wait(self):
        self.start()
        self.thread.join()
        if self.error is not None:
            raise self.error


def raise_crc_failure_first(check):
    """Called where reading a file failed: if its CRC-32 check (a :class:`Background`, or None)
    fails too, raise that instead, the likelier cause (a corrupt file)."""
    if check is not None:
        try:
            check.wait()
        except ConvertError as crc_error:
            raise crc_error from None


def load_torch_file(path, check_crc=True):
    """``torch.load(path, weights_only=True)``, memory-mapped when the file allows it (torch
    tensors; the converter reads with :mod:`weight_convert.torchfile` and uses this only as
    its fallback).
    Returns the loaded object; unsafe, corrupt and truncated files raise ConvertError.
    ``check_crc``: True checks the zip members' CRC-32 first; 'background' returns
    ``(obj, Background)`` with the check running alongside."""
    torch = _torch()
    check_readable(path)
    is_zip = zipfile.is_zipfile(path)
    if not is_zip:
        with open(path, 'rb') as f:
            if f.read(4) == ZIP_MAGIC:
                raise CorruptCheckpointError(
                    f'{path}: truncated or corrupt: a zip archive (torch.save format) without its central '
                    f'directory; the file was probably cut short')
        if check_crc == 'background':      # legacy (non-zip) format: no CRCs to check
            return load_torch_file(path, check_crc=False), None
    elif check_crc == 'background':
        check = Background(lambda: verify_zip_crc(path))
        try:
            obj = load_torch_file(path, check_crc=False)
        except ConvertError:
            raise_crc_failure_first(check)
            raise
        return obj, check
    elif check_crc:
        verify_zip_crc(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            return torch.load(path, map_location='cpu', weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as e:
        msg = str(e)
        lines = [line.strip() for line in msg.splitlines() if line.strip()]
        glob = next((line for line in lines if 'GLOBAL' in line or 'Unsupported global' in line), None)
        if glob is not None:
            raise UnsafeCheckpointError(
                f'{path}: refused: its pickle asks for something other than tensors and plain data '
                f'({glob.split(". Please")[0]}). Checkpoints are loaded with torch.load(weights_only=True); '
                f'nothing in the file was run. If you trust it, re-save its state dict with torch.save.') from None
        detail = next((line for line in lines if 'Unsupported' in line), lines[0] if lines else 'UnpicklingError')
        raise CorruptCheckpointError(
            f'{path}: not a checkpoint that torch.load(weights_only=True) accepts ({detail}): corrupt, '
            f'or an arbitrary pickle; nothing in the file was run') from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, IndexError,
            TypeError, AttributeError, UnicodeDecodeError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0].split('. This is an internal')[0]
        why = 'truncated or corrupt zip archive' if is_zip else 'not a PyTorch checkpoint (truncated or corrupt?)'
        raise CorruptCheckpointError(f'{path}: {why}: {type(e).__name__}: {first}') from None


def save_torch(obj, f):
    torch = _torch()
    torch.save(obj, f)


def zip_member_offsets(path):
    """{data offset in the file: (member name, size)} of a zip's stored (uncompressed) members."""
    out = {}
    with zipfile.ZipFile(path) as z, open(path, 'rb') as f:
        for info in z.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                continue
            f.seek(info.header_offset)
            local = f.read(30)
            if len(local) < 30 or local[:4] != ZIP_MAGIC:
                continue
            start = info.header_offset + 30 + int.from_bytes(local[26:28], 'little') + \
                int.from_bytes(local[28:30], 'little')
            out[start] = (info.filename, info.file_size)
    return out


def all_tensors(obj):
    """Every tensor in a loaded object (nested dicts, lists, tuples)."""
    if hasattr(obj, 'untyped_storage'):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from all_tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from all_tensors(v)


def locate_tensors_in_file(path, tensors, loaded):
    """``tensors`` ({key: tensor}) from ``loaded = torch.load(path, mmap=True)`` -> ``{key:
    file offset of its bytes}`` for the contiguous ones.  torch maps the whole file once, and
    every ``data/N`` member of the zip is one storage of ``loaded``, so the lowest storage
    address is the lowest ``data/`` member's offset; the shift found that way must then put
    *every* storage exactly on a member of its size, or nothing is located (and the bytes
    are written from memory instead)."""
    if sys.byteorder != 'little':
        return {}
    offsets = zip_member_offsets(path)
    with zipfile.ZipFile(path) as z:        # torch byte-swaps big-endian files on load: no raw copies
        order = [n for n in z.namelist() if n.endswith('byteorder')]
        if order and z.read(order[0]).strip() != b'little':
            return {}
    members = {off: (name, size) for off, (name, size) in offsets.items()
               if ('/data/' in name or name.startswith('data/')) and size}
    storages = {}
    for t in all_tensors(loaded):
        st = t.untyped_storage()
        if st.nbytes():
            storages[st.data_ptr()] = st.nbytes()
    if not storages or len(members) != len(storages):
        return {}
    base = min(storages) - min(members)
    if any(members.get(p - base, (None, -1))[1] != n for p, n in storages.items()):
        return {}
    return {k: t.data_ptr() - base for k, t in tensors.items() if t.is_contiguous() and t.numel()}
