"""``.safetensors`` and MindSpore ``.ckpt`` files: read memory-mapped, written streamed,
without extra copies of the data (layer (a): every layer above reads and writes them here).

Every tensor travels as an :class:`Entry`: a NumPy array of its raw values plus its dtype
name.  bfloat16 (which NumPy lacks) is carried as its raw 16-bit pattern (``uint16``), so a
bf16 tensor is never rounded on its way between files; where a NumPy *value* is needed
(loading into a network, ``--verify``) it is widened to float32, which holds every bf16
value exactly (:meth:`Entry.value`).

- ``.safetensors``: an 8-byte header length, a JSON header, raw little-endian data;
  memory-mapped on read and streamed tensor by tensor on write; bf16 is stored natively as
  ``BF16``.  Files are readable by the ``safetensors`` package and by MindSpore.
- MindSpore ``.ckpt``: MindSpore's checkpoint protobuf (``checkpoint_pb2.Checkpoint``),
  one message per tensor (slice) as ``mindspore.save_checkpoint`` writes it, framed here
  byte for byte (no protobuf objects, no copies of the data); read by a bounds-checked walk
  of the protobuf over a memory map.  bf16 is stored as MindSpore ``BFloat16``
  (``ms.load_checkpoint`` returns ``ms.bfloat16``).

Tensor bytes that lie contiguously in a source file are copied to the output by the kernel
(:class:`ByteCopier`: ``os.copy_file_range``, like ``cp``); others are written from memory.
Errors are those of :mod:`ms_ddpm.io.errors`; the writers take an open file (an
:class:`ms_ddpm.io.atomic.AtomicFile`'s ``file``, so a failed write leaves nothing behind).
"""

import json
import math
import mmap
import os
import zlib
from collections import OrderedDict

import numpy as np

from ms_ddpm.io.errors import ConvertError, CorruptCheckpointError, UnsupportedFormatError

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


# --- checks shared by every reader and writer ----------------------------------------------


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


class Stopped(Exception):
    """A writer was told to stop (the conversion failed elsewhere)."""


def check_stop(stop):
    """Raise :class:`Stopped` if the Event ``stop`` (or None) is set."""
    if stop is not None and stop.is_set():
        raise Stopped('stopped')


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
        count = math.prod(shape)                  # exact: an int64 product can wrap
        if not (0 <= begin <= end <= data_len) or end - begin != count * np_dtype.itemsize:
            raise CorruptCheckpointError(
                f'{path}: truncated or corrupt: {name} ({dtype}, shape {list(shape)}) claims bytes '
                f'[{begin}, {end}), {end - begin} bytes, but that shape needs {count * np_dtype.itemsize} '
                f'and the data section holds {data_len}')
        arr = np.frombuffer(buf, dtype=np_dtype, count=count, offset=8 + n + begin) if count else np.empty(0, np_dtype)
        out.append((begin, name, Entry(_reshape(arr, shape, path, name), dname,
                                       (path, 8 + n + begin) if count else None)))
    out.sort(key=lambda r: r[0])
    return OrderedDict((name, e) for _, name, e in out), meta


def _reshape(arr, shape, path, name):
    """``arr.reshape(shape)``, a shape NumPy cannot represent (e.g. an empty tensor with a
    dimension past 2**63) as a one-line CorruptCheckpointError."""
    try:
        return arr.reshape(shape)
    except (ValueError, OverflowError) as e:
        raise CorruptCheckpointError(f'{path}: corrupt: {name} has shape {list(shape)} ({e})') from None


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
            check_stop(stop)
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


def ckpt_string_bytes(text):
    """A string entry's tensor_content as ``mindspore.save_checkpoint`` writes an
    ``append_dict`` string (``np.array(text).tobytes()``: UTF-32, 4 bytes a character)."""
    return np.array(str(text)).tobytes()


def write_ckpt(entries, f, progress=None, stop=None, strings=None, crc_check=True):
    """Stream ``entries`` into ``f`` as MindSpore's checkpoint protobuf, one message per
    tensor slice (what ``mindspore.save_checkpoint`` writes; ``load_checkpoint`` joins
    slices); the data go from the source buffer straight to the file.  ``strings``:
    ``{name: str}`` written after the tensors as string entries (``save_checkpoint``'s
    ``append_dict`` strings; ``load_checkpoint`` returns them as ``str``, and
    ``load_param_into_net`` lists them as not loaded).  ``crc_check``: end the file with
    MindSpore's ``crc_num`` trailer (the CRC-32 of every byte before it, as
    ``save_checkpoint(crc_check=True)`` writes; checked by :func:`read_ckpt` and by
    ``load_checkpoint(crc_check=True)``)."""
    out = ByteCopier(f)
    crc = 0
    try:
        for name, e in entries.items():
            check_stop(stop)
            dims = list(e.shape)
            ttype = DTYPES[e.dtype][2]
            raw = e.raw_bytes() if crc_check else None
            for start in range(0, max(e.nbytes, 1), CKPT_SLICE_BYTES):
                end = min(start + CKPT_SLICE_BYTES, e.nbytes)
                prefix = ckpt_slice_prefix(name, dims, ttype, end - start)
                f.write(prefix)
                out.write(e, start, end)
                if crc_check:
                    crc = zlib.crc32(raw[start:end], zlib.crc32(prefix, crc))
            if progress:
                progress(e.nbytes)
        for name, text in (strings or {}).items():
            content = ckpt_string_bytes(text)
            blob = ckpt_slice_prefix(name, [0], 'str', len(content)) + content
            f.write(blob)
            crc = zlib.crc32(blob, crc)
        if crc_check:
            f.write(CKPT_CRC_TRAILER + crc.to_bytes(10, 'big'))
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
        count = math.prod(shape)                  # exact: an int64 product can wrap
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
        out[tag] = Entry(_reshape(arr, shape, path, tag), dname, file_range)
    if not out:
        raise CorruptCheckpointError(f'{path}: not a MindSpore checkpoint (no tensors in it)')
    return out, strings
