"""Every building block, PyTorch vs MindSpore, same weights and inputs, PyNative and GRAPH:
the ``forward`` rows of ``parity.cases`` (all reference modules) other than whole networks."""

import pytest

from parity.cases import rows, with_modes
from parity.compare import assert_parity
from parity.harness import build_pair, case_inputs, run_torch, run_ms

LAYERS = rows('forward', not_kind='unet')


@pytest.mark.parametrize('case,mode', with_modes(LAYERS))
def test_layer(case, mode, record):
    t, m = build_pair(case)
    inputs = case_inputs(case)
    record(assert_parity(f'layer {case.id} [{mode}]', run_torch(t, inputs), run_ms(m, inputs, mode), case.kind))
