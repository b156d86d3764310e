"""One-off check (not in the suite, for time): ms_ddpm.Trainer vs the reference Trainer, 4 steps,
with self-conditioning (coins on both sides of 0.5) and offset noise, batch 8 x 2 micro-batches.
    .venv/bin/python docs/check_trainer_self_condition.py
"""
import sys, os
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np, torch, pathlib, tempfile
import parity_tests.test_trainer as T
from parity_tests.harness import build_diffusion_pair
from parity.compare import diff
folder = T.write_digits(pathlib.Path(tempfile.mkdtemp()), 112)
UNET = dict(T.UNET, self_condition=True)
DIFF = dict(T.DIFF, offset_noise_strength=0.1)
td, md = build_diffusion_pair(UNET, DIFF)
res = pathlib.Path(tempfile.mkdtemp())
(res/'ms').mkdir(); (res/'ref').mkdir()
mt = T.ms_trainer(folder, res/'ms', md)
rec = T.Recorder(mt)
losses = []
for _ in range(4):
    losses.append(mt.train_step()); mt.step += 1; mt.ema.update()
ref = T.RefRun(td, folder, res/'ref')
from reference.draws import injected_draws
t = ref.trainer
t.dl = iter([torch.from_numpy(b) for b in rec.batches]); t.train_num_steps = 4
with injected_draws(randn=[x for d in rec.draws for x in (d['noise'], d['offset_noise'])], randint=[d['times'] for d in rec.draws], coins=[float(d['coin']) for d in rec.draws]):
    t.train()
print('coins', [round(float(d['coin']), 3) for d in rec.draws])
rl = np.array(ref.losses).reshape(4, 2).sum(1) / 2
print('loss rel', np.abs(rl - np.array(losses)) / rl)
tp = {n: p.detach().numpy() for n, p in td.named_parameters()}; mp = dict(md.parameters_and_names())
print(diff('params', np.concatenate([v.ravel() for v in tp.values()]), np.concatenate([mp[n].asnumpy().ravel() for n in tp])))
