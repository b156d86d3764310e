"""``ms-ddpm``: one entry point, one subcommand per job.

Each subcommand lives in its own module and is imported only when used, so
``ms-ddpm --help`` is instant and a MindSpore-only install can run ``convert``/``sample``.
"""

import importlib
import sys

from ms_ddpm_tools.exits import EPILOG, EXIT_OK, EXIT_USAGE

# subcommand -> (module with a ``main(argv) -> int`` or ``main_<cmd>``, one-line help)
SUBCOMMANDS = {
    'verify':  ('ms_ddpm_tools.verify.command', 'verify a PyTorch checkpoint against its MindSpore port (or a converted file, --against); report where they differ'),
    'diff':    ('ms_ddpm_tools.verify.command', 'compare two verify JSON reports (framework-upgrade regression check)'),
    'convert': ('ms_ddpm_tools.convert', 'convert checkpoints PyTorch <-> MindSpore (.pt/.pth/.bin/.safetensors/.ckpt)'),
    'train':   ('ms_ddpm_tools.train', 'train a GaussianDiffusion model on an image folder in MindSpore'),
    'sample':  ('ms_ddpm_tools.train', 'sample images (PNG grid, GIF of the denoising) from a checkpoint'),
    'noise':   ('ms_ddpm_tools.noise', 'the forward (noising) process of an image at several timesteps, as a PNG strip'),
    'bench':   ('bench.run', 'benchmark the MindSpore port against PyTorch on this machine'),
}

# issue 18: ``--fast-cpu`` on these runs their convolutions through ms_ddpm.fastconv's oneDNN
# kernels and softmax / SiLU through its fused ones (as MS_DDPM_CPU_CONV=onednn does), with the
# process settings of ms_ddpm_tools.runtime (``bench`` parses its own --fast-cpu); verify's report
# names the path that ran
FAST_CPU_COMMANDS = ('train', 'sample', 'verify')


def usage():
    lines = ['usage: ms-ddpm <command> [options]   (ms-ddpm <command> --help for details)',
             '       ms-ddpm --version', '', 'commands:']
    lines += [f'  {name:9s} {help_}' for name, (_, help_) in SUBCOMMANDS.items()]
    lines += ['', f'  --fast-cpu (with {"/".join(FAST_CPU_COMMANDS)}/bench): oneDNN convolutions + fused softmax/SiLU on CPU (ms_ddpm[fast],',
              '    or MS_DDPM_CPU_CONV=onednn), with MS_DEV_HOST_BLOCKING_RUN=1 GOMP_SPINCOUNT=1000 unless set;',
              '    if they cannot be built: one warning line and MindSpore\'s own', '', EPILOG]
    return '\n'.join(lines)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ('-h', '--help', 'help'):
        print(usage())
        return EXIT_OK
    if argv and argv[0] in ('-V', '--version'):
        from ms_ddpm.version import REFERENCE_VERSION, __version__
        print(f'ms-ddpm {__version__} (twin of denoising-diffusion-pytorch {REFERENCE_VERSION})')
        return EXIT_OK
    if not argv:
        print(f'ms-ddpm: a command is required\n\n{usage()}', file=sys.stderr)
        return EXIT_USAGE
    cmd, rest = argv[0], argv[1:]
    if cmd not in SUBCOMMANDS:
        print(f'ms-ddpm: unknown command {cmd!r}\n\n{usage()}', file=sys.stderr)
        return EXIT_USAGE
    if cmd in FAST_CPU_COMMANDS and '--fast-cpu' in rest:
        rest = [a for a in rest if a != '--fast-cpu']
        from ms_ddpm_tools.runtime import tune_runtime
        tune_runtime()          # before MindSpore loads: no busy-waiting host thread, no spinning OpenMP pool
        from ms_ddpm import fastconv
        fastconv.set_enabled(True)
    module = importlib.import_module(SUBCOMMANDS[cmd][0])
    entry = getattr(module, f'main_{cmd}', None) or module.main
    try:
        return int(entry(rest) or 0)
    except SystemExit as e:                       # argparse: --help (0) and usage errors (2)
        return e.code if isinstance(e.code, int) else (EXIT_OK if e.code is None else EXIT_USAGE)


if __name__ == '__main__':
    sys.exit(main())
