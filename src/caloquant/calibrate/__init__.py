"""Calibrate: tune the GFlash engine to a full simulation (Geant4), judged by the quantities of ``summary``."""

from __future__ import annotations

from caloquant.calibrate.summary import QUANTITIES, Summary, deviations, markdown_table, profile_chi2, summarise

__all__ = ["QUANTITIES", "Summary", "deviations", "markdown_table", "profile_chi2", "summarise"]
