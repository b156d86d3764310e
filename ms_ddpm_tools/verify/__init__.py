"""``ms-ddpm verify``: the main job.  Verify that a MindSpore port agrees with PyTorch, and
say where it first goes wrong.

- ``default``: the built-in default checkpoint (a small U-Net trained briefly on
  scikit-learn's digits with the reference's own ``Trainer``), cached by recipe hash.
- ``core``: the comparisons: every layer (name-matched forward hooks, execution order), the
  U-Net output at several timesteps, the loss of each objective, one sampling trajectory
  with shared noise.  The PyTorch side can be live or read from a golden fixture.
- ``report``: terminal table, Markdown, JSON, PNG; ``regress``: two JSON runs compared.
"""
