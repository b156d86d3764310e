"""Parity suite: ms_ddpm (MindSpore) against denoising-diffusion-pytorch 2.3.4 (PyTorch)."""
