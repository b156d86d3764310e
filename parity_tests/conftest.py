import os
import sys
from types import SimpleNamespace

import pytest

# one thread each, so both frameworks see the same CPU and timings are stable on 2 cores
os.environ.setdefault('OMP_NUM_THREADS', '1')

RESULTS = []   # every comparison of this session (Diff.as_dict, collected from the reports), for the summary table


@pytest.fixture(scope='session', autouse=True)
def _frameworks():
    import torch
    torch.set_num_threads(1)
    import mindspore as ms
    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_device('CPU')
    yield


@pytest.fixture
def record(request):
    """Keeps a comparison for the summary table: on the test's report (``user_properties``), so
    that the table also collects the comparisons of ``pytest -n 2`` workers (pytest-xdist)."""
    def _record(r):
        request.node.user_properties.append(('parity', r.as_dict()))
        return r
    return _record


# the files that take longest (measured with --durations, 2026-12-03), run first: pytest-xdist's
# --dist loadfile hands out whole files in collection order, so a long file collected last would
# run alone on one worker while the other idles (the suite's wall time is the longer worker's)
HEAVY_FIRST = ('test_trainer_processes.py', 'test_diffusion.py', 'test_processes.py', 'test_trainer.py',
               'test_training.py', 'test_trainer_guided_repaint.py', 'test_karras_1d_3d.py', 'test_1d.py',
               'test_karras.py', 'test_cli_train.py', 'test_verify_against.py', 'test_convert_karras.py',
               'test_fixtures.py', 'test_cli_cfg.py', 'test_convert_families.py', 'test_trainer_resume.py')


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(os.path.basename(str(item.fspath)), len(rank)))    # stable: in-file order kept


def pytest_runtest_logreport(report):
    if report.when == 'call':
        RESULTS.extend(SimpleNamespace(**v) for k, v in report.user_properties if k == 'parity')


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    tr = terminalreporter
    rows = sorted(RESULTS, key=lambda r: -r.rel_fro)
    shown = rows if len(rows) <= 40 else rows[:40]
    tr.section(f'parity: {len(rows)} comparisons, worst {len(shown)} by relative error')
    tr.write_line(f'{"comparison":58s} {"rel_fro":>10s} {"max_abs":>10s} {"max_rel":>10s} {"cosine":>12s} {"tol":>8s}')
    for r in shown:
        tr.write_line(f'{r.name[:58]:58s} {r.rel_fro:10.2e} {r.max_abs:10.2e} {r.max_rel:10.2e} {r.cosine:12.9f} {r.tol!s:>8s}')
    path = os.environ.get('PARITY_REPORT')
    if path:
        from ms_ddpm.io.records import write_json
        write_json(path, [vars(r) for r in RESULTS])
        tr.write_line(f'every comparison written to {path}')


@pytest.fixture(scope='module')
def pairs():
    """One (torch, MindSpore) pair per parity row, built once per test module:
    ``pairs(case)`` -> ``parity.harness.build_pair(case)``, cached by the row's id."""
    from parity.harness import build_pair
    cache = {}

    def get(case):
        if case.id not in cache:
            cache[case.id] = build_pair(case)
        return cache[case.id]
    return get
