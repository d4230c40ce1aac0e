"""``python -m adaptive_sde``: the same command as ``adaptive-sde`` (see :mod:`adaptive_sde._cli`).

Also the entry point for ``torchrun ... -m adaptive_sde sample-gmm``.
"""

from adaptive_sde._cli import main

if __name__ == "__main__":
    main()
