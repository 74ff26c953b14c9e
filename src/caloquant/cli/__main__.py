"""``python -m caloquant.cli`` (and ``torchrun -m caloquant.cli``) run the caloquant command."""

from caloquant.cli import entrypoint

entrypoint()
