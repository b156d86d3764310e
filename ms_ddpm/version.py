__version__ = '0.1.0'
# the version of denoising-diffusion-pytorch this package mirrors
REFERENCE_VERSION = '2.3.4'
