"""Layer (a), with ``ms_ddpm.ms_compat``: small shared I/O that every layer above uses.

- ``errors``: the error hierarchy of reading and writing files;
- ``atomic``: the one atomic writer (``AtomicFile``, ``atomic_write``, ``atomic_save``);
- ``records``: JSON output (``jsonable``, ``write_json``) and the versions/machine record.

Checkpoint readers/writers (``.ckpt``, ``.safetensors``) and strict all-or-nothing state
loading live here too (``ms_ddpm.io.checkpoint``, ``ms_ddpm.io.state``).
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
