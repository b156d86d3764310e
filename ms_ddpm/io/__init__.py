"""Layer (a), with ``ms_ddpm.ms_compat``: small shared I/O that every layer above uses.

- ``errors``: the error hierarchy of reading and writing files;
- ``atomic``: the one atomic writer (``AtomicFile``, ``atomic_write``, ``atomic_save``);
- ``records``: JSON output (``jsonable``, ``write_json``) and the versions/machine record;
- ``checkpoint``: ``.ckpt`` and ``.safetensors`` readers and writers (``Entry`` tensors,
  memory-mapped reads, streamed writes);
- ``state``: strict all-or-nothing state loading (``load_state_dict``, ``check_state_dict``,
  ``StateDictMismatchError``, ``ms_state_dict``, ``to_numpy``).
"""

from ms_ddpm.io.errors import (
    ConvertError,
    CorruptCheckpointError,
    DestinationError,
    UnsafeCheckpointError,
    UnsupportedFormatError,
)
from ms_ddpm.io.atomic import AtomicFile, atomic_save, atomic_write, clear_stale_temporaries
from ms_ddpm.io.records import jsonable, machine, versions, write_json
from ms_ddpm.io.checkpoint import (
    DTYPES,
    ByteCopier,
    Entry,
    Stopped,
    check_readable,
    check_stop,
    read_ckpt,
    read_safetensors,
    write_ckpt,
    write_safetensors,
)
from ms_ddpm.io.state import (
    StateDictMismatchError,
    check_state_dict,
    differences,
    load_state_dict,
    ms_state_dict,
    to_numpy,
)
