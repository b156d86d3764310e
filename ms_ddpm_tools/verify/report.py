"""Outputs of ``verify``: the terminal table, Markdown, JSON and the side-by-side PNG; and
``regress``: two JSON runs compared (framework-upgrade regression check)."""

import json
import os
from collections import OrderedDict

import numpy as np

from ms_ddpm_tools.verify.core import KINDS

TIMING_FACTOR = 1.5      # a timing is a regression when new / old exceeds this ...
TIMING_FLOOR_S = 0.05    # ... and the new time is at least this long (shorter ones are noise)


def versions(torch_info=None):
    from ms_ddpm.io.records import versions as v
    return v(torch_info)


def kernels():
    """Which CPU kernels the MindSpore side ran (issue 18): 'mindspore' (MindSpore's own, the
    default and what the parity claims are about) or 'onednn' (ms_ddpm.fastconv: oneDNN
    convolutions + fused softmax / SiLU; MS_DDPM_CPU_CONV=onednn or --fast-cpu)."""
    from ms_ddpm import fastconv
    return fastconv.status()


def machine():
    from ms_ddpm.io.records import machine as m
    return m()


def write_report(out, rep):
    """``out/verify.json`` and ``out/report.md``, each written atomically."""
    from ms_ddpm.io import atomic_write, write_json
    write_json(os.path.join(out, 'verify.json'), rep)
    atomic_write(os.path.join(out, 'report.md'), markdown(rep))


def component(name):
    for prefix, (_, comp) in KINDS.items():
        if name.startswith(prefix):
            return comp
    return 'other'


def summary_rows(results):
    """One row per comparison that a person reads (layers folded into one row)."""
    rows = []
    layers = [r for r in results if r.name.startswith('layer/')]
    if layers:
        worst = max(layers, key=lambda r: (r.nonfinite, r.rel_fro))
        rows.append(dict(name=f'layers: {len(layers)} outputs (worst: {worst.name[6:]})', rel_fro=worst.rel_fro,
                         max_abs=max(r.max_abs for r in layers), max_rel=max(r.max_rel for r in layers),
                         cosine=min(r.cosine for r in layers), within_1e3=min(r.within_1e3 for r in layers),
                         tol=worst.tol, metric='rel_fro', ok=all(r.ok for r in layers),
                         gate='tolerance' if all(getattr(r, 'gate', 'tolerance') == 'tolerance' for r in layers) else 'f64'))
    weights = [r for r in results if r.name.startswith('weight/')]
    if weights:
        bad = [r for r in weights if not r.ok]
        worst = max(weights, key=lambda r: (not r.ok, r.nonfinite, r.max_abs))
        rows.insert(0, dict(name=f'weights: {len(weights)} tensors vs source, {len(bad)} differ'
                            + (f' (first: {bad[0].name[7:]})' if bad else ''),
                            rel_fro=worst.rel_fro, max_abs=max(r.max_abs for r in weights),
                            max_rel=max(r.max_rel for r in weights), cosine=min(r.cosine for r in weights),
                            within_1e3=min(r.within_1e3 for r in weights), tol=0.0, metric='max_abs',
                            ok=not bad))
    bufs = [r for r in results if r.name.startswith('buffer/')]
    for r in results:
        if r.name.startswith(('layer/', 'buffer/', 'weight/')):
            continue
        rows.append(dict(name=r.name, rel_fro=r.rel_fro, max_abs=r.max_abs, max_rel=r.max_rel, cosine=r.cosine,
                         within_1e3=r.within_1e3, tol=r.tol, metric=r.metric, ok=r.ok,
                         gate='tolerance' if getattr(r, 'gate', 'tolerance') == 'tolerance' else 'f64'))
    if bufs:
        rows.append(dict(name=f'schedule buffers: {len(bufs)}', rel_fro=max(r.rel_fro for r in bufs),
                         max_abs=max(r.max_abs for r in bufs), max_rel=max(r.max_rel for r in bufs),
                         cosine=min(r.cosine for r in bufs), within_1e3=min(r.within_1e3 for r in bufs),
                         tol=0.0, metric='rel_fro', ok=all(r.ok for r in bufs)))
    return rows


HEAD = ('comparison', 'rel_fro', 'max_abs', 'max_rel', 'cosine', 'within 1e-3', 'gate', 'verdict')


def _cells(row):
    gate = f'{row["metric"]}<={row["tol"]:.1e}'
    return (row['name'], f'{row["rel_fro"]:.2e}', f'{row["max_abs"]:.2e}', f'{row["max_rel"]:.2e}',
            f'{row["cosine"]:.9f}', f'{row["within_1e3"]:.2%}', gate,
            ('ok' if row.get('gate', 'tolerance') == 'tolerance' else 'ok (f64)') if row['ok'] else 'FAIL')


def terminal_table(rows):
    cells = [HEAD] + [_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEAD))]
    widths[0] = min(widths[0], 60)
    lines = []
    for j, c in enumerate(cells):
        lines.append('  '.join((c[0][:widths[0]].ljust(widths[0]),) + tuple(x.rjust(w) for x, w in zip(c[1:], widths[1:]))))
        if j == 0:
            lines.append('-' * len(lines[0]))
    return '\n'.join(lines)


def markdown(report):
    v, rows = report['verdict'], summary_rows_from_json(report)
    out = [f'# ms-ddpm verify: {"PASS" if v["ok"] else "FAIL"}', '',
           f'- checkpoint: `{report["checkpoint"]}`' + (f' ({report["source"]})' if report.get('source') else ''),
           f'- weights compared: {report.get("weights") or "the state dict"}',
           *([f'- MindSpore side built from: `{report["against"]}` ({report.get("against_source")}); '
              f'{v.get("differing_tensor_count", 0)} tensors differ from the source'
              + (': ' + ', '.join(f'`{n}`' for n in v.get('differing_tensors', [])[:10]) if v.get('differing_tensors') else '')
              + (f'; only in the source: {", ".join(v["tensors_only_in_source"][:10])}' if v.get('tensors_only_in_source') else '')
              + (f'; only in the converted file: {", ".join(v["tensors_only_in_against"][:10])}' if v.get('tensors_only_in_against') else '')]
             if report.get('against') else []),
           (f'- model: `{_net_name(report)}({_kw(report["config"]["unet"])})` in '
            f'`{_diffusion_name(report)}({_kw(report["config"]["diffusion"])})`'
            if report['config'].get('diffusion') is not None else      # issue 15: a bare network, on its own
            f'- model: `{report["config"].get("model")}({_kw(report["config"]["unet"])})` (the network alone)'),
           f'- reference side: {report["versions"]["torch_source"]}; '
           + ', '.join(f'{k} {x}' for k, x in report['versions'].items() if k != 'torch_source'),
           f'- MindSpore CPU kernels: {report.get("mindspore_kernels") or "mindspore"}'
           + (' (ms_ddpm.fastconv: oneDNN convolutions, fused softmax, SiLU, normalize, matmuls, gain / scale-shift, Adam)' if report.get('mindspore_kernels') == 'onednn' else ''),
           f'- first layer that diverges (execution order, beyond the gate): **{v["first_divergent_layer"] or "none"}**',
           f'- first layer beyond its tolerance: {v.get("first_beyond_tolerance") or "none"}',
           f'- first layer beyond the single-block tolerance `layer` (where drift starts; informative): '
           f'{v["first_drift_layer"] or "none"}',
           *[f'- passed on accuracy against float64 (beyond tolerance): {x}' for x in v.get('accuracy_gated', [])],
           f'- {v["compared"]} tensors compared, {v["failed"]} failed; '
           f'{len(report["unmatched"]["only_torch"])} reference layer outputs without a MindSpore twin, '
           f'{len(report["unmatched"]["only_mindspore"])} the other way', '',
           '| ' + ' | '.join(HEAD) + ' |', '|' + '---|' * len(HEAD)]
    out += ['| ' + ' | '.join(c.replace('|', '/') for c in _cells(r)) + ' |' for r in rows]
    out += ['', '`ok (f64)`: beyond its tolerance, but MindSpore is no farther than 4x PyTorch\'s own float32 result (floored at 8 ulp) '
            'from the reference evaluated in float64: the suite\'s error model, parity.tolerances.ACCURACY.', '', 'Gates: `rel_fro` = ||ms - torch|| / ||torch||; samples are gated on `max_abs` in [0, 1] pixel units. '
            'NaN or Inf fails whatever the figure. Tolerances and their reasons: `parity/tolerances.py`.', '',
            '## Timings (seconds)', '', '| step | PyTorch | MindSpore | MindSpore / PyTorch |', '|---|---|---|---|']
    t = report['timings']
    for step in t['mindspore']:
        a, b = t['torch'].get(step), t['mindspore'][step]
        ratio = f'{b / a:.2f}' if a else ''
        out.append(f'| {step} | {a:.3f} | {b:.3f} | {ratio} |' if a else f'| {step} | | {b:.3f} | |')
    if report.get('noising_image'):
        out += ['', f'![the forward process: PyTorch | MindSpore | |difference|]({os.path.basename(report["noising_image"])})',
                '', report.get('noising_caption', '')]
    if report.get('image'):
        out += ['', f'![PyTorch samples | MindSpore samples | |difference|]({os.path.basename(report["image"])})',
                '', report.get('image_caption', '')]
    out += ['', '## Every layer, in execution order', '', '| # | layer | shape | rel_fro | max_abs | cosine | verdict |',
            '|---|---|---|---|---|---|---|']
    for i, r in enumerate(x for x in report['results'] if x['name'].startswith('layer/')):
        out.append(f'| {i} | `{r["name"][6:]}` (worst at t={r.get("at_t")}) | {"x".join(map(str, r["shape"]))} | {r["rel_fro"]:.2e} | '
                   f'{r["max_abs"]:.2e} | {r["cosine"]:.9f} | {"ok" if r["ok"] else "FAIL"} |')
    out += ['', '## Machine', '', '```', json.dumps(report['machine'], indent=1), '```', '']
    return '\n'.join(out)


def _diffusion_name(report):
    m = (report.get('config') or {}).get('model') or 'GaussianDiffusion'
    return {'Unet': 'GaussianDiffusion', 'Unet1D': 'GaussianDiffusion1D'}.get(m, m)


def _net_name(report):
    return 'Unet1D' if _diffusion_name(report).endswith('1D') else 'Unet'


def _kw(d):
    return ', '.join(f'{k}={v}' for k, v in d.items() if v not in (None, {}, False) or k == 'channels')


def summary_rows_from_json(report):
    from parity.compare import Diff
    rs = []
    for d in report['results']:
        r = Diff(d['name'], tuple(d['shape']), d['rel_fro'], d['max_abs'], d['max_rel'], d['cosine'],
                 d['within_1e3'], d['nonfinite'], d['tol'], d['ok'])
        r.metric = d['metric']
        r.gate = d.get('gate', 'tolerance')
        rs.append(r)
    return summary_rows(rs)


def side_by_side_png(expected, actual, path, scale=4):
    """PyTorch samples | MindSpore samples | |difference| (stretched to the max), PNG."""
    from PIL import Image, ImageDraw
    a = np.clip(np.asarray(expected, np.float64), 0, 1)
    b = np.clip(np.asarray(actual, np.float64), 0, 1)
    d = np.abs(np.asarray(expected, np.float64) - np.asarray(actual, np.float64))
    dmax = float(d.max())
    dn = d / dmax if dmax > 0 else d

    def grid(x):
        n, c, h, w = x.shape
        cols = int(np.ceil(np.sqrt(n)))
        rows = int(np.ceil(n / cols))
        g = np.zeros((c, rows * (h + 2) + 2, cols * (w + 2) + 2))
        for i in range(n):
            r, q = divmod(i, cols)
            g[:, 2 + r * (h + 2):2 + r * (h + 2) + h, 2 + q * (w + 2):2 + q * (w + 2) + w] = x[i]
        g = np.round(g * 255).astype(np.uint8)
        img = Image.fromarray(g[0] if c == 1 else g.transpose(1, 2, 0)[..., :3]).convert('RGB')
        return img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    panels = [grid(a), grid(b), grid(dn)]
    labels = ['PyTorch', 'MindSpore', f'|difference| x {1 / dmax:.3g}' if dmax > 0 else '|difference| = 0']
    pad, top = 8, 16
    W = sum(p.width for p in panels) + pad * 4
    H = max(p.height for p in panels) + top + pad * 2
    canvas = Image.new('RGB', (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    x = pad
    for p, label in zip(panels, labels):
        canvas.paste(p, (x, top + pad))
        draw.text((x, 3), label, fill=(0, 0, 0))
        x += p.width + pad
    from ms_ddpm.io import atomic_save
    atomic_save(path, lambda tmp: canvas.save(tmp, format='PNG'))
    return dmax


# --- regression: two runs -------------------------------------------------------------------

def regress(old, new, factor=TIMING_FACTOR, floor=TIMING_FLOOR_S):
    """Compare two verify JSON reports.  A figure regresses when its gated metric grew by
    more than its tolerance (any growth for an exact, zero tolerance), when a pass became a
    failure, when NaN/Inf appeared, or when it disappeared.  A timing regresses when
    new / old > ``factor`` (and new >= ``floor`` seconds).  Returns (rows, regressions)."""
    o = {r['name']: r for r in old['results']}
    rows, bad = [], []
    for r in new['results']:
        p = o.get(r['name'])
        if p is None:
            rows.append(dict(name=r['name'], kind='figure', old=None, new=r[r['metric']], note='new'))
            continue
        m = r['metric']
        grew = r[m] - p[m]
        why = []
        if r['nonfinite'] and not p['nonfinite']:
            why.append('NaN/Inf appeared')
        if p['ok'] and not r['ok']:
            why.append('pass -> FAIL')
        if grew > r['tol'] or (r['tol'] == 0 and grew > 0):
            why.append(f'{m} grew by {grew:.2e} > tolerance {r["tol"]:.1e}')
        row = dict(name=r['name'], kind='figure', metric=m, old=p[m], new=r[m], tol=r['tol'],
                   note='; '.join(why) or ('worse, within tolerance' if grew > 0 else 'same or better'))
        rows.append(row)
        if why:
            bad.append(row)
    newnames = {r['name'] for r in new['results']}
    for name in o:
        if name not in newnames:
            row = dict(name=name, kind='figure', old=o[name][o[name]['metric']], new=None, note='missing in the new run')
            rows.append(row)
            bad.append(row)
    for side in ('torch', 'mindspore'):
        ot, nt = old['timings'].get(side, {}), new['timings'].get(side, {})
        for step, t in nt.items():
            if step not in ot or not ot[step]:
                continue
            ratio = t / ot[step]
            slow = ratio > factor and t >= floor
            row = dict(name=f'{side}: {step}', kind='timing', old=ot[step], new=t, ratio=ratio,
                       note=f'{ratio:.2f}x slower > {factor}x' if slow else f'{ratio:.2f}x')
            rows.append(row)
            if slow:
                bad.append(row)
    return rows, bad


def regress_markdown(old, new, rows, bad, factor, old_path, new_path):
    def vers(rep):
        v = rep['versions']
        return f'MindSpore {v["mindspore"]}, PyTorch {v["torch"]}, NumPy {v["numpy"]}, Python {v["python"]}'
    out = [f'# ms-ddpm diff: {"REGRESSION" if bad else "no regression"}', '',
           f'- old: `{old_path}` ({vers(old)}; verdict {"PASS" if old["verdict"]["ok"] else "FAIL"})',
           f'- new: `{new_path}` ({vers(new)}; verdict {"PASS" if new["verdict"]["ok"] else "FAIL"})',
           f'- rules: a figure regresses when its gated metric grows by more than its tolerance, a pass becomes a '
           f'failure, NaN/Inf appears, or it is missing; a timing regresses when new/old > {factor} '
           f'(and new >= {TIMING_FLOOR_S} s)',
           f'- first divergent layer: old {old["verdict"]["first_divergent_layer"] or "none"}, '
           f'new {new["verdict"]["first_divergent_layer"] or "none"}', '',
           f'## Regressions ({len(bad)})', '']
    if bad:
        out += ['| what | old | new | why |', '|---|---|---|---|']
        out += [f'| {r["name"]} | {_f(r["old"])} | {_f(r["new"])} | {r["note"]} |' for r in bad]
    else:
        out.append('none')
    figs = [r for r in rows if r['kind'] == 'figure' and not r['name'].startswith('layer/')]
    layers = [r for r in rows if r['kind'] == 'figure' and r['name'].startswith('layer/')]
    out += ['', '## Timings (seconds)', '', '| step | old | new | new / old |', '|---|---|---|---|']
    out += [f'| {r["name"]} | {r["old"]:.3f} | {r["new"]:.3f} | {r["note"]} |' for r in rows if r['kind'] == 'timing']
    out += ['', '## Figures (gated metric)', '', '| comparison | old | new | tolerance | note |', '|---|---|---|---|---|']
    out += [f'| {r["name"]} | {_f(r["old"])} | {_f(r["new"])} | {_f(r.get("tol"))} | {r["note"]} |' for r in figs]
    if layers:
        changed = [r for r in layers if r['old'] is not None and r['new'] is not None and r['old'] != r['new']]
        worst_old = max((r['old'] for r in layers if r['old'] is not None), default=0)
        worst_new = max((r['new'] for r in layers if r['new'] is not None), default=0)
        out += ['', f'Layers: {len(layers)} outputs; {len(changed)} changed; worst rel_fro old {worst_old:.2e}, '
                f'new {worst_new:.2e}.']
    return '\n'.join(out) + '\n'


def _f(x):
    return '' if x is None else (f'{x:.2e}' if isinstance(x, float) else str(x))




def different_models(old, new):
    """Lines saying how two verify reports differ in what they verified (model, weights,
    inputs): figures of different models are not a regression check."""
    lines = []
    oc, nc = old.get('config') or {}, new.get('config') or {}
    for part in ('unet', 'diffusion'):
        if oc.get(part) != nc.get(part):
            keys = sorted(k for k in set(oc.get(part) or {}) | set(nc.get(part) or {})
                          if (oc.get(part) or {}).get(k) != (nc.get(part) or {}).get(k))
            lines.append(f'the two runs verified different models ({part}: {", ".join(keys) or "missing"} differ)')
    if old.get('weights') != new.get('weights'):
        lines.append(f'the two runs compared different weights: {old.get("weights")!r} vs {new.get("weights")!r}')
    for k in ('batch', 'seed', 'timesteps_compared'):
        if k in old and k in new and old[k] != new[k]:
            lines.append(f'the two runs used different inputs ({k}: {old[k]} vs {new[k]})')
    return lines


def image_rows_png(rows, path, labels=(), row_labels=(), scale=None):
    """Rows of images side by side (each row (N, C, H, W) in [0, 1]), column labels on top and
    row labels on the left, as one PNG (written atomically).  Small images are enlarged
    (nearest) to at least 64 pixels."""
    from PIL import Image, ImageDraw
    rows = [np.clip(np.asarray(r, np.float64), 0, 1) for r in rows]
    n, c, h, w = rows[0].shape
    scale = scale or max(1, int(np.ceil(64 / max(h, w))))
    pad, top = 6, 16
    left = 8 + 7 * max((len(s) for s in row_labels), default=0)
    W = left + n * (w * scale + pad) + pad
    H = top + len(rows) * (h * scale + pad) + pad
    canvas = Image.new('RGB', (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for j, label in enumerate(labels):
        draw.text((left + j * (w * scale + pad), 2), str(label), fill=(0, 0, 0))
    for i, row in enumerate(rows):
        y = top + i * (h * scale + pad)
        if i < len(row_labels):
            draw.text((4, y + h * scale // 2 - 5), row_labels[i], fill=(0, 0, 0))
        for j in range(row.shape[0]):
            g = np.round(row[j] * 255).astype(np.uint8)
            img = Image.fromarray(g[0] if c == 1 else g.transpose(1, 2, 0)[..., :3]).convert('RGB')
            canvas.paste(img.resize((w * scale, h * scale), Image.NEAREST), (left + j * (w * scale + pad), y))
    from ms_ddpm.io import atomic_save
    atomic_save(path, lambda tmp: canvas.save(tmp, format='PNG'))
    return path


COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75))


def sequences_png(expected, actual, path, width=220, height=60, labels=('PyTorch', 'MindSpore'), difference=True):
    """Sequences (N, C, L) as line plots, a row per sample, a colour per channel:
    PyTorch | MindSpore | |difference| (stretched to its max, which the header gives).
    Returns the largest |difference|."""
    from PIL import Image, ImageDraw
    a, b = np.asarray(expected, np.float64), np.asarray(actual, np.float64)
    d = np.abs(a - b)
    dmax = float(d.max()) if d.size else 0.0
    n, c, L = a.shape
    lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
    hi = hi if hi > lo else lo + 1
    pad, top = 8, 16
    panels = 3 if difference else 2
    W, H = panels * (width + pad) + pad, top + n * (height + pad) + pad
    canvas = Image.new('RGB', (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    heads = list(labels) + ([f'|difference| (max {dmax:.2e})'] if difference else [])
    for k, head in enumerate(heads):
        draw.text((pad + k * (width + pad), 2), head, fill=(0, 0, 0))
    xs = np.linspace(0, width - 1, L)
    for i in range(n):
        y0 = top + i * (height + pad)
        for k, (data, low, high) in enumerate(((a, lo, hi), (b, lo, hi), (d, 0.0, dmax or 1.0))[:panels]):
            x0 = pad + k * (width + pad)
            draw.rectangle((x0, y0, x0 + width - 1, y0 + height - 1), outline=(200, 200, 200))
            for ch in range(c):
                ys = y0 + height - 1 - (data[i, ch] - low) / (high - low) * (height - 1)
                draw.line(list(zip(x0 + xs, ys)), fill=COLOURS[ch % len(COLOURS)], width=1)
    from ms_ddpm.io import atomic_save
    atomic_save(path, lambda tmp: canvas.save(tmp, format='PNG'))
    return dmax


def plot_sequences_png(x, path, width=320, height=60):
    """Sequences (N, C, L) as line plots, a row per sample, a colour per channel (PNG)."""
    from PIL import Image, ImageDraw
    x = np.asarray(x, np.float64)
    n, c, L = x.shape
    lo, hi = float(x.min()), float(x.max())
    hi = hi if hi > lo else lo + 1
    pad = 6
    canvas = Image.new('RGB', (width + 2 * pad, n * (height + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    xs = pad + np.linspace(0, width - 1, L)
    for i in range(n):
        y0 = pad + i * (height + pad)
        draw.rectangle((pad, y0, pad + width - 1, y0 + height - 1), outline=(200, 200, 200))
        for ch in range(c):
            ys = y0 + height - 1 - (x[i, ch] - lo) / (hi - lo) * (height - 1)
            draw.line(list(zip(xs, ys)), fill=COLOURS[ch % len(COLOURS)], width=1)
    from ms_ddpm.io import atomic_save
    atomic_save(path, lambda tmp: canvas.save(tmp, format='PNG'))
    return path
