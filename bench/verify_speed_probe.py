"""Speed probe behind docs/verify-ms2.8.0-vs-2.10.0.md: the built-in default's U-Net forward
(batch 5, 16x16, compiled with ms.jit; median of 7 after one warm-up) and one 3x3 conv at the
platform notes' size (16x64x32x32), in whichever MindSpore is importable.  Run alternately
under each version:  python -m bench.verify_speed_probe
                     PYTHONPATH=/tmp/ms210 python -m bench.verify_speed_probe"""
import json
import time

import numpy as np
import mindspore as ms

from ms_ddpm_tools.verify import core
from ms_ddpm_tools.verify.default import RECIPE, checkpoint_path, config_of


def median(fn, n=7):
    fn()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


cfg, sd, _ = core.load_checkpoint(checkpoint_path(RECIPE), config=config_of(RECIPE))
mu, _ = core.build_ms(cfg, sd)
rng = np.random.default_rng(0)
x = ms.Tensor(rng.standard_normal((5, 1, 16, 16)).astype(np.float32))
t = ms.Tensor(np.array([0, 250, 500, 750, 999], np.int64))


def forward(a, b):
    return mu(a, b)


f = ms.jit(forward)
conv = ms.nn.Conv2d(64, 64, 3, pad_mode='pad', padding=1, has_bias=True)
xc = ms.Tensor(rng.standard_normal((16, 64, 32, 32)).astype(np.float32))
print(json.dumps({'mindspore': ms.__version__,
                  'unet_forward_graph_s': median(lambda: f(x, t).asnumpy()),
                  'unet_forward_pynative_s': median(lambda: mu(x, t).asnumpy(), n=3),
                  'conv3x3_16x64x32x32_s': median(lambda: conv(xc).asnumpy(), n=3)}))
