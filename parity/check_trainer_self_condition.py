"""One-off check (not in the suite, for time): ms_ddpm.Trainer vs the reference Trainer, 4 steps,
with self-conditioning (coins on both sides of 0.5) and offset noise, batch 8 x 2 micro-batches.

    .venv/bin/python -m parity.check_trainer_self_condition
"""

import pathlib
import tempfile

import numpy as np

from parity.compare import diff
from parity.harness import build_diffusion_pair
from parity.training import RefRun, Recorder, flat_params, ms_trainer, train_ms, write_digits

UNET = dict(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8, channels=1, self_condition=True)
DIFF = dict(image_size=8, timesteps=100, offset_noise_strength=0.1)
BATCH, ACCUM, MAX_GRAD_NORM, SEED, STEPS = 8, 2, 0.05, 3, 4


def main():
    folder = write_digits(pathlib.Path(tempfile.mkdtemp()), 112)
    td, md = build_diffusion_pair(UNET, DIFF)
    res = pathlib.Path(tempfile.mkdtemp())
    (res / 'ms').mkdir()
    (res / 'ref').mkdir()
    mt = ms_trainer(folder, res / 'ms', md, BATCH, ACCUM, MAX_GRAD_NORM, SEED)
    rec = Recorder(mt)
    losses = train_ms(mt, STEPS)
    ref = RefRun(td, folder, res / 'ref', BATCH, ACCUM, MAX_GRAD_NORM)
    ref.train_to(STEPS, rec.batches, rec.draws)      # noise + offset noise (randn), times, coins
    print('coins', [round(float(d['coin']), 3) for d in rec.draws])
    rl = np.array(ref.losses).reshape(STEPS, ACCUM).sum(1) / ACCUM
    print('loss rel', np.abs(rl - np.array(losses)) / rl)
    print(diff('params', *flat_params(td, md)))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
