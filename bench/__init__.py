"""Benchmarks of the MindSpore port against the PyTorch reference, measured side by side
(``ms-ddpm bench`` or ``python -m bench.run``); see docs/benchmarks.md."""
