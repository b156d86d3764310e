"""The golden fixture file of ``verify`` (read and written by ``engine``; recorded by
``fixtures``): the project's one fixture layout (``parity.fixtures``), format ``FORMAT``."""

FORMAT = 'ms_ddpm-verify-fixture'


def save_verify_fixture(path, meta, state_dict, inputs, expected):
    from parity.fixtures import pack, save_fixture
    save_fixture(path, meta, pack({'w': state_dict, 'in': inputs, 'out': expected}))


def load_verify_fixture(path):
    """(meta, weights, inputs, reference outputs) of a verify fixture."""
    from ms_ddpm_tools.verify.core import VerifyError
    from parity.fixtures import load_fixture, subtree
    meta, arrays = load_fixture(path)
    if meta.get('format') != FORMAT:
        raise VerifyError(f'{path}: not a verify fixture (format {meta.get("format")!r}; expected {FORMAT!r})')
    return (meta,) + tuple(subtree(arrays, p) for p in ('w', 'in', 'out'))
