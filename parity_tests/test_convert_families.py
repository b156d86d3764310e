"""The family table (weight_convert.families) and issue 13's processes through ``ms-ddpm convert``
and ``ms-ddpm verify``: every family's checkpoint is recognised from its keys and shapes (where
they cannot tell -- ContinuousTime vs VParamContinuousTime -- one line naming both and the option),
its config inferred, converted, verified against the reference (network, loss with injected
draws, sampler with shared noise), and converted back to PyTorch bit-exactly; a reference
Trainer checkpoint (EMA weights) and a safetensors state dict of a process convert too.

Real reference models (Unet dim 8, 8x8 images, 2 sampling steps), converted and verified
in-process; one verify compiles the U-Net (GRAPH), the rest run PyNative."""

import numpy as np
import pytest

from weight_convert import ConvertError, convert
from weight_convert.converter import read_weights
from weight_convert.families import (
    BY_DIFFUSION, DIFFUSION_KINDS, FAMILIES, GAUSSIAN_KINDS, KIND_FAMILY, KINDS_1D, PROCESS_KINDS, SUPPORTED,
    detect_kind,
)
from ms_ddpm_tools.convert import main as cli_main
from ms_ddpm_tools.verify import core as verify_core

torch = pytest.importorskip('torch')
ddp = pytest.importorskip('denoising_diffusion_pytorch')

UNET = dict(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8)
LS = dict(UNET, learned_sinusoidal_cond=True)
VPARAM = 'VParamContinuousTimeGaussianDiffusion'
CT = 'ContinuousTimeGaussianDiffusion'

# kind -> (builder of the reference model, what the config must say)
PROCESSES = {
    'LearnedGaussianDiffusion': (
        lambda: ddp.LearnedGaussianDiffusion(ddp.Unet(**UNET, learned_variance=True), image_size=8, timesteps=4,
                                             objective='pred_noise', beta_schedule='cosine'),
        {'diffusion': {'timesteps': 4, 'objective': 'pred_noise', 'beta_schedule': 'cosine'},
         'unet': {'learned_variance': True}}),
    'WeightedObjectiveGaussianDiffusion': (
        lambda: ddp.WeightedObjectiveGaussianDiffusion(ddp.Unet(**UNET, out_dim=8), image_size=8, timesteps=3),
        {'diffusion': {'timesteps': 3}, 'unet': {'out_dim': 8}}),
    CT: (
        lambda: ddp.ContinuousTimeGaussianDiffusion(ddp.Unet(**LS), image_size=8, noise_schedule='learned',
                                                    learned_schedule_net_hidden_dim=16),
        {'diffusion': {'noise_schedule': 'learned', 'learned_schedule_net_hidden_dim': 16}}),
    VPARAM: (lambda: ddp.VParamContinuousTimeGaussianDiffusion(ddp.Unet(**LS), image_size=8), {}),
    'ElucidatedDiffusion': (lambda: ddp.ElucidatedDiffusion(ddp.Unet(**UNET, learned_sinusoidal_cond=True,
                                                                      self_condition=True), image_size=8),
                            {'unet': {'self_condition': True}}),
    'XMWrapper': (lambda: ddp.XMWrapper(ddp.GaussianDiffusion(ddp.Unet(**UNET), image_size=8, timesteps=3)),
                  {'flow': 'GaussianDiffusion', 'diffusion': {'timesteps': 3}}),
}
MODEL_OPTION = {VPARAM: ['--model', VPARAM]}
VERIFY = dict(image_size=8, sampling_timesteps=2, batch=1, sample_batch=1, progress=False, log=lambda *a: None)
GRAPH_KIND = 'XMWrapper'       # the one verify that compiles (the U-Net and the sampling steps)


def _reference_models():
    torch.manual_seed(0)
    unet1d = ddp.Unet1D(dim=8, dim_mults=(1, 2), channels=2)
    out = {'Unet': ddp.Unet(**UNET), 'Unet1D': unet1d,
           'GaussianDiffusion': ddp.GaussianDiffusion(ddp.Unet(**UNET), image_size=8, timesteps=10),
           'GaussianDiffusion1D': ddp.GaussianDiffusion1D(unet1d, seq_length=16, timesteps=10)}
    for kind, (build, _) in PROCESSES.items():
        out[kind] = build()
    return out


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp('families')
    out = {}
    for kind, model in _reference_models().items():
        torch.save(model.state_dict(), d / f'{kind}.pt')
        out[kind] = d / f'{kind}.pt'
    return out


def test_registry_is_the_one_table():
    assert DIFFUSION_KINDS == tuple(f.diffusion for f in SUPPORTED)
    assert set(KINDS_1D) == {k for k, f in KIND_FAMILY.items() if f.dims == 1}
    assert verify_core.FAMILIES == {f.diffusion: (f.module, f.network, f.dims) for f in SUPPORTED}
    assert verify_core.DIFFUSION_OF == {'Unet': 'GaussianDiffusion', 'Unet1D': 'GaussianDiffusion1D'}
    assert len({f.diffusion for f in FAMILIES}) == len(FAMILIES)
    # (issue 15: ElucidatedDiffusion(KarrasUnet): parity_tests/test_convert_karras.py;
    # simple_diffusion.GaussianDiffusion: parity_tests/test_convert_uvit.py)
    issue15 = {'ElucidatedDiffusion(KarrasUnet)', 'simple_diffusion.GaussianDiffusion'}
    assert set(PROCESS_KINDS) - issue15 == set(PROCESSES) and not set(PROCESS_KINDS) & set(GAUSSIAN_KINDS)


@pytest.mark.parametrize('kind', ['Unet', 'GaussianDiffusion', 'Unet1D', 'GaussianDiffusion1D'] + list(PROCESSES))
def test_kinds_recognised(files, kind):
    hint = VPARAM if kind == VPARAM else None
    assert read_weights(files[kind], model=hint).kind == kind
    sd = torch.load(files[kind], weights_only=True)
    assert detect_kind(dict(sd), hint)[0] == kind


def test_continuous_or_vparam_not_inferable_named_in_one_line(files, tmp_path, capsys):
    """The same keys: one line naming both and the option; nothing written.  --model decides,
    and the converted file then carries it (read back without the option)."""
    with pytest.raises(ConvertError) as e:
        convert(files[VPARAM], tmp_path / 'x.safetensors', config={'image_size': 8})
    msg = str(e.value)
    assert '\n' not in msg and CT in msg and VPARAM in msg and 'not inferable' in msg and '--model' in msg
    assert not (tmp_path / 'x.safetensors').exists()
    assert cli_main([str(files[VPARAM]), str(tmp_path / 'x.safetensors'), '--image-size', '8', '-q']) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and '--model' in err
    assert cli_main([str(files[VPARAM]), str(tmp_path / 'x.safetensors'), '--image-size', '8', '-q',
                     '--model', VPARAM]) == 0
    assert read_weights(tmp_path / 'x.safetensors').kind == VPARAM
    # a learned schedule is a ContinuousTime: --model VParam contradicts the weights, in one line
    with pytest.raises(ConvertError) as e:
        convert(files[CT], tmp_path / 'y.safetensors', config={'image_size': 8, 'model': VPARAM})
    assert '\n' not in str(e.value) and CT in str(e.value) and VPARAM in str(e.value)


def test_missing_image_size_is_one_line(files, tmp_path):
    with pytest.raises(ConvertError) as e:
        convert(files['ElucidatedDiffusion'], tmp_path / 'x.ckpt')
    assert '\n' not in str(e.value) and 'image_size' in str(e.value)


@pytest.fixture(scope='module')
def converted(files, tmp_path_factory):
    """kind -> (reference .pt, converted .safetensors, back to .pt, config) via the command."""
    d = tmp_path_factory.mktemp('converted')
    out = {}
    for kind in PROCESSES:
        dst, back = d / f'{kind}.safetensors', d / f'{kind}-back.pt'
        assert cli_main([str(files[kind]), str(dst), '--image-size', '8', '-q'] + MODEL_OPTION.get(kind, [])) == 0
        assert cli_main([str(dst), str(back), '-q']) == 0
        out[kind] = (files[kind], dst, back, read_weights(dst).stored_config)
    return out


@pytest.mark.parametrize('kind', list(PROCESSES))
def test_convert_recognises_config_and_round_trips_bit_exact(converted, kind):
    src, dst, back, cfg = converted[kind]
    assert cfg['model'] == kind
    want = PROCESSES[kind][1]
    for part in ('unet', 'diffusion'):
        for k, v in want.get(part, {}).items():
            assert cfg[part][k] == v, (part, k, cfg[part][k])
    if 'flow' in want:
        assert cfg['flow'] == want['flow']
    a, b = torch.load(src, weights_only=True), torch.load(back, weights_only=True)
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


@pytest.mark.parametrize('kind', [k for k in PROCESSES if k != VPARAM])     # VParam: the command test below
def test_verify_passes(converted, kind):
    """``ms-ddpm verify REF --against CONVERTED``: every tensor, every layer, the network at
    several conditioning values, the loss with injected draws, the sampler with shared noise."""
    from ms_ddpm_tools.verify.engine import verify
    src, dst, _, _ = converted[kind]
    config = {'model': VPARAM} if kind == VPARAM else None
    rep = verify(str(src), against=str(dst), config=config, graph=kind == GRAPH_KIND, **VERIFY)
    names = [r['name'] for r in rep['results']]
    assert any(n.startswith('loss/') for n in names) and 'sample/final' in names, names
    assert any(n.startswith('unet/') for n in names) and any(n.startswith('layer/') for n in names)
    if kind == GRAPH_KIND:
        assert any(n.endswith('[graph]') for n in names)
    assert rep['verdict']['ok'], rep['verdict']['failed_names']


def test_verify_command_with_model_option(files, tmp_path, capsys):
    """The command, in-process: VParam needs --model (else one line naming it)."""
    from ms_ddpm_tools.verify.command import main as verify_main
    base = [str(files[VPARAM]), '--image-size', '8', '--quiet', '--no-graph', '--batch', '1', '--sample-batch', '1',
            '--sampling-timesteps', '2', '--out', str(tmp_path / 'v')]
    assert verify_main(base) != 0
    assert '--model' in capsys.readouterr().err
    assert verify_main(base + ['--model', VPARAM]) == 0


def _perturbed_trainer_checkpoint(model):
    from ema_pytorch import EMA
    ema = EMA(model, beta=0.5, update_every=1, update_after_step=0, power=1.)
    ema.update()                     # the copy
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    ema.update()                     # EMA != online from here
    return {'step': 3, 'model': model.state_dict(), 'opt': {'state': {}, 'param_groups': []}, 'ema': ema.state_dict(),
            'scaler': None, 'version': ddp.__version__ if hasattr(ddp, '__version__') else '2.3.4'}, ema


def test_reference_trainer_checkpoint_online_and_ema(tmp_path):
    """A reference Trainer checkpoint of a process (the learned noise schedule's parameters
    inside) converts like GaussianDiffusion's: online weights by default, --ema the EMA ones."""
    torch.manual_seed(1)
    model = PROCESSES[CT][0]()
    ckpt, ema = _perturbed_trainer_checkpoint(model)
    torch.save(ckpt, tmp_path / 'model-3.pt')
    for use_ema, want in ((False, model.state_dict()), (True, ema.ema_model.state_dict())):
        dst = tmp_path / f'ct-{use_ema}.safetensors'
        s = convert(tmp_path / 'model-3.pt', dst, ema=use_ema, config={'image_size': 8})
        assert s['kind'] == CT and s['config']['source'].get('trainer_step') == 3
        got = read_weights(dst).entries
        assert any(k.startswith('log_snr.') for k in got)
        for k, v in want.items():
            assert np.array_equal(got[k].value(), v.numpy()), k
    assert not torch.equal(model.state_dict()['log_snr.net.1.net.weight'],
                           ema.ema_model.state_dict()['log_snr.net.1.net.weight'])
    # and back: a Trainer-style checkpoint of the process that the reference's EMA/process load
    out = tmp_path / 'trainer.pt'
    assert cli_main([str(tmp_path / 'ct-True.safetensors'), str(out), '--trainer', '-q']) == 0
    data = torch.load(out, weights_only=True)
    fresh = PROCESSES[CT][0]()
    fresh.load_state_dict(data['model'])


def test_safetensors_state_dict_of_a_process(tmp_path):
    """A reference state dict saved with safetensors (XMWrapper around Elucidated): recognised
    and converted."""
    from safetensors.torch import save_file
    torch.manual_seed(2)
    model = ddp.XMWrapper(ddp.ElucidatedDiffusion(ddp.Unet(**LS), image_size=8), candidates=2,
                          random_time_method='noise_distribution', random_time_kwarg='sigma')
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / 'xm.safetensors'))
    src = read_weights(tmp_path / 'xm.safetensors')
    assert (src.kind, src.flow) == ('XMWrapper', 'ElucidatedDiffusion')
    s = convert(tmp_path / 'xm.safetensors', tmp_path / 'xm.ckpt',
                config={'image_size': 8, 'xm': {'candidates': 2, 'random_time_method': 'noise_distribution',
                                                'random_time_kwarg': 'sigma'}})
    assert s['config']['flow'] == 'ElucidatedDiffusion' and s['config']['xm']['candidates'] == 2
    assert read_weights(tmp_path / 'xm.ckpt').stored_config['xm']['random_time_kwarg'] == 'sigma'
    assert BY_DIFFUSION['XMWrapper'].prefix == 'flow_model.'
