"""Work in a thread alongside the conversion: the integrity check of a source (zip CRC-32)
and the writer of an output both run as a :class:`Background` (zlib, file reads and writes
release the GIL, so they overlap the rest of the conversion)."""

import threading

from ms_ddpm.io.errors import ConvertError


class Background:
    """Runs ``fn`` in a thread, from now or from :meth:`start`; :meth:`wait` (which starts it
    if need be) re-raises its error."""

    def __init__(self, fn, start=True):
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
