"""The PyTorch side: builds the reference (denoising-diffusion-pytorch 2.3.4) twin of an
ms_ddpm model from the same configuration.

Importing this package checks the installed reference version and refuses to run with any
other: parity is proved against exactly one version.
"""

from reference.builders import (
    REFERENCE_VERSION,
    ReferenceVersionError,
    check_reference_version,
    build_unet,
    state_dict_numpy,
)
