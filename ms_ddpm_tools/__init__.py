"""Layer (e): the tools users run.  ``cli``: the ``ms-ddpm`` dispatcher; ``verify``: the one
verify engine (``ms-ddpm verify``/``diff`` and ``convert --verify``); ``convert``,
``train`` (``train``/``sample``): the other commands.  Nothing below this layer imports it."""
