"""Weight files of every supported format: which format a path names, and the one
dispatcher that reads a file with that format's reader.

Each reader is self-contained:
- PyTorch ``.pt/.pth/.bin``: :func:`weight_convert.torchfile.read_torch_file` (``torch.save``'s
  zip format read without torch by an allow-list unpickler that never runs anything from
  the file; the legacy pre-1.6 format by ``torch.load(weights_only=True)``); the zip members'
  CRC-32s are checked, now or in a thread alongside.
- ``.safetensors``: :func:`ms_ddpm.io.checkpoint.read_safetensors` (memory-mapped).
- MindSpore ``.ckpt``: :func:`ms_ddpm.io.checkpoint.read_ckpt` (a bounds-checked walk of the
  protobuf over a memory map; MindSpore's crc_check trailer is checked).

Every tensor is an :class:`Entry` (``ms_ddpm.io.checkpoint``): raw values, bf16 as its bit
pattern, and where its bytes lie in the file, so a writer copies them with the kernel.
Writers: :data:`WRITERS`; every output goes through the one atomic writer
(``ms_ddpm.io.atomic.AtomicFile``), so a failed conversion never leaves a half-written file.
"""

import os

from ms_ddpm.io.checkpoint import read_ckpt, read_safetensors, write_ckpt, write_safetensors
from ms_ddpm.io.errors import (  # noqa: F401  (re-exported: weight_convert.ConvertError ...)
    ConvertError, CorruptCheckpointError, DestinationError, UnsafeCheckpointError, UnsupportedFormatError,
)
from weight_convert.rules import EXTENSIONS
from weight_convert.torchfile import (  # noqa: F401  (the torch.load path: reference-Trainer interop, verify)
    load_torch_file, read_torch_file, save_torch, torch_from_entry, write_torch,
)


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


# --- the one dispatcher --------------------------------------------------------------------------

def _read_torch(path, check_crc):
    return read_torch_file(path, check_crc=check_crc) + (None,)


def _read_safetensors(path, check_crc):
    entries, metadata = read_safetensors(path)
    return entries, None, metadata


def _read_ckpt(path, check_crc):
    entries, strings = read_ckpt(path)
    return entries, None, strings


# format -> reader(path, check_crc) -> (object, pending check or None, metadata or None)
READERS = {'torch': _read_torch, 'safetensors': _read_safetensors, 'mindspore': _read_ckpt}

# format -> writer(entries or object, open binary file, progress=, stop=, ...)
WRITERS = {'torch': write_torch, 'safetensors': write_safetensors, 'mindspore': write_ckpt}


def read_file(path, check_crc=True):
    """Read a weights file with its format's reader -> ``(format, object, pending check,
    metadata)``.  ``object``: what the file holds, tensors as Entries (a ``torch.save`` file
    may hold any plain data, e.g. a Trainer checkpoint; the others a flat OrderedDict);
    ``pending check``: the zip CRC-32 check still running or deferred (``check_crc`` =
    'background' / 'deferred'), else None; ``metadata``: the safetensors metadata or a
    .ckpt's string entries."""
    path = str(path)
    fmt = format_of(path)
    obj, pending, metadata = READERS[fmt](path, check_crc)
    return fmt, obj, pending, metadata
