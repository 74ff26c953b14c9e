"""caloquant: generative calorimeter fast simulation, quantized where physics allows.

The package is laid out along the data flow:
``simulate -> data -> train -> export -> quantize -> generate -> validate -> bench``.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
