"""Bad input: the same clear errors as the reference; nothing loaded half-way."""

import numpy as np
import pytest

import mindspore as ms

from parity.cases import rows, with_modes
from parity.harness import build_pair, case_inputs, run_ms, run_torch
from weight_convert import StateDictMismatchError, load_torch_state_dict


@pytest.mark.parametrize('case,mode', with_modes(rows('forward_error')))
def test_indivisible_image_size_same_error_as_reference(case, mode):
    exc, match, ms_match = case.raises
    t, m = build_pair(case)
    inputs = case_inputs(case)
    with pytest.raises(exc) as te:
        run_torch(t, inputs)
    with pytest.raises(exc) as me:
        run_ms(m, inputs, mode)
    assert match in str(te.value)
    assert ms_match in str(me.value)


def test_state_dict_from_other_config_is_reported_and_nothing_loaded():
    import denoising_diffusion_pytorch as ddp
    import ms_ddpm
    m = ms_ddpm.Unet(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8)
    before = {n: p.asnumpy().copy() for n, p in m.parameters_and_names()}
    other = ddp.Unet(dim=16, dim_mults=(1, 2, 4), attn_heads=2, attn_dim_head=8, self_condition=True)
    sd = other.state_dict()
    with pytest.raises(StateDictMismatchError) as e:
        load_torch_state_dict(m, sd)
    msg = str(e.value)
    assert 'nothing was loaded' in msg
    assert 'unexpected key(s)' in msg and 'downs.2.0.block1.proj.weight' in msg
    assert 'shape mismatch' in msg and 'init_conv.weight: (16, 6, 7, 7) vs (8, 3, 7, 7)' in msg
    assert e.value.unexpected and e.value.mismatched
    after = {n: p.asnumpy() for n, p in m.parameters_and_names()}
    assert all(np.array_equal(before[k], after[k]) for k in before), 'a failed load changed parameters'


def test_missing_keys_are_all_listed():
    import denoising_diffusion_pytorch as ddp
    import ms_ddpm
    cfg = dict(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8)
    sd = ddp.Unet(**cfg).state_dict()
    dropped = ['final_conv.bias', 'mid_attn.mem_kv', 'downs.0.2.to_out.1.g']
    for k in dropped:
        del sd[k]
    with pytest.raises(StateDictMismatchError) as e:
        load_torch_state_dict(ms_ddpm.Unet(**cfg), sd)
    assert sorted(e.value.missing) == sorted(dropped)
    for k in dropped:
        assert k in str(e.value)


def test_reference_version_is_enforced(monkeypatch):
    from importlib import metadata
    import reference.builders as rb
    real = metadata.version
    monkeypatch.setattr(rb.metadata, 'version', lambda name: '2.3.3' if name == rb.REFERENCE_DIST else real(name))
    with pytest.raises(rb.ReferenceVersionError, match='2.3.3 is installed.*2.3.4'):
        rb.check_reference_version()
