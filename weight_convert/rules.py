"""Conversion rules, as data.

ms_ddpm mirrors the reference attribute for attribute, so a MindSpore parameter name *is*
the PyTorch state-dict key and every tensor keeps its layout (Conv2d weights are
(out, in, kh, kw) and Dense weights (out, in) in both frameworks).  The rules below are
the only exceptions; each is (pattern, replacement) applied to a PyTorch key, in order.
"""

# PyTorch key regex -> MindSpore name (none needed for ms_ddpm's own layers)
RENAME_RULES = []

# Tensor layout changes by MindSpore name regex (none: layouts are identical)
TRANSPOSE_RULES = []
