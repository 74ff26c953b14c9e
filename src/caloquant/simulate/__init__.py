"""Stage 1, simulate: the GFlash-style reference Monte Carlo for the CLIC-like Si-W ECAL."""

from __future__ import annotations

from caloquant.simulate.engine import AngleRange, ShowerSimulator, Spectrum, parse_range, simulate
from caloquant.simulate.run import simulate_to_file
from caloquant.simulate.tuning import GFlashTuning, load_tuning

__all__ = ["AngleRange", "GFlashTuning", "ShowerSimulator", "Spectrum", "load_tuning", "parse_range", "simulate",
           "simulate_to_file"]
