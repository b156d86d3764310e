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

import json
import mmap
import os
import pickle
import sys
import tempfile
import warnings
import zipfile
from collections import OrderedDict

import numpy as np

from weight_convert.rules import EXTENSIONS

# dtype name -> (NumPy storage dtype, safetensors code, MindSpore ckpt tensor_type)
DTYPES = {
    'float32':  (np.float32, 'F32', 'Float32'),
    'float16':  (np.float16, 'F16', 'Float16'),
    'bfloat16': (np.uint16, 'BF16', 'BFloat16'),   # raw bit pattern
    'float64':  (np.float64, 'F64', 'Float64'),
    'int64':    (np.int64, 'I64', 'Int64'),
    'int32':    (np.int32, 'I32', 'Int32'),
    'int16':    (np.int16, 'I16', 'Int16'),
    'int8':     (np.int8, 'I8', 'Int8'),
    'uint8':    (np.uint8, 'U8', 'UInt8'),
    'bool':     (np.bool_, 'BOOL', 'Bool'),
}
SAFETENSORS_DTYPES = {v[1]: k for k, v in DTYPES.items()}
CKPT_DTYPES = {v[2]: k for k, v in DTYPES.items()}

# largest protobuf message written for one tensor slice (MindSpore joins slices on load)
CKPT_SLICE_BYTES = 64 << 20
MAX_SAFETENSORS_HEADER = 100 << 20


class ConvertError(ValueError):
    """A conversion failed for a reason the user can act on; the message names the file."""


class UnsafeCheckpointError(ConvertError):
    """The file's pickle asks to run code or build objects other than tensors and plain data."""


class CorruptCheckpointError(ConvertError):
    """Truncated, corrupt, empty, or not the format its extension says."""


class UnsupportedFormatError(ConvertError):
    """Unknown extension, or a directory."""


class Entry:
    """One tensor: ``data`` holds its raw values (bf16 as uint16 bits), ``dtype`` its name."""

    __slots__ = ('data', 'dtype', 'file_range')

    def __init__(self, data, dtype, file_range=None):
        self.data, self.dtype = data, dtype
        self.file_range = file_range     # (path, offset): the same bytes lie there, contiguous

    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def nbytes(self):
        return int(self.data.nbytes)

    def value(self):
        """The values as a NumPy array (bf16 widened to float32, exactly)."""
        if self.dtype == 'bfloat16':
            return (self.data.astype(np.uint32) << 16).view(np.float32)
        return self.data

    def raw_bytes(self):
        """A C-contiguous byte view of the data (no copy when already contiguous)."""
        return memoryview(np.ascontiguousarray(self.data).reshape(-1).view(np.uint8))

    def __repr__(self):
        return f'Entry({self.dtype}, {self.shape})'

    @classmethod
    def from_numpy(cls, array):
        name = np.dtype(array.dtype).name
        if name not in DTYPES or name == 'uint16':
            raise TypeError(f'unsupported NumPy dtype {array.dtype}')
        return cls(array, name)


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


def check_readable(path):
    """Exists, is a regular file, is not empty."""
    if not os.path.exists(path):
        raise ConvertError(f'{path}: no such file')
    if os.path.isdir(path):
        raise UnsupportedFormatError(f'{path}: is a directory, not a checkpoint file')
    size = os.path.getsize(path)
    if size == 0:
        raise CorruptCheckpointError(f'{path}: is empty (0 bytes)')
    return size


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


# --- copying tensor bytes to an output ------------------------------------------------------

class ByteCopier:
    """Writes entries' bytes to an output file: straight from the source file with
    ``os.copy_file_range`` (in the kernel, as ``cp`` does: no page faults, no copies in this
    process) when the entry knows where its bytes lie in a file, else from its array."""

    def __init__(self, f):
        self.f, self.fds = f, {}
        try:
            self.kernel_copy = hasattr(os, 'copy_file_range') and f.fileno() >= 0
        except (OSError, ValueError, AttributeError):       # an in-memory file
            self.kernel_copy = False

    def write(self, e, start=0, stop=None):
        stop = e.nbytes if stop is None else stop
        if e.file_range is not None and self.kernel_copy and stop > start:
            try:
                self._copy(e.file_range[0], e.file_range[1] + start, stop - start)
                return
            except OSError:
                self.kernel_copy = False        # e.g. EXDEV/ENOSYS on some file systems: plain writes
                self.f.seek(self.pos)
                self.f.truncate()
        self.f.write(e.raw_bytes()[start:stop])

    def _copy(self, path, offset, n):
        self.f.flush()
        out = self.f.fileno()
        self.pos = os.lseek(out, 0, os.SEEK_CUR)
        fd = self.fds.get(path)
        if fd is None:
            fd = self.fds[path] = os.open(path, os.O_RDONLY)
        while n:
            done = os.copy_file_range(fd, out, n, offset)
            if done <= 0:
                raise OSError('copy_file_range made no progress')
            offset += done
            n -= done
        self.f.seek(0, os.SEEK_END)           # resynchronise the buffered writer's position

    def close(self):
        for fd in self.fds.values():
            os.close(fd)
        self.fds = {}


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


# --- safetensors ----------------------------------------------------------------------------

def read_safetensors(path):
    """-> (OrderedDict name -> Entry in file order, metadata dict or None).  Memory-mapped."""
    size = check_readable(path)
    with open(path, 'rb') as f:
        head = f.read(8)
        if len(head) < 8:
            raise CorruptCheckpointError(f'{path}: not a safetensors file (shorter than its 8-byte header length)')
        n = int.from_bytes(head, 'little')
        if n > min(size - 8, MAX_SAFETENSORS_HEADER):
            raise CorruptCheckpointError(
                f'{path}: not a safetensors file, or truncated: header length {n} does not fit in the file ({size} bytes)')
        try:
            header = json.loads(f.read(n).decode('utf-8'))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CorruptCheckpointError(f'{path}: corrupt safetensors header ({e})') from None
        if not isinstance(header, dict):
            raise CorruptCheckpointError(f'{path}: corrupt safetensors header (not a JSON object)')
        meta = header.pop('__metadata__', None)
        data_len = size - 8 - n
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if data_len else b''
    out = []
    for name, info in header.items():
        try:
            dtype, shape = info['dtype'], tuple(int(d) for d in info['shape'])
            begin, end = (int(x) for x in info['data_offsets'])
            if any(d < 0 for d in shape) or not all(isinstance(x, int) for x in info['data_offsets']):
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise CorruptCheckpointError(f'{path}: corrupt safetensors header entry for {name!r}') from None
        if dtype not in SAFETENSORS_DTYPES:
            raise CorruptCheckpointError(f'{path}: {name}: unsupported safetensors dtype {dtype!r}')
        dname = SAFETENSORS_DTYPES[dtype]
        np_dtype = np.dtype(DTYPES[dname][0])
        count = int(np.prod(shape, dtype=np.int64))
        if not (0 <= begin <= end <= data_len) or end - begin != count * np_dtype.itemsize:
            raise CorruptCheckpointError(
                f'{path}: truncated or corrupt: {name} ({dtype}, shape {list(shape)}) claims bytes '
                f'[{begin}, {end}) but the data section holds {data_len} bytes')
        arr = np.frombuffer(buf, dtype=np_dtype, count=count, offset=8 + n + begin) if count else np.empty(0, np_dtype)
        out.append((begin, name, Entry(arr.reshape(shape), dname, (path, 8 + n + begin) if count else None)))
    out.sort(key=lambda r: r[0])
    return OrderedDict((name, e) for _, name, e in out), meta


class Stopped(Exception):
    """A writer was told to stop (the conversion failed elsewhere)."""


def _check_stop(stop):
    if stop is not None and stop.is_set():
        raise Stopped('stopped')


def write_safetensors(entries, f, metadata=None, progress=None, stop=None):
    """Stream ``entries`` (name -> Entry) into the open binary file ``f``; ``stop``: an
    Event checked between tensors."""
    header, offset = {}, 0
    for name, e in entries.items():
        header[name] = {'dtype': DTYPES[e.dtype][1], 'shape': list(e.shape),
                        'data_offsets': [offset, offset + e.nbytes]}
        offset += e.nbytes
    if metadata:
        header['__metadata__'] = {str(k): str(v) for k, v in metadata.items()}
    blob = json.dumps(header, separators=(',', ':')).encode('utf-8')
    blob += b' ' * (-len(blob) % 8)
    f.write(len(blob).to_bytes(8, 'little'))
    f.write(blob)
    out = ByteCopier(f)
    try:
        for e in entries.values():
            _check_stop(stop)
            out.write(e)
            if progress:
                progress(e.nbytes)
    finally:
        out.close()


# --- MindSpore .ckpt ------------------------------------------------------------------------

def _checkpoint_pb2():
    from mindspore.train.checkpoint_pb2 import Checkpoint
    return Checkpoint


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7f
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


# MindSpore's checkpoint.proto (proto2): Checkpoint{repeated Value value = 1};
# Value{required string tag = 1; required TensorProto tensor = 2; ...};
# TensorProto{repeated int64 dims = 1; required string tensor_type = 2; required bytes tensor_content = 3}
_LEN = lambda num: bytes([(num << 3) | 2])       # key of a length-delimited field
_VARINT_KEY = lambda num: bytes([num << 3])      # key of a varint field


def ckpt_slice_prefix(name, dims, tensor_type, n):
    """The bytes of one serialized ``Checkpoint`` message (one ``value``: tag, dims,
    tensor_type and an ``n``-byte tensor_content) up to where tensor_content's bytes start.
    Writing these and then the raw data gives exactly ``Checkpoint.SerializeToString()``
    (a test compares them), without building protobuf objects or copying the data."""
    tag = name.encode('utf-8')
    ttype = tensor_type.encode('utf-8')
    tensor = b''.join(_VARINT_KEY(1) + _varint(int(d)) for d in dims)
    tensor += _LEN(2) + _varint(len(ttype)) + ttype + _LEN(3) + _varint(n)
    value = _LEN(1) + _varint(len(tag)) + tag + _LEN(2) + _varint(len(tensor) + n) + tensor
    return _LEN(1) + _varint(len(value) + n) + value


def write_ckpt(entries, f, progress=None, stop=None):
    """Stream ``entries`` into ``f`` as MindSpore's checkpoint protobuf, one message per
    tensor slice (what ``mindspore.save_checkpoint`` writes; ``load_checkpoint`` joins
    slices); the data go from the source buffer straight to the file."""
    out = ByteCopier(f)
    try:
        for name, e in entries.items():
            _check_stop(stop)
            dims = list(e.shape)
            ttype = DTYPES[e.dtype][2]
            for start in range(0, max(e.nbytes, 1), CKPT_SLICE_BYTES):
                end = min(start + CKPT_SLICE_BYTES, e.nbytes)
                f.write(ckpt_slice_prefix(name, dims, ttype, end - start))
                out.write(e, start, end)
            if progress:
                progress(e.nbytes)
    finally:
        out.close()


def _read_varint(buf, pos, end):
    result = shift = 0
    while True:
        if pos >= end:
            raise IndexError('varint runs past the end')
        b = buf[pos]
        pos += 1
        result |= (b & 0x7f) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError('varint too long')


def _fields(buf, pos, end):
    """Yield (field number, wire type, value or (start, stop)) of a protobuf message in
    ``buf[pos:end]``: varints as ints, length-delimited fields as byte ranges (no copies)."""
    while pos < end:
        key, pos = _read_varint(buf, pos, end)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = _read_varint(buf, pos, end)
            yield num, wire, val
        elif wire == 2:
            n, pos = _read_varint(buf, pos, end)
            if pos + n > end:
                raise IndexError(f'field {num} ({n} bytes) runs past the end')
            yield num, wire, (pos, pos + n)
            pos += n
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            if pos > end:
                raise IndexError('fixed-size field runs past the end')
        else:
            raise ValueError(f'unsupported protobuf wire type {wire}')


CKPT_CRC_TRAILER = b'crc_num'


def read_ckpt(path):
    """-> (OrderedDict name -> Entry, {name: str} of string entries).  Walks MindSpore's
    checkpoint protobuf (``Checkpoint{repeated Value value = 1}``, ``Value{tag = 1,
    TensorProto tensor = 2}``, ``TensorProto{dims = 1, tensor_type = 2, tensor_content = 3}``)
    over a memory map: tensors are views of the file, not copies; bf16 stays raw."""
    size = check_readable(path)
    with open(path, 'rb') as fh:
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    end = size
    if size >= 17 and mm[size - 17:size - 10] == CKPT_CRC_TRAILER:   # save_checkpoint(crc_check=True)
        import zlib
        end = size - 17
        stored = int.from_bytes(mm[size - 10:size], 'big')      # crc32 chained over every message
        if zlib.crc32(memoryview(mm)[:end]) != stored:
            raise CorruptCheckpointError(f'{path}: corrupt: the checkpoint fails its CRC-32 check '
                                         f'(MindSpore crc_check trailer)')
    slices = []          # (tag, dims, tensor_type, start, stop)
    try:
        for num, wire, val in _fields(mm, 0, end):
            if num != 1 or wire != 2:
                raise ValueError(f'unexpected top-level field {num}')
            tag, tensor = None, None
            for vnum, vwire, vval in _fields(mm, *val):
                if vnum == 1 and vwire == 2:
                    tag = bytes(mm[vval[0]:vval[1]]).decode('utf-8')
                elif vnum == 2 and vwire == 2:
                    tensor = vval
                elif vnum == 3:
                    raise ValueError('map parameters (MapParameter) are not supported')
            if tag is None or tensor is None:
                raise ValueError('a checkpoint value without a name or a tensor')
            dims, ttype, content = [], None, (0, 0)
            for tnum, twire, tval in _fields(mm, *tensor):
                if tnum == 1 and twire == 0:
                    dims.append(tval)
                elif tnum == 1 and twire == 2:          # packed dims
                    p, q = tval
                    while p < q:
                        d, p = _read_varint(mm, p, q)
                        dims.append(d)
                elif tnum == 2 and twire == 2:
                    ttype = bytes(mm[tval[0]:tval[1]]).decode('utf-8')
                elif tnum == 3 and twire == 2:
                    content = tval
            slices.append((tag, tuple(dims), ttype, content[0], content[1]))
    except (IndexError, ValueError, UnicodeDecodeError) as e:
        raise CorruptCheckpointError(f'{path}: not a MindSpore checkpoint, or truncated/corrupt ({e})') from None

    out, strings = OrderedDict(), {}
    i = 0
    while i < len(slices):
        tag, dims, ttype, _, _ = slices[i]
        j = i
        while j + 1 < len(slices) and slices[j + 1][:3] == (tag, dims, ttype):
            j += 1                                   # consecutive slices of one tensor
        parts = [(a, b) for _, _, _, a, b in slices[i:j + 1]]
        i = j + 1
        nbytes = sum(b - a for a, b in parts)
        if ttype == 'str':
            raw = b''.join(bytes(mm[a:b]) for a, b in parts)
            strings[tag] = str(np.frombuffer(raw, f'U{len(raw) // 4}')[0]) if raw else ''
            continue
        if ttype not in CKPT_DTYPES:
            raise CorruptCheckpointError(f'{path}: {tag}: unsupported MindSpore tensor type {ttype!r}')
        dname = CKPT_DTYPES[ttype]
        np_dtype = np.dtype(DTYPES[dname][0])
        shape = () if list(dims) == [0] else dims
        count = int(np.prod(shape, dtype=np.int64))
        if nbytes != count * np_dtype.itemsize:
            raise CorruptCheckpointError(
                f'{path}: truncated or corrupt: {tag} ({ttype}, shape {list(shape)}) holds {nbytes} bytes, '
                f'expected {count * np_dtype.itemsize}')
        file_range = None
        if len(parts) == 1:
            arr = np.frombuffer(mm, dtype=np_dtype, count=count, offset=parts[0][0]) if count else np.empty(0, np_dtype)
            file_range = (path, parts[0][0]) if count else None
        else:
            arr = np.concatenate([np.frombuffer(mm, dtype=np_dtype, count=(b - a) // np_dtype.itemsize, offset=a)
                                  for a, b in parts])
        out[tag] = Entry(arr.reshape(shape), dname, file_range)
    if not out:
        raise CorruptCheckpointError(f'{path}: not a MindSpore checkpoint (no tensors in it)')
    return out, strings


# --- atomic output --------------------------------------------------------------------------

class AtomicFile:
    """A temporary file beside ``dst``; :meth:`commit` renames it onto ``dst``, :meth:`abort`
    deletes it.  Used as a context manager it aborts on any exception."""

    def __init__(self, dst):
        self.dst = os.path.abspath(str(dst))
        d = os.path.dirname(self.dst)
        if not os.path.isdir(d):
            raise ConvertError(f'{dst}: destination directory {d} does not exist')
        if os.path.isdir(self.dst):
            raise UnsupportedFormatError(f'{dst}: is a directory; give a file name')
        fd, self.tmp = tempfile.mkstemp(prefix='.' + os.path.basename(self.dst) + '.', suffix='.tmp', dir=d)
        self.file = os.fdopen(fd, 'wb')
        self.done = False

    def commit(self):
        self.close()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o666 & ~umask)
        os.replace(self.tmp, self.dst)
        self.done = True

    def sync(self):
        """Flush and fsync what was written so far (the file stays open)."""
        self.file.flush()
        getattr(os, 'fdatasync', os.fsync)(self.file.fileno())

    def close(self):
        if not self.file.closed:
            self.sync()
            self.file.close()

    def abort(self):
        if not self.file.closed:
            self.file.close()
        if not self.done and os.path.exists(self.tmp):
            os.unlink(self.tmp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        elif not self.done:
            self.commit()
        return False
