"""Every building block, PyTorch vs MindSpore, same weights and inputs, PyNative and GRAPH."""

import pytest

from parity_tests.cases import LAYER_CASES
from parity.compare import assert_parity
from parity_tests.harness import MODES, build_pair, make_inputs, run_torch, run_ms


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('case', LAYER_CASES, ids=[c[0] for c in LAYER_CASES])
def test_layer(case, mode, record):
    case_id, name, args, kwargs, specs, kind = case
    t, m = build_pair(name, args, kwargs)
    inputs = make_inputs(specs)
    record(assert_parity(f'layer {case_id} [{mode}]', run_torch(t, inputs), run_ms(m, inputs, mode), kind))
