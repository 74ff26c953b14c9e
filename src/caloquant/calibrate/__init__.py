"""Calibrate: tune the GFlash engine to a full simulation (Geant4), judged by the quantities of ``summary``."""

from __future__ import annotations

from caloquant.calibrate.fit import CalibrationResult, fit_gflash
from caloquant.calibrate.summary import QUANTITIES, Summary, comparison_table, profile_chi2, summarise
from caloquant.calibrate.workflow import calibrate

__all__ = ["QUANTITIES", "CalibrationResult", "Summary", "calibrate", "comparison_table", "fit_gflash",
           "profile_chi2", "summarise"]
