"""The errors of reading and writing files, shared by every layer above (the converter
re-exports them under their historical names: ``weight_convert.ConvertError`` ...).

Each carries one line that names the problem; the commands print it and exit with the code
of its kind (``ms_ddpm_tools.exits``)."""


class ConvertError(ValueError):
    """A file could not be read or written as asked (the base of every I/O error here)."""


class UnsafeCheckpointError(ConvertError):
    """A file would need code execution (a pickled global outside the allow-list) to load."""


class CorruptCheckpointError(ConvertError):
    """A file is truncated, inconsistent or fails its checksum."""


class UnsupportedFormatError(ConvertError):
    """A file name or content of a kind no reader or writer handles."""


class DestinationError(ConvertError):
    """The output cannot be written there (missing folder, a directory, an existing file,
    a read-only or full file system)."""
