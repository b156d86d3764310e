"""Data-parallel ms_ddpm.Trainer with MindSpore's own launcher, on the CPU.

    # 2 processes on this machine (msrun starts a scheduler + 2 workers, logs in ./msrun_logs)
    PATH=$PWD/.venv/bin:$PATH msrun --worker_num=2 --local_worker_num=2 --master_port=8131 \
        --log_dir=msrun_logs --join=True ms_ddpm_tools/msrun_data_parallel.py FOLDER --dist
    # the same run in one process, for comparison
    .venv/bin/python -m ms_ddpm_tools.msrun_data_parallel FOLDER
    # FOLDER may be a .npy of sequences (N, channels, length): Trainer1D, the same machinery

With ``--dist`` the script calls ``mindspore.communication.init()``; ms_ddpm.Trainer then sees
the rank and world size, each process reads only its share of every batch (and of that batch's
draws), the compiled train step all-reduces the gradients and the loss, and process 0 alone
keeps the EMA, writes samples and checkpoints.  Because each batch and its draws are split,
not re-drawn, the 2-process run computes the single-process run (up to the order of the
sums): the script prints the losses and saves the parameters to compare.
"""

import argparse
import json
import sys

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument('folder')
    p.add_argument('--dist', action='store_true')
    p.add_argument('--steps', type=int, default=3)
    p.add_argument('--out', default='dp_params')
    a = p.parse_args(argv)
    import mindspore as ms
    ms.set_device('CPU')
    if a.dist:
        from mindspore.communication import init
        init()
    import ms_ddpm
    ms.set_seed(0)
    if a.folder.endswith('.npy'):      # sequences (N, C, L): Unet1D + GaussianDiffusion1D under Trainer1D
        data = np.load(a.folder, allow_pickle=False).astype(np.float32)
        md = ms_ddpm.GaussianDiffusion1D(ms_ddpm.Unet1D(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8,
                                                        channels=data.shape[1]), seq_length=data.shape[2], timesteps=100)
        tr = ms_ddpm.Trainer1D(md, ms_ddpm.Dataset1D(data), train_batch_size=16, train_num_steps=a.steps,
                               save_and_sample_every=10 ** 9, results_folder='./results-dp', progress=False, seed=5)
    else:
        md = ms_ddpm.GaussianDiffusion(ms_ddpm.Unet(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8, channels=1),
                                       image_size=8, timesteps=100)
        tr = ms_ddpm.Trainer(md, a.folder, train_batch_size=16, train_num_steps=a.steps, save_and_sample_every=10 ** 9,
                             calculate_fid=False, results_folder='./results-dp', progress=False, seed=5)
    losses = []
    step = tr.train_step

    def logged():
        loss = step()
        losses.append(loss)
        return loss
    tr.train_step = logged
    tr.train()
    flat = np.concatenate([p.asnumpy().ravel() for p in md.trainable_params()])
    np.save(f'{a.out}_{"dist" if a.dist else "single"}_rank{tr.rank}.npy', flat)
    print('RESULT', json.dumps(dict(rank=tr.rank, world=tr.world_size, losses=losses)), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
