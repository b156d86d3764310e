"""``ms-ddpm bench``: the MindSpore port against the PyTorch reference on this machine.

Each item runs in a fresh interpreter that times both frameworks on the same CPU threads,
interleaving their repeats, and prints medians and ratios MindSpore / PyTorch (< 1 means MindSpore is faster).
Results go to a JSON file (written atomically) and a table; docs/benchmarks.md has the
figures for the project's machine.

    ms-ddpm bench                 # full run (~10 min on 2 cores)
    ms-ddpm bench --quick         # a short run: fewer repeats, fewer sampling steps
    ms-ddpm bench --suite         # also the wall time of the parity test suite (minutes)
    ms-ddpm bench --only unet_small,ddim --out results.json
"""

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The environment this process started with, for the workers.  ``import mindspore`` (versions(),
# in this parent) writes PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python, LD_LIBRARY_PATH,
# HCCL_CONNECT_TIMEOUT and KMP_DUPLICATE_LIB_OK into os.environ; workers that inherited them ran
# MindSpore slower (the fast Unet(dim=64) train step 1.6 s instead of 1.0 s; the pure-Python
# protobuf alone 1.3 s), and every bench result before 2026-12-03 18:00 was taken that way.
START_ENV = dict(os.environ)

ITEMS = ('convs', 'unet_dim64', 'unet_small', 'train_dim64', 'ddim', 'ddpm_small', 'unet1d', 'train1d', 'ddim1d',
         'karras_unet', 'train_karras', 'uvit', 'train_uvit', 'convert', 'fid_features', 'suite')


@dataclass
class Settings:
    full: bool = True
    threads: int = 2
    repeats: int = 5
    train_repeats: int = 3
    sample_repeats: int = 2
    ddim_steps: int = 50
    ddpm_steps: int = 1000
    modes: tuple = ('pynative', 'graph')
    extras: tuple = ('nn_adam',)
    fast_cpu: bool = False     # --fast-cpu: also time the fast CPU path (ms_ddpm.fastconv), side by side
    side: str = None           # None: every contestant in one process; 'torch' / 'stock' / 'fast': one (ISOLATED)


# With --fast-cpu these items time each contestant in a process of its own (torch alone; MindSpore's
# kernels with its defaults; the fast path with ms_ddpm_tools.runtime's settings, as --fast-cpu
# runs it) and merge the figures.  In one process they disturb each other: the fast path's GNU
# OpenMP runtime is torch's libgomp.so.1 too, so its settings (or its mere use: libgomp throttles
# every pool's spin-waits once it manages more threads than there are cores) change torch's speed
# (torch's train step measured 0.81-0.84 s alone, 1.0-1.65 s beside the fast path).  torch runs
# before, between and after the MindSpore workers (SIDE_ORDER) and its figure is the median of all
# its repeats, so that a machine whose speed drifts over the minutes of an item (this VM's does,
# by up to 30%) weighs on both alike; each worker's own figures are kept in 'sides'.
ISOLATED = ('convs', 'train_dim64', 'ddim', 'ddpm_small', 'train1d', 'ddim1d')
SIDES = ('torch', 'stock', 'fast')
SIDE_ORDER = ('torch', 'fast', 'torch', 'stock', 'torch')


def set_threads(n):
    """The same number of CPU threads for both frameworks; returns what was applied.  Must run
    before MindSpore executes its first op (its thread count can be set once)."""
    import torch
    import mindspore as ms
    applied = {}
    torch.set_num_threads(n)
    applied['torch.set_num_threads'] = torch.get_num_threads()
    try:
        torch.set_num_interop_threads(1)
        applied['torch.set_num_interop_threads'] = 1
    except RuntimeError:
        pass
    ms.set_device('CPU')
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        ms.device_context.cpu.op_tuning.threads_num(n)
        applied['ms.device_context.cpu.op_tuning.threads_num'] = n
    except (AttributeError, RuntimeError):
        ms.set_context(runtime_num_threads=n)
        applied['ms.set_context(runtime_num_threads)'] = n
    return applied


def parse_args(argv):
    p = argparse.ArgumentParser(prog='ms-ddpm bench', description=__doc__.split('\n\n')[0],
                                epilog='exit status: 0 success; 1 error (an item failed to run); 2 bad command line')
    p.add_argument('--quick', action='store_true', help='short run: 2 repeats, 10 DDIM / 100 DDPM steps, no nn.Adam variant')
    p.add_argument('--suite', action='store_true', help='also time the whole parity test suite in a subprocess (minutes)')
    p.add_argument('--only', default=None, help=f'comma-separated items out of {",".join(ITEMS)}')
    p.add_argument('--threads', type=int, default=min(os.cpu_count() or 1, 2),
                   help='CPU threads for both frameworks (default: 2, or fewer cores)')
    p.add_argument('--repeats', type=int, default=None, help='timed repeats per item (after warm-up)')
    p.add_argument('--no-pynative', action='store_true', help='skip MindSpore PyNative timings (GRAPH only)')
    p.add_argument('--fast-cpu', action='store_true',
                   help="also time MindSpore on ms_ddpm.fastconv's fast CPU path (oneDNN convolutions, fused "
                        "softmax / SiLU; pip extra ms_ddpm[fast]) beside the stock kernels: the conv items, "
                        "the train steps and the sampling items")
    p.add_argument('--out', default=None, help='JSON output path (default: bench/results/bench-ms<version>.json)')
    p.add_argument('--worker', default=None, help=argparse.SUPPRESS)   # internal: run one item, print its JSON
    p.add_argument('--side', default=None, choices=SIDES, help=argparse.SUPPRESS)   # internal: one contestant
    return p.parse_args(argv)


def settings_from(args):
    s = Settings(threads=args.threads)
    if args.quick:
        s.full, s.repeats, s.train_repeats, s.sample_repeats = False, 2, 1, 1
        s.ddim_steps, s.ddpm_steps, s.extras = 10, 100, ()
    if args.repeats:
        s.repeats = args.repeats
        s.train_repeats = s.sample_repeats = max(1, min(args.repeats, 3))
    if args.no_pynative:
        s.modes = ('graph',)
    s.fast_cpu = args.fast_cpu
    s.side = args.side
    return s


def selected(args):
    if args.only:
        items = [i.strip() for i in args.only.split(',') if i.strip()]
        unknown = sorted(set(items) - set(ITEMS))
        if unknown:
            raise SystemExit(f'ms-ddpm bench: unknown item(s) {unknown}; known: {", ".join(ITEMS)}')
        return items
    return [i for i in ITEMS if i != 'suite' or args.suite]


def run_item(name, s):
    from bench import items as it
    if name == 'convs':
        return it.convs(s)
    if name == 'unet_dim64':
        return it.unet_forward(s, name, it.DEFAULT_UNET, (16, 3, 32, 32))
    if name == 'unet_small':
        return it.unet_forward(s, name, it.SMALL_UNET, (16, 3, 16, 16))
    if name == 'train_dim64':
        return it.train_step(s, name, it.DEFAULT_UNET, batch=16, image_size=32)
    if name == 'ddim':
        return it.sampling(s, name, it.DEFAULT_UNET, image_size=32, batch=4, timesteps=1000, sampling_timesteps=s.ddim_steps)
    if name == 'ddpm_small':
        return it.sampling(s, name, it.SMALL_UNET, image_size=16, batch=4, timesteps=s.ddpm_steps, sampling_timesteps=None)
    if name == 'unet1d':            # the 1D family: Unet1D(dim=64) on 16 sequences of 2 x 256
        return it.unet_forward(s, name, it.UNET1D, (16, 2, 256), dims=1)
    if name == 'train1d':
        return it.train_step(s, name, it.UNET1D, batch=16, image_size=256, dims=1)
    if name == 'ddim1d':
        return it.sampling(s, name, it.UNET1D, image_size=256, batch=4, timesteps=1000, sampling_timesteps=s.ddim_steps,
                           dims=1)
    if name in ('karras_unet', 'uvit'):     # issue 15: KarrasUnet and simple diffusion's UViT, 32x32, batch 8
        return it.family_forward(s, name, 'karras' if name == 'karras_unet' else 'uvit')
    if name in ('train_karras', 'train_uvit'):
        return it.family_train(s, name, 'karras' if name == 'train_karras' else 'uvit')
    if name == 'convert':
        return it.convert(s, ROOT)
    if name == 'fid_features':
        return it.fid_features(s, name, batch=2)
    if name == 'suite':
        return it.suite(s, ROOT)
    raise ValueError(name)


# --- report ---------------------------------------------------------------------------------

def _ms(x):
    return '-' if x is None else (f'{x * 1e3:.1f} ms' if x < 10 else f'{x:.1f} s')


def table(results):
    head = f'{"item":13s} {"torch":>10s} {"ms pynative":>12s} {"ms graph":>10s} {"compile":>9s} {"graph/torch":>12s} {"pyn/torch":>10s}'
    lines = [head, '-' * len(head)]
    for r in results:
        f = r.get('figures')
        if f:
            g = f.get('ms_graph', {}).get('median_s')
            lines.append(f'{r["item"]:13s} {_ms(f["torch"]["median_s"]):>10s} {_ms(f.get("ms_pynative", {}).get("median_s")):>12s} '
                         f'{_ms(g):>10s} {_ms(r.get("compile_s", {}).get("ms_graph")):>9s} '
                         f'{_r(r["ratios"].get("ms_graph")):>12s} {_r(r["ratios"].get("ms_pynative")):>10s}')
            if 'ms_graph_nn_adam' in f:
                lines.append(f'{"  (nn.Adam)":13s} {"":>10s} {"":>12s} {_ms(f["ms_graph_nn_adam"]["median_s"]):>10s} '
                             f'{_ms(r["compile_s"].get("ms_graph_nn_adam")):>9s} {_r(r["ratios"].get("ms_graph_nn_adam")):>12s}')
            lines += _fast_lines('  (fast path)', f, r)
            if 'steps' in r:
                lines.append(f'{"  per step":13s} {_ms(f["torch"]["per_step_s"]):>10s} {"":>12s} {_ms(f["ms_graph"]["per_step_s"]):>10s}')
        elif r['item'] == 'convs':
            for k, kr in r['kernels'].items():
                kf = kr['figures']
                lines.append(f'{"conv " + k:13s} {_ms(kf["torch"]["median_s"]):>10s} {_ms(kf.get("ms_pynative", {}).get("median_s")):>12s} '
                             f'{_ms(kf["ms_graph"]["median_s"]):>10s} {_ms(kr["compile_s"]["ms_graph"]):>9s} '
                             f'{_r(kr["ratios"].get("ms_graph")):>12s} {_r(kr["ratios"].get("ms_pynative")):>10s}')
                lines += _fast_lines('  (fast path)', kf, kr)
        elif r['item'] == 'convert':
            lines.append(f'{"convert":13s} ' + (r.get('skipped') or _convert_line(r.get('convert_bench', {}))))
        elif r['item'] == 'suite':
            lines.append(f'{"suite":13s} {_ms(r["wall_s"]):>10s}  ({r["summary"]})')
        elif 'error' in r:
            lines.append(f'{r["item"]:13s} FAILED: {r["error"]}')
    return '\n'.join(lines)


def _fast_lines(label, f, r):
    """The oneDNN-conv figures (``--fast-cpu``) under the stock ones: times, ratios to torch,
    and fast / stock."""
    if 'ms_graph_fast' not in f and 'ms_pynative_fast' not in f:
        return []
    g, p = f.get('ms_graph_fast', {}).get('median_s'), f.get('ms_pynative_fast', {}).get('median_s')
    sg, sp = f.get('ms_graph', {}).get('median_s'), f.get('ms_pynative', {}).get('median_s')
    vs = ', '.join(f'{k} fast/stock {a / b:.2f}' for k, a, b in (('graph', g, sg), ('pyn', p, sp)) if a and b)
    return [f'{label:13s} {"":>10s} {_ms(p):>12s} {_ms(g):>10s} {_ms(r.get("compile_s", {}).get("ms_graph_fast")):>9s} '
            f'{_r(r["ratios"].get("ms_graph_fast")):>12s} {_r(r["ratios"].get("ms_pynative_fast")):>10s}  ({vs})']


def _r(x):
    return '-' if x is None else f'{x:.2f}'


def _convert_line(cb):
    if 'cp_s' not in cb:
        keys = sorted(k for k, v in cb.items() if isinstance(v, (int, float)))
        return ', '.join(f'{k}={cb[k]:.3g}' for k in keys[:8])
    mib = 2 ** 20
    line = (f'{cb["checkpoint_bytes"] / mib:.0f} MiB checkpoint: cp {_ms(cb["cp_s"])}, -> .ckpt {_ms(cb["convert_ckpt_s"])} '
            f'({cb["ratio_time_ckpt_vs_cp"]:.2f}x cp)')
    if 'convert_safetensors_s' in cb:
        line += f', -> .safetensors {_ms(cb["convert_safetensors_s"])} ({cb["ratio_time_safetensors_vs_cp"]:.2f}x)'
    if 'ratio_peak_rss_ckpt_vs_checkpoint' in cb:
        line += (f'; peak RSS {cb["peak_rss_ckpt_bytes"] / mib:.0f} MiB = {cb["ratio_peak_rss_ckpt_vs_checkpoint"]:.2f}x '
                 f'checkpoint (added by the conversion {cb["ratio_added_rss_ckpt_vs_checkpoint"]:.2f}x)')
    return line


def write_json(path, data):
    from ms_ddpm.io import write_json as write
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write(path, data)


def _worker_argv(args, name, side=None):
    argv = ['--worker', name, '--threads', str(args.threads)] + (['--side', side] if side else [])
    if args.quick:
        argv.append('--quick')
    if args.repeats:
        argv += ['--repeats', str(args.repeats)]
    if args.no_pynative:
        argv.append('--no-pynative')
    if args.fast_cpu:
        argv.append('--fast-cpu')
    return argv


def run_isolated(args, name):
    """One ISOLATED item as a worker per contestant (SIDE_ORDER), merged into one result."""
    parts = [run_in_subprocess(args, name, side) for side in SIDE_ORDER]
    failed = [p for p in parts if 'error' in p]
    return failed[0] if failed else merge_sides(parts)


def merge_sides(parts):
    """The workers' results as one: figures, first-call and compile times side by side; torch's
    figure from all its workers' repeats together; ratios against it; per worker: its side, the
    settings it ran with, its own figures and the load, under 'sides'."""
    from bench.timing import ratio, summary

    def fold(dst, srcs):
        for key in ('figures', 'first_call_s', 'compile_s'):
            dst[key] = {k: v for p in srcs for k, v in p.get(key, {}).items() if k != 'torch'}
        torch_figs = [p['figures']['torch'] for p in srcs if 'torch' in p.get('figures', {})]
        t = summary([x for f in torch_figs for x in f.get('times_s', [f['median_s']])])
        if 'per_step_s' in torch_figs[0]:          # sampling: the same number of steps in every worker
            t['per_step_s'] = t['median_s'] * torch_figs[0]['per_step_s'] / torch_figs[0]['median_s']
        dst['figures'] = {'torch': t, **dst['figures']}
        dst['ratios'] = {k: ratio(f['median_s'], t['median_s']) for k, f in dst['figures'].items() if k != 'torch'}

    out = {k: v for k, v in parts[0].items() if k not in ('side', 'figures', 'ratios', 'first_call_s', 'compile_s')}
    if 'kernels' in out:
        out['kernels'] = {k: {} for k in parts[0]['kernels']}
        for k, dst in out['kernels'].items():
            fold(dst, [p['kernels'][k] for p in parts])
    else:
        fold(out, parts)
    out['sides'] = [p['side'] | {'figures': p.get('figures') or {k: v['figures'] for k, v in p['kernels'].items()}}
                    for p in parts]
    return out


def run_in_subprocess(args, name, side=None):
    """One item in a fresh interpreter: every item starts from the same state (threads set
    before MindSpore's first op, no error state or memory pool left by an earlier item; a
    GRAPH train step can hold GiBs that MindSpore does not give back)."""
    import subprocess
    proc = subprocess.run([sys.executable, '-m', 'bench.run'] + _worker_argv(args, name, side),
                          cwd=ROOT, capture_output=True, text=True, env=START_ENV)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(_MARK)]
    if proc.returncode or not lines:
        tail = (proc.stderr or proc.stdout)[-1500:]
        return {'item': name, 'error': f'worker exited with {proc.returncode}: {tail}'}
    return json.loads(lines[-1][len(_MARK):])


_MARK = '@@BENCH-ITEM@@'


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    s = settings_from(args)
    for env in (os.environ, START_ENV):
        env.setdefault('TQDM_DISABLE', '1')    # the sampling loops' progress bars, both frameworks
        env.setdefault('GLOG_v', '3')          # MindSpore: errors only
    if args.worker:
        tuned = {}
        if s.side == 'fast':         # before torch or MindSpore load (set_threads imports both)
            from ms_ddpm_tools.runtime import tune_runtime
            tuned = tune_runtime()
        threads = set_threads(s.threads)
        try:
            r = run_item(args.worker, s)
        except Exception as err:     # reported in the JSON, the other items still run
            r = {'item': args.worker, 'error': f'{type(err).__name__}: {err}'}
        r['threads'] = threads
        if s.side:
            r['side'] = {'side': s.side, 'runtime_settings': tuned, 'load_before': r.get('load_before'),
                         'load_after': r.get('load_after')}
        print(_MARK + json.dumps(r, default=str), flush=True)
        return 0
    names = selected(args)
    from bench.timing import load, versions
    data = {'started': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), 'versions': versions(),
            'threads': None, 'settings': vars(s) | {'modes': list(s.modes), 'extras': list(s.extras)},
            'env': {k: os.environ.get(k) for k in ('MS_DDPM_FAST_MATH', 'MS_DDPM_CPU_CONV', 'OMP_NUM_THREADS', 'PYTHONPATH',
                                                  'MS_DEV_HOST_BLOCKING_RUN', 'GOMP_SPINCOUNT', 'OMP_WAIT_POLICY')},
            'load_start': load(), 'results': []}
    out = args.out or os.path.join(ROOT, 'bench', 'results', f'bench-ms{data["versions"]["mindspore"]}.json')
    print(f'ms-ddpm bench: mindspore {data["versions"]["mindspore"]}, torch {data["versions"]["torch"]}, '
          f'{s.threads} threads, load {data["load_start"]}, items: {", ".join(names)}', flush=True)
    start = time.perf_counter()
    for name in names:
        t0 = time.perf_counter()
        print(f'  {name} ...', end='', flush=True)
        r = run_isolated(args, name) if args.fast_cpu and name in ISOLATED else run_in_subprocess(args, name)
        r['item_wall_s'] = time.perf_counter() - t0
        data['threads'] = data['threads'] or r.get('threads')
        data['results'].append(r)
        print(f' {r["item_wall_s"]:.0f} s' + (f'  FAILED: {r["error"][:300]}' if 'error' in r else ''), flush=True)
        write_json(out, data)
    data['wall_s'] = time.perf_counter() - start
    data['load_end'] = load()
    write_json(out, data)
    print()
    print(table(data['results']))
    print(f'\nload {data["load_start"]} -> {data["load_end"]}; wall {data["wall_s"]:.0f} s; JSON: {out}')
    return 1 if any('error' in r for r in data['results']) else 0


if __name__ == '__main__':
    sys.exit(main())
