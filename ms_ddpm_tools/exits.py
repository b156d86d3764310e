"""Exit codes of every ``ms-ddpm`` command (documented in each ``--help``).

0  success (verify: PASS; diff: no regression; convert: written, and verified with --verify)
1  error: the input could not be used (missing, corrupt or unsafe file, OS error, a config
   that cannot be resolved); one line on stderr names the problem, nothing is written
2  usage: a bad command line (argparse)
3  a failed verdict: verify FAIL, a regression found by diff / verify --baseline, convert
   --verify found outputs that differ
"""

import sys

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_FAILED = 0, 1, 2, 3

EPILOG = ('exit status: 0 success; 1 error (the input could not be used: one line on stderr, nothing written); '
          '2 bad command line; 3 failed verdict (verify FAIL, a regression, convert --verify differs)')


def error(prog, message):
    """Print ``prog: error: message`` (one line) on stderr; returns EXIT_ERROR."""
    print(f'{prog}: error: {message}', file=sys.stderr)
    return EXIT_ERROR


class InputError(ValueError):
    """A tool's input cannot be used (one line: what is missing or inconsistent)."""


def input_errors():
    """The exception types that mean 'this input cannot be used' (not a bug): reported as one
    line with EXIT_ERROR by every command."""
    from ms_ddpm.io.errors import ConvertError
    from ms_ddpm.io.state import StateDictMismatchError
    return (ConvertError, InputError, StateDictMismatchError, OSError)
