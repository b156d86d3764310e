"""Converter benchmark: a large reference checkpoint (``Unet(dim=128, dim_mults=(1,2,4,8))``
saved by ``torch.save``, ~560 MB) converted to MindSpore ``.ckpt`` and ``.safetensors`` and
back, against ``cp`` of the same file, with the conversion's peak memory.

Each conversion runs in a fresh subprocess, so its peak RSS (``ru_maxrss``) is its own:
- ``work``: inside the subprocess, after ``import mindspore, ms_ddpm`` (the fixed cost of any
  MindSpore program; the converter does not import torch, and the child reports whether
  anything did), ``weight_convert.convert(SRC, DST)`` is timed and the peak RSS reached
  during it is compared with the checkpoint size, both absolute and over the RSS the process
  had after its imports (the part the conversion adds);
- ``cli``: the whole ``ms-ddpm convert SRC DST -q`` command, interpreter start and imports
  included (what a user sees), for ``.pt -> .ckpt`` and ``.ckpt -> .pt``: its wall time, and
  its peak RSS from ``os.wait4``; ``startup`` is the same interpreter importing what the
  command imports and converting nothing.
``cp`` is ``cp --reflink=never``; the converter fsyncs its output before renaming it into
place, so ``cp`` followed by ``sync FILE`` is timed too.  Before every timed step the
previous outputs are deleted and ``sync`` is run (untimed), so no step pays for the disk
write-back of the one before it.  Figures are medians of ``runs``
repeats, interleaved; the file is in the page cache for all of them.

    python -m bench.convert_bench [--runs 3] [--dim 128]
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r'''
import json, os, resource, sys, time
sys.path.insert(0, {root!r})
{imports}                                       # the fixed cost of any MindSpore program
from weight_convert import convert
import ms_ddpm_tools.verify.engine             # everything the conversion imports lazily
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t = time.perf_counter()
phases = convert({src!r}, {dst!r})['phases']
work = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(dict(work_s=work, base_rss=base, peak_rss=peak, torch_imported='torch' in sys.modules, phases=phases)))
'''

NO_TORCH = 'import mindspore, ms_ddpm'
STARTUP = 'import ms_ddpm_tools.convert, weight_convert.converter, mindspore, ms_ddpm'


def _command():
    """The ``ms-ddpm`` console script beside this interpreter, else ``python -m ms_ddpm_tools.cli``."""
    script = os.path.join(os.path.dirname(sys.executable), 'ms-ddpm')
    return [script] if os.path.exists(script) else [sys.executable, '-m', 'ms_ddpm_tools.cli']


def _cli(cmd, env):
    """(wall seconds, peak RSS bytes) of one command, from its own rusage (os.wait4)."""
    with tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT, env=env)
        _, status, usage = os.wait4(p.pid, 0)
        dt = time.perf_counter() - t
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode:
            err.seek(0)
            raise RuntimeError(f'{cmd[:4]} failed ({p.returncode}): {err.read()[-2000:].decode(errors="replace")}')
    return dt, usage.ru_maxrss * 1024


def _make_checkpoint(path, dim):
    code = (f'import torch, denoising_diffusion_pytorch as ddp; torch.manual_seed(0); '
            f'torch.save(ddp.Unet(dim={dim}, dim_mults=(1, 2, 4, 8)).state_dict(), {path!r})')
    subprocess.run([sys.executable, '-c', code], check=True, cwd=ROOT)


def _timed(cmd, **kw):
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, **kw)
    dt = time.perf_counter() - t
    if r.returncode:
        raise RuntimeError(f'{cmd[:3]} failed ({r.returncode}): {r.stderr[-2000:]}')
    return dt, r.stdout


def _prepare(source, *outputs):
    """Untimed, before every timed step: delete earlier outputs and flush every dirty page,
    so that no step pays for the write-back of the one before it; then read the step's
    source, so that it is in the page cache (this machine's memory manager may have evicted
    it since its last use)."""
    for p in outputs:
        for q in (p, p + '.config.json', os.path.splitext(p)[0] + '.config.json'):   # side file: new and old name
            if os.path.exists(q):
                os.unlink(q)
    os.sync()
    with open(source, 'rb') as f:
        while f.read(64 << 20):
            pass


def run_convert_bench(quick=False, runs=None, dim=128, verbose=True):
    """Returns a dict of figures (seconds, bytes, ratios) and prints a summary."""
    runs = runs or (2 if quick else 3)
    say = print if verbose else (lambda *a, **k: None)
    env = dict(os.environ, GLOG_v='3', TQDM_DISABLE='1')
    tmp = tempfile.mkdtemp(prefix='convert_bench_')
    try:
        src = os.path.join(tmp, 'unet.pt')
        _make_checkpoint(src, dim)
        size = os.path.getsize(src)
        say(f'checkpoint: Unet(dim={dim}, dim_mults=(1, 2, 4, 8)) state dict, {size / 2**20:.0f} MiB; '
            f'{runs} runs each, medians')
        cp_dst = os.path.join(tmp, 'copy.pt')
        times = {'cp': [], 'cp_sync': [], 'work_ckpt': [], 'work_safetensors': [], 'work_reverse': [], 'work_st2ckpt': [],
                 'cli_ckpt': [], 'cli_reverse': [], 'cli_startup': []}
        peaks = {'ckpt': [], 'safetensors': [], 'reverse': [], 'st2ckpt': []}
        cli_peaks = {'ckpt': [], 'reverse': [], 'startup': []}
        bases, torch_imported, phases = [], set(), {}
        for _ in range(runs):
            _prepare(src, cp_dst)
            times['cp'].append(_timed(['cp', '--reflink=never', src, cp_dst])[0])
            _prepare(src, cp_dst)
            t = time.perf_counter()
            subprocess.run(['cp', '--reflink=never', src, cp_dst], check=True)
            subprocess.run(['sync', cp_dst], check=True)
            times['cp_sync'].append(time.perf_counter() - t)
            for ext in ('ckpt', 'safetensors'):
                dst = os.path.join(tmp, f'out.{ext}')
                _prepare(src, dst)
                _, out = _timed([sys.executable, '-c', CHILD.format(root=ROOT, src=src, dst=dst, imports=NO_TORCH)], env=env)
                r = json.loads(out.strip().splitlines()[-1])
                torch_imported.add(r['torch_imported'])
                phases.setdefault(ext, []).append(r['phases'])
                times[f'work_{ext}'].append(r['work_s'])
                peaks[ext].append((r['peak_rss'], r['base_rss']))
                bases.append(r['base_rss'])
            st2 = os.path.join(tmp, 'st2.ckpt')             # .safetensors -> .ckpt: no torch in the process
            _prepare(os.path.join(tmp, 'out.safetensors'), st2)
            _, out = _timed([sys.executable, '-c', CHILD.format(root=ROOT, src=os.path.join(tmp, 'out.safetensors'),
                                                                dst=st2, imports=NO_TORCH)], env=env)
            r = json.loads(out.strip().splitlines()[-1])
            phases.setdefault('st2ckpt', []).append(r['phases'])
            times['work_st2ckpt'].append(r['work_s'])
            peaks['st2ckpt'].append((r['peak_rss'], r['base_rss']))
            back = os.path.join(tmp, 'back.pt')             # the reverse direction: .ckpt -> torch
            _prepare(os.path.join(tmp, 'out.ckpt'), back)
            _, out = _timed([sys.executable, '-c', CHILD.format(root=ROOT, src=os.path.join(tmp, 'out.ckpt'),
                                                                dst=back, imports=NO_TORCH)], env=env)
            r = json.loads(out.strip().splitlines()[-1])
            torch_imported.add(r['torch_imported'])
            phases.setdefault('reverse', []).append(r['phases'])
            times['work_reverse'].append(r['work_s'])
            peaks['reverse'].append((r['peak_rss'], r['base_rss']))
            for name, a, b in (('ckpt', src, os.path.join(tmp, 'cli.ckpt')),
                               ('reverse', os.path.join(tmp, 'out.ckpt'), os.path.join(tmp, 'cli_back.pt'))):
                _prepare(a, b)
                dt, peak = _cli(_command() + ['convert', a, b, '-q'], env)
                times[f'cli_{name}'].append(dt)
                cli_peaks[name].append(peak)
            _prepare(src)
            dt, peak = _cli([sys.executable, '-c', STARTUP], env)
            times['cli_startup'].append(dt)
            cli_peaks['startup'].append(peak)
        med = {k: statistics.median(v) for k, v in times.items()}
        res = {
            'checkpoint_bytes': size,
            'runs': runs,
            'cp_s': med['cp'],
            'cp_sync_s': med['cp_sync'],
            'convert_ckpt_s': med['work_ckpt'],
            'convert_safetensors_s': med['work_safetensors'],
            'convert_reverse_s': med['work_reverse'],
            'convert_st2ckpt_s': med['work_st2ckpt'],
            'cli_ckpt_s': med['cli_ckpt'],
            'cli_reverse_s': med['cli_reverse'],
            'cli_startup_s': med['cli_startup'],
            'torch_imported': any(torch_imported),
            'phases_s': {ext: {k: statistics.median(p[k] for p in ps) for k in ps[0]} for ext, ps in phases.items()},
            'ratio_time_ckpt_vs_cp': med['work_ckpt'] / med['cp'],
            'ratio_time_safetensors_vs_cp': med['work_safetensors'] / med['cp'],
            'ratio_time_reverse_vs_cp': med['work_reverse'] / med['cp'],
            'ratio_time_st2ckpt_vs_cp': med['work_st2ckpt'] / med['cp'],
            'ratio_time_cli_vs_cp': med['cli_ckpt'] / med['cp'],
            'ratio_time_cli_vs_cp_sync': med['cli_ckpt'] / med['cp_sync'],
            'ratio_time_cli_reverse_vs_cp': med['cli_reverse'] / med['cp'],
            'ratio_time_cli_reverse_vs_cp_sync': med['cli_reverse'] / med['cp_sync'],
            'rss_after_imports_bytes': statistics.median(bases),
            'rss_after_imports_no_torch_bytes': statistics.median(b for _, b in peaks['st2ckpt']),
        }
        for ext in ('ckpt', 'safetensors', 'reverse', 'st2ckpt'):
            res[f'ratio_time_{ext}_vs_cp_sync'] = med[f'work_{ext}'] / med['cp_sync']
        for ext in ('ckpt', 'safetensors', 'reverse', 'st2ckpt'):
            peak = statistics.median(p for p, _ in peaks[ext])
            added = statistics.median(p - b for p, b in peaks[ext])
            res[f'peak_rss_{ext}_bytes'] = peak
            res[f'peak_rss_added_{ext}_bytes'] = added
            res[f'ratio_peak_rss_{ext}_vs_checkpoint'] = peak / size
            res[f'ratio_added_rss_{ext}_vs_checkpoint'] = added / size
        for name in ('ckpt', 'reverse', 'startup'):
            res[f'cli_peak_rss_{name}_bytes'] = statistics.median(cli_peaks[name])
            res[f'ratio_cli_peak_rss_{name}_vs_checkpoint'] = res[f'cli_peak_rss_{name}_bytes'] / size
        mib = 2 ** 20
        say(f'cp: {res["cp_s"]:.3f} s   cp + sync: {res["cp_sync_s"]:.3f} s')
        names = {'reverse': 'reverse .ckpt -> .pt', 'st2ckpt': '.safetensors -> .ckpt (no torch imported)'}
        for ext in ('ckpt', 'safetensors', 'reverse', 'st2ckpt'):
            say(names.get(ext, f'.pt -> .{ext}') + f': {res[f"convert_{ext}_s"]:.3f} s = {res[f"ratio_time_{ext}_vs_cp"]:.2f}x cp'
                + f' ({res[f"ratio_time_{ext}_vs_cp_sync"]:.2f}x cp+sync)'
                + f';  peak RSS {res[f"peak_rss_{ext}_bytes"] / mib:.0f} MiB = '
                f'{res[f"ratio_peak_rss_{ext}_vs_checkpoint"]:.2f}x checkpoint, of which the conversion added '
                f'{res[f"peak_rss_added_{ext}_bytes"] / mib:.0f} MiB = {res[f"ratio_added_rss_{ext}_vs_checkpoint"]:.2f}x '
                f'(after imports: {statistics.median(b for _, b in peaks[ext]) / mib:.0f} MiB)')
            if ext in res['phases_s']:
                say('    phases: ' + ', '.join(f'{k} {v:.3f}' for k, v in res['phases_s'][ext].items()))
        for name, what in (('ckpt', '.pt -> .ckpt'), ('reverse', '.ckpt -> .pt')):
            key = 'cli' if name == 'ckpt' else 'cli_reverse'
            say(f'whole command `ms-ddpm convert` {what} (start-up and imports included): {res[f"cli_{name}_s"]:.2f} s = '
                f'{res[f"ratio_time_{key}_vs_cp"]:.1f}x cp ({res[f"ratio_time_{key}_vs_cp_sync"]:.1f}x cp+sync); '
                f'peak RSS {res[f"cli_peak_rss_{name}_bytes"] / mib:.0f} MiB = '
                f'{res[f"ratio_cli_peak_rss_{name}_vs_checkpoint"]:.2f}x checkpoint')
        say(f'  of which start-up (python, importing weight_convert, mindspore, ms_ddpm): {res["cli_startup_s"]:.2f} s, '
            f'{res["cli_peak_rss_startup_bytes"] / mib:.0f} MiB')
        say(f'torch imported by a conversion: {res["torch_imported"]}')
        return res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--runs', type=int, default=3)
    p.add_argument('--dim', type=int, default=128)
    p.add_argument('--json', help='also write the figures to this JSON file')
    a = p.parse_args(argv)
    res = run_convert_bench(runs=a.runs, dim=a.dim)
    if a.json:
        with open(a.json, 'w') as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
