"""Issue 14: class-conditional training and sampling (classifier-free guidance).

The CFG train step of ``ms_ddpm.training`` (``ClassConditionalTrainer``: the CFG row of
``PROCESS_DRAWS``, labels from the batch) against a plain loop over the reference's CFG
``GaussianDiffusion`` loss + ``torch.optim.Adam`` on the same weights, batches and draws;
``ms-ddpm train --class-cond`` / ``ms-ddpm sample --classes`` as a user meets them, bad input
one line each.  Tiny: 2 classes x 8 greyscale 8x8 images, Unet(dim=8, dim_mults=(1, 2))."""

import os

import numpy as np
import pytest

from parity.compare import assert_parity, diff

CLASSES = ('cat', 'dog')
NET = dict(dim=8, num_classes=2, dim_mults=(1, 2), channels=1, attn_dim_head=8, attn_heads=2, cond_drop_prob=0.5)
DIFF = dict(image_size=8, timesteps=10)
TINY = ['--class-cond', '--image-size', '8', '--channels', '1', '--dim', '8', '--dim-mults', '1,2', '--attn-heads', '2',
        '--attn-dim-head', '8', '--timesteps', '10', '--sampling-timesteps', '2', '--num-samples', '4',
        '--batch-size', '4', '--no-progress', '--no-flip']


def write_class_folder(root, classes=CLASSES, per_class=8, size=8, seed=0):
    from PIL import Image
    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            # class k: bright top half (cat) / bright bottom half (dog), plus noise
            img = rng.integers(0, 60, (size, size)).astype(np.uint8)
            img[(slice(0, size // 2) if k == 0 else slice(size // 2, size))] += 180
            Image.fromarray(img, 'L').save(root / name / f'{i:02d}.png')
    return root


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    return write_class_folder(tmp_path_factory.mktemp('classes') / 'img')


def _one_line_error(capsys, prog, *words):
    err = capsys.readouterr().err
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert lines and lines[-1].startswith(f'ms-ddpm {prog}: error: '), err[-2000:]
    assert 'Traceback' not in err
    for w in words:
        assert w in lines[-1], (w, lines[-1])
    return lines[-1]


def test_cfg_train_step_equals_a_reference_loop(folder, tmp_path, record):
    """2 optimiser steps of 2 accumulated micro-batches (PyNative), clipped Adam: the loss of each step
    and every parameter after them, MindSpore's ClassConditionalTrainer vs the reference's CFG loss +
    torch Adam + clip_grad_norm_, fed the batches, labels and draws (times, noise, keep mask) the
    MindSpore Trainer drew."""
    import torch
    from denoising_diffusion_pytorch import classifier_free_guidance as ref
    from ms_ddpm import classifier_free_guidance as twin
    from weight_convert import load_torch_state_dict
    from parity.harness import as_float64, float64_copy, torch_float64
    torch.manual_seed(0)
    td = ref.GaussianDiffusion(ref.Unet(**NET), **DIFF)
    md = twin.GaussianDiffusion(twin.Unet(**NET), **DIFF)
    load_torch_state_dict(md, td.state_dict())
    tr = twin.ClassConditionalTrainer(md, str(folder), train_batch_size=4, gradient_accumulate_every=2,
                                      augment_horizontal_flip=False, train_lr=1e-4, save_and_sample_every=10 ** 9,
                                      results_folder=str(tmp_path / 'r'), seed=3, jit=False, progress=False,
                                      log=lambda *a: None)
    assert tr.classes == list(CLASSES)
    seen, drawn = [], []
    dl, draws = tr.dl, tr._draws

    def batches():
        while True:
            b = next(dl)
            seen.append(b)
            yield b
    tr.dl = batches()
    tr._draws = lambda *a: drawn.append(draws(*a)) or drawn[-1]
    m_losses = []
    for _ in range(2):
        m_losses.append(tr.train_step())
        tr.step += 1                                            # as Trainer.train does

    masks = np.concatenate([d['cond_keep_mask'] for d in drawn])
    assert masks.any() and not masks.all(), masks             # both the class and the null embedding are trained
    labels = np.concatenate([b[1] for b in seen])
    assert set(labels.tolist()) == {0, 1}
    before = {n: p.detach().numpy().copy() for n, p in td.named_parameters()}
    td64 = float64_copy(td)                                   # the float64 error model: the same loop, exact-ish

    def reference_loop(module, cast):
        opt = torch.optim.Adam(module.parameters(), lr=1e-4, betas=(0.9, 0.99))
        module.train()
        totals = []
        for step in range(2):
            opt.zero_grad()
            total = 0.
            for a in range(2):
                (img, lab), d = seen[2 * step + a], drawn[2 * step + a]
                loss = module(torch.from_numpy(cast(np.asarray(img, np.float32))), times=torch.from_numpy(d['times']),
                              classes=torch.from_numpy(np.asarray(lab, np.int64)),
                              noise=torch.from_numpy(cast(d['noise'])),
                              cond_keep_mask=torch.from_numpy(d['cond_keep_mask'])) / 2
                loss.backward()
                total += loss.item()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 1.)
            opt.step()
            totals.append(total)
        return totals, {n: p.detach().numpy() for n, p in module.named_parameters()}

    t_losses, t_params = reference_loop(td, lambda x: x)
    with torch_float64():
        _, t64 = reference_loop(td64, as_float64)
    for step in range(2):
        record(assert_parity(f'cfg trainer loss step {step + 1}', np.float32(t_losses[step]), np.float32(m_losses[step]),
                             'trainer_loss'))
    m_params = {p.name: p.asnumpy() for p in md.trainable_params()}
    names = list(t_params)
    flat = lambda d: np.concatenate([np.asarray(d[n], np.float64).ravel() for n in names])   # noqa: E731
    record(assert_parity('cfg trainer params (all)', flat(t_params), flat(m_params), 'trainer', expected64=flat(t64)))
    yard = diff('all', flat(t64), flat(t_params)).rel_fro
    worst = None
    for name in names:      # per tensor: the accuracy gate (small tensors of cancelling gradients, as in test_cfg)
        r = assert_parity(f'cfg trainer param {name}', t_params[name], m_params[name], 'trainer', expected64=t64[name],
                          yardstick=yard)
        worst = r if worst is None or r.rel_fro > worst.rel_fro else worst
    record(worst)
    upd = diff('cfg trainer update', np.concatenate([(t_params[n] - before[n]).ravel() for n in names]),
               np.concatenate([(m_params[n] - before[n]).ravel() for n in names]))
    assert upd.cosine > 0.9999, upd
    record(upd)


def test_train_class_cond_resume_and_sample_a_row_per_class(folder, tmp_path, capsys):
    """``train --class-cond``: the classes named, stored with the run; the end saved and resumed
    (GRAPH: the one compile of the CFG train step); ``sample --classes`` by name and label, a row per class."""
    from PIL import Image
    from ms_ddpm.training import read_trainer_checkpoint
    from ms_ddpm_tools.train import main_sample, main_train
    res = tmp_path / 'res'
    assert main_train([str(folder), *TINY, '--steps', '1', '--save-every', '5', '--results', str(res),
                       '--log', str(tmp_path / 'log')]) == 0
    err = capsys.readouterr().err
    assert '2 classes found: cat, dog (cat 8, dog 8 images)' in err, err[-2000:]
    _, meta = read_trainer_checkpoint(str(res / 'model-last.ckpt'))
    assert meta['config']['class_names'] == ['cat', 'dog'] and meta['config']['unet']['num_classes'] == 2
    assert main_train([str(folder), *TINY[1:], '--steps', '2', '--save-every', '5', '--results', str(res),
                       '--resume', 'last', '--log', str(tmp_path / 'log'), '--no-jit']) == 0   # --class-cond implied by the run
    assert [int(v) for v in (tmp_path / 'log').read_text().split()[::2]] == [1, 2]
    _, meta = read_trainer_checkpoint(str(res / 'model-last.ckpt'))
    assert meta['step'] == 2
    out = tmp_path / 'grid.png'
    assert main_sample([str(res / 'model-last.ckpt'), '--out', str(out), '--classes', 'dog,0', '--num', '3',
                        '--cond-scale', '3', '--rescaled-phi', '0.5', '--ddim-steps', '2', '--quiet']) == 0
    err = capsys.readouterr().err
    assert 'a row per class: dog, cat' in err and 'cond_scale 3.0' in err, err[-2000:]
    with Image.open(out) as im:
        w, h = im.size
    assert 1.3 < w / h < 1.7            # 2 rows (dog, cat) of 3 (save_image pads 2 px)


def test_class_cond_bad_input_is_one_line(folder, tmp_path, capsys):
    from ms_ddpm_tools.train import main_sample, main_train
    empty = write_class_folder(tmp_path / 'empty', per_class=2)
    (empty / 'zebra').mkdir()
    assert main_train([str(empty), *TINY, '--results', str(tmp_path / 'r')]) == 1
    _one_line_error(capsys, 'train', 'class folder zebra holds no images')
    flat = tmp_path / 'flat'
    flat.mkdir()
    assert main_train([str(flat), *TINY, '--results', str(tmp_path / 'r')]) == 1
    _one_line_error(capsys, 'train', 'no class subfolders')
    assert main_train([str(folder), *TINY, '--beta-schedule', 'sigmoid', '--results', str(tmp_path / 'r')]) == 1
    _one_line_error(capsys, 'train', 'linear or cosine')
    # a checkpoint to sample: no training needed (the fresh model is written by the Trainer's save)
    from ms_ddpm.classifier_free_guidance import ClassConditionalTrainer
    from ms_ddpm_tools.train import _train_parser, build_model, class_cond_config
    args = _train_parser().parse_args([str(folder), *TINY])
    md = build_model(class_cond_config(args, list(CLASSES)))
    ckpt = ClassConditionalTrainer(md, str(folder), train_batch_size=4, results_folder=str(tmp_path / 'c'), jit=False,
                                   progress=False, log=lambda *a: None).save('0')
    out = str(tmp_path / 'g.png')
    assert main_sample([str(ckpt), '--out', out, '--classes', '0,2']) == 1
    _one_line_error(capsys, 'sample', '--classes 0,2', 'unknown class 2', '2 classes (0..1 or cat, dog)')
    assert main_sample([str(ckpt), '--out', out, '--classes', 'cat,bird']) == 1
    _one_line_error(capsys, 'sample', 'unknown class bird')
    assert main_sample([str(ckpt), '--out', out, '--gif', str(tmp_path / 'g.gif')]) == 1
    _one_line_error(capsys, 'sample', 'class-conditional')
    assert not os.path.exists(out)
    # --classes on an unconditional model
    import torch
    import denoising_diffusion_pytorch as ddp
    torch.manual_seed(0)
    plain = tmp_path / 'unet.pt'
    torch.save(ddp.Unet(dim=8, dim_mults=(1, 2), channels=1).state_dict(), plain)
    assert main_sample([str(plain), '--out', out, '--image-size', '8', '--classes', '0']) == 1
    _one_line_error(capsys, 'sample', '--classes', 'not a class-conditional model')
