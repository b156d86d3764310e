"""The one atomic writer: every file the project writes goes through :class:`AtomicFile`
(or :func:`atomic_write`, its one-call form).

A temporary file in the destination's folder (hidden, named after the destination, so a
later run can recognise and clear what a killed one left), fsynced, given the mode a new
file would get (0o666 less the umask), then renamed onto the destination.  Readers never
see a half-written file, and on any exception nothing is left behind.
"""

import errno
import os
import tempfile

from ms_ddpm.io.errors import DestinationError

TMP_SUFFIX = '.tmp'


def tmp_prefix(dst):
    return '.' + os.path.basename(dst) + '.'


def new_file_mode():
    """The mode ``open(path, 'w')`` gives a new file: 0o666 less the umask (mkstemp makes
    0o600 files and ``mindspore.save_checkpoint`` 0o400 ones)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def os_error_line(err, path):
    """One line for an OSError met while writing ``path``."""
    why = {errno.EROFS: 'read-only file system', errno.EACCES: 'permission denied',
           errno.EPERM: 'operation not permitted', errno.ENOSPC: 'no space left on device',
           errno.EDQUOT: 'disk quota exceeded', errno.ENOENT: 'no such file or directory',
           errno.EISDIR: 'is a directory', errno.ENOTDIR: 'not a directory'}.get(err.errno)
    return f'{path}: cannot write: {why or err.strerror or err}'


class AtomicFile:
    """A temporary file beside ``dst``; :meth:`commit` fsyncs it and renames it onto ``dst``,
    :meth:`abort` deletes it.  Used as a context manager it commits on success and aborts on
    any exception.  ``file`` is the binary file object to write to.

    Errors of the destination (missing folder, a directory, read-only or full file system,
    permissions) raise :class:`DestinationError` with one line naming the problem."""

    def __init__(self, dst, overwrite=True):
        self.dst = os.path.abspath(str(dst))
        d = os.path.dirname(self.dst)
        if not os.path.isdir(d):
            raise DestinationError(f'{dst}: destination directory {d} does not exist')
        if os.path.isdir(self.dst):
            raise DestinationError(f'{dst}: is a directory; give a file name')
        if not overwrite and os.path.lexists(self.dst):
            raise DestinationError(f'{dst}: exists; give --force to overwrite it')
        try:
            fd, self.tmp = tempfile.mkstemp(prefix=tmp_prefix(self.dst), suffix=TMP_SUFFIX, dir=d)
        except OSError as err:
            raise DestinationError(os_error_line(err, dst)) from None
        self.file = os.fdopen(fd, 'wb')
        self.done = False

    def write(self, data):
        return self.file.write(data)

    def sync(self):
        """Flush and fsync what was written so far (the file stays open)."""
        self.file.flush()
        getattr(os, 'fdatasync', os.fsync)(self.file.fileno())

    def close(self):
        if not self.file.closed:
            self.sync()
            self.file.close()

    def commit(self):
        try:
            self.close()
            os.chmod(self.tmp, new_file_mode())
            os.replace(self.tmp, self.dst)
        except OSError as err:
            self.abort()
            raise DestinationError(os_error_line(err, self.dst)) from None
        self.done = True
        _sync_dir(os.path.dirname(self.dst))

    def abort(self):
        try:
            if not self.file.closed:
                self.file.close()
        except OSError:
            pass
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


def _sync_dir(d):
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, data=None, writer=None, overwrite=True):
    """Write ``data`` (bytes or str) to ``path`` atomically, or call ``writer(f)`` with the
    binary file object; returns ``path``."""
    with AtomicFile(path, overwrite=overwrite) as out:
        if writer is not None:
            writer(out.file)
        else:
            out.file.write(data.encode() if isinstance(data, str) else data)
    return path


def atomic_save(path, save, overwrite=True):
    """For libraries that write to a path themselves (``PIL.Image.save``,
    ``mindspore.save_checkpoint``, ``numpy.savez``): ``save(tmp_path)`` writes the temporary
    file, which is then fsynced and renamed onto ``path`` like any :class:`AtomicFile`."""
    with AtomicFile(path, overwrite=overwrite) as out:
        out.file.close()
        save(out.tmp)
        with open(out.tmp, 'rb+') as f:
            getattr(os, 'fdatasync', os.fsync)(f.fileno())
    return path


def clear_stale_temporaries(dst):
    """Remove the hidden temporaries an earlier, killed run left beside ``dst`` (files named
    ``.<dst name>.*.tmp`` by :class:`AtomicFile`); returns their paths."""
    d = os.path.dirname(os.path.abspath(str(dst))) or '.'
    prefix = tmp_prefix(str(dst))
    gone = []
    try:
        names = os.listdir(d)
    except OSError:
        return gone
    for name in names:
        if name.startswith(prefix) and name.endswith(TMP_SUFFIX):
            try:
                os.unlink(os.path.join(d, name))
                gone.append(os.path.join(d, name))
            except OSError:
                pass
    return gone
