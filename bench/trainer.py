"""Images/second of one Trainer step, MindSpore (compiled train step) vs the reference Trainer,
on the same CPU, the same batch, in one run (interleaved rounds, medians).

    .venv/bin/python -m bench.trainer [--dim 16] [--mults 1,2,4] [--size 32] [--batch 16] [--rounds 5]

A "step" is one iteration of ``Trainer.train()``'s loop: forward + backward + clip + Adam +
EMA update (+ the loss read for the progress bar).  Data loading is excluded on both sides
(pre-loaded batches), so the figure is the framework's.  Never asserted in a test.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument('--dim', type=int, default=16)
    p.add_argument('--mults', default='1,2,4')
    p.add_argument('--size', type=int, default=32)
    p.add_argument('--batch', type=int, default=16)
    p.add_argument('--rounds', type=int, default=5)
    p.add_argument('--steps-per-round', type=int, default=3)
    p.add_argument('--json', default=None)
    p.add_argument('--threads', type=int, default=None, help='torch.set_num_threads (default: torch\'s)')
    a = p.parse_args(argv)

    import torch
    import mindspore as ms
    import denoising_diffusion_pytorch as ddp
    import ms_ddpm
    from PIL import Image
    from weight_convert import load_torch_state_dict
    if a.threads:
        torch.set_num_threads(a.threads)

    unet = dict(dim=a.dim, dim_mults=tuple(int(v) for v in a.mults.split(',')))
    diff = dict(image_size=a.size, timesteps=1000)
    folder = tempfile.mkdtemp(prefix='bench_trainer_')
    rng = np.random.default_rng(0)
    for i in range(100):                       # the Trainers insist on 100 images
        Image.fromarray(rng.integers(0, 255, (a.size, a.size, 3), dtype=np.uint8)).save(f'{folder}/{i}.png')
    batch = rng.random((a.batch, 3, a.size, a.size), dtype=np.float32)

    torch.manual_seed(0)
    td = ddp.GaussianDiffusion(ddp.Unet(**unet), **diff)
    md = ms_ddpm.GaussianDiffusion(ms_ddpm.Unet(**unet), **diff)
    load_torch_state_dict(md, td.state_dict())
    common = dict(train_batch_size=a.batch, save_and_sample_every=10 ** 9, calculate_fid=False,
                  results_folder=tempfile.mkdtemp())
    tt = ddp.Trainer(td, folder, **common)
    tt.dl = iter(lambda: torch.from_numpy(batch), None)          # the same batch, forever

    def forever():
        while True:
            yield batch
    mt = ms_ddpm.Trainer(md, folder, batches=forever(), progress=False, log=lambda *x: None, **common)

    cpu = {'torch': [], 'ms': []}

    def run_torch(n):
        tt.train_num_steps = tt.step + n
        t, c = time.perf_counter(), time.process_time()
        tt.train()
        cpu['torch'].append((time.process_time() - c) / n)
        return (time.perf_counter() - t) / n

    def run_ms(n):
        mt.train_num_steps = mt.step + n
        t, c = time.perf_counter(), time.process_time()
        mt.train()
        cpu['ms'].append((time.process_time() - c) / n)
        return (time.perf_counter() - t) / n

    import contextlib
    import io
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        t_compile = time.perf_counter()
        run_ms(1)                                   # compiles the train step
        t_compile = time.perf_counter() - t_compile
        run_torch(1)
        ts, ms_ = [], []
        for _ in range(a.rounds):
            ts.append(run_torch(a.steps_per_round))
            ms_.append(run_ms(a.steps_per_round))
    t_med, m_med = float(np.median(ts)), float(np.median(ms_))
    out = dict(config=dict(unet=unet, image_size=a.size, batch=a.batch, rounds=a.rounds, steps_per_round=a.steps_per_round,
                           torch_threads=torch.get_num_threads(), torch=torch.__version__, mindspore=ms.__version__,
                           cpu_count=os.cpu_count(), loadavg=os.getloadavg()),
               reference_step_s=t_med, mindspore_step_s=m_med,
               reference_images_per_s=a.batch / t_med, mindspore_images_per_s=a.batch / m_med,
               mindspore_over_reference=(a.batch / m_med) / (a.batch / t_med),
               mindspore_first_step_incl_compile_s=t_compile,
               # CPU seconds (all threads of the process) per step: less sensitive than wall time
               # to other processes on a shared machine
               reference_cpu_step_s=float(np.median(cpu['torch'][1:])), mindspore_cpu_step_s=float(np.median(cpu['ms'][1:])),
               mindspore_over_reference_cpu=float(np.median(cpu['torch'][1:]) / np.median(cpu['ms'][1:])),
               reference_rounds_s=ts, mindspore_rounds_s=ms_)
    print(json.dumps(out, indent=1))
    if a.json:
        from ms_ddpm.io.atomic import atomic_write
        atomic_write(a.json, json.dumps(out, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
