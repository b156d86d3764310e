"""Every convolution of ``Unet(dim=64)`` (batch 16, 32x32), one by one: torch eager against a
MindSpore GRAPH-mode ``ms_compat.Conv2d``, forward and forward + backward (input and weight
gradients), wall-clock medians of 5 back-to-back calls after 2 warm-ups, weighted by how often
the U-Net runs each shape.  Shows which convolutions the MindSpore side loses time on.

    python -m bench.conv_shapes [--threads 2] [--fast-cpu]
    ONEDNN_VERBOSE=1 python -m bench.conv_shapes   # which oneDNN kernel each framework runs

Found with it (MindSpore 2.8.0, oneDNN 2.2 inside): MindSpore hands oneDNN plain NCHW tensors,
for which oneDNN picks ``gemm:jit`` (im2col + sgemm) for forward, backward-data and
backward-weights; torch lets oneDNN choose blocked layouts and gets ``jit:avx512_core`` direct
convolutions (plus reorders).  ``--fast-cpu`` adds ms_ddpm.fastconv's oneDNN convolutions
(the same conv built on the fast path) as a third column.
"""

import argparse
import collections

import numpy as np


def compiled(ms, conv):
    """(forward, gradient of sum(forward) w.r.t. the input and weights) of ``conv``, both ``ms.jit``."""
    def forward(a):
        return conv(a)

    def loss(a):
        return conv(a).sum()
    return ms.jit(forward), ms.jit(ms.grad(loss, grad_position=0, weights=conv.trainable_params()))


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m bench.conv_shapes', description=__doc__.split('\n\n')[0])
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--fast-cpu', action='store_true', help='also time ms_ddpm.fastconv\'s oneDNN convolutions')
    args = p.parse_args(argv)
    from bench.run import set_threads
    from bench.timing import median_s
    set_threads(args.threads)
    import torch
    import mindspore as ms
    from reference.builders import build_unet
    from ms_ddpm.ms_compat import Conv2d
    from bench.items import fast_built

    shapes = collections.Counter()

    def hook(mod, inp, out):
        shapes[(tuple(inp[0].shape), mod.out_channels, mod.kernel_size[0], mod.padding[0])] += 1
    net = build_unet(dict(dim=64), seed=0)
    for mod in net.modules():
        if isinstance(mod, torch.nn.Conv2d):
            mod.register_forward_hook(hook)
    with torch.no_grad():
        net(torch.randn(16, 3, 32, 32), torch.randint(0, 1000, (16,)))

    total = collections.defaultdict(float)
    fast_hdr = f' | {"fast fwd":>8s}        {"fast f+b":>8s}' if args.fast_cpu else ''
    print(f'{"input, out channels, kernel":38s} n | {"torch fwd":>9s} {"MS fwd":>8s}       | {"torch f+b":>9s} {"MS f+b":>8s}'
          f'{fast_hdr}   (ms)')
    for (shape, out_ch, k, pad), n in sorted(shapes.items(), key=lambda kv: -kv[1]):
        tc = torch.nn.Conv2d(shape[1], out_ch, k, padding=pad)
        mc = Conv2d(shape[1], out_ch, k, padding=pad)
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        xt = torch.from_numpy(x).requires_grad_(True)
        xm = ms.Tensor(x)

        def torch_fwd():
            with torch.no_grad():
                return tc(xt)

        def torch_fb():
            tc(xt).sum().backward()
            xt.grad = tc.weight.grad = tc.bias.grad = None

        ms_fwd, ms_fb = compiled(ms, mc)
        fns = dict(tf=torch_fwd, mf=lambda: ms_fwd(xm).asnumpy(), tfb=torch_fb, mfb=lambda: ms_fb(xm)[0].asnumpy())
        if args.fast_cpu:      # the same conv built on ms_ddpm.fastconv's oneDNN kernels
            fast_fwd, fast_fb = compiled(ms, fast_built(lambda: Conv2d(shape[1], out_ch, k, padding=pad)))
            fns.update(ff=lambda: fast_fwd(xm).asnumpy(), ffb=lambda: fast_fb(xm)[0].asnumpy())
        r = {key: median_s(fn) * 1e3 for key, fn in fns.items()}
        for key, v in r.items():
            total[key] += n * v
        print(f'{str((shape, out_ch, k)):38s} {n} | {r["tf"]:9.2f} {r["mf"]:8.2f} ({r["mf"] / r["tf"]:4.1f}x) | '
              f'{r["tfb"]:9.2f} {r["mfb"]:8.2f} ({r["mfb"] / r["tfb"]:4.1f}x)'
              + (f' | {r["ff"]:8.2f} ({r["ff"] / r["tf"]:4.1f}x) {r["ffb"]:8.2f} ({r["ffb"] / r["tfb"]:4.1f}x)'
                 if args.fast_cpu else ''), flush=True)
    print(f'weighted total: forward torch {total["tf"]:.0f} ms, MindSpore {total["mf"]:.0f} ms '
          f'({total["mf"] / total["tf"]:.2f}x); forward + backward torch {total["tfb"]:.0f} ms, '
          f'MindSpore {total["mfb"]:.0f} ms ({total["mfb"] / total["tfb"]:.2f}x)'
          + (f'; fast path forward {total["ff"]:.0f} ms ({total["ff"] / total["tf"]:.2f}x), forward + backward '
             f'{total["ffb"]:.0f} ms ({total["ffb"] / total["tfb"]:.2f}x)' if args.fast_cpu else ''))


if __name__ == '__main__':
    main()
