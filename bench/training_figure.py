"""One PNG from a training run: the loss curve (raw and a moving average) above the sample
grids the Trainer wrote at each milestone, left to right.  PIL only (no matplotlib here).

    .venv/bin/python -m bench.training_figure RESULTS_DIR LOSS_LOG OUT.png [--scale 4] [--every 100]
"""

import argparse
import glob
import os
import re
import sys

import numpy as np
from PIL import Image, ImageDraw


def loss_curve(steps, losses, width, height, window=25):
    img = Image.new('RGB', (width, height), 'white')
    d = ImageDraw.Draw(img)
    left, right, top, bottom = 50, 10, 20, 30
    w, h = width - left - right, height - top - bottom
    lo, hi = 0.0, float(np.percentile(losses, 99)) * 1.05
    x = lambda s: left + (s - steps[0]) / max(steps[-1] - steps[0], 1) * w
    y = lambda v: top + h - (min(v, hi) - lo) / (hi - lo) * h
    d.rectangle([left, top, left + w, top + h], outline='black')
    for frac in (0, .25, .5, .75, 1):
        v = lo + frac * (hi - lo)
        d.text((4, y(v) - 6), f'{v:.2f}', fill='black')
        d.line([left, y(v), left + w, y(v)], fill=(225, 225, 225))
    d.line([(x(s), y(v)) for s, v in zip(steps, losses)], fill=(170, 190, 230), width=1)
    if len(losses) >= window:
        avg = np.convolve(losses, np.ones(window) / window, mode='valid')
        d.line([(x(s), y(v)) for s, v in zip(steps[window - 1:], avg)], fill=(20, 60, 200), width=2)
    d.text((left, height - 22), f'step {steps[0]}', fill='black')
    d.text((left + w - 60, height - 22), f'step {steps[-1]}', fill='black')
    d.text((left + 5, 3), f'training loss (light: per step, dark: mean of {window})', fill='black')
    return img


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument('results')
    p.add_argument('loss_log')
    p.add_argument('out')
    p.add_argument('--scale', type=int, default=4)
    p.add_argument('--every', type=int, default=None, help='steps per milestone (for the labels)')
    a = p.parse_args(argv)
    rows = [line.split() for line in open(a.loss_log) if line.strip()]
    steps = np.array([int(r[0]) for r in rows])
    losses = np.array([float(r[1]) for r in rows])
    grids = sorted(glob.glob(os.path.join(a.results, 'sample-*.png')), key=lambda f: int(re.findall(r'\d+', os.path.basename(f))[0]))
    tiles = []
    for f in grids:
        g = Image.open(f).convert('RGB')
        g = g.resize((g.width * a.scale, g.height * a.scale), Image.NEAREST)
        m = int(re.findall(r'\d+', os.path.basename(f))[0])
        label = f'milestone {m}' + (f' (step {m * a.every})' if a.every else '')
        t = Image.new('RGB', (g.width, g.height + 18), 'white')
        t.paste(g, (0, 18))
        ImageDraw.Draw(t).text((2, 2), label, fill='black')
        tiles.append(t)
    pad = 8
    width = max(600, sum(t.width for t in tiles) + pad * (len(tiles) + 1))
    curve = loss_curve(steps, losses, width, 260)
    height = curve.height + (max(t.height for t in tiles) + 2 * pad if tiles else 0)
    out = Image.new('RGB', (width, height), 'white')
    out.paste(curve, (0, 0))
    xpos = pad
    for t in tiles:
        out.paste(t, (xpos, curve.height + pad))
        xpos += t.width + pad
    tmp = a.out + '.tmp.png'
    out.save(tmp)
    os.replace(tmp, a.out)
    print(f'wrote {a.out}: {len(rows)} steps, {len(tiles)} sample grids')
    return 0


if __name__ == '__main__':
    sys.exit(main())
