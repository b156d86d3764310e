"""``torch.save`` files without PyTorch: a restricted reader and a streaming writer.

The format (torch >= 1.6) is a zip archive whose members are stored, not compressed:

    archive/data.pkl                the object, pickled (protocol 2).  A tensor is the call
                                    torch._utils._rebuild_tensor_v2(storage, storage_offset,
                                    size, stride, requires_grad, backward_hooks); its storage is
                                    the persistent id ('storage', torch.<Type>Storage, key,
                                    location, numel)
    archive/.format_version         b'1'
    archive/.storage_alignment      b'64': every member's data starts on a multiple of 64
    archive/byteorder               b'little' (or b'big')
    archive/data/<key>              the raw bytes of storage <key>
    archive/version                 b'3\\n'
    archive/.data/serialization_id  40 digits

Reading (:func:`load`): the pickle is run by an unpickler whose ``find_class`` returns this
module's own stand-ins for the globals in :data:`ALLOWED_GLOBALS` only; torch, and any module
a pickle names, is never imported, and any other global is refused
(:class:`UnsafeCheckpointError` naming it) before anything is called.  The stand-ins refuse
``BUILD`` (no attribute of theirs can be set from the file).  Storages become NumPy views of
a memory map of the file, so tensors are ``Entry`` objects whose bytes are never copied, and
contiguous ones carry their place in the file (``Entry.file_range``, for kernel copies).

The legacy (pre-1.6, non-zip) format, or any file with ``MS_DDPM_TORCH_READER=torch``, is
read with ``torch.load(weights_only=True)`` instead (:func:`load_torch_file`, which the
reference-Trainer interop uses too, as it does :func:`save_torch`); its tensors become
Entries too, located in the file where torch memory-mapped it.  :func:`read_torch_file` is
the one entry point, and checks every zip member's CRC-32 (now, or in a thread alongside).

Writing (:func:`write_torch`): the pickle opcodes are written here, as torch writes them, and
the zip as torch's writer (miniz) lays it out: the same records in the same order, data
64-byte aligned by an ``FB`` padding field, sizes and CRC-32 in a data descriptor after each
member, a zip64 end record.  Tensor bytes are streamed from their source (``os.copy_file_range``
where they lie in a file); their CRC-32s are then computed from the source with ``pread``
while the disk writes the data, and filled into the data descriptors.  Nothing is held in
memory.
"""

import _compat_pickle
import io
import math
import mmap
import os
import pickle
import struct
import sys
import warnings
import zipfile
import zlib
from collections import OrderedDict

import numpy as np

from ms_ddpm.io.checkpoint import DTYPES, ByteCopier, Entry, check_readable, check_stop
from ms_ddpm.io.errors import ConvertError, CorruptCheckpointError, UnsafeCheckpointError
from weight_convert.background import Background, raise_crc_failure_first

# torch.<Type>Storage -> dtype name (DTYPES); torch.UntypedStorage holds bytes
STORAGE_TYPES = {
    'FloatStorage': 'float32', 'HalfStorage': 'float16', 'BFloat16Storage': 'bfloat16',
    'DoubleStorage': 'float64', 'LongStorage': 'int64', 'IntStorage': 'int32',
    'ShortStorage': 'int16', 'CharStorage': 'int8', 'ByteStorage': 'uint8', 'BoolStorage': 'bool',
    'UntypedStorage': 'uint8',
}
STORAGE_OF = {dtype: name for name, dtype in STORAGE_TYPES.items() if name != 'UntypedStorage'}

# MS_DDPM_TORCH_READER=torch reads PyTorch files with torch.load(weights_only=True) instead
READER_ENV = 'MS_DDPM_TORCH_READER'
# the pre-1.6 format starts with a pickled magic number (protocol 2, LONG1)
LEGACY_MAGIC = b'\x80\x02\x8a\x0a' + (0x1950a86a20f9469cfc6c).to_bytes(10, 'little')


# --- the zip archive ---------------------------------------------------------------------------

ZIP_MAGIC = b'PK\x03\x04'
CRC_CHUNK = 8 << 20


def _member_data_start(f, info):
    """Where a zip member's data start in the open file ``f`` (after its local header), or
    None if its local header is not there."""
    f.seek(info.header_offset)
    local = f.read(30)
    if len(local) < 30 or local[:4] != ZIP_MAGIC:
        return None
    return info.header_offset + 30 + int.from_bytes(local[26:28], 'little') + int.from_bytes(local[28:30], 'little')


def zip_member_offsets(path):
    """{data offset in the file: (member name, size)} of a zip's stored (uncompressed) members."""
    out = {}
    with zipfile.ZipFile(path) as z, open(path, 'rb') as f:
        for info in z.infolist():
            start = _member_data_start(f, info) if info.compress_type == zipfile.ZIP_STORED else None
            if start is not None:
                out[start] = (info.filename, info.file_size)
    return out


def verify_zip_crc(path):
    """Check every member of a (torch.save) zip against its CRC-32, reading in chunks (no
    extra memory).  Memory-mapped tensor data are not checked otherwise."""
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
            start = _member_data_start(f, info)
            if start is None:
                raise CorruptCheckpointError(f'{path}: corrupt zip archive (bad local header for {info.filename})')
            f.seek(start)
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


def _zip_or_legacy(path):
    """-> (is a zip archive, the file's first bytes); a zip cut short (no central directory)
    is refused here."""
    is_zip = zipfile.is_zipfile(path)
    with open(path, 'rb') as f:
        head = f.read(len(LEGACY_MAGIC))
    if not is_zip and head[:4] == ZIP_MAGIC:
        raise CorruptCheckpointError(
            f'{path}: truncated or corrupt: a zip archive (torch.save format) without its central '
            f'directory; the file was probably cut short')
    return is_zip, head


def _crc_check(path, check_crc):
    """A zip's CRC-32 check as ``check_crc`` asks: True runs it now (-> None); 'background'
    starts it in a thread, 'deferred' returns it unstarted (-> the :class:`Background`)."""
    if check_crc in ('background', 'deferred'):
        return Background(lambda: verify_zip_crc(path), start=check_crc == 'background')
    if check_crc:
        verify_zip_crc(path)
    return None


def _read_checked(check, read):
    """``read()``; where it fails, the CRC-32 check's failure is reported first (the likelier
    cause: a corrupt file)."""
    try:
        return read()
    except ConvertError:
        raise_crc_failure_first(check)
        raise


# --- reading without torch ---------------------------------------------------------------------

class _Refused(Exception):
    """A pickle asked for something outside the allow-list (turned into UnsafeCheckpointError)."""


class _Unsupported(Exception):
    """A tensor of a dtype the converter does not carry (complex, float8, ...)."""


class _Global:
    """Our stand-in for one allowed global: a function (``fn``) or a marker (a storage type's
    or a dtype's name).  ``BUILD`` on it is refused."""

    __slots__ = ('name', 'fn', 'dtype')

    def __init__(self, name, fn=None, dtype=None):
        self.name, self.fn, self.dtype = name, fn, dtype

    def __call__(self, *args):
        if self.fn is None:
            raise _Refused(f'a call of {self.name}')
        return self.fn(*args)

    def __setstate__(self, state):
        raise _Refused(f'setting attributes of {self.name} (BUILD)')

    def __repr__(self):
        return self.name


class TorchTensor(Entry):
    """A tensor read from a torch.save file: an :class:`Entry` that refuses ``BUILD``."""

    __slots__ = ()

    def __setstate__(self, state):
        raise _Refused('setting attributes of a tensor (BUILD)')


class _Storage:
    """One storage: ``flat`` (1-d NumPy view of its bytes), its dtype name, and where its
    bytes start in the file (None when they are not there as they are: compressed, swapped)."""

    __slots__ = ('flat', 'dtype', 'path', 'offset', 'swapped')

    def __init__(self, flat, dtype, path, offset, swapped):
        self.flat, self.dtype, self.path, self.offset, self.swapped = flat, dtype, path, offset, swapped

    def __setstate__(self, state):
        raise _Refused('setting attributes of a storage (BUILD)')

    def tensor(self, offset, size, stride):
        n = math.prod(size)                        # exact: no overflow from crafted sizes
        np_dtype = self.flat.dtype
        if n == 0:
            return TorchTensor(np.empty(size, np_dtype.newbyteorder('=')), self.dtype)
        last = offset + sum((s - 1) * st for s, st in zip(size, stride))
        if last >= len(self.flat):
            raise ValueError(f'a tensor (offset {offset}, size {list(size)}, stride {list(stride)}) '
                             f'reaches past its storage ({len(self.flat)} elements)')
        if _is_contiguous(size, stride):
            data = self.flat[offset:offset + n].reshape(size)
        else:
            data = np.lib.stride_tricks.as_strided(self.flat[offset:], size, [st * np_dtype.itemsize for st in stride],
                                                   writeable=False)
        if self.swapped:
            return TorchTensor(data.astype(np_dtype.newbyteorder('=')), self.dtype)
        located = self.offset is not None and _is_contiguous(size, stride)
        return TorchTensor(data, self.dtype, (self.path, self.offset + offset * np_dtype.itemsize) if located else None)


def _is_contiguous(size, stride):
    expected = 1
    for s, st in zip(reversed(size), reversed(stride)):
        if s != 1:
            if st != expected:
                return False
            expected *= s
    return True


def _ints(x, what):
    if not isinstance(x, tuple) or not all(type(v) is int and v >= 0 for v in x):
        raise ValueError(f'{what} is not a tuple of non-negative ints: {x!r}')
    return x


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    if not isinstance(storage, _Storage):
        raise ValueError(f'_rebuild_tensor_v2 expects a storage, got {type(storage).__name__}')
    size, stride = _ints(size, 'size'), _ints(stride, 'stride')
    if len(size) != len(stride) or type(storage_offset) is not int or storage_offset < 0:
        raise ValueError(f'bad tensor layout: offset {storage_offset!r}, size {size!r}, stride {stride!r}')
    return storage.tensor(storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad, backward_hooks):
    if not isinstance(data, TorchTensor):
        raise ValueError(f'_rebuild_parameter expects a tensor, got {type(data).__name__}')
    return data


def _allowed_globals():
    g = {
        'collections.OrderedDict': OrderedDict,
        'torch._utils._rebuild_tensor_v2': _rebuild_tensor_v2,
        'torch._utils._rebuild_parameter': _rebuild_parameter,
        'torch.Size': tuple,
    }
    g = {name: _Global(name, fn=fn) for name, fn in g.items()}
    g.update((f'torch.{s}', _Global(f'torch.{s}', dtype=d)) for s, d in STORAGE_TYPES.items())
    g.update((f'torch.{d}', _Global(f'torch.{d}')) for d in DTYPES)           # dtypes as values
    return g


# The only globals a PyTorch file may name (what state dicts, Trainer checkpoints with their
# EMA, Adam and GradScaler states, need).  Each maps to a stand-in defined here.
ALLOWED_GLOBALS = _allowed_globals()


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, storage):
        super().__init__(file)
        self._storage = storage

    def find_class(self, module, name):
        raw = f'{module}.{name}'
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))   # protocol 2 writes
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)                        # Python 2 names
        g = ALLOWED_GLOBALS.get(f'{module}.{name}')
        if g is None and module == 'torch' and name.endswith('Storage'):
            raise _Unsupported(f'tensors stored as torch.{name}')
        if g is None:
            raise _Refused(f'the global {module}.{name}' + (f' ({raw} in the pickle)' if raw != f'{module}.{name}' else ''))
        return g

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ('storage', b'storage')):
            raise ValueError(f'unknown persistent id {pid!r:.80}')
        _, stype, key, _location, numel = pid
        if not (isinstance(stype, _Global) and stype.dtype) or type(numel) is not int or numel < 0:
            raise ValueError(f'bad storage reference {pid!r:.80}')
        return self._storage(str(key), stype.dtype, numel)


def _archive_prefix(names, path):
    """torch names the archive folder after the first record ('archive/' since torch 1.13)."""
    first = names[0] if names else ''
    prefix = first.split('/')[0] + '/' if '/' in first else ''
    if prefix + 'data.pkl' not in names:
        raise CorruptCheckpointError(f'{path}: a zip archive but not a torch.save file (no {prefix or "<archive>/"}'
                                     f'data.pkl record)')
    return prefix


def _record(z, path, name):
    """A (small) record's bytes; zipfile checks its CRC-32."""
    try:
        return z.read(name)
    except zipfile.BadZipFile as e:
        if 'CRC' not in str(e):
            raise
        raise CorruptCheckpointError(f'{path}: corrupt: {name} fails its CRC-32 check; the file was damaged '
                                     f'after it was written') from None


def load(path):
    """A ``torch.save`` zip file -> the object it holds, with :class:`TorchTensor` (Entry)
    leaves that are views of a memory map of the file; plain data as it was pickled.  Never
    imports torch nor runs anything from the file."""
    path = str(path)
    size = check_readable(path)
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            infos = {i.filename: i for i in z.infolist()}
            prefix = _archive_prefix(names, path)
            pkl = _record(z, path, prefix + 'data.pkl')
            order = _record(z, path, prefix + 'byteorder').strip() if prefix + 'byteorder' in infos else b'little'
    except ConvertError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError, NotImplementedError) as e:
        raise CorruptCheckpointError(f'{path}: corrupt zip archive ({type(e).__name__}: {e})') from None
    if order not in (b'little', b'big'):
        raise CorruptCheckpointError(f'{path}: corrupt: byteorder record {order[:20]!r} is neither little nor big')
    swapped = order.decode() != sys.byteorder
    offsets = {name: off for off, (name, _) in zip_member_offsets(path).items()}
    with open(path, 'rb') as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    storages = {}

    def storage(key, dtype, numel):
        if key in storages:                 # shared: torch keeps the first storage of a key too
            return storages[key]
        name = f'{prefix}data/{key}'
        info = infos.get(name)
        if info is None:
            raise ValueError(f'storage {key!r} has no {name} record')
        np_dtype = np.dtype(DTYPES[dtype][0])
        if swapped:
            np_dtype = np_dtype.newbyteorder()
        if info.file_size != numel * np_dtype.itemsize:
            raise ValueError(f'{name} holds {info.file_size} bytes; its storage needs {numel} x {np_dtype.itemsize}')
        start = offsets.get(name)
        if start is not None and start + info.file_size <= size:
            flat = np.frombuffer(mm, np_dtype, numel, start) if numel else np.empty(0, np_dtype)
        elif info.compress_type != zipfile.ZIP_STORED:       # not torch's writing: decompressed, CRC checked
            with zipfile.ZipFile(path) as z:
                flat, start = np.frombuffer(z.read(name), np_dtype), None
        else:
            raise ValueError(f'{name} reaches past the end of the file ({size} bytes)')
        storages[key] = _Storage(flat, dtype, path, start, swapped and np_dtype.itemsize > 1)
        return storages[key]

    try:
        return _Unpickler(io.BytesIO(pkl), storage).load()
    except _Refused as e:
        raise UnsafeCheckpointError(
            f'{path}: refused: its pickle asks for {e}, which is not a tensor or plain data. PyTorch files '
            f'are read by a restricted unpickler that knows tensors and plain data only (torch is not '
            f'imported); nothing in the file was run. If you trust it, re-save its state dict with '
            f'torch.save.') from None
    except _Unsupported as e:
        raise ConvertError(f'{path}: unsupported tensor dtype: {e}; supported: {", ".join(DTYPES)}') from None
    except zipfile.BadZipFile as e:
        raise CorruptCheckpointError(f'{path}: corrupt zip archive ({e})') from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            UnicodeDecodeError, RecursionError, OverflowError, MemoryError) as e:
        raise CorruptCheckpointError(
            f'{path}: not a checkpoint this reader accepts: corrupt, or an arbitrary pickle '
            f'({type(e).__name__}: {str(e)[:300]}); nothing in the file was run') from None


def map_leaves(obj, fn):
    """``obj`` with every leaf that is not a dict, list or tuple replaced by ``fn(leaf)``."""
    if isinstance(obj, dict):
        items = ((k, map_leaves(v, fn)) for k, v in obj.items())
        return OrderedDict(items) if isinstance(obj, OrderedDict) else dict(items)
    if isinstance(obj, list):
        return [map_leaves(v, fn) for v in obj]
    if isinstance(obj, tuple):
        return tuple(map_leaves(v, fn) for v in obj)
    return fn(obj)


# --- reading with torch.load(weights_only=True) -------------------------------------------

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


def _torch_load(path, is_zip):
    """``torch.load(path, weights_only=True)`` (memory-mapped for a zip), its errors as
    ConvertErrors naming the file."""
    torch = _torch()
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


def load_torch_file(path, check_crc=True):
    """``torch.load(path, weights_only=True)``, memory-mapped when the file allows it (torch
    tensors; the converter reads with :func:`load` and uses this only as its fallback).
    Returns the loaded object; unsafe, corrupt and truncated files raise ConvertError.
    ``check_crc``: True checks the zip members' CRC-32 first; 'background' returns
    ``(obj, Background or None)`` with the check running alongside."""
    _torch()
    path = str(path)
    check_readable(path)
    is_zip, _ = _zip_or_legacy(path)
    check = _crc_check(path, check_crc) if is_zip else None
    obj = _read_checked(check, lambda: _torch_load(path, is_zip))
    return (obj, check) if check_crc == 'background' else obj


def save_torch(obj, f):
    torch = _torch()
    torch.save(obj, f)


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


def _load_with_torch(path, is_zip):
    """torch.load(weights_only=True), tensors turned into Entries (located in the file when
    torch memory-mapped it)."""
    loaded = _torch_load(path, is_zip)
    tensors = dict(enumerate(all_tensors(loaded)))
    located = locate_tensors_in_file(path, tensors, loaded) if is_zip else {}
    entries = {id(t): entry_from_torch(t) for t in tensors.values()}
    for i, off in located.items():
        entries[id(tensors[i])].file_range = (path, off)
    return map_leaves(loaded, lambda v: entries.get(id(v), v))


# --- the reader ---------------------------------------------------------------------------------

def read_torch_file(path, check_crc=True, reader=None):
    """A PyTorch file -> (object with Entry leaves, pending check or None).

    ``torch.save`` zip files are read by :func:`load` (no torch needed); the legacy pre-1.6
    format, or every file with ``reader='torch'`` (or ``MS_DDPM_TORCH_READER=torch``), by
    ``torch.load(weights_only=True)``.  ``check_crc``: True checks every zip member's CRC-32
    first; 'background' runs the check in a thread and returns it (``.wait()`` raises);
    'deferred' returns it unstarted (``.start()`` it when the CPU is free)."""
    path = str(path)
    check_readable(path)
    reader = reader or os.environ.get(READER_ENV, 'native')
    if reader not in ('native', 'torch'):
        raise ConvertError(f'{READER_ENV}={reader!r}: expected native or torch')
    is_zip, head = _zip_or_legacy(path)
    if not is_zip:
        try:
            import torch  # noqa: F401
        except ImportError:
            if head == LEGACY_MAGIC:
                raise ConvertError(f'{path}: the legacy (pre-1.6, non-zip) torch.save format needs PyTorch to '
                                   f'read (pip install torch), or re-save it with a recent torch.save') from None
            raise CorruptCheckpointError(f'{path}: not a PyTorch checkpoint (neither a torch.save zip archive '
                                         f'nor the legacy format): truncated or corrupt?') from None
        return _load_with_torch(path, is_zip=False), None
    check = _crc_check(path, check_crc)
    return _read_checked(check, lambda: load(path) if reader == 'native' else _load_with_torch(path, is_zip=True)), check


# --- writing -----------------------------------------------------------------------------------

ALIGNMENT = 64
ZIP64_LIMIT = 0xFFFFFFFF      # sizes and offsets from here on need zip64 fields
M32 = 0xFFFFFFFF              # "see the zip64 field"
CRC_BUFFER = 8 << 20


class _GlobalRef:
    """A global written into the pickle (GLOBAL opcode): one object per name, so memoised once."""

    __slots__ = ('module', 'name')

    def __init__(self, module, name):
        self.module, self.name = module, name


class _Pickle:
    """Protocol-2 pickle opcodes for plain data and tensors, written as Python's pickler
    writes what ``torch.save`` hands it (the same opcodes and memo: a state dict pickles to
    the same bytes); every tensor's storage gets a key in order of first appearance."""

    STORAGE, CPU = 'storage', 'cpu'                    # one object each, memoised once, as in torch

    def __init__(self):
        self.out = bytearray(b'\x80\x02')              # PROTO 2
        self.memo = {}                                 # id -> (index, object kept alive)
        self.refs = {}
        self.storages, self.keys = [], {}

    def dumps(self, obj):
        self.save(obj)
        self.out += b'.'                               # STOP
        return bytes(self.out)

    def ref(self, module, name):
        return self.refs.setdefault((module, name), _GlobalRef(module, name))

    def put(self, obj):
        idx = len(self.memo)
        self.memo[id(obj)] = (idx, obj)
        self.out += b'q' + bytes([idx]) if idx < 256 else b'r' + struct.pack('<I', idx)     # BINPUT

    def save(self, obj):
        out = self.out
        hit = self.memo.get(id(obj))
        if hit is not None:                                                                 # BINGET
            out += b'h' + bytes([hit[0]]) if hit[0] < 256 else b'j' + struct.pack('<I', hit[0])
        elif obj is None:
            out += b'N'
        elif obj is True or obj is False:
            out += b'\x88' if obj else b'\x89'
        elif isinstance(obj, Entry):
            self.tensor(obj)
        elif isinstance(obj, _GlobalRef):
            out += f'c{obj.module}\n{obj.name}\n'.encode()
            self.put(obj)
        elif isinstance(obj, np.generic):
            self.save(obj.item())
        elif type(obj) is int:
            if 0 <= obj <= 0xff:
                out += b'K' + bytes([obj])
            elif 0 <= obj <= 0xffff:
                out += b'M' + struct.pack('<H', obj)
            elif -0x80000000 <= obj <= 0x7fffffff:
                out += b'J' + struct.pack('<i', obj)
            else:
                raw = pickle.encode_long(obj)
                out += b'\x8a' + bytes([len(raw)]) + raw if len(raw) < 256 else b'\x8b' + struct.pack('<I', len(raw)) + raw
        elif type(obj) is float:
            out += b'G' + struct.pack('>d', obj)
        elif type(obj) is str:
            raw = obj.encode('utf-8', 'surrogatepass')
            out += b'X' + struct.pack('<I', len(raw)) + raw
            self.put(obj)
        elif type(obj) is tuple:
            if not obj:
                out += b')'
                return
            if len(obj) > 3:
                out += b'('
            for v in obj:
                self.save(v)
            out += b't' if len(obj) > 3 else b'\x85\x86\x87'[len(obj) - 1:len(obj)]
            self.put(obj)
        elif type(obj) is list:
            out += b']'
            self.put(obj)
            self.batches(obj, b'a', b'e')                                # APPEND / APPENDS
        elif type(obj) is dict:
            out += b'}'
            self.put(obj)
            self.batches(list(obj.items()), b's', b'u')                  # SETITEM / SETITEMS
        elif isinstance(obj, OrderedDict):                               # OrderedDict.__reduce__
            self.save(self.ref('collections', 'OrderedDict'))
            out += b')R'
            self.put(obj)
            self.batches(list(obj.items()), b's', b'u')
        else:
            raise TypeError(f'cannot write a {type(obj).__name__} to a PyTorch file (tensors and plain data only)')

    def batches(self, items, one, many):
        """Items (values, or (key, value) pairs for SETITEM) in batches of 1000, as pickle does."""
        for i in range(0, len(items), 1000):
            batch = items[i:i + 1000]
            if len(batch) > 1:
                self.out += b'('                       # MARK
            for item in batch:
                for v in (item if one == b's' else (item,)):
                    self.save(v)
            self.out += many if len(batch) > 1 else one

    def tensor(self, e):
        """torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict()),
        the storage a persistent id ('storage', torch.<Type>Storage, key, 'cpu', numel)."""
        key = self.keys.get(id(e))
        if key is None:
            key = self.keys[id(e)] = str(len(self.storages))
            self.storages.append(e)
        shape, stride, s = e.shape, [], 1
        for d in reversed(shape):                      # contiguous strides, as torch computes them
            stride.append(s)
            s *= max(d, 1)
        self.save(self.ref('torch._utils', '_rebuild_tensor_v2'))
        self.out += b'('
        self.save((self.STORAGE, self.ref('torch', STORAGE_OF[e.dtype]), key, self.CPU,
                   math.prod(shape)))
        self.out += b'Q'                               # BINPERSID
        for v in (0, tuple(shape), tuple(reversed(stride)), False):
            self.save(v)
        self.save(OrderedDict())                       # backward_hooks
        self.out += b't'
        self.put(object())                             # the argument tuple
        self.out += b'R'                               # REDUCE
        self.put(e)


def _flags(size):
    """UTF-8 names; sizes and CRC in a data descriptor after the data, if there is data."""
    return 0x0808 if size else 0x0800


class _ZipWriter:
    """Stored members laid out as torch's writer (miniz) does: a local header whose ``FB``
    extra field pads the data to a multiple of 64, the data, a data descriptor (CRC-32 and
    sizes) after non-empty data, then the central directory and zip64 + classic end records."""

    def __init__(self, f):
        self.f, self.pos, self.members = f, f.tell(), []

    def begin(self, name, size):
        raw = name.encode('utf-8')
        pad = -(self.pos + 30 + len(raw) + 4) % ALIGNMENT
        head = struct.pack('<IHHHHHIIIHH', 0x04034b50, 0, _flags(size), 0, 0, 0, 0, 0, 0, len(raw), 4 + pad)
        self.f.write(head + raw + b'FB' + struct.pack('<H', pad) + b'Z' * pad)
        start = self.pos
        self.pos += len(head) + len(raw) + 4 + pad
        return start

    def end(self, name, header_offset, size, crc):
        if size:
            big = size >= ZIP64_LIMIT or header_offset >= ZIP64_LIMIT
            desc = struct.pack('<IIQQ' if big else '<IIII', 0x08074b50, crc, size, size)
            self.f.write(desc)
            self.pos += len(desc)
        self.members.append([name, header_offset, size, crc, self.pos - 12 - 8 * big if size else None])
        return len(self.members) - 1

    def set_crc(self, i, crc):
        """Fill in member ``i``'s CRC-32 (written as 0 by :meth:`end`)."""
        self.members[i][3] = crc
        if self.members[i][4] is not None:
            self.f.seek(self.members[i][4])
            self.f.write(struct.pack('<I', crc))
            self.f.seek(0, os.SEEK_END)

    def add(self, name, data):
        start = self.begin(name, len(data))
        self.f.write(data)
        self.pos += len(data)
        self.end(name, start, len(data), zlib.crc32(data))

    def close(self):
        cd_start = self.pos
        for name, off, size, crc, _ in self.members:
            raw = name.encode('utf-8')
            extra = b''
            if size >= ZIP64_LIMIT or off >= ZIP64_LIMIT:
                extra = struct.pack('<HHQQQ', 1, 24, size, size, off)
                size32 = off32 = M32
            else:
                size32, off32 = size, off
            self.f.write(struct.pack('<IHHHHHHIIIHHHHHII', 0x02014b50, 0, 0, _flags(size), 0, 0, 0, crc, size32, size32,
                                     len(raw), len(extra), 0, 0, 0, 0, off32) + raw + extra)
            self.pos += 46 + len(raw) + len(extra)
        n, cd_size = len(self.members), self.pos - cd_start
        eocd64 = self.pos
        self.f.write(struct.pack('<IQHHIIQQQQ', 0x06064b50, 44, 0x031e, 45, 0, 0, n, n, cd_size, cd_start))
        self.f.write(struct.pack('<IIQI', 0x07064b50, 0, eocd64, 1))
        self.f.write(struct.pack('<IHHHHIIH', 0x06054b50, 0, 0, min(n, 0xFFFF), min(n, 0xFFFF),
                                 cd_size if cd_size < ZIP64_LIMIT else M32, cd_start if cd_start < ZIP64_LIMIT else M32, 0))
        self.pos += 56 + 20 + 22


def _crc_of(e, fds, buf):
    """CRC-32 of an entry's bytes: read from its file with pread where it lies in one (page
    cache reads into one buffer: the source is not mapped into this process), else from memory."""
    if e.file_range is None:
        return zlib.crc32(e.raw_bytes())
    path, offset = e.file_range
    fd = fds.get(path)
    if fd is None:
        fd = fds[path] = os.open(path, os.O_RDONLY)
    view, left, crc = memoryview(buf), e.nbytes, 0
    while left:
        n = os.preadv(fd, [view[:min(left, len(buf))]], offset)
        if n <= 0:
            raise CorruptCheckpointError(f'{path}: ends before the bytes of a tensor (truncated while being read?)')
        crc = zlib.crc32(view[:n], crc)
        offset += n
        left -= n
    return crc


def _sync_file(f):
    """Flush ``f``, and fsync it if it is a file on disk."""
    f.flush()
    try:
        fd = f.fileno()
    except (OSError, ValueError, AttributeError):     # an in-memory file
        return
    getattr(os, 'fdatasync', os.fsync)(fd)


def write_torch(obj, f, progress=None, stop=None, archive='archive', serialization_id=None):
    """Write ``obj`` (dicts, OrderedDicts, lists, tuples, str, int, float, bool, None and
    :class:`Entry` tensors; an Entry used twice is stored once) to the open binary file ``f``
    as ``torch.save`` does.  Tensor bytes are streamed (kernel copies where they lie in a
    file).  Their CRC-32s are computed afterwards, from the source files, while the disk
    writes the data (an fsync in a thread), and then filled into the data descriptors.
    ``stop``: an Event checked between tensors."""
    pickler = _Pickle()
    pkl = pickler.dumps(obj)
    storages = pickler.storages
    if serialization_id is None:
        serialization_id = str(int.from_bytes(os.urandom(16), 'little')).zfill(40)[:40]
    z = _ZipWriter(f)
    p = archive + '/'
    z.add(p + 'data.pkl', pkl)
    z.add(p + '.format_version', b'1')
    z.add(p + '.storage_alignment', str(ALIGNMENT).encode())
    z.add(p + 'byteorder', sys.byteorder.encode())
    copier = ByteCopier(f)
    members = []
    try:
        for key, e in enumerate(storages):
            check_stop(stop)
            start = z.begin(f'{p}data/{key}', e.nbytes)
            copier.write(e)
            z.pos += e.nbytes
            members.append(z.end(f'{p}data/{key}', start, e.nbytes, 0))
            if progress:
                progress(e.nbytes)
    finally:
        copier.close()
    sync = Background(lambda: _sync_file(f))
    fds, buf = {}, bytearray(CRC_BUFFER)
    try:
        crcs = []
        for e in storages:
            check_stop(stop)
            crcs.append(_crc_of(e, fds, buf))
    finally:
        for fd in fds.values():
            os.close(fd)
        sync.wait()
    for i, crc in zip(members, crcs):
        z.set_crc(i, crc)
    z.add(p + 'version', b'3\n')
    z.add(p + '.data/serialization_id', serialization_id.encode())
    z.close()
