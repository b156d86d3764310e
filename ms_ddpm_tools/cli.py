"""``ms-ddpm``: one entry point, one subcommand per job.

Each subcommand lives in its own module and is imported only when used, so
``ms-ddpm --help`` is instant and a MindSpore-only install can run ``convert``/``sample``.
"""

import importlib
import sys

# subcommand -> (module with a ``main(argv) -> int``, one-line help)
SUBCOMMANDS = {
    'verify':  ('ms_ddpm_tools.verify.command', 'verify a PyTorch checkpoint against its MindSpore port; report where they differ'),
    'diff':    ('ms_ddpm_tools.verify.command', 'compare two verify JSON reports (framework-upgrade regression check)'),
    'convert': ('ms_ddpm_tools.convert', 'convert checkpoints PyTorch <-> MindSpore (.pt/.pth/.bin/.safetensors/.ckpt)'),
    'train':   ('ms_ddpm_tools.train', 'train a GaussianDiffusion model on an image folder in MindSpore'),
    'sample':  ('ms_ddpm_tools.train', 'sample images (PNG grid, GIF of the denoising) from a checkpoint'),
    'bench':   ('bench.run', 'benchmark the MindSpore port against PyTorch on this machine'),
}


def usage():
    lines = ['usage: ms-ddpm <command> [options]   (ms-ddpm <command> --help for details)', '', 'commands:']
    lines += [f'  {name:9s} {help_}' for name, (_, help_) in SUBCOMMANDS.items()]
    return '\n'.join(lines)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ('-h', '--help', 'help'):
        print(usage())
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in SUBCOMMANDS:
        print(f'ms-ddpm: unknown command {cmd!r}\n\n{usage()}', file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[cmd][0])
    entry = getattr(module, f'main_{cmd}', None) or module.main
    return int(entry(rest) or 0)


if __name__ == '__main__':
    sys.exit(main())
