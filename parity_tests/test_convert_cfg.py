"""Classifier-free guidance (issue 14) through ``ms-ddpm convert`` and ``ms-ddpm verify``, and
verify's other samplers of a plain GaussianDiffusion (``--sampler repaint``, ``--sampler guided``).

A reference ``classifier_free_guidance.GaussianDiffusion`` (and its bare Unet, and a reference
Trainer-style checkpoint of it with EMA weights, and safetensors) is recognised from its keys
(``model.classes_mlp.*``), its architecture inferred (num_classes from ``classes_emb`` rows, dim,
dim_mults, timesteps, beta_schedule, objective; ``cond_drop_prob`` named as not inferable),
converted and back bit-exactly, and verified: the network at given classes (and the null / keep
mask paths), ``forward_with_cond_scale`` (cond_scale 3, rescaled_phi), the loss with injected
draws, the DDIM sampler with shared noise at the classes, the picture a row per class; the same
through a golden fixture recorded here.  Bad input: no classes embedding, labels out of range.

Real reference models (dim 8, dim_mults (1, 2), 8x8 images, 3 classes, 4 timesteps), PyNative."""

import json

import numpy as np
import pytest

from weight_convert import convert
from weight_convert.converter import read_weights, resolve_config
from weight_convert.families import CFG_KINDS, CFG_NETWORK_KINDS, detect_kind
from ms_ddpm_tools.convert import main as convert_main
from ms_ddpm_tools.verify.command import main as verify_main

torch = pytest.importorskip('torch')
cfg_ref = pytest.importorskip('denoising_diffusion_pytorch.classifier_free_guidance')

NET = dict(dim=8, num_classes=3, dim_mults=(1, 2), attn_dim_head=8, attn_heads=2)
HEADS = json.dumps({'attn_heads': 2, 'attn_dim_head': 8})       # only their product is in the weights
GD_KIND, UNET_KIND = 'classifier_free_guidance.GaussianDiffusion', 'classifier_free_guidance.Unet'
QUIET = dict(graph=False, progress=False, log=lambda *a: None)


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """The reference files: CFG GaussianDiffusion (.pt, .safetensors), its bare Unet, a plain
    GaussianDiffusion; and, through convert, a Trainer-style checkpoint of the CFG model."""
    import denoising_diffusion_pytorch as ddp
    from safetensors.torch import save_file
    d = tmp_path_factory.mktemp('cfg')
    torch.manual_seed(0)
    unet = cfg_ref.Unet(**NET)
    gd = cfg_ref.GaussianDiffusion(unet, image_size=8, timesteps=4, objective='pred_v')
    out = {'gd': d / 'cfg.pt', 'unet': d / 'cfg-unet.pt', 'st': d / 'cfg.safetensors', 'plain': d / 'plain.pt',
           'noemb': d / 'noemb.pt'}
    torch.save(gd.state_dict(), out['gd'])
    torch.save(unet.state_dict(), out['unet'])
    save_file({k: v.contiguous() for k, v in gd.state_dict().items()}, str(out['st']))
    sd = dict(gd.state_dict())
    del sd['model.classes_emb.weight']
    torch.save(sd, out['noemb'])
    torch.manual_seed(0)
    plain = ddp.GaussianDiffusion(ddp.Unet(dim=8, dim_mults=(1, 2), attn_dim_head=8, attn_heads=2), image_size=8,
                                  timesteps=3)
    torch.save(plain.state_dict(), out['plain'])
    out['trainer'] = d / 'trainer.pt'
    convert(out['gd'], out['trainer'], trainer=True, config=dict(json.loads(HEADS), image_size=8), step=7)
    return out


def test_rows_and_detection(files):
    assert GD_KIND in CFG_KINDS and UNET_KIND in CFG_NETWORK_KINDS
    for name, kind in (('gd', GD_KIND), ('st', GD_KIND), ('unet', UNET_KIND), ('plain', 'GaussianDiffusion')):
        src = read_weights(files[name])
        assert src.kind == kind, name
        assert detect_kind(src.entries).kind == kind, name
    # the EMA half of the Trainer checkpoint: the same model
    assert read_weights(files['trainer'], ema=True).kind == GD_KIND


def test_config_inferred(files):
    cfg = resolve_config(read_weights(files['gd']))
    u, d = cfg['unet'], cfg['diffusion']
    assert (u['num_classes'], u['dim'], u['dim_mults'], u['channels'], u['cond_drop_prob']) == (3, 8, [1, 2], 3, 0.5)
    assert u['attn_heads'] * u['attn_dim_head'] == 16 and 'attn_heads/attn_dim_head' in cfg['notes']['ambiguous']
    assert (d['timesteps'], d['beta_schedule'], d['objective']) == (4, 'cosine', 'pred_v')
    assert 'cond_drop_prob' in cfg['notes']['not_inferred'] and 'image_size' in cfg['notes']['not_inferred']
    assert resolve_config(read_weights(files['unet']))['unet']['num_classes'] == 3


def test_round_trips_bit_exact(files, tmp_path):
    """.pt -> .ckpt -> .pt, Trainer (EMA) -> .safetensors, bare Unet -> .ckpt -> .pt: every tensor,
    key order and dtype as the source's."""
    from safetensors.numpy import load_file
    conf = ['--config', HEADS]
    ref = torch.load(files['gd'], weights_only=True)
    assert convert_main([str(files['gd']), str(tmp_path / 'a.ckpt'), '--image-size', '8', '-q'] + conf) == 0
    assert convert_main([str(tmp_path / 'a.ckpt'), str(tmp_path / 'b.pt'), '-q']) == 0
    back = torch.load(tmp_path / 'b.pt', weights_only=True)
    assert list(back) == list(ref) and all(torch.equal(back[k], ref[k]) for k in ref)
    stored = read_weights(tmp_path / 'a.ckpt').stored_config
    assert stored['model'] == GD_KIND and stored['unet']['attn_heads'] == 2
    assert convert_main([str(files['trainer']), str(tmp_path / 'e.safetensors'), '--ema', '-q']) == 0
    ema = load_file(str(tmp_path / 'e.safetensors'))
    assert set(ema) == set(ref) and all(np.array_equal(ema[k], ref[k].numpy()) for k in ref)
    trainer = torch.load(files['trainer'], weights_only=True)
    assert trainer['step'] == 7 and all(torch.equal(trainer['ema']['ema_model.' + k], ref[k]) for k in ref)
    uref = torch.load(files['unet'], weights_only=True)
    assert convert_main([str(files['unet']), str(tmp_path / 'u.ckpt'), '-q'] + conf) == 0
    assert convert_main([str(tmp_path / 'u.ckpt'), str(tmp_path / 'u.pt'), '-q']) == 0
    uback = torch.load(tmp_path / 'u.pt', weights_only=True)
    assert list(uback) == list(uref) and all(torch.equal(uback[k], uref[k]) for k in uref)


def _as_diff(d, label):
    """A report row as the parity Diff ``record`` takes (the suite's summary table)."""
    from parity.compare import Diff
    r = Diff(f'{label} {d["name"]}', tuple(d['shape']), d['rel_fro'], d['max_abs'], d['max_rel'], d['cosine'],
             d['within_1e3'], d['nonfinite'], d['tol'], d['ok'])
    r.metric = d['metric']
    return r


def _one_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_bad_input(files, tmp_path, capsys):
    from ms_ddpm_tools.exits import EXIT_ERROR
    # no classes embedding: num_classes cannot be inferred -> named; nothing written
    assert convert_main([str(files['noemb']), str(tmp_path / 'n.ckpt'), '--image-size', '8', '-q']) == EXIT_ERROR
    line = _one_line(capsys)
    assert 'classes_emb.weight' in line and 'num_classes' in line, line
    assert not list(tmp_path.iterdir())
    # labels out of range (>= num_classes, < 0): the label and num_classes named
    for labels, bad in (('0,3', '3'), ('-1', '-1')):
        assert verify_main([str(files['gd']), '--image-size', '8', '--classes', labels, '--quiet',
                            '--out', str(tmp_path / 'v')]) == EXIT_ERROR
        line = _one_line(capsys)
        assert f'class label {bad} is out of range' in line and 'num_classes=3' in line, line
    # the conditional options on a checkpoint that is not class-conditional
    assert verify_main([str(files['plain']), '--image-size', '8', '--cond-scale', '3', '--quiet',
                        '--out', str(tmp_path / 'v')]) == EXIT_ERROR
    assert 'class-conditional' in _one_line(capsys)


CONDITIONAL = dict(image_size=8, config=HEADS, classes=[0, 2], cond_scale=3., rescaled_phi=0.7, sampling_timesteps=2,
                   batch=1, sample_batch=2)
KEYS = ('unet/null', 'unet/keep-mask', 'guided/null', 'guided/rescaled', 'loss/pred_v', 'sample/final')


@pytest.fixture(scope='module')
def live(files, tmp_path_factory):
    from ms_ddpm_tools.verify.engine import verify
    out = tmp_path_factory.mktemp('cfg-verify')
    return verify(str(files['trainer']), ema=True, out=str(out), **CONDITIONAL, **QUIET), out


def test_verify_conditional_path(live, record):
    """The EMA weights of a Trainer-style CFG checkpoint: every comparison within its gate."""
    from PIL import Image
    rep, out = live
    names = {r['name']: r for r in rep['results']}
    for k in KEYS:
        assert k in names, k
    assert rep['verdict']['ok'], rep['verdict']
    assert rep['conditional'] == {'classes': [0, 2], 'cond_scale': 3.0, 'rescaled_phi': 0.7}
    assert rep['sampling']['sampler'].startswith('DDIM at classes [0, 2], cond_scale 3')
    assert len([k for k in names if k.startswith('buffer/')]) == 13
    with Image.open(out / 'samples.png') as im:          # a row per class, PyTorch | MindSpore | |diff|
        assert im.size[1] > 2 * 64 and im.size[0] > 3 * 64
    for k in KEYS:
        record(_as_diff(names[k], 'verify cfg'))


def test_verify_conditional_fixture(files, live, tmp_path):
    """A golden fixture of the live run's model (the PyTorch side only, recorded here): the live run's
    config, classes / cond_scale, inputs and draws, and reference outputs bit for bit a fresh
    reference run's, so ``verify --fixture`` (MindSpore on those inputs) gives the live run's
    figures.  (The MindSpore side is the live run's own code path: not run twice here, to keep
    the suite's time; docs/verify.md has the measured fixture-mode run.)"""
    from ms_ddpm_tools.verify import cfg as conditional, core
    from ms_ddpm_tools.verify.fixtures import TINY_CFG_OPTIONS, load_verify_fixture, record_cfg
    c = dict(CONDITIONAL)
    assert {k: c[k] for k in TINY_CFG_OPTIONS} == TINY_CFG_OPTIONS
    fx = record_cfg(str(tmp_path / 'cfg.npz'))       # python -m ms_ddpm_tools.verify.fixtures cfg: the same model
    meta, sd, inp, expected = load_verify_fixture(fx)
    rep = live[0]
    assert meta['cfg_options'] == rep['conditional'] and meta['config']['unet'] == rep['config']['unet']
    assert meta['timesteps'] == rep['timesteps_compared']
    cfg, w, _ = core.load_checkpoint(str(files['trainer']), ema=True, config=c['config'], image_size=8)
    cfg['diffusion']['sampling_timesteps'] = 2
    opts = conditional.options(cfg, [0, 2], 3., 0.7)
    fresh_inp, _ = conditional.make_inputs(cfg, core.alphas_cumprod_of(cfg, w), opts, batch=1, per_class=1)
    assert set(fresh_inp) == set(inp) and all(np.array_equal(fresh_inp[k], inp[k]) for k in inp)
    assert all(np.array_equal(w[k], sd[k]) for k in w)
    fresh = conditional.torch_side(cfg, w, fresh_inp, opts, core.Timer(), tuple(meta['parts']), [])
    assert set(fresh) == set(expected)
    for k in fresh:
        np.testing.assert_array_equal(fresh[k], expected[k], err_msg=k)
    names = {r['name'] for r in rep['results']}
    assert {k for k in expected if not k.startswith(('f64', 'layer/', 'unet/all'))} <= names


@pytest.mark.parametrize('sampler,extra', [
    ('repaint', dict(resample={'resample_iter': 1, 'resample_jump': 1, 'resample_every': 5})),
    ('guided', dict(classes=[1, 3], cond_scale=2.)),
])
def test_verify_other_samplers(files, tmp_path, sampler, extra, record):
    """A plain GaussianDiffusion checkpoint with --sampler repaint (the whole schedule on a masked
    image, shared draws) and --sampler guided (the example classifier, ms.grad vs autograd)."""
    from ms_ddpm_tools.verify.engine import verify
    rep = verify(str(files['plain']), image_size=8, config=HEADS, batch=1, sample_batch=2, parts=('sample',),
                 sampler=sampler, out=str(tmp_path), **extra, **QUIET)
    (r,) = [x for x in rep['results'] if x['name'] == 'sample/final']
    assert rep['verdict']['ok'] and r['ok'] and rep['sampler']['sampler'] == sampler
    assert rep['sampling']['sampler'].startswith('RePaint' if sampler == 'repaint' else 'DDPM with classifier guidance')
    assert (tmp_path / 'samples.png').stat().st_size > 0
    record(_as_diff(r, f'verify --sampler {sampler}'))
